"""Feature caches written from arrays: the derived caches of `features.interventions` and
the synthetic ones of `features.synthetic`.

They have the layout of an extracted cache (see `features.cache`): ids, chunked embeddings
with a sha256 per chunk, the attribute table and its schema, a fingerprint, sealed by
`seal_content`. So `open_cache`, the probe, the measures and the report read them unchanged.
Each is written whole into a temporary file and renamed (`atomic_path`), under the cache's
lock, and reused when a cache of the same fingerprint is asked for again.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pandas as pd

from toolkit._util.atomic import atomic_path
from toolkit._util.locks import exclusive
from toolkit._util.paths import cache_path
from toolkit.errors import CacheError
from toolkit.features.cache import (
    FeatureCache,
    chunk_digest,
    fingerprint_digest,
    open_cache,
    seal_content,
    write_attributes,
)


@dataclass(frozen=True)
class AttributeTable:
    """A cache's attribute table and its schema (what `GroupedDataset` declares).

    Args:
        attributes: one row per example, in the order of the ids; the label column and the attributes.
        label_column: the label's column.
        spurious_column: the spuriously correlated attribute's column (None: none).
        class_names: one name per class.
        group_columns: further attributes the analyses may report.
        extra_metrics: names in `metrics.EXTRA_METRICS`.
        matched: whether label == spurious marks a matched example.
    """

    attributes: pd.DataFrame
    label_column: str
    spurious_column: str | None
    class_names: tuple[str, ...]
    group_columns: tuple[str, ...] = ()
    extra_metrics: tuple[str, ...] = ()
    matched: bool = True

    @classmethod
    def of(cls, cache: FeatureCache) -> "AttributeTable":
        """The table of an opened cache, to write beside new features of the same examples."""
        return cls(cache.attributes, cache.label_column, cache.spurious_column, tuple(cache.class_names),
                   tuple(cache.group_columns), tuple(cache.extra_metrics), bool(cache.matched))


def write_cache(path: str | Path, *, fingerprint: dict, ids: np.ndarray, embeddings: np.ndarray,
                table: AttributeTable, outcome: dict | None = None, chunk_rows: int = 1024) -> Path:
    """Write a finished, sealed feature cache from arrays, atomically.

    Args:
        path: the cache file (its folder must exist).
        fingerprint: what produced the features (JSON-serialisable).
        ids: (N,) stable integer ids.
        embeddings: (N, D) features, stored as float32.
        table: the attribute table, one row per id, and its schema.
        outcome: what the computation found (e.g. a calibrated amplitude), stored beside the
            fingerprint for the record; not part of what names the cache.
        chunk_rows: rows per stored chunk (and per sha256).

    Returns:
        `path`.

    Examples:
        >>> import tempfile, numpy as np, pandas as pd
        >>> from pathlib import Path
        >>> table = AttributeTable(pd.DataFrame({"y": [0, 1, 0, 1]}), "y", None, ("a", "b"))
        >>> out = write_cache(Path(tempfile.mkdtemp()) / "x.h5", fingerprint={"model": "none"},
        ...                   ids=np.arange(4), embeddings=np.eye(4), table=table)
        >>> open_cache(out).embeddings.shape
        (4, 4)
    """
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    ids = np.asarray(ids, dtype=np.int64)
    if emb.ndim != 2 or len(emb) != len(ids) or len(table.attributes) != len(ids) or not len(ids):
        raise CacheError(f"a cache needs (N, D) embeddings with one id and one attribute row per row, N >= 1; got "
                         f"embeddings {emb.shape}, {len(ids)} ids, {len(table.attributes)} attribute rows")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["fingerprint"] = json.dumps(fingerprint, sort_keys=True)
        f.create_dataset("ids", data=ids)
        f.create_dataset("embeddings", data=emb, chunks=(min(chunk_rows, len(emb)), emb.shape[1]))
        # the same digest per chunk that extraction writes and open_cache checks
        digests = [chunk_digest(emb[lo:lo + chunk_rows]) for lo in range(0, len(emb), chunk_rows)]
        f.create_dataset("chunk_sha256", data=np.array(digests, dtype="S64"))
        f.attrs["chunk_rows"] = chunk_rows
        write_attributes(f.create_group("attributes"), table)
        if outcome is not None:
            f.attrs["outcome"] = json.dumps(outcome, sort_keys=True)
        f.attrs["rows_done"] = len(emb)
        seal_content(f)
        f.attrs["complete"] = True
    return Path(path)


def read_outcome(path: str | Path) -> dict:
    """What the computation of a written cache found (`write_cache`'s `outcome`), e.g. the
    amplitude and separability an injection was calibrated to; {} when none was stored.

    Args:
        path: a cache written by `write_cache`.

    Examples:
        >>> import tempfile, numpy as np, pandas as pd
        >>> from pathlib import Path
        >>> table = AttributeTable(pd.DataFrame({"y": [0, 1]}), "y", None, ("a", "b"))
        >>> out = write_cache(Path(tempfile.mkdtemp()) / "x.h5", fingerprint={}, ids=np.arange(2),
        ...                   embeddings=np.eye(2), table=table, outcome={"amplitude": 1.5})
        >>> read_outcome(out)
        {'amplitude': 1.5}
    """
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["outcome"]) if "outcome" in f.attrs else {}


def cache_file(fingerprint: dict, kind: str, root: str | Path | None = None) -> Path:
    """`<root>/<dataset>-<split>-<model>-<kind>-<digest>.h5`: a written cache's default name,
    under the cache root's features/ (beside the extracted caches) unless `root` is given.

    Args:
        fingerprint: the cache's fingerprint (dataset, split, model; its digest names the file).
        kind: what made it ("erase", "synthetic", ...).
        root: the folder.

    Examples:
        >>> cache_file({"dataset": "toyworld", "split": "test", "model": "toy_resnet"}, "erase", "f").parent.name
        'f'
    """
    model = re.sub(r"[^A-Za-z0-9._-]+", "_", str(fingerprint.get("model")))
    name = f"{fingerprint.get('dataset')}-{fingerprint.get('split')}-{model}-{kind}"
    return Path(root if root is not None else cache_path("features")) / f"{name}-{fingerprint_digest(fingerprint)}.h5"


def reuse_or_write(path: str | Path, fingerprint: dict, make: Callable[[], dict]) -> Path:
    """The cache at `path` if it holds `fingerprint`, else the one `make()` computes, written there.

    `make` returns `write_cache`'s keywords besides path and fingerprint (ids, embeddings,
    table, outcome). Two processes asking for the same cache compute it once: the second
    waits for the first's lock, then reuses what it wrote.

    Args:
        path: where the cache lives.
        fingerprint: what it must hold.
        make: computes it, called only when it is not there.

    Raises:
        CacheError: `path` holds a cache of another fingerprint (another source or other
            parameters), or a derived cache whose source changed since: it is not overwritten.

    Examples:
        >>> import tempfile, numpy as np, pandas as pd
        >>> from pathlib import Path
        >>> table = AttributeTable(pd.DataFrame({"y": [0, 1]}), "y", None, ("a", "b"))
        >>> make = lambda: {"ids": np.arange(2), "embeddings": np.eye(2), "table": table}
        >>> out = Path(tempfile.mkdtemp()) / "x.h5"
        >>> reuse_or_write(out, {"n": 1}, make) == reuse_or_write(out, {"n": 1}, make)
        True
    """
    path = Path(path)
    fingerprint = json.loads(json.dumps(fingerprint))  # as stored (tuples read back as lists), to compare
    if path.exists():
        return _reusable(path, fingerprint)
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(path, "feature cache", wait=True):
        if path.exists():  # written by another process while this one waited for the lock
            return _reusable(path, fingerprint)
        return write_cache(path, fingerprint=fingerprint, **make())


def _reusable(path: Path, fingerprint: dict) -> Path:
    held = open_cache(path, lazy=True)  # checks its content, and for a derived cache its sources
    held.embeddings.file.close()
    if held.fingerprint != fingerprint:
        differ = _differing_leaves(held.fingerprint, fingerprint)
        raise CacheError(f"{path} holds a cache computed from another source or with other parameters (differs in "
                         f"{', '.join(differ[:6])}{', ...' if len(differ) > 6 else ''}); it is not overwritten. "
                         f"Delete it, or leave out=... unset to have the cache named by what it holds.")
    return path


def _differing_leaves(a, b, prefix: str = "") -> list[str]:
    """Dotted keys where two nested fingerprints differ (for the refusal message)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str)
                for d in _differing_leaves(a.get(k), b.get(k), f"{prefix}{k}.")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differing_leaves(x, y, f"{prefix}{i}.")]
    return [] if a == b else [prefix.rstrip(".")]
