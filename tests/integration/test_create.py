"""torrentctl create: the same info-hash as Debian's mktorrent, files that
transmission-show and libtorrent accept, options, and refusals."""
import json
import os
import re
import shutil
import subprocess

import pytest

from conftest import (SYSTEM_PYTHON, assert_no_sanitizer, bdecode, bencode,
                      info_hash, run, write_file)

KIB = 1024
MIB = 1024 * 1024


def mk(mktorrent, src, out, *args):
    """mktorrent SRC -o OUT ARGS... (quietly)."""
    r = run([mktorrent, "-o", str(out)] + [str(a) for a in args] + [str(src)])
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def log2(n):
    return n.bit_length() - 1


def make_tree(root):
    """A directory that exercises mktorrent's rules: nested directories,
    hidden and empty files, a symbolic link to a file and to a directory,
    names whose order differs between strcmp and per-component sorting
    ("a-b" < "a/..."), upper case before lower case, UTF-8, a fifo."""
    d = root / "tree"
    write_file(d / "a" / "b" / "c.bin", 70 * KIB + 3, seed=1)
    write_file(d / "a-b", 5 * KIB, seed=2)
    write_file(d / "a" / "z.txt", 1, seed=3)
    write_file(d / "B.dat", 33 * KIB, seed=4)
    write_file(d / ".hidden", 100, seed=5)
    write_file(d / ".dir" / "inside", 17 * KIB + 1, seed=6)
    write_file(d / "\u00e9t\u00e9.txt", 2 * KIB, seed=7)
    write_file(d / "deep" / "1" / "2" / "3" / "4" / "leaf", 40 * KIB, seed=8)
    (d / "empty").write_bytes(b"")
    os.symlink("B.dat", d / "link-to-file")
    os.symlink("a/b", d / "link-to-dir")
    os.mkfifo(d / "fifo")
    os.mkdir(d / "empty-dir")
    return d


def create(ctl, src, out, *args, rc=0):
    return ctl("create", src, "-o", out, *args, rc=rc)


# ------------------------------------------------ same info-hash as mktorrent

@pytest.mark.parametrize("piece", [32 * KIB, 64 * KIB, 256 * KIB, 4 * MIB])
def test_single_file_matches_mktorrent(ctl, mktorrent, workdir, piece):
    src = write_file(workdir / "data.bin", 300 * KIB + 7, seed=piece)
    create(ctl, src, workdir / "ours.torrent", "--piece-size", str(piece))
    mk(mktorrent, src, workdir / "mk.torrent", "-l", log2(piece))
    assert info_hash(workdir / "ours.torrent") == \
        info_hash(workdir / "mk.torrent")
    ours = bdecode((workdir / "ours.torrent").read_bytes())
    theirs = bdecode((workdir / "mk.torrent").read_bytes())
    assert ours[b"info"] == theirs[b"info"]
    assert ours[b"info"][b"piece length"] == piece
    assert ours[b"info"][b"length"] == 300 * KIB + 7


