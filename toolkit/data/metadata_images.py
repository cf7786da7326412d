"""Image datasets described by a `metadata.csv`: Waterbirds (group_DRO and WILDS releases)
and Treeperson. Images are decoded once, resized and centre-cropped the BiT way (resize to
`resize`, crop `resolution`), and cached under cache/ by a fingerprint, like the toy world.

A split is held in memory as uint8 when it fits (Waterbirds train at 480 px: ~3.3 GB);
larger ones stream from their files (`in_memory`, see image_files.materialise).
"""
from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from toolkit._util.paths import default_dir
from toolkit.data.base import GroupedDataset
from toolkit.data.image_files import FileImages, PathReader, bit_sizes, crop_layout, materialise
from toolkit.data.registry import register_dataset
from toolkit.errors import DataError, MissingFileError

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
    raise MissingFileError(
        f"{layout.name}: no metadata.csv under {root} (looked in: "
        f"{', '.join(str(root / s) for s in layout.subfolder_candidates)}). Expected layout: "
        f"ROOT/metadata.csv with columns {', '.join(REQUIRED)} (split 0 train, 1 val, 2 test) and the images at "
        f"ROOT/<img_filename>. Get it from {layout.where}, then pass data.params.root=ROOT."
    )


def read_metadata(layout: MetadataLayout, root: Path) -> pd.DataFrame:
    """metadata.csv, checked column by column: every error names the file, the column and
    (the first few) rows, and says what the column must hold."""
    path = root / "metadata.csv"
    try:
        meta = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty; expected a header {', '.join(REQUIRED)} and one row per image") from None
    except (UnicodeDecodeError, pd.errors.ParserError) as err:  # a binary or garbled file
        raise DataError(f"{path} is not a readable CSV text file ({type(err).__name__}: {str(err)[:100]}); expected "
                        f"a header {', '.join(REQUIRED)} and one comma-separated row per image") from None
    missing = [c for c in REQUIRED if c not in meta.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {missing}; it has {list(meta.columns)}. "
                         f"Expected {', '.join(REQUIRED)}")
    if meta.empty:
        raise DataError(f"{path} has a header but no rows")
    valid = {"y": range(len(layout.class_names)), "place": range(2), "split": sorted(SPLIT_CODES.values()),
             "img_id": None}
    for column, allowed in valid.items():
        values = pd.to_numeric(meta[column], errors="coerce")
        bad = values.isna() | (values != values.round())
        if allowed is not None:
            bad |= ~values.isin(list(allowed))
        if bad.any():
            rows = meta.index[bad][:5].tolist()
            want = (f"integers in {min(allowed)}..{max(allowed)}" if allowed is not None else "integers")
            raise DataError(f"{path}: column {column!r} must hold {want}; rows {rows} hold "
                             f"{meta.loc[bad, column].head(5).tolist()}")
        meta[column] = values.astype(np.int64)
    names = meta["img_filename"]
    bad = names.isna() | ~names.map(lambda v: isinstance(v, str) and v.strip() != "")
    if bad.any():
        raise DataError(f"{path}: column 'img_filename' must hold a relative image path in every row; rows "
                        f"{meta.index[bad][:5].tolist()} hold {names[bad].head(5).tolist()}")
    duplicated = meta["img_id"][meta["img_id"].duplicated(keep=False)]
    if len(duplicated):
        raise DataError(f"{path}: img_id must be unique; {sorted(set(duplicated.tolist()))[:5]} appear more than once")
    return meta


