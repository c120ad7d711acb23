#!/usr/bin/env python3
"""Interleaved A/B benchmark: several DNS servers, same CPU, alternating bursts (stdlib only).

  ab.py [options] --server NAME=COMMAND --server NAME=COMMAND ... QUERY_FILE...

Why: on a shared virtual machine the CPU cost of the same server drifts by 5-15 %
between runs a minute apart (other tenants, frequency, cache state), which is more
than the difference a comparison such as "signed within 5 % of unsigned" has to
resolve. run.sh measures one server after the other, so that drift lands in the
ratio. ab.py instead starts every server at once, all pinned to the server CPUs
(idle servers cost nothing), and sends short dnsperf bursts to each in turn, round
after round, in alternating order (A B, B A, ...). A burst's µs/query is the server
process tree's CPU time (utime + stime, /proc) over the queries completed; each
round gives a paired ratio against the first server, measured seconds apart, and
the report gives the median of those ratios with their spread (--ratio A/B picks
the pairs; by default every server against the first).

COMMAND is split on spaces; @PORT@ in it becomes the server's UDP port (PORT_BASE,
PORT_BASE+1, ...). Each server is started under `taskset -c SERVER_CPUS`, must
answer a query within 30 s, has every thread re-pinned, gets one warm-up burst per
query file, and is stopped (SIGTERM, then SIGKILL after 10 s) by its own PID.

Output: a Markdown table on stdout (and --md), one JSON line per burst (--out).
"""

import argparse
import json
import os
import re
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import measure  # noqa: E402  (the bench's own /proc and dnsperf helpers)


