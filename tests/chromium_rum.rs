//! The RUM snippet in a real browser (issue 8): headless Chromium loads a
//! local page that embeds `/meridian-rum.js` from the real beacon
//! listener; the snippet times three local "datacenter objects" (and one
//! that refuses connections) and its beacon reaches the listener.
//!
//! Needs Debian's `chromium`; without it the test fails and says how to
//! install it.

#![allow(missing_docs)]

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{Uri, header};
use axum::response::IntoResponse;
use meridian::latency::beacon::{self, BeaconSink, Beacons};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long the browser may take to load the page, measure and post.
const BEACON_WAIT: Duration = Duration::from_secs(30);

/// A 1x1 transparent GIF.
const GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

const DATACENTERS: [&str; 3] = ["ap-south", "eu-west", "us-east"];
/// Configured, but its object's port refuses connections.
const UNREACHABLE: &str = "down-dc";

type Beacon = (IpAddr, Vec<(String, f64, f64)>);

/// Passes each beacon to the test.
struct Forward(mpsc::UnboundedSender<Beacon>);

impl BeaconSink for Forward {
    fn known(&self, datacenter: &str) -> bool {
        DATACENTERS.contains(&datacenter) || datacenter == UNREACHABLE
    }
    fn accept(&self, client: IpAddr, samples: &[(String, f64, f64)]) {
        let _ = self.0.send((client, samples.to_vec()));
    }
}

/// Serves `router` on a fresh loopback port.
async fn http_server(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// A datacenter object: the GIF at any path; records each request's URI.
async fn object_server(requests: Arc<Mutex<Vec<String>>>) -> SocketAddr {
    let router = Router::new().fallback(move |uri: Uri| {
        requests.lock().unwrap().push(uri.to_string());
        async {
            (
                [
                    (header::CONTENT_TYPE, "image/gif"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                GIF,
            )
                .into_response()
        }
    });
    http_server(router).await
}

/// A loopback port nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// Starts Chromium on `url` with a fresh profile in `profile`.
fn chromium(url: &str, profile: &Path) -> Child {
    let spawned = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("install chromium (apt-get install chromium): {e}")
        }
        Err(e) => panic!("cannot start chromium: {e}"),
    }
}

/// Ends the browser we started, by its PID: SIGTERM lets it take its
/// helper processes down; SIGKILL if it has not gone within 10 s.
async fn stop(mut child: Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill(2) on the PID of our own child, which has not been
        // reaped yet (`child` is still waited for below), so the PID
        // cannot have been reused.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_measures_three_datacenters_and_the_beacon_arrives() {
    // Three datacenters, each with its object server.
    let mut objects = String::from("[rum.objects]\n");
    let mut seen: Vec<Arc<Mutex<Vec<String>>>> = Vec::new();
    for dc in DATACENTERS {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let addr = object_server(Arc::clone(&requests)).await;
        objects.push_str(&format!("\"{dc}\" = \"http://{addr}/meridian-rum.gif\"\n"));
        seen.push(requests);
    }
    let dead = closed_port().await;
    objects.push_str(&format!(
        "\"{UNREACHABLE}\" = \"http://{dead}/meridian-rum.gif\"\n"
    ));

    // The real beacon listener.
    let text = format!("[rum]\nenabled = true\nlisten = \"127.0.0.1:0\"\n{objects}");
    let config = meridian::config::parse_server(Path::new("meridian.toml"), &text)
        .unwrap_or_else(|e| panic!("{e}"));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let beacons = Beacons::new(Arc::new(config.rum), Arc::new(Forward(tx)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rum = listener.local_addr().unwrap();
    let token = CancellationToken::new();
    let _stop_listener = token.clone().drop_guard();
    tokio::spawn(beacon::serve(listener, Arc::clone(&beacons), token));

    // The site that embeds the snippet, on another origin.
    let page = format!(
        "<!doctype html><html><head><title>shop</title>\
         <script src=\"http://{rum}/meridian-rum.js\"></script></head>\
         <body><p>A page with the Meridian RUM snippet.</p></body></html>"
    );
    let site =
        http_server(
            Router::new().fallback(move || {
                let page = page.clone();
                async move {
                    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response()
                }
            }),
        )
        .await;

    let profile = tempfile::tempdir().unwrap();
    let browser = chromium(&format!("http://{site}/"), profile.path());
    let got = tokio::time::timeout(BEACON_WAIT, rx.recv()).await;
    stop(browser).await;
    let (client, mut samples) = got
        .unwrap_or_else(|_| {
            panic!(
                "no beacon within {BEACON_WAIT:?}; listener stats {:?}",
                beacons.stats()
            )
        })
        .expect("the sink is alive");

    assert_eq!(client, "127.0.0.1".parse::<IpAddr>().unwrap());
    samples.sort_by(|a, b| a.0.cmp(&b.0));
    let names: Vec<&str> = samples.iter().map(|s| s.0.as_str()).collect();
    // The refused datacenter is left out, not reported.
    assert_eq!(names, DATACENTERS, "{samples:?}");
    for (dc, rtt, weight) in &samples {
        assert!(*rtt > 0.0 && *rtt < 5000.0, "{dc}: {rtt} ms");
        assert_eq!(*weight, 1.0);
    }
    // Each object was fetched twice (warm-up, then timed), each time
    // with a fresh cache-busting query.
    for (dc, requests) in DATACENTERS.iter().zip(&seen) {
        let uris = requests.lock().unwrap().clone();
        assert_eq!(uris.len(), 2, "{dc}: {uris:?}");
        assert!(
            uris.iter()
                .all(|u| u.starts_with("/meridian-rum.gif?meridian-rum=")),
            "{dc}: {uris:?}"
        );
        assert_ne!(uris[0], uris[1], "{dc}");
    }
    let stats = beacons.stats();
    assert_eq!(
        (stats.accepted, stats.measurements, stats.rejected),
        (1, 3, 0)
    );
}
