//! `meridian diff`: configs whose moves are known, on the generated test
//! database (harness `TEST_NETWORKS`), checked to the /24.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::harness::{Setup, example_zone, write_config};

/// The example zone plus services the tests change.
fn zone(www_extra: &str, api: &str, pool_weights: &str, extra_service: &str) -> String {
    example_zone().replace(
        "[services.www]\npolicy = \"geo\"",
        &format!(
            "[services.api]\npolicy = \"failover\"\ndatacenters = {api}\n\n\
             [services.pool]\npolicy = \"weighted\"\ndatacenters = [\"eu-west\", \"us-east\"]\n\
             weights = {pool_weights}\n\n\
             [services.{extra_service}]\npolicy = \"geo\"\n\
             datacenters = [\"us-east\", \"eu-west\"]\n\n\
             [services.www]\npolicy = \"geo\"\n{www_extra}"
        ),
    )
}

fn config(dir: &Path, zone_text: &str) -> PathBuf {
    write_config(
        dir,
        &Setup {
            zones: &[("gslb.example.com.toml", zone_text)],
            ..Setup::default()
        },
    )
}

fn diff(args: &[&str], old: &Path, new: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .arg("diff")
        .arg("--old")
        .arg(old)
        .arg("--config")
        .arg(new)
        .args(args)
        .output()
        .expect("run meridian diff");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn service<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == name)
        .unwrap_or_else(|| panic!("no service {name} in {report}"))
}

fn size(v: &Value) -> (f64, f64) {
    (v["v4_24s"].as_f64().unwrap(), v["v6_48s"].as_f64().unwrap())
}

fn pair(m: &Value) -> (String, String) {
    let names = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_string())
            .collect::<Vec<_>>()
            .join("+")
    };
    (names(&m["from"]), names(&m["to"]))
}

/// The test database: 11 IPv4 /16s (11.1 to 11.11) and 127.0.0.0/8, so
/// 11 * 256 + 65,536 = 68,352 /24s, and two IPv6 /48s.
const TOTAL_V4: f64 = 68_352.0;

#[test]
fn diff_counts_known_moves_exactly() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let old = config(
        a.path(),
        &zone(
            "",
            "[\"eu-west\", \"us-east\"]",
            "{ eu-west = 3, us-east = 1 }",
            "legacy",
        ),
    );
    // DE (11.2/16, 11.8/16, 11.9/16 and 2001:db8:2::/48) is sent to
    // us-east instead of its nearest, eu-west; half of the US /16 to
    // ap-southeast; api's failover order is swapped; pool's weights change;
    // legacy is replaced by fresh.
    let new = config(
        b.path(),
        &zone(
            "countries = { DE = [\"us-east\"] }\nnetworks = { \"11.1.128.0/17\" = [\"ap-southeast\"] }",
            "[\"us-east\", \"eu-west\"]",
            "{ eu-west = 1, us-east = 1 }",
            "fresh",
        ),
    );
    let (code, stdout, stderr) = diff(&["--json"], &old, &new);
    assert_eq!(code, Some(0), "{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("JSON report");
    assert_eq!(report["version"], 1);
    assert_eq!(size(&report["total"]), (TOTAL_V4, 2.0));

    let www = service(&report, "www");
    assert_eq!(www["status"], "compared");
    assert_eq!(www["zone"], "gslb.example.com.");
    assert_eq!(size(&www["moved"]), (768.0 + 128.0, 1.0));
    assert_eq!(size(&www["total"]), (TOTAL_V4, 2.0));
    let moves: Vec<_> = www["moves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (pair(m), size(&m["size"])))
        .collect();
    assert_eq!(
        moves,
        [
            (("eu-west".into(), "us-east".into()), (768.0, 1.0)),
            (("us-east".into(), "ap-southeast".into()), (128.0, 0.0)),
        ]
    );
    let countries = www["countries"].as_array().unwrap();
    assert_eq!(countries.len(), 2, "{countries:?}");
    assert_eq!(countries[0]["country"], "DE");
    assert_eq!(countries[0]["continent"], "EU");
    assert_eq!(size(&countries[0]["moved"]), (768.0, 1.0));
    assert_eq!(countries[0]["v4_percent"], 100.0);
    assert_eq!(countries[1]["country"], "US");
    assert_eq!(size(&countries[1]["total"]), (256.0, 0.0));
    assert_eq!(countries[1]["v4_percent"], 50.0);
    assert_eq!(
        pair(&countries[1]["moves"][0]),
        ("us-east".into(), "ap-southeast".into())
    );
    // Every continent is listed; Europe is DE (3 /16s) and PT (1 /16).
    let continents = www["continents"].as_array().unwrap();
    let eu = continents.iter().find(|c| c["continent"] == "EU").unwrap();
    assert_eq!(size(&eu["total"]), (1024.0, 1.0));
    assert_eq!(eu["v4_percent"], 75.0);
    assert_eq!(eu["v6_percent"], 100.0);
    let oc = continents.iter().find(|c| c["continent"] == "OC").unwrap();
    assert_eq!(oc["v4_percent"], 0.0);

    // Failover order swapped: every placed network moves.
    let api = service(&report, "api");
    assert_eq!(size(&api["moved"]), (TOTAL_V4, 2.0));
    assert_eq!(api["v4_percent"], 100.0);
    assert_eq!(pair(&api["moves"][0]), ("eu-west".into(), "us-east".into()));

    // Weighted: not compared per network, weight shares instead.
    let pool = service(&report, "pool");
    assert_eq!(pool["status"], "not_compared");
    assert!(pool["reason"].as_str().unwrap().contains("weighted"));
    let shares: Vec<_> = pool["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["datacenter"].as_str().unwrap().to_string(),
                w["old_percent"].as_f64().unwrap(),
                w["new_percent"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        shares,
        [
            ("eu-west".to_string(), 75.0, 50.0),
            ("us-east".to_string(), 25.0, 50.0)
        ]
    );
    assert_eq!(service(&report, "legacy")["status"], "removed");
    assert_eq!(service(&report, "fresh")["status"], "added");

    // The text form says the same.
    let (code, text, stderr) = diff(&[], &old, &new);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        text.contains(
            "www in gslb.example.com.: 896 IPv4 /24s, 1 IPv6 /48s move (1.31 % / 50.00 %)"
        ),
        "{text}"
    );
    assert!(
        text.contains("  eu-west -> us-east: 768 IPv4 /24s, 1 IPv6 /48s"),
        "{text}"
    );
    assert!(
        text.contains("    DE (EU): 768 of 768 (100.00 %)"),
        "{text}"
    );
    assert!(text.contains("weight eu-west: 75.0 % -> 50.0 %"), "{text}");

    // A gate: api moves 100 %, above 99.
    let (code, _, stderr) = diff(&["--fail-above", "99"], &old, &new);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("100.00 % moves somewhere"), "{stderr}");
}

