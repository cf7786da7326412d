import numpy as np
import pytest
import torch
from conftest import TINY_DATA

from toolkit.al.finetune import FinetuneConfig, LossRatioStop, bit_hyperrule_lr, bit_hyperrule_supports, finetune
from toolkit.data import create_dataset
from toolkit.models import create_model, weights_digest


@pytest.mark.parametrize("step,expected", [
    (0, 0.0), (50, 0.0015), (99, 0.003 * 99 / 100), (100, 0.003), (200, 0.003), (201, 0.0003),
    (300, 0.0003), (301, 0.00003), (401, 0.000003), (499, 0.000003), (500, None),
])
def test_bit_hyperrule_small_dataset(step, expected):
    lr = bit_hyperrule_lr(step, dataset_size=320)
    assert lr == (None if expected is None else pytest.approx(expected))


def test_bit_hyperrule_sizes_and_scale():
    assert bit_hyperrule_supports(19_999)[-1] == 500
    assert bit_hyperrule_supports(20_000) == (500, 3000, 6000, 9000, 10_000)
    assert bit_hyperrule_supports(500_000)[-1] == 20_000
    # a 0.2 scale: warm-up 20, decays after 40/60/80, end at 100 (the toy preset uses 0.3)
    assert bit_hyperrule_lr(10, 100, scale=0.2) == pytest.approx(0.0015)
    assert bit_hyperrule_lr(41, 100, scale=0.2) == pytest.approx(0.0003)
    assert bit_hyperrule_lr(100, 100, scale=0.2) is None


def test_stop_rule():
    stop = LossRatioStop(ratio=0.01, window=3)
    assert not stop.update(1.0)            # initial = 1.0
    assert not stop.update(0.001)          # window not yet full
    assert not stop.update(0.001)          # mean(1, .001, .001) = 0.334
    assert not stop.update(0.05)           # mean(.001, .001, .05) = 0.0173 > 0.01
    assert not stop.update(0.001)          # mean(.001, .05, .001) = 0.0173
    assert not stop.update(0.001)          # mean(.05, .001, .001) = 0.0173
    assert stop.update(0.001)              # mean = 0.001 < 0.01 * 1.0
    assert stop.initial == 1.0 and stop.current == pytest.approx(0.001)


def test_stop_rule_single_lucky_batch_does_not_stop():
    stop = LossRatioStop(ratio=0.1, window=4)
    losses = [2.0, 1.0, 0.9, 0.001, 0.8]
    assert not any(stop.update(x) for x in losses)


def test_stop_rule_bad_ratio():
    with pytest.raises(ValueError, match="ratio"):
        LossRatioStop(ratio=1.5)


@pytest.fixture(scope="module")
def tiny_pool(tmp_path_factory):
    return create_dataset("toyworld", "train", **TINY_DATA, cache_dir=str(tmp_path_factory.mktemp("d")))


def test_finetune_stops_by_loss_ratio_and_learns(tiny_pool):
    torch.manual_seed(0)
    model = create_model("toy_resnet", weights="random", num_classes=2)
    cfg = FinetuneConfig(base_lr=0.05, batch_size=8, micro_batch=8, stop_ratio=0.05, schedule_scale=0.4, flip=False)
    out = finetune(model, tiny_pool, np.arange(8), cfg, device=torch.device("cpu"), seed=0)
    assert out["initial_loss"] == pytest.approx(np.log(2), rel=1e-5)  # zero head: exactly ln C
    assert out["stopped_by"] == "loss_ratio" and out["final_loss"] < 0.05 * out["initial_loss"]


def test_finetune_step_cap_and_determinism(tiny_pool):
    digests = []
    for _ in range(2):
        torch.manual_seed(0)
        model = create_model("toy_resnet", weights="random", num_classes=2)
        out = finetune(model, tiny_pool, np.arange(20), FinetuneConfig(max_steps=4, micro_batch=16, batch_size=32,
                                                                       augment_pad=2),
                       device=torch.device("cpu"), seed=3)
        assert out["steps"] == 4 and out["stopped_by"] == "max_steps"
        digests.append(weights_digest(model))
    assert digests[0] == digests[1]


