use super::*;

fn ids(v: &[u16]) -> Vec<DcId> {
    v.iter().map(|&i| DcId(i)).collect()
}

#[test]
fn choose_filters_by_health_and_caps() {
    let order = ids(&[2, 0, 1]);
    let all = choose(&order, 1, |_| true);
    assert_eq!(all.dcs(), &ids(&[2])[..]);
    assert!(!all.degraded && !all.all_down);
    let failover = choose(&order, 1, |d| d != DcId(2));
    assert_eq!(failover.dcs(), &ids(&[0])[..]);
    assert!(failover.degraded);
    let two = choose(&order, 2, |d| d != DcId(0));
    assert_eq!(two.dcs(), &ids(&[2, 1])[..]);
    assert!(two.degraded, "differs from the healthy answer [2, 0]");
    let none = choose(&order, 2, |_| false);
    assert!(none.all_down && none.degraded);
    assert_eq!(
        none.dcs(),
        &ids(&[2, 0])[..],
        "the healthy choice, for fail-open"
    );
    let short = choose(&ids(&[1]), 3, |_| true);
    assert_eq!(short.dcs(), &ids(&[1])[..]);
    assert!(!short.degraded);
}

//------------ Building plans from zone text -----------------------------------

use std::net::IpAddr;
use std::path::Path;

use crate::health::{Observed, Override};
use crate::model::CountryTable;

/// A zone with datacenters `d0`..`d{n-1}` (one address each) and one
/// service `svc` over all of them with the given extra keys.
fn zone_text(n: usize, service: &str) -> String {
    let mut z = String::from(
        "origin = \"t.test.\"\nns = [\"ns.t.test.\"]\n[soa]\nrname = \"h.t.test.\"\nserial = 1\n\
         [records]\nns = [{ type = \"A\", value = \"192.0.2.53\" }]\n",
    );
    for i in 0..n {
        z.push_str(&format!(
            "[datacenters.d{i}]\nlocation = [{}.0, {}.0]\naddresses = [\"192.0.2.{}\"]\n",
            i * 5,
            i * 7,
            i + 1
        ));
    }
    let dcs: Vec<String> = (0..n).map(|i| format!("\"d{i}\"")).collect();
    z.push_str(&format!(
        "[services.svc]\ndatacenters = [{}]\n{service}\n",
        dcs.join(", ")
    ));
    z
}

fn plan(n: usize, service: &str) -> Plan {
    let zone = crate::config::parse_zone(Path::new("t.toml"), &zone_text(n, service))
        .unwrap_or_else(|e| panic!("{e}"));
    Plan::build(&zone, &zone.services[0], None, &CountryTable::new())
}

fn client(s: &str) -> Client {
    Client {
        addr: s.parse().unwrap(),
    }
}

/// splitmix64 as a plain sequence, for fixed-seed draws.
fn draws(seed: u64) -> impl Iterator<Item = u64> {
    let mut x = seed;
    std::iter::from_fn(move || {
        x = weighted::mix(x);
        Some(x)
    })
}

fn health(states: &[(Observed, Option<Override>)]) -> Vec<DcHealth> {
    states
        .iter()
        .map(|&(observed, forced)| DcHealth {
            observed,
            forced,
            ..DcHealth::UP
        })
        .collect()
}

const UP: (Observed, Option<Override>) = (Observed::Up, None);
const DOWN: (Observed, Option<Override>) = (Observed::Down, None);
const DRAINED: (Observed, Option<Override>) = (Observed::Up, Some(Override::Drain));

//------------ Weighted ---------------------------------------------------------

/// Pearson's chi-square statistic of `counts` against `expected` shares.
fn chi_square(counts: &[u64], shares: &[f64]) -> f64 {
    let total: u64 = counts.iter().sum();
    counts
        .iter()
        .zip(shares)
        .map(|(&c, &p)| {
            let e = total as f64 * p;
            (c as f64 - e).powi(2) / e
        })
        .sum()
}

