//! The dashboard: server-rendered pages (maud templates compiled into the binary) and one small
//! plain script for the buttons and live progress. Every state change goes through the JSON
//! API with the session's CSRF token; sign-in and sign-out are plain forms.

use super::api::{self, ItemsQuery, Params, RunsQuery};
use super::auth::{self, PageWho, Who, COOKIE};
use super::{ApiError, State};
use crate::report::human_bytes;
use crate::token::Role;
use axum::extract::{ConnectInfo, Path};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;
use serde_json::Value;
use std::net::SocketAddr;

type St = axum::extract::State<State>;

fn layout(title: &str, who: Option<&Who>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(csrf) = who.and_then(|w| w.csrf.as_deref()) { meta name="csrf" content=(csrf); }
                title { (title) " · sweep" }
                link rel="stylesheet" href="/static/app.css";
                script src="/static/app.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    nav aria-label="Main" {
                        a.brand href="/" { "sweep" }
                        @if who.is_some() {
                            a href="/" { "Dashboard" }
                            a href="/runs" { "Runs" }
                            a href="/preview" { "Preview" }
                            a href="/policies" { "Policies" }
                            a href="/worker" { "Worker" }
                        }
                    }
                    @if let Some(w) = who {
                        form.signout method="post" action="/logout" {
                            span { (w.principal.name) " (" (w.principal.role.name()) ")" }
                            input type="hidden" name="csrf" value=(w.csrf.clone().unwrap_or_default());
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    p id="msg" role="alert" aria-live="assertive" {}
                    (body)
                }
            }
        }
    }
}

fn page(title: &str, who: &Who, body: Markup) -> Response {
    layout(title, Some(who), body).into_response()
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string()).unwrap_or_else(|| "never".into())
}

fn when_v(v: &Value) -> String {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| when(Some(t.with_timezone(&Utc))))
        .unwrap_or_else(|| "—".into())
}

/// A status as words and a mark, so that it reads without colour.
fn status_badge(s: &str) -> Markup {
    let mark = match s {
        "success" => "✓",
        "partial" | "interrupted" => "◐",
        "failure" | "failed" | "aborted" => "✗",
        "running" => "…",
        _ => "·",
    };
    html! { span class=(format!("status status-{s}")) { (mark) " " (s) } }
}

// ---- sign-in -------------------------------------------------------------------------------

fn login_page(error: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form method="post" action="/login" class="card" {
                label for="token" { "API token" }
                input id="token" name="token" type="password" autocomplete="off" required autofocus;
                p.hint { "Create one with " code { "sweep token create --name NAME --role viewer|operator|admin" } "." }
                button type="submit" { "Sign in" }
            }
        },
    )
}

pub async fn login_form() -> Markup {
    login_page(None)
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
}

pub async fn login(
    axum::extract::State(app): St,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Result<Response, ApiError> {
    app.auth.limit_sign_in(&peer.ip().to_string())?;
    let (mut parts, _) = axum::http::Request::new(()).into_parts();
    parts.headers = headers;
    if parts.headers.contains_key(header::ORIGIN) && !auth::same_origin(&parts) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "cross-origin sign-in refused"));
    }
    let Some((principal, token_id)) = auth::verify_token(&app, f.token.trim()).await? else {
        tracing::warn!(target: "cleanup", "web: failed sign-in from {}", peer.ip());
        return Ok((
            StatusCode::UNAUTHORIZED,
            login_page(Some("That token is not valid (unknown, revoked or mistyped).")),
        )
            .into_response());
    };
    let actor = format!("token:{}", principal.name);
    let sid = app.auth.open_session(principal, &token_id);
    super::runs::record_action(&app, &actor, "sign-in", &peer.ip().to_string(), Value::Null).await;
    let secure = if app.tls { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}={sid}; HttpOnly; SameSite=Strict; Path=/; Max-Age=43200{secure}");
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response())
}

#[derive(Deserialize)]
pub struct LogoutForm {
    csrf: String,
}

pub async fn logout(axum::extract::State(app): St, headers: HeaderMap, Form(f): Form<LogoutForm>) -> Response {
    let (mut parts, _) = axum::http::Request::new(()).into_parts();
    parts.headers = headers;
    if let Some(sid) = auth::session_cookie(&parts) {
        // Only this session's own form may end it (CSRF).
        if app.auth.session_csrf(&sid).as_deref() == Some(f.csrf.as_str()) {
            app.auth.close_session(&sid);
        }
    }
    let clear = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    ([(header::SET_COOKIE, clear)], Redirect::to("/login")).into_response()
}

