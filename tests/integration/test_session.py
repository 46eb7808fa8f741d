"""The session and the API's methods, talking JSON over the control socket.

Real torrentd processes (from $TORRENTD_BUILD), a temp state directory
each: adding from a .torrent and as a magnet, listing field by field,
stop/start/remove, restarts (clean and kill -9), corrupt state files, the
event log with "since", the watch directory, verifying data on disk and
the completion hook.
"""
import base64
import glob
import json
import os
import signal
import stat
import time

import pytest

from conftest import info_hash, run, write_file
from peers import slow_swarm, wait_until
from tdaemon import Connection, Daemon, RpcError, b64

RPC_INVALID_PARAMS = -32602
RPC_E_TORRENT_NOT_FOUND = -32001
RPC_E_INVALID_TORRENT = -32002
RPC_E_PERMISSION_DENIED = -32003
RPC_E_AMBIGUOUS = -32004
RPC_E_TOO_OLD = -32005
RPC_E_INVALID_STATE = -32009

TORRENT_FIELDS = (
    "id", "info_hash", "name", "state", "progress", "size_bytes",
    "have_bytes", "downloaded_bytes", "uploaded_bytes", "download_rate",
    "upload_rate", "peers_connected", "eta_s", "ratio", "download_dir",
    "error", "added_at", "completed_at")

MAGNET_HASH = "0123456789abcdef0123456789abcdef01234567"
MAGNET = ("magnet:?xt=urn:btih:%s&dn=hello%%20world"
          "&tr=http%%3A%%2F%%2F127.0.0.1%%3A1%%2Fannounce" % MAGNET_HASH)


# ----------------------------------------------------------------- helpers

@pytest.fixture
def daemon(workdir):
    d = Daemon(workdir)
    yield d
    d.stop()


def make_torrent(mktorrent, workdir, name="payload", files=None,
                 piece_kib=16, trackers=("http://127.0.0.1:1/announce",)):
    """A torrent of files under workdir/src/<name>; returns
    (torrent path, source directory).  files: {relpath: size}."""
    files = files or {"a.bin": 100000, "sub/b.bin": 40000}
    src = os.path.join(str(workdir), "src")
    top = os.path.join(src, name)
    for i, (rel, size) in enumerate(sorted(files.items())):
        write_file(os.path.join(top, rel), size, seed=hash(name) + i)
    out = os.path.join(str(workdir), name + ".torrent")
    argv = [mktorrent, "-l", str(10 + piece_kib.bit_length()), "-o", out]
    for t in trackers:
        argv += ["-a", t]
    r = run(argv + [top])
    assert r.returncode == 0, r.stderr
    return out, src


def wait_for(pred, timeout=15.0, what="condition"):
    """peers.wait_until(), polling every 0.05 s, 15 s by default."""
    return wait_until(pred, timeout, 0.05, what)


def get(d, spec, **kw):
    return d.call("torrent.get", torrent=spec, **kw)


def wait_state(d, spec, state, timeout=15.0):
    return wait_for(lambda: get(d, spec)["state"] == state and get(d, spec),
                    timeout, "state %s" % state)


def rpc_error(d, method, **params):
    with pytest.raises(RpcError) as ei:
        d.call(method, **params)
    return ei.value


def copy_tree(src, dst):
    for root, _, names in os.walk(src):
        for n in names:
            p = os.path.join(root, n)
            q = os.path.join(dst, os.path.relpath(p, src))
            os.makedirs(os.path.dirname(q), exist_ok=True)
            with open(p, "rb") as a, open(q, "wb") as b:
                b.write(a.read())


# ------------------------------------------------------------------ tests

@pytest.mark.tsan
def test_add_file_and_magnet_twice(workdir, daemon, mktorrent):
    path, _ = make_torrent(mktorrent, workdir)
    daemon.start()
    ih = info_hash(path)
    r = daemon.call("torrent.add", metainfo=b64(path))
    assert r == {"status": "added", "info_hash": ih, "id": 1,
                 "name": "payload"}
    r = daemon.call("torrent.add", metainfo=b64(path))
    assert r["status"] == "exists" and r["info_hash"] == ih and r["id"] == 1

    r = daemon.call("torrent.add", magnet=MAGNET, paused=True)
    assert r == {"status": "added", "info_hash": MAGNET_HASH, "id": 2,
                 "name": "hello world"}
    r = daemon.call("torrent.add", magnet=MAGNET)
    assert r["status"] == "exists" and r["id"] == 2
    # The same torrent named by an upper-case base32 magnet is the same.
    r = daemon.call("torrent.add",
                    magnet="magnet:?xt=urn:btih:" + ih.upper())
    assert r["status"] == "exists" and r["id"] == 1

    # What is durable is on disk.
    names = sorted(os.listdir(daemon.state_dir))
    for n in (ih + ".torrent", ih + ".resume", MAGNET_HASH + ".magnet",
              MAGNET_HASH + ".resume"):
        assert n in names
    with open(os.path.join(daemon.state_dir, ih + ".torrent"), "rb") as f, \
            open(path, "rb") as g:
        assert f.read() == g.read()


