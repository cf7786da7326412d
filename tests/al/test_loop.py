import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from toolkit.al import loop as loop_mod
from toolkit.al.loop import run_active_learning
from toolkit.al.protocol import acquisition_sizes, draw_seed_set
from toolkit.config import resolve_config
from toolkit.models import create_model, weights_digest
from toolkit.record import load_run


def _comparable(rec):
    """A record minus wall-clock timings."""
    rounds = rec.rounds.drop(columns=[c for c in rec.rounds.columns if c.startswith("time/") or c in ("train/seconds", "train/data_seconds")])
    return rounds, rec.acquisitions, rec.seed_set


def test_record_contents(tiny_cfg, tmp_path):
    rec = run_active_learning(tiny_cfg, tmp_path / "run", log=None)
    assert rec.status == "finished"
    assert rec.rounds["n_labels"].tolist() == [10, 15, 20]
    assert len(rec.seed_set) == 10 and sorted(rec.seed_set["label"].value_counts().tolist()) == [5, 5]
    acquired = rec.acquisitions
    assert len(acquired) == 10 and acquired["round"].tolist() == [0] * 5 + [1] * 5
    assert not set(acquired["id"]) & set(rec.seed_set["id"]) and acquired["id"].is_unique
    assert set(acquired["group"]) <= {"y0_s0", "y0_s1", "y1_s0", "y1_s1"}
    # scores are sorted best-first within a round (least confidence lies in [0, 0.5] for 2 classes)
    for _, g in acquired.groupby("round"):
        assert (np.diff(g["score"].to_numpy()) <= 0).all() and g["score"].between(0, 0.5).all()
    for col in ["test/accuracy", "test/worst_group", "test/mismatched", "test/balanced", "test/avg_train_weighted",
                "test/acc/y1_s0", "time/train_s", "train/steps"]:
        assert col in rec.rounds.columns
    assert rec.meta["pool_group_shares"]["y0_s0"] == pytest.approx(171 / 240)
    assert rec.strategy == "least_confidence"


def test_same_seed_same_record_different_seed_differs(tiny_cfg, tmp_path):
    a = run_active_learning(tiny_cfg, tmp_path / "a", log=None)
    b = run_active_learning(tiny_cfg, tmp_path / "b", log=None)
    c = run_active_learning(dataclasses.replace(tiny_cfg, seed=1), tmp_path / "c", log=None)
    for x, y in zip(_comparable(a), _comparable(b)):
        pd.testing.assert_frame_equal(x, y)
    assert set(a.seed_set["id"]) != set(c.seed_set["id"])


def test_kill_and_resume_equals_uninterrupted(tiny_cfg, tmp_path):
    full = run_active_learning(tiny_cfg, tmp_path / "full", log=None)
    part = run_active_learning(tiny_cfg, tmp_path / "resumed", max_rounds=1, log=None)
    assert part.status == "running" and len(part.rounds) == 1
    resumed = run_active_learning(tiny_cfg, tmp_path / "resumed", log=None)
    assert resumed.status == "finished"
    for x, y in zip(_comparable(full), _comparable(resumed)):
        pd.testing.assert_frame_equal(x, y)


def test_random_strategy_runs_and_differs_from_uncertainty(tiny_cfg, tmp_path):
    unc = run_active_learning(tiny_cfg, tmp_path / "u", log=None)
    rnd_cfg = dataclasses.replace(tiny_cfg, al=dataclasses.replace(tiny_cfg.al, strategy="random"))
    rnd = run_active_learning(rnd_cfg, tmp_path / "r", log=None)
    assert set(unc.seed_set["id"]) == set(rnd.seed_set["id"])  # same seed set, different picks
    assert set(unc.acquisitions["id"]) != set(rnd.acquisitions["id"])


def test_each_round_starts_from_pretrained_weights(tiny_cfg, tmp_path, monkeypatch):
    pretrained = create_model("toy_resnet", weights=tiny_cfg.model.weights, num_classes=2)
    torch.manual_seed(0)
    fresh_random = create_model("toy_resnet", weights="random", num_classes=2)
    seen = []
    real = loop_mod.finetune

    def spy(model, *args, **kwargs):
        seen.append(weights_digest(model))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(loop_mod, "finetune", spy)
    run_active_learning(tiny_cfg, tmp_path / "run", log=None)
    assert len(seen) == 3
    assert set(seen) == {weights_digest(pretrained)}
    assert weights_digest(fresh_random) not in seen


def test_existing_run_with_other_config_is_not_overwritten(tiny_cfg, tmp_path):
    run_active_learning(tiny_cfg, tmp_path / "run", max_rounds=1, log=None)
    other = dataclasses.replace(tiny_cfg, al=dataclasses.replace(tiny_cfg.al, per_round=3))
    with pytest.raises(ValueError, match="different config.*al.per_round"):
        run_active_learning(other, tmp_path / "run", log=None)


