#!/usr/bin/python3
"""badpeer — a small pure-Python BitTorrent seeder (BEP 3) for tests.

It serves the data of one torrent from real files, and corrupts the data
of chosen pieces (one byte flipped in every block it sends of them), so
that a leecher's hash check must catch them.  With --honest it serves
everything faithfully: a reference seeder to test a leech path without any
other client.

It listens on --listen IP:PORT (loopback only) and/or dials the peers of
--connect IP:PORT.  For every connection: handshake (refuses a wrong
protocol string or info-hash), a full bitfield, unchoke, then it answers
requests (blocks of at most 128 KiB inside the torrent) until the peer
closes, and ignores everything else (have, interested, keep-alive, BEP 10
messages...).  It never downloads.  Its lifetime is bounded (--timeout).

--fast-choked 1,4 speaks the fast extension (BEP 6), never unchokes, sends
ALLOWED_FAST for those pieces, serves requests for them and rejects the
others.

--lack 3,9 leaves those pieces out of its bitfield (it is then no seed,
and a seeding leecher keeps the connection).  --late holds every request
unanswered and answers those of a piece (corrupt if the piece is in
--corrupt) only when the peer announces that piece with HAVE: the copy
of a block that a leecher took from someone else, verified, and still
has a request for (a "snubbed" peer's requests are given to others
without a CANCEL), the worst time for bad data to come.

Usage:
  badpeer.py --torrent F.torrent --data PATH --listen 127.0.0.9:PORT
             [--corrupt 0,3,7 | --honest] [--connect IP:PORT ...]
             [--lack 3,9] [--late] [--fast-choked 1,4]
             [--timeout S] [--verbose]
PATH is the file of a single-file torrent, or the directory that holds a
multi-file torrent's top directory's files (i.e. PATH/<file path...>).

Output: one JSON object per line on stdout:
  {"event":"listening","address":..}
  {"event":"connected","peer":..,"direction":"in"|"out"}
  {"event":"handshake","peer":..,"peer_id":..}
  {"event":"served","peer":..,"piece":N,"begin":B,"length":L,
   "corrupt":bool}      (corrupt blocks always; honest ones with --verbose)
  {"event":"closed","peer":..,"reason":..,"blocks":N,"bytes":N,
   "corrupt_blocks":N,"corrupt_pieces":[...]}
  {"event":"exit","reason":"timeout"|"signal",..totals}
Only the standard library is used.
"""
import argparse
import hashlib
import json
import os
import signal
import socket
import struct
import sys
import threading
import time

PSTR = b"BitTorrent protocol"
MAX_BLOCK = 128 * 1024
MAX_MSG = MAX_BLOCK + 64 * 1024
T0 = time.monotonic()
_lock = threading.Lock()
totals = {"blocks": 0, "bytes": 0, "corrupt_blocks": 0, "connections": 0}


def emit(event, **kw):
    with _lock:
        sys.stdout.write(json.dumps(dict(event=event,
                                         t=round(time.monotonic() - T0, 4),
                                         **kw)) + "\n")
        sys.stdout.flush()


# ----------------------------------------------------------- bencode (min)

def bdecode(data, i=0):
    c = data[i:i + 1]
    if c == b"i":
        j = data.index(b"e", i)
        return int(data[i + 1:j]), j + 1
    if c == b"l":
        i += 1
        out = []
        while data[i:i + 1] != b"e":
            v, i = bdecode(data, i)
            out.append(v)
        return out, i + 1
    if c == b"d":
        i += 1
        out = {}
        start = {}
        while data[i:i + 1] != b"e":
            k, i = bdecode(data, i)
            s = i
            v, i = bdecode(data, i)
            out[k] = v
            start[k] = (s, i)
        out[b"__spans__"] = start
        return out, i + 1
    if c.isdigit():
        j = data.index(b":", i)
        n = int(data[i:j])
        return data[j + 1:j + 1 + n], j + 1 + n
    raise ValueError("bad bencode at %d" % i)


