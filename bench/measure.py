#!/usr/bin/env python3
"""Measurement helpers for bench/run.sh (python3 stdlib only).

  measure.py run    one bounded dnsperf run against a server; appends one JSON line
  measure.py get    one field of a stored result (e.g. the saturation qps)
  measure.py rss    peak RSS (VmHWM) of a process tree, in KiB
  measure.py tree   a process tree as "PID comm" lines
  measure.py pin    re-pin every thread of a process tree to a CPU list
  measure.py report Markdown tables from the JSON lines
  measure.py setdo  a copy of a query file with the DNSSEC OK bit in every query

Server CPU is read from /proc/PID/stat (utime + stime: the whole process, all its
threads, live and exited) for the server process and all its descendants, before and
after the run. dnsperf's CPU comes from getrusage(RUSAGE_CHILDREN) around the run.
"other" CPU is the machine's busy time (/proc/stat) minus both: a run with other CPU
above OTHER_MAX % was disturbed by something else on the machine and is retried once.
"""

import argparse
import json
import math
import os
import re
import resource
import signal
import struct
import subprocess
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")
OTHER_MAX = float(os.environ.get("OTHER_MAX", "15"))


# ---- /proc helpers ---------------------------------------------------------------------

def children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(pids):
    """The given PIDs and all their descendants."""
    kids = children_map()
    out, todo = [], list(pids)
    while todo:
        p = todo.pop()
        if p not in out:
            out.append(p)
            todo.extend(kids.get(p, []))
    return sorted(out)


def cpu_ticks(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])      # utime (14), stime (15)
    except (OSError, IndexError, ValueError):
        return None


def busy_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4]                      # all but idle and iowait


def thread_cpus(pids):
    """Set of 'Cpus_allowed_list' values over every thread of the given processes."""
    seen = set()
    for p in pids:
        try:
            tids = os.listdir("/proc/%d/task" % p)
        except OSError:
            continue
        for t in tids:
            try:
                with open("/proc/%d/task/%s/status" % (p, t)) as f:
                    for line in f:
                        if line.startswith("Cpus_allowed_list:"):
                            seen.add(line.split()[1])
            except OSError:
                pass
    return seen


def cpulist(s):
    out = set()
    for part in s.split(","):
        if "-" in part:
            a, b = part.split("-")
            out.update(range(int(a), int(b) + 1))
        elif part:
            out.add(int(part))
    return out


def wait_idle(max_wait, threshold=10.0):
    """Wait (at most max_wait s) until the machine is < threshold % busy over 1 s."""
    t_end = time.time() + max_wait
    ncpu = os.cpu_count() or 1
    while True:
        b0, t0 = busy_ticks(), time.time()
        time.sleep(1.0)
        pct = (busy_ticks() - b0) / HZ / (time.time() - t0) / ncpu * 100
        if pct < threshold or time.time() >= t_end:
            return pct


# ---- dnsperf --------------------------------------------------------------------------

STAT_RE = {
    "sent": r"Queries sent:\s+(\d+)",
    "completed": r"Queries completed:\s+(\d+)",
    "lost": r"Queries lost:\s+(\d+)",
    "qps": r"Queries per second:\s+([\d.]+)",
    "avg_s": r"Average Latency \(s\):\s+([\d.]+)",
    "min_s": r"Average Latency \(s\):\s+[\d.]+ \(min ([\d.]+)",
    "max_s": r"max ([\d.]+)\)",
    "stddev_s": r"Latency StdDev \(s\):\s+([\d.]+)",
    "runtime_s": r"Run time \(s\):\s+([\d.]+)",
}


def percentile(sorted_vals, p):
    """Nearest-rank percentile of a sorted list."""
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, math.ceil(p / 100.0 * len(sorted_vals)) - 1))
    return sorted_vals[k]


