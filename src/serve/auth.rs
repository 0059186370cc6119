//! Who is asking, and may they: a bearer token (`Authorization: Bearer swp_…`) or a browser
//! session signed in with one (an HttpOnly, SameSite=Strict cookie); roles; CSRF and
//! same-origin checks on every state-changing browser request; rate limits on sign-in and on
//! everything that starts work (429 with `Retry-After`).
//!
//! A token is checked against its row on every request (a revoked token stops at once, in
//! every process); the argon2 verification is remembered per token and hash, so it is paid
//! once, not per request.

use super::{ApiError, State};
use crate::token::{self, random_hex, Principal, Role};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The session cookie's name.
pub const COOKIE: &str = "sweep_session";
/// A browser session lasts this long (then sign in again).
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

type Limiter<K> = RateLimiter<K, governor::state::keyed::DefaultKeyedStateStore<K>, DefaultClock>;

/// A signed-in browser.
#[derive(Clone)]
struct Session {
    principal: Principal,
    token_id: String,
    csrf: String,
    expires: Instant,
}

pub struct Auth {
    sessions: Mutex<HashMap<String, Session>>,
    /// SHA-256 of a token → the argon2 hash it was verified against.
    verified: Mutex<HashMap<[u8; 32], String>>,
    /// When each token's `last_used_at` was last written.
    touched: Mutex<HashMap<String, Instant>>,
    sign_in: Limiter<String>,
    work: Limiter<String>,
}

impl Auth {
    pub fn new(sign_in_per_minute: u32, work_per_minute: u32) -> Auth {
        let q = |n: u32| Quota::per_minute(NonZeroU32::new(n.max(1)).expect("at least 1"));
        Auth {
            sessions: Mutex::default(),
            verified: Mutex::default(),
            touched: Mutex::default(),
            sign_in: RateLimiter::keyed(q(sign_in_per_minute)),
            work: RateLimiter::keyed(q(work_per_minute)),
        }
    }

    /// A sign-in attempt from `addr`: 429 past the limit.
    pub fn limit_sign_in(&self, addr: &str) -> Result<(), ApiError> {
        // Addresses that came and went are forgotten once their allowance is full again.
        if self.sign_in.len() > 10_000 {
            self.sign_in.retain_recent();
        }
        check(&self.sign_in, addr.to_string(), "sign-in attempts")
    }

    /// A request that starts work (a run, a plan, an apply) by `who`: 429 past the limit.
    pub fn limit_work(&self, who: &Principal) -> Result<(), ApiError> {
        check(&self.work, who.name.clone(), "requests that start work")
    }

    /// Start a session for `p` (signed in with the token whose id is `token_id`); returns the
    /// session id (the cookie's value).
    pub fn open_session(&self, p: Principal, token_id: &str) -> String {
        let id = random_hex(32);
        let s = Session {
            principal: p,
            token_id: token_id.to_string(),
            csrf: random_hex(32),
            expires: Instant::now() + SESSION_TTL,
        };
        let mut all = self.sessions.lock().expect("sessions");
        all.retain(|_, s| s.expires > Instant::now());
        all.insert(id.clone(), s);
        id
    }

    pub fn close_session(&self, id: &str) {
        self.sessions.lock().expect("sessions").remove(id);
    }

    /// The CSRF token of a live session.
    pub fn session_csrf(&self, id: &str) -> Option<String> {
        self.session(id).map(|s| s.csrf)
    }

    fn session(&self, id: &str) -> Option<Session> {
        let all = self.sessions.lock().expect("sessions");
        all.get(id).filter(|s| s.expires > Instant::now()).cloned()
    }
}

fn check(l: &Limiter<String>, key: String, what: &str) -> Result<(), ApiError> {
    l.check_key(&key).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now()).as_secs().max(1);
        let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, format!("too many {what}: retry in {wait} s"));
        e.retry_after = Some(wait);
        e
    })
}

/// Check a token: its row must be live and its secret must match the row's hash.
pub async fn verify_token(app: &State, token: &str) -> Result<Option<(Principal, String)>, ApiError> {
    let Some((id, secret)) = token::split(token) else { return Ok(None) };
    let Some((name, role, hash)) = token::lookup(&app.db, id).await.map_err(ApiError::internal)? else {
        return Ok(None);
    };
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let known = app.auth.verified.lock().expect("verified").get(&digest).is_some_and(|h| *h == hash);
    if !known {
        let (s, h) = (secret.to_string(), hash.clone());
        // argon2 is slow on purpose: off the async threads.
        let ok = tokio::task::spawn_blocking(move || token::verify_secret(&s, &h)).await.unwrap_or(false);
        if !ok {
            return Ok(None);
        }
        app.auth.verified.lock().expect("verified").insert(digest, hash);
    }
    let due = {
        let mut t = app.auth.touched.lock().expect("touched");
        let due = t.get(&name).is_none_or(|at| at.elapsed() > Duration::from_secs(60));
        if due {
            t.insert(name.clone(), Instant::now());
        }
        due
    };
    if due {
        if let Err(e) = token::touch(&app.db, &name, chrono::Utc::now()).await {
            tracing::warn!(target: "cleanup", "cannot note the use of token {name:?}: {e:#}");
        }
    }
    Ok(Some((Principal { name, role }, id.to_string())))
}

