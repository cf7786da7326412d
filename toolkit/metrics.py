"""Group metrics, confidence intervals across seeds, and label efficiency."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
from scipy import stats


def group_key(label: int, spurious: int) -> str:
    return f"y{int(label)}_s{int(spurious)}"


def group_metrics(
    preds: np.ndarray,
    labels: np.ndarray,
    spurious: np.ndarray | None,
    *,
    train_group_shares: dict[str, float] | None = None,
    matched: bool = True,
) -> dict[str, float]:
    """Accuracy overall and per (label, spurious) group.

    Args:
        preds, labels: (n,) integer class indices.
        spurious: (n,) the spurious attribute, coded so that "label == spurious" means a
            matched example (as Waterbirds: waterbird=1 on water=1); None for no groups.
        train_group_shares: share of each group in the training pool, for the
            train-weighted average (the Waterbirds literature's "average accuracy").
        matched: False where spurious values are not paired with labels: no mismatched keys.

    Returns:
        Without `spurious`: accuracy, acc/y<c> per class, worst_class, balanced.
        With it: accuracy; acc/<group> per group; worst_group; balanced (mean over groups);
        mismatched (mean over the groups with label != spurious, each group weighing the
        same); mismatched_pooled (accuracy over all their images pooled: in the real
        Waterbirds val split the two groups differ in size, so the two differ);
        avg_train_weighted.
    """
    return GroupMetrics(labels, spurious, train_group_shares=train_group_shares, matched=matched)(preds)


class GroupMetrics:
    """`group_metrics` on fixed rows: the groups' members found once, then any number of
    predictions scored (a probe lockstep scores every run on the same split each round)."""

    def __init__(self, labels: np.ndarray, spurious: np.ndarray | None, *,
                 train_group_shares: dict[str, float] | None = None, matched: bool = True) -> None:
        self.labels = np.asarray(labels)
        self.spurious = None if spurious is None else np.asarray(spurious)
        self.train_group_shares, self.matched = train_group_shares, matched
        if self.spurious is None:  # no groups: per-class accuracy, worst class, balanced (CIFAR-10)
            self.members = [(f"acc/y{int(c)}", np.flatnonzero(self.labels == c), c, False)
                            for c in np.unique(self.labels)]
            return
        self.members = []
        for y in np.unique(self.labels):
            for s in np.unique(self.spurious):
                m = np.flatnonzero((self.labels == y) & (self.spurious == s))
                if len(m):
                    self.members.append((group_key(y, s), m, None, y != s))
        self.off = np.flatnonzero(self.labels != self.spurious)

    def __call__(self, preds: np.ndarray) -> dict[str, float]:
        preds = np.asarray(preds)
        if preds.shape != self.labels.shape:
            raise ValueError(f"preds {preds.shape} and labels {self.labels.shape} must have the same shape")
        return self.many(preds[:, None])[0]

    def many(self, preds: np.ndarray) -> list[dict[str, float]]:
        """`self(p)` for each column p of `preds` (n, R), all columns at once: the same numbers
        (sums of 0/1 are exact in any order; means over groups are taken along rows, as numpy
        sums a 1-D list)."""
        preds, labels = np.asarray(preds), self.labels
        if preds.ndim != 2 or len(preds) != len(labels):
            raise ValueError(f"preds {preds.shape} must be (n, runs) with n = {len(labels)} rows")
        R = preds.shape[1]
        correct = preds == labels[:, None]
        cols: dict[str, np.ndarray] = {"accuracy": correct.mean(0) if len(labels) else np.full(R, np.nan)}
        if self.spurious is None:
            per_class = {key: (preds[m] == c).mean(0) for key, m, c, _ in self.members}
            cols.update(per_class)
            if per_class:
                table = np.stack(list(per_class.values()), axis=1)  # (R, classes): a row per run
                cols["worst_class"], cols["balanced"] = table.min(1), table.mean(1)
            return _rows(cols, R)
        accs = {key: correct[m].mean(0) for key, m, _, _ in self.members}
        cols.update({f"acc/{k}": v for k, v in accs.items()})
        table = np.stack(list(accs.values()), axis=1)
        cols["worst_group"], cols["balanced"] = table.min(1), table.mean(1)
        if self.matched:
            mismatched = [accs[key] for key, _, _, off in self.members if off]
            cols["mismatched"] = np.stack(mismatched, axis=1).mean(1) if mismatched else np.full(R, np.nan)
            cols["mismatched_pooled"] = correct[self.off].mean(0) if len(self.off) else np.full(R, np.nan)
        if self.train_group_shares:
            w = {k: self.train_group_shares.get(k, 0.0) for k in accs}
            total = sum(w.values())
            cols["avg_train_weighted"] = sum(accs[k] * w[k] for k in accs) / total if total else np.full(R, np.nan)
        return _rows(cols, R)


def _rows(cols: dict[str, np.ndarray], R: int) -> list[dict[str, float]]:
    """{name: R values} -> R dicts {name: float}, names in order."""
    lists = {k: np.asarray(v, dtype=np.float64).tolist() for k, v in cols.items()}
    return [{k: v[j] for k, v in lists.items()} for j in range(R)]


def macro_f1(preds: np.ndarray, labels: np.ndarray, attributes: pd.DataFrame) -> dict[str, float]:
    """iWildCam's headline metric: F1 averaged over the classes present in the labels."""
    from sklearn.metrics import f1_score

    return {"macro_f1": float(f1_score(labels, preds, labels=np.unique(labels), average="macro", zero_division=0))}


def _attribute_accuracy(preds, labels, attributes, column: str) -> pd.Series:
    correct = pd.Series(np.asarray(preds) == np.asarray(labels), index=attributes.index)
    return correct.groupby(attributes[column].to_numpy()).mean()


def user_acc_p10(preds: np.ndarray, labels: np.ndarray, attributes: pd.DataFrame) -> dict[str, float]:
    """Amazon-WILDS' headline metric: the 10th percentile of per-reviewer accuracy
    (np.percentile over reviewers with at least one example, as wilds' AmazonDataset.eval)."""
    return {"user_acc_p10": float(np.percentile(_attribute_accuracy(preds, labels, attributes, "user"), 10))}


def worst_region(preds: np.ndarray, labels: np.ndarray, attributes: pd.DataFrame) -> dict[str, float]:
    """FMoW-WILDS' headline metric: accuracy of the worst region."""
    return {"worst_region": float(_attribute_accuracy(preds, labels, attributes, "region").min())}


# dataset-specific headline metrics, named by GroupedDataset.extra_metrics
EXTRA_METRICS = {"macro_f1": macro_f1, "user_acc_p10": user_acc_p10, "worst_region": worst_region}


def group_shares(labels: np.ndarray, spurious: np.ndarray) -> dict[str, float]:
    """Share of each (label, spurious) group among the given rows."""
    keys = [group_key(y, s) for y, s in zip(labels, spurious)]
    counts = pd.Series(keys).value_counts()
    return {k: float(v / len(keys)) for k, v in counts.items()}


PROPORTION = (0.0, 1.0)  # accuracies and the like: an interval never leaves [0, 1]
GAIN = (-1.0, 1.0)  # a difference of two accuracies (a paired gain)
RATIO = (0.0, float("inf"))  # label efficiency, upsampling, a time ratio


def bounds_for(quantity: str) -> tuple[float, float] | None:
    """The range a summary table's quantity cannot leave, read from its name, for `mean_ci`:
    gains and differences of accuracies (`*gain*`, `diff_*`, `gain_difference` is a difference
    of gains: [-2, 2]) are in [-1, 1]; final values, accuracies, worst-group and overlaps in
    [0, 1]; efficiencies, upsampling and ratios in [0, inf). Anything else (seconds, counts of
    passes) is left unclipped.

    Examples:
        >>> bounds_for("pre_auc_gain"), bounds_for("pre_lc_final"), bounds_for("mismatched_first20")
        ((-1.0, 1.0), (0.0, 1.0), (0.0, 20.0))
    """
    q = quantity.lower()
    if "seconds" in q or "forward" in q or "backward" in q or q.startswith("passes"):
        return RATIO if "ratio" in q else None
    if q == "gain_difference":
        return (-2.0, 2.0)
    if "gain" in q or q.startswith("diff_"):
        return GAIN
    if "efficiency" in q or "up_" in q or q.startswith("up") or "ratio" in q:
        return RATIO
    if re.search(r"first\d+$", q):  # a count among the first N acquired
        return (0.0, float(re.search(r"(\d+)$", q).group(1)))
    if q.endswith("final") or "accuracy" in q or "worst_group" in q or q == "overlap" or "/" in q:
        return PROPORTION
    return None


def mean_ci(values, *, level: float = 0.95, method: str = "t",
            bounds: tuple[float, float] | None = None) -> tuple[float, float, float]:
    """(mean, low, high) of the mean across seeds.

    method "t" (default) uses Student's t, honest for the few seeds a CPU demo runs;
    "gaussian" uses mean +- z * sem, the paper's approximation (fine for 16 seeds);
    "bootstrap" is a percentile bootstrap over the values (2,000 resamples, fixed seed):
    it stays inside the values' range, so a CI of positive ratios never crosses zero.

    `bounds`: the range the quantity cannot leave (`PROPORTION` for accuracies); the
    interval is clipped to it, so a t-interval of 0.992 over 3 seeds reads [0.96, 1.00],
    not [0.96, 1.02]. One value has no interval: (value, nan, nan); n values that are all
    equal have a zero-width one.

    Examples:
        >>> mean_ci([0.98, 1.0, 0.996], bounds=PROPORTION)[2]
        1.0
        >>> mean_ci([0.7])
        (0.7, nan, nan)
    """
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return (float("nan"),) * 3
    m = float(v.mean())
    if len(v) == 1:
        return m, float("nan"), float("nan")
    if method == "bootstrap":
        boots = v[np.random.default_rng(0).integers(0, len(v), (2000, len(v)))].mean(1)
        lo, hi = np.quantile(boots, [0.5 - level / 2, 0.5 + level / 2])
    else:
        sem = v.std(ddof=1) / np.sqrt(len(v))
        if method == "t":
            q = stats.t.ppf(0.5 + level / 2, df=len(v) - 1)
        elif method == "gaussian":
            q = stats.norm.ppf(0.5 + level / 2)
        else:
            raise ValueError(f"unknown CI method {method!r}; valid: 't', 'gaussian', 'bootstrap'")
        lo, hi = m - q * sem, m + q * sem
    if bounds is not None:
        lo, hi = min(max(lo, bounds[0]), bounds[1]), min(max(hi, bounds[0]), bounds[1])
    return m, float(lo), float(hi)


def labels_to_reach(n_labels: np.ndarray, curve: np.ndarray, target: float) -> float:
    """Smallest label count at which a curve first reaches `target`, interpolating linearly
    between measured points; inf if it never does."""
    n_labels, curve = np.asarray(n_labels, float), np.asarray(curve, float)
    for i in range(len(curve)):
        if curve[i] >= target:
            if i == 0:
                return float(n_labels[0])
            x0, x1, y0, y1 = n_labels[i - 1], n_labels[i], curve[i - 1], curve[i]
            return float(x0 + (target - y0) / (y1 - y0) * (x1 - x0))
    return float("inf")


def label_efficiency(n_labels: np.ndarray, baseline_curve: np.ndarray, method_curve: np.ndarray, *,
                     uncounted: float = 0.0) -> float:
    """How many times more labels the baseline needs than the method.

    Definition: target = the baseline's value at its final budget B (the last point);
    n = labels the method needs to first reach target (linear interpolation between
    rounds; the method's first point counts as reached if already above). Efficiency =
    B / n. Values > 1 favour the method; 0 when the method never reaches the target
    within the budget; nan when the baseline does not improve on its first point (then
    "labels the baseline needs" is meaningless: a flat curve at chance would otherwise
    give B / first-point). Curves are means over seeds, evaluated at shared label counts.

    `uncounted` labels (the seed set, for the "acquired labels only" convention) are
    taken off both counts: (B - s) / (n - s). The paper does not say which convention its
    "5.8x" uses, and the choice can move a ratio several-fold. inf when the method
    reaches the target with the uncounted labels alone.
    """
    n_labels = np.asarray(n_labels, float)
    baseline_curve = np.asarray(baseline_curve, float)
    target = float(baseline_curve[-1])
    if target <= baseline_curve[0]:
        return float("nan")
    needed = labels_to_reach(n_labels, method_curve, target)
    if np.isinf(needed):
        return 0.0
    return float((n_labels[-1] - uncounted) / (needed - uncounted)) if needed > uncounted else float("inf")


def label_efficiency_bound(n_labels: np.ndarray, baseline_curve: np.ndarray, method_curve: np.ndarray, *,
                           uncounted: float = 0.0) -> float:
    """A lower bound on label efficiency, for where `label_efficiency` is undefined (the
    baseline never improves on its first point).

    target = the best value the baseline reaches anywhere within its budget B, so it needs
    more than B labels for any value above it; n = the first *measured* label count at which
    the method's curve is above target (no interpolation, which would put n just past the
    seed set). Efficiency > (B - s) / (n - s), s = `uncounted`. nan when the method never
    gets above target either (nothing is learned by either); inf when its first point
    already is.

    Examples:
        >>> import numpy as np
        >>> n = np.array([40, 60, 80, 100])
        >>> flat = np.array([0.5, 0.5, 0.49, 0.5])         # random: never above its seed-set value
        >>> label_efficiency_bound(n, flat, np.array([0.5, 0.5, 0.7, 0.8]))  # above 0.5 from 80 labels
        1.25
        >>> label_efficiency_bound(n, flat, np.array([0.5, 0.5, 0.7, 0.8]), uncounted=40)  # 60 / 40
        1.5
    """
    n_labels, baseline_curve, method_curve = (np.asarray(a, float) for a in (n_labels, baseline_curve, method_curve))
    above = np.flatnonzero(method_curve > baseline_curve.max())
    if not len(above):
        return float("nan")
    needed = n_labels[above[0]]
    return float((n_labels[-1] - uncounted) / (needed - uncounted)) if needed > uncounted else float("inf")


def bootstrap_label_efficiency(
    n_labels: np.ndarray,
    baseline_runs: np.ndarray,
    method_runs: np.ndarray,
    *,
    rng: np.random.Generator,
    n_boot: int = 2000,
    level: float = 0.95,
    uncounted: float = 0.0,
    statistic=label_efficiency,
    paired: bool = False,
) -> tuple[float, float, float]:
    """Label efficiency of mean curves, with a percentile bootstrap CI over seeds.

    Args:
        baseline_runs, method_runs: (n_seeds, n_points) curves at the shared `n_labels`.
        uncounted: see `label_efficiency`.
        statistic: `label_efficiency`, or `label_efficiency_bound` where it is undefined.
        paired: row i of both arrays is the same seed (the same seed set), and a resample
            draws seeds, i.e. both rows together. Resampling the two arms independently
            (paired=False) treats them as unrelated: two identical sets of curves then give
            e.g. 1.00 [0.00, inf], because a resampled baseline can end above or below a
            resampled method that is the same runs.

    Returns:
        (point, low, high); low and high are nan where there is no interval: fewer than
        two seeds on either side (a bootstrap of one seed is that seed, a zero-width
        interval that would claim certainty), or an undefined point.
    """
    b, m = np.asarray(baseline_runs, float), np.asarray(method_runs, float)
    if paired and len(b) != len(m):
        raise ValueError(f"paired bootstrap needs as many baseline runs as method runs, got {len(b)} and {len(m)}")
    point = statistic(n_labels, b.mean(0), m.mean(0), uncounted=uncounted)
    if np.isnan(point) or len(b) < 2 or len(m) < 2:
        return point, float("nan"), float("nan")
    boots = np.empty(n_boot)
    for i in range(n_boot):
        ib = rng.integers(0, len(b), len(b))
        im = ib if paired else rng.integers(0, len(m), len(m))
        boots[i] = statistic(n_labels, b[ib].mean(0), m[im].mean(0), uncounted=uncounted)
    boots = boots[~np.isnan(boots)]
    if len(boots) == 0:
        return point, float("nan"), float("nan")
    # no interpolation between order statistics: inf (reached with the seed set alone) stays inf
    with np.errstate(invalid="ignore"):  # numpy computes inf - inf on the way, then discards it
        lo, hi = np.quantile(boots, [0.5 - level / 2, 0.5 + level / 2], method="inverted_cdf")
    return point, float(lo), float(hi)
