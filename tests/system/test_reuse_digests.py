"""Issue #31, item 2: a rerun never reuses a finished run whose inputs changed since it ran.

Every path that hands back a finished run (the sweep, and through it the demo and the full
suite and dose study; the probe runs of the suite, dose study and probe demo; select-once)
compares the run's recorded data and weights digests with the current inputs, and refuses
as `altk run` does on the same folder."""
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_DATA, install_backbone

from toolkit.al.loop import run_active_learning
from toolkit.errors import RecordError


def _other_weights(src, dst):
    """Replace `dst` in place with a toy backbone whose weights differ from `src`'s."""
    saved = torch.load(src, map_location="cpu", weights_only=False)
    key = next(k for k, v in saved["backbone"].items() if v.is_floating_point())
    saved["backbone"][key] = saved["backbone"][key] + 0.01
    torch.save(saved, dst)


SETS = ["finetune.max_steps=4", "finetune.micro_batch=16", "al.seed_size=10", "al.per_round=5", "al.budget=5",
        "eval_batch_size=128", *[f"data.params.{k}={v}" for k, v in TINY_DATA.items()]]


def test_sweep_rerun_after_the_weights_file_changed_refuses(tiny_backbone, tmp_path, capsys):
    """The issue's steps: `altk sweep` with model.weights=W.pt, W.pt replaced, rerun: refused (exit 2),
    naming the runs and what changed; rounds.csv is not rewritten for the old weights."""
    from toolkit.al.sweep import expand_grid, parse_grid
    from toolkit.cli import main

    weights = tmp_path / "W.pt"
    shutil.copy(tiny_backbone, weights)
    sets = [*SETS, f"model.weights={weights}", f"data.params.cache_dir={tmp_path / 'd'}"]
    out = tmp_path / "D"
    for name, cfg in expand_grid("toy", parse_grid(["seeds=0-1"]), sets).items():  # what the sweep runs
        run_active_learning(cfg, out / "runs" / name, log=None)
    argv = ["sweep", "toy", "--grid", "seeds=0-1", "--set", *sets, "--out", str(out), "--workers", "1"]
    main(argv)  # the same inputs: both reused, no false alarm
    assert "2 finished, 0 to run" in capsys.readouterr().out
    table = (out / "rounds.csv").read_text()

    _other_weights(tiny_backbone, weights)
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    assert "holds 2 run(s) made on other inputs: seed-0 (weights); seed-1 (weights): weights changed since" in err
    assert "new output folder (--out), or restore the old inputs" in err
    assert (out / "rounds.csv").read_text() == table
    # `altk run` on one of the runs refuses with the same cause
    with pytest.raises(RecordError, match="weights changed since"):
        run_active_learning(expand_grid("toy", parse_grid(["seeds=0"]), sets)["seed-0"], out / "runs" / "seed-0",
                            log=None)


