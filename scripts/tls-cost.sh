#!/usr/bin/env bash
# What TLS and the in-band AES-GCM layer cost the fan-out, against plain TCP, on one
# running server with a plain and a TLS listener. Rounds alternate (plain, TLS, in-band
# encryption; the order rotates), and the medians' ratios are printed:
#   - max rate, 100 subscribers: TLS / plain and --encrypt / plain (delivered msgs/s);
#   - 2000 reports/s, 100 subscribers: p99 latency, TLS / plain.
#
#   scripts/tls-cost.sh                 # ~6 min: 3 rounds of each
#   ROUNDS=1 DURATION=3 scripts/tls-cost.sh
#   PROFILE=1 scripts/tls-cost.sh       # also a 10 s perf profile of the server under TLS
set -euo pipefail
NO_FANOUT_BENCH=1 . "$(dirname "$0")/common.sh"
ROUNDS=${ROUNDS:-3}
DUR=${DURATION:-10}
PORT=${PORT:-19730}
SUBS=${SUBSCRIBERS:-100}
OUT=${OUT:-$HERE/target/tls-cost}

cargo build --release -q -p monitor-server -p monitor-cli --bin monitor-server --bin monitor-client
mkdir -p "$OUT/pki"
: >"$OUT/runs.jsonl"

# A CA and a server certificate for localhost (as docs/security.md makes them).
(
  cd "$OUT/pki"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -keyout ca.key -out ca.crt -subj "/CN=bench CA" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext
  openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
    -extfile server.ext -out server.crt 2>/dev/null
)
TLS_PORT=$((PORT + 1))
cat >"$OUT/server.toml" <<EOF
[[listener]]
name = "plain"
address = "127.0.0.1:$PORT"

[[listener]]
name = "tls"
address = "127.0.0.1:$TLS_PORT"
tls_cert = "$OUT/pki/server.crt"
tls_key = "$OUT/pki/server.key"

[admin]
enabled = false
EOF

"$HERE/target/release/monitor-server" --config "$OUT/server.toml" 2>"$OUT/server.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
wait_port "$PORT"
wait_port "$TLS_PORT"

# run NAME RATE ARGS...: one bench run, its figures appended to runs.jsonl, with the CPU
# seconds the server and the load generator spent per million delivered pushes.
run() {
  local name=$1 rate=$2
  shift 2
  python3 - "$name" "$rate" "$SERVER" "$HERE/target/release/monitor-client" bench \
    --subscribers "$SUBS" --rate "$rate" --duration "$DUR" --json "$@" \
    2>>"$OUT/bench.log" <<'PY' | tee -a "$OUT/runs.jsonl"
import json, resource, subprocess, sys
name, rate, server, cmd = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
def server_cpu():
    fields = open(f"/proc/{server}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0
s0, before = server_cpu(), resource.getrusage(resource.RUSAGE_CHILDREN)
out = subprocess.run(cmd, stdout=subprocess.PIPE, check=True).stdout
s_cpu, after = server_cpu() - s0, resource.getrusage(resource.RUSAGE_CHILDREN)
c_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
d = json.loads(out)
per_m = lambda cpu: round(cpu / max(d["delivered"], 1) * 1e6, 3)
print(json.dumps({"name": name, "rate": rate, "deliv": d["deliv_msgs_per_s"],
                  "p50": d["lat_p50_us"], "p99": d["lat_p99_us"], "lost": d["lost"],
                  "server_s_per_m": per_m(s_cpu), "client_s_per_m": per_m(c_cpu)}))
PY
}
plain() { run plain "$1" --server "127.0.0.1:$PORT"; }
tls() { run tls "$1" --server "tls://localhost:$TLS_PORT" --ca "$OUT/pki/ca.crt"; }
encrypt() { run encrypt "$1" --server "127.0.0.1:$PORT" --encrypt; }

for round in $(seq "$ROUNDS"); do
  echo "$(date +%T) max rate, round $round" >&2
  case $((round % 3)) in
    1) plain 0; tls 0; encrypt 0 ;;
    2) tls 0; encrypt 0; plain 0 ;;
    0) encrypt 0; plain 0; tls 0 ;;
  esac
done
for round in $(seq "$ROUNDS"); do
  echo "$(date +%T) 2000/s, round $round" >&2
  if [ $((round % 2)) = 1 ]; then plain 2000; tls 2000; else tls 2000; plain 2000; fi
done

if [ "${PROFILE:-0}" = 1 ] && command -v perf >/dev/null; then
  echo "$(date +%T) profiling the server under TLS at max rate" >&2
  perf record -g -o "$OUT/perf.data" -p "$SERVER" -- sleep $((DUR + 2)) 2>/dev/null &
  PERF=$!
  tls 0 >/dev/null
  wait "$PERF" || true
  perf report -i "$OUT/perf.data" --no-children --percent-limit 2 --stdio 2>/dev/null |
    grep -E '^ +[0-9]' | head -25 >"$OUT/profile.txt" || true
  echo "profile: $OUT/profile.txt" >&2
fi

python3 - "$OUT/runs.jsonl" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
def med(name, rate, key):
    return statistics.median(r[key] for r in runs if r["name"] == name and r["rate"] == rate)
plain, tls, enc = (med(n, 0, "deliv") for n in ("plain", "tls", "encrypt"))
print(f"max rate, {len(runs) and ''}delivered msgs/s (median): plain {plain:,.0f}, TLS {tls:,.0f}, "
      f"in-band AES {enc:,.0f}")
print(f"  TLS / plain = {tls / plain:.2f}   in-band AES / plain = {enc / plain:.2f}")
p99p, p99t = med("plain", 2000, "p99"), med("tls", 2000, "p99")
p50p, p50t = med("plain", 2000, "p50"), med("tls", 2000, "p50")
print(f"2000/s: p50 plain {p50p} us, TLS {p50t} us; p99 plain {p99p} us, TLS {p99t} us; "
      f"p99 TLS / plain = {p99t / p99p:.2f}")
for n in ("plain", "tls", "encrypt"):
    print(f"  {n}: CPU s per 10^6 pushes at max rate (median): server "
          f"{med(n, 0, 'server_s_per_m'):.3f}, load generator {med(n, 0, 'client_s_per_m'):.3f}")
lost = sum(r["lost"] for r in runs)
print(f"lost over all runs: {lost}")
EOF
