"""The pool explorer at 5,000 and 100,000 points: the map's fit, the widget's first render in a
real browser, and the report's size.

    .venv/bin/python benchmarks/explorer.py                   # 5,000 and 100,000 points
    .venv/bin/python benchmarks/explorer.py --sizes 5000      # one size
    .venv/bin/python benchmarks/explorer.py --no-browser      # fit and report size only

Pool: a synthetic pool of n points (64-d embeddings in the four label x spurious groups, 95%
matched, each group a few clusters), with 32 px images drawn from each point's group when a
thumbnail is asked for (never all at once). Two run records over it (written with
`RunWriter`): "pre-lc" (pretrained) and "unpre-lc" (unpretrained, a noisier embedding of the
same points), each a seed set of 40 and 4 rounds of 50 acquisitions.

Printed per size:
- **fit**: `PoolView(max_points=None).fit()` on the whole pool, the map fitted from nothing
  (openTSNE; FFT gradients from 10,000 points; `--n-jobs` threads), then again with the map
  read from its cache (what every later open costs).
- **render**: the widget (`Explorer`, both maps linked) in JupyterLab driven by headless
  Chromium (Playwright): seconds from running the display cell to both maps' canvases drawn
  (the first screenshot of each canvas with more than 1% non-background pixels), and the
  kernel's time to build the widget, measured in the cell. Then a lasso is drawn with the
  mouse around the middle of the first map: seconds from releasing it to the selection's
  counts and neighbours on the page (the browser, the kernel and back), and how many points
  it caught. Needs jupyterlab, playwright and Debian's chromium.
- **report**: the HTML report's explorer section (`explorer_html`, the report's defaults: a
  sample of 1,500 pool points plus the acquired ones, at most 2,000 thumbnails), in MB, and
  the section with plotly.js (which the report inlines once), the seconds to build the section
  (the sample's map not included).

With --keep FOLDER the maps stay there, and a later run with the same --keep reads them: its
first lines then say "open ... (map cached by an earlier run)" instead of "fit".

The driver of JupyterLab (`lab_server`, `run_notebook`) is shared with the browser test
(tests/report/test_explore.py).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


class LazyImages:
    """Images of a synthetic pool, drawn when indexed: a 32 px square of the point's group
    colour with a bar whose position follows its id."""

    def __init__(self, groups: np.ndarray) -> None:
        self.groups = groups

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, row) -> np.ndarray:
        colours = np.array([[40, 90, 200], [200, 60, 50], [60, 170, 70], [230, 150, 30]], dtype=np.uint8)
        img = np.empty((3, 32, 32), dtype=np.uint8)
        img[:] = colours[self.groups[int(row)]][:, None, None]
        img[:, 12:20, int(row) % 24:int(row) % 24 + 8] = 255
        return img


def synthetic_pool(n: int, *, d: int = 64, noise: float = 1.0, seed: int = 0, tag: str = "pretrained"):
    """(FeatureCache, LazyImages) of a grouped pool of `n` points: label y (25% minority),
    place matching y for 95%, embeddings around a few cluster centres per group."""
    from toolkit.features.cache import FeatureCache

    rng = np.random.default_rng(0)  # the same points and groups for every tag; the embedding differs
    y = (rng.random(n) < 0.25).astype(np.int64)
    place = np.where(rng.random(n) < 0.95, y, 1 - y)
    cluster = rng.integers(0, 3, n)
    group = 2 * y + place
    centres = np.random.default_rng(1).normal(size=(4, 3, d)) * 3
    emb_rng = np.random.default_rng(seed)
    X = centres[group, cluster] + noise * emb_rng.normal(size=(n, d))
    attrs = pd.DataFrame({"y": y, "place": place, "cluster": cluster}, index=pd.Index(np.arange(n) + 10_000, name="id"))
    fp = {"model": "synthetic", "weights": tag, "layer": "penultimate", "dataset": "synthetic",
          "dataset_params": {"n": n, "noise": noise, "seed": seed}, "split": "train", "transform": "none"}
    cache = FeatureCache(Path("<memory>"), fp, attrs.index.to_numpy(), X.astype(np.float32), attrs, "y", "place",
                         ("landbird", "waterbird"))
    return cache, LazyImages(group)


def write_runs(root: Path, ids: np.ndarray, *, rounds: int = 4, per_round: int = 50, seed_size: int = 40) -> list:
    """Two run records over the pool's ids (pretrained and unpretrained least confidence)."""
    from toolkit.record import RunWriter, load_run

    rng = np.random.default_rng(0)
    out = []
    for name, weights in (("pre-lc", "pretrained"), ("unpre-lc", "random")):
        if (root / name / "state.json").exists():  # written by an earlier call (the notebook reads them back)
            out.append(load_run(root / name))
            continue
        picked = rng.choice(ids, seed_size + rounds * per_round, replace=False)
        config = {"model": {"name": "synthetic", "weights": weights}, "al": {"strategy": "least_confidence"},
                  "data": {"name": "synthetic"}, "seed": 0}
        run = RunWriter(root / name, config, {})
        for r in range(rounds):
            chunk = picked[seed_size + r * per_round:seed_size + (r + 1) * per_round]
            run.append_round({"round": r, "n_labels": seed_size + r * per_round, "metrics": {},
                              "acquired": [{"id": int(i), "score": float(rng.random())} for i in chunk],
                              "seed_set": [{"id": int(i)} for i in picked[:seed_size]]}, finished=r == rounds - 1)
        out.append(load_run(root / name))
    return out


