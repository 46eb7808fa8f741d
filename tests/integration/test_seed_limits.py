"""Seed limits: a seeding torrent stops at a share ratio or after an idle
time (config seed_ratio_limit, seed_idle_limit; per torrent ratio_limit,
idle_limit), says why (stop_reason, the torrent.seed_limit event), and a
start by hand lets it seed on until one of its limits changes.

Idle limits are minutes with up to three decimals, so 0.05 is 3 s: no
test waits for minutes.  Every daemon runs on its own 127.0.X.Y
(peers.Torrentd, kept in the `nodes` fixture: stopped by PID at the end,
and each must exit 0); everything is bounded in time.
"""
import json
import os
import shutil
import time

import pytest

from conftest import run, write_file
from peers import Torrentd, make_torrent, stop_all, wait_until
import tdaemon

SIZE = 4 << 20

pytestmark = pytest.mark.skipif(shutil.which("mktorrent") is None,
                                reason="mktorrent is not installed")


@pytest.fixture(autouse=True)
def _stop_everything():
    yield
    stop_all()


def ctl_json(td, *args):
    """torrentctl --json ARGS against td; the parsed output."""
    r = run([tdaemon.binary("torrentctl"), "--json",
             "--socket", td.daemon.control_socket] + [str(a) for a in args])
    tdaemon.assert_no_sanitizer(r.stderr, "torrentctl")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout) if r.stdout.strip() else None


def ctl_text(td, *args):
    r = run([tdaemon.binary("torrentctl"), "--socket",
             td.daemon.control_socket] + [str(a) for a in args])
    tdaemon.assert_no_sanitizer(r.stderr, "torrentctl")
    assert r.returncode == 0, r.stderr
    return r.stdout


def data_and_torrent(workdir, name, seed):
    data = write_file(os.path.join(str(workdir), "src", name), SIZE, seed)
    tor = make_torrent(data, os.path.join(str(workdir), name + ".torrent"),
                       piece_pow=18)
    return data, tor


def seeding(td, data, tor):
    """td gets the data beforehand, then the torrent: it seeds."""
    shutil.copy(data, os.path.join(td.download_dir, os.path.basename(data)))
    h = td.add(tor)
    td.wait_state(h, ["seeding"], 60)
    return h


