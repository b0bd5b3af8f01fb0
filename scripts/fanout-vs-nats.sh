#!/usr/bin/env bash
# Measures monitor-server and Debian's nats-server side by side with fanout-bench, in one
# session, alternating broker by broker within each repetition so that drifts in machine
# load hit both. Prints a Markdown table of medians and ratios (scripts/fanout_summary.py).
#
# More columns come from the same session: monitor-w1 is monitor-server --workers 1,
# monitor-inherit is monitor-server --sched-policy inherit (its workers keep the default
# CPU scheduling policy instead of SCHED_BATCH), and floor is benches' floor-server (the
# least work any server can do per push; see docs/performance.md), measured at the latency
# point only. BROKERS chooses the columns.
#
#   apt-get install -y nats-server
#   (cd ../shared/tools/fanout-bench && cargo build --release)
#   scripts/fanout-vs-nats.sh                   # ~15 min: 3 reps x 10 s per point
#   REPS=1 DURATION=3 scripts/fanout-vs-nats.sh # quick look
#
# Results: target/fanout/fanout.jsonl (accepted runs), fanout-all.jsonl (every attempt),
# idle.jsonl, run.log.
set -euo pipefail
. "$(dirname "$0")/common.sh"
OUT=${OUT:-$HERE/target/fanout}
REPS=${REPS:-3}
DUR=${DURATION:-10}
WARM=${WARMUP:-2}
IDLE_CONNS=${IDLE_CONNS:-10000}
IDLE_HOLD=${IDLE_HOLD:-20}
MONITOR_PORT=${MONITOR_PORT:-19503}
MONITOR_W1_PORT=${MONITOR_W1_PORT:-19505}
MONITOR_INHERIT_PORT=${MONITOR_INHERIT_PORT:-19506}
FLOOR_PORT=${FLOOR_PORT:-19504}
NATS_PORT=${NATS_PORT:-14222}
BROKERS=(${BROKERS:-monitor monitor-w1 monitor-inherit nats floor})
# "subscribers rate": max rate (0) at 10, 100 and 1000 subscribers; 2000 reports/s to 100.
POINTS=("10 0" "100 0" "1000 0" "100 2000")
# A run during which other processes used more than OTHER_MAX % of a core is repeated.
OTHER_MAX=${OTHER_MAX:-25}
ATTEMPTS=${ATTEMPTS:-3}

command -v nats-server >/dev/null || { echo "nats-server missing: apt-get install -y nats-server" >&2; exit 1; }
cargo build --release -q -p monitor-server -p monitor-benches --bin monitor-server --bin floor-server
SERVER=$HERE/target/release/monitor-server
FLOOR=$HERE/target/release/floor-server
mkdir -p "$OUT"
FAN=$OUT/fanout.jsonl ALL=$OUT/fanout-all.jsonl IDLE=$OUT/idle.jsonl LOG=$OUT/run.log
: >"$FAN"; : >"$ALL"; : >"$IDLE"; : >"$LOG"

