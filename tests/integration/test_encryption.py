"""Message Stream Encryption (MSE/PE) on loopback: the config key
`encryption` (prefer, require, off) between two torrentd, and torrentd
with python3-libtorrent and transmission-daemon that require encryption.

torrentd <-> torrentd: the leecher dials the seeder (torrent.add_peer),
so each pair of settings runs the leecher's as initiator and the
seeder's as responder; the matrix has each setting on each side.
require <-> off must fail cleanly (no transfer, both daemons fine); the
others move byte-identical data, and torrent.peers on both sides says
whether the connection is encrypted ("encrypted", "encryption", the X
flag): RC4 unless one side is off, then plaintext (prefer -> off takes
the plaintext reconnect).

libtorrent with --enc forced (RC4 only, both ways) and transmission with
"encryption": 2 (required) refuse plaintext peers: a transfer with them
is a transfer under MSE/RC4.
"""
import os
import time

import pytest

import peers
from conftest import write_file
from peers import seed_copy

SIZE = 6 << 20
PIECE_POW = 18          # 256 KiB pieces
TD_TIMEOUT = 60
LT_TIMEOUT = 60
TR_TIMEOUT = 90         # transmission: 10-13 s before its first byte


@pytest.fixture
def source(workdir, mktorrent):
    data = write_file(os.path.join(str(workdir), "src", "data.bin"), SIZE,
                      seed=11)
    tor = peers.make_torrent(data, os.path.join(str(workdir), "e.torrent"),
                             PIECE_POW)
    return data, tor


# Transfers are slowed down to a few seconds so that torrent.peers can be
# read while the connection lasts (two seeds part at once).
SLOW = "2M"


def td_seeder(workdir, started, data, tor, enc, name="td-seed", **cfg):
    cfg["encryption"] = enc
    td = peers.Torrentd(workdir, name, config=cfg)
    seed_copy(data, td.download_dir)
    started.append(td.start())
    ih = td.add(tor)
    td.wait_state(ih, ("seeding",), 60)
    return td, ih


def td_node(workdir, started, enc, name, **cfg):
    cfg["encryption"] = enc
    td = peers.Torrentd(workdir, name, config=cfg)
    started.append(td.start())
    return td


def the_peer(td, ih, timeout=10):
    """The one handshaken peer of torrent ih (waits for it)."""
    def one():
        ps = td.call("torrent.peers", torrent=ih)["peers"]
        return ps[0] if len(ps) == 1 else None
    return peers.wait_until(one, timeout, 0.1, "one peer in torrent.peers")


def assert_crypto(p, encrypted, method=None):
    """encrypted: RC4 or not; method: "rc4", "mse-plaintext" (the MSE
    handshake, then plaintext) or "none", when the test knows which."""
    assert p["encrypted"] is encrypted, p
    assert ("X" in p["flags"]) is encrypted, p
    if encrypted:
        assert p["encryption"] == "rc4", p
    else:
        assert p["encryption"] in ("none", "mse-plaintext"), p
    if method:
        assert p["encryption"] == method, p


def assert_same(src, dst, settle=0):
    assert os.path.exists(dst), "%s was not written" % dst
    assert peers.wait_files_equal(src, dst, settle), \
        "%s differs from %s" % (dst, src)


# ------------------------------------------------------ torrentd <-> torrentd

# (leecher = initiator, seeder = responder, the method both see)
MATRIX_OK = [
    # Offered both, a "prefer" responder picks plaintext after the MSE
    # handshake: the data costs no cipher.
    ("prefer", "prefer", "mse-plaintext"),
    pytest.param("require", "require", "rc4", marks=pytest.mark.tsan),
    ("prefer", "require", "rc4"),
    ("require", "prefer", "rc4"),
    ("off", "off", "none"),
    ("prefer", "off", "none"),   # MSE dropped: the plaintext reconnect
    ("off", "prefer", "none"),   # plaintext accepted
]


def _pair_id(m):
    a, b = (m.values if hasattr(m, "values") else m)[:2]
    return "%s-to-%s" % (a, b)


