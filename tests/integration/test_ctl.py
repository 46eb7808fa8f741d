"""torrentctl against a real torrentd: what a person and a script see.

Each test starts its own daemon (tdaemon.Daemon, a temp state directory)
and runs the torrentctl binary from $TORRENTD_BUILD with --socket (or the
environment, where the test is about finding the socket).  Every run of
torrentctl fails the test on a sanitizer report in its stderr (the ctl
fixture of conftest.py).
"""
import json
import os
import pty
import re
import shutil
import socket
import subprocess
import threading
import time

import pytest

import tdaemon
from conftest import assert_no_sanitizer, info_hash, write_file
from peers import slow_swarm, wait_until
from tdaemon import Daemon

# Exit statuses, as torrentctl(1) documents them.
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONNECT = 3
EXIT_PERMISSION = 4
EXIT_NOT_FOUND = 5
EXIT_TIMEOUT = 6

MAGNET_HASH = "00112233445566778899aabbccddeeff00112233"
MAGNET = "magnet:?xt=urn:btih:%s&dn=just%%20a%%20magnet" % MAGNET_HASH

TORRENT_FIELDS = (
    "id", "info_hash", "name", "state", "progress", "size_bytes",
    "have_bytes", "downloaded_bytes", "uploaded_bytes", "download_rate",
    "upload_rate", "peers_connected", "eta_s", "ratio", "download_dir",
    "error", "added_at", "completed_at")


# ----------------------------------------------------------------- helpers

@pytest.fixture
def daemon(workdir):
    if not os.access(tdaemon.binary("torrentd"), os.X_OK):
        pytest.fail("torrentd is not built (%s)" % tdaemon.binary(
            "torrentd"))
    d = Daemon(workdir)
    d.start()
    yield d
    d.stop()


@pytest.fixture
def tctl(ctl, daemon):
    """tctl(*args, rc=0, ...) runs torrentctl --socket <control socket>."""
    def _run(*args, rc=EXIT_OK, socket=None, **kw):
        return ctl("--socket", socket or daemon.control_socket, *args,
                   rc=rc, **kw)
    return _run


