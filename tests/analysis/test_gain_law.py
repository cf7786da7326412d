"""Issue #33, section 4: the gain law recovers known curves, scores out of sample with CIs
over tasks that behave, and its partial correlations match the textbook formulas; the full-data
probe's error is the loop's probe fitted on the whole pool."""
import numpy as np
import pandas as pd
import pytest

from toolkit.analysis.gain_law import (
    GainLaw,
    evaluate_law,
    leave_task_out,
    matched_comparison,
    partial_correlation,
    partial_correlations,
    phase_table,
    prediction_scores,
)
from toolkit.errors import ConfigError, RecordError


def _curve(x, offset=-0.02, amplitude=0.2, location=0.75, scale=0.04):
    return offset + amplitude / (1 + np.exp(-(x - location) / scale))


def _rows(n_tasks=20, per_task=9, noise=0.01, seed=0, **curve):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.5, 1.0, n_tasks * per_task)
    return pd.DataFrame({"task": np.repeat([f"t{i}" for i in range(n_tasks)], per_task), "sep_label": x,
                         "auc_gain": _curve(x, **curve) + noise * rng.normal(size=len(x))})


# ---- fitting ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("truth", [dict(location=0.75, scale=0.04, amplitude=0.2, offset=-0.02),
                                   dict(location=0.62, scale=0.08, amplitude=0.1, offset=0.01)])
def test_the_logistic_law_recovers_a_known_curve(truth):
    law = GainLaw(("sep_label",), n_boot=0).fit(_rows(**truth, noise=0.005))
    p = law.params_
    assert p["location"] == pytest.approx(truth["location"], abs=0.01)
    assert p["scale"] == pytest.approx(truth["scale"], rel=0.15)
    assert p["amplitude"] == pytest.approx(truth["amplitude"], abs=0.01)
    assert p["offset"] == pytest.approx(truth["offset"], abs=0.01)
    grid = pd.DataFrame({"sep_label": np.linspace(0.5, 1.0, 11)})
    assert np.abs(law.predict(grid) - _curve(grid["sep_label"].to_numpy(), **truth)).max() < 0.01


def test_a_decreasing_curve_and_two_measures_are_recovered():
    rows = _rows(noise=0.0)
    rows["full_error"] = 1 - rows["sep_label"]  # the same curve, read through a decreasing measure
    law = GainLaw(("full_error",), n_boot=0).fit(rows)
    assert np.abs(law.predict(rows) - rows["auc_gain"]).max() < 1e-3 and law.params_["scale"] < 0
    rng = np.random.default_rng(1)
    rows["sep_group_worst"] = rng.uniform(0, 1, len(rows))
    index = 8 * (rows["sep_label"] - 0.75) / 0.25 + 2 * (rows["sep_group_worst"] - 0.5)
    rows["auc_gain"] = 0.05 + 0.15 / (1 + np.exp(-index))
    two = GainLaw(("sep_label", "sep_group_worst"), n_boot=0).fit(rows)
    assert np.abs(two.predict(rows) - rows["auc_gain"]).max() < 1e-3
    assert "z(sep_group_worst)" in two.describe()


def test_the_isotonic_law_is_monotone_and_recovers_a_step():
    rows = _rows(noise=0.0, scale=0.001)
    law = GainLaw(("sep_label",), kind="isotonic", n_boot=0).fit(rows)
    grid = np.linspace(0.4, 1.1, 50)
    pred = law.predict(pd.DataFrame({"sep_label": grid}))
    assert np.all(np.diff(pred) >= 0) and pred[0] == pytest.approx(-0.02) and pred[-1] == pytest.approx(0.18)


def test_a_law_round_trips_through_its_file(tmp_path):
    rows = _rows()
    for kind in ("logistic", "isotonic"):
        law = GainLaw(("sep_label",), kind=kind, n_boot=20).fit(rows)
        again = GainLaw.load(law.save(tmp_path / f"{kind}.json"))
        pd.testing.assert_frame_equal(again.predict_interval(rows), law.predict_interval(rows))
        assert again.describe() == law.describe()


@pytest.mark.parametrize("law, message", [
    (GainLaw(("sep_label",), kind="spline"), "unknown gain-law kind 'spline'"),
    (GainLaw(("sep_label", "full_error"), kind="isotonic"), "reads one measure"),
    (GainLaw(("sep_label", "full_error", "sep_group")), "one or two"),
    (GainLaw(("colour",)), "unknown measure"),
])
def test_bad_laws_are_refused_by_name(law, message):
    with pytest.raises(ConfigError, match=message):
        law.fit(_rows())


def test_too_few_rows_and_an_unfitted_law_are_refused():
    with pytest.raises(RecordError, match="at least 3 rows"):
        GainLaw().fit(_rows().iloc[:2])
    with pytest.raises(RecordError, match="need at least two values|at least 3 rows"):
        GainLaw().fit(_rows().assign(sep_label=0.7))
    with pytest.raises(RecordError, match="not fitted"):
        GainLaw().predict(_rows())
    with pytest.raises(RecordError, match="lack sep_label"):
        GainLaw(n_boot=0).fit(_rows()).predict(pd.DataFrame({"x": [1.0]}))


