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
    Setup, a_answers, example_zone, framed, query, read_framed, repo, udp_query_at, write_config,
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
    let Running {
        mut child,
        mut lines,
        admin: _,
        dns: addr,
        _dir,
    } = run_example("").await;

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
    let framed = framed(&q);
    let (head, tail) = framed.split_at(framed.len() / 2);
    conn.write_all(head).await.unwrap();

    // SIGTERM, then wait until the server has stopped serving (its UDP
    // threads end on the shutdown token): shutdown is under way.
    sigterm(&child);
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

    exits_zero_within_10s(&mut child).await;
}

/// A client that keeps pipelining cannot hold shutdown open: its
/// connection is closed at the first moment no query is waiting, and at
/// the latest `tcp_idle_timeout` (1 s here) after SIGTERM; the process
/// exits 0. (On loopback the first kind of moment comes within
/// milliseconds; the timeout is the backstop for a client fast enough
/// never to leave one.)
#[tokio::test]
async fn sigterm_closes_a_pipelining_connection_after_the_idle_timeout() {
    let Running {
        mut child,
        mut lines,
        admin: _,
        dns: addr,
        _dir,
    } = run_example("tcp_idle_timeout = 1").await;
    // Drain the log so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let conn = TcpStream::connect(addr).await.unwrap();
    let (mut rx, mut tx) = conn.into_split();
    let framed = framed(&query("www.gslb.example.com", RecordType::A, None));
    // Writes queries back to back for at most 20 s.
    let writer = tokio::spawn(async move {
        let until = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::time::Instant::now() < until {
            if tx.write_all(&framed).await.is_err() {
                return;
            }
        }
    });
    // Reads answers until the server closes the connection.
    let (answers_tx, mut answers) = tokio::sync::watch::channel(0u64);
    let reader = tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            let mut len = [0u8; 2];
            if rx.read_exact(&mut len).await.is_err() {
                return n;
            }
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            if rx.read_exact(&mut buf).await.is_err() {
                return n;
            }
            n += 1;
            let _ = answers_tx.send(n);
        }
    });
    tokio::time::timeout(Duration::from_secs(10), answers.wait_for(|&n| n >= 100))
        .await
        .expect("100 pipelined answers within 10 s")
        .unwrap();

    sigterm(&child);
    let sent_at = tokio::time::Instant::now();
    let answered = tokio::time::timeout(Duration::from_secs(8), reader)
        .await
        .expect("the pipelining connection is closed within 8 s of SIGTERM")
        .unwrap();
    assert!(answered >= 100);
    exits_zero_within_10s(&mut child).await;
    assert!(sent_at.elapsed() < Duration::from_secs(10));
    writer.abort();
}

//------------ meridian geoip update ------------------------------------------

#[derive(serde::Serialize)]
struct CountryRecord {
    country_code: &'static str,
}

/// A flat-schema database of `n` IPv4 /24s (alternating countries, so
/// none merge) built at `epoch`.
fn geo_db(n: u32, epoch: std::time::SystemTime) -> Vec<u8> {
    let mut w = mmdb_writer::Writer::builder("Meridian-Test-Update")
        .build_epoch(epoch)
        .build();
    for i in 0..n {
        let net =
            ipnet::Ipv4Net::new(std::net::Ipv4Addr::from((20u32 << 24) + (i << 8)), 24).unwrap();
        let country_code = ["DE", "FR", "US"][(i % 3) as usize];
        w.insert(net, &CountryRecord { country_code }).unwrap();
    }
    w.to_bytes().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn update(config: &Path, file: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["geoip", "update", "--no-reload", "--config"])
        .arg(config)
        .arg("--file")
        .arg(file)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".geoip-update-"))
        .collect()
}

