"""The docs' figures, from the folders the commands wrote:

    .venv/bin/python docs/figures.py suite cache/suite-probe   # -> docs/img/suite-gain-per-task.png
    .venv/bin/python docs/figures.py dose cache/dose-study     # -> docs/img/dose-gain.png, dose-vs-separability.png

suite: each task's worst-group AUC gain of least-confidence over random, pretrained against
unpretrained, with paired 95% CIs over seeds (`report.figures.task_gain_figure`).
dose: the gain along each pretraining-dose axis with 95% CIs over tasks
(`report.figures.pretraining_dose_figure`), and the gain against the label's linear
separability, one point per backbone x task (`report.figures.gain_vs_measure_figure`).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from toolkit.report.figures import save_static, task_gain_figure

IMG = Path(__file__).parent / "img"


def suite(folder: str) -> list[Path]:
    table = pd.read_csv(Path(folder) / "suite.csv")
    fig = task_gain_figure(table, title=f"Uncertainty gain per task ({len(table)} drawn toy tasks, probe mode)")
    return [save_static(fig, IMG / "suite-gain-per-task.png")]


def dose(folder: str) -> list[Path]:
    from toolkit.analysis.dose import gain_by_dose
    from toolkit.report.figures import gain_vs_measure_figure, pretraining_dose_figure

    table = pd.read_csv(Path(folder) / "dose.csv")
    return [save_static(pretraining_dose_figure(gain_by_dose(table)), IMG / "dose-gain.png"),
            save_static(gain_vs_measure_figure(table), IMG / "dose-vs-separability.png")]


if __name__ == "__main__":
    kind = sys.argv[1] if len(sys.argv) > 1 else "suite"
    if kind not in ("suite", "dose"):  # the old form: a suite folder alone
        kind, folder = "suite", kind
    else:
        folder = sys.argv[2] if len(sys.argv) > 2 else {"suite": "cache/suite-probe", "dose": "cache/dose-study"}[kind]
    for path in {"suite": suite, "dose": dose}[kind](folder):
        print(path)
