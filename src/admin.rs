//! The admin HTTP API: status, operator overrides, external health input.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/`, `/ui` | the live status page, see [`ui`] (never needs the token) |
//! | GET | `/health` | the server's own liveness (never needs the token) |
//! | GET | `/status` | every zone, datacenter, target and service, as JSON |
//! | GET | `/cluster` | `[cluster]`: the instances, what each sees, config generations |
//! | GET | `/explain?name=N&type=T&client=IP[/LEN]` | the routing decision for a client, step by step |
//! | POST | `/datacenters/{zone}/{dc}/drain` | never answer with `dc` (optional body `{"by": "who"}`) |
//! | POST | `/datacenters/{zone}/{dc}/undrain` | clear any override |
//! | POST | `/datacenters/{zone}/{dc}/force-up` | answer with `dc` whatever probes say |
//! | PUT | `/targets/{zone}/{dc}/{target}` | body `{"state": "up"}` or `"down"` |
//! | POST | `/latency/import` | RUM measurements collected elsewhere, see [`crate::latency::beacon`] |
//!
//! With a token configured, every request but `/health` and the status
//! page's files needs `Authorization: Bearer TOKEN`. A request with an
//! `Origin` header other than the API's own (`http://` + its `Host`) is
//! refused: another web page is at work in the operator's browser.
//!
//! # The listener
//!
//! The API shares the process's file descriptors with the probes and the
//! DNS listeners, so a crowd of idle clients here must not be able to make
//! probes fail (and a healthy datacenter fail over). [`serve`] runs its own
//! accept loop over hyper instead of `axum::serve`, which has no limits:
//!
//! * at most `max_connections` connections; one more is answered `503`
//!   (when the socket takes it at once) and closed on accept;
//! * a connection must send a complete request head within
//!   `header_timeout` of connecting, or of the first byte of a later
//!   request; it may then take `request_timeout` for the body and the
//!   answer, and sit idle `idle_timeout` between requests;
//! * heads are limited to [`MAX_HEAD_BYTES`] and bodies to
//!   [`MAX_BODY_BYTES`] (`413`), [`MAX_IMPORT_BODY_BYTES`] for
//!   `/latency/import`.
//!
//! Every response the router makes is JSON, errors included, but the
//! status page's files.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::AdminConfig;
use crate::health::Override;
use crate::health::monitor::{ActionError, Monitor};
use crate::latency::beacon::{self, Import};

mod ui;

/// Largest request body (only `PUT /targets/...` reads one, a few bytes
/// long); larger ones get `413 Payload Too Large`.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Largest body of `POST /latency/import`: about 13,000 measurements.
pub const MAX_IMPORT_BODY_BYTES: usize = 1024 * 1024;
/// The import endpoint's path (its body limit differs).
const IMPORT_PATH: &str = "/latency/import";
/// Largest request head (request line and headers); larger ones get
/// hyper's `431` and the connection is closed.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

#[derive(Clone)]
struct AppState {
    monitor: Monitor,
    token: Option<Arc<str>>,
    import: Option<Import>,
}

/// `{"error": MESSAGE}` with `status`.
pub(crate) fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

