"""One paper-scale Waterbirds run, timed piece by piece: the core of ../shared/GPU-CHECKS.md.

    python benchmarks/gpu_paper_scale.py [--compile] [--json out.json]   # a GPU: BiT-M-R50x1, 480 px
    python benchmarks/gpu_paper_scale.py --tiny                           # CPU smoke size (the tests run it)

Needs no hub and no data: random-init weights (a step costs the same as with pretrained
ones) and a synthetic pool of 4,795 random uint8 images held in memory, so JPEG decoding is
not counted. Runs the toolkit's own `finetune` (the paper's recipe: SGD, batch 32 in
micro-batches, flips and 16 px translations, the BiT-HyperRule's first steps), feature
extraction and pool scoring, and measures for each: images per second, peak GPU memory,
and for finetuning the host syncs per step (`toolkit._util.syncs`). With --compile, finetuning
and scoring again through `torch.compile`, with the compile time.

From the rates it estimates one paper run: 65 rounds (a seed set of 40, then 64 rounds of
5 up to 360 labels), each finetuning for at most 500 steps (the schedule's end; the stop
rule ends pretrained runs sooner), evaluating val + test (1,199 + 5,794 images) and scoring
the unlabelled pool; and a grid of --grid-runs such runs on one GPU.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd
import torch

from toolkit._util.repro import resolve_device
from toolkit._util.syncs import count_host_syncs, device_roots
from toolkit.al.finetune import FinetuneConfig, finetune, maybe_compile
from toolkit.al.loop import score_pool
from toolkit.data.base import GroupedDataset
from toolkit.features.cache import _embed
from toolkit.models import create_model

PAPER = {"seed": 40, "per_round": 5, "budget": 320, "max_steps": 500, "batch": 32, "val": 1199, "test": 5794,
         "pool": 4795}


def synthetic_pool(n: int, resolution: int, seed: int = 0) -> GroupedDataset:
    """n random uint8 images with a Waterbirds-like label x place table (in memory)."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.empty((n, 3, resolution, resolution), dtype=torch.uint8)
    for lo in range(0, n, 256):  # in slices: one randint over 3 GB would need 24 GB of int64
        images[lo:lo + 256] = torch.randint(0, 256, images[lo:lo + 256].shape, generator=gen, dtype=torch.uint8)
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.23).astype(np.int64)
    place = np.where(rng.random(n) < 0.95, y, 1 - y)
    attrs = pd.DataFrame({"y": y, "place": place}, index=pd.Index(np.arange(n), name="id"))
    return GroupedDataset("synthetic-waterbirds", "train", images, attrs, "y", "place", ("landbird", "waterbird"))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None


def time_finetune(net, model, pool, device, *, micro_batch: int | str, warmup_steps: int, steps: int) -> dict:
    """Images/s of finetuning after `warmup_steps` (cuDNN autotuning, compilation), peak
    memory, and host syncs per step."""
    labelled = np.arange(min(PAPER["seed"] + PAPER["budget"], len(pool)))  # the last round's labelled set
    cfg = FinetuneConfig(batch_size=PAPER["batch"], micro_batch=micro_batch, augment_pad=16, max_steps=warmup_steps)
    t0 = time.perf_counter()
    finetune(net, pool, labelled, cfg, device=device, seed=0)
    _sync(device)
    warmup_s = time.perf_counter() - t0
    _peak_reset(device)
    cfg.max_steps = steps
    t0 = time.perf_counter()
    out = finetune(net, pool, labelled, cfg, device=device, seed=1)
    _sync(device)
    secs = time.perf_counter() - t0
    cfg.max_steps = 3
    with count_host_syncs(device, device_roots(model, pool.images, pool._labels_tensor)) as syncs:
        finetune(net, pool, labelled, cfg, device=device, seed=2)
    return {"requested": micro_batch, "micro_batch": out["micro_batch"], "images_per_s": steps * PAPER["batch"] / secs,
            "warmup_s": warmup_s, "data_share": out["data_seconds"] / secs, "peak_gb": _peak_gb(device),
            "syncs_per_step": syncs.n / 3, "sync_sites": sorted(set(syncs.where))[:8]}


