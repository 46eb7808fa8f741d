"""torrentd as a tracker for a private swarm (issue 5, "Built-in tracker").

A real torrentd runs with tracker_listen on its own 127.0.0.x:port; the
tests announce to it from fake peers on other loopback addresses, over
HTTP (http.client with a source address) and UDP (a socket
speaking BEP 15), and check what a client sees: peer lists in the compact
format (BEP 23) and the dictionary model, intervals, scrape counts after
started/completed/stopped, the allowlist (refusal with a failure reason,
reload on SIGHUP), and that hostile HTTP requests (huge lines, garbage,
slow clients) do not stop it from answering others.

Then real clients: transmission-daemon seeds a torrent whose tracker is
torrentd (transmission does announce, even though it refuses to dial
loopback peers a tracker hands it: TESTING.md) and the tracker records it
with the right scrape counts; python3-libtorrent leechers find the seeder
through the tracker (HTTP and UDP), download, and the completed download is
counted.

Every send loop is bounded in count and time; every process is stopped by
its PID (peers.py; conftest's `started` fixture).
"""
import os
import signal
import socket
import struct
import time
import types
import urllib.parse

import pytest

import peers
from conftest import bdecode, info_hash, write_file
from peers import http_get

INTERVAL = 60
PEER_ID = b"-PY0001-%012d"


class Tracker:
    """A torrentd serving as tracker on ip:port (TCP and UDP)."""

    def __init__(self, workdir, started, allowlist=None, interval=INTERVAL,
                 name="tracker"):
        self.ip = peers.next_address()
        self.port = peers.free_port(self.ip)
        cfg = {"tracker_listen": "%s:%d" % (self.ip, self.port),
               "tracker_interval": str(interval)}
        if allowlist:
            cfg["tracker_allowlist"] = allowlist
        self.td = peers.Torrentd(workdir, name, config=cfg)
        started.append(self.td.start(bound=600))

    def url(self, path="announce"):
        return "http://%s:%d/%s" % (self.ip, self.port, path)

    def udp_url(self):
        return "udp://%s:%d/announce" % (self.ip, self.port)

    def hup(self):
        os.kill(self.td.pid, signal.SIGHUP)

    def log(self):
        return self.td.daemon.stderr_text()


def q(b):
    return urllib.parse.quote_from_bytes(b, safe="")


def announce_query(ih, port, peer_no, **kw):
    """peers.announce_query() for fake peer number peer_no (PEER_ID)."""
    return peers.announce_query(ih, port, PEER_ID % peer_no, **kw)


def announce(tr, ih, source, port, peer_no, **kw):
    status, body = http_get(tr, "/announce?" + announce_query(
        ih, port, peer_no, **kw), source)
    assert status == 200, body
    return bdecode(body)


def scrape(tr, *hashes):
    status, body = http_get(tr, "/scrape?" + "&".join(
        "info_hash=" + q(h) for h in hashes))
    assert status == 200
    return bdecode(body)


def compact_peers(blob):
    """The set of (ip, port) of compact peers (peers.compact_peers())."""
    return set(peers.compact_peers(blob))


def files(sc, ih):
    f = sc[b"files"][ih]
    return f[b"complete"], f[b"incomplete"], f[b"downloaded"]


# ---------------------------------------------------------------- UDP

