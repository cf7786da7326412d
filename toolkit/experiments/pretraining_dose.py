"""The pretraining-dose study (issue #22): active-learning gain along how much, and on what,
the toy backbone was pretrained, with the representation measures that might explain it.

Backbones are toy_resnet weights ids: checkpoints along the one pretraining run
(`pretrained@stepN`, `pretrained` = the last step), backbones pretrained on fewer images
(`pretrained@imagesN`) or fewer shapes (`pretrained@shapesK`), and `random` (the run seed's
init). For each backbone and task it extracts the task's pool and test features, runs
least-confidence and random sampling for every seed in lockstep (`run_probes`), and measures
the pool embedding's linear separability of the label, the spurious attribute and the four
groups. The tables are `toolkit.analysis.dose`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from toolkit._util.faults import kill_point
from toolkit._util.log import info
from toolkit._util.paths import cache_path
from toolkit._util.pools import check_workers, run_in_pools
from toolkit.config import al_config
from toolkit.data.toy_tasks import Task
from toolkit.errors import ConfigError, RunsFailedError
from toolkit.experiments.protocols import PROBE_AL, PROBE_POOL, STRATEGIES
from toolkit.record import RunRecord, load_run, write_atomic

DEFAULT_DOSES = ("random", "pretrained@step0", "pretrained@step100", "pretrained@step200", "pretrained@step400",
                 "pretrained@step800", "pretrained@step1000", "pretrained@step1200", "pretrained@step1400",
                 "pretrained", "pretrained@images5000", "pretrained@shapes10",
                 "pretrained@width8", "pretrained@width16")  # wider ones (pretrained@width64) cost 4x to pretrain


def dose_name(weights: str) -> str:
    """A folder-safe name of a weights id: "pretrained@step400" -> "step400"."""
    return weights.split("@", 1)[1] if "@" in weights else weights


def backbone_task(weights: str, task: Task | str) -> str:
    """The prefix of one backbone x task's run names and its measures file: "step400-t03"."""
    return f"{dose_name(weights)}-{task.name if isinstance(task, Task) else task}"


def run_name(weights: str, task: Task | str, strategy: str, seed: int) -> str:
    return f"{backbone_task(weights, task)}-{strategy}-s{seed}"


def coverage_of(weights: str, task: Task) -> dict:
    """For a coverage backbone (`pretrained@shapesK`): how many of the task's label shapes were
    among the K it was pretrained on ({} for the other doses)."""
    from toolkit.data.toyworld import SHAPES
    from toolkit.models.pretrain import coverage_shapes, parse_dose

    if not weights.startswith("pretrained@shapes"):
        return {}
    seen = {SHAPES[i] for i in coverage_shapes(parse_dose(weights)[1])}
    shapes = [s for family in task.label_shapes for s in family]
    return {"label_shapes_seen": sum(s in seen for s in shapes), "label_shapes": len(shapes)}


COVERAGE_K = 10  # the coverage design's backbone: pretrained@shapes10, on half of the 20 shapes
COVERAGE_DOSES = ("random", "pretrained", f"pretrained@shapes{COVERAGE_K}")


def coverage_tasks(k: int = 10, *, shapes: int = COVERAGE_K, seed: int = 0) -> list[Task]:
    """The coverage design's tasks, fixed by rule before any run: pair i is task i of the suite's
    distribution (`draw_tasks(k, seed=seed)`) drawn twice, once with both label families from
    the `shapes` shapes that `pretrained@shapes{shapes}` was pretrained on ("cov10-seen-03"),
    once from the others ("cov10-unseen-03"). The two differ only in their shapes: hues,
    fractions and world seed are the same.

    Args:
        k: pairs (2k tasks).
        shapes: the coverage backbone's K (`pretrained@shapesK`; each side needs 6 shapes).
        seed: the task distribution's seed.

    Examples:
        >>> seen, unseen = coverage_tasks(1)
        >>> seen.name, unseen.name, seen.place_hues == unseen.place_hues, seen.label_shapes != unseen.label_shapes
        ('cov10-seen-00', 'cov10-unseen-00', True, True)
    """
    from dataclasses import replace

    from toolkit.data.toy_tasks import draw_tasks
    from toolkit.data.toyworld import SHAPES
    from toolkit.models.pretrain import coverage_shapes

    seen = tuple(SHAPES[i] for i in coverage_shapes(shapes))
    unseen = tuple(s for s in SHAPES if s not in seen)
    tasks = []
    for side, pool in (("seen", seen), ("unseen", unseen)):
        tasks += [replace(t, name=f"cov{shapes}-{side}-{i:02d}")
                  for i, t in enumerate(draw_tasks(k, seed=seed, shapes=pool))]
    return tasks


