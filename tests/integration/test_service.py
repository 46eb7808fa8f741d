"""torrentd as a service: arguments, configuration errors, sd_notify
(READY, STATUS, WATCHDOG, RELOADING, STOPPING), socket activation, SIGHUP
reload, SIGTERM/SIGINT, the sockets it makes, and the systemd units.

Each test runs real torrentd processes from $TORRENTD_BUILD with its own
directory; nothing leaves loopback (dht = off, no bootstrap nodes).
"""
import base64
import hashlib
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import time

import pytest

from conftest import ROOT, assert_no_sanitizer, bencode, run
from tdaemon import Connection, Daemon, NotifyListener

pytestmark = pytest.mark.tsan

STOP_BOUND = 15.0  # seconds a clean stop may take in these tests


@pytest.fixture
def notify(workdir):
    n = NotifyListener(workdir)
    yield n
    n.close()


def wait_for_text(d, pattern, timeout=10.0):
    """Wait until the daemon's stderr matches pattern; return the match."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(pattern, d.stderr_text())
        if m:
            return m
        time.sleep(0.05)
    raise AssertionError("no %r in the log within %.0f s:\n%s"
                         % (pattern, timeout, d.stderr_text()))


def start_refused(d, args=()):
    """Start d expecting it to refuse: returns (exit status, stderr)."""
    d.start(args=args, wait=False)
    rc = d.wait_exit(20, "refuse to start")
    return rc, d.stderr_text()


def config_keys(torrentd):
    """The keys torrentd --help lists: {key: "live" or "restart"}."""
    r = run([torrentd, "--help"])
    assert r.returncode == 0, r.stderr
    part = r.stdout.split("Keys", 1)[1]
    return {k: "restart" if flag else "live" for k, flag in re.findall(
        r"^  ([a-z_]+) +(\(restart\) )?", part, re.M)}


# --------------------------------------------------------------- arguments

def test_help(torrentd):
    r = run([torrentd, "--help"])
    assert r.returncode == 0
    assert_no_sanitizer(r.stderr)
    assert r.stdout.startswith("Usage: torrentd [--config FILE]")
    for opt in ("--config", "--set", "--foreground", "--help", "--version",
                "--check-config"):
        assert opt in r.stdout
    keys = config_keys(torrentd)
    for key in ("state_dir", "download_dir", "control_socket",
                "status_socket", "listen", "dht", "dht_bootstrap",
                "max_peers", "max_peers_per_torrent", "download_rate_limit",
                "upload_rate_limit", "watch_dir", "on_complete",
                "log_level"):
        assert key in keys
    assert r.stderr == ""


def test_version(torrentd):
    r = run([torrentd, "--version"])
    assert r.returncode == 0
    version = open(os.path.join(ROOT, "VERSION")).read().strip()
    assert r.stdout == "torrentd %s\n" % version
    r = run([torrentd, "-V"])
    assert r.stdout == "torrentd %s\n" % version


def test_usage_errors(torrentd):
    for argv in (["--bogus"], ["extra-argument"], ["--config"],
                 ["--set"]):
        r = run([torrentd, *argv])
        assert r.returncode == 2, argv
        assert "torrentd" in r.stderr
        assert_no_sanitizer(r.stderr)


def test_man_page_lists_every_key(torrentd):
    """torrentd.conf(5) documents every key of the table."""
    page = open(os.path.join(ROOT, "man", "torrentd.conf.5")).read()
    keys = config_keys(torrentd)
    for key, apply in keys.items():
        assert re.search(r"^\.It Ic %s Pq [a-z-]+, %s$" % (key, apply),
                         page, re.M), "torrentd.conf(5): %s (%s)" % (key,
                                                                    apply)
    documented = re.findall(r"^\.It Ic ([a-z_]+) Pq", page, re.M)
    assert sorted(documented) == sorted(keys)


def test_man_pages_lint():
    if not shutil.which("mandoc"):
        pytest.fail("mandoc is not installed (scripts/deps test)")
    for page in ("torrentd.8", "torrentd.conf.5"):
        r = run(["mandoc", "-T", "lint", "-W", "warning",
                 os.path.join(ROOT, "man", page)])
        assert r.returncode == 0, r.stdout + r.stderr


def test_shipped_config_is_valid(torrentd):
    """systemd/torrentd.conf parses (it is never used to run anything
    here: it lists public DHT routers)."""
    conf = os.path.join(ROOT, "systemd", "torrentd.conf")
    r = run([torrentd, "--config", conf, "--check-config"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == "configuration ok\n"


def test_shipped_config_shows_the_defaults(torrentd):
    """Each commented-out "#key = value" line of the shipped file shows the
    built-in default (as torrentd --help prints it without systemd)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("STATE_DIRECTORY", "RUNTIME_DIRECTORY",
                        "XDG_RUNTIME_DIR")}
    out = subprocess.run([torrentd, "--help"], capture_output=True,
                         text=True, env=env, check=True).stdout
    defaults = dict(re.findall(r"^  ([a-z_]+)\n? +.*\n +default: (.*)$",
                               out, re.M))
    assert "max_peers" in defaults, out
    conf = open(os.path.join(ROOT, "systemd", "torrentd.conf")).read()
    shown = re.findall(r"^#([a-z_]+) =(.*)$", conf, re.M)
    assert len(shown) >= 10
    for key, value in shown:
        value = value.strip() or "(empty)"
        assert defaults[key] == value, (key, value, defaults[key])


