"""Finetuning with the paper's recipe (Appendix B), and batched inference.

The schedule and the stopping rule are pure functions / small state machines so they
can be tested on their own; `finetune` wires them to a model.
"""
from __future__ import annotations

import contextlib
import time
from collections import deque
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from toolkit.config import FinetuneConfig
from toolkit.data.base import GroupedDataset, to_device
from toolkit.errors import ConfigError


def bit_hyperrule_supports(dataset_size: int) -> tuple[int, ...]:
    """BiT-HyperRule step boundaries: (warm-up end, decay, decay, decay, end)."""
    if dataset_size < 20_000:
        return (100, 200, 300, 400, 500)
    if dataset_size < 500_000:
        return (500, 3000, 6000, 9000, 10_000)
    return (500, 6000, 12_000, 18_000, 20_000)


def bit_hyperrule_lr(step: int, dataset_size: int, base_lr: float = 0.003, scale: float = 1.0,
                     warmup_offset: int = 0) -> float | None:
    """Learning rate at `step`, or None once training should end.

    Linear warm-up to `base_lr`, then /10 after each later boundary, as big_transfer's
    bit_hyperrule.get_lr: base_lr * (step + warmup_offset) / warm-up steps. BiT uses offset 0
    (step 0 trains at lr 0); the paper's code uses 1 (models/hyper_params.py:116).
    `scale` shrinks every boundary (the toy preset uses 0.3).
    """
    supports = [max(1, int(round(s * scale))) for s in bit_hyperrule_supports(dataset_size)]
    if step < supports[0]:
        return base_lr * (step + warmup_offset) / supports[0]
    if step >= supports[-1]:
        return None
    for boundary in supports[1:]:
        if boundary < step:
            base_lr /= 10
    return base_lr


class LossRatioStop:
    """Stop once the training loss falls below `ratio` x its initial value.

    "Initial" is the first loss seen (computed before any update). With the
    zero-initialised head this is exactly ln(C) for every batch, so it does not depend on
    which examples the first batch drew. "Current" is the mean of the last `window` losses,
    and the rule only fires once `window` have been seen. The toolkit feeds it whole-batch
    losses with window 5, so one lucky mini-batch cannot stop training early; the paper's
    code feeds the last micro-batch's loss with window 1 (`finetune.stop_loss`).
    """

    def __init__(self, ratio: float = 0.001, window: int = 5) -> None:
        if not 0 < ratio < 1:
            raise ConfigError(f"stop ratio must lie in (0, 1), got {ratio}")
        self.ratio, self.window = ratio, window
        self.initial: float | None = None
        self.recent: deque[float] = deque(maxlen=window)

    def update(self, loss: float) -> bool:
        """Record one step's loss; True when training should stop."""
        if self.initial is None:
            self.initial = loss
        self.recent.append(loss)
        return len(self.recent) == self.window and self.current < self.ratio * self.initial

    @property
    def current(self) -> float:
        return float(np.mean(self.recent)) if self.recent else float("nan")