def test_budget_and_seed_set_errors(tiny_cfg, tmp_path):
    too_big = dataclasses.replace(tiny_cfg, al=dataclasses.replace(tiny_cfg.al, budget=500))
    with pytest.raises(ValueError, match="exceeds the pool.*lower al.budget"):
        run_active_learning(too_big, tmp_path / "a", log=None)
    big_seed = dataclasses.replace(tiny_cfg, al=dataclasses.replace(tiny_cfg.al, seed_size=1000))
    with pytest.raises(ValueError, match="seed set of 1000 is larger than the pool"):
        run_active_learning(big_seed, tmp_path / "b", log=None)
    bad = dataclasses.replace(tiny_cfg, al=dataclasses.replace(tiny_cfg.al, strategy="batchbald"))
    with pytest.raises(ValueError, match="valid names"):
        run_active_learning(bad, tmp_path / "c", log=None)
    assert not (tmp_path / "a").exists()  # nothing written for a rejected config


def test_acquisition_sizes():
    cfg = resolve_config("toy", ["al.per_round=5", "al.budget=12"])
    assert acquisition_sizes(cfg.al) == [5, 5, 2]
    geo = resolve_config("toy", ["al.per_round=2", "al.budget=14", "al.schedule=geometric"])
    assert acquisition_sizes(geo.al) == [2, 4, 8]


def test_seed_sets():
    labels = np.array([0] * 90 + [1] * 10)
    s = draw_seed_set(labels, 10, "balanced", np.random.default_rng(0))
    assert np.bincount(labels[s]).tolist() == [5, 5]
    assert np.array_equal(s, draw_seed_set(labels, 10, "balanced", np.random.default_rng(0)))
    with pytest.raises(ValueError, match="needs 15 examples of class 1"):
        draw_seed_set(labels, 30, "balanced", np.random.default_rng(0))


def test_pool_subsample_limits_candidates(tiny_cfg, tmp_path):
    cfg = dataclasses.replace(tiny_cfg, al=dataclasses.replace(tiny_cfg.al, pool_subsample=20))
    rec = run_active_learning(cfg, tmp_path / "sub", log=None)
    assert len(rec.acquisitions) == 10 and rec.acquisitions["id"].is_unique


def test_load_run_rejects_incomplete(tmp_path):
    (tmp_path / "config.yaml").write_text("config: {}\n")
    with pytest.raises(FileNotFoundError, match="missing meta.json"):
        load_run(tmp_path)


@pytest.mark.parametrize("garble", [b"\xff\xfe\x00garbage", b"[1, 2]", b"{\"pool_size\": "])
def test_a_garbled_meta_json_is_named(tiny_cfg, tmp_path, garble):
    run_active_learning(tiny_cfg, tmp_path / "run", max_rounds=1, log=None)
    (tmp_path / "run" / "meta.json").write_bytes(garble)
    with pytest.raises(ValueError, match=r"meta.json is not a valid run meta file .* Delete the run directory"):
        load_run(tmp_path / "run")


@pytest.mark.parametrize("strategy", ["least_confidence", "random"])
def test_pool_outputs_hold_every_candidate_and_explain_the_picks(tiny_cfg, tmp_path, strategy):
    from toolkit.al.acquisition import least_confidence

    cfg = dataclasses.replace(tiny_cfg, al=dataclasses.replace(tiny_cfg.al, strategy=strategy, save_pool_outputs=True))
    run_active_learning(cfg, tmp_path / "run", max_rounds=1, log=None)  # killed after round 0 ...
    rec = run_active_learning(cfg, tmp_path / "run", log=None)  # ... and resumed
    files = sorted(p.name for p in (tmp_path / "run" / "pool_outputs").iterdir())
    assert files == ["round_000.h5", "round_001.h5"]  # rounds that acquired; nothing .partial
    for r in (0, 1):
        out = rec.pool_outputs(r)
        labelled_before = set(rec.seed_set["id"]) | set(rec.acquisitions.query("round < @r")["id"])
        assert len(out) == 240 - len(labelled_before) and not set(out["id"]) & labelled_before
        acquired = rec.acquisitions.query("round == @r")
        top = out.sort_values("score", ascending=False, kind="stable").head(len(acquired))
        assert set(top["id"]) == set(acquired["id"])
        if strategy == "least_confidence":  # the stored scores are least confidence of the stored logits
            logits = out[["logit_0", "logit_1"]].to_numpy()
            probs = np.exp(logits - logits.max(1, keepdims=True))
            probs /= probs.sum(1, keepdims=True)
            np.testing.assert_allclose(out["score"], least_confidence(probs), atol=2e-3)
    with pytest.raises(FileNotFoundError, match="save_pool_outputs"):
        rec.pool_outputs(2)


