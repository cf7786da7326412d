"""Synthetic representations: Gaussian clusters with set separabilities, written as feature caches.

An example's features are

    x = (y - 1/2) * delta_y * u_core + (a - 1/2) * delta_a * u_spurious + noise * eps,   eps ~ N(0, I_dim)

with y the label, a the spurious attribute, u_core and u_spurious two orthonormal directions
fixed by the seed. Along its own direction each concept is two Gaussians, means at -delta/2 and
+delta/2, standard deviation `noise`, so its Bayes accuracy where the classes are balanced and
independent of the other concept (the test split) is Phi(delta / (2 * noise)); the generator
sets delta from the separability asked for. The splits have the toy world's composition: a
training pool mostly matched (y == a) with a minority class, a test split with the four
groups balanced, in exact counts (`data.toyworld.group_counts`).

The caches have the toy world's attribute table (label `y`, spurious attribute `place`), so
a probe run, a measure, an analysis or an intervention reads them like an extracted cache.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm

from toolkit._util.version import __version__
from toolkit.data.toyworld import group_counts
from toolkit.errors import CacheError
from toolkit.features.array_cache import AttributeTable, cache_file, reuse_or_write
from toolkit.features.interventions import random_directions

GENERATOR_VERSION = 1
SPLITS = ("train", "test")
ID_OFFSET = {"train": 0, "test": 2_000_000}  # the toy world's: a pool and its test split share no id
CLASS_NAMES = ("class 0", "class 1")


@dataclass(frozen=True)
class SyntheticParams:
    """Everything that determines a synthetic representation.

    Args:
        n_train: examples in the training pool.
        n_test: examples in the test split (a multiple of 4: four equal groups).
        dim: feature dimension (>= 2).
        label_separability: the label's Bayes accuracy along the core direction, in [0.5, 1).
        attribute_separability: the attribute's Bayes accuracy along the spurious direction, in [0.5, 1).
        noise: the isotropic noise's standard deviation (> 0); the separabilities hold at any noise,
            which sets the features' scale.
        matched_fraction: share of the pool whose attribute matches its label.
        minority_fraction: share of the minority class (label 1) in the pool.
        eval_matched_fraction: share of matched examples in the test split (0.5: the four groups balanced).
        seed: fixes the directions and every draw; the splits draw from independent streams of it.
    """

    n_train: int = 2000
    n_test: int = 1000
    dim: int = 64
    label_separability: float = 0.9
    attribute_separability: float = 0.95
    noise: float = 1.0
    matched_fraction: float = 0.95
    minority_fraction: float = 0.25
    eval_matched_fraction: float = 0.5
    seed: int = 0

    def validate(self) -> None:
        """Raise CacheError naming the first invalid parameter and what is valid."""
        for name in ("n_train", "n_test", "dim", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "seed" else 2):
                raise CacheError(f"synthetic: {name} must be an integer >= {0 if name == 'seed' else 2}, got {value!r}")
        if self.n_test % 4:
            raise CacheError(f"synthetic: n_test must be a multiple of 4 (four equal groups), got {self.n_test}; "
                             f"e.g. {self.n_test // 4 * 4 or 4}")
        for name in ("label_separability", "attribute_separability"):
            value = getattr(self, name)
            if not _number(value) or not 0.5 <= value < 1:
                raise CacheError(f"synthetic: {name} (a Bayes accuracy) must be a number in [0.5, 1), got {value!r}")
        for name in ("matched_fraction", "minority_fraction", "eval_matched_fraction"):
            value = getattr(self, name)
            if not _number(value) or not 0 <= value <= 1:
                raise CacheError(f"synthetic: {name} must be a number in [0, 1], got {value!r}")
        if not _number(self.noise) or not self.noise > 0:
            raise CacheError(f"synthetic: noise (a standard deviation) must be a number > 0, got {self.noise!r}")

    def shifts(self) -> tuple[float, float]:
        """(delta_y, delta_a): the distances between the two classes' means of the label and of
        the attribute, 2 * noise * Phi^-1(separability)."""
        return (2 * self.noise * float(norm.ppf(self.label_separability)),
                2 * self.noise * float(norm.ppf(self.attribute_separability)))

    def directions(self) -> np.ndarray:
        """(dim, 2): u_core and u_spurious, orthonormal, fixed by the seed (shared by the splits)."""
        return random_directions(self.dim, 2, [self.seed, len(SPLITS), GENERATOR_VERSION])


def synthetic_split(params: SyntheticParams, split: str) -> tuple[np.ndarray, pd.DataFrame]:
    """Draw one split: features and the attribute table.

    Args:
        params: the representation.
        split: "train" (the pool) or "test".

    Returns:
        (X (N, dim) float32, attribute table indexed by id with columns y and place).

    Examples:
        >>> X, table = synthetic_split(SyntheticParams(n_train=40, n_test=8, dim=3), "test")
        >>> X.shape, table.groupby(["y", "place"]).size().tolist()
        ((8, 3), [2, 2, 2, 2])
    """
    params.validate()
    if split not in SPLITS:
        raise CacheError(f"synthetic: unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    n = getattr(params, f"n_{split}")
    counts = group_counts(n, params.minority_fraction, params.matched_fraction) if split == "train" \
        else group_counts(n, 0.5, params.eval_matched_fraction)
    rng = np.random.default_rng([params.seed, SPLITS.index(split), GENERATOR_VERSION])
    y = np.concatenate([np.full(c, g[0]) for g, c in counts.items()])
    place = np.concatenate([np.full(c, g[1]) for g, c in counts.items()])
    order = rng.permutation(n)  # the groups interleaved, as the toy world's pool is
    y, place = y[order], place[order]
    (delta_y, delta_a), (u_core, u_spurious) = params.shifts(), params.directions().T
    X = (np.outer(y - 0.5, delta_y * u_core) + np.outer(place - 0.5, delta_a * u_spurious)
         + params.noise * rng.standard_normal((n, params.dim)))
    table = pd.DataFrame({"y": y.astype(np.int64), "place": place.astype(np.int64)},
                         index=pd.Index(ID_OFFSET[split] + np.arange(n), name="id"))
    return X.astype(np.float32), table


def synthetic_fingerprint(params: SyntheticParams, split: str) -> dict:
    """A synthetic cache's fingerprint, shaped as an extracted cache's (a pool and its test
    split share everything but the split, as the probe checks).

    Args:
        params: the representation.
        split: "train" or "test".

    Examples:
        >>> synthetic_fingerprint(SyntheticParams(), "test")["dataset"]
        'synthetic'
    """
    return {"model": "synthetic", "weights": "gaussian-clusters", "layer": "features", "dataset": "synthetic",
            "dataset_params": {**asdict(params), "generator_version": GENERATOR_VERSION}, "split": split,
            "transform": "none", "compute": "float64", "toolkit_version": __version__}


def synthetic_caches(*, n_train: int = 2000, n_test: int = 1000, dim: int = 64, label_separability: float = 0.9,
                     attribute_separability: float = 0.95, noise: float = 1.0, matched_fraction: float = 0.95,
                     minority_fraction: float = 0.25, eval_matched_fraction: float = 0.5, seed: int = 0,
                     root: str | Path | None = None) -> dict[str, Path]:
    """Write a synthetic representation's pool and test split as feature caches.

    Gaussian clusters whose label and spurious attribute shift the mean along a core and a
    spurious direction, with the Bayes accuracy of each set (see the module's docstring); the
    pool mostly matched with a minority class and the test groups balanced, in exact counts.
    Deterministic per seed; asked again, the same caches are returned.

    Args:
        n_train: examples in the pool.
        n_test: examples in the test split (a multiple of 4).
        dim: feature dimension (>= 2).
        label_separability: the label's Bayes accuracy, in [0.5, 1).
        attribute_separability: the attribute's Bayes accuracy, in [0.5, 1).
        noise: the noise's standard deviation (the features' scale).
        matched_fraction: share of the pool whose attribute matches its label.
        minority_fraction: share of label 1 in the pool.
        eval_matched_fraction: share of matched examples in the test split.
        seed: the seed.
        root: the folder (default: the cache root's features/).

    Returns:
        {"train": path, "test": path}.

    Raises:
        CacheError: a parameter out of range (the message names it).

    Examples:
        >>> import toolkit
        >>> from toolkit.config import ALConfig
        >>> caches = toolkit.synthetic_caches(n_train=200, n_test=100, dim=8, label_separability=0.8)
        >>> rec = toolkit.run_probe(caches["train"], {"test": caches["test"]}, "altk-doc/synthetic",
        ...                         al=ALConfig(seed_size=10, per_round=5, budget=10), seed=0)
        >>> rec.rounds["n_labels"].tolist()
        [10, 15, 20]
    """
    params = SyntheticParams(n_train=n_train, n_test=n_test, dim=dim, label_separability=label_separability,
                             attribute_separability=attribute_separability, noise=noise,
                             matched_fraction=matched_fraction, minority_fraction=minority_fraction,
                             eval_matched_fraction=eval_matched_fraction, seed=seed)
    params.validate()
    return {split: _write_split(params, split, root) for split in SPLITS}


def _write_split(params: SyntheticParams, split: str, root) -> Path:
    fp = synthetic_fingerprint(params, split)

    def make() -> dict:
        X, table = synthetic_split(params, split)
        return {"ids": table.index.to_numpy(), "embeddings": X,
                "table": AttributeTable(table, "y", "place", CLASS_NAMES)}

    return reuse_or_write(cache_file(fp, "gaussian", root), fp, make)


def _number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))
