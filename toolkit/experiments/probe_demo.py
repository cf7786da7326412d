"""`altk demo --probe`: the demo on frozen cached features, in seconds per run.

Extracts (once) the pool and test embeddings of the pretrained and the unpretrained
backbone, then runs probe-only active learning: weights x {least_confidence, random} x
seeds. The toy world by default; `altk demo --real --probe` asks the same of
EfficientNet-Lite0 (ImageNet) on the fashion_places composites (see `protocols.REAL`).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from toolkit._util.log import info
from toolkit._util.paths import cache_path, shown
from toolkit.analysis import final_summary
from toolkit.config import ALConfig, al_config
from toolkit.experiments.protocols import (
    FINAL_METRICS,
    PROBE_AL,
    PROBE_POOL,
    STRATEGIES,
    TOY_LEGEND,
    WEIGHTS,
    arm_short,
)
from toolkit.features.cache import extract_features, open_cache
from toolkit.features.probe import ProbeRun, run_probes
from toolkit.models.pretrain import ensure_toy_backbone
from toolkit.record import load_run, run_dirs, tidy_rounds, write_atomic
from toolkit.report.tables import format_table, separability_table


def run_probe_demo(*, seeds: list[int], out: str | Path | None = None, data: dict | None = None,
                   al: dict | None = None, feature_root: str | Path | None = None, model: str = "toy_resnet",
                   dataset: str = "toyworld", legend: str = TOY_LEGEND, separability: bool = False,
                   log: Callable[[str], None] | None = info) -> str:
    """Run (or resume) the probe demo and write its tables under `out`; returns the summary table."""
    log = log or (lambda _: None)
    al_config({**PROBE_AL, **(al or {})})  # unknown keys and bad values named before any work
    out = Path(out) if out is not None else cache_path("demo-probe")
    t0 = time.time()
    if model == "toy_resnet":
        ensure_toy_backbone()
    records, pools = [], {}
    for weights in WEIGHTS:
        caches = {split: extract_features(model, dataset, split, weights=weights,
                                         dataset_params=PROBE_POOL if data is None else data, root=feature_root,
                                         log=None)
                  for split in ("train", "test")}
        pools[weights] = caches["train"]
        runs = [ProbeRun(out / "runs" / f"{arm_short(weights)}-{strategy}-s{seed}",
                         ALConfig(strategy=strategy, **{**PROBE_AL, **(al or {})}), seed)
                for strategy in STRATEGIES for seed in seeds]
        records += run_probes(caches["train"], {"test": caches["test"]}, runs)  # in lockstep: one pass per round
        log(f"[demo] {weights}: {2 * len(seeds)} probe runs done ({time.time() - t0:.0f}s)")
    # the tables cover every run in the folder (an earlier call's seeds too), as `altk report` does:
    # one folder, one answer
    records = [load_run(d) for d in run_dirs(out / "runs")]
    tidy = tidy_rounds(records)
    write_atomic(out / "rounds.csv", tidy.to_csv(index=False))
    write_atomic(out / "summary.csv", final_summary(tidy, FINAL_METRICS).to_csv(index=False))
    table = format_table(tidy, records, legend=legend)
    if separability:
        table += "\n\n" + separability_table({w: open_cache(c) for w, c in pools.items()})
    write_atomic(out / "summary.txt", table + "\n")
    log("\n" + table + f"\n\n[demo] probe mode: {len(records)} runs, {time.time() - t0:.0f}s; wrote {shown(out)}")
    return table
