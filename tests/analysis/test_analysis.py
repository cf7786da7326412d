import numpy as np
import pandas as pd
import pytest

from toolkit.analysis.maps import EmbeddingMap
from toolkit.analysis.neighbours import NeighbourIndex, neighbourhoods
from toolkit.analysis.separability import GroupSeparability


def _clusters(n_per=40, d=16, spread=0.3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, d)) * 3
    y = np.repeat([0, 0, 1, 1], n_per)
    s = np.repeat([0, 1, 0, 1], n_per)
    X = centres[2 * y + s] + spread * rng.normal(size=(4 * n_per, d))
    return X, y, s


def test_separability_of_constructed_groups():
    X, y, s = _clusters()
    sep = GroupSeparability(cv=4).fit(X, y, s)
    assert sep.scores_.set_index("target")["accuracy"].min() > 0.95
    # now make only the spurious attribute visible: the label is at chance, groups at ~50%
    rng = np.random.default_rng(1)
    X2 = np.c_[s * 4.0, rng.normal(size=(len(s), 8))]
    sep2 = GroupSeparability(cv=4).fit(X2, y, s).scores_.set_index("target")["accuracy"]
    assert sep2["spurious"] > 0.95 and sep2["label"] < 0.7 and sep2["group"] < 0.7
    assert len(GroupSeparability(cv=4).fit(X, y, s).per_group_) == 4


def test_separability_needs_enough_per_group():
    X, y, s = _clusters(n_per=3)
    with pytest.raises(ValueError, match="smallest group has 3"):
        GroupSeparability(cv=5).fit(X, y, s)


def test_tsne_map_keeps_clusters_apart_and_is_seeded():
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    X, y, s = _clusters(n_per=50, d=30)
    groups = 2 * y + s
    a = EmbeddingMap(perplexity=20, random_state=0).fit(X).embedding_
    b = EmbeddingMap(perplexity=20, random_state=0).fit(X).embedding_
    assert a.shape == (200, 2) and np.allclose(a, b)
    knn = cross_val_score(KNeighborsClassifier(5), a, groups, cv=5).mean()
    assert knn > 0.95


def test_faiss_neighbours_equal_exact():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 8)).astype(np.float32)
    ids = np.arange(300) + 1000
    idx = NeighbourIndex().fit(X, ids)
    _, got = idx.query(X[:20], 5)
    d = ((X[:20, None, :] - X[None]) ** 2).sum(-1)
    assert np.array_equal(got, ids[np.argsort(d, axis=1, kind="stable")[:, :5]])
    ivf = NeighbourIndex(exact_threshold=100, nlist=8, nprobe=8).fit(X, ids)  # all cells probed: exact
    assert np.array_equal(ivf.query(X[:20], 5)[1], got)


def test_neighbourhood_table():
    X, y, s = _clusters(n_per=20)
    ids = np.arange(len(y))
    attrs = pd.DataFrame({"y": y, "place": s}, index=ids)
    table = neighbourhoods(NeighbourIndex().fit(X, ids), X, ids, attrs, np.array([0, 30]), k=5)
    assert table["same_label"].tolist() == [1.0, 1.0] and table["group_mix"].tolist() == [1, 1]
    assert all(0 not in row for row in table["neighbour_ids"][:1])


def _figures():
    from toolkit.report import figures

    curves = pd.DataFrame({"weights": ["pretrained"] * 3 + ["random"] * 3, "strategy": "least_confidence",
                           "n_labels": [10, 20, 30] * 2, "mean": [0.5, 0.6, 0.7, 0.5, 0.5, 0.5],
                           "low": [0.4, 0.5, 0.6, 0.4, 0.4, 0.4], "high": [0.6, 0.7, 0.8, 0.6, 0.6, 0.6]})
    ups = pd.DataFrame({"weights": ["pretrained"] * 2 + ["random"] * 2, "strategy": "least_confidence",
                        "group": ["y0_s0", "y0_s1"] * 2, "upsampling": [0.5, 8.0, 1.0, 1.1],
                        "low": [0.4, 6.0, 0.9, 0.8], "high": [0.6, 9.0, 1.1, 1.3]})
    sep = pd.DataFrame({"embedding": ["a", "a", "b", "b"], "group": ["g0", "g1"] * 2, "group_probe": [0.9, 0.8, 0.2, 0.1]})
    coords = np.array([[0, 0], [1, 1], [2, 2], [3, 3]], dtype=float)
    dose = pd.DataFrame({"weights": "pretrained", "matched_fraction": [0.5, 0.9], "gain": [0.0, 0.2],
                         "low": [-0.1, 0.1], "high": [0.1, 0.3]})
    return {"curve": figures.learning_curve_figure(curves, title="t"), "upsampling": figures.upsampling_figure(ups),
            "separability": figures.separability_figure(sep),
            "map": figures.embedding_map_figure(coords, ["a", "a", "b", "b"], marked=[1, 3]),
            "dose": figures.dose_response_figure(dose)}


