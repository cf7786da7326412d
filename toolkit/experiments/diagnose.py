"""The diagnostic from the gain law (issue #33): before any active-learning run, what does a
labelled cache's representation say about the gain of uncertainty sampling over random?

`predict_gain` measures the pool's representation as the dose study measures a backbone (the
label's, the attribute's and the groups' linear separability; with a test split, the full-data
probe's error), places it on the phase diagram, and gives the law's predicted gain with its
interval. `cache_measures` is the measuring step alone, shared with the intervention runners.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from toolkit._util.paths import cache_path
from toolkit.errors import CacheError, ConfigError


def cache_measures(pool, test=None, *, separability: bool = True) -> dict:
    """A pool cache's representation measures: `analysis.dose.separability_measures` of its
    features, and with a test split the full-data probe's errors (`analysis.dose.full_data_error`).

    Args:
        pool: the pool's feature cache (or its path), with labels and a spurious attribute.
        test: a held-out split's cache (or path), or None (no full-data error).
        separability: measure the separabilities (False: only the full-data errors).

    Returns:
        {"sep_label", "sep_spurious", "sep_group", "sep_group_worst", "sep_group_mismatched"}
        and, with `test`, "full_error" and "full_worst_group_error".

    Raises:
        CacheError: a cache without a spurious attribute (the measures need groups), or a test
            cache that is not a held-out split of the pool's dataset, embedded the same way.

    Examples:
        >>> import toolkit
        >>> caches = toolkit.synthetic_caches(n_train=200, n_test=100, dim=8, label_separability=0.95)
        >>> m = cache_measures(caches["train"], caches["test"])
        >>> sorted(m)[:3], bool(m["full_error"] < 0.2)
        (['full_error', 'full_worst_group_error', 'sep_group'], True)
    """
    from toolkit.analysis.dose import full_data_error, separability_measures
    from toolkit.features.cache import FeatureCache, open_cache
    from toolkit.features.probe import check_eval_cache

    pool = pool if isinstance(pool, FeatureCache) else open_cache(pool)
    if pool.spurious is None:
        raise CacheError(f"{pool.path} has no spurious attribute: the measures (and the law) read the label x "
                         f"attribute groups; extract a dataset that has one (its attribute table's spurious column)")
    spurious = np.unique(pool.spurious, return_inverse=True)[1]
    out = separability_measures(np.asarray(pool.embeddings), pool.labels, spurious) if separability else {}
    if test is not None:
        test = test if isinstance(test, FeatureCache) else open_cache(test)
        check_eval_cache(pool, test, "test")  # another backbone's or dataset's split would measure nothing
        codes = np.unique(np.r_[np.asarray(pool.spurious), np.asarray(test.spurious)], return_inverse=True)[1]
        out.update(full_data_error(np.asarray(pool.embeddings), pool.labels, np.asarray(test.embeddings),
                                   test.labels, codes[len(pool.spurious):]))
    return out


def default_law_path() -> Path:
    """Where `altk intervene` writes the law it fits on the dose study: `<cache>/interventions/law.json`."""
    return cache_path("interventions", "law.json")


def default_phase_path() -> Path:
    """Where the phase-diagram experiment writes its cells: `<cache>/interventions/d/phase.csv`."""
    return cache_path("interventions", "d", "phase.csv")


def predict_gain(train_cache, test_cache=None, *, law=None, phase=None) -> dict:
    """Measure a labelled cache and predict the gain of least-confidence over random sampling
    (worst-group AUC, probe mode) from the gain law, before any active-learning run.

    Args:
        train_cache: the pool's cache (or its path): a backbone's features of a benchmark's
            training split, with labels and a spurious attribute.
        test_cache: a held-out split's cache (or path); needed when the law reads the full-data
            probe's error, and measured when given.
        law: a fitted `analysis.gain_law.GainLaw`, or the path of one saved (default: the law
            `altk intervene` fitted, `default_law_path()`).
        phase: the phase diagram's cells (`analysis.gain_law.phase_table` output, or its CSV;
            default: `default_phase_path()` when it exists, else no placement).

    Returns:
        {"cache", "measures" (dict), "law" (its formula), "predicted_gain", "low", "high",
        "level" (the interval's coverage), "phase_cell" (the nearest cell in measured label and
        attribute separability, with its measured gain, or None)}.

    Raises:
        ConfigError: no law at the default path, or the law needs a measure that needs `test_cache`.
        CacheError: a cache without a spurious attribute, or a test cache that is not a held-out
            split of the pool's dataset, embedded the same way.

    Examples:
        >>> import pandas as pd, toolkit
        >>> from toolkit.analysis.gain_law import GainLaw
        >>> rows = pd.DataFrame({"task": [0, 1, 2, 3], "sep_label": [0.5, 0.6, 0.8, 0.95],
        ...                      "auc_gain": [-0.01, 0.0, 0.08, 0.15]})
        >>> law = GainLaw(("sep_label",), kind="isotonic", n_boot=20).fit(rows)
        >>> caches = toolkit.synthetic_caches(n_train=200, n_test=100, dim=8, label_separability=0.95)
        >>> out = toolkit.predict_gain(caches["train"], law=law)
        >>> bool(out["low"] <= out["predicted_gain"] <= out["high"]), round(out["measures"]["sep_label"], 1)
        (True, 0.7)
    """
    from toolkit.analysis.gain_law import GainLaw

    law = law if isinstance(law, GainLaw) else GainLaw.load(law or default_law_path())
    needs_test = [m for m in law.measures if m.startswith("full_")]
    if needs_test and test_cache is None:
        raise ConfigError(f"the law reads {', '.join(needs_test)}, the error of the probe fitted on the whole pool, "
                          f"measured on a held-out split: pass its cache (test_cache=..., --test CACHE)")
    measures = cache_measures(train_cache, test_cache)
    row = pd.DataFrame([measures])
    interval = law.predict_interval(row).iloc[0]
    return {"cache": str(getattr(train_cache, "path", train_cache)), "measures": measures, "law": law.describe(),
            "predicted_gain": float(interval["predicted"]), "low": float(interval["low"]),
            "high": float(interval["high"]), "level": law.level, "phase_cell": _nearest_cell(measures, phase)}


def _nearest_cell(measures: dict, phase) -> dict | None:
    """The phase-diagram cell nearest the cache in measured (label, attribute) separability."""
    if phase is None:
        phase = default_phase_path() if default_phase_path().is_file() else None
    if phase is None:
        return None
    cells = phase if isinstance(phase, pd.DataFrame) else pd.read_csv(phase)
    if not {"sep_label", "sep_spurious"} <= set(cells.columns) or not len(cells):
        return None
    distance = np.hypot(cells["sep_label"] - measures["sep_label"], cells["sep_spurious"] - measures["sep_spurious"])
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in cells.loc[distance.idxmin()].items()}
