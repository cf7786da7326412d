"""Feature caches: penultimate-layer embeddings in HDF5, keyed by a fingerprint.

One file per (model, weights, layer, dataset + params, split, transform). Layout:
    ids           (N,) int64, the dataset's stable ids
    embeddings    (N, D) float16 (default) or float32, chunked, optionally compressed
    attributes/*  one dataset per attribute-table column (label and groups)
    chunk_sha256  (ceil(N / chunk_rows),) sha256 of each chunk of embeddings
    attrs         fingerprint (JSON), rows_done, complete, content_sha256
Everything a reader trusts is checksummed: the embeddings by chunk, and the rest (fingerprint,
ids, every attribute column, the table's schema: label, spurious and group columns, class
names; the chunk digests themselves) by part in `content_sha256`, sealed when the extraction
completes and checked on every open, so an edit made after extraction is refused, not read.
Extraction streams batches into the file and can resume: it writes `<name>.partial`,
records `rows_done` after each chunk, and renames to the final name only when
complete, so an unfinished file is never mistaken for a finished one.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch

from toolkit._util.faults import kill_point
from toolkit._util.log import info
from toolkit._util.paths import cache_path
from toolkit._util.progress import progress
from toolkit._util.repro import resolve_device
from toolkit._util.version import __version__
from toolkit.al.finetune import infer
from toolkit.data import GroupedDataset, create_dataset
from toolkit.errors import CacheError, MissingFileError
from toolkit.features.provenance import check_sources
from toolkit.models import create_model, weights_digest

LAYERS = ("penultimate",)


def describe_weights(weights: str, model: torch.nn.Module, seed: int) -> str:
    """What the fingerprint says about the weights: a digest, never just a path."""
    if weights == "random":
        return f"random:{seed}"
    kind = weights if weights == "pretrained" or weights.startswith("pretrained@") else "file"
    return f"{kind}:{weights_digest(model.backbone)}"


def make_fingerprint(*, model: str, weights: str, layer: str, dataset: GroupedDataset, transform: str,
                     compute: str = "float32") -> dict:
    """What produced a cache. `compute` is the backbone's arithmetic: a bf16-autocast GPU
    extraction and a float32 CPU one give different embeddings, so they never share a
    cache, and a partial cache never resumes on the other kind of device."""
    params = {k: v for k, v in dataset.params.items() if k != "cache_dir"}
    return {"model": model, "weights": weights, "layer": layer, "dataset": dataset.name,
            "dataset_params": json.loads(json.dumps(params)), "split": dataset.split, "transform": transform,
            "compute": compute, "toolkit_version": __version__}


def compute_dtype(device: torch.device) -> str:
    """The arithmetic `finetune.autocast` gives on `device`."""
    return "bfloat16-autocast" if device.type == "cuda" else "float32"


def fingerprint_digest(fp: dict) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:12]


def _differing(saved: dict, wanted: dict) -> list[str]:
    return sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))


@dataclass
class FeatureCache:
    """An opened, complete cache. `embeddings` is loaded as float32 unless lazy=True."""

    path: Path
    fingerprint: dict
    ids: np.ndarray
    embeddings: np.ndarray | h5py.Dataset
    attributes: pd.DataFrame
    label_column: str
    spurious_column: str | None
    class_names: tuple[str, ...]
    group_columns: tuple[str, ...] = ()
    extra_metrics: tuple[str, ...] = ()
    matched: bool = True  # see GroupedDataset.matched
    chunk_digests: tuple[str, ...] = ()  # sha256 of each chunk of stored embeddings, checked on open

    @property
    def labels(self) -> np.ndarray:
        return self.attributes[self.label_column].to_numpy().astype(np.int64)

    @property
    def spurious(self) -> np.ndarray | None:
        return self.attributes[self.spurious_column].to_numpy() if self.spurious_column else None

    def __len__(self) -> int:
        return len(self.ids)


def open_cache(path: str | Path, *, expect: dict | None = None, lazy: bool = False, verify: bool = True
               ) -> FeatureCache:
    """Open a finished feature cache.

    Args:
        path: the cache file (`extract_features` returns it).
        expect: fingerprint keys the cache must have (only those given are compared).
        lazy: leave the embeddings on disk (read by chunks) instead of loading them. A
            full load checks every chunk against the sha256 written at extraction; a lazy
            open checks each chunk the first time any of its rows is read (`VerifiedRows`).
        verify: check the chunk digests on a full load (`benchmarks/cache_verify.py` measures
            what it costs).

    Returns:
        A `FeatureCache`: ids, embeddings, labels, spurious attribute, attribute table, fingerprint.

    Raises:
        CacheError: an unfinished cache, or a fingerprint that differs from `expect`.

    Examples:
        >>> import toolkit
        >>> path = toolkit.extract_features("toy_resnet", "toyworld", "test", weights="random", log=None,
        ...                                 dataset_params={"n_train": 240, "n_val": 40, "n_test": 160})
        >>> cache = toolkit.open_cache(path)
        >>> cache.embeddings.shape, cache.fingerprint["weights"]
        ((160, 256), 'random:0')
    """
    path = Path(path)
    if not path.exists():
        partial = path.with_name(path.name + ".partial")
        hint = f" (an unfinished extraction is at {partial}; run the extraction again to resume)" if partial.exists() else ""
        raise MissingFileError(f"no feature cache at {path}{hint}")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise CacheError(f"{path} is not a readable HDF5 feature cache ({str(err).splitlines()[0]}); extract it "
                         f"again (`altk extract ...`) or pass the right file") from None
    if not f.attrs.get("complete", False):
        f.close()
        raise CacheError(f"{path} is an unfinished extraction; run the extraction again to complete it")
    _check_content(f, path)
    fp = json.loads(f.attrs["fingerprint"])
    try:  # a derived cache (features.interventions) is refused once a source it was computed from changes
        check_sources(fp, path)
    except CacheError:
        f.close()
        raise
    if expect:
        differ = [k for k in expect if fp.get(k) != expect[k]]
        if differ:
            f.close()
            raise CacheError(
                f"{path} was built with different {', '.join(differ)}: "
                + "; ".join(f"{k}: cache has {fp.get(k)!r}, asked for {expect[k]!r}" for k in differ)
                + ". Extract a new cache for what you want instead of mixing features."
            )
    ids = f["ids"][:]
    attrs = pd.DataFrame({c: _decode(f["attributes"][c][:]) for c in f["attributes"].attrs["columns"]},
                         index=pd.Index(ids, name="id"))
    digests = tuple(d.decode() for d in f["chunk_sha256"][:]) if "chunk_sha256" in f else ()
    if lazy:
        step = int(f.attrs.get("chunk_rows", 0) or 0)
        emb = VerifiedRows(f["embeddings"], digests, step, path) if verify and digests and step else f["embeddings"]
    else:
        raw = f["embeddings"][:]
        step = int(f.attrs.get("chunk_rows", 0) or 0)
        for i, expected in enumerate(digests if step and verify else ()):  # embeddings changed after completion
            lo = i * step
            if chunk_digest(raw[lo:lo + step]) != expected:
                f.close()
                raise CacheError(f"{path}: embeddings rows {lo}-{min(lo + step, len(raw)) - 1} differ from the "
                                 f"digest written when they were extracted (the file was modified or damaged). "
                                 f"Delete it and extract again.")
        emb = raw.astype(np.float32)
    g = f["attributes"].attrs
    meta = (str(g["label_column"]), str(g["spurious_column"]) or None, tuple(str(c) for c in g["class_names"]),
            tuple(str(c) for c in g.get("group_columns", ())), tuple(str(c) for c in g.get("extra_metrics", ())))
    matched = bool(g.get("matched", True))
    if not lazy:
        f.close()
    return FeatureCache(path, fp, ids, emb, attrs, *meta, matched=matched, chunk_digests=digests)


_SCHEMA_ATTRS = ("columns", "label_column", "spurious_column", "group_columns", "extra_metrics", "matched",
                 "class_names")


def content_digests(f: h5py.File) -> dict[str, str]:
    """sha256 of each part of an open cache that a reader trusts, besides the embeddings'
    chunks (which have their own digests, included here as one part)."""
    def sha(*parts) -> str:
        h = hashlib.sha256()
        for part in parts:
            h.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode())
        return h.hexdigest()

    def array(ds: h5py.Dataset) -> bytes:
        values = ds[:]
        return str(values.dtype).encode() + b"|" + np.ascontiguousarray(values).tobytes()

    grp = f["attributes"]
    schema = {k: (grp.attrs[k].tolist() if hasattr(grp.attrs[k], "tolist") else grp.attrs[k])
              for k in _SCHEMA_ATTRS if k in grp.attrs}
    out = {"fingerprint": sha(str(f.attrs["fingerprint"])), "ids": sha(array(f["ids"])), "schema": sha(schema)}
    out.update({f"attributes/{c}": sha(array(grp[c])) for c in grp.attrs["columns"]})
    if "chunk_sha256" in f:
        out["chunk_sha256"] = sha(array(f["chunk_sha256"]), str(int(f.attrs["chunk_rows"])))
    return out


def seal_content(f: h5py.File) -> None:
    """Write the content digests that `open_cache` checks; a writer calls it last, once every
    part is in place (a cache written by hand, e.g. a benchmark's, too)."""
    f.attrs["content_sha256"] = json.dumps(content_digests(f), sort_keys=True)


def _check_content(f: h5py.File, path: Path) -> None:
    """Refuse a cache whose ids, labels, attributes, schema or fingerprint changed after it was
    sealed. A cache sealed before these digests existed is read with a warning."""
    if "content_sha256" not in f.attrs:
        import warnings

        warnings.warn(f"{path} was extracted before caches sealed their ids, labels and attributes with a "
                      f"checksum, so an edit to them cannot be detected; extract it again to have them verified",
                      stacklevel=3)
        return
    sealed = json.loads(f.attrs["content_sha256"])
    try:
        now = content_digests(f)
    except KeyError as err:
        f.close()
        raise CacheError(f"{path}: part of the cache is missing ({err}); the file was modified or damaged after "
                         f"extraction. Delete it and extract again.") from None
    changed = sorted(k for k in set(sealed) | set(now) if sealed.get(k) != now.get(k))
    if changed:
        f.close()
        raise CacheError(f"{path}: {', '.join(changed)} differ from the checksum written when the cache was "
                         f"extracted (the file was modified or damaged); its features would be read against other "
                         f"ids or labels. Delete it and extract again.")


class VerifiedRows:
    """A cache's embeddings left on disk, each stored chunk checked against its sha256 the first
    time any of its rows is read (`v[lo:hi]`, `v[positions]`), so a lazy or streamed reader gets
    the same guarantee as a full load, for one extra read of each chunk it touches."""

    def __init__(self, dataset: h5py.Dataset, digests: tuple[str, ...], chunk_rows: int, path: Path) -> None:
        self.dataset, self.digests, self.chunk_rows, self.path = dataset, digests, chunk_rows, path
        self.checked = np.zeros(len(digests), dtype=bool)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.dataset.shape

    @property
    def dtype(self):
        return self.dataset.dtype

    @property
    def file(self) -> h5py.File:
        return self.dataset.file

    def __len__(self) -> int:
        return len(self.dataset)

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[:], dtype=dtype)

    def __getitem__(self, key):
        first = key[0] if isinstance(key, tuple) else key
        if isinstance(first, slice):
            start, stop, _ = first.indices(len(self))
            touched = np.arange(start // self.chunk_rows, -(-stop // self.chunk_rows)) if stop > start else \
                np.zeros(0, dtype=np.int64)
        else:
            rows = np.asarray(first)
            rows = np.flatnonzero(rows) if rows.dtype == bool else np.where(rows < 0, rows + len(self), rows)
            touched = np.unique(np.atleast_1d(rows) // self.chunk_rows)
        for c in touched[~self.checked[touched]]:
            lo = int(c) * self.chunk_rows
            if chunk_digest(self.dataset[lo:lo + self.chunk_rows]) != self.digests[c]:
                raise CacheError(f"{self.path}: embeddings rows {lo}-{min(lo + self.chunk_rows, len(self)) - 1} "
                                 f"differ from the digest written when they were extracted (the file was modified "
                                 f"or damaged). Delete it and extract again.")
            self.checked[c] = True
        return self.dataset[key]


def _decode(values: np.ndarray) -> np.ndarray:
    return values.astype(str) if values.dtype.kind == "S" else values


def default_cache_path(fp: dict, root: str | Path | None = None) -> Path:
    """`<root>/<dataset>-<split>-<model>-<digest>.h5`; root defaults to the cache root's features/.
    A model name's ":" and "/" (timm:..., open_clip:arch/tag) become "_" in the file name; the
    fingerprint inside keeps the name as given."""
    import re

    model = re.sub(r"[^A-Za-z0-9._-]+", "_", fp["model"])
    return Path(root if root is not None else cache_path("features")) / \
        f"{fp['dataset']}-{fp['split']}-{model}-{fingerprint_digest(fp)}.h5"


def extract_features(
    model_name: str,
    dataset_name: str,
    split: str,
    *,
    weights: str = "pretrained",
    dataset_params: dict | None = None,
    layer: str = "penultimate",
    out: str | Path | None = None,
    root: str | Path | None = None,
    dtype: str = "float16",
    compression: str | None = None,
    chunk_rows: int = 1024,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    loader_workers: int = 0,
    seed: int = 0,
    stop_after_chunks: int | None = None,
    log=info,
) -> Path:
    """Extract `layer` embeddings of a dataset split into an HDF5 cache; returns its path.

    The cache is named by a fingerprint of every input (model, weights and their digest,
    layer, dataset and its params, split, transform, dtype, arithmetic). It resumes an
    unfinished extraction with the same fingerprint, and returns at once if the finished
    cache exists.

    Args:
        model_name: a registered model (`list_models()`).
        dataset_name: a registered dataset (`list_datasets()`).
        split: the split to embed, e.g. "train" (the pool) or "test".
        weights: "pretrained", "random", or a weights file.
        dataset_params: the dataset's options (`data.params`).
        layer: "penultimate" (the pooled pre-logits features).
        out: the cache file (default: under `root`, named by the fingerprint).
        root: the folder for default names (default: the cache root's `features/`).
        dtype: "float16" (half the disk) or "float32".
        seed: seeds the random init when `weights="random"`.
        stop_after_chunks: stop early (tests use it to simulate a kill).
        log: where progress lines go (None for silence).

    Examples:
        >>> import toolkit
        >>> path = toolkit.extract_features("toy_resnet", "toyworld", "test", weights="random", log=None,
        ...                                 dataset_params={"n_train": 240, "n_val": 40, "n_test": 160})
        >>> path.suffix, path.parent.name
        ('.h5', 'features')
    """
    if layer not in LAYERS:
        raise CacheError(f"unknown layer {layer!r}; valid layers: {', '.join(LAYERS)}")
    if dtype not in ("float16", "float32"):
        raise CacheError(f"dtype must be 'float16' or 'float32', got {dtype!r}")
    for name, value in (("batch_size", batch_size), ("chunk_rows", chunk_rows)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CacheError(f"extraction {name} (--{name.replace('_', '-')}) must be an integer >= 1, got {value!r}")
    device = resolve_device(str(device))
    ds = create_dataset(dataset_name, split, **(dataset_params or {}))
    torch.manual_seed(seed)
    model = create_model(model_name, weights=weights, num_classes=ds.num_classes).to(device).eval()
    fp = make_fingerprint(model=model_name, weights=describe_weights(weights, model, seed), layer=layer,
                          compute=compute_dtype(device),
                          dataset=ds, transform="uint8/127.5-1 (BiT [-1, 1])")
    path = Path(out) if out is not None else default_cache_path(fp, root)
    if path.exists():
        open_cache(path, expect=fp)  # raises on a different fingerprint
        return path
    partial = path.with_name(path.name + ".partial")
    path.parent.mkdir(parents=True, exist_ok=True)
    from toolkit._util.locks import exclusive

    # a second command that needs the same cache (two suites with different --out) waits for the
    # first to write it, then reuses it, rather than being refused
    with exclusive(path, "feature cache", wait=log or True):
        if path.exists():  # another process finished it while this one waited for the lock
            open_cache(path, expect=fp)
            return path
        return _write_cache(model, ds, fp, path, partial, dtype=dtype, compression=compression,
                            chunk_rows=chunk_rows, batch_size=batch_size, device=device,
                            workers=loader_workers, stop_after_chunks=stop_after_chunks, log=log)


def _write_cache(model, ds, fp: dict, path: Path, partial: Path, *, dtype: str, compression, chunk_rows: int,
                 batch_size: int, device, stop_after_chunks: int | None, log, workers: int = 0) -> Path:
    n = len(ds)
    _check_free_space(path.parent, n * model.head.in_features * np.dtype(dtype).itemsize)
    if partial.exists() and not _readable(partial):
        # killed before HDF5 wrote its superblock, or between a chunk and the flush of its
        # metadata: nothing in it can be trusted or resumed
        if log:
            log(f"[extract] {partial.name} is not a readable HDF5 file (killed while being written); starting over")
        partial.unlink()
    if workers and n:
        # start the persistent loader processes before the file is opened: forked while it is
        # open, they would hold its descriptor (and HDF5's lock) after it closes, and reading
        # the finished file back would fail with "unable to lock file"
        _embed(model, ds, np.arange(min(n, 1)), device, batch_size, workers)
    with h5py.File(partial, "a") as f:
        if "fingerprint" in f.attrs:
            saved = json.loads(f.attrs["fingerprint"])
            if saved != fp:
                raise CacheError(f"{partial} is an unfinished extraction of something else (differs in "
                                 f"{', '.join(_differing(saved, fp))}); delete it or choose another output")
        else:
            dim = model.head.in_features
            f.attrs["fingerprint"] = json.dumps(fp, sort_keys=True)
            f.attrs["rows_done"] = 0
            f.attrs["complete"] = False
            f.create_dataset("ids", data=ds.ids.astype(np.int64))
            f.create_dataset("embeddings", shape=(n, dim), dtype=dtype, chunks=(min(chunk_rows, max(n, 1)), dim),
                             compression=compression)
            f.create_dataset("chunk_sha256", shape=(-(-n // chunk_rows),), dtype="S64")
            f.attrs["chunk_rows"] = chunk_rows
            write_attributes(f.create_group("attributes"), ds)
        start = int(f.attrs["rows_done"])
        if start and log:
            log(f"[extract] resuming {partial.name} at row {start}/{n}")
        t0, done = time.perf_counter(), 0
        bar = progress(total=n, desc=f"extract {ds.name}/{ds.split}", unit="img")
        bar.update(start)
        for lo in range(start, n, chunk_rows):
            if stop_after_chunks is not None and done >= stop_after_chunks:
                bar.close()
                return partial
            hi = min(lo + chunk_rows, n)
            bar.update(hi - lo)
            emb = _embed(model, ds, np.arange(lo, hi), device, batch_size, workers).astype(dtype)
            # the disk may fill after the first check (another process): stop cleanly, resumable, before
            # HDF5 fails mid-write (it then only warns, and its cleanup floods stderr)
            _check_free_space(partial.parent, emb.nbytes, resumable=partial)
            _write_chunk(f, lo, hi, emb)
            kill_point(f"extract:chunk_written:{lo // chunk_rows}")  # rows written, progress not yet recorded
            if "chunk_sha256" in f:  # caches begun before verification have none
                f["chunk_sha256"][lo // int(f.attrs["chunk_rows"])] = chunk_digest(emb).encode()
            f.attrs["rows_done"] = hi
            f.flush()
            done += 1
        bar.close()
    kill_point("extract:before_verify:0")
    _verify_written(partial)  # a write the disk dropped (full disk: h5py only warns) must not pass as complete
    with h5py.File(partial, "a") as f:
        seal_content(f)
        f.attrs["complete"] = True
    os.replace(partial, path)
    if log:
        log(f"[extract] {n} rows -> {path} ({time.perf_counter() - t0:.1f}s)")
    return path


def write_attributes(grp: h5py.Group, source) -> None:
    """A cache's attribute group: `source`'s table (strings as bytes) and its schema. `source` is a
    `GroupedDataset`, or anything with its fields (`features.array_cache.AttributeTable`)."""
    for col in source.attributes.columns:
        values = source.attributes[col].to_numpy()
        grp.create_dataset(col, data=values.astype("S") if not np.issubdtype(values.dtype, np.number) else values)
    grp.attrs["columns"] = [str(c) for c in source.attributes.columns]
    grp.attrs["label_column"] = source.label_column
    grp.attrs["spurious_column"] = source.spurious_column or ""
    grp.attrs["group_columns"] = list(source.group_columns)  # caches written before these read as ()
    grp.attrs["extra_metrics"] = list(source.extra_metrics)
    grp.attrs["matched"] = bool(getattr(source, "matched", True))  # caches written before this read as True
    grp.attrs["class_names"] = list(source.class_names)


def _readable(path: Path) -> bool:
    try:
        with h5py.File(path, "r") as f:
            int(f.attrs.get("rows_done", 0))
        return True
    except (OSError, KeyError, ValueError):
        return False


def _write_chunk(f, lo: int, hi: int, emb: np.ndarray) -> None:
    f["embeddings"][lo:hi] = emb


def chunk_digest(rows: np.ndarray) -> str:
    """The sha256 of a chunk of stored embeddings: what `chunk_sha256` holds and opens check."""
    return hashlib.sha256(np.ascontiguousarray(rows).tobytes()).hexdigest()


def _check_free_space(folder: Path, needed: int, resumable: Path | None = None) -> None:
    import shutil

    free = shutil.disk_usage(folder).free
    if free < needed * 1.05 + (64 << 20):
        then = (f"The rows done so far are kept in {resumable}: free some space and run the same extraction "
                "again to resume." if resumable else "Free some space or pass another output folder (out=...).")
        raise OSError(f"not enough disk space in {folder} for this cache: it needs about {needed / 2**20:.1f} MiB "
                      f"more plus a 64 MiB margin (HDF5 metadata, the read-back check), and {free / 2**20:.0f} MiB "
                      f"are free. {then}")


def _verify_written(partial: Path) -> None:
    """Read every chunk back and compare it with the digest taken when it was computed."""
    with h5py.File(partial, "r") as f:
        if "chunk_sha256" not in f:
            return
        emb, digests, step = f["embeddings"], f["chunk_sha256"][:], int(f.attrs["chunk_rows"])
        for i, expected in enumerate(digests):
            lo = i * step
            if chunk_digest(emb[lo:lo + step]) != expected.decode():
                bad = f"rows {lo}-{min(lo + step, len(emb)) - 1}"
                break
        else:
            return
    partial.unlink()
    raise OSError(f"{partial}: {bad} read back differently from what was written (a full disk or a failing "
                  f"device; HDF5 only warns). The partial cache was deleted; free space and extract again.")


def _embed(model, ds: GroupedDataset, positions: np.ndarray, device: torch.device, batch_size: int,
           workers: int = 0) -> np.ndarray:
    return np.concatenate([e for _, e in infer(model.embed, ds, positions, device=device, batch_size=batch_size,
                                               workers=workers)])
