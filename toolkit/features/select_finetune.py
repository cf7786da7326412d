"""Select on features, finetune once (after Vysogorets & Gopal 2024).

A linear probe on the backbone's frozen, cached features does all the acquiring (the probe
engine, any registered strategy); then the backbone is finetuned once, from its initial
weights, on the final labelled set. The run writes the same record as the full loop: its
rounds hold the probe's acquisitions and the probe's metrics, and its last round holds the
network finetuned once (each row's `train.by` says which). So every analysis reads it, and
the final round compares directly with the full loop's.

Compute is recorded in the same terms as the full loop: seconds per stage, and forward and
backward passes counted in examples (see `toolkit.analysis.cost`).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from toolkit._util.repro import resolve_device, round_torch_seed
from toolkit.config import RunConfig

SELECTION_DIR = "selection"  # the probe run's own record, inside the run folder (analyses skip it)


def run_select_then_finetune(cfg: RunConfig, out_dir: str | Path, *, C: float = 1.0,
                             feature_root: str | Path | None = None, log=None) -> "RunRecord":  # noqa: F821
    """Acquire with a probe on cached features, finetune once on the final labels; returns the record.

    Args:
        cfg: the resolved config, as for `run_active_learning` (model, data, protocol, finetuning).
        out_dir: the run folder. The probe's own record goes to `out_dir/selection`. A killed run
            resumes: the probe from its last round, the finetuning from the start (it is one).
        C: the selecting probe's inverse L2 strength.
        feature_root: where feature caches live (default: the cache root's features/).
        log: where progress lines go (None for silence).

    Returns:
        The `RunRecord`: mode "select_then_finetune", one row per acquisition round.

    Examples:
        >>> import toolkit
        >>> from toolkit.features.select_finetune import run_select_then_finetune
        >>> cfg = toolkit.resolve_config("toy", ["al.budget=5", "al.seed_size=10", "data.params.n_train=240",
        ...     "data.params.n_val=40", "data.params.n_test=160", "model.weights=random", "finetune.max_steps=2",
        ...     "finetune.micro_batch=16"])
        >>> rec = run_select_then_finetune(cfg, "/tmp/altk-doc/select-once")
        >>> rec.mode, rec.rounds["n_labels"].tolist()
        ('select_then_finetune', [10, 15])
    """
    from toolkit._util.locks import exclusive

    with exclusive(Path(out_dir), "run", directory=True):
        return _run(cfg, Path(out_dir), C=C, feature_root=feature_root, log=log)


def _run(cfg: RunConfig, out: Path, *, C: float, feature_root, log):
    import json

    import torch

    from toolkit.al.finetune import finetune, maybe_compile
    from toolkit.al.loop import evaluate, initial_model, input_digests, load_data
    from toolkit.al.protocol import check_budget, check_classes, check_resampled_pool, run_meta
    from toolkit.config import acquisition_sizes
    from toolkit.features.cache import extract_features, open_cache
    from toolkit.features.probe import cache_digest, run_probe
    from toolkit.metrics import group_shares
    from toolkit.record import RunWriter, check_inputs_unchanged, load_run

    say = log or (lambda _: None)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    params = cfg.data_params()
    pool, evals = load_data(cfg)
    check_budget(cfg.al, len(pool))
    check_classes(pool.labels, pool.class_names, f"{pool.name}: the training pool")
    check_resampled_pool(cfg.al, pool)
    # the model every run starts from (finetune reseeds torch, so building it first changes nothing):
    # a run made on other data or weights is refused here, before features are extracted for the new ones
    model = initial_model(cfg, pool.num_classes)
    digests = input_digests(pool, evals, model)
    check_inputs_unchanged(out, digests)

    # 1. features (a cache another run already made is reused: its seconds are then ~0)
    t0 = time.perf_counter()
    caches = {split: extract_features(cfg.model.name, cfg.data.name, split, weights=cfg.model.weights,
                                      dataset_params=params, root=feature_root, device=device, log=None,
                                      seed=cfg.seed if cfg.model.weights == "random" else 0)
              for split in ["train", *cfg.data.eval_splits]}
    extract_s = time.perf_counter() - t0
    pool_cache = open_cache(caches["train"])
    if not np.array_equal(np.asarray(pool_cache.ids), pool.ids):
        raise RuntimeError(f"the pool cache {caches['train']} lists other ids than the dataset {pool.name}: "
                           f"delete it and run again")

    # 2. the probe acquires (its own record, resumable)
    t1 = time.perf_counter()
    sel = run_probe(pool_cache, {s: caches[s] for s in cfg.data.eval_splits}, out / SELECTION_DIR, al=cfg.al,
                    seed=cfg.seed, C=C)
    select_s = time.perf_counter() - t1
    say(f"  selected {len(sel.acquisitions)} labels with a probe in {select_s:.1f}s")

    # 3. one finetuning on the final labelled set, as the full loop's last round would run it
    sizes = acquisition_sizes(cfg.al)
    id_to_pos = {int(i): p for p, i in enumerate(pool.ids)}
    labelled = np.array([id_to_pos[int(i)] for i in [*sel.seed_set["id"], *sel.acquisitions["id"]]], dtype=np.int64)
    shares = group_shares(pool.labels, pool.attributes[pool.spurious_column].to_numpy()) if pool.spurious_column else None
    digests["pool_cache"] = cache_digest(pool_cache)
    config = {**cfg.to_dict(), "mode": "select_then_finetune", "probe": {"C": C}}
    meta = run_meta(pool, sizes, shares)
    writer = RunWriter(out, config, meta, defaults=RunConfig().to_dict(), digests=digests)
    if writer.completed_rounds == len(sizes) + 1:  # finished before: nothing to finetune again
        writer.write_state(finished=True)
        return load_run(out)
    t2 = time.perf_counter()
    net = maybe_compile(model, cfg.finetune.compile)
    train = finetune(net, pool, labelled, cfg.finetune, device=device, seed=round_torch_seed(cfg.seed, len(sizes)))
    t3 = time.perf_counter()
    metrics = {s: evaluate(net, ds, device=device, batch_size=cfg.eval_batch_size, train_shares=shares,
                           workers=cfg.loader_workers) for s, ds in evals.items()}
    t4 = time.perf_counter()
    say(f"  finetuned once on {len(labelled)} labels in {t3 - t2:.1f}s: "
        f"worst={next(iter(metrics.values()), {}).get('worst_group', float('nan')):.3f}")

    # 4. the record: the probe's rounds (its acquisitions and metrics), the last with the finetuned net
    rows = [line for line in (out / SELECTION_DIR / "rounds.jsonl").read_text().splitlines() if line.strip()]
    n_eval = sum(len(d) for d in evals.values())
    for r in range(writer.completed_rounds, len(rows)):
        row = json.loads(rows[r])
        last = r == len(rows) - 1
        row["train"] = {"by": "probe", **row.get("train", {})}
        if r == 0:
            row["timings"] = {**row.get("timings", {}), "extract_s": extract_s,
                              "passes": {"forward": len(pool) + n_eval, "backward": 0}}  # the feature caches
        if last:
            row["metrics"] = metrics
            row["train"] = {"by": "finetune", **train}
            row["timings"] = {"select_s": select_s, "train_s": t3 - t2, "eval_s": t4 - t3,
                              "data_in_train_s": train["data_seconds"],
                              "passes": {"forward": train["steps"] * cfg.finetune.batch_size + n_eval,
                                         "backward": train["steps"] * cfg.finetune.batch_size}}
        writer.append_round(row, finished=last)
    if writer.completed_rounds == len(rows):
        writer.write_state(finished=True)
    return load_run(out)
