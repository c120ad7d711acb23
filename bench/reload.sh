#!/usr/bin/env bash
# Reload under load (issue 10): a reload every second while dnsperf loads the
# server must lose no query and change no answer except where the config changed.
#
# Usage: bench/reload.sh [--seconds N] [--qps N]
#   --seconds N   how long to load and reload (default 20; one reload per second)
#   --qps N       dnsperf -Q, queries per second (default 20000)
#
# What it does, all on loopback, every process bounded in time and killed by PID:
#   1. builds target/release/meridian (SKIP_BUILD=1 skips), writes a config with two
#      variants of one zone that differ in one place only: flip.gslb.example.com A is
#      192.0.2.1 in A and 192.0.2.2 in B;
#   2. starts `meridian run` (threads = 1, rate limiting off) and waits for it;
#   3. runs dnsperf for N seconds at --qps over unchanged names (services with and
#      without a decision, static names, NXDOMAIN), and beside it a verifier that
#      asks unchanged names (www from five client networks by ECS, static, NXDOMAIN)
#      and flip over and over, and checks every answer against the one given before
#      any reload;
#   4. meanwhile, every second, installs the other variant (rename, atomic) and
#      POSTs /reload, recording each result and generation;
#   5. prints a Markdown table: reloads ok / failed, final generation, dnsperf sent /
#      completed / lost, verifier answers checked / wrong, flip values seen.
# Exit status 1 if a query was lost, an answer was wrong, or a reload failed.
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
SECONDS_RUN=20
QPS=20000
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) SECONDS_RUN=${2:?}; shift 2 ;;
    --qps) QPS=${2:?}; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "reload.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done
command -v dnsperf >/dev/null || { echo "reload.sh: dnsperf is required (apt-get install dnsperf)" >&2; exit 1; }
command -v curl >/dev/null || { echo "reload.sh: curl is required" >&2; exit 1; }
BIN=${MERIDIAN_BIN:-$ROOT/target/release/meridian}
if [ -z "${SKIP_BUILD:-}" ]; then (cd "$ROOT" && cargo build --release --bin meridian >&2); fi

WORK=$(mktemp -d /tmp/meridian-reload.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port); APORT=$(free_port)
mkdir -p "$WORK/zones"
cat > "$WORK/meridian.toml" <<EOF
listen = ["127.0.0.1:$PORT"]
zones = "zones"
geoip = "$ROOT/geoip/dbip-country.mmdb"
threads = 1
state_file = "state.json"
[admin]
listen = "127.0.0.1:$APORT"
[rrl]
enabled = false
[latency]
state_file = ""
EOF
base=$(cat "$ROOT/zones/gslb.example.com.toml")
printf '%s\n' "$base" | sed 's/^\[records\]$/[records]\nflip = [{ type = "A", value = "192.0.2.1" }]/' > "$WORK/variant-a.toml"
printf '%s\n' "$base" | sed 's/^\[records\]$/[records]\nflip = [{ type = "A", value = "192.0.2.2" }]/' > "$WORK/variant-b.toml"
cmp -s "$WORK/variant-a.toml" "$WORK/variant-b.toml" && { echo "reload.sh: variants do not differ" >&2; exit 1; }
cp "$WORK/variant-a.toml" "$WORK/zones/gslb.example.com.toml"

"$BIN" run --config "$WORK/meridian.toml" > "$WORK/server.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 300); do
  curl -sf "127.0.0.1:$APORT/health" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "127.0.0.1:$APORT/health" >/dev/null || { cat "$WORK/server.log" >&2; echo "reload.sh: server did not start" >&2; exit 1; }

cat > "$WORK/queries.txt" <<EOF
www.gslb.example.com A
www.gslb.example.com AAAA
app.gslb.example.com A
mail.gslb.example.com A
gslb.example.com SOA
gslb.example.com NS
gslb.example.com MX
nope.gslb.example.com A
EOF

