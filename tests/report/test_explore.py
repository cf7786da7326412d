"""The notebook API (issue #14): `load_runs` and its thin wrappers, the pool view, the explorer
widget driven through its Python model, its section of the HTML report, and progress bars."""
import dataclasses
import shutil
import subprocess
import types

import numpy as np
import pandas as pd
import pytest

from toolkit.al.loop import run_active_learning
from toolkit.analysis import final_summary, label_efficiency_table, learning_curves, tidy_rounds


@pytest.fixture(scope="module")
def runs_dir(tiny_backbone, tmp_path_factory):
    """Three tiny runs on one pool: pretrained least confidence and random, unpretrained least confidence."""
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
                                      al=dataclasses.replace(base.al, strategy=strategy))
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


def test_explorer_widget_slider_hover_and_click(in_root):
    import toolkit

    ex = toolkit.load_runs(in_root).explore(max_points=100, k=4)
    assert ex.runs == ["pre-lc", "unpre-lc"]  # pretrained vs unpretrained uncertainty runs, side by side
    assert [f.layout.title.text for f in ex.figures] == ex.runs
    stars = lambda: [len(f.data[-1].x) for f in ex.figures]  # noqa: E731
    assert ex.slider.max == 1 and stars() == [10, 10]
    ex.slider.value = 0
    assert stars() == [5, 5]
    acquired = ex.figures[0].data[-1]
    ex._hover(acquired, types.SimpleNamespace(point_inds=[2]))
    pid = int(acquired.customdata[2])
    assert f"id {pid}" in ex.info.value and "pre-lc: acquired in round 0" in ex.info.value
    assert ex.thumb.value[:4] == b"\x89PNG"
    ex._click(acquired, types.SimpleNamespace(point_inds=[2]))
    assert len(ex.neighbour_box.children) == 4
    # the message a browser's hover sends (plotly's js2py points callback), through plotly's dispatch
    other = int(acquired.customdata[4])
    ex.figures[0]._js2py_pointsCallback = {
        "event_type": "plotly_hover", "device_state": None, "selector": None,
        "points": {"trace_indexes": [len(ex.figures[0].data) - 1], "point_indexes": [4], "xs": [0.0], "ys": [0.0]}}
    assert f"id {other}" in ex.info.value
    pid = other
    ex._hover(acquired, types.SimpleNamespace(point_inds=[]))  # leaving the points changes nothing
    assert f"id {pid}" in ex.info.value
    with pytest.raises(ValueError, match="unknown run"):
        toolkit.Explorer(ex.view, runs=["nope"])


def _report(in_root):
    from toolkit.report.html import build_report

    return build_report(sorted((in_root / "runs").iterdir()), in_root / "report.html")


def test_report_explorer_section(in_root):
    page = _report(in_root).read_text()
    assert "Explore the pool" in page and 'id="explore-0"' in page and 'id="explore-1"' in page
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
    info: document.getElementById('explore-info').textContent,
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
    assert result["thumb"].startswith("data:image/webp") and result["info"].startswith("id ")
    assert result["neighbours"] >= 1 and result["broken"] == 0


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
