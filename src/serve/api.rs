//! The JSON API: seed 002's five endpoints, seed 003's bulk cleanup, seed 004's status, run-now
//! and dry-run toggle, and the runs, items, events, plans, schedules and metrics beyond them.
//! Bad input is a 400 (malformed), 413 (too large) or 422 (well-formed but wrong) with a JSON
//! body saying what to fix; never a 500.

use super::auth::Who;
use super::runs::{self, WebRun};
use super::{ApiError, State};
use crate::cli::{ApplyArgs, BulkCloudcubeArgs, Command, OpsRunType, WorkerOnceArgs};
use crate::commands::RunRequest;
use crate::db::Db;
use crate::plan::Plan;
use crate::planfile::PlanDoc;
use crate::token::Role;
use axum::extract::{FromRequest, Path, Query, Request};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// A JSON body: empty means `{}` (every field's default); a syntax error is a 400, a wrong
/// field or type a 422, a body over the limit a 413, each with a JSON error.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Body<T>, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|r| ApiError::new(r.status(), format!("cannot read the request body: {}", r.body_text())))?;
        let text = if bytes.iter().all(u8::is_ascii_whitespace) { &b"{}"[..] } else { &bytes[..] };
        serde_json::from_slice(text).map(Body).map_err(|e| {
            use serde_json::error::Category;
            match e.classify() {
                Category::Data => ApiError::unprocessable(format!("invalid request body: {e}")),
                _ => ApiError::bad_request(format!("malformed JSON in the request body: {e}")),
            }
        })
    }
}

/// Query parameters, with a JSON 400 naming the bad one.
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Params<T>, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| Params(q))
            .map_err(|r| ApiError::bad_request(r.body_text()))
    }
}

pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route {}: see /api/openapi.json", uri.path()))
}

pub async fn openapi(_who: Who) -> Json<Value> {
    Json(super::openapi::document())
}

/// A request for a run: a command of `sweep` and its arguments as on the command line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub dry_run: bool,
}

/// Parse a command and its arguments into a run request: 422 for an unknown command, a bad
/// argument, or a mode that is not a run (`cleanup-ops --stats`).
pub fn to_request(command: &str, args: &[String]) -> Result<RunRequest, ApiError> {
    if !crate::history::COMMANDS.contains(&command) {
        return Err(ApiError::unprocessable(format!(
            "unknown command {command:?}: choose from {}",
            crate::history::COMMANDS.join(", ")
        )));
    }
    let parsed = crate::cli::parse_command(command, args)
        .map_err(|e| ApiError::unprocessable(format!("{command} {}: {e:#}", args.join(" "))))?;
    if let Command::CleanupOps(a) = &parsed {
        if a.stats || a.show_policies || a.set_policy.is_some() {
            return Err(ApiError::unprocessable(
                "cleanup-ops --stats, --show-policies and --set-policy are not runs: use GET /api/cleanup/stats, GET and POST /api/cleanup/policies",
            ));
        }
    }
    RunRequest::of(parsed).ok_or_else(|| ApiError::unprocessable(format!("{command} is not a run")))
}

/// A dry run of `request` for reading (stats, the file list): no record, no lock, not
/// tracked as a web run.
async fn preview(app: &State, request: RunRequest) -> Result<crate::run::Finished, ApiError> {
    let ctx = app.base.for_server(true, None, json!({ "via": "web", "preview": true })).map_err(ApiError::of_run)?;
    match crate::commands::start(Arc::new(ctx), request).without_events().finish().await {
        Ok(crate::run::Ran::Run(f)) => Ok(*f),
        Ok(crate::run::Ran::Done(_)) => Err(ApiError::unprocessable("this request does not make a plan")),
        Err(e) => Err(ApiError::of_run(e)),
    }
}

pub async fn status(who: Who, axum::extract::State(app): axum::extract::State<State>) -> Result<Json<Value>, ApiError> {
    let _ = who;
    let now = Utc::now();
    let history = crate::history::read(&app.db, now).await?;
    let schedules = schedules_json(&app, &history, now).await?;
    let out: Vec<Value> = history
        .iter()
        .map(|h| {
            let mut v = serde_json::to_value(h).unwrap_or_default();
            v["schedules"] = schedules.iter().filter(|s| s["command"] == h.command.as_str()).cloned().collect();
            v
        })
        .collect();
    Ok(Json(json!({ "now": now, "commands": out })))
}

type St = axum::extract::State<State>;

// ---- seed 002 ------------------------------------------------------------------------------

fn ops_request(run_type: OpsRunType) -> RunRequest {
    RunRequest::CleanupOps(crate::cli::CleanupOpsArgs { run_type, ..Default::default() })
}

