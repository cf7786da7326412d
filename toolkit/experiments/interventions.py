"""Is it the representation? Interventions on the features, a phase diagram, and the gain law (issue #33).

Each experiment changes only the representation, keeps the probe-mode protocol of the dose
study (least-confidence and random, paired by seed, `run_probes` in lockstep), and measures
the changed representation as the dose study measures a backbone:

- a. erase the label (LEACE) from the pretrained toy backbone's features of the suite's first
  tasks, at strengths 0 .. 1;
- b. the same for the spurious attribute;
- c. inject the label into random-init features, up to each dose checkpoint's label separability;
- d. the phase diagram: synthetic Gaussian representations over a grid of label x attribute
  separability, each with a suite task's composition;
- e. the erasures of a and b on real features: EfficientNet-Lite0 (ImageNet) on fashion_places.

The strength sweeps erase in mode "noise": the concept's component is replaced, in a share t,
by noise of its covariance. The issue's formula (mode "shrink", `x - t (x - erase(x))`) is an
invertible linear map for t < 1, and a linear probe reads a concept through any such map as
well as before (the probe standardises each column and is lightly regularised), so the label
would stay as separable as at t = 0 until it vanishes at t = 1: a step, not a sweep.

The erasers and the injected signal are fitted with the pool's labels: the experimenter's
intervention, not something the learner sees (it starts from its seed set as always). Each
task's eraser is fitted once per concept and reused at every strength and for the test split
(`features.interventions.ConceptEraser`); each injection is calibrated once, on the pool, and
the test split reuses that amplitude (`inject(..., calibration=...)`).

Every experiment writes under its folder (`<out>/<letter>/`): runs/ (one record per run),
measures/ (one JSON per representation x task), skipped/ (representations that could not be
made, with the reason), and table.csv (`analysis.gain_law.representation_table`). Re-running
resumes: finished runs, measures and derived caches are reused.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from toolkit._util.log import info
from toolkit._util.paths import cache_path, shown
from toolkit._util.pools import check_workers, run_in_pools
from toolkit.config import al_config
from toolkit.data.toy_tasks import Task, draw_tasks
from toolkit.errors import CacheError, ConfigError, RecordError, RunsFailedError
from toolkit.experiments.protocols import PROBE_AL, PROBE_POOL, REAL, STRATEGIES
from toolkit.record import load_run, write_atomic

EXPERIMENTS = ("a", "b", "c", "d", "e")
TITLES = {"a": "a. Erase the label (pretrained toy backbone)",
          "b": "b. Erase the spurious attribute (pretrained toy backbone)",
          "c": "c. Inject the label into random-init features, to each dose checkpoint's separability",
          "d": "d. Phase diagram: synthetic representations over label x attribute separability",
          "e": "e. Erase the label and the attribute from EfficientNet-Lite0 (ImageNet) on fashion_places"}
ERASE_MODE = "noise"  # see the module docstring: "shrink" leaves a linear probe's reading unchanged for t < 1
STRENGTHS = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)
INJECT_DOSES = ("pretrained@step0", "pretrained@step100", "pretrained@step200", "pretrained@step400",
                "pretrained@step800", "pretrained", "pretrained@images5000", "pretrained@shapes10")
# the grid spans the measured backbones: label separability 0.5-0.9, the attribute's 0.95-1.0
PHASE_LABEL = (0.55, 0.65, 0.75, 0.85, 0.95)
PHASE_ATTRIBUTE = (0.6, 0.8, 0.95, 0.99)


@dataclass(frozen=True)
class InterventionPlan:
    """The experiments' settings: full size by default, `small()` for a notebook or a smoke test.

    Args:
        tasks: the suite's first K toy tasks (a, b, c).
        task_seed: the task distribution's seed.
        seeds: run seeds (each strategy runs every seed).
        data: toy-world options for every task's pool and test split (default `PROBE_POOL`).
        al: the probe protocol (default `PROBE_AL`: 40 -> 100 labels by 5).
        strengths: erasure strengths (a, b, e).
        doses: the dose checkpoints whose label separability c injects to.
        tolerance: how close c's injection must get to its target separability.
        label_grid: d's label separabilities (Bayes accuracies).
        attribute_grid: d's attribute separabilities.
        phase_tasks: d's replicates: the first K tasks' compositions and seeds.
        phase_dim: d's feature dimension.
        real_data: fashion_places options for e (default: the real dose study's; "size" defaults
            to Lite0's input size, 224).
        feature_root: where caches go (default: the cache root's features/).
        workers: processes (default: the CPU count).

    Examples:
        >>> plan = InterventionPlan(seeds=(0, 1, 2))
        >>> plan.tasks, plan.strengths, plan.al["budget"]
        (20, (0.0, 0.25, 0.5, 0.75, 0.9, 1.0), 60)
        >>> InterventionPlan(strengths=(0.5, 2.0)).check()
        Traceback (most recent call last):
        ...
        toolkit.errors.ConfigError: erasure strengths must be in [0, 1], got [0.5, 2.0]
    """

    tasks: int = 20
    task_seed: int = 0
    seeds: tuple[int, ...] = tuple(range(10))
    data: dict = field(default_factory=lambda: dict(PROBE_POOL))
    al: dict = field(default_factory=lambda: dict(PROBE_AL))
    strengths: tuple[float, ...] = STRENGTHS
    doses: tuple[str, ...] = INJECT_DOSES
    tolerance: float = 0.01
    label_grid: tuple[float, ...] = PHASE_LABEL
    attribute_grid: tuple[float, ...] = PHASE_ATTRIBUTE
    phase_tasks: int = 5
    phase_dim: int = 64
    real_data: dict = field(default_factory=dict)
    feature_root: str | None = None
    workers: int | None = None

    @classmethod
    def small(cls, **changes) -> "InterventionPlan":
        """Small settings (minutes on a laptop): 2 tasks, 2 seeds, 1,000-example pools, 20 -> 60
        labels by 10, three strengths, two doses, a 2 x 2 phase grid.

        Args:
            changes: fields to override.

        Examples:
            >>> InterventionPlan.small(seeds=(0,)).strengths
            (0.0, 0.5, 1.0)
        """
        small = dict(tasks=2, seeds=(0, 1), data={"n_train": 1000, "n_test": 400},
                     al={"seed_size": 20, "per_round": 10, "budget": 40}, strengths=(0.0, 0.5, 1.0),
                     doses=("pretrained@step800", "pretrained"), tolerance=0.02, label_grid=(0.6, 0.9),
                     attribute_grid=(0.7, 0.99), phase_tasks=2, phase_dim=32,
                     real_data={"n_train": 1000, "n_val": 40, "n_test": 400})
        return cls(**{**small, **changes})

    def check(self) -> "InterventionPlan":
        """Refuse bad settings before any work (the message names the field and what is valid)."""
        al_config({**PROBE_AL, **self.al})
        check_workers(self.workers, "workers")
        if not self.seeds or any(not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ConfigError(f"seeds must be non-negative integers, got {list(self.seeds)}")
        for name in ("tasks", "phase_tasks"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        bad = [t for t in self.strengths if not 0 <= t <= 1]
        if bad or not self.strengths:
            raise ConfigError(f"erasure strengths must be in [0, 1], got {list(self.strengths)}")
        bad = [s for s in (*self.label_grid, *self.attribute_grid) if not 0.5 <= s < 1]
        if bad:
            raise ConfigError(f"phase-grid separabilities are Bayes accuracies in [0.5, 1), got {bad}")
        return self


# ---- one representation on one task: probe runs and measures -------------------------------------

def run_dirs(out: Path, rep: str, task: str, seeds) -> list[Path]:
    """The run folders of one representation x task: `runs/{rep}-{task}-{strategy}-s{seed}`.

    Args:
        out: the experiment's folder.
        rep: the representation's name (e.g. "erase-label-t0.5").
        task: the task's name.
        seeds: the run seeds.

    Examples:
        >>> [p.name for p in run_dirs(Path("a"), "erase-label-t0.5", "t0-00", [0])]
        ['erase-label-t0.5-t0-00-least_confidence-s0', 'erase-label-t0.5-t0-00-random-s0']
    """
    return [out / "runs" / f"{rep}-{task}-{s}-s{seed}" for s in STRATEGIES for seed in seeds]


def _done(out: Path, rep: str, task: str, seeds) -> bool:
    """Measured and every run finished (or given up as impossible): nothing to recompute."""
    if (out / "skipped" / f"{rep}-{task}.json").exists():
        return True
    if not (out / "measures" / f"{rep}-{task}.json").exists():
        return False
    return all((d / "state.json").exists() and load_run(d).status == "finished"
               for d in run_dirs(out, rep, task, seeds))


def probe_representation(pool, test, rep: str, task: str, plan: InterventionPlan, out: Path, meta: dict) -> None:
    """Run least-confidence and random for every seed on one representation's caches, in
    lockstep (`run_probes`, which resumes), and write its measures beside `meta` (once).

    Args:
        pool: the representation's pool cache (or path).
        test: its test split's cache (or path), transformed as the pool.
        rep: the representation's name.
        task: the task's name.
        plan: the settings (seeds and protocol).
        out: the experiment's folder (runs/ and measures/ go under it).
        meta: what the measures file records about the representation (experiment parameters).
    """
    from toolkit.config import ALConfig
    from toolkit.experiments.diagnose import cache_measures
    from toolkit.features.probe import ProbeRun, run_probes

    al = {**PROBE_AL, **plan.al}
    dirs = run_dirs(out, rep, task, plan.seeds)
    runs = [ProbeRun(d, ALConfig(strategy=s, **al), seed)
            for d, (s, seed) in zip(dirs, [(s, seed) for s in STRATEGIES for seed in plan.seeds])]
    run_probes(pool, {"test": test}, runs)
    path = out / "measures" / f"{rep}-{task}.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        row = {"representation": rep, "task": task, **meta, **cache_measures(pool, test)}
        write_atomic(path, json.dumps(row, indent=1))


def _skip(out: Path, rep: str, task: str, reason: str, meta: dict) -> None:
    path = out / "skipped" / f"{rep}-{task}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps({"representation": rep, "task": task, **meta, "reason": reason}, indent=1))


def _toy_caches(weights: str, task: Task, plan: InterventionPlan) -> dict[str, Path]:
    from toolkit.features.cache import extract_features

    params = {**PROBE_POOL, **plan.data, **task.data_params()}  # as the suite and the dose study: caches are shared
    return {s: extract_features("toy_resnet", "toyworld", s, weights=weights, dataset_params=params,
                                root=plan.feature_root, log=None) for s in ("train", "test")}


# ---- the jobs (one task each; top-level functions, so worker processes can run them) --------------

def _erase_sweep(caches: Callable[[], dict], concept: str, prefix: str, task: str, plan: InterventionPlan,
                 out: Path, source: str) -> None:
    from toolkit.features.interventions import ConceptEraser, erase

    todo = [t for t in plan.strengths if not _done(out, f"{prefix}erase-{concept}-t{t:g}", task, plan.seeds)]
    if not todo:
        return
    c = caches()
    eraser = ConceptEraser(concept)  # fitted on the pool once, at the first cache to compute; reused for the rest
    for t in todo:
        kw = dict(concept=concept, strength=t, mode=ERASE_MODE, fit_on=c["train"], eraser=eraser,
                  root=plan.feature_root)
        pool, test = erase(c["train"], **kw), erase(c["test"], **kw)
        meta = {"intervention": "erase", "concept": concept, "strength": t, "mode": ERASE_MODE, "source": source}
        probe_representation(pool, test, f"{prefix}erase-{concept}-t{t:g}", task, plan, out, meta)


def _erase_job(task: Task, concept: str, plan: InterventionPlan, out: str, threads: int | None) -> str:
    _threads(threads)
    _erase_sweep(lambda: _toy_caches("pretrained", task, plan), concept, "", task.name, plan, Path(out),
                 "toy_resnet pretrained")
    return task.name


def _inject_job(task: Task, plan: InterventionPlan, out: str, threads: int | None) -> str:
    from toolkit.experiments.pretraining_dose import dose_name
    from toolkit.features.array_cache import read_outcome
    from toolkit.features.interventions import inject

    _threads(threads)
    out = Path(out)
    todo = [w for w in plan.doses if not _done(out, f"inject-{dose_name(w)}", task.name, plan.seeds)]
    source = _toy_caches("random", task, plan) if todo else {}
    for w in todo:
        rep = f"inject-{dose_name(w)}"
        target = _target(out, w, task, plan)
        meta = {"intervention": "inject", "concept": "label", "target_weights": w,
                "target_sep_label": target["sep_label"], "target_full_error": target["full_error"],
                "source": "toy_resnet random"}
        try:
            pool = inject(source["train"], separability=target["sep_label"], tolerance=plan.tolerance,
                          root=plan.feature_root)
            test = inject(source["test"], separability=target["sep_label"], tolerance=plan.tolerance,
                          fit_on=source["train"], calibration=pool, root=plan.feature_root)  # the pool's amplitude
        except CacheError as err:  # below the random features' own separability, or out of the tolerance's reach
            _skip(out, rep, task.name, " ".join(str(err).split()), meta)
            continue
        meta["amplitude"] = read_outcome(pool)["amplitude"]
        probe_representation(pool, test, rep, task.name, plan, out, meta)
    return task.name


def _target(out: Path, weights: str, task: Task, plan: InterventionPlan) -> dict:
    """A dose checkpoint's own measures on a task's pool (what c injects to), measured once."""
    from toolkit.experiments.diagnose import cache_measures
    from toolkit.experiments.pretraining_dose import backbone_task

    path = out / "targets" / f"{backbone_task(weights, task)}.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        row = {"weights": weights, "task": task.name, **cache_measures(*_toy_caches(weights, task, plan).values())}
        write_atomic(path, json.dumps(row, indent=1))
    return json.loads(path.read_text())


def _phase_job(task: Task, plan: InterventionPlan, out: str, threads: int | None) -> str:
    from toolkit.features.synthetic import synthetic_caches

    _threads(threads)
    sizes = {**PROBE_POOL, **plan.data}
    for ls in plan.label_grid:
        for at in plan.attribute_grid:
            rep = f"synthetic-l{ls:g}-a{at:g}"
            if _done(Path(out), rep, task.name, plan.seeds):
                continue
            caches = synthetic_caches(n_train=sizes["n_train"], n_test=sizes["n_test"] // 4 * 4, dim=plan.phase_dim,
                                      label_separability=ls, attribute_separability=at,
                                      matched_fraction=task.matched_fraction,
                                      minority_fraction=task.minority_fraction, seed=task.seed, root=plan.feature_root)
            meta = {"intervention": "synthetic", "label_separability": ls, "attribute_separability": at,
                    "matched_fraction": task.matched_fraction, "minority_fraction": task.minority_fraction,
                    "source": f"gaussian clusters, dim {plan.phase_dim}"}
            probe_representation(caches["train"], caches["test"], rep, task.name, plan, Path(out), meta)
    return task.name


def _real_job(concept: str, plan: InterventionPlan, out: str, threads: int | None) -> str:
    _threads(threads)
    _erase_sweep(lambda: _real_caches(plan), concept, "lite0-", REAL["dataset"], plan, Path(out),
                 "efficientnet_lite0 pretrained")
    return concept


def _real_caches(plan: InterventionPlan) -> dict[str, Path]:
    from toolkit.features.cache import extract_features
    from toolkit.models import model_spec

    # as the real dose study (`pretraining_dose._real_task`): each backbone at its own input size
    params = {**plan.real_data, "size": plan.real_data.get("size", model_spec(REAL["model"]).input_size)}
    return {s: extract_features(REAL["model"], REAL["dataset"], s, weights="pretrained", dataset_params=params,
                                root=plan.feature_root, log=None) for s in ("train", "test")}


def _threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


# ---- the runners ------------------------------------------------------------------------------------

def run_erase_label(plan: InterventionPlan | None = None, *, out: str | Path | None = None,
                    log: Callable[[str], None] | None = info) -> pd.DataFrame:
    """Experiment a: erase the label from the pretrained toy backbone's features at each strength.

    Args:
        plan: the settings (default: full size).
        out: the experiment's folder (default: `<cache>/interventions/a`).
        log: where progress lines go (None: silence).

    Returns:
        The table, one row per strength x task (also `<out>/table.csv`).
    """
    return _run("a", _erase_job, lambda p: {t.name: (t, "label") for t in _tasks(p)}, plan, out, log)


def run_erase_attribute(plan: InterventionPlan | None = None, *, out: str | Path | None = None,
                        log: Callable[[str], None] | None = info) -> pd.DataFrame:
    """Experiment b: erase the spurious attribute, as a erases the label (same backbone and tasks).

    Args:
        plan: the settings (default: full size).
        out: the experiment's folder (default: `<cache>/interventions/b`).
        log: where progress lines go.
    """
    return _run("b", _erase_job, lambda p: {t.name: (t, "spurious") for t in _tasks(p)}, plan, out, log)


def run_inject(plan: InterventionPlan | None = None, *, out: str | Path | None = None,
               log: Callable[[str], None] | None = info) -> pd.DataFrame:
    """Experiment c: inject the label into the random-init toy backbone's features, calibrated on
    each task's pool to the label separability each dose checkpoint has there. A target below
    the random features' own separability cannot be reached by adding signal: it is skipped
    (`<out>/skipped/`, with the reason), as one the calibration cannot bring within tolerance;
    a skipped one stays skipped on resume (delete its file to try again, e.g. with a larger tolerance).

    Args:
        plan: the settings (default: full size; `plan.doses` are pretrained first if missing).
        out: the experiment's folder (default: `<cache>/interventions/c`).
        log: where progress lines go.
    """
    return _run("c", _inject_job, lambda p: {t.name: (t,) for t in _tasks(p)}, plan, out, log)


def run_phase_diagram(plan: InterventionPlan | None = None, *, out: str | Path | None = None,
                      log: Callable[[str], None] | None = info) -> pd.DataFrame:
    """Experiment d: synthetic representations over `plan.label_grid` x `plan.attribute_grid`,
    each replicated with the first `plan.phase_tasks` suite tasks' matched and minority fractions
    (and seeds); writes `phase.csv` (`analysis.gain_law.phase_table`) beside the table.

    Args:
        plan: the settings (default: full size).
        out: the experiment's folder (default: `<cache>/interventions/d`).
        log: where progress lines go.
    """
    from toolkit.analysis.gain_law import phase_table

    table = _run("d", _phase_job, lambda p: {t.name: (t,) for t in _tasks(p, p.phase_tasks)}, plan, out, log)
    write_atomic(_folder("d", out) / "phase.csv", phase_table(table).to_csv(index=False))
    return table


def run_real_erasure(plan: InterventionPlan | None = None, *, out: str | Path | None = None,
                     log: Callable[[str], None] | None = info) -> pd.DataFrame:
    """Experiment e: a's and b's erasures on EfficientNet-Lite0 (ImageNet) features of
    fashion_places (one task: intervals over seeds only).

    Args:
        plan: the settings (default: full size; `plan.real_data` sets the dataset).
        out: the experiment's folder (default: `<cache>/interventions/e`).
        log: where progress lines go.
    """
    return _run("e", _real_job, lambda p: {c: (c,) for c in ("label", "spurious")}, plan, out, log)


RUNNERS = {"a": run_erase_label, "b": run_erase_attribute, "c": run_inject, "d": run_phase_diagram,
           "e": run_real_erasure}


def _tasks(plan: InterventionPlan, k: int | None = None) -> list[Task]:
    return draw_tasks(k or plan.tasks, seed=plan.task_seed)


def _folder(letter: str, out) -> Path:
    return Path(out) if out is not None else cache_path("interventions", letter)


def _run(letter: str, job: Callable, jobs_of: Callable, plan: InterventionPlan | None, out,
         log: Callable[[str], None] | None) -> pd.DataFrame:
    """Check, prepare the backbones, run the jobs ({name: args}), and write the table."""
    from toolkit.models.pretrain import ensure_toy_backbone, ensure_toy_doses

    plan = (plan or InterventionPlan()).check()
    log = log or (lambda _: None)
    out = _folder(letter, out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "plan.json", json.dumps({"experiment": letter, **asdict(plan)}, indent=1, default=list))
    if letter in "abc":  # before the workers start, so none of them pretrains
        ensure_toy_backbone()
    if letter == "c":
        ensure_toy_doses([w for w in plan.doses if w.startswith("pretrained@")])
    jobs = {k: (*args, plan, str(out)) for k, args in jobs_of(plan).items()}
    log(f"[intervene] {TITLES[letter]}: {len(jobs)} job(s) in {shown(out)}")
    failed = _run_jobs(job, jobs, plan.workers, log)
    if failed:
        raise RunsFailedError(f"{len(failed)} of {len(jobs)} jobs of experiment {letter} failed:\n" + "\n".join(
            f"  {k}: {why}" for k, why in failed.items()) + f"\nrerun to resume them in {shown(out)}")
    table = load_table(out)
    write_atomic(out / "table.csv", table.to_csv(index=False))
    return table


def _run_jobs(fn: Callable, jobs: dict[str, tuple], workers: int | None, log: Callable[[str], None]) -> dict:
    """In-process with one worker (or one job), else in spawned processes of one torch thread each."""
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    if workers == 1:
        for i, (key, job) in enumerate(jobs.items(), 1):
            fn(*job, None)
            log(f"[intervene] {key} done ({i}/{len(jobs)})")
        return {}
    done: list[str] = []

    def on_done(key: str, _result) -> None:
        done.append(key)
        log(f"[intervene] {key} done ({len(done)}/{len(jobs)})")

    return run_in_pools({k: (*job, 1) for k, job in jobs.items()}, fn, workers, on_done=on_done,
                        note=lambda m: log(f"[intervene] {m}"), what="jobs")


def load_table(out: str | Path) -> pd.DataFrame:
    """An experiment folder's table: one row per measured representation x task, from its
    measures/ and runs/ (`analysis.gain_law.representation_table`; a missing run is left out).

    Args:
        out: the experiment's folder.

    Raises:
        RecordError: nothing measured there yet.
    """
    from toolkit.analysis.gain_law import representation_table

    out = Path(out)
    measures = [json.loads(p.read_text()) for p in sorted((out / "measures").glob("*.json"))]
    if not measures:
        raise RecordError(f"no measured representations under {out / 'measures'}: run the experiment first")
    seeds = json.loads((out / "plan.json").read_text())["seeds"]
    records = {(m["representation"], m["task"]): [load_run(d) for d in run_dirs(out, m["representation"], m["task"],
                                                                                  seeds) if (d / "state.json").exists()]
               for m in measures}
    return representation_table(records, measures)


def load_skipped(out: str | Path) -> pd.DataFrame:
    """The representations an experiment could not make (c's unreachable targets), with the reason.

    Args:
        out: the experiment's folder.
    """
    rows = [json.loads(p.read_text()) for p in sorted((Path(out) / "skipped").glob("*.json"))]
    return pd.DataFrame(rows, columns=None if rows else ["representation", "task", "reason"])


# ---- the law, fitted on the dose study and scored on everything else --------------------------------

HELD_OUT_BACKBONES = ("data and coverage backbones", "width backbones", "real networks")  # never fitted on
PRIMARY_LAW = {"measures": ("sep_label",), "kind": "logistic"}  # fixed before looking: the measure a and c move
CANDIDATE_LAWS = ({"measures": ("sep_label",), "kind": "logistic"}, {"measures": ("sep_label",), "kind": "isotonic"},
                  {"measures": ("sep_group_worst",), "kind": "logistic"},
                  {"measures": ("full_error",), "kind": "logistic"},
                  {"measures": ("sep_label", "full_error"), "kind": "logistic"})


def dose_rows_with_error(dose_out: str | Path, plan: InterventionPlan, out: str | Path) -> pd.DataFrame:
    """The dose study's rows (`<dose_out>/dose.csv`) with the full-data probe's errors, which the
    dose study did not measure: each backbone x task's caches are opened again (an extraction
    with the plan's data options: the dose study's caches when they match) and measured once
    (`<out>/full_error/`).

    Args:
        dose_out: the dose study's folder (`altk dose --out`).
        plan: the settings (its data options and feature root must be the dose study's).
        out: where the errors are kept.
    """
    from toolkit.experiments.diagnose import cache_measures
    from toolkit.experiments.pretraining_dose import backbone_task

    table = pd.read_csv(Path(dose_out) / "dose.csv")
    sizes = {**PROBE_POOL, **plan.data}
    _check_dose_pools(Path(dose_out), sizes)
    key = hashlib.sha256(json.dumps(sizes, sort_keys=True).encode()).hexdigest()[:12]  # errors of these pools only
    errors = []
    for (w, task), _ in table.groupby(["weights", "task"], sort=False):
        path = Path(out) / "full_error" / f"{backbone_task(w, task)}-{key}.json"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            m = cache_measures(*_toy_caches(w, task_by_name(task), plan).values(), separability=False)
            write_atomic(path, json.dumps({"weights": w, "task": task, **m}))
        errors.append(json.loads(path.read_text()))
    return table.merge(pd.DataFrame(errors), on=["weights", "task"], how="left")


def _check_dose_pools(dose_out: Path, sizes: dict) -> None:
    """Refuse to pair the dose study's gains with full-data errors of other pools: the study's run
    records name their pools' options (a hand-made dose.csv without runs is taken as given)."""
    import yaml

    config = next(iter(sorted((dose_out / "runs").glob("*/config.yaml"))), None)
    if config is None:
        return
    params = yaml.safe_load(config.read_text())["config"]["data"]["params"]
    differ = {k: (params.get(k), v) for k, v in sizes.items() if params.get(k) != v}
    if differ:
        raise ConfigError(f"the dose study in {dose_out} measured its gains on other pools than these experiments "
                          f"({', '.join(f'{k}: study {a}, here {b}' for k, (a, b) in differ.items())}); the law pairs "
                          f"each dose row with its pools' full-data error, so it is not fitted here. Run without "
                          f"--small/--data, or point --dose-study at a study run with the same options")


def task_by_name(name: str) -> Task:
    """A suite task from its name: "t0-07" is task 7 of the distribution with seed 0 (`draw_tasks`).

    Args:
        name: the task's name.
    """
    import re

    m = re.fullmatch(r"t(\d+)-(\d+)", str(name))
    if not m:
        raise ConfigError(f"{name!r} is not a suite task's name (t<seed>-<index>, e.g. t0-07)")
    return draw_tasks(int(m.group(2)) + 1, seed=int(m.group(1)))[-1]


def fit_law(dose_rows: pd.DataFrame, tables: dict[str, pd.DataFrame], *, out: str | Path,
            real_rows: pd.DataFrame | None = None, n_boot: int = 2000) -> dict[str, pd.DataFrame]:
    """Fit the gain law on the dose study's step-axis rows and score it out of sample:
    leave-task-out, on the data, coverage and width backbones (never fitted on), on the real networks,
    and on each experiment's rows; and the partial correlations of the gain with each measure
    given the full-data error. Writes law.json (the primary law, which `predict_gain` reads),
    law.csv, partial.csv and predictions.csv (every held-out row's measured gain beside the
    primary law's prediction and interval) under `out`.

    Args:
        dose_rows: `dose_rows_with_error`'s table.
        tables: {experiment letter: its table}.
        out: the folder.
        real_rows: the real dose study's rows (`analysis.dose.backbone_table`), if any.
        n_boot: bootstrap resamples for the CIs.

    Returns:
        {"law": evaluations of every candidate law, "partial": partial correlations,
        "predictions": the primary law's predictions}.
    """
    from toolkit.analysis.gain_law import GainLaw, evaluate_law, law_predictions, partial_correlations

    fit_rows = dose_rows[dose_rows["axis"].isin(["step", "random"])]
    data_coverage, width, real = HELD_OUT_BACKBONES
    held = {data_coverage: dose_rows[dose_rows["axis"].isin(["images", "shapes"])],
            width: dose_rows[dose_rows["axis"] == "width"]}
    if real_rows is not None:
        held[real] = real_rows.assign(task=REAL["dataset"])
    held.update({f"experiment {k}": t for k, t in tables.items()})
    scores = []
    for spec in CANDIDATE_LAWS:
        law = GainLaw(spec["measures"], kind=spec["kind"], n_boot=0)  # intervals are not scored here
        rows = evaluate_law(law, fit_rows, held, n_boot=n_boot)
        scores.append(rows.assign(law=law.clone().fit(fit_rows).describe(), primary=spec == PRIMARY_LAW))
    primary = GainLaw(PRIMARY_LAW["measures"], kind=PRIMARY_LAW["kind"]).fit(fit_rows)
    primary.save(Path(out) / "law.json")
    result = {"law": pd.concat(scores, ignore_index=True), "partial": partial_correlations(dose_rows, n_boot=n_boot),
              "predictions": law_predictions(primary, fit_rows, held)}
    for name, frame in result.items():
        write_atomic(Path(out) / f"{name}.csv", frame.to_csv(index=False))
    return result


# ---- everything ---------------------------------------------------------------------------------------

def run_interventions(experiments=EXPERIMENTS, plan: InterventionPlan | None = None, *, out: str | Path | None = None,
                      dose_out: str | Path | None = None, real_out: str | Path | None = None,
                      n_boot: int = 2000, log: Callable[[str], None] | None = info) -> dict:
    """Run (or resume) the chosen experiments, then fit and score the gain law when the dose
    study's table is there.

    Args:
        experiments: letters of `EXPERIMENTS` (default: all).
        plan: the settings (default: full size; `InterventionPlan.small()` for small ones).
        out: the root folder; each experiment writes `<out>/<letter>/` (default: `<cache>/interventions`).
        dose_out: the dose study's folder (default `<cache>/dose-study`): its dose.csv is what
            the law is fitted on, and c is compared with.
        real_out: the real dose study's folder (default `<cache>/dose-real`), a held-out set.
        n_boot: bootstrap resamples of the tasks for the law's CIs.
        log: where progress lines go.

    Returns:
        {"tables": {letter: table}, "skipped": {letter: table}, "dose": the dose rows (or None),
        "real": the real rows (or None), "law": law evaluations, "partial": partial correlations,
        "predictions": the primary law's predictions beside the measured gains (the last three
        None without the dose study)}.

    Examples:
        >>> import toolkit
        >>> plan = InterventionPlan.small(seeds=(0,), phase_tasks=1, data={"n_train": 240, "n_test": 160},
        ...                               al={"seed_size": 10, "per_round": 5, "budget": 5})
        >>> result = toolkit.run_interventions("d", plan, out="altk-doc/interventions", log=None)
        >>> result["tables"]["d"][["label_separability", "attribute_separability", "auc_gain"]].shape
        (4, 3)
    """
    unknown = [e for e in experiments if e not in EXPERIMENTS]
    if unknown or not experiments:
        raise ConfigError(f"unknown experiment(s) {unknown or list(experiments)}; valid: {', '.join(EXPERIMENTS)}")
    plan = (plan or InterventionPlan()).check()
    root = Path(out) if out is not None else cache_path("interventions")
    tables = {e: RUNNERS[e](plan, out=root / e, log=log) for e in experiments}
    result = {"tables": tables, "skipped": {e: load_skipped(root / e) for e in experiments},
              "dose": None, "real": None, "law": None, "partial": None, "predictions": None}
    dose_out = Path(dose_out) if dose_out is not None else cache_path("dose-study")
    real_out = Path(real_out) if real_out is not None else cache_path("dose-real")
    if (real_out / "dose.csv").is_file():
        result["real"] = pd.read_csv(real_out / "dose.csv")
    if (dose_out / "dose.csv").is_file():
        try:
            result["dose"] = dose_rows_with_error(dose_out, plan, root)
        except ConfigError as err:  # the experiments' tables stand; only the law needs matching pools
            if log:
                log(f"[intervene] {err}")
        else:
            result.update(fit_law(result["dose"], tables, out=root, real_rows=result["real"], n_boot=n_boot))
    elif log:
        log(f"[intervene] no dose study at {dose_out} (dose.csv): the law is not fitted; run `altk dose` first")
    return result


def write_report(result: dict, out: str | Path, *, command: str = "") -> str:
    """The printed summary (interventions.txt) and the figures' page (interventions.html) of
    `run_interventions`'s result. Returns the text.

    Args:
        result: `run_interventions`'s output.
        out: the root folder.
        command: the command that made it (shown on the page).
    """
    from toolkit.analysis.gain_law import phase_table
    from toolkit.report import figures
    from toolkit.report.tables import format_interventions, format_law, format_phase, format_predictions

    out, tables = Path(out), result["tables"]
    parts = [format_interventions(_summary(e, t), title=TITLES[e], skipped=result["skipped"].get(e))
             for e, t in tables.items()]
    parts += [format_phase(phase_table(tables["d"]))] if "d" in tables else []
    parts += [format_law(result["law"], result["partial"])] if result["law"] is not None else []
    if result.get("predictions") is not None:
        backbones = [e for e in dict.fromkeys(result["predictions"]["evaluation"]) if e in HELD_OUT_BACKBONES]
        parts += [format_predictions(result["predictions"], backbones)] if backbones else []
    text = "\n\n".join(parts)
    points, marks = gain_points(result)
    page = [("Gain against label separability", figures.gain_separability_figure(points))] if len(points) else []
    if "d" in tables:
        page.append(("Phase diagram", figures.phase_diagram_figure(phase_table(tables["d"]), marks)))
    if result.get("predictions") is not None:
        page.append(("The gain law out of sample", figures.law_figure(result["predictions"])))
    write_atomic(out / "interventions.txt", text + "\n")
    write_atomic(out / "interventions.html", figures.figures_page("Is it the representation?", page, text=text,
                                                                  command=command))
    return text


def _summary(letter: str, table: pd.DataFrame) -> pd.DataFrame:
    """Per representation: the gain over tasks and the mean measures, with its series' name."""
    from toolkit.analysis.gain_law import gain_by_representation

    summary = gain_by_representation(table)
    first = table.drop_duplicates("representation").set_index("representation")
    concept = first["concept"].reindex(summary["representation"]).to_numpy() if "concept" in first else None
    names = {"a": "a: erase the label", "b": "b: erase the attribute", "c": "c: inject the label",
             "d": "d: synthetic"}
    series = [f"e: Lite0, erase the {'label' if c == 'label' else 'attribute'}" for c in concept] if letter == "e" \
        else [names[letter]] * len(summary)
    return summary.assign(series=series)


def gain_points(result: dict) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """What the figures draw: (per representation and per dose backbone, the gain over tasks
    against the mean label separability, with a "series" column; the measured backbones'
    mean (sep_label, sep_spurious), for the phase diagram's marks, or None).

    Args:
        result: `run_interventions`'s output.
    """
    from toolkit.analysis.gain_law import gain_by_representation

    frames = [_summary(e, t) for e, t in result["tables"].items() if e != "d"]
    marks = []
    if result["dose"] is not None:
        dose = gain_by_representation(result["dose"], by="weights").rename(columns={"weights": "representation"})
        frames.append(dose.assign(series="dose study (pretraining)"))
        marks.append(dose[["representation", "sep_label", "sep_spurious"]])
    if result["real"] is not None:
        marks.append(result["real"].rename(columns={"backbone": "representation"})[
            ["representation", "sep_label", "sep_spurious"]])
    points = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return points, (pd.concat(marks, ignore_index=True).rename(columns={"representation": "name"}) if marks else None)
