//! Telling operators what a run did, for every command, from the CLI and (soon) `serve`:
//! `[[notify]]` targets in the config, or `SWEEP_NOTIFY_URL` (a webhook) and
//! `SWEEP_HEALTHCHECKS_URL` (a healthchecks.io-style check) in the environment.
//!
//! - `webhook`: a JSON POST of the run's summary (command, run id, status, exit code, counts,
//!   bytes, duration, host, the first errors); with a `secret`, the body's HMAC-SHA256 in
//!   `X-Sweep-Signature: sha256=<hex>` so the receiver can check it came from us.
//! - `healthchecks`: the ping protocol of healthchecks.io (and self-hosted ones): `<url>/start`
//!   before the run, `<url>` on success, `<url>/<exit code>` otherwise, each with `?rid=<run id>`
//!   and a short summary as the body: the "dead man's switch" that alerts when runs stop coming.
//!
//! A notification never changes the run's outcome or exit code. Each is tried a few times with
//! backoff, within a bound (a receiver that is down or slow delays a run by seconds, not more),
//! logged when it fails, and recorded on the run (`cleanup_runs.details.notifications`).

use crate::config::{EnvSource, RawNotify};
use hmac::{Hmac, Mac};
use serde::Serialize;
use std::time::Duration;

/// When a target is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    Start,
    Success,
    Partial,
    Failure,
    Aborted,
}

impl When {
    fn parse(s: &str) -> Option<When> {
        Some(match s {
            "start" => When::Start,
            "success" => When::Success,
            "partial" => When::Partial,
            "failure" => When::Failure,
            "aborted" => When::Aborted,
            _ => return None,
        })
    }

    /// The event a run's status is (`skipped` runs are successes: they did what was asked).
    pub fn of_status(status: &str) -> When {
        match status {
            "partial" => When::Partial,
            "aborted" => When::Aborted,
            "failure" | "failed" => When::Failure,
            _ => When::Success,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Webhook { secret: Option<String> },
    Healthchecks,
}

/// One place to tell.
#[derive(Debug, Clone)]
struct Target {
    kind: Kind,
    url: String,
    on: Vec<When>,
}

/// Where and when to notify, read once per run.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    targets: Vec<Target>,
}

/// What a run did, as a notification says it.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Summary {
    pub command: String,
    pub run_id: String,
    /// success, partial, failure, aborted, skipped.
    pub status: String,
    pub exit_code: i32,
    pub dry_run: bool,
    pub candidates: u64,
    pub deleted: u64,
    pub failed: u64,
    pub retained: u64,
    pub bytes_reclaimed: u64,
    pub duration_seconds: f64,
    pub host: String,
    pub message: String,
    /// The first errors: (target, error).
    pub errors: Vec<(String, String)>,
}

/// What became of one notification, recorded on the run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Delivery {
    pub kind: &'static str,
    pub event: When,
    /// The URL without credentials or query.
    pub to: String,
    pub ok: bool,
    pub attempts: u32,
    pub error: Option<String>,
}

const ATTEMPTS: u32 = 3;
const TIMEOUT: Duration = Duration::from_secs(2);

impl Notifier {
    /// The `[[notify]]` targets, then the environment's. Bad entries are errors that name them.
    pub fn load(raw: &[RawNotify], env: &dyn EnvSource, file: &str) -> anyhow::Result<Notifier> {
        let mut n = Notifier::from_env(env);
        for (i, r) in raw.iter().enumerate() {
            let bad = |why: String| anyhow::anyhow!("[[notify]] #{} in {file}: {why}", i + 1);
            let kind = match r.kind.as_str() {
                "webhook" => Kind::Webhook { secret: r.secret.clone() },
                "healthchecks" => Kind::Healthchecks,
                k => return Err(bad(format!("kind {k:?}: expected \"webhook\" or \"healthchecks\""))),
            };
            if r.secret.is_some() && kind == Kind::Healthchecks {
                return Err(bad("secret is for webhooks".into()));
            }
            if !(r.url.starts_with("http://") || r.url.starts_with("https://")) {
                return Err(bad(format!("url {:?}: expected http(s)://…", crate::config::redact_url(&r.url))));
            }
            let on = match &r.on {
                None => default_events(&kind),
                Some(list) => list
                    .iter()
                    .map(|e| {
                        When::parse(e).ok_or_else(|| {
                            bad(format!(
                                "on: unknown event {e:?}: choose from start, success, partial, failure, aborted"
                            ))
                        })
                    })
                    .collect::<anyhow::Result<_>>()?,
            };
            n.targets.push(Target { kind, url: r.url.clone(), on });
        }
        Ok(n)
    }

