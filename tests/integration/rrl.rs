//! Response rate limiting against the real server: floods from one
//! loopback source are limited (with slips), other client prefixes are
//! not, exempt networks and TCP never are, and a reload applies new
//! settings.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::net::UdpSocket;

use crate::harness::{EXCHANGE_TIMEOUT, Setup, TestServer, example_zone, query};

const WWW: &str = "www.gslb.example.com.";

async fn start(rrl: &str) -> TestServer {
    let zone = example_zone();
    let server_toml = format!("[rrl]\n{rrl}\n");
    TestServer::start_with(Setup {
        zones: &[("gslb.example.com.toml", &zone)],
        server_toml: &server_toml,
        ..Setup::default()
    })
    .await
}

/// A client socket on loopback address `ip` (anything in 127/8 works).
async fn client(ip: &str) -> UdpSocket {
    UdpSocket::bind(format!("{ip}:0")).await.unwrap()
}

/// One UDP exchange from `sock`; every query here gets a response (a
/// whole one or a slip), so none is allowed to time out.
async fn exchange(sock: &UdpSocket, to: SocketAddr, name: &str) -> Message {
    let q = query(name, RecordType::A, None);
    sock.send_to(&q.to_vec().unwrap(), to).await.unwrap();
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, _) = tokio::time::timeout(EXCHANGE_TIMEOUT, sock.recv_from(&mut buf))
            .await
            .expect("a response (whole or truncated) within the timeout")
            .unwrap();
        let m = Message::from_vec(&buf[..n]).expect("response decodes");
        if m.metadata.id == q.metadata.id {
            return m;
        }
    }
}

/// A slip: TC, the question, no records but OPT.
fn is_slip(m: &Message) -> bool {
    if !m.metadata.truncation {
        return false;
    }
    assert!(m.answers.is_empty() && m.authorities.is_empty(), "{m:?}");
    assert_eq!(m.queries.len(), 1, "question kept");
    assert!(m.edns.is_some(), "OPT kept");
    true
}

fn is_whole_answer(m: &Message) -> bool {
    !m.metadata.truncation && !m.answers.is_empty()
}