#[test]
fn diff_of_identical_configs_moves_nothing() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let text = zone("", "[\"eu-west\", \"us-east\"]", "{ eu-west = 1 }", "x");
    let (old, new) = (config(a.path(), &text), config(b.path(), &text));
    let (code, stdout, stderr) = diff(&["--json", "--fail-above", "0"], &old, &new);
    assert_eq!(code, Some(0), "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    for name in ["www", "api", "x"] {
        let s = service(&report, name);
        assert_eq!(s["status"], "compared");
        assert_eq!(size(&s["moved"]), (0.0, 0.0), "{name}");
        assert!(s["moves"].as_array().unwrap().is_empty());
    }
}

#[test]
fn diff_refuses_one_file_twice_and_names_config_errors() {
    let a = tempfile::tempdir().unwrap();
    let path = config(a.path(), &example_zone());
    let (code, _, stderr) = diff(&[], &path, &path);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("same file"), "{stderr}");

    let b = tempfile::tempdir().unwrap();
    let broken = example_zone().replace("policy = \"geo\"", "policy = \"nope\"");
    let bad = config(b.path(), &broken);
    let (code, _, stderr) = diff(&[], &path, &bad);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("error: new config: "), "{stderr}");
    assert!(
        stderr.contains("gslb.example.com.toml: services.www.policy"),
        "{stderr}"
    );
}

/// Two different databases: the walk covers the networks either places,
/// each counted once, located by the new database where it places them.
#[test]
fn diff_across_two_databases_counts_the_union_of_their_networks() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let text = example_zone();
    let old = config(a.path(), &text);
    let new = write_config(
        b.path(),
        &Setup {
            zones: &[("gslb.example.com.toml", &text)],
            geoip: crate::harness::geoip2_test_db(),
            ..Setup::default()
        },
    );
    let (code, stdout, stderr) = diff(&["--json"], &old, &new);
    assert_eq!(code, Some(0), "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    // The flat database's 68,352 /24s and the GeoIP2 one's two /16s.
    assert_eq!(size(&report["total"]), (TOTAL_V4 + 512.0, 2.0));
    assert!(report["geoip"][1].as_str().unwrap().contains("GeoIP2-City"));
    // 11.20/16 (Vladivostok) is new to the new database: unplaced before,
    // so the default order (us-east) then; ap-southeast, nearest, now.
    let www = service(&report, "www");
    let ru = www["countries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["country"] == "RU")
        .expect("RU moves");
    assert_eq!(size(&ru["total"]), (512.0, 0.0));
    assert!(
        ru["moves"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| pair(m) == ("us-east".into(), "ap-southeast".into())),
        "{ru}"
    );
}