fn action_result(r: Result<Option<String>, ActionError>) -> Response {
    match r {
        Ok(None) => Json(json!({ "ok": true })).into_response(),
        Ok(Some(warning)) => {
            Json(json!({ "ok": true, "persisted": false, "warning": warning })).into_response()
        }
        Err(e @ ActionError::NotFound(_)) => error(StatusCode::NOT_FOUND, e),
        Err(e @ ActionError::Invalid(_)) => error(StatusCode::BAD_REQUEST, e),
        Err(e @ ActionError::Storage(_)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e @ ActionError::Unavailable(_)) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// Headers that must appear at most once. Two `Host` headers let a proxy
/// and this server disagree on which site was asked for (the rebinding
/// check reads one); two `Authorization` headers, which token was given.
const SINGLE_HEADERS: [header::HeaderName; 2] = [header::HOST, header::AUTHORIZATION];

/// Refuses what no endpoint should see, before routing: repeated
/// single-value headers and declared bodies over [`MAX_BODY_BYTES`] (or
/// [`MAX_IMPORT_BODY_BYTES`] for the import).
async fn check_request(request: Request, next: Next) -> Response {
    let headers = request.headers();
    for name in &SINGLE_HEADERS {
        if headers.get_all(name).iter().nth(1).is_some() {
            return error(
                StatusCode::BAD_REQUEST,
                format!("more than one {name} header: send exactly one"),
            );
        }
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit = body_limit(request.uri().path());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large(limit);
    }
    next.run(request).await
}

fn body_limit(path: &str) -> usize {
    if path == IMPORT_PATH {
        MAX_IMPORT_BODY_BYTES
    } else {
        MAX_BODY_BYTES
    }
}

fn too_large(limit: usize) -> Response {
    error(StatusCode::PAYLOAD_TOO_LARGE, too_large_text(limit))
}

fn too_large_text(limit: usize) -> String {
    format!("request body over {limit} bytes")
}

/// Makes every error response JSON: axum's own rejections (405 without a
/// body, a path that does not decode as text/plain) get
/// `{"error": REASON}` with their status kept.
pub(crate) async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json || response.status().is_success() {
        return response;
    }
    let status = response.status();
    let allow = response.headers().get(header::ALLOW).cloned();
    // axum's rejections carry a short plain-text reason: keep it.
    let text = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .ok()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .filter(|t| !t.trim().is_empty());
    let reason = text.unwrap_or_else(|| {
        status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
    });
    let mut fixed = error(status, reason.trim());
    if let Some(allow) = allow {
        fixed.headers_mut().insert(header::ALLOW, allow);
    }
    fixed
}

/// Equal-time comparison, so the token cannot be guessed byte by byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a Host header names this machine by address or as localhost.
fn local_host(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        // "[::1]:5380", "127.0.0.1:5380", "localhost:5380"
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// Whether `origin` (an `Origin` header) is this API's own origin: the
/// page it serves at `/`, asking for `http://` (or `https://`, behind a
/// TLS proxy that keeps the Host header) at exactly the `Host` it sent.
/// Browsers leave the default port out of both, so the comparison is
/// plain text; `null` (sandboxed frames, `file:` pages) never matches.
fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host else {
        return false;
    };
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    authority.is_some_and(|a| !a.is_empty() && a.eq_ignore_ascii_case(host))
}

async fn auth(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    // Browsers send Origin on every cross-site request that could change
    // something (a form POST needs no CORS preflight), so an Origin other
    // than our own is another site at work in the operator's browser:
    // refused, with or without a token. The status page's own requests
    // carry our origin and pass.
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = String::from_utf8_lossy(origin.as_bytes());
        if !same_origin(&origin, host) {
            return error(
                StatusCode::FORBIDDEN,
                format!(
                    "requests from other web pages are refused: Origin {origin:?} \
                     is not this API's own origin (http://HOST with HOST the Host header)"
                ),
            );
        }
    }
    if app.token.is_none() {
        // Without a token, DNS rebinding could let a page read /status
        // from a name it controls that resolves here: its requests are
        // same-origin for the browser, but Host carries that name.
        if host.is_some_and(|h| !local_host(h)) {
            return error(
                StatusCode::FORBIDDEN,
                "Host must be an IP address or localhost; set a token to use names",
            );
        }
    }
    if let Some(token) = &app.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| same(g.as_bytes(), token.as_bytes())) {
            return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        }
    }
    next.run(request).await
}

async fn status(State(app): State<AppState>) -> Response {
    Json(app.monitor.status()).into_response()
}

/// `GET /metrics`: the Prometheus text format.
async fn metrics(State(app): State<AppState>) -> Response {
    match app.monitor.metrics_text() {
        Some(text) => {
            ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
        }
        None => error(StatusCode::NOT_FOUND, "metrics are not available here"),
    }
}

