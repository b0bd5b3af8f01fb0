#!/usr/bin/env python3
"""How long a server's threads wait for a CPU after a wake-up, by who woke them.

    perf sched record -o sched.data -- sleep 1     # while the server is under load
    scripts/sched_wakeups.py sched.data SERVER_PID

Reads `perf sched timehist -w`. A wake-up by another of the server's own threads (a tokio
worker unparking another) is counted apart from one by another process (for the fan-out
benchmark: the load generator's write of a report) or by the kernel. The delay is
timehist's "sch delay": from the wake-up to running. docs/performance.md ("Scheduling
policy of the workers") quotes it.
"""
import re
import subprocess
import sys


def main():
    if len(sys.argv) != 3 or not sys.argv[2].isdigit():
        sys.exit(__doc__)
    data, server = sys.argv[1], sys.argv[2]
    run = subprocess.run(["perf", "sched", "timehist", "-i", data, "-w"],
                         capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"perf sched timehist failed: {run.stderr.strip()[-300:]}")
    ours = "/" + server + "]"
    pending = {}  # wakee tid -> who woke it
    delays = {}
    for line in run.stdout.splitlines():
        m = re.match(r"\s*[\d.]+\s+\[\d+\]\s+(\S+)\s+awakened: (\S+)", line)
        if m:
            waker, wakee = m.groups()
            if ours in wakee:
                if ours in waker:
                    kind = "by the server's own threads"
                elif any(k in waker for k in ("idle", "swapper", "ksoftirq")):
                    kind = "by the kernel (idle, softirq)"
                else:
                    kind = "by another process"
                pending[re.search(r"\[(\d+)", wakee).group(1)] = kind
            continue
        m = re.match(r"\s*[\d.]+\s+\[\d+\]\s+(\S+)\s+[\d.]+\s+([\d.]+)\s+[\d.]+", line)
        if m and ours in m.group(1):
            kind = pending.pop(re.search(r"\[(\d+)", m.group(1)).group(1), None)
            if kind:
                delays.setdefault(kind, []).append(float(m.group(2)) * 1000)
    if not delays:
        sys.exit(f"no wake-ups of process {server} in {data}")
    for kind, v in sorted(delays.items()):
        v.sort()
        n = len(v)
        print(f"{kind:30} n={n:6} sch delay p50={v[n // 2]:7.1f} p90={v[int(n * .9)]:7.1f} "
              f"p99={v[int(n * .99)]:7.1f} max={v[-1]:7.1f} µs")


if __name__ == "__main__":
    main()
