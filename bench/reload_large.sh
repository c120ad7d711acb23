#!/usr/bin/env bash
# Reloads of a large config under load: the query path must not stall while
# a reload rebuilds (and signs) thousands of services. bench/reload.sh checks
# answers across reloads of the small example; this one measures latency
# and loss while a 10,000-service config is rebuilt.
#
#   1. gen_load.py: S geo services over 50 datacenters (5 each), no static
#      names; with --sign, every zone signed with one CSK (bench_config.py);
#   2. `meridian run` (one UDP thread per CPU), waited for;
#   3. dnsperf at --qps for --seconds over random service names (A 80 %,
#      AAAA 20 %), on CLIENT_CPU, 200 outstanding, 1 s timeout;
#   4. SIGHUP at 4 s, and again --every seconds after each reload the
#      server logs as done (each a full rebuild);
#   5. prints queries lost, average and max latency, and the reloads the
#      server logged; exit status 1 if a query was lost.
#
# Usage: bench/reload_large.sh [--services N] [--qps N] [--seconds N]
#                              [--every N] [--sign ALGORITHM|none]
#   defaults: 10000 services, 20000 qps, 30 s, every 2 s, ecdsap256sha256
# Environment: MERIDIAN_BIN [<repo>/target/release/meridian], SKIP_BUILD,
#   CLIENT_CPU [0], PORT [5396].
# Everything on 127.0.0.1; the server is stopped by its PID on every exit.
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
OUT="$BENCH/out/reload_large"
SERVICES=10000 QPS=20000 SECS=30 EVERY=2 SIGN=ecdsap256sha256
while [ $# -gt 0 ]; do
  case $1 in
    --services) SERVICES=${2:?}; shift 2 ;;
    --qps) QPS=${2:?}; shift 2 ;;
    --seconds) SECS=${2:?}; shift 2 ;;
    --every) EVERY=${2:?}; shift 2 ;;
    --sign) SIGN=${2:?}; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "reload_large.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done
for v in "$SERVICES" "$QPS" "$SECS" "$EVERY"; do
  [[ $v =~ ^[1-9][0-9]*$ ]] || { echo "reload_large.sh: numbers must be positive integers" >&2; exit 2; }
done
[ "$SECS" -le 600 ] || { echo "reload_large.sh: --seconds is at most 600" >&2; exit 2; }
BIN=${MERIDIAN_BIN:-$ROOT/target/release/meridian}
CLIENT_CPU=${CLIENT_CPU:-0}
PORT=${PORT:-5396}
command -v dnsperf >/dev/null || { echo "reload_large.sh: dnsperf is required" >&2; exit 1; }
if [ -z "${SKIP_BUILD:-}" ]; then
  (cd "$ROOT" && cargo build --release --quiet)
fi

rm -rf "$OUT"
mkdir -p "$OUT"
python3 "$BENCH/gen_load.py" "$OUT/gen" --names 0 --services "$SERVICES" --datacenters 50 \
  --subset 5 --geoip "$ROOT/geoip/dbip-country.mmdb" >/dev/null
CONFIG="$OUT/gen/meridian.toml"
if [ "$SIGN" != none ]; then
  python3 "$BENCH/bench_config.py" --no-admin --sign "$SIGN" --meridian "$BIN" \
    "$OUT/gen/meridian.toml" "$OUT/signed" >/dev/null
  CONFIG="$OUT/signed/meridian.toml"
fi
python3 - "$OUT/queries.txt" "$SERVICES" <<'EOF'
import random, sys
r = random.Random(20261126)
with open(sys.argv[1], "w") as f:
    for _ in range(20000):
        f.write("s%d.load.example %s\n" % (r.randrange(int(sys.argv[2])), "A" if r.random() < 0.8 else "AAAA"))
EOF

"$BIN" run --config "$CONFIG" --listen "127.0.0.1:$PORT" >"$OUT/server.log" 2>&1 &
PID=$!
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true' EXIT
for _ in $(seq 600); do   # a signed 10,000-service build takes ~7 s on 2 cores
  dig +short +time=1 +tries=1 -p "$PORT" @127.0.0.1 load.example SOA >/dev/null 2>&1 && break
  kill -0 "$PID" 2>/dev/null || { tail -n 20 "$OUT/server.log" >&2; exit 1; }
  sleep 0.2
done
done_reloads() { grep -cE 'configuration reloaded|reload failed' "$OUT/server.log" || true; }
(
  sleep 4
  while kill -HUP "$PID" 2>/dev/null; do
    n=$(done_reloads)
    for _ in $(seq 1200); do [ "$(done_reloads)" -gt "$n" ] && break; sleep 0.1; done
    sleep "$EVERY"
  done
) &
HUPPER=$!
taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$PORT" -d "$OUT/queries.txt" -l "$SECS" \
  -Q "$QPS" -c 4 -q 200 -t 1 >"$OUT/dnsperf.txt" 2>&1 || true
kill "$HUPPER" 2>/dev/null || true
wait "$HUPPER" 2>/dev/null || true
lost=$(sed -n 's/^ *Queries lost: *\([0-9]*\).*/\1/p' "$OUT/dnsperf.txt")
echo "reload_large.sh: $SERVICES services, signing: $SIGN, $QPS qps for $SECS s, SIGHUP at 4 s then $EVERY s after each reload"
grep -E "Queries (sent|completed|lost)|Average Latency" "$OUT/dnsperf.txt"
echo "  reloads done:         $(grep -c 'configuration reloaded' "$OUT/server.log" || true) ($(grep -o 'configuration reloaded.*elapsed_ms=[0-9]*' "$OUT/server.log" | sed 's/.*elapsed_ms=//' | paste -sd, -) ms)"
[ "${lost:-1}" = 0 ]
