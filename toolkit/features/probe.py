"""Probe-only active learning: the same protocol on frozen cached features.

A multinomial logistic regression (L2, sklearn's `C` convention) on standardised
embeddings replaces finetuning, so one run takes seconds. Each round's fit is
warm-started from the previous round's weights; the problem is strictly convex, so the
optimum (and the acquisitions) are those of a cold start up to the solver tolerance.
It writes the same run record as the full loop, so every analysis reads both.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from toolkit._util.atomic import atomic_path
from toolkit._util.repro import round_rng
from toolkit.al.acquisition import ScoreStrategy, StreamingTopK, build_inputs, get_strategy, score_logits
from toolkit.al.protocol import (
    DatasetRows,
    SplitMetrics,
    acquisition_sizes,
    candidates,
    check_budget,
    check_classes,
    pool_shares,
    run_meta,
)
from toolkit.al.rounds import clean_states, finish_run, record_round, resume_state, round_row, start_labels
from toolkit.config import ALConfig, validate_al
from toolkit.errors import CacheError, ConfigError, MissingFileError
from toolkit.features import solver
from toolkit.features.cache import FeatureCache, open_cache
from toolkit.record import RunRecord, RunWriter, committed_lines


class LinearProbe:
    """Multinomial logistic regression: minimise C * sum_i CE_i + ||W||^2 / 2 (bias unpenalised),
    sklearn's objective, solved by Newton's method in the dual (`toolkit.features.solver`,
    float64 torch): W = X^T A P, so each step is one small factorisation on the rows' Gram matrix.

    For two classes this softmax model with C equals sklearn's binary LogisticRegression
    with 2C (the two weight vectors share the penalty). Warm starts begin from the previous
    round's solution; the problem is strictly convex, so they reach the same optimum in fewer
    steps.

    Estimator style: parameters in __init__, `fit` returns self, fitted attributes end in _
    (`coef_` (d, K) and `intercept_` (K) in float32; `dual_` A and `beta_` in float64).
    """

    def __init__(self, *, C: float = 1.0, max_iter: int = 100, tol: float = 1e-4) -> None:
        self.C, self.max_iter, self.tol = C, max_iter, tol

    def fit(self, X: torch.Tensor, y: torch.Tensor, n_classes: int, *, warm_start: "LinearProbe | None" = None,
            gram: torch.Tensor | None = None):
        """Fit on rows X (n, d) and labels y; `gram`: X X^T in float64 if already at hand."""
        X64 = X.to(torch.float64)
        Q = X64 @ X64.T if gram is None else gram
        A0 = beta0 = None
        if warm_start is not None:  # any start reaches the optimum; this one is close to it
            A0 = solver.dual_warm_start(X64, warm_start.coef_)
            beta0 = warm_start.intercept_.to(torch.float64) @ solver.helmert(n_classes).T
        A, beta, steps = solver.fit_dual(Q, y, n_classes, self.C, A0=A0, beta0=beta0, tol=self.tol,
                                         max_iter=self.max_iter)
        return self._set(X64, A, beta, n_classes, steps)

    def _set(self, X64: torch.Tensor, A: torch.Tensor, beta: torch.Tensor, n_classes: int, steps: int):
        W, b = solver.primal(X64, A, beta, n_classes)
        self.coef_, self.intercept_ = W.to(torch.float32), b.to(torch.float32)
        self.dual_, self.beta_, self.n_iter_ = A, beta, int(steps)
        return self

    def decision_function(self, X: torch.Tensor) -> torch.Tensor:
        # (C, d) @ (d, n) is ~2x faster on CPU than (n, d) @ (d, C) for C = 2
        return (self.coef_.T.contiguous() @ X.T).T + self.intercept_


def column_moments(emb, chunk_rows: int = 16_384) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and std (float64 sums, chunk by chunk): the same numbers for an array in
    memory and for an HDF5 dataset read in chunks, whatever its dtype."""
    n = len(emb)
    s = np.zeros(emb.shape[1]); ss = np.zeros(emb.shape[1])
    for lo in range(0, n, max(chunk_rows, 16_384)):
        x = np.asarray(emb[lo:lo + max(chunk_rows, 16_384)], dtype=np.float64)
        s += x.sum(0)
        ss += np.einsum("ij,ij->j", x, x)
    mean = s / n
    return mean, np.sqrt(np.maximum(ss / n - mean * mean, 0.0)) + 1e-6


