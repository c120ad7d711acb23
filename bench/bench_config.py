#!/usr/bin/env python3
"""Copy Meridian's config for a bench run, adding the bench-only zones (stdlib only).

  bench_config.py [--rrl shipped|high|off] [--no-admin] [--sign ALGORITHM --meridian BIN]
                  SRC_CONFIG DST_DIR [ZONE_DIR...]

Writes DST_DIR/meridian.toml, a copy of SRC_CONFIG whose `zones` key names
DST_DIR/zones/, which holds copies of the zone files of SRC_CONFIG's zones
directory (top level *.toml, as the server reads it) and of every ZONE_DIR's
*.toml. `geoip` and `countries` are relative to the config file, so the copy
gets them as absolute paths. Everything else is kept as it is, `state_file`
included (relative: it lands in DST_DIR). The shipped files are not touched.

--rrl sets response rate limiting: `high` keeps it on with every limit at
1,000,000/s, which one load generator on 127.0.0.1 never reaches, so the
run measures what RRL costs without limiting anything; `off` turns it off;
`shipped` (the default) keeps the config's own [rrl] table, whose limits a
benchmark from one address hits at once.

--no-admin turns the admin HTTP listener off, so that several copies can run
side by side (ab.py). --sign ALGORITHM (ecdsap256sha256 or ed25519) signs
every zone of the copy: one CSK per zone from `BIN dnssec keygen` in
DST_DIR/zones/keys/, listed in a [dnssec] table appended to the zone file
(a zone file that already has one is refused).
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import tomllib


def toml_str(v):
    return '"%s"' % v.replace("\\", "\\\\").replace('"', '\\"')


RRL_TABLES = {
    "high": "[rrl]\nenabled = true\n" + "".join(
        "%s_per_second = 1000000\n" % k for k in ("responses", "nxdomains", "referrals", "errors")),
    "off": "[rrl]\nenabled = false\n",
}


def set_rrl(text, mode):
    """Replaces the [rrl] table of `text` (if any) with the one for `mode`."""
    if mode == "shipped":
        return text
    lines, out, skip = text.splitlines(keepends=True), [], False
    for line in lines:
        header = re.match(r"\s*\[([^\]]*)\]", line)
        if header:
            skip = header.group(1).strip() == "rrl"
        if not skip:
            out.append(line)
    body = "".join(out)
    if body and not body.endswith("\n"):
        body += "\n"
    return body + "\n" + RRL_TABLES[mode]


def no_admin(text):
    """`text` with its [admin] table's listener off."""
    lines, out, admin = text.splitlines(keepends=True), [], False
    for line in lines:
        header = re.match(r"\s*\[([^\]]*)\]", line)
        if header:
            admin = header.group(1).strip() == "admin"
        if not (admin and re.match(r"\s*(listen|enabled)\s*=", line)):
            out.append(line)
        if header and admin:
            out.append("enabled = false\n")
    body = "".join(out)
    if "admin" not in tomllib.loads(body):
        body += "\n[admin]\nenabled = false\n"
    return body


def sign(zone_file, meridian, algorithm):
    """Appends a [dnssec] table with a fresh CSK to `zone_file` (keys beside it)."""
    with open(zone_file, "rb") as f:
        zone = tomllib.load(f)
    if "dnssec" in zone:
        sys.exit("bench_config: %s already has a [dnssec] table" % zone_file)
    keys = os.path.join(os.path.dirname(zone_file), "keys")
    out = subprocess.run([meridian, "dnssec", "keygen", zone["origin"], "--algorithm", algorithm,
                          "--dir", keys], capture_output=True, text=True)
    m = re.search(r"wrote .*/(K[^ ]*)\.key and ", out.stdout)
    if out.returncode != 0 or not m:
        sys.exit("bench_config: meridian dnssec keygen failed: %s%s" % (out.stdout, out.stderr))
    with open(zone_file, "a") as f:
        f.write('\n[dnssec]\nkeys = [{ file = "keys/%s", state = "active" }]\n' % m.group(1))


def main():
    args = sys.argv[1:]
    rrl, admin, algorithm, meridian = "shipped", True, None, None
    while args[:1] and args[0].startswith("--"):
        flag = args.pop(0)
        if flag == "--no-admin":
            admin = False
        elif flag in ("--rrl", "--sign", "--meridian") and args:
            value = args.pop(0)
            if flag == "--rrl":
                rrl = value
            elif flag == "--sign":
                algorithm = value
            else:
                meridian = value
        else:
            args = []
            break
    if len(args) < 2 or rrl not in ("shipped", "high", "off") or bool(algorithm) != bool(meridian):
        sys.exit(__doc__.strip().split("\n\n")[1])
    src, dst, extra = args[0], args[1], args[2:]
    base = os.path.dirname(os.path.abspath(src))
    with open(src) as f:
        text = f.read()
    cfg = tomllib.loads(text)
    dst = os.path.abspath(dst)
    zdir = os.path.join(dst, "zones")
    os.makedirs(zdir, exist_ok=True)
    zones = sorted(glob.glob(os.path.join(base, cfg.get("zones", "zones"), "*.toml")))
    for d in extra:
        zones += sorted(glob.glob(os.path.join(d, "*.toml")))
    for z in zones:
        if os.path.exists(os.path.join(zdir, os.path.basename(z))):
            sys.exit("bench_config: zone file name %s twice" % os.path.basename(z))
        shutil.copy(z, zdir)
    keys = {"zones": zdir, "geoip": os.path.join(base, cfg.get("geoip", "geoip/dbip-country.mmdb"))}
    if "countries" in cfg:
        keys["countries"] = os.path.join(base, cfg["countries"])
    # Top-level keys come before the first [table] header.
    m = re.search(r"(?m)^\s*\[", text)
    head, tail = (text[:m.start()], text[m.start():]) if m else (text, "")
    for k, v in keys.items():
        line = "%s = %s" % (k, toml_str(v))
        head, n = re.subn(r"(?m)^%s\s*=.*$" % re.escape(k), lambda _: line, head)
        if n == 0:
            head = line + "\n" + head
    out = set_rrl(head + tail, rrl)
    if not admin:
        out = no_admin(out)
    got = tomllib.loads(out)
    assert all(got[k] == v for k, v in keys.items()), "bench_config: rewrite failed"
    if rrl != "shipped":
        assert got["rrl"]["enabled"] == (rrl == "high"), "bench_config: [rrl] rewrite failed"
    assert admin or got["admin"]["enabled"] is False, "bench_config: [admin] rewrite failed"
    if algorithm:
        for z in sorted(glob.glob(os.path.join(zdir, "*.toml"))):
            sign(z, meridian, algorithm)
    with open(os.path.join(dst, "meridian.toml"), "w") as f:
        f.write(out)
    print("bench_config: %s serves %s, rrl %s, admin %s, %s" % (
        os.path.join(dst, "meridian.toml"), ", ".join(sorted(glob.glob("*.toml", root_dir=zdir))),
        rrl, "on" if admin else "off", "signed (%s)" % algorithm if algorithm else "unsigned"))


if __name__ == "__main__":
    main()
