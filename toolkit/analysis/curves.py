"""Learning curves across seeds, final-budget summaries, and label efficiency."""
from __future__ import annotations

import numpy as np
import pandas as pd

from toolkit.errors import RecordError
from toolkit.metrics import bootstrap_label_efficiency, label_efficiency_bound, mean_ci
from toolkit.record import RunRecord, tidy_rounds  # noqa: F401  (tidy_rounds: re-exported)

ARM_COLUMNS = ["model", "weights", "strategy"]



def default_split(tidy: pd.DataFrame) -> str:
    """The paper's split where the runs have it: its headline numbers (Fig. 2) are on the
    validation split; then test; then any evaluated split."""
    for split in ("val", "test"):
        if f"{split}/accuracy" in tidy.columns:
            return split
    return next(c.split("/")[0] for c in tidy.columns if c.endswith("/accuracy") and not c.startswith("train"))


def learning_curves(tidy: pd.DataFrame, metric: str, *, by: list[str] = ARM_COLUMNS,
                    method: str = "t") -> pd.DataFrame:
    """Mean and CI of `metric` across seeds at each label count, per arm."""
    if metric not in tidy.columns:
        raise RecordError(f"no metric {metric!r}; available: {', '.join(c for c in tidy.columns if '/' in c)}")
    rows = []
    for key, g in tidy.groupby(by + ["n_labels"], sort=True):
        m, lo, hi = mean_ci(g[metric], method=method)
        rows.append(dict(zip(by + ["n_labels"], key), mean=m, low=lo, high=hi, n_seeds=len(g)))
    return pd.DataFrame(rows)


def final_rows(tidy: pd.DataFrame, *, by: list[str] = ARM_COLUMNS) -> tuple[pd.DataFrame, dict[str, str]]:
    """Each arm's runs at the arm's final budget, one run per seed; and the runs left out,
    with why: a partial run (its last round short of the budget) would otherwise be
    averaged with finished ones, and a seed run twice would count as two seeds."""
    last = tidy.loc[tidy.groupby("run")["round"].idxmax()].sort_values("run")
    keep, left_out = [], {}
    for _, g in last.groupby(by, sort=True):
        budget = g["n_labels"].max()
        for _, row in g.iterrows():
            if row["n_labels"] < budget:
                left_out[row["run"]] = f"stopped at {int(row['n_labels'])} of {int(budget)} labels"
            elif any((k["seed"] == row["seed"]) for k in keep if all(k[c] == row[c] for c in by)):
                left_out[row["run"]] = f"seed {row['seed']} already counted"
            else:
                keep.append(row)
    return pd.DataFrame(keep), left_out


def final_summary(tidy: pd.DataFrame, metrics: list[str], *, by: list[str] = ARM_COLUMNS,
                  method: str = "t") -> pd.DataFrame:
    """Mean [CI] of each metric at the final budget, per arm, over distinct seeds (see
    `final_rows`; `n_left_out` counts the runs it left out, `left_out` names them)."""
    last, left_out = final_rows(tidy, by=by)
    rows = []
    for key, g in last.groupby(by, sort=True):
        arm = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        out = [r for r, why in left_out.items()
               if (tidy.loc[tidy["run"] == r, by].iloc[0] == pd.Series(arm)).all()]
        row = dict(arm, n_seeds=len(g), n_labels=int(g["n_labels"].max()), n_left_out=len(out),
                   left_out="; ".join(f"{r}: {left_out[r]}" for r in out))
        for m in metrics:
            row[m], row[f"{m}_low"], row[f"{m}_high"] = mean_ci(g[m], method=method)
        rows.append(row)
    return pd.DataFrame(rows)


def curve_area(n_labels, values) -> float:
    """Mean value of a learning curve over its label range (trapezoid area / range), so a
    curve that rises earlier scores higher even when two curves end at the same value."""
    x, y = np.asarray(n_labels, float), np.asarray(values, float)
    if len(x) < 2:
        return float(y[0]) if len(y) else float("nan")
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / (x[-1] - x[0]))