def test_list_field_by_field(workdir, daemon, mktorrent):
    path, _ = make_torrent(mktorrent, workdir)
    daemon.start()
    before = int(time.time())
    daemon.call("torrent.add", metainfo=b64(path))
    daemon.call("torrent.add", magnet=MAGNET, paused=True)
    after = int(time.time())
    ts = daemon.call("torrent.list")["torrents"]
    assert [t["id"] for t in ts] == [1, 2]
    t, m = ts
    for f in TORRENT_FIELDS:
        assert f in t and f in m, f
    assert t["info_hash"] == info_hash(path)
    assert t["name"] == "payload"
    assert t["state"] == "downloading"
    assert t["progress"] == 0.0
    assert t["size_bytes"] == 140000
    assert t["have_bytes"] == 0
    assert t["downloaded_bytes"] == 0 and t["uploaded_bytes"] == 0
    assert t["download_rate"] == 0 and t["upload_rate"] == 0
    assert t["peers_connected"] == 0
    assert t["eta_s"] is None
    assert t["ratio"] == 0.0
    assert t["download_dir"] == daemon.download_dir
    assert t["error"] is None
    assert before <= t["added_at"] <= after
    assert t["completed_at"] is None
    assert t["paused"] is False

    assert m["info_hash"] == MAGNET_HASH
    assert m["name"] == "hello world"
    assert m["state"] == "paused"
    assert m["size_bytes"] == 0
    assert m["has_metadata"] is False

    # Projection.
    ts = daemon.call("torrent.list", fields=["id", "state"])["torrents"]
    assert ts == [{"id": 1, "state": "downloading"},
                  {"id": 2, "state": "paused"}]
    e = rpc_error(daemon, "torrent.list", fields=["id", "nope"])
    assert e.code == RPC_INVALID_PARAMS and "nope" in e.message
    e = rpc_error(daemon, "torrent.list", fields="id")
    assert e.code == RPC_INVALID_PARAMS

    # The status socket may read.
    c = daemon.connect(status=True)
    assert len(c.call("torrent.list")["torrents"]) == 2
    c.close()


def test_naming_a_torrent(workdir, daemon, mktorrent):
    path, _ = make_torrent(mktorrent, workdir)
    daemon.start()
    ih = info_hash(path)
    daemon.call("torrent.add", metainfo=b64(path))
    a = "abcdef" + "1" * 34
    b = "abcdef" + "2" * 34
    daemon.call("torrent.add", magnet="magnet:?xt=urn:btih:" + a)
    daemon.call("torrent.add", magnet="magnet:?xt=urn:btih:" + b)
    assert get(daemon, 1)["info_hash"] == ih
    assert get(daemon, "1")["info_hash"] == ih
    assert get(daemon, ih)["id"] == 1
    assert get(daemon, ih.upper())["id"] == 1
    assert get(daemon, ih[:6])["id"] == 1
    assert get(daemon, "abcdef1")["id"] == 2
    e = rpc_error(daemon, "torrent.get", torrent="abcdef")
    assert e.code == RPC_E_AMBIGUOUS
    assert sorted(e.data["matches"]) == [a, b]
    e = rpc_error(daemon, "torrent.get", torrent=99)
    assert e.code == RPC_E_TORRENT_NOT_FOUND and e.data["torrent"] == 99
    e = rpc_error(daemon, "torrent.get", torrent="ffffffffff")
    assert e.code == RPC_E_TORRENT_NOT_FOUND
    e = rpc_error(daemon, "torrent.get", torrent="abc")
    assert e.code == RPC_INVALID_PARAMS
    e = rpc_error(daemon, "torrent.get")
    assert e.code == RPC_INVALID_PARAMS
    assert get(daemon, 1, fields=["name"]) == {"name": "payload"}


def test_invalid_adds(workdir, daemon):
    daemon.start()
    e = rpc_error(daemon, "torrent.add", metainfo="not base64!")
    assert e.code == RPC_E_INVALID_TORRENT
    e = rpc_error(daemon, "torrent.add",
                  metainfo=base64.b64encode(b"d4:infod4:name1:xee").decode())
    assert e.code == RPC_E_INVALID_TORRENT
    assert e.data["reason"] and "detail" in e.data and "offset" in e.data
    e = rpc_error(daemon, "torrent.add", magnet="magnet:?dn=x")
    assert e.code == RPC_E_INVALID_TORRENT and e.data["reason"]
    e = rpc_error(daemon, "torrent.add")
    assert e.code == RPC_INVALID_PARAMS
    e = rpc_error(daemon, "torrent.add", magnet=MAGNET, metainfo="AAAA")
    assert e.code == RPC_INVALID_PARAMS
    e = rpc_error(daemon, "torrent.add", magnet=MAGNET, download_dir="rel")
    assert e.code == RPC_INVALID_PARAMS
    e = rpc_error(daemon, "torrent.add", magnet=MAGNET, paused="yes")
    assert e.code == RPC_INVALID_PARAMS
    assert daemon.call("torrent.list") == {"torrents": []}
    # The status socket refuses changes.
    c = daemon.connect(status=True)
    with pytest.raises(RpcError) as ei:
        c.call("torrent.add", magnet=MAGNET)
    assert ei.value.code == RPC_E_PERMISSION_DENIED
    c.close()


