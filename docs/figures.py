"""The docs' figures, from the folders the commands wrote:

    .venv/bin/python docs/figures.py suite cache/suite-probe   # -> docs/img/suite-gain-per-task.png
    .venv/bin/python docs/figures.py dose cache/dose-study     # -> docs/img/dose-gain.png, dose-vs-separability.png
    .venv/bin/python docs/figures.py strategies cache/suite-probe   # -> docs/img/strategies.png
    .venv/bin/python docs/figures.py toyworld                  # -> docs/img/toyworld.png
    .venv/bin/python docs/figures.py interventions cache/interventions   # -> docs/img/interventions-gain.png, interventions-phase.png

suite: each task's worst-group AUC gain of least-confidence over random, pretrained against
unpretrained, with paired 95% CIs over seeds (`report.figures.task_gain_figure`).
dose: the gain along each pretraining-dose axis with 95% CIs over tasks
(`report.figures.pretraining_dose_figure`), and the gain against the label's linear
separability, one point per backbone x task (`report.figures.gain_vs_measure_figure`).
strategies: each strategy's worst-group AUC gain over random, one point per task, pretrained
and unpretrained side by side, the mean across tasks as a bar (from `strategies.csv`).
interventions: the gain against the label's separability, per representation (mean and 95%
t-CI over tasks): the dose study's backbones beside experiments a (erase the label), b (erase the
background) and c (inject the label into random-init features), from their table.csv files and
the dose study's dose.csv (found beside, or at cache/dose-study); and the phase diagram: each
synthetic cell at the separabilities the probes measured on it, coloured by its gain, with the
measured backbones (the dose study's, and the real networks' from dose-real beside) placed by the
same measures and coloured on the same scale.
toyworld: the default toy world's training pool, six images of each (label x background) group
with the group's share of the pool: what the demo learns from.
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
    """Drawn with matplotlib directly: one panel per dose axis (the static export of the plotly
    figure puts every axis on one x scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from toolkit.analysis.dose import gain_by_dose

    table = pd.read_csv(Path(folder) / "dose.csv")
    by = gain_by_dose(table)
    full = by[by["weights"] == "pretrained"].iloc[0]
    rnd = by[by["axis"] == "random"]
    panels = [("step", "pretraining steps (of 1,700)", None), ("images", "pretraining images", 40_000),
              ("shapes", "shapes seen in pretraining (of 20)", 20), ("width", "stem channels (x 8 = embedding)", 32)]
    panels = [p for p in panels if p[0] == "step" or (by["axis"] == p[0]).any()]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.8), sharey=True)
    for ax, (axis, label, full_dose) in zip(axes, panels):
        g = by[by["axis"] == axis].sort_values("dose")
        if full_dose is not None:
            g = pd.concat([g, full.to_frame().T.assign(dose=full_dose)]).sort_values("dose")
        ax.errorbar(g["dose"].astype(float), g["auc_gain"].astype(float),
                    yerr=[(g["auc_gain"] - g["low"]).astype(float), (g["high"] - g["auc_gain"]).astype(float)],
                    marker="o", capsize=3, color="#1f77b4")
        if len(rnd):
            ax.axhline(float(rnd["auc_gain"].iloc[0]), ls=":", color="grey", label="random init")
        ax.axhline(0, ls="--", color="lightgrey")
        ax.set_xlabel(label)
        if axis == "images":
            ax.set_xticks([5_000, 10_000, 20_000, 30_000, 40_000], ["5k", "10k", "20k", "30k", "40k"])
        if axis == "width":
            ax.set_xscale("log", base=2)
            ax.set_xticks(g["dose"].astype(float), [f"{int(d)}" for d in g["dose"]])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("worst-group AUC gain\n(least-confidence - random)")
    axes[0].legend(loc="upper left", frameon=False)
    fig.suptitle(f"Active-learning gain along the pretraining dose (mean, 95% CI over {int(by['tasks'].max())} tasks)")
    fig.tight_layout()
    gain = IMG / "dose-gain.png"
    fig.savefig(gain, dpi=150)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (weights, g) in enumerate(table.groupby("weights", sort=False)):
        ax.scatter(g["sep_label"], g["auc_gain"], s=14, label=weights, color=plt.cm.tab10(i % 10))
    ax.axhline(0, ls="--", color="grey")
    ax.set_xlabel("linear separability of the label (5-fold probe, balanced accuracy)")
    ax.set_ylabel("worst-group AUC gain")
    ax.set_title("Gain against the representation, per backbone and task")
    ax.legend(fontsize=7, frameon=False, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    scatter = IMG / "dose-vs-separability.png"
    fig.savefig(scatter, dpi=150)
    plt.close(fig)
    return [gain, scatter]


def strategies(folder: str) -> list[Path]:
    """Matplotlib: per strategy, the tasks' gains as points over a bar of their mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = pd.read_csv(Path(folder) / "strategies.csv")
    rows = rows[rows["strategy"] != "random"]
    names = sorted(dict.fromkeys(rows["strategy"]), key=lambda s: (s != "least_confidence", s))  # LC first
    fig, ax = plt.subplots(figsize=(9, 4.2))
    jitter = np.random.default_rng(0)
    for j, (weights, label, colour) in enumerate((("pretrained", "pretrained", "#1f77b4"),
                                                  ("random", "unpretrained", "#ff7f0e"))):
        g = rows[rows["weights"] == weights]
        x = np.arange(len(names)) + (j - 0.5) * 0.38
        ax.bar(x, [g[g["strategy"] == s]["auc_gain"].mean() for s in names], width=0.36, color=colour, alpha=0.35,
               label=f"{label}: mean over tasks")
        for i, s in enumerate(names):
            v = g[g["strategy"] == s]["auc_gain"].to_numpy()
            ax.scatter(x[i] + jitter.uniform(-0.12, 0.12, len(v)), v, s=10, color=colour)
    ax.axhline(0, color="grey", lw=0.8, ls="--")
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_ylabel("worst-group AUC gain over random")
    n_tasks = rows["task"].nunique()
    ax.set_title(f"Strategies side by side: {n_tasks} drawn toy tasks, probe mode (a point = a task, 10 seeds)")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    out = IMG / "strategies.png"
    fig.savefig(out, dpi=150)
    plt.close(fig)
    return [out]


def toyworld(_folder: str | None = None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from toolkit.data import create_dataset

    pool = create_dataset("toyworld", "train")  # the default task, as the demo renders it
    y, place = pool.labels, pool.attributes[pool.spurious_column].to_numpy()
    backgrounds = ("land", "water")
    fig, axes = plt.subplots(4, 6, figsize=(7.2, 5.4))
    for row, (label, bg) in enumerate([(0, 0), (1, 1), (0, 1), (1, 0)]):
        members = np.flatnonzero((y == label) & (place == bg))[:6]
        share = ((y == label) & (place == bg)).mean()
        kind = "matched" if label == bg else "mismatched"
        for col, ax in enumerate(axes[row]):
            ax.set_xticks([]), ax.set_yticks([])
            if col < len(members):
                ax.imshow(pool.images[members[col]].permute(1, 2, 0).numpy(), interpolation="nearest")
        axes[row][0].set_ylabel(f"{pool.class_names[label]}\non {backgrounds[bg]}\n{share:.1%}, {kind}", fontsize=8,
                                rotation=0, ha="right", va="center")
    fig.suptitle(f"The toy world's training pool ({len(pool):,} images): shape family = label, "
                 "background = spurious attribute", fontsize=9)
    fig.tight_layout()
    out = IMG / "toyworld.png"
    fig.savefig(out, dpi=150)
    plt.close(fig)
    return [out]


def interventions(folder: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from toolkit.metrics import mean_ci

    def per_representation(table: pd.DataFrame, key: str) -> pd.DataFrame:
        rows = []
        for name, g in table.groupby(key, sort=False):
            gain, low, high = mean_ci(g["auc_gain"].to_numpy())
            rows.append({"name": name, "sep": g["sep_label"].mean(), "gain": gain, "low": low, "high": high})
        return pd.DataFrame(rows).sort_values("sep")

    root = Path(folder)
    dose_csv = root.parent / "dose-study" / "dose.csv"
    series = [(per_representation(pd.read_csv(dose_csv), "weights"), "dose study (pretraining)", "black", "D", "")]
    for letter, label, color in (("a", "a: erase the label", "#d62728"), ("b", "b: erase the background", "#2ca02c"),
                                 ("c", "c: inject the label into random init", "#1f77b4")):
        series.append((per_representation(pd.read_csv(root / letter / "table.csv"), "representation"), label, color,
                       "o", "-"))
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for points, label, color, marker, line in series:
        ax.errorbar(points["sep"], points["gain"], yerr=[points["gain"] - points["low"], points["high"] - points["gain"]],
                    marker=marker, ls=line or "none", capsize=3, color=color, label=label, alpha=0.85)
    ax.axhline(0, ls="--", color="grey")
    ax.set_xlabel("linear separability of the label (5-fold probe, balanced accuracy)")
    ax.set_ylabel("worst-group AUC gain\n(least-confidence - random)")
    ax.set_title("Change only the representation: does the gain follow the label's separability?", fontsize=10)
    ax.legend(frameon=False, fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = IMG / "interventions-gain.png"
    fig.savefig(out, dpi=150)
    plt.close(fig)
    return [out, _phase(root, pd.read_csv(dose_csv))]


def _phase(root: Path, dose: pd.DataFrame) -> Path:
    """The phase diagram in measured units: synthetic cells and real backbones on one plane."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    from toolkit.analysis.gain_law import gain_by_representation, phase_table

    cells = phase_table(pd.read_csv(root / "d" / "table.csv"))
    marks = [gain_by_representation(dose, by="weights").rename(columns={"weights": "name"})]
    real_csv = root.parent / "dose-real" / "dose.csv"
    if real_csv.is_file():
        marks.append(pd.read_csv(real_csv).rename(columns={"backbone": "name"}))
    marks = pd.concat(marks, ignore_index=True)
    values = pd.concat([cells["auc_gain"], marks["auc_gain"]])
    norm = TwoSlopeNorm(vcenter=0.0, vmin=min(-0.05, values.min()), vmax=max(0.05, values.max()))
    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    dots = ax.scatter(cells["sep_label"], cells["sep_spurious"], c=cells["auc_gain"], cmap="RdBu", norm=norm, s=260,
                      marker="s", edgecolors="grey", label="synthetic cell (d), 5 task compositions")
    ax.scatter(marks["sep_label"], marks["sep_spurious"], c=marks["auc_gain"], cmap="RdBu", norm=norm, s=90,
               marker="D", edgecolors="black", label="measured backbone (dose study, real networks)")
    for _, m in marks.iterrows():
        ax.annotate(str(m["name"]).removeprefix("pretrained@"), (m["sep_label"], m["sep_spurious"]), fontsize=6,
                    xytext=(3, -9), textcoords="offset points", rotation=-35)
    fig.colorbar(dots, ax=ax, label="worst-group AUC gain (least-confidence - random)")
    ax.set_xlabel("linear separability of the label (as measured: 5-fold probe, balanced accuracy)")
    ax.set_ylabel("separability of the spurious attribute (as measured)")
    ax.set_title("Phase diagram: the gain over the two separabilities", fontsize=10)
    ax.legend(frameon=False, fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = IMG / "interventions-phase.png"
    fig.savefig(out, dpi=150)
    plt.close(fig)
    return out


if __name__ == "__main__":
    kind = sys.argv[1] if len(sys.argv) > 1 else "suite"
    if kind not in ("suite", "dose", "strategies", "toyworld", "interventions"):  # the old form: a suite folder alone
        kind, folder = "suite", kind
    else:
        folder = sys.argv[2] if len(sys.argv) > 2 else {"suite": "cache/suite-probe", "dose": "cache/dose-study",
                                                        "strategies": "cache/suite-probe", "toyworld": None,
                                                        "interventions": "cache/interventions"}[kind]
    for path in {"suite": suite, "dose": dose, "strategies": strategies, "toyworld": toyworld,
                 "interventions": interventions}[kind](folder):
        print(path)
