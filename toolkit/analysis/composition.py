"""Which groups the acquisition function picks: share among acquired vs share in the pool."""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from toolkit.analysis.curves import CONFIG_COLUMN, arm_by, config_labels
from toolkit.errors import RecordError
from toolkit.metrics import mean_ci
from toolkit.record import RunRecord


def upsampling_ratios(records: Iterable[RunRecord], *, upto_round: int | None = None,
                      attribute: str | None = None) -> pd.DataFrame:
    """Per run and group: share among the acquired examples (seed set excluded) divided by the
    group's share in the pool. 1 = acquired at the pool rate; 5 = five times over-sampled.

    Groups are label x spurious attribute by default; `attribute` names another recorded
    one instead: "label" (e.g. Amazon's star rating) or any of the dataset's
    `group_columns` (e.g. "category"). The "group" column then holds its values.

    Where the runs differ in a config field other than model, weights, strategy and seed,
    a `config` column names it (as `curves.tidy_rounds`), and the summaries split by it.

    Args:
        records: `RunRecord`s; each needs the pool shares in its meta ("pool_group_shares",
            or "pool_attribute_shares" for `attribute`).
        upto_round: count only the acquisitions made up to this round (inclusive); None: all.
        attribute: None for the groups (label x spurious attribute, "y1_s0"), or another
            recorded attribute: "label" or one of the dataset's `group_columns`.

    Returns:
        A DataFrame, one row per run and group (each group of the pool, acquired or not):
        run, model, weights, strategy, seed, group, acquired (a count), acquired_share,
        pool_share and upsampling (NaN where nothing was acquired); and `config` where the
        runs differ. `upsampling_summary` gives the mean [CI] across seeds per arm.

    Raises:
        RecordError: a run records no pool shares for `attribute`.

    Examples:
        >>> import toolkit
        >>> from toolkit.analysis.composition import upsampling_ratios
        >>> recs = toolkit.load_runs("altk-doc/tasks/t0").records  # written by the RunRecord example
        >>> ratios = upsampling_ratios(recs)
        >>> ratios[ratios["run"] == "pretrained-least_confidence-s0"][
        ...     ["group", "acquired", "acquired_share", "pool_share", "upsampling"]]
           group  acquired  acquired_share  pool_share  upsampling
        0  y0_s0         0             0.0        0.70         0.0
        1  y0_s1         4             0.5        0.05        10.0
        2  y1_s0         4             0.5        0.05        10.0
        3  y1_s1         0             0.0        0.20         0.0
        >>> first = upsampling_ratios(recs, upto_round=0)  # the first acquisition round only
        >>> first[first["run"] == "pretrained-random-s0"][["group", "acquired", "upsampling"]].round(2)
            group  acquired  upsampling
        8   y0_s0         2        0.71
        9   y0_s1         0        0.00
        10  y1_s0         0        0.00
        11  y1_s1         2        2.50
    """
    records = list(records)
    labels = config_labels(records)
    rows = []
    for rec in records:
        cfg = rec.run_config
        if attribute is None:
            shares, column = rec.meta.get("pool_group_shares") or {}, "group"
        else:
            known = rec.meta.get("pool_attribute_shares") or {}
            if attribute not in known:
                raise RecordError(f"run {rec.name} records no pool shares for {attribute!r}; it has: "
                                 f"{', '.join(known) or 'none (a record from before attribute shares)'}")
            shares, column = known[attribute], attribute
        acq = rec.acquisitions
        if upto_round is not None and len(acq):
            acq = acq[acq["round"] <= upto_round]
        n = len(acq)
        counts = acq[column].astype(str).value_counts() if n else pd.Series(dtype=int)
        for group, pool_share in sorted(shares.items()):
            got = int(counts.get(group, 0))
            rows.append({"run": rec.name, "model": cfg["model"]["name"], "weights": cfg["model"]["weights"],
                         "strategy": cfg["al"]["strategy"], "seed": cfg["seed"], "group": group,
                         "acquired": got, "acquired_share": got / n if n else float("nan"),
                         "pool_share": pool_share,
                         "upsampling": (got / n) / pool_share if n and pool_share else float("nan"),
                         **({CONFIG_COLUMN: labels[rec.name]} if labels else {})})
    return pd.DataFrame(rows)