@pytest.mark.tsan
def test_stop_start_remove(workdir, daemon, mktorrent):
    path, src = make_torrent(mktorrent, workdir)
    daemon.start()
    ih = info_hash(path)
    daemon.call("torrent.add", metainfo=b64(path))
    daemon.call("torrent.add", magnet=MAGNET)
    t = daemon.call("torrent.stop", torrent=1)
    assert t["state"] == "paused" and t["paused"] is True
    assert get(daemon, 1)["state"] == "paused"
    t = daemon.call("torrent.start", torrent=ih)
    assert t["state"] == "downloading" and t["paused"] is False
    assert get(daemon, 2)["state"] == "metadata"

    assert daemon.call("torrent.stop", all=True) == {"changed": 2}
    assert [x["state"] for x in daemon.call("torrent.list")["torrents"]] == \
        ["paused", "paused"]
    assert daemon.call("torrent.start", all=True) == {"changed": 2}
    assert [x["state"] for x in daemon.call("torrent.list")["torrents"]] == \
        ["downloading", "metadata"]

    r = daemon.call("torrent.remove", torrent=2)
    assert r["status"] == "removed" and r["id"] == 2
    assert not glob.glob(os.path.join(daemon.state_dir, MAGNET_HASH + "*"))
    e = rpc_error(daemon, "torrent.get", torrent=2)
    assert e.code == RPC_E_TORRENT_NOT_FOUND

    # delete_data removes the torrent's files and directories, nothing else.
    copy_tree(src, daemon.download_dir)
    other = os.path.join(daemon.download_dir, "keep.txt")
    with open(other, "w") as f:
        f.write("not the torrent's")
    r = daemon.call("torrent.remove", torrent=1, delete_data=True)
    assert r["data_deleted"] is True
    assert not os.path.exists(os.path.join(daemon.download_dir, "payload"))
    assert os.path.exists(other)
    assert daemon.call("torrent.list") == {"torrents": []}
    assert not glob.glob(os.path.join(daemon.state_dir, ih + "*"))
    # A removed torrent can come back, with a new id.
    r = daemon.call("torrent.add", metainfo=b64(path))
    assert r["status"] == "added" and r["id"] == 3


def test_restart_finds_everything(workdir, daemon, mktorrent):
    path, _ = make_torrent(mktorrent, workdir)
    other = os.path.join(str(workdir), "elsewhere")
    os.makedirs(other)
    daemon.start()
    daemon.call("torrent.add", metainfo=b64(path), download_dir=other)
    daemon.call("torrent.add", magnet=MAGNET)
    daemon.call("torrent.add", magnet="magnet:?xt=urn:btih:" + "e" * 40)
    daemon.call("torrent.remove", torrent=3)
    daemon.call("torrent.stop", torrent=2)
    daemon.call("torrent.set", torrent=1, upload_limit=5000,
                files=[{"index": 1, "wanted": False}])
    before = daemon.call("torrent.list")["torrents"]
    assert daemon.stop() == 0

    daemon.start()
    after = daemon.call("torrent.list")["torrents"]
    assert after == before
    assert [t["id"] for t in after] == [1, 2]
    assert after[0]["download_dir"] == other
    assert after[0]["upload_limit"] == 5000
    assert after[1]["state"] == "paused"
    files = daemon.call("torrent.files", torrent=1)["files"]
    assert [f["wanted"] for f in files] == [True, False]
    # Ids keep growing: the removed id 3 is not given again.
    r = daemon.call("torrent.add", magnet="magnet:?xt=urn:btih:" + "f" * 40)
    assert r["id"] == 4


@pytest.mark.tsan
def test_kill9_after_add_loses_nothing(workdir, daemon, mktorrent):
    path, _ = make_torrent(mktorrent, workdir)
    daemon.start()
    c = daemon.connect()
    r = c.call("torrent.add", metainfo=b64(path), paused=True)
    r2 = c.call("torrent.add", magnet=MAGNET)
    daemon.kill9()
    daemon.start()
    ts = {t["info_hash"]: t for t in daemon.call("torrent.list")["torrents"]}
    assert ts[r["info_hash"]]["id"] == r["id"]
    assert ts[r["info_hash"]]["state"] == "paused"
    assert ts[r2["info_hash"]]["id"] == r2["id"]
    assert "did not stop cleanly" in daemon.stderr_text()

    # Removing the newest torrent and crashing does not give its id again.
    r3 = daemon.call("torrent.add", magnet="magnet:?xt=urn:btih:" + "c" * 40)
    daemon.call("torrent.remove", torrent=r3["id"])
    daemon.kill9()
    daemon.start()
    r4 = daemon.call("torrent.add", magnet="magnet:?xt=urn:btih:" + "d" * 40)
    assert r4["id"] == r3["id"] + 1


