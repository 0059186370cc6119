//! Configuration, layered flag > environment > config file > built-in default (SPEC §3).
//!
//! The TOML file is parsed into `RawConfig` (unknown keys are errors), then each value is
//! resolved into a `Sourced<T>` that remembers where it came from, so `--show-config` can say
//! so and an error can name the key, the source and what is allowed. Secrets are wrapped in
//! `Secret` and never printed.

use crate::cli::GlobalArgs;
use crate::ident::Ident;
use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag(&'static str),
    Env(&'static str),
    File(String),
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(n) => write!(f, "flag {n}"),
            Source::Env(n) => write!(f, "env {n}"),
            Source::File(k) => write!(f, "config {k}"),
            Source::Default => f.write_str("default"),
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone)]
pub struct Sourced<T> {
    pub value: T,
    pub source: Source,
}

impl<T> Sourced<T> {
    pub fn new(value: T, source: Source) -> Self {
        Sourced { value, source }
    }
}

/// A secret (password, key): printed as `***`, in Debug too.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A URL that may hold a password: `Display` redacts it.
#[derive(Clone)]
pub struct DatabaseUrl(Secret);

impl DatabaseUrl {
    pub fn new(s: impl Into<String>) -> Self {
        DatabaseUrl(Secret::new(s))
    }
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
    pub fn is_sqlite(&self) -> bool {
        self.expose().starts_with("sqlite:")
    }
    /// Is this a URL sweep can connect to (`postgres://`, `mysql://`/`mariadb://`, `sqlite:`)?
    pub fn supported(u: &str) -> bool {
        ["postgres://", "postgresql://", "mysql://", "mariadb://", "sqlite:"].iter().any(|p| u.starts_with(p))
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(self.expose()))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The URL with any password (and password-like query parameter) replaced by `***`.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    let lk = k.to_ascii_lowercase();
                    let secret = lk.contains("password") || lk.contains("secret") || lk.contains("key");
                    (k.into_owned(), if secret { "***".into() } else { v.into_owned() })
                })
                .collect();
            if !pairs.is_empty() {
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        // Not a URL we can parse: keep only the scheme, so nothing secret can leak.
        Err(_) => match raw.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://(unparseable, hidden)"),
            None => "(unparseable, hidden)".into(),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// The file

/// The TOML file as written. Every key is optional; unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub database: RawDatabase,
    #[serde(default)]
    pub paths: RawPaths,
    #[serde(default)]
    pub safety: RawSafety,
    #[serde(default)]
    pub object_storage: RawObjectStorage,
    #[serde(default)]
    pub executor: RawExecutor,
    #[serde(default)]
    pub attachments: RawAttachments,
    #[serde(default)]
    pub published_modules: RawPublishedModules,
    #[serde(default)]
    pub worker: RawWorker,
    #[serde(default)]
    pub cloudcube: RawCloudcube,
    #[serde(default)]
    pub ops: RawOps,
    /// `[[notify]]`: where to tell that a run started, succeeded or failed.
    #[serde(default)]
    pub notify: Vec<RawNotify>,
    /// `[[schedule]]`: when each command runs by itself under `sweep serve`.
    #[serde(default)]
    pub schedule: Vec<crate::schedule::RawSchedule>,
    /// `[serve]`: the web server's settings (flags override them).
    #[serde(default)]
    pub serve: RawServe,
}

/// `[serve]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServe {
    /// Address to listen on (default 127.0.0.1:8080).
    pub listen: Option<String>,
    /// Where reviewed plans are kept (default ./sweep-plans).
    pub plan_dir: Option<std::path::PathBuf>,
    /// Refuse to apply a plan older than this (default 24h).
    pub max_plan_age: Option<String>,
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
    /// Sign-in attempts per minute from one address (default 10).
    pub sign_in_per_minute: Option<u32>,
    /// Requests that start work (runs, plans, applies) per minute per token (default 30).
    pub work_per_minute: Option<u32>,
    /// The plan review page asks for a typed confirmation above this many items (default 100).
    pub confirm_over: Option<u64>,
}