def test_prediction_intervals_cover_new_rows_at_their_level():
    law = GainLaw(("sep_label",), n_boot=100, level=0.9).fit(_rows(noise=0.02))
    new = _rows(n_tasks=50, noise=0.02, seed=7)
    band = law.predict_interval(new)
    inside = ((new["auc_gain"] >= band["low"]) & (new["auc_gain"] <= band["high"])).mean()
    assert 0.84 <= inside <= 0.96, inside
    assert (band["low"] <= band["predicted"]).all() and (band["predicted"] <= band["high"]).all()


# ---- out-of-sample evaluation ------------------------------------------------------------------------

def test_leave_task_out_never_sees_the_row_it_predicts():
    rows = _rows(noise=0.01)
    base = leave_task_out(GainLaw(("sep_label",)), rows)
    moved = rows.copy()
    moved.loc[moved["task"] == "t3", "auc_gain"] += 0.5  # task t3's own gains change ...
    again = leave_task_out(GainLaw(("sep_label",)), moved)
    held = (rows["task"] == "t3").to_numpy()
    assert np.allclose(again[held], base[held])  # ... and its predictions do not
    assert not np.allclose(again[~held], base[~held])


def test_prediction_scores_and_their_cis_behave():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=400)
    tasks = np.arange(400) % 40
    good = prediction_scores(truth, truth + 0.3 * rng.normal(size=400), tasks, n_boot=300)
    assert good["pearson_low"] <= good["pearson"] <= good["pearson_high"]
    assert good["r2_low"] <= good["r2"] <= good["r2_high"] and good["r2"] == pytest.approx(1 - 0.09, abs=0.05)
    noisy, blocks = truth + rng.normal(size=400), np.arange(400) // 10  # r = 0.71: an interval with room to move
    wide = [prediction_scores(truth[:n], noisy[:n], blocks[:n], n_boot=300) for n in (100, 400)]
    widths = [w["pearson_high"] - w["pearson_low"] for w in wide]
    assert widths[0] > widths[1]  # 10 tasks against 40: wider
    worse = prediction_scores(truth, -truth, tasks, n_boot=100)
    assert worse["r2"] < 0 and worse["pearson"] == pytest.approx(-1)  # R^2 is not a squared correlation
    one = prediction_scores(truth[:10], truth[:10], np.zeros(10), n_boot=100)
    assert one["pearson"] == pytest.approx(1) and np.isnan(one["pearson_low"]) and np.isnan(one["r2_high"])
    assert np.isnan(prediction_scores([1.0, 2.0], [1.0, 2.0], [0, 1])["pearson"])


