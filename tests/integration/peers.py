"""peers — real third-party BitTorrent peers on loopback, for the
integration tests (tests/integration/test_interop.py) and the transfer
benchmark (tests/bench/bench_transfer.py).

Every peer gets its own 127.0.0.x address (next_address()): transmission
keeps one peer per IP, and trackers record a peer by the address it
announces from.  Nothing here touches a non-loopback address.

Every process is bounded in time and stopped by its PID:
  - it runs under coreutils `timeout -k 5 BOUND` (so it dies even if the
    test process is killed with SIGKILL), with PR_SET_PDEATHSIG=SIGTERM on
    the `timeout` process (a test process that dies takes its peers with
    it);
  - Proc.stop() sends SIGTERM to the real program's PID (the child of
    `timeout`), then SIGKILL to that PID after a grace period.  Nothing is
    ever killed by name or pattern.
  - stop_all() (registered with atexit, and called by the fixtures) stops
    whatever is left.

Classes:
  Opentracker(workdir)   Debian's opentracker (whitelist-only build),
                         chrooted to a world-readable directory, dropping
                         to the `_opentracker` user; announce_url().
  Transmission(workdir)  transmission-daemon 3.00 in the foreground with
                         its own -g config directory; driven through its
                         RPC (the protocol transmission-remote speaks; the
                         remote() method runs transmission-remote itself).
  Libtorrent(workdir)    a python3-libtorrent session in a separate
                         /usr/bin/python3 process (tests/integration/
                         lt_peer.py), one JSON line per event.
  BadPeer(workdir)       tests/integration/badpeer.py: a tiny pure-Python
                         seeder that can serve corrupt data for chosen
                         pieces.
  Torrentd(workdir)      a torrentd (tests/integration/tdaemon.py's Daemon)
                         listening on its own 127.0.0.x, with helpers to
                         add a torrent, dial a peer and wait for progress.
  ProcSampler            samples /proc/PID: CPU seconds (utime+stime of all
                         threads), peak RssAnon, VmHWM.

Helpers: next_address(), free_port(ip), wait_until(), make_torrent(),
seed_copy(), files_equal(), wait_files_equal(), slow_swarm(); for talking
to trackers and peers by hand: http_get(), announce_query(),
compact_peers(), recv_exact().

Quirks this module relies on are in /work/shared/TESTING.md (transmission
refuses to dial loopback peers that a tracker hands it, waits 10-13 s
before the first payload byte, and may abort on SIGTERM: check its data,
never its exit status).
"""
import atexit
import ctypes
import filecmp
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import tdaemon  # noqa: E402
from tdaemon import SYSTEM_PYTHON, children_of  # noqa: E402,F401
LT_PEER = os.path.join(HERE, "lt_peer.py")
BADPEER = os.path.join(HERE, "badpeer.py")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------- addresses

_addr_lock = threading.Lock()
# Start at a per-process offset so that two test runs at once (a bench and
# `make check`) rarely share an address; ports are checked free anyway.
_addr_next = [2 + (os.getpid() % 40) * 6]


def next_address():
    """A fresh loopback address 127.0.X.Y (never 127.0.0.1)."""
    with _addr_lock:
        n = _addr_next[0]
        _addr_next[0] += 1
    n = n % (250 * 250)
    return "127.0.%d.%d" % (n // 250, 2 + n % 250)


def free_port(ip, udp=True):
    """A port that is free for TCP (and UDP when udp) on ip."""
    for _ in range(200):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            t.bind((ip, 0))
            port = t.getsockname()[1]
            if udp:
                u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    u.bind((ip, port))
                except OSError:
                    continue
                finally:
                    u.close()
            return port
        finally:
            t.close()
    raise RuntimeError("no free port on %s" % ip)


def wait_until(pred, timeout, interval=0.1, what="condition"):
    """Poll pred() until it returns a true value (returned) or fail with
    AssertionError after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0f s waiting for %s"
                                 % (timeout, what))
        time.sleep(interval)


def make_torrent(data_path, out, piece_pow=18, announce=None, name=None):
    """A .torrent for data_path with Debian's mktorrent (-l piece_pow:
    18 = 256 KiB, 20 = 1 MiB); returns out."""
    argv = ["mktorrent", "-l", str(piece_pow), "-o", str(out)]
    if announce:
        argv += ["-a", announce]
    if name:
        argv += ["-n", name]
    argv.append(str(data_path))
    if os.path.exists(out):
        os.unlink(out)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError("mktorrent failed: %s%s" % (r.stdout, r.stderr))
    return out


def seed_copy(data, directory):
    """Put a copy of the file data into directory (made if needed), where
    a seeder will find it; returns the copy's path."""
    os.makedirs(directory, exist_ok=True)
    dst = os.path.join(directory, os.path.basename(data))
    shutil.copyfile(data, dst)
    return dst


