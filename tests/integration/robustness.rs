//! Garbage in: FORMERR or silence, never a panic, and the server keeps
//! answering.

use std::net::IpAddr;

use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

use crate::harness::{
    EXCHANGE_TIMEOUT, Rng, TestServer, a_answers, query, read_framed, write_framed,
};

/// Mutations of valid queries: truncations, bit flips, random bytes and
/// hostile counts. Each goes through the real handler in-process (fast,
/// 20k cases) and must produce nothing or a well-formed response.
#[test]
fn handler_survives_mutated_queries() {
    let (_, snap) = meridian::load(&crate::harness::repo().join("meridian.toml")).unwrap();
    let src: IpAddr = "127.0.0.1".parse().unwrap();
    let seeds: Vec<Vec<u8>> = [
        query("www.gslb.example.com.", RecordType::A, Some("11.1.0.0/24")),
        query("app.gslb.example.com.", RecordType::AAAA, None),
        query("gslb.example.com.", RecordType::ANY, Some("2001:db8::/56")),
    ]
    .iter()
    .map(|m| m.to_vec().unwrap())
    .collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut answered = 0;
    for i in 0..20_000 {
        let mut p = seeds[i % seeds.len()].clone();
        match rng.below(5) {
            0 => p.truncate(rng.below(p.len() + 1)),
            1 => {
                for _ in 0..=rng.below(4) {
                    let at = rng.below(p.len());
                    p[at] ^= 1 << rng.below(8);
                }
            }
            2 => {
                let n = rng.below(600);
                p = (0..n).map(|_| rng.next() as u8).collect();
            }
            3 => {
                // Absurd section counts.
                if p.len() >= 12 {
                    let at = 4 + 2 * rng.below(4);
                    p[at] = 0xff;
                    p[at + 1] = rng.next() as u8;
                }
            }
            _ => {
                let at = rng.below(p.len());
                let junk: Vec<u8> = (0..rng.below(40)).map(|_| rng.next() as u8).collect();
                p.splice(at..at, junk);
            }
        }
        for transport in [meridian::dns::Transport::Udp, meridian::dns::Transport::Tcp] {
            if let Some(resp) = meridian::dns::handle(&snap, &p, src, transport) {
                answered += 1;
                assert!(resp.len() >= 12);
                assert_eq!(resp[..2], p[..2], "response keeps the query ID");
                assert!(resp[2] & 0x80 != 0, "QR set");
                if transport == meridian::dns::Transport::Udp {
                    assert!(resp.len() <= 1232);
                }
            }
        }
    }
    assert!(
        answered > 10_000,
        "most mutants still get an answer ({answered})"
    );
}

#[tokio::test]
async fn garbage_over_udp_never_stops_the_server() {
    let s = TestServer::example().await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut rng = Rng(42);
    for _ in 0..300 {
        let n = rng.below(100);
        let mut p: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        if p.len() > 2 {
            p[2] &= 0x7f; // a "query", so it is not silently dropped as a response
        }
        sock.send_to(&p, s.addr).await.unwrap();
    }
    // A response packet (QR=1) is dropped, not answered: the next datagram
    // we receive is the reply to the valid query sent after it. (A fresh
    // socket: the first one's receive buffer may have overflowed with
    // FORMERR replies we never read.)
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut as_response = query("www.gslb.example.com.", RecordType::A, None);
    as_response.metadata.message_type = hickory_proto::op::MessageType::Response;
    sock.send_to(&as_response.to_vec().unwrap(), s.addr)
        .await
        .unwrap();
    let valid = query("www.gslb.example.com.", RecordType::A, Some("11.2.0.0/24"));
    sock.send_to(&valid.to_vec().unwrap(), s.addr)
        .await
        .unwrap();
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, _) = tokio::time::timeout(EXCHANGE_TIMEOUT, sock.recv_from(&mut buf))
            .await
            .expect("the server still answers")
            .unwrap();
        assert_ne!(
            u16::from_be_bytes([buf[0], buf[1]]),
            as_response.metadata.id,
            "a response must never be answered"
        );
        let Ok(m) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        if m.metadata.id == valid.metadata.id {
            assert_eq!(a_answers(&m), ["198.51.100.10"]);
            break;
        }
    }
}

#[tokio::test]
async fn unparseable_queries_get_formerr_with_their_id() {
    let s = TestServer::example().await;
    // A header announcing one question, followed by a broken name.
    let packet = [0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 63, b'x'];
    let r = crate::harness::udp_exchange(s.addr, &packet).await;
    assert_eq!(&r[..2], &[0xab, 0xcd]);
    assert_eq!(r[2] & 0x80, 0x80, "QR");
    assert_eq!(r[2] & 0x01, 0x01, "RD copied");
    assert_eq!(r[3] & 0x0f, 1, "FORMERR");
    // Two questions: FORMERR too.
    let mut q = query("www.gslb.example.com.", RecordType::A, None);
    q.queries.push(q.queries[0].clone());
    assert_eq!(
        s.udp(&q).await.metadata.response_code,
        hickory_proto::op::ResponseCode::FormErr
    );
}

