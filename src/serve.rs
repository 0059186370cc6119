//! `sweep serve`: the seeds' REST APIs and dashboards (002, 003, 004), the runs and plans API,
//! `/metrics`, and the `[[schedule]]` loop, over the run API: a run started here is the CLI's
//! run (the same lock, policy, executor, caps, audit, backups), started by a token's owner.
//!
//! Layout: `auth` (tokens, sessions, CSRF, rate limits), `runs` (runs this process started:
//! their events, cancel, reports of its dry runs), `api` (JSON routes), `pages` (server-rendered
//! HTML), `openapi` (the document at `/api/openapi.json`).

pub mod api;
pub mod auth;
pub mod openapi;
pub mod pages;
pub mod runs;

use crate::cli::ServeArgs;
use crate::db::Db;
use crate::exit_codes::{Exit, Fatal};
use crate::run::Ctx;
use anyhow::{Context, Result};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Everything a request handler needs.
pub struct App {
    /// The server's own settings; each run derives its own from them.
    pub base: Arc<Ctx>,
    pub db: Arc<Db>,
    pub runs: runs::Registry,
    pub auth: auth::Auth,
    pub plan_dir: PathBuf,
    pub max_plan_age: chrono::Duration,
    /// Cookies get `Secure` when the server speaks TLS.
    pub tls: bool,
    /// Plans with more items than this need a typed confirmation in the browser.
    pub confirm_over: u64,
}

pub type State = Arc<App>;

/// A JSON error: `{"error": message}` with a status (and `Retry-After` on 429).
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), retry_after: None }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn unprocessable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
    /// A failure of the server's side (the database went away): logged in full, answered in
    /// short.
    pub fn internal(e: anyhow::Error) -> ApiError {
        tracing::error!(target: "cleanup", "serve: {e:#}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
    }
    /// What a run's error means for its caller: 409 when the lock is held, 422 when the run
    /// cannot start as configured, 500 for the rest.
    pub fn of_run(e: anyhow::Error) -> ApiError {
        match crate::exit_codes::exit_for(&e) {
            Exit::Locked => ApiError::new(StatusCode::CONFLICT, format!("{e:#}")),
            Exit::Usage | Exit::Guard => ApiError::unprocessable(format!("{e:#}")),
            _ => ApiError::internal(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(serde_json::json!({ "error": self.message }))).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        ApiError::internal(e)
    }
}

/// The largest request body accepted (plans are made server-side; bodies are small).
pub const MAX_BODY: usize = 64 * 1024;

/// Headers on every answer (unless a handler set its own): no sniffing, no framing, nothing
/// from elsewhere, nothing cached.
const SECURITY_HEADERS: [(header::HeaderName, &str); 4] = [
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
    ),
    (header::CACHE_CONTROL, "no-store"),
];

/// Every route.
pub fn router(app: State) -> Router {
    use axum::routing::{get, post};
    let api = Router::new()
        .route("/api/openapi.json", get(api::openapi))
        .route("/api/status", get(api::status))
        .route("/api/cleanup/stats", get(api::cleanup_stats))
        .route("/api/cleanup/policies", get(api::policies_get).post(api::policies_post))
        .route("/api/cleanup/run", post(api::cleanup_run))
        .route("/api/cleanup/files", get(api::cleanup_files))
        .route("/api/cleanup/bulk/", post(api::bulk))
        .route("/api/cleanup/bulk", post(api::bulk))
        .route("/api/worker/status", get(api::worker_status))
        .route("/api/worker/run", post(api::worker_run))
        .route("/api/worker/dry-run", get(api::worker_dry_run_get).post(api::worker_dry_run_post))
        .route("/api/runs", get(api::runs_list).post(api::runs_start))
        .route("/api/runs/{id}", get(api::run_get))
        .route("/api/runs/{id}/items", get(api::run_items))
        .route("/api/runs/{id}/events", get(api::run_events))
        .route("/api/runs/{id}/cancel", post(api::run_cancel))
        .route("/api/plans", post(api::plans_create))
        .route("/api/plans/{id}", get(api::plan_get))
        .route("/api/plans/{id}/apply", post(api::plan_apply))
        .route("/api/schedules", get(api::schedules))
        .route("/api/actions", get(api::actions))
        .route("/metrics", get(api::metrics))
        .fallback(api::not_found);
    let pages = Router::new()
        .route("/", get(pages::dashboard))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/runs", get(pages::runs))
        .route("/runs/{id}", get(pages::run))
        .route("/preview", get(pages::preview))
        .route("/plans/{id}", get(pages::plan))
        .route("/policies", get(pages::policies))
        .route("/worker", get(pages::worker))
        .route("/static/app.js", get(pages::script))
        .route("/static/app.css", get(pages::style));
    let mut router = Router::new()
        .route("/healthz", get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }))
        .merge(pages)
        .merge(api)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY));
    for (name, value) in SECURITY_HEADERS {
        router = router.layer(tower_http::set_header::SetResponseHeaderLayer::if_not_present(
            name,
            HeaderValue::from_static(value),
        ));
    }
    router.with_state(app)
}

