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
    with pytest.raises(SystemExit, match="--force"):
        main(["pretrain", "toy", "--out", str(target)])
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


def test_errors_are_one_line_and_debug_shows_the_traceback(capsys):
    from toolkit.errors import ConfigError

    with pytest.raises(SystemExit) as stop:
        main(["run", "toy", "--set", "al.bugdet=5"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "al.bugdet" in err and "valid keys here" in err
    with pytest.raises(ConfigError, match="al.bugdet"):
        main(["--debug", "run", "toy", "--set", "al.bugdet=5"])
