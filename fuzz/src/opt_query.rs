//! The `opt_ecs` target's input language: a few bytes that choose a
//! query, then a list of operations that build its additional section
//! (OPT records and their options, TSIG and other records). The builder
//! writes the packet and, separately, reads every OPT record it wrote back
//! by the RFCs' rules into a [`Model`], so the target can say which
//! response code each query is owed without asking the server's own parser
//! (`src/dns/envelope.rs`) what it thinks.
//!
//! # Input
//!
//! ```text
//! [0..2]  query ID: the low three bits of byte 0 pick the source address,
//!         byte 1 the health view (as in every target; see lib.rs)
//! [2]     header byte 2 as sent: QR, opcode, AA, TC, RD
//! [3]     question: low nibble a name from NAMES, high nibble a type from
//!         TYPES
//! [4..]   operations until the input ends, at most MAX_OPS; an argument
//!         past the end of the input reads as 0, so every input decodes
//! ```
//!
//! Operations (`op % 9`):
//!
//! | op | arguments | effect |
//! |----|-----------|--------|
//! | 0 | payload u16, version u8, flags u8 | start a new OPT record; flags bit 7 sets DO, bit 0 gives it the owner `a.` instead of the root, bit 1 a non-zero extended RCODE |
//! | 1 | family u16, source u8, scope u8, n u8, n bytes | ECS option with any fields (n % 18 address bytes) |
//! | 2 | shape u8, source u8, scope u8, address bytes | well-formed ECS: shape bit 0 picks IPv6, source is taken modulo the family's maximum plus one, exactly ceil(source/8) address bytes follow with the bits beyond the prefix cleared; scope is 0 unless its bit 7 is set (then its low 7 bits) |
//! | 3 | n u8, n bytes | COOKIE (code 10) with n % 41 bytes |
//! | 4 | n u8, n bytes | NSID (code 3) with n % 4 bytes (a request is empty) |
//! | 5 | code u16, length u16, n u8, n bytes | any option: the declared length as given, then n bytes (a declared length past the end truncates the option) |
//! | 6 | n u8, n bytes | n % 4 raw bytes inside the OPT RDATA (an option header cut short) |
//! | 7 | m u8, m bytes | a TSIG record (type 250, class ANY, `key.example.`, hmac-sha256, a MAC of m % 33 bytes) |
//! | 8 | none | an A record (`extra.example.`) in the additional section |
//!
//! An option operation with no OPT record open starts one (payload 1232,
//! version 0, no flags); a record operation (7, 8) closes the open OPT, so
//! a later option starts a second one.

/// Question names: a geo service (in two spellings), an in-zone CNAME to
/// it, the apex, a static name, a name that does not exist, a name below
/// the service, a name outside every zone, an external CNAME, a name
/// server, an SRV owner and the root.
pub const NAMES: [&str; 12] = [
    "www.gslb.example.com",
    "WwW.gSlB.example.COM",
    "app.gslb.example.com",
    "gslb.example.com",
    "mail.gslb.example.com",
    "nope.gslb.example.com",
    "a.b.www.gslb.example.com",
    "example.org",
    "status.gslb.example.com",
    "ns1.gslb.example.com",
    "_sip._tcp.gslb.example.com",
    "",
];

/// Question types: A, AAAA, ANY, TXT, SOA, NS, MX, SRV, CNAME, OPT, TSIG,
/// AXFR, DS, CAA, PTR and a private-use type.
pub const TYPES: [u16; 16] = [
    1, 28, 255, 16, 6, 2, 15, 33, 5, 41, 250, 252, 43, 257, 12, 65280,
];

/// The most operations one input applies (inputs are short anyway; this
/// bounds a pathological one).
pub const MAX_OPS: usize = 64;

const TYPE_A: u16 = 1;
const TYPE_OPT: u16 = 41;
const TYPE_TSIG: u16 = 250;
const CODE_NSID: u16 = 3;
const CODE_ECS: u16 = 8;
const CODE_COOKIE: u16 = 10;

/// What RFC 7871 §6 makes of one ECS option's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EcsVerdict {
    /// Well formed: FAMILY 1 or 2, SOURCE PREFIX-LENGTH within the
    /// family, exactly ceil(source/8) address octets, no bit set beyond
    /// the prefix. `scope` is SCOPE PREFIX-LENGTH as sent (§6: "In
    /// queries, it MUST be set to 0").
    Valid {
        /// The address, zero-filled to its family's length.
        addr: std::net::IpAddr,
        source: u8,
        scope: u8,
    },
    /// Anything else (FORMERR).
    Invalid,
}

