//! The connection table of one TCP listener: which client holds each
//! slot, which connections are idle and since when, and a way to ask one
//! to close.
//!
//! It gives the accept loop three defences:
//! * a per-client limit, so one address (or IPv6 /64) cannot take every
//!   slot;
//! * room on demand: when every slot is taken, the connection idle the
//!   longest is closed to admit the newcomer, as NSD and Knot do, instead
//!   of leaving new clients in the kernel's accept queue;
//! * a pressure flag, raised when more than 3/4 of the slots are taken, on
//!   which idle connections switch to the shorter idle timeout (RFC 7766
//!   §6.2.3).
//!
//! One std `Mutex` around a slab sized to the connection limit. It is taken
//! when a connection opens or closes and when one turns idle or busy (at
//! most twice per query, and not at all between pipelined queries), never
//! on UDP, and never across an `.await`, so a std lock is cheaper than an
//! async one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What the per-client limit counts: an IPv4 address, or an IPv6 /64 (one
/// site's subnet, in which a single host can use any address it likes).
/// IPv4-mapped IPv6 counts as the IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum ClientKey {
    V4(u32),
    V6(u64),
}

impl ClientKey {
    pub(super) fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => Self::V4(u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => Self::V4(u32::from(v4)),
                // The upper 64 bits: the /64 prefix.
                None => Self::V6((u128::from(a) >> 64) as u64),
            },
        }
    }
}

#[derive(Debug)]
enum State {
    /// A query is being read, answered or written.
    Busy,
    /// Waiting for the first byte of the next query, since then.
    Idle(Instant),
    /// Asked to close to make room; still holds its socket until it ends.
    Closing,
}

#[derive(Debug)]
struct Entry {
    client: ClientKey,
    state: State,
    close: CancellationToken,
}

#[derive(Debug)]
struct Table {
    /// Slab of `capacity` slots.
    entries: Vec<Option<Entry>>,
    /// Indices of the empty slots.
    free: Vec<usize>,
    /// Entries in the `Closing` state.
    closing: usize,
    /// Open connections per client; no entry for a client without any.
    per_client: HashMap<ClientKey, u32>,
}

impl Table {
    fn used(&self) -> usize {
        self.entries.len() - self.free.len()
    }
}

/// Why a connection was not given a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// The client already holds its share.
    ClientLimit,
    /// Every slot is taken.
    Full,
}

/// The slot table of one listener.
#[derive(Debug)]
pub(super) struct Slots {
    table: Mutex<Table>,
    per_client: u32,
    /// Woken when the table is full and a slot frees or a connection turns
    /// idle: the two events a full accept loop waits for.
    changed: Notify,
    /// More than 3/4 of the slots are taken (cleared at half, so a table
    /// that hovers at the threshold does not wake every idle connection
    /// on each accept).
    pressure: watch::Sender<bool>,
}