/// `POST /reload`: what SIGHUP does, with the result in the response.
/// 200 `{"ok":true,"generation":N,...}`, or 422 with the error (the
/// running configuration stays in service).
async fn reload(State(app): State<AppState>) -> Response {
    let monitor = app.monitor.clone();
    match tokio::task::spawn_blocking(move || monitor.reload()).await {
        Ok(Some(Ok(serde_json::Value::Object(mut done)))) => {
            done.insert("ok".into(), serde_json::Value::Bool(true));
            Json(serde_json::Value::Object(done)).into_response()
        }
        Ok(Some(Ok(_))) => Json(json!({ "ok": true })).into_response(),
        Ok(Some(Err(e))) => error(StatusCode::UNPROCESSABLE_ENTITY, e),
        Ok(None) => error(StatusCode::NOT_FOUND, "reload is not available here"),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reload failed: {e}"),
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainQuery {
    name: String,
    #[serde(rename = "type")]
    qtype: Option<String>,
    client: String,
}

/// The decision for `client` asking `name`: the same trace as
/// `meridian explain`, as JSON, on the live snapshot and health.
async fn explain(
    State(app): State<AppState>,
    query: Result<Query<ExplainQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "use /explain?name=NAME&type=A&client=IP[/PREFIX] (type defaults to A)",
        );
    };
    let client = match crate::explain::parse_client(&q.client) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let snap = app.monitor.snapshot();
    let qtype = q.qtype.as_deref().unwrap_or("A");
    match crate::explain::explain_decision(&snap, &q.name, qtype, client) {
        Ok(e) => Json(e).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

/// The optional body of drain, undrain and force-up.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideInput {
    by: Option<String>,
}

/// What the override endpoints take, for error messages.
const OVERRIDE_BODY: &str = r#"no body, or {"by": "who is asking"}"#;

/// Longest `by`, bytes.
const MAX_BY: usize = 256;

/// Who sets an override (shown in `/status` in cluster mode): the body's
/// `by`, else the `X-Meridian-Operator` header, else the client's
/// address.
fn operator(request: &axum::http::request::Parts, body: &[u8]) -> Result<String, BodyError> {
    let from_body = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        json_body::<OverrideInput>(body, OVERRIDE_BODY)?.by
    };
    let from_header = || {
        request
            .headers
            .get("x-meridian-operator")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let peer = || {
        request
            .extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map_or_else(|| "unknown".to_string(), |c| c.0.ip().to_string())
    };
    let by = from_body.or_else(from_header).unwrap_or_else(peer);
    let by = by.trim().to_string();
    if by.is_empty() || by.len() > MAX_BY || by.chars().any(char::is_control) {
        return Err(BodyError(
            StatusCode::BAD_REQUEST,
            format!("by: 1 to {MAX_BY} bytes of text without control characters"),
        ));
    }
    Ok(by)
}

async fn set_override(
    app: AppState,
    zone: String,
    dc: String,
    value: Option<Override>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    // Over the limit, or the client went away while sending it.
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            BodyError(
                StatusCode::PAYLOAD_TOO_LARGE,
                too_large_text(MAX_BODY_BYTES),
            )
        });
    let by = match body.and_then(|b| operator(&parts, &b)) {
        Ok(by) => by,
        Err(refused) => return refused.into_response(),
    };
    action_result(app.monitor.set_override_by(&zone, &dc, value, &by).await)
}

async fn drain(
    State(app): State<AppState>,
    Path((zone, dc)): Path<(String, String)>,
    request: Request,
) -> Response {
    set_override(app, zone, dc, Some(Override::Drain), request).await
}

async fn undrain(
    State(app): State<AppState>,
    Path((zone, dc)): Path<(String, String)>,
    request: Request,
) -> Response {
    set_override(app, zone, dc, None, request).await
}

async fn force_up(
    State(app): State<AppState>,
    Path((zone, dc)): Path<(String, String)>,
    request: Request,
) -> Response {
    set_override(app, zone, dc, Some(Override::ForceUp), request).await
}

