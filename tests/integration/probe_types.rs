//! The probe types of issue 14 against real targets on loopback: exec
//! commands, a tonic gRPC health server, TLS servers with certificates
//! made here (rcgen), and ICMP echo to 127.0.0.1 and ::1. Each test
//! checks `/status` and that DNS answers follow the probes.
//! (ICMP to an address whose link goes down: `tests/probe_netns.rs`.)

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::RecordType;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::harness::{TestServer, a_answers, poll, zone_head};

const ORIGIN: &str = "types.test.";

/// A zone with one datacenter per `(name, probe table)`, addresses
/// 192.0.2.1, .2, ... in that order, plus `backup` (192.0.2.99, no
/// probe) last, and a failover service `www` over all of them.
fn zone(dcs: &[(&str, &str)]) -> String {
    // The head's TTL 3600 and SOA minimum 60 are the defaults.
    let mut text = zone_head(ORIGIN);
    let mut names = Vec::new();
    for (i, (name, probe)) in dcs.iter().enumerate() {
        text.push_str(&format!(
            "[datacenters.{name}]\naddresses = [\"192.0.2.{}\"]\nprobe = {{ {probe} }}\n",
            i + 1
        ));
        names.push(format!("\"{name}\""));
    }
    names.push("\"backup\"".into());
    text.push_str(&format!(
        "[datacenters.backup]\naddresses = [\"192.0.2.99\"]\n\
         [services.www]\npolicy = \"failover\"\ndatacenters = [{}]\n",
        names.join(", ")
    ));
    text
}

async fn start(dcs: &[(&str, &str)]) -> TestServer {
    TestServer::start(&[("types.test.toml", &zone(dcs))]).await
}

