"""The suite's strategy axis: per-strategy gains, upsampling and first-N mismatched counts
on constructed records with known answers, and the axis through the suite runner."""
import numpy as np
import pytest
from conftest import install_backbone

from toolkit.analysis.strategies import first_mismatched, mismatched_groups, strategy_rows, strategy_summary
from toolkit.record import RunWriter, load_run

SHARES = {"y0_s0": 0.7, "y0_s1": 0.05, "y1_s0": 0.05, "y1_s1": 0.2}


def _make(root, weights, strategy, seed, groups, curve):
    name = f"{weights}-{strategy}-s{seed}"
    cfg = {"model": {"name": "m", "weights": weights}, "al": {"strategy": strategy}, "seed": seed}
    w = RunWriter(root / name, cfg, {"pool_group_shares": SHARES})
    ident = iter(range(1000))
    for r, (g, value) in enumerate(zip(groups + [[]], curve)):
        row = {"round": r, "n_labels": 10 + 4 * r, "metrics": {"test": {"worst_group": value, "accuracy": 0.9}},
               "acquired": [{"id": next(ident), "group": x, "score": 0.0} for x in g]}
        if r == 0:
            row["seed_set"] = [{"id": 999, "group": "y0_s0"}]
        w.append_round(row, finished=r == len(curve) - 1)
    return load_run(root / name)


def test_mismatched_groups():
    assert mismatched_groups(SHARES) == ["y0_s1", "y1_s0"]
    assert mismatched_groups({"y0_s0_a1": 0.5, "y1_s1": 0.5}) == []  # not label x one attribute


def test_strategy_rows_hand_computed(tmp_path):
    recs = []
    for seed in (0, 1):
        recs.append(_make(tmp_path, "pretrained", "random", seed, [["y0_s0"] * 4, ["y0_s0"] * 4], [0.2, 0.3, 0.4]))
        # least-confidence: +0.1 at every label count, all acquisitions mismatched
        recs.append(_make(tmp_path, "pretrained", "least_confidence", seed,
                          [["y0_s1", "y1_s0"] * 2, ["y0_s1"] * 4], [0.3, 0.4, 0.5]))
        # coreset: -0.05 everywhere; one mismatched in its first four
        recs.append(_make(tmp_path, "pretrained", "coreset", seed,
                          [["y1_s0", "y0_s0", "y0_s0", "y1_s1"], ["y1_s1"] * 4], [0.15, 0.25, 0.35]))
    rows = strategy_rows({"t": recs}, first=4).set_index("strategy")
    assert rows.loc["least_confidence", "auc_gain"] == pytest.approx(0.1)
    assert rows.loc["coreset", "auc_gain"] == pytest.approx(-0.05)
    assert np.isnan(rows.loc["random", "auc_gain"])
    assert rows.loc["least_confidence", "mismatched_first4"] == 4
    assert rows.loc["coreset", "mismatched_first4"] == 1 and rows.loc["random", "mismatched_first4"] == 0
    # least-confidence acquired 6 y0_s1 and 2 y1_s0 of 8 (pool shares 0.05): upsampling 15 and 5
    assert rows.loc["least_confidence", "up_y0_s1"] == pytest.approx(0.75 / 0.05)
    assert rows.loc["least_confidence", "up_mismatched_mean"] == pytest.approx((15 + 5) / 2)
    assert first_mismatched(recs[1], 20) != first_mismatched(recs[1], 20)  # fewer than 20 acquired: NaN
    summ = strategy_summary(strategy_rows({"t": recs, "u": recs}, first=4), first=4)
    assert summ["strategy"].tolist() == ["least_confidence", "coreset", "random"]  # LC first, random last
    lc = summ.set_index("strategy").loc["least_confidence"]
    assert lc["auc_gain"] == pytest.approx(0.1) and lc["tasks_gain_positive"] == 2


def test_suite_strategies_must_include_the_claims_pair(tmp_path):
    from toolkit.data.toy_tasks import draw_tasks
    from toolkit.experiments.suite import run_task_suite

    with pytest.raises(ValueError, match="must include least_confidence and random"):
        run_task_suite(draw_tasks(1), [0], out=tmp_path / "s", strategies=("badge", "random"))
    with pytest.raises(ValueError, match="valid names"):
        run_task_suite(draw_tasks(1), [0], out=tmp_path / "s", strategies=("least_confidence", "random", "badg"))
    assert not (tmp_path / "s").exists()


def test_suite_strategy_axis_end_to_end(tmp_path, tiny_backbone):
    """One tiny task, two seeds, five strategies through the probe suite, then the tables and page."""
    from conftest import TINY_DATA

    from toolkit.data.toy_tasks import draw_tasks
    from toolkit.experiments.suite import run_task_suite
    from toolkit.report.html import build_strategy_report
    from toolkit.report.tables import format_strategies

    install_backbone(tiny_backbone, None)
    strategies = ("least_confidence", "random", "badge", "coreset", "bald")
    recs = run_task_suite(draw_tasks(1, seed=5), [0, 1], out=tmp_path / "suite", workers=1, log=None,
                          data={**TINY_DATA, "cache_dir": str(tmp_path / "data")}, feature_root=tmp_path / "f",
                          al={"seed_size": 10, "per_round": 5, "budget": 20}, strategies=strategies)
    (records,) = recs.values()
    assert len(records) == 2 * 5 * 2 and {r.strategy for r in records} == set(strategies)
    rows = strategy_rows(recs)
    assert len(rows) == 2 * 5 and rows["mismatched_first20"].between(0, 20).all()
    summary = strategy_summary(rows)
    text = format_strategies(summary)
    assert "badge" in text and "unpretrained backbone" in text
    page = build_strategy_report(rows, summary, tmp_path / "strategies.html")
    assert "bald" in page.read_text()


def test_full_mode_configs_cover_the_strategy_axis():
    from toolkit.data.toy_tasks import draw_tasks
    from toolkit.experiments.suite import full_configs

    cfgs = full_configs(draw_tasks(1), [0, 1], strategies=("least_confidence", "random", "badge"))
    assert len(cfgs) == 2 * 3 * 2
    assert {c.al.strategy for c in cfgs.values()} == {"least_confidence", "random", "badge"}
    assert "t0-00-pre-badge-s1" in cfgs and cfgs["t0-00-pre-badge-s1"].model.weights == "pretrained"
