//! Differential: whenever the template fast path answers a query, the
//! general path (hickory parses and encodes) must send the same response:
//! the same bytes when the question name has no upper-case letters, else
//! the same message as hickory decodes it (hickory compresses names
//! case-sensitively, so it may spell out a suffix the fast path points at).

#![no_main]

use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;
use meridian::dns::Transport;
use meridian::dns::handler::{handle_fast_at, handle_slow_at};
use meridian_fuzz::{ecs, hex, qname_has_upper, snapshot_for, source};

const COOKIE_TIME: u32 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let snap = snapshot_for(data);
    let src = source(data);
    let mut fast = Vec::new();
    for transport in [Transport::Udp, Transport::Tcp] {
        fast.clear();
        // One cookie time for both paths, so a COOKIE option gets the
        // same server cookie from each.
        if !handle_fast_at(snap, data, src, transport, COOKIE_TIME, &mut fast) {
            continue;
        }
        let context = || {
            format!(
                "transport: {transport:?}, source: {src}\nquery: {}\nfast:  {}",
                hex(data),
                hex(&fast)
            )
        };
        let Some(slow) = handle_slow_at(snap, data, src, transport, COOKIE_TIME) else {
            panic!(
                "the fast path answered, the general path sends nothing\n{}",
                context()
            );
        };
        if qname_has_upper(data) == Some(false) {
            assert!(
                fast == slow,
                "bytes differ for a lower-case query\n{}\nslow:  {}\nfast decoded: {:?}\nslow decoded: {:?}",
                context(),
                hex(&slow),
                Message::from_vec(&fast),
                Message::from_vec(&slow),
            );
            continue;
        }
        let f = Message::from_vec(&fast).unwrap_or_else(|e| {
            panic!(
                "the fast path's response does not decode: {e}\n{}",
                context()
            )
        });
        let s = Message::from_vec(&slow).unwrap_or_else(|e| {
            panic!(
                "the general path's response does not decode: {e}\n{}\nslow:  {}",
                context(),
                hex(&slow)
            )
        });
        let differ = |what: &str| -> ! {
            panic!(
                "{what} differ\n{}\nslow:  {}\nfast decoded: {f:?}\nslow decoded: {s:?}",
                context(),
                hex(&slow)
            )
        };
        // ID, flags, opcode and response code (with the EDNS high bits).
        if f.metadata != s.metadata {
            differ("header fields");
        }
        // Section counts as sent (the OPT record counts in ARCOUNT).
        if fast.get(4..12) != slow.get(4..12) {
            differ("section counts");
        }
        if f.queries != s.queries {
            differ("questions");
        }
        if f.answers != s.answers {
            differ("answers");
        }
        if f.authorities != s.authorities {
            differ("authority records");
        }
        if f.additionals != s.additionals {
            differ("additional records");
        }
        match (&f.edns, &s.edns) {
            (None, None) => {}
            (Some(fe), Some(se)) => {
                if (fe.max_payload(), fe.version(), fe.flags(), fe.rcode_high())
                    != (se.max_payload(), se.version(), se.flags(), se.rcode_high())
                {
                    differ("OPT records");
                }
                if ecs(fe) != ecs(se) {
                    differ("ECS options");
                }
            }
            _ => differ("OPT presence"),
        }
        if f != s {
            differ("messages");
        }
    }
});
