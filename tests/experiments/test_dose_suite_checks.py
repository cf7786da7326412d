"""Issue #31, zero silent wrong results: `altk dose` checks its arguments before minutes of
pretraining, writes its table when the study is too small to correlate, and the suite and the
dose study outlive a dead worker (fail only the job that kills it, with its reason); counts of
0 are refused by name; a lock refusal names who holds it and what resolves it; `demo --probe`
says where it writes."""
import os
import re
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
from conftest import TINY_DATA, install_backbone

from toolkit.cli import main

PROTOCOL = ["--al", "seed_size=10", "per_round=5", "budget=10"]
DATA = ["--data", *[f"{k}={v}" for k, v in TINY_DATA.items()]]


def _refused(argv, capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    last = err.splitlines()[-1]  # argparse's usage lines come first
    assert last.startswith(f"altk {argv[0]}: error: "), err
    return last


# ---------------------------------------------------------------- dose: arguments first

@pytest.mark.parametrize("args, message", [
    (["--al", "bugdet=3"], "unknown config key 'al.bugdet'"),
    (["--data", "n_trian=100"], "'n_trian'"),
    (["--doses", ""], "--doses '': give one or more"),
    (["--doses", "random,"], "none empty"),
    (["--doses", "random,random"], "--doses lists random more than once"),
    (["--doses", "pretrained@images5000,pretrained@step5,pretrained@images5000"], "pretrained@images5000 more than once"),
    (["--workers", "0"], "--workers: must be an integer >= 1"),
    (["--tasks", "0"], "--tasks: must be an integer >= 1"),
    (["--set", "al.budget=10"], "--set takes full-finetuning config keys"),
    (["--full", "--al", "budget=10"], "--al are probe-mode options"),
    (["--real", "--doses", "random"], "--doses do(es) not apply with --real"),
])
def test_dose_refuses_bad_arguments_before_any_pretraining(tmp_path, capsys, args, message):
    """The default doses include pretrained@images5000, which pretrains for minutes when missing
    (here ALTK_NO_PRETRAIN would turn that into a RuntimeError): the refusal must come first."""
    err = _refused(["dose", "--seeds", "0", "--out", str(tmp_path / "d"), *args], capsys)
    assert message in err and "ALTK_NO_PRETRAIN" not in err
    assert not (tmp_path / "d").exists()


def test_the_dose_library_checks_its_arguments_before_any_pretraining(tmp_path):
    from toolkit.data.toy_tasks import draw_tasks
    from toolkit.errors import ConfigError
    from toolkit.experiments.pretraining_dose import DEFAULT_DOSES, run_dose_study

    tasks = draw_tasks(1)
    for kwargs, message in ((dict(al={"bugdet": 3}), "bugdet"), (dict(data={"n_trian": 9}), "n_trian"),
                            (dict(workers=0), "workers must be an integer >= 1")):
        with pytest.raises(ConfigError, match=message):
            run_dose_study(list(DEFAULT_DOSES), tasks, [0], out=tmp_path / "d", log=None, **kwargs)
    with pytest.raises(ConfigError, match="random more than once"):
        run_dose_study(["random", "pretrained", "random"], tasks, [0], out=tmp_path / "d", log=None)
    with pytest.raises(ConfigError, match="give one or more"):
        run_dose_study([], tasks, [0], out=tmp_path / "d", log=None)
    assert not (tmp_path / "d").exists()


# ---------------------------------------------------------------- dose: too few rows to correlate

def test_a_dose_study_too_small_to_correlate_still_writes_its_table(tmp_path, capsys):
    """One backbone x two tasks: two rows. The table is written; the correlations are skipped
    with a note, printed and in dose.txt (they used to fail the study after all its work)."""
    out = tmp_path / "d"
    (out).mkdir()
    (out / "correlations.csv").write_text("x,y\nstale,1\n")  # an earlier study's: must not pass for this one's
    main(["dose", "--doses", "random", "--tasks", "2", "--seeds", "0", "--workers", "1", "--out", str(out),
          *DATA, *PROTOCOL])
    table = pd.read_csv(out / "dose.csv")
    assert len(table) == 2 and set(table["weights"]) == {"random"}
    printed = capsys.readouterr().out
    note = "correlations skipped: 2 backbone x task row(s), and a correlation needs at least 3"
    assert note in printed and note in (out / "dose.txt").read_text()
    assert not (out / "correlations.csv").exists() and (out / "dose.html").exists()


# ---------------------------------------------------------------- a dead worker

def test_a_worker_killed_in_the_dose_study_restarts_and_the_study_finishes(tmp_path, capsys, monkeypatch):
    """One worker dies mid-job (os._exit at a kill point, once, as the OOM killer would): the pool
    restarts, the jobs resume, the table covers every backbone x task; no traceback."""
    monkeypatch.setenv("ALTK_KILL_AT", "probe:scored:1")
    monkeypatch.setenv("ALTK_KILL_ONCE", str(tmp_path / "killed-once"))
    out = tmp_path / "d"
    main(["dose", "--doses", "random", "--tasks", "2", "--seeds", "0", "--workers", "2", "--out", str(out),
          *DATA, *PROTOCOL])
    assert (tmp_path / "killed-once").exists()  # a worker did die
    printed = capsys.readouterr().out
    assert "[dose] a worker process died; " in printed and "restart in a new pool" in printed
    table = pd.read_csv(out / "dose.csv")
    assert sorted(table["task"]) == ["t0-00", "t0-01"] and table["n_seeds"].eq(1).all()


def test_a_task_that_kills_its_worker_fails_alone_in_the_suite(tmp_path, tiny_backbone, monkeypatch):
    """The worker of task t5-01 dies every time (a kill point at its start): the suite restarts
    the pool, then runs each task alone; t5-00 finishes, and only t5-01 fails, with its reason
    shown (logged and in the error), not a BrokenProcessPool traceback."""
    from toolkit.data.toy_tasks import draw_tasks
    from toolkit.errors import RunsFailedError
    from toolkit.experiments.suite import load_suite, run_task_suite

    install_backbone(tiny_backbone, None)
    monkeypatch.setenv("ALTK_KILL_AT", "suite:task_started:t5-01")
    tasks = draw_tasks(2, seed=5)
    lines = []
    with pytest.raises(RunsFailedError) as failed:
        run_task_suite(tasks, [0], out=tmp_path / "s", data={**TINY_DATA, "cache_dir": str(tmp_path / "data")},
                       al={"seed_size": 10, "per_round": 5, "budget": 10}, feature_root=tmp_path / "features",
                       workers=2, log=lines.append)
    message = str(failed.value)
    assert message.startswith("1 of 2 suite tasks failed") and "t5-01: its worker process died" in message
    assert "t5-00" not in message
    logged = "\n".join(lines)
    assert re.search(r"\[suite\] a worker process died; [12] tasks restart in a new pool", logged)
    assert "[suite] t5-01 failed: its worker process died" in logged and "t5-00 done" in logged
    records = load_suite(tmp_path / "s", tasks, [0])
    assert len(records["t5-00"]) == 4 and all(r.status == "finished" for r in records["t5-00"])
    assert records["t5-01"] == []


def _die_for(key: str, marker: str) -> str:
    if key == "b":
        os._exit(137)  # as SIGKILL: no cleanup
    with open(marker, "a") as f:
        f.write(key + "\n")
    return key.upper()


def test_run_in_pools_gives_up_only_the_job_that_kills_its_worker(tmp_path):
    from toolkit._util.pools import DIED, run_in_pools

    marker = str(tmp_path / "ran")
    done, notes = {}, []
    dead = run_in_pools({k: (k, marker) for k in "abc"}, _die_for, 2, on_done=done.__setitem__, note=notes.append)
    assert dead == {"b": DIED} and done == {"a": "A", "c": "C"}
    assert notes[0].startswith("a worker process died; ") and notes[-1] == f"b failed: {DIED}"
    assert sum("restart in a new pool" in n for n in notes) == 2  # two breaks, then each alone


# ---------------------------------------------------------------- counts of 0

@pytest.mark.parametrize("argv", [
    ["sweep", "toy", "--grid", "seeds=0", "--out", "{out}", "--workers", "0"],
    ["suite", "--tasks", "1", "--out", "{out}", "--workers", "0"],
    ["demo", "--out", "{out}", "--workers", "0"],
    ["select-once", "--tasks", "1", "--out", "{out}", "--workers", "0"],
])
def test_zero_workers_are_refused(tmp_path, capsys, argv):
    err = _refused([a.replace("{out}", str(tmp_path / "o")) for a in argv], capsys)
    assert "argument --workers: must be an integer >= 1, got '0'" in err
    assert not (tmp_path / "o").exists()


def test_the_sweep_library_refuses_zero_workers(tiny_cfg, tmp_path):
    from toolkit.al.sweep import Sweep
    from toolkit.errors import ConfigError

    with pytest.raises(ConfigError, match="workers must be an integer >= 1, got 0"):
        Sweep(tmp_path / "sw", {"a": tiny_cfg}).launch_local(workers=0)


@pytest.mark.parametrize("command", ["suite", "select-once"])
def test_zero_tasks_are_refused_by_option_name(tmp_path, capsys, command):
    err = _refused([command, "--tasks", "0", "--out", str(tmp_path / "o")], capsys)
    assert "argument --tasks: must be an integer >= 1" in err and "draw_tasks" not in err


# ---------------------------------------------------------------- a held lock

HOLDER = """
import sys, time
from toolkit._util.locks import exclusive
sys.argv = ["altk", "suite", "--tasks", "3", "--out", "suite-A"]
with exclusive(sys.stdin.readline().strip(), "feature cache"):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_a_refused_cache_lock_names_its_holder_and_what_resolves_the_clash(tmp_path):
    """A cache lock taken without waiting: the refusal names the other command and says to wait
    for it or to use another cache root, not "choose another output"."""
    from toolkit._util.locks import exclusive
    from toolkit.errors import LockedError

    cache = tmp_path / "features" / "toyworld-train-toy_resnet-abc.h5"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(HOLDER)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        holder.stdin.write(f"{cache}\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError) as refused:
            with exclusive(cache, "feature cache"):
                pass
    finally:
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(timeout=60)
    message = str(refused.value)
    assert f"feature cache {cache} is being written by pid {holder.pid} on " in message
    assert f"(`altk suite --tasks 3 --out suite-A`, in {tmp_path})" in message
    assert "wait for that command to finish" in message and "ALTK_CACHE=" in message
    assert "choose another output" not in message


FINISHER = """
import os, sys
from toolkit._util.locks import exclusive
sys.argv = ["altk", "suite", "--tasks", "3", "--out", "suite-A"]
path, done = sys.stdin.readline().strip(), sys.stdin.readline().strip()
with exclusive(path, "feature cache"):
    print("locked", flush=True)
    sys.stdin.readline()
    os.replace(done, path)  # what the first suite's extraction does when it completes
"""


def test_two_suites_needing_one_cache_wait_for_it_and_reuse_it(tiny_backbone, tmp_path):
    """Two suites with different --out need the same feature cache: the second waits for the
    first to write it (saying so, with the holder's command) and reuses it, instead of a refusal."""
    import threading

    from toolkit.features.cache import extract_features, open_cache

    kw = dict(weights=str(tiny_backbone), root=tmp_path / "f",
              dataset_params={**TINY_DATA, "cache_dir": str(tmp_path / "data")})
    path = extract_features("toy_resnet", "toyworld", "test", log=None, **kw)
    finished = path.with_name("finished-by-the-first-suite.h5")
    path.rename(finished)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(FINISHER)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    said = []
    try:
        holder.stdin.write(f"{path}\n{finished}\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "locked"

        def release():
            holder.stdin.write("\n")
            holder.stdin.flush()

        threading.Timer(1.0, release).start()
        got = extract_features("toy_resnet", "toyworld", "test", log=said.append, **kw)
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert got == path and not finished.exists()  # the first suite's file, reused, not extracted again
    assert open_cache(got).ids.shape == (TINY_DATA["n_test"],)
    assert len(said) == 1 and "is being written by pid" in said[0] and "waiting for it to finish" in said[0]
    assert "`altk suite --tasks 3 --out suite-A`" in said[0]


def test_an_output_folder_locked_by_another_command_says_to_choose_another_out(tmp_path):
    from toolkit._util.locks import exclusive
    from toolkit.errors import LockedError

    with exclusive(tmp_path / "sw", "sweep", directory=True):
        with pytest.raises(LockedError, match=r"sweep .* is being written by pid \d+ on .*, since .* \(`.*`, in .*\)\. "
                                              r"Wait for it to finish \(or stop it\), or give this command another "
                                              r"output folder \(--out\)\."):
            with exclusive(tmp_path / "sw", "sweep", directory=True):
                pass


# ---------------------------------------------------------------- demo --probe says where it writes

def test_demo_probe_says_it_writes_to_out_with_probe_appended(tmp_path, capsys, monkeypatch):
    import toolkit.experiments.probe_demo as probe_demo

    got = {}
    monkeypatch.setattr(probe_demo, "run_probe_demo", lambda **kw: got.update(kw) or "table")
    main(["demo", "--probe", "--out", str(tmp_path / "X"), "--seeds", "0"])
    lines = capsys.readouterr().out.strip().splitlines()
    target = str(tmp_path / "X-probe")
    assert str(got["out"]) == target
    assert target in lines[0] and "-probe appended" in lines[0] and target in lines[-1]
