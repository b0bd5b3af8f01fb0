# Sourced by the measurement scripts (fanout-vs-nats.sh, sched-latency.sh,
# bench-agreement.sh, ws-vs-tcp.sh, tls-cost.sh, admin-cost.sh, cluster-local.sh): the
# repository root as the working directory, where
# fanout-bench is (unless NO_FANOUT_BENCH=1: a script that does not use it), and a
# bounded wait for a listener.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$HERE"
FB=${FANOUT_BENCH:-$HERE/../shared/tools/fanout-bench/target/release/fanout-bench}
if [ "${NO_FANOUT_BENCH:-0}" != 1 ]; then
  [ -x "$FB" ] || { echo "fanout-bench not found at $FB (build it, or set FANOUT_BENCH)" >&2; exit 1; }
fi

# Whether something accepts connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Waits up to 10 s for a listener on 127.0.0.1:$1.
wait_port() {
  for _ in $(seq 100); do port_open "$1" && return 0; sleep 0.1; done
  echo "nothing listens on 127.0.0.1:$1 after 10 s" >&2
  return 1
}
