//! The common query path does not allocate: a counting global allocator
//! watches `handle_into` answer geo, static, NXDOMAIN and CNAME queries
//! with a reused response buffer.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn answering_common_queries_does_not_allocate() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let (_, snap) = meridian::load(&root.join("meridian.toml")).unwrap();
    let ecs = |a: &str, p: u8| Some((a.parse::<IpAddr>().unwrap(), p));
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
    let src: IpAddr = "127.0.0.1".parse().unwrap();
    let mut out = Vec::with_capacity(4096);
    for transport in [meridian::dns::Transport::Udp, meridian::dns::Transport::Tcp] {
        for q in &queries {
            let before = ALLOCATIONS.load(Ordering::Relaxed);
            assert!(meridian::dns::handle_fast(
                &snap, q, src, transport, &mut out
            ));
            let after = ALLOCATIONS.load(Ordering::Relaxed);
            assert_eq!(
                after,
                before,
                "allocated while answering {:?}",
                meridian::dns::summarize(&out)
            );
        }
    }
}
