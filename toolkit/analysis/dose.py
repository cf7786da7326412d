"""The pretraining-dose study's tables: the gain of least-confidence over random for each
backbone and task, beside the representation measures, and how well the measures predict it.

Pure functions of run records and measure rows (`toolkit.experiments.pretraining_dose` makes them).
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
from scipy import stats

from toolkit.analysis.composition import upsampling_ratios
from toolkit.analysis.curves import label_efficiency_table, paired_gains
from toolkit.errors import RecordError
from toolkit.metrics import GAIN, bounds_for, mean_ci
from toolkit.record import RunRecord, tidy_rounds

METRIC = "test/worst_group"
MIN_CORRELATION_ROWS = 3  # a correlation over fewer points is not an estimate
CORRELATION_COLUMNS = ("x", "y", "rows", "clusters", "pearson", "pearson_low", "pearson_high", "spearman",
                       "spearman_low", "spearman_high")


def dose_axis(weights: str) -> tuple[str, float]:
    """(axis, dose) of a weights id: "pretrained@step400" -> ("step", 400); "pretrained" ->
    ("step", inf) (the last step; `dose_table` replaces inf by the run's step count);
    "random" -> ("random", 0); "pretrained@images5000" -> ("images", 5000); "pretrained@width16" ->
    ("width", 16) (the default backbone is width 32, on the step axis)."""
    if weights == "random":
        return "random", 0.0
    if weights == "pretrained":
        return "step", float("inf")
    m = re.fullmatch(r"pretrained@(step|images|shapes|width)(\d+)", weights)
    if not m:
        raise RecordError(f"not a dose id: {weights!r}")
    return m.group(1), float(m.group(2))


def dose_row(records: list[RunRecord], *, metric: str = METRIC) -> dict:
    """One backbone on one task: the paired gain of least-confidence over random (AUC and final,
    95% t-CIs over seeds), label efficiency, upsampling of the mismatched and of the matched
    minority groups, both strategies' final value, and the seed-set probe's accuracy."""
    records = [r for r in records if r.status == "finished"]
    if not records:
        raise RecordError("dose_row: no finished runs")
    tidy = tidy_rounds(records)
    row: dict = {"n_seeds": int(tidy["seed"].nunique())}
    g = paired_gains(tidy, metric, by=["weights"])
    for kind in ("auc_gain", "final_gain"):
        row[kind], row[f"{kind}_low"], row[f"{kind}_high"] = mean_ci(g[kind], bounds=GAIN)
    eff = label_efficiency_table(tidy, metric, by=["weights"]).iloc[0]
    row["efficiency"], row["efficiency_low"], row["efficiency_high"] = eff["efficiency"], eff["low"], eff["high"]
    last = tidy.loc[tidy.groupby("run")["round"].idxmax()]
    for s, key in (("least_confidence", "lc"), ("random", "rnd")):
        row[f"{key}_final"] = float(last.loc[last["strategy"] == s, metric].mean())
    first = tidy[tidy["round"] == 0]
    row["seed_set_accuracy"] = float(first["test/accuracy"].mean())  # the probe on the seed set alone
    row["seed_set_worst_group"] = float(first[metric].mean())
    shares = records[0].meta.get("pool_group_shares") or {}
    mismatched = sorted(k for k in shares if k.split("_")[0][1:] != k.split("_")[1][1:])
    class_share: dict[str, float] = {}
    for k, v in shares.items():
        class_share[k.split("_")[0]] = class_share.get(k.split("_")[0], 0.0) + v
    minority = min(class_share, key=class_share.get) if class_share else "y1"
    lc = [r for r in records if r.strategy == "least_confidence"]
    up = upsampling_ratios(lc).groupby("group")["upsampling"].mean() if lc else pd.Series(dtype=float)
    row["up_mismatched_min"] = float(min((up.get(k, np.nan) for k in mismatched), default=np.nan))
    row["up_minority_matched"] = float(up.get(f"{minority}_s{minority[1:]}", np.nan))
    return row


def dose_table(records: dict[tuple[str, str], list[RunRecord]], measures: list[dict], *,
               final_step: int = 1700, metric: str = METRIC) -> pd.DataFrame:
    """One row per (backbone, task): axis, dose, the `dose_row` measurements and the
    separability measures. `final_step` is the step count that "pretrained" stands for.

    Args:
        records: (weights id, task) -> that backbone's `RunRecord`s on that task (least-
            confidence and random, paired by seed; partial runs are left out, an empty list
            is skipped). Weights ids are "random", "pretrained" or a dose:
            "pretrained@step400", "pretrained@images5000", "pretrained@shapes4".
        measures: dicts with "weights", "task" and the representation measures of that
            backbone on that task (`sep_*` and `label_shapes*` keys are copied in).
        final_step: the pretraining steps of "pretrained", its dose on the step axis
            (default 1700).
        metric: the curve the gains are measured on (default "test/worst_group").

    Returns:
        A DataFrame, one row per (weights, task): weights, task, axis ("step", "images",
        "shapes" or "random"), dose, then `dose_row`'s measurements (n_seeds, auc_gain and
        final_gain with 95% t-intervals over seeds, efficiency with its interval, lc_final,
        rnd_final, seed_set_accuracy, seed_set_worst_group, up_mismatched_min,
        up_minority_matched) and the measures.

    Raises:
        RecordError: no rows at all, a key whose runs are all partial, or a weights id
            that is not a dose.

    Examples:
        >>> import toolkit
        >>> from toolkit.analysis.dose import dose_table
        >>> recs = toolkit.load_runs("altk-doc/tasks/t0").records  # written by the RunRecord example
        >>> by_backbone = {(w, "t0"): [r for r in recs if r.weights == w] for w in ("pretrained", "random")}
        >>> measures = [{"weights": "pretrained", "task": "t0", "sep_group": 0.9},
        ...             {"weights": "random", "task": "t0", "sep_group": 0.6}]
        >>> table = dose_table(by_backbone, measures)
        >>> table[["weights", "axis", "dose", "auc_gain", "efficiency", "sep_group"]].round(4)
              weights    axis    dose  auc_gain  efficiency  sep_group
        0  pretrained    step  1700.0    0.1625      1.4211        0.9
        1      random  random     0.0    0.0250      1.2857        0.6
    """
    by_key = {(m["weights"], m["task"]): m for m in measures}
    rows = []
    for (weights, task), recs in records.items():
        if not recs:
            continue
        axis, dose = dose_axis(weights)
        row = {"weights": weights, "task": task, "axis": axis, "dose": final_step if dose == float("inf") else dose}
        row.update(dose_row(recs, metric=metric))
        row.update({k: v for k, v in by_key.get((weights, task), {}).items()
                    if k.startswith("sep_") or k.startswith("label_shapes")})
        rows.append(row)
    if not rows:
        raise RecordError("dose_table: no finished runs")
    return pd.DataFrame(rows)


def backbone_table(records: dict[str, list[RunRecord]], measures: list[dict], *, metric: str = METRIC
                   ) -> pd.DataFrame:
    """One row per named backbone on a single task (the real-network axis): the `dose_row`
    measurements, whose CIs are over seeds, beside the backbone's measures (separability,
    parameters, input size) from `measures` rows keyed by "backbone"."""
    by_name = {m["backbone"]: m for m in measures if "backbone" in m}
    rows = []
    for name, recs in records.items():
        if not [r for r in recs if r.status == "finished"]:
            continue
        row = {"backbone": name, **{k: v for k, v in by_name.get(name, {}).items() if k != "backbone"}}
        row.update(dose_row(recs, metric=metric))
        rows.append(row)
    if not rows:
        raise RecordError("backbone_table: no finished runs")
    return pd.DataFrame(rows)


def task_means(records: dict[tuple[str, str], list[RunRecord]], metrics: list[str] | None = None) -> pd.DataFrame:
    """Every finished run's rounds, averaged over seeds within each task: one row per
    (weights, strategy, task, n_labels), so that what follows counts tasks, not runs."""
    frames = []
    for (weights, task), recs in records.items():
        recs = [r for r in recs if r.status == "finished"]
        if recs:
            frames.append(tidy_rounds(recs).assign(task=task))
    if not frames:
        raise RecordError("task_means: no finished runs")
    tidy = pd.concat(frames, ignore_index=True)
    metrics = metrics or [c for c in tidy.columns if c.startswith("test/")]
    return tidy.groupby(["weights", "strategy", "task", "n_labels"], as_index=False)[metrics].mean()


def pooled_label_efficiency(means: pd.DataFrame, metric: str = METRIC, *, labels_counted: str = "all",
                            seed: int = 0) -> pd.DataFrame:
    """Label efficiency of the task-averaged curves per backbone, with a bootstrap CI over
    tasks (`task_means` output; a lower bound where the ratio is undefined, see
    `label_efficiency_table`)."""
    return label_efficiency_table(means.rename(columns={"task": "seed"}), metric, by=["weights"], seed=seed,
                                  labels_counted=labels_counted)


def gain_by_coverage(table: pd.DataFrame, value: str = "auc_gain") -> pd.DataFrame:
    """The coverage backbones' gain by how many of the task's label shapes they were pretrained
    on: mean [95% t-CI over tasks] per (backbone, shapes seen). Empty without coverage rows."""
    if "label_shapes_seen" not in table:
        return pd.DataFrame(columns=["weights", "label_shapes_seen", value, "low", "high", "tasks"])
    rows = []
    for (weights, seen), g in table.dropna(subset=["label_shapes_seen"]).groupby(["weights", "label_shapes_seen"]):
        m, lo, hi = mean_ci(g[value], bounds=bounds_for(value))
        rows.append({"weights": weights, "label_shapes_seen": int(seen), "label_shapes": int(g["label_shapes"].iloc[0]),
                     value: m, "low": lo, "high": hi, "tasks": len(g)})
    return pd.DataFrame(rows)


def coverage_design(table: pd.DataFrame, value: str = "auc_gain", *, reference: str = "pretrained") -> pd.DataFrame:
    """The coverage design's contrast (tasks named "cov<K>-seen-<i>" / "cov<K>-unseen-<i>",
    `experiments.pretraining_dose.coverage_tasks`): per backbone, the mean `value` on the seen
    and on the unseen tasks, the paired difference seen - unseen over the pairs, and that
    difference minus the `reference` backbone's (a difference in differences: the shapes of the
    two sides may differ in difficulty for every backbone). Means with 95% t-CIs over pairs.

    Args:
        table: `dose_table`'s rows of the coverage tasks.
        value: the column compared.
        reference: the backbone that saw every shape.

    Returns:
        One row per backbone: weights, seen, seen_low, seen_high, unseen, ..., difference, ...,
        versus_reference, ..., pairs.

    Examples:
        >>> t = pd.DataFrame({"weights": ["pretrained"] * 4 + ["pretrained@shapes10"] * 4,
        ...                   "task": ["cov10-seen-00", "cov10-unseen-00", "cov10-seen-01", "cov10-unseen-01"] * 2,
        ...                   "auc_gain": [0.10, 0.08, 0.12, 0.10, 0.10, 0.02, 0.12, 0.04]})
        >>> coverage_design(t)[["weights", "difference", "versus_reference", "pairs"]].round(3)
                       weights  difference  versus_reference  pairs
        0           pretrained        0.02              0.00      2
        1  pretrained@shapes10        0.08              0.06      2
    """
    parts = table["task"].astype(str).str.extract(r"^cov\d+-(seen|unseen)-(\d+)$")
    rows = table.assign(side=parts[0], pair=parts[1]).dropna(subset=["side"])
    if rows.empty:
        raise RecordError("coverage_design: no coverage tasks (named cov<K>-seen-<i> / cov<K>-unseen-<i>) in the table")
    wide = rows.pivot_table(index=["weights", "pair"], columns="side", values=value, aggfunc="mean")
    wide = wide.dropna(subset=["seen", "unseen"])  # a pair counts only with both sides
    wide["difference"] = wide["seen"] - wide["unseen"]
    ref = wide["difference"].xs(reference, level="weights") if reference in wide.index.get_level_values(0) else None
    out = []
    for weights, g in wide.groupby(level="weights", sort=False):
        g = g.droplevel("weights")
        row = {"weights": weights}
        for name, values in (("seen", g["seen"]), ("unseen", g["unseen"]), ("difference", g["difference"]),
                             ("versus_reference", g["difference"] - ref.reindex(g.index) if ref is not None
                              else pd.Series(np.nan, index=g.index))):
            m, lo, hi = mean_ci(values)
            row.update({name: m, f"{name}_low": lo, f"{name}_high": hi})
        out.append({**row, "pairs": len(g)})
    return pd.DataFrame(out)


def gain_by_dose(table: pd.DataFrame, value: str = "auc_gain") -> pd.DataFrame:
    """Mean [95% t-CI over tasks] of `value` per backbone, with its axis and dose.

    Args:
        table: the table of `dose_table` (columns weights, axis, dose and `value`).
        value: the column averaged over tasks (default "auc_gain"; e.g. "final_gain",
            "efficiency").

    Returns:
        A DataFrame, one row per backbone, sorted by axis and dose: weights, axis, dose,
        `value` (the mean over tasks), low and high (its 95% t-interval; NaN from one task)
        and tasks (how many have it).

    Examples:
        >>> import toolkit
        >>> from toolkit.analysis.dose import dose_table, gain_by_dose
        >>> recs = toolkit.load_runs("altk-doc/tasks/t0").records
        >>> table = dose_table({(w, "t0"): [r for r in recs if r.weights == w] for w in ("pretrained", "random")}, [])
        >>> gain_by_dose(table)  # one task: no interval
              weights    axis    dose  auc_gain  low  high  tasks
        0      random  random     0.0    0.0250  NaN   NaN      1
        1  pretrained    step  1700.0    0.1625  NaN   NaN      1
    """
    out = []
    for (weights, axis, dose), g in table.groupby(["weights", "axis", "dose"], sort=False):
        m, lo, hi = mean_ci(g[value], bounds=bounds_for(value))
        out.append({"weights": weights, "axis": axis, "dose": dose, value: m, "low": lo, "high": hi,
                    "tasks": int(g[value].notna().sum())})
    return pd.DataFrame(out).sort_values(["axis", "dose"]).reset_index(drop=True)


def correlate(table: pd.DataFrame, x: str, y: str, *, cluster: str = "task", n_boot: int = 2000,
              seed: int = 0, level: float = 0.95) -> dict:
    """Pearson and Spearman correlation of columns x and y over the rows, with percentile
    bootstrap CIs that resample `cluster`s (tasks) with replacement, keeping each task's rows
    together (rows of one task share its difficulty, so they are not independent draws)."""
    data = table[[cluster, x, y]].dropna()
    if len(data) < MIN_CORRELATION_ROWS:
        raise RecordError(f"correlate: {len(data)} rows with both {x!r} and {y!r}; "
                          f"need at least {MIN_CORRELATION_ROWS}")
    groups = {k: g[[x, y]].to_numpy() for k, g in data.groupby(cluster)}
    keys = list(groups)
    rng = np.random.default_rng(seed)
    boot = {"pearson": [], "spearman": []}
    for _ in range(n_boot):
        pick = np.concatenate([groups[keys[i]] for i in rng.integers(0, len(keys), len(keys))])
        if np.ptp(pick[:, 0]) == 0 or np.ptp(pick[:, 1]) == 0:
            continue
        boot["pearson"].append(stats.pearsonr(pick[:, 0], pick[:, 1])[0])
        boot["spearman"].append(stats.spearmanr(pick[:, 0], pick[:, 1])[0])
    alpha = (1 - level) / 2
    out = {"x": x, "y": y, "rows": len(data), "clusters": len(keys)}
    constant = np.ptp(data[x].to_numpy()) == 0 or np.ptp(data[y].to_numpy()) == 0
    for name, fn in (("pearson", stats.pearsonr), ("spearman", stats.spearmanr)):
        out[name] = float("nan") if constant else float(fn(data[x], data[y])[0])
        b = np.asarray(boot[name])
        out[f"{name}_low"], out[f"{name}_high"] = (float(np.quantile(b, alpha)), float(np.quantile(b, 1 - alpha))) \
            if len(b) else (np.nan, np.nan)
    return out


MEASURES = ("sep_label", "sep_spurious", "sep_group", "sep_group_worst", "sep_group_mismatched",
            "seed_set_accuracy", "seed_set_worst_group")


def correlation_rows(table: pd.DataFrame, *, target: str = "auc_gain") -> dict[str, int]:
    """Each representation measure in `table` -> its rows with both it and `target` known."""
    return {m: int(table[[m, target]].dropna().shape[0]) for m in MEASURES if m in table and target in table}


def measure_correlations(table: pd.DataFrame, *, target: str = "auc_gain", n_boot: int = 2000,
                         seed: int = 0) -> pd.DataFrame:
    """How well each representation measure predicts `target` across backbone x task: one row
    per measure with at least `MIN_CORRELATION_ROWS` rows (`correlation_rows` says which have
    fewer: they are left out, and a study too small for any gives an empty table).

    Args:
        table: one row per backbone x task, as `dose_table` gives: a "task" column, `target`
            and any of the measures of `MEASURES` ("sep_group", "seed_set_accuracy", ...).
        target: the column predicted (default "auc_gain").
        n_boot: bootstrap resamples of the tasks for the intervals (default 2000).
        seed: the bootstrap's seed.

    Returns:
        A DataFrame, one row per measure (`CORRELATION_COLUMNS`): x (the measure), y
        (`target`), rows, clusters (tasks), pearson and spearman with their 95% percentile
        bootstrap intervals (`_low`, `_high`), resampling whole tasks.

    Examples:
        >>> import pandas as pd
        >>> from toolkit.analysis.dose import measure_correlations
        >>> table = pd.DataFrame({"weights": ["random"] * 3 + ["pretrained"] * 3, "task": ["t0", "t1", "t2"] * 2,
        ...                       "auc_gain": [0.0, 0.02, -0.01, 0.15, 0.1, 0.12],
        ...                       "sep_group": [0.55, 0.6, 0.5, 0.9, 0.8, 0.85],
        ...                       "sep_label": [0.7, 0.9, 0.8, 0.75, 0.95, 0.85]})
        >>> measure_correlations(table, n_boot=200)[["x", "y", "rows", "clusters", "pearson", "spearman"]].round(3)
                   x         y  rows  clusters  pearson  spearman
        0  sep_label  auc_gain     6         3    0.188     0.143
        1  sep_group  auc_gain     6         3    0.997     1.000
    """
    rows = [correlate(table, m, target, n_boot=n_boot, seed=seed)
            for m, n in correlation_rows(table, target=target).items() if n >= MIN_CORRELATION_ROWS]
    return pd.DataFrame(rows, columns=list(CORRELATION_COLUMNS))


# ---- the representation measures of one cache (issue #33: the same numbers for any cache) ---------

def separability_measures(embeddings: np.ndarray, labels: np.ndarray, spurious: np.ndarray, *, cv: int = 5,
                          random_state: int = 0) -> dict:
    """A pool embedding's separability measures, as the dose study computes them: cross-validated
    logistic probes (`GroupSeparability`) of the label, the spurious attribute and the four groups.

    The same computation as the dose study's runner (`experiments.pretraining_dose`), as a pure
    function of arrays, so an intervention's or a user's cache is measured like a dose backbone.

    Args:
        embeddings: (N, D) the pool's features.
        labels: (N,) labels.
        spurious: (N,) the spurious attribute.
        cv: folds, lowered to the smallest label x attribute group (folds are stratified by group;
            at least 2).
        random_state: the folds' shuffle.

    Returns:
        {"sep_label", "sep_spurious", "sep_group"} (balanced accuracies: the mean over the groups
        of each probe's accuracy), "sep_group_worst" (the group probe's worst group) and
        "sep_group_mismatched" (its mean over the groups whose label and attribute differ).

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> y, s = np.repeat([0, 1], 40), np.tile([0, 1], 40)
        >>> X = np.c_[4.0 * y, rng.normal(size=(80, 3))]  # the label is readable, the attribute is not
        >>> m = separability_measures(X, y, s)
        >>> m["sep_label"], bool(m["sep_spurious"] < 0.7)
        (1.0, True)
    """
    from toolkit.analysis.separability import GroupSeparability

    labels, spurious = np.asarray(labels), np.asarray(spurious)
    smallest = int(np.unique(labels * 2 + spurious, return_counts=True)[1].min())
    sep = GroupSeparability(cv=max(2, min(cv, smallest)), random_state=random_state).fit(embeddings, labels, spurious)
    per_group = sep.per_group_.set_index("group")["group_probe"]
    scores = dict(zip(sep.scores_["target"], sep.scores_["balanced_accuracy"]))
    mismatched = [g for g in per_group.index if g.split("_")[0][1:] != g.split("_")[1][1:]]
    return {"sep_label": scores.get("label"), "sep_spurious": scores.get("spurious"), "sep_group": scores.get("group"),
            "sep_group_worst": float(per_group.min()), "sep_group_mismatched": float(per_group[mismatched].mean())}


def full_data_error(pool: np.ndarray, pool_labels: np.ndarray, test: np.ndarray, test_labels: np.ndarray,
                    test_spurious: np.ndarray | None = None, *, C: float = 1.0) -> dict:
    """The error of the probe fitted on the whole labelled pool: the quantity Mussmann & Liang
    (ICML 2018) relate uncertainty sampling's label savings to (their "full-data error").

    The probe of the active-learning loop (multinomial logistic regression, L2 with sklearn's
    `C`, on features standardised with the pool's moments), fitted on every pool example: for
    two classes the loop's softmax model with C is sklearn's binary model with 2C.

    Args:
        pool: (N, D) the pool's features.
        pool_labels: (N,) their labels.
        test: (M, D) a held-out split's features.
        test_labels: (M,) their labels.
        test_spurious: (M,) their attribute (None: no group error).
        C: the loop's inverse L2 strength (default 1.0, the probe's).

    Returns:
        {"full_error": 1 - test accuracy, "full_worst_group_error": 1 - the worst label x
        attribute group's test accuracy (NaN without an attribute)}.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> y = np.repeat([0, 1], 100)
        >>> X = rng.normal(size=(200, 3)) + np.outer(y, [3.0, 0, 0])
        >>> e = full_data_error(X[::2], y[::2], X[1::2], y[1::2], np.tile([0, 1], 50))
        >>> bool(e["full_error"] < 0.15), bool(e["full_worst_group_error"] >= e["full_error"])
        (True, True)
    """
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    pool, test = np.asarray(pool, dtype=np.float64), np.asarray(test, dtype=np.float64)
    mean, std = pool.mean(0), pool.std(0) + 1e-6  # the loop's standardisation (`features.probe.column_moments`)
    n_classes = len(np.unique(pool_labels))
    model = LogisticRegression(C=2 * C if n_classes == 2 else C, max_iter=2000, tol=1e-6)
    with threadpool_limits(limits=1, user_api="blas"):  # as the loop: small solves are slower threaded
        pred = model.fit((pool - mean) / std, pool_labels).predict((test - mean) / std)
    correct = pred == np.asarray(test_labels)
    out = {"full_error": float(1 - correct.mean()), "full_worst_group_error": float("nan")}
    if test_spurious is not None:
        groups = np.asarray(test_labels) * (np.max(test_spurious) + 1) + np.asarray(test_spurious)
        out["full_worst_group_error"] = float(1 - min(correct[groups == g].mean() for g in np.unique(groups)))
    return out
