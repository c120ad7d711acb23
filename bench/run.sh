#!/usr/bin/env bash
# Meridian benchmark harness: loopback UDP load with dnsperf, server and load
# generator pinned to separate CPUs, server CPU read from /proc. See bench/README.md.
#
# Usage: bench/run.sh [--seconds N] [--peers] [--quick] [--do]
#   --seconds N  length of each measurement (default 12; dnsperf -l, always bounded)
#   --quick      3 s measurements, 1 s warm-up: a smoke test
#   --peers      also install (apt) and measure gdnsd, Knot and NSD
#   --do         every query carries the DNSSEC OK bit (DO=1), as validating resolvers
#                send it: signed zones answer with their RRSIGs. dnsperf's -D cannot be
#                combined with the -B query files, so the DO bit is set in copies of
#                them (out/queries-do/; a query without EDNS gets an OPT record)
#
# Environment knobs (defaults in brackets):
#   SERVER_CPUS [1]       CPU list for the server under test (taskset -c syntax)
#   CLIENT_CPU [0]        CPU for dnsperf
#   MERIDIAN_BIN [<repo>/target/release/meridian]
#   MERIDIAN_ARGS [run --config <repo>/meridian.toml --listen 127.0.0.1:@PORT@]
#                         Meridian's arguments; @PORT@ is replaced by the bench port.
#                         With the bench zone, the default config is a copy in the run
#                         directory (bench_config.py) that also serves bench/zones/*.toml.
#   PORT_BASE [5340]      meridian PORT_BASE, null-echo +1, gdnsd +2, knot +3, nsd +4
#   FIXED_QPS [50000]     the fixed offered rate
#   FILES ["mixed static geo"]   query files for Meridian and the null-echo floor; also
#                         weighted sticky chain multi geo2 latency (bench-only zone), e.g.
#                         FILES="geo weighted sticky chain multi static"
#   BENCH_ZONES [auto]    auto | 1 | 0: serve bench/zones/*.toml beside the shipped zones
#                         (auto: only when FILES names one of their query files)
#   RRL [high]            high | off | shipped: response rate limiting in the config copy.
#                         high = on, every limit 1,000,000/s (never hit: measures its cost);
#                         off = disabled; shipped = meridian.toml's own limits, which one
#                         load generator on 127.0.0.1 exceeds at once (most queries dropped)
#   PEER_FILES ["mixed static"]  query files for the peers
#   CLIENTS [4] OUTSTANDING [100]  dnsperf -c / -q
#   IDLE_WAIT [20]        before each run, wait up to N s for the machine to be idle
#   RETRIES [1]           re-runs of a run disturbed by other processes
#   BUDGET [420]          after this many seconds, stop waiting/retrying (bounds the total)
#   SKIP_BUILD [unset]    1 = do not run cargo build
#   GDNSD_WWW [static]    static | geoip (DYNA geoip with the shipped mmdb, see README)
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
OUT="$BENCH/out"
QDIR="$OUT/queries"

SECS=12
WARM=2
PEERS=""
DO=""
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) SECS=${2:?--seconds needs a value}; shift 2 ;;
    --seconds=*) SECS=${1#*=}; shift ;;
    --quick) SECS=3; WARM=1; shift ;;
    --peers) PEERS=1; shift ;;
    --do) DO=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done

