"""Shared helpers for the scripts/bench harnesses (timers, deferred).

A harness builds what it needs, checks which peers can run, prints a header
(commit, flags, versions, CPU), runs every implementation interleaved
(A B C A B C ...) with warm-ups discarded, prints each run, then a table per
metric and one line per target.

Peers are separate programs under scripts/bench/peers/. Each times its own
phases with a monotonic clock (setup is untimed), checks that the work really
happened, and prints machine-readable `key=value` lines on stdout. A peer that
exits non-zero has failed its check: the harness prints its stderr, drops it
from later runs and exits 1 at the end.
"""

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.realpath(__file__))
REPO = os.path.realpath(os.path.join(HERE, "..", ".."))
PEERS = os.path.join(HERE, "peers")
# BRAID_BENCH_BUILD: another Release tree (default build-release/ in the repo)
BUILD = os.environ.get("BRAID_BENCH_BUILD") or os.path.join(REPO, "build-release")
BRAID = os.path.join(BUILD, "braid")
PEER_BIN = os.path.join(BUILD, "bench")  # compiled peers; build-*/ is ignored by git
PYTHON = "/usr/bin/python3"  # Debian's, which has python3-twisted; not PATH's
C_FLAGS = ["-O2"]
KEY_VALUE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(\S+)$")


def say(*parts):
    print(*parts, flush=True)


def sh(argv, **kw):
    """Run argv, return (exit status, stdout + stderr); never raises."""
    try:
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, **kw)
        return p.returncode, p.stdout
    except (OSError, subprocess.SubprocessError) as e:
        return 127, str(e)


def first_line(argv):
    rc, out = sh(argv)
    return out.strip().splitlines()[0] if rc == 0 and out.strip() else None


# ---------------------------------------------------------------- arguments

def parse_args(description, default_n):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--runs", type=int, help="timed runs per implementation (default 5)")
    p.add_argument("--warmup", type=int, help="discarded warm-up runs (default 1)")
    p.add_argument("--quick", action="store_true",
                   help="N/10, 1 run, no warm-up: checks that everything works; "
                        "the figures are not measurements")
    p.add_argument("-n", type=int, help="operations per case (default %d)" % default_n)
    p.add_argument("--no-build", action="store_true",
                   help="use build-release/braid as it is (do not run cmake)")
    p.add_argument("--taskset", metavar="CPUS",
                   help="run every peer under `taskset -c CPUS` (default: not pinned)")
    p.add_argument("--only", metavar="NAMES",
                   help="comma-separated implementations to run (default: all)")
    p.add_argument("--timeout", type=float, default=600, help="seconds per run (default 600)")
    a = p.parse_args()
    if a.n is None:
        a.n = default_n // 10 if a.quick else default_n
    if a.runs is None:
        a.runs = 1 if a.quick else 5
    if a.warmup is None:
        a.warmup = 0 if a.quick else 1
    if a.n < 1 or a.runs < 1 or a.warmup < 0:
        p.error("-n and --runs must be >= 1, --warmup >= 0")
    return a


# ------------------------------------------------------------------ building

def build_braid(no_build):
    """Build the Release braid; returns (path or None, note)."""
    if not no_build:
        if not os.path.exists(os.path.join(REPO, "CMakeLists.txt")):
            return None, "no CMakeLists.txt in %s" % REPO
        for argv in (["cmake", "-S", REPO, "-B", BUILD, "-DCMAKE_BUILD_TYPE=Release"],
                     ["cmake", "--build", BUILD, "-j2"]):
            rc, out = sh(argv)
            if rc != 0:
                tail = "\n".join(out.strip().splitlines()[-15:])
                return None, "`%s` failed:\n%s" % (" ".join(argv), tail)
    if not os.access(BRAID, os.X_OK):
        return None, "%s not found" % BRAID
    return BRAID, "ok"


def build_c(name, pkgs=("libevent",)):
    """Compile peers/NAME.c into build-release/bench/NAME; returns (path or None, note)."""
    src = os.path.join(PEERS, name + ".c")
    out = os.path.join(PEER_BIN, name)
    if not shutil.which("cc"):
        return None, "no C compiler (cc)"
    rc, flags = sh(["pkg-config", "--cflags", "--libs", *pkgs])
    if rc != 0:
        return None, "pkg-config %s: %s" % (" ".join(pkgs), flags.strip())
    os.makedirs(PEER_BIN, exist_ok=True)
    argv = ["cc", *C_FLAGS, "-o", out, src, *flags.split()]
    rc, msg = sh(argv)
    if rc != 0:
        return None, "`%s` failed:\n%s" % (" ".join(argv), msg.strip())
    return out, " ".join(["cc", *C_FLAGS, *flags.split()])


