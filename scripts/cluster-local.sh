#!/usr/bin/env bash
# Runs a cluster on this machine: one redis-server and three monitor-server nodes (a, b,
# c) that share their reports through it (docs/cluster.md). Each node has its own config
# file, log and ports, in a temporary directory that is removed at the end.
#
#   apt-get install -y redis-server
#   scripts/cluster-local.sh                 # until Ctrl-C
#   scripts/cluster-local.sh COMMAND [ARG…]  # runs COMMAND once the cluster is up, then stops it
#
# Ports (override with the variables): redis REDIS_PORT (6390); node a listens on
# BASE_PORT (9511), b on BASE_PORT+1, c on BASE_PORT+2; their admin APIs on ADMIN_PORT
# (9611), +1, +2. WORKERS (default 1: three nodes and Redis share the CPUs) sets each
# node's runtime threads. COMMAND sees NODE_A, NODE_B, NODE_C (protocol addresses),
# ADMIN_A, ADMIN_B, ADMIN_C, REDIS_URL and CLUSTER_DIR in its environment.
#
# Try it, in another terminal:
#   target/release/monitor-client push --server 127.0.0.1:9513 --code ops --topic 'host.*'
#   target/release/monitor-client report --server 127.0.0.1:9511 --body '{"code":"host.up"}'
#   # {"delivered":0,"cluster":true}   (and the push shows on node c)
#   target/release/monitor-server status --admin 127.0.0.1:9611 --cluster
set -euo pipefail
NO_FANOUT_BENCH=1 . "$(dirname "${BASH_SOURCE[0]}")/common.sh"
REDIS_PORT=${REDIS_PORT:-6390}
BASE_PORT=${BASE_PORT:-9511}
ADMIN_PORT=${ADMIN_PORT:-9611}
WORKERS=${WORKERS:-1}

command -v redis-server >/dev/null || {
  echo "redis-server not found: apt-get install -y redis-server" >&2
  exit 1
}
[ -x target/release/monitor-server ] && [ -x target/release/monitor-client ] ||
  cargo build --release -q -p monitor-server -p monitor-cli
SERVER=$HERE/target/release/monitor-server

DIR=$(mktemp -d "${TMPDIR:-/tmp}/monitor-cluster.XXXXXX")
PIDS=()
cleanup() {
  # Nodes first (they remove their presence from Redis), then Redis.
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_open "$REDIS_PORT" && { echo "port $REDIS_PORT is taken (set REDIS_PORT)" >&2; exit 1; }
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$DIR" --logfile "$DIR/redis.log" &
PIDS+=($!)
wait_port "$REDIS_PORT"
export REDIS_URL="redis://127.0.0.1:$REDIS_PORT"

i=0
for node in a b c; do
  port=$((BASE_PORT + i)) admin=$((ADMIN_PORT + i))
  cat >"$DIR/node-$node.toml" <<EOF
[server]
workers = $WORKERS

[[listener]]
address = "127.0.0.1:$port"

[admin]
address = "127.0.0.1:$admin"

[cluster]
redis = "$REDIS_URL"
node_id = "$node"
EOF
  "$SERVER" --config "$DIR/node-$node.toml" 2>"$DIR/node-$node.log" &
  PIDS+=($!)
  upper=$(echo "$node" | tr a-z A-Z)
  export "NODE_$upper=127.0.0.1:$port" "ADMIN_$upper=127.0.0.1:$admin"
  i=$((i + 1))
done
export CLUSTER_DIR=$DIR

# Up means each node both publishes and is subscribed ("cluster":{"up":true,...}).
for admin in "$ADMIN_A" "$ADMIN_B" "$ADMIN_C"; do
  wait_port "${admin#*:}"
  for _ in $(seq 100); do
    "$SERVER" status --admin "$admin" --json 2>/dev/null | grep -q '"up":true' && continue 2
    sleep 0.1
  done
  echo "node at $admin did not connect to redis in 10 s; its log:" >&2
  cat "$DIR"/node-*.log >&2
  exit 1
done

if [ $# -gt 0 ]; then
  "$@"
  exit $?
fi
cat <<EOF
redis    $REDIS_URL (log $DIR/redis.log)
node a   $NODE_A, admin http://$ADMIN_A (config $DIR/node-a.toml, log $DIR/node-a.log)
node b   $NODE_B, admin http://$ADMIN_B
node c   $NODE_C, admin http://$ADMIN_C
Ctrl-C stops them all.
EOF
wait
