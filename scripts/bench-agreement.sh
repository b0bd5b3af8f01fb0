#!/usr/bin/env bash
# Checks that the project's own load generator (`monitor-client bench`) agrees with
# fanout-bench: both measure the same point against the same running monitor-server,
# alternating, and the ratios (ours / fanout-bench) are printed. The performance issue
# asks for agreement within 20%.
#
#   (cd ../shared/tools/fanout-bench && cargo build --release)
#   scripts/bench-agreement.sh            # ~3 min: 3 pairs at max rate, 3 at 2000/s
#   PAIRS=1 DURATION=3 scripts/bench-agreement.sh
set -euo pipefail
. "$(dirname "$0")/common.sh"
PAIRS=${PAIRS:-3}
DUR=${DURATION:-10}
PORT=${PORT:-19720}
SUBS=${SUBSCRIBERS:-100}
OUT=${OUT:-$HERE/target/bench-agreement}

cargo build --release -q -p monitor-server -p monitor-cli --bin monitor-server --bin monitor-client
mkdir -p "$OUT"
: >"$OUT/runs.jsonl"

"$HERE/target/release/monitor-server" --listen "127.0.0.1:$PORT" 2>"$OUT/server.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
wait_port "$PORT"

# Both tools print one JSON object with the same field names; keeps the ones compared.
keep() {
  python3 -c '
import json, sys
d = json.load(sys.stdin)
print(json.dumps({"tool": sys.argv[1], "rate": int(sys.argv[2]), "deliv": d["deliv_msgs_per_s"],
                  "p50": d["lat_p50_us"], "p99": d["lat_p99_us"], "lost": d["lost"]}))
' "$1" "$2" >>"$OUT/runs.jsonl"
}

run_fanout_bench() {
  "$FB" --proto monitor --addr "127.0.0.1:$PORT" --subscribers "$SUBS" --rate "$1" \
    --duration "$DUR" 2>>"$OUT/fanout-bench.log" |
    keep fanout-bench "$1"
}
run_monitor_client() {
  "$HERE/target/release/monitor-client" bench --server "127.0.0.1:$PORT" --subscribers "$SUBS" \
    --rate "$1" --duration "$DUR" --json 2>>"$OUT/monitor-client.log" |
    keep monitor-client "$1"
}
for rate in 0 2000; do
  for pair in $(seq "$PAIRS"); do
    echo "$(date +%T) rate=$rate pair=$pair" >&2
    # Which tool goes first alternates, so that neither always meets a fresher server.
    if [ $((pair % 2)) = 1 ]; then
      run_fanout_bench "$rate"; run_monitor_client "$rate"
    else
      run_monitor_client "$rate"; run_fanout_bench "$rate"
    fi
  done
done

python3 - "$OUT/runs.jsonl" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
print("| rate | pair | metric | fanout-bench | monitor-client bench | ratio |")
print("|---|---|---|---|---|---|")
worst = 0.0
for rate in sorted({r["rate"] for r in runs}):
    fb = [r for r in runs if r["rate"] == rate and r["tool"] == "fanout-bench"]
    mc = [r for r in runs if r["rate"] == rate and r["tool"] == "monitor-client"]
    metrics = ["deliv"] if rate == 0 else ["p50", "p99"]
    for i, (a, b) in enumerate(zip(fb, mc), 1):
        for m in metrics:
            if not a[m] or not b[m]:
                sys.exit(f"rate {rate}, pair {i}: no {m} from one tool ({a[m]}, {b[m]}): see the logs in the output folder")
            ratio = b[m] / a[m]
            worst = max(worst, abs(ratio - 1))
            label = "max" if rate == 0 else f"{rate}/s"
            print(f"| {label} | {i} | {m} | {a[m]:.0f} | {b[m]:.0f} | {ratio:.2f} |")
for rate in sorted({r["rate"] for r in runs}):
    for m in (["deliv"] if rate == 0 else ["p50", "p99"]):
        fb = [r[m] for r in runs if r["rate"] == rate and r["tool"] == "fanout-bench"]
        mc = [r[m] for r in runs if r["rate"] == rate and r["tool"] == "monitor-client"]
        ratio = statistics.median(mc) / statistics.median(fb)
        print(f"\n{'max' if rate == 0 else f'{rate}/s'} {m}: ratio of the medians {ratio:.2f}", end="")
print(f"\n\nlargest difference in a pair: {worst * 100:.0f}%; lost: "
      f"{sum(r['lost'] for r in runs)} over all runs")
EOF
