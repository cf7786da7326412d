"""The docs' notebook pages: each notebook executed at its default settings, with its figures.

    .venv/bin/python docs/execute_notebooks.py                 # all of them -> docs/notebooks/*.ipynb
    .venv/bin/python docs/execute_notebooks.py 06_task_suite   # one (its name or stem)

Each notebook runs top to bottom from `notebooks/`, as `./run lab` runs it, at the settings a
reader gets (never the tests' small ones), against the cache root (the pretrained toy backbone
and the demo's runs: run `./run demo` first). The executed copy is written to
`docs/notebooks/` (committed; the site renders it) with the digest of the notebook's source
cells, so the docs build and `tests/test_docs.py` refuse a copy whose notebook has changed since.

Plotly figures are stored as HTML that draws them with the site's own plotly.js (the notebook
renderer drops plotly's JSON output). A copy is refused, and nothing is written, when a cell
fails or an output names a folder of this machine (the repository, the cache root, home).
"""
from __future__ import annotations

import datetime
import os
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).parent))
from hooks import EXECUTED, NOTEBOOKS, source_digest  # noqa: E402

from toolkit._util.atomic import atomic_path  # noqa: E402
from toolkit._util.paths import cache_root  # noqa: E402

PLOTLY = "application/vnd.plotly.v1+json"


def plotly_as_html(nb) -> int:
    """Replace each plotly output's JSON by HTML drawing it (plotly.js comes from the page)."""
    import plotly.io as pio

    n = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if PLOTLY in data:
                fig = pio.from_json(nbformat.v4.nbjson.json.dumps(data.pop(PLOTLY)), skip_invalid=True)
                data["text/html"] = pio.to_html(fig, include_plotlyjs=False, full_html=False,
                                                config={"responsive": True}, div_id=f"altk-figure-{n}")
                n += 1
    return n


PROGRESS_BAR = re.compile(r"\d+%\|")


def _is_progress_bar(out) -> bool:
    if out.get("output_type") == "stream":
        return out.get("name") == "stderr" and bool(PROGRESS_BAR.search(out["text"]))
    data = out.get("data", {})  # tqdm.auto's ipywidgets bar: a widget view, text "desc:  0%|"
    return "application/vnd.jupyter.widget-view+json" in data and bool(PROGRESS_BAR.search(data.get("text/plain", "")))


def drop_progress_bars(nb) -> int:
    """Remove tqdm's progress bars (widgets or stderr text): noise on a static page."""
    n = 0
    for cell in nb.cells:
        if "outputs" in cell:
            keep = [o for o in cell.outputs if not _is_progress_bar(o)]
            n, cell.outputs = n + len(cell.outputs) - len(keep), keep
    if not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", [])):
        nb.metadata.pop("widgets", None)  # the saved state of the bars' widgets
    return n


WIDGET = "application/vnd.jupyter.widget-view+json"
# A widget is live only in a kernel: on its page, a screenshot of it taken in JupyterLab
# (docs/screenshots.py), else a line saying so.
WIDGET_SHOTS = {"07_explore_the_pool": ("../../img/explorer-lab.png", "The explorer in JupyterLab")}


def static_widgets(nb, stem: str) -> int:
    shot = WIDGET_SHOTS.get(stem)
    note = "<p><em>An interactive widget: it runs when you execute the notebook in JupyterLab (<code>./run lab</code>).</em></p>"
    html = note + (f'<p><img src="{shot[0]}" alt="{shot[1]}" style="max-width:100%"></p>' if shot else "")
    n = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if WIDGET in out.get("data", {}):
                out["data"] = {"text/html": html, "text/plain": "(an interactive widget)"}
                n += 1
    if n:
        nb.metadata.pop("widgets", None)
    return n


def machine_paths_in(nb) -> list[str]:
    """Outputs that name a folder of the machine that ran them."""
    folders = {str(Path(__file__).resolve().parents[1]), str(cache_root().resolve()), str(Path.home()), "/tmp/"}
    hits = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            text = out.get("text", "") + "".join(str(v) for v in out.get("data", {}).values())
            hits += [f"cell {i}: {_around(text, folder)}" for folder in folders if folder in text]
    return hits


def _around(text: str, folder: str) -> str:
    at = text.index(folder)
    return text[max(0, at - 60):at + 60].replace("\n", " ")


class NotExecuted(Exception):
    """A notebook whose copy was refused (nothing written)."""


def execute(path: Path) -> Path:
    nb = nbformat.read(path, as_version=4)
    started = time.perf_counter()
    env_small = os.environ.pop("ALTK_SMALL", None)  # a reader's settings, never the tests' small ones
    try:
        NotebookClient(nb, timeout=None, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        if env_small is not None:
            os.environ["ALTK_SMALL"] = env_small
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    if errors:
        raise NotExecuted(f"{path.name}: a cell failed ({errors[0].get('ename')}: {errors[0].get('evalue')}); nothing written")
    figures = plotly_as_html(nb)
    drop_progress_bars(nb)
    static_widgets(nb, path.stem)
    if hits := machine_paths_in(nb):
        raise NotExecuted(f"{path.name}: outputs name this machine's folders ({'; '.join(hits[:5])}); print paths "
                         "relative to the cache root (toolkit._util.paths.shown). Nothing written.")
    seconds = time.perf_counter() - started
    nb.metadata["altk"] = {"source_sha256": source_digest(path), "executed": datetime.date.today().isoformat(),
                           "seconds": round(seconds), "command": f".venv/bin/python docs/execute_notebooks.py {path.stem}"}
    EXECUTED.mkdir(exist_ok=True)
    with atomic_path(EXECUTED / path.name) as tmp:
        nbformat.write(nb, tmp)
    print(f"{path.name}: {figures} figure(s), {seconds:.0f} s -> docs/notebooks/{path.name}", flush=True)
    return EXECUTED / path.name


def main(names: list[str]) -> None:
    chosen = [p for p in NOTEBOOKS if not names or p.name in names or p.stem in names]
    if names and len(chosen) != len(names):
        raise SystemExit(f"unknown notebook(s) in {names}; expected names from {[p.stem for p in NOTEBOOKS]}")
    failed = []
    for path in chosen:  # one refused copy does not stop the others
        try:
            execute(path)
        except NotExecuted as err:
            print(err, flush=True)
            failed.append(path.stem)
    if failed:
        raise SystemExit(f"not written: {' '.join(failed)}")


if __name__ == "__main__":
    main(sys.argv[1:])
