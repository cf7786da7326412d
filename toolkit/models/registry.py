"""The model registry: what each name builds, registered beside its definition (as timm does).

A spec is one of four kinds, each with only its own fields: `BuiltModel` (a local
constructor: the toy ResNet, tiny BiT), `TimmModel` (a timm architecture and its hub
tag), `TextModel` (a transformers encoder) and `ClipModel` (an open_clip image tower).
`register_model` decorates a constructor; `register_spec` adds a declared spec.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ClassVar, Mapping, Sequence

from toolkit.errors import ModelError

if TYPE_CHECKING:
    from torch import nn

    from toolkit.models.packaged import PackagedArchive, PackagedWeights


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """What every spec has.

    Args:
        input_size: the resolution the weights were trained at (informational; datasets set
            their own resolution, e.g. data.params.resolution=224 for ViT-B/16).
        description: one line for listings.
        mean, std: the input normalisation the weights expect (None: the toolkit's [-1, 1]).
    """

    kind: ClassVar[str] = ""
    modality: ClassVar[str] = "image"
    input_size: int = 32
    description: str = ""
    mean: tuple | None = None
    std: tuple | None = None


@dataclass(frozen=True, kw_only=True)
class BuiltModel(ModelSpec):
    """A backbone from a local, weights-free constructor returning (backbone, num_features)."""

    kind: ClassVar[str] = "built"
    builder: Callable[[], tuple["nn.Module", int]]

    def build(self) -> tuple["nn.Module", int]:
        return self.builder()


@dataclass(frozen=True, kw_only=True)
class TimmModel(ModelSpec):
    """A timm architecture; `timm_name` also names its hub weights (after the dot).

    Args:
        timm_name: e.g. "resnetv2_50x1_bit.goog_in21k".
        npz_url: the original BiT release file, for weights with no hub tag.
        packaged: weights shipped in a pip package (used before the hub).
    """

    kind: ClassVar[str] = "timm"
    timm_name: str
    npz_url: str | None = None
    packaged: "PackagedWeights | None" = None

    def build(self) -> tuple["nn.Module", int]:
        import timm

        m = timm.create_model(self.timm_name.split(".")[0], pretrained=False, num_classes=0)
        return m, m.num_features


@dataclass(frozen=True, kw_only=True)
class TextModel(ModelSpec):
    """A transformers text encoder (hub id); its backbone is built from its config or weights.

    Args:
        hf_name: the hub id (its weights and config when nothing is packaged).
        input_size: the longest input in tokens the model is meant for (informational;
            datasets truncate at their own `max_length`).
        packaged: a pinned archive in a pip package, used before the hub (offline).
        pooling: how the last hidden states become the embedding: "first" (the first
            token, RoBERTa's <s>) or "mean" (over the tokens the attention mask keeps; how
            sentence-transformers models were trained to embed).
        normalize: scale the pooled embedding to unit length (sentence-transformers' Normalize
            module, where the model's modules.json has one).
    """

    kind: ClassVar[str] = "text"
    modality: ClassVar[str] = "text"
    hf_name: str
    input_size: int = 512
    packaged: "PackagedArchive | None" = None
    pooling: str = "first"
    normalize: bool = False

    def __post_init__(self) -> None:
        if self.pooling not in ("first", "mean"):
            raise ModelError(f"text model {self.hf_name!r}: pooling must be 'first' or 'mean', got {self.pooling!r}")

    @property
    def tokenizer(self) -> str:
        """Its tokenizer, as `data.params.tokenizer` takes it: the packaged archive, else the hub id."""
        return self.packaged.source if self.packaged is not None else self.hf_name


@dataclass(frozen=True, kw_only=True)
class ClipModel(ModelSpec):
    """An open_clip image tower (`open_clip:<arch>/<tag>`); built from its weights."""

    kind: ClassVar[str] = "clip"
    clip_name: str
    input_size: int = 224


_MODELS: dict[str, ModelSpec] = {}
MODELS: Mapping[str, ModelSpec] = _MODELS  # read-only use: register with register_model / register_spec


def register_spec(name: str, spec: ModelSpec) -> ModelSpec:
    """Register a declared spec under `name` (a timm model with its hub tag, a text encoder)."""
    if not isinstance(spec, ModelSpec) or type(spec) is ModelSpec:
        raise ModelError(f"model {name!r}: register a BuiltModel, TimmModel, TextModel or ClipModel, "
                         f"got {type(spec).__name__}")
    if name in _MODELS:
        raise ModelError(f"model {name!r} is registered twice")
    _MODELS[name] = spec
    return spec


def register_model(name: str, *, input_size: int = 32, description: str = "") -> Callable:
    """Register a weights-free constructor `() -> (backbone, num_features)` under `name`
    (a decorator; returns the constructor unchanged).

    Examples:
        >>> from toolkit.models import MODELS
        >>> MODELS["toy_resnet"].kind, MODELS["toy_resnet"].input_size
        ('built', 32)
    """
    def decorate(builder: Callable[[], tuple["nn.Module", int]]) -> Callable:
        register_spec(name, BuiltModel(builder=builder, input_size=input_size, description=description))
        return builder

    return decorate


def list_models(filter: str | Sequence[str] = "", *, exclude_filters: str | Sequence[str] = (),
                modality: str | None = None, kind: str | None = None) -> list[str]:
    """The registered model names, for `create_model` and `model.name`.

    Args:
        filter: an fnmatch pattern on the name (or several: a name matching any is kept),
            e.g. "bit_*" or "*vit*", as timm's `list_models`; "" lists all.
        exclude_filters: patterns whose matches are dropped.
        modality: keep only "image" or "text" models.
        kind: keep only one kind of spec: "built", "timm", "text" or "clip".

    Examples:
        >>> from toolkit import list_models
        >>> "toy_resnet" in list_models() and "bit_m_r50x1" in list_models()
        True
        >>> list_models("bit_*")
        ['bit_m_r101x1', 'bit_m_r50x1', 'bit_s_r50x1']
        >>> list_models("*vit*", exclude_filters="*test*"), list_models(modality="text")
        (['vit_b16', 'vit_b16_augreg_in21k'], ['minilm_l6_v2', 'roberta_base', 'roberta_large'])
    """
    def patterns(p: str | Sequence[str]) -> list[str]:
        return [q for q in ([p] if isinstance(p, str) else list(p)) if q]

    keep, drop = patterns(filter), patterns(exclude_filters)
    return sorted(n for n, spec in _MODELS.items()
                  if (not keep or any(fnmatch.fnmatchcase(n, p) for p in keep))
                  and not any(fnmatch.fnmatchcase(n, p) for p in drop)
                  and (modality is None or spec.modality == modality) and (kind is None or spec.kind == kind))


NAME_FORMS = ("a registered name (list_models())", "timm:<timm model name>, e.g. timm:convnext_tiny.fb_in22k",
              "open_clip:<arch>/<pretrained tag>, e.g. open_clip:ViT-B-32/laion2b_s34b_b79k (the image tower)",
              "hf:<transformers hub id>, e.g. hf:roberta-base (text)")


def model_spec(name: str) -> ModelSpec:
    """The spec behind a model name: a registered short name, `timm:<name>` (any timm model,
    its input size from timm's pretrained config), `open_clip:<arch>/<tag>` or `hf:<hub id>`
    (a transformers text encoder).

    Examples:
        >>> from toolkit.models import model_spec
        >>> model_spec("timm:resnet18.a1_in1k").timm_name, model_spec("timm:resnet18.a1_in1k").input_size
        ('resnet18.a1_in1k', 224)
        >>> model_spec("hf:roberta-base").hf_name
        'roberta-base'
    """
    if name in _MODELS:
        return _MODELS[name]
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
        return TimmModel(timm_name=timm_name, input_size=int(data["input_size"][-1]), description=f"timm {timm_name}",
                         mean=tuple(data["mean"]), std=tuple(data["std"]))
    if name.startswith("open_clip:"):
        from toolkit.models.clip import parse_clip_name

        arch, tag = parse_clip_name(name)
        return ClipModel(clip_name=name, description=f"open_clip {arch} image tower ({tag or 'no tag'})")
    if name.startswith("hf:") and len(name) > 3:
        hf_name = name.removeprefix("hf:")
        return TextModel(hf_name=hf_name, description=f"transformers {hf_name} (text)")
    raise ModelError(f"unknown model {name!r}; a model name is one of: " + "; ".join(NAME_FORMS)
                     + f". Registered: {', '.join(list_models())}")
