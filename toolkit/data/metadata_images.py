"""Image datasets described by a `metadata.csv`: Waterbirds (group_DRO and WILDS releases)
and Treeperson. Images are decoded once, resized and centre-cropped the BiT way (resize to
`resize`, crop `resolution`), and cached under cache/ by a fingerprint, like the toy world.

This holds a split in memory as uint8 (Waterbirds train at 480 px: ~3.3 GB); pools of
hundreds of thousands of images need a streaming loader, which is not written yet.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .base import GroupedDataset

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class MetadataLayout:
    name: str
    class_names: tuple[str, ...]
    spurious_column: str
    splits: tuple[str, ...]
    where: str  # where to get it, for error messages
    subfolder_candidates: tuple[str, ...] = ("",)


WATERBIRDS = MetadataLayout(
    "waterbirds", ("landbird", "waterbird"), "place", ("train", "val", "test"),
    "the group_DRO release (https://github.com/kohpangwei/group_DRO: waterbird_complete95_forest2water2) "
    "or the WILDS release (wilds.get_dataset('waterbirds', download=True) -> waterbirds_v1.0/)",
    ("", "waterbirds_v1.0", "waterbird_complete95_forest2water2"))
TREEPERSON = MetadataLayout(
    "treeperson", ("no_person", "person"), "place", ("train", "val"),
    "the GQA images (https://cs.stanford.edu/people/dorarad/gqa/) with the paper's metadata.csv "
    "(shipped as toolkit/data/treeperson-metadata.csv; copy it next to images/)")
REQUIRED = ("img_id", "img_filename", "y", "split", "place")


def find_root(layout: MetadataLayout, root: str | Path) -> Path:
    root = Path(root)
    for sub in layout.subfolder_candidates:
        if (root / sub / "metadata.csv").exists():
            return root / sub
    raise FileNotFoundError(
        f"{layout.name}: no metadata.csv under {root} (looked in: "
        f"{', '.join(str(root / s) for s in layout.subfolder_candidates)}). Expected layout: "
        f"ROOT/metadata.csv with columns {', '.join(REQUIRED)} (split 0 train, 1 val, 2 test) and the images at "
        f"ROOT/<img_filename>. Get it from {layout.where}, then pass data.params.root=ROOT."
    )


def read_metadata(layout: MetadataLayout, root: Path) -> pd.DataFrame:
    meta = pd.read_csv(root / "metadata.csv")
    missing = [c for c in REQUIRED if c not in meta.columns]
    if missing:
        raise ValueError(f"{root / 'metadata.csv'} lacks column(s) {missing}; it has {list(meta.columns)}. "
                         f"Expected {', '.join(REQUIRED)}")
    bad = sorted(int(v) for v in set(meta["y"].unique()) - set(range(len(layout.class_names))))
    if bad:
        raise ValueError(f"{root / 'metadata.csv'}: labels y must lie in 0..{len(layout.class_names) - 1}; found {bad}")
    return meta


def _load_image(path: Path, resize: int, resolution: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB").resize((resize, resize), Image.BILINEAR)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err
    off = (resize - resolution) // 2
    return np.asarray(im)[off:off + resolution, off:off + resolution]


def load_metadata_images(layout: MetadataLayout, split: str, *, root: str | Path, resolution: int = 128,
                         resize: int | None = None, cache_dir: str | Path | None = "cache/datasets") -> GroupedDataset:
    """One split as a GroupedDataset (label column "y", spurious column "place")."""
    if split not in layout.splits:
        raise ValueError(f"{layout.name}: unknown split {split!r}; valid splits: {', '.join(layout.splits)}")
    resize = resize or (resolution * 160 // 128 if resolution <= 128 else resolution * 512 // 480)
    root = find_root(layout, root)
    meta = read_metadata(layout, root)
    rows = meta[meta["split"] == SPLIT_CODES[split]].reset_index(drop=True)
    if rows.empty:
        raise ValueError(f"{root / 'metadata.csv'} has no rows with split == {SPLIT_CODES[split]} ({split})")
    params = {"root": str(root.resolve()), "resolution": resolution, "resize": resize}
    fp_src = json.dumps({**params, "name": layout.name, "split": split, "n": len(rows),
                         "mtime": os.path.getmtime(root / "metadata.csv")}, sort_keys=True)
    fp = hashlib.sha256(fp_src.encode()).hexdigest()[:16]
    path = Path(cache_dir) / layout.name / f"{split}-{fp}.npy" if cache_dir is not None else None
    if path is not None and path.exists():
        images = np.load(path)
    else:
        images = np.stack([_load_image(root / f, resize, resolution) for f in rows["img_filename"]])
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.npy")
            np.save(tmp, images)
            os.replace(tmp, path)
    table = rows.set_index(pd.Index(rows["img_id"].to_numpy(), name="id"))[["y", "place", "img_filename"]]
    return GroupedDataset(name=layout.name, split=split,
                          images=torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))),
                          attributes=table, label_column="y", spurious_column="place",
                          class_names=layout.class_names, params=params)


def load_waterbirds(split: str, **params) -> GroupedDataset:
    return load_metadata_images(WATERBIRDS, split, **params)


def load_treeperson(split: str, **params) -> GroupedDataset:
    return load_metadata_images(TREEPERSON, split, **params)
