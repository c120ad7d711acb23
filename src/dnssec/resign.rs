//! The background re-signer: re-signs each signed zone before its
//! signatures reach the refresh margin, off the query path, and publishes
//! the result in the zone's place.
//!
//! ```text
//!   loop ─► for each signed zone: due at signer.refresh_at()
//!      │      (earliest expiration − refresh_margin − spread),
//!      │      or at its retry time after a failure
//!      ├─ due: spawn_blocking(Zone::resigned) ─► state.rcu(with_zone)
//!      └─ else sleep (tokio::time) until the first is due, a reload
//!         wakes it, or shutdown
//! ```
//!
//! **Publishing.** A re-sign takes seconds for a big zone, and health
//! changes, latency refreshes and reloads publish meanwhile. The new zone
//! is put in place with `rcu` on whatever snapshot is current when it is
//! ready ([`Snapshot::with_zone`]), as a health change does, so neither
//! undoes the other; when a reload has replaced the zone meanwhile (with
//! new signatures of its own), the re-signed one is dropped.
//!
//! **Failures.** A zone that could not be re-signed stays in service with
//! its current signatures, and the re-sign is retried after 1 minute,
//! then 2, 4, ... up to [`MAX_BACKOFF`], logged at ERROR each time. The
//! query path's safety net ([`super::sign::ZoneSigner::signatures`])
//! renews signatures that get within half the margin of expiring.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::dns::zone::Zone;
use crate::metrics::{Family, Kind, Source};
use crate::snapshot::Snapshot;

/// Longest wait between two retries of a failed re-sign, in seconds.
pub const MAX_BACKOFF: u64 = 3600;

/// Longest sleep before the schedule is looked at again, in seconds: the
/// system clock may be stepped (NTP) while the task sleeps on a monotonic
/// timer.
const MAX_SLEEP: u64 = 900;

/// The wait before retry `attempt` (1 for the first) of a failed re-sign:
/// one minute, doubling, at most [`MAX_BACKOFF`].
pub fn backoff(attempt: u32) -> u64 {
    60u64
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

//------------ Stats ----------------------------------------------------------

/// Re-sign results per zone, for `/metrics` and `/status`.
#[derive(Debug, Default)]
pub struct Stats {
    zones: Mutex<BTreeMap<String, ZoneStats>>,
}

/// One zone's re-sign results since start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ZoneStats {
    /// Re-signs published.
    pub ok: u64,
    /// Re-signs that failed (the zone kept its signatures).
    pub failed: u64,
    /// Why the last one failed, until one succeeds.
    pub last_error: Option<String>,
    /// When a failed re-sign is tried again (seconds since the epoch).
    pub retry_at: Option<u64>,
    /// A re-sign is running.
    pub running: bool,
}

impl Stats {
    fn update(&self, origin: &str, f: impl FnOnce(&mut ZoneStats)) {
        let mut zones = self.zones.lock().unwrap_or_else(|e| e.into_inner());
        f(zones.entry(origin.to_string()).or_default());
    }

    /// The results of the zone at `origin` (as `Name::to_ascii` spells it).
    pub fn zone(&self, origin: &str) -> ZoneStats {
        let zones = self.zones.lock().unwrap_or_else(|e| e.into_inner());
        zones.get(origin).cloned().unwrap_or_default()
    }
}

//------------ The task -------------------------------------------------------

/// A failed zone's retry: which zone (by pointer, so that a reload's new
/// zone starts afresh), its attempts, when.
struct Retry {
    zone: usize,
    attempts: u32,
    at: u64,
}

/// When the zone at `origin` (the one served now, `zone` by pointer) is
/// retried after a failed re-sign. A retry of a zone that a reload has
/// replaced since is forgotten, with its attempts and its `retry_at` in
/// `stats`: the new zone starts afresh, on its own schedule.
fn retry_at(
    retries: &mut HashMap<String, Retry>,
    stats: &Stats,
    origin: &str,
    zone: usize,
) -> Option<u64> {
    let r = retries.get(origin)?;
    if r.zone == zone {
        return Some(r.at);
    }
    retries.remove(origin);
    stats.update(origin, |s| s.retry_at = None);
    None
}