def check_study(doses, *, data: dict | None = None, al: dict | None = None, workers: int | None = None,
                dataset: str = "toyworld") -> list[str]:
    """The study's arguments, checked before any work (pretraining a missing dose takes minutes):
    at least one dose, none twice, each a toy_resnet weights id (`random`, `pretrained`,
    `pretrained@stepN|imagesN|shapesK`); the protocol's keys and values (`al`); the dataset's
    option names (`data`); the worker count. Returns the doses as a list."""
    from toolkit.data import dataset_parameters
    from toolkit.models.pretrain import parse_dose

    doses = [str(w).strip() for w in doses]
    if not doses or not all(doses):
        raise ConfigError(f"--doses {','.join(map(str, doses))!r}: give one or more comma-separated toy_resnet weights "
                          "ids (random, pretrained, pretrained@stepN, pretrained@imagesN, pretrained@shapesK, "
                          "pretrained@widthW), "
                          "none empty")
    twice = sorted({w for w in doses if doses.count(w) > 1})
    if twice:
        raise ConfigError(f"--doses lists {', '.join(twice)} more than once; give each backbone once (its runs and "
                          f"rows would be counted twice)")
    for w in doses:
        if w not in ("random", "pretrained"):
            parse_dose(w)  # an unknown id names the valid forms
    unknown = sorted(set(data or {}) - set(dataset_parameters(dataset)))
    if unknown:
        raise ConfigError(f"unknown dataset option(s) {', '.join(map(repr, unknown))} (--data); valid: "
                          f"{', '.join(dataset_parameters(dataset))}")
    al_config({**PROBE_AL, **(al or {})})  # unknown keys and bad values named here, not after the pretraining
    check_workers(workers, "--workers")
    return doses


def _dose_task(weights: str, task: Task, seeds: list[int], out: str, data: dict, al: dict,
               feature_root: str | None, measure: bool, threads: int | None) -> str:
    """One toy backbone on one toy task (a worker's job)."""
    kill_point(f"dose:job_started:{backbone_task(weights, task)}")  # fault tests: this job's worker dies
    _probe_and_measure("toy_resnet", weights, "toyworld", {**data, **task.data_params()}, task.name,
                       backbone_task(weights, task), seeds, out, al, feature_root, threads, measure=measure,
                       extra=coverage_of(weights, task))
    return f"{weights} {task.name}"


def _probe_and_measure(model: str, weights: str, dataset: str, params: dict, task: str, prefix: str,
                       seeds: list[int], out: str, al: dict, feature_root: str | None, threads: int | None,
                       extra: dict | None = None, measure: bool = True) -> None:
    """One backbone on one task: the pool and test caches, the probe runs of every strategy and seed
    in lockstep (named `{prefix}-{strategy}-s{seed}`), and the pool embedding's separability measures."""
    import numpy as np
    import torch

    from toolkit.analysis.separability import GroupSeparability
    from toolkit.config import ALConfig
    from toolkit.features.cache import extract_features, open_cache
    from toolkit.features.probe import ProbeRun, run_probes

    if threads:
        torch.set_num_threads(threads)
    caches = {split: extract_features(model, dataset, split, weights=weights, dataset_params=params,
                                      root=feature_root, log=None) for split in ("train", "test")}
    runs = [ProbeRun(Path(out) / "runs" / f"{prefix}-{s}-s{seed}", ALConfig(strategy=s, **al), seed)
            for s in STRATEGIES for seed in seeds]
    run_probes(caches["train"], {"test": caches["test"]}, runs)
    measures = Path(out) / "measures" / f"{prefix}.json"
    if measure and not measures.exists():
        pool = open_cache(caches["train"])
        smallest = int(np.unique(pool.labels * 2 + pool.spurious, return_counts=True)[1].min())
        # folds are stratified by group, so the smallest group bounds them (5 at the study's pool sizes)
        sep = GroupSeparability(cv=max(2, min(5, smallest)), random_state=0).fit(pool.embeddings, pool.labels,
                                                                                pool.spurious)
        per_group = sep.per_group_.set_index("group")["group_probe"]
        scores = dict(zip(sep.scores_["target"], sep.scores_["balanced_accuracy"]))
        row = {"weights": weights, "task": task, "sep_label": scores.get("label"),
               "sep_spurious": scores.get("spurious"), "sep_group": scores.get("group"),
               "sep_group_worst": float(per_group.min()),
               "sep_group_mismatched": float(per_group[[g for g in per_group.index
                                                        if g.split("_")[0][1:] != g.split("_")[1][1:]]].mean()),
               **(extra or {})}
        measures.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(measures, json.dumps(row, indent=1))


