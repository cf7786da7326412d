"""Dose-response (paper Fig. 10): the gain of uncertainty over random sampling as the
spurious correlation in the pool strengthens, in probe mode on the toy world."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from toolkit._util.paths import cache_path
from toolkit.config import ALConfig, al_config
from toolkit.experiments.protocols import PROBE_AL, PROBE_POOL, STRATEGIES, WEIGHTS
from toolkit.features.cache import extract_features
from toolkit.features.probe import ProbeRun, run_probes
from toolkit.metrics import GAIN, mean_ci


def dose_response(
    fractions: list[float],
    seeds: list[int],
    *,
    weights: list[str] = WEIGHTS,
    data: dict | None = None,
    al: dict | None = None,
    metric: str = "test/worst_group",
    out: str | Path | None = None,
    feature_root: str | Path | None = None,
    model: str = "toy_resnet",
) -> pd.DataFrame:
    """Probe-mode active learning at each matched-background fraction of the toy-world pool.

    Returns one row per (weights, matched_fraction): the final-budget `metric` of least
    confidence and of random (means over seeds) and their paired difference `gain` with
    a 95% t-interval across seeds. The test split stays balanced (it does not depend on
    the fraction), so every point is measured on the same question.
    """
    data = dict(data or PROBE_POOL)
    al = dict(al or PROBE_AL)
    al_config(al)
    out = Path(out) if out is not None else cache_path("dose-response")
    rows = []
    for w in weights:
        test = extract_features(model, "toyworld", "test", weights=w, dataset_params=data, root=feature_root, log=None)
        for frac in fractions:
            pool = extract_features(model, "toyworld", "train", weights=w, root=feature_root, log=None,
                                    dataset_params={**data, "matched_fraction": frac})
            runs = [ProbeRun(out / f"{w}-{frac}-{strategy}-s{s}", ALConfig(strategy=strategy, **al), s)
                    for strategy in STRATEGIES for s in seeds]
            recs = run_probes(pool, {"test": test}, runs)  # every seed and strategy in lockstep
            finals = {strategy: np.array([r.rounds[metric].iloc[-1] for r in recs if r.strategy == strategy])
                      for strategy in STRATEGIES}
            gain, lo, hi = mean_ci(finals["least_confidence"] - finals["random"], bounds=GAIN)
            rows.append({"weights": w, "matched_fraction": frac, "uncertainty": finals["least_confidence"].mean(),
                         "random": finals["random"].mean(), "gain": gain, "low": lo, "high": hi,
                         "n_seeds": len(seeds)})
    return pd.DataFrame(rows)
