"""The run record: one directory per run, written atomically round by round.

Layout:
    config.yaml    resolved config + toolkit version + git commit (written once)
    meta.json      dataset facts the analyses need (pool size, pool group shares, class names)
    rounds.jsonl   one JSON object per completed round (one line appended per round)
    state.json     the run's status, with its completed rounds and labelled ids when written:
                   after every round of the full loop; at a probe run's first round and
                   whenever it stops (resuming reads rounds.jsonl, the record itself)
    pool_outputs/  optional (al.save_pool_outputs): round_NNN.h5 with the ids, scores and
                   logits of every candidate scored after that round
    checkpoints/   optional (checkpoint_rounds): round_NNN.safetensors, the model as
                   finetuned in that round

Every file is replaced with os.replace from a temporary file, so a killed process
leaves either the previous complete version or the new one, never half a file; rounds.jsonl
is the exception: a round is one line appended with one write (rewriting the whole file every
round cost the probe engine a rename per run per round), and a line counts once its newline is
on disk. A kill inside that write leaves at most an unterminated tail, which readers ignore and
a resume cuts off. The full loop and the probe-only loop write the same format; `load_run`
reads both.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pandas as pd
import yaml

from toolkit._util.atomic import atomic_path
from toolkit._util.faults import kill_point
from toolkit._util.version import __version__, git_commit
from toolkit.errors import MissingFileError, RecordError

TIMING_PREFIX = "time/"


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` atomically: a killed process leaves the old or the new file
    (`toolkit._util.atomic.atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_derived(path: Path, text: str) -> None:
    """Replace a file that is derived from others (state.json, rebuilt from rounds.jsonl): the
    new text is written beside it, the old file removed, the new one renamed in. On ext4 a
    rename over an existing file forces the new file's data to disk first (auto_da_alloc),
    about 4 ms here, once per run per round; removing the old file first avoids that. A kill
    between the two leaves the file missing, which `load_run` explains and any rerun rewrites."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
        path.unlink(missing_ok=True)


def committed_lines(path: Path) -> list[str]:
    """The complete lines of an append-only file (rounds.jsonl): a kill inside an append leaves
    at most an unterminated tail, which is not a committed line."""
    text = path.read_text() if path.exists() else ""
    return [line for line in text[:text.rfind("\n") + 1].splitlines() if line.strip()]


def append_line(path: Path, line: str) -> None:
    """Append one line (it ends with a newline) with one write call, not a rewrite of the file."""
    data = line.encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)


_ABSENT = object()


def config_diff(saved: dict, requested: dict, defaults: dict | None = None) -> list[str]:
    """Fields where a saved run config and a requested one differ (see `_diff`)."""
    return _diff(saved, requested, defaults)


