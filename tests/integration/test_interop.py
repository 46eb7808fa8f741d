"""Interoperability of torrentd with real BitTorrent clients (issue 4,
"Proof"), all on loopback, each peer on its own 127.0.0.x:

  - torrentd downloads from transmission-daemon 3.00 as the only seeder,
    and transmission downloads from torrentd as the only seeder (torrentd
    dials it with torrent.add_peer: transmission refuses to dial loopback
    peers that a tracker hands it, see /work/shared/TESTING.md);
  - the same two with python3-libtorrent 2.0.8;
  - libtorrent <-> torrentd and transmission -> torrentd finding each
    other through Debian's opentracker only;
  - a peer that serves corrupt pieces (badpeer.py): torrentd fetches them
    again from an honest peer and ends with the right data.
Every transfer must end with data byte-identical to the source.

The harness tests (test_harness_*) need no torrentd and run today: they
prove that the classes of peers.py and badpeer.py do what the engine tests
rely on (libtorrent seeds transmission, opentracker introduces two
libtorrent peers, badpeer serves honest data, and its corrupt data is
caught by libtorrent's hash check).

Sizes are small (16 MiB, 256 KiB pieces); timeouts allow for
transmission's 10-13 s before its first payload byte.
"""
import os

import pytest

import peers
from conftest import info_hash, write_file
from peers import seed_copy

SIZE = 16 << 20
PIECE_POW = 18          # 256 KiB pieces: 64 pieces
TR_TIMEOUT = 90         # transmission: slow start + 8-30 MB/s
LT_TIMEOUT = 60


# ---------------------------------------------------------------- fixtures
# `started` (conftest.py): the peers a test started, stopped at its end.

@pytest.fixture
def source(workdir, mktorrent):
    """(data file, .torrent) of SIZE random bytes, no tracker."""
    data = write_file(os.path.join(str(workdir), "src", "data.bin"), SIZE,
                      seed=4)
    tor = peers.make_torrent(data, os.path.join(str(workdir), "d.torrent"),
                             PIECE_POW)
    return data, tor


def start_tracker(workdir, started):
    """An opentracker, started, that serves one torrent of SIZE random
    bytes (whose .torrent announces to it); returns (tracker, data file,
    .torrent, info-hash)."""
    tracker = peers.Opentracker(workdir)
    data = write_file(os.path.join(str(workdir), "src", "data.bin"), SIZE,
                      seed=5)
    tor = peers.make_torrent(data, os.path.join(str(workdir), "t.torrent"),
                             PIECE_POW, announce=tracker.announce_url())
    ih = info_hash(tor)
    tracker.allow(ih)
    started.append(tracker.start())
    return tracker, data, tor, ih


def assert_same(src, dst, settle=0):
    """dst holds the bytes of src.  torrentd reports a piece verified only
    once its data is durable (DESIGN.md 5): no settle time for it; other
    clients may be given settle seconds for their last writes."""
    assert os.path.exists(dst), "%s was not written" % dst
    assert peers.wait_files_equal(src, dst, settle), \
        "%s differs from %s" % (dst, src)


def start_transmission_seeder(workdir, started, data, tor):
    tr = peers.Transmission(workdir, "tr-seed")
    started.append(tr.start())
    seed_copy(data, tr.download_dir)
    tid = tr.add(tor)
    tr.wait_seeding(tid, 60)
    return tr


def start_libtorrent_seeder(workdir, started, data, tor, connect=()):
    """A libtorrent seeding data (from where it is), dialling connect."""
    lt = peers.Libtorrent(workdir, "lt-seed")
    started.append(lt.start(tor, seed=True, save=os.path.dirname(data),
                            connect=connect, timeout=120))
    return lt


def start_torrentd_seeder(workdir, started, data, tor, name="td-seed"):
    td = peers.Torrentd(workdir, name)
    seed_copy(data, td.download_dir)
    started.append(td.start())
    ih = td.add(tor)
    td.wait_state(ih, ("seeding",), 60)
    return td, ih


# ---------------------------------------------------- harness (no torrentd)

