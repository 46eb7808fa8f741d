"""Magnet links end to end and the peer sources of the engine (issue 5,
"Magnet links and peer exchange" and "Proof"), all on loopback, each peer
on its own 127.0.0.x:

  - a magnet with no tracker: torrentd finds a torrentd seeder only
    through the DHT (a loopback DHT of torrentd nodes), fetches the info
    dictionary with ut_metadata (BEP 9), reaches `downloading`, then
    completes with byte-identical data; the .torrent it made is in its
    state directory;
  - the same with a python3-libtorrent seeder found through the DHT, and a
    magnet whose x.pe names a transmission seeder (transmission's DHT
    ignores loopback nodes);
  - a magnet whose x.pe is a host name, "localhost:PORT" of a torrentd
    seeder on 127.0.0.1, resolved off the reactor (the only name these
    tests use: it comes from /etc/hosts, no DNS traffic leaves the
    machine);
  - PEX (BEP 11): A knows only B, B knows C; A ends up connected to C;
  - a private torrent (BEP 27) is never announced in the DHT.

Bootstrap nodes are always the test's own loopback nodes; processes are
bounded in time and stopped by PID (peers.Proc, peers.Torrentd.stop(),
conftest's `nodes` and `started` fixtures).
"""
import os
import time

import pytest

import peers
from conftest import info_hash, stop_each, write_file
from dhtnodes import td_dht, wait_joined
from peers import recv_exact, seed_copy

SIZE = 8 << 20
PIECE_POW = 18          # 256 KiB pieces: 32 pieces
TIMEOUT = 120           # DHT announces retry every 30 s when early


@pytest.fixture
def source(workdir, mktorrent):
    data = write_file(os.path.join(str(workdir), "src", "data.bin"), SIZE,
                      seed=9)
    tor = peers.make_torrent(data, os.path.join(str(workdir), "m.torrent"),
                             PIECE_POW)
    return data, tor, info_hash(tor)


def magnet(ih, extra=""):
    return "magnet:?xt=urn:btih:%s%s" % (ih, extra)


def add_magnet(td, uri):
    return td.call("torrent.add", magnet=uri)["info_hash"]


def wait_metadata_then_complete(td, ih, data):
    t = peers.wait_until(lambda: td.get(ih)["has_metadata"] or None,
                         TIMEOUT, 0.2, "metadata of %s" % ih)
    assert t
    t = td.get(ih)
    assert t["state"] in ("downloading", "seeding", "checking", "queued"), t
    td.wait_complete(ih, TIMEOUT)
    dst = os.path.join(td.download_dir, os.path.basename(data))
    assert peers.files_equal(data, dst), "%s differs from %s" % (dst, data)
    # The .torrent made from the metadata is in the state directory, the
    # .magnet is gone (the restart path finds a full torrent).
    sd = td.daemon.state_dir
    peers.wait_until(lambda: os.path.exists(
        os.path.join(sd, "%s.torrent" % ih)) or None, 10, 0.1,
        "the saved .torrent")
    assert not os.path.exists(os.path.join(sd, "%s.magnet" % ih))


def dht_swarm(workdir, nodes, names):
    """Torrentd DHT nodes: a hub, then the others bootstrapping from it."""
    hub = td_dht(workdir, "hub")
    hub.start(bound=300)
    nodes.append(hub)
    out = []
    for n in names:
        td = td_dht(workdir, n, bootstrap=[hub.peer_address()])
        td.start(bound=300)
        nodes.append(td)
        out.append(td)
    wait_joined(out, 30)
    return hub, out


def test_magnet_from_torrentd_seeder_through_dht(workdir, source, nodes,
                                                  ctl):
    data, tor, ih = source
    hub, (seed, leech) = dht_swarm(workdir, nodes, ("seed", "leech"))
    seed_copy(data, seed.download_dir)
    assert seed.add(tor) == ih
    seed.wait_state(ih, ("seeding",), 60)
    # The seeder's announce reaches the DHT (a round may wait for its
    # first nodes: DHTSVC_ANNOUNCE_RETRY_S).
    peers.wait_until(
        lambda: hub.call("dht.get_peers", info_hash=ih)["peers"] or None,
        TIMEOUT, 1.0, "the seeder's DHT announce")
    got = add_magnet(leech, magnet(ih))
    assert got == ih
    assert leech.get(ih)["state"] == "metadata"
    ctl("--socket", leech.daemon.control_socket, "wait", ih, "--for",
        "metadata", "--timeout", str(TIMEOUT), rc=0)
    wait_metadata_then_complete(leech, ih, data)
    t = leech.get(ih)
    assert t["name"] == os.path.basename(data)
    assert t["size_bytes"] == SIZE
    # The connection that gave the metadata went on with the data
    # (peer_set_torrent), it was not dropped and dialled again.
    assert "1 peer(s) go on with the metadata" in leech.daemon.stderr_text()
    # A restart finds the torrent made from the metadata, complete.
    assert leech.stop() == 0
    leech.start(bound=120)
    t = leech.wait_state(ih, ("seeding",), 60)
    assert t["has_metadata"] and t["name"] == os.path.basename(data)


