#!/usr/bin/env python3
"""Opens a floodgate-load HTML report in headless Chromium (Debian's, driven by Playwright).

Usage: html_report.py REPORT.html SCREENSHOT

Opens the file over file:// and checks that the page loads with no console error or
warning, no page error and no request other than the file itself (the report must be
self-contained), and that every chart (svg.chart) is drawn with data: a visible size, a
data-points count above zero, every line series with points on screen (a polyline with
coordinates, or a marker for a single point) and every bar wider than zero. Saves a
full-page screenshot to SCREENSHOT. Prints one JSON line with what it saw: the charts and
their data attributes, every figure with a data-value (its value and its text), and the
JSON report embedded in the page; exits non-zero with the reason otherwise.
"""
import json
import pathlib
import sys

# The browser driver shared with floodgate's own browser checks, in the repository's
# tests/clients/.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[4] / "tests" / "clients"))
from chromium import fail, open_page, save_screenshot  # noqa: E402

SEE = """() => {
    const charts = [...document.querySelectorAll('svg.chart')].map((svg) => {
        const box = svg.getBoundingClientRect();
        return {
            id: svg.id,
            kind: svg.dataset.kind,
            points: +svg.dataset.points,
            width: box.width,
            height: box.height,
            series: [...svg.querySelectorAll('polyline.series')].map((p) => ({
                name: p.dataset.name,
                points: +p.dataset.points,
                values: p.dataset.values,
                drawn: p.getAttribute('points').trim().split(/\\s+/).filter((s) => s).length,
                markers: p.parentNode.querySelectorAll('circle.marker').length,
            })),
            bars: [...svg.querySelectorAll('rect.bar')].map((r) => ({
                label: r.dataset.label,
                value: +r.dataset.value,
                width: r.getBBox().width,
            })),
            rules: [...svg.querySelectorAll('line.rule')].map((l) => +l.dataset.value),
        };
    });
    const figures = Object.fromEntries([...document.querySelectorAll('[id][data-value]')].map((e) =>
        [e.id, { value: e.dataset.value, text: e.textContent }]));
    const json = document.getElementById('report-json');
    return { title: document.title, charts, figures, json: json ? json.textContent : null };
}"""


def main():
    report, screenshot = pathlib.Path(sys.argv[1]).resolve(), sys.argv[2]
    url = report.as_uri()
    with open_page({"width": 1200, "height": 900}) as (page, problems):
        page.on("request", lambda r: problems.append(f"request for another resource: {r.url}") if r.url != url else None)
        page.goto(url, wait_until="load")
        seen = page.evaluate(SEE)
        save_screenshot(page, screenshot)
    seen["problems"] = problems
    if problems:
        fail(f"the page reported problems: {problems}", seen)
    if not seen["charts"]:
        fail("the page has no chart", seen)
    for chart in seen["charts"]:
        if chart["points"] <= 0 or chart["width"] < 100 or chart["height"] < 30:
            fail(f"chart {chart['id']} is not drawn with data", seen)
        if chart["kind"] == "line":
            if not chart["series"]:
                fail(f"chart {chart['id']} has no series", seen)
            for s in chart["series"]:
                if s["points"] <= 0 or (s["drawn"] < 2 and s["markers"] == 0):
                    fail(f"series {s['name']} of chart {chart['id']} is not drawn", seen)
        else:
            if not chart["bars"] or any(b["width"] <= 0 for b in chart["bars"]):
                fail(f"chart {chart['id']} has no bars", seen)
    if seen["json"] is None:
        fail("the page does not carry its JSON report", seen)
    seen["json"] = json.loads(seen["json"])
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
