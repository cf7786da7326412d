"""Paper fidelity (issue #12): each of the paper code's behaviours offered as an option,
the protocol switch that applies them all, and the checks on weights files and resampled pools.
None of these needs the `wilds` package."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from toolkit.config import resolve_config
from toolkit.data import create_dataset


def _to_bit_npz(model, path):
    """Write a timm ResNetV2 in the original BiT .npz naming (the inverse of timm's loader)."""
    hwio = lambda w: w.detach().numpy().transpose(2, 3, 1, 0) if w.ndim == 4 else w.detach().numpy()
    out = {"resnet/root_block/standardized_conv2d/kernel": hwio(model.stem.conv.weight),
           "resnet/group_norm/gamma": hwio(model.norm.weight), "resnet/group_norm/beta": hwio(model.norm.bias)}
    for i, (_, stage) in enumerate(model.stages.named_children()):
        for j, (_, block) in enumerate(stage.blocks.named_children()):
            p = f"resnet/block{i + 1}/unit{j + 1:02d}/"
            for letter, k in zip("abc", (1, 2, 3)):
                out[f"{p}{letter}/standardized_conv2d/kernel"] = hwio(getattr(block, f"conv{k}").weight)
                out[f"{p}{letter}/group_norm/gamma"] = hwio(getattr(block, f"norm{k}").weight)
                out[f"{p}{letter}/group_norm/beta"] = hwio(getattr(block, f"norm{k}").bias)
            if block.downsample is not None:
                out[f"{p}a/proj/standardized_conv2d/kernel"] = hwio(block.downsample.conv.weight)
    np.savez(path, **out)


def test_original_bit_npz_weights_load(tmp_path):
    from toolkit.models import create_model, weights_digest

    torch.manual_seed(3)
    source = create_model("tiny_bit", weights="random", num_classes=2)
    with torch.no_grad():  # non-trivial norms, so a mis-mapped gamma/beta would show
        for name, p in source.backbone.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    _to_bit_npz(source.backbone, tmp_path / "BiT-tiny.npz")
    loaded = create_model("tiny_bit", weights=str(tmp_path / "BiT-tiny.npz"), num_classes=2)
    assert weights_digest(loaded.backbone) == weights_digest(source.backbone)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.embed(x), source.embed(x))


def test_waterbirds_dose_response_resampling(tmp_path):
    from test_datasets import make_waterbirds

    from toolkit.data.metadata_images import resample_matched

    rows = pd.DataFrame({"img_id": range(200), "y": [0] * 120 + [1] * 80,
                         "place": [0] * 100 + [1] * 20 + [0] * 10 + [1] * 70})
    for f in (0.5, 0.7, 0.8333):
        out = resample_matched(rows, f, seed=1)
        for y, g in out.groupby("y"):
            assert (g["place"] == y).mean() == pytest.approx(f, abs=0.02)
    half = resample_matched(rows, 0.5, seed=1)
    assert half.groupby(["y", "place"]).size().tolist() == [20, 20, 10, 10]  # every mismatched row kept
    assert resample_matched(rows, 0.5, seed=1).equals(half) and not resample_matched(rows, 0.5, seed=2).equals(half)
    root = make_waterbirds(tmp_path / "wb", n_per_group=(24, 4, 4, 24))
    with pytest.warns(UserWarning, match="from 56 to 32 existing images"):
        ds = create_dataset("waterbirds", "train", root=str(root), resolution=32, cache_dir=None, matched_fraction=0.75)
    assert ds.attributes.groupby(["y", "place"]).size().tolist() == [12, 4, 4, 12]
    test = create_dataset("waterbirds", "test", root=str(root), resolution=32, cache_dir=None, matched_fraction=0.75)
    assert len(test) == 56 and "matched_fraction" not in test.params  # other splits keep their own mix


def test_npz_from_a_larger_model_is_refused_by_name(tmp_path):
    from functools import partial

    from timm.layers import GroupNormAct, StdConv2d
    from timm.models.resnetv2 import ResNetV2

    from toolkit.models import create_model

    # the same family with a second unit in stage 1: timm alone would load its first units silently
    bigger = ResNetV2(layers=[2, 1, 1, 1], channels=(32, 64, 96, 128), stem_chs=16, stem_type="fixed", num_classes=0,
                      conv_layer=partial(StdConv2d, eps=1e-8), norm_layer=partial(GroupNormAct, num_groups=8))
    _to_bit_npz(bigger, tmp_path / "bigger.npz")
    with pytest.raises(ValueError, match="block1/unit02"):
        create_model("tiny_bit", weights=str(tmp_path / "bigger.npz"), num_classes=2)
    # a file lacking a key the model needs names it
    torch.manual_seed(0)
    _to_bit_npz(create_model("tiny_bit", weights="random", num_classes=2).backbone, tmp_path / "ok.npz")
    arrays = dict(np.load(tmp_path / "ok.npz"))
    del arrays["resnet/group_norm/gamma"]
    np.savez(tmp_path / "short.npz", **arrays)
    with pytest.raises(ValueError, match="missing key 'resnet/group_norm/gamma'"):
        create_model("tiny_bit", weights=str(tmp_path / "short.npz"), num_classes=2)
    # the source's own classifier may go unread
    np.savez(tmp_path / "with_head.npz", **{**dict(np.load(tmp_path / "ok.npz")),
                                           "resnet/head/conv2d/kernel": np.zeros((1, 1, 128, 5), np.float32)})
    create_model("tiny_bit", weights=str(tmp_path / "with_head.npz"), num_classes=2)