class UdpClient:
    """A BEP 15 client on its own source address (IPv4 or IPv6, as the
    source is); every request is one datagram with a bounded wait for its
    answer."""

    def __init__(self, tr, source):
        self.tr = tr
        self.sock = socket.socket(
            socket.AF_INET6 if ":" in source else socket.AF_INET,
            socket.SOCK_DGRAM)
        self.sock.bind((source, 0))
        self.sock.settimeout(2.0)
        self.tid = int.from_bytes(os.urandom(4), "big")
        self.conn_id = None

    def close(self):
        self.sock.close()

    def request(self, payload, expect_answer=True):
        self.tid = (self.tid + 1) & 0xffffffff
        pkt = payload(self.tid)
        for _ in range(3):   # bounded retries: UDP may drop
            self.sock.sendto(pkt, (self.tr.ip, self.tr.port))
            try:
                data, _ = self.sock.recvfrom(65536)
            except socket.timeout:
                if not expect_answer:
                    return None
                continue
            action, tid = struct.unpack(">II", data[:8])
            if tid == self.tid:
                return action, data[8:]
        if expect_answer:
            raise AssertionError("no udp answer from the tracker")
        return None

    def connect(self):
        action, rest = self.request(lambda t: struct.pack(
            ">QII", 0x41727101980, 0, t))
        assert action == 0 and len(rest) == 8
        self.conn_id = struct.unpack(">Q", rest)[0]
        return self.conn_id

    def announce(self, ih, peer_no, port, left=100, event=0, numwant=-1,
                 conn_id=None):
        cid = self.conn_id if conn_id is None else conn_id
        return self.request(lambda t: struct.pack(
            ">QII20s20sQQQIIIiH", cid, 1, t, ih, PEER_ID % peer_no, 0, left,
            0, event, 0, 0, numwant, port))

    def scrape(self, *hashes):
        return self.request(lambda t: struct.pack(
            ">QII", self.conn_id, 2, t) + b"".join(hashes))


def parse_udp_announce(rest):
    interval, leechers, seeders = struct.unpack(">III", rest[:12])
    return interval, leechers, seeders, compact_peers(rest[12:])


# ---------------------------------------------------------------- tests

def test_http_announce_peers_and_scrape(workdir, started):
    tr = Tracker(workdir, started)
    ih = os.urandom(20)
    a, b, c = peers.next_address(), peers.next_address(), peers.next_address()

    r = announce(tr, ih, a, 7001, 1, event="started")
    assert r[b"interval"] == INTERVAL
    assert r[b"min interval"] == INTERVAL // 2
    assert r[b"complete"] == 0 and r[b"incomplete"] == 1
    assert r[b"peers"] == b""        # never the requester
    assert r[b"peers6"] == b""

    r = announce(tr, ih, b, 7002, 2, left=0, event="started")
    assert r[b"complete"] == 1 and r[b"incomplete"] == 1
    assert compact_peers(r[b"peers"]) == {(a, 7001)}

    r = announce(tr, ih, c, 7003, 3, event="started")
    assert compact_peers(r[b"peers"]) == {(a, 7001), (b, 7002)}
    assert r[b"complete"] == 1 and r[b"incomplete"] == 2

    # A seed is given leechers only.
    r = announce(tr, ih, b, 7002, 2, left=0)
    assert compact_peers(r[b"peers"]) == {(a, 7001), (c, 7003)}

    # The dictionary model, with peer ids unless no_peer_id=1.
    r = announce(tr, ih, c, 7003, 3, compact=0)
    got = {(p[b"ip"].decode(), p[b"port"]): p[b"peer id"]
           for p in r[b"peers"]}
    assert got == {(a, 7001): PEER_ID % 1, (b, 7002): PEER_ID % 2}
    r = announce(tr, ih, c, 7003, 3, compact=0, extra="&no_peer_id=1")
    assert all(b"peer id" not in p for p in r[b"peers"])
    # numwant
    r = announce(tr, ih, c, 7003, 3, numwant=1)
    assert len(compact_peers(r[b"peers"])) == 1
    r = announce(tr, ih, c, 7003, 3, numwant=0)
    assert r[b"peers"] == b""

    sc = scrape(tr, ih)
    assert files(sc, ih) == (1, 2, 0)

    # completed: counted, the peer is now a seed.
    r = announce(tr, ih, a, 7001, 1, left=0, event="completed")
    assert r[b"complete"] == 2 and r[b"incomplete"] == 1
    assert r[b"downloaded"] == 1
    assert files(scrape(tr, ih), ih) == (2, 1, 1)

    # stopped: gone from lists and counts.
    r = announce(tr, ih, c, 7003, 3, event="stopped")
    assert files(scrape(tr, ih), ih) == (2, 0, 1)
    r = announce(tr, ih, a, 7001, 1, left=0)
    assert compact_peers(r[b"peers"]) == set()   # seeds only left

    # Scrape of several hashes, one unknown; a full scrape is refused.
    other = os.urandom(20)
    sc = scrape(tr, ih, other)
    assert files(sc, other) == (0, 0, 0)
    assert files(sc, ih) == (2, 0, 1)
    status, body = http_get(tr, "/scrape")
    assert status == 200 and b"failure reason" in bdecode(body)

    # A bad announce is answered with a failure reason.
    for target in ("/announce", "/announce?info_hash=abc&peer_id=x&port=1",
                   "/announce?" + announce_query(ih, 0, 9),
                   "/announce?" + announce_query(ih, 1, 9, event="bogus")):
        status, body = http_get(tr, target)
        assert status == 200
        assert b"failure reason" in bdecode(body), (target, body)


