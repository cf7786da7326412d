"""Typed run configuration: dataclass defaults < YAML preset < command-line overrides."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from toolkit._util.dicts import deep_update
from toolkit.errors import ConfigError, MissingFileError

PRESET_DIR = Path(__file__).parent / "presets"


@dataclass
class FinetuneConfig:
    """The BiT image recipe; the toy preset shrinks `schedule_scale` and `micro_batch`.

    Args:
        base_lr: peak learning rate (SGD, momentum 0.9).
        batch_size: examples per optimisation step.
        micro_batch: examples per forward pass (gradient accumulation); batch_size / micro_batch
            passes per step. Exact with GroupNorm models (no batch statistics). "auto": the
            largest divisor of batch_size whose step fits the device's memory (the whole batch
            on the CPU); one pass instead of four is 2.15x faster for BiT-M-R50x1 at 480 px on an
            H100 (README, GPU section). The chosen size is in each round's `train` record.
        stop_ratio / loss_window: the LossRatioStop rule.
        stop_loss: the loss the rule reads each step: "batch" (the whole batch's mean, over
            `loss_window` steps; the toolkit's default) or "last_micro_batch" (the last
            micro-batch's loss alone, every step, no window: the paper's code,
            utils/train_test_common.py:278).
        warmup_offset: 0 (BiT: lr = base * step / warm-up) or 1 (the paper's code: step + 1).
        keep_optimizer_state: keep one optimiser (its momentum buffers) across AL rounds,
            as the paper's code does (run.py:173, created once); False builds a fresh one
            each round, which is what the paper's text describes (reset each round).
        schedule_scale: multiplies every BiT-HyperRule boundary.
        max_steps: hard cap on steps (None = the schedule's end).
        augment_pad: random translation by up to this many pixels (reflect pad + crop); 0 = off.
        flip: random horizontal flips.
        weight_decay: SGD weight decay (BiT: 0).
        optimizer: "sgd" (BiT: momentum 0.9) or "adamw" (the paper's RoBERTa recipe, with
            `adam_betas` and `weight_decay`).
        schedule: "bit_hyperrule" (warm-up and step decays; ends the run) or "constant"
            (base_lr throughout; `max_steps` or the stop rule end the run).
        partial_batches: draw micro-batches pass by pass and keep each pass's last, partial
            one (the paper's code: a DataLoader of micro-batches with drop_last=False,
            utils/train_test_common.py:210-220). With `stop_loss: last_micro_batch` the rule then
            reads a 1-3 example loss whenever a step ends on it. False (the default): one endless
            shuffled stream, every micro-batch full.
        compile: run the model through `torch.compile`, once per run (off by default: its
            cost, ~75 s on the test CPU, needs many steps to repay; unmeasured on GPUs).
    """

    base_lr: float = 0.003
    momentum: float = 0.9
    batch_size: int = 32
    micro_batch: int | str = 8
    stop_ratio: float = 0.001
    loss_window: int = 5
    stop_loss: str = "batch"
    warmup_offset: int = 0
    keep_optimizer_state: bool = False
    schedule_scale: float = 1.0
    max_steps: int | None = None
    augment_pad: int = 0
    flip: bool = True
    weight_decay: float = 0.0
    optimizer: str = "sgd"
    adam_betas: list = field(default_factory=lambda: [0.9, 0.999])
    schedule: str = "bit_hyperrule"
    compile: bool = False
    partial_batches: bool = False

    def validate(self) -> None:
        if self.optimizer not in ("sgd", "adamw"):
            raise ConfigError(f"finetune.optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.schedule not in ("bit_hyperrule", "constant"):
            raise ConfigError(f"finetune.schedule must be 'bit_hyperrule' or 'constant', got {self.schedule!r}")
        if self.schedule == "constant" and self.max_steps is None:
            raise ConfigError("finetune.schedule 'constant' needs finetune.max_steps (it has no end of its own)")
        if self.stop_loss not in ("batch", "last_micro_batch"):
            raise ConfigError(f"finetune.stop_loss must be 'batch' or 'last_micro_batch', got {self.stop_loss!r}")
        if self.warmup_offset not in (0, 1):
            raise ConfigError(f"finetune.warmup_offset must be 0 (BiT) or 1 (the paper's code), got {self.warmup_offset}")
        if self.micro_batch == "auto":
            return
        if not isinstance(self.micro_batch, int) or self.micro_batch < 1:
            raise ConfigError(f"finetune.micro_batch must be an integer >= 1 or 'auto', got {self.micro_batch!r}")
        if self.batch_size % self.micro_batch:
            raise ConfigError(f"batch_size ({self.batch_size}) must be a multiple of micro_batch ({self.micro_batch})")




@dataclass
class DataConfig:
    name: str = "toyworld"
    params: dict = field(default_factory=dict)  # the dataset's own options (see its loader)
    eval_splits: list = field(default_factory=lambda: ["val", "test"])


@dataclass
class ModelConfig:
    """name: a registered model; weights: "pretrained", "random", or a path.
    zero_head: "always" (the paper's text: a zero-initialised head for every arm) or
    "pretrained_only" (the paper's code: zeroed only while loading pretrained weights, so its
    unpretrained arm keeps PyTorch's default init; models/architecture.py:168-170)."""

    name: str = "toy_resnet"
    weights: str = "pretrained"
    zero_head: str = "always"


@dataclass
class ALConfig:
    """Active-learning protocol.

    Args:
        strategy: an acquisition name (see toolkit.al.acquisition.list_strategies()).
        seed_size: labelled examples before the first round.
        seed_set: "balanced" (equal per class, the paper's choice) or "random".
        per_round: examples acquired per round (the first round's size for "geometric").
        budget: examples acquired in total beyond the seed set (the paper's "acquired").
        schedule: "fixed" (per_round each round) or "geometric" (each round acquires
            `geometric_factor` times the previous one, the reference code's option).
        geometric_factor: the growth of each round's size under the "geometric" schedule
            (> 0; below 1 the rounds shrink, and a run that would acquire nothing is refused).
        pool_subsample: score only a random subset of this many unlabelled examples,
            re-drawn each round (iWildCam, CIFAR, Amazon); None = the whole pool.
        save_pool_outputs: write every round's candidate ids, scores and logits to
            `<run>/pool_outputs/round_NNN.h5` (read with `RunRecord.pool_outputs(round)`).
        size_rounding: how geometric sizes become integers: "floor" (the paper's code,
            run.py:232) or "round" (the toolkit before issue #12).
        max_resampled_share: refuse a run that would label more than this share of a pool
            that `matched_fraction` shrank by resampling (a dose-response variant built from
            existing images, not regenerated); raise it to run anyway.

    Examples:
        >>> from toolkit import ALConfig
        >>> from toolkit.config import acquisition_sizes
        >>> ALConfig().strategy, ALConfig().budget
        ('least_confidence', 320)
        >>> acquisition_sizes(ALConfig(per_round=5, budget=20))  # examples acquired after each round
        [5, 5, 5, 5]
        >>> acquisition_sizes(ALConfig(per_round=5, budget=20, schedule="geometric"))
        [5, 10, 5]
    """

    strategy: str = "least_confidence"
    seed_size: int = 40
    seed_set: str = "balanced"
    per_round: int = 5
    budget: int = 320
    schedule: str = "fixed"
    geometric_factor: float = 2.0
    pool_subsample: int | None = None
    save_pool_outputs: bool = False
    size_rounding: str = "floor"
    max_resampled_share: float = 0.1


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    al: ALConfig = field(default_factory=ALConfig)
    seed: int = 0
    device: str = "auto"
    threads: int | None = None  # torch threads; None = leave torch's default
    eval_batch_size: int = 512
    loader_workers: int = 0  # processes gathering inference batches (pinned on CUDA)
    deterministic: bool = False  # CUDA: deterministic kernels, slower (repro.set_deterministic); CPU runs always are
    checkpoint_rounds: list = field(default_factory=list)  # save the finetuned model after these rounds
    notes: str = ""
    protocol: str = "toolkit"  # "paper_code": every row of the fidelity table as the paper's code runs it

    def data_params(self) -> dict:
        """The dataset's options, with `seed: run` replaced by the run's seed (the paper's
        code draws CIFAR-10's rare classes from the run seed)."""
        params = dict(self.data.params)
        if params.get("seed") == "run":
            params["seed"] = self.seed
        return params

    def to_dict(self) -> dict:
        return asdict(self)


def _merge(obj: Any, updates: dict, where: str) -> Any:
    """Return a copy of dataclass `obj` with `updates` applied, recursively; unknown keys fail."""
    names = {f.name: f for f in dataclasses.fields(obj)}
    changes = {}
    for key, value in updates.items():
        if key not in names:
            raise ConfigError(
                f"unknown config key {where + key!r}; valid keys here: {', '.join(sorted(names))}"
            )
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {where + key!r} is a section; give a mapping, got {value!r}")
            value = _merge(current, value, f"{where}{key}.")
        elif isinstance(current, dict) and isinstance(value, dict):
            # free-form mappings (data.params) are merged key by key: `--set data.params.root=X`
            # must keep the preset's other dataset options
            value = deep_update(current, value)
        else:
            value = _check_type(value, names[key].type, where + key)
        changes[key] = value
    return dataclasses.replace(obj, **changes)


_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "dict": dict, "None": type(None)}


def _check_type(value: Any, annotation: str, key: str) -> Any:
    """`value` as the field's annotated type ("int", "float | None", ...), or a ValueError
    naming the key, what it got and what it takes. An int is taken where a float is."""
    allowed = [_TYPES[t.strip()] for t in str(annotation).split("|") if t.strip() in _TYPES]
    if not allowed:
        return value
    if isinstance(value, bool) and bool not in allowed:  # YAML's true is an int to Python
        pass
    elif any(isinstance(value, t) for t in allowed):
        return value
    elif float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
    if str in allowed and isinstance(value, dict) and len(value) == 1 and next(iter(value.values())) is None:
        # YAML reads "hf:" (a prefix with nothing after it) as the mapping {"hf": None}
        prefix = f"{next(iter(value))}:"
        forms = {"hf:": "hf:<org>/<name>, e.g. hf:roberta-base", "timm:": "timm:<name>, e.g. timm:resnet18",
                 "open_clip:": "open_clip:<arch>/<tag>, e.g. open_clip:ViT-B-32/laion2b_s34b_b79k"}
        form = forms.get(prefix) if key.endswith("model.name") else None
        raise ConfigError(f"config key {key!r} got {prefix!r}, which is incomplete: nothing follows the colon"
                          + (f"; give {form}" if form else f"; give the whole {names} value (quote it if it "
                             "holds ': ')"))
    raise ConfigError(f"config key {key!r} takes {names}, got {value!r} ({type(value).__name__})")


# (section, key) -> (check, what it must be); checked by `validate_config`
_RANGES = {
    ("", "seed"): (lambda v: v >= 0, "a non-negative integer"),
    ("", "threads"): (lambda v: v is None or v >= 1, "null or >= 1"),
    ("", "eval_batch_size"): (lambda v: v >= 1, ">= 1"),
    ("", "loader_workers"): (lambda v: v >= 0, ">= 0"),
    ("", "device"): (lambda v: v in ("auto", "cpu", "cuda", "mps") or (v.startswith("cuda:") and v[5:].isdigit()),
                     "one of auto, cpu, cuda, cuda:N, mps"),
    ("al", "seed_size"): (lambda v: v >= 1, ">= 1"),
    ("al", "per_round"): (lambda v: v >= 1, ">= 1"),
    ("al", "budget"): (lambda v: v >= 0, ">= 0"),
    ("al", "geometric_factor"): (lambda v: v > 0, "> 0"),
    ("al", "pool_subsample"): (lambda v: v is None or v >= 1, "null or >= 1"),
    ("al", "max_resampled_share"): (lambda v: 0 < v <= 1, "in (0, 1]"),
    ("finetune", "base_lr"): (lambda v: v > 0, "> 0"),
    ("finetune", "batch_size"): (lambda v: v >= 1, ">= 1"),
    ("finetune", "micro_batch"): (lambda v: v == "auto" or (isinstance(v, int) and v >= 1), ">= 1 or 'auto'"),
    ("finetune", "max_steps"): (lambda v: v is None or v >= 1, "null or >= 1"),
    ("finetune", "loss_window"): (lambda v: v >= 1, ">= 1"),
    ("finetune", "schedule_scale"): (lambda v: v > 0, "> 0"),
    ("finetune", "augment_pad"): (lambda v: v >= 0, ">= 0"),
    ("finetune", "weight_decay"): (lambda v: v >= 0, ">= 0"),
    ("model", "zero_head"): (lambda v: v in ("always", "pretrained_only"), "'always' or 'pretrained_only'"),
    ("data", "eval_splits"): (lambda v: len(v) >= 1 and "train" not in v,
                              "a non-empty list of held-out splits (not 'train': that is the pool)"),
    ("", "checkpoint_rounds"): (lambda v: all(isinstance(r, int) and r >= -1 for r in v),
                                "a list of round indices (>= 0, or -1 for the last)"),
}


def validate_config(cfg: "RunConfig") -> None:
    """Range checks that types alone do not give, each naming its key."""
    for (section, key), (ok, what) in _RANGES.items():
        value = getattr(getattr(cfg, section) if section else cfg, key)
        if not ok(value):
            raise ConfigError(f"config key {(section + '.' if section else '') + key!r} must be {what}, got {value!r}")
    rounds = len(acquisition_sizes(cfg.al))
    late = [r for r in cfg.checkpoint_rounds if r > rounds]
    if late:
        raise ConfigError(f"checkpoint_rounds {late}: the run has rounds 0-{rounds} (al.budget={cfg.al.budget}, "
                          f"al.per_round={cfg.al.per_round}); use indices in that range or -1 for the last")


def al_config(values: dict | None = None, **more) -> "ALConfig":
    """An ALConfig from a mapping (the CLI's --al KEY=VALUE), unknown keys and bad values named."""
    al = _merge(ALConfig(), {**(values or {}), **more}, "al.")
    validate_al(al)
    return al


def validate_al(al: "ALConfig") -> None:
    """The protocol's range checks alone (the probe loop takes an ALConfig without a RunConfig)."""
    for (section, key), (ok, what) in _RANGES.items():
        if section == "al" and not ok(getattr(al, key)):
            raise ConfigError(f"al.{key} must be {what}, got {getattr(al, key)!r}")


def acquisition_sizes(al: ALConfig) -> list[int]:
    """Examples acquired after each round, summing to the budget."""
    if al.per_round < 1:
        raise ConfigError(f"al.per_round must be >= 1, got {al.per_round}")
    if al.size_rounding not in ("round", "floor"):
        raise ConfigError(f"al.size_rounding must be 'round' or 'floor', got {al.size_rounding!r}")
    to_int = (lambda v: int(math.floor(v + 1e-9))) if al.size_rounding == "floor" else (lambda v: int(round(v)))
    sizes, size, left = [], float(al.per_round), al.budget
    while left > 0:
        k = min(to_int(size), left)
        if k < 1:  # a shrinking geometric schedule would acquire nothing, round after round
            raise ConfigError(f"al.geometric_factor={al.geometric_factor} shrinks the round size to 0 after "
                              f"{len(sizes)} rounds with {left} of al.budget={al.budget} left; use "
                              f"al.geometric_factor >= 1, a larger al.per_round, or a smaller al.budget")
        sizes.append(k)
        left -= k
        if al.schedule == "geometric":
            size *= al.geometric_factor
        elif al.schedule != "fixed":
            raise ConfigError(f"unknown al.schedule {al.schedule!r}; valid: 'fixed', 'geometric'")
    return sizes


def parse_overrides(overrides: list[str]) -> dict:
    """["al.strategy=random", "seed=3"] -> nested dict, values parsed as YAML scalars."""
    nested: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        node = nested
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return nested


def list_presets(filter: str = "") -> list[str]:
    """The preset names, for `resolve_config(preset)` and `altk run --preset`: the registry
    is the presets folder (`toolkit/presets/NAME.yaml`), so adding a file registers a preset.

    Args:
        filter: an fnmatch pattern on the name, e.g. "waterbirds*"; "" lists all.

    Examples:
        >>> from toolkit import list_presets
        >>> list_presets("waterbirds-*")[:2], "toy" in list_presets()
        (['waterbirds-bit-m-r101x1', 'waterbirds-bit-s-r50x1'], True)
    """
    import fnmatch

    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml") if fnmatch.fnmatchcase(p.stem, filter or "*"))



def load_preset(name_or_path: str | Path, _seen: tuple = ()) -> dict:
    """A preset's settings. `base: OTHER` in a preset starts from preset OTHER (the model
    variants are a few lines on top of their dataset's preset)."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        raise MissingFileError(
            f"no preset {str(name_or_path)!r}: not a file and not one of: {', '.join(list_presets())}"
        )
    try:
        settings = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"preset {path} is not valid YAML: {err}") from None
    if not isinstance(settings, dict):
        raise ConfigError(f"preset {path} must be a mapping of config sections, got {type(settings).__name__}")
    base = settings.pop("base", None)
    chain = (*_seen, str(path.resolve()))
    if base is None:
        return settings
    base_path = Path(base) if Path(base).suffix else PRESET_DIR / f"{base}.yaml"
    if str(base_path.resolve()) in chain:
        raise ConfigError(f"preset {path.stem!r}: circular base chain {' -> '.join(Path(c).stem for c in chain)} "
                         f"-> {base_path.stem}")
    return deep_update(load_preset(base, chain), settings)


PROTOCOLS = ("toolkit", "paper_code")


def resolve_config(preset: str | Path | None = None, overrides: list[str] | dict | None = None) -> RunConfig:
    """A run's config: defaults, then the preset, then (with `protocol=paper_code`) the
    paper code's setting of every fidelity-table row, then the overrides, so an explicit
    override still wins over the protocol.

    Args:
        preset: a preset name (`list_presets()`) or a YAML file; None: the defaults.
        overrides: `--set` strings (`["al.budget=60", "seed=3"]`) or a nested dict
            (`{"al": {"budget": 60}}`). Unknown keys and wrong types are refused.

    Returns:
        A `RunConfig` (typed dataclasses; `to_dict()` is what the run record stores).

    Raises:
        ConfigError: an unknown key, a wrong type or an out-of-range value, named.

    Examples:
        >>> import toolkit
        >>> cfg = toolkit.resolve_config("toy", ["al.strategy=random", "seed=3"])
        >>> cfg.al.strategy, cfg.seed, cfg.model.name
        ('random', 3, 'toy_resnet')
    """
    base = RunConfig()
    if preset is not None:
        base = _merge(base, load_preset(preset), "")
    ov = (parse_overrides(overrides) if isinstance(overrides, list) else overrides) if overrides else {}
    cfg = _merge(base, ov, "") if ov else base
    if cfg.protocol not in PROTOCOLS:
        raise ConfigError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {cfg.protocol!r}")
    validate_config(cfg)
    if cfg.protocol == "paper_code":
        from toolkit.fidelity import paper_code_overrides

        cfg = _merge(base, paper_code_overrides(cfg), "")
        cfg = _merge(cfg, ov, "") if ov else cfg
    return cfg


def config_from_dict(d: dict) -> RunConfig:
    cfg = _merge(RunConfig(), d, "")
    validate_config(cfg)
    return cfg
