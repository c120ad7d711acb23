#!/usr/bin/env bash
# Snapshot build time and peak memory, signed against unsigned (issue 13,
# "Performance"), with `meridian check` (parse, validate, build every
# zone, sign it, exit) under /usr/bin/time:
#
#   example      the shipped meridian.toml + zones/gslb.example.com.toml
#   services10k  the scale issue's 10,000 geo services, each over a
#                distinct 5-of-50 subset of datacenters:
#                gen_load.py --names 0 --services 10000 --datacenters 50 --subset 5
#
# each unsigned, signed with one CSK of algorithm 13 (ECDSA P-256), and
# with one CSK of algorithm 15 (Ed25519); keys from `meridian dnssec
# keygen`. Each configuration is checked RUNS times: the table gives the
# fastest wall time (and its CPU time) and the largest peak RSS, plus the
# RRsets signed and the signing time from Meridian's own log line
# ("signed the zone ... rrsets=N elapsed_ms=T"), which `meridian run`
# prints (one more start per signed configuration, ended by its PID).
#
# Usage: bench/dnssec_build.sh [RUNS]      (default 3)
# Environment: MERIDIAN_BIN [<repo>/target/release/meridian],
#              SKIP_BUILD [unset]: 1 = no cargo build.
# Output: the table on stdout and in bench/out/dnssec_build.md; the
# configs in bench/out/dnssec_build/<case>/ (bench/out/ is git-ignored).
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
OUT="$BENCH/out/dnssec_build"
RUNS=${1:-3}
BIN=${MERIDIAN_BIN:-$ROOT/target/release/meridian}

if [ -z "${SKIP_BUILD:-}" ]; then
  (cd "$ROOT" && nice cargo build --release --quiet)
fi
[ -x /usr/bin/time ] || { echo "dnssec_build.sh: /usr/bin/time missing (Debian package 'time')" >&2; exit 1; }

rm -rf "$OUT"
mkdir -p "$OUT"

# example/unsigned: the shipped files as they are.
mkdir -p "$OUT/example/zones"
# The admin API off (as gen_load.py's configs have it): the `meridian run`
# below must not clash with anything on 127.0.0.1:5380.
sed 's/^listen = "127.0.0.1:5380"$/enabled = false/' "$ROOT/meridian.toml" >"$OUT/example/meridian.toml"
cp "$ROOT/zones/gslb.example.com.toml" "$OUT/example/zones/"

# services10k/unsigned: as bench/load.sh makes it.
python3 "$BENCH/gen_load.py" "$OUT/services10k" --names 0 --services 10000 \
  --datacenters 50 --subset 5 --geoip "$ROOT/geoip/dbip-country.mmdb" >/dev/null

# sign BASE ALGORITHM ZONE_ORIGIN ZONE_FILE: a copy of BASE with a fresh
# CSK of ALGORITHM listed in the zone file's [dnssec].
sign() {
  local base=$1 alg=$2 origin=$3 zone=$4 dir="$1-$2"
  cp -r "$OUT/$base" "$OUT/$dir"
  local out file
  out=$("$BIN" dnssec keygen "$origin" --algorithm "$alg" --dir "$OUT/$dir/zones/keys")
  file=$(sed -n 's/^wrote .*\/\(K[^ ]*\)\.key and .*/\1/p' <<<"$out")
  [ -n "$file" ] || { echo "dnssec_build.sh: keygen said: $out" >&2; exit 1; }
  printf '\n[dnssec]\nkeys = [{ file = "keys/%s", state = "active" }]\n' "$file" \
    >>"$OUT/$dir/zones/$zone"
}
for alg in ecdsap256sha256 ed25519; do
  sign example "$alg" gslb.example.com. gslb.example.com.toml
  sign services10k "$alg" load.example. load.example.toml
done

table="$BENCH/out/dnssec_build.md"
{
  echo "| config | signing | build (wall, fastest of $RUNS) | CPU (user+sys) | peak RSS | RRsets signed | signing |"
  echo "|---|---|---:|---:|---:|---:|---:|"
} >"$table"
for case in example services10k; do
  for variant in "" -ecdsap256sha256 -ed25519; do
    dir="$OUT/$case$variant"
    best_wall="" best_cpu="" max_rss=0 rrsets="-" signing="-"
    for _ in $(seq "$RUNS"); do
      nice /usr/bin/time -f '%e %U %S %M' -o "$dir/time.txt" \
        "$BIN" check --config "$dir/meridian.toml" >"$dir/check.out" 2>"$dir/check.err" || {
        echo "dnssec_build.sh: meridian check failed for $dir:" >&2
        cat "$dir/check.out" "$dir/check.err" >&2
        exit 1
      }
      read -r wall user sys rss <"$dir/time.txt"
      cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')
      if [ -z "$best_wall" ] || awk -v a="$wall" -v b="$best_wall" 'BEGIN { exit !(a < b) }'; then
        best_wall=$wall best_cpu=$cpu
      fi
      [ "$rss" -gt "$max_rss" ] && max_rss=$rss
    done
    # `check` does not log; `meridian run` logs what the build signed
    # ("signed the zone ... rrsets=N elapsed_ms=T"). Started on a free
    # port, ended by its PID once the line is there (at most 120 s).
    if [ -n "$variant" ]; then
      nice "$BIN" run --config "$dir/meridian.toml" --listen 127.0.0.1:0 2>"$dir/run.err" &
      pid=$!
      for _ in $(seq 1200); do
        grep -qs 'signed the zone' "$dir/run.err" && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
      line=$(grep -o 'signed the zone.*' "$dir/run.err" | tail -1 || true)
      if [ -n "$line" ]; then
        rrsets=$(sed -n 's/.*rrsets=\([0-9]*\).*/\1/p' <<<"$line")
        signing="$(sed -n 's/.*elapsed_ms=\([0-9]*\).*/\1/p' <<<"$line") ms"
      fi
    fi
    case $variant in
      "") label="unsigned" ;;
      -ecdsap256sha256) label="CSK alg 13" ;;
      -ed25519) label="CSK alg 15" ;;
    esac
    printf '| %s | %s | %s s | %s s | %s MiB | %s | %s |\n' "$case" "$label" "$best_wall" \
      "$best_cpu" "$((max_rss / 1024))" "$rrsets" "$signing" >>"$table"
  done
done
echo "dnssec_build.sh: $(date -Is), $(nproc) CPUs, $RUNS runs each, $BIN"
cat "$table"
