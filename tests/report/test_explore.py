"""The notebook API (issue #14): `load_runs` and its thin wrappers, the pool view, the explorer
widget (issue #35: jupyter-scatter) driven through its Python model and in JupyterLab, its section
of the HTML report, and progress bars."""
import dataclasses
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from toolkit.al.loop import run_active_learning
from toolkit.analysis import final_summary, label_efficiency_table, learning_curves, tidy_rounds
from toolkit.errors import RecordError


@pytest.fixture(scope="module")
def runs_dir(tiny_backbone, tmp_path_factory):
    """Three tiny runs on one pool: pretrained least confidence (keeping its pool outputs) and random,
    unpretrained least confidence."""
    from conftest import TINY_DATA

    from toolkit.config import resolve_config

    root = tmp_path_factory.mktemp("explore")
    base = resolve_config("toy", {
        "data": {"params": {**TINY_DATA, "cache_dir": str(root / "data")}},
        "model": {"weights": str(tiny_backbone)},
        "finetune": {"max_steps": 6, "micro_batch": 16},
        "al": {"seed_size": 10, "per_round": 5, "budget": 10},
        "eval_batch_size": 128,
    })
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALTK_CACHE", str(root / "cache"))  # feature caches (for the map) go under root/cache
        for name, weights, strategy in (("pre-lc", str(tiny_backbone), "least_confidence"),
                                        ("pre-random", str(tiny_backbone), "random"),
                                        ("unpre-lc", "random", "least_confidence")):
            cfg = dataclasses.replace(base, model=dataclasses.replace(base.model, weights=weights),
                                      al=dataclasses.replace(base.al, strategy=strategy,
                                                             save_pool_outputs=name == "pre-lc"))
            run_active_learning(cfg, root / "runs" / name, log=None)
    return root


@pytest.fixture
def in_root(runs_dir, monkeypatch):
    monkeypatch.setenv("ALTK_CACHE", str(runs_dir / "cache"))
    return runs_dir


def test_load_runs_in_three_lines_wraps_the_analyses(in_root):
    import toolkit

    runs = toolkit.load_runs(in_root)  # a folder with runs/ inside, as a sweep or demo writes
    assert len(runs) == 3 and runs.split == "test" and "random/least_confidence x1" in repr(runs)
    tidy = tidy_rounds(runs.records)
    pd.testing.assert_frame_equal(runs.summary(), final_summary(tidy, ["test/worst_group", "test/accuracy"]))
    pd.testing.assert_frame_equal(runs.curves("accuracy"), learning_curves(tidy, "test/accuracy"))
    pd.testing.assert_frame_equal(runs.efficiency(), label_efficiency_table(tidy, "test/accuracy"))
    fig = runs.figure("learning_curves")
    assert len(fig.data) > 0 and fig.layout.title.text == "test/worst_group"
    assert runs.figure("upsampling").data
    assert runs["unpre-lc"].weights == "random"
    with pytest.raises(ValueError, match="unknown figure 'tsne'; valid: learning_curves, upsampling"):
        runs.figure("tsne")
    with pytest.raises(KeyError, match="no run 'x'; runs: pre-lc"):
        runs["x"]
    with pytest.raises(FileNotFoundError, match="no run records .* make some with ./run demo"):
        toolkit.load_runs(in_root / "data")
    assert len(toolkit.load_runs(in_root / "runs" / "pre-lc")) == 1  # one run folder works too