def test_udp_announce_and_scrape(workdir, started):
    tr = Tracker(workdir, started)
    ih = os.urandom(20)
    addrs = [peers.next_address() for _ in range(3)]
    clients = [UdpClient(tr, ip) for ip in addrs]
    try:
        for cl in clients:
            cl.connect()
        action, rest = clients[0].announce(ih, 1, 8001, event=2)
        assert action == 1
        interval, leechers, seeders, got = parse_udp_announce(rest)
        assert interval == INTERVAL and (leechers, seeders) == (1, 0)
        assert got == set()
        action, rest = clients[1].announce(ih, 2, 8002, left=0, event=2)
        _, leechers, seeders, got = parse_udp_announce(rest)
        assert (leechers, seeders) == (1, 1)
        assert got == {(addrs[0], 8001)}
        action, rest = clients[2].announce(ih, 3, 8003, event=2)
        _, _, _, got = parse_udp_announce(rest)
        assert got == {(addrs[0], 8001), (addrs[1], 8002)}
        # completed, stopped, and a scrape (also seen over HTTP).
        clients[0].announce(ih, 1, 8001, left=0, event=1)
        clients[2].announce(ih, 3, 8003, event=3)
        action, rest = clients[0].scrape(ih, os.urandom(20))
        assert action == 2
        assert struct.unpack(">IIIIII", rest) == (2, 1, 0, 0, 0, 0)
        assert files(scrape(tr, ih), ih) == (2, 0, 1)
        # An HTTP announce sees the UDP peers and the other way round.
        r = announce(tr, ih, addrs[2], 8003, 3)
        assert compact_peers(r[b"peers"]) == {(addrs[0], 8001),
                                              (addrs[1], 8002)}

        # A connection id is bound to its address.
        action, rest = clients[1].announce(ih, 2, 8002,
                                           conn_id=clients[0].conn_id)
        assert action == 3 and b"connection id" in rest
        action, rest = clients[1].announce(ih, 2, 8002, conn_id=12345)
        assert action == 3
        # Garbage and a connect without the protocol id get no answer.
        assert clients[1].request(lambda t: struct.pack(">QII", 1, 0, t),
                                  expect_answer=False) is None
        assert clients[1].request(lambda t: b"hello" + struct.pack(">I", t),
                                  expect_answer=False) is None
        # A short announce gets an error.
        action, rest = clients[1].request(lambda t: struct.pack(
            ">QII", clients[1].conn_id, 1, t) + b"\0" * 10)
        assert action == 3
    finally:
        for cl in clients:
            cl.close()


