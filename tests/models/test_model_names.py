"""Backbones by name (issue #24): `timm:<name>` for any timm model and `hf:<hub id>` for a
transformers text encoder, through the loop and the feature cache, at random init offline."""
import dataclasses

import pytest
import torch
from conftest import TINY_DATA

from toolkit.al.loop import run_active_learning
from toolkit.config import resolve_config
from toolkit.features.cache import extract_features, open_cache
from toolkit.models import create_model, model_spec


@pytest.mark.parametrize("name,dim", [("timm:test_resnet", 96), ("timm:test_vit", 64)])
def test_any_timm_name_runs_the_loop_and_extraction(name, dim, tmp_path):
    cfg = resolve_config("toy", {"data": {"params": {**TINY_DATA, "cache_dir": str(tmp_path / "data")}},
                                 "model": {"name": name, "weights": "random"},
                                 "finetune": {"max_steps": 3, "micro_batch": 16},
                                 "al": {"seed_size": 10, "per_round": 5, "budget": 5}, "eval_batch_size": 128})
    rec = run_active_learning(cfg, tmp_path / "run", log=None)
    assert rec.status == "finished" and rec.model == name and rec.rounds["n_labels"].tolist() == [10, 15]
    path = extract_features(name, "toyworld", "test", weights="random", dataset_params=TINY_DATA,
                            root=tmp_path / "f", log=None)
    cache = open_cache(path)
    assert cache.embeddings.shape[1] == dim and cache.fingerprint["model"] == name  # the name is fingerprinted


def test_a_timm_name_is_the_registered_alias_under_another_name():
    torch.manual_seed(0)
    alias = create_model("timm_test_resnet", weights="random", num_classes=2)
    torch.manual_seed(0)
    named = create_model("timm:test_resnet", weights="random", num_classes=2)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(alias.embed(x), named.embed(x))
    assert model_spec("timm:test_resnet").input_size == 160  # timm's pretrained config, not a guess


def test_bad_names_say_what_names_look_like():
    with pytest.raises(ValueError, match="timm has no model 'no_such_net'"):
        create_model("timm:no_such_net", weights="random", num_classes=2)
    with pytest.raises(ValueError, match=r"a model name is one of: a registered name .* timm:<timm model name>"):
        create_model("resnet9000", weights="random", num_classes=2)


def test_an_hf_name_is_a_text_encoder(tmp_path):
    pytest.importorskip("transformers")
    from wilds_copies import make_tiny_roberta

    folder = make_tiny_roberta(tmp_path / "roberta")
    model = create_model("hf:some-org/tiny-roberta", weights=str(folder), num_classes=3)
    x = {"input_ids": torch.tensor([[0, 5, 6, 2]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    assert model.embed(x).shape == (1, 32) and model(x).shape == (1, 3)
    with pytest.raises(RuntimeError, match="save_pretrained"):  # the hub is unreachable in tests
        create_model("hf:some-org/tiny-roberta", weights="pretrained", num_classes=3)


def test_a_run_config_keeps_the_name_form(tmp_path):
    cfg = resolve_config("toy", {"model": {"name": "timm:test_vit", "weights": "random"}})
    assert dataclasses.asdict(cfg)["model"]["name"] == "timm:test_vit"


def test_a_timm_model_sees_its_own_input_normalisation():
    """The toolkit's images are in [-1, 1]; an ImageNet-normalised timm model gets ((x+1)/2 - mean)/std."""
    torch.manual_seed(0)
    model = create_model("timm:resnet18.a1_in1k", weights="random", num_classes=2).eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(model.embed(x), model.backbone(((x + 1) / 2 - mean) / std), atol=1e-5)
    assert "input_scale" not in model.state_dict()  # derived from the name, not saved weights


@pytest.fixture
def tiny_clip(tmp_path):
    """A tiny open_clip architecture, registered the way open_clip registers its own configs."""
    import json

    open_clip = pytest.importorskip("open_clip", reason="open_clip_torch is not installed")
    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8,
                                           "head_width": 16},
           "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}}
    (tmp_path / "clipcfg").mkdir()
    (tmp_path / "clipcfg" / "altk-tiny-clip.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "clipcfg")
    return "open_clip:altk-tiny-clip/none"


def test_an_open_clip_image_tower_runs_the_loop_and_extraction(tiny_clip, tmp_path):
    cfg = resolve_config("toy", {"data": {"params": {**TINY_DATA, "cache_dir": str(tmp_path / "data")}},
                                 "model": {"name": tiny_clip, "weights": "random"},
                                 "finetune": {"max_steps": 3, "micro_batch": 16},
                                 "al": {"seed_size": 10, "per_round": 5, "budget": 5}, "eval_batch_size": 128})
    rec = run_active_learning(cfg, tmp_path / "run", log=None)
    assert rec.status == "finished" and rec.rounds["n_labels"].tolist() == [10, 15]
    path = extract_features(tiny_clip, "toyworld", "test", weights="random", dataset_params=TINY_DATA,
                            root=tmp_path / "f", log=None)
    assert open_cache(path).embeddings.shape[1] == 16
    assert path.parent == tmp_path / "f" and path.name.startswith("toyworld-test-open_clip_altk-tiny-clip_none-")
    model = create_model(tiny_clip, weights="random", num_classes=2)
    assert model.renormalise  # CLIP's own mean and std, not [-1, 1]
    with pytest.raises(ValueError, match="weights=pretrained needs a tag"):
        create_model("open_clip:altk-tiny-clip", weights="pretrained", num_classes=2)
    with pytest.raises(ValueError, match="open_clip has no architecture 'nope'"):
        create_model("open_clip:nope/x", weights="random", num_classes=2)


@pytest.mark.parametrize("name", ["timm:test_resnet", "timm:test_vit"])
def test_timm_features_are_timms_own_pre_logits(name):
    """The oracle: timm's forward_head(pre_logits=True) on its forward_features."""
    torch.manual_seed(0)
    model = create_model(name, weights="random", num_classes=2).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        ours = model.embed(x)
        theirs = model.backbone.forward_head(model.backbone.forward_features(x), pre_logits=True)
    assert torch.allclose(ours, theirs)
