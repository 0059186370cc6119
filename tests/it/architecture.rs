//! The layering that `docs/design.md` promises, checked on the source itself: policies do no
//! I/O, only `db` knows which database it talks to, no command imports another, and no two
//! modules import each other (directly or in a circle). Each check fails naming the file and
//! the line that breaks it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, with its text.
fn files(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let e = e.unwrap();
        if e.path().extension().is_some_and(|x| x == "rs") {
            out.push((e.path().to_path_buf(), std::fs::read_to_string(e.path()).unwrap()));
        }
    }
    out
}

/// Lines of `text` that contain any of `needles` (outside `//` comments), as `file:line: text`.
fn offending(path: &Path, text: &str, needles: &[&str]) -> Vec<String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let code = l.split("//").next().unwrap_or("");
            needles.iter().any(|n| code.contains(n))
        })
        .map(|(i, l)| format!("{}:{}: {}", path.display(), i + 1, l.trim()))
        .collect()
}

#[test]
fn policies_do_no_io() {
    let mut policy_files = files(&src().join("policy"));
    policy_files.push((src().join("policy.rs"), std::fs::read_to_string(src().join("policy.rs")).unwrap()));
    assert!(policy_files.len() >= 7, "one module per policy, and policy.rs");
    let io = [
        "sqlx",
        "std::fs",
        "tokio",
        "object_store",
        "walkdir",
        "rustix",
        "std::env",
        "std::net",
        "async ",
        ".await",
        "Utc::now",
        "SystemTime::now",
        "Instant::now",
        "crate::db",
        "crate::store",
        "crate::executor",
        "crate::run",
        "crate::gather",
        "crate::commands",
        "crate::config",
    ];
    let bad: Vec<String> = policy_files.iter().flat_map(|(p, t)| offending(p, t, &io)).collect();
    assert!(bad.is_empty(), "a policy module does I/O or reaches above its layer:\n{}", bad.join("\n"));
}

#[test]
fn only_db_knows_the_database() {
    let db_dir = src().join("db");
    let bad: Vec<String> = files(&src())
        .iter()
        .filter(|(p, _)| !p.starts_with(&db_dir) && *p != src().join("db.rs"))
        .flat_map(|(p, t)| offending(p, t, &["Pool::", "Backend::", "sqlx", "replace(\"$1\""]))
        .collect();
    assert!(bad.is_empty(), "database-specific code outside src/db:\n{}", bad.join("\n"));
}

#[test]
fn no_command_imports_another() {
    let dir = src().join("commands");
    let names: Vec<String> =
        files(&dir).iter().map(|(p, _)| p.file_stem().unwrap().to_string_lossy().into_owned()).collect();
    let mut bad = Vec::new();
    for (p, t) in files(&dir) {
        let me = p.file_stem().unwrap().to_string_lossy().into_owned();
        let mut needles: Vec<String> = vec!["super::".into(), "crate::commands".into()];
        needles.extend(names.iter().filter(|n| **n != me).map(|n| format!("{n}::")));
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        // `policy::<name>` and `gather::<name>` are the layers below, not other commands.
        let lines = offending(&p, &t, &needles);
        bad.extend(lines.into_iter().filter(|l| {
            let mut code = l.split(": ").skip(1).collect::<Vec<_>>().join(": ");
            for n in &names {
                code = code.replace(&format!("policy::{n}"), "").replace(&format!("gather::{n}"), "");
            }
            // A test module's `use super::*;` is its own file.
            code != "use super::*;" && needles.iter().any(|n| code.contains(n))
        }));
    }
    assert!(bad.is_empty(), "a command imports another (share through gather, policy or run):\n{}", bad.join("\n"));
}

/// The module a file is: `src/a/b.rs` → `a::b`, `src/lib.rs` → ``.
fn module_of(path: &Path) -> Vec<String> {
    let rel = path.strip_prefix(src()).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    if parts == ["lib"] || parts == ["main"] {
        parts.clear();
    }
    parts
}

#[test]
fn no_import_circles_between_modules() {
    // The same reading as ../shared/tools/module-cycles.py: `crate::a::b` paths (and
    // `crate::a::{b, c}` groups), resolved to the longest existing module; a module's own
    // parents are not edges.
    let all = files(&src());
    let mods: BTreeSet<Vec<String>> = all.iter().map(|(p, _)| module_of(p)).collect();
    let resolve = |path: &str| -> Option<Vec<String>> {
        let parts: Vec<String> = path.split("::").filter(|s| !s.is_empty()).map(String::from).collect();
        (1..=parts.len()).rev().map(|n| parts[..n].to_vec()).find(|m| mods.contains(m))
    };
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (p, text) in &all {
        let me = module_of(p);
        let mut paths = Vec::new();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + 7..];
            let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(rest.len());
            let head = rest[..end].trim_end_matches(':').to_string();
            if rest[end..].starts_with('{') && rest[..end].ends_with("::") {
                let close = rest[end..].find('}').map(|c| end + c).unwrap_or(rest.len());
                for item in rest[end + 1..close].split(',') {
                    let item = item.trim().split(" as ").next().unwrap_or("").trim();
                    if item == "self" {
                        paths.push(head.clone());
                    } else if !item.is_empty() {
                        paths.push(format!("{head}::{item}"));
                    }
                }
            }
            paths.push(head);
        }
        for path in paths {
            if let Some(t) = resolve(&path) {
                if t != me && !me.starts_with(&t) {
                    edges.entry(me.clone()).or_default().insert(t);
                }
            }
        }
    }
    // A circle exists when some module reaches itself.
    let mut circles = Vec::new();
    for start in edges.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<Vec<String>> = edges[start].iter().cloned().collect();
        while let Some(m) = stack.pop() {
            if &m == start {
                circles.push(start.join("::"));
                break;
            }
            if seen.insert(m.clone()) {
                stack.extend(edges.get(&m).into_iter().flatten().cloned());
            }
        }
    }
    assert!(circles.is_empty(), "modules in an import circle: {circles:?}");
}
