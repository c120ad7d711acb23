#!/usr/bin/env python3
"""Generate dnsperf query files for the Meridian benchmark (python3 stdlib only).

Writes, into OUTDIR (default bench/out/queries):

  mixed.bin   10,000 queries shaped like resolver traffic to a GSLB zone:
                45 % www A     with ECS (IPv4 /24 from real networks in 20+ countries,
                               about 15 % IPv6 /56 instead)
                10 % www AAAA  with ECS (half IPv4 /24, half IPv6 /56)
                25 % static names of several types (SOA, NS, MX, TXT, CAA, A, AAAA,
                               SRV, out-of-zone CNAME, NODATA)
                10 % NXDOMAIN  (random labels under the zone)
                10 % app       (CNAME to www, followed in-zone) with ECS
              Static and NXDOMAIN queries carry EDNS; half of them also carry ECS,
              as a resolver that sends ECS to this zone would.
  static.bin  static names only, EDNS without ECS (2,500 queries)
  geo.bin     www A (80 %) / AAAA (20 %) with ECS only (5,000 queries)
  weighted.bin, sticky.bin, chain.bin, multi.bin, geo2.bin, latency.bin
              geo.bin's queries (same order, qtypes and ECS subnets) with the name
              replaced by a service of the bench-only zone bench/zones/policies.bench.toml
              (origin bench.example.): lb (weighted), st (sticky), chain
              (["geo", {within_km = 6000}, "weighted"]), multi (geo, max_answers = 2)
              geo (a copy of www, the control) and lat (latency). Only Meridian serves that zone.
  *.txt       dnsperf text-format equivalents ("name TYPE" per line). They cannot
              carry a per-query ECS option, so they are for eyeballing and for tools
              that need text input, not for the benchmark itself.

The .bin files use dnsperf's -B format: every query is a 2-byte big-endian length
followed by the raw DNS message (RFC 1035 4.2.2 framing). dnsperf overwrites only the
first two bytes (the message ID), so each query keeps its own EDNS0 OPT record and ECS
option (RFC 7871: family, source prefix, scope prefix 0, address truncated to
ceil(prefix/8) bytes with the bits beyond the prefix zero). Queries have RD=0, as a
resolver sends to an authoritative server, and advertise a 1232-byte UDP payload.

The output is a pure function of --seed: the same seed gives byte-identical files.

  --verify HOST:PORT  instead of writing files, send a sample of mixed.bin's queries to a
                      server over UDP (loopback only) and print the rcode / answer mix per
                      category. Used by run.sh as a sanity check of every server.
  --verify-files F,.. the query sets --verify samples (default mixed); each set is
                      checked separately. For geo and the policy sets the answer mix is
                      the set of addresses per answer, and the ECS scopes are counted.
"""

import argparse
import collections
import ipaddress
import os
import random
import re
import socket
import struct
import sys

ZONE = "gslb.example.com."

# Real-world client networks per country, checked against the shipped DB-IP country
# database (geoip/dbip-country.mmdb) with `meridian explain`: every block lies inside a
# database network of that country. ECS subnets are drawn at random inside them.
V4_BLOCKS = {
    "US": ["73.0.0.0/8", "98.192.0.0/10", "4.2.0.0/20", "12.1.0.0/19"],
    "CA": ["70.24.0.0/13", "174.88.0.0/13", "24.200.0.0/14"],
    "MX": ["189.128.0.0/10", "187.128.0.0/11"],
    "BR": ["200.160.0.0/15", "177.71.128.0/17", "189.1.0.0/17"],
    "AR": ["181.1.0.0/17", "190.1.0.0/18"],
    "CO": ["179.1.0.0/17"],
    "DE": ["217.0.0.0/14", "84.128.0.0/10", "91.0.0.0/10", "79.192.0.0/10"],
    "GB": ["81.2.64.0/18", "86.0.0.0/11", "2.25.0.0/20"],
    "FR": ["90.0.0.0/13", "86.192.0.0/10", "78.192.0.0/12", "82.64.0.0/14"],
    "NL": ["145.1.0.0/17", "84.24.0.0/13"],
    "ES": ["81.32.0.0/12", "83.32.0.0/11"],
    "IT": ["79.0.0.0/10", "93.32.0.0/11"],
    "SE": ["78.64.0.0/12"],
    "PL": ["83.0.0.0/11"],
    "RU": ["95.24.0.0/13", "5.136.0.0/13"],
    "TR": ["78.160.0.0/12"],
    "JP": ["133.0.0.0/9", "126.0.0.0/11", "60.32.0.0/12", "153.128.0.0/13"],
    "KR": ["175.192.0.0/10", "121.128.0.0/10"],
    "CN": ["123.112.0.0/12", "114.224.0.0/11"],
    "IN": ["49.32.0.0/12", "14.139.0.0/16", "117.192.0.0/10", "59.88.0.0/13"],
    "SG": ["116.86.0.0/15", "175.156.0.0/16", "118.200.0.0/15", "203.116.0.0/15"],
    "ID": ["36.65.0.0/16", "180.241.0.0/16"],
    "AU": ["1.120.0.0/13", "101.160.0.0/14", "58.160.0.0/12"],
    "NZ": ["122.56.0.0/13", "49.224.0.0/14"],
    "ZA": ["41.0.0.0/11", "105.224.0.0/14", "105.0.0.0/12", "41.185.0.0/16"],
    "NG": ["105.112.0.0/12"],
    "KE": ["105.160.0.0/13", "41.80.0.0/15"],
    "EG": ["41.32.0.0/12", "156.160.0.0/11"],
}
V6_BLOCKS = {
    "US": ["2601::/20", "2603:2000::/19"],
    "CA": ["2001:568::/30", "2607:fea8::/32"],
    "BR": ["2804:14c::/31"],
    "AR": ["2803:9800::/32"],
    "DE": ["2003:80::/25", "2a02:8100::/27"],
    "GB": ["2a00:2200::/23", "2a02:c78::/29"],
    "FR": ["2a01:cb00::/27", "2a01:e00::/29"],
    "NL": ["2a02:a400::/22"],
    "IT": ["2001:b00::/29"],
    "RU": ["2a00:1370::/32"],
    "JP": ["240b::/22", "2400:4000::/22"],
    "KR": ["2001:e60::/32"],
    "IN": ["2409:4000::/22", "2405:200::/29"],
    "SG": ["2406:3000::/30"],
    "AU": ["2001:8002::/31"],
    "NZ": ["2407:7000::/32"],
    "ZA": ["2001:4200::/32"],
}

