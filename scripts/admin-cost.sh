#!/usr/bin/env bash
# What the admin API costs the fan-out: two servers, one with the admin API off and one
# with it on and /metrics scraped every second (as Prometheus would, at a 60x shorter
# interval than usual), measured alternately at max rate with 100 subscribers. Prints
# each run and the ratio of the medians (admin on + scraping / admin off).
#
#   scripts/admin-cost.sh               # ~4 min: 5 rounds of each
#   ROUNDS=2 DURATION=3 scripts/admin-cost.sh
set -euo pipefail
NO_FANOUT_BENCH=1 . "$(dirname "$0")/common.sh"
ROUNDS=${ROUNDS:-5}
DUR=${DURATION:-10}
PORT=${PORT:-19740}
SUBS=${SUBSCRIBERS:-100}
OUT=${OUT:-$HERE/target/admin-cost}

cargo build --release -q -p monitor-server -p monitor-cli --bin monitor-server --bin monitor-client
mkdir -p "$OUT"
: >"$OUT/runs.jsonl"
OFF=$PORT
ON=$((PORT + 1))
ADMIN=$((PORT + 2))
printf '[admin]\nenabled = false\n' >"$OUT/off.toml"
"$HERE/target/release/monitor-server" --config "$OUT/off.toml" --listen "127.0.0.1:$OFF" \
  2>"$OUT/off.log" &
S_OFF=$!
"$HERE/target/release/monitor-server" --listen "127.0.0.1:$ON" --admin "127.0.0.1:$ADMIN" \
  2>"$OUT/on.log" &
S_ON=$!
trap 'kill $S_OFF $S_ON 2>/dev/null || true' EXIT
wait_port "$OFF"
wait_port "$ON"
wait_port "$ADMIN"

run() {
  local name=$1 port=$2
  "$HERE/target/release/monitor-client" bench --server "127.0.0.1:$port" \
    --subscribers "$SUBS" --duration "$DUR" --json 2>>"$OUT/bench.log" |
    python3 -c '
import json, sys
d = json.load(sys.stdin)
print(json.dumps({"name": sys.argv[1], "deliv": d["deliv_msgs_per_s"], "p99": d["lat_p99_us"],
                  "lost": d["lost"]}))
' "$name" | tee -a "$OUT/runs.jsonl"
}
admin_off() { run off "$OFF"; }
admin_on() {
  # One scrape a second for as long as the run lasts; each must succeed.
  (
    while sleep 1; do
      curl -sf -o /dev/null "http://127.0.0.1:$ADMIN/metrics" || echo "scrape failed" >&2
    done
  ) &
  local scraper=$!
  run on "$ON"
  kill "$scraper" 2>/dev/null || true
  wait "$scraper" 2>/dev/null || true
}

for round in $(seq "$ROUNDS"); do
  echo "$(date +%T) round $round" >&2
  if [ $((round % 2)) = 1 ]; then admin_off; admin_on; else admin_on; admin_off; fi
done

python3 - "$OUT/runs.jsonl" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
off = statistics.median(r["deliv"] for r in runs if r["name"] == "off")
on = statistics.median(r["deliv"] for r in runs if r["name"] == "on")
print(f"delivered msgs/s (median): admin off {off:,.0f}, admin on + /metrics every 1 s {on:,.0f}")
print(f"ratio on / off = {on / off:.3f}")
EOF
