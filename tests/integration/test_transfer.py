"""torrentd to torrentd on loopback: the engine moves data.

Every daemon listens on its own 127.0.X.Y (peers.Torrentd).  Peers are
introduced with torrent.add_peer, or by Debian's opentracker.  Everything
is bounded in time; processes are stopped by PID (peers.py).

TORRENTD_TEST_SIZE sets the size of the big single-file torrent (default
256 MiB: it moves in a few seconds under ASan on loopback).
"""
import os
import shutil
import signal
import time

import pytest

from conftest import write_file
from peers import (BadPeer, Opentracker, Torrentd, files_equal, make_torrent,
                   stop_all, wait_until)

BIG = int(os.environ.get("TORRENTD_TEST_SIZE", str(256 << 20)))
MB = 1000 * 1000

pytestmark = pytest.mark.skipif(shutil.which("mktorrent") is None,
                                reason="mktorrent is not installed")


@pytest.fixture(autouse=True)
def _stop_everything():
    yield
    stop_all()


def start_torrentd(workdir, name, config=None):
    """A Torrentd, started; the test stops it."""
    return Torrentd(workdir, name, config=config).start(bound=600)


def seeder_for(workdir, tor, data, name="seed", config=None):
    """A torrentd that has the data in its download directory beforehand:
    adding the torrent checks it and seeds without downloading."""
    s = start_torrentd(workdir, name, config)
    dst = os.path.join(s.download_dir, os.path.basename(data))
    if os.path.isdir(data):
        shutil.copytree(data, dst)
    else:
        shutil.copy(data, dst)
    h = s.add(tor)
    t = s.wait_state(h, ["seeding"], 120)
    assert t["have_bytes"] == t["size_bytes"]
    assert t["downloaded_bytes"] == 0
    return s, h


def big_torrent(workdir, size=BIG, pow_=18):
    data = os.path.join(str(workdir), "big.bin")
    write_file(data, size, seed=7)
    tor = make_torrent(data, os.path.join(str(workdir), "big.torrent"),
                       piece_pow=pow_)
    return data, tor


@pytest.mark.tsan
def test_single_file_add_peer(workdir):
    """The big single-file torrent, one seeder, one leecher: byte-identical;
    the leecher downloads each byte once; torrent.peers shows the peer."""
    size = BIG if "tsan" not in os.environ.get("TORRENTD_BUILD", "") \
        else min(BIG, 32 << 20)
    data, tor = big_torrent(workdir, size)
    s, h = seeder_for(workdir, tor, data)
    hook_out = os.path.join(str(workdir), "hook-out")
    hook = os.path.join(str(workdir), "hook.sh")
    with open(hook, "w") as f:
        f.write("#!/bin/sh\ncat > %s.tmp && mv %s.tmp %s\n"
                % (hook_out, hook_out, hook_out))
    os.chmod(hook, 0o755)
    leech = start_torrentd(workdir, "leech", config={"on_complete": hook})
    events = leech.daemon.connect(timeout=300)
    events.call("events.subscribe", types=["torrent.completed"])
    leech.add(tor)
    r = leech.add_peer(h, s.peer_address())
    assert r["status"] in ("added", "connected")
    ev = events.recv()
    while ev.get("method") != "event":
        ev = events.recv()
    assert ev["params"]["type"] == "torrent.completed", ev
    assert ev["params"]["info_hash"] == h
    events.close()
    t = leech.wait_complete(h, 300)
    assert t["downloaded_bytes"] >= size
    assert t["downloaded_bytes"] < size * 1.05
    t = leech.wait_state(h, ["seeding"], 30)
    assert t["completed_at"]
    assert files_equal(data, os.path.join(leech.download_dir, "big.bin"))
    wait_until(lambda: os.path.exists(hook_out), 30, 0.1, "the hook")
    with open(hook_out) as f:
        assert '"state":"seeding"' in f.read().replace(" ", "")
    st = s.get(h)
    assert st["uploaded_bytes"] >= size
    leech.stop()
    s.stop()


