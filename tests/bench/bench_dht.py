#!/usr/bin/python3
"""bench_dht — get_peers lookups in two 200-node loopback DHTs, torrentd's
against libtorrent's, in one run (issue 5, "Proof").

The mixed network: BENCH_DHT_TD torrentd processes (default 180) and
BENCH_DHT_LT python3-libtorrent DHT nodes (default 20; lt_dht.py, one
/usr/bin/python3 process each), every node on its own 127.0.X.Y, 200 nodes
in all.  Each torrentd bootstraps from three nodes started before it, each
libtorrent node is introduced to three torrentd; nobody knows a public
router.  Once most tables hold a few good nodes the network is given
BENCH_DHT_SETTLE seconds (default 30) to fill them.

Then, for each of BENCH_DHT_LOOKUPS info-hashes (default 30): a random
torrentd announces it (dht.announce, port 10000+i), then one random other
torrentd (dht.get_peers) and one random libtorrent node (dht_get_peers)
look it up, one after the other, so that lookups do not compete.

The libtorrent network, built once the mixed one is stopped: BENCH_DHT_LTNET
python3-libtorrent nodes (default 200), BENCH_DHT_LT_PER_PROC sessions per
process (default 20; each session is a node with its own address, id and
table), each introduced to three nodes started before it, no public
router, local-address restrictions off.  It joins and settles like the
mixed one; then for each of the BENCH_DHT_LOOKUPS info-hashes a random node
announces it (a torrent added for the hash; the bench waits until other
nodes have received its announce_peer) and one random other node looks it
up.

Per lookup: the time until the lookup ended (torrentd: the dht.get_peers
call seen from the client, JSON-RPC included; libtorrent: from the
command's arrival in its process to the end of its traversal, "[N]
COMPLETED" in its DHT log), the get_peers queries it sent (torrentd: the
lookup's KRPC queries; libtorrent: its dht_outgoing_get_peers alerts until
the end) and whether the announced peer was found.  Prints every lookup, a
table of medians (with the 10th-90th percentiles) per network, and a
comparison: the medians side by side and the ratios torrentd/libtorrent,
against libtorrent in the same (mixed) network and in its own network.
libtorrent's time to its first answer holding peers is printed too (its
dht_get_peers_reply_alert comes per answer, not at the end of a lookup).

Both implementations search networks of the same size for the same kind of
info-hashes, so the comparison is of their lookup algorithms and
termination rules; libtorrent ends a get_peers when its closest nodes have
answered, torrentd when its 8 closest live candidates have (dht.h).

Environment: TORRENTD_BUILD (build/default), BENCH_DIR (build/bench),
BENCH_DHT_TD, BENCH_DHT_LT, BENCH_DHT_LTNET, BENCH_DHT_LT_PER_PROC,
BENCH_DHT_LOOKUPS, BENCH_DHT_SETTLE, BENCH_DHT_BUDGET (seconds for the
whole run, default 600: lookups past it are skipped).  Everything is
bounded in time (each process by `timeout`, each wait by a deadline) and
stopped by PID, also when the bench fails or gets SIGTERM.
Run: tests/bench/run dht.
"""
import os
import random
import shutil
import signal
import statistics
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
os.chdir(ROOT)
os.environ.setdefault("TORRENTD_BUILD", "build/default")
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import peers      # noqa: E402
import tdaemon    # noqa: E402
from dhtnodes import LtDht   # noqa: E402

N_TD = int(os.environ.get("BENCH_DHT_TD", "180"))
N_LT = int(os.environ.get("BENCH_DHT_LT", "20"))
LOOKUPS = int(os.environ.get("BENCH_DHT_LOOKUPS", "30"))
SETTLE = float(os.environ.get("BENCH_DHT_SETTLE", "30"))
N_LTNET = int(os.environ.get("BENCH_DHT_LTNET", "200"))
LT_PER_PROC = int(os.environ.get("BENCH_DHT_LT_PER_PROC", "20"))
BUDGET = float(os.environ.get("BENCH_DHT_BUDGET", "600"))
LT_LOOKUP_TIMEOUT = 30   # seconds a libtorrent lookup may take
LOOKUP_RESERVE = 60      # budget kept for a lookup and the teardown
BOUND = 900          # seconds any process may live
WORK = os.path.abspath(os.path.join(os.environ.get("BENCH_DIR", "build/bench"),
                                    "dht"))


def pct(values, p):
    v = sorted(values)
    if not v:
        return float("nan")
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * (len(v) - 1)))))
    return v[k]


HEADER = "%-10s %5s %8s %-12s %8s %-9s %8s" % (
    "client", "n", "ms med", "p10-p90", "queries", "p10-p90", "found")


