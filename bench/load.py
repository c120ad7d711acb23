#!/usr/bin/env python3
"""Measurement steps of bench/load.sh (python3 stdlib only). See bench/README.md,
"Load benchmark". Every step appends one JSON line to --results; `report` turns
them into Markdown.

  load.py check   run one loader (meridian check, nsd-checkzone) to its end:
                  wall time, CPU time and peak RSS (/usr/bin/time's %M)
  load.py serve   start meridian run or nsd -d on a free loopback port, wait until
                  it answers the zone's SOA, read RSS and PSS over its process
                  tree, stop it
  load.py reload  Meridian serving under dnsperf at a fixed rate, two SIGHUPs:
                  lost queries, RSS sampled every 50 ms, SIGHUP -> "configuration
                  reloaded" in the log
  load.py qps     Meridian's CPU per query on two configs, server and dnsperf
                  pinned to different CPUs, alternating rounds
  load.py report  Markdown tables from the JSON lines

Bounds: every child has a deadline and an RSS cap and is killed (by its own PID)
when it passes either; the result then says so instead of a figure. Servers are
stopped by PID: SIGTERM to each process of the tree recorded while it ran (only
while /proc/PID/comm still names it), SIGKILL after 10 s.
"""

import argparse
import datetime
import json
import os
import random
import re
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import HZ, cpu_ticks, cpulist, tree, wait_idle  # noqa: E402

ORIGIN = "load.example."
RELOADED = "configuration reloaded"
RELOAD_FAILED = "reload failed"


# ---- /proc ----------------------------------------------------------------------------

def status_kb(pid, key):
    """A `kB` field of /proc/PID/status (VmRSS, VmHWM), or None if gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def pss_kb(pid):
    """Proportional set size: each shared page divided among the processes mapping it."""
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return None


def alive(pid):
    """True while PID exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def tree_rss_kb(pid):
    return sum(status_kb(p, "VmRSS") or 0 for p in tree([pid]))


# ---- small DNS client -----------------------------------------------------------------

