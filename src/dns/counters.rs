//! Process-wide counts of queries the envelope answered without looking
//! up a name: malformed ones (FORMERR), signed ones (BADKEY), BADVERS and
//! BADCOOKIE. They are counted instead of logged, so a remote client
//! cannot flood the log; `/status` shows them. Only these rare paths
//! touch the counters, so the shared cache line costs answers nothing.

use std::sync::atomic::{AtomicU64, Ordering};

static FORMERR: AtomicU64 = AtomicU64::new(0);
static BADKEY: AtomicU64 = AtomicU64::new(0);
static BADVERS: AtomicU64 = AtomicU64::new(0);
static BADCOOKIE: AtomicU64 = AtomicU64::new(0);

/// What a counted query got.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Event {
    FormErr,
    BadKey,
    BadVers,
    BadCookie,
}

/// Counts one query.
pub(crate) fn count(event: Event) {
    let counter = match event {
        Event::FormErr => &FORMERR,
        Event::BadKey => &BADKEY,
        Event::BadVers => &BADVERS,
        Event::BadCookie => &BADCOOKIE,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The counts since the process started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Malformed queries answered FORMERR (bad OPT or ECS options,
    /// misplaced TSIG, unreadable questions).
    pub formerr: u64,
    /// TSIG-signed queries answered NOTAUTH/BADKEY.
    pub badkey: u64,
    /// Queries with an EDNS version above 0.
    pub badvers: u64,
    /// UDP queries without a valid server cookie where one is required.
    pub badcookie: u64,
}

/// Reads the counters.
pub fn counts() -> Counts {
    Counts {
        formerr: FORMERR.load(Ordering::Relaxed),
        badkey: BADKEY.load(Ordering::Relaxed),
        badvers: BADVERS.load(Ordering::Relaxed),
        badcookie: BADCOOKIE.load(Ordering::Relaxed),
    }
}
