"""Compute per run, and the select-on-features-then-finetune-once comparison.

Pure functions of run records. Seconds are the stages a record times (training, evaluation,
scoring, selection, feature extraction; not data loading), and passes are counted in
examples: a forward pass of one example through the network is 1, its backward pass 1.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from toolkit.analysis.composition import upsampling_ratios
from toolkit.record import TIMING_PREFIX, RunRecord

TIMED = ("train_s", "eval_s", "score_s", "select_s", "extract_s")


def run_cost(rec: RunRecord) -> dict:
    """{"seconds", "forward", "backward"} summed over the run's rounds (passes: NaN for records
    written before passes were counted)."""
    r = rec.rounds
    seconds = float(sum(r[f"{TIMING_PREFIX}{k}"].fillna(0).sum() for k in TIMED if f"{TIMING_PREFIX}{k}" in r))
    fwd, bwd, counted = 0, 0, True
    for p in r.get(f"{TIMING_PREFIX}passes", pd.Series([None] * len(r))):
        if isinstance(p, dict):
            fwd += int(p["forward"])
            bwd += int(p["backward"])
        elif rec.mode == "full":  # probe rounds (probe runs, and the selecting rounds of select-once) run no network
            counted = False
    return {"seconds": seconds, "forward": fwd if counted else np.nan, "backward": bwd if counted else np.nan}


def acquired_overlap(a: RunRecord, b: RunRecord) -> float:
    """|A & B| / |A| of the two runs' acquired ids (seed sets excluded; equal budgets)."""
    x, y = set(a.acquisitions["id"]), set(b.acquisitions["id"])
    return len(x & y) / max(len(x), 1)


def compare_select_once(full: list[RunRecord], once: list[RunRecord], *, task_of=lambda r: r.dataset,
                        metric: str = "test/worst_group") -> pd.DataFrame:
    """One row per (task, seed) present in both lists: final worst-group and accuracy of the full
    loop and of select-then-finetune-once, the overlap of their acquired sets, the upsampling of
    each group under both, and each one's seconds and passes. `task_of` names a record's task.

    Args:
        full: runs of the full loop (finetuning every round).
        once: runs of select-then-finetune-once (`toolkit.features.select_finetune`); each
            is matched with the finished `full` run of the same task and seed (unmatched and
            partial runs are left out).
        task_of: record -> its task name (default: the dataset name; several tasks of one
            dataset need another, e.g. `toolkit.experiments.select_once.task_of`, which
            reads it from the run's folder name).
        metric: "<split>/<metric>" compared at the last round (default "test/worst_group");
            the accuracy of the same split comes with it.

    Returns:
        A DataFrame, one row per matched (task, seed): task, seed, strategy, weights, then
        for "full" and "once" each: the final metric and accuracy (`full_worst_group`,
        `once_accuracy`, ...), each group's upsampling (`full_up_y0_s1`, ...), seconds,
        forward and backward passes (in examples; NaN where a full run did not count
        them); and overlap (|full & once| / |full| of the acquired ids).
        `select_once_summary` gives the means and paired differences.

    Examples:
        >>> import toolkit
        >>> from toolkit.analysis.cost import compare_select_once
        >>> full = toolkit.load_run("altk-doc/loop")  # the run_active_learning example's run
        >>> once = toolkit.load_run("altk-doc/select-once")  # run_select_then_finetune's, same task and seed
        >>> table = compare_select_once([full], [once])
        >>> table[["task", "seed", "strategy", "weights"]]
               task  seed          strategy weights
        0  toyworld     0  least_confidence  random
        >>> table[["full_forward", "full_backward", "once_forward", "once_backward"]]  # passes, in examples
           full_forward  full_backward  once_forward  once_backward
        0           678            128           624             64
    """
    def key(r):
        return task_of(r), r.seed

    by_key = {key(r): r for r in full if r.status == "finished"}
    rows = []
    for o in once:
        f = by_key.get(key(o))
        if f is None or o.status != "finished":
            continue
        row = {"task": key(o)[0], "seed": o.seed, "strategy": o.strategy, "weights": o.weights}
        for name, rec in (("full", f), ("once", o)):
            last = rec.rounds.sort_values("round").iloc[-1]
            split, m = metric.split("/")
            row[f"{name}_{m}"] = float(last[metric])
            row[f"{name}_accuracy"] = float(last[f"{split}/accuracy"])
            up = upsampling_ratios([rec]).set_index("group")["upsampling"]
            for g, v in up.items():
                row[f"{name}_up_{g}"] = float(v)
            for k, v in run_cost(rec).items():
                row[f"{name}_{k}"] = v
        row["overlap"] = acquired_overlap(f, o)
        rows.append(row)
    return pd.DataFrame(rows)


def select_once_summary(table: pd.DataFrame, *, metric: str = "worst_group") -> pd.DataFrame:
    """Mean [95% t-CI over (task, seed) pairs] of each quantity of `compare_select_once`, the
    paired differences (once - full), and the compute ratios (full / once)."""
    from toolkit.metrics import bounds_for, mean_ci

    t = table.copy()
    t[f"diff_{metric}"] = t[f"once_{metric}"] - t[f"full_{metric}"]
    t["diff_accuracy"] = t["once_accuracy"] - t["full_accuracy"]
    mism = [c.split("_up_")[1] for c in t if c.startswith("full_up_")
            and c.split("_up_")[1].split("_")[0][1:] != c.split("_up_")[1].split("_")[1][1:]]
    for kind in ("full", "once"):
        t[f"{kind}_up_mismatched"] = t[[f"{kind}_up_{g}" for g in mism]].mean(axis=1) if mism else np.nan
    t["seconds_ratio"] = t["full_seconds"] / t["once_seconds"]
    t["passes_ratio"] = (t["full_forward"] + t["full_backward"]) / (t["once_forward"] + t["once_backward"])
    rows = []
    for col in (f"full_{metric}", f"once_{metric}", f"diff_{metric}", "full_accuracy", "once_accuracy",
                "diff_accuracy", "overlap", "full_up_mismatched", "once_up_mismatched", "full_seconds",
                "once_seconds", "seconds_ratio", "full_forward", "once_forward", "full_backward", "once_backward",
                "passes_ratio"):
        m, lo, hi = mean_ci(t[col].dropna(), bounds=bounds_for(col))
        rows.append({"quantity": col, "mean": m, "low": lo, "high": hi, "n": int(t[col].notna().sum())})
    return pd.DataFrame(rows)
