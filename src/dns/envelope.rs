//! The response envelope: the rules every response follows whichever path
//! builds its sections. Both the template fast path (`fast`) and the
//! general path (`handler`) read the query through [`Envelope::scan`] and
//! take from here the client address, the validated ECS option, the UDP
//! size limit, the OPT record they send back and the FORMERR for a query
//! they cannot answer. A rule written here holds for both paths, so a
//! query gets the same verdict whichever path answers it.
//!
//! [`Envelope::scan`] reads the raw packet by hand, without allocating:
//! header, first question, then every record up to and including the OPT
//! record. It does not trust hickory-proto for the OPT record's options
//! because hickory reads only the ECS address octets the prefix needs and
//! ignores the rest (RFC 7871 §6 says such an option is FORMERR), and it
//! logs a warning per packet for a truncated option.

use std::net::IpAddr;

/// How the query arrived; decides the response size limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// UDP: responses are limited by EDNS (RFC 6891) and truncated (TC).
    Udp,
    /// TCP: up to 65535 bytes.
    Tcp,
}

/// Size limit for plain DNS over UDP (RFC 1035 §4.2.1).
pub(crate) const CLASSIC_UDP_LIMIT: usize = 512;

/// Largest DNS message (the TCP length prefix is 16 bits).
pub(crate) const MAX_MESSAGE: usize = u16::MAX as usize;

const TYPE_OPT: u16 = 41;
const OPTION_ECS: u16 = 8;
const HEADER_LEN: usize = 12;

/// A validated EDNS Client Subnet option (RFC 7871 §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ecs {
    /// ADDRESS, with every bit beyond `source` zero.
    pub(crate) addr: IpAddr,
    /// SOURCE PREFIX-LENGTH.
    pub(crate) source: u8,
}

/// The query's OPT record (RFC 6891 §6.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Opt {
    /// The requestor's UDP payload size.
    pub(crate) payload: u16,
    /// Upper eight bits of the extended RCODE (zero in queries).
    pub(crate) ext_rcode: u8,
    /// EDNS version.
    pub(crate) version: u8,
    /// The DO bit, copied to the response (RFC 3225 §3).
    pub(crate) dnssec_ok: bool,
    /// Options the general path decodes itself (NSID, DAU/DHU/N3U).
    pub(crate) other_known_options: bool,
}

/// The first question, when it can be read without following compression.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Question {
    /// Lower-cased wire-format QNAME.
    pub(crate) lower: [u8; 255],
    /// Length of the QNAME on the wire.
    pub(crate) name_len: usize,
    pub(crate) qtype: u16,
    pub(crate) qclass: u16,
    /// End of the question in the packet (it starts at byte 12).
    pub(crate) end: usize,
}

impl Question {
    /// The lower-cased wire-format QNAME.
    pub(crate) fn name(&self) -> &[u8] {
        &self.lower[..self.name_len]
    }
}

/// What a query's header, first question and OPT record say, read from
/// the raw packet.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Envelope {
    pub(crate) id: [u8; 2],
    /// Header byte 2: QR, opcode, AA, TC, RD.
    pub(crate) flags0: u8,
    /// Header byte 3: RA, Z, AD, CD, RCODE.
    pub(crate) flags1: u8,
    /// QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT.
    pub(crate) counts: [u16; 4],
    pub(crate) question: Option<Question>,
    pub(crate) opt: Option<Opt>,
    /// The ECS option, if present and valid.
    pub(crate) ecs: Option<Ecs>,
    /// The OPT record breaks a rule whose answer is FORMERR: an invalid
    /// ECS option (RFC 7871 §6), two ECS options, an option running past
    /// the record, or a second OPT record (RFC 6891 §6.1.1).
    pub(crate) bad_opt: bool,
    /// Every record the counts announce was read, and nothing follows.
    pub(crate) exact: bool,
}

fn be16(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]))
}

