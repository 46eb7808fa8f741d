#!/usr/bin/python3
"""bench_transfer — one seeder -> one leecher on loopback, 1 GiB with
1 MiB pieces, for torrentd -> torrentd, transmission -> transmission and
libtorrent -> libtorrent, in one run (issue 4, "Speed").

For every transfer (fresh seeder and leecher processes, each on its own
127.0.0.x; the seeder has checked its data before the clock starts):
  - MB/s (10^6 B/s) from "add" to "complete": the leecher gets the torrent
    and is told of the seeder at t0; complete = every piece verified;
  - time to the first payload byte (polled every 50-100 ms);
  - CPU seconds per GiB of the leecher and of the seeder over the
    transfer, from /proc/PID/stat (utime+stime of all threads; for
    libtorrent, its python process);
  - peak anonymous RSS (RssAnon sampled every 50 ms; libtorrent's
    mmapped file pages would swamp VmHWM, see TESTING.md).
Runs are interleaved (torrentd, transmission, libtorrent, torrentd, ...)
so that noise from a shared machine hits all alike.  Prints every run,
then a table of medians with their spread (min-max), torrentd's ratios
to the others, and whether torrentd meets the issue's targets (faster
than both, less CPU per GiB as leecher and as seeder).

How peers meet: torrentd's leecher dials the seeder (torrent.add_peer);
libtorrent's leecher dials the seeder (connect_peer); transmission 3.00
dials no peer on 127/8 at all (TESTING.md), so a splicer (peers.Splicer)
dials both transmissions and joins the two streams: each sees an incoming
peer; the splicer runs in this process and its CPU is nobody's.

torrentd that cannot transfer yet (no torrent.add_peer, or a transfer
that fails or times out) is reported as such on its row; the other
clients are measured anyway.  The exit status is non-zero only for
harness errors (transmission or libtorrent failing, data that differs
from the source, a crash of this script); torrentd missing its targets
is printed, not an error.

Environment: TORRENTD_BUILD (build/default), BENCH_DIR (build/bench),
BENCH_TRANSFER_MIB (1024), BENCH_REPEAT (3), BENCH_CLIENTS
(torrentd,transmission,libtorrent), BENCH_TRANSFER_TIMEOUT (seconds per
transfer; default 60 + 1 per MiB).
Breakdowns of torrentd's CPU (off by default; they cost a little CPU of
their own, so compare runs made with the same options):
  BENCH_THREADS=1   per run, CPU s/GiB of the leecher and the seeder per
                    thread kind (peer/N -> peer, verify/N -> verify ...),
                    from /proc/PID/task/*/stat sampled every 50 ms (a
                    thread that ends between two samples loses its last
                    50 ms at most);
  BENCH_PERF=DIR    `perf record -g` of the torrentd leecher (and of the
                    seeder with BENCH_PERF_SEED=1) over each transfer,
                    into DIR/leech-N.data (seed-N.data); read them with
                    `perf report -i FILE --no-children --sort sym`;
  BENCH_PERF_STAT=1 `perf stat` of the torrentd leecher over each
                    transfer: context switches and the counts of the
                    system calls of the data path, printed per run.
Run: tests/bench/run transfer   (or make bench for every benchmark).
"""
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
os.chdir(ROOT)
os.environ.setdefault("TORRENTD_BUILD", "build/default")
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import peers      # noqa: E402
import tdaemon    # noqa: E402
from conftest import info_hash   # noqa: E402

MIB = int(os.environ.get("BENCH_TRANSFER_MIB", "1024"))
SIZE = MIB << 20
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
CLIENTS = [c.strip() for c in os.environ.get(
    "BENCH_CLIENTS", "torrentd,transmission,libtorrent").split(",")
    if c.strip()]
TIMEOUT = float(os.environ.get("BENCH_TRANSFER_TIMEOUT", 60 + MIB))
BENCH_DIR = os.path.abspath(os.environ.get("BENCH_DIR", "build/bench"))
# A directory per run: two benches at once must not remove each other's.
WORK = os.path.join(BENCH_DIR, "transfer-%d" % os.getpid())
GIB = float(1 << 30)
THREADS = os.environ.get("BENCH_THREADS", "") not in ("", "0")
PERF_DIR = os.environ.get("BENCH_PERF", "")
PERF_SEED = os.environ.get("BENCH_PERF_SEED", "") not in ("", "0")
PERF_STAT = os.environ.get("BENCH_PERF_STAT", "") not in ("", "0")
PERF_STAT_EVENTS = ["context-switches"] + [
    "syscalls:sys_enter_" + n for n in (
        "recvfrom", "pwritev", "pread64", "poll", "read", "write", "sendto",
        "fdatasync", "sync_file_range", "futex", "sched_yield", "nanosleep")]