# Static names of the example zone (zones/gslb.example.com.toml), with weights.
STATIC = [
    ("@", "SOA", 3), ("@", "NS", 3), ("@", "MX", 2), ("@", "TXT", 2), ("@", "CAA", 1),
    ("ns1", "A", 3), ("ns1", "AAAA", 2), ("ns2", "A", 2), ("ns2", "AAAA", 1),
    ("mail", "A", 3), ("mail", "AAAA", 1),          # mail AAAA: NODATA
    ("status", "A", 2),                               # CNAME to outside the zone
    ("status", "CNAME", 1),
    ("_sip._tcp", "SRV", 2),
    ("app", "CNAME", 1),                              # the CNAME itself, no ECS needed
]

# Bench-only zone (bench/zones/policies.bench.toml): query file -> service label.
# Each of these files is geo.bin with www.gslb.example.com replaced by the service.
POLICY_ZONE = "bench.example."
POLICY_FILES = {"weighted": "lb", "sticky": "st", "chain": "chain", "multi": "multi", "geo2": "geo",
                "latency": "lat"}

QTYPE = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "MX": 15, "TXT": 16, "AAAA": 28,
         "SRV": 33, "OPT": 41, "CAA": 257}
QTYPE_NAME = {v: k for k, v in QTYPE.items()}
RCODE = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
EDNS_UDP = 1232


def fqdn(label):
    return ZONE if label == "@" else label + "." + ZONE


def encode_name(name):
    out = bytearray()
    for label in name.rstrip(".").split("."):
        if label:
            b = label.encode("ascii")
            assert len(b) < 64, name
            out += bytes([len(b)]) + b
    return bytes(out + b"\x00")


def ecs_option(net):
    """RFC 7871 option 8: FAMILY(2) SOURCE PREFIX(1) SCOPE PREFIX(1) ADDRESS(truncated)."""
    family = 1 if net.version == 4 else 2
    nbytes = (net.prefixlen + 7) // 8
    addr = net.network_address.packed[:nbytes]   # strict network: bits past prefix are 0
    data = struct.pack("!HBB", family, net.prefixlen, 0) + addr
    return struct.pack("!HH", 8, len(data)) + data


def message(qname, qtype, ecs=None, edns=True):
    """A query: ID 0 (dnsperf rewrites it), RD=0, one question, optional OPT (+ECS)."""
    header = struct.pack("!HHHHHH", 0, 0x0000, 1, 0, 0, 1 if edns else 0)
    msg = header + encode_name(qname) + struct.pack("!HH", QTYPE[qtype], 1)
    if edns:
        opts = ecs_option(ecs) if ecs is not None else b""
        # root name, TYPE=OPT, CLASS=UDP payload size, TTL=ext-rcode/version/flags=0
        msg += b"\x00" + struct.pack("!HHIH", QTYPE["OPT"], EDNS_UDP, 0, len(opts)) + opts
    return msg


