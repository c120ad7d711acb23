//! The admin API as the status page uses it (issue 10): the page and its
//! files with their headers, same-origin requests allowed and every other
//! `Origin` refused (with or without a token), the rebinding check, the
//! token flow, and JSON bodies accepted whatever their Content-Type, with
//! errors that say what is wrong with the JSON. Raw HTTP over real
//! sockets, so every header is exactly what a browser or curl sends.

use std::net::SocketAddr;

use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{EXCHANGE_TIMEOUT, Setup, TestServer, a_answers};

/// `primary` takes external health input; `backup` has no probe.
const ZONE: &str = r#"
origin = "ui.test."
ns = ["ns1.ui.test."]
[soa]
rname = "hostmaster.ui.test."
serial = 1
[records]
ns1 = [{ type = "A", value = "192.0.2.53" }]
[datacenters.primary]
addresses = ["192.0.2.1"]
probe = { type = "external" }
[datacenters.backup]
addresses = ["192.0.2.2"]
[services.www]
policy = "failover"
datacenters = ["primary", "backup"]
"#;

const TOKEN: &str = "ui-test-token-0123456789";

async fn server(token: Option<&str>) -> TestServer {
    let toml = match token {
        Some(t) => format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{t}\"\n"),
        None => String::new(),
    };
    TestServer::start_with(Setup {
        zones: &[("ui.test.toml", ZONE)],
        server_toml: &toml,
        ..Setup::default()
    })
    .await
}

/// A response: status, head (lower-cased) and body.
struct Answer {
    code: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        let prefix = format!("{}: ", name.to_ascii_lowercase());
        self.head.lines().find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with(&prefix)
                .then(|| l[prefix.len()..].trim())
        })
    }
}

/// Sends one request: `head_lines` are extra header lines (each ending
/// in CRLF); `Host` is `host` or the address itself. No Content-Type
/// unless the caller gives one.
async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    host: Option<&str>,
    head_lines: &str,
    body: &str,
) -> Answer {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let host = host.map_or_else(|| addr.to_string(), str::to_string);
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{head_lines}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(EXCHANGE_TIMEOUT, s.read_to_end(&mut out))
        .await
        .expect("the admin API answers")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Answer {
        code,
        head: head.to_string(),
        body: body.to_string(),
    }
}

fn admin(s: &TestServer) -> SocketAddr {
    s.server.admin_addr().expect("admin API")
}

async fn www(s: &TestServer) -> Vec<String> {
    a_answers(&s.ask("www.ui.test.", RecordType::A, None).await)
}