#[test]
fn weighted_shares_follow_the_weights() {
    let p = plan(
        4,
        "policy = \"weighted\"\nweights = { d0 = 5, d1 = 3, d2 = 2, d3 = 0 }",
    );
    let all_up = health(&[UP; 4]);
    let mut counts = [0u64; 4];
    for e in draws(0x5eed).take(100_000) {
        let d = p.decide(&client("192.0.2.1"), &all_up, e, &mut ());
        counts[d.dcs()[0].index()] += 1;
        assert_eq!(d.scope, 0, "the answer does not depend on the client");
        assert!(!d.choice.degraded);
    }
    assert_eq!(counts[3], 0, "the standby is not used while others are up");
    // 2 degrees of freedom: 13.82 is the 99.9th percentile, so a correct
    // sampler fails this with probability 0.001 for an unlucky seed, and
    // the seed is fixed.
    let x2 = chi_square(&counts[..3], &[0.5, 0.3, 0.2]);
    assert!(x2 < 13.82, "chi-square {x2:.2} for {counts:?}");

    // One weighted datacenter down: the others keep their relative shares
    // (5:2), and the answer is degraded only when the draw hit it.
    let d1_down = health(&[UP, DOWN, UP, UP]);
    let mut counts = [0u64; 4];
    for e in draws(0xfeed).take(100_000) {
        let d = p.decide(&client("192.0.2.1"), &d1_down, e, &mut ());
        counts[d.dcs()[0].index()] += 1;
    }
    assert_eq!(counts[1] + counts[3], 0);
    let x2 = chi_square(&[counts[0], counts[2]], &[5.0 / 7.0, 2.0 / 7.0]);
    assert!(
        x2 < 10.83,
        "chi-square {x2:.2} for {counts:?} (1 dof, p = 0.001)"
    );
}

#[test]
fn the_standby_answers_only_when_every_weighted_one_is_unusable() {
    let p = plan(
        3,
        "policy = \"weighted\"\nweights = { d0 = 1, d1 = 1, d2 = 0 }\nttl = 60\ndegraded_ttl = 10",
    );
    for (states, want) in [
        ([UP, DOWN, UP], [true, false]),
        ([DRAINED, UP, UP], [false, true]),
        ([DOWN, DRAINED, UP], [false, false]),
    ] {
        let h = health(&states);
        for e in draws(7).take(2_000) {
            let d = p.decide(&client("192.0.2.1"), &h, e, &mut ());
            let dc = d.dcs()[0].index();
            if want == [false, false] {
                assert_eq!(dc, 2, "only the standby is left");
                assert_eq!(d.ttl, 10, "degraded");
            } else {
                assert!(want[dc.min(1)] && dc < 2, "{states:?} answered d{dc}");
            }
        }
    }
}

//------------ Sticky ---------------------------------------------------------

#[test]
fn sticky_moves_only_the_clients_of_a_failed_datacenter() {
    let p = plan(5, "policy = \"sticky\"");
    let up = health(&[UP; 5]);
    let nets: Vec<Client> = (0..10_000u32)
        .map(|i| Client {
            addr: IpAddr::from((0x0a00_0000 | (i << 8)).to_be_bytes()),
        })
        .collect();
    let before: Vec<DcId> = nets
        .iter()
        .map(|c| p.decide(c, &up, 0, &mut ()).dcs()[0])
        .collect();
    // Every address of a /24 gets its network's answer, and the scope says so.
    let d = p.decide(&client("10.0.1.77"), &up, 99, &mut ());
    assert_eq!(d.dcs()[0], before[1]);
    assert_eq!(d.scope, 24);
    // Shares are even: each of 5 gets 2,000 ± 10 %.
    let mut counts = [0usize; 5];
    for dc in &before {
        counts[dc.index()] += 1;
    }
    assert!(
        counts.iter().all(|&c| (1_800..=2_200).contains(&c)),
        "{counts:?}"
    );

    let mut without_2 = up.clone();
    without_2[2] = DcHealth {
        observed: Observed::Down,
        ..DcHealth::UP
    };
    for (c, &was) in nets.iter().zip(&before) {
        let now = p.decide(c, &without_2, 0, &mut ()).dcs()[0];
        if was == DcId(2) {
            assert_ne!(now, DcId(2));
        } else {
            assert_eq!(now, was, "{:?} moved though its datacenter is up", c.addr);
        }
    }
    for (c, &was) in nets.iter().zip(&before) {
        assert_eq!(
            p.decide(c, &up, 0, &mut ()).dcs()[0],
            was,
            "returns after recovery"
        );
    }
    // IPv6 hashes the /56.
    let v6 = p.decide(&client("2001:db8:0:1200::"), &up, 0, &mut ());
    let same = p.decide(&client("2001:db8:0:12ff::"), &up, 0, &mut ());
    assert_eq!((v6.scope, v6.dcs()), (56, same.dcs()));
}

