"""Silent wrong results a sceptical user found (issue #23, W1-W6, and a hang): each test
failed on the code before the fix."""
import dataclasses
import shutil

import h5py
import numpy as np
import pytest
import torch
from conftest import TINY_DATA

from toolkit.al.loop import run_active_learning
from toolkit.al.protocol import acquisition_sizes
from toolkit.config import ALConfig
from toolkit.errors import CacheError, ConfigError, DataError, RecordError
from toolkit.features.cache import extract_features, open_cache, seal_content
from toolkit.features.probe import run_probe

AL = ALConfig(strategy="least_confidence", seed_size=10, per_round=5, budget=10)


@pytest.fixture(scope="module")
def feats(tiny_backbone, tmp_path_factory):
    root = tmp_path_factory.mktemp("correct")
    kw = dict(weights=str(tiny_backbone), root=root / "f", log=None)
    params = {**TINY_DATA, "cache_dir": str(root / "data")}
    other_task = {**params, "label_shapes": [["circle", "ring", "hexagon"], ["triangle", "plus", "star"]]}
    return {"pool": extract_features("toy_resnet", "toyworld", "train", dataset_params=params, **kw),
            "test": extract_features("toy_resnet", "toyworld", "test", dataset_params=params, **kw),
            "other_task_test": extract_features("toy_resnet", "toyworld", "test", dataset_params=other_task, **kw),
            "root": root}


def test_w1_an_eval_cache_of_another_task_or_a_copy_of_the_pool_is_refused(feats, tmp_path):
    with pytest.raises(CacheError, match="label_shapes"):
        run_probe(feats["pool"], {"test": feats["other_task_test"]}, tmp_path / "a", al=AL)
    copy = tmp_path / "renamed-copy-of-the-pool.h5"
    shutil.copy(feats["pool"], copy)
    with pytest.raises(CacheError, match="shares .* ids with the pool"):
        run_probe(feats["pool"], {"test": copy}, tmp_path / "b", al=AL)
    run_probe(feats["pool"], {"test": feats["test"]}, tmp_path / "ok", al=AL)  # the held-out split is accepted


def test_w2_a_resume_after_the_weights_changed_is_refused(tiny_cfg, tiny_backbone, tmp_path):
    weights = tmp_path / "backbone.pt"
    shutil.copy(tiny_backbone, weights)
    cfg = dataclasses.replace(tiny_cfg, model=dataclasses.replace(tiny_cfg.model, weights=str(weights)))
    run_active_learning(cfg, tmp_path / "run", log=None, max_rounds=1)  # killed after round 0
    saved = torch.load(weights, map_location="cpu", weights_only=False)
    saved["backbone"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in saved["backbone"].items()}
    torch.save(saved, weights)  # the same path, other weights
    with pytest.raises(RecordError, match="weights changed"):
        run_active_learning(cfg, tmp_path / "run", log=None)


def test_w2_a_probe_resume_after_the_pool_cache_changed_is_refused(feats, tmp_path):
    pool = tmp_path / "pool.h5"
    shutil.copy(feats["pool"], pool)
    run_probe(pool, {"test": feats["test"]}, tmp_path / "run", al=AL, max_rounds=1)
    with h5py.File(pool, "r+") as f:  # relabel the pool in place and reseal it, as a new extraction at the
        col = f["attributes"]["y"]  # same path would (an unsealed edit is refused on open: test_cache_integrity)
        col[...] = 1 - col[...]
        seal_content(f)
    with pytest.raises(RecordError, match="pool changed"):
        run_probe(pool, {"test": feats["test"]}, tmp_path / "run", al=AL)


def test_w3_a_one_class_pool_is_refused(tiny_cfg):
    cfg = dataclasses.replace(tiny_cfg, data=dataclasses.replace(
        tiny_cfg.data, params={**tiny_cfg.data.params, "minority_fraction": 0.0}))
    with pytest.raises(DataError, match="single class .*: 240"):
        run_active_learning(cfg, "/nonexistent/never-written", log=None)


def test_w4_the_report_says_a_run_is_unfinished(tiny_cfg, tmp_path):
    from toolkit.report.html import build_report

    run_active_learning(tiny_cfg, tmp_path / "killed", log=None, max_rounds=1)
    page = build_report([tmp_path / "killed"], tmp_path / "r.html", representation=False).read_text()
    assert "Unfinished runs" in page and "killed (last completed round at 10 labels of 20)" in page