def summary(name, rows):
    ms = [r["ms"] for r in rows]
    q = [r["queries"] for r in rows]
    found = sum(1 for r in rows if r["found"])
    return ("%-10s %5d %8.1f %5.1f-%-6.1f %8.1f %4.0f-%-4.0f %6d/%d"
            % (name, len(rows), statistics.median(ms) if ms else 0,
               pct(ms, 10), pct(ms, 90),
               statistics.median(q) if q else 0, pct(q, 10), pct(q, 90),
               found, len(rows)))


class Td:
    """A torrentd DHT node started without waiting (many at once)."""

    def __init__(self, i, bootstrap):
        self.ip = peers.next_address()
        self.port = peers.free_port(self.ip)
        cfg = {"listen": "%s:%d" % (self.ip, self.port), "dht": "on",
               "dht_bootstrap": ",".join(bootstrap), "log_level": "notice"}
        self.d = tdaemon.Daemon(WORK, cfg, name="td%03d" % i)

    def address(self):
        return "%s:%d" % (self.ip, self.port)

    def start(self):
        self.d.start(wait=False, prefix=("timeout", "-k", "5", str(BOUND)))

    def stop(self):
        """SIGTERM to torrentd's own PID (the `timeout` wrapper would pass
        a signal on to its process group too), then wait."""
        kids = peers.children_of(self.d.proc.pid)
        if kids and self.d.proc.poll() is None:
            try:
                os.kill(kids[0], 15)
                self.d.proc.wait(30)
            except (ProcessLookupError, peers.subprocess.TimeoutExpired):
                pass
        self.d.stop(timeout=30)

    def call(self, method, **params):
        c = tdaemon.Connection(self.d.control_socket, timeout=60)
        try:
            return c.call(method, **params)
        finally:
            c.close()


class Budget:
    """The deadline of the whole run (BENCH_DHT_BUDGET seconds): lookups
    that would start after it are skipped, so a slow machine gives fewer
    lookups rather than an unbounded run."""

    def __init__(self, seconds):
        self.t0 = time.monotonic()
        self.end = self.t0 + seconds

    def left(self):
        return self.end - time.monotonic()

    def elapsed(self):
        return time.monotonic() - self.t0


def lt_row(e, want):
    return {"ms": e["ms"], "queries": e["queries"],
            "found": want in e["peers"], "first_ms": e.get("first_ms"),
            "completed": e.get("completed", True)}


