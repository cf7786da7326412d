import json

import pytest
from conftest import TINY_DATA

from toolkit.al.loop import run_active_learning
from toolkit.al.sweep import Sweep, expand_grid, parse_grid
from toolkit.cli import main
from toolkit.config import config_from_dict
from toolkit.record import load_run


def test_parse_and_expand_grid():
    grid = parse_grid(["seeds=0-2", "strategy=least_confidence,random", "finetune.base_lr=0.01"])
    assert grid == {"seed": [0, 1, 2], "al.strategy": ["least_confidence", "random"], "finetune.base_lr": [0.01]}
    cfgs = expand_grid("toy", grid)
    assert len(cfgs) == 6 and "seed-1_strategy-random_base_lr-0.01" in cfgs
    assert cfgs["seed-1_strategy-random_base_lr-0.01"].al.strategy == "random"
    with pytest.raises(ValueError, match="key=v1,v2"):
        parse_grid(["seeds"])
    with pytest.raises(ValueError, match="unknown config key"):
        expand_grid("toy", parse_grid(["al.stratgy=random"]))


def _tiny_sweep(tiny_cfg, out, grid):
    base = tiny_cfg.to_dict()
    cfgs = {}
    for name, cfg in expand_grid("toy", grid).items():
        d = dict(base, seed=cfg.seed, al={**base["al"], "strategy": cfg.al.strategy, "seed_set": cfg.al.seed_set})
        cfgs[name] = config_from_dict(d)
    return Sweep(out, cfgs)


def test_local_sweep_resumes_and_reports_failures(tiny_cfg, tmp_path):
    grid = parse_grid(["seeds=0-1", "strategy=least_confidence,random"])
    sweep = _tiny_sweep(tiny_cfg, tmp_path / "sw", grid)
    # before the sweep: one run finished, one interrupted after its first round
    names = list(sweep.cfgs)
    run_active_learning(sweep.cfgs[names[0]], sweep.run_dir(names[0]), log=None)
    partial = run_active_learning(sweep.cfgs[names[1]], sweep.run_dir(names[1]), max_rounds=1, log=None)
    assert sweep.todo() == names[1:]
    results = sweep.launch_local(workers=2)
    assert set(results) == set(names[1:]) and set(results.values()) == {"done"}
    resumed = load_run(sweep.run_dir(names[1]))
    assert resumed.rounds["time/train_s"].iloc[0] == partial.rounds["time/train_s"].iloc[0]  # round 0 kept
    assert Sweep(tmp_path / "sw", sweep.cfgs).todo() == []  # the same sweep again: nothing left
    tidy = sweep.aggregate()
    assert len(tidy) == 4 * 3 and (tmp_path / "sw" / "rounds.csv").exists()
    index = json.loads((tmp_path / "sw" / "index.json").read_text())
    assert {v["status"] for v in index.values()} == {"done"}

    bad = _tiny_sweep(tiny_cfg, tmp_path / "bad", parse_grid(["seeds=0", "al.seed_set=balanced,bogus"]))
    results = bad.launch_local(workers=2)
    assert results == {"seed-0_seed_set-balanced": "done", "seed-0_seed_set-bogus": "failed"}
    index = json.loads((tmp_path / "bad" / "index.json").read_text())
    assert "unknown al.seed_set 'bogus'" in index["seed-0_seed_set-bogus"]["error"]


def test_submitit_local_executor_failure_and_resume(tiny_cfg, tmp_path):
    sweep = _tiny_sweep(tiny_cfg, tmp_path / "sw", parse_grid(["seeds=0-1", "al.seed_set=balanced,bogus"]))
    ok = "seed-1_seed_set-balanced"
    partial = run_active_learning(sweep.cfgs[ok], sweep.run_dir(ok), max_rounds=1, log=None)
    results = sweep.launch_submitit(cluster="local", timeout_min=10)
    assert results == {"seed-0_seed_set-balanced": "done", "seed-0_seed_set-bogus": "failed",
                       "seed-1_seed_set-balanced": "done", "seed-1_seed_set-bogus": "failed"}
    resumed = load_run(sweep.run_dir(ok))
    assert resumed.status == "finished" and resumed.rounds["time/train_s"].iloc[0] == partial.rounds["time/train_s"].iloc[0]
    index = json.loads((tmp_path / "sw" / "index.json").read_text())
    assert "bogus" in index["seed-1_seed_set-bogus"]["error"]


def test_altk_sweep_cli_and_report(tiny_backbone, tmp_path, capsys):
    sets = [f"model.weights={tiny_backbone}", "finetune.max_steps=4", "finetune.micro_batch=16", "al.seed_size=10",
            "al.per_round=5", "al.budget=5", "eval_batch_size=128", f"data.params.cache_dir={tmp_path / 'd'}",
            *[f"data.params.{k}={v}" for k, v in TINY_DATA.items()]]
    main(["sweep", "toy", "--grid", "seeds=0-1", "strategy=least_confidence,random", "--set", *sets,
          "--out", str(tmp_path / "sw"), "--workers", "2"])
    out = capsys.readouterr().out
    assert "4 to run" in out and "aggregated 8 rounds of 4 runs" in out
    main(["sweep", "toy", "--grid", "seeds=0-1", "strategy=least_confidence,random", "--set", *sets,
          "--out", str(tmp_path / "sw")])
    assert "4 finished, 0 to run" in capsys.readouterr().out
    main(["report", str(tmp_path / "sw"), "--out", str(tmp_path / "r.html"), "--no-representation"])
    assert "Final budget" in (tmp_path / "r.html").read_text()


