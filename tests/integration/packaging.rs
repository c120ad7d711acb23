//! Packaging and install: `meridian init`, the built-in GeoIP database,
//! graceful shutdown of the real binary, the systemd unit and the .deb.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UdpSocket};

use crate::harness::{
    Setup, a_answers, example_zone, query, read_framed, repo, udp_query_at, write_config,
    write_framed,
};

fn meridian(args: &[&str], path: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(args)
        .arg(path)
        .output()
        .expect("run meridian")
}

/// `init` writes a config that `check` accepts with the built-in GeoIP
/// database (no geoip/ folder anywhere near it), that serves geo answers
/// from that database, and `init` never overwrites.
#[tokio::test]
async fn init_writes_a_starter_that_checks_and_serves_with_the_built_in_geoip() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("etc/meridian");
    let out = meridian(&["init"], &target);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = target.join("meridian.toml");
    assert!(target.join("zones/gslb.example.com.toml").is_file());
    assert!(!target.join("geoip").exists());

    let out = meridian(&["check", "--config"], &config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("GeoIP <built-in dbip-country.mmdb>"),
        "{stderr}"
    );
    // An ISO date, not a raw epoch (the shipped database's build date).
    assert!(stderr.contains("built 2026-06-01"), "{stderr}");

    // It serves, from the built-in database: RIPE's network (NL) goes to
    // eu-west, the University of Tokyo's (JP) to ap-southeast.
    let server = meridian::Server::start_with(
        &config,
        meridian::StartOptions {
            listen: Some(vec!["127.0.0.1:0".parse().unwrap()]),
            admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        },
    )
    .await
    .unwrap();
    let addr = server.local_addrs()[0];
    let nl = udp_query_at(addr, "www.gslb.example.com", Some("193.0.6.0/24")).await;
    assert_eq!(a_answers(&nl), ["198.51.100.10"]);
    let jp = udp_query_at(addr, "www.gslb.example.com", Some("133.11.0.0/24")).await;
    assert_eq!(a_answers(&jp), ["203.0.113.10"]);
    server.shutdown().await;

    // A second init refuses, names the file and leaves it as it was.
    std::fs::write(&config, "# mine\n").unwrap();
    let out = meridian(&["init"], &target);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("meridian.toml: already exists"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "# mine\n");
    // Also when only the zone exists: nothing is written.
    std::fs::remove_file(&config).unwrap();
    let out = meridian(&["init"], &target);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        !config.exists(),
        "init wrote meridian.toml beside an existing zone"
    );
}

/// A configured `geoip` file still wins over the built-in database: the
/// test database places 193.0.6.0/24 nowhere, so it gets the default.
#[test]
fn a_configured_geoip_file_wins() {
    let dir = tempfile::tempdir().unwrap();
    let zone = example_zone();
    let path = write_config(
        dir.path(),
        &Setup {
            zones: &[("gslb.example.com.toml", &zone)],
            ..Setup::default()
        },
    );
    let out = meridian(&["check", "--config"], &path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("test.mmdb (type Meridian-Test-Flat"),
        "{stderr}"
    );
}

/// Reads the child's stderr until a line contains `needle`; returns it.
async fn wait_for_line(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
    needle: &str,
) -> String {
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains(needle) {
                return line;
            }
        }
        panic!("meridian exited before logging {needle:?}");
    })
    .await
    .unwrap_or_else(|_| panic!("no {needle:?} in the log within 60 s"))
}

/// Whether a UDP query to `addr` is answered within 200 ms.
async fn udp_answers(addr: SocketAddr) -> bool {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let q = query("www.gslb.example.com", RecordType::A, None);
    sock.send_to(&q.to_vec().unwrap(), addr).await.unwrap();
    let mut buf = [0u8; 2048];
    tokio::time::timeout(Duration::from_millis(200), sock.recv_from(&mut buf))
        .await
        .is_ok()
}

/// SIGTERM to the real binary: a TCP query that is half sent when the
/// signal arrives is still answered, idle connections are closed, and the
/// process exits 0 promptly (probes stopped, every task ended).
#[tokio::test]
async fn sigterm_finishes_tcp_answers_in_flight_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let zone = example_zone();
    let config = write_config(
        dir.path(),
        &Setup {
            zones: &[("gslb.example.com.toml", &zone)],
            ..Setup::default()
        },
    );
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["run", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().expect("pid");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = wait_for_line(&mut lines, "listening on UDP and TCP").await;
    let addr: SocketAddr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("local="))
        .expect("local= in the log line")
        .parse()
        .unwrap();
    wait_for_line(&mut lines, "ready").await;

    // One full exchange first: the connection is accepted and served.
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let q = query("www.gslb.example.com", RecordType::A, Some("11.2.0.0/24"));
    write_framed(&mut conn, &q.to_vec().unwrap()).await;
    let first = Message::from_vec(&read_framed(&mut conn).await).unwrap();
    assert_eq!(a_answers(&first), ["198.51.100.10"]);
    // An idle connection, which shutdown closes at once.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    write_framed(&mut idle, &q.to_vec().unwrap()).await;
    read_framed(&mut idle).await;

    // The second query, half sent.
    let q = query("www.gslb.example.com", RecordType::A, Some("11.3.0.0/24"));
    let packet = q.to_vec().unwrap();
    let mut framed = u16::try_from(packet.len()).unwrap().to_be_bytes().to_vec();
    framed.extend_from_slice(&packet);
    let (head, tail) = framed.split_at(framed.len() / 2);
    conn.write_all(head).await.unwrap();

    // SIGTERM, then wait until the server has stopped serving (its UDP
    // threads end on the shutdown token): shutdown is under way.
    // SAFETY: kill(2) on the child this test spawned.
    let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill -TERM");
    wait_for_line(&mut lines, "shutting down").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while udp_answers(addr).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "UDP still answered 10 s after SIGTERM"
        );
    }

    // The rest of the query: it is answered, then the connection closes.
    conn.write_all(tail).await.unwrap();
    let answer = Message::from_vec(&read_framed(&mut conn).await).unwrap();
    assert_eq!(answer.metadata.id, q.metadata.id);
    assert_eq!(a_answers(&answer), ["203.0.113.10"]);
    let mut rest = Vec::new();
    let eof = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest)).await;
    assert!(
        matches!(eof, Ok(Ok(0))),
        "connection not closed after the answer: {eof:?}"
    );
    let eof = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest)).await;
    assert!(
        matches!(eof, Ok(Ok(0))),
        "idle connection not closed: {eof:?}"
    );

    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("meridian exits within 10 s of SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{status}");
}

#[allow(dead_code)]
fn repo_file(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}
