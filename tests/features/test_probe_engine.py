"""The lockstep probe engine (issue #21): many runs on one pool, each with the record it
writes alone, whatever its batch-mates; resumable from a kill; streamed and float16 pools."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_DATA

from toolkit.config import ALConfig
from toolkit.features.cache import extract_features
from toolkit.features.probe import LinearProbe, ProbeRun, _columns, _logits, run_probe, run_probes

AL = {s: ALConfig(strategy=s, seed_size=10, per_round=5, budget=20) for s in ("least_confidence", "entropy", "random")}


@pytest.fixture(scope="module")
def caches(tiny_backbone, tmp_path_factory):
    root = tmp_path_factory.mktemp("engine")
    kw = dict(weights=str(tiny_backbone), dataset_params={**TINY_DATA, "cache_dir": str(root / "data")},
              root=root / "f", log=None)
    out = {dtype: tuple(extract_features("toy_resnet", "toyworld", s, dtype=dtype, **kw) for s in ("train", "test"))
           for dtype in ("float32", "float16")}
    return out


def _record_files(run_dir: Path) -> dict:
    """Everything a run writes, timings and the run's own paths aside."""
    rounds = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    for r in rounds:
        r.pop("timings")
    state = json.loads((run_dir / "state.json").read_text())
    probe = dict(np.load(sorted((run_dir / "probe_state").glob("*.npz"))[-1]))
    return {"rounds": rounds, "meta": json.loads((run_dir / "meta.json").read_text()), "state": state,
            "coef": probe["coef"].tolist(), "intercept": probe["intercept"].tolist()}


def _assert_same(a: Path, b: Path):
    fa, fb = _record_files(a), _record_files(b)
    for key in fa:
        assert fa[key] == fb[key], f"{a.name}: {key} differs"


SPECS = [("least_confidence", 0, 1.0), ("least_confidence", 1, 1.0), ("entropy", 0, 0.1), ("random", 2, 1.0)]


def test_lockstep_records_equal_solo_records_field_by_field(caches, tmp_path):
    pool, test = caches["float32"]
    solo = {}
    for s, seed, C in SPECS:
        solo[(s, seed, C)] = run_probe(pool, {"test": test}, tmp_path / "solo" / f"{s}-{seed}-{C}", al=AL[s],
                                       seed=seed, C=C).path
    runs = [ProbeRun(tmp_path / "batch" / f"{s}-{seed}-{C}", AL[s], seed, C) for s, seed, C in SPECS]
    recs = run_probes(pool, {"test": test}, runs)
    assert [r.status for r in recs] == ["finished"] * len(SPECS)
    for (key, path), rec in zip(solo.items(), recs):
        _assert_same(path, rec.path)
    # the same run among other batch-mates, at another position in its block, still the same
    mates = [ProbeRun(tmp_path / "mates" / f"m{i}", AL["least_confidence"], seed=10 + i, C=0.5 + i) for i in range(9)]
    target = ProbeRun(tmp_path / "mates" / "target", AL["entropy"], 0, 0.1)
    recs = run_probes(pool, {"test": test}, mates[:5] + [target] + mates[5:])
    _assert_same(solo[("entropy", 0, 0.1)], recs[5].path)


def test_a_runs_scores_do_not_depend_on_the_chunking():
    """What the equality rests on: each run's product uses its own columns only, and a row's
    result does not depend on which rows share its chunk (checked on this machine's BLAS)."""
    g = np.random.default_rng(0)
    X = g.normal(size=(3000, 256)).astype(np.float32)
    col, off = g.normal(size=256).astype(np.float32), np.array([0.3], dtype=np.float32)
    whole = _logits(X, col, off)
    for chunk in (64, 100, 1000):
        parts = np.concatenate([_logits(X[lo:lo + chunk], col, off) for lo in range(0, 3000, chunk)])
        np.testing.assert_array_equal(parts, whole)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_decision_columns_give_the_probes_probabilities(n_classes):
    rng = np.random.default_rng(1)
    X = torch.from_numpy(rng.normal(size=(50, 8)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, n_classes, 50))
    probe = LinearProbe().fit(X, y, n_classes)
    logits = _logits(X.numpy(), *_columns(probe))
    np.testing.assert_allclose(torch.softmax(torch.from_numpy(logits), 1).numpy(),
                               torch.softmax(probe.decision_function(X), 1).numpy(), atol=1e-6)


