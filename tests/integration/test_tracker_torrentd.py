"""torrentd peers in a private swarm whose only tracker is torrentd's
built-in one (tracker_listen), over HTTP and over UDP (BEP 15).

One torrentd is the tracker and nothing else; a torrentd seeder and three
torrentd leechers (DHT and LSD off, so the tracker is how they learn of
each other; PEX stays on) get a .torrent made by `torrentctl create -t URL`.
What a user sees is checked: every leecher reaches "seeding" with
byte-identical data, the seeder uploaded, the tracker's scrape (HTTP and
UDP, raw, as test_builtin_tracker.py does) counts 4 seeds, no leecher and
3 downloads, and a leecher stopped cleanly (it announces "stopped") leaves
the scrape within a bounded wait.

Every daemon is on its own 127.0.0.x; every process is stopped by its PID;
every wait is bounded.
"""
import json
import os
import struct

import pytest

import peers
import test_builtin_tracker as bt
from conftest import info_hash, write_file

SIZE = 4 << 20            # 64 pieces of 64 KiB
PIECE = "64K"
LEECHERS = 3
PEER_CONFIG = {"dht": "off", "lsd": "off"}


def http_counts(tr, ih):
    """(complete, incomplete, downloaded) from an HTTP /scrape."""
    sc = bt.scrape(tr, ih)
    if ih not in sc[b"files"]:
        return None
    return bt.files(sc, ih)


def udp_counts(tr, ih):
    """(complete, incomplete, downloaded) from a BEP 15 scrape."""
    cl = bt.UdpClient(tr, peers.next_address())
    try:
        cl.connect()
        action, rest = cl.scrape(ih)
    finally:
        cl.close()
    assert action == 2, (action, rest)
    seeders, completed, leechers = struct.unpack(">III", rest)
    return seeders, leechers, completed


def wait_counts(tr, ih, want, timeout, what):
    """Wait until the HTTP and the UDP scrape both say want."""
    last = []

    def ok():
        last[:] = [http_counts(tr, ih), udp_counts(tr, ih)]
        return last == [want, want]
    try:
        peers.wait_until(ok, timeout, 0.3, what)
    except AssertionError as e:
        raise AssertionError("%s: scrape (complete, incomplete, downloaded)"
                             " over http %s, over udp %s; want %s\n"
                             "tracker log tail:\n%s" % (
                                 e, last[0] if last else None,
                                 last[1] if last else None, want,
                                 "\n".join(tr.log().splitlines()[-30:])))


def torrent_json(ctl, td, *args):
    r = ctl("--socket", td.daemon.control_socket, "--json", *args,
            "1", rc=0)
    return json.loads(r.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["http", "udp"])
def test_torrentd_swarm_through_builtin_tracker(workdir, started, ctl,
                                                scheme):
    tr = bt.Tracker(workdir, started)
    url = tr.url() if scheme == "http" else tr.udp_url()

    src = os.path.join(str(workdir), "src", "payload.bin")
    write_file(src, SIZE, seed=21)
    tor = os.path.join(str(workdir), "payload.torrent")
    ctl("create", src, "-o", tor, "-t", url, "--piece-size", PIECE, rc=0)
    h = info_hash(tor)
    ih = bytes.fromhex(h)

    # The seeder has the data beforehand: it checks it, seeds, and the
    # tracker counts it as a seed.
    seed = peers.Torrentd(workdir, "seed", config=PEER_CONFIG)
    started.append(seed.start(bound=300))
    os.makedirs(seed.download_dir, exist_ok=True)
    os.link(src, os.path.join(seed.download_dir, "payload.bin"))
    assert seed.add(tor) == h
    t = seed.wait_state(h, ["seeding"], 60)
    assert t["downloaded_bytes"] == 0
    wait_counts(tr, ih, (1, 0, 0), 30, "the seeder's announce")

    leechers = []
    for i in range(LEECHERS):
        lc = peers.Torrentd(workdir, "leech%d" % i, config=PEER_CONFIG)
        started.append(lc.start(bound=300))
        leechers.append(lc)
    for lc in leechers:
        assert lc.add(tor) == h
    for lc in leechers:
        lc.wait_complete(h, 120)
        t = lc.wait_state(h, ["seeding"], 30)
        assert t["have_bytes"] == SIZE
        assert peers.wait_files_equal(
            src, os.path.join(lc.download_dir, "payload.bin"), 10), \
            "%s: data differs" % lc.daemon.dir
        # The tracker is the only way in: torrentctl shows it working.
        trk = torrent_json(ctl, lc, "trackers")["trackers"]
        assert [x["url"] for x in trk] == [url], trk
        assert trk[0]["status"] == "working", trk

    # Each leecher announced "completed": 4 seeds, 3 downloads.
    wait_counts(tr, ih, (4, 0, 3), 30, "the completed announces")

    info = torrent_json(ctl, seed, "info")
    assert info["info_hash"] == h
    assert info["state"] == "seeding"
    assert info["uploaded_bytes"] > 0, info

    # A clean stop announces "stopped": the tracker forgets that seed at
    # once (not after twice the interval).
    assert leechers[0].stop() == 0
    started.remove(leechers[0])
    wait_counts(tr, ih, (3, 0, 3), 15, "the stopped announce")
    # The others are still there and still seeding.
    for lc in leechers[1:] + [seed]:
        assert lc.get(h)["state"] == "seeding"
