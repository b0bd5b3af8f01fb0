#!/usr/bin/env python3
"""The partial-frame attack of the hardening issue, against a running monitor-server.

N connections each send a valid report frame of FRAME bytes minus its last byte, and
hold it. Meanwhile a healthy subscriber and reporter pair (`monitor-client bench`) keeps
measuring; the script prints the server's peak RSS while the attack holds, and the
pair's figures.

    scripts/partial-frame-attack.py SERVER_PID HOST:PORT [--connections 2000]
        [--frame 1048576] [--client target/release/monitor-client] [--seconds 20]

Target (docs/performance.md): RSS under 350 MiB with 2000 x 1 MiB, the pair's p99
under 50 ms. Needs `ulimit -n` above the connection count.
"""
import argparse
import json
import os
import selectors
import socket
import struct
import subprocess
import sys
import time
import zlib


def report_frame(length: int) -> bytes:
    head = b'{"code":"attack","pad":"'
    pad = length - 45 - len(head) - 2
    body = head + b"p" * pad + b'"}'
    first = struct.pack("<BBBBI", 1, 7, 0, 0, 45 + len(body))
    crc = struct.pack("<I", zlib.crc32(first) & 0xFFFFFFFF)
    frame = first + crc + b"a" * 33 + body
    assert len(frame) == length
    return frame


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pid", type=int)
    ap.add_argument("addr")
    ap.add_argument("--connections", type=int, default=2000)
    ap.add_argument("--frame", type=int, default=1024 * 1024)
    ap.add_argument("--client", default="target/release/monitor-client")
    ap.add_argument("--seconds", type=int, default=20)
    args = ap.parse_args()
    host, port = args.addr.rsplit(":", 1)
    data = report_frame(args.frame)[:-1]
    base = rss_kib(args.pid)

    sel = selectors.DefaultSelector()
    sent = {}
    for i in range(args.connections):
        s = socket.create_connection((host, int(port)))
        s.setblocking(False)
        sent[s] = 0
        sel.register(s, selectors.EVENT_WRITE)
    print(f"{args.connections} connections open; server RSS {base / 1024:.1f} MiB", flush=True)

    # The healthy pair runs while the attackers push their frames and then hold them.
    bench = subprocess.Popen(
        [args.client, "bench", "--server", args.addr, "--subscribers", "1",
         "--rate", "1000", "--duration", str(args.seconds), "--warmup", "1", "--json"],
        stdout=subprocess.PIPE, text=True)
    peak = base
    deadline = time.monotonic() + args.seconds + 5
    while bench.poll() is None and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            try:
                n = s.send(data[sent[s]:sent[s] + 256 * 1024])
            except BlockingIOError:
                continue
            sent[s] += n
            if sent[s] == len(data):
                sel.unregister(s)
        peak = max(peak, rss_kib(args.pid))
    out, _ = bench.communicate(timeout=60)
    peak = max(peak, rss_kib(args.pid))
    complete = sum(1 for v in sent.values() if v == len(data))
    print(f"attack: {complete} of {args.connections} connections sent their whole "
          f"{args.frame - 1}-byte partial frame; {sum(sent.values()) / 2**20:.0f} MiB sent")
    print(f"server RSS: {base / 1024:.1f} MiB before, {peak / 1024:.1f} MiB peak")
    try:
        r = json.loads(out)
        print(f"healthy pair: {r['deliv_msgs_per_s']:.0f} pushes/s, "
              f"p50 {r['lat_p50_us']:.0f} us, p99 {r['lat_p99_us']:.0f} us, "
              f"lost {r['lost']}")
    except (json.JSONDecodeError, TypeError, KeyError):
        print("healthy pair output:", out)
    for s in sent:
        s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