/// A good database replaces the configured one by rename (a reader of
/// the old file keeps reading the old file whole); corrupt, truncated,
/// too small and older databases are refused and the installed one is
/// kept byte for byte.
#[test]
fn geoip_update_installs_a_verified_file_atomically_and_refuses_bad_ones() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let zone = example_zone();
    let config = write_config(
        dir.path(),
        &Setup {
            zones: &[("gslb.example.com.toml", &zone)],
            ..Setup::default()
        },
    );
    let target = dir.path().join("test.mmdb");
    let downloads = tempfile::tempdir().unwrap();
    let good = geo_db(12_000, std::time::SystemTime::now());
    let good_gz = downloads.path().join("dbip-country-lite-2026-11.mmdb.gz");
    std::fs::write(&good_gz, gzip(&good)).unwrap();

    let mut reader = std::fs::File::open(&target).unwrap();
    let before = std::fs::read(&target).unwrap();
    let (code, stderr) = update(&config, &good_gz, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("12000 IPv4 and 0 IPv6 networks, 100.0 % with a country"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("installed {}", target.display())),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&target).unwrap(),
        good,
        "installed, decompressed"
    );
    let mut old = Vec::new();
    reader.read_to_end(&mut old).unwrap();
    assert_eq!(
        old, before,
        "the old file was replaced by rename, not rewritten"
    );
    assert!(leftovers(dir.path()).is_empty());
    // The config loads with it.
    let out = meridian(&["check", "--config"], &config);
    let check = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{check}");
    assert!(check.contains("type Meridian-Test-Update"), "{check}");

    // Refused: garbage, a truncated download, a database far too small,
    // one older than the installed one. Nothing changes.
    let truncated = gzip(&good);
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "garbage.mmdb",
            b"this is not a database".to_vec(),
            "cannot open GeoIP database",
        ),
        (
            "truncated.mmdb.gz",
            truncated[..truncated.len() / 2].to_vec(),
            "not a valid gzip file",
        ),
        (
            "small.mmdb",
            crate::harness::flat_test_db(),
            "networks (at least 10000 expected)",
        ),
        (
            "old.mmdb",
            geo_db(
                12_000,
                std::time::UNIX_EPOCH + Duration::from_secs(1_600_000_000),
            ),
            "older than the installed database",
        ),
    ];
    for (name, bytes, why) in &cases {
        let path = downloads.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let (code, stderr) = update(&config, &path, &[]);
        assert_eq!(code, Some(1), "{name}: {stderr}");
        assert!(stderr.contains(why), "{name}: {stderr}");
        assert!(
            stderr.contains("nothing installed") || *name == "truncated.mmdb.gz",
            "{stderr}"
        );
        assert_eq!(
            std::fs::read(&target).unwrap(),
            good,
            "{name} changed the file"
        );
        assert!(leftovers(dir.path()).is_empty(), "{name}");
    }
    // --force takes an older one.
    let (code, stderr) = update(&config, &downloads.path().join("old.mmdb"), &["--force"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(std::fs::read(&target).unwrap(), cases[3].1);
}

/// Without `geoip` in the config the file goes beside it as geoip.mmdb,
/// and the operator is told to point `geoip` at it.
#[test]
fn geoip_update_without_a_configured_file_installs_beside_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let out = meridian(&["init"], dir.path());
    assert!(out.status.success());
    let config = dir.path().join("meridian.toml");
    let file = dir.path().join("download.mmdb");
    std::fs::write(&file, geo_db(10_500, std::time::SystemTime::now())).unwrap();
    let (code, stderr) = update(&config, &file, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(dir.path().join("geoip.mmdb").is_file());
    assert!(
        stderr.contains("next: set geoip = \"geoip.mmdb\""),
        "{stderr}"
    );
    // The running config still uses the built-in database.
    let out = meridian(&["check", "--config"], &config);
    assert!(String::from_utf8_lossy(&out.stderr).contains("<built-in dbip-country.mmdb>"));
}

/// After installing, the update asks the server at `[admin] listen` to
/// reload, with the token: a real HTTP listener on loopback stands in for
/// the admin API and records the request. A failed reload exits 4, with
/// the file installed.
#[tokio::test]
async fn geoip_update_posts_reload_to_the_admin_api_with_the_token() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = listener.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let zone = example_zone();
    let server_toml =
        format!("[admin]\nlisten = \"{admin}\"\ntoken = \"s3cret-token-for-tests\"\n");
    let config = write_config(
        dir.path(),
        &Setup {
            zones: &[("gslb.example.com.toml", &zone)],
            server_toml: &server_toml,
            ..Setup::default()
        },
    );
    let file = dir.path().join("new.mmdb");
    std::fs::write(&file, geo_db(10_200, std::time::SystemTime::now())).unwrap();

    for (status, code) in [("200 OK", 0), ("500 Internal Server Error", 4)] {
        let mut run = {
            let (config, file) = (config.clone(), file.clone());
            tokio::task::spawn_blocking(move || {
                Command::new(env!("CARGO_BIN_EXE_meridian"))
                    .args(["geoip", "update", "--force", "--config"])
                    .arg(&config)
                    .arg("--file")
                    .arg(&file)
                    .output()
                    .unwrap()
            })
        };
        let mut conn = tokio::select! {
            r = tokio::time::timeout(Duration::from_secs(60), listener.accept()) => {
                r.expect("the update connects to the admin API within 60 s").unwrap().0
            }
            out = &mut run => {
                let out = out.unwrap();
                panic!("exited without POST /reload: {}", String::from_utf8_lossy(&out.stderr));
            }
        };
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "connection closed mid-request");
            request.extend_from_slice(&buf[..n]);
        }
        let body = r#"{"result":"ok"}"#;
        conn.write_all(
            format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        drop(conn);
        let out = run.await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let request = String::from_utf8_lossy(&request).to_ascii_lowercase();
        assert!(
            request.starts_with("post /reload http/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.contains("\r\nauthorization: bearer s3cret-token-for-tests\r\n"),
            "{request}"
        );
        assert_eq!(out.status.code(), Some(code), "{stderr}");
        if code == 0 {
            assert!(stderr.contains(r#"reloaded: {"result":"ok"}"#), "{stderr}");
        } else {
            assert!(
                stderr.contains("installed, but the reload failed"),
                "{stderr}"
            );
            assert!(stderr.contains("HTTP 500"), "{stderr}");
        }
        assert_eq!(
            std::fs::read(dir.path().join("test.mmdb")).unwrap(),
            std::fs::read(&file).unwrap()
        );
    }
}

//------------ systemd unit and .deb --------------------------------------------

/// A tool the test needs; fails loudly when missing (scripts/test.sh
/// installs them).
fn require(tool: &str, install: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} not found: {install} (scripts/test.sh does this)"
    );
}

