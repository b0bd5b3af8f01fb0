#!/usr/bin/env python3
"""The dashboard in headless Firefox: what the Chromium test checks, checked by hand.

CI drives the dashboard in Chromium (crates/monitor-cli/tests/cli/dashboard.rs). Debian
has no geckodriver, so Firefox is driven here through its own remote protocol,
Marionette, with Mozilla's Python client. Run it when the dashboard's page changes:

    apt-get install -y firefox-esr
    python3 -m venv /tmp/ff && /tmp/ff/bin/pip install marionette_driver
    cargo build --release --bin monitor-server --bin monitor-client
    /tmp/ff/bin/python scripts/dashboard-firefox.py

It starts a server and two health agents (`report --health --host alpha|beta
--interval 1`), opens http://127.0.0.1:<admin>/ and checks, through the page's DOM hooks
(documented at the top of assets/dashboard.js): both hosts appear with chart points; a
value changes with a new report; alpha turns stale about 3 intervals after its agent
stops, and fresh again when it comes back. It saves target/dashboard-firefox.png, prints
each step, and exits 1 at the first check that fails.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from marionette_driver.marionette import Marionette

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("MONITOR_BIN", os.path.join(ROOT, "target", "release"))
FIREFOX = os.environ.get("FIREFOX", shutil.which("firefox-esr") or shutil.which("firefox"))
INTERVAL = 1

SNAPSHOT_JS = """
const text = (root, sel) => { const el = root.querySelector(sel); return el ? el.textContent : null; };
const conn = document.getElementById('conn');
return {
  conn: conn ? conn.dataset.state : null,
  open: text(document, '#server [data-stat="open"]'),
  hosts: Array.from(document.querySelectorAll('#hosts [data-host]')).map((el) => ({
    host: el.dataset.host,
    stale: el.dataset.stale,
    reports: Number(el.dataset.reports || 0),
    cpu: text(el, '[data-field="cpu"]'),
    cpu_points: Number(el.querySelector('[data-chart="cpu"]').dataset.points),
    mem_points: Number(el.querySelector('[data-chart="mem"]').dataset.points),
  })),
};
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, within=10.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on 127.0.0.1:{port} after {within} s")


def agent(server_port, host):
    return subprocess.Popen(
        [os.path.join(BIN, "monitor-client"), "report", "--health", "--host", host,
         "--interval", str(INTERVAL), "--server", f"127.0.0.1:{server_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    if not FIREFOX:
        sys.exit("firefox-esr not found: apt-get install -y firefox-esr (or set FIREFOX)")
    port, admin = free_port(), free_port()
    server = subprocess.Popen(
        [os.path.join(BIN, "monitor-server"), "--listen", f"127.0.0.1:{port}",
         "--admin", f"127.0.0.1:{admin}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = [server]
    profile = tempfile.mkdtemp(prefix="monitor-firefox-")
    client = None
    try:
        wait_port(port)
        wait_port(admin)
        alpha, beta = agent(port, "alpha"), agent(port, "beta")
        procs += [alpha, beta]
        client = Marionette(host="127.0.0.1", port=free_port(), bin=FIREFOX, headless=True,
                            profile=profile, startup_timeout=60)
        client.start_session()
        print(f"Firefox {client.session_capabilities.get('browserVersion')}, headless")
        client.navigate(f"http://127.0.0.1:{admin}/")

        def snapshot():
            return client.execute_script(SNAPSHOT_JS)

        def wait_for(what, check, within=20.0):
            deadline = time.monotonic() + within
            while True:
                snap = snapshot()
                if check(snap):
                    print(f"ok: {what}")
                    return snap
                if time.monotonic() > deadline:
                    sys.exit(f"FAILED: {what} within {within} s; the page shows {snap}")
                time.sleep(0.1)

        def host(snap, name):
            return next((h for h in snap["hosts"] if h["host"] == name), None)

        snap = wait_for("both hosts shown, with chart points", lambda s: all(
            (h := host(s, n)) and h["cpu_points"] >= 2 and h["mem_points"] >= 2
            for n in ("alpha", "beta")))
        seen = host(snap, "beta")["reports"]
        wait_for("a new report updates beta", lambda s: host(s, "beta")["reports"] > seen)
        wait_for("connected, and the server's counts shown",
                 lambda s: s["conn"] == "connected" and s["open"] not in (None, "", "–"))
        alpha.terminate()
        alpha.wait()
        stopped = time.monotonic()
        wait_for("alpha stale once its agent stops",
                 lambda s: host(s, "alpha")["stale"] == "true", within=10 * INTERVAL + 5)
        print(f"   after {time.monotonic() - stopped:.1f} s (3 intervals: {3 * INTERVAL} s)")
        wait_for("beta still fresh", lambda s: host(s, "beta")["stale"] == "false")
        alpha = agent(port, "alpha")
        procs.append(alpha)
        wait_for("alpha fresh again when it reports",
                 lambda s: host(s, "alpha")["stale"] == "false")
        out = os.path.join(ROOT, "target", "dashboard-firefox.png")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "wb") as f:
            f.write(client.screenshot(format="binary", full=True))
        print(f"screenshot: {out}")
    finally:
        if client is not None:
            try:
                client.cleanup()
            except Exception:  # the browser may be gone already
                pass
        for p in procs:
            p.terminate()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