def peer_addresses(td, ih):
    r = td.call("torrent.peers", torrent=ih)
    lst = r if isinstance(r, list) else r.get("peers", [])
    return {p["address"] for p in lst}


def test_pex_three_peers(workdir, source, nodes):
    """A knows only B, B knows C (torrent.add_peer); A learns of C only
    through B's ut_pex message and connects to it.  DHT and LSD off."""
    data, tor, ih = source
    cfg = {"dht": "off", "lsd": "off"}
    c = peers.Torrentd(workdir, "c", config=cfg)
    seed_copy(data, c.download_dir)
    nodes.append(c.start(bound=300))
    c.add(tor)
    c.wait_state(ih, ("seeding",), 60)
    b = peers.Torrentd(workdir, "b", config=cfg)
    nodes.append(b.start(bound=300))
    b.add(tor)
    # B stays a leecher for the test (two seeds would part at once).
    b.call("torrent.set", torrent=ih, download_limit=100000)
    b.add_peer(ih, c.peer_address())
    peers.wait_until(lambda: c.peer_address() in peer_addresses(b, ih) or
                     None, 30, 0.2, "b to connect to c")
    a = peers.Torrentd(workdir, "a", config=cfg)
    nodes.append(a.start(bound=300))
    a.add(tor, paused=True)
    # A too stays a leecher while we look (C would serve it in a blink).
    a.call("torrent.set", torrent=ih, download_limit=100000)
    a.call("torrent.start", torrent=ih)
    a.add_peer(ih, b.peer_address())
    # One PEX message per peer per minute; the first goes at once.  The
    # connection may be either one's (both may dial): compare the IP.
    peers.wait_until(
        lambda: any(x.startswith(c.ip + ":") for x in peer_addresses(a, ih))
        or None, 45, 0.2, "a to connect to c (learnt by PEX)")
    a.call("torrent.set", torrent=ih, download_limit=0)
    a.wait_complete(ih, TIMEOUT)
    assert peers.files_equal(
        data, os.path.join(a.download_dir, os.path.basename(data)))


def test_private_torrent_not_in_dht(workdir, mktorrent, nodes):
    """BEP 27: a private torrent is not announced in the DHT (a public one
    of the same seeder is, so the DHT works)."""
    priv = write_file(os.path.join(str(workdir), "p", "priv.bin"), 1 << 20,
                      seed=11)
    pub = write_file(os.path.join(str(workdir), "q", "pub.bin"), 1 << 20,
                     seed=12)
    ptor = os.path.join(str(workdir), "priv.torrent")
    r = peers.subprocess.run(["mktorrent", "-p", "-l", "18", "-a",
                              "http://127.0.0.1:9/announce", "-o", ptor,
                              priv], capture_output=True, timeout=60)
    assert r.returncode == 0, r
    qtor = peers.make_torrent(pub, os.path.join(str(workdir), "pub.torrent"))
    # Three nodes: a node's lookup does not look in its own store.
    hub, (seed, other) = dht_swarm(workdir, nodes, ("seed", "other"))
    seed_copy(priv, seed.download_dir)
    seed_copy(pub, seed.download_dir)
    pih, qih = seed.add(ptor), seed.add(qtor)
    seed.wait_state(pih, ("seeding",), 60)
    seed.wait_state(qih, ("seeding",), 60)
    peers.wait_until(
        lambda: other.call("dht.get_peers", info_hash=qih)["peers"] or None,
        TIMEOUT, 1.0, "the public torrent's DHT announce")
    time.sleep(2)
    for node in (hub, other):
        assert node.call("dht.get_peers", info_hash=pih)["peers"] == []
    st = seed.call("dht.status")
    assert pih not in str(st)