def fitted_views(n: int, root: Path, *, n_jobs: int = 1) -> tuple[dict, dict]:
    """{run: fitted PoolView} of the synthetic pool (maps cached under root/maps), and timings."""
    from toolkit.report.explore import PoolView

    pre, pre_images = synthetic_pool(n, tag="pretrained")
    unpre, unpre_images = synthetic_pool(n, noise=2.5, seed=7, tag="random")
    records = write_runs(root / "runs", pre.ids)
    times, views = {}, {}
    for run, cache, images in (("pre-lc", pre, pre_images), ("unpre-lc", unpre, unpre_images)):
        maps_before = len(list((root / "maps").glob("*.npy")))
        t = time.perf_counter()
        views[run] = PoolView(records, map_run=run, max_points=None, cache_dir=root / "maps", n_jobs=n_jobs
                              ).fit(cache, images)
        fitted = len(list((root / "maps").glob("*.npy"))) > maps_before  # else read from an earlier --keep
        times[f"fit {run}" if fitted else f"open {run} (map cached by an earlier run)"] = time.perf_counter() - t
    t = time.perf_counter()
    PoolView(records, map_run="pre-lc", max_points=None, cache_dir=root / "maps").fit(pre, pre_images)
    times["open again (map cached)"] = time.perf_counter() - t
    return views, times


