#!/usr/bin/python3
"""bench_dht — get_peers lookups in a 200-node loopback DHT, torrentd's
against libtorrent's, in one run (issue 5, "Proof").

The network: BENCH_DHT_TD torrentd processes (default 180) and
BENCH_DHT_LT python3-libtorrent DHT nodes (default 20; lt_dht.py, one
/usr/bin/python3 process each), every node on its own 127.0.X.Y, 200 nodes
in all.  Each torrentd bootstraps from three nodes started before it, each
libtorrent node is introduced to three torrentd; nobody knows a public
router.  Once most tables hold a few good nodes the network is given
BENCH_DHT_SETTLE seconds (default 30) to fill them.

Then, for each of BENCH_DHT_LOOKUPS info-hashes (default 30): a random
torrentd announces it (dht.announce, port 10000+i), then one random other
torrentd (dht.get_peers) and one random libtorrent node (dht_get_peers)
look it up, one after the other, so that lookups do not compete.  Per
lookup: the time until the lookup ended (torrentd: the dht.get_peers call
seen from the client, JSON-RPC included; libtorrent: from the command's
arrival in its process to dht_get_peers_reply_alert), the queries it
sent (torrentd:
the lookup's KRPC queries; libtorrent: its dht_outgoing_get_peers alerts)
and whether the announced peer was found.  Prints every lookup and a table
of medians (with the 10th-90th percentiles).

Both implementations search the same network for the same info-hashes, so
the comparison is of their lookup algorithms and termination rules;
libtorrent ends a get_peers when its closest nodes have answered, torrentd
when its 8 closest live candidates have (dht.h).

Environment: TORRENTD_BUILD (build/default), BENCH_DIR (build/bench),
BENCH_DHT_TD, BENCH_DHT_LT, BENCH_DHT_LOOKUPS, BENCH_DHT_SETTLE.
Everything is bounded in time (each process by `timeout`, each wait by a
deadline) and stopped by PID.  Run: tests/bench/run dht.
"""
import os
import random
import shutil
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
BOUND = 900          # seconds any process may live
WORK = os.path.abspath(os.path.join(os.environ.get("BENCH_DIR", "build/bench"),
                                    "dht"))


def pct(values, p):
    v = sorted(values)
    if not v:
        return float("nan")
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * (len(v) - 1)))))
    return v[k]


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


def main():
    if os.path.exists(WORK):
        shutil.rmtree(WORK)
    os.makedirs(WORK)
    rnd = random.Random(5)
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
                e = n.get_peers(ih, timeout=90)
                lt_rows.append({"ms": e["ms"], "queries": e["queries"],
                                "found": want in e["peers"]})
                line += "   %-10s %8.1f %7d %5s" % (
                    os.path.basename(n.dir), e["ms"], e["queries"],
                    want in e["peers"])
            print(line + "   (announced to %d)" % ann["announced"])
            sys.stdout.flush()

        print("\nDHT of %d nodes (%d torrentd, %d libtorrent), %d lookups "
              "each, on loopback" % (N_TD + N_LT, N_TD, N_LT, LOOKUPS))
        print("%-10s %5s %8s %-12s %8s %-9s %8s" % (
            "client", "n", "ms med", "p10-p90", "queries", "p10-p90",
            "found"))
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
        print("total time %.0f s" % (time.monotonic() - t0))
        return 0
    except Exception:
        traceback.print_exc()
        return 1
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


if __name__ == "__main__":
    sys.exit(main())
