"""The robustness suite: the paper's claims measured across a seeded family of toy-world tasks.

A task is what the world *is*: which shapes make each label, which background hues make
each place, how strongly the background predicts the label, and how rare the minority
class is. `draw_tasks` samples tasks; `run_task_suite` runs pretrained vs unpretrained x
least-confidence vs random x seeds on each (probe mode by default, full finetuning through
`toolkit.sweep`); `suite_table` and `claim_shares` turn the run records into one row per
task and the share of tasks in which each claim holds.

Claims are measured on the area under the worst-group curve (mean worst-group accuracy over
the label counts of the run) and on label efficiency, not only at the last round, because a
strong backbone can saturate random sampling's final value.
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing as mp
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.render import SHAPES
from ..metrics import mean_ci
from ..probe_demo import AL as PROBE_AL, POOL as PROBE_DATA  # the probe demo's protocol, one definition
from ..record import RunRecord, load_run, write_atomic
from .composition import upsampling_ratios
from .curves import label_efficiency_table, paired_gains, tidy_rounds

METRIC = "test/worst_group"
ARMS = [(w, s) for w in ("pretrained", "random") for s in ("least_confidence", "random")]
CLAIMS = {
    "uncertainty_beats_random": "pretrained: least-confidence beats random (worst-group AUC gain, paired 95% CI "
                                "above 0, and label efficiency above 1)",
    "mismatched_upsampled_2x": "pretrained least-confidence acquires both mismatched groups at >= 2x their pool share",
    "minority_matched_below_mismatched": "the matched minority-class group is upsampled less than either "
                                         "mismatched group (not simply 'the minority class')",
    "unpretrained_gain_smaller": "the unpretrained gain is clearly smaller (pretrained minus unpretrained AUC "
                                 "gain, paired over seeds, 95% CI above 0)",
}


@dataclass(frozen=True)
class Task:
    """One toy-world task: everything here goes into the dataset's params (and fingerprints)."""

    name: str
    label_shapes: tuple
    place_hues: tuple
    matched_fraction: float
    minority_fraction: float
    seed: int

    def data_params(self) -> dict:
        return {"label_shapes": [list(f) for f in self.label_shapes], "place_hues": [list(h) for h in self.place_hues],
                "matched_fraction": self.matched_fraction, "minority_fraction": self.minority_fraction,
                "seed": self.seed}

    def overrides(self) -> list[str]:
        """`--set` overrides that select this task in any toy-world preset."""
        return [f"data.params.{k}={json.dumps(v)}" for k, v in self.data_params().items()]


def draw_tasks(k: int, *, seed: int = 0, family_size: int = 3, matched: tuple = (0.90, 0.97),
               minority: tuple = (0.20, 0.35), hue_width: tuple = (0.10, 0.18), min_hue_gap: float = 0.08) -> list[Task]:
    """K tasks from a seeded distribution. Task i depends only on (seed, i), so the first 5
    of 20 tasks are the 5 tasks of K = 5, and any one can be re-drawn alone.

    Each task: two disjoint label families of `family_size` shapes from all 20; two
    disjoint hue intervals of width in `hue_width`, at least `min_hue_gap` apart on the hue
    circle; a matched fraction and a minority fraction drawn uniformly; a world seed.
    """
    if k < 1 or 2 * family_size > len(SHAPES):
        raise ValueError(f"draw_tasks: need k >= 1 and 2 x family_size <= {len(SHAPES)}, got k={k}, "
                         f"family_size={family_size}")
    tasks = []
    for i in range(k):
        rng = np.random.default_rng([seed, i, 7919])
        shapes = [SHAPES[j] for j in rng.permutation(len(SHAPES))[:2 * family_size]]
        w0, w1 = rng.uniform(*hue_width, 2)
        lo0 = rng.uniform(0, 1)
        gap = rng.uniform(min_hue_gap, 1 - w0 - w1 - min_hue_gap)  # the gap on the other side stays >= min
        lo1 = (lo0 + w0 + gap) % 1.0
        hues = ((round(lo0, 3), round(lo0 + w0, 3)), (round(lo1, 3), round(lo1 + w1, 3)))
        tasks.append(Task(
            name=f"t{seed}-{i:02d}",
            label_shapes=(tuple(sorted(shapes[:family_size])), tuple(sorted(shapes[family_size:]))),
            place_hues=hues,
            matched_fraction=round(float(rng.uniform(*matched)), 3),
            minority_fraction=round(float(rng.uniform(*minority)), 3),
            seed=int(rng.integers(1, 2**31 - 1)),
        ))
    return tasks


