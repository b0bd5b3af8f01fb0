#!/usr/bin/env python3
"""Alternating A/B runs of fanout-bench against server variants, for small comparisons
(a flag, a build, a scheduling policy) that the full scripts/fanout-vs-nats.sh would
take too long for. Each repetition starts every variant in turn on a fresh port, runs
fanout-bench against it, and stops it; medians are printed at the end.

    scripts/latency_ab.py REPS 'LABEL=COMMAND' ['LABEL=COMMAND' ...]

COMMAND is a shell-style command line, run from the repository root. It gets `--listen 127.0.0.1:PORT` appended,
unless it contains `{addr}`, which is replaced by 127.0.0.1:PORT instead.

Besides fanout-bench's figures, each run reports the server's context switches per second
(all its threads, voluntary and not, over the measured window, from /proc): the number that
shows workers preempting each other (docs/performance.md, "Scheduling policy of the
workers").

Environment: SUBS (100), RATE (2000; 0 = max rate), DUR (4 s measured), WARMUP (1 s),
FANOUT_BENCH (path to fanout-bench), PORT (first port, 19620).

Example, the nice/real-time check of docs/performance.md:

    scripts/latency_ab.py 3 def=target/release/monitor-server \\
        'nice=nice -n -10 target/release/monitor-server' \\
        'fifo=chrt -f 10 target/release/monitor-server'
"""
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FB = os.environ.get(
    "FANOUT_BENCH",
    os.path.join(HERE, "..", "shared", "tools", "fanout-bench", "target", "release", "fanout-bench"),
)


def wait_for_port(port, seconds=5.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def context_switches(pid):
    """Context switches so far of all of `pid`'s threads (None once it is gone)."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                        total += int(line.split()[-1])
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None
    return total


def main():
    if len(sys.argv) < 3 or not sys.argv[1].isdigit():
        sys.exit(__doc__)
    reps, variants = int(sys.argv[1]), sys.argv[2:]
    subs = os.environ.get("SUBS", "100")
    rate = os.environ.get("RATE", "2000")
    dur = os.environ.get("DUR", "4")
    warmup = os.environ.get("WARMUP", "1")
    port = int(os.environ.get("PORT", "19620"))
    if not os.access(FB, os.X_OK):
        sys.exit(f"fanout-bench not found at {FB} (build it, or set FANOUT_BENCH)")
    os.chdir(HERE)
    results = {}
    for rep in range(reps):
        for variant in variants:
            label, _, command = variant.partition("=")
            port += 1
            addr = f"127.0.0.1:{port}"
            args = (shlex.split(command.replace("{addr}", addr)) if "{addr}" in command
                    else shlex.split(command) + ["--listen", addr])
            try:
                server = subprocess.Popen(args, stderr=subprocess.DEVNULL)
            except OSError as e:
                sys.exit(f"{label}: cannot start {args[0]}: {e}")
            try:
                if not wait_for_port(port):
                    print(f"{label}: no listener on {addr}", flush=True)
                    continue
                bench = subprocess.Popen(
                    [FB, "--proto", "monitor", "--addr", addr, "--subscribers", subs,
                     "--rate", rate, "--duration", dur, "--warmup", warmup,
                     "--broker-pid", str(server.pid)],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                # The measured window starts after the connections and the warmup; the
                # context-switch count covers about the same seconds.
                time.sleep(float(warmup) + 0.5)
                cs_start, cs_t0 = context_switches(server.pid), time.monotonic()
                time.sleep(max(float(dur) - 1.0, 0.5))
                cs_end, cs_t1 = context_switches(server.pid), time.monotonic()
                try:
                    out, err = bench.communicate(timeout=int(dur) + int(warmup) + 120)
                except subprocess.TimeoutExpired:
                    bench.kill()
                    bench.communicate()
                    raise
                run = subprocess.CompletedProcess(bench.args, bench.returncode, out, err)
            except subprocess.TimeoutExpired:
                print(f"{label}: fanout-bench overran its time; run skipped", flush=True)
                continue
            finally:
                server.terminate()
                server.wait()
            try:
                d = json.loads(run.stdout)
            except json.JSONDecodeError:
                print(f"{label}: fanout-bench failed: {run.stderr.strip()[-300:]}", flush=True)
                continue
            if cs_start is not None and cs_end is not None:
                d["server_cs_per_s"] = (cs_end - cs_start) / (cs_t1 - cs_t0)
            results.setdefault(label, []).append(d)
            cs = d.get("server_cs_per_s")
            print(f"rep {rep + 1} {label:10} p50={d['lat_p50_us']:8} p99={d['lat_p99_us']:8} "
                  f"deliv={d['deliv_msgs_per_s']:10} broker={d['broker_cpu_pct']}% "
                  f"harness={d['harness_cpu_pct']}% busy={d['machine_busy_pct']}% "
                  f"cs/s={'?' if cs is None else f'{cs:.0f}'} lost={d['lost']}",
                  flush=True)
    print("--- medians")
    for label, runs in results.items():
        def med(key):
            values = [r[key] for r in runs if r.get(key) is not None]
            return statistics.median(values) if values else float("nan")
        print(f"{label:10} n={len(runs)} p50={med('lat_p50_us'):.0f} p99={med('lat_p99_us'):.0f} "
              f"p99.9={med('lat_p999_us'):.0f} deliv={med('deliv_msgs_per_s'):.0f} "
              f"broker={med('broker_cpu_pct')}% cs/s={med('server_cs_per_s'):.0f}")


if __name__ == "__main__":
    main()