/// The datacenter `name` in `/status`.
fn dc(s: &TestServer, name: &str) -> Value {
    let status = s.server.monitor().status();
    status["zones"][0]["datacenters"]
        .as_array()
        .and_then(|all| all.iter().find(|d| d["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no datacenter {name} in {status}"))
}

/// Polls `/status` every 20 ms for at most `limit` until `check` holds
/// for datacenter `name`.
async fn until_within(
    s: &TestServer,
    name: &str,
    what: &str,
    limit: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    poll(limit, &format!("{name}: {what}"), async || {
        let d = dc(s, name);
        if check(&d) {
            Ok(d)
        } else {
            Err(format!("{d:#}"))
        }
    })
    .await
}

async fn until(s: &TestServer, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    until_within(s, name, what, Duration::from_secs(15), check).await
}

fn target(d: &Value) -> &Value {
    &d["targets"][0]
}

/// The address `www` answers with.
async fn answer(s: &TestServer) -> Vec<String> {
    a_answers(&s.ask(&format!("www.{ORIGIN}"), RecordType::A, None).await)
}

/// Polls the answer for `www` until it is `want`.
async fn until_answer(s: &TestServer, want: &str) {
    poll(
        Duration::from_secs(15),
        &format!("www to answer {want}"),
        async || {
            let got = answer(s).await;
            if got == [want] {
                Ok(())
            } else {
                Err(format!("www answers {got:?}"))
            }
        },
    )
    .await;
}

/// A TOML array of strings.
fn argv(args: &[&str]) -> String {
    let quoted: Vec<String> = args
        .iter()
        .map(|a| format!("\"{}\"", a.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("[{}]", quoted.join(", "))
}

//------------ exec ----------------------------------------------------------

#[tokio::test]
async fn exec_passes_on_exit_0_and_its_first_line_is_the_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flag = dir.path().join("fail");
    // Fails with a message while the flag file exists; otherwise checks
    // the environment it was promised.
    let script = format!(
        "if [ -e '{}' ]; then echo; echo 'backend says no'; echo 'second line'; exit 3; fi; \
         [ \"$MERIDIAN_TARGET_ADDRESS\" = 127.0.0.1 ] || {{ echo \"address $MERIDIAN_TARGET_ADDRESS\"; exit 1; }}; \
         [ \"$MERIDIAN_TARGET_PORT\" = 8080 ] || {{ echo \"port $MERIDIAN_TARGET_PORT\"; exit 1; }}; \
         [ \"$MERIDIAN_ZONE\" = {ORIGIN} ] || {{ echo \"zone $MERIDIAN_ZONE\"; exit 1; }}; \
         [ \"$MERIDIAN_DATACENTER\" = checked ] || {{ echo \"dc $MERIDIAN_DATACENTER\"; exit 1; }}; \
         [ \"$MERIDIAN_TIMEOUT_MS\" = 1500 ] || {{ echo \"timeout $MERIDIAN_TIMEOUT_MS\"; exit 1; }}; \
         exit 0",
        flag.display()
    );
    let probe = format!(
        "type = \"exec\", command = {}, targets = [\"127.0.0.1:8080\"], \
         interval = \"2s\", timeout = \"1500ms\", rise = 1, fall = 1, jitter = 0.0",
        argv(&["/bin/sh", "-c", &script])
    );
    // A shorter interval would do on an idle machine; 2 s leaves room
    // for a busy one, and `until` polls rather than sleeps.
    let s = start(&[("checked", &probe)]).await;
    let d = until(&s, "checked", "the command passes", |d| {
        target(d)["last_result"] == "pass"
    })
    .await;
    assert_eq!(target(&d)["state"], "up", "{d:#}");
    assert!(target(&d)["last_error"].is_null(), "{d:#}");
    assert!(target(&d)["cert_days_left"].is_null(), "{d:#}");
    assert_eq!(d["probe"]["type"], "exec");
    until_answer(&s, "192.0.2.1").await;

    std::fs::write(&flag, b"").expect("flag");
    let d = until(&s, "checked", "the command fails", |d| {
        target(d)["last_result"] == "fail"
    })
    .await;
    assert_eq!(target(&d)["last_error"], "backend says no", "{d:#}");
    assert_eq!(target(&d)["state"], "down", "{d:#}");
    until_answer(&s, "192.0.2.99").await;

    std::fs::remove_file(&flag).expect("unflag");
    until(&s, "checked", "the command passes again", |d| {
        target(d)["state"] == "up"
    })
    .await;
    until_answer(&s, "192.0.2.1").await;
}

/// Whether process `pid` is gone: no `/proc` entry, or a zombie (dead,
/// waiting for its parent to reap it).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn read_pids(path: &Path) -> Vec<u32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[tokio::test]
async fn a_hanging_command_is_killed_at_the_timeout_with_everything_it_started() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pids = dir.path().join("pids");
    // The shell starts a child that sleeps, records both PIDs, and waits:
    // killing only the shell would leave the sleep behind.
    let script = format!("sleep 600 & echo $$ $! >> '{}'; wait", pids.display());
    let probe = format!(
        "type = \"exec\", command = {}, targets = [\"127.0.0.1\"], \
         interval = \"3s\", timeout = \"400ms\", rise = 1, fall = 1, jitter = 0.0",
        argv(&["/bin/sh", "-c", &script])
    );
    let s = start(&[("hangs", &probe)]).await;
    let d = until(&s, "hangs", "the command times out", |d| {
        target(d)["last_result"] == "fail"
    })
    .await;
    assert_eq!(target(&d)["last_error"], "timed out after 400ms", "{d:#}");
    until_answer(&s, "192.0.2.99").await;

    let seen = read_pids(&pids);
    assert!(seen.len() >= 2, "the script ran: {seen:?}");
    poll(
        Duration::from_secs(5),
        "the script's processes to end",
        async || {
            let alive: Vec<u32> = seen.iter().copied().filter(|&p| !gone(p)).collect();
            if alive.is_empty() {
                Ok(())
            } else {
                Err(format!("left behind after the timeout: {alive:?}"))
            }
        },
    )
    .await;
}

/// Processes whose command line contains `marker`.
fn running_with(marker: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.windows(marker.len()).any(|w| w == marker.as_bytes()))
                && !gone(pid)
        })
        .collect()
}