def test_pool_view_points_neighbours_and_cached_map(in_root):
    from toolkit.record import load_run
    from toolkit.report.explore import PoolView

    records = [load_run(in_root / "runs" / n) for n in ("pre-lc", "pre-random", "unpre-lc")]
    view = PoolView(records, max_points=100, k=5).fit()
    assert view.map_run_ == "pre-lc" and view.rounds_ == 1  # two acquisitions of 5, after rounds 0 and 1
    for run, acq in view.acquired_.items():
        assert set(acq["id"]) <= set(view.points_.index)  # every acquired point is on the map
        assert len(view.acquired_upto(run, 0)) == 5 and len(view.acquired_upto(run, 1)) == 10
    first = int(view.acquired_["pre-lc"]["id"].iloc[0])
    facts = view.describe(first)
    assert facts["pre-lc"]["round"] == 0 and facts["group"] == view.group_of(first)
    # neighbours equal brute force in the full embedding, nearest first, the point itself left out
    nb = view.neighbours(first)
    row = int(np.flatnonzero(view.ids_ == first)[0])
    d = ((view.embeddings_ - view.embeddings_[row]) ** 2).sum(1)
    d[row] = np.inf
    assert list(nb["id"]) == list(view.ids_[np.argsort(d, kind="stable")[:5]]) and first not in set(nb["id"])
    assert view.thumbnail(first)[:4] == b"\x89PNG" and view.thumbnail(first, 32, "webp")[8:12] == b"WEBP"
    maps = list((in_root / "cache" / "maps").glob("*.npy"))
    assert len(maps) == 1
    again = PoolView(records, max_points=100, k=5).fit()  # the map is read back, not refitted
    np.testing.assert_array_equal(again.points_[["x", "y"]].to_numpy(), view.points_[["x", "y"]].to_numpy())
    other_seed = PoolView(records, max_points=100, k=5, random_state=1).fit()
    assert len(list((in_root / "cache" / "maps").glob("*.npy"))) == 2
    assert not np.array_equal(other_seed.points_.index, view.points_.index)


def test_pool_view_table_margins_and_centroid_neighbours(in_root):
    from toolkit.record import load_run
    from toolkit.report.explore import PoolView, seed_margins

    records = [load_run(in_root / "runs" / n) for n in ("pre-lc", "pre-random", "unpre-lc")]
    view = PoolView(records, max_points=None, k=5).fit()  # the whole pool
    assert len(view.points_) == len(view.ids_) == 240
    table = view.table()
    assert table.index.equals(view.points_.index) and table.index.name == "id"
    assert {"group", "label", "y", "place", "shape", "texture", "hue", "acquired_by"} <= set(table.columns)
    for run, acq in view.acquired_.items():  # rounds: -1 for the seed set, the acquisition round, <NA> otherwise
        rounds = table[f"round:{run}"]
        assert rounds.loc[acq["id"]].tolist() == acq["round"].tolist()
        assert (rounds.loc[records[0].seed_set["id"]] == -1).all() if run == "pre-lc" else True
        assert int(rounds.notna().sum()) == len(acq) + len(view.seed_ids_[run])
        assert table.loc[acq["id"], "acquired_by"].str.contains(run).all()
    # the seed-set model's margin, only where the run kept its pool outputs: the gap of its top two logits
    assert list(view.margins_) == ["pre-lc"] and "margin:pre-lc" in table and "margin:unpre-lc" not in table
    out = records[0].pool_outputs(0).set_index("id")
    some = out.index[:5]
    gap = (out.loc[some, "logit_0"] - out.loc[some, "logit_1"]).abs()
    np.testing.assert_allclose(table.loc[some, "margin:pre-lc"], gap, rtol=1e-6)
    assert seed_margins(records[2]) is None
    # the centroid's neighbours: brute force over the whole pool's embedding
    picked = view.acquired_["pre-lc"]["id"].to_numpy()
    rows = view.row_of_[picked].to_numpy()
    d = ((view.embeddings_ - view.embeddings_[rows].mean(0)) ** 2).sum(1)
    nb = view.centroid_neighbours(picked, k=6)
    assert list(nb["id"]) == list(view.ids_[np.argsort(d, kind="stable")[:6]])
    np.testing.assert_allclose(nb["distance"], np.sort(d)[:6], rtol=1e-4)
    with pytest.raises(RecordError, match="not in the pool"):
        view.centroid_neighbours([-5])