def wait_files_equal(a, b, settle):
    """files_equal(a, b), retried for up to settle seconds: a client
    may report completion before its last writes reach the files."""
    deadline = time.monotonic() + settle
    while True:
        if files_equal(a, b):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def files_equal(a, b):
    """True when the two files (or directory trees) hold the same bytes."""
    if os.path.isdir(a):
        cmp = filecmp.dircmp(a, b)
        if cmp.left_only or cmp.right_only or cmp.funny_files:
            return False
        for f in cmp.common_files:
            if not filecmp.cmp(os.path.join(a, f), os.path.join(b, f),
                               shallow=False):
                return False
        return all(files_equal(os.path.join(a, d), os.path.join(b, d))
                   for d in cmp.common_dirs)
    return (os.path.exists(b) and os.path.getsize(a) == os.path.getsize(b)
            and filecmp.cmp(a, b, shallow=False))


# --------------------------------------------------------------- processes

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1
_procs = []
_procs_lock = threading.Lock()


def _pdeathsig_term():
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Proc:
    """A bounded child process: argv runs under `timeout -k 5 bound`.
    pid is the program's own PID (the child of timeout), for signals and
    /proc sampling."""

    def __init__(self, argv, bound, log_path, stdin=subprocess.DEVNULL,
                 stdout=None, env=None, cwd=None, name=None, text=False):
        self.name = name or os.path.basename(argv[0])
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.wrapper = subprocess.Popen(
            ["timeout", "-k", "5", "%d" % max(1, int(bound)), *argv],
            stdin=stdin, stdout=stdout if stdout is not None else self.log,
            stderr=self.log, env=env, cwd=cwd, text=text, bufsize=1 if text
            else -1, preexec_fn=_pdeathsig_term)
        self.pid = None
        with _procs_lock:
            _procs.append(self)
        self.pid = self._find_child()

    def _find_child(self, timeout=5.0):
        """The PID of the program that `timeout` started."""
        deadline = time.monotonic() + timeout
        wpid = self.wrapper.pid
        while time.monotonic() < deadline:
            kids = children_of(wpid)
            if kids:
                return kids[0]
            if self.wrapper.poll() is not None:
                return None
            time.sleep(0.005)
        return None

    def alive(self):
        return self.wrapper.poll() is None

    def signal(self, sig):
        """Send sig to the program itself (by PID)."""
        if self.pid and self.alive():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout=None):
        return self.wrapper.wait(timeout)

    def stop(self, grace=10.0):
        """SIGTERM the program, SIGKILL it after grace seconds; returns
        the exit status as seen through `timeout` (128+N for a signal)."""
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.wrapper.wait(grace)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                try:
                    self.wrapper.wait(10)
                except subprocess.TimeoutExpired:
                    self.wrapper.kill()   # the timeout process, by PID
                    self.wrapper.wait()
        if not self.log.closed:
            self.log.close()
        with _procs_lock:
            if self in _procs:
                _procs.remove(self)
        return self.wrapper.returncode

    def log_text(self):
        return tdaemon.read_text(self.log_path)


def stop_all():
    """Stop every process this module started that still runs."""
    with _procs_lock:
        left = list(_procs)
    for p in left:
        try:
            p.stop(grace=3.0)
        except Exception:
            pass


atexit.register(stop_all)


# ------------------------------------------------------------ /proc sampling