def test_allowlist(workdir, started):
    allowed, refused = os.urandom(20), os.urandom(20)
    path = os.path.join(str(workdir), "allow.txt")
    with open(path, "w") as f:
        f.write("# the swarms of this tracker\n%s\n" % allowed.hex().upper())
    tr = Tracker(workdir, started, allowlist=path)
    src = peers.next_address()

    r = announce(tr, refused, src, 9001, 1)
    assert r == {b"failure reason": b"info_hash not allowed"}
    r = announce(tr, allowed, src, 9001, 1)
    assert r[b"incomplete"] == 1
    status, body = http_get(tr, "/scrape?info_hash=" + q(refused))
    assert bdecode(body) == {b"failure reason": b"info_hash not allowed"}
    cl = UdpClient(tr, src)
    try:
        cl.connect()
        action, rest = cl.announce(refused, 2, 9002)
        assert action == 3 and rest == b"info_hash not allowed"
        action, rest = cl.announce(allowed, 2, 9002)
        assert action == 1

        # The file is re-read on SIGHUP.
        with open(path, "w") as f:
            f.write("%s\n%s\n" % (allowed.hex(), refused.hex()))
        tr.hup()
        peers.wait_until(lambda: "allowlist '%s': 2 info-hashes" % path
                         in tr.log(), 10, what="the allowlist reload")
        r = announce(tr, refused, src, 9001, 1)
        assert r[b"incomplete"] == 1
        # A broken file keeps the list in use.
        with open(path, "w") as f:
            f.write("not a hash\n")
        tr.hup()
        peers.wait_until(lambda: "keeping the previous allowlist" in
                         tr.log(), 10, what="the refused reload")
        action, rest = cl.announce(refused, 2, 9002)
        assert action == 1

        # Run-time settings (torrentctl config set) apply live: no
        # allowlist any more, another interval.
        other = os.urandom(20)
        assert b"failure reason" in announce(tr, other, src, 9001, 1)
        tr.td.call("session.set", tracker_allowlist="", tracker_interval=120)
        r = peers.wait_until(lambda: (lambda x: x if b"interval" in x
                                      else None)(
            announce(tr, other, src, 9001, 1)), 10, 0.2, "no allowlist")
        assert r[b"interval"] == 120 and r[b"min interval"] == 60
    finally:
        cl.close()


def test_expiry_and_bounds(workdir, started):
    """A peer that stops announcing is forgotten after twice the interval;
    peers past tracker_max_peers are answered but not recorded."""
    tr = Tracker(workdir, started, interval=5, name="tr-small")
    tr.td.call("session.set", tracker_max_peers=3)
    ih = os.urandom(20)
    src = [peers.next_address() for _ in range(5)]
    for i, ip in enumerate(src):
        r = announce(tr, ih, ip, 7700 + i, i)
        assert r[b"interval"] == 5
    assert files(scrape(tr, ih), ih) == (0, 3, 0)
    r = announce(tr, ih, src[4], 7704, 4)
    assert compact_peers(r[b"peers"]) == {(src[i], 7700 + i)
                                          for i in range(3)}
    # Peers 1 and 2 keep announcing; 0 goes quiet and is dropped after
    # 2 x 5 s (by the sweep, or by the next announce of its swarm).
    t0 = time.monotonic()
    while time.monotonic() - t0 < 13:
        for i in (1, 2):
            announce(tr, ih, src[i], 7700 + i, i)
        time.sleep(1.0)
    assert files(scrape(tr, ih), ih) == (0, 2, 0)
    r = announce(tr, ih, src[3], 7703, 3)
    assert compact_peers(r[b"peers"]) == {(src[1], 7701), (src[2], 7702)}
    assert files(scrape(tr, ih), ih) == (0, 3, 0)


def test_bad_allowlist_stops_the_start(workdir):
    import tdaemon
    ip = peers.next_address()
    d = tdaemon.Daemon(workdir, {
        "tracker_listen": "%s:%d" % (ip, peers.free_port(ip)),
        "tracker_allowlist": os.path.join(str(workdir), "missing")})
    d.start(wait=False)
    rc = d.wait_exit(30)
    assert rc == 1
    assert "cannot open the allowlist" in d.stderr_text()