fn override_of(s: &TestServer, dc: &str) -> serde_json::Value {
    let status = s.server.monitor().status();
    status["zones"][0]["datacenters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == dc)
        .unwrap()["override"]
        .clone()
}

#[tokio::test]
async fn the_page_and_its_files_are_served_under_a_strict_policy() {
    let s = server(None).await;
    let addr = admin(&s);
    for path in ["/", "/ui"] {
        let page = send(addr, "GET", path, None, "", "").await;
        assert_eq!(page.code, 200, "{path}: {}", page.body);
        assert_eq!(
            page.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        let csp = page.header("content-security-policy").expect("a CSP");
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(csp.contains("connect-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(page.header("cache-control"), Some("no-cache"));
        assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
        assert!(page.body.contains("<script src=\"/ui/app.js\""));
    }
    let js = send(addr, "GET", "/ui/app.js", None, "", "").await;
    assert_eq!(js.code, 200);
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(js.body.contains("'/status'"), "the script polls /status");
    let css = send(addr, "GET", "/ui/app.css", None, "", "").await;
    assert_eq!(css.code, 200);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    // Other paths under /ui are not files.
    assert_eq!(send(addr, "GET", "/ui/x.js", None, "", "").await.code, 404);
}

#[tokio::test]
async fn the_pages_own_origin_may_drain_without_a_token() {
    let s = server(None).await;
    let addr = admin(&s);
    assert_eq!(www(&s).await, ["192.0.2.1"]);
    // What Chromium sends for a fetch() POST from http://ADDR/.
    let origin = format!("Origin: http://{addr}\r\nSec-Fetch-Site: same-origin\r\n");
    let r = send(
        addr,
        "POST",
        "/datacenters/ui.test/primary/drain",
        None,
        &origin,
        "",
    )
    .await;
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(override_of(&s, "primary"), "drain");
    assert_eq!(www(&s).await, ["192.0.2.2"], "answers moved");
    // localhost is the same check by name, case aside.
    let port = addr.port();
    let host = format!("localhost:{port}");
    let origin = format!("Origin: http://LocalHost:{port}\r\n");
    let r = send(
        addr,
        "POST",
        "/datacenters/ui.test/primary/undrain",
        Some(&host),
        &origin,
        "",
    )
    .await;
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(www(&s).await, ["192.0.2.1"]);
}

#[tokio::test]
async fn other_origins_are_refused() {
    let s = server(None).await;
    let addr = admin(&s);
    let port = addr.port();
    for origin in [
        "http://evil.example".to_string(),
        "null".to_string(),
        // Same host, another port: another origin.
        format!("http://127.0.0.1:{}", port.wrapping_add(1)),
        // The host without the port: port 80, another origin.
        "http://127.0.0.1".to_string(),
        format!("http://127.0.0.1:{port}.evil.example"),
        format!("ftp://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{port}/path"),
    ] {
        let r = send(
            addr,
            "POST",
            "/datacenters/ui.test/primary/drain",
            None,
            &format!("Origin: {origin}\r\n"),
            "",
        )
        .await;
        assert_eq!(r.code, 403, "{origin}: {}", r.body);
        assert!(r.body.contains("other web pages"), "{}", r.body);
        // Reading is refused too.
        let r = send(
            addr,
            "GET",
            "/status",
            None,
            &format!("Origin: {origin}\r\n"),
            "",
        )
        .await;
        assert_eq!(r.code, 403, "{origin}");
    }
    assert_eq!(override_of(&s, "primary"), serde_json::Value::Null);
    assert_eq!(www(&s).await, ["192.0.2.1"], "nothing was drained");
}

#[tokio::test]
async fn a_rebound_name_is_refused_even_from_its_own_origin() {
    // DNS rebinding: evil.example resolves to 127.0.0.1, so for the
    // browser the page at http://evil.example:PORT/ is same-origin with
    // the API. Host names it, and without a token only IP addresses and
    // localhost are served.
    let s = server(None).await;
    let addr = admin(&s);
    let host = format!("evil.example:{}", addr.port());
    let origin = format!("Origin: http://{host}\r\n");
    let r = send(
        addr,
        "POST",
        "/datacenters/ui.test/primary/drain",
        Some(&host),
        &origin,
        "",
    )
    .await;
    assert_eq!(r.code, 403, "{}", r.body);
    assert!(r.body.contains("Host must be"), "{}", r.body);
    let r = send(addr, "GET", "/status", Some(&host), "", "").await;
    assert_eq!(r.code, 403);
    assert_eq!(www(&s).await, ["192.0.2.1"], "nothing was drained");
}

#[tokio::test]
async fn with_a_token_the_page_loads_and_its_requests_need_the_token() {
    let s = server(Some(TOKEN)).await;
    let addr = admin(&s);
    let origin = format!("Origin: http://{addr}\r\n");
    let bearer = format!("Authorization: Bearer {TOKEN}\r\n");
    // The page itself holds no data and needs no token: it asks for one.
    let page = send(addr, "GET", "/", None, "", "").await;
    assert_eq!(page.code, 200);
    assert!(page.body.contains("id=\"token-form\""));
    // Its first /status poll without the token: 401, which shows the form.
    assert_eq!(send(addr, "GET", "/status", None, "", "").await.code, 401);
    let wrong = "Authorization: Bearer not-the-token\r\n";
    let r = send(
        addr,
        "POST",
        "/datacenters/ui.test/primary/drain",
        None,
        &format!("{origin}{wrong}"),
        "",
    )
    .await;
    assert_eq!(r.code, 401, "{}", r.body);
    assert_eq!(www(&s).await, ["192.0.2.1"]);
    // With the token, from the page's origin: allowed.
    let r = send(
        addr,
        "POST",
        "/datacenters/ui.test/primary/drain",
        None,
        &format!("{origin}{bearer}"),
        "",
    )
    .await;
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(www(&s).await, ["192.0.2.2"]);
    // A name in Host is fine with a token (behind a proxy, say)...
    let host = "meridian-admin.example:443";
    let r = send(
        addr,
        "GET",
        "/status",
        Some(host),
        &format!("Origin: https://{host}\r\n{bearer}"),
        "",
    )
    .await;
    assert_eq!(r.code, 200, "{}", r.body);
    // ...but another site is refused even if it somehow has the token.
    let r = send(
        addr,
        "POST",
        "/datacenters/ui.test/primary/undrain",
        None,
        &format!("Origin: http://evil.example\r\n{bearer}"),
        "",
    )
    .await;
    assert_eq!(r.code, 403, "{}", r.body);
    assert_eq!(www(&s).await, ["192.0.2.2"], "still drained");
}

#[tokio::test]
async fn the_readme_curl_example_works_whatever_the_content_type() {
    let s = server(None).await;
    let addr = admin(&s);
    let path = "/targets/ui.test/primary/192.0.2.1";
    // `curl -X PUT URL -d '{"state":"down"}'` exactly: curl labels the
    // body as a form.
    let curl = "User-Agent: curl/8.5.0\r\nAccept: */*\r\n\
                Content-Type: application/x-www-form-urlencoded\r\n";
    let r = send(addr, "PUT", path, None, curl, r#"{"state":"down"}"#).await;
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(www(&s).await, ["192.0.2.2"]);
    // No Content-Type at all.
    let r = send(addr, "PUT", path, None, "", r#"{"state":"up"}"#).await;
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(www(&s).await, ["192.0.2.1"]);
    // text/plain, and JSON's own type, as before.
    for ct in ["text/plain", "application/json"] {
        let r = send(
            addr,
            "PUT",
            path,
            None,
            &format!("Content-Type: {ct}\r\n"),
            r#"{"state":"up"}"#,
        )
        .await;
        assert_eq!(r.code, 200, "{ct}: {}", r.body);
    }
}

#[tokio::test]
async fn a_bad_body_gets_an_error_about_its_json() {
    let s = server(None).await;
    let addr = admin(&s);
    let path = "/targets/ui.test/primary/192.0.2.1";
    let form = "Content-Type: application/x-www-form-urlencoded\r\n";
    // (body, what the error must say)
    let cases = [
        (
            "{\"state\":\n\"down\"",
            "body is not valid JSON: EOF while parsing an object at line 2 column 6",
        ),
        (
            "state=down",
            "body is not valid JSON: expected value at line 1 column 1",
        ),
        (
            "{'state':'down'}",
            "body is not valid JSON: key must be a string at line 1 column 2",
        ),
        (
            r#"{"stat":"down"}"#,
            "unexpected JSON in body: unknown field `stat`, expected `state` at line 1 column 7",
        ),
        ("", "empty body"),
    ];
    for (body, expected) in cases {
        let r = send(addr, "PUT", path, None, form, body).await;
        assert_eq!(r.code, 400, "{body:?}: {}", r.body);
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("a JSON error");
        let error = v["error"].as_str().unwrap();
        assert!(error.starts_with(expected), "{body:?}: {error}");
        assert!(
            error.contains(r#"{"state": "up"} or {"state": "down"}"#),
            "says what to send: {error}"
        );
        assert!(
            !error.to_ascii_lowercase().contains("content-type"),
            "{error}"
        );
    }
    assert_eq!(www(&s).await, ["192.0.2.1"], "no bad body changed anything");
}
