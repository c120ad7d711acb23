//! Memory and time of the RUM aggregator at scale (issue 8's budget:
//! 1,000,000 fine IPv4 /24 keys over 10 datacenters under 256 MiB peak
//! RSS, published tables included).
//!
//! Inserts KEYS distinct /24 keys (their /16 as the coarse key), each with
//! 6 beacons of 10 samples (one per datacenter; 5 decay just below
//! `min_samples` = 5 by publication), publishes once, then
//! publishes again while the first publication is still alive (as the
//! running server holds the current snapshot while it builds the next),
//! and prints the times, the aggregator's own estimate, the tables'
//! `memory_bytes` and VmHWM/VmRSS from `/proc/self/status` after each step.
//! With `--save DIR` it then saves the state file into DIR and loads it
//! into a fresh aggregator (after the first is dropped), timing both.
//!
//! `cargo run --release --example latency_memory -- [KEYS] [--save DIR]`

#![allow(clippy::print_stdout)]

use std::time::Instant;

use meridian::latency::rum::{AggSettings, Aggregator, Published};

const DATACENTERS: usize = 10;
const BEACONS_PER_KEY: u32 = 6;
const T0: u32 = 1_700_000_000;

/// `VmHWM` and `VmRSS` in MiB.
fn rss() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or("?".to_string(), |kb| format!("{:.1} MiB", kb / 1024.0))
    };
    format!("VmHWM {}, VmRSS {}", field("VmHWM:"), field("VmRSS:"))
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn tables(p: &Published) -> String {
    format!(
        "fine {} rows {}, coarse {} rows {}",
        p.fine.len(),
        mib(p.fine.memory_bytes()),
        p.coarse.len(),
        mib(p.coarse.memory_bytes())
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Keys are i * odd mod 2^24: distinct up to 2^24.
    let keys: usize = args
        .iter()
        .find_map(|s| s.parse().ok())
        .unwrap_or(1_000_000)
        .min(1 << 24);
    let save_dir = args
        .iter()
        .position(|a| a == "--save")
        .and_then(|i| args.get(i + 1));
    let names: Vec<String> = (0..DATACENTERS).map(|i| format!("dc-{i}")).collect();
    // Room for every fine key and every /16 (at most 65,536): no eviction.
    let settings = AggSettings {
        max_keys: keys + 65_536,
        ..AggSettings::default()
    };
    let mut agg = Aggregator::new(settings);
    agg.configure(settings, &names);
    println!("start: {}", rss());

    let key = |i: usize| (i as u64).wrapping_mul(0x9E37_79B1) & 0xFF_FFFF;
    let started = Instant::now();
    let mut samples = [(0u16, 0.0f64, 1.0f64); DATACENTERS];
    for round in 0..BEACONS_PER_KEY {
        for i in 0..keys {
            let fine = key(i);
            for (dc, s) in samples.iter_mut().enumerate() {
                let rtt = 10 + (i * 7 + dc * 13 + round as usize) % 200;
                *s = (dc as u16, rtt as f64, 1.0);
            }
            agg.add(fine, Some(fine >> 8), &samples, T0 + round);
        }
    }
    let insert = started.elapsed();
    let st = agg.stats();
    println!(
        "insert: {} adds of {DATACENTERS} samples in {:.2} s ({:.0} ns/add); fine keys {}, coarse keys {}, samples {}",
        keys * BEACONS_PER_KEY as usize,
        insert.as_secs_f64(),
        insert.as_nanos() as f64 / (keys * BEACONS_PER_KEY as usize) as f64,
        st.fine_keys,
        st.coarse_keys,
        st.samples_accepted,
    );
    println!(
        "aggregator estimate: {} ({:.1} bytes/key); {}",
        mib(st.bytes),
        st.bytes as f64 / (st.fine_keys + st.coarse_keys) as f64,
        rss()
    );

    let started = Instant::now();
    let first = agg.publish(T0 + 10);
    println!(
        "publish 1: {:.3} s; {}; {}",
        started.elapsed().as_secs_f64(),
        tables(&first),
        rss()
    );
    let started = Instant::now();
    let second = agg.publish(T0 + 20);
    println!(
        "publish 2 (publish 1 alive): {:.3} s; {}; {}",
        started.elapsed().as_secs_f64(),
        tables(&second),
        rss()
    );
    let total = agg.stats().bytes
        + [&first, &second]
            .iter()
            .map(|p| p.fine.memory_bytes() + p.coarse.memory_bytes())
            .sum::<usize>();
    println!("estimate, aggregator + two publications: {}", mib(total));
    drop(first);
    drop(second);

    if let Some(dir) = save_dir {
        let path = std::path::Path::new(dir).join("latency-memory.bin");
        let started = Instant::now();
        if let Err(e) = agg.save(&path) {
            println!("save: {e}");
            return;
        }
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        println!(
            "save: {:.2} s, {} bytes",
            started.elapsed().as_secs_f64(),
            size
        );
        drop(agg);
        let mut fresh = Aggregator::new(settings);
        fresh.configure(settings, &names);
        let started = Instant::now();
        let loaded = fresh.load(&path, T0 + 30);
        println!(
            "load: {:.2} s, {loaded:?} entries; {}",
            started.elapsed().as_secs_f64(),
            rss()
        );
        let _ = std::fs::remove_file(&path);
    }
}
