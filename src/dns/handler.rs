//! Query → response bytes. Transport-agnostic and synchronous: the UDP and
//! TCP loops in `server` call [`handle`] with the packet and the source
//! address, and send back whatever it returns.
//!
//! Every input is either answered or dropped; nothing here panics on a
//! malformed packet (the fuzz-style tests feed it garbage).

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, RecordType};
use hickory_proto::serialize::binary::BinEncodable;

use crate::policy::Client;
use crate::snapshot::Snapshot;

/// How the query arrived; decides the response size limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// UDP: responses are limited by EDNS (RFC 6891) and truncated (TC).
    Udp,
    /// TCP: up to 65535 bytes.
    Tcp,
}

/// Size limit for plain DNS over UDP (RFC 1035 §4.2.1).
const CLASSIC_UDP_LIMIT: usize = 512;

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
    snap.fast.answer(
        &snap.health,
        packet,
        src,
        transport,
        snap.max_udp_payload,
        out,
    )
}

/// The general path: hickory parses the query and encodes the response.
/// It is the reference the fast path is tested against.
pub fn handle_slow(
    snap: &Snapshot,
    packet: &[u8],
    src: IpAddr,
    transport: Transport,
) -> Option<Vec<u8>> {
    if packet.len() < 12 {
        return None;
    }
    // QR set: this is a response. Answering it could start a loop between
    // two servers, so drop it (RFC 5452 §9.1 spirit; BIND and Knot do).
    if packet[2] & 0x80 != 0 {
        return None;
    }
    let Ok(query) = Message::from_vec(packet) else {
        return Some(formerr_from_header(packet));
    };
    let (response, limit) = respond(snap, &query, src, transport);
    Some(encode(&response, limit))
}

/// FORMERR for a packet hickory cannot parse: echo the ID, opcode and RD
/// bit; no sections (RFC 1035 §4.1.1: the question may be unreadable).
fn formerr_from_header(packet: &[u8]) -> Vec<u8> {
    let opcode_rd = packet[2] & 0x79; // opcode bits and RD
    vec![
        packet[0],
        packet[1],
        0x80 | opcode_rd,
        ResponseCode::FormErr.low(),
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ]
}

/// The client's ECS option, validated (RFC 7871 §6).
fn client_subnet(edns: &Edns) -> Result<Option<ClientSubnet>, ()> {
    let Some(EdnsOption::Subnet(cs)) = edns.option(EdnsCode::Subnet) else {
        return Ok(None);
    };
    let (addr, prefix) = (cs.addr(), cs.source_prefix());
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(());
    }
    // "ADDRESS ... MUST be truncated to the number of bits indicated by
    // the SOURCE PREFIX-LENGTH field" and a server receiving set bits
    // beyond it SHOULD return FORMERR.
    match ipnet::IpNet::new(addr, prefix) {
        Ok(net) if net.network() == addr => Ok(Some(*cs)),
        _ => Err(()),
    }
}

/// Converts an IPv4-mapped IPv6 address to IPv4 (dual-stack sockets).
pub(super) fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// Builds the response message and its size limit.
fn respond(
    snap: &Snapshot,
    query: &Message,
    src: IpAddr,
    transport: Transport,
) -> (Message, usize) {
    let mut md = Metadata::response_from_request(&query.metadata);
    md.message_type = MessageType::Response;
    let mut resp = Message::new(md.id, MessageType::Response, md.op_code);
    resp.metadata = md;
    resp.queries = query.queries.clone();

    let udp_limit = match &query.edns {
        Some(e) => usize::from(e.max_payload().clamp(512, snap.max_udp_payload)),
        None => CLASSIC_UDP_LIMIT,
    };
    let limit = match transport {
        Transport::Udp => udp_limit,
        Transport::Tcp => usize::from(u16::MAX),
    };
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
        (resp, limit)
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
    let ecs = match query.edns.as_ref().map(client_subnet) {
        Some(Ok(ecs)) => ecs,
        Some(Err(())) => return fail(resp, resp_edns, ResponseCode::FormErr),
        None => None,
    };
    if query.queries.len() != 1 {
        return fail(resp, resp_edns, ResponseCode::FormErr);
    }
    let q: &Query = &query.queries[0];
    let qtype = q.query_type();
    if matches!(qtype, RecordType::OPT) {
        return fail(resp, resp_edns, ResponseCode::FormErr);
    }
    // Only the Internet class is served; zone transfers are not offered.
    if q.query_class() != DNSClass::IN || matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
        return fail(resp, resp_edns, ResponseCode::Refused);
    }
    let Some((zone_index, zone)) = snap.find_zone(q.name()) else {
        return fail(resp, resp_edns, ResponseCode::Refused);
    };

    // RFC 7871 §7.1.2: SOURCE PREFIX-LENGTH 0 means "do not use my
    // address"; route on the packet source and answer with scope 0.
    let routed_on_ecs = ecs.filter(|cs| cs.source_prefix() > 0);
    let client = Client {
        addr: canonical(routed_on_ecs.map_or(src, |cs| cs.addr())),
    };
    let res = zone.resolve_with(q.name(), qtype, &mut |svc| {
        svc.selector.select(&client, &snap.health, zone_index)
    });
    let scope = res.scope;
    fill(&mut resp, res);

    if let (Some(e), Some(mut cs)) = (resp_edns.as_mut(), ecs) {
        // RFC 7871 §7.2.1: copy FAMILY, SOURCE PREFIX-LENGTH and ADDRESS;
        // SCOPE says how widely the answer may be reused.
        let scope = match (routed_on_ecs, scope) {
            (Some(_), Some(scope)) => scope_in_family(cs.addr(), client.addr, scope),
            _ => 0,
        };
        cs.set_scope_prefix(scope);
        e.options_mut().insert(EdnsOption::Subnet(cs));
    }
    resp.edns = resp_edns;
    (resp, limit)
}

/// Copies a resolution into a response message.
pub(super) fn fill(resp: &mut Message, res: crate::dns::zone::Resolution) {
    resp.metadata.authoritative = res.authoritative;
    resp.metadata.response_code = res.rcode;
    resp.answers = res.answers;
    resp.authorities = res.authorities;
    resp.additionals = res.additionals;
}

/// A scope computed for `routed` (maybe IPv4 from a mapped address),
/// expressed in the family of the ECS option `ecs_addr`.
pub(super) fn scope_in_family(ecs_addr: IpAddr, routed: IpAddr, scope: u8) -> u8 {
    match (ecs_addr, routed) {
        (IpAddr::V6(_), IpAddr::V4(_)) => scope + 96,
        _ => scope,
    }
}

/// Encodes `resp`; if it exceeds `limit`, sends instead a truncated
/// response (TC, question and OPT only) so the client retries over TCP
/// (RFC 2181 §9, RFC 7766).
fn encode(resp: &Message, limit: usize) -> Vec<u8> {
    let full = to_bytes(resp);
    if full.len() <= limit {
        return full;
    }
    let mut tc = Message::new(
        resp.metadata.id,
        MessageType::Response,
        resp.metadata.op_code,
    );
    tc.metadata = resp.metadata;
    tc.metadata.truncation = true;
    tc.queries = resp.queries.clone();
    tc.edns = resp.edns.clone();
    let bytes = to_bytes(&tc);
    if bytes.len() <= limit {
        bytes
    } else {
        // Only a gigantic ECS option could do this; drop the OPT too.
        tc.edns = None;
        to_bytes(&tc)
    }
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
