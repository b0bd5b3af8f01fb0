#!/usr/bin/env bash
# Per-device routing: every subscriber has its own topic (`bench.<i>`) and each report
# reaches exactly one of them. Compares reports/s with SUBS_SMALL and SUBS_LARGE
# subscribers against one server, alternating, PAIRS times; prints each run and the
# ratio of the medians (target: large / small >= 0.5).
#
#   PAIRS=3 SUBS_SMALL=10 SUBS_LARGE=10000 DURATION=10 scripts/distinct-topics.sh
#
# Needs release builds (cargo build --release --bin monitor-server --bin monitor-client)
# and `ulimit -n` above SUBS_LARGE + 100 for both processes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PAIRS=${PAIRS:-3}
SUBS_SMALL=${SUBS_SMALL:-10}
SUBS_LARGE=${SUBS_LARGE:-10000}
DURATION=${DURATION:-10}
PORT=${PORT:-9710}
SERVER=target/release/monitor-server
CLIENT=target/release/monitor-client

ulimit -n "$(ulimit -Hn)"
"$SERVER" --listen "127.0.0.1:$PORT" 2>/tmp/distinct-topics-server.log &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  grep -q listening /tmp/distinct-topics-server.log && break
  sleep 0.1
done

run() {
  "$CLIENT" bench --server "127.0.0.1:$PORT" --distinct-topics --subscribers "$1" \
    --duration "$DURATION" --warmup 2 --json
}

small=()
large=()
for pair in $(seq "$PAIRS"); do
  for n in "$SUBS_SMALL" "$SUBS_LARGE"; do
    out=$(run "$n")
    rate=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("%.0f %.0f %d %.0f %.0f" % (r["pub_msgs_per_s"], r["deliv_msgs_per_s"], r["lost"], r["lat_p50_us"], r["lat_p99_us"]))' "$out")
    read -r pub deliv lost p50 p99 <<<"$rate"
    echo "pair $pair, $n subscribers: $pub reports/s, $deliv pushes/s, lost $lost, p50 ${p50} us, p99 ${p99} us"
    if [ "$n" = "$SUBS_SMALL" ]; then small+=("$deliv"); else large+=("$deliv"); fi
  done
done
python3 - "${small[*]}" "${large[*]}" "$SUBS_SMALL" "$SUBS_LARGE" <<'EOF'
import statistics, sys
small = [float(x) for x in sys.argv[1].split()]
large = [float(x) for x in sys.argv[2].split()]
ms, ml = statistics.median(small), statistics.median(large)
print(f"median pushes/s: {sys.argv[3]} subscribers {ms:.0f}, {sys.argv[4]} subscribers {ml:.0f}; "
      f"ratio {ml / ms:.2f} (target >= 0.5)")
EOF
