"""Grids of runs: expansion, launching (local process pool or submitit/Slurm), aggregation.

A sweep folder holds `runs/<name>/` (one normal run record each), `index.json` (status
of every run: pending, running, done, failed with its error) and, after aggregation,
`rounds.csv` (every round of every run; what `altk report` and the analyses read).
Re-running the same sweep skips finished runs and resumes interrupted ones from their
last completed round (the run record does that); a failed run does not stop the others.
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import multiprocessing as mp
import os
import traceback
from itertools import product
from pathlib import Path

import pandas as pd

from toolkit._util.faults import kill_point
from toolkit._util.log import info, to_stdout
from toolkit._util.pools import die_with_parent, run_in_pools  # noqa: F401  (die_with_parent: its old home)
from toolkit._util.progress import progress
from toolkit.config import RunConfig, resolve_config
from toolkit.errors import ConfigError
from toolkit.record import load_run, tidy_rounds, write_atomic

SHORTHANDS = {"seed": "seed", "seeds": "seed", "strategy": "al.strategy", "weights": "model.weights",
              "model": "model.name"}


def _values(text: str) -> list:
    """"0-3" -> [0, 1, 2, 3]; "a,b" -> ["a", "b"]; numbers stay numbers."""
    import yaml

    out: list = []
    for part in text.split(","):
        if "-" in part and all(p.strip().isdigit() for p in part.split("-", 1)):
            a, b = part.split("-", 1)
            out += list(range(int(a), int(b) + 1))
        else:
            out.append(yaml.safe_load(part))
    return out


def parse_grid(items: list[str]) -> dict[str, list]:
    """["seeds=0-3", "strategy=least_confidence,random"] -> {"seed": [0..3], "al.strategy": [...]}."""
    grid = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"grid entry {item!r} must look like key=v1,v2 or key=0-15")
        key, text = item.split("=", 1)
        key = SHORTHANDS.get(key, key)
        if key in grid:
            raise ConfigError(f"grid key {key!r} is given twice ({item!r}); list its values once, e.g. {key}=0,1")
        grid[key] = _values(text)
    return grid


def run_name(assignment: dict) -> str:
    return "_".join(f"{k.split('.')[-1]}-{v}" for k, v in assignment.items()).replace("/", "-")


def expand_grid(preset: str, grid: dict[str, list], overrides: list[str] | None = None) -> dict[str, RunConfig]:
    """One resolved config per point of the grid, named after its grid values."""
    keys = list(grid)
    cfgs = {}
    for values in product(*(grid[k] for k in keys)):
        assignment = dict(zip(keys, values))
        cfgs[run_name(assignment)] = resolve_config(preset, list(overrides or []) +
                                                    [f"{k}={v}" for k, v in assignment.items()])
    return cfgs


def run_one(cfg: RunConfig, run_dir: str) -> str:
    """Run (or resume) one run; returns "done" or raises. What every launcher executes."""
    import torch

    from toolkit.al.loop import run_active_learning

    name = Path(run_dir).name
    to_stdout()  # a worker process or a cluster job: its log is its stdout
    if cfg.threads is None and not torch.cuda.is_available():
        # one thread per run on the CPU, whichever launcher runs it: the thread count changes
        # float sums, so a local pool and a cluster job give the same record only with the same count
        torch.set_num_threads(1)
    run_active_learning(cfg, run_dir, log=lambda m: info(f"[{name}] {m.strip()}"))
    return "done"


def _safe_run_one(cfg: RunConfig, run_dir: str) -> tuple[str, str | None]:
    """Pool worker: placement is set on the process (`init_worker`), not in the config, so a
    run keeps the same config (and can resume) whichever launcher runs it next."""
    try:
        return run_one(cfg, run_dir), None
    except Exception:  # reported in the index; the other runs go on
        return "failed", traceback.format_exc(limit=8)


def init_worker(parent: int | None = None, gpus=None) -> None:
    """Pool worker initializer: dies with its parent (`die_with_parent`), leaves no semaphore
    behind if killed (`toolkit._util.pools.init_worker`), and with `gpus` (a queue of GPU
    indices, one per worker) binds this worker to one GPU for its life, by
    CUDA_VISIBLE_DEVICES before CUDA starts. Handing GPUs out per task would let the pool's
    free worker take a task meant for another GPU: two runs on one GPU while another idles."""
    from toolkit._util.pools import init_worker as init_pool_worker

    init_pool_worker(parent)
    os.environ["ALTK_QUIET"] = "1"  # one overall bar, the parent's: workers' bars would interleave
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus.get(timeout=60))


class _FirstSacctWarningOnly(logging.Filter):
    """On a cluster without accounting submitit warns that sacct failed at every poll: keep the
    first (it says why job states may lag), drop the repeats."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if "sacct" not in record.getMessage():
            return True
        first, self.seen = not self.seen, True
        return first