def test_matplotlib_redraw_has_the_figure_content():
    import matplotlib.pyplot as plt

    from toolkit.report.static import to_matplotlib

    figs = _figures()
    ax = to_matplotlib(figs["curve"]).axes[0]
    assert len(ax.patches) == 2  # one CI band per arm
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["pretrained / least_confidence",
                                                                    "random / least_confidence"]
    assert ax.get_xlabel() == "labelled examples" and ax.get_title(loc="left") == "t"
    ax = to_matplotlib(figs["upsampling"]).axes[0]
    heights = sorted(round(p.get_height(), 3) for p in ax.patches)
    assert heights == [0.5, 1.0, 1.1, 8.0]
    assert any(line.get_ydata()[0] == 1.0 and line.get_linestyle() == "--" for line in ax.lines)  # pool rate
    assert to_matplotlib(figs["separability"]).axes[0].get_ylim() == (0.0, 1.0)
    ax = to_matplotlib(figs["map"]).axes[0]
    stars = ax.collections[-1]
    assert stars.get_offsets().tolist() == [[1.0, 1.0], [3.0, 3.0]]  # the acquired points, on top
    plt.close("all")


@pytest.mark.parametrize("suffix,magic", [(".png", b"\x89PNG"), (".pdf", b"%PDF"), (".svg", b"<?xml")])
def test_static_export_without_a_browser(tmp_path, suffix, magic):
    from toolkit.report.figures import save_static

    for name, fig in _figures().items():
        out = save_static(fig, tmp_path / f"{name}{suffix}", engine="matplotlib")
        assert out.read_bytes()[: len(magic)] == magic
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}{suffix}" for n in _figures())  # no temp files