# ----------------------------------------------------------- configuration

def test_start_and_stop(workdir, torrentd):
    d = Daemon(workdir).start()
    assert d.call("daemon.version") is not None
    # The sockets: control 0660, status 0666.
    st = os.stat(d.control_socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    st = os.stat(d.status_socket)
    assert stat.S_IMODE(st.st_mode) == 0o666
    c = d.connect(status=True)
    c.call("daemon.version")
    c.close()
    t0 = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - t0 < STOP_BOUND
    # Socket files it made are gone.
    assert not os.path.exists(d.control_socket)
    assert not os.path.exists(d.status_socket)
    log = d.stderr_text()
    assert "received SIGTERM, stopping" in log
    # stderr is a file: every line has a "<N>" level prefix.
    for line in log.splitlines():
        assert re.match(r"<[0-7]>", line), line


def test_sigint_stops(workdir, torrentd):
    d = Daemon(workdir).start()
    assert d.stop(signal.SIGINT) == 0
    assert "received SIGINT" in d.stderr_text()


def test_socket_parent_directory_created(workdir, torrentd):
    sub = os.path.join(str(workdir), "run", "deeper")
    d = Daemon(workdir, config={
        "control_socket": os.path.join(sub, "c.sock"),
        "status_socket": os.path.join(sub, "s.sock")})
    d.control_socket = os.path.join(sub, "c.sock")
    d.status_socket = os.path.join(sub, "s.sock")
    d.start()
    assert os.path.isdir(sub)
    assert d.stop() == 0


def test_no_status_socket(workdir, torrentd):
    d = Daemon(workdir, config={"status_socket": ""}).start()
    assert not os.path.exists(d.status_socket)
    assert d.stop() == 0


def test_unknown_key_refused(workdir, torrentd):
    d = Daemon(workdir, config={"bogus_key": "1"})
    rc, text = start_refused(d)
    assert rc == 78
    # tdaemon writes a comment line first, then the keys in order.
    line = list(d.config).index("bogus_key") + 2
    assert "%s:%d: unknown key 'bogus_key'" % (d.conf_path, line) in text
    assert not os.path.exists(d.control_socket)


def test_bad_value_refused(workdir, torrentd):
    cases = {
        "max_peers": ("lots", "not a number"),
        "listen": ("127.0.0.1", "missing :port"),
        "dht": ("maybe", "expected on or off"),
        "state_dir": ("relative/dir", "not an absolute path"),
        "upload_rate_limit": ("5X", "not a number"),
        "log_level": ("chatty", "expected err, warn"),
    }
    for key, (value, why) in cases.items():
        d = Daemon(workdir, config={key: value}, name="td-" + key)
        rc, text = start_refused(d)
        assert rc == 78, text
        line = list(d.config).index(key) + 2
        want = "%s:%d: bad value '%s' for %s: %s" % (d.conf_path, line,
                                                      value, key, why)
        assert want in text, text


def test_duplicate_key_refused(workdir, torrentd):
    d = Daemon(workdir)
    d.write_config()
    with open(d.conf_path, "a") as f:
        f.write("log_level = info\n")
    # Daemon.start() rewrites the file: run by hand.
    r = run([torrentd, "--config", d.conf_path])
    assert r.returncode == 78
    assert re.search(r":\d+: log_level is already set on line \d+",
                     r.stderr), r.stderr


def test_missing_config_file_refused(workdir, torrentd):
    path = os.path.join(str(workdir), "none.conf")
    r = run([torrentd, "--config", path])
    assert r.returncode == 78
    assert "cannot read '%s'" % path in r.stderr
    assert "No such file" in r.stderr


def test_bad_set_refused(workdir, torrentd):
    d = Daemon(workdir)
    rc, text = start_refused(d, args=["--set", "max_peers=0"])
    assert rc == 78
    assert ("--set 'max_peers=0': bad value '0' for max_peers: must be "
            "between 1 and 10000") in text
    d = Daemon(workdir, name="td2")
    rc, text = start_refused(d, args=["--set", "nokey=1"])
    assert rc == 78
    assert "--set 'nokey=1': unknown key 'nokey'" in text
    d = Daemon(workdir, name="td3")
    rc, text = start_refused(d, args=["--set", "max_peers"])
    assert rc == 78
    assert "expected KEY=VALUE" in text


def test_sockets_must_differ(workdir, torrentd):
    d = Daemon(workdir)
    d.config["status_socket"] = d.control_socket
    rc, text = start_refused(d)
    assert rc == 78
    assert "control_socket and status_socket must differ" in text


def test_set_wins_over_file(workdir, torrentd):
    """--set control_socket and log_level win over the file's."""
    d = Daemon(workdir)
    file_socket = d.control_socket
    d.control_socket = os.path.join(d.dir, "from-set.sock")
    d.start(args=["--set", "control_socket=" + d.control_socket,
                  "--set", "log_level=notice"])
    assert not os.path.exists(file_socket)
    d.call("daemon.version")
    assert d.stop() == 0
    # log_level = debug in the file, notice from --set: no info lines.
    log = d.stderr_text()
    assert "<5>" in log
    assert not re.search(r"^<[67]>", log, re.M), log


def test_check_config(workdir, torrentd):
    d = Daemon(workdir)
    d.write_config()
    r = run([torrentd, "--config", d.conf_path, "--check-config"])
    assert r.returncode == 0 and r.stdout == "configuration ok\n"
    assert not os.path.exists(d.control_socket)
    r = run([torrentd, "--config", d.conf_path, "--check-config",
             "--set", "listen=nope"])
    assert r.returncode == 78
    assert "bad value 'nope' for listen" in r.stderr


# ----------------------------------------------------------------- sockets

def test_stale_socket_removed(workdir, torrentd):
    d = Daemon(workdir)
    # A socket file nobody listens on, as a crash leaves it.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(d.control_socket)
    s.close()
    assert os.path.exists(d.control_socket)
    d.start()
    assert "removed stale socket '%s'" % d.control_socket in d.stderr_text()
    assert d.stop() == 0


def test_socket_in_use_refused(workdir, torrentd):
    d = Daemon(workdir).start()
    try:
        d2 = Daemon(workdir, name="td2")
        d2.config["control_socket"] = d.control_socket
        rc, text = start_refused(d2)
        assert rc == 1
        assert "'%s' is in use: is another torrentd running?" % (
            d.control_socket) in text
        # The first one still answers.
        d.call("daemon.version")
    finally:
        assert d.stop() == 0


def test_socket_path_not_a_socket_refused(workdir, torrentd):
    d = Daemon(workdir)
    with open(d.control_socket, "w") as f:
        f.write("precious\n")
    rc, text = start_refused(d)
    assert rc == 1
    assert "exists and is not a socket" in text
    assert open(d.control_socket).read() == "precious\n"


def test_socket_activation(workdir, torrentd):
    """systemd-socket-activate passes "control" and "status" sockets; the
    daemon uses them instead of the paths in its configuration."""
    sa = shutil.which("systemd-socket-activate")
    if not sa:
        pytest.fail("systemd-socket-activate is missing (scripts/deps test)")
    d = Daemon(workdir)
    act_control = os.path.join(d.dir, "act-control.sock")
    act_status = os.path.join(d.dir, "act-status.sock")
    d.start(prefix=[sa, "-l", act_control, "-l", act_status,
                    "--fdname=control:status"], wait=False)
    deadline = time.monotonic() + 10
    while not os.path.exists(act_status) and time.monotonic() < deadline:
        time.sleep(0.05)
    # The first connection starts torrentd, which answers it.
    d.control_socket = act_control
    d.status_socket = act_status
    d.wait_ready()
    c = Connection(act_status)
    c.call("daemon.version")
    c.close()
    log = d.stderr_text()
    assert "using the 'control' socket passed by systemd" in log
    assert "using the 'status' socket passed by systemd" in log
    # The configured paths were not bound.
    assert not os.path.exists(os.path.join(d.dir, "control.sock"))
    assert not os.path.exists(os.path.join(d.dir, "status.sock"))
    assert d.stop() == 0
    # Sockets systemd made are systemd's to remove.
    assert os.path.exists(act_control)


def test_socket_activation_control_only(workdir, torrentd):
    """Only the control socket is passed (unnamed): the status socket is
    bound at its configured path."""
    sa = shutil.which("systemd-socket-activate")
    if not sa:
        pytest.fail("systemd-socket-activate is missing (scripts/deps test)")
    d = Daemon(workdir)
    act_control = os.path.join(d.dir, "act-control.sock")
    d.start(prefix=[sa, "-l", act_control], wait=False)
    deadline = time.monotonic() + 10
    while not os.path.exists(act_control) and time.monotonic() < deadline:
        time.sleep(0.05)
    d.control_socket = act_control
    d.wait_ready()
    assert os.path.exists(d.status_socket)
    assert not os.path.exists(os.path.join(d.dir, "control.sock"))
    assert d.stop() == 0


# ---------------------------------------------------------------- sd_notify

def test_notify_ready_status_stopping(workdir, torrentd, notify):
    d = Daemon(workdir).start(env=notify.env())
    msg = notify.wait_for("READY")
    assert msg["READY"] == "1"
    assert msg.get("STATUS"), msg
    # READY=1 came after the sockets answer: they answer now.
    d.call("daemon.version")
    os.kill(d.proc.pid, signal.SIGTERM)
    msg = notify.wait_for("STOPPING")
    assert msg["STOPPING"] == "1"
    assert d.wait_exit(STOP_BOUND) == 0


def test_notify_extend_timeout(workdir, torrentd, notify):
    """EXTEND_TIMEOUT_USEC= before READY=1 (restoring may be long) and
    after STOPPING=1 (saving may be long)."""
    d = Daemon(workdir).start(env=notify.env(), wait=False)
    msg = notify.wait_for("EXTEND_TIMEOUT_USEC")
    assert int(msg["EXTEND_TIMEOUT_USEC"]) >= 10 * 1000000
    assert not any("READY" in m for m in notify.messages[:-1])
    notify.wait_for("READY")
    d.wait_ready()
    os.kill(d.proc.pid, signal.SIGTERM)
    notify.wait_for("STOPPING")
    msg = notify.wait_for("EXTEND_TIMEOUT_USEC")
    assert int(msg["EXTEND_TIMEOUT_USEC"]) >= 10 * 1000000
    assert d.wait_exit(STOP_BOUND) == 0


def small_torrent(name="service-test"):
    """A one-file .torrent made here, never announced anywhere: returns
    (its bytes, its info-hash in hex)."""
    data = b"torrentd service test\n"
    info = {"name": name, "piece length": 16384, "length": len(data),
            "pieces": hashlib.sha1(data).digest()}
    return bencode({"info": info}), hashlib.sha1(bencode(info)).hexdigest()


def test_status_kept_current(workdir, torrentd, notify):
    """STATUS= follows the session: a torrent added over the control
    socket shows in the next STATUS= line."""
    d = Daemon(workdir).start(env=notify.env())
    msg = notify.wait_for("READY")
    assert msg["STATUS"].startswith("0 torrents"), msg
    torrent, ih = small_torrent()
    r = d.call("torrent.add", metainfo=base64.b64encode(torrent).decode(),
               paused=True)
    assert r["status"] == "added"
    assert r["info_hash"] == ih
    msg = notify.wait_for("STATUS", timeout=10)
    assert msg["STATUS"].startswith("1 torrent"), msg
    assert d.stop() == 0


def test_daemon_shutdown_method(workdir, torrentd, notify):
    """daemon.shutdown over the control socket stops like SIGTERM."""
    d = Daemon(workdir).start(env=notify.env())
    notify.wait_for("READY")
    d.call("daemon.shutdown")
    notify.wait_for("STOPPING")
    assert d.wait_exit(STOP_BOUND) == 0
    assert "shutdown requested over the control socket" in d.stderr_text()


def test_ready_only_when_sockets_answer(workdir, torrentd, notify):
    """When READY=1 arrives the control socket answers at once."""
    d = Daemon(workdir).start(env=notify.env(), wait=False)
    notify.wait_for("READY")
    c = d.connect(timeout=5.0)
    c.call("daemon.version")
    c.close()
    assert d.stop() == 0


def test_watchdog(workdir, torrentd, notify):
    d = Daemon(workdir).start(env=notify.env(WATCHDOG_USEC=200000))
    notify.wait_for("READY")
    t0 = time.monotonic()
    for _ in range(4):
        notify.wait_for("WATCHDOG", timeout=5.0)
    # Every 100 ms: four in well under two seconds.
    assert time.monotonic() - t0 < 2.0
    assert d.stop() == 0


def test_watchdog_for_our_pid(workdir, torrentd, notify):
    """WATCHDOG_PID names torrentd itself: it is honoured.  The pid is
    only known after the start, so a wrapper shell exports it."""
    d = Daemon(workdir)
    d.write_config()
    sh = ("export WATCHDOG_PID=$$; exec %s --config %s --foreground"
          % (torrentd, d.conf_path))
    d.start(prefix=["/bin/sh", "-c", sh], env=notify.env(
        WATCHDOG_USEC=200000))
    notify.wait_for("WATCHDOG", timeout=5.0)
    assert d.stop() == 0


def test_watchdog_other_pid(workdir, torrentd, notify):
    """WATCHDOG_PID names another process: no WATCHDOG=1 from us."""
    d = Daemon(workdir).start(env=notify.env(WATCHDOG_USEC=200000,
                                             WATCHDOG_PID=1))
    notify.wait_for("READY")
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        msg = notify.recv(timeout=0.2)
        assert not msg or "WATCHDOG" not in msg, msg
    assert d.stop() == 0


def test_no_notify_socket(workdir, torrentd):
    """Without NOTIFY_SOCKET nothing is sent and nothing complains."""
    d = Daemon(workdir).start()
    assert d.stop() == 0
    assert "READY" not in d.stderr_text()


# ------------------------------------------------------------------- reload

def test_sighup_reload_report(workdir, torrentd, notify):
    d = Daemon(workdir, config={"max_peers": "10"}).start(env=notify.env())
    notify.wait_for("READY")
    d.config["max_peers"] = "20"            # live
    d.config["listen"] = "127.0.0.1:1"      # needs a restart
    d.write_config()
    os.kill(d.proc.pid, signal.SIGHUP)
    msg = notify.wait_for("RELOADING")
    assert msg["RELOADING"] == "1"
    assert int(msg["MONOTONIC_USEC"]) > 0
    msg = notify.wait_for("READY")
    m = wait_for_text(d, r"configuration reloaded: (.*)")
    report = m.group(1)
    applied = re.search(r"applied: ([^;]*)", report)
    restart = re.search(r"needs restart: ([^;]*)", report)
    assert applied and "max_peers" in applied.group(1), report
    assert restart and "listen" in restart.group(1), report
    assert "listen" not in applied.group(1)
    d.call("daemon.version")

    # The same file again: nothing changes.
    os.kill(d.proc.pid, signal.SIGHUP)
    notify.wait_for("READY")
    wait_for_text(d, r"configuration reloaded: .*(no changes|needs restart)")
    assert d.stop() == 0


def test_sighup_bad_file_keeps_running(workdir, torrentd, notify):
    d = Daemon(workdir).start(env=notify.env())
    notify.wait_for("READY")
    d.config["max_peers"] = "many"
    d.write_config()
    os.kill(d.proc.pid, signal.SIGHUP)
    notify.wait_for("RELOADING")
    msg = notify.wait_for("READY")
    line = list(d.config).index("max_peers") + 2
    wait_for_text(d, re.escape("%s:%d: bad value 'many' for max_peers"
                               % (d.conf_path, line)))
    wait_for_text(d, "reload failed, keeping the running configuration")
    d.call("daemon.version")
    assert d.stop() == 0


def test_sighup_runtime_setting_wins(workdir, torrentd):
    """A key changed at run time (session.set) wins over the file on
    reload, and the report says so."""
    d = Daemon(workdir, config={"upload_rate_limit": "1000"}).start()
    d.call("session.set", upload_rate_limit=5000)
    d.config["upload_rate_limit"] = "2000"
    d.write_config()
    os.kill(d.proc.pid, signal.SIGHUP)
    m = wait_for_text(d, r"configuration reloaded: (.*)")
    assert re.search(r"overridden by run-time settings: [^;]*"
                     r"upload_rate_limit", m.group(1)), m.group(1)
    assert d.stop() == 0


def test_sighup_set_still_wins(workdir, torrentd):
    """On reload --set still wins over the file."""
    d = Daemon(workdir, config={"max_peers": "10"})
    d.start(args=["--set", "max_peers=30"])
    d.config["max_peers"] = "20"
    d.write_config()
    os.kill(d.proc.pid, signal.SIGHUP)
    m = wait_for_text(d, r"configuration reloaded: (.*)")
    assert "max_peers" not in m.group(1), m.group(1)
    assert d.stop() == 0


# ----------------------------------------------------------------- systemd

def test_systemd_units_verify(workdir, torrentd):
    """systemd-analyze verify the units, with ExecStart pointing at the
    built binary (verify wants it to exist)."""
    sa = shutil.which("systemd-analyze")
    if not sa:
        pytest.fail("systemd-analyze is missing (scripts/deps test)")
    units = ["torrentd.service", "torrentd.socket", "torrentd-status.socket"]
    out = os.path.join(str(workdir), "units")
    os.makedirs(out)
    for u in units:
        text = open(os.path.join(ROOT, "systemd", u)).read()
        text = text.replace("/usr/local/bin/torrentd", torrentd)
        with open(os.path.join(out, u), "w") as f:
            f.write(text)
    r = run([sa, "verify", "--man=no"] + [os.path.join(out, u)
                                          for u in units])
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr.strip() == "", r.stderr

    service = open(os.path.join(ROOT, "systemd", "torrentd.service")).read()
    for line in ("Type=notify", "WatchdogSec=", "StateDirectory=torrentd",
                 "RuntimeDirectory=torrentd", "User=torrentd",
                 "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                 "PrivateDevices=yes", "NoNewPrivileges=yes",
                 "CapabilityBoundingSet=\n",
                 "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
                 "SystemCallFilter=@system-service", "ReadWritePaths=",
                 "ExecReload="):
        assert line in service, line
    sock = open(os.path.join(ROOT, "systemd", "torrentd.socket")).read()
    for line in ("ListenStream=/run/torrentd/control.sock",
                 "FileDescriptorName=control", "SocketMode=0660",
                 "SocketGroup=torrentd"):
        assert line in sock, line
    sock = open(os.path.join(ROOT, "systemd",
                             "torrentd-status.socket")).read()
    for line in ("ListenStream=/run/torrentd/status.sock",
                 "FileDescriptorName=status", "SocketMode=0666"):
        assert line in sock, line


def test_systemd_security_exposure(workdir, torrentd):
    """The sandbox stays strong: systemd-analyze security rates the
    service "OK" or better (exposure below 2.0)."""
    sa = shutil.which("systemd-analyze")
    out = os.path.join(str(workdir), "units")
    os.makedirs(out)
    text = open(os.path.join(ROOT, "systemd", "torrentd.service")).read()
    with open(os.path.join(out, "torrentd.service"), "w") as f:
        f.write(text.replace("/usr/local/bin/torrentd", torrentd))
    r = run([sa, "security", "--offline=yes", "--no-pager",
             os.path.join(out, "torrentd.service")])
    m = re.search(r"Overall exposure level for torrentd.service: "
                  r"([0-9.]+)", r.stdout)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) < 2.0, r.stdout


