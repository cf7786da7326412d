"""The explorer's screenshots, taken with headless Chromium (Debian's `chromium`).

    .venv/bin/python docs/screenshots.py report    # docs/img/explorer-report.png (needs cache/demo)
    .venv/bin/python docs/screenshots.py lab       # docs/img/explorer-{lab,selection,linked}.png: needs
                                                   # jupyter-scatter, jupyterlab and playwright

The lab shots are the browser test's (tests/report/test_explore.py::test_explorer_in_jupyterlab,
run with ALTK_SCREENSHOTS=docs/img): JupyterLab opens a notebook with the widget over the
test's tiny runs, the maps draw, a lasso is drawn with the mouse after a click on the toolbar's
lasso button, and the widget is captured after rendering and after the lasso, and the linked
maps alone. Every image is saved as an 8-bit palette PNG to stay small.
"""
from __future__ import annotations

import sys
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


def lab_shot() -> None:
    import os
    import subprocess

    root = DOCS.parent
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    "tests/report/test_explore.py::test_explorer_in_jupyterlab"],
                   cwd=root, env={**os.environ, "ALTK_SCREENSHOTS": str(DOCS / "img"), "HF_HUB_OFFLINE": "1"},
                   check=True)
    for name in ("explorer-lab", "explorer-selection", "explorer-linked"):
        png = DOCS / "img" / f"{name}.png"
        print(f"{png}: {png.stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    {"report": report_shot, "lab": lab_shot}[sys.argv[1]]()