def lt_multifile(workdir):
    """A multi-file torrent with BEP 47 pad files and a zero-length file,
    made by python3-libtorrent (canonical_files adds the pads)."""
    lt = pytest.importorskip("libtorrent")
    top = os.path.join(str(workdir), "src", "multi")
    os.makedirs(os.path.join(top, "sub", "deeper"))
    write_file(os.path.join(top, "a.bin"), 1000003, seed=1)
    write_file(os.path.join(top, "sub", "b.bin"), 3 * 65536 + 17, seed=2)
    write_file(os.path.join(top, "sub", "deeper", "c.bin"), 70000, seed=3)
    write_file(os.path.join(top, "z.bin"), 5, seed=4)
    open(os.path.join(top, "empty.txt"), "w").close()
    fs = lt.file_storage()
    lt.add_files(fs, top)
    ct = lt.create_torrent(fs, 65536, flags=lt.create_torrent.v1_only |
                           lt.create_torrent.canonical_files)
    lt.set_piece_hashes(ct, os.path.dirname(top))
    e = ct.generate()
    files = e[b"info"][b"files"]
    assert any(f.get(b"attr") == b"p" for f in files), "no pad files"
    assert any(f[b"length"] == 0 for f in files)
    tor = os.path.join(str(workdir), "multi.torrent")
    with open(tor, "wb") as f:
        f.write(lt.bencode(e))
    return top, tor


@pytest.mark.tsan
def test_multi_file_pad_and_empty(workdir):
    top, tor = lt_multifile(workdir)
    s, h = seeder_for(workdir, tor, top)
    leech = start_torrentd(workdir, "leech")
    leech.add(tor)
    leech.add_peer(h, s.peer_address())
    leech.wait_complete(h, 120)
    leech.wait_state(h, ["seeding"], 30)
    got = os.path.join(leech.download_dir, "multi")
    assert files_equal(top, got)
    # Pad files are never written.
    assert not os.path.exists(os.path.join(got, ".pad"))
    assert os.path.getsize(os.path.join(got, "empty.txt")) == 0
    leech.stop()
    s.stop()


def test_unwanted_file_is_not_downloaded(workdir):
    """torrent.set files wanted=false on a running torrent: that file is
    not fetched (pieces it shares with wanted files aside), the torrent
    completes on the wanted ones and seeds them."""
    top, tor = lt_multifile(workdir)
    s, h = seeder_for(workdir, tor, top)
    leech = start_torrentd(workdir, "leech")
    leech.add(tor, paused=True)
    files = leech.call("torrent.files", torrent=h)["files"]
    big = [f for f in files if f["path"].endswith("a.bin")][0]
    leech.call("torrent.set", torrent=h,
               files=[{"index": big["index"], "wanted": False}])
    leech.call("torrent.start", torrent=h)
    leech.add_peer(h, s.peer_address())
    t = leech.wait_complete(h, 60)
    assert t["size_bytes"] < s.get(h)["size_bytes"]
    leech.wait_state(h, ["seeding"], 30)
    got = os.path.join(leech.download_dir, "multi")
    for rel in ("sub/b.bin", "sub/deeper/c.bin", "z.bin"):
        assert files_equal(os.path.join(top, rel), os.path.join(got, rel))
    # a.bin (1 MB) was skipped: at most its first and last piece came.
    assert t["downloaded_bytes"] < 600000, t
    # Wanted again: it downloads the rest.
    leech.call("torrent.set", torrent=h,
               files=[{"index": big["index"], "wanted": True}])
    leech.wait_complete(h, 60)  # it dials the seeder it had left again
    assert files_equal(top, got)
    leech.stop()
    s.stop()