/// One OPT record as written.
#[derive(Clone, Debug, Default)]
pub struct OptModel {
    pub payload: u16,
    pub version: u8,
    pub dnssec_ok: bool,
    /// The owner is the root (RFC 6891 §6.1.2 says it MUST be).
    pub owner_root: bool,
    /// A non-zero extended RCODE (a query has no business sending one).
    pub ext_rcode: bool,
    /// An option header or option data runs past the RDATA.
    pub truncated: bool,
    /// Every complete ECS option, in order.
    pub ecs: Vec<EcsVerdict>,
    /// The data of every complete COOKIE option, in order.
    pub cookies: Vec<Vec<u8>>,
    /// An NSID option was sent (RFC 5001 §2.1: the request).
    pub nsid: bool,
}

/// What the built query is, read back from the bytes written.
#[derive(Clone, Debug, Default)]
pub struct Model {
    /// QR was set: the query is a response and must be dropped.
    pub qr: bool,
    pub opcode: u8,
    pub name: &'static str,
    pub qtype: u16,
    /// Every OPT record, in order.
    pub opts: Vec<OptModel>,
    /// TSIG records, and whether one is followed by another record.
    pub tsigs: usize,
    pub tsig_not_last: bool,
}

impl Model {
    /// The ECS option a well-formed query carries: one OPT record, not
    /// truncated, exactly one ECS option and that one valid.
    pub fn single_ecs(&self) -> Option<EcsVerdict> {
        match self.opts.as_slice() {
            [o] if !o.truncated => match o.ecs.as_slice() {
                [v @ EcsVerdict::Valid { .. }] => Some(*v),
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether RFC 6891 or RFC 7871 require FORMERR for the OPT records
    /// alone: more than one OPT record (RFC 6891 §6.1.1), an option
    /// running past the RDATA, more than one ECS option or an invalid one
    /// (RFC 7871 §6, and "it MUST be set to 0" for the scope when
    /// `scope_counts` is set).
    pub fn opt_formerr(&self, scope_counts: bool) -> bool {
        self.opts.len() > 1
            || self.opts.iter().any(|o| {
                o.truncated
                    || o.ecs.len() > 1
                    || o.ecs.iter().any(|e| match e {
                        EcsVerdict::Invalid => true,
                        EcsVerdict::Valid { scope, .. } => scope_counts && *scope != 0,
                    })
            })
    }

    /// An OPT record carries EDNS version other than 0.
    pub fn bad_version(&self) -> bool {
        self.opts.iter().any(|o| o.version != 0)
    }

    /// The client cookie (first 8 bytes) of the one well-formed COOKIE
    /// option (RFC 7873 §4: 8 bytes, or 16 to 40 with a server cookie).
    pub fn client_cookie(&self) -> Option<&[u8]> {
        match self.opts.as_slice() {
            [o] => match o.cookies.as_slice() {
                [c] if c.len() == 8 || (16..=40).contains(&c.len()) => c.get(..8),
                _ => None,
            },
            _ => None,
        }
    }

    /// A COOKIE option whose length RFC 7873 §5.2.2 answers with FORMERR
    /// (shorter than 8, 9 to 15, longer than 40), or more than one.
    pub fn cookie_malformed(&self) -> bool {
        self.opts.iter().any(|o| {
            o.cookies.len() > 1
                || o.cookies
                    .iter()
                    .any(|c| !(c.len() == 8 || (16..=40).contains(&c.len())))
        })
    }

    /// An NSID option was sent.
    pub fn nsid_requested(&self) -> bool {
        self.opts.iter().any(|o| o.nsid)
    }
}

/// Reads the input's bytes; past the end, zeros.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u8()).collect()
    }

    fn done(&self) -> bool {
        self.at >= self.data.len()
    }
}

/// The wire form of `name` (no compression).
pub fn wire_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// One additional record being built.
enum Rec {
    Opt {
        owner_root: bool,
        payload: u16,
        ext_rcode: u8,
        version: u8,
        flags: u8,
        rdata: Vec<u8>,
    },
    Raw(Vec<u8>, u16),
}

/// Builds the query `data` describes; returns the packet and its model.
pub fn build(data: &[u8]) -> (Vec<u8>, Model) {
    let mut r = Reader { data, at: 0 };
    let id = [r.u8(), r.u8()];
    let flags0 = r.u8();
    let q = r.u8();
    let name = NAMES[usize::from(q & 0x0f) % NAMES.len()];
    let qtype = TYPES[usize::from(q >> 4)];

    let mut records: Vec<Rec> = Vec::new();
    let mut open = false; // the last record is an OPT that options go into
    for _ in 0..MAX_OPS {
        if r.done() {
            break;
        }
        let op = r.u8() % 9;
        if (1..=6).contains(&op) && !open {
            records.push(Rec::Opt {
                owner_root: true,
                payload: 1232,
                ext_rcode: 0,
                version: 0,
                flags: 0,
                rdata: Vec::new(),
            });
            open = true;
        }
        let mut option = |code: u16, len: u16, body: &[u8]| {
            if let Some(Rec::Opt { rdata, .. }) = records.last_mut() {
                rdata.extend_from_slice(&code.to_be_bytes());
                rdata.extend_from_slice(&len.to_be_bytes());
                rdata.extend_from_slice(body);
            }
        };
        match op {
            0 => {
                let payload = r.u16();
                let version = r.u8();
                let flags = r.u8();
                records.push(Rec::Opt {
                    owner_root: flags & 1 == 0,
                    payload,
                    ext_rcode: (flags >> 1) & 1,
                    version,
                    flags: flags & 0x80,
                    rdata: Vec::new(),
                });
                open = true;
            }
            1 => {
                let family = r.u16();
                let source = r.u8();
                let scope = r.u8();
                let n = usize::from(r.u8() % 18);
                let mut body = vec![0; 4];
                body[..2].copy_from_slice(&family.to_be_bytes());
                body[2] = source;
                body[3] = scope;
                body.extend(r.bytes(n));
                option(CODE_ECS, body.len() as u16, &body);
            }
            2 => {
                let v6 = r.u8() & 1 == 1;
                let max: u8 = if v6 { 128 } else { 32 };
                let source = (u16::from(r.u8()) % (u16::from(max) + 1)) as u8;
                let s = r.u8();
                let scope = if s & 0x80 != 0 { s & 0x7f } else { 0 };
                let n = usize::from(source).div_ceil(8);
                let mut addr = r.bytes(n);
                if !source.is_multiple_of(8)
                    && let Some(last) = addr.last_mut()
                {
                    *last &= 0xffu8 << (8 - source % 8);
                }
                let mut body = vec![0, if v6 { 2 } else { 1 }, source, scope];
                body.extend(addr);
                option(CODE_ECS, body.len() as u16, &body);
            }
            3 => {
                let n = usize::from(r.u8() % 41);
                let body = r.bytes(n);
                option(CODE_COOKIE, n as u16, &body);
            }
            4 => {
                let n = usize::from(r.u8() % 4);
                let body = r.bytes(n);
                option(CODE_NSID, n as u16, &body);
            }
            5 => {
                let code = r.u16();
                let len = r.u16();
                let n = usize::from(r.u8());
                let body = r.bytes(n);
                option(code, len, &body);
            }
            6 => {
                let n = usize::from(r.u8() % 4);
                let body = r.bytes(n);
                if let Some(Rec::Opt { rdata, .. }) = records.last_mut() {
                    rdata.extend(body);
                }
            }
            7 => {
                let m = usize::from(r.u8() % 33);
                let mac = r.bytes(m);
                let mut rd = wire_name("hmac-sha256");
                rd.extend_from_slice(&[0, 0, 0x69, 0x2a, 0x5b, 0x00]); // time signed
                rd.extend_from_slice(&300u16.to_be_bytes()); // fudge
                rd.extend_from_slice(&(m as u16).to_be_bytes());
                rd.extend(mac);
                rd.extend_from_slice(&id); // original ID
                rd.extend_from_slice(&[0, 0, 0, 0]); // error, other len
                let mut rec = wire_name("key.example");
                rec.extend_from_slice(&TYPE_TSIG.to_be_bytes());
                rec.extend_from_slice(&255u16.to_be_bytes()); // class ANY
                rec.extend_from_slice(&[0; 4]); // TTL
                rec.extend_from_slice(&(rd.len() as u16).to_be_bytes());
                rec.extend(rd);
                records.push(Rec::Raw(rec, TYPE_TSIG));
                open = false;
            }
            _ => {
                let mut rec = wire_name("extra.example");
                rec.extend_from_slice(&TYPE_A.to_be_bytes());
                rec.extend_from_slice(&1u16.to_be_bytes());
                rec.extend_from_slice(&300u32.to_be_bytes());
                rec.extend_from_slice(&4u16.to_be_bytes());
                rec.extend_from_slice(&[192, 0, 2, 1]);
                records.push(Rec::Raw(rec, TYPE_A));
                open = false;
            }
        }
    }

    let mut p = Vec::with_capacity(512);
    p.extend_from_slice(&id);
    p.push(flags0);
    p.push(0);
    p.extend_from_slice(&1u16.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0]);
    p.extend_from_slice(&(records.len() as u16).to_be_bytes());
    p.extend(wire_name(name));
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes());

    let mut model = Model {
        qr: flags0 & 0x80 != 0,
        opcode: (flags0 >> 3) & 0x0f,
        name,
        qtype,
        ..Model::default()
    };
    for (i, rec) in records.iter().enumerate() {
        match rec {
            Rec::Opt {
                owner_root,
                payload,
                ext_rcode,
                version,
                flags,
                rdata,
            } => {
                p.extend(if *owner_root {
                    wire_name("")
                } else {
                    wire_name("a")
                });
                p.extend_from_slice(&TYPE_OPT.to_be_bytes());
                p.extend_from_slice(&payload.to_be_bytes());
                p.extend_from_slice(&[*ext_rcode, *version, *flags, 0]);
                // An option's data may make RDATA longer than a record
                // can say; cut it so the record stays walkable.
                let rdata = &rdata[..rdata.len().min(usize::from(u16::MAX))];
                p.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
                p.extend_from_slice(rdata);
                let mut m = read_options(rdata);
                m.payload = *payload;
                m.version = *version;
                m.dnssec_ok = flags & 0x80 != 0;
                m.owner_root = *owner_root;
                m.ext_rcode = *ext_rcode != 0;
                model.opts.push(m);
            }
            Rec::Raw(bytes, rtype) => {
                p.extend_from_slice(bytes);
                if *rtype == TYPE_TSIG {
                    model.tsigs += 1;
                    model.tsig_not_last |= i + 1 < records.len();
                }
            }
        }
    }
    (p, model)
}

