//! Admin API requests: any method, path, headers and body, driven through
//! `meridian::admin::router` with tower's `oneshot`, must get a response,
//! never a panic; the status must be one the API documents, and the body
//! JSON (an object, with an `error` string for every error status), but
//! for the status page's own files.
//!
//! The input is a request written almost as on the wire, so seeds and
//! crash files read as text:
//!
//! ```text
//! [!]METHOD TARGET\n        "!" first: the router with a bearer token
//! Name: value\n             any number of headers
//! \n
//! BODY                      the rest, as bytes
//! ```
//!
//! Lines may end in `\r\n`. Inputs the `http` crate cannot turn into a
//! request (a bad method, target or header) are skipped: hyper would
//! refuse them before the router.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use meridian::health::monitor::Monitor;
use meridian::health::overrides::Overrides;
use tower::ServiceExt;

/// Statuses the API can answer with through the router.
const ALLOWED: [StatusCode; 7] = [
    StatusCode::OK,
    StatusCode::BAD_REQUEST,
    StatusCode::UNAUTHORIZED,
    StatusCode::FORBIDDEN,
    StatusCode::NOT_FOUND,
    StatusCode::METHOD_NOT_ALLOWED,
    StatusCode::PAYLOAD_TOO_LARGE,
];

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
});

/// The bearer token of the guarded router (`!` inputs).
const TOKEN: &str = "0123456789abcdef-fuzz";

/// Routers without and with a token, over the shipped configuration with
/// a monitor like the server's. Overrides are saved to a temporary
/// directory (tmpfs when there is one, so saving stays cheap), removed
/// when the process ends normally.
static ROUTERS: LazyLock<(Router, Router, tempfile::TempDir)> = LazyLock::new(|| {
    let path = Path::new(meridian_fuzz::CONFIG);
    let (config, snapshot) =
        meridian::load(path).unwrap_or_else(|e| panic!("cannot load {}: {e}", path.display()));
    let shm = PathBuf::from("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .unwrap_or_else(|e| panic!("temporary directory: {e}"));
    let overrides = Overrides::load(&dir.path().join("state.json"))
        .unwrap_or_else(|e| panic!("state file: {e}"));
    let swap = Arc::new(arc_swap::ArcSwap::from_pointee(snapshot));
    let monitor = Monitor::new(swap, overrides, 16, Default::default());
    monitor.configure(&config);
    monitor.publish();
    let open = meridian::admin::router(monitor.clone(), None);
    let guarded = meridian::admin::router(monitor, Some(TOKEN.to_string()));
    (open, guarded, dir)
});

fn line(rest: &mut &[u8]) -> Option<Vec<u8>> {
    let end = rest.iter().position(|&b| b == b'\n')?;
    let mut l = rest[..end].to_vec();
    *rest = &rest[end + 1..];
    if l.last() == Some(&b'\r') {
        l.pop();
    }
    Some(l)
}

fn request(data: &[u8]) -> Option<(bool, Request<Body>)> {
    let mut rest = data;
    let first = line(&mut rest)?;
    let (with_token, first) = match first.strip_prefix(b"!") {
        Some(f) => (true, f.to_vec()),
        None => (false, first),
    };
    let space = first.iter().position(|&b| b == b' ')?;
    let mut builder = Request::builder()
        .method(&first[..space])
        .uri(&first[space + 1..]);
    loop {
        let l = line(&mut rest)?;
        if l.is_empty() {
            break;
        }
        let colon = l.iter().position(|&b| b == b':')?;
        let value = l[colon + 1..].trim_ascii_start();
        builder = builder.header(&l[..colon], value);
    }
    builder
        .body(Body::from(rest.to_vec()))
        .ok()
        .map(|r| (with_token, r))
}

fuzz_target!(|data: &[u8]| {
    let Some((with_token, req)) = request(data) else {
        return;
    };
    let shown = format!("{} {} {:?}", req.method(), req.uri(), req.headers());
    let head = req.method() == axum::http::Method::HEAD;
    // The status page's files (HTML, JS, CSS) are the only answers that
    // are not JSON.
    let page = matches!(
        req.uri().path(),
        "/" | "/ui" | "/ui/app.js" | "/ui/app.css"
    );
    let (status, body) = RUNTIME.block_on(async move {
        let (open, guarded, _) = &*ROUTERS;
        let router = if with_token { guarded } else { open };
        let response = match router.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 24)
            .await
            .unwrap_or_else(|e| panic!("body: {e}"));
        (status, body)
    });
    assert!(ALLOWED.contains(&status), "status {status} for {shown}");
    if head {
        // HEAD answers carry the headers of GET and no body.
        assert!(body.is_empty(), "a body for HEAD: {shown}");
        return;
    }
    if page && status.is_success() {
        assert!(!body.is_empty(), "an empty page: {shown}");
        return;
    }
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}), status {status}, for {shown}: {:?}",
            String::from_utf8_lossy(&body)
        )
    });
    assert!(json.is_object(), "not an object: {json} for {shown}");
    if !status.is_success() {
        assert!(
            json["error"].is_string(),
            "error {status} without an error string: {json} for {shown}"
        );
    }
});