def test_resampled_pool_refuses_a_budget_that_labels_most_of_it(tmp_path):
    from test_datasets import make_waterbirds

    from toolkit.al.loop import run_active_learning

    root = make_waterbirds(tmp_path / "wb", n_per_group=(24, 4, 4, 24))
    ov = {"data": {"params": {"root": str(root), "resolution": 32, "cache_dir": None, "matched_fraction": 0.75},
                   "eval_splits": ["val"]},
          "model": {"name": "timm_test_resnet", "weights": "random"},
          "finetune": {"max_steps": 1, "micro_batch": 4, "batch_size": 4},
          "al": {"seed_size": 4, "per_round": 2, "budget": 2}, "device": "cpu"}
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"32 images.*19% of it.*max_resampled_share=0.19"):
        run_active_learning(resolve_config("waterbirds", ov), tmp_path / "run", log=None)
    ov["al"]["max_resampled_share"] = 0.2
    with pytest.warns(UserWarning):
        rec = run_active_learning(resolve_config("waterbirds", ov), tmp_path / "run", log=None)
    assert rec.meta["pool_size"] == 32


def test_warmup_offset_and_size_rounding():
    from toolkit.al.finetune import bit_hyperrule_lr
    from toolkit.al.protocol import acquisition_sizes
    from toolkit.config import ALConfig

    assert bit_hyperrule_lr(0, 100) == 0.0  # BiT: step 0 trains at lr 0
    assert bit_hyperrule_lr(0, 100, warmup_offset=1) == pytest.approx(0.003 / 100)  # the paper's code
    assert bit_hyperrule_lr(99, 100, warmup_offset=1) == pytest.approx(0.003)
    assert bit_hyperrule_lr(150, 100, warmup_offset=1) == bit_hyperrule_lr(150, 100) == pytest.approx(0.003)
    geo = dict(per_round=3, geometric_factor=1.7, budget=20, schedule="geometric")
    assert acquisition_sizes(ALConfig(**geo)) == [3, 5, 8, 4]  # floor(3 * 1.7 ** k): 3, 5.1, 8.67, capped
    assert acquisition_sizes(ALConfig(**geo, size_rounding="round")) == [3, 5, 9, 3]
    with pytest.raises(ValueError, match="size_rounding"):
        acquisition_sizes(ALConfig(**geo, size_rounding="ceil"))


def _toy_pool(tiny_cfg):
    from toolkit.data import create_dataset

    return create_dataset("toyworld", "train", **tiny_cfg.data.params)


def test_last_micro_batch_stop_rule_reads_one_micro_batch_with_no_window(tiny_cfg):
    from toolkit.al.finetune import FinetuneConfig, LossRatioStop, finetune
    from toolkit.models import create_model

    stop = LossRatioStop(0.5, window=1)
    assert not stop.update(1.0) and stop.update(0.49)  # fires on the first loss below, no window to fill

    pool = _toy_pool(tiny_cfg)
    steps = {}
    for rule in ("batch", "last_micro_batch"):
        torch.manual_seed(0)
        model = create_model("toy_resnet", weights=tiny_cfg.model.weights, num_classes=2)
        cfg = FinetuneConfig(batch_size=32, micro_batch=4, stop_ratio=0.9, stop_loss=rule, schedule="constant",
                             base_lr=0.01, max_steps=40)
        out = finetune(model, pool, np.arange(64), cfg, device=torch.device("cpu"), seed=0)
        assert out["initial_loss"] == pytest.approx(np.log(2), abs=1e-6)  # zero head: ln 2 whichever rule
        steps[rule] = out["steps"]
    # the window needs 5 whole batches; one lucky micro-batch of 4 stops the code's rule sooner
    assert steps["batch"] >= 5 and steps["last_micro_batch"] < steps["batch"]