def test_magnet_from_libtorrent_seeder_through_dht(workdir, source, nodes,
                                                    started):
    """A python3-libtorrent seeder in the loopback DHT: torrentd finds it
    there and fetches the metadata and the data from it."""
    data, tor, ih = source
    hub, (leech, other) = dht_swarm(workdir, nodes, ("leech", "other"))
    lt = peers.Libtorrent(workdir, "lt-seed")
    seed_copy(data, lt.download_dir)
    started.append(lt.start(tor, seed=True,
                            extra=("--dht", hub.peer_address())))
    peers.wait_until(
        lambda: any(x.startswith(lt.ip + ":") for x in other.call(
            "dht.get_peers", info_hash=ih)["peers"]) or None,
        TIMEOUT, 1.0, "libtorrent's DHT announce")
    assert add_magnet(leech, magnet(ih, "&dn=x")) == ih
    wait_metadata_then_complete(leech, ih, data)


def test_magnet_xpe_from_transmission(workdir, source, started, nodes):
    """A magnet whose x.pe names a transmission seeder (its DHT ignores
    loopback nodes): the metadata comes from transmission."""
    data, tor, ih = source
    tr = peers.Transmission(workdir, "tr-seed")
    started.append(tr.start())
    seed_copy(data, tr.download_dir)
    tid = tr.add(tor)
    tr.wait_seeding(tid, 60)
    td = peers.Torrentd(workdir, "leech", config={"dht": "off"})
    nodes.append(td.start(bound=300))
    assert add_magnet(td, magnet(ih, "&x.pe=%s" % tr.peer_address())) == ih
    wait_metadata_then_complete(td, ih, data)


@pytest.mark.tsan
def test_magnet_xpe_host_name(workdir, source, nodes):
    """x.pe=localhost:PORT names a torrentd seeder listening on 127.0.0.1
    (DHT, LSD and trackers off: the name is the only way to it); the
    leecher resolves it, fetches the metadata from it and completes."""
    data, tor, ih = source
    off = {"dht": "off", "lsd": "off"}
    seed = peers.Torrentd(workdir, "seed", ip="127.0.0.1", config=off)
    seed_copy(data, seed.download_dir)
    nodes.append(seed.start(bound=300))
    assert seed.add(tor) == ih
    seed.wait_state(ih, ("seeding",), 60)
    td = peers.Torrentd(workdir, "leech",
                        config=dict(off, log_level="debug"))
    nodes.append(td.start(bound=300))
    uri = magnet(ih, "&x.pe=localhost:%d" % seed.port)
    assert add_magnet(td, uri) == ih
    wait_metadata_then_complete(td, ih, data)
    # The name was resolved (the leecher binds to 127.0.x.y: IPv4 only).
    assert "x.pe 'localhost': 1 address(es)" in td.daemon.stderr_text()


