"""CIFAR-10 in torchvision's on-disk format, and the paper's imbalanced variant (Fig. 14).

Layout (what `torchvision.datasets.CIFAR10(root, download=True)` leaves):
    ROOT/cifar-10-batches-py/data_batch_1 ... data_batch_5, test_batch, batches.meta
Splits: "train" = the training batches minus a held-out validation set of `val_size`
images drawn reproducibly; "val" = that held-out set, balanced; "test" = test_batch. With
`imbalanced=True`, half the classes (chosen reproducibly from `seed`) keep only
`cut_fraction` of their training images, and split "val_imbalanced" is the validation
set with the same cut (the `val_imbalanced=True` option applies it to "val" itself).
There is no spurious attribute: metrics are per class (worst class, balanced).
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from toolkit.data.base import GroupedDataset
from toolkit.data.registry import register_dataset
from toolkit.errors import DataError, MissingFileError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.exists():
        raise MissingFileError(
            f"cifar10: missing {path}. Expected torchvision's layout ROOT/cifar-10-batches-py/"
            f"{{data_batch_1..5, test_batch}}; get it with torchvision.datasets.CIFAR10(ROOT, download=True) "
            f"on a machine with internet, then pass data.params.root=ROOT."
        )
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    return np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32), np.asarray(d[b"labels"], dtype=np.int64)


def rare_classes(seed: int) -> list[int]:
    return sorted(np.random.default_rng([seed, 10]).choice(10, 5, replace=False).tolist())


@register_dataset("cifar10")
def load_cifar10(split: str, *, root: str | Path, imbalanced: bool = False, cut_fraction: float = 0.1,
                 val_size: int = 5000, val_imbalanced: bool = False, seed: int = 0,
                 resolution: int = 32, cache_dir: str | Path | None = None, crop: str = "centre") -> GroupedDataset:
    """CIFAR-10 (torchvision's python layout). `crop`: "centre" resizes every batch to
    `resolution`; "random" is BiT's small-image train transform as the paper's code runs it
    (resize to 160/128 x resolution, random `resolution` crop; evaluation resizes to
    `resolution`). `seed` picks the rare classes and the val split."""
    from toolkit.data.image_files import CROPS

    if crop not in CROPS:
        raise DataError(f"cifar10: crop must be one of {', '.join(CROPS)}, got {crop!r}")
    if split not in ("train", "val", "val_imbalanced", "test"):
        raise DataError(f"cifar10: unknown split {split!r}; valid splits: train, val, val_imbalanced, test")
    if split == "val_imbalanced":
        if not imbalanced:
            raise DataError("cifar10: split 'val_imbalanced' exists only with imbalanced=true")
        split, val_imbalanced = "val", True
    base = Path(root) / "cifar-10-batches-py"
    rare = rare_classes(seed) if imbalanced else []
    if split == "test":
        x, y = _read_batch(base / "test_batch")
        ids = 1_000_000 + np.arange(len(y))
    else:
        parts = [_read_batch(base / f"data_batch_{i}") for i in range(1, 6)]
        x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        ids = np.arange(len(y))
        rng = np.random.default_rng([seed, 0])
        order = rng.permutation(len(y))
        keep = order[val_size:] if split == "train" else order[:val_size]
        if imbalanced and (split == "train" or val_imbalanced):
            cut = []
            for c in rare:  # keep the first cut_fraction of each rare class in a seeded order
                members = keep[y[keep] == c]
                cut.append(members[int(np.ceil(len(members) * cut_fraction)):])
            keep = np.setdiff1d(keep, np.concatenate(cut)) if cut else keep
        keep = np.sort(keep)
        x, y, ids = x[keep], y[keep], ids[keep]
    table = pd.DataFrame({"y": y, "rare_class": np.isin(y, rare).astype(np.int64)}, index=pd.Index(ids, name="id"))
    params = {"root": str(Path(root).resolve()), "imbalanced": imbalanced, "cut_fraction": cut_fraction,
              "val_size": val_size, "val_imbalanced": val_imbalanced, "seed": seed,
              "resolution": resolution, "crop": crop}
    sizes = {"train_crop": resolution, "train_size": resolution * 160 // 128} if crop == "random" else {}
    return GroupedDataset(name="cifar10", split="val_imbalanced" if split == "val" and val_imbalanced else split,
                          images=torch.from_numpy(np.ascontiguousarray(x)), attributes=table, label_column="y",
                          spurious_column=None, class_names=CLASSES, params=params, input_size=resolution,
                          group_columns=("rare_class",), **sizes)