def build_lua_module(name, module):
    """Compile peers/NAME.c into build-release/bench/MODULE.so, a C module for
    Debian's lua5.4; returns (the directory or None, note)."""
    src = os.path.join(PEERS, name + ".c")
    out = os.path.join(PEER_BIN, module + ".so")
    if not shutil.which("cc"):
        return None, "no C compiler (cc)"
    rc, flags = sh(["pkg-config", "--cflags", "lua5.4"])
    if rc != 0:
        return None, "pkg-config lua5.4: %s" % flags.strip()
    os.makedirs(PEER_BIN, exist_ok=True)
    argv = ["cc", *C_FLAGS, "-shared", "-fPIC", "-o", out, src, *flags.split()]
    rc, msg = sh(argv)
    if rc != 0:
        return None, "`%s` failed:\n%s" % (" ".join(argv), msg.strip())
    return PEER_BIN, " ".join(["cc", *C_FLAGS, "-shared", "-fPIC", *flags.split()])


# ------------------------------------------------------------- tool checks

def check_node():
    node = shutil.which("node")
    if not node:
        return None, "node not found on PATH"
    return node, first_line([node, "--version"])


def check_twisted():
    if not os.access(PYTHON, os.X_OK):
        return None, "%s not found" % PYTHON
    rc, out = sh([PYTHON, "-c",
                  "import sys, twisted; from twisted.internet import reactor; "
                  "print(sys.version.split()[0], twisted.__version__, type(reactor).__name__)"])
    if rc != 0:
        return None, "Twisted not importable by %s (apt-get install python3-twisted): %s" % (
            PYTHON, out.strip().splitlines()[-1] if out.strip() else "")
    py, tw, reactor = out.split()
    return PYTHON, "Python %s, Twisted %s, %s" % (py, tw, reactor)


def check_lua(need_luv=False):
    lua = shutil.which("lua5.4")
    if not lua:
        return None, "lua5.4 not found"
    code = 'io.write(_VERSION)'
    if need_luv:
        code = 'local uv = require "luv"; io.write(_VERSION, ", luv ", uv.version_string())'
    rc, out = sh([lua, "-e", code])
    if rc != 0:
        return None, ("luv not loadable by lua5.4 (apt-get install lua-luv)" if need_luv
                      else out.strip())
    return lua, (first_line([lua, "-v"]) or out).split("  Copyright")[0] + (
        ", luv " + out.split("luv ")[1] if need_luv else "")


# ------------------------------------------------------------------- header

def _cmake_cache(key):
    try:
        with open(os.path.join(BUILD, "CMakeCache.txt")) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return line.split("=", 1)[1].strip()
    except OSError:
        pass
    return None


def _cpu():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return "%s, %d logical CPUs, Linux %s" % (model, os.cpu_count() or 0, platform.release())


