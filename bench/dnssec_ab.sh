#!/usr/bin/env bash
# CPU per query of signed DO=1 answers against unsigned DO=1 answers and the
# null-echo floor (issue 13, "Performance": signed within 5 % of unsigned,
# and within 10 % of the floor), measured interleaved with ab.py: the three
# servers run side by side on the server CPU and get short dnsperf bursts in
# turn, so that the machine's drift between runs does not land in the ratios.
#
#   unsigned   the shipped meridian.toml and zones (bench_config.py --rrl $RRL)
#   signed     the same, the zone signed with one CSK of $ALGORITHM
#   null-echo  bench/null_echo.c
#
# Every query carries DO=1 (out/queries-do/, as run.sh --do makes them), for
# each file of FILES, at saturation and at FIXED_QPS.
#
# Usage: bench/dnssec_ab.sh [--rounds N] [--seconds S]   (defaults 10 and 2: ~8 min)
# Environment: FILES ["mixed static geo"], FIXED_QPS [50000], RRL [high],
#   ALGORITHM [ecdsap256sha256], MERIDIAN_BIN [<repo>/target/release/meridian],
#   SKIP_BUILD [unset]: 1 = no cargo build, SERVER_CPUS [1], CLIENT_CPU [0],
#   PORT_BASE [5350].
# Output: the tables on stdout and in bench/out/dnssec_ab.md, one JSON line
# per burst in bench/out/dnssec_ab/bursts.jsonl (bench/out/ is git-ignored).
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
OUT="$BENCH/out"
DIR="$OUT/dnssec_ab"
ROUNDS=10
SECS=2
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) ROUNDS=${2:?--rounds needs a value}; shift 2 ;;
    --seconds) SECS=${2:?--seconds needs a value}; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "dnssec_ab.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done
FILES=${FILES:-mixed static geo}
FIXED_QPS=${FIXED_QPS:-50000}
RRL=${RRL:-high}
ALGORITHM=${ALGORITHM:-ecdsap256sha256}
BIN=${MERIDIAN_BIN:-$ROOT/target/release/meridian}
PORT_BASE=${PORT_BASE:-5350}
[[ $FIXED_QPS =~ ^[1-9][0-9]*$ ]] || { echo "dnssec_ab.sh: FIXED_QPS must be a positive integer" >&2; exit 2; }
case "$ROOT$BIN" in
  *" "*) echo "dnssec_ab.sh: paths with spaces are not supported (ab.py splits commands on spaces)" >&2; exit 2 ;;
esac

if [ -z "${SKIP_BUILD:-}" ]; then
  (cd "$ROOT" && cargo build --release --quiet)
fi
[ -x "$BIN" ] || { echo "dnssec_ab.sh: no Meridian binary at $BIN" >&2; exit 1; }
for tool in dnsperf taskset cc; do
  command -v "$tool" >/dev/null || { echo "dnssec_ab.sh: $tool missing (see bench/README.md)" >&2; exit 1; }
done

# Inputs: the query files (as run.sh makes them), their DO=1 copies, the floor.
mkdir -p "$OUT/queries" "$OUT/queries-do"
if [ ! -s "$OUT/queries/mixed.bin" ] || [ "$BENCH/gen_queries.py" -nt "$OUT/queries/mixed.bin" ]; then
  python3 "$BENCH/gen_queries.py" --out "$OUT/queries"
fi
queries=()
for f in $FILES; do
  [ -s "$OUT/queries/$f.bin" ] || { echo "dnssec_ab.sh: no query file $OUT/queries/$f.bin" >&2; exit 1; }
  python3 "$BENCH/measure.py" setdo "$OUT/queries/$f.bin" "$OUT/queries-do/$f.bin"
  queries+=("$OUT/queries-do/$f.bin")
done
if [ ! -x "$OUT/null_echo" ] || [ "$BENCH/null_echo.c" -nt "$OUT/null_echo" ]; then
  cc -O2 -Wall -o "$OUT/null_echo" "$BENCH/null_echo.c"
fi

# Configs: admin off, so that the two copies can run side by side.
rm -rf "$DIR"
python3 "$BENCH/bench_config.py" --rrl "$RRL" --no-admin "$ROOT/meridian.toml" "$DIR/unsigned"
python3 "$BENCH/bench_config.py" --rrl "$RRL" --no-admin --sign "$ALGORITHM" --meridian "$BIN" \
  "$ROOT/meridian.toml" "$DIR/signed"
for v in unsigned signed; do
  "$BIN" check --config "$DIR/$v/meridian.toml" >/dev/null
done

table="$OUT/dnssec_ab.md"
{
  echo "# dnssec_ab.sh: $(date -Is), $("$BIN" --version | head -n 1)," \
    "commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown), $(nproc) CPUs"
  echo
  echo "DO=1 on every query; signed: one CSK, $ALGORITHM; RRL $RRL."
} >"$table"
for qps in 0 "$FIXED_QPS"; do
  python3 "$BENCH/ab.py" --rounds "$ROUNDS" --seconds "$SECS" --qps "$qps" --port-base "$PORT_BASE" \
    --logs "$DIR/logs" --out "$DIR/bursts.jsonl" --md "$table" \
    --server "unsigned=$BIN run --config $DIR/unsigned/meridian.toml --listen 127.0.0.1:@PORT@" \
    --server "signed=$BIN run --config $DIR/signed/meridian.toml --listen 127.0.0.1:@PORT@" \
    --server "null-echo=$OUT/null_echo @PORT@" \
    --ratio signed/unsigned --ratio signed/null-echo --ratio unsigned/null-echo \
    "${queries[@]}"
done
echo "dnssec_ab.sh: tables in $table"
