#!/usr/bin/env python3
"""Turns scripts/fanout-vs-nats.sh results into a Markdown table: medians per point and
broker, and ratios to NATS. Usage: fanout_summary.py RESULTS_DIR"""
import json, statistics, sys, pathlib

out = pathlib.Path(sys.argv[1])
runs = [json.loads(l) for l in (out / "fanout.jsonl").read_text().splitlines() if l.strip()]
idle = [json.loads(l) for l in (out / "idle.jsonl").read_text().splitlines() if l.strip()]
ORDER = ["monitor", "monitor-w1", "monitor-inherit", "nats", "floor"]
NAMES = {"monitor": "monitor-server", "monitor-w1": "monitor-server --workers 1",
         "monitor-inherit": "monitor-server --sched-policy inherit",
         "nats": "NATS", "floor": "floor-server"}
brokers = [b for b in ORDER if any(r["broker"] == b for r in runs)]
ours = [b for b in brokers if b.startswith("monitor")]


def med(rows, key):
    vals = [r[key] for r in rows if key in r]
    return statistics.median(vals) if vals else float("nan")


def cell(value, fmt):
    return "–" if value != value else fmt(value)  # NaN: not measured at this point


points = sorted({(r["subscribers"], r["rate"]) for r in runs}, key=lambda p: (p[1], p[0]))
print("| point | metric | " + " | ".join(NAMES[b] for b in brokers) + " | "
      + " | ".join(f"{NAMES[b]} / NATS" for b in ours) + " | runs |")
print("|---" * (3 + len(brokers) + len(ours)) + "|")
for n, rate in points:
    rows = {b: [r for r in runs if r["broker"] == b and r["subscribers"] == n and r["rate"] == rate]
            for b in brokers}
    label = f"{n} subscribers, " + ("max rate" if rate == 0 else f"{rate} reports/s")
    runs_col = "/".join(str(len(rows[b])) for b in brokers)
    metrics = [("deliv_msgs_per_s", "delivered msgs/s", lambda v: f"{v/1e6:.2f} M")] if rate == 0 else [
        ("lat_p50_us", "p50 latency", lambda v: f"{v:.0f} µs"),
        ("lat_p99_us", "p99 latency", lambda v: f"{v:.0f} µs"),
        ("lat_p999_us", "p99.9 latency", lambda v: f"{v:.0f} µs")]
    for key, name, fmt in metrics:
        vals = {b: med(rows[b], key) for b in brokers}
        nats = vals.get("nats", float("nan"))
        ratios = " | ".join(cell(vals[b] / nats, lambda v: f"**{v:.2f}**" if rate == 0 else f"{v:.2f}")
                            for b in ours)
        print(f"| {label} | {name} | " + " | ".join(cell(vals[b], fmt) for b in brokers)
              + f" | {ratios} | {runs_col} |")
    if rate == 0:
        print("| | lost (each run) | " + " | ".join(str([r["lost"] for r in rows[b]]) or "–" for b in brokers)
              + " |" * (len(ours) + 1) + " |")
    else:
        print("| | broker CPU, % of a core | "
              + " | ".join(cell(med(rows[b], "broker_cpu_pct"), lambda v: f"{v:.0f}") for b in brokers)
              + " |" * (len(ours) + 1) + " |")
m = med([r for r in idle if r["broker"] == "monitor"], "broker_bytes_per_conn")
s = med([r for r in idle if r["broker"] == "nats"], "broker_bytes_per_conn")
n = idle[0].get("connections", "?") if idle else "?"
print(f"\n{n} idle subscribed connections, RSS per connection (median of "
      f"{len([r for r in idle if r['broker'] == 'monitor'])}): monitor-server {m:.0f} B, "
      f"NATS {s:.0f} B, ratio {m/s:.2f}")
print()
print("Broker CPU (% of one core, median) at max rate:",
      ", ".join(f"{b} N={n}: {med([r for r in runs if r['broker']==b and r['subscribers']==n and r['rate']==0], 'broker_cpu_pct'):.0f}%"
                for n, rate in points if rate == 0 for b in brokers if b != "floor"))