def run_dose_study(doses: list[str], tasks: list[Task], seeds: list[int], *, out: str | Path | None = None,
                   data: dict | None = None, al: dict | None = None, feature_root: str | Path | None = None,
                   workers: int | None = None, measure: bool = True, partial: bool = False,
                   log: Callable[[str], None] | None = info) -> dict:
    """Run (or resume) every dose x task x seed x strategy in probe mode (`measure`: also the
    separability measures, cross-validated probes that cost about as much as the runs).

    Returns {"records": {(weights, task): [RunRecord, ...]}, "measures": [dict, ...],
    "failed": {job: reason}}; records and measures are also on disk under `out` (runs/,
    measures/, doses.json). The arguments are checked first (`check_study`), then pretraining
    doses are pretrained (once, cached) before the workers start. A job (one backbone on one
    task, "pretrained@step400 t0-03") whose worker process dies is retried in a new pool; one
    that kills its worker again is given up while the others finish, and then RunsFailedError
    names it with its reason (`partial`: return the finished jobs instead, the given-up ones
    under "failed").
    """
    from toolkit.models.pretrain import ensure_toy_doses

    doses = check_study(doses, data=data, al=al, workers=workers)
    log = log or (lambda _: None)
    out = Path(out) if out is not None else cache_path("dose-study")
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "doses.json", json.dumps({"doses": list(doses), "tasks": [t.name for t in tasks],
                                                 "seeds": list(seeds)}, indent=1))
    ensure_toy_doses(list(doses))  # before the workers start, so none of them pretrains
    data, al = {**PROBE_POOL, **(data or {})}, {**PROBE_AL, **(al or {})}
    jobs = {f"{w} {t.name}": (w, t, list(seeds), str(out), data, al, feature_root and str(feature_root), measure)
            for t in tasks for w in doses}
    failed = _run_jobs(_dose_task, jobs, workers, log)
    _raise_failed(failed, len(jobs), "dose study", partial)
    return {**load_dose_study(out, doses, tasks, seeds), "failed": failed}


def _raise_failed(failed: dict[str, str], total: int, what: str, partial: bool) -> None:
    if failed and not partial:
        raise RunsFailedError(f"{len(failed)} of {total} {what} jobs failed:\n" + "\n".join(
            f"  {name}: {reason}" for name, reason in failed.items()))


FULL_DOSES = ("random", "pretrained@step800", "pretrained")


def full_dose_configs(doses: list[str], tasks: list[Task], seeds: list[int], *, preset: str = "toy",
                      overrides: list[str] | None = None) -> dict:
    """One full-finetuning run config per dose x task x strategy x seed, named by `run_name`."""
    from toolkit.config import resolve_config

    return {run_name(w, t, s, seed): resolve_config(preset, t.overrides() + list(overrides or []) +
                                                    [f"model.weights={w}", f"al.strategy={s}", f"seed={seed}"])
            for t in tasks for w in doses for s in STRATEGIES for seed in seeds}


def run_full_dose(doses: list[str], tasks: list[Task], seeds: list[int], *, out: str | Path | None = None,
                  overrides: list[str] | None = None, workers: int | None = None, launcher: str = "local",
                  launcher_kwargs: dict | None = None, log: Callable[[str], None] | None = info) -> dict:
    """The dose study with full finetuning (the `toy` preset plus `overrides`), as one sweep
    (`toolkit.al.sweep`: a local pool, or submitit). Same folder layout and return value as
    `run_dose_study`, without the separability measures, plus "failed" (run names): failed runs
    are logged with their last error line, and the finished ones are still returned."""
    from toolkit.al.sweep import Sweep
    from toolkit.models.pretrain import ensure_toy_doses

    doses = check_study(doses, workers=workers)
    log = log or (lambda _: None)
    out = Path(out) if out is not None else cache_path("dose-full")
    cfgs = full_dose_configs(doses, tasks, seeds, overrides=overrides)  # a bad override named before any pretraining
    ensure_toy_doses(list(doses))  # before the workers start, so none of them pretrains
    sweep = Sweep(out, cfgs)
    results = sweep.launch(launcher, workers=workers, launcher_kwargs=launcher_kwargs)
    failures = sweep.failures()
    failed = [n for n, st in results.items() if st != "done"]
    for name in failed:
        log(f"[dose] {name} failed: {failures.get(name, 'no error recorded')}")
    return {**load_dose_study(out, doses, tasks, seeds), "failed": failed}


# the real-network axis: ImageNet EfficientNet-Lite at three sizes (each at its own input size,
# timm's data config) and Lite0 from random init, on the fashion_places composites
REAL_BACKBONES = (("efficientnet_lite0", "random"), ("efficientnet_lite0", "pretrained"),
                  ("efficientnet_lite1", "pretrained"), ("efficientnet_lite2", "pretrained"))
