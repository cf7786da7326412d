"""The toy-world demo: pretrained vs unpretrained x uncertainty vs random x seeds.

Pretrains the toy backbone on first use, runs the grid as a sweep (toolkit.sweep: a
local process pool, one torch thread per process; re-running resumes), then prints the
summary table and writes the runs, a summary CSV, a learning-curve figure and a report.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd

from .analysis import (final_summary, gain_summary, label_efficiency_table, learning_curves, tidy_rounds,
                       upsampling_ratios, upsampling_summary)
from .config import RunConfig, resolve_config
from .pretrain import ensure_toy_backbone
from .record import load_run, write_atomic
from .sweep import Sweep

WEIGHTS = ("pretrained", "random")
STRATEGIES = ("least_confidence", "random")
FINAL_METRICS = ["test/worst_group", "test/mismatched", "test/balanced", "test/accuracy"]
TOY_LEGEND = "(groups: y0=landbird, y1=waterbird; s0=land, s1=water; mismatched = y0_s1 and y1_s0)"


def demo_configs(seeds: list[int], overrides: list[str] | None = None, preset: str = "toy") -> dict[str, RunConfig]:
    cfgs = {}
    for w in WEIGHTS:
        for s in STRATEGIES:
            for seed in seeds:
                ov = [f"model.weights={w}", f"al.strategy={s}", f"seed={seed}"] + list(overrides or [])
                cfgs[f"{'pre' if w == 'pretrained' else 'unpre'}-{s}-s{seed}"] = resolve_config(preset, ov)
    return cfgs


def format_table(tidy: pd.DataFrame, records, legend: str = TOY_LEGEND) -> str:
    """The demo's printed summary: final metrics with CIs, upsampling, label efficiency."""
    fin = final_summary(tidy, FINAL_METRICS)
    ups = upsampling_summary(upsampling_ratios(records))
    eff = pd.concat([label_efficiency_table(tidy, m, labels_counted=c)
                     for m in ("test/worst_group", "test/accuracy") for c in ("all", "acquired")], ignore_index=True)
    lines = [f"Final budget ({int(fin['n_labels'].max())} labels), mean [95% CI over {int(fin['n_seeds'].min())} seeds, t]:"]
    head = f"{'weights':<11}{'strategy':<18}" + "".join(f"{m.split('/')[1]:>23}" for m in FINAL_METRICS)
    lines.append(head)
    for _, r in fin.iterrows():
        cells = "".join(f"{r[m]:.3f} [{r[m + '_low']:.2f}, {r[m + '_high']:.2f}]".rjust(23) for m in FINAL_METRICS)
        lines.append(f"{r['weights']:<11}{r['strategy']:<18}{cells}")
    lines.append("")
    lines.append("Upsampling ratio (share among acquired / share in pool), mean [95% CI]:")
    groups = sorted(ups["group"].unique())
    pool = {g: ups[ups['group'] == g]['pool_share'].iloc[0] for g in groups}
    lines.append(f"{'weights':<11}{'strategy':<18}" + "".join(f"{g + f' ({pool[g]:.1%})':>22}" for g in groups))
    for (w, s), g in ups.groupby(["weights", "strategy"], sort=True):
        cells = "".join(f"{r['upsampling']:.2f} [{r['low']:.1f}, {r['high']:.1f}]".rjust(22)
                        for _, r in g.sort_values("group").iterrows())
        lines.append(f"{w:<11}{s:<18}{cells}")
    lines.append(legend)
    lines.append("")
    lines.append("Worst-group gain of least-confidence over random, paired over seeds (mean [95% t-CI]); AUC = mean")
    lines.append("worst-group accuracy over the label counts of the run, so it credits a curve that rises earlier:")
    for _, r in gain_summary(tidy, "test/worst_group", by=["weights"]).iterrows():
        lines.append(f"  {r['weights']:<11} AUC {r['auc_gain']:+.3f} [{r['auc_gain_low']:+.3f}, {r['auc_gain_high']:+.3f}]"
                     f"   final {r['final_gain']:+.3f} [{r['final_gain_low']:+.3f}, {r['final_gain_high']:+.3f}]")
    lines.append("")
    lines.append("Label efficiency (labels random needs for its final value / labels least-confidence needs")
    lines.append("to reach it; bootstrap 95% CI over seeds; 0 = never reached; n/a = random does not improve")
    lines.append("on the seed set, so the ratio is undefined; inf = reached with the seed set alone). Counted")
    lines.append("with and without the seed set: the paper does not say which its 5.8x uses.")
    for _, r in eff.iterrows():
        cell = ("n/a (undefined)" if r["efficiency"] != r["efficiency"]
                else f"{r['efficiency']:.2f}x [{r['low']:.2f}, {r['high']:.2f}]")
        lines.append(f"  {r['metric'].split('/')[1]:<12}{r['labels_counted']:<22}{r['weights']:<11} {cell}")
    return "\n".join(lines)


def run_demo(*, seeds: list[int], out: str | Path = "cache/demo", workers: int | None = None,
             overrides: list[str] | None = None, preset: str = "toy", legend: str = TOY_LEGEND,
             title: str = "Toy world") -> pd.DataFrame:
    out = Path(out)
    t0 = time.time()
    if preset == "toy":
        ensure_toy_backbone()
    cfgs = demo_configs(seeds, overrides, preset)
    workers = workers or max(1, min(len(cfgs), os.cpu_count() or 1))
    print(f"[demo] {len(cfgs)} runs on {workers} worker process(es); records under {out / 'runs'}", flush=True)
    results = Sweep(out, cfgs).launch_local(workers=workers)
    failed = {n: s for n, s in results.items() if s != "done"}
    if failed:
        raise RuntimeError(f"demo runs failed: {', '.join(failed)}; errors in {out / 'index.json'}")
    records = [load_run(out / "runs" / name) for name in cfgs]
    tidy = tidy_rounds(records)
    write_atomic(out / "rounds.csv", tidy.to_csv(index=False))
    write_atomic(out / "summary.csv", final_summary(tidy, FINAL_METRICS).to_csv(index=False))
    table = format_table(tidy, records, legend=legend)
    write_atomic(out / "summary.txt", table + "\n")
    from .figures import learning_curve_figure

    fig = learning_curve_figure(learning_curves(tidy, "test/worst_group"), title=f"{title}: worst-group test accuracy")
    fig.write_html(out / "learning_curves.html", include_plotlyjs=True)
    from .report import build_report

    # the quick report (tables, curves, composition); the representation sections add
    # ~40 s of feature extraction, probes and t-SNE, so they are one command away
    report = build_report([out / "runs" / name for name in cfgs], out / "report.html",
                          title=f"{title} demo", representation=False)
    print("\n" + table, flush=True)
    print(f"\n[demo] wrote {out / 'summary.csv'}, {out / 'rounds.csv'}, {out / 'learning_curves.html'} "
          f"({time.time() - t0:.0f}s in all)", flush=True)
    print(f"[demo] report: {report.resolve()}\n[demo] with separability, t-SNE maps and neighbourhoods: "
          f"./run altk report {out / 'runs'} --out {out / 'report-full.html'}", flush=True)
    return tidy
