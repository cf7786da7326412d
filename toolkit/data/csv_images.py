"""`csv_images`: a folder of images plus a table that names, per image, its label and the
attributes that define the groups (CelebA, a user's own photos, an exported composite).

The table is a CSV (comma, tab or whitespace separated, sniffed) or CelebA's attribute-file
format (`list_attr_celeba.txt`: a first line with the row count, a header of attribute names,
then one row per image starting with its file name, read into the column `image_id`).
Every column is checked and every bad row is named, as in the Waterbirds loader; decoded
images are cached by content (the table's bytes and every image file's bytes).

Groups are label x the attributes: one attribute is the spurious column itself; several are
combined into one column named "a+b" (each kept for the composition analyses). "Mismatched"
exists only where `matched` says which attribute value each label is spuriously matched with
(one attribute); otherwise runs report worst-group and per-group accuracy only.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from toolkit._util.paths import default_dir
from toolkit.data.base import GroupedDataset
from toolkit.data.image_files import FileImages, PathReader, bit_sizes, crop_layout, materialise
from toolkit.errors import DataError, MissingFileError

SPLITS = ("train", "val", "test")
DEFAULT_SPLIT_VALUES = {"train": ("train", "0"), "val": ("val", "valid", "validation", "1"), "test": ("test", "2")}


def read_table(path: Path) -> pd.DataFrame:
    """The table as strings: a CSV (separator sniffed) or CelebA's attribute-file format."""
    if not path.is_file():
        raise MissingFileError(f"{path}: no such table; pass csv=<file> relative to root (or an absolute path)")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise DataError(f"{path} is not a text table (it does not decode as UTF-8); expected a CSV with a header "
                        "row, or CelebA's list_attr_celeba.txt") from None
    lines = text.splitlines()
    if not lines or not "".join(lines).strip():
        raise DataError(f"{path} is empty; expected a header row and one row per image")
    if lines[0].strip().isdigit() and len(lines) > 1:  # CelebA: count, attribute names, then "file v1 v2 ..."
        names = lines[1].split()
        rows = [line.split() for line in lines[2:] if line.strip()]
        bad = [i for i, r in enumerate(rows) if len(r) != len(names) + 1]
        if bad:
            raise DataError(f"{path}: CelebA-format rows {bad[:5]} do not hold a file name and {len(names)} values")
        return pd.DataFrame(rows, columns=["image_id", *names], dtype=str)
    try:
        return pd.read_csv(path, sep=None, engine="python", dtype=str, keep_default_na=False,
                           na_values=[""], skipinitialspace=True)
    except (pd.errors.ParserError, csv_error()) as err:
        raise DataError(f"{path} is not a readable table ({type(err).__name__}: {str(err)[:100]})") from None


def csv_error():
    import csv

    return csv.Error


def _column(meta: pd.DataFrame, path: Path, column: str, what: str) -> pd.Series:
    if column not in meta.columns:
        raise DataError(f"{path} has no column {column!r} ({what}); its columns: {list(meta.columns)[:12]}"
                        + (" ..." if len(meta.columns) > 12 else ""))
    values = meta[column]
    bad = values.isna() | (values.astype(str).str.strip() == "")
    if bad.any():
        raise DataError(f"{path}: column {column!r} ({what}) is empty in rows {meta.index[bad][:5].tolist()}"
                        f"{' ...' if bad.sum() > 5 else ''} ({int(bad.sum())} rows); every image needs one")
    return values.astype(str).str.strip()