/// One `[[notify]]` target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    /// `webhook` (a JSON POST of the run's summary) or `healthchecks` (the ping protocol).
    pub kind: String,
    pub url: String,
    /// Webhook only: sign the body with HMAC-SHA256 (header `X-Sweep-Signature: sha256=<hex>`).
    pub secret: Option<String>,
    /// Events: `start`, `success`, `partial`, `failure`, `aborted`. Default: failure, partial,
    /// aborted for a webhook; all of them for healthchecks (which needs them).
    pub on: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDatabase {
    pub url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPaths {
    pub media_root: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub ops_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSafety {
    pub grace_minutes: Option<i64>,
    pub protected_prefixes: Option<Vec<String>>,
    pub max_delete: Option<u64>,
    pub max_delete_percent: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawObjectStorage {
    pub provider: Option<String>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExecutor {
    pub concurrency: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAttachments {
    pub store: Option<String>,
    pub days: Option<i64>,
    pub batch_size: Option<i64>,
    /// The attachments' table and columns: `{ table = "…", image = "…" }`.
    pub forum_attachment: Option<BTreeMap<String, String>>,
    /// Deprecated: `[attachments.forum_attachment] table = "…"`.
    pub table: Option<String>,
    /// Deprecated: `[attachments.forum_attachment]`.
    #[serde(default)]
    pub columns: RawAttachmentColumns,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOps {
    /// Where backups go (env BACKUP_DIR). Default: OPS_DIR/cleanup_backups.
    pub backup_dir: Option<PathBuf>,
    /// Days backups are kept. Default: 7.
    pub backup_retention_days: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCloudcube {
    /// `s3://bucket/cube` or `file:///dir` (instead of CLOUDCUBE_URL).
    pub store: Option<String>,
    pub retention_days: Option<i64>,
    pub jobs: Option<std::collections::BTreeMap<String, String>>,
    pub clips: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorker {
    pub tasks: Option<Vec<String>>,
    pub previews_store: Option<String>,
    pub previews_prefix: Option<String>,
    pub preview_bundle_ttl_hours: Option<i64>,
    pub tmp_dir_ttl_minutes: Option<i64>,
    pub log_retention_days: Option<i64>,
    /// Gzip logs older than this (but within retention). Env: LOG_COMPRESS_AFTER_DAYS.
    pub log_compress_after_days: Option<i64>,
    pub stale_repo_days: Option<i64>,
    pub stale_repos_enabled: Option<bool>,
    /// Glob patterns (relative to DATA_DIR/logs) of logs never deleted.
    pub log_keep: Option<Vec<String>>,
    /// Table name and column overrides: `{ table = "…", status = "…" }`.
    pub preview_sessions: Option<std::collections::BTreeMap<String, String>>,
    pub background_jobs: Option<std::collections::BTreeMap<String, String>>,
    pub repos: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPublishedModules {
    pub keep_latest: Option<i64>,
    pub auto_prune: Option<bool>,
    /// The published modules' table and columns: `{ table = "…", payload = "…" }`.
    pub authoring_publishedmodule: Option<BTreeMap<String, String>>,
    /// Deprecated: `[published_modules.authoring_publishedmodule] table = "…"`.
    pub table: Option<String>,
    /// Deprecated: `[published_modules.authoring_publishedmodule]`.
    #[serde(default)]
    pub columns: RawPublishedModuleColumns,
}

#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPublishedModuleColumns {
    pub id: Option<String>,
    pub module_id: Option<String>,
    pub version: Option<String>,
    pub payload: Option<String>,
    pub published_at: Option<String>,
}

#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAttachmentColumns {
    pub id: Option<String>,
    pub image: Option<String>,
    pub file_size: Option<String>,
    pub is_active: Option<String>,
    pub deleted_at: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Layering

/// Reads environment variables; a map in tests, the process environment otherwise.
pub trait EnvSource: Sync {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl EnvSource for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

/// Resolves one value through the layers, with errors that name key, source and rule.
pub struct Layers<'a> {
    pub env: &'a dyn EnvSource,
    pub file_name: String,
}

/// One setting's description: its flag, env var and config key.
pub struct Key {
    pub flag: Option<&'static str>,
    pub env: Option<&'static str>,
    pub file: &'static str,
}

impl Layers<'_> {
    /// flag > env > file > default, parsing env text with `FromStr` and checking `valid`.
    pub fn pick<T>(
        &self,
        key: &Key,
        flag: Option<T>,
        file: Option<T>,
        default: T,
        rule: &str,
        valid: impl Fn(&T) -> bool,
    ) -> Result<Sourced<T>>
    where
        T: FromStr + fmt::Debug,
    {
        let s = self.pick_opt(key, flag, file, rule, &valid)?;
        Ok(s.unwrap_or(Sourced::new(default, Source::Default)))
    }

    /// Like `pick`, for a setting with no default.
    pub fn pick_opt<T>(
        &self,
        key: &Key,
        flag: Option<T>,
        file: Option<T>,
        rule: &str,
        valid: &dyn Fn(&T) -> bool,
    ) -> Result<Option<Sourced<T>>>
    where
        T: FromStr + fmt::Debug,
    {
        let found = if let (Some(v), Some(f)) = (flag, key.flag) {
            Some(Sourced::new(v, Source::Flag(f)))
        } else if let Some((name, text)) = key.env.and_then(|n| self.env.get(n).map(|t| (n, t))) {
            let v = text
                .trim()
                .parse::<T>()
                .map_err(|_| anyhow!("{name}={text:?} (environment) is not valid: expected {rule}"))?;
            Some(Sourced::new(v, Source::Env(name)))
        } else {
            file.map(|v| Sourced::new(v, Source::File(format!("{} in {}", key.file, self.file_name))))
        };
        if let Some(s) = &found {
            if !valid(&s.value) {
                bail!("{} = {:?} (from {}) is not valid: expected {rule}", key.file, s.value, s.source);
            }
        }
        Ok(found)
    }

    /// A boolean env var: true/1/yes/on or false/0/no/off.
    pub fn env_bool(&self, name: &'static str) -> Result<Option<bool>> {
        match self.env.get(name) {
            None => Ok(None),
            Some(t) => parse_bool(&t)
                .map(Some)
                .ok_or_else(|| anyhow!("{name}={t:?} (environment) is not valid: expected true or false")),
        }
    }

    /// A plain env string (no flag, no file), or the file's value.
    pub fn env_or_file(
        &self,
        env: &'static str,
        file: Option<String>,
        file_key: &'static str,
    ) -> Option<Sourced<String>> {
        if let Some(v) = self.env.get(env) {
            return Some(Sourced::new(v, Source::Env(env)));
        }
        file.map(|v| Sourced::new(v, Source::File(format!("{file_key} in {}", self.file_name))))
    }
}

pub fn parse_bool(t: &str) -> Option<bool> {
    match t.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// The validated settings every command sees

/// Object-storage credentials and endpoint shared by every `s3://` store (SPEC §2).
#[derive(Debug, Clone, Default)]
pub struct ObjectStorageSettings {
    pub endpoint: Option<Sourced<String>>,
    pub region: Option<Sourced<String>>,
    pub access_key: Option<Sourced<Secret>>,
    pub secret_key: Option<Sourced<Secret>>,
}

/// Everything global, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config_file: Option<PathBuf>,
    pub database_url: Option<Sourced<DatabaseUrl>>,
    pub dry_run: Sourced<bool>,
    pub now: Sourced<DateTime<Utc>>,
    pub grace_minutes: Sourced<i64>,
    pub media_root: Option<Sourced<PathBuf>>,
    pub data_dir: Option<Sourced<PathBuf>>,
    pub protected_prefixes: Sourced<Vec<String>>,
    pub max_delete: Option<Sourced<u64>>,
    pub max_delete_percent: Option<Sourced<f64>>,
    pub concurrency: Sourced<usize>,
    pub object_storage: ObjectStorageSettings,
    pub cleanup_enabled: Sourced<bool>,
    /// The file, parsed, for command-specific sections.
    pub raw: std::sync::Arc<RawConfig>,
    pub file_name: String,
}

impl Settings {
    /// Load the config file (explicit, `SWEEP_CONFIG`, or `./sweep.toml` if present) and layer
    /// every global setting.
    pub fn load(g: &GlobalArgs, env: &dyn EnvSource, real_now: DateTime<Utc>) -> Result<Settings> {
        let explicit = g
            .config
            .clone()
            .map(|p| (p, "--config"))
            .or_else(|| env.get("SWEEP_CONFIG").map(|p| (PathBuf::from(p), "SWEEP_CONFIG")));
        let (config_file, raw) = match explicit {
            Some((path, from)) => {
                let raw = read_config(&path).with_context(|| format!("config file named by {from}"))?;
                (Some(path), raw)
            }
            None if Path::new("sweep.toml").is_file() => {
                let path = PathBuf::from("sweep.toml");
                (Some(path.clone()), read_config(&path)?)
            }
            None => (None, RawConfig::default()),
        };
        let file_name =
            config_file.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(no config file)".into());
        let l = Layers { env, file_name: file_name.clone() };

        let database_url = l
            .pick_opt(
                &Key { flag: Some("--database-url"), env: Some("DATABASE_URL"), file: "database.url" },
                g.database_url.clone(),
                raw.database.url.clone(),
                "a postgres://…, mysql://… (MySQL 8 / MariaDB 10.11+) or sqlite://… URL",
                &|u: &String| DatabaseUrl::supported(u),
            )
            .map_err(|e| anyhow!(redact_in(&e.to_string())))?
            .map(|s| Sourced::new(DatabaseUrl::new(s.value), s.source));

        let dry_run = if g.dry_run {
            Sourced::new(true, Source::Flag("--dry-run"))
        } else if let Some(v) = l.env_bool("CLEANUP_DRY_RUN")? {
            Sourced::new(v, Source::Env("CLEANUP_DRY_RUN"))
        } else {
            Sourced::new(false, Source::Default)
        };

        let now_text = l.pick_opt(
            &Key { flag: Some("--now"), env: Some("SWEEP_NOW"), file: "now" },
            g.now.clone(),
            None,
            "an RFC 3339 instant such as 2026-11-22T10:00:00Z",
            &|_: &String| true,
        )?;
        let now = match now_text {
            // Whole seconds: reports and reasons read better, and no rule needs finer.
            None => Sourced::new(chrono::SubsecRound::trunc_subsecs(real_now, 0), Source::Default),
            Some(s) => {
                let t = DateTime::parse_from_rfc3339(s.value.trim())
                    .map_err(|_| {
                        anyhow!(
                            "{} = {:?} is not valid: expected an RFC 3339 instant such as 2026-11-22T10:00:00Z",
                            s.source,
                            s.value
                        )
                    })?
                    .with_timezone(&Utc);
                if t > real_now + chrono::Duration::seconds(5) && !dry_run.value {
                    return Err(crate::exit_codes::Fatal::usage(format!(
                        "{} = {} is in the future: a forecast needs --dry-run (a real run uses the real clock or an earlier instant)",
                        s.source, s.value
                    ))
                    .into());
                }
                Sourced::new(t, s.source)
            }
        };

        let grace_minutes = l.pick(
            &Key { flag: Some("--grace-minutes"), env: Some("CLEANUP_GRACE_MINUTES"), file: "safety.grace_minutes" },
            g.grace_minutes,
            raw.safety.grace_minutes,
            30,
            "a whole number of minutes, 0 or more",
            |v| *v >= 0,
        )?;

        let media_root = l.pick_opt(
            &Key { flag: Some("--media-root"), env: Some("MEDIA_ROOT"), file: "paths.media_root" },
            g.media_root.clone(),
            raw.paths.media_root.clone(),
            "a directory",
            &|_: &PathBuf| true,
        )?;

        let data_dir = l.pick_opt(
            &Key { flag: Some("--data-dir"), env: Some("DATA_DIR"), file: "paths.data_dir" },
            g.data_dir.clone(),
            raw.paths.data_dir.clone(),
            "a directory",
            &|_: &PathBuf| true,
        )?;

        let protected_prefixes = match &raw.safety.protected_prefixes {
            Some(v) => {
                for p in v {
                    if p.is_empty() || p.starts_with('/') || p.split('/').any(|c| c == "..") {
                        bail!(
                            "safety.protected_prefixes in {file_name}: {p:?} is not valid: expected a relative prefix such as \"backups/\""
                        );
                    }
                }
                Sourced::new(v.clone(), Source::File(format!("safety.protected_prefixes in {file_name}")))
            }
            None => Sourced::new(vec!["backups/".to_string()], Source::Default),
        };

        let max_delete = l.pick_opt(
            &Key { flag: Some("--max-delete"), env: None, file: "safety.max_delete" },
            g.max_delete,
            raw.safety.max_delete,
            "a whole number",
            &|_: &u64| true,
        )?;
        let max_delete_percent = l.pick_opt(
            &Key { flag: Some("--max-delete-percent"), env: None, file: "safety.max_delete_percent" },
            g.max_delete_percent,
            raw.safety.max_delete_percent,
            "a percentage from 0 to 100",
            &|p: &f64| (0.0..=100.0).contains(p),
        )?;
        let concurrency = l.pick(
            &Key { flag: None, env: Some("SWEEP_CONCURRENCY"), file: "executor.concurrency" },
            None,
            raw.executor.concurrency,
            16,
            "a number from 1 to 256",
            |n| (1..=256).contains(n),
        )?;

        let os = &raw.object_storage;
        let object_storage = ObjectStorageSettings {
            endpoint: l.env_or_file("OBJECT_STORAGE_ENDPOINT", os.endpoint.clone(), "object_storage.endpoint"),
            region: l.env_or_file("OBJECT_STORAGE_REGION", os.region.clone(), "object_storage.region"),
            access_key: l
                .env_or_file("OBJECT_STORAGE_ACCESS_KEY", os.access_key.clone(), "object_storage.access_key")
                .map(|s| Sourced::new(Secret::new(s.value), s.source)),
            secret_key: l
                .env_or_file("OBJECT_STORAGE_SECRET_KEY", os.secret_key.clone(), "object_storage.secret_key")
                .map(|s| Sourced::new(Secret::new(s.value), s.source)),
        };

        let cleanup_enabled = match l.env_bool("CLEANUP_ENABLED")? {
            Some(v) => Sourced::new(v, Source::Env("CLEANUP_ENABLED")),
            None => Sourced::new(true, Source::Default),
        };

        Ok(Settings {
            config_file,
            database_url,
            dry_run,
            now,
            grace_minutes,
            media_root,
            data_dir,
            protected_prefixes,
            max_delete,
            max_delete_percent,
            concurrency,
            object_storage,
            cleanup_enabled,
            raw: std::sync::Arc::new(raw),
            file_name,
        })
    }

    pub fn layers<'a>(&self, env: &'a dyn EnvSource) -> Layers<'a> {
        Layers { env, file_name: self.file_name.clone() }
    }

    /// The database URL, or an error that says how to give one.
    /// OPS_DIR (cleanup-ops' root): `--ops-dir`, env, or `[paths] ops_dir`.
    pub fn ops_dir(&self, flag: Option<PathBuf>) -> Result<Option<Sourced<PathBuf>>> {
        self.layers(&ProcessEnv).pick_opt(
            &Key { flag: Some("--ops-dir"), env: Some("OPS_DIR"), file: "paths.ops_dir" },
            flag,
            self.raw.paths.ops_dir.clone(),
            "a directory",
            &|_: &PathBuf| true,
        )
    }

    /// cleanup-ops' BACKUP_DIR: env, or `[ops] backup_dir`, or `OPS_DIR/cleanup_backups`.
    pub fn ops_backup_dir(&self, ops_dir: &Path) -> Result<Sourced<PathBuf>> {
        Ok(self
            .layers(&ProcessEnv)
            .pick_opt(
                &Key { flag: None, env: Some("BACKUP_DIR"), file: "ops.backup_dir" },
                None,
                self.raw.ops.backup_dir.clone(),
                "a directory",
                &|_: &PathBuf| true,
            )?
            .unwrap_or_else(|| Sourced::new(ops_dir.join("cleanup_backups"), Source::Default)))
    }

    pub fn require_database(&self) -> Result<&DatabaseUrl> {
        self.database_url
            .as_ref()
            .map(|s| &s.value)
            .ok_or_else(|| anyhow!("DATABASE_URL is not set: pass --database-url, set DATABASE_URL, or set [database] url in the config file"))
    }

    /// `DATA_DIR`, or an error that says how to give it.
    pub fn require_data_dir(&self) -> Result<&Path> {
        self.data_dir.as_ref().map(|s| s.value.as_path()).ok_or_else(|| {
            anyhow!("DATA_DIR is not set: pass --data-dir, set DATA_DIR, or set [paths] data_dir in the config file")
        })
    }

    /// `MEDIA_ROOT`, or an error that says how to give it.
    pub fn require_media_root(&self) -> Result<&Path> {
        self.media_root
            .as_ref()
            .map(|s| s.value.as_path())
            .ok_or_else(|| anyhow!("MEDIA_ROOT is not set: pass --media-root, set MEDIA_ROOT, or set [paths] media_root in the config file"))
    }

    /// `(key, value, source)` rows for `--show-config`, secrets redacted.
    pub fn show(&self) -> Vec<(String, String, String)> {
        let mut rows = Vec::new();
        let mut push = |k: &str, v: String, s: String| rows.push((k.to_string(), v, s));
        push(
            "config_file",
            self.config_file.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(none)".into()),
            "--config / SWEEP_CONFIG / ./sweep.toml".into(),
        );
        match &self.database_url {
            Some(s) => push("database.url", s.value.to_string(), s.source.to_string()),
            None => push("database.url", "(unset)".into(), "-".into()),
        }
        push("dry_run", self.dry_run.value.to_string(), self.dry_run.source.to_string());
        push("now", self.now.value.to_rfc3339(), self.now.source.to_string());
        push("safety.grace_minutes", self.grace_minutes.value.to_string(), self.grace_minutes.source.to_string());
        push(
            "safety.protected_prefixes",
            format!("{:?}", self.protected_prefixes.value),
            self.protected_prefixes.source.to_string(),
        );
        opt_row(&mut push, "safety.max_delete", &self.max_delete);
        opt_row(&mut push, "safety.max_delete_percent", &self.max_delete_percent);
        push("executor.concurrency", self.concurrency.value.to_string(), self.concurrency.source.to_string());
        for (k, v) in [("paths.media_root", &self.media_root), ("paths.data_dir", &self.data_dir)] {
            match v {
                Some(s) => push(k, s.value.display().to_string(), s.source.to_string()),
                None => push(k, "(unset)".into(), "-".into()),
            }
        }
        let os = &self.object_storage;
        opt_row(&mut push, "object_storage.endpoint", &os.endpoint);
        opt_row(&mut push, "object_storage.region", &os.region);
        opt_row(&mut push, "object_storage.access_key", &os.access_key);
        opt_row(&mut push, "object_storage.secret_key", &os.secret_key);
        push("cleanup_enabled", self.cleanup_enabled.value.to_string(), self.cleanup_enabled.source.to_string());
        rows
    }
}

/// One `--show-config` row for an optional setting.
pub fn opt_row<T: fmt::Display>(push: &mut impl FnMut(&str, String, String), key: &str, v: &Option<Sourced<T>>) {
    match v {
        Some(s) => push(key, s.value.to_string(), s.source.to_string()),
        None => push(key, "(unset)".into(), "-".into()),
    }
}

fn read_config(path: &Path) -> Result<RawConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}: check the path and its permissions", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow!("config file {} is not valid: {e}", path.display()))
}

/// Replace anything that looks like a URL password in an error message.
fn redact_in(msg: &str) -> String {
    msg.split_inclusive(['"', ' '])
        .map(|w| {
            let trimmed = w.trim_end_matches(['"', ' ']);
            if trimmed.contains("://") {
                w.replace(trimmed, &redact_url(trimmed))
            } else {
                w.to_string()
            }
        })
        .collect()
}

/// A table and its columns, from a config section such as `[worker.repos]` (`table = "…"`,
/// `<column> = "…"`): the one shape of every policy's table and column overrides. Every name
/// is validated as an identifier; unknown keys are errors.
#[derive(Debug, Clone)]
pub struct TableSpec {
    pub table: Ident,
    cols: BTreeMap<&'static str, Ident>,
}

impl TableSpec {
    pub fn load(
        raw: Option<&BTreeMap<String, String>>,
        section: &str,
        default_table: &str,
        known: &[&'static str],
        file: &str,
    ) -> Result<TableSpec> {
        let get = |k: &str| raw.and_then(|m| m.get(k));
        if let Some(m) = raw {
            for k in m.keys() {
                if k != "table" && !known.contains(&k.as_str()) {
                    bail!("[{section}] in {file}: unknown key {k:?}; known: table, {}", known.join(", "));
                }
            }
        }
        let ident = |k: &str, d: &str| ident_setting(file, &format!("{section}.{k}"), get(k), d);
        let mut cols = BTreeMap::new();
        for k in known {
            cols.insert(*k, ident(k, k)?);
        }
        Ok(TableSpec { table: ident("table", default_table)?, cols })
    }

    /// [`load`](Self::load), where the section replaces older keys (`[x] table = "…"` and
    /// `[x.columns]`): those still work, merged under the section's own keys, and a warning
    /// names the key to use instead.
    pub fn load_with_old<C: serde::Serialize>(
        raw: Option<&BTreeMap<String, String>>,
        old_table: Option<&String>,
        old_columns: &C,
        section: &str,
        default_table: &str,
        known: &[&'static str],
        file: &str,
    ) -> Result<TableSpec> {
        // Old keys are checked under the names they were written with.
        let parent = section.rsplit_once('.').map(|(p, _)| p).unwrap_or(section);
        let mut merged: BTreeMap<String, String> = BTreeMap::new();
        if let Some(t) = old_table {
            ident_setting(file, &format!("{parent}.table"), Some(t), default_table)?;
            merged.insert("table".into(), t.clone());
        }
        if let Ok(serde_json::Value::Object(cols)) = serde_json::to_value(old_columns) {
            for (k, v) in cols {
                if let serde_json::Value::String(v) = v {
                    ident_setting(file, &format!("{parent}.columns.{k}"), Some(&v), &k)?;
                    merged.insert(k, v);
                }
            }
        }
        if !merged.is_empty() {
            tracing::warn!(
                target: "cleanup",
                "{file}: [{parent}] table and [{parent}.columns] are deprecated: write them as [{section}] table = \"…\", <column> = \"…\" (they still work for now)"
            );
        }
        merged.extend(raw.cloned().unwrap_or_default());
        let raw = (!merged.is_empty()).then_some(&merged);
        Self::load(raw, section, default_table, known, file)
    }

    /// The configured name of a column this spec was loaded with. A name it was not loaded
    /// with is a programming error: debug builds stop, release builds use the name itself.
    pub fn col(&self, name: &str) -> Ident {
        match self.cols.get(name) {
            Some(c) => c.clone(),
            None => {
                debug_assert!(false, "column {name:?} is not one of this table's known columns");
                Ident::new(name).unwrap_or_else(|_| self.table.clone())
            }
        }
    }
}

/// An identifier from the config file, or its default; errors name the key.
pub fn ident_setting(file_name: &str, key: &str, value: Option<&String>, default: &str) -> Result<Ident> {
    match value {
        Some(v) => Ident::new(v).map_err(|e| anyhow!("{key} in {file_name}: {e}")),
        None => Ok(Ident::new(default).expect("built-in identifiers are valid")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    const DAYS: Key = Key { flag: Some("--days"), env: Some("ATTACHMENT_CLEANUP_DAYS"), file: "attachments.days" };

    #[test]
    fn precedence_is_flag_then_env_then_file_then_default() {
        let e = env(&[("ATTACHMENT_CLEANUP_DAYS", "45")]);
        let l = Layers { env: &e, file_name: "sweep.toml".into() };
        let ok = |v: &i64| *v >= 0;
        #[allow(clippy::type_complexity)]
        let cases: [(Option<i64>, Option<i64>, &HashMap<String, String>, i64, &str); 4] = [
            (Some(10), Some(20), &e, 10, "flag --days"),
            (None, Some(20), &e, 45, "env ATTACHMENT_CLEANUP_DAYS"),
            (None, Some(20), &HashMap::new(), 20, "config attachments.days in sweep.toml"),
            (None, None, &HashMap::new(), 30, "default"),
        ];
        for (flag, file, envmap, want, src) in cases {
            let l2 = Layers { env: envmap, file_name: l.file_name.clone() };
            let got = l2.pick(&DAYS, flag, file, 30, "days", ok).unwrap();
            assert_eq!(got.value, want);
            assert_eq!(got.source.to_string(), src);
        }
    }

    #[test]
    fn bad_values_name_key_source_and_rule() {
        let e = env(&[("ATTACHMENT_CLEANUP_DAYS", "soon")]);
        let l = Layers { env: &e, file_name: "sweep.toml".into() };
        let err = l.pick(&DAYS, None, None, 30, "a whole number of days", |_| true).unwrap_err().to_string();
        assert!(
            err.contains("ATTACHMENT_CLEANUP_DAYS") && err.contains("soon") && err.contains("whole number"),
            "{err}"
        );

        let l = Layers { env: &HashMap::new(), file_name: "sweep.toml".into() };
        let err = l.pick(&DAYS, None, Some(-1), 30, "0 or more days", |v| *v >= 0).unwrap_err().to_string();
        assert!(err.contains("attachments.days") && err.contains("sweep.toml") && err.contains("0 or more"), "{err}");
    }

    #[test]
    fn passwords_never_survive_redaction() {
        let r = redact_url("postgres://app:hunter2@db.example:5432/prod?sslpassword=zzz&sslmode=require");
        assert!(!r.contains("hunter2") && !r.contains("zzz"), "{r}");
        assert!(r.contains("app:***@db.example") && r.contains("sslmode=require"), "{r}");
        assert!(!redact_url("postgres://a:b@@bad host").contains(":b@"));
        let msg = redact_in("x = \"postgres://u:pw@h/db\" is bad");
        assert!(!msg.contains("pw@"), "{msg}");
    }

    #[test]
    fn the_example_config_documents_only_real_keys() {
        let text = include_str!("../config/sweep.example.toml");
        let uncommented: String = text
            .lines()
            .map(|l| {
                let t = l.trim_start_matches("# ");
                let is_key =
                    t.split_once(" = ").is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                // `# [[notify]]`: an example entry of an array of tables.
                if (l.starts_with("# ") && is_key) || l.starts_with("# [[") {
                    format!("{t}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        let raw: RawConfig = toml::from_str(&uncommented).unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
        assert_eq!(raw.attachments.days, Some(30));
        assert_eq!(raw.safety.grace_minutes, Some(30));
        assert!(raw.object_storage.secret_key.is_some());
        assert_eq!(raw.published_modules.keep_latest, Some(3));
        assert_eq!(raw.worker.tmp_dir_ttl_minutes, Some(60));
        assert_eq!(raw.cloudcube.retention_days, Some(5));
        assert_eq!(raw.ops.backup_retention_days, Some(7));
        // The example schedules (seeds 002 and 004) are valid entries, arguments included.
        let schedules = crate::schedule::Schedule::load(
            &raw.schedule,
            &["cleanup-ops", "worker-once"],
            &crate::cli::check_command_args,
            "example",
            chrono::Utc::now(),
        )
        .unwrap();
        assert_eq!(schedules.len(), 4);
        assert_eq!(schedules[1].name, "worker-light");
        // The table sections name only real columns.
        let f = "example";
        TableSpec::load(
            raw.worker.repos.as_ref(),
            "worker.repos",
            "repos",
            &["id", "active", "last_activity_at", "filesystem_path"],
            f,
        )
        .unwrap();
        TableSpec::load(
            raw.cloudcube.jobs.as_ref(),
            "cloudcube.jobs",
            "viral_clips_job",
            &["id", "status", "original_file_key", "extracted_audio_key"],
            f,
        )
        .unwrap();
    }

    #[test]
    fn unknown_config_keys_are_errors() {
        let err = toml::from_str::<RawConfig>("[attachments]\ndayz = 3\n").unwrap_err().to_string();
        assert!(err.contains("dayz"), "{err}");
        assert!(
            toml::from_str::<RawConfig>("[attachments]\ndays = 3\n[attachments.columns]\nimage = \"file\"\n").is_ok()
        );
    }

    #[test]
    fn old_table_keys_still_work_and_the_new_section_wins() {
        let raw: RawConfig = toml::from_str(
            "[attachments]\ntable = \"old_att\"\n[attachments.columns]\nimage = \"file\"\nid = \"uuid\"\n\
             [attachments.forum_attachment]\nid = \"pk\"\n",
        )
        .unwrap();
        let a = &raw.attachments;
        let t = TableSpec::load_with_old(
            a.forum_attachment.as_ref(),
            a.table.as_ref(),
            &a.columns,
            "attachments.forum_attachment",
            "forum_attachment",
            &["id", "image", "file_size"],
            "sweep.toml",
        )
        .unwrap();
        assert_eq!(t.table.as_str(), "old_att", "the old table key is read");
        assert_eq!(t.col("image").as_str(), "file", "an old column key is read");
        assert_eq!(t.col("id").as_str(), "pk", "the new section wins over the old key");
        assert_eq!(t.col("file_size").as_str(), "file_size", "the default otherwise");
        let bad: RawConfig = toml::from_str("[attachments.forum_attachment]\nimg = \"x\"\n").unwrap();
        let e = TableSpec::load_with_old(
            bad.attachments.forum_attachment.as_ref(),
            None,
            &bad.attachments.columns,
            "attachments.forum_attachment",
            "forum_attachment",
            &["id", "image"],
            "sweep.toml",
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown key \"img\""), "{e}");
    }
}
