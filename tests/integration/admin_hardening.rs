//! The admin listener under hostile clients (issue 11): a connection cap,
//! header, idle and request timeouts, body and header limits, and the
//! state file's refusals, all against the real server over real sockets.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::harness::{EXCHANGE_TIMEOUT, Setup, TestServer, example_zone};

/// The example zone with `[admin]` set to `admin` (plus a free port).
async fn server(admin: &str) -> TestServer {
    let zone = example_zone();
    let toml = format!("[admin]\nlisten = \"127.0.0.1:0\"\n{admin}\n");
    TestServer::start_with(Setup {
        zones: &[("gslb.example.com.toml", &zone)],
        server_toml: &toml,
        ..Setup::default()
    })
    .await
}

fn admin_addr(s: &TestServer) -> SocketAddr {
    s.server.admin_addr().expect("admin API")
}

/// Reads until the server closes the connection (EOF or reset), within
/// `bound`; returns what arrived and when the close came. `None` if the
/// connection was still open at `bound`.
async fn until_closed(stream: &mut TcpStream, bound: Duration) -> Option<(Vec<u8>, Instant)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    let closed_at = tokio::time::timeout(bound, read_all).await.ok()?;
    Some((got, closed_at))
}

/// Sends `request` on a new connection and returns the status code and
/// body of the response (the request should say `Connection: close`).
async fn exchange(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let (bytes, _) = until_closed(&mut s, EXCHANGE_TIMEOUT)
        .await
        .expect("the admin API answers and closes");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (code, body)
}

/// Reads one `/health` answer from a kept-alive connection.
async fn read_health(conn: &mut TcpStream) {
    let mut response = Vec::new();
    let mut buf = [0u8; 1024];
    // The body is {"status":"ok"}: read until it is complete.
    while !response.ends_with(b"}") {
        let n = tokio::time::timeout(EXCHANGE_TIMEOUT, conn.read(&mut buf))
            .await
            .expect("answer")
            .unwrap();
        assert!(n > 0, "closed before the answer");
        response.extend_from_slice(&buf[..n]);
    }
    assert!(response.starts_with(b"HTTP/1.1 200"), "{response:?}");
}

fn get(path: &str, addr: SocketAddr) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").into_bytes()
}

/// Every error body is a JSON object with an `error` string.
fn json_error(body: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"));
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error string: {body}"))
        .to_string()
}

/// 1,000 idle connections used to be held for 65 s and, with a low file
/// limit, starve the probes of descriptors. Now connections over
/// `max_connections` are answered 503 and closed at once, the idle ones
/// are closed after `header_timeout`, and `/health` answers again.
#[tokio::test]
async fn connections_over_the_cap_are_closed_and_idle_ones_time_out() {
    let s = server("max_connections = 4\nheader_timeout = \"1500ms\"").await;
    let addr = admin_addr(&s);
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    // The server accepts in order, so these are the fifth and sixth.
    let started = Instant::now();
    for _ in 0..2 {
        let mut extra = TcpStream::connect(addr).await.unwrap();
        let (bytes, closed_at) = until_closed(&mut extra, Duration::from_secs(1))
            .await
            .expect("a connection over the cap is closed at once");
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("HTTP/1.1 503"), "{text}");
        assert!(closed_at - started < Duration::from_secs(1));
    }
    // The held connections are closed by the header timeout, not before.
    for conn in &mut idle {
        let (bytes, closed_at) = until_closed(conn, Duration::from_secs(5))
            .await
            .expect("an idle connection is closed after header_timeout");
        assert!(bytes.is_empty(), "nothing is sent to a silent client");
        assert!(
            closed_at - started >= Duration::from_millis(1000),
            "closed too early: {:?}",
            closed_at - started
        );
    }
    // Slots are free again: /health answers.
    let deadline = Instant::now() + EXCHANGE_TIMEOUT;
    loop {
        let (code, body) = exchange(addr, &get("/health", addr)).await;
        if code == 200 {
            assert!(body.contains("ok"), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/health still refused: {code} {body}"
        );
        tokio::task::yield_now().await;
    }
}

