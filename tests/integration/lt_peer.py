#!/usr/bin/python3
"""lt_peer — one python3-libtorrent session that seeds or leeches one
torrent on a loopback address, for the integration tests and benchmarks.

Run it with Debian's /usr/bin/python3 (the interpreter that has the
libtorrent module); tests start it through peers.Libtorrent.  It is bounded
in time (--timeout), never contacts anything but what it is told to, and
passes every setting to the session's constructor so that it never starts
with libtorrent's defaults (no DHT, LSD, UPnP, NAT-PMP, no DHT bootstrap
routers, no uTP, plaintext outgoing handshakes unless --enc says
otherwise; --enc forced refuses plaintext both ways and allows RC4 only).

Usage:
  lt_peer.py --torrent F.torrent --save DIR --listen 127.0.0.3:PORT
             [--seed] [--seed-mode] [--connect IP:PORT ...]
             [--exit-on-complete] [--linger S] [--timeout S]
             [--interval S] [--enc disabled|enabled|forced]

Output: one JSON object per line on stdout, each with "event" and "t"
(seconds since the start of the process, time.monotonic based):
  {"event":"listening","address":"127.0.0.3:PORT"}
  {"event":"ready","state":"seeding"|"downloading",...}   checked, running
  {"event":"first_byte"}           the first payload byte arrived (polled)
  {"event":"progress","progress":0.42,"state":..,"down":N,"up":N,
   "peers":N,"failed_bytes":N,"hash_fails":N,"rate_down":N,"rate_up":N}
  {"event":"alert","type":"hash_failed","message":"..."}   selected alerts
  {"event":"complete","down":N,...}   all pieces verified (leecher)
  {"event":"flushed"}    after "complete": libtorrent's store buffer is
                         written to the files (read the data after this)
  {"event":"exit","reason":"complete"|"timeout"|"quit"|"signal",...}

Commands, one JSON object per line on stdin (optional; EOF is ignored):
  {"cmd":"connect","peer":"127.0.0.2:6881"}   dial a peer
  {"cmd":"status"}                            print a progress line now
  {"cmd":"quit"}                              stop and exit
Exit status: 0 after "complete" with --exit-on-complete or after quit,
signal or timeout of a seeder; 3 when a leecher times out; 2 on errors.
"""
import argparse
import json
import os
import signal
import sys
import threading
import time

import libtorrent as lt

T0 = time.monotonic()
_out_lock = threading.Lock()


def emit(event, **fields):
    fields = dict(event=event, t=round(time.monotonic() - T0, 4), **fields)
    with _out_lock:
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()