def _quiet_sacct_warnings() -> None:
    log = logging.getLogger("submitit")
    if not any(isinstance(f, _FirstSacctWarningOnly) for f in log.filters):
        log.addFilter(_FirstSacctWarningOnly())


def _slurm_result(job, poll_s: float = 2.0):
    """The job's result, or an error once it has left Slurm's queue without one. Without Slurm
    accounting submitit cannot tell a cancelled job from a running one and would wait forever;
    squeue can: a requeued (pre-empted) job stays in the queue and is waited for."""
    import subprocess
    import time

    gone = 0
    while not job.done():
        queued = subprocess.run(["squeue", "-h", "-j", str(job.job_id)], capture_output=True, text=True)
        gone = gone + 1 if queued.returncode != 0 or not queued.stdout.strip() else 0
        if gone >= 3:  # three polls in a row, so a result being written is not mistaken for a loss
            raise RuntimeError(f"Slurm job {job.job_id} left the queue without a result: cancelled (scancel), or "
                               f"killed by Slurm (time or memory limit). Its log: {job.paths.stderr}")
        time.sleep(poll_s)
    return job.result()


def _is_finished(run_dir: Path) -> bool:
    state = run_dir / "state.json"
    return state.exists() and json.loads(state.read_text()).get("status") == "finished"