def arm_name(task: Task | str, weights: str, strategy: str, seed: int) -> str:
    name = task.name if isinstance(task, Task) else task
    return f"{name}-{'pre' if weights == 'pretrained' else 'unpre'}-{strategy}-s{seed}"


# ---------------------------------------------------------------- running

def _probe_task(task: Task, seeds: list[int], out: str, data: dict, al: dict, feature_root: str,
                threads: int | None) -> list[str]:
    """Extract the task's caches for both weights and run its probe arms (one worker's job)."""
    import torch

    from ..config import ALConfig
    from ..features import extract_features
    from ..probe import run_probe

    if threads:
        torch.set_num_threads(threads)
    params = {**data, **task.data_params()}
    done = []
    for weights in ("pretrained", "random"):
        caches = {split: extract_features("toy_resnet", "toyworld", split, weights=weights, dataset_params=params,
                                          root=feature_root, log=None) for split in ("train", "test")}
        for strategy in ("least_confidence", "random"):
            for s in seeds:
                run_dir = Path(out) / "runs" / arm_name(task, weights, strategy, s)
                run_probe(caches["train"], {"test": caches["test"]}, run_dir,
                          al=ALConfig(strategy=strategy, **al), seed=s)
                done.append(str(run_dir))
    return done


def full_configs(tasks: list[Task], seeds: list[int], *, preset: str = "toy", overrides: list[str] | None = None):
    """One run config per task x arm x seed (full finetuning), named by `arm_name`."""
    from ..config import resolve_config

    return {arm_name(t, w, s, seed): resolve_config(preset, t.overrides() + list(overrides or []) +
                                                    [f"model.weights={w}", f"al.strategy={s}", f"seed={seed}"])
            for t in tasks for w, s in ARMS for seed in seeds}


def run_task_suite(tasks: list[Task], seeds: list[int], *, out: str | Path = "cache/suite", mode: str = "probe",
                   data: dict | None = None, al: dict | None = None, overrides: list[str] | None = None,
                   feature_root: str | Path = "cache/features", workers: int | None = None,
                   launcher: str = "local", launcher_kwargs: dict | None = None, log=print) -> dict[str, list[RunRecord]]:
    """Run every task's arms; returns {task name: its run records}. Re-running resumes.

    mode "probe": frozen features of the pretrained and unpretrained toy backbone, a linear
    probe (pool `data`, default 4,000; protocol `al`, default 40 -> 100 labels by 5);
    tasks are spread over `workers` processes. mode "full": full finetuning with the `toy`
    preset plus `overrides`, as one `toolkit.sweep.Sweep` (local pool, or submitit with
    `launcher="submitit"`).
    """
    import os

    from ..pretrain import ensure_toy_backbone

    if mode == "probe" and overrides:
        raise ValueError("`--set`/`overrides` are full-finetuning config keys; in probe mode set `data` (dataset "
                         "params) and `al` (protocol) instead")
    if mode == "full" and (data or al):
        raise ValueError("in full mode set dataset and protocol options through `--set`/`overrides` "
                         "(e.g. al.budget=60, data.params.n_train=2000), not `data`/`al`")
    if mode not in ("probe", "full"):
        raise ValueError(f"unknown suite mode {mode!r}; valid: probe, full")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    listed = {t["name"]: t for t in json.loads((out / "tasks.json").read_text())} if (out / "tasks.json").exists() else {}
    listed.update({t.name: asdict(t) for t in tasks})  # --only adds to the list, never drops a task
    write_atomic(out / "tasks.json", json.dumps(sorted(listed.values(), key=lambda t: t["name"]), indent=1))
    ensure_toy_backbone()
    workers = workers or os.cpu_count() or 1
    if mode == "probe":
        data, al = {**PROBE_DATA, **(data or {})}, {**PROBE_AL, **(al or {})}
        jobs = [(t, list(seeds), str(out), data, al, str(feature_root)) for t in tasks]
        if workers == 1 or len(tasks) == 1:  # in-process: simplest to debug, and what a notebook wants
            for i, job in enumerate(jobs, 1):
                _probe_task(*job, None)
                if log:
                    log(f"[suite] {job[0].name} done ({i}/{len(tasks)} tasks)")
        else:  # one torch thread per process: tasks are independent, so processes scale best
            with cf.ProcessPoolExecutor(min(workers, len(tasks)), mp_context=mp.get_context("spawn")) as pool:
                futures = {pool.submit(_probe_task, *job, 1): job[0] for job in jobs}
                for i, fut in enumerate(cf.as_completed(futures), 1):
                    fut.result()
                    if log:
                        log(f"[suite] {futures[fut].name} done ({i}/{len(tasks)} tasks)")
    elif mode == "full":
        from ..sweep import Sweep

        sweep = Sweep(out, full_configs(tasks, seeds, overrides=overrides))
        if launcher == "local":
            results = sweep.launch_local(workers=workers)
        elif launcher == "submitit":
            results = sweep.launch_submitit(**(launcher_kwargs or {}))
        else:
            raise ValueError(f"unknown launcher {launcher!r}; valid: local, submitit")
        failed = [n for n, s in results.items() if s != "done"]
        if failed:
            raise RuntimeError(f"{len(failed)} suite runs failed ({', '.join(failed[:5])}...); see {out / 'index.json'}")
    return load_suite(out, tasks, seeds)


