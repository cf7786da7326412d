"""The toy world: a Waterbirds-like dataset, rendered procedurally and deterministically.

Label = shape family ("landbird" shapes vs "waterbird" shapes); spurious attribute
`place` = background hue family (land: yellow-green, water: cyan-blue). The training
pool is mostly matched (waterbirds on water) with an imbalanced label; val and test
have the four groups balanced, as in Waterbirds.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .base import GroupedDataset
from .render import LAND_HUES, SHAPES, TEXTURES, WATER_HUES, render

GENERATOR_VERSION = 1
LABEL_SHAPES = {0: ("triangle", "plus", "star"), 1: ("circle", "ring", "hexagon")}
CLASS_NAMES = ("landbird", "waterbird")
SPLITS = ("train", "val", "test")
_ID_OFFSET = {"train": 0, "val": 1_000_000, "test": 2_000_000}


@dataclass(frozen=True)
class ToyWorldParams:
    """Everything that determines a toy-world split.

    Args:
        n_train / n_val / n_test: images per split (val and test must be multiples of 4).
        image_size: side length in pixels.
        matched_fraction: fraction of the training pool whose background matches the label.
        eval_matched_fraction: the same for val and test (0.5 = the four groups balanced).
        minority_fraction: share of the minority class (waterbird) in the training pool.
        nuisance: strength of position/rotation/aspect/colour/noise variation (0 to 1).
        object_size: (min, max) half-size of the object as a fraction of the image side;
            small objects make the background the more salient feature, as in Waterbirds.
        seed: generator seed; splits draw from independent streams of it.
    """

    n_train: int = 2000
    n_val: int = 400
    n_test: int = 1000
    image_size: int = 32
    matched_fraction: float = 0.95
    eval_matched_fraction: float = 0.5
    minority_fraction: float = 0.25
    nuisance: float = 1.0
    object_size: tuple = (0.12, 0.18)
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "object_size", tuple(float(v) for v in self.object_size))  # YAML gives lists

    def validate(self) -> None:
        for name in ("matched_fraction", "eval_matched_fraction", "minority_fraction", "nuisance"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"toyworld: {name} must lie in [0, 1], got {value}")
        for name in ("n_train", "n_val", "n_test"):
            if getattr(self, name) < 4:
                raise ValueError(f"toyworld: {name} must be at least 4, got {getattr(self, name)}")


def group_counts(n: int, minority_fraction: float, matched_fraction: float) -> dict[tuple[int, int], int]:
    """Exact (label, place) counts for a split of n images; they sum to n."""
    n1 = int(round(n * minority_fraction))
    n0 = n - n1
    m0, m1 = int(round(n0 * matched_fraction)), int(round(n1 * matched_fraction))
    return {(0, 0): m0, (0, 1): n0 - m0, (1, 1): m1, (1, 0): n1 - m1}


def generate_split(params: ToyWorldParams, split: str) -> tuple[np.ndarray, pd.DataFrame]:
    """Render one split. Returns images (N, H, W, 3) uint8 and the attribute table."""
    params.validate()
    if split not in SPLITS:
        raise ValueError(f"toyworld: unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    n = getattr(params, f"n_{split}")
    if split == "train":
        counts = group_counts(n, params.minority_fraction, params.matched_fraction)
    else:
        counts = group_counts(n, 0.5, params.eval_matched_fraction)
    rng = np.random.default_rng([params.seed, SPLITS.index(split), GENERATOR_VERSION])
    y = np.concatenate([np.full(c, g[0]) for g, c in counts.items()])
    place = np.concatenate([np.full(c, g[1]) for g, c in counts.items()])
    order = rng.permutation(n)
    y, place = y[order], place[order]

    shape_names = np.array([rng.choice(LABEL_SHAPES[int(label)]) for label in y])
    shape_ids = np.array([SHAPES.index(s) for s in shape_names])
    lo = np.where(place == 0, LAND_HUES[0], WATER_HUES[0])
    hi = np.where(place == 0, LAND_HUES[1], WATER_HUES[1])
    hues = rng.uniform(lo, hi)
    textures = rng.integers(0, len(TEXTURES), n)
    images = np.concatenate([
        render(shape_ids[i:i + 512], hues[i:i + 512], textures[i:i + 512], rng,
               image_size=params.image_size, nuisance=params.nuisance,
               object_size=params.object_size)[0]
        for i in range(0, n, 512)
    ])
    ids = _ID_OFFSET[split] + np.arange(n)
    table = pd.DataFrame(
        {"y": y, "place": place, "shape": shape_names, "texture": np.array(TEXTURES)[textures], "hue": hues},
        index=pd.Index(ids, name="id"),
    )
    return images, table


def fingerprint(params: ToyWorldParams, split: str) -> str:
    payload = json.dumps({"params": asdict(params), "split": split, "version": GENERATOR_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _plain(column: pd.Series) -> np.ndarray:
    """A column as a pickle-free numpy array (strings as fixed-width unicode)."""
    values = column.to_numpy()
    return values.astype(str) if values.dtype == object or not np.issubdtype(values.dtype, np.number) else values


def load_toyworld(split: str, *, cache_dir: str | Path | None = "cache/toyworld", **params) -> GroupedDataset:
    """The toy-world split, rendered once and cached on disk under its fingerprint."""
    p = ToyWorldParams(**params)
    p.validate()
    fp = fingerprint(p, split)
    path = Path(cache_dir) / f"{split}-{fp}.npz" if cache_dir is not None else None
    if path is not None and path.exists():
        with np.load(path, allow_pickle=False) as z:
            images = z["images"]
            table = pd.DataFrame({k[5:]: z[k] for k in z.files if k.startswith("attr_")})
            table.index = pd.Index(z["ids"], name="id")
    else:
        images, table = generate_split(p, split)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
            np.savez(tmp, images=images, ids=table.index.to_numpy(),
                     **{f"attr_{c}": _plain(table[c]) for c in table.columns})
            os.replace(tmp, path)  # atomic: a reader never sees a half-written cache
    return GroupedDataset(
        name="toyworld",
        split=split,
        images=torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))),
        attributes=table,
        label_column="y",
        spurious_column="place",
        class_names=CLASS_NAMES,
        params={**asdict(p), "generator_version": GENERATOR_VERSION},
    )
