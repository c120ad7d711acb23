//! Query → response bytes. Transport-agnostic and synchronous: the UDP and
//! TCP loops in `server` call [`handle`] with the packet and the source
//! address, and send back whatever it returns.
//!
//! Every input is either answered or dropped; nothing here panics on a
//! malformed packet (the fuzz-style tests feed it garbage).

use std::net::IpAddr;

use hickory_proto::op::{Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};
use hickory_proto::serialize::binary::BinEncodable;

use super::cookie;
use super::counters::{Event, count};
pub use super::envelope::Transport;
use super::envelope::{Ecs, Envelope, OptOut, canonical, echo_ecs};
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

/// What answering a query came to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Handled {
    /// `out` holds a response to send.
    pub send: bool,
    /// The query carried a valid server cookie (RFC 7873 §5.2.4): its
    /// source address is proven, so response rate limiting exempts it.
    pub cookie_valid: bool,
}

/// What a query was, and how it was decided, in the snapshot's numeric
/// ids (names are resolved when metrics are scraped): what the metrics
/// and the query log count. The serving loop keeps one and the handler
/// fills it in with a few stores per query; the decision's fields are
/// meaningful only when `service` is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The zone's position in [`Snapshot::zones`], or [`Seen::NO_ZONE`].
    pub zone: u16,
    /// QTYPE, 0 when the question could not be read.
    pub qtype: u16,
    /// The service's position in its zone, or [`Seen::NO_SERVICE`].
    pub service: u16,
    /// The decision's datacenters (when `service` is set).
    pub choice: crate::policy::Choice,
    /// The decision's outcome (when `service` is set).
    pub outcome: crate::policy::Outcome,
    /// The policy step that decided (when `service` is set): see
    /// [`crate::policy::Decision::step`].
    pub step: u8,
    /// ECS in the query: 0 none, 4 or 6 its family.
    pub ecs: u8,
    /// The ECS scope returned (with `ecs`).
    pub scope: u8,
    /// An extended RCODE the envelope answered (BADVERS 16, BADCOOKIE
    /// 23); 0 when the header's RCODE says it all.
    pub ext_rcode: u8,
    /// The name does not exist, but the signed answer says so with
    /// NOERROR and an NSEC listing NXNAME (RFC 9824 compact denial): the
    /// metrics count it as NXDOMAIN all the same.
    pub nxname: bool,
}

impl Seen {
    /// Starts a query: no zone, no service, no extended RCODE.
    #[inline]
    fn start(&mut self, env: &Envelope) {
        self.zone = Self::NO_ZONE;
        self.service = Self::NO_SERVICE;
        self.qtype = env.question.as_ref().map_or(0, |q| q.qtype);
        self.ecs = match env.ecs {
            None => 0,
            Some(e) if e.addr.is_ipv4() => 4,
            Some(_) => 6,
        };
        self.scope = 0;
        self.ext_rcode = 0;
        self.nxname = false;
    }

    /// No zone holds the name (or it was not read).
    pub const NO_ZONE: u16 = u16::MAX;
    /// No service decided the answer.
    pub const NO_SERVICE: u16 = u16::MAX;

    /// Records a service's decision.
    pub(crate) fn decided(&mut self, service: usize, d: &crate::policy::Decision) {
        self.service = u16::try_from(service).unwrap_or(Self::NO_SERVICE);
        self.choice = d.choice;
        self.outcome = d.outcome;
        self.step = d.step;
        self.scope = d.scope;
    }
}

impl Default for Seen {
    fn default() -> Self {
        Self {
            zone: Self::NO_ZONE,
            qtype: 0,
            service: Self::NO_SERVICE,
            choice: crate::policy::Choice::of(&[], false, false),
            outcome: crate::policy::Outcome::Answer,
            step: 0,
            ecs: 0,
            scope: 0,
            ext_rcode: 0,
            nxname: false,
        }
    }
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
    handle_query(snap, packet, src, transport, out).send
}

/// [`handle_into`], also saying whether the query had a valid server
/// cookie.
pub fn handle_query(
    snap: &Snapshot,
    packet: &[u8],
    src: IpAddr,
    transport: Transport,
    out: &mut Vec<u8>,
) -> Handled {
    // The clock is read only for a query that carries a cookie.
    run(
        snap,
        packet,
        (src, transport, None),
        Paths::Both,
        &mut Seen::default(),
        out,
    )
}