class Torrent:
    """The bits of a v1 .torrent this peer needs, and the data behind it."""

    def __init__(self, torrent_path, data_path):
        raw = open(torrent_path, "rb").read()
        meta, _ = bdecode(raw)
        s, e = meta[b"__spans__"][b"info"]
        self.info_hash = hashlib.sha1(raw[s:e]).digest()
        info = meta[b"info"]
        self.piece_length = info[b"piece length"]
        self.hashes = info[b"pieces"]
        self.num_pieces = len(self.hashes) // 20
        self.files = []   # (path, offset, length)
        if b"files" in info:
            off = 0
            for f in info[b"files"]:
                parts = [p.decode() for p in f[b"path"]]
                path = os.path.join(data_path, *parts)
                if b"p" in f.get(b"attr", b""):
                    path = None   # BEP 47 padding: zeros, never on disk
                self.files.append((path, off, f[b"length"]))
                off += f[b"length"]
            self.length = off
        else:
            self.length = info[b"length"]
            self.files.append((data_path, 0, self.length))
        self._fds = {}
        self._fd_lock = threading.Lock()
        for path, _, length in self.files:
            if path and length and os.path.getsize(path) < length:
                raise SystemExit("badpeer: %s is shorter than the torrent "
                                 "says" % path)

    def piece_size(self, index):
        if index == self.num_pieces - 1:
            return self.length - index * self.piece_length
        return self.piece_length

    def _fd(self, path):
        with self._fd_lock:
            fd = self._fds.get(path)
            if fd is None:
                fd = os.open(path, os.O_RDONLY)
                self._fds[path] = fd
            return fd

    def read(self, offset, length):
        out = []
        for path, foff, flen in self.files:
            if length <= 0:
                break
            if offset >= foff + flen or flen == 0:
                continue
            if offset < foff:
                continue
            n = min(length, foff + flen - offset)
            if path is None:
                out.append(bytes(n))
            else:
                out.append(os.pread(self._fd(path), n, offset - foff))
            offset += n
            length -= n
        return b"".join(out)


# --------------------------------------------------------------- the peer

def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        c = sock.recv(n - len(buf))
        if not c:
            raise EOFError("peer closed")
        buf += c
    return bytes(buf)


