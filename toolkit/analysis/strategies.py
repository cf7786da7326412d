"""Which strategies find the disambiguating examples: per task, per backbone, per strategy.

Pure functions of run records grouped by task (the suite's layout). For each strategy and
backbone: the worst-group gain over random (area under the curve and final, paired by seed),
how much each group is upsampled, and how many of the first acquisitions are mismatched
(label and spurious attribute disagree). Random is the baseline and gets no gain row of its own
but does get its acquisition rows, so the mismatched counts have a reference.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from toolkit.analysis.composition import upsampling_ratios
from toolkit.analysis.curves import paired_gains
from toolkit.metrics import bounds_for, mean_ci
from toolkit.record import RunRecord, tidy_rounds

METRIC = "test/worst_group"
FIRST = 20  # acquisitions counted for "mismatched among the first N"


def mismatched_groups(shares: dict) -> list[str]:
    """Groups "y<label>_s<attribute>" whose label and attribute differ (label x one attribute)."""
    out = []
    for g in shares:
        parts = g.split("_")
        if len(parts) == 2 and parts[0][1:] != parts[1][1:]:
            out.append(g)
    return sorted(out)


def first_mismatched(rec: RunRecord, first: int = FIRST) -> float:
    """How many of the run's first `first` acquisitions (seed set excluded) are mismatched."""
    groups = set(mismatched_groups(rec.meta.get("pool_group_shares") or {}))
    acq = rec.acquisitions.head(first)
    if len(acq) < first:
        return float("nan")
    return float(acq["group"].astype(str).isin(groups).sum())


def strategy_rows(records_by_task: dict[str, list[RunRecord]], *, metric: str = METRIC,
                  first: int = FIRST) -> pd.DataFrame:
    """One row per task x weights x strategy (finished runs): gains over random (NaN for random
    itself), final worst-group, upsampling of every group and mismatched among the first N.

    Args:
        records_by_task: task name -> its `RunRecord`s (every weights x strategy x seed run
            on that task; partial runs are left out). Gains pair each strategy's run with
            random's of the same weights and seed.
        metric: the curve the gains are measured on (default "test/worst_group").
        first: how many of each run's first acquisitions are looked at for
            `mismatched_first<first>` (default 20; NaN for a run that acquired fewer).

    Returns:
        A DataFrame, one row per task, weights and strategy: task, weights, strategy,
        n_seeds, auc_gain and final_gain (mean over seeds of the paired gain over random, in
        the area under the `metric` curve and at the last round), final (mean final
        `metric`), final_accuracy, up_<group> (mean upsampling of each group, as
        `composition.upsampling_ratios`), up_mismatched_mean (over the groups whose label
        and attribute differ) and mismatched_first<first> (mean count among the first
        acquisitions).

    Examples:
        >>> import toolkit
        >>> from toolkit.analysis.strategies import strategy_rows
        >>> recs = toolkit.load_runs("altk-doc/tasks/t0").records  # written by the RunRecord example
        >>> rows = strategy_rows({"t0": recs}, first=4)
        >>> rows[["weights", "strategy", "auc_gain", "final_gain", "final", "up_y0_s1"]].round(4)
              weights          strategy  auc_gain  final_gain  final  up_y0_s1
        0  pretrained  least_confidence    0.1625        0.25   0.65      10.0
        1  pretrained            random       NaN         NaN   0.40       0.0
        2      random  least_confidence    0.0250        0.00   0.20       0.0
        3      random            random       NaN         NaN   0.20       0.0
        >>> rows["mismatched_first4"].tolist()  # pretrained least-confidence: all four mismatched
        [4.0, 0.0, 0.0, 0.0]
    """
    rows = []
    for task, recs in records_by_task.items():
        recs = [r for r in recs if r.status == "finished"]
        if not recs:
            continue
        tidy = tidy_rounds(recs)
        shares = recs[0].meta.get("pool_group_shares") or {}
        mism = mismatched_groups(shares)
        up = upsampling_ratios(recs).groupby(["weights", "strategy", "group"])["upsampling"].mean()
        last = tidy.loc[tidy.groupby("run")["round"].idxmax()]
        for (weights, strategy), g in tidy.groupby(["weights", "strategy"]):
            runs = [r for r in recs if r.weights == weights and r.strategy == strategy]
            row = {"task": task, "weights": weights, "strategy": strategy, "n_seeds": g["seed"].nunique()}
            if strategy != "random":
                gains = paired_gains(tidy[tidy["weights"] == weights], metric, method=strategy, by=["weights"])
                row["auc_gain"] = float(gains["auc_gain"].mean()) if len(gains) else np.nan
                row["final_gain"] = float(gains["final_gain"].mean()) if len(gains) else np.nan
            else:
                row["auc_gain"] = row["final_gain"] = np.nan
            fin = last[(last["weights"] == weights) & (last["strategy"] == strategy)]
            row["final"] = float(fin[metric].mean())
            row["final_accuracy"] = float(fin["test/accuracy"].mean()) if "test/accuracy" in fin else np.nan
            for grp in sorted(shares):
                row[f"up_{grp}"] = float(up.get((weights, strategy, grp), np.nan))
            row["up_mismatched_mean"] = float(np.mean([row[f"up_{m}"] for m in mism])) if mism else np.nan
            row[f"mismatched_first{first}"] = float(np.nanmean([first_mismatched(r, first) for r in runs]))
            rows.append(row)
    return pd.DataFrame(rows)