def upsampling_summary(ratios: pd.DataFrame, *, by: list[str] = ["model", "weights", "strategy", "group"],
                       method: str = "bootstrap") -> pd.DataFrame:
    """Mean [CI] of the upsampling ratio across seeds. The default percentile bootstrap
    keeps the CI of a ratio above zero (a t-interval gave e.g. 1.04 [-1.7, 3.8]). One seed
    gives no interval (low and high nan; `n_seeds` counts the seeds)."""
    by = _arm_by(ratios, by)
    rows = []
    for key, g in ratios.groupby(by, sort=True):
        m, lo, hi = mean_ci(g["upsampling"], method=method)
        rows.append(dict(zip(by, key), upsampling=m, low=lo, high=hi, pool_share=g["pool_share"].iloc[0],
                         n_seeds=int(g["upsampling"].notna().sum())))
    return pd.DataFrame(rows)


def _arm_by(df: pd.DataFrame, by: list[str]) -> list[str]:
    """`by` with the config column where `df` has one, before "group" (arms, then groups)."""
    out = arm_by(df, [c for c in by if c != "group"])
    return out + ["group"] if "group" in by else out


def upsampling_over_rounds(records, *, attribute: str | None = None, **summary_kwargs) -> pd.DataFrame:
    """Cumulative upsampling ratio after each round (all acquisitions up to it), mean [CI]
    across seeds per arm and group (or `attribute` value, as in `upsampling_ratios`);
    column `round` and `n_acquired`."""
    records = list(records)
    last = max(int(r.acquisitions["round"].max()) for r in records if len(r.acquisitions))
    frames = []
    for rnd in range(last + 1):
        ratios = upsampling_ratios(records, upto_round=rnd, attribute=attribute)
        summary = upsampling_summary(ratios, **summary_kwargs)
        summary["round"] = rnd
        # per arm: arms on different schedules have acquired different numbers by this round
        arm = [c for c in summary.columns if c in ratios.columns and c not in ("group", "upsampling", "pool_share")]
        per_run = ratios.groupby(arm + ["run"])["acquired"].sum()
        if arm:
            summary = summary.join(np.floor(per_run.groupby(arm).mean()).astype(int).rename("n_acquired"), on=arm)
        else:
            summary["n_acquired"] = int(per_run.mean())
        frames.append(summary)
    return pd.concat(frames, ignore_index=True)


def relative_upsampling(ratios: pd.DataFrame, *, method: str = "least_confidence", baseline: str = "random",
                        by: list[str] = ["model", "weights", "group"], n_boot: int = 2000, seed: int = 0,
                        level: float = 0.95) -> pd.DataFrame:
    """The paper's Fig. 4 form: a group's mean share among `method`'s acquisitions over its
    mean share among `baseline`'s (seeds averaged first; random's share estimates the pool
    share with sampling noise). CI: percentile bootstrap, resampling each arm's seeds."""
    rng = np.random.default_rng(seed)
    by = _arm_by(ratios, by)
    rows = []
    for key, g in ratios.groupby(by, sort=True):
        a = g.loc[g["strategy"] == method, "acquired_share"].dropna().to_numpy()
        b = g.loc[g["strategy"] == baseline, "acquired_share"].dropna().to_numpy()
        if len(a) == 0 or len(b) == 0:
            continue
        with np.errstate(divide="ignore", invalid="ignore"):  # inf: random never drew the group; nan: neither did
            point = a.mean() / b.mean()
            boots = a[rng.integers(0, len(a), (n_boot, len(a)))].mean(1) / b[rng.integers(0, len(b), (n_boot, len(b)))].mean(1)
        boots = boots[~np.isnan(boots)]
        # one seed on a side: a bootstrap of it is that seed, not an interval
        with np.errstate(invalid="ignore"):  # inf boots (random never drew the group): inf - inf on the way
            lo, hi = (np.quantile(boots, [0.5 - level / 2, 0.5 + level / 2])
                      if len(boots) and min(len(a), len(b)) > 1 else (np.nan, np.nan))
        rows.append(dict(zip(by, key if isinstance(key, tuple) else (key,)), relative_upsampling=float(point),
                         low=float(lo), high=float(hi), method_share=float(a.mean()), baseline_share=float(b.mean()),
                         n_method=len(a), n_baseline=len(b)))
    return pd.DataFrame(rows)
