"""The HTML report in a real browser: its size, the explorer's share, and how long it takes to load.

    .venv/bin/python benchmarks/report_page.py cache/demo [--out /tmp/report.html] [--screenshot docs/x.png]

Builds the report of the runs under the folder (or reads --html), then opens it in headless
Chromium (Debian's `chromium`) and reads the browser's own timings: the load event, and the
moment every plotly figure has drawn. Hover and click are sent to the first explorer map
through plotly's event API, and the result is checked: a thumbnail and facts shown, and
the neighbours listed. With --screenshot, the explorer alone (plotly.js and its section)
is rendered in that state to a PNG.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

PROBE = """<script>
window.addEventListener('load', function(){
  var nav = performance.getEntriesByType('navigation')[0];
  var drawn = document.querySelectorAll('.plotly-graph-div .main-svg').length;
  var figures = document.querySelectorAll('.plotly-graph-div').length;
  var d = document.getElementById('explore-0');
  if (d) { var tr = d._fullData[d._fullData.length - 1], id = tr.customdata[0];
    d.emit('plotly_hover', {points: [{customdata: id}]}); d.emit('plotly_click', {points: [{customdata: id}]}); }
  var out = document.createElement('pre'); out.id = 'probe-result';
  out.textContent = JSON.stringify({load_ms: nav.loadEventStart, dom_ms: nav.domContentLoadedEventEnd,
    figures: figures, drawn_svgs: drawn, script_ms: performance.now(),
    thumb: (document.getElementById('explore-thumb') || {}).src ? 1 : 0,
    neighbours: document.querySelectorAll('#explore-neighbours img').length});
  document.body.appendChild(out);
});
</script></body>"""


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        raise SystemExit("needs Chromium: apt-get install chromium")
    return exe


def measure(page: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.html"
        probe.write_text(page.read_text().replace("</body>", PROBE))
        t0 = time.perf_counter()
        out = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader", "--dump-dom", probe.as_uri()],
                             capture_output=True, text=True, timeout=300)
        wall = time.perf_counter() - t0
    found = re.search(r'<pre id="probe-result">(.*?)</pre>', out.stdout, re.S)
    if not found:
        raise SystemExit(f"the probe did not run; chromium said:\n{out.stderr[-2000:]}")
    result = json.loads(found.group(1).replace("&quot;", '"'))
    result["chromium_wall_s"] = wall
    return result


def screenshot(page: Path, png: Path, width: int = 1100, height: int = 760) -> None:
    """The explorer section alone (plotly.js + its HTML), after a hover and a click."""
    text = page.read_text()
    plotly_js = re.search(r"<script[^>]*>/\*\*\s*\* plotly\.js.*?</script>", text, re.S)
    start = text.index("<h2>Explore the pool")
    head = "<!doctype html><html><head><meta charset='utf-8'><style>" + re.search(r"<style>(.*?)</style>", text, re.S).group(1)
    body = text[start:text.index("</body>")]
    with tempfile.TemporaryDirectory() as tmp:
        alone = Path(tmp) / "explorer.html"
        alone.write_text(head + "#probe-result{display:none}</style></head><body>" + (plotly_js.group(0) if plotly_js else "") + body
                         + PROBE.replace("</body>", "") + "</body></html>")
        png.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader", "--hide-scrollbars",
                        f"--window-size={width},{height}", f"--screenshot={png.resolve()}", alone.as_uri()],
                       capture_output=True, timeout=300, check=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="?", help="a folder of runs (demo, sweep)")
    ap.add_argument("--html", default=None, help="an existing report instead of building one")
    ap.add_argument("--out", default="/tmp/report-page.html")
    ap.add_argument("--screenshot", default=None)
    args = ap.parse_args()
    page = Path(args.html) if args.html else None
    if page is None:
        import toolkit

        t0 = time.perf_counter()
        page = toolkit.load_runs(args.runs).report(args.out)
        print(f"built {page} in {time.perf_counter() - t0:.1f} s")
    text = page.read_text()
    explorer = len(text) - text.index("<h2>Explore the pool") if "<h2>Explore the pool" in text else 0
    thumbs = text.count("data:image/webp;base64,")
    print(f"page {len(text) / 1e6:.2f} MB; explorer section {explorer / 1e6:.2f} MB with {thumbs} WebP thumbnails")
    r = measure(page)
    print(f"headless Chromium: DOM ready {r['dom_ms']:.0f} ms, load event {r['load_ms']:.0f} ms, "
          f"{r['figures']} figures drawn ({r['drawn_svgs']} svg layers); hover showed a thumbnail: {bool(r['thumb'])}, "
          f"click listed {r['neighbours']} neighbours; chromium process {r['chromium_wall_s']:.1f} s")
    if args.screenshot:
        screenshot(page, Path(args.screenshot))
        print(f"screenshot: {args.screenshot} ({Path(args.screenshot).stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
