#!/usr/bin/env bash
# The cluster's figures for docs/performance.md ("Cluster"), in one session: a local
# cluster (scripts/cluster-local.sh: Redis and nodes a, b, c) and, beside it, one plain
# node without [cluster]. ROUNDS times, alternating so that drifts in machine load hit
# every kind of run:
#
#   single     1 reporter and 100 subscribers on the plain node, max rate
#   cluster    1 reporter on a, 100 subscribers round-robin over a, b and c, max rate
#   lat-local  2000 reports/s on a, 100 subscribers on a
#   lat-cross  2000 reports/s on a, 100 subscribers on b: every push crosses Redis
#
# Prints each run, the medians, cluster/single, and the latency added by crossing nodes.
#
#   apt-get install -y redis-server
#   cargo build --release -p monitor-server -p monitor-cli
#   scripts/cluster-bench.sh                  # ~3 min: 3 rounds x 4 runs x 10 s
#   ROUNDS=1 DURATION=3 scripts/cluster-bench.sh
#
# SUBSCRIBERS (100), RATE (2000), DURATION (10), SINGLE_PORT (9520; its admin API on
# SINGLE_PORT+100), SINGLE_WORKERS (0: one per CPU, the default), KINDS (the runs of a
# round, default all four) and the variables of cluster-local.sh (WORKERS: the nodes'
# threads, 1) change the set-up. At the end, each server's counters say where any loss
# came from (a slow subscriber's drops, or the cluster's). Every run's JSON:
# target/cluster-bench/runs.jsonl.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$HERE"
if [ -z "${NODE_A:-}" ]; then
  exec scripts/cluster-local.sh "$0" "$@"
fi

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
SUBSCRIBERS=${SUBSCRIBERS:-100}
RATE=${RATE:-2000}
SINGLE_PORT=${SINGLE_PORT:-9520}
SINGLE_WORKERS=${SINGLE_WORKERS:-0}
SINGLE_ADMIN=127.0.0.1:$((SINGLE_PORT + 100))
KINDS=${KINDS:-single cluster lat-local lat-cross}
CLIENT=target/release/monitor-client
OUT=target/cluster-bench
mkdir -p "$OUT"
RUNS=$OUT/runs.jsonl
: >"$RUNS"

target/release/monitor-server --listen "127.0.0.1:$SINGLE_PORT" --admin "$SINGLE_ADMIN" \
  --workers "$SINGLE_WORKERS" 2>"$CLUSTER_DIR/single.log" &
single=$!
trap 'kill $single 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$SINGLE_PORT") 2>/dev/null && break; sleep 0.1; done
SINGLE=127.0.0.1:$SINGLE_PORT

bench() {
  local kind=$1
  shift
  local out
  out=$("$CLIENT" bench --subscribers "$SUBSCRIBERS" --duration "$DURATION" --json "$@")
  python3 - "$kind" "$out" "$RUNS" <<'EOF'
import json, sys
kind, out, runs = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
out["kind"] = kind
with open(runs, "a") as f:
    f.write(json.dumps(out) + "\n")
print(f"{kind:10} {out['pub_msgs_per_s']:9.0f} reports/s {out['deliv_msgs_per_s']:9.0f} pushes/s "
      f"lost {out['lost']:5d}  p50 {out['lat_p50_us']:7.0f} us  p99 {out['lat_p99_us']:7.0f} us")
EOF
}

echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$ROUNDS"); do
  echo "round $round"
  for kind in $KINDS; do
    case $kind in
      single) bench single --server "$SINGLE" ;;
      cluster) bench cluster --server "$NODE_A" --subscribe-server "$NODE_A" \
        --subscribe-server "$NODE_B" --subscribe-server "$NODE_C" ;;
      lat-local) bench lat-local --server "$NODE_A" --rate "$RATE" ;;
      lat-cross) bench lat-cross --server "$NODE_A" --subscribe-server "$NODE_B" --rate "$RATE" ;;
    esac
  done
done
echo "single node: $(target/release/monitor-server status --admin "$SINGLE_ADMIN" | grep '^reports:')"
for node in "$ADMIN_A" "$ADMIN_B" "$ADMIN_C"; do
  status=$(target/release/monitor-server status --admin "$node")
  echo "$status" | grep -A1 '^cluster:'
  echo "$status" | grep '^reports:'
done

python3 - "$RUNS" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
kinds = {r["kind"] for r in runs}
def med(kind, key):
    return statistics.median(r[key] for r in runs if r["kind"] == kind)
if {"single", "cluster"} <= kinds:
    single, cluster = med("single", "deliv_msgs_per_s"), med("cluster", "deliv_msgs_per_s")
    print(f"\nmedian pushes/s: single node {single:.0f}, 3 nodes {cluster:.0f}; "
          f"ratio {cluster / single:.2f} (target >= 0.5)")
if {"lat-local", "lat-cross"} <= kinds:
    for q in ("lat_p50_us", "lat_p99_us"):
        local, cross = med("lat-local", q), med("lat-cross", q)
        print(f"{q[4:7]}: local {local:.0f} us, cross-node {cross:.0f} us, added {cross - local:.0f} us")
EOF