// ---- dashboard -----------------------------------------------------------------------------

/// Bytes reclaimed and items deleted per day over the last 30 days, as inline SVG bars.
fn plot(days: &[(chrono::NaiveDate, i64, i64)]) -> Markup {
    let (w, h, pad) = (600.0_f64, 120.0_f64, 4.0_f64);
    let bar = w / days.len().max(1) as f64;
    let chart = |title: &str, pick: fn(&(chrono::NaiveDate, i64, i64)) -> i64, fmt: fn(i64) -> String| {
        let max = days.iter().map(pick).max().unwrap_or(0).max(1) as f64;
        html! {
            figure.plot {
                figcaption {
                    (title) " per day, last 30 days"
                    @if days.iter().map(pick).any(|v| v > 0) { " (highest: " (fmt(max as i64)) ")" } @else { ": none yet" }
                }
                svg viewBox=(format!("0 0 {w} {}", h + 16.0)) role="img" aria-label=(title) {
                    line x1="0" y1=(h) x2=(w) y2=(h) class="axis" {}
                    @for (i, d) in days.iter().enumerate() {
                        @let v = pick(d) as f64;
                        @let bh = (v / max) * (h - pad);
                        rect x=(format!("{:.1}", i as f64 * bar + 1.0)) y=(format!("{:.1}", h - bh)) width=(format!("{:.1}", (bar - 2.0).max(1.0))) height=(format!("{:.1}", bh)) {
                            title { (d.0.format("%Y-%m-%d")) ": " (fmt(pick(d))) }
                        }
                    }
                    text x="0" y=(h + 14.0) { (days.first().map(|d| d.0.format("%m-%d").to_string()).unwrap_or_default()) }
                    text x=(w) y=(h + 14.0) text-anchor="end" { (days.last().map(|d| d.0.format("%m-%d").to_string()).unwrap_or_default()) }
                }
            }
        }
    };
    html! {
        (chart("Bytes reclaimed", |d| d.1, |v| human_bytes(v.max(0) as u64)))
        (chart("Items deleted", |d| d.2, |v| v.to_string()))
    }
}

async fn per_day(app: &State) -> Result<Vec<(chrono::NaiveDate, i64, i64)>, ApiError> {
    let db = &app.db;
    let today = Utc::now().date_naive();
    let since = Utc::now() - chrono::Duration::days(30);
    let mut q = db.sql();
    q.push("SELECT finished_at, bytes_reclaimed, deleted FROM cleanup_runs WHERE dry_run = ").bind(false);
    q.push(" AND finished_at IS NOT NULL AND ").time_cmp("finished_at", ">=", since);
    let rows = db.read(&q, |r| Ok((r.time_req(0)?, r.int_req(1)?, r.int_req(2)?))).await?;
    let mut days: Vec<(chrono::NaiveDate, i64, i64)> =
        (0..30).rev().map(|i| (today - chrono::Duration::days(i), 0, 0)).collect();
    for (t, b, n) in rows {
        if let Some(d) = days.iter_mut().find(|d| d.0 == t.date_naive()) {
            d.1 += b;
            d.2 += n;
        }
    }
    Ok(days)
}

fn runs_table(runs: &[Value]) -> Markup {
    html! {
        div.scroll {
            table {
                thead { tr { th { "Run" } th { "Command" } th { "Started" } th { "Status" } th.num { "Deleted" } th.num { "Failed" } th.num { "Reclaimed" } th { "By" } } }
                tbody {
                    @for r in runs {
                        @let id = r["run_id"].as_str().unwrap_or_default();
                        tr {
                            td { a href=(format!("/runs/{id}")) { code { (id.get(..8).unwrap_or(id)) } } }
                            td { (r["command"].as_str().unwrap_or_default()) @if r["dry_run"].as_bool() == Some(true) { " (dry run)" } }
                            td { (when_v(&r["started_at"])) }
                            td { (status_badge(r["status"].as_str().unwrap_or_default())) }
                            td.num { (r["deleted"]) }
                            td.num { (r["failed"]) }
                            td.num { (human_bytes(r["bytes_reclaimed"].as_i64().unwrap_or(0).max(0) as u64)) }
                            td { (origin_text(&r["origin"])) }
                        }
                    }
                }
            }
        }
    }
}

