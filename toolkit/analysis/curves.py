"""Learning curves across seeds, final-budget summaries, and label efficiency."""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from ..metrics import bootstrap_label_efficiency, mean_ci
from ..record import RunRecord

ARM_COLUMNS = ["model", "weights", "strategy"]


def tidy_rounds(records: Iterable[RunRecord]) -> pd.DataFrame:
    """One row per (run, round): run, model, weights, strategy, seed, n_labels and every metric."""
    frames = []
    for rec in records:
        cfg = rec.config["config"]
        df = rec.rounds.copy()
        df.insert(0, "run", rec.name)
        df.insert(1, "model", cfg["model"]["name"])
        df.insert(2, "weights", cfg["model"]["weights"])
        df.insert(3, "strategy", cfg["al"]["strategy"])
        df.insert(4, "seed", cfg["seed"])
        frames.append(df)
    if not frames:
        raise ValueError("no run records given")
    return pd.concat(frames, ignore_index=True)


def learning_curves(tidy: pd.DataFrame, metric: str, *, by: list[str] = ARM_COLUMNS,
                    method: str = "t") -> pd.DataFrame:
    """Mean and CI of `metric` across seeds at each label count, per arm."""
    if metric not in tidy.columns:
        raise ValueError(f"no metric {metric!r}; available: {', '.join(c for c in tidy.columns if '/' in c)}")
    rows = []
    for key, g in tidy.groupby(by + ["n_labels"], sort=True):
        m, lo, hi = mean_ci(g[metric], method=method)
        rows.append(dict(zip(by + ["n_labels"], key), mean=m, low=lo, high=hi, n_seeds=len(g)))
    return pd.DataFrame(rows)


def final_summary(tidy: pd.DataFrame, metrics: list[str], *, by: list[str] = ARM_COLUMNS,
                  method: str = "t") -> pd.DataFrame:
    """Mean [CI] of each metric at each run's final round, per arm."""
    last = tidy.loc[tidy.groupby("run")["round"].idxmax()]
    rows = []
    for key, g in last.groupby(by, sort=True):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)), n_seeds=len(g),
                   n_labels=int(g["n_labels"].max()))
        for m in metrics:
            row[m], row[f"{m}_low"], row[f"{m}_high"] = mean_ci(g[m], method=method)
        rows.append(row)
    return pd.DataFrame(rows)


def label_efficiency_table(tidy: pd.DataFrame, metric: str, *, method: str = "least_confidence",
                           baseline: str = "random", by: list[str] = ["model", "weights"],
                           seed: int = 0) -> pd.DataFrame:
    """Per arm group: how many times more labels `baseline` needs than `method` to reach the
    baseline's final mean `metric` (see toolkit.metrics.label_efficiency), with a bootstrap CI."""
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
        eff, lo, hi = bootstrap_label_efficiency(np.array(common), b, m, rng=np.random.default_rng(seed))
        rows.append(dict(zip(by, key if isinstance(key, tuple) else (key,)), metric=metric,
                         efficiency=eff, low=lo, high=hi, budget=int(common[-1])))
    return pd.DataFrame(rows)
