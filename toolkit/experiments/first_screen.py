"""The demo's first screen: the paper's claims across tasks, with an arm between random init and
full pretraining.

Tasks are the first K draws of the robustness suite's distribution (`draw_tasks(K, seed=0)`), a
rule fixed before looking at any result. Backbones are the toy backbone from random init, its
checkpoint at step 800 of 1,700 (the saved checkpoint nearest half of the pretraining; saved by
the same run, so it costs nothing) and the fully pretrained one. Probe mode, least-confidence
and random sampling, 10 seeds per task by default. It is the pretraining-dose study at three
doses without the separability measures.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from toolkit._util.log import info
from toolkit._util.paths import cache_path, shown
from toolkit.analysis.curves import learning_curves
from toolkit.analysis.dose import dose_table, pooled_label_efficiency, task_means
from toolkit.data.toy_tasks import draw_tasks
from toolkit.experiments.pretraining_dose import run_dose_study
from toolkit.record import write_atomic
from toolkit.report.tables import format_screen

SCREEN_BACKBONES = ("random", "pretrained@step800", "pretrained")
SCREEN_TASKS = 5
METRIC = "test/worst_group"


def run_first_screen(*, tasks: int = SCREEN_TASKS, seeds: list[int] = list(range(10)),
                     backbones: tuple[str, ...] = SCREEN_BACKBONES, out: str | Path | None = None, workers: int | None = None, data: dict | None = None,
                     al: dict | None = None, feature_root: str | Path | None = None,
                     log: Callable[[str], None] | None = info) -> str:
    """Run (or resume) the first screen and write its table (`screen.txt`, `screen.csv`) and
    learning-curve figure (`screen.html`) under `out`; returns the printed table."""
    from toolkit.report.figures import learning_curve_figure

    log = log or (lambda _: None)
    out = Path(out) if out is not None else cache_path("demo", "screen")
    t0 = time.time()
    drawn = draw_tasks(tasks, seed=0)
    log(f"[screen] {len(backbones)} backbones x the suite's first {tasks} tasks x {len(seeds)} seeds x "
        f"least-confidence/random, probe mode; runs under {shown(out / 'runs')}")
    study = run_dose_study(list(backbones), drawn, seeds, out=out, data=data, al=al,
                           feature_root=feature_root, workers=workers, measure=False, log=None)
    table = dose_table(study["records"], [])
    means = task_means(study["records"], [METRIC, "test/accuracy"])
    efficiency = {c: pooled_label_efficiency(means, METRIC, labels_counted=c) for c in ("all", "acquired")}
    text = format_screen(table, efficiency, n_seeds=len(seeds))
    write_atomic(out / "screen.csv", table.to_csv(index=False))
    write_atomic(out / "screen.txt", text + "\n")
    curves = learning_curves(means, METRIC, by=["weights", "strategy"])  # CI over tasks
    fig = learning_curve_figure(curves, title=f"Worst-group accuracy, mean over the suite's first {tasks} tasks "
                                              "(95% CI over tasks)", y_label="worst-group test accuracy")
    write_atomic(out / "screen.html", fig.to_html(include_plotlyjs=True))
    write_atomic(out / "screen.json", fig.to_json())  # the demo's report draws it again
    log("\n" + text + f"\n[screen] {time.time() - t0:.0f}s; wrote {shown(out / 'screen.txt')}, {shown(out / 'screen.html')}")
    return text
