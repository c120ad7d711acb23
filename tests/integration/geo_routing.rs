//! GeoIP-proximity routing, overrides and EDNS Client Subnet.

use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use ipnet::IpNet;

use crate::harness::{Setup, TestServer, a_answers, ecs_of, example_zone, query};

const US_EAST: &str = "192.0.2.10";
const EU_WEST: &str = "198.51.100.10";
const AP_SOUTHEAST: &str = "203.0.113.10";

#[tokio::test]
async fn ecs_from_each_country_reaches_the_nearest_datacenter() {
    let s = TestServer::example().await;
    let cases = [
        ("11.1.0.0/24", "US", US_EAST),
        ("11.2.0.0/24", "DE", EU_WEST),
        ("11.3.0.0/24", "JP", AP_SOUTHEAST),
        ("11.4.0.0/24", "IN", AP_SOUTHEAST),
        ("11.5.0.0/24", "AU", AP_SOUTHEAST),
        ("11.6.0.0/24", "BR", US_EAST),
        ("11.7.0.0/24", "PT (city coordinates)", EU_WEST),
        ("2001:db8:2::/56", "DE over IPv6", EU_WEST),
        ("2001:db8:3::/56", "JP over IPv6", AP_SOUTHEAST),
    ];
    for (subnet, who, want) in cases {
        let r = s
            .ask("www.gslb.example.com.", RecordType::A, Some(subnet))
            .await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{who}");
        assert!(r.metadata.authoritative);
        assert_eq!(a_answers(&r), [want], "{who} ({subnet})");
        assert_eq!(r.answers[0].ttl, 30);
        let net: IpNet = subnet.parse().unwrap();
        let (addr, source, scope) = ecs_of(&r).expect("ECS echoed");
        assert_eq!(addr, net.network(), "{who}: address copied");
        assert_eq!(source, net.prefix_len(), "{who}: source prefix copied");
        assert!(scope > 0, "{who}: a geo answer is not valid for everyone");
    }
    // AAAA follows the same choice.
    let r = s
        .ask(
            "www.gslb.example.com.",
            RecordType::AAAA,
            Some("11.2.0.0/24"),
        )
        .await;
    assert_eq!(a_answers(&r), ["2001:db8:20::10"]);
}

#[tokio::test]
async fn ecs_scope_is_the_widest_prefix_with_the_same_answer() {
    let s = TestServer::example().await;
    // 10.7/16 (PT), 10.8/16 and 10.9/16 (DE) rank the datacenters the
    // same way, so 11.8.0.0/15 is one block although the database has /16s.
    let r = s
        .ask("www.gslb.example.com.", RecordType::A, Some("11.8.1.0/24"))
        .await;
    assert_eq!(ecs_of(&r).unwrap().2, 15);
    // Whatever the scope, every address inside it gets the same answer.
    for subnet in [
        "11.1.0.0/24",
        "11.3.0.0/24",
        "11.8.1.0/24",
        "11.10.0.0/24",
        "192.168.7.0/24",
        "11.5.200.0/24",
    ] {
        let r = s
            .ask("www.gslb.example.com.", RecordType::A, Some(subnet))
            .await;
        let answer = a_answers(&r);
        let scope = ecs_of(&r).unwrap().2;
        let block = IpNet::new(subnet.parse::<IpNet>().unwrap().network(), scope)
            .unwrap()
            .trunc();
        let probes = [block.network(), block.broadcast(), mid(block)];
        for probe in probes {
            let probe_net = IpNet::new(probe, 24).unwrap().trunc().to_string();
            let r2 = s
                .ask("www.gslb.example.com.", RecordType::A, Some(&probe_net))
                .await;
            assert_eq!(
                a_answers(&r2),
                answer,
                "{probe_net} inside {block} (scope of {subnet})"
            );
        }
    }
}

fn mid(net: IpNet) -> IpAddr {
    match net {
        IpNet::V4(n) => {
            let lo = u32::from(n.network());
            let hi = u32::from(n.broadcast());
            IpAddr::V4((lo + (hi - lo) / 2).into())
        }
        IpNet::V6(n) => {
            let lo = u128::from(n.network());
            let hi = u128::from(n.broadcast());
            IpAddr::V6((lo + (hi - lo) / 2).into())
        }
    }
}

#[tokio::test]
async fn without_ecs_the_source_address_is_used() {
    let s = TestServer::example().await;
    // The test database places 127.0.0.0/8 in Japan.
    let r = s.ask("www.gslb.example.com.", RecordType::A, None).await;
    assert_eq!(a_answers(&r), [AP_SOUTHEAST]);
    assert_eq!(
        ecs_of(&r),
        None,
        "no ECS in the response when the query had none"
    );
    // Source prefix 0 ("do not use my address"): routed on the source,
    // answered with scope 0 (RFC 7871 §7.1.2).
    let r = s
        .ask("www.gslb.example.com.", RecordType::A, Some("0.0.0.0/0"))
        .await;
    assert_eq!(a_answers(&r), [AP_SOUTHEAST]);
    assert_eq!(ecs_of(&r).unwrap().2, 0);
}

