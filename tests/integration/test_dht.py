"""The DHT of a running torrentd (issue 5): raw KRPC conformance against
the daemon, hostile packets and floods, dht.status / torrentctl dht, the
state file across a restart, and a loopback swarm of python3-libtorrent
DHT nodes and several torrentd that find each other's peers.

Everything runs on 127.0.0.0/8 with bootstrap nodes the test starts itself
(never public routers); every sending loop is bounded in count and time,
and every process is stopped by its PID (peers.Proc, tdaemon).
"""
import json
import os
import socket
import struct
import time

import pytest

import peers
from conftest import bencode, bdecode
from dhtnodes import KrpcClient, LtDht, compact_peers, td_dht, wait_joined


def ip_bytes(ip):
    return socket.inet_aton(ip)


@pytest.fixture
def node(workdir):
    """A torrentd with the DHT on and no bootstrap nodes."""
    td = td_dht(workdir, "td")
    td.start(bound=300)
    st = td.call("dht.status")
    assert st["enabled"] and st["port"] == td.port
    td.to = (td.ip, st["port"])
    yield td
    td.stop()


# ------------------------------------------------------------- conformance

def test_ping_echoes_tid_and_reports_ip(node):
    c = KrpcClient()
    for tid in (b"x", b"ab", b"\x00\xff\x10\x7f", b"T" * 16):
        r = c.query(node.to, "ping", tid=tid)
        assert r is not None, "no answer to ping with tid %r" % tid
        assert r[b"y"] == b"r" and r[b"t"] == tid
        assert len(r[b"r"][b"id"]) == 20
        # BEP 42: "ip" is the querier's address as the node sees it.
        assert r[b"ip"] == ip_bytes(c.ip) + struct.pack(">H", c.port)
    st = node.call("dht.status")
    assert r[b"r"][b"id"].hex() == st["node_id"]
    c.close()


def test_find_node_and_get_peers_answer(node):
    c = KrpcClient()
    r = c.query(node.to, "find_node", {"target": os.urandom(20)})
    assert r and r[b"y"] == b"r" and b"nodes" in r[b"r"]
    assert len(r[b"r"][b"nodes"]) % 26 == 0
    r = c.query(node.to, "get_peers", {"info_hash": os.urandom(20)})
    assert r and r[b"y"] == b"r"
    assert r[b"r"][b"token"], "get_peers answered without a token"
    assert b"nodes" in r[b"r"] or b"values" in r[b"r"]
    c.close()


def test_announce_peer_then_get_peers_returns_it(node):
    a, b = KrpcClient(), KrpcClient()
    ih = os.urandom(20)
    r = a.query(node.to, "get_peers", {"info_hash": ih})
    token = r[b"r"][b"token"]
    r = a.query(node.to, "announce_peer",
                {"info_hash": ih, "port": 6881, "token": token})
    assert r and r[b"y"] == b"r", r
    # implied_port: the peer's port is the UDP source port.
    ih2 = os.urandom(20)
    tok2 = a.query(node.to, "get_peers", {"info_hash": ih2})[b"r"][b"token"]
    r = a.query(node.to, "announce_peer",
                {"info_hash": ih2, "port": 1, "implied_port": 1,
                 "token": tok2})
    assert r and r[b"y"] == b"r", r

    r = b.query(node.to, "get_peers", {"info_hash": ih})
    assert compact_peers(r[b"r"].get(b"values", [])) == ["%s:6881" % a.ip]
    r = b.query(node.to, "get_peers", {"info_hash": ih2})
    assert compact_peers(r[b"r"].get(b"values", [])) == [
        "%s:%d" % (a.ip, a.port)]
    st = node.call("dht.status")
    assert st["stored"]["info_hashes"] >= 2 and st["stored"]["peers"] >= 2
    a.close()
    b.close()


def test_bad_token_is_refused_203(node):
    a, b = KrpcClient(), KrpcClient()
    ih = os.urandom(20)
    r = a.query(node.to, "announce_peer",
                {"info_hash": ih, "port": 6881, "token": b"nonsense"})
    assert r and r[b"y"] == b"e" and r[b"e"][0] == 203, r
    # A token given to another address is no good either.
    tok = b.query(node.to, "get_peers", {"info_hash": ih})[b"r"][b"token"]
    r = a.query(node.to, "announce_peer",
                {"info_hash": ih, "port": 6881, "token": tok})
    assert r and r[b"y"] == b"e" and r[b"e"][0] == 203, r
    r = b.query(node.to, "get_peers", {"info_hash": ih})
    assert not r[b"r"].get(b"values")
    a.close()
    b.close()


