//! Issue 11: the standards deviations third-party tools found (private
//! ECS, needless truncation, TSIG, BADVERS), NSID and DNS cookies, each
//! against the real server over real sockets.

use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::{RData, RecordType};

use crate::harness::{
    Setup, TestServer, a_answers, ecs_of, plain_query, query, tcp_exchange, udp_exchange,
};

/// A zone whose apex NS answer fits in 512 bytes but not with its glue,
/// and a delegation whose required glue does not fit either.
fn wide_zone() -> String {
    let mut z = String::from(
        "origin = \"wide.test.\"\nns = [\"ns1.wide.test.\", \"ns2.wide.test.\", \"ns3.wide.test.\", \"ns4.wide.test.\", \"ns5.wide.test.\", \"ns6.wide.test.\"]\n[soa]\nrname = \"hostmaster.wide.test.\"\nserial = 1\n[records]\n",
    );
    for i in 1..=6 {
        for (owner, base) in [(format!("ns{i}"), 1), (format!("\"ns{i}.sub\""), 2)] {
            let mut records: Vec<String> = (1..=4)
                .map(|k| {
                    format!(
                        "{{ type = \"A\", value = \"192.0.{base}.{}\" }}",
                        i * 10 + k
                    )
                })
                .collect();
            records.extend((1..=4).map(|k| {
                format!(
                    "{{ type = \"AAAA\", value = \"2001:db8:{base}::{}\" }}",
                    i * 10 + k
                )
            }));
            z.push_str(&format!("{owner} = [{}]\n", records.join(", ")));
        }
    }
    let sub: Vec<String> = (1..=6)
        .map(|i| format!("{{ type = \"NS\", value = \"ns{i}.sub\" }}"))
        .collect();
    z.push_str(&format!("sub = [{}]\n", sub.join(", ")));
    z
}

#[tokio::test]
async fn a_private_ecs_address_is_routed_by_the_resolver() {
    let s = TestServer::example().await;
    // The resolver (127.0.0.1) is in Japan in the test database.
    let japan = s
        .ask("www.gslb.example.com.", RecordType::A, Some("11.3.0.0/24"))
        .await;
    for (subnet, source) in [
        ("10.1.2.0/24", 24),
        ("192.168.7.0/24", 24),
        ("172.20.0.0/16", 16),
        ("100.64.1.0/24", 24),
        ("127.0.0.0/8", 8),
        ("fd00:1:2::/48", 48),
        ("fe80::/64", 64),
    ] {
        let r = s
            .ask("www.gslb.example.com.", RecordType::A, Some(subnet))
            .await;
        assert_eq!(a_answers(&r), a_answers(&japan), "{subnet}");
        // The scope covers exactly the subnet the resolver sent: the
        // answer was decided for it, not for every client.
        assert_eq!(ecs_of(&r).map(|e| e.2), Some(source), "{subnet}");
    }
    // A public address is still located by itself (Germany).
    let r = s
        .ask("www.gslb.example.com.", RecordType::A, Some("11.2.0.0/24"))
        .await;
    assert_ne!(a_answers(&r), a_answers(&japan));
}