/// An authenticated caller of the JSON API.
#[derive(Debug, Clone)]
pub struct Who {
    pub principal: Principal,
    /// The session's CSRF token, when the caller is a browser session.
    pub csrf: Option<String>,
}

impl Who {
    /// 403 unless the caller has at least `role`.
    pub fn require(&self, role: Role, what: &str) -> Result<(), ApiError> {
        if self.principal.role >= role {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{what} needs the {} role; token {:?} is {}",
                role.name(),
                self.principal.name,
                self.principal.role.name()
            ),
        ))
    }

    /// 403 unless the caller may start this run: operator for a dry run, admin for a real one.
    pub fn require_run(&self, dry_run: bool) -> Result<(), ApiError> {
        if dry_run {
            self.require(Role::Operator, "a dry run")
        } else {
            self.require(Role::Admin, "a real run")
        }
    }

    /// The name the audit records for this caller.
    pub fn actor(&self) -> String {
        format!("token:{}", self.principal.name)
    }
}

/// The session cookie's value, if any.
pub fn session_cookie(parts: &Parts) -> Option<String> {
    parts.headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|v| {
        v.split(';')
            .map(str::trim)
            .find_map(|kv| kv.strip_prefix(COOKIE).and_then(|r| r.strip_prefix('=')).map(String::from))
    })
}

/// True when the request comes from a page of this server (`Origin`, else `Referer`, names
/// the `Host` it was sent to).
pub fn same_origin(parts: &Parts) -> bool {
    let host = parts.headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let from = parts
        .headers
        .get(header::ORIGIN)
        .or_else(|| parts.headers.get(header::REFERER))
        .and_then(|h| h.to_str().ok())
        .and_then(|o| url::Url::parse(o).ok());
    match (host, from) {
        (Some(host), Some(u)) => {
            let origin_host = match (u.host_str(), u.port()) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (Some(h), None) => h.to_string(),
                _ => return false,
            };
            origin_host.eq_ignore_ascii_case(host)
        }
        _ => false,
    }
}

async fn authenticate(parts: &Parts, app: &State) -> Result<Who, ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m.to_string());
    if let Some(h) = parts.headers.get(header::AUTHORIZATION) {
        let t = h.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim).unwrap_or("");
        return match verify_token(app, t).await? {
            Some((principal, _)) => Ok(Who { principal, csrf: None }),
            None => Err(unauthorized(
                "the bearer token is not valid (unknown, revoked or mistyped): create one with `sweep token create`",
            )),
        };
    }
    let Some(sid) = session_cookie(parts) else {
        return Err(unauthorized(
            "authentication required: send `Authorization: Bearer <token>` (create one with `sweep token create --name NAME --role viewer|operator|admin`) or sign in at /login",
        ));
    };
    let Some(s) = app.auth.session(&sid) else {
        return Err(unauthorized("the session has ended: sign in again at /login"));
    };
    // The token behind the session must still be live.
    match token::lookup(&app.db, &s.token_id).await.map_err(ApiError::internal)? {
        Some((name, role, _)) if name == s.principal.name => {
            let principal = Principal { name, role };
            let who = Who { principal, csrf: Some(s.csrf.clone()) };
            if !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
                if !same_origin(parts) {
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "cross-origin request refused: the Origin header does not name this server",
                    ));
                }
                let sent = parts.headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
                if sent != Some(s.csrf.as_str()) {
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "missing or wrong CSRF token (X-CSRF-Token): reload the page",
                    ));
                }
            }
            Ok(who)
        }
        _ => {
            app.auth.close_session(&sid);
            Err(unauthorized("the token this session signed in with was revoked: sign in again"))
        }
    }
}

impl FromRequestParts<State> for Who {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &State) -> Result<Who, ApiError> {
        authenticate(parts, app).await
    }
}

/// An authenticated browser on a page: without a session, a redirect to the sign-in page.
pub struct PageWho(pub Who);

pub enum PageDenied {
    SignIn,
    Error(ApiError),
}

impl IntoResponse for PageDenied {
    fn into_response(self) -> Response {
        match self {
            PageDenied::SignIn => Redirect::to("/login").into_response(),
            PageDenied::Error(e) => e.into_response(),
        }
    }
}

impl FromRequestParts<State> for PageWho {
    type Rejection = PageDenied;

    async fn from_request_parts(parts: &mut Parts, app: &State) -> Result<PageWho, PageDenied> {
        match authenticate(parts, app).await {
            Ok(w) => Ok(PageWho(w)),
            Err(e) if e.status == StatusCode::UNAUTHORIZED => Err(PageDenied::SignIn),
            Err(e) => Err(PageDenied::Error(e)),
        }
    }
}
