"""The tracker client, observed from the tracker's side.

A small tracker written here (HTTP through http.server on a thread, and a
BEP 15 UDP one) records every request a torrentd sends and answers as the
test wants.  A torrentd downloads a small torrent from a torrentd seeder
(DHT and LSD off) whose .torrent announces to it, and the tests check what
a mature client does:

- events: "started" first, "completed" exactly once when the download
  finishes (never when a complete torrent starts again), "stopped" exactly
  once on torrentctl stop, on removal and on SIGTERM, and nothing after
  "stopped";
- numbers: left = bytes missing of the whole torrent (0 once complete),
  uploaded/downloaded = payload bytes since the "started" of this
  announce session (what Transmission and libtorrent send: BEP 3 says
  "total amount", the spec's wiki and every mature client read it as
  "since the client sent 'started'"; the all-time totals stay in
  torrent.get), port = the listen port, compact=1, numwant sane, peer_id
  and key stable for the whole run of a daemon, info_hash right, binary
  values percent-encoded byte by byte;
- intervals: "interval" and "min interval" are followed, a "tracker id"
  is sent back as trackerid (and kept when a later answer has none);
- errors: a failure reason, a warning, HTTP 500, a body that is not
  bencode and a refused connection are shown by torrentctl trackers (and
  --json) and do not stop the torrent; a failing tracker is retried with
  a growing back-off; BEP 12 moves the tracker that works to the front of
  its tier and stays with it;
- UDP: connect, then announce with the connection id, which is reused
  for its minute; the same numbers as HTTP; an error answer is shown.

Also: "left" and "completed" count the whole torrent, not the wanted
files (as Transmission and libtorrent do), and a SIGTERM waits (bounded)
for the trackers' "stopped".

Loopback only: every daemon and tracker has its own 127.0.X.Y.  Every
torrentd runs under `timeout` and is stopped by PID (peers.Torrentd).
"""
import hashlib
import http.server
import json
import os
import re
import shutil
import socket
import struct
import threading
import time
import urllib.parse

import pytest

from conftest import bencode, write_file
from peers import Torrentd, free_port, next_address, wait_until

KiB = 1024
SIZE = 1 << 20          # the torrent: 1 MiB ...
PIECE = 32 * KiB        # ... in 32 pieces
INTERVAL = 5            # what the trackers answer (the engine's floor is 5)

UNRESERVED = re.compile(r"^(?:[A-Za-z0-9._~-]|%[0-9A-F]{2})*$")


# ------------------------------------------------------------ the torrent

def make_meta(data_path, tiers, out):
    """A single-file .torrent of data_path with the given tiers (a list of
    lists of URLs): announce = the first URL, announce-list = tiers.
    Returns (path, info_hash bytes)."""
    pieces = b""
    with open(data_path, "rb") as f:
        while True:
            chunk = f.read(PIECE)
            if not chunk:
                break
            pieces += hashlib.sha1(chunk).digest()
    info = {"name": os.path.basename(data_path),
            "length": os.path.getsize(data_path),
            "piece length": PIECE, "pieces": pieces}
    meta = {"announce": tiers[0][0], "announce-list": tiers, "info": info}
    with open(out, "wb") as f:
        f.write(bencode(meta))
    return out, hashlib.sha1(bencode(info)).digest()


def make_meta_dir(dir_path, names, tiers, out):
    """A multi-file .torrent of dir_path/names (in that order)."""
    blob, files = b"", []
    for n in names:
        with open(os.path.join(dir_path, n), "rb") as f:
            d = f.read()
        blob += d
        files.append({"length": len(d), "path": [n]})
    pieces = b"".join(hashlib.sha1(blob[i:i + PIECE]).digest()
                      for i in range(0, len(blob), PIECE))
    info = {"name": os.path.basename(dir_path), "files": files,
            "piece length": PIECE, "pieces": pieces}
    meta = {"announce": tiers[0][0], "announce-list": tiers, "info": info}
    with open(out, "wb") as f:
        f.write(bencode(meta))
    return out, hashlib.sha1(bencode(info)).digest()


# ------------------------------------------------------------ observers