/// Skips a (possibly compressed) name starting at `at`; returns the offset
/// after it.
fn skip_name(p: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *p.get(at)?;
        match len & 0xc0 {
            0x00 if len == 0 => return Some(at + 1),
            0x00 => at += 1 + usize::from(len),
            0xc0 => return (at + 2 <= p.len()).then_some(at + 2),
            _ => return None, // extended label types (RFC 6891 §5)
        }
    }
}

/// Reads an uncompressed QNAME at byte 12, lower-casing it.
fn read_question(p: &[u8]) -> Option<Question> {
    let mut q = Question {
        lower: [0; 255],
        name_len: 0,
        qtype: 0,
        qclass: 0,
        end: 0,
    };
    let mut at = HEADER_LEN;
    loop {
        let len = usize::from(*p.get(at)?);
        if len > 63 || q.name_len + 1 + len > 255 {
            return None; // compression, extended label types, too long
        }
        let label = p.get(at + 1..at + 1 + len)?;
        let n = q.name_len;
        q.lower[n] = len as u8;
        for (dst, b) in q.lower[n + 1..n + 1 + len].iter_mut().zip(label) {
            *dst = b.to_ascii_lowercase();
        }
        q.name_len += 1 + len;
        at += 1 + len;
        if len == 0 {
            break;
        }
    }
    q.qtype = be16(p, at)?;
    q.qclass = be16(p, at + 2)?;
    q.end = at + 4;
    Some(q)
}

/// RFC 7871 §6 option data; `None` for anything that is FORMERR: an
/// unknown family, a prefix longer than the family, an address whose
/// length is not exactly the prefix's octets, or bits set beyond the
/// prefix ("ADDRESS ... MUST be truncated to the number of bits indicated
/// by the SOURCE PREFIX-LENGTH field").
fn parse_ecs(d: &[u8]) -> Option<Ecs> {
    let family = be16(d, 0)?;
    let source = *d.get(2)?;
    let addr_bytes = d.get(4..)?;
    let addr_len = usize::from(source).div_ceil(8);
    if addr_bytes.len() != addr_len {
        return None;
    }
    let addr = match family {
        1 if source <= 32 => {
            let mut o = [0u8; 4];
            o[..addr_len].copy_from_slice(addr_bytes);
            IpAddr::from(o)
        }
        2 if source <= 128 => {
            let mut o = [0u8; 16];
            o[..addr_len].copy_from_slice(addr_bytes);
            IpAddr::from(o)
        }
        _ => return None,
    };
    let net = ipnet::IpNet::new(addr, source).ok()?;
    (net.network() == addr).then_some(Ecs { addr, source })
}

impl Envelope {
    /// Reads `p`. `None` when nothing is to be sent: too short to carry an
    /// ID, or QR set (a response: answering it could start a loop between
    /// two servers, so drop it, as BIND and Knot do).
    pub(crate) fn scan(p: &[u8]) -> Option<Self> {
        let header = p.get(..HEADER_LEN)?;
        if header[2] & 0x80 != 0 {
            return None;
        }
        let counts = [be16(p, 4)?, be16(p, 6)?, be16(p, 8)?, be16(p, 10)?];
        let mut env = Self {
            id: [header[0], header[1]],
            flags0: header[2],
            flags1: header[3],
            counts,
            question: None,
            opt: None,
            ecs: None,
            bad_opt: false,
            exact: false,
        };
        if counts[0] > 0 {
            env.question = read_question(p);
        }
        env.exact = env.scan_records(p).is_some_and(|end| end == p.len());
        Some(env)
    }

