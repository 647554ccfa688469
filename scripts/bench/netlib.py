"""Shared helpers for the client/server harnesses scripts/bench/echo and
scripts/bench/http (lib.py holds what every harness shares).

Each implementation is a server program (scripts/bench/peers/) that listens
on 127.0.0.1, port 0, and prints its port ("port=N", or braid's examples'
"listening on port N"). Per run the harness starts it afresh, drives it with
a load client, stops it; then starts it again for the memory reading:
echo_client opens 10,000 connections, one round trip each, and the server's
VmRSS (from /proc/PID/status) is read before and after. Server and client are
pinned to different cores (taskset -c 0 / -c 1) unless --no-pin.
"""

import argparse
import os
import re
import resource
import selectors
import shutil
import signal
import statistics
import subprocess
import tempfile
import time

import lib

say = lib.say
PORT_LINE = re.compile(rb"port[= ](\d+)")
SERVER_CPU, CLIENT_CPU = "0", "1"


# ---------------------------------------------------------------- arguments

def parse_args(description, duration, warmup):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--runs", type=int, default=3, help="timed runs per implementation (default 3)")
    p.add_argument("--duration", type=float, default=duration,
                   help="seconds measured per case (default %g)" % duration)
    p.add_argument("--warmup", type=float, default=warmup,
                   help="seconds of load before each measurement, not counted (default %g)"
                        % warmup)
    p.add_argument("--idle", type=int, default=10000,
                   help="idle connections for the memory reading (default 10000; 0: skip)")
    p.add_argument("--quick", action="store_true",
                   help="1 run, short cases, 1,000 idle connections: checks that everything "
                        "works; the figures are not measurements")
    p.add_argument("--no-build", action="store_true",
                   help="use build-release/braid as it is (do not run cmake)")
    p.add_argument("--braid", metavar="PATH", help="the braid executable to measure "
                   "(default: build-release/braid, built first unless --no-build)")
    p.add_argument("--also", action="append", default=[], metavar="NAME=PATH",
                   help="also measure another braid executable under NAME (e.g. "
                        "braid-old=/tmp/old/braid: a build to compare with); repeatable")
    p.add_argument("--no-pin", action="store_true",
                   help="do not pin the server to core 0 and the client to core 1")
    p.add_argument("--only", metavar="NAMES",
                   help="comma-separated implementations to run (default: all)")
    p.add_argument("--timeout", type=float, default=120, help="seconds per step (default 120)")
    p.add_argument("--max-other", type=float, default=0.2, metavar="CORES",
                   help="a run during which other processes kept more than this many cores "
                        "busy (from /proc/stat) is disturbed and run again (default 0.2)")
    p.add_argument("--retries", type=int, default=4,
                   help="times a disturbed run is run again, 3 s apart (default 4); "
                        "one still disturbed is left out of the medians")
    a = p.parse_args()
    if a.quick:
        a.runs, a.duration, a.warmup = 1, min(a.duration, 0.3), min(a.warmup, 0.1)
        a.idle = min(a.idle, 1000)
    if a.runs < 1 or a.duration <= 0 or a.warmup < 0 or a.idle < 0:
        p.error("--runs and --duration must be > 0, --warmup and --idle >= 0")
    for extra in a.also:
        if "=" not in extra or not extra.split("=", 1)[0]:
            p.error("--also wants NAME=PATH, got %r" % extra)
    a.pin = not a.no_pin and shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    return a


