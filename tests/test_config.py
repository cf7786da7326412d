import re

import pytest

from toolkit.config import list_presets, parse_overrides, resolve_config


def test_toy_preset_and_overrides():
    cfg = resolve_config("toy", ["al.strategy=random", "seed=3", "finetune.base_lr=0.01"])
    assert cfg.al.strategy == "random" and cfg.seed == 3 and cfg.finetune.base_lr == 0.01
    assert cfg.finetune.schedule_scale == 0.3 and cfg.data.name == "toyworld"
    assert "toy" in list_presets()


def test_unknown_key_in_preset_or_override(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("al:\n  stratgy: random\n")
    with pytest.raises(ValueError, match="unknown config key 'al.stratgy'.*strategy"):
        resolve_config(bad)
    with pytest.raises(ValueError, match="unknown config key 'learning_rate'"):
        resolve_config("toy", ["learning_rate=3"])


def test_unknown_preset():
    with pytest.raises(FileNotFoundError, match="toy"):
        resolve_config("waterbirdz")


def test_parse_overrides():
    assert parse_overrides(["a.b=1", "a.c=[1, 2]", "d=x"]) == {"a": {"b": 1, "c": [1, 2]}, "d": "x"}
    with pytest.raises(ValueError, match="section.key=value"):
        parse_overrides(["oops"])


def test_dataset_params_override_merges_with_the_preset():
    cfg = resolve_config("cifar10-imbalanced", ["data.params.root=/data/c10"])
    assert cfg.data.params == {"root": "/data/c10", "resolution": 128, "imbalanced": True}
    assert resolve_config("waterbirds-vit-b16", ["data.params.root=/x"]).data.params["resolution"] == 224


@pytest.mark.parametrize("override,message", [
    ("seed=abc", "config key 'seed' takes int, got 'abc'"),
    ("seed=1.5", "config key 'seed' takes int, got 1.5"),
    ("seed=-1", "config key 'seed' must be a non-negative integer, got -1"),
    ("al.budget=abc", "config key 'al.budget' takes int"),
    ("al.budget=-5", "config key 'al.budget' must be >= 0, got -5"),
    ("al.per_round=1.5", "config key 'al.per_round' takes int, got 1.5"),
    ("finetune.max_steps=abc", "config key 'finetune.max_steps' takes int or null"),
    ("finetune.base_lr=0", "config key 'finetune.base_lr' must be > 0"),
    ("device=gpu", "config key 'device' must be one of auto, cpu, cuda, cuda:N, mps, got 'gpu'"),
])
def test_typed_values_are_checked_and_the_key_named(override, message):
    from toolkit.config import resolve_config

    with pytest.raises(ValueError, match=re.escape(message)):
        resolve_config("toy", [override])


def test_typed_values_that_are_fine():
    from toolkit.config import resolve_config

    cfg = resolve_config("toy", ["finetune.base_lr=1", "finetune.max_steps=null", "device=cuda:1", "threads=2"])
    assert cfg.finetune.base_lr == 1.0 and isinstance(cfg.finetune.base_lr, float) and cfg.device == "cuda:1"


def test_misspelt_dataset_parameter_lists_the_valid_ones():
    from toolkit.data import create_dataset

    with pytest.raises(ValueError, match=r"unknown parameter\(s\) 'n_trian' for dataset 'toyworld'.*valid: .*n_train"):
        create_dataset("toyworld", "train", n_trian=10)
    with pytest.raises(ValueError, match=r"'resolutoin' for dataset 'waterbirds'.*valid: root, resolution"):
        create_dataset("waterbirds", "train", resolutoin=32)


def test_a_preset_with_bad_yaml_names_its_file(tmp_path):
    from toolkit.config import load_preset

    bad = tmp_path / "bad.yaml"
    bad.write_text("al:\n  budget: 3\n   per_round: 2\n")
    with pytest.raises(ValueError, match=rf"preset {re.escape(str(bad))} is not valid YAML"):
        load_preset(bad)
