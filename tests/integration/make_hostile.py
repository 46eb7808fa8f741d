#!/usr/bin/env python3
"""Write hostile .torrent files, each with one defect, into a directory.

generate(dirpath) returns a list of (filename, expected_error_substring):
the substring is part of what `torrentctl show FILE` prints when it refuses
the file ("torrentctl: cannot read 'FILE': <meta_strerror>: <detail>"),
taken from common/metainfo.c.

Usage: make_hostile.py DIR    (prints "filename<TAB>substring" lines)
"""

import os
import sys

PIECE = 16384
HASH = b"P" * 20


class Pairs:
    """A dictionary written in the given order, repeats allowed."""

    def __init__(self, *pairs):
        self.pairs = pairs


class Raw:
    """Bytes written as they are."""

    def __init__(self, data):
        self.data = data


def benc(v):
    if isinstance(v, Raw):
        return v.data
    if isinstance(v, bool):
        raise TypeError("bool")
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, list):
        return b"l" + b"".join(benc(x) for x in v) + b"e"
    if isinstance(v, Pairs):
        return b"d" + b"".join(benc(k) + benc(x) for k, x in v.pairs) + b"e"
    if isinstance(v, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, x)
                       for k, x in v.items())
        return b"d" + b"".join(benc(k) + benc(x) for k, x in items) + b"e"
    raise TypeError(type(v))


def torrent(info, **top):
    d = {"announce": "http://127.0.0.1:6969/announce", "info": info}
    d.update(top)
    return benc(d)


def single(**over):
    info = {"name": "file.bin", "length": PIECE, "piece length": PIECE,
            "pieces": HASH}
    info.update(over)
    return info


