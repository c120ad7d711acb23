//! DNSSEC expiry (issue 13): on tokio's paused clock, a signed zone is
//! re-signed in the background before its signatures expire, answers
//! never carry an expired (or nearly expired) signature, the query path's
//! safety net is never needed, and a health change made while a re-sign
//! runs is not undone by it.
//!
//! The server runs in process on real UDP sockets. Its signatures are
//! made at [`meridian::dnssec::Clock::tokio`] time, so they move with the
//! virtual clock the re-signer sleeps on. Queries go through a blocking
//! socket in `spawn_blocking`, which keeps tokio from auto-advancing the
//! clock while one is in flight.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use hickory_proto::dnssec::rdata::DNSKEY;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::harness::{Setup, query, verify_rrsigs, write_config, write_dnssec_key, zone_head};
use crate::metrics::count;

const VALIDITY: u64 = 2 * 3600;
const MARGIN: u64 = 30 * 60;

/// A zone signed with `key`, valid 2 h, re-signed 30 min before expiry,
/// no jitter; a static name and `services` failover services over
/// datacenters a and b (and `extra_dcs` more, for a bigger zone).
fn zone_text(origin: &str, key: &Path, services: usize, extra_dcs: usize) -> String {
    let mut z = format!(
        r#"{head}static = [{{ type = "A", value = "192.0.2.1" }}]

[datacenters.a]
addresses = ["192.0.2.10", "2001:db8:10::10"]

[datacenters.b]
addresses = ["198.51.100.10", "2001:db8:20::10"]
"#,
        head = zone_head(origin)
    );
    let mut dcs = vec!["\"a\"".to_string(), "\"b\"".to_string()];
    for i in 0..extra_dcs {
        z.push_str(&format!(
            "\n[datacenters.x{i}]\naddresses = [\"203.0.113.{}\", \"2001:db8:30::{}\"]\n",
            i + 1,
            i + 1
        ));
        dcs.push(format!("\"x{i}\""));
    }
    for i in 0..services {
        z.push_str(&format!(
            "\n[services.s{i}]\npolicy = \"failover\"\ndatacenters = [{}]\nmax_answers = 2\nttl = 30\n",
            dcs.join(", ")
        ));
    }
    z.push_str(&format!(
        r#"
[dnssec]
keys = [{{ file = {:?}, state = "active" }}]
signature_validity = "2h"
refresh_margin = "30m"
jitter = "0s"
"#,
        key.display().to_string()
    ));
    z
}

struct Signed {
    server: meridian::Server,
    addr: SocketAddr,
    clock: meridian::dnssec::Clock,
    dnskey: DNSKEY,
    origin: &'static str,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

/// Starts the server on the tokio clock of the (paused) test runtime.
async fn start(origin: &'static str, services: usize, extra_dcs: usize) -> Signed {
    let keys = tempfile::tempdir().unwrap();
    let (base, dnskey) = write_dnssec_key(
        keys.path(),
        origin,
        meridian::dnssec::keys::KeyAlgorithm::EcdsaP256Sha256,
        meridian::dnssec::keys::FLAGS_KSK,
    );
    let zone = zone_text(origin, &base, services, extra_dcs);
    let dir = tempfile::tempdir().unwrap();
    let file = format!("{}toml", origin);
    let path = write_config(
        dir.path(),
        &Setup {
            zones: &[(&file, &zone)],
            ..Setup::default()
        },
    );
    let clock = meridian::dnssec::Clock::tokio().expect("in a runtime");
    let server = meridian::Server::start_with_clock(
        &path,
        meridian::StartOptions {
            listen: Some(vec!["127.0.0.1:0".parse().unwrap()]),
            ..meridian::StartOptions::default()
        },
        clock.clone(),
    )
    .await
    .unwrap_or_else(|e| panic!("server start: {e}"));
    let addr = server.local_addrs()[0];
    Signed {
        server,
        addr,
        clock,
        dnskey,
        origin,
        _dirs: (keys, dir),
    }
}

/// One UDP exchange on a blocking socket, off the runtime's threads (so
/// the paused clock stays where it is meanwhile).
async fn ask(addr: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let mut q = query(name, qtype, None);
    q.edns.as_mut().unwrap().set_dnssec_ok(true);
    let packet = q.to_vec().unwrap();
    let bytes = tokio::task::spawn_blocking(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        socket.send_to(&packet, addr).unwrap();
        let mut buf = vec![0; 65_535];
        let n = socket.recv(&mut buf).expect("an answer within 5 s");
        buf.truncate(n);
        buf
    })
    .await
    .unwrap();
    Message::from_vec(&bytes).expect("response decodes")
}

/// Checks every RRset of the answer and authority sections (see
/// [`verify_rrsigs`]) at `now`, each RRSIG with more than half the refresh
/// margin left. Returns the RRSIGs' inceptions.
fn verify(m: &Message, key: &DNSKEY, origin: &str, now: u64) -> Vec<u32> {
    let mut inceptions = Vec::new();
    for (name, rtype, inputs) in verify_rrsigs(m, std::slice::from_ref(key), origin, now) {
        for input in inputs {
            let expiration = u64::from(input.sig_expiration.get());
            assert!(
                expiration - now > MARGIN / 2,
                "{name} {rtype}: only {} s left at {now}",
                expiration - now
            );
            inceptions.push(input.sig_inception.get());
        }
    }
    inceptions
}