def test_corrupt_state_set_aside(workdir, daemon, mktorrent):
    path, _ = make_torrent(mktorrent, workdir)
    p2, _ = make_torrent(mktorrent, workdir, name="second")
    daemon.start()
    ih = daemon.call("torrent.add", metainfo=b64(path), paused=True)[
        "info_hash"]
    ih2 = daemon.call("torrent.add", metainfo=b64(p2))["info_hash"]
    daemon.stop()
    sd = daemon.state_dir
    # A truncated resume record: the torrent stays, starting afresh.
    with open(os.path.join(sd, ih + ".resume"), "r+b") as f:
        f.truncate(30)
    # A .torrent that is garbage: set aside, the rest goes on.
    with open(os.path.join(sd, ih2 + ".torrent"), "wb") as f:
        f.write(b"d4:infoi3ee")
    with open(os.path.join(sd, "session"), "wb") as f:
        f.write(b"\x00garbage")
    with open(os.path.join(sd, "settings"), "wb") as f:
        f.write(b"this is not a setting\n")
    daemon.start()
    ts = daemon.call("torrent.list")["torrents"]
    assert [t["info_hash"] for t in ts] == [ih]
    names = os.listdir(sd)
    for n in (ih + ".resume", ih2 + ".torrent", "session", "settings"):
        assert any(x.startswith(n + ".corrupt-") for x in names), n
    log = daemon.stderr_text()
    assert "unusable" in log and ih2 + ".torrent" in log
    # The orphan resume of the broken torrent is cleaned up, not reused.
    assert ih2 + ".resume" not in os.listdir(sd)
    # A restart after that is clean.
    daemon.stop()
    daemon.start()
    assert [t["info_hash"] for t in daemon.call("torrent.list")["torrents"]] \
        == [ih]


def recv_events(c, n, timeout=10.0):
    out = []
    c.sock.settimeout(timeout)
    while len(out) < n:
        doc = c.recv()
        if doc.get("method") == "event":
            out.append(doc["params"])
    return out


def test_events_since_after_reconnect(workdir, daemon, mktorrent):
    path, _ = make_torrent(mktorrent, workdir)
    daemon.start()
    c = daemon.connect()
    r = c.call("events.subscribe")
    last = r["last_seq"]
    c.call("torrent.add", magnet=MAGNET)
    evs = (c.events if hasattr(c, "events") else []) + []
    evs = [e["params"] for e in evs if e.get("method") == "event"]
    evs += recv_events(c, 2 - len(evs))
    assert [e["type"] for e in evs] == ["torrent.added", "torrent.state"]
    assert evs[0]["info_hash"] == MAGNET_HASH and evs[0]["id"] == 1
    assert evs[1]["old"] == "paused" and evs[1]["new"] == "metadata"
    assert [e["seq"] for e in evs] == [last + 1, last + 2]
    for e in evs:
        assert isinstance(e["time"], int)
    seen = evs[-1]["seq"]
    c.close()

    # While nobody listens: a stop, an add, a removal.
    daemon.call("torrent.stop", torrent=1)
    daemon.call("torrent.add", metainfo=b64(path))
    daemon.call("torrent.remove", torrent=1)

    c = daemon.connect()
    c.call("events.subscribe", since=seen)
    missed = [e["params"] for e in getattr(c, "events", [])
              if e.get("method") == "event"]
    missed += recv_events(c, 4 - len(missed))
    assert [e["seq"] for e in missed] == list(range(seen + 1, seen + 5))
    assert [e["type"] for e in missed] == [
        "torrent.state", "torrent.added", "torrent.state", "torrent.removed"]
    assert (missed[0]["old"], missed[0]["new"]) == ("metadata", "paused")
    assert missed[1]["id"] == 2
    assert (missed[2]["old"], missed[2]["new"]) == ("paused", "downloading")
    assert missed[3]["id"] == 1
    c.close()

    # Filtered by type.
    c = daemon.connect()
    c.call("events.subscribe", since=seen, types=["torrent.removed"])
    got = [e["params"] for e in getattr(c, "events", [])
           if e.get("method") == "event"]
    got += recv_events(c, 1 - len(got))
    assert got[0]["type"] == "torrent.removed"
    assert got[0]["info_hash"] == MAGNET_HASH
    c.close()

    # After a restart numbers go on, and an old since is refused plainly.
    last_before = daemon.call("session.stats")["event_seq"]
    daemon.stop()
    daemon.start()
    c = daemon.connect()
    r = c.call("events.subscribe")
    assert r["last_seq"] >= last_before + 1  # session.shutdown counted
    with pytest.raises(RpcError) as ei:
        c.call("events.subscribe", since=seen)
    assert ei.value.code == RPC_E_TOO_OLD
    c.close()


@pytest.mark.tsan
def test_watch_dir(workdir, mktorrent):
    watch = os.path.join(str(workdir), "watch")
    os.makedirs(watch)
    d = Daemon(workdir, config={"watch_dir": watch, "watch_interval": 1})
    path, _ = make_torrent(mktorrent, workdir)
    d.start()
    try:
        with open(path, "rb") as f:
            data = f.read()
        tmp = os.path.join(watch, ".incoming")
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, os.path.join(watch, "good.torrent"))
        bad = os.path.join(watch, "bad.torrent")
        with open(bad, "wb") as f:
            f.write(b"this is no torrent")
        old = time.time() - 60
        os.utime(bad, (old, old))
        wait_for(lambda: os.path.exists(
            os.path.join(watch, "good.torrent.added")), what=".added")
        wait_for(lambda: os.path.exists(bad + ".invalid"), what=".invalid")
        assert not os.path.exists(os.path.join(watch, "good.torrent"))
        ts = d.call("torrent.list")["torrents"]
        assert [t["info_hash"] for t in ts] == [info_hash(path)]
        assert "bad.torrent" in d.stderr_text()
        # The same torrent again: it exists, the file is still renamed.
        with open(os.path.join(watch, "again.torrent"), "wb") as f:
            f.write(data)
        wait_for(lambda: os.path.exists(
            os.path.join(watch, "again.torrent.added")), what="again")
        assert len(d.call("torrent.list")["torrents"]) == 1
    finally:
        d.stop()


