"""tdaemon — start real torrentd processes for integration tests.

Each Daemon gets its own directory (state, downloads, sockets, config) and
runs the binary from $TORRENTD_BUILD (default build/asan) in the
foreground.  stop() fails the test when the daemon's stderr holds a
sanitizer report.

This module imports nothing of the other test helpers: conftest.py,
peers.py and dhtnodes.py build on it (the sanitizer marks, the paths of
the binaries, children_of(), read_text(), b64()).
"""
import base64
import json
import os
import signal
import socket
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                   "runtime error:", "WARNING: ThreadSanitizer",
                   "ERROR: ThreadSanitizer")
# The Debian interpreter that has python3-libtorrent.
SYSTEM_PYTHON = "/usr/bin/python3"
# Seconds Daemon.stop() waits for torrentd to exit: its session stop may
# take SESSION_STOP_TIMEOUT (15 s), then LeakSanitizer runs at exit.
STOP_TIMEOUT = 30.0


def build_dir():
    """The directory of the binaries under test: $TORRENTD_BUILD (default
    build/asan), relative to the repository root unless absolute."""
    return os.path.join(ROOT, os.environ.get("TORRENTD_BUILD", "build/asan"))


def binary(name):
    return os.path.join(build_dir(), name)


def assert_no_sanitizer(text, what="process"):
    """Fail (AssertionError) when text holds a sanitizer report."""
    for mark in SANITIZER_MARKS:
        assert mark not in text, "%s: sanitizer report:\n%s" % (what, text)


def read_text(path):
    """The text of a log file (undecodable bytes replaced); "" when it
    does not exist (yet)."""
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def b64(path):
    """The bytes of a file in base64, as torrent.add takes a .torrent
    ("metainfo")."""
    with open(path, "rb") as f:
        return base64.b64encode(f.read()).decode()


def children_of(pid):
    """The PIDs whose parent is pid, from /proc/*/stat (not every kernel
    has /proc/PID/task/TID/children)."""
    kids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                s = f.read()
        except OSError:
            continue
        if int(s[s.rindex(")") + 2:].split()[1]) == pid:
            kids.append(int(d))
    return sorted(kids)


def _exe(pid):
    """The program pid runs (a binary replaced by a rebuild since it
    started counts as itself), or None."""
    try:
        return os.readlink("/proc/%d/exe" % pid).removesuffix(" (deleted)")
    except OSError:
        return None


class RpcError(Exception):
    def __init__(self, error):
        super().__init__("%s: %s" % (error.get("code"), error.get("message")))
        self.code = error.get("code")
        self.message = error.get("message")
        self.data = error.get("data")


class Connection:
    """One JSON-RPC connection: line-delimited JSON both ways."""

    def __init__(self, path, timeout=10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.rbuf = b""
        self.next_id = 1

    def close(self):
        self.sock.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, obj):
        self.send_raw(json.dumps(obj).encode() + b"\n")

    def recv(self):
        """The next JSON document the daemon sends (response or event)."""
        while b"\n" not in self.rbuf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("daemon closed the connection")
            self.rbuf += chunk
        line, self.rbuf = self.rbuf.split(b"\n", 1)
        return json.loads(line)

    def request(self, method, params=None):
        """Send a request and return the whole response object, skipping
        (and keeping) event notifications that arrive first."""
        rid = self.next_id
        self.next_id += 1
        msg = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)
        self.events = getattr(self, "events", [])
        while True:
            doc = self.recv()
            if isinstance(doc, dict) and doc.get("id") == rid:
                return doc
            self.events.append(doc)

    def call(self, method, **params):
        doc = self.request(method, params if params else None)
        if "error" in doc:
            raise RpcError(doc["error"])
        return doc["result"]


class NotifyListener:
    """A NOTIFY_SOCKET for sd_notify(3): an AF_UNIX datagram socket the
    test binds.  Pass env() to Daemon.start(); recv() returns the next
    message as a dict, wait_for(key) skips to the message with that key."""

    def __init__(self, workdir, name="notify.sock"):
        self.path = os.path.join(str(workdir), name)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []

    def env(self, **extra):
        e = {"NOTIFY_SOCKET": self.path}
        e.update({k: str(v) for k, v in extra.items()})
        return e

    def recv(self, timeout=10.0):
        """The next message as {"READY": "1", "STATUS": ...}, or None."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return None
        msg = {}
        for line in data.decode(errors="replace").split("\n"):
            if "=" in line:
                k, v = line.split("=", 1)
                msg[k] = v
        self.messages.append(msg)
        return msg

    def wait_for(self, key, timeout=20.0):
        """The first message from now on that has key; fails after
        timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            msg = self.recv(max(left, 0.01)) if left > 0 else None
            if msg is None:
                raise AssertionError("no %s= on the notify socket within "
                                     "%.0f s; got %r" % (key, timeout,
                                                         self.messages))
            if key in msg:
                return msg

    def close(self):
        self.sock.close()


