#!/usr/bin/env bash
# How long does a woken thread wait for a CPU on this machine? A yardstick for the
# latency point of docs/performance.md (100 subscribers at 2000 reports/s, p99 <= 1 ms):
# every delivery there needs at least two wake-ups in series (the server's worker, then
# the harness's reader), so their latency is a floor under the end-to-end figure.
#
#   apt-get install -y rt-tests linux-perf      # cyclictest, perf
#   (cd ../shared/tools/fanout-bench && cargo build --release)
#   scripts/sched-latency.sh                    # ~50 s (SECS=10 per cyclictest run)
#
# It prints, one line each:
#   - `perf bench sched pipe` round trips, both ends on one CPU and free to use both
#     (a round trip is two wake-ups);
#   - cyclictest's wake-up latency percentiles (two threads, 1 ms timer), machine idle;
#   - the same while fanout-bench drives monitor-server at the latency point, once with
#     the kernel's default time slice and once with a 100 us slice (scripts/with-slice.py;
#     Linux 6.12 or later), with the benchmark's own p50/p99 from that run.
set -euo pipefail
. "$(dirname "$0")/common.sh"
PORT=${PORT:-19710}
SECS=${SECS:-10}
OUT=${OUT:-$HERE/target/sched-latency}

for tool in cyclictest perf taskset; do
  command -v "$tool" >/dev/null || { echo "$tool missing: apt-get install -y rt-tests linux-perf util-linux" >&2; exit 1; }
done
cargo build --release -q -p monitor-server --bin monitor-server
mkdir -p "$OUT"

# Shows a tool's own error output when it fails, instead of ending silently.
fail() { echo "$1 failed; its output:" >&2; cat "$2" >&2; exit 1; }

pipe() { # label, command prefix
  local us
  $2 perf bench sched pipe -l 50000 >"$OUT/pipe.log" 2>&1 || fail "perf bench sched pipe" "$OUT/pipe.log"
  us=$(awk '/usecs\/op/ {print $1}' "$OUT/pipe.log")
  echo "perf bench sched pipe, $1: $us µs per round trip"
}
pipe "one CPU" "taskset -c 0"
pipe "both CPUs" ""

cyclic() { # label, histogram file, command prefix
  local loops=$((SECS * 1000))
  ${3:-} cyclictest -m -t2 -i1000 -l"$loops" -q -h 20000 --histfile="$2" >"$OUT/cyclictest.log" 2>&1 ||
    fail cyclictest "$OUT/cyclictest.log"
  python3 - "$1" "$2" <<'EOF'
import sys
label, path = sys.argv[1], sys.argv[2]
lines = open(path).read().splitlines()
rows = [l.split() for l in lines if l[:1].isdigit()]
counts = [sum(int(c) for c in r[1:]) for r in rows]
# Wake-ups over the histogram's 20 ms range are counted on an "Overflows" line; they
# belong to the tail, so they count in the total (a percentile beyond the range is
# shown as ">20000").
over = sum(int(c) for l in lines if l.startswith("# Histogram Overflows:")
           for c in l.split(":", 1)[1].split())
total, seen, marks = sum(counts) + over, 0, {}
for r, c in zip(rows, counts):
    seen += c
    for q in (0.5, 0.9, 0.99, 0.999):
        if q not in marks and seen >= q * total:
            marks[q] = int(r[0])
print(f"cyclictest wake-up latency, {label}: n={total} "
      + " ".join(f"p{q * 100:g}={marks.get(q, '>20000')} µs" for q in (0.5, 0.9, 0.99, 0.999)))
EOF
}
cyclic "machine idle" "$OUT/idle.hist"

"$HERE/target/release/monitor-server" --listen "127.0.0.1:$PORT" 2>"$OUT/server.log" &
SERVER=$!
BENCH=
trap 'kill $SERVER $BENCH 2>/dev/null || true' EXIT
wait_port "$PORT"
"$FB" --proto monitor --addr "127.0.0.1:$PORT" --subscribers 100 --rate 2000 \
  --duration $((2 * SECS + 4)) --warmup 1 --broker-pid "$SERVER" >"$OUT/fanout.json" 2>"$OUT/fanout.log" &
BENCH=$!
sleep 3 # connect, settle, warm up
cyclic "during the latency point" "$OUT/busy.hist"
cyclic "during the latency point, 100 µs slice" "$OUT/busy-slice.hist" "$HERE/scripts/with-slice.py 100000"
wait "$BENCH"
python3 - "$OUT/fanout.json" <<'EOF2'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"fanout-bench in the same runs: p50={d['lat_p50_us']:.0f} µs p99={d['lat_p99_us']:.0f} µs "
      f"broker_cpu={d['broker_cpu_pct']}% harness_cpu={d['harness_cpu_pct']}% machine_busy={d['machine_busy_pct']}%")
EOF2