#[test]
fn sticky_weights_scale_the_share_of_networks() {
    let p = plan(2, "policy = \"sticky\"\nweights = { d0 = 3, d1 = 1 }");
    let up = health(&[UP; 2]);
    let mut counts = [0u64; 2];
    for i in 0..20_000u32 {
        let c = Client {
            addr: IpAddr::from((0x0b00_0000 | (i << 8)).to_be_bytes()),
        };
        counts[p.decide(&c, &up, 0, &mut ()).dcs()[0].index()] += 1;
    }
    let x2 = chi_square(&counts, &[0.75, 0.25]);
    assert!(x2 < 10.83, "chi-square {x2:.2} for {counts:?}");
}

//------------ Chains and rotation -------------------------------------------------

#[test]
fn a_preferred_group_is_weighted_and_the_rest_is_in_order() {
    let p = plan(4, "policy = [{ prefer = [\"d2\", \"d3\"] }, \"weighted\"]");
    let mut seen = [false; 4];
    for e in draws(3).take(1_000) {
        let mut t = Trace::default();
        let d = p.decide(&client("192.0.2.1"), &health(&[UP; 4]), e, &mut t);
        seen[d.dcs()[0].index()] = true;
        let ranking = &t.stages[1].order;
        assert_eq!(t.stages[1].first_tier, 2);
        assert_eq!(
            &ranking[2..],
            &[DcId(0), DcId(1)],
            "secondary in config order"
        );
    }
    assert_eq!(seen, [false, false, true, true]);
    let d = p.decide(
        &client("192.0.2.1"),
        &health(&[UP, UP, DOWN, DRAINED]),
        1,
        &mut (),
    );
    assert_eq!((d.dcs(), d.choice.degraded), (&[DcId(0)][..], true));
}

#[test]
fn nearest_keeps_the_first_n_and_max_answers_takes_several() {
    let p = plan(
        4,
        "policy = [\"failover\", { nearest = 2 }, \"weighted\"]\nmax_answers = 3",
    );
    let d = p.decide(&client("192.0.2.1"), &health(&[UP; 4]), 11, &mut ());
    let mut first_two = d.dcs()[..2].to_vec();
    first_two.sort();
    assert_eq!(first_two, [DcId(0), DcId(1)]);
    assert_eq!(d.dcs()[2], DcId(2));
}

#[test]
fn rotation_is_per_query_and_off_when_disabled() {
    let on = plan(2, "policy = \"failover\"");
    let off = plan(2, "policy = \"failover\"\nrotate = false");
    let starts: std::collections::HashSet<usize> = draws(5)
        .take(200)
        .map(|e| {
            on.decide(&client("192.0.2.1"), &[], e, &mut ())
                .rotate_by(4)
        })
        .collect();
    assert_eq!(starts.len(), 4, "every start position occurs");
    assert!(draws(5).take(200).all(|e| {
        off.decide(&client("192.0.2.1"), &[], e, &mut ())
            .rotate_by(4)
            == 0
    }));
}

//------------ Property: never a down datacenter while a usable one exists ------

mod property {
    use proptest::prelude::*;

    use super::*;

