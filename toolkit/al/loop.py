"""The active-learning loop with full finetuning (paper Section 3), writing a run record.

Each round: reset the model to its initial weights, finetune on every label so far,
evaluate, score the unlabelled pool, acquire the top-k. A killed run resumes from its
last completed round and produces the same record as an uninterrupted one.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from toolkit._util.atomic import atomic_path
from toolkit._util.faults import kill_point
from toolkit._util.log import info
from toolkit._util.paths import shown
from toolkit._util.progress import progress
from toolkit._util.repro import resolve_device, round_torch_seed, set_deterministic
from toolkit.al.acquisition import StreamingTopK, build_inputs, get_acquisition, get_strategy, needs, score_logits
from toolkit.al.finetune import finetune, infer, make_optimizer, maybe_compile, predict_logits
from toolkit.al.protocol import (
    acquisition_sizes,
    candidates,
    check_budget,
    check_classes,
    check_resampled_pool,
    dataset_rows,
    pool_shares,
    run_meta,
    split_metrics,
)
from toolkit.al.rounds import clean_states, finish_run, record_round, resume_state, round_row, start_labels
from toolkit.config import RunConfig
from toolkit.data import GroupedDataset, create_dataset
from toolkit.errors import MissingFileError
from toolkit.models import create_model, weights_digest
from toolkit.record import PoolOutputWriter, RunRecord, RunWriter


def evaluate(model, ds: GroupedDataset, *, device, batch_size: int, train_shares: dict | None,
             workers: int = 0) -> dict:
    preds = np.empty(len(ds), dtype=np.int64)
    for pos, logits in predict_logits(model, ds, np.arange(len(ds)), device=device, batch_size=batch_size,
                                      workers=workers):
        preds[pos] = logits.argmax(1)
    return split_metrics(preds, ds, train_shares)


def score_pool(model, pool: GroupedDataset, candidates: np.ndarray, k: int, strategy: str,
               rng: np.random.Generator, *, device, batch_size: int, workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Top-k candidate positions and their scores for a score strategy that reads at most logits,
    streaming a top-k over the pool in batches (the GPU benchmark's scoring pass; the loop's
    acquisitions go through `_acquire`, which picks the same)."""
    top = StreamingTopK(k)
    if not needs(strategy):  # random: scores need no forward pass
        top.update(score_logits(strategy, np.empty((len(candidates), 0)), rng), candidates)
        return top.result()
    for pos, logits in predict_logits(model, pool, candidates, device=device, batch_size=batch_size, workers=workers):
        top.update(score_logits(strategy, logits), pos)
    return top.result()


# BALD with full finetuning: MC dropout on the head's input, at scoring time only
MC_DROPOUT_RATE = 0.5
MC_DROPOUT_SAMPLES = 20


def mc_dropout_logits(embeddings: np.ndarray, weight: np.ndarray, bias: np.ndarray, rng: np.random.Generator,
                      *, rate: float = MC_DROPOUT_RATE, samples: int = MC_DROPOUT_SAMPLES,
                      chunk: int = 4096) -> np.ndarray:
    """(samples, n, C) logits of the linear head on embeddings with inverted dropout at `rate`:
    BALD's posterior samples for a finetuned network (Gal & Ghahramani 2016, on the head only).
    Computed in numpy from a seeded Generator, so it is the same on every device."""
    n = len(embeddings)
    out = np.empty((samples, n, weight.shape[0]), dtype=np.float32)
    for lo in range(0, n, chunk):
        z = np.asarray(embeddings[lo:lo + chunk], dtype=np.float32)
        for t in range(samples):
            keep = rng.random(z.shape) >= rate
            out[t, lo:lo + chunk] = (z * keep / (1 - rate)) @ weight.T + bias
    return out


