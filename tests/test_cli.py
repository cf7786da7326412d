import pytest
from conftest import TINY_DATA

from toolkit.cli import main
from toolkit.record import load_run


def _sets(tiny_backbone, tmp_path):
    return ["--set", f"model.weights={tiny_backbone}", "finetune.max_steps=4", "finetune.micro_batch=16",
            "al.seed_size=10", "al.per_round=5", "al.budget=5", "eval_batch_size=128",
            *[f"data.params.{k}={v}" for k, v in TINY_DATA.items()], f"data.params.cache_dir={tmp_path / 'd'}"]


def test_altk_run_writes_a_record(tiny_backbone, tmp_path, capsys):
    main(["run", "toy", "--out", str(tmp_path / "run"), *_sets(tiny_backbone, tmp_path)])
    rec = load_run(tmp_path / "run")
    assert rec.status == "finished" and rec.rounds["n_labels"].tolist() == [10, 15]
    assert "round 1/1" in capsys.readouterr().out


def test_altk_run_bad_key_exits_with_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "toy", "--out", str(tmp_path / "run"), "--set", "al.budgett=5"])
    assert exc.value.code == 2
    assert "unknown config key 'al.budgett'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_altk_pretrain_refuses_to_overwrite(tmp_path, capsys):
    target = tmp_path / "b.pt"
    target.write_bytes(b"x")
    with pytest.raises(SystemExit) as stop:
        main(["pretrain", "toy", "--out", str(target)])
    assert stop.value.code == 2  # through the one handler, as every other error
    assert capsys.readouterr().err.strip() == f"altk pretrain: error: {target} exists; pass --force to retrain and " \
                                              f"replace it"
    assert target.read_bytes() == b"x"


def test_altk_extract_and_probe(tmp_path, capsys):
    params = [f"{k}={v}" for k, v in TINY_DATA.items()] + [f"cache_dir={tmp_path / 'd'}"]
    paths = {}
    for split in ("train", "test"):
        main(["extract", "--model", "timm_test_resnet", "--weights", "random", "--dataset", "toyworld",
              "--split", split, "--param", *params, "--out", str(tmp_path / f"{split}.h5")])
        paths[split] = capsys.readouterr().out.strip().splitlines()[-1]
    assert paths["train"] == str(tmp_path / "train.h5")
    main(["probe", "--cache", paths["train"], "--eval-cache", f"test={paths['test']}", "--seeds", "0-1",
          "--seed-size", "10", "--per-round", "5", "--budget", "10", "--out", str(tmp_path / "runs")])
    out = capsys.readouterr().out
    assert "20 labels" in out and "test/worst_group=" in out
    rec = load_run(tmp_path / "runs" / "least_confidence-s1")
    assert rec.mode == "probe" and rec.model == "timm_test_resnet"
    # --device: the wide products in torch; the seeds' records are the ones numpy's products gave
    main(["probe", "--cache", paths["train"], "--eval-cache", f"test={paths['test']}", "--seeds", "0-1",
          "--seed-size", "10", "--per-round", "5", "--budget", "10", "--out", str(tmp_path / "on-cpu"),
          "--device", "cpu"])
    again = load_run(tmp_path / "on-cpu" / "least_confidence-s1")
    assert again.acquisitions.equals(rec.acquisitions)
    cols = [c for c in rec.rounds.columns if not c.startswith("time/")]
    assert again.rounds[cols].equals(rec.rounds[cols])