BOUND = int(TIMEOUT + 300)       # the life of any process we start


class HarnessError(Exception):
    pass


class ThreadSampler:
    """CPU seconds per thread kind of a process (BENCH_THREADS): samples
    /proc/PID/task/*/stat every interval seconds on a thread, keeps each
    thread's last value (threads come and go), and groups them by name
    with a trailing "/N" cut off."""

    def __init__(self, pid, interval=0.05):
        self.pid = pid
        self.interval = interval
        self.base = self._read()
        self.last = dict(self.base)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _read(self):
        out = {}
        d = "/proc/%d/task" % self.pid
        try:
            tids = os.listdir(d)
        except OSError:
            return out
        for tid in tids:
            try:
                with open("%s/%s/stat" % (d, tid)) as f:
                    s = f.read()
            except OSError:
                continue
            name = s[s.index("(") + 1:s.rindex(")")]
            fields = s[s.rindex(")") + 2:].split()
            out[(tid, name)] = (int(fields[11]) + int(fields[12])) \
                / peers.CLK_TCK
        return out

    def _run(self):
        while not self._stop.wait(self.interval):
            self.last.update(self._read())

    def stop(self):
        self.last.update(self._read())
        self._stop.set()
        self._t.join()
        kinds = {}
        for (tid, name), v in self.last.items():
            k = name.split("/")[0] if "/" in name else name
            kinds[k] = kinds.get(k, 0.0) + v - self.base.get((tid, name), 0.0)
        return kinds


class PerfRecorder:
    """`perf record -g -p PID` until stop() (BENCH_PERF), or with stat,
    `perf stat -x, -e PERF_STAT_EVENTS -p PID` (BENCH_PERF_STAT)."""

    def __init__(self, pid, out, stat=False):
        self.out = out
        if stat:
            cmd = ["perf", "stat", "-x", ",", "-o", out, "-p", str(pid),
                   "-e", ",".join(PERF_STAT_EVENTS)]
        else:
            cmd = ["perf", "record", "-q", "-g", "-p", str(pid), "-o", out]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        time.sleep(0.3)   # attached before the clock starts

    def counts(self):
        """perf stat's counts once stopped: {event: count}."""
        out = {}
        try:
            with open(self.out) as f:
                for line in f:
                    parts = line.strip().split(",")
                    if len(parts) > 2 and parts[0].isdigit():
                        out[parts[2].replace("syscalls:sys_enter_", "")] = \
                            int(parts[0])
        except OSError:
            pass
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Measure:
    """Clock and /proc samplers around one transfer."""

    def __init__(self, seed_pid, leech_pid, tag=None):
        self.seed = peers.ProcSampler(seed_pid)
        self.leech = peers.ProcSampler(leech_pid)
        self.threads = None
        self.perf = []
        self.stat = None
        if tag and PERF_STAT:
            self.stat = PerfRecorder(leech_pid, os.path.join(
                WORK, "stat-%s.txt" % tag), stat=True)
        if tag and PERF_DIR:
            os.makedirs(PERF_DIR, exist_ok=True)
            self.perf.append(PerfRecorder(leech_pid, os.path.join(
                PERF_DIR, "leech-%s.data" % tag)))
            if PERF_SEED:
                self.perf.append(PerfRecorder(seed_pid, os.path.join(
                    PERF_DIR, "seed-%s.data" % tag)))
        if tag and THREADS:
            self.threads = (ThreadSampler(leech_pid),
                            ThreadSampler(seed_pid))

    def begin(self):
        self.seed_cpu0 = self.seed.mark()
        self.leech_cpu0 = self.leech.mark()
        self.t0 = time.monotonic()
        self.first = None

    def first_byte(self, when=None):
        if self.first is None:
            self.first = (when or time.monotonic()) - self.t0

    def end(self, when=None):
        t1 = when or time.monotonic()
        seed_cpu = self.seed.stop() - self.seed_cpu0
        leech_cpu = self.leech.stop() - self.leech_cpu0
        secs = t1 - self.t0
        threads = None
        if self.threads:
            threads = tuple({k: v * GIB / SIZE for k, v in t.stop().items()}
                            for t in self.threads)
        for p in self.perf:
            p.stop()
        stat = None
        if self.stat:
            self.stat.stop()
            stat = self.stat.counts()
        return {
            "threads": threads, "stat": stat,
            "ok": True, "secs": secs, "mbps": SIZE / secs / 1e6,
            "first": self.first,
            "leech_cpu": leech_cpu * GIB / SIZE,
            "seed_cpu": seed_cpu * GIB / SIZE,
            "leech_rss": self.leech.peak_rss_anon_kb / 1024.0,
            "seed_rss": self.seed.peak_rss_anon_kb / 1024.0,
        }

    def abort(self):
        self.seed.stop()
        self.leech.stop()
        for t in self.threads or ():
            t.stop()
        for p in self.perf + ([self.stat] if self.stat else []):
            p.stop()