def standardise(a, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    """Rows of `a` (any float dtype) standardised, computed in float64, stored as float32."""
    return torch.from_numpy(((np.asarray(a, dtype=np.float64) - mean) / std).astype(np.float32))


class _PoolRows:
    """The standardised pool: in memory (float32), or streamed from its HDF5 file chunk by
    chunk (`stream=True`: pools larger than memory). Both give the same numbers."""

    def __init__(self, cache: FeatureCache, stream: bool, chunk_rows: int) -> None:
        self.chunk_rows = chunk_rows
        if stream:
            self.lazy = open_cache(cache.path, lazy=True)
            self.emb = self.lazy.embeddings
        else:
            self.lazy, self.emb = None, cache.embeddings
        self.mean, self.std = column_moments(self.emb, chunk_rows)
        self.X = None
        if not stream:  # float32 in memory, converted chunk by chunk (no float64 copy of the pool)
            self.X = torch.empty(self.emb.shape, dtype=torch.float32)
            for lo in range(0, len(self.emb), chunk_rows):
                self.X[lo:lo + chunk_rows] = standardise(self.emb[lo:lo + chunk_rows], self.mean, self.std)
        # each standardised row's 2-norm: what bounds a product's rounding error (`_Exact`)
        self.norms = np.concatenate([row_norms(c) for _, _, c in self.chunks(len(self.emb))]) \
            if len(self.emb) else np.empty(0)

    def rows(self, positions: np.ndarray) -> torch.Tensor:
        if self.X is not None:  # index_select: several times faster than X[positions] here
            return torch.index_select(self.X, 0, torch.from_numpy(np.asarray(positions, dtype=np.int64)))
        order = np.argsort(positions, kind="stable")  # h5py reads sorted, unique indices
        out = torch.empty(len(positions), self.emb.shape[1])
        out[torch.from_numpy(order)] = standardise(self.emb[np.sort(positions)], self.mean, self.std)
        return out

    def chunks(self, n: int):
        """(lo, hi, standardised rows) in chunks of `chunk_rows`; a streamed pool is read from
        its file in blocks of at least 16,384 rows (fewer, larger reads)."""
        step = self.chunk_rows if self.X is not None else max(self.chunk_rows, 16_384 // self.chunk_rows * self.chunk_rows)
        for start in range(0, n, step):
            block = self.X[start:start + step] if self.X is not None else \
                standardise(self.emb[start:start + step], self.mean, self.std)
            for lo in range(0, len(block), self.chunk_rows):
                yield start + lo, start + min(lo + self.chunk_rows, len(block)), block[lo:lo + self.chunk_rows].numpy()

    def view(self):
        """The standardised pool as an array-like for batch strategies: the array in memory, or
        a view that standardises the rows it is asked for from the file."""
        return self.X.numpy() if self.X is not None else _StandardisedView(self)

    def close(self) -> None:
        if self.lazy is not None:
            self.emb.file.close()


def row_norms(X: np.ndarray) -> np.ndarray:
    """2-norms of float32 rows, in float64."""
    x = np.asarray(X, dtype=np.float64)
    return np.sqrt(np.einsum("ij,ij->i", x, x))


class _StandardisedView:
    """Rows of a streamed pool, standardised on read: `v[lo:hi]`, `v[positions]`, `len(v)`, `v.shape`."""

    def __init__(self, rows: _PoolRows) -> None:
        self.rows = rows
        self.shape = rows.emb.shape

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            return standardise(self.rows.emb[key], self.rows.mean, self.rows.std).numpy()
        return self.rows.rows(np.asarray(key)).numpy()


# dataset params that may differ between a pool and its held-out splits: what only the pool's
# sampling uses, and the loaders' per-split digests of their files
POOL_ONLY_PARAMS = ("matched_fraction", "resample_seed", "content", "in_memory", "pool_size", "sample_seed")


def check_eval_cache(pool: FeatureCache, cache: FeatureCache, split: str) -> None:
    """Refuse an evaluation cache that is not a held-out split of the pool's own dataset and task,
    embedded the same way: its metrics would be recorded as `split` and silently mean nothing."""
    a, b = pool.fingerprint, cache.fingerprint
    same = ("model", "weights", "layer", "transform", "compute", "dataset")
    differ = [k for k in same if a.get(k) != b.get(k)]
    pa = {k: v for k, v in (a.get("dataset_params") or {}).items() if k not in POOL_ONLY_PARAMS}
    pb = {k: v for k, v in (b.get("dataset_params") or {}).items() if k not in POOL_ONLY_PARAMS}
    differ += [f"dataset_params.{k}" for k in sorted(set(pa) | set(pb)) if pa.get(k) != pb.get(k)]
    if differ:
        raise CacheError(f"eval cache {split}={cache.path} does not belong with the pool {pool.path}: "
                         + "; ".join(f"{k}: pool {_get(a, k)!r}, eval {_get(b, k)!r}" for k in differ[:4])
                         + ". Pass a held-out split extracted with the pool's model, weights and dataset params")
    shared = np.intersect1d(np.asarray(pool.ids), np.asarray(cache.ids))
    if len(shared):
        raise CacheError(f"eval cache {split}={cache.path} shares {len(shared)} of its {len(cache)} ids with the pool "
                         f"{pool.path} (e.g. id {int(shared[0])}): evaluating on pool examples would score what is "
                         f"being labelled. Pass the cache of a held-out split")


def _get(fp: dict, key: str):
    if key.startswith("dataset_params."):
        return (fp.get("dataset_params") or {}).get(key.split(".", 1)[1])
    return fp.get(key)


def cache_digest(cache: FeatureCache) -> str:
    """What a probe run reads from a cache: its fingerprint, ids, labels and embeddings' chunk digests."""
    import hashlib
    import json

    h = hashlib.sha256(json.dumps(cache.fingerprint, sort_keys=True, default=str).encode())
    h.update(np.asarray(cache.ids, dtype=np.int64).tobytes())
    h.update(np.asarray(cache.labels, dtype=np.int64).tobytes())
    h.update(json.dumps(getattr(cache, "chunk_digests", None) or [], default=str).encode())
    return h.hexdigest()[:16]


# fields of a probe run's config that name its inputs, not its settings: they follow the digests of
# the backbone's weights, of the dataset's files, and of the caches extracted from the two
_INPUT_FIELDS = (("model.weights_id", "weights"), ("data.params.content", "data"), ("data.params.sources", "data"),
                 ("data.params.composite_fingerprint", "data"), ("data.pool_cache", "feature caches"),
                 ("data.eval_caches", "feature caches"))


def check_probe_inputs(out_dir: str | Path, config: dict) -> None:
    """Refuse to resume or reuse a probe run made on other inputs, saying so: new weights or data
    give new caches (named by the digests of what they embed), so the run's config differs only in
    the fields that name its inputs, and `RunWriter` would call that a change of settings. A cache
    rebuilt in place is caught by the recorded cache digests (`RunWriter`)."""
    import yaml

    from toolkit.errors import RecordError
    from toolkit.record import config_diff, load_yaml

    run_dir = Path(out_dir)
    if not (run_dir / "config.yaml").exists() or not committed_lines(run_dir / "rounds.jsonl"):
        return  # nothing there, or a start without a round: the next start takes the folder over
    try:
        saved = (load_yaml((run_dir / "config.yaml").read_text()) or {}).get("config") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return  # RunWriter names a missing or damaged header
    differ = config_diff(saved, config)
    kinds = [next((kind for prefix, kind in _INPUT_FIELDS if f == prefix or f.startswith(prefix + ".")), None)
             for f in differ]
    if differ and None not in kinds:
        what = " and ".join(dict.fromkeys(k for k in ("weights", "data", "feature caches") if k in kinds))
        raise RecordError(
            f"{run_dir} holds a probe run started on other inputs: the {what} changed since (fields "
            f"{', '.join(differ[:4])}). Resuming it would mix the two in one record, and reusing it would report "
            f"the old inputs' results as the new ones'; start it in a new output directory (or restore the old "
            f"inputs).")


@dataclass(frozen=True)
class ProbeRun:
    """One probe run for `run_probes`: where its record goes, its protocol, seed and C.

    Args:
        out_dir: the run's record folder; a partial record of the same config is resumed.
        al: the active-learning protocol (seed set, rounds, strategy).
        seed: the run's seed (its seed set and every random draw).
        C: the probe's inverse L2 strength (sklearn's convention).

    Examples:
        >>> from toolkit.config import ALConfig
        >>> from toolkit.features.probe import ProbeRun
        >>> run = ProbeRun("altk-doc/probe-run", ALConfig(strategy="random", seed_size=10, per_round=5, budget=10), seed=3)
        >>> run.seed, run.C, run.al.strategy
        (3, 1.0, 'random')
    """

    out_dir: str | Path
    al: ALConfig
    seed: int = 0
    C: float = 1.0


def run_probe(pool: FeatureCache | str | Path, evals: dict[str, FeatureCache | str | Path], out_dir: str | Path,
              *, al: ALConfig, seed: int = 0, C: float = 1.0, score_chunk: int | None = None, stream: bool = False,
              device: str | None = None, log=None, max_rounds: int | None = None) -> RunRecord:
    """One probe-only active-learning run on cached features, holding the run directory's lock.

    A logistic-regression probe on the frozen embeddings replaces finetuning; it writes the
    same run record as the full loop, so every analysis reads both. It is `run_probes` with
    one run: the record is the one it gets in any batch.

    Args:
        pool: the training split's feature cache (or its path): what is labelled and acquired.
        evals: {split name: feature cache or path} to evaluate on each round, e.g. {"test": ...}.
        out_dir: the run directory (resumes a partial run of the same config).
        al: the protocol (`ALConfig`): strategy, seed set, round sizes, budget.
        seed: the run's seed (seed set, random scores, subsampling).
        C: the probe's inverse L2 strength (sklearn's convention).
        score_chunk: pool rows per chunk (default: about 2 MiB of rows, to stay in the CPU cache).
        stream: read the pool chunk by chunk from its file (pools larger than memory).
        device: where the pool's and the evaluation splits' wide products run (`run_probes`).
        log: where progress lines go (None for silence).
        max_rounds: stop after that many rounds in total (tests use it to simulate a kill).

    Returns:
        The `RunRecord`.

    Examples:
        >>> import toolkit
        >>> from toolkit.config import ALConfig, validate_al
        >>> small = {"n_train": 240, "n_val": 40, "n_test": 160}
        >>> pool, test = (toolkit.extract_features("toy_resnet", "toyworld", s, weights="random",
        ...                                        dataset_params=small, log=None) for s in ("train", "test"))
        >>> rec = toolkit.run_probe(pool, {"test": test}, "altk-doc/probe",
        ...                         al=ALConfig(seed_size=10, per_round=5, budget=10), seed=0)
        >>> rec.rounds["n_labels"].tolist()
        [10, 15, 20]
    """
    return run_probes(pool, evals, [ProbeRun(out_dir, al, seed, C)], score_chunk=score_chunk, stream=stream,
                      device=device, log=log, max_rounds=max_rounds)[0]


class _RunState:
    """One run's place in the lockstep: its writer, labelled positions, probe and round."""

    def __init__(self, spec: ProbeRun, writer: RunWriter, labelled: np.ndarray, seed_rows: list, probe, sizes) -> None:
        self.spec, self.writer, self.labelled, self.seed_rows = spec, writer, labelled, seed_rows
        self.probe, self.sizes, self.r = probe, sizes, writer.completed_rounds
        self.strategy = get_strategy(spec.al.strategy)
        self.ensemble: list[LinearProbe] = []  # bootstrap probes of this round (a strategy reading logit_samples)
        # the labelled rows' Gram, grown by each round's new rows; a resumed run first rebuilds
        # it with the blocks its earlier rounds added (`replay`), so its bits are the same
        self.gram = solver.Gram(len(labelled) + sum(sizes[self.r:]))
        self.replay = _gram_blocks(writer.rounds)

    @property
    def dir(self) -> Path:
        return Path(self.spec.out_dir)


def _gram_blocks(rounds: list[dict]) -> list[int]:
    """The labelled counts the completed rounds fitted on, in order: the seed set, then each
    round's acquisitions added (the blocks a run's Gram matrix was built with)."""
    if not rounds:
        return []
    return np.cumsum([len(rounds[0]["seed_set"])] + [len(r["acquired"]) for r in rounds[:-1]]).tolist()


def _columns(probe: LinearProbe) -> tuple[np.ndarray, np.ndarray]:
    """A probe's decision columns and offsets: for two classes the single column z1 - z0
    (logits up to a per-row constant: the same softmax, argmax and scores, at half the
    arithmetic of two columns), else one column per class."""
    W, b = probe.coef_.numpy(), probe.intercept_.numpy()
    if W.shape[1] == 2:
        return np.ascontiguousarray(W[:, 1] - W[:, 0]), np.array([b[1] - b[0]], dtype=np.float32)
    return np.ascontiguousarray(W), b


def _logits(X: np.ndarray, column: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """One run's logits on rows X: a product of X with the run's own columns only, so its
    numbers do not depend on which runs share the pass, nor on how the pool is chunked."""
    return _with_offset(X @ column, offset)


def _with_offset(z: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Products with `_columns` -> logits: (0, z + b) for the two-class column, else z + b."""
    if z.ndim == 1:
        z = z + offset[0]
        return np.stack([np.zeros_like(z), z], axis=1)
    return z + offset


def raw_shape(n: int, column: np.ndarray) -> tuple:
    """Shape of a pool's products with `_columns`: (n,) for the two-class column, else (n, C)."""
    return (n,) if column.ndim == 1 else (n, column.shape[1])


# BALD in probe mode: a bootstrap ensemble of this many probes per round
BOOTSTRAP_PROBES = 10


def bootstrap_probes(probe: LinearProbe, X: torch.Tensor, gram: torch.Tensor, y: np.ndarray, n_classes: int,
                     C: float, rng: np.random.Generator, size: int = BOOTSTRAP_PROBES) -> list[LinearProbe]:
    """`size` probes, each fitted on a bootstrap resample of the labelled rows X with
    labels y, drawn within each class (so every resample keeps the labelled set's class counts):
    BALD's posterior samples in probe mode. A resample's Gram matrix is a submatrix of `gram`;
    each starts from `probe`'s bias."""
    out = []
    for _ in range(size):
        idx = torch.from_numpy(np.concatenate([rng.choice(np.flatnonzero(y == c), (y == c).sum())
                                               for c in np.unique(y)]))
        A, beta, steps = solver.fit_dual(gram[idx][:, idx], torch.from_numpy(y)[idx], n_classes, C,
                                         beta0=probe.beta_, tol=probe.tol)
        out.append(LinearProbe(C=C)._set(X[idx], A, beta, n_classes, steps))
    return out


def run_probes(pool: FeatureCache | str | Path, evals: dict[str, FeatureCache | str | Path], runs: list[ProbeRun],
               *, score_chunk: int | None = None, stream: bool = False, device: str | None = None, log=None,
               max_rounds: int | None = None) -> list[RunRecord]:
    """Advance many probe runs on one pool in lockstep; each writes the record it writes alone.

    The pool is standardised once for all runs. Per step every active run fits its own probe
    by Newton's method in the dual (`toolkit.features.solver`: its own Gram matrix and Newton
    systems, warm-started from its previous round, its own stopping test). Then one product of
    the pool with every run's columns scores the runs whose strategy is a top k of a bounded
    per-row score (least-confidence, entropy, margin, max-logit), and one product per
    evaluation split evaluates every run. A wide product's rounding depends on its width, so
    each run's logits are recomputed canonically (row by row, in float64) wherever they can
    decide a pick, a recorded score or a prediction (`_Exact`); other strategies multiply each
    cache-sized chunk by their own columns only. Either way a run's record is the one it writes
    alone. Each run keeps its own lock, record and random streams, and may resume from its own
    round: a run killed mid-way refits its completed rounds on resuming (the same bits), so a
    round writes one appended line, and state.json and the probe state only when a run stops.

    Args:
        pool: the training split's feature cache (or its path), shared by every run.
        evals: {split: cache or path}, shared by every run.
        runs: the runs (`ProbeRun`: out_dir, al, seed, C); out_dirs must differ.
        score_chunk: pool rows per cache-resident chunk (default: about 2 MiB of rows).
        log: as in `run_probe`.
        max_rounds: as in `run_probe`.
        stream: read the pool from its HDF5 file chunk by chunk each step instead of holding it
            in memory (pools larger than memory); float16 caches are computed in float32
            chunks either way. The records are the same as in memory.
        device: a torch device ("cuda", "cpu") for the wide products of the pool and of the
            evaluation splits with every run's columns (in full float32: TF32 is switched off
            for them); None: numpy on the CPU. The fits, the canonical recomputations and the
            strategies stay on the CPU, so the records are the same on any device. A streamed
            pool is scored on the CPU.

    Returns:
        The runs' `RunRecord`s, in the order of `runs`.

    Examples:
        >>> import toolkit
        >>> from toolkit.config import ALConfig, validate_al
        >>> from toolkit.features.probe import ProbeRun, run_probes
        >>> small = {"n_train": 240, "n_val": 40, "n_test": 160}
        >>> pool, test = (toolkit.extract_features("toy_resnet", "toyworld", s, weights="random",
        ...                                        dataset_params=small, log=None) for s in ("train", "test"))
        >>> al = {s: ALConfig(strategy=s, seed_size=10, per_round=5, budget=10) for s in ("least_confidence", "random")}
        >>> recs = run_probes(pool, {"test": test}, [ProbeRun(f"altk-doc/lockstep/{s}-{seed}", al[s], seed)
        ...                                         for s in al for seed in (0, 1)])
        >>> [r.status for r in recs]
        ['finished', 'finished', 'finished', 'finished']
    """
    from threadpoolctl import threadpool_limits

    # one BLAS thread: the solver's vectors are a few thousand numbers, and a multi-threaded
    # BLAS spends more on waking and syncing threads than on the work (6x slower on 2 cores,
    # more when processes share them); it also makes the arithmetic independent of core count
    # torch's own pool too (the solver's products): the same bits on any machine and on a resume
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            return _run_probes(pool, evals, runs, score_chunk=score_chunk, stream=stream, device=device, log=log,
                               max_rounds=max_rounds)
    finally:
        torch.set_num_threads(threads)


def _run_probes(pool, evals, runs, *, score_chunk, stream, device, log, max_rounds) -> list[RunRecord]:
    import contextlib

    if not runs:
        return []
    _check_device(device)
    pool, evals = _open_inputs(pool, evals, runs)
    with contextlib.ExitStack() as stack:
        record_rows = DatasetRows(pool)  # the pool's record columns, read once for every run
        states = _open_runs(stack, pool, evals, runs, record_rows)
        rows = _PoolRows(pool, stream, score_chunk or max(64, (2 << 20) // (4 * pool.embeddings.shape[1])))
        stack.callback(rows.close)
        step = _Lockstep(pool, evals, rows, record_rows, device)
        while active := [s for s in states if s.r <= len(s.sizes) and (max_rounds is None or s.r < max_rounds)]:
            train_s = _fit(step, active)
            t1 = time.perf_counter()
            metrics = _evaluate(step, active)
            t2 = time.perf_counter()
            tops = _select(step, active, _score(step, active))
            t3 = time.perf_counter()
            share = 1 / len(active)  # the shared passes' seconds, split evenly over the runs
            for i, s in enumerate(active):
                stops = s.r == len(s.sizes) or (max_rounds is not None and s.r + 1 >= max_rounds)
                timings = {"train_s": train_s[i], "eval_s": (t2 - t1) * share, "score_s": (t3 - t2) * share}
                _record(s, step.record_rows, metrics[i], tops.get(i), timings, log, stops)
        return [finish_run(s.writer, len(s.sizes) + 1) for s in states]


def _check_device(device: str | None) -> None:
    """Refuse a device torch cannot name or reach, before any run folder is touched."""
    if device is None:
        return
    try:
        torch.zeros(1).to(torch.device(device))
    except (RuntimeError, AssertionError) as err:  # an unknown name; CUDA without a driver or GPU
        raise ConfigError(f"device {device!r} is not usable here ({str(err).splitlines()[0]}). Pass a device "
                          f"this machine has (e.g. cuda, cuda:0, cpu), or none for numpy on the CPU") from None


def _open_inputs(pool, evals, runs: list[ProbeRun]) -> tuple[FeatureCache, dict[str, FeatureCache]]:
    """Check the runs' settings, open the caches, and refuse an evaluation split that is not held out."""
    dirs = [str(Path(r.out_dir).resolve()) for r in runs]
    if len(set(dirs)) != len(dirs):
        dup = sorted({d for d in dirs if dirs.count(d) > 1})
        raise ConfigError(f"run_probes: two runs share an output folder ({', '.join(dup)}); give each its own")
    for spec in runs:
        validate_al(spec.al)
        if not spec.C > 0:
            raise CacheError(f"the probe's C (inverse L2 strength) must be > 0, got {spec.C}")
        get_strategy(spec.al.strategy)
    pool = pool if isinstance(pool, FeatureCache) else open_cache(pool)
    evals = {s: (c if isinstance(c, FeatureCache) else open_cache(c)) for s, c in evals.items()}
    for split, c in evals.items():
        if Path(c.path).resolve() == Path(pool.path).resolve() and str(pool.path) != "<memory>":
            raise CacheError(f"eval split {split!r} is the pool's own cache ({c.path}): evaluating on the pool "
                             f"would score the examples being labelled. Pass the cache of a held-out split.")
    for split, c in evals.items():
        check_eval_cache(pool, c, split)
    for spec in runs:
        check_budget(spec.al, len(pool))
    check_classes(pool.labels, pool.class_names, f"the pool cache {pool.path}")
    return pool, evals


def _open_runs(stack, pool: FeatureCache, evals: dict[str, FeatureCache], runs: list[ProbeRun],
               record_rows: DatasetRows) -> list[_RunState]:
    """Lock every run's folder (held until `stack` closes), then open or resume its record: its
    labelled set and the probe its last completed round fitted."""
    from toolkit._util.locks import exclusive

    for spec in runs:
        stack.enter_context(exclusive(Path(spec.out_dir), "probe run", directory=True))
    fp, shares = pool.fingerprint, pool_shares(pool)
    digests = {"pool": cache_digest(pool), **{f"eval:{s}": cache_digest(c) for s, c in evals.items()}}
    index: dict = {}  # the pool's id -> position map, built once for every run that resumes
    states = []
    for spec in runs:
        sizes = acquisition_sizes(spec.al)
        config = {"mode": "probe", "seed": spec.seed, "al": asdict(spec.al),
                  "model": {"name": fp["model"], "weights": fp["weights"].split(":")[0],
                            "weights_id": fp["weights"], "layer": fp["layer"]},
                  "data": {"name": fp["dataset"], "params": fp["dataset_params"], "pool_cache": str(pool.path),
                           "eval_caches": {s: str(c.path) for s, c in evals.items()}},
                  "probe": {"C": spec.C}}
        check_probe_inputs(spec.out_dir, config)
        writer = RunWriter(spec.out_dir, config, run_meta(pool, sizes, shares, dataset=fp["dataset"]),
                           digests=digests)
        labelled = start_labels(writer, pool, spec.al, spec.seed, index=index)
        probe = resume_state(writer, lambda last: _saved_probe(Path(spec.out_dir), last, spec.C))
        clean_states(Path(spec.out_dir) / "probe_state",
                     keep=_probe_state_path(Path(spec.out_dir), writer.completed_rounds - 1))
        states.append(_RunState(spec, writer, labelled, record_rows(labelled), probe, sizes))
    return states


class _Lockstep:
    """What every run of a lockstep shares: the pool (standardised once), the evaluation splits
    standardised with the pool's moments (and their rows' norms), and what batch strategies may
    reuse across runs and rounds (ProbCover's graph)."""

    def __init__(self, pool: FeatureCache, evals: dict[str, FeatureCache], rows: _PoolRows,
                 record_rows: DatasetRows, device: str | None = None) -> None:
        self.pool, self.evals, self.rows, self.n = pool, evals, rows, len(pool)
        self.labels, self.n_classes, self.shares = pool.labels, len(pool.class_names), pool_shares(pool)
        self.y_all = torch.from_numpy(self.labels)
        self.X_eval = [standardise(c.embeddings, rows.mean, rows.std).numpy() for c in evals.values()]
        self.eval_norms = [row_norms(X) for X in self.X_eval]
        # the wide products' left factors: the pool (index 0; None when streamed) and each split
        self.products = _WideProducts(device, [None if rows.X is None else rows.X.numpy(), *self.X_eval])
        self.split_metrics = [SplitMetrics(c, self.shares) for c in evals.values()]
        self.record_rows = record_rows
        self.memo: dict = {}


class _WideProducts:
    """Products of fixed float32 matrices (the pool, each evaluation split) with every run's
    columns: numpy on the CPU, or torch on `device`, each matrix copied there once. The product's
    last bits depend on the kernel; `_Exact` bounds them for any summation order in float32."""

    def __init__(self, device: str | None, matrices: list[np.ndarray | None]) -> None:
        self.matrices = matrices
        self.device = None if device is None else torch.device(device)
        self.on_device = [None if M is None or self.device is None else torch.from_numpy(M).to(self.device)
                          for M in matrices]

    def __call__(self, j: int, W: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if self.on_device[j] is None:
            return np.matmul(self.matrices[j], W, out=out)
        previous = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")  # no TF32: the error bound is float32's
        try:
            product = (self.on_device[j] @ torch.from_numpy(W).to(self.device)).cpu().numpy()
        finally:
            torch.set_float32_matmul_precision(previous)
        if out is None:
            return product
        out[...] = product
        return out


def _fit(step: _Lockstep, active: list[_RunState]) -> list[float]:
    """Each run's probe on its labels, warm-started from its previous round's solution (and BALD's
    bootstrap ensemble); each run solves its own Newton systems. Returns each run's seconds."""
    train_s = []
    for s in active:
        t0 = time.perf_counter()
        if s.replay:
            _rebuild(step, s)
        X = step.rows.rows(s.labelled)  # float32: the Gram and the weights in float32 products
        Q = s.gram.extend(X)
        s.probe = _solve(step, s, X, Q, s.labelled, s.probe)
        s.ensemble = []
        if "logit_samples" in s.strategy.needs and s.r < len(s.sizes):
            s.ensemble = bootstrap_probes(s.probe, X, Q, step.labels[s.labelled], step.n_classes, s.spec.C,
                                          round_rng(s.spec.seed, s.r, stream=3))
        train_s.append(time.perf_counter() - t0)
    return train_s


def _solve(step: _Lockstep, s: _RunState, X: torch.Tensor, Q: torch.Tensor, labelled: np.ndarray,
           prev: LinearProbe | None) -> LinearProbe:
    """The run's probe on rows X (Gram Q), warm-started from `prev`, the previous round's."""
    A, beta, steps = solver.fit_dual(Q, step.y_all[labelled], step.n_classes, s.spec.C,
                                     A0=getattr(prev, "dual_", None), beta0=getattr(prev, "beta_", None))
    return LinearProbe(C=s.spec.C)._set(X, A, beta, step.n_classes, steps)


def _rebuild(step: _Lockstep, s: _RunState) -> None:
    """A resumed run's Gram matrix, rebuilt with the blocks its completed rounds added; and when
    no stop saved its last probe (a kill), that probe refitted round by round from the start.
    Both are the computations an uninterrupted run made, so they give its bits."""
    refit = s.probe is None
    for n in s.replay:
        X = step.rows.rows(s.labelled[:n])
        Q = s.gram.extend(X)
        if refit:
            s.probe = _solve(step, s, X, Q, s.labelled[:n], s.probe)
    s.replay = []


def _evaluate(step: _Lockstep, active: list[_RunState]) -> list[dict]:
    """Each run's metrics on every evaluation split: one wide product per split for all runs, each
    run's predictions then made exact (`_Exact.predictions`)."""
    cols = _Columns({i: s.probe for i, s in enumerate(active)})
    metrics = [{} for _ in active]
    splits = zip(step.evals, step.X_eval, step.eval_norms, step.split_metrics)
    for j, (split, Xe, norms, scorer) in enumerate(splits):
        wide = step.products(1 + j, cols.W)
        exacts = [_Exact(wide[:, cols.slices[i]], *cols.cols[i], norms, lambda pos, Xe=Xe: Xe[pos])
                  for i in range(len(active))]
        for i, m in enumerate(scorer.many(_predictions(exacts))):
            metrics[i][split] = m
    return metrics


def _score(step: _Lockstep, active: list[_RunState]) -> dict[int, tuple]:
    """One read of the pool for every run that acquires this round: {run: (narrow products and
    offsets, or None; its ensemble's products and offsets, or None; its `_Exact`, or None)}.

    Runs whose strategy is a top-k of a per-row score with a known error bound (`SCORE_BOUNDS`)
    share one wide product per chunk, made exact where it matters by `_Exact`; the others
    multiply each chunk by their own columns only, as the engine always did."""
    acquiring = [i for i, s in enumerate(active) if s.r < len(s.sizes)]
    reading = [i for i in acquiring if "logits" in active[i].strategy.needs]
    wide_runs = [i for i in reading if _bounded(active[i].strategy)]
    scoring = {i: _columns(active[i].probe) for i in reading if i not in wide_runs}
    sampling = {i: [_columns(p) for p in active[i].ensemble] for i in acquiring if active[i].ensemble}
    cols = _Columns({i: active[i].probe for i in wide_runs})
    wide = np.empty((step.n, cols.W.shape[1]), np.float32) if wide_runs else None
    raw = {i: np.empty(raw_shape(step.n, col), np.float32) for i, (col, _) in scoring.items()}
    ens_raw = {i: np.empty((len(cols_),) + raw_shape(step.n, cols_[0][0]), np.float32) for i, cols_ in sampling.items()}
    in_memory = wide is not None and step.rows.X is not None
    if in_memory:  # one product for every run: BLAS blocks it for the cache itself
        step.products(0, cols.W, out=wide)
    if (wide is not None and not in_memory) or scoring or sampling:
        for lo, hi, Xc in step.rows.chunks(step.n):  # one read of the pool per step
            if wide is not None and not in_memory:
                wide[lo:hi] = Xc @ cols.W
            for i, (col, _) in scoring.items():
                raw[i][lo:hi] = Xc @ col
            for i, cols_ in sampling.items():
                for j, (col, _) in enumerate(cols_):
                    ens_raw[i][j, lo:hi] = Xc @ col
    rows = lambda pos: step.rows.rows(pos).numpy()  # noqa: E731
    return {i: ((raw[i], scoring[i][1]) if i in raw else None,
                (ens_raw[i], [off for _, off in sampling[i]]) if i in ens_raw else None,
                _Exact(wide[:, cols.slices[i]], *cols.cols[i], step.rows.norms, rows) if i in cols.slices else None)
            for i in acquiring}


# How far a per-row score can move when every logit moves by at most delta, for the score
# strategies whose top k may come from a wide product: softmax moves each p_k by a factor within
# e^(+-2 delta), so least-confidence (1 - max p = min_k sum_{j != k} p_j) and the margin score
# plus one (1 - p_1 + p_2) move by such a factor too; the entropy's gradient has 1-norm
# 2H, so log H moves by at most 2 delta; max-logit moves by delta. A name maps to the shift c
# with (score - c) bounded by a factor, or None for an absolute bound.
SCORE_BOUNDS = {"least_confidence": 0.0, "entropy": 0.0, "margin": -1.0, "max_logit": None}


def score_interval(name: str, scores: np.ndarray, delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds (lo, hi) on the scores at any logits within delta (per row, max-norm) of these."""
    shift = SCORE_BOUNDS[name]
    if shift is None:
        lo, hi = scores - delta, scores + delta
    else:
        m = np.abs(scores - shift)
        lo, hi = shift + m * np.exp(-2 * delta), shift + m * np.exp(2 * delta)
    slack = 1e-12 + 1e-9 * np.abs(scores)  # the scores' own floating-point evaluation
    return lo - slack, hi + slack


def _bounded(strategy) -> bool:
    return isinstance(strategy, ScoreStrategy) and strategy.needs == {"logits"} and strategy.name in SCORE_BOUNDS


class _Columns:
    """Several runs' decision columns side by side (d, total) for one wide product, and which
    columns are whose."""

    def __init__(self, probes: dict[int, LinearProbe]) -> None:
        self.cols = {i: _columns(p) for i, p in probes.items()}
        parts = [col.reshape(len(col), -1) for col, _ in self.cols.values()]
        edges = np.cumsum([0] + [p.shape[1] for p in parts])
        self.slices = {i: slice(int(lo), int(hi)) for i, lo, hi in zip(self.cols, edges[:-1], edges[1:])}
        self.W = np.ascontiguousarray(np.concatenate(parts, axis=1)) if parts else None


# unit roundoffs of float32 and float64
_U32, _U64 = 2.0 ** -24, 2.0 ** -53


class _Exact:
    """One run's logits from a wide product, made exact where a decision or a record reads them.

    A float32 product's rounding depends on the product's width (the kernel path), so a run's
    wide-product logits can differ in the last bits with its batch-mates. Its canonical logits
    are computed row by row in float64 (exact products, numpy's pairwise sum of each row, plus
    the offset): a function of the row and the run's columns alone. Both are within
    delta_i = (gamma_d(float32) + gamma_d(float64)) ||x_i|| ||w|| of the exact dot products
    (Higham's bound for any summation order; ||x|| ||w|| bounds sum |x_j w_j|), so whatever can
    change a decision within that bound is recomputed canonically: the candidates that may be in
    the top k, the evaluation rows whose two largest logits are that close. The recorded numbers
    are therefore the canonical ones, whatever the batch."""

    def __init__(self, wide: np.ndarray, col: np.ndarray, offset: np.ndarray, norms: np.ndarray, rows) -> None:
        self.z = wide[:, 0] if col.ndim == 1 else wide
        self.col = np.ascontiguousarray(col.reshape(len(col), -1).T, dtype=np.float64)  # (columns, d)
        self.offset, self.norms, self.rows = offset.astype(np.float64), norms, rows
        d = self.col.shape[1]
        gamma = sum(d * u / (1 - d * u) for u in (_U32, _U64))
        self.scale = gamma * np.sqrt((self.col ** 2).sum(1)) * (1 + 1e-6)  # per column

    def approx(self, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The wide product's logits of rows `pos` (float64), and each row's bound delta."""
        z = self.z[pos].astype(np.float64)
        logits = _with_offset(z, self.offset)
        if z.ndim == 1:  # the two-class column
            return logits, _bound(self.norms[pos], self.scale[0], z, self.offset)
        return logits, _bound(self.norms[pos][:, None], self.scale, z, self.offset).max(1)

    def canonical(self, pos: np.ndarray) -> np.ndarray:
        """Rows `pos`' canonical logits (float64)."""
        X = np.asarray(self.rows(pos), dtype=np.float64)
        z = (X[:, None, :] * self.col[None]).sum(axis=2)  # per row and column: exact products, one pairwise sum
        return _with_offset(z[:, 0] if self.z.ndim == 1 else z, self.offset)

    def top_k_logits(self, candidates: np.ndarray, k: int, strategy) -> np.ndarray:
        """The candidates' logits for a top-k score strategy: canonical for every candidate whose
        score may reach the k-th largest, the wide product's for the rest (which rank below the
        top k whatever their last bits). The strategy's picks and scores are those it makes
        from canonical logits everywhere."""
        logits, delta = self.approx(candidates)
        lo, hi = score_interval(strategy.name, score_logits(strategy.name, logits), delta)
        # k rows have canonical scores >= their lo, so the k-th largest canonical score is at least
        # the k-th largest lo; a row whose hi is below that is not in the top k
        floor = np.partition(lo, len(lo) - k)[len(lo) - k] if 0 < k <= len(lo) else (np.inf if k <= 0 else -np.inf)
        band = np.flatnonzero(hi >= floor)
        logits[band] = self.canonical(candidates[band])
        return logits

    def predictions(self) -> np.ndarray:
        """argmax of the canonical logits of every row: canonical where the two largest are within 2 delta."""
        pos = np.arange(len(self.z))
        logits, delta = self.approx(pos)
        if self.z.ndim == 1:  # logits (0, z): the gap between the two is |z|
            gap = np.abs(logits[:, 1])
        else:
            top2 = np.sort(logits, axis=1)[:, -2:]
            gap = top2[:, 1] - top2[:, 0]
        unsure = np.flatnonzero(gap <= 2 * delta)
        logits[unsure] = self.canonical(unsure)
        return logits.argmax(1)


def _bound(norms: np.ndarray, scale: np.ndarray, z: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """How far a wide product's logit z + b can be from the canonical one, elementwise: the
    products' rounding (row norm x the column's scale) plus the float64 sums with the offset."""
    return norms * scale + 2.0 ** -50 * (np.abs(z) + np.abs(offset) + 1)


def _predictions(exacts: list[_Exact]) -> np.ndarray:
    """Each run's `_Exact.predictions()` as a column of one (rows, runs) array. The two-class runs
    are tested together: the same elementwise bound and comparison on all their columns at once,
    each uncertain row then recomputed canonically for its own run."""
    out = np.empty((len(exacts[0].z), len(exacts)), np.int64)
    two = [j for j, e in enumerate(exacts) if e.z.ndim == 1]
    for j, e in enumerate(exacts):
        if e.z.ndim != 1:
            out[:, j] = e.predictions()
    if two:
        z = np.stack([exacts[j].z for j in two], axis=1).astype(np.float64)
        offset = np.array([exacts[j].offset[0] for j in two])
        logit = z + offset  # the second of the logits (0, z + b)
        delta = _bound(exacts[0].norms[:, None], np.array([exacts[j].scale[0] for j in two]), z, offset)
        pred = ((logit > 0) | np.isnan(logit)).astype(np.int64)  # argmax of (0, z + b): ties to 0, NaN wins
        for c, j in enumerate(two):
            unsure = np.flatnonzero(np.abs(logit[:, c]) <= 2 * delta[:, c])
            if len(unsure):
                pred[unsure, c] = exacts[j].canonical(unsure).argmax(1)
        out[:, two] = pred
    return out


class ProbeInputs:
    """What a probe run gives a strategy (an `InputSource` for `build_inputs`): logits and
    bootstrap samples from the products `_score` computed in its one read of the pool, and the
    standardised pool as the embeddings; the memo is the lockstep's (rows fixed across rounds)."""

    def __init__(self, step: _Lockstep, products: tuple | None, ensemble: tuple | None,
                 exact: "_Exact | None" = None, k: int = 0, strategy=None) -> None:
        self.step, self.products, self.ensemble = step, products, ensemble
        self.exact, self.k, self.strategy = exact, k, strategy
        self.n_classes, self.memo = step.n_classes, step.memo

    def logits(self, candidates: np.ndarray) -> np.ndarray:
        if self.exact is not None:
            return self.exact.top_k_logits(np.asarray(candidates), self.k, self.strategy)
        return _with_offset(self.products[0][candidates], self.products[1])

    def embeddings(self):
        return self.step.rows.view()

    def logit_samples(self, candidates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.stack([_with_offset(z[candidates], off) for z, off in zip(*self.ensemble)])


def _select(step: _Lockstep, active: list[_RunState], scored: dict) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Each acquiring run's picks and scores: its strategy on its candidates this round."""
    tops = {}
    for i, (products, ensemble, exact) in scored.items():
        s = active[i]
        unlabelled, rng = candidates(step.n, s.labelled, s.spec.al, s.spec.seed, s.r)
        source = ProbeInputs(step, products, ensemble, exact, s.sizes[s.r], s.strategy)
        inputs = build_inputs(s.strategy, source, unlabelled, s.labelled, rng)
        tops[i] = s.strategy.select(inputs, s.sizes[s.r], rng)
    return tops


def _record(s: _RunState, record_rows: DatasetRows, metrics: dict, top, timings: dict, log, stops: bool) -> None:
    """Commit one run's round (`record_round`) and move it on. The probe state is written only
    when the run stops after this round (finished, or `max_rounds`): a run resumed after a kill
    refits its earlier rounds instead (`_rebuild`), which gives the same bits, so a round costs
    one appended line rather than three files replaced."""
    r, picks, acquired = s.r, np.empty(0, dtype=np.int64), []
    if top is not None:
        picks, scores = top
        acquired = record_rows(picks, scores)
    row = round_row(r, len(s.labelled), metrics, {"solver": "newton", "C": s.spec.C}, acquired, timings, s.seed_rows)
    s.labelled = np.concatenate([s.labelled, picks]) if top is not None else s.labelled
    # state.json (status, rounds, labelled ids) at the first round and when the run stops: the
    # record is rounds.jsonl, and a rename per run per round was a fifth of a lockstep round
    record_round(s.writer, row, finished=r == len(s.sizes), stage="probe",
                 save_state=(lambda i: save_probe_state(s.probe, s.dir, i)) if stops else None,
                 status_file=stops or r == 0)
    if stops:  # the states of earlier stops are superseded
        clean_states(s.dir / "probe_state", keep=_probe_state_path(s.dir, r))
    s.r += 1
    if log:
        m = next(iter(metrics.values()), {})
        log(f"  {s.dir.name} round {r} labels={row['n_labels']} worst={m.get('worst_group', float('nan')):.3f}")


def _probe_state_path(run_dir: Path, round_index: int) -> Path:
    return run_dir / "probe_state" / f"round_{round_index:03d}.npz"


def save_probe_state(probe: LinearProbe, run_dir: Path, round_index: int) -> None:
    """The round's fitted probe (the next round's warm start), written whole then renamed."""
    path = _probe_state_path(run_dir, round_index)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, keep_suffix=True) as tmp:
        np.savez(tmp, coef=probe.coef_.numpy(), intercept=probe.intercept_.numpy(), dual=probe.dual_.numpy(),
                 beta=probe.beta_.numpy())


def _saved_probe(run_dir: Path, round_index: int, C: float) -> LinearProbe | None:
    """The probe a stop saved after `round_index` with the solver's state, or None (a kill, or a
    state from before the Newton solver): the run then refits its rounds."""
    if not _probe_state_path(run_dir, round_index).exists():
        return None
    probe = load_probe_state(run_dir, round_index, C)
    return probe if probe.dual_ is not None else None


def load_probe_state(run_dir: Path, round_index: int, C: float) -> LinearProbe:
    path = _probe_state_path(run_dir, round_index)
    if not path.exists():
        raise MissingFileError(f"{path} is missing: the probe run cannot resume from round {round_index + 1} "
                                f"without the probe its last completed round fitted (the next fit's warm start). "
                                f"Delete {run_dir} to start the run again.")
    with np.load(path) as f:
        probe = LinearProbe(C=C)
        probe.coef_, probe.intercept_ = torch.from_numpy(f["coef"]), torch.from_numpy(f["intercept"])
        # the solver's own state (the next warm start); absent in states older than the Newton solver
        probe.dual_, probe.beta_ = (torch.from_numpy(f[k]) if k in f.files else None for k in ("dual", "beta"))
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
