"""dhtnodes — DHT nodes on loopback for test_dht.py and bench_dht.py.

  KrpcClient(ip)        a tiny KRPC client over UDP on its own 127.0.0.x:
                        query() sends one query and returns the answer
                        (a response or an error) with the same "t".
  LtDht(workdir)        python3-libtorrent DHT nodes (lt_dht.py) in their
                        own /usr/bin/python3 process, driven by JSON lines:
                        one by default, `sessions` of them (one node each,
                        on its own 127.0.0.x) in one process on request.
  td_dht(workdir, ...)  a torrentd (peers.Torrentd) with dht = on and the
                        given bootstrap nodes; stop it with its stop().
  wait_joined(tds)      wait until each torrentd knows a good node.

Processes are bounded in time and stopped by PID (peers.Proc,
tdaemon.Daemon.stop()).  Nothing here contacts a non-loopback address;
bootstrap nodes are always given by the test.
"""
import json
import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import peers  # noqa: E402
from conftest import bdecode, bencode  # noqa: E402

LT_DHT = os.path.join(HERE, "lt_dht.py")


class KrpcClient:
    """One UDP socket on ip; queries to (host, port) of a DHT node."""

    def __init__(self, ip=None, node_id=None):
        self.ip = ip or peers.next_address()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.ip, 0))
        self.port = self.sock.getsockname()[1]
        self.id = node_id or os.urandom(20)
        self.next_tid = 1
        self.queries_in = []   # queries the node sent us (join pings)

    def close(self):
        self.sock.close()

    def send_raw(self, data, to):
        self.sock.sendto(data, to)

    def recv(self, timeout):
        """The next datagram as (decoded or None, raw), or (None, None)."""
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            return None, None
        try:
            return bdecode(data), data
        except Exception:
            return None, data

    def wait_reply(self, tid, timeout=2.0):
        """The response or error with transaction id tid, or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg, raw = self.recv(deadline - time.monotonic())
            if raw is None:
                return None
            if not isinstance(msg, dict):
                continue
            if msg.get(b"y") == b"q":
                self.queries_in.append(msg)
                continue
            if msg.get(b"t") == tid:
                return msg
        return None

    def new_tid(self):
        t = b"%c%c" % (65 + self.next_tid // 26 % 26, 97 + self.next_tid % 26)
        self.next_tid += 1
        return t

    def query(self, to, method, args=None, tid=None, timeout=2.0,
              extra=None):
        tid = tid if tid is not None else self.new_tid()
        a = {"id": self.id}
        a.update(args or {})
        msg = {"t": tid, "y": "q", "q": method, "a": a}
        msg.update(extra or {})
        self.sock.sendto(bencode(msg), to)
        return self.wait_reply(tid, timeout)

    def expect_silence(self, timeout=0.5):
        """True if no response or error comes within timeout (queries
        from the node are kept aside)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg, raw = self.recv(deadline - time.monotonic())
            if raw is None:
                return True
            if isinstance(msg, dict) and msg.get(b"y") == b"q":
                self.queries_in.append(msg)
                continue
            return False
        return True


def compact_peers(values):
    """The "ip:port" of each 6-byte compact peer in a get_peers "values"
    list (others are skipped)."""
    return ["%s:%d" % p for v in values if len(v) == 6
            for p in peers.compact_peers(v)]


class LtDht(peers._JsonLinesProc):
    """python3-libtorrent DHT nodes (lt_dht.py) in one process: `sessions`
    sessions, each a node on its own 127.0.0.x.  Session 0's address is
    ip/port; every method takes the session it is about (default 0)."""
    kind = "libtorrent-dht"
    quits = True

    def __init__(self, workdir, name="ltdht", ip=None, port=None, bound=600,
                 sessions=1):
        ip = ip or peers.next_address()
        self.addrs = [(ip, port or peers.free_port(ip))]
        for _ in range(sessions - 1):
            a = peers.next_address()
            self.addrs.append((a, peers.free_port(a)))
        self.ip, self.port = self.addrs[0]
        self.dir = os.path.join(str(workdir), name)
        os.makedirs(self.dir, exist_ok=True)
        self.bound = bound
        self.proc = None
        self.out_path = os.path.join(self.dir, "events.jsonl")
        self.next_id = 1

    def address(self, session=0):
        return "%s:%d" % self.addrs[session]

    def addresses(self):
        return ["%s:%d" % a for a in self.addrs]

    def start(self, nodes=(), announce_interval=5):
        """Start the process; nodes are introduced to every session."""
        argv = [peers.SYSTEM_PYTHON, "-u", LT_DHT,
                "--timeout", str(self.bound - 5),
                "--announce-interval", str(announce_interval)]
        for a in self.addresses():
            argv += ["--listen", a]
        for n in nodes:
            argv += ["--node", n]
        self.proc = peers.Proc(argv, self.bound,
                               os.path.join(self.dir, "stderr.log"),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               name="lt_dht", text=True)
        self._stdin = self.proc.wrapper.stdin
        self._start_reader()
        self.wait_event("ready", 30 + len(self.addrs) // 4)
        return self

    def command(self, **cmd):
        rid = self.next_id
        self.next_id += 1
        cmd["id"] = rid
        try:
            self._stdin.write(json.dumps(cmd) + "\n")
            self._stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass
        return rid

    def add_node(self, address, session=0):
        self.command(cmd="add_node", node=address, session=session)

    def announce(self, info_hash_hex, session=0):
        """Add a torrent for the hash: the session announces it on the DHT
        (libtorrent does so within a few seconds, and again every
        announce_interval).  stored() tells which nodes got it."""
        rid = self.command(cmd="announce", info_hash=info_hash_hex,
                           session=session)
        return self.wait_event("announced", 10, lambda e: e["id"] == rid)

    def get_peers(self, info_hash_hex, timeout=60, session=0):
        """A get_peers lookup to its end: the "peers" event (peers, ms,
        first_ms, queries, completed; see lt_dht.py)."""
        rid = self.command(cmd="get_peers", info_hash=info_hash_hex,
                           session=session, timeout=timeout)
        return self.wait_event("peers", timeout + 10,
                               lambda e: e["id"] == rid)

    def nodes(self, timeout=10, session=0):
        """The number of nodes in the session's routing table."""
        rid = self.command(cmd="status", session=session)
        return self.wait_event("status", timeout,
                               lambda e: e["id"] == rid)["nodes"]

    def stored(self, info_hash_hex):
        """The sessions of this process that another node announced
        info_hash_hex to (announce_peer received), as a set of indexes."""
        h = info_hash_hex.lower()
        return {e["session"] for e in self.find("stored")
                if e["info_hash"] == h}


def td_dht(workdir, name, bootstrap=(), ip=None, config=None):
    """A peers.Torrentd with the DHT on, bootstrapping from the given
    "ip:port" nodes only (never public routers)."""
    cfg = {"dht": "on", "dht_bootstrap": ",".join(bootstrap),
           "log_level": "info"}
    cfg.update(config or {})
    return peers.Torrentd(workdir, name=name, ip=ip, config=cfg)


def wait_joined(tds, timeout=30, what=None):
    """Wait until each torrentd of tds has at least one good node in its
    routing table (dht.status); fails after timeout seconds per node."""
    for td in tds:
        peers.wait_until(
            lambda: td.call("dht.status")["nodes"]["good"] >= 1, timeout,
            what=what or "%s to join the DHT" % td.ip)
