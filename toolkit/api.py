"""Notebook-friendly calls for the common cases; the full options stay in configs and presets."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from toolkit._util.dicts import deep_update
from toolkit._util.log import info
from toolkit._util.paths import cache_path
from toolkit.al.loop import run_active_learning
from toolkit.config import resolve_config
from toolkit.record import RunRecord


def run(preset: str = "toy", *, strategy: str | None = None, weights: str | None = None, seed: int | None = None,
        out: str | Path | None = None, model: str | None = None, data: dict | None = None, al: dict | None = None,
        finetune: dict | None = None, overrides: list[str] | dict | None = None,
        log: Callable[[str], None] | None = info) -> RunRecord:
    """Run (or resume) one active-learning run with full finetuning, and return its record.

    The keywords are the common overrides of `preset`; anything else goes through
    `overrides` (`--set` strings such as `["finetune.base_lr=0.01"]`, or a nested dict).

    Args:
        preset: a preset name (`toolkit.config.list_presets()`) or a YAML file.
        strategy: the acquisition function, e.g. "least_confidence" or "random".
        weights: "pretrained", "random", or a weights file.
        seed: the run's seed.
        out: the run directory (default: `<cache>/runs/<preset>-<weights>-<strategy>-s<seed>`).
        model: a registered model name (`toolkit.list_models()`).
        data: dataset options (`data.params`), e.g. {"n_train": 2000}.
        al: protocol options (`ALConfig`), e.g. {"budget": 60}.
        finetune: finetuning options (`FinetuneConfig`), e.g. {"max_steps": 50}.
        overrides: further overrides, applied last.
        log: where progress lines go (None for silence).

    Returns:
        The run's `RunRecord` (also on disk under `out`).

    Examples:
        >>> import toolkit
        >>> rec = toolkit.run("toy", strategy="random", weights="random", seed=0,
        ...                   out="altk-doc/run", data={"n_train": 240, "n_val": 40, "n_test": 160},
        ...                   al={"seed_size": 10, "per_round": 5, "budget": 5},
        ...                   finetune={"max_steps": 2, "micro_batch": 16}, log=None)
        >>> rec.status, list(rec.rounds["n_labels"])
        ('finished', [10, 15])
    """
    nested: dict = {}
    if strategy is not None:
        nested["al"] = {"strategy": strategy}
    if al:
        nested = deep_update(nested, {"al": dict(al)})
    if weights is not None or model is not None:
        nested["model"] = {k: v for k, v in (("weights", weights), ("name", model)) if v is not None}
    if data:
        nested["data"] = {"params": dict(data)}
    if finetune:
        nested["finetune"] = dict(finetune)
    if seed is not None:
        nested["seed"] = seed
    cfg = resolve_config(preset, nested)
    if overrides:
        from toolkit.config import parse_overrides

        extra = parse_overrides(overrides) if isinstance(overrides, list) else overrides
        cfg = resolve_config(preset, deep_update(nested, extra))
    return run_active_learning(cfg, default_run_dir(preset, cfg) if out is None else out, log=log)


def default_run_dir(preset: str | Path, cfg) -> Path:
    """Where a run writes without `out` (`run`, `altk run`): `<cache>/runs/<preset>-<weights>-<strategy>-s<seed>`.

    Args:
        preset: the preset name or YAML file the config came from (its stem names the folder).
        cfg: the resolved `RunConfig`.
    """
    return cache_path("runs", f"{Path(str(preset)).stem}-{cfg.model.weights}-{cfg.al.strategy}-s{cfg.seed}")
