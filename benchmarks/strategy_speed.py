"""Batch strategies in probe mode against least-confidence, per round (issue #25's targets).

    .venv/bin/python benchmarks/strategy_speed.py [--rows 5000] [--dim 2048] [--large 100000] [--repeats 5]

Part 1: a synthetic 5,000 x 2,048 pool (a mixture of Gaussians with a label direction), run
through the probe engine (`run_probes`: 40 seed labels, three rounds of k = 20) with each
strategy. A round's seconds are its probe fit plus its scoring and selection (the record's
train_s + score_s), averaged over the acquiring rounds and `--repeats` runs; the baseline is
least-confidence measured in the same process. Target: BADGE and coreset <= 2x.
Part 2: the same two strategies on a 100,000-row pool (`--large`), one selection of k = 20
after 100 labels, with the peak of Python allocations during it (tracemalloc): an n x n
float64 matrix would be n^2 x 8 bytes (80 GB at 100,000 rows).
"""
from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

TARGET = 2.0


def synthetic(rows: int, dim: int, seed: int = 0, start_id: int = 0):
    """An in-memory FeatureCache: 8 Gaussian clusters; label = side of a random direction, with a
    spurious attribute that agrees with it 90% of the time."""
    from toolkit.features.cache import FeatureCache

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, dim)).astype(np.float32) * 2
    X = centres[rng.integers(0, 8, rows)] + rng.normal(size=(rows, dim)).astype(np.float32)
    w = np.random.default_rng(99).normal(size=dim)
    y = (X @ w > 0).astype(np.int64)
    s = np.where(rng.random(rows) < 0.9, y, 1 - y)
    fp = {"model": "synthetic", "weights": "random:0", "layer": "penultimate", "transform": "none",
          "compute": "float32", "dataset": "synthetic", "dataset_params": {"dim": dim}}
    return FeatureCache(Path("<memory>"), fp, np.arange(start_id, start_id + rows), X,
                        pd.DataFrame({"y": y, "s": s}), "y", "s", ("a", "b"))


def per_round(pool, test, strategy: str, repeats: int, root: Path) -> float:
    from toolkit.config import ALConfig
    from toolkit.features.probe import run_probe

    secs = []
    for rep in range(repeats):
        rec = run_probe(pool, {"test": test}, root / f"{strategy}-{rep}",
                        al=ALConfig(strategy=strategy, seed_size=40, per_round=20, budget=60), seed=rep)
        acquiring = rec.rounds[rec.rounds["round"] < rec.rounds["round"].max()]
        secs += list(acquiring["time/train_s"] + acquiring["time/score_s"])
    return float(np.mean(secs))


def large(rows: int, dim: int) -> None:
    from toolkit.al import diversity
    from toolkit.al.acquisition import least_confidence, select, softmax

    pool = synthetic(rows, dim, seed=1)
    X = pool.embeddings
    rng = np.random.default_rng(0)
    labelled = rng.choice(rows, 100, replace=False)
    cands = np.setdiff1d(np.arange(rows), labelled)
    probs = softmax(rng.normal(size=(len(cands), 2)))
    print(f"\n{rows:,} x {dim:,} pool ({X.nbytes / 2**30:.2f} GiB float32), k = 20 after 100 labels:")
    t0 = time.perf_counter()
    select(least_confidence(probs), 20)
    lc = time.perf_counter() - t0
    n2 = rows * rows * 8
    for name, fn in (("coreset", lambda: diversity.coreset(X, cands, labelled, 20, rng)),
                     ("badge", lambda: diversity.badge(X, probs, cands, 20, rng))):
        tracemalloc.start()
        t0 = time.perf_counter()
        picks, _ = fn()
        secs = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"  {name:<8} {secs:6.2f} s   peak allocations {peak / 2**20:7.1f} MiB "
              f"(an n x n float64 matrix: {n2 / 2**30:,.0f} GiB; ratio {peak / n2:.1e})   {len(set(picks))} distinct picks")
    print(f"  (least-confidence's top-k on given probabilities: {lc * 1000:.1f} ms; the probe's logits for the pool "
          f"are a matmul shared by both)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--large", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--strategies", default="least_confidence,badge,coreset,bald,probcover,typiclust,random")
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    pool = synthetic(args.rows, args.dim)
    test = synthetic(1000, args.dim, seed=2, start_id=10**7)
    print(f"probe mode, {args.rows:,} x {args.dim:,} pool, 40 seed labels, rounds of k = 20 (seconds per round: "
          f"probe fit + scoring + selection, mean of {args.repeats} runs x 3 rounds)")
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(1, "blas"):
        base = None
        for s in args.strategies.split(","):
            secs = per_round(pool, test, s, args.repeats, Path(tmp))
            base = secs if s == "least_confidence" else base
            flag = ""
            if s in ("badge", "coreset"):
                flag = "  target met" if secs / base <= TARGET else f"  TARGET MISSED (> {TARGET}x)"
            print(f"  {s:<17} {secs * 1000:8.1f} ms   {secs / base:5.2f}x least-confidence{flag}")
    if args.large:
        with threadpool_limits(1, "blas"):
            large(args.large, args.dim)


if __name__ == "__main__":
    main()
