//! The command line as an operator meets it: errors that name the thing and the fix, help
//! that says what is never deleted, `--show-config`, secrets that never print, and `demo`.

use crate::support::*;

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn missing_database_url_names_the_fix() {
    let d = scratch();
    let r = sweep_in(d.path(), &["cleanup-attachments"], &[("MEDIA_ROOT", d.path().to_str().unwrap())]);
    r.expect(2);
    assert!(r.stderr.contains("DATABASE_URL is not set: pass --database-url"), "{}", r.stderr);
}

#[test]
fn bad_values_name_the_key_and_source() {
    let d = scratch();
    let url = format!("sqlite://{}/x.db", d.path().display());
    let media = d.path().to_str().unwrap();
    let base = [("DATABASE_URL", url.as_str()), ("MEDIA_ROOT", media)];

    let mut env = base.to_vec();
    env.push(("ATTACHMENT_CLEANUP_DAYS", "a month"));
    let r = sweep_in(d.path(), &["cleanup-attachments"], &env);
    r.expect(2);
    assert!(r.stderr.contains("ATTACHMENT_CLEANUP_DAYS") && r.stderr.contains("a month"), "{}", r.stderr);

    let r = sweep_in(d.path(), &["cleanup-attachments", "--batch-size", "0"], &base);
    r.expect(2);
    assert!(r.stderr.contains("--batch-size") && r.stderr.contains("1 to 10000"), "{}", r.stderr);

    std::fs::write(d.path().join("sweep.toml"), "[attachments]\nretention = 3\n").unwrap();
    let r = sweep_in(d.path(), &["cleanup-attachments"], &base);
    r.expect(2);
    assert!(r.stderr.contains("sweep.toml") && r.stderr.contains("retention"), "{}", r.stderr);
    std::fs::remove_file(d.path().join("sweep.toml")).unwrap();

    std::fs::write(d.path().join("bad.toml"), "[attachments]\ntable = \"x; DROP TABLE y\"\n").unwrap();
    let r = sweep_in(d.path(), &["--config", "bad.toml", "cleanup-attachments"], &base);
    r.expect(2);
    assert!(r.stderr.contains("attachments.table") && r.stderr.contains("not a valid SQL identifier"), "{}", r.stderr);

    let r = sweep_in(d.path(), &["cleanup-attachments", "--no-such-flag"], &base);
    r.expect(2);

    let r = sweep_in(d.path(), &["--now", "2999-01-01T00:00:00Z", "cleanup-attachments"], &base);
    r.expect(2);
    assert!(r.stderr.contains("--dry-run"), "a future --now needs --dry-run: {}", r.stderr);

    let r = sweep_in(
        d.path(),
        &["cleanup-attachments"],
        &[("DATABASE_URL", &url), ("MEDIA_ROOT", media), ("CLEANUP_DRY_RUN", "maybe")],
    );
    r.expect(2);
    assert!(r.stderr.contains("CLEANUP_DRY_RUN"), "{}", r.stderr);
}

#[test]
fn unreachable_database_fails_cleanly_without_the_password() {
    let d = scratch();
    let r = sweep_in(
        d.path(),
        &["cleanup-attachments"],
        &[
            ("DATABASE_URL", "postgres://app:pw-very-secret@127.0.0.1:1/prod"),
            ("MEDIA_ROOT", d.path().to_str().unwrap()),
        ],
    );
    r.expect(2);
    assert!(r.stderr.contains("cannot connect to PostgreSQL"), "{}", r.stderr);
    assert!(r.stderr.contains("refused"), "the real cause is named, not a pool timeout: {}", r.stderr);
    assert!(!r.stderr.contains("pw-very-secret"), "{}", r.stderr);

    let r = sweep_in(
        d.path(),
        &["cleanup-attachments"],
        &[("DATABASE_URL", "sqlite:///nonexistent/dir/app.db"), ("MEDIA_ROOT", d.path().to_str().unwrap())],
    );
    r.expect(2);
    assert!(r.stderr.contains("cannot open SQLite database"), "{}", r.stderr);
}

#[test]
fn show_config_gives_values_and_sources_with_secrets_redacted() {
    let d = scratch();
    std::fs::write(d.path().join("sweep.toml"), "[attachments]\ndays = 45\n[safety]\ngrace_minutes = 60\n").unwrap();
    let r = sweep_in(
        d.path(),
        &["cleanup-attachments", "--show-config", "--batch-size", "50"],
        &[
            ("DATABASE_URL", "postgres://app:hunter2@db.internal/prod"),
            ("MEDIA_ROOT", "/srv/media"),
            ("OBJECT_STORAGE_SECRET_KEY", "s3-secret-value"),
        ],
    );
    r.expect(0);
    let o = &r.stdout;
    assert!(!o.contains("hunter2") && !o.contains("s3-secret-value"), "{o}");
    assert!(o.contains("postgres://app:***@db.internal/prod") && o.contains("env DATABASE_URL"), "{o}");
    assert!(
        o.contains("attachments.days") && o.contains("45") && o.contains("config attachments.days in sweep.toml"),
        "{o}"
    );
    assert!(o.contains("attachments.batch_size") && o.contains("flag --batch-size"), "{o}");
    assert!(o.contains("safety.grace_minutes") && o.contains("60"), "{o}");
    assert!(o.contains("object_storage.secret_key") && o.contains("***"), "{o}");
}