#[tokio::test]
async fn a_flood_from_one_source_is_limited_and_other_clients_are_served() {
    const RATE: f64 = 10.0;
    const FLOOD: usize = 2000;
    let s = start("responses_per_second = 10\nwindow = 2\nslip = 2").await;
    let to = s.addr;
    let flooder = Arc::new(client("127.0.0.1").await);

    // Collect every response to the flood until it has been quiet for
    // 300 ms after the last query went out (bounded: 10 s in all).
    let rx = Arc::clone(&flooder);
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(false);
    let receiver = tokio::spawn(async move {
        let (mut whole, mut slips) = (0usize, 0usize);
        let mut buf = vec![0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let quiet = if *done_rx.borrow() {
                Duration::from_millis(300)
            } else {
                Duration::from_secs(5)
            };
            tokio::select! {
                r = tokio::time::timeout(quiet, rx.recv_from(&mut buf)) => match r {
                    Ok(Ok((n, _))) => {
                        let m = Message::from_vec(&buf[..n]).expect("response decodes");
                        if is_slip(&m) {
                            slips += 1;
                        } else {
                            assert!(is_whole_answer(&m), "{m:?}");
                            whole += 1;
                        }
                    }
                    _ => break,
                },
                _ = done_rx.changed() => {}
            }
            assert!(Instant::now() < deadline, "flood responses kept coming");
        }
        (whole, slips)
    });

    // Another /24 (127.0.1.0/24) asks all along: always answered.
    let bystander = tokio::spawn(async move {
        let sock = client("127.0.1.1").await;
        for _ in 0..8 {
            let m = exchange(&sock, to, WWW).await;
            assert!(is_whole_answer(&m), "bystander limited: {m:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    // The flood: 2,000 identical queries over about a second, in bursts
    // of 50 every 25 ms.
    let packet = query(WWW, RecordType::A, None).to_vec().unwrap();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(25));
    for _ in 0..FLOOD / 50 {
        tick.tick().await;
        for _ in 0..50 {
            flooder.send_to(&packet, to).await.unwrap();
        }
    }
    done_tx.send(true).unwrap();
    let (whole, slips) = receiver.await.unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    bystander.await.unwrap();

    // One second of credit to start with, then the rate.
    let allowed = (RATE * (elapsed + 1.0)).floor() as usize;
    let stats = s.server.rrl().stats();
    eprintln!(
        "flood of {FLOOD} in {elapsed:.2} s: {whole} whole answers (at most {allowed}), \
         {slips} slipped, server: {stats:?}"
    );
    // /status shows the same counters, and the TCP ones beside them.
    let status = s.server.monitor().status();
    assert_eq!(
        status["rrl"]["dropped"].as_u64(),
        Some(stats.dropped),
        "{status}"
    );
    assert_eq!(status["rrl"]["slipped"].as_u64(), Some(stats.slipped));
    assert!(status["tcp"]["open"].is_u64(), "{status}");
    assert!(whole >= 1, "the first queries are answered");
    assert!(whole <= allowed, "{whole} answers > {allowed}");
    // slip = 2: every second limited response goes out truncated.
    let limited = FLOOD - whole;
    assert!(slips >= 1 && slips <= limited.div_ceil(2), "{slips} slips");
    assert!(slips >= limited / 4, "{slips} slips of {limited} limited");
    assert!(stats.slipped >= slips as u64);
    assert!(stats.dropped >= (limited / 4) as u64);
    assert!(stats.dropped + stats.slipped <= FLOOD as u64);

    // TCP proves the source address: never limited.
    let m = s.tcp(&query(WWW, RecordType::A, None)).await;
    assert!(is_whole_answer(&m), "{m:?}");
}

#[tokio::test]
async fn one_prefix_shares_a_budget_per_kind_and_tcp_is_not_limited() {
    // slip = 1: every limited response is a slip, so nothing times out.
    let s = start("responses_per_second = 5\nwindow = 60\nslip = 1").await;
    let a = client("127.0.0.1").await;
    let started = Instant::now();
    let mut whole = 0;
    for _ in 0..30 {
        let m = exchange(&a, s.addr, WWW).await;
        if !is_slip(&m) {
            assert!(is_whole_answer(&m));
            whole += 1;
        }
    }
    let allowed = (5.0 * (started.elapsed().as_secs_f64() + 1.0)).floor() as usize;
    assert!(
        (1..=allowed).contains(&whole),
        "{whole} of 30 (at most {allowed})"
    );

    // The same /24, another address: the same (spent) budget.
    let b = client("127.0.0.2").await;
    assert!(is_slip(&exchange(&b, s.addr, WWW).await));
    // Another /24: its own.
    let c = client("127.0.1.1").await;
    assert!(is_whole_answer(&exchange(&c, s.addr, WWW).await));
    // Another name is another answer key; NXDOMAIN is its own kind.
    assert!(is_whole_answer(
        &exchange(&a, s.addr, "app.gslb.example.com.").await
    ));
    let nx = exchange(&a, s.addr, "nope.gslb.example.com.").await;
    assert!(!nx.metadata.truncation);
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    // TCP from the limited address is answered in full.
    let m = s.tcp(&query(WWW, RecordType::A, None)).await;
    assert!(is_whole_answer(&m), "{m:?}");
}

#[tokio::test]
async fn exempt_networks_get_everything_and_reload_applies_settings() {
    let s = start("responses_per_second = 5\nwindow = 60\nslip = 1").await;
    let a = client("127.0.0.1").await;
    let mut kinds = HashSet::new();
    for _ in 0..40 {
        kinds.insert(is_slip(&exchange(&a, s.addr, WWW).await));
    }
    assert!(kinds.contains(&true), "limited before the exemption");

    // Exempt 127.0.0.0/24 by a reload: everything is answered, despite the
    // debt the key has built up.
    let path = s.dir.path().join("meridian.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "[rrl]\n",
        "[rrl]\nexempt = [\"127.0.0.0/24\", \"::1/128\"]\n",
    );
    std::fs::write(&path, text).unwrap();
    s.server.reload().expect("reload");
    for i in 0..200 {
        let m = exchange(&a, s.addr, WWW).await;
        assert!(is_whole_answer(&m), "query {i} after the exemption: {m:?}");
    }
    // Other networks are still limited.
    let c = client("127.0.1.1").await;
    let mut slips = 0;
    for _ in 0..40 {
        slips += usize::from(is_slip(&exchange(&c, s.addr, WWW).await));
    }
    assert!(slips >= 20, "{slips} of 40 limited outside the exemption");
}