/// `GET /cluster`: the instances of the cluster, what each sees, and
/// whether their config generations differ; 404 alone.
async fn cluster(State(app): State<AppState>) -> Response {
    match app.monitor.cluster_view() {
        Some(view) => Json(view).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "cluster mode is off: [cluster] is not configured",
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetInput {
    state: String,
}

/// What `PUT /targets/...` takes, for error messages.
const TARGET_BODY: &str = r#"{"state": "up"} or {"state": "down"}"#;

/// Why a request body was refused: the status and what to say.
struct BodyError(StatusCode, String);

impl IntoResponse for BodyError {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

/// Parses a JSON request body whatever its `Content-Type`, or none:
/// `curl -d` labels JSON as a form, and the body is what counts. Errors
/// say what is wrong with the JSON and where (line and column), and
/// what `expected` looks like.
fn json_body<T: DeserializeOwned>(body: &[u8], expected: &str) -> Result<T, BodyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(BodyError(
            StatusCode::BAD_REQUEST,
            format!("empty body: send {expected}"),
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => "unexpected JSON in body",
            _ => "body is not valid JSON",
        };
        BodyError(
            StatusCode::BAD_REQUEST,
            format!("{what}: {e}; send {expected}"),
        )
    })
}

/// A request body as bytes, or why not: `413` over `limit`, the
/// extractor's own reason otherwise.
fn body_bytes(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
    limit: usize,
) -> Result<axum::body::Bytes, BodyError> {
    match body {
        Ok(body) => Ok(body),
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(BodyError(
            StatusCode::PAYLOAD_TOO_LARGE,
            too_large_text(limit),
        )),
        Err(e) => Err(BodyError(e.status(), e.body_text())),
    }
}

async fn set_target(
    State(app): State<AppState>,
    Path((zone, dc, target)): Path<(String, String, String)>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let input: TargetInput =
        match body_bytes(body, MAX_BODY_BYTES).and_then(|b| json_body(&b, TARGET_BODY)) {
            Ok(input) => input,
            Err(refused) => return refused.into_response(),
        };
    let up = match input.state.as_str() {
        "up" => true,
        "down" => false,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("state {other:?}: use \"up\" or \"down\""),
            );
        }
    };
    action_result(
        app.monitor
            .set_target(&zone, &dc, &target, up)
            .map(|()| None),
    )
}

/// `POST /latency/import`: trusted RUM measurements, validated like
/// beacons as one batch (see [`beacon::import`]), without a rate limit.
async fn import_latency(
    State(app): State<AppState>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let Some(target) = &app.import else {
        return error(StatusCode::NOT_FOUND, "latency import is not configured");
    };
    let body = match body_bytes(body, MAX_IMPORT_BODY_BYTES) {
        Ok(body) => body,
        Err(refused) => return refused.into_response(),
    };
    match beacon::import(&body, target) {
        Ok(imported) => Json(json!({ "imported": imported })).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

/// The router (exposed for tests and fuzzing, which drive it without a
/// socket), without the import endpoint.
pub fn router(monitor: Monitor, token: Option<String>) -> Router {
    router_with(monitor, token, None)
}

/// The router; `import` enables `POST /latency/import`.
pub fn router_with(monitor: Monitor, token: Option<String>, import: Option<Import>) -> Router {
    let app = AppState {
        monitor,
        token: token.map(Arc::from),
        import,
    };
    let protected = Router::new()
        .route("/status", get(status))
        .route("/cluster", get(cluster))
        .route("/explain", get(explain))
        .route("/datacenters/{zone}/{dc}/drain", post(drain))
        .route("/datacenters/{zone}/{dc}/undrain", post(undrain))
        .route("/datacenters/{zone}/{dc}/force-up", post(force_up))
        .route("/targets/{zone}/{dc}/{target}", put(set_target))
        .route("/metrics", get(metrics))
        .route("/reload", post(reload))
        .route(
            IMPORT_PATH,
            post(import_latency).layer(DefaultBodyLimit::max(MAX_IMPORT_BODY_BYTES)),
        )
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), auth));
    Router::new()
        .route("/health", get(|| async { Json(json!({ "status": "ok" })) }))
        .merge(ui::routes())
        .merge(protected)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(app)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(check_request))
        .layer(axum::middleware::from_fn(json_errors))
}

//------------ The listener ---------------------------------------------------

/// What [`serve`] needs besides the listener: the token and the limits.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Bearer token; `None` serves without one (loopback only).
    pub token: Option<String>,
    /// Connections served at once.
    pub max_connections: usize,
    /// Time allowed for a request head.
    pub header_timeout: Duration,
    /// Time a kept-alive connection may sit between requests.
    pub idle_timeout: Duration,
    /// Time allowed for a request's body and answer.
    pub request_timeout: Duration,
    /// Where `POST /latency/import` sends measurements; `None` answers
    /// it 404 "latency import is not configured".
    pub import: Option<Import>,
}

