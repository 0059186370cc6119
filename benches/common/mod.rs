//! Shared by the benchmarks: timing a child process with its peak memory, and medians.
#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Wall time and peak resident memory (VmHWM, polled) of a command; panics if it fails.
pub fn measure(cmd: &mut Command) -> (Duration, u64) {
    let start = Instant::now();
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn");
    let pid = child.id();
    let mut peak_kb = 0u64;
    let stderr = child.stderr.take().unwrap();
    let drain = std::thread::spawn(move || {
        use std::io::Read;
        let mut s = String::new();
        let mut r = std::io::BufReader::new(stderr);
        let _ = r.read_to_string(&mut s);
        s
    });
    loop {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            for l in status.lines() {
                if let Some(v) = l.strip_prefix("VmHWM:") {
                    let kb: u64 = v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0);
                    peak_kb = peak_kb.max(kb);
                }
            }
        }
        if let Some(st) = child.try_wait().unwrap() {
            let err = drain.join().unwrap();
            assert!(st.success() || st.code() == Some(1), "{cmd:?} failed: {st}\n{}", tail(&err));
            return (start.elapsed(), peak_kb * 1024);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn tail(s: &str) -> String {
    s.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

pub fn mb(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}