/// Reads an OPT record's options by RFC 6891 §6.1.2, and the ones this
/// target knows by their RFCs.
fn read_options(rdata: &[u8]) -> OptModel {
    let mut m = OptModel::default();
    let mut i = 0;
    while i < rdata.len() {
        let Some(head) = rdata.get(i..i + 4) else {
            m.truncated = true;
            break;
        };
        let code = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let Some(body) = rdata.get(i + 4..i + 4 + len) else {
            m.truncated = true;
            break;
        };
        match code {
            CODE_ECS => m.ecs.push(ecs_verdict(body)),
            CODE_COOKIE => m.cookies.push(body.to_vec()),
            CODE_NSID => m.nsid = true,
            _ => {}
        }
        i += 4 + len;
    }
    m
}

/// RFC 7871 §6, written from the RFC rather than from the server.
pub fn ecs_verdict(d: &[u8]) -> EcsVerdict {
    if d.len() < 4 {
        return EcsVerdict::Invalid;
    }
    let family = u16::from_be_bytes([d[0], d[1]]);
    let (source, scope, addr) = (d[2], d[3], &d[4..]);
    let max = match family {
        1 => 32,
        2 => 128,
        _ => return EcsVerdict::Invalid,
    };
    if source > max || addr.len() != usize::from(source).div_ceil(8) {
        return EcsVerdict::Invalid;
    }
    // Bits beyond the prefix in the last octet.
    if !source.is_multiple_of(8)
        && let Some(last) = addr.last()
        && last & (0xffu8 >> (source % 8)) != 0
    {
        return EcsVerdict::Invalid;
    }
    let addr = if family == 1 {
        let mut o = [0u8; 4];
        o[..addr.len()].copy_from_slice(addr);
        std::net::IpAddr::from(o)
    } else {
        let mut o = [0u8; 16];
        o[..addr.len()].copy_from_slice(addr);
        std::net::IpAddr::from(o)
    };
    EcsVerdict::Valid {
        addr,
        source,
        scope,
    }
}
