"""Does finetuning repeat bit for bit on CUDA? With and without `deterministic` mode.

    python benchmarks/cuda_determinism.py [--model bit_m_r50x1] [--resolution 128] [--steps 10]

Finetunes the same random-init model on the same synthetic batch stream twice per mode and
compares the weights' digests (toolkit.models.weights_digest) and the largest weight
difference. Run it in a fresh process: deterministic cuBLAS needs CUBLAS_WORKSPACE_CONFIG
before CUDA starts, which this script sets.
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import numpy as np
import torch
from gpu_paper_scale import synthetic_pool

from toolkit._util.repro import resolve_device, set_deterministic
from toolkit.al.finetune import FinetuneConfig, finetune
from toolkit.models import create_model, weights_digest


def trained(name: str, pool, device, steps: int):
    torch.manual_seed(0)
    model = create_model(name, weights="random", num_classes=2)
    finetune(model, pool, np.arange(64), FinetuneConfig(max_steps=steps, micro_batch=32, augment_pad=4),
             device=device, seed=0)
    return model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="bit_m_r50x1")
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = resolve_device(args.device)
    pool = synthetic_pool(256, args.resolution)
    for mode in (False, True):
        torch.use_deterministic_algorithms(False)
        if mode:
            set_deterministic(True)
        a, b = (trained(args.model, pool, device, args.steps) for _ in range(2))
        diff = max((pa - pb).abs().max().item() for pa, pb in zip(a.parameters(), b.parameters()))
        print(f"deterministic={mode}: digests {'equal' if weights_digest(a) == weights_digest(b) else 'differ'}, "
              f"largest weight difference {diff:.3g}", flush=True)


if __name__ == "__main__":
    main()