/// A client that sends part of a request head and stops is closed after
/// `header_timeout`, even though `idle_timeout` is much longer.
#[tokio::test]
async fn a_partial_head_is_closed_after_header_timeout() {
    let s = server("header_timeout = \"300ms\"\nidle_timeout = \"60s\"").await;
    let addr = admin_addr(&s);
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    conn.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await
        .unwrap();
    let (_, closed_at) = until_closed(&mut conn, Duration::from_secs(5))
        .await
        .expect("a stalled head is closed");
    let took = closed_at - started;
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");

    // The same for a later request on a kept-alive connection: its head
    // is due within header_timeout of its first byte, idle or not.
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    conn.write_all(request.as_bytes()).await.unwrap();
    read_health(&mut conn).await;
    let started = Instant::now();
    conn.write_all(b"GET /health HTTP/1.1\r\nHo").await.unwrap();
    let (_, closed_at) = until_closed(&mut conn, Duration::from_secs(5))
        .await
        .expect("a stalled second head is closed");
    let took = closed_at - started;
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

/// A kept-alive connection is closed after `idle_timeout` between
/// requests; within it, a second request on the same connection works.
#[tokio::test]
async fn a_kept_alive_connection_is_closed_after_idle_timeout() {
    let s = server("header_timeout = \"20s\"\nidle_timeout = \"400ms\"").await;
    let addr = admin_addr(&s);
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    for _ in 0..2 {
        conn.write_all(request.as_bytes()).await.unwrap();
        read_health(&mut conn).await;
    }
    let answered = Instant::now();
    let (bytes, closed_at) = until_closed(&mut conn, Duration::from_secs(10))
        .await
        .expect("idle connection closed");
    assert!(bytes.is_empty());
    let took = closed_at - answered;
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(
        took < Duration::from_secs(10),
        "not the 20 s header timeout: {took:?}"
    );
}

/// A body that trickles in is cut off by `request_timeout` with a 408.
#[tokio::test]
async fn a_slow_body_gets_408_after_request_timeout() {
    let s = server("request_timeout = \"300ms\"").await;
    let addr = admin_addr(&s);
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PUT /targets/gslb.example.com/us-east/192.0.2.10 HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/json\r\nContent-Length: 40\r\n\r\n{{\"sta"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let (bytes, _) = until_closed(&mut conn, EXCHANGE_TIMEOUT)
        .await
        .expect("answered and closed");
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    assert!(json_error(body).contains("request_timeout"), "{body}");
}

/// Bodies over 64 KiB get 413 with a JSON error, whether declared up
/// front or sent chunked (they used to get 400 past axum's 2 MB default,
/// and a declared 3 MB body was waited for).
#[tokio::test]
async fn a_large_body_gets_413() {
    let s = server("").await;
    let addr = admin_addr(&s);
    let path = "/targets/gslb.example.com/eu-west/198.51.100.10";
    let declared = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: 3000000\r\nConnection: close\r\n\r\n"
    );
    let (code, body) = exchange(addr, declared.as_bytes()).await;
    assert_eq!(code, 413, "{body}");
    assert!(json_error(&body).contains("65536"), "{body}");

    // Chunked: the limit is found while reading. Send it all before
    // reading, so the server has read what it wants to.
    let mut chunked = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    let chunk = vec![b' '; 70 * 1024];
    chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
    chunked.extend_from_slice(&chunk);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let (code, body) = exchange(addr, &chunked).await;
    assert_eq!(code, 413, "{body}");
    json_error(&body);
    // A small body still gets through to the handler (which finds no
    // such target: eu-west has no probe in the example zone).
    let small = r#"{"state": "up"}"#;
    let ok = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{small}",
        small.len()
    );
    let (code, body) = exchange(addr, ok.as_bytes()).await;
    assert_eq!(code, 404, "{body}");
    assert!(json_error(&body).contains("no target"), "{body}");
}

/// Two `Host` headers (or two `Authorization` headers) are refused: a
/// proxy in front and this server could read different ones.
#[tokio::test]
async fn repeated_host_or_authorization_headers_get_400() {
    let s = server("").await;
    let addr = admin_addr(&s);
    let two_hosts = format!(
        "GET /status HTTP/1.1\r\nHost: {addr}\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
    );
    let (code, body) = exchange(addr, two_hosts.as_bytes()).await;
    assert_eq!(code, 400, "{body}");
    assert!(json_error(&body).contains("host"), "{body}");
    // One Host is fine.
    assert_eq!(exchange(addr, &get("/status", addr)).await.0, 200);

    let token = "0123456789abcdef-secret";
    let s = server(&format!("token = \"{token}\"")).await;
    let addr = admin_addr(&s);
    let two_tokens = format!(
        "GET /status HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Authorization: Bearer other\r\nConnection: close\r\n\r\n"
    );
    let (code, body) = exchange(addr, two_tokens.as_bytes()).await;
    assert_eq!(code, 400, "{body}");
    assert!(json_error(&body).contains("authorization"), "{body}");
    let one = format!(
        "GET /status HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(exchange(addr, one.as_bytes()).await.0, 200);
}

/// Errors axum makes itself (405, a path that does not decode) are JSON
/// like the rest.
#[tokio::test]
async fn every_error_is_json() {
    let s = server("").await;
    let addr = admin_addr(&s);
    for request in [
        format!("DELETE /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
        format!(
            "POST /datacenters/%ff/x/drain HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        ),
        format!("GET /nowhere HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    ] {
        let (code, body) = exchange(addr, request.as_bytes()).await;
        assert!((400..500).contains(&code), "{code} for {request}");
        json_error(&body);
    }
}

/// A state file this release cannot read stops start-up with a message
/// naming the file, what was found and what to do.
#[tokio::test]
async fn start_up_refuses_a_state_file_of_another_version_or_with_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let zone = example_zone();
    let config = crate::harness::write_config(
        dir.path(),
        &Setup {
            zones: &[("gslb.example.com.toml", &zone)],
            ..Setup::default()
        },
    );
    let state = dir.path().join("meridian-state.json");
    let start = |config: &Path| {
        let config = config.to_path_buf();
        async move {
            meridian::Server::start(&config, Some(vec!["127.0.0.1:0".parse().unwrap()]))
                .await
                .map(|_| ())
                .unwrap_err()
                .to_string()
        }
    };
    std::fs::write(&state, r#"{"version": 3, "overrides": []}"#).unwrap();
    let e = start(&config).await;
    assert!(e.contains("meridian-state.json"), "{e}");
    assert!(
        e.contains("version 3") && e.contains("versions 1 and 2"),
        "{e}"
    );

    std::fs::write(
        &state,
        r#"{"version": 1, "overrides": [
            {"zone": "gslb.example.com.", "datacenter": "eu-west", "override": "drain"},
            {"zone": "gslb.example.com.", "datacenter": "eu-west", "override": "force-up"}
        ]}"#,
    )
    .unwrap();
    let e = start(&config).await;
    assert!(e.contains("meridian-state.json"), "{e}");
    assert!(
        e.contains("eu-west") && e.contains("gslb.example.com."),
        "{e}"
    );
}

/// The new `[admin]` keys: defaults, ranges and duration syntax.
#[test]
fn admin_limits_are_validated() {
    use meridian::config::parse_server;
    let file = Path::new("m.toml");
    let a = parse_server(file, "").unwrap().admin.unwrap();
    assert_eq!(a.max_connections, 64);
    assert_eq!(a.header_timeout, Duration::from_secs(5));
    assert_eq!(a.idle_timeout, Duration::from_secs(30));
    assert_eq!(a.request_timeout, Duration::from_secs(10));
    let a = parse_server(
        file,
        "[admin]\nmax_connections = 4096\nheader_timeout = \"250ms\"\nidle_timeout = \"2m\"\nrequest_timeout = \"1.5s\"",
    )
    .unwrap()
    .admin
    .unwrap();
    assert_eq!(a.max_connections, 4096);
    assert_eq!(a.header_timeout, Duration::from_millis(250));
    assert_eq!(a.idle_timeout, Duration::from_secs(120));
    assert_eq!(a.request_timeout, Duration::from_millis(1500));
    for (text, key) in [
        ("max_connections = 0", "admin.max_connections"),
        ("max_connections = 4097", "admin.max_connections"),
        ("header_timeout = \"5\"", "admin.header_timeout"),
        ("header_timeout = \"1ms\"", "admin.header_timeout"),
        ("idle_timeout = \"2h\"", "admin.idle_timeout"),
        ("request_timeout = \"10m\"", "admin.request_timeout"),
    ] {
        let e = parse_server(file, &format!("[admin]\n{text}")).unwrap_err();
        assert_eq!(e.key, key, "{text}: {e}");
    }
}