def raise_nofile():
    """Raise the soft descriptor limit (inherited by every peer); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


# ------------------------------------------------------------------ building

def build_client():
    """Compile peers/echo_client.c (no libevent) into build-release/bench/."""
    src = os.path.join(lib.PEERS, "echo_client.c")
    out = os.path.join(lib.PEER_BIN, "echo_client")
    if not shutil.which("cc"):
        return None, "no C compiler (cc)"
    os.makedirs(lib.PEER_BIN, exist_ok=True)
    argv = ["cc", *lib.C_FLAGS, "-o", out, src]
    rc, msg = lib.sh(argv)
    if rc != 0:
        return None, "`%s` failed:\n%s" % (" ".join(argv), msg.strip())
    return out, " ".join(["cc", *lib.C_FLAGS])


def find_braid(args):
    if args.braid:
        path = os.path.realpath(args.braid)
        return (path, "ok") if os.access(path, os.X_OK) else (None, "%s not found" % path)
    return lib.build_braid(args.no_build)


def also_peers(args, script):
    """Peers for --also NAME=PATH: another braid executable running script."""
    peers, notes = [], []
    for extra in args.also:
        name, path = extra.split("=", 1)
        path = os.path.realpath(path)
        if os.access(path, os.X_OK):
            peers.append(Peer(name, [path, script, "0"]))
            notes.append((name, braid_note(path, "ok")))
        else:
            peers.append(Peer(name, missing="%s not found" % path))
            notes.append((name, "MISSING: %s not found" % path))
    return peers, notes


def braid_note(path, note):
    if note != "ok":
        return "MISSING: " + note.replace("\n", "\n          ")
    cache = os.path.join(os.path.dirname(path), "CMakeCache.txt")
    btype, flags = "?", ""
    try:
        with open(cache) as f:
            kv = dict(line.strip().split("=", 1) for line in f
                      if "=" in line and not line.startswith(("#", "//")))
        btype = kv.get("CMAKE_BUILD_TYPE:STRING", "?")
        flags = " ".join(x for x in (kv.get("CMAKE_C_FLAGS:STRING", ""),
                                     kv.get("CMAKE_C_FLAGS_%s:STRING" % btype.upper(), "")) if x)
    except OSError:
        pass
    return "%s (%s, CMAKE_BUILD_TYPE=%s, C flags: %s)" % (
        os.path.relpath(path, lib.REPO), lib.first_line([path, "-v"]) or "?", btype, flags)


def check_wrk():
    """wrk, installed with apt-get (Debian package wrk) only when missing."""
    wrk = shutil.which("wrk")
    if not wrk and shutil.which("apt-get"):
        say("wrk is missing: apt-get install -y wrk")
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        lib.sh(sudo + ["apt-get", "install", "-y", "wrk"])
        wrk = shutil.which("wrk")
    if not wrk:
        return None, "wrk not found (apt-get install wrk)"
    return wrk, (lib.first_line([wrk, "--version"]) or "wrk").split(" Copyright")[0]


def commit():
    """The checked-out commit, read from .git without running git."""
    git = os.path.join(lib.REPO, ".git")
    try:
        with open(os.path.join(git, "HEAD")) as f:
            head = f.read().strip()
        if not head.startswith("ref: "):
            return head[:9]
        ref = head[5:]
        path = os.path.join(git, ref)
        if os.path.exists(path):
            with open(path) as f:
                return f.read().strip()[:9]
        with open(os.path.join(git, "packed-refs")) as f:
            for line in f:
                if line.strip().endswith(" " + ref):
                    return line.split()[0][:9]
    except OSError:
        pass
    return "unknown"


def header(title, args, lines):
    rc, lev = lib.sh(["pkg-config", "--modversion", "libevent"])
    say("=" * 78)
    say(title)
    say("=" * 78)
    rows = [("commit", commit() + " (the working tree may differ)"),
            *lines,
            ("libevent", (lev.strip() if rc == 0 else "?") + " (pkg-config)"),
            ("CPU", lib._cpu()),
            ("cores", "the machine has 2 cores, shared by the server and its load client; "
                      + ("server pinned to core %s, client to core %s (taskset)"
                         % (SERVER_CPU, CLIENT_CPU) if args.pin else "not pinned")),
            ("runs", "%d run(s) per implementation, interleaved A B C ... A B C; each run "
                     "starts the server afresh; median, min and max reported%s" % (
                         args.runs, "; QUICK MODE: figures are not measurements"
                         if args.quick else ""))]
    for label, text in rows:
        say("%-9s %s" % (label + ":", text))
    say("")


# ------------------------------------------------------------------ running

class Peer(lib.Peer):
    """An implementation: its server command line."""

    def __init__(self, name, argv=None, missing=None):
        super().__init__(name, argv, missing)
        self.disturbed = 0  # runs repeated because the machine was busy
        self.left_out = 0   # still disturbed after the retries: not in the medians
        self.failed_once = 0  # runs that failed and were run again


def pinned(argv, cpu, args):
    return ["taskset", "-c", cpu] + list(argv) if args.pin else list(argv)


class Server:
    """A running server: started, its port read, stopped."""

    def __init__(self, peer, args):
        self.out = tempfile.TemporaryFile()
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(pinned(peer.argv, SERVER_CPU, args), stdin=subprocess.DEVNULL,
                                     stdout=self.out, stderr=self.err, cwd=lib.REPO)
        self.port = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            self.out.seek(0)
            m = PORT_LINE.search(self.out.read())
            if m:
                self.port = int(m.group(1))
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("server did not print its port: " + self.stderr())

    def stderr(self):
        self.err.seek(0)
        text = self.err.read().decode("utf-8", "replace").strip()
        return text[-1500:] if text else "(no stderr)"

    def rss_kb(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def check_alive(self):
        if self.proc.poll() is not None:
            raise RuntimeError("server exited (%s): %s" % (self.proc.returncode, self.stderr()))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _busy_jiffies():
    """Busy time of the whole machine (all CPUs), in clock ticks: user, nice,
    system, irq and steal (time the hypervisor gave to others). Not softirq:
    the loopback traffic of the run itself is processed there."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]] + [0] * 8
    return v[0] + v[1] + v[2] + v[5] + v[7]


