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
const TYPE_TSIG: u16 = 250;
const OPTION_NSID: u16 = 3;
const OPTION_ECS: u16 = 8;
const OPTION_COOKIE: u16 = 10;
const HEADER_LEN: usize = 12;
/// TSIG error BADKEY (RFC 8945 §5.2.2).
const TSIG_BADKEY: u16 = 17;

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
    /// Options the general path decodes itself (DAU/DHU/N3U).
    pub(crate) other_known_options: bool,
    /// The query asks for the server's NSID (RFC 5001).
    pub(crate) nsid: bool,
}

/// The query's COOKIE option (RFC 7873 §4): a client cookie, and the
/// server cookie it was last given, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CookieIn {
    pub(crate) client: [u8; 8],
    server: [u8; 32],
    server_len: u8,
}

impl CookieIn {
    /// The server cookie the client sent back (empty if none).
    pub(crate) fn server(&self) -> &[u8] {
        &self.server[..usize::from(self.server_len)]
    }
}

/// Where the query's TSIG record is (RFC 8945): its owner name and RDATA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TsigIn {
    owner: usize,
    rdata: usize,
    rdlen: usize,
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
    /// The COOKIE option, if present and well formed.
    pub(crate) cookie: Option<CookieIn>,
    /// The TSIG record, when it is the last record (RFC 8945 §5.1).
    pub(crate) tsig: Option<TsigIn>,
    /// The OPT record breaks a rule whose answer is FORMERR: an invalid
    /// ECS option (RFC 7871 §6), a COOKIE option of a wrong length (RFC
    /// 7873 §5.2.2), two ECS or COOKIE options, an option running past
    /// the record, or a second OPT record (RFC 6891 §6.1.1); or a TSIG
    /// record that is not the last record (RFC 8945 §5.1).
    pub(crate) bad_opt: bool,
    /// Every record the counts announce was read, and nothing follows.
    pub(crate) exact: bool,
}

fn be16(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]))
}