def test_explorer_widget_slider_hover_and_click(in_root):
    """The jupyter-scatter widget through its Python model: the traits a browser sets (selection,
    hovering) are set here as the browser would, and the Python side answers."""
    pytest.importorskip("jscatter")
    import toolkit

    ex = toolkit.load_runs(in_root).explore(k=4)
    assert ex.runs == ["pre-lc", "unpre-lc"]  # pretrained vs unpretrained uncertainty runs, side by side
    # each run on its own backbone's map (two embeddings, two maps), the whole pool on each
    assert ex.views["pre-lc"].map_run_ == "pre-lc" and ex.views["unpre-lc"].map_run_ == "unpre-lc"
    assert [len(d) for d in ex.data.values()] == [240, 240]
    assert not np.allclose(ex.data["pre-lc"][["x", "y"]], ex.data["unpre-lc"][["x", "y"]])
    # the round slider: the acquired points are drawn larger
    big = lambda: [int((d["shown"] == "acquired").sum()) for d in ex.data.values()]  # noqa: E731
    assert ex.slider.max == 1 and big() == [10, 10]
    ex.slider.value = 0
    assert big() == [5, 5]
    codes = ex.scatters[0].widget.points[:, 2 if ex.scatters[0].widget.size_by == "valueA" else 3]
    assert int(codes.sum()) == 5  # what the browser gets: the size channel marks the 5 points
    # colour by group, round, or any column of the pool's attributes
    assert {"group", "round", "label", "place", "shape", "texture", "hue"} <= set(ex.colour_columns())
    assert "margin" in ex.colour_columns()  # pre-lc kept its pool outputs
    for column in ("round", "texture", "hue", "margin", "group"):
        ex.color_by(column)
        assert ex.colour.value == column and ex.scatters[0].widget.color_title == column
    assert ex.scatters[1].widget.color_by is not None  # unpre-lc has no margin: grey, then group again
    with pytest.raises(ValueError, match="unknown column 'nope'; valid: group, round"):
        ex.color_by("nope")
    # hover: the browser sets the hovered row; facts and thumbnail come from Python, on demand
    row = int(np.flatnonzero(ex.data["pre-lc"]["round"] == "round 0")[2])
    pid = int(ex.data["pre-lc"]["id"].iat[row])
    ex.scatters[0].widget.hovering = row
    assert f"id {pid}" in ex.info.value and "pre-lc: acquired in round 0" in ex.info.value
    assert ex.thumb.value[:4] == b"\x89PNG"
    other = int(np.flatnonzero(ex.data["unpre-lc"]["id"] == pid)[0])
    assert ex.scatters[1].widget.hovering == other  # the hover is linked by id
    # click: a one-point selection lists its neighbours
    ex.scatters[0].widget.selection = np.array([row], dtype=np.uint32)
    assert ex.selection().index.tolist() == [pid] and len(ex.neighbour_box.children) == 4
    assert list(ex.neighbours()["id"]) == list(ex.views["pre-lc"].neighbours(pid, 4)["id"])
    assert f"id {pid}" in ex.neighbour_title.value and len(ex.strip.children) == 1
    with pytest.raises(ValueError, match="unknown run"):
        toolkit.Explorer(ex.view, runs=["nope"])
    with pytest.raises(ValueError, match="unknown maps 'mine'"):
        toolkit.Explorer(ex.view, maps="mine")


def test_explorer_selection_round_trips_ids_exactly(in_root):
    pytest.importorskip("jscatter")
    import toolkit

    ex = toolkit.load_runs(in_root).explore(k=4)
    picked = [int(i) for i in ex.views["pre-lc"].acquired_["unpre-lc"]["id"]][::-1]
    picked.append(1_000_000_123)  # one not on the map
    table = ex.select(picked).selection()
    assert table.index.tolist() == sorted(picked[:-1])  # exactly the ids asked for that are on the map
    assert (table["round:unpre-lc"] >= 0).all() and set(table["acquired_by"].str.split(",").sum()) >= {"unpre-lc"}
    assert {"group", "label", "place", "round:pre-lc", "margin:pre-lc", "acquired_by"} <= set(table.columns)
    # a lasso in the browser sets row indices; they come back as those rows' ids
    rows = np.array([3, 17, 101, 200], dtype=np.uint32)
    ex.scatters[1].widget.selection = rows
    assert ex.selection().index.tolist() == sorted(ex.data["unpre-lc"]["id"].to_numpy()[rows])
    assert "4 selected" in ex.summary.value and len(ex.strip.children) == 4
    centroid = ex.views["unpre-lc"].centroid_neighbours(ex.data["unpre-lc"]["id"].to_numpy()[rows], 4)
    assert list(ex.neighbours()["id"]) == list(centroid["id"]) and "centroid of the 4" in ex.neighbour_title.value
    ex.select([])
    assert ex.selection().empty and "nothing selected" in ex.summary.value


