#!/bin/sh
# bench_create — `torrentctl create` against Debian's mktorrent, in the
# same run, with the same number of threads and the same piece size
# (1 MiB), on a 1 GiB file of random bytes that sits in the page cache.
#
# Runs are interleaved (torrentctl, mktorrent, torrentctl, ...) so that
# noise from a shared machine hits both alike, and each run is a session of
# its own (setsid) so that the kernel's autogroup scheduling treats both
# tools alike when other work competes for the CPUs.  Prints each run
# (wall seconds, and CPU seconds when /usr/bin/time exists), the median
# seconds and MB/s (10^6 B/s) of each tool and the ratio.  Fails when the
# two info-hashes differ, or when torrentctl is clearly slower (median more
# than BENCH_SLACK, default 10 %, above mktorrent's).
#
# Environment: TORRENTD_BUILD (build/default), BENCH_DIR (build/bench),
# BENCH_THREADS (online CPUs), BENCH_RUNS (3), BENCH_SIZE_MB (1024).
set -eu
cd "$(dirname "$0")/../.."

BIN=${TORRENTD_BUILD:-build/default}/torrentctl
DIR=${BENCH_DIR:-build/bench}
N=${BENCH_THREADS:-$(nproc)}
RUNS=${BENCH_RUNS:-3}
SIZE_MB=${BENCH_SIZE_MB:-1024}
SLACK=${BENCH_SLACK:-10}

[ -x "$BIN" ] || { echo "bench_create: $BIN is not built" >&2; exit 1; }
command -v mktorrent >/dev/null ||
    { echo "bench_create: mktorrent is not installed" >&2; exit 1; }

mkdir -p "$DIR"
DATA="$DIR/create-data.bin"
TD_OUT="$DIR/create-td.torrent"
MK_OUT="$DIR/create-mk.torrent"
cleanup() { rm -f "$DATA" "$TD_OUT" "$MK_OUT" "$DIR/create-time.txt"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "bench_create: writing $SIZE_MB MiB of random data to $DATA"
head -c $((SIZE_MB * 1024 * 1024)) /dev/urandom >"$DATA"
cat "$DATA" >/dev/null   # into the page cache
cat "$DATA" >/dev/null
BYTES=$(stat -c %s "$DATA")

now_ns() { date +%s%N; }
TIMEF="$DIR/create-time.txt"
if [ -x /usr/bin/time ]; then TIME="/usr/bin/time -o $TIMEF -f %U+%S"; else TIME=; fi

# run_one NAME OUT CMD... : removes OUT, runs CMD, prints "wall cpu"
run_one() {
    name=$1
    rm -f "$2" "$TIMEF"
    shift 2
    t0=$(now_ns)
    setsid -w $TIME "$@" >/dev/null 2>&1 ||
        { echo "bench_create: $name failed" >&2; exit 1; }
    t1=$(now_ns)
    cpu=$(cat "$TIMEF" 2>/dev/null || echo 0+0)
    awk -v a="$t0" -v b="$t1" -v c="$cpu" 'BEGIN {
        split(c, p, "+"); printf "%.3f %.2f\n", (b - a) / 1e9, p[1] + p[2] }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

td_times=
mk_times=
i=1
while [ "$i" -le "$RUNS" ]; do
    td=$(run_one torrentctl "$TD_OUT" "$BIN" create "$DATA" -o "$TD_OUT" \
        -j "$N" --piece-size 1M)
    mk=$(run_one mktorrent "$MK_OUT" mktorrent -t "$N" -l 20 -o "$MK_OUT" \
        "$DATA")
    echo "$td $mk" | awk -v i="$i" '{ printf "run %d: torrentctl %s s (cpu %s s), mktorrent %s s (cpu %s s)\n", i, $1, $2, $3, $4 }'
    td_times="$td_times ${td% *}"
    mk_times="$mk_times ${mk% *}"
    i=$((i + 1))
done

# Same piece size and data: the info-hashes must agree.
h_td=$("$BIN" show --json "$TD_OUT" | sed 's/.*"info_hash":"\([0-9a-f]*\)".*/\1/')
h_mk=$("$BIN" show --json "$MK_OUT" | sed 's/.*"info_hash":"\([0-9a-f]*\)".*/\1/')
if [ "$h_td" != "$h_mk" ]; then
    echo "bench_create: info-hashes differ: $h_td vs $h_mk" >&2
    exit 1
fi

td_med=$(echo "$td_times" | tr ' ' '\n' | grep . | median)
mk_med=$(echo "$mk_times" | tr ' ' '\n' | grep . | median)
awk -v td="$td_med" -v mk="$mk_med" -v bytes="$BYTES" -v n="$N" \
    -v runs="$RUNS" -v slack="$SLACK" 'BEGIN {
    printf "create %d MiB, 1 MiB pieces, %d threads, page cache, median of %d:\n",
        bytes / 1048576, n, runs
    printf "  torrentctl  %.3f s  %7.0f MB/s\n", td, bytes / td / 1e6
    printf "  mktorrent   %.3f s  %7.0f MB/s\n", mk, bytes / mk / 1e6
    printf "  ratio       %.2f (mktorrent time / torrentctl time; > 1: torrentctl faster)\n", mk / td
    if (td > mk * (1 + slack / 100)) {
        printf "bench_create: torrentctl is slower than mktorrent\n"
        exit 1
    }
}'