@pytest.mark.tsan
def test_stop_start_remove_during_transfer(workdir):
    """Pause, resume and remove (with the data) while blocks stream in:
    the engine lets go of peers, storage and jobs cleanly (the sanitizers
    watch), and the other torrent goes on."""
    size = 16 << 20
    data, tor = big_torrent(workdir, size)
    d2 = os.path.join(str(workdir), "other.bin")
    write_file(d2, 4 << 20, seed=5)
    t2 = make_torrent(d2, os.path.join(str(workdir), "other.torrent"))
    s, h = seeder_for(workdir, tor, data)
    shutil.copy(d2, s.download_dir)
    h2 = s.add(t2)
    s.wait_state(h2, ["seeding"], 60)
    leech = start_torrentd(workdir, "leech",
                           config={"download_rate_limit": "4M"})
    leech.add(tor)
    leech.add(t2)
    leech.add_peer(h, s.peer_address())
    leech.add_peer(h2, s.peer_address())
    wait_until(lambda: leech.get(h)["downloaded_bytes"] > 1 << 20, 30, 0.05)
    leech.call("torrent.stop", torrent=h)
    assert leech.call("torrent.peers", torrent=h)["peers"] == []
    leech.call("torrent.start", torrent=h)
    leech.add_peer(h, s.peer_address())
    wait_until(lambda: leech.get(h)["peers_connected"] > 0, 30, 0.05)
    leech.call("torrent.remove", torrent=h, delete_data=True)
    leech.wait_complete(h2, 60)
    assert files_equal(d2, os.path.join(leech.download_dir, "other.bin"))
    wait_until(lambda: not os.path.exists(
        os.path.join(leech.download_dir, "big.bin")), 30, 0.1)
    leech.stop()
    s.stop()


def check_swarm(leechers, h, data, timeout=240):
    """Every leecher completes within timeout with the bytes of data, and
    every one uploaded some (they traded among themselves)."""
    for lc in leechers:
        lc.wait_complete(h, timeout)
    for lc in leechers:
        assert files_equal(data, os.path.join(lc.download_dir,
                                              os.path.basename(data)))
    ups = [lc.get(h)["uploaded_bytes"] for lc in leechers]
    assert all(u > 0 for u in ups), ups


def test_swarm_through_tracker(workdir):
    """One seeder and 8 leechers that learn of each other from
    opentracker: all complete, and the leechers trade among themselves."""
    if not shutil.which("opentracker"):
        pytest.fail("opentracker is not installed")
    if os.geteuid() != 0:
        pytest.skip("opentracker drops privileges: needs root to start")
    data = os.path.join(str(workdir), "swarm.bin")
    size = 24 << 20
    write_file(data, size, seed=11)
    trk = Opentracker(workdir).start()
    tor = make_torrent(data, os.path.join(str(workdir), "swarm.torrent"),
                       piece_pow=16, announce=trk.announce_url())
    from conftest import info_hash
    h = info_hash(tor)
    trk.allow(h)
    # Slow seeder: the leechers must get most pieces from each other.
    s, _ = seeder_for(workdir, tor, data,
                      config={"upload_rate_limit": "6M"})
    leechers = [start_torrentd(workdir, "l%d" % i) for i in range(8)]
    for lc in leechers:
        lc.add(tor)
    check_swarm(leechers, h, data)
    trackers = leechers[0].call("torrent.trackers", torrent=h)["trackers"]
    assert trackers[0]["status"] == "working", trackers
    for lc in leechers:
        lc.stop()
    s.stop()
    trk.stop()


@pytest.mark.tsan
def test_swarm_add_peer_leechers_upload(workdir):
    """Without a tracker: 8 leechers that know the seeder and each other
    (add_peer) all complete and upload to each other."""
    data = os.path.join(str(workdir), "swarm.bin")
    size = 16 << 20
    write_file(data, size, seed=12)
    tor = make_torrent(data, os.path.join(str(workdir), "swarm.torrent"),
                       piece_pow=16)
    s, h = seeder_for(workdir, tor, data,
                      config={"upload_rate_limit": "4M"})
    leechers = [start_torrentd(workdir, "l%d" % i) for i in range(8)]
    for lc in leechers:
        lc.add(tor)
    for i, lc in enumerate(leechers):
        lc.add_peer(h, s.peer_address())
        for other in leechers[:i]:
            lc.add_peer(h, other.peer_address())
    check_swarm(leechers, h, data)
    for lc in leechers:
        lc.stop()
    s.stop()


