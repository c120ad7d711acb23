//! `GET /metrics`: a real server answers real queries over UDP and TCP,
//! and a scrape of the admin listener counts them by zone, type, rcode,
//! transport, service, datacenter and deciding step; `/status` shows the
//! same answer counts per service.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{EXCHANGE_TIMEOUT, TestServer, a_answers, example_zone, query};

/// `GET path` on the admin API: status, headers (lower-cased names) and
/// body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, BTreeMap<String, String>, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(EXCHANGE_TIMEOUT, s.read_to_string(&mut out))
        .await
        .expect("admin API answers")
        .unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let mut lines = head.lines();
    let code = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (code, headers, body.to_string())
}

/// The value of the sample written exactly `series` (name and labels as
/// the exposition writes them), if present.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Scrapes `/metrics`, checking the response is what Prometheus expects.
pub async fn scrape(s: &TestServer) -> String {
    let (code, headers, body) = http_get(s.server.admin_addr().unwrap(), "/metrics").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        headers.get("content-type").map(String::as_str),
        Some("text/plain; version=0.0.4; charset=utf-8"),
        "the Prometheus text format's content type"
    );
    body
}

/// The sample of `series` as an integer; fails the test without one.
pub fn count(text: &str, series: &str) -> u64 {
    sample(text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}")) as u64
}

const Z: &str = "gslb.example.com.";