fn origin_text(o: &Value) -> String {
    match (o["via"].as_str(), o["by"].as_str(), o["schedule"].as_str()) {
        (Some("web"), Some(by), _) => by.trim_start_matches("token:").to_string(),
        (Some("schedule"), _, Some(s)) => format!("schedule {s}"),
        _ => "CLI".into(),
    }
}

pub async fn dashboard(PageWho(who): PageWho, axum::extract::State(app): St) -> Result<Response, ApiError> {
    let now = Utc::now();
    let history = crate::history::read(&app.db, now).await?;
    let schedules = api::schedules_json(&app, &history, now).await?;
    let days = per_day(&app).await?;
    let recent = api::runs_query(&app.db, &RunsQuery { per_page: Some(10), ..Default::default() }).await?;
    let live = app.runs.live_runs();
    let body = html! {
        @if !live.is_empty() {
            section aria-label="Running now" {
                h2 { "Running now" }
                ul { @for l in &live { li { a href=(format!("/runs/{}", l.run_id)) { (l.command) } " started by " (l.by.trim_start_matches("token:")) } } }
            }
        }
        section.cards aria-label="Commands" {
            @for h in &history {
                article.card {
                    h2 { (h.command) }
                    dl {
                        dt { "Last run" }
                        dd {
                            @if let Some(r) = &h.last_run {
                                a href=(format!("/runs/{}", r.run_id)) { (when(Some(r.started_at))) } " " (status_badge(&r.status))
                            } @else { "never" }
                        }
                        dt { "Last success" } dd { (when(h.last_success)) }
                        dt { "Deleted in 24 h" } dd { (h.deleted_24h) }
                        dt { "Reclaimed in 24 h / 30 d" } dd { (human_bytes(h.reclaimed_24h.max(0) as u64)) " / " (human_bytes(h.reclaimed_30d.max(0) as u64)) }
                        @for s in schedules.iter().filter(|s| s["command"] == h.command.as_str()) {
                            dt { "Schedule " (s["name"].as_str().unwrap_or_default()) }
                            dd {
                                "next " (when_v(&s["next_run"]))
                                @if s["overdue"].as_bool() == Some(true) { " " strong.overdue { "OVERDUE" } }
                            }
                        }
                    }
                    @if who.principal.role >= Role::Operator {
                        a.button href=(format!("/preview?command={}", h.command)) { "Preview" }
                    }
                }
            }
        }
        section aria-label="Reclaimed over 30 days" { h2 { "Last 30 days" } (plot(&days)) }
        section aria-label="Recent runs" {
            h2 { "Recent runs" }
            (runs_table(recent["runs"].as_array().map(Vec::as_slice).unwrap_or_default()))
            p { a href="/runs" { "All runs" } }
        }
        @if !schedules.is_empty() {
            section aria-label="Schedules" {
                h2 { "Schedules" }
                div.scroll { table {
                    thead { tr { th { "Name" } th { "Command" } th { "Cron" } th { "Last run" } th { "Next run" } th { "State" } } }
                    tbody { @for s in &schedules { tr {
                        td { (s["name"].as_str().unwrap_or_default()) }
                        td { (s["command"].as_str().unwrap_or_default()) " " (s["args"].as_array().map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(" ")).unwrap_or_default()) @if s["dry_run"].as_bool() == Some(true) { " (dry run)" } }
                        td { code { (s["cron"].as_str().unwrap_or_default()) } " " (s["tz"].as_str().unwrap_or_default()) }
                        td { @if s["last_run"].is_null() { "never" } @else { (when_v(&s["last_run"]["started_at"])) " " (status_badge(s["last_run"]["status"].as_str().unwrap_or_default())) } }
                        td { (when_v(&s["next_run"])) }
                        td { @if s["overdue"].as_bool() == Some(true) { strong.overdue { "OVERDUE" } } @else { "on time" } }
                    } } }
                } }
            }
        }
    };
    Ok(page("Dashboard", &who, body))
}

// ---- runs ----------------------------------------------------------------------------------

fn pager(base: &str, page: i64, per: i64, total: i64) -> Markup {
    let last = ((total + per - 1) / per).max(1);
    let sep = if base.contains('?') { '&' } else { '?' };
    html! {
        nav.pager aria-label="Pages" {
            @if page > 1 { a href=(format!("{base}{sep}page={}", page - 1)) rel="prev" { "← Previous" } }
            span { "Page " (page) " of " (last) " (" (total) ")" }
            @if page < last { a href=(format!("{base}{sep}page={}", page + 1)) rel="next" { "Next →" } }
        }
    }
}