#[tokio::test]
async fn output_is_bounded_and_drained_and_an_endless_writer_is_killed() {
    // A megabyte on one line, then a failure: the probe keeps the first
    // 4 KiB and reads the rest away, so the command is never stuck on a
    // full pipe and its exit (not the timeout) ends the probe.
    let flood = "head -c 1000000 /dev/zero | tr '\\000' x; echo; echo tail; exit 1";
    let flood_probe = format!(
        "type = \"exec\", command = {}, targets = [\"127.0.0.1\"], \
         interval = \"3s\", timeout = \"2500ms\", rise = 1, fall = 1, jitter = 0.0",
        argv(&["/bin/sh", "-c", flood])
    );
    // `yes` never stops: killed at the timeout, like a hang.
    let marker = format!("meridian-probe-test-{}", std::process::id());
    let yes_probe = format!(
        "type = \"exec\", command = {}, targets = [\"127.0.0.1\"], \
         interval = \"3s\", timeout = \"500ms\", rise = 1, fall = 1, jitter = 0.0",
        argv(&["yes", &marker])
    );
    let s = start(&[("flood", &flood_probe), ("chatty", &yes_probe)]).await;

    let d = until(&s, "flood", "the command fails", |d| {
        target(d)["last_result"] == "fail"
    })
    .await;
    let error = target(&d)["last_error"].as_str().expect("error text");
    assert_eq!(error.len(), 4096, "{}", &error[..error.len().min(100)]);
    assert!(error.bytes().all(|b| b == b'x'));

    let d = until(&s, "chatty", "yes is stopped", |d| {
        target(d)["last_result"] == "fail"
    })
    .await;
    assert_eq!(target(&d)["last_error"], "timed out after 500ms", "{d:#}");
    until_answer(&s, "192.0.2.99").await;
    // Every `yes` started so far is gone once its probe timed out; the
    // next starts only at the next interval, 3 s after the first.
    poll(Duration::from_secs(2), "every yes to end", async || {
        let alive = running_with(&marker);
        if alive.is_empty() {
            Ok(())
        } else {
            Err(format!("yes still runs: {alive:?}"))
        }
    })
    .await;
}

#[tokio::test]
async fn exec_probes_take_a_probe_slot_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Two commands that fail if they ever run at the same time: each
    // holds a directory as a lock while it runs.
    let script = format!(
        "mkdir '{0}/lock' 2>/dev/null || {{ echo overlap; exit 1; }}; sleep 0.3; rmdir '{0}/lock'",
        dir.path().display()
    );
    let probe = format!(
        "type = \"exec\", command = {}, targets = [\"127.0.0.1\"], \
         interval = \"1s\", timeout = \"800ms\", rise = 1, fall = 1, jitter = 0.0",
        argv(&["/bin/sh", "-c", &script])
    );
    let text = zone(&[("one", &probe), ("two", &probe)]);
    let s = TestServer::start_with(crate::harness::Setup {
        zones: &[("types.test.toml", &text)],
        server_toml: "max_probes_in_flight = 1",
        ..crate::harness::Setup::default()
    })
    .await;
    // Both start at once (no jitter); with one slot the second waits.
    for name in ["one", "two"] {
        let d = until(&s, name, "three probes", |d| {
            target(d)["probes"].as_u64() >= Some(3)
        })
        .await;
        let t = target(&d);
        assert_eq!(t["consecutive_passes"], t["probes"], "{d:#}");
        assert!(t["last_error"].is_null(), "{d:#}");
    }
}

//------------ gRPC ----------------------------------------------------------

/// A tonic gRPC server with the standard health service on 127.0.0.1.
struct GrpcServer {
    addr: SocketAddr,
    reporter: tonic_health::server::HealthReporter,
    task: tokio::task::JoinHandle<()>,
}

