//! The `latency` policy end to end: the shipped example zone served by the
//! real server, asked over real UDP with ECS, and explained through the
//! real admin API.

use hickory_proto::rr::RecordType;

use crate::harness::{TestServer, a_answers, ecs_of, repo};
use crate::health::reqwest_like;

fn example() -> String {
    std::fs::read_to_string(repo().join("zones/examples/latency.example.toml"))
        .expect("zones/examples/latency.example.toml")
}

/// Ask `name` from the client network `ecs`: the first address and the
/// ECS scope.
async fn ask(s: &TestServer, name: &str, ecs: &str) -> (String, u8) {
    let m = s.ask(name, RecordType::A, Some(ecs)).await;
    let a = a_answers(&m);
    assert!(!a.is_empty(), "no answer for {name} from {ecs}: {m:?}");
    (a[0].clone(), ecs_of(&m).expect("ECS echoed").2)
}

/// Out of the box nothing is measured: the distance model ranks, and the
/// scope is the GeoIP block the estimate came from.
#[tokio::test]
async fn without_measurements_the_distance_model_ranks() {
    let s = TestServer::start(&[("latency.example.toml", &example())]).await;
    for (client, want) in [
        ("11.2.3.0/24", "198.51.100.81"), // Germany: eu-west
        ("11.3.0.0/24", "203.0.113.81"),  // Japan: ap-northeast
        ("11.1.7.0/24", "192.0.2.81"),    // the US: us-east
    ] {
        let (addr, scope) = ask(&s, "www.latency.example.com", client).await;
        assert_eq!(addr, want, "from {client}");
        assert_eq!(scope, 16, "the GeoIP block of {client}");
    }

    // explain names the level and every estimate.
    let admin = reqwest_like::Client::new(s.server.admin_addr().expect("admin API"));
    let (code, body) = admin
        .get("/explain?name=www.latency.example.com&type=A&client=11.2.3.0/24")
        .await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let stage = &v["service"]["stages"][0];
    assert_eq!(stage["step"], "latency", "{v}");
    let note = stage["note"].as_str().unwrap_or_default();
    assert!(note.starts_with("decided by distance"), "{note}");
    for dc in ["us-east", "eu-west", "ap-northeast"] {
        assert!(note.contains(&format!("{dc} ")), "{dc} in {note}");
    }
    assert_eq!(v["service"]["chosen"], serde_json::json!(["eu-west"]));
}

//------------ Real-user measurements, end to end -------------------------------

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::harness::Setup;

const WWW: &str = "www.latency.example.com";
const US_EAST: &str = "192.0.2.81";
const EU_WEST: &str = "198.51.100.81";

/// `[latency]` and `[rum]` for a fast test: publication every 100 ms,
/// 3 samples to count, beacons forwarded by a trusted proxy on loopback.
fn rum_toml(latency: &str) -> String {
    format!(
        "[latency]\npublish_interval = \"100ms\"\nmin_samples = 3\n{latency}\n\
         [rum]\nenabled = true\nlisten = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1\"]\n\
         beacons_per_minute = 10000\n\
         [rum.objects]\n\"us-east\" = \"http://127.0.0.1:9/a.gif\"\n\
         \"eu-west\" = \"http://127.0.0.1:9/b.gif\"\n\"ap-northeast\" = \"http://127.0.0.1:9/c.gif\"\n"
    )
}

async fn start(latency: &str) -> TestServer {
    let toml = rum_toml(latency);
    TestServer::start_with(Setup {
        zones: &[("latency.example.toml", &example())],
        server_toml: &toml,
        ..Setup::default()
    })
    .await
}

/// POSTs a beacon for `client` (through the trusted proxy) and returns the
/// status code and body.
async fn beacon(rum: SocketAddr, client: &str, body: &str) -> (u16, String) {
    reqwest_like::Client::with_headers(rum, &format!("X-Forwarded-For: {client}\r\n"))
        .post_json("/beacon", body)
        .await
}