#[tokio::test]
async fn a_scrape_counts_queries_answers_and_decisions() {
    let s = TestServer::example().await;
    // Germany (eu-west) five times, the US (us-east) three times, over
    // UDP with ECS; one AAAA over TCP; one NXDOMAIN; one name in no zone.
    for _ in 0..5 {
        let r = s
            .ask("www.gslb.example.com.", RecordType::A, Some("11.2.0.0/24"))
            .await;
        assert_eq!(a_answers(&r), ["198.51.100.10"]);
    }
    for _ in 0..3 {
        let r = s
            .ask("www.gslb.example.com.", RecordType::A, Some("11.1.0.0/24"))
            .await;
        assert_eq!(a_answers(&r), ["192.0.2.10"]);
    }
    s.tcp(&query("www.gslb.example.com.", RecordType::AAAA, None))
        .await;
    s.ask("nope.gslb.example.com.", RecordType::A, None).await;
    s.ask("www.example.org.", RecordType::MX, None).await;

    let m = scrape(&s).await;
    let req = |t: &str, proto: &str| {
        count(
            &m,
            &format!("meridian_dns_requests_total{{zone=\"{Z}\",type=\"{t}\",proto=\"{proto}\"}}"),
        )
    };
    assert_eq!(req("A", "udp"), 9);
    assert_eq!(req("AAAA", "tcp"), 1);
    assert_eq!(
        count(
            &m,
            "meridian_dns_requests_total{zone=\"none\",type=\"MX\",proto=\"udp\"}"
        ),
        1
    );
    let resp = |zone: &str, rcode: &str, proto: &str| {
        count(
            &m,
            &format!(
                "meridian_dns_responses_total{{zone=\"{zone}\",rcode=\"{rcode}\",proto=\"{proto}\"}}"
            ),
        )
    };
    assert_eq!(resp(Z, "NOERROR", "udp"), 8);
    assert_eq!(resp(Z, "NXDOMAIN", "udp"), 1);
    assert_eq!(resp(Z, "NOERROR", "tcp"), 1);
    assert_eq!(resp("none", "REFUSED", "udp"), 1);
    let answers = |dc: &str| {
        count(
            &m,
            &format!("meridian_answers_total{{zone=\"{Z}\",service=\"www\",datacenter=\"{dc}\"}}"),
        )
    };
    assert_eq!(answers("eu-west"), 5);
    // The TCP query from loopback is routed as Japan (the test database).
    assert_eq!(answers("us-east"), 3);
    assert_eq!(answers("ap-southeast"), 1);
    assert_eq!(
        count(
            &m,
            &format!("meridian_decisions_total{{zone=\"{Z}\",service=\"www\",step=\"geo\"}}")
        ),
        9,
        "the geo step decided every answer"
    );
    // ECS: eight queries with it, three without.
    assert_eq!(
        count(&m, "meridian_dns_ecs_requests_total{ecs=\"present\"}"),
        8
    );
    assert_eq!(
        count(&m, "meridian_dns_ecs_requests_total{ecs=\"absent\"}"),
        3
    );
    // Germany's answer is scoped to its /16 in the test database; every
    // ECS response is counted once by its scope.
    assert_eq!(
        count(
            &m,
            "meridian_dns_ecs_scope_total{family=\"ipv4\",scope=\"16\"}"
        ),
        5
    );
    let scoped: u64 = m
        .lines()
        .filter(|l| l.starts_with("meridian_dns_ecs_scope_total{family=\"ipv4\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(scoped, 8);
    // The families the issue asks for are all there.
    for family in [
        "# TYPE meridian_dns_truncated_total counter",
        "# TYPE meridian_dns_malformed_total counter",
        "# TYPE meridian_rrl_dropped_total counter",
        "# TYPE meridian_rrl_slipped_total counter",
        "# TYPE meridian_tcp_refused_total counter",
        "# TYPE meridian_reloads_total counter",
        "# TYPE meridian_config_generation gauge",
        "# TYPE meridian_snapshot_build_seconds histogram",
        "# TYPE meridian_datacenter_usable gauge",
        "# TYPE meridian_datacenter_override gauge",
    ] {
        assert!(m.contains(family), "missing {family:?} in:\n{m}");
    }
    assert_eq!(count(&m, "meridian_config_generation"), 1);
    assert_eq!(
        count(
            &m,
            &format!("meridian_datacenter_usable{{zone=\"{Z}\",datacenter=\"eu-west\"}}")
        ),
        1
    );

    // /status: the same counts per service, every datacenter present.
    let status = s.server.monitor().status();
    assert_eq!(
        status["zones"][0]["services"][0]["answers"],
        serde_json::json!({ "us-east": 3, "eu-west": 5, "ap-southeast": 1 })
    );
    assert_eq!(status["config"]["generation"], 1);
    assert!(status["config"]["last_reload"].is_null());
    let loaded = status["config"]["loaded_at"].as_str().unwrap();
    assert!(
        loaded.len() == 24 && loaded.ends_with('Z') && loaded.as_bytes()[10] == b'T',
        "RFC 3339 UTC: {loaded}"
    );
}

/// Counters survive a reload that rebuilds the zone (a new zone list, a
/// new layout): a series never goes down, with a scrape between reloads
/// or without one.
#[tokio::test]
async fn counters_stay_monotonic_across_reloads() {
    let zone = example_zone();
    let s = TestServer::example().await;
    for _ in 0..4 {
        s.ask("www.gslb.example.com.", RecordType::A, Some("11.2.0.0/24"))
            .await;
    }
    let series =
        format!("meridian_answers_total{{zone=\"{Z}\",service=\"www\",datacenter=\"eu-west\"}}");
    assert_eq!(count(&scrape(&s).await, &series), 4);
    // A changed zone file: the zone is built anew.
    std::fs::write(
        s.dir.path().join("zones/gslb.example.com.toml"),
        zone.replace("ttl = 30", "ttl = 31"),
    )
    .unwrap();
    s.server.reload().expect("reload");
    assert_eq!(
        count(&scrape(&s).await, &series),
        4,
        "kept across the reload"
    );
    s.ask("www.gslb.example.com.", RecordType::A, Some("11.2.0.0/24"))
        .await;
    let m = scrape(&s).await;
    assert_eq!(count(&m, &series), 5);
    assert_eq!(
        count(
            &m,
            &format!("meridian_dns_requests_total{{zone=\"{Z}\",type=\"A\",proto=\"udp\"}}")
        ),
        5
    );
    assert_eq!(count(&m, "meridian_config_generation"), 2);
    assert_eq!(count(&m, "meridian_reloads_total{result=\"ok\"}"), 1);
    assert_eq!(
        s.server.monitor().status()["zones"][0]["services"][0]["answers"]["eu-west"],
        5
    );
    // Reloads with no scrape between them: what each set aside is named
    // by the next reload (not on the query path), and nothing is lost.
    for ttl in [32, 33] {
        std::fs::write(
            s.dir.path().join("zones/gslb.example.com.toml"),
            zone.replace("ttl = 30", &format!("ttl = {ttl}")),
        )
        .unwrap();
        s.server.reload().expect("reload");
        s.ask("www.gslb.example.com.", RecordType::A, Some("11.2.0.0/24"))
            .await;
    }
    assert_eq!(count(&scrape(&s).await, &series), 7);
}

/// A datacenter taken out by the operator: answers move, the decision is
/// counted as the health stage's (failover), and the gauges say why.
#[tokio::test]
async fn failover_is_counted_as_the_health_step() {
    let s = TestServer::example().await;
    s.server
        .monitor()
        .set_override(Z, "eu-west", Some(meridian::health::Override::Drain))
        .unwrap();
    let r = s
        .ask("www.gslb.example.com.", RecordType::A, Some("11.2.0.0/24"))
        .await;
    assert_ne!(a_answers(&r), ["198.51.100.10"]);
    let m = scrape(&s).await;
    assert_eq!(
        count(
            &m,
            &format!("meridian_decisions_total{{zone=\"{Z}\",service=\"www\",step=\"health\"}}")
        ),
        1
    );
    assert_eq!(
        count(
            &m,
            &format!(
                "meridian_datacenter_override{{zone=\"{Z}\",datacenter=\"eu-west\",override=\"drain\"}}"
            )
        ),
        1
    );
    assert_eq!(
        count(
            &m,
            &format!("meridian_datacenter_usable{{zone=\"{Z}\",datacenter=\"eu-west\"}}")
        ),
        0
    );
}