@pytest.mark.slow
def test_harness_libtorrent_seeds_transmission(workdir, source, started):
    """The harness itself: a libtorrent seeder dials a transmission
    leecher (which will not dial loopback peers itself)."""
    data, tor = source
    tr = peers.Transmission(workdir, "tr-leech")
    started.append(tr.start())
    tid = tr.add(tor)
    start_libtorrent_seeder(workdir, started, data, tor,
                            connect=[tr.peer_address()])
    t = tr.wait_complete(tid, TR_TIMEOUT)
    assert t["corruptEver"] == 0
    assert_same(data, os.path.join(tr.download_dir, "data.bin"), 10)


def test_harness_badpeer_honest_seeds_libtorrent(workdir, source, started):
    """badpeer --honest is a correct seeder: libtorrent completes from it
    alone, without a single hash failure."""
    data, tor = source
    bad = peers.BadPeer(workdir, "honest")
    started.append(bad.start(tor, data))
    lt = peers.Libtorrent(workdir, "lt-leech")
    started.append(lt.start(tor, connect=[bad.peer_address()],
                            timeout=LT_TIMEOUT))
    done = lt.wait_complete(LT_TIMEOUT)
    assert done["hash_fails"] == 0 and done["failed_bytes"] == 0
    assert_same(data, os.path.join(lt.download_dir, "data.bin"), 10)


def test_harness_badpeer_corrupt_caught_by_libtorrent(workdir, source,
                                                       started):
    """badpeer really corrupts: libtorrent, fed only by the liar, fails
    the hash of the corrupt pieces (and bans it); an honest seeder then
    brings the download to the right data."""
    data, tor = source
    liar = peers.BadPeer(workdir, "liar")
    started.append(liar.start(tor, data, corrupt=[3, 40]))
    lt = peers.Libtorrent(workdir, "lt-leech")
    started.append(lt.start(tor, connect=[liar.peer_address()],
                            timeout=LT_TIMEOUT, interval=0.2))
    lt.wait_event("alert", 30, lambda e: e["type"] == "hash_failed")
    assert liar.wait_event("served", 10, lambda e: e["corrupt"])
    honest = peers.BadPeer(workdir, "honest")
    started.append(honest.start(tor, data))
    lt.connect(honest.peer_address())
    done = lt.wait_complete(LT_TIMEOUT)
    assert done["hash_fails"] >= 1 and done["failed_bytes"] > 0
    assert_same(data, os.path.join(lt.download_dir, "data.bin"), 10)


@pytest.mark.slow
def test_harness_opentracker_introduces_libtorrent_peers(workdir, started,
                                                         mktorrent):
    """opentracker (whitelist, chroot, unprivileged user) introduces a
    libtorrent leecher to a libtorrent seeder: no peer is dialled by
    hand."""
    tracker, data, tor, ih = start_tracker(workdir, started)
    seed = start_libtorrent_seeder(workdir, started, data, tor)
    seed.wait_event("alert", 20, lambda e: e["type"] == "tracker_reply")
    leech = peers.Libtorrent(workdir, "lt-leech")
    started.append(leech.start(tor, timeout=LT_TIMEOUT))
    leech.wait_complete(LT_TIMEOUT)
    assert_same(data, os.path.join(leech.download_dir, "data.bin"),
                10)


# ------------------------------------------------ torrentd and transmission

@pytest.mark.slow
def test_torrentd_leeches_from_transmission(workdir, source, started):
    data, tor = source
    tr = start_transmission_seeder(workdir, started, data, tor)
    td = peers.Torrentd(workdir, "td-leech")
    started.append(td.start())
    ih = td.add(tor)
    td.add_peer(ih, tr.peer_address())
    td.wait_complete(ih, TR_TIMEOUT)
    assert_same(data, os.path.join(td.download_dir, "data.bin"))


@pytest.mark.slow
def test_transmission_leeches_from_torrentd(workdir, source, started):
    data, tor = source
    td, ih = start_torrentd_seeder(workdir, started, data, tor)
    tr = peers.Transmission(workdir, "tr-leech")
    started.append(tr.start())
    tid = tr.add(tor)
    td.add_peer(ih, tr.peer_address())
    t = tr.wait_complete(tid, TR_TIMEOUT)
    assert t["corruptEver"] == 0
    assert_same(data, os.path.join(tr.download_dir, "data.bin"), 10)
    # torrentd counts bytes sent in batches: allow it a moment to catch up
    peers.wait_until(lambda: td.get(ih)["uploaded_bytes"] >= SIZE, 10,
                     0.2, "torrentd's uploaded_bytes to reach %d (now %d)"
                     % (SIZE, td.get(ih)["uploaded_bytes"]))


