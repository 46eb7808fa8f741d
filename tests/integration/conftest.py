"""Shared fixtures and helpers of the integration tests.

The binaries come from $TORRENTD_BUILD (default build/asan, relative to the
repository root unless absolute): `make check` builds them with
AddressSanitizer and UBSan, so every run of a binary is also a sanitizer
test; run_ctl() and assert_no_sanitizer() fail the test on any report.

Fixtures:
  build_dir     the directory of the binaries under test
  torrentd      the path of torrentd (fails if it is not built)
  torrentctl    the path of torrentctl (fails if it is not built)
  ctl           a function running torrentctl: ctl(*args, ...) -> result
  mktorrent     the path of Debian's mktorrent (fails if absent)
  workdir       a fresh directory for the test (pytest's tmp_path)
  started       a list for the peers a test starts: all stopped at the end
  nodes         the same for torrentd (peers.Torrentd) that must also exit 0
Helpers (import from conftest):
  bdecode(bytes), bencode(obj), info_hash(path_or_bytes), run(argv, ...),
  assert_no_sanitizer(text), write_file(path, size, seed), stop_each(list),
  SYSTEM_PYTHON

Several helper modules import this one (dhtnodes.py at its top): import
them here only inside functions.
"""
import hashlib
import os
import random
import shutil
import subprocess

import pytest

from tdaemon import (ROOT, SANITIZER_MARKS, SYSTEM_PYTHON,  # noqa: F401
                     assert_no_sanitizer)
import tdaemon

# Sanitizer defaults when pytest is run by hand (make check sets them).
os.environ.setdefault("ASAN_OPTIONS",
                      "abort_on_error=0:detect_leaks=1:strict_string_checks=1")
os.environ.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "tsan: also run under ThreadSanitizer (make check-tsan)")
    config.addinivalue_line(
        "markers", "slow: takes more than a few seconds")


# --------------------------------------------------------------- bencode

class BencodeError(ValueError):
    pass


def bdecode(data):
    """Decode bencoded bytes: dict keys and strings stay bytes."""
    def dec(i):
        if i >= len(data):
            raise BencodeError("truncated")
        c = data[i:i + 1]
        if c == b"i":
            j = data.index(b"e", i)
            return int(data[i + 1:j]), j + 1
        if c == b"l":
            i += 1
            out = []
            while data[i:i + 1] != b"e":
                v, i = dec(i)
                out.append(v)
            return out, i + 1
        if c == b"d":
            i += 1
            out = {}
            while data[i:i + 1] != b"e":
                k, i = dec(i)
                v, i = dec(i)
                out[k] = v
            return out, i + 1
        if c.isdigit():
            j = data.index(b":", i)
            n = int(data[i:j])
            if j + 1 + n > len(data):
                raise BencodeError("string past the end")
            return data[j + 1:j + 1 + n], j + 1 + n
        raise BencodeError("bad byte %r at %d" % (c, i))

    value, end = dec(0)
    if end != len(data):
        raise BencodeError("trailing bytes")
    return value


def bencode(obj):
    """Encode ints, bytes, str, lists and dicts (keys sorted)."""
    if isinstance(obj, bool):
        obj = int(obj)
    if isinstance(obj, int):
        return b"i%de" % obj
    if isinstance(obj, str):
        obj = obj.encode()
    if isinstance(obj, bytes):
        return b"%d:%s" % (len(obj), obj)
    if isinstance(obj, list):
        return b"l" + b"".join(bencode(x) for x in obj) + b"e"
    if isinstance(obj, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v)
                       for k, v in obj.items())
        return b"d" + b"".join(bencode(k) + bencode(v)
                               for k, v in items) + b"e"
    raise TypeError(type(obj))


def info_hash(src):
    """The v1 info-hash (hex) of a .torrent file or its bytes: SHA-1 over
    the info dictionary re-encoded (equal to its raw bytes when the file
    is canonical, which tests check separately where it matters)."""
    data = src if isinstance(src, bytes) else open(src, "rb").read()
    return hashlib.sha1(bencode(bdecode(data)[b"info"])).hexdigest()


