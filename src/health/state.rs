//! The anti-flap state machine of one probe target. Pure: no clock, no
//! I/O; it sees only probe verdicts in order.
//!
//! * Before any result the target is Unknown. The first result decides at
//!   once (a pass makes it Up, a failure Down), so the first round of
//!   probes gives every target a definite state.
//! * Up becomes Down after `fall` consecutive failures.
//! * Down becomes Up after `rise` consecutive passes.
//! * A result in the current direction resets the opposite count, so a
//!   target flapping faster than `rise`/`fall` keeps its state.
//! * A local fault (the probe could not run because of this host) is no
//!   result at all: the state and both counts stay as they were, so a
//!   target is judged only on the probes that reached it.

use serde::Serialize;

use super::Verdict;

/// A target's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetState {
    /// No result yet.
    Unknown,
    /// Passing.
    Up,
    /// Failing.
    Down,
}

impl TargetState {
    /// The name logs, metrics and `/status` use (as serialized).
    pub fn name(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

/// Rise/fall hysteresis for one target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Machine {
    state: TargetState,
    passes: u32,
    failures: u32,
    rise: u32,
    fall: u32,
}

impl Machine {
    /// A new machine in state Unknown. `rise` and `fall` are at least 1.
    pub fn new(rise: u32, fall: u32) -> Self {
        Self {
            state: TargetState::Unknown,
            passes: 0,
            failures: 0,
            rise: rise.max(1),
            fall: fall.max(1),
        }
    }

    /// The current state.
    pub fn state(&self) -> TargetState {
        self.state
    }

    /// Consecutive passes so far.
    pub fn passes(&self) -> u32 {
        self.passes
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The same state and counts with new thresholds (a reload that
    /// changed `rise` or `fall`).
    pub fn with_thresholds(self, rise: u32, fall: u32) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            ..self
        }
    }

    /// Feeds one verdict; returns the new state if it changed.
    pub fn observe(&mut self, verdict: Verdict) -> Option<TargetState> {
        let pass = match verdict {
            Verdict::Pass => true,
            Verdict::Fail => false,
            // Nothing was learnt about the target: a failure here would
            // let this host's trouble (EMFILE, no route) fail healthy
            // datacenters over, and a pass would hide a dead one.
            Verdict::LocalFault => return None,
        };
        if pass {
            self.passes = self.passes.saturating_add(1);
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.passes = 0;
        }
        let next = match self.state {
            TargetState::Unknown if pass => TargetState::Up,
            TargetState::Unknown => TargetState::Down,
            TargetState::Up if self.failures >= self.fall => TargetState::Down,
            TargetState::Down if self.passes >= self.rise => TargetState::Up,
            s => s,
        };
        (next != self.state).then(|| {
            self.state = next;
            next
        })
    }

