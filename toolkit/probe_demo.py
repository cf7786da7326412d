"""`altk demo --probe`: the demo on frozen cached features, in seconds per run.

Extracts (once) the pool and test embeddings of the pretrained and the unpretrained
backbone, then runs probe-only active learning: weights x {least_confidence, random} x
seeds. The toy world by default; `altk demo --real --probe` asks the same of
EfficientNet-Lite0 (ImageNet) on the fashion_places composites (see `REAL`).
"""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from .analysis import final_summary, tidy_rounds
from .analysis.separability import GroupSeparability
from .config import ALConfig
from .demo import FINAL_METRICS, TOY_LEGEND, format_table
from .features import extract_features
from .pretrain import ensure_toy_backbone
from .probe import run_probe

POOL = {"n_train": 4000, "n_test": 1000}
AL = {"seed_size": 40, "per_round": 5, "budget": 60}
# the real-image world: a real ImageNet network on composites of real photographs, rendered at
# the network's own input size (timm's data config: 224); the full-finetuning preset uses 64 px
REAL = {"model": "efficientnet_lite0", "dataset": "fashion_places", "data": {"size": 224},
        "legend": "(groups: y0=footwear, y1=tops; s0=natural photo, s1=built scene; mismatched = y0_s1 and y1_s0)"}


def separability_table(caches: dict[str, object]) -> str:
    """Cross-validated linear probes of the pool embeddings (paper Fig. 6), per weights."""
    rows = []
    for weights, cache in caches.items():
        sep = GroupSeparability().fit(cache.embeddings, cache.labels, cache.spurious)
        row = {"weights": weights, **{f"{t} probe": a for t, a in zip(sep.scores_["target"], sep.scores_["balanced_accuracy"])}}
        row.update({f"group probe {g}": a for g, a in zip(sep.per_group_["group"], sep.per_group_["group_probe"])})
        rows.append(row)
    return ("Group separability of the pool embeddings (5-fold linear probes; balanced accuracy, and the\n"
            "group probe's accuracy on each group; paper Fig. 6):\n" + pd.DataFrame(rows).round(3).to_string(index=False))


def run_probe_demo(*, seeds: list[int], out: str | Path = "cache/demo-probe", data: dict | None = None,
                   al: dict | None = None, feature_root: str | Path = "cache/features", model: str = "toy_resnet",
                   dataset: str = "toyworld", legend: str = TOY_LEGEND, separability: bool = False) -> str:
    out = Path(out)
    t0 = time.time()
    if model == "toy_resnet":
        ensure_toy_backbone()
    records, pools = [], {}
    for weights in ("pretrained", "random"):
        caches = {split: extract_features(model, dataset, split, weights=weights,
                                         dataset_params=POOL if data is None else data, root=feature_root, log=None)
                  for split in ("train", "test")}
        pools[weights] = caches["train"]
        for strategy in ("least_confidence", "random"):
            for seed in seeds:
                name = f"{'pre' if weights == 'pretrained' else 'unpre'}-{strategy}-s{seed}"
                records.append(run_probe(caches["train"], {"test": caches["test"]}, out / "runs" / name,
                                         al=ALConfig(strategy=strategy, **{**AL, **(al or {})}), seed=seed))
        print(f"[demo] {weights}: {2 * len(seeds)} probe runs done ({time.time() - t0:.0f}s)", flush=True)
    tidy = tidy_rounds(records)
    tidy.to_csv(out / "rounds.csv", index=False)
    final_summary(tidy, FINAL_METRICS).to_csv(out / "summary.csv", index=False)
    table = format_table(tidy, records, legend=legend)
    if separability:
        from .features import open_cache

        table += "\n\n" + separability_table({w: open_cache(c) for w, c in pools.items()})
    (out / "summary.txt").write_text(table + "\n")
    print("\n" + table + f"\n\n[demo] probe mode: {len(records)} runs, {time.time() - t0:.0f}s; wrote {out}", flush=True)
    return table
