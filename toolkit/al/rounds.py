"""The round skeleton every loop shares: the full loop, the probe loop and select-then-finetune.

A run opens its record (or resumes it), runs rounds, writes each round's row in the same
shape, commits it in the same order (the state the next round starts from, then the record,
then the previous round's state removed) and ends with the same repair of state.json. The
loops differ only in how a round trains, evaluates and selects.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from toolkit._util.faults import kill_point
from toolkit._util.repro import round_rng
from toolkit.al.protocol import draw_seed_set
from toolkit.config import ALConfig
from toolkit.record import RunRecord, RunWriter, load_run


def start_labels(writer: RunWriter, pool, al: ALConfig, seed: int, *, index: dict | None = None) -> np.ndarray:
    """The labelled positions a run starts its next round with: on a resume, the seed set and
    acquisitions its record holds (in acquisition order); else the seed set drawn for round 0.

    `index`: a dict the caller keeps across runs on one pool; the id -> position map of the
    pool is built into it once (under "id_to_pos"), on the first resume that needs it."""
    if not writer.completed_rounds:
        return draw_seed_set(pool.labels, al.seed_size, al.seed_set, round_rng(seed, 0, stream=1))
    index = {} if index is None else index
    if "id_to_pos" not in index:
        index["id_to_pos"] = {int(i): p for p, i in enumerate(pool.ids)}
    id_to_pos = index["id_to_pos"]
    return np.array([id_to_pos[i] for i in writer.labelled_ids()], dtype=np.int64)


def resume_state(writer: RunWriter, load: Callable[[int], object]):
    """What the run's last completed round left for the next (`load(round)`), or None on a fresh start."""
    return load(writer.completed_rounds - 1) if writer.completed_rounds else None


def round_row(r: int, n_labels: int, metrics: dict, train: dict, acquired: list[dict], timings: dict,
              seed_rows: list[dict]) -> dict:
    """One round's record row: `n_labels` labels trained on, what it acquired; round 0 also holds the seed set."""
    row = {"round": r, "n_labels": int(n_labels), "metrics": metrics, "train": train, "acquired": acquired,
           "timings": timings}
    if r == 0:
        row["seed_set"] = seed_rows
    return row


def record_round(writer: RunWriter, row: dict, *, finished: bool, stage: str | None = None,
                 save_state: Callable[[int], None] | None = None,
                 state_path: Callable[[int], Path] | None = None, status_file: bool = True) -> None:
    """Commit one round: the state the next round starts from (`save_state(round)`), then the
    record's row, then the previous round's state removed (`state_path(round - 1)`). A kill
    between any two leaves a run that resumes to the same record.

    `stage` names the kill points around the state: "<stage>:scored:<round>" before it is
    saved, "<stage>:before_record:<round>" after (None: no kill points). `status_file=False`:
    state.json is not rewritten after this round (`RunWriter.append_round`)."""
    r = row["round"]
    if stage:
        kill_point(f"{stage}:scored:{r}")
    if save_state is not None:  # before the round's record: a resume reads the state its last round left
        save_state(r)
    if stage:
        kill_point(f"{stage}:before_record:{r}")
    writer.append_round(row, finished=finished, state=status_file)
    if state_path is not None:
        state_path(r - 1).unlink(missing_ok=True)


def clean_states(folder: Path, keep: Path) -> None:
    """Remove what a kill left in a state folder: temporary files, and states of rounds other
    than `keep` (a kill between a round's state and its record leaves one ahead)."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if path.name.startswith(".") or path != keep:
            path.unlink(missing_ok=True)


def finish_run(writer: RunWriter, n_rounds: int) -> RunRecord:
    """The run's record as `load_run` reads it; once all `n_rounds` are on disk, state.json is
    written "finished" again (it repairs a state.json that a kill left behind)."""
    if writer.completed_rounds == n_rounds:
        writer.write_state(finished=True)
    return load_run(writer.dir)
