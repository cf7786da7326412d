"""The toy-world demo: its first screen, then pretrained vs unpretrained x uncertainty vs random
x seeds with full finetuning.

Pretrains the toy backbone on first use (saving the dose checkpoints on the way). The first
screen (`toolkit.experiments.first_screen`) measures the claims in probe mode across the suite's
first tasks, with a half-pretrained arm; then the full-finetuning grid runs as a sweep
(toolkit.al.sweep: a local process pool, one torch thread per process; re-running resumes).
Returns the grid's rounds and writes the runs, a summary CSV, a learning-curve figure and a report.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import pandas as pd

from toolkit._util.log import info
from toolkit._util.paths import cache_path, shown
from toolkit.al.sweep import Sweep
from toolkit.analysis import final_summary, learning_curves
from toolkit.config import RunConfig, resolve_config
from toolkit.errors import RunsFailedError
from toolkit.experiments.protocols import FINAL_METRICS, STRATEGIES, TOY_LEGEND, WEIGHTS, arm_short
from toolkit.models.pretrain import ensure_toy_backbone
from toolkit.record import load_run, run_dirs, tidy_rounds, write_atomic
from toolkit.report.tables import format_table


def demo_configs(seeds: list[int], overrides: list[str] | None = None, preset: str = "toy") -> dict[str, RunConfig]:
    """One resolved config per weights x strategy x seed, named `pre-least_confidence-s0` etc."""
    cfgs = {}
    for w in WEIGHTS:
        for s in STRATEGIES:
            for seed in seeds:
                ov = [f"model.weights={w}", f"al.strategy={s}", f"seed={seed}"] + list(overrides or [])
                cfgs[f"{arm_short(w)}-{s}-s{seed}"] = resolve_config(preset, ov)
    return cfgs


def run_demo(*, seeds: list[int], out: str | Path | None = None, workers: int | None = None,
             overrides: list[str] | None = None, preset: str = "toy", legend: str = TOY_LEGEND,
             title: str = "Toy world", screen_tasks: int = 0, screen: dict | None = None,
             log: Callable[[str], None] | None = info) -> pd.DataFrame:
    """Run (or resume) the demo grid and write its tables, figure and report under `out`.

    `screen_tasks` > 0 (toy preset only) runs the first screen on that many of the suite's tasks
    first, under `out/screen` (`screen`: more `run_first_screen` keywords). Returns every round of every grid run (also `out/rounds.csv`);
    the printed summary table is `out/summary.txt`.
    """
    log = log or (lambda _: None)
    out = Path(out) if out is not None else cache_path("demo")
    t0 = time.time()
    if preset == "toy":
        ensure_toy_backbone()
    if screen_tasks and preset == "toy":
        from toolkit.experiments.first_screen import run_first_screen

        run_first_screen(tasks=screen_tasks, out=out / "screen", workers=workers, log=log, **(screen or {}))
    cfgs = demo_configs(seeds, overrides, preset)
    workers = workers or max(1, min(len(cfgs), os.cpu_count() or 1))
    log(f"\n[demo] full finetuning on the default toy task: {len(cfgs)} runs on {workers} worker process(es); "
        f"records under {shown(out / 'runs')}")
    sweep = Sweep(out, cfgs)
    results = sweep.launch_local(workers=workers)
    failed = [n for n, s in results.items() if s != "done"]
    if failed:  # each run's reason, not only its name; the whole traceback stays in index.json
        reasons = sweep.failures()
        raise RunsFailedError(f"{len(failed)} of {len(cfgs)} demo runs failed:\n" + "\n".join(
            f"  {n}: {reasons.get(n, 'no error recorded')}" for n in failed) + f"\nfull errors in {out / 'index.json'}")
    # every run in the folder (an earlier call's seeds too), as `altk report` reads it: one folder, one answer
    records = [load_run(d) for d in run_dirs(out / "runs")]
    tidy = tidy_rounds(records)
    write_atomic(out / "rounds.csv", tidy.to_csv(index=False))
    write_atomic(out / "summary.csv", final_summary(tidy, FINAL_METRICS).to_csv(index=False))
    table = format_table(tidy, records, legend=legend)
    write_atomic(out / "summary.txt", table + "\n")
    from toolkit.report.figures import learning_curve_figure
    from toolkit.report.html import build_report

    fig = learning_curve_figure(learning_curves(tidy, "test/worst_group"), title=f"{title}: worst-group test accuracy")
    fig.write_html(out / "learning_curves.html", include_plotlyjs=True)
    # the quick report (tables, curves, composition); the representation sections add
    # ~40 s of feature extraction, probes and t-SNE, so they are one command away
    screen_dir = out / "screen"
    report = build_report([r.path for r in records], out / "report.html", title=f"{title} demo",
                          representation=False,
                          first_screen=screen_dir if (screen_dir / "screen.json").exists() else None)
    log("\n" + table)
    log(f"\n[demo] wrote {shown(out / 'summary.csv')}, {shown(out / 'rounds.csv')}, {shown(out / 'learning_curves.html')} "
        f"({time.time() - t0:.0f}s in all)")
    log(f"[demo] with separability, t-SNE maps and neighbourhoods: "
        f"./run altk report {shown(out / 'runs')} --out {shown(out / 'report-full.html')}")
    log(f"[demo] report (the first screen, then the default task): {shown(report)}")
    return tidy