class Gen:
    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.v4 = [(cc, ipaddress.ip_network(b)) for cc, bs in sorted(V4_BLOCKS.items()) for b in bs]
        self.v6 = [(cc, ipaddress.ip_network(b)) for cc, bs in sorted(V6_BLOCKS.items()) for b in bs]
        self.static_w = [w for _, _, w in STATIC]

    def subnet(self, version):
        """(country, /24 or /56) drawn from a random block of a random country."""
        blocks = V4_BLOCKS if version == 4 else V6_BLOCKS
        cc = self.rng.choice(sorted(blocks))
        block = ipaddress.ip_network(self.rng.choice(blocks[cc]))
        plen = 24 if version == 4 else 56
        n_sub = 1 << (plen - block.prefixlen)
        base = int(block.network_address) + self.rng.randrange(n_sub) * (1 << (block.max_prefixlen - plen))
        return cc, ipaddress.ip_network((base, plen))

    def static(self):
        name, qtype, _ = self.rng.choices(STATIC, weights=self.static_w)[0]
        return fqdn(name), qtype

    def nxdomain(self):
        letters = "abcdefghijklmnopqrstuvwxyz0123456789"
        label = "".join(self.rng.choice(letters) for _ in range(self.rng.randint(4, 12)))
        if self.rng.random() < 0.2:                       # some deeper names, e.g. x.y.zone
            label += "." + self.rng.choice(["www", "mail", "cdn", "img"])
        return label + "." + ZONE, self.rng.choice(["A", "A", "A", "AAAA", "TXT"])

    def mixed(self, total=10000):
        """List of (category, qname, qtype, ecs_network_or_None, country)."""
        plan = [("www-A", 0.45), ("www-AAAA", 0.10), ("static", 0.25), ("nxdomain", 0.10), ("app", 0.10)]
        counts = [round(total * f) for _, f in plan]
        counts[0] += total - sum(counts)
        out = []
        for (cat, _), n in zip(plan, counts):
            for _ in range(n):
                if cat == "www-A":
                    cc, net = self.subnet(6 if self.rng.random() < 0.15 else 4)
                    out.append((cat, fqdn("www"), "A", net, cc))
                elif cat == "www-AAAA":
                    cc, net = self.subnet(6 if self.rng.random() < 0.5 else 4)
                    out.append((cat, fqdn("www"), "AAAA", net, cc))
                elif cat == "app":
                    cc, net = self.subnet(6 if self.rng.random() < 0.15 else 4)
                    out.append((cat, fqdn("app"), "A" if self.rng.random() < 0.8 else "AAAA", net, cc))
                else:
                    name, qtype = self.static() if cat == "static" else self.nxdomain()
                    cc, net = self.subnet(4) if self.rng.random() < 0.5 else (None, None)
                    out.append((cat, name, qtype, net, cc))
        self.rng.shuffle(out)
        return out

    def static_only(self, total=2500):
        return [("static",) + self.static() + (None, None) for _ in range(total)]

    def geo(self, total=5000):
        out = []
        for _ in range(total):
            qtype = "A" if self.rng.random() < 0.8 else "AAAA"
            cc, net = self.subnet(6 if self.rng.random() < 0.2 else 4)
            out.append(("www-" + qtype, fqdn("www"), qtype, net, cc))
        return out


def renamed(queries, label):
    """geo.bin's queries for another service: same qtype and ECS, qname label.POLICY_ZONE."""
    qname = label + "." + POLICY_ZONE
    return [(label + "-" + qtype, qname, qtype, net, cc) for _, _, qtype, net, cc in queries]


def all_sets(seed):
    g = Gen(seed)   # one generator, fixed order: the files depend only on the seed
    sets = {"mixed": g.mixed(), "static": g.static_only(), "geo": g.geo()}
    for name, label in POLICY_FILES.items():
        sets[name] = renamed(sets["geo"], label)
    return sets


def write_files(outdir, sets):
    os.makedirs(outdir, exist_ok=True)
    for name, queries in sets.items():
        with open(os.path.join(outdir, name + ".bin.tmp"), "wb") as f:
            for _, qname, qtype, net, _ in queries:
                m = message(qname, qtype, net)
                f.write(struct.pack("!H", len(m)) + m)
        os.replace(os.path.join(outdir, name + ".bin.tmp"), os.path.join(outdir, name + ".bin"))
        with open(os.path.join(outdir, name + ".txt"), "w") as f:
            for _, qname, qtype, _, _ in queries:
                f.write("%s %s\n" % (qname, qtype))
        cats = collections.Counter(q[0] for q in queries)
        v6 = sum(1 for q in queries if q[3] is not None and q[3].version == 6)
        ecs = sum(1 for q in queries if q[3] is not None)
        subnets = len({q[3] for q in queries if q[3] is not None})
        countries = len({q[4] for q in queries if q[4]})
        print("gen_queries: %s.bin %d queries (%s); ECS on %d (%d IPv6), %d distinct subnets, %d countries"
              % (name, len(queries), ", ".join("%s %d" % kv for kv in sorted(cats.items())),
                 ecs, v6, subnets, countries))