# ----------------------------------------------------------- processes

def run(argv, input=None, timeout=60, env=None, cwd=None):
    """Run argv; return subprocess.CompletedProcess with text output
    (undecodable bytes escaped)."""
    e = dict(os.environ)
    e.pop("NO_COLOR", None)
    if env:
        e.update(env)
    return subprocess.run(argv, input=input, capture_output=True,
                          timeout=timeout, env=e, cwd=cwd,
                          encoding="utf-8", errors="backslashreplace")


def write_file(path, size, seed=1):
    """A file of size pseudo-random bytes (deterministic per seed)."""
    rng = random.Random(seed)
    os.makedirs(os.path.dirname(str(path)) or ".", exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(rng.randbytes(n))
            left -= n
    return path


def stop_each(things):
    """Stop each of things (anything with stop(): peers.Torrentd,
    tdaemon.Daemon, peers.Libtorrent, ...) in reverse order, every one
    even when an earlier stop() failed; then raise the first
    AssertionError a stop() raised (a sanitizer report in torrentd's log,
    a torrentd that would not stop).  Returns [(thing, exit status)] in
    the order stopped."""
    done, errors = [], []
    for p in reversed(things):
        try:
            done.append((p, p.stop()))
        except AssertionError as e:
            errors.append(e)
    if errors:
        raise errors[0]
    return done


# ------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def build_dir():
    return tdaemon.build_dir()


def _built(build_dir, name):
    path = os.path.join(build_dir, name)
    if not os.access(path, os.X_OK):
        pytest.fail("%s is not built (make %s)" % (path, path))
    return path


@pytest.fixture(scope="session")
def torrentd(build_dir):
    return _built(build_dir, "torrentd")


@pytest.fixture(scope="session")
def torrentctl(build_dir):
    return _built(build_dir, "torrentctl")


@pytest.fixture
def ctl(torrentctl):
    """ctl(*args, input=None, env=None, cwd=None, rc=None) runs torrentctl;
    fails the test on a sanitizer report, and when rc is given, on another
    exit status."""
    def _run(*args, input=None, env=None, cwd=None, rc=None, timeout=60):
        r = run([torrentctl] + [str(a) for a in args], input=input, env=env,
                cwd=cwd, timeout=timeout)
        assert_no_sanitizer(r.stderr, "torrentctl %s" % " ".join(
            str(a) for a in args))
        if rc is not None:
            assert r.returncode == rc, (
                "torrentctl %s: exit %d, expected %d\nstdout: %s\n"
                "stderr: %s" % (" ".join(str(a) for a in args),
                                r.returncode, rc, r.stdout, r.stderr))
        return r
    return _run


@pytest.fixture(scope="session")
def mktorrent():
    path = shutil.which("mktorrent")
    if not path:
        pytest.fail("mktorrent is not installed (scripts/deps test)")
    return path


@pytest.fixture
def workdir(tmp_path):
    return tmp_path


@pytest.fixture
def started():
    """A list to put started peers in (peers.Torrentd, Transmission,
    Libtorrent, BadPeer, Opentracker, ...): at the end of the test all are
    stopped by PID in reverse order (stop_each()), and the first
    AssertionError a stop raised, such as a sanitizer report of a
    torrentd, fails the test.  Exit statuses are not checked
    (transmission may abort on SIGTERM: TESTING.md)."""
    lst = []
    yield lst
    stop_each(lst)


@pytest.fixture
def nodes():
    """A list to put started torrentd in (peers.Torrentd, e.g. the DHT
    nodes of dhtnodes.td_dht()): at the end of the test all are stopped
    as by `started`, and then each must have exited with status 0."""
    lst = []
    yield lst
    bad = [(td.peer_address(), rc) for td, rc in stop_each(lst)
           if rc not in (0, None)]
    assert not bad, "torrentd exit status: %r" % bad