def multi(files, **over):
    """files: list of (path list, length) or dicts; one piece in total."""
    fl = []
    for f in files:
        if isinstance(f, tuple):
            fl.append({"length": f[1], "path": f[0]})
        else:
            fl.append(f)
    total = sum(f["length"] for f in fl
                if isinstance(f, dict) and isinstance(f.get("length"), int)
                and f["length"] > 0)
    n = max(1, -(-total // PIECE)) if total < (1 << 40) else 1
    info = {"name": "dir", "files": fl, "piece length": PIECE,
            "pieces": HASH * n}
    info.update(over)
    return info


def cases():
    half = PIECE // 2
    two = [(["a"], half), (["b"], half)]
    c = [
        # Paths that would leave the download directory.
        ("traversal_dotdot", torrent(multi([(["..", "..", "etc", "passwd"],
                                             PIECE)])),
         "path component '..' is not allowed"),
        ("traversal_middle", torrent(multi([(["a", "..", "..", "x"], PIECE)])),
         "path component '..' is not allowed"),
        ("dot_component", torrent(multi([([".", "x"], PIECE)])),
         "path component '.' is not allowed"),
        ("absolute_path", torrent(multi([(["/etc/passwd"], PIECE)])),
         "makes an absolute path"),
        ("empty_component", torrent(multi([(["a", "", "b"], PIECE)])),
         "path component 1 is empty"),
        ("nul_in_name", torrent(multi([([b"evil\x00.txt"], PIECE)])),
         "contains a NUL byte"),
        ("slash_in_component", torrent(multi([(["a/../../x"], PIECE)])),
         "contains a path separator"),
        ("backslash_in_component", torrent(multi([(["..\\..\\x"], PIECE)])),
         "contains a path separator"),
        ("name_dotdot", torrent(single(name="..")),
         "name '..' is not allowed"),
        ("name_absolute", torrent(single(name="/etc/passwd")),
         "makes an absolute path"),
        ("name_empty", torrent(single(name="")), "name is empty"),
        ("name_utf8_dotdot", torrent(single(**{"name.utf-8": ".."})),
         "name '..' is not allowed"),
        ("path_utf8_traversal",
         torrent(multi([{"length": PIECE, "path": ["ok"],
                         "path.utf-8": ["..", "x"]}])),
         "path component '..' is not allowed"),
        ("symlink_escape",
         torrent(multi([(["x"], PIECE),
                        {"attr": "l", "path": ["link"],
                         "symlink path": ["..", "..", "etc"]}])),
         "symlink path component '..' is not allowed"),
        # Two files in one place.
        ("duplicate_paths", torrent(multi([(["a"], half), (["a"], half)])),
         "is used twice"),
        ("file_dir_clash", torrent(multi([(["a"], half),
                                          (["a", "b"], half)])),
         "is also a directory of file"),
        ("sanitised_collision",
         torrent(multi([([b"a\x01"], half), ([b"a\x02"], half)])),
         "is used twice"),
        # Pieces.
        ("piece_length_zero", torrent(single(**{"piece length": 0})),
         "piece length 0 is not a power of two"),
        ("piece_length_not_pow2", torrent(single(**{"piece length": 12345})),
         "piece length 12345 is not a power of two"),
        ("piece_length_huge", torrent(single(**{"piece length": 1 << 31})),
         "piece length 2147483648 is outside"),
        ("piece_length_negative",
         torrent(single(**{"piece length": -PIECE})),
         "is not a power of two"),
        ("piece_length_missing",
         torrent({"name": "f", "length": PIECE, "pieces": HASH}),
         "no 'piece length'"),
        ("pieces_not_multiple_20", torrent(single(pieces=b"P" * 19)),
         "not a multiple of 20"),
        ("pieces_missing",
         torrent({"name": "f", "length": PIECE, "piece length": PIECE}),
         "no 'pieces'"),
        ("wrong_piece_count", torrent(single(pieces=HASH * 3)),
         "3 piece hashes for 16384 bytes"),
        # Lengths.
        ("negative_length", torrent(single(length=-1)),
         "length -1 is negative"),
        ("negative_file_length", torrent(multi([(["a"], PIECE),
                                                (["b"], -5)])),
         "file 1: length -5 is negative"),
        ("length_overflow_sum",
         torrent(multi([(["a"], (1 << 63) - 1), (["b"], (1 << 63) - 1)])),
         "sizes add up to more than"),
        ("total_size_zero", torrent(single(length=0, pieces=b"")),
         "total size 0"),
        # Structure.
        ("nesting_depth_bomb",
         b"d4:info" + b"l" * 100000 + b"e" * 100000 + b"e",
         "nested too deeply"),
        ("huge_string_length",
         b"d4:infod4:name99999999999:" + b"x" * 100 + b"ee",
         "string runs past the end"),
        ("truncated", torrent(single())[:-2], "input ends inside a value"),
        ("top_level_list", benc([single()]), "the top level is a list"),
        ("missing_info", benc({"announce": "http://127.0.0.1/a"}),
         "no 'info' key"),
        ("info_not_dict", torrent([single()]),
         "'info' is a list, not a dictionary"),
        ("both_length_and_files",
         torrent(multi(two, length=PIECE)), "both 'length'"),
        ("no_length_no_files",
         torrent({"name": "f", "piece length": PIECE, "pieces": HASH}),
         "neither 'length' nor 'files'"),
        ("empty_files_list", torrent(multi([])), "'files' is empty"),
        ("file_not_dict", torrent(multi([7])), "not a dictionary"),
        ("path_missing", torrent(multi([{"length": PIECE}])),
         "file 0: no 'path'"),
        # Ambiguity.
        ("duplicate_key_in_info",
         benc(Pairs(("info", Pairs(("length", PIECE), ("length", 1 << 40),
                                   ("name", "f"), ("piece length", PIECE),
                                   ("pieces", HASH))))),
         "key 'length' appears twice in the info dictionary"),
        ("duplicate_key_unsorted",
         benc(Pairs(("info", Pairs(("name", "a"), ("length", PIECE),
                                   ("name", "b"), ("piece length", PIECE),
                                   ("pieces", HASH))))),
         "key 'name' appears twice"),
        ("duplicate_info_key",
         benc(Pairs(("info", single()), ("info", single(name="other")))),
         "key 'info' appears twice"),
        # Versions.
        ("v2_only",
         torrent({"name": "f", "piece length": PIECE, "meta version": 2,
                  "file tree": {"f": {"": {"length": PIECE,
                                           "pieces root": b"R" * 32}}}},
                 **{"piece layers": {}}),
         "v2-only torrents are not supported yet"),
        ("hybrid_inconsistent",
         torrent(single(**{"meta version": 2,
                           "file tree": {"file.bin": {"": {
                               "length": PIECE - 1,
                               "pieces root": b"R" * 32}}}})),
         "differs between the v1 file list and the v2 file tree"),
        ("meta_version_3", torrent(single(**{"meta version": 3})),
         "meta version 3 is not supported"),
        # Outside the info dictionary.
        ("announce_not_string", torrent(single(), announce=5),
         "'announce' is an integer"),
        ("url_list_bad", torrent(single(), **{"url-list": {"a": 1}}),
         "'url-list' is a dictionary"),
    ]
    return c


def generate(dirpath):
    """Write every hostile torrent into dirpath (created if missing) and
    return [(filename, expected_error_substring), ...]."""
    os.makedirs(dirpath, exist_ok=True)
    out = []
    for name, data, expect in cases():
        fn = name + ".torrent"
        with open(os.path.join(dirpath, fn), "wb") as f:
            f.write(data)
        out.append((fn, expect))
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_hostile.py DIR")
    for fn, expect in generate(sys.argv[1]):
        print("%s\t%s" % (fn, expect))