def seed_dir(rundir, data):
    """A directory of the seeder's own with the source data hard-linked
    in (no copy of 1 GiB per run)."""
    d = os.path.join(rundir, "seed-data")
    os.makedirs(d, exist_ok=True)
    os.link(data, os.path.join(d, os.path.basename(data)))
    return d


def check_data(data, path, who):
    if not peers.files_equal(data, path):
        raise HarnessError("%s: the leecher's data differs from the source"
                           % who)


# ------------------------------------------------------------------ runs

def engine_probe():
    """None when torrentd can be benchmarked, else why not."""
    path = tdaemon.binary("torrentd")
    if not os.access(path, os.X_OK):
        return "%s is not built" % path
    d = os.path.join(WORK, "probe")
    os.makedirs(d, exist_ok=True)
    td = peers.Torrentd(d, "probe")
    try:
        td.start(bound=60)
        try:
            td.call("torrent.add_peer", torrent="0" * 40,
                    address="127.0.0.1:9")
        except tdaemon.RpcError as e:
            if e.code == -32601:
                return "engine not wired yet (no torrent.add_peer)"
        return None
    finally:
        try:
            td.stop()
        except AssertionError:
            pass
        shutil.rmtree(d, ignore_errors=True)


def run_torrentd(rundir, data, tor, ih, tag=None):
    cfg = {"log_level": "notice"}
    seed = peers.Torrentd(rundir, "seed", config=cfg)
    leech = peers.Torrentd(rundir, "leech", config=cfg)
    m = None
    try:
        seed.start(bound=BOUND)
        seed.add(tor, download_dir=seed_dir(rundir, data))
        seed.wait_state(ih, ("seeding",), 300)
        leech.start(bound=BOUND)
        m = Measure(seed.pid, leech.pid, tag)
        c = leech.daemon.connect()
        m.begin()
        c.call("torrent.add", metainfo=_b64(tor))
        c.call("torrent.add_peer", torrent=ih, address=seed.peer_address())
        deadline = m.t0 + TIMEOUT
        while True:
            t = c.call("torrent.get", torrent=ih,
                       fields=["state", "progress", "have_bytes",
                               "size_bytes", "downloaded_bytes", "error"])
            now = time.monotonic()
            if t["downloaded_bytes"] > 0:
                m.first_byte(now)
            if t["state"] == "error":
                raise RuntimeError("torrent in error: %s" % t["error"])
            if t["have_bytes"] >= t["size_bytes"] and t["progress"] >= 1:
                r = m.end(now)
                break
            if now > deadline:
                raise RuntimeError("timed out at %.1f %%: %s" % (
                    100 * t["progress"], leech.log_tail(10)))
            time.sleep(0.05)
        c.close()
        m = None
        check_data(data, os.path.join(leech.download_dir,
                                      os.path.basename(data)), "torrentd")
        return r
    finally:
        if m:
            m.abort()
        for d in (leech, seed):
            try:
                d.stop()
            except AssertionError as e:
                print("  torrentd stop: %s" % str(e)[:300])


def _b64(path):
    import base64
    with open(path, "rb") as f:
        return base64.b64encode(f.read()).decode()


def run_transmission(rundir, data, tor, ih):
    seed = peers.Transmission(rundir, "seed", bound=BOUND)
    leech = peers.Transmission(rundir, "leech", bound=BOUND)
    m = sp = None
    try:
        seed.start()
        tid = seed.add(tor, download_dir=seed_dir(rundir, data))
        seed.wait_seeding(tid, 300)
        leech.start()
        m = Measure(seed.proc.pid, leech.proc.pid)
        m.begin()
        lid = leech.add(tor)
        sp = peers.Splicer(ih, seed.peer_address(),
                           leech.peer_address()).start()
        deadline = m.t0 + TIMEOUT
        while True:
            t = leech.get(lid, ["percentDone", "leftUntilDone",
                                "downloadedEver", "error", "errorString"])
            now = time.monotonic()
            if t["downloadedEver"] > 0:
                m.first_byte(now)
            if t["error"]:
                raise HarnessError("transmission: %s" % t["errorString"])
            if t["leftUntilDone"] == 0 and t["percentDone"] >= 1:
                r = m.end(now)
                break
            if now > deadline:
                raise HarnessError("transmission timed out at %.1f %%"
                                   % (100 * t["percentDone"]))
            time.sleep(0.1)
        m = None
        check_data(data, os.path.join(leech.download_dir,
                                      os.path.basename(data)),
                   "transmission")
        return r
    finally:
        if m:
            m.abort()
        if sp:
            sp.stop()
        leech.stop()   # it may abort on SIGTERM: its status means nothing
        seed.stop()


