"""A browser-automation driver as Playwright's would be, for the tests with real Chromium.

`DRIVER` starts headless Chromium with a profile per generation (a replacement starts
beside the browser it replaces, and two browsers cannot share one profile), then opens
tabs through the DevTools HTTP endpoint, each page holding an array of numbers.

    python -c DRIVER PROFILE TABS ARRAY_LENGTH PAUSE_S [PID_FILE]

After the tabs it writes the browser's pid to PID_FILE-GENERATION, if given, and waits on
the browser, so the tree stays whole until memwarden stops it.
"""

DRIVER = r"""
import json, os, subprocess, sys, time, urllib.parse, urllib.request
tabs, length, pause = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
generation = os.environ["MEMWARDEN_GENERATION"]
profile = f"{sys.argv[1]}-{generation}"
browser = subprocess.Popen([
    "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-quic", f"--user-data-dir={profile}", "--remote-debugging-port=0",
    "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
port_file = os.path.join(profile, "DevToolsActivePort")
deadline = time.monotonic() + 60
while not os.path.exists(port_file) or not open(port_file).read().strip():
    if time.monotonic() > deadline:
        sys.exit("chromium did not start")
    time.sleep(0.05)
port = open(port_file).read().split()[0]
page = f"data:text/html,<script>var a=new Array({length}).fill(7);</script><p>tab</p>"
for _ in range(tabs):
    url = f"http://127.0.0.1:{port}/json/new?{urllib.parse.quote(page, safe='')}"
    json.load(urllib.request.urlopen(urllib.request.Request(url, method="PUT"), timeout=30))
    time.sleep(pause)
if len(sys.argv) > 5:
    open(f"{sys.argv[5]}-{generation}", "w").write(str(browser.pid))
browser.wait()
"""