def parse_addr(s):
    host, port = s.rsplit(":", 1)
    return host.strip("[]"), int(port)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--torrent", required=True)
    ap.add_argument("--save", required=True, help="save path (data dir)")
    ap.add_argument("--listen", required=True, help="IP:PORT")
    ap.add_argument("--seed", action="store_true",
                    help="the data is in --save; check it and seed")
    ap.add_argument("--seed-mode", action="store_true",
                    help="seed without checking the data first")
    ap.add_argument("--connect", action="append", default=[],
                    help="IP:PORT to dial once the torrent runs")
    ap.add_argument("--exit-on-complete", action="store_true")
    ap.add_argument("--linger", type=float, default=0.0,
                    help="seconds to stay after completing (then exit)")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--interval", type=float, default=0.5,
                    help="seconds between progress lines (0: none)")
    ap.add_argument("--enc", default="disabled",
                    choices=("disabled", "enabled", "forced"),
                    help="encryption policy: outgoing as said, incoming "
                         "enabled; forced: RC4 only, both ways")
    ap.add_argument("--no-upload", action="store_true",
                    help="a leecher that never uploads (upload_rate_limit=1)")
    ap.add_argument("--dht", action="append", default=[],
                    help="IP:PORT of a loopback DHT node: DHT on, "
                         "bootstrapping from these nodes only")
    a = ap.parse_args()

    ip, port = parse_addr(a.listen)
    if not ip.startswith("127."):
        emit("error", message="refusing a non-loopback address: " + ip)
        return 2
    policy = {"disabled": lt.enc_policy.pe_disabled,
              "enabled": lt.enc_policy.pe_enabled,
              "forced": lt.enc_policy.pe_forced}[a.enc]
    cat = lt.alert.category_t
    settings = {
        "listen_interfaces": "%s:%d" % (ip, port),
        "outgoing_interfaces": ip,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "dht_bootstrap_nodes": "",
        "enable_ip_notifier": False,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "enable_outgoing_tcp": True,
        "enable_incoming_tcp": True,
        "out_enc_policy": int(policy),
        # forced: both ways, and RC4 (not MSE then plaintext) only.
        "in_enc_policy": int(lt.enc_policy.pe_forced if a.enc == "forced"
                             else lt.enc_policy.pe_enabled),
        "allowed_enc_level": int(lt.enc_level.rc4 if a.enc == "forced"
                                 else lt.enc_level.both),
        "allow_multiple_connections_per_ip": True,
        "announce_to_all_tiers": True,
        "announce_to_all_trackers": True,
        "min_reconnect_time": 1,
        "peer_connect_timeout": 5,
        "alert_queue_size": 10000,
        "alert_mask": int(cat.error_notification | cat.status_notification
                          | cat.peer_notification | cat.tracker_notification
                          | cat.storage_notification),
        "user_agent": "lt_peer/libtorrent-2.0",
    }
    if a.no_upload:
        settings["upload_rate_limit"] = 1
    for n in a.dht:
        if not parse_addr(n)[0].startswith("127."):
            emit("error", message="refusing a non-loopback DHT node: " + n)
            return 2
    if a.dht:
        # A loopback DHT (TESTING.md): no public routers, no routing
        # restrictions for nodes sharing a /24, high rate limits.
        settings.update({
            "enable_dht": True,
            "dht_restrict_routing_ips": False,
            "dht_restrict_search_ips": False,
            "dht_block_ratelimit": 10000,
            "dht_upload_rate_limit": 10000000,
            "dht_announce_interval": 5,
        })
    ses = lt.session(settings)
    for n in a.dht:
        ses.add_dht_node(parse_addr(n))

    info = lt.torrent_info(a.torrent)
    atp = lt.add_torrent_params()
    atp.ti = info
    atp.save_path = a.save
    flags = lt.torrent_flags.auto_managed
    atp.flags &= ~flags
    if a.seed_mode:
        atp.flags |= lt.torrent_flags.seed_mode
    h = ses.add_torrent(atp)
    h.resume()

    stop = {"reason": None}

    def on_signal(signum, frame):
        stop["reason"] = "signal"
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    pending = list(a.connect)
    plock = threading.Lock()
    status_now = threading.Event()

    def read_stdin():
        for line in sys.stdin:
            try:
                cmd = json.loads(line)
            except ValueError:
                emit("error", message="bad command line: %r" % line)
                continue
            c = cmd.get("cmd")
            if c == "connect":
                with plock:
                    pending.append(cmd["peer"])
            elif c == "status":
                status_now.set()
            elif c == "quit":
                stop["reason"] = "quit"
            else:
                emit("error", message="unknown command %r" % c)
    threading.Thread(target=read_stdin, daemon=True).start()

    hash_fails = 0
    ready = False
    first_byte = False
    completed = None
    flushed = False
    deadline = T0 + a.timeout
    next_report = 0.0
    interesting = {
        "hash_failed", "peer_ban", "peer_error", "peer_connect",
        "peer_disconnected", "incoming_connection", "tracker_error",
        "tracker_reply", "tracker_warning", "listen_failed",
        "listen_succeeded", "file_error", "torrent_error",
        "torrent_finished", "torrent_checked", "peer_snubbed",
        "performance", "add_torrent",
    }

    def status_fields(st):
        return dict(progress=round(st.progress, 6), state=str(st.state),
                    down=st.total_payload_download,
                    up=st.total_payload_upload,
                    peers=st.num_peers, seeds=st.num_seeds,
                    failed_bytes=st.total_failed_bytes,
                    redundant_bytes=st.total_redundant_bytes,
                    hash_fails=hash_fails,
                    rate_down=st.download_payload_rate,
                    rate_up=st.upload_payload_rate,
                    pieces=st.num_pieces)

    rc = 0
    while True:
        now = time.monotonic()
        if stop["reason"]:
            break
        if now > deadline:
            stop["reason"] = "timeout"
            if not a.seed and completed is None:
                rc = 3
            break
        ses.wait_for_alert(50)
        for al in ses.pop_alerts():
            name = type(al).__name__
            short = name[:-6] if name.endswith("_alert") else name
            if short == "hash_failed":
                hash_fails += 1
            if short == "cache_flushed" and completed is not None \
                    and not flushed:
                flushed = True
                emit("flushed")
            if short == "listen_succeeded":
                emit("listening", address="%s:%d" % (al.address, al.port),
                     socket_type=str(al.socket_type))
            if short in interesting:
                extra = {}
                if hasattr(al, "ip"):
                    try:
                        extra["peer"] = "%s:%d" % tuple(al.ip)
                    except (TypeError, ValueError):
                        pass
                emit("alert", type=short, message=al.message(), **extra)
            if short == "listen_failed":
                emit("error", message="listen failed: " + al.message())
                stop["reason"] = "error"
                rc = 2
        st = h.status()
        if not ready and st.state in (lt.torrent_status.downloading,
                                      lt.torrent_status.seeding,
                                      lt.torrent_status.finished):
            ready = True
            emit("ready", **status_fields(st))
        if ready:
            with plock:
                todo, pending[:] = list(pending), []
            for p in todo:
                try:
                    h.connect_peer(parse_addr(p))
                    emit("connect", peer=p)
                except (RuntimeError, ValueError) as e:
                    emit("error", message="connect_peer %s: %s" % (p, e))
        if not first_byte and st.total_payload_download > 0:
            first_byte = True
            emit("first_byte", down=st.total_payload_download)
        if completed is None and ready and st.is_seeding and not a.seed:
            completed = time.monotonic()
            emit("complete", **status_fields(st))
            # Verified is not written: libtorrent 2.0 may still hold
            # blocks in its store buffer.  Flush, and say when done.
            h.flush_cache()
        if completed is not None and a.exit_on_complete and flushed and \
                time.monotonic() - completed >= a.linger:
            stop["reason"] = "complete"
            break
        if status_now.is_set() or (a.interval > 0 and now >= next_report):
            status_now.clear()
            emit("progress", **status_fields(st))
            next_report = now + a.interval

    st = h.status()
    emit("exit", reason=stop["reason"], **status_fields(st))
    # A quick exit: the session's destructor may wait for trackers.
    sys.stdout.flush()
    os._exit(rc)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # report, then fail
        emit("error", message="%s: %s" % (type(e).__name__, e))
        sys.stdout.flush()
        os._exit(2)
