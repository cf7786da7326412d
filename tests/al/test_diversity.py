"""The strategies beyond uncertainty: constructed cases with known answers, seeds, and
scikit-activeml as an oracle where it implements the same rule deterministically."""
import numpy as np
import pytest

from toolkit.al import acquisition as acq
from toolkit.al import diversity as div

RNG = np.random.default_rng


# ----------------------------------------------------------------- constructed cases

def test_coreset_picks_the_farthest_point_then_the_next_farthest():
    X = np.array([[0.0], [1.0], [5.0], [10.0], [9.0]])
    picks, scores = div.coreset(X, candidates=[1, 2, 3, 4], labelled=[0], k=3, rng=RNG(0))
    # 10 is farthest from 0; then 5 (distance 5 to {0, 10}); then 1 or 9, both at distance 1:
    # the tie goes to the lower position
    assert picks.tolist() == [3, 2, 1]
    np.testing.assert_allclose(scores, [10.0, 5.0, 1.0])


def test_coreset_never_picks_a_labelled_or_non_candidate_row():
    X = RNG(1).normal(size=(60, 4))
    cands = np.arange(0, 60, 2)
    picks, _ = div.coreset(X, cands, labelled=[1, 3], k=10, rng=RNG(0))
    assert set(picks) <= set(cands) and len(set(picks)) == 10


def test_coreset_chunking_gives_the_same_picks():
    X = RNG(2).normal(size=(300, 8))
    a = div.coreset(X, np.arange(10, 300), np.arange(10), 15, RNG(0))
    b = div.coreset(X, np.arange(10, 300), np.arange(10), 15, RNG(0), chunk=7)
    assert a[0].tolist() == b[0].tolist()
    np.testing.assert_allclose(a[1], b[1])


def _greedy_by_hand(X, cands, labelled, k):
    """k-center greedy with full distance recomputation: the definition, for the lazy version."""
    D = np.sqrt(((X[:, None, :] - X[None, labelled, :]) ** 2).sum(-1)).min(1)
    cands, picks = list(cands), []
    for _ in range(k):
        p = max(cands, key=lambda i: (D[i], -i))
        picks.append(p)
        cands.remove(p)
        D = np.minimum(D, np.sqrt(((X - X[p]) ** 2).sum(-1)))
    return picks


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lazy_coreset_equals_the_plain_greedy(seed):
    X = RNG(seed).normal(size=(400, 12))
    labelled = np.arange(0, 400, 37)
    cands = np.setdiff1d(np.arange(400), labelled)
    ours, _ = div.coreset(X, cands, labelled, 25, RNG(0))
    assert ours.tolist() == _greedy_by_hand(X, cands, labelled, 25)


def test_coreset_memo_across_rounds_equals_recomputing():
    # probe mode keeps each run's distances to its labelled set from round to round
    X = RNG(5).normal(size=(300, 8)).astype(np.float32)
    labelled, memo = np.arange(10), {}
    for _ in range(4):
        cands = np.setdiff1d(np.arange(300), labelled)
        kw = dict(candidates=cands, labelled=labelled, rng=RNG(0), n_classes=2, embeddings=X)
        with_memo, _ = acq.select_batch("coreset", 5, memo=memo, **kw)
        without, _ = acq.select_batch("coreset", 5, **kw)
        assert with_memo.tolist() == without.tolist()
        labelled = np.concatenate([labelled, with_memo])


def test_badge_draws_follow_d2_exactly():
    # the second pick's distribution (rejection sampling) against D^2 / sum D^2, over many seeds
    rng = RNG(6)
    X = rng.normal(size=(12, 3))
    probs = acq.softmax(rng.normal(size=(12, 2)))
    cands = np.arange(12)
    first = div.badge(X, probs, cands, 1, RNG(0))[0][0]
    d2 = _badge_d2_after(X, probs, cands, first, origin=False)
    counts = np.bincount([div.badge(X, probs, cands, 2, RNG(s))[0][1] for s in range(4000)], minlength=12)
    expected = 4000 * d2 / d2.sum()
    assert np.abs(counts - expected).max() < 4.5 * np.sqrt(expected.max())  # within ~4.5 sd


