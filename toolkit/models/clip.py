"""The image tower of an open_clip model as a backbone: `open_clip:<arch>/<pretrained tag>`.

`open_clip_torch` is an optional extra (`pip install -e ".[clip]"`). The embedding is the
tower's output (the image embedding CLIP's contrastive loss uses, before normalisation); the
input normalisation is open_clip's own preprocess config for the model.
"""
from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from toolkit.data.tokenizers import first_line, hub_error, quiet_hub
from toolkit.errors import MissingFileError, ModelError


class ClipImageTower(nn.Module):
    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self.visual = visual
        self.num_features = int(visual.output_dim)

    def forward(self, x):
        return self.visual(x)


def parse_clip_name(name: str) -> tuple[str, str | None]:
    """"open_clip:ViT-B-32/laion2b_s34b_b79k" -> ("ViT-B-32", "laion2b_s34b_b79k"); no tag -> None."""
    rest = name.removeprefix("open_clip:")
    arch, _, tag = rest.partition("/")
    if not arch:
        raise ModelError(f"model {name!r}: expected open_clip:<arch>/<pretrained tag>, e.g. "
                         "open_clip:ViT-B-32/laion2b_s34b_b79k")
    return arch, tag or None


def build_clip_backbone(name: str, weights: str) -> tuple[ClipImageTower, tuple, tuple]:
    """(tower, mean, std). weights: "pretrained" (the name's tag, from the hub), "random", or a
    local open_clip checkpoint file of the same architecture."""
    try:
        import open_clip
    except ImportError:
        raise MissingFileError(f"model {name!r} needs open_clip: pip install open_clip_torch "
                               "(or the toolkit's extra: pip install -e '.[clip]')") from None
    arch, tag = parse_clip_name(name)
    if arch not in open_clip.list_models():
        raise ModelError(f"model {name!r}: open_clip has no architecture {arch!r}; see open_clip.list_models()")
    if weights == "pretrained":
        if tag is None:
            raise ModelError(f"model {name!r}: weights=pretrained needs a tag (open_clip:{arch}/<tag>; "
                             f"tags: {', '.join(open_clip.list_pretrained_tags_by_model(arch)[:6])}), or pass a file")
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if tag not in tags:
            raise ModelError(f"model {name!r}: open_clip has no pretrained tag {tag!r} for {arch}; its tags: "
                             f"{', '.join(tags[:8]) or 'none'}{' ...' if len(tags) > 8 else ''}. Or pass "
                             f"model.weights=PATH (an open_clip checkpoint file of {arch})")
        source = tag
    elif weights == "random":
        source = None
    else:
        if not Path(weights).is_file():
            raise MissingFileError(f"weights {weights!r} for {name!r}: no such file; pass 'pretrained', 'random' or "
                                   "an open_clip checkpoint file")
        source = str(weights)
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # open_clip warns on the root logger at random init
    try:
        with quiet_hub():
            model = open_clip.create_model(arch, pretrained=source)
    except (OSError, RuntimeError) as err:
        if weights == "pretrained":
            raise hub_error(f"the pretrained weights of {name!r}", err,
                            "download the checkpoint where there is network and pass model.weights=PATH") from err
        raise ModelError(f"model {name!r} with weights={weights}: open_clip could not build it ({first_line(err)})"
                         + ("" if weights == "random" else f"; pass an open_clip checkpoint file of {arch}")) from err
    finally:
        logging.getLogger().setLevel(quiet)
    pre = open_clip.get_model_preprocess_cfg(model)
    return ClipImageTower(model.visual), tuple(pre["mean"]), tuple(pre["std"])
