#!/usr/bin/env python3
"""Turns scripts/fanout-vs-nats.sh results into a Markdown table: medians per point and
broker, and our/NATS ratios. Usage: fanout_summary.py RESULTS_DIR"""
import json, statistics, sys, pathlib

out = pathlib.Path(sys.argv[1])
runs = [json.loads(l) for l in (out / "fanout.jsonl").read_text().splitlines() if l.strip()]
idle = [json.loads(l) for l in (out / "idle.jsonl").read_text().splitlines() if l.strip()]

def med(rows, key):
    vals = [r[key] for r in rows if key in r]
    return statistics.median(vals) if vals else float("nan")

points = sorted({(r["subscribers"], r["rate"]) for r in runs}, key=lambda p: (p[1], p[0]))
print("| point | metric | monitor-server | NATS | ratio (monitor/NATS) | runs |")
print("|---|---|---|---|---|---|")
for n, rate in points:
    rows = {b: [r for r in runs if r["broker"] == b and r["subscribers"] == n and r["rate"] == rate]
            for b in ("monitor", "nats")}
    label = f"{n} subscribers, " + ("max rate" if rate == 0 else f"{rate} reports/s")
    if rate == 0:
        m, s = med(rows["monitor"], "deliv_msgs_per_s"), med(rows["nats"], "deliv_msgs_per_s")
        print(f"| {label} | delivered msgs/s | {m/1e6:.2f} M | {s/1e6:.2f} M | **{m/s:.2f}** | {len(rows['monitor'])}/{len(rows['nats'])} |")
        lost = [r["lost"] for r in rows["monitor"]]
        nlost = [r["lost"] for r in rows["nats"]]
        print(f"| | lost (each run) | {lost} | {nlost} | | |")
    else:
        for key, name in (("lat_p50_us", "p50 latency"), ("lat_p99_us", "p99 latency")):
            m, s = med(rows["monitor"], key), med(rows["nats"], key)
            print(f"| {label} | {name} | {m:.0f} µs | {s:.0f} µs | {m/s:.2f} | {len(rows['monitor'])}/{len(rows['nats'])} |")
        m, s = med(rows["monitor"], "deliv_msgs_per_s"), med(rows["nats"], "deliv_msgs_per_s")
        print(f"| | delivered msgs/s | {m/1e3:.0f} k | {s/1e3:.0f} k | | |")
m = med([r for r in idle if r["broker"] == "monitor"], "broker_bytes_per_conn")
s = med([r for r in idle if r["broker"] == "nats"], "broker_bytes_per_conn")
n = idle[0].get("connections", "?") if idle else "?"
print(f"| {n} idle subscribed connections | RSS per connection | {m:.0f} B | {s:.0f} B | {m/s:.2f} | {len([r for r in idle if r['broker']=='monitor'])} |")
print()
print("Broker CPU (% of one core, median) at max rate:",
      ", ".join(f"{b} N={n}: {med([r for r in runs if r['broker']==b and r['subscribers']==n and r['rate']==0], 'broker_cpu_pct'):.0f}%"
                for n, rate in points if rate == 0 for b in ("monitor", "nats")))
