"""Learning curves across seeds, final-budget summaries, and label efficiency.

An *arm* is the runs that are seeds of one experiment: the same model, weights and strategy
and, beyond those, the same value of every config field on which the runs at hand differ
(`differing_fields`; the seed and where or how a run was executed may differ). The tidy
table of `tidy_rounds` carries those values in one column, `config` (e.g. "al.budget=20,
finetune.max_steps=5"), present only where the runs differ in some field; every table here
groups by it when it is there, so runs of two experiments are never pooled as seeds of one.
"""
from __future__ import annotations

import json
import math
from typing import Iterable

import numpy as np
import pandas as pd

from toolkit.config import RunConfig
from toolkit.errors import RecordError
from toolkit.metrics import PROPORTION, bootstrap_label_efficiency, label_efficiency_bound, mean_ci
from toolkit.record import RunRecord
from toolkit.record import tidy_rounds as record_rounds

ARM_COLUMNS = ["model", "weights", "strategy"]
CONFIG_COLUMN = "config"
# config fields already in ARM_COLUMNS
ARM_FIELDS = ("model.name", "model.weights", "al.strategy")
# fields that may differ between the seeds of one arm: the seed, and where or how a run was
# executed, not what it measures (feature-cache paths: what a cache holds is fixed by the
# dataset, its params and the model fields, which are compared)
WITHIN_ARM_FIELDS = ("seed", "device", "threads", "eval_batch_size", "loader_workers", "deterministic",
                     "checkpoint_rounds", "notes", "al.save_pool_outputs", "data.pool_cache", "data.eval_caches")
_DEFAULTS = {**RunConfig().to_dict(), "mode": "full"}  # a field an older record lacks reads as its default
_UNSET = "(unset)"