/// Skips a (possibly compressed) name starting at `at`; returns the offset
/// after it.
pub(crate) fn skip_name(p: &[u8], mut at: usize) -> Option<usize> {
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

/// Skips `n` resource records starting at `at`; returns the offset after
/// them.
pub(crate) fn skip_records(p: &[u8], mut at: usize, n: usize) -> Option<usize> {
    for _ in 0..n {
        at = skip_name(p, at)?;
        at += 10 + usize::from(be16(p, at + 8)?);
        if at > p.len() {
            return None;
        }
    }
    Some(at)
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
/// unknown family, a non-zero scope, a prefix longer than the family, an address whose
/// length is not exactly the prefix's octets, or bits set beyond the
/// prefix ("ADDRESS ... MUST be truncated to the number of bits indicated
/// by the SOURCE PREFIX-LENGTH field").
fn parse_ecs(d: &[u8]) -> Option<Ecs> {
    let family = be16(d, 0)?;
    let source = *d.get(2)?;
    // "SCOPE PREFIX-LENGTH ... MUST be set to 0 in queries" (RFC 7871 §6);
    // BIND answers FORMERR too.
    if *d.get(3)? != 0 {
        return None;
    }
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

/// RFC 7873 §4 option data: an 8-byte client cookie, optionally followed
/// by an 8- to 32-byte server cookie; any other length is FORMERR (§5.2.2).
fn parse_cookie(d: &[u8]) -> Option<CookieIn> {
    if d.len() != 8 && !(16..=40).contains(&d.len()) {
        return None;
    }
    let mut c = CookieIn {
        client: [0; 8],
        server: [0; 32],
        server_len: (d.len() - 8) as u8,
    };
    c.client.copy_from_slice(&d[..8]);
    c.server[..d.len() - 8].copy_from_slice(&d[8..]);
    Some(c)
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
            cookie: None,
            tsig: None,
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
            // A question the fast path cannot read (compression): skip
            // it, so the OPT record is still found and both paths see it.
            (_, None) => skip_name(p, HEADER_LEN)? + 4,
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
            if self.tsig.is_some() {
                // RFC 8945 §5.1: TSIG must be the last record.
                self.tsig = None;
                self.bad_opt = true;
            }
            if i >= an + ns && rtype == TYPE_OPT {
                self.read_opt(p, owner, at, rdata);
            }
            if rtype == TYPE_TSIG {
                if i >= an + ns {
                    self.tsig = Some(TsigIn {
                        owner,
                        rdata: at + 10,
                        rdlen,
                    });
                } else {
                    self.bad_opt = true;
                }
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
            nsid: false,
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
                OPTION_COOKIE => match (self.cookie, parse_cookie(data)) {
                    (None, Some(c)) => self.cookie = Some(c),
                    _ => self.bad_opt = true,
                },
                // RFC 5001 §2.3: the request's payload is empty.
                OPTION_NSID => opt.nsid = true,
                // DAU/DHU/N3U are decoded by the general path.
                5..=7 => opt.other_known_options = true,
                _ => {}
            }
            i += 4 + usize::from(len);
        }
        if self.bad_opt {
            self.ecs = None;
            self.cookie = None;
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
    /// PREFIX-LENGTH 0 means "do not use my address", and an address in
    /// private, shared or loopback space (RFC 7871 §10; see [`private`])
    /// says nothing about where the client is, so the resolver's own
    /// address is the better guess.
    pub(crate) fn routing_ecs(&self) -> Option<Ecs> {
        self.ecs.filter(|e| e.source > 0 && !private(e.addr))
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

    /// The response header: ID, opcode, RD and CD echoed, QR set, QDCOUNT
    /// 1 (or 0 when `question` is false), ARCOUNT plus one when the
    /// response carries OPT.
    pub(crate) fn header_bytes(&self, h: Header) -> [u8; HEADER_LEN] {
        let [q0, q1] = u16::from(h.question).to_be_bytes();
        let [an0, an1] = h.counts[0].to_be_bytes();
        let [ns0, ns1] = h.counts[1].to_be_bytes();
        let opt = u16::from(self.opt.is_some());
        let [ar0, ar1] = h.counts[2].saturating_add(opt).to_be_bytes();
        [
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
        ]
    }

    /// Appends the response header (see [`Self::header_bytes`]).
    pub(crate) fn write_header(&self, out: &mut Vec<u8>, h: Header) {
        // Built on the stack and copied once: this runs for every answer.
        out.extend_from_slice(&self.header_bytes(h));
    }

    /// The first question as the query sent it (empty when it cannot be
    /// read), for responses to echo.
    pub(crate) fn question_bytes<'p>(&self, packet: &'p [u8]) -> &'p [u8] {
        self.question
            .and_then(|q| packet.get(HEADER_LEN..q.end))
            .unwrap_or_default()
    }

    /// A response without records: the question when it can be read, and
    /// an OPT record when the query had one, on both paths alike. `rcode`
    /// may be an extended one (BADVERS, BADCOOKIE), whose upper bits go to
    /// the OPT record.
    pub(crate) fn error(
        &self,
        packet: &[u8],
        rcode: u16,
        max_udp_payload: u16,
        opt: &OptOut<'_>,
        out: &mut Vec<u8>,
    ) {
        out.clear();
        self.write_header(
            out,
            Header {
                question: self.question.is_some(),
                rcode: (rcode & 0x0f) as u8,
                ..Header::default()
            },
        );
        out.extend_from_slice(self.question_bytes(packet));
        let opt = OptOut {
            ext_rcode: (rcode >> 4) as u8,
            ..*opt
        };
        self.write_opt(out, max_udp_payload, &opt);
    }

    /// FORMERR for a query that can be read no further.
    pub(crate) fn formerr(&self, packet: &[u8], max_udp_payload: u16, out: &mut Vec<u8>) {
        self.error(packet, 1, max_udp_payload, &OptOut::default(), out);
    }

    /// The answer to a TSIG-signed query (RFC 8945 §5.2.2): Meridian has
    /// no TSIG keys, so every key is unknown: NOTAUTH, and an unsigned
    /// TSIG record with error BADKEY, the query's key and algorithm names,
    /// time and fudge, and an empty MAC. `false` when the TSIG record
    /// cannot be read (the caller answers FORMERR).
    pub(crate) fn badkey(
        &self,
        packet: &[u8],
        max_udp_payload: u16,
        opt: &OptOut<'_>,
        out: &mut Vec<u8>,
    ) -> bool {
        let Some(t) = self.tsig else { return false };
        out.clear();
        self.write_header(
            out,
            Header {
                question: self.question.is_some(),
                rcode: 9,
                counts: [0, 0, 1],
                ..Header::default()
            },
        );
        out.extend_from_slice(self.question_bytes(packet));
        self.write_opt(out, max_udp_payload, opt);
        // Owner: the key name, written out in full (the query's may point
        // at parts of the query this response does not carry).
        if copy_name(packet, t.owner, out).is_none() {
            return false;
        }
        out.extend_from_slice(&[0, 250, 0, 255, 0, 0, 0, 0]); // TSIG, ANY, TTL 0
        let rdlen_at = out.len();
        out.extend_from_slice(&[0, 0]);
        let rdata_start = out.len();
        let Some(after_alg) = copy_name(packet, t.rdata, out) else {
            return false;
        };
        // Time signed (6) and fudge (2) as the query sent them; then the
        // MAC size and MAC, then the original ID, all inside the RDATA.
        let end = t.rdata + t.rdlen;
        let time_fudge = packet.get(after_alg..after_alg + 8);
        let mac = be16(packet, after_alg + 8).map(usize::from);
        let id_at = mac.map(|m| after_alg + 10 + m);
        let orig_id = id_at.and_then(|i| packet.get(i..i + 2));
        let (Some(time_fudge), Some(orig_id)) = (time_fudge, orig_id) else {
            return false;
        };
        if id_at.is_none_or(|i| i + 6 > end) {
            return false;
        }
        out.extend_from_slice(time_fudge);
        out.extend_from_slice(&[0, 0]); // MAC size 0
        out.extend_from_slice(orig_id);
        out.extend_from_slice(&TSIG_BADKEY.to_be_bytes());
        out.extend_from_slice(&[0, 0]); // other length 0
        let rdlen = (out.len() - rdata_start) as u16;
        out[rdlen_at..rdlen_at + 2].copy_from_slice(&rdlen.to_be_bytes());
        true
    }

    /// Appends the response's OPT record when the query had one (RFC 6891
    /// §6.1.1): our payload size, the extended rcode's upper bits, DO
    /// copied (RFC 3225 §3), and the options of `o`: ECS echoed with its
    /// scope (RFC 7871 §7.2.1: FAMILY, SOURCE PREFIX-LENGTH and ADDRESS
    /// are copied), COOKIE and NSID.
    pub(crate) fn write_opt(&self, out: &mut Vec<u8>, max_udp_payload: u16, o: &OptOut<'_>) {
        let Some(opt) = &self.opt else { return };
        // Root owner, type, payload, extended rcode, version 0, flags,
        // RDLENGTH (patched below); then the options, each built on the
        // stack and copied once.
        let mut rr = [0u8; 11];
        rr[1..3].copy_from_slice(&TYPE_OPT.to_be_bytes());
        rr[3..5].copy_from_slice(&max_udp_payload.max(512).to_be_bytes());
        rr[5] = o.ext_rcode;
        rr[7] = if opt.dnssec_ok { 0x80 } else { 0 };
        out.extend_from_slice(&rr);
        let start = out.len();
        if let Some((e, scope)) = o.ecs {
            let mut opt = [0u8; 4 + 4 + 16];
            let addr_len = usize::from(e.source).div_ceil(8).min(16);
            opt[0..2].copy_from_slice(&OPTION_ECS.to_be_bytes());
            opt[2..4].copy_from_slice(&(4 + addr_len as u16).to_be_bytes());
            let family: u16 = match e.addr {
                IpAddr::V4(a) => {
                    let n = addr_len.min(4);
                    opt[8..8 + n].copy_from_slice(&a.octets()[..n]);
                    1
                }
                IpAddr::V6(a) => {
                    opt[8..8 + addr_len].copy_from_slice(&a.octets()[..addr_len]);
                    2
                }
            };
            opt[4..6].copy_from_slice(&family.to_be_bytes());
            opt[6] = e.source;
            opt[7] = scope;
            out.extend_from_slice(&opt[..8 + addr_len]);
        }
        if let Some(cookie) = &o.cookie {
            let mut opt = [0u8; 4 + 24];
            opt[0..2].copy_from_slice(&OPTION_COOKIE.to_be_bytes());
            opt[2..4].copy_from_slice(&24u16.to_be_bytes());
            opt[4..].copy_from_slice(cookie);
            out.extend_from_slice(&opt);
        }
        if let Some(nsid) = o.nsid.filter(|_| opt.nsid) {
            out.extend_from_slice(&OPTION_NSID.to_be_bytes());
            out.extend_from_slice(&(nsid.len().min(512) as u16).to_be_bytes());
            out.extend_from_slice(&nsid[..nsid.len().min(512)]);
        }
        let rdlen = (out.len() - start) as u16;
        out[start - 2..start].copy_from_slice(&rdlen.to_be_bytes());
    }
}

/// The options a response's OPT record carries besides its fixed fields.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct OptOut<'a> {
    /// The ECS option to echo, and its scope.
    pub(crate) ecs: Option<(Ecs, u8)>,
    /// Upper eight bits of an extended rcode.
    pub(crate) ext_rcode: u8,
    /// The client cookie and a fresh server cookie.
    pub(crate) cookie: Option<[u8; 24]>,
    /// The server's NSID, sent when the query asked for it.
    pub(crate) nsid: Option<&'a [u8]>,
}

/// Appends the (possibly compressed) name at `at` in `p` to `out` in full;
/// returns the offset after the name in `p`.
fn copy_name(p: &[u8], mut at: usize, out: &mut Vec<u8>) -> Option<usize> {
    let mut end = None;
    let mut written = 0;
    for _ in 0..128 {
        let len = *p.get(at)?;
        match len & 0xc0 {
            0x00 => {
                let label = p.get(at..at + 1 + usize::from(len))?;
                written += label.len();
                if written > 255 {
                    return None;
                }
                out.extend_from_slice(label);
                if len == 0 {
                    return Some(end.unwrap_or(at + 1));
                }
                at += label.len();
            }
            0xc0 => {
                end.get_or_insert(at + 2);
                at = usize::from(be16(p, at)? & 0x3fff);
            }
            _ => return None,
        }
    }
    None
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
/// the scope of the decision when the policy routed on it. A decision
/// routed on the resolver's address instead of a private ECS address
/// holds for exactly the subnet the resolver sent (scope = source), so a
/// resolver never applies it to its other clients. Else 0: the answer is
/// the same for every client.
pub(crate) fn echo_ecs(env: &Envelope, routed_on: IpAddr, scope: Option<u8>) -> Option<(Ecs, u8)> {
    let ecs = env.ecs?;
    let scope = match (env.routing_ecs(), scope) {
        (Some(e), Some(s)) => scope_in_family(e.addr, routed_on, s),
        (None, Some(_)) if ecs.source > 0 => ecs.source,
        _ => 0,
    };
    Some((ecs, scope))
}

/// Whether an ECS address is in space that tells nothing about where a
/// client is: RFC 1918 and RFC 6598 (100.64.0.0/10) private and shared
/// space, loopback, link-local and "this network" (0.0.0.0/8) in IPv4;
/// unique local (RFC 4193, fc00::/7), link-local and loopback in IPv6
/// (IPv4-mapped addresses as their IPv4).
pub(crate) fn private(addr: IpAddr) -> bool {
    match canonical(addr) {
        IpAddr::V4(a) => {
            let [o0, o1, ..] = a.octets();
            a.is_private()
                || a.is_loopback()
                || a.is_link_local()
                || o0 == 0
                || (o0 == 100 && (o1 & 0xc0) == 64)
        }
        IpAddr::V6(a) => {
            let s0 = a.segments()[0];
            a.is_loopback() || (s0 & 0xfe00) == 0xfc00 || (s0 & 0xffc0) == 0xfe80
        }
    }
}

/// Bytes from hexadecimal text, for tests.
#[cfg(test)]
pub(crate) fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
