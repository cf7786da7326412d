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

from toolkit._util.faults import kill_point
from toolkit._util.repro import round_rng
from toolkit.al.acquisition import StreamingTopK, get_acquisition, score_logits
from toolkit.al.protocol import (
    acquisition_sizes,
    attribute_shares,
    candidates,
    check_budget,
    dataset_rows,
    draw_seed_set,
    split_metrics,
)
from toolkit.config import ALConfig
from toolkit.errors import CacheError, MissingFileError
from toolkit.features.cache import FeatureCache, open_cache
from toolkit.metrics import group_shares
from toolkit.record import RunRecord, RunWriter, load_run


class LinearProbe:
    """Multinomial logistic regression: minimise C * sum_i CE_i + ||W||^2 / 2 (bias unpenalised),
    sklearn's objective, solved by scipy's L-BFGS with an analytic gradient in float64.

    For two classes this softmax model with C equals sklearn's binary LogisticRegression
    with 2C (the two weight vectors share the penalty). Warm starts begin from the previous
    round's (W, b); the problem is strictly convex,
    so they reach the same optimum in far fewer iterations.

    Estimator style: parameters in __init__, `fit` returns self, fitted attributes end in _.
    """

    def __init__(self, *, C: float = 1.0, max_iter: int = 1000, tol: float = 1e-4) -> None:
        self.C, self.max_iter, self.tol = C, max_iter, tol

    def fit(self, X: torch.Tensor, y: torch.Tensor, n_classes: int, *, warm_start: "LinearProbe | None" = None):
        from scipy.optimize import minimize

        Xn = X.numpy()  # float32 matmuls: the objective is memory-bound, the optimiser runs in float64
        n, d = Xn.shape
        onehot = np.eye(n_classes)[y.numpy()]
        theta0 = np.zeros((d + 1, n_classes))  # rows 0..d-1: W, last row: b
        if warm_start is not None:
            theta0[:-1], theta0[-1] = warm_start.coef_.numpy(), warm_start.intercept_.numpy()

        def objective(flat):
            theta = flat.reshape(d + 1, n_classes)
            W, b = theta[:-1], theta[-1]
            z = Xn @ W.astype(np.float32) + b
            z = z - z.max(axis=1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            # scaled by 1 / (C n) as sklearn does, so `tol` means what sklearn's tol means
            g_z = (np.exp(logp) - onehot) / n  # d loss / d logits
            loss = -(onehot * logp).sum() / n + 0.5 * (W * W).sum() / (self.C * n)
            grad_w = (g_z.T.astype(np.float32) @ Xn).T  # (C, n) @ (n, d): no transposed copy of X
            return loss, np.vstack([grad_w + W / (self.C * n), g_z.sum(axis=0)]).ravel()

        res = minimize(objective, theta0.ravel(), jac=True, method="L-BFGS-B",
                       options={"maxiter": self.max_iter, "gtol": self.tol, "ftol": 1e-12})
        theta = res.x.reshape(d + 1, n_classes)
        self.coef_ = torch.from_numpy(theta[:-1].astype(np.float32))
        self.intercept_ = torch.from_numpy(theta[-1].astype(np.float32))
        self.n_iter_ = int(res.nit)
        return self

    def decision_function(self, X: torch.Tensor) -> torch.Tensor:
        # (C, d) @ (d, n) is ~2x faster on CPU than (n, d) @ (d, C) for C = 2
        return (self.coef_.T.contiguous() @ X.T).T + self.intercept_

    def relative_logits(self, X: torch.Tensor) -> torch.Tensor:
        """Logits up to a per-row constant: the same softmax, argmax and uncertainty scores.
        For two classes that is (0, z1 - z0), one matrix-vector product: twice as fast as
        `decision_function` on this memory-bound pass over the pool."""
        if self.coef_.shape[1] != 2:
            return self.decision_function(X)
        diff = X @ (self.coef_[:, 1] - self.coef_[:, 0]) + (self.intercept_[1] - self.intercept_[0])
        return torch.stack([torch.zeros_like(diff), diff], dim=1)


def _standardise(pool: np.ndarray, *others: np.ndarray) -> list[torch.Tensor]:
    mean, std = pool.mean(0), pool.std(0) + 1e-6
    return [torch.from_numpy(((a - mean) / std).astype(np.float32)) for a in (pool, *others)]


def run_probe(pool: FeatureCache | str | Path, evals: dict[str, FeatureCache | str | Path], out_dir: str | Path,
              **kwargs) -> RunRecord:
    """One probe-only active-learning run on cached features, holding the run directory's lock.

    A logistic-regression probe on the frozen embeddings replaces finetuning; it writes the
    same run record as the full loop, so every analysis reads both.

    Args:
        pool: the training split's feature cache (or its path): what is labelled and acquired.
        evals: {split name: feature cache or path} to evaluate on each round, e.g. {"test": ...}.
        out_dir: the run directory (resumes a partial run of the same config).
        **kwargs: `al` (an `ALConfig`: strategy, seed set, round sizes, budget), `seed`,
            `C` (the probe's inverse L2 strength, default 1.0), `log`, `max_rounds`.

    Returns:
        The `RunRecord`.

    Examples:
        >>> import toolkit
        >>> from toolkit.config import ALConfig
        >>> small = {"n_train": 240, "n_val": 40, "n_test": 160}
        >>> pool, test = (toolkit.extract_features("toy_resnet", "toyworld", s, weights="random",
        ...                                        dataset_params=small, log=None) for s in ("train", "test"))
        >>> rec = toolkit.run_probe(pool, {"test": test}, "/tmp/altk-doc/probe",
        ...                         al=ALConfig(seed_size=10, per_round=5, budget=10), seed=0)
        >>> rec.rounds["n_labels"].tolist()
        [10, 15, 20]
    """
    from toolkit._util.locks import exclusive

    with exclusive(Path(out_dir), "probe run", directory=True):
        return _run_probe(pool, evals, out_dir, **kwargs)


def _run_probe(
    pool: FeatureCache | str | Path,
    evals: dict[str, FeatureCache | str | Path],
    out_dir: str | Path,
    *,
    al: ALConfig,
    seed: int = 0,
    C: float = 1.0,
    score_chunk: int = 65_536,
    log=None,
    max_rounds: int | None = None,
) -> RunRecord:
    """One probe-only active-learning run (resumable, like the full loop).

    Each round's fit is warm-started from the previous round's probe, so the probe is
    saved with every round (`<run>/probe_state/round_NNN.npz`) and a resumed run starts
    from the same weights as an uninterrupted one: the same record. `max_rounds` stops
    after that many rounds in total (tests use it to simulate a kill)."""
    if not C > 0:
        raise CacheError(f"the probe's C (inverse L2 strength) must be > 0, got {C}")
    pool = pool if isinstance(pool, FeatureCache) else open_cache(pool)
    evals = {s: (c if isinstance(c, FeatureCache) else open_cache(c)) for s, c in evals.items()}
    for split, c in evals.items():
        if Path(c.path).resolve() == Path(pool.path).resolve() and str(pool.path) != "<memory>":
            raise CacheError(f"eval split {split!r} is the pool's own cache ({c.path}): evaluating on the pool "
                             f"would score the examples being labelled. Pass the cache of a held-out split.")
    get_acquisition(al.strategy)
    n = len(pool)
    check_budget(al, n)
    sizes = acquisition_sizes(al)
    fp = pool.fingerprint
    for split, c in evals.items():
        if (c.fingerprint["model"], c.fingerprint["weights"]) != (fp["model"], fp["weights"]):
            raise CacheError(f"eval cache {c.path} was extracted with {c.fingerprint['model']}/"
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
            "pool_group_shares": shares, "pool_attribute_shares": attribute_shares(pool),
            "acquisition_sizes": sizes}
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
    seed_rows = dataset_rows(pool, labelled)
    probe = load_probe_state(Path(out_dir), writer.completed_rounds - 1, C) if writer.completed_rounds else None
    for r in range(writer.completed_rounds, len(sizes) + 1):
        if max_rounds is not None and r >= max_rounds:
            break
        t0 = time.perf_counter()
        probe = LinearProbe(C=C).fit(X[labelled], y_all[labelled], n_classes, warm_start=probe)
        t1 = time.perf_counter()
        metrics = {}
        for (split, c), Xe in zip(evals.items(), X_eval):
            preds = probe.relative_logits(Xe).argmax(1).numpy()
            metrics[split] = split_metrics(preds, c, shares)
        t2 = time.perf_counter()
        acquired = []
        if r < len(sizes):
            unlabelled, rng = candidates(n, labelled, al, seed, r)
            top = StreamingTopK(sizes[r])
            needs_model = get_acquisition(al.strategy)[0] != "none"
            for i in range(0, n, score_chunk):  # contiguous slices: no copy of the pool per round
                logits = probe.relative_logits(X[i:i + score_chunk]).numpy() if needs_model \
                    else np.empty((min(score_chunk, n - i), 0))
                keep = unlabelled[(unlabelled >= i) & (unlabelled < i + score_chunk)]
                top.update(score_logits(al.strategy, logits[keep - i], rng), keep)
            picks, scores = top.result()
            acquired = dataset_rows(pool, picks, scores)
            labelled = np.concatenate([labelled, picks])
        t3 = time.perf_counter()
        row = {"round": r, "n_labels": int(len(labelled) - len(acquired)), "metrics": metrics,
               "train": {"solver": "lbfgs", "C": C}, "acquired": acquired,
               "timings": {"train_s": t1 - t0, "eval_s": t2 - t1, "score_s": t3 - t2}}
        if r == 0:
            row["seed_set"] = seed_rows
        kill_point(f"probe:scored:{r}")
        save_probe_state(probe, Path(out_dir), r)  # before the round's record, as the full loop's optimiser state
        kill_point(f"probe:before_record:{r}")
        writer.append_round(row, finished=r == len(sizes))
        _probe_state_path(Path(out_dir), r - 1).unlink(missing_ok=True)
        if log:
            m = next(iter(metrics.values()), {})
            log(f"  round {r} labels={row['n_labels']} worst={m.get('worst_group', float('nan')):.3f}")
    if writer.completed_rounds == len(sizes) + 1:  # also repairs a state.json that a kill left behind
        writer.write_state(finished=True)
    return load_run(out_dir)


def _probe_state_path(run_dir: Path, round_index: int) -> Path:
    return run_dir / "probe_state" / f"round_{round_index:03d}.npz"


def save_probe_state(probe: LinearProbe, run_dir: Path, round_index: int) -> None:
    """The round's fitted probe (the next round's warm start), written whole then renamed."""
    path = _probe_state_path(run_dir, round_index)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(tmp, coef=probe.coef_.numpy(), intercept=probe.intercept_.numpy())
    tmp.replace(path)


def load_probe_state(run_dir: Path, round_index: int, C: float) -> LinearProbe:
    path = _probe_state_path(run_dir, round_index)
    if not path.exists():
        raise MissingFileError(f"{path} is missing: the probe run cannot resume from round {round_index + 1} "
                                f"without the probe its last completed round fitted (the next fit's warm start). "
                                f"Delete {run_dir} to start the run again.")
    with np.load(path) as f:
        probe = LinearProbe(C=C)
        probe.coef_, probe.intercept_ = torch.from_numpy(f["coef"]), torch.from_numpy(f["intercept"])
    return probe


def score_cache_streaming(
    cache: str | Path,
    probe: LinearProbe,
    strategy: str,
    k: int,
    *,
    mean: np.ndarray,
    std: np.ndarray,
    chunk_rows: int = 16_384,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k ids and scores over a cache too large for memory: reads `chunk_rows` rows at a
    time from the HDF5 file, so memory is bounded by the chunk (about 20 bytes x chunk_rows
    x dim at the peak), whatever the pool size."""
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