def time_inference(net, model, pool, device, *, batch_size: int, workers: int, rows: int) -> dict:
    """Images/s of extraction (embeddings) and of pool scoring (logits, least confidence, top-k)."""
    positions = np.arange(min(rows, len(pool)))
    out = {}
    for name, run in (("extract", lambda: _embed(model, pool, positions, device, batch_size, workers)),
                      ("score", lambda: score_pool(net, pool, positions, PAPER["per_round"], "least_confidence",
                                                   np.random.default_rng(0), device=device, batch_size=batch_size,
                                                   workers=workers))):
        run()  # warm-up: autotuning, compilation, loader start
        _sync(device)
        _peak_reset(device)
        t0 = time.perf_counter()
        run()
        _sync(device)
        out[name] = {"images_per_s": len(positions) / (time.perf_counter() - t0), "peak_gb": _peak_gb(device)}
        with count_host_syncs(device, device_roots(model, pool.images)) as syncs:
            run()
        out[name]["syncs_per_batch"] = syncs.n / -(-len(positions) // batch_size)
    return out


def estimate(finetune_ips: float, eval_ips: float, score_ips: float, grid_runs: int) -> dict:
    """Seconds of one paper run (and a grid) from the measured rates; see the module's doc."""
    rounds = PAPER["budget"] // PAPER["per_round"] + 1
    train = rounds * PAPER["max_steps"] * PAPER["batch"] / finetune_ips
    evaluate = rounds * (PAPER["val"] + PAPER["test"]) / eval_ips
    labelled = PAPER["seed"] + PAPER["per_round"] * np.arange(rounds - 1)
    score = float(np.sum(PAPER["pool"] - labelled)) / score_ips
    run = train + evaluate + score
    return {"rounds": rounds, "train_s": train, "eval_s": evaluate, "score_s": score, "run_s": run,
            "grid_runs": grid_runs, "grid_h": grid_runs * run / 3600}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--model", default="bit_m_r50x1")
    ap.add_argument("--resolution", type=int, default=480)
    ap.add_argument("--pool", type=int, default=PAPER["pool"])
    ap.add_argument("--micro-batches", default="8,auto",
                    help="finetuning micro-batch sizes to time (divisors of 32, or auto)")
    ap.add_argument("--warmup-steps", type=int, default=5)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--eval-batch", type=int, default=256)
    ap.add_argument("--eval-rows", type=int, default=PAPER["pool"])
    ap.add_argument("--workers", type=int, default=0, help="loader processes for extraction and scoring")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile")
    ap.add_argument("--grid-runs", type=int, default=20, help="runs in the grid estimate (2 strategies x 2 inits x 5 seeds)")
    ap.add_argument("--tiny", action="store_true", help="a CPU-sized smoke configuration")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    if args.tiny:
        args.model, args.resolution, args.pool, args.warmup_steps, args.steps = "tiny_bit", 32, 64, 1, 2
        args.eval_batch, args.eval_rows = 16, 64
    device = resolve_device(args.device)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    pool = synthetic_pool(args.pool, args.resolution)
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
              "model": args.model, "resolution": args.resolution, "pool": args.pool, "make_pool_s": time.perf_counter() - t0}
    print(f"{result['device']}, torch {torch.__version__}: {args.model} at {args.resolution} px, pool {args.pool}")
    modes = [False, True] if args.compile else [False]
    for compiled in modes:
        model = create_model(args.model, weights="random", num_classes=2).to(device)
        net = maybe_compile(model, compiled)
        tag = "compiled" if compiled else "eager"
        ft = [time_finetune(net, model, pool, device, micro_batch=m if m == "auto" else int(m),
                            warmup_steps=args.warmup_steps, steps=args.steps) for m in args.micro_batches.split(",")]
        inf = time_inference(net, model, pool, device, batch_size=args.eval_batch, workers=args.workers,
                             rows=args.eval_rows)
        result[tag] = {"finetune": ft, **inf}
        for f in ft:
            print(f"[{tag}] finetune micro-batch {f['requested']} -> {f['micro_batch']:2d}: {f['images_per_s']:8.1f} img/s, "
                  f"warm-up {f['warmup_s']:.1f} s, data {f['data_share']:.0%} of step time, "
                  f"peak {f['peak_gb'] or 0:.1f} GB, {f['syncs_per_step']:.2f} host syncs/step {f['sync_sites']}")
        for name in ("extract", "score"):
            print(f"[{tag}] {name:8s} batch {args.eval_batch}: {inf[name]['images_per_s']:8.1f} img/s, "
                  f"peak {inf[name]['peak_gb'] or 0:.1f} GB, {inf[name]['syncs_per_batch']:.2f} host syncs/batch")
        best_ft = max(f["images_per_s"] for f in ft)
        result[tag]["estimate"] = est = estimate(best_ft, inf["score"]["images_per_s"], inf["score"]["images_per_s"],
                                                 args.grid_runs)
        print(f"[{tag}] one paper run (65 rounds, 500 steps each at most): {est['run_s'] / 60:.1f} min "
              f"(train {est['train_s'] / 60:.1f}, eval {est['eval_s'] / 60:.1f}, score {est['score_s'] / 60:.1f}); "
              f"grid of {est['grid_runs']} runs: {est['grid_h']:.1f} h on one device")
    if args.compile:
        ratio = (max(f["images_per_s"] for f in result["compiled"]["finetune"])
                 / max(f["images_per_s"] for f in result["eager"]["finetune"]))
        result["compile_speedup_finetune"] = ratio
        print(f"torch.compile: finetuning {ratio:.2f}x eager")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