# --- JupyterLab, driven by headless Chromium ---------------------------------------------------
def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def lab_server(notebook_dir: Path, env: dict | None = None):
    """A JupyterLab server on notebook_dir with the toolkit's Python as its kernel; yields its
    base URL (with the token). Stopped (its own process only) on exit."""
    port, token = _free_port(), "altk-test"
    cmd = [sys.executable, "-m", "jupyterlab", f"--notebook-dir={notebook_dir}", "--no-browser", f"--port={port}",
           "--ip=127.0.0.1", f"--IdentityProvider.token={token}", "--ServerApp.disable_check_xsrf=True",
           "--LabApp.expose_app_in_browser=True", "--ServerApp.open_browser=False"]
    if hasattr(os, "getuid") and os.getuid() == 0:
        cmd.append("--allow-root")
    # its own settings (no news pop-up over the page) and workspaces, not the user's
    settings = notebook_dir / ".lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(notebook_dir / ".lab-settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(notebook_dir / ".lab-workspaces"), **(env or {})}
    log = open(notebook_dir / "lab.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited: {(notebook_dir / 'lab.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}", token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def write_notebook(path: Path, cells: list[str]) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def open_notebook(page, base: str, token: str, name: str) -> None:
    """Open a notebook in JupyterLab and wait for its kernel."""
    page.goto(f"{base}/lab/tree/{name}?token={token}")
    page.wait_for_function("window.jupyterapp && document.querySelector('.jp-Notebook')", timeout=120_000)
    deadline = time.time() + 120
    while time.time() < deadline:  # JupyterLab may ask which kernel: the default (the server's Python) is right
        accept = page.locator(".jp-Dialog .jp-mod-accept")
        if accept.count():
            accept.first.click()
        ready = page.evaluate("""() => { const w = window.jupyterapp.shell.currentWidget;
            const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
            return !!k && k.connectionStatus === 'connected' && k.status === 'idle'; }""")
        if ready:
            return
        time.sleep(0.5)
    raise TimeoutError("the notebook's kernel did not start within 120 s")


def run_cell(page, index: int, timeout_s: float = 600) -> float:
    """Run the notebook's cell `index` through JupyterLab's own commands; wait until it has an
    execution count (it finished); return the seconds it took."""
    page.evaluate(f"""() => {{ const nb = window.jupyterapp.shell.currentWidget.content;
        nb.activeCellIndex = {index}; return window.jupyterapp.commands.execute('notebook:run-cell'); }}""")
    t = time.perf_counter()
    page.wait_for_function(f"""() => {{ const c = window.jupyterapp.shell.currentWidget.content.widgets[{index}];
        const p = c.node.querySelector('.jp-InputPrompt');
        return c.model.executionCount !== null && p && p.textContent.indexOf('*') < 0; }}""",
                           timeout=timeout_s * 1000)
    return time.perf_counter() - t


def cell_text(page, index: int) -> str:
    return page.evaluate(f"""() => window.jupyterapp.shell.currentWidget.content.widgets[{index}]
        .node.querySelector('.jp-Cell-outputWrapper').innerText""")


def canvases_drawn(page, cell: int, n_maps: int, timeout_s: float = 300, min_ink: float = 0.01) -> float:
    """Seconds until the cell's first `n_maps` jupyter-scatter canvases each show points: more
    than `min_ink` of their pixels differ from the background (read from screenshots)."""
    from io import BytesIO

    from PIL import Image

    t0 = time.perf_counter()
    sel = f".jp-Notebook .jp-Cell:nth-child({cell + 1}) .jp-OutputArea canvas"
    while time.perf_counter() - t0 < timeout_s:
        canvases = page.locator(sel)
        if canvases.count() >= n_maps:
            inks = []
            for i in range(n_maps):
                box = canvases.nth(i).bounding_box()
                if not box or box["width"] < 10:
                    break
                png = page.screenshot(clip=box)
                a = np.asarray(Image.open(BytesIO(png)).convert("L"), dtype=np.int16)
                inks.append(float((np.abs(a - np.median(a)) > 30).mean()))
            if len(inks) == n_maps and min(inks) > min_ink:
                return time.perf_counter() - t0
        time.sleep(0.1)
    raise TimeoutError(f"the maps did not draw within {timeout_s} s")


def drag(page, canvas, path, *, steps: int = 12, release: bool = True) -> None:
    """Press, move along `path` (fractions of the canvas's box) and (unless `release` is False)
    release: a lasso drawn by hand."""
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    at = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in path]
    page.mouse.move(*at[0])
    page.mouse.down()
    for x, y in at[1:]:
        page.mouse.move(x, y, steps=steps)
    if release:
        page.mouse.up()


def browser(playwright):
    return playwright.chromium.launch(executable_path=chromium(), args=[
        "--no-sandbox", "--enable-unsafe-swiftshader", "--use-angle=swiftshader", "--ignore-gpu-blocklist"])


# --- the benchmark ----------------------------------------------------------------------------
RENDER_CELLS = [
    """import sys, time, pickle
sys.path.insert(0, {bench!r})
from explorer import fitted_views
views, _ = fitted_views({n}, __import__('pathlib').Path({root!r}))""",
    """t = time.perf_counter()
from toolkit.report.explore import Explorer
explorer = Explorer(views['pre-lc'], runs=['pre-lc', 'unpre-lc'], maps=views)
print(f'built in {{time.perf_counter() - t:.2f}} s')
explorer""",
]