def port_free(port):
    """True when nothing has 127.0.0.1:port bound over UDP."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def answers(port, timeout=0.5):
    """True when 127.0.0.1:port replies to a query (any reply: the null echo too)."""
    query = struct.pack("!HHHHHH", 0x4D52, 0, 1, 0, 0, 0) + b"\x00\x00\x06\x00\x01"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(query, ("127.0.0.1", port))
            return s.recv(4096)[:2] == query[:2]
        except OSError:
            return False


class Server:
    def __init__(self, name, command, port, cpus, logdir):
        self.name, self.port = name, port
        if not port_free(port):
            raise SystemExit("ab: UDP port %d is in use; pick another --port-base" % port)
        argv = [a.replace("@PORT@", str(port)) for a in command.split()]
        self.log = open(os.path.join(logdir, "%s.log" % name), "w")
        self.proc = subprocess.Popen(["taskset", "-c", cpus] + argv, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while not answers(port) or self.proc.poll() is not None:
            if self.proc.poll() is not None:
                self.log.close()
                raise SystemExit("ab: %s exited during start-up (log %s)" % (name, self.log.name))
            if time.time() > deadline:
                self.stop()
                raise SystemExit("ab: %s not answering on port %d after 30 s" % (name, port))
            time.sleep(0.2)
        self.pids = measure.tree([self.proc.pid])
        for p in self.pids:
            for t in os.listdir("/proc/%d/task" % p):
                try:
                    os.sched_setaffinity(int(t), measure.cpulist(cpus))
                except OSError:
                    pass

    def ticks(self):
        got = [measure.cpu_ticks(p) for p in self.pids]
        if got[0] is None:
            raise SystemExit("ab: %s (pid %d) died" % (self.name, self.proc.pid))
        return sum(t for t in got if t is not None)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def burst(server, queries, args):
    """One dnsperf burst; (µs of server CPU per completed query, completed qps)."""
    cmd = ["taskset", "-c", args.client_cpu, "dnsperf", "-B", "-d", queries, "-s", "127.0.0.1",
           "-p", str(server.port), "-l", str(args.seconds), "-c", "4", "-q", "100", "-T", "1",
           "-t", "2"]
    if args.qps:
        cmd += ["-Q", str(args.qps)]
    t0 = server.ticks()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True,
                             timeout=args.seconds + 30).stdout   # dnsperf -l bounds it
    except subprocess.TimeoutExpired:
        raise SystemExit("ab: dnsperf overran its time limit")
    t1 = server.ticks()
    stats = {}
    for k in ("completed", "runtime_s"):
        m = re.search(measure.STAT_RE[k], out)
        if not m:
            raise SystemExit("ab: no '%s' in dnsperf's output:\n%s" % (k, out))
        stats[k] = float(m.group(1))
    if stats["completed"] == 0:
        raise SystemExit("ab: %s completed no queries" % server.name)
    return 1e6 * (t1 - t0) / measure.HZ / stats["completed"], stats["completed"] / stats["runtime_s"]


def spread(values):
    """(median, first quartile, third quartile); min and max for under 4 values."""
    if len(values) < 4:
        return statistics.median(values), min(values), max(values)
    q = statistics.quantiles(values, n=4)
    return statistics.median(values), q[0], q[2]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("files", nargs="+", metavar="QUERY_FILE", help="dnsperf -B query files")
    ap.add_argument("--server", action="append", required=True, metavar="NAME=COMMAND",
                    help="a server; the first is the baseline of the ratios (repeat, 2 or more)")
    ap.add_argument("--rounds", type=int, default=10, help="bursts per server and file (default 10)")
    ap.add_argument("--seconds", type=int, default=2, help="length of a burst (default 2, dnsperf -l)")
    ap.add_argument("--qps", type=int, default=0, help="dnsperf -Q (default 0: as fast as it goes)")
    ap.add_argument("--port-base", type=int, default=5350)
    ap.add_argument("--server-cpus", default=os.environ.get("SERVER_CPUS", "1"))
    ap.add_argument("--client-cpu", default=os.environ.get("CLIENT_CPU", "0"))
    ap.add_argument("--logs", default=".", help="directory for the servers' logs (default .)")
    ap.add_argument("--out", help="JSON-lines file, one line per burst (appended)")
    ap.add_argument("--md", help="also write the table here (appended)")
    ap.add_argument("--ratio", action="append", default=[], metavar="A/B",
                    help="report A's µs/query ÷ B's, paired per round (repeat; default: "
                         "every server ÷ the first)")
    ap.add_argument("--label", default="", help="a label for the tables' caption")
    args = ap.parse_args()
    if len(args.server) < 2 or any("=" not in s for s in args.server):
        ap.error("give two or more --server NAME=COMMAND")
    if not 1 <= args.rounds <= 100 or not 1 <= args.seconds <= 60:
        ap.error("--rounds must be 1..100 and --seconds 1..60")
    if args.qps < 0 or not 1024 <= args.port_base <= 65000:
        ap.error("--qps must be 0 or more and --port-base 1024..65000")
    if measure.cpulist(args.server_cpus) & measure.cpulist(args.client_cpu):
        ap.error("the server CPUs and the client CPU overlap")
    names = [s.split("=", 1)[0] for s in args.server]
    if len(set(names)) != len(names) or not all(re.fullmatch(r"[A-Za-z0-9._-]+", n) for n in names):
        ap.error("server names must differ and be letters, digits, '.', '_' or '-'")
    pairs = [r.split("/", 1) for r in args.ratio] or [[n, names[0]] for n in names[1:]]
    for pair in pairs:
        if len(pair) != 2 or not set(pair) <= set(names):
            ap.error("--ratio wants A/B with two of the server names %s" % ", ".join(names))
    labels = [os.path.basename(p).rsplit(".", 1)[0] for p in args.files]
    labels = ["%s/%s" % (os.path.basename(os.path.dirname(os.path.abspath(p))), f)
              if labels.count(f) > 1 else f        # e.g. queries/mixed.bin and queries-do/mixed.bin
              for p, f in zip(args.files, labels)]
    if len(set(labels)) != len(labels):
        ap.error("two query files would have the same label: %s" % ", ".join(labels))
    os.makedirs(args.logs, exist_ok=True)
    # SIGTERM unwinds like Ctrl-C, so that `finally` stops the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    servers = []
    try:
        for i, spec in enumerate(args.server):
            name, command = spec.split("=", 1)
            servers.append(Server(name, command, args.port_base + i, args.server_cpus, args.logs))
        rows, ratio_rows = [], []
        for path, file in zip(args.files, labels):
            for s in servers:                       # warm-up, not recorded
                burst(s, path, args)
            got = {s.name: [] for s in servers}
            for r in range(args.rounds):
                for s in (servers if r % 2 == 0 else servers[::-1]):
                    us, qps = burst(s, path, args)
                    got[s.name].append((us, qps))
                    if args.out:
                        with open(args.out, "a") as f:
                            f.write(json.dumps({"file": file, "server": s.name, "round": r,
                                                "offered_qps": args.qps or "max",
                                                "us_per_q": us, "qps": qps}) + "\n")
            for s in servers:
                us = [u for u, _ in got[s.name]]
                rows.append((file, s.name, spread(us), statistics.median(q for _, q in got[s.name])))
            for a, b in pairs:
                # A burst can use no whole clock tick (a slow --qps): no ratio then.
                ratios = [u / v for (u, _), (v, _) in zip(got[a], got[b]) if v > 0]
                if not ratios:
                    raise SystemExit("ab: %s used no measurable CPU; use longer bursts" % b)
                ratio_rows.append((file, "%s ÷ %s" % (a, b), spread(ratios), ratios))
    finally:
        for s in servers:
            s.stop()

    mode = "%d qps offered" % args.qps if args.qps else "saturation"
    iqr = "IQR" if args.rounds >= 4 else "range"
    lines = ["", "%s%s, %d rounds of %d s per server, servers on CPU %s, dnsperf on CPU %s" % (
        args.label + ": " if args.label else "", mode, args.rounds, args.seconds,
        args.server_cpus, args.client_cpu), "",
        "| file | server | µs/query (median, %s) | qps (median) |" % iqr, "|---|---|---:|---:|"]
    for file, name, (m, lo, hi), qps in rows:
        lines.append("| %s | %s | %.3f (%.3f–%.3f) | %.0f |" % (file, name, m, lo, hi, qps))
    lines += ["", "| file | CPU per query, paired by round | median | %s | every round |" % iqr,
              "|---|---|---:|---:|---|"]
    for file, pair, (m, lo, hi), ratios in ratio_rows:
        lines.append("| %s | %s | %.3f | %.3f–%.3f | %s |"
                     % (file, pair, m, lo, hi, " ".join("%.2f" % r for r in ratios)))
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.md:
        with open(args.md, "a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