# -------------------------------------------------- torrentd and libtorrent

def test_torrentd_leeches_from_libtorrent(workdir, source, started):
    data, tor = source
    lt = start_libtorrent_seeder(workdir, started, data, tor)
    td = peers.Torrentd(workdir, "td-leech")
    started.append(td.start())
    ih = td.add(tor)
    td.add_peer(ih, lt.peer_address())
    td.wait_complete(ih, LT_TIMEOUT)
    assert_same(data, os.path.join(td.download_dir, "data.bin"))


def test_libtorrent_leeches_from_torrentd(workdir, source, started):
    data, tor = source
    td, ih = start_torrentd_seeder(workdir, started, data, tor)
    lt = peers.Libtorrent(workdir, "lt-leech")
    started.append(lt.start(tor, timeout=LT_TIMEOUT))
    td.add_peer(ih, lt.peer_address())
    done = lt.wait_complete(LT_TIMEOUT)
    assert done["hash_fails"] == 0
    assert_same(data, os.path.join(lt.download_dir, "data.bin"), 10)


# ------------------------------------------------------ through opentracker

def test_tracker_libtorrent_to_torrentd(workdir, started, mktorrent):
    """torrentd finds a libtorrent seeder through opentracker only."""
    tracker, data, tor, ih = start_tracker(workdir, started)
    lt = start_libtorrent_seeder(workdir, started, data, tor)
    lt.wait_event("alert", 20, lambda e: e["type"] == "tracker_reply")
    td = peers.Torrentd(workdir, "td-leech")
    started.append(td.start())
    td.add(tor)
    td.wait_complete(ih, LT_TIMEOUT)
    assert_same(data, os.path.join(td.download_dir, "data.bin"))


def test_tracker_torrentd_to_libtorrent(workdir, started, mktorrent):
    """A libtorrent leecher finds a torrentd seeder through opentracker
    only (torrentd must announce from its own address, see TESTING.md
    "Binding")."""
    tracker, data, tor, ih = start_tracker(workdir, started)
    td, _ = start_torrentd_seeder(workdir, started, data, tor)
    lt = peers.Libtorrent(workdir, "lt-leech")
    started.append(lt.start(tor, timeout=LT_TIMEOUT))
    lt.wait_complete(LT_TIMEOUT)
    assert_same(data, os.path.join(lt.download_dir, "data.bin"), 10)


@pytest.mark.slow
def test_tracker_transmission_to_torrentd(workdir, started, mktorrent):
    """torrentd finds a transmission seeder through opentracker and dials
    it (transmission would not dial a loopback peer itself)."""
    tracker, data, tor, ih = start_tracker(workdir, started)
    tr = start_transmission_seeder(workdir, started, data, tor)
    # transmission announces from its own address (bind-address-ipv4)
    peers.wait_until(lambda: tr.peer_address() in tracker.peers_of(ih), 30,
                     0.5, "opentracker to list transmission")
    td = peers.Torrentd(workdir, "td-leech")
    started.append(td.start())
    td.add(tor)
    td.wait_complete(ih, TR_TIMEOUT)
    assert_same(data, os.path.join(td.download_dir, "data.bin"))


# ------------------------------------------------------------- a liar peer

def test_torrentd_refetches_corrupt_pieces(workdir, source, started):
    """A peer serves corrupt data for some pieces: torrentd fails their
    hash, fetches them again from an honest peer, and ends with the right
    data."""
    data, tor = source
    liar = peers.BadPeer(workdir, "liar")
    started.append(liar.start(tor, data, corrupt=[0, 7, 63]))
    td = peers.Torrentd(workdir, "td-leech")
    started.append(td.start())
    ih = td.add(tor)
    td.add_peer(ih, liar.peer_address())
    liar.wait_event("served", 30, lambda e: e["corrupt"])
    honest = peers.BadPeer(workdir, "honest")
    started.append(honest.start(tor, data))
    td.add_peer(ih, honest.peer_address())
    td.wait_complete(ih, LT_TIMEOUT)
    assert_same(data, os.path.join(td.download_dir, "data.bin"))
    # The liar is banned (torrentd logs it: the API shows no bans yet).
    assert any("ban" in line and liar.ip in line
               for line in td.daemon.stderr_text().splitlines()), \
        "torrentd did not ban %s:\n%s" % (liar.peer_address(),
                                           td.log_tail())