def measure_render(n: int, root: Path) -> dict:
    from playwright.sync_api import sync_playwright

    write_notebook(root / "render.ipynb", [c.format(bench=str(ROOT / "benchmarks"), n=n, root=str(root))
                                           for c in RENDER_CELLS])
    with lab_server(root) as (base, token), sync_playwright() as p:
        b = browser(p)
        page = b.new_page(viewport={"width": 1400, "height": 1100})
        open_notebook(page, base, token, "render.ipynb")
        run_cell(page, 0)  # the views, maps read from the cache the fit left
        t = time.perf_counter()
        page.evaluate("""() => { const nb = window.jupyterapp.shell.currentWidget.content;
            nb.activeCellIndex = 1; window.jupyterapp.commands.execute('notebook:run-cell'); }""")
        canvases_drawn(page, 1, 2)
        drawn = time.perf_counter() - t  # from the run command to both maps drawn
        text = cell_text(page, 1)
        # a lasso around the middle of the first map: from releasing the mouse to the selection's
        # counts, thumbnails and neighbours on the page (browser -> kernel -> browser)
        widget = page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".jp-OutputArea-output:has(canvas)").first
        widget.locator("[title='Activate lasso selection']").first.click()
        drag(page, widget.locator("canvas").first, [(0.35, 0.35), (0.65, 0.35), (0.65, 0.65), (0.35, 0.65),
                                                    (0.35, 0.35)], release=False)
        t = time.perf_counter()
        page.mouse.up()
        page.wait_for_function("() => document.body.innerText.indexOf(' selected in ') >= 0", timeout=120_000)
        page.wait_for_function("() => document.body.innerText.indexOf('Nearest neighbours of') >= 0",
                               timeout=120_000)
        lasso = time.perf_counter() - t
        selected = int(page.evaluate("() => document.body.innerText.split(' selected in ')[0].split(/\\s/).pop()"))
        b.close()
    built = float(text.split("built in ")[1].split(" s")[0]) if "built in" in text else float("nan")
    return {"render (run cell to both maps drawn) s": drawn, "widget built in the kernel s": built,
            "lasso to table on the page s": lasso, "points lassoed": selected}


def report_size(views: dict) -> dict:
    from toolkit.report.explore import PoolView, explorer_html

    pre = views["pre-lc"]
    sample = PoolView(pre.records, map_run="pre-lc", cache_dir=None).fit(
        *synthetic_pool(len(pre.ids_), tag="pretrained"))
    t = time.perf_counter()
    section = explorer_html(sample, ["pre-lc", "unpre-lc"])
    built = time.perf_counter() - t
    import plotly.offline

    plotly_js = len(plotly.offline.get_plotlyjs().encode())
    return {"report explorer section MB": len(section.encode()) / 1e6, "report points on the map": len(sample.points_),
            "report page with plotly.js MB": (len(section.encode()) + plotly_js) / 1e6, "report section built s": built}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="5000,100000")
    ap.add_argument("--n-jobs", type=int, default=1)
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--keep", type=Path, default=None, help="a folder to keep the maps and notebooks in")
    args = ap.parse_args(argv)
    rows = {}
    for n in [int(s) for s in args.sizes.split(",")]:
        root = Path(tempfile.mkdtemp(prefix=f"explorer-{n}-")) if args.keep is None else args.keep / str(n)
        root.mkdir(parents=True, exist_ok=True)
        views, times = fitted_views(n, root, n_jobs=args.n_jobs)
        row = {f"{k} s": v for k, v in times.items()}
        row.update(report_size(views))
        if not args.no_browser and chromium():
            row.update(measure_render(n, root))
        rows[n] = row
        print(json.dumps({n: row}, indent=1), flush=True)
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    table = pd.DataFrame(rows)
    with pd.option_context("display.float_format", "{:.2f}".format, "display.width", 160):
        print(table)


if __name__ == "__main__":
    main()