def test_w5_embeddings_changed_after_completion_are_refused(feats, tmp_path):
    path = tmp_path / "cache.h5"
    shutil.copy(feats["test"], path)
    with h5py.File(path, "r+") as f:
        f["embeddings"][3] = f["embeddings"][3] + np.float16(0.5)
    with pytest.raises(CacheError, match="rows 0-.* differ from the digest"):
        open_cache(path)
    assert open_cache(feats["test"]).embeddings.shape[0] == TINY_DATA["n_test"]


def test_w6_the_probe_demo_folder_gives_one_answer(tiny_backbone, tmp_path, monkeypatch, capsys):
    from conftest import install_backbone

    from toolkit.cli import main

    install_backbone(tiny_backbone, None)
    args = ["demo", "--probe", "--out", str(tmp_path / "d"), "--al", "seed_size=10", "per_round=5", "budget=10"]
    monkeypatch.setattr("toolkit.experiments.protocols.PROBE_POOL", dict(TINY_DATA))
    monkeypatch.setattr("toolkit.experiments.probe_demo.PROBE_POOL", dict(TINY_DATA))
    main(args + ["--seeds", "0"])
    main(args + ["--seeds", "1"])
    import pandas as pd

    summary = pd.read_csv(tmp_path / "d-probe" / "summary.csv")
    assert set(summary["n_seeds"]) == {2}  # both calls' seeds, as `altk report` would read the folder
    assert pd.read_csv(tmp_path / "d-probe" / "rounds.csv")["seed"].nunique() == 2
    with pytest.raises(SystemExit):
        main(["demo", "--probe", "--set", "al.budget=5", "--out", str(tmp_path / "e")])
    assert "--set takes full-finetuning config keys" in capsys.readouterr().err


def test_a_shrinking_geometric_schedule_is_refused_not_a_hang():
    with pytest.raises(ConfigError, match="geometric_factor=0.5 shrinks the round size to 0"):
        acquisition_sizes(ALConfig(per_round=4, budget=20, schedule="geometric", geometric_factor=0.5))


def test_bad_protocol_values_are_refused_by_the_probe_and_the_cli(feats, tmp_path, capsys):
    from toolkit.cli import _seeds

    for bad, match in ((dict(budget=-5), "al.budget must be >= 0"), (dict(pool_subsample=0), "al.pool_subsample")):
        with pytest.raises(ConfigError, match=match):
            run_probe(feats["pool"], {"test": feats["test"]}, tmp_path / "x", al=dataclasses.replace(AL, **bad))
    for text in ("5-2", "a-b", "-3"):
        with pytest.raises(ConfigError, match="--seeds"):
            _seeds(text)
    assert _seeds("0-2,7") == [0, 1, 2, 7]


def test_config_values_that_were_silently_accepted_are_refused():
    from toolkit.al.sweep import parse_grid
    from toolkit.config import resolve_config

    with pytest.raises(ConfigError, match="given twice"):
        parse_grid(["seeds=0", "seeds=1"])
    with pytest.raises(ConfigError, match="checkpoint_rounds \\[99\\]"):
        resolve_config("toy", ["checkpoint_rounds=[99]"])
    with pytest.raises(ConfigError, match="model.zero_head"):
        resolve_config("toy", ["model.zero_head=sometimes"])
    for splits in ("[]", "[train]"):
        with pytest.raises(ConfigError, match="data.eval_splits"):
            resolve_config("toy", [f"data.eval_splits={splits}"])
    assert resolve_config("toy", ["checkpoint_rounds=[0, -1]"]).checkpoint_rounds == [0, -1]


def test_a_small_generated_toy_world_is_not_refused_as_resampled(tiny_cfg, tmp_path):
    """The toy world generates its pool at the requested size: the resampled-pool guard is for
    loaders that resample existing images, so a budget over 10% of a small toy pool runs."""
    cfg = dataclasses.replace(tiny_cfg, al=dataclasses.replace(tiny_cfg.al, budget=30))  # 40 of 240 labels
    assert run_active_learning(cfg, tmp_path / "run", log=None, max_rounds=1).rounds["n_labels"].tolist() == [10]