def test_lsd_peer_feeds_engine(workdir):
    """BEP 14: a leecher that learns of a seeder only by LSD (no tracker,
    no DHT) connects to it and completes.  Each torrentd in a network
    namespace of its own (test_lsd.Netns: needs root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces (ip netns "
                    "add) for multicast; CI runs this as root")
    import tdaemon
    from test_lsd import Netns, PEER_PORT
    data = write_file(os.path.join(str(workdir), "l", "lsd.bin"), 1 << 20,
                      seed=13)
    tor = peers.make_torrent(data, os.path.join(str(workdir), "l.torrent"))
    ih = info_hash(tor)
    ns = Netns()
    daemons = []
    try:
        ns.create()
        for i in (0, 1):
            d = tdaemon.Daemon(workdir, name="lsd%d" % i, config={
                "listen": "%s:%d" % (ns.addrs[i], PEER_PORT),
                "lsd": "on", "dht": "off"})
            daemons.append(d)
            if i == 0:
                seed_copy(data, d.download_dir)
            d.start(prefix=("timeout", "-k", "5", "120") + ns.prefix(i))
        meta = tdaemon.b64(tor)
        for d in daemons:
            d.call("torrent.add", metainfo=meta)

        def complete():
            t = daemons[1].call("torrent.get", torrent=ih)
            return t["have_bytes"] == t["size_bytes"] or None
        peers.wait_until(complete, 60, 0.2, "the leecher to complete by LSD")
        dst = os.path.join(daemons[1].download_dir, "lsd.bin")
        assert peers.files_equal(data, dst)
    finally:
        try:
            stop_each(daemons)   # a sanitizer report fails the test
        finally:
            ns.delete()


class LyingMetadataPeer:
    """A peer that speaks BEP 10 + ut_metadata only and answers every
    metadata request with bytes of the right length and the wrong content
    (so the whole does not hash to the info-hash).  A thread in the test
    process, bounded by socket timeouts and a deadline."""

    def __init__(self, ih_hex, size, bound=60):
        import socket
        import threading
        self.ip = peers.next_address()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((self.ip, 0))
        self.sock.listen(4)
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.ih = bytes.fromhex(ih_hex)
        self.size = size
        self.served = 0
        self.their_id = 0
        self.deadline = time.monotonic() + bound
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def peer_address(self):
        return "%s:%d" % (self.ip, self.port)

    def _serve(self, c):
        import struct
        from conftest import bdecode, bencode
        c.settimeout(5)
        hs = recv_exact(c, 68)
        if hs[28:48] != self.ih:
            return
        c.sendall(b"\x13BitTorrent protocol" + b"\0\0\0\0\0\x10\0\0" +
                  self.ih + b"-XX0001-" + os.urandom(12))
        ext = bencode({"m": {"ut_metadata": 3},
                       "metadata_size": self.size, "v": "liar"})
        c.sendall(struct.pack(">IBB", len(ext) + 2, 20, 0) + ext)
        while not self.stop_ev.is_set() and time.monotonic() < self.deadline:
            n = struct.unpack(">I", recv_exact(c, 4))[0]
            if n == 0 or n > (1 << 20):
                continue
            msg = recv_exact(c, n)
            if msg[0] == 20 and msg[1] == 0:
                m = bdecode(msg[2:]).get(b"m", {})
                self.their_id = m.get(b"ut_metadata", 0)
                continue
            if msg[0] != 20 or msg[1] != 3 or not self.their_id:
                continue
            d = bdecode(msg[2:])
            if d.get(b"msg_type") != 0:
                continue
            piece = d[b"piece"]
            ln = min(16384, self.size - piece * 16384)
            if ln <= 0:
                continue
            body = bencode({"msg_type": 1, "piece": piece,
                            "total_size": self.size}) + os.urandom(ln)
            # Answers go with the id torrentd's handshake gave.
            c.sendall(struct.pack(">IBB", len(body) + 2, 20,
                                  self.their_id) + body)
            self.served += 1

    def _run(self):
        while not self.stop_ev.is_set() and time.monotonic() < self.deadline:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            try:
                self._serve(c)
            except (OSError, EOFError, ValueError, KeyError, IndexError):
                pass
            finally:
                c.close()

    def stop(self):
        self.stop_ev.set()
        self.thread.join(10)
        self.sock.close()


def test_magnet_wrong_metadata_is_refused(workdir, source, nodes):
    """A peer whose metadata does not hash to the info-hash: torrentd
    throws it away, never asks that peer again, and takes the metadata
    from an honest seeder."""
    data, tor, ih = source
    from conftest import bdecode, bencode
    with open(tor, "rb") as f:
        size = len(bencode(bdecode(f.read())[b"info"]))
    liar = LyingMetadataPeer(ih, size)
    try:
        seed = peers.Torrentd(workdir, "seed", config={"dht": "off"})
        seed_copy(data, seed.download_dir)
        nodes.append(seed.start(bound=300))
        seed.add(tor)
        seed.wait_state(ih, ("seeding",), 60)
        td = peers.Torrentd(workdir, "leech", config={"dht": "off"})
        nodes.append(td.start(bound=300))
        assert add_magnet(td, magnet(ih, "&x.pe=%s" % liar.peer_address())) \
            == ih
        peers.wait_until(
            lambda: "metadata from peers is unusable" in
            td.daemon.stderr_text() or None, 30, 0.2,
            "the wrong metadata to be refused")
        assert liar.served == (size + 16383) // 16384
        assert td.get(ih)["state"] == "metadata"
        td.add_peer(ih, seed.peer_address())
        wait_metadata_then_complete(td, ih, data)
        # The liar was asked for nothing more.
        assert liar.served == (size + 16383) // 16384
    finally:
        liar.stop()