fn measurements(rtts: &[(&str, f64)]) -> String {
    let m: Vec<String> = rtts
        .iter()
        .map(|(dc, rtt)| format!("{{\"datacenter\":\"{dc}\",\"rtt_ms\":{rtt}}}"))
        .collect();
    format!("{{\"measurements\":[{}]}}", m.join(","))
}

/// Sends `n` beacons from `client` with `rtts`, each accepted.
async fn beacons(s: &TestServer, client: &str, n: usize, rtts: &[(&str, f64)]) {
    let rum = s.server.rum_addr().expect("beacon listener");
    for _ in 0..n {
        let (code, body) = beacon(rum, client, &measurements(rtts)).await;
        assert_eq!(code, 204, "{body}");
    }
}

/// Polls until the answer to `ecs` is `want` (bounded): publication is
/// periodic, so a change shows within a publish interval or two.
async fn until_answer(s: &TestServer, ecs: &str, want: &str) -> (String, u8) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = ask(s, WWW, ecs).await;
        if got.0 == want {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{ecs} still gets {got:?}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `latency` stage note of `GET /explain` for `client`.
async fn explain(s: &TestServer, client: &str) -> String {
    let admin = reqwest_like::Client::new(s.server.admin_addr().expect("admin API"));
    let (code, body) = admin
        .get(&format!("/explain?name={WWW}&type=A&client={client}"))
        .await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["service"]["stages"][0]["note"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A server on the config already written to `dir` (`meridian.toml`).
async fn serve_dir(dir: tempfile::TempDir) -> TestServer {
    let server = meridian::Server::start(
        &dir.path().join("meridian.toml"),
        Some(vec!["127.0.0.1:0".parse().unwrap()]),
    )
    .await
    .unwrap_or_else(|e| panic!("server start: {e}"));
    TestServer {
        addr: server.local_addrs()[0],
        server,
        dir,
    }
}

async fn status(s: &TestServer) -> serde_json::Value {
    let admin = reqwest_like::Client::new(s.server.admin_addr().expect("admin API"));
    let (code, body) = admin.get("/status").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// A US /24 whose users measure eu-west as faster gets eu-west, with its
/// /24 as the scope, while its neighbours keep us-east from the coarser
/// level; noise inside the margin does not move it; hostile beacons change
/// nothing; and a restart keeps what was learned.
#[tokio::test]
async fn measurements_route_a_network_to_its_fastest_datacenter() {
    let s = start("").await;
    // Before any measurement: distance says us-east for all of 11.1/16.
    assert_eq!(ask(&s, WWW, "11.1.5.0/24").await.0, US_EAST);

    // 11.1.7 and 11.1.8 measure us-east faster; then 11.1.5.0/24 measures
    // eu-west faster. (The /16 aggregates all three; once it has enough
    // samples, 11.1.5's figures are clamped to within 2x of its mean.)
    beacons(&s, "11.1.7.9", 4, &[("us-east", 30.0), ("eu-west", 95.0)]).await;
    beacons(&s, "11.1.8.1", 4, &[("us-east", 25.0), ("eu-west", 99.0)]).await;
    beacons(&s, "11.1.5.20", 4, &[("us-east", 90.0), ("eu-west", 20.0)]).await;
    let (_, scope) = until_answer(&s, "11.1.5.0/24", EU_WEST).await;
    assert_eq!(scope, 24, "the /24's own measurements decided");
    // A neighbour without measurements of its own: the /16 decides, with
    // a scope that leaves the measured /24s out.
    let (addr, scope) = ask(&s, WWW, "11.1.9.0/24").await;
    assert_eq!((addr.as_str(), scope), (US_EAST, 24));
    let note = explain(&s, "11.1.9.0/24").await;
    assert!(note.starts_with("decided by rum-coarse"), "{note}");
    let (addr, scope) = ask(&s, WWW, "11.1.200.0/24").await;
    assert_eq!((addr.as_str(), scope), (US_EAST, 17));
    let note = explain(&s, "11.1.5.0/24").await;
    assert!(note.starts_with("decided by rum "), "{note}");
    // 4 samples, decayed a little (rounded down) by publication time.
    assert!(note.contains("eu-west 20.0 ms (rum, "), "{note}");
    assert!(note.contains("assigned eu-west for"), "{note}");
    // Germany is untouched: distance.
    assert_eq!(ask(&s, WWW, "11.2.0.0/24").await.0, EU_WEST);

    // Noise inside the margin: 11.1.6.0/24 is assigned eu-west (20 ms
    // against 25), then measures us-east at 15 ms: us-east's estimate
    // falls below eu-west's, but not by the 10 ms margin. The estimates
    // move; the assignment holds.
    beacons(&s, "11.1.6.20", 4, &[("us-east", 25.0), ("eu-west", 20.0)]).await;
    until_answer(&s, "11.1.6.0/24", EU_WEST).await;
    beacons(&s, "11.1.6.20", 16, &[("us-east", 15.0), ("eu-west", 20.0)]).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let note = explain(&s, "11.1.6.0/24").await;
        let us: f64 = note
            .split("us-east ")
            .nth(1)
            .and_then(|t| t.split(' ').next())
            .and_then(|t| t.parse().ok())
            .unwrap_or(f64::MAX);
        if us < 20.0 {
            assert!(note.contains("kept within the margin"), "{note}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new samples never published: {note}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ask(&s, WWW, "11.1.6.0/24").await.0, EU_WEST);

    // Hostile beacons get 4xx and change nothing.
    let before = status(&s).await["latency"]["samples_accepted"].clone();
    let rum = s.server.rum_addr().unwrap();
    for body in [
        "{not json",
        "{\"measurements\":[{\"datacenter\":\"us-east\",\"rtt_ms\":\"NaN\"}]}",
        "{\"measurements\":[{\"datacenter\":\"us-east\",\"rtt_ms\":-5}]}",
        "{\"measurements\":[{\"datacenter\":\"us-east\",\"rtt_ms\":1e9}]}",
        "{\"measurements\":[{\"datacenter\":\"mars\",\"rtt_ms\":5}]}",
    ] {
        let (code, reply) = beacon(rum, "11.1.5.20", body).await;
        assert!((400..500).contains(&code), "{code} for {body}: {reply}");
        assert!(reply.contains("\"error\""), "{reply}");
    }
    assert_eq!(status(&s).await["latency"]["samples_accepted"], before);

    // A restart keeps the aggregates (saved at shutdown, loaded at start).
    let TestServer { server, dir, .. } = s;
    server.shutdown().await;
    assert!(dir.path().join("meridian-latency.bin").exists());
    let s = serve_dir(dir).await;
    let (addr, scope) = ask(&s, WWW, "11.1.5.0/24").await;
    assert_eq!(
        (addr.as_str(), scope),
        (EU_WEST, 24),
        "learned before the restart"
    );
}

/// Samples age out: once a /24's decayed weight falls below min_samples,
/// the coarser level (here: distance) answers again.
#[tokio::test]
async fn a_network_returns_to_the_coarser_level_once_its_samples_age_out() {
    let s = start("half_life = \"2s\"").await;
    beacons(&s, "11.1.5.20", 8, &[("us-east", 90.0), ("eu-west", 20.0)]).await;
    until_answer(&s, "11.1.5.0/24", EU_WEST).await;
    // 8 samples halving every 2 s: under 3 after about 3 s.
    let started = Instant::now();
    let (_, scope) = until_answer(&s, "11.1.5.0/24", US_EAST).await;
    assert_eq!(scope, 16, "distance decides again, over the GeoIP block");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// The memory cap: at max_keys, new client networks evict the least
/// recently seen ones (1/64 of the cap at once), so the first network
/// imported loses its own measurements.
#[tokio::test]
async fn the_key_cap_evicts_the_least_recently_seen_networks() {
    let s = start("max_keys = 1000").await;
    let admin = reqwest_like::Client::new(s.server.admin_addr().expect("admin API"));
    // 11.1.0.0/24 first; it then has eu-west.
    let first = "{\"measurements\":[\
        {\"client\":\"11.1.0.1\",\"datacenter\":\"eu-west\",\"rtt_ms\":10,\"samples\":5},\
        {\"client\":\"11.1.0.1\",\"datacenter\":\"us-east\",\"rtt_ms\":80,\"samples\":5}]}";
    let (code, body) = admin.post_json("/latency/import", first).await;
    assert_eq!(code, 200, "{body}");
    until_answer(&s, "11.1.0.0/24", EU_WEST).await;
    // 998 more client networks (12.0.1.0/24 ...; with their /16s, more
    // keys than the cap of 1000).
    let body = {
        let m: Vec<String> = (1..999u32)
            .map(|i| {
                format!(
                    "{{\"client\":\"12.{}.{}.1\",\"datacenter\":\"us-east\",\"rtt_ms\":50}}",
                    i / 256,
                    i % 256
                )
            })
            .collect();
        format!("{{\"measurements\":[{}]}}", m.join(","))
    };
    let (code, reply) = admin.post_json("/latency/import", &body).await;
    assert_eq!(code, 200, "{reply}");
    let latency = status(&s).await["latency"].clone();
    let keys = latency["fine_keys"].as_u64().unwrap() + latency["coarse_keys"].as_u64().unwrap();
    assert!(keys <= 1000, "{latency}");
    assert!(latency["evictions"].as_u64().unwrap() > 0, "{latency}");
    // The first network was the least recently seen: its own row is gone.
    until_answer(&s, "11.1.0.0/24", US_EAST).await;
}

//------------ The static latency map -------------------------------------------

const MAP: &str = r#"version = 1
[[networks]]
network = "11.1.0.0/16"
rtt_ms = { "us-east" = 90, "eu-west" = 15 }
[[networks]]
network = "11.1.64.0/18"
rtt_ms = {}
"#;

/// The map answers where no RUM level has data, with its block as the
/// scope; an empty entry leaves its block to the distance model; a bad
/// map stops start-up and a reload, naming the file and key, and the
/// running map stays.
#[tokio::test]
async fn the_static_map_ranks_where_nothing_is_measured() {
    let dir = tempfile::tempdir().unwrap();
    let toml = "[latency]\nmap = \"latency-map.toml\"\n";
    crate::harness::write_config(
        dir.path(),
        &Setup {
            zones: &[("latency.example.toml", &example())],
            server_toml: toml,
            ..Setup::default()
        },
    );
    std::fs::write(dir.path().join("latency-map.toml"), MAP).unwrap();
    let s = serve_dir(dir).await;
    let (addr, scope) = ask(&s, WWW, "11.1.5.0/24").await;
    // 11.1.0.0/18 is the widest block around it with the /16's figures
    // (11.1.64.0/18 beside it is carved out).
    assert_eq!((addr.as_str(), scope), (EU_WEST, 18));
    let note = explain(&s, "11.1.5.0/24").await;
    assert!(note.starts_with("decided by map"), "{note}");
    // 11.1.64.0/18 is carved out: distance decides (the GeoIP block is
    // the /16, but the map's block is the /18).
    let (addr, scope) = ask(&s, WWW, "11.1.70.0/24").await;
    assert_eq!((addr.as_str(), scope), (US_EAST, 18));

    // A broken map: the reload fails with the file and key, and the
    // running map stays.
    let bad = MAP.replace("\"eu-west\" = 15", "\"eu-west\" = -1");
    std::fs::write(s.dir.path().join("latency-map.toml"), bad).unwrap();
    let err = s
        .server
        .reload()
        .expect_err("a bad map is refused")
        .to_string();
    assert!(
        err.contains("latency-map.toml") && err.contains("networks[0].rtt_ms.eu-west"),
        "{err}"
    );
    assert_eq!(ask(&s, WWW, "11.1.5.0/24").await.0, EU_WEST);
}
