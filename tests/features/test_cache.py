import h5py
import numpy as np
import pytest
import torch
from conftest import TINY_DATA

from toolkit.data import create_dataset
from toolkit.features.cache import extract_features, open_cache
from toolkit.models import create_model


@pytest.fixture
def params(tmp_path):
    return {**TINY_DATA, "cache_dir": str(tmp_path / "data")}


def test_round_trip_embeddings_ids_attributes(tiny_backbone, params, tmp_path):
    path = extract_features("toy_resnet", "toyworld", "test", weights=str(tiny_backbone), dataset_params=params,
                            root=tmp_path / "f", dtype="float32", chunk_rows=64, log=None)
    cache = open_cache(path)
    ds = create_dataset("toyworld", "test", **params)
    model = create_model("toy_resnet", weights=str(tiny_backbone), num_classes=2).eval()
    with torch.inference_mode():
        ref = model.embed(ds.get_batch(np.arange(len(ds)))[0]).numpy()
    np.testing.assert_allclose(cache.embeddings, ref, rtol=1e-4, atol=1e-5)
    assert np.array_equal(cache.ids, ds.ids)
    assert cache.attributes.equals(ds.attributes)
    assert cache.label_column == "y" and cache.spurious_column == "place"
    assert cache.fingerprint["split"] == "test" and cache.fingerprint["weights"].startswith("file:")


def test_resume_after_interruption_equals_uninterrupted(tiny_backbone, params, tmp_path):
    kw = dict(weights=str(tiny_backbone), dataset_params=params, chunk_rows=50, log=None)
    full = extract_features("toy_resnet", "toyworld", "train", root=tmp_path / "a", **kw)
    partial = extract_features("toy_resnet", "toyworld", "train", root=tmp_path / "b", stop_after_chunks=2, **kw)
    assert partial.name.endswith(".partial")
    with h5py.File(partial) as f:
        assert f.attrs["rows_done"] == 100 and not f.attrs["complete"]
    with pytest.raises(FileNotFoundError, match="unfinished extraction"):
        open_cache(partial.with_name(partial.name.removesuffix(".partial")))
    resumed = extract_features("toy_resnet", "toyworld", "train", root=tmp_path / "b", **kw)
    a, b = open_cache(full), open_cache(resumed)
    assert np.array_equal(a.embeddings, b.embeddings) and a.fingerprint == b.fingerprint
    assert not partial.exists()


def test_mismatched_fingerprint_refused(tiny_backbone, params, tmp_path):
    path = extract_features("toy_resnet", "toyworld", "test", weights=str(tiny_backbone), dataset_params=params,
                            root=tmp_path, log=None)
    with pytest.raises(ValueError, match="different weights.*asked for 'random:0'"):
        open_cache(path, expect={"weights": "random:0"})
    # asking to write a different model's features into the same file is refused, not overwritten
    with pytest.raises(ValueError, match="different"):
        extract_features("toy_resnet", "toyworld", "test", weights="random", dataset_params=params, out=path,
                         log=None)


def test_unfinished_cache_refused(tmp_path):
    p = tmp_path / "x.h5"
    with h5py.File(p, "w") as f:
        f.attrs["complete"] = False
        f.attrs["fingerprint"] = "{}"
    with pytest.raises(ValueError, match="unfinished"):
        open_cache(p)


def test_bad_layer_and_dtype(params):
    with pytest.raises(ValueError, match="valid layers: penultimate"):
        extract_features("toy_resnet", "toyworld", "test", layer="stage3", dataset_params=params)
    with pytest.raises(ValueError, match="float16"):
        extract_features("toy_resnet", "toyworld", "test", dtype="int8", dataset_params=params)


def test_timm_model_extracts(params, tmp_path):
    path = extract_features("timm_test_resnet", "toyworld", "test", weights="random", dataset_params=params,
                            root=tmp_path, log=None)
    cache = open_cache(path)
    assert cache.embeddings.shape[0] == TINY_DATA["n_test"] and cache.fingerprint["weights"] == "random:0"


