"""The toy backbone: a small pre-activation ResNet with GroupNorm (~1.2M parameters).

GroupNorm rather than BatchNorm so that gradient accumulation is exact and tiny
finetuning batches behave (as BiT uses GroupNorm + weight standardisation).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.errors import ModelError
from toolkit.models.registry import register_model


def _gn(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels // 4), channels)


class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.norm1 = _gn(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm2 = _gn(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if (stride != 1 or cin != cout) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.norm2(out)))
        return out + skip


class ToyResNet(nn.Module):
    """Feature extractor: (B, 3, 32, 32) in [-1, 1] -> (B, 256) embedding.

    A stride-2 stem, then stages at 16, 8, 4, 2 pixels for 32x32 inputs. The stride-1
    stem cost ~45% more CPU time for no gain in the feasibility runs; a stride-1 last
    stage (4x4, toy world v1) cost 40% more per image than the stride-2 one (645 vs 904
    images/s in pretraining on 2 cores), time that pretraining spends on more images.
    `stage2` (8x8) feeds the auxiliary foreground-mask head used only during pretraining.
    """

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256), strides: tuple[int, ...] = (1, 2, 2, 2)) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, widths[0], 3, 2, 1, bias=False)
        cins = (widths[0],) + tuple(widths[:-1])
        self.stages = nn.ModuleList(PreActBlock(ci, co, s) for ci, co, s in zip(cins, widths, strides))
        self.final_norm = _gn(widths[-1])
        self.num_features = widths[-1]
        self.stage2_channels = widths[1]

    def architecture(self) -> dict:
        """What a checkpoint must match beyond parameter shapes (the strides change no shape)."""
        return {"strides": [int(stage.conv1.stride[0]) for stage in self.stages]}

    def forward_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (last feature map, stage-2 feature map)."""
        x = self.stem(x)
        mid = x
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i == 1:
                mid = x
        return x, mid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self.forward_stages(x)
        return F.relu(self.final_norm(x)).mean(dim=(2, 3))


DEFAULT_WIDTH = 32  # the stem's channels; the four stages have 1, 2, 4 and 8 times as many


def toy_widths(width: int = DEFAULT_WIDTH) -> tuple[int, int, int, int]:
    """The four stages' channels of a toy ResNet whose stem has `width` channels: 32 -> (32, 64, 128, 256),
    an embedding of 8 x `width` dimensions. Every stage's GroupNorm must divide its channels."""
    widths = tuple(width * k for k in (1, 2, 4, 8))
    if width < 4 or any(c % min(32, c // 4) for c in widths):
        raise ModelError(f"toy ResNet width {width}: each stage's GroupNorm must divide its channels {widths}; "
                         f"try a power of two, e.g. 8, 16, 32 or 64")
    return widths


@register_model("toy_resnet", input_size=32, description="toy pre-act ResNet-GN, pretrained by `altk pretrain toy`")
def toy_resnet() -> tuple[nn.Module, int]:
    m = ToyResNet()
    return m, m.num_features