    /// Sets the state directly (external health input); counts restart.
    pub fn set(&mut self, state: TargetState) -> Option<TargetState> {
        self.passes = 0;
        self.failures = 0;
        (state != self.state).then(|| {
            self.state = state;
            state
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TargetState::{Down, Unknown, Up};

    /// `+` a pass, `-` a failure, `L` a local fault.
    fn verdict(c: char) -> Verdict {
        match c {
            '+' => Verdict::Pass,
            '-' => Verdict::Fail,
            'L' => Verdict::LocalFault,
            c => panic!("no verdict {c:?}"),
        }
    }

    fn run(rise: u32, fall: u32, results: &str) -> Vec<TargetState> {
        let mut m = Machine::new(rise, fall);
        results
            .chars()
            .map(|c| {
                m.observe(verdict(c));
                m.state()
            })
            .collect()
    }

    #[test]
    fn first_result_decides() {
        assert_eq!(Machine::new(2, 3).state(), Unknown);
        assert_eq!(run(5, 5, "+"), [Up]);
        assert_eq!(run(5, 5, "-"), [Down]);
    }

    #[test]
    fn fall_consecutive_failures_take_it_down() {
        assert_eq!(run(2, 3, "+--"), [Up, Up, Up]);
        assert_eq!(run(2, 3, "+---"), [Up, Up, Up, Down]);
        // A pass in between resets the count.
        assert_eq!(run(2, 3, "+--+--"), [Up; 6]);
    }

    #[test]
    fn rise_consecutive_passes_bring_it_back() {
        assert_eq!(run(2, 1, "-+"), [Down, Down]);
        assert_eq!(run(2, 1, "-++"), [Down, Down, Up]);
        assert_eq!(
            run(3, 1, "-++-+++"),
            [Down, Down, Down, Down, Down, Down, Up]
        );
    }

    #[test]
    fn rise_and_fall_of_one_follow_every_result() {
        assert_eq!(run(1, 1, "+-+-"), [Up, Down, Up, Down]);
    }

    #[test]
    fn exhaustive_small_sequences_respect_hysteresis() {
        // Every result sequence up to length 10 for rise/fall 1..=3:
        // a change to Down needs `fall` failures in a row just before it,
        // a change to Up (after the first result) `rise` passes in a row.
        for rise in 1..=3u32 {
            for fall in 1..=3u32 {
                for len in 1..=10u32 {
                    for bits in 0..(1u32 << len) {
                        let mut m = Machine::new(rise, fall);
                        let mut history: Vec<bool> = Vec::new();
                        for i in 0..len {
                            let pass = bits & (1 << i) != 0;
                            let before = m.state();
                            history.push(pass);
                            let changed =
                                m.observe(if pass { Verdict::Pass } else { Verdict::Fail });
                            let tail = |v: bool, n: u32| {
                                history.len() >= n as usize
                                    && history[history.len() - n as usize..]
                                        .iter()
                                        .all(|&h| h == v)
                            };
                            match (before, changed) {
                                (Unknown, Some(s)) => assert_eq!(s == Up, pass),
                                (Unknown, None) => panic!("the first result must decide"),
                                (Up, Some(Down)) => assert!(tail(false, fall)),
                                (Down, Some(Up)) => assert!(tail(true, rise)),
                                (Up | Down, None) => {}
                                (s, c) => panic!("impossible transition {s:?} -> {c:?}"),
                            }
                            // No transition is ever missed.
                            match m.state() {
                                Up => assert!(!tail(false, fall), "{history:?}"),
                                Down => assert!(!tail(true, rise), "{history:?}"),
                                Unknown => panic!("decided after a result"),
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn external_input_sets_state_and_restarts_counts() {
        let mut m = Machine::new(2, 2);
        m.observe(Verdict::Pass);
        assert_eq!(m.set(Down), Some(Down));
        assert_eq!(m.set(Down), None);
        assert_eq!(m.observe(Verdict::Pass), None);
        assert_eq!(m.observe(Verdict::Pass), Some(Up));
    }

    #[test]
    fn local_faults_change_neither_state_nor_counts() {
        // Any number of local faults keeps Up, Down and Unknown.
        assert_eq!(run(2, 2, "+LLLLLLLL"), [Up; 9]);
        assert_eq!(run(2, 2, "-LLLLLLLL"), [Down; 9]);
        assert_eq!(run(2, 2, "LLL"), [Unknown; 3]);
        // ... and the count in progress: one failure before and one after
        // make `fall = 2`, one pass before and one after make `rise = 2`.
        assert_eq!(run(2, 2, "+-LL-"), [Up, Up, Up, Up, Down]);
        assert_eq!(run(2, 2, "-+LL+"), [Down, Down, Down, Down, Up]);
        let mut m = Machine::new(3, 3);
        m.observe(Verdict::Pass);
        m.observe(Verdict::Fail);
        m.observe(Verdict::Fail);
        let before = m;
        for _ in 0..1000 {
            assert_eq!(m.observe(Verdict::LocalFault), None);
        }
        assert_eq!(m, before);
        assert_eq!((m.state(), m.passes(), m.failures()), (Up, 0, 2));
    }

    #[test]
    fn local_faults_anywhere_are_as_if_those_probes_never_ran() {
        // Every sequence of pass, fail and local fault up to length 7 for
        // rise/fall 1..=3: the states are those of the same sequence with
        // the local faults removed, each local fault repeating the state
        // before it.
        for rise in 1..=3u32 {
            for fall in 1..=3u32 {
                for len in 1..=7u32 {
                    for mut code in 0..3u32.pow(len) {
                        let mut seq = String::new();
                        for _ in 0..len {
                            seq.push(['+', '-', 'L'][(code % 3) as usize]);
                            code /= 3;
                        }
                        let without: String = seq.chars().filter(|&c| c != 'L').collect();
                        let mut reference = run(rise, fall, &without).into_iter();
                        let mut last = Unknown;
                        let expected: Vec<TargetState> = seq
                            .chars()
                            .map(|c| {
                                if c != 'L' {
                                    last = reference.next().expect("one state per result");
                                }
                                last
                            })
                            .collect();
                        assert_eq!(
                            run(rise, fall, &seq),
                            expected,
                            "{seq} rise {rise} fall {fall}"
                        );
                    }
                }
            }
        }
    }
}
