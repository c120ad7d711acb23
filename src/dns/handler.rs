//! Query → response bytes. Transport-agnostic and synchronous: the UDP and
//! TCP loops in `server` call [`handle`] with the packet and the source
//! address, and send back whatever it returns.
//!
//! Every input is either answered or dropped; nothing here panics on a
//! malformed packet (the fuzz-style tests feed it garbage).

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{DNSClass, RecordType};
use hickory_proto::serialize::binary::BinEncodable;

pub use super::envelope::Transport;
use super::envelope::{Envelope, echo_ecs};
use crate::policy::Client;
use crate::snapshot::Snapshot;

/// Answers one query packet. `None` means "send nothing" (too short to
/// carry an ID, or a response rather than a query).
pub fn handle(
    snap: &Snapshot,
    packet: &[u8],
    src: IpAddr,
    transport: Transport,
) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    handle_into(snap, packet, src, transport, &mut out).then_some(out)
}

/// Answers one query packet into `out` (cleared first; reuse it across
/// queries to avoid allocating). Returns `false` when nothing is to be
/// sent. Tries the template fast path first, then the general path.
pub fn handle_into(
    snap: &Snapshot,
    packet: &[u8],
    src: IpAddr,
    transport: Transport,
    out: &mut Vec<u8>,
) -> bool {
    if handle_fast(snap, packet, src, transport, out) {
        return true;
    }
    out.clear();
    match handle_slow(snap, packet, src, transport) {
        Some(bytes) => {
            out.extend_from_slice(&bytes);
            true
        }
        None => false,
    }
}

/// The fast path alone (for the differential tests): `true` if it answered
/// into `out`, `false` if it declined the query.
pub fn handle_fast(
    snap: &Snapshot,
    packet: &[u8],
    src: IpAddr,
    transport: Transport,
    out: &mut Vec<u8>,
) -> bool {
    let serving = super::fast::Serving {
        health: &snap.health,
        max_udp_payload: snap.max_udp_payload,
        seed: snap.seed,
    };
    snap.fast.answer(serving, packet, src, transport, out)
}

/// The general path: hickory parses the query and encodes the response.
/// It is the reference the fast path is tested against.
pub fn handle_slow(
    snap: &Snapshot,
    packet: &[u8],
    src: IpAddr,
    transport: Transport,
) -> Option<Vec<u8>> {
    let env = Envelope::scan(packet)?;
    let mut out = Vec::new();
    let response = Message::from_vec(packet)
        .ok()
        .and_then(|query| respond(snap, &query, &env, src));
    match response {
        Some(response) => {
            let limit = env.limit(transport, snap.max_udp_payload);
            encode_into(&response, limit, &mut out);
        }
        // FORMERR with the question and OPT where they can be read, as
        // the fast path sends it.
        None => env.formerr(packet, snap.max_udp_payload, &mut out),
    }
    Some(out)
}

/// Builds the response message; `None` for FORMERR, which the envelope
/// writes.
fn respond(snap: &Snapshot, query: &Message, env: &Envelope, src: IpAddr) -> Option<Message> {
    let mut md = Metadata::response_from_request(&query.metadata);
    md.message_type = MessageType::Response;
    let mut resp = Message::new(md.id, MessageType::Response, md.op_code);
    resp.metadata = md;
    // At most the first question is echoed: a response must never grow
    // with the number of questions a client sends.
    resp.queries.extend(query.queries.first().cloned());

    // RFC 6891 §6.1.1: a response to a query with OPT carries OPT.
    let mut resp_edns = query.edns.as_ref().map(|q| {
        let mut e = Edns::new();
        e.set_max_payload(snap.max_udp_payload);
        // RFC 3225 §3: "The DO bit of the query MUST be copied in the
        // response." (Meridian does not sign; AD stays clear.)
        e.set_dnssec_ok(q.flags().dnssec_ok);
        e
    });
    let fail = |mut resp: Message, resp_edns: Option<Edns>, code: ResponseCode| {
        resp.metadata.response_code = code;
        resp.edns = resp_edns;
        Some(resp)
    };

    if query.metadata.op_code != OpCode::Query {
        return fail(resp, resp_edns, ResponseCode::NotImp);
    }
    if let Some(e) = &query.edns
        && e.version() > 0
    {
        // RFC 6891 §6.1.3: BADVERS, with our highest version (0).
        resp.queries.clear();
        return fail(resp, resp_edns, ResponseCode::BADVERS);
    }
    // A bad ECS option or OPT record (RFC 7871 §6, RFC 6891 §6.1.1), or
    // other than one question (RFC 9619): FORMERR.
    if env.bad_opt || query.queries.len() != 1 {
        return None;
    }
    let q: &Query = &query.queries[0];
    let qtype = q.query_type();
    if matches!(qtype, RecordType::OPT) {
        return None;
    }
    // Only the Internet class is served; zone transfers are not offered.
    if q.query_class() != DNSClass::IN || matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
        return fail(resp, resp_edns, ResponseCode::Refused);
    }
    let Some((zone_index, zone)) = snap.find_zone(q.name()) else {
        return fail(resp, resp_edns, ResponseCode::Refused);
    };

    let client = Client {
        addr: env.client_addr(src),
    };
    let entropy = env.entropy(snap.seed, src);
    let health = snap.health.zone(zone_index);
    let res = zone.resolve_with(q.name(), qtype, &mut |svc| {
        svc.plan.decide(&client, health, entropy, &mut ())
    });
    let scope = res.scope;
    res.fill(&mut resp);

    if let (Some(e), Some((ecs, scope))) = (resp_edns.as_mut(), echo_ecs(env, client.addr, scope)) {
        let cs = ClientSubnet::new(ecs.addr, ecs.source, scope);
        e.options_mut().insert(EdnsOption::Subnet(cs));
    }
    resp.edns = resp_edns;
    Some(resp)
}

/// Encodes `resp` into `out`, never longer than `limit`. A response
/// that does not fit is sent truncated instead (TC, the question and OPT
/// only) so the client retries over TCP (RFC 2181 §9, RFC 7766); if even
/// that does not fit, without OPT, then with the header alone.
fn encode_into(resp: &Message, limit: usize, out: &mut Vec<u8>) {
    *out = to_bytes(resp);
    if out.len() <= limit {
        return;
    }
    let mut tc = Message::new(
        resp.metadata.id,
        MessageType::Response,
        resp.metadata.op_code,
    );
    tc.metadata = resp.metadata;
    tc.metadata.truncation = true;
    tc.queries.extend(resp.queries.first().cloned());
    tc.edns = resp.edns.clone();
    for strip in 0..3 {
        match strip {
            0 => {}
            1 => tc.edns = None,
            _ => tc.queries.clear(),
        }
        *out = to_bytes(&tc);
        if out.len() <= limit {
            return;
        }
    }
    // A header always fits: every limit is at least 512.
    out.truncate(12);
    out[4..].fill(0);
}

fn to_bytes(m: &Message) -> Vec<u8> {
    let mut buf = Vec::with_capacity(512);
    let mut enc = hickory_proto::serialize::binary::BinEncoder::new(&mut buf);
    match m.emit(&mut enc) {
        Ok(()) => buf,
        Err(_) => {
            // Unencodable (should not happen with validated data): SERVFAIL
            // with the header only.
            let mut h = vec![0u8; 12];
            h[0..2].copy_from_slice(&m.metadata.id.to_be_bytes());
            h[2] = 0x80 | (u8::from(m.metadata.op_code) << 3);
            h[3] = ResponseCode::ServFail.low();
            h
        }
    }
}