# ---- --verify: a tiny response parser -------------------------------------------------

def skip_name(buf, off):
    while True:
        n = buf[off]
        if n == 0:
            return off + 1
        if n & 0xC0 == 0xC0:
            return off + 2
        off += 1 + n


def parse_response(buf):
    """(rcode, [(type, rdata_text)], ecs_scope or None) of a DNS response."""
    _, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", buf[:12])
    rcode = flags & 0xF
    off = 12
    for _ in range(qd):
        off = skip_name(buf, off) + 4
    answers, scope = [], None
    for i in range(an + ns + ar):
        off = skip_name(buf, off)
        rtype, _, ttl, rdlen = struct.unpack("!HHIH", buf[off:off + 10])
        off += 10
        rdata = buf[off:off + rdlen]
        if i < an:
            if rtype == 1:
                answers.append(("A", str(ipaddress.IPv4Address(rdata))))
            elif rtype == 28:
                answers.append(("AAAA", str(ipaddress.IPv6Address(rdata))))
            else:
                answers.append((QTYPE_NAME.get(rtype, str(rtype)), ""))
        elif rtype == 41:
            rcode |= (ttl >> 24) << 4
            o = 0
            while o + 4 <= len(rdata):
                code, olen = struct.unpack("!HH", rdata[o:o + 4])
                if code == 8 and olen >= 4:
                    scope = rdata[o + 7]
                o += 4 + olen
        off += rdlen
    return rcode, answers, scope


def verify(target, seed, sample, files=("mixed",)):
    host, _, port = target.rpartition(":")
    host = host.strip("[]")
    if not ipaddress.ip_address(host).is_loopback:
        sys.exit("gen_queries: --verify only talks to loopback addresses")
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    sets = all_sets(seed)
    unknown = [f for f in files if f not in sets]
    if unknown:
        sys.exit("gen_queries: no query set %s (known: %s)" % (", ".join(unknown), ", ".join(sets)))
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    bad = 0
    qid = 0
    for fname in files:
        queries = sets[fname][:sample]
        per_cat = collections.defaultdict(collections.Counter)
        scopes = collections.defaultdict(collections.Counter)
        lost = 0
        for cat, qname, qtype, net, cc in queries:
            m = bytearray(message(qname, qtype, net))
            qid = (qid + 1) & 0xFFFF
            m[0:2] = struct.pack("!H", qid)
            s.sendto(bytes(m), (host, int(port)))
            try:
                while True:
                    resp = s.recv(65535)
                    if struct.unpack("!H", resp[:2])[0] == qid:
                        break
            except socket.timeout:
                lost += 1
                continue
            rcode, answers, scope = parse_response(resp)
            addrs = [v for t, v in answers if t in ("A", "AAAA")]
            key = RCODE.get(rcode, "rcode%d" % rcode)
            if fname != "mixed":
                # geo and policy sets: the set of addresses (rotation changes the order)
                key += " " + ("+".join(sorted(addrs)) if addrs else "no-address")
                scopes[cat]["none" if scope is None else "/%d" % scope] += 1
            elif cat in ("www-A", "www-AAAA", "app"):
                key += " " + (addrs[-1] if addrs else "no-address") + (" ecs" if scope is not None else "")
            elif answers:
                key += " answers"
            per_cat[cat][key] += 1
        print("verify %s: %d queries from %s.bin, %d unanswered" % (target, len(queries), fname, lost))
        for cat in sorted(per_cat):
            print("  %-11s %s" % (cat, ", ".join("%s: %d" % kv for kv in per_cat[cat].most_common())))
            if scopes[cat]:
                top = scopes[cat].most_common()
                print("  %-11s ECS scope %s%s" % ("", ", ".join("%s: %d" % kv for kv in top[:6]),
                                                   ", ... (%d scopes)" % len(top) if len(top) > 6 else ""))
        if lost == len(queries):
            bad += 1
    return 1 if bad else 0


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(here, "out", "queries"), help="output directory")
    ap.add_argument("--seed", type=int, default=20261125, help="random seed (default 20261125)")
    ap.add_argument("--verify", metavar="HOST:PORT", help="send a sample of mixed.bin to a loopback server")
    ap.add_argument("--sample", type=int, default=2000, help="queries sent by --verify, per set")
    ap.add_argument("--verify-files", default="mixed",
                    help="comma/space separated query sets for --verify (default mixed)")
    args = ap.parse_args()
    if args.verify:
        files = [f for f in re.split(r"[,\s]+", args.verify_files) if f]
        return verify(args.verify, args.seed, args.sample, files)
    write_files(args.out, all_sets(args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
