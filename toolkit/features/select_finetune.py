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

import json
import time
from pathlib import Path

import numpy as np

from toolkit._util.repro import round_torch_seed
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
        >>> rec = run_select_then_finetune(cfg, "altk-doc/select-once")
        >>> rec.mode, rec.rounds["n_labels"].tolist()
        ('select_then_finetune', [10, 15])
    """
    from toolkit._util.locks import exclusive

    with exclusive(Path(out_dir), "run", directory=True):
        return _run(cfg, Path(out_dir), C=C, feature_root=feature_root, log=log)


def _run(cfg: RunConfig, out: Path, *, C: float, feature_root, log):
    from toolkit.al.loop import prepare_run
    from toolkit.record import check_inputs_unchanged

    say = log or (lambda _: None)
    # a run made on other data or weights is refused here, before features are extracted for the new ones
    run = prepare_run(cfg)
    check_inputs_unchanged(out, run.digests)
    pool_cache, caches, extract_s = _features(cfg, run, feature_root)
    t1 = time.perf_counter()
    sel = _select(cfg, out, pool_cache, caches, C)
    select_s = time.perf_counter() - t1
    say(f"  selected {len(sel.acquisitions)} labels with a probe in {select_s:.1f}s")
    return _finetune(cfg, out, run, sel, C=C, pool_cache=pool_cache,
                                stage_s={"extract_s": extract_s, "select_s": select_s}, say=say)


def _features(cfg: RunConfig, run, feature_root):
    """1. Features (a cache another run already made is reused: its seconds are then ~0): the
    opened pool cache, {split: cache path} for the pool and every evaluation split, and the
    extraction's seconds."""
    from toolkit.features.cache import extract_features, open_cache

    t0 = time.perf_counter()
    caches = {split: extract_features(cfg.model.name, cfg.data.name, split, weights=cfg.model.weights,
                                      dataset_params=cfg.data_params(), root=feature_root, device=run.device,
                                      log=None, seed=cfg.seed if cfg.model.weights == "random" else 0)
              for split in ["train", *cfg.data.eval_splits]}
    extract_s = time.perf_counter() - t0
    pool_cache = open_cache(caches["train"])
    if not np.array_equal(np.asarray(pool_cache.ids), run.pool.ids):
        raise RuntimeError(f"the pool cache {caches['train']} lists other ids than the dataset {run.pool.name}: "
                           f"delete it and run again")
    return pool_cache, caches, extract_s


def _select(cfg: RunConfig, out: Path, pool_cache, caches: dict, C: float):
    """2. The probe acquires: its own record under `out/selection`, resumable."""
    from toolkit.features.probe import run_probe

    return run_probe(pool_cache, {s: caches[s] for s in cfg.data.eval_splits}, out / SELECTION_DIR, al=cfg.al,
                     seed=cfg.seed, C=C)


def _finetune(cfg: RunConfig, out: Path, run, sel, *, C: float, pool_cache, stage_s: dict, say):
    """3. One finetuning on the final labelled set, as the full loop's last round would run it."""
    from toolkit.al.finetune import finetune, maybe_compile
    from toolkit.al.loop import evaluate
    from toolkit.al.rounds import finish_run
    from toolkit.features.probe import cache_digest
    from toolkit.record import RunWriter

    pool, n_rounds = run.pool, len(run.sizes) + 1
    id_to_pos = {int(i): p for p, i in enumerate(pool.ids)}
    labelled = np.array([id_to_pos[int(i)] for i in [*sel.seed_set["id"], *sel.acquisitions["id"]]], dtype=np.int64)
    digests = {**run.digests, "pool_cache": cache_digest(pool_cache)}
    config = {**cfg.to_dict(), "mode": "select_then_finetune", "probe": {"C": C}}
    writer = RunWriter(out, config, run.meta, defaults=RunConfig().to_dict(), digests=digests)
    if writer.completed_rounds == n_rounds:  # finished before: nothing to finetune again
        return finish_run(writer, n_rounds)
    t2 = time.perf_counter()
    net = maybe_compile(run.model, cfg.finetune.compile)
    train = finetune(net, pool, labelled, cfg.finetune, device=run.device, seed=round_torch_seed(cfg.seed, n_rounds - 1))
    t3 = time.perf_counter()
    metrics = {s: evaluate(net, ds, device=run.device, batch_size=cfg.eval_batch_size, train_shares=run.shares,
                           workers=cfg.loader_workers) for s, ds in run.evals.items()}
    t4 = time.perf_counter()
    say(f"  finetuned once on {len(labelled)} labels in {t3 - t2:.1f}s: "
        f"worst={next(iter(metrics.values()), {}).get('worst_group', float('nan')):.3f}")
    return _record(cfg, out, writer, run, metrics, train,
                   {**stage_s, "train_s": t3 - t2, "eval_s": t4 - t3})


def _record(cfg: RunConfig, out: Path, writer, run, metrics: dict, train: dict, seconds: dict):
    """4. The record: the probe's rounds (its acquisitions and metrics), the last with the finetuned net."""
    from toolkit.al.rounds import finish_run, record_round
    from toolkit.record import committed_lines

    rows = committed_lines(out / SELECTION_DIR / "rounds.jsonl")  # a torn last append is not a round
    n_eval = sum(len(d) for d in run.evals.values())
    for r in range(writer.completed_rounds, len(rows)):
        row = json.loads(rows[r])
        last = r == len(rows) - 1
        row["train"] = {"by": "probe", **row.get("train", {})}
        if r == 0:
            row["timings"] = {**row.get("timings", {}), "extract_s": seconds["extract_s"],
                              "passes": {"forward": len(run.pool) + n_eval, "backward": 0}}  # the feature caches
        if last:
            row["metrics"] = metrics
            row["train"] = {"by": "finetune", **train}
            row["timings"] = {"select_s": seconds["select_s"], "train_s": seconds["train_s"],
                              "eval_s": seconds["eval_s"], "data_in_train_s": train["data_seconds"],
                              "passes": {"forward": train["steps"] * cfg.finetune.batch_size + n_eval,
                                         "backward": train["steps"] * cfg.finetune.batch_size}}
        record_round(writer, row, finished=last)
    return finish_run(writer, len(rows))
