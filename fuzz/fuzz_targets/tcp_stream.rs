//! The bytes a client writes on one TCP connection, split into messages
//! by the framing rule of the TCP loop (`connection` in
//! `src/dns/server.rs`, which is async and owns the socket, so this target
//! replicates the rule rather than calling it; keep the two in step):
//!
//! * a two-byte big-endian length, then that many bytes of message
//!   (RFC 1035 §4.2.2, RFC 7766 §8);
//! * the stream ending inside a length or a message ends the connection
//!   with nothing more answered;
//! * a message shorter than a DNS header (12 bytes) closes the
//!   connection: nothing after it is read.
//!
//! Each message is answered with `Transport::Tcp` into one response
//! buffer reused for the whole connection, as the loop does. Every
//! response must pass `check_response` (decodes, echoes ID, opcode and
//! RD, has QR set, fits 65535 bytes, follows the EDNS rules), must fit the
//! two-byte length prefix the loop writes before it, and must be the
//! bytes a fresh buffer gets (nothing from an earlier answer leaks into a
//! later one). The first message's ID picks the client address for the
//! whole connection; each message's own ID picks the health view, as if
//! the configuration changed between queries.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian::dns::Transport;
use meridian::dns::handler::handle_query_at;
use meridian_fuzz::{check_response, hex, snapshot_for, source};

/// The TCP loop's shortest message: a DNS header.
const MIN_MESSAGE: usize = 12;
const COOKIE_TIME: u32 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let mut src = None;
    let mut out = Vec::new();
    let mut answered_so_far = 0usize;
    while let Some((len, after)) = rest.split_first_chunk::<2>() {
        let len = usize::from(u16::from_be_bytes(*len));
        let Some((message, after)) = after.split_at_checked(len) else {
            break; // the client closed inside a message
        };
        rest = after;
        if len < MIN_MESSAGE {
            break; // not DNS: the loop closes the connection
        }
        let src = *src.get_or_insert_with(|| source(message));
        let snap = snapshot_for(message);
        // One cookie time for both calls, so a COOKIE option gets the same
        // server cookie from each.
        let answered =
            handle_query_at(snap, message, src, Transport::Tcp, COOKIE_TIME, &mut out).send;
        check_response(snap, message, Transport::Tcp, answered, &out);
        if !answered {
            continue;
        }
        let context = || {
            format!(
                "message {answered_so_far} of the stream\nstream:   {}\nmessage:  {}\nresponse: {}",
                hex(data),
                hex(message),
                hex(&out)
            )
        };
        assert!(
            u16::try_from(out.len()).is_ok(),
            "{} response bytes do not fit the TCP length prefix\n{}",
            out.len(),
            context()
        );
        let mut fresh = Vec::new();
        let fresh = handle_query_at(snap, message, src, Transport::Tcp, COOKIE_TIME, &mut fresh)
            .send
            .then_some(fresh);
        assert!(
            fresh.as_deref() == Some(out.as_slice()),
            "a reused buffer and a fresh one give different responses\n{}\nfresh:    {}",
            context(),
            fresh.as_deref().map_or_else(|| "(none)".into(), hex)
        );
        answered_so_far += 1;
    }
});