def run_dnsperf(args, raw_path):
    """One dnsperf run; returns the result dict (without retry logic)."""
    pids = tree(args.pid)
    cmd = ["taskset", "-c", args.client_cpu, "dnsperf", "-B", "-d", args.queries,
           "-s", args.server, "-p", str(args.port), "-l", str(args.seconds),
           "-c", str(args.clients), "-q", str(args.outstanding), "-T", "1", "-t", str(args.timeout)]
    if args.qps:
        cmd += ["-Q", str(args.qps)]
    if args.latency:
        cmd += ["-v"]
    s0 = {p: cpu_ticks(p) for p in pids}
    b0 = busy_ticks()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    with open(raw_path, "w") as out:
        out.write("# " + " ".join(cmd) + "\n")
        out.flush()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            rc = proc.wait(timeout=args.seconds + args.timeout + 30)   # dnsperf -l bounds it
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)                          # our own child, by PID
            proc.wait()
            raise SystemExit("measure: dnsperf overran its time limit; killed pid %d" % proc.pid)
    t1 = time.time()
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    b1 = busy_ticks()
    s1 = {p: cpu_ticks(p) for p in pids}
    if rc != 0:
        raise SystemExit("measure: dnsperf exited %d, see %s" % (rc, raw_path))
    gone = [p for p in pids if s1[p] is None or s0[p] is None]
    if args.pid[0] in gone:
        raise SystemExit("measure: server pid %d died during the run" % args.pid[0])
    server_s = sum(s1[p] - s0[p] for p in pids if p not in gone) / HZ
    client_s = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    wall = t1 - t0

    res = {}
    lat = []
    timeouts = 0
    with open(raw_path) as f:
        text_tail = []
        for line in f:
            if line.startswith("> "):
                # "> NOERROR binary input 0.000123" per answer; "> T binary input" on timeout
                parts = line.split()
                if parts[1] == "T":
                    timeouts += 1
                elif args.latency:
                    try:
                        lat.append(float(parts[-1]))
                    except ValueError:
                        pass
            else:
                text_tail.append(line)
    text = "".join(text_tail)
    for k, rx in STAT_RE.items():
        m = re.search(rx, text)
        res[k] = float(m.group(1)) if m else None
    m = re.search(r"Response codes:\s+(.*)", text)
    res["rcodes"] = m.group(1).strip() if m else ""
    if args.latency and not args.keep_raw:
        with open(raw_path, "w") as f:          # keep dnsperf's summary, drop per-query lines
            f.write(text)
    completed = res["completed"] or 0
    res.update({
        "server": args.name, "file": os.path.basename(args.queries).rsplit(".", 1)[0],
        "mode": args.mode, "offered_qps": args.qps or "max", "seconds": args.seconds,
        "clients": args.clients, "outstanding": args.outstanding,
        "lost_pct": 100.0 * (res["lost"] or 0) / res["sent"] if res["sent"] else None,
        "server_cpu_pct": 100.0 * server_s / wall,
        "server_us_per_q": 1e6 * server_s / completed if completed else None,
        "dnsperf_cpu_pct": 100.0 * client_s / wall,
        "other_cpu_pct": max(0.0, 100.0 * ((b1 - b0) / HZ - server_s - client_s) / wall),
        "server_procs": len(pids), "server_threads_cpus": sorted(thread_cpus(pids)),
        "wall_s": wall, "raw": os.path.relpath(raw_path, os.path.dirname(args.out)),
    })
    if args.latency:
        lat.sort()
        res["latency_samples"] = len(lat)
        res["verbose_timeouts"] = timeouts
        for p in (50, 90, 99, 99.9):
            v = percentile(lat, p)
            res["p%s_ms" % str(p).replace(".", "_")] = v * 1000 if v is not None else None
    for k in ("avg_s", "min_s", "max_s", "stddev_s"):
        v = res.pop(k)
        res[k[:-2] + "_ms"] = v * 1000 if v is not None else None
    return res


