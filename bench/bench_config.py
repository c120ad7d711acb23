#!/usr/bin/env python3
"""Copy Meridian's config for a bench run, adding the bench-only zones (stdlib only).

  bench_config.py SRC_CONFIG DST_DIR ZONE_DIR...

Writes DST_DIR/meridian.toml, a copy of SRC_CONFIG whose `zones` key names
DST_DIR/zones/, which holds copies of the zone files of SRC_CONFIG's zones
directory (top level *.toml, as the server reads it) and of every ZONE_DIR's
*.toml. `geoip` and `countries` are relative to the config file, so the copy
gets them as absolute paths. Everything else is kept as it is, `state_file`
included (relative: it lands in DST_DIR). The shipped files are not touched.
"""

import glob
import os
import re
import shutil
import sys
import tomllib


def toml_str(v):
    return '"%s"' % v.replace("\\", "\\\\").replace('"', '\\"')


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__.strip().split("\n\n")[1])
    src, dst, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
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
    out = head + tail
    got = tomllib.loads(out)
    assert all(got[k] == v for k, v in keys.items()), "bench_config: rewrite failed"
    with open(os.path.join(dst, "meridian.toml"), "w") as f:
        f.write(out)
    print("bench_config: %s serves %s" % (os.path.join(dst, "meridian.toml"),
                                          ", ".join(sorted(os.listdir(zdir)))))


if __name__ == "__main__":
    main()