fn qs(pairs: &[(&str, Option<&str>)]) -> String {
    let mut u = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            u.append_pair(k, v);
        }
    }
    u.finish()
}

pub async fn runs(
    PageWho(who): PageWho,
    axum::extract::State(app): St,
    Params(f): Params<RunsQuery>,
) -> Result<Response, ApiError> {
    let f = RunsQuery { command: f.command.filter(|c| !c.is_empty()), status: f.status.filter(|s| !s.is_empty()), ..f };
    let r = api::runs_query(&app.db, &f).await?;
    let base = format!("/runs?{}", qs(&[("command", f.command.as_deref()), ("status", f.status.as_deref())]));
    let body = html! {
        form.filters method="get" action="/runs" {
            label { "Command " select name="command" {
                option value="" { "any" }
                @for c in crate::history::COMMANDS { option value=(c) selected[f.command.as_deref() == Some(c)] { (c) } }
            } }
            label { "Status " select name="status" {
                option value="" { "any" }
                @for s in ["success", "partial", "aborted", "interrupted", "skipped", "running"] { option value=(s) selected[f.status.as_deref() == Some(s)] { (s) } }
            } }
            button type="submit" { "Filter" }
        }
        (runs_table(r["runs"].as_array().map(Vec::as_slice).unwrap_or_default()))
        (pager(&base, r["page"].as_i64().unwrap_or(1), r["per_page"].as_i64().unwrap_or(50), r["total"].as_i64().unwrap_or(0)))
    };
    Ok(page("Runs", &who, body))
}

pub async fn run(
    PageWho(who): PageWho,
    axum::extract::State(app): St,
    Path(id): Path<String>,
    Params(f): Params<ItemsQuery>,
) -> Result<Response, ApiError> {
    let r = api::run_record(&app, &id).await?;
    let items = api::items_page(&app, &id, api::is_dry(&r), &f.normalized(), false).await?;
    let running = r["status"] == "running";
    let live_here = app.runs.live(&id).is_some();
    let filter_qs = qs(&[("outcome", f.outcome.as_deref()), ("kind", f.kind.as_deref()), ("q", f.q.as_deref())]);
    let csv = format!(
        "/api/runs/{id}/items?{}",
        qs(&[
            ("outcome", f.outcome.as_deref()),
            ("kind", f.kind.as_deref()),
            ("q", f.q.as_deref()),
            ("format", Some("csv"))
        ])
    );
    let body = html! {
        section.card aria-label="Summary" {
            dl {
                dt { "Command" } dd { (r["command"].as_str().unwrap_or_default()) @if r["dry_run"].as_bool() == Some(true) { " (dry run)" } }
                dt { "Status" } dd id="run-status" { (status_badge(r["status"].as_str().unwrap_or_default())) }
                dt { "Started" } dd { (when_v(&r["started_at"])) }
                dt { "Finished" } dd { (when_v(&r["finished_at"])) }
                dt { "Deleted / failed" } dd { (r["deleted"]) " / " (r["failed"]) }
                dt { "Reclaimed" } dd { (human_bytes(r["bytes_reclaimed"].as_i64().unwrap_or(0).max(0) as u64)) }
                dt { "Started by" } dd { (origin_text(&r["origin"])) }
                @if let Some(m) = r["message"].as_str() { dt { "Message" } dd { (m) } }
            }
            @if running && live_here {
                div id="live" data-run=(id) {
                    progress id="live-bar" max="100" value="0" aria-label="Progress" {}
                    span id="live-text" aria-live="polite" { "running…" }
                }
                @if who.principal.role >= Role::Admin {
                    button.danger data-post=(format!("/api/runs/{id}/cancel")) data-confirm="Stop this run after its current batch?" data-then="reload" { "Cancel run" }
                }
            }
        }
        section aria-label="Items" {
            h2 { "Items" }
            form.filters method="get" action=(format!("/runs/{id}")) {
                label { "Outcome " select name="outcome" {
                    option value="" { "any" }
                    @for o in ["deleted", "would_delete", "failed", "missing", "skipped"] { option value=(o) selected[f.outcome.as_deref() == Some(o)] { (o) } }
                } }
                label { "Kind " select name="kind" {
                    option value="" { "any" }
                    @for k in ["row", "file", "dir", "object"] { option value=(k) selected[f.kind.as_deref() == Some(k)] { (k) } }
                } }
                label { "Target contains " input type="search" name="q" value=(f.q.clone().unwrap_or_default()); }
                button type="submit" { "Filter" }
                a href=(csv) { "Export CSV" }
            }
            div.scroll { table id="ledger" {
                thead { tr { th { "Kind" } th { "Target" } th { "Reason" } th.num { "Bytes" } th { "Outcome" } th { "Error" } } }
                tbody { @for i in items["items"].as_array().map(Vec::as_slice).unwrap_or_default() { tr {
                    td { (i["kind"].as_str().unwrap_or_default()) }
                    td { code { (i["target"].as_str().unwrap_or_default()) } }
                    td { (i["reason"].as_str().unwrap_or_default()) }
                    td.num { (i["bytes"].as_i64().map(|b| human_bytes(b.max(0) as u64)).unwrap_or_default()) }
                    td { (i["outcome"].as_str().unwrap_or_default()) }
                    td { (i["error"].as_str().unwrap_or_default()) }
                } } }
            } }
            (pager(&format!("/runs/{id}?{filter_qs}"), items["page"].as_i64().unwrap_or(1), items["per_page"].as_i64().unwrap_or(100), items["total"].as_i64().unwrap_or(0)))
        }
    };
    Ok(page(&format!("Run {}", id.get(..8).unwrap_or(&id)), &who, body))
}

