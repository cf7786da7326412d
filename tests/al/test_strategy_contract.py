"""The strategy contract: every registered strategy runs through both loops (full finetuning and
the probe on cached features), picks k distinct unlabelled ids, the same ones for the same seed;
and a strategy registered with the decorator alone is usable by both, with no other edit."""
import dataclasses

import numpy as np
import pytest
from conftest import TINY_DATA

from toolkit.al import acquisition as acq
from toolkit.al.acquisition import INPUT_KINDS, Strategy, StrategyInputs, build_inputs, register_strategy
from toolkit.al.loop import run_active_learning
from toolkit.config import ALConfig
from toolkit.features.cache import extract_features
from toolkit.features.probe import run_probe

SEED_SIZE, PER_ROUND, BUDGET = 10, 5, 10  # two acquiring rounds


@pytest.fixture(scope="module")
def caches(tiny_backbone, tmp_path_factory):
    root = tmp_path_factory.mktemp("contract-features")
    kw = dict(weights=str(tiny_backbone), dataset_params={**TINY_DATA, "cache_dir": str(root / "data")}, root=root,
              log=None)
    return (extract_features("toy_resnet", "toyworld", "train", **kw),
            extract_features("toy_resnet", "toyworld", "test", **kw))


def _full(cfg, name, out):
    al = dataclasses.replace(cfg.al, strategy=name, seed_size=SEED_SIZE, per_round=PER_ROUND, budget=BUDGET)
    return run_active_learning(dataclasses.replace(cfg, al=al), out, log=None)


def _probe(caches, name, out, seed=0):
    pool, test = caches
    return run_probe(pool, {"test": test}, out, al=ALConfig(strategy=name, seed_size=SEED_SIZE, per_round=PER_ROUND,
                                                            budget=BUDGET), seed=seed)


def _check_picks(a, b):
    """a's acquisitions: k distinct unlabelled ids per round, none from the seed set, and b's the same."""
    acq_a = a.acquisitions
    assert len(acq_a) == BUDGET and acq_a["round"].tolist() == [0] * PER_ROUND + [1] * PER_ROUND
    ids = acq_a["id"].tolist()
    assert len(set(ids)) == BUDGET and not set(ids) & set(a.seed_set["id"])
    assert b.acquisitions["id"].tolist() == ids
    np.testing.assert_array_equal(b.acquisitions["score"].to_numpy(), acq_a["score"].to_numpy())


@pytest.mark.parametrize("name", acq.list_strategies())
def test_every_strategy_runs_through_the_full_loop(name, tiny_cfg, tmp_path):
    _check_picks(_full(tiny_cfg, name, tmp_path / "a"), _full(tiny_cfg, name, tmp_path / "b"))


@pytest.mark.parametrize("name", acq.list_strategies())
def test_every_strategy_runs_through_the_probe_loop(name, caches, tmp_path):
    _check_picks(_probe(caches, name, tmp_path / "a"), _probe(caches, name, tmp_path / "b"))


class _Source:
    """An input source that records what it was asked for."""

    n_classes, memo = 3, None

    def __init__(self):
        self.asked = set()

    def logits(self, candidates):
        self.asked.add("logits")
        return np.zeros((len(candidates), 3))

    def embeddings(self):
        self.asked.add("embeddings")
        return np.zeros((20, 4))

    def logit_samples(self, candidates, rng):
        self.asked.add("logit_samples")
        return np.zeros((2, len(candidates), 3))


@pytest.mark.parametrize("name", acq.list_strategies())
def test_a_strategy_declares_known_inputs_and_gets_exactly_those(name):
    strategy = acq.get_strategy(name)
    assert isinstance(strategy, Strategy) and strategy.name == name and strategy.needs <= INPUT_KINDS
    source = _Source()
    inputs = build_inputs(strategy, source, np.arange(5, 20), np.arange(5), np.random.default_rng(0))
    assert source.asked == strategy.needs and inputs.missing(strategy.needs) == []
    assert acq.needs(name) == strategy.needs
    kind, fn = acq.get_acquisition(name)  # the older interface still answers
    assert callable(fn) and kind in {"probs", "logits", "none", "samples", "embeddings", "gradients"}


# ----------------------------------------------------------------- a new strategy: the decorator only

SEEN: list[StrategyInputs] = []


class _FarthestUncertain(Strategy):
    """Reads every input kind: the k candidates with the largest embedding norm times (1 + the
    spread of the posterior samples) times (1 - top probability), ties broken at random."""

    needs = frozenset({"logits", "embeddings", "logit_samples"})

    def select(self, inputs, k, rng):
        SEEN.append(inputs)
        X = np.asarray(inputs.embeddings[inputs.candidates])
        p = acq.softmax(inputs.logits)
        spread = acq.softmax(inputs.logit_samples).std(axis=0).sum(axis=1)
        score = np.linalg.norm(X, axis=1) * (1 + spread) * (1 - p.max(axis=1)) + 1e-9 * rng.random(len(X))
        order = np.argsort(-score, kind="stable")[:k]
        return inputs.candidates[order], score[order]


def _lowest_first_logit(logits):
    return -logits[:, 0]


@pytest.fixture
def registry(monkeypatch):
    """A copy of the registry, so the strategies a test registers leave with it."""
    monkeypatch.setattr(acq, "STRATEGIES", dict(acq.STRATEGIES))
    return acq.STRATEGIES


def test_a_strategy_registered_by_decorator_runs_in_both_loops(registry, tiny_cfg, caches, tmp_path):
    register_strategy("contract_farthest_uncertain")(_FarthestUncertain)
    register_strategy("contract_lowest_first_logit", reads="logits")(_lowest_first_logit)
    assert {"contract_farthest_uncertain", "contract_lowest_first_logit"} <= set(acq.list_strategies())
    SEEN.clear()
    for name in ("contract_farthest_uncertain", "contract_lowest_first_logit"):
        _check_picks(_full(tiny_cfg, name, tmp_path / f"full-{name}-a"), _full(tiny_cfg, name, tmp_path / f"full-{name}-b"))
        _check_picks(_probe(caches, name, tmp_path / f"probe-{name}-a"), _probe(caches, name, tmp_path / f"probe-{name}-b"))
    # the class strategy got what it declared, shaped as documented: 2 loops x 2 runs x 2 acquiring rounds
    assert len(SEEN) == 8
    for inputs in SEEN:
        n = len(inputs.candidates)
        assert inputs.logits.shape == (n, 2) and inputs.logit_samples.shape[1:] == (n, 2)
        assert inputs.embeddings.shape[0] == TINY_DATA["n_train"] and inputs.n_classes == 2
        assert len(inputs.labelled) in (SEED_SIZE, SEED_SIZE + PER_ROUND)
        assert not set(inputs.candidates) & set(inputs.labelled)


def test_registering_a_name_twice_or_an_unknown_input_is_refused(registry):
    with pytest.raises(ValueError, match="registered twice"):
        register_strategy("badge")(_FarthestUncertain)

    class Odd(Strategy):
        needs = frozenset({"gradients_of_something"})

    with pytest.raises(ValueError, match="not an input kind"):
        register_strategy("contract_odd")(Odd)
    with pytest.raises(ValueError, match="reads"):
        register_strategy("contract_plain")(_lowest_first_logit)
