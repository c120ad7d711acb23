//! The static latency map (`meridian::latency::map::parse`): any text must
//! load or be refused with an error naming the file, never panic. A map
//! that loads must answer, at the first, middle and last address of every
//! network it lists and just outside each, what the longest listed prefix
//! holding that address says (read here from the TOML, independently of
//! the loader), and the block of the scope it returns must give the same
//! answer at both ends and never span the IPv4-mapped IPv6 range. Text
//! the loader's line reader takes must read the same through TOML.

#![no_main]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use meridian::geo::table::{addr_bits, prefix_range};
use meridian::latency::map::{LatencyMap, STATIC_SAMPLES, fast_path_agrees, parse};
use meridian::latency::table::Cell;

/// Enough to check every network against every other.
const MAX_CHECKED: usize = 300;

/// A listed network: family, block bounds, prefix, RTTs in tenths by name.
struct Listed {
    v6: bool,
    start: u128,
    end: u128,
    prefix: u8,
    tenths: BTreeMap<String, u16>,
}

/// The networks as the file lists them, read with the plain TOML parser.
fn listed(text: &str) -> Vec<Listed> {
    let doc: toml::Table = text.parse().expect("a map that loads is TOML");
    let Some(nets) = doc.get("networks").and_then(|n| n.as_array()) else {
        return Vec::new();
    };
    nets.iter()
        .map(|n| {
            let net: IpNet = n["network"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("a loaded network is CIDR");
            let bits = if net.addr().is_ipv6() { 128 } else { 32 };
            let (start, end) = prefix_range(bits, addr_bits(net.addr()), net.prefix_len());
            let tenths = n["rtt_ms"]
                .as_table()
                .expect("rtt_ms is a table")
                .iter()
                .map(|(dc, v)| {
                    let ms = v
                        .as_float()
                        .or_else(|| v.as_integer().map(|i| i as f64))
                        .expect("a loaded RTT is a number");
                    (dc.clone(), Cell::of(ms, 1.0).rtt_tenths)
                })
                .collect();
            Listed {
                v6: net.addr().is_ipv6(),
                start,
                end,
                prefix: net.prefix_len(),
                tenths,
            }
        })
        .collect()
}

/// The RTTs by name the longest listed prefix holding `a` gives (`None`:
/// no network, or one with an empty table).
fn naive(nets: &[Listed], v6: bool, a: u128) -> Option<&BTreeMap<String, u16>> {
    nets.iter()
        .filter(|n| n.v6 == v6 && n.start <= a && a <= n.end)
        .max_by_key(|n| n.prefix)
        .map(|n| &n.tenths)
        .filter(|t| !t.is_empty())
}

/// What the map answers at `a`, by name, and the scope.
fn answer(m: &LatencyMap, v6: bool, a: u128) -> (Option<BTreeMap<String, u16>>, u8) {
    let ip = if v6 {
        IpAddr::V6(a.into())
    } else {
        IpAddr::V4((a as u32).into())
    };
    let (row, scope) = m.lookup(ip);
    let row = row.map(|cells| {
        assert_eq!(cells.len(), m.names().len(), "a row has one cell per name");
        cells
            .iter()
            .zip(m.names())
            .filter(|(c, _)| **c != Cell::default())
            .map(|(c, n)| {
                assert_eq!(c.samples, STATIC_SAMPLES);
                (n.clone(), c.rtt_tenths)
            })
            .collect()
    });
    (row, scope)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    assert_ne!(
        fast_path_agrees(text),
        Some(false),
        "the line reader and the TOML parser read this differently"
    );
    let file = Path::new("fuzz.toml");
    let m = match parse(text, file) {
        Ok(m) => m,
        Err(e) => {
            assert_eq!(e.file, file, "the error names the file");
            assert!(!e.reason.is_empty());
            return;
        }
    };
    let nets = listed(text);
    assert_eq!(m.len(), nets.len());
    assert!(
        m.names().windows(2).all(|w| w[0] < w[1]),
        "names sorted, unique"
    );
    if nets.len() > MAX_CHECKED {
        return;
    }
    let mapped = prefix_range(128, 0xffff_u128 << 32, 96);
    for n in &nets {
        let space_end = if n.v6 {
            u128::MAX
        } else {
            u128::from(u32::MAX)
        };
        let mid = n.start + (n.end - n.start) / 2;
        let around = [
            n.start.checked_sub(1),
            n.end.checked_add(1).filter(|&a| a <= space_end),
        ];
        for a in [n.start, mid, n.end]
            .into_iter()
            .chain(around.into_iter().flatten())
        {
            let want = naive(&nets, n.v6, a);
            let (got, scope) = answer(&m, n.v6, a);
            assert_eq!(got.as_ref(), want, "at {a:#x} (IPv6: {})", n.v6);
            let bits = if n.v6 { 128 } else { 32 };
            let (lo, hi) = prefix_range(bits, a, scope);
            for x in [lo, hi] {
                assert_eq!(
                    naive(&nets, n.v6, x),
                    want,
                    "scope /{scope} of {a:#x} holds {x:#x}, answered otherwise"
                );
                assert_eq!(
                    answer(&m, n.v6, x),
                    (got.clone(), scope),
                    "one block, one answer"
                );
            }
            if n.v6 && !(mapped.0 <= a && a <= mapped.1) {
                assert!(
                    hi < mapped.0 || lo > mapped.1,
                    "/{scope} spans the IPv4-mapped range"
                );
            }
        }
    }
});
