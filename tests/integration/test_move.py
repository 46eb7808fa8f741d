"""torrent.move and `torrentctl move`: a torrent's data goes to another
directory while torrentd runs.

Seeders and leechers are torrentd on their own 127.0.X.Y (peers.Torrentd),
introduced with torrent.add_peer.  What a user sees is checked: the files
at the new place, byte-identical, none left at the old one, the torrent
seeding (or downloading) on, the new directory after a restart, and the
clear refusals.  The cross-filesystem copy runs when /dev/shm is another
filesystem than the test's directory.
"""
import os
import shutil
import tempfile

import pytest

from conftest import write_file
from peers import Torrentd, files_equal, make_torrent, stop_all, wait_until
from tdaemon import RpcError

pytestmark = pytest.mark.skipif(shutil.which("mktorrent") is None,
                                reason="mktorrent is not installed")

RPC_INVALID_PARAMS = -32602
RPC_E_IO = -32007
RPC_E_INVALID_STATE = -32009


@pytest.fixture(autouse=True)
def _stop_everything():
    yield
    stop_all()


def multi_payload(workdir, name="multi", big=300000):
    """A multi-file torrent with subdirectories: (data dir, .torrent)."""
    top = os.path.join(str(workdir), "src", name)
    os.makedirs(os.path.join(top, "sub", "deeper"))
    write_file(os.path.join(top, "a.bin"), big, seed=1)
    write_file(os.path.join(top, "sub", "b.bin"), 3 * 65536 + 17, seed=2)
    write_file(os.path.join(top, "sub", "deeper", "c.bin"), 70000, seed=3)
    write_file(os.path.join(top, "z.bin"), 5, seed=4)
    tor = make_torrent(top, os.path.join(str(workdir), name + ".torrent"),
                       piece_pow=16)
    return top, tor


def seeder(workdir, top, tor, name="seed"):
    s = Torrentd(workdir, name).start(bound=600)
    shutil.copytree(top, os.path.join(s.download_dir, os.path.basename(top)))
    h = s.add(tor)
    s.wait_state(h, ["seeding"], 120)
    return s, h


def leech_from(workdir, tor, h, s, name="leech"):
    leech = Torrentd(workdir, name).start(bound=600)
    leech.add(tor)
    leech.add_peer(h, s.peer_address())
    leech.wait_complete(h, 120)
    return leech


def test_move_seeding_same_filesystem(workdir, ctl):
    top, tor = multi_payload(workdir)
    s, h = seeder(workdir, top, tor)
    old = os.path.join(s.download_dir, "multi")
    new_dir = os.path.join(str(workdir), "elsewhere", "new")  # created
    # An unrelated file beside the torrent's stays where it is.
    write_file(os.path.join(s.download_dir, "unrelated.txt"), 10, seed=9)
    r = ctl("--socket", s.daemon.control_socket, "move", h[:8], new_dir,
            rc=0)
    assert "moved" in r.stdout and new_dir in r.stdout
    t = s.get(h)
    assert t["download_dir"] == new_dir
    assert t["state"] == "seeding"
    assert files_equal(top, os.path.join(new_dir, "multi"))
    assert not os.path.exists(old)  # its directories went too
    assert os.path.exists(os.path.join(s.download_dir, "unrelated.txt"))
    # The same directory again (written differently): a no-op.
    t = s.call("torrent.move", torrent=h, download_dir=new_dir + "//")
    assert t["download_dir"] == new_dir and t["state"] == "seeding"
    # A leecher gets everything from the moved data.
    leech = leech_from(workdir, tor, h, s)
    assert files_equal(top, os.path.join(leech.download_dir, "multi"))
    # --json gives the torrent object; moving back works too.
    r = ctl("--socket", s.daemon.control_socket, "--json", "move", h,
            s.download_dir, rc=0)
    assert '"download_dir":"%s"' % s.download_dir in r.stdout.replace(
        " ", "")
    assert files_equal(top, old)
    assert not os.path.exists(os.path.join(new_dir, "multi"))
    leech.stop()
    s.stop()


def test_no_move_finds_the_copy(workdir, ctl):
    top, tor = multi_payload(workdir)
    s, h = seeder(workdir, top, tor)
    there = os.path.join(str(workdir), "copy")
    shutil.copytree(top, os.path.join(there, "multi"))
    # A directory that does not exist: refused, nothing changes.
    with pytest.raises(RpcError) as e:
        s.call("torrent.move", torrent=h, download_dir=there + "-missing",
               move=False)
    assert e.value.code == RPC_E_IO and "missing" in e.value.message
    assert s.get(h)["download_dir"] == s.download_dir
    r = ctl("--socket", s.daemon.control_socket, "move", "--no-move", h,
            there, rc=0)
    assert "looking for" in r.stdout
    t = s.wait_state(h, ["seeding"], 60)
    assert t["download_dir"] == there
    assert t["have_bytes"] == t["size_bytes"]
    # Nothing moved: both copies are there.
    assert files_equal(top, os.path.join(there, "multi"))
    assert files_equal(top, os.path.join(s.download_dir, "multi"))
    s.stop()


