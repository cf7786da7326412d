"""Tables that describe a dataset row by row (`csv_images`, `csv_text`): reading them, checking
every column and naming every bad row, and turning label x attributes into groups.

A table is a CSV (comma, tab or whitespace separated, sniffed), JSON lines (`.jsonl`), parquet
(`.parquet`), or CelebA's attribute-file format (`list_attr_celeba.txt`: a first line with the
row count, a header of attribute names, then one row per image starting with its file name,
read into the column `image_id`). Groups are label x the attributes: one attribute is the
spurious column itself; several are combined into one column named "a+b" (each kept for the
composition analyses). "Mismatched" exists only where `matched` says which attribute value
each label is spuriously matched with (one attribute).

With an id column the rows are taken in id order (`canonical_rows`), so a reordered table is
the same dataset; without one the id is the row number, and the order is part of the data.
Every split must hold every class of the table: a split without one is refused, as its
scores would cover the classes present only.
"""
from __future__ import annotations

import csv as _csv
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from toolkit.errors import DataError, MissingFileError

SPLITS = ("train", "val", "test")
DEFAULT_SPLIT_VALUES = {"train": ("train", "0"), "val": ("val", "valid", "validation", "1"), "test": ("test", "2")}


def read_table(path: Path) -> pd.DataFrame:
    """The table as strings: a CSV (separator sniffed) or CelebA's attribute-file format."""
    if not path.is_file():
        raise MissingFileError(f"{path}: no such table; pass csv=<file> relative to root (or an absolute path)")
    try:
        text = path.read_text() if path.suffix != ".parquet" else ""
    except UnicodeDecodeError:
        raise DataError(f"{path} is not a text table (it does not decode as UTF-8); expected a CSV with a header "
                        "row, or CelebA's list_attr_celeba.txt") from None
    if path.suffix in (".jsonl", ".parquet"):
        try:
            meta = pd.read_json(path, lines=True, dtype=False) if path.suffix == ".jsonl" else pd.read_parquet(path)
        except ValueError as err:
            raise DataError(f"{path} is not a readable {path.suffix[1:]} table ({str(err)[:100]})") from None
        if meta.empty:
            each = "JSON object per line" if path.suffix == ".jsonl" else "row per example"
            raise DataError(f"{path} has no rows; expected one {each}, with the label, the attributes and the "
                            "file or text")
        return meta.astype(object).where(meta.notna(), None).map(lambda v: None if v is None else str(v))
    lines = text.splitlines()
    if not lines or not "".join(lines).strip():
        raise DataError(f"{path} is empty; expected a header row and one row per image")
    if lines[0].strip().isdigit() and len(lines) > 1:  # CelebA: count, attribute names, then "file v1 v2 ..."
        names = lines[1].split()
        rows = [line.split() for line in lines[2:] if line.strip()]
        bad = [i for i, r in enumerate(rows) if len(r) != len(names) + 1]
        if bad:
            raise DataError(f"{path}: CelebA-format rows {bad[:5]} do not hold a file name and {len(names)} values")
        if not rows:
            raise DataError(f"{path}: a CelebA-format header but no rows; expected one row per image")
        return pd.DataFrame(rows, columns=["image_id", *names], dtype=str)
    try:
        meta = pd.read_csv(path, sep=None, engine="python", dtype=str, keep_default_na=False,
                           na_values=[""], skipinitialspace=True)
    except (pd.errors.ParserError, _csv.Error) as err:
        raise DataError(f"{path} is not a readable table ({type(err).__name__}: {str(err)[:100]})") from None
    if meta.empty:
        raise DataError(f"{path} has a header row ({', '.join(map(str, meta.columns[:12]))}) but no rows; "
                        "expected one row per example")
    return meta


