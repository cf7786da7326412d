"""The probe-mode pretraining-dose study against its 15-minute target (issue #22), by phase.

    .venv/bin/python benchmarks/dose_study.py [--tasks 20] [--seeds 10] [--workers 2]

Runs `run_dose_study` with the nine backbones the target was set for (the study's default has
grown since: denser steps and the width axis) on a fresh cache root (the toy
backbone's checkpoints are linked in, so pretraining is not counted; rendering the tasks'
worlds and extracting their features are). Phase 1: worlds, extraction and the probe runs
(`measure=False`); phase 2: the separability measures alone on the same folder (the runs
exist, so only the cross-validated probes are computed). Prints each phase's seconds, the
total and its ratio to the 15-minute target, and the probe runs' share as the baseline
measured in the same run (what the study costs without extraction and measures).
"""
from __future__ import annotations

import shutil
import time

TARGET_S = 15 * 60
ENGINE_TARGET_S = 6 * 60  # the probe engine's own target for the same study
DOSES = ("random", "pretrained@step0", "pretrained@step100", "pretrained@step200", "pretrained@step400",
         "pretrained@step800", "pretrained", "pretrained@images5000", "pretrained@shapes10")


def main() -> None:
    from fresh_root import fresh_cache_root, study_arguments  # benchmarks/, beside this script

    args = study_arguments(__doc__)
    root = fresh_cache_root("altk-dose-bench-")
    from toolkit.data.toy_tasks import draw_tasks
    from toolkit.experiments.pretraining_dose import run_dose_study
    from toolkit.models.pretrain import ensure_toy_doses

    ensure_toy_doses(list(DOSES))  # pretrains what is missing, outside the timing
    tasks, seeds = draw_tasks(args.tasks, seed=0), list(range(args.seeds))
    out = root / "study"
    try:
        t0 = time.perf_counter()
        run_dose_study(list(DOSES), tasks, seeds, out=out, workers=args.workers, measure=False, log=None)
        t1 = time.perf_counter()
        run_dose_study(list(DOSES), tasks, seeds, out=out, workers=args.workers, measure=True, log=None)
        t2 = time.perf_counter()
        # the baseline: the same probe runs again from scratch on the now cached features
        shutil.rmtree(out / "runs")
        run_dose_study(list(DOSES), tasks, seeds, out=out, workers=args.workers, measure=False, log=None)
        t3 = time.perf_counter()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    n_runs = len(DOSES) * len(tasks) * len(seeds) * 2
    total = t2 - t0
    print(f"dose study: {len(DOSES)} backbones x {len(tasks)} tasks x {len(seeds)} seeds x 2 strategies "
          f"= {n_runs} probe runs, {args.workers} workers")
    print(f"  worlds + extraction + probe runs  {t1 - t0:8.1f} s")
    print(f"  separability measures             {t2 - t1:8.1f} s")
    print(f"  total                             {total:8.1f} s = {total / 60:.1f} min; target 15 min: "
          f"{total / TARGET_S:.2f}x the target ({'met' if total <= TARGET_S else 'missed'})")
    print(f"  baseline, probe runs alone on cached features: {t3 - t2:.1f} s; the study is {total / (t3 - t2):.1f}x it")
    print(f"  the probe engine's target, the study from a fresh cache root in {ENGINE_TARGET_S // 60} min: "
          f"{total / ENGINE_TARGET_S:.2f}x it ({'met' if total <= ENGINE_TARGET_S else 'missed'}); rendering and "
          f"extraction on their own {t1 - t0 - (t3 - t2):.1f} s")


if __name__ == "__main__":
    main()
