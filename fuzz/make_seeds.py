#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/ (run from anywhere).

    python3 fuzz/make_seeds.py

Packet seeds are raw DNS queries, built here by hand (no DNS library), for
the names of zones/gslb.example.com.toml. The query ID also steers the fuzz
targets (see fuzz/src/lib.rs): ID byte 0 & 7 picks the source address, ID
byte 1 the datacenters' health. opt_ecs seeds are in that target's input
language (fuzz/src/opt_query.rs): the same two ID bytes, header byte 2, a
name and a type index, then operations that build the OPT records and what
follows them. tcp_stream seeds are packet seeds framed as a TCP client
writes them (two-byte length, message), several per stream. Zone seeds are the shipped zone file, the
shipped meridian.toml and variants with the other features.

Existing *.bin / *.toml files in the seed directories are replaced, so the
corpora are exactly what this script writes.
"""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CORPUS = os.path.join(HERE, "corpus")

ORIGIN = "gslb.example.com"

TYPES = {
    "A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16,
    "AAAA": 28, "SRV": 33, "DS": 43, "AXFR": 252, "ANY": 255, "CAA": 257,
}


def name(text):
    """Wire form of a domain name (no compression); "." is the root."""
    out = b""
    for label in text.strip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode("ascii")
    return out + b"\x00"


def question(qname, qtype="A", qclass=1):
    return name(qname) + struct.pack(">HH", TYPES[qtype], qclass)


def header(qid, qd=1, an=0, ns=0, ar=0, flags=0x0000):
    return struct.pack(">HHHHHH", qid, flags, qd, an, ns, ar)


def option(code, data):
    return struct.pack(">HH", code, len(data)) + data


def ecs(family, source, addr_bytes, scope=0):
    """An ECS option with exactly the address octets given."""
    return option(8, struct.pack(">HBB", family, source, scope) + addr_bytes)


def opt(payload=1232, options=b"", do=False, version=0, ext_rcode=0):
    flags = 0x8000 if do else 0
    return (b"\x00" + struct.pack(">HHBBH", 41, payload, ext_rcode, version, flags)
            + struct.pack(">H", len(options)) + options)


def query(qid, qname, qtype="A", edns=None, flags=0x0000, qclass=1):
    """One question, and an OPT record if `edns` is given (its bytes)."""
    packet = header(qid, ar=1 if edns is not None else 0, flags=flags)
    packet += question(qname, qtype, qclass)
    return packet + (edns if edns is not None else b"")


def v4(text, octets):
    return bytes(int(x) for x in text.split("."))[:octets]


def v6(groups, octets):
    """`groups`: the eight 16-bit groups."""
    return b"".join(struct.pack(">H", g) for g in groups)[:octets]


def fqdn(label):
    return ORIGIN if label == "@" else f"{label}.{ORIGIN}"


def long_name(ch):
    """A 252-byte wire name: labels of 63, 63, 63 and 58 bytes."""
    return ".".join(ch * n for n in (63, 63, 63, 58))


def packet_seeds():
    s = {}
    E = opt  # shorthand

    # Plain queries for the shipped names, with and without EDNS. IDs vary
    # so the targets try several sources and health views.
    s["www-a-noedns"] = query(0x0100, fqdn("www"), "A")
    s["www-aaaa-edns"] = query(0x0201, fqdn("www"), "AAAA", E(1232))
    s["apex-soa-edns"] = query(0x0302, fqdn("@"), "SOA", E(4096))
    s["apex-ns-noedns"] = query(0x0403, fqdn("@"), "NS")
    s["apex-mx-edns-do"] = query(0x0504, fqdn("@"), "MX", E(1232, do=True))
    s["apex-any-edns"] = query(0x0605, fqdn("@"), "ANY", E(512))
    s["mail-a-edns"] = query(0x0108, fqdn("mail"), "A", E(1232))
    s["app-a-cname-chain"] = query(0x0209, fqdn("app"), "A", E(1232))
    s["status-a-external-cname"] = query(0x030a, fqdn("status"), "A")
    s["sip-srv"] = query(0x040b, fqdn("_sip._tcp"), "SRV", E(1232))
    s["www-mixed-case"] = query(0x050c, "WwW.GSLB.Example.com", "A", E(1232))
    # Names that do not exist, and names outside the zone.
    s["nxdomain-edns"] = query(0x060d, fqdn("nope"), "A", E(1232))
    s["nxdomain-below-service"] = query(0x070e, "a.b.c." + fqdn("www"), "AAAA")
    s["outside-zone-ecs"] = query(0x000f, "example.org", "A",
                                  E(1232, ecs(1, 24, v4("192.0.2.0", 3))))
    # ECS: IPv4 and IPv6, various prefixes, with DO.
    s["www-ecs4-24"] = query(0x0211, fqdn("www"), "A",
                             E(1232, ecs(1, 24, v4("8.8.8.0", 3))))
    s["www-ecs4-32-do"] = query(0x0312, fqdn("www"), "A",
                                E(1232, ecs(1, 32, v4("81.2.69.142", 4)), do=True))
    s["www-ecs4-0"] = query(0x0413, fqdn("www"), "A", E(1232, ecs(1, 0, b"")))
    s["www-ecs6-56"] = query(0x0514, fqdn("www"), "AAAA",
                             E(1232, ecs(2, 56, v6([0x2a00, 0x1450, 0x4001, 0, 0, 0, 0, 0], 7))))
    s["www-ecs6-mapped-120"] = query(0x0615, fqdn("www"), "A",
                                     E(1232, ecs(2, 120, v6([0, 0, 0, 0, 0, 0xffff, 0x5102, 0x4500], 15))))
    s["www-ecs6-0"] = query(0x0716, fqdn("www"), "AAAA", E(1232, ecs(2, 0, b"")))
    s["www-ecs-and-cookie"] = query(0x0017, fqdn("www"), "A",
                                    E(1232, ecs(1, 16, v4("1.0.0.0", 2)) + option(10, bytes(8))))
    # Bad ECS (RFC 7871 §6: FORMERR).
    s["bad-ecs-too-many-octets"] = query(0x0118, fqdn("www"), "A",
                                         E(1232, ecs(1, 24, v4("8.8.8.0", 4))))
    s["bad-ecs-too-few-octets"] = query(0x0219, fqdn("www"), "A",
                                        E(1232, ecs(1, 24, v4("8.8.8.0", 2))))
    s["bad-ecs-prefix-33"] = query(0x031a, fqdn("www"), "A",
                                   E(1232, ecs(1, 33, v4("8.8.8.8", 4) + b"\x00")))
    s["bad-ecs-bits-beyond-prefix"] = query(0x041b, fqdn("www"), "A",
                                            E(1232, ecs(1, 20, bytes([10, 1, 0x0f]))))
    s["bad-ecs-family-3"] = query(0x0424, fqdn("www"), "A",
                                  E(1232, ecs(3, 8, b"\x0a")))
    # Packet shapes the fast path declines.
    s["two-questions"] = (header(0x051c, qd=2) + question(fqdn("www"), "A")
                          + question(fqdn("mail"), "A"))
    s["trailing-after-opt"] = query(0x061d, fqdn("www"), "A", E(1232) + b"\xde\xad")
    s["two-additionals"] = (header(0x071e, ar=2) + question(fqdn("www"), "A")
                            + E(1232) + E(1232))
    s["edns-version-1"] = query(0x001f, fqdn("www"), "A", E(1232, version=1))
    s["opcode-notify"] = query(0x0120, fqdn("@"), "SOA", flags=4 << 11)
    s["qr-set"] = query(0x0221, fqdn("www"), "A", flags=0x8000)
    s["class-ch-axfr"] = query(0x0322, fqdn("@"), "AXFR", E(1232), qclass=3)
    # The ID and flags spell the name "a." (01 61 00): the question
    # "www" + pointer to offset 0 is www.a.
    s["compressed-qname"] = header(0x0161) + b"\x03www\xc0\x00" + struct.pack(">HH", 1, 1)
    # Reproducers (kept as they were reported).
    s["repro-ecs-4-octets-for-24"] = bytes.fromhex(
        "abcd00000001000000000001037777770467736c62076578616d706c6503636f6d"
        "000001000100002904d000000000000c00080008000118005102450000")
    s["repro-ecs-2-octets-for-24"] = bytes.fromhex(
        "abcd00000001000000000001037777770467736c62076578616d706c6503636f6d"
        "000001000100002904d000000000000a0008000600011800510200")
    # ...and without the stray last byte, so the fast path reads them too.
    for key in ("repro-ecs-4-octets-for-24", "repro-ecs-2-octets-for-24"):
        s[key + "-clean"] = s[key][:-1]
    # An OPT record owned by a compression pointer to a zero byte (the
    # root, spelled oddly), EDNS version 1: FORMERR on one path, BADVERS
    # on the other, and no OPT in the FORMERR, before f7d35be.
    s["repro-opt-owner-pointer-v1"] = bytes.fromhex(
        "036f00000001000000000001037777770467736c62076578616d706c6503636f6d"
        "00001c0001c002002904d0000100000000")
    s["repro-two-long-questions-noedns"] = (header(0x1234, qd=2)
                                            + question(long_name("a"), "A")
                                            + question(long_name("b"), "A"))
    # NXDOMAIN for a name of 63 labels below the origin (a2fa9e6: the
    # fast path's label table held 48).
    s["repro-nxdomain-63-labels"] = query(0x0100, ".".join(["a"] * 63) + "." + ORIGIN,
                                          "A", E(1232))
    return s


def fast_seeds():
    """Queries the fast path answers (and a few it declines), in lower and
    mixed case, for the differential target."""
    s = {}
    ecs24 = ecs(1, 24, v4("8.8.8.0", 3))
    ecs6 = ecs(2, 48, v6([0x2a00, 0x1450, 0x4001, 0, 0, 0, 0, 0], 6))
    cases = [
        ("www", "A", None), ("www", "AAAA", opt(1232)), ("www", "A", opt(1232, ecs24)),
        ("www", "AAAA", opt(1232, ecs6, do=True)), ("www", "TXT", opt(1232)),
        ("@", "SOA", opt(1232)), ("@", "NS", None), ("@", "ANY", opt(4096)),
        ("@", "MX", opt(512, ecs(1, 0, b""))), ("app", "A", opt(1232, ecs24)),
        ("status", "AAAA", None), ("_sip._tcp", "SRV", opt(1232)),
        ("ns2", "A", opt(1232)), ("nope", "A", opt(1232, ecs24)),
        ("x.y.www", "AAAA", None), ("mail", "DS", opt(1232)),
    ]
    for i, (label, qtype, edns) in enumerate(cases):
        tag = f"{label.replace('@', 'apex').replace('.', '-').strip('_')}-{qtype.lower()}"
        tag += "-edns" if edns is not None else ""
        lower = fqdn(label)
        mixed = "".join(c.upper() if j % 2 else c for j, c in enumerate(lower))
        qid = (i << 8) | (i * 37 & 0xff)
        s[f"{tag}"] = query(qid, lower, qtype, edns)
        s[f"{tag}-mixed"] = query(qid ^ 0x0503, mixed, qtype, edns)
    s["outside-zone"] = query(0x2a00, "example.org", "A", opt(1232, ecs24))
    s["bad-ecs-bits-beyond-prefix"] = query(0x2b01, fqdn("www"), "A",
                                            opt(1232, ecs(1, 22, bytes([10, 1, 3]))))
    repro = packet_seeds()
    for key in ("repro-ecs-4-octets-for-24-clean", "repro-ecs-2-octets-for-24-clean",
                "repro-opt-owner-pointer-v1", "repro-nxdomain-63-labels"):
        s[key] = repro[key]
    return s


# The opt_ecs target's input language (fuzz/src/opt_query.rs): four bytes
# (query ID, header byte 2, name and type indices), then operations.
OE_NAMES = ["www", "WwW", "app", "@", "mail", "nope", "a.b.www", "example.org",
            "status", "ns1", "_sip._tcp", "."]
OE_TYPES = ["A", "AAAA", "ANY", "TXT", "SOA", "NS", "MX", "SRV", "CNAME", "OPT",
            "TSIG", "AXFR", "DS", "CAA", "PTR", "PRIVATE"]


def oe(qid, ops=b"", name_="www", qtype="A", flags0=0):
    q = OE_NAMES.index(name_) | OE_TYPES.index(qtype) << 4
    return struct.pack(">HBB", qid, flags0, q) + ops


def oe_opt(payload=1232, version=0, do=False, owner_not_root=False, ext_rcode=False):
    flags = (0x80 if do else 0) | (1 if owner_not_root else 0) | (2 if ext_rcode else 0)
    return struct.pack(">BHBB", 0, payload, version, flags)


def oe_ecs_raw(family, source, scope, addr):
    assert len(addr) < 18
    return struct.pack(">BHBBB", 1, family, source, scope, len(addr)) + addr


def oe_ecs(v6, source, addr, scope=None):
    """A well-formed ECS option (the builder masks the address)."""
    scope_byte = 0 if scope is None else 0x80 | scope
    want = (source + 7) // 8
    return bytes([2, 1 if v6 else 0, source, scope_byte]) + addr[:want].ljust(want, b"\x00")


def oe_cookie(data):
    return bytes([3, len(data)]) + data


def oe_nsid(data=b""):
    return bytes([4, len(data)]) + data


def oe_option(code, declared, data):
    return struct.pack(">BHHB", 5, code, declared, len(data)) + data


def oe_fragment(data):
    return bytes([6, len(data)]) + data


def oe_tsig(mac_len=32):
    return bytes([7, mac_len]) + bytes(range(mac_len))


OE_A = b"\x08"


def opt_ecs_seeds():
    s = {}
    v4_8888 = bytes([8, 8, 8, 8])
    v6_google = bytes.fromhex("2a0014504001") + bytes(10)
    mapped = bytes(10) + b"\xff\xff" + bytes([81, 2, 69, 142])
    # Valid ECS, both families, several prefixes, from several sources
    # (the low bits of the first ID byte) and health views (second byte).
    s["ecs4-24"] = oe(0x0200, oe_opt() + oe_ecs(False, 24, v4_8888))
    s["ecs4-32-do"] = oe(0x0301, oe_opt(do=True) + oe_ecs(False, 32, bytes([81, 2, 69, 142])))
    s["ecs4-0"] = oe(0x0402, oe_opt() + oe_ecs(False, 0, b""))
    s["ecs4-20-masked"] = oe(0x0503, oe_opt() + oe_ecs(False, 20, bytes([1, 0, 0x1f])))
    s["ecs6-56-aaaa"] = oe(0x0504, oe_opt() + oe_ecs(True, 56, v6_google), qtype="AAAA")
    s["ecs6-0"] = oe(0x0605, oe_opt() + oe_ecs(True, 0, b""))
    s["ecs6-mapped-120"] = oe(0x0606, oe_opt() + oe_ecs(True, 120, mapped))
    s["ecs6-128"] = oe(0x0007, oe_opt(4096) + oe_ecs(True, 128, v6_google))
    s["ecs4-app-cname"] = oe(0x0208, oe_opt() + oe_ecs(False, 24, v4_8888), name_="app")
    s["ecs4-mixed-case"] = oe(0x0309, oe_opt() + oe_ecs(False, 16, v4_8888), name_="WwW")
    s["ecs4-nxdomain"] = oe(0x040a, oe_opt() + oe_ecs(False, 24, v4_8888), name_="nope")
    s["ecs4-outside-zone"] = oe(0x050b, oe_opt() + oe_ecs(False, 24, v4_8888), name_="example.org")
    s["ecs4-apex-any"] = oe(0x060c, oe_opt(512) + oe_ecs(False, 24, v4_8888), name_="@", qtype="ANY")
    # Invalid ECS (RFC 7871 §6): FORMERR.
    s["bad-ecs-too-many-octets"] = oe(0x0210, oe_opt() + oe_ecs_raw(1, 24, 0, v4_8888))
    s["bad-ecs-too-few-octets"] = oe(0x0311, oe_opt() + oe_ecs_raw(1, 24, 0, v4_8888[:2]))
    s["bad-ecs-v4-prefix-33"] = oe(0x0412, oe_opt() + oe_ecs_raw(1, 33, 0, v4_8888 + b"\x00"))
    s["bad-ecs-v6-prefix-129"] = oe(0x0513, oe_opt() + oe_ecs_raw(2, 129, 0, v6_google + b"\x00"))
    s["bad-ecs-bits-beyond-prefix"] = oe(0x0614, oe_opt() + oe_ecs_raw(1, 20, 0, bytes([10, 1, 0x0f])))
    s["bad-ecs-family-3"] = oe(0x0715, oe_opt() + oe_ecs_raw(3, 8, 0, b"\x0a"))
    s["bad-ecs-short"] = oe(0x0016, oe_opt() + oe_option(8, 3, b"\x00\x01\x18"))
    s["bad-two-ecs"] = oe(0x0117, oe_opt() + oe_ecs(False, 24, v4_8888) + oe_ecs(True, 48, v6_google))
    # Finding 1: a non-zero scope in a query ("MUST be set to 0").
    s["ecs4-scope-in-query"] = oe(0x0218, oe_opt() + oe_ecs(False, 24, v4_8888, scope=24))
    # Truncated options: data past the RDATA, a header cut short.
    s["truncated-ecs"] = oe(0x0320, oe_opt() + oe_option(8, 10, b"\x00\x01\x18\x00"))
    s["truncated-unknown"] = oe(0x0421, oe_opt() + oe_option(65001, 8, b"\xab\xcd"))
    s["truncated-header-2"] = oe(0x0522, oe_opt() + oe_fragment(b"\x00\x0a"))
    s["truncated-after-ecs"] = oe(0x0623, oe_opt() + oe_ecs(False, 24, v4_8888) + oe_fragment(b"\x00\x0a\x00"))
    # COOKIE (RFC 7873): client only, client + server, malformed lengths.
    client = bytes.fromhex("0b64b4dcd7b0cc8f")
    s["cookie-8"] = oe(0x0230, oe_opt() + oe_cookie(client))
    s["cookie-24"] = oe(0x0331, oe_opt() + oe_cookie(client + bytes.fromhex("0100000069300b5b") + bytes(8)))
    s["cookie-40"] = oe(0x0432, oe_opt() + oe_cookie(client + bytes(32)))
    s["cookie-5-malformed"] = oe(0x0533, oe_opt() + oe_cookie(client[:5]))
    s["cookie-12-malformed"] = oe(0x0634, oe_opt() + oe_cookie(client + bytes(4)))
    s["cookie-and-ecs"] = oe(0x0735, oe_opt() + oe_ecs(False, 24, v4_8888) + oe_cookie(client))
    # NSID (RFC 5001): the request is empty.
    s["nsid-request"] = oe(0x0040, oe_opt() + oe_nsid())
    s["nsid-and-ecs"] = oe(0x0141, oe_opt() + oe_nsid() + oe_ecs(True, 56, v6_google), qtype="AAAA")
    s["nsid-with-data"] = oe(0x0242, oe_opt() + oe_nsid(b"\x01\x02"))
    # EDNS version 1: BADVERS (RFC 6891 §6.1.3).
    s["badvers-1"] = oe(0x0350, oe_opt(version=1))
    s["badvers-1-ecs"] = oe(0x0451, oe_opt(version=1) + oe_ecs(False, 24, v4_8888))
    s["badvers-255-bad-ecs"] = oe(0x0552, oe_opt(version=255) + oe_ecs_raw(1, 24, 0, v4_8888))
    # Two OPT records (RFC 6891 §6.1.1): FORMERR.
    s["two-opts"] = oe(0x0660, oe_opt() + oe_ecs(False, 24, v4_8888) + oe_opt())
    s["two-opts-split-by-a"] = oe(0x0761, oe_opt() + OE_A + oe_cookie(client))
    # Records after the OPT: an A record, TSIG (unknown key), TSIG first.
    s["opt-then-a"] = oe(0x0070, oe_opt() + oe_ecs(False, 24, v4_8888) + OE_A)
    s["opt-then-tsig"] = oe(0x0171, oe_opt() + oe_ecs(False, 24, v4_8888) + oe_tsig())
    s["tsig-then-opt"] = oe(0x0272, oe_tsig(16) + oe_opt() + oe_nsid())
    s["tsig-only"] = oe(0x0373, oe_tsig(0))
    # Odd OPT records and queries.
    s["opt-owner-not-root"] = oe(0x0480, oe_opt(owner_not_root=True) + oe_ecs(False, 24, v4_8888))
    s["opt-ext-rcode"] = oe(0x0581, oe_opt(ext_rcode=True))
    s["opt-payload-0"] = oe(0x0682, oe_opt(0) + oe_ecs(False, 8, v4_8888), name_="@", qtype="ANY")
    s["opt-payload-65535-do"] = oe(0x0783, oe_opt(65535, do=True), name_="@", qtype="NS")
    s["unknown-options-ignored"] = oe(0x0084, oe_opt() + oe_option(65001, 4, b"\xde\xad\xbe\xef")
                                      + oe_option(12, 0, b"") + oe_ecs(False, 24, v4_8888))
    s["qtype-opt"] = oe(0x0185, oe_opt(), qtype="OPT")
    s["opcode-notify-ecs"] = oe(0x0286, oe_opt() + oe_ecs(False, 24, v4_8888), name_="@",
                                qtype="SOA", flags0=4 << 3)
    s["qr-set"] = oe(0x0387, oe_opt() + oe_ecs(False, 24, v4_8888), flags0=0x80)
    s["no-opt"] = oe(0x0488, b"", name_="mail")
    s["root-ns-ecs"] = oe(0x0589, oe_opt() + oe_ecs(False, 24, v4_8888), name_=".", qtype="NS")
    return s


def frame(msg):
    return struct.pack(">H", len(msg)) + msg


def tcp_seeds():
    """Byte streams as a TCP client writes them (length-prefixed)."""
    p = packet_seeds()
    s = {}
    s["one-query"] = frame(p["www-a-noedns"])
    s["three-pipelined"] = (frame(p["www-ecs4-24"]) + frame(p["www-ecs6-56"])
                            + frame(p["apex-soa-edns"]))
    s["query-short-message-query"] = (frame(p["mail-a-edns"]) + frame(b"\x00\x01\x02\x03\x04")
                                      + frame(p["www-a-noedns"]))
    s["query-zero-length"] = frame(p["apex-ns-noedns"]) + frame(b"")
    s["query-then-cut-message"] = frame(p["app-a-cname-chain"]) + frame(p["www-ecs4-24"])[:20]
    s["query-then-cut-length"] = frame(p["sip-srv"]) + b"\x00"
    s["qr-set-then-query"] = frame(p["qr-set"]) + frame(p["nxdomain-edns"])
    s["bad-ecs-then-good"] = frame(p["bad-ecs-too-many-octets"]) + frame(p["www-ecs4-32-do"])
    s["frame-longer-than-query"] = frame(p["www-a-noedns"] + b"\xde\xad\xbe\xef") + frame(p["apex-any-edns"])
    s["two-long-questions"] = frame(p["repro-two-long-questions-noedns"]) + frame(p["edns-version-1"])
    s["opcode-notify-then-axfr"] = frame(p["opcode-notify"]) + frame(p["class-ch-axfr"])
    s["compressed-then-two-additionals"] = frame(p["compressed-qname"]) + frame(p["two-additionals"])
    return s


SHIPPED_ZONE = os.path.join(REPO, "zones", "gslb.example.com.toml")
SHIPPED_SERVER = os.path.join(REPO, "meridian.toml")

FULL_ZONE = '''origin = "full.test."
ttl = 300
ns = ["ns1.full.test.", "ns.other.example."]
ns_ttl = 86400

[soa]
mname = "ns1.full.test."
rname = "hostmaster.full.test."
serial = 7
minimum = 30

[records]
ns1 = [{ type = "A", value = "192.0.2.53" }]
"@" = [{ type = "TXT", value = "hello world" }, { type = "MX", value = "10 mx.example.net." }]
child = [{ type = "NS", value = "ns.child.full.test." }]
"ns.child" = [{ type = "A", value = "192.0.2.54" }]
alias = [{ type = "CNAME", value = "api", ttl = 60 }]
"_srv._udp" = [{ type = "SRV", value = "0 0 53 ns1" }]
ptr = [{ type = "PTR", value = "host.example.net." }]

[datacenters.a]
location = [51.5, -0.12]
addresses = ["192.0.2.1", "2001:db8::1"]
[datacenters.a.probe]
type = "https"
path = "/healthz"
host = "a.example.net"
interval = "5s"
timeout = "2s"
rise = 2
fall = 3
jitter = 0.2
expect_status = [200, "3xx"]
expect_body = "ok"
tls_verify = false

[datacenters.b]
location = [35.7, 139.7]
addresses = ["192.0.2.2"]
[datacenters.b.probe]
type = "dns"
targets = ["192.0.2.2:53", "192.0.2.3"]
name = "full.test."
qtype = "SOA"
rcode = "NOERROR"
min_up = 2

[datacenters.c]
location = [-33.9, 151.2]
addresses = ["2001:db8::3"]
[datacenters.c.probe]
type = "tcp"
port = 443
interval = "500ms"
timeout = "100ms"

[datacenters.d]
addresses = ["192.0.2.4"]
[datacenters.d.probe]
type = "external"

[services.api]
policy = "geo"
datacenters = ["a", "b", "c"]
ttl = 20
default = ["b", "a"]
max_answers = 2
degraded_ttl = 5
when_all_down = "fallback"
fallback = ["192.0.2.99", "2001:db8::99"]
warmup = "assume_down"
[services.api.countries]
JP = ["b", "a"]
[services.api.continents]
OC = ["c"]
[services.api.networks]
"10.0.0.0/8" = ["a"]
"2001:db8:ffff::/48" = ["c", "b"]

[services.fo]
policy = "failover"
datacenters = ["d", "a"]
when_all_down = "fallback"
fallback_cname = "sorry.example.net."

[services."@"]
policy = "failover"
datacenters = ["a"]
when_all_down = "servfail"
'''

MINIMAL_ZONE = '''origin = "min.test."
ns = ["ns.example.net."]
[soa]
rname = "h.min.test."
serial = 1
'''

# Mistakes the validator must reject with a message (keys TOML scopes
# into [soa], a CNAME at a service, a loop, a bad address).
BAD_ZONE = '''origin = "bad.test."
[soa]
rname = "h.bad.test."
serial = 1
ns = ["ns1.bad.test."]
[records]
x = [{ type = "CNAME", value = "y" }]
y = [{ type = "CNAME", value = "x" }]
www = [{ type = "CNAME", value = "x" }, { type = "A", value = "300.1.1.1" }]
"*" = [{ type = "A", value = "192.0.2.1" }]
[datacenters.a]
addresses = []
[services.www]
policy = "nearest"
datacenters = ["a", "a", "zz"]
max_answers = 9
[services.www.countries]
UK = ["a"]
[services.www.networks]
"::ffff:10.0.0.0/104" = ["a"]
"10.0.0.1/8" = ["a"]
'''

SERVER_FULL = '''listen = ["0.0.0.0:53", "[::]:53"]
zones = "zones"
geoip = "geoip/dbip-country.mmdb"
countries = "geoip/countries.csv"
max_udp_payload = 4096
threads = 2
tcp_idle_timeout = 10
tcp_max_connections = 512
state_file = "state.json"
wait_for_probes = false
max_probes_in_flight = 64
[admin]
enabled = true
listen = "[::1]:5380"
token = "0123456789abcdef0123"
'''


def zone_seeds():
    with open(SHIPPED_ZONE, encoding="utf-8") as f:
        shipped = f.read()
    with open(SHIPPED_SERVER, encoding="utf-8") as f:
        server = f.read()
    return {
        "shipped-zone": shipped,
        "shipped-zone-failover": shipped.replace('policy = "geo"', 'policy = "failover"'),
        "shipped-zone-no-comments": "\n".join(
            line.split("#")[0].rstrip() for line in shipped.splitlines()) + "\n",
        "full-zone": FULL_ZONE,
        "minimal-zone": MINIMAL_ZONE,
        "bad-zone": BAD_ZONE,
        "shipped-server": server,
        "server-full": SERVER_FULL,
        "server-bad": 'max_udp_payload = 100\nlisten = ["nowhere"]\n[admin]\nlisten = "192.0.2.1:80"\n',
        "not-toml": "origin = [\n",
    }


def write(directory, files, ext, mode):
    os.makedirs(directory, exist_ok=True)
    for old in os.listdir(directory):
        if old.endswith((".bin", ".toml")):
            os.remove(os.path.join(directory, old))
    for key, data in sorted(files.items()):
        with open(os.path.join(directory, key + ext), mode) as f:
            f.write(data)
    print(f"{len(files):3} seeds in {os.path.relpath(directory, REPO)}")


def main():
    write(os.path.join(CORPUS, "packet"), packet_seeds(), ".bin", "wb")
    write(os.path.join(CORPUS, "fast_vs_general"), fast_seeds(), ".bin", "wb")
    write(os.path.join(CORPUS, "zone_config"), zone_seeds(), ".toml", "w")
    write(os.path.join(CORPUS, "opt_ecs"), opt_ecs_seeds(), ".bin", "wb")
    write(os.path.join(CORPUS, "tcp_stream"), tcp_seeds(), ".bin", "wb")


if __name__ == "__main__":
    main()