def test_watch_dir_polling_fallback(workdir, mktorrent):
    watch = os.path.join(str(workdir), "watch")
    os.makedirs(watch)
    d = Daemon(workdir, config={"watch_dir": watch, "watch_interval": 1})
    path, _ = make_torrent(mktorrent, workdir)
    d.start(env={"TORRENTD_WATCH_POLL": "1"})
    try:
        assert "(polling, every 1 s)" in d.stderr_text()
        with open(path, "rb") as f:
            data = f.read()
        dst = os.path.join(watch, "p.torrent")
        with open(dst, "wb") as f:
            f.write(data)
        wait_for(lambda: os.path.exists(dst + ".added"), what=".added")
        assert len(d.call("torrent.list")["torrents"]) == 1
    finally:
        d.stop()


HOOK = """#!/bin/sh
out="$1"
cat > "%(out)s.stdin"
env | grep '^TORRENTD_' | sort > "%(out)s.env"
mv "%(out)s.stdin" "%(out)s.json"
exit 3
"""


@pytest.mark.tsan
def test_verify_and_completion_hook(workdir, mktorrent):
    out = os.path.join(str(workdir), "hook-out")
    hook = os.path.join(str(workdir), "hook.sh")
    with open(hook, "w") as f:
        f.write(HOOK % {"out": out})
    os.chmod(hook, 0o755)
    d = Daemon(workdir, config={"on_complete": hook,
                                "on_complete_timeout": 10})
    path, src = make_torrent(mktorrent, workdir)
    ih = info_hash(path)
    # The data is there before the add: it is checked and seeds.
    copy_tree(src, os.path.join(d.dir, "downloads"))
    d.start()
    try:
        c = d.connect()
        c.call("events.subscribe", types=["torrent.completed"])
        r = d.call("torrent.add", metainfo=b64(path))
        t = wait_state(d, r["id"], "seeding")
        assert t["progress"] == 1.0
        assert t["have_bytes"] == t["size_bytes"] == 140000
        assert t["completed_at"] is not None
        ev = recv_events(c, 1)[0]
        assert ev["type"] == "torrent.completed" and ev["info_hash"] == ih
        c.close()

        wait_for(lambda: os.path.exists(out + ".json"), what="hook output")
        with open(out + ".json") as f:
            obj = json.loads(f.read())
        assert obj["info_hash"] == ih and obj["state"] == "seeding"
        assert obj["progress"] == 1.0
        with open(out + ".env") as f:
            env = dict(line.rstrip("\n").split("=", 1) for line in f)
        env.pop("TORRENTD_BUILD", None)  # the test's own
        assert env == {"TORRENTD_INFO_HASH": ih, "TORRENTD_NAME": "payload",
                       "TORRENTD_DIR": d.download_dir,
                       "TORRENTD_ID": str(r["id"])}
        wait_for(lambda: "exited with status 3" in d.stderr_text(),
                 what="hook exit status logged")

        # Damage a piece: verify finds it and the torrent downloads again.
        victim = os.path.join(d.download_dir, "payload", "a.bin")
        with open(victim, "r+b") as f:
            f.seek(5)
            f.write(b"\xff\xfe\xfd")
        t = d.call("torrent.verify", torrent=ih)
        assert t["state"] == "checking" or t["state"] == "downloading"
        t = wait_state(d, ih, "downloading")
        assert 0 < t["have_bytes"] < t["size_bytes"]
        assert 0 < t["progress"] < 1
        files = d.call("torrent.files", torrent=ih)["files"]
        assert files[0]["path"] == "payload/a.bin"
        assert files[0]["have_bytes"] < files[0]["length"]
        assert files[1]["have_bytes"] == files[1]["length"]
        # Not wanting the damaged file completes the torrent again.
        t = d.call("torrent.set", torrent=ih,
                   files=[{"index": 0, "wanted": False}])
        assert t["state"] == "seeding" and t["size_bytes"] == 40000
        e = rpc_error(d, "torrent.verify", torrent=999)
        assert e.code == RPC_E_TORRENT_NOT_FOUND
        d.call("torrent.add", magnet=MAGNET)
        e = rpc_error(d, "torrent.verify", torrent=MAGNET_HASH)
        assert e.code == RPC_E_INVALID_STATE
    finally:
        d.stop()


def test_completion_hook_timeout(workdir, mktorrent):
    hook = os.path.join(str(workdir), "slow.sh")
    with open(hook, "w") as f:
        f.write("#!/bin/sh\nexec sleep 60\n")
    os.chmod(hook, 0o755)
    d = Daemon(workdir, config={"on_complete": hook,
                                "on_complete_timeout": 1})
    path, src = make_torrent(mktorrent, workdir)
    copy_tree(src, os.path.join(d.dir, "downloads"))
    d.start()
    try:
        d.call("torrent.add", metainfo=b64(path))
        wait_for(lambda: "killed by signal 9" in d.stderr_text(),
                 what="the hook killed")
        assert "ran too long" in d.stderr_text()
        assert d.call("session.stats")["hooks_running"] == 0
    finally:
        d.stop()


