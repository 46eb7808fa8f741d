"""torrentctl show: human and JSON output field by field, magnet URIs,
hostile files, usage errors."""
import base64
import hashlib
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import (SYSTEM_PYTHON, assert_no_sanitizer, bdecode, bencode,
                      info_hash, run, write_file)

KIB = 1024
MIB = 1024 * 1024
TR1 = "http://127.0.0.1:1/announce"
TR2 = "udp://127.0.0.1:2"
TR3 = "http://127.0.0.1:3/a"
WS1 = "http://127.0.0.1:4/seed/"


@pytest.fixture
def tree_torrent(workdir, mktorrent):
    """A multi-file torrent made by mktorrent (an independent creator)."""
    d = workdir / "tree"
    write_file(d / "a" / "b.bin", 70 * KIB + 3, seed=1)
    write_file(d / "c.txt", 5 * KIB, seed=2)
    write_file(d / "z", 1, seed=3)
    out = workdir / "tree.torrent"
    r = run([mktorrent, "-l", "15", "-p", "-a", TR1, "-a", TR2 + "," + TR3,
             "-w", WS1, "-c", "the comment", "-o", str(out), str(d)])
    assert r.returncode == 0, r.stderr
    return out


def fields(text):
    """'Label:   value' lines of the human output, as a dict."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Z][A-Za-z0-9 -]*):\s+(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


# ------------------------------------------------------------ .torrent files

def test_show_human(ctl, tree_torrent):
    t = bdecode(tree_torrent.read_bytes())
    r = ctl("show", tree_torrent, rc=0)
    f = fields(r.stdout)
    assert f["Name"] == "tree"
    assert f["Info-hash"] == info_hash(tree_torrent)
    total = 70 * KIB + 3 + 5 * KIB + 1
    assert f["Size"] == "%.1f KiB (%d bytes)" % (total / KIB, total)
    assert f["Pieces"] == "3 x 32 KiB"
    assert f["Private"] == "yes"
    assert f["Comment"] == "the comment"
    assert f["Created by"] == "mktorrent 1.1"
    assert f["Created on"].endswith(" UTC")
    assert f["Magnet"].startswith(
        "magnet:?xt=urn:btih:" + info_hash(tree_torrent))
    lines = r.stdout.splitlines()
    i = lines.index("Trackers:")
    assert lines[i + 1].split() == ["tier", "1", TR1]
    assert lines[i + 2].split() == ["tier", "2", TR2]
    assert lines[i + 3].split() == [TR3]
    i = lines.index("Web seeds:")
    assert lines[i + 1].strip() == WS1
    i = lines.index("Files (3):")
    assert lines[i + 1].split() == ["SIZE", "PATH"]
    assert lines[i + 2].split() == ["70.0", "KiB", "tree/a/b.bin"]
    assert lines[i + 3].split() == ["5", "KiB", "tree/c.txt"]
    assert lines[i + 4].split() == ["1", "B", "tree/z"]
    assert t[b"info"][b"private"] == 1
    assert "\x1b" not in r.stdout  # not a terminal: no colour


def test_show_json(ctl, tree_torrent):
    t = bdecode(tree_torrent.read_bytes())
    r = ctl("show", "--json", tree_torrent, rc=0)
    j = json.loads(r.stdout)
    assert r.stdout.count("\n") == 1
    assert j["type"] == "torrent"
    assert j["name"] == "tree"
    assert j["info_hash"] == info_hash(tree_torrent)
    assert j["info_hash_v2"] is None
    files = t[b"info"][b"files"]
    assert j["size_bytes"] == sum(f[b"length"] for f in files)
    assert j["piece_size"] == 32 * KIB
    assert j["piece_count"] == len(t[b"info"][b"pieces"]) // 20 == 3
    assert j["private"] is True
    assert [(f["path"], f["size_bytes"]) for f in j["files"]] == [
        ("tree/" + b"/".join(f[b"path"]).decode(), f[b"length"])
        for f in files]
    assert j["files"][1]["offset"] == 70 * KIB + 3
    assert all(f["attr"] == "" for f in j["files"])
    assert j["trackers"] == [[TR1], [TR2, TR3]]
    assert j["web_seeds"] == [WS1]
    assert j["comment"] == "the comment"
    assert j["created_by"] == "mktorrent 1.1"
    assert j["creation_date"] == t[b"creation date"]
    assert j["magnet"].startswith("magnet:?xt=urn:btih:" + j["info_hash"])
    # the global option gives the same object
    r2 = ctl("--json", "show", tree_torrent, rc=0)
    assert json.loads(r2.stdout) == j


def test_magnet_of_torrent_parses_in_libtorrent(ctl, tree_torrent):
    j = json.loads(ctl("show", "--json", tree_torrent, rc=0).stdout)
    code = ("import sys, libtorrent as lt\n"
            "p = lt.parse_magnet_uri(sys.argv[1])\n"
            "print(str(p.info_hashes.v1), p.name, ' '.join(p.trackers))\n")
    r = run([SYSTEM_PYTHON, "-c", code, j["magnet"]])
    if "No module named 'libtorrent'" in r.stderr:
        pytest.fail("python3-libtorrent is not installed")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [j["info_hash"], "tree", TR1, TR2, TR3]


def test_show_single_file_from_stdin(ctl, torrentctl, workdir):
    src = write_file(workdir / "one.bin", 100 * KIB, seed=9)
    ctl("create", src, "-o", workdir / "one.torrent", "-l", "64K", rc=0)
    data = (workdir / "one.torrent").read_bytes()
    r = subprocess.run([torrentctl, "show", "--json", "-"], input=data,
                       capture_output=True, timeout=60)
    assert_no_sanitizer(r.stderr.decode(errors="replace"))
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    assert j["name"] == "one.bin" and j["size_bytes"] == 100 * KIB
    assert j["info_hash"] == info_hash(data)
    assert j["piece_count"] == 2 and j["files"] == [
        {"path": "one.bin", "size_bytes": 100 * KIB, "offset": 0,
         "attr": ""}]


def test_show_hybrid_torrent_from_libtorrent(ctl, workdir):
    """libtorrent 2.0 makes hybrid (v1 + v2) torrents with pad files."""
    d = workdir / "h"
    write_file(d / "x", 40 * KIB + 1, seed=1)
    write_file(d / "y", 20 * KIB, seed=2)
    out = workdir / "h.torrent"
    code = (
        "import sys, libtorrent as lt\n"
        "fs = lt.file_storage()\n"
        "lt.add_files(fs, sys.argv[1])\n"
        "t = lt.create_torrent(fs, 16384)\n"
        "lt.set_piece_hashes(t, sys.argv[2])\n"
        "open(sys.argv[3], 'wb').write(lt.bencode(t.generate()))\n"
        "ti = lt.torrent_info(sys.argv[3])\n"
        "print(str(ti.info_hashes().v1), str(ti.info_hashes().v2))\n")
    r = run([SYSTEM_PYTHON, "-c", code, str(d), str(workdir), str(out)])
    if "No module named 'libtorrent'" in r.stderr:
        pytest.fail("python3-libtorrent is not installed")
    assert r.returncode == 0, r.stderr
    v1, v2 = r.stdout.split()
    j = json.loads(ctl("show", "--json", out, rc=0).stdout)
    assert j["info_hash"] == v1 and j["info_hash_v2"] == v2
    assert "urn:btmh:1220" + v2 in j["magnet"]
    pads = [f for f in j["files"] if "p" in f["attr"]]
    assert pads and all(f["path"] for f in pads)
    human = ctl("show", out, rc=0).stdout
    assert fields(human)["Info-hash v2"] == v2
    assert "ATTR" in human


def test_control_characters_are_escaped(ctl, workdir):
    info = {"name": "evil\x1b[31mname", "piece length": 16384,
            "pieces": hashlib.sha1(b"x").digest(), "length": 1}
    t = {"info": info, "comment": b"bad\x1b]0;title\x07\x9b\xc2\x9b",
         "announce": "http://127.0.0.1:1/a"}
    p = workdir / "evil.torrent"
    p.write_bytes(bencode(t))
    r = ctl("show", p, rc=0)
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout
    assert "\x9b" not in r.stdout
    comment = fields(r.stdout)["Comment"]
    assert comment.startswith("bad") and "title" in comment
    j = json.loads(ctl("show", "--json", p, rc=0).stdout)
    assert j["comment"].startswith("bad") and "\x1b" not in j["comment"]


# ------------------------------------------------------------------ magnets

HASH = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a"


def test_show_magnet_human(ctl):
    uri = ("magnet:?xt=urn:btih:%s&dn=My+File%%20x&tr=%s&tr=%s&ws=%s"
           % (HASH.upper(), "http%3A%2F%2F127.0.0.1%3A1%2Fannounce", TR2,
              WS1))
    r = ctl("show", uri, rc=0)
    f = fields(r.stdout)
    assert f["Name"] == "My File x"
    assert f["Info-hash"] == HASH
    assert f["Size"].startswith("unknown")
    assert f["Magnet"].startswith("magnet:?xt=urn:btih:" + HASH)
    lines = r.stdout.splitlines()
    i = lines.index("Trackers:")
    assert [lines[i + 1].strip(), lines[i + 2].strip()] == [TR1, TR2]
    assert lines[lines.index("Web seeds:") + 1].strip() == WS1


def test_show_magnet_json(ctl):
    b32 = base64.b32encode(bytes.fromhex(HASH)).decode()
    uri = "magnet:?xt=urn:btih:%s&dn=n&tr=%s&tr=%s&x.pe=127.0.0.1:6881" % (
        b32, TR1, TR2)
    j = json.loads(ctl("show", uri, "--json", rc=0).stdout)
    assert j["type"] == "magnet"
    assert j["name"] == "n"
    assert j["info_hash"] == HASH
    assert j["info_hash_v2"] is None
    assert j["size_bytes"] is None and j["files"] is None
    assert j["trackers"] == [[TR1], [TR2]]
    assert j["peers"] == ["127.0.0.1:6881"]
    assert j["web_seeds"] == []
    assert j["magnet"].startswith("magnet:?xt=urn:btih:" + HASH)


@pytest.mark.parametrize("uri", [
    "magnet:?dn=no-hash",
    "magnet:?xt=urn:btih:1234",
    "magnet:?xt=urn:btih:%s&dn=a&dn=b" % HASH,
    "magnet:nothing",
    "magnet:?xt=urn:btih:%s&tr=%%zz" % HASH,
])
def test_bad_magnet(ctl, uri):
    r = ctl("show", uri, rc=1)
    assert r.stderr.startswith("torrentctl: cannot read magnet URI: ")
    assert r.stdout == ""


# ---------------------------------------------------------- hostile files

def _valid_info():
    return {"name": "x", "piece length": 16384,
            "pieces": hashlib.sha1(b"a").digest(), "length": 10}


def _own_hostile(d):
    """(file name, bytes, expected message part) of malformed torrents."""
    valid = bencode({"info": _valid_info()})
    multi = dict(_valid_info())
    del multi["length"]
    cases = [
        ("empty", b"", "bencode"),
        ("text", b"hello world", "bencode"),
        ("truncated", valid[:len(valid) // 2], "bencode"),
        ("list", b"li1ee", "not a torrent"),
        ("noinfo", bencode({"announce": "x"}), "no info"),
        ("deep", b"l" * 100000 + b"e" * 100000, "bencode"),
        ("bigint", b"d4:infod6:lengthi99999999999999999999999eee",
         "bencode"),
    ]
    bad = dict(_valid_info(), **{"piece length": 3})
    cases.append(("piecelen", bencode({"info": bad}), "piece length"))
    bad = dict(_valid_info(), length=10 * 16384)
    cases.append(("count", bencode({"info": bad}), "piece count"))
    bad = dict(_valid_info(), length=-5)
    cases.append(("neglen", bencode({"info": bad}), "length"))
    bad = dict(multi, files=[{"length": 10, "path": ["..", "etc", "passwd"]}])
    cases.append(("dotdot", bencode({"info": bad}), "unsafe"))
    bad = dict(multi, files=[{"length": 5, "path": ["a"]},
                             {"length": 5, "path": ["a"]}])
    cases.append(("dup", bencode({"info": bad}), "duplicate"))
    bad = dict(multi, files=[{"length": 10, "path": ["/abs"]}])
    cases.append(("slash", bencode({"info": bad}), "path"))
    for name, data, _ in cases:
        (d / (name + ".torrent")).write_bytes(data)
    return [(n + ".torrent", msg) for n, _, msg in cases]


def check_refused(ctl, path, expected):
    r = ctl("show", path, rc=1)
    assert r.stderr.startswith("torrentctl: cannot read '%s': " % path), \
        r.stderr
    assert expected.lower() in r.stderr.lower(), (path, r.stderr)
    assert r.stderr.count("\n") == 1
    assert r.stdout == ""
    # the JSON form refuses the same way
    r = ctl("show", "--json", path, rc=1)
    assert r.stdout == ""


def test_own_hostile_files(ctl, workdir):
    for name, expected in _own_hostile(workdir):
        check_refused(ctl, str(workdir / name), expected)


def test_hostile_corpus(ctl, workdir):
    """tests/integration/make_hostile.py: generate(dir) -> [(file name,
    expected error substring)]."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    make_hostile = pytest.importorskip("make_hostile")
    cases = make_hostile.generate(str(workdir))
    assert cases
    for name, expected in cases:
        path = os.path.join(str(workdir), name)
        check_refused(ctl, path, expected)