    /// Walks the sections after the first question, reading the OPT
    /// record on the way; the offset after the last record, or `None`
    /// where the packet runs out or cannot be walked.
    fn scan_records(&mut self, p: &[u8]) -> Option<usize> {
        let [qd, an, ns, ar] = self.counts.map(usize::from);
        let mut at = match (qd, &self.question) {
            (0, _) => HEADER_LEN,
            (_, Some(q)) => q.end,
            (_, None) => return None,
        };
        for _ in 1..qd {
            at = skip_name(p, at)? + 4;
        }
        for i in 0..an + ns + ar {
            let owner = at;
            at = skip_name(p, at)?;
            let rtype = be16(p, at)?;
            let rdlen = usize::from(be16(p, at + 8)?);
            let rdata = p.get(at + 10..at + 10 + rdlen)?;
            if i >= an + ns && rtype == TYPE_OPT {
                self.read_opt(p, owner, at, rdata);
            }
            at += 10 + rdlen;
        }
        Some(at)
    }

    /// Records the OPT record whose fixed part starts at `at` (after the
    /// owner name at `owner`).
    fn read_opt(&mut self, p: &[u8], owner: usize, at: usize, rdata: &[u8]) {
        if self.opt.is_some() {
            // A second OPT: FORMERR (RFC 6891 §6.1.1), echoing the first.
            self.bad_opt = true;
            return;
        }
        // The owner MUST be the root (RFC 6891 §6.1.2). Its fields are
        // still read, so the FORMERR carries an OPT like every answer to
        // a query with one.
        if at != owner + 1 || p[owner] != 0 {
            self.bad_opt = true;
        }
        let mut opt = Opt {
            payload: be16(p, at + 2).unwrap_or(0),
            ext_rcode: p[at + 4],
            version: p[at + 5],
            dnssec_ok: p[at + 6] & 0x80 != 0,
            other_known_options: false,
        };
        let mut i = 0;
        while i < rdata.len() {
            let (Some(code), Some(len)) = (be16(rdata, i), be16(rdata, i + 2)) else {
                self.bad_opt = true;
                break;
            };
            let Some(data) = rdata.get(i + 4..i + 4 + usize::from(len)) else {
                self.bad_opt = true;
                break;
            };
            match code {
                OPTION_ECS => match (self.ecs, parse_ecs(data)) {
                    (None, Some(ecs)) => self.ecs = Some(ecs),
                    _ => self.bad_opt = true,
                },
                // NSID and DAU/DHU/N3U are decoded by the general path.
                3 | 5..=7 => opt.other_known_options = true,
                _ => {}
            }
            i += 4 + usize::from(len);
        }
        if self.bad_opt {
            self.ecs = None;
        }
        self.opt = Some(opt);
    }

    /// The opcode (RFC 1035 §4.1.1).
    pub(crate) fn opcode(&self) -> u8 {
        (self.flags0 >> 3) & 0x0f
    }

    /// The largest response this query may get over `transport`: 512
    /// bytes over UDP without EDNS, else the requestor's payload size
    /// within [512, `max_udp_payload`]; 65535 over TCP.
    pub(crate) fn limit(&self, transport: Transport, max_udp_payload: u16) -> usize {
        match (transport, &self.opt) {
            (Transport::Tcp, _) => MAX_MESSAGE,
            (Transport::Udp, None) => CLASSIC_UDP_LIMIT,
            (Transport::Udp, Some(o)) => usize::from(o.payload.clamp(512, max_udp_payload)),
        }
    }

    /// The ECS option a policy routes on: RFC 7871 §7.1.2 says SOURCE
    /// PREFIX-LENGTH 0 means "do not use my address".
    pub(crate) fn routing_ecs(&self) -> Option<Ecs> {
        self.ecs.filter(|e| e.source > 0)
    }

    /// The address a policy routes on: the ECS address when it may be
    /// used, else the packet's source.
    pub(crate) fn client_addr(&self, src: IpAddr) -> IpAddr {
        canonical(self.routing_ecs().map_or(src, |e| e.addr))
    }