def run_libtorrent(rundir, data, tor, ih):
    seed = peers.Libtorrent(rundir, "seed", bound=BOUND)
    leech = peers.Libtorrent(rundir, "leech", bound=BOUND)
    m = None
    try:
        seed.start(tor, seed=True, save=seed_dir(rundir, data), interval=0,
                   timeout=BOUND - 10, ready_timeout=300)
        leech.start(tor, interval=0, timeout=BOUND - 10)
        m = Measure(seed.proc.pid, leech.proc.pid)
        m.begin()
        leech.connect(seed.peer_address())
        done = leech.wait_event("complete", TIMEOUT)
        fb = leech.last("first_byte")
        if fb:
            m.first_byte(fb["wall"])
        r = m.end(done["wall"])
        m = None
        leech.wait_event("flushed", 120)   # written to the file: check it
        if done["hash_fails"]:
            raise HarnessError("libtorrent: %d hash failures"
                               % done["hash_fails"])
        check_data(data, os.path.join(leech.download_dir,
                                      os.path.basename(data)), "libtorrent")
        return r
    except AssertionError as e:
        raise HarnessError("libtorrent: %s" % str(e)[:500])
    finally:
        if m:
            m.abort()
        leech.stop()
        seed.stop()


RUNNERS = {"torrentd": run_torrentd, "transmission": run_transmission,
           "libtorrent": run_libtorrent}


# ---------------------------------------------------------------- report

def fmt(v, spec="%.1f"):
    return "-" if v is None else spec % v


def summarize(results):
    """{client: {metric: (median, min, max)}} over the successful runs."""
    out = {}
    for c, runs in results.items():
        ok = [r for r in runs if r.get("ok")]
        if not ok:
            continue
        s = {}
        for k in ("mbps", "secs", "first", "leech_cpu", "seed_cpu",
                  "leech_rss", "seed_rss"):
            vals = [r[k] for r in ok if r.get(k) is not None]
            if vals:
                s[k] = (statistics.median(vals), min(vals), max(vals))
        s["n"] = len(ok)
        out[c] = s
    return out


def print_table(summary, results):
    print("\ntransfer %d MiB, 1 MiB pieces, loopback TCP, one seeder -> one "
          "leecher; median (min-max) of the runs that completed:" % MIB)
    hdr = "  %-13s %-22s %-20s %-19s %-19s %-9s %-9s" % (
        "client", "MB/s", "1st byte s", "leech CPU s/GiB", "seed CPU s/GiB",
        "leech MiB", "seed MiB")
    print(hdr)
    for c in CLIENTS:
        s = summary.get(c)
        if not s:
            errs = [r.get("error") for r in results.get(c, [])]
            print("  %-13s %s" % (c, "NO TRANSFER: " + (errs[0] if errs
                                                       else "not run")))
            continue

        def cell(k, spec="%.1f"):
            if k not in s:
                return "-"
            med, lo, hi = s[k]
            return "%s (%s-%s)" % (spec % med, spec % lo, spec % hi)
        print("  %-13s %-22s %-20s %-19s %-19s %-9s %-9s" % (
            c, cell("mbps"), cell("first", "%.2f"),
            cell("leech_cpu", "%.2f"), cell("seed_cpu", "%.2f"),
            fmt(s.get("leech_rss", (None,))[0], "%.0f"),
            fmt(s.get("seed_rss", (None,))[0], "%.0f")))
        fails = [r for r in results[c] if not r.get("ok")]
        if fails:
            print("  %-13s %d of %d runs failed: %s" % (
                "", len(fails), len(results[c]), fails[0].get("error")))


