"""Text backbones through transformers (RoBERTa for Amazon-WILDS): the same `embed`
contract as the image backbones, taking {"input_ids", "attention_mask"} batches."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from toolkit.errors import MissingFileError
from toolkit.models.registry import TextModel, register_spec


class TextBackbone(nn.Module):
    """A transformers encoder; the embedding is the final hidden state of the first token
    (<s>, RoBERTa's [CLS]). The toolkit's zero-initialised linear head sits on it, in place
    of transformers' two-layer classification head, so every model shares one contract."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.num_features = encoder.config.hidden_size

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return out.last_hidden_state[:, 0]


def build_text_backbone(hf_name: str, weights: str) -> TextBackbone:
    """weights: "pretrained" (the hub's `hf_name`), "random" (its architecture, untrained),
    a local `save_pretrained` folder, or "random:FOLDER" (that folder's architecture, untrained)."""
    from transformers import AutoConfig, AutoModel

    from toolkit.data.tokenizers import hub_error, quiet_hub

    try:
        with quiet_hub():
            if weights == "pretrained":
                return TextBackbone(AutoModel.from_pretrained(hf_name, add_pooling_layer=False))
            if weights == "random" or weights.startswith("random:"):
                source = hf_name if weights == "random" else weights.split(":", 1)[1]
                config = AutoConfig.from_pretrained(source)
                return TextBackbone(AutoModel.from_config(config, add_pooling_layer=False))
    except OSError as err:
        what = "the config" if weights.startswith("random") else "the weights"
        raise hub_error(f"{what} of text model {hf_name!r} (model.weights={weights})", err) from err
    path = Path(weights)
    if not (path / "config.json").exists():
        raise MissingFileError(f"text model weights {weights!r}: expected 'pretrained', 'random', 'random:FOLDER' "
                                f"or a folder with config.json and the weights, as written by save_pretrained")
    return TextBackbone(AutoModel.from_pretrained(path, add_pooling_layer=False))


register_spec("roberta_large", TextModel(hf_name="roberta-large",
                                         description="RoBERTa-Large (transformers), the paper's Amazon model"))
register_spec("roberta_base", TextModel(hf_name="roberta-base", description="RoBERTa-Base (transformers)"))