def test_static_export_auto_falls_back_when_no_browser(tmp_path, monkeypatch, caplog):
    import plotly.graph_objects as go

    from toolkit.report.figures import save_static

    def no_browser(self, *a, **k):
        raise RuntimeError("Kaleido requires Google Chrome to be installed.")

    monkeypatch.setattr(go.Figure, "write_image", no_browser)
    monkeypatch.setattr("toolkit.report.figures._NO_BROWSER", [])  # as in a fresh process
    fig = _figures()["dose"]
    with caplog.at_level("WARNING", logger="toolkit"):  # a log line: a warning would name a notebook's temp file
        assert save_static(fig, tmp_path / "d.png").read_bytes()[:4] == b"\x89PNG"
    assert any("matplotlib" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    with pytest.raises(RuntimeError, match="apt install chromium"):
        save_static(fig, tmp_path / "e.png", engine="kaleido")
    assert not (tmp_path / "e.png").exists() and len(list(tmp_path.iterdir())) == 1
    with pytest.raises(ValueError, match=".html"):
        save_static(fig, tmp_path / "e.html")


def test_unsupported_trace_is_refused_not_misdrawn():
    import plotly.graph_objects as go

    from toolkit.report.static import to_matplotlib

    with pytest.raises(NotImplementedError, match="heatmap"):
        to_matplotlib(go.Figure(go.Heatmap(z=[[1, 2], [3, 4]])))


def test_upsampling_ratio_and_label_efficiency_on_constructed_records(tmp_path):
    from toolkit.analysis import label_efficiency_table, tidy_rounds, upsampling_over_rounds, upsampling_ratios
    from toolkit.record import RunWriter, load_run

    shares = {"y0_s0": 0.7, "y0_s1": 0.05, "y1_s0": 0.05, "y1_s1": 0.2}

    def make(name, strategy, seed, acquired_groups, curve):
        cfg = {"model": {"name": "m", "weights": "pretrained"}, "al": {"strategy": strategy}, "seed": seed}
        w = RunWriter(tmp_path / name, cfg, {"pool_group_shares": shares})
        ident = iter(range(1000))
        for r, (groups, value) in enumerate(zip(acquired_groups + [[]], curve)):
            row = {"round": r, "n_labels": 10 + 10 * r, "metrics": {"test": {"worst_group": value}},
                   "acquired": [{"id": next(ident), "group": g, "score": 0.0} for g in groups]}
            if r == 0:
                row["seed_set"] = [{"id": 999, "group": "y0_s0"}]
            w.append_round(row, finished=r == len(curve) - 1)
        return load_run(tmp_path / name)

    # 10 acquisitions: 5 from y0_s1 (pool share 5%) -> share 0.5 -> ratio 10
    unc = [make(f"u{s}", "least_confidence", s, [["y0_s1"] * 5, ["y0_s0"] * 5], [0.2, 0.5, 0.6]) for s in (0, 1)]
    rnd = [make(f"r{s}", "random", s, [["y0_s0"] * 5, ["y1_s1"] * 5], [0.2, 0.3, 0.5]) for s in (0, 1)]
    ratios = upsampling_ratios(unc).set_index(["run", "group"])["upsampling"]
    assert ratios[("u0", "y0_s1")] == pytest.approx(10.0) and ratios[("u0", "y1_s0")] == 0.0
    assert ratios[("u0", "y0_s0")] == pytest.approx(0.5 / 0.7)
    over = upsampling_over_rounds(unc).set_index(["round", "group"])["upsampling"]
    assert over[(0, "y0_s1")] == pytest.approx(20.0) and over[(1, "y0_s1")] == pytest.approx(10.0)
    eff = label_efficiency_table(tidy_rounds(unc + rnd), "test/worst_group")
    # random's final 0.5 at 30 labels; least-confidence reaches 0.5 at 20 labels -> 1.5x
    assert eff["efficiency"].iloc[0] == pytest.approx(1.5)
    acq = label_efficiency_table(tidy_rounds(unc + rnd), "test/worst_group", labels_counted="acquired").iloc[0]
    assert acq["efficiency"] == pytest.approx((30 - 10) / (20 - 10)) and acq["labels_counted"] == "acquired labels only"


def test_mismatched_mean_of_groups_and_pooled_differ_when_sizes_differ():
    from toolkit.metrics import group_metrics

    # y0_s1: 1 of 1 right; y1_s0: 0 of 3 right; matched groups all right
    labels = np.array([0, 0, 1, 1, 1, 1])
    spurious = np.array([0, 1, 0, 0, 0, 1])
    preds = np.array([0, 0, 0, 0, 0, 1])
    m = group_metrics(preds, labels, spurious)
    assert m["mismatched"] == pytest.approx(0.5)  # (1 + 0) / 2
    assert m["mismatched_pooled"] == pytest.approx(0.25)  # 1 of 4 images


def test_label_efficiency_conventions_hand_computed():
    from toolkit.metrics import label_efficiency

    n = np.array([40, 60, 80, 100])
    random_curve = np.array([0.5, 0.6, 0.7, 0.8])
    unc_curve = np.array([0.5, 0.8, 0.9, 0.95])
    # random's final 0.8 is reached by uncertainty at 60 labels
    assert label_efficiency(n, random_curve, unc_curve) == pytest.approx(100 / 60)
    assert label_efficiency(n, random_curve, unc_curve, uncounted=40) == pytest.approx(60 / 20)
    # reached with the seed set alone: infinitely efficient when the seed set is not counted
    assert label_efficiency(n, random_curve, np.full(4, 0.9), uncounted=40) == np.inf
    assert label_efficiency(n, random_curve, np.full(4, 0.9)) == pytest.approx(100 / 40)


def test_relative_upsampling_is_the_ratio_of_mean_shares_with_a_positive_bootstrap_ci():
    from toolkit.analysis import relative_upsampling, upsampling_summary

    rows = []
    for strategy, shares in (("least_confidence", [0.4, 0.6]), ("random", [0.1, 0.1, 0.2])):
        for seed, share in enumerate(shares):
            rows.append({"model": "m", "weights": "pretrained", "strategy": strategy, "seed": seed,
                         "group": "y0_s1", "acquired_share": share, "pool_share": 0.05, "upsampling": share / 0.05})
    ratios = pd.DataFrame(rows)
    rel = relative_upsampling(ratios).iloc[0]
    assert rel["relative_upsampling"] == pytest.approx(0.5 / (0.4 / 3))
    assert 0.4 / 0.2 <= rel["low"] <= rel["relative_upsampling"] <= rel["high"] <= 0.6 / 0.1
    summary = upsampling_summary(ratios[ratios["strategy"] == "least_confidence"]).iloc[0]
    assert summary["upsampling"] == pytest.approx(10.0) and 8.0 <= summary["low"] <= summary["high"] <= 12.0


def test_final_summary_leaves_out_partial_runs_and_repeated_seeds():
    from toolkit.analysis.curves import final_summary

    def rows(run, seed, curve):
        return [{"run": run, "model": "m", "weights": "pretrained", "strategy": "random", "seed": seed, "round": r,
                 "n_labels": 40 + 20 * r, "test/acc": v} for r, v in enumerate(curve)]

    tidy = pd.DataFrame(rows("a", 0, [0.5, 0.7, 0.9]) + rows("b", 1, [0.5, 0.6, 0.7])
                        + rows("c", 2, [0.5]) + rows("d", 0, [0.5, 0.7, 0.3]))
    fin = final_summary(tidy, ["test/acc"]).iloc[0]
    assert fin["n_seeds"] == 2 and fin["n_labels"] == 80 and fin["test/acc"] == pytest.approx(0.8)
    assert fin["n_left_out"] == 2
    assert "c: stopped at 40 of 80 labels" in fin["left_out"] and "d: seed 0 already counted" in fin["left_out"]
