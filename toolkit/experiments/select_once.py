"""Select on features, finetune once, against the full loop: same tasks, seeds and protocol.

For every (task, seed) config it runs the full active-learning loop (finetuning every round)
and `run_select_then_finetune` (a probe on the cached features acquires, one finetuning at
the end), then compares them with `toolkit.analysis.cost.compare_select_once`: final
worst-group and accuracy, the overlap of the acquired sets, the upsampling of each group, and
seconds and passes. Runs go to <out>/full/<name> and <out>/once/<name>; re-running resumes.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
from pathlib import Path

from toolkit._util.log import info
from toolkit._util.paths import cache_path
from toolkit.al.sweep import die_with_parent
from toolkit.config import RunConfig
from toolkit.data.toy_tasks import Task
from toolkit.errors import RunsFailedError
from toolkit.record import RunRecord, load_run

KINDS = ("full", "once")


def toy_configs(tasks: list[Task], seeds: list[int], *, strategy: str = "least_confidence",
                weights: str = "pretrained", overrides: list[str] | None = None) -> dict[str, RunConfig]:
    """One `toy`-preset config per task x seed, named "<task>-s<seed>"."""
    from toolkit.config import resolve_config

    return {f"{t.name}-s{seed}": resolve_config("toy", t.overrides() + list(overrides or []) + [
        f"model.weights={weights}", f"al.strategy={strategy}", f"seed={seed}"]) for t in tasks for seed in seeds}


def preset_configs(preset: str, seeds: list[int], *, overrides: list[str] | None = None) -> dict[str, RunConfig]:
    """One config per seed of a preset (e.g. fashion-places), named "<dataset>-s<seed>"."""
    from toolkit.config import resolve_config

    cfgs = {seed: resolve_config(preset, list(overrides or []) + [f"seed={seed}"]) for seed in seeds}
    return {f"{c.data.name}-s{seed}": c for seed, c in cfgs.items()}


def task_of(rec: RunRecord) -> str:
    """A comparison run's task: its folder name without the seed ("t0-03-s1" -> "t0-03")."""
    return rec.name.rsplit("-s", 1)[0]


def _job(kind: str, cfg: RunConfig, run_dir: str, threads: int | None) -> str:
    import torch

    if threads:
        torch.set_num_threads(threads)
    if kind == "full":
        from toolkit.al.loop import run_active_learning

        run_active_learning(cfg, run_dir, log=None)
    else:
        from toolkit.features.select_finetune import run_select_then_finetune

        run_select_then_finetune(cfg, run_dir)
    return run_dir


def run_select_once(configs: dict[str, RunConfig], out: str | Path | None = None, *, workers: int | None = None,
                    log=info) -> dict[str, list[RunRecord]]:
    """Run every config both ways; returns {"full": records, "once": records}.

    Jobs are spread over `workers` processes (one torch thread each); a failed job does not stop
    the others, and the failures are raised together, each with its reason.
    """
    out = Path(out) if out is not None else cache_path("select-once")
    run_jobs([(kind, cfg, str(out / kind / name)) for name, cfg in configs.items() for kind in KINDS],
             workers=workers, log=log)
    return load_select_once(out, configs)


def run_jobs(jobs: list[tuple[str, RunConfig, str]], *, workers: int | None = None, log=info) -> None:
    """Run (or resume) (kind, config, run folder) jobs, kind "full" (the loop) or "once"
    (select-then-finetune-once), over `workers` processes with one torch thread each. A failed
    job does not stop the others; the failures are raised together, each with its reason."""
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    failed = {}
    if workers == 1:
        for i, job in enumerate(jobs, 1):
            try:
                _job(*job, None)
                log and log(f"[select-once] {job[2]} done ({i}/{len(jobs)})")
            except Exception as err:  # noqa: BLE001 - every failure is reported below, with its reason
                failed[job[2]] = f"{type(err).__name__}: {err}"
    else:
        with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=die_with_parent,
                                    initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(_job, *job, 1): job[2] for job in jobs}
            for i, fut in enumerate(cf.as_completed(futures), 1):
                err = fut.exception()
                if err is not None:
                    failed[futures[fut]] = f"{type(err).__name__}: {err}"
                elif log:
                    log(f"[select-once] {futures[fut]} done ({i}/{len(jobs)})")
    if failed:
        raise RunsFailedError(f"{len(failed)} of {len(jobs)} runs failed:\n" + "\n".join(
            f"  {name}: {str(why).splitlines()[0][:300]}" for name, why in sorted(failed.items())))


def load_select_once(out: str | Path, configs) -> dict[str, list[RunRecord]]:
    """The records of a comparison folder, {"full": [...], "once": [...]} (missing runs skipped)."""
    out = Path(out)
    return {kind: [load_run(out / kind / name) for name in configs if (out / kind / name / "state.json").exists()]
            for kind in KINDS}
