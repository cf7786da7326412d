"""Fewer writes per round (issue #32): a round appends one line to rounds.jsonl; state.json and
the probe state are written only at a run's first round and when it stops; a torn append is not
a round."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from toolkit.config import ALConfig
from toolkit.features.cache import FeatureCache
from toolkit.features.probe import ProbeRun, run_probe, run_probes
from toolkit.record import RunWriter, load_run

AL = ALConfig(strategy="least_confidence", seed_size=10, per_round=5, budget=25)


def _caches():
    rng = np.random.default_rng(0)

    def cache(n, offset, split):
        y = (rng.random(n) < 0.4).astype(np.int64)
        place = np.where(rng.random(n) < 0.9, y, 1 - y)
        X = (rng.normal(size=(n, 32)) + 0.5 * (2 * y - 1)[:, None]).astype(np.float32)
        attrs = pd.DataFrame({"y": y, "place": place}, index=pd.Index(np.arange(n) + offset, name="id"))
        fp = {"model": "synthetic", "weights": "pretrained:w", "layer": "penultimate", "dataset": "writes",
              "dataset_params": {}, "split": split, "transform": "none"}
        return FeatureCache(Path("<memory>"), fp, attrs.index.to_numpy(), X, attrs, "y", "place", ("a", "b"))
    return cache(200, 0, "train"), cache(100, 10_000, "test")


def _without_timings(rec):
    return rec.rounds.drop(columns=[c for c in rec.rounds.columns if c.startswith("time/")]), rec.acquisitions


def test_the_probe_state_is_written_only_when_a_run_stops(tmp_path, monkeypatch):
    import toolkit.features.probe as probe

    saved = []
    original = probe.save_probe_state
    monkeypatch.setattr(probe, "save_probe_state", lambda p, d, i: (saved.append(i), original(p, d, i)))
    pool, test = _caches()
    run_probe(pool, {"test": test}, tmp_path / "run", al=AL, seed=0, max_rounds=3)
    run_probe(pool, {"test": test}, tmp_path / "run", al=AL, seed=0)
    assert saved == [2, 5]  # the stop after round 2 (max_rounds), the finish after round 5
    assert [p.name for p in (tmp_path / "run" / "probe_state").iterdir()] == ["round_005.npz"]


def test_state_json_is_written_at_the_first_round_and_when_a_run_stops(tmp_path, monkeypatch):
    import toolkit.record as record

    written = []
    original = record.RunWriter.write_state
    monkeypatch.setattr(record.RunWriter, "write_state",
                        lambda self, finished: (written.append((len(self.rounds), finished)), original(self, finished=finished)))
    pool, test = _caches()
    run_probe(pool, {"test": test}, tmp_path / "run", al=AL, seed=0, max_rounds=3)
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["status"] == "running" and state["completed_rounds"] == 3 and len(state["labelled_ids"]) == 25
    assert load_run(tmp_path / "run").status == "running"
    run_probe(pool, {"test": test}, tmp_path / "run", al=AL, seed=0)
    # round 0; the stop after round 2; the finish after round 5 (and finish_run's repair pass)
    assert written == [(1, False), (3, False), (6, True), (6, True)]
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["status"] == "finished" and len(state["labelled_ids"]) == 35


def test_a_torn_append_is_not_a_round_and_a_resume_cuts_it(tmp_path):
    pool, test = _caches()
    full = run_probe(pool, {"test": test}, tmp_path / "full", al=AL, seed=1)
    run_probe(pool, {"test": test}, tmp_path / "run", al=AL, seed=1, max_rounds=2)
    path = tmp_path / "run" / "rounds.jsonl"
    with open(path, "a") as f:
        f.write('{"round": 2, "n_labels": 2')  # what a kill inside the next append could leave
    rec = load_run(tmp_path / "run")
    assert rec.rounds["round"].tolist() == [0, 1] and rec.status == "running"
    resumed = run_probe(pool, {"test": test}, tmp_path / "run", al=AL, seed=1)
    for a, b in zip(_without_timings(resumed), _without_timings(full)):
        pd.testing.assert_frame_equal(a, b)
    assert path.read_text().endswith("}\n") and len(path.read_text().splitlines()) == 6


def test_a_writer_reopened_after_a_torn_append_keeps_its_complete_rounds(tmp_path):
    w = RunWriter(tmp_path / "run", {"seed": 0}, {})
    w.append_round({"round": 0, "n_labels": 1, "metrics": {}, "acquired": [], "seed_set": []}, finished=False)
    with open(tmp_path / "run" / "rounds.jsonl", "a") as f:
        f.write('{"round": 1, "n_lab')
    again = RunWriter(tmp_path / "run", {"seed": 0}, {})
    assert again.completed_rounds == 1
    again.append_round({"round": 1, "n_labels": 2, "metrics": {}, "acquired": []}, finished=True)
    assert [json.loads(line)["round"] for line in (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()] == [0, 1]
    assert load_run(tmp_path / "run").status == "finished"


SCRIPT = """
import sys, pickle
from toolkit.features.probe import ProbeRun, run_probes
pool, test, runs = pickle.load(open(sys.argv[1], "rb"))
run_probes(pool, {"test": test}, runs)
"""


@pytest.mark.parametrize("point,left", [("probe:scored:0", 0), ("record:rounds_written:3", 0),
                                        ("probe:before_record:5", 1)])
def test_a_killed_lockstep_refits_and_resumes_every_run_identically(tmp_path, point, left):
    """Killed before any run stopped (no probe state exists), or between the first run's last
    state and its record (a state ahead of the record, removed on resuming): the rerun refits
    each run's completed rounds and ends with the records and final probe states of runs never
    interrupted."""
    import pickle

    pool, test = _caches()
    specs = [(AL, 0, 1.0), (ALConfig(strategy="entropy", seed_size=10, per_round=5, budget=25), 1, 0.3),
             (ALConfig(strategy="random", seed_size=10, per_round=5, budget=25), 2, 1.0)]
    runs = [ProbeRun(tmp_path / "run" / str(i), al, seed, C) for i, (al, seed, C) in enumerate(specs)]
    (tmp_path / "in.pkl").write_bytes(pickle.dumps((pool, test, runs)))
    (tmp_path / "s.py").write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(tmp_path / "s.py"), str(tmp_path / "in.pkl")], capture_output=True,
                          text=True, env={**os.environ, "ALTK_KILL_AT": point})
    assert proc.returncode == 137, proc.stderr[-2000:]
    assert len(list((tmp_path / "run").rglob("*.npz"))) == left
    recs = run_probes(pool, {"test": test}, runs)
    for i, (al, seed, C) in enumerate(specs):
        solo = run_probe(pool, {"test": test}, tmp_path / "solo" / str(i), al=al, seed=seed, C=C)
        for a, b in zip(_without_timings(recs[i]), _without_timings(solo)):
            pd.testing.assert_frame_equal(a, b)
        states = [dict(np.load(p / "probe_state" / "round_005.npz")) for p in (recs[i].path, solo.path)]
        assert all(np.array_equal(states[0][k], states[1][k]) for k in ("coef", "intercept", "dual", "beta"))


def test_headers_read_and_written_with_libyaml_are_the_pure_python_ones(tmp_path):
    """A run header written by `dump_yaml` and read by `load_yaml` (libyaml where present) is the
    text yaml.safe_dump writes and the objects yaml.safe_load reads."""
    import yaml

    from toolkit.record import dump_yaml, load_yaml

    pool, test = _caches()
    rec = run_probe(pool, {"test": test}, tmp_path / "run", al=AL, seed=0, max_rounds=1)
    text = (rec.path / "config.yaml").read_text()
    assert load_yaml(text) == yaml.safe_load(text) and load_yaml(text)["config"]["probe"] == {"C": 1.0}
    assert text == dump_yaml(yaml.safe_load(text)) == yaml.safe_dump(yaml.safe_load(text), sort_keys=False)
    odd = "a: 1e3\nb: 0x1F\nc: yes\nd: ~\ne: '007'\nf: [1.5, .inf, -.nan]\ng: 2026-12-07\n"
    assert repr(load_yaml(odd)) == repr(yaml.safe_load(odd))
