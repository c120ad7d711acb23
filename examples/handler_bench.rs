//! In-process cost of answering: runs the real handler over a fixed mix of
//! queries (geo with ECS from many subnets, static, NXDOMAIN, CNAME→geo)
//! and prints nanoseconds per query. Deterministic, so it also works under
//! `valgrind --tool=callgrind` for instruction counts.
//!
//! `cargo run --release --example handler_bench -- [ITERATIONS]`

use std::net::IpAddr;
use std::time::Instant;

fn main() {
    let iterations: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let (_, snap) = meridian::load(&root.join("meridian.toml")).expect("shipped config");
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
        queries.push(meridian::dns::build_query(name, qtype, ecs, id).unwrap());
        id = id.wrapping_add(1);
    };
    for s in subnets {
        push("www.gslb.example.com.", "A", Some((s, 24)));
        push("WwW.gslb.example.com.", "AAAA", Some((s, 24)));
        push("app.gslb.example.com.", "A", Some((s, 24)));
    }
    for name in [
        "mail.gslb.example.com.",
        "ns1.gslb.example.com.",
        "gslb.example.com.",
    ] {
        push(name, "A", None);
    }
    push("gslb.example.com.", "SOA", None);
    push("gslb.example.com.", "MX", None);
    push("nope.gslb.example.com.", "A", None);
    push(
        "nothing.here.gslb.example.com.",
        "AAAA",
        Some(("8.8.8.0", 24)),
    );
    let src: IpAddr = "127.0.0.1".parse().unwrap();
    let mut bytes = 0usize;
    let start = Instant::now();
    for i in 0..iterations {
        let q = &queries[i % queries.len()];
        let r = meridian::dns::handle(&snap, q, src, meridian::dns::Transport::Udp);
        bytes += r.map_or(0, |r| r.len());
    }
    let elapsed = start.elapsed();
    eprintln!(
        "{} queries ({} distinct), {:.0} ns/query, {} response bytes",
        iterations,
        queries.len(),
        elapsed.as_nanos() as f64 / iterations as f64,
        bytes
    );
}