// ---- preview and plan review ---------------------------------------------------------------

#[derive(Deserialize, Default)]
pub struct PreviewQuery {
    command: Option<String>,
}

pub async fn preview(PageWho(who): PageWho, Params(q): Params<PreviewQuery>) -> Result<Response, ApiError> {
    who.require(Role::Operator, "a preview")?;
    let body = html! {
        p { "A preview is a dry run: it decides what a run would delete now and keeps that plan for review. Nothing is deleted until you apply the plan." }
        form id="preview-form" class="card" {
            label for="command" { "Command" }
            select id="command" name="command" {
                @for c in crate::history::COMMANDS { option value=(c) selected[q.command.as_deref() == Some(c)] { (c) } }
            }
            label for="args" { "Arguments (as on the command line)" }
            input id="args" name="args" type="text" placeholder="e.g. --days 30";
            button type="submit" { "Preview" }
        }
    };
    Ok(page("Preview", &who, body))
}

pub async fn plan(
    PageWho(who): PageWho,
    axum::extract::State(app): St,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let p = api::plan_get(
        who.clone(),
        axum::extract::State(app.clone()),
        Path(id.clone()),
        Params(api::PageQuery { page: Some(1), per_page: Some(100) }),
    )
    .await?
    .0;
    let s = &p["summary"];
    let items = s["items"].as_u64().unwrap_or(0);
    let command = p["command"].as_str().unwrap_or_default();
    let body = html! {
        section.card aria-label="Summary" {
            dl {
                dt { "Command" } dd { (command) }
                dt { "Made" } dd { (when_v(&p["created_at"])) " (expires " (when_v(&p["expires_at"])) ")" }
                dt { "To delete" } dd id="plan-items" { (items) " items in " (s["units"]) " units, " (human_bytes(s["bytes"].as_u64().unwrap_or(0))) }
                dt { "Kept" } dd { (s["kept"]) " of " (s["scanned"]) " scanned" }
                dt { "SHA-256" } dd { code id="plan-sha" { (p["sha256"].as_str().unwrap_or_default()) } }
            }
        }
        div.cols {
            section aria-label="By kind" { h2 { "By kind" } table { thead { tr { th { "Kind" } th.num { "Items" } th.num { "Bytes" } } } tbody {
                @for k in s["by_kind"].as_array().map(Vec::as_slice).unwrap_or_default() { tr { td { (k["kind"].as_str().unwrap_or_default()) } td.num { (k["items"]) } td.num { (human_bytes(k["bytes"].as_u64().unwrap_or(0))) } } }
            } } }
            section aria-label="By reason" { h2 { "By reason" } table { thead { tr { th { "Reason" } th.num { "Items" } } } tbody {
                @for k in s["by_reason"].as_array().map(Vec::as_slice).unwrap_or_default() { tr { td { (k["reason"].as_str().unwrap_or_default()) } td.num { (k["items"]) } } }
            } } }
        }
        section aria-label="Largest items" { h2 { "Largest items" } div.scroll { table { thead { tr { th { "Kind" } th { "Target" } th.num { "Bytes" } th { "Reason" } } } tbody {
            @for i in p["largest"].as_array().map(Vec::as_slice).unwrap_or_default() { tr { td { (i["kind"].as_str().unwrap_or_default()) } td { code { (i["target"].as_str().unwrap_or_default()) } } td.num { (human_bytes(i["bytes"].as_u64().unwrap_or(0))) } td { (i["reason"].as_str().unwrap_or_default()) } } }
        } } } }
        section aria-label="Kept" {
            h2 { "Kept, and why" }
            table { thead { tr { th { "Reason" } th.num { "Items" } } } tbody {
                @for k in s["kept_by_reason"].as_array().map(Vec::as_slice).unwrap_or_default() { tr { td { (k["reason"].as_str().unwrap_or_default()) } td.num { (k["items"]) } } }
            } }
            details { summary { "Every kept item (first 200)" } ul.kept {
                @for k in p["kept"].as_array().map(|a| &a[..a.len().min(200)]).unwrap_or_default() { li { code { (k["target"].as_str().unwrap_or_default()) } ": " (k["reason"].as_str().unwrap_or_default()) } }
            } }
        }
        section aria-label="Items" {
            h2 { "Items to delete (first 100)" }
            div.scroll { table { thead { tr { th { "Kind" } th { "Target" } th { "Reason" } th.num { "Bytes" } } } tbody {
                @for i in p["items"].as_array().map(Vec::as_slice).unwrap_or_default() { tr { td { (i["kind"].as_str().unwrap_or_default()) } td { code { (i["target"].as_str().unwrap_or_default()) } } td { (i["reason"].as_str().unwrap_or_default()) } td.num { (i["bytes"].as_u64().map(human_bytes).unwrap_or_default()) } } }
            } } }
            p { "All items: " a href=(format!("/api/plans/{id}")) { "the plan as JSON" } }
        }
        @if who.principal.role >= Role::Admin && items > 0 {
            section.card.apply aria-label="Apply" {
                h2 { "Apply this plan" }
                p { "Deletes exactly these items, each re-checked first: anything that changed since the plan was made is skipped." }
                @if items > app.confirm_over {
                    label for="confirm-text" { "This plan deletes " (items) " items. Type " strong { (command) } " to confirm:" }
                    input id="confirm-text" type="text" autocomplete="off" data-expect=(command);
                }
                button.danger id="apply" data-post=(format!("/api/plans/{id}/apply")) data-sha=(p["sha256"].as_str().unwrap_or_default()) data-then="run" { "Apply this plan" }
            }
        } @else if items == 0 {
            p { "Nothing to delete." }
        }
    };
    Ok(page("Plan review", &who, body))
}