def _diff(a, b, defaults=None, prefix: str = "") -> list[str]:
    """Fields where saved config `a` and new config `b` differ. A field that `a` lacks
    matches when `b` holds its default: options added in a later toolkit version default
    to the old behaviour, so older runs still resume."""
    if isinstance(a, dict) and isinstance(b, dict):
        defaults = defaults if isinstance(defaults, dict) else {}
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in a and k in defaults and b.get(k) == defaults[k]:
                continue
            out += _diff(a.get(k, _ABSENT), b.get(k, _ABSENT), defaults.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def changed_inputs(recorded: dict, current: dict) -> list[str]:
    """The input digests (keys such as "weights", "data:train", "pool") that both dicts hold
    and that differ: what changed since the run was started."""
    return [k for k in sorted(set(recorded) & set(current)) if recorded[k] != current[k]]


def recorded_digests(run_dir: str | Path) -> dict:
    """The input digests in a run's header; {} for a run that records none, and for a start
    without a completed round (its next start takes the folder over: nothing is reused)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists() or not committed_lines(run_dir / "rounds.jsonl"):
        return {}
    return dict(_read_header(run_dir / "config.yaml").get("digests") or {})


def check_inputs_unchanged(run_dir: str | Path, current: dict) -> None:
    """Refuse to reuse or resume a run whose recorded input digests differ from `current`
    (the RecordError a resume gets): its rounds answer for the old inputs, not these."""
    _refuse_changed_inputs(Path(run_dir), recorded_digests(run_dir), current)


def _refuse_changed_inputs(run_dir: Path, was: dict, now: dict) -> None:
    changed = changed_inputs(was, now)
    if changed:
        raise RecordError(
            f"{run_dir} holds a run started on other inputs: {', '.join(changed)} changed since "
            f"(digest {', '.join(f'{was[k]} -> {now[k]}' for k in changed)}). Resuming it would mix the "
            f"two in one record, and reusing it would report the old inputs' results as the new ones'; start it in "
            f"a new output directory (or restore the old inputs).")


class RunWriter:
    """Creates a run directory, or reopens one with the same config to resume it."""

    def __init__(self, run_dir: str | Path, config: dict, meta: dict, *, defaults: dict | None = None,
                 digests: dict | None = None) -> None:
        """`digests`: content digests of what the run reads (data, weights, caches); stored in
        the header, and a resume whose digests differ is refused: its rounds would mix the
        old inputs with the new."""
        self.dir = Path(run_dir)
        cfg_path = self.dir / "config.yaml"
        rounds_path = self.dir / "rounds.jsonl"
        if cfg_path.exists() and not committed_lines(rounds_path):
            # a start that failed before its first round (bad weights, an impossible seed set):
            # nothing to keep, so the corrected command takes the directory over
            for stub in (cfg_path, self.dir / "meta.json", self.dir / "state.json", rounds_path):
                stub.unlink(missing_ok=True)
        if cfg_path.exists():
            for leftover in self.dir.glob(".*.tmp*"):  # a kill inside an atomic write left it; never read
                leftover.unlink(missing_ok=True)
            saved = _read_header(cfg_path)
            differ = _diff(saved.get("config", {}), config, defaults)
            if differ:
                raise RecordError(
                    f"{self.dir} already holds a run with a different config (fields differ: "
                    f"{', '.join(differ)}). Resume with the same config, or choose another output directory."
                )
            _refuse_changed_inputs(self.dir, saved.get("digests") or {}, digests or {})
            lines = committed_lines(rounds_path)
            self.rounds = [_parse_round(line, rounds_path, i) for i, line in enumerate(lines, 1)]
            if rounds_path.exists() and rounds_path.stat().st_size != sum(len(x.encode()) + 1 for x in lines):
                write_atomic(rounds_path, "".join(x + "\n" for x in lines))  # cut a torn tail (or blank lines)
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            header = {"toolkit_version": __version__, "git_commit": git_commit(Path(__file__).parent),
                      "config": config, **({"digests": digests} if digests else {})}
            write_atomic(self.dir / "meta.json", json.dumps(meta, indent=1))
            write_atomic(cfg_path, dump_yaml(header))
            self.rounds = []

    @property
    def completed_rounds(self) -> int:
        return len(self.rounds)

    def labelled_ids(self) -> list[int]:
        """Seed set plus everything acquired in completed rounds, in acquisition order."""
        if not self.rounds:
            return []
        ids = [s["id"] for s in self.rounds[0]["seed_set"]]
        for row in self.rounds:
            ids += [a["id"] for a in row["acquired"]]
        return ids

    def append_round(self, row: dict, *, finished: bool, state: bool = True) -> None:
        """Append the round's line, then rewrite state.json (`state=False`: not this round; the
        probe engine writes it at a run's first round and when the run stops)."""
        self.rounds.append(row)
        append_line(self.dir / "rounds.jsonl", json.dumps(row) + "\n")
        kill_point(f"record:rounds_written:{len(self.rounds) - 1}")  # before state.json: the two-file gap
        if state or finished:
            self.write_state(finished=finished)

    def write_state(self, *, finished: bool) -> None:
        """state.json from the rounds on disk: the loops call it again after their last round,
        so a kill between rounds.jsonl and state.json cannot leave a finished run "running"."""
        state = {"completed_rounds": len(self.rounds), "status": "finished" if finished else "running",
                 "labelled_ids": self.labelled_ids(),
                 "rng": "numpy default_rng([seed, round, stream]): derived per round, nothing to save"}
        write_derived(self.dir / "state.json", json.dumps(state))


class PoolOutputWriter:
    """One round's candidate ids, scores and logits, streamed chunk by chunk into
    `<run>/pool_outputs/round_NNN.h5`; the file appears (renamed from .partial) only
    when complete, so a killed run leaves no half-written round."""

    def __init__(self, run_dir: str | Path, round_index: int, n: int, num_classes: int) -> None:
        import h5py

        self.path = Path(run_dir) / "pool_outputs" / f"round_{round_index:03d}.h5"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.file = h5py.File(self.partial, "w")
        chunk = max(1, min(n, 4096))
        self.ids = self.file.create_dataset("ids", (n,), "int64")
        self.scores = self.file.create_dataset("scores", (n,), "float32")
        self.logits = self.file.create_dataset("logits", (n, num_classes), "float16", chunks=(chunk, num_classes))
        self.n, self.written = n, 0

    def write(self, ids, scores, logits) -> None:
        i, j = self.written, self.written + len(ids)
        self.ids[i:j], self.scores[i:j], self.logits[i:j] = ids, scores, logits
        self.written = j

    def close(self) -> Path:
        self.file.close()
        if self.written != self.n:
            self.partial.unlink()
            raise RuntimeError(f"pool outputs for {self.path.name}: {self.written} of {self.n} rows written")
        os.replace(self.partial, self.path)
        return self.path


@dataclass
class RunRecord:
    """A finished or partial run, read from disk by `load_run` (which builds it; the fields
    below are its arguments and stay its attributes).

    Args:
        path: the run directory; its name is the run's `name`.
        config: the header of config.yaml: the resolved config under "config" (see
            `run_config`), with the toolkit version, git commit and input digests.
        meta: dataset facts from meta.json (pool size, "pool_group_shares", class names).
        rounds: one row per round: round, n_labels, every metric as "<split>/<metric>"
            (e.g. "test/worst_group"), timings as "time/<stage>" and "train/<field>".
        acquisitions: one row per acquired example (seed set excluded), in acquisition
            order: id, round (the round after which it was acquired), and what the loop
            recorded with it (score, label, spurious, group).
        seed_set: the seed set's rows, in the same columns (no round).
        status: "finished", or "running" for a partial run (killed, or still going).

    Attributes:
        name: the run directory's name.
        run_config: the resolved config (a plain dict).
        mode: "full" (finetuning every round), "probe" (a linear probe on cached features)
            or "select_then_finetune".
        model: the model name (`config.model.name`).
        weights: "pretrained", "random", or the weights path or id the run started from.
        strategy: the acquisition strategy (`config.al.strategy`).
        seed: the run's seed.
        dataset: the dataset name (`config.data.name`).
        data_params: the dataset's options (`config.data.params`).

    Examples:
        The loops write records; here eight are written by hand with `RunWriter`, for a
        made-up task "t0": pretrained and unpretrained ("random") backbones, least-confidence
        and random acquisition, seeds 0 and 1. The analyses' examples read them.

        >>> import toolkit
        >>> from toolkit.record import RunWriter
        >>> shares = {"y0_s0": 0.7, "y0_s1": 0.05, "y1_s0": 0.05, "y1_s1": 0.2}  # pool share per group
        >>> def write(weights, strategy, seed, curve, groups):
        ...     config = {"model": {"name": "toy_resnet", "weights": weights}, "al": {"strategy": strategy},
        ...               "data": {"name": "toyworld"}, "seed": seed}
        ...     run = RunWriter(f"altk-doc/tasks/t0/{weights}-{strategy}-s{seed}", config,
        ...                     {"pool_group_shares": shares})
        ...     for r, value in enumerate(curve):  # 10 labels, then 4 more after each round
        ...         run.append_round({"round": r, "n_labels": 10 + 4 * r,
        ...                           "metrics": {"test": {"worst_group": value, "accuracy": 0.8}},
        ...                           "acquired": [{"id": 4 * r + i, "group": g} for i, g in
        ...                                        enumerate(groups[4 * r:4 * r + 4])],
        ...                           "seed_set": [{"id": 99, "group": "y0_s0"}]}, finished=r == len(curve) - 1)
        >>> mismatched, matched = ["y0_s1", "y1_s0"] * 4, ["y0_s0", "y1_s1"] * 4
        >>> for seed, last in ((0, 0.6), (1, 0.7)):
        ...     write("pretrained", "least_confidence", seed, [0.2, 0.5, last], mismatched)
        ...     write("pretrained", "random", seed, [0.2, 0.3, 0.4], matched)
        ...     write("random", "least_confidence", seed, [0.1, 0.2, 0.2], matched)
        ...     write("random", "random", seed, [0.1, 0.15, 0.2], matched)
        >>> rec = toolkit.load_run("altk-doc/tasks/t0/pretrained-least_confidence-s0")
        >>> rec.name, rec.status, rec.weights, rec.strategy, rec.seed, rec.mode
        ('pretrained-least_confidence-s0', 'finished', 'pretrained', 'least_confidence', 0, 'full')
        >>> rec.rounds
           round  n_labels  test/worst_group  test/accuracy
        0      0        10               0.2            0.8
        1      1        14               0.5            0.8
        2      2        18               0.6            0.8
        >>> rec.acquisitions.groupby("round")["group"].apply(list).tolist(), len(rec.seed_set)
        ([['y0_s1', 'y1_s0', 'y0_s1', 'y1_s0'], ['y0_s1', 'y1_s0', 'y0_s1', 'y1_s0']], 1)
    """

    path: Path
    config: dict
    meta: dict
    rounds: pd.DataFrame
    acquisitions: pd.DataFrame
    seed_set: pd.DataFrame
    status: str

    @property
    def name(self) -> str:
        return self.path.name

    # Typed accessors: the resolved config is stored under config["config"], in one of two
    # shapes (full runs: RunConfig.to_dict(); probe runs: mode "probe" with the caches).
    @property
    def run_config(self) -> dict:
        """The resolved config the run was made with (a plain dict)."""
        return self.config["config"]

    @property
    def mode(self) -> str:
        """"full" (finetuning every round) or "probe" (a linear probe on cached features)."""
        return self.run_config.get("mode", "full")

    @property
    def model(self) -> str:
        return self.run_config["model"]["name"]

    @property
    def weights(self) -> str:
        """"pretrained", "random", or the weights path or id the run started from."""
        return str(self.run_config["model"]["weights"])

    @property
    def strategy(self) -> str:
        return self.run_config["al"]["strategy"]

    @property
    def seed(self) -> int:
        return int(self.run_config["seed"])

    @property
    def dataset(self) -> str:
        return self.run_config["data"]["name"]

    @property
    def data_params(self) -> dict:
        return dict(self.run_config["data"].get("params") or {})

    def checkpoints(self) -> dict[int, Path]:
        """Round -> saved finetuned model (runs made with `checkpoint_rounds`)."""
        folder = self.path / "checkpoints"
        return {int(p.stem.split("_")[1]): p for p in sorted(folder.glob("round_*.safetensors"))} if folder.is_dir() else {}

    def pool_outputs(self, round_index: int) -> pd.DataFrame:
        """Ids, scores and logits (logit_0, ...) of every candidate scored after
        `round_index`; needs a run made with al.save_pool_outputs=true."""
        import h5py

        path = self.path / "pool_outputs" / f"round_{round_index:03d}.h5"
        if not path.exists():
            raise MissingFileError(f"{path} not found: pool outputs are written only by runs with "
                                    "al.save_pool_outputs=true, for rounds that acquired")
        with h5py.File(path, "r") as f:
            logits = f["logits"][:].astype("float32")
            df = pd.DataFrame({"id": f["ids"][:], "score": f["scores"][:]})
        return df.join(pd.DataFrame(logits, columns=[f"logit_{c}" for c in range(logits.shape[1])]))


def load_yaml(text: str):
    """yaml.safe_load with libyaml's parser where PyYAML has it: the same objects, several times
    faster (a lockstep of 200 runs reads 200 headers when it opens them and again when it ends)."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def dump_yaml(data) -> str:
    """yaml.safe_dump (keys in order) with libyaml's emitter where PyYAML has it: the same text
    for run headers (checked on 300 of them), several times faster."""
    return yaml.dump(data, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False)


def _read_header(path: Path) -> dict:
    """config.yaml, or a RecordError naming it when it is empty or not YAML."""
    try:
        header = load_yaml(path.read_text())
    except yaml.YAMLError as err:
        header = err
    if not isinstance(header, dict) or not isinstance(header.get("config"), dict):
        raise RecordError(f"{path} is empty or damaged (not the YAML header of a run record); delete the run "
                          f"directory {path.parent} to run it again")
    return header


def _parse_round(line: str, path: Path, number: int) -> dict:
    try:
        return json.loads(line)
    except json.JSONDecodeError as err:
        raise RecordError(f"{path}, line {number}: not a JSON round record ({err.msg}); the file was edited or "
                         f"damaged outside the toolkit. Restore it, or delete the run directory to run it again") from None


def tidy_rounds(records: Iterable[RunRecord]) -> pd.DataFrame:
    """One row per (run, round): run, model, weights, strategy, seed, n_labels and every metric."""
    frames = []
    for rec in records:
        df = rec.rounds.copy()
        df.insert(0, "run", rec.name)
        df.insert(1, "model", rec.model)
        df.insert(2, "weights", rec.run_config["model"]["weights"])
        df.insert(3, "strategy", rec.strategy)
        df.insert(4, "seed", rec.seed)
        frames.append(df)
    if not frames:
        raise RecordError("no run records given")
    return pd.concat(frames, ignore_index=True)


def run_dirs(path: str | Path) -> list[Path]:
    """A run folder itself, a folder of runs, or a sweep or demo folder (with runs/ inside)."""
    path = Path(path)
    if (path / "rounds.jsonl").exists():
        return [path]
    if (path / "runs").is_dir():
        path = path / "runs"
    return sorted(p for p in path.iterdir() if (p / "rounds.jsonl").exists()) if path.is_dir() else []


def load_run(run_dir: str | Path) -> RunRecord:
    """Read one run record (finished or partial) from disk.

    Args:
        run_dir: the run directory (it holds config.yaml, meta.json, rounds.jsonl, state.json).

    Returns:
        A `RunRecord`; `status` says "finished" or "running" (a partial run).

    Raises:
        MissingFileError: the folder is not a complete run record (the message says which
            file is missing, and how to repair it).

    Examples:
        >>> import toolkit
        >>> rec = toolkit.load_run("altk-doc/loop")  # made by the run_active_learning example
        >>> rec.strategy, rec.weights, rec.seed, rec.mode
        ('least_confidence', 'random', 0, 'full')
    """
    run_dir = Path(run_dir)
    needed = ["config.yaml", "meta.json", "rounds.jsonl", "state.json"]
    missing = [n for n in needed if not (run_dir / n).exists()]
    if missing == ["state.json"]:  # killed (or a full disk) between a round's two files
        raise MissingFileError(f"{run_dir} is not a complete run record: missing state.json. Rerun the command "
                                f"that made it: the run resumes and rewrites state.json from rounds.jsonl")
    if missing:
        raise MissingFileError(f"{run_dir} is not a complete run record: missing {', '.join(missing)}")
    header = _read_header(run_dir / "config.yaml")
    try:
        meta = json.loads((run_dir / "meta.json").read_text())
        if not isinstance(meta, dict):
            raise ValueError(f"it holds a JSON {type(meta).__name__}, not an object")
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as err:
        why = err.msg if isinstance(err, json.JSONDecodeError) else str(err)[:80]
        raise RecordError(f"{run_dir / 'meta.json'} is not a valid run meta file ({why}); the file was damaged "
                          f"outside the toolkit. Delete the run directory and run it again") from None
    rows = [_parse_round(line, run_dir / "rounds.jsonl", i)
            for i, line in enumerate(committed_lines(run_dir / "rounds.jsonl"), 1)]
    for i, row in enumerate(rows, 1):
        missing = [k for k in ("round", "n_labels", "metrics", "acquired") if k not in row]
        if missing or (i == 1 and "seed_set" not in row):
            raise RecordError(f"{run_dir / 'rounds.jsonl'}, round record {i}: missing {', '.join(missing or ['seed_set'])}"
                              f"; the file was edited or damaged outside the toolkit. Restore it, or delete the run "
                              f"directory to run it again")
    flat, acq = [], []
    for row in rows:
        f = {"round": row["round"], "n_labels": row["n_labels"]}
        for split, metrics in row["metrics"].items():
            f.update({f"{split}/{k}": v for k, v in metrics.items()})
        f.update({f"{TIMING_PREFIX}{k}": v for k, v in row.get("timings", {}).items()})
        f.update({f"train/{k}": v for k, v in row.get("train", {}).items()})
        flat.append(f)
        acq += [{**a, "round": row["round"]} for a in row["acquired"]]
    seed = pd.DataFrame(rows[0]["seed_set"]) if rows else pd.DataFrame()
    state = json.loads((run_dir / "state.json").read_text())
    return RunRecord(run_dir, header, meta, pd.DataFrame(flat), pd.DataFrame(acq), seed, state["status"])
