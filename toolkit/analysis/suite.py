"""The robustness suite's tables: one row per task, claims, and their aggregate.

Pure functions of run records (grouped by task). Claims are measured on the area under the
worst-group curve (mean worst-group accuracy over the label counts of the run) and on label
efficiency, not only at the last round, because a strong backbone can saturate random
sampling's final value. The runner is `toolkit.experiments.suite`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from toolkit.analysis.composition import upsampling_ratios
from toolkit.analysis.curves import label_efficiency_table, paired_gains
from toolkit.errors import RecordError
from toolkit.metrics import GAIN, bounds_for, mean_ci
from toolkit.record import RunRecord, tidy_rounds

METRIC = "test/worst_group"
CLAIMS = {
    "uncertainty_beats_random": "pretrained: least-confidence beats random (worst-group AUC gain, paired 95% CI "
                                "above 0, and label efficiency above 1)",
    "mismatched_upsampled_2x": "pretrained least-confidence acquires both mismatched groups at >= 2x their pool share",
    "minority_matched_below_mismatched": "the matched minority-class group is upsampled less than either "
                                         "mismatched group (not simply 'the minority class')",
    "unpretrained_gain_smaller": "the unpretrained gain is clearly smaller (pretrained minus unpretrained AUC "
                                 "gain, paired over seeds, 95% CI above 0)",
}


def finished_records(records: list[RunRecord]) -> list[RunRecord]:
    """Finished runs only: a partial run never counts as a seed at the final budget."""
    return [r for r in records if r.status == "finished"]


def task_row(records: list[RunRecord], *, metric: str = METRIC, boot_seed: int = 0) -> dict:
    """One task's measurements and claims from its run records (finished runs only)."""
    records = finished_records(records)
    if not records:
        raise RecordError("task_row: no finished runs")
    tidy = tidy_rounds(records)
    short = {"pretrained": "pre", "random": "unpre"}
    row: dict = {}
    gains = paired_gains(tidy, metric, by=["weights"])
    effs = label_efficiency_table(tidy, metric, by=["weights"], seed=boot_seed).set_index("weights")
    last = tidy.loc[tidy.groupby("run")["round"].idxmax()]
    for w, p in short.items():
        g = gains[gains["weights"] == w]
        row[f"{p}_n_seeds"] = len(g)
        for kind in ("auc_gain", "final_gain"):
            row[f"{p}_{kind}"], row[f"{p}_{kind}_low"], row[f"{p}_{kind}_high"] = mean_ci(g[kind], bounds=GAIN)
        for s, key in (("least_confidence", "lc"), ("random", "rnd")):
            fin = last[(last["weights"] == w) & (last["strategy"] == s)]
            row[f"{p}_{key}_final"] = float(fin[metric].mean()) if len(fin) else np.nan
            row[f"{p}_{key}_final_accuracy"] = float(fin["test/accuracy"].mean()) if "test/accuracy" in fin else np.nan
        e = effs.loc[w] if w in effs.index else None
        row[f"{p}_efficiency"], row[f"{p}_efficiency_low"], row[f"{p}_efficiency_high"] = (
            (e["efficiency"], e["low"], e["high"]) if e is not None else (np.nan,) * 3)
        row[f"{p}_efficiency_bound"] = bool(e is not None and e.get("bound", False))  # a lower bound (>=)
    both = gains.pivot_table(index="seed", columns="weights", values="auc_gain").dropna()
    diff = both["pretrained"] - both["random"] if {"pretrained", "random"} <= set(both.columns) else []
    row["gain_difference"], row["gain_difference_low"], row["gain_difference_high"] = mean_ci(
        diff, bounds=bounds_for("gain_difference"))

    # which groups least-confidence acquires: mismatched = label != place; the matched
    # minority-class group is the rarer class on its own (matched) background
    shares = records[0].meta.get("pool_group_shares") or {}
    class_share: dict[str, float] = {}
    for g, v in shares.items():
        class_share[g.split("_")[0]] = class_share.get(g.split("_")[0], 0.0) + v
    minority = min(class_share, key=class_share.get) if class_share else "y1"
    matched_minority = f"{minority}_s{minority[1:]}"
    mismatched = sorted(g for g in shares if g.split("_")[0][1:] != g.split("_")[1][1:])
    row["minority_group"] = matched_minority
    lc = [r for r in records if r.strategy == "least_confidence"]
    ratios = upsampling_ratios(lc) if lc else pd.DataFrame(columns=["weights", "group", "upsampling"])
    up = ratios.groupby(["weights", "group"])["upsampling"].mean()
    for w, p in short.items():
        for g in sorted(shares):
            row[f"{p}_up_{g}"] = float(up.get((w, g), np.nan))
    pre_up = [row[f"pre_up_{g}"] for g in mismatched]
    row["pre_up_mismatched_min"] = float(np.min(pre_up)) if pre_up else np.nan
    row["pre_up_minority_matched"] = row.get(f"pre_up_{matched_minority}", np.nan)

    row["uncertainty_beats_random"] = bool(row["pre_auc_gain_low"] > 0 and row["pre_efficiency"] > 1)
    row["mismatched_upsampled_2x"] = bool(row["pre_up_mismatched_min"] >= 2)
    row["minority_matched_below_mismatched"] = bool(row["pre_up_minority_matched"] < row["pre_up_mismatched_min"])
    row["unpretrained_gain_smaller"] = bool(row["gain_difference_low"] > 0)
    return row


