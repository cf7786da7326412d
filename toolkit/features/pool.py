"""A run's pool as features: the cache its probe read, or the one its backbone gives.

Data access for the report, the explorer and the representation analyses, which read
records and caches and compute nothing on a model themselves.
"""
from __future__ import annotations

from pathlib import Path

from toolkit.data import create_dataset
from toolkit.errors import RecordError
from toolkit.features.cache import FeatureCache, extract_features, open_cache
from toolkit.record import RunRecord


def pool_features(record: RunRecord, *, with_images: bool = True,
                  feature_root: str | Path | None = None) -> tuple[FeatureCache, object | None]:
    """(cache, images or None) of the run's training pool.

    Probe runs name their pool cache; full runs get the embeddings of their initial
    weights, extracted once into a fingerprinted cache. Images come from the dataset (full
    runs only; a probe run's record does not say where its images are).
    """
    if record.mode == "probe":
        return open_cache(record.run_config["data"]["pool_cache"]), None
    path = extract_features(record.model, record.dataset, "train", weights=record.weights,
                            dataset_params=record.data_params, seed=record.seed, root=feature_root, log=None)
    images = create_dataset(record.dataset, "train", **record.data_params).images if with_images else None
    return open_cache(path), images


def stage_caches(record: RunRecord, *, split: str = "train", feature_root: str | Path | None = None,
                 log=None) -> list[tuple[int, str, int, FeatureCache]]:
    """The `split` embeddings at each stage of one run's finetuning: the initial weights
    (round -1, "before finetuning"), then every checkpoint the run saved ("after N labels").

    Returns (round, stage, n_labels, cache) tuples. Needs a run made with `checkpoint_rounds`.
    """
    checkpoints = record.checkpoints()
    if not checkpoints:
        raise RecordError(f"run {record.name} saved no checkpoints; run it with checkpoint_rounds=[0, -1] "
                          "(after the seed set and after the last round)")
    labels_at = dict(zip(record.rounds["round"], record.rounds["n_labels"]))
    stages = [(-1, "before finetuning", 0, record.weights)]
    stages += [(r, f"after {labels_at[r]} labels", int(labels_at[r]), str(p)) for r, p in checkpoints.items()]
    out = []
    for round_index, stage, n_labels, weights in stages:
        path = extract_features(record.model, record.dataset, split, weights=weights, dataset_params=record.data_params,
                                seed=record.seed, root=feature_root, log=log)
        out.append((round_index, stage, n_labels, open_cache(path)))
    return out
