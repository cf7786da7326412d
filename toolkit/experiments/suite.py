"""The robustness suite: the paper's claims measured across a seeded family of toy-world tasks.

`run_task_suite` runs pretrained vs unpretrained x least-confidence vs random x seeds on each
task of `toolkit.data.toy_tasks.draw_tasks` (probe mode by default, full finetuning through
`toolkit.al.sweep`). The tables are `toolkit.analysis.suite`.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from toolkit._util.faults import kill_point
from toolkit._util.log import info
from toolkit._util.paths import cache_path
from toolkit._util.pools import check_workers, run_in_pools
from toolkit.config import al_config
from toolkit.data.toy_tasks import Task
from toolkit.errors import ConfigError, RunsFailedError
from toolkit.experiments.protocols import PROBE_AL, PROBE_POOL, STRATEGIES, WEIGHTS
from toolkit.record import RunRecord, load_run, write_atomic


def arm_name(task: Task | str, weights: str, strategy: str, seed: int) -> str:
    name = task.name if isinstance(task, Task) else task
    return f"{name}-{'pre' if weights == 'pretrained' else 'unpre'}-{strategy}-s{seed}"


# ---------------------------------------------------------------- running

def check_strategies(strategies) -> tuple[str, ...]:
    """The suite's strategy axis: registered names, including the claims' pair (least-confidence
    and random, the baseline every gain is measured against)."""
    from toolkit.al.acquisition import get_acquisition

    strategies = tuple(dict.fromkeys(strategies))
    for s in strategies:
        get_acquisition(s)  # an unknown name lists the valid ones
    missing = [s for s in STRATEGIES if s not in strategies]
    if missing:
        raise ConfigError(f"the suite's strategies must include {' and '.join(STRATEGIES)} (the claims compare them, "
                          f"and random is every gain's baseline); missing: {', '.join(missing)}")
    return strategies


def _probe_task(task: Task, seeds: list[int], out: str, data: dict, al: dict, feature_root: str | None,
                strategies: tuple[str, ...], threads: int | None) -> list[str]:
    """Extract the task's caches for both weights and run its probe arms (one worker's job)."""
    import torch

    from toolkit.config import ALConfig
    from toolkit.features.cache import extract_features
    from toolkit.features.probe import ProbeRun, run_probes

    kill_point(f"suite:task_started:{task.name}")  # fault tests: this task's worker dies
    if threads:
        torch.set_num_threads(threads)
    params = {**data, **task.data_params()}
    done = []
    for weights in WEIGHTS:
        caches = {split: extract_features("toy_resnet", "toyworld", split, weights=weights, dataset_params=params,
                                          root=feature_root, log=None) for split in ("train", "test")}
        runs = [ProbeRun(Path(out) / "runs" / arm_name(task, weights, strategy, s), ALConfig(strategy=strategy, **al), s)
                for strategy in strategies for s in seeds]
        run_probes(caches["train"], {"test": caches["test"]}, runs)  # every seed and strategy in lockstep
        done += [str(r.out_dir) for r in runs]
    return done


def full_configs(tasks: list[Task], seeds: list[int], *, preset: str = "toy", overrides: list[str] | None = None,
                 strategies: tuple[str, ...] = STRATEGIES):
    """One run config per task x arm x seed (full finetuning), named by `arm_name`."""
    from toolkit.config import resolve_config

    return {arm_name(t, w, s, seed): resolve_config(preset, t.overrides() + list(overrides or []) +
                                                    [f"model.weights={w}", f"al.strategy={s}", f"seed={seed}"])
            for t in tasks for w in WEIGHTS for s in strategies for seed in seeds}


def run_task_suite(tasks: list[Task], seeds: list[int], *, out: str | Path | None = None, mode: str = "probe",
                   data: dict | None = None, al: dict | None = None, overrides: list[str] | None = None,
                   feature_root: str | Path | None = None, workers: int | None = None,
                   launcher: str = "local", launcher_kwargs: dict | None = None, strategies=STRATEGIES,
                   log=info) -> dict[str, list[RunRecord]]:
    """Run every task's arms; returns {task name: its run records}. Re-running resumes.

    mode "probe": frozen features of the pretrained and unpretrained toy backbone, a linear
    probe (pool `data`, default 4,000; protocol `al`, default 40 -> 100 labels by 5);
    tasks are spread over `workers` processes. mode "full": full finetuning with the `toy`
    preset plus `overrides`, as one `toolkit.al.sweep.Sweep` (local pool, or submitit with
    `launcher="submitit"`). `strategies`: the strategy axis (least-confidence and random
    always among them); every strategy runs on both backbones and every seed.

    A worker process that dies (the OOM killer, a signal) does not stop the suite: its tasks
    restart in a new pool and resume; a task that kills its worker again is given up while the
    others finish, and then RunsFailedError names it with its reason (as failed runs in full mode).
    """
    import os

    from toolkit.models.pretrain import ensure_toy_backbone

    if mode == "probe" and overrides:
        raise ConfigError("`--set`/`overrides` are full-finetuning config keys; in probe mode set `data` (dataset "
                         "params) and `al` (protocol) instead")
    if mode == "full" and (data or al):
        raise ConfigError("in full mode set dataset and protocol options through `--set`/`overrides` "
                         "(e.g. al.budget=60, data.params.n_train=2000), not `data`/`al`")
    if mode not in ("probe", "full"):
        raise ConfigError(f"unknown suite mode {mode!r}; valid: probe, full")
    check_workers(workers, "--workers")
    strategies = check_strategies(strategies)
    out = Path(out) if out is not None else cache_path(f"suite-{mode}")
    out.mkdir(parents=True, exist_ok=True)
    listed = {t["name"]: t for t in json.loads((out / "tasks.json").read_text())} if (out / "tasks.json").exists() else {}
    listed.update({t.name: asdict(t) for t in tasks})  # --only adds to the list, never drops a task
    write_atomic(out / "tasks.json", json.dumps(sorted(listed.values(), key=lambda t: t["name"]), indent=1))
    ensure_toy_backbone()
    workers = workers or os.cpu_count() or 1
    if mode == "probe":
        data, al = {**PROBE_POOL, **(data or {})}, {**PROBE_AL, **(al or {})}
        al_config(al)  # unknown keys and bad values named here, not as a traceback in a worker
        jobs = [(t, list(seeds), str(out), data, al, feature_root and str(feature_root), strategies) for t in tasks]
        if workers == 1 or len(tasks) == 1:  # in-process: simplest to debug, and what a notebook wants
            for i, job in enumerate(jobs, 1):
                _probe_task(*job, threads=None)
                if log:
                    log(f"[suite] {job[0].name} done ({i}/{len(tasks)} tasks)")
        else:  # one torch thread per process: tasks are independent, so processes scale best
            # workers die with the suite (a killed suite leaves no orphans holding run locks); a
            # dead worker's tasks restart in a new pool, and only a task that kills its worker is given up
            done = []

            def on_done(name: str, _runs) -> None:
                done.append(name)
                if log:
                    log(f"[suite] {name} done ({len(done)}/{len(tasks)} tasks)")

            dead = run_in_pools({job[0].name: (*job, 1) for job in jobs}, _probe_task, min(workers, len(tasks)),
                                on_done=on_done, note=lambda m: (log or info)(f"[suite] {m}"), what="tasks")
            if dead:
                raise RunsFailedError(f"{len(dead)} of {len(tasks)} suite tasks failed:\n" + "\n".join(
                    f"  {name}: {reason}" for name, reason in dead.items()))
    elif mode == "full":
        from toolkit.al.sweep import Sweep

        sweep = Sweep(out, full_configs(tasks, seeds, overrides=overrides, strategies=strategies))
        results = sweep.launch(launcher, workers=workers, launcher_kwargs=launcher_kwargs)
        failed = [n for n, s in results.items() if s != "done"]
        if failed:  # each run's reason, not only its name; the whole traceback stays in index.json
            reasons = sweep.failures()
            raise RunsFailedError(f"{len(failed)} of {len(results)} suite runs failed:\n" + "\n".join(
                f"  {n}: {reasons.get(n, 'no error recorded')}" for n in failed[:10])
                + ("\n  ..." if len(failed) > 10 else "") + f"\nfull errors in {out / 'index.json'}")
    return load_suite(out, tasks, seeds, strategies)


def load_suite(out: str | Path, tasks: list[Task], seeds: list[int],
               strategies: tuple[str, ...] = STRATEGIES) -> dict[str, list[RunRecord]]:
    """The run records of a suite folder, grouped by task (missing runs are skipped)."""
    runs = Path(out) / "runs"
    found = {}
    for t in tasks:
        dirs = [runs / arm_name(t, w, s, seed) for w in WEIGHTS for s in strategies for seed in seeds]
        found[t.name] = [load_run(d) for d in dirs if (d / "state.json").exists()]
    return found
