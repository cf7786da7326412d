"""Counting host syncs: the points where the host waits for the device.

Every sync drains the device's queue, so a training step with more than the one its
stopping rule needs leaves the GPU idle. On CUDA, torch's sync debug mode reports each
synchronising call (`.item()`, a copy to the host, a copy from pageable memory), and
`count_host_syncs` counts those reports. The CPU has no device to wait for, so there the
counter emulates one: the tensors that a CUDA run keeps on the GPU (a model's parameters
and buffers, a dataset's images and labels, and everything computed from them) are marked,
and every host read of a marked tensor counts. Tests check the CUDA paths this way.
"""
from __future__ import annotations

import contextlib
import os
import warnings
import weakref
from collections.abc import Iterable, Iterator

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

_HOST_READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.cpu,
               torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__bool__, torch.Tensor.__index__}


class SyncCount:
    """The result of `count_host_syncs`: `n` syncs, and where (CPU emulation: op names)."""

    def __init__(self) -> None:
        self.n = 0
        self.where: list[str] = []

    def add(self, where: str) -> None:
        self.n += 1
        self.where.append(where)


class _DeviceEmulation(TorchFunctionMode):
    """Marks tensors derived from `roots` and counts host reads of them."""

    def __init__(self, roots: Iterable[torch.Tensor], count: SyncCount) -> None:
        super().__init__()
        self.count = count
        self.marked: dict[int, weakref.ref] = {}
        for t in roots:
            self._mark(t)

    def _mark(self, t: torch.Tensor) -> None:
        self.marked[id(t)] = weakref.ref(t, lambda _, key=id(t): self.marked.pop(key, None))

    def _is_marked(self, t) -> bool:
        ref = self.marked.get(id(t)) if isinstance(t, torch.Tensor) else None
        return ref is not None and ref() is t

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        marked = any(self._is_marked(a) for a in inputs)
        if marked and func in _HOST_READS:
            self.count.add(getattr(func, "__name__", str(func)))
        out = func(*args, **kwargs)
        if marked:
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    self._mark(t)
        return out


@contextlib.contextmanager
def count_host_syncs(device: torch.device | str, roots: Iterable[torch.Tensor] = ()) -> Iterator[SyncCount]:
    """Count host syncs inside the block: `with count_host_syncs(dev, roots) as c: ...; c.n`.

    On CUDA through torch's sync debug mode (`roots` unused); on the CPU by emulation,
    with `roots` the tensors a CUDA run would keep on the device (see the module's doc)."""
    count = SyncCount()
    if torch.device(device).type == "cuda":
        previous = torch.cuda.get_sync_debug_mode()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                yield count
            finally:
                torch.cuda.set_sync_debug_mode(previous)
        for w in caught:
            # the first switch of the mode in a process reports itself (torch/cuda/__init__.py,
            # set_sync_debug_mode; seen with torch 2.11 on an H100): not the counted code's sync
            if "synchroniz" in str(w.message) and not w.filename.endswith(os.path.join("torch", "cuda", "__init__.py")):
                count.add(f"{w.filename}:{w.lineno}")
        return
    with _DeviceEmulation(roots, count):
        yield count


def device_roots(model: torch.nn.Module, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """A model's parameters and buffers plus `tensors`: what a CUDA run holds on the GPU."""
    return [*model.parameters(), *model.buffers(), *tensors]