def load_suite(out: str | Path, tasks: list[Task], seeds: list[int]) -> dict[str, list[RunRecord]]:
    """The run records of a suite folder, grouped by task (missing runs are skipped)."""
    runs = Path(out) / "runs"
    found = {}
    for t in tasks:
        dirs = [runs / arm_name(t, w, s, seed) for w, s in ARMS for seed in seeds]
        found[t.name] = [load_run(d) for d in dirs if (d / "state.json").exists()]
    return found


# ---------------------------------------------------------------- analysis

def finished_records(records: list[RunRecord]) -> list[RunRecord]:
    """Finished runs only: a partial run never counts as a seed at the final budget."""
    return [r for r in records if r.status == "finished"]


def task_row(records: list[RunRecord], *, metric: str = METRIC, boot_seed: int = 0) -> dict:
    """One task's measurements and claims from its run records (finished runs only)."""
    records = finished_records(records)
    if not records:
        raise ValueError("task_row: no finished runs")
    tidy = tidy_rounds(records)
    short = {"pretrained": "pre", "random": "unpre"}
    row: dict = {}
    gains = paired_gains(tidy, metric, by=["weights"])
    effs = label_efficiency_table(tidy, metric, by=["weights"], seed=boot_seed).set_index("weights")
    last = tidy.loc[tidy.groupby("run")["round"].idxmax()]
    for w, p in short.items():
        g = gains[gains["weights"] == w]
        row[f"{p}_n_seeds"] = len(g)
        for kind in ("auc_gain", "final_gain"):
            row[f"{p}_{kind}"], row[f"{p}_{kind}_low"], row[f"{p}_{kind}_high"] = mean_ci(g[kind])
        for s, key in (("least_confidence", "lc"), ("random", "rnd")):
            fin = last[(last["weights"] == w) & (last["strategy"] == s)]
            row[f"{p}_{key}_final"] = float(fin[metric].mean()) if len(fin) else np.nan
            row[f"{p}_{key}_final_accuracy"] = float(fin["test/accuracy"].mean()) if "test/accuracy" in fin else np.nan
        e = effs.loc[w] if w in effs.index else None
        row[f"{p}_efficiency"], row[f"{p}_efficiency_low"], row[f"{p}_efficiency_high"] = (
            (e["efficiency"], e["low"], e["high"]) if e is not None else (np.nan,) * 3)
    both = gains.pivot_table(index="seed", columns="weights", values="auc_gain").dropna()
    diff = both["pretrained"] - both["random"] if {"pretrained", "random"} <= set(both.columns) else []
    row["gain_difference"], row["gain_difference_low"], row["gain_difference_high"] = mean_ci(diff)

    # which groups least-confidence acquires: mismatched = label != place; the matched
    # minority-class group is the rarer class on its own (matched) background
    shares = records[0].meta.get("pool_group_shares") or {}
    class_share: dict[str, float] = {}
    for g, v in shares.items():
        class_share[g.split("_")[0]] = class_share.get(g.split("_")[0], 0.0) + v
    minority = min(class_share, key=class_share.get) if class_share else "y1"
    matched_minority = f"{minority}_s{minority[1:]}"
    mismatched = sorted(g for g in shares if g.split("_")[0][1:] != g.split("_")[1][1:])
    row["minority_group"] = matched_minority
    lc = [r for r in records if r.config["config"]["al"]["strategy"] == "least_confidence"]
    ratios = upsampling_ratios(lc) if lc else pd.DataFrame(columns=["weights", "group", "upsampling"])
    up = ratios.groupby(["weights", "group"])["upsampling"].mean()
    for w, p in short.items():
        for g in sorted(shares):
            row[f"{p}_up_{g}"] = float(up.get((w, g), np.nan))
    pre_up = [row[f"pre_up_{g}"] for g in mismatched]
    row["pre_up_mismatched_min"] = float(np.min(pre_up)) if pre_up else np.nan
    row["pre_up_minority_matched"] = row.get(f"pre_up_{matched_minority}", np.nan)

    row["uncertainty_beats_random"] = bool(row["pre_auc_gain_low"] > 0 and row["pre_efficiency"] > 1)
    row["mismatched_upsampled_2x"] = bool(row["pre_up_mismatched_min"] >= 2)
    row["minority_matched_below_mismatched"] = bool(row["pre_up_minority_matched"] < row["pre_up_mismatched_min"])
    row["unpretrained_gain_smaller"] = bool(row["gain_difference_low"] > 0)
    return row


