"""tdaemon — start real torrentd processes for integration tests.

Each Daemon gets its own directory (state, downloads, sockets, config) and
runs the binary from $TORRENTD_BUILD (default build/asan) in the
foreground.  stop() fails the test when the daemon's stderr holds a
sanitizer report.
"""
import json
import os
import signal
import socket
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                   "runtime error:", "WARNING: ThreadSanitizer")


def build_dir():
    return os.path.join(ROOT, os.environ.get("TORRENTD_BUILD", "build/asan"))


def binary(name):
    return os.path.join(build_dir(), name)


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
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def check_sanitizers(self):
        text = self.stderr_text()
        for mark in SANITIZER_MARKS:
            assert mark not in text, "sanitizer report:\n" + text

    def daemon_pid(self):
        """The pid of torrentd itself.  Under a prefix that execs it
        (systemd-socket-activate) that is self.proc; under one that forks
        it (timeout) it is that process's child.  Signalling `timeout`
        would also signal its whole process group, so torrentd would get
        the signal twice and take the second as "exit at once"."""
        pid = self.proc.pid
        want = os.path.realpath(binary("torrentd"))
        for _ in range(50):
            try:
                if os.path.realpath("/proc/%d/exe" % pid) == want:
                    return pid
                with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
                    kids = f.read().split()
            except OSError:
                return pid
            if kids:
                return int(kids[0])
            time.sleep(0.02)
        return pid

    def stop(self, sig=signal.SIGTERM, timeout=20.0):
        """Stop the daemon; returns its exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        os.kill(self.daemon_pid(), sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("torrentd did not stop within %.0f s after "
                                 "signal %d:\n%s" % (timeout, sig,
                                                     self.stderr_text()))
        self.stderr.close()
        if sig != signal.SIGKILL:
            self.check_sanitizers()
        return rc

    def kill9(self):
        return self.stop(signal.SIGKILL)