def test_trackers_peers(workdir, daemon, mktorrent):
    path, _ = make_torrent(mktorrent, workdir, trackers=(
        "http://127.0.0.1:1/a,http://127.0.0.1:2/b", "udp://127.0.0.1:3"))
    daemon.start()
    # Paused: the engine does not run it, nothing is contacted.
    daemon.call("torrent.add", metainfo=b64(path), paused=True)
    tr = daemon.call("torrent.trackers", torrent=1)["trackers"]
    assert [(t["tier"], t["url"], t["status"]) for t in tr] == [
        (0, "http://127.0.0.1:1/a", "not contacted"),
        (0, "http://127.0.0.1:2/b", "not contacted"),
        (1, "udp://127.0.0.1:3", "not contacted")]
    assert daemon.call("torrent.peers", torrent=1)["peers"] == []
    # Running: the live tracker set (each tier shuffled once).
    daemon.call("torrent.start", torrent=1)
    tr = daemon.call("torrent.trackers", torrent=1)["trackers"]
    assert sorted((t["tier"], t["url"]) for t in tr) == [
        (0, "http://127.0.0.1:1/a"), (0, "http://127.0.0.1:2/b"),
        (1, "udp://127.0.0.1:3")]
    assert all(t["status"] in ("not contacted", "announcing", "error")
               for t in tr), tr
    assert daemon.call("torrent.peers", torrent=1)["peers"] == []
    daemon.call("torrent.add", magnet=MAGNET)
    tr = daemon.call("torrent.trackers", torrent=2)["trackers"]
    assert [t["url"] for t in tr] == ["http://127.0.0.1:1/announce"]
    assert daemon.call("torrent.files", torrent=2)["files"] == []


def test_torrent_set_checks_everything_first(workdir, daemon, mktorrent):
    path, _ = make_torrent(mktorrent, workdir)
    daemon.start()
    daemon.call("torrent.add", metainfo=b64(path))
    for bad in ({"files": [{"index": 9}]},
                {"files": [{"index": 0, "priority": "urgent"}]},
                {"files": [{"index": 0, "wanted": 1}]},
                {"download_limit": -1},
                {"download_dir": "relative"},
                {"ratio_limit": "x"}):
        e = rpc_error(daemon, "torrent.set", torrent=1, upload_limit=7,
                      **bad)
        assert e.code == RPC_INVALID_PARAMS, bad
    assert get(daemon, 1)["upload_limit"] == 0  # nothing applied
    t = daemon.call("torrent.set", torrent=1, ratio_limit=1.5,
                    download_limit=100,
                    files=[{"index": 1, "priority": "high"}])
    assert t["ratio_limit"] == 1.5 and t["download_limit"] == 100
    files = daemon.call("torrent.files", torrent=1)["files"]
    assert files[1]["priority"] == "high" and files[1]["wanted"] is True
    t = daemon.call("torrent.set", torrent=1, ratio_limit=None)
    assert t["ratio_limit"] is None


def test_session_get_set_stats(workdir, daemon):
    daemon.start()
    g = daemon.call("session.get")
    assert g["config"]["state_dir"] == daemon.state_dir
    assert g["config"]["dht"] is False
    assert g["runtime"] == {}
    r = daemon.call("session.set", download_rate_limit=12345,
                    max_active_downloads=1, dht=True)
    assert r["applied"] == ["download_rate_limit", "max_active_downloads"]
    assert r["needs_restart"] == ["dht"]
    g = daemon.call("session.get")
    assert g["config"]["download_rate_limit"] == 12345
    assert g["config"]["dht"] is False  # not until the next start
    assert g["runtime"] == {"download_rate_limit": 12345,
                            "max_active_downloads": 1, "dht": True}
    assert g["pending_restart"] == ["dht"]
    for key in ("state_dir", "on_complete", "control_socket", "watch_dir"):
        e = rpc_error(daemon, "session.set", **{key: "/tmp/x"})
        assert e.code == RPC_E_PERMISSION_DENIED, key
    e = rpc_error(daemon, "session.set", no_such_key=1)
    assert e.code == RPC_INVALID_PARAMS
    e = rpc_error(daemon, "session.set", max_peers="lots")
    assert e.code == RPC_INVALID_PARAMS
    e = rpc_error(daemon, "session.set")
    assert e.code == RPC_INVALID_PARAMS

    # max_active_downloads = 1: a second download waits in the queue.
    daemon.call("torrent.add", magnet="magnet:?xt=urn:btih:" + "1" * 40,
                paused=True)
    s = daemon.call("session.stats")
    assert s["torrents"] == 1 and s["states"]["paused"] == 1
    assert s["uptime_s"] >= 0 and s["download_rate"] == 0

    daemon.stop()
    daemon.start()
    g = daemon.call("session.get")
    assert g["config"]["download_rate_limit"] == 12345
    assert g["config"]["dht"] is True
    assert g["pending_restart"] == []
    r = daemon.call("session.set", download_rate_limit=None)
    assert r["reverted"] == ["download_rate_limit"]
    assert daemon.call("session.get")["config"]["download_rate_limit"] == 0
    with open(os.path.join(daemon.state_dir, "settings")) as f:
        text = f.read()
    assert "download_rate_limit" not in text and "dht = on" in text