def make_payload(mktorrent, workdir, name="payload", size=70000, seed=7):
    """A one-file torrent: returns (torrent path, data path, size)."""
    data = os.path.join(str(workdir), "src", name)
    write_file(data, size, seed=seed)
    out = os.path.join(str(workdir), name + ".torrent")
    r = subprocess.run([mktorrent, "-l", "15", "-o", out, data],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return out, data, size


def one_json(r):
    """--json prints exactly one document, on one line."""
    lines = r.stdout.splitlines()
    assert len(lines) == 1, r.stdout
    return json.loads(lines[0])


def wait_for(pred, timeout=20.0, what="condition"):
    """peers.wait_until(), polling every 0.05 s, 20 s by default."""
    return wait_until(pred, timeout, 0.05, what)


def settled(d, spec):
    """Wait until a torrent is past checking; return its object."""
    return wait_for(lambda: (lambda t: t["state"] not in ("checking",)
                             and t)(d.call("torrent.get", torrent=spec)),
                    what="torrent %s to settle" % spec)


def last_seq(d):
    c = d.connect()
    try:
        return c.call("events.subscribe")["last_seq"]
    finally:
        c.close()


def popen_ctl(*args):
    return subprocess.Popen([tdaemon.binary("torrentctl"),
                             *[str(a) for a in args]],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(p, timeout=20):
    out, err = p.communicate(timeout=timeout)
    assert_no_sanitizer(err, "torrentctl")
    return p.returncode, out, err


# ------------------------------------------------------------------ tests

@pytest.mark.tsan
def test_add_file_and_magnet_twice(workdir, daemon, tctl, mktorrent):
    path, _, _ = make_payload(mktorrent, workdir)
    ih = info_hash(path)

    r = tctl("add", path)
    assert ih in r.stdout and "added" in r.stdout and "payload" in r.stdout
    r = tctl("add", path)
    assert ih in r.stdout and "already there" in r.stdout
    doc = one_json(tctl("--json", "add", path))
    assert doc["status"] == "exists" and doc["info_hash"] == ih
    assert doc["id"] == 1

    r = tctl("add", MAGNET, "--paused")
    assert MAGNET_HASH in r.stdout and "added" in r.stdout
    r = tctl("add", MAGNET)
    assert MAGNET_HASH in r.stdout and "already there" in r.stdout
    # --json after the command name works as well as before it.
    doc = one_json(tctl("add", MAGNET, "--json"))
    assert doc == {"status": "exists", "info_hash": MAGNET_HASH, "id": 2,
                   "name": "just a magnet"}

    t = daemon.call("torrent.get", torrent=MAGNET_HASH)
    assert t["state"] == "paused"
    assert daemon.call("torrent.get", torrent=1)["name"] == "payload"


def test_add_options(workdir, daemon, tctl, mktorrent):
    path, _, _ = make_payload(mktorrent, workdir)
    os.makedirs(os.path.join(str(workdir), "elsewhere"))
    # A relative --dir is made absolute: the daemon has another cwd.
    tctl("add", os.path.basename(path), "--dir", "elsewhere", "--paused",
         cwd=str(workdir))
    t = daemon.call("torrent.get", torrent=1)
    assert t["download_dir"] == os.path.join(str(workdir), "elsewhere")
    assert t["state"] == "paused"

    # From standard input.
    path2, _, _ = make_payload(mktorrent, workdir, name="other", seed=8)
    with open(path2, "rb") as f:
        r = subprocess.run([tdaemon.binary("torrentctl"), "--socket",
                            daemon.control_socket, "add", "-"], stdin=f,
                           capture_output=True, text=True, timeout=60)
    assert_no_sanitizer(r.stderr)
    assert r.returncode == 0, r.stderr
    assert info_hash(path2) in r.stdout

    # Files that are not torrents.
    junk = os.path.join(str(workdir), "junk.torrent")
    with open(junk, "w") as f:
        f.write("this is not bencode")
    r = tctl("add", junk, rc=EXIT_FAILURE)
    assert r.stderr.strip()
    r = tctl("add", os.path.join(str(workdir), "missing.torrent"),
             rc=EXIT_USAGE)
    assert "missing.torrent" in r.stderr


def test_list_human_and_json(workdir, daemon, tctl, mktorrent):
    t0 = int(time.time())
    path, _, size = make_payload(mktorrent, workdir)
    ih = info_hash(path)
    tctl("add", path)
    tctl("add", MAGNET)
    settled(daemon, 1)

    # Scripts: the API's result, unchanged.
    doc = one_json(tctl("--json", "list"))
    assert doc == daemon.call("torrent.list")
    ts = {t["id"]: t for t in doc["torrents"]}
    assert sorted(ts) == [1, 2]
    t = ts[1]
    for f in TORRENT_FIELDS:
        assert f in t, f
    assert t["id"] == 1
    assert t["info_hash"] == ih
    assert t["name"] == "payload"
    assert t["state"] == "downloading"
    assert t["progress"] == 0
    assert t["size_bytes"] == size
    assert t["have_bytes"] == 0
    assert t["downloaded_bytes"] == 0
    assert t["uploaded_bytes"] == 0
    assert t["download_rate"] == 0
    assert t["upload_rate"] == 0
    assert t["peers_connected"] == 0
    assert t["eta_s"] is None
    assert t["ratio"] == 0
    assert t["download_dir"] == daemon.download_dir
    assert t["error"] is None
    assert t0 - 2 <= t["added_at"] <= time.time() + 2
    assert t["completed_at"] is None
    m = ts[2]
    assert m["info_hash"] == MAGNET_HASH
    assert m["name"] == "just a magnet"
    assert m["state"] == "metadata"

    # A projection for scripts.
    doc = one_json(tctl("--json", "list", "--fields", "id,state"))
    assert doc == {"torrents": [{"id": 1, "state": "downloading"},
                                {"id": 2, "state": "metadata"}]}

    # People: an aligned table, no colour off a terminal.
    r = tctl("list")
    assert "\x1b" not in r.stdout
    lines = r.stdout.splitlines()
    head = lines[0].split()
    assert head[:3] == ["ID", "HASH", "STATE"] and head[-1] == "NAME"
    row1 = lines[1].split()
    assert row1[0] == "1" and row1[1] == ih[:8]
    assert row1[2] == "downloading" and row1[3] == "0.0%"
    assert row1[-1] == "payload"
    assert "68.4 KiB" in lines[1]
    assert lines[2].split()[:3] == ["2", MAGNET_HASH[:8], "metadata"]
    assert lines[2].endswith("just a magnet")
    # Columns line up: the state column starts at the same place.
    assert lines[0].index("STATE") == lines[1].index("downloading") == \
        lines[2].index("metadata")
    assert "2 torrents" in lines[-1]


def test_list_empty(daemon, tctl):
    assert "no torrents" in tctl("list").stdout
    assert one_json(tctl("--json", "list")) == {"torrents": []}


def test_info(workdir, daemon, tctl, mktorrent):
    path, _, _ = make_payload(mktorrent, workdir)
    ih = info_hash(path)
    tctl("add", path)
    settled(daemon, 1)
    for spec in ("1", ih, ih[:6], ih.upper()[:10]):
        r = tctl("info", spec)
        assert "payload" in r.stdout and ih in r.stdout, spec
        assert "downloading" in r.stdout
        assert daemon.download_dir in r.stdout
    doc = one_json(tctl("--json", "info", "1"))
    assert doc == daemon.call("torrent.get", torrent=1)

    r = tctl("files", "1")
    assert "payload" in r.stdout and "PATH" in r.stdout
    doc = one_json(tctl("--json", "files", "1"))
    assert doc == daemon.call("torrent.files", torrent=1)
    doc = one_json(tctl("--json", "trackers", "1"))
    assert doc == daemon.call("torrent.trackers", torrent=1)
    tctl("trackers", "1")
    doc = one_json(tctl("--json", "peers", "1"))
    assert doc == daemon.call("torrent.peers", torrent=1)
    assert "no peers" in tctl("peers", "1").stdout


def test_colour_only_on_a_terminal_and_never_with_no_color(
        workdir, daemon, tctl, mktorrent):
    path, _, _ = make_payload(mktorrent, workdir)
    tctl("add", path)

    def on_tty(env):
        master, slave = pty.openpty()
        e = dict(os.environ)
        e.pop("NO_COLOR", None)
        e["TERM"] = "xterm"
        e.update(env)
        p = subprocess.Popen([tdaemon.binary("torrentctl"), "--socket",
                              daemon.control_socket, "info", "1"],
                             stdout=slave, stderr=subprocess.PIPE, env=e)
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        os.close(master)
        err = p.communicate(timeout=20)[1].decode(errors="replace")
        assert_no_sanitizer(err)
        assert p.returncode == 0, err
        return out.decode(errors="replace")

    assert "\x1b[" in on_tty({})
    assert "\x1b[" not in on_tty({"NO_COLOR": "1"})


def test_stop_start_remove(workdir, daemon, tctl, mktorrent):
    path, data, _ = make_payload(mktorrent, workdir)
    path2, _, _ = make_payload(mktorrent, workdir, name="two", seed=9)
    # The first torrent's data is there already: it will seed.
    shutil.copy(data, daemon.download_dir)
    tctl("add", path)
    tctl("add", path2)

    r = tctl("wait", "1", "--for", "seeding", "--timeout", "30")
    assert "seeding" in r.stdout
    assert daemon.call("torrent.get", torrent=1)["state"] == "seeding"

    r = tctl("stop", "2")
    assert "stopped" in r.stdout and "two" in r.stdout
    assert daemon.call("torrent.get", torrent=2)["state"] == "paused"
    r = tctl("start", "2")
    assert "started" in r.stdout
    assert daemon.call("torrent.get", torrent=2)["state"] != "paused"

    tctl("stop", "all")
    assert {t["state"] for t in daemon.call("torrent.list")["torrents"]} \
        == {"paused"}
    doc = one_json(tctl("--json", "start", "all"))
    assert doc["changed"] == 2
    assert "paused" not in {t["state"] for t in
                            daemon.call("torrent.list")["torrents"]}

    r = tctl("remove", "2")
    assert "removed" in r.stdout
    tctl("info", "2", rc=EXIT_NOT_FOUND)

    # --delete-data takes the files with it.
    kept = os.path.join(daemon.download_dir, "payload")
    assert os.path.exists(kept)
    doc = one_json(tctl("--json", "remove", "1", "--delete-data"))
    assert doc["data_deleted"] is True
    wait_for(lambda: not os.path.exists(kept), what="data deleted")
    assert one_json(tctl("--json", "list")) == {"torrents": []}


def test_verify_and_set(workdir, daemon, tctl, mktorrent):
    path, data, _ = make_payload(mktorrent, workdir)
    shutil.copy(data, daemon.download_dir)
    tctl("add", path)
    tctl("wait", "1", "--for", "complete", "--timeout", "30")
    r = tctl("verify", "1")
    assert "payload" in r.stdout
    tctl("wait", "1", "--for", "seeding", "--timeout", "30")

    tctl("set", "1", "download_limit=1M", "ratio_limit=1.5")
    t = daemon.call("torrent.get", torrent=1)
    assert t["download_limit"] == 1 << 20
    assert t["ratio_limit"] == 1.5
    r = tctl("set", "1", "download_limit=lots", rc=EXIT_FAILURE)
    assert "download_limit" in r.stderr
    tctl("set", "1", rc=EXIT_USAGE)
    tctl("set", "1", "novalue", rc=EXIT_USAGE)


def test_exit_codes(workdir, daemon, tctl, ctl, mktorrent):
    path, _, _ = make_payload(mktorrent, workdir)
    tctl("add", path)

    # Not found: 5.
    for cmd in (("info", "99"), ("info", "ffffffffff"), ("stop", "99"),
                ("remove", "99"), ("files", "99"), ("wait", "99")):
        r = tctl(*cmd, rc=EXIT_NOT_FOUND)
        assert r.stderr.strip(), cmd

    # Cannot connect: 3, with the socket named and what to do.
    missing = os.path.join(str(workdir), "nothing-here.sock")
    r = ctl("--socket", missing, "list", rc=EXIT_CONNECT)
    assert missing in r.stderr and "systemctl start torrentd" in r.stderr
    r = ctl("list", env={"TORRENTD_SOCKET": missing}, rc=EXIT_CONNECT)
    assert missing in r.stderr

    # Usage: 2.
    ctl("--socket", daemon.control_socket, rc=EXIT_USAGE)
    ctl("--socket", daemon.control_socket, "frobnicate", rc=EXIT_USAGE)
    tctl("add", rc=EXIT_USAGE)
    tctl("info", rc=EXIT_USAGE)
    tctl("info", "1", "2", rc=EXIT_USAGE)
    tctl("list", "--bogus", rc=EXIT_USAGE)
    tctl("wait", "1", "--for", "dinner", rc=EXIT_USAGE)
    tctl("wait", "1", "--timeout", "soon", rc=EXIT_USAGE)
    tctl("watch", "--since", "x", rc=EXIT_USAGE)
    tctl("config", "frob", rc=EXIT_USAGE)
    tctl("config", "set", "novalue", rc=EXIT_USAGE)

    # Permission denied: 4, from the read-only status socket, which still
    # answers queries.
    st = daemon.status_socket
    for cmd in (("stop", "1"), ("start", "all"), ("remove", "1"),
                ("add", MAGNET), ("config", "set", "max_peers=3"),
                ("set", "1", "upload_limit=5"), ("shutdown",)):
        r = tctl(*cmd, socket=st, rc=EXIT_PERMISSION)
        assert "permission" in r.stderr.lower(), cmd
    assert one_json(tctl("--json", "list", socket=st))["torrents"][0][
        "id"] == 1
    tctl("info", "1", socket=st)
    tctl("stats", socket=st)
    tctl("config", "get", socket=st)
    # Nothing was changed.
    assert daemon.call("torrent.get", torrent=1)["state"] != "paused"

    # Help is not an error.
    assert "usage:" in tctl("wait", "--help").stdout


def test_socket_from_the_environment(workdir, daemon, ctl):
    r = ctl("--json", "list", env={"TORRENTD_SOCKET": daemon.control_socket})
    assert one_json(r) == {"torrents": []}
    # $XDG_RUNTIME_DIR/torrentd/control.sock, when /run/torrentd has none.
    if os.path.exists("/run/torrentd/control.sock"):
        return
    xdg = os.path.join(str(workdir), "xdg")
    os.makedirs(os.path.join(xdg, "torrentd"))
    os.symlink(daemon.control_socket,
               os.path.join(xdg, "torrentd", "control.sock"))
    env = {"XDG_RUNTIME_DIR": xdg, "TORRENTD_SOCKET": ""}
    e = dict(os.environ)
    e.pop("TORRENTD_SOCKET", None)
    r = ctl("--json", "stats", env=env)
    assert r.returncode == EXIT_OK, r.stderr
    assert one_json(r)["torrents"] == 0
    # Neither exists: the default is named in the message.
    r = ctl("list", env={"XDG_RUNTIME_DIR": os.path.join(xdg, "none"),
                         "TORRENTD_SOCKET": ""}, rc=EXIT_CONNECT)
    assert "/run/torrentd/control.sock" in r.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv to run as another user")
def test_read_only_fallback_to_the_status_socket(mktorrent):
    """A user outside the daemon's group cannot open the control socket
    (0660): queries fall back to status.sock next to it, changes get
    'permission denied' (exit 4)."""
    import tempfile
    top = tempfile.mkdtemp(prefix="torrentctl-ro-")
    os.chmod(top, 0o755)
    d = Daemon(top)
    try:
        d.start()
        os.chmod(d.dir, 0o755)
        os.chmod(d.control_socket, 0o660)
        os.chmod(d.status_socket, 0o666)
        d.call("torrent.add", magnet=MAGNET, paused=True)

        def as_nobody(*args):
            r = subprocess.run(
                ["setpriv", "--reuid=65534", "--regid=65534",
                 "--clear-groups", tdaemon.binary("torrentctl"),
                 "--socket", d.control_socket, *args],
                capture_output=True, text=True, timeout=60)
            assert_no_sanitizer(r.stderr)
            return r

        if not os.access(tdaemon.binary("torrentctl"), os.X_OK):
            pytest.fail("torrentctl is not built")
        r = as_nobody("--json", "list")
        assert r.returncode == EXIT_OK, r.stderr
        assert one_json(r)["torrents"][0]["info_hash"] == MAGNET_HASH
        r = as_nobody("info", "1")
        assert r.returncode == EXIT_OK, r.stderr
        r = as_nobody("start", "1")
        assert r.returncode == EXIT_PERMISSION, r.stderr
        assert d.control_socket in r.stderr
        assert d.call("torrent.get", torrent=1)["state"] == "paused"
    finally:
        d.stop()
        shutil.rmtree(top, ignore_errors=True)


def test_watch_since_after_reconnect(workdir, daemon, tctl, mktorrent):
    path, _, _ = make_payload(mktorrent, workdir)
    path2, _, _ = make_payload(mktorrent, workdir, name="two", seed=9)
    start = last_seq(daemon)

    # A watcher that sees one event and goes away.
    w = popen_ctl("--socket", daemon.control_socket, "--json", "watch",
                  "--since", start, "--count", "1")
    tctl("add", path)
    rc, out, err = finish(w)
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 1
    first = json.loads(lines[0])
    assert first["seq"] == start + 1 and first["type"] == "torrent.added"
    assert first["info_hash"] == info_hash(path)

    # While nobody watches.
    tctl("add", path2)
    tctl("stop", "1")
    tctl("remove", "2")
    end = last_seq(daemon)
    assert end >= first["seq"] + 3

    # Reconnect with --since: every event after the last one seen, in
    # order, each one line of JSON exactly as the API sent its params.
    r = tctl("--json", "watch", "--since", first["seq"], "--count",
             end - first["seq"], timeout=30)
    evs = [json.loads(x) for x in r.stdout.splitlines()]
    assert [e["seq"] for e in evs] == list(range(first["seq"] + 1, end + 1))
    types = [(e["type"], e.get("info_hash")) for e in evs]
    assert ("torrent.added", info_hash(path2)) in types
    assert ("torrent.removed", info_hash(path2)) in types
    st = [e for e in evs if e["type"] == "torrent.state"
          and e["info_hash"] == info_hash(path) and e.get("new") == "paused"]
    assert st, evs
    for e in evs:
        assert isinstance(e["time"], int)

    # The same for people: one line per event.
    r = tctl("watch", "--since", first["seq"], "--count",
             end - first["seq"], timeout=30)
    lines = r.stdout.splitlines()
    assert len(lines) == end - first["seq"]
    assert "torrent.removed" in r.stdout and "-> paused" in r.stdout

    # Too old: the daemon says so.
    c = daemon.connect()
    try:
        oldest_ok = c.call("events.subscribe", since=end)
    finally:
        c.close()
    assert oldest_ok["last_seq"] == end


def test_wait(workdir, daemon, tctl, mktorrent):
    tctl("add", MAGNET)
    # No metadata will come (no peers, no DHT): timed out, exit 6.
    t0 = time.monotonic()
    r = tctl("wait", MAGNET_HASH[:8], "--for", "metadata", "--timeout",
             "1", rc=EXIT_TIMEOUT)
    took = time.monotonic() - t0
    assert 0.9 <= took < 15, took
    assert "timed out" in r.stderr

    # --for removed: blocks on events until the torrent goes.
    w = popen_ctl("--socket", daemon.control_socket, "wait", "1", "--for",
                  "removed", "--timeout", "30")
    time.sleep(0.5)
    assert w.poll() is None
    tctl("remove", "1")
    rc, out, err = finish(w)
    assert rc == 0, err
    # Already gone counts as removed.
    tctl("wait", MAGNET_HASH, "--for", "removed", "--timeout", "1")

    # --for complete: a torrent that is removed while waited for.
    tctl("add", MAGNET)
    w = popen_ctl("--socket", daemon.control_socket, "wait", MAGNET_HASH,
                  "--timeout", "30")
    time.sleep(0.5)
    tctl("remove", MAGNET_HASH)
    rc, out, err = finish(w)
    assert rc == EXIT_NOT_FOUND, err
    assert "removed" in err

    # Several torrents, one complete, one never: timed out.
    path, data, _ = make_payload(mktorrent, workdir)
    shutil.copy(data, daemon.download_dir)
    tctl("add", path)
    tctl("add", MAGNET)
    r = tctl("wait", "--json", info_hash(path), "--for", "complete",
             "--timeout", "30")
    assert one_json(r)["torrents"][0]["info_hash"] == info_hash(path)
    tctl("wait", info_hash(path), MAGNET_HASH, "--timeout", "0.5",
         rc=EXIT_TIMEOUT)


def test_stats(workdir, daemon, tctl, mktorrent):
    path, _, size = make_payload(mktorrent, workdir)
    tctl("add", path)
    tctl("add", MAGNET)
    doc = one_json(tctl("--json", "stats"))
    assert doc["torrents"] == 2
    assert doc["size_bytes"] == size
    r = tctl("stats")
    assert "torrents" in r.stdout and "68.4 KiB" in r.stdout


def test_config_get_set(workdir, daemon, tctl):
    r = tctl("config", "get", "download_dir")
    assert r.stdout == daemon.download_dir + "\n"
    r = tctl("config", "get")
    assert "download_dir = %s\n" % daemon.download_dir in r.stdout
    assert "max_peers = " in r.stdout

    r = tctl("config", "set", "max_peers=77", "download_rate_limit=2M")
    assert "max_peers" in r.stdout
    assert tctl("config", "get", "max_peers").stdout == "77\n"
    doc = one_json(tctl("--json", "config", "get"))
    assert doc == daemon.call("session.get")
    assert doc["config"]["max_peers"] == 77
    assert doc["config"]["download_rate_limit"] == 2 << 20
    assert one_json(tctl("--json", "config", "get", "max_peers")) == 77

    tctl("config", "reset", "max_peers")
    assert daemon.call("session.get")["config"]["max_peers"] != 77

    r = tctl("config", "get", "no_such_key", rc=EXIT_NOT_FOUND)
    assert "no_such_key" in r.stderr
    r = tctl("config", "set", "no_such_key=1", rc=EXIT_FAILURE)
    assert "no_such_key" in r.stderr
    r = tctl("config", "set", "max_peers=many", rc=EXIT_FAILURE)


def test_shutdown(daemon, tctl):
    # A watcher ends cleanly when the daemon goes.
    w = popen_ctl("--socket", daemon.control_socket, "--json", "watch",
                  "--type", "session.shutdown")
    time.sleep(0.5)
    r = tctl("shutdown", "--wait", timeout=60)
    assert "stopped" in r.stdout
    assert daemon.proc.wait(30) == 0
    rc, out, err = finish(w)
    assert rc == 0, err
    assert [json.loads(x)["type"] for x in out.splitlines()] == [
        "session.shutdown"]
    # Nobody there any more.
    tctl("list", rc=EXIT_CONNECT)


class FakeDaemon:
    """A control socket that misbehaves: answer(conn, request_line) is
    called for each request line."""

    def __init__(self, path, answer):
        self.path = path
        self.answer = answer
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.conns = []
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            try:
                line = c.makefile("rb").readline()
                self.answer(c, line)
            except OSError:
                pass

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.mark.parametrize("behaviour,rc,message", [
    ("silent", EXIT_TIMEOUT, "did not answer"),
    ("close", EXIT_FAILURE, "closed the connection"),
    ("garbage", EXIT_FAILURE, "bad line"),
    ("not-jsonrpc", EXIT_FAILURE, "neither"),
    ("huge-and-slow", EXIT_TIMEOUT, "did not answer"),
])
def test_a_daemon_that_misbehaves(workdir, ctl, behaviour, rc, message):
    """Every request is bounded in time and size, whatever the other end
    does."""
    def answer(c, line):
        if behaviour == "close":
            c.close()
        elif behaviour == "garbage":
            c.sendall(b"\x00\xff{{{\n")
        elif behaviour == "not-jsonrpc":
            c.sendall(b'{"hello": "world"}\n')
        elif behaviour == "huge-and-slow":
            c.sendall(b'{"jsonrpc":"2.0","id":1,"result":"' + b"x" * 100000)
        # silent: say nothing, keep the connection open

    path = os.path.join(str(workdir), "fake.sock")
    fake = FakeDaemon(path, answer)
    try:
        t0 = time.monotonic()
        r = ctl("--socket", path, "list", env={"TORRENTCTL_TIMEOUT": "0.5"},
                rc=rc, timeout=30)
        assert time.monotonic() - t0 < 10
        assert message in r.stderr, r.stderr
    finally:
        fake.close()


def test_bad_timeout_setting(workdir, ctl):
    ctl("--socket", os.path.join(str(workdir), "x.sock"), "list",
        env={"TORRENTCTL_TIMEOUT": "soon"}, rc=EXIT_USAGE)


@pytest.mark.skipif(not shutil.which("bash"), reason="needs bash")
def test_bash_completion(workdir, daemon, tctl):
    """scripts/torrentctl.bash: commands, options, and torrent ids and
    info-hashes from the daemon."""
    tctl("add", MAGNET)
    script = os.path.join(os.path.dirname(os.path.dirname(
        os.path.dirname(os.path.abspath(__file__)))), "scripts",
        "torrentctl.bash")
    ctl_bin = tdaemon.binary("torrentctl")

    def complete(*words):
        prog = ("source %s\n"
                "COMP_WORDS=(%s)\n"
                "COMP_CWORD=%d\n"
                "_torrentctl %s\n"
                "printf '%%s\\n' \"${COMPREPLY[@]}\"\n"
                % (script, " ".join("'%s'" % w for w in (ctl_bin,) + words),
                   len(words), ctl_bin))
        r = subprocess.run(["bash", "--norc", "--noprofile", "-c", prog],
                           capture_output=True, text=True, timeout=30)
        assert_no_sanitizer(r.stderr)
        assert r.returncode == 0, r.stderr
        return set(r.stdout.split())

    assert {"add", "list", "wait", "watch", "config", "create"} <= \
        complete("")
    assert complete("wa") == {"wait", "watch"}
    assert "--socket" in complete("--so")
    sock = daemon.control_socket
    assert complete("--socket", sock, "info", "") >= {"1", MAGNET_HASH}
    assert complete("--socket", sock, "stop", "") >= {"all", "1",
                                                      MAGNET_HASH}
    assert complete("--socket", sock, "wait", "1", "--for", "") == {
        "complete", "seeding", "metadata", "removed"}
    assert "--delete-data" in complete("--socket", sock, "remove", "1",
                                       "--")
    assert complete("--socket", sock, "config", "") == {"get", "set",
                                                        "reset"}
    assert "--progress" in complete("--socket", sock, "watch", "--pro")
    assert complete("--socket", sock, "watch", "--type", "torrent.p") == {
        "torrent.progress"}
    assert "dht" in complete("d")
    assert complete("--socket", sock, "dht", "") == {"get-peers"}
    assert "max_peers=" in complete("--socket", sock, "config", "set",
                                    "max_p")
    # No daemon: no ids, and no error.
    assert complete("--socket", os.path.join(str(workdir), "no.sock"),
                    "info", "") == set()


def test_wait_bar_and_watch_progress_move_during_a_download(workdir,
                                                             mktorrent):
    """During a rate-limited download of several seconds: the bar of
    `torrentctl wait` (on a terminal) moves through intermediate
    percentages; `watch --progress` prints progress lines (and JSON with
    --json); plain `watch` prints none."""
    seed, leech, h = slow_swarm(workdir)
    procs = []
    master = None
    try:
        sock = leech.daemon.control_socket
        ctl_bin = tdaemon.binary("torrentctl")

        def start(*args, **kw):
            p = subprocess.Popen([ctl_bin, "--socket", sock, *args],
                                 stdout=subprocess.PIPE,
                                 stderr=kw.get("stderr", subprocess.PIPE),
                                 env=kw.get("env"))
            procs.append(p)
            return p

        # wait with its standard error on a terminal, standard output not.
        master, slave = pty.openpty()
        env = dict(os.environ)
        env["TERM"] = "xterm"
        env.pop("NO_COLOR", None)
        w = start("wait", h, "--timeout", "120", stderr=slave, env=env)
        os.close(slave)
        tty = []

        def read_tty():
            while True:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    return
                if not chunk:
                    return
                tty.append(chunk)

        reader = threading.Thread(target=read_tty, daemon=True)
        reader.start()
        human = start("watch", "--progress")
        js = start("--json", "watch", "--progress")
        plain = start("--json", "watch")
        only = start("--json", "watch", "--type", "torrent.progress")
        time.sleep(1.0)  # every one of them subscribed
        t0 = time.monotonic()
        leech.add_peer(h, seed.peer_address())

        out, _ = w.communicate(timeout=120)
        took = time.monotonic() - t0
        assert w.returncode == 0
        assert out.decode().strip() == "slow.bin is complete"
        time.sleep(1.0)
        outs = {}
        for name, p in (("human", human), ("json", js), ("plain", plain),
                        ("only", only)):
            p.terminate()  # by PID
            o, e = p.communicate(timeout=20)
            assert_no_sanitizer(e.decode(errors="replace"), "torrentctl")
            outs[name] = o.decode(errors="replace")
        reader.join(10)
        bar = b"".join(tty).decode(errors="replace")
        assert_no_sanitizer(bar, "torrentctl wait")
        assert took >= 3, "the download was too fast to see: %.1f s" % took

        # The bar: redrawn in place, through several percentages between
        # 0 and 100, never going back.
        frames = [f for f in bar.split("\r") if "slow.bin [" in f]
        pcts = [int(re.search(r"\]\s*(\d+)%", f).group(1)) for f in frames]
        between = sorted(set(p for p in pcts if 0 < p < 100))
        assert len(between) >= 3, (pcts, bar)
        assert pcts == sorted(pcts), pcts
        # Its rate is the daemon's (the limit: 1 MB/s), not an average
        # since the bar began.
        rates = [float(re.search(r"([\d.]+) MB/s", f).group(1))
                 for f in frames if re.search(r"\]\s*([1-9]\d?)%", f)]
        mid = sorted(rates)[len(rates) // 2]
        assert 0.5 <= mid <= 1.5, (rates, bar)

        # watch --progress --json: the API's objects, growing.
        evs = [json.loads(x) for x in outs["json"].splitlines()]
        prog = [e for e in evs if e["type"] == "torrent.progress"]
        assert len(prog) >= 3, evs
        assert all("seq" not in e and e["info_hash"] == h for e in prog)
        have = [e["have_bytes"] for e in prog]
        assert have == sorted(have) and have[0] < have[-1], have
        assert len(prog) <= took + 3
        # With --progress the other events still come, numbered.
        assert any(e["type"] == "torrent.completed" and e["seq"] > 0
                   for e in evs)
        # Plain watch: the same numbered events, no progress.
        plain_evs = [json.loads(x) for x in outs["plain"].splitlines()]
        assert all(e["type"] != "torrent.progress" for e in plain_evs)
        assert plain_evs == [e for e in evs
                             if e["type"] != "torrent.progress"]
        # --type torrent.progress: only those.
        only_evs = [json.loads(x) for x in outs["only"].splitlines()]
        assert only_evs and all(e["type"] == "torrent.progress"
                                for e in only_evs)
        # For people: one line per progress event, with a percentage and
        # the rate.
        lines = [x for x in outs["human"].splitlines()
                 if "torrent.progress" in x]
        assert len(lines) >= 3, outs["human"]
        assert any(re.search(r"\s\d+\.\d%\s+[\d.]+ [KM]iB/6(\.0)? MiB\s+"
                             r"down [\d.]+ [KM]?i?B/s", x) for x in lines), \
            lines
        assert "torrent.completed" in outs["human"]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        if master is not None:
            try:
                os.close(master)
            except OSError:
                pass
        leech.stop()
        seed.stop()
