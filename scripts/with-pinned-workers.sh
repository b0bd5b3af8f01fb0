#!/bin/bash
# scripts/with-pinned-workers.sh COMMAND...: runs a monitor-server COMMAND and pins its
# tokio worker threads one per CPU (taskset), round-robin over CPUs 0 and 1. The experiment of
# docs/performance.md ("Other variants tried"): scripts/latency_ab.py 12
#   mon=target/release/monitor-server 'pin=scripts/with-pinned-workers.sh target/release/monitor-server --listen {addr}'
# fanout-bench then measures the wrapper's pid, so broker CPU reads 0 for it.
"$@" 2>/dev/null & s=$!
trap 'kill $s 2>/dev/null; wait $s' TERM INT
sleep 0.3
i=0
for t in /proc/$s/task/*; do
  c=$(cat $t/comm)
  case "$c" in *worker*|*runtime*) taskset -p -c $((i % 2)) $(basename $t) >/dev/null; i=$((i+1));; esac
done
echo "pinned $i threads" >&2
wait $s
