import pandas as pd
from conftest import TINY_DATA, install_backbone

from toolkit.experiments.demo import run_demo


def test_demo_end_to_end_tiny(tiny_backbone, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the demo looks for the toy backbone under ./cache
    install_backbone(tiny_backbone, tmp_path)
    overrides = ["finetune.max_steps=4", "finetune.micro_batch=16", "al.seed_size=10", "al.per_round=5",
                 "al.budget=10", "eval_batch_size=128", *[f"data.params.{k}={v}" for k, v in TINY_DATA.items()]]
    screen = {"backbones": ("random", "pretrained"), "seeds": [0, 1], "data": TINY_DATA,
              "al": {"seed_size": 10, "per_round": 5, "budget": 10}}
    tidy = run_demo(seeds=[0, 1], out="out", workers=2, overrides=overrides, screen_tasks=1, screen=screen,
                    log=print)  # alone, nothing has routed the toolkit logger to stdout
    assert len(tidy) == 2 * 2 * 2 * 3  # weights x strategies x seeds x rounds
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert set(zip(summary.weights, summary.strategy)) == {
        ("pretrained", "least_confidence"), ("pretrained", "random"),
        ("random", "least_confidence"), ("random", "random")}
    assert (summary["n_seeds"] == 2).all() and (summary["n_labels"] == 20).all()
    printed = capsys.readouterr().out
    assert "Upsampling ratio" in printed and "Label efficiency" in printed and "y1_s0" in printed
    # the first screen comes first, from its own folder; the grid's tables do not mix its runs in
    assert printed.index("First screen") < printed.index("Final budget")
    assert len(pd.read_csv(tmp_path / "out" / "screen" / "screen.csv")) == 2  # 2 backbones x 1 task
    assert (tmp_path / "out" / "learning_curves.html").stat().st_size > 10_000
    # one demo page: the report opens with the first screen's table and curves, then the default task;
    # its path is the last line printed, relative to the working folder
    page = (tmp_path / "out" / "report.html").read_text()
    screen, grid = page.index("First screen: the claim across tasks"), page.index("The default task, 8 runs")
    assert screen < grid < page.index("Final budget")
    opening = page[screen:grid]
    assert "First screen: the suite&#x27;s first 1 toy tasks" in opening  # its table
    assert "plotly-graph-div" in opening and "first 1 tasks (95% CI over tasks)" in opening  # and its curves
    import pytest

    from toolkit.errors import MissingFileError
    from toolkit.report.html import build_report

    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingFileError, match="has no screen.txt, screen.json; run the first screen"):
        build_report([tmp_path / "out" / "runs" / "pre-random-s0"], tmp_path / "r.html", representation=False,
                     first_screen=tmp_path / "empty")
    assert not (tmp_path / "r.html").exists()
    assert printed.strip().splitlines()[-1] == "[demo] report (the first screen, then the default task): " \
        "out/report.html"


def test_a_failed_demo_run_is_named_with_its_reason(tiny_backbone, tmp_path, monkeypatch, capsys):
    import pytest

    from toolkit.cli import main

    monkeypatch.chdir(tmp_path)
    install_backbone(tiny_backbone, tmp_path)
    overrides = ["al.seed_set=bogus", *[f"data.params.{k}={v}" for k, v in TINY_DATA.items()]]  # fails in the runs
    with pytest.raises(SystemExit) as stop:
        main(["demo", "--seeds", "0", "--screen-tasks", "0", "--workers", "2", "--out", "out", "--set", *overrides])
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert "4 of 4 demo runs failed" in err and "pre-least_confidence-s0: " in err
    assert "unknown al.seed_set 'bogus'" in err and "index.json" in err