/// Seed 002's overview cards: files to clean now, space saved, the last cleanup; its history.
pub async fn cleanup_stats(who: Who, axum::extract::State(app): St) -> Result<Json<Value>, ApiError> {
    // A dry run each time: limited like every request that starts work.
    app.auth.limit_work(&who.principal)?;
    let f = preview(&app, ops_request(OpsRunType::Automatic)).await?;
    let mut by_policy: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    let mut bytes_to_clean = 0;
    f.plan
        .units
        .each(|u| {
            let bytes = u.items.iter().filter_map(|i| i.bytes).sum::<u64>();
            let e = by_policy.entry(u.task.clone().unwrap_or_default()).or_default();
            e.0 += u.items.len() as u64;
            e.1 += bytes;
            bytes_to_clean += bytes;
        })
        .map_err(ApiError::internal)?;
    let history = crate::history::read(&app.db, Utc::now()).await?;
    let h = history.iter().find(|h| h.command == "cleanup-ops");
    let recent = runs_query(&app.db, &RunsQuery { command: Some("cleanup-ops".into()), ..Default::default() }).await?;
    Ok(Json(json!({
        "files_to_clean": f.plan.item_count(),
        "bytes_to_clean": bytes_to_clean,
        "space_saved_bytes": h.map(|h| h.reclaimed_total).unwrap_or(0),
        "files_deleted_total": h.map(|h| h.deleted_total).unwrap_or(0),
        "last_cleanup": h.and_then(|h| h.last_run.as_ref()).map(|r| json!({"run_id": r.run_id, "started_at": r.started_at, "finished_at": r.finished_at, "status": r.status, "deleted": r.deleted, "bytes_reclaimed": r.bytes_reclaimed})),
        "eligible_now": by_policy.iter().map(|(p, (n, b))| json!({"policy": p, "files": n, "bytes": b})).collect::<Vec<_>>(),
        "history": recent["runs"],
    })))
}

pub async fn policies_get(_who: Who, axum::extract::State(app): St) -> Result<Json<Value>, ApiError> {
    let p = crate::ops_policies::load(&app.db).await.map_err(ApiError::of_run)?;
    Ok(Json(json!({ "policies": p })))
}