def paired_gains(tidy: pd.DataFrame, metric: str, *, method: str = "least_confidence", baseline: str = "random",
                 by: list[str] = ["model", "weights"]) -> pd.DataFrame:
    """Per arm group and seed run with both strategies: `method` minus `baseline` in the area
    under the `metric` curve (`auc_gain`) and at the final round (`final_gain`). Pairing by
    seed compares runs that share their seed set."""
    rows = []
    for key, g in tidy.groupby(by, sort=True):
        runs = {}
        for (strategy, seed), r in g.groupby(["strategy", "seed"]):
            if strategy in (method, baseline):
                if r["run"].nunique() > 1:
                    raise RecordError(f"{strategy} seed {seed} has {r['run'].nunique()} runs "
                                     f"({', '.join(r['run'].unique())}); a seed may count only once")
                r = r.sort_values("n_labels")
                runs[strategy, seed] = (curve_area(r["n_labels"], r[metric]), float(r[metric].iloc[-1]))
        for seed in sorted({s for (_, s) in runs}):
            if (method, seed) in runs and (baseline, seed) in runs:
                (am, fm), (ab, fb) = runs[method, seed], runs[baseline, seed]
                rows.append(dict(zip(by, key if isinstance(key, tuple) else (key,)), seed=seed,
                                 auc_gain=am - ab, final_gain=fm - fb))
    return pd.DataFrame(rows, columns=list(by) + ["seed", "auc_gain", "final_gain"])


def gain_summary(tidy: pd.DataFrame, metric: str, *, by: list[str] = ["model", "weights"], **kwargs) -> pd.DataFrame:
    """Mean [paired CI across seeds] of the AUC and final gains (see `paired_gains`)."""
    rows = []
    for key, g in paired_gains(tidy, metric, by=by, **kwargs).groupby(by, sort=True):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)), n_seeds=len(g))
        for col in ("auc_gain", "final_gain"):
            row[col], row[f"{col}_low"], row[f"{col}_high"] = mean_ci(g[col])
        rows.append(row)
    return pd.DataFrame(rows)


LABEL_COUNTS = {"all": "seed set counted", "acquired": "acquired labels only"}


def label_efficiency_table(tidy: pd.DataFrame, metric: str, *, method: str = "least_confidence",
                           baseline: str = "random", by: list[str] = ["model", "weights"],
                           seed: int = 0, labels_counted: str = "all") -> pd.DataFrame:
    """Per arm group: how many times more labels `baseline` needs than `method` to reach the
    baseline's final mean `metric` (see toolkit.metrics.label_efficiency), with a bootstrap CI.

    `labels_counted`: "all" counts the seed set (labels = seed set + acquired); "acquired"
    counts only acquired labels (the seed set, the runs' first label count, is taken off
    both sides). The paper does not say which its "5.8x" uses; the column
    `labels_counted` names the convention in the output.

    Where the ratio is undefined (the baseline's mean curve never improves on its first
    point) but the method's rises above everything the baseline reached, the row holds
    `label_efficiency_bound` instead, with `bound` True: efficiency is *at least* that.
    Where neither improves, efficiency is nan (nothing to compare)."""
    if labels_counted not in LABEL_COUNTS:
        raise RecordError(f"labels_counted must be one of {sorted(LABEL_COUNTS)}, got {labels_counted!r}")
    rows = []
    for key, g in tidy.groupby(by, sort=True):
        curves = {}
        for strat in (method, baseline):
            piv = g[g["strategy"] == strat].pivot_table(index="seed", columns="n_labels", values=metric)
            curves[strat] = piv
        if curves[method].empty or curves[baseline].empty:
            continue
        common = sorted(set(curves[method].columns) & set(curves[baseline].columns))
        b = curves[baseline][common].dropna().to_numpy()
        m = curves[method][common].dropna().to_numpy()
        uncounted = float(common[0]) if labels_counted == "acquired" else 0.0
        eff, lo, hi = bootstrap_label_efficiency(np.array(common), b, m, rng=np.random.default_rng(seed),
                                                 uncounted=uncounted)
        bound = bool(np.isnan(eff))
        if bound:
            eff, lo, hi = bootstrap_label_efficiency(np.array(common), b, m, rng=np.random.default_rng(seed),
                                                     uncounted=uncounted, statistic=label_efficiency_bound)
        rows.append(dict(zip(by, key if isinstance(key, tuple) else (key,)), metric=metric,
                         labels_counted=LABEL_COUNTS[labels_counted],
                         efficiency=eff, low=lo, high=hi, bound=bound and not np.isnan(eff), budget=int(common[-1])))
    return pd.DataFrame(rows)
