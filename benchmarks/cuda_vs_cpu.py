"""The same active-learning run on CUDA and on the CPU, compared (GPU-CHECKS item 1).

    python benchmarks/cuda_vs_cpu.py --out /tmp/cvc [--preset toy] [--set key=value ...]

Runs the preset four ways: on the CPU; on CUDA twice (bf16 autocast, channels_last,
pinned uint8 batches, two loader workers), to see whether a CUDA run repeats itself; and
on CUDA twice more with `deterministic: true`. Prints, per run, each round's steps, test
accuracy and worst-group accuracy, the acquired ids' overlap with the CPU run's, and the
seconds per round spent training, evaluating and scoring. Needs a GPU; without one it
runs the CPU arm alone.
"""
from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before CUDA starts: deterministic cuBLAS on request

import numpy as np
import torch

from toolkit.al.loop import run_active_learning
from toolkit.config import resolve_config


def summarise(record) -> dict:
    rounds = [json.loads(line) for line in (record.path / "rounds.jsonl").read_text().splitlines()]
    main = lambda r: r["metrics"].get("test") or next(iter(r["metrics"].values()))  # noqa: E731
    return {
        "steps": [r["train"]["steps"] for r in rounds],
        "accuracy": [round(main(r)["accuracy"], 4) for r in rounds],
        "worst_group": [round(main(r)["worst_group"], 4) for r in rounds],
        "acquired": [sorted(int(a["id"]) for a in r["acquired"]) for r in rounds],
        "seconds": {k: float(np.mean([r["timings"][k] for r in rounds])) for k in ("train_s", "eval_s", "score_s")},
    }


def overlap(a: list[list[int]], b: list[list[int]]) -> dict:
    """Share of all acquired ids in common, and the first round whose picks differ."""
    sa, sb = {i for r in a for i in r}, {i for r in b for i in r}
    first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    return {"shared": len(sa & sb) / max(1, len(sa | sb)), "first_different_round": first}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--preset", default="toy")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    arms = {"cpu": ["device=cpu"]}
    if torch.cuda.is_available():
        arms.update({"cuda": ["device=cuda", "loader_workers=2"], "cuda_again": ["device=cuda", "loader_workers=2"],
                     "cuda_det": ["device=cuda", "loader_workers=2", "deterministic=true"],
                     "cuda_det_again": ["device=cuda", "loader_workers=2", "deterministic=true"]})
    out = {}
    for arm, sets in arms.items():
        cfg = resolve_config(args.preset, [*args.set, *sets, "threads=null"])
        out[arm] = summarise(run_active_learning(cfg, os.path.join(args.out, arm), log=None))
        s = out[arm]
        vs = overlap(out["cpu"]["acquired"], s["acquired"])
        print(f"{arm:15s} steps {s['steps']} acc {s['accuracy']} worst {s['worst_group']} | acquired shared with "
              f"cpu {vs['shared']:.2f}, first different round {vs['first_different_round']} | s/round "
              + ", ".join(f"{k} {v:.1f}" for k, v in s["seconds"].items()), flush=True)
    for a, b in (("cuda", "cuda_again"), ("cuda_det", "cuda_det_again")):
        if a in out:
            same = out[a] | {"seconds": None} == out[b] | {"seconds": None}
            print(f"{a} vs {b}: {'identical records' if same else 'records differ'} "
                  f"({overlap(out[a]['acquired'], out[b]['acquired'])})")
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
