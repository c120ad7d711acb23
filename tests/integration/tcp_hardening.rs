//! TCP hardening (issue 11): answers are never held back behind a partial
//! next query, one client cannot take every connection slot, and a full
//! server makes room by closing its oldest idle connection.

use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{Setup, TestServer, a_answers, query, read_framed};

/// Much shorter than the idle timeout of the servers below: an answer that
/// arrives within it was not waiting for anything.
const PROMPT: Duration = Duration::from_secs(2);

async fn example_with(server_toml: &str) -> TestServer {
    let zone = crate::harness::example_zone();
    TestServer::start_with(Setup {
        zones: &[("gslb.example.com.toml", &zone)],
        server_toml,
        ..Setup::default()
    })
    .await
}

fn framed(q: &Message) -> Vec<u8> {
    let bytes = q.to_vec().unwrap();
    let mut out = u16::try_from(bytes.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(&bytes);
    out
}

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
    let s = example_with("tcp_idle_timeout = 30").await;
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
    let s = example_with("tcp_idle_timeout = 30").await;
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
    let s = example_with("").await;
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