impl Settings {
    /// The configured settings, or the defaults when the API runs only
    /// because `--admin-listen` asked for it. `import` is left `None`:
    /// whoever runs the RUM aggregator sets it.
    pub fn from_config(config: Option<&AdminConfig>) -> Self {
        use crate::config as c;
        match config {
            Some(a) => Self {
                token: a.token.clone(),
                max_connections: a.max_connections as usize,
                header_timeout: a.header_timeout,
                idle_timeout: a.idle_timeout,
                request_timeout: a.request_timeout,
                import: None,
            },
            None => Self {
                token: None,
                max_connections: c::DEFAULT_ADMIN_MAX_CONNECTIONS as usize,
                header_timeout: c::DEFAULT_ADMIN_HEADER_TIMEOUT,
                idle_timeout: c::DEFAULT_ADMIN_IDLE_TIMEOUT,
                request_timeout: c::DEFAULT_ADMIN_REQUEST_TIMEOUT,
                import: None,
            },
        }
    }
}

/// Sent, if the socket takes it at once, to a connection over the cap.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
content-length: 43\r\n\
connection: close\r\n\r\n\
{\"error\":\"too many admin connections open\"}";

/// How long accepting pauses after an error such as EMFILE, so a full
/// descriptor table does not become a busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves the API on `listener` until `shutdown` is cancelled, then lets
/// requests in progress finish (each within its own timeouts).
pub async fn serve(
    listener: TcpListener,
    monitor: Monitor,
    settings: Settings,
    shutdown: CancellationToken,
) {
    let app = router_with(monitor, settings.token.clone(), settings.import.clone());
    let limits = Limits {
        name: "admin API",
        busy: BUSY,
        max_connections: settings.max_connections,
        timeouts: Timeouts::from(&settings),
        timeout_hint: "request_timeout",
    };
    serve_router(listener, app, limits, shutdown).await;
}

/// How an HTTP listener served by [`serve_router`] guards itself.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Names the listener in logs.
    pub(crate) name: &'static str,
    /// A complete response sent, if the socket takes it at once, to a
    /// connection over the cap.
    pub(crate) busy: &'static [u8],
    /// Connections served at once.
    pub(crate) max_connections: usize,
    /// Header, idle and request timeouts.
    pub(crate) timeouts: Timeouts,
    /// What the 408 answer calls the request timeout (a config key).
    pub(crate) timeout_hint: &'static str,
}

/// Serves `app` on `listener` under `limits` until `shutdown` is
/// cancelled, then lets requests in progress finish. Each request carries
/// its peer as [`axum::extract::ConnectInfo`]`<SocketAddr>`.
pub(crate) async fn serve_router(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    let mut last_warning: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors or memory: the probes need them more.
                // Connection-level errors (a client that reset before we
                // got to it) also land here; the pause costs little.
                if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    tracing::warn!(error = %e, "{}: accept failed", limits.name);
                    last_warning = Some(Instant::now());
                }
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            // Over the cap: say so without waiting, and close. A write
            // that would block is skipped; the close is what matters.
            let _ = stream.try_write(limits.busy);
            drop(stream);
            continue;
        };
        connections.spawn(connection(
            stream,
            peer,
            app.clone(),
            limits,
            shutdown.clone(),
            permit,
        ));
    }
    connections.close();
    connections.wait().await;
}

/// Serves one connection until the client closes it, a timeout expires or
/// shutdown; the permit returns the slot when it ends.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let watch = Arc::new(Watch::new(limits.timeouts));
    let io = TokioIo::new(Watched {
        inner: stream,
        watch: Arc::clone(&watch),
    });
    let service = AdminService {
        router: app,
        watch: Arc::clone(&watch),
        peer,
        timeout_hint: limits.timeout_hint,
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        .max_header_size(MAX_HEAD_BYTES)
        // Our own watch does this job, for idle connections too.
        .header_read_timeout(None);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        let deadline = watch.deadline();
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "{} connection ended", limits.name);
                }
                return;
            }
            () = tokio::time::sleep_until(deadline) => {
                if Instant::now() >= watch.deadline() {
                    // Dropping the connection closes the socket.
                    tracing::debug!(phase = ?watch.phase(), "{} connection timed out", limits.name);
                    return;
                }
            }
            () = watch.changed.notified() => {}
            () = shutdown.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// The three timeouts a connection lives under.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    /// Time allowed for a request head.
    pub(crate) header: Duration,
    /// Time a kept-alive connection may sit between requests.
    pub(crate) idle: Duration,
    /// Time allowed for a request's body and answer.
    pub(crate) request: Duration,
}

impl From<&Settings> for Timeouts {
    fn from(s: &Settings) -> Self {
        Self {
            header: s.header_timeout,
            idle: s.idle_timeout,
            request: s.request_timeout,
        }
    }
}