def test_a_streamed_pool_gives_the_in_memory_records(caches, tmp_path):
    pool, test = caches["float32"]
    runs = lambda d: [ProbeRun(tmp_path / d / f"{s}-{seed}", AL[s], seed) for s, seed, _ in SPECS]
    mem = run_probes(pool, {"test": test}, runs("mem"), score_chunk=64)
    streamed = run_probes(pool, {"test": test}, runs("stream"), score_chunk=64, stream=True)
    for a, b in zip(mem, streamed):
        _assert_same(a.path, b.path)


def test_a_float16_cache_acquires_what_the_float32_cache_does_up_to_ties(caches, tmp_path):
    """float16 embeddings are the float32 ones rounded to 11 bits: the inputs differ, so near-tied
    scores may order differently. The seed set is the same; most acquisitions are too."""
    runs = lambda d: [ProbeRun(tmp_path / d / f"lc-{seed}", AL["least_confidence"], seed) for seed in range(3)]
    full = run_probes(caches["float32"][0], {"test": caches["float32"][1]}, runs("f32"))
    half = run_probes(caches["float16"][0], {"test": caches["float16"][1]}, runs("f16"))
    for a, b in zip(full, half):
        pd.testing.assert_frame_equal(a.seed_set, b.seed_set)
        first_a, first_b = (set(r.acquisitions.query("round == 0")["id"]) for r in (a, b))
        assert len(first_a & first_b) >= 4  # of 5: at most one near-tie swapped in the first round
        overlap = len(set(a.acquisitions["id"]) & set(b.acquisitions["id"])) / len(a.acquisitions)
        assert overlap >= 0.6, overlap
        assert abs(a.rounds["test/accuracy"].iloc[-1] - b.rounds["test/accuracy"].iloc[-1]) <= 0.05


def test_two_runs_may_not_share_a_folder(caches, tmp_path):
    pool, test = caches["float32"]
    with pytest.raises(ValueError, match="share an output folder"):
        run_probes(pool, {"test": test}, [ProbeRun(tmp_path / "x", AL["random"], 0),
                                          ProbeRun(tmp_path / "x", AL["random"], 1)])


SCRIPT = """
import sys
from toolkit.config import ALConfig
from toolkit.features.probe import ProbeRun, run_probes
specs = {specs!r}
run_probes(sys.argv[1], {{'test': sys.argv[2]}}, [ProbeRun(sys.argv[3] + f'/{{s}}-{{seed}}-{{C}}', ALConfig(
    strategy=s, seed_size=10, per_round=5, budget=20), seed, C) for s, seed, C in specs])
"""


@pytest.mark.parametrize("point", ["probe:scored:1", "probe:before_record:2", "record:rounds_written:3"])
def test_lockstep_killed_at_each_stage_resumes_every_run_identically(caches, tmp_path, point):
    """A kill leaves the runs at different rounds (the first run of a step has written, the
    others not); the rerun resumes each from its own round and ends with the solo records."""
    pool, test = caches["float32"]
    script = tmp_path / "lockstep.py"
    script.write_text(SCRIPT.format(specs=SPECS))
    env = {**os.environ, "ALTK_KILL_AT": point}
    proc = subprocess.run([sys.executable, str(script), str(pool), str(test), str(tmp_path / "run")], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 137, proc.stderr[-2000:]
    runs = [ProbeRun(tmp_path / "run" / f"{s}-{seed}-{C}", AL[s], seed, C) for s, seed, C in SPECS]
    recs = run_probes(pool, {"test": test}, runs)
    for (s, seed, C), rec in zip(SPECS, recs):
        solo = run_probe(pool, {"test": test}, tmp_path / "solo" / f"{s}-{seed}-{C}", al=AL[s], seed=seed, C=C)
        _assert_same(solo.path, rec.path)