impl Slots {
    /// A table of `capacity` slots (at least 1), at most `per_client` of
    /// them for one client.
    pub(super) fn new(capacity: u32, per_client: u32) -> Arc<Self> {
        let capacity = capacity.max(1) as usize;
        Arc::new(Self {
            table: Mutex::new(Table {
                entries: (0..capacity).map(|_| None).collect(),
                free: (0..capacity).rev().collect(),
                closing: 0,
                per_client: HashMap::new(),
            }),
            per_client,
            changed: Notify::new(),
            pressure: watch::Sender::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // Nothing panics while holding it; if something did, the table is
        // still consistent enough to keep serving.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Woken when a full table changes (see `changed`). Call `enable` on
    /// the future before `admit`, so a change in between is not missed.
    pub(super) fn changed(&self) -> &Notify {
        &self.changed
    }

    /// Connections holding a slot.
    #[cfg(test)]
    pub(super) fn in_use(&self) -> usize {
        self.lock().used()
    }

    /// Gives `client` a slot, busy, closed when `parent` is cancelled or
    /// when the table needs room while it is idle.
    pub(super) fn admit(
        self: &Arc<Self>,
        client: ClientKey,
        parent: &CancellationToken,
    ) -> Result<Slot, Refused> {
        let mut t = self.lock();
        let held = t.per_client.get(&client).copied().unwrap_or(0);
        if held >= self.per_client {
            return Err(Refused::ClientLimit);
        }
        let Some(index) = t.free.pop() else {
            return Err(Refused::Full);
        };
        let close = parent.child_token();
        t.entries[index] = Some(Entry {
            client,
            state: State::Busy,
            close: close.clone(),
        });
        *t.per_client.entry(client).or_insert(0) += 1;
        self.update_pressure(&t);
        drop(t);
        Ok(Slot {
            slots: Arc::clone(self),
            index,
            close,
            pressure: self.pressure.subscribe(),
        })
    }

    /// Asks the connection idle the longest to close, unless one is
    /// already closing (its slot is about to free). Returns whether it
    /// asked one now; when none is idle, the caller waits on `changed`.
    pub(super) fn make_room(&self) -> bool {
        let mut t = self.lock();
        if t.closing > 0 {
            return false;
        }
        let oldest = t
            .entries
            .iter_mut()
            .flatten()
            .filter_map(|e| match e.state {
                State::Idle(since) => Some((since, e)),
                _ => None,
            })
            .min_by_key(|(since, _)| *since);
        let Some((_, entry)) = oldest else {
            return false;
        };
        entry.state = State::Closing;
        entry.close.cancel();
        t.closing += 1;
        true
    }

    /// Raises or clears the pressure flag as the table fills or empties.
    fn update_pressure(&self, t: &Table) {
        let (used, capacity) = (t.used(), t.entries.len());
        self.pressure.send_if_modified(|on| {
            let next = if *on {
                used * 2 > capacity
            } else {
                used * 4 > capacity * 3
            };
            std::mem::replace(on, next) != next
        });
    }

    /// Wakes the accept loop of a full table; a no-op (and no lock)
    /// otherwise.
    fn notify_if_full(&self, t: &Table) {
        if t.free.is_empty() {
            self.changed.notify_waiters();
        }
    }
}

/// One connection's slot; dropping it frees the slot.
#[derive(Debug)]
pub(super) struct Slot {
    slots: Arc<Slots>,
    index: usize,
    close: CancellationToken,
    pressure: watch::Receiver<bool>,
}

impl Slot {
    /// Cancelled when the connection must close: shutdown, or the table
    /// needs its slot.
    pub(super) fn close_token(&self) -> &CancellationToken {
        &self.close
    }

    /// The pressure flag (see [`Slots`]); `changed()` wakes on each flip.
    pub(super) fn pressure(&mut self) -> &mut watch::Receiver<bool> {
        &mut self.pressure
    }

    /// Marks the connection idle: waiting for the next query. Returns
    /// when it became idle (read once, outside the lock).
    pub(super) fn idle(&self) -> Instant {
        let now = Instant::now();
        let mut t = self.slots.lock();
        if let Some(e) = &mut t.entries[self.index]
            && matches!(e.state, State::Busy)
        {
            e.state = State::Idle(now);
            self.slots.notify_if_full(&t);
        }
        now
    }

    /// Marks the connection busy: a query has started to arrive. False
    /// when it was asked to close meanwhile; it must then close.
    pub(super) fn busy(&self) -> bool {
        let mut t = self.slots.lock();
        match &mut t.entries[self.index] {
            Some(e) if !matches!(e.state, State::Closing) => {
                e.state = State::Busy;
                true
            }
            _ => false,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.slots.lock();
        let Some(e) = t.entries[self.index].take() else {
            return;
        };
        if matches!(e.state, State::Closing) {
            t.closing -= 1;
        }
        if let Some(n) = t.per_client.get_mut(&e.client) {
            *n -= 1;
            if *n == 0 {
                t.per_client.remove(&e.client);
            }
        }
        // Only a full table has an accept loop waiting on it. The waiter
        // takes the lock next, so it sees this slot free.
        self.slots.notify_if_full(&t);
        t.free.push(self.index);
        self.slots.update_pressure(&t);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn key(last: u8) -> ClientKey {
        ClientKey::of(IpAddr::from([192, 0, 2, last]))
    }

    #[test]
    fn ipv6_clients_count_by_slash_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ClientKey::of(a), ClientKey::of(b));
        assert_ne!(ClientKey::of(a), ClientKey::of(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(ClientKey::of(mapped), key(7));
        assert_ne!(key(7), key(8));
    }

    #[tokio::test]
    async fn the_per_client_limit_counts_open_connections() {
        let slots = Slots::new(10, 2);
        let token = CancellationToken::new();
        let a1 = slots.admit(key(1), &token).unwrap();
        let _a2 = slots.admit(key(1), &token).unwrap();
        assert_eq!(
            slots.admit(key(1), &token).unwrap_err(),
            Refused::ClientLimit
        );
        let _b = slots.admit(key(2), &token).unwrap();
        drop(a1);
        let _a3 = slots.admit(key(1), &token).unwrap();
        assert_eq!(slots.in_use(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_table_closes_the_connection_idle_longest() {
        let slots = Slots::new(3, 10);
        let token = CancellationToken::new();
        let s: Vec<Slot> = (0..3)
            .map(|i| slots.admit(key(i), &token).unwrap())
            .collect();
        assert_eq!(slots.admit(key(9), &token).unwrap_err(), Refused::Full);
        // Nobody idle: no room to make.
        assert!(!slots.make_room());
        s[1].idle();
        tokio::time::advance(Duration::from_secs(1)).await;
        s[2].idle();
        tokio::time::advance(Duration::from_secs(1)).await;
        s[1].busy();
        s[1].idle(); // idle again, now the most recent
        assert!(slots.make_room());
        assert!(s[2].close_token().is_cancelled(), "idle the longest");
        assert!(!s[1].close_token().is_cancelled());
        // One at a time: the next call waits for that slot to free.
        assert!(!slots.make_room());
        // A connection asked to close cannot turn busy again.
        assert!(!s[2].busy());
        let mut s = s;
        drop(s.pop());
        let _new = slots.admit(key(9), &token).unwrap();
        assert!(slots.make_room(), "s[1] is idle and goes next");
        assert!(s[1].close_token().is_cancelled());
    }

    #[tokio::test]
    async fn shutdown_closes_every_slot() {
        let slots = Slots::new(2, 2);
        let token = CancellationToken::new();
        let a = slots.admit(key(1), &token).unwrap();
        token.cancel();
        assert!(a.close_token().is_cancelled());
    }

    #[tokio::test]
    async fn pressure_rises_above_three_quarters_and_clears_at_half() {
        let slots = Slots::new(8, 8);
        let token = CancellationToken::new();
        let mut held: Vec<Slot> = (0..6)
            .map(|i| slots.admit(key(i), &token).unwrap())
            .collect();
        assert!(!*held[0].pressure().borrow(), "6 of 8");
        held.push(slots.admit(key(6), &token).unwrap());
        assert!(*held[0].pressure().borrow(), "7 of 8");
        held.truncate(5);
        assert!(*held[0].pressure().borrow(), "5 of 8: still on");
        held.truncate(4);
        assert!(!*held[0].pressure().borrow(), "4 of 8: off");
    }

    #[tokio::test]
    async fn a_full_table_wakes_its_waiter_when_a_slot_frees_or_turns_idle() {
        let slots = Slots::new(1, 1);
        let token = CancellationToken::new();
        let a = slots.admit(key(1), &token).unwrap();
        let notified = slots.changed().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        a.idle();
        tokio::time::timeout(Duration::from_secs(5), notified)
            .await
            .expect("woken when the only connection turns idle");
        let notified = slots.changed().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        drop(a);
        tokio::time::timeout(Duration::from_secs(5), notified)
            .await
            .expect("woken when the slot frees");
    }
}