def strategy_summary(rows: pd.DataFrame, *, first: int = FIRST) -> pd.DataFrame:
    """Per weights x strategy: mean [95% t-CI across tasks] of the AUC and final gains, the mean
    upsampling of the mismatched groups, and the mismatched count among the first N; plus in
    how many tasks the AUC gain is positive.

    Args:
        rows: the table of `strategy_rows` (any number of tasks).
        first: the `first` that `strategy_rows` was given (it names a column).

    Returns:
        A DataFrame, one row per weights and strategy (pretrained first; least-confidence
        first, random last): weights, strategy, tasks, then for auc_gain, final_gain, final,
        up_mismatched_mean and mismatched_first<first> the mean and its 95% interval across
        tasks (`<column>_low`, `<column>_high`; NaN from one task), tasks_gain_positive (NaN
        for random, the baseline) and each group's mean upsampling (up_<group>).

    Examples:
        >>> import toolkit
        >>> from toolkit.analysis.strategies import strategy_rows, strategy_summary
        >>> rows = strategy_rows({"t0": toolkit.load_runs("altk-doc/tasks/t0").records}, first=4)
        >>> summary = strategy_summary(rows, first=4)  # one task here: no interval across tasks
        >>> summary[["weights", "strategy", "tasks", "auc_gain", "tasks_gain_positive"]].round(4)
              weights          strategy  tasks  auc_gain  tasks_gain_positive
        0  pretrained  least_confidence      1    0.1625                  1.0
        1  pretrained            random      1       NaN                  NaN
        2      random  least_confidence      1    0.0250                  1.0
        3      random            random      1       NaN                  NaN
    """
    out = []
    for (weights, strategy), g in rows.groupby(["weights", "strategy"], sort=False):
        row = {"weights": weights, "strategy": strategy, "tasks": len(g)}
        for col in ("auc_gain", "final_gain", "final", "up_mismatched_mean", f"mismatched_first{first}"):
            row[col], row[f"{col}_low"], row[f"{col}_high"] = mean_ci(g[col].dropna(), bounds=bounds_for(col)) if g[col].notna().any() \
                else (np.nan,) * 3
        row["tasks_gain_positive"] = int((g["auc_gain"] > 0).sum()) if strategy != "random" else np.nan
        for col in sorted(c for c in g if c.startswith("up_y")):
            row[col] = float(g[col].mean())  # each group's upsampling, mean over tasks
        out.append(row)
    df = pd.DataFrame(out)
    df["_w"] = df["weights"].map({"pretrained": 0, "random": 1}).fillna(2)  # pretrained first
    # least-confidence first, the others by name, random (the baseline) last
    df["_s"] = df["strategy"].map(lambda s: (s != "least_confidence") + 2 * (s == "random"))
    return df.sort_values(["_w", "_s", "strategy"], kind="stable").drop(columns=["_w", "_s"]).reset_index(drop=True)
