//! The whole command-line tree, in one place. Values are read here without defaults; the
//! layering flag > env > file > default (and the source of every value) lives in `config`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// sweep: decide what is safe to delete from a web backend's database, disk and object
/// storage, show that decision, and carry it out.
///
/// Every command builds a plan first (each item and why), then one executor carries it out
/// with batching, audit and safety caps. Run with --dry-run first: it builds the same plan
/// and changes nothing.
///
/// Never deleted, by any command or flag: anything outside its configured root, anything
/// modified within CLEANUP_GRACE_MINUTES (30), anything under a protected prefix (backups/).
#[derive(Debug, Parser)]
#[command(name = "sweep", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand takes, before or after its name.
#[derive(Debug, Args, Clone, Default, PartialEq)]
pub struct GlobalArgs {
    /// Database: postgres://user@host/db, mysql://user@host/db or sqlite://path [env: DATABASE_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,

    /// TOML configuration file [env: SWEEP_CONFIG] [default: ./sweep.toml if present]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Decide and report, change nothing [env: CLEANUP_DRY_RUN=true]
    #[arg(long, global = true)]
    pub dry_run: bool,

    /// Print the run report as one JSON document on stdout (logs stay on stderr)
    #[arg(long, global = true)]
    pub json: bool,

    /// Write the exact plan (every item, why, and its fingerprint) as JSON to FILE, for `sweep apply`
    #[arg(long, global = true, value_name = "FILE")]
    pub plan_out: Option<PathBuf>,

    /// Abort before deleting anything if the plan holds more than N deletions
    #[arg(long, global = true, value_name = "N")]
    pub max_delete: Option<u64>,

    /// Abort before deleting anything if the plan deletes more than P percent of what it scanned
    #[arg(long, global = true, value_name = "P")]
    pub max_delete_percent: Option<f64>,

    /// Copy every file, directory and object to DIR (under its root or store name) before
    /// deleting it; a failed copy means that item is not deleted. Rows are always kept in the
    /// audit as JSON. `sweep restore --run RUN_ID` puts them back.
    #[arg(long, global = true, value_name = "DIR", conflicts_with = "backup_to")]
    pub backup_dir: Option<PathBuf>,

    /// Copy every file, directory and object to this object store (s3://bucket/prefix, with
    /// OBJECT_STORAGE_* credentials, or file:///dir) under `<root or store name>/<path>` before
    /// deleting it; a failed copy means that item is not deleted
    #[arg(long, global = true, value_name = "URL")]
    pub backup_to: Option<String>,

    /// Evaluate ages as of this RFC 3339 instant; a future instant needs --dry-run [env: SWEEP_NOW]
    #[arg(long, global = true, value_name = "RFC3339")]
    pub now: Option<String>,

    /// Nothing modified more recently than this many minutes is deleted [env: CLEANUP_GRACE_MINUTES] [default: 30]
    #[arg(long, global = true, value_name = "MINUTES")]
    pub grace_minutes: Option<i64>,

    /// Root of media files (UI files, local attachments) [env: MEDIA_ROOT]
    #[arg(long, global = true, value_name = "DIR")]
    pub media_root: Option<PathBuf>,

