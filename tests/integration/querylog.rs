//! The query log (`[query_log]`) read back from the file a real server
//! wrote, its sampling, its config errors, and `log_format = "json"` from
//! the real binary.

use std::path::Path;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use crate::harness::{Setup, TestServer, example_zone, plain_query};
use crate::metrics::scrape;

/// The file's JSON lines once there are at least `n` (bounded wait).
fn read_lines(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

async fn start(query_log: &str) -> TestServer {
    TestServer::example_with(&format!(
        "threads = 1\n[query_log]\npath = \"queries.log\"\n{query_log}"
    ))
    .await
}

#[tokio::test]
async fn every_query_is_logged_with_its_decision() {
    let s = start("").await;
    s.ask("www.gslb.example.com.", RecordType::A, Some("11.2.0.0/24"))
        .await;
    s.tcp(&plain_query("WWW.gslb.example.com.", RecordType::AAAA))
        .await;
    s.ask("nope.gslb.example.com.", RecordType::TXT, None).await;
    let lines = read_lines(&s.dir.path().join("queries.log"), 3);
    assert_eq!(lines.len(), 3, "{lines:?}");
    let udp = &lines[0];
    assert_eq!(udp["proto"], "udp");
    assert_eq!(udp["client"], "127.0.0.1");
    assert_eq!(udp["ecs"], "11.2.0.0/24");
    assert_eq!(udp["qname"], "www.gslb.example.com.");
    assert_eq!(udp["qtype"], "A");
    assert_eq!(udp["rcode"], "NOERROR");
    assert_eq!(udp["zone"], "gslb.example.com.");
    assert_eq!(udp["service"], "www");
    assert_eq!(udp["datacenters"], serde_json::json!(["eu-west"]));
    assert_eq!(udp["step"], "geo");
    assert_eq!(udp["scope"], 16);
    let time = udp["time"].as_str().unwrap();
    assert!(time.ends_with('Z') && time.len() == 24, "{time}");

    let tcp = &lines[1];
    assert_eq!(tcp["proto"], "tcp");
    assert_eq!(
        tcp["qname"], "WWW.gslb.example.com.",
        "as the client wrote it"
    );
    assert_eq!(tcp["qtype"], "AAAA");
    assert!(tcp["ecs"].is_null());
    assert!(tcp["scope"].is_null());
    // Loopback is Japan in the test database.
    assert_eq!(tcp["datacenters"], serde_json::json!(["ap-southeast"]));

    let miss = &lines[2];
    assert_eq!(miss["rcode"], "NXDOMAIN");
    assert!(miss["service"].is_null());
    assert_eq!(miss["datacenters"], serde_json::json!([]));

    // Written and counted (the counter follows the flush).
    let deadline = Instant::now() + Duration::from_secs(10);
    let m = loop {
        let m = scrape(&s).await;
        if m.contains("\nmeridian_query_log_written_total 3\n") || Instant::now() > deadline {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(m.contains("\nmeridian_query_log_written_total 3\n"), "{m}");
    assert!(m.contains("\nmeridian_query_log_dropped_total 0\n"), "{m}");
}

#[tokio::test]
async fn one_query_in_sample_is_logged() {
    let s = start("sample = 4\n").await;
    for i in 0..12 {
        s.ask(&format!("q{i}.gslb.example.com."), RecordType::A, None)
            .await;
    }
    // The first, fifth and ninth: a counter, not a random draw.
    let lines = read_lines(&s.dir.path().join("queries.log"), 3);
    let names: Vec<&str> = lines.iter().filter_map(|l| l["qname"].as_str()).collect();
    assert_eq!(
        names,
        [
            "q0.gslb.example.com.",
            "q4.gslb.example.com.",
            "q8.gslb.example.com."
        ]
    );
    // The thirteenth query is the next one in four.
    s.ask("q12.gslb.example.com.", RecordType::A, None).await;
    let lines = read_lines(&s.dir.path().join("queries.log"), 4);
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[3]["qname"], "q12.gslb.example.com.");
}

#[test]
fn query_log_and_log_format_keys_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meridian.toml");
    let error = |text: &str| {
        std::fs::write(&path, text).unwrap();
        meridian::config::load_server(&path)
            .expect_err("rejected")
            .to_string()
    };
    let e = error("[query_log]\nsample = 2\n");
    assert!(e.contains("query_log.path: missing"), "{e}");
    let e = error("[query_log]\npath = \"q.log\"\nsample = 0\n");
    assert!(
        e.contains("query_log.sample: 0 is out of range (1 to 1000000)"),
        "{e}"
    );
    let e = error("[query_log]\npath = \"q.log\"\nqueue = 0\n");
    assert!(e.contains("query_log.queue: 0 is out of range"), "{e}");
    let e = error("[query_log]\npath = \"q.log\"\nrotate = true\n");
    assert!(e.contains("rotate"), "{e}");
    let e = error("log_format = \"xml\"\n");
    assert!(
        e.contains("log_format: \"xml\": \"text\" or \"json\""),
        "{e}"
    );

    std::fs::write(
        &path,
        "log_format = \"json\"\n[query_log]\npath = \"q.log\"\n",
    )
    .unwrap();
    let c = meridian::config::load_server(&path).unwrap();
    assert_eq!(c.log_format, meridian::config::LogFormat::Json);
    let q = c.query_log.unwrap();
    assert_eq!(
        (q.path, q.sample, q.queue),
        (dir.path().join("q.log"), 1, 65_536)
    );
    std::fs::write(&path, "").unwrap();
    let c = meridian::config::load_server(&path).unwrap();
    assert_eq!(c.log_format, meridian::config::LogFormat::Text);
    assert!(c.query_log.is_none(), "off by default");
}

/// `log_format = "json"`: the real binary writes one JSON object per
/// line to standard error.
#[tokio::test]
async fn the_binary_logs_json_lines() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let zone = example_zone();
    let config = crate::harness::write_config(
        dir.path(),
        &Setup {
            zones: &[("gslb.example.com.toml", &zone)],
            server_toml: "log_format = \"json\"\nthreads = 1\n",
            ..Setup::default()
        },
    );
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["run", "--config"])
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start meridian");
    let stderr = child.stderr.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            let v: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            let done = v["message"] == "ready";
            seen.push(v);
            if done {
                return true;
            }
        }
        false
    })
    .await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    assert_eq!(ready, Ok(true), "{seen:?}");
    assert!(
        seen.iter()
            .all(|v| v["level"].is_string() && v["timestamp"].is_string()),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|v| v["message"] == "listening on UDP and TCP" && v["local"].is_string()),
        "{seen:?}"
    );
}