/// Re-signs the signed zones of the snapshot in `state` as they fall due,
/// until `token` is cancelled. `wake` is notified after a reload, whose
/// zones bring new deadlines.
pub async fn run(
    state: Arc<ArcSwap<Snapshot>>,
    stats: Arc<Stats>,
    wake: Arc<Notify>,
    token: CancellationToken,
) {
    let mut retries: HashMap<String, Retry> = HashMap::new();
    loop {
        let snap = state.load_full();
        let mut due: Vec<Arc<Zone>> = Vec::new();
        let mut wait: Option<u64> = None;
        let mut live = std::collections::HashSet::new();
        for zone in snap.zones() {
            let Some(signer) = zone.signer() else {
                continue;
            };
            let origin = zone.origin().to_ascii();
            let retry = retry_at(&mut retries, &stats, &origin, Arc::as_ptr(zone) as usize);
            let Some(at) = retry.or(signer.refresh_at()) else {
                continue;
            };
            live.insert(origin);
            let now = signer.now();
            if at <= now {
                due.push(Arc::clone(zone));
            } else {
                wait = Some(wait.map_or(at - now, |w| w.min(at - now)));
            }
        }
        drop(snap);
        retries.retain(|origin, _| live.contains(origin));
        if !due.is_empty() {
            for zone in due {
                if token.is_cancelled() {
                    return;
                }
                resign(&state, &stats, &mut retries, zone, &token).await;
            }
            continue;
        }
        let sleep = async {
            match wait {
                Some(s) => tokio::time::sleep(Duration::from_secs(s.clamp(1, MAX_SLEEP))).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = token.cancelled() => return,
            () = wake.notified() => {}
            () = sleep => {}
        }
    }
}

/// Re-signs `zone` off the runtime's threads and publishes it.
async fn resign(
    state: &ArcSwap<Snapshot>,
    stats: &Stats,
    retries: &mut HashMap<String, Retry>,
    zone: Arc<Zone>,
    token: &CancellationToken,
) {
    let origin = zone.origin().to_ascii();
    stats.update(&origin, |s| s.running = true);
    let started = std::time::Instant::now();
    let job = Arc::clone(&zone);
    let handle = tokio::task::spawn_blocking(move || job.resigned());
    // Shutdown does not wait for a big zone's re-sign: its result is
    // dropped with the handle.
    let joined = tokio::select! {
        () = token.cancelled() => {
            stats.update(&origin, |s| s.running = false);
            return;
        }
        joined = handle => joined,
    };
    let result = match joined {
        Ok(Some(Ok(new))) => Ok(new),
        Ok(Some(Err(failed))) => Err(format!("{failed} RRsets could not be signed")),
        Ok(None) => Err("the zone is not signed".to_string()),
        Err(e) => Err(format!("the re-sign did not finish: {e}")),
    };
    match result {
        Ok(new) => {
            let new = Arc::new(new);
            let mut published = false;
            state.rcu(|cur| match cur.with_zone(&zone, &new) {
                Some(next) => {
                    published = true;
                    Arc::new(next)
                }
                None => {
                    published = false;
                    Arc::clone(cur)
                }
            });
            retries.remove(&origin);
            stats.update(&origin, |s| {
                s.running = false;
                s.retry_at = None;
                s.last_error = None;
                s.ok += u64::from(published);
            });
            let signer = new.signer();
            if published {
                tracing::info!(
                    zone = %origin,
                    rrsets = signer.map_or(0, |s| s.precomputed()),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    earliest_expiry = signer.and_then(|s| s.earliest_expiry()),
                    next_refresh = signer.and_then(|s| s.refresh_at()),
                    "re-signed the zone in the background"
                );
            } else {
                tracing::debug!(
                    zone = %origin,
                    "re-signed the zone, but a reload replaced it meanwhile; dropped"
                );
            }
        }
        Err(why) => {
            let now = zone.signer().map_or(0, |s| s.now());
            let attempts = retries.get(&origin).map_or(0, |r| r.attempts) + 1;
            let at = now + backoff(attempts);
            retries.insert(
                origin.clone(),
                Retry {
                    zone: Arc::as_ptr(&zone) as usize,
                    attempts,
                    at,
                },
            );
            stats.update(&origin, |s| {
                s.running = false;
                s.failed += 1;
                s.retry_at = Some(at);
                s.last_error = Some(why.clone());
            });
            tracing::error!(
                zone = %origin,
                attempt = attempts,
                retry_in_s = at - now,
                earliest_expiry = zone.signer().and_then(|s| s.earliest_expiry()),
                "re-signing failed, keeping the current signatures: {why}"
            );
        }
    }
}

//------------ Metrics and status --------------------------------------------

/// RFC 3339 for seconds since the epoch.
fn time(secs: u64) -> String {
    crate::rfc3339(UNIX_EPOCH + Duration::from_secs(secs))
}

/// The `dnssec` entries of `/status`: one per signed zone, with its keys
/// (tag, algorithm, role, state), when its signatures were made, the
/// earliest expiration, the next background re-sign and its results.
pub fn status(snap: &Snapshot, stats: &Stats) -> Value {
    let zones: Vec<Value> = snap
        .zones()
        .iter()
        .filter_map(|z| {
            let signer = z.signer()?;
            let origin = z.origin().to_ascii();
            let st = stats.zone(&origin);
            let keys: Vec<Value> = signer
                .keys()
                .iter()
                .map(|k| {
                    json!({
                        "tag": k.tag,
                        "algorithm": k.algorithm,
                        "role": k.role,
                        "state": k.state,
                    })
                })
                .collect();
            Some(json!({
                "zone": origin,
                "keys": keys,
                "precomputed_rrsets": signer.precomputed(),
                "signed_at": time(signer.signed_at()),
                "earliest_expiry": signer.earliest_expiry().map(time),
                "next_refresh": st.retry_at.or(signer.refresh_at()).map(time),
                "resigning": st.running,
                "resigns": { "ok": st.ok, "failed": st.failed },
                "last_error": st.last_error,
                "safety_net_renewals": signer.safety_net_renewals(),
            }))
        })
        .collect();
    Value::Array(zones)
}

/// The DNSSEC metrics, read at scrape time from the snapshot in `state`
/// and the re-signer's `stats`.
pub fn metric_source(state: Arc<ArcSwap<Snapshot>>, stats: Arc<Stats>) -> Source {
    Box::new(move |out| {
        for (name, help, value) in [
            (
                "meridian_dnssec_signatures_online",
                "Signatures made on the query path (RRsets not precomputed, and safety-net renewals).",
                super::signatures_online_total(),
            ),
            (
                "meridian_dnssec_signatures_precomputed",
                "Signatures made while building or re-signing zones, off the query path.",
                super::signatures_precomputed_total(),
            ),
            (
                "meridian_dnssec_budget_exhausted",
                "Queries answered SERVFAIL because the zone's online_signing_rate was spent.",
                super::budget_exhausted_total(),
            ),
            (
                "meridian_dnssec_safety_net_renewals",
                "Precomputed signatures renewed on the query path because the background re-sign was late.",
                super::safety_net_renewals_total(),
            ),
        ] {
            let mut f = Family::new(name, help, Kind::Counter);
            f.int(vec![], value);
            out.push(f);
        }
        let snap = state.load();
        let mut resigns = Family::new(
            "meridian_dnssec_resign",
            "Background re-signs of a zone, by result (ok, error).",
            Kind::Counter,
        );
        let mut expire = Family::new(
            "meridian_dnssec_signatures_expire_timestamp_seconds",
            "Earliest expiration among the zone's precomputed signatures (unix time).",
            Kind::Gauge,
        );
        let mut signed = Family::new(
            "meridian_dnssec_signed_timestamp_seconds",
            "When the zone's precomputed signatures were made: build, reload or background re-sign (unix time).",
            Kind::Gauge,
        );
        let mut next = Family::new(
            "meridian_dnssec_next_resign_timestamp_seconds",
            "When the zone is re-signed next, or a failed re-sign retried (unix time).",
            Kind::Gauge,
        );
        for z in snap.zones() {
            let Some(signer) = z.signer() else {
                continue;
            };
            let origin = z.origin().to_ascii();
            let st = stats.zone(&origin);
            let zone = || vec![("zone", origin.clone())];
            resigns.int(
                vec![("zone", origin.clone()), ("result", "ok".into())],
                st.ok,
            );
            resigns.int(
                vec![("zone", origin.clone()), ("result", "error".into())],
                st.failed,
            );
            if let Some(e) = signer.earliest_expiry() {
                expire.int(zone(), e);
            }
            signed.int(zone(), signer.signed_at());
            if let Some(at) = st.retry_at.or(signer.refresh_at()) {
                next.int(zone(), at);
            }
        }
        out.extend([resigns, expire, signed, next]);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One minute, doubling, capped at an hour; never zero, never
    /// overflowing however many attempts.
    #[test]
    fn backoff_doubles_up_to_an_hour() {
        let waits: Vec<u64> = (1..=8).map(backoff).collect();
        assert_eq!(waits, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(backoff(0), 60);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    /// A failed zone is retried at its retry time while it is served; once
    /// a reload replaces it, the retry is forgotten: the new zone follows
    /// its own schedule, starts its attempts afresh, and `/status` no
    /// longer shows the old retry time as its next re-sign.
    #[test]
    fn a_reloaded_zone_drops_the_old_retry() {
        let stats = Stats::default();
        let mut retries = HashMap::new();
        let (old, new) = (0x1000, 0x2000);
        retries.insert(
            "z.".to_string(),
            Retry {
                zone: old,
                attempts: 3,
                at: 42,
            },
        );
        stats.update("z.", |s| s.retry_at = Some(42));
        assert_eq!(retry_at(&mut retries, &stats, "z.", old), Some(42));
        assert_eq!(stats.zone("z.").retry_at, Some(42));
        assert_eq!(retry_at(&mut retries, &stats, "z.", new), None);
        assert!(retries.is_empty(), "attempts start afresh");
        assert_eq!(stats.zone("z.").retry_at, None);
        assert_eq!(retry_at(&mut retries, &stats, "other.", new), None);
    }
}
