//! Notifications heard by a local receiver the test starts: the webhook's body and signature,
//! the healthchecks sequence (start → success; start → the exit code; a failure before any
//! start when the database is unreachable), and a receiver that is down or slow changes
//! neither the exit code nor the run's time past a bound.

use crate::attachments::{old_file_time, row, NOW};
use crate::support::*;
use chrono::Duration;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Heard {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// A tiny HTTP receiver on 127.0.0.1, answering `status` after `delay_ms`.
pub struct Receiver {
    pub url: String,
    heard: Arc<Mutex<Vec<Heard>>>,
}

impl Receiver {
    pub fn start(status: u16, delay_ms: u64) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let heard = Arc::new(Mutex::new(Vec::new()));
        let h = heard.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let h = h.clone();
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let (head, mut body) = loop {
                        let n = s.read(&mut chunk).unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break (String::from_utf8_lossy(&buf[..i]).into_owned(), buf[i + 4..].to_vec());
                        }
                    };
                    let mut lines = head.lines();
                    let path = lines.next().unwrap_or("").split(' ').nth(1).unwrap_or("").to_string();
                    let headers: Vec<(String, String)> = lines
                        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string())))
                        .collect();
                    let len: usize = headers
                        .iter()
                        .find(|(k, _)| k == "content-length")
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(0);
                    while body.len() < len {
                        let n = s.read(&mut chunk).unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        body.extend_from_slice(&chunk[..n]);
                    }
                    h.lock().unwrap().push(Heard { path, headers, body: String::from_utf8_lossy(&body).into_owned() });
                    std::thread::sleep(std::time::Duration::from_millis(delay_ms));
                    let _ = write!(s, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                });
            }
        });
        Receiver { url, heard }
    }

    pub fn heard(&self) -> Vec<Heard> {
        self.heard.lock().unwrap().clone()
    }

    fn clear(&self) {
        self.heard.lock().unwrap().clear();
    }
}

async fn three_attachments(ws: &Ws, undeletable: bool) {
    let old = Some(at(NOW) - Duration::days(60));
    for n in 1..=3u32 {
        ws.file(&format!("att/{n}.jpg"), 10, old_file_time());
        row(ws, n, Some(&format!("att/{n}.jpg")), false, old).await;
    }
    if undeletable {
        // A directory where a file is expected: that attachment fails, the others go.
        std::fs::create_dir_all(ws.media.join("att/dir.jpg/x")).unwrap();
        row(ws, 4, Some("att/dir.jpg"), false, old).await;
    }
}

