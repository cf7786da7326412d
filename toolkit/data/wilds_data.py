"""WILDS datasets (iWildCam, Camelyon17, FMoW, Amazon) through the `wilds` package's own
loaders, with v2 split names (train, val, test, id_val, id_test).

Only wilds' data loading is used; its evaluation needs torch_scatter, which has no wheel,
so metrics are the toolkit's (`metrics.EXTRA_METRICS` for each dataset's headline one).
Image splits stream from their files when they exceed 4 GiB decoded (iWildCam, Camelyon17
and FMoW train all do); smaller ones are decoded once and cached under cache/datasets.
Amazon's reviews are tokenised once per tokenizer and cached the same way.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from toolkit._util.paths import default_dir
from toolkit.data.base import GroupedDataset, TextDataset
from toolkit.data.image_files import FileImages, bit_sizes, crop_layout, materialise, save_array_atomic
from toolkit.errors import DataError, MissingFileError


@dataclass(frozen=True)
class WildsSpec:
    wilds_name: str
    folder: str  # the release folder under root, with its RELEASE_v*.txt marker
    layout: str  # what that folder holds, for the missing-data message
    group_columns: tuple[str, ...]
    extra_metrics: tuple[str, ...] = ()
    class_names: tuple[str, ...] | None = None


SPECS = {
    "iwildcam": WildsSpec("iwildcam", "iwildcam_v2.0",
                          "RELEASE_v2.0.txt, metadata.csv (split, filename, y, location_remapped, sequence_remapped, "
                          "datetime) and train/<filename>", ("location",), ("macro_f1",)),
    "camelyon17": WildsSpec("camelyon17", "camelyon17_v1.0",
                            "RELEASE_v1.0.txt, metadata.csv (patient, node, x_coord, y_coord, tumor, slide, center, "
                            "split) and patches/patient_P_node_N/patch_patient_P_node_N_x_X_y_Y.png",
                            ("hospital", "slide"), (), ("normal", "tumor")),
    "fmow": WildsSpec("fmow", "fmow_v1.1",
                      "RELEASE_v1.1.txt, rgb_metadata.csv (split, category, country_code, timestamp), "
                      "country_code_mapping.csv (alpha-3, region) and images/rgb_img_<i>.png",
                      ("region", "year"), ("worst_region",)),
    "amazon": WildsSpec("amazon", "amazon_v2.1",
                        "RELEASE_v2.1.txt, reviews.csv (reviewerID, asin, reviewText, category, reviewYear, overall, "
                        "...) and splits/user.csv (split)", ("user", "category", "product"), ("user_acc_p10",),
                        tuple(f"{k} star{'s' if k > 1 else ''}" for k in range(1, 6))),
}


def open_wilds(name: str, root: str | Path):
    """The `wilds` package's dataset object for `name`, read from `root` (never downloads)."""
    spec = SPECS[name]
    try:
        import wilds
    except ImportError as err:
        raise ImportError(f"{name} is read through the `wilds` package: pip install -e '.[wilds]'") from err
    root = Path(root)
    if not (root / spec.folder).is_dir():
        raise MissingFileError(
            f"{name}: no {spec.folder}/ under {root}. Expected the WILDS release: ROOT/{spec.folder}/ holding "
            f"{spec.layout}. Get it with `python -c \"import wilds; wilds.get_dataset('{spec.wilds_name}', "
            f"root_dir='ROOT', download=True)\"` (or https://wilds.stanford.edu/downloads), then pass "
            f"data.params.root=ROOT.")
    try:
        return wilds.get_dataset(dataset=spec.wilds_name, root_dir=str(root), download=False)
    except (KeyError, ValueError) as err:  # a column the loader needs is missing, or an unknown value
        raise DataError(f"{name}: {root / spec.folder} does not look like the WILDS release "
                         f"({type(err).__name__}: {err}). Expected {spec.layout}.") from err


def release_key(release: Path) -> str:
    """What a WILDS release holds, for cache keys (decoded images, tokens, and through the
    dataset's params every feature cache): the bytes of its top-level files (the metadata,
    and Amazon's reviews, text included) and the path and size of every file below them.
    Image bytes are not read: that would be 40 GB per load for iWildCam. Times are not used,
    so a copied release keeps its caches, and an edit that keeps a file's time still changes
    the key. Costs one walk of the release per load."""
    h = hashlib.sha256()
    for path in sorted(p for p in release.rglob("*") if p.is_file()):
        h.update(path.relative_to(release).as_posix().encode() + b"\0")
        if path.parent == release:
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        else:
            h.update(str(path.stat().st_size).encode())
    return h.hexdigest()[:16]


