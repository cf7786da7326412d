"""Experiments a-e of `altk intervene` against their 20-minute target, by experiment.

    .venv/bin/python benchmarks/interventions.py [--workers 2] [--small]

Runs each experiment at full size (`InterventionPlan()`) on a fresh cache root: the toy
backbone's checkpoints are linked in, so pretraining is not counted; rendering the tasks'
worlds, building the fashion_places composites and extracting every feature cache are.
The law is not fitted (it needs the dose study, which is its own benchmark). Prints each
experiment's seconds, the total and its ratio to the target, and the baseline measured in
the same run: experiment a again on its now cached features, so the share of a that is
extraction and world building shows. Needs Debian's `dataset-fashion-mnist` for e.
"""
from __future__ import annotations

import argparse
import os
import shutil
import time

TARGET_S = 20 * 60


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--small", action="store_true", help="InterventionPlan.small(): a smoke run, not the target")
    args = ap.parse_args()
    from fresh_root import fresh_cache_root  # benchmarks/, beside this script

    root = fresh_cache_root("altk-intervene-bench-")
    from toolkit.experiments.interventions import EXPERIMENTS, INJECT_DOSES, InterventionPlan, run_interventions
    from toolkit.models.pretrain import ensure_toy_doses

    plan = InterventionPlan.small(workers=args.workers) if args.small else InterventionPlan(workers=args.workers)
    ensure_toy_doses(["random", *INJECT_DOSES])  # pretrains what is missing, outside the timing
    out, seconds = root / "interventions", {}
    try:
        for letter in EXPERIMENTS:
            t0 = time.perf_counter()
            run_interventions(letter, plan, out=out, dose_out=root / "none", real_out=root / "none", log=None)
            seconds[letter] = time.perf_counter() - t0
        shutil.rmtree(out / "a")  # the baseline: a's runs and measures again, its features cached
        t0 = time.perf_counter()
        run_interventions("a", plan, out=out, dose_out=root / "none", real_out=root / "none", log=None)
        again = time.perf_counter() - t0
    finally:
        shutil.rmtree(root, ignore_errors=True)
    total = sum(seconds.values())
    print(f"interventions a-e, {'small' if args.small else 'full'} settings ({plan.tasks} tasks, {len(plan.seeds)} "
          f"seeds), {args.workers} workers, a fresh cache root (pretraining not counted):")
    for letter, s in seconds.items():
        print(f"  {letter}  {s:8.1f} s")
    print(f"  total {total:8.1f} s = {total / 60:.1f} min; target 20 min: {total / TARGET_S:.2f}x the target "
          f"({'met' if total <= TARGET_S else 'missed'})")
    print(f"  baseline, a again on its cached features: {again:.1f} s; a from a fresh root was "
          f"{seconds['a'] / again:.1f}x it")


if __name__ == "__main__":
    main()
