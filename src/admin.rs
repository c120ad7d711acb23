//! The admin HTTP API: status, operator overrides, external health input.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/health` | the server's own liveness (never needs the token) |
//! | GET | `/status` | every zone, datacenter, target and service, as JSON |
//! | GET | `/explain?name=N&type=T&client=IP[/LEN]` | the routing decision for a client, step by step |
//! | POST | `/datacenters/{zone}/{dc}/drain` | never answer with `dc` |
//! | POST | `/datacenters/{zone}/{dc}/undrain` | clear any override |
//! | POST | `/datacenters/{zone}/{dc}/force-up` | answer with `dc` whatever probes say |
//! | PUT | `/targets/{zone}/{dc}/{target}` | body `{"state": "up"}` or `"down"` |
//!
//! With a token configured, every request but `/health` needs
//! `Authorization: Bearer TOKEN`.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::health::Override;
use crate::health::monitor::{ActionError, Monitor};

#[derive(Clone)]
struct AppState {
    monitor: Monitor,
    token: Option<Arc<str>>,
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
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
    }
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

async fn auth(State(app): State<AppState>, request: Request, next: Next) -> Response {
    if app.token.is_none() {
        // Without a token, keep browsers out: a web page could otherwise
        // POST a drain here (browsers send simple cross-origin POSTs
        // without asking), or read /status through DNS rebinding. Browsers
        // always send Origin on such requests, and a rebound name in Host.
        let headers = request.headers();
        if headers.contains_key(header::ORIGIN) {
            return error(
                StatusCode::FORBIDDEN,
                "requests from web pages are refused (Origin header)",
            );
        }
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
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

async fn set_override(
    app: AppState,
    zone: String,
    dc: String,
    value: Option<Override>,
) -> Response {
    action_result(app.monitor.set_override(&zone, &dc, value))
}

async fn drain(State(app): State<AppState>, Path((zone, dc)): Path<(String, String)>) -> Response {
    set_override(app, zone, dc, Some(Override::Drain)).await
}

async fn undrain(
    State(app): State<AppState>,
    Path((zone, dc)): Path<(String, String)>,
) -> Response {
    set_override(app, zone, dc, None).await
}

async fn force_up(
    State(app): State<AppState>,
    Path((zone, dc)): Path<(String, String)>,
) -> Response {
    set_override(app, zone, dc, Some(Override::ForceUp)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetInput {
    state: String,
}

async fn set_target(
    State(app): State<AppState>,
    Path((zone, dc, target)): Path<(String, String, String)>,
    body: Result<Json<TargetInput>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(input)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "body must be {\"state\": \"up\"} or {\"state\": \"down\"}",
        );
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

/// The router (exposed for tests that drive it without a socket).
pub fn router(monitor: Monitor, token: Option<String>) -> Router {
    let app = AppState {
        monitor,
        token: token.map(Arc::from),
    };
    let protected = Router::new()
        .route("/status", get(status))
        .route("/explain", get(explain))
        .route("/datacenters/{zone}/{dc}/drain", post(drain))
        .route("/datacenters/{zone}/{dc}/undrain", post(undrain))
        .route("/datacenters/{zone}/{dc}/force-up", post(force_up))
        .route("/targets/{zone}/{dc}/{target}", put(set_target))
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), auth));
    Router::new()
        .route("/health", get(|| async { Json(json!({ "status": "ok" })) }))
        .merge(protected)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(app)
}

/// Serves the API on `listener` until `token` is cancelled.
pub async fn serve(
    listener: TcpListener,
    monitor: Monitor,
    token: Option<String>,
    shutdown: CancellationToken,
) {
    let app = router(monitor, token);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::error!("admin API stopped: {e}");
    }
}
