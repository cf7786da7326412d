import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_DATA, install_backbone
from sklearn.linear_model import LogisticRegression

from toolkit.analysis import tidy_rounds, upsampling_ratios
from toolkit.config import ALConfig
from toolkit.features.cache import extract_features
from toolkit.features.probe import LinearProbe, run_probe


def test_linear_probe_matches_sklearn():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 10)).astype(np.float32)
    y = (X[:, 0] + 0.5 * rng.normal(size=60) > 0).astype(np.int64) + (X[:, 1] > 1)
    ours = LinearProbe(C=0.5).fit(torch.from_numpy(X), torch.from_numpy(y), 3)
    ref = LogisticRegression(C=0.5, tol=1e-10, max_iter=5000).fit(X, y)
    p_ours = torch.softmax(ours.decision_function(torch.from_numpy(X)), 1).numpy()
    np.testing.assert_allclose(p_ours, ref.predict_proba(X), atol=2e-3)
    warm = LinearProbe(C=0.5).fit(torch.from_numpy(X), torch.from_numpy(y), 3, warm_start=ours)
    np.testing.assert_allclose(warm.coef_.numpy(), ours.coef_.numpy(), atol=1e-3)


@pytest.fixture(scope="module")
def caches(tiny_backbone, tmp_path_factory):
    root = tmp_path_factory.mktemp("feat")
    params = {**TINY_DATA, "cache_dir": str(root / "data")}
    kw = dict(weights=str(tiny_backbone), dataset_params=params, root=root, log=None)
    return (extract_features("toy_resnet", "toyworld", "train", **kw),
            extract_features("toy_resnet", "toyworld", "test", **kw))


AL = ALConfig(strategy="least_confidence", seed_size=10, per_round=5, budget=20)


def _cmp(rec):
    return rec.rounds.drop(columns=[c for c in rec.rounds.columns if c.startswith("time/")]), rec.acquisitions


def test_probe_deterministic_per_seed_and_seed_dependent(caches, tmp_path):
    pool, test = caches
    a = run_probe(pool, {"test": test}, tmp_path / "a", al=AL, seed=0)
    b = run_probe(pool, {"test": test}, tmp_path / "b", al=AL, seed=0)
    c = run_probe(pool, {"test": test}, tmp_path / "c", al=AL, seed=1)
    for x, y in zip(_cmp(a), _cmp(b)):
        pd.testing.assert_frame_equal(x, y)
    assert set(a.acquisitions["id"]) != set(c.acquisitions["id"])
    assert a.rounds["n_labels"].tolist() == [10, 15, 20, 25, 30]


def test_probe_record_read_by_the_same_analyses(caches, tiny_cfg, tmp_path):
    from toolkit.al.loop import run_active_learning

    pool, test = caches
    probe_rec = run_probe(pool, {"test": test}, tmp_path / "probe", al=AL, seed=0)
    full_rec = run_active_learning(tiny_cfg, tmp_path / "full", log=None)
    tidy = tidy_rounds([probe_rec, full_rec])
    assert {"test/worst_group", "test/mismatched", "n_labels"} <= set(tidy.columns)
    assert set(tidy["weights"]) == {"file", str(tiny_cfg.model.weights)}
    ups = upsampling_ratios([probe_rec, full_rec])
    assert set(ups["run"]) == {"probe", "full"} and (ups.groupby("run")["acquired"].sum() > 0).all()


def test_probe_resume_and_errors(caches, tmp_path):
    pool, test = caches
    full = run_probe(pool, {"test": test}, tmp_path / "full", al=AL, seed=2)
    with pytest.raises(ValueError, match="exceeds the pool"):
        run_probe(pool, {"test": test}, tmp_path / "big", al=ALConfig(seed_size=10, budget=10_000))
    assert len(full.acquisitions) == 20
    with pytest.raises(ValueError, match="C .* must be > 0, got -1"):
        run_probe(pool, {"test": test}, tmp_path / "negC", al=AL, C=-1)
    with pytest.raises(ValueError, match="eval split 'test' is the pool's own cache"):
        run_probe(pool, {"test": pool}, tmp_path / "crossed", al=AL)


@pytest.mark.parametrize("killed_after", [1, 2, 4])
def test_probe_killed_after_any_round_resumes_to_the_same_record(caches, tmp_path, killed_after):
    pool, test = caches
    full = run_probe(pool, {"test": test}, tmp_path / "full", al=AL, seed=2)
    run_probe(pool, {"test": test}, tmp_path / "killed", al=AL, seed=2, max_rounds=killed_after)
    resumed = run_probe(pool, {"test": test}, tmp_path / "killed", al=AL, seed=2)
    pd.testing.assert_frame_equal(_cmp(resumed)[0], _cmp(full)[0])
    pd.testing.assert_frame_equal(resumed.acquisitions, full.acquisitions)
    # the warm start was restored, not restarted from zero: the last probe is bit-identical
    last = [np.load(d / "probe_state" / "round_004.npz")["coef"] for d in (tmp_path / "full", tmp_path / "killed")]
    np.testing.assert_array_equal(*last)
    assert [f.name for f in (tmp_path / "killed" / "probe_state").iterdir()] == ["round_004.npz"]


def test_a_kill_between_rounds_and_state_leaves_no_run_stuck(caches, tmp_path):
    import json

    pool, test = caches
    run_probe(pool, {"test": test}, tmp_path / "run", al=AL, seed=0)
    state = tmp_path / "run" / "state.json"
    stuck = {**json.loads(state.read_text()), "status": "running", "completed_rounds": 4}
    state.write_text(json.dumps(stuck))  # what a kill after rounds.jsonl, before state.json, leaves
    run_probe(pool, {"test": test}, tmp_path / "run", al=AL, seed=0)
    assert json.loads(state.read_text())["status"] == "finished"


def test_probe_demo_tiny(tiny_backbone, tmp_path, monkeypatch):

    from toolkit.experiments.probe_demo import run_probe_demo

    monkeypatch.chdir(tmp_path)
    install_backbone(tiny_backbone, tmp_path)
    table = run_probe_demo(seeds=[0, 1], out="out", data={**TINY_DATA, "cache_dir": "cache/toyworld"},
                           al={"seed_size": 10, "per_round": 5, "budget": 15})
    assert "Upsampling ratio" in table and "pretrained" in table
    assert len(list((tmp_path / "out" / "runs").iterdir())) == 8
    assert len(list((tmp_path / "cache" / "features").glob("*.h5"))) == 4  # 2 weights x (pool, test)
