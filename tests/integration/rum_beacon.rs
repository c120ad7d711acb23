//! The RUM beacon listener (issue 8) over real sockets: beacons that are
//! taken, hostile ones that are refused and change nothing, the rate
//! limit per client network, X-Forwarded-For, CORS, the snippet, and the
//! admin API's import endpoint.
//!
//! The sink only records what the listener hands it; the listener is the
//! thing under test.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};

use meridian::latency::beacon::{self, BeaconSink, BeaconStats, Beacons, Import};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::harness::{EXCHANGE_TIMEOUT, TestServer};

type Samples = Vec<(String, f64, f64)>;

/// Records what it is handed; knows three datacenters.
#[derive(Default)]
struct Recorder {
    got: Mutex<Vec<(IpAddr, Samples)>>,
}

impl BeaconSink for Recorder {
    fn known(&self, datacenter: &str) -> bool {
        ["eu-west", "us-east", "ap-south"].contains(&datacenter)
    }
    fn accept(&self, client: IpAddr, samples: &[(String, f64, f64)]) {
        self.got.lock().unwrap().push((client, samples.to_vec()));
    }
}

impl Recorder {
    fn got(&self) -> Vec<(IpAddr, Samples)> {
        self.got.lock().unwrap().clone()
    }
}

/// A beacon listener on 127.0.0.1:0, stopped when dropped.
struct Listener {
    addr: SocketAddr,
    sink: Arc<Recorder>,
    beacons: Arc<Beacons>,
    _stop: DropGuard,
}

const OBJECTS: &str = r#"[rum.objects]
"eu-west" = "https://eu-west.example.net/meridian-rum.gif"
"us-east" = "https://us-east.example.net/meridian-rum.gif"
"#;

/// Starts the listener with `[rum]` keys `keys` (besides `enabled`,
/// `listen` and the objects).
async fn start(keys: &str) -> Listener {
    let text = format!("[rum]\nenabled = true\nlisten = \"127.0.0.1:0\"\n{keys}\n{OBJECTS}");
    let config = meridian::config::parse_server(Path::new("meridian.toml"), &text)
        .unwrap_or_else(|e| panic!("{e}"));
    let sink = Arc::new(Recorder::default());
    let beacons = Beacons::new(
        Arc::new(config.rum),
        Arc::clone(&sink) as Arc<dyn BeaconSink>,
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token = CancellationToken::new();
    tokio::spawn(beacon::serve(listener, Arc::clone(&beacons), token.clone()));
    Listener {
        addr,
        sink,
        beacons,
        _stop: token.drop_guard(),
    }
}

/// A response: status, headers (names in lower case) and body.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `error` of a JSON error body.
    fn error(&self) -> String {
        let v: serde_json::Value =
            serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"));
        v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error: {self:?}"))
            .to_string()
    }
}

/// Sends one request (which must say `Connection: close`) from `from`
/// (any loopback address) and reads the answer to the close.
async fn send_from(from: IpAddr, to: SocketAddr, request: &[u8]) -> Reply {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let stream = socket.connect(to).await.unwrap();
    exchange(stream, request).await
}

async fn send(to: SocketAddr, request: &[u8]) -> Reply {
    exchange(TcpStream::connect(to).await.unwrap(), request).await
}