def test_hostile_http_requests(workdir, started):
    tr = Tracker(workdir, started)
    ih = os.urandom(20)
    bad = peers.next_address()      # the slow clients
    rude = peers.next_address()     # malformed requests
    good = peers.next_address()

    def raw(data, source=rude, timeout=5):
        s = socket.create_connection((tr.ip, tr.port), timeout,
                                     source_address=(source, 0))
        try:
            s.sendall(data)
            out = b""
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
            return out
        finally:
            s.close()

    # Slow clients from one address: they take at most their share of the
    # connections (the rest are closed at once) and are cut off after the
    # timeout.
    slow = []
    for _ in range(60):
        try:
            s = socket.create_connection((tr.ip, tr.port), 5,
                                         source_address=(bad, 0))
            s.sendall(b"GET /announce?info_hash=")
            slow.append(s)
        except OSError:
            break
    t0 = time.monotonic()
    try:
        # Garbage, a huge line, a huge head, a body, an unknown path.
        assert raw(b"\x16\x03\x01\x02\x00garbage\r\n\r\n").startswith(
            b"HTTP/1.1 400 ")
        assert raw(b"GET /announce?" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n",
                   ).startswith(b"HTTP/1.1 400 ")
        assert raw(b"GET /announce HTTP/1.1\r\n" + b"X: y\r\n" * 3000
                   ).startswith(b"HTTP/1.1 400 ")
        assert raw(b"POST /announce HTTP/1.1\r\nContent-Length: 3\r\n\r\n"
                   b"abc").startswith(b"HTTP/1.1 400 ")
        assert raw(b"GET /../../etc/passwd HTTP/1.1\r\n\r\n").startswith(
            b"HTTP/1.1 404 ")
        assert raw(b"GET /announce HTTP/1.1\r\nHost: x\r\n\r\n",
                   ).startswith(b"HTTP/1.1 200 ")
        # A request that comes in pieces, with pipelined bytes after it.
        s = socket.create_connection((tr.ip, tr.port), 5,
                                     source_address=(good, 0))
        try:
            req = ("GET /announce?%s HTTP/1.1\r\nHost: x\r\n\r\n" %
                   announce_query(ih, 7099, 99)).encode()
            for i in range(0, len(req), 40):
                s.sendall(req[i:i + 40])
                time.sleep(0.02)
            s.sendall(b"GET /scrape HTTP/1.1\r\n\r\n")
            out = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        finally:
            s.close()
        assert out.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"Connection: close\r\n" in out
        assert bdecode(out.split(b"\r\n\r\n", 1)[1])[b"incomplete"] == 1
        announce(tr, ih, good, 7099, 99, event="stopped")
        # Others are answered at once, over HTTP and UDP.
        for i in range(5):
            r = announce(tr, ih, good, 7100 + i, 100 + i)
            assert r[b"incomplete"] == i + 1
        cl = UdpClient(tr, good)
        try:
            cl.connect()
            action, _ = cl.announce(ih, 200, 7200)
            assert action == 1
        finally:
            cl.close()
        assert time.monotonic() - t0 < 8
        # The slow ones are closed within the timeout (10 s).
        def all_closed():
            for s in slow:
                s.settimeout(0.05)
                try:
                    if s.recv(100) != b"":
                        return False
                except socket.timeout:
                    return False
                except OSError:
                    pass
            return True
        peers.wait_until(all_closed, 20, 0.5, "slow clients to be cut off")
        assert time.monotonic() - t0 > 8   # by the timeout, not before
        # Many connections from many addresses: the oldest make room.
        many = []
        for i in range(300):
            try:
                s = socket.create_connection(
                    (tr.ip, tr.port), 5,
                    source_address=(peers.next_address(), 0))
                many.append(s)
            except OSError:
                break
        r = announce(tr, ih, good, 7300, 300)
        assert r[b"incomplete"] == 7
        for s in many:
            s.close()
    finally:
        for s in slow:
            s.close()
    assert tr.td.daemon.proc.poll() is None
    assert b"incomplete" in http_get(tr, "/announce?" + announce_query(
        ih, 7400, 400), good)[1]


# ------------------------------------------------------ real clients

SIZE = 2 << 20


def make_source(workdir, announce_url, name):
    data = write_file(os.path.join(str(workdir), name, "data.bin"), SIZE,
                      seed=len(name))
    tor = peers.make_torrent(data, os.path.join(str(workdir), name +
                                                ".torrent"), 18,
                             announce=announce_url)
    return data, tor, bytes.fromhex(info_hash(tor))