#[tokio::test]
async fn additional_records_go_before_the_answer_is_truncated() {
    let zone = wide_zone();
    let s = TestServer::start(&[("wide.test.toml", &zone)]).await;
    // Apex NS without EDNS (512 bytes): the glue does not fit, the NS
    // answer does: no TC, no additionals (RFC 2181 §9).
    let r = s.udp(&plain_query("wide.test.", RecordType::NS)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(
        !r.metadata.truncation,
        "only the additional section was cut"
    );
    assert_eq!(r.answers.len(), 6);
    assert!(r.additionals.is_empty());
    // With EDNS and room, the glue comes too; over TCP, all of it.
    let r = s.udp(&query("wide.test.", RecordType::NS, None)).await;
    assert!(!r.metadata.truncation);
    assert_eq!(r.answers.len(), 6);
    assert_eq!(r.additionals.len(), 48, "1232 bytes hold all the glue");
    let r = s.tcp(&plain_query("wide.test.", RecordType::NS)).await;
    assert_eq!(r.additionals.len(), 48);
    // A referral's glue is required (RFC 9471): when it does not fit,
    // TC, so the resolver retries over TCP.
    let r = s
        .udp(&plain_query("www.sub.wide.test.", RecordType::A))
        .await;
    assert!(r.metadata.truncation, "required glue does not fit");
    assert!(r.answers.is_empty() && r.authorities.is_empty());
    let r = s
        .tcp(&plain_query("www.sub.wide.test.", RecordType::A))
        .await;
    assert!(!r.metadata.truncation);
    assert_eq!(r.authorities.len(), 6);
    assert_eq!(r.additionals.len(), 48);
}

#[tokio::test]
async fn badvers_carries_the_question() {
    let s = TestServer::example().await;
    let mut q = query("www.gslb.example.com.", RecordType::A, None);
    q.edns.as_mut().unwrap().set_version(1);
    for r in [s.udp(&q).await, s.tcp(&q).await] {
        // BADVERS is extended rcode 16 (hickory decodes 16 as BADSIG).
        assert_eq!(u16::from(r.metadata.response_code), 16);
        assert_eq!(r.queries.len(), 1, "the question, as BIND sends it");
        assert_eq!(r.queries[0].name().to_ascii(), "www.gslb.example.com.");
        assert_eq!(r.edns.as_ref().expect("OPT").version(), 0);
        assert!(r.answers.is_empty());
    }
}

/// A query signed with TSIG (key `key.example.`, HMAC-SHA256, a 32-byte
/// MAC that no key of ours can check), with or without OPT.
fn signed_query(with_opt: bool) -> (Vec<u8>, u16) {
    let q = if with_opt {
        query("www.gslb.example.com.", RecordType::A, None)
    } else {
        plain_query("www.gslb.example.com.", RecordType::A)
    };
    let id = q.metadata.id;
    let mut p = q.to_vec().unwrap();
    let ar = u16::from_be_bytes([p[10], p[11]]) + 1;
    p[10..12].copy_from_slice(&ar.to_be_bytes());
    let mut rdata = Vec::new();
    rdata.extend_from_slice(b"\x0bhmac-sha256\x00");
    rdata.extend_from_slice(&[0, 0, 0x6a, 0x00, 0x00, 0x01]); // time signed
    rdata.extend_from_slice(&300u16.to_be_bytes()); // fudge
    rdata.extend_from_slice(&32u16.to_be_bytes());
    rdata.extend_from_slice(&[0xab; 32]);
    rdata.extend_from_slice(&id.to_be_bytes());
    rdata.extend_from_slice(&[0, 0, 0, 0]); // error, other length
    p.extend_from_slice(b"\x03key\x07example\x00");
    p.extend_from_slice(&[0, 250, 0, 255, 0, 0, 0, 0]);
    p.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    p.extend_from_slice(&rdata);
    (p, id)
}

#[tokio::test]
async fn a_query_signed_with_an_unknown_key_gets_badkey() {
    let s = TestServer::example().await;
    for with_opt in [false, true] {
        let (p, id) = signed_query(with_opt);
        for r in [
            udp_exchange(s.addr, &p).await,
            tcp_exchange(s.addr, &p).await,
        ] {
            // RFC 8945 §5.2.2: NOTAUTH, and an unsigned TSIG with BADKEY.
            assert_eq!(r[3] & 0x0f, 9, "NOTAUTH");
            assert_eq!(&r[6..10], &[0, 0, 0, 0], "no answer or authority");
            assert_eq!(u16::from_be_bytes([r[10], r[11]]), 1 + u16::from(with_opt));
            // The TSIG record is last: owner, type, class ANY, TTL 0.
            let owner = b"\x03key\x07example\x00";
            let at = r
                .windows(owner.len())
                .rposition(|w| w == owner)
                .expect("the key name");
            let rr = &r[at + owner.len()..];
            assert_eq!(&rr[..8], &[0, 250, 0, 255, 0, 0, 0, 0]);
            let rdata = &rr[10..];
            assert_eq!(usize::from(u16::from_be_bytes([rr[8], rr[9]])), rdata.len());
            let alg = b"\x0bhmac-sha256\x00";
            assert_eq!(&rdata[..alg.len()], alg);
            let rest = &rdata[alg.len()..];
            assert_eq!(&rest[..6], &[0, 0, 0x6a, 0, 0, 1], "time signed echoed");
            assert_eq!(&rest[8..10], &[0, 0], "MAC size 0: unsigned");
            assert_eq!(&rest[10..12], &id.to_be_bytes(), "original ID");
            assert_eq!(&rest[12..14], &17u16.to_be_bytes(), "BADKEY");
            assert_eq!(&rest[14..], &[0, 0]);
        }
    }
    // Counted, not logged.
    let status = s.server.monitor().status();
    assert!(status["dns"]["badkey"].as_u64().unwrap() >= 4, "{status}");
    // A TSIG record that is not the last record: FORMERR (RFC 8945 §5.1).
    let (mut p, _) = signed_query(false);
    let ar = u16::from_be_bytes([p[10], p[11]]) + 1;
    p[10..12].copy_from_slice(&ar.to_be_bytes());
    p.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]); // OPT after it
    let r = udp_exchange(s.addr, &p).await;
    assert_eq!(r[3] & 0x0f, 1, "FORMERR");
}