def resumed_run(workdir, sig):
    size = 48 << 20
    data, tor = big_torrent(workdir, size)
    s, h = seeder_for(workdir, tor, data)
    leech = start_torrentd(workdir, "leech",
                           config={"download_rate_limit": "8M"})
    leech.add(tor)
    leech.add_peer(h, s.peer_address())
    wait_until(lambda: leech.get(h)["have_bytes"] > size * 0.4, 60, 0.05,
               "half of the data")
    before = leech.get(h)
    leech.daemon.stop(sig)
    leech.daemon.config["download_rate_limit"] = "0"
    leech.start()
    t = leech.get(h)
    return s, leech, h, data, size, before, t


@pytest.mark.tsan
def test_sigterm_and_restart_continues(workdir):
    s, leech, h, data, size, before, t = resumed_run(workdir, signal.SIGTERM)
    # What was verified before the stop is still there, without a check.
    assert t["have_bytes"] >= before["have_bytes"]
    assert t["have_bytes"] > 0
    start_down = t["downloaded_bytes"]
    leech.add_peer(h, s.peer_address())
    t2 = leech.wait_complete(h, 120)
    fetched = t2["downloaded_bytes"] - start_down
    # Only what was missing is fetched again (plus partial pieces).
    assert fetched < size - t["have_bytes"] + (4 << 20), (fetched, t)
    assert fetched < size
    assert files_equal(data, os.path.join(leech.download_dir, "big.bin"))
    leech.stop()
    s.stop()


def test_kill9_never_reports_unverified(workdir):
    s, leech, h, data, size, before, t = resumed_run(workdir, signal.SIGKILL)
    wait_until(lambda: leech.get(h)["state"] not in ("checking",), 60)
    claimed = leech.get(h)["have_bytes"]
    # A full check must find at least everything that was claimed.
    leech.call("torrent.stop", torrent=h)
    leech.call("torrent.verify", torrent=h)
    wait_until(lambda: leech.get(h)["state"] != "checking", 60, 0.1)
    checked = leech.get(h)["have_bytes"]
    assert checked >= claimed, (checked, claimed)
    leech.call("torrent.start", torrent=h)
    leech.add_peer(h, s.peer_address())
    leech.wait_complete(h, 120)
    assert files_equal(data, os.path.join(leech.download_dir, "big.bin"))
    leech.stop()
    s.stop()


@pytest.mark.tsan
def test_corrupt_peer_is_banned(workdir):
    size = 8 << 20
    data, tor = big_torrent(workdir, size, pow_=16)
    npieces = size // 65536
    bad = BadPeer(workdir).start(tor, data,
                                 corrupt=range(0, npieces))
    leech = start_torrentd(workdir, "leech")
    h = leech.add(tor)
    leech.add_peer(h, bad.peer_address())
    # The liar serves bad data first and is banned ...
    bad.wait_event("closed", 60)
    wait_until(lambda: "banning peer" in leech.daemon.stderr_text(), 30,
               0.1, "the ban")
    assert leech.get(h)["have_bytes"] == 0
    # ... then an honest peer gives the right data.
    s, _ = seeder_for(workdir, tor, data)
    leech.add_peer(h, s.peer_address())
    # A banned peer is not dialled again.
    leech.add_peer(h, bad.peer_address())
    leech.wait_complete(h, 120)
    assert files_equal(data, os.path.join(leech.download_dir, "big.bin"))
    addrs = [p["address"] for p in
             leech.call("torrent.peers", torrent=h)["peers"]]
    assert bad.peer_address() not in addrs
    leech.stop()
    s.stop()
    bad.stop()