def _fingerprint(**parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _attributes(ds, rows: np.ndarray, spec: WildsSpec) -> pd.DataFrame:
    meta = ds.metadata_array[rows].numpy()
    table = pd.DataFrame(meta, columns=ds.metadata_fields, index=pd.Index(rows, name="id"))
    missing = [c for c in spec.group_columns if c not in table.columns]
    if missing:
        raise DataError(f"{spec.wilds_name}: metadata lacks {missing}; wilds gave {ds.metadata_fields}")
    return table[["y", *spec.group_columns]]


def load_wilds(name: str, split: str, *, root: str | Path = "data", resolution: int = 128, resize: int | None = None,
               cache_dir: str | Path | None = "auto", in_memory: bool | str = "auto",
               tokenizer: str = "roberta-large", max_length: int = 512, crop: str = "centre") -> GroupedDataset:
    """Split `split` of WILDS dataset `name` as a GroupedDataset (label column "y").

    Args:
        root: the folder holding the release folder (e.g. ROOT/iwildcam_v2.0/).
        resolution, resize: BiT resize-and-crop for images (see image_files.bit_sizes).
        crop: "centre" or "random" (BiT's and the paper's code's crops; see `crop_layout`).
        in_memory: True, False, "auto" (stream from files above 4 GiB decoded), or "disk" (decode
            once into a memory-mapped file; see image_files.materialise).
        tokenizer, max_length: Amazon only: the model's tokenizer (hub id or local folder)
            and the truncation length.
    """
    spec = SPECS[name]
    ds = open_wilds(name, root)
    if split not in ds.split_dict:
        raise DataError(f"{name}: unknown split {split!r}; valid splits: {', '.join(ds.split_dict)}")
    rows = np.flatnonzero(np.asarray(ds.split_array) == ds.split_dict[split])
    if len(rows) == 0:
        raise DataError(f"{name}: split {split!r} is empty in {Path(root) / spec.folder}")
    attributes = _attributes(ds, rows, spec)
    n_classes = int(ds.n_classes)
    class_names = spec.class_names or tuple(str(c) for c in range(n_classes))
    if name == "fmow":
        from wilds.datasets.fmow_dataset import categories

        class_names = tuple(categories)
    names_file = Path(ds.data_dir) / "categories.csv"  # iWildCam's release: y, category_id, name
    if name == "iwildcam" and names_file.exists():
        names = pd.read_csv(names_file)
        if {"y", "name"} <= set(names.columns):
            by_y = dict(zip(names["y"], names["name"].astype(str)))
            class_names = tuple(by_y.get(c, str(c)) for c in range(n_classes))
    common = dict(name=name, split=split, attributes=attributes, label_column="y", spurious_column=None,
                  class_names=class_names, group_columns=tuple(c for c in spec.group_columns),
                  extra_metrics=spec.extra_metrics)
    release = Path(ds.data_dir)
    content = release_key(release)
    cache_dir = default_dir(cache_dir, "datasets")
    if name == "amazon":
        tokens, pad_id = _tokenise(ds, rows, tokenizer, max_length, cache_dir,
                                   _fingerprint(name=name, split=split, n=len(rows), tok=tokenizer, L=max_length,
                                                content=content))
        return TextDataset(images=tokens, pad_id=pad_id, params={"root": str(release), "tokenizer": tokenizer,
                                                                 "max_length": max_length, "content": content},
                           **common)
    resize, resolution = bit_sizes(resolution, resize)
    stored, sizes = crop_layout(crop, resize, resolution)
    key = _fingerprint(split=split, n=len(rows), r=stored, s=resize, content=content)
    cache_path = Path(cache_dir) / name / f"{split}-{key}.npy" if cache_dir is not None else None
    lazy = FileImages(_WildsReader(ds, rows), len(rows), resize, stored)
    return GroupedDataset(images=materialise(lazy, cache_path, in_memory),
                          params={"root": str(release), "resolution": resolution, "resize": resize, "crop": crop,
                                  "content": content},
                          **common, **sizes)


class _WildsReader:
    """position in the split -> the wilds dataset's input; picklable for loader workers."""

    def __init__(self, ds, rows: np.ndarray) -> None:
        self.ds, self.rows = ds, rows

    def __call__(self, i: int):
        return self.ds.get_input(int(self.rows[i]))


def _tokenise(ds, rows: np.ndarray, tokenizer: str, max_length: int, cache_dir, fingerprint: str
              ) -> tuple[torch.Tensor, int]:
    from toolkit.data.tokenizers import load_tokenizer

    tok = load_tokenizer(tokenizer)
    path = Path(cache_dir) / "amazon" / f"tokens-{fingerprint}-v{len(tok)}.npy" if cache_dir is not None else None
    if path is not None and path.exists():
        return torch.from_numpy(np.load(path)), tok.pad_token_id
    texts = [ds.get_input(int(i)) for i in rows]
    ids = tok(texts, truncation=True, max_length=max_length, padding="max_length", return_tensors="np")["input_ids"]
    ids = ids.astype(np.int32)
    if path is not None:
        save_array_atomic(path, ids)
    return torch.from_numpy(ids), tok.pad_token_id