def test_sysusers_tmpfiles(workdir):
    """The sysusers.d and tmpfiles.d files parse."""
    sysusers = os.path.join(ROOT, "systemd", "torrentd.sysusers")
    tmpfiles = os.path.join(ROOT, "systemd", "torrentd.tmpfiles")
    lines = [line for line in open(sysusers)
             if line.strip() and not line.startswith("#")]
    assert lines == ['u torrentd - "torrentd BitTorrent daemon" '
                     '/var/lib/torrentd\n']
    if shutil.which("systemd-sysusers"):
        # --dry-run only prints; --root keeps it away from /etc.
        root = os.path.join(str(workdir), "root")
        os.makedirs(os.path.join(root, "etc"))
        r = run(["systemd-sysusers", "--root", root, "--dry-run",
                 sysusers])
        assert r.returncode == 0, r.stderr
        assert "torrentd" in r.stdout + r.stderr
    for line in open(tmpfiles):
        if line.strip() and not line.startswith("#"):
            fields = line.split()
            assert fields[0] == "d" and fields[1].startswith("/"), line
            assert fields[3] == fields[4] == "torrentd", line


# ------------------------------------------------------------------ journal

def parse_journal_datagram(data):
    """Fields of one journal native-protocol datagram: KEY=VALUE lines, or
    KEY, a 64-bit little-endian length and the bytes for a value with a
    newline."""
    fields = {}
    i = 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            fields[k.decode()] = v.decode(errors="replace")
            i = nl + 1
        else:
            n = int.from_bytes(data[nl + 1:nl + 9], "little")
            fields[line.decode()] = data[nl + 9:nl + 9 + n].decode(
                errors="replace")
            i = nl + 9 + n + 1
    return fields


