//! `sweep status` and the metrics file: when each command last ran and succeeded, what it
//! reclaimed, what a dry run would delete now, and `sweep_last_success_timestamp_seconds`.

use crate::attachments::{old_file_time, row, NOW};
use crate::support::*;
use chrono::Duration;

pub async fn status_and_metrics_say_when_each_command_last_succeeded(b: Backend) {
    let ws = Ws::new(b, true).await;
    let old = Some(at(NOW) - Duration::days(60));
    for n in 1..=2u32 {
        ws.file(&format!("att/{n}.jpg"), 1000, old_file_time());
        row(&ws, n, Some(&format!("att/{n}.jpg")), false, old).await;
    }
    let metrics = ws.dir.path().join("sweep.prom");
    ws.sweep(&["--now", NOW, "--metrics-file", metrics.to_str().unwrap(), "cleanup-attachments"]).expect(0);
    // Two more eligible for the preview.
    for n in 3..=4u32 {
        ws.file(&format!("att/{n}.jpg"), 1000, old_file_time());
        row(&ws, n, Some(&format!("att/{n}.jpg")), false, old).await;
    }
    let r = ws.sweep(&["--now", NOW, "status", "--json", "--preview"]);
    r.expect(0);
    let v = r.json();
    let att = v.as_array().unwrap().iter().find(|c| c["command"] == "cleanup-attachments").unwrap();
    assert_eq!(att["last_run"]["status"], "success", "{att}");
    assert_eq!(att["last_run"]["deleted"], 4, "two files and two rows");
    assert!(att["last_success"].is_string(), "{att}");
    assert_eq!(att["reclaimed_24h"], 2000, "{att}");
    assert_eq!(att["preview"]["would_delete"], 4, "{att}");
    assert!(att["preview"]["error"].is_null(), "{att}");
    let worker = v.as_array().unwrap().iter().find(|c| c["command"] == "worker-once").unwrap();
    assert!(worker["last_run"].is_null() && worker["last_success"].is_null());
    assert!(worker["preview"]["error"].as_str().unwrap().contains("DATA_DIR"), "not configured here: {worker}");
    assert_eq!(ws.count("SELECT count(*) FROM forum_attachment").await, 2, "status deletes nothing");
    let text = ws.sweep(&["status"]);
    text.expect(0);
    assert!(
        text.stdout.contains("cleanup-attachments\n  last run") && text.stdout.contains("last success"),
        "{}",
        text.stdout
    );

    let prom = std::fs::read_to_string(&metrics).unwrap();
    let scrape = prometheus_parse::Scrape::parse(prom.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text");
    let success = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "sweep_last_success_timestamp_seconds" && s.labels.get("command") == Some("cleanup-attachments")
        })
        .unwrap_or_else(|| panic!("{prom}"));
    match success.value {
        prometheus_parse::Value::Gauge(t) | prometheus_parse::Value::Untyped(t) => assert!(t > 1.7e9, "{prom}"),
        ref other => panic!("{other:?}"),
    }
}