DO_SHOW=off; [ -z "$DO" ] || DO_SHOW="on (--do)"
SERVER_CPUS=${SERVER_CPUS:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
MERIDIAN_BIN=${MERIDIAN_BIN:-$ROOT/target/release/meridian}
PORT_BASE=${PORT_BASE:-5340}
FIXED_QPS=${FIXED_QPS:-50000}
FILES=${FILES:-mixed static geo}
PEER_FILES=${PEER_FILES:-mixed static}
BENCH_ZONES=${BENCH_ZONES:-auto}
RRL=${RRL:-high}
POLICY_FILES="weighted sticky chain multi geo2 latency"   # they query bench/zones/policies.bench.toml
CLIENTS=${CLIENTS:-4}
OUTSTANDING=${OUTSTANDING:-100}
IDLE_WAIT=${IDLE_WAIT:-20}
RETRIES=${RETRIES:-1}
BUDGET=${BUDGET:-420}
GDNSD_WWW=${GDNSD_WWW:-static}

die() { echo "run.sh: error: $*" >&2; exit 1; }
log() { printf '\n== %s\n' "$*"; }

# ---- checks -------------------------------------------------------------------------
[[ "$SECS" =~ ^[0-9]+$ ]] && [ "$SECS" -ge 1 ] && [ "$SECS" -le 300 ] || die "--seconds must be 1..300"
in_list() { local x; for x in $2; do [ "$x" = "$1" ] && return 0; done; return 1; }
case $BENCH_ZONES in auto|0|1) ;; *) die "BENCH_ZONES must be auto, 0 or 1" ;; esac
case $RRL in high|off|shipped) ;; *) die "RRL must be high, off or shipped" ;; esac
NEED_ZONES=""
for f in $FILES; do in_list "$f" "$POLICY_FILES" && NEED_ZONES=1; done
for f in $PEER_FILES; do
  in_list "$f" "$POLICY_FILES" && die "PEER_FILES: $f queries the bench-only zone, which the peers do not serve"
done
[ "$BENCH_ZONES" = auto ] && BENCH_ZONES=${NEED_ZONES:-0}
[ -n "$NEED_ZONES" ] && [ "$BENCH_ZONES" = 0 ] && die "FILES=\"$FILES\" needs the bench zone, but BENCH_ZONES=0"
if [ -n "${MERIDIAN_ARGS:-}" ] && [ "$BENCH_ZONES" = 1 ]; then
  echo "run.sh: note: MERIDIAN_ARGS is set; its config has to serve bench/zones/*.toml itself" >&2
  BENCH_ZONES=0
fi
if [ -n "${MERIDIAN_ARGS:-}" ] && [ "$RRL" != shipped ]; then
  echo "run.sh: note: MERIDIAN_ARGS is set; RRL=$RRL is not applied (its config decides)" >&2
  RRL=shipped
fi
[[ "$PORT_BASE" =~ ^[0-9]+$ ]] && [ "$PORT_BASE" -ge 1024 ] && [ "$PORT_BASE" -le 65000 ] || die "PORT_BASE must be 1024..65000"
for c in dnsperf taskset cc dig python3 ss; do
  command -v "$c" >/dev/null || die "'$c' not found (apt-get install dnsperf util-linux gcc bind9-dnsutils python3 iproute2)"
done
[ -n "${SKIP_BUILD:-}" ] || command -v cargo >/dev/null || die "cargo not found (or set SKIP_BUILD=1 with a built $MERIDIAN_BIN)"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "python3 >= 3.11 needed (tomllib)"
NCPU=$(nproc)
cpu_ok() { python3 - "$1" "$NCPU" <<'EOF'
import sys
cpus = set()
for part in sys.argv[1].split(","):
    a, _, b = part.partition("-")
    cpus.update(range(int(a), int(b or a) + 1))
sys.exit(0 if cpus and max(cpus) < int(sys.argv[2]) else 1)
EOF
}
cpu_ok "$SERVER_CPUS" 2>/dev/null || die "SERVER_CPUS='$SERVER_CPUS' is not a valid CPU list on this $NCPU-CPU machine"
cpu_ok "$CLIENT_CPU" 2>/dev/null || die "CLIENT_CPU='$CLIENT_CPU' is not a valid CPU on this $NCPU-CPU machine"
[ "$NCPU" -ge 2 ] || echo "run.sh: warning: only $NCPU CPU: server and dnsperf share it, figures are not comparable" >&2