@pytest.mark.slow
def test_transmission_and_libtorrent_use_the_tracker(workdir, started,
                                                     mktorrent):
    """transmission seeds and announces; the tracker records it (scrape
    complete=1, and a fake peer is handed transmission's address); a
    libtorrent leecher learns of the seeder from the tracker only,
    downloads, and its completed download is counted."""
    tr = Tracker(workdir, started)
    data, tor, ih = make_source(workdir, tr.url(), "src")

    seed = peers.Transmission(workdir, "tr-seed")
    started.append(seed.start())
    os.makedirs(seed.download_dir, exist_ok=True)
    os.link(data, os.path.join(seed.download_dir, "data.bin"))
    tid = seed.add(tor)
    seed.wait_seeding(tid, 60)
    peers.wait_until(lambda: files(scrape(tr, ih), ih)[0] == 1
                     if ih in scrape(tr, ih)[b"files"] else False,
                     60, 0.5, "transmission's announce")
    assert files(scrape(tr, ih), ih) == (1, 0, 0)
    fake = peers.next_address()
    r = announce(tr, ih, fake, 7501, 1)
    assert (seed.ip, seed.peer_port) in compact_peers(r[b"peers"])
    r = announce(tr, ih, fake, 7501, 1, event="stopped")
    assert (r[b"complete"], r[b"incomplete"]) == (1, 0)

    leech = peers.Libtorrent(workdir, "lt-leech")
    started.append(leech.start(tor, timeout=120))
    leech.wait_event("alert", 30, lambda e: e["type"] == "tracker_reply")
    leech.wait_complete(90)
    assert peers.files_equal(data, os.path.join(leech.download_dir,
                                                "data.bin"))
    # libtorrent announces "completed" when it finishes.
    peers.wait_until(lambda: files(scrape(tr, ih), ih) == (2, 0, 1), 30,
                     0.5, "the completed download in the scrape")


@pytest.mark.slow
def test_libtorrent_over_udp(workdir, started, mktorrent):
    """Two libtorrent peers that know each other only from the tracker's
    UDP side (BEP 15)."""
    tr = Tracker(workdir, started)
    data, tor, ih = make_source(workdir, tr.udp_url(), "usrc")
    seed = peers.Libtorrent(workdir, "lt-seed")
    started.append(seed.start(tor, seed=True, save=os.path.dirname(data),
                              timeout=120))
    seed.wait_event("alert", 30, lambda e: e["type"] == "tracker_reply")
    assert files(scrape(tr, ih), ih) == (1, 0, 0)
    leech = peers.Libtorrent(workdir, "lt-leech")
    started.append(leech.start(tor, timeout=120))
    leech.wait_complete(60)
    assert peers.files_equal(data, os.path.join(leech.download_dir,
                                                "data.bin"))
    peers.wait_until(lambda: files(scrape(tr, ih), ih) == (2, 0, 1), 30,
                     0.5, "the completed download in the scrape")


def test_ipv6_peers6(workdir, started):
    """On an IPv6 address: peers6 over HTTP (BEP 7), 18-byte peers over
    UDP (BEP 15)."""
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", 0))
        port = s.getsockname()[1]
        s.close()
    except OSError:
        pytest.skip("no IPv6 loopback")
    import tdaemon
    d = tdaemon.Daemon(workdir, {"tracker_listen": "[::1]:%d" % port,
                                 "tracker_interval": "60"}, name="tr6")
    d.start()
    tr = types.SimpleNamespace(ip="::1", port=port)
    try:
        ih = os.urandom(20)

        def get(peer_no, pport):
            status, body = http_get(tr, "/announce?" + announce_query(
                ih, pport, peer_no))
            return bdecode(body)
        get(1, 7601)
        r = get(2, 7602)
        assert r[b"peers"] == b""
        assert r[b"peers6"] == socket.inet_pton(socket.AF_INET6, "::1") + \
            struct.pack(">H", 7601)
        u = UdpClient(tr, "::1")
        try:
            u.connect()
            action, rest = u.announce(ih, 3, 7603, left=1)
            assert action == 1
            assert len(rest) == 12 + 2 * 18
        finally:
            u.close()
    finally:
        assert d.stop() == 0
