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
    "random" -> ("random", 0); "pretrained@images5000" -> ("images", 5000)."""
    if weights == "random":
        return "random", 0.0
    if weights == "pretrained":
        return "step", float("inf")
    m = re.fullmatch(r"pretrained@(step|images|shapes)(\d+)", weights)
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
    separability measures. `final_step` is the step count that "pretrained" stands for."""
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


def gain_by_dose(table: pd.DataFrame, value: str = "auc_gain") -> pd.DataFrame:
    """Mean [95% t-CI over tasks] of `value` per backbone, with its axis and dose."""
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
    fewer: they are left out, and a study too small for any gives an empty table)."""
    rows = [correlate(table, m, target, n_boot=n_boot, seed=seed)
            for m, n in correlation_rows(table, target=target).items() if n >= MIN_CORRELATION_ROWS]
    return pd.DataFrame(rows, columns=list(CORRELATION_COLUMNS))
