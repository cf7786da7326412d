"""Probe-only AL speed: the lockstep engine against its limit and against scikit-activeml + scikit-learn.

    .venv/bin/python benchmarks/probe_speed.py [--seeds 3] [--rounds 64] [--runs 1,20,200]
    .venv/bin/python benchmarks/probe_speed.py --n 1000 --dim 256 --rounds 8 --runs 1,4 --seeds 1   # a quick check
    python benchmarks/probe_speed.py --device cuda --runs 20,200,2000   # the GPU section, on a GPU machine

Pool: 5,000 x 2,048 float32 features (Waterbirds-sized pool, BiT-sized features), four
label x spurious groups (95% matched), 64 rounds of 5 after a balanced seed set of 40; a
1,000-row test set evaluated every round. Everything runs on one thread (torch and BLAS).

Printed, each a ratio of times measured in the same run:
- **the limit ratio** at R = 1, 20 and 200 runs in lockstep (R/2 seeds x least-confidence and
  random; R = 1: one least-confidence run): the engine's seconds per round for all R runs,
  over the time of one product of the pool with R float32 columns plus the same for the test
  set (numpy, the BLAS the engine's wide products use; median of repeats, timed in the same
  process just before the runs). No round can take less: every run reads every pool row once.
- **against scikit-activeml + scikit-learn** (UncertaintySampling("least_confident") wrapping
  LogisticRegression(lbfgs, C=1), same standardised features and seed set, one thread): the
  baseline's seconds per run over the engine's seconds per run, at R = 1, 20 and 200.
- **peak memory** of each lockstep: the process's peak RSS during the run above its RSS before
  it (each R runs in a fresh process; Linux's peak reset), beside the pool's size and R x d
  floats. The engine holds a standardised float32 copy of the pool and, per run, the Gram
  matrix of its labelled rows (float32, n x n).
- for R = 1, the overlap of the acquired ids with the baseline's. For two classes the
  toolkit's softmax probe with C equals sklearn's binary model with 2C, so probabilities
  differ slightly and near-tied picks can reorder; later rounds drift once one pick differs.

`--device cuda` (the GPU section): the lockstep's wide products of the pool and the test set
run in torch on the device (`run_probes(device=...)`; the fits and the exact recomputations stay
on the CPU), and the limit is the same product timed on the device (CUDA-synchronised). The same
runs are then made with numpy products on the CPU in the same process, so the table gives both,
and their records are checked to be the same.

Timings from a machine whose cores other processes share are not worth quoting: check
`uptime` first.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def make_pool(n: int, d: int, rng: np.random.Generator, id_offset: int = 0):
    from toolkit.features.cache import FeatureCache

    y = (rng.random(n) < 0.25).astype(np.int64)
    place = np.where(rng.random(n) < 0.95, y, 1 - y)
    u, v = rng.normal(size=(2, d))
    X = rng.normal(size=(n, d)).astype(np.float32) + 0.35 * np.outer(2 * y - 1, u) + 0.7 * np.outer(2 * place - 1, v)
    attrs = pd.DataFrame({"y": y, "place": place}, index=pd.Index(np.arange(n) + id_offset, name="id"))
    fp = {"model": "synthetic", "weights": "pretrained:bench", "layer": "penultimate", "dataset": "synthetic",
          "dataset_params": {}, "split": "train", "transform": "none"}
    return FeatureCache(Path("<memory>"), fp, attrs.index.to_numpy(), X.astype(np.float32), attrs, "y", "place",
                        ("landbird", "waterbird"))


def _caches(args):
    rng = np.random.default_rng(0)
    return make_pool(args.n, args.dim, rng), make_pool(1000, args.dim, rng, id_offset=10**6)


def skactiveml_loop(pool, seed: int, rounds: int, per_round: int, seed_size: int) -> list[int]:
    from skactiveml.classifier import SklearnClassifier
    from skactiveml.pool import UncertaintySampling
    from skactiveml.utils import MISSING_LABEL
    from sklearn.linear_model import LogisticRegression

    from toolkit._util.repro import round_rng
    from toolkit.al.protocol import draw_seed_set

    X = pool.embeddings
    X = (X - X.mean(0)) / (X.std(0) + 1e-6)
    y_true = pool.labels.astype(float)
    y = np.full(len(y_true), MISSING_LABEL)
    seeds = draw_seed_set(pool.labels, seed_size, "balanced", round_rng(seed, 0, stream=1))
    y[seeds] = y_true[seeds]
    clf = SklearnClassifier(LogisticRegression(C=1.0, max_iter=1000), classes=[0, 1], missing_label=MISSING_LABEL)
    qs = UncertaintySampling(method="least_confident", random_state=seed, missing_label=MISSING_LABEL)
    picked = []
    for _ in range(rounds):
        idx = qs.query(X=X, y=y, clf=clf, batch_size=per_round)
        y[idx] = y_true[idx]
        picked += [int(pool.ids[i]) for i in idx]
    return picked


def limit_seconds(X: np.ndarray, X_test: np.ndarray, R: int, repeats: int = 15, device: str | None = None) -> float:
    """One product of the pool and of the test set with R float32 columns: the median of repeats
    (on `device`: torch there, synchronised, the factors already on the device)."""
    W = np.random.default_rng(1).normal(size=(X.shape[1], R)).astype(np.float32)
    if device is not None:
        import torch

        torch.set_float32_matmul_precision("highest")
        X, X_test, W = (torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in (X, X_test, W))
    sync = torch.cuda.synchronize if device is not None and "cuda" in device else (lambda: None)
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        X @ W
        X_test @ W
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _status_kb(field: str) -> int | None:
    try:
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1])


def _reset_peak_rss() -> int:
    """The RSS now (KiB), after resetting the peak (Linux: clear_refs 5), so that the peak read
    after the run is the run's own, not the pool's construction."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return _status_kb("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _peak_rss() -> int:
    return _status_kb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _specs(R: int, args):
    from toolkit.config import ALConfig
    from toolkit.features.probe import ProbeRun

    al = {s: ALConfig(strategy=s, seed_size=40, per_round=5, budget=5 * args.rounds)
          for s in ("least_confidence", "random")}
    if R == 1:
        return [ProbeRun(None, al["least_confidence"], 0)]
    return [ProbeRun(None, al[s], seed) for s in al for seed in range((R + 1) // 2)][:R]


def child(R: int, args) -> dict:
    """One lockstep of R runs in this (fresh) process: its time, the limit, its memory."""
    import torch
    from threadpoolctl import threadpool_limits

    from toolkit.features.probe import ProbeRun, run_probes

    torch.set_num_threads(1)
    pool, test = _caches(args)
    with threadpool_limits(1), tempfile.TemporaryDirectory() as tmp:
        limit = limit_seconds(np.asarray(pool.embeddings), np.asarray(test.embeddings), R, device=args.device)
        runs = [ProbeRun(Path(tmp) / f"{r.al.strategy}-{r.seed}", r.al, r.seed) for r in _specs(R, args)]
        rss0 = _reset_peak_rss()
        t0 = time.perf_counter()
        recs = run_probes(pool, {"test": test}, runs, device=args.device)
        seconds = time.perf_counter() - t0
        peak = _peak_rss()
        fit_s = float(sum(r.rounds["time/train_s"].sum() for r in recs))
        acquired = recs[0].acquisitions["id"].tolist()
        out = {"R": len(runs), "seconds": seconds, "limit": limit, "rounds": args.rounds + 1, "fit_s": fit_s,
               "rss_before_mb": rss0 / 1024, "peak_above_mb": (peak - rss0) / 1024, "acquired": acquired}
        if args.device is not None:  # the same runs with numpy's products on the CPU, and their records
            cpu = [ProbeRun(Path(tmp) / "cpu" / Path(r.out_dir).name, r.al, r.seed) for r in runs]
            t0 = time.perf_counter()
            cpu_recs = run_probes(pool, {"test": test}, cpu)
            out["cpu_seconds"] = time.perf_counter() - t0
            out["cpu_limit"] = limit_seconds(np.asarray(pool.embeddings), np.asarray(test.embeddings), R)
            out["same_records"] = all(a.acquisitions.equals(b.acquisitions) for a, b in zip(recs, cpu_recs))
    return out


def baseline(args) -> tuple[float, list[list[int]]]:
    from threadpoolctl import threadpool_limits

    pool, _ = _caches(args)
    times, picks = [], []
    with threadpool_limits(1):
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            picks.append(skactiveml_loop(pool, seed, args.rounds, 5, 40))
            times.append(time.perf_counter() - t0)
    return float(np.mean(times)), picks


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3, help="baseline runs (seeds) to average")
    ap.add_argument("--rounds", type=int, default=64)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--runs", default="1,20,200", help="lockstep sizes R")
    ap.add_argument("--device", default=None, help="the GPU section: the wide products on this torch device")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args)))
        return
    forwarded = ["--rounds", str(args.rounds), "--n", str(args.n), "--dim", str(args.dim)]
    forwarded += ["--device", args.device] if args.device else []
    results = []
    for R in (int(r) for r in args.runs.split(",")):
        out = subprocess.run([sys.executable, __file__, "--child", str(R), *forwarded], capture_output=True,
                             text=True, check=True, env={"OMP_NUM_THREADS": "1", **__import__("os").environ})
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    try:
        import skactiveml  # noqa: F401
    except ImportError:  # a GPU machine without the bench extra: the ratios to the limit still print
        base_s, base_picks = float("nan"), []
    else:
        base_s, base_picks = baseline(args)
    report(args, results, base_s, base_picks)