/// The data of option `code` in a response's OPT record.
fn option(m: &Message, code: u16) -> Option<Vec<u8>> {
    m.edns
        .as_ref()?
        .options()
        .options
        .iter()
        .find_map(|(c, o)| match o {
            EdnsOption::NSID(p) if u16::from(*c) == code => Some(p.as_ref().to_vec()),
            EdnsOption::Unknown(k, d) if *k == code => Some(d.clone()),
            _ => None,
        })
}

fn with_option(mut m: Message, code: u16, data: &[u8]) -> Message {
    let edns = m.edns.get_or_insert_with(Edns::new);
    edns.options_mut()
        .insert(EdnsOption::Unknown(code, data.to_vec()));
    m
}

#[tokio::test]
async fn nsid_names_the_instance_when_asked() {
    let zone = crate::harness::example_zone();
    let s = TestServer::start_with(Setup {
        zones: &[("gslb.example.com.toml", &zone)],
        server_toml: "nsid = \"fra-1 test\"",
        ..Setup::default()
    })
    .await;
    let asked = with_option(query("www.gslb.example.com.", RecordType::A, None), 3, &[]);
    for r in [s.udp(&asked).await, s.tcp(&asked).await] {
        assert_eq!(option(&r, 3).as_deref(), Some(&b"fra-1 test"[..]));
        assert_eq!(r.answers.len(), 1, "and the answer as usual");
    }
    // Not asked: not sent.
    let r = s.ask("www.gslb.example.com.", RecordType::A, None).await;
    assert_eq!(option(&r, 3), None);
    // Asked of an instance without one: not sent either.
    let plain = TestServer::example().await;
    assert_eq!(option(&plain.udp(&asked).await, 3), None);
}

const CLIENT_COOKIE: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

