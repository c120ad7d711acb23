//! `records_file`: a zone's static records from an RFC 1035 master file,
//! served by the real server over UDP and TCP, and re-read on reload (a
//! broken file keeps the running records and names the file and line).

use std::net::SocketAddr;
use std::path::Path;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::harness::{Setup, TestServer, a_answers, plain_query, repo, write_config};

const TOML: &str = "zonefile.example.toml";
const ZONE: &str = "zonefile.example.zone";

/// The shipped example (TOML + master file) served from a fresh directory.
async fn serve_example() -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let examples = repo().join("zones/examples");
    let toml = std::fs::read_to_string(examples.join(TOML)).unwrap();
    let path = write_config(
        dir.path(),
        &Setup {
            zones: &[(TOML, &toml)],
            ..Setup::default()
        },
    );
    std::fs::copy(examples.join(ZONE), dir.path().join("zones").join(ZONE)).unwrap();
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = meridian::Server::start(&path, Some(vec![listen]))
        .await
        .unwrap_or_else(|e| panic!("server start: {e}"));
    let addr = server.local_addrs()[0];
    TestServer { addr, server, dir }
}

fn zone_path(s: &TestServer) -> std::path::PathBuf {
    s.dir.path().join("zones").join(ZONE)
}

/// Asks over UDP and over TCP; both must give the same answer section.
async fn both(s: &TestServer, name: &str, qtype: RecordType) -> Message {
    let q = plain_query(name, qtype);
    let udp = s.udp(&q).await;
    let tcp = s.tcp(&q).await;
    assert_eq!(
        udp.response_code,
        ResponseCode::NoError,
        "{name} {qtype} over UDP"
    );
    assert_eq!(
        format!("{:?}", udp.answers),
        format!("{:?}", tcp.answers),
        "{name} {qtype}: UDP and TCP differ"
    );
    udp
}

fn texts(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .map(|r| format!("{} {} {}", r.name, r.ttl, r.data))
        .collect()
}

#[tokio::test]
async fn records_from_a_master_file_are_served_over_udp_and_tcp() {
    let s = serve_example().await;
    let a = both(&s, "static.zonefile.example.com.", RecordType::A).await;
    assert_eq!(a_answers(&a), ["192.0.2.80", "192.0.2.81"]);
    assert!(a.answers.iter().all(|r| r.ttl == 300), "{:?}", texts(&a));

    let txt = both(&s, "zonefile.example.com.", RecordType::TXT).await;
    assert_eq!(texts(&txt), ["zonefile.example.com. 3600 v=spf1 mx -all"]);
    let mx = both(&s, "zonefile.example.com.", RecordType::MX).await;
    assert_eq!(
        texts(&mx),
        ["zonefile.example.com. 3600 10 mail.zonefile.example.com."]
    );
    let aaaa = both(&s, "mail.zonefile.example.com.", RecordType::AAAA).await;
    assert_eq!(a_answers(&aaaa), ["2001:db8::25"]);
    let srv = both(&s, "_sip._tcp.zonefile.example.com.", RecordType::SRV).await;
    assert_eq!(
        texts(&srv),
        ["_sip._tcp.zonefile.example.com. 3600 10 5 5060 mail.zonefile.example.com."]
    );
    // The file's CNAME points at the balanced name from the TOML.
    let shop = both(&s, "shop.zonefile.example.com.", RecordType::CNAME).await;
    assert_eq!(
        texts(&shop),
        ["shop.zonefile.example.com. 3600 www.zonefile.example.com."]
    );
    // The apex SOA and NS come from the TOML: its serial, not the file's
    // (the same number here, so check the mname the TOML implies).
    let ns = both(&s, "zonefile.example.com.", RecordType::NS).await;
    let mut names: Vec<String> = ns.answers.iter().map(|r| r.data.to_string()).collect();
    names.sort();
    assert_eq!(
        names,
        ["ns1.zonefile.example.com.", "ns2.zonefile.example.com."]
    );
}

#[tokio::test]
async fn a_broken_records_file_keeps_the_running_records_until_fixed() {
    let s = serve_example().await;
    let original = std::fs::read_to_string(zone_path(&s)).unwrap();
    let ask = || both(&s, "static.zonefile.example.com.", RecordType::A);
    assert_eq!(a_answers(&ask().await), ["192.0.2.80", "192.0.2.81"]);

    // A bad address: the reload fails naming the file and line,
    // and the old records are still served.
    let line = original
        .lines()
        .position(|l| l.contains("192.0.2.81"))
        .unwrap()
        + 1;
    let broken = original.replace("192.0.2.81", "192.0.2.810");
    std::fs::write(zone_path(&s), &broken).unwrap();
    let err = s.server.reload().expect_err("bad records file rejected");
    let text = err.to_string();
    assert!(text.contains(&format!("{ZONE}: line {line}: ")), "{text}");
    assert!(text.contains("bad A value"), "{text}");
    assert_eq!(a_answers(&ask().await), ["192.0.2.80", "192.0.2.81"]);

    // A rule broken across lines: a CNAME beside other data.
    std::fs::write(
        zone_path(&s),
        format!("{original}static 300 IN CNAME www\n"),
    )
    .unwrap();
    let err = s.server.reload().expect_err("CNAME beside data rejected");
    assert!(err.to_string().contains("CNAME cannot coexist"), "{err}");
    assert_eq!(a_answers(&ask().await), ["192.0.2.80", "192.0.2.81"]);

    // Removed: the zone TOML names a file that is not there.
    std::fs::remove_file(zone_path(&s)).unwrap();
    let err = s.server.reload().expect_err("missing file rejected");
    assert!(err.to_string().contains("records_file"), "{err}");
    assert_eq!(a_answers(&ask().await), ["192.0.2.80", "192.0.2.81"]);

    // Fixed, with a new address: the reload re-reads the file.
    std::fs::write(zone_path(&s), original.replace("192.0.2.81", "192.0.2.82")).unwrap();
    s.server.reload().expect("good records file");
    assert_eq!(a_answers(&ask().await), ["192.0.2.80", "192.0.2.82"]);
}

/// `meridian check` on the example reports it loaded; on a broken file it
/// fails naming the file and line.
#[test]
fn check_names_the_records_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let examples = repo().join("zones/examples");
    let toml = std::fs::read_to_string(examples.join(TOML)).unwrap();
    let config = write_config(
        dir.path(),
        &Setup {
            zones: &[(TOML, &toml)],
            ..Setup::default()
        },
    );
    let zone = dir.path().join("zones").join(ZONE);
    let text = std::fs::read_to_string(examples.join(ZONE)).unwrap();
    std::fs::write(&zone, &text).unwrap();
    let check = |config: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args(["check", "--config"])
            .arg(config)
            .output()
            .unwrap()
    };
    let out = check(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A static address on the balanced name, on the line after the end.
    std::fs::write(&zone, format!("{text}www IN A 192.0.2.9\n")).unwrap();
    let line = text.lines().count() + 1;
    let out = check(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("services.www") && stderr.contains(&format!("{ZONE} line {line}")),
        "{stderr}"
    );
}