async fn exchange(mut stream: TcpStream, request: &[u8]) -> Reply {
    // The server may answer (413, 429) and close before reading it all.
    let _ = stream.write_all(request).await;
    let mut bytes = Vec::new();
    tokio::time::timeout(EXCHANGE_TIMEOUT, stream.read_to_end(&mut bytes))
        .await
        .expect("the listener answers and closes")
        .ok();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

/// A request with `Connection: close`, a body and extra header lines.
fn request(method: &str, path: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Length: {}\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// `POST /beacon` as `navigator.sendBeacon` sends it.
fn beacon_post(extra: &str, body: &str) -> Vec<u8> {
    request(
        "POST",
        "/beacon",
        &format!("Content-Type: text/plain;charset=UTF-8\r\n{extra}"),
        body.as_bytes(),
    )
}

const GOOD: &str = r#"{"measurements":[{"datacenter":"eu-west","rtt_ms":23.4},{"datacenter":"us-east","rtt_ms":81}]}"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn a_valid_beacon_is_handed_over_and_the_snippet_is_served() {
    let l = start("").await;
    let r = send(l.addr, &beacon_post("", GOOD)).await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(
        l.sink.got(),
        vec![(
            ip("127.0.0.1"),
            vec![
                ("eu-west".to_string(), 23.4, 1.0),
                ("us-east".to_string(), 81.0, 1.0)
            ]
        )]
    );
    assert_eq!(
        l.beacons.stats(),
        BeaconStats {
            accepted: 1,
            measurements: 2,
            ..BeaconStats::default()
        }
    );

    let r = send(l.addr, &request("GET", "/meridian-rum.js", "", b"")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("content-type"),
        Some("application/javascript; charset=utf-8")
    );
    assert_eq!(r.header("cache-control"), Some("public, max-age=300"));
    assert!(
        r.body
            .contains(r#""eu-west":"https://eu-west.example.net/meridian-rum.gif""#),
        "{}",
        r.body
    );
    assert!(r.body.contains("new URL(\"/beacon\", me.src)"));
    assert!(r.body.contains("var maxRtt = 5000;"));

    // Anything else is a JSON 404 or 405.
    let r = send(l.addr, &request("GET", "/status", "", b"")).await;
    assert_eq!((r.status, r.error().as_str()), (404, "no such endpoint"));
    let r = send(l.addr, &request("GET", "/beacon", "", b"")).await;
    assert_eq!(r.status, 405, "{r:?}");
    r.error();
}

#[tokio::test]
async fn malformed_and_hostile_beacons_get_4xx_and_change_nothing() {
    let l = start("max_measurements = 3").await;
    let m = |dc: &str, rtt: &str| format!(r#"{{"datacenter":"{dc}","rtt_ms":{rtt}}}"#);
    let list = |items: &[String]| format!(r#"{{"measurements":[{}]}}"#, items.join(","));
    let ok = m("eu-west", "20");
    let huge = list(&[m("eu-west", &format!("20{}", " ".repeat(17 * 1024)))]);
    let cases: Vec<(String, u16, &str)> = vec![
        (
            "{\"measurements\": [".to_string(),
            400,
            "measurements: invalid JSON: EOF while parsing a list",
        ),
        ("hello".to_string(), 400, "not a beacon"),
        (
            list(&[ok.clone(), m("us-east", "\"NaN\"")]),
            400,
            "measurements[1].rtt_ms: invalid type: string \"NaN\"",
        ),
        (
            list(&[m("us-east", "NaN")]),
            400,
            "measurements[0].rtt_ms: invalid JSON: expected value",
        ),
        (
            list(&[m("us-east", "-12.5")]),
            400,
            "measurements[0].rtt_ms: -12.5 is not a round-trip time",
        ),
        (
            list(&[m("us-east", "0")]),
            400,
            "measurements[0].rtt_ms: 0 is not a round-trip time",
        ),
        (
            list(&[ok.clone(), m("us-east", "86400000")]),
            400,
            "measurements[1].rtt_ms: 86400000 is not a round-trip time (above 0, at most max_rtt_ms = 5000)",
        ),
        (
            list(&[m("us-east", "1e999")]),
            400,
            "measurements[0].rtt_ms: invalid JSON: number out of range",
        ),
        (
            list(&[ok.clone(), m("mars-1", "30")]),
            400,
            "measurements[1].datacenter: unknown datacenter \"mars-1\"",
        ),
        (list(&[]), 400, "measurements: empty"),
        (
            list(&[
                ok.clone(),
                m("us-east", "1"),
                m("ap-south", "2"),
                m("eu-west", "3"),
            ]),
            400,
            "measurements: 4 of them, at most 3",
        ),
        (
            list(&[ok.clone(), ok.clone()]),
            400,
            "measurements[1].datacenter: \"eu-west\" is measured twice",
        ),
        (huge, 413, "beacon over 16384 bytes"),
    ];
    let n = cases.len() as u64;
    for (body, status, message) in cases {
        let r = send(l.addr, &beacon_post("", &body)).await;
        assert_eq!(r.status, status, "{body:.80}: {r:?}");
        assert!(r.error().contains(message), "{body:.80}: {r:?}");
    }
    // A body over the limit without a declared length is cut off too.
    let mut chunked = b"POST /beacon HTTP/1.1\r\nHost: rum.example\r\nConnection: close\r\n\
        Transfer-Encoding: chunked\r\n\r\n"
        .to_vec();
    for _ in 0..17 {
        chunked.extend_from_slice(b"400\r\n");
        chunked.extend_from_slice(&[b' '; 1024]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let r = send(l.addr, &chunked).await;
    assert_eq!(
        (r.status, r.error().as_str()),
        (413, "beacon over 16384 bytes")
    );

    assert!(l.sink.got().is_empty(), "{:?}", l.sink.got());
    assert_eq!(
        l.beacons.stats(),
        BeaconStats {
            rejected: n + 1,
            ..BeaconStats::default()
        }
    );
}

/// 127.0.0.1 and 127.0.0.77 share a /24; 127.0.1.1 is another network.
#[tokio::test]
async fn a_flood_from_one_network_is_limited_while_another_is_served() {
    let l = start("beacons_per_minute = 5").await;
    for i in 0..5 {
        let r = send_from(ip("127.0.0.1"), l.addr, &beacon_post("", GOOD)).await;
        assert_eq!(r.status, 204, "beacon {i}: {r:?}");
    }
    for from in ["127.0.0.1", "127.0.0.77"] {
        let r = send_from(ip(from), l.addr, &beacon_post("", GOOD)).await;
        assert_eq!(r.status, 429, "{from}: {r:?}");
        // One beacon per 12 s refills the bucket.
        assert_eq!(r.header("retry-after"), Some("12"), "{r:?}");
        assert!(r.error().contains("beacons_per_minute (5)"), "{r:?}");
    }
    let r = send_from(ip("127.0.1.1"), l.addr, &beacon_post("", GOOD)).await;
    assert_eq!(r.status, 204, "{r:?}");
    let clients: Vec<IpAddr> = l.sink.got().iter().map(|(c, _)| *c).collect();
    assert_eq!(clients.len(), 6);
    assert_eq!(clients[5], ip("127.0.1.1"));
    let stats = l.beacons.stats();
    assert_eq!((stats.accepted, stats.rate_limited), (6, 2));
}

#[tokio::test]
async fn forwarded_for_is_honoured_only_from_a_trusted_proxy() {
    let behind = start("trusted_proxies = [\"127.0.0.1\", \"192.0.2.0/24\"]").await;
    let open = start("").await;
    let xff = "X-Forwarded-For: 203.0.113.50, 198.51.100.7, 192.0.2.10\r\n";
    // From the proxy: the first untrusted hop from the right; the forged
    // leftmost entry is never reached.
    let r = send_from(ip("127.0.0.1"), behind.addr, &beacon_post(xff, GOOD)).await;
    assert_eq!(r.status, 204, "{r:?}");
    // From another address: the header is the client's own claim.
    let r = send_from(ip("127.0.0.2"), behind.addr, &beacon_post(xff, GOOD)).await;
    assert_eq!(r.status, 204, "{r:?}");
    // Without trusted proxies it is never read.
    let r = send_from(ip("127.0.0.1"), open.addr, &beacon_post(xff, GOOD)).await;
    assert_eq!(r.status, 204, "{r:?}");
    let clients = |l: &Listener| -> Vec<IpAddr> { l.sink.got().iter().map(|(c, _)| *c).collect() };
    assert_eq!(clients(&behind), vec![ip("198.51.100.7"), ip("127.0.0.2")]);
    assert_eq!(clients(&open), vec![ip("127.0.0.1")]);

    // A trusted proxy that forwards garbage is refused, not guessed past.
    let r = send_from(
        ip("127.0.0.1"),
        behind.addr,
        &beacon_post("X-Forwarded-For: 198.51.100.7, unknown\r\n", GOOD),
    )
    .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(
        r.error().contains("\"unknown\" is not an IP address"),
        "{r:?}"
    );
    assert_eq!(clients(&behind).len(), 2);

    // The rate limit applies to the forwarded client's network.
    let limited = start("trusted_proxies = [\"127.0.0.1\"]\nbeacons_per_minute = 1").await;
    let from = |addr: &str| beacon_post(&format!("X-Forwarded-For: {addr}\r\n"), GOOD);
    let statuses = [
        send(limited.addr, &from("198.51.100.7")).await.status,
        send(limited.addr, &from("198.51.100.8")).await.status,
        send(limited.addr, &from("203.0.113.1")).await.status,
    ];
    assert_eq!(statuses, [204, 429, 204]);
}

#[tokio::test]
async fn cors_preflight_and_origins() {
    let any = start("").await;
    let preflight = request(
        "OPTIONS",
        "/beacon",
        "Origin: https://shop.example\r\nAccess-Control-Request-Method: POST\r\n\
         Access-Control-Request-Headers: content-type\r\n",
        b"",
    );
    let r = send(any.addr, &preflight).await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("access-control-allow-methods"), Some("POST"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("Content-Type")
    );

    let only = start("allowed_origins = [\"https://shop.example\"]").await;
    let r = send(only.addr, &preflight).await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://shop.example")
    );
    assert_eq!(r.header("vary"), Some("Origin"));
    let r = send(
        only.addr,
        &beacon_post("Origin: https://shop.example\r\n", GOOD),
    )
    .await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://shop.example")
    );
    // Another site: no CORS header, and its beacon is not used.
    let r = send(
        only.addr,
        &beacon_post("Origin: https://evil.example\r\n", GOOD),
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert!(
        r.error()
            .contains("\"https://evil.example\" is not in [rum] allowed_origins")
    );
    // Not a browser (no Origin): taken.
    let r = send(only.addr, &beacon_post("", GOOD)).await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(only.sink.got().len(), 2);
    assert_eq!(only.beacons.stats().rejected, 1);
}

#[tokio::test]
async fn connections_over_the_cap_get_503() {
    let l = start("max_connections = 1").await;
    let mut held = TcpStream::connect(l.addr).await.unwrap();
    held.write_all(b"GET /meridian-rum.js HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    held.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let r = send(l.addr, &beacon_post("", GOOD)).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.error(), "too many beacon connections open");
    assert!(l.sink.got().is_empty());
}

const TOKEN: &str = "import-token-0123456789";

/// `POST /latency/import` through the real admin API (the server's own
/// monitor), with a recording sink.
#[tokio::test]
async fn the_admin_import_validates_like_beacons_without_a_rate_limit() {
    let server = TestServer::example().await;
    let sink = Arc::new(Recorder::default());
    let settings = meridian::admin::Settings {
        token: Some(TOKEN.to_string()),
        import: Some(Import {
            sink: Arc::clone(&sink) as Arc<dyn BeaconSink>,
        }),
        ..meridian::admin::Settings::from_config(None)
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = listener.local_addr().unwrap();
    let token = CancellationToken::new();
    let _stop = token.clone().drop_guard();
    tokio::spawn(meridian::admin::serve(
        listener,
        server.server.monitor().clone(),
        settings,
        token,
    ));
    let auth = format!("Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n");
    let post = |body: &str| request("POST", "/latency/import", &auth, body.as_bytes());

    let batch = r#"{"measurements":[
        {"client":"198.51.100.7","datacenter":"eu-west","rtt_ms":30,"samples":10},
        {"client":"2001:db8::1","datacenter":"us-east","rtt_ms":95.5},
        {"client":"198.51.100.7","datacenter":"us-east","rtt_ms":110,"samples":2.5}]}"#;
    let r = send(admin, &post(batch)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, r#"{"imported":3}"#);
    let mut got = sink.got();
    got.sort_by_key(|(c, _)| *c);
    assert_eq!(
        got,
        vec![
            (
                ip("198.51.100.7"),
                vec![
                    ("eu-west".to_string(), 30.0, 10.0),
                    ("us-east".to_string(), 110.0, 2.5)
                ]
            ),
            (ip("2001:db8::1"), vec![("us-east".to_string(), 95.5, 1.0)]),
        ]
    );
    // Far more than a beacon's rate, and nothing is limited.
    for _ in 0..40 {
        assert_eq!(send(admin, &post(batch)).await.status, 200);
    }
    let taken = sink.got().len();

    let row = |client: &str, dc: &str, rtt: &str, samples: &str| {
        format!(
            r#"{{"measurements":[{{"client":"198.51.100.1","datacenter":"eu-west","rtt_ms":1}},{{"client":"{client}","datacenter":"{dc}","rtt_ms":{rtt},"samples":{samples}}}]}}"#
        )
    };
    let cases = [
        (
            row("a.b.c.d", "eu-west", "1", "1"),
            "measurements[1].client: \"a.b.c.d\" is not an IP address",
        ),
        (
            row("192.0.2.1", "mars", "1", "1"),
            "measurements[1].datacenter: unknown datacenter \"mars\"",
        ),
        (
            row("192.0.2.1", "eu-west", "-1", "1"),
            "measurements[1].rtt_ms: -1 is not a round-trip time",
        ),
        (
            row("192.0.2.1", "eu-west", "\"NaN\"", "1"),
            "measurements[1].rtt_ms: invalid type: string",
        ),
        (
            row("192.0.2.1", "eu-west", "1", "0"),
            "measurements[1].samples: 0 is out of range (1 to 10000)",
        ),
        (
            row("192.0.2.1", "eu-west", "1", "10001"),
            "measurements[1].samples: 10001 is out of range",
        ),
        (r#"{"measurements":[]}"#.to_string(), "measurements: empty"),
    ];
    for (body, message) in cases {
        let r = send(admin, &post(&body)).await;
        assert_eq!(r.status, 400, "{body}: {r:?}");
        assert!(r.error().contains(message), "{body}: {r:?}");
    }
    assert_eq!(sink.got().len(), taken, "a refused batch applies nothing");

    // Batches beyond the admin API's usual 64 KiB body are taken, up to
    // 10,000 measurements and 1 MiB.
    let rows = |n: usize| {
        let row = r#"{"client":"198.51.100.9","datacenter":"ap-south","rtt_ms":180}"#;
        format!(r#"{{"measurements":[{}]}}"#, vec![row; n].join(","))
    };
    let big = rows(2000);
    assert!(big.len() > 64 * 1024);
    let r = send(admin, &post(&big)).await;
    assert_eq!((r.status, r.body.as_str()), (200, r#"{"imported":2000}"#));
    let r = send(admin, &post(&rows(10_001))).await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(
        r.error()
            .contains("measurements: 10001 of them, at most 10000"),
        "{r:?}"
    );
    let declared = format!(
        "POST /latency/import HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         {auth}Content-Length: {}\r\n\r\n",
        1024 * 1024 + 1
    );
    let r = send(admin, declared.as_bytes()).await;
    assert_eq!(
        (r.status, r.error().as_str()),
        (413, "request body over 1048576 bytes")
    );

    // The token is required.
    let r = send(
        admin,
        &request("POST", "/latency/import", "", batch.as_bytes()),
    )
    .await;
    assert_eq!(r.status, 401, "{r:?}");
    // The server's own admin API feeds its latency aggregator.
    let own = server.server.admin_addr().unwrap();
    let r = send(
        own,
        &request("POST", "/latency/import", "", batch.as_bytes()),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        server.server.latency().status()["samples_accepted"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{r:?}"
    );
}
