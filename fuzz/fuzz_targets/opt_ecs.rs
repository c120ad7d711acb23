//! Structure-aware: the input describes a query and its additional section
//! (OPT records with any options, ECS with any fields, COOKIE, NSID,
//! truncated options, several OPT records, TSIG and other records after
//! the OPT; see `meridian_fuzz::opt_query`), the target builds it and
//! sends it through the handler the socket loops call (`handle_into`) and
//! through the general path alone (`handle_slow_at`), over UDP and TCP.
//!
//! Besides the rules every response follows (`check_response`), it checks
//! the response code against what the RFCs owe the OPT records, read from
//! the bytes the builder wrote rather than by the server's parser:
//!
//! * FORMERR for more than one OPT record (RFC 6891 §6.1.1), an option
//!   running past the RDATA, more than one ECS option, or an invalid one
//!   (RFC 7871 §6: unknown family, source prefix longer than the family,
//!   address octets other than ceil(source/8), bits set beyond the
//!   prefix), before anything else; NOTAUTH is also accepted when the
//!   query carries TSIG (RFC 8945 §5.2 checks the key first); then
//!   NOTAUTH for TSIG, BADVERS for a version other than 0, and only then
//!   NOTIMP for an opcode other than QUERY (BIND's order);
//! * BADVERS for version other than 0 in a single clean OPT record
//!   (RFC 6891 §6.1.3);
//! * no FORMERR for a clean query (one question of a type other than OPT,
//!   one clean OPT record with a root owner, at most one valid ECS and one
//!   well-formed COOKIE, no TSIG);
//! * with one valid ECS option and a NOERROR or NXDOMAIN answer that is
//!   not truncated, the response's ECS copies FAMILY, SOURCE
//!   PREFIX-LENGTH and ADDRESS (RFC 7871 §7.2.1), its scope is within the
//!   family (32 or 128), and 0 when the source prefix is 0 (the client
//!   asked that its address not be used, §7.1.2, so nothing is tailored
//!   to it);
//! * the same response code from `handle_query_at` and `handle_slow_at`;
//! * NSID (RFC 5001 §2.1) only when asked; a COOKIE option only when the
//!   query sent a well-formed one, starting with its client cookie
//!   (RFC 7873 §5.2), 16 to 40 bytes long.

#![no_main]

use hickory_proto::op::Message;
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use libfuzzer_sys::fuzz_target;
use meridian::dns::Transport;
use meridian::dns::handler::{handle_query_at, handle_slow_at};
use meridian_fuzz::opt_query::{EcsVerdict, Model, build};
use meridian_fuzz::{check_response, ecs, hex, snapshot_for, source};

/// RFC 7871 §6 says SCOPE PREFIX-LENGTH "In queries, it MUST be set to
/// 0"; BIND answers a non-zero one with FORMERR ("EDNS client-subnet
/// option: invalid scope" in lib/ns/client.c), and so does Meridian since
/// finding 1 (`tests/integration/fuzz_findings.rs`).
const QUERY_SCOPE_IS_FORMERR: bool = true;

const FORMERR: u16 = 1;
const NOTIMP: u16 = 4;
const NOTAUTH: u16 = 9;
const BADVERS: u16 = 16;

const COOKIE_TIME: u32 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let (query, model) = build(data);
    let snap = snapshot_for(&query);
    let src = source(&query);
    let mut out = Vec::new();
    for transport in [Transport::Udp, Transport::Tcp] {
        // One cookie time for both paths.
        let answered = handle_query_at(snap, &query, src, transport, COOKIE_TIME, &mut out).send;
        check_response(snap, &query, transport, answered, &out);
        let slow = handle_slow_at(snap, &query, src, transport, COOKIE_TIME);
        check_response(
            snap,
            &query,
            transport,
            slow.is_some(),
            slow.as_deref().unwrap_or_default(),
        );
        if !answered {
            continue;
        }
        let fail = |what: String| -> ! {
            panic!(
                "{what}\ntransport: {transport:?}, source: {src}\nmodel: {model:?}\nquery:    {}\nresponse: {}\nslow:     {}",
                hex(&query),
                hex(&out),
                slow.as_deref().map_or_else(|| "(none)".into(), hex),
            )
        };
        // check_response has checked that both decode.
        let Ok(resp) = Message::from_vec(&out) else {
            fail("the response does not decode".into())
        };
        let rcode = u16::from(resp.metadata.response_code);
        let slow_rcode = slow
            .as_deref()
            .and_then(|s| Message::from_vec(s).ok())
            .map(|m| u16::from(m.metadata.response_code));
        if slow_rcode != Some(rcode) {
            fail(format!(
                "handle_query_at says {rcode}, handle_slow_at says {slow_rcode:?}"
            ));
        }
        if let Err(what) =
            check_rcode(&model, rcode).and_then(|()| check_options(&model, &resp, rcode))
        {
            fail(what);
        }
    }
});