def print_verdict(summary):
    td = summary.get("torrentd")
    others = [c for c in ("transmission", "libtorrent") if c in summary]
    if "torrentd" not in CLIENTS:
        return
    if not td:
        print("\ntorrentd: cannot transfer yet: targets NOT MET (no figures)")
        return
    if not others:
        print("\ntorrentd: no other client measured: no ratios")
        return
    print("\ntorrentd's ratios (speed: torrentd/other, > 1 is faster; CPU "
          "and RSS: torrentd/other, < 1 is leaner):")
    met = True
    for o in others:
        so = summary[o]
        speed = td["mbps"][0] / so["mbps"][0]
        lc = td["leech_cpu"][0] / so["leech_cpu"][0] \
            if so["leech_cpu"][0] > 0 else float("inf")
        sc = td["seed_cpu"][0] / so["seed_cpu"][0] \
            if so["seed_cpu"][0] > 0 else float("inf")
        lr = td["leech_rss"][0] / so["leech_rss"][0] \
            if so["leech_rss"][0] > 0 else float("inf")
        print("  vs %-12s speed x%.2f  leech CPU x%.2f  seed CPU x%.2f  "
              "leech RSS x%.2f" % (o, speed, lc, sc, lr))
        if not (speed > 1 and lc < 1 and sc < 1):
            met = False
    if set(others) != {"transmission", "libtorrent"}:
        met = False
        print("  (not every other client was measured)")
    print("targets (faster than both, less CPU per GiB as leecher and "
          "seeder): %s" % ("MET" if met else "NOT MET"))


# ------------------------------------------------------------------ main

def make_source():
    src = os.path.join(WORK, "src")
    os.makedirs(src, exist_ok=True)
    data = os.path.join(src, "transfer-data.bin")
    print("bench_transfer: writing %d MiB of random data to %s" % (MIB, data))
    with open(data, "wb") as f:
        for _ in range(MIB):
            f.write(os.urandom(1 << 20))
    tor = os.path.join(WORK, "transfer.torrent")
    if os.path.exists(tor):
        os.unlink(tor)
    r = subprocess.run(["mktorrent", "-l", "20", "-t", str(os.cpu_count()),
                        "-o", tor, data], capture_output=True, text=True)
    if r.returncode:
        raise HarnessError("mktorrent: %s" % r.stderr)
    with open(data, "rb") as f:          # into the page cache
        while f.read(1 << 24):
            pass
    return data, tor


def main():
    for c in CLIENTS:
        if c not in RUNNERS:
            print("bench_transfer: unknown client %r" % c, file=sys.stderr)
            return 2
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    harness_errors = []
    results = {c: [] for c in CLIENTS}
    try:
        data, tor = make_source()
        ih = info_hash(tor)
        why_not = engine_probe() if "torrentd" in CLIENTS else None
        if why_not:
            print("bench_transfer: torrentd: %s; measuring the others" %
                  why_not)
        for i in range(1, REPEAT + 1):
            for c in CLIENTS:
                if c == "torrentd" and why_not:
                    results[c].append({"ok": False, "error": why_not})
                    continue
                rundir = os.path.join(WORK, "%s-%d" % (c, i))
                os.makedirs(rundir)
                try:
                    if c == "torrentd":
                        r = run_torrentd(rundir, data, tor, ih, str(i))
                    else:
                        r = RUNNERS[c](rundir, data, tor, ih)
                    results[c].append(r)
                    print("run %d %-12s %7.1f MB/s  %6.2f s  first byte "
                          "%s s  CPU/GiB leech %.2f seed %.2f  RssAnon "
                          "leech %.0f seed %.0f MiB" % (
                              i, c, r["mbps"], r["secs"],
                              fmt(r["first"], "%.2f"), r["leech_cpu"],
                              r["seed_cpu"], r["leech_rss"],
                              r["seed_rss"]), flush=True)
                    for who, t in zip(("leech", "seed"),
                                      r.get("threads") or ()):
                        print("      %s CPU s/GiB by thread: %s" % (
                            who, "  ".join("%s %.3f" % kv for kv in sorted(
                                t.items(), key=lambda kv: -kv[1])
                                if kv[1] >= 0.0005)), flush=True)
                    if r.get("stat"):
                        print("      leech perf stat: %s" % "  ".join(
                            "%s %d" % kv for kv in r["stat"].items()),
                            flush=True)
                except Exception as e:
                    msg = "%s: %s" % (type(e).__name__, str(e)[:400])
                    results[c].append({"ok": False, "error": msg})
                    print("run %d %-12s FAILED: %s" % (i, c, msg),
                          flush=True)
                    if c != "torrentd":
                        harness_errors.append(msg)
                        if not isinstance(e, HarnessError):
                            traceback.print_exc()
                finally:
                    peers.stop_all()
                    shutil.rmtree(rundir, ignore_errors=True)
        summary = summarize(results)
        print_table(summary, results)
        print_verdict(summary)
    finally:
        peers.stop_all()
        shutil.rmtree(WORK, ignore_errors=True)
    if harness_errors:
        print("bench_transfer: harness errors: %s" % harness_errors[0],
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
