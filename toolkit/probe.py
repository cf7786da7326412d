"""Probe-only active learning: the same protocol on frozen cached features.

A multinomial logistic regression (L2, sklearn's `C` convention) on standardised
embeddings replaces finetuning, so one run takes seconds. Each round's fit is
warm-started from the previous round's weights; the problem is strictly convex, so the
optimum (and the acquisitions) are those of a cold start up to the solver tolerance.
It writes the same run record as the full loop, so every analysis reads both.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .acquisition import StreamingTopK, get_acquisition, score_logits
from .config import ALConfig
from .features import FeatureCache, open_cache
from .loop import acquisition_sizes, check_budget, draw_seed_set, record_rows
from .metrics import group_metrics, group_shares
from .record import RunWriter, load_run, RunRecord
from .repro import round_rng


class LinearProbe:
    """Multinomial logistic regression: minimise C * sum_i CE_i + ||W||^2 / 2 (bias unpenalised).

    Estimator style: parameters in __init__, `fit` returns self, fitted attributes end in _.
    """

    def __init__(self, *, C: float = 1.0, max_iter: int = 200, tol: float = 1e-7) -> None:
        self.C, self.max_iter, self.tol = C, max_iter, tol

    def fit(self, X: torch.Tensor, y: torch.Tensor, n_classes: int, *, warm_start: "LinearProbe | None" = None):
        d = X.shape[1]
        if warm_start is not None:
            W, b = warm_start.coef_.clone(), warm_start.intercept_.clone()
        else:
            W, b = torch.zeros(d, n_classes, dtype=X.dtype), torch.zeros(n_classes, dtype=X.dtype)
        W.requires_grad_(True)
        b.requires_grad_(True)
        opt = torch.optim.LBFGS([W, b], lr=1, max_iter=self.max_iter, tolerance_grad=self.tol,
                                tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(X @ W + b, y, reduction="sum") + (W * W).sum() / (2 * self.C)
            loss.backward()
            return loss

        opt.step(closure)
        self.coef_, self.intercept_ = W.detach(), b.detach()
        return self

    def decision_function(self, X: torch.Tensor) -> torch.Tensor:
        return X @ self.coef_ + self.intercept_


def _standardise(pool: np.ndarray, *others: np.ndarray) -> list[torch.Tensor]:
    mean, std = pool.mean(0), pool.std(0) + 1e-6
    return [torch.from_numpy(((a - mean) / std).astype(np.float32)) for a in (pool, *others)]


def run_probe(
    pool: FeatureCache | str | Path,
    evals: dict[str, FeatureCache | str | Path],
    out_dir: str | Path,
    *,
    al: ALConfig,
    seed: int = 0,
    C: float = 1.0,
    score_chunk: int = 65_536,
    log=None,
) -> RunRecord:
    """One probe-only active-learning run (resumable, like the full loop)."""
    pool = pool if isinstance(pool, FeatureCache) else open_cache(pool)
    evals = {s: (c if isinstance(c, FeatureCache) else open_cache(c)) for s, c in evals.items()}
    get_acquisition(al.strategy)
    n = len(pool)
    check_budget(al, n)
    sizes = acquisition_sizes(al)
    fp = pool.fingerprint
    for split, c in evals.items():
        if (c.fingerprint["model"], c.fingerprint["weights"]) != (fp["model"], fp["weights"]):
            raise ValueError(f"eval cache {c.path} was extracted with {c.fingerprint['model']}/"
                             f"{c.fingerprint['weights']}, the pool with {fp['model']}/{fp['weights']}")
    labels, spurious = pool.labels, pool.spurious
    shares = group_shares(labels, spurious) if spurious is not None else None
    config = {"mode": "probe", "seed": seed, "al": asdict(al),
              "model": {"name": fp["model"], "weights": fp["weights"].split(":")[0], "weights_id": fp["weights"],
                        "layer": fp["layer"]},
              "data": {"name": fp["dataset"], "params": fp["dataset_params"], "pool_cache": str(pool.path),
                       "eval_caches": {s: str(c.path) for s, c in evals.items()}},
              "probe": {"C": C}}
    meta = {"dataset": fp["dataset"], "pool_size": n, "class_names": list(pool.class_names),
            "label_column": pool.label_column, "spurious_column": pool.spurious_column,
            "pool_group_shares": shares, "acquisition_sizes": sizes}
    writer = RunWriter(out_dir, config, meta)
    X, *X_eval = _standardise(np.asarray(pool.embeddings, dtype=np.float32),
                              *[np.asarray(c.embeddings, dtype=np.float32) for c in evals.values()])
    y_all = torch.from_numpy(labels)
    n_classes = len(pool.class_names)

    id_to_pos = {int(i): p for p, i in enumerate(pool.ids)}
    if writer.completed_rounds:
        labelled = np.array([id_to_pos[i] for i in writer.labelled_ids()], dtype=np.int64)
    else:
        labelled = draw_seed_set(labels, al.seed_size, al.seed_set, round_rng(seed, 0, stream=1))
    seed_rows = record_rows(pool.ids, labels, spurious, labelled)
    probe = None
    for r in range(writer.completed_rounds, len(sizes) + 1):
        t0 = time.perf_counter()
        probe = LinearProbe(C=C).fit(X[labelled], y_all[labelled], n_classes, warm_start=probe)
        t1 = time.perf_counter()
        metrics = {}
        for (split, c), Xe in zip(evals.items(), X_eval):
            preds = probe.decision_function(Xe).argmax(1).numpy()
            metrics[split] = group_metrics(preds, c.labels, c.spurious, train_group_shares=shares)
        t2 = time.perf_counter()
        acquired = []
        if r < len(sizes):
            rng = round_rng(seed, r + 1, stream=2)
            unlabelled = np.setdiff1d(np.arange(n), labelled)
            if al.pool_subsample and al.pool_subsample < len(unlabelled):
                unlabelled = np.sort(rng.choice(unlabelled, al.pool_subsample, replace=False))
            top = StreamingTopK(sizes[r])
            for i in range(0, len(unlabelled), score_chunk):
                chunk = unlabelled[i:i + score_chunk]
                logits = probe.decision_function(X[chunk]).numpy() if get_acquisition(al.strategy)[0] != "none" \
                    else np.empty((len(chunk), 0))
                top.update(score_logits(al.strategy, logits, rng), chunk)
            picks, scores = top.result()
            acquired = record_rows(pool.ids, labels, spurious, picks, scores)
            labelled = np.concatenate([labelled, picks])
        t3 = time.perf_counter()
        row = {"round": r, "n_labels": int(len(labelled) - len(acquired)), "metrics": metrics,
               "train": {"solver": "lbfgs", "C": C}, "acquired": acquired,
               "timings": {"train_s": t1 - t0, "eval_s": t2 - t1, "score_s": t3 - t2}}
        if r == 0:
            row["seed_set"] = seed_rows
        writer.append_round(row, finished=r == len(sizes))
        if log:
            m = next(iter(metrics.values()), {})
            log(f"  round {r} labels={row['n_labels']} worst={m.get('worst_group', float('nan')):.3f}")
    return load_run(out_dir)


def score_cache_streaming(
    cache: str | Path,
    probe: LinearProbe,
    strategy: str,
    k: int,
    *,
    mean: np.ndarray,
    std: np.ndarray,
    chunk_rows: int = 65_536,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k ids and scores over a cache too large for memory: reads `chunk_rows` rows at a
    time from the HDF5 file, so memory stays bounded whatever the pool size."""
    c = open_cache(cache, lazy=True)
    emb = c.embeddings
    top = StreamingTopK(k)
    try:
        for lo in range(0, len(c), chunk_rows):
            x = torch.from_numpy(((emb[lo:lo + chunk_rows].astype(np.float32) - mean) / std).astype(np.float32))
            logits = probe.decision_function(x).numpy()
            top.update(score_logits(strategy, logits, rng), c.ids[lo:lo + chunk_rows])
    finally:
        emb.file.close()
    return top.result()