    /// Root of the worker's data: repos/, previews/, tmp/, logs/ [env: DATA_DIR]
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Write Prometheus text-format metrics here after a real run of any command (node_exporter
    /// textfile collector): sweep_last_success_timestamp_seconds{command} and seed 004's metrics
    #[arg(long, global = true, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,

    /// Log format on stderr
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// More log output (-v debug, -vv trace) [env: LOG_LEVEL]
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Less log output (-q warnings only, -qq errors only)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub quiet: u8,

    /// Skip interactive confirmation
    #[arg(long, global = true)]
    pub yes: bool,

    /// Print the effective configuration, with where each value came from, and exit
    #[arg(long, global = true)]
    pub show_config: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or upgrade sweep's own tables (cleanup_runs, cleanup_audit, cleanup_policies).
    ///
    /// Touches nothing else in the database. A real run of any command refuses to start until
    /// these tables exist: no deletion without a durable audit.
    Migrate,

    /// Hard-delete soft-deleted forum attachments: the stored file, then the row.
    ///
    /// Deletes rows of forum_attachment with is_active = false AND deleted_at <= now - DAYS,
    /// each after its file (under MEDIA_ROOT, or in an s3:// store). Never deletes an active
    /// row, a row soft-deleted more recently than the cutoff, a file modified within the grace
    /// period, or anything an image value would reach outside the store (such rows are reported
    /// as failed and kept). Works in batches; one failure is logged and the rest go on.
    CleanupAttachments(CleanupAttachmentsArgs),

    /// Keep the N latest versions of each published module; delete older rows, then the UI files
    /// only they referenced.
    ///
    /// Per module_id, keeps the N rows of authoring_publishedmodule with the highest version (ties:
    /// later published_at, then higher id) and deletes the others (committed first), then the
    /// files under MEDIA_ROOT/published_modules/ that only deleted rows referenced. Never deletes a
    /// file that any kept row references, a file a row with an unreadable payload might reference,
    /// a file modified within the grace period, or anything outside MEDIA_ROOT.
    PruneModules(PruneModulesArgs),

    /// Delete UI files under MEDIA_ROOT/published_modules/ that no published module references.
    ///
    /// A file is referenced when any JSON string in any row's payload contains its path from
    /// published_modules/ on (query and fragment ignored). Never deletes a referenced file, a file
    /// modified within the grace period (a publish writes files before its row commits), a file
    /// a row with an unreadable payload might reference, or anything when no row references
    /// anything at all while files exist (unless --allow-empty-references). Removes the empty
    /// directories it leaves behind.
    CleanupUiFiles(CleanupUiFilesArgs),

    /// Retention policies over pipeline operation files, dbt logs, system logs and temp files.
    ///
    /// Policies live in the cleanup_policies table (seed 002's six defaults). Each file under
    /// OPS_DIR is classified (operation_*.json by its status: failed, completed, or other; logs,
    /// dbt logs and temp files by their patterns) and deleted when older than its policy's
    /// retention, after a backup into BACKUP_DIR (default OPS_DIR/cleanup_backups; backups older
    /// than 7 days are pruned). Never deletes under a disabled policy, inside the backup directory
    /// (except pruning old backups), a file modified within the grace period, or outside OPS_DIR.
    /// --type manual (the default) asks for confirmation; automatic does not; emergency skips
    /// backups.
    CleanupOps(CleanupOpsArgs),

    /// Clean the Cloudcube (S3) bucket: keep recent completed clips, delete temporary media.
    ///
    /// Lists every object under the cube prefix and deletes it unless it is the key of a
    /// completed clip created within --retention-days, an object under clips/ modified within that
    /// window, the original or extracted audio of a job still in progress, or modified within the
    /// grace period. With --job ID, deletes only that job's original media and extracted audio,
    /// and only once all its clips are completed (the after-stage-4 cleanup). Nothing outside the
    /// cube prefix is ever listed or deleted.
    BulkCloudcube(BulkCloudcubeArgs),

    /// One cycle of the cleanup worker over DATA_DIR and the previews bucket, in this order:
    /// tmp, previews, objects, logs, repos.
    ///
    /// tmp: directories under DATA_DIR/tmp/ untouched for TMP_DIR_TTL_MINUTES (60) that no pending or
    /// running background job uses. previews: bundles (directory and object) of preview sessions that
    /// are expired, past expires_at, or failed/cancelled, then their bundle_path/bundle_key set to
    /// NULL. objects: objects under the previews prefix older than PREVIEW_BUNDLE_TTL_HOURS (24)
    /// that no session references. logs: files under DATA_DIR/logs/ older than LOG_RETENTION_DAYS (7).
    /// repos: only with CLEANUP_STALE_REPOS_ENABLED=true, directories of repos with active = false
    /// and no activity for STALE_REPO_DAYS (180). Never deletes outside DATA_DIR, an active repo,
    /// a running job's directory, anything under backups/, or anything modified within the grace
    /// period; follows no symlink. CLEANUP_ENABLED=false turns the cycle into a dry run.
    WorkerOnce(WorkerOnceArgs),

    /// Carry out a plan written by --plan-out, exactly, after re-checking each item.
    ///
    /// Deletes only the plan's items, each re-checked just before deletion: a file must have
    /// the size and modification time it had, an object the same size, ETag and modification
    /// time, a row must still match its rule with the values it had; anything changed is skipped
    /// and reported. Refuses (exit 2, nothing deleted) a plan made against another database, a
    /// plan whose roots are gone, moved or not configured now (MEDIA_ROOT, DATA_DIR, OPS_DIR), a
    /// forecast (a plan made with a future --now), and a plan older than --max-plan-age. Caps, lock, audit, backups and exit codes
    /// are those of any run; with --dry-run it re-checks and reports without deleting.
    Apply(ApplyArgs),

    /// Put back what a real run deleted: rows from their audit snapshots, files, directories and
    /// objects from the run's backups (--backup-dir, --backup-to, or cleanup-ops').
    ///
    /// Never overwrites: a row whose key exists again, or a file that exists again, is skipped
    /// and reported. Items without a backup are listed as not restorable. Every restore is
    /// recorded in the audit. With --dry-run, shows what it would restore.
    Restore(RestoreArgs),

    /// Build a sample workspace (SQLite, files, a config) and dry-run every command on it.
    ///
    /// Writes only inside DIR (default ./sweep-demo), which must be empty or absent, or a
    /// previous demo workspace (which is rebuilt).
    Demo(DemoArgs),

    /// Per command: its last run (status and counts), its last success, what it reclaimed in
    /// the last 24 hours and 30 days; with --preview, what a dry run would delete now; each
    /// [[schedule]] entry's next run, and OVERDUE when no success came within the schedule.
    /// Deletes nothing. With --json, one JSON array. --now: as of another instant.
    Status(StatusArgs),

    /// Settle what runs killed mid-way left behind (the next run of a command does it too):
    /// each run still marked running has the deletions it intended checked against what is
    /// there, and is marked interrupted with its real counts. Deletes nothing.
    Recover(RecoverArgs),

    /// Serve the dashboards and REST API (seeds 002, 003, 004), and run [[schedule]] entries.
    ///
    /// Listens on 127.0.0.1:8080 unless told otherwise; a non-loopback address needs TLS
    /// (--tls-cert/--tls-key) or --insecure-listen. Every route but /healthz and the sign-in
    /// page needs a token (`sweep token create`), sent as `Authorization: Bearer`, or a browser
    /// session signed in with one at /login. Runs started here are the CLI's runs: the same lock,
    /// caps, audit and backups.
    /// Ctrl-C or SIGTERM: stop taking requests, let running cleanups finish their batch, exit.
    Serve(ServeArgs),

    /// API tokens for `sweep serve`: create (prints the token once, alone on stdout), list,
    /// revoke. Only an argon2 hash of each token is stored.
    Token(TokenArgs),
}

#[derive(Debug, Args, Clone, Default)]
pub struct ServeArgs {
    /// Address to listen on [config: serve.listen] [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,