def proc_cpu_seconds(pid):
    """utime+stime of all the threads of pid, in seconds (None if gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = s[s.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status(pid):
    """/proc/PID/status as a dict of kB values for the Vm*/Rss* lines."""
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k.startswith(("Vm", "Rss")):
                    out[k] = int(v.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


class ProcSampler:
    """Samples a PID every interval seconds on a thread: the peak RssAnon
    (anonymous memory; libtorrent's mmapped file pages do not count), the
    last VmHWM and the last CPU seconds seen.  mark() records the CPU
    seconds now (e.g. when a transfer starts); stop() takes a last
    sample."""

    def __init__(self, pid, interval=0.05):
        self.pid = pid
        self.interval = interval
        self.peak_rss_anon_kb = 0
        self.vm_hwm_kb = 0
        self.cpu = proc_cpu_seconds(pid) or 0.0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def sample(self):
        st = proc_status(self.pid)
        if st:
            self.peak_rss_anon_kb = max(self.peak_rss_anon_kb,
                                        st.get("RssAnon", 0))
            self.vm_hwm_kb = max(self.vm_hwm_kb, st.get("VmHWM", 0))
        c = proc_cpu_seconds(self.pid)
        if c is not None:
            self.cpu = c
        return self.cpu

    def _run(self):
        while not self._stop.wait(self.interval):
            self.sample()

    def mark(self):
        return self.sample()

    def stop(self):
        self.sample()
        self._stop.set()
        self._t.join()
        return self.cpu


# ------------------------------------------------- tracker and peer clients

def http_get(tr, target, source=None, timeout=5):
    """GET target (e.g. "/announce?...") from the HTTP server on tr.ip,
    tr.port (a tracker), from the address source when given; returns
    (status, body)."""
    c = http.client.HTTPConnection(tr.ip, tr.port, timeout=timeout,
                                   source_address=(source, 0) if source
                                   else None)
    try:
        c.request("GET", target)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def announce_query(ih, port, peer_id, left=100, event=None, compact=1,
                   numwant=None, extra=""):
    """The query string of an HTTP announce (BEP 3) for the info-hash ih
    and peer_id (bytes); compact, event and numwant are left out when
    None; extra is appended as it is."""
    def q(b):
        return urllib.parse.quote_from_bytes(b, safe="")
    s = "info_hash=%s&peer_id=%s&port=%d&uploaded=0&downloaded=0&left=%d" % (
        q(ih), q(peer_id), port, left)
    if compact is not None:
        s += "&compact=%d" % compact
    if event:
        s += "&event=" + event
    if numwant is not None:
        s += "&numwant=%d" % numwant
    return s + extra


def compact_peers(blob):
    """The (ip, port) pairs of compact IPv4 peers (BEP 23: 4 bytes of
    address, 2 of port, big-endian), in order; fails on a length that is
    not a multiple of 6."""
    assert len(blob) % 6 == 0, "compact peers of %d bytes" % len(blob)
    return [(socket.inet_ntoa(blob[i:i + 4]),
             int.from_bytes(blob[i + 4:i + 6], "big"))
            for i in range(0, len(blob), 6)]


def recv_exact(sock, n):
    """Exactly n bytes from sock; EOFError if it closes first."""
    buf = bytearray()
    while len(buf) < n:
        c = sock.recv(n - len(buf))
        if not c:
            raise EOFError("peer closed after %d of %d bytes"
                           % (len(buf), n))
        buf += c
    return bytes(buf)


# ------------------------------------------------------------- opentracker

class Opentracker:
    """Debian's opentracker on ip:port (TCP and UDP), whitelist-only:
    pass the hex info-hashes it may serve (or allow() them later; it
    reloads the whitelist on SIGHUP).  It refuses to run as root, so it
    chroots to a world-readable directory and drops to the package's
    user (_opentracker, else nobody).  The whitelist path in the config
    is relative to that chroot."""

    def __init__(self, workdir, ip=None, port=None, hashes=(), bound=600):
        self.ip = ip or next_address()
        self.port = port or free_port(self.ip)
        self.workdir = str(workdir)
        self.bound = bound
        # The chroot must be reachable by the unprivileged user only after
        # chroot(), but pytest's tmp dirs are 0700: keep the rootdir in a
        # directory of its own that is world-readable.
        self.root = os.path.join(self.workdir, "opentracker-root-%s" %
                                 self.ip.replace(".", "-"))
        os.makedirs(self.root, exist_ok=True)
        os.chmod(self.root, 0o755)
        self.whitelist = os.path.join(self.root, "whitelist")
        self.hashes = [h.lower() for h in hashes]
        self._write_whitelist()
        self.conf = os.path.join(self.root, "opentracker.conf")
        with open(self.conf, "w") as f:
            f.write("listen.tcp_udp %s:%d\n" % (self.ip, self.port))
            f.write("access.whitelist /whitelist\n")
            f.write("tracker.rootdir %s\n" % self.root)
            f.write("tracker.user %s\n" % self.user())
        os.chmod(self.conf, 0o644)
        self.proc = None

    @staticmethod
    def user():
        import pwd
        for u in ("_opentracker", "nobody"):
            try:
                pwd.getpwnam(u)
                return u
            except KeyError:
                pass
        raise RuntimeError("no unprivileged user for opentracker")

    def _write_whitelist(self):
        tmp = self.whitelist + ".tmp"
        with open(tmp, "w") as f:
            for h in self.hashes:
                f.write(h + "\n")
        os.chmod(tmp, 0o644)
        os.rename(tmp, self.whitelist)

    def allow(self, info_hash):
        """Add an info-hash to the whitelist (reloaded at once if
        running)."""
        self.hashes.append(info_hash.lower())
        self._write_whitelist()
        if self.proc:
            self.proc.signal(signal.SIGHUP)
            time.sleep(0.2)

    def announce_url(self):
        return "http://%s:%d/announce" % (self.ip, self.port)

    def udp_announce_url(self):
        return "udp://%s:%d/announce" % (self.ip, self.port)

    def start(self):
        self.proc = Proc(["opentracker", "-f", self.conf],
                         self.bound, os.path.join(self.workdir,
                                                  "opentracker.log"),
                         cwd=self.root, name="opentracker")
        wait_until(self._answers, 10, 0.05, "opentracker to answer on %s:%d"
                   % (self.ip, self.port))
        return self

    def _answers(self):
        if not self.proc.alive():
            raise AssertionError("opentracker exited:\n" +
                                 self.proc.log_text())
        try:
            with socket.create_connection((self.ip, self.port), 0.5):
                return True
        except OSError:
            return False

    def announce(self, info_hash_hex, port, ip=None, left=0,
                 event="started"):
        """An HTTP announce of our own (from ip when given); returns the
        raw bencoded answer."""
        q = announce_query(bytes.fromhex(info_hash_hex), port,
                           b"-TT0001-%012d" % os.getpid(), left=left,
                           event=event)
        return http_get(self, "/announce?" + q, ip)[1]

    def peers_of(self, info_hash_hex, ip=None):
        """The peers ("ip:port") the tracker gives for an info-hash: we
        announce as a leecher on port 9 from ip (a fresh address by
        default), then say we stopped, which takes us out again."""
        ip = ip or next_address()
        raw = self.announce(info_hash_hex, 9, ip=ip, left=1)
        self.announce(info_hash_hex, 9, ip=ip, left=1, event="stopped")
        import conftest
        doc = conftest.bdecode(raw)
        if b"failure reason" in doc:
            raise RuntimeError("opentracker: %s" %
                               doc[b"failure reason"].decode())
        out = ["%s:%d" % p for p in compact_peers(doc.get(b"peers", b""))]
        return [x for x in out if x != "%s:9" % ip]

    def stop(self):
        if self.proc:
            self.proc.stop(grace=5)


# ------------------------------------------------------------ transmission

class Transmission:
    """transmission-daemon 3.00 in the foreground (-f) with its own config
    directory (-g), RPC and peer port on its own 127.0.0.x.  It refuses to
    dial loopback peers that a tracker hands it: whoever tests with it
    must dial it (peer_address())."""

    def __init__(self, workdir, name="tr", ip=None, bound=600,
                 encryption=0, settings=None):
        self.ip = ip or next_address()
        self.dir = os.path.join(str(workdir), name)
        self.config_dir = os.path.join(self.dir, "config")
        self.download_dir = os.path.join(self.dir, "downloads")
        os.makedirs(self.config_dir, exist_ok=True)
        os.makedirs(self.download_dir, exist_ok=True)
        self.rpc_port = free_port(self.ip, udp=False)
        self.peer_port = free_port(self.ip)
        while self.peer_port == self.rpc_port:
            self.peer_port = free_port(self.ip)
        self.bound = bound
        self.settings = {
            "rpc-enabled": True,
            "rpc-bind-address": self.ip,
            "rpc-port": self.rpc_port,
            "rpc-authentication-required": False,
            "rpc-whitelist-enabled": False,
            "rpc-host-whitelist-enabled": False,
            "bind-address-ipv4": self.ip,
            "bind-address-ipv6": "::1",
            "peer-port": self.peer_port,
            "peer-port-random-on-start": False,
            "port-forwarding-enabled": False,
            "dht-enabled": False,
            "lpd-enabled": False,
            "utp-enabled": False,
            "pex-enabled": False,
            "blocklist-enabled": False,
            # 0: plaintext preferred, 1: encryption preferred, 2: required
            "encryption": encryption,
            "download-dir": self.download_dir,
            "incomplete-dir-enabled": False,
            "watch-dir-enabled": False,
            "start-added-torrents": True,
            "trash-original-torrent-files": False,
            "ratio-limit-enabled": False,
            "idle-seeding-limit-enabled": False,
            "speed-limit-down-enabled": False,
            "speed-limit-up-enabled": False,
            "alt-speed-enabled": False,
            "download-queue-enabled": False,
            "seed-queue-enabled": False,
            "queue-stalled-enabled": False,
            "peer-limit-global": 200,
            "peer-limit-per-torrent": 60,
            "message-level": 2,
            "umask": 18,
        }
        self.settings.update(settings or {})
        self.session_id = ""
        self.proc = None

    def peer_address(self):
        return "%s:%d" % (self.ip, self.peer_port)

    def start(self, timeout=20):
        with open(os.path.join(self.config_dir, "settings.json"), "w") as f:
            json.dump(self.settings, f, indent=1)
        self.proc = Proc(["transmission-daemon", "-f", "-g", self.config_dir,
                          "--log-error"],
                         self.bound, os.path.join(self.dir, "daemon.log"),
                         name="transmission-daemon")
        wait_until(self._answers, timeout, 0.1,
                   "transmission-daemon RPC on %s:%d" % (self.ip,
                                                         self.rpc_port))
        return self

    def _answers(self):
        if not self.proc.alive():
            raise AssertionError("transmission-daemon exited:\n" +
                                 self.proc.log_text())
        try:
            self.rpc("session-get", timeout=2)
            return True
        except (OSError, urllib.error.URLError, RuntimeError):
            return False

    def rpc(self, method, timeout=10, **arguments):
        """One RPC call (with the X-Transmission-Session-Id dance);
        returns its "arguments"."""
        url = "http://%s:%d/transmission/rpc" % (self.ip, self.rpc_port)
        body = json.dumps({"method": method,
                           "arguments": arguments}).encode()
        for _ in range(3):
            req = urllib.request.Request(
                url, data=body, method="POST",
                headers={"X-Transmission-Session-Id": self.session_id,
                         "Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=timeout) as r:
                    doc = json.loads(r.read())
            except urllib.error.HTTPError as e:
                if e.code == 409:
                    self.session_id = e.headers.get(
                        "X-Transmission-Session-Id", "")
                    continue
                raise
            if doc.get("result") != "success":
                raise RuntimeError("transmission %s: %s" % (
                    method, doc.get("result")))
            return doc.get("arguments", {})
        raise RuntimeError("transmission %s: no session id" % method)

    def remote(self, *args, timeout=30):
        """Run transmission-remote against this daemon."""
        return subprocess.run(
            ["transmission-remote", "%s:%d" % (self.ip, self.rpc_port),
             *[str(a) for a in args]],
            capture_output=True, text=True, timeout=timeout)

    def add(self, torrent_path, download_dir=None, paused=False):
        """Add a .torrent; returns its transmission id.  With the data
        already in download_dir, transmission checks it and seeds."""
        args = self.rpc("torrent-add", metainfo=tdaemon.b64(torrent_path),
                        **{"download-dir": download_dir or self.download_dir,
                           "paused": paused})
        t = args.get("torrent-added") or args.get("torrent-duplicate")
        return t["id"]

    FIELDS = ["id", "name", "hashString", "status", "percentDone",
              "haveValid", "sizeWhenDone", "leftUntilDone", "error",
              "errorString", "rateDownload", "rateUpload", "peersConnected",
              "uploadedEver", "downloadedEver", "corruptEver",
              "recheckProgress", "doneDate"]

    def get(self, tid, fields=None):
        ts = self.rpc("torrent-get", ids=[tid],
                      fields=fields or self.FIELDS)["torrents"]
        if not ts:
            raise RuntimeError("transmission has no torrent %r" % tid)
        return ts[0]

    def add_peer(self, tid, address):
        """transmission 3.00 has no RPC to dial a peer: this is only a
        reminder.  Dial transmission from the other side instead."""
        raise NotImplementedError("transmission 3.00 cannot be told to "
                                  "dial a peer; dial peer_address()")

    # status 6 = seeding, 4 = downloading, 2 = checking (RPC spec)
    def wait_seeding(self, tid, timeout=120):
        """Wait until the torrent is verified complete and seeding."""
        def ok():
            t = self.get(tid)
            if t["error"]:
                raise AssertionError("transmission error: %s" %
                                     t["errorString"])
            return t if (t["percentDone"] >= 1.0 and t["status"] == 6) \
                else None
        return wait_until(ok, timeout, 0.2, "transmission to seed")

    def wait_complete(self, tid, timeout=120, interval=0.1):
        """Wait until all wanted data is verified; returns the torrent."""
        def ok():
            t = self.get(tid)
            if t["error"]:
                raise AssertionError("transmission error: %s" %
                                     t["errorString"])
            return t if t["leftUntilDone"] == 0 and \
                t["percentDone"] >= 1.0 else None
        return wait_until(ok, timeout, interval, "transmission to complete")

    def stop(self):
        """Stop the daemon by PID.  It sometimes aborts on SIGTERM after a
        transfer ("corrupted double-linked list"): its exit status means
        nothing, check its data instead."""
        if self.proc:
            return self.proc.stop(grace=10)


# -------------------------------------------------------------- libtorrent

class _JsonLinesProc:
    """A Proc whose stdout is JSON lines, read on a thread into events.
    A subclass whose program reads commands on stdin (command()) sets
    quits: stop() asks it to quit first."""
    quits = False

    def stop(self):
        """Stop the program: when it takes commands, send it "quit" and
        give it 5 s to exit; then Proc.stop() (SIGTERM by PID, SIGKILL
        after 5 s) and the end of the reader thread.  Returns the exit
        status as `timeout` passes it on (None if never started)."""
        if self.proc:
            if self.quits and self.proc.alive():
                self.command(cmd="quit")
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
            rc = self.proc.stop(grace=5)
            self._reader.join(5)
            return rc

    def _start_reader(self):
        self.events = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        logf = open(self.out_path, "a")
        for line in self.proc.wrapper.stdout:
            logf.write(line)
            logf.flush()
            try:
                ev = json.loads(line)
            except ValueError:
                ev = {"event": "text", "text": line.rstrip("\n")}
            ev["wall"] = time.monotonic()
            with self._cond:
                self.events.append(ev)
                self._cond.notify_all()
        logf.close()
        with self._cond:
            self.events.append({"event": "eof", "wall": time.monotonic()})
            self._cond.notify_all()

    def wait_event(self, name, timeout, pred=None):
        """The first event called name (and satisfying pred) so far or
        within timeout seconds; AssertionError otherwise (also when the
        process ends first)."""
        deadline = time.monotonic() + timeout
        i = 0
        with self._cond:
            while True:
                while i < len(self.events):
                    ev = self.events[i]
                    i += 1
                    if ev["event"] == name and (pred is None or pred(ev)):
                        return ev
                    if ev["event"] == "eof":
                        raise AssertionError(
                            "%s ended before %r; last events: %s\nlog:\n%s"
                            % (self.kind, name, self.events[-8:],
                               self.proc.log_text()[-3000:]))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        "%s: no %r within %.0f s; last events: %s" % (
                            self.kind, name, timeout, self.events[-8:]))
                self._cond.wait(min(left, 1.0))

    def find(self, name):
        with self._cond:
            return [e for e in self.events if e["event"] == name]

    def last(self, name):
        f = self.find(name)
        return f[-1] if f else None


class Libtorrent(_JsonLinesProc):
    """A python3-libtorrent peer (lt_peer.py) on its own 127.0.0.x."""
    kind = "libtorrent"
    quits = True

    def __init__(self, workdir, name="lt", ip=None, port=None, bound=600):
        self.ip = ip or next_address()
        self.port = port or free_port(self.ip)
        self.dir = os.path.join(str(workdir), name)
        self.download_dir = os.path.join(self.dir, "downloads")
        os.makedirs(self.download_dir, exist_ok=True)
        self.bound = bound
        self.proc = None
        self.out_path = os.path.join(self.dir, "events.jsonl")

    def peer_address(self):
        return "%s:%d" % (self.ip, self.port)

    def start(self, torrent, seed=False, seed_mode=False, save=None,
              connect=(), exit_on_complete=False, timeout=None,
              interval=0.5, enc="disabled", extra=(), wait_ready=True,
              ready_timeout=60):
        """Seed (the data is in save, default download_dir) or leech
        torrent; connect: peers to dial as soon as it runs."""
        self.save = save or self.download_dir
        argv = [SYSTEM_PYTHON, "-u", LT_PEER, "--torrent", str(torrent),
                "--save", self.save, "--listen", self.peer_address(),
                "--timeout", str(timeout or self.bound - 5),
                "--interval", str(interval), "--enc", enc, *extra]
        if seed:
            argv.append("--seed")
        if seed_mode:
            argv.append("--seed-mode")
        if exit_on_complete:
            argv.append("--exit-on-complete")
        for c in connect:
            argv += ["--connect", c]
        self.proc = Proc(argv, self.bound,
                         os.path.join(self.dir, "stderr.log"),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         name="lt_peer", text=True)
        self._stdin = self.proc.wrapper.stdin
        self._start_reader()
        if wait_ready:
            self.wait_event("ready", ready_timeout)
        return self

    def command(self, **cmd):
        try:
            self._stdin.write(json.dumps(cmd) + "\n")
            self._stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass

    def connect(self, address):
        """Dial a peer (libtorrent's connect_peer)."""
        self.command(cmd="connect", peer=address)

    def wait_complete(self, timeout):
        """Wait until every piece is verified and written to the files
        ("complete", then "flushed"); returns the "complete" event (its
        "wall" is the time of completion)."""
        ev = self.wait_event("complete", timeout)
        self.wait_event("flushed", 30)
        return ev


# ---------------------------------------------------------------- splicer

class Splicer:
    """Joins two peers that only accept connections: it dials both and
    splices the two TCP streams, so that each sees an incoming peer.

    transmission-daemon 3.00 dials no peer on 127/8 whatever the source
    (tracker, PEX, resume), so two transmissions on loopback never meet;
    this is how the benchmark connects transmission to transmission.  The
    handshake: the splicer sends `a` a handshake of its own (info-hash,
    reserved bits announcing BEP 10 and BEP 6 like transmission's), hands
    `a`'s answer to `b` as if `a` had dialled, and drops `b`'s answer
    (`a` had its handshake already); then bytes flow both ways untouched
    (plaintext only: both sides must allow unencrypted connections).
    It runs on two threads of the calling process, whose CPU time is not
    the peers'."""

    RESERVED = bytes([0, 0, 0, 0, 0, 0x10, 0, 0x04])

    def __init__(self, info_hash_hex, a, b, source_ip=None):
        self.info_hash = bytes.fromhex(info_hash_hex)
        self.a = a
        self.b = b
        self.source_ip = source_ip or next_address()
        self.bytes = [0, 0]
        self.threads = []
        self.socks = []
        self.error = None

    @staticmethod
    def _addr(s):
        host, port = s.rsplit(":", 1)
        return host, int(port)

    @staticmethod
    def _handshake_of(sock):
        n = recv_exact(sock, 1)
        return n + recv_exact(sock, n[0] + 48)

    def start(self, timeout=30):
        sa = socket.create_connection(self._addr(self.a), timeout,
                                      source_address=(self.source_ip, 0))
        sb = socket.create_connection(self._addr(self.b), timeout,
                                      source_address=(self.source_ip, 0))
        self.socks = [sa, sb]
        peer_id = b"-SP0001-" + os.urandom(6).hex().encode()
        sa.sendall(b"\x13BitTorrent protocol" + self.RESERVED +
                   self.info_hash + peer_id)
        ha = self._handshake_of(sa)
        sb.sendall(ha)
        self._handshake_of(sb)          # b's answer: a has had ours
        for s in self.socks:
            s.settimeout(None)
        for i, (src, dst) in enumerate(((sa, sb), (sb, sa))):
            t = threading.Thread(target=self._pump, args=(i, src, dst),
                                 daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def _pump(self, i, src, dst):
        buf = bytearray(1 << 18)
        view = memoryview(buf)
        try:
            while True:
                n = src.recv_into(buf)
                if not n:
                    break
                dst.sendall(view[:n])
                self.bytes[i] += n
        except OSError as e:
            self.error = e
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self):
        for s in self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
        for t in self.threads:
            t.join(5)


# ----------------------------------------------------------------- badpeer

class BadPeer(_JsonLinesProc):
    """tests/integration/badpeer.py: a pure-Python seeder on its own
    127.0.0.x that serves the data of the .torrent from data_path,
    corrupting the blocks of the pieces in corrupt (honest when empty).
    It listens, and/or dials the peers in connect."""
    kind = "badpeer"

    def __init__(self, workdir, name="bad", ip=None, port=None, bound=300):
        self.ip = ip or next_address()
        self.port = port or free_port(self.ip, udp=False)
        self.dir = os.path.join(str(workdir), name)
        os.makedirs(self.dir, exist_ok=True)
        self.bound = bound
        self.proc = None
        self.out_path = os.path.join(self.dir, "events.jsonl")

    def peer_address(self):
        return "%s:%d" % (self.ip, self.port)

    def start(self, torrent, data_path, corrupt=(), connect=(),
              timeout=None, verbose=False, extra=()):
        argv = [SYSTEM_PYTHON, "-u", BADPEER, "--torrent", str(torrent),
                "--data", str(data_path), "--listen", self.peer_address(),
                "--timeout", str(timeout or self.bound - 5)] + list(extra)
        if corrupt:
            argv += ["--corrupt", ",".join(str(p) for p in corrupt)]
        else:
            argv.append("--honest")
        for c in connect:
            argv += ["--connect", c]
        if verbose:
            argv.append("--verbose")
        self.proc = Proc(argv, self.bound,
                         os.path.join(self.dir, "stderr.log"),
                         stdout=subprocess.PIPE, name="badpeer", text=True)
        self._start_reader()
        self.wait_event("listening", 10)
        return self


# ---------------------------------------------------------------- torrentd

class Torrentd:
    """A torrentd (tdaemon.Daemon) listening on its own 127.0.0.x:port,
    with the calls the interop tests and the bench need.  The binaries
    come from $TORRENTD_BUILD as for every integration test."""

    def __init__(self, workdir, name="td", ip=None, port=None, config=None):
        self.ip = ip or next_address()
        self.port = port or free_port(self.ip)
        cfg = {"listen": "%s:%d" % (self.ip, self.port)}
        cfg.update(config or {})
        self.daemon = tdaemon.Daemon(workdir, cfg, name=name)
        self.download_dir = self.daemon.download_dir
        self.pid = None

    def peer_address(self):
        return "%s:%d" % (self.ip, self.port)

    def start(self, bound=600):
        """Start it under `timeout -k 5 bound` (tdaemon's prefix), so that
        it is bounded in time like every other peer; pid is torrentd's
        own PID (Daemon.daemon_pid())."""
        self.daemon.start(prefix=("timeout", "-k", "5", str(int(bound))))
        self.pid = self.daemon.daemon_pid()
        return self

    def call(self, method, **params):
        return self.daemon.call(method, **params)

    def add(self, torrent_path, download_dir=None, paused=False):
        """Add a .torrent; returns its info-hash (hex)."""
        params = {"metainfo": tdaemon.b64(torrent_path)}
        if download_dir:
            params["download_dir"] = download_dir
        if paused:
            params["paused"] = True
        return self.call("torrent.add", **params)["info_hash"]

    def add_peer(self, torrent, address):
        """Dial a peer for a torrent (torrent.add_peer)."""
        return self.call("torrent.add_peer", torrent=torrent,
                         address=address)

    def get(self, torrent):
        return self.call("torrent.get", torrent=torrent)

    def wait_state(self, torrent, states, timeout):
        def ok():
            t = self.get(torrent)
            if t["state"] == "error":
                raise AssertionError("torrentd: torrent in error: %s"
                                     % t.get("error"))
            return t if t["state"] in states else None
        return wait_until(ok, timeout, 0.1, "torrentd state in %s" %
                          (states,))

    def wait_complete(self, torrent, timeout, interval=0.1):
        """Wait until the torrent's wanted data is all verified."""
        def ok():
            t = self.get(torrent)
            if t["state"] == "error":
                raise AssertionError("torrentd: torrent in error: %s"
                                     % t.get("error"))
            return t if t["progress"] >= 1.0 and \
                t["have_bytes"] == t["size_bytes"] else None
        try:
            return wait_until(ok, timeout, interval, "torrentd to complete")
        except AssertionError as e:
            raise AssertionError("%s; torrent: %s; peers: %s\nlog tail:\n%s"
                                 % (e, self.get(torrent),
                                    self._peers(torrent),
                                    self.log_tail()))

    def log_tail(self, lines=60):
        """The end of torrentd's log without the control socket's
        connect/disconnect lines (the tests' polling makes many)."""
        keep = [l for l in self.daemon.stderr_text().splitlines()
                if "control: client" not in l and "control: " not in l]
        return "\n".join(keep[-lines:])

    def _peers(self, torrent):
        try:
            return self.call("torrent.peers", torrent=torrent)
        except Exception as e:  # diagnostics only
            return repr(e)

    def stop(self, sig=signal.SIGTERM, timeout=tdaemon.STOP_TIMEOUT):
        """Stop it with tdaemon.Daemon.stop(): sig to torrentd's own PID,
        SIGKILL (and a failed test) if it has not exited after timeout
        seconds, a failed test on a sanitizer report in its log.  Returns
        its exit status (None if it was never started)."""
        return self.daemon.stop(sig, timeout)


def slow_swarm(workdir, size=6 << 20, limit=1000 * 1000):
    """A Torrentd seeding a file of size bytes and a Torrentd that has the
    torrent (no peer yet) with a download limit of limit bytes/s, so that
    the download takes size / limit seconds once the seeder is added
    (seed.peer_address()).  Returns (seed, leech, info_hash); the caller
    stops both."""
    from conftest import write_file
    data = write_file(os.path.join(str(workdir), "src", "slow.bin"), size,
                      seed=5)
    tor = make_torrent(data, os.path.join(str(workdir), "slow.torrent"),
                       piece_pow=18)
    seed = Torrentd(workdir, "seed").start(bound=300)
    leech = None
    try:
        shutil.copy(data, seed.download_dir)
        h = seed.add(tor)
        seed.wait_state(h, ["seeding"], 60)
        leech = Torrentd(workdir, "leech").start(bound=300)
        assert leech.add(tor) == h
        leech.call("torrent.set", torrent=h, download_limit=limit)
    except BaseException:
        if leech:
            leech.stop()
        seed.stop()
        raise
    return seed, leech, h