def _codes(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Codes 0..k-1 in sorted order (numerically where every value is a number)."""
    uniq = list(pd.unique(values))
    try:
        uniq.sort(key=float)
    except ValueError:
        uniq.sort()
    lookup = {v: i for i, v in enumerate(uniq)}
    return values.map(lookup).to_numpy(np.int64), uniq


def _split_rows(meta: pd.DataFrame, path: Path, split_column: str | None, split_values: Mapping | None,
                split_fractions: Sequence[float], split_seed: int) -> pd.Series:
    """Each row's split name."""
    if split_column is not None:
        values = _column(meta, path, split_column, "the split")
        wanted = {s: tuple(str(v) for v in (vs if isinstance(vs, (list, tuple)) else [vs]))
                  for s, vs in (split_values or DEFAULT_SPLIT_VALUES).items()}
        unknown = [s for s in wanted if s not in SPLITS]
        if unknown:
            raise DataError(f"split_values: unknown split(s) {unknown}; valid: {', '.join(SPLITS)}")
        lookup = {v: s for s, vs in wanted.items() for v in vs}
        named = values.map(lookup)
        if named.isna().any():
            bad = meta.index[named.isna()][:5].tolist()
            raise DataError(f"{path}: column {split_column!r} holds {values[named.isna()].head(5).tolist()} in rows "
                            f"{bad}, which split_values does not map ({wanted}); map every value or drop the rows")
        return named
    fractions = [float(f) for f in split_fractions]
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6 or fractions[0] == 0:
        raise DataError(f"split_fractions must be three shares (train, val, test) that sum to 1, train > 0; got "
                        f"{list(split_fractions)}")
    order = np.random.default_rng(split_seed).permutation(len(meta))
    cuts = np.round(np.cumsum(fractions) * len(meta)).astype(int)
    names = np.empty(len(meta), dtype=object)
    for name, lo, hi in zip(SPLITS, [0, *cuts[:2]], cuts):
        names[order[lo:hi]] = name
    return pd.Series(names, index=meta.index)


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
        csv: the table (default `metadata.csv`).
        file_column, label_column: the image path and the label (any values; classes are
            their sorted distinct values, e.g. CelebA's -1 and 1).
        attributes: one or more columns that, with the label, define the groups.
        matched: {label value: attribute value}, the spurious pairing (one attribute only),
            e.g. {"1": "1"} and {"-1": "-1"}; None: no mismatched groups are defined.
        id_column: a column of unique integer ids (default: the row number).
        split_column, split_values: the split from a column, {split: value or [values]}
            (default: train/val/test or 0/1/2); without split_column the rows are split
            at random by `split_fractions` with `split_seed`.
        resolution, resize, crop, cache_dir, in_memory: as for Waterbirds (BiT's transform).
    """
    if split not in SPLITS:
        raise DataError(f"csv_images: unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    attributes = [attributes] if isinstance(attributes, str) else list(attributes)
    if not attributes:
        raise DataError("csv_images: attributes must name at least one column (the groups are label x attributes)")
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"csv_images: root {root} is not a folder")
    path = root / csv
    meta = read_table(path)
    files = _column(meta, path, file_column, "the image file")
    labels, class_values = _codes(_column(meta, path, label_column, "the label"))
    if len(class_values) < 2:
        raise DataError(f"{path}: column {label_column!r} holds one value ({class_values}); a label needs two or more")
    codes = {a: _codes(_column(meta, path, a, "a group attribute")) for a in attributes}
    if id_column is not None:
        ids = pd.to_numeric(_column(meta, path, id_column, "the id"), errors="coerce")
        bad = ids.isna() | (ids != ids.round())
        if bad.any():
            raise DataError(f"{path}: column {id_column!r} must hold integers; rows {meta.index[bad][:5].tolist()} "
                            f"hold {meta.loc[bad, id_column].head(5).tolist()}")
        ids = ids.astype(np.int64).to_numpy()
    else:
        ids = np.arange(len(meta), dtype=np.int64)
    dup = pd.Series(ids)[pd.Series(ids).duplicated(keep=False)]
    if len(dup):
        raise DataError(f"{path}: ids must be unique; {sorted(set(dup.tolist()))[:5]} appear more than once")
    if len(attributes) == 1:
        spurious_column, spurious = attributes[0], codes[attributes[0]][0]
    else:  # one combined attribute, mixed radix over the attributes' codes
        spurious_column, spurious = "+".join(attributes), np.zeros(len(meta), np.int64)
        for a in attributes:
            spurious = spurious * len(codes[a][1]) + codes[a][0]
    if matched is not None:
        spurious = _pair(matched, attributes, codes, class_values, spurious, path)
    names = _split_rows(meta, path, split_column, split_values, split_fractions, split_seed)
    keep = (names == split).to_numpy()
    if not keep.any():
        raise DataError(f"{path}: no rows in split {split!r}")
    table = pd.DataFrame({label_column: labels, spurious_column: spurious, "file": files.to_numpy()},
                         index=pd.Index(ids, name="id"))
    for a in attributes if len(attributes) > 1 else ():
        table[a] = codes[a][0]
    table = table[keep]
    missing = [f for f in table["file"] if not (root / f).is_file()]
    if missing:
        raise MissingFileError(f"{path}: {len(missing)} image file(s) of split {split!r} are missing or not files "
                               f"under {root}, e.g. {missing[:3]}")
    digest = hashlib.sha256(path.read_bytes())
    for f in table["file"]:
        digest.update(f.encode())
        digest.update((root / f).read_bytes())
    resize, resolution = bit_sizes(resolution, resize)
    stored, sizes = crop_layout(crop, resize, resolution)
    params = {"root": str(root.resolve()), "csv": csv, "file_column": file_column, "label_column": label_column,
              "attributes": attributes, "matched": None if matched is None else {str(k): str(v) for k, v in
                                                                                  matched.items()},
              "id_column": id_column, "split_column": split_column, "split_fractions": list(split_fractions),
              "split_seed": split_seed, "resolution": resolution, "resize": resize, "crop": crop,
              "content": digest.hexdigest()[:16]}
    fp = hashlib.sha256(json.dumps({**params, "split": split, "ids": table.index.tolist()}, sort_keys=True,
                                   default=str).encode()).hexdigest()[:16]
    cache_dir = default_dir(cache_dir, "datasets")
    cache_path = Path(cache_dir) / "csv_images" / f"{split}-{fp}.npy" if cache_dir is not None else None
    images = materialise(FileImages(PathReader(root, table["file"].tolist()), len(table), resize, stored),
                         cache_path, in_memory)
    return GroupedDataset(name="csv_images", split=split, images=images, attributes=table, label_column=label_column,
                          spurious_column=spurious_column, class_names=tuple(f"{label_column}={v}" for v in class_values),
                          params=params, group_columns=tuple(attributes) if len(attributes) > 1 else (),
                          matched=matched is not None, **sizes)


def _pair(matched: Mapping, attributes: list[str], codes: dict, class_values: list[str], spurious: np.ndarray,
          path: Path) -> np.ndarray:
    """Recode the attribute so that "label code == attribute code" marks a matched example."""
    if len(attributes) != 1:
        raise DataError(f"matched pairs label values with one attribute's values; {len(attributes)} attributes were "
                        "given. Leave matched unset (worst-group and per-group metrics only)")
    values = codes[attributes[0]][1]
    pairs = {str(k): str(v) for k, v in matched.items()}
    if sorted(pairs) != sorted(class_values) or sorted(pairs.values()) != sorted(values) \
            or len(set(pairs.values())) != len(pairs):
        raise DataError(f"{path}: matched must pair every label value {class_values} with a distinct value of "
                        f"{attributes[0]!r} {values}, one to one; got {pairs}")
    to_label = {values.index(v): class_values.index(k) for k, v in pairs.items()}
    return np.array([to_label[s] for s in spurious], np.int64)
