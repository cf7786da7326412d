"""The task suite: a seeded task distribution, and its aggregation on constructed run records."""
import pytest
from conftest import install_backbone

from toolkit.analysis import curve_area
from toolkit.analysis.suite import claim_shares, suite_table, task_row
from toolkit.data.toy_tasks import draw_tasks
from toolkit.data.toyworld import ToyWorldParams, hue_overlap
from toolkit.experiments.suite import run_task_suite
from toolkit.record import RunWriter, load_run

SHARES = {"y0_s0": 0.7, "y0_s1": 0.05, "y1_s0": 0.05, "y1_s1": 0.2}  # minority class y1; matched minority y1_s1


def test_task_distribution_is_seeded_and_valid():
    a, b, c = draw_tasks(20, seed=0), draw_tasks(20, seed=0), draw_tasks(20, seed=1)
    assert a == b and a != c
    assert draw_tasks(5, seed=0) == a[:5]  # task i depends only on (seed, i)
    assert len({(t.label_shapes, t.place_hues) for t in a}) == 20
    for t in a:
        ToyWorldParams(**t.data_params()).validate()  # disjoint families, known names
        assert 0.90 <= t.matched_fraction <= 0.97 and 0.20 <= t.minority_fraction <= 0.35
        (lo0, hi0), (lo1, hi1) = t.place_hues
        assert hue_overlap((lo0 - 0.079, hi0 + 0.079), (lo1, hi1)) == 0  # at least min_hue_gap apart
        assert not set(t.label_shapes[0]) & set(t.label_shapes[1])
    with pytest.raises(ValueError, match="family_size"):
        draw_tasks(3, family_size=11)


def test_task_overrides_select_the_task():
    from toolkit.config import resolve_config

    t = draw_tasks(1, seed=3)[0]
    cfg = resolve_config("toy", t.overrides())
    p = ToyWorldParams(**cfg.data.params)
    assert p.label_shapes == t.label_shapes and p.place_hues == t.place_hues and p.seed == t.seed
    assert cfg.data.params["n_train"] == 2000  # merged into the preset's options, not replacing them


def test_curve_area_by_hand():
    assert curve_area([10, 20, 30], [0.2, 0.5, 0.6]) == pytest.approx((0.35 * 10 + 0.55 * 10) / 20)
    assert curve_area([10, 30], [0.4, 0.4]) == pytest.approx(0.4)


def _make(root, name, weights, strategy, seed, groups, curve, finished=True):
    cfg = {"model": {"name": "m", "weights": weights}, "al": {"strategy": strategy}, "seed": seed, "tag": name}
    w = RunWriter(root / name, cfg, {"pool_group_shares": SHARES})
    ident = iter(range(1000))
    for r, (g, value) in enumerate(zip(groups + [[]], curve)):
        row = {"round": r, "n_labels": 10 + 10 * r, "metrics": {"test": {"worst_group": value, "accuracy": 0.9}},
               "acquired": [{"id": next(ident), "group": x, "score": 0.0} for x in g]}
        if r == 0:
            row["seed_set"] = [{"id": 999, "group": "y0_s0"}]
        w.append_round(row, finished=finished and r == len(curve) - 1)
    return load_run(root / name)


def _task(root, good: bool):
    """A task with known answers. Good: pretrained least-confidence = random + a known lead,
    acquiring only mismatched examples; unpretrained arms equal. Bad: no lead, and the matched
    minority group acquired."""
    recs = []
    for s in range(3):
        up = [0.2 + 0.01 * s, 0.5 + 0.01 * s, 0.6 + 0.01 * s]
        base = [0.2 + 0.01 * s, 0.3 + 0.01 * s, 0.5 + 0.01 * s]
        acq = [["y0_s1"] * 5, ["y1_s0"] * 5] if good else [["y1_s1"] * 5, ["y1_s1"] * 5]
        recs.append(_make(root, f"pre-lc-{s}", "pretrained", "least_confidence", s, acq, up if good else base))
        recs.append(_make(root, f"pre-r-{s}", "pretrained", "random", s, [["y0_s0"] * 5] * 2, base))
        recs.append(_make(root, f"unpre-lc-{s}", "random", "least_confidence", s, [["y1_s1"] * 5] * 2, base))
        recs.append(_make(root, f"unpre-r-{s}", "random", "random", s, [["y0_s0"] * 5] * 2, base))
    return recs


