#!/usr/bin/env bash
# Meridian load benchmark (issue 9): loads the issue's configs at any size with
# Meridian and NSD side by side, and prints a Markdown table of time and peak RSS
# with ratios. See bench/README.md, "Load benchmark".
#
# Usage: bench/load.sh [--sizes N,N,...] [--quick] [--reload] [--qps] [--no-services]
#   --sizes LIST   RR counts to load (default 10000,100000,1000000); names = RRs / 2,
#                  each with one A and one TXT record
#   --quick        sizes 10000,100000, services capped at 60 s, no reload or qps
#   --reload       also: SIGHUP reload (twice) of the largest size under dnsperf
#   --qps          also: Meridian CPU per query at the largest size vs 2,000 RRs
#   --no-services  skip the three services configs
#
# Default = load + serving RSS + services (about 6-8 minutes on 2 cores today).
# Steps, each bounded (a deadline and an RSS cap per process; killed by PID past either):
#   1. load:     meridian check --config DIR/meridian.toml  vs
#                nsd-checkzone load.example. DIR/load.example.zone   (wall time, peak RSS)
#   2. serving:  meridian run and nsd -d on free loopback ports; RSS once each answers
#                (NSD: PSS summed over its processes, and its largest RSS)
#   3. services: meridian check on --services 10000 --datacenters 50 --subset 5,
#                --names 100000 --services 10000 --datacenters 2, and
#                --services 50 --datacenters 12 --subset 4
#   4. --reload: dnsperf at RELOAD_QPS on names.txt, two SIGHUPs 3 s apart, RSS every
#                50 ms, lost queries, SIGHUP -> "configuration reloaded" in the log
#   5. --qps:    server on SERVER_CPUS, dnsperf on CLIENT_CPU, alternating rounds
#
# Environment knobs (defaults in brackets):
#   TIMEOUT [240]        deadline per process in steps 1, 2, 4 and 5, s
#   SVC_TIMEOUT [120]    deadline per services check (60 with --quick), s
#   RSS_CAP_MB [6144]    RSS cap per process tree, MiB
#   RELOAD_RSS_CAP_MB [12288]  RSS cap for the reload step (today a reload at 1M RRs
#                        peaks near 7 GiB: old and new configuration side by side)
#   RELOAD_QPS [20000]   dnsperf -Q during the reload
#   QPS_RATE [0]         dnsperf -Q for --qps (0 = as fast as dnsperf goes)
#   QPS_SECONDS [8] QPS_ROUNDS [4]   length and count of the --qps rounds
#   SERVER_CPUS [1] CLIENT_CPU [0]   CPUs for --qps (taskset -c syntax)
#   MERIDIAN_BIN [<repo>/target/release/meridian]   SKIP_BUILD [unset]: 1 = no cargo build
#
# Output: the table on stdout and in bench/out/load.md; configs in bench/out/load/<case>/
# (reused while gen_load.py and its arguments are unchanged); results, logs and the
# table of each run in bench/out/load-runs/<timestamp>/. bench/out/ is git-ignored.
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
OUT="$BENCH/out"

SIZES=10000,100000,1000000
QUICK=""
RELOAD=""
QPS=""
SERVICES=1
while [ $# -gt 0 ]; do
  case $1 in
    --sizes) SIZES=${2:?--sizes needs a value}; shift 2 ;;
    --sizes=*) SIZES=${1#*=}; shift ;;
    --quick) QUICK=1; SIZES=10000,100000; shift ;;
    --reload) RELOAD=1; shift ;;
    --qps) QPS=1; shift ;;
    --no-services) SERVICES=""; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "load.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done
if [ -n "$QUICK" ]; then RELOAD=""; QPS=""; fi