// ---- seed 002: policies, seed 004: worker ----------------------------------------------------

pub async fn policies(PageWho(who): PageWho, axum::extract::State(app): St) -> Result<Response, ApiError> {
    let policies = crate::ops_policies::load(&app.db).await.map_err(ApiError::of_run)?;
    let recent = api::runs_query(
        &app.db,
        &RunsQuery { command: Some("cleanup-ops".into()), per_page: Some(10), ..Default::default() },
    )
    .await?;
    let admin = who.principal.role >= Role::Admin;
    let body = html! {
        section aria-label="Retention policies" {
            h2 { "Retention policies" }
            div.scroll { table {
                thead { tr { th { "Policy" } th { "Pattern" } th { "Description" } th { "Retention (days)" } th { "Enabled" } @if admin { th { "" } } } }
                tbody { @for p in &policies { tr data-policy=(p.data_type) {
                    td { (p.data_type) }
                    td { code { (p.pattern) } }
                    td { (p.description) }
                    td { @if admin { input type="number" min="0" max="36500" name="retention_days" value=(p.retention_days) aria-label=(format!("Retention days for {}", p.data_type)); } @else { (p.retention_days) } }
                    td { @if admin { input type="checkbox" name="enabled" checked[p.enabled] aria-label=(format!("{} enabled", p.data_type)); } @else { (if p.enabled { "yes" } else { "no" }) } }
                    @if admin { td { button.save-policy type="button" { "Save" } } }
                } } }
            } }
        }
        section.card aria-label="Manual cleanup" {
            h2 { "Manual cleanup" }
            @if who.principal.role >= Role::Operator {
                button data-post="/api/cleanup/run" data-body=r#"{"type":"manual","dry_run":true}"# data-then="show" { "Dry Run" }
            }
            @if admin {
                " "
                button.danger data-post="/api/cleanup/run" data-body=r#"{"type":"manual","dry_run":false}"# data-confirm="Run cleanup-ops now? Files past their retention are backed up, then deleted." data-then="show" { "Run Cleanup" }
            }
            pre id="result" {}
        }
        section aria-label="Cleanup history" { h2 { "Cleanup history" } (runs_table(recent["runs"].as_array().map(Vec::as_slice).unwrap_or_default())) p { a href="/runs?command=cleanup-ops" { "All cleanup-ops runs" } } }
    };
    Ok(page("Pipeline cleanup", &who, body))
}