def test_a_write_the_disk_dropped_fails_the_extraction(tiny_backbone, params, tmp_path, monkeypatch):
    import toolkit.features.cache as features

    def drop_second_chunk(f, lo, hi, emb):  # what a full disk did: h5py warned, the rows stayed zero
        f["embeddings"][lo:hi] = np.zeros_like(emb) if lo == 50 else emb

    monkeypatch.setattr(features, "_write_chunk", drop_second_chunk)
    kw = dict(weights=str(tiny_backbone), dataset_params=params, chunk_rows=50, log=None, root=tmp_path / "f")
    with pytest.raises(OSError, match="rows 50-99 read back differently"):
        extract_features("toy_resnet", "toyworld", "test", **kw)
    left = [f for f in (tmp_path / "f").rglob("*") if f.is_file() and not f.name.endswith(".lock")]
    assert not left  # no cache, complete or partial, is left to be trusted
    monkeypatch.undo()
    assert open_cache(extract_features("toy_resnet", "toyworld", "test", **kw)).embeddings.any(axis=1).all()


def test_unreadable_partial_from_an_early_kill_starts_over(tiny_backbone, params, tmp_path):
    kw = dict(weights=str(tiny_backbone), dataset_params=params, chunk_rows=50, log=None)
    reference = extract_features("toy_resnet", "toyworld", "test", root=tmp_path / "a", **kw)
    partial = extract_features("toy_resnet", "toyworld", "test", root=tmp_path / "b", stop_after_chunks=0, **kw)
    partial.write_bytes(b"\x00" * 100)  # killed before HDF5 wrote its superblock
    path = extract_features("toy_resnet", "toyworld", "test", root=tmp_path / "b", **kw)
    assert np.array_equal(open_cache(path).embeddings, open_cache(reference).embeddings)


def test_not_enough_disk_space_is_refused_before_writing(tiny_backbone, params, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 << 20, 9 << 20, 1 << 20))
    with pytest.raises(OSError, match="not enough disk space .* MiB more plus a 64 MiB margin .* and 1 MiB are free"):
        extract_features("toy_resnet", "toyworld", "test", weights=str(tiny_backbone), dataset_params=params,
                         root=tmp_path / "f", log=None)
    assert not [f for f in (tmp_path / "f").rglob("*") if f.is_file() and not f.name.endswith(".lock")]


def test_a_disk_that_fills_during_extraction_stops_it_resumably(tiny_backbone, params, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    kw = dict(weights=str(tiny_backbone), dataset_params=params, chunk_rows=16, log=None)
    reference = extract_features("toy_resnet", "toyworld", "test", root=tmp_path / "ref", **kw)
    usage, real, calls = namedtuple("usage", "total used free"), shutil.disk_usage, []

    def filling(path):  # room for the first check and two chunks, then another process fills the disk
        calls.append(path)
        return usage(10 << 30, 0, 10 << 30) if len(calls) <= 3 else usage(10 << 30, 10 << 30, 1 << 20)

    monkeypatch.setattr(shutil, "disk_usage", filling)
    with pytest.raises(OSError, match=r"The rows done so far are kept in .*\.partial: free some space"):
        extract_features("toy_resnet", "toyworld", "test", root=tmp_path / "f", **kw)
    monkeypatch.setattr(shutil, "disk_usage", real)
    path = extract_features("toy_resnet", "toyworld", "test", root=tmp_path / "f", **kw)  # resumes at row 32
    assert np.array_equal(open_cache(path).embeddings, open_cache(reference).embeddings)


def test_a_fresh_extraction_with_loader_workers_reads_its_file_back(tiny_backbone, tmp_path):
    """Loader processes forked while the cache was open held HDF5's lock: the read-back of every
    fresh extraction with --loader-workers failed ("unable to lock file"); the rerun succeeded."""
    from conftest import TINY_DATA

    from toolkit.features.cache import extract_features, open_cache

    params = {**TINY_DATA, "cache_dir": str(tmp_path / "data")}
    path = extract_features("toy_resnet", "toyworld", "test", weights=str(tiny_backbone), dataset_params=params,
                            root=tmp_path / "f", loader_workers=2, log=None)
    plain = extract_features("toy_resnet", "toyworld", "test", weights=str(tiny_backbone), dataset_params=params,
                             out=tmp_path / "plain.h5", log=None)
    np.testing.assert_array_equal(open_cache(path).embeddings, open_cache(plain).embeddings)