def cmd_run(args):
    cpus = thread_cpus(tree(args.pid))
    client = cpulist(args.client_cpu)
    overlap = [c for c in cpus if cpulist(c) & client]
    if overlap:
        print("measure: warning: %s threads may run on CPUs %s, overlapping dnsperf's CPU %s"
              % (args.name, "/".join(sorted(cpus)), args.client_cpu), file=sys.stderr)
    os.makedirs(os.path.dirname(os.path.abspath(args.raw)), exist_ok=True)
    attempt = 0
    while True:
        attempt += 1
        waited = 0.0
        if args.idle_wait > 0:
            t_w = time.time()
            busy = wait_idle(args.idle_wait)
            waited = time.time() - t_w
            if waited > 2:
                print("measure: waited %.0f s for an idle machine (now %.0f %% busy)" % (waited, busy), file=sys.stderr)
        res = run_dnsperf(args, args.raw)
        res["attempt"] = attempt
        res["idle_wait_s"] = waited
        if res["other_cpu_pct"] <= OTHER_MAX or attempt > args.retries:
            break
        print("measure: %s %s %s disturbed (other CPU %.0f %%), retrying"
              % (args.name, res["file"], args.mode, res["other_cpu_pct"]), file=sys.stderr)
    res["disturbed"] = res["other_cpu_pct"] > OTHER_MAX
    with open(args.out, "a") as f:
        f.write(json.dumps(res, sort_keys=True) + "\n")
    show = time.strftime("%H:%M:%S ") + "%-10s %-7s %-8s offered %-6s qps %9.0f lost %6.3f%% avg %.3f ms" % (
        args.name, res["file"], args.mode, res["offered_qps"], res["qps"] or 0, res["lost_pct"] or 0,
        res["avg_ms"] or 0)
    if args.latency and res.get("p99_ms") is not None:
        show += " p50 %.3f p99 %.3f ms" % (res["p50_ms"], res["p99_ms"])
    show += " | server %5.1f%% CPU %6.2f us/q | dnsperf %5.1f%% | other %3.0f%%" % (
        res["server_cpu_pct"], res["server_us_per_q"] or 0, res["dnsperf_cpu_pct"], res["other_cpu_pct"])
    if res["disturbed"]:
        show += "  DISTURBED"
    print(show, flush=True)


def cmd_get(args):
    """Print one field of the last matching result (run.sh sizes follow-up runs with it)."""
    val = None
    with open(args.results) as f:
        for line in f:
            r = json.loads(line)
            if (r["server"], r["file"], r["mode"]) == (args.server, args.file, args.mode):
                val = r.get(args.key)
    if val is None:
        raise SystemExit("measure: no %s for %s/%s/%s" % (args.key, args.server, args.file, args.mode))
    print(int(val) if isinstance(val, float) else val)


def cmd_rss(args):
    total = 0
    for p in tree(args.pid):
        try:
            with open("/proc/%d/status" % p) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    print(total)


def cmd_tree(args):
    for p in tree(args.pid):
        try:
            with open("/proc/%d/comm" % p) as f:
                print(p, f.read().strip())
        except OSError:
            pass


def cmd_pin(args):
    for p in tree(args.pid):
        for t in os.listdir("/proc/%d/task" % p):
            try:
                os.sched_setaffinity(int(t), cpulist(args.cpus))
            except OSError:
                pass
    print(" ".join(sorted(thread_cpus(tree(args.pid)))))


# ---- report ---------------------------------------------------------------------------