pub async fn policies_post(
    who: Who,
    axum::extract::State(app): St,
    Body(change): Body<crate::ops_policies::Change>,
) -> Result<Json<Value>, ApiError> {
    who.require(Role::Admin, "editing a retention policy")?;
    let done = crate::ops_policies::update(&app.db, &change, &who.actor(), false).await.map_err(ApiError::of_run)?;
    runs::record_action(&app, &who.actor(), "policy", &change.data_type, json!({ "change": done.change })).await;
    Ok(Json(json!({ "policy": done.policy, "change": done.change })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsRunBody {
    /// automatic, manual or emergency (default manual: the dashboard's button).
    #[serde(default, rename = "type")]
    pub run_type: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
}

/// Seed 002's Dry Run / Run Cleanup: a cleanup-ops run; answers with its report when it ends.
pub async fn cleanup_run(
    who: Who,
    axum::extract::State(app): St,
    Body(b): Body<OpsRunBody>,
) -> Result<Response, ApiError> {
    who.require_run(b.dry_run)?;
    app.auth.limit_work(&who.principal)?;
    // The type is read as the command line reads `--type` (and refused the same way).
    let request = to_request("cleanup-ops", &["--type".into(), b.run_type.unwrap_or_else(|| "manual".into())])?;
    let started =
        runs::start(&app, &who.actor(), WebRun { request, dry_run: b.dry_run, plan_out: None, action: "run" }).await?;
    let f = started.finished().await?;
    let mut report = f.report.clone();
    report["items"] = Value::Array(f.items.iter().take(1000).cloned().collect());
    Ok(Json(report).into_response())
}

/// Seed 002's file list: every file under OPS_DIR the policies see, with what a run would do
/// to it now and why.
pub async fn cleanup_files(who: Who, axum::extract::State(app): St) -> Result<Json<Value>, ApiError> {
    app.auth.limit_work(&who.principal)?;
    let f = preview(&app, ops_request(OpsRunType::Automatic)).await?;
    let mut files: Vec<Value> = Vec::new();
    f.plan
        .units
        .each(|u| {
            files.extend(u.items.iter().map(
                |i| json!({"path": i.target, "bytes": i.bytes, "policy": u.task, "action": "delete", "reason": i.reason}),
            ))
        })
        .map_err(ApiError::internal)?;
    files.extend(f.plan.kept.iter().map(|k| json!({"path": k.target, "action": "keep", "reason": k.reason})));
    Ok(Json(json!({ "files": files, "scanned": f.plan.scanned })))
}

// ---- seed 003 ------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkBody {
    #[serde(default = "five")]
    pub retention_days: i64,
    #[serde(default)]
    pub dry_run: bool,
}

fn five() -> i64 {
    5
}

/// Seed 003's `POST /api/cleanup/bulk/`: `{retention_days = 5, dry_run = false}` → its response
/// fields (and the run's report fields beside them).
pub async fn bulk(who: Who, axum::extract::State(app): St, Body(b): Body<BulkBody>) -> Result<Json<Value>, ApiError> {
    who.require_run(b.dry_run)?;
    if !(0..=36_500).contains(&b.retention_days) {
        return Err(ApiError::unprocessable(format!("retention_days {}: expected 0 to 36500 days", b.retention_days)));
    }
    app.auth.limit_work(&who.principal)?;
    let request =
        RunRequest::BulkCloudcube(BulkCloudcubeArgs { retention_days: Some(b.retention_days), ..Default::default() });
    let started =
        runs::start(&app, &who.actor(), WebRun { request, dry_run: b.dry_run, plan_out: None, action: "run" }).await?;
    let f = started.finished().await?;
    if f.status == "failure" {
        let m = f.report["message"].as_str().unwrap_or("the run failed").to_string();
        return Err(ApiError::unprocessable(m));
    }
    let mut out = f.report.clone();
    out["run_id"] = json!(f.run_id);
    Ok(Json(out))
}

// ---- seed 004 ------------------------------------------------------------------------------

/// Seed 004 §11: last run and status, items deleted in 24 h by task, the configuration (TTLs,
/// dry-run and where it comes from), recent runs.
pub async fn worker_status(_who: Who, axum::extract::State(app): St) -> Result<Json<Value>, ApiError> {
    let db = &app.db;
    let ctx = app.base.for_server(false, None, Value::Null).map_err(ApiError::of_run)?;
    let settings = crate::commands::worker_once::WorkerSettings::load(&ctx, &WorkerOnceArgs::default())
        .map_err(ApiError::of_run)?;
    let config: serde_json::Map<String, Value> =
        settings.rows().into_iter().map(|(k, v, s)| (k, json!({"value": v, "source": s}))).collect();
    let toggle = crate::switches::get(db, crate::switches::WORKER_DRY_RUN).await?;
    let mut q = db.sql();
    q.push("SELECT policy, kind, count(*) FROM cleanup_audit WHERE policy LIKE 'worker-once/%' AND outcome IN ('deleted', 'missing') AND ")
        .time_cmp("at", ">=", Utc::now() - chrono::Duration::hours(24))
        .push(" GROUP BY policy, kind ORDER BY policy, kind");
    let rows = db.read(&q, |r| Ok((r.text_req(0)?, r.text_req(1)?, r.int_req(2)?))).await?;
    let mut by_task = serde_json::Map::new();
    for (policy, kind, n) in rows {
        let task = policy.trim_start_matches("worker-once/").to_string();
        let e = by_task.entry(task).or_insert_with(|| json!({}));
        e[kind] = json!(n);
    }
    let history = crate::history::read(db, Utc::now()).await?;
    let h = history.into_iter().find(|h| h.command == "worker-once");
    let recent =
        runs_query(db, &RunsQuery { command: Some("worker-once".into()), per_page: Some(10), ..Default::default() })
            .await?;
    Ok(Json(json!({
        "last_run": h.as_ref().and_then(|h| h.last_run.clone()),
        "last_success": h.as_ref().and_then(|h| h.last_success),
        "deleted_24h_by_task": by_task,
        "config": config,
        "dry_run": {
            "effective": ctx.settings.dry_run.value || !ctx.settings.cleanup_enabled.value || toggle.as_ref().is_some_and(|t| t.value == "true"),
            "env": ctx.settings.dry_run.value,
            "cleanup_enabled": ctx.settings.cleanup_enabled.value,
            "toggle": toggle,
        },
        "recent_runs": recent,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerRunBody {
    #[serde(default)]
    pub tasks: Option<Vec<String>>,
    #[serde(default)]
    pub dry_run: bool,
}

/// Seed 004's "Run Cleanup Now": starts a worker-once cycle; 202 with its id.
pub async fn worker_run(
    who: Who,
    axum::extract::State(app): St,
    Body(b): Body<WorkerRunBody>,
) -> Result<Response, ApiError> {
    let mut args = Vec::new();
    if let Some(t) = &b.tasks {
        args.push("--tasks".to_string());
        args.push(t.join(","));
    }
    start_and_accept(&app, &who, "worker-once", &args, b.dry_run).await
}

pub async fn worker_dry_run_get(_who: Who, axum::extract::State(app): St) -> Result<Json<Value>, ApiError> {
    let t = crate::switches::get(&app.db, crate::switches::WORKER_DRY_RUN).await?;
    Ok(Json(json!({ "enabled": t.as_ref().is_some_and(|t| t.value == "true"), "toggle": t })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToggleBody {
    pub enabled: bool,
}

/// Seed 004's dry-run toggle (a database flag every worker-once run respects).
pub async fn worker_dry_run_post(
    who: Who,
    axum::extract::State(app): St,
    Body(b): Body<ToggleBody>,
) -> Result<Json<Value>, ApiError> {
    who.require(Role::Admin, "toggling dry-run")?;
    let value = if b.enabled { "true" } else { "false" };
    crate::switches::set(&app.db, crate::switches::WORKER_DRY_RUN, value, &who.actor(), Utc::now()).await?;
    runs::record_action(&app, &who.actor(), "dry-run", "worker-once", json!({ "enabled": b.enabled })).await;
    worker_dry_run_get(who, axum::extract::State(app)).await
}

// ---- runs ----------------------------------------------------------------------------------

async fn start_and_accept(
    app: &State,
    who: &Who,
    command: &str,
    args: &[String],
    dry_run: bool,
) -> Result<Response, ApiError> {
    who.require_run(dry_run)?;
    let request = to_request(command, args)?;
    app.auth.limit_work(&who.principal)?;
    let s = runs::start(app, &who.actor(), WebRun { request, dry_run, plan_out: None, action: "run" }).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "run_id": s.run_id,
            "url": format!("/api/runs/{}", s.run_id),
            "events": format!("/api/runs/{}/events", s.run_id),
        })),
    )
        .into_response())
}

pub async fn runs_start(who: Who, axum::extract::State(app): St, Body(b): Body<RunBody>) -> Result<Response, ApiError> {
    start_and_accept(&app, &who, &b.command, &b.args, b.dry_run).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    pub command: Option<String>,
    pub status: Option<String>,
    pub page: Option<u32>,
    pub per_page: Option<u32>,
}

fn page_of(page: Option<u32>, per_page: Option<u32>, default: u32) -> Result<(i64, i64), ApiError> {
    let page = page.unwrap_or(1);
    let per = per_page.unwrap_or(default);
    if page == 0 || per == 0 || per > 1000 {
        return Err(ApiError::bad_request("page starts at 1; per_page is 1 to 1000"));
    }
    Ok((page as i64, per as i64))
}

/// `SELECT <a run's columns> FROM cleanup_runs` (details read as text on every backend).
fn select_runs(db: &Db) -> crate::db::Sql {
    let mut q = db.sql();
    q.push("SELECT id, command, dry_run, started_at, finished_at, status, candidates, deleted, failed, retained, bytes_reclaimed, ")
        .as_text("details")
        .push(" FROM cleanup_runs");
    q
}

fn run_json(r: &crate::db::Row) -> Result<Value, crate::db::DecodeError> {
    let details = r.text(11)?.and_then(|d| serde_json::from_str::<Value>(&d).ok()).unwrap_or(Value::Null);
    Ok(json!({
        "run_id": r.text_req(0)?,
        "command": r.text_req(1)?,
        "dry_run": r.flag(2)?.unwrap_or(false),
        "started_at": r.time_req(3)?,
        "finished_at": r.time(4)?,
        "status": r.text_req(5)?,
        "candidates": r.int_req(6)?,
        "deleted": r.int_req(7)?,
        "failed": r.int_req(8)?,
        "retained": r.int_req(9)?,
        "bytes_reclaimed": r.int_req(10)?,
        "origin": details.get("origin").cloned().unwrap_or(Value::Null),
        "message": details.get("message").cloned().unwrap_or(Value::Null),
    }))
}

/// A page of runs, newest first: `{runs, page, per_page, total}`.
pub async fn runs_query(db: &Db, f: &RunsQuery) -> Result<Value, ApiError> {
    let (page, per) = page_of(f.page, f.per_page, 50)?;
    let filter = |q: &mut crate::db::Sql| {
        q.push(" WHERE 1 = 1");
        if let Some(c) = &f.command {
            q.push(" AND command = ").bind(c.as_str());
        }
        if let Some(s) = &f.status {
            q.push(" AND status = ").bind(s.as_str());
        }
    };
    let mut q = db.sql();
    q.push("SELECT count(*) FROM cleanup_runs");
    filter(&mut q);
    let total = db.fetch_one_int(&q).await?;
    let mut q = select_runs(db);
    filter(&mut q);
    q.push(" ORDER BY started_at DESC, id LIMIT ").bind(per).push(" OFFSET ").bind((page - 1) * per);
    let runs = db.read(&q, run_json).await?;
    Ok(json!({ "runs": runs, "page": page, "per_page": per, "total": total }))
}

pub async fn runs_list(
    _who: Who,
    axum::extract::State(app): St,
    Params(f): Params<RunsQuery>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(runs_query(&app.db, &f).await?))
}

/// A run: its record (with live progress if it runs here), or the report of a dry run this
/// server made.
pub async fn run_record(app: &State, id: &str) -> Result<Value, ApiError> {
    let mut q = select_runs(&app.db);
    q.push(" WHERE id = ").bind(id);
    if let Some(mut r) = app.db.read(&q, run_json).await?.into_iter().next() {
        if let Some(l) = app.runs.live(id) {
            r["progress"] = serde_json::to_value(&*l.progress.lock().expect("progress")).unwrap_or_default();
        }
        if let Some(f) = app.runs.finished(id) {
            r["report"] = f.report.clone();
        }
        return Ok(r);
    }
    if let Some(l) = app.runs.live(id) {
        return Ok(json!({
            "run_id": l.run_id, "command": l.command, "dry_run": l.dry_run, "status": "running",
            "started_at": l.started_at, "origin": {"via": "web", "by": l.by},
            "progress": *l.progress.lock().expect("progress"),
        }));
    }
    if let Some(f) = app.runs.finished(id) {
        let mut r = json!({ "run_id": f.run_id, "command": f.command, "dry_run": f.dry_run, "status": f.status, "exit_code": f.exit_code });
        for k in
            ["started_at", "finished_at", "candidates", "deleted", "failed", "retained", "bytes_reclaimed", "message"]
        {
            r[k] = f.report.get(k).cloned().unwrap_or(Value::Null);
        }
        r["report"] = f.report.clone();
        return Ok(r);
    }
    Err(ApiError::not_found(format!("no run {id:?} (GET /api/runs lists them)")))
}

pub async fn run_get(
    _who: Who,
    axum::extract::State(app): St,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(run_record(&app, &id).await?))
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemsQuery {
    pub outcome: Option<String>,
    pub kind: Option<String>,
    /// A substring of the target.
    pub q: Option<String>,
    pub page: Option<u32>,
    pub per_page: Option<u32>,
    /// `csv`: every matching item as CSV (no paging).
    pub format: Option<String>,
}

const ITEM_COLUMNS: &str = "id, at, kind, target, reason, bytes, outcome, error, backup_location, policy";

fn item_json(r: &crate::db::Row) -> Result<Value, crate::db::DecodeError> {
    Ok(json!({
        "id": r.int_req(0)?,
        "at": r.time_req(1)?,
        "kind": r.text_req(2)?,
        "target": r.text_req(3)?,
        "reason": r.text_req(4)?,
        "bytes": r.int(5)?,
        "outcome": r.text_req(6)?,
        "error": r.text(7)?,
        "backup": r.text(8)?,
        "policy": r.text_req(9)?,
    }))
}

/// One CSV field, quoted when it must be.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv_line(v: &Value) -> String {
    let f = |k: &str| match &v[k] {
        Value::Null => String::new(),
        Value::String(s) => csv_field(s),
        other => csv_field(&other.to_string()),
    };
    ["at", "kind", "target", "reason", "bytes", "outcome", "error", "backup", "policy"].map(f).join(",") + "\n"
}

const CSV_HEADER: &str = "at,kind,target,reason,bytes,outcome,error,backup,policy\n";

/// `WHERE` the run's audit rows that match the ledger's filters (intents are not items).
fn item_filter(q: &mut crate::db::Sql, id: &str, f: &ItemsQuery) {
    q.push(" WHERE run_id = ").bind(id).push(" AND outcome <> 'intent'");
    if let Some(o) = &f.outcome {
        q.push(" AND outcome = ").bind(o.as_str());
    }
    if let Some(k) = &f.kind {
        q.push(" AND kind = ").bind(k.as_str());
    }
    if let Some(s) = &f.q {
        q.push(" AND ").contains("target", s);
    }
}

/// Every matching audit row of a run as CSV, streamed in pages of 5,000 (by id), so that a
/// run of millions of items exports in bounded memory.
fn csv_stream(app: State, id: String, f: ItemsQuery) -> axum::body::Body {
    const PAGE: i64 = 5_000;
    let stream = futures::stream::unfold(Some(None::<i64>), move |after| {
        let (app, id, f) = (app.clone(), id.clone(), f.clone());
        async move {
            let after = after?;
            let Some(after) = after else {
                return Some((Ok::<_, std::io::Error>(CSV_HEADER.to_string()), Some(Some(0))));
            };
            let db = &app.db;
            let mut q = db.sql();
            q.push(format_args!("SELECT {ITEM_COLUMNS} FROM cleanup_audit"));
            item_filter(&mut q, &id, &f);
            q.push(" AND id > ").bind(after).push(" ORDER BY id LIMIT ").bind(PAGE);
            match db.read(&q, item_json).await {
                Ok(rows) if rows.is_empty() => None,
                Ok(rows) => {
                    let last = rows.last().and_then(|r| r["id"].as_i64()).unwrap_or(after);
                    let chunk: String = rows.iter().map(csv_line).collect();
                    Some((Ok(chunk), Some(Some(last))))
                }
                Err(e) => {
                    tracing::warn!(target: "cleanup", "CSV export of run {id} stopped: {e:#}");
                    Some((Err(std::io::Error::other(format!("{e:#}"))), None))
                }
            }
        }
    });
    axum::body::Body::from_stream(stream)
}

impl ItemsQuery {
    /// The filters a form sent, without its empty fields.
    pub fn normalized(&self) -> ItemsQuery {
        let keep = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        ItemsQuery { outcome: keep(&self.outcome), kind: keep(&self.kind), q: keep(&self.q), format: None, ..*self }
    }
}

/// True when `record` (from [`run_record`]) is a dry run's: its items are in this server's
/// memory, not in the audit.
pub fn is_dry(record: &Value) -> bool {
    record["dry_run"].as_bool().unwrap_or(false)
}

/// A page of a run's ledger (its audit rows; for a dry run this server made, its items), as
/// `{items, page, per_page, total}`; with `all`, every matching item on one page.
pub async fn items_page(app: &State, id: &str, dry: bool, f: &ItemsQuery, all: bool) -> Result<Value, ApiError> {
    let (page, per) = page_of(f.page, f.per_page, 100)?;
    let (items, total): (Vec<Value>, i64) = if !dry {
        let db = &app.db;
        let filter = |q: &mut crate::db::Sql| item_filter(q, id, f);
        let mut q = db.sql();
        q.push(format_args!("SELECT {ITEM_COLUMNS} FROM cleanup_audit"));
        filter(&mut q);
        q.push(" ORDER BY id");
        if !all {
            q.push(" LIMIT ").bind(per).push(" OFFSET ").bind((page - 1) * per);
        }
        let items = db.read(&q, item_json).await?;
        let total = if all {
            items.len() as i64
        } else {
            let mut c = db.sql();
            c.push("SELECT count(*) FROM cleanup_audit");
            filter(&mut c);
            db.fetch_one_int(&c).await?
        };
        (items, total)
    } else {
        let fr = app.runs.finished(id);
        let m: Vec<Value> = fr
            .iter()
            .flat_map(|fr| fr.items.iter())
            .filter(|i| f.outcome.as_deref().is_none_or(|o| i["outcome"] == o))
            .filter(|i| f.kind.as_deref().is_none_or(|k| i["kind"] == k))
            .filter(|i| f.q.as_deref().is_none_or(|s| i["target"].as_str().is_some_and(|t| t.contains(s))))
            .cloned()
            .collect();
        let total = m.len() as i64;
        let items = if all { m } else { m.into_iter().skip(((page - 1) * per) as usize).take(per as usize).collect() };
        (items, total)
    };
    Ok(json!({ "items": items, "page": page, "per_page": per, "total": total }))
}

/// The run's per-item ledger: filter by outcome and kind, search by target, paged; CSV export.
pub async fn run_items(
    _who: Who,
    axum::extract::State(app): St,
    Path(id): Path<String>,
    Params(f): Params<ItemsQuery>,
) -> Result<Response, ApiError> {
    let csv = match f.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(o) => return Err(ApiError::bad_request(format!("format {o:?}: expected json or csv"))),
    };
    let dry = is_dry(&run_record(&app, &id).await?);
    if csv {
        let body = if dry {
            let page = items_page(&app, &id, true, &f, true).await?;
            let mut text = String::from(CSV_HEADER);
            for i in page["items"].as_array().into_iter().flatten() {
                text.push_str(&csv_line(i));
            }
            axum::body::Body::from(text)
        } else {
            csv_stream(app.clone(), id.clone(), f)
        };
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"sweep-run-{}.csv\"", id.replace('"', "")),
                ),
            ],
            body,
        )
            .into_response());
    }
    Ok(Json(items_page(&app, &id, dry, &f, false).await?).into_response())
}