def column(meta: pd.DataFrame, path: Path, column: str, what: str) -> pd.Series:
    """A column's values as stripped strings; a missing column or an empty cell is named (rows are
    counted from 0, the header not counted)."""
    if column not in meta.columns:
        raise DataError(f"{path} has no column {column!r} ({what}); its columns: {list(meta.columns)[:12]}"
                        + (" ..." if len(meta.columns) > 12 else ""))
    values = meta[column]
    bad = values.isna() | (values.astype(str).str.strip() == "")
    if bad.any():
        raise DataError(f"{path}: column {column!r} ({what}) is empty in rows {meta.index[bad][:5].tolist()}"
                        f"{' ...' if bad.sum() > 5 else ''} ({int(bad.sum())} rows); every row needs {what}: "
                        f"fill it in or drop the row")
    return values.astype(str).str.strip()


def _ids(meta: pd.DataFrame, path: Path, id_column: str) -> np.ndarray:
    """The id column as unique int64 ids, every bad or repeated one named."""
    ids = pd.to_numeric(column(meta, path, id_column, "the id"), errors="coerce")
    bad = ids.isna() | (ids != ids.round())
    if bad.any():
        raise DataError(f"{path}: column {id_column!r} must hold integers; rows {meta.index[bad][:5].tolist()} "
                        f"hold {meta.loc[bad, id_column].head(5).tolist()}")
    ids = ids.astype(np.int64).to_numpy()
    dup = pd.Series(ids)[pd.Series(ids).duplicated(keep=False)]
    if len(dup):
        raise DataError(f"{path}: ids must be unique; {sorted(set(dup.tolist()))[:5]} appear more than once")
    return ids


def canonical_rows(meta: pd.DataFrame, path: Path, id_column: str | None) -> tuple[pd.DataFrame, bytes]:
    """The table in its canonical order, and the bytes its content digest is taken of.

    With an id column the rows are sorted by id (each keeps its row number as its index, for
    messages), and the digest is of the sorted table: the same rows in another order give the
    same dataset, random split, seed set and cache keys. Without one, the id is the row number,
    so the order is part of the data: the table's file bytes, as they are."""
    if id_column is None:
        return meta, path.read_bytes()
    meta = meta.iloc[np.argsort(_ids(meta, path, id_column), kind="stable")]
    columns = sorted(map(str, meta.columns))  # the columns' order in the file is no more data than the rows'
    content = pd.util.hash_pandas_object(meta[columns], index=False).to_numpy().tobytes()
    return meta, "\x1f".join(columns).encode() + content


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
        values = column(meta, path, split_column, "the split")
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


@dataclass
class GroupedRows:
    """One split's rows of a checked table: `table` (indexed by id) holds the label code, the
    spurious code and, with several attributes, each attribute's code; `rows` are positions in
    the table as passed (`canonical_rows` order), for the loader's own columns (file, text)."""

    table: pd.DataFrame
    rows: np.ndarray
    spurious_column: str
    group_columns: tuple[str, ...]
    class_names: tuple[str, ...]
    matched: bool
    params: dict