def test_sweep_rerun_after_the_data_files_changed_refuses(tmp_path):
    """A csv_images folder whose images were edited after the runs: same config, other data."""
    from PIL import Image

    from toolkit.al.sweep import Sweep
    from toolkit.config import resolve_config

    root = tmp_path / "images"
    root.mkdir()
    rows = [{"file": f"im{i}.png", "label": i % 2, "attribute": (i // 2) % 2} for i in range(60)]
    for i, r in enumerate(rows):
        Image.fromarray(np.full((12, 12, 3), i, np.uint8)).save(root / r["file"])
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    cfgs = {f"s{seed}": resolve_config("csv-images", {
        "data": {"params": {"root": str(root), "resolution": 16, "matched": {0: 0, 1: 1}, "cache_dir": None}},
        "model": {"name": "timm:test_resnet", "weights": "random"}, "finetune": {"max_steps": 2, "micro_batch": 8},
        "al": {"seed_size": 10, "per_round": 5, "budget": 5}, "seed": seed}) for seed in (0, 1)}
    sweep = Sweep(tmp_path / "sw", cfgs)
    for name, cfg in cfgs.items():
        run_active_learning(cfg, sweep.run_dir(name), log=None)
    assert Sweep(tmp_path / "sw", cfgs).todo() == []  # random weights, one model per seed: no false alarm

    for i, r in enumerate(rows):  # the images edited in place
        Image.fromarray(np.full((12, 12, 3), 255 - i, np.uint8)).save(root / r["file"])
    with pytest.raises(RecordError, match=r"holds 2 run\(s\) made on other inputs: s0 \(data:test, data:train, "
                                          r"data:val\); s1 .*: data changed since"):
        Sweep(tmp_path / "sw", cfgs).todo()


def _tiny_suite(tasks, out, tmp_path):
    from toolkit.experiments.suite import run_task_suite

    return run_task_suite(tasks, [0], out=out, data={**TINY_DATA, "cache_dir": str(tmp_path / "data")},
                          al={"seed_size": 10, "per_round": 5, "budget": 5}, feature_root=tmp_path / "features",
                          workers=1, log=None)


def test_probe_suite_rerun_after_its_weights_or_caches_changed_refuses(tiny_backbone, tmp_path):
    """The suite's probe runs (as the dose study's and the probe demo's: `run_probes`): a cache
    rebuilt in place with other embeddings, or a replaced backbone (new caches), is refused."""
    import h5py

    from toolkit.data.toy_tasks import draw_tasks
    from toolkit.features.cache import chunk_digest, seal_content
    from toolkit.models.pretrain import toy_checkpoint

    install_backbone(tiny_backbone, None)
    tasks = draw_tasks(1, seed=5)
    _tiny_suite(tasks, tmp_path / "suite", tmp_path)
    _tiny_suite(tasks, tmp_path / "suite", tmp_path)  # the same inputs: reused

    pools = sorted((tmp_path / "features").glob("*-train-*.h5"))
    with h5py.File(pools[0], "r+") as f:  # other embeddings, with digests that match them (a re-extraction)
        emb, step = f["embeddings"], int(f.attrs["chunk_rows"])
        emb[...] = emb[...][::-1]
        for i in range(len(f["chunk_sha256"])):
            f["chunk_sha256"][i] = chunk_digest(emb[i * step:(i + 1) * step]).encode()
        seal_content(f)
    with pytest.raises(RecordError, match="holds a run started on other inputs: pool changed since"):
        _tiny_suite(tasks, tmp_path / "suite", tmp_path)

    pools[0].unlink()
    _tiny_suite(tasks, tmp_path / "suite", tmp_path)  # extracted again, the same embeddings: reused
    _other_weights(tiny_backbone, toy_checkpoint())
    with pytest.raises(RecordError, match="holds a probe run started on other inputs: the weights and feature "
                                          "caches changed since"):
        _tiny_suite(tasks, tmp_path / "suite", tmp_path)


def test_select_once_rerun_after_the_weights_changed_refuses(tiny_backbone, tmp_path):
    """Both arms of select-once: the full loop and select-then-finetune (before any feature
    extraction for the new weights)."""
    from toolkit.config import resolve_config
    from toolkit.errors import RunsFailedError
    from toolkit.experiments.select_once import run_select_once

    weights = tmp_path / "W.pt"
    shutil.copy(tiny_backbone, weights)
    cfg = resolve_config("toy", [*SETS, f"model.weights={weights}", f"data.params.cache_dir={tmp_path / 'd'}"])
    kw = dict(out=tmp_path / "cmp", workers=1, log=None)
    run_select_once({"t-s0": cfg}, **kw)
    assert {k: len(v) for k, v in run_select_once({"t-s0": cfg}, **kw).items()} == {"full": 1, "once": 1}
    caches = set((tmp_path / "cache").rglob("*.h5"))

    _other_weights(tiny_backbone, weights)
    with pytest.raises(RunsFailedError) as err:
        run_select_once({"t-s0": cfg}, **kw)
    lines = [line for line in str(err.value).splitlines() if "t-s0" in line]
    assert len(lines) == 2 and all("RecordError" in line and "weights changed since" in line for line in lines)
    assert set((tmp_path / "cache").rglob("*.h5")) == caches  # refused before extracting for the new weights


def test_the_demo_refuses_a_finished_run_made_with_other_weights(tiny_backbone, tmp_path, monkeypatch):
    """The demo (like the full suite and dose study) reuses runs through `Sweep.todo`: a finished
    run made with the old toy backbone is refused, not put in the tables."""
    from toolkit.experiments.demo import demo_configs, run_demo
    from toolkit.models.pretrain import toy_checkpoint

    monkeypatch.chdir(tmp_path)
    install_backbone(tiny_backbone, tmp_path)
    overrides = [*SETS, f"data.params.cache_dir={tmp_path / 'd'}"]
    name, cfg = next((n, c) for n, c in demo_configs([0], overrides).items() if c.model.weights == "pretrained")
    run_active_learning(cfg, tmp_path / "out" / "runs" / name, log=None)
    _other_weights(tiny_backbone, toy_checkpoint())
    with pytest.raises(RecordError, match=f"holds 1 run\\(s\\) made on other inputs: {name} \\(weights\\)"):
        run_demo(seeds=[0], out=tmp_path / "out", workers=1, overrides=overrides, log=None)
    assert not (tmp_path / "out" / "rounds.csv").exists()
