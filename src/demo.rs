//! `demo [DIR]`: build a self-contained sample workspace (SQLite with the reference schema and
//! realistic rows, files under a media root, a config file) and dry-run every command on it,
//! so a newcomer sees real decisions and the commands to try next.

use crate::cli::{
    BulkCloudcubeArgs, CleanupAttachmentsArgs, CleanupOpsArgs, CleanupUiFilesArgs, DemoArgs, GlobalArgs,
    PruneModulesArgs, WorkerOnceArgs,
};
use crate::commands::RunRequest;
use crate::config::DatabaseUrl;
use crate::db::{rfc3339, Db};
use crate::exit_codes::{Exit, Fatal};
use crate::run::{Ctx, Ran};
use anyhow::{Context, Result};
use chrono::{DateTime, Duration, Utc};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

const MARKER: &str = ".sweep-demo";

pub async fn run(ctx: &Ctx, args: &DemoArgs) -> Result<Exit> {
    let dir = prepare_dir(&args.dir)?;
    let now = chrono::SubsecRound::trunc_subsecs(Utc::now(), 0);
    let db_path = dir.join("sweep.db");
    let media = dir.join("media");
    let url = format!("sqlite://{}", db_path.display());
    let db = Db::connect(&DatabaseUrl::new(url.clone()), true).await?;
    crate::reference::create(&db).await?;
    db.migrate().await?;
    let data = dir.join("data");
    let objects = dir.join("objects");
    seed_attachments(&db, &media, now).await?;
    seed_modules(&db, &media, now).await?;
    seed_worker(&db, &data, &objects, now).await?;
    let cube = dir.join("cube");
    seed_cube(&db, &cube, now).await?;
    let ops = dir.join("ops");
    for (rel, body, days) in [
        ("operation_2026-09-01-a.json", r#"{"status": "failed", "step": "dbt run"}"#, 20),
        ("operation_2026-10-01-b.json", r#"{"status": "completed"}"#, 52),
        ("operation_2026-10-10-c.json", r#"{"status": "running", "progress": 40}"#, 42),
        ("operation_2026-11-20-d.json", r#"{"status": "running"}"#, 2),
        ("operation_broken.json", "{\"status\": ", 35),
        ("dbt/logs/2026-11-01/dbt.log", "dbt output", 21),
        ("logs/pipeline.log", "log lines", 3),
        ("tmp/cache/chunk-1.bin", "cache", 2),
    ] {
        let p = ops.join(rel);
        fs::create_dir_all(p.parent().expect("a relative path has a parent"))?;
        fs::write(&p, body)?;
        fs::File::options().write(true).open(&p)?.set_modified(SystemTime::from(now - Duration::days(days)))?;
    }
    db.close().await;

    let config = dir.join("sweep.toml");
    fs::write(
        &config,
        format!(
            "# sweep demo workspace: every key is documented in config/sweep.example.toml\n\
             [database]\nurl = \"{url}\"\n\n[paths]\nmedia_root = \"{}\"\ndata_dir = \"{}\"\nops_dir = \"{}\"\n\n[attachments]\ndays = 30\nbatch_size = 100\n\n\
             [published_modules]\nkeep_latest = 3\n\n[worker]\npreviews_store = \"file://{}\"\nstale_repos_enabled = true\n\n\
             [cloudcube]\nstore = \"file://{}\"\nretention_days = 5\n\n\
             # seed 004's cycles: shown by `sweep status`, run by `sweep serve` (as dry runs here:\n\
             # set dry_run = false to let serve delete in this workspace)\n\
             [[schedule]]\nname = \"worker-light\"\ncommand = \"worker-once\"\nargs = [\"--tasks\", \"tmp,previews\"]\ncron = \"*/10 * * * *\"\ndry_run = true\n\n\
             [[schedule]]\nname = \"worker-deep\"\ncommand = \"worker-once\"\nargs = [\"--tasks\", \"objects,logs\"]\ncron = \"0 */6 * * *\"\ndry_run = true\n",
            media.display(),
            data.display(),
            dir.join("ops").display(),
            objects.display(),
            cube.display()
        ),
    )?;

    println!("sweep demo workspace in {}", dir.display());
    println!("  database   {} (SQLite, reference schema + sweep's tables)", db_path.display());
    println!("  media root {}", media.display());
    println!("  config     {}\n", config.display());
    println!("Dry run of every command (nothing is changed):\n");

    // Flags for the demo's own paths, so a DATABASE_URL or MEDIA_ROOT in the environment
    // cannot point the demo at real data.
    let g = GlobalArgs {
        config: Some(config.clone()),
        database_url: Some(url.clone()),
        media_root: Some(media.clone()),
        data_dir: Some(data.clone()),
        dry_run: true,
        json: false,
        now: None,
        ..ctx.global.clone()
    };
    let demo_ctx = std::sync::Arc::new(Ctx::new(g)?);
    let runs = [
        // The demo holds a row whose image points outside the media root, to show that it is
        // refused: that "failure" is the point, so the demo itself exits 0.
        ("cleanup-attachments --days 30", RunRequest::CleanupAttachments(CleanupAttachmentsArgs::default())),
        ("prune-modules --keep-latest 3", RunRequest::PruneModules(PruneModulesArgs::default())),
        ("cleanup-ui-files", RunRequest::CleanupUiFiles(CleanupUiFilesArgs::default())),
        (
            "cleanup-ops (seed 002's six policies)",
            RunRequest::CleanupOps(CleanupOpsArgs { ops_dir: Some(dir.join("ops")), ..Default::default() }),
        ),
        ("bulk-cloudcube --retention-days 5", RunRequest::BulkCloudcube(BulkCloudcubeArgs::default())),
        ("worker-once (tmp, previews, objects, logs, repos)", RunRequest::WorkerOnce(WorkerOnceArgs::default())),
    ];
    let mut last = None;
    for (i, (title, request)) in runs.into_iter().enumerate() {
        println!("{}=== {title} ===", if i == 0 { "" } else { "\n" });
        // Through the run API, as `serve` will start runs.
        if let Ran::Run(f) = crate::commands::start(demo_ctx.clone(), request).without_events().finish().await? {
            crate::report::print(false, &f.report, &f.plan)?;
            last = Some(f);
        }
    }

    // What a notification would carry (docs/scheduling.md); the demo sends none.
    if let Some(f) = &last {
        let took = (f.report.finished_at - f.report.started_at).num_milliseconds() as f64 / 1000.0;
        let s = crate::run::summary(&f.report, &f.plan, f.exit, took);
        println!("\n=== notifications (not sent by the demo) ===");
        println!("With SWEEP_NOTIFY_URL set, a failed, partial or aborted run POSTs its summary as JSON, e.g. for the last run:");
        println!("{}", serde_json::to_string_pretty(&s)?);
        println!(
            "With SWEEP_HEALTHCHECKS_URL set, each run pings <url>/start?rid=<run id>, then <url>?rid=… on success or <url>/<exit code>?rid=…"
        );
    }

    println!("\n=== schedules ([[schedule]] in {}) ===", config.display());
    let now = chrono::Utc::now();
    for s in &demo_ctx.schedules {
        let next = s.next_after(now).map(|t| t.to_rfc3339()).unwrap_or_else(|| "never".into());
        let dry = if s.dry_run { "  (dry run)" } else { "" };
        println!(
            "  {:<13} {} {:<28} \"{}\" {}  next {next}{dry}",
            s.name,
            s.command,
            s.args.join(" "),
            s.expression,
            s.tz
        );
    }
    println!("  (`sweep status` shows them with each command's last run, and OVERDUE when a success is missing)");

    let cfg = config.display();
    println!("\nNext, try:");
    println!("  sweep --config {cfg} cleanup-attachments --dry-run --json     # the same decision as JSON");
    println!("  sweep --config {cfg} prune-modules --keep-latest 1 --dry-run  # a stricter retention");
    println!("  sweep --config {cfg} worker-once --tasks tmp,previews          # the worker's light cycle, for real");
    println!("  sweep --config {cfg} cleanup-attachments --show-config        # every setting and where it came from");
    println!("  sweep --config {cfg} cleanup-attachments --max-delete 3       # a safety cap stops the run (exit 3)");
    let plan = dir.join("plan.json");
    let plan = plan.display();
    let bk = dir.join("backups");
    let bk = bk.display();
    println!("  sweep --config {cfg} --dry-run --plan-out {plan} cleanup-attachments   # a plan to review");
    println!("  sweep --config {cfg} --backup-dir {bk} apply {plan}    # carry out exactly that plan, backed up");
    println!("  sweep --config {cfg} restore --list                         # runs, and what each can restore");
    println!("  sweep --config {cfg} restore --run RUN_ID                   # undo a run");
    println!("  sweep --config {cfg} token create --name me --role admin    # a token for the dashboard (shown once)");
    println!("  sweep --config {cfg} serve                                  # the dashboard and API on http://127.0.0.1:8080");
    println!("  sqlite3 {} 'SELECT outcome, count(*) FROM cleanup_audit GROUP BY 1'", db_path.display());
    Ok(Exit::Success)
}

/// Create DIR, or empty a previous demo workspace; refuse anything else.
fn prepare_dir(dir: &Path) -> Result<PathBuf> {
    if dir.exists() {
        let empty = fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?.next().is_none();
        if !empty {
            if !dir.join(MARKER).is_file() {
                return Err(Fatal::usage(format!(
                    "{} exists and is not a sweep demo workspace: choose an empty or new directory (sweep demo DIR)",
                    dir.display()
                ))
                .into());
            }
            fs::remove_dir_all(dir).with_context(|| format!("cannot clear the previous demo in {}", dir.display()))?;
        }
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    fs::write(dir.join(MARKER), "built by `sweep demo`; safe to delete\n")?;
    Ok(fs::canonicalize(dir)?)
}

/// Write a file of `size` bytes, last modified at `mtime`.
pub fn write_aged(path: &Path, size: usize, mtime: DateTime<Utc>) -> Result<()> {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p)?;
    }
    let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    fs::write(path, body)?;
    let f = fs::File::options().write(true).open(path)?;
    f.set_modified(SystemTime::from(mtime))?;
    Ok(())
}

async fn seed_attachments(db: &Db, media: &Path, now: DateTime<Utc>) -> Result<()> {
    let mut sql = String::new();
    let old_file = now - Duration::days(60);
    // (n, image, size, active, deleted days ago, write the file?)
    let rows: Vec<(u32, String, usize, bool, Option<i64>, bool)> = vec![
        (1, "attachments/2026/08/fern-close-up.jpg".into(), 48_213, false, Some(84), true),
        (2, "attachments/2026/08/monstera-leaf.png".into(), 122_880, false, Some(71), true),
        (3, "attachments/2026/09/orchid-roots.jpg".into(), 35_104, false, Some(52), true),
        (4, "attachments/2026/09/pothos-cutting.jpg".into(), 64_500, false, Some(45), true),
        (5, "attachments/2026/10/cactus-bloom.webp".into(), 18_422, false, Some(33), true),
        (6, "attachments/2026/10/already-removed.jpg".into(), 20_000, false, Some(40), false),
        (7, "../../etc/passwd".into(), 0, false, Some(90), false),
        (8, "backups/attachments/keep-forever.jpg".into(), 9_000, false, Some(120), true),
        (9, "attachments/2026/11/deleted-last-week.jpg".into(), 51_000, false, Some(7), true),
        (10, "attachments/2026/11/deleted-yesterday.png".into(), 77_000, false, Some(1), true),
        (11, "attachments/2026/11/active-1.jpg".into(), 41_000, true, None, true),
        (12, "attachments/2026/11/active-2.jpg".into(), 39_000, true, None, true),
        (13, "attachments/2026/11/active-3.jpg".into(), 88_000, true, None, true),
    ];
    for (n, image, size, active, deleted_days, write) in rows {
        if write {
            write_aged(&media.join(&image), size, old_file)?;
        }
        let deleted =
            deleted_days.map(|d| format!("'{}'", rfc3339(now - Duration::days(d)))).unwrap_or_else(|| "NULL".into());
        let created = rfc3339(now - Duration::days(deleted_days.unwrap_or(10) + 30));
        let name = image.rsplit('/').next().unwrap_or("file").replace('\'', "");
        sql.push_str(&format!(
            "INSERT INTO forum_attachment (id, image, original_filename, file_size, is_active, deleted_at, created_at) VALUES \
             ('{}', '{}', '{name}', {size}, {}, {deleted}, '{created}');\n",
            demo_uuid(n),
            image.replace('\'', "''"),
            active as i32
        ));
    }
    db.execute_script(&sql).await
}

/// Two published modules with versions, payloads and UI files, and an orphaned file.
async fn seed_modules(db: &Db, media: &Path, now: DateTime<Utc>) -> Result<()> {
    let mut sql = String::new();
    let old = now - Duration::days(20);
    let modules: [(i64, &str, i64); 2] = [(7, "Pump maintenance", 5), (8, "Forklift safety", 2)];
    let mut id = 100;
    for (module, title, versions) in modules {
        for v in 1..=versions {
            id += 1;
            let steps: Vec<String> =
                (1..=3).map(|k| format!("published_modules/{module}/v{v}/step-{k}.json")).collect();
            for s in &steps {
                write_aged(&media.join(s), 700 + (id as usize * 13) % 300, old)?;
            }
            let logo = format!("published_modules/{module}/shared/logo.json");
            write_aged(&media.join(&logo), 2048, old)?;
            let payload = serde_json::json!({
                "title": title,
                "version": v,
                "logo": format!("https://cdn.example.com/media/{logo}?v={v}"),
                "steps": steps.iter().enumerate().map(|(i, s)| serde_json::json!({"order": i + 1, "ui": format!("/media/{s}")})).collect::<Vec<_>>(),
            });
            sql.push_str(&format!(
                "INSERT INTO authoring_publishedmodule (id, module_id, version, payload, published_at) VALUES ({id}, {module}, {v}, '{}', '{}');\n",
                payload.to_string().replace('\'', "''"),
                rfc3339(old + Duration::days(v))
            ));
        }
    }
    // Left behind by a crashed publish long ago: no row references it.
    write_aged(&media.join("published_modules/7/v0/step-1.json"), 640, old - Duration::days(30))?;
    db.execute_script(&sql).await
}

/// A DATA_DIR with every kind of thing the worker looks at, and a file:// previews store.
async fn seed_worker(db: &Db, data: &Path, objects: &Path, now: DateTime<Utc>) -> Result<()> {
    let old = now - Duration::days(3);
    for (rel, size) in [
        ("tmp/clone-3f9a2c/repo.pack", 48_000),
        ("tmp/zip-7711/out.zip", 12_000),
        ("tmp/preview-job-42/build.log", 3_000),
        ("previews/p-expired/index.html", 9_000),
        ("previews/p-ready/index.html", 9_500),
        ("repos/r-stale/.git/HEAD", 41),
        ("repos/r-active/.git/HEAD", 41),
        ("logs/access-2026-10-01.log", 5_000),
    ] {
        write_aged(&data.join(rel), size, old - Duration::days(30))?;
    }
    write_aged(&data.join("logs/debug-old.log"), 80_000, now - Duration::days(12))?;
    write_aged(&data.join("logs/debug-today.log"), 20_000, now - Duration::hours(2))?;
    for (key, age) in [
        ("previews/p-expired/bundle.zip", 3),
        ("previews/p-ready/bundle.zip", 1),
        ("previews/orphan-1234/bundle.zip", 5),
    ] {
        write_aged(&objects.join(key), 30_000, now - Duration::days(age))?;
    }
    fs::create_dir_all(objects)?;
    // Creating files refreshed their directories' times: age the trees as a whole.
    for e in walkdir::WalkDir::new(data).into_iter().filter_map(|e| e.ok()).filter(|e| e.file_type().is_dir()) {
        let young = e.path().ends_with("logs") || e.path().starts_with(data.join("tmp/preview-job-42"));
        let at = if young { now - Duration::hours(2) } else { old - Duration::days(30) };
        fs::File::open(e.path())?.set_modified(SystemTime::from(at))?;
    }
    let t = |d: DateTime<Utc>| rfc3339(d);
    db.execute_script(&format!(
        "INSERT INTO background_jobs (id, job_type, status, created_at, updated_at, working_dir) VALUES \
         ('job-42', 'preview_build', 'running', '{n}', '{n}', 'tmp/preview-job-42');\n\
         INSERT INTO preview_sessions (id, status, created_at, updated_at, expires_at, bundle_path, bundle_key) VALUES \
         ('p-expired', 'expired', '{o}', '{o}', '{o}', 'previews/p-expired', 'previews/p-expired/bundle.zip'), \
         ('p-ready', 'ready', '{o}', '{o}', '{f}', 'previews/p-ready', 'previews/p-ready/bundle.zip');\n\
         INSERT INTO repos (id, active, last_activity_at, filesystem_path) VALUES \
         ('r-stale', 0, '{s}', 'repos/r-stale'), ('r-active', 1, '{s}', 'repos/r-active');\n",
        n = t(now),
        o = t(old),
        f = t(now + Duration::days(1)),
        s = t(now - Duration::days(400)),
    ))
    .await
}

/// A Cloudcube: a finished job with clips old and recent, a job still rendering, stray uploads.
async fn seed_cube(db: &Db, cube: &Path, now: DateTime<Utc>) -> Result<()> {
    let d = |days: i64| now - Duration::days(days);
    for (key, size, age) in [
        ("uploads/job-1/interview.mp4", 48_000_000, 9),
        ("audio/job-1/interview.mp3", 6_000_000, 9),
        ("clips/job-1/clip-1.mp4", 4_200_000, 2),
        ("clips/job-1/clip-2.mp4", 3_900_000, 8),
        ("uploads/job-2/podcast.mp4", 52_000_000, 1),
        ("audio/job-2/podcast.mp3", 7_500_000, 1),
        ("uploads/abandoned/test.mov", 12_000_000, 30),
    ] {
        // Sparse files: the sizes are realistic, the disk use is not.
        let p = cube.join(key);
        fs::create_dir_all(p.parent().expect("a key has a directory"))?;
        let f = fs::File::create(&p)?;
        f.set_len(size)?;
        f.set_modified(SystemTime::from(d(age)))?;
    }
    let t = |x: DateTime<Utc>| rfc3339(x);
    db.execute_script(&format!(
        "INSERT INTO viral_clips_job (id, status, original_file_key, extracted_audio_key, created_at) VALUES \
         (1, 'completed', 'uploads/job-1/interview.mp4', 'audio/job-1/interview.mp3', '{a}'), \
         (2, 'processing', 'uploads/job-2/podcast.mp4', 'audio/job-2/podcast.mp3', '{b}');\n\
         INSERT INTO viral_clips_clippedvideo (id, job_id, s3_key, status, created_at) VALUES \
         (11, 1, 'clips/job-1/clip-1.mp4', 'completed', '{c}'), (12, 1, 'clips/job-1/clip-2.mp4', 'completed', '{e}');\n",
        a = t(d(9)),
        b = t(d(1)),
        c = t(d(2)),
        e = t(d(8)),
    ))
    .await
}

/// A stable, valid UUID for demo row `n`.
pub fn demo_uuid(n: u32) -> String {
    format!("6f1c2a4e-0000-4000-8000-{n:012}")
}