def grouped_rows(meta: pd.DataFrame, path: Path, split: str, *, label_column: str, attributes: Sequence[str],
                 matched: Mapping | None, id_column: str | None, split_column: str | None,
                 split_values: Mapping | None, split_fractions: Sequence[float], split_seed: int) -> GroupedRows:
    """Check the label, attribute, id and split columns and return the split's grouped rows."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    attributes = [attributes] if isinstance(attributes, str) else list(attributes)
    if not attributes:
        raise DataError("attributes must name at least one column (the groups are label x attributes)")
    label_values = column(meta, path, label_column, "the label")
    ids = _ids(meta, path, id_column) if id_column is not None else np.arange(len(meta), dtype=np.int64)
    _check_whole(label_values, path, label_column, ids if id_column is not None else None)
    labels, class_values = _codes(label_values)
    if len(class_values) < 2:
        raise DataError(f"{path}: column {label_column!r} holds one value ({class_values}); a label needs two or more")
    codes = {a: _codes(column(meta, path, a, "a group attribute")) for a in attributes}
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
    _check_every_class(labels, keep, class_values, path, split, label_column,
                       "split_column" if split_column is not None else "split_fractions")
    if split != "train":  # the pool may lack a group; a split that scores the groups may not
        _check_every_group(meta, labels, spurious, keep, path, split, [label_column, *attributes],
                           "split_column" if split_column is not None else "split_fractions")
    table = pd.DataFrame({label_column: labels, spurious_column: spurious}, index=pd.Index(ids, name="id"))
    for a in attributes if len(attributes) > 1 else ():
        table[a] = codes[a][0]
    params = {"label_column": label_column, "attributes": attributes,
              "matched": None if matched is None else {str(k): str(v) for k, v in matched.items()},
              "id_column": id_column, "split_column": split_column, "split_fractions": list(split_fractions),
              "split_seed": split_seed}
    return GroupedRows(table[keep], np.flatnonzero(keep), spurious_column,
                       tuple(attributes) if len(attributes) > 1 else (),
                       tuple(f"{label_column}={v}" for v in class_values), matched is not None, params)


def _check_whole(values: pd.Series, path: Path, label_column: str, ids: np.ndarray | None) -> None:
    """Refuse numeric labels that are not whole numbers: 0.5 would become a class of its own."""
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(float)
    if np.isnan(numbers).any():
        return  # class names (text); every distinct value is a class
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(numbers) | (numbers != np.round(numbers))
    if bad.any():
        where = f"rows {values.index[bad][:5].tolist()}"
        if ids is not None:
            where += f" (ids {ids[bad][:5].tolist()})"
        raise DataError(f"{path}: column {label_column!r} (the label) holds {values[bad].head(5).tolist()} in {where}"
                        f"{' ...' if bad.sum() > 5 else ''}; labels must be whole numbers (class codes 0..K-1, or "
                        "any integers such as -1/1) or class names, one per example. A fractional label is not a "
                        "class: round or map those rows, or drop them")


def _check_every_class(labels: np.ndarray, keep: np.ndarray, class_values: list[str], path: Path, split: str,
                       label_column: str, how: str) -> None:
    """Refuse a split that lacks a class of the table: its accuracy, balanced accuracy,
    worst-group and mismatched would be taken over the groups present only, silently."""
    counts = np.bincount(labels[keep], minlength=len(class_values))
    absent = [f"{label_column}={class_values[c]}" for c in np.flatnonzero(counts == 0)]
    if absent:
        fix = ("assign rows of it to this split in the split column" if how == "split_column" else
               "change split_seed or split_fractions, or give a split column")
        classes = ", ".join(f"{label_column}={v}" for v in class_values)
        raise DataError(
            f"{path}: split {split!r} ({int(keep.sum())} rows) has no example of class {', '.join(absent)}, which "
            f"the table holds (classes {classes}); its accuracy, balanced accuracy, worst-group and mismatched "
            f"would cover the classes present only. Give every split examples of every class ({fix}), or drop "
            f"the class from the table")


def _check_every_group(meta: pd.DataFrame, labels: np.ndarray, spurious: np.ndarray, keep: np.ndarray, path: Path,
                       split: str, columns: list[str], how: str) -> None:
    """Refuse an evaluation split that lacks a (label, attribute) group the table holds: its
    worst-group and mismatched accuracy would be taken over the groups present only, silently."""
    groups = labels.astype(np.int64) * (int(spurious.max()) + 1) + spurious
    absent = sorted(set(groups.tolist()) - set(groups[keep].tolist()))
    if absent:
        first = [int(np.flatnonzero(groups == g)[0]) for g in absent]
        names = ["(" + ", ".join(f"{c}={meta[c].iloc[i]}" for c in columns) + ")" for i in first]
        fix = ("assign rows of it to this split in the split column" if how == "split_column" else
               "change split_seed or split_fractions, or give a split column")
        raise DataError(
            f"{path}: split {split!r} ({int(keep.sum())} rows) has no example of the group{'s' * (len(names) > 1)} "
            f"{', '.join(names)}, which the table holds; its worst-group and mismatched accuracy would cover the "
            f"groups present only. Give every evaluation split examples of every group ({fix}), or drop the group "
            f"from the table")


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
