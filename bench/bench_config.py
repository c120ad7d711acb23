#!/usr/bin/env python3
"""Copy Meridian's config for a bench run, adding the bench-only zones (stdlib only).

  bench_config.py [--rrl shipped|high|off] SRC_CONFIG DST_DIR [ZONE_DIR...]

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
"""

import glob
import os
import re
import shutil
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


def main():
    args = sys.argv[1:]
    rrl = "shipped"
    if args[:1] == ["--rrl"] and len(args) > 1:
        rrl, args = args[1], args[2:]
    if len(args) < 2 or rrl not in ("shipped", "high", "off"):
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
    got = tomllib.loads(out)
    assert all(got[k] == v for k, v in keys.items()), "bench_config: rewrite failed"
    if rrl != "shipped":
        assert got["rrl"]["enabled"] == (rrl == "high"), "bench_config: [rrl] rewrite failed"
    with open(os.path.join(dst, "meridian.toml"), "w") as f:
        f.write(out)
    print("bench_config: %s serves %s, rrl %s" % (os.path.join(dst, "meridian.toml"),
                                                  ", ".join(sorted(os.listdir(zdir))), rrl))


if __name__ == "__main__":
    main()