class Conn(threading.Thread):
    def __init__(self, sock, peer, direction, torrent, corrupt, verbose,
                 peer_id, lack=frozenset(), late=False, fast_choked=None):
        super().__init__(daemon=True)
        self.fast_choked = fast_choked   # None, or the allowed-fast set
        self.lack = lack
        self.late = late
        self.held = []   # --late: requests not answered yet
        self.sock = sock
        self.peer = peer
        self.direction = direction
        self.t = torrent
        self.corrupt = corrupt
        self.verbose = verbose
        self.peer_id = peer_id
        self.blocks = 0
        self.bytes = 0
        self.corrupt_blocks = 0
        self.corrupt_pieces = set()

    def send_msg(self, mid, payload=b""):
        self.sock.sendall(struct.pack(">IB", 1 + len(payload), mid) + payload)

    def handshake(self):
        reserved = bytes(7) + (b"\x04" if self.fast_choked is not None
                               else b"\x00")
        self.sock.sendall(bytes([len(PSTR)]) + PSTR + reserved +
                          self.t.info_hash + self.peer_id)
        n = recv_exact(self.sock, 1)[0]
        pstr = recv_exact(self.sock, n)
        if pstr != PSTR:
            raise ValueError("wrong protocol string %r" % pstr)
        rest = recv_exact(self.sock, 8 + 20 + 20)
        if rest[8:28] != self.t.info_hash:
            raise ValueError("wrong info-hash %s" % rest[8:28].hex())
        emit("handshake", peer=self.peer,
             peer_id=rest[28:48].decode("latin-1"))

    def bitfield(self):
        n = self.t.num_pieces
        bf = bytearray(b"\xff" * ((n + 7) // 8))
        if n % 8:
            bf[-1] = (0xFF << (8 - n % 8)) & 0xFF
        for i in self.lack:
            if i < n:
                bf[i // 8] &= ~(0x80 >> (i % 8)) & 0xFF
        return bytes(bf)

    def serve(self, index, begin, length):
        if index >= self.t.num_pieces or length <= 0 or \
                length > MAX_BLOCK or begin + length > \
                self.t.piece_size(index):
            raise ValueError("bad request %d/%d/%d" % (index, begin, length))
        data = self.t.read(index * self.t.piece_length + begin, length)
        bad = index in self.corrupt
        if bad:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
            self.corrupt_blocks += 1
            self.corrupt_pieces.add(index)
        self.sock.sendall(struct.pack(">IBII", 9 + len(data), 7, index,
                                      begin) + data)
        self.blocks += 1
        self.bytes += len(data)
        with _lock:
            totals["blocks"] += 1
            totals["bytes"] += len(data)
            totals["corrupt_blocks"] += int(bad)
        if bad or self.verbose:
            emit("served", peer=self.peer, piece=index, begin=begin,
                 length=length, corrupt=bad)

    def run(self):
        reason = "closed by peer"
        try:
            self.sock.settimeout(120)
            self.handshake()
            self.send_msg(5, self.bitfield())
            if self.fast_choked is None:
                self.send_msg(1)  # unchoke
            else:
                for i in sorted(self.fast_choked):
                    self.send_msg(0x11, struct.pack(">I", i))
            while True:
                (n,) = struct.unpack(">I", recv_exact(self.sock, 4))
                if n == 0:
                    continue   # keep-alive
                if n > MAX_MSG:
                    raise ValueError("message of %d bytes" % n)
                msg = recv_exact(self.sock, n)
                mid = msg[0]
                if mid == 6 and n == 13 and self.late:
                    self.held.append(struct.unpack(">III", msg[1:13]))
                    emit("held", peer=self.peer, n=len(self.held))
                elif mid == 6 and n == 13 and self.fast_choked is not None \
                        and struct.unpack(">I", msg[1:5])[0] not in \
                        self.fast_choked:
                    self.send_msg(0x10, msg[1:13])  # reject
                    emit("rejected", peer=self.peer,
                         piece=struct.unpack(">I", msg[1:5])[0])
                elif mid == 6 and n == 13:
                    self.serve(*struct.unpack(">III", msg[1:13]))
                elif mid == 4 and n == 5 and self.late:
                    (piece,) = struct.unpack(">I", msg[1:5])
                    now = [r for r in self.held if r[0] == piece]
                    self.held = [r for r in self.held if r[0] != piece]
                    for r in now:
                        self.serve(*r)
                elif mid == 7:
                    raise ValueError("a seeder was sent a piece")
                # choke, unchoke, interested, not interested, have,
                # bitfield, cancel, port, extended...: nothing to do.
        except (EOFError, ConnectionResetError, BrokenPipeError) as e:
            reason = "closed by peer" if isinstance(e, EOFError) else str(e)
        except (ValueError, OSError) as e:
            reason = "%s: %s" % (type(e).__name__, e)
        finally:
            try:
                self.sock.close()
            except OSError:
                pass
            emit("closed", peer=self.peer, direction=self.direction,
                 reason=reason, blocks=self.blocks, bytes=self.bytes,
                 corrupt_blocks=self.corrupt_blocks,
                 corrupt_pieces=sorted(self.corrupt_pieces))


def parse_addr(s):
    host, port = s.rsplit(":", 1)
    if not host.startswith("127."):
        raise SystemExit("badpeer: loopback addresses only, not %s" % host)
    return host, int(port)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--torrent", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--listen", help="IP:PORT to accept peers on")
    ap.add_argument("--connect", action="append", default=[])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--corrupt", default="",
                   help="comma-separated piece indices to corrupt")
    g.add_argument("--honest", action="store_true")
    ap.add_argument("--lack", default="",
                    help="comma-separated pieces left out of the bitfield")
    ap.add_argument("--fast-choked", default=None,
                    help="BEP 6: choke, allow fast these pieces only")
    ap.add_argument("--late", action="store_true",
                    help="answer requests of a piece only after its HAVE")
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()

    t = Torrent(a.torrent, a.data)
    corrupt = set() if a.honest else {int(x) for x in a.corrupt.split(",")
                                       if x.strip()}
    lack = frozenset(int(x) for x in a.lack.split(",") if x.strip())
    fast_choked = None if a.fast_choked is None else frozenset(
        int(x) for x in a.fast_choked.split(",") if x.strip())
    peer_id = b"-BP0001-" + os.urandom(6).hex().encode()
    stop = threading.Event()
    reason = {"r": "timeout"}

    def on_signal(signum, frame):
        reason["r"] = "signal"
        stop.set()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def start_conn(sock, peer, direction):
        with _lock:
            totals["connections"] += 1
        emit("connected", peer=peer, direction=direction)
        Conn(sock, peer, direction, t, corrupt, a.verbose, peer_id,
             lack, a.late, fast_choked).start()

    srv = None
    if a.listen:
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(parse_addr(a.listen))
        srv.listen(16)
        srv.settimeout(0.2)
        emit("listening", address="%s:%d" % srv.getsockname(),
             info_hash=t.info_hash.hex(), pieces=t.num_pieces,
             corrupt=sorted(corrupt))
    for c in a.connect:
        try:
            src = (a.listen.rsplit(":", 1)[0], 0) if a.listen else None
            s = socket.create_connection(parse_addr(c), 10,
                                         source_address=src)
            start_conn(s, c, "out")
        except OSError as e:
            emit("error", message="connect %s: %s" % (c, e))

    deadline = time.monotonic() + a.timeout
    while not stop.is_set() and time.monotonic() < deadline:
        if srv is None:
            stop.wait(0.2)
            continue
        try:
            s, addr = srv.accept()
        except socket.timeout:
            continue
        except OSError:
            break
        start_conn(s, "%s:%d" % addr, "in")
    emit("exit", reason=reason["r"], **totals)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