def test_run_from_an_older_version_resumes_when_new_options_are_default(tiny_cfg, tmp_path):
    import yaml

    run_active_learning(tiny_cfg, tmp_path / "run", max_rounds=1, log=None)
    header_path = tmp_path / "run" / "config.yaml"
    header = yaml.safe_load(header_path.read_text())
    del header["config"]["loader_workers"], header["config"]["al"]["save_pool_outputs"]  # as an older version wrote it
    header_path.write_text(yaml.safe_dump(header))
    assert run_active_learning(tiny_cfg, tmp_path / "run", log=None).status == "finished"
    changed = dataclasses.replace(tiny_cfg, loader_workers=2)
    header_path.write_text(yaml.safe_dump(header))
    with pytest.raises(ValueError, match="loader_workers"):
        run_active_learning(changed, tmp_path / "run", log=None)


def test_checkpoints_hold_the_finetuned_model_and_feed_stage_separability(tiny_cfg, tmp_path, monkeypatch):
    from toolkit.analysis.separability import separability_by_stage
    from toolkit.features.pool import stage_caches

    monkeypatch.chdir(tmp_path)
    cfg = dataclasses.replace(tiny_cfg, checkpoint_rounds=[0, -1])
    seen = {}
    real_finetune = loop_mod.finetune

    def spy(model, *args, **kwargs):  # keep each round's finetuned weights to compare with the files
        out = real_finetune(model, *args, **kwargs)
        seen[len(seen)] = weights_digest(model)
        return out

    monkeypatch.setattr(loop_mod, "finetune", spy)
    rec = run_active_learning(cfg, tmp_path / "run", log=None)
    assert sorted(rec.checkpoints()) == [0, 2]  # the seed-set round and the last (-1)
    from safetensors.torch import load_file

    for r, path in rec.checkpoints().items():
        full = create_model("toy_resnet", weights="random", num_classes=2)
        full.load_state_dict(load_file(str(path)))
        assert weights_digest(full) == seen[r]  # the file is the model as finetuned in round r
        via_weights = create_model("toy_resnet", weights=str(path), num_classes=2)  # what extraction loads
        assert weights_digest(via_weights.backbone) == weights_digest(full.backbone)
    table = separability_by_stage(stage_caches(rec), cv=2)
    assert table["stage"].unique().tolist() == ["before finetuning", "after 10 labels", "after 20 labels"]
    assert set(table["group"]) == {"y0_s0", "y0_s1", "y1_s0", "y1_s1"} and table["group_probe"].between(0, 1).all()
    with pytest.raises(ValueError, match="checkpoint_rounds"):
        stage_caches(run_active_learning(tiny_cfg, tmp_path / "plain", log=None))



def test_a_failed_start_does_not_block_the_corrected_command(tiny_cfg, tmp_path):
    from dataclasses import replace

    bad = replace(tiny_cfg, model=replace(tiny_cfg.model, weights=str(tmp_path / "missing.pt")))
    with pytest.raises(FileNotFoundError, match="no such file"):
        run_active_learning(bad, tmp_path / "run", log=None)
    rec = run_active_learning(tiny_cfg, tmp_path / "run", log=None)  # was: "already holds a run with a different config"
    assert rec.rounds["n_labels"].tolist() == [10, 15, 20]


def test_a_second_writer_is_refused_naming_the_holder(tiny_cfg, tmp_path):
    import os

    from toolkit._util.locks import LockedError, exclusive

    with exclusive(tmp_path / "run", "run", directory=True):  # another process's open run, as far as flock knows
        with pytest.raises(LockedError, match=rf"run .*run is being written by pid {os.getpid()} on .*, since"):
            run_active_learning(tiny_cfg, tmp_path / "run", log=None)
    rec = run_active_learning(tiny_cfg, tmp_path / "run", log=None)  # released: the same command now runs
    assert rec.rounds["n_labels"].tolist() == [10, 15, 20]


def test_data_loading_time_is_recorded_once_per_process(tiny_cfg, tmp_path):
    # the seconds spent loading the data belong to the first round a process runs, not to every round
    rec = run_active_learning(tiny_cfg, tmp_path / "r", log=None, max_rounds=2)
    assert rec.rounds["time/load_data_s"].notna().tolist() == [True, False]
    rec = run_active_learning(tiny_cfg, tmp_path / "r", log=None)  # resumed: its first round loads again
    assert rec.rounds["time/load_data_s"].notna().tolist() == [True, False, True]