impl GrpcServer {
    async fn start() -> Self {
        let (reporter, service) = tonic_health::server::health_reporter();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        });
        Self {
            addr,
            reporter,
            task,
        }
    }

    async fn set(&self, service: &str, serving: bool) {
        let status = if serving {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        self.reporter.set_service_status(service, status).await;
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const GRPC: &str = r#"type = "grpc", interval = "300ms", timeout = "250ms", rise = 1, fall = 1"#;

#[tokio::test]
async fn grpc_answers_follow_serving_and_not_serving() {
    let server = GrpcServer::start().await;
    server.set("shop.Cart", true).await;
    let s = start(&[
        (
            "cart",
            &format!(
                "{GRPC}, service = \"shop.Cart\", targets = [\"{}\"]",
                server.addr
            ),
        ),
        // The whole server (service ""), which tonic reports SERVING.
        ("whole", &format!("{GRPC}, targets = [\"{}\"]", server.addr)),
        // A service the server does not know.
        (
            "unknown",
            &format!(
                "{GRPC}, service = \"no.Such\", targets = [\"{}\"]",
                server.addr
            ),
        ),
    ])
    .await;
    let d = until(&s, "cart", "SERVING", |d| target(d)["state"] == "up").await;
    assert_eq!(d["probe"]["type"], "grpc");
    assert!(target(&d)["rtt"]["samples"].as_u64() > Some(0), "{d:#}");
    until_answer(&s, "192.0.2.1").await;
    until(&s, "whole", "SERVING", |d| target(d)["state"] == "up").await;
    let d = until(&s, "unknown", "failing", |d| {
        target(d)["last_result"] == "fail"
    })
    .await;
    let error = target(&d)["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("NotFound"), "{d:#}");

    server.set("shop.Cart", false).await;
    let d = until(&s, "cart", "NOT_SERVING", |d| target(d)["state"] == "down").await;
    assert_eq!(
        target(&d)["last_error"],
        "health status NOT_SERVING",
        "{d:#}"
    );
    // `whole` is next in the failover order.
    until_answer(&s, "192.0.2.2").await;

    server.set("shop.Cart", true).await;
    until(&s, "cart", "SERVING again", |d| target(d)["state"] == "up").await;
    until_answer(&s, "192.0.2.1").await;

    // The server goes away: the connect is refused.
    drop(server);
    let d = until(&s, "cart", "refused", |d| target(d)["state"] == "down").await;
    let error = target(&d)["last_error"].as_str().unwrap_or_default();
    assert!(error.starts_with("connect: "), "{d:#}");
    until_answer(&s, "192.0.2.99").await;
}

//------------ TLS and certificate expiry ------------------------------------

/// A self-signed certificate for `localhost` valid from a day ago for
/// `days` more days, as a rustls server configuration with `alpn`.
fn tls_config(days: u64, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    let now = std::time::SystemTime::now();
    params.not_before = (now - Duration::from_secs(86_400)).into();
    params.not_after = (now + Duration::from_secs(days * 86_400)).into();
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("cert");
    let der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key der");
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], der)
    .expect("server config");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// An HTTPS server on 127.0.0.1 answering every request 200, with a
/// certificate valid for `days` more days.
async fn https_server(days: u64) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls_config(days, &[b"http/1.1"]));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(conn).await else {
                    return;
                };
                let mut seen = Vec::new();
                let mut buf = [0u8; 1024];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
                let _ = tls.write_all(reply.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, task)
}

const HTTPS: &str = r#"type = "https", tls_verify = false, min_cert_days = 7, interval = "300ms", timeout = "250ms", rise = 1, fall = 1"#;

#[tokio::test]
async fn a_certificate_expiring_sooner_than_min_cert_days_fails_the_https_probe() {
    let (short, short_task) = https_server(2).await;
    let (long, long_task) = https_server(90).await;
    let s = start(&[
        ("short", &format!("{HTTPS}, targets = [\"{short}\"]")),
        ("long", &format!("{HTTPS}, targets = [\"{long}\"]")),
        // Without min_cert_days the same short-lived certificate passes,
        // and its days are still shown.
        (
            "unchecked",
            &format!(
                "type = \"https\", tls_verify = false, interval = \"300ms\", timeout = \"250ms\", \
                 rise = 1, fall = 1, targets = [\"{short}\"]"
            ),
        ),
    ])
    .await;

    let d = until(&s, "short", "failing on the certificate", |d| {
        target(d)["last_result"] == "fail"
    })
    .await;
    // Valid for 2 days from a moment ago: 1 whole day left.
    assert_eq!(
        target(&d)["last_error"],
        "certificate expires in 1 day (min_cert_days = 7)",
        "{d:#}"
    );
    assert_eq!(target(&d)["cert_days_left"], 1, "{d:#}");
    assert!(
        target(&d)["cert_not_after_unix"].as_f64().is_some(),
        "{d:#}"
    );

    let d = until(&s, "long", "up", |d| target(d)["state"] == "up").await;
    assert_eq!(target(&d)["cert_days_left"], 89, "{d:#}");
    assert!(target(&d)["last_error"].is_null(), "{d:#}");

    let d = until(&s, "unchecked", "up", |d| target(d)["state"] == "up").await;
    assert_eq!(target(&d)["cert_days_left"], 1, "{d:#}");

    // The metrics say the same, per target.
    let text = s.server.monitor().metrics_text().expect("metrics attached");
    for (dc, days) in [("short", 1), ("long", 89), ("unchecked", 1)] {
        let line = format!(
            "meridian_probe_certificate_days_left{{zone=\"types.test.\",datacenter=\"{dc}\","
        );
        let found = text
            .lines()
            .find(|l| l.starts_with(&line))
            .unwrap_or_else(|| panic!("no {line} in\n{text}"));
        assert!(
            found.ends_with(&format!(" {days}")) || found.ends_with(&format!(" {days}.0")),
            "{found}"
        );
    }

    // `short` is first in the failover order, but its certificate is
    // about to expire: answers go to `long`.
    until(&s, "short", "down", |d| target(d)["state"] == "down").await;
    until_answer(&s, "192.0.2.2").await;
    short_task.abort();
    long_task.abort();
}

/// A gRPC health server over TLS (a certificate valid `days` more days),
/// served by hyper on connections this test accepts and handshakes.
async fn grpc_tls_server(days: u64) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::service::TowerToHyperService;

    let acceptor = tokio_rustls::TlsAcceptor::from(tls_config(days, &[b"h2"]));
    let (_reporter, service) = tonic_health::server::health_reporter();
    let routes = tonic::service::Routes::new(service);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        // Keeps the whole server SERVING for as long as it runs.
        let _reporter = _reporter;
        while let Ok((conn, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let routes = routes.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(conn).await else {
                    return;
                };
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .http2_only()
                    .serve_connection(TokioIo::new(tls), TowerToHyperService::new(routes))
                    .await;
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn grpc_over_tls_reports_and_checks_the_certificate() {
    let (short, short_task) = grpc_tls_server(2).await;
    let (long, long_task) = grpc_tls_server(90).await;
    let probe = |addr: SocketAddr| {
        format!(
            "{GRPC}, tls = true, tls_verify = false, host = \"localhost\", min_cert_days = 7, \
             targets = [\"{addr}\"]"
        )
    };
    let s = start(&[("short", &probe(short)), ("long", &probe(long))]).await;
    let d = until(&s, "long", "up over TLS", |d| target(d)["state"] == "up").await;
    assert_eq!(target(&d)["cert_days_left"], 89, "{d:#}");
    let d = until(&s, "short", "failing on the certificate", |d| {
        target(d)["last_result"] == "fail"
    })
    .await;
    assert_eq!(
        target(&d)["last_error"],
        "certificate expires in 1 day (min_cert_days = 7)",
        "{d:#}"
    );
    assert_eq!(target(&d)["cert_days_left"], 1, "{d:#}");
    until_answer(&s, "192.0.2.2").await;
    short_task.abort();
    long_task.abort();
}

//------------ ICMP ----------------------------------------------------------

#[tokio::test]
async fn icmp_echo_from_loopback_v4_and_v6_and_many_at_once() {
    assert!(
        std::net::UdpSocket::bind("[::1]:0").is_ok(),
        "this test needs IPv6 loopback (::1); enable IPv6 on lo"
    );
    let icmp = r#"type = "icmp", interval = "200ms", timeout = "150ms", rise = 2, fall = 1"#;
    // Several probes of the same addresses at the same moment: each must
    // get its own reply.
    let many = r#"targets = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "::1"], min_up = 4"#;
    let s = start(&[
        ("v4", &format!("{icmp}, targets = [\"127.0.0.1\"]")),
        ("v6", &format!("{icmp}, targets = [\"::1\"]")),
        ("many", &format!("{icmp}, {many}")),
        ("again", &format!("{icmp}, {many}")),
    ])
    .await;
    for name in ["v4", "v6", "many", "again"] {
        let d = until(&s, name, "up", |d| {
            d["targets"]
                .as_array()
                .is_some_and(|t| t.iter().all(|t| t["state"] == "up"))
        })
        .await;
        assert_eq!(d["probe"]["type"], "icmp");
        // The RTT feeds the statistics the latency policy uses.
        assert!(d["rtt_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{d:#}");
    }
    // Ten more rounds without a single failure.
    let d = dc(&s, "many");
    let base = target(&d)["probes"].as_u64().unwrap_or(0);
    for name in ["many", "again"] {
        let d = until(&s, name, "ten more rounds", |d| {
            target(d)["probes"].as_u64() >= Some(base + 10)
        })
        .await;
        for t in d["targets"].as_array().expect("targets") {
            assert_eq!(t["consecutive_failures"], 0, "{d:#}");
            assert_eq!(t["local_faults"], 0, "{d:#}");
        }
    }
    until_answer(&s, "192.0.2.1").await;
}