def _peaked_cluster(centre, n):
    """The centre row and n more whose spacing grows away from it (+-0.05 i^2 along x): the
    centre has the smallest mean distance to its 2 nearest rows (0.05, 0.05), so it is the most
    typical at knn=2 (at larger knn the spacing makes its neighbour tie with it)."""
    i = np.arange(1, n // 2 + 1)
    offsets = np.concatenate([[0.0], 0.05 * i ** 2, -0.05 * i ** 2])
    return np.asarray(centre) + np.stack([offsets, np.zeros_like(offsets)], 1)


def test_typiclust_picks_the_densest_point_of_the_largest_uncovered_cluster():
    big = _peaked_cluster([0.0, 0.0], 28)        # 29 rows: its centre (row 0) is its most typical row
    small = _peaked_cluster([50.0, 0.0], 10)     # 11 rows, centre row 29
    covered = _peaked_cluster([0.0, 50.0], 40)   # 41 rows, the largest, but it holds a labelled row
    X = np.vstack([big, small, covered])
    labels = np.repeat([0, 1, 2], [29, 11, 41])
    labelled = [70]
    cands = np.setdiff1d(np.arange(len(X)), labelled)
    picks, scores = div.typiclust(X, cands, labelled, 2, RNG(0), cluster_labels=labels, knn=2)
    assert picks.tolist() == [0, 29]  # the big cluster's centre, then the small cluster's centre
    assert scores[0] > 0


def test_typiclust_with_its_own_kmeans_finds_the_blobs():
    rng = RNG(3)
    X = np.vstack([rng.normal(c, 0.3, size=(m, 2)) for c, m in (((0, 0), 50), ((10, 0), 30), ((0, 10), 20))])
    picks, _ = div.typiclust(X, np.arange(100), [], 3, RNG(0), min_cluster_size=1)
    # one pick per blob, largest blob first
    assert [0 if p < 50 else 1 if p < 80 else 2 for p in picks] == [0, 1, 2]


def test_probcover_picks_the_ball_covering_most_uncovered_rows():
    X = np.array([[0.0, 1.0], [0.01, 1.0], [0.02, 1.0], [-0.01, 1.0],  # a clump of 4 (normalised: close)
                  [1.0, 0.0], [1.0, 0.01],                               # a pair
                  [-1.0, 0.0]])                                          # a lone row
    g = div.cover_graph(X, n_clusters=2, radius=0.1)
    assert g.adjacency[0].nnz == 4
    picks, scores = div.probcover(X, np.arange(7), [], 3, graph=g)
    assert picks.tolist() == [0, 4, 6] and scores.tolist() == [4, 2, 1]
    # a labelled row in the clump covers it: the pair wins
    picks, scores = div.probcover(X, [1, 2, 3, 4, 5, 6], [0], 1, graph=g)
    assert picks.tolist() == [4] and scores.tolist() == [2]


def test_probcover_radius_is_the_largest_with_purity_at_least_alpha():
    # two tight clusters 90 degrees apart on the circle: cross-cluster distance sqrt(2) ~ 1.41
    rng = RNG(0)
    a = np.stack([np.cos(rng.normal(0, 0.02, 40)), np.sin(rng.normal(0, 0.02, 40))], 1)
    b = np.stack([np.cos(np.pi / 2 + rng.normal(0, 0.02, 40)), np.sin(np.pi / 2 + rng.normal(0, 0.02, 40))], 1)
    g = div.cover_graph(np.vstack([a, b]), n_clusters=2, seed=0)
    d_other = div.distance_to_other_cluster(np.vstack([a, b]), np.repeat([0, 1], 40))
    expected = max(r for r in div.PROBCOVER_RADII if (d_other > r).mean() >= 0.95)
    assert g.radius == pytest.approx(expected) and 1.2 < g.radius < 1.45
    assert g.purity >= 0.95


def test_badge_first_pick_is_the_largest_gradient_norm():
    X = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    probs = np.array([[0.5, 0.5], [0.9, 0.1], [0.6, 0.4]])
    # ||g||^2 = |p - onehot|^2 |x|^2: 0.5 * 1, 0.02 * 9, 0.32 * 4
    picks, scores = div.badge(X, probs, np.arange(3), 1, RNG(0))
    assert picks.tolist() == [2]
    assert scores[0] == pytest.approx(0.32 * 4)


def test_badge_distances_equal_explicit_gradient_embeddings():
    rng = RNG(4)
    X = rng.normal(size=(40, 5))
    logits = rng.normal(size=(40, 3))
    probs = acq.softmax(logits)
    a = div.gradient_factors(probs)
    G = (a[:, :, None] * X[:, None, :]).reshape(40, -1)
    # the D^2 of the second pick is the squared distance to the first pick's embedding
    picks, scores = div.badge(X, probs, np.arange(40), 2, RNG(0))
    first = int(np.argmax((G ** 2).sum(1)))
    assert picks[0] == first
    assert scores[1] == pytest.approx(((G[picks[1]] - G[first]) ** 2).sum(), rel=1e-6)


def test_bald_hand_computed():
    disagree = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])  # two samples, one row: MI = log 2
    agree = np.array([[[0.5, 0.5]], [[0.5, 0.5]]])     # uncertain but agreeing: MI = 0
    np.testing.assert_allclose(acq.bald(disagree), [np.log(2)])
    np.testing.assert_allclose(acq.bald(agree), [0.0], atol=1e-12)