def run_mixed(rnd, budget):
    """The mixed network: N_TD torrentd and N_LT libtorrent nodes; returns
    (torrentd rows, libtorrent rows)."""
    tds, lts = [], []
    t0 = time.monotonic()
    try:
        for i in range(N_TD):
            boot = [x.address() for x in rnd.sample(tds, min(3, len(tds)))]
            td = Td(i, boot)
            td.start()
            tds.append(td)
            if i % 20 == 19:
                for x in tds[-20:]:
                    x.d.wait_ready(60)
        for x in tds:
            x.d.wait_ready(60)
        print("started %d torrentd in %.1f s" % (len(tds),
                                                 time.monotonic() - t0))
        for i in range(N_LT):
            n = LtDht(WORK, name="lt%03d" % i, bound=BOUND)
            n.start(nodes=[x.address() for x in rnd.sample(tds, 3)])
            lts.append(n)
        print("started %d libtorrent nodes" % len(lts))

        def joined():
            sample = rnd.sample(tds, min(20, len(tds)))
            good = [x.call("dht.status")["nodes"]["good"] for x in sample]
            return sum(1 for g in good if g >= 8) >= len(sample) * 0.9
        peers.wait_until(joined, 180, interval=2.0,
                         what="the DHT tables to fill")
        print("joined after %.1f s; settling %.0f s" % (
            time.monotonic() - t0, SETTLE))
        time.sleep(SETTLE)
        good = [x.call("dht.status")["nodes"]["good"] for x in tds]
        lt_nodes = [n.nodes() for n in lts]
        print("torrentd good nodes: median %d (min %d, max %d); "
              "libtorrent table nodes: median %d"
              % (statistics.median(good), min(good), max(good),
                 statistics.median(lt_nodes) if lt_nodes else 0))

        td_rows, lt_rows = [], []
        print("\n%-3s %-8s %-10s %8s %7s %5s   %-10s %8s %7s %5s" % (
            "#", "hash", "td", "ms", "queries", "found", "lt", "ms",
            "queries", "found"))
        for i in range(LOOKUPS):
            if budget.left() < LOOKUP_RESERVE:
                print("time budget spent: %d of %d lookups done" % (
                    i, LOOKUPS))
                break
            ih = os.urandom(20).hex()
            a, b = rnd.sample(tds, 2)
            port = 10000 + i
            ann = a.call("dht.announce", info_hash=ih, port=port)
            want = "%s:%d" % (a.ip, port)
            c = tdaemon.Connection(b.d.control_socket, timeout=60)
            t1 = time.monotonic()
            r = c.call("dht.get_peers", info_hash=ih)
            ms = (time.monotonic() - t1) * 1000
            c.close()
            td_rows.append({"ms": ms, "queries": r["queries"],
                            "found": want in r["peers"]})
            line = "%-3d %-8s %-10s %8.1f %7d %5s" % (
                i, ih[:8], "td%03d" % tds.index(b), ms, r["queries"],
                want in r["peers"])
            if lts:
                n = rnd.choice(lts)
                e = n.get_peers(ih, timeout=LT_LOOKUP_TIMEOUT)
                lt_rows.append(lt_row(e, want))
                line += "   %-10s %8.1f %7d %5s" % (
                    os.path.basename(n.dir), e["ms"], e["queries"],
                    want in e["peers"])
            print(line + "   (announced to %d)" % ann["announced"])
            sys.stdout.flush()

        print("\nDHT of %d nodes (%d torrentd, %d libtorrent), %d lookups "
              "each, on loopback" % (N_TD + N_LT, N_TD, N_LT, len(td_rows)))
        print(HEADER)
        print(summary("torrentd", td_rows))
        if lt_rows:
            print(summary("libtorrent", lt_rows))
        st = [x.call("dht.status") for x in rnd.sample(tds, 10)]
        print("\ntorrentd sample: %d-%d good nodes, %d-%d buckets, "
              "rate-limited %d, timeouts %d (10 nodes)" % (
                  min(s["nodes"]["good"] for s in st),
                  max(s["nodes"]["good"] for s in st),
                  min(len(s["buckets"]) for s in st),
                  max(len(s["buckets"]) for s in st),
                  sum(s["counters"]["rate_limited"] for s in st),
                  sum(s["counters"]["timeouts"] for s in st)))
        print("mixed network: %.0f s" % (time.monotonic() - t0))
        return td_rows, lt_rows
    finally:
        for n in lts:
            try:
                n.stop()
            except Exception:
                pass
        for x in tds:
            try:
                x.stop()
            except Exception as e:
                print("torrentd %s: %s" % (x.address(), str(e)[:200]))