def fmt(v, spec="%.2f", none="–"):
    return none if v is None else spec % v


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def cmd_report(args):
    rows = []
    with open(args.results) as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    rss = {}
    if args.rss and os.path.exists(args.rss):
        with open(args.rss) as f:
            for line in f:
                name, kib = line.split()
                rss[name] = int(kib)
    last = {}
    for r in rows:                               # the last result of each kind wins
        last[(r["server"], r["file"], r["mode"])] = r
    servers = []
    for r in rows:
        if r["server"] not in servers:
            servers.append(r["server"])
    files = []
    for r in rows:
        if r["file"] not in files:
            files.append(r["file"])
    floor_name = "null-echo"
    meridian = "meridian"
    peers = [s for s in servers if s not in (meridian, floor_name)]

    def get(server, file, mode, key):
        r = last.get((server, file, mode))
        return None if r is None else r.get(key)

    def floor(file, mode, key):
        v = get(floor_name, file, mode, key)
        return v if v is not None else get(floor_name, "mixed", mode, key)

    out = []
    out.append("Run: %d s per measurement; server on CPU %s, dnsperf on CPU %s; dnsperf -B -c %s -q %s -T 1."
               % (rows[0]["seconds"], args.server_cpus, args.client_cpu, rows[0]["clients"], rows[0]["outstanding"]))
    out.append("")
    hdr = ["server", "queries", "qps (sat)", "µs/q (sat)", "CPU % (sat)", "dnsperf CPU %", "lost % (sat)",
           "µs/q @50k", "avg / p50 / p99 ms @50k", "lost % @50k", "RSS MiB", "µs/q ÷ null-echo (sat / 50k)",
           "meridian µs/q ÷ this (sat / 50k)"]
    out.append("| " + " | ".join(hdr) + " |")
    out.append("|" + "|".join(["---"] * 2 + ["---:"] * (len(hdr) - 2)) + "|")
    flags = False
    for s in [meridian] + peers + [floor_name]:
        for fl in files:
            sat = last.get((s, fl, "sat"))
            fix = last.get((s, fl, "50k"))
            if sat is None and fix is None:
                continue
            mark = ""
            if (sat and sat.get("disturbed")) or (fix and fix.get("disturbed")):
                mark, flags = " †", True
            g = lambda mode, key: get(s, fl, mode, key)
            cells = [s + mark, fl,
                     fmt(g("sat", "qps"), "%.0f"), fmt(g("sat", "server_us_per_q")),
                     fmt(g("sat", "server_cpu_pct"), "%.0f"), fmt(g("sat", "dnsperf_cpu_pct"), "%.0f"),
                     fmt(g("sat", "lost_pct"), "%.3f"),
                     fmt(g("50k", "server_us_per_q")),
                     "%s / %s / %s" % (fmt(g("50k", "avg_ms"), "%.3f"), fmt(g("50k", "p50_ms"), "%.3f"),
                                       fmt(g("50k", "p99_ms"), "%.3f")),
                     fmt(g("50k", "lost_pct"), "%.3f"),
                     fmt(rss[s] / 1024 if s in rss else None, "%.1f"),
                     "%s / %s" % (fmt(ratio(g("sat", "server_us_per_q"), floor(fl, "sat", "server_us_per_q"))),
                                  fmt(ratio(g("50k", "server_us_per_q"), floor(fl, "50k", "server_us_per_q")))),
                     "%s / %s" % (
                         fmt(ratio(get(meridian, fl, "sat", "server_us_per_q"), g("sat", "server_us_per_q"))),
                         fmt(ratio(get(meridian, fl, "50k", "server_us_per_q"), g("50k", "server_us_per_q"))))]
            out.append("| " + " | ".join(cells) + " |")
    if flags:
        out.append("")
        out.append("† other processes used more than %.0f %% CPU during a run of this row (see raw results)." % OTHER_MAX)

    # Ratios to the floor for the remaining figures (qps and latency).
    out.append("")
    out.append("Ratio to the null-echo floor on the same query file (1.00 = as cheap/fast as echoing):")
    out.append("")
    out.append("| server | queries | qps (sat) | µs/q (sat) | µs/q @50k | avg ms @50k | p99 ms @50k |")
    out.append("|---|---|---:|---:|---:|---:|---:|")
    for s in [meridian] + peers:
        for fl in files:
            if (s, fl, "sat") not in last:
                continue
            cells = [s, fl] + [fmt(ratio(get(s, fl, m, k), floor(fl, m, k))) for m, k in
                               (("sat", "qps"), ("sat", "server_us_per_q"), ("50k", "server_us_per_q"),
                                ("50k", "avg_ms"), ("50k", "p99_ms"))]
            out.append("| " + " | ".join(cells) + " |")

    # Meridian per query file against its own geo.bin row and the floor on the same file:
    # the policies of the bench-only zone (weighted, sticky, chain, multi, geo2) beside geo.
    if (meridian, "geo", "sat") in last and len([fl for fl in files if (meridian, fl, "sat") in last]) > 1:
        out.append("")
        out.append("Meridian per query file, relative to its geo.bin row and to the null-echo floor "
                   "on the same file (µs/q ratios, sat / 50k):")
        out.append("")
        out.append("| queries | µs/q (sat) | µs/q @50k | p99 ms @50k | lost % (sat / 50k) | ÷ geo | ÷ null-echo |")
        out.append("|---|---:|---:|---:|---:|---:|---:|")
        for fl in files:
            if (meridian, fl, "sat") not in last:
                continue
            g = lambda mode, key: get(meridian, fl, mode, key)
            out.append("| %s | %s | %s | %s | %s / %s | %s / %s | %s / %s |" % (
                fl, fmt(g("sat", "server_us_per_q")), fmt(g("50k", "server_us_per_q")), fmt(g("50k", "p99_ms"), "%.3f"),
                fmt(g("sat", "lost_pct"), "%.3f"), fmt(g("50k", "lost_pct"), "%.3f"),
                fmt(ratio(g("sat", "server_us_per_q"), get(meridian, "geo", "sat", "server_us_per_q"))),
                fmt(ratio(g("50k", "server_us_per_q"), get(meridian, "geo", "50k", "server_us_per_q"))),
                fmt(ratio(g("sat", "server_us_per_q"), floor(fl, "sat", "server_us_per_q"))),
                fmt(ratio(g("50k", "server_us_per_q"), floor(fl, "50k", "server_us_per_q")))))

    # Meridian's load curve: fixed rates relative to its saturation.
    curve = [r for r in rows if r["server"] == meridian and r["mode"] in ("sat", "50k", "half", "80pct")]
    if curve:
        out.append("")
        out.append("Meridian load points (mixed unless noted): offered rate, achieved qps, loss, latency, CPU:")
        out.append("")
        out.append("| queries | run | offered qps | qps | lost % | avg ms | p50 ms | p99 ms | p99.9 ms | server CPU % | µs/q |")
        out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        order = {"sat": 0, "50k": 1, "half": 2, "80pct": 3}
        seen = {}
        for r in curve:
            seen[(r["file"], r["mode"])] = r
        for (fl, mode), r in sorted(seen.items(), key=lambda kv: (files.index(kv[0][0]), order[kv[0][1]])):
            label = {"sat": "saturation", "50k": "50k fixed", "half": "50 % of sat", "80pct": "80 % of sat"}[mode]
            out.append("| %s | %s | %s | %.0f | %s | %s | %s | %s | %s | %.0f | %s |" % (
                fl, label, r["offered_qps"], r["qps"] or 0, fmt(r["lost_pct"], "%.3f"), fmt(r["avg_ms"], "%.3f"),
                fmt(r.get("p50_ms"), "%.3f"), fmt(r.get("p99_ms"), "%.3f"), fmt(r.get("p99_9_ms"), "%.3f"),
                r["server_cpu_pct"], fmt(r["server_us_per_q"])))
    text = "\n".join(out) + "\n"
    sys.stdout.write(text)
    if args.md:
        with open(args.md, "w") as f:
            f.write(text)