@pytest.mark.parametrize("leech_enc,seed_enc,method", MATRIX_OK,
                         ids=[_pair_id(m) for m in MATRIX_OK])
def test_torrentd_pair(workdir, source, started, ctl, leech_enc, seed_enc,
                       method):
    encrypted = method == "rc4"
    data, tor = source
    seed, ih = td_seeder(workdir, started, data, tor, seed_enc)
    leech = td_node(workdir, started, leech_enc, "td-leech",
                    download_rate_limit=SLOW)
    leech.add(tor)
    leech.add_peer(ih, seed.peer_address())
    # Both sides see the connection the same way while it lasts.
    assert_crypto(the_peer(leech, ih), encrypted, method)
    assert_crypto(the_peer(seed, ih), encrypted, method)
    assert the_peer(seed, ih)["incoming"] is True
    # And torrentctl peers says it (the ENC column).
    r = ctl("peers", ih, rc=0,
            env=dict(os.environ, TORRENTD_SOCKET=leech.daemon.control_socket))
    lines = r.stdout.splitlines()
    assert lines[0].split()[-1] == "ENC", r.stdout
    assert lines[1].split()[-1] == method, r.stdout
    leech.wait_complete(ih, TD_TIMEOUT)
    assert_same(data, os.path.join(leech.download_dir, "data.bin"))
    t = leech.get(ih)
    assert SIZE <= t["downloaded_bytes"] < SIZE * 1.05


def test_prefer_remembers_a_plaintext_peer(workdir, source, started):
    """prefer -> off: the first dial tries MSE, the seeder drops it and
    the plaintext reconnect gets through.  The leecher remembers that this
    peer speaks plaintext only: when the seeder restarts (and so no longer
    knows the leecher, which must dial it again) the leecher's redial goes
    straight to plaintext, so its log has one failed MSE handshake, not
    one per connection."""
    data, tor = source
    seed, ih = td_seeder(workdir, started, data, tor, "off")
    leech = td_node(workdir, started, "prefer", "td-leech",
                    download_rate_limit="256k", log_level="debug")
    leech.add(tor)
    leech.add_peer(ih, seed.peer_address())
    assert_crypto(the_peer(leech, ih), False, "none")

    seed.stop()
    peers.wait_until(
        lambda: leech.call("torrent.peers", torrent=ih)["peers"] == [],
        10, 0.1, "the leecher to lose the seeder")
    seed.start()
    seed.wait_state(ih, ("seeding",), 60)
    before = leech.get(ih)["downloaded_bytes"]
    # The leecher redials by itself (after its back-off).
    p = the_peer(leech, ih, 30)
    assert_crypto(p, False, "none")
    assert p["incoming"] is False, p
    peers.wait_until(lambda: leech.get(ih)["downloaded_bytes"] > before,
                     20, 0.1, "data after the reconnect")
    log = leech.daemon.stderr_text()
    assert log.count("reconnecting in plaintext") == 1, leech.log_tail()
    assert log.count("drops MSE: plaintext from now on") == 1, \
        leech.log_tail()


MATRIX_FAIL = [("require", "off"), ("off", "require")]


@pytest.mark.parametrize("leech_enc,seed_enc", MATRIX_FAIL,
                         ids=["%s-to-%s" % m for m in MATRIX_FAIL])
def test_torrentd_pair_refused(workdir, source, started, leech_enc,
                               seed_enc):
    """require <-> off: no connection gets past the handshake, nothing
    moves, both daemons go on (and still talk to others: the seeder
    serves a third torrentd that agrees with it)."""
    data, tor = source
    seed, ih = td_seeder(workdir, started, data, tor, seed_enc)
    leech = td_node(workdir, started, leech_enc, "td-leech")
    leech.add(tor)
    leech.add_peer(ih, seed.peer_address())
    end = time.monotonic() + 6
    while time.monotonic() < end:
        assert leech.call("torrent.peers", torrent=ih)["peers"] == []
        assert seed.call("torrent.peers", torrent=ih)["peers"] == []
        time.sleep(0.25)
    assert leech.get(ih)["downloaded_bytes"] == 0
    assert seed.get(ih)["uploaded_bytes"] == 0
    other = td_node(workdir, started, seed_enc, "td-other")
    other.add(tor)
    other.add_peer(ih, seed.peer_address())
    other.wait_complete(ih, TD_TIMEOUT)
    assert_same(data, os.path.join(other.download_dir, "data.bin"))