#[tokio::test]
async fn cookies_are_minted_verified_and_required_when_configured() {
    let zone = crate::harness::example_zone();
    let s = TestServer::start_with(Setup {
        zones: &[("gslb.example.com.toml", &zone)],
        server_toml: "[cookies]\nrequire = true\nsecret = \"000102030405060708090a0b0c0d0e0f\"",
        ..Setup::default()
    })
    .await;
    let q = || query("www.gslb.example.com.", RecordType::A, None);
    // A client cookie alone, over UDP with `require`: BADCOOKIE (23) and
    // a server cookie to come back with (RFC 7873 §5.2.3).
    let r = s.udp(&with_option(q(), 10, &CLIENT_COOKIE)).await;
    assert_eq!(u16::from(r.metadata.response_code), 23, "BADCOOKIE");
    assert_eq!(r.queries.len(), 1);
    assert!(r.answers.is_empty());
    let cookie = option(&r, 10).expect("a cookie");
    assert_eq!(cookie.len(), 24);
    assert_eq!(&cookie[..8], &CLIENT_COOKIE, "the client cookie echoed");
    assert_eq!(cookie[8], 1, "RFC 9018 version 1");
    // Back with it: answered, with a fresh cookie.
    let r = s.udp(&with_option(q(), 10, &cookie)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(r.answers.len(), 1);
    assert_eq!(&option(&r, 10).expect("a cookie")[..8], &CLIENT_COOKIE);
    // A forged or altered server cookie: BADCOOKIE again.
    let mut forged = cookie.clone();
    forged[23] ^= 1;
    let r = s.udp(&with_option(q(), 10, &forged)).await;
    assert_eq!(u16::from(r.metadata.response_code), 23);
    // Another client's cookie does not pass for ours.
    let mut other = cookie.clone();
    other[0] ^= 1;
    let r = s.udp(&with_option(q(), 10, &other)).await;
    assert_eq!(u16::from(r.metadata.response_code), 23);
    // TCP proves the address: answered without a server cookie.
    let r = s.tcp(&with_option(q(), 10, &CLIENT_COOKIE)).await;
    assert_eq!(r.answers.len(), 1);
    // No cookie at all: answered (the client does not do cookies).
    assert_eq!(s.udp(&q()).await.answers.len(), 1);
    // A COOKIE option of a wrong length: FORMERR (RFC 7873 §5.2.2).
    for len in [0, 7, 9, 15, 41] {
        let r = s.udp(&with_option(q(), 10, &vec![7; len])).await;
        assert_eq!(
            r.metadata.response_code,
            ResponseCode::FormErr,
            "{len} bytes"
        );
    }

    // A second instance with the same secret accepts the first's cookie
    // (anycast), and one with another secret does not.
    let twin = TestServer::start_with(Setup {
        zones: &[("gslb.example.com.toml", &zone)],
        server_toml: "[cookies]\nrequire = true\nsecret = \"000102030405060708090a0b0c0d0e0f\"",
        ..Setup::default()
    })
    .await;
    assert_eq!(
        twin.udp(&with_option(q(), 10, &cookie)).await.answers.len(),
        1
    );
    let stranger = TestServer::start_with(Setup {
        zones: &[("gslb.example.com.toml", &zone)],
        server_toml: "[cookies]\nrequire = true",
        ..Setup::default()
    })
    .await;
    let r = stranger.udp(&with_option(q(), 10, &cookie)).await;
    assert_eq!(u16::from(r.metadata.response_code), 23);
}

#[tokio::test]
async fn cookies_are_answered_by_default_and_can_be_turned_off() {
    let s = TestServer::example().await;
    let q = with_option(
        query("www.gslb.example.com.", RecordType::A, None),
        10,
        &CLIENT_COOKIE,
    );
    // On by default, not required: answered, with a cookie.
    let r = s.udp(&q).await;
    assert_eq!(r.answers.len(), 1);
    assert_eq!(option(&r, 10).map(|c| c.len()), Some(24));
    let zone = crate::harness::example_zone();
    let off = TestServer::start_with(Setup {
        zones: &[("gslb.example.com.toml", &zone)],
        server_toml: "[cookies]\nenabled = false",
        ..Setup::default()
    })
    .await;
    let r = off.udp(&q).await;
    assert_eq!(r.answers.len(), 1);
    assert_eq!(
        option(&r, 10),
        None,
        "a server without cookies ignores the option"
    );
    assert!(matches!(r.answers[0].data, RData::A(_)));
}

/// Reads the server's stderr into `lines` until it closes.
fn collect_lines(
    stderr: tokio::process::ChildStderr,
) -> (
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    tokio::task::JoinHandle<()>,
) {
    use tokio::io::AsyncBufReadExt;
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&lines);
    let task = tokio::spawn(async move {
        let mut reader = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });
    (lines, task)
}

