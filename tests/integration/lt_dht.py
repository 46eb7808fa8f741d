#!/usr/bin/python3
"""lt_dht — python3-libtorrent sessions that are only DHT nodes, on
loopback addresses, for the DHT tests (test_dht.py) and the DHT benchmark
(tests/bench/bench_dht.py).

One process runs one session per --listen address (session 0, 1, ... in
the order given), so that a large network of libtorrent nodes does not need
a Python process per node; each session has its own DHT node, id and
routing table, as a separate client would.

Run it with Debian's /usr/bin/python3 (the interpreter that has the
libtorrent module); tests start it through dhtnodes.LtDht.  It is bounded in
time (--timeout) and never contacts anything but the nodes it is given:
every setting goes to the session's constructor, dht_bootstrap_nodes is
empty, LSD, UPnP and NAT-PMP are off, and the loopback settings of
/work/shared/TESTING.md are applied (no routing or search restrictions on
one /24, raised DHT rate limits).

Usage:
  lt_dht.py --listen 127.0.0.3:PORT [--listen 127.0.0.4:PORT ...]
            [--node IP:PORT ...] [--timeout S] [--announce-interval S]
  (--node: introduced to every session of the process)

Output: one JSON object per line on stdout, each with "event"; those about
one session carry "session" (its index):
  {"event":"ready","address":"127.0.0.3:PORT","addresses":[...]}
  {"event":"status","id":N,"session":K,"nodes":N,"buckets":N}
  {"event":"peers","id":N,"session":K,"info_hash":HEX,
   "peers":["ip:port",...],"ms":F,"first_ms":F|null,"queries":N,
   "completed":true|false}                             after get_peers
  {"event":"announced","id":N,"session":K,"info_hash":HEX} after announce
  {"event":"stored","session":K,"info_hash":HEX,"peer":"ip:port"}
                                   another node announced to this one
  {"event":"exit","reason":"quit"|"timeout"|"signal"|"eof"}

A get_peers lookup is followed through libtorrent's DHT log (the
"[N] NEW target: HASH" and "[N] COMPLETED" lines of its traversal, enabled
on that session only while it has a lookup running): "ms" is the time from
the command to the end of the lookup, "first_ms" to the first answer that
held peers (dht_get_peers_reply_alert, which libtorrent posts per answer,
not at the end), "queries" the get_peers queries it sent
(dht_outgoing_get_peers_alert), "peers" every peer the answers held.  A
lookup that does not end within its timeout is reported with
"completed": false.

Commands, one JSON object per line on stdin ("session" defaults to 0):
  {"cmd":"add_node","session":K,"node":"IP:PORT"}
  {"cmd":"announce","id":N,"session":K,"info_hash":HEX}
        add a torrent for the hash: the session announces itself for it
  {"cmd":"get_peers","id":N,"session":K,"info_hash":HEX,"timeout":S}
  {"cmd":"status","id":N,"session":K}
  {"cmd":"quit"}
"""
import argparse
import json
import os
import re
import select
import shutil
import signal
import sys
import tempfile
import time

import libtorrent as lt

CAT = lt.alert.category_t
# What the harness needs; the DHT log only during a lookup (it is a few
# dozen alerts per lookup, and one per packet when left on).
MASK = (CAT.dht_operation_notification | CAT.dht_notification |
        CAT.stats_notification | CAT.error_notification)
MASK_LOOKUP = MASK | CAT.dht_log_notification
RE_NEW = re.compile(r"^\[(\d+)\] NEW target: ([0-9a-fA-F]{40})")
RE_COMPLETED = re.compile(r"^\[(\d+)\] COMPLETED")


def emit(event, **fields):
    sys.stdout.write(json.dumps(dict(event=event, **fields)) + "\n")
    sys.stdout.flush()


def parse_addr(s):
    host, port = s.rsplit(":", 1)
    return host.strip("[]"), int(port)


class Lookup:
    def __init__(self, rid, info_hash, timeout):
        self.id = rid
        self.info_hash = info_hash
        self.start = time.monotonic()
        self.deadline = self.start + timeout
        self.queries = 0
        self.peers = []
        self.first_ms = None
        self.tid = None        # libtorrent's traversal id, from the log

    def finish(self, session, completed):
        emit("peers", id=self.id, session=session, info_hash=self.info_hash,
             peers=self.peers,
             ms=round((time.monotonic() - self.start) * 1000, 2),
             first_ms=self.first_ms, queries=self.queries,
             completed=completed)