def header(title, args, braid_note, lines):
    """Print the header; `lines` is a list of (label, text)."""
    rc, out = sh(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
    commit = out.strip() if rc == 0 else "uncommitted"
    if rc == 0 and sh(["git", "-C", REPO, "diff", "--quiet", "HEAD", "--"])[0] != 0:
        commit += " + uncommitted changes"
    if braid_note == "ok":
        btype = _cmake_cache("CMAKE_BUILD_TYPE") or "?"
        bflags = " ".join(x for x in (_cmake_cache("CMAKE_C_FLAGS"),
                                      _cmake_cache("CMAKE_C_FLAGS_" + btype.upper())) if x)
        braid = "%s (%s, CMAKE_BUILD_TYPE=%s, C flags: %s)" % (
            os.path.relpath(BRAID, REPO), first_line([BRAID, "-v"]) or "?", btype, bflags)
    else:
        braid = "MISSING: " + braid_note.replace("\n", "\n          ")
    rc, lev = sh(["pkg-config", "--modversion", "libevent"])
    say("=" * 78)
    say(title)
    say("=" * 78)
    rows = [("commit", commit), ("braid", braid),
            ("libevent", (lev.strip() if rc == 0 else "?") + " (pkg-config)"),
            *lines,
            ("CPU", _cpu()),
            ("cores", "the machine has 2 cores; every process of a run shares them "
                      "(runs are sequential%s)" % (
                          ", each pinned with taskset -c " + args.taskset if args.taskset
                          else "; peers are not pinned")),
            ("runs", "n=%d per case; %d timed run(s) after %d discarded warm-up(s), "
                     "interleaved A B C ... A B C%s" % (
                         args.n, args.runs, args.warmup,
                         "; QUICK MODE: figures are not measurements" if args.quick else ""))]
    for label, text in rows:
        say("%-9s %s" % (label + ":", text))
    say("")


# ------------------------------------------------------------------ running

class Peer:
    """One implementation: a name, the command that runs it, and whether it can."""

    def __init__(self, name, argv=None, missing=None):
        self.name = name
        self.argv = argv
        self.missing = missing  # why it cannot run, or None
        self.failed = None      # the error of a run that failed its check
        self.runs = []          # dicts of floats, one per timed run

    @property
    def ok(self):
        return self.missing is None and self.failed is None


def run_peer(peer, args, required):
    argv = list(peer.argv)
    if args.taskset:
        argv = ["taskset", "-c", args.taskset] + argv
    try:
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=args.timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return None, "timed out after %gs" % args.timeout
    except OSError as e:
        return None, str(e)
    vals = {}
    for line in p.stdout.splitlines():
        m = KEY_VALUE.match(line.strip())
        if m:
            try:
                vals[m.group(1)] = float(m.group(2))
            except ValueError:
                pass
    if p.returncode != 0:
        return None, "exit %d: %s" % (p.returncode, (p.stderr.strip() or p.stdout.strip())[-2000:])
    missing = [k for k in required if k not in vals]
    if missing:
        return None, "output lacks %s; stdout:\n%s\nstderr:\n%s" % (
            ", ".join(missing), p.stdout.strip()[-1000:], p.stderr.strip()[-1000:])
    return vals, None


def run_all(peers, args, required, show, check=None):
    """Run the runnable peers interleaved; print every run.

    `show` is a list of (key, format) printed per run; `check(peer, vals)`
    may return an error string to fail the run (e.g. a workload mismatch).
    """
    active = [p for p in peers if p.ok]
    width = max([len(p.name) for p in peers] + [4])
    total = args.warmup + args.runs
    for r in range(total):
        label = "warm-up" if r < args.warmup else "run %d/%d" % (r - args.warmup + 1, args.runs)
        for p in active:
            if not p.ok:
                continue
            vals, err = run_peer(p, args, required)
            if err is None and check:
                err = check(p, vals)
            if err:
                p.failed = err
                say("%-9s %-*s FAILED: %s" % (label, width, p.name, err))
                continue
            say("%-9s %-*s %s" % (label, width, p.name,
                                  "  ".join(("%s=" + fmt) % (k, vals[k]) for k, fmt in show)))
            if r >= args.warmup:
                p.runs.append(vals)
    say("")


def summary(peer, key):
    xs = [v[key] for v in peer.runs]
    return statistics.median(xs), min(xs), max(xs)


def table(title, peers, key, fmt, baselines, kind, note=None):
    """Print median/min/max of `key` per peer and ratios against `baselines`.

    kind "time": ratio = this / baseline (lower is better);
    kind "rate": ratio = baseline time / this time, i.e. the rate ratio
    (higher is better).
    """
    rows = [p for p in peers if p.ok and p.runs]
    bases = [b for b in baselines if b.ok and b.runs]
    width = max([len(p.name) for p in peers] + [14])
    say(title)
    head = "  %-*s %10s %10s %10s" % (width, "implementation", "median", "min", "max")
    for b in bases:
        head += " %12s" % ("vs " + b.name)[:12]
    if kind == "rate":
        head += " %12s" % "ops/s"
    say(head)
    for p in rows:
        med, lo, hi = summary(p, key)
        line = "  %-*s %10s %10s %10s" % (width, p.name, fmt % med, fmt % lo, fmt % hi)
        for b in bases:
            bmed = summary(b, key)[0]
            line += " %12s" % ratio_text(ratio(med, bmed, kind))
        if kind == "rate":
            line += " %12s" % ("%.3gM" % (p.runs[0].get("n", 0) / med / 1e6) if med > 0 else "-")
        say(line)
    for p in peers:
        if not p.ok:
            say("  %-*s %s" % (width, p.name, "(not run: %s)" % (p.missing or "failed a run")))
    if bases:
        say("  " + (note or ("vs X = this median / X's median (lower is better)" if kind == "time"
                             else "vs X = X's median time / this median time = rate ratio "
                                  "(higher is better)")))
    say("")


def ratio(value, base, kind):
    if kind == "time":
        return value / base if base > 0 else float("inf")
    return base / value if value > 0 else float("inf")


def ratio_text(r):
    if r == float("inf"):
        return "inf"
    return "%.2fx" % r if r < 100 else "%.0fx" % r


def target(name, measured, goal, passed, why=None):
    """Print `target NAME: MEASURED (goal GOAL) PASS|MISS`; passed None = not measurable."""
    if passed is None:
        say("target %s: not measured (%s) (goal %s) MISS" % (name, why or "no data", goal))
    else:
        say("target %s: %s (goal %s) %s" % (name, measured, goal, "PASS" if passed else "MISS"))


def finish(peers):
    """Exit 1 when a peer failed a run (missing optional peers are not failures)."""
    failed = [p for p in peers if p.failed]
    if failed:
        say("")
        for p in failed:
            say("FAILED: %s: %s" % (p.name, p.failed.splitlines()[0] if p.failed else ""))
        sys.exit(1)
    sys.exit(0)
