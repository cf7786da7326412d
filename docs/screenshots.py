"""The README's two explorer screenshots, taken with headless Chromium (Debian's `chromium`).

    .venv/bin/python docs/screenshots.py report    # docs/img/explorer-report.png (needs cache/demo)
    .venv/bin/python docs/screenshots.py lab       # docs/img/explorer-lab.png: needs `pip install playwright`
                                                   # and a lab started with
    ./run lab --port 8899 --ServerApp.token=altk --LabApp.expose_app_in_browser=True

The lab shot opens notebooks/07_explore_the_pool.ipynb, runs every cell through
JupyterLab's own command, moves the mouse onto the first acquired point of the left map
and clicks it (so the widget's Python callbacks run), and captures the explorer's output.
Both images are saved as 8-bit palette PNGs to stay small.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from PIL import Image

DOCS = Path(__file__).parent


def shrink(png: Path) -> None:
    Image.open(png).convert("RGB").quantize(colors=128).save(png, optimize=True)


def report_shot() -> None:
    sys.path.insert(0, str(DOCS.parent / "benchmarks"))
    from report_page import screenshot

    import toolkit

    page = toolkit.load_runs(toolkit.cache_path("demo")).report("/tmp/report-for-screenshot.html")
    out = DOCS / "img" / "explorer-report.png"
    screenshot(page, out, width=1100, height=820)
    shrink(out)


def lab_shot(url: str = "http://127.0.0.1:8899/lab/tree/07_explore_the_pool.ipynb?token=altk") -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--enable-unsafe-swiftshader"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(url)
        page.wait_for_function("window.jupyterapp && document.querySelector('.jp-Notebook')", timeout=120_000)
        time.sleep(8)  # the kernel starts
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        # the explorer's figure: a plotly graph inside a widget output
        page.wait_for_selector(".jp-OutputArea .widget-vbox .js-plotly-plot .scatterlayer", timeout=600_000)
        time.sleep(3)
        plot = page.locator(".jp-OutputArea .widget-vbox .js-plotly-plot").first  # the explorer, not the curves
        plot.scroll_into_view_if_needed()
        star = plot.locator(".scatterlayer .trace").last.locator("path.point").first
        box = star.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        time.sleep(2)
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        time.sleep(4)
        widget = page.locator(".jp-OutputArea-output .widget-vbox").first
        widget.scroll_into_view_if_needed()
        out = DOCS / "img" / "explorer-lab.png"
        widget.screenshot(path=str(out))
        browser.close()
    shrink(out)
    print(f"{out}: {out.stat().st_size / 1e3:.0f} kB; revert the notebook JupyterLab saved: "
          f"git checkout notebooks/07_explore_the_pool.ipynb")


if __name__ == "__main__":
    {"report": report_shot, "lab": lab_shot}[sys.argv[1]]()