class NetworkInputs:
    """What the finetuned network gives a strategy (an `InputSource` for `build_inputs`).

    Logits alone come from the network's forward pass over the candidates. When embeddings or
    posterior samples are wanted too, one pass of the penultimate layer and the head (in float32)
    gives both: over the whole pool for embeddings (coreset and TypiClust measure distances to
    the labelled rows), over the candidates otherwise. Posterior samples are MC dropout on the
    head's input (`mc_dropout_logits`). Each pass runs at most once.
    """

    memo = None  # the rows change every round

    def __init__(self, model, pool: GroupedDataset, candidates: np.ndarray, need: frozenset[str], *, device,
                 batch_size: int, workers: int = 0) -> None:
        self.model, self.pool, self.candidates, self.need = model, pool, candidates, need
        self.n_classes = pool.num_classes
        self.kw = {"device": device, "batch_size": batch_size, "workers": workers}
        self._logits = self._rows = None

    @property
    def passes(self) -> int:
        """How many pool examples the network runs on for the inputs `need` declares."""
        return len(self.pool) if "embeddings" in self.need else len(self.candidates) if self.need else 0

    def _parts(self):
        module = getattr(self.model, "_orig_mod", self.model)  # a compiled model's own modules
        return module.embed, module.head

    def _penultimate_pass(self) -> np.ndarray:
        """Embeddings then logits of every row the pass covers (the others unset), float32."""
        if self._rows is None:
            embed, head = self._parts()

            def both(x):
                z = embed(x)
                with torch.autocast(device_type=z.device.type, enabled=False):
                    return torch.cat([z.float(), head(z.float())], dim=1)

            self.model.to(self.kw["device"]).eval()
            positions = np.arange(len(self.pool)) if "embeddings" in self.need else np.asarray(self.candidates)
            for pos, chunk in infer(both, self.pool, positions, **self.kw):
                if self._rows is None:
                    self._rows = np.empty((len(self.pool), chunk.shape[1]), dtype=np.float32)
                self._rows[pos] = chunk
        return self._rows

    def embeddings(self) -> np.ndarray:
        return self._penultimate_pass()[:, :-self.n_classes]

    def logits(self, candidates: np.ndarray) -> np.ndarray:
        if self.need & {"embeddings", "logit_samples"}:
            return self._penultimate_pass()[candidates, -self.n_classes:]
        if self._logits is None:
            self._logits = np.empty((len(self.candidates), self.n_classes), dtype=np.float32)
            done = 0
            bar = progress(total=len(self.candidates), desc="score pool", unit="img", leave=False)
            for pos, chunk in predict_logits(self.model, self.pool, self.candidates, **self.kw):
                self._logits[done:done + len(pos)] = chunk
                done += len(pos)
                bar.update(len(pos))
            bar.close()
        return self._logits

    def logit_samples(self, candidates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        head = self._parts()[1]
        w = head.weight.detach().float().cpu().numpy()
        b = head.bias.detach().float().cpu().numpy()
        return mc_dropout_logits(self._penultimate_pass()[candidates, :-self.n_classes], w, b, rng)


def save_checkpoint(model: torch.nn.Module, run_dir: Path, round_index: int) -> Path:
    """The model finetuned in round `round_index` -> <run>/checkpoints/round_NNN.safetensors
    (written whole, then renamed); usable as `weights=` for extraction and analyses."""
    from safetensors.torch import save_file

    path = run_dir / "checkpoints" / f"round_{round_index:03d}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    return path


def optimizer_state_path(run_dir: Path, round_index: int) -> Path:
    return run_dir / "optimizer_state" / f"round_{round_index:03d}.pt"


def save_optimizer_state(optimizer: torch.optim.Optimizer, run_dir: Path, round_index: int) -> None:
    """The optimiser's state after round `round_index` (finetune.keep_optimizer_state),
    written whole then renamed; the previous round's file goes once this round's record is on disk."""
    path = optimizer_state_path(run_dir, round_index)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(optimizer.state_dict(), tmp)


def load_data(cfg: RunConfig) -> tuple[GroupedDataset, dict[str, GroupedDataset]]:
    """The training pool and the evaluation splits a config's run reads."""
    params = cfg.data_params()
    pool = create_dataset(cfg.data.name, "train", **params)
    return pool, {s: create_dataset(cfg.data.name, s, **params) for s in cfg.data.eval_splits}


def initial_model(cfg: RunConfig, num_classes: int) -> torch.nn.Module:
    """The model every round of a config's run starts from (seeded: "random" weights depend on the run seed)."""
    torch.manual_seed(cfg.seed)
    return create_model(cfg.model.name, weights=cfg.model.weights, num_classes=num_classes,
                        zero_head=cfg.model.zero_head == "always" or cfg.model.weights != "random")


def input_digests(pool: GroupedDataset, evals: dict[str, GroupedDataset], model: torch.nn.Module) -> dict[str, str]:
    """The digests of what a run reads, as its record's header stores them: "data:<split>" for
    each split, "weights" for the initial model. A resume (`RunWriter`) and a sweep's reuse of a
    finished run (`current_input_digests`) compare these with the recorded ones."""
    return {"data:train": pool.content_digest(), **{f"data:{s}": d.content_digest() for s, d in evals.items()},
            "weights": weights_digest(model)}


@dataclass
class PreparedRun:
    """What a config's run reads, checked: the data, the protocol's facts, the initial model and the digests."""

    pool: GroupedDataset
    evals: dict[str, GroupedDataset]
    sizes: list[int]
    shares: dict | None
    meta: dict
    model: torch.nn.Module
    digests: dict[str, str]
    device: torch.device
    load_s: float


def prepare_run(cfg: RunConfig) -> PreparedRun:
    """The set-up every finetuning run shares (the full loop and select-then-finetune): threads,
    device and determinism as configured; the data loaded and checked (budget, classes, a
    resampled pool); the meta; the initial model (`initial_model`: its zero-head rule) and the
    digests of all of it (`input_digests`)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    if cfg.deterministic:
        set_deterministic(True)
    get_acquisition(cfg.al.strategy)  # fail fast on an unknown name
    t_load = time.perf_counter()
    pool, evals = load_data(cfg)
    load_s = time.perf_counter() - t_load
    check_budget(cfg.al, len(pool))
    check_classes(pool.labels, pool.class_names, f"{pool.name}: the training pool")
    check_resampled_pool(cfg.al, pool)
    sizes = acquisition_sizes(cfg.al)
    shares = pool_shares(pool)
    # the model every round starts from (finetune reseeds torch, so building it here changes nothing)
    model = initial_model(cfg, pool.num_classes)
    return PreparedRun(pool, evals, sizes, shares, run_meta(pool, sizes, shares), model,
                       input_digests(pool, evals, model), device, load_s)


def current_input_digests(cfgs: dict[str, RunConfig], recorded: dict[str, dict]) -> dict[str, dict[str, str]]:
    """Each named config's input digests now (`input_digests`), for comparison with `recorded`
    (name -> the digests its record holds; runs recording none are skipped).

    The data is loaded once per distinct data config, and the model built once per distinct
    (model, weights, head): the seed changes only the init of "random" weights (and of an
    unzeroed head), so a run whose recorded weights digest differs from its group's gets its
    own seeded model before it is called changed. The global torch RNG is left as it was."""
    import json

    def data_key(cfg: RunConfig):
        return json.dumps([cfg.data.name, cfg.data_params(), list(cfg.data.eval_splits)], sort_keys=True, default=str)

    groups: dict[str, list[str]] = {}
    for name, cfg in cfgs.items():
        if recorded.get(name):
            groups.setdefault(data_key(cfg), []).append(name)
    out: dict[str, dict[str, str]] = {}
    for names in groups.values():
        pool, evals = load_data(cfgs[names[0]])
        built: dict[tuple, dict[str, str]] = {}
        for name in names:
            cfg = cfgs[name]
            keys = [(cfg.model.name, str(cfg.model.weights), cfg.model.zero_head)]
            keys.append(keys[0] + (cfg.seed,))  # the exact model this run's loop builds, if the first differs
            for key in keys:
                if key not in built:
                    with torch.random.fork_rng(devices=[]):
                        built[key] = built[keys[1]] = input_digests(pool, evals, initial_model(cfg, pool.num_classes))
                out[name] = built[key]
                if recorded[name].get("weights", out[name]["weights"]) == out[name]["weights"]:
                    break
        del pool, evals
    return out


def run_active_learning(cfg: RunConfig, out_dir: str | Path, **kwargs) -> RunRecord:
    """Run (or resume) one active-learning run with full finetuning, and return its record.

    Each round resets the model to its initial weights, finetunes on every label so far,
    evaluates, scores the unlabelled pool and acquires the top-k. The run directory's lock
    is held throughout: a second writer is refused, naming the holder.

    Args:
        cfg: the resolved config (`toolkit.resolve_config`).
        out_dir: the run directory; if it holds this config's partial run, the run resumes
            from its last completed round and ends with the record an uninterrupted run writes.
        **kwargs: `log` (where progress lines go; None for silence), `max_rounds` (stop
            after that many rounds in total), `on_round_end` (called with each round's index
            once its record is on disk).

    Returns:
        The `RunRecord`, as `toolkit.load_run(out_dir)` reads it.

    Examples:
        >>> import toolkit
        >>> cfg = toolkit.resolve_config("toy", ["al.budget=5", "al.seed_size=10", "data.params.n_train=240",
        ...     "data.params.n_val=40", "data.params.n_test=160", "model.weights=random", "finetune.max_steps=2",
        ...     "finetune.micro_batch=16"])
        >>> rec = toolkit.run_active_learning(cfg, "altk-doc/loop", log=None)
        >>> rec.status, rec.rounds["n_labels"].tolist()
        ('finished', [10, 15])
    """
    from toolkit._util.locks import exclusive

    with exclusive(Path(out_dir), "run", directory=True):
        return _run(cfg, out_dir, **kwargs)


def _run(
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    max_rounds: int | None = None,
    log: Callable[[str], None] | None = info,
    on_round_end: Callable[[int], None] | None = None,
) -> RunRecord:
    """Run (or resume) one active-learning run and return its record.

    Args:
        cfg: the resolved config.
        out_dir: the run directory; if it holds this config's partial run, it resumes.
        max_rounds: stop after this many rounds in total (tests use it to simulate a kill).
        log: where progress lines go (default: the "toolkit" logger; None for silence).
        on_round_end: called with the round index after its record is on disk.
    """
    say = log or (lambda _: None)
    run = prepare_run(cfg)
    writer = RunWriter(out_dir, cfg.to_dict(), run.meta, defaults=RunConfig().to_dict(), digests=run.digests)
    initial_state = copy.deepcopy(run.model.state_dict())
    net = maybe_compile(run.model, cfg.finetune.compile)  # shares model's parameters
    optimizer = _open_optimizer(cfg, run, writer, Path(out_dir))
    labelled = start_labels(writer, run.pool, cfg.al, cfg.seed)
    if writer.completed_rounds:
        say(f"resuming {shown(out_dir)} at round {writer.completed_rounds} with {len(labelled)} labels")
    seed_rows = dataset_rows(run.pool, labelled)

    n_rounds = len(run.sizes) + 1
    bar = progress(total=n_rounds, desc=f"rounds of {Path(out_dir).name}", unit="round")
    bar.update(writer.completed_rounds)
    first = writer.completed_rounds  # the first round this process runs: it paid for loading the data
    for r in range(first, n_rounds if max_rounds is None else min(n_rounds, max_rounds)):
        t0 = time.perf_counter()
        run.model.load_state_dict(initial_state)  # every round starts from the initial weights
        train = finetune(net, run.pool, labelled, cfg.finetune, device=run.device,
                         seed=round_torch_seed(cfg.seed, r), optimizer=optimizer)
        kill_point(f"loop:trained:{r}")
        t1 = time.perf_counter()
        metrics = {s: evaluate(net, ds, device=run.device, batch_size=cfg.eval_batch_size, train_shares=run.shares,
                               workers=cfg.loader_workers)
                   for s, ds in run.evals.items()}
        t2 = time.perf_counter()
        kill_point(f"loop:evaluated:{r}")
        picks, acquired, scored = _acquire(cfg, run, net, labelled, r, out_dir)
        t3 = time.perf_counter()
        if r in cfg.checkpoint_rounds or (r - n_rounds) in cfg.checkpoint_rounds:  # -1 = the last round
            save_checkpoint(run.model, Path(out_dir), r)
        timings = _round_timings(cfg, run, train, scored, (t0, t1, t2, t3), first_round=r == first)
        row = round_row(r, len(labelled), metrics, train, acquired, timings, seed_rows)
        labelled = np.concatenate([labelled, picks])
        keep = optimizer is not None  # per round, before its record: a resume reads the state its last round left
        record_round(writer, row, finished=r == n_rounds - 1, stage="loop",
                     save_state=(lambda i: save_optimizer_state(optimizer, Path(out_dir), i)) if keep else None,
                     state_path=(lambda i: optimizer_state_path(Path(out_dir), i)) if keep else None)
        say(_round_line(r, n_rounds, row, train, metrics, t3 - t0))
        bar.update(1)
        if on_round_end is not None:
            on_round_end(r)
    bar.close()
    return finish_run(writer, n_rounds)


def _round_timings(cfg: RunConfig, run: PreparedRun, train: dict, scored: int, clock: tuple, *, first_round: bool) -> dict:
    """Seconds per phase and the round's compute in examples (training steps x batch,
    evaluation, pool scoring); the first round this process runs also paid for loading the data."""
    t0, t1, t2, t3 = clock
    return {"train_s": t1 - t0, "eval_s": t2 - t1, "score_s": t3 - t2, "data_in_train_s": train["data_seconds"],
            "passes": {"forward": train["steps"] * cfg.finetune.batch_size
                       + sum(len(d) for d in run.evals.values()) + scored,
                       "backward": train["steps"] * cfg.finetune.batch_size},
            **({"load_data_s": run.load_s} if first_round else {})}


def _round_line(r: int, n_rounds: int, row: dict, train: dict, metrics: dict, seconds: float) -> str:
    main = metrics.get("test") or next(iter(metrics.values()), {})
    return (f"  round {r}/{n_rounds - 1} labels={row['n_labels']:4d} steps={train['steps']:3d} "
            f"acc={main.get('accuracy', float('nan')):.3f} worst={main.get('worst_group', float('nan')):.3f} "
            f"({seconds:.1f}s)")


def _open_optimizer(cfg: RunConfig, run: PreparedRun, writer: RunWriter, out_dir: Path):
    """finetune.keep_optimizer_state (the paper's code: one optimiser, momentum kept across
    rounds): the optimiser, with the state the last completed round left on a resume; else None."""
    if not cfg.finetune.keep_optimizer_state:
        return None
    run.model.to(run.device)
    optimizer = make_optimizer(run.model, cfg.finetune)

    def load(last: int):
        saved = optimizer_state_path(out_dir, last)
        if not saved.exists():
            raise MissingFileError(f"{saved} is missing: a run with finetune.keep_optimizer_state cannot resume "
                                   f"without the optimiser state its last completed round left")
        optimizer.load_state_dict(torch.load(saved, map_location=run.device, weights_only=True))

    resume_state(writer, load)
    clean_states(out_dir / "optimizer_state", keep=optimizer_state_path(out_dir, writer.completed_rounds - 1))
    return optimizer


def _acquire(cfg: RunConfig, run: PreparedRun, net, labelled: np.ndarray, r: int, out_dir: str | Path
             ) -> tuple[np.ndarray, list[dict], int]:
    """Round r's acquisitions (none in the last round): their positions, their record rows, and
    how many pool examples the network ran on for them. With `al.save_pool_outputs`, every
    candidate's id, score (NaN where a batch strategy gives none) and logits go to the run's
    pool outputs."""
    if r >= len(run.sizes):
        return np.empty(0, dtype=np.int64), [], 0
    pool, strategy = run.pool, get_strategy(cfg.al.strategy)
    unlabelled, rng = candidates(len(pool), labelled, cfg.al, cfg.seed, r)
    source = NetworkInputs(net, pool, unlabelled, strategy.needs, device=run.device, batch_size=cfg.eval_batch_size,
                           workers=cfg.loader_workers)
    inputs = build_inputs(strategy, source, unlabelled, labelled, rng)
    picks, scores, row_scores = strategy.select_scored(inputs, run.sizes[r], rng)
    if cfg.al.save_pool_outputs:
        outputs = PoolOutputWriter(out_dir, r, len(unlabelled), pool.num_classes)
        outputs.write(pool.ids[unlabelled], row_scores, source.logits(unlabelled))
        outputs.close()
    return picks, dataset_rows(pool, picks, scores), source.passes
