//! The OpenAPI 3.1 document at `/api/openapi.json`, built from one table of the API's routes
//! (a test checks the table against the router, both ways).

use serde_json::{json, Map, Value};

/// One operation: method, path, the least role it needs (`none` for /healthz), summary, and
/// its request body's fields (name, JSON type, description) if it takes one.
pub struct Op {
    pub method: &'static str,
    pub path: &'static str,
    pub role: &'static str,
    pub summary: &'static str,
    pub body: &'static [(&'static str, &'static str, &'static str)],
    pub query: &'static [(&'static str, &'static str)],
}

const RUN_BODY: &[(&str, &str, &str)] = &[
    ("command", "string", "a command of sweep: cleanup-attachments, prune-modules, cleanup-ui-files, cleanup-ops, bulk-cloudcube, worker-once"),
    ("args", "array", "its arguments as on the command line, e.g. [\"--days\", \"30\"]"),
    ("dry_run", "boolean", "decide and report, change nothing (operator); false needs admin"),
];
const PAGE: &[(&str, &str)] = &[("page", "page number, from 1"), ("per_page", "items per page, 1 to 1000")];

pub const OPS: &[Op] = &[
    Op { method: "get", path: "/healthz", role: "none", summary: "Liveness: {\"status\": \"ok\"}", body: &[], query: &[] },
    Op { method: "get", path: "/api/openapi.json", role: "viewer", summary: "This document", body: &[], query: &[] },
    Op { method: "get", path: "/api/status", role: "viewer", summary: "Per command: last run, last success, reclaimed in 24 h and 30 d, schedules", body: &[], query: &[] },
    Op { method: "get", path: "/api/cleanup/stats", role: "viewer", summary: "Seed 002: files to clean now, space saved, last cleanup, history", body: &[], query: &[] },
    Op { method: "get", path: "/api/cleanup/policies", role: "viewer", summary: "Seed 002: the retention policies", body: &[], query: &[] },
    Op {
        method: "post",
        path: "/api/cleanup/policies",
        role: "admin",
        summary: "Seed 002: change one retention policy (audited with the token's name)",
        body: &[("data_type", "string", "the policy, e.g. pipeline_operations"), ("retention_days", "integer", "0 to 36500"), ("enabled", "boolean", "enable or disable")],
        query: &[],
    },
    Op {
        method: "post",
        path: "/api/cleanup/run",
        role: "operator",
        summary: "Seed 002: run cleanup-ops and answer with its report (dry_run: operator; real: admin)",
        body: &[("type", "string", "automatic, manual (default) or emergency"), ("dry_run", "boolean", "default false")],
        query: &[],
    },
    Op { method: "get", path: "/api/cleanup/files", role: "viewer", summary: "Seed 002: every operation file, what a run would do to it now, and why", body: &[], query: &[] },
    Op {
        method: "post",
        path: "/api/cleanup/bulk/",
        role: "operator",
        summary: "Seed 003: bulk Cloudcube cleanup; answers success, message, deleted_count, deleted_size_mb, retained_count, total_files_scanned, dry_run, deleted_files_sample, retention_days (dry_run: operator; real: admin)",
        body: &[("retention_days", "integer", "days to keep completed clips, default 5"), ("dry_run", "boolean", "default false")],
        query: &[],
    },
    Op { method: "get", path: "/api/worker/status", role: "viewer", summary: "Seed 004: last run and status, deleted in 24 h by task, configuration and dry-run", body: &[], query: &[] },
    Op {
        method: "post",
        path: "/api/worker/run",
        role: "operator",
        summary: "Seed 004: Run Cleanup Now (202 with the run id; dry_run: operator; real: admin)",
        body: &[("tasks", "array", "tmp, previews, objects, logs, repos (default all)"), ("dry_run", "boolean", "default false")],
        query: &[],
    },
    Op { method: "get", path: "/api/worker/dry-run", role: "viewer", summary: "Seed 004: the dry-run toggle", body: &[], query: &[] },
    Op { method: "post", path: "/api/worker/dry-run", role: "admin", summary: "Seed 004: set the dry-run toggle that worker-once respects", body: &[("enabled", "boolean", "true: worker-once runs dry")], query: &[] },
    Op {
        method: "get",
        path: "/api/runs",
        role: "viewer",
        summary: "Runs, newest first",
        body: &[],
        query: &[("command", "only this command"), ("status", "only this status"), ("page", "page number, from 1"), ("per_page", "runs per page, 1 to 1000")],
    },
    Op { method: "post", path: "/api/runs", role: "operator", summary: "Start a run (202 with its id; 409 if its lock is held; dry_run: operator; real: admin)", body: RUN_BODY, query: &[] },
    Op { method: "get", path: "/api/runs/{id}", role: "viewer", summary: "A run: its record and report", body: &[], query: &[] },
    Op {
        method: "get",
        path: "/api/runs/{id}/items",
        role: "viewer",
        summary: "A run's per-item ledger",
        body: &[],
        query: &[("outcome", "deleted, would_delete, failed, missing, skipped"), ("kind", "row, file, dir, object"), ("q", "a substring of the target"), ("page", "page number, from 1"), ("per_page", "items per page, 1 to 1000"), ("format", "json (default) or csv (every matching item)")],
    },
    Op { method: "get", path: "/api/runs/{id}/events", role: "viewer", summary: "Live progress (Server-Sent Events)", body: &[], query: &[] },
    Op { method: "post", path: "/api/runs/{id}/cancel", role: "admin", summary: "Stop a run between batches; it ends partial", body: &[], query: &[] },
    Op {
        method: "post",
        path: "/api/plans",
        role: "operator",
        summary: "Make a plan (a dry run whose plan is kept under an id and a SHA-256)",
        body: &[("command", "string", "the command"), ("args", "array", "its arguments")],
        query: &[],
    },
    Op { method: "get", path: "/api/plans/{id}", role: "viewer", summary: "A plan: counts by kind and reason, largest items, every item (paged), what is kept and why", body: &[], query: PAGE },
    Op {
        method: "post",
        path: "/api/plans/{id}/apply",
        role: "admin",
        summary: "Carry out exactly the reviewed plan (refused, 409, if changed or older than --max-plan-age)",
        body: &[("sha256", "string", "the SHA-256 the plan was reviewed with")],
        query: &[],
    },
    Op { method: "get", path: "/api/schedules", role: "viewer", summary: "Each [[schedule]]: last run, status, next run, overdue", body: &[], query: &[] },
    Op { method: "get", path: "/api/actions", role: "viewer", summary: "Who did what through the web", body: &[], query: PAGE },
    Op { method: "get", path: "/metrics", role: "viewer", summary: "Prometheus text: every command's last run and last success, seed 004's metrics", body: &[], query: &[] },
];

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for op in OPS {
        let mut o = json!({
            "summary": op.summary,
            "x-sweep-role": op.role,
            "responses": {
                "200": {"description": "OK"},
                "400": {"description": "malformed request", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "401": {"description": "no valid token or session"},
                "403": {"description": "the token's role is too weak, or a browser request without CSRF token or from another origin"},
                "404": {"description": "no such thing"},
                "409": {"description": "the command's lock is held, or the plan changed or is too old"},
                "413": {"description": "body too large"},
                "422": {"description": "well-formed but invalid (unknown command, bad retention, …)"},
                "429": {"description": "rate limit: see Retry-After"},
            },
        });
        if op.role == "none" {
            o["security"] = json!([]);
        }
        let mut params: Vec<Value> = op
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        params.extend(op.query.iter().map(|(n, d)| json!({"name": n, "in": "query", "required": false, "description": d, "schema": {"type": "string"}})));
        if !params.is_empty() {
            o["parameters"] = Value::Array(params);
        }
        if !op.body.is_empty() {
            let props: Map<String, Value> =
                op.body.iter().map(|(n, t, d)| (n.to_string(), json!({"type": t, "description": d}))).collect();
            o["requestBody"] = json!({"required": false, "content": {"application/json": {"schema": {"type": "object", "properties": props, "additionalProperties": false}}}});
        }
        let entry = paths.entry(op.path.to_string()).or_insert_with(|| json!({}));
        entry[op.method] = o;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "sweep serve",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The seeds' cleanup APIs (002, 003, 004) and sweep's runs and plans. Authenticate with `Authorization: Bearer <token>` (sweep token create). Roles: viewer reads; operator also previews; admin also runs, applies and edits.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    })
}