/// The unit has the hardening and the directives the README promises,
/// and `systemd-analyze verify` accepts it without a warning.
#[test]
fn systemd_unit_is_hardened_and_verifies() {
    let unit = repo_file("packaging/meridian.service");
    for line in [
        "User=meridian",
        "ExecStart=/usr/bin/meridian run --config /etc/meridian/meridian.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "StateDirectory=meridian",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "WantedBy=multi-user.target",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "packaging/meridian.service lacks {line}"
        );
    }
    // The packaged config writes only where the unit lets it.
    let config = repo_file("packaging/meridian.toml");
    assert!(config.contains("state_file = \"/var/lib/meridian/state.json\""));
    assert!(config.contains("state_file = \"/var/lib/meridian/latency.bin\""));

    require("systemd-analyze", "apt-get install systemd");
    let dir = tempfile::tempdir().unwrap();
    // verify checks that the binaries exist: point it at this build.
    let path = dir.path().join("meridian.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/meridian", env!("CARGO_BIN_EXE_meridian")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
}

/// `cargo deb` builds the package from this build's binary; it holds the
/// binary, the unit, the example config as conffiles and a postinst that
/// creates the user; extracted into a fresh tree, the binary accepts the
/// shipped config with its built-in GeoIP database.
#[test]
fn deb_package_contents_and_its_config_check() {
    require("cargo-deb", "cargo install cargo-deb --locked");
    require("dpkg-deb", "apt-get install dpkg");
    let out_dir = tempfile::tempdir().unwrap();
    // --no-build: the binary this test run built (target/debug); the
    // release build takes minutes.
    let out = Command::new(env!("CARGO"))
        .args(["deb", "--no-build", "--profile", "dev", "--fast", "--quiet"])
        .arg("--manifest-path")
        .arg(repo().join("Cargo.toml"))
        .arg("--output")
        .arg(out_dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo deb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = std::fs::read_dir(out_dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb");

    let dpkg = |args: &[&str], extra: Option<&Path>| {
        let out = Command::new("dpkg-deb")
            .args(args)
            .arg(&deb)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "dpkg-deb {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listing = dpkg(&["--contents"], None);
    for (path, mode) in [
        ("./usr/bin/meridian", "-rwxr-xr-x"),
        ("./usr/lib/systemd/system/meridian.service", "-rw-r--r--"),
        ("./etc/meridian/meridian.toml", "-rw-r-----"),
        ("./etc/meridian/zones/gslb.example.com.toml", "-rw-r-----"),
        ("./usr/share/doc/meridian/copyright", "-rw-r--r--"),
    ] {
        assert!(
            listing
                .lines()
                .any(|l| l.starts_with(mode) && l.ends_with(path)),
            "{path} ({mode}) not in the package:\n{listing}"
        );
    }
    let field = |name: &str| {
        let out = Command::new("dpkg-deb")
            .args(["--field"])
            .arg(&deb)
            .arg(name)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(field("Package"), "meridian");
    assert!(field("Depends").contains("adduser"), "{}", field("Depends"));

    let root = tempfile::tempdir().unwrap();
    let control = root.path().join("DEBIAN");
    dpkg(&["--control"], Some(&control));
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert!(
        conffiles
            .lines()
            .any(|l| l == "/etc/meridian/meridian.toml"),
        "{conffiles}"
    );
    assert!(
        conffiles
            .lines()
            .any(|l| l == "/etc/meridian/zones/gslb.example.com.toml")
    );
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(postinst.contains("adduser --system --group"), "{postinst}");
    assert!(
        postinst.contains("deb-systemd-helper enable meridian.service"),
        "{postinst}"
    );

    dpkg(&["--extract"], Some(root.path()));
    let bin = root.path().join("usr/bin/meridian");
    let config = root.path().join("etc/meridian/meridian.toml");
    let out = Command::new(&bin)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("GeoIP <built-in dbip-country.mmdb>"),
        "{stderr}"
    );
    let out = Command::new(&bin).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("DB-IP"));
}

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `meridian run` on `config` (any free port), its log read line by line.
fn spawn_run(
    config: &Path,
) -> (
    tokio::process::Child,
    tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["run", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    (child, lines)
}

/// The real binary serving the example zone, ready, with the addresses
/// its log names.
struct Running {
    /// Holds the config until the test ends.
    _dir: tempfile::TempDir,
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
    admin: SocketAddr,
    dns: SocketAddr,
}

/// Starts `meridian run` on the example zone with `server_toml` added and
/// waits for its log to say it is ready.
async fn run_example(server_toml: &str) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let zone = example_zone();
    let config = write_config(
        dir.path(),
        &Setup {
            zones: &[("gslb.example.com.toml", &zone)],
            server_toml,
            ..Setup::default()
        },
    );
    let (child, mut lines) = spawn_run(&config);
    let admin = log_field(
        &wait_for_line(&mut lines, "admin API listening").await,
        "addr=",
    );
    let dns = log_field(
        &wait_for_line(&mut lines, "listening on UDP and TCP").await,
        "local=",
    );
    wait_for_line(&mut lines, "ready").await;
    Running {
        _dir: dir,
        child,
        lines,
        admin,
        dns,
    }
}

/// Sends SIGTERM to the child.
fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().expect("pid");
    // SAFETY: kill(2) on the child this test spawned.
    let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill -TERM");
}

/// Waits for the child to exit, and checks it exits 0 within 10 s.
async fn exits_zero_within_10s(child: &mut tokio::process::Child) {
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("meridian exits within 10 s of SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{status}");
}

/// The value of `key=` in a log line.
fn log_field(line: &str, key: &str) -> SocketAddr {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        .parse()
        .unwrap()
}

/// With its stderr closed (the reader gone, as when a log pipe dies), the
/// server loses log lines, not its work: a reload, which logs, still
/// succeeds, and DNS is still answered. The log's own error report used
/// to panic the logging task ("failed printing to stderr").
#[tokio::test]
async fn a_closed_stderr_loses_log_lines_not_the_server() {
    let Running {
        mut child,
        lines,
        admin,
        dns,
        _dir,
    } = run_example("").await;
    drop(lines);

    for _ in 0..3 {
        let mut conn = TcpStream::connect(admin).await.unwrap();
        let request = format!(
            "POST /reload HTTP/1.1\r\nHost: {admin}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        tokio::time::timeout(Duration::from_secs(30), conn.read_to_string(&mut response))
            .await
            .expect("reload answered")
            .unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains(r#""ok":true"#), "{response}");
    }
    assert!(udp_answers(dns).await, "DNS still answered");
    assert!(child.try_wait().unwrap().is_none(), "still running");
}