def test_the_bootstrap_intervals_cover_the_true_correlation():
    """Coverage over replicates: 95% intervals over 12 tasks of 5 rows each hold the true r = 0.71
    in most replicates (a percentile bootstrap over few clusters covers a little less than nominal)."""
    rng = np.random.default_rng(5)
    inside = []
    for _ in range(30):
        truth = rng.normal(size=60)
        s = prediction_scores(truth, truth + rng.normal(size=60), np.arange(60) // 5, n_boot=100)
        inside.append(s["pearson_low"] <= 1 / np.sqrt(2) <= s["pearson_high"])
    assert np.mean(inside) >= 0.8, np.mean(inside)


def test_evaluate_law_scores_in_sample_out_of_sample_and_held_out_sets():
    fit, held = _rows(noise=0.01), _rows(noise=0.01, seed=3)
    scores = evaluate_law(GainLaw(("sep_label",), n_boot=0), fit, {"held out": held, "no measure": held[["task"]]},
                          n_boot=200).set_index("evaluation")
    assert list(scores.index) == ["in sample", "leave-task-out", "held out"]  # a set without the measure is skipped
    assert (scores["pearson"] > 0.95).all() and scores.loc["held out", "clusters"] == 20
    assert scores.loc["leave-task-out", "r2"] <= scores.loc["in sample", "r2"]


# ---- partial correlations ------------------------------------------------------------------------------

def _correlated(n=600, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    w = rng.normal(size=n)
    x = 0.7 * z + 0.3 * w + 0.5 * rng.normal(size=n)
    y = 0.6 * z - 0.4 * w + 0.3 * x + 0.5 * rng.normal(size=n)
    return pd.DataFrame({"task": np.arange(n) % 30, "x": x, "y": y, "z": z, "w": w})


def test_the_partial_correlation_matches_the_textbook_formula():
    t = _correlated()
    r = t[["x", "y", "z"]].corr().to_numpy()
    formula = (r[0, 1] - r[0, 2] * r[1, 2]) / np.sqrt((1 - r[0, 2] ** 2) * (1 - r[1, 2] ** 2))
    p = partial_correlation(t, "x", "y", "z", n_boot=200)
    assert p["partial"] == pytest.approx(formula, abs=1e-10)
    assert p["pearson"] == pytest.approx(r[0, 1]) and p["partial_low"] <= p["partial"] <= p["partial_high"]
    s = t[["x", "y", "z"]].corr(method="spearman").to_numpy()  # Spearman's partial: the formula on ranks
    spearman = (s[0, 1] - s[0, 2] * s[1, 2]) / np.sqrt((1 - s[0, 2] ** 2) * (1 - s[1, 2] ** 2))
    assert p["partial_spearman"] == pytest.approx(spearman, abs=1e-10)


def test_the_partial_correlation_with_two_controls_matches_the_precision_matrix():
    t = _correlated()
    precision = np.linalg.inv(t[["x", "y", "z", "w"]].corr().to_numpy())  # pingouin's formula
    expected = -precision[0, 1] / np.sqrt(precision[0, 0] * precision[1, 1])
    assert partial_correlation(t, "x", "y", ["z", "w"], n_boot=0)["partial"] == pytest.approx(expected, abs=1e-10)


def test_a_measure_with_nothing_beyond_the_error_has_a_partial_correlation_near_zero():
    rng = np.random.default_rng(2)
    err = rng.uniform(0.05, 0.5, 400)
    t = pd.DataFrame({"task": np.arange(400) % 20, "full_error": err,
                      "sep_label": 1 - err + 0.05 * rng.normal(size=400)})  # separability only mirrors the error
    t["auc_gain"] = 0.3 - 0.5 * err + 0.03 * rng.normal(size=400)
    row = partial_correlations(t, n_boot=300).set_index("x").loc["sep_label"]
    assert row["pearson"] > 0.8 and row["partial_low"] < 0 < row["partial_high"]
    with pytest.raises(RecordError, match="no 'full_error' column"):
        partial_correlations(t.drop(columns="full_error"))


# ---- the interventions' tables ----------------------------------------------------------------------------

def test_phase_table_and_matched_comparison():
    t = pd.DataFrame({"label_separability": [0.6] * 4 + [0.9] * 4, "attribute_separability": [0.7, 0.7, 0.99, 0.99] * 2,
                      "task": ["t0", "t1"] * 4, "auc_gain": [0.0, 0.02, 0.01, 0.03, 0.1, 0.12, 0.2, 0.22],
                      "up_mismatched_min": [1.0] * 8, "sep_label": [0.6] * 8, "sep_spurious": [0.7] * 8})
    phase = phase_table(t).set_index(["label_separability", "attribute_separability"])
    assert phase.loc[(0.9, 0.99), "auc_gain"] == pytest.approx(0.21) and phase["tasks"].eq(2).all()
    inj = pd.DataFrame({"target_weights": ["a", "a", "b"], "task": ["t0", "t1", "t0"], "auc_gain": [0.1, 0.2, 0.0],
                        "sep_label": [0.8, 0.8, 0.6]})
    dose = pd.DataFrame({"weights": ["a", "a", "b", "c"], "task": ["t0", "t1", "t0", "t0"],
                         "auc_gain": [0.15, 0.15, 0.0, 0.5], "sep_label": [0.8, 0.8, 0.6, 0.9]})
    m = matched_comparison(inj, dose).set_index("target_weights")
    assert list(m.index) == ["a", "b"] and m.loc["a", "difference"] == pytest.approx(0.0)
    assert m.loc["a", "low"] < 0 < m.loc["a", "high"] and m.loc["b", "tasks"] == 1


# ---- the added measure: the full-data probe's error -------------------------------------------------------

def test_the_full_data_error_is_the_loops_probe_fitted_on_the_whole_pool():
    """The loop's softmax probe with C (features standardised on the pool) predicts as sklearn's
    binary model with 2C, which `full_data_error` fits."""
    import torch

    from toolkit.analysis.dose import full_data_error
    from toolkit.features.probe import LinearProbe, column_moments, standardise

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 600)
    s = (rng.random(600) < 0.5).astype(int)
    X = rng.normal(size=(600, 6)) + np.outer(y, [1.0, 0, 0, 0, 0, 0]) + np.outer(s, [0, 2.0, 0, 0, 0, 0])
    pool, test = slice(0, 400), slice(400, 600)
    mean, std = column_moments(X[pool])
    probe = LinearProbe(C=1.0, tol=1e-10).fit(standardise(X[pool], mean, std), torch.from_numpy(y[pool]), 2)
    engine = probe.decision_function(standardise(X[test], mean, std)).argmax(1).numpy()
    err = full_data_error(X[pool], y[pool], X[test], y[test], s[test])
    assert err["full_error"] == pytest.approx(1 - (engine == y[test]).mean(), abs=1 / 200)
    groups = y[test] * 2 + s[test]
    worst = min(((engine == y[test])[groups == g]).mean() for g in range(4))
    assert err["full_worst_group_error"] == pytest.approx(1 - worst, abs=0.03)