    /// TLS certificate chain (PEM) [config: serve.tls_cert]
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM) [config: serve.tls_key]
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Listen on a non-loopback address without TLS (behind a TLS-terminating proxy)
    #[arg(long)]
    pub insecure_listen: bool,

    /// Where reviewed plans are kept [config: serve.plan_dir] [default: ./sweep-plans]
    #[arg(long, value_name = "DIR")]
    pub plan_dir: Option<PathBuf>,

    /// Refuse to apply a plan older than this (e.g. 90m, 24h) [config: serve.max_plan_age] [default: 24h]
    #[arg(long, value_name = "DURATION", value_parser = parse_age)]
    pub max_plan_age: Option<chrono::Duration>,

    /// Do not run [[schedule]] entries in this process
    #[arg(long)]
    pub no_schedules: bool,
}

#[derive(Debug, Args, Clone)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub action: TokenAction,
}

#[derive(Debug, Subcommand, Clone)]
pub enum TokenAction {
    /// Create a token; prints it once, alone on one line of stdout
    Create {
        /// Its name, as the audit records who acted (letters, digits, . _ -)
        #[arg(long)]
        name: String,
        /// viewer reads; operator also previews; admin also runs, applies and edits
        #[arg(long, value_enum)]
        role: crate::role::Role,
    },
    /// List tokens (names, roles, when created, last used, revoked)
    List,
    /// Revoke a token by name: it stops working at once
    Revoke {
        /// The token's name
        name: String,
    },
}

