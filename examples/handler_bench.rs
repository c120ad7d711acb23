//! In-process cost of answering: runs the real handler over a fixed mix of
//! queries (geo with ECS from many subnets, static, NXDOMAIN, CNAME→geo)
//! and prints nanoseconds per query. Deterministic, so it also works under
//! `valgrind --tool=callgrind` for instruction counts.
//!
//! `cargo run --release --example handler_bench -- [ITERATIONS] [--rrl]
//! [--reuse | --metrics]`
//!
//! `--reuse` answers into one reused buffer (`handle_query`), as the UDP
//! path does; `--metrics` also counts every answer in a metrics shard,
//! locked once per 32 queries (a `recvmmsg` batch), as the UDP path does.
//! Their difference is what the metrics cost per query.
//!
//! With `--rrl`, every response also goes through the response rate
//! limiter, as on the UDP path: on, with limits (1,000,000/s) that are
//! never hit, one clock read per 32 responses (a `recvmmsg` batch), and
//! clients spread over 1,024 /24 prefixes so the table is exercised
//! beyond one hot cache line.
//!
//! `--do` sets DO on every query. `--signed` serves a temporary copy of
//! `meridian.toml` whose example zone is signed with a fresh ECDSA P-256
//! CSK (made by `meridian dnssec keygen`'s function), and prints the
//! bytes of the zone's plain and DO=1 templates. Together they measure
//! signed answers against unsigned ones (README, "DNSSEC", "Performance").
//! `--no-nxdomain` leaves the two names that do not exist out of the mix:
//! a signed zone's NXDOMAIN (compact denial) needs an NSEC of the name's
//! own, signed on demand and answered by the general path.

#[path = "../tests/support/signed_example.rs"]
mod signed_example;
use signed_example::with_do;