def run_lt_network(rnd, budget):
    """The libtorrent network: N_LTNET python3-libtorrent nodes,
    LT_PER_PROC sessions per process; returns the libtorrent rows."""
    groups = []
    t0 = time.monotonic()
    try:
        nodes = []           # (group, session) of every node, in order
        for g in range((N_LTNET + LT_PER_PROC - 1) // LT_PER_PROC):
            k = min(LT_PER_PROC, N_LTNET - g * LT_PER_PROC)
            grp = LtDht(WORK, name="ltnet%02d" % g, bound=BOUND, sessions=k)
            # Re-announces every 60 s only: the bench announces each hash
            # once, as torrentd's dht.announce does in the mixed network.
            grp.start(announce_interval=60)
            groups.append(grp)
            nodes += [(grp, s) for s in range(k)]
        # Each node is introduced to three nodes before it, as the
        # torrentd of the mixed network are.
        for i, (grp, s) in enumerate(nodes):
            for j in rnd.sample(range(i), min(3, i)):
                grp.add_node(nodes[j][0].address(nodes[j][1]), session=s)
        print("started %d libtorrent nodes in %d processes in %.1f s" % (
            len(nodes), len(groups), time.monotonic() - t0))

        def name(i):
            return "lt%03d" % i

        def table(i):
            grp, s = nodes[i]
            return grp.nodes(session=s)

        def joined():
            sample = rnd.sample(range(len(nodes)), min(20, len(nodes)))
            return sum(1 for i in sample if table(i) >= 8) >= \
                len(sample) * 0.9
        peers.wait_until(joined, 180, interval=2.0,
                         what="the libtorrent DHT tables to fill")
        print("joined after %.1f s; settling %.0f s" % (
            time.monotonic() - t0, SETTLE))
        time.sleep(SETTLE)
        sizes = [table(i) for i in range(len(nodes))]
        print("libtorrent table nodes: median %d (min %d, max %d)" % (
            statistics.median(sizes), min(sizes), max(sizes)))

        def stored(ih):
            return sum(len(g.stored(ih)) for g in groups)

        rows = []
        print("\n%-3s %-8s %-10s %-10s %8s %7s %5s" % (
            "#", "hash", "announcer", "lt", "ms", "queries", "found"))
        for i in range(LOOKUPS):
            if budget.left() < LOOKUP_RESERVE:
                print("time budget spent: %d of %d lookups done" % (
                    i, LOOKUPS))
                break
            ih = os.urandom(20).hex()
            a, b = rnd.sample(range(len(nodes)), 2)
            agrp, asess = nodes[a]
            agrp.announce(ih, session=asess)
            want = agrp.address(asess)
            # libtorrent announces a new torrent at once; its announce_peer
            # messages go out together, so wait for the first to land and
            # a moment for the rest.
            try:
                peers.wait_until(lambda: stored(ih) > 0, 30, 0.02,
                                 "the announce of %s" % ih[:8])
            except AssertionError as e:
                print("%-3d %-8s %s" % (i, ih[:8], e))
            time.sleep(0.5)
            bgrp, bsess = nodes[b]
            e = bgrp.get_peers(ih, timeout=LT_LOOKUP_TIMEOUT, session=bsess)
            rows.append(lt_row(e, want))
            print("%-3d %-8s %-10s %-10s %8.1f %7d %5s   (announced to %d)"
                  % (i, ih[:8], name(a), name(b), e["ms"], e["queries"],
                     want in e["peers"], stored(ih)))
            sys.stdout.flush()

        print("\nDHT of %d libtorrent nodes (%d per process), %d lookups, "
              "on loopback" % (len(nodes), LT_PER_PROC, len(rows)))
        print(HEADER)
        print(summary("libtorrent", rows))
        print("libtorrent network: %.0f s" % (time.monotonic() - t0))
        return rows
    finally:
        for g in groups:
            try:
                g.stop()
            except Exception:
                pass


def med(rows, key):
    v = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(v) if v else float("nan")


def ratio(a, b):
    return a / b if b else float("nan")


def compare(td_rows, lt_rows, ltnet_rows):
    """The medians side by side, and torrentd's over libtorrent's."""
    print("\ncomparison (medians; ms: until the lookup ended; queries: "
          "get_peers messages sent per lookup)")
    print("%-22s %-10s %5s %8s %8s %8s" % (
        "network", "client", "n", "ms", "queries", "found"))
    table = [("mixed (%d td + %d lt)" % (N_TD, N_LT), "torrentd", td_rows),
             ("mixed (%d td + %d lt)" % (N_TD, N_LT), "libtorrent", lt_rows),
             ("libtorrent (%d lt)" % N_LTNET, "libtorrent", ltnet_rows)]
    for net, client, rows in table:
        if rows:
            print("%-22s %-10s %5d %8.1f %8.1f %5d/%d" % (
                net, client, len(rows), med(rows, "ms"),
                med(rows, "queries"), sum(1 for r in rows if r["found"]),
                len(rows)))

    def found(rows):
        return sum(1 for r in rows if r["found"]) / len(rows)
    for what, other in (("libtorrent in the mixed network", lt_rows),
                        ("libtorrent in the libtorrent network",
                         ltnet_rows)):
        if td_rows and other:
            print("torrentd / %-36s time %.2f  queries %.2f  found %.2f" % (
                what + ":", ratio(med(td_rows, "ms"), med(other, "ms")),
                ratio(med(td_rows, "queries"), med(other, "queries")),
                ratio(found(td_rows), found(other))))
    firsts = ["%s %.1f ms" % (net, med(rows, "first_ms"))
              for net, rows in (("mixed", lt_rows), ("libtorrent",
                                                     ltnet_rows)) if rows]
    if firsts:
        print("libtorrent, time to its first answer with peers (median): "
              + ", ".join(firsts))
    unfinished = sum(1 for r in lt_rows + ltnet_rows if not r["completed"])
    if unfinished:
        print("libtorrent lookups that did not end within %d s: %d" % (
            LT_LOOKUP_TIMEOUT, unfinished))


def main():
    if os.path.exists(WORK):
        shutil.rmtree(WORK)
    os.makedirs(WORK)
    # A SIGTERM to the bench unwinds through the finally blocks, which stop
    # every process by PID.
    signal.signal(signal.SIGTERM, lambda sig, frame: sys.exit(128 + sig))
    rnd = random.Random(5)
    budget = Budget(BUDGET)
    try:
        td_rows, lt_rows = run_mixed(rnd, budget)
        print()
        ltnet_rows = run_lt_network(rnd, budget) if N_LTNET >= 2 else []
        compare(td_rows, lt_rows, ltnet_rows)
        print("total time %.0f s" % budget.elapsed())
        return 0
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        peers.stop_all()


if __name__ == "__main__":
    sys.exit(main())
