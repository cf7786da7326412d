import numpy as np
import pytest

from toolkit.metrics import bootstrap_label_efficiency, group_metrics, label_efficiency, labels_to_reach, mean_ci


def test_group_metrics_constructed():
    # groups: y0_s0 (4 rows, 3 right), y0_s1 (2 rows, 0 right), y1_s1 (3 rows, 3 right), y1_s0 (1 row, 1 right)
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    spur = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 0])
    preds = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1, 1])
    shares = {"y0_s0": 0.7, "y0_s1": 0.05, "y1_s1": 0.2, "y1_s0": 0.05}
    m = group_metrics(preds, labels, spur, train_group_shares=shares)
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["acc/y0_s0"] == pytest.approx(0.75) and m["acc/y0_s1"] == 0.0
    assert m["acc/y1_s1"] == 1.0 and m["acc/y1_s0"] == 1.0
    assert m["worst_group"] == 0.0
    assert m["balanced"] == pytest.approx((0.75 + 0 + 1 + 1) / 4)
    assert m["mismatched"] == pytest.approx(0.5)
    assert m["avg_train_weighted"] == pytest.approx(0.7 * 0.75 + 0.2 + 0.05)


def test_group_metrics_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        group_metrics(np.zeros(3), np.zeros(4), None)


def test_mean_ci_known_values():
    m, lo, hi = mean_ci([1.0, 2.0, 3.0], method="gaussian")
    half = 1.959964 * 1.0 / np.sqrt(3)
    assert m == 2.0 and lo == pytest.approx(2 - half, rel=1e-5) and hi == pytest.approx(2 + half, rel=1e-5)
    m, lo, hi = mean_ci([1.0, 2.0, 3.0], method="t")  # t(0.975, df=2) = 4.3027
    assert hi - m == pytest.approx(4.302653 / np.sqrt(3), rel=1e-5)


def test_labels_to_reach_interpolates():
    n = np.array([40, 50, 60, 70])
    assert labels_to_reach(n, np.array([0.1, 0.3, 0.5, 0.6]), 0.4) == pytest.approx(55.0)
    assert labels_to_reach(n, np.array([0.5, 0.6, 0.6, 0.6]), 0.4) == 40.0
    assert labels_to_reach(n, np.array([0.1, 0.2, 0.3, 0.3]), 0.4) == np.inf


def test_label_efficiency_known_answer():
    n = np.array([20, 40, 60, 80, 100])
    random_curve = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    uncertain = np.array([0.1, 0.5, 0.6, 0.7, 0.8])  # reaches random's final 0.5 at 40 labels
    assert label_efficiency(n, random_curve, uncertain) == pytest.approx(100 / 40)
    assert label_efficiency(n, random_curve, random_curve) == pytest.approx(1.0)
    assert label_efficiency(n, uncertain, random_curve) == 0.0  # never reaches 0.8
    flat = np.zeros(5)  # a baseline stuck at chance: efficiency undefined, not 100 / 20
    assert np.isnan(label_efficiency(n, flat, flat))


def test_bootstrap_label_efficiency_brackets_point():
    n = np.array([20, 40, 60, 80, 100])
    rng = np.random.default_rng(0)
    base = np.array([0.1, 0.2, 0.3, 0.4, 0.5]) + rng.normal(0, 0.02, (8, 5))
    meth = np.array([0.1, 0.5, 0.6, 0.7, 0.8]) + rng.normal(0, 0.02, (8, 5))
    point, lo, hi = bootstrap_label_efficiency(n, base, meth, rng=np.random.default_rng(1), n_boot=300)
    assert lo <= point <= hi and 2.0 < point < 3.0


def test_label_efficiency_lower_bound_where_the_ratio_is_undefined():
    from toolkit.metrics import label_efficiency_bound

    n = np.array([40, 60, 80, 100])
    flat = np.array([0.9, 0.85, 0.88, 0.86])  # random never improves on its seed set: the ratio is undefined
    lc = np.array([0.9, 0.89, 0.95, 0.97])
    assert np.isnan(label_efficiency(n, flat, lc))
    # above random's best (0.90, its seed set) first at 80 labels, measured, not interpolated
    assert label_efficiency_bound(n, flat, lc) == pytest.approx(100 / 80)
    assert label_efficiency_bound(n, flat, lc, uncounted=40) == pytest.approx(60 / 40)
    assert np.isnan(label_efficiency_bound(n, flat, flat))  # neither improves: nothing to bound
    assert label_efficiency_bound(n, flat, lc + 0.2) == pytest.approx(100 / 40)  # above from the first point
    assert label_efficiency_bound(n, flat, lc + 0.2, uncounted=40) == np.inf