def test_unknown_method_204(node):
    c = KrpcClient()
    r = c.query(node.to, "vote", {"target": os.urandom(20)}, tid=b"zz")
    assert r and r[b"y"] == b"e" and r[b"t"] == b"zz"
    assert r[b"e"][0] == 204, r
    c.close()


@pytest.mark.parametrize("msg", [
    {"t": b"m1", "y": "q", "q": "ping"},                          # no "a"
    {"t": b"m2", "y": "q", "q": "ping", "a": {"id": b"short"}},   # id len
    {"t": b"m3", "y": "q", "q": "ping", "a": {"id": b"x" * 21}},
    {"t": b"m4", "y": "q", "q": "get_peers", "a": {"id": b"x" * 20}},
    {"t": b"m5", "y": "q", "q": "find_node",
     "a": {"id": b"x" * 20, "target": b"abc"}},
    {"t": b"m6", "y": "q", "q": "announce_peer",
     "a": {"id": b"x" * 20, "info_hash": b"i" * 20, "port": 1}},  # no token
    {"t": b"m7", "y": "q", "q": "announce_peer",
     "a": {"id": b"x" * 20, "info_hash": b"i" * 20, "token": b"t",
           "port": 70000}},
    {"t": b"m8", "y": "q", "q": 5, "a": {"id": b"x" * 20}},
])
def test_malformed_query_gets_203(node, msg):
    c = KrpcClient()
    c.send_raw(bencode(msg), node.to)
    r = c.wait_reply(msg["t"], 2.0)
    assert r is not None, "no 203 for %r" % msg
    assert r[b"y"] == b"e" and r[b"e"][0] == 203, r
    c.close()


@pytest.mark.parametrize("raw", [
    b"", b"garbage", b"d1:t2:aae", b"i42e", b"l1:ae", b"d1:y1:q",
    b"d1:ad2:id20:xxxxxxxxxxxxxxxxxxxxe1:q4:ping1:y1:qe",   # no "t"
    b"d1:rd2:id20:xxxxxxxxxxxxxxxxxxxxe1:t2:zz1:y1:re",     # stray reply
    b"d1:eli201e5:oopse1:t2:zz1:y1:ee",                     # stray error
    b"d" * 5000,
])
def test_unanswerable_packets_are_ignored(node, raw):
    c = KrpcClient()
    c.send_raw(raw, node.to)
    assert c.expect_silence(0.5), "answered %r" % raw[:40]
    r = c.query(node.to, "ping")
    assert r and r[b"y"] == b"r"
    c.close()


def test_flood_leaves_node_answering(node):
    flooders = [KrpcClient() for _ in range(4)]
    junk = [b"not bencode", bencode({"t": b"f", "y": "q", "q": "ping",
                                     "a": {"id": b"x" * 20}}),
            bencode({"t": b"g", "y": "q", "q": "get_peers",
                     "a": {"id": b"x" * 20, "info_hash": b"i" * 20}}),
            bencode({"t": b"h", "y": "q", "q": "nope",
                     "a": {"id": b"x" * 20}})]
    t0 = time.monotonic()
    sent = 0
    for i in range(2000):        # bounded: 2000 packets, a few seconds
        f = flooders[i % len(flooders)]
        try:
            f.send_raw(junk[i % len(junk)], node.to)
            sent += 1
        except OSError:
            pass
        if time.monotonic() - t0 > 10:
            break
    assert sent >= 1000
    # Someone else is answered.  A datagram that comes while the kernel's
    # receive buffer is still full of the flood is lost, as on the wire:
    # a client retries, and so does this one (a few times, 1 s each).
    c = KrpcClient()
    r = None
    for _ in range(5):
        r = c.query(node.to, "ping", timeout=1.0)
        if r:
            break
    assert r and r[b"y"] == b"r"
    st = node.call("dht.status")
    assert st["counters"]["rate_limited"] > 0
    # Many were read (the kernel drops what its buffer cannot hold).
    assert st["counters"]["messages_in"] >= 200
    # And the flooders too, once their rate bucket refills.
    time.sleep(2.5)
    r = flooders[0].query(node.to, "ping", timeout=3.0)
    assert r and r[b"y"] == b"r"
    for f in flooders:
        f.close()
    c.close()
    node.daemon.check_sanitizers()