class Node:
    """One session: its alert pipe, lookups and status requests."""

    def __init__(self, index, address, args, save):
        self.index = index
        ip, port = parse_addr(address)
        self.address = "%s:%d" % (ip, port)
        self.save = save
        self.ses = lt.session({
            "listen_interfaces": self.address,
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
            "alert_mask": MASK,
            "alert_queue_size": 100000,
        })
        # libtorrent writes to the pipe when its alert queue stops being
        # empty: one select() serves every session and stdin.
        self.rfd, self.wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.ses.set_alert_fd(self.wfd)
        self.lookups = {}      # info-hash hex -> [Lookup] not yet mapped
        self.by_tid = {}       # traversal id -> Lookup
        self.status_ids = []
        self.logging = False
        for n in args.node:
            self.ses.add_dht_node(parse_addr(n))

    def running(self):
        return list(self.by_tid.values()) + [
            x for v in self.lookups.values() for x in v]

    def set_logging(self, on):
        if on != self.logging:
            self.ses.apply_settings({"alert_mask": MASK_LOOKUP if on
                                     else MASK})
            self.logging = on

    def command(self, c):
        cmd = c.get("cmd")
        if cmd == "add_node":
            self.ses.add_dht_node(parse_addr(c["node"]))
        elif cmd == "announce":
            atp = lt.add_torrent_params()
            atp.info_hashes = lt.info_hash_t(
                lt.sha1_hash(bytes.fromhex(c["info_hash"])))
            atp.save_path = self.save
            atp.flags &= ~lt.torrent_flags.paused
            atp.flags &= ~lt.torrent_flags.auto_managed
            self.ses.add_torrent(atp)
            emit("announced", id=c.get("id"), session=self.index,
                 info_hash=c["info_hash"])
        elif cmd == "get_peers":
            h = c["info_hash"].lower()
            self.set_logging(True)
            self.lookups.setdefault(h, []).append(
                Lookup(c.get("id"), h, float(c.get("timeout", 60))))
            self.ses.dht_get_peers(lt.sha1_hash(bytes.fromhex(h)))
        elif cmd == "status":
            self.status_ids.append(c.get("id"))
            self.ses.post_dht_stats()

    def _for_hash(self, h):
        return [x for x in self.running() if x.info_hash == h]

    def alerts(self):
        try:
            while os.read(self.rfd, 4096):
                pass
        except BlockingIOError:
            pass
        for a in self.ses.pop_alerts():
            if isinstance(a, lt.dht_log_alert):
                self._log(a.log_message())
            elif isinstance(a, lt.dht_outgoing_get_peers_alert):
                for x in self._for_hash(str(a.info_hash).lower()):
                    x.queries += 1
            elif isinstance(a, lt.dht_get_peers_reply_alert):
                got = ["%s:%d" % (p[0], p[1]) for p in a.peers()]
                for x in self._for_hash(str(a.info_hash).lower()):
                    if got and x.first_ms is None:
                        x.first_ms = round(
                            (time.monotonic() - x.start) * 1000, 2)
                    x.peers += [p for p in got if p not in x.peers]
            elif isinstance(a, lt.dht_announce_alert):
                emit("stored", session=self.index,
                     info_hash=str(a.info_hash).lower(),
                     peer="%s:%d" % (a.ip, a.port))
            elif isinstance(a, lt.dht_stats_alert):
                nodes = sum(b["num_nodes"] for b in a.routing_table)
                for rid in self.status_ids:
                    emit("status", id=rid, session=self.index, nodes=nodes,
                         buckets=len(a.routing_table))
                self.status_ids = []

    def _log(self, msg):
        m = RE_NEW.match(msg)
        if m:
            h = m.group(2).lower()
            waiting = self.lookups.get(h)
            if waiting:
                x = waiting.pop(0)
                if not waiting:
                    del self.lookups[h]
                x.tid = m.group(1)
                self.by_tid[x.tid] = x
            return
        m = RE_COMPLETED.match(msg)
        if m and m.group(1) in self.by_tid:
            self.by_tid.pop(m.group(1)).finish(self.index, True)
            self.set_logging(bool(self.running()))

    def expire(self, now):
        for x in self.running():
            if now >= x.deadline:
                if x.tid is not None:
                    self.by_tid.pop(x.tid, None)
                else:
                    self.lookups[x.info_hash].remove(x)
                    if not self.lookups[x.info_hash]:
                        del self.lookups[x.info_hash]
                x.finish(self.index, False)
        self.set_logging(bool(self.running()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--listen", action="append", required=True)
    ap.add_argument("--node", action="append", default=[])
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--announce-interval", type=int, default=5)
    args = ap.parse_args()

    save = tempfile.mkdtemp(prefix="lt_dht.")
    nodes = [Node(i, a, args, save) for i, a in enumerate(args.listen)]
    by_fd = {n.rfd: n for n in nodes}

    reason = ["timeout"]

    def on_signal(signum, frame):
        reason[0] = "signal"

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    emit("ready", address=nodes[0].address,
         addresses=[n.address for n in nodes])

    stdin = sys.stdin.fileno()
    os.set_blocking(stdin, False)
    inbuf = b""
    deadline = time.monotonic() + args.timeout
    while reason[0] == "timeout" and time.monotonic() < deadline:
        fds = list(by_fd) + ([stdin] if stdin is not None else [])
        try:
            ready, _, _ = select.select(fds, [], [], 0.05)
        except InterruptedError:
            continue
        for fd in ready:
            if fd != stdin:
                by_fd[fd].alerts()
                continue
            try:
                chunk = os.read(stdin, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                stdin = None
                reason[0] = "eof"
                break
            inbuf += chunk
            while b"\n" in inbuf:
                line, inbuf = inbuf.split(b"\n", 1)
                try:
                    c = json.loads(line)
                except ValueError:
                    continue
                if c.get("cmd") == "quit":
                    reason[0] = "quit"
                    break
                k = int(c.get("session", 0))
                if 0 <= k < len(nodes):
                    nodes[k].command(c)
        now = time.monotonic()
        for n in nodes:
            n.expire(now)
    emit("exit", reason=reason[0])
    shutil.rmtree(save, ignore_errors=True)
    os._exit(0)


if __name__ == "__main__":
    main()