def test_the_efficiency_table_marks_a_bound_and_the_text_says_so():
    import pandas as pd

    from toolkit.analysis.curves import label_efficiency_table
    from toolkit.report.tables import efficiency_cell

    rows = []
    for seed in range(3):
        for strategy, curve in (("random", [0.9, 0.85, 0.88, 0.86]), ("least_confidence", [0.9, 0.89, 0.95, 0.97])):
            rows += [{"weights": "pretrained", "strategy": strategy, "seed": seed, "n_labels": n, "m": v + seed / 100}
                     for n, v in zip((40, 60, 80, 100), curve)]
    eff = label_efficiency_table(pd.DataFrame(rows), "m", by=["weights"]).iloc[0]
    assert eff["bound"] and eff["efficiency"] == pytest.approx(1.25)
    assert efficiency_cell(eff).startswith(">= 1.25x")
    flat = pd.DataFrame(rows).assign(m=0.5)
    eff = label_efficiency_table(flat, "m", by=["weights"]).iloc[0]
    assert not eff["bound"] and efficiency_cell(eff) == "n/a (neither improves)"


def _group_metrics_reference(preds, labels, spurious, shares, matched=True):
    """The per-prediction formulas group metrics were first computed with, as the oracle."""
    out = {"accuracy": float((preds == labels).mean())}
    if spurious is None:
        per_class = {f"acc/y{int(c)}": float((preds[labels == c] == c).mean()) for c in np.unique(labels)}
        return {**out, **per_class, "worst_class": min(per_class.values()),
                "balanced": float(np.mean(list(per_class.values())))}
    correct, accs, mismatched = preds == labels, {}, []
    for y in np.unique(labels):
        for s in np.unique(spurious):
            m = (labels == y) & (spurious == s)
            if m.any():
                accs[f"y{int(y)}_s{int(s)}"] = float(correct[m].mean())
                if y != s:
                    mismatched.append(accs[f"y{int(y)}_s{int(s)}"])
    out.update({f"acc/{k}": v for k, v in accs.items()})
    out["worst_group"], out["balanced"] = min(accs.values()), float(np.mean(list(accs.values())))
    if matched:
        out["mismatched"] = float(np.mean(mismatched)) if mismatched else float("nan")
        off = labels != spurious
        out["mismatched_pooled"] = float(correct[off].mean()) if off.any() else float("nan")
    w = {k: shares.get(k, 0.0) for k in accs}
    out["avg_train_weighted"] = float(sum(accs[k] * w[k] for k in accs) / sum(w.values()))
    return out


@pytest.mark.parametrize("n_classes,n_places", [(2, 2), (3, 2), (10, None), (12, None), (2, 3)])
def test_many_predictions_at_once_are_each_predictions_metrics_bit_for_bit(n_classes, n_places):
    """`GroupMetrics.many` (a lockstep's runs scored together) gives each run the numbers, and
    the key order, of the per-prediction formulas."""
    from toolkit.metrics import GroupMetrics

    rng = np.random.default_rng(n_classes)
    labels = rng.integers(0, n_classes, 997)
    spurious = None if n_places is None else rng.integers(0, n_places, 997)
    shares = {f"y{y}_s{s}": float(rng.random()) for y in range(n_classes) for s in range(3)}
    preds = np.where(rng.random((997, 13)) < 0.7, labels[:, None], rng.integers(0, n_classes, (997, 13)))
    scorer = GroupMetrics(labels, spurious, train_group_shares=shares)
    for j, got in enumerate(scorer.many(preds)):
        ref = _group_metrics_reference(preds[:, j], labels, spurious, shares)
        assert list(got) == list(ref) and got == ref, j
        assert got == group_metrics(preds[:, j], labels, spurious, train_group_shares=shares)
