"""Sweep throughput: N toy runs through the local process pool vs one after another.

    .venv/bin/python benchmarks/sweep_parallel.py [--runs 4] [--workers 2]

Both arms run the same N configs (toy preset, a small pool and budget so the benchmark
takes minutes) in fresh folders, in the same session. Prints both wall times, the ratio,
and the per-stage timings that the run records hold (train / evaluate / score per round).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from toolkit.al.sweep import Sweep, expand_grid, parse_grid
from toolkit.models.pretrain import ensure_toy_backbone
from toolkit.record import load_run

SMALL = ["data.params.n_train=800", "data.params.n_test=400", "al.per_round=10", "al.budget=20"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    ensure_toy_backbone()
    grid = parse_grid([f"seeds=0-{args.runs - 1}"])
    walls = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, workers in (("sequential", 1), (f"pool x{args.workers}", args.workers)):
            sweep = Sweep(Path(tmp) / label.replace(" ", ""), expand_grid("toy", grid, SMALL))
            t0 = time.perf_counter()
            sweep.launch_local(workers=workers)
            walls[label] = time.perf_counter() - t0
        tidy = sweep.aggregate()
        rec = load_run(next((Path(tmp) / "sequential" / "runs").iterdir()))
    seq, par = walls["sequential"], walls[f"pool x{args.workers}"]
    print(f"\n{args.runs} toy runs ({' '.join(SMALL)}):")
    print(f"  sequential (1 process)      {seq:.1f}s")
    print(f"  local pool ({args.workers} processes)    {par:.1f}s")
    print(f"  speed-up                    {seq / par:.2f}x")
    stages = rec.rounds[[c for c in rec.rounds.columns if c.startswith("time/")]]
    print("per-stage seconds per round of one sequential run (mean over its rounds):")
    for col, value in stages.mean().items():
        print(f"  {col[5:]:<10} {value:.2f}")
    print(f"  rounds      {len(stages)}; aggregated table: {len(tidy)} rows")


if __name__ == "__main__":
    main()