def _leaves(cfg: dict, defaults, prefix: str = "") -> dict:
    """Dotted path -> value of every leaf of a config; a leaf the config lacks where its
    section exists reads as its default."""
    defaults = defaults if isinstance(defaults, dict) else {}
    out = {}
    for k in list(cfg) + [k for k, v in defaults.items() if k not in cfg and not isinstance(v, dict)]:
        v = cfg[k] if k in cfg else defaults[k]
        if isinstance(v, dict):
            out.update(_leaves(v, defaults.get(k), f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _show(v) -> str:
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)


def _within_arm(field: str) -> bool:
    return any(field == f or field.startswith(f + ".") for f in WITHIN_ARM_FIELDS + ARM_FIELDS)


def differing_fields(records: Iterable[RunRecord]) -> list[str]:
    """The config fields (dotted paths, e.g. "al.budget", "data.params.minority_fraction") on
    which the runs differ, other than the arm columns' own and `WITHIN_ARM_FIELDS`."""
    leaves = [_leaves(r.run_config, _DEFAULTS) for r in records]
    fields = sorted(set().union(*leaves)) if leaves else []
    return [f for f in fields if not _within_arm(f) and len({_show(lv.get(f, _UNSET)) for lv in leaves}) > 1]


def config_labels(records: Iterable[RunRecord]) -> dict[str, str]:
    """Run name -> "field=value, ..." over `differing_fields`; empty where the runs agree."""
    records = list(records)
    fields = differing_fields(records)
    if not fields:
        return {}
    out = {}
    for r in records:
        leaves = _leaves(r.run_config, _DEFAULTS)
        out[r.name] = ", ".join(f"{f}={_show(leaves.get(f, _UNSET))}" for f in fields)
    return out


def planned_labels(rec: RunRecord) -> float:
    """The label count a run ends at when it finishes: its seed set plus its budget (nan
    where the record does not say)."""
    al = rec.run_config.get("al") or {}
    seed = int(rec.rounds["n_labels"].iloc[0]) if len(rec.rounds) else al.get("seed_size")
    sizes = rec.meta.get("acquisition_sizes")
    acquired = sum(sizes) if sizes is not None else al.get("budget")
    return float(seed + acquired) if seed is not None and acquired is not None else float("nan")


def with_run_facts(tidy: pd.DataFrame, records: Iterable[RunRecord]) -> pd.DataFrame:
    """`tidy` with, per run, `status`, `planned_labels` and (where the runs differ in some
    config field) `config`, from `records`."""
    records = list(records)
    tidy = tidy.copy()
    tidy["status"] = tidy["run"].map({r.name: r.status for r in records})
    tidy["planned_labels"] = tidy["run"].map({r.name: planned_labels(r) for r in records})
    labels = config_labels(records)
    if labels:
        tidy[CONFIG_COLUMN] = tidy["run"].map(labels)
    return tidy


def tidy_rounds(records: Iterable[RunRecord]) -> pd.DataFrame:
    """One row per (run, round): run, model, weights, strategy, seed, n_labels and every metric
    (`toolkit.record.tidy_rounds`), with each run's `status` and `planned_labels` and, where
    the runs differ in some config field, the `config` column that splits the arms.

    Args:
        records: `RunRecord`s (`toolkit.load_run`, or `toolkit.load_runs(...).records`),
            finished or partial; at least one.

    Returns:
        A DataFrame, one row per round of each run: run, model, weights, strategy, seed,
        round, n_labels, every metric ("<split>/<metric>"), timing and training columns,
        status ("finished" or "running"), planned_labels (the seed set plus the budget; NaN
        where the record does not say) and, where needed, config ("al.budget=20, ...").

    Raises:
        RecordError: no records.

    Examples:
        >>> import toolkit
        >>> from toolkit.analysis.curves import tidy_rounds
        >>> recs = toolkit.load_runs("altk-doc/tasks/t0").records  # written by the RunRecord example
        >>> tidy = tidy_rounds(recs)
        >>> len(tidy), tidy["run"].nunique(), tidy["status"].unique().tolist()
        (24, 8, ['finished'])
        >>> tidy[["weights", "strategy", "seed", "n_labels", "test/worst_group"]].head(3)
              weights          strategy  seed  n_labels  test/worst_group
        0  pretrained  least_confidence     0        10               0.2
        1  pretrained  least_confidence     0        14               0.5
        2  pretrained  least_confidence     0        18               0.6

        Runs that differ in a config field get a `config` column, so no table pools them
        (these two, of the run_active_learning and run examples, differ in al.per_round):

        >>> tidy_rounds([toolkit.load_run("altk-doc/loop"), toolkit.load_run("altk-doc/run")]
        ...             )[["run", "strategy", "n_labels", "config"]]
            run          strategy  n_labels           config
        0  loop  least_confidence        10  al.per_round=20
        1  loop  least_confidence        15  al.per_round=20
        2   run            random        10   al.per_round=5
        3   run            random        15   al.per_round=5
    """
    records = list(records)
    return with_run_facts(record_rounds(records), records)


def arm_by(tidy: pd.DataFrame, by: Iterable[str]) -> list[str]:
    """`by`, plus the `config` column where `tidy` has one: two configs never pool."""
    by = list(by)
    return by + [CONFIG_COLUMN] if CONFIG_COLUMN in tidy.columns and CONFIG_COLUMN not in by else by


def fold_config(df: pd.DataFrame, into: str = "strategy") -> pd.DataFrame:
    """`df` with its `config` label appended to column `into` ("random [al.budget=20]"), for
    figures that name their traces by model, weights and strategy alone."""
    if CONFIG_COLUMN not in df.columns:
        return df
    return df.assign(**{into: df[into].astype(str) + " [" + df[CONFIG_COLUMN].astype(str) + "]"})


def metric_bounds(tidy: pd.DataFrame, metric: str) -> tuple[float, float] | None:
    """`PROPORTION` for an evaluation metric ("<split>/<name>": accuracies, F1, all in [0, 1])
    whose values are all in [0, 1]; None (no clipping) otherwise."""
    if "/" not in metric or metric.split("/")[0] in ("time", "train"):
        return None
    v = pd.to_numeric(tidy[metric], errors="coerce").dropna()
    return PROPORTION if len(v) and bool(v.between(*PROPORTION).all()) else None


def _key(by: list[str], key) -> dict:
    return dict(zip(by, key if isinstance(key, tuple) else (key,)))


def default_split(tidy: pd.DataFrame) -> str:
    """The paper's split where the runs have it: its headline numbers (Fig. 2) are on the
    validation split; then test; then any evaluated split."""
    for split in ("val", "test"):
        if f"{split}/accuracy" in tidy.columns:
            return split
    return next(c.split("/")[0] for c in tidy.columns if c.endswith("/accuracy") and not c.startswith("train"))


def learning_curves(tidy: pd.DataFrame, metric: str, *, by: list[str] = ARM_COLUMNS,
                    method: str = "t") -> pd.DataFrame:
    """Mean and CI of `metric` across seeds at each label count, per arm (clipped to [0, 1]
    for accuracies; no interval from one seed).

    Args:
        tidy: the rounds of `tidy_rounds`.
        metric: a column of `tidy`, e.g. "test/worst_group" or "val/accuracy".
        by: the columns that make an arm (default model, weights and strategy; the `config`
            column is added where `tidy` has one).
        method: the 95% interval, as `toolkit.metrics.mean_ci`: "t" (Student's t, the
            default), "gaussian" (the paper's mean +- z * sem) or "bootstrap" (percentile).

    Returns:
        A DataFrame, one row per arm and label count: the `by` columns, n_labels, mean, low,
        high (the 95% interval; NaN from one seed) and n_seeds. (Two seeds give a wide
        t-interval: 0.6 and 0.7 read 0.65 [0.015, 1.0] below, clipped at 1.)

    Raises:
        RecordError: `metric` is not a column of `tidy` (the message lists those that are).

    Examples:
        >>> import toolkit
        >>> from toolkit.analysis.curves import learning_curves, tidy_rounds
        >>> tidy = tidy_rounds(toolkit.load_runs("altk-doc/tasks/t0").records)
        >>> curves = learning_curves(tidy, "test/worst_group")
        >>> curves[curves["weights"] == "pretrained"][["strategy", "n_labels", "mean", "low", "high"]].round(3)
                   strategy  n_labels  mean    low  high
        0  least_confidence        10  0.20  0.200   0.2
        1  least_confidence        14  0.50  0.500   0.5
        2  least_confidence        18  0.65  0.015   1.0
        3            random        10  0.20  0.200   0.2
        4            random        14  0.30  0.300   0.3
        5            random        18  0.40  0.400   0.4
    """
    if metric not in tidy.columns:
        raise RecordError(f"no metric {metric!r}; available: {', '.join(c for c in tidy.columns if '/' in c)}")
    by, bounds = arm_by(tidy, by), metric_bounds(tidy, metric)
    rows = []
    for key, g in tidy.groupby(by + ["n_labels"], sort=True):
        m, lo, hi = mean_ci(g[metric], method=method, bounds=bounds)
        rows.append(dict(_key(by + ["n_labels"], key), mean=m, low=lo, high=hi, n_seeds=len(g)))
    return pd.DataFrame(rows)


def final_rows(tidy: pd.DataFrame, *, by: list[str] = ARM_COLUMNS) -> tuple[pd.DataFrame, dict[str, str]]:
    """Each arm's runs at the arm's final budget, one run per seed; and the runs left out,
    with why: a partial run (its last round short of the budget) would otherwise be
    averaged with finished ones, and a seed run twice would count as two seeds. A partial
    run is described against its own budget (`planned_labels`, where the table has it)."""
    by = arm_by(tidy, by)
    last = tidy.loc[tidy.groupby("run")["round"].idxmax()].sort_values("run")
    keep, left_out = [], {}
    for _, g in last.groupby(by, sort=True):
        budget = g["n_labels"].max()
        seen = set()
        for _, row in g.iterrows():
            own = row.get("planned_labels", float("nan"))
            own = float("nan") if own is None else float(own)
            if row["n_labels"] < budget:
                if row.get("status") == "finished":
                    left_out[row["run"]] = (f"finished at {int(row['n_labels'])} labels, short of its arm's "
                                            f"{int(budget)}")
                else:
                    of = int(own) if not math.isnan(own) else int(budget)
                    left_out[row["run"]] = f"stopped at {int(row['n_labels'])} of {of} labels"
            elif row["seed"] in seen:
                left_out[row["run"]] = f"seed {row['seed']} already counted"
            else:
                seen.add(row["seed"])
                keep.append(row)
    return pd.DataFrame(keep), left_out


def final_summary(tidy: pd.DataFrame, metrics: list[str], *, by: list[str] = ARM_COLUMNS,
                  method: str = "t") -> pd.DataFrame:
    """Mean [CI] of each metric at the final budget, per arm, over distinct seeds (see
    `final_rows`; `n_left_out` counts the runs it left out, `left_out` names them).
    Accuracies' intervals are clipped to [0, 1]; one seed gives no interval (nan)."""
    by = arm_by(tidy, by)
    last, left_out = final_rows(tidy, by=by)
    arm_of = tidy.drop_duplicates("run").set_index("run", drop=False)[by]
    bounds = {m: metric_bounds(tidy, m) for m in metrics}
    rows = []
    for key, g in last.groupby(by, sort=True):
        arm = _key(by, key)
        out = [r for r in left_out if tuple(arm_of.loc[r, by]) == tuple(arm[c] for c in by)]
        row = dict(arm, n_seeds=len(g), n_labels=int(g["n_labels"].max()), n_left_out=len(out),
                   left_out="; ".join(f"{r}: {left_out[r]}" for r in out))
        for m in metrics:
            row[m], row[f"{m}_low"], row[f"{m}_high"] = mean_ci(g[m], method=method, bounds=bounds[m])
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
    by = arm_by(tidy, by)
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
                rows.append(dict(_key(by, key), seed=seed, auc_gain=am - ab, final_gain=fm - fb))
    return pd.DataFrame(rows, columns=list(by) + ["seed", "auc_gain", "final_gain"])


def gain_summary(tidy: pd.DataFrame, metric: str, *, by: list[str] = ["model", "weights"], **kwargs) -> pd.DataFrame:
    """Mean [paired CI across seeds] of the AUC and final gains (see `paired_gains`); a gain
    in accuracy stays within [-1, 1]."""
    by = arm_by(tidy, by)
    bounds = (-1.0, 1.0) if metric_bounds(tidy, metric) else None
    rows = []
    for key, g in paired_gains(tidy, metric, by=by, **kwargs).groupby(by, sort=True):
        row = dict(_key(by, key), n_seeds=len(g))
        for col in ("auc_gain", "final_gain"):
            row[col], row[f"{col}_low"], row[f"{col}_high"] = mean_ci(g[col], bounds=bounds)
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
    Where neither improves, efficiency is nan (nothing to compare).

    Where both strategies ran the same seeds (the seed set of a seed is the same for every
    strategy), the bootstrap resamples seeds, each with both its runs (`paired` True);
    otherwise each strategy's runs on their own. Fewer than two seeds on either side give
    no interval (low and high nan; `n_baseline`, `n_method` count them)."""
    if labels_counted not in LABEL_COUNTS:
        raise RecordError(f"labels_counted must be one of {sorted(LABEL_COUNTS)}, got {labels_counted!r}")
    by = arm_by(tidy, by)
    rows = []
    for key, g in tidy.groupby(by, sort=True):
        curves = {}
        for strat in (method, baseline):
            piv = g[g["strategy"] == strat].pivot_table(index="seed", columns="n_labels", values=metric)
            curves[strat] = piv
        if curves[method].empty or curves[baseline].empty:
            continue
        common = sorted(set(curves[method].columns) & set(curves[baseline].columns))
        b, m = curves[baseline][common].dropna(), curves[method][common].dropna()
        paired = list(b.index) == list(m.index)  # pivot_table sorts the seeds
        b, m = b.to_numpy(), m.to_numpy()
        uncounted = float(common[0]) if labels_counted == "acquired" else 0.0
        eff, lo, hi = bootstrap_label_efficiency(np.array(common), b, m, rng=np.random.default_rng(seed),
                                                 uncounted=uncounted, paired=paired)
        bound = bool(np.isnan(eff))
        if bound:
            eff, lo, hi = bootstrap_label_efficiency(np.array(common), b, m, rng=np.random.default_rng(seed),
                                                     uncounted=uncounted, statistic=label_efficiency_bound,
                                                     paired=paired)
        rows.append(dict(_key(by, key), metric=metric, labels_counted=LABEL_COUNTS[labels_counted],
                         efficiency=eff, low=lo, high=hi, bound=bound and not np.isnan(eff), budget=int(common[-1]),
                         n_baseline=len(b), n_method=len(m), paired=paired))
    return pd.DataFrame(rows)