def next_event(conn, type_, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = conn.recv()
        if m.get("method") == "event" and m["params"]["type"] == type_:
            return m["params"]
    raise AssertionError("no %s event" % type_)


def test_ratio_limit_stops_and_start_by_hand(workdir, nodes):
    """Per torrent ratio_limit 1: the seeder stops once a leecher has the
    whole torrent, with stop_reason "ratio" and a torrent.seed_limit
    event; a start by hand seeds on; setting the limit again re-arms it."""
    data, tor = data_and_torrent(workdir, "r.bin", 3)
    seed = Torrentd(workdir, "seed").start(bound=300)
    nodes.append(seed)
    h = seeding(seed, data, tor)
    ctl_text(seed, "set", h, "ratio_limit=1")
    assert seed.get(h)["ratio_limit"] == 1.0
    events = seed.daemon.connect(timeout=120)
    events.call("events.subscribe", types=["torrent.seed_limit"])

    leech = Torrentd(workdir, "leech").start(bound=300)
    nodes.append(leech)
    leech.add(tor)
    leech.add_peer(h, seed.peer_address())
    leech.wait_complete(h, 120)

    ev = next_event(events, "torrent.seed_limit")
    events.close()
    assert ev["info_hash"] == h and ev["reason"] == "ratio"
    assert ev["limit"] == 1.0 and ev["ratio"] >= 1.0
    t = seed.wait_state(h, ["paused"], 10)
    assert t["paused"] and t["stop_reason"] == "ratio"
    assert t["uploaded_bytes"] >= SIZE
    assert t["seed_limit_override"] is False
    info = ctl_json(seed, "info", h)
    assert info["stop_reason"] == "ratio" and info["state"] == "paused"
    text = ctl_text(seed, "info", h)
    assert "stopped by:" in text and "ratio limit" in text

    # A start by hand: it seeds on past its limit.
    t = seed.call("torrent.start", torrent=h)
    assert t["stop_reason"] is None and t["seed_limit_override"] is True
    time.sleep(2.5)  # more than two ticks
    t = seed.get(h)
    assert t["state"] == "seeding" and t["stop_reason"] is None
    assert "started by hand" in ctl_text(seed, "info", h)

    # Naming the limit again re-arms it: still past it, so it stops.
    ctl_text(seed, "set", h, "ratio_limit=1")
    t = seed.wait_state(h, ["paused"], 10)
    assert t["stop_reason"] == "ratio" and not t["seed_limit_override"]

    # A higher limit, then a start: it seeds (not reached yet).
    seed.call("torrent.set", torrent=h, ratio_limit=5)
    t = seed.call("torrent.start", torrent=h)
    assert t["seed_limit_override"] is False
    time.sleep(2.5)
    assert seed.get(h)["state"] == "seeding"

    # A stop by the user has no stop_reason.
    t = seed.call("torrent.stop", torrent=h)
    assert t["paused"] and t["stop_reason"] is None
    leech.stop()
    seed.stop()


def test_session_ratio_limit_and_own_none(workdir, nodes):
    """seed_ratio_limit applies to a torrent without its own limit;
    ratio_limit 0 is "none for this torrent" and keeps it seeding."""
    da, ta = data_and_torrent(workdir, "a.bin", 4)
    db, tb = data_and_torrent(workdir, "b.bin", 5)
    seed = Torrentd(workdir, "seed",
                    config={"seed_ratio_limit": "1.0"}).start(bound=300)
    nodes.append(seed)
    ha = seeding(seed, da, ta)
    hb = seeding(seed, db, tb)
    seed.call("torrent.set", torrent=hb, ratio_limit=0)
    cfg = seed.call("session.get")["config"]
    assert cfg["seed_ratio_limit"] == 1.0 and cfg["seed_idle_limit"] == 0

    leech = Torrentd(workdir, "leech").start(bound=300)
    nodes.append(leech)
    for h, tor in ((ha, ta), (hb, tb)):
        leech.add(tor)
        leech.add_peer(h, seed.peer_address())
    leech.wait_complete(ha, 120)
    leech.wait_complete(hb, 120)
    t = seed.wait_state(ha, ["paused"], 10)
    assert t["stop_reason"] == "ratio" and t["ratio_limit"] is None
    time.sleep(2.5)
    t = seed.get(hb)
    assert t["state"] == "seeding" and t["uploaded_bytes"] >= SIZE
    assert t["ratio_limit"] == 0

    # Lowering the session's limit live re-arms; 0 turns it off.
    seed.call("session.set", seed_ratio_limit=0)
    t = seed.call("torrent.start", torrent=ha)
    time.sleep(2.5)
    assert seed.get(ha)["state"] == "seeding"
    leech.stop()
    seed.stop()


def test_idle_limit_session_and_own(workdir, nodes):
    """seed_idle_limit 0.05 (3 s): a seeding torrent that uploads nothing
    stops with stop_reason "idle"; idle_limit 0 keeps another seeding; an
    own idle_limit applies when the session has none; the reason
    survives a restart."""
    da, ta = data_and_torrent(workdir, "i.bin", 6)
    db, tb = data_and_torrent(workdir, "j.bin", 7)
    seed = Torrentd(workdir, "seed").start(bound=300)
    nodes.append(seed)
    ctl_text(seed, "config", "set", "seed_idle_limit=0.05")
    assert seed.call("session.get")["config"]["seed_idle_limit"] == 0.05
    shutil.copy(db, os.path.join(seed.download_dir, "j.bin"))
    shutil.copy(da, os.path.join(seed.download_dir, "i.bin"))
    hb = seed.add(tb)
    ctl_text(seed, "set", hb, "idle_limit=0")
    t0 = time.monotonic()
    ha = seed.add(ta)
    seed.wait_state(ha, ["seeding"], 60)
    t = seed.wait_state(ha, ["paused"], 15)
    assert time.monotonic() - t0 >= 2.5
    assert t["stop_reason"] == "idle" and t["idle_limit"] is None
    assert ctl_json(seed, "info", ha)["stop_reason"] == "idle"
    t = seed.get(hb)
    assert t["state"] == "seeding" and t["idle_limit"] == 0

    # The session has none; the torrent's own applies.
    seed.call("session.set", seed_idle_limit=0)
    t = seed.call("torrent.set", torrent=hb, idle_limit=0.02)
    assert t["idle_limit"] == 0.02
    t = seed.wait_state(hb, ["paused"], 15)
    assert t["stop_reason"] == "idle"

    # The session's idle limit that ha follows changed: its last stop's
    # reason is forgotten (a start would not be "by hand past a limit").
    assert seed.get(ha)["stop_reason"] is None

    # The reason is kept across a restart; the torrents stay paused.
    seed.stop()
    seed.start(bound=300)
    t = seed.get(hb)
    assert t["state"] == "paused" and t["stop_reason"] == "idle"
    assert seed.get(ha)["state"] == "paused"
    assert seed.get(hb)["idle_limit"] == 0.02
    # Bad values are refused.
    for bad in (-1, "x", True):
        with pytest.raises(tdaemon.RpcError):
            seed.call("torrent.set", torrent=ha, idle_limit=bad)
    seed.stop()


def test_start_by_hand_after_idle_stop_seeds_on(workdir, nodes):
    """An idle stop, then a start by hand: the limits are off for it
    (seed_limit_override) until its idle_limit is set again."""
    da, ta = data_and_torrent(workdir, "k.bin", 8)
    seed = Torrentd(workdir, "seed",
                    config={"seed_idle_limit": "0.02"}).start(bound=300)
    nodes.append(seed)
    ha = seeding(seed, da, ta)
    seed.wait_state(ha, ["paused"], 15)
    t = seed.call("torrent.start", torrent=ha)
    assert t["seed_limit_override"] is True
    time.sleep(3)
    assert seed.get(ha)["state"] == "seeding"
    seed.call("torrent.set", torrent=ha, idle_limit=None)
    t = seed.wait_state(ha, ["paused"], 15)
    assert t["stop_reason"] == "idle" and not t["seed_limit_override"]
    seed.stop()