    /// Only the environment's targets (when the config file itself cannot be read, the
    /// failure is still told).
    pub fn from_env(env: &dyn EnvSource) -> Notifier {
        let mut targets = Vec::new();
        if let Some(url) = env.get("SWEEP_NOTIFY_URL") {
            let kind = Kind::Webhook { secret: env.get("SWEEP_NOTIFY_SECRET") };
            targets.push(Target { on: default_events(&kind), kind, url });
        }
        if let Some(url) = env.get("SWEEP_HEALTHCHECKS_URL") {
            targets.push(Target { on: default_events(&Kind::Healthchecks), kind: Kind::Healthchecks, url });
        }
        Notifier { targets }
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The targets, as `--show-config` shows them (no secrets, no query strings).
    pub fn describe(&self) -> Vec<String> {
        self.targets
            .iter()
            .map(|t| {
                let kind = match t.kind {
                    Kind::Webhook { secret: Some(_) } => "webhook (signed)",
                    Kind::Webhook { secret: None } => "webhook",
                    Kind::Healthchecks => "healthchecks",
                };
                format!("{kind} {} on {:?}", shown(&t.url), t.on)
            })
            .collect()
    }

    /// Tell the targets that want `start` that a run begins.
    pub async fn start(&self, command: &str, run_id: &str) -> Vec<Delivery> {
        let s =
            Summary { command: command.into(), run_id: run_id.into(), status: "start".into(), ..Default::default() };
        self.send(When::Start, &s).await
    }

    /// Tell the targets that want this run's outcome.
    /// Tell the targets that a run could not run at all (a bad config, an unreachable
    /// database, a held lock): the alert operators need most.
    pub async fn failure(&self, command: &str, run_id: &str, e: &anyhow::Error) -> Vec<Delivery> {
        let s = Summary {
            command: command.into(),
            run_id: run_id.into(),
            status: "failure".into(),
            exit_code: crate::exit_codes::exit_for(e) as i32,
            host: host(),
            message: format!("{e:#}"),
            ..Default::default()
        };
        self.finish(&s).await
    }

    pub async fn finish(&self, s: &Summary) -> Vec<Delivery> {
        self.send(When::of_status(&s.status), s).await
    }

    async fn send(&self, event: When, s: &Summary) -> Vec<Delivery> {
        let wanted: Vec<&Target> = self.targets.iter().filter(|t| t.on.contains(&event)).collect();
        if wanted.is_empty() {
            return Vec::new();
        }
        let client = match reqwest::Client::builder().timeout(TIMEOUT).build() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(target: "cleanup", "notifications are off: cannot make an HTTP client: {e}");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for t in wanted {
            let d = deliver(&client, t, event, s).await;
            if let Some(e) = &d.error {
                tracing::warn!(target: "cleanup", "notification ({}, {:?}) to {} failed after {} attempts: {e}", d.kind, event, d.to, d.attempts);
            } else {
                tracing::debug!(target: "cleanup", "notified {} ({:?})", d.to, event);
            }
            out.push(d);
        }
        out
    }
}

fn default_events(kind: &Kind) -> Vec<When> {
    match kind {
        Kind::Webhook { .. } => vec![When::Failure, When::Partial, When::Aborted],
        Kind::Healthchecks => vec![When::Start, When::Success, When::Partial, When::Failure, When::Aborted],
    }
}

/// A URL as logs and records show it: no credentials, no query (healthchecks URLs carry no
/// secret in their path only when the operator says so; the check's UUID is kept).
fn shown(url: &str) -> String {
    let redacted = crate::config::redact_url(url);
    redacted.split('?').next().unwrap_or_default().to_string()
}

/// One notification, tried up to `ATTEMPTS` times with backoff.
async fn deliver(client: &reqwest::Client, t: &Target, event: When, s: &Summary) -> Delivery {
    let (kind, request) = match &t.kind {
        Kind::Webhook { secret } => {
            let mut body = serde_json::to_value(s).unwrap_or_default();
            if let Some(o) = body.as_object_mut() {
                o.insert("event".into(), serde_json::to_value(event).unwrap_or_default());
            }
            let body = body.to_string();
            let mut headers = vec![("content-type", "application/json".to_string())];
            if let Some(secret) = secret {
                headers.push(("x-sweep-signature", format!("sha256={}", sign(secret, body.as_bytes()))));
            }
            ("webhook", (t.url.clone(), headers, body))
        }
        Kind::Healthchecks => {
            let base = t.url.trim_end_matches('/');
            let path = match event {
                When::Start => format!("{base}/start"),
                When::Success => base.to_string(),
                _ => format!("{base}/{}", if s.exit_code == 0 { 1 } else { s.exit_code }),
            };
            let sep = if path.contains('?') { '&' } else { '?' };
            let url = format!("{path}{sep}rid={}", s.run_id);
            ("healthchecks", (url, vec![("content-type", "text/plain".to_string())], short(s, event)))
        }
    };
    let (url, headers, body) = request;
    let mut error = None;
    let mut attempts = 0;
    while attempts < ATTEMPTS {
        attempts += 1;
        let mut rq = client.post(&url).body(body.clone());
        for (k, v) in &headers {
            rq = rq.header(*k, v);
        }
        match rq.send().await {
            Ok(r) if r.status().is_success() => {
                error = None;
                break;
            }
            Ok(r) => error = Some(format!("HTTP {}", r.status())),
            Err(e) => error = Some(if e.is_timeout() { "timed out".into() } else { e.without_url().to_string() }),
        }
        if attempts < ATTEMPTS {
            tokio::time::sleep(Duration::from_millis(250 * 2u64.pow(attempts - 1))).await;
        }
    }
    Delivery { kind, event, to: shown(&t.url), ok: error.is_none(), attempts, error }
}

/// The healthchecks body: one line a person reads in the check's log.
fn short(s: &Summary, event: When) -> String {
    match event {
        When::Start => format!("sweep {} starting (run {})", s.command, s.run_id),
        _ => format!(
            "sweep {}: {} (exit {}): deleted {}, failed {}, {} bytes reclaimed in {:.1} s on {}{}",
            s.command,
            s.status,
            s.exit_code,
            s.deleted,
            s.failed,
            s.bytes_reclaimed,
            s.duration_seconds,
            s.host,
            if s.message.is_empty() { String::new() } else { format!(": {}", s.message) }
        ),
    }
}

/// HMAC-SHA256 of `body` with `secret`, in hex.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// This machine's name, for summaries.
pub fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Env(HashMap<&'static str, &'static str>);
    impl EnvSource for Env {
        fn get(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|v| v.to_string())
        }
    }

    #[test]
    fn targets_come_from_the_config_and_the_environment_with_their_defaults() {
        let env = Env(HashMap::from([("SWEEP_NOTIFY_URL", "http://hook.example/x"), ("SWEEP_NOTIFY_SECRET", "s")]));
        let raw = vec![RawNotify {
            kind: "healthchecks".into(),
            url: "https://hc.example/ping/abc".into(),
            secret: None,
            on: None,
        }];
        let n = Notifier::load(&raw, &env, "sweep.toml").unwrap();
        assert_eq!(n.targets.len(), 2);
        assert_eq!(n.targets[0].on, [When::Failure, When::Partial, When::Aborted], "a webhook: bad news only");
        assert_eq!(n.targets[1].on.len(), 5, "healthchecks: every event");
        assert!(n.describe()[0].starts_with("webhook (signed) http://hook.example/x"), "{:?}", n.describe());
        let bad = vec![RawNotify { kind: "email".into(), url: "x".into(), secret: None, on: None }];
        assert!(Notifier::load(&bad, &env, "sweep.toml").unwrap_err().to_string().contains("#1"));
        let bad = vec![RawNotify {
            kind: "webhook".into(),
            url: "http://x".into(),
            secret: None,
            on: Some(vec!["later".into()]),
        }];
        assert!(Notifier::load(&bad, &env, "sweep.toml").unwrap_err().to_string().contains("later"));
    }

    #[test]
    fn signatures_are_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn statuses_map_to_events() {
        assert_eq!(When::of_status("success"), When::Success);
        assert_eq!(When::of_status("skipped"), When::Success);
        assert_eq!(When::of_status("partial"), When::Partial);
        assert_eq!(When::of_status("aborted"), When::Aborted);
        assert_eq!(When::of_status("failure"), When::Failure);
    }
}