/// [`handle_query`], also telling `seen` what the query was and how it
/// was decided (for metrics and the query log). The serving loops keep
/// one `Seen` and pass it for every query.
#[inline]
pub fn handle_observed(
    snap: &Snapshot,
    packet: &[u8],
    src: IpAddr,
    transport: Transport,
    out: &mut Vec<u8>,
    seen: &mut Seen,
) -> Handled {
    run(snap, packet, (src, transport, None), Paths::Both, seen, out)
}

/// [`handle_query`] at cookie time `now` (seconds since the epoch, modulo
/// 2^32), for tests that compare the two paths byte for byte.
#[doc(hidden)]
pub fn handle_query_at(
    snap: &Snapshot,
    packet: &[u8],
    src: IpAddr,
    transport: Transport,
    now: u32,
    out: &mut Vec<u8>,
) -> Handled {
    run(
        snap,
        packet,
        (src, transport, Some(now)),
        Paths::Both,
        &mut Seen::default(),
        out,
    )
}

/// Which paths may answer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Paths {
    Both,
    Fast,
    Slow,
}

/// Scans `packet` and answers it from the envelope alone or by `paths`.
/// `now` is the cookie time; `None` reads the clock if a cookie needs it.
fn run(
    snap: &Snapshot,
    packet: &[u8],
    (src, transport, now): (IpAddr, Transport, Option<u32>),
    paths: Paths,
    seen: &mut Seen,
    out: &mut Vec<u8>,
) -> Handled {
    let Some(env) = Envelope::scan(packet) else {
        return Handled::default();
    };
    let ctx = Context::new(snap, &env, src, now);
    seen.start(&env);
    let send = ctx.envelope_reply(snap, packet, transport, seen, out)
        || (paths != Paths::Slow && ctx.fast(snap, packet, src, transport, seen, out))
        || (paths != Paths::Fast && ctx.slow(snap, packet, src, transport, seen, out));
    Handled {
        send,
        cookie_valid: ctx.cookie_valid,
    }
}

/// The fast path alone (for the differential tests), at cookie time
/// `now`: `true` if it answered into `out`, `false` if it declined.
#[doc(hidden)]
pub fn handle_fast_at(
    snap: &Snapshot,
    packet: &[u8],
    src: IpAddr,
    transport: Transport,
    now: u32,
    out: &mut Vec<u8>,
) -> bool {
    run(
        snap,
        packet,
        (src, transport, Some(now)),
        Paths::Fast,
        &mut Seen::default(),
        out,
    )
    .send
}

/// The general path alone, at cookie time `now`: hickory parses the
/// query and encodes the response. It is the reference the fast path is
/// tested against.
#[doc(hidden)]
pub fn handle_slow_at(
    snap: &Snapshot,
    packet: &[u8],
    src: IpAddr,
    transport: Transport,
    now: u32,
) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    run(
        snap,
        packet,
        (src, transport, Some(now)),
        Paths::Slow,
        &mut Seen::default(),
        &mut out,
    )
    .send
    .then_some(out)
}

/// A scanned query and what every response to it carries.
struct Context<'s> {
    env: &'s Envelope,
    /// The OPT options of every response: cookie and NSID.
    base: OptOut<'s>,
    cookie_valid: bool,
}

impl<'s> Context<'s> {
    fn new(snap: &'s Snapshot, env: &'s Envelope, src: IpAddr, now: Option<u32>) -> Self {
        let mut base = OptOut {
            nsid: snap.nsid.as_deref(),
            ..OptOut::default()
        };
        let mut cookie_valid = false;
        if let (Some(c), Some(cookies)) = (&env.cookie, &snap.cookies) {
            let src = canonical(src);
            let now = now.unwrap_or_else(cookie::now);
            let (valid, server) = cookies.respond(&c.client, c.server(), src, now);
            cookie_valid = valid;
            // A fresh server cookie with every response (RFC 9018 §4.3
            // allows reuse for half an hour; minting costs one hash).
            let mut both = [0u8; 24];
            both[..8].copy_from_slice(&c.client);
            both[8..].copy_from_slice(&server);
            base.cookie = Some(both);
        }
        Self {
            env,
            base,
            cookie_valid,
        }
    }

