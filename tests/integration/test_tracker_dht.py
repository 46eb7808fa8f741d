"""The built-in tracker answers for swarms it was never told of from the
DHT, so that several torrentd trackers see the same swarm (issue 5,
"Built-in tracker").

On loopback: a DHT of torrentd nodes (a hub, a seeder and two trackers,
each tracker a torrentd with tracker_listen and the DHT on).  The seeder
has a torrent with no tracker and announces it in the DHT only.  Then:

  - a raw HTTP announce to tracker 1 and a raw UDP announce to tracker 2,
    for an info-hash neither was ever told of, both get the seeder in
    their very first answer (the tracker holds the answer while its DHT
    lookup runs); the requester is never handed itself; scrape counts
    stay those of the peers that announced to the tracker;
  - `tracker_dht off` (live) stops the DHT peers;
  - real clients that know the seeder only through a tracker: a torrentd
    (DHT off) through tracker 1 over HTTP and a python3-libtorrent peer
    (DHT off) through tracker 2 over UDP both download byte-identical
    data from the seeder.

Processes are bounded in time and stopped by PID (peers.Torrentd.stop()
through conftest's `nodes` fixture, peers.Proc); bootstrap nodes are the
test's own.
"""
import os
import time

import pytest

import peers
from conftest import info_hash, write_file
from dhtnodes import td_dht, wait_joined
from test_builtin_tracker import (Tracker, UdpClient, announce,
                                  compact_peers, parse_udp_announce, scrape)

SIZE = 4 << 20
PIECE_POW = 18
TIMEOUT = 120   # a first DHT announce may wait for DHTSVC_ANNOUNCE_RETRY_S


class DhtTracker(Tracker):
    """A torrentd on the DHT that also serves as tracker (same IP); the
    rest is test_builtin_tracker.Tracker's (url(), udp_url(), log()).
    Unlike that one it keeps torrentd's default tracker_interval."""

    def __init__(self, workdir, name, hub, nodes):
        self.ip = peers.next_address()
        self.port = peers.free_port(self.ip)
        self.td = td_dht(workdir, name, bootstrap=[hub.peer_address()],
                         ip=self.ip,
                         config={"tracker_listen": "%s:%d" % (self.ip,
                                                              self.port),
                                 "log_level": "debug"})
        self.td.start(bound=400)
        nodes.append(self.td)


def compact_addrs(blob):
    return {"%s:%d" % p for p in compact_peers(blob)}


@pytest.fixture
def swarm(workdir, mktorrent, nodes):
    """hub, seeder, tracker 1, tracker 2; the seeder's torrent (no
    tracker) announced in the DHT."""
    data = write_file(os.path.join(str(workdir), "src", "data.bin"), SIZE,
                      seed=21)
    tor = peers.make_torrent(data, os.path.join(str(workdir), "s.torrent"),
                             PIECE_POW)
    ih = info_hash(tor)
    hub = td_dht(workdir, "hub")
    hub.start(bound=400)
    nodes.append(hub)
    seed = td_dht(workdir, "seed", bootstrap=[hub.peer_address()])
    seed.start(bound=400)
    nodes.append(seed)
    t1 = DhtTracker(workdir, "t1", hub, nodes)
    t2 = DhtTracker(workdir, "t2", hub, nodes)
    wait_joined((seed, t1.td, t2.td), 30)
    peers.seed_copy(data, seed.download_dir)
    assert seed.add(tor) == ih
    seed.wait_state(ih, ("seeding",), 60)
    peers.wait_until(
        lambda: hub.call("dht.get_peers", info_hash=ih)["peers"] or None,
        TIMEOUT, 1.0, "the seeder's DHT announce")
    return data, ih, seed, t1, t2


def test_trackers_answer_from_the_dht(swarm):
    data, ih, seed, t1, t2 = swarm
    raw = bytes.fromhex(ih)
    me = peers.next_address()

    # HTTP, tracker 1: the very first answer has the seeder.
    start = time.monotonic()
    r = announce(t1, raw, me, 7001, 1)
    took = time.monotonic() - start
    got = compact_addrs(r[b"peers"])
    assert seed.peer_address() in got, (got, took)
    assert "%s:7001" % me not in got
    # Counts are those of the peers that announced here.
    assert r[b"incomplete"] == 1 and r[b"complete"] == 0
    files = scrape(t1, raw)[b"files"]
    assert files[raw][b"incomplete"] == 1
    assert files[raw][b"complete"] == 0

    # A second peer gets the seeder and the first peer (from the store).
    other = peers.next_address()
    got = compact_addrs(announce(t1, raw, other, 7002, 2)[b"peers"])
    assert {seed.peer_address(), "%s:7001" % me} <= got, got

    # UDP, tracker 2: it too sees the swarm.
    udp = UdpClient(t2, me)
    try:
        udp.connect()
        action, rest = udp.announce(raw, 3, 7003)
        assert action == 1
        _, leechers, seeders, got = parse_udp_announce(rest)
        assert seed.peer_address() in {"%s:%d" % p for p in got}, got
        assert leechers == 1 and seeders == 0
    finally:
        udp.close()

    # tracker_dht off, live: the DHT's peers are no longer given.
    t2.td.call("session.set", tracker_dht=False)
    got = compact_addrs(announce(t2, raw, other, 7004, 4)[b"peers"])
    assert seed.peer_address() not in got, got
    assert "%s:7003" % me in got

    log = t1.td.daemon.stderr_text()
    assert "tracker: dht lookup for %s" % ih in log


def test_clients_find_the_seeder_through_either_tracker(workdir, swarm,
                                                        nodes):
    """A torrentd and a libtorrent peer, both with the DHT off, each told
    of one tracker only, download from the seeder that the trackers found
    in the DHT."""
    data, ih, seed, t1, t2 = swarm
    tor1 = peers.make_torrent(data, os.path.join(str(workdir), "t1.torrent"),
                              PIECE_POW, announce=t1.url())
    tor2 = peers.make_torrent(data, os.path.join(str(workdir), "t2.torrent"),
                              PIECE_POW, announce=t2.udp_url())
    assert info_hash(tor1) == ih and info_hash(tor2) == ih

    leech = peers.Torrentd(workdir, "leech", config={"dht": "off",
                                                     "lsd": "off"})
    nodes.append(leech.start(bound=300))
    assert leech.add(tor1) == ih
    lt = peers.Libtorrent(workdir, "lt", bound=300)
    lt.start(tor2, timeout=240)
    try:
        leech.wait_complete(ih, TIMEOUT)
        assert peers.files_equal(
            data, os.path.join(leech.download_dir, "data.bin"))
        lt.wait_complete(TIMEOUT)
        assert peers.files_equal(data, os.path.join(lt.download_dir,
                                                    "data.bin"))
    finally:
        lt.stop()
    # The seeder served both.
    t = seed.get(ih)
    assert t["uploaded_bytes"] >= 2 * SIZE, t
