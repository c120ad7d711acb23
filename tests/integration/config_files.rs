//! Shipped configs load; broken ones are rejected precisely; a bad reload
//! keeps the running config.

use std::path::Path;
use std::process::Command;

use hickory_proto::rr::RecordType;

use crate::harness::{Setup, TestServer, a_answers, example_zone, repo, write_config};

#[test]
fn every_shipped_config_loads() {
    let (config, snap) = meridian::load(&repo().join("meridian.toml")).expect("meridian.toml");
    assert!(!config.zones.is_empty());
    assert_eq!(snap.zones().len(), config.zones.len());
    for entry in std::fs::read_dir(repo().join("zones")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            meridian::config::load_zone(&path).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

/// Calls `f(path, table)` for every table in a TOML document, with the
/// path written the way Meridian's errors write keys (`records."@"[0]`).
fn visit_tables(v: &mut toml::Value, path: &str, f: &mut dyn FnMut(&str, &mut toml::Table)) {
    match v {
        toml::Value::Table(t) => {
            f(path, t);
            for (k, child) in t.iter_mut() {
                let bare = k
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                let key = if bare { k.clone() } else { format!("{k:?}") };
                let p = if path.is_empty() {
                    key
                } else {
                    format!("{path}.{key}")
                };
                visit_tables(child, &p, f);
            }
        }
        toml::Value::Array(a) => {
            for (i, child) in a.iter_mut().enumerate() {
                visit_tables(child, &format!("{path}[{i}]"), f);
            }
        }
        _ => {}
    }
}

#[test]
fn unknown_keys_are_rejected_everywhere_with_their_path() {
    let text = example_zone();
    let mut doc: toml::Value = toml::from_str(&text).unwrap();
    let mut paths = Vec::new();
    visit_tables(&mut doc, "", &mut |p, _| paths.push(p.to_string()));
    assert!(paths.len() > 10, "{paths:?}");
    for target in &paths {
        // Maps whose keys are names (records, datacenters, services,
        // countries, ...) accept any key: an unknown name is caught by its
        // own checks instead.
        if ["records", "datacenters", "services"].contains(&target.as_str()) {
            continue;
        }
        let mut broken = doc.clone();
        visit_tables(&mut broken, "", &mut |p, t| {
            if p == target {
                t.insert("bogus_key".into(), toml::Value::Integer(1));
            }
        });
        let err = meridian::config::parse_zone(
            Path::new("zones/x.toml"),
            &toml::to_string(&broken).unwrap(),
        )
        .expect_err(&format!("bogus_key accepted in [{target}]"));
        let want = if target.is_empty() {
            "bogus_key".to_string()
        } else {
            format!("{target}.bogus_key")
        };
        assert_eq!(err.key, want, "{err}");
        assert!(err.reason.contains("unknown field `bogus_key`"), "{err}");
        assert!(err.to_string().starts_with("zones/x.toml: "), "{err}");
    }
    // meridian.toml too.
    let server = std::fs::read_to_string(repo().join("meridian.toml")).unwrap();
    let err = meridian::config::parse_server(
        Path::new("meridian.toml"),
        &format!("bogus_key = 1\n{server}"),
    )
    .unwrap_err();
    assert_eq!(err.key, "bogus_key");
}

#[test]
fn broken_references_name_the_key() {
    let text = example_zone();
    let cases = [
        (
            text.replace(
                r#"datacenters = ["us-east", "eu-west", "ap-southeast"]"#,
                r#"datacenters = ["us-east", "eu-wset"]"#,
            ),
            "services.www.datacenters[1]",
            "unknown datacenter \"eu-wset\"",
        ),
        (
            text.replace("policy = \"geo\"", "policy = \"geo\"\ndefault = [\"mars\"]"),
            "services.www.default[0]",
            "unknown datacenter",
        ),
        (
            text.replace("location = [39.04, -77.49]", ""),
            "datacenters.us-east.location",
            "missing",
        ),
        (
            text.replace(
                r#"value = "www" }"#,
                r#"value = "www" }, { type = "A", value = "192.0.2.1" }"#,
            ),
            "records.app",
            "CNAME",
        ),
        (
            text.replace("serial = 2026112501", "serial = \"today\""),
            "soa.serial",
            "invalid type",
        ),
        (
            text.replace(
                "origin = \"gslb.example.com.\"",
                "origin = \"gslb..example.com.\"",
            ),
            "origin",
            "bad domain name",
        ),
    ];
    for (broken, key, reason) in cases {
        let err = meridian::config::parse_zone(Path::new("zones/x.toml"), &broken).expect_err(key);
        assert_eq!(err.key, key, "{err}");
        assert!(err.reason.contains(reason), "{err}");
    }
}

#[test]
fn check_command_reports_precisely() {
    let bin = env!("CARGO_BIN_EXE_meridian");
    let out = Command::new(bin)
        .args(["check", "--config"])
        .arg(repo().join("meridian.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("OK"));

    let dir = tempfile::tempdir().unwrap();
    let zone = example_zone().replace("[39.04, -77.49]", "[39.04, -277.49]");
    let path = write_config(
        dir.path(),
        &Setup {
            zones: &[("gslb.example.com.toml", &zone)],
            ..Setup::default()
        },
    );
    let out = Command::new(bin)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("gslb.example.com.toml: datacenters.us-east.location: "),
        "{stderr}"
    );
    assert!(stderr.contains("longitude (-180 to 180)"), "{stderr}");

    // A missing GeoIP database is named too.
    std::fs::remove_file(dir.path().join("test.mmdb")).unwrap();
    let zone = example_zone();
    std::fs::write(dir.path().join("zones/gslb.example.com.toml"), zone).unwrap();
    let out = Command::new(bin)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("test.mmdb: cannot open GeoIP database"));
}

#[test]
fn explain_command_shows_ranking_answer_and_scope() {
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["explain", "--config"])
        .arg(repo().join("meridian.toml"))
        .args(["www.gslb.example.com", "A", "--client", "133.11.0.0/24"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("country JP"), "{text}");
    assert!(text.contains("step:      geo (scope /8)"), "{text}");
    assert!(text.contains("1. ap-southeast"), "{text}");
    assert!(
        text.contains("decision:  answer [ap-southeast], ttl 30, scope /8"),
        "{text}"
    );
    assert!(text.contains("IN A 203.0.113.10"), "{text}");
    assert!(text.contains("ecs:       source /24, scope /"), "{text}");
}

#[tokio::test]
async fn a_bad_reload_keeps_the_running_config() {
    let zone = example_zone();
    let s = TestServer::start_with(Setup {
        zones: &[("gslb.example.com.toml", &zone)],
        ..Setup::default()
    })
    .await;
    let zone_file = s.dir.path().join("zones/gslb.example.com.toml");
    let ask = || s.ask("www.gslb.example.com.", RecordType::A, Some("11.2.0.0/24"));
    assert_eq!(a_answers(&ask().await), ["198.51.100.10"]);

    // Broken: a typo in a reference. Reload fails, answers are unchanged.
    std::fs::write(
        &zone_file,
        zone.replace("\"eu-west\", \"ap", "\"eu-wst\", \"ap"),
    )
    .unwrap();
    let err = s.server.reload().expect_err("bad config rejected");
    assert!(
        err.to_string().contains("services.www.datacenters[1]"),
        "{err}"
    );
    assert_eq!(a_answers(&ask().await), ["198.51.100.10"]);

    // Fixed, with a new address: the reload takes effect.
    std::fs::write(&zone_file, zone.replace("198.51.100.10", "198.51.100.11")).unwrap();
    s.server.reload().expect("good config");
    assert_eq!(a_answers(&ask().await), ["198.51.100.11"]);
}