    /// The answers decided by the envelope alone, the same on both paths:
    /// FORMERR for a bad OPT or TSIG placement, BADKEY for a signed query,
    /// BADVERS, and BADCOOKIE where cookies are required.
    fn envelope_reply(
        &self,
        snap: &Snapshot,
        packet: &[u8],
        transport: Transport,
        seen: &mut Seen,
        out: &mut Vec<u8>,
    ) -> bool {
        let env = self.env;
        let max = snap.max_udp_payload;
        if env.bad_opt {
            count(Event::FormErr);
            env.formerr(packet, max, out);
            return true;
        }
        if env.tsig.is_some() {
            if env.badkey(packet, max, &self.base, out) {
                count(Event::BadKey);
            } else {
                count(Event::FormErr);
                env.formerr(packet, max, out);
            }
            return true;
        }
        if env.opt.is_some_and(|o| o.version > 0) {
            // RFC 6891 §6.1.3: BADVERS (16), with our highest version (0)
            // and the question, as BIND sends it.
            count(Event::BadVers);
            seen.ext_rcode = 16;
            env.error(packet, 16, max, &self.base, out);
            return true;
        }
        let require = snap.cookies.as_ref().is_some_and(|c| c.require);
        if require && transport == Transport::Udp && env.cookie.is_some() && !self.cookie_valid {
            // RFC 7873 §5.2.3: BADCOOKIE (23) with a fresh cookie; the
            // client retries with it.
            count(Event::BadCookie);
            seen.ext_rcode = 23;
            env.error(packet, 23, max, &self.base, out);
            return true;
        }
        false
    }

    fn fast(
        &self,
        snap: &Snapshot,
        packet: &[u8],
        src: IpAddr,
        transport: Transport,
        seen: &mut Seen,
        out: &mut Vec<u8>,
    ) -> bool {
        let serving = super::fast::Serving {
            health: &snap.health,
            latency: &snap.latency,
            max_udp_payload: snap.max_udp_payload,
            seed: snap.seed,
        };
        snap.fast.answer(
            serving, self.env, packet, src, transport, &self.base, seen, out,
        )
    }

    fn slow(
        &self,
        snap: &Snapshot,
        packet: &[u8],
        src: IpAddr,
        transport: Transport,
        seen: &mut Seen,
        out: &mut Vec<u8>,
    ) -> bool {
        let env = self.env;
        // The fast path may have declined after filling some of it.
        seen.zone = Seen::NO_ZONE;
        seen.service = Seen::NO_SERVICE;
        seen.scope = 0;
        seen.nxname = false;
        let response = Message::from_vec(packet)
            .ok()
            .and_then(|query| respond(snap, &query, env, src, seen));
        match response {
            Some((mut response, ecs)) => {
                let limit = env.limit(transport, snap.max_udp_payload);
                let opt = OptOut { ecs, ..self.base };
                encode_into(env, &mut response, &opt, limit, snap.max_udp_payload, out);
            }
            // FORMERR with the question and OPT where they can be read, as
            // the fast path sends it.
            None => {
                count(Event::FormErr);
                env.formerr(packet, snap.max_udp_payload, out);
            }
        }
        true
    }
}

