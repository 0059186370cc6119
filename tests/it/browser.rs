//! The dashboard in a real browser: Debian's chromium, headless, driven through WebDriver
//! (chromium-driver) by fantoccini; the real `sweep serve` and real files behind it. Sign in,
//! preview, review the plan, apply it with a typed confirmation, watch it finish, find a deleted
//! item in the ledger, edit a policy, toggle dry-run, and use it at phone width.
//!
//! With `SWEEP_SCREENSHOTS=DIR`, the pages are saved there as PNG (how docs/screenshots/ is
//! made: `SWEEP_SCREENSHOTS=$PWD/docs/screenshots cargo test --test it sign_in_preview_review_apply`).

use crate::attachments::row_exists;
use crate::serve::{attachments, Server};
use crate::support::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use std::process::{Child, Stdio};
use std::time::Duration;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a free port of 127.0.0.1, stopped on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn driver() -> Driver {
    for p in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            std::path::Path::new(p).exists(),
            "{p} is missing: the browser tests need Debian's chromium and chromium-driver \
             (apt-get install chromium chromium-driver; scripts/test installs them as root)"
        );
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = std::process::Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "chromedriver did not listen on {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Driver { child, url }
}

async fn browser(d: &Driver, profile: &std::path::Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector).capabilities(caps).connect(&d.url).await.expect("a WebDriver session")
}

async fn shot(c: &Client, name: &str) {
    if let Ok(dir) = std::env::var("SWEEP_SCREENSHOTS") {
        std::fs::create_dir_all(&dir).unwrap();
        let png = c.screenshot().await.unwrap();
        std::fs::write(std::path::Path::new(&dir).join(format!("{name}.png")), png).unwrap();
    }
}

