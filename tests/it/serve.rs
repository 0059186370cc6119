//! `sweep serve` end to end: the real binary listening on 127.0.0.1, the real databases, real
//! files and the S3-protocol server; requests over HTTP as curl or a scheduler would send them.

use crate::attachments::{old_file_time, row, row_exists, uuid, NOW};
use crate::support::*;
use chrono::{Duration, Utc};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

pub use sweep::serve::auth::COOKIE;

/// A running `sweep serve` and one token of each role.
pub struct Server {
    child: Child,
    pub base: String,
    pub admin: String,
    pub operator: String,
    pub viewer: String,
    client: reqwest::Client,
}

/// One answer: status, headers, body as text.
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Answer {
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Answer {
        assert_eq!(self.status, status, "status; body: {}", self.text);
        self
    }
}

/// Create a token with the CLI; its stdout is the token alone on one line.
pub fn token(ws: &Ws, env: &[(&str, &str)], name: &str, role: &str) -> String {
    let r = ws.sweep_env(&["token", "create", "--name", name, "--role", role], env);
    r.expect(0);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "the token alone on one line: {:?}", r.stdout);
    assert!(lines[0].starts_with("swp_"), "{}", lines[0]);
    lines[0].to_string()
}

/// `sweep serve` on a free port of 127.0.0.1 for the workspace, with `env` and extra `args`,
/// its log in `log` under the workspace: the process and the base URL it printed.
pub fn spawn_serve(ws: &Ws, env: &[(&str, &str)], args: &[&str], log: &str) -> (Child, String) {
    let log_path = ws.dir.path().join(log);
    let mut c = crate::support::sweep_command();
    c.current_dir(ws.dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("DATABASE_URL", &ws.url)
        .env("MEDIA_ROOT", &ws.media)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.trim().strip_prefix("listening on ").unwrap_or_else(|| {
        panic!("serve did not start: {line:?}\n{}", std::fs::read_to_string(&log_path).unwrap_or_default())
    });
    (child, base.to_string())
}

impl Server {
    /// Start `sweep serve` on a free port for the workspace, with `env` and extra `args`.
    pub fn start(ws: &Ws, env: &[(&str, &str)], args: &[&str]) -> Server {
        let admin = token(ws, env, "alice", "admin");
        let operator = token(ws, env, "oscar", "operator");
        let viewer = token(ws, env, "vera", "viewer");
        let (child, base) = spawn_serve(ws, env, args, "serve.log");
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Server { child, base, admin, operator, viewer, client }
    }

    /// A request with a bearer token (or none) and a raw body.
    pub async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Answer {
        self.send(method, path, token.map(|t| format!("Bearer {t}")), body, &[]).await
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        auth: Option<String>,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = self.client.request(m, format!("{}{path}", self.base));
        if let Some(a) = auth {
            r = r.header("Authorization", a);
        }
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        if let Some(b) = body {
            r = r.header("Content-Type", "application/json").body(b.to_string());
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        Answer { status, headers, text }
    }

    pub async fn get(&self, path: &str, token: &str) -> Answer {
        self.call("GET", path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Answer {
        self.call("POST", path, Some(token), Some(&body.to_string())).await
    }

    /// Wait until run `id` is no longer running; its record.
    pub async fn wait_run(&self, id: &str) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let r = self.get(&format!("/api/runs/{id}"), &self.viewer).await;
            if r.status == 200 && r.json()["status"] != "running" {
                return r.json();
            }
            assert!(std::time::Instant::now() < deadline, "run {id} never ended: {}", r.text);
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Stop the server as a service manager would (SIGTERM) and wait for it.
    pub fn stop(mut self) -> std::process::ExitStatus {
        std::process::Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        let s = self.child.wait().unwrap();
        std::mem::forget(self);
        s
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` soft-deleted attachments past the cutoff (files included) and two that must stay: an
/// active one and a recent one.
pub async fn attachments(ws: &Ws, n: u32) {
    let mut sql = String::new();
    for i in 1..=n {
        let rel = format!("att/{i}.jpg");
        write_aged(&ws.media.join(&rel), 100, old_file_time());
        sql.push_str(&format!(
            "INSERT INTO forum_attachment (id, image, original_filename, file_size, is_active, deleted_at, created_at) \
             VALUES ('{}', '{rel}', 'x.jpg', 100, FALSE, {}, {});\n",
            uuid(i),
            ts(Utc::now() - Duration::days(40)),
            ts(at("2026-01-01T00:00:00Z"))
        ));
    }
    ws.exec(&sql).await;
    ws.file("att/active.jpg", 100, old_file_time());
    row(ws, 9001, Some("att/active.jpg"), true, None).await;
    ws.file("att/recent.jpg", 100, old_file_time());
    row(ws, 9002, Some("att/recent.jpg"), false, Some(Utc::now() - Duration::days(2))).await;
}

/// Wait until a run has deleted some of the `all` attachment rows.
async fn deleting(ws: &Ws, all: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while ws.count("SELECT count(*) FROM forum_attachment").await == all {
        assert!(std::time::Instant::now() < deadline, "the run never started deleting");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn kept_survive(ws: &Ws) {
    assert!(row_exists(ws, 9001).await && row_exists(ws, 9002).await, "the active and the recent row stay");
    assert!(ws.media.join("att/active.jpg").exists() && ws.media.join("att/recent.jpg").exists());
}

pub async fn auth_roles_and_bad_input_get_clear_answers(b: Backend) {
    let ws = Ws::new(b, true).await;
    attachments(&ws, 3).await;
    let s = Server::start(&ws, &[], &[]);
    // Health needs nothing; everything else needs a token.
    s.call("GET", "/healthz", None, None).await.expect(200);
    let r = s.call("GET", "/api/runs", None, None).await;
    r.expect(401);
    assert!(r.json()["error"].as_str().unwrap().contains("sweep token create"), "{}", r.text);
    s.call("GET", "/api/runs", Some("swp_0000000000000000_000000000000000000000000000000000000000000000000"), None)
        .await
        .expect(401);
    s.call("GET", "/metrics", None, None).await.expect(401);
    // Roles: viewer reads, operator previews, admin runs.
    s.get("/api/runs", &s.viewer).await.expect(200);
    let r = s.post("/api/runs", &s.viewer, json!({"command": "cleanup-attachments", "dry_run": true})).await;
    r.expect(403);
    assert!(r.json()["error"].as_str().unwrap().contains("operator"), "{}", r.text);
    s.post("/api/runs", &s.operator, json!({"command": "cleanup-attachments"})).await.expect(403);
    s.post("/api/cleanup/policies", &s.operator, json!({"data_type": "temp_files", "retention_days": 3}))
        .await
        .expect(403);
    s.post("/api/worker/dry-run", &s.viewer, json!({"enabled": true})).await.expect(403);
    // Bad bodies: malformed 400, wrong fields 422, too large 413; never a 500.
    let r = s.call("POST", "/api/runs", Some(&s.admin), Some("{\"command\": ")).await;
    r.expect(400);
    assert!(r.json()["error"].as_str().unwrap().contains("malformed JSON"), "{}", r.text);
    s.post("/api/runs", &s.admin, json!({"command": "cleanup-attachments", "surprise": 1})).await.expect(422);
    let r = s.post("/api/runs", &s.admin, json!({"command": "rm-rf"})).await;
    r.expect(422);
    assert!(r.json()["error"].as_str().unwrap().contains("unknown command"), "{}", r.text);
    let r = s.post("/api/runs", &s.admin, json!({"command": "cleanup-attachments", "args": ["--days", "soon"]})).await;
    r.expect(422);
    let r = s
        .post(
            "/api/runs",
            &s.admin,
            json!({"command": "cleanup-attachments", "args": ["--database-url", "sqlite:///tmp/x.db"]}),
        )
        .await;
    r.expect(422);
    assert!(r.json()["error"].as_str().unwrap().contains("global"), "{}", r.text);
    s.post("/api/cleanup/bulk/", &s.admin, json!({"retention_days": -1})).await.expect(422);
    s.post("/api/cleanup/bulk/", &s.admin, json!({"retention_days": "five"})).await.expect(422);
    s.post("/api/cleanup/policies", &s.admin, json!({"data_type": "nope", "retention_days": 3})).await.expect(422);
    s.post("/api/cleanup/policies", &s.admin, json!({"data_type": "temp_files", "retention_days": -4}))
        .await
        .expect(422);
    let big = format!("{{\"command\": \"{}\"}}", "x".repeat(100_000));
    s.call("POST", "/api/runs", Some(&s.admin), Some(&big)).await.expect(413);
    s.get("/api/runs?page=0", &s.viewer).await.expect(400);
    s.get("/api/runs/no-such-run", &s.viewer).await.expect(404);
    let r = s.get("/api/nothing/here", &s.viewer).await;
    r.expect(404);
    assert!(r.json()["error"].as_str().unwrap().contains("no route"));
    // Nothing was deleted by any of that.
    assert_eq!(ws.count("SELECT count(*) FROM forum_attachment").await, 5);
    // No token or hash in any answer or log.
    let log = std::fs::read_to_string(ws.dir.path().join("serve.log")).unwrap();
    let secret = s.admin.rsplit('_').next().unwrap().to_string();
    assert!(!log.contains(&secret), "the token's secret is in the log");
    let tokens = ws.text_rows("SELECT hash FROM sweep_tokens").await;
    assert!(
        tokens.iter().all(|r| r[0].as_deref().is_some_and(|h| h.starts_with("$argon2"))),
        "only argon2 hashes are stored"
    );
    assert!(tokens.iter().all(|r| !r[0].as_deref().unwrap().contains(&secret)));
}

pub async fn openapi_matches_the_routes(b: Backend) {
    let ws = Ws::new(b, true).await;
    let s = Server::start(&ws, &[], &[]);
    let doc = s.get("/api/openapi.json", &s.viewer).await.expect(200).json();
    let paths = doc["paths"].as_object().unwrap();
    // Every route in the router is documented.
    let source = include_str!("../../src/serve.rs");
    let routed: std::collections::BTreeSet<String> = source
        .split(".route(\"")
        .skip(1)
        .map(|r| r.split('"').next().unwrap().to_string())
        .filter(|p| p.starts_with("/api/") || p == "/metrics" || p == "/healthz")
        .filter(|p| p != "/api/cleanup/bulk") // the seed's path without its slash, same handler
        .collect();
    for p in &routed {
        assert!(paths.contains_key(p), "route {p} is not in /api/openapi.json");
    }
    // Every documented operation exists: it answers, and not with "no route" or 405.
    for (path, ops) in paths {
        let concrete = path.replace("{id}", "00000000-0000-4000-8000-000000000000");
        for (method, _) in ops.as_object().unwrap() {
            let r = match method.as_str() {
                "get" => s.get(&concrete, &s.admin).await,
                // A malformed body: the route parses it (400) or has none to parse.
                _ => s.call("POST", &concrete, Some(&s.admin), Some("{")).await,
            };
            assert_ne!(r.status, 405, "{method} {path}: {}", r.text);
            assert!(!r.text.contains("no route"), "{method} {path} is documented but not routed: {}", r.text);
            assert!(r.status < 500, "{method} {path}: {} {}", r.status, r.text);
        }
    }
    assert!(routed.len() >= 20 && paths.len() >= 20, "{routed:?}");
}

pub async fn seed_003_bulk_answers_its_fields_and_deletes_like_the_cli(b: Backend) {
    let ws = Ws::new(b, true).await;
    let bucket = format!("serve-bulk-{}", b.tag());
    let mut owned = crate::cloudcube::old_cube(&ws, &bucket, 4).await;
    owned.extend(S3Server::shared().env());
    let env: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let s = Server::start(&ws, &env, &[]);
    // The seed's curl: defaults, dry run first.
    let r = s.post("/api/cleanup/bulk/", &s.operator, json!({"dry_run": true})).await;
    r.expect(200);
    let j = r.json();
    for f in [
        "success",
        "message",
        "deleted_count",
        "deleted_size_mb",
        "retained_count",
        "total_files_scanned",
        "dry_run",
        "deleted_files_sample",
        "retention_days",
    ] {
        assert!(j.get(f).is_some(), "field {f} missing: {j}");
    }
    assert_eq!(j["success"], true);
    assert_eq!(j["dry_run"], true);
    assert_eq!(j["retention_days"], 5);
    assert_eq!(j["deleted_count"], 4);
    assert_eq!(j["total_files_scanned"], 5);
    assert!(S3Server::shared().exists(&bucket, "cube/tmp/0.bin"), "a dry run deletes nothing");
    // The operator may not run it for real; the admin may. An empty body means the defaults
    // (dry_run false), as the seed's third curl sends.
    s.call("POST", "/api/cleanup/bulk/", Some(&s.operator), Some(r#"{"retention_days": 5}"#)).await.expect(403);
    let r = s.call("POST", "/api/cleanup/bulk/", Some(&s.admin), Some("")).await;
    r.expect(200);
    let j = r.json();
    assert_eq!(j["dry_run"], false);
    assert_eq!(j["deleted_count"], 4);
    for i in 0..4 {
        assert!(!S3Server::shared().exists(&bucket, &format!("cube/tmp/{i}.bin")));
    }
    assert!(S3Server::shared().exists(&bucket, "cube/uploads/keep.mp4"), "a job in progress keeps its upload");
    // The run is recorded like a CLI run, with who started it.
    let run = s.get(&format!("/api/runs/{}", j["run_id"].as_str().unwrap()), &s.viewer).await.expect(200).json();
    assert_eq!(run["origin"]["by"], "token:alice");
    assert_eq!(run["deleted"], 4);
    let audit = ws
        .count(&format!(
            "SELECT count(*) FROM cleanup_audit WHERE run_id = '{}' AND outcome = 'deleted'",
            j["run_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(audit, 4);
    let acts = s.get("/api/actions", &s.viewer).await.expect(200).json();
    assert!(
        acts["actions"].as_array().unwrap().iter().any(|a| a["actor"] == "token:alice" && a["action"] == "run"),
        "{acts}"
    );
}

pub async fn a_web_run_and_a_cli_run_share_one_lock(b: Backend) {
    let ws = Ws::new(b, true).await;
    attachments(&ws, 40).await;
    let env = [("SWEEP_BATCH_DELAY_MS", "100")];
    let s = Server::start(&ws, &env, &[]);
    let r =
        s.post("/api/runs", &s.admin, json!({"command": "cleanup-attachments", "args": ["--batch-size", "2"]})).await;
    r.expect(202);
    let id = r.json()["run_id"].as_str().unwrap().to_string();
    // While it runs, the CLI finds the lock held (75), and so does a second web run (409).
    ws.sweep_env(&["cleanup-attachments"], &env).expect(75);
    let again = s.post("/api/runs", &s.admin, json!({"command": "cleanup-attachments"})).await;
    again.expect(409);
    let run = s.wait_run(&id).await;
    assert_eq!(run["status"], "success", "{run}");
    assert_eq!(ws.count("SELECT count(*) FROM forum_attachment").await, 2);
    kept_survive(&ws).await;
}

pub async fn cancel_mid_run_ends_partial_with_a_consistent_audit(b: Backend) {
    let ws = Ws::new(b, true).await;
    attachments(&ws, 60).await;
    let s = Server::start(&ws, &[("SWEEP_BATCH_DELAY_MS", "150")], &[]);
    let r =
        s.post("/api/runs", &s.admin, json!({"command": "cleanup-attachments", "args": ["--batch-size", "2"]})).await;
    r.expect(202);
    let id = r.json()["run_id"].as_str().unwrap().to_string();
    // Wait for some progress, then cancel (a viewer may not).
    deleting(&ws, 62).await;
    s.post(&format!("/api/runs/{id}/cancel"), &s.viewer, json!({})).await.expect(403);
    s.post(&format!("/api/runs/{id}/cancel"), &s.admin, json!({})).await.expect(202);
    let run = s.wait_run(&id).await;
    assert_eq!(run["status"], "partial", "{run}");
    let left = ws.count("SELECT count(*) FROM forum_attachment").await;
    assert!(left > 2, "cancelled before the end ({left} left)");
    // Every deleted row has its audit row; every remaining row has its file.
    let audited = ws
        .count(&format!(
            "SELECT count(*) FROM cleanup_audit WHERE run_id = '{id}' AND kind = 'row' AND outcome = 'deleted'"
        ))
        .await;
    assert_eq!(audited, 62 - left);
    assert!(run["deleted"].as_i64().unwrap() >= audited, "{run}");
    for i in 1..=60u32 {
        if row_exists(&ws, i).await {
            assert!(ws.media.join(format!("att/{i}.jpg")).exists(), "a kept row lost its file");
        }
    }
    kept_survive(&ws).await;
    s.post(&format!("/api/runs/{id}/cancel"), &s.admin, json!({})).await.expect(409);
}

pub async fn review_then_apply_refuses_a_tampered_or_stale_plan(b: Backend) {
    let ws = Ws::new(b, true).await;
    attachments(&ws, 3).await;
    // Past the cutoff, but its file was just written: kept (grace period), and shown so.
    ws.file("att/77.jpg", 100, Utc::now());
    row(&ws, 77, Some("att/77.jpg"), false, Some(Utc::now() - Duration::days(60))).await;
    let s = Server::start(&ws, &[], &["--max-plan-age", "3s"]);
    let p = s.post("/api/plans", &s.viewer, json!({"command": "cleanup-attachments"})).await;
    p.expect(403);
    let p = s.post("/api/plans", &s.operator, json!({"command": "cleanup-attachments"})).await;
    p.expect(201);
    let p = p.json();
    let id = p["id"].as_str().unwrap();
    let sha = p["sha256"].as_str().unwrap();
    assert_eq!(p["summary"]["items"], 6, "{p}");
    // The review shows every item and what is kept, with why.
    let review = s.get(&format!("/api/plans/{id}"), &s.viewer).await.expect(200).json();
    assert_eq!(review["items"].as_array().unwrap().len(), 6);
    assert!(
        review["kept"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["target"].as_str().unwrap().contains("att/77.jpg") && !k["reason"].as_str().unwrap().is_empty()),
        "{review}"
    );
    assert_eq!(review["sha256"], sha);
    // An operator may not apply; a wrong SHA-256 is refused; nothing deleted.
    s.post(&format!("/api/plans/{id}/apply"), &s.operator, json!({"sha256": sha})).await.expect(403);
    s.post(&format!("/api/plans/{id}/apply"), &s.admin, json!({"sha256": "0".repeat(64)})).await.expect(409);
    // A plan changed on disk after review is refused.
    let path = ws.dir.path().join("sweep-plans").join(format!("{id}.json"));
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("att/1.jpg", "att/9.jpg", 1)).unwrap();
    s.post(&format!("/api/plans/{id}/apply"), &s.admin, json!({"sha256": sha})).await.expect(409);
    std::fs::write(&path, &text).unwrap();
    assert_eq!(ws.count("SELECT count(*) FROM forum_attachment").await, 6);
    // Fresh and unchanged: carried out exactly.
    let r = s.post(&format!("/api/plans/{id}/apply"), &s.admin, json!({"sha256": sha})).await;
    r.expect(202);
    let run = s.wait_run(r.json()["run_id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "success", "{run}");
    assert_eq!(ws.count("SELECT count(*) FROM forum_attachment").await, 3);
    assert!(row_exists(&ws, 77).await && ws.media.join("att/77.jpg").exists());
    kept_survive(&ws).await;
    // A stale plan is refused.
    attachments_more(&ws).await;
    let p2 = s.post("/api/plans", &s.operator, json!({"command": "cleanup-attachments"})).await.expect(201).json();
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    let r = s
        .post(&format!("/api/plans/{}/apply", p2["id"].as_str().unwrap()), &s.admin, json!({"sha256": p2["sha256"]}))
        .await;
    r.expect(409);
    assert!(r.json()["error"].as_str().unwrap().contains("max-plan-age"), "{}", r.text);
    assert!(row_exists(&ws, 50).await, "a stale plan deletes nothing");
}

async fn attachments_more(ws: &Ws) {
    ws.file("att/50.jpg", 100, old_file_time());
    row(ws, 50, Some("att/50.jpg"), false, Some(Utc::now() - Duration::days(60))).await;
}

pub async fn runs_items_filters_csv_and_events(b: Backend) {
    let ws = Ws::new(b, true).await;
    attachments(&ws, 5).await;
    let s = Server::start(&ws, &[], &[]);
    let r = s.post("/api/runs", &s.admin, json!({"command": "cleanup-attachments"})).await.expect(202).json();
    let id = r["run_id"].as_str().unwrap().to_string();
    let run = s.wait_run(&id).await;
    assert_eq!(run["status"], "success");
    // The list, filtered.
    let l = s.get("/api/runs?command=cleanup-attachments&status=success", &s.viewer).await.expect(200).json();
    assert_eq!(l["total"], 1);
    assert_eq!(l["runs"][0]["run_id"], id.as_str());
    assert_eq!(s.get("/api/runs?command=worker-once", &s.viewer).await.json()["total"], 0);
    // The ledger: by kind, by outcome, by target; paged; CSV.
    let items = s.get(&format!("/api/runs/{id}/items?kind=file"), &s.viewer).await.expect(200).json();
    assert_eq!(items["total"], 5);
    let one = s.get(&format!("/api/runs/{id}/items?q=att/3.jpg"), &s.viewer).await.json();
    assert_eq!(one["total"], 1);
    assert_eq!(one["items"][0]["outcome"], "deleted");
    let page = s.get(&format!("/api/runs/{id}/items?per_page=3&page=4"), &s.viewer).await.json();
    assert_eq!(page["total"], 10);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(s.get(&format!("/api/runs/{id}/items?outcome=failed"), &s.viewer).await.json()["total"], 0);
    let csv = s.get(&format!("/api/runs/{id}/items?format=csv&kind=row"), &s.viewer).await;
    csv.expect(200);
    assert!(csv.headers["content-type"].to_str().unwrap().starts_with("text/csv"));
    let lines: Vec<&str> = csv.text.lines().collect();
    assert_eq!(lines.len(), 6, "{}", csv.text);
    assert!(lines[0].starts_with("at,kind,target"));
    assert!(lines[1..].iter().all(|l| l.contains(",row,") && l.contains("deleted")));
    // A dry run leaves no record in the database; the server keeps its report and items.
    attachments_more(&ws).await;
    let r = s
        .post("/api/runs", &s.operator, json!({"command": "cleanup-attachments", "dry_run": true}))
        .await
        .expect(202)
        .json();
    let dry = s.wait_run(r["run_id"].as_str().unwrap()).await;
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert_eq!(dry["status"], "success");
    let di = s
        .get(&format!("/api/runs/{}/items?outcome=would_delete", r["run_id"].as_str().unwrap()), &s.viewer)
        .await
        .expect(200)
        .json();
    assert_eq!(di["total"], 2, "{di}");
    assert!(row_exists(&ws, 50).await, "a dry run deletes nothing");
    assert_eq!(
        ws.count(&format!("SELECT count(*) FROM cleanup_runs WHERE id = '{}'", r["run_id"].as_str().unwrap())).await,
        0
    );
    // Events of a finished run: the record, then `end`.
    let ev = s.get(&format!("/api/runs/{id}/events"), &s.viewer).await;
    ev.expect(200);
    assert!(ev.text.contains("event: progress") && ev.text.contains("event: end"), "{}", ev.text);
}

pub async fn live_events_stream_a_run_to_its_end(b: Backend) {
    let ws = Ws::new(b, true).await;
    attachments(&ws, 10).await;
    let s = Server::start(&ws, &[("SWEEP_BATCH_DELAY_MS", "100")], &[]);
    let r = s
        .post("/api/runs", &s.admin, json!({"command": "cleanup-attachments", "args": ["--batch-size", "2"]}))
        .await
        .expect(202)
        .json();
    let id = r["run_id"].as_str().unwrap();
    let ev = s.get(&format!("/api/runs/{id}/events"), &s.viewer).await;
    ev.expect(200);
    for e in ["event: progress", "event: batch", "event: item", "event: finished", "event: end"] {
        assert!(ev.text.contains(e), "{e} missing from\n{}", ev.text);
    }
    let end = ev.text.split("event: end").nth(1).unwrap();
    assert!(end.contains("\"status\":\"success\""), "{end}");
    kept_survive(&ws).await;
}

pub async fn policies_toggle_and_every_web_action_are_audited_with_the_token_name(b: Backend) {
    let ws = Ws::new(b, true).await;
    let data = ws.dir.path().join("data");
    write_aged(&data.join("logs/old.log"), 10, Utc::now() - Duration::days(30));
    write_aged(&data.join("logs/new.log"), 10, Utc::now() - Duration::hours(1));
    let env = [("DATA_DIR", data.to_str().unwrap())];
    let s = Server::start(&ws, &env, &[]);
    // Seed 002's editor.
    let p = s.get("/api/cleanup/policies", &s.viewer).await.expect(200).json();
    assert_eq!(p["policies"].as_array().unwrap().len(), 6);
    let r = s
        .post(
            "/api/cleanup/policies",
            &s.admin,
            json!({"data_type": "temp_files", "retention_days": 3, "enabled": false}),
        )
        .await;
    r.expect(200);
    assert_eq!(r.json()["policy"]["retention_days"], 3);
    let rows = ws.text_rows("SELECT CAST(retention_days AS TEXT), CAST(enabled AS TEXT) FROM cleanup_policies WHERE data_type = 'temp_files'").await;
    assert_eq!(rows[0][0].as_deref(), Some("3"));
    assert!(matches!(rows[0][1].as_deref(), Some("0") | Some("false")), "{rows:?}");
    let reason = ws.text_rows("SELECT reason FROM cleanup_audit WHERE policy = 'cleanup-ops/set-policy'").await;
    assert!(reason[0][0].as_deref().unwrap().contains("by token:alice"), "{reason:?}");
    // Seed 004's toggle: worker-once respects it, from the CLI too.
    let t = s.post("/api/worker/dry-run", &s.admin, json!({"enabled": true})).await.expect(200).json();
    assert_eq!(t["enabled"], true);
    let run = ws.sweep_env(&["worker-once", "--tasks", "logs", "--json"], &env);
    run.expect(0);
    assert_eq!(run.json()["dry_run"], true, "the toggle makes the CLI's cycle a dry run");
    assert!(data.join("logs/old.log").exists());
    let st = s.get("/api/worker/status", &s.viewer).await.expect(200).json();
    assert_eq!(st["dry_run"]["effective"], true);
    assert!(st["config"]["worker.log_retention_days"]["value"].is_string(), "{st}");
    s.post("/api/worker/dry-run", &s.admin, json!({"enabled": false})).await.expect(200);
    // Run Cleanup Now: a real cycle, started by alice.
    let r = s.post("/api/worker/run", &s.admin, json!({"tasks": ["logs"]})).await.expect(202).json();
    let run = s.wait_run(r["run_id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "success");
    assert_eq!(run["origin"]["by"], "token:alice");
    assert!(!data.join("logs/old.log").exists());
    assert!(data.join("logs/new.log").exists(), "a recent log stays");
    let st = s.get("/api/worker/status", &s.viewer).await.json();
    assert_eq!(st["deleted_24h_by_task"]["logs"]["file"], 1, "{st}");
    assert_eq!(st["last_run"]["status"], "success");
    let acts = s.get("/api/actions?per_page=100", &s.viewer).await.json();
    let did: Vec<(String, String)> = acts["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["actor"].as_str().unwrap().into(), a["action"].as_str().unwrap().into()))
        .collect();
    for a in ["policy", "dry-run", "run"] {
        assert!(did.contains(&("token:alice".into(), a.into())), "{a} not audited: {did:?}");
    }
}

pub async fn browser_sessions_need_csrf_and_the_same_origin(b: Backend) {
    let ws = Ws::new(b, true).await;
    let s = Server::start(&ws, &[], &[]);
    // A wrong token: 401 page, no cookie.
    let bad = s.send("POST", "/login", None, None, &[("Content-Type", "application/x-www-form-urlencoded")]).await;
    assert!(bad.status == 400 || bad.status == 422 || bad.status == 415, "{} {}", bad.status, bad.text);
    let r = login(&s.base, "swp_nope").await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());
    let r = login(&s.base, &s.admin).await;
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let cookie = cookie.split(';').next().unwrap().to_string();
    let page = s.send("GET", "/", None, None, &[("Cookie", &cookie)]).await;
    page.expect(200);
    let csrf = page.text.split("name=\"csrf\" content=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let origin = s.base.clone();
    let body = Some(r#"{"enabled": true}"#);
    // No CSRF token: 403. Another origin: 403. Both right: 200.
    s.send("POST", "/api/worker/dry-run", None, body, &[("Cookie", &cookie), ("Origin", &origin)]).await.expect(403);
    s.send(
        "POST",
        "/api/worker/dry-run",
        None,
        body,
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf), ("Origin", "http://evil.example")],
    )
    .await
    .expect(403);
    s.send("POST", "/api/worker/dry-run", None, body, &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)])
        .await
        .expect(403);
    s.send(
        "POST",
        "/api/worker/dry-run",
        None,
        body,
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf), ("Origin", &origin)],
    )
    .await
    .expect(200);
    // Pages without a session go to sign-in.
    let r = s.send("GET", "/runs", None, None, &[]).await;
    assert_eq!(r.status, 303);
    // Revoking the token ends the session at once.
    ws.sweep(&["token", "revoke", "alice"]).expect(0);
    s.send("GET", "/api/runs", None, None, &[("Cookie", &cookie)]).await.expect(401);
    s.call("GET", "/api/runs", Some(&s.admin), None).await.expect(401);
    let list = ws.sweep(&["token", "list"]);
    assert!(list.stdout.contains("alice") && !list.stdout.contains("argon2"), "{}", list.stdout);
}

/// Sign in as a browser's form would.
async fn login(base: &str, token: &str) -> reqwest::Response {
    let c = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    c.post(format!("{base}/login"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap()
}

pub async fn rate_limits_answer_429_with_retry_after(b: Backend) {
    let ws = Ws::new(b, true).await;
    attachments(&ws, 1).await;
    std::fs::write(ws.dir.path().join("sweep.toml"), "[serve]\nsign_in_per_minute = 2\nwork_per_minute = 2\n").unwrap();
    let s = Server::start(&ws, &[], &[]);
    let c = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let mut codes = Vec::new();
    for _ in 0..3 {
        let r = c
            .post(format!("{}/login", s.base))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body("token=swp_x")
            .send()
            .await
            .unwrap();
        codes.push((r.status().as_u16(), r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string())));
    }
    assert_eq!(codes[0].0, 401);
    assert_eq!(codes[2].0, 429, "{codes:?}");
    assert!(codes[2].1.as_deref().is_some_and(|s| s.parse::<u64>().unwrap() >= 1), "{codes:?}");
    let mut last = None;
    for _ in 0..3 {
        last = Some(s.post("/api/plans", &s.operator, json!({"command": "cleanup-attachments"})).await);
    }
    let last = last.unwrap();
    last.expect(429);
    assert!(last.headers.get("retry-after").is_some());
    // Reads are not limited.
    for _ in 0..5 {
        s.get("/api/runs", &s.viewer).await.expect(200);
    }
}

pub async fn graceful_shutdown_lets_the_batch_finish_and_records_the_run(b: Backend) {
    let ws = Ws::new(b, true).await;
    attachments(&ws, 40).await;
    let s = Server::start(&ws, &[("SWEEP_BATCH_DELAY_MS", "150")], &[]);
    let r = s
        .post("/api/runs", &s.admin, json!({"command": "cleanup-attachments", "args": ["--batch-size", "2"]}))
        .await
        .expect(202)
        .json();
    let id = r["run_id"].as_str().unwrap().to_string();
    deleting(&ws, 42).await;
    let status = s.stop();
    assert!(status.success(), "serve exits 0 on SIGTERM: {status:?}");
    let rows = ws.text_rows(&format!("SELECT status FROM cleanup_runs WHERE id = '{id}'")).await;
    assert_eq!(rows[0][0].as_deref(), Some("partial"), "the run is recorded as stopped, not left running");
    let left = ws.count("SELECT count(*) FROM forum_attachment").await;
    let audited = ws
        .count(&format!(
            "SELECT count(*) FROM cleanup_audit WHERE run_id = '{id}' AND kind = 'row' AND outcome = 'deleted'"
        ))
        .await;
    assert_eq!(audited, 42 - left);
    assert!(left > 2);
    kept_survive(&ws).await;
}

pub async fn schedules_show_next_run_and_catch_up_once_across_servers(b: Backend) {
    let ws = Ws::new(b, true).await;
    let data = ws.dir.path().join("data");
    write_aged(&data.join("logs/old.log"), 10, Utc::now() - Duration::days(30));
    std::fs::write(
        ws.dir.path().join("sweep.toml"),
        "[[schedule]]\nname = \"nightly-logs\"\ncommand = \"worker-once\"\nargs = [\"--tasks\", \"logs\"]\ncron = \"0 2 * * *\"\ncatch_up = true\n\n\
         [[schedule]]\nname = \"hourly-preview\"\ncommand = \"cleanup-attachments\"\ncron = \"0 * * * *\"\ndry_run = true\n",
    )
    .unwrap();
    // The entry last ran three days ago: it missed slots while no server ran.
    let three = Utc::now() - Duration::days(3);
    ws.exec(&format!(
        "INSERT INTO cleanup_runs (id, command, dry_run, started_at, finished_at, status, details) VALUES \
         ('old-slot', 'worker-once', FALSE, {t}, {t}, 'success', '{{\"origin\":{{\"schedule\":\"nightly-logs\",\"via\":\"schedule\"}}}}')",
        t = ts(three)
    ))
    .await;
    let env = [("DATA_DIR", data.to_str().unwrap())];
    let s1 = Server::start(&ws, &env, &[]);
    // A second server on the same database: the catch-up happens once between them.
    let (mut second, _) = spawn_serve(&ws, &env, &[], "serve-2.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while data.join("logs/old.log").exists() {
        assert!(std::time::Instant::now() < deadline, "the missed slot never caught up");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let _ = second.kill();
    let _ = second.wait();
    let runs = ws.count("SELECT count(*) FROM cleanup_runs WHERE command = 'worker-once' AND id <> 'old-slot'").await;
    assert_eq!(runs, 1, "one catch-up run, not one per server");
    let sch = s1.get("/api/schedules", &s1.viewer).await.expect(200).json();
    let list = sch["schedules"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let nightly = list.iter().find(|s| s["name"] == "nightly-logs").unwrap();
    assert_eq!(nightly["last_run"]["status"], "success", "{nightly}");
    assert_eq!(nightly["overdue"], false);
    let next = chrono::DateTime::parse_from_rfc3339(nightly["next_run"].as_str().unwrap()).unwrap();
    assert!(next > Utc::now() && next < Utc::now() + Duration::hours(24));
    let hourly = list.iter().find(|s| s["name"] == "hourly-preview").unwrap();
    assert_eq!(hourly["dry_run"], true);
    assert!(hourly["last_run"].is_null());
    // The dashboard's status carries them per command.
    let st = s1.get("/api/status", &s1.viewer).await.json();
    let w = st["commands"].as_array().unwrap().iter().find(|c| c["command"] == "worker-once").unwrap();
    assert_eq!(w["schedules"][0]["name"], "nightly-logs");
    // Metrics for every command.
    let m = s1.get("/metrics", &s1.viewer).await;
    m.expect(200);
    assert!(m.text.contains("sweep_last_success_timestamp_seconds{command=\"worker-once\"}"), "{}", m.text);
    let _ = NOW;
}

/// An operation file under `ops`, last modified `age` ago.
fn ops_file(ops: &std::path::Path, rel: &str, body: &str, age: Duration) {
    let p = ops.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, body).unwrap();
    std::fs::File::options().write(true).open(&p).unwrap().set_modified((Utc::now() - age).into()).unwrap();
}

pub async fn seed_002_stats_files_and_run_answer_like_cleanup_ops(b: Backend) {
    let ws = Ws::new(b, true).await;
    let ops = ws.dir.path().join("ops");
    let d = Duration::days;
    ops_file(&ops, "operation_old.json", r#"{"status": "failed"}"#, d(20)); // failed: 14 days
    ops_file(&ops, "operation_new.json", r#"{"status": "failed"}"#, d(3));
    ops_file(&ops, "logs/app/old.log", "x", d(40)); // system logs: 30 days
    ops_file(&ops, "logs/app/new.log", "x", d(2));
    let env = [("OPS_DIR", ops.to_str().unwrap())];
    let s = Server::start(&ws, &env, &[]);
    // The cards: what would go now, nothing done yet.
    let st = s.get("/api/cleanup/stats", &s.viewer).await.expect(200).json();
    assert_eq!(st["files_to_clean"], 2, "{st}");
    assert!(st["last_cleanup"].is_null());
    // The file list: every file with what a run would do and why.
    let files = s.get("/api/cleanup/files", &s.viewer).await.expect(200).json();
    let f = files["files"].as_array().unwrap();
    let action = |p: &str| {
        f.iter().find(|x| x["path"].as_str().unwrap().ends_with(p)).map(|x| x["action"].as_str().unwrap().to_string())
    };
    assert_eq!(action("operation_old.json").as_deref(), Some("delete"), "{files}");
    assert_eq!(action("logs/app/old.log").as_deref(), Some("delete"));
    assert_eq!(action("operation_new.json").as_deref(), Some("keep"), "{files}");
    assert!(f.iter().all(|x| !x["reason"].as_str().unwrap_or_default().is_empty()));
    // Dry Run: a report, nothing deleted; Run Cleanup: backed up, then deleted.
    let dry = s.post("/api/cleanup/run", &s.operator, json!({"dry_run": true})).await.expect(200).json();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["candidates"], 2, "{dry}");
    assert!(ops.join("operation_old.json").exists());
    s.post("/api/cleanup/run", &s.operator, json!({"type": "manual"})).await.expect(403);
    s.post("/api/cleanup/run", &s.admin, json!({"type": "sometimes"})).await.expect(422);
    let real = s.post("/api/cleanup/run", &s.admin, json!({"type": "manual"})).await.expect(200).json();
    assert_eq!(real["status"], "success", "{real}");
    assert!(!ops.join("operation_old.json").exists() && !ops.join("logs/app/old.log").exists());
    assert!(ops.join("operation_new.json").exists() && ops.join("logs/app/new.log").exists());
    let backups: Vec<_> = walkdir::WalkDir::new(ops.join("cleanup_backups"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .collect();
    assert_eq!(backups.len(), 2, "each deleted file was backed up first");
    let st = s.get("/api/cleanup/stats", &s.viewer).await.json();
    assert_eq!(st["files_to_clean"], 0);
    assert_eq!(st["last_cleanup"]["status"], "success");
    assert_eq!(st["history"][0]["origin"]["by"], "token:alice");
}

pub async fn tls_serves_https_and_a_remote_address_needs_it(b: Backend) {
    let ws = Ws::new(b, true).await;
    // A non-loopback address without TLS is refused before anything listens.
    let r = ws.sweep(&["serve", "--listen", "0.0.0.0:0"]);
    r.expect(2);
    assert!(r.stderr.contains("--tls-cert") && r.stderr.contains("--insecure-listen"), "{}", r.stderr);
    let r = ws.sweep(&["serve", "--listen", "localhost"]);
    r.expect(2);
    assert!(r.stderr.contains("not an address"), "{}", r.stderr);
    // A self-signed certificate: HTTPS on loopback, cookies marked Secure.
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (c, k) = (ws.dir.path().join("cert.pem"), ws.dir.path().join("key.pem"));
    std::fs::write(&c, cert.cert.pem()).unwrap();
    std::fs::write(&k, cert.key_pair.serialize_pem()).unwrap();
    let r = ws.sweep(&[
        "serve",
        "--tls-cert",
        c.to_str().unwrap(),
        "--tls-key",
        ws.dir.path().join("nope.pem").to_str().unwrap(),
    ]);
    r.expect(2);
    assert!(r.stderr.contains("--tls-key"), "{}", r.stderr);
    let s = Server::start(&ws, &[], &["--tls-cert", c.to_str().unwrap(), "--tls-key", k.to_str().unwrap()]);
    assert!(s.base.starts_with("https://"), "{}", s.base);
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let h = client.get(format!("{}/healthz", s.base)).send().await.unwrap();
    assert_eq!(h.status(), 200);
    let r = client.get(format!("{}/api/runs", s.base)).bearer_auth(&s.viewer).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .post(format!("{}/login", s.base))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("token={}", s.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(r.headers()["set-cookie"].to_str().unwrap().contains("Secure"));
    // Plain HTTP to the TLS port gets nowhere.
    let plain = reqwest::get(s.base.replace("https://", "http://") + "/healthz").await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
}

pub async fn web_runs_notify_like_cli_runs_even_when_they_cannot_start(b: Backend) {
    let ws = Ws::new(b, true).await;
    attachments(&ws, 2).await;
    let hook = crate::notify::Receiver::start(200, 0);
    let url = format!("{}/hook", hook.url);
    let s = Server::start(&ws, &[("SWEEP_NOTIFY_URL", url.as_str())], &[]);
    // worker-once without DATA_DIR cannot start: 422 for the caller, `failure` for the webhook.
    let r = s.post("/api/worker/run", &s.admin, json!({"tasks": ["logs"]})).await;
    r.expect(422);
    assert!(r.json()["error"].as_str().unwrap().contains("DATA_DIR"), "{}", r.text);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while hook.heard().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the failure was never notified");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let heard: Value = serde_json::from_str(&hook.heard()[0].body).unwrap();
    assert_eq!(heard["command"], "worker-once");
    assert_eq!(heard["status"], "failure");
    assert!(heard["message"].as_str().unwrap().contains("DATA_DIR"), "{heard}");
    // A bad request is not a run: nothing is sent for it.
    s.post("/api/runs", &s.admin, json!({"command": "nope"})).await.expect(422);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(hook.heard().len(), 1);
}
