"""Synthetic representations: their separabilities, compositions and determinism, and that every
reader takes them as it takes an extracted cache."""
import numpy as np
import pytest
from scipy.stats import norm

import toolkit
from toolkit.config import ALConfig
from toolkit.data.toyworld import group_counts
from toolkit.errors import CacheError
from toolkit.features.cache import open_cache
from toolkit.features.interventions import concept_separability
from toolkit.features.synthetic import SyntheticParams, synthetic_split


@pytest.mark.parametrize("label, attribute", [(0.75, 0.95), (0.9, 0.6), (0.5, 0.8)])
def test_bayes_accuracies_are_the_ones_asked_for(label, attribute):
    """On the balanced test split, the Bayes rule along each direction (the sign of the
    projection: the classes are symmetric about 0) is right as often as asked, within
    3.5 standard errors of a binomial proportion."""
    params = SyntheticParams(n_test=20_000, dim=16, label_separability=label, attribute_separability=attribute,
                             noise=2.5, seed=3)
    X, table = synthetic_split(params, "test")
    u_core, u_spurious = params.directions().T
    for asked, direction, column in ((label, u_core, "y"), (attribute, u_spurious, "place")):
        bayes = np.mean((X @ direction > 0) == table[column].to_numpy())
        assert abs(bayes - asked) <= 3.5 * np.sqrt(asked * (1 - asked) / len(X))


def test_a_linear_probe_reaches_about_the_bayes_accuracy(tmp_path):
    """What the dose study measures (a cross-validated probe, balanced over groups) on the test split."""
    caches = toolkit.synthetic_caches(n_test=4000, dim=16, label_separability=0.8, attribute_separability=0.9,
                                      root=tmp_path)
    test = open_cache(caches["test"])
    for concept, asked in (("label", 0.8), ("spurious", 0.9)):
        measured = concept_separability(test.embeddings, test.labels, test.spurious, concept)
        assert asked - 0.03 <= measured <= asked + 0.015


def test_group_counts_are_exact(tmp_path):
    caches = toolkit.synthetic_caches(n_train=1000, n_test=200, dim=4, matched_fraction=0.9, minority_fraction=0.3,
                                      root=tmp_path)
    pool, test = open_cache(caches["train"]), open_cache(caches["test"])
    for cache, expected in ((pool, group_counts(1000, 0.3, 0.9)), (test, group_counts(200, 0.5, 0.5))):
        counts = cache.attributes.groupby(["y", "place"]).size().to_dict()
        assert counts == {g: c for g, c in expected.items() if c}
    assert counts == {(0, 0): 50, (0, 1): 50, (1, 0): 50, (1, 1): 50}
    assert pool.attributes.groupby(["y", "place"]).size()[(1, 0)] == 300 - 270


def test_deterministic_per_seed_with_splits_sharing_one_geometry(tmp_path):
    kw = dict(n_train=2000, n_test=400, dim=8, label_separability=0.95, attribute_separability=0.95)
    a = toolkit.synthetic_caches(seed=0, root=tmp_path / "a", **kw)
    b = toolkit.synthetic_caches(seed=0, root=tmp_path / "b", **kw)
    c = toolkit.synthetic_caches(seed=1, root=tmp_path / "a", **kw)
    for split in ("train", "test"):
        assert np.array_equal(open_cache(a[split]).embeddings, open_cache(b[split]).embeddings)
        assert not np.allclose(open_cache(a[split]).embeddings, open_cache(c[split]).embeddings)
    assert toolkit.synthetic_caches(seed=0, root=tmp_path / "a", **kw) == a  # asked again: the same files

    def label_direction(cache):  # balanced over the attribute: the pool's label and attribute are correlated
        means = {g: cache.embeddings[(cache.labels == g[0]) & (cache.spurious == g[1])].mean(0)
                 for g in ((0, 0), (0, 1), (1, 0), (1, 1))}
        d = means[1, 0] + means[1, 1] - means[0, 0] - means[0, 1]
        return d / np.linalg.norm(d)

    pool, test = open_cache(a["train"]), open_cache(a["test"])
    assert label_direction(pool) @ label_direction(test) > 0.9  # one representation, two samples of it
    assert not set(pool.ids) & set(test.ids)
    assert pool.fingerprint["dataset_params"] == test.fingerprint["dataset_params"]


def test_synthetic_caches_are_read_by_the_probe_and_the_interventions(tmp_path):
    caches = toolkit.synthetic_caches(n_train=120, n_test=40, dim=6, root=tmp_path)
    al = ALConfig(strategy="least_confidence", seed_size=10, per_round=5, budget=10)
    rec = toolkit.run_probe(caches["train"], {"test": caches["test"]}, tmp_path / "run", al=al, seed=0)
    assert rec.rounds["n_labels"].tolist() == [10, 15, 20] and "test/worst_group" in rec.rounds
    erased = {s: toolkit.erase(p, strength=1.0, fit_on=caches["train"], root=tmp_path) for s, p in caches.items()}
    assert len(toolkit.run_probe(erased["train"], {"test": erased["test"]}, tmp_path / "erased", al=al).rounds) == 3


@pytest.mark.parametrize("bad, match", [
    ({"n_test": 10}, "n_test must be a multiple of 4"),
    ({"label_separability": 1.0}, r"label_separability \(a Bayes accuracy\) must be a number in \[0.5, 1\)"),
    ({"attribute_separability": 0.4}, r"attribute_separability .* in \[0.5, 1\), got 0.4"),
    ({"noise": 0}, r"noise \(a standard deviation\) must be a number > 0"),
    ({"dim": 1}, "dim must be an integer >= 2, got 1"),
    ({"matched_fraction": 1.2}, r"matched_fraction must be a number in \[0, 1\]"),
])
def test_bad_parameters_are_refused(tmp_path, bad, match):
    with pytest.raises(CacheError, match=match):
        toolkit.synthetic_caches(root=tmp_path, **bad)


def test_the_shift_follows_the_normal_quantile():
    delta_y, delta_a = SyntheticParams(label_separability=0.8, attribute_separability=0.5, noise=2.0).shifts()
    assert delta_y == pytest.approx(2 * 2.0 * norm.ppf(0.8)) and delta_a == 0.0
