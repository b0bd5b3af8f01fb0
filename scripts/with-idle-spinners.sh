#!/bin/bash
# scripts/with-idle-spinners.sh COMMAND...: runs COMMAND with two busy loops under SCHED_IDLE
# (chrt -i 0) next to it, so that the vCPUs never halt. The experiment of docs/performance.md
# ("Other variants tried"): scripts/latency_ab.py 6 plain=target/release/monitor-server
#   'spin=scripts/with-idle-spinners.sh target/release/monitor-server --listen {addr}'
# fanout-bench then measures the wrapper's pid, so broker CPU reads 0 for it.
chrt -i 0 bash -c 'while :; do :; done' & a=$!
chrt -i 0 bash -c 'while :; do :; done' & b=$!
trap 'kill $a $b 2>/dev/null' EXIT TERM INT
"$@" & s=$!
trap 'kill $s $a $b 2>/dev/null; wait $s' TERM INT
wait $s