    /// Per-query randomness for `weighted` and address rotation: the
    /// process's `seed` mixed with the query ID and source, so both paths
    /// draw the same for one query.
    pub(crate) fn entropy(&self, seed: u64, src: IpAddr) -> u64 {
        let src = match canonical(src) {
            IpAddr::V4(a) => u64::from(u32::from(a)),
            IpAddr::V6(a) => {
                let b = u128::from(a);
                (b as u64) ^ (b >> 64) as u64
            }
        };
        let id = u64::from(u16::from_be_bytes(self.id));
        crate::policy::weighted::mix(seed ^ crate::policy::weighted::mix(src ^ id << 48))
    }

    /// Writes the response header: ID, opcode, RD and CD echoed, QR set,
    /// QDCOUNT 1 (or 0 when `question` is false), ARCOUNT plus one when
    /// the response carries OPT.
    pub(crate) fn write_header(&self, out: &mut Vec<u8>, h: Header) {
        // Built on the stack and copied once: this runs for every answer.
        let [q0, q1] = u16::from(h.question).to_be_bytes();
        let [an0, an1] = h.counts[0].to_be_bytes();
        let [ns0, ns1] = h.counts[1].to_be_bytes();
        let opt = u16::from(self.opt.is_some());
        let [ar0, ar1] = h.counts[2].saturating_add(opt).to_be_bytes();
        out.extend_from_slice(&[
            self.id[0],
            self.id[1],
            0x80 | (self.flags0 & 0x79) | (u8::from(h.aa) << 2) | (u8::from(h.tc) << 1),
            (self.flags1 & 0x10) | (h.rcode & 0x0f),
            q0,
            q1,
            an0,
            an1,
            ns0,
            ns1,
            ar0,
            ar1,
        ]);
    }

    /// The first question as the query sent it (empty when it cannot be
    /// read), for responses to echo.
    pub(crate) fn question_bytes<'p>(&self, packet: &'p [u8]) -> &'p [u8] {
        self.question
            .and_then(|q| packet.get(HEADER_LEN..q.end))
            .unwrap_or_default()
    }

    /// FORMERR for a query that can be read no further: the question when
    /// it can be read, and an OPT record when the query had one, on both
    /// paths alike.
    pub(crate) fn formerr(&self, packet: &[u8], max_udp_payload: u16, out: &mut Vec<u8>) {
        out.clear();
        self.write_header(
            out,
            Header {
                question: self.question.is_some(),
                rcode: 1,
                ..Header::default()
            },
        );
        out.extend_from_slice(self.question_bytes(packet));
        self.write_opt(out, max_udp_payload, None);
    }

    /// Appends the response's OPT record when the query had one (RFC 6891
    /// §6.1.1), with the ECS option echoed and `scope` set (RFC 7871
    /// §7.2.1: FAMILY, SOURCE PREFIX-LENGTH and ADDRESS are copied).
    pub(crate) fn write_opt(
        &self,
        out: &mut Vec<u8>,
        max_udp_payload: u16,
        ecs: Option<(Ecs, u8)>,
    ) {
        let Some(opt) = &self.opt else { return };
        // Root owner, type, payload, extended rcode 0, version 0, flags
        // (DO copied), RDLENGTH; then the ECS option: built on the stack
        // and copied once.
        let mut rr = [0u8; 11 + 4 + 4 + 16];
        rr[1..3].copy_from_slice(&TYPE_OPT.to_be_bytes());
        rr[3..5].copy_from_slice(&max_udp_payload.max(512).to_be_bytes());
        rr[7] = if opt.dnssec_ok { 0x80 } else { 0 };
        let Some((e, scope)) = ecs else {
            out.extend_from_slice(&rr[..11]);
            return;
        };
        let addr_len = usize::from(e.source).div_ceil(8).min(16);
        let opt_len = 4 + addr_len as u16; // at most 4 + 16
        rr[9..11].copy_from_slice(&(4 + opt_len).to_be_bytes());
        rr[11..13].copy_from_slice(&OPTION_ECS.to_be_bytes());
        rr[13..15].copy_from_slice(&opt_len.to_be_bytes());
        let family: u16 = match e.addr {
            IpAddr::V4(a) => {
                rr[19..19 + addr_len.min(4)].copy_from_slice(&a.octets()[..addr_len.min(4)]);
                1
            }
            IpAddr::V6(a) => {
                rr[19..19 + addr_len].copy_from_slice(&a.octets()[..addr_len]);
                2
            }
        };
        rr[15..17].copy_from_slice(&family.to_be_bytes());
        rr[17] = e.source;
        rr[18] = scope;
        out.extend_from_slice(&rr[..19 + addr_len]);
    }
}