pub async fn webhook_and_healthchecks_hear_every_run(b: Backend) {
    let ws = Ws::new(b, true).await;
    let r = Receiver::start(200, 0);
    let (hook, hc) = (format!("{}/hook", r.url), format!("{}/ping/abc", r.url));
    let env = [
        ("SWEEP_NOTIFY_URL", hook.as_str()),
        ("SWEEP_NOTIFY_SECRET", "s3cret"),
        ("SWEEP_HEALTHCHECKS_URL", hc.as_str()),
    ];

    // A run with a failed item: start, then the webhook (signed) and /1.
    three_attachments(&ws, true).await;
    let run = ws.sweep_env(&["--now", NOW, "cleanup-attachments", "--json"], &env);
    run.expect(1);
    let rid = run.json()["run_id"].as_str().unwrap().to_string();
    let heard = r.heard();
    let paths: Vec<&str> = heard.iter().map(|h| h.path.as_str()).collect();
    assert!(paths.contains(&format!("/ping/abc/start?rid={rid}").as_str()), "{paths:?}");
    assert!(paths.contains(&format!("/ping/abc/1?rid={rid}").as_str()), "{paths:?}");
    let start = paths.iter().position(|p| p.starts_with("/ping/abc/start")).unwrap();
    let end = paths.iter().position(|p| p.starts_with("/ping/abc/1")).unwrap();
    assert!(start < end, "start comes first: {paths:?}");
    let hook_req = heard.iter().find(|h| h.path == "/hook").expect("the webhook was called");
    let body: serde_json::Value = serde_json::from_str(&hook_req.body).unwrap();
    assert_eq!(body["run_id"], rid.as_str());
    assert_eq!(body["command"], "cleanup-attachments");
    assert_eq!(body["status"], "partial");
    assert_eq!(body["exit_code"], 1);
    assert_eq!(body["deleted"], 6, "{body}");
    assert_eq!(body["failed"], 1);
    assert!(body["errors"][0][0].as_str().unwrap().contains("dir.jpg"), "{body}");
    assert!(!body["host"].as_str().unwrap().is_empty());
    let sig = hook_req.headers.iter().find(|(k, _)| k == "x-sweep-signature").map(|(_, v)| v.clone()).unwrap();
    assert_eq!(sig, format!("sha256={}", sweep::notify::sign("s3cret", hook_req.body.as_bytes())));
    let details = ws.text_rows(&format!("SELECT CAST(details AS TEXT) FROM cleanup_runs WHERE id = '{rid}'")).await;
    assert!(details[0][0].as_deref().unwrap().contains("\"notifications\""), "recorded on the run");

    // A clean run: start, then success at the check's own URL; the webhook hears only bad news.
    r.clear();
    ws.exec("DELETE FROM forum_attachment").await;
    let run = ws.sweep_env(&["--now", NOW, "cleanup-attachments", "--json"], &env);
    run.expect(0);
    let rid = run.json()["run_id"].as_str().unwrap().to_string();
    let paths: Vec<String> = r.heard().iter().map(|h| h.path.clone()).collect();
    assert_eq!(paths, [format!("/ping/abc/start?rid={rid}"), format!("/ping/abc?rid={rid}")]);

    // A cap stops the run: aborted, exit 3.
    r.clear();
    three_attachments(&ws, false).await;
    ws.sweep_env(&["--now", NOW, "--max-delete", "1", "cleanup-attachments"], &env).expect(3);
    let heard = r.heard();
    assert!(heard.iter().any(|h| h.path.starts_with("/ping/abc/3?rid=")), "{heard:?}");
    let hook_req = heard.iter().find(|h| h.path == "/hook").unwrap();
    assert!(
        hook_req.body.contains("\"status\":\"aborted\"") && hook_req.body.contains("--max-delete 1"),
        "{}",
        hook_req.body
    );

    // The database cannot be reached: a failure, with no start before it.
    r.clear();
    let mut bad = env.to_vec();
    bad.push(("DATABASE_URL", "postgres://sweep@127.0.0.1:1/none"));
    let run = sweep_in(
        ws.dir.path(),
        &["--now", NOW, "cleanup-attachments"],
        &[&bad[..], &[("MEDIA_ROOT", ws.media.to_str().unwrap())]].concat(),
    );
    run.expect(2);
    let heard = r.heard();
    let paths: Vec<&str> = heard.iter().map(|h| h.path.as_str()).collect();
    assert!(paths.iter().any(|p| p.starts_with("/ping/abc/2?rid=")), "{paths:?}");
    assert!(!paths.iter().any(|p| p.contains("/start")), "no start before a run that never started: {paths:?}");
    let hook_req = heard.iter().find(|h| h.path == "/hook").unwrap();
    assert!(
        hook_req.body.contains("\"status\":\"failure\"") && hook_req.body.contains("cannot connect"),
        "{}",
        hook_req.body
    );
}

pub async fn a_receiver_that_is_down_or_slow_changes_nothing_but_the_record(b: Backend) {
    let ws = Ws::new(b, true).await;
    three_attachments(&ws, true).await;
    // Down: nothing listens on the port.
    let down = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hook", l.local_addr().unwrap())
    };
    let t = std::time::Instant::now();
    let run = ws.sweep_env(&["--now", NOW, "cleanup-attachments", "--json"], &[("SWEEP_NOTIFY_URL", &down)]);
    run.expect(1);
    assert!(t.elapsed() < std::time::Duration::from_secs(10), "{:?}", t.elapsed());
    let rid = run.json()["run_id"].as_str().unwrap().to_string();
    let details = ws.text_rows(&format!("SELECT CAST(details AS TEXT) FROM cleanup_runs WHERE id = '{rid}'")).await;
    let d = details[0][0].clone().unwrap();
    assert!(d.contains("\"ok\":false") && d.contains("\"attempts\":3"), "the failure is recorded: {d}");
    // Slow: answers after 30 s; the run is not held past the bound (3 tries of 2 s).
    let slow = Receiver::start(200, 30_000);
    let hook = format!("{}/hook", slow.url);
    three_attachments_again(&ws).await;
    let t = std::time::Instant::now();
    ws.sweep_env(&["--now", NOW, "cleanup-attachments"], &[("SWEEP_NOTIFY_URL", &hook)]).expect(1);
    assert!(t.elapsed() < std::time::Duration::from_secs(15), "{:?}", t.elapsed());
    assert!(!slow.heard().is_empty(), "it was tried");
}

async fn three_attachments_again(ws: &Ws) {
    ws.exec("DELETE FROM forum_attachment WHERE original_filename <> 'photo-4.jpg'").await;
    let old = Some(at(NOW) - Duration::days(60));
    for n in 11..=13u32 {
        ws.file(&format!("att/{n}.jpg"), 10, old_file_time());
        row(ws, n, Some(&format!("att/{n}.jpg")), false, old).await;
    }
}