class Swarm:
    """Peers by info-hash, as a tracker keeps them: announced address
    (the source IP of the request, the port it gave), forgotten on
    "stopped"."""

    def __init__(self):
        self.lock = threading.Lock()
        self.peers = {}

    def update(self, ih, pid, ip, port, stopped):
        with self.lock:
            d = self.peers.setdefault(ih, {})
            if stopped:
                d.pop(pid, None)
            else:
                d[pid] = (ip, port)

    def compact(self, ih, exclude):
        with self.lock:
            return b"".join(socket.inet_aton(ip) + struct.pack(">H", port)
                            for pid, (ip, port) in
                            self.peers.get(ih, {}).items() if pid != exclude)

    def counts(self, ih):
        with self.lock:
            return len(self.peers.get(ih, {}))


class HttpTracker:
    """An HTTP tracker on ip:port (a thread of http.server).

    requests: one dict per request (in arrival order) with "t" (monotonic
    time), "ip" (source address), "path", "raw" (the query as sent,
    name -> raw value), "q" (name -> decoded bytes) and, for announces,
    "event" ('' when none) and the integers "left", "downloaded",
    "uploaded", "port", "numwant".  answer(req) -> (status, body) decides
    the answer: the default is a working tracker (interval INTERVAL,
    compact peers of the swarm).  delay(req) -> seconds to wait before
    answering (0 by default)."""

    def __init__(self, ip=None, interval=INTERVAL):
        self.ip = ip or next_address()
        self.interval = interval
        self.extra = {}          # merged into the default answer
        self.swarm = Swarm()
        self.requests = []
        self.lock = threading.Lock()
        self.answer = self.default_answer
        self.delay = lambda req: 0
        tracker = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self):
                tracker._handle(self)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((self.ip, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.1},
                                       daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def url(self, path="/announce"):
        return "http://%s:%d%s" % (self.ip, self.port, path)

    def _handle(self, h):
        path, _, query = h.path.partition("?")
        raw, q = {}, {}
        for part in query.split("&") if query else []:
            k, _, v = part.partition("=")
            k = urllib.parse.unquote(k)
            assert k not in raw, "parameter %r twice in %r" % (k, h.path)
            raw[k] = v
            q[k] = urllib.parse.unquote_to_bytes(v)
        req = {"t": time.monotonic(), "ip": h.client_address[0],
               "path": path, "raw": raw, "q": q, "headers": dict(h.headers)}
        if path.endswith("/announce"):
            req["event"] = q.get("event", b"").decode()
            for k in ("left", "downloaded", "uploaded", "port", "numwant"):
                if k in q:
                    req[k] = int(q[k])
        with self.lock:
            self.requests.append(req)
        d = self.delay(req)
        if d:
            time.sleep(d)
        status, body = self.answer(req)
        try:
            h.send_response(status)
            h.send_header("Content-Type", "text/plain")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
        except OSError:
            pass  # the client gave up (a cancelled request)

    def default_answer(self, req):
        q = req["q"]
        ih, pid = q.get("info_hash", b""), q.get("peer_id", b"")
        self.swarm.update(ih, pid, req["ip"], req.get("port", 0),
                          req.get("event") == "stopped")
        d = {"interval": self.interval, "complete": 1,
             "incomplete": self.swarm.counts(ih),
             "peers": self.swarm.compact(ih, pid)}
        d.update(self.extra)
        return 200, bencode(d)

    def announces(self, ip=None):
        with self.lock:
            return [r for r in self.requests
                    if r["path"].endswith("/announce") and
                    (ip is None or r["ip"] == ip)]


class UdpTracker:
    """A BEP 15 tracker on ip:port.

    log: ("connect", t, ip, connection id) and ("announce", t, ip, fields)
    tuples, fields a dict with the announce's values (event as a number),
    "cid" the connection id it used and "cid_age" the seconds since that
    id was given out.  mode "ok" answers announces (interval INTERVAL,
    the swarm), "error" answers them with an error datagram (message)."""

    PROTOCOL_ID = 0x41727101980

    def __init__(self, ip=None, interval=INTERVAL):
        self.ip = ip or next_address()
        self.interval = interval
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.ip, 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.conns = {}
        self.log = []
        self.bad = []
        self.lock = threading.Lock()
        self.swarm = Swarm()
        self.mode = "ok"
        self.message = b"udp tracker says no"
        self.connect_delay = 0
        self.stopped_delay = 0      # "stopped" answered this late
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def url(self):
        return "udp://%s:%d/announce" % (self.ip, self.port)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self._stop.set()
        self.thread.join(5)
        self.sock.close()

    def _run(self):
        deadline = time.monotonic() + 900  # bounded, whatever happens
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                data, addr = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            self._handle(data, addr)

    def _handle(self, data, addr):
        now = time.monotonic()
        if len(data) < 16:
            self.bad.append(("short", data))
            return
        cid, action, tid = struct.unpack(">QII", data[:16])
        if action == 0:
            if cid != self.PROTOCOL_ID or len(data) != 16:
                self.bad.append(("connect", data))
                return
            if self.connect_delay:
                # Answered later, from a thread: the loop goes on.
                threading.Timer(self.connect_delay, self._connected,
                                (tid, addr)).start()
            else:
                self._connected(tid, addr)
            return
        if action != 1 or len(data) < 98:
            self.bad.append(("action", data))
            return
        with self.lock:
            given = self.conns.get(cid)
        if given is None or now - given > 120:
            # BEP 15: a tracker drops a request with an unknown id.
            self.bad.append(("cid", data))
            return
        (ih, pid, downloaded, left, uploaded, event, ip, key, numwant,
         port) = struct.unpack(">20s20sQQQIIIiH", data[16:98])
        f = {"info_hash": ih, "peer_id": pid, "downloaded": downloaded,
             "left": left, "uploaded": uploaded, "event": event, "ip": ip,
             "key": key, "numwant": numwant, "port": port, "cid": cid,
             "cid_age": now - given, "len": len(data)}
        with self.lock:
            self.log.append(("announce", now, addr[0], f))
        if self.mode == "error":
            self.sock.sendto(struct.pack(">II", 3, tid) + self.message, addr)
            return
        self.swarm.update(ih, pid, addr[0], port, event == 3)
        body = struct.pack(">IIIII", 1, tid, self.interval,
                           self.swarm.counts(ih), 1)
        body += self.swarm.compact(ih, pid)
        if event == 3 and self.stopped_delay:
            threading.Timer(self.stopped_delay, self._answer_stopped,
                            (body, addr)).start()
            return
        self.sock.sendto(body, addr)

    def _answer_stopped(self, body, addr):
        try:
            self.sock.sendto(body, addr)
        except OSError:
            pass

    def _connected(self, tid, addr):
        new = int.from_bytes(os.urandom(8), "big")
        with self.lock:
            now = time.monotonic()
            self.conns[new] = now
            self.log.append(("connect", now, addr[0], new))
        try:
            self.sock.sendto(struct.pack(">IIQ", 0, tid, new), addr)
        except OSError:
            pass  # closed: the test is over

    def announces(self, ip=None):
        with self.lock:
            return [(t, f) for kind, t, a, f in self.log
                    if kind == "announce" and (ip is None or a == ip)]

    def connects(self, ip=None):
        with self.lock:
            return [(t, c) for kind, t, a, c in self.log
                    if kind == "connect" and (ip is None or a == ip)]


# ------------------------------------------------------------ fixtures

def daemon(workdir, started, name, ip=None, port=None):
    d = Torrentd(workdir, name, ip=ip, port=port,
                 config={"lsd": "off"}).start(bound=600)
    started.append(d)
    return d


def seeder(workdir, started, tor, data):
    s = daemon(workdir, started, "seed")
    shutil.copy(data, os.path.join(s.download_dir, os.path.basename(data)))
    h = s.add(tor)
    s.wait_state(h, ["seeding"], 60)
    return s, h


def small_torrent(workdir, tiers, name="small.bin"):
    data = os.path.join(str(workdir), name)
    write_file(data, SIZE, seed=21)
    tor, ih = make_meta(data, tiers, os.path.join(str(workdir),
                                                  name + ".torrent"))
    return data, tor, ih


def tctl(ctl, d, *args):
    return ctl("--socket", d.daemon.control_socket, *args, rc=0)


def trackers_json(ctl, d, h):
    r = tctl(ctl, d, "--json", "trackers", h)
    return json.loads(r.stdout)["trackers"]


def wait_new(get, n, timeout, what):
    """Wait until get() has more than n items; returns the list."""
    return wait_until(lambda: (lambda v: v if len(v) > n else None)(get()),
                      timeout, 0.05, what)


def check_http_announce(r, ih, port, size):
    """The fixed parts of one HTTP announce of our torrent."""
    q, raw = r["q"], r["raw"]
    assert q["info_hash"] == ih, r
    assert len(q["peer_id"]) == 20, r
    for k in ("info_hash", "peer_id"):
        # Byte by byte: RFC 3986 unreserved bytes as they are, every other
        # byte as %XX (upper case), nothing else.
        assert UNRESERVED.match(raw[k]), raw[k]
        assert urllib.parse.quote_from_bytes(q[k], safe="") == raw[k], raw[k]
    assert r["port"] == port, r
    assert q["compact"] == b"1", r
    assert re.match(rb"^[0-9A-Fa-f]{8}$", q["key"]), r
    assert 0 <= r["left"] <= size and r["downloaded"] >= 0 \
        and r["uploaded"] >= 0, r
    if r["event"] == "stopped":
        assert r.get("numwant", 0) == 0, r
    else:
        assert 1 <= r["numwant"] <= 1000, r
    assert r["event"] in ("", "started", "completed", "stopped"), r


def events(reqs):
    return [r["event"] for r in reqs]


# ------------------------------------------------------------ HTTP

def test_http_events_and_numbers(workdir, started, ctl):
    """The life of a torrent as its tracker sees it: started, completed
    once, regular announces, stopped on torrentctl stop, started again
    (no completed), stopped on SIGTERM, started after the restart (no
    completed, counters since started), stopped on removal."""
    trk = HttpTracker().start()
    started.append(trk)
    data, tor, ih = small_torrent(workdir, [[trk.url()]])
    s, h = seeder(workdir, started, tor, data)

    # The seeder: started with left=0, and never completed.
    seed_reqs = wait_new(lambda: trk.announces(s.ip), 0, 15,
                         "the seeder's started")
    assert seed_reqs[0]["event"] == "started"
    assert seed_reqs[0]["left"] == 0

    leech = daemon(workdir, started, "leech")
    assert leech.add(tor) == h
    leech.wait_complete(h, 60)
    got = wait_until(lambda: (lambda v: v if "completed" in events(v)
                              else None)(trk.announces(leech.ip)),
                     15, 0.05, "completed from the leecher")
    # And a regular announce after it (interval 5 s).
    n = len(got)
    got = wait_new(lambda: trk.announces(leech.ip), n, INTERVAL + 5,
                   "a regular announce after completed")
    ev = events(got)
    assert ev[0] == "started", ev
    assert ev.count("started") == 1 and ev.count("completed") == 1, ev
    assert ev[-1] == "", ev
    first = got[0]
    assert first["left"] == SIZE and first["downloaded"] == 0 \
        and first["uploaded"] == 0, first
    done = got[ev.index("completed")]
    assert done["left"] == 0 and done["downloaded"] == SIZE, done
    assert got[-1]["left"] == 0 and got[-1]["downloaded"] == SIZE, got[-1]
    for r in got:
        check_http_announce(r, ih, leech.port, SIZE)
    # One peer id and one key for the whole run.
    assert len({r["q"]["peer_id"] for r in got}) == 1
    assert len({r["q"]["key"] for r in got}) == 1
    pid, key = got[0]["q"]["peer_id"], got[0]["q"]["key"]
    # The seeder's uploads show in its announces (since its started).
    wait_until(lambda: any(r["uploaded"] == SIZE
                           for r in trk.announces(s.ip)), INTERVAL + 5,
               0.1, "the seeder's announce with uploaded = size")
    assert "completed" not in events(trk.announces(s.ip))

    # torrentctl stop: one stopped, then silence.
    n = len(trk.announces(leech.ip))
    tctl(ctl, leech, "stop", h)
    got = wait_until(lambda: (lambda v: v if "stopped" in events(v[n:])
                              else None)(trk.announces(leech.ip)),
                     10, 0.05, "stopped after torrentctl stop")
    time.sleep(INTERVAL + 2)
    got = trk.announces(leech.ip)
    assert events(got[n:]) == ["stopped"], events(got)
    stopped = got[-1]
    check_http_announce(stopped, ih, leech.port, SIZE)
    assert stopped["left"] == 0 and stopped["downloaded"] == SIZE, stopped
    assert stopped["q"]["peer_id"] == pid and stopped["q"]["key"] == key

    # torrentctl start: started again, left 0, counters since started;
    # no completed (it was complete before).
    n = len(got)
    tctl(ctl, leech, "start", h)
    got = wait_new(lambda: trk.announces(leech.ip), n + 1, INTERVAL + 5,
                   "started and a regular announce after start")
    assert events(got[n:n + 2]) == ["started", ""], events(got)
    for r in got[n:]:
        check_http_announce(r, ih, leech.port, SIZE)
        assert r["left"] == 0 and r["downloaded"] == 0, r
        assert r["q"]["peer_id"] == pid and r["q"]["key"] == key, r

    # SIGTERM: one stopped before the daemon exits.
    n = len(got)
    leech.stop()
    got = trk.announces(leech.ip)
    assert events(got[n:]) == ["stopped"], events(got)
    assert got[-1]["left"] == 0

    # The same daemon again (same state): started, left 0, counters since
    # this started, and no completed.
    n = len(got)
    leech = daemon(workdir, started, "leech", ip=leech.ip, port=leech.port)
    got = wait_new(lambda: trk.announces(leech.ip), n + 1, INTERVAL + 10,
                   "started and a regular announce after the restart")
    assert events(got[n:n + 2]) == ["started", ""], events(got)
    for r in got[n:]:
        check_http_announce(r, ih, leech.port, SIZE)
        assert r["left"] == 0 and r["downloaded"] == 0 \
            and r["uploaded"] == 0, r
    assert leech.get(h)["downloaded_bytes"] == SIZE  # all-time, kept
    pid2 = got[-1]["q"]["peer_id"]
    assert {r["q"]["peer_id"] for r in got[n:]} == {pid2}
    assert len({r["q"]["key"] for r in got[n:]}) == 1

    # Removal: one stopped, then silence.
    n = len(got)
    leech.call("torrent.remove", torrent=h)
    wait_until(lambda: "stopped" in events(trk.announces(leech.ip)[n:]), 10,
               0.05, "stopped after torrent.remove")
    time.sleep(INTERVAL + 2)
    assert events(trk.announces(leech.ip)[n:]) == ["stopped"]
    leech.stop()
    assert events(trk.announces(leech.ip)[n:]) == ["stopped"]


def test_http_left_and_completed_count_the_whole_torrent(workdir, started):
    """A file skipped: left stays at the bytes missing of the whole
    torrent and "completed" waits (a tracker would count a seed that is
    none); once the file is wanted and fetched, one "completed", left 0
    (what Transmission and libtorrent do)."""
    trk = HttpTracker().start()
    started.append(trk)
    src = os.path.join(str(workdir), "two")
    half = SIZE // 2
    write_file(os.path.join(src, "a.bin"), half, seed=31)
    write_file(os.path.join(src, "b.bin"), half, seed=32)
    tor, ih = make_meta_dir(src, ["a.bin", "b.bin"], [[trk.url()]],
                            os.path.join(str(workdir), "two.torrent"))
    s = daemon(workdir, started, "seed")
    shutil.copytree(src, os.path.join(s.download_dir, "two"))
    h = s.add(tor)
    s.wait_state(h, ["seeding"], 60)
    leech = daemon(workdir, started, "leech")
    leech.add(tor, paused=True)
    leech.call("torrent.set", torrent=h,
               files=[{"index": 1, "wanted": False}])
    leech.call("torrent.start", torrent=h)
    wait_until(lambda: leech.get(h)["have_bytes"] >= half, 60, 0.1,
               "the wanted file")
    n = len(trk.announces(leech.ip))
    got = wait_new(lambda: trk.announces(leech.ip), n, INTERVAL + 5,
                   "an announce after the wanted file is done")
    assert "completed" not in events(got), events(got)
    assert got[-1]["left"] == half, got[-1]
    leech.call("torrent.set", torrent=h,
               files=[{"index": 1, "wanted": True}])
    leech.wait_complete(h, 60)
    got = wait_until(lambda: (lambda v: v if "completed" in events(v)
                              else None)(trk.announces(leech.ip)),
                     15, 0.05, "completed")
    assert events(got).count("completed") == 1, events(got)
    assert got[events(got).index("completed")]["left"] == 0
    assert got[events(got).index("completed")]["downloaded"] == SIZE


def test_http_completed_while_started_in_flight(workdir, started):
    """The download ends while the tracker has not answered "started" yet
    (that announce said left > 0): "completed" still follows, once."""
    trk = HttpTracker().start()
    started.append(trk)
    data, tor, ih = small_torrent(workdir, [[trk.url()]])
    s, h = seeder(workdir, started, tor, data)
    leech = daemon(workdir, started, "leech")
    trk.delay = lambda r: 4 if r["ip"] == leech.ip and \
        r["event"] == "started" else 0
    leech.add(tor)
    leech.add_peer(h, s.peer_address())
    leech.wait_complete(h, 30)
    got = wait_until(lambda: (lambda v: v if "completed" in events(v)
                              else None)(trk.announces(leech.ip)),
                     15, 0.05, "completed after the slow started")
    assert got[0]["event"] == "started" and got[0]["left"] == SIZE, got[0]
    time.sleep(1)
    ev = events(trk.announces(leech.ip))
    assert ev.count("completed") == 1 and ev.count("started") == 1, ev


def test_http_stop_while_started_in_flight(workdir, started, ctl):
    """A stop while "started" is unanswered: the tracker may have counted
    us, so it gets "stopped" too."""
    trk = HttpTracker().start()
    started.append(trk)
    data, tor, ih = small_torrent(workdir, [[trk.url()]])
    leech = daemon(workdir, started, "leech")
    trk.delay = lambda r: 5 if r["event"] == "started" else 0
    h = leech.add(tor)
    wait_new(lambda: trk.announces(leech.ip), 0, 10, "started")
    tctl(ctl, leech, "stop", h)
    wait_until(lambda: "stopped" in events(trk.announces(leech.ip)), 10,
               0.05, "stopped")
    time.sleep(INTERVAL + 1)
    assert events(trk.announces(leech.ip)) == ["started", "stopped"]


def test_http_interval_min_interval_and_tracker_id(workdir, started):
    """interval below min interval: the min interval wins; a tracker id is
    sent back as trackerid, byte for byte, and kept when an answer has
    none; a plain interval is followed."""
    trk = HttpTracker().start()
    started.append(trk)
    tid = b"id &=/?%\xff\x00x"
    trk.interval = 2
    trk.extra = {"min interval": 7, "tracker id": tid}
    data, tor, ih = small_torrent(workdir, [[trk.url()]])
    leech = daemon(workdir, started, "leech")
    leech.add(tor)
    got = wait_new(lambda: trk.announces(leech.ip), 1, 15,
                   "two announces")
    assert "trackerid" not in got[0]["q"]
    assert got[1]["q"]["trackerid"] == tid, got[1]
    gap = got[1]["t"] - got[0]["t"]
    assert 6.5 <= gap <= 9.5, gap
    trk.interval = INTERVAL
    trk.extra = {}
    got = wait_new(lambda: trk.announces(leech.ip), 3, 20,
                   "four announces")
    assert got[3]["q"]["trackerid"] == tid, got[3]
    gap = got[3]["t"] - got[2]["t"]
    assert INTERVAL - 0.5 <= gap <= INTERVAL + 2.5, gap
    assert events(got) == ["started", "", "", ""], events(got)
    leech.stop()


def test_http_errors_shown_and_retried(workdir, started, ctl):
    """Tier 1: a failure reason, HTTP 500, a body that is not bencode and
    a refused connection; tier 2: a tracker that works with a warning.
    torrentctl trackers shows each message; the torrent downloads anyway;
    a failing tracker is tried again later, with a growing back-off, and
    is told "started" (it never accepted us)."""
    fail = HttpTracker().start()
    fail.answer = lambda r: (200, bencode({"failure reason":
                                           "not registered here"}))
    e500 = HttpTracker().start()
    e500.answer = lambda r: (500, b"<html>Internal Server Error</html>")
    junk = HttpTracker().start()
    junk.answer = lambda r: (200, b"<html>hello</html>")
    warn = HttpTracker().start()
    warn.extra = {"warning message": "tracker moves soon"}
    started.extend([fail, e500, junk, warn])
    dead_ip = next_address()
    dead = "http://%s:%d/announce" % (dead_ip, free_port(dead_ip))
    tier1 = [fail.url(), e500.url(), junk.url(), dead]
    data, tor, ih = small_torrent(workdir, [tier1, [warn.url()]])
    s, h = seeder(workdir, started, tor, data)
    leech = daemon(workdir, started, "leech")
    leech.add(tor)
    leech.add_peer(h, s.peer_address())

    def all_reported():
        v = trackers_json(ctl, leech, h)
        return v if all(t["status"] in ("error", "working") and
                        t["message"] for t in v) else None
    v = wait_until(all_reported, 20, 0.2, "every tracker with a message")
    by = {t["url"]: t for t in v}
    assert by[fail.url()]["status"] == "error"
    assert by[fail.url()]["message"] == "not registered here"
    assert by[fail.url()]["last_error"] == "not registered here"
    assert "500" in by[e500.url()]["message"]
    assert "bencode" in by[junk.url()]["message"]
    assert by[dead]["status"] == "error"
    assert "connect" in by[dead]["message"].lower(), by[dead]
    assert by[warn.url()]["status"] == "working"
    assert by[warn.url()]["warning"] == "tracker moves soon"
    assert by[warn.url()]["message"] == "tracker moves soon"
    assert [t["tier"] for t in v] == [0, 0, 0, 0, 1]
    for t in v[:4]:
        assert t["fails"] >= 1, t
    text = tctl(ctl, leech, "trackers", h).stdout
    for m in ("not registered here", "500", "tracker moves soon"):
        assert m in text, text
    # The torrent is not stopped by any of it.
    leech.wait_complete(h, 60)
    assert leech.get(h)["state"] == "seeding"
    # Back-off: the failing tracker is asked again, less and less often,
    # and each time told "started".
    got = wait_new(lambda: fail.announces(leech.ip), 2, 30,
                   "three tries of the failing tracker")
    assert events(got) == ["started"] * len(got), events(got)
    g1 = got[1]["t"] - got[0]["t"]
    g2 = got[2]["t"] - got[1]["t"]
    assert g1 >= 4.5 and g2 >= 1.5 * g1, (g1, g2)
    leech.stop()
    # "stopped" only to the one that accepted "started".
    assert events(warn.announces(leech.ip))[-1] == "stopped"
    for t in (fail, e500, junk):
        assert "stopped" not in events(t.announces(leech.ip))


def test_bep12_working_tracker_moves_to_front(workdir, started, ctl):
    """One tier: three trackers that fail and one that works.  The one that
    works moves to the front of the tier and is the only one asked from
    then on."""
    bad = [HttpTracker().start() for _ in range(2)]
    for b in bad:
        b.answer = lambda r: (500, b"no")
    good = HttpTracker().start()
    started.extend(bad + [good])
    dead_ip = next_address()
    dead = "http://%s:%d/announce" % (dead_ip, free_port(dead_ip))
    tier = [bad[0].url(), dead, bad[1].url(), good.url()]
    data, tor, ih = small_torrent(workdir, [tier])
    leech = daemon(workdir, started, "leech")
    h = leech.add(tor)
    wait_new(lambda: good.announces(leech.ip), 0, 20, "the good tracker")
    v = trackers_json(ctl, leech, h)
    assert v[0]["url"] == good.url(), v
    assert v[0]["status"] == "working"
    n_bad = [len(b.announces(leech.ip)) for b in bad]
    assert all(n <= 1 for n in n_bad), n_bad
    got = wait_new(lambda: good.announces(leech.ip), 2, 2 * INTERVAL + 5,
                   "two more announces to the good tracker")
    assert events(got[:3]) == ["started", "", ""], events(got)
    assert [len(b.announces(leech.ip)) for b in bad] == n_bad
    assert trackers_json(ctl, leech, h)[0]["url"] == good.url()
    leech.stop()


# ------------------------------------------------------------ UDP

def test_udp_events_numbers_and_errors(workdir, started, ctl):
    """BEP 15: connect, then announces that reuse the connection id within
    its minute; the same events and numbers as HTTP; an error answer is
    shown by torrentctl trackers; stopped once on torrentctl stop."""
    trk = UdpTracker().start()
    started.append(trk)
    data, tor, ih = small_torrent(workdir, [[trk.url()]])
    s, h = seeder(workdir, started, tor, data)
    seed0 = wait_until(lambda: trk.announces(s.ip), 15, 0.05,
                       "the seeder's announce")
    assert seed0[0][1]["event"] == 2 and seed0[0][1]["left"] == 0
    leech = daemon(workdir, started, "leech")
    leech.add(tor)
    leech.wait_complete(h, 60)
    wait_until(lambda: 1 in [f["event"] for _, f in
                             trk.announces(leech.ip)], 15, 0.05,
               "completed from the leecher")
    n = len(trk.announces(leech.ip))
    got = wait_new(lambda: trk.announces(leech.ip), n, INTERVAL + 5,
                   "a regular announce after completed")
    ev = [f["event"] for _, f in got]
    assert ev[0] == 2 and ev.count(2) == 1 and ev.count(1) == 1, ev
    assert ev[-1] == 0, ev
    first, done = got[0][1], got[ev.index(1)][1]
    assert (first["left"], first["downloaded"], first["uploaded"]) == \
        (SIZE, 0, 0), first
    assert done["left"] == 0 and done["downloaded"] == SIZE, done
    for _, f in got:
        assert f["info_hash"] == ih and f["port"] == leech.port, f
        assert f["len"] == 98 and f["ip"] == 0, f
        assert f["numwant"] == -1 or 1 <= f["numwant"] <= 1000, f
        assert f["cid_age"] < 60, f
    assert len({f["peer_id"] for _, f in got}) == 1
    assert len({f["key"] for _, f in got}) == 1
    # One connect, its id used by every announce (all within a minute).
    conns = trk.connects(leech.ip)
    assert len(conns) == 1, conns
    assert {f["cid"] for _, f in got} == {conns[0][1]}
    assert got[0][0] > conns[0][0]
    assert not trk.bad, trk.bad

    # An error answer is shown, and the torrent goes on.
    trk.mode = "error"
    n = len(got)
    wait_new(lambda: trk.announces(leech.ip), n, INTERVAL + 5,
             "an announce answered with an error")

    def shown():
        v = trackers_json(ctl, leech, h)
        return v if v[0]["status"] == "error" else None
    v = wait_until(shown, 5, 0.1, "the error in torrentctl trackers")
    assert v[0]["message"] == "udp tracker says no", v
    assert "udp tracker says no" in tctl(ctl, leech, "trackers", h).stdout
    assert leech.get(h)["state"] == "seeding"
    trk.mode = "ok"
    wait_until(lambda: trackers_json(ctl, leech, h)[0]["status"] ==
               "working", 2 * INTERVAL + 5, 0.2, "working again")

    # Stop: one stopped (event 3), then silence.
    n = len(trk.announces(leech.ip))
    tctl(ctl, leech, "stop", h)
    wait_until(lambda: 3 in [f["event"] for _, f in
                             trk.announces(leech.ip)[n:]], 10, 0.05,
               "stopped")
    time.sleep(INTERVAL + 2)
    got = trk.announces(leech.ip)
    assert [f["event"] for _, f in got[n:]] == [3], got[n:]
    assert got[-1][1]["left"] == 0 and got[-1][1]["numwant"] in (0, -1)
    leech.stop()
    assert [f["event"] for _, f in trk.announces(leech.ip)[n:]] == [3]
    assert not trk.bad, trk.bad


def test_udp_sigterm_waits_for_stopped(workdir, started):
    """SIGTERM: the daemon waits (bounded: 5 s) for the trackers' answer
    to "stopped", as it waits for its state to be saved.  The tracker
    answers "stopped" 2 s late here; the daemon exits after that, not at
    once."""
    trk = UdpTracker().start()
    started.append(trk)
    data, tor, ih = small_torrent(workdir, [[trk.url()]])
    trk.interval = 1800
    leech = daemon(workdir, started, "leech")
    leech.add(tor)
    wait_until(lambda: trk.announces(leech.ip), 15, 0.05, "started")
    assert len(trk.connects(leech.ip)) == 1
    trk.stopped_delay = 2.0
    t0 = time.monotonic()
    leech.stop()
    took = time.monotonic() - t0
    got = trk.announces(leech.ip)
    assert [f["event"] for _, f in got] == [2, 3], got
    assert took >= trk.stopped_delay - 0.2, took