/// The zone's entry in `/status`'s `dnssec` list.
fn dnssec_status(s: &Signed) -> serde_json::Value {
    let status = s.server.monitor().status();
    status["dnssec"]
        .as_array()
        .and_then(|zones| zones.iter().find(|z| z["zone"] == s.origin))
        .cloned()
        .unwrap_or_else(|| panic!("no dnssec entry for {} in {status}", s.origin))
}

/// Over three validity windows in 10-minute steps, every answer's RRSIGs
/// are valid at the virtual now with more than half the margin left and
/// verify; the zone is re-signed in the background exactly when its
/// earliest signature reaches the margin (every 1.5 h), never on the
/// query path; inceptions move forward with it; the metrics and
/// `/status` say so.
#[tokio::test(start_paused = true)]
async fn signatures_are_renewed_in_the_background_and_never_served_expired() {
    let origin = "refresh.test.";
    let s = start(origin, 1, 0).await;
    let t0 = s.clock.now();
    let first = dnssec_status(&s);
    assert_eq!(first["resigns"]["ok"], 0);
    assert_eq!(first["keys"][0]["role"], "CSK");
    assert_eq!(first["keys"][0]["state"], "active");
    assert_eq!(first["keys"][0]["algorithm"], 13);
    let questions = [
        ("s0.refresh.test.", RecordType::A),
        ("s0.refresh.test.", RecordType::AAAA),
        ("static.refresh.test.", RecordType::A),
        ("refresh.test.", RecordType::SOA),
        ("refresh.test.", RecordType::DNSKEY),
        ("refresh.test.", RecordType::NS),
        ("static.refresh.test.", RecordType::TXT),
        ("nothing.refresh.test.", RecordType::A),
    ];
    let steps = 40u64;
    for step in 0..=steps {
        let now = s.clock.now();
        assert_eq!(now - t0, step * 600, "the virtual clock moves in steps");
        for (name, qtype) in questions {
            let m = ask(s.addr, name, qtype).await;
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::NoError,
                "{name} {qtype}"
            );
            assert!(
                !m.answers.is_empty() || !m.authorities.is_empty(),
                "{name} {qtype}: empty"
            );
            assert!(!verify(&m, &s.dnskey, origin, now).is_empty());
        }
        tokio::time::sleep(Duration::from_secs(600)).await;
    }
    // Re-signed at 1.5 h, 3 h, 4.5 h and 6 h: 6 h 40 min have passed.
    let end = dnssec_status(&s);
    assert_eq!(end["resigns"]["ok"], 4, "{end}");
    assert_eq!(end["resigns"]["failed"], 0, "{end}");
    assert_eq!(end["safety_net_renewals"], 0, "{end}");
    assert_eq!(end["resigning"], false);
    assert!(end["last_error"].is_null());
    // The answers carry the last re-sign's signatures (inception is
    // backdated by the default inception_offset, 1 h).
    let last_resign = t0 + 4 * (VALIDITY - MARGIN);
    for (name, qtype) in &questions[..6] {
        let m = ask(s.addr, name, *qtype).await;
        let inceptions = verify(&m, &s.dnskey, origin, s.clock.now());
        assert!(
            inceptions
                .iter()
                .all(|&i| u64::from(i) == last_resign - 3600),
            "{name} {qtype}: {inceptions:?}, last re-signed at {last_resign}"
        );
    }
    let text = s.server.metrics().encode();
    let zone = format!("{{zone=\"{origin}\"}}");
    assert_eq!(
        count(
            &text,
            &format!("meridian_dnssec_signed_timestamp_seconds{zone}")
        ),
        last_resign
    );
    assert_eq!(
        count(
            &text,
            &format!("meridian_dnssec_signatures_expire_timestamp_seconds{zone}")
        ),
        last_resign + VALIDITY
    );
    assert_eq!(
        count(
            &text,
            &format!("meridian_dnssec_next_resign_timestamp_seconds{zone}")
        ),
        last_resign + VALIDITY - MARGIN
    );
    assert_eq!(
        count(
            &text,
            &format!("meridian_dnssec_resign_total{{zone=\"{origin}\",result=\"ok\"}}")
        ),
        4
    );
    for global in [
        "meridian_dnssec_signatures_online_total",
        "meridian_dnssec_signatures_precomputed_total",
        "meridian_dnssec_budget_exhausted_total",
        "meridian_dnssec_safety_net_renewals_total",
    ] {
        count(&text, global);
    }
    s.server.shutdown().await;
}