/// The response code the OPT records are owed.
fn check_rcode(model: &Model, rcode: u16) -> Result<(), String> {
    // FORMERR is owed for these, and allowed for the reasons the RFCs
    // leave open: a TSIG record, a non-root OPT owner, an extended RCODE
    // in a query, a malformed cookie, a question of type OPT or of another
    // meta-type (128-250: NXNAME's FORMERR, RFC 9824 §3.5), a scope in the
    // query while QUERY_SCOPE_IS_FORMERR is off.
    let owed = model.opt_formerr(QUERY_SCOPE_IS_FORMERR);
    let scope_sent = model
        .single_ecs()
        .is_some_and(|e| matches!(e, EcsVerdict::Valid { scope, .. } if scope != 0));
    let open = model.tsigs > 0
        || model.qtype == 41
        || (128..=250).contains(&model.qtype)
        || model.opts.iter().any(|o| !o.owner_root || o.ext_rcode)
        || model.cookie_malformed()
        || scope_sent;
    let formerr_ok = owed || open;
    // The envelope decides first, in this order (as BIND does): a bad
    // OPT record (FORMERR), TSIG (NOTAUTH/BADKEY), the EDNS version
    // (BADVERS); only then the opcode (NOTIMP).
    let verdict = if owed {
        rcode == FORMERR || (model.tsigs > 0 && rcode == NOTAUTH)
    } else if model.tsigs > 0 {
        rcode == NOTAUTH || (formerr_ok && rcode == FORMERR)
    } else if model.bad_version() {
        rcode == BADVERS || (formerr_ok && rcode == FORMERR)
    } else if model.opcode != 0 {
        rcode == NOTIMP || (formerr_ok && rcode == FORMERR)
    } else {
        rcode != FORMERR || open
    };
    if verdict {
        return Ok(());
    }
    Err(if owed {
        format!("an OPT record the RFCs answer with FORMERR got rcode {rcode}")
    } else if model.tsigs > 0 {
        format!("a TSIG-signed query got rcode {rcode}, not NOTAUTH")
    } else if model.bad_version() {
        format!("EDNS version other than 0 got rcode {rcode}, not BADVERS")
    } else if model.opcode != 0 {
        format!("opcode {} got rcode {rcode}, not NOTIMP", model.opcode)
    } else {
        "FORMERR for a well-formed query".into()
    })
}

/// ECS, NSID and COOKIE in the response's OPT record.
fn check_options(model: &Model, resp: &Message, rcode: u16) -> Result<(), String> {
    let Some(re) = &resp.edns else {
        return Ok(());
    };
    if let Some(EcsVerdict::Valid { addr, source, .. }) = model.single_ecs()
        && model.opcode == 0
        && !model.bad_version()
        && !model.opt_formerr(QUERY_SCOPE_IS_FORMERR)
        && matches!(rcode, 0 | 3)
        && !resp.metadata.truncation
    {
        let Some(cs) = ecs(re) else {
            return Err("no ECS in the answer to a query with a valid ECS option".into());
        };
        if cs.addr() != addr || cs.source_prefix() != source {
            return Err(format!(
                "the response's ECS {}/{} does not copy the query's {addr}/{source}",
                cs.addr(),
                cs.source_prefix()
            ));
        }
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if cs.scope_prefix() > max {
            return Err(format!(
                "ECS scope {} beyond the family's {max} bits",
                cs.scope_prefix()
            ));
        }
        if source == 0 && cs.scope_prefix() != 0 {
            return Err(format!(
                "ECS scope {} for source prefix 0",
                cs.scope_prefix()
            ));
        }
    }
    if re.options().get(EdnsCode::NSID).is_some() && !model.nsid_requested() {
        return Err("NSID in the response to a query that did not ask for it".into());
    }
    if let Some(EdnsOption::Unknown(_, cookie)) = re.options().get(EdnsCode::Cookie) {
        let Some(client) = model.client_cookie() else {
            return Err("COOKIE in the response to a query without a well-formed one".into());
        };
        if !cookie.starts_with(client) || !(16..=40).contains(&cookie.len()) {
            return Err(format!(
                "the response's COOKIE {} does not start with the client cookie {} or is not 16 to 40 bytes",
                hex(cookie),
                hex(client)
            ));
        }
    }
    Ok(())
}