/// Live progress as Server-Sent Events: `progress` first, then the run's events (`started`,
/// `planned`, `item`, `batch`, `finished`), then `end` with the run's record. A run that is
/// not live here gets `end` at once.
pub async fn run_events(
    _who: Who,
    axum::extract::State(app): St,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    use futures::StreamExt;
    let record = run_record(&app, &id).await?;
    let live = app.runs.live(&id);
    let rx = live.as_ref().and_then(|l| l.events.subscribe());
    let first = SseEvent::default().event("progress").json_data(&record).map_err(|e| ApiError::internal(e.into()))?;
    let head = futures::stream::iter([Ok::<_, std::convert::Infallible>(first)]);
    let Some(rx) = rx else {
        let end = SseEvent::default().event("end").json_data(&record).map_err(|e| ApiError::internal(e.into()))?;
        return Ok(Sse::new(head.chain(futures::stream::iter([Ok(end)]))).into_response());
    };
    let body = futures::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        loop {
            match rx.recv().await {
                Ok(e) => {
                    let name = serde_json::to_value(&e)
                        .ok()
                        .and_then(|v| v["event"].as_str().map(String::from))
                        .unwrap_or_default();
                    let ev = SseEvent::default().event(name).json_data(&e).unwrap_or_default();
                    return Some((ev, Some(rx)));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let app2 = app.clone();
    let tail = futures::stream::once(async move {
        // The run's task files its result just after the channel closes.
        for _ in 0..50 {
            if app2.runs.live(&id).is_none() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let r = run_record(&app2, &id).await.unwrap_or(Value::Null);
        SseEvent::default().event("end").json_data(&r).unwrap_or_default()
    });
    let stream = head.chain(body.chain(tail).map(Ok));
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

pub async fn run_cancel(who: Who, axum::extract::State(app): St, Path(id): Path<String>) -> Result<Response, ApiError> {
    who.require(Role::Admin, "cancelling a run")?;
    if !app.runs.cancel(&id) {
        run_record(&app, &id).await?;
        return Err(ApiError::new(StatusCode::CONFLICT, format!("run {id} is not running in this server")));
    }
    runs::record_action(&app, &who.actor(), "cancel", &id, Value::Null).await;
    Ok((StatusCode::ACCEPTED, Json(json!({ "run_id": id, "cancelling": true, "message": "stops after the current batch; the run ends partial" }))).into_response())
}

// ---- plans ---------------------------------------------------------------------------------

fn plan_path(app: &State, id: &str) -> Result<std::path::PathBuf, ApiError> {
    if uuid::Uuid::parse_str(id).is_err() {
        return Err(ApiError::not_found(format!("no plan {id:?}")));
    }
    let p = app.plan_dir.join(format!("{id}.json"));
    if !p.is_file() {
        return Err(ApiError::not_found(format!("no plan {id:?}")));
    }
    Ok(p)
}

fn sha256_of(path: &std::path::Path) -> Result<String, ApiError> {
    let bytes =
        std::fs::read(path).map_err(|e| ApiError::internal(anyhow::anyhow!("cannot read {}: {e}", path.display())))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanBody {
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
}

/// Review, step one: a dry run whose plan (every item with its fingerprint) is kept under an
/// id and a SHA-256.
pub async fn plans_create(
    who: Who,
    axum::extract::State(app): St,
    Body(b): Body<PlanBody>,
) -> Result<Response, ApiError> {
    who.require(Role::Operator, "making a plan")?;
    let request = to_request(&b.command, &b.args)?;
    app.auth.limit_work(&who.principal)?;
    let id = uuid::Uuid::new_v4().to_string();
    let path = app.plan_dir.join(format!("{id}.json"));
    let s = runs::start(
        &app,
        &who.actor(),
        WebRun { request, dry_run: true, plan_out: Some(path.clone()), action: "plan" },
    )
    .await?;
    let f = s.finished().await?;
    if !path.is_file() {
        let m = f.report["message"].as_str().unwrap_or("the dry run made no plan").to_string();
        return Err(ApiError::unprocessable(m));
    }
    let sha = sha256_of(&path)?;
    let summary = plan_summary(&app, &id, &read_plan_doc(&app, &id)?)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": id, "sha256": sha, "run_id": f.run_id, "status": f.status,
            "command": b.command, "summary": summary["summary"],
            "url": format!("/api/plans/{id}"), "review": format!("/plans/{id}"),
        })),
    )
        .into_response())
}

fn read_plan_doc(app: &State, id: &str) -> Result<PlanDoc<Plan>, ApiError> {
    let path = plan_path(app, id)?;
    let text = std::fs::read_to_string(&path).map_err(|e| ApiError::internal(e.into()))?;
    serde_json::from_str(&text).map_err(|e| ApiError::unprocessable(format!("plan {id} is not a readable plan: {e}")))
}

/// A plan's counts by kind and by reason, its largest items, and what it keeps and why.
pub fn plan_summary(app: &State, id: &str, doc: &PlanDoc<Plan>) -> Result<Value, ApiError> {
    let plan = &doc.plan;
    let mut by_kind: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    let mut by_reason: std::collections::BTreeMap<String, u64> = Default::default();
    // The largest 20 items, kept as the plan is read (a heap of 20, whatever its size).
    let mut largest: std::collections::BinaryHeap<std::cmp::Reverse<(u64, usize, String)>> = Default::default();
    let mut n = 0;
    plan.units
        .each_item(|i| {
            let e = by_kind.entry(i.kind.as_str().to_string()).or_default();
            e.0 += 1;
            e.1 += i.bytes.unwrap_or(0);
            *by_reason.entry(i.reason.clone()).or_default() += 1;
            let b = i.bytes.unwrap_or(0);
            if largest.len() < 20 || largest.peek().is_some_and(|s| s.0 .0 < b) {
                // Ties keep the earlier item: `n` counts down.
                n += 1;
                let view = serde_json::to_string(&crate::report::ItemView(i)).unwrap_or_default();
                largest.push(std::cmp::Reverse((b, usize::MAX - n, view)));
                if largest.len() > 20 {
                    largest.pop();
                }
            }
            true
        })
        .map_err(ApiError::internal)?;
    let largest: Vec<Value> =
        largest.into_sorted_vec().into_iter().filter_map(|r| serde_json::from_str(&r.0 .2).ok()).collect();
    let mut kept_by_reason: std::collections::BTreeMap<String, u64> = Default::default();
    for k in &plan.kept {
        *kept_by_reason.entry(k.reason.clone()).or_default() += 1;
    }
    let age = Utc::now() - doc.created_at;
    Ok(json!({
        "id": id,
        "command": plan.command,
        "created_at": doc.created_at,
        "age_seconds": age.num_seconds(),
        "expires_at": doc.created_at + app.max_plan_age,
        "summary": {
            "units": plan.units.len(),
            "items": plan.item_count(),
            "bytes": by_kind.values().map(|v| v.1).sum::<u64>(),
            "kept": plan.kept.len() as u64 + plan.kept_unlisted.values().sum::<u64>(),
            "scanned": plan.scanned,
            "by_kind": by_kind.iter().map(|(k, (n, b))| json!({"kind": k, "items": n, "bytes": b})).collect::<Vec<_>>(),
            "by_reason": by_reason.iter().map(|(r, n)| json!({"reason": r, "items": n})).collect::<Vec<_>>(),
            "kept_by_reason": kept_by_reason.iter().map(|(r, n)| json!({"reason": r, "items": n})).collect::<Vec<_>>(),
        },
        "largest": largest,
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    pub page: Option<u32>,
    pub per_page: Option<u32>,
}

/// Review, step two: every item (paged) and every kept item with why.
pub async fn plan_get(
    _who: Who,
    axum::extract::State(app): St,
    Path(id): Path<String>,
    Params(pq): Params<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let (page, per) = page_of(pq.page, pq.per_page, 500)?;
    let doc = read_plan_doc(&app, &id)?;
    let mut out = plan_summary(&app, &id, &doc)?;
    out["sha256"] = json!(sha256_of(&plan_path(&app, &id)?)?);
    out["page"] = json!(page);
    out["per_page"] = json!(per);
    let (mut skip, mut items) = (((page - 1) * per) as usize, Vec::new());
    doc.plan
        .units
        .each_item(|i| {
            if skip > 0 {
                skip -= 1;
            } else {
                items.push(json!({"kind": i.kind, "target": i.target, "reason": i.reason, "bytes": i.bytes, "fingerprint": i.fingerprint}));
            }
            items.len() < per as usize
        })
        .map_err(ApiError::internal)?;
    out["items"] = json!(items);
    out["kept"] = serde_json::to_value(&doc.plan.kept).unwrap_or_default();
    Ok(Json(out))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyBody {
    pub sha256: String,
}

/// Review, step three: carry out exactly the reviewed plan (the SHA-256 it was shown with),
/// with `sweep apply`'s re-checks; a changed or stale plan is refused (409) and nothing is
/// deleted.
pub async fn plan_apply(
    who: Who,
    axum::extract::State(app): St,
    Path(id): Path<String>,
    Body(b): Body<ApplyBody>,
) -> Result<Response, ApiError> {
    who.require(Role::Admin, "applying a plan")?;
    let path = plan_path(&app, &id)?;
    let sha = sha256_of(&path)?;
    if !sha.eq_ignore_ascii_case(b.sha256.trim()) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("plan {id} is not the plan that was reviewed (its SHA-256 is {sha}): review it again"),
        ));
    }
    let doc = read_plan_doc(&app, &id)?;
    let age = Utc::now() - doc.created_at;
    if age > app.max_plan_age {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "plan {id} was made {} minutes ago, more than the {} minutes --max-plan-age allows: make a new plan",
                age.num_minutes(),
                app.max_plan_age.num_minutes()
            ),
        ));
    }
    app.auth.limit_work(&who.principal)?;
    let request = RunRequest::Apply(ApplyArgs { plan: path, max_plan_age: app.max_plan_age });
    let s =
        runs::start(&app, &who.actor(), WebRun { request, dry_run: false, plan_out: None, action: "apply" }).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "run_id": s.run_id, "plan": id, "url": format!("/api/runs/{}", s.run_id), "events": format!("/api/runs/{}/events", s.run_id) })),
    )
        .into_response())
}