def autocast(device: torch.device):
    """bf16 autocast on CUDA; a no-op on CPU, where runs stay deterministic in float32."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def augment(x: torch.Tensor, gen: torch.Generator, *, pad: int, flip: bool, crop: int | None = None) -> torch.Tensor:
    """Random horizontal flip and translation, per example, drawn from `gen`; with `crop`,
    a random `crop` x `crop` window of each image first (BiT's train transform).

    The draws come from the CPU generator wherever x lives, so GPU runs augment as CPU runs
    do. They travel to x's device as small pinned, non-blocking copies, and windows are cut
    by gathering, so augmenting never waits for the device (no host read of x)."""
    n = len(x)
    if crop is not None and crop < x.shape[-1]:
        h, w = x.shape[-2:]
        dy = torch.randint(0, h - crop + 1, (n,), generator=gen)
        dx = torch.randint(0, w - crop + 1, (n,), generator=gen)
        x = _windows(x, dy, dx, crop, crop)
    if flip:
        mask = to_device(torch.rand(n, generator=gen) < 0.5, x.device)
        x = torch.where(mask[:, None, None, None], x.flip(-1), x)
    if pad > 0:
        h, w = x.shape[-2:]
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        x = _windows(padded, dy, dx, h, w)
    return x


def _windows(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """x[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for every i: by slicing on the CPU (twice as
    fast there), by gathering on a device (slicing would need the offsets on the host)."""
    return (_slice_windows if x.device.type == "cpu" else _gather_windows)(x, dy, dx, h, w)


def _slice_windows(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return torch.stack([x[i, :, y0:y0 + h, x0:x0 + w] for i, (y0, x0) in enumerate(zip(dy.tolist(), dx.tolist()))])


def _gather_windows(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, h: int, w: int) -> torch.Tensor:
    offsets = to_device(torch.stack([dy, dx]), x.device)
    n, c, _, width = x.shape
    rows = (offsets[0][:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    x = x.gather(2, rows.expand(n, c, h, width))
    cols = (offsets[1][:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    return x.gather(3, cols.expand(n, c, h, w))


def _is_image(x) -> bool:
    return isinstance(x, torch.Tensor) and x.dim() == 4


def _batches(n: int, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless shuffled passes over range(n), cut into batches (a batch may span passes)."""
    buf = torch.empty(0, dtype=torch.long)
    while True:
        while len(buf) < batch_size:
            buf = torch.cat([buf, torch.randperm(n, generator=gen)])
        yield buf[:batch_size]
        buf = buf[batch_size:]


def _micro_batches_by_pass(n: int, size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """The paper's code's micro-batches: each pass a fresh permutation of range(n) cut into
    micro-batches of `size`, the last one partial when `size` does not divide n."""
    while True:
        perm = torch.randperm(n, generator=gen)
        yield from perm.split(size)


def finetune(
    model: torch.nn.Module,
    dataset: GroupedDataset,
    positions: np.ndarray,
    cfg: FinetuneConfig,
    *,
    device: torch.device,
    seed: int,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict:
    """Finetune all weights on dataset rows `positions`; returns a summary of the run.

    `optimizer`: reuse this one (its momentum buffers) instead of building a fresh one;
    see `make_optimizer` and `FinetuneConfig.keep_optimizer_state`."""
    cfg.validate()
    if len(positions) == 0:
        raise ConfigError("cannot finetune on an empty labelled set")
    positions = np.asarray(positions)
    gen = torch.Generator().manual_seed(seed)
    model.to(device).train()
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    micro_batch = (cfg.micro_batch if cfg.micro_batch != "auto"  # tried before seeding: no draws shift
                   else auto_micro_batch(model, dataset, positions, cfg.batch_size, device))
    torch.manual_seed(seed)  # dropout etc. in timm models
    opt = optimizer if optimizer is not None else make_optimizer(model, cfg)
    stop = LossRatioStop(cfg.stop_ratio, 1 if cfg.stop_loss == "last_micro_batch" else cfg.loss_window)
    n_micro = cfg.batch_size // micro_batch
    batches = _batches(len(positions), cfg.batch_size, gen)
    micro_stream = _micro_batches_by_pass(len(positions), micro_batch, gen) if cfg.partial_batches else None
    step, stopped_by, t0, data_seconds = 0, "schedule", time.perf_counter(), 0.0
    while True:
        lr = (cfg.base_lr if cfg.schedule == "constant"
              else bit_hyperrule_lr(step, len(positions), cfg.base_lr, cfg.schedule_scale, cfg.warmup_offset))
        if lr is None:
            break
        if cfg.max_steps is not None and step >= cfg.max_steps:
            stopped_by = "max_steps"
            break
        for group in opt.param_groups:
            group["lr"] = lr
        if micro_stream is not None:  # n_micro micro-batches of the pass-by-pass stream (a step may span passes)
            chunks = [positions[next(micro_stream).numpy()] for _ in range(n_micro)]
        else:
            chunks = np.array_split(positions[next(batches).numpy()], n_micro)
        opt.zero_grad(set_to_none=True)
        step_loss = torch.zeros((), device=device)
        for chunk in chunks:
            t_data = time.perf_counter()
            x, y = dataset.get_batch(chunk, device if device.type == "cuda" else None, train=True)
            if _is_image(x):  # text batches (dicts of token tensors) are not augmented
                x = augment(x, gen, pad=cfg.augment_pad, flip=cfg.flip, crop=dataset.train_crop)
                if device.type == "cuda":
                    x = x.contiguous(memory_format=torch.channels_last)
            data_seconds += time.perf_counter() - t_data  # host time: gathering, decoding, augmenting
            with autocast(device):
                loss = F.cross_entropy(model(x).float(), y) / n_micro
            loss.backward()
            step_loss += loss.detach()
        opt.step()
        step += 1
        watched = loss.detach() * n_micro if cfg.stop_loss == "last_micro_batch" else step_loss
        if stop.update(float(watched)):  # one host sync per step, needed for the rule
            stopped_by = "loss_ratio"
            break
    return {
        "steps": step,
        "stopped_by": stopped_by,
        "initial_loss": stop.initial,
        "final_loss": stop.current,
        "seconds": time.perf_counter() - t0,
        "data_seconds": data_seconds,
        "micro_batch": micro_batch,
    }


_AUTO_MICRO_BATCH: dict[tuple, int] = {}  # per process: one trial per model, input shape and batch size


def choose_micro_batch(batch_size: int, fits: Callable[[int], bool]) -> int:
    """The largest divisor of `batch_size` for which `fits(size)` holds."""
    for size in (d for d in range(batch_size, 0, -1) if batch_size % d == 0):
        if fits(size):
            return size
    raise RuntimeError(f"not even a micro-batch of 1 fits in the device's memory (batch_size {batch_size}); "
                       f"use a smaller model or resolution")


def auto_micro_batch(model: torch.nn.Module, dataset: GroupedDataset, positions: np.ndarray, batch_size: int,
                     device: torch.device, headroom: float = 0.85) -> int:
    """`finetune.micro_batch: auto`. On the CPU the whole batch; on CUDA the largest divisor
    of the batch whose forward and backward pass on real training inputs peaks below
    `headroom` of the device's memory (the rest is for the optimiser's state and
    fragmentation). Tried once per process for each model, input shape and batch size."""
    if device.type != "cuda":
        return batch_size
    probe = positions[np.arange(batch_size) % len(positions)]
    sample, _ = dataset.get_batch(probe[:1], device, train=True)
    key = (type(model).__name__, sum(p.numel() for p in model.parameters()), tuple(sample.shape[1:]), batch_size)
    if key not in _AUTO_MICRO_BATCH:
        total = torch.cuda.get_device_properties(device).total_memory

        def fits(size: int) -> bool:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            try:
                x, y = dataset.get_batch(probe[:size], device, train=True)
                with autocast(device):
                    F.cross_entropy(model(x).float(), y).backward()
                ok = torch.cuda.max_memory_allocated(device) < headroom * total
            except torch.cuda.OutOfMemoryError:
                ok = False
            model.zero_grad(set_to_none=True)
            return ok

        _AUTO_MICRO_BATCH[key] = choose_micro_batch(batch_size, fits)
    return _AUTO_MICRO_BATCH[key]


def make_optimizer(model: torch.nn.Module, cfg: FinetuneConfig) -> torch.optim.Optimizer:
    """The recipe's optimiser over all of `model`'s parameters (lr is set every step)."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=0.0, betas=tuple(cfg.adam_betas), weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=0.0, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def maybe_compile(model: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    """`torch.compile(model)` when enabled. The compiled wrapper shares the parameters, so
    resetting `model` to its initial weights each round needs no recompilation."""
    return torch.compile(model) if enabled else model


class _Rows(torch.utils.data.Dataset):
    """A dataset's rows, fetched a chunk of positions at a time as uint8 batches."""

    def __init__(self, dataset: GroupedDataset) -> None:
        self.dataset = dataset

    def __getitem__(self, positions: np.ndarray) -> torch.Tensor:
        return self.dataset.raw_batch(positions)


class _ChunkSampler(torch.utils.data.Sampler):
    """Yields the chunks set before each pass, so one persistent loader serves every call."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []

    def __iter__(self):
        return iter(list(self.chunks))

    def __len__(self) -> int:
        return len(self.chunks)


def _batch_bytes(dataset: GroupedDataset, batch_size: int) -> int:
    """Bytes of one uint8 batch (what a loader worker puts in shared memory)."""
    shape = getattr(dataset.images, "shape", None)
    if shape is None or len(shape) < 2:
        return 0
    return int(batch_size * np.prod(shape[1:]) * getattr(dataset.images, "element_size", lambda: 1)())


def prefetch_for_shm(workers: int, batch_bytes: int, shm: str = "/dev/shm") -> int:
    """Batches each loader worker may prefetch so that all of them fit in half of `shm`'s
    free space (a container's default is 64 MB; one 512-image batch at 480 px is 354 MB).
    Raises, saying what to change, when not even one batch per worker fits."""
    import shutil

    try:
        free = shutil.disk_usage(shm).free
    except OSError:  # no /dev/shm (not Linux): torch shares memory by other means
        return 2
    per_batch = workers * max(1, batch_bytes)
    fits = int(free * 0.5 // per_batch)
    if fits < 1:
        raise RuntimeError(
            f"loader_workers={workers} need {per_batch * 2 / 1e6:.0f} MB of shared memory for one batch each "
            f"({batch_bytes / 1e6:.0f} MB a batch), but {shm} has {free / 1e6:.0f} MB free. Lower loader_workers or "
            f"eval_batch_size, or give the container more (docker run --shm-size=8g).")
    return min(2, fits)


def _loader(dataset: GroupedDataset, *, workers: int, pin: bool, batch_bytes: int) -> torch.utils.data.DataLoader:
    """The dataset's loader for these settings, made once and kept on the dataset: its worker
    processes persist across calls (per split, per round) instead of starting each time."""
    loaders = dataset.__dict__.setdefault("_loaders", {})
    key = (workers, pin)
    if key not in loaders:
        extra = ({"persistent_workers": True, "prefetch_factor": prefetch_for_shm(workers, batch_bytes)}
                 if workers else {})
        loaders[key] = torch.utils.data.DataLoader(_Rows(dataset), sampler=_ChunkSampler(), batch_size=None,
                                                   num_workers=workers, pin_memory=pin, **extra)
    return loaders[key]


def iterate_batches(dataset: GroupedDataset, positions: np.ndarray, *, device: torch.device, batch_size: int,
                    workers: int = 0) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """(positions chunk, model input on `device`) over `positions`, in order.

    uint8 batches are gathered by `workers` loader processes (0 = in this process; the
    processes persist across calls), pinned on CUDA so the copy overlaps compute, and
    normalised on the device."""
    positions = np.asarray(positions)
    chunks = [positions[i:i + batch_size] for i in range(0, len(positions), batch_size)]
    loader = _loader(dataset, workers=workers, pin=device.type == "cuda",
                     batch_bytes=_batch_bytes(dataset, batch_size) if workers else 0)
    loader.sampler.chunks = chunks
    for chunk, raw in zip(chunks, loader):
        x = dataset.prepare(raw.to(device, non_blocking=True) if raw.is_pinned() else to_device(raw, device))
        if device.type == "cuda" and _is_image(x):
            x = x.contiguous(memory_format=torch.channels_last)
        yield chunk, x


@torch.inference_mode()
def infer(fn, dataset: GroupedDataset, positions: np.ndarray, *, device: torch.device, batch_size: int = 512,
          workers: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (positions chunk, `fn(inputs)` as float32 numpy) over `positions`.

    On CUDA each result is copied back into pinned memory without blocking, and is handed
    over once the next batch is queued, so the device never idles while the host waits."""
    pending = None
    for chunk, x in iterate_batches(dataset, positions, device=device, batch_size=batch_size, workers=workers):
        with autocast(device):
            out = fn(x).float()
        if out.is_cuda:
            host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
            host.copy_(out, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
            out = (host, done)
        else:
            out = (out, None)
        if pending is not None:
            yield _collect(*pending)
        pending = (chunk, *out)
    if pending is not None:
        yield _collect(*pending)


def _collect(chunk: np.ndarray, out: torch.Tensor, done) -> tuple[np.ndarray, np.ndarray]:
    if done is not None:
        done.synchronize()
    return chunk, out.numpy()


def predict_logits(
    model: torch.nn.Module,
    dataset: GroupedDataset,
    positions: np.ndarray,
    *,
    device: torch.device,
    batch_size: int = 512,
    workers: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (positions chunk, logits chunk as float32 numpy) over `positions`."""
    model.to(device).eval()
    return infer(model, dataset, positions, device=device, batch_size=batch_size, workers=workers)
