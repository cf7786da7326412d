"""`csv_images`: a folder of images plus a table that names, per image, its file, its label and
the attributes that define the groups (CelebA, a user's own photos, an exported composite).

The table's formats, its checks and the grouping are `toolkit.data.tables`. Decoded images are
cached by content (the table's bytes and every image file's bytes), as for Waterbirds.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Mapping, Sequence

from toolkit._util.paths import default_dir
from toolkit.data.base import GroupedDataset
from toolkit.data.image_files import FileImages, PathReader, bit_sizes, crop_layout, materialise
from toolkit.data.registry import register_dataset
from toolkit.data.tables import canonical_rows, column, grouped_rows, read_table
from toolkit.errors import MissingFileError


@register_dataset("csv_images")
def load_csv_images(split: str, *, root: str | Path, csv: str = "metadata.csv", file_column: str = "file",
                    label_column: str = "label", attributes: Sequence[str] = ("attribute",),
                    matched: Mapping | None = None, id_column: str | None = None, split_column: str | None = None,
                    split_values: Mapping | None = None, split_fractions: Sequence[float] = (0.6, 0.2, 0.2),
                    split_seed: int = 0, resolution: int = 128, resize: int | None = None, crop: str = "centre",
                    cache_dir: str | Path | None = "auto", in_memory: bool | str = "auto") -> GroupedDataset:
    """One split of a folder of images described by a table.

    Args:
        split: "train" (the pool), "val" or "test".
        root: the folder; `csv` and the file names are relative to it.
        csv: the table (default `metadata.csv`; CSV, .jsonl, .parquet or CelebA's format).
        file_column, label_column: the image path and the label (any values; classes are
            their sorted distinct values, e.g. CelebA's -1 and 1).
        attributes: one or more columns that, with the label, define the groups.
        matched: {label value: attribute value}, the spurious pairing (one attribute only),
            e.g. {"1": "1", "-1": "-1"}; None: no mismatched groups are defined.
        id_column: a column of unique integer ids (default: the row number). With ids the rows
            are taken in id order, so the same rows in another order give the same dataset, split,
            seed set and cache keys; without, the order is part of the data.
        split_column, split_values: the split from a column, {split: value or [values]}
            (default: train/val/test or 0/1/2); without split_column the rows are split
            at random by `split_fractions` (train, val, test) with `split_seed`.
        resolution, resize, crop, cache_dir, in_memory: as for Waterbirds (BiT's transform).

    Examples:
        >>> from toolkit.data import dataset_parameters
        >>> "attributes" in dataset_parameters("csv_images")
        True
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"csv_images: root {root} is not a folder")
    resize, resolution = bit_sizes(resolution, resize)
    stored, sizes = crop_layout(crop, resize, resolution)
    path = root / csv
    meta, table_bytes = canonical_rows(read_table(path), path, id_column)
    files = column(meta, path, file_column, "the image file")
    rows = grouped_rows(meta, path, split, label_column=label_column, attributes=attributes, matched=matched,
                        id_column=id_column, split_column=split_column, split_values=split_values,
                        split_fractions=split_fractions, split_seed=split_seed)
    table = rows.table.assign(file=files.to_numpy()[rows.rows])
    missing = [f for f in table["file"] if not (root / f).is_file()]
    if missing:
        raise MissingFileError(f"{path}: {len(missing)} image file(s) of split {split!r} are missing or not files "
                               f"under {root}, e.g. {missing[:3]}")
    digest = hashlib.sha256(table_bytes)
    for f in table["file"]:
        digest.update(f.encode())
        digest.update((root / f).read_bytes())
    params = {"root": str(root.resolve()), "csv": csv, "file_column": file_column, **rows.params,
              "resolution": resolution, "resize": resize, "crop": crop, "content": digest.hexdigest()[:16]}
    fp = hashlib.sha256(json.dumps({**params, "split": split, "ids": table.index.tolist()}, sort_keys=True,
                                   default=str).encode()).hexdigest()[:16]
    cache_dir = default_dir(cache_dir, "datasets")
    cache_path = Path(cache_dir) / "csv_images" / f"{split}-{fp}.npy" if cache_dir is not None else None
    images = materialise(FileImages(PathReader(root, table["file"].tolist()), len(table), resize, stored),
                         cache_path, in_memory)
    return GroupedDataset(name="csv_images", split=split, images=images, attributes=table, label_column=label_column,
                          spurious_column=rows.spurious_column, class_names=rows.class_names, params=params,
                          group_columns=rows.group_columns, matched=rows.matched, **sizes)