#[tokio::test]
async fn static_answers_carry_scope_zero() {
    let s = TestServer::example().await;
    let r = s
        .ask("mail.gslb.example.com.", RecordType::A, Some("11.3.0.0/24"))
        .await;
    assert_eq!(ecs_of(&r).unwrap().2, 0, "valid for every client");
    let r = s
        .ask("nope.gslb.example.com.", RecordType::A, Some("11.3.0.0/24"))
        .await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(ecs_of(&r).unwrap().2, 0);
}

#[tokio::test]
async fn malformed_ecs_gets_formerr() {
    let s = TestServer::example().await;
    // Host bits beyond the source prefix (10.3 sent as a /12).
    let mut q = query("www.gslb.example.com.", RecordType::A, None);
    q.edns.as_mut().unwrap().options_mut().insert(
        hickory_proto::rr::rdata::opt::EdnsOption::Subnet(
            hickory_proto::rr::rdata::opt::ClientSubnet::new("11.3.0.0".parse().unwrap(), 12, 0),
        ),
    );
    let r = s.udp(&q).await;
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    // An ECS option whose prefix exceeds the family (IPv4 /33), built by hand.
    let mut bytes = query("www.gslb.example.com.", RecordType::A, None)
        .to_vec()
        .unwrap();
    // OPT RR is last: replace its empty RDATA with one ECS option.
    let ecs = [0u8, 8, 0, 9, 0, 1, 33, 0, 11, 3, 0, 0, 0];
    let rdlen_at = bytes.len() - 2;
    bytes[rdlen_at..].copy_from_slice(&(ecs.len() as u16).to_be_bytes());
    bytes.extend_from_slice(&ecs);
    let raw = crate::harness::udp_exchange(s.addr, &bytes).await;
    assert_eq!(raw[3] & 0x0f, 1, "FORMERR");
    // The server is still fine.
    let r = s
        .ask("www.gslb.example.com.", RecordType::A, Some("11.2.0.0/24"))
        .await;
    assert_eq!(a_answers(&r), [EU_WEST]);
}

pub const TUNED: &str = r#"
origin = "tuned.test."
ns = ["ns1.tuned.test."]
[soa]
rname = "hostmaster.tuned.test."
serial = 1
[records]
ns1 = [{ type = "A", value = "192.0.2.53" }]
alias = [{ type = "CNAME", value = "www" }]
[datacenters.us-east]
location = [39.04, -77.49]
addresses = ["192.0.2.10", "2001:db8:10::10"]
[datacenters.eu-west]
location = [53.35, -6.26]
addresses = ["198.51.100.10", "2001:db8:20::10"]
[datacenters.ap-southeast]
location = [1.35, 103.82]
addresses = ["203.0.113.10", "2001:db8:30::10"]
[datacenters.v4only]
location = [-23.55, -46.63]
addresses = ["192.0.2.77"]
[services.www]
policy = "geo"
datacenters = ["us-east", "eu-west", "ap-southeast", "v4only"]
default = ["eu-west", "us-east"]
ttl = 20
[services.www.countries]
JP = ["us-east"]
BR = ["v4only"]
[services.www.continents]
AF = ["ap-southeast"]
OC = ["us-east"]
[services.www.networks]
"11.3.5.0/24" = ["eu-west"]
"11.1.0.0/17" = ["ap-southeast"]
"2001:db8:3:1::/64" = ["eu-west"]
"#;

#[tokio::test]
async fn overrides_beat_distance_in_documented_order() {
    let s = TestServer::start(&[("tuned.test.toml", TUNED)]).await;
    let ask = |subnet: &'static str| {
        let s = &s;
        async move { s.ask("www.tuned.test.", RecordType::A, Some(subnet)).await }
    };
    // Country beats distance: JP would be ap-southeast.
    assert_eq!(a_answers(&ask("11.3.0.0/24").await), [US_EAST]);
    // A network override beats the country.
    let r = ask("11.3.5.0/24").await;
    assert_eq!(a_answers(&r), [EU_WEST]);
    assert_eq!(ecs_of(&r).unwrap().2, 24);
    let r = ask("11.1.0.0/24").await;
    assert_eq!(a_answers(&r), [AP_SOUTHEAST]);
    assert_eq!(ecs_of(&r).unwrap().2, 17);
    // The other half of the US /16 is ranked by distance again.
    assert_eq!(a_answers(&ask("11.1.128.0/24").await), [US_EAST]);
    // Continent beats distance (ZA is in AF, AU in OC).
    assert_eq!(a_answers(&ask("11.11.0.0/24").await), [AP_SOUTHEAST]);
    assert_eq!(a_answers(&ask("11.5.0.0/24").await), [US_EAST]);
    // Unknown clients (no database entry; unknown country) get `default`.
    assert_eq!(a_answers(&ask("198.18.1.0/24").await), [EU_WEST]);
    assert_eq!(a_answers(&ask("11.10.0.0/24").await), [EU_WEST]);
    // IPv6 network override.
    let r = s
        .ask("www.tuned.test.", RecordType::A, Some("2001:db8:3:1::/64"))
        .await;
    assert_eq!(a_answers(&r), [EU_WEST]);
    let r = s
        .ask("www.tuned.test.", RecordType::A, Some("2001:db8:3:2::/64"))
        .await;
    assert_eq!(a_answers(&r), [US_EAST], "JP country override over IPv6");
}

