//! TCP hardening (issue 11): answers are never held back behind a partial
//! next query, one client cannot take every connection slot, and a full
//! server makes room by closing its oldest idle connection.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{Setup, TestServer, a_answers, framed, query, read_framed};

/// Much shorter than the idle timeout of the servers below: an answer that
/// arrives within it was not waiting for anything.
const PROMPT: Duration = Duration::from_secs(2);

/// Reads one framed answer within `PROMPT`.
async fn answer_promptly(s: &mut TcpStream) -> Message {
    let bytes = tokio::time::timeout(PROMPT, async {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    })
    .await
    .expect("the answer comes without waiting for the next query")
    .expect("the answer is sent before the connection closes");
    Message::from_vec(&bytes).unwrap()
}

/// Query 1 and the first `partial` bytes of query 2 in one write.
fn one_and_a_bit(partial: usize) -> (Message, Vec<u8>) {
    let q1 = query("mail.gslb.example.com.", RecordType::A, None);
    let q2 = query("www.gslb.example.com.", RecordType::A, None);
    let mut bytes = framed(&q1);
    bytes.extend_from_slice(&framed(&q2)[..partial]);
    (q1, bytes)
}

#[tokio::test]
async fn an_answer_is_not_held_back_by_the_start_of_the_next_query() {
    // RFC 7766 §6.2.1: answer each complete message as soon as it is read.
    let s = TestServer::example_with("tcp_idle_timeout = 30").await;
    for partial in [1, 2, 5] {
        let (q1, bytes) = one_and_a_bit(partial);
        let mut conn = TcpStream::connect(s.addr).await.unwrap();
        conn.write_all(&bytes).await.unwrap();
        let r = answer_promptly(&mut conn).await;
        assert_eq!(
            r.metadata.id, q1.metadata.id,
            "{partial} byte(s) of query 2"
        );
        assert_eq!(a_answers(&r), ["192.0.2.25"]);
    }
}

#[tokio::test]
async fn an_answer_is_sent_when_the_client_half_closes_after_a_partial_query() {
    let s = TestServer::example_with("tcp_idle_timeout = 30").await;
    for partial in [1, 3] {
        let (q1, bytes) = one_and_a_bit(partial);
        let mut conn = TcpStream::connect(s.addr).await.unwrap();
        conn.write_all(&bytes).await.unwrap();
        conn.shutdown().await.unwrap();
        let r = answer_promptly(&mut conn).await;
        assert_eq!(
            r.metadata.id, q1.metadata.id,
            "{partial} byte(s) of query 2"
        );
    }
}

#[tokio::test]
async fn pipelined_complete_queries_are_all_answered_in_order() {
    let s = TestServer::example_with("").await;
    let qs: Vec<Message> = (0..20)
        .map(|_| query("mail.gslb.example.com.", RecordType::A, None))
        .collect();
    let mut conn = TcpStream::connect(s.addr).await.unwrap();
    let bytes: Vec<u8> = qs.iter().flat_map(framed).collect();
    conn.write_all(&bytes).await.unwrap();
    for q in &qs {
        let r = Message::from_vec(&read_framed(&mut conn).await).unwrap();
        assert_eq!(r.metadata.id, q.metadata.id);
    }
}

//------------ Connection slots ---------------------------------------------

/// A TCP connection from `from` (any 127/8 address works on Linux).
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
    sock.connect(to).await.unwrap()
}

/// One query on `conn`, answered within `PROMPT`.
async fn ask_on(conn: &mut TcpStream) {
    let q = query("mail.gslb.example.com.", RecordType::A, None);
    conn.write_all(&framed(&q)).await.unwrap();
    let r = answer_promptly(conn).await;
    assert_eq!(r.metadata.id, q.metadata.id);
}

