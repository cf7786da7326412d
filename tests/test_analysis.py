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
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.model_selection import cross_val_score

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


def test_static_export_or_clear_error(tmp_path):
    import shutil

    import plotly.graph_objects as go

    from toolkit.figures import save_static

    fig = go.Figure(go.Scatter(x=[0, 1], y=[1, 0]))
    if shutil.which("chromium") or shutil.which("google-chrome") or shutil.which("chrome"):
        out = save_static(fig, tmp_path / "f.png")
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        with pytest.raises(RuntimeError, match="apt install chromium"):
            save_static(fig, tmp_path / "f.png")


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