def test_rerun_with_other_settings_refuses_instead_of_handing_back_old_runs(tiny_cfg, tmp_path):
    from dataclasses import replace

    grid = parse_grid(["seeds=0"])
    sweep = _tiny_sweep(tiny_cfg, tmp_path / "sw", grid)
    assert sweep.launch_local(workers=1) == {"seed-0": "done"}
    assert Sweep(tmp_path / "sw", sweep.cfgs).todo() == []  # same settings: reused
    other = {n: replace(c, finetune=replace(c.finetune, max_steps=3)) for n, c in sweep.cfgs.items()}
    with pytest.raises(ValueError, match=r"holds 1 run\(s\) made with other settings: seed-0 \(finetune.max_steps\)"
                                         r".*another output folder"):
        Sweep(tmp_path / "sw", other).todo()


def test_a_finished_run_whose_state_a_kill_lost_is_finished_on_rerun(tiny_cfg, tmp_path):
    run_active_learning(tiny_cfg, tmp_path / "run", log=None)
    state = tmp_path / "run" / "state.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), "status": "running"}))
    run_active_learning(tiny_cfg, tmp_path / "run", log=None)  # resumes "at the end": nothing to train
    assert json.loads(state.read_text())["status"] == "finished"


def test_pool_workers_die_with_a_killed_sweep(tmp_path):
    """SIGKILL the process that owns a worker pool: its worker must not live on as an orphan."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    script.write_text(
        "import concurrent.futures as cf, multiprocessing as mp, os, sys, time\n"
        "from toolkit.al.sweep import die_with_parent\n"
        "def work(path):\n"
        "    open(path, 'w').write(str(os.getpid()))\n"
        "    time.sleep(60)\n"
        "if __name__ == '__main__':\n"
        "    with cf.ProcessPoolExecutor(1, mp_context=mp.get_context('spawn'), initializer=die_with_parent, initargs=(os.getpid(),)) as p:\n"
        "        p.submit(work, sys.argv[1]).result()\n")
    pid_file = tmp_path / "worker.pid"
    parent = subprocess.Popen([sys.executable, str(script), str(pid_file)], cwd=os.getcwd())
    for _ in range(300):  # the worker starts (spawn imports torch): up to 30 s
        if pid_file.exists() and pid_file.read_text():
            break
        time.sleep(0.1)
    worker = int(pid_file.read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    for _ in range(100):  # the kernel's SIGTERM arrives at once; allow 10 s
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(worker, signal.SIGKILL)
    pytest.fail("the pool worker outlived its killed parent")


KILLED_SWEEP = """
import json, sys
from toolkit._util.log import to_stdout
from toolkit.al.sweep import Sweep
from toolkit.config import config_from_dict
if __name__ == "__main__":
    to_stdout()
    cfgs = {name: config_from_dict(d) for name, d in json.loads(open(sys.argv[1]).read()).items()}
    print(json.dumps(Sweep(sys.argv[2], cfgs).launch_local(workers=2)))
"""


def test_a_worker_killed_from_outside_does_not_stop_the_sweep(tiny_cfg, tmp_path):
    """One worker dies as if the OOM killer took it (os._exit at a kill point, once): the pool
    breaks, and the runs left restart in a new pool and resume; every run ends done. The restart
    is said once (not again, as "0 runs restart", when all is done), and the killed worker leaves
    no semaphore behind (Python's "leaked semaphore objects" warning at exit). In a subprocess:
    the warning comes when the process that started the pool exits."""
    import os
    import subprocess
    import sys

    sweep = _tiny_sweep(tiny_cfg, tmp_path / "sw", parse_grid(["seeds=0-2"]))
    (tmp_path / "cfgs.json").write_text(json.dumps({n: c.to_dict() for n, c in sweep.cfgs.items()}))
    (tmp_path / "sweep.py").write_text(KILLED_SWEEP)
    env = {**os.environ, "ALTK_KILL_AT": "loop:trained:1", "ALTK_KILL_ONCE": str(tmp_path / "killed-once")}
    proc = subprocess.run([sys.executable, str(tmp_path / "sweep.py"), str(tmp_path / "cfgs.json"),
                           str(tmp_path / "sw")], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "killed-once").exists()  # a worker did die
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results == {name: "done" for name in sweep.cfgs}
    assert proc.stdout.count("a worker process died") == 1 and "0 runs restart" not in proc.stdout
    assert "leaked semaphore" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    index = json.loads((tmp_path / "sw" / "index.json").read_text())
    assert {v["status"] for v in index.values()} == {"done"}
    assert all(load_run(sweep.run_dir(n)).status == "finished" for n in sweep.cfgs)
