#!/usr/bin/env python3
"""Generate a large configuration for the load benchmark (stdlib only).

  gen_load.py OUT_DIR [--names N] [--services S] [--datacenters D]
              [--subset K] [--geoip PATH] [--port P] [--admin ADDR:PORT]

Writes, for one zone `load.example.`:

  OUT_DIR/meridian.toml            server settings (absolute geoip path;
                                   DNS on 127.0.0.1:P; the admin API off
                                   unless --admin gives it an address)
  OUT_DIR/zones/load.example.toml  the zone: N names, each with one A and
                                   one TXT record (2N RRs), D datacenters
                                   around the globe and S geo services
  OUT_DIR/load.example.zone        the same static records as an RFC 1035
                                   master file, for nsd-checkzone and nsd
  OUT_DIR/zonefile/                the same config with the zone's static
                                   records from that file (`records_file`)
  OUT_DIR/nsd.conf                 NSD serving that file on 127.0.0.1:P
  OUT_DIR/names.txt                dnsperf queries for 10,000 of the names

Service j uses datacenters drawn from the D with a fixed seed: with
--subset K every service gets a distinct subset of K (K = D means all, and
then the services are identical, as in the "10,000 services over 2
datacenters" case). The output is the same on every run.
"""

import argparse
import itertools
import math
import os
import random


def dc_location(k, d):
    """Spreads d datacenters over the inhabited latitudes (a Fibonacci lattice)."""
    golden = (1 + 5**0.5) / 2
    z = 1 - 2 * (k + 0.5) / d
    lat = math.degrees(math.asin(z)) * 0.8  # keep them out of the polar seas
    lon = ((k / golden) % 1.0) * 360 - 180
    return round(lat, 2), round(lon, 2)


def subsets(rng, d, k, count):
    """`count` distinct k-subsets of range(d), in a fixed order."""
    if k >= d:
        return [list(range(d))] * count
    total = math.comb(d, k)
    if count > total:
        raise SystemExit(f"only {total} distinct subsets of {k} out of {d}")
    seen, out = set(), []
    while len(out) < count:
        s = tuple(sorted(rng.sample(range(d), k)))
        if s not in seen:
            seen.add(s)
            out.append(list(s))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--names", type=int, default=100_000)
    ap.add_argument("--services", type=int, default=0)
    ap.add_argument("--datacenters", type=int, default=2)
    ap.add_argument("--subset", type=int, default=0, help="datacenters per service (0 = all)")
    ap.add_argument("--geoip", default=os.path.join(os.path.dirname(__file__), "..", "geoip", "dbip-country.mmdb"))
    ap.add_argument("--port", type=int, default=5399)
    ap.add_argument("--admin", metavar="ADDR:PORT", default="",
                    help="admin API address (default: the API is off, so runs do not clash on 5380)")
    a = ap.parse_args()

    rng = random.Random(20261125)
    os.makedirs(os.path.join(a.out, "zones"), exist_ok=True)
    origin = "load.example."
    def server_toml(state_file):
        admin = f'listen = "{a.admin}"' if a.admin else "enabled = false"
        return (f'listen = ["127.0.0.1:{a.port}"]\nzones = "zones"\n'
                f'geoip = "{os.path.abspath(a.geoip)}"\nwait_for_probes = false\n'
                f'state_file = "{state_file}"\n[rrl]\nenabled = false\n[admin]\n{admin}\n')

    soa = ("ns1.load.example.", "hostmaster.load.example.", 2026112501, 3600, 600, 1209600, 60)
    soa_table = ('[soa]\nmname = "%s"\nrname = "%s"\nserial = %d\nrefresh = %d\nretry = %d\n'
                 'expire = %d\nminimum = %d\n\n' % soa)

    def zone_head(extra=""):
        return f'origin = "{origin}"\nttl = 3600\n{extra}ns = ["ns1.load.example."]\n\n' + soa_table

    # Datacenters and services, the same in both variants.
    tail = []
    if a.services:
        tail.append("\n")
        for k in range(a.datacenters):
            lat, lon = dc_location(k, a.datacenters)
            tail.append(f'[datacenters.dc{k}]\nlocation = [{lat}, {lon}]\n'
                        f'addresses = ["198.18.{k >> 8}.{k & 255}", "2001:db8:{k:x}::1"]\n')
        k = a.subset or a.datacenters
        for j, dcs in enumerate(subsets(rng, a.datacenters, k, a.services)):
            names = ", ".join(f'"dc{x}"' for x in dcs)
            tail.append(f'\n[services.s{j}]\npolicy = "geo"\ndatacenters = [{names}]\n')
    tail = "".join(tail)

    with open(os.path.join(a.out, "meridian.toml"), "w") as f:
        f.write(server_toml("meridian-state.json"))
    with open(os.path.join(a.out, "zones", "load.example.toml"), "w") as f:
        f.write(zone_head())
        f.write("[records]\n")
        f.write('ns1 = [{ type = "A", value = "192.0.2.53" }]\n')
        for i in range(a.names):
            f.write(
                f'h{i} = [{{ type = "A", value = "10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" }}, '
                f'{{ type = "TXT", value = "v=host {i}" }}]\n'
            )
        f.write(tail)

    # The same zone with its static records from the master file
    # (`records_file`): zonefile/meridian.toml.
    zf = os.path.join(a.out, "zonefile")
    os.makedirs(os.path.join(zf, "zones"), exist_ok=True)
    with open(os.path.join(zf, "meridian.toml"), "w") as f:
        f.write(server_toml("../meridian-state-zf.json"))
    with open(os.path.join(zf, "zones", "load.example.toml"), "w") as f:
        f.write(zone_head('records_file = "../../load.example.zone"\n') + tail)

    with open(os.path.join(a.out, "load.example.zone"), "w") as f:
        f.write(f"$ORIGIN {origin}\n$TTL 3600\n")
        f.write("@ SOA %s %s %d %d %d %d %d\n" % soa)
        f.write("@ NS ns1\nns1 A 192.0.2.53\n")
        for i in range(a.names):
            f.write(f'h{i} A 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}\nh{i} TXT "v=host {i}"\n')

    with open(os.path.join(a.out, "nsd.conf"), "w") as f:
        d = os.path.abspath(a.out)
        f.write(
            "server:\n"
            f"  ip-address: 127.0.0.1@{a.port}\n"
            "  server-count: 1\n  username: \"\"\n  chroot: \"\"\n"
            f"  zonesdir: \"{d}\"\n  database: \"\"\n"
            f"  pidfile: \"{d}/nsd.pid\"\n  xfrdfile: \"{d}/xfrd.state\"\n"
            f"  zonelistfile: \"{d}/zone.list\"\n  logfile: \"{d}/nsd.log\"\n"
            "  verbosity: 1\n  hide-version: yes\n"
            "remote-control:\n  control-enable: no\n"
            f"zone:\n  name: \"{origin}\"\n  zonefile: \"load.example.zone\"\n"
        )

    with open(os.path.join(a.out, "names.txt"), "w") as f:
        picks = rng.sample(range(a.names), min(a.names, 10_000)) if a.names else []
        for qtype, n in zip(itertools.cycle(("A", "TXT")), picks):
            f.write(f"h{n}.{origin} {qtype}\n")


if __name__ == "__main__":
    main()