class Daemon:
    def __init__(self, workdir, config=None, name="td"):
        self.dir = os.path.join(str(workdir), name)
        os.makedirs(self.dir, exist_ok=True)
        self.state_dir = os.path.join(self.dir, "state")
        self.download_dir = os.path.join(self.dir, "downloads")
        self.control_socket = os.path.join(self.dir, "control.sock")
        self.status_socket = os.path.join(self.dir, "status.sock")
        self.conf_path = os.path.join(self.dir, "torrentd.conf")
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        self.config = {
            "state_dir": self.state_dir,
            "download_dir": self.download_dir,
            "control_socket": self.control_socket,
            "status_socket": self.status_socket,
            "listen": "127.0.0.1:0",
            "dht": "off",
            "dht_bootstrap": "",
            "log_level": "debug",
        }
        self.config.update(config or {})
        self.proc = None

    def write_config(self):
        with open(self.conf_path, "w") as f:
            f.write("# written by tests/integration/tdaemon.py\n")
            for k, v in self.config.items():
                f.write("%s = %s\n" % (k, v))

    def start(self, args=(), env=None, wait=True, timeout=20.0, prefix=()):
        """Start torrentd (after the command prefix, e.g.
        systemd-socket-activate and its options, when given)."""
        os.makedirs(self.state_dir, exist_ok=True)
        os.makedirs(self.download_dir, exist_ok=True)
        self.write_config()
        e = dict(os.environ)
        e.pop("NOTIFY_SOCKET", None)
        e.pop("LISTEN_FDS", None)
        e.pop("JOURNAL_STREAM", None)
        if env:
            e.update(env)
        self.stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(
            [*prefix, binary("torrentd"), "--config", self.conf_path,
             "--foreground", *args],
            stdin=subprocess.DEVNULL, stdout=self.stderr, stderr=self.stderr,
            env=e)
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("torrentd exited with %s:\n%s" % (
                    self.proc.returncode, self.stderr_text()))
            try:
                c = Connection(self.control_socket, timeout=2.0)
                c.call("daemon.version")
                c.close()
                return
            except (OSError, EOFError, RpcError):
                time.sleep(0.05)
        raise AssertionError("torrentd did not answer within %.0f s:\n%s"
                             % (timeout, self.stderr_text()))

    def connect(self, status=False, timeout=10.0):
        return Connection(self.status_socket if status
                          else self.control_socket, timeout)

    def call(self, method, **params):
        c = self.connect()
        try:
            return c.call(method, **params)
        finally:
            c.close()

    def stderr_text(self):
        return read_text(self.stderr_path)

    def check_sanitizers(self):
        assert_no_sanitizer(self.stderr_text(), "torrentd")

    def daemon_pid(self):
        """The pid of torrentd itself.  That is self.proc when there is no
        prefix or when the prefix execs torrentd (systemd-socket-activate,
        ip netns exec); under one that forks it (`timeout`) it is found
        down the chain of first children, by the binary it runs (for up
        to 1 s while it starts; then the child of self.proc, if any, is
        taken).  Signals go there, never to `timeout`: that one passes a
        signal on to its whole process group as well, so torrentd would
        get it twice and take the second SIGTERM as "exit at once"."""
        want = os.path.realpath(binary("torrentd"))
        for _ in range(50):
            chain = [self.proc.pid]
            while len(chain) < 8:
                if _exe(chain[-1]) == want:
                    return chain[-1]
                kids = children_of(chain[-1])
                if not kids:
                    break
                chain.append(kids[0])
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        return chain[1] if len(chain) > 1 else chain[0]

    def _kill(self):
        """SIGKILL torrentd and its wrapper, by PID, and reap the
        wrapper."""
        for pid in {self.daemon_pid(), self.proc.pid}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()

    def wait_exit(self, timeout=STOP_TIMEOUT, what="exit", check=True):
        """Wait up to timeout seconds for torrentd to exit (after a signal,
        or by itself) and return its exit status as self.proc gives it
        (a `timeout` prefix passes torrentd's on).  If it is still running
        then, SIGKILL it (and its wrapper) and fail with "torrentd did not
        <what> within ...s" and its log.  When check, fail on a sanitizer
        report in its log."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._kill()
            self.stderr.close()
            raise AssertionError("torrentd did not %s within %.0f s:\n%s"
                                 % (what, timeout, self.stderr_text()))
        self.stderr.close()
        if check:
            self.check_sanitizers()
        return rc

    def stop(self, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
        """Stop torrentd: send sig to torrentd's own PID (daemon_pid()) and
        wait_exit(timeout); returns its exit status (None if it was never
        started).  A torrentd still running after timeout seconds is
        SIGKILLed and fails the test; so does a sanitizer report in its
        log, unless sig is SIGKILL.  If it had exited already, its status
        is returned, and its log checked if nothing did so yet (stop()
        or wait_exit())."""
        if self.proc is None:
            return None
        if self.proc.poll() is not None:
            if not self.stderr.closed:
                self.stderr.close()
                self.check_sanitizers()
            return self.proc.returncode
        try:
            os.kill(self.daemon_pid(), sig)
        except ProcessLookupError:
            pass
        return self.wait_exit(timeout, "stop after signal %d" % sig,
                              check=sig != signal.SIGKILL)

    def kill9(self):
        return self.stop(signal.SIGKILL)
