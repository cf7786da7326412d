"""Wide products made exact (issue #32): a run's picks, scores and predictions are those of its
canonical logits, whatever the product's width and the run's column in it, with near-ties built
on purpose; and the lockstep equals solo runs on a pool full of near-ties."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from toolkit.al.acquisition import get_strategy
from toolkit.config import ALConfig
from toolkit.features.cache import FeatureCache
from toolkit.features.probe import ProbeRun, _Exact, _predictions, row_norms, run_probe, run_probes

D, K = 256, 3


def _tied_rows(rng):
    """400 rows and a column w whose logits are far from 0 except: K-1 rows nearly 0 (the most
    uncertain) and rows 7 and 8, tied in exact arithmetic at the K-th place (8 is 7 with 2^-10
    moved between two coordinates where w is 0.5), so only rounding can order them."""
    w = rng.normal(size=D).astype(np.float32)
    w[:2] = 0.5
    X = rng.normal(size=(400, D)).astype(np.float32)
    target = np.where(rng.random(400) < 0.5, -1, 1) * rng.uniform(2, 6, 400)
    target[[3, 5]], target[7] = [0.01, -0.02], 0.3
    X[7, :2] = 1.0
    X[:, 2] = 0.0
    X[:, 2] = ((target - X.astype(np.float64) @ w) / w[2]).astype(np.float32)
    X[8] = X[7]
    X[8, 0], X[8, 1] = 1.0 + 2 ** -10, 1.0 - 2 ** -10
    return X, w


def _picks(X, w, offset, wide_col, strategy, candidates):
    exact = _Exact(wide_col, w, offset, row_norms(X), lambda pos: X[pos])
    from toolkit.al.acquisition import StrategyInputs

    logits = exact.top_k_logits(candidates, K, strategy)
    picks, scores = strategy.select(StrategyInputs(candidates, np.empty(0, np.int64), 2, logits=logits), K, None)
    return picks.tolist(), scores.tolist(), exact.predictions().tolist()


@pytest.mark.parametrize("name", ["least_confidence", "entropy", "margin", "max_logit"])
def test_picks_scores_and_predictions_do_not_depend_on_the_products_width(name):
    rng = np.random.default_rng(0)
    X, w = _tied_rows(rng)
    offset = np.array([0.0], dtype=np.float32)
    strategy, candidates = get_strategy(name), np.arange(400)
    # the reference: canonical logits for every row
    canon = _Exact(X @ w[:, None], w, offset, row_norms(X), lambda pos: X[pos])
    all_logits = canon.canonical(candidates)
    from toolkit.al.acquisition import StrategyInputs

    ref = strategy.select(StrategyInputs(candidates, np.empty(0, np.int64), 2, logits=all_logits), K, None)
    ref = (ref[0].tolist(), ref[1].tolist(), all_logits.argmax(1).tolist())
    if name != "max_logit":  # (max-logit ties every row with a negative logit at 0)
        assert ref[0][:2] == [3, 5] and ref[0][2] in (7, 8)  # the K-th pick is the tie
    seen = set()
    with threadpool_limits(1):
        for width in (1, 2, 7, 20, 64):
            mates = rng.normal(size=(D, width)).astype(np.float32)
            for pos in sorted({0, width // 2, width - 1}):
                cols = mates.copy()
                cols[:, pos] = w
                wide = X @ cols
                seen.add(wide[[7, 8], pos].tobytes())
                assert _picks(X, w, offset, wide[:, pos:pos + 1], strategy, candidates) == ref, (width, pos)
    assert len(seen) > 1, "no width changed the tied rows' products: the test exercised nothing"


def test_an_evaluation_row_on_the_decision_boundary_is_predicted_canonically():
    rng = np.random.default_rng(1)
    X, w = _tied_rows(rng)
    offset = np.array([-0.3], dtype=np.float32)  # row 7 (and 8) now sit on the boundary
    ref = None
    with threadpool_limits(1):
        for width in (1, 5, 33):
            cols = rng.normal(size=(D, width)).astype(np.float32)
            cols[:, width - 1] = w
            exact = _Exact((X @ cols)[:, width - 1:], w, offset, row_norms(X), lambda pos: X[pos])
            pred = exact.predictions()
            np.testing.assert_array_equal(pred, exact.canonical(np.arange(400)).argmax(1))
            ref = pred if ref is None else ref
            np.testing.assert_array_equal(pred, ref)


def test_predictions_of_many_runs_at_once_are_each_runs_own():
    """`_predictions` (a lockstep's runs tested together) gives each run's `_Exact.predictions`,
    boundary rows, NaN rows and multi-class runs among them."""
    rng = np.random.default_rng(2)
    X, w = _tied_rows(rng)
    X[11] = np.nan
    norms = row_norms(X)
    exacts = []
    for j, offset in enumerate((-0.3, 0.0, 0.7, -0.3)):
        col = w if j != 2 else rng.normal(size=(D, 3)).astype(np.float32)
        off = np.array([offset] * (1 if col.ndim == 1 else 3), dtype=np.float32)
        exacts.append(_Exact((X @ col.reshape(D, -1)), col, off, norms, lambda pos: X[pos]))
    got = _predictions(exacts)
    for j, exact in enumerate(exacts):
        np.testing.assert_array_equal(got[:, j], exact.predictions())
    assert got[11, 0] == 1 and len(set(got[:, 2])) > 1


def _twin_caches():
    """A synthetic pool in which every row has a twin (an exact copy, or a copy moved by one
    float32 ulp), so every round's k-th pick is a near-tie; and a held-out test set."""
    rng = np.random.default_rng(0)

    def cache(n, offset, twins):
        y = (rng.random(n) < 0.4).astype(np.int64)
        place = np.where(rng.random(n) < 0.9, y, 1 - y)
        X = (rng.normal(size=(n, 48)) + 0.6 * np.outer(2 * y - 1, np.ones(48)) / 7).astype(np.float32)
        if twins:
            X[1::2] = X[::2]
            X[1::4] = np.nextafter(X[1::4], np.float32(np.inf))
            y[1::2], place[1::2] = y[::2], place[::2]
        attrs = pd.DataFrame({"y": y, "place": place}, index=pd.Index(np.arange(n) + offset, name="id"))
        fp = {"model": "synthetic", "weights": "pretrained:twins", "layer": "penultimate", "dataset": "twins",
              "dataset_params": {}, "split": "train" if twins else "test", "transform": "none"}
        return FeatureCache(Path("<memory>"), fp, attrs.index.to_numpy(), X, attrs, "y", "place",
                            ("a", "b"))
    return cache(400, 0, True), cache(300, 10_000, False)


def _files(run_dir: Path) -> dict:
    rounds = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    for r in rounds:
        r.pop("timings")
    probe = dict(np.load(sorted((run_dir / "probe_state").glob("*.npz"))[-1]))
    return {"rounds": rounds, "state": json.loads((run_dir / "state.json").read_text()),
            **{k: v.tolist() for k, v in probe.items()}}


def test_lockstep_equals_solo_on_a_pool_of_near_ties(tmp_path):
    pool, test = _twin_caches()
    al = {s: ALConfig(strategy=s, seed_size=10, per_round=5, budget=25)
          for s in ("least_confidence", "entropy", "margin", "random")}
    specs = [("least_confidence", 0, 1.0), ("entropy", 1, 0.3), ("margin", 2, 3.0), ("random", 0, 1.0)]
    solo = [run_probe(pool, {"test": test}, tmp_path / "solo" / f"{s}-{seed}", al=al[s], seed=seed, C=C).path
            for s, seed, C in specs]
    mates = [ProbeRun(tmp_path / "mates" / f"m{i}", al["least_confidence"], seed=20 + i, C=0.2 * (i + 1))
             for i in range(11)]
    for order in (0, 4, 11):  # the runs at the front, among, and behind their batch-mates
        runs = [ProbeRun(tmp_path / f"batch{order}" / f"{s}-{seed}", al[s], seed, C) for s, seed, C in specs]
        batch = mates[:order] + runs + mates[order:]
        batch = [ProbeRun(tmp_path / f"batch{order}" / Path(r.out_dir).name, r.al, r.seed, r.C) for r in batch]
        recs = run_probes(pool, {"test": test}, batch)
        for path, rec in zip(solo, recs[order:order + len(specs)]):
            assert _files(path) == _files(rec.path), rec.path.name


def test_lockstep_equals_solo_with_three_classes(tmp_path):
    """Multi-class runs (one column per class in the wide product) keep their solo records."""
    rng = np.random.default_rng(3)

    def cache(n, offset, split):
        y = rng.integers(0, 3, n)
        place = np.where(rng.random(n) < 0.8, y % 2, 1 - y % 2)
        X = (rng.normal(size=(n, 40)) + 0.8 * np.eye(3, 40)[y]).astype(np.float32)
        attrs = pd.DataFrame({"y": y, "place": place}, index=pd.Index(np.arange(n) + offset, name="id"))
        fp = {"model": "synthetic", "weights": "pretrained:three", "layer": "penultimate", "dataset": "three",
              "dataset_params": {}, "split": split, "transform": "none"}
        return FeatureCache(Path("<memory>"), fp, attrs.index.to_numpy(), X, attrs, "y", "place", ("a", "b", "c"))

    pool, test = cache(300, 0, "train"), cache(200, 10_000, "test")
    al = {s: ALConfig(strategy=s, seed_size=12, per_round=4, budget=16) for s in ("entropy", "margin", "bald")}
    specs = [("entropy", 0), ("margin", 1), ("bald", 2)]
    solo = [run_probe(pool, {"test": test}, tmp_path / "solo" / f"{s}", al=al[s], seed=seed).path for s, seed in specs]
    mates = [ProbeRun(tmp_path / "batch" / f"m{i}", al["entropy"], seed=5 + i, C=0.5) for i in range(3)]
    runs = [ProbeRun(tmp_path / "batch" / s, al[s], seed) for s, seed in specs]
    recs = run_probes(pool, {"test": test}, mates[:2] + runs + mates[2:])
    for path, rec in zip(solo, recs[2:5]):
        assert rec.status == "finished" and _files(path) == _files(rec.path), rec.path.name


def test_wide_products_in_torch_on_a_device_give_the_numpy_records(tmp_path):
    """`device=`: the pool's and the test split's wide products in torch (here on the CPU: another
    kernel, whose float32 products differ from numpy's in the last bits) give the same records,
    near-ties included; a GPU runs the same code with its own kernel."""
    import torch

    pool, test = _twin_caches()
    al = {s: ALConfig(strategy=s, seed_size=10, per_round=5, budget=25)
          for s in ("least_confidence", "entropy", "margin", "random")}
    specs = [("least_confidence", 0, 1.0), ("entropy", 1, 0.3), ("margin", 2, 3.0), ("random", 0, 1.0)]
    runs = lambda d: [ProbeRun(tmp_path / d / f"{s}-{seed}", al[s], seed, C) for s, seed, C in specs]  # noqa: E731
    numpy_recs = run_probes(pool, {"test": test}, runs("numpy"))
    torch_recs = run_probes(pool, {"test": test}, runs("torch"), device="cpu")
    for a, b in zip(numpy_recs, torch_recs):
        assert _files(a.path) == _files(b.path), b.path.name
    X, W = np.asarray(pool.embeddings), np.random.default_rng(0).normal(size=(48, 4)).astype(np.float32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as run_probes computes
    try:
        with threadpool_limits(1):
            differ = (X @ W != (torch.from_numpy(X) @ torch.from_numpy(W)).numpy()).any()
    finally:
        torch.set_num_threads(threads)
    assert differ, "numpy's and torch's products agreed to the last bit: the test exercised nothing"


@pytest.mark.parametrize("device", ["nonsense", "cuda:99"])
def test_an_unusable_device_is_refused_by_name_before_any_run_folder(tmp_path, device):
    import torch

    from toolkit.errors import ConfigError

    if device.startswith("cuda") and torch.cuda.device_count() > 99:
        pytest.skip("this machine has a cuda:99")
    pool, test = _twin_caches()
    al = ALConfig(strategy="least_confidence", seed_size=10, per_round=5, budget=10)
    with pytest.raises(ConfigError, match=f"device '{device}' is not usable here"):
        run_probes(pool, {"test": test}, [ProbeRun(tmp_path / "run", al, 0)], device=device)
    assert not (tmp_path / "run").exists()
