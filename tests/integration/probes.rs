//! Probe RTT statistics on loopback: what `/status` and the health view
//! show, that only passing probes count, and what a reload keeps. (The
//! same over real delayed paths, in namespaces: `tests/netns_latency.rs`.)

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::harness::TestServer;

/// An HTTP/1.1 backend on 127.0.0.1 answering every request 200; TCP
/// probes of it pass too. Dropping it closes the port (refused).
struct Backend {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let reply =
                        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
                    let _ = conn.write_all(reply.as_bytes()).await;
                });
            }
        });
        Self { addr, task }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A loopback port nothing listens on.
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// Three datacenters: `up` and `refused` probed (`probe` is the probe
/// table's keys besides `targets`), `static` without a probe.
fn zone(up: SocketAddr, refused: SocketAddr, probe: &str) -> String {
    format!(
        r#"
origin = "rtt.test."
ns = ["ns1.rtt.test."]
[soa]
rname = "hostmaster.rtt.test."
serial = 1
[records]
ns1 = [{{ type = "A", value = "192.0.2.53" }}]
[datacenters.up]
addresses = ["192.0.2.1"]
probe = {{ targets = ["{up}"], {probe} }}
[datacenters.refused]
addresses = ["192.0.2.2"]
probe = {{ targets = ["{refused}"], {probe} }}
[datacenters.static]
addresses = ["192.0.2.3"]
[services.www]
policy = "failover"
datacenters = ["up", "refused", "static"]
"#
    )
}

const TCP: &str = r#"type = "tcp", interval = "100ms", timeout = "80ms", rise = 1, fall = 2"#;

/// The datacenters `up`, `refused`, `static` from `/status`.
fn dcs(s: &TestServer) -> [Value; 3] {
    let status = s.server.monitor().status();
    let all = status["zones"][0]["datacenters"]
        .as_array()
        .cloned()
        .expect("datacenters");
    ["up", "refused", "static"].map(|name| {
        all.iter()
            .find(|d| d["name"] == name)
            .cloned()
            .expect("configured")
    })
}

fn target(dc: &Value) -> &Value {
    &dc["targets"][0]
}

fn samples(dc: &Value) -> u64 {
    target(dc)["rtt"]["samples"].as_u64().expect("samples")
}

fn probes(dc: &Value) -> u64 {
    target(dc)["probes"].as_u64().expect("probes")
}

/// Polls `/status` every 20 ms for at most 10 s until `check` holds.
async fn until(s: &TestServer, what: &str, check: impl Fn(&[Value; 3]) -> bool) -> [Value; 3] {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let d = dcs(s);
        if check(&d) {
            return d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}; {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The health view the next publication hands the query path: the
/// `rtt_us` of `up`, `refused` and `static`.
fn published_rtts(s: &TestServer) -> [u32; 3] {
    let snap = s.server.snapshot();
    let view = s.server.monitor().view_for(&snap);
    let config = &snap.zones()[0].config;
    ["up", "refused", "static"].map(|name| {
        let i = config
            .datacenters
            .iter()
            .position(|d| d.name == name)
            .expect("configured");
        view.zone(0)[i].rtt_us
    })
}

#[tokio::test]
async fn only_passing_probes_feed_the_rtt_statistics() {
    let backend = Backend::start().await;
    let s = TestServer::start(&[("rtt.test.toml", &zone(backend.addr, closed_port(), TCP))]).await;
    let [up, refused, fixed] = until(&s, "3 passes and 3 refusals", |[up, refused, _]| {
        samples(up) >= 3 && probes(refused) >= 3
    })
    .await;

    // The passing target: every figure known, under the timeout.
    let rtt = &target(&up)["rtt"];
    for key in ["smoothed_ms", "baseline_ms", "p90_ms"] {
        let v = rtt[key].as_f64().unwrap_or(f64::NAN);
        assert!(v > 0.0 && v < 80.0, "{key}: {rtt}");
    }
    assert!(samples(&up) <= probes(&up), "{up}");
    // The datacenter's RTT is its target's smoothed one, in whole µs.
    let dc_ms = up["rtt_ms"].as_f64().expect("known");
    let smoothed = rtt["smoothed_ms"].as_f64().expect("known");
    assert!((dc_ms - smoothed).abs() <= 0.0005 + 1e-9, "{up}");
    assert_eq!(up["congested"], false, "{up}");

    // Refused every time: probed, yet no sample and nothing known.
    assert_eq!(target(&refused)["last_result"], "fail", "{refused}");
    assert_eq!(samples(&refused), 0, "{refused}");
    for key in ["smoothed_ms", "baseline_ms", "p90_ms"] {
        assert!(target(&refused)["rtt"][key].is_null(), "{refused}");
    }
    assert!(refused["rtt_ms"].is_null(), "{refused}");
    assert_eq!(refused["congested"], false);
    // No probe, no RTT.
    assert!(fixed["rtt_ms"].is_null(), "{fixed}");
    assert_eq!(fixed["congested"], false);
    let published = published_rtts(&s);
    assert!(published[0] > 0, "{published:?}");
    assert_eq!(published[1..], [0, 0]);

    // The backend goes away. Once its target is DOWN, its datacenter's
    // RTT is unknown, and further failures leave the target's figures
    // exactly as they were.
    drop(backend);
    let [up, ..] = until(&s, "the former backend's target down", |[up, ..]| {
        target(up)["state"] == "down"
    })
    .await;
    assert!(up["rtt_ms"].is_null(), "{up}");
    let before = target(&up)["rtt"].clone();
    assert!(before["smoothed_ms"].as_f64().is_some(), "{before}");
    let probed = probes(&up);
    let [up, ..] = until(&s, "3 more failures", |[up, ..]| probes(up) >= probed + 3).await;
    assert_eq!(target(&up)["last_result"], "fail", "{up}");
    assert_eq!(target(&up)["rtt"], before, "{up}");
    assert_eq!(published_rtts(&s), [0, 0, 0]);
}

#[tokio::test]
async fn a_reload_keeps_the_rtt_statistics_unless_the_probe_type_changes() {
    let backend = Backend::start().await;
    let refused = closed_port();
    let text = zone(backend.addr, refused, TCP);
    let s = TestServer::start(&[("rtt.test.toml", &text)]).await;
    let [up, ..] = until(&s, "5 TCP samples", |[up, ..]| samples(up) >= 5).await;
    let before = samples(&up);
    let path = s.dir.path().join("zones/rtt.test.toml");

    // Another interval, the same kind of probe: the statistics stay.
    std::fs::write(&path, text.replace("\"100ms\"", "\"150ms\"")).expect("write");
    s.server.reload().expect("reload");
    let [up, ..] = dcs(&s);
    assert!(samples(&up) >= before, "{up}");

    // HTTP instead of TCP: its RTT spans another round trip, so the old
    // figures (and baseline) start over.
    let http = zone(
        backend.addr,
        refused,
        &TCP.replace("type = \"tcp\"", "type = \"http\", path = \"/\""),
    );
    std::fs::write(&path, http).expect("write");
    s.server.reload().expect("reload");
    let [up, ..] = dcs(&s);
    assert!(samples(&up) < before, "not reset: {up}");
    let [up, ..] = until(&s, "HTTP samples", |[up, ..]| samples(up) >= 2).await;
    assert_eq!(up["probe"]["type"], "http", "{up}");
    assert!(up["rtt_ms"].as_f64().is_some(), "{up}");
}