class Sweep:
    """A named grid of runs in a folder, with its index."""

    def __init__(self, out: str | Path, cfgs: dict[str, RunConfig]) -> None:
        self.out = Path(out)
        self.cfgs = cfgs
        self.index_path = self.out / "index.json"
        self.index = json.loads(self.index_path.read_text()) if self.index_path.exists() else {}
        self._verified: set[str] = set()  # runs whose inputs `changed_inputs` found unchanged

    def run_dir(self, name: str) -> Path:
        return self.out / "runs" / name

    def _set(self, name: str, status: str, error: str | None = None) -> None:
        self.index[name] = {"status": status, **({"error": error} if error else {})}
        self.out.mkdir(parents=True, exist_ok=True)
        write_atomic(self.index_path, json.dumps(self.index, indent=1, sort_keys=True))

    def failures(self) -> dict[str, str]:
        """Failed run -> the last line of its error (the whole traceback is in index.json)."""
        out = {}
        for name, entry in sorted(self.index.items()):
            if name in self.cfgs and entry.get("status") == "failed":
                lines = [line for line in (entry.get("error") or "").strip().splitlines() if line.strip()]
                out[name] = lines[-1].strip() if lines else "no error text recorded"
        return out

    def stale_runs(self) -> dict[str, list[str]]:
        """Existing runs whose saved config differs from the requested one: name -> fields."""
        import yaml

        from toolkit.config import RunConfig
        from toolkit.record import config_diff

        stale = {}
        for name, cfg in self.cfgs.items():
            saved = self.run_dir(name) / "config.yaml"
            if saved.exists():
                fields = config_diff(yaml.safe_load(saved.read_text()).get("config", {}), cfg.to_dict(),
                                     RunConfig().to_dict())
                if fields:
                    stale[name] = fields
        return stale

    def todo(self) -> list[str]:
        """Runs not yet finished (never started, interrupted, or failed). Refuses when a run
        in the folder was made with other settings, or on other data or weights (`check_inputs`):
        its record would be handed back as if it answered the new ones."""
        stale = self.stale_runs()
        if stale:
            lines = "; ".join(f"{n} ({', '.join(f[:4])})" for n, f in list(stale.items())[:3])
            raise ConfigError(f"{self.out} holds {len(stale)} run(s) made with other settings: {lines}"
                             f"{f' and {len(stale) - 3} more' if len(stale) > 3 else ''}. Rerun with the settings "
                             f"they were made with, or give another output folder (--out).")
        self.check_inputs()
        todo = []
        for name in self.cfgs:
            if _is_finished(self.run_dir(name)):
                if self.index.get(name, {}).get("status") != "done":
                    self._set(name, "done")
            else:
                todo.append(name)
        return todo

    def changed_inputs(self) -> dict[str, list[str]]:
        """Runs in the folder (finished, or with rounds to resume) whose recorded data or weights
        digests differ from the current inputs: name -> what changed ("weights", "data:train", ...).
        Each distinct dataset is loaded, and each distinct model built, once for all runs."""
        from toolkit.al.loop import current_input_digests
        from toolkit.record import changed_inputs, recorded_digests

        # checked once per Sweep: `altk sweep` calls todo() to count, then again to launch
        recorded = {n: recorded_digests(self.run_dir(n)) for n in self.cfgs if n not in self._verified}
        recorded = {n: d for n, d in recorded.items() if d}
        current = current_input_digests({n: self.cfgs[n] for n in recorded}, recorded)
        changed = {n: changed_inputs(recorded[n], current[n]) for n in recorded}
        self._verified.update(n for n, keys in changed.items() if not keys)
        return {n: keys for n, keys in changed.items() if keys}

    def check_inputs(self) -> None:
        """Refuse to reuse (or resume) runs made on other data or weights than the config names
        now (a weights file replaced in place, a dataset's files edited): their records would be
        handed back as results for the new inputs. The error `altk run` gives on the same folder."""
        from toolkit.errors import RecordError

        changed = self.changed_inputs()
        if changed:
            lines = "; ".join(f"{n} ({', '.join(keys)})" for n, keys in list(changed.items())[:3])
            what = sorted({k.split(":")[0] for keys in changed.values() for k in keys})
            raise RecordError(
                f"{self.out} holds {len(changed)} run(s) made on other inputs: {lines}"
                f"{f' and {len(changed) - 3} more' if len(changed) > 3 else ''}: {' and '.join(what)} changed since "
                f"they ran. Reusing them would report the old inputs' results as the new ones'; start the sweep in a "
                f"new output folder (--out), or restore the old inputs.")

    def _prepare(self, todo: list[str]) -> None:
        """Shared inputs made once, before workers start: the toy backbone is pretrained
        here rather than by every worker that finds it missing."""
        if any(self.cfgs[n].model.name == "toy_resnet" and self.cfgs[n].model.weights == "pretrained" for n in todo):
            from toolkit.models.pretrain import ensure_toy_backbone

            ensure_toy_backbone()

    def launch(self, launcher: str = "local", *, workers: int | None = None,
               launcher_kwargs: dict | None = None) -> dict[str, str]:
        """`launch_local` (a process pool of `workers`) or `launch_submitit` (`launcher_kwargs`)."""
        if launcher == "local":
            return self.launch_local(workers=workers)
        if launcher == "submitit":
            return self.launch_submitit(**(launcher_kwargs or {}))
        raise ConfigError(f"unknown launcher {launcher!r}; valid: local, submitit")

    def launch_local(self, *, workers: int | None = None) -> dict[str, str]:
        """A local process pool: one torch thread per process on CPU, one process per GPU.
        Holds the sweep folder's lock: a second sweep on the same folder is refused."""
        from toolkit._util.locks import exclusive

        with exclusive(self.out, "sweep", directory=True):
            return self._launch_local(workers=workers)

    def _launch_local(self, *, workers: int | None = None) -> dict[str, str]:
        import torch

        from toolkit._util.pools import check_workers

        check_workers(workers)
        todo = self.todo()
        self._prepare(todo)
        n_gpus = torch.cuda.device_count()
        workers = max(1, min(workers or n_gpus or os.cpu_count() or 1, len(todo) or 1))
        for name in todo:
            self._set(name, "running")
        results: dict[str, str] = {}
        bar = progress(total=len(todo), desc=f"runs of {self.out.name}", unit="run")

        def on_done(name: str, returned: tuple[str, str | None]) -> None:
            status, error = returned
            kill_point(f"sweep:run_returned:{len(results)}")  # a run is done, the index not yet updated
            self._set(name, status, error)
            results[name] = status
            bar.update(1)
            bar.write(f"[sweep] {name}: {status}")

        # a worker killed from outside (the OOM killer, a signal) breaks the whole pool: the runs
        # still to do go to a new pool and resume from their last completed round; after a second
        # break each goes alone, so the run that kills its worker is the only one failed
        dead = run_in_pools({n: (self.cfgs[n], str(self.run_dir(n))) for n in todo}, _safe_run_one, workers,
                            on_done=on_done, note=lambda m: bar.write(f"[sweep] {m}"),
                            pool=lambda n: self._pool(n, n_gpus))
        for name, reason in dead.items():
            results[name] = "failed"
            self._set(name, "failed", reason)
        bar.close()
        return results

    @staticmethod
    def _pool(workers: int, n_gpus: int) -> cf.ProcessPoolExecutor:
        """A process pool of `workers`, each bound to one GPU when there are GPUs (spread
        evenly: one per GPU by default)."""
        ctx = mp.get_context("spawn")
        gpus = None
        if n_gpus:
            gpus = ctx.Queue()
            for i in range(workers):
                gpus.put(i % n_gpus)
        return cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=init_worker, initargs=(os.getpid(), gpus))

    def launch_submitit(self, *, cluster: str | None = None, folder: str | Path | None = None,
                        **parameters) -> dict[str, str]:
        """Submit unfinished runs as one job array through submitit (Slurm, or cluster="local"
        / "debug" for testing). `parameters` go to `executor.update_parameters`, e.g.
        timeout_min=240, slurm_partition="gpu", gpus_per_node=1, slurm_array_parallelism=32.
        Holds the sweep folder's lock while it waits for the jobs."""
        from toolkit._util.locks import exclusive

        with exclusive(self.out, "sweep", directory=True):
            return self._launch_submitit(cluster=cluster, folder=folder, **parameters)

    def _launch_submitit(self, *, cluster: str | None = None, folder: str | Path | None = None,
                         **parameters) -> dict[str, str]:
        import submitit

        todo = self.todo()
        if not todo:
            return {}
        self._prepare(todo)
        _quiet_sacct_warnings()
        executor = submitit.AutoExecutor(folder=str(folder or self.out / "submitit" / "%j"), cluster=cluster)
        executor.update_parameters(**{"timeout_min": 60, "name": f"altk-{self.out.name}", **parameters})
        jobs = executor.map_array(run_one, [self.cfgs[n] for n in todo], [str(self.run_dir(n)) for n in todo])
        for name in todo:
            self._set(name, "running")
        results = {}
        slurm = executor.cluster == "slurm"
        for name, job in zip(todo, jobs):
            try:
                results[name] = _slurm_result(job) if slurm else job.result()
                self._set(name, "done")
            except Exception as err:  # submitit.FailedJobError carries the job's traceback
                results[name] = "failed"
                self._set(name, "failed", str(err)[-4000:])
        return results

    def aggregate(self) -> pd.DataFrame:
        """Every round of every finished-or-partial run, one tidy table (also rounds.csv)."""
        records = [load_run(self.run_dir(n)) for n in self.cfgs if (self.run_dir(n) / "rounds.jsonl").exists()]
        tidy = tidy_rounds(records)
        kill_point("sweep:aggregated:0")
        write_atomic(self.out / "rounds.csv", tidy.to_csv(index=False))  # a reader never sees half a table
        return tidy