TIMEOUT=${TIMEOUT:-240}
SVC_TIMEOUT=${SVC_TIMEOUT:-$([ -n "$QUICK" ] && echo 60 || echo 120)}
RSS_CAP_MB=${RSS_CAP_MB:-6144}
RELOAD_RSS_CAP_MB=${RELOAD_RSS_CAP_MB:-12288}
RELOAD_QPS=${RELOAD_QPS:-20000}
QPS_RATE=${QPS_RATE:-0}
QPS_SECONDS=${QPS_SECONDS:-8}
QPS_ROUNDS=${QPS_ROUNDS:-4}
SERVER_CPUS=${SERVER_CPUS:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
MERIDIAN_BIN=${MERIDIAN_BIN:-$ROOT/target/release/meridian}

die() { echo "load.sh: error: $*" >&2; exit 1; }
log() { printf '\n== %s\n' "$*"; }

# ---- checks -------------------------------------------------------------------------
num() { [[ "$1" =~ ^[0-9]+$ ]]; }
IFS=, read -r -a SIZE_LIST <<< "$SIZES"
[ ${#SIZE_LIST[@]} -gt 0 ] || die "--sizes is empty"
for s in "${SIZE_LIST[@]}"; do
  num "$s" && [ "$s" -ge 2 ] && [ "$s" -le 20000000 ] && [ $((s % 2)) -eq 0 ] \
    || die "--sizes: '$s' is not an even RR count from 2 to 20,000,000"
done
for v in TIMEOUT SVC_TIMEOUT RSS_CAP_MB RELOAD_RSS_CAP_MB RELOAD_QPS QPS_RATE QPS_SECONDS QPS_ROUNDS; do
  num "${!v}" || die "$v must be a whole number"
done
[ "$TIMEOUT" -ge 1 ] && [ "$TIMEOUT" -le 1800 ] || die "TIMEOUT must be 1..1800"
[ "$SVC_TIMEOUT" -ge 1 ] && [ "$SVC_TIMEOUT" -le 1800 ] || die "SVC_TIMEOUT must be 1..1800"
[ "$QPS_SECONDS" -ge 1 ] && [ "$QPS_SECONDS" -le 120 ] || die "QPS_SECONDS must be 1..120"
[ "$QPS_ROUNDS" -ge 1 ] && [ "$QPS_ROUNDS" -le 20 ] || die "QPS_ROUNDS must be 1..20"
[ "$RELOAD_QPS" -ge 1 ] && [ "$RELOAD_QPS" -le 500000 ] || die "RELOAD_QPS must be 1..500000"
command -v python3 >/dev/null || die "python3 not found"
[ -x /usr/bin/time ] || die "/usr/bin/time not found (apt-get install time)"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))' || die "python3 >= 3.9 needed"
if [ -n "$RELOAD$QPS" ]; then command -v dnsperf >/dev/null || die "dnsperf not found (apt-get install dnsperf)"; fi
if [ -n "$QPS" ]; then
  command -v taskset >/dev/null || die "taskset not found (apt-get install util-linux)"
  [ "$(nproc)" -ge 2 ] || echo "load.sh: warning: one CPU: server and dnsperf share it" >&2
fi
[ -n "${SKIP_BUILD:-}" ] || command -v cargo >/dev/null || die "cargo not found (or SKIP_BUILD=1 with a built $MERIDIAN_BIN)"

T_START=$(date +%s)
STAMP=$(date +%Y%m%d-%H%M%S)
RUN="$OUT/load-runs/$STAMP"
mkdir -p "$RUN/logs" "$OUT/load"
RESULTS="$RUN/results.jsonl"
: > "$RESULTS"
exec > >(tee "$RUN/run.log") 2>&1
echo "load.sh: $(date -Is) sizes $SIZES${SERVICES:+, services}${RELOAD:+, reload}${QPS:+, qps}; results in $RUN"

# ---- nsd: install if missing, without letting the package start a system nsd ----------
MADE_POLICY=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$MADE_POLICY" ]; then rm -f /usr/sbin/policy-rc.d; echo "load.sh: removed temporary /usr/sbin/policy-rc.d"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if ! command -v nsd >/dev/null || ! command -v nsd-checkzone >/dev/null; then
  log "installing nsd (apt)"
  [ "$(id -u)" -eq 0 ] || die "nsd is missing and installing it needs root"
  if [ ! -e /usr/sbin/policy-rc.d ]; then   # keep Debian from starting nsd on port 53
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; MADE_POLICY=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nsd
  if [ -n "$MADE_POLICY" ]; then rm -f /usr/sbin/policy-rc.d; MADE_POLICY=""; fi
fi

# ---- build ----------------------------------------------------------------------------
if [ -z "${SKIP_BUILD:-}" ]; then
  log "cargo build --release ($ROOT)"
  (cd "$ROOT" && nice cargo build --release)
fi
[ -x "$MERIDIAN_BIN" ] || die "no Meridian binary at $MERIDIAN_BIN"
NSD_VERSION=$(nsd -v 2>&1 | sed -n 1p)
MERIDIAN_VERSION=$("$MERIDIAN_BIN" --version 2>&1 | sed -n 1p)
COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
DIRTY=$(GIT_OPTIONAL_LOCKS=0 git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | wc -l)
CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | sed -n 1p)
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)

# gen CASE ARGS...: bench/out/load/CASE from gen_load.py, reused while nothing changed.
gen() {
  local case=$1 dir="$OUT/load/$1"; shift
  local want="$*"
  if [ -s "$dir/.args" ] && [ "$(cat "$dir/.args")" = "$want" ] && [ "$dir/.args" -nt "$BENCH/gen_load.py" ]; then
    return 0
  fi
  echo "load.sh: generating $case: gen_load.py $want"
  rm -rf "$dir"
  python3 "$BENCH/gen_load.py" "$dir" "$@" --geoip "$ROOT/geoip/dbip-country.mmdb"
  echo "$want" > "$dir/.args"
}

LOADPY="$BENCH/load.py"
CAPS=(--results "$RESULTS" --rss-cap-mb "$RSS_CAP_MB")

