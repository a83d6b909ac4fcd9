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
import sys

from chromium import fail, open_page, save_screenshot  # tests/clients/chromium.py, next to this script


def main():
    url, screenshot = sys.argv[1], sys.argv[2]
    with open_page({"width": 1200, "height": 760}) as (page, problems):
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
                admission: document.getElementById('admission').textContent,
                totals: document.getElementById('totals').textContent,
                jobs: {
                    hidden: document.getElementById('jobs').hidden,
                    queued: document.getElementById('jobs-queued').textContent,
                    running: document.getElementById('jobs-running').textContent,
                    // A point of the succeeded/s line above the baseline: jobs were seen to finish.
                    succeeded_drawn: [...document.querySelectorAll('#chart-jobs polyline.s0')].some((l) =>
                        l.getAttribute('points').split(' ').some((p) => +p.split(',')[1] < 99.9)),
                },
                charts: Object.fromEntries([...document.querySelectorAll('svg.chart')].map((s) =>
                    [s.id, { points: +s.dataset.points, max: +s.dataset.max, lines: s.querySelectorAll('polyline').length }])),
            })"""
        )
        save_screenshot(page, screenshot)
    seen["first_totals"] = first_total
    seen["csp"] = csp
    seen["problems"] = problems
    if problems:
        fail(f"the page reported problems: {problems}", seen)
    if seen["totals"] == first_total:
        fail("the totals did not move while load was sent", seen)
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
