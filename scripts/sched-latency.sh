#!/usr/bin/env bash
# How long does a woken thread wait for a CPU on this machine? A yardstick for the
# latency point of docs/performance.md (100 subscribers at 2000 reports/s, p99 <= 1 ms):
# every delivery there needs at least two wake-ups in series (the server's worker, then
# the harness's reader), so their latency is a floor under the end-to-end figure.
#
#   apt-get install -y rt-tests linux-perf      # cyclictest, perf
#   (cd ../shared/tools/fanout-bench && cargo build --release)
#   scripts/sched-latency.sh                    # ~1 min
#
# It prints, one line each:
#   - `perf bench sched pipe` round trips, both ends on one CPU and free to use both
#     (a round trip is two wake-ups);
#   - cyclictest's wake-up latency percentiles (two threads, 1 ms timer), machine idle;
#   - the same while fanout-bench drives monitor-server at the latency point, with the
#     benchmark's own p50/p99 from that run.
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

pipe() { # label, command prefix
  local us
  us=$($2 perf bench sched pipe -l 50000 2>&1 | awk '/usecs\/op/ {print $1}')
  echo "perf bench sched pipe, $1: $us µs per round trip"
}
pipe "one CPU" "taskset -c 0"
pipe "both CPUs" ""

cyclic() { # label, histogram file
  local loops=$((SECS * 1000))
  cyclictest -m -t2 -i1000 -l"$loops" -q -h 20000 --histfile="$2" >/dev/null 2>&1
  python3 - "$1" "$2" <<'EOF'
import sys
label, path = sys.argv[1], sys.argv[2]
rows = [l.split() for l in open(path) if l[0].isdigit()]
counts = [0] * len(rows)
for r_i, r in enumerate(rows):
    counts[r_i] = sum(int(c) for c in r[1:])
total, seen, marks = sum(counts), 0, {}
for r, c in zip(rows, counts):
    seen += c
    for q in (0.5, 0.9, 0.99, 0.999):
        if q not in marks and seen >= q * total:
            marks[q] = int(r[0])
print(f"cyclictest wake-up latency, {label}: n={total} "
      + " ".join(f"p{q * 100:g}={marks[q]} µs" for q in sorted(marks)))
EOF
}
cyclic "machine idle" "$OUT/idle.hist"

"$HERE/target/release/monitor-server" --listen "127.0.0.1:$PORT" 2>"$OUT/server.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
wait_port "$PORT"
"$FB" --proto monitor --addr "127.0.0.1:$PORT" --subscribers 100 --rate 2000 \
  --duration $((SECS + 4)) --warmup 1 --broker-pid "$SERVER" >"$OUT/fanout.json" 2>"$OUT/fanout.log" &
BENCH=$!
sleep 3 # connect, settle, warm up
cyclic "during the latency point" "$OUT/busy.hist"
wait "$BENCH"
python3 - "$OUT/fanout.json" <<'EOF2'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"fanout-bench in the same run: p50={d['lat_p50_us']:.0f} µs p99={d['lat_p99_us']:.0f} µs "
      f"broker_cpu={d['broker_cpu_pct']}% harness_cpu={d['harness_cpu_pct']}% machine_busy={d['machine_busy_pct']}%")
EOF2
