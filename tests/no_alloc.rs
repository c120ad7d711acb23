//! The common query path does not allocate: a counting global allocator
//! watches `handle_into` answer geo, static, NXDOMAIN and CNAME queries
//! with a reused response buffer.

#[path = "support/signed_example.rs"]
mod signed_example;

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
    check: impl Fn(&[u8]),
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
    .map(|(n, t, e)| {
        let q = meridian::dns::build_query(n, t, *e, 7).unwrap();
        let mut m = hickory_proto::op::Message::from_vec(&q).unwrap();
        m.edns.as_mut().unwrap().set_dnssec_ok(true);
        m.to_vec().unwrap()
    })
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
