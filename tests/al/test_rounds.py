"""The round skeleton the loops share (toolkit/al/rounds.py): open or resume, the round row,
save then record then clean up, the final repair of state.json."""
import json

import numpy as np
import pandas as pd
import pytest

from toolkit.al import rounds
from toolkit.al.protocol import pool_shares, run_meta
from toolkit.config import ALConfig
from toolkit.record import RunWriter


class _Pool:
    def __init__(self, n=40):
        self.ids = np.arange(100, 100 + n)
        self.labels = np.arange(n) % 2
        self.attributes = pd.DataFrame({"y": self.labels, "a": (np.arange(n) // 2) % 2})
        self.label_column, self.spurious_column, self.group_columns = "y", "a", ()
        self.class_names = ("c0", "c1")
        self.name = "fake"

    def __len__(self):
        return len(self.ids)


def _writer(path):
    return RunWriter(path, {"seed": 0}, {"pool_size": 40})


def _row(r, acquired=(), seed=()):
    return rounds.round_row(r, 4, {"test": {"accuracy": 1.0}}, {"steps": 1}, [{"id": int(i)} for i in acquired],
                            {"train_s": 0.0}, [{"id": int(i)} for i in seed])


def test_round_row_keeps_the_record_order_and_the_seed_set_only_in_round_0():
    row0, row1 = _row(0, [5], [1, 2]), _row(1, [6])
    assert list(row0) == ["round", "n_labels", "metrics", "train", "acquired", "timings", "seed_set"]
    assert "seed_set" not in row1 and row1["round"] == 1 and type(row1["n_labels"]) is int


def test_start_labels_draws_the_seed_set_then_resumes_from_the_record(tmp_path):
    pool, al = _Pool(), ALConfig(seed_size=4, per_round=2, budget=4)
    w = _writer(tmp_path / "run")
    seed = rounds.start_labels(w, pool, al, 3)
    assert len(seed) == 4 and np.array_equal(seed, rounds.start_labels(_writer(tmp_path / "other"), pool, al, 3))
    w.append_round(_row(0, acquired=pool.ids[[7, 9]], seed=pool.ids[seed]), finished=False)
    index = {}
    resumed = rounds.start_labels(_writer(tmp_path / "run"), pool, al, 3, index=index)
    assert resumed.tolist() == [*seed.tolist(), 7, 9] and "id_to_pos" in index


def test_record_round_saves_the_state_before_the_record_and_drops_the_previous_after(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(rounds, "kill_point", lambda name: calls.append(name))
    w = _writer(tmp_path / "run")
    state = lambda i: tmp_path / "run" / "state_dir" / f"{i}.bin"  # noqa: E731

    def save(i):
        calls.append(f"save:{i}:rounds={w.completed_rounds}")
        state(i).parent.mkdir(exist_ok=True)
        state(i).write_text("x")

    for r in range(2):
        rounds.record_round(w, _row(r, seed=[1]), finished=r == 1, stage="probe", save_state=save, state_path=state)
    assert [c for c in calls if not c.startswith("record:")] == [
        "probe:scored:0", "save:0:rounds=0", "probe:before_record:0",
        "probe:scored:1", "save:1:rounds=1", "probe:before_record:1"]
    assert not state(0).exists() and state(1).exists()
    assert json.loads((tmp_path / "run" / "state.json").read_text())["status"] == "finished"


def test_record_round_without_a_stage_or_state_only_appends(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(rounds, "kill_point", lambda name: calls.append(name))
    w = _writer(tmp_path / "run")
    rounds.record_round(w, _row(0, seed=[1]), finished=False)
    assert calls == [] and w.completed_rounds == 1


def test_finish_run_repairs_a_state_left_running_and_leaves_a_partial_run_running(tmp_path):
    w = _writer(tmp_path / "run")
    w.append_round(_row(0, seed=[1]), finished=False)
    assert rounds.finish_run(w, 2).status != "finished"  # one of two rounds: still running
    w.append_round(_row(1), finished=False)  # as a kill between rounds.jsonl and state.json leaves it
    assert rounds.finish_run(w, 2).status == "finished"


def test_resume_state_loads_the_last_completed_round_only_on_a_resume(tmp_path):
    w = _writer(tmp_path / "run")
    assert rounds.resume_state(w, lambda last: pytest.fail("nothing to resume")) is None
    w.append_round(_row(0, seed=[1]), finished=False)
    assert rounds.resume_state(w, lambda last: last) == 0


def test_clean_states_keeps_only_the_last_completed_rounds_state(tmp_path):
    folder = tmp_path / "probe_state"
    folder.mkdir()
    for name in ("round_000.npz", "round_001.npz", ".round_002.tmp.npz"):
        (folder / name).write_text("x")
    rounds.clean_states(folder, keep=folder / "round_000.npz")
    assert sorted(p.name for p in folder.iterdir()) == ["round_000.npz"]
    rounds.clean_states(tmp_path / "missing", keep=tmp_path / "missing" / "x")  # no folder: nothing to do


def test_run_meta_names_the_dataset_of_a_pool_that_does_not_carry_it():
    pool = _Pool()
    meta = run_meta(pool, [2, 2], pool_shares(pool), dataset="from-fingerprint")
    assert meta["dataset"] == "from-fingerprint" and run_meta(pool, [2], None)["dataset"] == "fake"
    assert list(meta) == ["dataset", "pool_size", "class_names", "label_column", "spurious_column",
                          "pool_group_shares", "pool_attribute_shares", "acquisition_sizes"]
