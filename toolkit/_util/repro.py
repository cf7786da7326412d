"""Device resolution and derived random streams. Randomness is passed in, never global."""
from __future__ import annotations

import os
import warnings

import numpy as np
import torch

from toolkit.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" -> cuda if available else cpu; anything else is checked and returned."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device {name!r} is not a device name; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available; use device=cpu or auto")
    return device


def set_deterministic(enabled: bool) -> None:
    """CUDA's deterministic mode (`deterministic: true` in a run's config).

    On CUDA, cuDNN's weight gradients, adaptive pooling's backward and the NLL loss are
    nondeterministic by default, so two runs of one config (or a resumed run) may part ways
    after a few rounds. This mode picks deterministic kernels (slower; torch warns where one
    has none) and cuBLAS's fixed workspace. CPU runs are deterministic either way."""
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.benchmark = False
    if enabled:
        if torch.cuda.is_initialized() and "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
            warnings.warn("deterministic mode: CUDA was initialised before CUBLAS_WORKSPACE_CONFIG was set, so cuBLAS "
                          "may stay nondeterministic; set CUBLAS_WORKSPACE_CONFIG=:4096:8 before starting Python")
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def round_rng(seed: int, round_index: int, stream: int = 0) -> np.random.Generator:
    """The numpy Generator for one round of one run: a pure function of (seed, round, stream),
    so resuming at round r needs no saved RNG state."""
    return np.random.default_rng([seed, round_index, stream])


def round_torch_seed(seed: int, round_index: int) -> int:
    return int(round_rng(seed, round_index, stream=99).integers(0, 2**62))