def test_queue(workdir, daemon, mktorrent):
    p1, _ = make_torrent(mktorrent, workdir, name="one")
    p2, _ = make_torrent(mktorrent, workdir, name="two")
    daemon.config["max_active_downloads"] = 1
    daemon.start()
    daemon.call("torrent.add", metainfo=b64(p1))
    daemon.call("torrent.add", metainfo=b64(p2))
    assert [t["state"] for t in daemon.call("torrent.list")["torrents"]] == \
        ["downloading", "queued"]
    daemon.call("torrent.stop", torrent=1)
    assert [t["state"] for t in daemon.call("torrent.list")["torrents"]] == \
        ["paused", "downloading"]


def test_shutdown_method(workdir, daemon):
    daemon.start()
    assert daemon.call("daemon.shutdown") == {"status": "stopping"}
    assert daemon.proc.wait(20) == 0
    assert "state saved" in daemon.stderr_text()


def test_magnet_gets_metadata_from_a_torrent(workdir, daemon, mktorrent):
    path, src = make_torrent(mktorrent, workdir)
    ih = info_hash(path)
    daemon.start()
    r = daemon.call("torrent.add", magnet="magnet:?xt=urn:btih:" + ih)
    assert get(daemon, ih)["state"] == "metadata"
    copy_tree(src, daemon.download_dir)
    r2 = daemon.call("torrent.add", metainfo=b64(path))
    assert r2["status"] == "exists" and r2["id"] == r["id"]
    t = wait_state(daemon, ih, "seeding")
    assert t["has_metadata"] is True and t["name"] == "payload"
    assert t["have_bytes"] == 140000
    names = os.listdir(daemon.state_dir)
    assert ih + ".torrent" in names and ih + ".magnet" not in names
    daemon.stop()
    daemon.start()
    t = get(daemon, ih)
    assert t["id"] == r["id"] and t["state"] == "seeding"


def test_base64_forms(workdir, daemon, mktorrent):
    path, _ = make_torrent(mktorrent, workdir)
    daemon.start()
    with open(path, "rb") as f:
        raw = f.read()
    text = base64.encodebytes(raw).decode()  # lines of 76, newlines
    r = daemon.call("torrent.add", metainfo=text)
    assert r["status"] == "added"
    r = daemon.call("torrent.add", metainfo=base64.b64encode(raw).decode()
                    .rstrip("="))
    assert r["status"] == "exists"
    for bad in ("A", "AB=C", "====", base64.b64encode(raw).decode() + "=A",
                "-_" * 10):
        e = rpc_error(daemon, "torrent.add", metainfo=bad)
        assert e.code == RPC_E_INVALID_TORRENT, bad


def test_reload_starts_watching(workdir, daemon, mktorrent):
    watch = os.path.join(str(workdir), "watch")
    os.makedirs(watch)
    path, _ = make_torrent(mktorrent, workdir)
    daemon.start()
    daemon.config["watch_dir"] = watch
    daemon.config["watch_interval"] = 1
    daemon.write_config()
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "applied: watch_dir, watch_interval"
             in daemon.stderr_text(), what="the reload report")
    with open(path, "rb") as f, \
            open(os.path.join(watch, "x.torrent"), "wb") as g:
        g.write(f.read())
    wait_for(lambda: os.path.exists(os.path.join(watch, "x.torrent.added")),
             what=".added")
    assert len(daemon.call("torrent.list")["torrents"]) == 1


@pytest.mark.slow
def test_reactor_answers_while_checking(workdir, daemon, mktorrent):
    """Hashing runs on a worker thread: the control socket answers quickly
    while a big torrent is being checked."""
    path, src = make_torrent(mktorrent, workdir, name="big",
                             files={"big.bin": 192 << 20}, piece_kib=256)
    copy_tree(src, daemon.download_dir)
    daemon.start()
    r = daemon.call("torrent.add", metainfo=b64(path), paused=True)
    seen_checking = False
    worst = 0.0
    c = daemon.connect()
    while True:
        t0 = time.monotonic()
        t = c.call("torrent.get", torrent=r["id"])
        worst = max(worst, time.monotonic() - t0)
        if t["state"] == "checking":
            seen_checking = True
            assert 0.0 <= t["progress"] <= 1.0
        elif t["state"] == "paused" and t["have_bytes"] == t["size_bytes"]:
            break
        time.sleep(0.01)
    c.close()
    assert worst < 0.5, "a call took %.3f s during the check" % worst
    # A check of 192 MiB is long enough to be seen, unless the machine is
    # very fast; the answer times are what matters.
    assert seen_checking or worst < 0.5


def test_duplicate_ids_resolved(workdir, daemon):
    from conftest import bdecode, bencode
    daemon.start()
    a = daemon.call("torrent.add", magnet="magnet:?xt=urn:btih:" + "a" * 40)
    b = daemon.call("torrent.add", magnet="magnet:?xt=urn:btih:" + "b" * 40)
    daemon.stop()
    # Two resume records claim the same id (a hand edit, a bad copy).
    p = os.path.join(daemon.state_dir, "b" * 40 + ".resume")
    with open(p, "rb") as f:
        rec = bdecode(f.read())
    rec[b"id"] = a["id"]
    with open(p, "wb") as f:
        f.write(bencode(rec))
    daemon.start()
    ts = daemon.call("torrent.list", fields=["id", "info_hash"])["torrents"]
    assert sorted(t["info_hash"] for t in ts) == ["a" * 40, "b" * 40]
    ids = [t["id"] for t in ts]
    assert len(set(ids)) == 2 and a["id"] in ids and b["id"] not in ids
    assert "gets the new id" in daemon.stderr_text()