def test_late_corrupt_copy_never_overwrites_verified(workdir):
    """A peer sits on our requests until they are given to others (no
    CANCEL is sent for those), then, right after each piece is verified
    (our HAVE), sends its copies of them, corrupt.  The peer thread must
    not write them over the verified data (the piece is sealed,
    peerconn.h): the file stays byte-identical and a full torrent.verify
    finds every piece.  ~35 s: ENGINE_REQUEST_TIMEOUT_MS is 30 s."""
    size = 4 << 20
    data, tor = big_torrent(workdir, size, pow_=16)
    npieces = size // 65536
    liar = BadPeer(workdir).start(tor, data, corrupt=range(npieces),
                                  extra=["--late", "--lack",
                                         str(npieces - 1)])
    leech = start_torrentd(workdir, "leech")
    h = leech.add(tor)
    leech.add_peer(h, liar.peer_address())
    liar.wait_event("held", 30)

    def liar_requests():
        for p in leech.call("torrent.peers", torrent=h)["peers"]:
            if p["address"] == liar.peer_address():
                return p["requests"]
        return None
    # Snubbed: its requests go to others (its thread still has them).
    wait_until(lambda: liar_requests() == 0, 60, 0.2, "the snub")
    s, _ = seeder_for(workdir, tor, data)
    leech.add_peer(h, s.peer_address())
    leech.wait_complete(h, 120)
    # The liar answers its held requests as the HAVEs come.
    liar.wait_event("served", 30, lambda ev: ev["corrupt"])
    time.sleep(2)
    assert files_equal(data, os.path.join(leech.download_dir, "big.bin"))
    # Its copies reached a live connection (else nothing was tested).
    assert liar_requests() is not None, "the liar was dropped"
    leech.call("torrent.stop", torrent=h)
    leech.call("torrent.verify", torrent=h)
    wait_until(lambda: leech.get(h)["state"] != "checking", 60, 0.1)
    assert leech.get(h)["have_bytes"] == size
    leech.stop()
    s.stop()
    liar.stop()


def test_allowed_fast_from_choking_peer(workdir):
    """BEP 6: a peer that never unchokes us but sends ALLOWED_FAST for
    three pieces (and rejects requests for others): torrentd fetches and
    verifies those three from it while choked; an honest seeder then
    gives the rest, byte-identical."""
    size = 2 << 20
    data, tor = big_torrent(workdir, size, pow_=16)
    allowed = [3, 17, 30]
    fp = BadPeer(workdir).start(tor, data, extra=[
        "--fast-choked", ",".join(str(i) for i in allowed)])
    leech = start_torrentd(workdir, "leech")
    h = leech.add(tor)
    leech.add_peer(h, fp.peer_address())
    wait_until(lambda: leech.get(h)["have_bytes"] >= len(allowed) * 65536,
               60, 0.1, "the allowed-fast pieces")
    peers_ = leech.call("torrent.peers", torrent=h)["peers"]
    assert peers_[0]["choking_us"] is True, peers_
    assert leech.get(h)["have_bytes"] == len(allowed) * 65536
    s, _ = seeder_for(workdir, tor, data)
    leech.add_peer(h, s.peer_address())
    leech.wait_complete(h, 60)
    assert files_equal(data, os.path.join(leech.download_dir, "big.bin"))
    leech.stop()
    s.stop()
    fp.stop()


def rate_of(counter, seconds=10):
    """The bytes per second by which counter() grows over seconds."""
    t0, d0 = time.monotonic(), counter()
    time.sleep(seconds)
    t1, d1 = time.monotonic(), counter()
    return (d1 - d0) / (t1 - t0)


def test_download_rate_limit(workdir):
    """A per-torrent download limit of 2 MB/s, measured over ~10 s."""
    size = 64 << 20
    data, tor = big_torrent(workdir, size)
    s, h = seeder_for(workdir, tor, data)
    leech = start_torrentd(workdir, "leech")
    leech.add(tor)
    leech.call("torrent.set", torrent=h, download_limit=2 * MB)
    leech.add_peer(h, s.peer_address())
    wait_until(lambda: leech.get(h)["downloaded_bytes"] > 1 * MB, 30, 0.05)
    rate = rate_of(lambda: leech.get(h)["downloaded_bytes"])
    assert 0.9 * 2 * MB < rate < 1.1 * 2 * MB, rate
    leech.stop()
    s.stop()