def test_linked_views_map_ids_not_positions(in_root):
    """Two maps whose points differ and come in different orders: a selection in one selects
    the same ids in the other (the rows at the same positions hold other ids)."""
    pytest.importorskip("jscatter")
    from toolkit.record import load_run
    from toolkit.report.explore import Explorer, PoolView

    records = [load_run(in_root / "runs" / n) for n in ("pre-lc", "pre-random", "unpre-lc")]
    a = PoolView(records, map_run="pre-lc", max_points=120, random_state=0).fit()
    b = PoolView(records, map_run="unpre-lc", max_points=120, random_state=3).fit()
    ex = Explorer(a, runs=["pre-lc", "unpre-lc"], maps={"pre-lc": a, "unpre-lc": b})
    ids_a, ids_b = ex.data["pre-lc"]["id"].to_numpy(), ex.data["unpre-lc"]["id"].to_numpy()
    both = np.intersect1d(ids_a, ids_b)
    assert len(both) >= 20 and set(ids_a) != set(ids_b)
    rows_a = np.flatnonzero(np.isin(ids_a, both))[:20]
    rows_a = np.concatenate([rows_a, np.flatnonzero(~np.isin(ids_a, ids_b))[:3]])  # three only on map a
    assert not np.array_equal(ids_a[rows_a], ids_b[rows_a])  # the positions disagree
    ex.scatters[0].widget.selection = rows_a.astype(np.uint32)  # as a lasso on map a sets it
    assert sorted(ex.selected_ids("unpre-lc")) == sorted(ids_a[rows_a[:20]])  # linked by id
    assert sorted(ex.selection().index) == sorted(ids_a[rows_a])  # from map a, where it was made
    ex.scatters[1].widget.selection = np.flatnonzero(np.isin(ids_b, both[:5])).astype(np.uint32)  # and back
    assert sorted(ex.selected_ids("pre-lc")) == sorted(both[:5]) and ex.selection().index.tolist() == sorted(both[:5])


def _report(in_root):
    from toolkit.report.html import build_report

    return build_report(sorted((in_root / "runs").iterdir()), in_root / "report.html")