# ---- setdo ----------------------------------------------------------------------------

def cmd_setdo(args):
    """Copies a dnsperf -B file (2-byte length + message per query) with the DO bit set
    in every query's OPT record (RFC 6891 6.1.3: the top bit of the TTL's low 16 bits);
    a query without OPT gets one (payload 1232, DO)."""
    from gen_queries import skip_name   # the bench's one DNS name walker (same directory)
    with open(args.input, "rb") as f:
        data = f.read()
    out, pos, total, added = bytearray(), 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack_from("!H", data, pos)
        m = bytearray(data[pos + 2:pos + 2 + length])
        if len(m) != length:
            raise SystemExit("measure: %s: truncated query at byte %d" % (args.input, pos))
        pos += 2 + length
        qd, an, ns, ar = struct.unpack_from("!HHHH", m, 4)
        i = 12
        for _ in range(qd):
            i = skip_name(m, i) + 4
        has_opt = False
        for k in range(an + ns + ar):
            i = skip_name(m, i)
            rtype, _cls, _ttl, rdlen = struct.unpack_from("!HHIH", m, i)
            if rtype == 41 and k >= an + ns:
                m[i + 6] |= 0x80          # TTL bytes: ext-rcode, version, DO|Z (hi), Z (lo)
                has_opt = True
            i += 10 + rdlen
        if not has_opt:
            m += b"\x00" + struct.pack("!HHIH", 41, 1232, 0x8000, 0)
            struct.pack_into("!H", m, 10, ar + 1)
            added += 1
        out += struct.pack("!H", len(m)) + m
        total += 1
    with open(args.output, "wb") as f:
        f.write(out)
    print("measure: %s: DO=1 in %d queries (%d got an OPT record) -> %s"
          % (os.path.basename(args.input), total, added, args.output))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--name", required=True)
    r.add_argument("--mode", required=True, help="sat, 50k, half, 80pct, warmup")
    r.add_argument("--pid", type=int, action="append", required=True, help="server PID (repeatable)")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--server", default="127.0.0.1")
    r.add_argument("--queries", required=True)
    r.add_argument("--seconds", type=int, required=True)
    r.add_argument("--qps", type=int, default=0, help="dnsperf -Q (0 = as fast as possible)")
    r.add_argument("--latency", action="store_true", help="dnsperf -v, per-query latency percentiles")
    r.add_argument("--keep-raw", action="store_true", help="keep dnsperf -v per-query lines")
    r.add_argument("--clients", type=int, default=4)
    r.add_argument("--outstanding", type=int, default=100)
    r.add_argument("--timeout", type=int, default=2)
    r.add_argument("--client-cpu", default="0")
    r.add_argument("--idle-wait", type=float, default=0, help="wait up to N s for an idle machine first")
    r.add_argument("--retries", type=int, default=1, help="re-runs of a disturbed run")
    r.add_argument("--raw", required=True, help="dnsperf output file")
    r.add_argument("--out", required=True, help="JSON-lines results file (appended)")
    g = sub.add_parser("get")
    g.add_argument("--results", required=True)
    g.add_argument("--server", required=True)
    g.add_argument("--file", required=True)
    g.add_argument("--mode", required=True)
    g.add_argument("--key", required=True)
    s = sub.add_parser("rss")
    s.add_argument("--pid", type=int, action="append", required=True)
    tr = sub.add_parser("tree")
    tr.add_argument("--pid", type=int, action="append", required=True)
    p = sub.add_parser("pin")
    p.add_argument("--pid", type=int, action="append", required=True)
    p.add_argument("--cpus", required=True)
    t = sub.add_parser("report")
    t.add_argument("--results", required=True)
    t.add_argument("--rss")
    t.add_argument("--md")
    t.add_argument("--server-cpus", default="1")
    t.add_argument("--client-cpu", default="0")
    d = sub.add_parser("setdo")
    d.add_argument("input", help="dnsperf -B query file")
    d.add_argument("output")
    args = ap.parse_args()
    if args.cmd == "run":
        if args.server not in ("127.0.0.1", "::1"):
            raise SystemExit("measure: --server must be 127.0.0.1 or ::1")
        if not 1 <= args.seconds <= 600:
            raise SystemExit("measure: --seconds must be 1..600")
    {"run": cmd_run, "get": cmd_get, "rss": cmd_rss, "tree": cmd_tree, "pin": cmd_pin, "report": cmd_report,
     "setdo": cmd_setdo}[args.cmd](args)


if __name__ == "__main__":
    main()
