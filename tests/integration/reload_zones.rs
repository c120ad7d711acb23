//! A reload rebuilds only the zones whose files changed: the others are
//! kept as they are (the same zone store and templates), and every zone
//! answers as its files say.

use std::sync::Arc;

use hickory_proto::rr::RecordType;

use crate::harness::{TestServer, a_answers, example_zone};
use crate::protocol::EDGE_ZONE;

const SMALL_ZONE: &str = r#"
origin = "small.test."
ns = ["ns1.small.test."]
[soa]
rname = "hostmaster.small.test."
serial = 1
[records]
ns1 = [{ type = "A", value = "192.0.2.53" }]
host = [{ type = "A", value = "192.0.2.80" }]
"#;

/// The zone of `origin` in the server's snapshot.
fn zone_of(s: &TestServer, origin: &str) -> Arc<meridian::dns::zone::Zone> {
    let snap = s.server.snapshot();
    let found = snap
        .zones()
        .iter()
        .find(|z| z.origin().to_ascii() == origin)
        .map(Arc::clone);
    found.unwrap_or_else(|| panic!("no zone {origin}"))
}

#[tokio::test]
async fn a_reload_rebuilds_only_the_zones_that_changed() {
    let example = example_zone();
    let s = TestServer::start(&[
        ("gslb.example.com.toml", &example),
        ("edge.test.toml", EDGE_ZONE),
        ("small.test.toml", SMALL_ZONE),
    ])
    .await;
    let host = || s.ask("host.small.test.", RecordType::A, None);
    assert_eq!(a_answers(&host().await), ["192.0.2.80"]);
    let before = ["gslb.example.com.", "edge.test.", "small.test."].map(|o| zone_of(&s, o));

    // Nothing changed: every zone is kept.
    s.server.reload().expect("reload");
    for old in &before {
        let now = zone_of(&s, &old.origin().to_ascii());
        assert!(Arc::ptr_eq(old, &now), "{} rebuilt", old.origin());
    }

    // One zone changes: it alone is rebuilt, and answers anew.
    let small = s.dir.path().join("zones/small.test.toml");
    std::fs::write(&small, SMALL_ZONE.replace("192.0.2.80", "192.0.2.81")).unwrap();
    s.server.reload().expect("reload");
    assert_eq!(a_answers(&host().await), ["192.0.2.81"]);
    assert!(!Arc::ptr_eq(&before[2], &zone_of(&s, "small.test.")));
    for old in &before[..2] {
        assert!(Arc::ptr_eq(old, &zone_of(&s, &old.origin().to_ascii())));
    }
    let www = s
        .ask("www.gslb.example.com.", RecordType::A, Some("11.2.0.0/24"))
        .await;
    assert_eq!(a_answers(&www), ["198.51.100.10"]);
    let chain = s.ask("a.edge.test.", RecordType::A, None).await;
    assert_eq!(a_answers(&chain), ["192.0.2.99"]);

    // A broken file keeps the snapshot in service, kept zones and all.
    std::fs::write(&small, "origin = ").unwrap();
    let err = s.server.reload().expect_err("bad zone rejected");
    assert!(err.to_string().contains("small.test.toml"), "{err}");
    assert_eq!(a_answers(&host().await), ["192.0.2.81"]);

    // A zone file removed takes its zone away; the others stay kept.
    std::fs::remove_file(&small).unwrap();
    s.server.reload().expect("reload");
    let refused = host().await;
    assert_eq!(
        refused.metadata.response_code,
        hickory_proto::op::ResponseCode::Refused
    );
    assert!(Arc::ptr_eq(&before[0], &zone_of(&s, "gslb.example.com.")));
}

#[tokio::test]
async fn a_new_geoip_database_rebuilds_every_zone() {
    let example = example_zone();
    let s = TestServer::start(&[("gslb.example.com.toml", &example)]).await;
    let before = zone_of(&s, "gslb.example.com.");
    let db = s.dir.path().join("test.mmdb");
    std::fs::write(&db, crate::harness::geoip2_test_db()).unwrap();
    s.server.reload().expect("reload");
    assert!(!Arc::ptr_eq(&before, &zone_of(&s, "gslb.example.com.")));
    let mx = s.ask("gslb.example.com.", RecordType::MX, None).await;
    assert_eq!(mx.answers.len(), 1);
}

#[tokio::test]
async fn a_changed_records_file_rebuilds_its_zone() {
    let zone = r#"
origin = "file.test."
ns = ["ns1.file.test."]
records_file = "file.test.zone"
[soa]
rname = "hostmaster.file.test."
serial = 1
"#;
    let records = "ns1 A 192.0.2.53\nhost A 192.0.2.90\n";
    let example = example_zone();
    let s = TestServer::start(&[("gslb.example.com.toml", &example)]).await;
    // The harness writes TOML files only: the zone arrives by a reload.
    let path = s.dir.path().join("zones/file.test.zone");
    std::fs::write(&path, records).unwrap();
    std::fs::write(s.dir.path().join("zones/file.test.toml"), zone).unwrap();
    s.server.reload().expect("reload");
    let host = || s.ask("host.file.test.", RecordType::A, None);
    assert_eq!(a_answers(&host().await), ["192.0.2.90"]);
    let before = zone_of(&s, "file.test.");

    s.server.reload().expect("reload");
    assert!(Arc::ptr_eq(&before, &zone_of(&s, "file.test.")));

    // Only the records file changes: its zone is rebuilt.
    std::fs::write(&path, records.replace("192.0.2.90", "192.0.2.91")).unwrap();
    s.server.reload().expect("reload");
    assert_eq!(a_answers(&host().await), ["192.0.2.91"]);
    assert!(!Arc::ptr_eq(&before, &zone_of(&s, "file.test.")));
}