def test_status_and_torrentctl_dht(node, ctl):
    st = node.call("dht.status")
    for key in ("node_id", "enabled", "port", "nodes", "buckets", "stored",
                "lookups", "counters", "external_ip"):
        assert key in st, key
    assert len(st["node_id"]) == 40
    for k in ("good", "questionable", "bad"):
        assert k in st["nodes"]
    for k in ("started", "finished", "running", "queries", "median_ms"):
        assert k in st["lookups"]
    for k in ("messages_in", "messages_out", "malformed", "rate_limited",
              "timeouts", "non_bep42"):
        assert k in st["counters"]
    assert st["buckets"] and {"index", "nodes", "good"} <= set(
        st["buckets"][0])
    sock = node.daemon.control_socket
    r = ctl("--socket", sock, "dht", rc=0)
    assert st["node_id"] in r.stdout and "port" in r.stdout
    r = ctl("--socket", sock, "dht", "--json", rc=0)
    assert json.loads(r.stdout)["node_id"] == st["node_id"]
    # The read-only status socket may look, not look up.
    r = ctl("--socket", node.daemon.status_socket, "dht", rc=0)
    c = node.daemon.connect(status=True)
    doc = c.request("dht.get_peers", {"info_hash": "00" * 20})
    assert doc["error"]["code"] == -32003
    c.close()


def test_get_peers_params_and_dht_off(workdir):
    td = peers.Torrentd(workdir, name="off")   # dht = off (tdaemon default)
    td.start(bound=120)
    try:
        assert td.call("dht.status") == {"enabled": False}
        c = td.daemon.connect()
        doc = c.request("dht.get_peers", {"info_hash": "00" * 20})
        assert doc["error"]["code"] == -32009
        c.close()
    finally:
        td.stop()
    td = td_dht(workdir, "on")
    td.start(bound=120)
    try:
        c = td.daemon.connect()
        for bad in ({}, {"info_hash": "zz" * 20}, {"info_hash": "00" * 19}):
            doc = c.request("dht.get_peers", bad)
            assert doc["error"]["code"] == -32602, bad
        doc = c.request("dht.announce", {"info_hash": "00" * 20})
        assert doc["error"]["code"] == -32602
        # With an empty table a lookup ends at once, with nothing.
        doc = c.request("dht.get_peers", {"info_hash": "11" * 20})
        assert doc["result"]["peers"] == []
        c.close()
    finally:
        td.stop()


def test_node_id_and_nodes_survive_restart(workdir):
    td = td_dht(workdir, "td")
    td.start(bound=120)
    other = td_dht(workdir, "other", bootstrap=[td.peer_address()])
    other.start(bound=120)
    try:
        wait_joined([other], 20, "the second node to know the first")
        id1 = other.call("dht.status")["node_id"]
        assert other.stop() == 0
        path = os.path.join(other.daemon.state_dir, "dht")
        saved = bdecode(open(path, "rb").read())
        assert b"v4" in saved
        # Restart with no bootstrap: the saved nodes are enough.
        other.daemon.config["dht_bootstrap"] = ""
        other.start(bound=120)
        st = other.call("dht.status")
        assert st["node_id"] == id1
        wait_joined([other], 20, "rejoining from saved nodes")
    finally:
        other.stop()
        td.stop()


# ------------------------------------------------------------ the swarm

def lt_available():
    try:
        r = peers.subprocess.run([peers.SYSTEM_PYTHON, "-c",
                                  "import libtorrent"], timeout=30,
                                 capture_output=True)
        return r.returncode == 0
    except Exception:
        return False


@pytest.mark.slow
def test_swarm_with_libtorrent(workdir):
    if not lt_available():
        pytest.fail("python3-libtorrent is not installed")
    lts, tds = [], []
    try:
        for i in range(4):
            n = LtDht(workdir, name="lt%d" % i, bound=240)
            n.start(nodes=[x.address() for x in lts])
            lts.append(n)
        for n in lts[:-1]:
            n.add_node(lts[-1].address())
        # torrentd nodes join through one libtorrent node only.
        for i in range(3):
            td = td_dht(workdir, "td%d" % i, bootstrap=[lts[0].address()])
            td.start(bound=240)
            tds.append(td)
        for td in tds:
            try:
                peers.wait_until(
                    lambda: td.call("dht.status")["nodes"]["good"] >= 3, 45,
                    what="torrentd to join the swarm through libtorrent")
            except AssertionError as e:
                raise AssertionError("%s\n%s\nlibtorrent tables: %s" % (
                    e, json.dumps(td.call("dht.status")),
                    [n.nodes() for n in lts]))

        # libtorrent announces; torrentd finds it.
        ih1 = os.urandom(20).hex()
        lts[1].announce(ih1)
        want = "%s:%d" % (lts[1].ip, lts[1].port)

        def td_finds():
            r = tds[2].call("dht.get_peers", info_hash=ih1)
            return want in r["peers"] and r
        r = peers.wait_until(td_finds, 60, interval=1.0,
                             what="torrentd to find libtorrent's peer")
        assert r["queries"] > 0 and r["nodes"] > 0

        # torrentd announces; libtorrent finds it.
        ih2 = os.urandom(20).hex()
        r = tds[0].call("dht.announce", info_hash=ih2, port=6999)
        assert r["announced"] > 0
        want = "%s:6999" % tds[0].ip

        def lt_finds():
            e = lts[3].get_peers(ih2, timeout=60)
            return want in e["peers"] and e
        peers.wait_until(lt_finds, 90, interval=1.0,
                         what="libtorrent to find torrentd's peer")
        # And another torrentd finds it too.
        r = tds[1].call("dht.get_peers", info_hash=ih2)
        assert want in r["peers"]
        st = tds[0].call("dht.status")
        assert st["lookups"]["finished"] >= 1
        assert st["counters"]["messages_in"] > 0
    finally:
        for td in tds:
            td.stop()
        for n in lts:
            n.stop()