// ---- schedules, actions, metrics -------------------------------------------------------------

/// Each `[[schedule]]` entry: its last run and status, its next run, and whether it is overdue
/// as of `now`, with each command's `history` as of then.
pub async fn schedules_json(
    app: &State,
    history: &[crate::history::History],
    now: chrono::DateTime<Utc>,
) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::new();
    for s in &app.base.schedules {
        let last = runs::schedule_runs(app, s, 20).await?;
        let h = history.iter().find(|h| h.command == s.command);
        let since = last
            .iter()
            .find(|r| r.1 == "success")
            .map(|r| r.0)
            .or(h.and_then(|h| h.last_success))
            .or(h.and_then(|h| h.first_run));
        out.push(json!({
            "name": s.name,
            "command": s.command,
            "args": s.args,
            "cron": s.expression,
            "tz": s.tz.to_string(),
            "dry_run": s.dry_run,
            "catch_up": s.catch_up,
            "last_run": last.first().map(|(t, st, id)| json!({"started_at": t, "status": st, "run_id": id})),
            "next_run": s.next_after(now),
            "overdue": !s.dry_run && s.overdue(since, now),
        }));
    }
    Ok(out)
}

pub async fn schedules(_who: Who, axum::extract::State(app): St) -> Result<Json<Value>, ApiError> {
    let now = Utc::now();
    let history = crate::history::read(&app.db, now).await?;
    Ok(Json(json!({ "schedules": schedules_json(&app, &history, now).await? })))
}