/// A datacenter drained while the zone is being re-signed stays drained
/// once the re-signed zone is published: the re-signer puts its zone
/// into the snapshot current at that moment, as a health change does,
/// rather than into the one it started from.
#[tokio::test(start_paused = true)]
async fn a_health_change_during_a_resign_is_kept() {
    let origin = "race.test.";
    // Enough services that a re-sign takes a while (seconds in a debug
    // build): the drain must land while it runs.
    let s = start(origin, 150, 3).await;
    let before = ask(s.addr, "s0.race.test.", RecordType::A).await;
    let answers = |m: &Message| -> Vec<String> {
        let mut v: Vec<String> = m
            .answers
            .iter()
            .filter(|r| r.record_type() == RecordType::A)
            .map(|r| r.data.to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(answers(&before), ["192.0.2.10", "198.51.100.10"]);
    // One second before the re-sign is due.
    tokio::time::sleep(Duration::from_secs(VALIDITY - MARGIN - 1)).await;
    assert_eq!(dnssec_status(&s)["resigns"]["ok"], 0);
    let monitor = s.server.monitor().clone();
    let watcher = tokio::task::spawn_blocking(move || {
        let status = |m: &meridian::health::monitor::Monitor| {
            m.status()["dnssec"]
                .as_array()
                .and_then(|z| z.iter().find(|z| z["zone"] == origin).cloned())
                .unwrap()
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while status(&monitor)["resigning"] != true {
            assert!(Instant::now() < deadline, "the re-sign never started");
            std::thread::sleep(Duration::from_millis(1));
        }
        monitor
            .set_override(origin, "a", Some(meridian::health::Override::Drain))
            .unwrap();
        // The drain was published before the re-signed zone was:
        // otherwise this test proves nothing.
        let during = status(&monitor);
        assert_eq!(
            (during["resigning"].clone(), during["resigns"]["ok"].clone()),
            (true.into(), 0.into()),
            "the re-sign finished before the drain; make the zone bigger"
        );
        while status(&monitor)["resigns"]["ok"] != 1 {
            assert!(Instant::now() < deadline, "the re-sign never finished");
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    // The re-signer's timer fires; the watcher sees it run.
    tokio::time::advance(Duration::from_secs(2)).await;
    watcher.await.unwrap();
    let after = dnssec_status(&s);
    assert_eq!(after["resigns"]["ok"], 1, "{after}");
    assert_eq!(after["resigns"]["failed"], 0, "{after}");
    // Re-signed, and still drained.
    let m = ask(s.addr, "s0.race.test.", RecordType::A).await;
    assert_eq!(answers(&m), ["198.51.100.10", "203.0.113.1"]);
    // Its signatures are the re-sign's: made a second ago (inception is
    // backdated by the default inception_offset, 1 h).
    let now = s.clock.now();
    let inceptions = verify(&m, &s.dnskey, origin, now);
    assert!(
        inceptions.iter().all(|&i| u64::from(i) + 3600 + 2 >= now),
        "the answer carries the new signatures: {inceptions:?} at {now}"
    );
    s.server.shutdown().await;
}

/// A reload rebuilds a signed zone with new signatures, and the
/// re-signer follows the new zone's schedule: a reload at 10 min that
/// shortens the validity to 1 h moves the next re-sign to 40 min (not
/// the old zone's 1.5 h), and answers stay valid throughout.
#[tokio::test(start_paused = true)]
async fn the_schedule_follows_a_reload() {
    let origin = "reload.test.";
    let s = start(origin, 1, 0).await;
    let t0 = s.clock.now();
    let signed_at = |s: &Signed| {
        let text = s.server.metrics().encode();
        count(
            &text,
            &format!("meridian_dnssec_signed_timestamp_seconds{{zone=\"{origin}\"}}"),
        )
    };
    assert_eq!(signed_at(&s), t0);
    tokio::time::sleep(Duration::from_secs(600)).await;
    let file = s._dirs.1.path().join("zones").join(format!("{origin}toml"));
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace("signature_validity = \"2h\"", "signature_validity = \"1h\""),
    )
    .unwrap();
    // Blocking, on the runtime's thread: the clock cannot move meanwhile.
    s.server.reload().expect("reload");
    assert_eq!(signed_at(&s), t0 + 600, "the reload signed anew");
    let check = |m: Message, now: u64| {
        let inceptions = verify(&m, &s.dnskey, origin, now);
        assert!(!inceptions.is_empty());
    };
    // One second before the new deadline: not re-signed yet.
    tokio::time::sleep(Duration::from_secs(1800 - 1)).await;
    assert_eq!(dnssec_status(&s)["resigns"]["ok"], 0);
    check(
        ask(s.addr, "s0.reload.test.", RecordType::A).await,
        s.clock.now(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let st = dnssec_status(&s);
    assert_eq!(st["resigns"]["ok"], 1, "{st}");
    assert_eq!(signed_at(&s), t0 + 600 + 1800);
    // And every 30 min after: at 70 and 100 min.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(dnssec_status(&s)["resigns"]["ok"], 3);
    assert_eq!(signed_at(&s), t0 + 600 + 3 * 1800);
    check(
        ask(s.addr, "static.reload.test.", RecordType::A).await,
        s.clock.now(),
    );
    assert_eq!(dnssec_status(&s)["safety_net_renewals"], 0);
    s.server.shutdown().await;
}
