import pytest
import torch
from conftest import install_backbone
from safetensors.torch import save_file

from toolkit.models import create_model, list_models, weights_digest


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="bit_m_r50x1"):
        create_model("resnet9000", num_classes=2)


@pytest.mark.parametrize("name,size", [("toy_resnet", 32), ("timm_test_resnet", 32), ("timm_test_vit", 160)])
def test_random_models_embed_and_zero_head(name, size):
    torch.manual_seed(0)
    m = create_model(name, weights="random", num_classes=3).eval()
    x = torch.randn(2, 3, size, size)
    emb = m.embed(x)
    assert emb.shape == (2, m.head.in_features)
    assert torch.equal(m(x), torch.zeros(2, 3))  # zero-initialised head


def test_registry_covers_paper_models():
    assert {"bit_m_r50x1", "bit_s_r50x1", "bit_m_r101x1", "vit_b16", "toy_resnet"} <= set(list_models())


def test_local_safetensors_with_source_head_loads(tmp_path):
    torch.manual_seed(1)
    src = create_model("timm_test_resnet", weights="random", num_classes=2)
    state = dict(src.backbone.state_dict())
    state["fc.weight"] = torch.zeros(1000, src.head.in_features)  # the source's own head is allowed
    save_file(state, tmp_path / "w.safetensors")
    torch.manual_seed(2)
    dst = create_model("timm_test_resnet", weights=str(tmp_path / "w.safetensors"), num_classes=2)
    assert weights_digest(dst.backbone) == weights_digest(src.backbone)


def test_checkpoint_of_other_architecture_refused(tmp_path):
    torch.save(create_model("toy_resnet", weights="random", num_classes=2).backbone.state_dict(), tmp_path / "t.pth")
    with pytest.raises(ValueError, match="does not match the architecture"):
        create_model("timm_test_resnet", weights=str(tmp_path / "t.pth"), num_classes=2)


def test_missing_weights_file():
    with pytest.raises(FileNotFoundError, match="no such file"):
        create_model("toy_resnet", weights="nowhere.pt", num_classes=2)


def test_toy_pretrained_loads_checkpoint(tiny_backbone, monkeypatch):
    install_backbone(tiny_backbone, None)
    a = create_model("toy_resnet", weights="pretrained", num_classes=2)
    b = create_model("toy_resnet", weights=str(tiny_backbone), num_classes=2)
    saved = torch.load(tiny_backbone, map_location="cpu", weights_only=True)["backbone"]
    assert weights_digest(a) == weights_digest(b)
    for k, v in saved.items():
        assert torch.equal(a.backbone.state_dict()[k], v)


def test_hub_unreachable_gives_clear_error():
    with pytest.raises(RuntimeError, match="weights=PATH"):
        create_model("timm_test_resnet", weights="pretrained", num_classes=2)


def test_head_runs_in_float32_under_autocast():
    from toolkit.models import create_model

    torch.manual_seed(0)
    model = create_model("tiny_bit", weights="random", num_classes=3, zero_head=False).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits, z = model(x), model.embed(x)
    assert z.dtype == torch.bfloat16  # the backbone did run in bf16
    assert logits.dtype == torch.float32  # the head did not
    torch.testing.assert_close(logits, torch.nn.functional.linear(z.float(), model.head.weight, model.head.bias))


def test_compute_dtype_is_part_of_the_cache_fingerprint():
    from toolkit.data import create_dataset
    from toolkit.features.cache import compute_dtype, make_fingerprint

    ds = create_dataset("toyworld", "test", n_train=8, n_val=4, n_test=8, cache_dir=None)
    kw = dict(model="toy_resnet", weights="w", layer="penultimate", dataset=ds, transform="t")
    assert compute_dtype(torch.device("cpu")) == "float32" and compute_dtype(torch.device("cuda")) != "float32"
    assert make_fingerprint(**kw, compute="float32") != make_fingerprint(**kw, compute="bfloat16-autocast")


def test_empty_non_dict_and_wrong_shape_weights_files_are_named(tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.pt is not a readable PyTorch weights file"):
        create_model("toy_resnet", weights=str(empty), num_classes=2)
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(ValueError, match="holds Tensor, not a state dict of tensors"):
        create_model("toy_resnet", weights=str(tmp_path / "tensor.pt"), num_classes=2)
    state = create_model("toy_resnet", weights="random", num_classes=2).backbone.state_dict()
    key = next(k for k, v in state.items() if v.ndim == 4)
    state[key] = torch.zeros(*state[key].shape[:-1], state[key].shape[-1] + 2)
    torch.save(state, tmp_path / "wide.pt")
    with pytest.raises(ValueError, match=rf"1 tensors have other shapes, e.g. {key} .* \(the model has"):
        create_model("toy_resnet", weights=str(tmp_path / "wide.pt"), num_classes=2)