async fn wait_text(c: &Client, css: &str, want: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            if let Ok(t) = e.text().await {
                if t.contains(want) {
                    return t;
                }
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{css} never showed {want:?}; page:\n{}",
            c.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_url(c: &Client, part: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let u = c.current_url().await.unwrap().to_string();
        if u.contains(part) {
            return u;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never reached {part}: at {u}; page:\n{}",
            c.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn sign_in_preview_review_apply_watch_and_edit(b: Backend) {
    let ws = Ws::new(b, true).await;
    attachments(&ws, 3).await;
    let data = ws.dir.path().join("data");
    std::fs::create_dir_all(data.join("logs")).unwrap();
    std::fs::write(ws.dir.path().join("sweep.toml"), "[serve]\nconfirm_over = 2\n").unwrap();
    let env = [("SWEEP_BATCH_DELAY_MS", "400"), ("DATA_DIR", data.to_str().unwrap())];
    let s = Server::start(&ws, &env, &[]);
    let d = driver().await;
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&d, profile.path()).await;

    // Sign in: a page without a session goes to the form.
    c.goto(&format!("{}/runs", s.base)).await.unwrap();
    wait_url(&c, "/login").await;
    c.find(Locator::Css("#token")).await.unwrap().send_keys("swp_not_a_token").await.unwrap();
    c.find(Locator::Css("form button[type=submit]")).await.unwrap().click().await.unwrap();
    wait_text(&c, "p.error", "not valid").await;
    c.find(Locator::Css("#token")).await.unwrap().send_keys(&s.admin).await.unwrap();
    c.find(Locator::Css("form button[type=submit]")).await.unwrap().click().await.unwrap();
    wait_text(&c, "h1", "Dashboard").await;
    wait_text(&c, "header", "alice (admin)").await;
    let cookie = c.get_named_cookie(crate::serve::COOKIE).await.unwrap();
    assert_eq!(cookie.http_only(), Some(true));

    // Preview: a dry run whose plan is kept for review.
    c.goto(&format!("{}/preview?command=cleanup-attachments", s.base)).await.unwrap();
    c.find(Locator::Css("#args")).await.unwrap().send_keys("--batch-size 1").await.unwrap();
    c.find(Locator::Css("#preview-form button")).await.unwrap().click().await.unwrap();
    let plan_url = wait_url(&c, "/plans/").await;
    let items = wait_text(&c, "#plan-items", "items").await;
    assert!(items.starts_with("6 items"), "{items}");
    let review = c.source().await.unwrap();
    assert!(review.contains("att/1.jpg") && review.contains("Kept, and why"), "the review lists items and kept");
    shot(&c, "plan-review").await;
    assert_eq!(ws.count("SELECT count(*) FROM forum_attachment").await, 5, "a preview deletes nothing");

    // Apply: a plan over confirm_over items needs the command typed first.
    c.find(Locator::Css("#apply")).await.unwrap().click().await.unwrap();
    wait_text(&c, "#msg", "to confirm").await;
    assert!(c.current_url().await.unwrap().to_string() == plan_url);
    assert_eq!(ws.count("SELECT count(*) FROM forum_attachment").await, 5);
    c.find(Locator::Css("#confirm-text")).await.unwrap().send_keys("cleanup-attachments").await.unwrap();
    c.find(Locator::Css("#apply")).await.unwrap().click().await.unwrap();
    let run_url = wait_url(&c, "/runs/").await;
    // Live progress while it runs, then the page shows the end.
    let live = c.find(Locator::Css("#live-text")).await;
    if let Ok(l) = live {
        let _ = l.text().await;
        shot(&c, "run-live").await;
    }
    wait_text(&c, "#run-status", "success").await;
    assert_eq!(ws.count("SELECT count(*) FROM forum_attachment").await, 2);
    assert!(row_exists(&ws, 9001).await && row_exists(&ws, 9002).await, "what the plan kept stays");

    // Find a deleted item in the ledger.
    c.goto(&run_url).await.unwrap();
    c.find(Locator::Css("input[name=q]")).await.unwrap().send_keys("att/2.jpg").await.unwrap();
    c.find(Locator::Css("form.filters button")).await.unwrap().click().await.unwrap();
    wait_url(&c, "q=att").await;
    let ledger = wait_text(&c, "#ledger tbody", "att/2.jpg").await;
    assert!(ledger.contains("deleted"), "{ledger}");
    assert!(!ledger.contains("att/3.jpg"), "the search filters: {ledger}");
    shot(&c, "run").await;
    c.goto(&format!("{}/", s.base)).await.unwrap();
    wait_text(&c, "section.cards", "success").await;
    shot(&c, "dashboard").await;

    // Seed 002's policy editor.
    c.goto(&format!("{}/policies", s.base)).await.unwrap();
    let input = c.find(Locator::Css("tr[data-policy=temp_files] input[name=retention_days]")).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys("9").await.unwrap();
    c.find(Locator::Css("tr[data-policy=temp_files] button.save-policy")).await.unwrap().click().await.unwrap();
    wait_text(&c, "#msg", "Saved temp_files").await;
    assert_eq!(ws.count("SELECT retention_days FROM cleanup_policies WHERE data_type = 'temp_files'").await, 9);
    shot(&c, "policies").await;

    // Seed 004's dry-run toggle.
    c.goto(&format!("{}/worker", s.base)).await.unwrap();
    wait_text(&c, "#dry-run-state", "off").await;
    c.find(Locator::Css("#dry-run-toggle")).await.unwrap().click().await.unwrap();
    wait_text(&c, "#dry-run-state", "ON").await;
    assert_eq!(
        ws.count("SELECT count(*) FROM sweep_settings WHERE name = 'worker.dry_run' AND value = 'true'").await,
        1
    );
    shot(&c, "worker").await;

    // Phone width: nothing wider than the screen; the keyboard reaches the first link.
    c.set_window_size(390, 844).await.unwrap();
    c.goto(&format!("{}/", s.base)).await.unwrap();
    wait_text(&c, "h1", "Dashboard").await;
    shot(&c, "dashboard-phone").await;
    let wide = c
        .execute(
            "return [...document.querySelectorAll('body *')].filter(e => !e.closest('.scroll') && e.getBoundingClientRect().right > window.innerWidth + 1).map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right)).slice(0, 10)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(wide, json!([]), "wider than a phone's screen (390 px)");
    let fits = c.execute("return document.documentElement.scrollWidth <= window.innerWidth + 1", vec![]).await.unwrap();
    assert_eq!(fits, json!(true), "the page scrolls sideways at phone width");
    let actions = s.get("/api/actions?per_page=100", &s.viewer).await.json();
    let did: Vec<String> =
        actions["actions"].as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap().to_string()).collect();
    for a in ["sign-in", "plan", "apply", "policy", "dry-run"] {
        assert!(did.iter().any(|d| d == a), "{a} not audited: {did:?}");
    }
    c.close().await.unwrap();
}
