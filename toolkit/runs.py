"""A folder of runs, for notebooks: from run records to the paper's tables and figures in
three lines, e.g.

    runs = toolkit.load_runs("cache/demo/runs")
    runs.summary()
    runs.figure("learning_curves")

Thin wrappers: every method calls the analysis or figure function it names, on the runs'
tidy table, with the paper's defaults (the validation split when the runs have it).

Runs that differ in a config field (other than model, weights, strategy and seed) are never
pooled: the tables have a `config` column naming the fields that differ ("al.budget=20"),
one arm per value, and `differing_fields` lists them.
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path

import pandas as pd

from toolkit.analysis import (
    default_split,
    final_summary,
    label_efficiency_table,
    learning_curves,
    tidy_rounds,
    upsampling_ratios,
    upsampling_summary,
)
from toolkit.analysis.curves import arm_by, differing_fields, fold_config
from toolkit.errors import MissingFileError, RecordError
from toolkit.record import RunRecord, load_run, run_dirs

FIGURES = ("learning_curves", "upsampling")


def load_runs(*paths: str | Path) -> "Runs":
    """The run records under `paths`, as a `Runs` view with the paper's tables and figures.

    Args:
        *paths: run folders, folders of runs, or sweep and demo folders.

    Examples:
        >>> import toolkit
        >>> runs = toolkit.load_runs("altk-doc/loop")
        >>> len(runs), list(runs.summary()["strategy"])
        (1, ['least_confidence'])
    """
    return Runs([load_run(d) for d in find_run_dirs(*paths)])


def find_run_dirs(*paths: str | Path) -> list[Path]:
    """The run folders under `paths` (run folders, folders of runs, sweep and demo folders;
    `record.run_dirs` of each), in order.

    Raises:
        MissingFileError: none of `paths` holds a run record.
    """
    dirs = [d for p in paths for d in run_dirs(Path(p))]
    if not dirs:
        raise MissingFileError(f"no run records (folders with rounds.jsonl) under {', '.join(map(str, paths))}; "
                                f"make some with ./run demo or altk run")
    return dirs


class Runs:
    """Run records and the paper's views of them (see the module's doc).

    Each method calls the analysis it names on `tidy`, on the default split (`split`: the
    validation split when the runs have it, else test); a metric named without a split
    ("worst_group") is read on that split. `load_runs` builds one from folders.

    Args:
        records: the `RunRecord`s, in order (`runs[name]` finds one by its run name;
            `len(runs)` and `for rec in runs` go through them).

    Attributes:
        records: the run records.
        tidy: every round of every run, one row each (`analysis.tidy_rounds`; computed once).
        split: the split the views read.
        differing_fields: the config fields on which the runs differ, each value its own arm.

    Examples:
        >>> import toolkit
        >>> runs = toolkit.load_runs("altk-doc/tasks/t0")  # the records the RunRecord example wrote
        >>> runs
        Runs(8 runs on the test split: pretrained/least_confidence x2, pretrained/random x2, ...)
        >>> toolkit.Runs(runs.records[:2]), runs["random-random-s0"].strategy, runs.differing_fields
        (Runs(2 runs on the test split: pretrained/least_confidence x2), 'random', [])
        >>> runs.summary(["worst_group"])[["weights", "strategy", "n_seeds", "test/worst_group"]]
              weights          strategy  n_seeds  test/worst_group
        0  pretrained  least_confidence        2              0.65
        1  pretrained            random        2              0.40
        2      random  least_confidence        2              0.20
        3      random            random        2              0.20
        >>> runs.efficiency("worst_group")[["weights", "efficiency"]].round(2)  # random needs 1.42x the labels
              weights  efficiency
        0  pretrained        1.42
        1      random        1.29
        >>> type(runs.figure("learning_curves")).__name__
        'Figure'
    """

    def __init__(self, records: list[RunRecord]) -> None:
        self.records = list(records)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def __getitem__(self, name: str) -> RunRecord:
        for rec in self.records:
            if rec.name == name:
                return rec
        raise KeyError(f"no run {name!r}; runs: {', '.join(r.name for r in self.records)}")

    def __repr__(self) -> str:
        by = arm_by(self.tidy, ["weights", "strategy"])
        arms = self.tidy.groupby(by)["run"].nunique()
        return f"Runs({len(self)} runs on the {self.split} split: " + ", ".join(
            "/".join(map(str, key[:2])) + (f" [{key[2]}]" if len(key) > 2 else "") + f" x{n}"
            for key, n in arms.items()) + ")"

    @property
    def differing_fields(self) -> list[str]:
        """The config fields on which the runs differ, each value its own arm (`analysis.differing_fields`)."""
        return differing_fields(self.records)

    @cached_property
    def tidy(self) -> pd.DataFrame:
        """Every round of every run, one row each (`analysis.tidy_rounds`)."""
        return tidy_rounds(self.records)

    @property
    def split(self) -> str:
        return default_split(self.tidy)

    def _metric(self, metric: str) -> str:
        return metric if "/" in metric else f"{self.split}/{metric}"

    def summary(self, metrics: tuple[str, ...] = ("worst_group", "accuracy")) -> pd.DataFrame:
        """Mean [95% CI] at the final budget per arm (`analysis.final_summary`; no interval from
        one seed, accuracies' intervals within [0, 1])."""
        return final_summary(self.tidy, [self._metric(m) for m in metrics])

    def curves(self, metric: str = "worst_group") -> pd.DataFrame:
        """Mean [CI] per label count per arm (`analysis.learning_curves`)."""
        return learning_curves(self.tidy, self._metric(metric))

    def efficiency(self, metric: str = "accuracy", labels_counted: str = "all") -> pd.DataFrame:
        """Label efficiency of least confidence over random (`analysis.label_efficiency_table`)."""
        return label_efficiency_table(self.tidy, self._metric(metric), labels_counted=labels_counted)

    def upsampling(self) -> pd.DataFrame:
        """Acquired share / pool share per group, mean [CI] (`analysis.upsampling_summary`)."""
        return upsampling_summary(upsampling_ratios(self.records))

    def figure(self, name: str, metric: str = "worst_group"):
        """A plotly figure: "learning_curves" (of `metric`) or "upsampling"."""
        from toolkit.report.figures import learning_curve_figure, upsampling_figure

        if name == "learning_curves":
            m = self._metric(metric)
            return learning_curve_figure(fold_config(self.curves(m)), title=m, y_label=m.split("/")[1])
        if name == "upsampling":
            return upsampling_figure(fold_config(self.upsampling()))
        raise RecordError(f"unknown figure {name!r}; valid: {', '.join(FIGURES)}")

    def report(self, out: str | Path, **kwargs) -> Path:
        """The HTML report of these runs (`report.build_report`)."""
        from toolkit.report.html import build_report

        return build_report([r.path for r in self.records], out, **kwargs)

    def explore(self, **kwargs):
        """The pool explorer widget over these runs (`explore.Explorer`)."""
        from toolkit.report.explore import Explorer

        return Explorer(self.records, **kwargs)
