//! Probe RTT statistics of one target: what the latency policy's
//! `source = "probes"` ranks by, and what tells a congested datacenter
//! from a merely distant one.
//!
//! Only passing probes feed it: a failed probe's time is a timeout or a
//! refusal, and a local fault's says nothing about the target at all.
//! Pure: the caller passes each RTT in, so the arithmetic is tested
//! without a clock or a socket.
//!
//! What one probe's RTT covers depends on its type (see
//! [`super::probe::Prober::run`], which times it):
//! * `tcp`: the connect, one round trip (SYN, SYN-ACK);
//! * `dns`: one UDP query and its response, one round trip plus the
//!   server's answer time;
//! * `http`: a fresh connection, the request and the response headers
//!   (and the body when `expect_body` is set): at least two round trips,
//!   plus the server's time; `https` adds the TLS handshake, one round
//!   trip (TLS 1.3) or two (TLS 1.2).
//!
//! The figures of datacenters probed with different types are therefore
//! not comparable with each other; each datacenter is compared with its
//! own baseline, and ranked against datacenters probed the same way.

use std::time::Duration;

//------------ Constants ---------------------------------------------------

/// Weight of a new sample in the smoothed RTT (as TCP's SRTT, RFC 6298):
/// it follows a real change within a few probes.
pub const SMOOTHING: f64 = 1.0 / 4.0;

/// Weight of a new sample in the baseline: it forgets over about 64
/// probes, so a short rise in RTT stands out against it and a lasting
/// one becomes the new normal.
pub const BASELINE_SMOOTHING: f64 = 1.0 / 64.0;

/// How many of the latest passing RTTs the percentile is taken over.
pub const WINDOW: usize = 32;

/// Samples a target needs before it can be called congested: the
/// baseline of the first few probes is not yet a baseline.
pub const CONGESTION_MIN_SAMPLES: u64 = 8;

/// The default for `[latency] congestion_factor`: congested when the
/// smoothed RTT is more than twice the baseline.
pub const DEFAULT_CONGESTION_FACTOR: f64 = 2.0;

//------------ RttStats ----------------------------------------------------

/// One target's RTT statistics over its passing probes, in microseconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RttStats {
    /// EWMA with weight [`SMOOTHING`], seeded by the first sample.
    smoothed_us: f64,
    /// EWMA with weight [`BASELINE_SMOOTHING`], seeded by the first
    /// sample.
    baseline_us: f64,
    /// The latest [`WINDOW`] samples, a ring; `next` is the oldest once
    /// full.
    window: [u32; WINDOW],
    next: usize,
    /// Passing probes recorded.
    samples: u64,
}