#[tokio::test]
async fn malformed_options_never_reach_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let zone = crate::harness::example_zone();
    let config = crate::harness::write_config(
        dir.path(),
        &Setup {
            zones: &[("gslb.example.com.toml", &zone)],
            ..Setup::default()
        },
    );
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["run", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the meridian binary starts");
    let (lines, reader) = collect_lines(child.stderr.take().unwrap());
    // The bound address, from the start-up log.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let addr: std::net::SocketAddr = loop {
        let found = lines.lock().unwrap().iter().find_map(|l| {
            let at = l.find("local=")? + "local=".len();
            l[at..].split_whitespace().next()?.parse().ok()
        });
        let ready = lines.lock().unwrap().iter().any(|l| l.contains("ready"));
        if let (Some(a), true) = (found, ready) {
            break a;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no ready line: {:?}",
            lines.lock().unwrap()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let before = lines.lock().unwrap().len();

    // OPT options cut short: a code without its length; a length of 8
    // with two bytes of data; ECS with a length its data does not have.
    let base = query("www.gslb.example.com.", RecordType::A, None)
        .to_vec()
        .unwrap();
    let rdatas: [&[u8]; 3] = [&[0, 10], &[0, 10, 0, 8, 1, 2], &[0, 8, 0, 2, 0]];
    let mut formerr = 0;
    for i in 0..3_000 {
        let mut p = base.clone();
        let rdata = rdatas[i % rdatas.len()];
        // The OPT record is last: patch its RDLENGTH and data.
        let opt_at = p.len() - 11;
        p.truncate(opt_at + 9);
        p.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        p.extend_from_slice(rdata);
        let r = if i % 100 == 0 {
            tcp_exchange(addr, &p).await
        } else {
            udp_exchange(addr, &p).await
        };
        formerr += usize::from(r[3] & 0x0f == 1);
    }
    assert_eq!(formerr, 3_000, "every one is FORMERR");

    // Stop the server (by its PID) and read what it logged.
    let pid = child.id().expect("running");
    let _ = std::process::Command::new("kill")
        .arg(pid.to_string())
        .status();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait()).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), reader).await;
    let lines = lines.lock().unwrap();
    let after = &lines[before..];
    assert!(
        after.iter().all(|l| !l.contains("WARN")),
        "no warning per query: {after:?}"
    );
    assert!(
        after.len() <= 3,
        "3,000 bad queries, {} log lines: {after:?}",
        after.len()
    );
}

#[tokio::test]
async fn a_valid_server_cookie_exempts_a_client_from_rate_limits() {
    let zone = crate::harness::example_zone();
    let s = TestServer::start_with(Setup {
        zones: &[("gslb.example.com.toml", &zone)],
        server_toml: "[rrl]\nresponses_per_second = 5\nslip = 0",
        ..Setup::default()
    })
    .await;
    let q = || query("mail.gslb.example.com.", RecordType::A, None);
    // Learn a server cookie (this spends one of the five).
    let first = s.udp(&with_option(q(), 10, &CLIENT_COOKIE)).await;
    let cookie = option(&first, 10).expect("a cookie");
    // With it, every query is answered: the cookie proves the address,
    // so a spoofed flood cannot be behind it.
    for i in 0..100 {
        let r = s.udp(&with_option(q(), 10, &cookie)).await;
        assert_eq!(r.answers.len(), 1, "query {i} with a valid cookie");
    }
    // Without one, the same client is limited: with slip 0, the limited
    // responses are dropped, so a bounded wait sees silence.
    let plain = q().to_vec().unwrap();
    let mut answered = 0;
    for _ in 0..30 {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.send_to(&plain, s.addr).await.unwrap();
        let mut buf = [0u8; 1500];
        let got = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            sock.recv_from(&mut buf),
        )
        .await;
        answered += usize::from(got.is_ok());
    }
    assert!(answered <= 8, "{answered} of 30 answered without a cookie");
}
