"""Contracts over every registered dataset and model (issue 30): each dataset's entry declares
what it supports and the fidelity table's options follow from it; every model name builds."""
import threading

import numpy as np
import pytest
import torch

from toolkit._util import capabilities as caps_module
from toolkit._util.capabilities import MODALITIES, DatasetCapabilities, declared_datasets
from toolkit.config import resolve_config
from toolkit.data import dataset_entry, dataset_parameters, list_datasets, register_dataset
from toolkit.data import registry as data_registry
from toolkit.errors import ConfigError
from toolkit.fidelity import paper_code_overrides
from toolkit.models import MODELS, BuiltModel, TextModel, TimmModel, create_model, list_models

DATASETS = list_datasets()


def test_the_declarations_and_the_registry_name_the_same_datasets():
    assert declared_datasets() == DATASETS  # no loader without a declaration, no stale declaration


@pytest.mark.parametrize("name", DATASETS)
def test_every_dataset_declares_what_it_supports(name):
    entry = dataset_entry(name)
    caps = entry.capabilities
    assert isinstance(caps, DatasetCapabilities) and caps.modality in MODALITIES
    # an image loader that takes `crop` declares it (WILDS' shared loader takes it for Amazon's text too)
    assert caps.crop == (caps.modality == "image" and "crop" in dataset_parameters(name))
    assert not caps.rare_classes or "imbalanced" in dataset_parameters(name)


@pytest.mark.parametrize("name", DATASETS)
def test_the_paper_code_options_follow_from_the_entry(name):
    caps = dataset_entry(name).capabilities
    cfg = resolve_config("toy", [f"data.name={name}", "data.params.imbalanced=true", "protocol=toolkit"])
    options = paper_code_overrides(cfg)
    params = options.get("data", {}).get("params", {})
    assert ("crop" in params) == caps.crop
    assert ("seed" in params) == caps.rare_classes
    assert bool(options.get("finetune")) == (caps.modality == "image")  # the paper's code is the vision release
    assert options == paper_code_overrides(cfg, caps)  # the default reads the entry's own declaration


def test_a_loader_without_a_declaration_is_refused_and_one_with_gets_the_rows(monkeypatch):
    monkeypatch.setattr(data_registry, "_DATASETS", dict(data_registry._DATASETS))
    monkeypatch.setattr(caps_module, "_DECLARED", dict(caps_module._DECLARED))

    def load(split, *, root, crop="centre"):
        raise NotImplementedError

    with pytest.raises(ConfigError, match="declares no capabilities"):
        register_dataset("mine")(load)
    register_dataset("mine", capabilities=DatasetCapabilities("image", crop=True))(load)
    assert "mine" in list_datasets() and dataset_entry("mine").capabilities.crop
    cfg = resolve_config("toy", ["data.name=mine", "protocol=paper_code"])
    assert cfg.data.params["crop"] == "random"
    with pytest.raises(ConfigError, match="'nobody' declares no capabilities"):
        resolve_config("toy", ["data.name=nobody", "protocol=paper_code"])


def test_list_filters():
    assert list_models("bit_*") == ["bit_m_r101x1", "bit_m_r50x1", "bit_s_r50x1"]
    assert list_models(["tiny_*", "toy_*"]) == ["tiny_bit", "toy_resnet"]
    assert "timm_test_vit" not in list_models("*vit*", exclude_filters="*test*")
    assert set(list_models(modality="text")) == {n for n in MODELS if isinstance(MODELS[n], TextModel)}
    assert list_models(kind="built") == ["tiny_bit", "toy_resnet"]
    assert list_datasets("csv_*") == ["csv_images", "csv_text"]
    assert set(list_datasets(modality="text")) | set(list_datasets(modality="image")) == set(DATASETS)


TINY = {n for n in MODELS if isinstance(MODELS[n], (BuiltModel, TimmModel)) and MODELS[n].input_size <= 32}


@pytest.mark.parametrize("name", list_models())
def test_every_model_name_builds(name):
    spec = MODELS[name]
    if isinstance(spec, TextModel):
        pytest.skip("a text model's architecture comes from the hub (its config): network")
    assert spec.description and spec.input_size >= 1
    if name not in TINY:  # a full-size architecture: built on the meta device (no memory, no weights), not run
        with torch.device("meta"):
            backbone, num_features = spec.build()
        assert num_features > 0 and sum(p.numel() for p in backbone.parameters()) > 0
        return
    torch.manual_seed(0)
    model = create_model(name, weights="random", num_classes=3).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 3, spec.input_size, spec.input_size))
    assert out.shape == (2, 3)


def test_checked_npz_loading_is_per_call_and_thread_safe(tmp_path):
    """Concurrent checked loads: the right file loads, the wrong one is refused, np.load untouched."""
    from functools import partial

    from test_fidelity import _to_bit_npz
    from timm.layers import GroupNormAct, StdConv2d
    from timm.models.resnetv2 import ResNetV2

    from toolkit.models import load_npz_checked, weights_digest

    real_load = np.load
    torch.manual_seed(1)
    good = create_model("tiny_bit", weights="random", num_classes=2).backbone
    _to_bit_npz(good, tmp_path / "good.npz")
    np.savez_compressed(tmp_path / "good_z.npz", **dict(np.load(tmp_path / "good.npz")))  # deflated members too
    bigger = ResNetV2(layers=[2, 1, 1, 1], channels=(32, 64, 96, 128), stem_chs=16, stem_type="fixed", num_classes=0,
                      conv_layer=partial(StdConv2d, eps=1e-8), norm_layer=partial(GroupNormAct, num_groups=8))
    _to_bit_npz(bigger, tmp_path / "bigger.npz")

    results: dict = {}

    def load(key, file):
        backbone = create_model("tiny_bit", weights="random", num_classes=2).backbone
        try:
            load_npz_checked(backbone, tmp_path / file)
            results[key] = weights_digest(backbone)
        except ValueError as err:
            results[key] = err

    threads = [threading.Thread(target=load, args=(f"{f}-{i}", f)) for i in range(3)
               for f in ("good.npz", "good_z.npz", "bigger.npz")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert np.load is real_load
    for key, value in results.items():
        if key.startswith("bigger"):
            assert isinstance(value, ValueError) and "block1/unit02" in str(value)
        else:
            assert value == weights_digest(good), key