def dns_query(port, name, qtype=6, timeout=0.5):
    """One UDP query to 127.0.0.1:port (RD=0). Returns (rcode, ancount) or None."""
    qid = random.randrange(65536)
    wire = b"".join(bytes([len(l)]) + l.encode() for l in name.rstrip(".").split(".")) + b"\0"
    msg = struct.pack(">HHHHHH", qid, 0, 1, 0, 0, 0) + wire + struct.pack(">HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(msg, ("127.0.0.1", port))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                data = s.recv(4096)
                if len(data) >= 12 and struct.unpack(">H", data[:2])[0] == qid:
                    flags, _, ancount = struct.unpack(">HHH", data[2:8])
                    return flags & 15, ancount
        except OSError:
            return None
    return None


def free_port():
    """A port free for both UDP and TCP on 127.0.0.1 (servers bind both)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise SystemExit("load: no free loopback port")


# ---- processes ------------------------------------------------------------------------

class Limits:
    """Deadline and RSS cap for a child process (with `tree`, its whole process tree:
    NSD forks; a scan of /proc costs CPU, so only servers that fork use it)."""

    def __init__(self, timeout, rss_cap_mb, tree=False):
        self.t0 = time.monotonic()
        self.timeout = timeout
        self.cap_kb = rss_cap_mb * 1024
        self.tree = tree

    def exceeded(self, pid):
        """None, or why the process must be stopped."""
        if time.monotonic() - self.t0 > self.timeout:
            return "timeout"
        rss = tree_rss_kb(pid) if self.tree else (status_kb(pid, "VmRSS") or 0)
        if rss > self.cap_kb:
            return "rss-cap"
        return None


def stop_tree(proc, recorded):
    """SIGTERM each recorded (pid, comm) still alive under that name, SIGKILL after 10 s."""
    def ours():
        return [(p, c) for p, c in recorded if alive(p) and comm(p) == c]

    for p, _ in ours():
        try:
            os.kill(p, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is None or ours():
            time.sleep(0.05)
        else:
            break
    for p, c in ours():
        print("load: pid %d (%s) ignored SIGTERM for 10 s, sending SIGKILL" % (p, c), file=sys.stderr)
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def record_tree(pid):
    return [(p, comm(p)) for p in tree([pid]) if comm(p)]


def start_server(kind, args, log):
    """Starts meridian run or nsd -d on a free port. Returns (proc, port)."""
    port = free_port()
    if kind == "meridian":
        cmd = [args.bin, "run", "--config", os.path.join(args.dir, "meridian.toml"),
               "--listen", "127.0.0.1:%d" % port]
    else:
        with open(os.path.join(args.dir, "nsd.conf")) as f:
            conf = re.sub(r"ip-address: 127\.0\.0\.1@\d+", "ip-address: 127.0.0.1@%d" % port, f.read())
        path = os.path.join(args.dir, "nsd-serve.conf")
        with open(path, "w") as f:
            f.write(conf)
        cmd = ["nsd", "-d", "-c", path]
    if getattr(args, "cpus", None):
        cmd = ["taskset", "-c", args.cpus] + cmd
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return proc, port


def wait_ready(proc, port, limits):
    """Polls the zone's SOA until it answers. Returns None or why it did not."""
    while True:
        if proc.poll() is not None:
            return "exited %d" % proc.returncode
        r = dns_query(port, ORIGIN, 6, timeout=0.3)
        if r and r[0] == 0 and r[1] > 0:
            return None
        why = limits.exceeded(proc.pid)
        if why:
            return why
        time.sleep(0.1)


def append(path, obj):
    with open(path, "a") as f:
        f.write(json.dumps(obj) + "\n")


# ---- check ----------------------------------------------------------------------------

def child_of(pid):
    """The first child of PID, or None (/proc/PID/task/PID/children)."""
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            kids = f.read().split()
    except OSError:
        kids = [p for p in tree([pid]) if p != pid]
    return int(kids[0]) if kids else None


def cmd_check(args):
    """Runs a loader to its end under /usr/bin/time, which reports its peak RSS (%M).

    Not wait4's ru_maxrss of our own child: Linux carries the RSS high-water mark
    across exec, so a child forked from this Python process reports at least
    Python's RSS (about 20 MiB). /usr/bin/time is small, and its own child starts
    from that. The main thread blocks until the child exits, so the wall time is
    exact; a watchdog thread checks the limits on the loader every 50 ms and kills it
    (our grandchild, by PID) past one."""
    limits = Limits(args.timeout, args.rss_cap_mb)
    killed = []
    tfile = args.log + ".time"
    with open(args.log, "w") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", tfile, "--"] + args.command,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        done = threading.Event()

        def watchdog():
            while not done.wait(0.05):
                loader = child_of(proc.pid)
                why = limits.exceeded(loader) if loader else None
                if why:
                    killed.append(why)
                    try:
                        os.kill(loader, signal.SIGKILL)
                    except OSError:
                        pass
                    return

        dog = threading.Thread(target=watchdog, daemon=True)
        dog.start()
        # Wait for the exit but leave /usr/bin/time unreaped (a zombie keeps its PID,
        # and it reaps the loader only just before it exits); stop the watchdog, then
        # reap. CPU times from wait4 include the loader's, reaped by /usr/bin/time.
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        wall = time.monotonic() - t0
        done.set()
        dog.join()
        _, st, ru = os.wait4(proc.pid, 0)
    status = killed[0] if killed else "ok"
    proc.returncode = os.waitstatus_to_exitcode(st)
    if status == "ok" and proc.returncode != 0:
        status = "failed (exit %d)" % proc.returncode
    peak = None
    try:
        with open(tfile) as f:
            nums = [line.strip() for line in f if line.strip().isdigit()]
        peak = int(nums[-1]) if nums else None
    except OSError:
        pass
    res = {"kind": "check", "case": args.case, "tool": args.tool, "rrs": args.rrs,
           "status": status, "wall_s": round(wall, 3),
           "cpu_s": round(ru.ru_utime + ru.ru_stime, 3), "peak_kb": peak}
    append(args.results, res)
    print("load: %-14s %-22s %s: %.2f s, peak RSS %s MiB" % (
        args.tool, args.case, status, wall, mib(peak)))
    if status.startswith("failed"):
        with open(args.log) as f:
            sys.stderr.write("".join(f.readlines()[-15:]))


# ---- serve ----------------------------------------------------------------------------

def cmd_serve(args):
    limits = Limits(args.timeout, args.rss_cap_mb, tree=args.server == "nsd")
    with open(args.log, "w") as log:
        t0 = time.monotonic()
        proc, port = start_server(args.server, args, log)
        recorded = [(proc.pid, comm(proc.pid))]
        try:
            why = wait_ready(proc, port, limits)
            ready_s = time.monotonic() - t0
            res = {"kind": "serve", "case": args.case, "server": args.server, "rrs": args.rrs,
                   "status": why or "ok", "ready_s": round(ready_s, 3)}
            if not why:
                time.sleep(args.settle)       # let the allocator return what start-up freed
                recorded = record_tree(proc.pid)
                pids = [p for p, _ in recorded]
                rss = [status_kb(p, "VmRSS") or 0 for p in pids]
                res.update({
                    "nproc": len(pids),
                    "rss_kb": sum(rss),
                    "max_rss_kb": max(rss),
                    "pss_kb": sum(pss_kb(p) or 0 for p in pids),
                    "hwm_kb": max(status_kb(p, "VmHWM") or 0 for p in pids),
                })
        finally:
            stop_tree(proc, sorted(set(recorded) | set(record_tree(proc.pid))))
    append(args.results, res)
    if res["status"] == "ok":
        print("load: %-8s serving %-10s ready in %.2f s: RSS %.1f MiB, PSS %.1f MiB over %d process(es)" % (
            args.server, args.case, res["ready_s"], res["rss_kb"] / 1024, res["pss_kb"] / 1024, res["nproc"]))
    else:
        print("load: %s serving %s: %s after %.1f s (log %s)" % (
            args.server, args.case, res["status"], res["ready_s"], args.log))


# ---- reload ---------------------------------------------------------------------------

DNSPERF_STATS = {
    "sent": r"Queries sent:\s+(\d+)",
    "completed": r"Queries completed:\s+(\d+)",
    "lost": r"Queries lost:\s+(\d+)",
    "qps": r"Queries per second:\s+([\d.]+)",
    "max_latency_s": r"max ([\d.]+)\)",
}


def dnsperf_stats(path):
    with open(path) as f:
        text = f.read()
    out = {}
    for k, rx in DNSPERF_STATS.items():
        m = re.search(rx, text)
        out[k] = float(m.group(1)) if m else None
    return out


def log_reloads(path):
    """Timestamps (unix s) of the reload outcome lines in Meridian's log, in order."""
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            if RELOADED in line or RELOAD_FAILED in line:
                stamp = line.split(None, 1)[0] if line[:1].isdigit() else ""
                try:
                    t = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
                except ValueError:
                    t = None
                out.append((t, RELOAD_FAILED not in line))
    return out


class Sampler(threading.Thread):
    """VmRSS of one process every `period` seconds: [(monotonic, kB)]."""

    def __init__(self, pid, period=0.05):
        super().__init__(daemon=True)
        self.pid, self.period, self.samples = pid, period, []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            kb = status_kb(self.pid, "VmRSS")
            if kb is not None:
                self.samples.append((time.monotonic(), kb))
            self.stop.wait(self.period)

    def window(self, t0, t1):
        return [kb for t, kb in self.samples if t0 <= t < t1]


def cmd_reload(args):
    limits = Limits(args.timeout, args.rss_cap_mb)
    res = {"kind": "reload", "case": args.case, "rrs": args.rrs, "qps_offered": args.qps, "status": "ok"}
    dp_out = args.log + ".dnsperf"
    with open(args.log, "w") as log:
        proc, port = start_server("meridian", args, log)
        dp = None
        try:
            why = wait_ready(proc, port, limits)
            if why:
                res["status"] = "start: " + why
                return
            # dnsperf's own limit bounds the run; it is stopped earlier with SIGINT,
            # after which it waits for the answers in flight and prints its statistics.
            cap = int(args.steady + 2 * (args.reload_timeout + args.gap) + 10)
            sampler = Sampler(proc.pid)
            with open(dp_out, "w") as out:
                dp = subprocess.Popen(
                    ["dnsperf", "-d", os.path.join(args.dir, "names.txt"), "-s", "127.0.0.1",
                     "-p", str(port), "-Q", str(args.qps), "-l", str(cap), "-c", "4", "-q", "200",
                     "-t", "5"], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            sampler.start()
            t_load = time.monotonic()
            time.sleep(args.steady)
            steady = sampler.window(t_load + 1.0, time.monotonic())
            res["steady_kb"] = int(statistics.median(steady)) if steady else None
            live = []
            for i in (1, 2):
                wall_hup, t_hup = time.time(), time.monotonic()
                os.kill(proc.pid, signal.SIGHUP)
                while True:
                    seen = log_reloads(args.log)
                    if len(seen) >= i:
                        break
                    if proc.poll() is not None:
                        res["status"] = "reload %d: meridian exited" % i
                    elif time.monotonic() - t_hup > args.reload_timeout:
                        res["status"] = "reload %d: no log line in %.0f s" % (i, args.reload_timeout)
                    elif (status_kb(proc.pid, "VmRSS") or 0) > limits.cap_kb:
                        res["status"] = "reload %d: rss-cap" % i
                    else:
                        time.sleep(0.01)
                        continue
                    break
                if res["status"] != "ok":
                    break
                stamp, ok = seen[i - 1]
                if not ok:
                    res["status"] = "reload %d failed (see %s)" % (i, args.log)
                    break
                # The log's own timestamp; the poll time if the line has none.
                live.append(round((stamp - wall_hup) if stamp else (time.monotonic() - t_hup), 3))
                t_after = time.monotonic()
                time.sleep(args.gap)
                after = sampler.window(t_after + 0.5, time.monotonic())
                res["after_%d_kb" % i] = int(statistics.median(after)) if after else None
            res["live_s"] = live
        finally:
            if dp is not None:
                if dp.poll() is None:
                    dp.send_signal(signal.SIGINT)
                try:
                    dp.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    dp.kill()
                    dp.wait()
                    res["status"] = "dnsperf did not stop"
                sampler.stop.set()
                sampler.join()
                res.update(dnsperf_stats(dp_out))
                res["peak_kb"] = max((kb for _, kb in sampler.samples), default=None)
                res["samples"] = len(sampler.samples)
            stop_tree(proc, record_tree(proc.pid) or [(proc.pid, comm(proc.pid))])
            append(args.results, res)
            if res.get("steady_kb") and res.get("peak_kb"):
                print("load: reload %s: %s; lost %s of %s; RSS steady %.0f MiB, peak %.0f MiB (x%.2f); "
                      "SIGHUP -> live %s s" % (
                          args.case, res["status"], fmt_n(res.get("lost")), fmt_n(res.get("sent")),
                          res["steady_kb"] / 1024, res["peak_kb"] / 1024,
                          res["peak_kb"] / res["steady_kb"], res.get("live_s")))
            else:
                print("load: reload %s: %s" % (args.case, res["status"]))


# ---- qps ------------------------------------------------------------------------------

def cmd_qps(args):
    """CPU per query: alternating rounds small, big, small, big, ... on the same CPUs."""
    servers = {}
    res = {"kind": "qps", "status": "ok", "qps_offered": args.qps, "seconds": args.seconds, "configs": {}}
    logs = []
    try:
        for label, d, rrs in (("small", args.small, args.small_rrs), ("big", args.big, args.big_rrs)):
            log = open("%s.%s" % (args.log, label), "w")
            logs.append(log)
            a = argparse.Namespace(bin=args.bin, dir=d, cpus=args.server_cpus)
            proc, port = start_server("meridian", a, log)
            servers[label] = (proc, port, d)
            why = wait_ready(proc, port, Limits(args.timeout, args.rss_cap_mb))
            if why:
                res["status"] = "%s: %s" % (label, why)
                return
            # Re-pin every thread (taskset pins the first; threads inherit, but be sure).
            for p in tree([proc.pid]):
                for t in os.listdir("/proc/%d/task" % p):
                    try:
                        os.sched_setaffinity(int(t), cpulist(args.server_cpus))
                    except OSError:
                        pass
            res["configs"][label] = {"rrs": rrs, "us_per_q": [], "lost": 0, "completed": 0}
        for rnd in range(args.rounds):
            for label in ("small", "big"):
                proc, port, d = servers[label]
                wait_idle(args.idle_wait)
                raw = "%s.%s.%d.dnsperf" % (args.log, label, rnd)
                pids = tree([proc.pid])
                c0 = sum(cpu_ticks(p) or 0 for p in pids)
                with open(raw, "w") as out:
                    dp = subprocess.Popen(
                        ["taskset", "-c", args.client_cpu, "dnsperf", "-d", os.path.join(d, "names.txt"),
                         "-s", "127.0.0.1", "-p", str(port), "-l", str(args.seconds),
                         "-c", "4", "-q", "100", "-t", "2"] + (["-Q", str(args.qps)] if args.qps else []),
                        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
                    try:
                        dp.wait(timeout=args.seconds + 30)
                    except subprocess.TimeoutExpired:
                        dp.kill()
                        dp.wait()
                        res["status"] = "dnsperf overran"
                        return
                c1 = sum(cpu_ticks(p) or 0 for p in pids)
                st = dnsperf_stats(raw)
                cfg = res["configs"][label]
                if st["completed"]:
                    cfg["us_per_q"].append(round((c1 - c0) / HZ / st["completed"] * 1e6, 3))
                    cfg["completed"] += int(st["completed"])
                    cfg["lost"] += int(st["lost"] or 0)
                print("load: qps round %d %-5s: %s us/query, %s lost" % (
                    rnd + 1, label, cfg["us_per_q"][-1] if cfg["us_per_q"] else "–", fmt_n(st["lost"])))
    finally:
        for proc, _, _ in servers.values():
            stop_tree(proc, record_tree(proc.pid) or [(proc.pid, comm(proc.pid))])
        for log in logs:
            log.close()
        append(args.results, res)


# ---- report ---------------------------------------------------------------------------

def fmt_n(v):
    return "–" if v is None else "{:,}".format(int(v))


def mib(kb):
    return "–" if kb is None else "%.1f" % (kb / 1024)


def ratio(a, b):
    return "–" if not a or not b else "%.2f" % (a / b)


def rrs_label(n):
    return "{:,}".format(n)


def cmd_report(args):
    rows = [json.loads(line) for line in open(args.results) if line.strip()]
    by = lambda kind: [r for r in rows if r["kind"] == kind]  # noqa: E731
    out = ["# Meridian load benchmark", ""]
    for line in args.header or []:
        out.append(line + "  ")
    out.append("")

    def killed(r, what):
        return "%s (%s)" % (what, r["status"])

    checks = by("check")
    load = [r for r in checks if r["case"].startswith("rr")]
    if load:
        out += ["## Load: `meridian check` vs `nsd-checkzone` on the same records", "",
                "| RRs | records from | Meridian s (CPU) | NSD s (CPU) | × time | × CPU | Meridian MiB | NSD MiB | × RSS "
                "| Meridian CPU µs/RR | NSD CPU µs/RR | Meridian B/RR | NSD B/RR |",
                "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for case in sorted({r["case"] for r in load}, key=lambda c: int(c[2:])):
          n = next((r for r in load if r["case"] == case and r["tool"] == "nsd-checkzone"), None)
          for tool, source in (("meridian", "TOML `[records]`"), ("meridian-zf", "`records_file`")):
            m = next((r for r in load if r["case"] == case and r["tool"] == tool), None)
            if not m and tool == "meridian-zf":
                continue
            rrs = (m or n)["rrs"]
            ms = "%.2f (%.2f)" % (m["wall_s"], m["cpu_s"]) if m and m["status"] == "ok" else (
                killed(m, "≥ %.0f" % m["wall_s"]) if m else "–")
            ns = "%.2f (%.2f)" % (n["wall_s"], n["cpu_s"]) if n and n["status"] == "ok" else "–"
            mok, nok = m and m["status"] == "ok", n and n["status"] == "ok"
            out.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                rrs_label(rrs), source, ms, ns,
                ratio(m["wall_s"], n["wall_s"]) if mok and nok else "–",
                ratio(m["cpu_s"], n["cpu_s"]) if mok and nok else "–",
                mib(m["peak_kb"]) if m else "–", mib(n["peak_kb"]) if n else "–",
                ratio(m["peak_kb"], n["peak_kb"]) if mok and nok else "–",
                "%.1f" % (m["cpu_s"] / rrs * 1e6) if mok else "–",
                "%.2f" % (n["cpu_s"] / rrs * 1e6) if nok else "–",
                "%.0f" % (m["peak_kb"] * 1024 / rrs) if mok else "–",
                "%.0f" % (n["peak_kb"] * 1024 / rrs) if nok else "–"))
        out += ["", "Time is wall time to exit (CPU time, user + system, in brackets: "
                "on a busy machine wall time also counts waiting for a CPU); "
                "MiB is peak RSS (`/usr/bin/time` `%M`); "
                "× is Meridian ÷ NSD; per-RR columns divide CPU time and peak RSS by the RR count "
                "(linear loading keeps them flat; CPU, not wall time, so that waiting for a "
                "CPU does not look like growth). Target at 1M RRs: × time ≤ 1.5.", ""]

    serve = by("serve")
    if serve:
        out += ["## Serving RSS: `meridian run` vs `nsd -d`, once each answers the zone's SOA", "",
                "| RRs | Meridian RSS MiB | Meridian peak MiB | NSD PSS MiB (procs) | NSD largest RSS MiB "
                "| × (Meridian RSS ÷ NSD PSS) | Meridian ready s | NSD ready s |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for case in sorted({r["case"] for r in serve}, key=lambda c: int(c[2:])):
            m = next((r for r in serve if r["case"] == case and r["server"] == "meridian"), None)
            n = next((r for r in serve if r["case"] == case and r["server"] == "nsd"), None)
            mok, nok = m and m["status"] == "ok", n and n["status"] == "ok"
            out.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                rrs_label((m or n)["rrs"]),
                mib(m["rss_kb"]) if mok else (m["status"] if m else "–"),
                mib(m["hwm_kb"]) if mok else "–",
                "%s (%d)" % (mib(n["pss_kb"]), n["nproc"]) if nok else (n["status"] if n else "–"),
                mib(n["max_rss_kb"]) if nok else "–",
                ratio(m["rss_kb"], n["pss_kb"]) if mok and nok else "–",
                "%.2f" % m["ready_s"] if m else "–", "%.2f" % n["ready_s"] if n else "–"))
        out += ["", "Meridian is one process: RSS (VmRSS) one second after it first answers, and "
                "its peak (VmHWM, reached while loading). NSD forks (main, xfrd, server): PSS from "
                "`/proc/PID/smaps_rollup` summed over the tree, so copy-on-write pages shared after "
                "the fork count once; also the plain RSS of its largest process. "
                "Target at 1M RRs: × ≤ 2.", ""]

    svc = [r for r in checks if r["case"].startswith("svc")]
    if svc:
        out += ["## Services: `meridian check`", "",
                "| config | time s | peak RSS MiB | CPU s | status |", "|---|---:|---:|---:|---|"]
        for r in svc:
            out.append("| `%s` | %s | %s | %.2f | %s |" % (
                r["case"].split(":", 1)[1], ("%.2f" if r["status"] == "ok" else "≥ %.1f") % r["wall_s"],
                ("" if r["status"] == "ok" else "≥ ") + mib(r["peak_kb"]), r["cpu_s"], r["status"]))
        out += ["", "gen_load.py arguments in the first column. Target: 10,000 services over "
                "distinct 5-subsets of 50 datacenters in < 3 s and < 512 MiB. A run stopped at "
                "its deadline or RSS cap shows lower bounds (≥).", ""]

    rel = by("reload")
    if rel:
        out += ["## Reload under load: two SIGHUPs while dnsperf queries `meridian run`", "",
                "| RRs | offered qps | sent | lost | steady RSS MiB | peak RSS MiB | peak ÷ steady "
                "| after reload MiB | SIGHUP → live s | status |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
        for r in rel:
            out.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                rrs_label(r["rrs"]), fmt_n(r["qps_offered"]), fmt_n(r.get("sent")), fmt_n(r.get("lost")),
                mib(r.get("steady_kb")), mib(r.get("peak_kb")), ratio(r.get("peak_kb"), r.get("steady_kb")),
                " / ".join(mib(r.get("after_%d_kb" % i)) for i in (1, 2) if r.get("after_%d_kb" % i)) or "–",
                " / ".join("%.2f" % s for s in r.get("live_s", [])) or "–", r["status"]))
        out += ["", "RSS (VmRSS) is sampled every 50 ms. Steady: median before the first SIGHUP "
                "(from 1 s after dnsperf starts); peak: maximum over the whole run; after: median "
                "over the seconds after each reload. SIGHUP → live: from sending the signal to the "
                "timestamp of the log line `configuration reloaded`. Lost: dnsperf's count "
                "(timeout 5 s). Targets: lost 0, peak ÷ steady ≤ 2.", ""]

    q = by("qps")
    if q:
        r = q[-1]
        c = r["configs"]
        out += ["## Query CPU at size: `meridian run`, names.txt (A and TXT of existing names)", "",
                "| config | RRs | µs/query (median) | rounds | lost | × small |",
                "|---|---:|---:|---|---:|---:|"]
        med = {k: statistics.median(v["us_per_q"]) if v["us_per_q"] else None for k, v in c.items()}
        for label in ("small", "big"):
            if label not in c:
                continue
            v = c[label]
            out.append("| %s | %s | %s | %s | %s | %s |" % (
                label, rrs_label(v["rrs"]), "%.3f" % med[label] if med[label] else "–",
                ", ".join("%.3f" % x for x in v["us_per_q"]), fmt_n(v["lost"]),
                ratio(med[label], med.get("small"))))
        rate = "dnsperf `-Q %d`" % r["qps_offered"] if r["qps_offered"] else "dnsperf at full speed (no `-Q`)"
        out += ["", "Server CPU (utime + stime over its threads, /proc) ÷ completed queries, %s, "
                "`-c 4 -q 100`, %s s per round, rounds alternating small and big; server on "
                "CPUs %s, dnsperf on CPU %s. Status: %s. Target: big ≤ 1.05 × small." % (
                    rate, r["seconds"], args.server_cpus, args.client_cpu, r["status"]), ""]

    text = "\n".join(out)
    with open(args.md, "w") as f:
        f.write(text)
    print(text)