/// Who did what through the web, newest first.
pub async fn actions(
    _who: Who,
    axum::extract::State(app): St,
    Params(a): Params<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let (page, per) = page_of(a.page, a.per_page, 50)?;
    let db = &app.db;
    let mut q = db.sql();
    q.push("SELECT at, actor, action, target, ")
        .as_text("detail")
        .push(" FROM sweep_actions ORDER BY id DESC LIMIT ")
        .bind(per);
    q.push(" OFFSET ").bind((page - 1) * per);
    let rows = db
        .read(&q, |r| {
            Ok(json!({
                "at": r.time_req(0)?, "actor": r.text_req(1)?, "action": r.text_req(2)?, "target": r.text_req(3)?,
                "detail": r.text(4)?.and_then(|d| serde_json::from_str::<Value>(&d).ok()),
            }))
        })
        .await?;
    let total = db.fetch_one_int(&db.raw("SELECT count(*) FROM sweep_actions")).await?;
    Ok(Json(json!({ "actions": rows, "page": page, "per_page": per, "total": total })))
}

/// Prometheus text: every command's last run and last success, seed 004's counters and gauges.
pub async fn metrics(_who: Who, axum::extract::State(app): St) -> Result<Response, ApiError> {
    let text = crate::history::metrics(&app.db, Utc::now()).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}