def test_random_crop_layout_trains_on_crops_and_evaluates_whole_images(tmp_path):
    from test_datasets import make_waterbirds

    from toolkit.al.finetune import augment

    root = make_waterbirds(tmp_path / "wb")
    centre = create_dataset("waterbirds", "train", root=str(root), resolution=32, cache_dir=None)
    rand = create_dataset("waterbirds", "train", root=str(root), resolution=32, cache_dir=None, crop="random")
    assert centre.images.shape[-1] == 32 and rand.images.shape[-1] == 40  # 32 * 160 // 128: the whole image
    x_eval, _ = rand.get_batch(np.arange(4))
    x_train, _ = rand.get_batch(np.arange(4), train=True)
    assert x_eval.shape[-1] == 32 and x_train.shape[-1] == 40
    expected = torch.nn.functional.interpolate(rand.images[:4].float() / 127.5 - 1, size=(32, 32),
                                               mode="bilinear", align_corners=False)
    torch.testing.assert_close(x_eval, expected)  # evaluation: the whole image resized, not a centre crop
    g = torch.Generator().manual_seed(0)
    crops = augment(x_train, g, pad=0, flip=False, crop=rand.train_crop)
    assert crops.shape[-1] == 32
    # each crop is a window of its 40 px image
    for i in range(4):
        windows = x_train[i].unfold(1, 32, 1).unfold(2, 32, 1)  # (3, 9, 9, 32, 32)
        assert any(torch.equal(windows[:, a, b], crops[i]) for a in range(9) for b in range(9))
    with pytest.raises(ValueError, match="crop must be one of"):
        create_dataset("waterbirds", "train", root=str(root), resolution=32, cache_dir=None, crop="middle")


def test_zero_head_only_for_pretrained_weights_under_the_paper_code():
    from toolkit.models import create_model

    torch.manual_seed(0)
    assert create_model("tiny_bit", weights="random", num_classes=2).head.weight.abs().sum() == 0
    default_init = create_model("tiny_bit", weights="random", num_classes=2, zero_head=False)
    assert default_init.head.weight.abs().sum() > 0
    cfg = resolve_config("waterbirds-unpretrained", ["protocol=paper_code"])
    assert cfg.model.zero_head == "pretrained_only"


def test_cifar_rare_classes_follow_the_run_seed_when_asked():
    from toolkit.data.cifar import rare_classes

    cfg = resolve_config("cifar10-imbalanced", ["protocol=paper_code", "seed=3"])
    assert cfg.data.params["seed"] == "run" and cfg.data_params()["seed"] == 3
    assert resolve_config("cifar10-imbalanced", ["seed=3"]).data_params().get("seed", 0) == 0  # the loader's default
    assert rare_classes(3) != rare_classes(4)  # so every run seed is another task


