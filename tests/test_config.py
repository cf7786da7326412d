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