def test_journald_structured(workdir, torrentd):
    """With $JOURNAL_STREAM naming its stderr, torrentd logs to journald
    with PRIORITY= and SYSLOG_IDENTIFIER=.  journald is faked: a datagram
    socket mounted over /run/systemd/journal in a mount namespace."""
    import threading
    probe = run(["unshare", "-m", "true"])
    if probe.returncode != 0:
        pytest.skip("cannot make a mount namespace here (unshare -m: %s); "
                    "journald logging is not tested" % probe.stderr.strip())
    jdir = os.path.join(str(workdir), "journal")
    os.makedirs(jdir)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(os.path.join(jdir, "socket"))
    sock.settimeout(0.2)
    got = []
    done = threading.Event()

    def drain():
        # Read everything at once: a full journal socket blocks the sender.
        while not done.is_set():
            try:
                got.append(parse_journal_datagram(sock.recv(1 << 20)))
            except socket.timeout:
                pass

    t = threading.Thread(target=drain)
    t.start()
    try:
        d = Daemon(workdir, config={"log_level": "info"})
        os.makedirs(d.dir, exist_ok=True)
        open(d.stderr_path, "ab").close()
        st = os.stat(d.stderr_path)
        script = ('mount --make-rprivate / && mount -t tmpfs tmpfs /run && '
                  'mkdir -p /run/systemd/journal && '
                  'mount --bind "$0" /run/systemd/journal && exec "$@"')
        d.start(prefix=["unshare", "-m", "sh", "-c", script, jdir],
                env={"JOURNAL_STREAM": "%d:%d" % (st.st_dev, st.st_ino)})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
                m.get("MESSAGE", "").startswith("ready:") for m in got):
            time.sleep(0.05)
        # A message about a torrent carries TORRENT=<info-hash>.
        torrent, ih = small_torrent("journal-test")
        d.call("torrent.add", metainfo=base64.b64encode(torrent).decode(),
               paused=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
                m.get("TORRENT") == ih for m in got):
            time.sleep(0.05)
        assert d.stop() == 0
    finally:
        done.set()
        t.join()
        sock.close()
    ready = [m for m in got if m.get("MESSAGE", "").startswith("ready:")]
    assert ready, got
    assert ready[0]["PRIORITY"] == "5"
    assert ready[0]["SYSLOG_IDENTIFIER"] == "torrentd"
    assert any(m.get("MESSAGE") == "received SIGTERM, stopping" for m in got)
    tagged = [m for m in got if m.get("TORRENT") == ih]
    assert tagged, got
    assert "PRIORITY" in tagged[0] and "MESSAGE" in tagged[0]
    # Nothing of it went to stderr.
    assert "ready:" not in d.stderr_text()
