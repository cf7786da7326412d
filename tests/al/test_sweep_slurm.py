"""Sweeps on a real single-node Slurm cluster (issue #23): the records equal a local sweep's;
a requeued (pre-empted) job resumes its run to the same record; a cancelled job is reported.
Skipped where Slurm is not installed; .ci/run installs it."""
import json
import os
import subprocess
import threading
import time

import pandas as pd
import pytest
import slurm_cluster
from test_sweep import _tiny_sweep

from toolkit.al.sweep import parse_grid
from toolkit.record import load_run

pytestmark = pytest.mark.skipif(slurm_cluster.available() is not None, reason=str(slurm_cluster.available()))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm")
    env = slurm_cluster.start(root)
    yield env
    slurm_cluster.stop(root, env)


@pytest.fixture
def on_cluster(cluster, monkeypatch):
    for k, v in cluster.items():
        monkeypatch.setenv(k, v)
    return cluster


def _same(a, b):
    drop = lambda r: r.rounds.drop(columns=[c for c in r.rounds.columns if c.startswith("time/") or "seconds" in c])
    pd.testing.assert_frame_equal(drop(a), drop(b))
    pd.testing.assert_frame_equal(a.acquisitions, b.acquisitions)


SLURM = dict(cluster="slurm", timeout_min=10, slurm_partition="debug", cpus_per_task=1)


def test_a_sweep_on_slurm_equals_the_local_sweep(on_cluster, tiny_cfg, tmp_path, capsys):
    grid = parse_grid(["seeds=0-1", "strategy=least_confidence,random"])
    remote = _tiny_sweep(tiny_cfg, tmp_path / "slurm", grid)
    local = _tiny_sweep(tiny_cfg, tmp_path / "local", grid)
    assert remote.launch_submitit(**SLURM) == {n: "done" for n in remote.cfgs}
    assert local.launch_local(workers=2) == {n: "done" for n in local.cfgs}
    for name in remote.cfgs:
        _same(load_run(remote.run_dir(name)), load_run(local.run_dir(name)))
    assert capsys.readouterr().err.count("Bypassing sacct error") <= 1  # the log stays readable


def _when_running(run_dir, action, env):
    """Call action(job_id) once the run has written its first round (mid-run)."""
    def watch():
        for _ in range(600):
            if (run_dir / "rounds.jsonl").exists() and (run_dir / "rounds.jsonl").read_text().strip():
                jobs = slurm_cluster.running_jobs(env)
                if jobs:
                    action(jobs[0])
                    return
            time.sleep(0.2)
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_requeued_job_resumes_its_run_to_the_same_record(on_cluster, tiny_cfg, tmp_path):
    import dataclasses

    cfg = dataclasses.replace(tiny_cfg, finetune=dataclasses.replace(tiny_cfg.finetune, max_steps=40),
                              al=dataclasses.replace(tiny_cfg.al, budget=20))  # 5 rounds: time to pre-empt
    sweep = _tiny_sweep(cfg, tmp_path / "sw", parse_grid(["seeds=0"]))
    (name,) = sweep.cfgs
    requeued = []

    def preempt(job_id):
        subprocess.run(["scontrol", "requeue", job_id], check=True, env={**os.environ, **on_cluster})
        requeued.append(job_id)
        for _ in range(200):  # a requeued job waits two minutes to start again: start it now
            if slurm_cluster.job_state(job_id, on_cluster) == "PENDING":
                subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], env={**os.environ, **on_cluster})
                return
            time.sleep(0.2)

    watcher = _when_running(sweep.run_dir(name), preempt, on_cluster)
    assert sweep.launch_submitit(**SLURM) == {name: "done"}
    watcher.join(timeout=5)
    assert requeued, "the job was never requeued"
    from toolkit.al.loop import run_active_learning

    reference = run_active_learning(cfg, tmp_path / "uninterrupted", log=None)
    resumed = load_run(sweep.run_dir(name))
    assert resumed.status == "finished"
    _same(resumed, reference)


def test_a_cancelled_job_is_reported_with_its_reason(on_cluster, tiny_cfg, tmp_path, capsys):
    import dataclasses

    cfg = dataclasses.replace(tiny_cfg, finetune=dataclasses.replace(tiny_cfg.finetune, max_steps=40),
                              al=dataclasses.replace(tiny_cfg.al, budget=20))
    sweep = _tiny_sweep(cfg, tmp_path / "sw", parse_grid(["seeds=0"]))
    (name,) = sweep.cfgs
    _when_running(sweep.run_dir(name), lambda j: subprocess.run(["scancel", j], env={**os.environ, **on_cluster}),
                  on_cluster)
    assert sweep.launch_submitit(**SLURM) == {name: "failed"}
    entry = json.loads((tmp_path / "sw" / "index.json").read_text())[name]
    assert entry["status"] == "failed" and entry["error"]
    assert name in sweep.failures() and sweep.failures()[name]