def test_gradient_accumulation_matches_full_batch(tiny_pool):
    states = []
    for micro in (8, 32):
        torch.manual_seed(0)
        model = create_model("toy_resnet", weights="random", num_classes=2)
        finetune(model, tiny_pool, np.arange(40), FinetuneConfig(max_steps=3, micro_batch=micro, flip=False,
                                                                 schedule_scale=0.02),
                 device=torch.device("cpu"), seed=1)
        states.append(model.state_dict())
    for k in states[0]:
        torch.testing.assert_close(states[0][k], states[1][k], rtol=1e-4, atol=1e-5)


def test_finetune_config_validation(tiny_pool):
    model = create_model("toy_resnet", weights="random", num_classes=2)
    with pytest.raises(ValueError, match="multiple of micro_batch"):
        finetune(model, tiny_pool, np.arange(8), FinetuneConfig(batch_size=32, micro_batch=10),
                 device=torch.device("cpu"), seed=0)
    with pytest.raises(ValueError, match="empty"):
        finetune(model, tiny_pool, np.arange(0), FinetuneConfig(), device=torch.device("cpu"), seed=0)


def test_device_batches_and_loader_workers_match_the_plain_path(tiny_pool):
    from toolkit.al.finetune import iterate_batches, predict_logits

    x_plain, y_plain = tiny_pool.get_batch(np.arange(10))
    x_dev, y_dev = tiny_pool.get_batch(np.arange(10), device="cpu")
    assert torch.equal(x_plain, x_dev) and torch.equal(y_plain, y_dev)
    order = np.random.default_rng(0).permutation(len(tiny_pool))[:100]
    chunks = [c for c, _ in iterate_batches(tiny_pool, order, device=torch.device("cpu"), batch_size=32)]
    assert [len(c) for c in chunks] == [32, 32, 32, 4] and np.array_equal(np.concatenate(chunks), order)
    torch.manual_seed(0)
    model = create_model("toy_resnet", weights="random", num_classes=2)
    out = {w: np.concatenate([l for _, l in predict_logits(model, tiny_pool, order, device=torch.device("cpu"),
                                                           batch_size=32, workers=w)]) for w in (0, 2)}
    np.testing.assert_array_equal(out[0], out[2])  # worker processes gather the same batches, in order


@pytest.mark.slow  # compiling with inductor on this CPU: 75 s with a cold cache
def test_compiled_model_trains_like_eager(tiny_pool):
    from toolkit.al.finetune import maybe_compile

    losses = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        model = create_model("toy_resnet", weights="random", num_classes=2)
        net = maybe_compile(model, compiled)
        out = finetune(net, tiny_pool, np.arange(16), FinetuneConfig(max_steps=3, batch_size=16, micro_batch=16,
                                                                     flip=False), device=torch.device("cpu"), seed=0)
        losses[compiled] = out["final_loss"]
        assert (net is not model) == compiled
    assert losses[True] == pytest.approx(losses[False], rel=1e-3)


def test_adamw_with_constant_schedule_is_what_runs(tiny_pool, monkeypatch):
    made, lrs = [], []
    real = torch.optim.AdamW

    class Spy(real):
        def __init__(self, params, **kw):
            made.append(kw)
            super().__init__(params, **kw)

        def step(self, *a, **k):
            lrs.append(self.param_groups[0]["lr"])
            return super().step(*a, **k)

    monkeypatch.setattr(torch.optim, "AdamW", Spy)
    model = create_model("toy_resnet", weights="random", num_classes=2)
    cfg = FinetuneConfig(optimizer="adamw", adam_betas=[0.99, 0.999], weight_decay=0.1, base_lr=1e-4,
                         schedule="constant", max_steps=3, batch_size=8, micro_batch=8)
    out = finetune(model, tiny_pool, np.arange(8), cfg, device=torch.device("cpu"), seed=0)
    assert made == [{"lr": 0.0, "betas": (0.99, 0.999), "weight_decay": 0.1}]
    assert lrs == [1e-4] * 3 and out["stopped_by"] == "max_steps"  # no warm-up, no decay
    with pytest.raises(ValueError, match="needs finetune.max_steps"):
        finetune(model, tiny_pool, np.arange(8), FinetuneConfig(schedule="constant"), device=torch.device("cpu"),
                 seed=0)
