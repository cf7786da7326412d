"""The protocol's pure pieces, shared by the full loop and the probe loop: round sizes,
budget checks, seed sets, candidate subsampling, the rows a record stores, split metrics."""
from __future__ import annotations

import numpy as np
import pandas as pd

from toolkit._util.repro import round_rng
from toolkit.config import ALConfig, acquisition_sizes  # noqa: F401  (the protocol's round sizes)
from toolkit.errors import ConfigError, DataError
from toolkit.metrics import EXTRA_METRICS, GroupMetrics, group_key, group_shares


def check_budget(al: ALConfig, pool_size: int) -> None:
    if al.seed_size < 1:
        raise ConfigError(f"al.seed_size must be >= 1, got {al.seed_size}")
    if al.seed_size > pool_size:
        raise ConfigError(f"seed set of {al.seed_size} is larger than the pool ({pool_size} examples); "
                         f"lower al.seed_size")
    if al.seed_size + al.budget > pool_size:
        raise ConfigError(f"seed set ({al.seed_size}) + budget ({al.budget}) exceeds the pool ({pool_size} "
                         f"examples); lower al.budget to at most {pool_size - al.seed_size}")


def check_resampled_pool(al: ALConfig, pool) -> None:
    """Refuse to label more than `al.max_resampled_share` of a pool that resampling shrank."""
    if pool.params.get("resample_seed") is None:  # only loaders that resample existing images set it
        return
    share = (al.seed_size + al.budget) / len(pool)
    if share > al.max_resampled_share:
        raise ConfigError(
            f"{pool.name}: matched_fraction={pool.params['matched_fraction']} resampled the training pool to "
            f"{len(pool)} images, and {al.seed_size} + {al.budget} labels would label {share:.0%} of it (the paper "
            f"regenerated each variant at full size, ~4,800 images). Load a regenerated variant instead, or set "
            f"al.max_resampled_share={share:.2f} (or higher) to run on the small pool anyway.")


def check_classes(labels: np.ndarray, class_names, where: str) -> None:
    """Refuse a split with fewer than two classes: its "balanced" seed set, accuracy and
    worst-group would all be meaningless (a one-class pool scores 1.000 on everything)."""
    values, counts = np.unique(labels, return_counts=True)
    if len(values) < 2:
        names = list(class_names) if class_names is not None else []
        have = ", ".join(f"{names[v] if v < len(names) else v} (class {v}): {c}" for v, c in zip(values, counts))
        raise DataError(f"{where} holds a single class ({have or 'no examples'}); active learning needs at least "
                        f"two. Check the label column of the data (or the toy world's minority_fraction)")


def draw_seed_set(labels: np.ndarray, size: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Positions of the seed set: "balanced" = size // C per class (the remainder to the first
    classes), "random" = uniform without replacement."""
    if kind == "random":
        return np.sort(rng.choice(len(labels), size, replace=False))
    if kind != "balanced":
        raise ConfigError(f"unknown al.seed_set {kind!r}; valid: 'balanced', 'random'")
    classes = np.unique(labels)
    per = [size // len(classes) + (i < size % len(classes)) for i in range(len(classes))]
    picks = []
    for c, k in zip(classes, per):
        members = np.flatnonzero(labels == c)
        if k > len(members):
            raise ConfigError(f"balanced seed set needs {k} examples of class {c}, the pool has {len(members)}")
        picks.append(rng.choice(members, k, replace=False))
    return np.sort(np.concatenate(picks))


def record_rows(ids: np.ndarray, labels: np.ndarray, spurious: np.ndarray | None, positions: np.ndarray,
                scores: np.ndarray | None = None, extra: dict[str, np.ndarray] | None = None) -> list[dict]:
    """Run-record rows (id, label, spurious, group, score, and any `extra` attribute
    columns) for the examples at `positions`."""
    out = []
    for j, p in enumerate(positions):
        row = {"id": int(ids[p]), "label": int(labels[p])}
        for name, values in (extra or {}).items():
            row[name] = values[p].item() if hasattr(values[p], "item") else values[p]
        if spurious is not None:
            row["spurious"] = int(spurious[p])
            row["group"] = group_key(labels[p], spurious[p])
        if scores is not None:
            row["score"] = float(scores[j])
        out.append(row)
    return out


def candidates(n: int, labelled: np.ndarray, al: ALConfig, seed: int, round_index: int
               ) -> tuple[np.ndarray, np.random.Generator]:
    """Unlabelled positions to score after `round_index` (a fresh random subset of
    `al.pool_subsample` of them when set), and the round's Generator for random scores."""
    rng = round_rng(seed, round_index + 1, stream=2)
    mask = np.ones(n, dtype=bool)
    mask[labelled] = False
    unlabelled = np.flatnonzero(mask)  # setdiff1d's answer, without its sort: ~1 ms vs ~2 ms a round
    if al.pool_subsample and al.pool_subsample < len(unlabelled):
        unlabelled = np.sort(rng.choice(unlabelled, al.pool_subsample, replace=False))
    return unlabelled, rng


