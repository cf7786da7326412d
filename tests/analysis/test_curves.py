"""Issue 31, items 3 and 4: runs of different configs are never pooled as seeds of one arm,
and intervals on degenerate inputs (one seed, identical curves, accuracies near 1) are honest.
Run records are written directly (RunWriter), no model runs."""
import numpy as np
import pandas as pd
import pytest

from toolkit.record import RunWriter, load_run

SHARES = {"y0_s0": 0.45, "y0_s1": 0.05, "y1_s0": 0.05, "y1_s1": 0.45}


def make_run(root, name, *, curve, strategy="least_confidence", seed=0, budget=None, seed_size=20, per_round=10,
             weights="pretrained", finished=True, max_steps=None, params=None, groups=("y0_s1", "y0_s0")):
    """A run record with one round per point of `curve` (test accuracy and worst-group both =
    the curve); `budget` defaults to what the curve reaches; `finished` False leaves it running."""
    budget = per_round * (len(curve) - 1) if budget is None else budget
    cfg = {"model": {"name": "m", "weights": weights}, "seed": seed,
           "al": {"strategy": strategy, "seed_size": seed_size, "budget": budget, "per_round": per_round},
           "finetune": {"max_steps": max_steps}, "data": {"name": "toyworld", "params": params or {}}}
    meta = {"pool_group_shares": SHARES, "pool_size": 1000, "acquisition_sizes": [per_round] * (budget // per_round)}
    w = RunWriter(root / name, cfg, meta)
    ident = iter(range(10_000))
    for r, value in enumerate(curve):
        last = r == len(curve) - 1
        row = {"round": r, "n_labels": seed_size + per_round * r,
               "metrics": {"test": {"accuracy": value, "worst_group": value}},
               "acquired": [] if last and finished else [{"id": next(ident), "group": groups[i % len(groups)],
                                                          "score": 0.0} for i in range(per_round)]}
        if r == 0:
            row["seed_set"] = [{"id": 9_999, "group": "y0_s0"}]
        w.append_round(row, finished=finished and last)
    return root / name


# ---------------------------------------------------------------- item 3: arms split by config

def test_two_seed0_runs_with_other_budget_and_steps_are_two_arms_not_two_seeds(tmp_path):
    import toolkit

    make_run(tmp_path, "b20", curve=[0.5, 0.6, 0.7], max_steps=5)           # finished at 40 labels
    make_run(tmp_path, "b30", curve=[0.5, 0.6, 0.7, 0.8])                   # finished at 50 labels
    runs = toolkit.load_runs(tmp_path)
    assert runs.differing_fields == ["al.budget", "finetune.max_steps"]
    summary = runs.summary(metrics=("accuracy",)).set_index("config")
    assert list(summary.index) == ["al.budget=20, finetune.max_steps=5", "al.budget=30, finetune.max_steps=null"]
    assert list(summary["n_seeds"]) == [1, 1] and list(summary["n_labels"]) == [40, 50]
    assert summary["n_left_out"].sum() == 0  # the finished budget-20 run is not "stopped at 40 of 50 labels"
    assert summary["test/accuracy"].tolist() == pytest.approx([0.7, 0.8])
    ups = runs.upsampling()
    assert len(ups) == 2 * len(SHARES) and (ups["n_seeds"] == 1).all()
    assert ups["low"].isna().all()  # one seed per arm: no "CI over seeds"
    assert "[al.budget=20, finetune.max_steps=5]" in repr(runs)


def test_a_suite_folders_tasks_are_separate_arms_not_repeated_seeds(tmp_path):
    from toolkit.analysis import final_summary, tidy_rounds

    recs = [load_run(make_run(tmp_path, f"t{t}-s0", curve=[0.5, 0.6 + t / 10], params={"minority_fraction": f})
                     ) for t, f in enumerate((0.2, 0.3))]
    fin = final_summary(tidy_rounds(recs), ["test/accuracy"])
    assert list(fin["config"]) == ["data.params.minority_fraction=0.2", "data.params.minority_fraction=0.3"]
    assert (fin["n_seeds"] == 1).all() and not fin["left_out"].str.contains("already counted").any()


def test_seed_and_where_a_run_ran_do_not_split_an_arm_and_a_repeated_seed_still_counts_once(tmp_path):
    from toolkit.analysis import final_summary, tidy_rounds
    from toolkit.analysis.curves import differing_fields

    a = make_run(tmp_path, "a", curve=[0.5, 0.7], seed=0)
    b = make_run(tmp_path, "b", curve=[0.5, 0.9], seed=1)
    c = make_run(tmp_path, "c", curve=[0.5, 0.8], seed=0)
    for path, device in ((b, "cuda"), (c, "cpu")):  # where it ran, not what it measures
        text = (path / "config.yaml").read_text()
        (path / "config.yaml").write_text(text.replace("  seed:", f"  device: {device}\n  seed:", 1))
    recs = [load_run(p) for p in (a, b, c)]
    assert recs[1].run_config["device"] == "cuda" and differing_fields(recs) == []
    fin = final_summary(tidy_rounds(recs), ["test/accuracy"]).iloc[0]
    assert "config" not in fin.index and fin["n_seeds"] == 2 and fin["left_out"] == "c: seed 0 already counted"


def test_a_partial_run_is_described_against_its_own_budget(tmp_path):
    from toolkit.analysis import final_summary, tidy_rounds

    # both runs of the arm are partial (budget 30: 50 labels); the arm's furthest reached 40
    recs = [load_run(make_run(tmp_path, "far", curve=[0.5, 0.6, 0.7], budget=30, finished=False, seed=0)),
            load_run(make_run(tmp_path, "near", curve=[0.5, 0.6], budget=30, finished=False, seed=1))]
    fin = final_summary(tidy_rounds(recs), ["test/accuracy"]).iloc[0]
    assert fin["left_out"] == "near: stopped at 30 of 50 labels"  # was "of 40": the arm's furthest run


def test_the_report_names_the_differing_fields_and_never_pools_them(tmp_path):
    from toolkit.report.html import build_report

    dirs = [make_run(tmp_path / "runs", "b20", curve=[0.5, 0.6, 0.7], max_steps=5),
            make_run(tmp_path / "runs", "b30", curve=[0.5, 0.6, 0.7, 0.8])]
    page = build_report(dirs, tmp_path / "r.html", representation=False).read_text()
    assert "The runs differ in config fields al.budget, finetune.max_steps" in page
    assert "al.budget=20, finetune.max_steps=5" in page and "al.budget=30, finetune.max_steps=null" in page
    assert "stopped at" not in page and "already counted" not in page
    assert "nan, nan" not in page and "0.700 (n=1)" in page


def test_the_printed_table_names_the_config_of_each_arm(tmp_path):
    from toolkit.record import tidy_rounds
    from toolkit.report.tables import format_table

    recs = [load_run(make_run(tmp_path, n, curve=c, strategy=s, seed=seed, max_steps=steps))
            for n, c, s, seed, steps in (("l5", [0.5, 0.8], "least_confidence", 0, 5),
                                         ("r5", [0.5, 0.6], "random", 0, 5),
                                         ("l9", [0.5, 0.9], "least_confidence", 0, 9),
                                         ("r9", [0.5, 0.7], "random", 0, 9))]
    text = format_table(tidy_rounds(recs), recs)  # record's tidy table, as the demo passes it
    assert "differ in config fields finetune.max_steps" in text
    assert text.count("[finetune.max_steps=5]") >= 3 and text.count("[finetune.max_steps=9]") >= 3
    assert "nan" not in text and "0.800 (n=1)" in text and "(n=1)" in text


# ---------------------------------------------------------------- item 4: intervals on degenerate inputs

def _curves_frame(curves_by_strategy):
    rows = []
    for strategy, curves in curves_by_strategy.items():
        for seed, curve in enumerate(curves):
            rows += [{"model": "m", "weights": "pretrained", "strategy": strategy, "seed": seed, "n_labels": n,
                      "test/accuracy": v} for n, v in zip((40, 60, 80, 100), curve)]
    return pd.DataFrame(rows)


def test_one_seed_gives_a_point_and_no_interval():
    from toolkit.analysis import label_efficiency_table
    from toolkit.report.tables import ci_text, efficiency_cell

    tidy = _curves_frame({"random": [[0.5, 0.6, 0.7, 0.8]], "least_confidence": [[0.5, 0.7, 0.8, 0.9]]})
    eff = label_efficiency_table(tidy, "test/accuracy").iloc[0]
    assert eff["efficiency"] == pytest.approx(100 / 80)  # random's 0.8 reached at 80 labels
    assert np.isnan(eff["low"]) and np.isnan(eff["high"])  # was [1.25, 1.25]: a bootstrap of one seed
    assert efficiency_cell(eff) == "1.25x (n=1)"
    assert ci_text(0.7, float("nan"), float("nan"), 1) == "0.700 (n=1)"
    assert ci_text(float("nan"), float("nan"), float("nan"), 0) == "n/a (no values)"


def test_identical_curves_give_efficiency_one_with_a_zero_width_paired_interval():
    from toolkit.analysis import label_efficiency_table

    curves = [[0.5, 0.6, 0.7, 0.8], [0.4, 0.6, 0.75, 0.85], [0.55, 0.58, 0.62, 0.7]]
    tidy = _curves_frame({"random": curves, "least_confidence": curves})
    for counted in ("all", "acquired"):
        eff = label_efficiency_table(tidy, "test/accuracy", labels_counted=counted).iloc[0]
        assert eff["paired"] and eff["efficiency"] == pytest.approx(1.0)
        assert (eff["low"], eff["high"]) == pytest.approx((1.0, 1.0))  # was [0.000, inf]


def test_unpaired_seeds_are_resampled_independently_as_before():
    from toolkit.metrics import bootstrap_label_efficiency

    n = np.array([40, 60, 80, 100])
    b = np.array([[0.5, 0.6, 0.7, 0.8], [0.4, 0.6, 0.75, 0.85], [0.55, 0.58, 0.62, 0.7]])
    paired = bootstrap_label_efficiency(n, b, b, rng=np.random.default_rng(0), n_boot=400, paired=True)
    independent = bootstrap_label_efficiency(n, b, b, rng=np.random.default_rng(0), n_boot=400)
    assert paired == pytest.approx((1.0, 1.0, 1.0))
    assert independent[1] < 1.0 < independent[2]  # resampled apart, the two arms end apart
    with pytest.raises(ValueError, match="paired"):
        bootstrap_label_efficiency(n, b, b[:2], rng=np.random.default_rng(0), paired=True)


def test_accuracy_intervals_stay_within_0_and_1():
    from toolkit.analysis.curves import final_summary, gain_summary, learning_curves
    from toolkit.metrics import PROPORTION, mean_ci

    assert mean_ci([0.98, 1.0, 0.996])[2] > 1.0  # the plain t-interval: the "[0.96, 1.02]"
    m, lo, hi = mean_ci([0.98, 1.0, 0.996], bounds=PROPORTION)
    assert hi == 1.0 and lo < m < hi
    tidy = _curves_frame({"random": [[0.5, 0.9, 0.98, 0.98], [0.5, 0.9, 0.99, 1.0], [0.5, 0.9, 0.97, 0.996]],
                          "least_confidence": [[0.5, 0.9, 0.98, 1.0], [0.5, 0.9, 0.99, 1.0], [0.5, 0.9, 0.97, 0.99]]})
    tidy["run"] = tidy["strategy"] + tidy["seed"].astype(str)
    tidy["round"] = tidy["n_labels"] // 20 - 2
    fin = final_summary(tidy, ["test/accuracy"])
    assert (fin["test/accuracy_high"] <= 1.0).all() and (fin["test/accuracy_low"] >= 0.0).all()
    assert (learning_curves(tidy, "test/accuracy")["high"] <= 1.0).all()
    gains = gain_summary(tidy, "test/accuracy", by=["weights"]).iloc[0]
    assert -1.0 <= gains["final_gain_low"] <= gains["final_gain_high"] <= 1.0
    # a timing is not a proportion: not clipped
    tidy["time/seconds"] = tidy["seed"] * 0.9 + 0.05
    assert final_summary(tidy, ["time/seconds"])["time/seconds_high"].max() > 1.0


def test_the_suite_and_strategy_summaries_clip_to_what_each_quantity_can_be(tmp_path):
    """Across tasks: final accuracies in [0, 1], gains in [-1, 1], counts among the first 20 in
    [0, 20]; one task has no interval, and the suite's page prints n/a, not NaN."""
    from toolkit.analysis.suite import aggregate
    from toolkit.analysis.strategies import strategy_summary
    from toolkit.report.html import build_suite_report

    table = pd.DataFrame({"pre_lc_final": [0.99, 1.0, 0.97], "pre_auc_gain": [0.9, 0.99, 0.7],
                          "pre_efficiency": [1.1, 5.0, 0.9]})
    agg = aggregate(table).set_index("quantity")
    assert agg.loc["pre_lc_final", "high"] == 1.0 and agg.loc["pre_auc_gain", "high"] == 1.0
    assert agg.loc["pre_efficiency", "low"] == 0.0 and agg.loc["pre_efficiency", "high"] > 5.0
    one = aggregate(table.iloc[:1]).set_index("quantity")
    assert one["low"].isna().all() and one["mean"].notna().all()
    from toolkit.analysis.suite import CLAIMS

    one_task = table.iloc[:1].assign(task="t0", **{c: True for c in CLAIMS},
                                     **{f"{p}_auc_gain{e}": 0.1 for p in ("pre", "unpre") for e in ("", "_low", "_high")})
    page = build_suite_report(one_task, tmp_path / "suite.html").read_text()
    assert "One task: its values, with no interval" in page and ">NaN<" not in page and ">n/a<" in page

    rows = pd.DataFrame({"weights": "pretrained", "strategy": "least_confidence", "auc_gain": [0.95, 0.99, 0.6],
                         "final_gain": [0.9, 1.0, 0.5], "final": [0.99, 1.0, 0.96],
                         "up_mismatched_mean": [3.0, 4.0, 5.0], "mismatched_first20": [19.0, 20.0, 20.0]})
    s = strategy_summary(rows).iloc[0]
    assert s["final_high"] == 1.0 and s["auc_gain_high"] == 1.0 and s["mismatched_first20_high"] == 20.0
