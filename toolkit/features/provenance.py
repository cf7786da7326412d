"""Where a derived feature cache comes from, and whether that is still what it was.

A derived cache (`features.interventions`) is computed from other caches: the one it
transforms and the one its transform was fitted on. Its fingerprint lists them under
"sources", each with its path, its content id and its fingerprint. `open_cache` calls
`check_sources`, so a derived cache whose source has changed since (extracted again into
the same file, with other features) is refused, as an edited cache is. A source that was
moved or deleted is not a changed one: the derived cache holds its own features.

This module reads HDF5 attributes only; `features.cache` imports it, not the reverse.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import numpy as np

from toolkit.errors import CacheError


def content_id(path: str | Path) -> str:
    """A digest of everything in a finished cache that a reader trusts.

    It hashes the content digests sealed at extraction (fingerprint, ids, attributes and
    the embeddings' chunk digests: see `features.cache.seal_content`), so it costs one
    attribute read. A cache sealed before those digests existed is hashed in full.

    Args:
        path: a finished feature cache.

    Returns:
        16 hex digits.

    Examples:
        >>> import toolkit
        >>> path = toolkit.extract_features("toy_resnet", "toyworld", "test", weights="random", log=None,
        ...                                 dataset_params={"n_train": 240, "n_val": 40, "n_test": 160})
        >>> len(content_id(path))
        16
    """
    with h5py.File(path, "r") as f:
        if "content_sha256" in f.attrs:
            return hashlib.sha256(str(f.attrs["content_sha256"]).encode()).hexdigest()[:16]
        h = hashlib.sha256(str(f.attrs.get("fingerprint", "")).encode())
        for name in ("ids", "embeddings"):
            h.update(np.ascontiguousarray(f[name][:]).tobytes())
        return h.hexdigest()[:16]


def source_entry(path: str | Path, fingerprint: dict, role: str) -> dict:
    """How a derived cache's fingerprint names one of its sources.

    Args:
        path: the source cache's file.
        fingerprint: the source's fingerprint.
        role: what the derived cache took from it ("source", "fit_on", "a", "b").

    Returns:
        {"role", "path" (absolute), "content" (`content_id`), "fingerprint"}.

    Examples:
        >>> import toolkit
        >>> path = toolkit.extract_features("toy_resnet", "toyworld", "test", weights="random", log=None,
        ...                                 dataset_params={"n_train": 240, "n_val": 40, "n_test": 160})
        >>> sorted(source_entry(path, toolkit.open_cache(path).fingerprint, "source"))
        ['content', 'fingerprint', 'path', 'role']
    """
    return {"role": role, "path": str(Path(path).resolve()), "content": content_id(path), "fingerprint": fingerprint}


def check_sources(fingerprint: dict, path: str | Path) -> None:
    """Refuse a derived cache one of whose sources (or theirs, down the chain) has changed.

    Args:
        fingerprint: the derived cache's fingerprint.
        path: the derived cache (for the message).

    Raises:
        CacheError: a source on disk whose content differs from when the cache was derived.

    Examples:
        >>> check_sources({"model": "toy_resnet"}, "an-extracted-cache.h5")  # no sources: nothing to check
    """
    for source in fingerprint.get("sources") or ():
        at = Path(source["path"])
        if not at.exists():  # moved or deleted: nothing to compare with, and the features are all here
            continue
        try:
            now = content_id(at)
        except (OSError, KeyError) as err:
            now = f"unreadable ({type(err).__name__})"
        if now != source["content"]:
            raise CacheError(
                f"{path} is stale: it was derived from {at} ({source['role']}), which has changed since "
                f"(content {source['content']} then, {now} now), so its features no longer follow from it. "
                f"Derive it again from the new cache (it gets a new name), or delete {path}.")
        check_sources(source["fingerprint"], at)  # a source derived in turn: its own sources must hold too

