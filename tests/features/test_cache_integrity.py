"""Everything a feature cache's reader trusts is verified on open: an edit to its labels,
attributes, ids, class names or fingerprint after extraction is refused, not read."""
import json
import shutil

import h5py
import numpy as np
import pytest
from conftest import TINY_DATA

from toolkit.config import ALConfig
from toolkit.errors import CacheError
from toolkit.features.cache import content_digests, extract_features, open_cache
from toolkit.features.probe import run_probe

AL = ALConfig(strategy="least_confidence", seed_size=10, per_round=5, budget=10)


@pytest.fixture(scope="module")
def caches(tiny_backbone, tmp_path_factory):
    root = tmp_path_factory.mktemp("integrity")
    kw = dict(weights=str(tiny_backbone), root=root / "f", log=None,
              dataset_params={**TINY_DATA, "cache_dir": str(root / "data")})
    return {"pool": extract_features("toy_resnet", "toyworld", "train", **kw),
            "test": extract_features("toy_resnet", "toyworld", "test", **kw),
            "backbone": tiny_backbone, "params": kw["dataset_params"]}


def _flip_labels(f):  # the edit: attributes/y[:40] = 1 - y
    col = f["attributes"]["y"]
    col[:40] = 1 - col[:40]


def _swap_ids(f):
    ids = f["ids"][:]
    ids[[0, 1]] = ids[[1, 0]]
    f["ids"][...] = ids


def _edit_attribute(f):
    col = f["attributes"]["place"]
    col[:5] = 1 - col[:5]


def _rename_class(f):
    f["attributes"].attrs["class_names"] = ["waterbird", "landbird"]


def _swap_label_column(f):
    f["attributes"].attrs["label_column"] = "place"


def _edit_fingerprint(f):
    fp = json.loads(f.attrs["fingerprint"])
    f.attrs["fingerprint"] = json.dumps({**fp, "split": "val"}, sort_keys=True)


def _drop_column(f):
    del f["attributes"]["place"]


EDITS = {"labels": (_flip_labels, "attributes/y"), "ids": (_swap_ids, "ids"),
         "attribute": (_edit_attribute, "attributes/place"), "class names": (_rename_class, "schema"),
         "label column": (_swap_label_column, "schema"), "fingerprint": (_edit_fingerprint, "fingerprint"),
         "a dropped column": (_drop_column, "missing|attributes/place")}


@pytest.mark.parametrize("edit", list(EDITS))
@pytest.mark.parametrize("lazy", [False, True])
def test_an_edit_after_extraction_is_refused_on_open(caches, tmp_path, edit, lazy):
    fn, names = EDITS[edit]
    path = tmp_path / "cache.h5"
    shutil.copy(caches["test"], path)
    assert open_cache(path, lazy=lazy).ids.shape == (TINY_DATA["n_test"],)  # untouched, it opens
    with h5py.File(path, "r+") as f:
        fn(f)
    with pytest.raises(CacheError, match=f"({names}).*(differ from the checksum|modified or damaged)"):
        open_cache(path, lazy=lazy)


def test_a_probe_run_on_a_relabelled_pool_is_refused(caches, tmp_path):
    """The issue's repro: the numbers changed with exit 0 (test accuracy 0.71 -> 0.55)."""
    pool = tmp_path / "pool.h5"
    shutil.copy(caches["pool"], pool)
    with h5py.File(pool, "r+") as f:
        _flip_labels(f)
    with pytest.raises(CacheError, match="attributes/y differ from the checksum"):
        run_probe(pool, {"test": caches["test"]}, tmp_path / "run", al=AL)


def test_the_digests_cover_every_column_and_the_chunk_digests(caches):
    with h5py.File(caches["pool"], "r") as f:
        parts = content_digests(f)
        columns = list(f["attributes"].attrs["columns"])
        sealed = json.loads(f.attrs["content_sha256"])
    assert set(parts) == {"fingerprint", "ids", "schema", "chunk_sha256", *(f"attributes/{c}" for c in columns)}
    assert sealed == parts and len(set(parts.values())) == len(parts)  # sealed at extraction; no two parts alike


def test_a_cache_sealed_before_the_checksums_opens_with_a_warning(caches, tmp_path):
    path = tmp_path / "old.h5"
    shutil.copy(caches["test"], path)
    with h5py.File(path, "r+") as f:
        del f.attrs["content_sha256"]
    with pytest.warns(UserWarning, match="extract it again to have them verified"):
        cache = open_cache(path)
    np.testing.assert_array_equal(cache.ids, open_cache(caches["test"]).ids)


def test_a_lazy_open_checks_each_chunk_when_its_rows_are_first_read(caches, tmp_path):
    """A streamed pool reads its embeddings lazily: a chunk changed after extraction is refused
    the first time any of its rows is read, and untouched chunks read as they are."""
    from toolkit.features.cache import VerifiedRows

    path2 = tmp_path / "small-chunks.h5"  # chunks of 64 rows, so the pool has several
    extract_features("toy_resnet", "toyworld", "train", weights=str(caches["backbone"]), out=path2, chunk_rows=64,
                     dataset_params=caches["params"], log=None)
    with h5py.File(path2, "r+") as f:
        f["embeddings"][130] = f["embeddings"][130] + np.float16(0.5)  # in the third chunk (rows 128-191)
    lazy = open_cache(path2, lazy=True)
    assert isinstance(lazy.embeddings, VerifiedRows)
    full = open_cache(caches["pool"]).embeddings
    np.testing.assert_array_equal(lazy.embeddings[:128].astype(np.float32), full[:128])  # chunks 0-1 are intact
    np.testing.assert_array_equal(lazy.embeddings[[5, 70, 200]].astype(np.float32), full[[5, 70, 200]])
    for read in (lambda e: e[120:140], lambda e: e[[3, 150]], lambda e: e[190]):
        with pytest.raises(CacheError, match="rows 128-191 differ from the digest"):
            read(lazy.embeddings)
    lazy.embeddings.file.close()
    with pytest.raises(CacheError, match="rows 128-191 differ"):
        run_probe(path2, {"test": caches["test"]}, tmp_path / "run", al=AL, stream=True)