/// Whether the server closed `conn` (EOF or reset) within `limit`.
async fn closed_within(conn: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(limit, conn.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn a_full_listener_closes_its_oldest_idle_connection_for_a_newcomer() {
    // Idle and busy timeouts far beyond the test: only making room can
    // admit the newcomer.
    let s = TestServer::example_with(
        "tcp_max_connections = 8\ntcp_max_connections_per_client = 8\n\
         tcp_idle_timeout = 60\ntcp_busy_idle_timeout = 60",
    )
    .await;
    // One client takes every slot, each connection answered once (so the
    // server holds it) and then idle, oldest first.
    let mut hog = Vec::new();
    for _ in 0..8 {
        let mut c = connect_from("127.0.0.1", s.addr).await;
        ask_on(&mut c).await;
        hog.push(c);
    }
    // Another client is answered at once, not after an idle timeout.
    let mut newcomer = connect_from("127.0.0.2", s.addr).await;
    ask_on(&mut newcomer).await;
    // The oldest idle connection made room; the others are still open.
    assert!(
        closed_within(&mut hog[0], PROMPT).await,
        "the oldest idle connection is closed"
    );
    for c in &mut hog[1..] {
        ask_on(c).await;
    }
    assert_eq!(s.server.tcp_stats().closed_for_room, 1);
    // Again: now the newcomer has been idle the longest (the others have
    // just been used), so it goes, not the oldest connection.
    let mut second = connect_from("127.0.0.3", s.addr).await;
    ask_on(&mut second).await;
    assert!(closed_within(&mut newcomer, PROMPT).await);
    ask_on(&mut hog[1]).await;
    assert_eq!(s.server.tcp_stats().closed_for_room, 2);
}

#[tokio::test]
async fn one_client_address_cannot_take_every_slot() {
    let s = TestServer::example_with(
        "tcp_max_connections = 16\ntcp_max_connections_per_client = 3\ntcp_idle_timeout = 60",
    )
    .await;
    let mut mine = Vec::new();
    for _ in 0..3 {
        let mut c = connect_from("127.0.0.1", s.addr).await;
        ask_on(&mut c).await;
        mine.push(c);
    }
    // The fourth from the same address is closed at once, unanswered.
    let mut fourth = connect_from("127.0.0.1", s.addr).await;
    let q = query("mail.gslb.example.com.", RecordType::A, None);
    let _ = fourth.write_all(&framed(&q)).await; // may already be reset
    assert!(closed_within(&mut fourth, PROMPT).await, "refused");
    assert_eq!(s.server.tcp_stats().refused_client_limit, 1);
    // Other addresses are unaffected, and so are the three.
    let mut other = connect_from("127.0.0.2", s.addr).await;
    ask_on(&mut other).await;
    for c in &mut mine {
        ask_on(c).await;
    }
    // A closed connection gives its share back (once the server has seen
    // the close: poll).
    drop(mine.pop());
    let deadline = tokio::time::Instant::now() + PROMPT;
    loop {
        let mut c = connect_from("127.0.0.1", s.addr).await;
        let q = query("mail.gslb.example.com.", RecordType::A, None);
        if c.write_all(&framed(&q)).await.is_ok() {
            let mut len = [0u8; 2];
            if let Ok(Ok(_)) = tokio::time::timeout(PROMPT, c.read_exact(&mut len)).await {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a slot freed by a closed connection is given again"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn idle_connections_get_the_short_timeout_when_slots_run_low() {
    // 4 slots: a 4th connection puts the listener above 3/4.
    let s = TestServer::example_with(
        "tcp_max_connections = 4\ntcp_max_connections_per_client = 4\n\
         tcp_idle_timeout = 60\ntcp_busy_idle_timeout = 1",
    )
    .await;
    // Alone, a connection keeps the long timeout...
    let mut first = connect_from("127.0.0.1", s.addr).await;
    ask_on(&mut first).await;
    assert!(
        !closed_within(&mut first, Duration::from_millis(1500)).await,
        "no pressure yet: the 60 s timeout"
    );
    // ...until the slots run low: then it goes at once (it has been idle
    // over 1 s already), and the others after ~1 s idle, until the
    // pressure clears at half the slots.
    let mut rest = Vec::new();
    for _ in 0..3 {
        let mut c = connect_from("127.0.0.1", s.addr).await;
        ask_on(&mut c).await;
        rest.push(c);
    }
    assert!(
        closed_within(&mut first, PROMPT).await,
        "idle before the pressure began, closed once it did"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while s.server.tcp_stats().open > 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "idle connections under pressure close after 1 s, not 60 s: {:?}",
            s.server.tcp_stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(rest);
}

#[test]
fn tcp_slot_keys_are_checked() {
    use std::path::Path;
    let parse = |t: &str| meridian::config::parse_server(Path::new("m.toml"), t);
    let d = parse("").unwrap();
    assert_eq!(d.tcp_max_connections_per_client, 32);
    assert_eq!(d.tcp_busy_idle_timeout, Duration::from_secs(2));
    // Unset, the busy timeout follows a shorter idle timeout down.
    let c = parse("tcp_idle_timeout = 1").unwrap();
    assert_eq!(c.tcp_busy_idle_timeout, Duration::from_secs(1));
    let e = parse("tcp_idle_timeout = 5\ntcp_busy_idle_timeout = 6").unwrap_err();
    assert_eq!(e.key, "tcp_busy_idle_timeout");
    assert!(e.reason.contains("1 to 5"), "{e}");
    let e = parse("tcp_busy_idle_timeout = 0").unwrap_err();
    assert_eq!(e.key, "tcp_busy_idle_timeout");
    let e = parse("tcp_max_connections_per_client = 0").unwrap_err();
    assert_eq!(e.key, "tcp_max_connections_per_client");
    assert!(e.reason.contains("1 to 65535"), "{e}");
    let e = parse("tcp_max_connections_per_client = 65536").unwrap_err();
    assert_eq!(e.key, "tcp_max_connections_per_client");
}

//------------ Signals during start-up --------------------------------------

/// The real binary, killed if the test ends without stopping it.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `signal` (a `kill` name such as "HUP") to the process `pid`.
fn send_signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Stderr lines of a child, read on a thread.
struct Log {
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Log {
    fn new(stderr: std::process::ChildStderr) -> Self {
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits up to `limit` for a line containing `needle`; returns it.
    async fn wait_for(&mut self, needle: &str, limit: Duration) -> String {
        self.try_wait_for(needle, limit)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like `wait_for`, but says what went wrong instead of panicking.
    async fn try_wait_for(&mut self, needle: &str, limit: Duration) -> Result<String, String> {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return Ok(l.clone());
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return Ok(line);
                    }
                }
                Ok(None) => {
                    return Err(format!(
                        "stderr closed before {needle:?}; log: {:#?}",
                        self.seen
                    ));
                }
                Err(_) => {
                    return Err(format!(
                        "no {needle:?} within {limit:?}; log: {:#?}",
                        self.seen
                    ));
                }
            }
        }
    }

    fn position(&self, needle: &str) -> Option<usize> {
        self.seen.iter().position(|l| l.contains(needle))
    }
}

#[tokio::test]
async fn sighup_during_start_up_is_queued_not_fatal() {
    // A probe target that accepts and never answers: the first probe round
    // waits for its full timeout, so start-up takes about 3 s.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_addr = hang.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = hang.accept().await {
            conns.push(c);
        }
    });
    let zone = format!(
        "{}\n[datacenters.us-east.probe]\ntype = \"http\"\ntargets = [\"{hang_addr}\"]\n\
         interval = \"10s\"\ntimeout = \"3s\"\njitter = 0.0\n",
        example_zone_without_probe()
    );
    let dir = tempfile::tempdir().unwrap();
    let config = crate::harness::write_config(
        dir.path(),
        &Setup {
            zones: &[("gslb.example.com.toml", &zone)],
            server_toml: "wait_for_probes = true\n[admin]\nenabled = false\n",
            ..Setup::default()
        },
    );
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["run", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Child(child);
    let pid = child.0.id();
    let mut log = Log::new(child.0.stderr.take().unwrap());
    // Start-up has begun (the config is loaded) and the probe round is
    // about to hold it for seconds.
    log.wait_for("snapshot built", Duration::from_secs(10))
        .await;
    send_signal(pid, "HUP");
    let queued = log
        .try_wait_for("reload queued", Duration::from_secs(5))
        .await;
    let exited = child.0.try_wait().unwrap();
    assert!(
        exited.is_none(),
        "SIGHUP during start-up killed it: {exited:?}"
    );
    queued.unwrap();
    assert!(
        log.position("meridian: ready").is_none(),
        "the signal was sent during start-up: {:#?}",
        log.seen
    );
    assert!(child.0.try_wait().unwrap().is_none(), "still running");
    let listening = log
        .wait_for("listening on UDP and TCP", Duration::from_secs(15))
        .await;
    log.wait_for("meridian: ready", Duration::from_secs(5))
        .await;
    log.wait_for("configuration reloaded", Duration::from_secs(10))
        .await;
    // And it serves.
    let addr: SocketAddr = listening
        .split_whitespace()
        .find_map(|w| w.strip_prefix("local="))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {listening:?}"));
    let r = crate::harness::udp_query_at(addr, "mail.gslb.example.com.", None).await;
    assert_eq!(a_answers(&r), ["192.0.2.25"]);
    assert!(child.0.try_wait().unwrap().is_none(), "still running");
    // SIGTERM by PID: a clean exit.
    send_signal(pid, "TERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "exits after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
    holder.abort();
}

//------------ File descriptors ---------------------------------------------

/// Starts the real binary on 127.0.0.1:0 under `sh -c "<limits>; exec …"`.
fn spawn_meridian(config: &std::path::Path, limits: &str) -> (Child, Log) {
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{limits}; exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_meridian"))
        .args(["run", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let log = Log::new(child.stderr.take().unwrap());
    (Child(child), log)
}

/// The DNS address from a "listening on UDP and TCP" line.
fn listen_addr(line: &str) -> SocketAddr {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("local="))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}

#[tokio::test]
async fn a_full_tcp_listener_never_takes_the_descriptors_probes_need() {
    // A TCP probe target that accepts and closes.
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        while let Ok((c, _)) = backend.accept().await {
            drop(c);
        }
    });
    let zone = format!(
        "{}\n[datacenters.us-east.probe]\ntype = \"tcp\"\ntargets = [\"{backend_addr}\"]\n\
         interval = \"200ms\"\ntimeout = \"150ms\"\nfall = 1\njitter = 0.0\n",
        example_zone_without_probe()
    );
    let dir = tempfile::tempdir().unwrap();
    let config = crate::harness::write_config(
        dir.path(),
        &Setup {
            zones: &[("gslb.example.com.toml", &zone)],
            server_toml: "threads = 1\nmax_probes_in_flight = 32\n\
                          tcp_max_connections = 1024\ntcp_max_connections_per_client = 1024\n\
                          tcp_idle_timeout = 60\ntcp_busy_idle_timeout = 60\n\
                          [admin]\nenabled = false\n",
            ..Setup::default()
        },
    );
    // 128 open files, raisable to 160: far below 1,024 connections.
    let (mut child, mut log) = spawn_meridian(&config, "ulimit -S -n 128; ulimit -H -n 160");
    let raised = log
        .wait_for("raised the open-files limit", Duration::from_secs(10))
        .await;
    assert!(
        raised.contains("from=128") && raised.contains("to=160"),
        "{raised}"
    );
    // 160 - (1 listener × (1 UDP socket + listener + 1 pending) + 32
    // probes + 64 reserve) = 61.
    let lowered = log
        .wait_for("tcp_max_connections lowered", Duration::from_secs(10))
        .await;
    assert!(lowered.contains("from 1024 to 61"), "{lowered}");
    assert!(lowered.contains("max_probes_in_flight"), "{lowered}");
    let addr = listen_addr(
        &log.wait_for("listening on UDP and TCP", Duration::from_secs(10))
            .await,
    );
    log.wait_for("meridian: ready", Duration::from_secs(10))
        .await;
    // Twice as many clients as the cap, one after another, each holding
    // its connection: every one is answered (the oldest idle connection
    // makes room), and the server never runs out of descriptors.
    let mut held = Vec::new();
    for i in 0..122u32 {
        let from = format!("127.0.{}.{}", 1 + i / 200, 1 + i % 200);
        let mut c = connect_from(&from, addr).await;
        ask_on(&mut c).await;
        held.push(c);
    }
    log.wait_for(
        "closing the connection idle the longest",
        Duration::from_secs(5),
    )
    .await;
    // Probes kept passing all along: us-east is still answered.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r =
            crate::harness::udp_query_at(addr, "www.gslb.example.com.", Some("11.1.0.0/24")).await;
        assert_eq!(a_answers(&r), ["192.0.2.10"]);
    }
    assert!(child.0.try_wait().unwrap().is_none(), "still running");
    drop(held);
    send_signal(child.0.id(), "TERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while child.0.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "exits after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Drain what is left of the log and check nothing ran out.
    let _ = log.try_wait_for("\u{0}", Duration::from_secs(2)).await;
    for line in &log.seen {
        assert!(
            !line.contains("Down") && !line.contains("Too many open files"),
            "{line}"
        );
    }
    holder.abort();
}

/// The shipped example zone without us-east's external probe, so a test
/// can give us-east a probe of its own.
fn example_zone_without_probe() -> String {
    let zone = crate::harness::example_zone();
    let probe = "[datacenters.us-east.probe]\ntype = \"external\"\n";
    assert!(zone.contains(probe), "the example zone changed: {zone}");
    zone.replace(probe, "")
}
