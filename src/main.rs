//! The `sweep` binary: everything lives in the library so that tests can call it.

fn main() -> std::process::ExitCode {
    sweep::main_entry()
}