/// Where a connection is between requests, which decides its deadline.
#[derive(Clone, Copy, Debug)]
enum Phase {
    /// Connected, nothing received yet: the first head is due within the
    /// header timeout.
    Connected { since: Instant },
    /// Between requests, nothing of the next one received: idle timeout.
    Idle { since: Instant },
    /// Part of a head received: header timeout from its first byte.
    Head { since: Instant },
    /// The router has the request: the request timeout runs inside the
    /// service; this deadline is only a backstop.
    Busy { since: Instant },
}

/// Shared by a connection's socket wrapper, its service and its watchdog.
#[derive(Debug)]
struct Watch {
    timeouts: Timeouts,
    phase: Mutex<Phase>,
    /// Woken when the deadline may have moved earlier.
    changed: Notify,
}

impl Watch {
    fn new(timeouts: Timeouts) -> Self {
        Self {
            timeouts,
            phase: Mutex::new(Phase::Connected {
                since: Instant::now(),
            }),
            changed: Notify::new(),
        }
    }

    fn phase(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, phase: Phase) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = phase;
        self.changed.notify_one();
    }

    fn deadline(&self) -> Instant {
        let t = self.timeouts;
        match self.phase() {
            Phase::Connected { since } | Phase::Head { since } => since + t.header,
            Phase::Idle { since } => since + t.idle,
            Phase::Busy { since } => since + t.request + t.header,
        }
    }

    /// Bytes arrived: the first ones of a request start its head.
    fn read(&self) {
        let mut phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        if let Phase::Idle { .. } = *phase {
            *phase = Phase::Head {
                since: Instant::now(),
            };
            drop(phase);
            self.changed.notify_one();
        }
    }

    /// Bytes left: a client reading a long answer is not idle.
    fn wrote(&self) {
        let mut phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        if let Phase::Idle { since } = &mut *phase {
            *since = Instant::now();
        }
    }
}

/// The socket, reporting reads and writes to the [`Watch`].
struct Watched {
    inner: TcpStream,
    watch: Arc<Watch>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.watch.read();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r
            && n > 0
        {
            self.watch.wrote();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r
            && n > 0
        {
            self.watch.wrote();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The router as a hyper service, marking each request's start and end on
/// the [`Watch`] and bounding it by the request timeout.
#[derive(Clone)]
struct AdminService {
    router: Router,
    watch: Arc<Watch>,
    peer: SocketAddr,
    timeout_hint: &'static str,
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for AdminService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, request: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        // hyper calls the service once the head is complete.
        self.watch.set(Phase::Busy {
            since: Instant::now(),
        });
        let router = self.router.clone();
        let watch = Arc::clone(&self.watch);
        let hint = self.timeout_hint;
        let mut request = request.map(axum::body::Body::new);
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
        Box::pin(async move {
            let limit = watch.timeouts.request;
            let response = match tokio::time::timeout(limit, router.oneshot(request)).await {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_) => {
                    let mut r = error(
                        StatusCode::REQUEST_TIMEOUT,
                        format!("request not complete within {limit:?} ({hint})"),
                    );
                    r.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    r
                }
            };
            watch.set(Phase::Idle {
                since: Instant::now(),
            });
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_apis_own_origin_is_same_origin() {
        let host = Some("127.0.0.1:5380");
        assert!(same_origin("http://127.0.0.1:5380", host));
        assert!(same_origin("https://127.0.0.1:5380", host));
        assert!(same_origin("http://[::1]:5380", Some("[::1]:5380")));
        assert!(same_origin("http://LOCALHOST:5380", Some("localhost:5380")));
        assert!(same_origin("http://localhost", Some("localhost")));
        for other in [
            "http://127.0.0.1:5381",
            "http://127.0.0.1",
            "http://127.0.0.1:5380/",
            "http://127.0.0.1:53800",
            "http://evil.example",
            "ws://127.0.0.1:5380",
            "http://",
            "null",
            "",
        ] {
            assert!(!same_origin(other, host), "{other}");
        }
        assert!(!same_origin("http://127.0.0.1:5380", None), "no Host");
    }

    #[test]
    fn the_busy_answers_are_well_formed() {
        for busy in [BUSY, beacon::BUSY] {
            let text = std::str::from_utf8(busy).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.contains(&format!("content-length: {}", body.len())));
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            assert!(v["error"].is_string());
        }
    }
}