T_START=$(date +%s)
STAMP=$(date +%Y%m%d-%H%M%S)
RUN="$OUT/runs/$STAMP"
mkdir -p "$RUN/raw" "$RUN/logs" "$RUN/pids"
RESULTS="$RUN/results.jsonl"
: > "$RESULTS"
: > "$RUN/rss.txt"
ln -sfn "runs/$STAMP" "$OUT/latest"
exec > >(tee "$RUN/run.log") 2>&1
echo "run.sh: $(date -Is) results in $RUN"
echo "run.sh: server CPUs $SERVER_CPUS, dnsperf CPU $CLIENT_CPU, $SECS s per run, files: $FILES${PEERS:+, peers: $PEER_FILES}, bench zone: $BENCH_ZONES, rrl: $RRL, DO bit: $DO_SHOW"

# ---- process bookkeeping: we only ever signal PIDs we started ----------------------
STARTED=()           # names of servers started by this script (their PIDs are in $RUN/pids)

proc_state() { # proc_state PID -> state letter (R, S, Z, ...) or nothing if gone
  local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  s=${s##*) }; echo "${s%% *}"
}

owned() { # owned PID PROG: true while PID is alive and is still PROG (or the taskset exec'ing it)
  local comm; comm=$(cat "/proc/$1/comm" 2>/dev/null) || return 1
  [ "$comm" = taskset ] || [[ "$comm" == "${2:0:15}"* ]]
}

stop_server() { # stop_server NAME: TERM the recorded PID, KILL after 10 s, reap it
  local name=$1 pid prog st kid kcomm alive
  [ -s "$RUN/pids/$name.pid" ] || return 0
  read -r pid prog < "$RUN/pids/$name.pid"
  rm -f "$RUN/pids/$name.pid"
  if owned "$pid" "$prog"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      st=$(proc_state "$pid"); { [ -z "$st" ] || [ "$st" = Z ]; } && break; sleep 0.1
    done
    st=$(proc_state "$pid")
    if [ -n "$st" ] && [ "$st" != Z ] && owned "$pid" "$prog"; then
      echo "run.sh: $name (pid $pid) ignored SIGTERM for 10 s, sending SIGKILL"; kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
  # Descendants recorded at start (e.g. NSD's server processes): give them 5 s to exit
  # after their parent, then SIGKILL those still alive (matched by PID and comm).
  if [ -s "$RUN/pids/$name.tree" ]; then
    for _ in $(seq 1 50); do
      alive=""
      while read -r kid kcomm; do
        [ "$kid" != "$pid" ] && [ "$(cat "/proc/$kid/comm" 2>/dev/null)" = "$kcomm" ] && alive=1
      done < "$RUN/pids/$name.tree"
      [ -z "$alive" ] && break
      sleep 0.1
    done
    while read -r kid kcomm; do
      [ "$kid" = "$pid" ] && continue
      if [ "$(cat "/proc/$kid/comm" 2>/dev/null)" = "$kcomm" ]; then
        echo "run.sh: $name child pid $kid ($kcomm) still alive, sending SIGKILL"; kill -KILL "$kid" 2>/dev/null || true
      fi
    done < "$RUN/pids/$name.tree"
    rm -f "$RUN/pids/$name.tree"
  fi
  echo "run.sh: stopped $name (pid $pid)"
}

MADE_POLICY=""
cleanup() {
  local rc=$? n
  trap - EXIT INT TERM
  for n in "${STARTED[@]}"; do stop_server "$n"; done
  if [ -n "$MADE_POLICY" ]; then rm -f /usr/sbin/policy-rc.d; echo "run.sh: removed temporary /usr/sbin/policy-rc.d"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

set_do() { # set_do IN OUT: a copy of a query file with DO=1 in every query (measure.py setdo)
  python3 "$BENCH/measure.py" setdo "$1" "$2"
}

port_busy() { ss -Hlun "sport = :$1" 2>/dev/null | grep -q .; }

ready() { # ready PORT KIND: KIND=soa -> a SOA answer for the zone; KIND=any -> any reply
  if [ "$2" = soa ]; then
    dig +norec +time=1 +tries=1 +short -p "$1" @127.0.0.1 gslb.example.com SOA 2>/dev/null | grep -q hostmaster
  else
    dig +norec +time=1 +tries=1 -p "$1" @127.0.0.1 gslb.example.com SOA >/dev/null 2>&1
  fi
}

start_server() { # start_server NAME PORT KIND CMD...: start pinned, wait until ready, re-pin threads
  local name=$1 port=$2 kind=$3 pid i
  shift 3
  port_busy "$port" && die "UDP port $port is already in use; set PORT_BASE to a free range"
  echo "run.sh: starting $name on 127.0.0.1:$port: taskset -c $SERVER_CPUS $*"
  taskset -c "$SERVER_CPUS" "$@" > "$RUN/logs/$name.log" 2>&1 < /dev/null &
  pid=$!
  STARTED+=("$name")
  # PID and program name: stop_server signals the PID only while its comm still matches.
  echo "$pid $(basename "$1")" > "$RUN/pids/$name.pid"
  for i in $(seq 1 150); do          # up to ~30 s (Meridian builds its geo tables at start)
    ready "$port" "$kind" && break
    st=$(proc_state "$pid")
    if [ -z "$st" ] || [ "$st" = Z ]; then
      tail -n 20 "$RUN/logs/$name.log" >&2; die "$name exited during start-up, log: $RUN/logs/$name.log"
    fi
    [ "$i" -eq 150 ] && { tail -n 20 "$RUN/logs/$name.log" >&2; die "$name not answering on port $port after 30 s"; }
    sleep 0.2
  done
  # Re-pin every thread of the server tree: Knot pins its UDP workers itself.
  local cpus; cpus=$(python3 "$BENCH/measure.py" pin --pid "$pid" --cpus "$SERVER_CPUS")
  python3 "$BENCH/measure.py" tree --pid "$pid" > "$RUN/pids/$name.tree"
  SERVER_PID=$pid
  echo "run.sh: $name ready: pid $pid, $(wc -l < "$RUN/pids/$name.tree") process(es), threads allowed on CPU $cpus"
}

measure() { # measure NAME PORT FILE MODE [extra measure.py args]
  local name=$1 port=$2 file=$3 mode=$4 idle=$IDLE_WAIT retries=$RETRIES
  shift 4
  if [ $(( $(date +%s) - T_START )) -gt "$BUDGET" ]; then idle=0; retries=0; fi
  python3 "$BENCH/measure.py" run --name "$name" --mode "$mode" --pid "$SERVER_PID" --port "$port" \
    --queries "$MQDIR/$file.bin" --seconds "$SECS" --clients "$CLIENTS" --outstanding "$OUTSTANDING" \
    --client-cpu "$CLIENT_CPU" --idle-wait "$idle" --retries "$retries" \
    --raw "$RUN/raw/$name-$file-$mode.txt" --out "$RESULTS" "$@"
}

bench_server() { # bench_server NAME PORT KIND "FILES" CMD...
  local name=$1 port=$2 kind=$3 files=$4 f sat
  shift 4
  log "$name"
  start_server "$name" "$port" "$kind" "$@"
  # mixed.bin for every server; for Meridian also the geo and bench-zone files in FILES
  local vfiles=mixed
  if [ "$name" = meridian ]; then
    for f in $files; do in_list "$f" "geo $POLICY_FILES" && vfiles="$vfiles,$f"; done
  fi
  python3 "$BENCH/gen_queries.py" --verify "127.0.0.1:$port" --sample 1000 --verify-files "$vfiles" \
    | tee "$RUN/logs/verify-$name.txt"
  # Warm-up (not recorded): caches, page faults, CPU frequency.
  python3 "$BENCH/measure.py" run --name "$name" --mode warmup --pid "$SERVER_PID" --port "$port" \
    --queries "$MQDIR/${files%% *}.bin" --seconds "$WARM" --client-cpu "$CLIENT_CPU" --retries 0 \
    --raw "$RUN/raw/$name-warmup.txt" --out "$RUN/warmup.jsonl" > /dev/null
  for f in $files; do
    measure "$name" "$port" "$f" sat
    measure "$name" "$port" "$f" 50k --qps "$FIXED_QPS" --latency
  done
  if [ "$name" = meridian ]; then   # load points relative to Meridian's own saturation
    f=${files%% *}
    sat=$(python3 "$BENCH/measure.py" get --results "$RESULTS" --server meridian --file "$f" --mode sat --key qps)
    measure "$name" "$port" "$f" half --qps $((sat / 2)) --latency
    measure "$name" "$port" "$f" 80pct --qps $((sat * 8 / 10))
  fi
  echo "$name $(python3 "$BENCH/measure.py" rss --pid "$SERVER_PID")" >> "$RUN/rss.txt"
  stop_server "$name"
}

# ---- build and inputs -----------------------------------------------------------------
if [ -z "${SKIP_BUILD:-}" ]; then
  log "cargo build --release ($ROOT)"
  (cd "$ROOT" && cargo build --release)
fi
[ -x "$MERIDIAN_BIN" ] || die "no Meridian binary at $MERIDIAN_BIN"
regen=""
for f in mixed $FILES $PEER_FILES; do [ -s "$QDIR/$f.bin" ] || regen=1; done
if [ -n "$regen" ] || [ "$BENCH/gen_queries.py" -nt "$QDIR/mixed.bin" ]; then
  log "generating query files"
  python3 "$BENCH/gen_queries.py" --out "$QDIR"
fi
for f in $FILES $PEER_FILES; do [ -s "$QDIR/$f.bin" ] || die "no query file $QDIR/$f.bin"; done
MQDIR=$QDIR          # the query files dnsperf sends
if [ -n "$DO" ]; then
  MQDIR="$OUT/queries-do"
  mkdir -p "$MQDIR"
  for f in $(printf '%s\n' $FILES $PEER_FILES | sort -u); do
    set_do "$QDIR/$f.bin" "$MQDIR/$f.bin" || die "cannot set the DO bit in $QDIR/$f.bin"
  done
fi
if [ ! -x "$OUT/null_echo" ] || [ "$BENCH/null_echo.c" -nt "$OUT/null_echo" ]; then
  cc -O2 -Wall -o "$OUT/null_echo" "$BENCH/null_echo.c"
fi
# (read-only git: GIT_OPTIONAL_LOCKS=0 keeps `git status` from rewriting the index)
{ "$MERIDIAN_BIN" --version 2>&1 | head -n 1
  echo "commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    "($(GIT_OPTIONAL_LOCKS=0 git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | wc -l) modified files)"
  dnsperf -h 2>&1 | grep -m1 Version; uname -r; nproc
  echo "DO bit: $DO_SHOW"; } > "$RUN/versions.txt"

# ---- config copy: meridian.toml + zones/ (+ bench/zones/), with the RRL setting ----
if [ "$BENCH_ZONES" = 1 ] || [ "$RRL" != shipped ]; then
  log "config copy (bench zone: $BENCH_ZONES, rrl: $RRL)"
  EXTRA_ZONES=()
  [ "$BENCH_ZONES" = 1 ] && EXTRA_ZONES=("$BENCH/zones")
  python3 "$BENCH/bench_config.py" --rrl "$RRL" "$ROOT/meridian.toml" "$RUN/meridian" "${EXTRA_ZONES[@]}"
  if ! "$MERIDIAN_BIN" check --config "$RUN/meridian/meridian.toml" > "$RUN/logs/meridian-check.log" 2>&1; then
    cat "$RUN/logs/meridian-check.log"; die "meridian check failed on $RUN/meridian/meridian.toml"
  fi
  cat "$RUN/logs/meridian-check.log"
  MERIDIAN_ARGS="run --config $RUN/meridian/meridian.toml --listen 127.0.0.1:@PORT@"
fi
MERIDIAN_ARGS=${MERIDIAN_ARGS:-run --config $ROOT/meridian.toml --listen 127.0.0.1:@PORT@}

# ---- peers: install and render configs ---------------------------------------------
PEER_CMDS=()
if [ -n "$PEERS" ]; then
  log "peers: packages"
  missing=()
  for p in gdnsd knot nsd; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ ! -e /usr/sbin/policy-rc.d ]; then   # keep Debian's own services (port 53) from starting
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; MADE_POLICY=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    if [ -n "$MADE_POLICY" ]; then rm -f /usr/sbin/policy-rc.d; MADE_POLICY=""; fi
  fi
  for p in gdnsd knot nsd; do printf '  %-6s %s\n' "$p" "$(dpkg-query -W -f='${Version}' "$p")"; done | tee -a "$RUN/versions.txt"
  P="$RUN/peers"
  python3 "$BENCH/peers.py" "$P" --zones "$ROOT/zones" --geoip "$ROOT/geoip/dbip-country.mmdb" \
    --port-gdnsd $((PORT_BASE + 2)) --port-knot $((PORT_BASE + 3)) --port-nsd $((PORT_BASE + 4)) --gdnsd-www "$GDNSD_WWW"
  gdnsd -c "$P/gdnsd" checkconf > "$RUN/logs/gdnsd-checkconf.log" 2>&1 || { cat "$RUN/logs/gdnsd-checkconf.log"; die "gdnsd checkconf failed"; }
  knotc -c "$P/knot/knot.conf" conf-check > /dev/null || die "knotc conf-check failed"
  nsd-checkconf "$P/nsd/nsd.conf" || die "nsd-checkconf failed"
  for z in "$P"/zones/*.zone; do
    zn=$(basename "$z" .zone)
    nsd-checkzone "$zn" "$z" > /dev/null || die "nsd-checkzone $zn failed"
    knotc -c "$P/knot/knot.conf" zone-check "$zn" > /dev/null || die "knotc zone-check $zn failed"
  done
fi

# ---- measurements -----------------------------------------------------------------
read -r -a MARGS <<< "${MERIDIAN_ARGS//@PORT@/$PORT_BASE}"
bench_server meridian "$PORT_BASE" soa "$FILES" "$MERIDIAN_BIN" "${MARGS[@]}"
bench_server null-echo $((PORT_BASE + 1)) any "$FILES" "$OUT/null_echo" $((PORT_BASE + 1))
if [ -n "$PEERS" ]; then
  bench_server gdnsd $((PORT_BASE + 2)) soa "$PEER_FILES" gdnsd -c "$P/gdnsd" start
  bench_server knot $((PORT_BASE + 3)) soa "$PEER_FILES" knotd -c "$P/knot/knot.conf"
  bench_server nsd $((PORT_BASE + 4)) soa "$PEER_FILES" nsd -d -c "$P/nsd/nsd.conf"
fi

# ---- report -----------------------------------------------------------------------
log "results ($(( $(date +%s) - T_START )) s)"
python3 "$BENCH/measure.py" report --results "$RESULTS" --rss "$RUN/rss.txt" --md "$RUN/results.md" \
  --server-cpus "$SERVER_CPUS" --client-cpu "$CLIENT_CPU"
if [ -n "$DO" ]; then
  printf '\nQueries sent with the DNSSEC OK bit (DO=1, run.sh --do), from %s.\n' "$MQDIR" | tee -a "$RUN/results.md"
fi
cp "$RUN/results.md" "$OUT/results.md"
cp "$RESULTS" "$OUT/results.jsonl"
echo
echo "run.sh: raw results in $RUN (also $OUT/latest); table in $OUT/results.md"
