"""Select on features, finetune once: its record, its compute, and the comparison with the full loop."""
import dataclasses

import numpy as np
import pytest

from toolkit.analysis.cost import acquired_overlap, compare_select_once, run_cost, select_once_summary
from toolkit.record import RunWriter, load_run


@pytest.fixture
def pair(tiny_cfg, tmp_path):
    """The full loop and select-then-finetune-once on the same config and seed."""
    from toolkit.al.loop import run_active_learning
    from toolkit.features.select_finetune import run_select_then_finetune

    cfg = dataclasses.replace(tiny_cfg, al=dataclasses.replace(tiny_cfg.al, seed_size=10, per_round=5, budget=10))
    full = run_active_learning(cfg, tmp_path / "runs" / "full", log=None)
    once = run_select_then_finetune(cfg, tmp_path / "runs" / "once", feature_root=tmp_path / "features")
    return cfg, full, once


def test_select_once_record_shape_and_provenance(pair, tmp_path):
    cfg, full, once = pair
    assert once.mode == "select_then_finetune" and once.status == "finished"
    assert once.rounds["n_labels"].tolist() == full.rounds["n_labels"].tolist() == [10, 15, 20]
    assert once.rounds["train/by"].tolist() == ["probe", "probe", "finetune"]
    # the same seed set as the full loop (same seed), and the probe run's acquisitions exactly
    assert once.seed_set["id"].tolist() == full.seed_set["id"].tolist()
    sel = load_run(tmp_path / "runs" / "once" / "selection")
    assert once.acquisitions["id"].tolist() == sel.acquisitions["id"].tolist()
    # the last round's metrics are the finetuned network's, not the probe's
    assert once.rounds["train/steps"].iloc[-1] > 0
    # the earlier rounds are the probe's own, row for row
    assert once.rounds["test/worst_group"].iloc[:-1].tolist() == sel.rounds["test/worst_group"].iloc[:-1].tolist()


def test_select_once_is_read_by_every_analysis(pair, tmp_path):
    import toolkit
    from toolkit.analysis import final_summary, upsampling_ratios, upsampling_summary
    from toolkit.record import tidy_rounds

    _, full, once = pair
    runs = toolkit.load_runs(tmp_path / "runs")
    assert len(runs) == 2  # the selection record inside the run folder is not a third run
    tidy = tidy_rounds([full, once])
    assert set(tidy["run"]) == {"full", "once"}
    assert len(final_summary(tidy, ["test/worst_group"], by=["run"])) == 2
    up = upsampling_ratios([once])
    assert np.isclose((up["acquired_share"]).sum(), 1.0)
    assert len(upsampling_summary(up)) > 0
    page = toolkit.build_report([tmp_path / "runs" / "once", tmp_path / "runs" / "full"], tmp_path / "report.html")
    assert page.exists() and "once" in page.read_text()


def test_select_once_rerun_resumes_to_the_same_record(pair, tiny_cfg, tmp_path):
    from toolkit.features.select_finetune import run_select_then_finetune

    cfg, _, once = pair
    written = (tmp_path / "runs" / "once" / "rounds.jsonl").stat().st_mtime_ns
    again = run_select_then_finetune(cfg, tmp_path / "runs" / "once", feature_root=tmp_path / "features")
    assert (tmp_path / "runs" / "once" / "rounds.jsonl").stat().st_mtime_ns == written  # nothing finetuned again
    assert again.acquisitions["id"].tolist() == once.acquisitions["id"].tolist()
    assert again.rounds["test/worst_group"].tolist() == once.rounds["test/worst_group"].tolist()


def test_cost_and_comparison(pair):
    cfg, full, once = pair
    fc, oc = run_cost(full), run_cost(once)
    b = cfg.finetune.batch_size
    n_pool, n_test = full.meta["pool_size"], cfg.data.params["n_test"]
    steps = full.rounds["train/steps"].tolist()
    # the full loop: three trainings, three evaluations, two scorings of the unlabelled pool
    assert fc["backward"] == sum(steps) * b
    assert fc["forward"] == sum(steps) * b + 3 * n_test + (n_pool - 10) + (n_pool - 15)
    # once: the feature caches (pool and test), one training, one evaluation
    s = once.rounds["train/steps"].iloc[-1]
    assert oc["backward"] == s * b and oc["forward"] == n_pool + n_test + s * b + n_test
    table = compare_select_once([full], [once], task_of=lambda r: "t")
    assert len(table) == 1 and 0 <= table["overlap"].iloc[0] <= 1
    assert table["overlap"].iloc[0] == pytest.approx(acquired_overlap(full, once))
    summ = select_once_summary(table).set_index("quantity")
    assert summ.loc["passes_ratio", "mean"] == pytest.approx((fc["forward"] + fc["backward"]) /
                                                             (oc["forward"] + oc["backward"]))


def _rec(root, name, acquired, passes=None, mode="full"):
    cfg = {"model": {"name": "m", "weights": "pretrained"}, "al": {"strategy": "least_confidence"}, "seed": 0,
           "mode": mode}
    w = RunWriter(root / name, cfg, {"pool_group_shares": {"y0_s0": 0.5, "y0_s1": 0.1, "y1_s0": 0.1, "y1_s1": 0.3}})
    rows = [acquired, []]
    for r, ids in enumerate(rows):
        t = {"train_s": 2.0, "eval_s": 1.0, "score_s": 0.5}
        if passes is not None:
            t["passes"] = passes
        row = {"round": r, "n_labels": 2 + 2 * r, "metrics": {"test": {"worst_group": 0.5, "accuracy": 0.8}},
               "acquired": [{"id": i, "group": "y0_s1"} for i in ids], "timings": t}
        if r == 0:
            row["seed_set"] = [{"id": 100, "group": "y0_s0"}, {"id": 101, "group": "y1_s1"}]
        w.append_round(row, finished=r == 1)
    return load_run(root / name)


def test_cost_and_overlap_hand_computed(tmp_path):
    a = _rec(tmp_path, "a", [1, 2], {"forward": 10, "backward": 4})
    b = _rec(tmp_path, "b", [2, 3], {"forward": 3, "backward": 1})
    assert run_cost(a) == {"seconds": 7.0, "forward": 20, "backward": 8}
    assert acquired_overlap(a, b) == 0.5
    old = _rec(tmp_path, "old", [1, 2])  # a full-loop record from before passes were counted
    assert np.isnan(run_cost(old)["forward"]) and run_cost(old)["seconds"] == 7.0


def test_select_once_killed_in_its_finetuning_resumes_without_selecting_again(tiny_cfg, tmp_path, monkeypatch):
    import toolkit.al.finetune as ft
    from toolkit.features.select_finetune import run_select_then_finetune

    real = ft.finetune

    def dies(*args, **kwargs):
        raise KeyboardInterrupt("killed during the finetuning")

    monkeypatch.setattr(ft, "finetune", dies)
    with pytest.raises(KeyboardInterrupt):
        run_select_then_finetune(tiny_cfg, tmp_path / "once", feature_root=tmp_path / "f")
    selection = tmp_path / "once" / "selection" / "rounds.jsonl"
    assert selection.exists() and not (tmp_path / "once" / "rounds.jsonl").exists()
    selected_at = selection.stat().st_mtime_ns
    monkeypatch.setattr(ft, "finetune", real)
    rec = run_select_then_finetune(tiny_cfg, tmp_path / "once", feature_root=tmp_path / "f")
    assert rec.status == "finished" and selection.stat().st_mtime_ns == selected_at