#[tokio::test]
async fn nodata_when_the_chosen_datacenter_lacks_the_family() {
    let s = TestServer::start(&[("tuned.test.toml", TUNED)]).await;
    let r = s
        .ask("www.tuned.test.", RecordType::A, Some("11.6.0.0/24"))
        .await;
    assert_eq!(a_answers(&r), ["192.0.2.77"]);
    let r = s
        .ask("www.tuned.test.", RecordType::AAAA, Some("11.6.0.0/24"))
        .await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
    assert!(r.authorities[0].ttl <= 20, "no longer than the service TTL");
    assert!(
        ecs_of(&r).unwrap().2 > 0,
        "NODATA here depends on the client"
    );
    // Through a CNAME, with ECS, the CNAME is answered alone (RFC 7871
    // §7.2.1), whatever its target's answer.
    let r = s
        .ask("alias.tuned.test.", RecordType::AAAA, Some("11.6.0.0/24"))
        .await;
    assert_eq!(r.answers.len(), 1, "just the CNAME");
    assert!(r.authorities.is_empty());
    assert_eq!(ecs_of(&r).unwrap().2, 0);
}

#[tokio::test]
async fn geoip2_city_schema_uses_record_coordinates() {
    let zone = example_zone();
    let s = TestServer::start_with(Setup {
        zones: &[("gslb.example.com.toml", &zone)],
        geoip: crate::harness::geoip2_test_db(),
        ..Setup::default()
    })
    .await;
    // Vladivostok is Russian but nearer Singapore than Dublin.
    let r = s
        .ask("www.gslb.example.com.", RecordType::A, Some("11.20.0.0/24"))
        .await;
    assert_eq!(a_answers(&r), [AP_SOUTHEAST]);
    // A Russian record without coordinates falls back to the country
    // centroid, west of the Urals: Dublin.
    let r = s
        .ask("www.gslb.example.com.", RecordType::A, Some("11.21.0.0/24"))
        .await;
    assert_eq!(a_answers(&r), [EU_WEST]);
}

#[tokio::test]
async fn shipped_config_and_database_route_real_addresses() {
    let config = crate::harness::repo().join("meridian.toml");
    let options = meridian::StartOptions {
        listen: Some(vec!["127.0.0.1:0".parse().unwrap()]),
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
    };
    let server = meridian::Server::start_with(&config, options)
        .await
        .expect("the shipped config starts");
    let s = TestServer {
        addr: server.local_addrs()[0],
        server,
        dir: tempfile::tempdir().unwrap(),
    };
    // Real networks per the shipped DB-IP database (see geoip/README.md).
    let cases = [
        ("8.8.8.0/24", "US", US_EAST),
        ("217.0.0.0/24", "DE", EU_WEST),
        ("81.2.69.0/24", "GB", EU_WEST),
        ("90.0.0.0/24", "FR", EU_WEST),
        ("133.11.0.0/24", "JP", AP_SOUTHEAST),
        ("14.139.0.0/24", "IN", AP_SOUTHEAST),
        ("1.120.0.0/24", "AU", AP_SOUTHEAST),
        ("200.160.2.0/24", "BR", US_EAST),
        ("165.21.0.0/24", "SG", AP_SOUTHEAST),
    ];
    for (subnet, who, want) in cases {
        let r = s
            .ask("www.gslb.example.com.", RecordType::A, Some(subnet))
            .await;
        assert_eq!(a_answers(&r), [want], "{who} ({subnet})");
        let scope = ecs_of(&r).unwrap().2;
        assert!((1..=24).contains(&scope), "{who}: scope /{scope}");
    }
}

#[tokio::test]
async fn ipv6_scopes_never_span_the_ipv4_mapped_range() {
    let s = TestServer::example().await;
    // ::/64 holds ::ffff:0:0/96, whose clients are routed as IPv4 (here
    // 10.3/16 is Japan): the scope returned for :: must exclude it.
    let r = s
        .ask("www.gslb.example.com.", RecordType::AAAA, Some("::/64"))
        .await;
    let scope = ecs_of(&r).unwrap().2;
    assert!(scope >= 96, "scope /{scope} would cover ::ffff:0:0/96");
    let r = s
        .ask(
            "www.gslb.example.com.",
            RecordType::A,
            Some("::ffff:11.3.0.0/120"),
        )
        .await;
    assert_eq!(a_answers(&r), [AP_SOUTHEAST]);
    assert_eq!(ecs_of(&r).unwrap().1, 120, "source prefix copied");
    assert!(ecs_of(&r).unwrap().2 >= 96, "scope in IPv6 terms");
}
