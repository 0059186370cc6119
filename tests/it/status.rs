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

/// `[[schedule]]` entries in `sweep status`: the next run in the entry's time zone, and
/// *overdue* once a whole slot went by after the one that should have succeeded (the clock is
/// injected with `--now`; no test waits). A bad entry is refused when the config loads.
pub async fn status_shows_each_schedule_next_run_and_when_it_is_overdue(b: Backend) {
    let ws = Ws::new(b, true).await;
    let cfg = ws.dir.path().join("sweep.toml");
    std::fs::write(
        &cfg,
        "[[schedule]]\ncommand = \"cleanup-attachments\"\ncron = \"0 2 * * *\"\ntz = \"Europe/Berlin\"\n\n\
         [[schedule]]\nname = \"preview\"\ncommand = \"cleanup-attachments\"\nargs = [\"--days\", \"7\"]\n\
         cron = \"*/10 * * * *\"\ndry_run = true\n",
    )
    .unwrap();
    let entries = |r: &Run| -> Vec<serde_json::Value> {
        let v = r.json();
        let att = v.as_array().unwrap().iter().find(|c| c["command"] == "cleanup-attachments").unwrap().clone();
        att["schedules"].as_array().unwrap().clone()
    };
    // No run on record yet: nothing to be overdue against.
    let r = ws.sweep(&["--now", "2026-11-29T09:00:00Z", "status", "--json"]);
    r.expect(0);
    let s = entries(&r);
    assert_eq!(s.len(), 2, "{s:?}");
    assert_eq!(s[0]["name"], "cleanup-attachments");
    // 02:00 in Berlin is 01:00 UTC in winter.
    assert_eq!(s[0]["next_run"], "2026-11-30T01:00:00Z", "{s:?}");
    assert_eq!(s[0]["overdue"], false);
    assert_eq!(s[1]["next_run"], "2026-11-29T09:10:00Z", "{s:?}");
    assert_eq!(s[1]["args"], serde_json::json!(["--days", "7"]));

    // One success now; as of now it is on time, three days on it is overdue. The dry-run entry
    // leaves no record, so it is never overdue.
    ws.sweep(&["cleanup-attachments"]).expect(0);
    let now = chrono::Utc::now();
    let iso = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let r = ws.sweep(&["--now", &iso(now), "status", "--json"]);
    r.expect(0);
    assert_eq!(entries(&r)[0]["overdue"], false, "{:?}", entries(&r));
    let later = iso(now + Duration::days(3));
    // A future instant is a forecast: it takes --dry-run, as for any command.
    let r = ws.sweep(&["--dry-run", "--now", &later, "status", "--json"]);
    r.expect(0);
    let s = entries(&r);
    assert_eq!(s[0]["overdue"], true, "{s:?}");
    assert_eq!(s[1]["overdue"], false, "{s:?}");
    let text = ws.sweep(&["--dry-run", "--now", &later, "status"]);
    text.expect(0);
    assert!(
        text.stdout.contains("schedule      cleanup-attachments: \"0 2 * * *\" Europe/Berlin")
            && text.stdout.contains("OVERDUE")
            && text.stdout.contains("schedule      preview: \"*/10 * * * *\" UTC dry run"),
        "{}",
        text.stdout
    );
    let shown = ws.sweep(&["cleanup-attachments", "--show-config"]);
    shown.expect(0);
    assert!(shown.stdout.contains("schedule[preview]"), "{}", shown.stdout);

    // A typo in an entry's arguments is refused when the config loads, naming the entry.
    std::fs::write(&cfg, "[[schedule]]\ncommand = \"worker-once\"\nargs = [\"--typo\"]\ncron = \"0 2 * * *\"\n")
        .unwrap();
    let r = ws.sweep(&["status"]);
    r.expect(2);
    assert!(r.stderr.contains("[[schedule]] #1") && r.stderr.contains("--typo"), "{}", r.stderr);
    std::fs::write(&cfg, "[[schedule]]\ncommand = \"worker-once\"\ncron = \"at two\"\n").unwrap();
    let r = ws.sweep(&["status"]);
    r.expect(2);
    assert!(r.stderr.contains("not a cron expression"), "{}", r.stderr);
}