def test_a_second_sweep_on_the_same_folder_is_refused(tmp_path):
    from toolkit._util.locks import exclusive
    from toolkit.al.sweep import Sweep
    from toolkit.errors import LockedError

    with exclusive(tmp_path / "sweep", "sweep", directory=True):  # a sweep running elsewhere
        with pytest.raises(LockedError, match="sweep .* is being written"):
            Sweep(tmp_path / "sweep", {}).launch_local(workers=1)


def test_leftovers_of_a_kill_are_cleaned_on_the_next_start(feats, tmp_path):
    run = tmp_path / "run"
    run_probe(feats["pool"], {"test": feats["test"]}, run, al=AL, max_rounds=2)
    (run / ".state.json.tmp4242").write_text("{")  # a kill inside an atomic write
    (run / "probe_state" / "round_005.npz").write_bytes(b"stale")  # a state ahead of the record
    (run / "probe_state" / ".round_002.tmp.npz").write_bytes(b"half")
    rec = run_probe(feats["pool"], {"test": feats["test"]}, run, al=AL)
    assert rec.status == "finished" and not list(run.glob(".*.tmp*"))
    assert [p.name for p in (run / "probe_state").iterdir()] == ["round_002.npz"]  # the last round's only


def test_a_damaged_toy_world_cache_is_rendered_again(tmp_path):
    from toolkit.data import create_dataset

    first = create_dataset("toyworld", "test", **TINY_DATA, cache_dir=str(tmp_path))
    (cached,) = tmp_path.glob("test-*.npz")
    cached.write_bytes(cached.read_bytes()[:1000])  # cut short
    with pytest.warns(UserWarning, match="damaged"):
        again = create_dataset("toyworld", "test", **TINY_DATA, cache_dir=str(tmp_path))
    assert torch.equal(first.images, again.images)


@pytest.mark.parametrize("args, match", [
    (["run", "toy", "--set", "data.params.n_train=abc"], "data.params.n_train must be an integer"),
    (["run", "toy", "--set", "data.params.n_train=400.5"], "data.params.n_train must be an integer"),
    (["run", "toy", "--set", "data.params.image_size=0"], "image_size must be at least 16"),
    (["run", "toy", "--set", "data.params.n_val=41"], "n_val must be a multiple of 4"),
    (["run", "toy", "--set", "data.params.object_size=[0.3,0.1]"], "object_size must be"),
    (["extract", "--model", "toy_resnet", "--dataset", "toyworld", "--split", "test", "--device", "gpu"],
     "device 'gpu' is not a device name"),
    (["extract", "--model", "toy_resnet", "--dataset", "toyworld", "--split", "test", "--batch-size", "0"],
     "batch_size .* must be an integer >= 1"),
    (["suite", "--al", "bugdet=5", "--tasks", "1", "--seeds", "0"], "unknown config key 'al.bugdet'"),
    (["demo", "--probe", "--al", "bugdet=5"], "unknown config key 'al.bugdet'"),
])
def test_bad_input_is_one_line_naming_the_option(args, match, capsys, tiny_backbone):
    import re

    from conftest import install_backbone

    from toolkit.cli import main

    install_backbone(tiny_backbone, None)
    with pytest.raises(SystemExit) as stop:
        main(args)
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and err.count("\n") == 0 and re.search(match, err), err


def test_damaged_records_and_bad_output_paths_are_one_line_errors(tiny_cfg, tmp_path, capsys):
    from toolkit.cli import main
    from toolkit.record import load_run

    run = tmp_path / "run"
    run_active_learning(tiny_cfg, run, log=None, max_rounds=1)
    good = (run / "rounds.jsonl").read_text()
    (run / "rounds.jsonl").write_text(good.replace('"acquired"', '"acq"'))
    with pytest.raises(RecordError, match="round record 1: missing acquired"):
        load_run(run)
    (run / "rounds.jsonl").write_text(good)
    (run / "config.yaml").write_text("")
    with pytest.raises(RecordError, match="config.yaml is empty or damaged"):
        run_active_learning(tiny_cfg, run, log=None)  # the rerun that would resume it
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for args in (["report", str(run.parent), "--out", str(tmp_path)],                       # a folder for a file
                 ["run", "toy", "--out", str(a_file / "run"), "--set", "al.budget=5"]):  # a file for a folder
        with pytest.raises(SystemExit) as stop:
            main(args)
        err = capsys.readouterr().err.strip()
        assert stop.value.code == 2 and err.count("\n") == 0, err
    assert not list(tmp_path.glob("*.tmp*"))