pub async fn worker(PageWho(who): PageWho, axum::extract::State(app): St) -> Result<Response, ApiError> {
    let s = api::worker_status(who.clone(), axum::extract::State(app.clone())).await?.0;
    let admin = who.principal.role >= Role::Admin;
    let toggle_on = s["dry_run"]["toggle"]["value"] == "true";
    let body = html! {
        section.card aria-label="Status" {
            dl {
                dt { "Last run" } dd { @if s["last_run"].is_null() { "never" } @else { a href=(format!("/runs/{}", s["last_run"]["run_id"].as_str().unwrap_or_default())) { (when_v(&s["last_run"]["started_at"])) } " " (status_badge(s["last_run"]["status"].as_str().unwrap_or_default())) } }
                dt { "Last success" } dd { (when_v(&s["last_success"])) }
                @for (task, kinds) in s["deleted_24h_by_task"].as_object().into_iter().flatten() {
                    dt { "Deleted in 24 h: " (task) } dd { @for (k, n) in kinds.as_object().into_iter().flatten() { (n) " " (k) " " } }
                }
                dt { "Dry run" } dd id="dry-run-state" {
                    @if s["dry_run"]["effective"].as_bool() == Some(true) { "ON: nothing is deleted" } @else { "off" }
                    @if toggle_on { " (dashboard toggle, set by " (s["dry_run"]["toggle"]["updated_by"].as_str().unwrap_or_default().trim_start_matches("token:")) " at " (when_v(&s["dry_run"]["toggle"]["updated_at"])) ")" }
                    @if s["dry_run"]["env"].as_bool() == Some(true) { " (CLEANUP_DRY_RUN)" }
                    @if s["dry_run"]["cleanup_enabled"].as_bool() == Some(false) { " (CLEANUP_ENABLED=false)" }
                }
            }
            @if admin {
                button id="dry-run-toggle" data-post="/api/worker/dry-run" data-body=(format!("{{\"enabled\":{}}}", !toggle_on)) data-then="reload" aria-pressed=(toggle_on.to_string()) {
                    @if toggle_on { "Turn dry-run off" } @else { "Turn dry-run on" }
                }
                " "
                button.danger data-post="/api/worker/run" data-body="{}" data-confirm="Run a cleanup cycle now?" data-then="run" { "Run Cleanup Now" }
            } @else if who.principal.role >= Role::Operator {
                button data-post="/api/worker/run" data-body=r#"{"dry_run":true}"# data-then="run" { "Dry run now" }
            }
        }
        section aria-label="Configuration" {
            h2 { "Configuration" }
            div.scroll { table { thead { tr { th { "Setting" } th { "Value" } th { "From" } } } tbody {
                @for (k, v) in s["config"].as_object().into_iter().flatten() { tr { td { code { (k) } } td { (v["value"].as_str().unwrap_or_default()) } td { (v["source"].as_str().unwrap_or_default()) } } }
            } } }
        }
        section aria-label="Recent cleanup events" {
            h2 { "Recent cleanup runs" }
            (runs_table(s["recent_runs"]["runs"].as_array().map(Vec::as_slice).unwrap_or_default()))
            p { a href="/runs?command=worker-once" { "All worker runs" } }
        }
    };
    Ok(page("Cleanup worker", &who, body))
}

// ---- static ----------------------------------------------------------------------------------

pub async fn script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("app.js")).into_response()
}

pub async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("app.css")).into_response()
}