    fn step() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("\"failover\"".to_string()),
            Just("\"weighted\"".to_string()),
            Just("\"sticky\"".to_string()),
            (1usize..5).prop_map(|n| format!("{{ nearest = {n} }}")),
            (0.0f64..3000.0).prop_map(|km| format!("{{ within_km = {km:.0} }}")),
            (0usize..4).prop_map(|i| format!("{{ prefer = [\"d{i}\"] }}")),
        ]
    }

    fn state() -> impl Strategy<Value = (Observed, Option<Override>)> {
        (
            prop_oneof![
                Just(Observed::Up),
                Just(Observed::Down),
                Just(Observed::Unknown)
            ],
            prop_oneof![
                3 => Just(None),
                1 => Just(Some(Override::Drain)),
                1 => Just(Some(Override::ForceUp))
            ],
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn no_unusable_answer_while_a_usable_one_exists(
            n in 4usize..7,
            steps in proptest::collection::vec(step(), 1..4),
            weights in proptest::collection::vec(0u32..4, 7),
            max_answers in 1usize..4,
            assume_down in any::<bool>(),
            states in proptest::collection::vec(state(), 7),
            addr in any::<u32>(),
            entropy in any::<u64>(),
        ) {
            let mut weights = weights[..n].to_vec();
            weights[0] = weights[0].max(1);
            let w: Vec<String> = weights.iter().enumerate().map(|(i, w)| format!("d{i} = {w}")).collect();
            let balances = steps.iter().any(|s| s.contains("weighted") || s.contains("sticky"));
            let service = format!(
                "policy = [{}]\nmax_answers = {max_answers}\nwarmup = \"{}\"\n{}",
                steps.join(", "),
                if assume_down { "assume_down" } else { "assume_up" },
                if balances { format!("weights = {{ {} }}", w.join(", ")) } else { String::new() },
            );
            let p = plan(n, &service);
            let h = health(&states[..n]);
            let warmup = if assume_down { crate::model::Warmup::AssumeDown } else { crate::model::Warmup::AssumeUp };
            let usable: Vec<bool> = h.iter().map(|s| s.usable(warmup)).collect();
            let c = Client { addr: IpAddr::from(addr.to_be_bytes()) };
            let d = p.decide(&c, &h, entropy, &mut ());
            let dcs = d.dcs();
            prop_assert!(!dcs.is_empty() && dcs.len() <= max_answers);
            prop_assert!(dcs.iter().all(|dc| dc.index() < n), "inside the service");
            let mut distinct = dcs.to_vec();
            distinct.sort();
            distinct.dedup();
            prop_assert_eq!(distinct.len(), dcs.len());
            let usable_count = usable.iter().filter(|&&u| u).count();
            if usable_count > 0 {
                prop_assert!(!d.choice.all_down);
                prop_assert!(dcs.iter().all(|dc| usable[dc.index()]), "{:?} with {:?}", dcs, usable);
                prop_assert_eq!(dcs.len(), max_answers.min(usable_count));
            } else {
                prop_assert!(d.choice.all_down && d.choice.degraded);
            }
            // The same inputs give the same decision.
            prop_assert_eq!(p.decide(&c, &h, entropy, &mut ()), d);
        }
    }
}

//------------ Latency -----------------------------------------------------------

mod latency {
    use super::*;
    use crate::latency::table::{Cell, KeyTableBuilder, RowMeta, v4_key};
    use crate::latency::{LatencyView, Model, Rum, Sources};

    /// A RUM row: network, level prefix, (datacenter, rtt ms), incumbent.
    type Row<'a> = (&'a str, u8, &'a [(usize, f64)], Option<usize>);

