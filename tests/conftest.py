import os

os.environ["HF_HUB_OFFLINE"] = "1"  # an unreachable hub otherwise retries for ~47 s
os.environ["ALTK_NO_PRETRAIN"] = "1"  # a test that needs the toy backbone installs a tiny one (install_backbone)

import pytest
import torch

torch.set_num_threads(1)

# A CPU-sized toy world for tests: a few hundred images.
TINY_DATA = {"n_train": 240, "n_val": 40, "n_test": 160}


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test writes its default paths under its own folder: ALTK_CACHE = tmp_path/cache."""
    monkeypatch.setenv("ALTK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory):
    """A briefly pretrained toy backbone (not a good one: the loop, not the effect, is under test)."""
    from toolkit.models.pretrain import PretrainRecipe, pretrain_toy

    path = tmp_path_factory.mktemp("backbone") / "toy_resnet.pt"
    pretrain_toy(path, PretrainRecipe(n_images=600, steps=30, batch_size=32, warmup_steps=5), log_every=0)
    return path


@pytest.fixture
def tiny_cfg(tiny_backbone, tmp_path):
    """A run config that finishes three rounds in a few seconds."""
    from toolkit.config import resolve_config

    return resolve_config("toy", {
        "data": {"params": {**TINY_DATA, "cache_dir": str(tmp_path / "data")}},
        "model": {"weights": str(tiny_backbone)},
        "finetune": {"max_steps": 6, "micro_batch": 16},
        "al": {"seed_size": 10, "per_round": 5, "budget": 10},
        "eval_batch_size": 128,
    })


def install_backbone(backbone, root):
    """Put a (tiny) toy backbone where code run from `root` looks for it, so nothing
    pretrains the real one (minutes) inside a test."""
    import shutil

    from toolkit.models.pretrain import toy_checkpoint

    target = toy_checkpoint()  # under ALTK_CACHE, which `isolated_cache` points into the test's folder
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(backbone, target)