def _proc_jiffies(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[11]) + int(rest[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0


class OtherLoad:
    """CPU used by processes other than the server and the load client while
    measuring (cores, averaged over the wall time): other helpers' builds and
    tests share the machine's two cores."""

    HZ = os.sysconf("SC_CLK_TCK")

    def __init__(self, server_pid):
        self.pid = server_pid
        self.t0 = time.monotonic()
        self.busy0 = _busy_jiffies()
        self.srv0 = _proc_jiffies(server_pid)
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cl0 = ru.ru_utime + ru.ru_stime

    def server_cores(self):
        """The server's CPU use over the same time (1.0 = one core busy)."""
        wall = time.monotonic() - self.t0
        return (_proc_jiffies(self.pid) - self.srv0) / self.HZ / wall if wall > 0 else 0.0

    def cores(self):
        wall = time.monotonic() - self.t0
        busy = (_busy_jiffies() - self.busy0) / self.HZ
        srv = (_proc_jiffies(self.pid) - self.srv0) / self.HZ
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        cl = ru.ru_utime + ru.ru_stime - self.cl0
        return max(0.0, (busy - srv - cl) / wall) if wall > 0 else 0.0


def run_client(argv, args):
    """Run a load client to completion; its stdout, or RuntimeError."""
    try:
        p = subprocess.run(pinned(argv, CLIENT_CPU, args), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError("load client timed out after %gs" % args.timeout)
    if p.returncode != 0:
        raise RuntimeError("load client: exit %d: %s" % (p.returncode, p.stderr.strip()[-1500:]))
    return p.stdout


def key_values(text):
    vals = {}
    for line in text.splitlines():
        m = lib.KEY_VALUE.match(line.strip())
        if m:
            vals[m.group(1)] = float(m.group(2))
    return vals


def idle_memory(client, peer, args, http=False):
    """Bytes per idle connection: (VmRSS with N open - VmRSS before) / N."""
    n = args.idle
    srv = Server(peer, args)
    cl = None
    try:
        cl = subprocess.Popen(pinned([client, "idle", str(srv.port), str(n)] + (["http"] if http else []),
                                     CLIENT_CPU, args),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
        sel = selectors.DefaultSelector()
        sel.register(cl.stdout, selectors.EVENT_READ)

        def expect(word):
            if not sel.select(args.timeout):
                raise RuntimeError("idle client: no %r within %gs" % (word, args.timeout))
            line = cl.stdout.readline().strip()
            if line != word:
                cl.wait()
                raise RuntimeError("idle client: %s" % (cl.stderr.read().strip()[-1500:]
                                                        or "expected %r, got %r" % (word, line)))

        expect("warm")
        srv.check_alive()
        before = srv.rss_kb()
        cl.stdin.write("\n")
        cl.stdin.flush()
        expect("ready")
        srv.check_alive()
        after = srv.rss_kb()
        cl.stdin.write("\n")
        cl.stdin.flush()
        cl.wait(args.timeout)
        return (after - before) * 1024.0 / n
    finally:
        if cl and cl.poll() is None:
            cl.kill()
            cl.wait()
        srv.stop()


def run_rounds(peers, args, run_once, show):
    """Run every runnable peer once per round, `args.runs` rounds; print each run.

    run_once(peer) returns a dict that includes other_load (cores used by
    other processes while measuring); a run above --max-other is printed as
    disturbed and run again, at most --retries times (one still disturbed
    is left out of the medians).
    A run that fails (RuntimeError) is run again once; a second failure
    marks the peer failed, and it runs no more.
    """
    width = max([len(p.name) for p in peers] + [4])
    for r in range(args.runs):
        label = "run %d/%d" % (r + 1, args.runs)
        for p in peers:
            if not p.ok:
                continue
            for attempt in range(args.retries + 1):
                try:
                    vals = run_once(p)
                except RuntimeError as e:
                    if attempt == 0 and args.retries > 0:
                        # once: a peer slow to start on a loaded machine
                        # (Twisted's import) should not lose its whole row
                        say("%-9s %-*s FAILED: %s: run again" % (label, width, p.name, e))
                        p.failed_once += 1
                        time.sleep(3)
                        continue
                    p.failed = str(e)
                    say("%-9s %-*s FAILED: %s" % (label, width, p.name, e))
                    break
                line = "%-9s %-*s %s  other=%.2f" % (label, width, p.name, "  ".join(
                    ("%s=" + fmt) % (k, vals[k]) for k, fmt in show if k in vals),
                    vals.get("other_load", 0))
                busy = vals.get("other_load", 0) > args.max_other
                if busy and attempt < args.retries:
                    say(line + "  DISTURBED: run again")
                    p.disturbed += 1
                    time.sleep(3)  # let the other load pass
                    continue
                if busy:
                    say(line + "  DISTURBED: left out of the medians")
                    p.left_out += 1
                else:
                    say(line)
                    p.runs.append(vals)
                break
    say("")
    noisy = [p for p in peers if p.disturbed or p.left_out]
    if noisy:
        say("runs disturbed by other processes (more than %.2f cores busy): %s" % (
            args.max_other, ", ".join("%s %d repeated, %d left out" % (
                p.name, p.disturbed, p.left_out) for p in noisy)))
        say("")
    again = [p for p in peers if p.failed_once]
    if again:
        say("runs that failed and were run again: %s" % ", ".join(
            "%s %d" % (p.name, p.failed_once) for p in again))
        say("")


# ------------------------------------------------------------------ reports

def med(peer, key):
    if not (peer.ok and peer.runs) or key not in peer.runs[0]:
        return None
    return statistics.median(v[key] for v in peer.runs)


def spread(peer, key):
    xs = [v[key] for v in peer.runs]
    return statistics.median(xs), min(xs), max(xs)


def fmt_num(v):
    if v is None:
        return "-"
    if v >= 10000:
        return "%.1fk" % (v / 1000)
    if v >= 100:
        return "%.0f" % v
    return "%.1f" % v


def fmt_cores(v):
    return "-" if v is None else "%.2f" % v


def table(title, peers, columns, note=None, fmt=fmt_num):
    """Medians: one row per peer, one column per (label, key)."""
    width = max([len(p.name) for p in peers] + [14])
    say(title)
    say("  %-*s" % (width, "implementation") + "".join(" %11s" % c for c, _ in columns))
    for p in peers:
        if p.ok and p.runs:
            say("  %-*s" % (width, p.name) + "".join(" %11s" % fmt(med(p, k))
                                                     for _, k in columns))
        else:
            say("  %-*s (not run: %s)" % (width, p.name,
                                          (p.missing or (p.failed or "no runs").splitlines()[0])))
    if note:
        say("  " + note)
    say("")


def spread_table(title, peers, columns):
    """median [min - max] of every cell: how noisy each series was."""
    width = max([len(p.name) for p in peers] + [14])
    say(title)
    say("  %-*s" % (width, "implementation") + "".join(" %21s" % c for c, _ in columns))
    for p in peers:
        if not (p.ok and p.runs):
            continue
        cells = []
        for _, k in columns:
            if k in p.runs[0]:
                m, lo, hi = spread(p, k)
                cells.append("%s [%s-%s]" % (fmt_num(m), fmt_num(lo), fmt_num(hi)))
            else:
                cells.append("-")
        say("  %-*s" % (width, p.name) + "".join(" %21s" % c for c in cells))
    say("")


def ratio_table(title, subject, bases, columns, note):
    """subject's median / each base's median, per column."""
    width = max([len(n) for n, _ in bases] + [14])
    say(title)
    say("  %-*s" % (width, "") + "".join(" %11s" % c for c, _ in columns))
    for name, base in bases:
        if all(base(k) is None for _, k in columns):
            continue  # not run
        cells = []
        for _, k in columns:
            a, b = med(subject, k), base(k)
            cells.append("%.2fx" % (a / b) if a is not None and b else "-")
        say("  %-*s" % (width, "vs " + name) + "".join(" %11s" % c for c in cells))
    say("  " + note)
    say("")


def best_of(*peers):
    """A baseline: per key, the best (highest) median of these peers."""
    def base(k):
        vals = [m for m in (med(p, k) for p in peers) if m is not None]
        return max(vals) if vals else None
    return base


def one(peer):
    return lambda k: med(peer, k)
