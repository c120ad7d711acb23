//! `POST /reload` on a real server: a good config bumps the generation
//! and changes answers, a bad one keeps the running config and returns
//! the precise error; reloads are serialized; the restart-only warning
//! follows the settings in force; and the operator-facing log lines
//! (overrides, services with no usable datacenter) read as words, once.

use std::sync::{Arc, Mutex};

use hickory_proto::rr::RecordType;

use crate::harness::{TestServer, a_answers, example_zone};
use crate::health::reqwest_like::Client;
use crate::metrics::scrape;

const Z: &str = "gslb.example.com.";
const GERMANY: &str = "11.2.0.0/24";

fn admin(s: &TestServer) -> Client {
    Client::new(s.server.admin_addr().expect("admin API"))
}

async fn www_from_germany(s: &TestServer) -> Vec<String> {
    a_answers(
        &s.ask("www.gslb.example.com.", RecordType::A, Some(GERMANY))
            .await,
    )
}

fn zone_path(s: &TestServer) -> std::path::PathBuf {
    s.dir.path().join("zones/gslb.example.com.toml")
}

#[tokio::test]
async fn a_good_reload_bumps_the_generation_and_changes_answers() {
    let s = TestServer::example().await;
    assert_eq!(www_from_germany(&s).await, ["198.51.100.10"]);
    std::fs::write(
        zone_path(&s),
        example_zone().replace("198.51.100.10", "198.51.100.99"),
    )
    .unwrap();
    let (code, body) = admin(&s).post("/reload").await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ok"], true, "{body}");
    assert_eq!(v["generation"], 2, "{body}");
    assert_eq!(v["needs_restart"], serde_json::json!([]), "{body}");
    assert_eq!(www_from_germany(&s).await, ["198.51.100.99"]);

    let status = s.server.monitor().status();
    assert_eq!(status["config"]["generation"], 2);
    assert_eq!(status["config"]["last_reload"]["result"], "ok");
    assert!(status["config"]["last_reload"]["error"].is_null());
    let m = scrape(&s).await;
    assert!(
        m.contains("\nmeridian_reloads_total{result=\"ok\"} 1\n"),
        "{m}"
    );
    assert!(m.contains("\nmeridian_config_generation 2\n"), "{m}");
    assert!(
        m.contains("\nmeridian_snapshot_build_seconds_count 2\n"),
        "{m}"
    );
}

#[tokio::test]
async fn a_bad_config_keeps_the_running_one_and_says_why() {
    let s = TestServer::example().await;
    std::fs::write(
        zone_path(&s),
        example_zone().replace(
            "datacenters = [\"us-east\", \"eu-west\", \"ap-southeast\"]",
            "datacenters = [\"us-east\", \"eu-wst\", \"ap-southeast\"]",
        ),
    )
    .unwrap();
    let (code, body) = admin(&s).post("/reload").await;
    assert_eq!(code, 422, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let error = v["error"].as_str().unwrap_or_default();
    for part in [
        "gslb.example.com.toml",
        "services.www.datacenters[1]",
        "unknown datacenter \"eu-wst\"",
    ] {
        assert!(error.contains(part), "{part:?} not in {error:?}");
    }
    // Still answering from the running config.
    assert_eq!(www_from_germany(&s).await, ["198.51.100.10"]);
    let status = s.server.monitor().status();
    assert_eq!(status["config"]["generation"], 1);
    assert_eq!(status["config"]["last_reload"]["result"], "error");
    assert_eq!(status["config"]["last_reload"]["error"], error);
    let m = scrape(&s).await;
    assert!(
        m.contains("\nmeridian_reloads_total{result=\"error\"} 1\n"),
        "{m}"
    );
    assert!(m.contains("\nmeridian_config_generation 1\n"), "{m}");
}

#[tokio::test]
async fn reload_needs_the_token_like_every_other_post() {
    let token = "reload-token-0123456789";
    let s = TestServer::example_with(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{token}\"\n"
    ))
    .await;
    let addr = s.server.admin_addr().unwrap();
    let (code, _) = Client::new(addr).post("/reload").await;
    assert_eq!(code, 401);
    let (code, body) = Client::with_token(addr, token).post("/reload").await;
    assert_eq!(code, 200, "{body}");
}

/// Concurrent reloads run one at a time: each gets its own generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reloads_are_serialized() {
    let s = TestServer::example().await;
    let addr = s.server.admin_addr().unwrap();
    let posts =
        (0..4).map(|_| tokio::spawn(async move { Client::new(addr).post("/reload").await }));
    let mut generations = Vec::new();
    for p in posts {
        let (code, body) = p.await.unwrap();
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        generations.push(v["generation"].as_u64().unwrap());
    }
    generations.sort_unstable();
    assert_eq!(generations, [2, 3, 4, 5]);
}

/// The restart-only settings are compared with what the process runs
/// with: a change is reported, and once it is reverted, no longer.
#[tokio::test]
async fn the_restart_warning_stops_once_the_change_is_reverted() {
    let s = TestServer::example().await;
    let path = s.dir.path().join("meridian.toml");
    let original = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("tcp_idle_timeout = 99\n{original}")).unwrap();
    let r = s.server.reload().expect("reload");
    assert_eq!(r.needs_restart, ["tcp_idle_timeout"]);
    let r = s.server.reload().expect("reload");
    assert_eq!(r.needs_restart, ["tcp_idle_timeout"], "still pending");
    std::fs::write(&path, original).unwrap();
    let r = s.server.reload().expect("reload");
    assert!(r.needs_restart.is_empty(), "{:?}", r.needs_restart);
}

//------------ Log lines -------------------------------------------------------

/// Captures this thread's log lines (no ANSI colours).
fn capture() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
    #[derive(Clone)]
    struct W(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for W {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Arc::new(Mutex::new(Vec::new()));
    let w = W(Arc::clone(&buf));
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || w.clone())
        .finish();
    (buf, tracing::subscriber::set_default(subscriber))
}

fn text(buf: &Arc<Mutex<Vec<u8>>>) -> String {
    String::from_utf8_lossy(&buf.lock().unwrap()).into_owned()
}

#[tokio::test]
async fn a_service_with_no_usable_datacenter_is_logged_once_each_way() {
    use meridian::health::Override::Drain;
    let s = TestServer::example().await;
    let m = s.server.monitor();
    let (buf, _guard) = capture();
    for dc in ["us-east", "eu-west", "ap-southeast"] {
        m.set_override(Z, dc, Some(Drain)).unwrap();
    }
    // More publications while it stays down: no more lines about it.
    m.publish();
    m.publish();
    m.set_override(Z, "eu-west", None).unwrap();
    m.publish();
    let log = text(&buf);
    let down = log.matches("service has no usable datacenter left").count();
    let up = log.matches("service has a usable datacenter again").count();
    assert_eq!((down, up), (1, 1), "{log}");
    assert!(log.contains("service=www"), "{log}");
    assert!(log.contains("answering with every datacenter"), "{log}");
    // Overrides are written as the API names them, not as Rust values.
    assert!(log.contains("operator override: drain"), "{log}");
    assert!(log.contains("operator override: cleared"), "{log}");
    assert!(!log.contains("Some("), "{log}");
    assert!(!log.contains("None"), "{log}");
}