def test_too_large(ctl, workdir):
    p = workdir / "huge.torrent"
    with open(p, "wb") as f:
        f.truncate(33 * MIB)
    check_refused(ctl, str(p), "too large")


def test_unreadable_inputs(ctl, workdir):
    r = ctl("show", workdir / "missing.torrent", rc=1)
    assert "No such file or directory" in r.stderr
    r = ctl("show", workdir, rc=1)
    assert "Is a directory" in r.stderr


# ------------------------------------------------------------ usage errors

@pytest.mark.parametrize("args", [
    ["show"],
    ["show", "a", "b"],
    ["show", "--bogus", "x"],
    ["frobnicate"],
    [],
    ["--bogus"],
])
def test_usage_errors(ctl, args):
    r = ctl(*args, rc=2)
    assert "torrentctl" in r.stderr


def test_help_and_version(ctl):
    r = ctl("--help", rc=0)
    assert "create" in r.stdout and "show" in r.stdout
    r = ctl("--version", rc=0)
    assert re.match(r"^torrentctl \d+\.\d+\.\d+", r.stdout)
    r = ctl("show", "--help", rc=0)
    assert "usage: torrentctl show" in r.stdout
    r = ctl("help", "create", rc=0)
    assert "usage: torrentctl create" in r.stdout