def load_metadata_images(layout: MetadataLayout, split: str, *, root: str | Path, resolution: int = 128,
                         resize: int | None = None, cache_dir: str | Path | None = "auto",
                         in_memory: bool | str = "auto", matched_fraction: float | None = None,
                         resample_seed: int = 0, crop: str = "centre") -> GroupedDataset:
    """One split as a GroupedDataset (label column "y", spurious column "place").

    `crop`: "centre" or "random" (BiT's and the paper's code's crops; see `crop_layout`).

    `matched_fraction` resamples the training pool to that share of matched examples
    (label == place) in every class, from the existing images: the dose-response variants
    of Waterbirds (see `resample_matched`). Other splits keep their own mix (a run passes
    the same options to every split)."""
    if split not in layout.splits:
        raise DataError(f"{layout.name}: unknown split {split!r}; valid splits: {', '.join(layout.splits)}")
    resize, resolution = bit_sizes(resolution, resize)
    stored, sizes = crop_layout(crop, resize, resolution)
    root = find_root(layout, root)
    meta = read_metadata(layout, root)
    rows = meta[meta["split"] == SPLIT_CODES[split]].reset_index(drop=True)
    if rows.empty:
        raise DataError(f"{root / 'metadata.csv'} has no rows with split == {SPLIT_CODES[split]} ({split})")
    params = {"root": str(root.resolve()), "resolution": resolution, "resize": resize, "crop": crop}
    if matched_fraction is not None and split == "train":
        n_before = len(rows)
        rows = resample_matched(rows, matched_fraction, seed=resample_seed)
        params.update(matched_fraction=matched_fraction, resample_seed=resample_seed)
        warnings.warn(f"{layout.name}: matched_fraction={matched_fraction} resampled the training pool from "
                      f"{n_before} to {len(rows)} existing images (no new ones); the paper regenerated each variant "
                      f"at full size. Runs refuse to label more than al.max_resampled_share of it.", stacklevel=2)
    params["content"] = content_digest(root, rows["img_filename"].tolist())
    fp_src = json.dumps({**params, "name": layout.name, "split": split, "ids": rows["img_id"].tolist(),
                         "layout": "nchw"}, sort_keys=True)
    fp = hashlib.sha256(fp_src.encode()).hexdigest()[:16]
    cache_dir = default_dir(cache_dir, "datasets")
    cache_path = Path(cache_dir) / layout.name / f"{split}-{fp}.npy" if cache_dir is not None else None
    images = materialise(FileImages(PathReader(root, rows["img_filename"].tolist()), len(rows), resize, stored),
                         cache_path, in_memory)
    table = rows.set_index(pd.Index(rows["img_id"].to_numpy(), name="id"))[["y", "place", "img_filename"]]
    return GroupedDataset(name=layout.name, split=split, images=images, attributes=table, label_column="y",
                          spurious_column="place", class_names=layout.class_names, params=params, **sizes)


def content_digest(root: Path, files: list[str]) -> str:
    """sha256 over metadata.csv and the split's image files, byte for byte: a decoded
    cache (and every feature cache, through the dataset's params) is reused only for the
    same content, not merely the same names and times. Costs one read of the split's files
    per load (not timed on the real Waterbirds here: no copy on this machine)."""
    h = hashlib.sha256((root / "metadata.csv").read_bytes())
    for name in files:
        path = root / name
        if path.is_dir():
            raise DataError(f"{root / 'metadata.csv'}: img_filename {name!r} is a folder ({path}), not an image file")
        if path.exists():  # a missing image is reported, with its name, when it is decoded
            h.update(name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def resample_matched(rows: pd.DataFrame, fraction: float, *, seed: int = 0) -> pd.DataFrame:
    """The largest subset of `rows` in which, within every class, `fraction` of the examples
    are matched (label == place); drawn reproducibly from `seed`, no new images.

    Per class with m matched and u mismatched rows, it keeps min(m, u * f / (1 - f))
    matched and min(u, m * (1 - f) / f) mismatched, so the class keeps as many rows as the
    target mix allows. Row order (and so ids) follows the original table."""
    if not 0 < fraction < 1:
        raise DataError(f"matched_fraction must lie in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    keep = []
    for y, g in rows.groupby("y", sort=True):
        matched, mismatched = g.index[g["place"] == y], g.index[g["place"] != y]
        n_m = min(len(matched), int(np.floor(len(mismatched) * fraction / (1 - fraction) + 1e-9)))
        n_u = min(len(mismatched), int(np.floor(n_m * (1 - fraction) / fraction + 1e-9)))
        if n_m == 0 or n_u == 0:
            raise DataError(f"class {y}: cannot reach a matched fraction of {fraction} from {len(matched)} matched "
                             f"and {len(mismatched)} mismatched examples")
        keep += list(rng.choice(matched, n_m, replace=False)) + list(rng.choice(mismatched, n_u, replace=False))
    return rows.loc[sorted(keep)].reset_index(drop=True)


@register_dataset("waterbirds", options_from=load_metadata_images)
def load_waterbirds(split: str, **params) -> GroupedDataset:
    return load_metadata_images(WATERBIRDS, split, **params)


@register_dataset("treeperson", options_from=load_metadata_images)
def load_treeperson(split: str, **params) -> GroupedDataset:
    return load_metadata_images(TREEPERSON, split, **params)
