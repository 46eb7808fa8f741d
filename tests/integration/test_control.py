"""The control API's envelope: JSON-RPC 2.0 framing, errors, order,
batches, limits and hostile clients, against a real torrentd.

What a client sees on the control and status sockets (daemon/control.c):
standard error codes with an id and an error.data object, responses in
request order, a line over the limit answered and then disconnected,
clients that never read disconnected, hundreds of clients served at once,
and a well-behaved client answered quickly all along.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from tdaemon import Daemon

MAX_LINE = 64 << 20     # CONTROL_MAX_LINE
MAX_OUTPUT = 64 << 20   # CONTROL_MAX_OUTPUT
MAX_CLIENTS = 1024      # CONTROL_MAX_CLIENTS
READ_ONLY_MESSAGE = ("permission denied: the status socket is read-only; "
                     "use the control socket")
MAGNET = ("magnet:?xt=urn:btih:%s&dn=control-test" % ("c0ffee%034x" % 1))


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("control"))
    d.start()
    yield d
    rc = d.stop()
    assert rc == 0, "torrentd exited with %s:\n%s" % (rc, d.stderr_text())


def req(method, id=1, params=None):
    msg = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        msg["params"] = params
    return json.dumps(msg).encode() + b"\n"


def send_recv(conn, raw):
    conn.send_raw(raw)
    return conn.recv()


def assert_error(doc, code, id=None):
    assert doc.get("jsonrpc") == "2.0", doc
    assert "result" not in doc, doc
    assert doc["id"] == id, doc
    err = doc["error"]
    assert err["code"] == code, doc
    assert isinstance(err["message"], str) and err["message"], doc
    assert isinstance(err.get("data"), dict), doc
    return err


def assert_alive(conn):
    """The connection still gets answers."""
    doc = send_recv(conn, req("daemon.version", id="alive"))
    assert doc["id"] == "alive" and "result" in doc, doc


@pytest.mark.tsan
def test_version(daemon):
    c = daemon.connect()
    res = c.call("daemon.version")
    assert isinstance(res["version"], str) and res["version"]
    major, minor, patch = (int(x) for x in res["api"].split("."))
    assert major >= 1
    c.close()


def test_parse_error(daemon):
    c = daemon.connect()
    for bad in (b"{bad json\n", b'{"jsonrpc":"2.0",\n', b"[1,]\n",
                b"NaN\n", b'{"a":1} {"b":2}\n', b"'single'\n"):
        err = assert_error(send_recv(c, bad), -32700)
        assert err["data"]["reason"]
    assert_alive(c)
    c.close()


def test_blank_lines_are_ignored(daemon):
    c = daemon.connect()
    c.send_raw(b"\n  \r\n\t\n")
    assert_alive(c)
    c.close()


def test_crlf(daemon):
    c = daemon.connect()
    doc = send_recv(c, req("daemon.version", id=5).rstrip(b"\n") + b"\r\n")
    assert doc["id"] == 5 and "result" in doc
    c.close()


def test_invalid_request(daemon):
    c = daemon.connect()
    cases = [
        ({"jsonrpc": "1.0", "id": 1, "method": "daemon.version"}, 1),
        ({"id": 2, "method": "daemon.version"}, 2),
        ({"jsonrpc": "2.0", "id": 3}, 3),
        ({"jsonrpc": "2.0", "id": 4, "method": 17}, 4),
        ({"jsonrpc": "2.0", "id": 5, "method": "daemon.version",
          "params": 5}, 5),
        ({"jsonrpc": "2.0", "id": 6, "method": "daemon.version",
          "params": "x"}, 6),
        ({"jsonrpc": "2.0", "id": True, "method": "daemon.version"}, None),
        ({"jsonrpc": "2.0", "id": [1], "method": "daemon.version"}, None),
        (17, None),
        ("a string", None),
    ]
    for msg, id in cases:
        assert_error(send_recv(c, json.dumps(msg).encode() + b"\n"), -32600,
                     id)
    # Invalid even without an id: still answered, with id null.
    assert_error(send_recv(c, b'{"jsonrpc":"2.0","method":5}\n'), -32600)
    assert_alive(c)
    c.close()


def test_method_not_found(daemon):
    c = daemon.connect()
    err = assert_error(send_recv(c, req("no.such.method", id="m")), -32601,
                       "m")
    assert err["data"]["method"] == "no.such.method"
    assert "torrentd-api(7)" in err["message"]
    # A notification of an unknown method gets no answer.
    c.send_raw(b'{"jsonrpc":"2.0","method":"no.such.method"}\n')
    assert_alive(c)
    c.close()


def test_invalid_params(daemon):
    c = daemon.connect()
    # Named parameters only.
    assert_error(send_recv(c, req("daemon.version", 1, [1, 2])), -32602, 1)
    assert_error(send_recv(c, req("torrent.list", 2, [])), -32602, 2)
    assert_error(send_recv(c, req("daemon.version", 3, {"x": 1})), -32602,
                 3)
    assert_error(send_recv(c, req("events.subscribe", 4, {"since": "a"})),
                 -32602, 4)
    assert_error(send_recv(c, req("events.subscribe", 5, {"since": -1})),
                 -32602, 5)
    assert_error(send_recv(c, req("events.subscribe", 6, {"types": 5})),
                 -32602, 6)
    assert_error(send_recv(c, req("events.subscribe", 7, {"types": [5]})),
                 -32602, 7)
    assert_error(send_recv(c, req("events.subscribe", 8, {"bogus": 1})),
                 -32602, 8)
    assert_alive(c)
    c.close()


def test_ids_are_echoed(daemon):
    c = daemon.connect()
    for id in ("s", "", "é ü", 0, -5, 2 ** 53, 1.5, None):
        doc = send_recv(c, req("daemon.version", id))
        assert doc["id"] == id and "result" in doc, doc
    c.close()


def test_notifications_get_no_answer(daemon):
    c = daemon.connect()
    c.send_raw(b'{"jsonrpc":"2.0","method":"daemon.version"}\n'
               b'{"jsonrpc":"2.0","method":"torrent.list"}\n'
               b'{"jsonrpc":"2.0","method":"daemon.version",'
               b'"params":[1]}\n')
    doc = send_recv(c, req("daemon.version", id=42))
    assert doc["id"] == 42
    c.close()


@pytest.mark.tsan
def test_pipelined_in_order(daemon):
    """Many requests in one write, some slow (torrent.add waits for its
    state to be on disk), some wrong: answers come back in order."""
    c = daemon.connect()
    data = b""
    want = []
    for i in range(60):
        kind = i % 5
        if kind == 0:
            data += req("daemon.version", i)
        elif kind == 1:
            data += req("torrent.list", i)
        elif kind == 2:
            data += req("torrent.add", i, {"magnet": MAGNET})
        elif kind == 3:
            data += req("no.such", i)
        else:
            data += b'{"jsonrpc":"2.0","method":"daemon.version"}\n'
            continue
        want.append(i)
    c.send_raw(data)
    got = []
    for _ in want:
        doc = c.recv()
        while doc.get("method") == "event":
            doc = c.recv()
        got.append(doc["id"])
    assert got == want
    c.close()


@pytest.mark.tsan
def test_batch(daemon):
    c = daemon.connect()
    batch = [
        {"jsonrpc": "2.0", "id": "a", "method": "daemon.version"},
        {"jsonrpc": "2.0", "method": "daemon.version"},
        {"jsonrpc": "2.0", "id": "b", "method": "no.such"},
        17,
        {"jsonrpc": "2.0", "id": "c", "method": "torrent.list"},
        {"jsonrpc": "2.0", "id": "d", "method": "daemon.version",
         "params": [1]},
    ]
    doc = send_recv(c, json.dumps(batch).encode() + b"\n")
    assert isinstance(doc, list) and len(doc) == 5, doc
    assert [d["id"] for d in doc] == ["a", "b", None, "c", "d"]
    assert "result" in doc[0]
    assert doc[1]["error"]["code"] == -32601
    assert doc[2]["error"]["code"] == -32600
    assert "result" in doc[3]
    assert doc[4]["error"]["code"] == -32602

    # Empty batch: one error, not an array.
    assert_error(send_recv(c, b"[]\n"), -32600)
    # Invalid entries: one error each.
    doc = send_recv(c, b"[1,2,3]\n")
    assert [d["error"]["code"] for d in doc] == [-32600] * 3
    # Only notifications: nothing at all; the next answer is the next one.
    c.send_raw(b'[{"jsonrpc":"2.0","method":"daemon.version"},'
               b'{"jsonrpc":"2.0","method":"torrent.list"}]\n')
    assert_alive(c)
    # Too large a batch.
    big = [{"jsonrpc": "2.0", "id": i, "method": "daemon.version"}
           for i in range(1025)]
    assert_error(send_recv(c, json.dumps(big).encode() + b"\n"), -32600)
    ok = big[:1024]
    doc = send_recv(c, json.dumps(ok).encode() + b"\n")
    assert [d["id"] for d in doc] == list(range(1024))
    c.close()


def test_invalid_utf8(daemon):
    c = daemon.connect()
    for bad in (b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
                b"\xe2\x82", b"\x80"):
        line = b'{"jsonrpc":"2.0","id":1,"method":"x' + bad + b'"}\n'
        err = assert_error(send_recv(c, line), -32700)
        assert "UTF-8" in err["message"]
        assert err["data"]["offset"] == 35
    # Valid UTF-8 in a method name is only an unknown method.
    doc = send_recv(c, req("m\u00e9thode", id=2))
    assert_error(doc, -32601, 2)
    assert_alive(c)
    c.close()


def test_deep_json(daemon):
    c = daemon.connect()
    err = assert_error(send_recv(c, b"[" * 10000 + b"]" * 10000 + b"\n"),
                       -32700)
    assert "deep" in err["message"]
    deep = (b'{"jsonrpc":"2.0","id":1,"method":"daemon.version","params":'
            b'{"a":' + b"[" * 10000 + b"]" * 10000 + b"}}\n")
    assert_error(send_recv(c, deep), -32700)
    # Only opening brackets, never closed: the same, at once.
    assert_error(send_recv(c, b"{" * 100000 + b"\n"), -32700)
    assert_alive(c)
    c.close()


def test_line_too_long_disconnects(daemon):
    """A line over the limit gets an error and the connection is closed;
    another client is served all along."""
    good = daemon.connect()
    bad = daemon.connect(timeout=60)
    head = (b'{"jsonrpc":"2.0","id":1,"method":"torrent.add","params":'
            b'{"metainfo":"')
    bad.send_raw(head)
    chunk = b"A" * (1 << 20)
    sent = len(head)
    worst = 0.0
    try:
        while sent <= MAX_LINE + len(chunk):
            bad.sock.sendall(chunk)
            sent += len(chunk)
            if (sent >> 20) % 8 == 0:
                t = time.monotonic()
                assert_alive(good)
                worst = max(worst, time.monotonic() - t)
    except (BrokenPipeError, ConnectionResetError):
        pass
    # The error comes first, then end of file.
    doc = bad.recv()
    err = assert_error(doc, -32600)
    assert "too long" in err["message"]
    with pytest.raises((EOFError, ConnectionResetError)):
        while True:
            bad.recv()
    assert worst < 1.0, worst
    assert_alive(good)
    good.close()
    bad.close()


def test_line_just_under_the_limit_is_read(daemon):
    """A big line under the limit (a large .torrent in base64, say) is
    read whole: here it is a valid request with a huge unknown param."""
    c = daemon.connect(timeout=60)
    head = b'{"jsonrpc":"2.0","id":9,"method":"daemon.version","params":{"x":"'
    tail = b'"}}\n'
    pad = MAX_LINE - len(head) - len(tail) + 1  # + 1: the '\n'
    c.send_raw(head + b"A" * pad + tail)
    err = assert_error(c.recv(), -32602, 9)
    assert err["data"]["param"] == "x"
    assert_alive(c)
    c.close()


@pytest.mark.tsan
def test_many_clients_at_once(daemon):
    conns = [daemon.connect() for _ in range(200)]
    for i, c in enumerate(conns):
        c.send_raw(req("daemon.version", i) + req("torrent.list", -i - 1))
    for i, c in enumerate(conns):
        a = c.recv()
        b = c.recv()
        assert a["id"] == i and "result" in a
        assert b["id"] == -i - 1 and "result" in b
    for c in conns:
        c.close()
    assert_alive(daemon.connect())


def test_too_many_clients(daemon):
    """Past CONTROL_MAX_CLIENTS a client is told why and closed; the ones
    already in are still served, and room comes back when they go."""
    conns = []
    try:
        for _ in range(MAX_CLIENTS):
            conns.append(daemon.connect(timeout=20))
        # Every one of them is really in.
        assert_alive(conns[0])
        assert_alive(conns[-1])
        extra = daemon.connect(timeout=20)
        err = assert_error(extra.recv(), -32006)
        assert "too many clients" in err["message"]
        with pytest.raises((EOFError, ConnectionResetError)):
            extra.recv()
        extra.close()
        assert_alive(conns[10])
    finally:
        for c in conns:
            c.close()
    # The slots are free again (closing is seen at the next loop pass).
    deadline = time.monotonic() + 10
    while True:
        c = daemon.connect()
        doc = send_recv(c, req("daemon.version", "back"))
        c.close()
        if doc.get("id") == "back":
            break
        assert time.monotonic() < deadline, doc


def test_client_that_never_reads(daemon):
    """A client that sends requests and never reads its answers is
    disconnected once its queued output passes the cap; meanwhile a
    well-behaved client gets every answer within a second."""
    bad = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bad.connect(daemon.control_socket)
    bad.settimeout(60)
    # Each answer echoes a 64 KiB id: the cap is passed after ~1000.
    big_id = "x" * (64 << 10)
    line = req("daemon.version", big_id)
    done = threading.Event()
    result = {}

    def flood():
        sent = 0
        try:
            while sent < 4 * MAX_OUTPUT:
                bad.sendall(line)
                sent += len(line)
            result["error"] = "never disconnected after %d bytes" % sent
        except (BrokenPipeError, ConnectionResetError) as e:
            result["disconnected"] = e
        except socket.timeout:
            result["error"] = "the daemon stopped reading but kept us"
        finally:
            done.set()

    t = threading.Thread(target=flood, daemon=True)
    t.start()
    good = daemon.connect()
    worst = 0.0
    n = 0
    while not done.wait(0.02):
        t0 = time.monotonic()
        assert_alive(good)
        worst = max(worst, time.monotonic() - t0)
        n += 1
    t.join(5)
    assert "disconnected" in result, result
    assert worst < 1.0, "slowest answer %.2f s over %d" % (worst, n)
    assert_alive(good)
    good.close()
    bad.close()
    assert "does not read" in daemon.stderr_text()


def test_half_closed_client_gets_its_answers(daemon):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(daemon.control_socket)
    s.settimeout(10)
    s.sendall(req("daemon.version", 1) + req("torrent.list", 2)
              + b'{"jsonrpc":"2.0","id":3,"method":"daemon.version"}')
    s.shutdown(socket.SHUT_WR)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    lines = [json.loads(x) for x in data.split(b"\n") if x]
    # The last request had no '\n': the end of the stream ends it.
    assert [d["id"] for d in lines] == [1, 2, 3]
    s.close()


@pytest.mark.tsan
def test_status_socket(daemon):
    c = daemon.connect(status=True)
    assert "version" in c.call("daemon.version")
    doc = c.request("torrent.list")
    assert "result" in doc, doc
    for method, params in (("torrent.add", {"magnet": MAGNET}),
                           ("daemon.shutdown", None),
                           ("torrent.remove", {"id": 1})):
        doc = c.request(method, params)
        err = assert_error(doc, -32003, doc["id"])
        assert err["message"] == READ_ONLY_MESSAGE
        assert err["data"]["method"] == method
    # Events are for everyone.
    assert c.call("events.subscribe")["subscribed"] is True
    c.close()
    # A refused call is not a call: the daemon is still running.
    assert_alive(daemon.connect())


def test_state_changes_are_logged_with_uid(daemon):
    c = daemon.connect()
    c.request("torrent.add", {"magnet": MAGNET})
    c.close()
    text = daemon.stderr_text()
    assert "torrent.add called by uid %d" % os.getuid() in text


def recv_event(conn, timeout=10):
    conn.sock.settimeout(timeout)
    while True:
        doc = conn.recv()
        if isinstance(doc, dict) and doc.get("method") == "event":
            assert doc["jsonrpc"] == "2.0" and "id" not in doc
            return doc["params"]


@pytest.mark.tsan
def test_events_subscribe_and_since(daemon):
    a = daemon.connect()
    res = a.call("events.subscribe")
    assert res["subscribed"] is True
    last = res["last_seq"]
    assert isinstance(last, int) and last >= 0

    magnet = "magnet:?xt=urn:btih:%s&dn=events" % ("e1e1e1%034x" % 2)
    b = daemon.connect()
    b.call("torrent.add", magnet=magnet)
    ev = recv_event(a)
    assert ev["seq"] > last
    assert isinstance(ev["type"], str)
    seen = ev["seq"]

    # A client that comes back with since misses nothing: the answer
    # first, then the kept events after since, in order.
    c = daemon.connect()
    c.send(json.loads(req("events.subscribe", 7, {"since": last})))
    doc = c.recv()
    assert doc["id"] == 7 and doc["result"]["subscribed"] is True
    assert doc["result"]["last_seq"] >= seen
    replayed = recv_event(c)
    assert replayed["seq"] == last + 1
    # A filter on types.
    d = daemon.connect()
    d.call("events.subscribe", types=["no.such.type"], since=last)
    assert_alive(d)
    for x in (a, b, c, d):
        x.close()



def test_slow_clients_do_not_hold_others(daemon):
    """A client that stops in the middle of a line, and one that sends a
    byte at a time, hold nobody up."""
    stalled = daemon.connect()
    stalled.send_raw(b'{"jsonrpc":"2.0","id":1,"method":"daemon.ver')
    drip = daemon.connect()
    good = daemon.connect()
    line = req("daemon.version", "drip")
    for i in range(len(line)):
        drip.send_raw(line[i:i + 1])
        if i % 10 == 0:
            t = time.monotonic()
            assert_alive(good)
            assert time.monotonic() - t < 1.0
    assert drip.recv()["id"] == "drip"
    # The stalled one finishes its line and is answered.
    stalled.send_raw(b'sion"}\n')
    assert stalled.recv()["id"] == 1
    for c in (stalled, drip, good):
        c.close()


@pytest.mark.tsan
def test_client_gone_while_call_pending(daemon):
    """Requests whose client hangs up before the answer: the answers are
    dropped and the daemon goes on (the sanitizers check the rest when
    the daemon stops)."""
    for i in range(20):
        c = daemon.connect()
        magnet = "magnet:?xt=urn:btih:%s&dn=gone" % ("9a9e%036x" % i)
        c.send_raw(req("torrent.add", i, {"magnet": magnet})
                   + req("torrent.list", i + 100)
                   + json.dumps([json.loads(req("daemon.version", 1)),
                                 json.loads(req("torrent.list", 2))]).encode()
                   + b"\n")
        c.close()
    assert_alive(daemon.connect())


def test_per_uid_limit(tmp_path_factory):
    """One user (not root) may hold at most 256 connections on a socket,
    so that nobody fills the world-writable status socket alone."""
    if os.getuid() != 0:
        pytest.skip("needs root to connect as another user")
    base = tempfile.mkdtemp(prefix="torrentd-uid-")
    os.chmod(base, 0o755)
    d = Daemon(base)
    os.chmod(d.dir, 0o755)
    d.start()
    try:
        script = r'''
import json, socket, sys
path = sys.argv[1]
conns = []
for i in range(256):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    conns.append(s)
# Every one of them is in: each is answered.
for i, s in enumerate(conns):
    s.sendall(b'{"jsonrpc":"2.0","id":%d,"method":"daemon.version"}\n' % i)
for i, s in enumerate(conns):
    buf = b""
    while not buf.endswith(b"\n"):
        buf += s.recv(4096)
    assert json.loads(buf)["id"] == i, buf
extra = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
extra.settimeout(10)
extra.connect(path)
buf = b""
while True:
    chunk = extra.recv(4096)
    if not chunk:
        break
    buf += chunk
print(buf.decode().strip())
'''
        r = subprocess.run([sys.executable, "-c", script, d.status_socket],
                           user=65534, group=65534, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        err = assert_error(doc, -32006)
        assert "for this user" in err["message"]
        assert err["data"]["limit"] == 256
        # Root is not limited by it, and the daemon is fine.
        assert_alive(d.connect(status=True))
    finally:
        rc = d.stop()
        shutil.rmtree(base, ignore_errors=True)
    assert rc == 0


def test_too_many_large_lines_at_once(daemon):
    """Unfinished lines of all clients together are bounded (4 x 64 MiB
    per socket): the client that would pass that is told to retry later
    and disconnected; the others finish their lines and get answers."""
    head = b'{"jsonrpc":"2.0","id":%d,"method":"daemon.version","params":{"x":"'
    chunk = b"A" * (1 << 20)
    size = 60 << 20
    big = []
    refused = None
    good = daemon.connect()
    for i in range(6):
        c = daemon.connect(timeout=60)
        try:
            c.send_raw(head % i)
            for _ in range(size // len(chunk)):
                c.sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            refused = c
            break
        big.append(c)
        assert_alive(good)
    assert refused is not None, "six 60 MiB lines at once were all taken"
    assert len(big) == 4, len(big)
    err = assert_error(refused.recv(), -32006)
    assert "try again later" in err["message"]
    assert_alive(good)
    # The others were kept: they finish their lines and are answered.
    for i, c in enumerate(big):
        c.send_raw(b'"}}\n')
        assert_error(c.recv(), -32602, i)
        c.close()
    refused.close()
    good.close()


@pytest.mark.slow
def test_events_since_too_old(tmp_path):
    """since older than the events kept (EVENTS_KEEP): told plainly, with
    the oldest kept sequence number, and nothing subscribed."""
    d = Daemon(tmp_path)
    d.start()
    try:
        c = d.connect(timeout=120)
        t = c.call("torrent.add",
                   magnet="magnet:?xt=urn:btih:%s&dn=old" % ("ab" * 20))
        # Each stop and start is a torrent.state event.
        data = b""
        for i in range(2100):
            for m in ("torrent.stop", "torrent.start"):
                data += req(m, i, {"torrent": t["id"]})
        c.send_raw(data)
        for _ in range(4200):
            doc = c.recv()
            assert "result" in doc, doc
        last = c.call("events.subscribe")["last_seq"]
        assert last > 4096
        doc = c.request("events.subscribe", {"since": 1})
        err = assert_error(doc, -32005, doc["id"])
        oldest = err["data"]["oldest_seq"]
        assert 1 < oldest <= last
        assert "torrent.list" in err["message"]
        # Just recent enough: answered, then the kept events in order.
        doc = c.request("events.subscribe", {"since": oldest - 1})
        assert doc["result"]["subscribed"] is True
        assert recv_event(c)["seq"] == oldest
        c.close()
    finally:
        rc = d.stop()
    assert rc == 0
