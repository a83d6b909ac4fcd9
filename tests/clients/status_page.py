#!/usr/bin/env python3
"""Opens floodgate's status page in headless Chromium (Debian's, driven by Playwright).

Usage: status_page.py URL SCREENSHOT

Checks that the page loads with no console error, no page error and no failed request (a
Content-Security-Policy violation is a console error), that it connects to its stream, and
that its numbers move while the caller sends load: requests/s above zero, the total of
requests growing across messages, and every chart drawn with at least five points. Saves a
screenshot to SCREENSHOT. Prints one JSON line with what it saw; exits non-zero with the
reason otherwise.
"""
import json
import os
import sys

from playwright.sync_api import sync_playwright

# Chromium's background services try to reach Google's hosts; on a closed network they only
# add noise and refused connections.
ARGS = [
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def main():
    url, screenshot = sys.argv[1], sys.argv[2]
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    problems = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 760})
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))
        response = page.goto(url)
        if response is None or response.status != 200:
            fail(f"GET {url}: {response and response.status}")
        csp = response.headers.get("content-security-policy", "")
        page.wait_for_selector('#state[data-state="live"]', timeout=15_000)
        first_total = page.text_content("#totals")
        page.wait_for_function(
            """() => {
                const rps = parseFloat(document.getElementById('rps').textContent.replace(/,/g, ''));
                const points = [...document.querySelectorAll('svg.chart')].map((s) => +(s.dataset.points || 0));
                return rps > 0 && points.every((n) => n >= 5);
            }""",
            timeout=30_000,
        )
        seen = page.evaluate(
            """() => ({
                rps: document.getElementById('rps').textContent,
                p50: document.getElementById('p50').textContent,
                p99: document.getElementById('p99').textContent,
                workers: document.getElementById('workers').textContent,
                queue: document.getElementById('queue').textContent,
                totals: document.getElementById('totals').textContent,
                charts: Object.fromEntries([...document.querySelectorAll('svg.chart')].map((s) =>
                    [s.id, { points: +s.dataset.points, max: +s.dataset.max, lines: s.querySelectorAll('polyline').length }])),
            })"""
        )
        page.screenshot(path=screenshot, full_page=True)
        browser.close()
    seen["first_totals"] = first_total
    seen["csp"] = csp
    seen["problems"] = problems
    if problems:
        fail(f"the page reported problems: {problems}", seen)
    if seen["totals"] == first_total:
        fail("the totals did not move while load was sent", seen)
    print(json.dumps(seen))


def fail(reason, seen=None):
    print(json.dumps({"error": reason, "seen": seen}))
    sys.exit(1)


if __name__ == "__main__":
    main()
