//! The common query path does not allocate: a counting global allocator
//! watches `handle_into` answer geo, static, NXDOMAIN and CNAME queries
//! with a reused response buffer.

#[path = "support/signed_example.rs"]
mod signed_example;
use signed_example::with_do;

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::IpAddr;

struct Counting;

thread_local! {
    /// This thread's allocations: tests run in parallel, and another
    /// test's loading must not count against this one.
    static MINE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn mine() -> usize {
    MINE.with(std::cell::Cell::get)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        MINE.with(|m| m.set(m.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        MINE.with(|m| m.set(m.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// An ECS option for `build_query`: address and source prefix.
fn ecs(addr: &str, prefix: u8) -> Option<(IpAddr, u8)> {
    Some((addr.parse().unwrap(), prefix))
}

/// Answers each of `queries` from 127.0.0.1 over UDP, then over TCP, on
/// the fast path into one reused buffer, checks that no answer allocated
/// on this thread, and hands each response to `check`.
fn answer_without_allocating(
    snap: &meridian::snapshot::Snapshot,
    queries: &[Vec<u8>],
    mut check: impl FnMut(&[u8]),
) {
    let src: IpAddr = "127.0.0.1".parse().unwrap();
    let mut out = Vec::with_capacity(4096);
    for transport in [meridian::dns::Transport::Udp, meridian::dns::Transport::Tcp] {
        for q in queries {
            let before = mine();
            assert!(meridian::dns::handler::handle_fast_at(
                snap,
                q,
                src,
                transport,
                1_800_000_000,
                &mut out
            ));
            assert_eq!(
                mine(),
                before,
                "allocated while answering {:?}",
                meridian::dns::summarize(&out)
            );
            check(&out);
        }
    }
}

#[test]
fn answering_common_queries_does_not_allocate() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let (_, snap) = meridian::load(&root.join("meridian.toml")).unwrap();
    let queries: Vec<Vec<u8>> = [
        ("www.gslb.example.com.", "A", ecs("8.8.8.0", 24)),
        ("WWW.gslb.example.com.", "AAAA", ecs("2001:4860::", 56)),
        ("app.gslb.example.com.", "A", ecs("133.11.0.0", 24)),
        ("mail.gslb.example.com.", "A", None),
        ("gslb.example.com.", "NS", None),
        ("nope.gslb.example.com.", "A", ecs("1.120.0.0", 24)),
        ("example.org.", "A", None),
    ]
    .iter()
    .map(|(n, t, e)| meridian::dns::build_query(n, t, *e, 7).unwrap())
    .collect();
    answer_without_allocating(&snap, &queries, |_| {});
}

#[test]
fn rate_limiting_does_not_allocate() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let (config, snap) = meridian::load(&root.join("meridian.toml")).unwrap();
    let mut rrl = config.server.rrl.clone();
    rrl.responses_per_second = 5;
    rrl.slip = 2;
    let limiter = meridian::dns::rrl::Limiter::new(&rrl);
    let queries: Vec<Vec<u8>> = [
        ("www.gslb.example.com.", "A"),
        ("gslb.example.com.", "NS"),
        ("nope.gslb.example.com.", "A"),
        ("example.org.", "A"),
    ]
    .iter()
    .map(|(n, t)| meridian::dns::build_query(n, t, None, 7).unwrap())
    .collect();
    let src: IpAddr = "192.0.2.1".parse().unwrap();
    let mut out = Vec::with_capacity(4096);
    let mut withheld = 0;
    // A thread's first settings load registers it with arc-swap, once.
    drop(limiter.batch());
    for q in &queries {
        // Enough to pass, drop and slip each kind.
        for _ in 0..20 {
            assert!(meridian::dns::handler::handle_fast_at(
                &snap,
                q,
                src,
                meridian::dns::Transport::Udp,
                1_800_000_000,
                &mut out
            ));
            let before = mine();
            let batch = limiter.batch().expect("on by default");
            let sent = batch.check(src, &mut out, false);
            drop(batch);
            assert_eq!(mine(), before);
            withheld += usize::from(!sent);
        }
    }
    let stats = limiter.stats();
    assert!(stats.dropped > 0 && stats.slipped > 0, "{stats:?}");
    assert_eq!(withheld as u64, stats.dropped);
}

/// DO=1 queries to a signed zone, answered from its DO=1 templates
/// (signatures copied like records), do not allocate either.
#[test]
fn answering_signed_do_queries_does_not_allocate() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    signed_example::write_signed_example_zone(root, dir.path());
    std::fs::write(dir.path().join("meridian.toml"), "zones = \"zones\"\n").unwrap();
    let (_, snap) = meridian::load(&dir.path().join("meridian.toml")).unwrap();
    let queries: Vec<Vec<u8>> = [
        ("www.gslb.example.com.", "A", ecs("8.8.8.0", 24)),
        ("WWW.gslb.example.com.", "AAAA", ecs("2001:4860::", 56)),
        ("app.gslb.example.com.", "A", ecs("133.11.0.0", 24)),
        ("mail.gslb.example.com.", "A", None),
        ("mail.gslb.example.com.", "TXT", None),
        ("gslb.example.com.", "DNSKEY", None),
    ]
    .iter()
    .map(|(n, t, e)| with_do(&meridian::dns::build_query(n, t, *e, 7).unwrap()))
    .collect();
    answer_without_allocating(&snap, &queries, |out| {
        let m = hickory_proto::op::Message::from_vec(out).unwrap();
        assert!(
            (m.answers.iter().chain(&m.authorities))
                .any(|r| r.record_type() == hickory_proto::rr::RecordType::RRSIG),
            "signed: {m:?}"
        );
    });
}

/// A zone whose DO=1 answers take the fast path's newer branches: a
/// wildcard, and a service answering with two datacenters at once.
const BRANCHES_ZONE: &str = r#"origin = "gslb.example.com."
ns = ["ns1.gslb.example.com."]

[soa]
mname = "ns1.gslb.example.com."
rname = "hostmaster.example.com."
serial = 1
minimum = 60

[records]
ns1 = [{ type = "A", value = "192.0.2.53" }]
"*.wild" = [{ type = "A", value = "192.0.2.77" }]

[datacenters.us-east]
location = [39.04, -77.49]
addresses = ["192.0.2.10", "2001:db8:10::10"]

[datacenters.eu-west]
location = [53.35, -6.26]
addresses = ["198.51.100.10", "2001:db8:20::10"]

[services.pair]
policy = "failover"
datacenters = ["eu-west", "us-east"]
max_answers = 2
ttl = 30
"#;

/// The fast path's wildcard entries, a DO=1 answer of two datacenters
/// (its RRSIGs kept for that combination) and a compact NXDOMAIN it keeps
/// after the general path signed it once: none of them allocates.
#[test]
fn answering_wildcards_combinations_and_kept_denials_does_not_allocate() {
    let dir = tempfile::tempdir().unwrap();
    signed_example::write_signed_zone(dir.path(), "gslb.example.com.", BRANCHES_ZONE);
    std::fs::write(dir.path().join("meridian.toml"), "zones = \"zones\"\n").unwrap();
    let (_, snap) = meridian::load(&dir.path().join("meridian.toml")).unwrap();
    let query = |n: &str, t: &str| meridian::dns::build_query(n, t, None, 7).unwrap();
    let denied = with_do(&query("nope.gslb.example.com.", "A"));
    // The first query for the name is signed on demand by the general
    // path, which keeps the answer for the fast path.
    let first = meridian::dns::handle_query(
        &snap,
        &denied,
        "127.0.0.1".parse().unwrap(),
        meridian::dns::Transport::Udp,
        &mut Vec::new(),
    );
    assert!(first.send);
    let queries = [
        query("a.wild.gslb.example.com.", "A"),
        query("b.c.wild.gslb.example.com.", "A"),
        with_do(&query("pair.gslb.example.com.", "A")),
        denied,
    ];
    let mut answers = Vec::new();
    answer_without_allocating(&snap, &queries, |out| {
        answers.push(hickory_proto::op::Message::from_vec(out).unwrap());
    });
    use hickory_proto::rr::RecordType;
    let count = |m: &hickory_proto::op::Message, t| {
        m.answers.iter().filter(|r| r.record_type() == t).count()
    };
    // Over UDP, then over TCP.
    assert_eq!(answers.len(), 2 * queries.len());
    for round in answers.chunks(queries.len()) {
        for m in &round[..2] {
            assert_eq!(count(m, RecordType::A), 1, "{m:?}");
        }
        let pair = &round[2];
        assert_eq!(count(pair, RecordType::A), 2, "{pair:?}");
        assert_eq!(count(pair, RecordType::RRSIG), 1, "{pair:?}");
        let denial = &round[3];
        assert!(
            (denial.authorities.iter()).any(|r| r.record_type() == RecordType::NSEC),
            "{denial:?}"
        );
    }
}

/// The serving loops' counting: each answer tallied into a metrics shard
/// as the handler saw it (zone, type, rcode, decision) allocates nothing
/// once the shard has the snapshot's layout.
#[test]
fn counting_answers_does_not_allocate() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let (_, snap) = meridian::load(&root.join("meridian.toml")).unwrap();
    let metrics = meridian::metrics::dns::DnsMetrics::default();
    let shard = metrics.shard(meridian::dns::Transport::Udp);
    let queries: Vec<Vec<u8>> = [
        ("www.gslb.example.com.", "A", ecs("8.8.8.0", 24)),
        // Without ECS, the whole chain and www's decision.
        ("app.gslb.example.com.", "AAAA", None),
        ("mail.gslb.example.com.", "A", None),
        ("nope.gslb.example.com.", "A", None),
        ("example.org.", "A", None),
    ]
    .iter()
    .map(|(n, t, e)| meridian::dns::build_query(n, t, *e, 7).unwrap())
    .collect();
    let src: IpAddr = "127.0.0.1".parse().unwrap();
    let mut out = Vec::with_capacity(4096);
    let mut seen = meridian::dns::Seen::default();
    // The shard's first tally of a snapshot lays its counters out.
    drop(shard.tally(&snap));
    for q in &queries {
        let before = mine();
        let handled = meridian::dns::handle_observed(
            &snap,
            q,
            src,
            meridian::dns::Transport::Udp,
            &mut out,
            &mut seen,
        );
        shard.tally(&snap).count(&seen, &out);
        assert_eq!(
            mine(),
            before,
            "allocated while answering and counting {:?}",
            meridian::dns::summarize(&out)
        );
        assert!(handled.send);
    }
    let answers = metrics.answers();
    let www: u64 = answers[&("gslb.example.com.".to_string(), "www".to_string())]
        .values()
        .sum();
    assert_eq!(www, 2, "{answers:?}");
}
