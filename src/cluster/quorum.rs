//! The vote rule: from the live observers' views of one datacenter to the
//! state every instance answers with. Pure; no clock, no I/O.
//!
//! Each observer (this instance and every peer whose lease key exists and
//! which knows the datacenter) gives one vote: what its own probes, after
//! its own rise/fall hysteresis, say of the datacenter (up, down or
//! unknown). The rule needs a number of live observers:
//!
//! | rule | needs | the datacenter is down when |
//! |---|---|---|
//! | `any` | 2 live observers | at least 1 sees it down |
//! | `majority` | 2 live observers | more than half of the live observers see it down |
//! | `all` | 2 live observers | every live observer sees it down |
//! | `N` | N live observers | at least N see it down |
//!
//! With fewer live observers than the rule needs, the instance falls back
//! to its own view (and says so). Otherwise the datacenter is down when
//! the rule says so; else up when any live observer sees it up; else
//! unknown (every vote is unknown, or the down votes fall short while the
//! rest are still warming up): unknown follows the service's `warmup`.

use crate::config::Quorum;
use crate::health::Observed;

/// What the rule decided for one datacenter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The state answers use.
    pub verdict: Observed,
    /// Too few live observers for the rule: `verdict` is the own view.
    pub fallback: bool,
    /// Live observers (this instance included).
    pub live: usize,
    /// Of them, how many see the datacenter down.
    pub down: usize,
}

/// The live observers the rule needs before it overrides the own view.
pub fn needed(rule: Quorum) -> usize {
    match rule {
        Quorum::Any | Quorum::Majority | Quorum::All => 2,
        Quorum::Count(n) => n as usize,
    }
}

/// Applies `rule` to the own view `own` and the live peers' `peers`.
pub fn decide(rule: Quorum, own: Observed, peers: &[Observed]) -> Decision {
    let live = 1 + peers.len();
    let votes = || std::iter::once(own).chain(peers.iter().copied());
    let down = votes().filter(|&v| v == Observed::Down).count();
    if live < needed(rule) {
        return Decision {
            verdict: own,
            fallback: true,
            live,
            down,
        };
    }
    let is_down = match rule {
        Quorum::Any => down >= 1,
        Quorum::Majority => 2 * down > live,
        Quorum::All => down == live,
        Quorum::Count(n) => down >= n as usize,
    };
    let verdict = if is_down {
        Observed::Down
    } else if votes().any(|v| v == Observed::Up) {
        Observed::Up
    } else {
        Observed::Unknown
    };
    Decision {
        verdict,
        fallback: false,
        live,
        down,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Observed::{Down, Unknown, Up};
    use proptest::prelude::*;

    fn d(rule: Quorum, own: Observed, peers: &[Observed]) -> (Observed, bool) {
        let r = decide(rule, own, peers);
        (r.verdict, r.fallback)
    }

    #[test]
    fn the_readme_table() {
        // One instance cannot reach the backend: the others outvote it.
        assert_eq!(d(Quorum::Majority, Down, &[Up, Up]), (Up, false));
        // Two of three see it down.
        assert_eq!(d(Quorum::Majority, Up, &[Down, Down]), (Down, false));
        // Two live of two: both must see it down.
        assert_eq!(d(Quorum::Majority, Down, &[Up]), (Up, false));
        assert_eq!(d(Quorum::Majority, Down, &[Down]), (Down, false));
        // Alone: the own view, flagged.
        assert_eq!(d(Quorum::Majority, Down, &[]), (Down, true));
        assert_eq!(d(Quorum::Any, Up, &[]), (Up, true));
        assert_eq!(d(Quorum::Any, Up, &[Down]), (Down, false));
        assert_eq!(d(Quorum::All, Down, &[Down, Up]), (Up, false));
        assert_eq!(d(Quorum::All, Down, &[Down, Down]), (Down, false));
        assert_eq!(d(Quorum::Count(2), Down, &[Down, Up, Up]), (Down, false));
        assert_eq!(d(Quorum::Count(3), Down, &[Down]), (Down, true));
        assert_eq!(d(Quorum::Count(1), Up, &[]), (Up, false));
        // Warming up: unknown votes neither outvote nor count as down.
        assert_eq!(
            d(Quorum::Majority, Down, &[Unknown, Unknown]),
            (Unknown, false)
        );
        assert_eq!(d(Quorum::Majority, Down, &[Down, Unknown]), (Down, false));
        assert_eq!(d(Quorum::Majority, Unknown, &[Unknown]), (Unknown, false));
    }

    fn observed() -> impl Strategy<Value = Observed> {
        prop_oneof![Just(Up), Just(Down), Just(Unknown)]
    }

    fn rule() -> impl Strategy<Value = Quorum> {
        prop_oneof![
            Just(Quorum::Any),
            Just(Quorum::Majority),
            Just(Quorum::All),
            (1u32..6).prop_map(Quorum::Count),
        ]
    }

    proptest! {
        /// Every combination of up to 6 peers: the rule's definition,
        /// restated independently.
        #[test]
        fn matches_its_definition(rule in rule(), own in observed(), peers in prop::collection::vec(observed(), 0..6)) {
            let r = decide(rule, own, &peers);
            let all: Vec<Observed> = std::iter::once(own).chain(peers.iter().copied()).collect();
            let down = all.iter().filter(|&&v| v == Down).count();
            prop_assert_eq!(r.live, all.len());
            prop_assert_eq!(r.down, down);
            let need = match rule { Quorum::Count(n) => n as usize, _ => 2 };
            if all.len() < need {
                prop_assert!(r.fallback);
                prop_assert_eq!(r.verdict, own);
            } else {
                prop_assert!(!r.fallback);
                let threshold = match rule {
                    Quorum::Any => 1,
                    Quorum::Majority => all.len() / 2 + 1,
                    Quorum::All => all.len(),
                    Quorum::Count(n) => n as usize,
                };
                let expect = if down >= threshold { Down }
                    else if all.contains(&Up) { Up } else { Unknown };
                prop_assert_eq!(r.verdict, expect);
            }
        }

        /// One more down vote never turns a down verdict up (monotone), so
        /// a rising count of failures cannot flap the shared state.
        #[test]
        fn more_down_votes_never_bring_it_up(rule in rule(), own in observed(), mut peers in prop::collection::vec(observed(), 1..6), i in 0usize..6) {
            let before = decide(rule, own, &peers);
            let i = i % peers.len();
            peers[i] = Down;
            let after = decide(rule, own, &peers);
            if before.verdict == Down && !before.fallback {
                prop_assert_eq!(after.verdict, Down);
            }
        }
    }
}