def test_global_upload_rate_limit_live(workdir):
    """upload_rate_limit set live with session.set on the seeder."""
    size = 64 << 20
    data, tor = big_torrent(workdir, size)
    s, h = seeder_for(workdir, tor, data)
    s.call("session.set", upload_rate_limit=3 * MB)
    leech = start_torrentd(workdir, "leech")
    leech.add(tor)
    leech.add_peer(h, s.peer_address())
    wait_until(lambda: leech.get(h)["downloaded_bytes"] > 1 * MB, 30, 0.05)
    rate = rate_of(lambda: s.get(h)["uploaded_bytes"])
    assert 0.9 * 3 * MB < rate < 1.1 * 3 * MB, rate
    leech.stop()
    s.stop()


@pytest.mark.tsan
def test_queue_max_active_downloads(workdir):
    d1 = os.path.join(str(workdir), "one.bin")
    d2 = os.path.join(str(workdir), "two.bin")
    write_file(d1, 12 << 20, seed=21)
    write_file(d2, 4 << 20, seed=22)
    t1 = make_torrent(d1, os.path.join(str(workdir), "one.torrent"))
    t2 = make_torrent(d2, os.path.join(str(workdir), "two.torrent"))
    s = start_torrentd(workdir, "seed")
    for d in (d1, d2):
        shutil.copy(d, s.download_dir)
    h1, h2 = s.add(t1), s.add(t2)
    s.wait_state(h1, ["seeding"], 60)
    s.wait_state(h2, ["seeding"], 60)
    leech = start_torrentd(workdir, "leech",
                           config={"max_active_downloads": "1",
                                   "download_rate_limit": "4M"})
    leech.add(t1)
    leech.wait_state(h1, ["downloading"], 30)
    leech.add(t2)
    assert leech.get(h2)["state"] == "queued"
    leech.add_peer(h1, s.peer_address())
    leech.add_peer(h2, s.peer_address())
    # While the first downloads, the second waits and gets nothing.
    time.sleep(1.5)
    assert leech.get(h2)["state"] == "queued"
    assert leech.get(h2)["downloaded_bytes"] == 0
    leech.wait_complete(h1, 60)
    leech.wait_complete(h2, 60)
    assert files_equal(d1, os.path.join(leech.download_dir, "one.bin"))
    assert files_equal(d2, os.path.join(leech.download_dir, "two.bin"))
    leech.stop()
    s.stop()


def test_error_unwritable_dir_and_retry(workdir):
    """A download directory that cannot be made (a file is in the way):
    the torrent goes to error with storage's message, other torrents go
    on, torrent.start retries once the cause is gone."""
    size = 4 << 20
    data, tor = big_torrent(workdir, size)
    s, h = seeder_for(workdir, tor, data)
    leech = start_torrentd(workdir, "leech")
    blocker = os.path.join(str(workdir), "blocker")
    with open(blocker, "w") as f:
        f.write("in the way\n")
    bad_dir = os.path.join(blocker, "dl")
    leech.add(tor, download_dir=bad_dir)
    leech.add_peer(h, s.peer_address())
    wait_until(lambda: leech.get(h)["state"] == "error", 30, 0.1)
    err = leech.get(h)["error"]
    assert "cannot" in err and "Not a directory" in err, err
    os.unlink(blocker)
    leech.call("torrent.start", torrent=h)
    leech.wait_state(h, ["downloading", "seeding"], 30)
    leech.add_peer(h, s.peer_address())
    leech.wait_complete(h, 60)
    assert files_equal(data, os.path.join(bad_dir, "big.bin"))
    leech.stop()
    s.stop()


@pytest.mark.tsan
def test_files_deleted_while_seeding(workdir):
    """The seeder's file is deleted underneath: error with a clear
    message, and torrent.start checks again (nothing left: downloading)."""
    size = 4 << 20
    data, tor = big_torrent(workdir, size)
    s, h = seeder_for(workdir, tor, data)
    os.unlink(os.path.join(s.download_dir, "big.bin"))
    leech = start_torrentd(workdir, "leech")
    leech.add(tor)
    leech.add_peer(h, s.peer_address())
    wait_until(lambda: s.get(h)["state"] == "error", 30, 0.1)
    assert "big.bin" in s.get(h)["error"], s.get(h)
    s.call("torrent.start", torrent=h)
    t = s.wait_state(h, ["downloading"], 30)
    assert t["have_bytes"] == 0
    leech.stop()
    s.stop()