/// Builds the response message (without OPT, which the envelope writes)
/// and the ECS option to echo; `None` for FORMERR.
fn respond(
    snap: &Snapshot,
    query: &Message,
    env: &Envelope,
    src: IpAddr,
    seen: &mut Seen,
) -> Option<(Message, Option<(Ecs, u8)>)> {
    let mut md = Metadata::response_from_request(&query.metadata);
    md.message_type = MessageType::Response;
    let mut resp = Message::new(md.id, MessageType::Response, md.op_code);
    resp.metadata = md;
    // At most the first question is echoed: a response must never grow
    // with the number of questions a client sends.
    resp.queries.extend(query.queries.first().cloned());
    let fail = |mut resp: Message, code: ResponseCode| {
        resp.metadata.response_code = code;
        Some((resp, None))
    };

    if query.metadata.op_code != OpCode::Query {
        return fail(resp, ResponseCode::NotImp);
    }
    // Other than one question (RFC 9619): FORMERR. So is a query whose
    // OPT record hickory reads but the envelope cannot find: the response
    // OPT (and every EDNS rule) comes from the envelope.
    if query.queries.len() != 1 || query.edns.is_some() != env.opt.is_some() {
        return None;
    }
    let q: &Query = &query.queries[0];
    let qtype = q.query_type();
    // Meta-types are not asked for: OPT, and 128-250 (RFC 6895 §3.1),
    // NXNAME among them (RFC 9824 §3.5: FORMERR). TKEY and TSIG (249,
    // 250) are not offered.
    if matches!(qtype, RecordType::OPT) || (128..=250).contains(&u16::from(qtype)) {
        return None;
    }
    // Only the Internet class is served; zone transfers are not offered.
    if q.query_class() != DNSClass::IN || matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
        return fail(resp, ResponseCode::Refused);
    }
    let Some((zone_index, zone)) = snap.find_zone(q.name()) else {
        return fail(resp, ResponseCode::Refused);
    };
    seen.zone = u16::try_from(zone_index).unwrap_or(Seen::NO_ZONE);

    let client = Client {
        addr: env.client_addr(src),
    };
    let entropy = env.entropy(snap.seed, src);
    let health = snap.health.zone(zone_index);
    let mut decided = None;
    let mut res = zone.resolve_with(q.name(), qtype, &mut |svc| {
        let latency = crate::policy::Latency {
            view: &snap.latency,
            zone: zone_index,
        };
        let d = svc
            .plan
            .decide_with(&client, health, latency, entropy, &mut ());
        decided = Some(d);
        d
    });
    if let (Some(service), Some(d)) = (res.service, &decided) {
        seen.decided(service, d);
    }
    if env.ecs.is_some() && res.tailored_via_cname() {
        res.first_cname_only();
    }
    // DNSSEC: signatures and denial records only when asked for (RFC 3225
    // §3: "the DO bit of the query MUST be copied in the response" and
    // security records go only to a query that sets it).
    if env.opt.is_some_and(|o| o.dnssec_ok) && zone.is_signed() {
        if zone.sign_answer(&mut res, q.name(), qtype).is_err() {
            // The on-demand signing budget is spent: SERVFAIL, which a
            // resolver retries (at another server, or later), rather than
            // an unsigned answer it would hold bogus. README, "DNSSEC".
            return fail(resp, ResponseCode::ServFail);
        }
        seen.nxname = res.nxname;
        // The fast path answers this name's next queries from it.
        if seen.nxname && res.answers.is_empty() {
            zone.fast_index()
                .remember_denial(q.name(), &res.authorities);
        }
    }
    let scope = res.scope;
    if scope.is_none() {
        seen.scope = 0;
    }
    res.fill(&mut resp);
    Some((resp, echo_ecs(env, client.addr, scope)))
}

/// Encodes `resp` with the OPT record `opt` into `out`, never longer
/// than `limit` (RFC 2181 §9): first whole; then without the additional
/// section, unless it holds a referral's glue (RFC 9471); then truncated
/// (TC, the question and OPT only) so the client retries over TCP; if
/// even that does not fit, without OPT, then with the header alone.
fn encode_into(
    env: &Envelope,
    resp: &mut Message,
    opt: &OptOut<'_>,
    limit: usize,
    max_udp_payload: u16,
    out: &mut Vec<u8>,
) {
    let encode = |m: &Message, with_opt: bool, out: &mut Vec<u8>| {
        *out = to_bytes(m);
        if with_opt && env.opt.is_some() && out.len() >= 12 {
            let ar = u16::from_be_bytes([out[10], out[11]]).saturating_add(1);
            out[10..12].copy_from_slice(&ar.to_be_bytes());
            env.write_opt(out, max_udp_payload, opt);
        }
    };
    encode(resp, true, out);
    if out.len() <= limit {
        return;
    }
    let referral = resp
        .authorities
        .iter()
        .any(|r| r.record_type() == RecordType::NS);
    if !resp.additionals.is_empty() && !referral {
        resp.additionals.clear();
        encode(resp, true, out);
        if out.len() <= limit {
            return;
        }
    }
    let mut tc = Message::new(
        resp.metadata.id,
        MessageType::Response,
        resp.metadata.op_code,
    );
    tc.metadata = resp.metadata;
    tc.metadata.truncation = true;
    tc.queries.extend(resp.queries.first().cloned());
    for strip in 0..3 {
        if strip == 2 {
            tc.queries.clear();
        }
        encode(&tc, strip == 0, out);
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
