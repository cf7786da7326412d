"""`altk demo --probe`: the toy-world demo on frozen cached features, in seconds per run.

Extracts (once) the pool and test embeddings of the pretrained and the unpretrained toy
backbone, then runs probe-only active learning: weights x {least_confidence, random} x seeds.
"""
from __future__ import annotations

import time
from pathlib import Path

from .analysis import final_summary, tidy_rounds
from .config import ALConfig
from .demo import FINAL_METRICS, format_table
from .features import extract_features
from .pretrain import ensure_toy_backbone
from .probe import run_probe

POOL = {"n_train": 4000, "n_test": 1000}
AL = {"seed_size": 40, "per_round": 5, "budget": 60}


def run_probe_demo(*, seeds: list[int], out: str | Path = "cache/demo-probe", data: dict | None = None,
                   al: dict | None = None, feature_root: str | Path = "cache/features") -> str:
    out = Path(out)
    t0 = time.time()
    ensure_toy_backbone()
    records = []
    for weights in ("pretrained", "random"):
        caches = {split: extract_features("toy_resnet", "toyworld", split, weights=weights,
                                         dataset_params=data or POOL, root=feature_root, log=None)
                  for split in ("train", "test")}
        for strategy in ("least_confidence", "random"):
            for seed in seeds:
                name = f"{'pre' if weights == 'pretrained' else 'unpre'}-{strategy}-s{seed}"
                records.append(run_probe(caches["train"], {"test": caches["test"]}, out / "runs" / name,
                                         al=ALConfig(strategy=strategy, **{**AL, **(al or {})}), seed=seed))
        print(f"[demo] {weights}: {2 * len(seeds)} probe runs done ({time.time() - t0:.0f}s)", flush=True)
    tidy = tidy_rounds(records)
    tidy.to_csv(out / "rounds.csv", index=False)
    final_summary(tidy, FINAL_METRICS).to_csv(out / "summary.csv", index=False)
    table = format_table(tidy, records)
    (out / "summary.txt").write_text(table + "\n")
    print("\n" + table + f"\n\n[demo] probe mode: {len(records)} runs, {time.time() - t0:.0f}s; wrote {out}", flush=True)
    return table