def test_keep_optimizer_state_carries_momentum_and_resumes_exactly(tiny_cfg, tmp_path):
    from dataclasses import replace

    from toolkit.al.loop import run_active_learning

    def drop_times(rec):
        return rec.rounds.drop(columns=[c for c in rec.rounds.columns if c.startswith("time/") or "seconds" in c])

    from toolkit.al.finetune import finetune, make_optimizer
    from toolkit.models import create_model

    # two rounds from the same initial weights: a kept optimiser starts round 2 with momentum
    pool = _toy_pool(tiny_cfg)
    ends = {}
    for keep in (False, True):
        torch.manual_seed(0)
        model = create_model("toy_resnet", weights=tiny_cfg.model.weights, num_classes=2)
        init = {k: v.clone() for k, v in model.state_dict().items()}
        opt = make_optimizer(model, tiny_cfg.finetune) if keep else None
        for r in range(2):
            model.load_state_dict(init)
            finetune(model, pool, np.arange(32), tiny_cfg.finetune, device=torch.device("cpu"), seed=r, optimizer=opt)
            if r == 0:
                first = {k: v.clone() for k, v in model.state_dict().items()}
                ends.setdefault("round0", []).append(first)
        ends[keep] = model.head.weight.detach().clone()
    a, b = ends["round0"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # round 1 of both: nothing to carry yet
    assert not torch.equal(ends[False], ends[True])  # round 2: the momentum carried over moves the weights

    cfg = replace(tiny_cfg, finetune=replace(tiny_cfg.finetune, keep_optimizer_state=True))
    kept = run_active_learning(cfg, tmp_path / "kept", log=None)
    run_active_learning(cfg, tmp_path / "resumed", log=None, max_rounds=1)
    resumed = run_active_learning(cfg, tmp_path / "resumed", log=None)
    pd.testing.assert_frame_equal(drop_times(resumed), drop_times(kept))
    assert [f.name for f in (tmp_path / "resumed" / "optimizer_state").iterdir()] == ["round_002.pt"]
    # the momentum the resumed run ends with is the uninterrupted run's: it restored round 0's state
    ends = [torch.load(tmp_path / d / "optimizer_state" / "round_002.pt", weights_only=True)["state"]
            for d in ("kept", "resumed")]
    assert all(torch.equal(ends[0][k]["momentum_buffer"], ends[1][k]["momentum_buffer"]) for k in ends[0])


def test_protocol_paper_code_sets_every_applicable_row_and_overrides_win():
    from toolkit.fidelity import ROWS

    cfg = resolve_config("waterbirds", ["protocol=paper_code"])
    assert (cfg.finetune.stop_loss, cfg.finetune.micro_batch, cfg.finetune.warmup_offset) == ("last_micro_batch", 4, 1)
    assert cfg.finetune.keep_optimizer_state and cfg.model.zero_head == "pretrained_only"
    assert cfg.data.params["crop"] == "random" and cfg.data.params["root"] == "data/waterbirds"  # merged, not replaced
    assert resolve_config("waterbirds", ["protocol=paper_code", "finetune.micro_batch=8"]).finetune.micro_batch == 8
    toolkit = resolve_config("waterbirds")
    assert (toolkit.finetune.stop_loss, toolkit.finetune.micro_batch, toolkit.data.params.get("crop", "centre")) == \
        ("batch", 8, "centre")
    assert "crop" not in resolve_config("toy", ["protocol=paper_code"]).data.params  # the toy world has no crops
    assert resolve_config("amazon", ["protocol=paper_code"]).finetune.stop_loss == "batch"  # no public NLP code
    with pytest.raises(ValueError, match="protocol must be one of"):
        resolve_config("waterbirds", ["protocol=paper"])
    assert all(r.paper_code and r.toolkit for r in ROWS)


def test_readme_fidelity_table_is_the_generated_one():
    from pathlib import Path

    from toolkit.fidelity import fidelity_markdown

    page = (Path(__file__).parents[1] / "docs" / "fidelity.md").read_text()
    assert fidelity_markdown() in page, "docs/fidelity.md is stale: paste toolkit.fidelity.fidelity_markdown()"


def test_camelyon17_preset_follows_the_strict_small_image_rule():
    assert resolve_config("camelyon17").data.params["resolution"] == 480
    assert resolve_config("waterbirds-vit-b16").model.name == "vit_b16"



def test_partial_micro_batches_follow_the_paper_codes_loader():
    """Each pass: a fresh permutation cut into micro-batches, the last one partial (drop_last=False)."""
    from toolkit.al.finetune import _micro_batches_by_pass

    stream = _micro_batches_by_pass(42, 4, torch.Generator().manual_seed(0))
    sizes = [len(next(stream)) for _ in range(33)]
    assert sizes == ([4] * 10 + [2]) * 3
    one_pass = torch.cat([next(stream) for _ in range(11)])  # the next pass: every position exactly once
    assert sorted(one_pass.tolist()) == list(range(42))


@pytest.fixture(scope="module")
def tiny_pool(tmp_path_factory):
    from conftest import TINY_DATA

    return create_dataset("toyworld", "train", **TINY_DATA, cache_dir=str(tmp_path_factory.mktemp("d")))


def test_with_partial_batches_the_code_stops_on_a_partial_micro_batch(tiny_pool):
    """A model whose loss is tiny exactly on micro-batches smaller than 4 (a lucky partial batch).
    42 labels in micro-batches of 4, 8 per step: partial micro-batches are the 11th, 22nd, ... of
    the stream (index 11k + 10), and a step ends on one when 11k + 10 = 8s + 7: k = 7, step 11.
    The paper code's rule (last micro-batch, no window) stops there; the default never sees one."""
    from toolkit.al.finetune import FinetuneConfig, finetune

    class LuckyOnSmall(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):
            margin = 40.0 if len(x) < 4 else 0.0  # tiny cross-entropy for class 0 on a partial batch
            return torch.stack([torch.full((len(x),), margin), torch.zeros(len(x))], 1) + 0 * self.w

    class0 = np.flatnonzero(tiny_pool.labels == 0)[:42]
    cfg = FinetuneConfig(batch_size=32, micro_batch=4, stop_loss="last_micro_batch", schedule="constant",
                         max_steps=30, flip=False, partial_batches=True)
    out = finetune(LuckyOnSmall(), tiny_pool, class0, cfg, device=torch.device("cpu"), seed=0)
    assert (out["steps"], out["stopped_by"]) == (11, "loss_ratio")
    default = finetune(LuckyOnSmall(), tiny_pool, class0, dataclasses.replace(cfg, partial_batches=False),
                       device=torch.device("cpu"), seed=0)
    assert (default["steps"], default["stopped_by"]) == (30, "max_steps")