#[tokio::test]
async fn garbage_over_tcp_closes_only_that_connection() {
    let s = TestServer::example().await;
    let mut bad = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    bad.write_all(&[0, 5, 1, 2, 3, 4, 5]).await.unwrap();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(EXCHANGE_TIMEOUT, bad.read_to_end(&mut rest))
        .await
        .expect("the server closes the connection")
        .unwrap_or(0);
    assert_eq!(n, 0, "nothing answered to a 5-byte message");

    // A length prefix and then silence does not hold up other clients.
    let mut stalled = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    stalled.write_all(&[0, 40, 1]).await.unwrap();
    let mut good = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let q = query("mail.gslb.example.com.", RecordType::A, None);
    write_framed(&mut good, &q.to_vec().unwrap()).await;
    let r = Message::from_vec(&read_framed(&mut good).await).unwrap();
    assert_eq!(a_answers(&r), ["192.0.2.25"]);
    drop(stalled);
}

#[tokio::test]
async fn idle_tcp_connections_are_closed() {
    let zone = crate::harness::example_zone();
    let s = TestServer::start_with(crate::harness::Setup {
        zones: &[("gslb.example.com.toml", &zone)],
        server_toml: "tcp_idle_timeout = 1",
        ..crate::harness::Setup::default()
    })
    .await;
    let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let q = query("mail.gslb.example.com.", RecordType::A, None);
    write_framed(&mut conn, &q.to_vec().unwrap()).await;
    read_framed(&mut conn).await;
    // The server closes the connection once it has been idle for 1 s.
    let mut rest = Vec::new();
    let n = tokio::time::timeout(EXCHANGE_TIMEOUT, conn.read_to_end(&mut rest))
        .await
        .expect("closed by the server after its idle timeout")
        .unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn tcp_clients_that_never_read_do_not_hold_their_slot() {
    let edge = crate::protocol::EDGE_ZONE;
    let s = TestServer::start_with(crate::harness::Setup {
        zones: &[("edge.test.toml", edge)],
        server_toml: "tcp_max_connections = 1\ntcp_idle_timeout = 1",
        ..crate::harness::Setup::default()
    })
    .await;
    // Pipeline thousands of queries for a 1.5 KB answer and never read:
    // the server's writes block once the socket buffers are full.
    let mut greedy = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let q = query("big.edge.test.", RecordType::TXT, None)
        .to_vec()
        .unwrap();
    let mut burst = Vec::new();
    for _ in 0..8000 {
        burst.extend_from_slice(&u16::try_from(q.len()).unwrap().to_be_bytes());
        burst.extend_from_slice(&q);
    }
    // Best effort: the server may close the connection before all is sent.
    let _ = tokio::time::timeout(EXCHANGE_TIMEOUT, greedy.write_all(&burst)).await;
    // The only slot is freed by the write timeout, and the next client is
    // served (within the exchange timeout, well after the 1 s idle limit).
    let mut next = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let small = query("c.edge.test.", RecordType::A, None);
    write_framed(&mut next, &small.to_vec().unwrap()).await;
    let r = Message::from_vec(&read_framed(&mut next).await).unwrap();
    assert_eq!(a_answers(&r), ["192.0.2.99"]);
    drop(greedy);
}

#[tokio::test]
async fn ecs_with_the_wrong_number_of_address_octets_gets_formerr() {
    let s = TestServer::example().await;
    // Family 1, source /16, but three address octets (RFC 7871 §6: FORMERR).
    let mut bytes = query("www.gslb.example.com.", RecordType::A, None)
        .to_vec()
        .unwrap();
    let ecs = [0u8, 8, 0, 7, 0, 1, 16, 0, 10, 2, 3];
    let rdlen_at = bytes.len() - 2;
    bytes[rdlen_at..].copy_from_slice(&(ecs.len() as u16).to_be_bytes());
    bytes.extend_from_slice(&ecs);
    let r = Message::from_vec(&crate::harness::udp_exchange(s.addr, &bytes).await).unwrap();
    assert_eq!(
        r.metadata.response_code,
        hickory_proto::op::ResponseCode::FormErr
    );
    assert!(r.edns.is_some(), "the OPT is still echoed");
    // The same with an NSID option beside it (which the fast path leaves
    // to the general path): still FORMERR.
    let nsid = [0u8, 3, 0, 0];
    let mut with_nsid = bytes.clone();
    let rdlen_at = with_nsid.len() - ecs.len() - 2;
    let rdlen = (ecs.len() + nsid.len()) as u16;
    with_nsid[rdlen_at..rdlen_at + 2].copy_from_slice(&rdlen.to_be_bytes());
    with_nsid.extend_from_slice(&nsid);
    let r = Message::from_vec(&crate::harness::udp_exchange(s.addr, &with_nsid).await).unwrap();
    assert_eq!(
        r.metadata.response_code,
        hickory_proto::op::ResponseCode::FormErr
    );
}
