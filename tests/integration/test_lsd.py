"""Local service discovery (BEP 14, config `lsd`).

Multicast never touches a real interface here: the two-daemon test runs
each torrentd in a network namespace of its own that the test creates
(`ip netns add`), joined by a veth pair and nothing else; the namespaces
(and with them the veth pair) are deleted at the end.  That needs root:
without it the test is skipped and says why (CI runs as root).
"""
import os
import subprocess
import time

import pytest

from conftest import stop_each
from tdaemon import Daemon, b64, binary

# 198.18.0.0/15 is for benchmarking (RFC 2544): never a real network.
NET = "198.18.214."
PEER_PORT = 6881


def run(argv):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=30)
    assert r.returncode == 0, "%s: %s" % (" ".join(argv), r.stdout.decode())
    return r.stdout.decode()


def make_torrent(workdir, name, private=False):
    src = os.path.join(str(workdir), name)
    with open(src, "wb") as f:
        f.write(os.urandom(100000))
    out = src + ".torrent"
    argv = [binary("torrentctl"), "create", src, "-o", out]
    if private:
        argv.append("--private")
    run(argv)
    return out


class Netns:
    """Two namespaces, a and b, joined by a veth pair with NET.1 and
    NET.2; a also has NET.3 (a second daemon there shares the LSD port).
    delete() removes both (idempotent)."""

    def __init__(self):
        tag = str(os.getpid())
        self.names = ["tdlsd%sa" % tag, "tdlsd%sb" % tag]
        self.links = ["lsd%sa" % tag, "lsd%sb" % tag]
        self.addrs = [NET + "1", NET + "2"]
        self.extra = NET + "3"  # in a, for a second daemon there

    def create(self):
        for n in self.names:
            run(["ip", "netns", "add", n])
        run(["ip", "link", "add", self.links[0], "netns", self.names[0],
             "type", "veth", "peer", "name", self.links[1], "netns",
             self.names[1]])
        for n, link, addr in zip(self.names, self.links, self.addrs):
            run(["ip", "-n", n, "link", "set", "lo", "up"])
            run(["ip", "-n", n, "addr", "add", addr + "/24", "dev", link])
            run(["ip", "-n", n, "link", "set", link, "up"])
        run(["ip", "-n", self.names[0], "addr", "add", self.extra + "/24",
             "dev", self.links[0]])
        # Both ends up (carrier) before a daemon joins the group.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            states = [run(["ip", "-n", n, "-o", "link", "show", link])
                      for n, link in zip(self.names, self.links)]
            if all("LOWER_UP" in s for s in states):
                return
            time.sleep(0.1)
        raise AssertionError("veth pair not up: %r" % states)

    def delete(self):
        for n in self.names:
            subprocess.run(["ip", "netns", "del", n], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=30)

    def prefix(self, i):
        return ("ip", "netns", "exec", self.names[i])


# Sends 5 malformed datagrams, then 100 valid announces (port 9999, a
# foreign cookie) to the LSD group from the address argv[1].
FLOOD = r"""
import socket, struct, sys
src, h = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(src))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
bad = [b"", b"BT-SEARCH", b"GET / HTTP/1.1\r\n\r\n", b"\x00" * 1500,
       b"BT-SEARCH * HTTP/1.1\r\nPort: 0\r\n\r\n"]
for b in bad:
    s.sendto(b, ("239.192.152.143", 6771))
good = ("BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\n"
        "Port: 9999\r\nInfohash: %s\r\ncookie: flood\r\n\r\n\r\n" % h)
for i in range(100):
    s.sendto(good.encode(), ("239.192.152.143", 6771))
"""


def wait_for(fn, timeout, what):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        ok, last = fn()
        if ok:
            return last
        time.sleep(0.2)
    raise AssertionError("%s within %.0f s; last: %r" % (what, timeout, last))


def test_lsd_off_by_default(tmp_path):
    """No multicast unless asked: lsd.status says so (also on the
    read-only socket)."""
    d = Daemon(tmp_path).start()
    try:
        for st in (d.call("lsd.status"),
                   d.connect(status=True).call("lsd.status")):
            assert st["enabled"] is False
            assert st["announces_sent"] == 0
            assert st["messages_in"] == 0
            assert st["peers"] == []
    finally:
        assert d.stop() == 0


