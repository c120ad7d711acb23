use std::path::Path;

use super::*;

fn zone(text: &str) -> Result<ZoneConfig, ConfigError> {
    parse_zone(Path::new("zones/t.toml"), text)
}

const BASE: &str = r#"
origin = "t.example."
ns = ["ns1.t.example."]
[soa]
rname = "hostmaster.t.example."
serial = 1
[records]
ns1 = [{ type = "A", value = "192.0.2.53" }]
[datacenters.a]
location = [0.0, 0.0]
addresses = ["192.0.2.1"]
[datacenters.b]
location = [10.0, 10.0]
addresses = ["2001:db8::1"]
[services.www]
policy = "geo"
datacenters = ["a", "b"]
"#;

#[test]
fn base_zone_loads_with_defaults() {
    let z = zone(BASE).unwrap();
    assert_eq!(z.origin.to_ascii(), "t.example.");
    assert_eq!(z.soa.minimum, 60);
    assert_eq!(z.services[0].ttl, DEFAULT_SERVICE_TTL);
    assert_eq!(z.datacenters.len(), 2);
}

fn err(text: &str) -> ConfigError {
    zone(text).expect_err("must be rejected")
}

#[test]
fn errors_name_file_key_and_reason() {
    let e = err(&BASE.replace("location = [0.0, 0.0]", "lcation = [0.0, 0.0]"));
    assert_eq!(e.file, Path::new("zones/t.toml"));
    assert_eq!(e.key, "datacenters.a.lcation");
    assert!(e.reason.contains("unknown field `lcation`"), "{e}");
    assert!(e.reason.contains("line 10"), "{e}");
    assert!(
        e.to_string()
            .starts_with("zones/t.toml: datacenters.a.lcation: "),
        "{e}"
    );

    let e = err(&BASE.replace(r#"datacenters = ["a", "b"]"#, r#"datacenters = ["a", "c"]"#));
    assert_eq!(e.key, "services.www.datacenters[1]");
    assert!(e.reason.contains("unknown datacenter \"c\""), "{e}");

    let e = err(&BASE.replace("serial = 1", "serial = -1"));
    assert_eq!(e.key, "soa.serial");

    let e = err(&format!("{BASE}\n[services.www.countries]\nJp = [\"a\"]\n"));
    assert_eq!(e.key, "services.www.countries.Jp");

    let e = err(&format!(
        "{BASE}\n[services.www.networks]\n\"10.0.0.1/8\" = [\"a\"]\n"
    ));
    assert!(e.reason.contains("10.0.0.0/8"), "{e}");

    let e = err(&BASE.replace("[0.0, 0.0]", "[91.0, 0.0]"));
    assert_eq!(e.key, "datacenters.a.location");

    let e = err(&BASE.replace("192.0.2.53", "192.0.2.300"));
    assert_eq!(e.key, "records.ns1[0]");

    let e = err(&BASE.replace(r#"policy = "geo""#, r#"policy = "nearest""#));
    assert_eq!(e.key, "services.www.policy");

    let e = err(&BASE.replace("hostmaster.t.example.", "hostmaster@t.example"));
    assert!(e.reason.contains("hostmaster.t.example."), "{e}");

    let e = err(&format!("{BASE}\nbogus = 1\n"));
    assert!(e.reason.contains("unknown field `bogus`"), "{e}");
}

#[test]
fn cross_record_rules() {
    // Service name colliding with a static address.
    let text = BASE.replace(
        "ns1 = [{ type = \"A\", value = \"192.0.2.53\" }]",
        "ns1 = [{ type = \"A\", value = \"192.0.2.53\" }]\nwww = [{ type = \"A\", value = \"192.0.2.9\" }]",
    );
    assert_eq!(err(&text).key, "services.www");
    // CNAME plus other data.
    let text = BASE.replace(
        "ns1 = [{ type = \"A\", value = \"192.0.2.53\" }]",
        "ns1 = [{ type = \"A\", value = \"192.0.2.53\" }, { type = \"CNAME\", value = \"x\" }]",
    );
    assert!(err(&text).reason.contains("CNAME"));
    // Out-of-zone owner.
    let text = BASE.replace(
        "ns1 = [",
        "\"x.other.\" = [{ type = \"A\", value = \"192.0.2.1\" }]\nns1 = [",
    );
    assert!(err(&text).reason.contains("not inside the zone"));
    // Data below a delegation.
    let text = BASE.replace(
        "ns1 = [",
        "sub = [{ type = \"NS\", value = \"ns.sub\" }]\n\"x.sub\" = [{ type = \"TXT\", value = \"hidden\" }]\nns1 = [",
    );
    assert!(err(&text).reason.contains("delegation"), "{}", err(&text));
}

#[test]
fn server_config_defaults_and_ranges() {
    let s = parse_server(Path::new("/etc/meridian/meridian.toml"), "").unwrap();
    assert_eq!(s.listen.len(), 2);
    assert_eq!(s.zones_dir, Path::new("/etc/meridian/zones"));
    assert_eq!(s.geoip, None, "no geoip key: the built-in database");
    let s = parse_server(
        Path::new("/etc/meridian/meridian.toml"),
        "geoip = \"g/x.mmdb\"",
    )
    .unwrap();
    assert_eq!(
        s.geoip.as_deref(),
        Some(Path::new("/etc/meridian/g/x.mmdb"))
    );
    assert_eq!(s.max_udp_payload, 1232);
    let e = parse_server(Path::new("m.toml"), "max_udp_payload = 100").unwrap_err();
    assert_eq!(e.key, "max_udp_payload");
    assert!(e.reason.contains("512 to 4096"));
    let e = parse_server(Path::new("m.toml"), "listen = [\"localhost:53\"]").unwrap_err();
    assert_eq!(e.key, "listen[0]");
    let e = parse_server(Path::new("m.toml"), "zone = \"z\"").unwrap_err();
    assert!(e.reason.contains("unknown field `zone`"));
}

fn with_records(extra: &str) -> String {
    BASE.replace(
        "ns1 = [{ type = \"A\", value = \"192.0.2.53\" }]",
        &format!("ns1 = [{{ type = \"A\", value = \"192.0.2.53\" }}]\n{extra}"),
    )
}

#[test]
fn review_holes_are_closed() {
    // Wildcards load, as records and as services; a wildcard cannot own
    // NS records.
    zone(&with_records(r#""*" = [{ type = "TXT", value = "x" }]"#)).unwrap();
    let z = zone(&format!(
        "{BASE}\n[services.\"*.x\"]\npolicy = \"geo\"\ndatacenters = [\"a\"]\n"
    ))
    .unwrap();
    assert!(z.services.iter().any(|s| s.fqdn.is_wildcard()));
    let e = err(&with_records(
        r#""*.d" = [{ type = "NS", value = "ns.example.net." }]"#,
    ));
    assert!(e.reason.contains("wildcard cannot own NS"), "{e}");
    // Two keys naming one service owner.
    let e = err(&format!(
        "{BASE}\n[services.\"www.t.example.\"]\npolicy = \"geo\"\ndatacenters = [\"a\"]\n"
    ));
    assert!(e.reason.contains("same owner"), "{e}");
    // IPv4-mapped network overrides never match.
    let e = err(&format!(
        "{BASE}\n[services.www.networks]\n\"::ffff:8.8.8.0/120\" = [\"a\"]\n"
    ));
    assert!(e.reason.contains("\"8.8.8.0/24\""), "{e}");
    // RRsets: one TTL, no duplicates.
    let e = err(&with_records(
        r#"x = [{ type = "A", value = "192.0.2.1", ttl = 10 }, { type = "A", value = "192.0.2.2", ttl = 1000 }]"#,
    ));
    assert_eq!(e.key, "records.x[1]");
    assert!(e.reason.contains("RFC 2181"), "{e}");
    let e = err(&with_records(
        r#"x = [{ type = "A", value = "192.0.2.1" }, { type = "A", value = "192.0.2.1" }]"#,
    ));
    assert!(e.reason.contains("duplicates records.x[0]"), "{e}");
    // Different types may have different TTLs.
    zone(&with_records(
        r#"x = [{ type = "A", value = "192.0.2.1", ttl = 10 }, { type = "TXT", value = "t", ttl = 99 }]"#,
    ))
    .unwrap();
    // CNAME loops.
    let e = err(&with_records(
        "l1 = [{ type = \"CNAME\", value = \"l2\" }]\nl2 = [{ type = \"CNAME\", value = \"l1\" }]",
    ));
    assert!(e.reason.contains("CNAME loop"), "{e}");
    let e = err(&with_records(
        "self = [{ type = \"CNAME\", value = \"self\" }]",
    ));
    assert!(e.reason.contains("CNAME loop"), "{e}");
    // In-zone name servers need addresses.
    let e = err(&BASE.replace("ns1 = [{ type = \"A\", value = \"192.0.2.53\" }]", ""));
    assert_eq!(e.key, "ns[0]");
    let e = err(&with_records(
        "sub = [{ type = \"NS\", value = \"ns.sub\" }]",
    ));
    assert!(e.reason.contains("glue"), "{e}");
    zone(&with_records(
        "sub = [{ type = \"NS\", value = \"ns.sub\" }]\n\"ns.sub\" = [{ type = \"A\", value = \"192.0.2.9\" }]",
    ))
    .unwrap();
}

#[test]
fn probe_and_health_settings_are_checked() {
    let probe = |p: &str| {
        BASE.replace(
            "addresses = [\"192.0.2.1\"]",
            &format!("addresses = [\"192.0.2.1\"]\nprobe = {{ {p} }}"),
        )
    };
    let z = zone(&probe("type = \"http\", path = \"/h\", interval = \"1s\"")).unwrap();
    let spec = z.datacenters[0].probe.as_ref().unwrap();
    assert_eq!(spec.targets, ["192.0.2.1:80".parse().unwrap()]);
    assert_eq!(spec.timeout, std::time::Duration::from_millis(800));
    assert_eq!((spec.rise, spec.fall, spec.min_up), (2, 3, 1));

    let e = err(&probe("type = \"smtp\""));
    assert_eq!(e.key, "datacenters.a.probe.type");
    let e = err(&probe("type = \"tcp\""));
    assert_eq!(e.key, "datacenters.a.probe.port", "{e}");
    let e = err(&probe("type = \"tcp\", port = 22, path = \"/\""));
    assert_eq!(e.key, "datacenters.a.probe.path");
    let e = err(&probe(
        "type = \"http\", interval = \"1s\", timeout = \"1s\"",
    ));
    assert!(e.reason.contains("shorter than the interval"), "{e}");
    let e = err(&probe("type = \"http\", interval = \"soon\""));
    assert!(e.reason.contains("duration"), "{e}");
    let e = err(&probe("type = \"http\", expect_status = [\"2xx\", 99]"));
    assert_eq!(e.key, "datacenters.a.probe.expect_status[1]");
    let e = err(&probe("type = \"http\", min_up = 2"));
    assert!(e.reason.contains("1 to 1"), "{e}");
    let e = err(&probe("type = \"dns\""));
    assert_eq!(e.key, "datacenters.a.probe.name");
    let e = err(&probe(
        "type = \"http\", method = \"HEAD\", expect_body = \"ok\"",
    ));
    assert!(e.reason.contains("HEAD"), "{e}");

    let svc = |extra: &str| format!("{BASE}{extra}\n");
    let e = err(&svc("when_all_down = \"panic\""));
    assert_eq!(e.key, "services.www.when_all_down");
    let e = err(&svc("when_all_down = \"fallback\""));
    assert!(e.reason.contains("fallback"), "{e}");
    let e = err(&svc("fallback = [\"192.0.2.9\"]"));
    assert!(e.reason.contains("only used with"), "{e}");
    let e = err(&svc("max_answers = 9"));
    assert!(e.reason.contains("1 to 8"), "{e}");
    let e = err(&svc("ttl = 30\ndegraded_ttl = 60"));
    assert!(e.reason.contains("0 to 30"), "{e}");
    let e = err(&svc("warmup = \"eventually\""));
    assert_eq!(e.key, "services.www.warmup");
    let e = err(&svc(
        "when_all_down = \"fallback\"\nfallback = [\"192.0.2.9\"]\nfallback_cname = \"x.\"",
    ));
    assert!(e.reason.contains("not both"), "{e}");
    let failover = BASE.replace("policy = \"geo\"", "policy = \"failover\"");
    zone(&failover).unwrap();
    let e = err(&format!(
        "{failover}\n[services.www.countries]\nJP = [\"a\"]\n"
    ));
    assert!(e.reason.contains("only used by a \"geo\" step"), "{e}");
}

#[test]
fn admin_settings_are_checked() {
    let s = parse_server(Path::new("m.toml"), "").unwrap();
    assert_eq!(s.admin.unwrap().listen, "127.0.0.1:5380".parse().unwrap());
    let s = parse_server(Path::new("m.toml"), "[admin]\nenabled = false").unwrap();
    assert!(s.admin.is_none());
    let e = parse_server(Path::new("m.toml"), "[admin]\nlisten = \"0.0.0.0:5380\"").unwrap_err();
    assert!(e.reason.contains("token"), "{e}");
    let e = parse_server(Path::new("m.toml"), "[admin]\ntoken = \"short\"").unwrap_err();
    assert!(e.reason.contains("16"), "{e}");
    parse_server(
        Path::new("m.toml"),
        "[admin]\nlisten = \"0.0.0.0:5380\"\ntoken = \"0123456789abcdef\"",
    )
    .unwrap();
}

#[test]
fn rrl_is_on_by_default_and_its_keys_are_checked() {
    let s = parse_server(Path::new("m.toml"), "").unwrap();
    assert_eq!(s.rrl, RrlConfig::default());
    assert!(s.rrl.enabled);
    let s = parse_server(
        Path::new("m.toml"),
        "[rrl]\nenabled = false\nresponses_per_second = 0\nslip = 0\nwindow = 1\n\
         ipv4_prefix_length = 32\nipv6_prefix_length = 64\ntable_size = 5000\n\
         exempt = [\"192.0.2.0/24\", \"2001:db8::/32\", \"198.51.100.7\"]",
    )
    .unwrap();
    assert!(!s.rrl.enabled);
    assert_eq!(s.rrl.responses_per_second, 0);
    assert_eq!((s.rrl.slip, s.rrl.window), (0, 1));
    assert_eq!(
        (s.rrl.ipv4_prefix_length, s.rrl.ipv6_prefix_length),
        (32, 64)
    );
    assert_eq!(s.rrl.table_size, 8192, "rounded up to a power of two");
    assert_eq!(
        s.rrl.exempt,
        ["192.0.2.0/24", "2001:db8::/32", "198.51.100.7/32"]
            .map(|n| n.parse::<ipnet::IpNet>().unwrap())
    );
    for (text, key, reason) in [
        ("slip = 11", "rrl.slip", "out of range (0 to 10)"),
        ("window = 0", "rrl.window", "out of range (1 to 3600)"),
        (
            "errors_per_second = -1",
            "rrl.errors_per_second",
            "out of range",
        ),
        (
            "nxdomains_per_second = 1000001",
            "rrl.nxdomains_per_second",
            "out of range",
        ),
        (
            "ipv4_prefix_length = 33",
            "rrl.ipv4_prefix_length",
            "out of range",
        ),
        (
            "ipv6_prefix_length = 129",
            "rrl.ipv6_prefix_length",
            "out of range",
        ),
        ("table_size = 10", "rrl.table_size", "out of range"),
        (
            "exempt = [\"10.0.0.1/8\"]",
            "rrl.exempt[0]",
            "did you mean \"10.0.0.0/8\"",
        ),
        ("exempt = [\"localhost\"]", "rrl.exempt[0]", "CIDR"),
        (
            "exempt = [\"10.0.0.0/8\", \"10.0.0.0/8\"]",
            "rrl.exempt[1]",
            "listed twice",
        ),
        ("responses = 5", "rrl.responses", "unknown field"),
    ] {
        let e = parse_server(Path::new("m.toml"), &format!("[rrl]\n{text}")).unwrap_err();
        assert_eq!(e.key, key, "{text}: {e}");
        assert!(e.reason.contains(reason), "{text}: {e}");
    }
}

#[test]
fn latency_settings_are_checked() {
    let s = parse_server(Path::new("m.toml"), "").unwrap();
    assert_eq!(
        LatencyConfig {
            state_file: None,
            ..s.latency.clone()
        },
        LatencyConfig {
            state_file: None,
            ..LatencyConfig::default()
        }
    );
    assert!(
        s.latency
            .state_file
            .is_some_and(|p| p.ends_with("meridian-latency.bin"))
    );
    let s = parse_server(
        Path::new("m.toml"),
        "[latency]\nhalf_life = \"7d\"\ncoarse = \"asn\"\nasn_database = \"asn.mmdb\"\n\
         state_file = \"\"\nmin_samples = 1\n",
    )
    .unwrap();
    assert_eq!(
        s.latency.half_life,
        std::time::Duration::from_secs(7 * 86_400)
    );
    assert_eq!(s.latency.coarse, Coarse::Asn(PathBuf::from("asn.mmdb")));
    assert_eq!(s.latency.state_file, None);
    for (text, key, reason) in [
        ("min_samples = 0", "latency.min_samples", "out of range"),
        ("half_life = \"1w\"", "latency.half_life", "not a duration"),
        (
            "coarse = \"asn\"",
            "latency.asn_database",
            "required with coarse = \"asn\"",
        ),
        (
            "coarse = \"city\"",
            "latency.coarse",
            "\"prefix\" or \"asn\"",
        ),
        (
            "asn_database = \"a.mmdb\"",
            "latency.asn_database",
            "only used with coarse = \"asn\"",
        ),
        (
            "coarse_ipv4_prefix_length = 24",
            "latency.coarse_ipv4_prefix_length",
            "out of range (0 to 23)",
        ),
        (
            "ipv4_prefix_length = 20\ncoarse_ipv4_prefix_length = 20",
            "latency.coarse_ipv4_prefix_length",
            "out of range (0 to 19)",
        ),
        ("max_rtt_ms = 7000", "latency.max_rtt_ms", "out of range"),
        (
            "margin_percent = 101",
            "latency.margin_percent",
            "out of range",
        ),
        (
            "publish_interval = \"10ms\"",
            "latency.publish_interval",
            "out of range",
        ),
        ("map = \"\"", "latency.map", "empty path"),
        ("nonsense = 1", "latency.nonsense", "unknown field"),
    ] {
        let e = parse_server(Path::new("m.toml"), &format!("[latency]\n{text}\n")).expect_err(text);
        assert_eq!(e.key, key, "{text}: {e}");
        assert!(e.reason.contains(reason), "{text}: {e}");
    }
}

#[test]
fn latency_services_are_checked() {
    let latency = BASE.replace("policy = \"geo\"", "policy = \"latency\"");
    let z = zone(&latency).unwrap();
    assert_eq!(z.services[0].policy.steps, [crate::model::Step::Latency]);
    assert_eq!(
        z.services[0].policy.latency_source,
        crate::model::LatencySource::Clients
    );
    // Distance estimates need locations; probe RTTs need measuring probes
    // of one kind.
    let e = err(&latency.replace("location = [0.0, 0.0]\n", ""));
    assert_eq!(e.key, "datacenters.a.location");
    let probes = latency.replace(
        "datacenters = [\"a\", \"b\"]",
        "datacenters = [\"a\", \"b\"]\nsource = \"probes\"",
    );
    let e = err(&probes);
    assert_eq!(e.key, "datacenters.a.probe", "{e}");
    let tcp = "[datacenters.a.probe]\ntype = \"tcp\"\nport = 443\n";
    let both = probes.replace(
        "[services.www]",
        &format!("{tcp}[datacenters.b.probe]\ntype = \"http\"\nport = 80\n[services.www]"),
    );
    let e = err(&both);
    assert_eq!(e.key, "datacenters.b.probe.type", "{e}");
    assert!(e.reason.contains("probe them alike"), "{e}");
    let ok = probes.replace(
        "[services.www]",
        &format!("{tcp}[datacenters.b.probe]\ntype = \"tcp\"\nport = 443\n[services.www]"),
    );
    assert_eq!(
        zone(&ok).unwrap().services[0].policy.latency_source,
        crate::model::LatencySource::Probes
    );
    let e = err(&latency.replace(
        "datacenters = [\"a\", \"b\"]",
        "datacenters = [\"a\", \"b\"]\nsource = \"users\"",
    ));
    assert_eq!(e.key, "services.www.source");
    let e = err(&BASE.replace(
        "datacenters = [\"a\", \"b\"]",
        "datacenters = [\"a\", \"b\"]\nsource = \"probes\"",
    ));
    assert_eq!(e.key, "services.www.source");
    assert!(e.reason.contains("only used by a \"latency\" step"), "{e}");
}

#[test]
fn datacenter_names_are_bounded() {
    for bad in ["\"\"", &format!("\"{}\"", "x".repeat(256)), "\"a\\tb\""] {
        let e = err(&BASE.replace("[datacenters.b]", &format!("[datacenters.{bad}]")));
        assert!(e.key.starts_with("datacenters."), "{e}");
        assert!(e.reason.contains("1 to 255 bytes"), "{e}");
    }
}

/// The indexed checks (issue 9: hash lookups instead of scans) keep the
/// rules and messages of the scans they replace.
#[test]
fn indexed_record_checks_keep_their_rules() {
    // A large RRset takes the hashed duplicate check.
    let many: Vec<String> = (1..=20)
        .map(|i| format!("{{ type = \"A\", value = \"192.0.2.{i}\" }}"))
        .collect();
    zone(&with_records(&format!("big = [{}]", many.join(", ")))).unwrap();
    let mut dup = many.clone();
    dup.push("{ type = \"A\", value = \"192.0.2.7\" }".into());
    let e = err(&with_records(&format!("big = [{}]", dup.join(", "))));
    assert_eq!(e.key, "records.big[20]");
    assert!(e.reason.contains("duplicates records.big[6]"), "{e}");
    let mut ttl = many.clone();
    ttl.push("{ type = \"A\", value = \"192.0.2.99\", ttl = 5 }".into());
    let e = err(&with_records(&format!("big = [{}]", ttl.join(", "))));
    assert!(e.reason.contains("differs from records.big[0]"), "{e}");
    // Chains that share a tail end, and are walked once.
    zone(&with_records(
        "c1 = [{ type = \"CNAME\", value = \"c3\" }]\nc2 = [{ type = \"CNAME\", value = \"c3\" }]\n\
         c3 = [{ type = \"CNAME\", value = \"ns1\" }]",
    ))
    .unwrap();
    // A loop reached from a name outside it is named from that name.
    let e = err(&with_records(
        "a0 = [{ type = \"CNAME\", value = \"l1\" }]\nl1 = [{ type = \"CNAME\", value = \"l2\" }]\n\
         l2 = [{ type = \"CNAME\", value = \"l1\" }]",
    ));
    assert_eq!(e.key, "records.a0");
    assert!(
        e.reason
            .contains("a0.t.example. -> l1.t.example. -> l2.t.example. -> l1.t.example."),
        "{e}"
    );
    // Data two levels below a delegation names the delegation.
    let e = err(&with_records(
        "sub = [{ type = \"NS\", value = \"ns.other.\" }]\n\"x.y.sub\" = [{ type = \"TXT\", value = \"t\" }]",
    ));
    assert!(
        e.reason.contains("below the delegation at sub.t.example."),
        "{e}"
    );
    // Non-NS data at the cut.
    let e = err(&with_records(
        "sub = [{ type = \"NS\", value = \"ns.other.\" }, { type = \"TXT\", value = \"t\" }]",
    ));
    assert!(e.reason.contains("TXT at a delegation point"), "{e}");
    // A service at or below a delegation, or on a static address name.
    let svc =
        |name: &str| format!("\n[services.\"{name}\"]\npolicy = \"geo\"\ndatacenters = [\"a\"]\n");
    let cut = with_records("sub = [{ type = \"NS\", value = \"ns.other.\" }]");
    let e = err(&format!("{cut}{}", svc("sub")));
    assert!(e.reason.contains("static NS record"), "{e}");
    let e = err(&format!("{cut}{}", svc("deep.x.sub")));
    assert!(
        e.reason
            .contains("at or below the delegation at sub.t.example."),
        "{e}"
    );
    let e = err(&format!("{BASE}{}", svc("ns1")));
    assert!(e.reason.contains("static A record"), "{e}");
    // A TXT record beside a service is fine.
    zone(&format!(
        "{}{}",
        with_records("api = [{ type = \"TXT\", value = \"t\" }]"),
        svc("api")
    ))
    .unwrap();
}

/// Writes `toml` and `zone_text` (as `static.zone`) into a fresh directory
/// and loads the zone.
fn zone_with_file(
    toml: &str,
    zone_text: &str,
) -> (tempfile::TempDir, Result<ZoneConfig, ConfigError>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("static.zone"), zone_text).unwrap();
    let path = dir.path().join("t.toml");
    std::fs::write(&path, toml).unwrap();
    let z = load_zone(&path);
    (dir, z)
}

const FILE_BASE: &str = r#"
origin = "t.example."
ttl = 600
ns = ["ns1.t.example."]
records_file = "static.zone"
[soa]
rname = "hostmaster.t.example."
serial = 1
"#;

/// A zone file as another server would have it: SOA and apex NS (skipped:
/// the TOML's `[soa]` and `ns` are served), `$TTL`, relative names, a
/// continuation owner, parentheses over lines, comments, quoted strings.
const MIGRATED: &str = r#"$ORIGIN t.example.
$TTL 1h
@   IN SOA ns1 hostmaster (
        2026112501 ; serial
        3600 600 1209600 60 )
    IN NS  ns1.t.example.
ns1     A     192.0.2.53
www 300 IN A  192.0.2.1
        300 A 192.0.2.2        ; a second address, same owner
        AAAA  2001:db8::1
mail    MX    10 mx1
mx1     A     192.0.2.25
txt     TXT   "v=spf1 -all" "a ; semicolon" unquoted
esc     TXT   "quote \" backslash \\ octet \065"
alias   CNAME www
$ORIGIN sub.t.example.
deep    IN 1d PTR host.example.net.
_sip._tcp SRV 10 5 5060 www.t.example.
"#;

#[test]
fn records_file_loads_a_migrated_zone() {
    let (_dir, z) = zone_with_file(FILE_BASE, MIGRATED);
    let z = z.unwrap();
    let find = |name: &str, t: &str| {
        z.records
            .iter()
            .filter(|r| r.owner().to_ascii() == name && r.type_name() == t)
            .map(|r| (r.ttl(), r.value_text()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        find("www.t.example.", "A"),
        vec![(300, "192.0.2.1".into()), (300, "192.0.2.2".into())]
    );
    assert_eq!(
        find("www.t.example.", "AAAA"),
        vec![(3600, "2001:db8::1".into())]
    );
    assert_eq!(
        find("mail.t.example.", "MX"),
        vec![(3600, "10 mx1.t.example.".into())]
    );
    assert_eq!(find("deep.sub.t.example.", "PTR")[0].0, 86_400);
    assert_eq!(find("alias.t.example.", "CNAME")[0].1, "www.t.example.");
    assert_eq!(find("_sip._tcp.sub.t.example.", "SRV").len(), 1);
    // \065 is the octet 65 ("A"), as RFC 1035 §5.1 says.
    assert!(
        find("esc.t.example.", "TXT")[0].1.contains("octet A"),
        "{:?}",
        find("esc.t.example.", "TXT")
    );
    // Apex SOA and NS are not static records: [soa] and `ns` serve them.
    assert!(z.records.iter().all(|r| !r.is_ns() && !r.is_apex_only()));
    assert_eq!(z.soa.serial, 1);
    // Without $TTL, a record gets the zone's `ttl`.
    let (_dir, z) = zone_with_file(FILE_BASE, "ns1 A 192.0.2.53\nx TXT hi\n");
    assert!(z.unwrap().records.iter().all(|r| r.ttl() == 600));
    // TOML records and the file together.
    let both = FILE_BASE.replace(
        "[soa]",
        "[records]\nonly-toml = [{ type = \"TXT\", value = \"t\" }]\n[soa]",
    );
    let (_dir, z) = zone_with_file(&both, "ns1 A 192.0.2.53\n");
    assert_eq!(z.unwrap().records.len(), 2);
}

/// The file is read as hickory's zone-file parser reads it (for what the
/// parser gets right: it decodes `\DDD` wrongly, so the sample has none).
#[test]
fn records_file_matches_the_hickory_parser() {
    let sample = MIGRATED.replace(
        r#"esc     TXT   "quote \" backslash \\ octet \065""#,
        r#"esc TXT "quote \" backslash \\""#,
    );
    let origin = crate::dns::records::parse_name("t.example.", None).unwrap();
    let mut reference = crate::dns::records::parser_reference(&sample, &origin).unwrap();
    // We skip the apex SOA and NS (served from the TOML).
    reference.retain(|(name, t, _, _)| !(name == "t.example." && (t == "SOA" || t == "NS")));
    let (_dir, z) = zone_with_file(FILE_BASE, &sample);
    let mut ours: Vec<_> = z
        .unwrap()
        .records
        .iter()
        .map(|r| {
            (
                r.owner().to_lowercase().to_ascii(),
                r.type_name(),
                r.ttl(),
                r.value_text(),
            )
        })
        .collect();
    ours.sort();
    assert_eq!(ours, reference);
}

#[test]
fn records_file_errors_name_the_file_and_line() {
    let check = |zone_text: &str, line: u32, reason: &str| {
        let (dir, z) = zone_with_file(FILE_BASE, zone_text);
        let e = z.expect_err(zone_text);
        assert_eq!(e.file, dir.path().join("static.zone"), "{e}");
        assert_eq!(e.key, format!("line {line}"), "{e}");
        assert!(e.reason.contains(reason), "{e}");
    };
    let ok = "ns1 A 192.0.2.53\n";
    check(&format!("{ok}\n; c\nx A 192.0.2.300\n"), 4, "bad A value");
    check(
        &format!("{ok}x A 192.0.2.1\nx A 192.0.2.1\n"),
        3,
        "duplicates",
    );
    check(
        &format!("{ok}x 60 A 192.0.2.1\nx 90 A 192.0.2.2\n"),
        3,
        "differs from",
    );
    check(
        &format!("{ok}x.other. A 192.0.2.1\n"),
        2,
        "not inside the zone",
    );
    check(
        &format!("{ok}$INCLUDE other.zone\n"),
        2,
        "$INCLUDE is not supported",
    );
    check(
        &format!("{ok}*.w NS ns.example.net.\n"),
        2,
        "wildcard cannot own NS",
    );
    // An escaped newline, quoted or not, still counts as a line.
    check(
        &format!("{ok}t TXT \"a\\\nb\"\nx A 192.0.2.300\n"),
        4,
        "bad A value",
    );
    check(
        &format!("{ok}u TXT a\\\nb\nx A 192.0.2.300\n"),
        4,
        "bad A value",
    );
    check(&format!("{ok}x CH TXT t\n"), 2, "only IN");
    check(&format!("{ok}x TXT \"open\n\n"), 2, "unterminated");
    check(&format!("{ok}x TXT ( a\nb\n"), 2, "never closed");
    check(
        &format!("{ok}x CNAME y\nx TXT t\n"),
        3,
        "CNAME cannot coexist",
    );
    check(&format!("{ok}l1 CNAME l2\nl2 CNAME l1\n"), 2, "CNAME loop");
    check(&format!("{ok}sub NS ns.sub\n"), 2, "no glue");
    check(
        &format!("{ok}sub NS ns.other.\nx.sub TXT t\n"),
        3,
        "below the delegation",
    );
    check(
        &format!("{ok}@ NS ns9.other.\n"),
        2,
        "not in the zone's `ns` list",
    );
    check(&format!("{ok}x SOA a b 1 2 3 4 5\n"), 2, "apex only");
    check(&format!("{ok}x BOGUS t\n"), 2, "unknown record type");
    check(&format!("{ok}x 99999999999 A 192.0.2.1\n"), 2, "TTL");
    check(&format!("   A 192.0.2.1\n{ok}"), 1, "needs an owner");
    check(
        &format!("{ok}x TXT \"{}\"\n", "y".repeat(256)),
        2,
        "at most 255",
    );
}

#[test]
fn records_file_and_toml_and_services_meet() {
    // The same name in [records] and the file: both places named.
    let toml = FILE_BASE.replace(
        "[soa]",
        "[records]\nx = [{ type = \"TXT\", value = \"t\" }]\n[soa]",
    );
    let (_dir, z) = zone_with_file(&toml, "ns1 A 192.0.2.53\n\nx A 192.0.2.1\n");
    let e = z.unwrap_err();
    assert_eq!(e.key, "line 3", "{e}");
    assert!(
        e.reason.contains("records.x in") && e.reason.contains("t.toml"),
        "{e}"
    );
    // A service on a name with a static address in the file.
    let toml = format!(
        "{FILE_BASE}[datacenters.a]\nlocation = [0.0, 0.0]\naddresses = [\"192.0.2.1\"]\n\
         [services.www]\npolicy = \"geo\"\ndatacenters = [\"a\"]\n"
    );
    let (_dir, z) = zone_with_file(&toml, "ns1 A 192.0.2.53\nwww A 192.0.2.7\n");
    let e = z.unwrap_err();
    assert_eq!(e.key, "services.www");
    assert!(
        e.reason.contains("static A record") && e.reason.contains("static.zone line 2"),
        "{e}"
    );
    // A missing file is named with the key.
    let (_dir, z) = zone_with_file(&FILE_BASE.replace("static.zone", "missing.zone"), "");
    let e = z.unwrap_err();
    assert_eq!(e.key, "records_file");
    assert!(e.reason.contains("missing.zone"), "{e}");
}