/// The address to listen on, checked: a non-loopback address needs TLS or `--insecure-listen`.
fn listen_addr(ctx: &Ctx, a: &ServeArgs, tls: bool) -> Result<SocketAddr> {
    let text =
        a.listen.clone().or_else(|| ctx.settings.raw.serve.listen.clone()).unwrap_or_else(|| "127.0.0.1:8080".into());
    let addr: SocketAddr = text.parse().map_err(|_| {
        Fatal::usage(format!("--listen {text:?} is not an address: use IP:PORT, e.g. 127.0.0.1:8080 or [::1]:8080"))
    })?;
    if !addr.ip().is_loopback() {
        if !tls && !a.insecure_listen {
            return Err(Fatal::usage(format!(
                "--listen {addr} is not a loopback address: tokens and cookies would cross the network in clear. Pass --tls-cert and --tls-key, or --insecure-listen behind a TLS-terminating proxy"
            ))
            .into());
        }
        if !tls {
            tracing::warn!(target: "cleanup", "listening on {addr} WITHOUT TLS (--insecure-listen): put a TLS-terminating proxy in front");
        }
    }
    Ok(addr)
}

pub async fn run(ctx: Ctx, a: ServeArgs) -> Result<Exit> {
    let raw = ctx.settings.raw.serve.clone();
    let cert = a.tls_cert.clone().or(raw.tls_cert.clone());
    let key = a.tls_key.clone().or(raw.tls_key.clone());
    let tls = match (&cert, &key) {
        (Some(c), Some(k)) => Some(tls_config(c, k)?),
        (None, None) => None,
        _ => return Err(Fatal::usage("TLS needs both a certificate and a key (--tls-cert and --tls-key)").into()),
    };
    let addr = listen_addr(&ctx, &a, tls.is_some())?;
    let max_plan_age = match (a.max_plan_age, &raw.max_plan_age) {
        (Some(d), _) => d,
        (None, Some(s)) => crate::cli::parse_age(s).map_err(|e| Fatal::usage(format!("[serve] max_plan_age: {e}")))?,
        (None, None) => chrono::Duration::hours(24),
    };
    let plan_dir = a.plan_dir.clone().or(raw.plan_dir.clone()).unwrap_or_else(|| PathBuf::from("sweep-plans"));
    std::fs::create_dir_all(&plan_dir)
        .with_context(|| format!("cannot create the plan directory {}", plan_dir.display()))?;
    let plan_dir = std::fs::canonicalize(&plan_dir)?;
    let db = ctx.connect().await?;
    if !db.sweep_tables_ready().await? {
        return Err(Fatal::usage(format!(
            "sweep's tables are missing or out of date in {}: run `sweep migrate` first (serve keeps its tokens there)",
            db.url
        ))
        .into());
    }
    let auth = auth::Auth::new(raw.sign_in_per_minute.unwrap_or(10), raw.work_per_minute.unwrap_or(30));
    let base = Arc::new(ctx);
    let app = Arc::new(App {
        base: base.clone(),
        db,
        runs: runs::Registry::default(),
        auth,
        plan_dir,
        max_plan_age,
        tls: tls.is_some(),
        confirm_over: raw.confirm_over.unwrap_or(100),
    });
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    // The address on stdout, alone, for scripts and tests that pass port 0.
    println!("listening on {scheme}://{local}");
    tracing::info!(target: "cleanup", "sweep serve listening on {scheme}://{local}");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let scheduler = if a.no_schedules || base.schedules.is_empty() {
        None
    } else {
        Some(tokio::spawn(runs::schedule_loop(app.clone(), stop_rx.clone())))
    };
    let shutdown = {
        let app = app.clone();
        async move {
            wait_for_signal().await;
            tracing::info!(target: "cleanup", "stopping: running cleanups finish their batch and are recorded");
            let _ = stop_tx.send(true);
            app.runs.cancel_all();
        }
    };
    let router = router(app.clone());
    match tls {
        Some(cfg) => serve_tls(listener, router, cfg, shutdown).await?,
        None => {
            axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(shutdown)
                .await?
        }
    }
    app.runs.wait_all(std::time::Duration::from_secs(600)).await;
    if let Some(s) = scheduler {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(600), s).await;
    }
    Ok(Exit::Success)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The certificate chain and key, read and checked before the server listens.
fn tls_config(cert: &std::path::Path, key: &std::path::Path) -> Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| Fatal::usage(format!("--tls-cert {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(Fatal::usage(format!("--tls-cert {}: no certificate in the file", cert.display())).into());
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| Fatal::usage(format!("--tls-key {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Fatal::usage(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Fatal::usage(format!("--tls-cert/--tls-key do not make a certificate and its key: {e}")))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Serve over TLS: accept, hand-shake, and serve each connection with hyper until shutdown.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    router: Router,
    cfg: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tower::Service;
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    let mut make = router.into_make_service_with_connect_info::<SocketAddr>();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r { Ok(p) => p, Err(e) => { tracing::warn!(target: "cleanup", "accept: {e}"); continue } },
            _ = &mut shutdown => return Ok(()),
        };
        let svc = make.call(peer).await.expect("infallible");
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            let svc = hyper::service::service_fn(move |req| svc.clone().call(req));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}