declare -A PID
log() { echo "$(date +%T) $*" | tee -a "$LOG" >&2; }
start() {
  case $1 in
    monitor) "$SERVER" --listen "127.0.0.1:$MONITOR_PORT" 2>>"$OUT/monitor.log" & PID[monitor]=$!; port=$MONITOR_PORT ;;
    monitor-w1) "$SERVER" --workers 1 --listen "127.0.0.1:$MONITOR_W1_PORT" 2>>"$OUT/monitor-w1.log" & PID[monitor-w1]=$!; port=$MONITOR_W1_PORT ;;
    monitor-inherit) "$SERVER" --sched-policy inherit --listen "127.0.0.1:$MONITOR_INHERIT_PORT" 2>>"$OUT/monitor-inherit.log" & PID[monitor-inherit]=$!; port=$MONITOR_INHERIT_PORT ;;
    floor) "$FLOOR" "127.0.0.1:$FLOOR_PORT" 2>>"$OUT/floor.log" & PID[floor]=$!; port=$FLOOR_PORT ;;
    nats) nats-server -a 127.0.0.1 -p "$NATS_PORT" >>"$OUT/nats.log" 2>&1 & PID[nats]=$!; port=$NATS_PORT ;;
  esac
  wait_port "$port" && return 0
  log "$1 did not open port $port"; exit 1
}
stop() {
  local pid=${PID[$1]:-}
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  PID[$1]=
}
trap 'for b in "${BROKERS[@]}"; do stop "$b"; done' EXIT
addr_of() {
  case $1 in
    nats) echo "127.0.0.1:$NATS_PORT" ;; floor) echo "127.0.0.1:$FLOOR_PORT" ;;
    monitor-w1) echo "127.0.0.1:$MONITOR_W1_PORT" ;;
    monitor-inherit) echo "127.0.0.1:$MONITOR_INHERIT_PORT" ;; *) echo "127.0.0.1:$MONITOR_PORT" ;;
  esac
}
proto_of() { [ "$1" = nats ] && echo nats || echo monitor; }
tag() { python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d.update(json.loads(sys.argv[2])); print(json.dumps(d))' "$1" "$2"; }
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get(sys.argv[2], 0))' "$1" "$2"; }

log "harness: $($FB --version 2>&1 | head -1); $(nats-server --version); monitor-server $($SERVER --version)"
log "kernel $(uname -r); $(nproc) cores; $(grep -m1 'model name' /proc/cpuinfo)"

for b in "${BROKERS[@]}"; do start "$b"; done
for rep in $(seq "$REPS"); do
  for b in "${BROKERS[@]}"; do
    log "block rep=$rep broker=$b load=[$(cut -d' ' -f1-3 /proc/loadavg)]"
    for pt in "${POINTS[@]}"; do
      set -- $pt
      # The floor server is a yardstick for latency only.
      [ "$b" = floor ] && [ "$2" = 0 ] && continue
      for attempt in $(seq "$ATTEMPTS"); do
        if ! line=$("$FB" --proto "$(proto_of "$b")" --addr "$(addr_of "$b")" --subscribers "$1" --size 200 \
            --duration "$DUR" --warmup "$WARM" --rate "$2" --broker-pid "${PID[$b]}" 2>>"$LOG"); then
          log "FAILED: $b N=$1 rate=$2"; sleep 2; continue
        fi
        other=$(field "$line" other_cpu_pct)
        accepted=$(python3 -c "print(int(float('$other') <= $OTHER_MAX or $attempt == $ATTEMPTS))")
        line=$(tag "$line" "{\"broker\":\"$b\",\"rep\":$rep,\"attempt\":$attempt,\"accepted\":$([ "$accepted" = 1 ] && echo true || echo false)}")
        echo "$line" >>"$ALL"
        log "$b N=$1 rate=$2 attempt=$attempt deliv/s=$(field "$line" deliv_msgs_per_s) p99=$(field "$line" lat_p99_us)us lost=$(field "$line" lost) other=$other%"
        sleep 2
        if [ "$accepted" = 1 ]; then echo "$line" >>"$FAN"; break; fi
      done
    done
  done
done
for b in "${BROKERS[@]}"; do stop "$b"; done

# Idle memory: a fresh broker each time; fanout-bench reads VmRSS before connecting and
# halfway through the hold.
for rep in $(seq "$REPS"); do
  for b in monitor nats; do
    start "$b"; sleep 1
    line=$("$FB" --proto "$b" --addr "$(addr_of "$b")" --mode idle --subscribers "$IDLE_CONNS" \
      --duration "$IDLE_HOLD" --broker-pid "${PID[$b]}" 2>>"$LOG") || log "FAILED idle $b"
    line=$(tag "$line" "{\"broker\":\"$b\",\"rep\":$rep}")
    echo "$line" >>"$IDLE"
    log "idle $b: $(field "$line" broker_bytes_per_conn) bytes/conn, $(field "$line" connected) connected"
    stop "$b"; sleep 1
  done
done
python3 "$HERE/scripts/fanout_summary.py" "$OUT"
