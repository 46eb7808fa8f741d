#!/usr/bin/python3
"""lt_dht — one python3-libtorrent session that is only a DHT node, on a
loopback address, for the DHT tests (test_dht.py) and the DHT benchmark
(tests/bench/bench_dht.py).

Run it with Debian's /usr/bin/python3 (the interpreter that has the
libtorrent module); tests start it through dhtnodes.LtDht.  It is bounded in
time (--timeout) and never contacts anything but the nodes it is given:
every setting goes to the session's constructor, dht_bootstrap_nodes is
empty, LSD, UPnP and NAT-PMP are off, and the loopback settings of
/work/shared/TESTING.md are applied (no routing or search restrictions on
one /24, raised DHT rate limits).

Usage:
  lt_dht.py --listen 127.0.0.3:PORT [--node IP:PORT ...] [--timeout S]
            [--announce-interval S]

Output: one JSON object per line on stdout, each with "event":
  {"event":"ready","address":"127.0.0.3:PORT"}
  {"event":"status","id":N,"nodes":N,"buckets":N}          after "status"
  {"event":"peers","id":N,"info_hash":HEX,"peers":["ip:port",...],
   "ms":F,"queries":N}                                     after get_peers
  {"event":"announced","id":N,"info_hash":HEX}              after announce
  {"event":"exit","reason":"quit"|"timeout"|"signal"}

Commands, one JSON object per line on stdin:
  {"cmd":"add_node","node":"IP:PORT"}
  {"cmd":"announce","id":N,"info_hash":HEX}  add a torrent for the hash: it
                                             announces itself on the DHT
  {"cmd":"get_peers","id":N,"info_hash":HEX} ses.dht_get_peers; "queries"
                                             counts its outgoing get_peers
  {"cmd":"status","id":N}
  {"cmd":"quit"}
"""
import argparse
import json
import os
import queue
import signal
import sys
import tempfile
import threading
import time

import libtorrent as lt


def emit(event, **fields):
    sys.stdout.write(json.dumps(dict(event=event, **fields)) + "\n")
    sys.stdout.flush()


def parse_addr(s):
    host, port = s.rsplit(":", 1)
    return host.strip("[]"), int(port)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--listen", required=True)
    ap.add_argument("--node", action="append", default=[])
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--announce-interval", type=int, default=5)
    args = ap.parse_args()

    ip, port = parse_addr(args.listen)
    settings = {
        "listen_interfaces": "%s:%d" % (ip, port),
        "outgoing_interfaces": ip,
        "enable_dht": True,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "dht_bootstrap_nodes": "",
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_block_ratelimit": 10000,
        "dht_upload_rate_limit": 10000000,
        "dht_announce_interval": args.announce_interval,
        "alert_mask": lt.alert.category_t.all_categories,
        "alert_queue_size": 100000,
    }
    ses = lt.session(settings)
    save = tempfile.mkdtemp(prefix="lt_dht.")
    for n in args.node:
        ses.add_dht_node(parse_addr(n))

    stop = threading.Event()
    reason = ["timeout"]

    def on_signal(signum, frame):
        reason[0] = "signal"
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    cmds = queue.Queue()

    def reader():
        for line in sys.stdin:
            try:
                cmds.put(json.loads(line))
            except ValueError:
                pass

    threading.Thread(target=reader, daemon=True).start()
    emit("ready", address="%s:%d" % (ip, port))

    pending = {}   # info-hash hex -> list of (id, start, queries)
    status_ids = []
    deadline = time.monotonic() + args.timeout
    while not stop.is_set() and time.monotonic() < deadline:
        while True:
            try:
                c = cmds.get_nowait()
            except queue.Empty:
                break
            cmd = c.get("cmd")
            if cmd == "quit":
                reason[0] = "quit"
                stop.set()
            elif cmd == "add_node":
                ses.add_dht_node(parse_addr(c["node"]))
            elif cmd == "announce":
                atp = lt.add_torrent_params()
                atp.info_hashes = lt.info_hash_t(
                    lt.sha1_hash(bytes.fromhex(c["info_hash"])))
                atp.save_path = save
                atp.flags &= ~lt.torrent_flags.paused
                atp.flags &= ~lt.torrent_flags.auto_managed
                ses.add_torrent(atp)
                emit("announced", id=c.get("id"), info_hash=c["info_hash"])
            elif cmd == "get_peers":
                h = c["info_hash"].lower()
                pending.setdefault(h, []).append(
                    [c.get("id"), time.monotonic(), 0])
                ses.dht_get_peers(lt.sha1_hash(bytes.fromhex(h)))
            elif cmd == "status":
                status_ids.append(c.get("id"))
                ses.post_dht_stats()
        ses.wait_for_alert(50)
        for a in ses.pop_alerts():
            if isinstance(a, lt.dht_outgoing_get_peers_alert):
                h = str(a.info_hash).lower()
                for p in pending.get(h, []):
                    p[2] += 1
            elif isinstance(a, lt.dht_get_peers_reply_alert):
                h = str(a.info_hash).lower()
                waiting = pending.pop(h, [])
                peers = ["%s:%d" % (x[0], x[1]) for x in a.peers()]
                for rid, start, q in waiting:
                    emit("peers", id=rid, info_hash=h, peers=peers,
                         ms=round((time.monotonic() - start) * 1000, 1),
                         queries=q)
            elif isinstance(a, lt.dht_stats_alert):
                nodes = sum(b["num_nodes"] for b in a.routing_table)
                for rid in status_ids:
                    emit("status", id=rid, nodes=nodes,
                         buckets=len(a.routing_table))
                status_ids = []
    emit("exit", reason=reason[0])
    del ses
    os._exit(0)


if __name__ == "__main__":
    main()