#[derive(Debug, Args, Clone, Default)]
pub struct CleanupAttachmentsArgs {
    /// Delete attachments soft-deleted at least this many days ago [env: ATTACHMENT_CLEANUP_DAYS] [default: 30]
    #[arg(long, value_name = "DAYS")]
    pub days: Option<i64>,

    /// Attachments per batch (one transaction each) [env: ATTACHMENT_CLEANUP_BATCH_SIZE] [default: 100]
    #[arg(long, value_name = "N")]
    pub batch_size: Option<i64>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct PruneModulesArgs {
    /// Versions to keep per module, at least 1 [env: PUBLISHED_MODULE_RETENTION_KEEP_LATEST] [default: 3]
    #[arg(long, value_name = "N")]
    pub keep_latest: Option<i64>,

    /// Prune only this module_id (what a publish flow calls after publishing)
    #[arg(long, value_name = "ID")]
    pub module: Option<i64>,

    /// Act only if auto-prune is enabled (PUBLISHED_MODULE_AUTO_PRUNE=1 or [published_modules]
    /// auto_prune = true); otherwise exit 0 having done nothing
    #[arg(long)]
    pub auto: bool,
}

#[derive(Debug, Args, Clone, Default)]
pub struct CleanupUiFilesArgs {
    /// Run even if no row references any file while files exist (otherwise exit 3)
    #[arg(long)]
    pub allow_empty_references: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OpsRunType {
    /// From cron: no prompt
    Automatic,
    /// By hand: asks for confirmation on a terminal (or --yes)
    #[default]
    Manual,
    /// No backups (said loudly); every other rule still holds
    Emergency,
}

#[derive(Debug, Args, Clone, Default)]
pub struct CleanupOpsArgs {
    /// How the run was started
    #[arg(long = "type", value_enum, default_value_t = OpsRunType::Manual)]
    pub run_type: OpsRunType,

    /// Carry out the cleanup (the default action; accepted for the seed's scripts)
    #[arg(long)]
    pub run: bool,

    /// Show cleanup history and what is eligible now, then exit
    #[arg(long, conflicts_with_all = ["show_policies", "set_policy"])]
    pub stats: bool,

    /// Show the retention policies, then exit
    #[arg(long, conflicts_with = "set_policy")]
    pub show_policies: bool,

    /// Change one policy (with --retention-days and/or --enable/--disable), then exit
    #[arg(long, value_name = "TYPE")]
    pub set_policy: Option<String>,

    /// New retention for --set-policy
    #[arg(long, value_name = "DAYS", requires = "set_policy")]
    pub retention_days: Option<i64>,

    /// Enable the policy given to --set-policy
    #[arg(long, requires = "set_policy", conflicts_with = "disable")]
    pub enable: bool,

    /// Disable the policy given to --set-policy
    #[arg(long, requires = "set_policy")]
    pub disable: bool,

    /// Root of the operation files [env: OPS_DIR]
    #[arg(long, value_name = "DIR")]
    pub ops_dir: Option<PathBuf>,

    /// Database host, instead of DATABASE_URL [default: localhost]
    #[arg(long, value_name = "HOST")]
    pub db_host: Option<String>,

    /// Database port [default: 5433]
    #[arg(long, value_name = "PORT")]
    pub db_port: Option<u16>,

    /// Database name [default: dagster]
    #[arg(long, value_name = "NAME")]
    pub db_name: Option<String>,

    /// Database user [default: dagster]
    #[arg(long, value_name = "USER")]
    pub db_user: Option<String>,

    /// Database password (prefer PGPASSWORD or DATABASE_URL: a flag is visible in `ps`)
    #[arg(long, value_name = "PASS", hide_default_value = true)]
    pub db_password: Option<String>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct BulkCloudcubeArgs {
    /// Days to keep completed clips [default: 5]
    #[arg(long, value_name = "DAYS")]
    pub retention_days: Option<i64>,

    /// Delete only this job's original media and extracted audio (all its clips must be completed)
    #[arg(long, value_name = "ID")]
    pub job: Option<i64>,

    /// Run even if nothing is preserved by the database while objects exist (otherwise exit 3)
    #[arg(long)]
    pub allow_empty_references: bool,
}

#[derive(Debug, Args, Clone, Default)]
pub struct WorkerOnceArgs {
    /// Tasks to run, comma-separated, from tmp,previews,objects,logs,repos [default: all]
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub tasks: Option<Vec<String>>,