def test_lsd_daemons_find_each_other(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces (ip netns "
                    "add) for multicast; CI runs this as root")
    ns = Netns()
    daemons = []
    try:
        ns.create()
        public = make_torrent(tmp_path, "public.bin")
        private = make_torrent(tmp_path, "private.bin", private=True)
        # td0 and td2 in namespace a (sharing port 6771), td1 in b.
        addrs = [ns.addrs[0], ns.addrs[1], ns.extra]
        for i, (addr, where) in enumerate(zip(addrs, (0, 1, 0))):
            d = Daemon(tmp_path, name="td%d" % i, config={
                "listen": "%s:%d" % (addr, PEER_PORT),
                "lsd": "on",
            })
            daemons.append(d)
            d.start(prefix=ns.prefix(where))
        hashes = []
        for d in daemons:
            st = d.call("lsd.status")
            assert st["enabled"] is True, d.stderr_text()
            assert st["port"] == PEER_PORT
            pub = d.call("torrent.add", metainfo=b64(public))["info_hash"]
            prv = d.call("torrent.add", metainfo=b64(private))["info_hash"]
            hashes.append((pub, prv))
        pub, prv = hashes[0]
        assert hashes[1] == hashes[2] == (pub, prv)
        added = time.monotonic()

        # Each learns the others' addresses for the public torrent, soon
        # after it was added (the first announce comes within a tick),
        # across the link and within a namespace.
        for i, d in enumerate(daemons):
            others = {(pub, "%s:%d" % (a, PEER_PORT))
                      for k, a in enumerate(addrs) if k != i}

            def found(d=d, others=others):
                st = d.call("lsd.status")
                got = {(p["info_hash"], p["address"]) for p in st["peers"]}
                return others <= got, st
            st = wait_for(found, 15, "td%d learns %s by LSD" % (i, others))
            assert time.monotonic() - added < 15
            assert st["announces_sent"] >= 1
            assert st["messages_in"] >= 1
            # Its own messages come back (multicast loop) and are ignored.
            assert st["messages_own"] >= 1
            assert st["messages_bad"] == 0
            # Never itself, never the private torrent (BEP 27).
            for p in st["peers"]:
                assert p["address"] != "%s:%d" % (addrs[i], PEER_PORT)
                assert p["info_hash"] != prv
                assert abs(p["seen_at"] - time.time()) < 60
        # Announces are batched and rate-limited: the public torrent was
        # announced once per daemon (not once per second).
        for d in daemons:
            st = d.call("lsd.status")
            assert st["hashes_announced"] == 1, st

        # Hostile traffic from namespace b: malformed datagrams and a
        # flood of valid ones.  They are counted, the source is rate
        # limited, and the daemons go on answering.
        before = daemons[0].call("lsd.status")
        run([*ns.prefix(1), "/usr/bin/python3", "-c", FLOOD, ns.addrs[1],
             pub])
        st = wait_for(lambda: (lambda st: (
            st["messages_bad"] + st["messages_dropped"] +
            st["messages_in"] - before["messages_in"] >= 105, st))(
                daemons[0].call("lsd.status")),
            10, "td0 sees the flood")
        assert st["messages_bad"] == 5, st
        assert st["messages_dropped"] >= 1, st
        # The bucket lets a burst through, then about one a second.
        assert st["messages_in"] - before["messages_in"] <= 100, st
        assert ("%s:%d" % (ns.addrs[1], 9999)) in {
            p["address"] for p in st["peers"]}
        for d in daemons:
            assert d.call("daemon.version")
    finally:
        try:
            stop_each(daemons)
        finally:
            ns.delete()
    for n in ns.names:
        assert n not in run(["ip", "netns", "list"])


def test_lsd_port_zero_listens_only(tmp_path):
    """With the kernel's pick of peer port (listen port 0) there is no port
    to announce: LSD runs, listens, and sends nothing."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace (ip netns "
                    "add) for multicast; CI runs this as root")
    name = "tdlsd%sz" % os.getpid()
    d = None
    try:
        run(["ip", "netns", "add", name])
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        d = Daemon(tmp_path, config={"listen": "127.0.0.1:0", "lsd": "on"})
        d.start(prefix=("ip", "netns", "exec", name))
        public = make_torrent(tmp_path, "public.bin")
        d.call("torrent.add", metainfo=b64(public))
        time.sleep(3.5)  # past the first round and several ticks
        st = d.call("lsd.status")
        assert st["enabled"] is True, d.stderr_text()
        assert st["port"] == 0
        assert st["announces_sent"] == 0 and st["send_errors"] == 0
        assert "nothing is announced" in d.stderr_text()
    finally:
        try:
            if d:
                d.stop()
        finally:
            subprocess.run(["ip", "netns", "del", name],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=30)
    assert name not in run(["ip", "netns", "list"])
