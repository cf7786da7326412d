"""The probe-mode task suite end to end, against its 60-second target, from a fresh cache root.

    .venv/bin/python benchmarks/suite_time.py [--tasks 20] [--seeds 10] [--workers 2]

Runs `run_task_suite` (what `altk suite --tasks 20 --seeds 0-9` runs) on a fresh cache root (the
toy backbone's checkpoints are linked in, so pretraining is not counted): first with nothing
cached (rendering the tasks' worlds and extracting their features counted), then again into a
new output folder with those caches present (the target's condition), the baseline measured in
the same run. Their difference is what rendering and extraction cost on their own.
"""
from __future__ import annotations

import shutil
import time

TARGET_S = 60


def main() -> None:
    from fresh_root import fresh_cache_root, study_arguments  # benchmarks/, beside this script

    args = study_arguments(__doc__)
    root = fresh_cache_root("altk-suite-bench-")
    from toolkit.data.toy_tasks import draw_tasks
    from toolkit.experiments.suite import run_task_suite

    tasks, seeds = draw_tasks(args.tasks, seed=0), list(range(args.seeds))
    try:
        t0 = time.perf_counter()
        first = run_task_suite(tasks, seeds, out=root / "fresh", workers=args.workers, log=None)
        t1 = time.perf_counter()
        again = run_task_suite(tasks, seeds, out=root / "cached", workers=args.workers, log=None)
        t2 = time.perf_counter()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    n_runs = sum(len(v) for v in again.values())
    assert n_runs == sum(len(v) for v in first.values())
    cold, warm = t1 - t0, t2 - t1
    print(f"suite: {len(tasks)} tasks, {len(seeds)} seeds, {n_runs} probe runs, {args.workers} workers")
    print(f"  fresh cache root (worlds, extraction, probe runs)  {cold:7.1f} s")
    print(f"  caches present (probe runs)                        {warm:7.1f} s; target {TARGET_S} s: "
          f"{warm / TARGET_S:.2f}x the target ({'met' if warm <= TARGET_S else 'missed'})")
    print(f"  rendering and extraction on their own              {cold - warm:7.1f} s")


if __name__ == "__main__":
    main()