use std::net::IpAddr;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let iterations: usize = args.iter().find_map(|s| s.parse().ok()).unwrap_or(200_000);
    let with_rrl = args.iter().any(|a| a == "--rrl");
    let with_metrics = args.iter().any(|a| a == "--metrics");
    let reuse = with_metrics || args.iter().any(|a| a == "--reuse");
    let dnssec_ok = args.iter().any(|a| a == "--do");
    let signed = args.iter().any(|a| a == "--signed");
    let nxdomain = !args.iter().any(|a| a == "--no-nxdomain");
    let metrics = meridian::metrics::Metrics::new();
    let shard = metrics.dns.shard(meridian::dns::Transport::Udp);
    let mut reused = Vec::with_capacity(4096);
    let mut seen = meridian::dns::Seen::default();
    // `--service geo|lat`: only that service of the bench zone
    // (bench/zones/policies.bench.toml), A with ECS from the subnets
    // below; `--rum N`: N published /24 RUM rows (every other /24 from
    // 1.0.0.0 up, the subnets below among them) over the zone's three
    // datacenters, as if measured.
    let service = args
        .iter()
        .position(|a| a == "--service")
        .and_then(|i| args.get(i + 1).cloned());
    let rum_rows: usize = args
        .iter()
        .position(|a| a == "--rum")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(0);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("handler_bench.{}", std::process::id()));
    let config_path = if service.is_some() {
        std::fs::create_dir_all(dir.join("zones")).unwrap();
        std::fs::copy(
            root.join("bench/zones/policies.bench.toml"),
            dir.join("zones/policies.bench.toml"),
        )
        .unwrap();
        let geoip = root.join("geoip/dbip-country.mmdb");
        std::fs::write(
            dir.join("meridian.toml"),
            format!(
                "zones = \"zones\"\ngeoip = {:?}\n[latency]\nstate_file = \"\"\n",
                geoip
            ),
        )
        .unwrap();
        dir.join("meridian.toml")
    } else if signed {
        signed_copy(root, &dir)
    } else {
        root.join("meridian.toml")
    };
    let (config, snap) = meridian::load(&config_path).expect("config");
    let _ = std::fs::remove_dir_all(&dir);
    for zone in snap.zones().iter().filter(|_| signed) {
        let (plain, with_do) = zone.template_bytes();
        eprintln!(
            "{}: templates {plain} bytes, DO=1 templates {with_do} bytes",
            zone.origin()
        );
    }
    let snap = if rum_rows > 0 {
        use meridian::latency::table::{Cell, KeyTableBuilder, RowMeta, v4_key};
        let names: Vec<String> = ["us-east", "eu-west", "ap-southeast"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut b = KeyTableBuilder::new(names.len());
        b.reserve(rum_rows);
        for i in 0..rum_rows as u32 {
            let key = v4_key(std::net::Ipv4Addr::from(0x0100_0000 + (i << 9)), 24);
            let r = f64::from(i % 97);
            b.push(
                key,
                &[
                    Cell::of(20.0 + r, 9.0),
                    Cell::of(60.0 - r / 2.0, 9.0),
                    Cell::of(150.0, 9.0),
                ],
                RowMeta::default(),
            );
        }
        let sources = meridian::latency::Sources {
            rum: std::sync::Arc::new(meridian::latency::Rum {
                fine: b.finish(),
                coarse: Default::default(),
                names: names.into(),
            }),
            ..snap.latency.sources()
        };
        snap.with_latency(sources, Box::default())
    } else {
        snap
    };
    let limiter = with_rrl.then(|| {
        let mut rrl = config.server.rrl.clone();
        rrl.enabled = true;
        rrl.responses_per_second = 1_000_000;
        rrl.nxdomains_per_second = 1_000_000;
        rrl.referrals_per_second = 1_000_000;
        rrl.errors_per_second = 1_000_000;
        meridian::dns::rrl::Limiter::new(&rrl)
    });
    let clients: Vec<IpAddr> = (0..1024u32)
        .map(|i| IpAddr::from(std::net::Ipv4Addr::from(0xc612_0001 + (i << 8))))
        .collect();
    let subnets = [
        "8.8.8.0",
        "217.0.0.0",
        "81.2.69.0",
        "90.0.0.0",
        "133.11.0.0",
        "14.139.0.0",
        "1.120.0.0",
        "200.160.2.0",
        "165.21.0.0",
        "41.0.0.0",
        "5.255.255.0",
        "103.4.0.0",
    ];
    let mut queries = Vec::new();
    let mut id = 1u16;
    let mut push = |name: &str, qtype: &str, ecs: Option<(&str, u8)>| {
        let ecs = ecs.map(|(a, p)| (a.parse::<IpAddr>().unwrap(), p));
        let q = meridian::dns::build_query(name, qtype, ecs, id).unwrap();
        queries.push(if dnssec_ok { with_do(&q) } else { q });
        id = id.wrapping_add(1);
    };
    if let Some(service) = &service {
        for s in subnets {
            push(&format!("{service}.bench.example."), "A", Some((s, 24)));
        }
    }
    for s in subnets.iter().filter(|_| service.is_none()) {
        push("www.gslb.example.com.", "A", Some((s, 24)));
        push("WwW.gslb.example.com.", "AAAA", Some((s, 24)));
        push("app.gslb.example.com.", "A", Some((s, 24)));
    }
    if service.is_none() {
        for name in [
            "mail.gslb.example.com.",
            "ns1.gslb.example.com.",
            "gslb.example.com.",
        ] {
            push(name, "A", None);
        }
        push("gslb.example.com.", "SOA", None);
        push("gslb.example.com.", "MX", None);
        if nxdomain {
            push("nope.gslb.example.com.", "A", None);
            push(
                "nothing.here.gslb.example.com.",
                "AAAA",
                Some(("8.8.8.0", 24)),
            );
        }
    }
    let src: IpAddr = "127.0.0.1".parse().unwrap();
    let mut bytes = 0usize;
    let start = Instant::now();
    let mut batch = None;
    let mut tally = None;
    for i in 0..iterations {
        let q = &queries[i % queries.len()];
        if reuse {
            let _ = meridian::dns::handle_observed(
                &snap,
                q,
                src,
                meridian::dns::Transport::Udp,
                &mut reused,
                &mut seen,
            );
            if with_metrics {
                if i % 32 == 0 {
                    drop(tally.take()); // unlock before locking again
                    tally = Some(shard.tally(&snap));
                }
                if let Some(t) = &mut tally {
                    t.count(&seen, &reused);
                }
            }
            bytes += reused.len();
            continue;
        }
        let mut r = meridian::dns::handle(&snap, q, src, meridian::dns::Transport::Udp);
        if let (Some(l), Some(out)) = (&limiter, r.as_mut()) {
            if i % 32 == 0 {
                drop(batch.take()); // release the old settings guard first
                batch = l.batch();
            }
            let client = clients[(i / queries.len()) % clients.len()];
            if let Some(b) = &batch {
                assert!(b.check(client, out, false), "no limit is hit");
            }
        }
        bytes += r.map_or(0, |r| r.len());
    }
    drop(tally);
    if let Some(l) = &limiter {
        assert_eq!(l.stats(), meridian::dns::rrl::RrlStats::default());
    }
    if with_metrics {
        let text = metrics.encode();
        assert!(text.contains("meridian_dns_requests_total"), "counted");
    }
    let elapsed = start.elapsed();
    eprintln!(
        "{} queries ({} distinct{}{}{}), {:.0} ns/query, {} response bytes",
        iterations,
        queries.len(),
        if with_rrl { ", with RRL" } else { "" },
        if signed { ", signed" } else { "" },
        if dnssec_ok { ", DO" } else { "" },
        elapsed.as_nanos() as f64 / iterations as f64,
        bytes
    );
}

/// Writes into `dir` a copy of `root`'s `meridian.toml` and example zone,
/// the zone signed with a fresh key; returns the config's path.
fn signed_copy(root: &std::path::Path, dir: &std::path::Path) -> std::path::PathBuf {
    signed_example::write_signed_example_zone(root, dir);
    std::fs::copy(root.join("meridian.toml"), dir.join("meridian.toml")).unwrap();
    dir.join("meridian.toml")
}