def suite_table(records_by_task: dict[str, list[RunRecord]], tasks: list | None = None, *,
                metric: str = METRIC) -> pd.DataFrame:
    """One row per task: its parameters, gains with CIs, efficiencies, upsampling and claims.

    Args:
        records_by_task: task name -> its `RunRecord`s: pretrained and unpretrained
            ("random") weights x least-confidence and random x seeds (partial runs are left
            out; a task without a finished run raises).
        tasks: the `toy_tasks.Task`s, for their parameters (label shapes, hues, matched and
            minority fractions, world seed) in the rows of the tasks of the same name; None:
            no parameter columns.
        metric: the curve the gains and efficiencies are measured on (default "test/worst_group").

    Returns:
        A DataFrame, one row per task (`task_row`): task, the task's parameters, then for
        "pre" (pretrained) and "unpre" (unpretrained): n_seeds, auc_gain and final_gain of
        least-confidence over random with their 95% t-interval over seeds (`_low`, `_high`),
        each strategy's final value, label efficiency with its interval; gain_difference
        (pretrained minus unpretrained AUC gain, paired by seed); minority_group (the matched
        group of the rarer class); least-confidence's upsampling of every group
        (`pre_up_y0_s1`, ...); and one bool column per claim of `CLAIMS`.

    Raises:
        RecordError: a task has no finished run.

    Examples:
        >>> import toolkit
        >>> from toolkit.analysis.suite import suite_table
        >>> recs = toolkit.load_runs("altk-doc/tasks/t0").records  # written by the RunRecord example
        >>> table = suite_table({"t0": recs})
        >>> table.loc[0, ["pre_auc_gain", "pre_auc_gain_low", "pre_efficiency", "pre_up_mismatched_min",
        ...               "pre_up_minority_matched", "gain_difference_low"]].astype(float).round(4)
        pre_auc_gain                0.1625
        pre_auc_gain_low            0.0037
        pre_efficiency              1.4211
        pre_up_mismatched_min      10.0000
        pre_up_minority_matched     0.0000
        gain_difference_low        -0.0213
        Name: 0, dtype: float64
        >>> table.loc[0, "minority_group"], bool(table.loc[0, "uncertainty_beats_random"])
        ('y1_s1', True)
    """
    by_name = {t.name: t for t in tasks or []}
    rows = []
    for name, recs in records_by_task.items():
        row = {"task": name}
        if name in by_name:
            t = by_name[name]
            row.update(label_0=" ".join(t.label_shapes[0]), label_1=" ".join(t.label_shapes[1]),
                       hues_0=f"{t.place_hues[0][0]:.3f}-{t.place_hues[0][1]:.3f}",
                       hues_1=f"{t.place_hues[1][0]:.3f}-{t.place_hues[1][1]:.3f}",
                       matched_fraction=t.matched_fraction, minority_fraction=t.minority_fraction, world_seed=t.seed)
        row.update(task_row(recs, metric=metric))
        rows.append(row)
    return pd.DataFrame(rows)


def claim_shares(table: pd.DataFrame) -> pd.DataFrame:
    """For each claim: in how many tasks it holds, and the share.

    Args:
        table: the table of `suite_table` (one bool column per claim of `CLAIMS`).

    Returns:
        A DataFrame, one row per claim: claim, holds (tasks where it holds), tasks, share
        (NaN for an empty table) and meaning (the claim in words).

    Examples:
        >>> import toolkit
        >>> from toolkit.analysis.suite import claim_shares, suite_table
        >>> table = suite_table({"t0": toolkit.load_runs("altk-doc/tasks/t0").records})
        >>> claim_shares(table)[["claim", "holds", "tasks", "share"]]  # two seeds: the gain difference is not clear
                                       claim  holds  tasks  share
        0           uncertainty_beats_random      1      1    1.0
        1            mismatched_upsampled_2x      1      1    1.0
        2  minority_matched_below_mismatched      1      1    1.0
        3          unpretrained_gain_smaller      0      1    0.0
    """
    return pd.DataFrame([{"claim": c, "holds": int(table[c].sum()), "tasks": len(table),
                          "share": float(table[c].mean()) if len(table) else float("nan"), "meaning": text}
                         for c, text in CLAIMS.items()])


def aggregate(table: pd.DataFrame) -> pd.DataFrame:
    """Mean [95% t-CI] across tasks of each per-task quantity."""
    rows = []
    for col in ("pre_auc_gain", "unpre_auc_gain", "gain_difference", "pre_final_gain", "unpre_final_gain",
                "pre_efficiency", "pre_up_mismatched_min", "pre_up_minority_matched",
                "pre_lc_final", "pre_rnd_final", "unpre_lc_final", "unpre_rnd_final"):
        if col in table:
            m, lo, hi = mean_ci(table[col], bounds=bounds_for(col))
            rows.append({"quantity": col, "mean": m, "low": lo, "high": hi, "tasks": int(table[col].notna().sum())})
    return pd.DataFrame(rows)
