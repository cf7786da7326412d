"""The fault suite (issue #13): a process killed at each stage boundary (`ALTK_KILL_AT`,
toolkit/faults.py: os._exit, as SIGKILL) and then rerun must leave the same record or
cache as an uninterrupted run."""
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_DATA

from toolkit.al.loop import run_active_learning
from toolkit.features.cache import extract_features, open_cache

SCRIPT = """
import json, sys
from toolkit.config import config_from_dict
from toolkit.al.loop import run_active_learning
run_active_learning(config_from_dict(json.loads(open(sys.argv[1]).read())), sys.argv[2], log=None)
"""


def _killed(args, point, tmp_path):
    env = {**os.environ, "ALTK_KILL_AT": point, "ALTK_NO_PRETRAIN": "1"}
    proc = subprocess.run([sys.executable, *args], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 137, f"the kill point {point} was never reached:\n{proc.stderr[-2000:]}"


def _same_record(a, b):
    drop = lambda r: r.rounds.drop(columns=[c for c in r.rounds.columns if c.startswith("time/") or "seconds" in c])
    pd.testing.assert_frame_equal(drop(a), drop(b))
    pd.testing.assert_frame_equal(a.acquisitions, b.acquisitions)
    assert a.status == b.status == "finished"


@pytest.fixture(scope="module")
def uninterrupted(tiny_backbone, tmp_path_factory):
    from toolkit.config import resolve_config

    root = tmp_path_factory.mktemp("faults")
    cfg = resolve_config("toy", {"data": {"params": {**TINY_DATA, "cache_dir": str(root / "data")}},
                                 "model": {"weights": str(tiny_backbone)},
                                 "finetune": {"max_steps": 6, "micro_batch": 16},
                                 "al": {"seed_size": 10, "per_round": 5, "budget": 10}, "eval_batch_size": 128})
    (root / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    return cfg, root, run_active_learning(cfg, root / "reference", log=None)


@pytest.mark.parametrize("point", ["loop:trained:1", "loop:evaluated:1", "loop:scored:1", "loop:before_record:1",
                                   "record:rounds_written:1", "record:rounds_written:2", "loop:trained:0"])
def test_run_killed_at_each_stage_resumes_to_the_same_record(uninterrupted, point, tmp_path):
    cfg, root, reference = uninterrupted
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    _killed([str(script), str(root / "cfg.json"), str(tmp_path / "run")], point, tmp_path)
    _same_record(run_active_learning(cfg, tmp_path / "run", log=None), reference)


@pytest.mark.parametrize("point", ["probe:scored:1", "probe:before_record:2", "record:rounds_written:4"])
def test_probe_killed_at_each_stage_resumes_to_the_same_record(tiny_backbone, tmp_path, point):
    from toolkit.config import ALConfig
    from toolkit.features.probe import run_probe

    kw = dict(weights=str(tiny_backbone), dataset_params={**TINY_DATA, "cache_dir": str(tmp_path / "data")},
              root=tmp_path / "f", log=None)
    pool, test = (extract_features("toy_resnet", "toyworld", s, **kw) for s in ("train", "test"))
    al = ALConfig(strategy="least_confidence", seed_size=10, per_round=5, budget=20)
    reference = run_probe(pool, {"test": test}, tmp_path / "reference", al=al, seed=1)
    script = tmp_path / "probe.py"
    script.write_text("import sys\nfrom toolkit.config import ALConfig\nfrom toolkit.features.probe import run_probe\n"
                      "run_probe(sys.argv[1], {'test': sys.argv[2]}, sys.argv[3], seed=1, al=ALConfig("
                      "strategy='least_confidence', seed_size=10, per_round=5, budget=20))\n")
    _killed([str(script), str(pool), str(test), str(tmp_path / "run")], point, tmp_path)
    _same_record(run_probe(pool, {"test": test}, tmp_path / "run", al=al, seed=1), reference)


@pytest.mark.parametrize("point", ["extract:chunk_written:0", "extract:chunk_written:2", "extract:before_verify:0"])
def test_extraction_killed_at_each_stage_resumes_to_the_same_cache(tiny_backbone, tmp_path, point):
    kw = dict(weights=str(tiny_backbone), dataset_params={**TINY_DATA, "cache_dir": str(tmp_path / "data")},
              chunk_rows=50, log=None)
    reference = extract_features("toy_resnet", "toyworld", "test", root=tmp_path / "a", **kw)
    script = tmp_path / "extract.py"
    script.write_text("import sys, json\nfrom toolkit.features.cache import extract_features\n"
                      "extract_features('toy_resnet', 'toyworld', 'test', root=sys.argv[1], **json.loads(sys.argv[2]))\n")
    _killed([str(script), str(tmp_path / "b"), json.dumps(kw)], point, tmp_path)
    path = extract_features("toy_resnet", "toyworld", "test", root=tmp_path / "b", **kw)
    a, b = open_cache(reference), open_cache(path)
    assert np.array_equal(a.embeddings, b.embeddings) and a.fingerprint == b.fingerprint


SWEEP_SCRIPT = """
import json, sys
from toolkit.config import config_from_dict
from toolkit.al.sweep import Sweep
if __name__ == "__main__":  # the pool's workers are spawned: they import this file
    cfgs = {name: config_from_dict(c) for name, c in json.loads(open(sys.argv[1]).read()).items()}
    sweep = Sweep(sys.argv[2], cfgs)
    sweep.launch_local(workers=1)
    sweep.aggregate()
"""


@pytest.fixture(scope="module")
def sweep_reference(uninterrupted, tmp_path_factory):
    import dataclasses

    cfg, root, _ = uninterrupted
    cfgs = {f"s{seed}": dataclasses.replace(cfg, seed=seed) for seed in (0, 1)}
    (root / "sweep.json").write_text(json.dumps({n: c.to_dict() for n, c in cfgs.items()}))
    (root / "sweep.py").write_text(SWEEP_SCRIPT)
    out = tmp_path_factory.mktemp("sweep-reference")
    subprocess.run([sys.executable, str(root / "sweep.py"), str(root / "sweep.json"), str(out)], check=True,
                   env={**os.environ, "ALTK_NO_PRETRAIN": "1"}, cwd=out, capture_output=True)
    return root, out


@pytest.mark.parametrize("point", ["sweep:run_returned:0", "sweep:aggregated:0"])
def test_sweep_killed_in_its_bookkeeping_resumes_to_the_same_table(sweep_reference, point, tmp_path):
    """The sweep's own process killed after a run returned (index not yet updated) or before
    rounds.csv was written: the rerun finishes, marks every run done, and writes the table an
    uninterrupted sweep writes; no temporary file is left behind."""
    root, reference = sweep_reference
    args = [str(root / "sweep.py"), str(root / "sweep.json"), str(tmp_path / "sweep")]
    _killed(args, point, tmp_path)
    subprocess.run([sys.executable, *args], check=True, env={**os.environ, "ALTK_NO_PRETRAIN": "1"}, cwd=tmp_path,
                   capture_output=True)
    index = json.loads((tmp_path / "sweep" / "index.json").read_text())
    assert {n: v["status"] for n, v in index.items()} == {"s0": "done", "s1": "done"}
    timing = lambda df: df.drop(columns=[c for c in df.columns if "seconds" in c or c.startswith("time")])  # noqa: E731
    pd.testing.assert_frame_equal(timing(pd.read_csv(tmp_path / "sweep" / "rounds.csv")),
                                  timing(pd.read_csv(reference / "rounds.csv")))
    assert not list((tmp_path / "sweep").glob(".*tmp*"))


def test_sweep_rerun_after_its_weights_changed_refuses_to_reuse_or_resume(tiny_backbone, tmp_path):
    """The sweep's digest check on reuse: a sweep killed after its first run returned, then its
    weights file replaced in place. The rerun refuses, naming the runs and the weights, instead
    of reusing the finished run (its record answers for the old weights) or resuming the other
    on the new ones; no record is touched and no table is written."""
    import shutil

    import torch

    from toolkit.config import resolve_config

    weights = tmp_path / "W.pt"
    shutil.copy(tiny_backbone, weights)
    cfgs = {f"s{seed}": resolve_config("toy", {
        "data": {"params": {**TINY_DATA, "cache_dir": str(tmp_path / "data")}}, "model": {"weights": str(weights)},
        "finetune": {"max_steps": 6, "micro_batch": 16}, "al": {"seed_size": 10, "per_round": 5, "budget": 10},
        "eval_batch_size": 128, "seed": seed}).to_dict() for seed in (0, 1)}
    (tmp_path / "sweep.json").write_text(json.dumps(cfgs))
    (tmp_path / "sweep.py").write_text(SWEEP_SCRIPT)
    args = [str(tmp_path / "sweep.py"), str(tmp_path / "sweep.json"), str(tmp_path / "sweep")]
    _killed(args, "sweep:run_returned:0", tmp_path)
    saved = torch.load(weights, map_location="cpu", weights_only=False)  # other weights, same file name
    key = next(k for k, v in saved["backbone"].items() if v.is_floating_point())
    saved["backbone"][key] = saved["backbone"][key] + 0.01
    torch.save(saved, weights)
    records = {p: p.read_bytes() for p in (tmp_path / "sweep" / "runs").rglob("rounds.jsonl")}
    assert records  # the run that returned before the kill
    proc = subprocess.run([sys.executable, *args], env={**os.environ, "ALTK_NO_PRETRAIN": "1"}, cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "RecordError" in proc.stderr, proc.stderr[-2000:]
    assert "made on other inputs: s0 (weights)" in proc.stderr and "weights changed since" in proc.stderr
    assert {p: p.read_bytes() for p in (tmp_path / "sweep" / "runs").rglob("rounds.jsonl")} == records
    assert not (tmp_path / "sweep" / "rounds.csv").exists()


def test_the_report_splits_arms_by_config_and_describes_a_killed_run_against_its_own_budget(tmp_path):
    """The report's arm splitting, on records a kill and a changed setting leave: a run killed
    after its first round, its finished twin with another seed, and a finished seed-0 run with a
    smaller al.budget. The two budgets are two arms (never "CI over seeds" from one seed), and the
    killed run is "stopped at 20 of 40 labels", its own budget."""
    from toolkit.record import RunWriter
    from toolkit.report.html import build_report

    def record(name, seed, budget, curve, finished):
        cfg = {"model": {"name": "m", "weights": "pretrained"}, "seed": seed,
               "al": {"strategy": "random", "seed_size": 10, "per_round": 10, "budget": budget}}
        w = RunWriter(tmp_path / name, cfg, {"pool_group_shares": {"y0_s0": 0.5, "y1_s1": 0.5},
                                             "acquisition_sizes": [10] * (budget // 10)})
        for r, v in enumerate(curve):
            last = finished and r == len(curve) - 1
            w.append_round({"round": r, "n_labels": 10 + 10 * r, "metrics": {"test": {"accuracy": v, "worst_group": v}},
                            "acquired": [] if last else [{"id": 100 * r + i, "group": "y0_s0", "score": 0.0}
                                                         for i in range(10)],
                            **({"seed_set": [{"id": 9999, "group": "y1_s1"}]} if r == 0 else {})}, finished=last)
        return tmp_path / name

    runs = [record("killed", 0, 30, [0.5, 0.6], False), record("twin", 1, 30, [0.5, 0.6, 0.7, 0.8], True),
            record("small", 0, 10, [0.5, 0.9], True)]
    page = build_report(runs, tmp_path / "r.html", representation=False).read_text()
    assert "The runs differ in config fields al.budget" in page
    assert "al.budget=10" in page and "al.budget=30" in page and "0.900 (n=1)" in page
    assert "killed: stopped at 20 of 40 labels" in page and "small:" not in page
    assert "nan, nan" not in page and "already counted" not in page