def test_move_refused(workdir, ctl):
    top, tor = multi_payload(workdir)
    s, h = seeder(workdir, top, tor)
    old = os.path.join(s.download_dir, "multi")
    target = os.path.join(str(workdir), "target")
    write_file(os.path.join(target, "multi", "sub", "b.bin"), 100, seed=77)
    with pytest.raises(RpcError) as e:
        s.call("torrent.move", torrent=h, download_dir=target)
    assert e.value.code == RPC_E_IO
    assert "not overwriting" in e.value.message
    assert "multi/sub/b.bin" in e.value.message
    # Nothing moved; the torrent seeds on from where it was.
    assert files_equal(top, old)
    assert not os.path.exists(os.path.join(target, "multi", "a.bin"))
    assert os.path.getsize(os.path.join(target, "multi", "sub",
                                        "b.bin")) == 100
    t = s.get(h)
    assert t["state"] == "seeding" and t["download_dir"] == s.download_dir
    # The command line: exit status 1, the message on stderr.
    r = ctl("--socket", s.daemon.control_socket, "move", h, target, rc=1)
    assert "not overwriting" in r.stderr
    # Relative and '..' directories are refused by the API.
    for bad in ("relative/dir", "/a/../b", 7):
        with pytest.raises(RpcError) as e:
            s.call("torrent.move", torrent=h, download_dir=bad)
        assert e.value.code == RPC_INVALID_PARAMS
    with pytest.raises(RpcError) as e:
        s.call("torrent.move", torrent=h, download_dir=target, move="yes")
    assert e.value.code == RPC_INVALID_PARAMS
    ctl("--socket", s.daemon.control_socket, "move", h, rc=2)
    s.stop()


def test_move_while_downloading_and_restart(workdir):
    top, tor = multi_payload(workdir, big=6 << 20)
    s, h = seeder(workdir, top, tor)
    leech = Torrentd(workdir, "leech").start(bound=600)
    leech.add(tor)
    leech.call("torrent.set", torrent=h, download_limit=1 << 20)
    leech.add_peer(h, s.peer_address())
    wait_until(lambda: 0 < leech.get(h)["have_bytes"] <
               leech.get(h)["size_bytes"] // 2, 60, 0.05,
               "the download to begin")
    new_dir = os.path.join(str(workdir), "moved-leech")
    t = leech.call("torrent.move", torrent=h, download_dir=new_dir)
    assert t["download_dir"] == new_dir
    assert t["state"] in ("downloading", "queued")
    assert t["have_bytes"] < t["size_bytes"]
    assert not os.path.exists(os.path.join(leech.download_dir, "multi"))
    leech.call("torrent.set", torrent=h, download_limit=0)
    leech.add_peer(h, s.peer_address())
    leech.wait_complete(h, 120)
    leech.wait_state(h, ["seeding"], 30)
    assert files_equal(top, os.path.join(new_dir, "multi"))
    # The new directory is in the resume record: a restart keeps it and
    # seeds without downloading again.
    leech.stop()
    leech.start(bound=600)
    t = leech.wait_state(h, ["seeding"], 60)
    assert t["download_dir"] == new_dir
    assert t["have_bytes"] == t["size_bytes"]
    leech.stop()
    s.stop()


def _other_fs_dir():
    shm = "/dev/shm"
    if not os.path.isdir(shm) or not os.access(shm, os.W_OK):
        return None
    return shm


def test_move_across_filesystems(workdir):
    shm = _other_fs_dir()
    if shm is None or os.stat(shm).st_dev == os.stat(str(workdir)).st_dev:
        pytest.skip("no second filesystem (/dev/shm) here")
    top, tor = multi_payload(workdir)
    s, h = seeder(workdir, top, tor)
    other = tempfile.mkdtemp(prefix="test_move.", dir=shm)
    try:
        t = s.call("torrent.move", torrent=h, download_dir=other)
        assert t["download_dir"] == other and t["state"] == "seeding"
        assert files_equal(top, os.path.join(other, "multi"))
        assert not os.path.exists(os.path.join(s.download_dir, "multi"))
        leech = leech_from(workdir, tor, h, s)
        assert files_equal(top, os.path.join(leech.download_dir, "multi"))
        t = s.call("torrent.move", torrent=h, download_dir=s.download_dir)
        assert t["state"] == "seeding"
        assert files_equal(top, os.path.join(s.download_dir, "multi"))
        assert not os.path.exists(os.path.join(other, "multi"))
        leech.stop()
    finally:
        shutil.rmtree(other, ignore_errors=True)
    s.stop()


def test_stop_during_move(workdir):
    """SIGTERM while a torrent.move runs (or waits for the engine's last
    storage: a leecher's peer thread holds one): torrentd exits at once
    and cleanly (no sanitizer report; a move not submitted yet ends before
    the workers go, a running copy is cancelled and moved back), and after
    a restart the data is whole at exactly one of the two places, the one
    the torrent names."""
    shm = _other_fs_dir()
    if shm is not None and \
            os.stat(shm).st_dev == os.stat(str(workdir)).st_dev:
        shm = None
    top, tor = multi_payload(workdir, big=48 << 20)
    s, h = seeder(workdir, top, tor)
    leech = Torrentd(workdir, "leech").start(bound=600)
    leech.add(tor)
    leech.call("torrent.set", torrent=h, download_limit=1 << 20)
    leech.add_peer(h, s.peer_address())
    wait_until(lambda: leech.get(h)["have_bytes"] > 0, 60, 0.05,
               "the download to begin")
    other = tempfile.mkdtemp(prefix="test_move.",
                             dir=shm or str(workdir))
    try:
        c = s.daemon.connect()
        c.send({"jsonrpc": "2.0", "id": 1, "method": "torrent.move",
                "params": {"torrent": h, "download_dir": other}})
        assert s.stop(timeout=20) == 0
        c.close()
        leech.stop()
        s.start(bound=600)
        t = s.wait_state(h, ["seeding"], 120)
        assert t["have_bytes"] == t["size_bytes"]
        here = t["download_dir"]
        assert here in (s.download_dir, other)
        gone = other if here == s.download_dir else s.download_dir
        assert files_equal(top, os.path.join(here, "multi"))
        assert not os.path.exists(os.path.join(gone, "multi", "a.bin"))
        s.stop()
    finally:
        shutil.rmtree(other, ignore_errors=True)
