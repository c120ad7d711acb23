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