def test_errors_are_one_line_and_debug_shows_the_traceback(capsys):
    from toolkit.errors import ConfigError

    with pytest.raises(SystemExit) as stop:
        main(["run", "toy", "--set", "al.bugdet=5"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "al.bugdet" in err and "valid keys here" in err
    with pytest.raises(ConfigError, match="al.bugdet"):
        main(["--debug", "run", "toy", "--set", "al.bugdet=5"])


# ---------------------------------------------------------------- issue #30: short subcommands that call the library

def _stderr_lines(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def _refused(argv, capsys, code: int = 2) -> list[str]:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == code
    lines = _stderr_lines(capsys)
    assert lines and lines[-1].startswith(f"altk {argv[0]}: error: ") and "Traceback" not in "\n".join(lines)
    return lines


def test_every_cli_function_is_under_60_lines():
    import ast
    from pathlib import Path

    import toolkit.cli

    tree = ast.parse(Path(toolkit.cli.__file__).read_text())
    lengths = {n.name: n.end_lineno - min([n.lineno, *(d.lineno for d in n.decorator_list)]) + 1
               for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    assert "main" in lengths and len(lengths) > 20
    assert {name: n for name, n in lengths.items() if n >= 60} == {}


def test_no_subcommand_raises_system_exit_itself():
    """Every error goes through `_handle`: the only `raise SystemExit` in cli.py is its own."""
    import ast
    from pathlib import Path

    import toolkit.cli

    tree = ast.parse(Path(toolkit.cli.__file__).read_text())
    raisers = {f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)
               for n in ast.walk(f) if isinstance(n, ast.Raise) and n.exc is not None
               and "SystemExit" in ast.unparse(n.exc)}
    assert raisers == {"_handle"}


@pytest.fixture
def fake_probe_demo(monkeypatch):
    import toolkit.experiments.probe_demo as probe_demo

    got = {}
    monkeypatch.setattr(probe_demo, "run_probe_demo", lambda **kw: got.update(kw) or "table")
    return got


@pytest.mark.parametrize("mode_args, deprecated", [
    (["--mode", "probe"], None),
    (["--probe"], "altk demo: --probe is deprecated; use --mode probe"),
])
def test_demo_probe_mode_new_and_old_spelling(mode_args, deprecated, fake_probe_demo, tmp_path, capsys):
    main(["demo", *mode_args, "--out", str(tmp_path / "X"), "--seeds", "0"])
    assert str(fake_probe_demo["out"]) == str(tmp_path / "X-probe") and fake_probe_demo["seeds"] == [0]
    assert "separability" not in fake_probe_demo  # the toy world
    assert _stderr_lines(capsys) == ([deprecated] if deprecated else [])


@pytest.mark.parametrize("mode_args", [["--mode", "real-probe"], ["--probe", "--real"]])
def test_demo_real_probe_mode(mode_args, fake_probe_demo, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ALTK_CACHE", str(tmp_path))
    main(["demo", *mode_args, "--seeds", "0"])
    assert str(fake_probe_demo["out"]) == str(tmp_path / "demo-real-probe") and fake_probe_demo["separability"]
    err = _stderr_lines(capsys)
    assert err == ([] if mode_args[0] == "--mode" else
                   ["altk demo: --probe --real is deprecated; use --mode real-probe"])


def test_demo_probe_mode_refuses_set_through_the_handler(capsys):
    lines = _refused(["demo", "--mode", "probe", "--set", "al.budget=5"], capsys)
    assert len(lines) == 1 and "with --mode probe set the protocol with --al" in lines[0]


@pytest.mark.parametrize("argv, message", [
    (["dose", "--mode", "real", "--doses", "random"], "--doses do(es) not apply with --mode real"),
    (["dose", "--mode", "full", "--al", "budget=10"], "--al are probe-mode options; with --mode full"),
    (["dose", "--mode", "probe", "--set", "al.budget=5"], "--set takes full-finetuning config keys (with --mode full)"),
    (["dose", "--mode", "probe", "--full"], "--mode probe and --full name different modes; give --mode only"),
    (["dose", "--real", "--full"], "--full --real name different modes; give one --mode (probe, full, real)"),
    (["demo", "--mode", "full", "--probe"], "--mode full and --probe name different modes"),
])
def test_dose_and_demo_modes_refused_by_name(argv, message, capsys):
    lines = _refused(argv, capsys)
    assert len(lines) == 1 and message in lines[0], lines


def test_dose_old_spelling_still_selects_its_mode_and_an_error_stays_one_line(capsys):
    """The deprecation note comes after a command that succeeds (the demo tests above); an error
    stays the one line, naming the option as it was spelled."""
    lines = _refused(["dose", "--full", "--al", "budget=10"], capsys)
    assert lines == ["altk dose: error: --al are probe-mode options; with --full set the protocol and the dataset "
                     "through --set (e.g. --set al.budget=60 data.params.n_train=2000)"]


def test_dose_old_spelling_prints_the_deprecation_line(tmp_path, monkeypatch, capsys):
    import toolkit.cli

    got = {}
    monkeypatch.setattr(toolkit.cli, "_real_dose", lambda args: got.update(mode=args.mode, flag=args.mode_flag))
    main(["dose", "--real", "--seeds", "0"])
    assert got == {"mode": "real", "flag": "--real"}
    assert _stderr_lines(capsys) == ["altk dose: --real is deprecated; use --mode real"]
    main(["dose", "--mode", "real", "--seeds", "0"])
    assert got == {"mode": "real", "flag": "--mode real"} and _stderr_lines(capsys) == []


def test_altk_run_default_folder_is_the_librarys(tmp_path, monkeypatch, capsys):
    import toolkit.al.loop
    from toolkit.api import default_run_dir
    from toolkit.config import resolve_config

    monkeypatch.setenv("ALTK_CACHE", str(tmp_path))
    got = {}
    monkeypatch.setattr(toolkit.al.loop, "run_active_learning", lambda cfg, out, **kw: got.update(out=out))
    main(["run", "toy", "--set", "seed=3", "al.strategy=random"])
    expected = default_run_dir("toy", resolve_config("toy", ["seed=3", "al.strategy=random"]))
    assert got["out"] == expected == tmp_path / "runs" / "toy-pretrained-random-s3"
    assert f"run record: {expected}" in capsys.readouterr().out


def test_altk_report_without_runs_is_one_error_line(tmp_path, capsys):
    lines = _refused(["report", str(tmp_path)], capsys)
    assert lines == [f"altk report: error: no run records (folders with rounds.jsonl) under {tmp_path}; make some "
                     f"with ./run demo or altk run"]


def test_altk_sweep_dispatches_through_sweep_launch_and_failures_exit_1(tmp_path, monkeypatch, capsys):
    from toolkit.al.sweep import Sweep

    calls = []
    monkeypatch.setattr(Sweep, "todo", lambda self: list(self.cfgs))
    monkeypatch.setattr(Sweep, "launch", lambda self, launcher, **kw: calls.append((launcher, kw)) or {})
    monkeypatch.setattr(Sweep, "failures", lambda self: {"seed=0": "RuntimeError: boom"})
    lines = _refused(["sweep", "toy", "--grid", "seed=0", "--out", str(tmp_path / "sw"), "--launcher", "submitit",
                      "--cluster", "debug", "--partition", "gpu", "--array-parallelism", "4"], capsys, code=1)
    assert calls == [("submitit", {"workers": None, "launcher_kwargs": {
        "cluster": "debug", "timeout_min": 240, "slurm_partition": "gpu", "slurm_array_parallelism": 4}})]
    assert lines[0] == "[sweep] seed=0 failed: RuntimeError: boom"
    assert lines[-1] == (f"altk sweep: error: 1 of 1 runs failed (named above, with their last error line); full "
                         f"errors in {tmp_path / 'sw' / 'index.json'}")


def test_altk_suite_unknown_task_goes_through_the_handler(capsys):
    lines = _refused(["suite", "--tasks", "2", "--only", "t9-99"], capsys)
    assert len(lines) == 1 and "--only: unknown task(s) t9-99" in lines[0]