# The verifier: unchanged names must always get the answer they got before the
# first reload; flip one of its two values.
cat > "$WORK/verify.py" <<'EOF'
import socket, struct, sys, time, random
port, seconds = int(sys.argv[1]), float(sys.argv[2])
def query(name, qtype, ecs=None):
    qid = random.randrange(65536)
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 1)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack(">HH", qtype, 1)
    opt = b""
    if ecs:
        addr, plen = ecs
        a = socket.inet_aton(addr)[: (plen + 7) // 8]
        data = struct.pack(">HBB", 1, plen, 0) + a
        opt = struct.pack(">HH", 8, len(data)) + data
    q += b"\0" + struct.pack(">HHIH", 41, 1232, 0, len(opt)) + opt
    return qid, q
def ask(sock, name, qtype, ecs=None):
    qid, q = query(name, qtype, ecs)
    for _ in range(3):
        sock.sendto(q, ("127.0.0.1", port))
        try:
            while True:
                r, _ = sock.recvfrom(4096)
                if struct.unpack(">H", r[:2])[0] == qid:
                    # Everything after the ID: flags, counts, records, OPT.
                    return r[2:]
        except socket.timeout:
            continue
    return None
cases = [("www.gslb.example.com", 1, (n, 24)) for n in
         ["8.8.8.0", "81.2.69.0", "133.11.0.0", "14.139.0.0", "200.160.2.0"]]
cases += [("mail.gslb.example.com", 1, None), ("gslb.example.com", 6, None),
          ("nope.gslb.example.com", 1, None), ("app.gslb.example.com", 1, ("90.0.0.0", 24))]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1.0)
want = {c: ask(s, *c) for c in cases}
flips = {}
checked = wrong = lost = 0
end = time.time() + seconds
while time.time() < end:
    for c in cases:
        r = ask(s, *c)
        checked += 1
        if r is None: lost += 1
        elif r != want[c]: wrong += 1
    r = ask(s, "flip.gslb.example.com", 1)
    if r is None: lost += 1
    else:
        # The A record's RDATA ends the answer section, before the OPT (11 bytes).
        flips[r[-15:-11]] = flips.get(r[-15:-11], 0) + 1
print(checked, wrong, lost, " ".join(f"{socket.inet_ntoa(k)}x{v}" for k, v in sorted(flips.items())))
EOF

timeout $((SECONDS_RUN + 30)) dnsperf -s 127.0.0.1 -p "$PORT" -d "$WORK/queries.txt" \
  -l "$SECONDS_RUN" -Q "$QPS" -c 4 -t 2 > "$WORK/dnsperf.txt" 2>&1 &
PERF=$!; PIDS+=($PERF)
timeout $((SECONDS_RUN + 30)) python3 "$WORK/verify.py" "$PORT" "$SECONDS_RUN" > "$WORK/verify.txt" 2>&1 &
VERIFY=$!; PIDS+=($VERIFY)

ok=0; failed=0; gen=1; variant=b
for _ in $(seq 1 "$SECONDS_RUN"); do
  sleep 1
  cp "$WORK/variant-$variant.toml" "$WORK/zones/.next.tmp"
  mv "$WORK/zones/.next.tmp" "$WORK/zones/gslb.example.com.toml"
  out=$(curl -s -m 10 -X POST "127.0.0.1:$APORT/reload" || true)
  if printf '%s' "$out" | grep -q '"ok":true'; then
    ok=$((ok + 1)); gen=$(printf '%s' "$out" | sed 's/.*"generation":\([0-9]*\).*/\1/')
  else
    failed=$((failed + 1)); echo "reload failed: $out" >&2
  fi
  variant=$([ "$variant" = a ] && echo b || echo a)
done
wait "$PERF" || true
wait "$VERIFY" || true

sent=$(sed -n 's/^ *Queries sent: *\([0-9]*\).*/\1/p' "$WORK/dnsperf.txt")
completed=$(sed -n 's/^ *Queries completed: *\([0-9]*\).*/\1/p' "$WORK/dnsperf.txt")
lost=$(sed -n 's/^ *Queries lost: *\([0-9]*\).*/\1/p' "$WORK/dnsperf.txt")
qps=$(sed -n 's/^ *Queries per second: *\([0-9.]*\).*/\1/p' "$WORK/dnsperf.txt")
read -r checked wrong vlost flips < "$WORK/verify.txt" || true
[ -n "$sent" ] || { cat "$WORK/dnsperf.txt" >&2; echo "reload.sh: no dnsperf result" >&2; exit 1; }

echo
echo "| reloads (ok / failed) | final generation | dnsperf sent | completed | lost | qps | verifier answers checked | wrong | unanswered | flip answers |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
echo "| $ok / $failed | $gen | $sent | $completed | $lost | ${qps%.*} | $checked | $wrong | $vlost | $flips |"
echo "(work files in $WORK)"
[ "$failed" = 0 ] && [ "${lost:-1}" = 0 ] && [ "${wrong:-1}" = 0 ] && [ "${vlost:-1}" = 0 ]
