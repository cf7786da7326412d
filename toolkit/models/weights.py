"""Loading weights into a headless backbone, checked: a file for another architecture is refused."""
from __future__ import annotations

import bisect
import hashlib
import io
import struct
import zipfile
from pathlib import Path

import torch
from torch import nn

from toolkit.errors import ModelError
from toolkit.models.toy import ToyResNet


def _head_key(key: str) -> bool:
    return key.split(".")[0] in {"head", "fc", "classifier"}


def load_backbone_weights(backbone: nn.Module, path: Path) -> None:
    """Load a checkpoint into a headless backbone, strictly except for the source's head.

    A checkpoint may carry its own classifier (`head.*`, `fc.*`); those keys, and only those,
    may be unused. Any missing backbone key is an error.
    """
    path = Path(path)
    if path.suffix == ".npz":
        if not hasattr(backbone, "load_pretrained"):
            raise ModelError(f"{path}: .npz weights need a timm model with load_pretrained (BiT, ViT)")
        load_npz_checked(backbone, path)
        return
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # safetensors, pickle and zip each raise their own kinds
        raise ModelError(f"{path} is not a readable {'safetensors' if path.suffix == '.safetensors' else 'PyTorch'} "
                         f"weights file ({type(err).__name__}: {(str(err).splitlines() or ['empty file?'])[0][:120]}); pass a "
                         f".safetensors, .pth/.pt or BiT .npz file") from None
    if isinstance(backbone, ToyResNet) and isinstance(state, dict) and "recipe" in state:
        # same parameter shapes, different strides: a v1 toy checkpoint would load silently
        saved = state.get("architecture", {"strides": [1, 2, 2, 1]})
        if saved != backbone.architecture():
            raise ModelError(f"{path} is a toy backbone of another architecture ({saved}; this toolkit builds "
                             f"{backbone.architecture()}). Pretrain one for it with `altk pretrain toy`.")
    for key in ("backbone", "state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path} holds {type(state).__name__}, not a state dict of tensors (name -> tensor); save "
                         f"one with torch.save(model.state_dict(), path)")
    state = {k.removeprefix("backbone.").removeprefix("module."): v for k, v in state.items()}
    target = backbone.state_dict()
    wrong = [f"{k} {tuple(v.shape)} (the model has {tuple(target[k].shape)})" for k, v in state.items()
             if k in target and v.shape != target[k].shape]
    if wrong:
        raise ModelError(f"{path} does not fit the architecture: {len(wrong)} tensors have other shapes, e.g. "
                         f"{'; '.join(wrong[:3])}. Was it saved from another model or size?")
    result = backbone.load_state_dict(state, strict=False)
    unexpected = [k for k in result.unexpected_keys if not _head_key(k)]
    if result.missing_keys or unexpected:
        raise ModelError(
            f"{path} does not match the architecture: missing keys {result.missing_keys[:8]}, "
            f"unexpected non-head keys {unexpected[:8]}. Was it saved from a different model?"
        )


def weights_digest(model: nn.Module) -> str:
    """A short digest of a model's parameters, for fingerprints and reset checks."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


_NPZ_HEAD = ("head/", "pre_logits/")  # the source's classifier: the only keys a headless backbone may leave unread
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # a zip member's local file header (zipfile's structFileHeader)


class _ReadLog(io.FileIO):
    """The .npz file, opened for one load, noting where each read starts. A reader of a zip
    member must read its data, so the offsets tell which arrays were read: per call, no
    global state (np.load and timm are used as they are), safe across threads."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "rb")
        self.starts: set[int] = set()

    def read(self, size: int = -1) -> bytes:
        self.starts.add(self.tell())
        return super().read(size)

    def readinto(self, buffer) -> int:
        self.starts.add(self.tell())
        return super().readinto(buffer)


def _member_spans(path: Path) -> dict[str, tuple[int, int]]:
    """Each array's [start, end) byte span of stored data in the .npz (a zip archive)."""
    spans = {}
    with zipfile.ZipFile(path) as zf, open(path, "rb") as f:
        for info in zf.infolist():
            f.seek(info.header_offset)
            header = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size))
            start = info.header_offset + _LOCAL_HEADER.size + header[-2] + header[-1]  # + name + extra field
            spans[info.filename.removesuffix(".npy")] = (start, start + max(info.compress_size, 1))
    return spans


def load_npz_checked(backbone: nn.Module, path: Path) -> None:
    """timm's `load_pretrained` for an original BiT/ViT .npz, refusing a file for another
    architecture. timm reads only the keys the model needs, so a BiT-M-R101x1 file would
    load silently into R50x1 (its first 50 layers); here every key the file holds must be
    read, except the source's classifier, and a missing key is named.

    timm is handed an open file object of this call's own (np.load takes one), which notes
    the reads; nothing global is patched, so concurrent loads do not interfere."""
    path = Path(path)
    try:
        spans = _member_spans(path)
    except (zipfile.BadZipFile, struct.error) as err:
        raise ModelError(f"{path} is not a readable .npz archive ({err}); pass an original BiT/ViT .npz file") from None
    with _ReadLog(path) as log:
        try:
            backbone.load_pretrained(log)
        except KeyError as err:
            key = str(err.args[0]) if err.args else ""
            missing = key.removesuffix(" is not a file in the archive")
            if missing == key:  # not numpy's message for an absent array
                raise
            raise ModelError(f"{path} does not match the architecture: missing key {missing!r}. "
                             f"Was it saved from a different model?") from None
        starts = sorted(log.starts)
    first = {k: bisect.bisect_left(starts, a) for k, (a, _) in spans.items()}  # the first read from a span's start on
    read = {k for k, (_, b) in spans.items() if first[k] < len(starts) and starts[first[k]] < b}
    keys = set(spans)
    unread = sorted(k for k in keys - read if not any(h in k for h in _NPZ_HEAD))
    if unread:
        raise ModelError(f"{path} does not match the architecture: {len(unread)} of its {len(keys)} arrays have no "
                         f"place in {type(backbone).__name__} (e.g. {unread[:4]}). It was saved from a larger or "
                         f"different model: pick the registered model that matches the file.")
