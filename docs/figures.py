"""The README's figure, from a suite folder (what `altk suite` wrote):

    .venv/bin/python docs/figures.py cache/suite-probe      # -> docs/img/suite-gain-per-task.png

Each task's worst-group AUC gain of least-confidence over random, pretrained against
unpretrained, with paired 95% CIs over seeds (`report.figures.task_gain_figure`).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from toolkit.report.figures import save_static, task_gain_figure


def main(suite: str) -> Path:
    table = pd.read_csv(Path(suite) / "suite.csv")
    fig = task_gain_figure(table, title=f"Uncertainty gain per task ({len(table)} drawn toy tasks, probe mode)")
    return save_static(fig, Path(__file__).parent / "img" / "suite-gain-per-task.png")


if __name__ == "__main__":
    print(main(sys.argv[1] if len(sys.argv) > 1 else "cache/suite-probe"))