def dataset_rows(ds, positions: np.ndarray, scores: np.ndarray | None = None) -> list[dict]:
    """Record rows for a GroupedDataset or a FeatureCache (both carry ids, labels,
    attributes and their group columns)."""
    return DatasetRows(ds)(positions, scores)


class DatasetRows:
    """`dataset_rows` on one dataset, its columns read once (a probe lockstep records every
    run's acquisitions each round)."""

    def __init__(self, ds) -> None:
        self.ids, self.labels = ds.ids, ds.labels
        self.spurious = ds.attributes[ds.spurious_column].to_numpy() if ds.spurious_column else None
        self.extra = {c: ds.attributes[c].to_numpy() for c in ds.group_columns}

    def __call__(self, positions: np.ndarray, scores: np.ndarray | None = None) -> list[dict]:
        return record_rows(self.ids, self.labels, self.spurious, positions, scores, self.extra)


def attribute_shares(ds) -> dict[str, dict[str, float]]:
    """Pool share of every value of the label and of each `group_columns` attribute."""
    out = {}
    for name, values in [("label", ds.labels), *((c, ds.attributes[c].to_numpy()) for c in ds.group_columns)]:
        counts = pd.Series(values).value_counts()
        out[name] = {str(k): float(v / len(values)) for k, v in counts.items()}
    return out


def split_metrics(preds: np.ndarray, ds, train_shares: dict | None) -> dict:
    """Group metrics and the dataset's headline metrics, for a GroupedDataset or a FeatureCache."""
    return SplitMetrics(ds, train_shares)(preds)


class SplitMetrics:
    """`split_metrics` on one split, its groups found once (a probe lockstep evaluates every
    run on the same split each round)."""

    def __init__(self, ds, train_shares: dict | None) -> None:
        sp = ds.attributes[ds.spurious_column].to_numpy() if ds.spurious_column else None
        self.groups = GroupMetrics(ds.labels, sp, train_group_shares=train_shares, matched=getattr(ds, "matched", True))
        self.ds = ds

    def __call__(self, preds: np.ndarray) -> dict:
        preds = np.asarray(preds)
        if preds.shape != np.shape(self.ds.labels):
            raise ValueError(f"preds {preds.shape} and labels {np.shape(self.ds.labels)} must have the same shape")
        return self.many(preds[:, None])[0]

    def many(self, preds: np.ndarray) -> list[dict]:
        """`self(p)` for each column p of `preds` (n, runs)."""
        out = self.groups.many(preds)
        for j, row in enumerate(out):
            for name in self.ds.extra_metrics:
                row.update(EXTRA_METRICS[name](preds[:, j], self.ds.labels, self.ds.attributes))
        return out


def pool_shares(pool) -> dict | None:
    """The pool's (label, spurious) group shares, for a GroupedDataset or a FeatureCache; None without a spurious column."""
    return group_shares(pool.labels, pool.attributes[pool.spurious_column].to_numpy()) if pool.spurious_column else None


def run_meta(pool, sizes: list[int], shares: dict | None, *, dataset: str | None = None) -> dict:
    """A run's meta.json: the pool's facts, for every loop (full, probe, select-then-finetune).
    `dataset`: the dataset's name where the pool does not carry it (a FeatureCache's fingerprint)."""
    return {"dataset": pool.name if dataset is None else dataset, "pool_size": len(pool),
            "class_names": list(pool.class_names), "label_column": pool.label_column,
            "spurious_column": pool.spurious_column, "pool_group_shares": shares,
            "pool_attribute_shares": attribute_shares(pool), "acquisition_sizes": sizes}