/// The header fields a response sets.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Header {
    pub(crate) aa: bool,
    pub(crate) tc: bool,
    pub(crate) rcode: u8,
    /// Whether the question section holds the query's first question.
    pub(crate) question: bool,
    /// Answer, authority and additional counts (without the OPT record).
    pub(crate) counts: [u16; 3],
}

impl Header {
    /// The same header with empty answer, authority and additional
    /// sections (a truncated response).
    pub(crate) fn without_records(self) -> Self {
        Self {
            counts: [0; 3],
            ..self
        }
    }
}

/// Converts an IPv4-mapped IPv6 address to IPv4 (dual-stack sockets).
pub(crate) fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// A scope computed for `routed` (maybe IPv4 from a mapped address),
/// expressed in the family of the ECS option `ecs_addr`.
pub(crate) fn scope_in_family(ecs_addr: IpAddr, routed: IpAddr, scope: u8) -> u8 {
    match (ecs_addr, routed) {
        (IpAddr::V6(_), IpAddr::V4(_)) => scope + 96,
        _ => scope,
    }
}

/// The ECS option to echo and its scope: the query's valid option, with
/// the scope of the decision when the policy routed on it, else 0.
pub(crate) fn echo_ecs(env: &Envelope, routed_on: IpAddr, scope: Option<u8>) -> Option<(Ecs, u8)> {
    let ecs = env.ecs?;
    let scope = match (env.routing_ecs(), scope) {
        (Some(e), Some(s)) => scope_in_family(e.addr, routed_on, s),
        _ => 0,
    };
    Some((ecs, scope))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn ecs_with_too_many_or_too_few_octets_is_bad() {
        // Issue 15's reproducers: source /24 with 4 octets, and with 2.
        for p in [
            "abcd00000001000000000001037777770467736c62076578616d706c6503636f6d000001000100002904d000000000000c00080008000118005102450000",
            "abcd00000001000000000001037777770467736c62076578616d706c6503636f6d000001000100002904d000000000000a0008000600011800510200",
        ] {
            let env = Envelope::scan(&hex(p)).expect("a query");
            assert!(env.bad_opt && env.ecs.is_none() && env.opt.is_some());
            assert!(env.question.is_some());
            assert!(!env.exact, "one trailing byte");
        }
    }

    #[test]
    fn formerr_keeps_question_and_opt() {
        let p = hex(
            "abcd00000001000000000001037777770467736c62076578616d706c6503636f6d000001000100002904d000000000000a0008000600011800510200",
        );
        let env = Envelope::scan(&p).expect("a query");
        let mut out = Vec::new();
        env.formerr(&p, 1232, &mut out);
        // Header, the question as sent, an empty OPT.
        assert_eq!(&out[..4], &[0xab, 0xcd, 0x80, 0x01]);
        assert_eq!(&out[4..12], &[0, 1, 0, 0, 0, 0, 0, 1]);
        assert_eq!(&out[12..12 + 26], &p[12..12 + 26]);
        assert_eq!(&out[38..], &[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn truncated_packets_never_panic() {
        let p = hex(
            "abcd00000001000000000001037777770467736c62076578616d706c6503636f6d000001000100002904d000000000000c00080008000118005102450000",
        );
        for len in 0..p.len() {
            let _ = Envelope::scan(&p[..len]);
        }
    }
}