def have_ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


def test_dual_stack_and_bep32(workdir):
    """A wildcard listen address: IPv4 and IPv6 sockets on one port; the
    IPv6 node answers queries from ::1, and "want" (BEP 32) asks either
    node for both families."""
    if not have_ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    td = td_dht(workdir, "dual", config={"listen": "[::]:0"})
    td.daemon.start()
    try:
        st = td.daemon.call("dht.status")
        assert st["families"] == ["ipv4", "ipv6"]
        port = st["port"]
        c6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        c6.settimeout(2)
        c6.bind(("::1", 0))
        msg = {"t": b"v6", "y": "q", "q": "find_node",
               "a": {"id": b"y" * 20, "target": b"z" * 20,
                     "want": [b"n4", b"n6"]}}
        c6.sendto(bencode(msg), ("::1", port))
        r = None
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            m = bdecode(c6.recv(4096))
            if m.get(b"t") == b"v6":
                r = m
                break
        assert r and r[b"y"] == b"r", r
        assert r[b"r"][b"id"].hex() == st["node_id"]
        assert r[b"ip"][:16] == socket.inet_pton(socket.AF_INET6, "::1")
        c6.close()
        c4 = KrpcClient(ip="127.0.0.1")
        r = c4.query(("127.0.0.1", port), "ping")
        assert r and r[b"y"] == b"r"
        c4.close()
    finally:
        td.stop()


def test_lookup_bounded_and_answered_at_stop(workdir):
    """A lookup whose only node went away ends after the query timeout;
    one still running when the daemon stops is answered -32008."""
    b = td_dht(workdir, "b")
    b.start(bound=120)
    a = td_dht(workdir, "a", bootstrap=[b.peer_address()])
    a.start(bound=120)
    try:
        wait_joined([a], 20, "a to know b")
        b.stop()
        t0 = time.monotonic()
        r = a.call("dht.get_peers", info_hash="22" * 20)
        took = time.monotonic() - t0
        assert r["peers"] == [] and r["answers"] == 0
        assert 2.0 < took < 35.0, took
        # Again, and stop the daemon while it runs.
        c = a.daemon.connect(timeout=30)
        c.send({"jsonrpc": "2.0", "id": 7, "method": "dht.get_peers",
                "params": {"info_hash": "33" * 20}})
        time.sleep(0.5)
        # To torrentd's own PID: `timeout` would pass a signal it gets on
        # to its process group too, and a second SIGTERM exits at once.
        os.kill(a.pid, 15)
        doc = c.recv()
        assert doc["id"] == 7 and doc["error"]["code"] == -32008, doc
        c.close()
        assert a.daemon.proc.wait(30) == 0
        a.daemon.check_sanitizers()
    finally:
        a.stop()
        b.stop()


def test_torrentctl_dht_get_peers(workdir, ctl):
    """Three torrentd: one announces, another's `torrentctl dht get-peers`
    prints the peer; bad arguments are usage errors."""
    a = td_dht(workdir, "a")
    a.start(bound=120)
    b = td_dht(workdir, "b", bootstrap=[a.peer_address()])
    c = td_dht(workdir, "c", bootstrap=[a.peer_address()])
    b.start(bound=120)
    c.start(bound=120)
    try:
        wait_joined((b, c), 20, "joining")
        ih = "ab" * 20
        assert b.call("dht.announce", info_hash=ih, port=7777)[
            "announced"] >= 1
        sock = c.daemon.control_socket
        r = ctl("--socket", sock, "dht", "get-peers", ih, rc=0)
        assert "%s:7777" % b.ip in r.stdout.split()
        r = ctl("--socket", sock, "dht", "get-peers", ih, "--json", rc=0)
        assert "%s:7777" % b.ip in json.loads(r.stdout)["peers"]
        ctl("--socket", sock, "dht", "get-peers", "abc", rc=2)
        ctl("--socket", sock, "dht", "frobnicate", rc=2)
        # Not on the read-only socket: it sends traffic.
        ctl("--socket", c.daemon.status_socket, "dht", "get-peers", ih,
            rc=4)
    finally:
        for x in (c, b, a):
            x.stop()