def test_report_explorer_section(in_root):
    page = _report(in_root).read_text()
    assert "Explore the pool" in page and 'id="explore-0"' in page and 'id="explore-1"' in page
    assert "pre-lc: round 0, score" in page  # the facts: plotly's hover text, no script of ours
    n_points = page.count("data:image/webp;base64,")
    assert 100 <= n_points <= 2000  # one thumbnail per map point, capped
    assert "src=\"https://" not in page


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Chromium (Debian package chromium)")
def test_report_in_a_headless_browser(in_root):
    """The page in a real browser: no JavaScript errors; every figure drew; hovering and clicking
    an explorer map shows a thumbnail and the neighbours (events sent through plotly's own API)."""
    page = _report(in_root)
    probe = in_root / "probe.html"
    probe.write_text(page.read_text().replace("</body>", """<script>
window.addEventListener('load', function(){ setTimeout(function(){
  var d = document.getElementById('explore-0'), tr = d._fullData[d._fullData.length - 1];  // decoded data
  var id = tr.customdata[0];
  d.emit('plotly_hover', {points: [{customdata: id}]});
  d.emit('plotly_click', {points: [{customdata: id}]});
  var out = document.createElement('pre'); out.id = 'probe-result';
  out.textContent = JSON.stringify({figures: document.querySelectorAll('.plotly-graph-div').length,
    drawn: document.querySelectorAll('.plotly-graph-div .main-svg').length,
    thumb: document.getElementById('explore-thumb').src.slice(0, 15),
    hover: (tr.hovertext || [])[0] || '',
    neighbours: document.querySelectorAll('#explore-neighbours img').length,
    broken: Array.from(document.images).filter(function(i){return i.src && i.complete && i.naturalWidth === 0;}).length});
  document.body.appendChild(out); }, 1500); });
</script></body>"""))
    out = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader", "--enable-logging=stderr", "--v=0",
                          "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    errors = [line for line in out.stderr.splitlines() if "CONSOLE" in line and ("Error" in line or "error" in line)]
    assert not errors, errors
    import json
    import re

    result = json.loads(re.search(r"<pre id=\"probe-result\">(.*?)</pre>", out.stdout, re.S).group(1)
                        .replace("&quot;", '"').replace("&amp;", "&"))
    assert result["figures"] >= 8 and result["drawn"] >= result["figures"]  # plotly drew every figure
    assert result["thumb"].startswith("data:image/webp") and result["hover"].startswith("id ")
    assert result["neighbours"] >= 1 and result["broken"] == 0


LAB_CELLS = [
    """import json, toolkit
explorer = toolkit.load_runs({runs!r}).explore(k=4)
explorer""",
    """def selected():
    print("SELECTED", json.dumps({{"selection": [int(i) for i in explorer.selection().index],
        "maps": {{run: sorted(int(i) for i in explorer.selected_ids(run)) for run in explorer.runs}},
        "from": explorer._selected_from}}))
selected()""",
    "explorer.lasso('rectangle')  # a box instead of a freeform lasso",
    "selected()",
]


def _selected(text: str) -> dict:
    import json

    return json.loads(text.split("SELECTED", 1)[1].strip().splitlines()[0])


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Chromium (Debian package chromium)")
def test_explorer_in_jupyterlab(in_root, tmp_path):
    """The widget in JupyterLab, driven by headless Chromium (Playwright): both maps draw (WebGL);
    a lasso drawn with the mouse on the first map (after a click on its toolbar's lasso button)
    comes back to Python as `selection()`, and the second map has the same ids selected; then a
    box (lasso type "rectangle") replaces it. With ALTK_SCREENSHOTS=<folder>, the widget after
    rendering and after the lasso, and the linked maps, are saved there (docs/img/explorer-*.png)."""
    import json
    import os
    import sys

    pytest.importorskip("jscatter")
    pytest.importorskip("jupyterlab")
    pytest.importorskip("playwright")
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, "benchmarks")
    try:
        from explorer import (
            browser,
            canvases_drawn,
            cell_text,
            drag,
            lab_server,
            open_notebook,
            run_cell,
            write_notebook,
        )
    finally:
        sys.path.remove("benchmarks")
    write_notebook(tmp_path / "explore.ipynb", [c.format(runs=str(in_root)) for c in LAB_CELLS])
    shots = os.environ.get("ALTK_SCREENSHOTS")
    with lab_server(tmp_path, env={"ALTK_CACHE": str(in_root / "cache")}) as (base, token), sync_playwright() as p:
        b = browser(p)
        page = b.new_page(viewport={"width": 1280, "height": 1100})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        open_notebook(page, base, token, "explore.ipynb")
        run_cell(page, 0)
        canvases_drawn(page, 0, 2)  # the map renders: both canvases show points
        widget = page.locator(".jp-Notebook .jp-Cell").nth(0).locator(".jp-OutputArea-output:has(canvas)").first
        canvas = widget.locator("canvas").first
        if shots:
            widget.screenshot(path=f"{shots}/explorer-lab.png")
        widget.locator("[title='Activate lasso selection']").first.click()
        drag(page, canvas, [(0.3, 0.2), (0.8, 0.2), (0.8, 0.8), (0.3, 0.8), (0.3, 0.2)])
        page.wait_for_function("() => document.body.innerText.indexOf(\" selected in pre-lc's map\") >= 0",
                               timeout=30_000)
        if shots:
            widget.screenshot(path=f"{shots}/explorer-selection.png")
            widget.locator(".widget-gridbox").first.screenshot(path=f"{shots}/explorer-linked.png")
        run_cell(page, 1)
        lasso = _selected(cell_text(page, 1))
        run_cell(page, 2)
        page.wait_for_timeout(1000)  # the lasso type reaches the browser
        counts = "() => (document.body.innerText.match(/\\d+ selected in \\S+ map: [^;]*/) || [''])[0]"
        before = page.evaluate(counts)
        drag(page, canvas, [(0.2, 0.3), (0.6, 0.7)])
        page.wait_for_function(f"() => ({counts})() !== {json.dumps(before)} && ({counts})() !== ''",
                               timeout=30_000)  # the box's selection is back in Python and on the page
        run_cell(page, 3)
        box = _selected(cell_text(page, 3))
        b.close()
    assert not errors, errors
    assert len(lasso["selection"]) >= 5 and lasso["from"] == "pre-lc"  # the lasso came back to Python
    assert lasso["maps"]["pre-lc"] == lasso["selection"]  # the ids lassoed, exactly
    assert lasso["maps"]["unpre-lc"] == lasso["selection"]  # linked: the same ids on the other map
    assert box["selection"] and box["selection"] != lasso["selection"]
    assert box["maps"]["unpre-lc"] == box["maps"]["pre-lc"] == box["selection"]
    if shots:
        from PIL import Image

        for name in ("explorer-lab", "explorer-selection", "explorer-linked"):  # 8-bit palettes stay small
            Image.open(f"{shots}/{name}.png").convert("RGB").quantize(colors=128).save(f"{shots}/{name}.png",
                                                                                   optimize=True)