#[test]
fn help_says_what_is_deleted_and_what_never_is() {
    let d = scratch();
    let r = sweep_in(d.path(), &["--help"], &[]);
    r.expect(0);
    assert!(r.stdout.contains("Never deleted"), "{}", r.stdout);
    let r = sweep_in(d.path(), &["cleanup-attachments", "--help"], &[]);
    r.expect(0);
    for s in ["is_active = false AND deleted_at <= now - DAYS", "Never deletes", "ATTACHMENT_CLEANUP_DAYS", "--dry-run"]
    {
        assert!(r.stdout.contains(s), "help lacks {s:?}:\n{}", r.stdout);
    }
}

#[test]
fn demo_builds_a_workspace_and_dry_runs_it() {
    let d = scratch();
    let r = sweep_in(d.path(), &["demo", "ws"], &[("DATABASE_URL", "postgres://must-not-be-used@127.0.0.1:1/x")]);
    r.expect(0);
    assert!(r.stdout.contains("would_delete") && r.stdout.contains("DRY RUN"), "{}", r.stdout);
    assert!(r.stdout.contains("Next, try"), "{}", r.stdout);
    // What a notification would carry, printed (none is sent).
    assert!(
        r.stdout.contains("=== notifications (not sent by the demo) ===") && r.stdout.contains("\"run_id\""),
        "{}",
        r.stdout
    );
    // Seed 004's schedules, with their next runs.
    assert!(
        r.stdout.contains("worker-light  worker-once --tasks tmp,previews")
            && r.stdout.contains("\"0 */6 * * *\" UTC  next "),
        "{}",
        r.stdout
    );
    assert!(d.path().join("ws/media/attachments/2026/08/fern-close-up.jpg").exists(), "a dry run deletes nothing");
    // Running it again rebuilds the workspace; a foreign directory is refused.
    sweep_in(d.path(), &["demo", "ws"], &[]).expect(0);
    std::fs::create_dir_all(d.path().join("mine")).unwrap();
    std::fs::write(d.path().join("mine/precious.txt"), "x").unwrap();
    let r = sweep_in(d.path(), &["demo", "mine"], &[]);
    r.expect(2);
    assert!(d.path().join("mine/precious.txt").exists());
    // The demo's config drives a real run, which the audit records.
    let cfg = d.path().join("ws/sweep.toml");
    let r = sweep_in(d.path(), &["--config", cfg.to_str().unwrap(), "cleanup-attachments", "--json"], &[]);
    r.expect(1); // the demo holds one row whose image points outside the media root
    let j = r.json();
    assert_eq!(j["attachments_deleted"], 6, "{}", r.stdout);
    assert!(!d.path().join("ws/media/attachments/2026/08/fern-close-up.jpg").exists());
    assert!(d.path().join("ws/media/attachments/2026/11/active-1.jpg").exists());
}

#[test]
fn old_table_keys_still_work_with_a_warning_that_names_the_new_section() {
    let d = scratch();
    let url = format!("sqlite://{}/x.db", d.path().display());
    let env = [("DATABASE_URL", url.as_str()), ("MEDIA_ROOT", d.path().to_str().unwrap())];
    std::fs::write(
        d.path().join("sweep.toml"),
        "[attachments]\ntable = \"att\"\n[attachments.columns]\nimage = \"file\"\n",
    )
    .unwrap();
    let r = sweep_in(d.path(), &["cleanup-attachments", "--show-config"], &env);
    r.expect(0);
    assert!(r.stderr.contains("deprecated") && r.stderr.contains("[attachments.forum_attachment]"), "{}", r.stderr);
    assert!(r.stdout.contains("attachments.forum_attachment.table") && r.stdout.contains("att "), "{}", r.stdout);
    assert!(r.stdout.contains("attachments.forum_attachment.image") && r.stdout.contains("file "), "{}", r.stdout);
    // The new section alone: no warning.
    std::fs::write(d.path().join("sweep.toml"), "[attachments.forum_attachment]\ntable = \"att\"\nimage = \"file\"\n")
        .unwrap();
    let r = sweep_in(d.path(), &["cleanup-attachments", "--show-config"], &env);
    r.expect(0);
    assert!(!r.stderr.contains("deprecated"), "{}", r.stderr);
    assert!(r.stdout.contains("file "), "{}", r.stdout);
}