# ---- 1. load --------------------------------------------------------------------------
log "1. load: meridian check vs nsd-checkzone"
for s in "${SIZE_LIST[@]}"; do
  gen "rr$s" --names $((s / 2))
  D="$OUT/load/rr$s"
  nice python3 "$LOADPY" check "${CAPS[@]}" --timeout "$TIMEOUT" --case "rr$s" --tool meridian --rrs "$s" \
    --log "$RUN/logs/check-meridian-rr$s.log" -- "$MERIDIAN_BIN" check --config "$D/meridian.toml"
  nice python3 "$LOADPY" check "${CAPS[@]}" --timeout "$TIMEOUT" --case "rr$s" --tool meridian-zf --rrs "$s" \
    --log "$RUN/logs/check-meridian-zf-rr$s.log" -- "$MERIDIAN_BIN" check --config "$D/zonefile/meridian.toml"
  nice python3 "$LOADPY" check "${CAPS[@]}" --timeout "$TIMEOUT" --case "rr$s" --tool nsd-checkzone --rrs "$s" \
    --log "$RUN/logs/check-nsd-rr$s.log" -- nsd-checkzone load.example. "$D/load.example.zone"
done

# ---- 2. serving RSS -------------------------------------------------------------------
log "2. serving RSS: meridian run vs nsd -d"
for s in "${SIZE_LIST[@]}"; do
  for srv in meridian nsd; do
    nice python3 "$LOADPY" serve "${CAPS[@]}" --timeout "$TIMEOUT" --bin "$MERIDIAN_BIN" --server "$srv" \
      --dir "$OUT/load/rr$s" --case "rr$s" --rrs "$s" --log "$RUN/logs/serve-$srv-rr$s.log"
  done
done

# ---- 3. services ----------------------------------------------------------------------
if [ -n "$SERVICES" ]; then
  log "3. services: meridian check (deadline $SVC_TIMEOUT s each)"
  i=0
  for args in "--names 0 --services 10000 --datacenters 50 --subset 5" \
              "--names 100000 --services 10000 --datacenters 2" \
              "--names 0 --services 50 --datacenters 12 --subset 4"; do
    i=$((i + 1))
    read -r -a A <<< "$args"
    gen "svc$i" "${A[@]}"
    nice python3 "$LOADPY" check "${CAPS[@]}" --timeout "$SVC_TIMEOUT" --case "svc:$args" --tool meridian \
      --log "$RUN/logs/check-meridian-svc$i.log" -- "$MERIDIAN_BIN" check --config "$OUT/load/svc$i/meridian.toml"
  done
fi

BIG=${SIZE_LIST[0]}
for s in "${SIZE_LIST[@]}"; do [ "$s" -gt "$BIG" ] && BIG=$s; done

# ---- 4. reload under load -------------------------------------------------------------
if [ -n "$RELOAD" ]; then
  log "4. reload: $BIG RRs under dnsperf -Q $RELOAD_QPS, two SIGHUPs"
  python3 "$LOADPY" reload --results "$RESULTS" --rss-cap-mb "$RELOAD_RSS_CAP_MB" --timeout "$TIMEOUT" --reload-timeout "$TIMEOUT" --bin "$MERIDIAN_BIN" \
    --dir "$OUT/load/rr$BIG" --case "rr$BIG" --rrs "$BIG" --qps "$RELOAD_QPS" --log "$RUN/logs/reload-rr$BIG.log"
fi

# ---- 5. query CPU at size -------------------------------------------------------------
if [ -n "$QPS" ]; then
  log "5. query CPU: $BIG RRs vs 2,000 RRs"
  gen rr2000 --names 1000
  python3 "$LOADPY" qps "${CAPS[@]}" --timeout "$TIMEOUT" --bin "$MERIDIAN_BIN" --log "$RUN/logs/qps" \
    --small "$OUT/load/rr2000" --small-rrs 2000 --big "$OUT/load/rr$BIG" --big-rrs "$BIG" \
    --qps "$QPS_RATE" --seconds "$QPS_SECONDS" --rounds "$QPS_ROUNDS" \
    --server-cpus "$SERVER_CPUS" --client-cpu "$CLIENT_CPU"
fi

# ---- report ---------------------------------------------------------------------------
ELAPSED=$(( $(date +%s) - T_START ))
log "results ($ELAPSED s)"
python3 "$LOADPY" report --results "$RESULTS" --md "$RUN/load.md" --server-cpus "$SERVER_CPUS" --client-cpu "$CLIENT_CPU" \
  --header "$(date -Is), commit $COMMIT ($DIRTY modified files), $MERIDIAN_VERSION, $NSD_VERSION" \
  --header "$(nproc) CPUs ($CPU_MODEL), load average at start $LOADAVG" \
  --header "bench/load.sh $([ -n "$QUICK" ] && echo "--quick ")--sizes $SIZES${RELOAD:+ --reload}${QPS:+ --qps}$([ -n "$SERVICES" ] || echo " --no-services"): $ELAPSED s in total"
cp "$RUN/load.md" "$OUT/load.md"
echo
echo "load.sh: table in $OUT/load.md; results and logs in $RUN"
