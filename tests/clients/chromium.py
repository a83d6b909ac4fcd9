"""Headless Chromium for the browser checks: Debian's (or the one CHROMIUM names), driven by
Playwright from the test tools' Python.

Shared by tests/clients/status_page.py and crates/floodgate-load/tests/clients/html_report.py
(which imports it by path): launching the browser, collecting what a page reports as a
problem (a console error or warning, a page error, a failed request), saving a screenshot
and failing with one JSON line.
"""
import contextlib
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


@contextlib.contextmanager
def open_page(viewport):
    """Yields a new page of headless Chromium with the given viewport ({"width", "height"})
    and the list of problems the page reports, appended as they happen; closes the browser
    on leaving."""
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    problems = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport=viewport)
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))
            yield page, problems
        finally:
            browser.close()


def save_screenshot(page, path):
    """Saves a screenshot of the whole page (not only the viewport) to path, as PNG."""
    page.screenshot(path=path, full_page=True)


def fail(reason, seen=None):
    """Prints one JSON line with the reason and what was seen, and exits 1."""
    print(json.dumps({"error": reason, "seen": seen}))
    sys.exit(1)