def suite_table(records_by_task: dict[str, list[RunRecord]], tasks: list[Task] | None = None, *,
                metric: str = METRIC) -> pd.DataFrame:
    """One row per task: its parameters, gains with CIs, efficiencies, upsampling and claims."""
    by_name = {t.name: t for t in tasks or []}
    rows = []
    for name, recs in records_by_task.items():
        row = {"task": name}
        if name in by_name:
            t = by_name[name]
            row.update(label_0=" ".join(t.label_shapes[0]), label_1=" ".join(t.label_shapes[1]),
                       hues_0=f"{t.place_hues[0][0]:.3f}-{t.place_hues[0][1]:.3f}",
                       hues_1=f"{t.place_hues[1][0]:.3f}-{t.place_hues[1][1]:.3f}",
                       matched_fraction=t.matched_fraction, minority_fraction=t.minority_fraction, world_seed=t.seed)
        row.update(task_row(recs, metric=metric))
        rows.append(row)
    return pd.DataFrame(rows)


def claim_shares(table: pd.DataFrame) -> pd.DataFrame:
    """For each claim: in how many tasks it holds, and the share."""
    return pd.DataFrame([{"claim": c, "holds": int(table[c].sum()), "tasks": len(table),
                          "share": float(table[c].mean()) if len(table) else float("nan"), "meaning": text}
                         for c, text in CLAIMS.items()])


def aggregate(table: pd.DataFrame) -> pd.DataFrame:
    """Mean [95% t-CI] across tasks of each per-task quantity."""
    rows = []
    for col in ("pre_auc_gain", "unpre_auc_gain", "gain_difference", "pre_final_gain", "unpre_final_gain",
                "pre_efficiency", "pre_up_mismatched_min", "pre_up_minority_matched",
                "pre_lc_final", "pre_rnd_final", "unpre_lc_final", "unpre_rnd_final"):
        if col in table:
            m, lo, hi = mean_ci(table[col])
            rows.append({"quantity": col, "mean": m, "low": lo, "high": hi, "tasks": int(table[col].notna().sum())})
    return pd.DataFrame(rows)


def format_suite(table: pd.DataFrame) -> str:
    """The printed summary: per-task gains, the aggregate, and the share of tasks per claim."""
    def ci(r, k, f="{:+.3f}"):
        return f"{f.format(r[k])} [{f.format(r[k + '_low'])}, {f.format(r[k + '_high'])}]"

    lines = [f"Per task ({METRIC.split('/')[1]} AUC gain of least-confidence over random, paired 95% CI; "
             "efficiency; upsampling of the two mismatched groups / matched minority group):"]
    for _, r in table.iterrows():
        mism = "/".join(f"{r[c]:.1f}" for c in sorted(c for c in r.index if c.startswith("pre_up_y"))
                        if c.split("_")[2][1:] != c.split("_")[3][1:])
        flags = "".join("Y" if r[c] else "." for c in CLAIMS)
        lines.append(f"  {r['task']:<9} pre {ci(r, 'pre_auc_gain')}  unpre {ci(r, 'unpre_auc_gain')}  "
                     f"eff {r['pre_efficiency']:.2f}x  up {mism} / {r['pre_up_minority_matched']:.1f}  [{flags}]")
    lines.append("")
    lines.append(f"Across {len(table)} tasks (mean [95% t-CI over tasks]):")
    for _, r in aggregate(table).iterrows():
        lines.append(f"  {r['quantity']:<26}{r['mean']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}]")
    lines.append("")
    lines.append("Claims (share of tasks in which each holds; flags above in this order):")
    for _, r in claim_shares(table).iterrows():
        lines.append(f"  {r['holds']:>3}/{r['tasks']:<3} ({r['share']:.0%})  {r['claim']}: {r['meaning']}")
    return "\n".join(lines)