class EventReader:
    """Reads one subscribed connection on a thread: events (params) with
    the time each arrived, until the connection closes."""

    def __init__(self, conn):
        import threading
        self.conn = conn
        self.events = [(time.monotonic(), e["params"])
                       for e in getattr(conn, "events", [])
                       if e.get("method") == "event"]
        self.lock = threading.Lock()
        conn.sock.settimeout(None)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:
                doc = self.conn.recv()
            except (EOFError, OSError, ValueError):
                return
            if doc.get("method") == "event":
                with self.lock:
                    self.events.append((time.monotonic(), doc["params"]))

    def got(self):
        with self.lock:
            return [e for _, e in self.events]

    def close(self):
        try:
            self.conn.sock.shutdown(2)
        except OSError:
            pass
        self.thread.join(10)
        self.conn.close()


def test_progress_events_are_live_and_never_kept(workdir, mktorrent):
    """torrent.progress during a rate-limited download: several, with
    growing progress, at most one a second, only to subscribers that ask
    for them, without numbers, and never in a replay with "since"."""
    seed, leech, h = slow_swarm(workdir)
    readers = []
    try:
        d = leech.daemon
        start = d.call("events.subscribe")["last_seq"]
        subs = {}
        for name, params in (("default", {}),
                             ("everything", {"types": ["*",
                                                       "torrent.progress"]}),
                             ("progress", {"types": ["torrent.progress"]}),
                             ("state", {"types": ["torrent.state"]})):
            c = d.connect()
            c.call("events.subscribe", **params)
            subs[name] = EventReader(c)
            readers.append(subs[name])
        t0 = time.monotonic()
        leech.add_peer(h, seed.peer_address())
        leech.wait_state(h, ["seeding"], 120)
        took = time.monotonic() - t0
        time.sleep(1.5)  # a progress event after the end would show here

        every = subs["everything"].got()
        prog = [e for e in every if e["type"] == "torrent.progress"]
        assert took >= 3, "the download was too fast to see: %.1f s" % took
        # Several, while it downloaded, about one a second at most.
        assert len(prog) >= 3, every
        assert len(prog) <= took + 3, (took, prog)
        for e in prog:
            assert e["info_hash"] == h and e["id"] == 1
            assert "seq" not in e
            assert isinstance(e["time"], int)
            assert e["state"] == "downloading"
            for k in ("progress", "have_bytes", "size_bytes",
                      "download_rate", "upload_rate", "peers_connected",
                      "eta_s", "name"):
                assert k in e, (k, e)
            assert e["size_bytes"] == 6 << 20
            assert 0.0 <= e["progress"] <= 1.0
        # Growing progress, some of it in between.
        have = [e["have_bytes"] for e in prog]
        assert have == sorted(have), have
        middle = [e for e in prog if 0 < e["progress"] < 1]
        assert len(middle) >= 2, prog
        assert any(e["download_rate"] > 0 and e["peers_connected"] >= 1
                   for e in middle), middle
        assert any(e["eta_s"] is not None for e in middle), middle
        # At most one a second: never two in the same second.
        times = [e["time"] for e in prog]
        assert len(times) == len(set(times)), times
        # Nothing after the torrent stopped downloading.
        seeding_at = [i for i, e in enumerate(every)
                      if e["type"] == "torrent.state"
                      and e.get("new") == "seeding"]
        assert seeding_at
        assert all(e["type"] != "torrent.progress"
                   for e in every[seeding_at[0]:]), every

        # Only subscribers that name the type get them.
        assert [e for e in subs["progress"].got()
                if e["type"] != "torrent.progress"] == []
        assert len(subs["progress"].got()) == len(prog)
        assert all(e["type"] != "torrent.progress"
                   for e in subs["default"].got())
        assert all(e["type"] == "torrent.state"
                   for e in subs["state"].got())
        # The numbered stream is the same with and without them, without
        # gaps: progress events take no numbers.
        kept = [e for e in every if e["type"] != "torrent.progress"]
        assert kept == subs["default"].got()
        seqs = [e["seq"] for e in kept]
        assert seqs == list(range(start + 1, start + 1 + len(seqs))), seqs

        # A replay after the download: every state change, no progress.
        c = d.connect()
        r = c.call("events.subscribe", since=start,
                   types=["*", "torrent.progress"])
        last = r["last_seq"]
        replay = [x["params"] for x in getattr(c, "events", [])
                  if x.get("method") == "event"]
        while not replay or replay[-1]["seq"] < last:
            replay += recv_events(c, 1)
        c.close()
        assert all(e["type"] != "torrent.progress" for e in replay)
        assert [e["seq"] for e in replay] == list(range(start + 1, last + 1))
        assert replay[:len(kept)] == kept
        states = [(e["old"], e["new"]) for e in replay
                  if e["type"] == "torrent.state"]
        assert ("downloading", "seeding") in states, states
        assert any(e["type"] == "torrent.completed" for e in replay)
    finally:
        for rd in readers:
            rd.close()
        leech.stop()
        seed.stop()
