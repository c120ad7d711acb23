//! Health probes and failover, end to end: real HTTP and TCP backends on
//! loopback addresses (127.0.0.2, .3, .4 stand for three datacenters) that
//! the tests stop, start and make fail.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::harness::{Setup, TestServer, a_answers, ecs_of, write_config};

/// A minimal HTTP/1.1 backend: answers every request with `status`
/// (changeable), or, once stopped, refuses connections.
struct Backend {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    /// Value of the `Meridian-Capacity` response header, if any.
    capacity: Arc<std::sync::Mutex<Option<String>>>,
    requests: Arc<AtomicUsize>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Backend {
    /// Binds `ip:0` (or `ip:port` to restart on the same port).
    async fn start(ip: &str, port: u16) -> Self {
        let listener = TcpListener::bind((ip, port)).await.expect("bind backend");
        let addr = listener.local_addr().unwrap();
        let status = Arc::new(AtomicU16::new(200));
        let requests = Arc::new(AtomicUsize::new(0));
        let capacity = Arc::new(std::sync::Mutex::new(None::<String>));
        let task = {
            let (status, requests) = (Arc::clone(&status), Arc::clone(&requests));
            let capacity = Arc::clone(&capacity);
            tokio::spawn(async move {
                loop {
                    let Ok((mut conn, _)) = listener.accept().await else {
                        return;
                    };
                    let (status, requests) = (Arc::clone(&status), Arc::clone(&requests));
                    let header = match &*capacity.lock().unwrap() {
                        Some(v) => format!("Meridian-Capacity: {v}\r\n"),
                        None => String::new(),
                    };
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 4096];
                        let mut seen = Vec::new();
                        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                            match conn.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => seen.extend_from_slice(&buf[..n]),
                            }
                        }
                        requests.fetch_add(1, Ordering::SeqCst);
                        let code = status.load(Ordering::SeqCst);
                        let body = if code == 200 { "OK healthy" } else { "broken" };
                        let reply = format!(
                            "HTTP/1.1 {code} X\r\nContent-Length: {}\r\n{header}Connection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = conn.write_all(reply.as_bytes()).await;
                    });
                }
            })
        };
        Self {
            addr,
            status,
            capacity,
            requests,
            task: Some(task),
        }
    }

    /// Stops listening: connections are refused from now on.
    fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    fn set_capacity(&self, value: Option<&str>) {
        *self.capacity.lock().unwrap() = value.map(str::to_string);
    }

    fn set_status(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The three example datacenters with HTTP probes on the given backends.
fn zone(backends: [SocketAddr; 3], probe_extra: &str, service_extra: &str) -> String {
    let dc = |name: &str, loc: &str, addrs: &str, b: SocketAddr| {
        format!(
            "[datacenters.{name}]\nlocation = {loc}\naddresses = {addrs}\n[datacenters.{name}.probe]\ntype = \"http\"\ntargets = [\"{b}\"]\npath = \"/health\"\ninterval = \"100ms\"\ntimeout = \"50ms\"\nrise = 2\nfall = 2\njitter = 0.0\n{probe_extra}\n"
        )
    };
    format!(
        r#"
origin = "hc.test."
ns = ["ns1.hc.test."]
[soa]
rname = "hostmaster.hc.test."
serial = 1
[records]
ns1 = [{{ type = "A", value = "192.0.2.53" }}]
{}{}{}
[services.www]
policy = "geo"
datacenters = ["us-east", "eu-west", "ap-southeast"]
ttl = 30
{service_extra}
[services.fo]
policy = "failover"
datacenters = ["eu-west", "us-east", "ap-southeast"]
"#,
        dc(
            "us-east",
            "[39.04, -77.49]",
            r#"["192.0.2.10"]"#,
            backends[0]
        ),
        dc(
            "eu-west",
            "[53.35, -6.26]",
            r#"["198.51.100.10"]"#,
            backends[1]
        ),
        dc(
            "ap-southeast",
            "[1.35, 103.82]",
            r#"["203.0.113.10"]"#,
            backends[2]
        ),
    )
}

async fn three_backends() -> [Backend; 3] {
    [
        Backend::start("127.0.0.2", 0).await,
        Backend::start("127.0.0.3", 0).await,
        Backend::start("127.0.0.4", 0).await,
    ]
}

fn addrs(b: &[Backend; 3]) -> [SocketAddr; 3] {
    [b[0].addr, b[1].addr, b[2].addr]
}

/// Three backends and a server probing them, with extra probe keys and
/// extra `www` service keys and server settings.
async fn hc_server(
    probe_extra: &str,
    service_extra: &str,
    server_toml: &str,
) -> ([Backend; 3], TestServer) {
    let backends = three_backends().await;
    let zone = zone(addrs(&backends), probe_extra, service_extra);
    let s = TestServer::start_with(Setup {
        zones: &[("hc.test.toml", &zone)],
        server_toml,
        ..Setup::default()
    })
    .await;
    (backends, s)
}

/// Waits (bounded) until `check` holds, re-checking after every health
/// publication: no sleeping and hoping.
async fn until<F, Fut>(s: &TestServer, what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut changes = s.server.monitor().subscribe();
    let wait = async {
        loop {
            if check().await {
                return;
            }
            changes.changed().await.expect("monitor alive");
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for: {what}"));
}

async fn www_from_germany(s: &TestServer) -> Vec<String> {
    a_answers(
        &s.ask("www.hc.test.", RecordType::A, Some("11.2.0.0/24"))
            .await,
    )
}

#[tokio::test]
async fn a_dead_datacenter_leaves_the_answers_and_comes_back() {
    let (mut backends, s) = hc_server("", "", "").await;
    // Start-up waited for the first round: everything is up at once.
    assert_eq!(www_from_germany(&s).await, ["198.51.100.10"]);

    // eu-west stops: after `fall` failures Germany goes to the next
    // nearest, us-east, and the answer carries the degraded TTL.
    let eu_port = backends[1].addr.port();
    backends[1].stop();
    until(&s, "eu-west down", || async {
        www_from_germany(&s).await == ["192.0.2.10"]
    })
    .await;
    let r = s
        .ask("www.hc.test.", RecordType::A, Some("11.2.0.0/24"))
        .await;
    assert_eq!(r.answers[0].ttl, 15, "degraded TTL: half of 30 by default");
    assert!(ecs_of(&r).unwrap().2 > 0, "still a per-client answer");
    // The failover service moves to its second choice.
    let r = s.ask("fo.hc.test.", RecordType::A, None).await;
    assert_eq!(a_answers(&r), ["192.0.2.10"]);

    // /status says why.
    let status = s.server.monitor().status();
    let eu = &status["zones"][0]["datacenters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "eu-west")
        .unwrap()
        .clone();
    assert_eq!(eu["observed"], "down");
    assert_eq!(eu["targets"][0]["state"], "down");
    assert!(
        eu["targets"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("connect"),
        "{eu}"
    );

    // It comes back after `rise` passes.
    backends[1] = Backend::start("127.0.0.3", eu_port).await;
    until(&s, "eu-west up", || async {
        www_from_germany(&s).await == ["198.51.100.10"]
    })
    .await;
    let r = s
        .ask("www.hc.test.", RecordType::A, Some("11.2.0.0/24"))
        .await;
    assert_eq!(r.answers[0].ttl, 30);
}

#[tokio::test]
async fn http_status_and_body_checks_fail_a_datacenter() {
    let (backends, s) = hc_server("expect_body = \"healthy\"", "", "").await;
    assert_eq!(www_from_germany(&s).await, ["198.51.100.10"]);
    assert!(
        backends[1].requests.load(Ordering::SeqCst) > 0,
        "probed over HTTP"
    );
    backends[1].set_status(500);
    until(&s, "eu-west failing", || async {
        www_from_germany(&s).await == ["192.0.2.10"]
    })
    .await;
    let status = s.server.monitor().status();
    let text = status.to_string();
    assert!(text.contains("status 500"), "{text}");
    backends[1].set_status(200);
    until(&s, "eu-west healthy", || async {
        www_from_germany(&s).await == ["198.51.100.10"]
    })
    .await;
}

#[tokio::test]
async fn every_all_down_choice_behaves_as_documented() {
    let backends = three_backends().await;
    let cases = [
        ("when_all_down = \"all\"", "all"),
        ("when_all_down = \"none\"", "none"),
        ("when_all_down = \"servfail\"", "servfail"),
        (
            "when_all_down = \"fallback\"\nfallback = [\"192.0.2.250\"]",
            "fallback",
        ),
    ];
    for (extra, kind) in cases {
        let zone = zone(addrs(&backends), "", extra);
        let s = TestServer::start(&[("hc.test.toml", &zone)]).await;
        for b in &backends {
            b.set_status(503);
        }
        until(&s, "all down", || async {
            let st = s.server.monitor().status();
            st["zones"][0]["services"][0]["all_down"] == true
        })
        .await;
        let r = s
            .ask("www.hc.test.", RecordType::A, Some("11.2.0.0/24"))
            .await;
        match kind {
            // Fail open: the healthy-state answer, with the degraded TTL.
            "all" => {
                assert_eq!(a_answers(&r), ["198.51.100.10"]);
                assert_eq!(r.answers[0].ttl, 15);
            }
            "none" => {
                assert_eq!(r.metadata.response_code, ResponseCode::NoError);
                assert!(r.answers.is_empty());
                assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
            }
            "servfail" => assert_eq!(r.metadata.response_code, ResponseCode::ServFail),
            _ => {
                assert_eq!(a_answers(&r), ["192.0.2.250"]);
                assert_eq!(r.answers[0].ttl, 15);
            }
        }
        for b in &backends {
            b.set_status(200);
        }
    }
}

#[tokio::test]
async fn drain_and_force_up_via_the_admin_api_persist() {
    let (backends, s) = hc_server("", "", "").await;
    let admin = s.server.admin_addr().expect("admin API");
    let client = reqwest_like::Client::new(admin);

    assert_eq!(client.get("/health").await.0, 200);
    // Drain a healthy datacenter: Germany moves away from eu-west.
    let (code, body) = client.post("/datacenters/hc.test/eu-west/drain").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(www_from_germany(&s).await, ["192.0.2.10"]);
    let (_, status) = client.get("/status").await;
    assert!(status.contains("\"override\":\"drain\""), "{status}");
    // Unknown names are 404s with a reason.
    let (code, body) = client.post("/datacenters/hc.test/nowhere/drain").await;
    assert_eq!(code, 404);
    assert!(body.contains("nowhere"));

    // The override survives a reload and a restart (state file).
    s.server.reload().unwrap();
    assert_eq!(www_from_germany(&s).await, ["192.0.2.10"]);
    let state_file = s.dir.path().join("meridian-state.json");
    assert!(
        std::fs::read_to_string(&state_file)
            .unwrap()
            .contains("drain")
    );
    let again = meridian::Server::start(
        &s.dir.path().join("meridian.toml"),
        Some(vec!["127.0.0.1:0".parse().unwrap()]),
    )
    .await;
    // (The first server still holds the admin port only if fixed; ours is :0.)
    let again = again.expect("second server");
    let r =
        crate::harness::udp_query_at(again.local_addrs()[0], "www.hc.test.", Some("11.2.0.0/24"))
            .await;
    assert_eq!(a_answers(&r), ["192.0.2.10"]);
    drop(again);

    // Undrain: back to eu-west. Force-up beats a failing probe.
    assert_eq!(
        client.post("/datacenters/hc.test/eu-west/undrain").await.0,
        200
    );
    assert_eq!(www_from_germany(&s).await, ["198.51.100.10"]);
    backends[1].set_status(500);
    until(&s, "eu-west failing", || async {
        www_from_germany(&s).await == ["192.0.2.10"]
    })
    .await;
    assert_eq!(
        client.post("/datacenters/hc.test/eu-west/force-up").await.0,
        200
    );
    assert_eq!(www_from_germany(&s).await, ["198.51.100.10"]);
}

#[tokio::test]
async fn the_admin_token_is_required_when_configured() {
    let (_backends, s) = hc_server(
        "",
        "",
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"0123456789abcdef-secret\"",
    )
    .await;
    let admin = s.server.admin_addr().unwrap();
    let anonymous = reqwest_like::Client::new(admin);
    assert_eq!(
        anonymous.get("/health").await.0,
        200,
        "liveness needs no token"
    );
    assert_eq!(anonymous.get("/status").await.0, 401);
    assert_eq!(
        anonymous.post("/datacenters/hc.test/eu-west/drain").await.0,
        401
    );
    let authorized = reqwest_like::Client::with_token(admin, "0123456789abcdef-secret");
    assert_eq!(authorized.get("/status").await.0, 200);
}

#[tokio::test]
async fn web_pages_cannot_use_the_admin_api_without_a_token() {
    let (_backends, s) = hc_server("", "", "").await;
    let admin = s.server.admin_addr().unwrap();
    // A cross-site form POST (browsers send Origin) is refused...
    let page = reqwest_like::Client::from_web_page(admin, None, Some("http://evil.example"));
    assert_eq!(page.post("/datacenters/hc.test/eu-west/drain").await.0, 403);
    // ...and so is DNS rebinding (a foreign name in Host).
    let rebound = reqwest_like::Client::from_web_page(admin, Some("evil.example:5380"), None);
    assert_eq!(rebound.get("/status").await.0, 403);
    let localhost = reqwest_like::Client::from_web_page(admin, Some("localhost:5380"), None);
    assert_eq!(localhost.get("/status").await.0, 200);
    assert_eq!(
        www_from_germany(&s).await,
        ["198.51.100.10"],
        "nothing was drained"
    );
}

#[tokio::test]
async fn a_drain_works_even_when_the_state_file_cannot_be_written() {
    let backends = three_backends().await;
    let zone = zone(addrs(&backends), "", "");
    let s = TestServer::start_with(Setup {
        zones: &[("hc.test.toml", &zone)],
        // Reads find nothing there, and nothing can be created there.
        server_toml: "state_file = \"/proc/meridian-no-such-dir/state.json\"",
        ..Setup::default()
    })
    .await;
    let client = reqwest_like::Client::new(s.server.admin_addr().unwrap());
    let (code, body) = client.post("/datacenters/hc.test/eu-west/drain").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"persisted\":false"), "{body}");
    assert_eq!(www_from_germany(&s).await, ["192.0.2.10"]);
}

#[tokio::test]
async fn a_reload_that_changes_probe_settings_keeps_target_state() {
    let mut backends = three_backends().await;
    let zone_text = zone(addrs(&backends), "", "");
    let s = TestServer::start(&[("hc.test.toml", &zone_text)]).await;
    backends[1].stop();
    until(&s, "eu-west down", || async {
        www_from_germany(&s).await == ["192.0.2.10"]
    })
    .await;
    // New interval and rise: the dead datacenter must stay out at once.
    let edited = zone_text
        .replace("interval = \"100ms\"", "interval = \"200ms\"")
        .replace("rise = 2", "rise = 3");
    std::fs::write(s.dir.path().join("zones/hc.test.toml"), edited).unwrap();
    s.server.reload().unwrap();
    assert_eq!(www_from_germany(&s).await, ["192.0.2.10"]);
    let status = s.server.monitor().status();
    assert!(
        status.to_string().contains("\"state\":\"down\""),
        "{status}"
    );
}

#[tokio::test]
async fn external_health_input_and_warmup() {
    // External targets have no active checks: their state comes from the
    // API. Before any input they are unknown, and each service's warm-up
    // decides: assume_up answers with them, assume_down does not.
    let zone = r#"
origin = "ext.test."
ns = ["ns1.ext.test."]
[soa]
rname = "hostmaster.ext.test."
serial = 1
[records]
ns1 = [{ type = "A", value = "192.0.2.53" }]
[datacenters.primary]
addresses = ["192.0.2.1"]
probe = { type = "external" }
[datacenters.backup]
addresses = ["192.0.2.2"]
[services.optimistic]
policy = "failover"
datacenters = ["primary", "backup"]
[services.careful]
policy = "failover"
datacenters = ["primary", "backup"]
warmup = "assume_down"
"#;
    let s = TestServer::start(&[("ext.test.toml", zone)]).await;
    let ask = |name: &'static str| {
        let s = &s;
        async move { a_answers(&s.ask(name, RecordType::A, None).await) }
    };
    assert_eq!(ask("optimistic.ext.test.").await, ["192.0.2.1"]);
    assert_eq!(ask("careful.ext.test.").await, ["192.0.2.2"]);
    let client = reqwest_like::Client::new(s.server.admin_addr().unwrap());
    let (code, body) = client
        .put("/targets/ext.test/primary/192.0.2.1", r#"{"state":"up"}"#)
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(ask("careful.ext.test.").await, ["192.0.2.1"]);
    assert_eq!(
        client
            .put("/targets/ext.test/primary/192.0.2.1", r#"{"state":"down"}"#)
            .await
            .0,
        200
    );
    assert_eq!(ask("optimistic.ext.test.").await, ["192.0.2.2"]);
    assert_eq!(
        client
            .put(
                "/targets/ext.test/primary/192.0.2.1",
                r#"{"state":"sideways"}"#
            )
            .await
            .0,
        400
    );
    assert_eq!(
        client
            .put("/targets/ext.test/primary/192.0.2.9", r#"{"state":"up"}"#)
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn a_dead_target_is_never_answered_at_start_up() {
    // The probe round runs before the server answers its first query.
    let mut backends = three_backends().await;
    backends[1].stop();
    let zone = zone(addrs(&backends), "", "");
    let s = TestServer::start(&[("hc.test.toml", &zone)]).await;
    assert_eq!(www_from_germany(&s).await, ["192.0.2.10"]);
}

#[tokio::test]
async fn a_hanging_target_does_not_slow_dns() {
    // A backend that accepts connections and never answers: every probe
    // of it waits for its full timeout.
    let hang = TcpListener::bind("127.0.0.5:0").await.unwrap();
    let hang_addr = hang.local_addr().unwrap();
    let held = Arc::new(AtomicUsize::new(0));
    let holder = {
        let held = Arc::clone(&held);
        tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((c, _)) = hang.accept().await {
                held.fetch_add(1, Ordering::SeqCst);
                conns.push(c);
            }
        })
    };
    let backends = three_backends().await;
    let mut a = addrs(&backends);
    a[1] = hang_addr;
    let zone = zone(a, "", "").replace("timeout = \"50ms\"", "timeout = \"80ms\"");
    let s = TestServer::start(&[("hc.test.toml", &zone)]).await;
    // eu-west never answers its probes: down from the first round.
    assert_eq!(www_from_germany(&s).await, ["192.0.2.10"]);
    // Hundreds of queries while probes hang: each is answered (the
    // exchange itself is bounded), from the snapshot, not the probes.
    let before = held.load(Ordering::SeqCst);
    for _ in 0..300 {
        let r = s
            .ask("www.hc.test.", RecordType::A, Some("11.2.0.0/24"))
            .await;
        assert_eq!(a_answers(&r), ["192.0.2.10"]);
    }
    // Probes kept hanging meanwhile (new connections were accepted).
    let during = held.load(Ordering::SeqCst);
    assert!(during >= before, "{before} -> {during}");
    holder.abort();
}

#[tokio::test]
async fn tcp_and_dns_probes() {
    // TCP: a listener that accepts. DNS: Meridian itself answers the
    // probe's SOA query for its own zone.
    let tcp = TcpListener::bind("127.0.0.6:0").await.unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    let dns_server = TestServer::example().await;
    let zone = format!(
        r#"
origin = "p.test."
ns = ["ns1.p.test."]
[soa]
rname = "hostmaster.p.test."
serial = 1
[records]
ns1 = [{{ type = "A", value = "192.0.2.53" }}]
[datacenters.tcp]
addresses = ["192.0.2.1"]
probe = {{ type = "tcp", targets = ["{tcp_addr}"], interval = "100ms", timeout = "50ms", fall = 1 }}
[datacenters.dns]
addresses = ["192.0.2.2"]
probe = {{ type = "dns", targets = ["{}"], name = "gslb.example.com.", qtype = "SOA", interval = "100ms", timeout = "50ms" }}
[datacenters.dnsbad]
addresses = ["192.0.2.3"]
probe = {{ type = "dns", targets = ["{}"], name = "nope.gslb.example.com.", qtype = "A", interval = "100ms", timeout = "50ms" }}
[services.t]
policy = "failover"
datacenters = ["tcp", "dns"]
[services.d]
policy = "failover"
datacenters = ["dnsbad", "dns"]
"#,
        dns_server.addr, dns_server.addr
    );
    let s = TestServer::start(&[("p.test.toml", &zone)]).await;
    let ask = |name: &'static str| {
        let s = &s;
        async move { a_answers(&s.ask(name, RecordType::A, None).await) }
    };
    assert_eq!(ask("t.p.test.").await, ["192.0.2.1"]);
    // NXDOMAIN is not the expected NOERROR: dnsbad is down.
    assert_eq!(ask("d.p.test.").await, ["192.0.2.2"]);
    drop(tcp);
    until(&s, "tcp target down", || async {
        ask("t.p.test.").await == ["192.0.2.2"]
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn down_within_fall_intervals_on_the_paused_clock() {
    // Virtual time: the schedule itself is under test. A TCP listener on
    // loopback accepts (or refuses, once dropped) without waiting, so
    // the clock only moves through the probe schedule.
    let listener = TcpListener::bind("127.0.0.7:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let zone = format!(
        r#"
origin = "clock.test."
ns = ["ns1.clock.test."]
[soa]
rname = "hostmaster.clock.test."
serial = 1
[records]
ns1 = [{{ type = "A", value = "192.0.2.53" }}]
[datacenters.a]
addresses = ["192.0.2.1"]
probe = {{ type = "tcp", targets = ["{addr}"], interval = "10s", timeout = "2s", fall = 3, rise = 2, jitter = 0.0 }}
[datacenters.b]
addresses = ["192.0.2.2"]
[services.s]
policy = "failover"
datacenters = ["a", "b"]
"#
    );
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &Setup {
            zones: &[("clock.test.toml", &zone)],
            ..Setup::default()
        },
    );
    let server = meridian::Server::start(&path, Some(vec!["127.0.0.1:0".parse().unwrap()]))
        .await
        .unwrap();
    let usable = |server: &meridian::Server| {
        server.monitor().status()["zones"][0]["datacenters"][0]["usable"] == true
    };
    assert!(usable(&server));
    let mut changes = server.monitor().subscribe();
    drop(listener);
    let start = tokio::time::Instant::now();
    changes.changed().await.unwrap();
    let took = start.elapsed();
    assert!(!usable(&server));
    // Three failures, one per interval: at most fall x interval after the
    // listener went away, and more than (fall - 1) intervals.
    assert!(took <= Duration::from_secs(30), "{took:?}");
    assert!(took > Duration::from_secs(20), "{took:?}");
}

/// A tiny HTTP client for the admin API (raw HTTP/1.1 over TCP), so the
/// tests speak to the real listener without another dependency.
pub mod reqwest_like {
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pub struct Client {
        addr: SocketAddr,
        token: Option<String>,
        host: Option<String>,
        extra: String,
    }

    impl Client {
        pub fn new(addr: SocketAddr) -> Self {
            Self {
                addr,
                token: None,
                host: None,
                extra: String::new(),
            }
        }

        pub fn with_token(addr: SocketAddr, token: &str) -> Self {
            Self {
                token: Some(token.into()),
                ..Self::new(addr)
            }
        }

        /// With extra request header lines, each ending in CRLF.
        pub fn with_headers(addr: SocketAddr, extra: &str) -> Self {
            Self {
                extra: extra.to_string(),
                ..Self::new(addr)
            }
        }

        /// As a browser on another site would send it.
        pub fn from_web_page(addr: SocketAddr, host: Option<&str>, origin: Option<&str>) -> Self {
            Self {
                host: host.map(str::to_string),
                extra: origin
                    .map(|o| format!("Origin: {o}\r\n"))
                    .unwrap_or_default(),
                ..Self::new(addr)
            }
        }

        async fn send(&self, method: &str, path: &str, body: &str) -> (u16, String) {
            let mut s = tokio::net::TcpStream::connect(self.addr).await.unwrap();
            let auth = self
                .token
                .as_ref()
                .map(|t| format!("Authorization: Bearer {t}\r\n"))
                .unwrap_or_default();
            let req = format!(
                "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}{}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                self.host.clone().unwrap_or_else(|| self.addr.to_string()),
                self.extra,
                body.len()
            );
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            tokio::time::timeout(crate::harness::EXCHANGE_TIMEOUT, s.read_to_string(&mut out))
                .await
                .expect("admin API answers")
                .unwrap();
            let code = out
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
            (code, body)
        }

        pub async fn get(&self, path: &str) -> (u16, String) {
            self.send("GET", path, "").await
        }

        pub async fn post(&self, path: &str) -> (u16, String) {
            self.send("POST", path, "").await
        }

        pub async fn put(&self, path: &str, body: &str) -> (u16, String) {
            self.send("PUT", path, body).await
        }

        pub async fn post_json(&self, path: &str, body: &str) -> (u16, String) {
            self.send("POST", path, body).await
        }
    }
}

/// Load-aware weights: a weighted service follows the spare capacity its
/// real HTTP backends report in `Meridian-Capacity`, `drain` makes a
/// datacenter a standby, `down` fails the probe, and a datacenter that
/// stops reporting returns to its configured weight after
/// `capacity_hold`.
#[tokio::test]
async fn weights_follow_the_capacity_backends_report() {
    let backends = three_backends().await;
    let mut zone = zone(addrs(&backends), "capacity_hold = \"400ms\"", "");
    zone.push_str(
        "[services.lb]\npolicy = \"weighted\"\ndatacenters = [\"us-east\", \"eu-west\", \"ap-southeast\"]\nweights = { us-east = 1, eu-west = 1, ap-southeast = 2 }\n",
    );
    let s = TestServer::start_with(Setup {
        zones: &[("hc.test.toml", &zone)],
        ..Setup::default()
    })
    .await;
    let shares = |s: &TestServer| {
        let addr = s.addr;
        async move {
            let mut counts = std::collections::BTreeMap::new();
            for _ in 0..1_000 {
                let r = crate::harness::udp_query_at(addr, "lb.hc.test.", None).await;
                for a in a_answers(&r) {
                    *counts.entry(a).or_insert(0usize) += 1;
                }
            }
            counts
        }
    };
    let effective = |s: &TestServer, dc: &str| {
        let status = s.server.monitor().status();
        status["zones"][0]["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "lb")
            .unwrap()["weights"][dc]["effective"]
            .as_f64()
            .unwrap()
    };
    let us = "192.0.2.10";
    let eu = "198.51.100.10";
    let ap = "203.0.113.10";

    // Everyone at full capacity: 1 : 1 : 2.
    let c = shares(&s).await;
    assert!(
        (150..=350).contains(&c[us]) && (380..=620).contains(&c[ap]),
        "{c:?}"
    );

    // eu-west drains itself and us-east reports 25 % spare: us-east's
    // weight becomes 0.25 against ap-southeast's 2 (1 in 9 answers).
    backends[1].set_capacity(Some("drain"));
    backends[0].set_capacity(Some("25%"));
    until(&s, "capacities applied", || async {
        effective(&s, "eu-west") == 0.0 && effective(&s, "us-east") == 0.25
    })
    .await;
    let c = shares(&s).await;
    assert_eq!(c.get(eu), None, "a drained datacenter is a standby: {c:?}");
    // 1,000 draws at p = 1/9: mean 111, sd 10; 4 sd either way.
    assert!((70..=155).contains(&c[us]), "{c:?}");
    let status = s.server.monitor().status();
    let dcs = status["zones"][0]["datacenters"].as_array().unwrap();
    let us_east = dcs.iter().find(|d| d["name"] == "us-east").unwrap();
    assert_eq!(us_east["capacity"], 25, "{status}");
    assert_eq!(us_east["targets"][0]["reported_capacity"], 25);

    // `down` fails the probe: ap-southeast leaves, us-east takes all.
    backends[2].set_capacity(Some("down"));
    until(&s, "ap-southeast down", || async {
        let status = s.server.monitor().status();
        status["zones"][0]["datacenters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == "ap-southeast" && d["observed"] == "down")
    })
    .await;
    let c = shares(&s).await;
    assert_eq!(c.keys().collect::<Vec<_>>(), [&us.to_string()], "{c:?}");

    // They stop reporting: after the hold, configured weights again.
    for b in &backends {
        b.set_capacity(None);
    }
    until(&s, "configured weights", || async {
        effective(&s, "eu-west") == 1.0 && effective(&s, "us-east") == 1.0
    })
    .await;
    until(&s, "eu-west answers again", || async {
        shares(&s).await.contains_key(eu)
    })
    .await;
}

/// `GET /explain` prints the live decision: after a drain, the trace shows
/// the drained datacenter unusable and the answer it led to.
#[tokio::test]
async fn explain_over_the_admin_api_shows_the_live_decision() {
    let (_backends, s) = hc_server("", "", "").await;
    let client = reqwest_like::Client::new(s.server.admin_addr().expect("admin API"));
    let url = "/explain?name=www.hc.test&type=A&client=11.2.0.0/24";
    let (code, body) = client.get(url).await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["service"]["chosen"],
        serde_json::json!(["eu-west"]),
        "{v}"
    );
    assert_eq!(v["service"]["stages"][0]["step"], "geo");
    assert_eq!(
        v["answer"]["answers"][0],
        "www.hc.test. 30 IN A 198.51.100.10"
    );

    client.post("/datacenters/hc.test/eu-west/drain").await;
    let (_, body) = client.get(url).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let service = &v["service"];
    assert_eq!(service["chosen"], serde_json::json!(["us-east"]), "{v}");
    assert_eq!(service["degraded"], true);
    assert_eq!(service["ttl"], 15);
    let health = service["stages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(health["step"], "health");
    let eu = health["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "eu-west")
        .unwrap()
        .clone();
    assert_eq!(eu["usable"], false, "{health}");
    assert!(
        v["answer"]["answers"][0]
            .as_str()
            .unwrap()
            .ends_with("192.0.2.10")
    );

    let (code, body) = client.get("/explain?name=www.hc.test").await;
    assert_eq!(code, 400, "client is required: {body}");
    let (code, _) = client
        .get("/explain?name=www.hc.test&client=nonsense")
        .await;
    assert_eq!(code, 400);
}

/// Health per address: a datacenter with two answer addresses, each probed
/// on its own (the default targets). A dead address leaves the answers
/// while the datacenter stays up; when both are dead the datacenter is
/// down and the next one answers; a recovered address comes back.
#[tokio::test]
async fn a_dead_address_leaves_the_answer_while_its_datacenter_stays_up() {
    let mut a = Backend::start("127.0.0.2", 0).await;
    let port = a.addr.port();
    let mut b = Backend::start("127.0.0.3", port).await;
    let zone = format!(
        r#"
origin = "pa.test."
ns = ["ns1.pa.test."]
[soa]
rname = "hostmaster.pa.test."
serial = 1
[records]
ns1 = [{{ type = "A", value = "192.0.2.53" }}]
[datacenters.multi]
addresses = ["127.0.0.2", "127.0.0.3"]
[datacenters.multi.probe]
type = "http"
port = {port}
interval = "100ms"
timeout = "50ms"
rise = 1
fall = 1
jitter = 0.0
[datacenters.other]
addresses = ["192.0.2.99"]
[services.www]
policy = "failover"
datacenters = ["multi", "other"]
"#
    );
    let s = TestServer::start_with(Setup {
        zones: &[("pa.test.toml", &zone)],
        ..Setup::default()
    })
    .await;
    let answer = || async {
        let mut v = a_answers(&s.ask("www.pa.test.", RecordType::A, None).await);
        v.sort();
        v
    };
    assert_eq!(answer().await, ["127.0.0.2", "127.0.0.3"]);

    b.stop();
    until(&s, "127.0.0.3 left out", || async {
        answer().await == ["127.0.0.2"]
    })
    .await;
    let status = s.server.monitor().status();
    let multi = status["zones"][0]["datacenters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "multi")
        .unwrap()
        .clone();
    assert_eq!(multi["observed"], "up", "min_up 1 still holds: {multi}");
    assert_eq!(multi["down_addresses"], serde_json::json!(["127.0.0.3"]));

    a.stop();
    until(&s, "multi down, other answers", || async {
        answer().await == ["192.0.2.99"]
    })
    .await;

    b = Backend::start("127.0.0.3", port).await;
    until(&s, "only the recovered address", || async {
        answer().await == ["127.0.0.3"]
    })
    .await;
    drop(b);
}

/// External input drives per-address health too: marking one of a
/// datacenter's two external targets down through the API leaves its
/// address out at once, though the datacenter's state does not change.
#[tokio::test]
async fn external_input_for_one_address_leaves_it_out() {
    let zone = r#"
origin = "ea.test."
ns = ["ns1.ea.test."]
[soa]
rname = "hostmaster.ea.test."
serial = 1
[records]
ns1 = [{ type = "A", value = "192.0.2.53" }]
[datacenters.pair]
addresses = ["192.0.2.1", "192.0.2.2"]
[datacenters.pair.probe]
type = "external"
port = 80
[services.www]
policy = "failover"
datacenters = ["pair"]
warmup = "assume_up"
"#;
    let s = TestServer::start(&[("ea.test.toml", zone)]).await;
    let client = reqwest_like::Client::new(s.server.admin_addr().expect("admin API"));
    let answer = || async {
        let mut v = a_answers(&s.ask("www.ea.test.", RecordType::A, None).await);
        v.sort();
        v
    };
    for ip in ["192.0.2.1", "192.0.2.2"] {
        let (code, body) = client
            .put(&format!("/targets/ea.test/pair/{ip}"), r#"{"state":"up"}"#)
            .await;
        assert_eq!(code, 200, "{body}");
    }
    assert_eq!(answer().await, ["192.0.2.1", "192.0.2.2"]);
    let (code, body) = client
        .put("/targets/ea.test/pair/192.0.2.2", r#"{"state":"down"}"#)
        .await;
    assert_eq!(code, 200, "{body}");
    // The API call has returned, and the change is published with it.
    assert_eq!(answer().await, ["192.0.2.1"]);
    let (code, body) = client
        .put("/targets/ea.test/pair/192.0.2.2", r#"{"state":"up"}"#)
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(answer().await, ["192.0.2.1", "192.0.2.2"]);
}