# ---------------------------------------------- torrentd <-> libtorrent

@pytest.mark.parametrize("enc", ["prefer", "require"])
def test_torrentd_leeches_from_libtorrent_forced(workdir, source, started,
                                                 enc):
    """torrentd dials a libtorrent seeder that accepts RC4 only."""
    data, tor = source
    lt = peers.Libtorrent(workdir, "lt-seed")
    started.append(lt.start(tor, seed=True, save=os.path.dirname(data),
                            enc="forced", timeout=120))
    td = td_node(workdir, started, enc, "td-leech",
                 download_rate_limit=SLOW)
    ih = td.add(tor)
    td.add_peer(ih, lt.peer_address())
    assert_crypto(the_peer(td, ih), True)
    td.wait_complete(ih, LT_TIMEOUT)
    assert_same(data, os.path.join(td.download_dir, "data.bin"))


@pytest.mark.parametrize("enc", ["prefer", "require"])
def test_libtorrent_forced_leeches_from_torrentd(workdir, source, started,
                                                 enc):
    """A libtorrent leecher that speaks RC4 only dials torrentd."""
    data, tor = source
    td, ih = td_seeder(workdir, started, data, tor, enc,
                       upload_rate_limit=SLOW)
    lt = peers.Libtorrent(workdir, "lt-leech")
    started.append(lt.start(tor, connect=[td.peer_address()], enc="forced",
                            timeout=LT_TIMEOUT))
    p = the_peer(td, ih)
    assert_crypto(p, True)
    assert p["incoming"] is True
    done = lt.wait_complete(LT_TIMEOUT)
    assert done["hash_fails"] == 0
    assert_same(data, os.path.join(lt.download_dir, "data.bin"), 10)


def test_libtorrent_forced_refused_by_off(workdir, source, started):
    """encryption = off: a libtorrent that insists on RC4 gets nothing."""
    data, tor = source
    td, ih = td_seeder(workdir, started, data, tor, "off")
    lt = peers.Libtorrent(workdir, "lt-leech")
    started.append(lt.start(tor, connect=[td.peer_address()], enc="forced",
                            timeout=LT_TIMEOUT))
    time.sleep(5)
    assert td.call("torrent.peers", torrent=ih)["peers"] == []
    assert td.get(ih)["uploaded_bytes"] == 0


# -------------------------------------------- torrentd <-> transmission

@pytest.mark.slow
def test_torrentd_leeches_from_transmission_required(workdir, source,
                                                     started):
    data, tor = source
    tr = peers.Transmission(workdir, "tr-seed", encryption=2)
    started.append(tr.start())
    seed_copy(data, tr.download_dir)
    tid = tr.add(tor)
    tr.wait_seeding(tid, 60)
    td = td_node(workdir, started, "prefer", "td-leech")
    ih = td.add(tor)
    td.add_peer(ih, tr.peer_address())
    assert_crypto(the_peer(td, ih, 20), True)
    td.wait_complete(ih, TR_TIMEOUT)
    assert_same(data, os.path.join(td.download_dir, "data.bin"))


@pytest.mark.slow
def test_transmission_required_leeches_from_torrentd(workdir, source,
                                                     started):
    """transmission dials no loopback peer: torrentd (require) dials it
    and seeds to it."""
    data, tor = source
    td, ih = td_seeder(workdir, started, data, tor, "require")
    tr = peers.Transmission(workdir, "tr-leech", encryption=2)
    started.append(tr.start())
    tid = tr.add(tor)
    td.add_peer(ih, tr.peer_address())
    assert_crypto(the_peer(td, ih, 20), True)
    t = tr.wait_complete(tid, TR_TIMEOUT)
    assert t["corruptEver"] == 0
    assert_same(data, os.path.join(tr.download_dir, "data.bin"), 10)