    /// Run the objects task even if no session references any object while objects exist
    #[arg(long)]
    pub allow_empty_references: bool,
}

#[derive(Debug, Args, Clone, Default)]
pub struct RestoreArgs {
    /// The run to undo (its run_id in the report and in cleanup_runs)
    #[arg(long = "run", value_name = "RUN_ID", required_unless_present = "list")]
    pub run_id: Option<String>,

    /// List recent runs and what each can restore
    #[arg(long)]
    pub list: bool,

    /// Root of the operation files, for files cleanup-ops deleted [env: OPS_DIR]
    #[arg(long, value_name = "DIR")]
    pub ops_dir: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct ApplyArgs {
    /// The plan file written by --plan-out
    #[arg(value_name = "PLAN.json")]
    pub plan: PathBuf,

    /// Refuse a plan written longer ago than this (e.g. 90m, 24h, 7d)
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_age)]
    pub max_plan_age: chrono::Duration,
}

/// `90m`, `24h`, `7d`, `3600s`.
pub fn parse_age(s: &str) -> Result<chrono::Duration, String> {
    let bad = || format!("{s:?} is not a duration: use a number and a unit, e.g. 90m, 24h, 7d");
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let n: i64 = s[..split].parse().map_err(|_| bad())?;
    match &s[split..] {
        "s" => Ok(chrono::Duration::seconds(n)),
        "m" | "min" => Ok(chrono::Duration::minutes(n)),
        "h" => Ok(chrono::Duration::hours(n)),
        "d" => Ok(chrono::Duration::days(n)),
        _ => Err(bad()),
    }
}

#[derive(Debug, Args, Clone, Default)]
pub struct RecoverArgs {
    /// Only this command's runs (default: every command's)
    #[arg(long, value_name = "NAME")]
    pub command: Option<String>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct StatusArgs {
    /// Also dry-run each command now and show what it would delete (commands that are not
    /// configured say why)
    #[arg(long)]
    pub preview: bool,
}

#[derive(Debug, Args, Clone, Default)]
pub struct DemoArgs {
    /// Where to build the workspace
    #[arg(value_name = "DIR", default_value = "sweep-demo")]
    pub dir: PathBuf,
}

impl Command {
    /// The command's name as in the audit and the lock.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Migrate => "migrate",
            Command::CleanupAttachments(_) => "cleanup-attachments",
            Command::PruneModules(_) => "prune-modules",
            Command::CleanupUiFiles(_) => "cleanup-ui-files",
            Command::WorkerOnce(_) => "worker-once",
            Command::BulkCloudcube(_) => "bulk-cloudcube",
            Command::CleanupOps(_) => "cleanup-ops",
            Command::Restore(_) => "restore",
            Command::Apply(_) => "apply",
            Command::Demo(_) => "demo",
            Command::Status(_) => "status",
            Command::Recover(_) => "recover",
            Command::Serve(_) => "serve",
            Command::Token(_) => "token",
        }
    }
}

/// A command and its arguments (a `[[schedule]]` entry's) parsed the way its command line would
/// be, so a typo is refused when the config loads, not at 02:00.
pub fn parse_command(command: &str, args: &[String]) -> anyhow::Result<Command> {
    let argv = ["sweep", command].into_iter().map(String::from).chain(args.iter().cloned());
    match Cli::try_parse_from(argv) {
        // A schedule or a web request names a command and its own arguments; the server's
        // global options (database, dry run, backups, caps, …) are not theirs to change.
        Ok(cli) if cli.global != GlobalArgs::default() => anyhow::bail!(
            "global options (--database-url, --dry-run, --backup-dir, --max-delete, …) are not arguments of the command here: set them where the server or schedule is configured"
        ),
        Ok(cli) if cli.command.name() == command => Ok(cli.command),
        Ok(cli) => anyhow::bail!("they name another command ({})", cli.command.name()),
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid").trim_start_matches("error: ");
            anyhow::bail!("{first}")
        }
    }
}

/// [`parse_command`], for checking only.
pub fn check_command_args(command: &str, args: &[String]) -> anyhow::Result<()> {
    parse_command(command, args).map(drop)
}