REAL_TASK = "fashion_places"


def real_label(model: str, weights: str) -> str:
    """A short backbone name: ("efficientnet_lite1", "pretrained") -> "lite1"; random init -> "lite0-random"."""
    short = model.removeprefix("efficientnet_")
    return short if weights == "pretrained" else f"{short}-{weights}"


def _real_task(model: str, weights: str, seeds: list[int], out: str, data: dict, al: dict,
               feature_root: str | None, threads: int | None) -> str:
    from toolkit.models import create_model, model_spec

    size = model_spec(model).input_size
    n_params = sum(p.numel() for p in create_model(model, weights="random", num_classes=2).backbone.parameters())
    label = real_label(model, weights)
    size = data.get("size", size)
    _probe_and_measure(model, weights, REAL_TASK, {**data, "size": size}, REAL_TASK, f"{label}-{REAL_TASK}", seeds, out,
                       al, feature_root, threads,
                       extra={"backbone": label, "model": model, "input_size": size, "params_m": n_params / 1e6})
    return label


def run_real_dose(seeds: list[int], *, backbones=REAL_BACKBONES, out: str | Path | None = None,
                  data: dict | None = None, al: dict | None = None, feature_root: str | Path | None = None,
                  workers: int | None = None, partial: bool = False, log: Callable[[str], None] | None = info) -> dict:
    """The real-network axis in probe mode: each backbone on `fashion_places` at its own input size,
    least-confidence and random for every seed (`data`: fashion_places options; a "size" there
    replaces every backbone's own). Returns {"records": {label: [RunRecord, ...]},
    "measures": [dict, ...], "failed": {label: reason}} (records and measures also under `out`:
    runs/, measures/); a backbone whose worker dies twice is given up, as in `run_dose_study`
    (`partial` as there)."""
    log = log or (lambda _: None)
    al = {**PROBE_AL, **(al or {})}
    al_config(al)
    check_workers(workers, "--workers")
    out = Path(out) if out is not None else cache_path("dose-real")
    out.mkdir(parents=True, exist_ok=True)
    jobs = {real_label(m, w): (m, w, list(seeds), str(out), dict(data or {}), al, feature_root and str(feature_root))
            for m, w in backbones}
    failed = _run_jobs(_real_task, jobs, workers, log)
    _raise_failed(failed, len(jobs), "real-network dose", partial)
    return {**load_real_dose(out, backbones, seeds), "failed": failed}


def load_real_dose(out: str | Path, backbones, seeds: list[int]) -> dict:
    """The records and measures of a real-network dose folder (missing runs are skipped)."""
    out = Path(out)
    records = {}
    for m, w in backbones:
        label = real_label(m, w)
        dirs = [out / "runs" / f"{label}-{REAL_TASK}-{s}-s{seed}" for s in STRATEGIES for seed in seeds]
        records[label] = [load_run(d) for d in dirs if (d / "state.json").exists()]
    measures = [json.loads(p.read_text()) for p in sorted((out / "measures").glob("*.json"))]
    return {"records": records, "measures": measures}


def _run_jobs(fn, jobs: dict[str, tuple], workers: int | None, log: Callable[[str], None]) -> dict[str, str]:
    """Run `fn(*job, threads)` for every job: in-process with one worker, else in spawned
    processes (one torch thread each) that die with the study; a dead worker's jobs restart in
    a new pool (`toolkit._util.pools.run_in_pools`). Returns {job: reason} of the jobs given up."""
    check_workers(workers, "--workers")
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    if workers == 1:
        for i, job in enumerate(jobs.values(), 1):
            log(f"[dose] {fn(*job, None)} done ({i}/{len(jobs)})")
        return {}
    done = []

    def on_done(key: str, result: str) -> None:
        done.append(key)
        log(f"[dose] {result} done ({len(done)}/{len(jobs)})")

    return run_in_pools({k: (*job, 1) for k, job in jobs.items()}, fn, workers, on_done=on_done,
                        note=lambda m: log(f"[dose] {m}"), what="backbone x task jobs")


def load_dose_study(out: str | Path, doses: list[str], tasks: list[Task], seeds: list[int]) -> dict:
    """The records and measures of a dose-study folder (missing runs are skipped)."""
    out = Path(out)
    records: dict[tuple[str, str], list[RunRecord]] = {}
    for w in doses:
        for t in tasks:
            dirs = [out / "runs" / run_name(w, t, s, seed) for s in STRATEGIES for seed in seeds]
            records[(w, t.name)] = [load_run(d) for d in dirs if (d / "state.json").exists()]
    measures = [json.loads(p.read_text()) for p in sorted((out / "measures").glob("*.json"))]
    return {"records": records, "measures": measures}
