#!/usr/bin/env python3
"""Drives the web dashboard of a running cluster in headless Chromium over
the DevTools protocol, as a user would: sees the nodes, watches a submitted
job appear and complete, opens its log, cancels a job, drains and resumes a
node, and checks the page fits a phone's width. Saves screenshots.

Run by tests/dashboard.rs: drive_dashboard.py DROVER_BIN CLUSTER_DIR LINK OUT_DIR
Needs Debian's chromium and the websocket-client package (.ci/run installs both).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket  # websocket-client

DROVER, CLUSTER_DIR, LINK, OUT_DIR = sys.argv[1:5]


class Page:
    """One tab, spoken to over its DevTools WebSocket."""

    def __init__(self, ws_url):
        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.next_id = 0
        self.errors = []
        self.dialog_answer = None
        for domain in ("Page", "Runtime"):
            self.call(f"{domain}.enable")

    def _event(self, msg):
        method = msg.get("method")
        if method == "Runtime.exceptionThrown":
            self.errors.append(msg["params"]["exceptionDetails"].get("exception", {}).get("description", str(msg)))
        elif method == "Page.javascriptDialogOpening":
            # Answered in a fresh message: the page waits for it.
            self.next_id += 1
            self.ws.send(json.dumps({"id": self.next_id, "method": "Page.handleJavaScriptDialog",
                                     "params": {"accept": True, "promptText": self.dialog_answer or ""}}))

    def call(self, method, **params):
        self.next_id += 1
        me = self.next_id
        self.ws.send(json.dumps({"id": me, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == me:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self._event(msg)

    def js(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, what, expr, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.js(expr):
                return
            time.sleep(0.2)
        body = self.js("document.body.innerText")
        raise AssertionError(f"{what}: not within {timeout} s; the page says:\n{body}")

    def click(self, selector):
        found = self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return false; e.click(); return true; }})()")
        assert found, f"nothing to click at {selector}"

    def screenshot(self, name):
        import base64
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path = os.path.join(OUT_DIR, name)
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        print(f"screenshot: {path}")


def drover(*args):
    env = dict(os.environ)
    out = subprocess.run([DROVER, *args], cwd=CLUSTER_DIR, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"drover {args}: {out.stderr}"
    return out.stdout.strip()


def launch_chromium(profile):
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    assert browser, "no chromium on PATH (Debian package 'chromium'; .ci/run installs it)"
    proc = subprocess.Popen(
        [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
         "--disable-dev-shm-usage", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
         f"--user-data-dir={profile}", "--window-size=1280,900", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port_file = os.path.join(profile, "DevToolsActivePort")
    deadline = time.time() + 30
    while not (os.path.exists(port_file) and open(port_file).read().strip()):
        assert time.time() < deadline and proc.poll() is None, "chromium did not start"
        time.sleep(0.1)
    port = int(open(port_file).read().split()[0])
    while True:
        try:
            targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5))
            pages = [t for t in targets if t["type"] == "page"]
            if pages:
                return proc, pages[0]["webSocketDebuggerUrl"]
        except OSError:
            pass
        assert time.time() < deadline, "chromium opened no page"
        time.sleep(0.1)


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="drover-chromium-")
    proc, ws_url = launch_chromium(profile)
    try:
        p = Page(ws_url)
        p.call("Page.navigate", url=LINK)
        p.wait("both nodes shown", "document.querySelector('#count-nodes')?.textContent === '2/2'")
        assert p.js("location.hash") == "", "the token leaves the address bar"
        p.wait("the node grid", "document.querySelectorAll('#node-grid .node').length === 2")

        # A job submitted elsewhere appears live, then completes; its log opens.
        job = drover("submit", "--parsable", "-J", "dash-demo", "--wrap",
                     "echo hello-from-the-dashboard; sleep 4; echo bye")
        p.click("#tabs button[data-view=jobs]")
        row = f"#job-table tr[data-job='{job}']"
        p.wait(f"job {job} listed", f"!!document.querySelector(\"{row}\")", timeout=15)
        p.wait(f"job {job} running", f"document.querySelector(\"{row}\")?.innerText.includes('RUNNING')", timeout=15)
        p.click(row)
        p.wait("the log tail", "document.querySelector('#job-log')?.textContent.includes('hello-from-the-dashboard')")
        p.screenshot("dashboard-job.png")
        p.wait(f"job {job} completed", f"document.querySelector('#detail-body h2')?.innerText.includes('COMPLETED')", timeout=30)
        p.wait("the log's end", "document.querySelector('#job-log')?.textContent.includes('bye')")
        p.js("document.querySelector('#detail').close()")
        p.wait(f"job {job} completed in the table", f"document.querySelector(\"{row}\")?.innerText.includes('COMPLETED')")

        # Sorting and filtering.
        other = drover("submit", "--parsable", "-J", "dash-sleeper", "--wrap", "sleep 120")
        p.wait("the sleeper listed", f"!!document.querySelector(\"#job-table tr[data-job='{other}']\")", timeout=15)
        p.click("#job-table th[data-key=job_id]")
        first = p.js("document.querySelector('#job-table tbody tr')?.dataset.job")
        assert first == "1" or int(first) < int(other), f"ascending sort puts the lowest id first, got {first}"
        p.js("const f = document.querySelector('#job-filter'); f.value = 'dash-sleeper'; f.dispatchEvent(new Event('input'))")
        shown = p.js("[...document.querySelectorAll('#job-table tbody tr')].map(r => r.dataset.job)")
        assert shown == [other], f"the filter leaves the sleeper only: {shown}"

        # Cancel own job from the table.
        p.wait("the sleeper running", f"document.querySelector(\"#job-table tr[data-job='{other}']\")?.innerText.includes('RUNNING')", timeout=15)
        p.click(f"[data-cancel='{other}']")
        p.wait("the sleeper cancelled", f"document.querySelector(\"#job-table tr[data-job='{other}']\")?.innerText.includes('CANCELLED')", timeout=20)
        state = json.loads(drover("show", "job", other, "--json"))["state"]
        assert state == "CANCELLED", f"the controller agrees: {state}"

        # Drain and resume a node (the test runs as root, an operator).
        p.click("#tabs button[data-view=nodes]")
        p.click("#node-table tr[data-node='node2']")
        p.wait("node detail", "!!document.querySelector('#node-drain')")
        p.dialog_answer = "dashboard test"
        p.click("#node-drain")
        p.wait("node2 drained", "document.querySelector(\"#node-table tr[data-node='node2']\")?.innerText.match(/DRAIN/)", timeout=15)
        assert "dashboard test" in drover("show", "node", "node2"), "the reason reached the controller"
        p.wait("resume offered", "!!document.querySelector('#node-resume')")
        p.click("#node-resume")
        p.wait("node2 resumed", "document.querySelector(\"#node-table tr[data-node='node2']\")?.innerText.includes('IDLE')", timeout=15)
        p.js("document.querySelector('#detail').close()")

        # The events feed shows what happened.
        p.click("#tabs button[data-view=events]")
        p.wait("events listed", "document.querySelector('#event-feed').innerText.includes('JobFinished')")

        # Opened afresh, with nothing happening, the page shows the recent
        # events and the throughput of the last half hour at once.
        p.call("Page.reload")
        time.sleep(0.5)
        p.wait("reloaded", "document.querySelector('#count-nodes')?.textContent === '2/2'")
        p.wait("history listed on load", "document.querySelector('#event-feed').innerText.includes('JobFinished')", timeout=5)
        p.wait("throughput drawn on load",
               "(document.querySelector('#sparkline polyline')?.getAttribute('points') || '')"
               ".split(' ').some((xy) => parseFloat(xy.split(',')[1]) < 38)", timeout=5)

        # The overview of a busy cluster, full size and on a phone.
        drover("submit", "--parsable", "-J", "sweep", "--array", "0-5", "--wrap", "sleep 60")
        p.click("#tabs button[data-view=overview]")
        p.wait("six array tasks running", "document.querySelector('#count-running').textContent === '6'", timeout=20)
        p.wait("busy nodes", "document.querySelectorAll('#node-grid .node.state-IDLE').length === 0")
        p.wait("the sparkline drawn", "!!document.querySelector('#sparkline polyline')")
        p.screenshot("dashboard.png")
        p.call("Emulation.setDeviceMetricsOverride", width=390, height=844, deviceScaleFactor=2, mobile=True)
        time.sleep(0.5)
        width = p.js("document.documentElement.scrollWidth")
        assert width <= 392, f"the overview fits a phone's width: scrollWidth {width}"
        p.screenshot("dashboard-phone.png")
        assert not p.errors, f"JavaScript errors: {p.errors}"
        print("dashboard: all checks passed")
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