# ----------------------------------------------------------------- seeds and the registry

BATCH = ["coreset", "typiclust", "probcover", "badge", "bald"]


def _inputs(seed=0, n=200):
    rng = RNG(seed)
    X = np.vstack([rng.normal(c, 1.0, size=(n // 4, 6)) for c in (0, 3, 6, 9)])
    labelled = np.arange(0, n, 25)
    cands = np.setdiff1d(np.arange(n), labelled)
    logits = rng.normal(size=(len(cands), 2))
    samples = rng.normal(size=(5, len(cands), 2))
    return dict(candidates=cands, labelled=labelled, n_classes=2, logits=logits, embeddings=X,
                logit_samples=samples)


@pytest.mark.parametrize("name", BATCH)
def test_same_seed_same_picks(name):
    a = acq.select_batch(name, 10, rng=RNG(7), **_inputs())
    b = acq.select_batch(name, 10, rng=RNG(7), **_inputs())
    assert a[0].tolist() == b[0].tolist()
    assert len(set(a[0])) == 10 and set(a[0]) <= set(_inputs()["candidates"])


@pytest.mark.parametrize("name", ["badge", "typiclust"])
def test_seeded_strategies_differ_across_seeds(name):
    # BADGE's draws and TypiClust's k-means depend on the Generator
    picks = {tuple(acq.select_batch(name, 10, rng=RNG(s), **_inputs())[0]) for s in range(4)}
    assert len(picks) > 1


def test_missing_input_is_named():
    with pytest.raises(ValueError, match="embeddings"):
        acq.select_batch("coreset", 3, candidates=np.arange(5), labelled=[], rng=RNG(0), n_classes=2)


def test_score_strategies_through_select_batch_match_select():
    inp = _inputs()
    picks, scores = acq.select_batch("least_confidence", 7, rng=RNG(0), **inp)
    order = acq.select(acq.score_logits("least_confidence", inp["logits"]), 7)
    assert picks.tolist() == inp["candidates"][order].tolist()


def test_probcover_memo_reuses_the_graph():
    memo = {}
    inp = _inputs()
    a = acq.select_batch("probcover", 5, rng=RNG(0), memo=memo, **{k: v for k, v in inp.items()})
    assert ("probcover", 2) in memo
    b = acq.select_batch("probcover", 5, rng=RNG(0), memo=memo, **inp)
    assert a[0].tolist() == b[0].tolist()


def test_strategies_never_hold_an_n_by_n_matrix():
    # 3,000 rows: an n x n float64 matrix would be 72 MB; tracemalloc sees far less
    import tracemalloc

    rng = RNG(0)
    X = rng.normal(size=(3000, 16)).astype(np.float32)
    probs = acq.softmax(rng.normal(size=(2990, 2)))
    tracemalloc.start()
    div.coreset(X, np.arange(10, 3000), np.arange(10), 10, RNG(0), chunk=256)
    div.badge(X, probs, np.arange(10, 3000), 10, RNG(0), chunk=256)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 3000 * 3000 * 8 / 10


# ----------------------------------------------------------------- scikit-activeml as the oracle

skal = pytest.importorskip("skactiveml")


def _y_with_missing(n, labelled, labels):
    y = np.full(n, np.nan)
    y[labelled] = labels[labelled]
    return y


def test_coreset_matches_scikit_activeml():
    from skactiveml.pool import CoreSet

    rng = RNG(10)
    X = rng.normal(size=(150, 5))
    labelled = np.array([3, 40, 77])
    y = _y_with_missing(150, labelled, rng.integers(0, 2, 150).astype(float))
    theirs = CoreSet(random_state=0).query(X, y, batch_size=8)
    ours, _ = div.coreset(X, np.setdiff1d(np.arange(150), labelled), labelled, 8, RNG(0))
    assert ours.tolist() == list(theirs)


def test_typiclust_matches_scikit_activeml():
    from skactiveml.pool import TypiClust

    rng = RNG(11)
    X = np.vstack([rng.normal(c, 0.5, size=(40, 3)) for c in (0, 4, 8)])
    labelled = np.array([5, 50])
    y = _y_with_missing(120, labelled, np.repeat([0.0, 1.0, 0.0], 40))
    theirs = TypiClust(k=10, random_state=3).query(X, y, batch_size=4)
    # scikit-activeml clusters with KMeans(n_clusters=|L| + k, random_state) and keeps every
    # cluster; ours seeds the same k-means through cluster_labels and drops none (min_cluster_size=1)
    from sklearn.cluster import KMeans

    labels = KMeans(n_clusters=6, random_state=3).fit_predict(X)
    ours, _ = div.typiclust(X, np.setdiff1d(np.arange(120), labelled), labelled, 4, RNG(0), knn=10,
                            min_cluster_size=1, cluster_labels=labels)
    assert ours.tolist() == list(theirs)


def test_probcover_radius_and_picks_match_scikit_activeml():
    from skactiveml.pool import ProbCover

    rng = RNG(12)
    X = div.normalise_rows(np.vstack([rng.normal(c, 0.6, size=(60, 4)) for c in ((2, 0, 0, 0), (0, 2, 0, 0))]))
    labelled = np.array([0, 70])
    y = _y_with_missing(120, labelled, np.repeat([0.0, 1.0], 60))
    radii = np.round(np.arange(0.05, 1.5, 0.05), 2)
    pc = ProbCover(n_classes=2, deltas=radii, random_state=5, cluster_algo_dict={"n_init": 1})
    theirs, util = pc.query(X, y, batch_size=5, return_utilities=True)
    g = div.cover_graph(X, n_clusters=2, seed=5, radii=radii)
    assert g.radius == pytest.approx(pc.delta_max_)
    ours, scores = div.probcover(X, np.setdiff1d(np.arange(120), labelled), labelled, 5, graph=g)
    # the out-degrees agree at every step; picks agree wherever the top degree is unique
    # (scikit-activeml breaks ties at random, we take the lower position)
    np.testing.assert_allclose(scores, np.nanmax(util, axis=1))
    for b in range(5):
        if np.sum(util[b] == np.nanmax(util[b])) == 1:
            assert ours[b] == theirs[b]
        else:
            break


def test_badge_matches_scikit_activeml_first_pick_and_distances():
    from skactiveml.classifier import SklearnClassifier
    from skactiveml.pool import Badge
    from sklearn.linear_model import LogisticRegression

    rng = RNG(13)
    X = rng.normal(size=(100, 4))
    labels = (X[:, 0] + 0.5 * rng.normal(size=100) > 0).astype(float)
    labelled = np.arange(10)
    y = _y_with_missing(100, labelled, labels)
    clf = SklearnClassifier(LogisticRegression(), classes=[0, 1], random_state=0).fit(X, y)
    theirs, util = Badge(random_state=0).query(X, y, clf=clf, fit_clf=False, batch_size=2, return_utilities=True)
    cands = np.arange(10, 100)
    probs = clf.predict_proba(X[cands])
    ours, scores = div.badge(X, probs, cands, 2, RNG(0), origin_centre=True)
    assert ours[0] == theirs[0]
    # their second-step utilities are the k-means++ probabilities D^2 / sum D^2 after the shared
    # first pick; ours give the same D^2 (checked against explicit gradient embeddings)
    d2 = _badge_d2_after(X, probs, cands, int(ours[0]))
    np.testing.assert_allclose(d2 / d2.sum(), np.nan_to_num(util[1][cands]), atol=1e-9)
    assert scores[1] == pytest.approx(d2[cands.tolist().index(int(ours[1]))])
    # (the second picks differ: they draw with a RandomState, we with a numpy Generator)


def _badge_d2_after(X, probs, cands, first, origin=True):
    a = div.gradient_factors(probs)
    G = (a[:, :, None] * X[cands][:, None, :]).reshape(len(cands), -1)
    f = cands.tolist().index(first)
    d2 = ((G - G[f]) ** 2).sum(1)
    if origin:
        d2 = np.minimum(d2, (G ** 2).sum(1))
    d2[f] = 0
    return d2


def test_bald_matches_scikit_activeml():
    from skactiveml.pool._bald import batch_bald

    p = acq.softmax(RNG(14).normal(size=(6, 50, 3)))
    theirs = batch_bald(p, batch_size=1)[0]
    np.testing.assert_allclose(acq.bald(p), theirs, atol=1e-5)


# ----------------------------------------------------------------- through both loops

ALL = ["least_confidence", "random", "badge", "coreset", "typiclust", "probcover", "bald"]


@pytest.fixture(scope="module")
def small_caches(tmp_path_factory):
    import toolkit

    root = tmp_path_factory.mktemp("feat")
    small = {"n_train": 300, "n_val": 40, "n_test": 120}
    return [toolkit.extract_features("toy_resnet", "toyworld", s, weights="random", dataset_params=small,
                                     root=root, log=None) for s in ("train", "test")]


@pytest.mark.parametrize("name", ALL)
def test_every_strategy_runs_in_probe_mode_and_is_reproducible(name, small_caches, tmp_path):
    from toolkit.config import ALConfig
    from toolkit.features.probe import ProbeRun, run_probes

    pool, test = small_caches
    al = ALConfig(strategy=name, seed_size=10, per_round=5, budget=10)
    a, b = run_probes(pool, {"test": test}, [ProbeRun(tmp_path / "a", al, 0), ProbeRun(tmp_path / "b", al, 0)])
    acquired = a.acquisitions["id"].tolist()
    assert a.status == "finished" and a.rounds["n_labels"].tolist() == [10, 15, 20]
    assert len(acquired) == 10 and len(set(acquired)) == 10 and not set(acquired) & set(a.seed_set["id"])
    assert acquired == b.acquisitions["id"].tolist()


@pytest.mark.parametrize("name", ["badge", "bald", "coreset"])
def test_batch_strategies_run_in_the_full_loop(name, tmp_path):
    import toolkit

    cfg = toolkit.resolve_config("toy", ["al.budget=5", "al.seed_size=10", "data.params.n_train=200",
                                         "data.params.n_val=40", "data.params.n_test=80", "model.weights=random",
                                         "finetune.max_steps=2", "finetune.micro_batch=16", f"al.strategy={name}",
                                         "al.save_pool_outputs=true"])
    rec = toolkit.run_active_learning(cfg, tmp_path / name, log=None)
    acq_rows = rec.acquisitions
    assert rec.status == "finished" and len(acq_rows) == 5 and np.isfinite(acq_rows["score"]).all()


def test_mc_dropout_samples_are_seeded_and_unbiased_on_average():
    from toolkit.al.loop import mc_dropout_logits

    z = RNG(0).normal(size=(30, 8)).astype(np.float32)
    w, b = RNG(1).normal(size=(2, 8)).astype(np.float32), np.zeros(2, np.float32)
    a = mc_dropout_logits(z, w, b, RNG(5), samples=2000)
    np.testing.assert_array_equal(a[:3], mc_dropout_logits(z, w, b, RNG(5), samples=3))
    # inverted dropout keeps the expected logit: the sample mean approaches z @ w.T
    np.testing.assert_allclose(a.mean(0), z @ w.T, atol=0.25)


@pytest.mark.parametrize("name", ["coreset", "badge", "probcover", "typiclust"])
def test_streamed_pool_gives_the_same_picks(name, small_caches, tmp_path):
    # pools larger than memory: batch strategies read standardised rows from the file
    from toolkit.config import ALConfig
    from toolkit.features.probe import run_probe

    pool, test = small_caches
    al = ALConfig(strategy=name, seed_size=10, per_round=5, budget=10)
    a = run_probe(pool, {"test": test}, tmp_path / "mem", al=al, seed=1)
    b = run_probe(pool, {"test": test}, tmp_path / "stream", al=al, seed=1, stream=True)
    assert a.acquisitions["id"].tolist() == b.acquisitions["id"].tolist()