@pytest.mark.parametrize("piece", [32 * KIB, 128 * KIB, 2 * MIB])
def test_directory_matches_mktorrent(ctl, mktorrent, workdir, piece):
    d = make_tree(workdir)
    create(ctl, d, workdir / "ours.torrent", "-l", "%dK" % (piece // KIB))
    mk(mktorrent, d, workdir / "mk.torrent", "-l", log2(piece))
    ours = bdecode((workdir / "ours.torrent").read_bytes())[b"info"]
    theirs = bdecode((workdir / "mk.torrent").read_bytes())[b"info"]
    assert [f[b"path"] for f in ours[b"files"]] == \
        [f[b"path"] for f in theirs[b"files"]]
    assert ours == theirs
    assert info_hash(workdir / "ours.torrent") == \
        info_hash(workdir / "mk.torrent")
    paths = [b"/".join(f[b"path"]) for f in ours[b"files"]]
    assert b".hidden" in paths and b"empty" in paths
    assert b"link-to-dir/c.bin" in paths and b"fifo" not in paths


def test_trailing_slash_and_threads(ctl, mktorrent, workdir):
    d = make_tree(workdir)
    create(ctl, str(d) + "/", workdir / "one.torrent", "-j", "1", "-l", "32K")
    create(ctl, d, workdir / "many.torrent", "-j", "7", "-l", "32K")
    mk(mktorrent, str(d) + "/", workdir / "mk.torrent", "-l", 15, "-t", 3)
    h = info_hash(workdir / "mk.torrent")
    assert info_hash(workdir / "one.torrent") == h
    assert info_hash(workdir / "many.torrent") == h
    assert bdecode((workdir / "one.torrent").read_bytes())[b"info"][
        b"name"] == b"tree"


def test_flags_match_mktorrent(ctl, mktorrent, workdir):
    """--private, trackers (tiers and commas), web seeds, comment: the same
    info dictionary and the same announce, announce-list, url-list and
    comment as mktorrent."""
    d = make_tree(workdir)
    create(ctl, d, workdir / "ours.torrent", "-l", "32K", "--private",
           "-t", "http://127.0.0.1:1/announce",
           "-t", "udp://127.0.0.1:2,http://127.0.0.1:3/a",
           "-w", "http://127.0.0.1:4/seed/", "-w", "http://127.0.0.1:5/x",
           "--comment", "a comment \u00e9")
    mk(mktorrent, d, workdir / "mk.torrent", "-l", 15, "-p",
       "-a", "http://127.0.0.1:1/announce",
       "-a", "udp://127.0.0.1:2,http://127.0.0.1:3/a",
       "-w", "http://127.0.0.1:4/seed/", "-w", "http://127.0.0.1:5/x",
       "-c", "a comment \u00e9")
    ours = bdecode((workdir / "ours.torrent").read_bytes())
    theirs = bdecode((workdir / "mk.torrent").read_bytes())
    assert ours[b"info"][b"private"] == 1
    assert ours[b"info"] == theirs[b"info"]
    for key in (b"announce", b"announce-list", b"url-list", b"comment"):
        assert ours[key] == theirs[key], key
    assert ours[b"announce-list"] == [
        [b"http://127.0.0.1:1/announce"],
        [b"udp://127.0.0.1:2", b"http://127.0.0.1:3/a"]]
    assert ours[b"created by"].startswith(b"torrentd/")
    assert isinstance(ours[b"creation date"], int)


def test_one_tracker_one_seed_like_mktorrent(ctl, mktorrent, workdir):
    src = write_file(workdir / "f", 20 * KIB)
    create(ctl, src, workdir / "ours.torrent", "-t", "http://127.0.0.1:1/a",
           "-w", "http://127.0.0.1:2/f", "-l", "32K")
    mk(mktorrent, src, workdir / "mk.torrent", "-l", 15,
       "-a", "http://127.0.0.1:1/a", "-w", "http://127.0.0.1:2/f")
    ours = bdecode((workdir / "ours.torrent").read_bytes())
    theirs = bdecode((workdir / "mk.torrent").read_bytes())
    assert b"announce-list" not in ours and b"announce-list" not in theirs
    assert ours[b"url-list"] == theirs[b"url-list"] == b"http://127.0.0.1:2/f"
    assert ours[b"info"] == theirs[b"info"]


def test_source_and_name_match_mktorrent(ctl, mktorrent, workdir):
    src = write_file(workdir / "f.bin", 50 * KIB)
    create(ctl, src, workdir / "ours.torrent", "-l", "32K", "--source",
           "TRACKER", "--name", "other name")
    mk(mktorrent, src, workdir / "mk.torrent", "-l", 15, "-s", "TRACKER",
       "-n", "other name")
    assert info_hash(workdir / "ours.torrent") == \
        info_hash(workdir / "mk.torrent")
    info = bdecode((workdir / "ours.torrent").read_bytes())[b"info"]
    assert info[b"source"] == b"TRACKER" and info[b"name"] == b"other name"


def test_large_pieces_across_files(ctl, mktorrent, workdir):
    """Pieces larger than a read chunk, spanning several files."""
    d = workdir / "big"
    for i, size in enumerate([3 * MIB + 5, 1, 0, 2 * MIB - 1, 700 * KIB]):
        write_file(d / ("f%d" % i), size, seed=i)
    create(ctl, d, workdir / "ours.torrent", "-l", "2M", "-j", "3")
    mk(mktorrent, d, workdir / "mk.torrent", "-l", 21)
    assert info_hash(workdir / "ours.torrent") == \
        info_hash(workdir / "mk.torrent")


@pytest.mark.tsan
def test_many_small_pieces_many_threads(ctl, mktorrent, workdir):
    src = write_file(workdir / "f", 5 * MIB + 123)
    create(ctl, src, workdir / "ours.torrent", "-l", "32K", "-j", "8")
    mk(mktorrent, src, workdir / "mk.torrent", "-l", 15, "-t", 2)
    assert info_hash(workdir / "ours.torrent") == \
        info_hash(workdir / "mk.torrent")


# ----------------------------------------------------- other clients accept

def test_transmission_show_accepts(ctl, workdir):
    if not shutil.which("transmission-show"):
        pytest.fail("transmission-show is not installed")
    d = make_tree(workdir)
    out = workdir / "t.torrent"
    create(ctl, d, out, "--private", "-t", "http://127.0.0.1:1/announce",
           "-w", "http://127.0.0.1:2/")
    r = run(["transmission-show", str(out)])
    assert r.returncode == 0, r.stderr
    m = re.search(r"^\s*Hash: ([0-9a-f]{40})$", r.stdout, re.M)
    assert m and m.group(1) == info_hash(out)
    assert "Private torrent" in r.stdout
    assert "link-to-dir/c.bin" in r.stdout


LT_CHECK = r"""
import json, sys
import libtorrent as lt
ti = lt.torrent_info(sys.argv[1])
fs = ti.files()
print(json.dumps({
    "info_hash": str(ti.info_hash()),
    "name": ti.name(),
    "piece_length": ti.piece_length(),
    "num_pieces": ti.num_pieces(),
    "total_size": ti.total_size(),
    "private": ti.priv(),
    "files": [[fs.file_path(i), fs.file_size(i)] for i in range(fs.num_files())],
    "trackers": [[t.url, t.tier] for t in ti.trackers()],
    "web_seeds": [w["url"] for w in ti.web_seeds()],
}))
"""


def libtorrent_view(path):
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.fail("no %s" % SYSTEM_PYTHON)
    r = run([SYSTEM_PYTHON, "-c", LT_CHECK, str(path)])
    if "No module named 'libtorrent'" in r.stderr:
        pytest.fail("python3-libtorrent is not installed")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_libtorrent_accepts(ctl, workdir):
    d = make_tree(workdir)
    out = workdir / "t.torrent"
    create(ctl, d, out, "--private", "-l", "32K",
           "-t", "http://127.0.0.1:1/announce",
           "-t", "http://127.0.0.1:2/announce", "-w", "http://127.0.0.1:3/")
    lt = libtorrent_view(out)
    info = bdecode(out.read_bytes())[b"info"]
    assert lt["info_hash"] == info_hash(out)
    assert lt["name"] == "tree"
    assert lt["piece_length"] == 32 * KIB
    assert lt["private"] is True
    assert lt["total_size"] == sum(f[b"length"] for f in info[b"files"])
    assert [p for p, _ in lt["files"]] == [
        "tree/" + b"/".join(f[b"path"]).decode() for f in info[b"files"]]
    assert lt["trackers"] == [["http://127.0.0.1:1/announce", 0],
                              ["http://127.0.0.1:2/announce", 1]]
    assert lt["web_seeds"] == ["http://127.0.0.1:3/"]


# ------------------------------------------------------- automatic piece size

@pytest.mark.parametrize("size,piece", [
    (1 * MIB, 16 * KIB),          # <= 2684355 bytes
    (2684355, 16 * KIB),
    (2684356, 32 * KIB),
    (11 * MIB, 64 * KIB),         # > 10737418
])
def test_automatic_piece_size(ctl, workdir, size, piece):
    src = workdir / "sparse"
    with open(src, "wb") as f:
        f.truncate(size)
    out = workdir / "t.torrent"
    create(ctl, src, out)
    info = bdecode(out.read_bytes())[b"info"]
    assert info[b"piece length"] == piece
    assert len(info[b"pieces"]) == 20 * -(-size // piece)


# ---------------------------------------------------------- outputs and JSON

def test_summary_and_json(ctl, workdir):
    src = write_file(workdir / "f.bin", 40 * KIB)
    r = create(ctl, src, workdir / "a.torrent", "-l", "16K")
    h = info_hash(workdir / "a.torrent")
    assert "info-hash  " + h in r.stdout
    assert "3 x 16 KiB" in r.stdout
    r = create(ctl, src, workdir / "b.torrent", "-l", "16K", "--json")
    j = json.loads(r.stdout)
    assert j["info_hash"] == h and j["name"] == "f.bin"
    assert j["size_bytes"] == 40 * KIB and j["piece_size"] == 16 * KIB
    assert j["piece_count"] == 3 and j["file_count"] == 1
    assert j["private"] is False
    assert j["path"] == str(workdir / "b.torrent")
    # the global option works as well
    r = ctl("--json", "create", src, "-o", workdir / "c.torrent", rc=0)
    assert json.loads(r.stdout)["info_hash"] == h


def test_output_to_stdout(torrentctl, workdir):
    src = write_file(workdir / "f.bin", 40 * KIB)
    r = subprocess.run([torrentctl, "create", str(src), "-o", "-", "-d"],
                       capture_output=True, timeout=60)
    assert_no_sanitizer(r.stderr.decode(errors="replace"))
    assert r.returncode == 0
    t = bdecode(r.stdout)
    assert b"creation date" not in t
    assert t[b"info"][b"name"] == b"f.bin"


def test_default_output_name(ctl, workdir):
    src = write_file(workdir / "data" / "x.iso", 20 * KIB)
    ctl("create", src, cwd=workdir, rc=0)
    assert (workdir / "x.iso.torrent").exists()


def test_reproducible_with_source_date_epoch(ctl, workdir):
    src = write_file(workdir / "f", 20 * KIB)
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    ctl("create", src, "-o", workdir / "a.torrent", env=env, rc=0)
    ctl("create", src, "-o", workdir / "b.torrent", env=env, rc=0)
    a = (workdir / "a.torrent").read_bytes()
    assert a == (workdir / "b.torrent").read_bytes()
    assert bdecode(a)[b"creation date"] == 1700000000
    # canonical: the raw info dictionary is what we hash
    assert b"4:info" + bencode(bdecode(a)[b"info"]) in a


def test_refuses_to_overwrite_unless_forced(ctl, workdir):
    src = write_file(workdir / "f", 20 * KIB)
    out = workdir / "out.torrent"
    out.write_bytes(b"precious")
    r = create(ctl, src, out, rc=1)
    assert "already exists" in r.stderr and "--force" in r.stderr
    assert out.read_bytes() == b"precious"
    create(ctl, src, out, "--force")
    assert bdecode(out.read_bytes())[b"info"][b"name"] == b"f"
    assert sorted(os.listdir(workdir)) == ["f", "out.torrent"]


# --------------------------------------------------------------- refusals

def test_missing_path(ctl, workdir):
    r = create(ctl, workdir / "nope", workdir / "o.torrent", rc=1)
    assert "cannot read" in r.stderr and "No such file" in r.stderr
    assert r.stderr.startswith("torrentctl: ")


def test_empty_directory(ctl, workdir):
    (workdir / "e" / "sub").mkdir(parents=True)
    r = create(ctl, workdir / "e", workdir / "o.torrent", rc=1)
    assert "contains no files" in r.stderr
    assert not (workdir / "o.torrent").exists()


def test_only_empty_files(ctl, workdir):
    (workdir / "e").mkdir()
    (workdir / "e" / "zero").write_bytes(b"")
    r = create(ctl, workdir / "e", workdir / "o.torrent", rc=1)
    assert "empty" in r.stderr


def test_symlink_loop(ctl, workdir):
    d = workdir / "loop"
    write_file(d / "f", 10)
    os.symlink("..", d / "up")
    r = create(ctl, d, workdir / "o.torrent", rc=1)
    assert "loop" in r.stderr


def test_dangling_symlink(ctl, workdir):
    d = workdir / "dang"
    write_file(d / "f", 10)
    os.symlink("missing", d / "bad")
    r = create(ctl, d, workdir / "o.torrent", rc=1)
    assert "bad" in r.stderr and "No such file" in r.stderr


def test_unreadable_file(torrentctl, workdir):
    d = workdir / "d"
    write_file(d / "f", 10)
    os.chmod(d / "f", 0)
    cmd = [torrentctl, "create", str(d), "-o", str(workdir / "o.torrent")]
    if os.geteuid() == 0:
        # root reads everything: drop the capabilities that let it
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] \
            + cmd
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert_no_sanitizer(r.stderr, "torrentctl create (unreadable)")
    assert r.returncode == 1, r.stderr
    assert "Permission denied" in r.stderr
    assert not (workdir / "o.torrent").exists()


@pytest.mark.parametrize("size", ["3000", "8K", "512M", "1G", "abc", "16Q",
                                  "0", "-16K", "24K", ""])
def test_bad_piece_size_is_a_usage_error(ctl, workdir, size):
    src = write_file(workdir / "f", 10)
    r = create(ctl, src, workdir / "o.torrent", "--piece-size", size, rc=2)
    assert "piece size" in r.stderr and "usage:" in r.stderr


@pytest.mark.parametrize("args", [
    [],
    ["a", "b"],
    ["--bogus", "x"],
    ["x", "-j", "0"],
    ["x", "-j", "many"],
    ["x", "-o"],
    ["x", "-t", ""],
])
def test_usage_errors(ctl, args):
    r = ctl("create", *args, rc=2)
    assert "usage: torrentctl create" in r.stderr


def test_help(ctl):
    r = ctl("create", "--help", rc=0)
    assert "--piece-size" in r.stdout