def test_task_row_on_constructed_records(tmp_path):
    good = task_row(_task(tmp_path / "good", True))
    # AUC: least-confidence (0.35*10 + 0.55*10)/20 = 0.45 vs random (0.25*10 + 0.4*10)/20 = 0.325
    assert good["pre_auc_gain"] == pytest.approx(0.125) and good["pre_auc_gain_low"] == pytest.approx(0.125)
    assert good["pre_final_gain"] == pytest.approx(0.1) and good["unpre_auc_gain"] == pytest.approx(0.0)
    assert good["gain_difference"] == pytest.approx(0.125)
    # random's mean final 0.51 (30 labels); least-confidence's mean curve reaches it at 20 labels
    assert good["pre_efficiency"] == pytest.approx(1.5)
    assert good["pre_up_y0_s1"] == pytest.approx(10.0) and good["pre_up_y1_s0"] == pytest.approx(10.0)
    assert good["minority_group"] == "y1_s1" and good["pre_up_minority_matched"] == 0.0
    assert good["unpre_up_y1_s1"] == pytest.approx(5.0) and good["pre_n_seeds"] == 3
    assert all(good[c] for c in ("uncertainty_beats_random", "mismatched_upsampled_2x",
                                 "minority_matched_below_mismatched", "unpretrained_gain_smaller"))
    bad = task_row(_task(tmp_path / "bad", False))
    assert bad["pre_auc_gain"] == pytest.approx(0.0) and bad["pre_up_y1_s1"] == pytest.approx(5.0)
    assert not any(bad[c] for c in ("uncertainty_beats_random", "mismatched_upsampled_2x",
                                    "minority_matched_below_mismatched", "unpretrained_gain_smaller"))

    table = suite_table({"good": _task(tmp_path / "good2", True), "bad": _task(tmp_path / "bad2", False)})
    shares = claim_shares(table).set_index("claim")
    assert (shares["holds"] == 1).all() and (shares["share"] == 0.5).all() and (shares["tasks"] == 2).all()


def test_partial_runs_do_not_count_and_a_seed_counts_once(tmp_path):
    recs = _task(tmp_path / "t", True)
    partial = _make(tmp_path, "pre-lc-partial", "pretrained", "least_confidence", 0, [["y0_s1"] * 5],
                    [0.2, 0.9, 0.9], finished=False)
    assert task_row(recs + [partial])["pre_n_seeds"] == 3
    dup = _make(tmp_path, "pre-lc-dup", "pretrained", "least_confidence", 0, [["y0_s1"] * 5, []], [0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="seed 0 .* a seed may count only once"):
        task_row(recs + [dup])


def test_probe_suite_end_to_end(tmp_path, tiny_backbone, monkeypatch):
    """Two tiny tasks through the probe path, in-process; re-running resumes (nothing recomputed)."""
    from conftest import TINY_DATA


    install_backbone(tiny_backbone, None)
    tasks = draw_tasks(2, seed=5)
    kw = dict(out=tmp_path / "suite", data={**TINY_DATA, "cache_dir": str(tmp_path / "data")},
              al={"seed_size": 10, "per_round": 5, "budget": 10}, feature_root=tmp_path / "features",
              workers=1, log=None)
    recs = run_task_suite(tasks, [0, 1], **kw)
    assert sorted(recs) == [t.name for t in tasks] and all(len(r) == 8 for r in recs.values())
    rec = recs[tasks[0].name][0]
    assert rec.status == "finished" and rec.run_config["data"]["params"]["label_shapes"] == \
        [list(f) for f in tasks[0].label_shapes]
    table = suite_table(recs, tasks)
    assert len(table) == 2 and table["pre_n_seeds"].tolist() == [2, 2]
    assert len(list((tmp_path / "features").glob("*.h5"))) == 8  # 2 tasks x 2 weights x (pool, test): none shared
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "suite" / "runs").rglob("rounds.jsonl")}
    run_task_suite(tasks, [0, 1], **kw)
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes


@pytest.mark.parametrize("kwargs, message", [
    (dict(mode="probe", overrides=["finetune.max_steps=3"]), "full-finetuning config keys"),
    (dict(mode="full", al={"budget": 10}), "in full mode set dataset and protocol options"),
    (dict(mode="fast"), "unknown suite mode 'fast'"),
])
def test_options_of_the_other_mode_are_refused_not_ignored(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        run_task_suite(draw_tasks(1), [0], out=tmp_path / "s", **kwargs)
    assert not (tmp_path / "s").exists()
