"""The toy world: a Waterbirds-like dataset, rendered procedurally and deterministically.

Label = shape family ("landbird" shapes vs "waterbird" shapes); spurious attribute
`place` = background hue family (by default land: yellow-green, water: cyan-blue). The
training pool is mostly matched (waterbirds on water) with an imbalanced label; val and
test have the four groups balanced, as in Waterbirds.

Which shapes make each label and which hues (and, optionally, textures) make each place
are parameters (`label_shapes`, `place_hues`, `place_textures`), so one world is a family
of tasks (`toolkit.experiments.suite` draws from it); the defaults are the original task.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from toolkit._util.atomic import atomic_path
from toolkit._util.paths import default_dir
from toolkit._util.progress import progress
from toolkit.data.base import GroupedDataset
from toolkit.data.registry import register_dataset
from toolkit.data.render import LAND_HUES, SHAPES, TEXTURES, WATER_HUES, render
from toolkit.errors import DataError

GENERATOR_VERSION = 1
LABEL_SHAPES = (("triangle", "plus", "star"), ("circle", "ring", "hexagon"))
PLACE_HUES = (LAND_HUES, WATER_HUES)
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
            With objects of (0.18, 0.26) and the v2 backbone, the task stopped being
            ambiguous (worst-group 0.95 from 10 labels): see the README.
        label_shapes: two disjoint families of shape names (see render.SHAPES): class 0, class 1.
        place_hues: two disjoint background hue intervals (lo, hi) in HSV hue units, place 0
            and place 1; 0 <= lo < hi <= lo + 0.5, and hi may pass 1 (hues wrap around).
        place_textures: optional two families of texture names (render.TEXTURES), one per
            place; None draws every texture on both.
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
    label_shapes: tuple = LABEL_SHAPES
    place_hues: tuple = PLACE_HUES
    place_textures: tuple | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        # YAML and JSON give lists; tuples keep the params hashable and their fingerprint stable
        try:
            object.__setattr__(self, "object_size", tuple(float(v) for v in self.object_size))
            assert len(self.object_size) == 2
        except (TypeError, ValueError, AssertionError):
            raise DataError(f"toyworld: data.params.object_size must be two numbers [low, high], got "
                            f"{self.object_size!r}") from None
        object.__setattr__(self, "label_shapes", _pair(self.label_shapes, str))
        object.__setattr__(self, "place_hues", _pair(self.place_hues, float))
        if self.place_textures is not None:
            object.__setattr__(self, "place_textures", _pair(self.place_textures, str))

    def validate(self) -> None:
        for name in ("n_train", "n_val", "n_test", "image_size", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise DataError(f"toyworld: data.params.{name} must be an integer, got {value!r}")
        for name in ("matched_fraction", "eval_matched_fraction", "minority_fraction", "nuisance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise DataError(f"toyworld: data.params.{name} must be a number in [0, 1], got {value!r}")
        for name in ("n_train", "n_val", "n_test"):
            if getattr(self, name) < 4:
                raise DataError(f"toyworld: data.params.{name} must be at least 4, got {getattr(self, name)}")
        for name in ("n_val", "n_test"):  # the evaluation splits hold the four groups in equal numbers
            if getattr(self, name) % 4:
                raise DataError(f"toyworld: data.params.{name} must be a multiple of 4 (four equal groups), got "
                                f"{getattr(self, name)}; e.g. {getattr(self, name) // 4 * 4 or 4}")
        if self.image_size < 16:
            raise DataError(f"toyworld: data.params.image_size must be at least 16 pixels, got {self.image_size}")
        lo, hi = self.object_size
        if not 0 < lo <= hi < 0.5:
            raise DataError(f"toyworld: data.params.object_size must be [low, high] with 0 < low <= high < 0.5 "
                            f"(half-sizes as a share of the image side), got {list(self.object_size)}")
        validate_task(self.label_shapes, self.place_hues, self.place_textures)


def _pair(value, kind) -> tuple:
    try:
        a, b = value
        return tuple(kind(v) for v in a), tuple(kind(v) for v in b)
    except (TypeError, ValueError):
        raise DataError(f"toyworld: expected two families (one per class or place), got {value!r}") from None


def validate_task(label_shapes, place_hues, place_textures=None) -> None:
    """Known names, non-empty and disjoint families, hue intervals that do not overlap."""
    for k, family in enumerate(label_shapes):
        unknown = [s for s in family if s not in SHAPES]
        if unknown or not family:
            raise DataError(f"toyworld: label_shapes[{k}] = {list(family)} must be a non-empty list of known "
                             f"shapes; unknown: {unknown}; valid shapes: {', '.join(SHAPES)}")
    shared = set(label_shapes[0]) & set(label_shapes[1])
    if shared:
        raise DataError(f"toyworld: the two label families share {sorted(shared)}; a shape can make only one label")
    for k, (lo, hi) in enumerate(place_hues):
        if not (0.0 <= lo < 1.0 and lo < hi <= lo + 0.5):
            raise DataError(f"toyworld: place_hues[{k}] = ({lo}, {hi}) must satisfy 0 <= lo < 1 and "
                             f"lo < hi <= lo + 0.5 (hue units; hi may pass 1 to wrap around red)")
    if hue_overlap(place_hues[0], place_hues[1]) > 0:
        raise DataError(f"toyworld: place_hues {place_hues} overlap; the two places need disjoint hue intervals")
    if place_textures is not None:
        for k, family in enumerate(place_textures):
            unknown = [t for t in family if t not in TEXTURES]
            if unknown or not family:
                raise DataError(f"toyworld: place_textures[{k}] = {list(family)} must be a non-empty list of "
                                 f"known textures; unknown: {unknown}; valid textures: {', '.join(TEXTURES)}")


def hue_overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Length of the intersection of two hue intervals on the hue circle."""
    total = 0.0
    for shift in (-1.0, 0.0, 1.0):
        total += max(0.0, min(a[1], b[1] + shift) - max(a[0], b[0] + shift))
    return total


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
        raise DataError(f"toyworld: unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
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

    shape_names = np.array([rng.choice(params.label_shapes[int(label)]) for label in y])
    shape_ids = np.array([SHAPES.index(s) for s in shape_names])
    (lo0, hi0), (lo1, hi1) = params.place_hues
    hues = np.mod(rng.uniform(np.where(place == 0, lo0, lo1), np.where(place == 0, hi0, hi1)), 1.0)
    if params.place_textures is None:
        textures = rng.integers(0, len(TEXTURES), n)
    else:
        families = [np.array([TEXTURES.index(t) for t in f]) for f in params.place_textures]
        textures = np.where(place == 0, families[0][rng.integers(0, len(families[0]), n)],
                            families[1][rng.integers(0, len(families[1]), n)])
    chunks = []
    with progress(total=n, desc=f"render toy world {split}", unit="img", leave=False) as bar:
        for i in range(0, n, 512):
            chunks.append(render(shape_ids[i:i + 512], hues[i:i + 512], textures[i:i + 512], rng,
                                 image_size=params.image_size, nuisance=params.nuisance,
                                 object_size=params.object_size)[0])
            bar.update(len(chunks[-1]))
    images = np.concatenate(chunks)
    ids = _ID_OFFSET[split] + np.arange(n)
    table = pd.DataFrame(
        {"y": y, "place": place, "shape": shape_names, "texture": np.array(TEXTURES)[textures], "hue": hues},
        index=pd.Index(ids, name="id"),
    )
    return images, table


def _read_split(path: Path):
    """(images, attribute table) of a cached split, or None when the file is damaged (a copy cut
    short, a disk error): it is deleted and the split is rendered again."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as z:
            images = z["images"]
            table = pd.DataFrame({k[5:]: z[k] for k in z.files if k.startswith("attr_")})
            table.index = pd.Index(z["ids"], name="id")
        return images, table
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError) as err:
        warnings.warn(f"{path} is damaged ({type(err).__name__}: {err}); rendering the split again", stacklevel=3)
        path.unlink(missing_ok=True)
        return None


def fingerprint(params: ToyWorldParams, split: str) -> str:
    payload = json.dumps({"params": asdict(params), "split": split, "version": GENERATOR_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _plain(column: pd.Series) -> np.ndarray:
    """A column as a pickle-free numpy array (strings as fixed-width unicode)."""
    values = column.to_numpy()
    return values.astype(str) if values.dtype == object or not np.issubdtype(values.dtype, np.number) else values


@register_dataset("toyworld", options_from=ToyWorldParams)
def load_toyworld(split: str, *, cache_dir: str | Path | None = "auto", **params) -> GroupedDataset:
    """The toy-world split, rendered once and cached on disk under its fingerprint."""
    cache_dir = default_dir(cache_dir, "toyworld")
    p = ToyWorldParams(**params)
    p.validate()
    fp = fingerprint(p, split)
    path = Path(cache_dir) / f"{split}-{fp}.npz" if cache_dir is not None else None
    loaded = _read_split(path) if path is not None and path.exists() else None
    if loaded is not None:
        images, table = loaded
    else:
        images, table = generate_split(p, split)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:  # atomic: a reader never sees a half-written cache, a full disk leaves no temporary file
                with atomic_path(path, keep_suffix=True) as tmp:
                    np.savez(tmp, images=images, ids=table.index.to_numpy(),
                             **{f"attr_{c}": _plain(table[c]) for c in table.columns})
            except OSError as err:
                raise OSError(err.errno, f"could not write the toy-world cache {path} ({err.strerror}); free space "
                                         f"there or set ALTK_CACHE to another folder") from None
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