# ---- main -----------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p, server=True):
        p.add_argument("--results", required=True)
        p.add_argument("--log", required=True)
        p.add_argument("--timeout", type=float, default=180, help="deadline per process, s")
        p.add_argument("--rss-cap-mb", type=int, default=6144)
        if server:
            p.add_argument("--bin", required=True, help="the meridian binary")

    p = sub.add_parser("check")
    common(p, server=False)
    p.add_argument("--case", required=True)
    p.add_argument("--tool", required=True)
    p.add_argument("--rrs", type=int, default=0)
    p.add_argument("command", nargs="+")

    p = sub.add_parser("serve")
    common(p)
    p.add_argument("--server", choices=["meridian", "nsd"], required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--case", required=True)
    p.add_argument("--rrs", type=int, default=0)
    p.add_argument("--settle", type=float, default=1.0)

    p = sub.add_parser("reload")
    common(p)
    p.add_argument("--dir", required=True)
    p.add_argument("--case", required=True)
    p.add_argument("--rrs", type=int, default=0)
    p.add_argument("--qps", type=int, default=20000)
    p.add_argument("--steady", type=float, default=5)
    p.add_argument("--gap", type=float, default=3)
    p.add_argument("--reload-timeout", type=float, default=180)

    p = sub.add_parser("qps")
    common(p)
    p.add_argument("--small", required=True)
    p.add_argument("--small-rrs", type=int, required=True)
    p.add_argument("--big", required=True)
    p.add_argument("--big-rrs", type=int, required=True)
    p.add_argument("--qps", type=int, default=30000, help="dnsperf -Q; 0 = as fast as it can")
    p.add_argument("--seconds", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--server-cpus", default="1")
    p.add_argument("--client-cpu", default="0")
    p.add_argument("--idle-wait", type=float, default=10)

    p = sub.add_parser("report")
    p.add_argument("--results", required=True)
    p.add_argument("--md", required=True)
    p.add_argument("--header", action="append")
    p.add_argument("--server-cpus", default="1")
    p.add_argument("--client-cpu", default="0")

    a = ap.parse_args()
    {"check": cmd_check, "serve": cmd_serve, "reload": cmd_reload, "qps": cmd_qps,
     "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