def test_progress_bars_show_only_where_watched(tiny_cfg, tmp_path, monkeypatch, capsys):
    from toolkit._util.progress import bars_enabled

    monkeypatch.delenv("ALTK_QUIET", raising=False)
    monkeypatch.delenv("ALTK_PROGRESS", raising=False)
    assert not bars_enabled()  # pytest's stderr is no terminal: CI logs stay clean
    monkeypatch.setenv("ALTK_PROGRESS", "1")
    assert bars_enabled()
    run_active_learning(tiny_cfg, tmp_path / "run", log=None)
    err = capsys.readouterr().err
    assert "rounds of run: 100%" in err and "3/3" in err and "score pool" in err
    monkeypatch.setenv("ALTK_QUIET", "1")  # what --quiet sets: it wins over everything
    assert not bars_enabled()
    run_active_learning(dataclasses.replace(tiny_cfg, seed=1), tmp_path / "run2", log=None)
    assert capsys.readouterr().err == ""


def test_quiet_flag_turns_bars_off(monkeypatch, tmp_path):
    from toolkit._util.progress import bars_enabled
    from toolkit.cli import main

    monkeypatch.setenv("ALTK_PROGRESS", "1")
    monkeypatch.setenv("ALTK_QUIET", "0")  # so that monkeypatch restores it after main() sets it
    with pytest.raises(SystemExit):  # a command that fails after parsing: no run records there
        main(["--quiet", "report", str(tmp_path), "--out", str(tmp_path / "r.html")])
    assert not bars_enabled()


def test_progress_is_a_widget_in_a_jupyter_kernel(tmp_path):
    """tqdm.auto in a real kernel: the bar is an ipywidgets view, not text on stderr."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import os\nos.environ.pop('ALTK_QUIET', None)\nfrom toolkit._util.progress import progress, bars_enabled\n"
        "print(bars_enabled())\nfor _ in progress(range(3), desc='demo'):\n    pass")])
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = nb.cells[0].outputs
    assert outputs[0]["text"].strip() == "True"  # a kernel counts as someone watching
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
