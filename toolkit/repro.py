"""Device resolution and derived random streams. Randomness is passed in, never global."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import torch


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" -> cuda if available else cpu; anything else is checked and returned."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available; use device=cpu or auto")
    return device


def round_rng(seed: int, round_index: int, stream: int = 0) -> np.random.Generator:
    """The numpy Generator for one round of one run: a pure function of (seed, round, stream),
    so resuming at round r needs no saved RNG state."""
    return np.random.default_rng([seed, round_index, stream])


def round_torch_seed(seed: int, round_index: int) -> int:
    return int(round_rng(seed, round_index, stream=99).integers(0, 2**62))


def git_commit(path: str | Path = ".") -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