def report(args, results: list[dict], base_s: float, base_picks: list[list[int]]) -> None:
    pool_mb = args.n * args.dim * 4 / 2**20
    print(f"pool {args.n} x {args.dim} float32 ({pool_mb:.0f} MiB), test 1000 rows, {args.rounds} rounds of 5 "
          f"after 40 seed labels; one thread (torch and BLAS)")
    print(f"baseline, skactiveml + sklearn: {base_s:.2f} s per run (mean of {args.seeds} seeds)\n" if not np.isnan(base_s)
          else "baseline: scikit-activeml is not installed (pip install -e '.[bench]'); no baseline ratios\n")
    print(f"{'R':>5} {'s/round':>9} {'limit':>9} {'limit ratio':>12} {'s/run':>8} {'vs baseline':>12} "
          f"{'fit share':>10} {'peak RSS +':>11} {'R x d floats':>13}")
    for r in results:
        per_round, per_run = r["seconds"] / r["rounds"], r["seconds"] / r["R"]
        print(f"{r['R']:>5} {per_round * 1e3:>7.1f}ms {r['limit'] * 1e3:>7.2f}ms {per_round / r['limit']:>11.1f}x "
              f"{per_run:>8.3f} {base_s / per_run:>11.1f}x {r['fit_s'] / r['seconds']:>10.0%} "
              f"{r['peak_above_mb']:>8.0f} MiB {r['R'] * args.dim * 4 / 2**20:>9.1f} MiB")
    if args.device:
        print("\nthe same runs with numpy's products on the CPU (same process), against the CPU's limit:")
        for r in results:
            per_round = r["cpu_seconds"] / r["rounds"]
            print(f"{r['R']:>5} {per_round * 1e3:>7.1f}ms {r['cpu_limit'] * 1e3:>7.2f}ms "
                  f"{per_round / r['cpu_limit']:>11.1f}x; {args.device} over CPU: {r['cpu_seconds'] / r['seconds']:.2f}x; "
                  f"records the same: {r['same_records']}")
    print("\ntargets: limit ratio <= 2x at every R; vs baseline >= 10x at R = 1 and >= 50x per run at R = 200")
    one = next((r for r in results if r["R"] == 1), None)
    if one is not None and base_picks:
        ours, theirs = one["acquired"], base_picks[0]
        print(f"R = 1, seed 0: acquired-id overlap with the baseline {len(set(ours) & set(theirs)) / len(ours):.1%}; "
              f"first round's picks the same set: {set(ours[:5]) == set(theirs[:5])}")


if __name__ == "__main__":
    main()