impl RttStats {
    /// No samples yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the RTT of a passing probe.
    pub fn observe(&mut self, rtt: Duration) {
        let us = rtt.as_secs_f64() * 1e6;
        if self.samples == 0 {
            self.smoothed_us = us;
            self.baseline_us = us;
        } else {
            self.smoothed_us += (us - self.smoothed_us) * SMOOTHING;
            self.baseline_us += (us - self.baseline_us) * BASELINE_SMOOTHING;
        }
        // Saturates at about 71 minutes, far beyond any probe timeout.
        self.window[self.next] = u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX);
        self.next = (self.next + 1) % WINDOW;
        self.samples = self.samples.saturating_add(1);
    }

    /// Passing probes recorded so far.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// The smoothed RTT in microseconds; `None` before the first sample.
    pub fn smoothed_us(&self) -> Option<f64> {
        (self.samples > 0).then_some(self.smoothed_us)
    }

    /// The baseline RTT in microseconds; `None` before the first sample.
    pub fn baseline_us(&self) -> Option<f64> {
        (self.samples > 0).then_some(self.baseline_us)
    }

    /// The 90th percentile of the latest [`WINDOW`] samples in
    /// microseconds, by nearest rank (the smallest sample at least 90 %
    /// of the window is not above: the 29th of 32); `None` before the
    /// first sample.
    pub fn p90_us(&self) -> Option<u32> {
        let n = usize::try_from(self.samples).map_or(WINDOW, |s| s.min(WINDOW));
        if n == 0 {
            return None;
        }
        // Before the ring is full its samples are the first `n`.
        let mut sorted = self.window;
        let sorted = &mut sorted[..n];
        sorted.sort_unstable();
        Some(sorted[(9 * n).div_ceil(10) - 1])
    }

    /// The smoothed RTT as [`super::DcHealth::rtt_us`] carries it: whole
    /// microseconds, at least 1 (0 there means unknown), saturating.
    pub fn rtt_us(&self) -> u32 {
        // `as` saturates and maps NaN to 0; the RTTs are finite.
        self.smoothed_us()
            .map_or(0, |us| (us.round() as u32).max(1))
    }

    /// Whether the smoothed RTT is above `factor` times the baseline, once
    /// there are [`CONGESTION_MIN_SAMPLES`] samples. A NaN factor never
    /// says congested.
    pub fn congested(&self, factor: f64) -> bool {
        self.samples >= CONGESTION_MIN_SAMPLES && self.smoothed_us > factor * self.baseline_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: f64) -> Duration {
        Duration::from_secs_f64(n / 1000.0)
    }

    fn fed(rtts_ms: impl IntoIterator<Item = f64>) -> RttStats {
        let mut s = RttStats::new();
        for r in rtts_ms {
            s.observe(ms(r));
        }
        s
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-6 * b.max(1.0))
    }

    #[test]
    fn nothing_is_known_before_the_first_pass() {
        let s = RttStats::new();
        assert_eq!(s.samples(), 0);
        assert_eq!(s.smoothed_us(), None);
        assert_eq!(s.baseline_us(), None);
        assert_eq!(s.p90_us(), None);
        assert_eq!(s.rtt_us(), 0);
        assert!(!s.congested(1.0));
    }

    #[test]
    fn the_first_sample_seeds_both_averages() {
        let s = fed([40.0]);
        assert_eq!(s.samples(), 1);
        assert!(close(s.smoothed_us(), 40_000.0), "{s:?}");
        assert!(close(s.baseline_us(), 40_000.0), "{s:?}");
        assert_eq!(s.p90_us(), Some(40_000));
        assert_eq!(s.rtt_us(), 40_000);
    }

    #[test]
    fn the_averages_move_by_a_quarter_and_a_sixty_fourth() {
        let s = fed([100.0, 200.0]);
        assert!(close(s.smoothed_us(), 125_000.0), "{s:?}");
        assert!(close(s.baseline_us(), 101_562.5), "{s:?}");
        let s = fed([100.0, 200.0, 200.0]);
        assert!(close(s.smoothed_us(), 143_750.0), "{s:?}");
        // A steady RTT is where both settle.
        let s = fed(std::iter::repeat_n(7.5, 2_000));
        assert!(close(s.smoothed_us(), 7_500.0), "{s:?}");
        assert!(close(s.baseline_us(), 7_500.0), "{s:?}");
    }

    #[test]
    fn the_smoothed_rtt_follows_a_step_within_a_dozen_probes() {
        let mut s = fed(std::iter::repeat_n(20.0, 50));
        let mut probes = 0;
        while s.smoothed_us().is_some_and(|us| us < 190_000.0) {
            s.observe(ms(200.0));
            probes += 1;
            assert!(probes < 100, "never followed: {s:?}");
        }
        // 180 * (3/4)^k < 10 from k = 11 on.
        assert_eq!(probes, 11);
    }

    #[test]
    fn p90_is_the_nearest_rank_over_the_latest_32() {
        // 1..=32 ms: the 29th smallest.
        assert_eq!(fed((1..=32).map(f64::from)).p90_us(), Some(29_000));
        // Ten samples: the 9th.
        assert_eq!(fed((1..=10).map(f64::from)).p90_us(), Some(9_000));
        // One sample of a window of one.
        assert_eq!(fed([3.0]).p90_us(), Some(3_000));
        // 1..=40: the window holds 9..=40, whose 29th is 37.
        assert_eq!(fed((1..=40).map(f64::from)).p90_us(), Some(37_000));
        // The ring wraps many times and still holds the latest 32.
        let s = fed((1..=1000).map(|i| f64::from(i % 7)).chain([50.0; 32]));
        assert_eq!(s.p90_us(), Some(50_000));
    }

    #[test]
    fn p90_shows_a_tail_of_more_than_a_tenth_only() {
        // 3 slow probes in 32 (9 %) stay under the 90th percentile...
        let s = fed(std::iter::repeat_n(10.0, 29).chain([900.0; 3]));
        assert_eq!(s.p90_us(), Some(10_000));
        // ...4 (12.5 %) do not.
        let s = fed(std::iter::repeat_n(10.0, 28).chain([900.0; 4]));
        assert_eq!(s.p90_us(), Some(900_000));
    }

    #[test]
    fn congestion_needs_eight_samples_and_the_factor_exceeded() {
        // A huge jump on the second sample: not enough samples yet.
        let s = fed([10.0, 1_000.0]);
        assert!(s.smoothed_us() > s.baseline_us().map(|b| 2.0 * b));
        assert!(!s.congested(DEFAULT_CONGESTION_FACTOR));
        // Steady: not congested, however long; exceeding means more
        // than, so a factor of 1 is not exceeded by a steady RTT either.
        let mut s = fed(std::iter::repeat_n(20.0, 40));
        assert!(!s.congested(DEFAULT_CONGESTION_FACTOR));
        assert!(!s.congested(1.0));
        // The path slows from 20 to 200 ms: congested within a few probes.
        let mut probes = 0;
        while !s.congested(DEFAULT_CONGESTION_FACTOR) {
            s.observe(ms(200.0));
            probes += 1;
            assert!(probes < 10, "never congested: {s:?}");
        }
        // At once: smoothed = 20 + 180/4 = 65 > 2 * (20 + 180/64) = 45.6.
        // (So one probe over 5 times the baseline flags a datacenter for
        // an interval or two: the smoothed RTT takes that long to fall.)
        assert_eq!(probes, 1);
        assert!(!s.congested(f64::MAX));
        assert!(!s.congested(f64::NAN));
        // A lasting slowdown becomes the new normal as the baseline
        // catches up (about 64 probes per e-fold).
        for _ in 0..200 {
            s.observe(ms(200.0));
        }
        assert!(!s.congested(DEFAULT_CONGESTION_FACTOR), "{s:?}");
    }

    #[test]
    fn rtt_us_is_whole_microseconds_never_zero_when_known() {
        assert_eq!(fed([0.0]).rtt_us(), 1);
        assert_eq!(fed([0.0004]).rtt_us(), 1);
        assert_eq!(fed([12.3456]).rtt_us(), 12_346);
        let mut s = RttStats::new();
        s.observe(Duration::from_secs(10_000));
        assert_eq!(s.rtt_us(), u32::MAX);
        assert_eq!(s.p90_us(), Some(u32::MAX));
    }
}