    fn view(n: usize, rows: &[Row<'_>]) -> LatencyView {
        let names: Vec<String> = (0..n).map(|i| format!("d{i}")).collect();
        let mut fine = KeyTableBuilder::new(n);
        let mut coarse = KeyTableBuilder::new(n);
        for &(net, prefix, cells, incumbent) in rows {
            let mut row = vec![Cell::default(); n];
            for &(dc, rtt) in cells {
                row[dc] = Cell::of(rtt, 20.0);
            }
            let meta = RowMeta {
                incumbent: incumbent.map_or(u16::MAX, |i| i as u16),
                since: 1000,
                last_seen: 2000,
            };
            let b = if prefix == 24 { &mut fine } else { &mut coarse };
            b.push(v4_key(net.parse().unwrap(), prefix), &row, meta);
        }
        let rum = Rum {
            fine: fine.finish(),
            coarse: coarse.finish(),
            names: names.into(),
        };
        let zone =
            crate::config::parse_zone(Path::new("t.toml"), &zone_text(n, "policy = \"latency\""))
                .unwrap_or_else(|e| panic!("{e}"));
        LatencyView::new(
            Sources {
                model: Model::default(),
                rum: Arc::new(rum),
                ..Sources::default()
            },
            std::iter::once(&zone.datacenters[..]),
            Box::default(),
        )
    }

    fn decide(p: &Plan, v: &LatencyView, addr: &str) -> (Vec<u16>, u8) {
        let latency = Latency { view: v, zone: 0 };
        let mut trace = Trace::default();
        let d = p.decide_with(&client(addr), &[], latency, 0, &mut trace);
        let stage = &trace.stages[0];
        (stage.order.iter().map(|d| d.0).collect(), d.scope)
    }

    #[test]
    fn the_client_networks_measurements_rank_the_datacenters() {
        let p = plan(3, "policy = \"latency\"\nmax_answers = 3");
        let v = view(
            3,
            &[("11.1.2.0", 24, &[(0, 40.0), (1, 90.0), (2, 12.5)], None)],
        );
        assert_eq!(decide(&p, &v, "11.1.2.77"), (vec![2, 0, 1], 24));
        // A neighbour without measurements keeps config order (no other
        // level has data, and the plan has no GeoIP table), with the
        // widest scope that leaves 11.1.2.0/24 out.
        assert_eq!(decide(&p, &v, "11.1.3.1"), (vec![0, 1, 2], 24));
        assert_eq!(decide(&p, &v, "11.1.200.1"), (vec![0, 1, 2], 17));
    }

    #[test]
    fn missing_datacenters_are_filled_from_the_coarser_level() {
        let p = plan(3, "policy = \"latency\"");
        let v = view(
            3,
            &[
                ("11.1.2.0", 24, &[(1, 50.0)], None),
                ("11.1.0.0", 16, &[(0, 60.0), (1, 10.0), (2, 30.0)], None),
            ],
        );
        // d1 from the /24 (50), d0 and d2 from the /16 (60, 30).
        assert_eq!(decide(&p, &v, "11.1.2.1"), (vec![2, 1, 0], 24));
        // Elsewhere in the /16 the /16 decides alone: d1 10 ms. The scope
        // still leaves out the /24 with its own data.
        assert_eq!(decide(&p, &v, "11.1.3.1"), (vec![1, 2, 0], 24));
        assert_eq!(decide(&p, &v, "11.1.129.1"), (vec![1, 2, 0], 17));
    }

    #[test]
    fn the_assigned_datacenter_stays_first_within_the_margins() {
        let p = plan(2, "policy = \"latency\"");
        // Default margins: better by more than 10 ms and 10 %.
        let near = view(2, &[("11.1.2.0", 24, &[(0, 50.0), (1, 41.0)], Some(0))]);
        assert_eq!(decide(&p, &near, "11.1.2.1").0, [0, 1]);
        let pct = view(2, &[("11.1.2.0", 24, &[(0, 500.0), (1, 460.0)], Some(0))]);
        assert_eq!(
            decide(&p, &pct, "11.1.2.1").0,
            [0, 1],
            "40 ms is under 10 %"
        );
        let far = view(2, &[("11.1.2.0", 24, &[(0, 50.0), (1, 39.0)], Some(0))]);
        assert_eq!(decide(&p, &far, "11.1.2.1").0, [1, 0]);
        let none = view(2, &[("11.1.2.0", 24, &[(0, 50.0), (1, 41.0)], None)]);
        assert_eq!(decide(&p, &none, "11.1.2.1").0, [1, 0]);
    }

    #[test]
    fn every_client_inside_the_scope_gets_the_same_ranking() {
        let p = plan(3, "policy = \"latency\"");
        let v = view(
            3,
            &[
                ("11.1.2.0", 24, &[(0, 40.0), (1, 90.0), (2, 12.5)], None),
                ("11.1.9.0", 24, &[(1, 5.0)], None),
                ("11.1.0.0", 16, &[(0, 9.0), (1, 20.0), (2, 30.0)], None),
                ("11.7.0.0", 16, &[(2, 9.0)], None),
            ],
        );
        // Walk 11.0.0.0 - 11.15.255.255 in steps of 64 addresses: every
        // client in a returned scope ranks like the client that got it.
        for i in 0..(1u32 << 14) {
            let a = std::net::Ipv4Addr::from((11 << 24) | (i << 6));
            let (order, scope) = decide(&p, &v, &a.to_string());
            let block = u32::from(a) & (!0u32).checked_shl(32 - u32::from(scope)).unwrap_or(0);
            for probe in [block, block | ((1u32 << (32 - u32::from(scope))) - 1)] {
                let other = std::net::Ipv4Addr::from(probe).to_string();
                assert_eq!(decide(&p, &v, &other).0, order, "{a} /{scope} vs {other}");
            }
        }
    }
}
