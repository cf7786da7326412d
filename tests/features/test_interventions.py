"""Interventions as derived caches: what each transform does to constructed features, their
fingerprints and staleness, and that the probe reads what they write."""
import os

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_DATA

import toolkit
from toolkit.config import ALConfig
from toolkit.errors import CacheError
from toolkit.features.array_cache import AttributeTable, read_outcome, write_cache
from toolkit.features.cache import open_cache
from toolkit.features.interventions import ConceptEraser, concept_separability, erase_features, fit_leace

AL = ALConfig(strategy="least_confidence", seed_size=10, per_round=5, budget=10)


def constructed(path, *, n=2000, dim=12, label_shift=3.0, spurious_shift=3.0, matched=0.5, seed=0, split="train",
                id_offset=0):
    """A cache of Gaussian features whose label and attribute shift the mean along two directions,
    seen through a fixed random linear map (one "backbone" for every split, so the covariance is
    not isotropic); `seed` draws the examples, `matched` is the share with y == s."""
    mixing = np.random.default_rng(99).normal(size=(dim, dim)) / np.sqrt(dim) + np.eye(dim)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.where(rng.random(n) < matched, y, 1 - y)
    Z = rng.normal(size=(n, dim))
    Z[:, 0] += label_shift * (y - 0.5)
    Z[:, 1] += spurious_shift * (s - 0.5)
    fp = {"model": "constructed", "weights": "none", "layer": "penultimate", "dataset": "constructed",
          "dataset_params": {"dim": dim}, "split": split, "transform": "none", "compute": "float32", "seed": seed}
    table = AttributeTable(pd.DataFrame({"y": y, "place": s, "shape": np.where(y, "circle", "star")}), "y", "place",
                           ("a", "b"))
    return write_cache(path, fingerprint=fp, ids=id_offset + np.arange(n), embeddings=Z @ mixing, table=table)


def other_backbone(path, source, scale=2.0):
    """The same examples as `source`, seen by another "backbone" (its features reversed and scaled)."""
    cache = open_cache(source)
    return write_cache(path, fingerprint={**cache.fingerprint, "model": "other"}, ids=cache.ids,
                       embeddings=scale * cache.embeddings[:, ::-1], table=AttributeTable.of(cache))


def separability(path, concept):
    cache = open_cache(path)
    return concept_separability(cache.embeddings, cache.labels, cache.spurious, concept)


@pytest.fixture
def source(tmp_path):
    return constructed(tmp_path / "source.h5")


# ---- erase ---------------------------------------------------------------------------------------

def held_out_accuracy(pool, test, concept):
    """Balanced accuracy on `test` of the measure's probe (standardised logistic regression)
    trained on `pool`, for a concept's classes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def target(cache):
        return {"label": cache.labels, "spurious": cache.spurious, "group": 2 * cache.labels + cache.spurious}[concept]

    p, t = open_cache(pool), open_cache(test)
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000)).fit(p.embeddings, target(p))
    return balanced_accuracy_score(target(t), probe.predict(t.embeddings))


@pytest.mark.parametrize("concept, chance", [("label", 0.5), ("spurious", 0.5), ("group", 0.25)])
def test_full_erasure_leaves_a_probe_at_chance_and_the_other_concept_readable(tmp_path, concept, chance):
    pool = constructed(tmp_path / "pool.h5", n=4000, seed=0)
    test = constructed(tmp_path / "test.h5", n=4000, seed=1, split="test", id_offset=10_000)
    assert held_out_accuracy(pool, test, concept) > chance + 0.3
    erased = {"pool": toolkit.erase(pool, concept=concept, root=tmp_path),
              "test": toolkit.erase(test, concept=concept, fit_on=pool, root=tmp_path)}
    assert abs(held_out_accuracy(erased["pool"], erased["test"], concept) - chance) <= 0.02
    if concept != "group":  # surgical: the other concept stays about as readable as before
        other = "spurious" if concept == "label" else "label"
        assert held_out_accuracy(erased["pool"], erased["test"], other) > held_out_accuracy(pool, test, other) - 0.02


def test_erasure_fitted_on_a_correlated_pool_blinds_a_probe_on_that_distribution(tmp_path):
    """The guarantee holds on the distribution the eraser was fitted on: here a pool in which
    the attribute matches the label 90% of the time, and another sample of it."""
    pool = constructed(tmp_path / "pool.h5", n=4000, matched=0.9)
    val = constructed(tmp_path / "val.h5", n=4000, matched=0.9, seed=1, split="val", id_offset=10_000)
    erased = toolkit.erase(pool, root=tmp_path), toolkit.erase(val, fit_on=pool, root=tmp_path)
    assert held_out_accuracy(pool, val, "label") > 0.9
    assert abs(held_out_accuracy(*erased, "label") - 0.5) <= 0.02


def test_strength_zero_is_the_identity_and_intermediate_strengths_interpolate(source, tmp_path):
    X = open_cache(source).embeddings
    full = open_cache(toolkit.erase(source, strength=1.0, root=tmp_path)).embeddings
    for mode in ("shrink", "noise"):
        assert np.array_equal(open_cache(toolkit.erase(source, strength=0.0, mode=mode, root=tmp_path)).embeddings, X)
    for t in (0.25, 0.5, 0.9):
        partial = open_cache(toolkit.erase(source, strength=t, root=tmp_path)).embeddings
        np.testing.assert_allclose(partial, (1 - t) * X + t * full, atol=1e-5)


def test_shrinking_keeps_the_separability_until_full_erasure_and_noise_lowers_it_steadily(tmp_path):
    """x - t (x - erase(x)) is an invertible linear map for t < 1: a linear probe reads the label
    about as well (only its L2 penalty sees the shrunk direction); replacing a share t of the
    component with noise lowers the separability step by step to chance."""
    pool = constructed(tmp_path / "pool.h5", n=3000, seed=0)
    test = constructed(tmp_path / "test.h5", n=3000, seed=1, split="test", id_offset=10_000)

    def accuracy(t, mode):
        kw = dict(strength=t, mode=mode, root=tmp_path)
        return held_out_accuracy(toolkit.erase(pool, **kw), toolkit.erase(test, fit_on=pool, **kw), "label")

    before = accuracy(0.0, "shrink")
    assert before > 0.9 and abs(accuracy(0.5, "shrink") - before) <= 0.01 and accuracy(1.0, "shrink") == 0.5
    noised = [accuracy(t, "noise") for t in (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)]
    assert all(a > b for a, b in zip(noised, noised[1:])) and abs(noised[-1] - 0.5) <= 0.03


def test_the_eraser_is_fitted_on_the_declared_split(tmp_path):
    pool = constructed(tmp_path / "pool.h5", seed=0)
    test = constructed(tmp_path / "test.h5", seed=1, split="test", id_offset=10_000)
    erased = open_cache(toolkit.erase(test, fit_on=pool, root=tmp_path)).embeddings
    p, t = open_cache(pool), open_cache(test)
    np.testing.assert_allclose(erased, erase_features(t.embeddings, fit_leace(p.embeddings, p.labels, 2), 1.0),
                               atol=1e-5)
    assert abs(separability(toolkit.erase(test, fit_on=pool, root=tmp_path), "label") - 0.5) <= 0.05


@pytest.mark.parametrize("mode", ["shrink", "noise"])
def test_a_reused_eraser_gives_bit_identical_caches_to_a_fresh_fit(tmp_path, monkeypatch, mode):
    """One eraser fitted once on the pool and reused at every strength and for the test split:
    the same features, bit for bit, and the same fingerprint as fitting afresh each time."""
    import toolkit.features.interventions as interventions

    pool = constructed(tmp_path / "pool.h5", n=1500, seed=0)
    test = constructed(tmp_path / "test.h5", n=1000, seed=1, split="test", id_offset=10_000)
    strengths = (0.0, 0.25, 0.5, 1.0)
    fresh = {(t, s): toolkit.erase(c, strength=t, mode=mode, fit_on=pool, root=tmp_path / "fresh")
             for t in strengths for s, c in (("pool", pool), ("test", test))}
    fits = []
    real_fit = interventions.fit_leace
    monkeypatch.setattr(interventions, "fit_leace", lambda *a, **k: fits.append(1) or real_fit(*a, **k))
    eraser = ConceptEraser("label")
    reused = {(t, s): toolkit.erase(c, strength=t, mode=mode, fit_on=pool, eraser=eraser, root=tmp_path / "reused")
              for t in strengths for s, c in (("pool", pool), ("test", test))}
    assert len(fits) == 1 and eraser.fitted and eraser.fit_on_.path == open_cache(pool).path
    for key in fresh:
        a, b = open_cache(fresh[key]), open_cache(reused[key])
        assert a.fingerprint == b.fingerprint and fresh[key].name == reused[key].name
        assert np.array_equal(np.asarray(a.embeddings), np.asarray(b.embeddings)), key
    # a fitted eraser given alone is fitted on its own cache: fit_on defaults to it
    assert toolkit.erase(test, strength=0.5, mode=mode, eraser=eraser, root=tmp_path / "fresh") == fresh[(0.5, "test")]
    assert len(fits) == 1


def test_an_eraser_of_another_concept_or_cache_is_refused(tmp_path):
    pool = constructed(tmp_path / "pool.h5", seed=0)
    other = constructed(tmp_path / "other.h5", seed=2)
    eraser = ConceptEraser("label").fit(pool)
    with pytest.raises(CacheError, match="the eraser erases 'label', and concept='spurious' was asked"):
        toolkit.erase(pool, concept="spurious", eraser=eraser, root=tmp_path)
    with pytest.raises(CacheError, match="the eraser was fitted on .*pool.h5 .* not on fit_on=.*other.h5"):
        toolkit.erase(other, fit_on=other, eraser=eraser, root=tmp_path)
    with pytest.raises(CacheError, match="eraser must be a ConceptEraser"):
        toolkit.erase(pool, eraser="label")
    with pytest.raises(CacheError, match="unknown concept 'colour'"):
        ConceptEraser("colour")


# ---- inject --------------------------------------------------------------------------------------

@pytest.mark.parametrize("concept, target", [("label", 0.7), ("label", 0.9), ("spurious", 0.8), ("group", 0.6)])
def test_injection_reaches_its_target_separability(tmp_path, concept, target):
    weak = constructed(tmp_path / "weak.h5", n=1200, label_shift=0.0, spurious_shift=0.0)
    injected = toolkit.inject(weak, concept=concept, separability=target, root=tmp_path)
    assert abs(separability(injected, concept) - target) <= 0.02
    assert read_outcome(injected)["separability_on_fit_on"] == pytest.approx(separability(injected, concept))
    # calibrated on the pool, applied to another split with its own labels: close to the target there too
    other = constructed(tmp_path / "other.h5", n=1200, label_shift=0.0, spurious_shift=0.0, seed=3, split="test")
    moved = toolkit.inject(other, concept=concept, separability=target, fit_on=weak, root=tmp_path)
    assert abs(separability(moved, concept) - target) <= 0.06


def test_the_test_split_reuses_the_pools_calibration(tmp_path, monkeypatch):
    """Injecting into the test split with calibration= the pool's injection measures nothing and
    gives the features a fresh calibration on the pool gives; the fingerprint names the reuse."""
    import toolkit.features.interventions as interventions

    pool = constructed(tmp_path / "pool.h5", n=1200, label_shift=0.0, spurious_shift=0.0)
    test = constructed(tmp_path / "test.h5", n=800, label_shift=0.0, spurious_shift=0.0, seed=3, split="test",
                       id_offset=10_000)
    kw = dict(separability=0.85, tolerance=0.02)
    injected_pool = toolkit.inject(pool, root=tmp_path, **kw)
    fresh = toolkit.inject(test, fit_on=pool, root=tmp_path / "fresh", **kw)

    def boom(*args, **kwargs):
        raise AssertionError("calibrated again")

    monkeypatch.setattr(interventions, "separability_of", boom)
    reused = toolkit.inject(test, fit_on=pool, calibration=injected_pool, root=tmp_path / "reused", **kw)
    a, b = open_cache(fresh), open_cache(reused)
    assert np.array_equal(np.asarray(a.embeddings), np.asarray(b.embeddings))
    transforms = [c.fingerprint["transform"] for c in (a, b, open_cache(injected_pool))]
    assert transforms[0] == transforms[1] == transforms[2]
    roles = [s["role"] for s in b.fingerprint["sources"]]
    assert roles == ["source", "fit_on", "calibration"] and b.fingerprint["sources"][2]["path"] == str(injected_pool)
    assert read_outcome(reused)["amplitude"] == read_outcome(fresh)["amplitude"] == read_outcome(injected_pool)[
        "amplitude"]
    assert read_outcome(reused)["calibration"] == "reused" and read_outcome(reused)["measured"] == 0
    # the probe reads the pair as one transform
    rec = toolkit.run_probe(injected_pool, {"test": reused}, tmp_path / "run", al=AL, seed=0)
    assert rec.rounds["n_labels"].tolist() == [10, 15, 20]
    with pytest.raises(CacheError, match="not an injection with these parameters .*differs in separability"):
        toolkit.inject(test, fit_on=pool, calibration=injected_pool, root=tmp_path, separability=0.9, tolerance=0.02)
    with pytest.raises(CacheError, match="is not fit_on's own injection"):
        toolkit.inject(pool, fit_on=pool, calibration=reused, root=tmp_path, **kw)


def test_injection_below_the_current_separability_is_refused(source, tmp_path):
    with pytest.raises(CacheError, match="already have separability .* only adds signal"):
        toolkit.inject(source, separability=0.6, root=tmp_path)


# ---- mix and noise -------------------------------------------------------------------------------

def test_mix_concatenates_or_interpolates_the_same_examples(tmp_path):
    a = constructed(tmp_path / "a.h5")
    b = other_backbone(tmp_path / "b.h5", a)
    narrow = constructed(tmp_path / "narrow.h5", dim=5)
    A, B, N = (open_cache(p).embeddings for p in (a, b, narrow))
    np.testing.assert_array_equal(open_cache(toolkit.mix(a, narrow, root=tmp_path)).embeddings, np.hstack([A, N]))
    mixed = open_cache(toolkit.mix(a, b, mode="interpolate", weight=0.25, root=tmp_path)).embeddings
    np.testing.assert_allclose(mixed, 0.75 * A + 0.25 * B, atol=1e-6)


def test_noise_has_the_set_signal_to_noise_ratio_and_independent_draws_per_split(source, tmp_path):
    X = open_cache(source).embeddings
    noisy = open_cache(toolkit.add_noise(source, snr=4.0, root=tmp_path)).embeddings
    assert (noisy - X).var(axis=0).mean() == pytest.approx(X.var(axis=0).mean() / 4.0, rel=0.03)
    other = constructed(tmp_path / "other.h5", seed=0, split="test", id_offset=10_000)  # same features, other split
    noise_other = open_cache(toolkit.add_noise(other, snr=4.0, fit_on=source, root=tmp_path)).embeddings - X
    assert abs(np.corrcoef((noisy - X).ravel(), noise_other.ravel())[0, 1]) < 0.05


# ---- fingerprints, reuse, staleness -------------------------------------------------------------

def test_a_derived_cache_is_named_by_its_source_and_every_parameter(source, tmp_path):
    other = other_backbone(tmp_path / "other.h5", source)
    base = dict(root=tmp_path)
    paths = [toolkit.erase(source, **base), toolkit.erase(other, **base), toolkit.erase(source, strength=0.5, **base),
             toolkit.erase(source, concept="spurious", **base), toolkit.erase(source, fit_on=other, **base),
             toolkit.erase(source, mode="noise", **base), toolkit.erase(source, mode="noise", seed=1, **base),
             toolkit.inject(other, separability=0.97, **base), toolkit.inject(other, separability=0.98, **base),
             toolkit.inject(other, separability=0.97, seed=1, **base),
             toolkit.inject(other, separability=0.97, tolerance=0.02, **base),
             toolkit.add_noise(source, snr=1.0, **base), toolkit.add_noise(source, snr=2.0, **base),
             toolkit.add_noise(source, snr=1.0, seed=1, **base), toolkit.mix(source, other, **base),
             toolkit.mix(source, other, mode="interpolate", **base),
             toolkit.mix(source, other, mode="interpolate", weight=0.3, **base)]
    assert len(set(paths)) == len(paths)
    fps = [open_cache(p).fingerprint for p in paths]
    assert fps[2]["intervention"] == {"name": "erase", "params": {
        "concept": "label", "strength": 0.5, "mode": "shrink", "method": fps[2]["intervention"]["params"]["method"]}}
    assert fps[0]["sources"][0]["fingerprint"] == open_cache(source).fingerprint
    assert "| erase(concept=label, strength=1.0" in fps[0]["transform"]
    before = os.stat(paths[0]).st_mtime_ns
    assert toolkit.erase(source, **base) == paths[0] and os.stat(paths[0]).st_mtime_ns == before  # reused


def test_a_changed_source_makes_its_derived_caches_stale_and_refused(tmp_path):
    source = constructed(tmp_path / "source.h5", seed=0)
    erased = toolkit.erase(source, strength=0.5, root=tmp_path)
    chained = toolkit.add_noise(erased, snr=2.0, root=tmp_path)  # derived from a derived cache
    constructed(tmp_path / "source.h5", seed=7)  # the source file extracted again, with other features
    for derived in (erased, chained):
        with pytest.raises(CacheError, match="stale: it was derived from .*source.h5"):
            open_cache(derived)
    with pytest.raises(CacheError, match="stale"):  # asked into the same file: refused, not overwritten
        toolkit.erase(source, strength=0.5, out=erased)
    fresh = toolkit.erase(source, strength=0.5, root=tmp_path)  # asked by default name: a new cache
    assert fresh != erased and len(open_cache(fresh)) == 2000


def test_out_holding_another_cache_is_refused(source, tmp_path):
    path = toolkit.erase(source, strength=0.5, out=tmp_path / "mine.h5")
    with pytest.raises(CacheError, match="holds a cache computed from another source or with other parameters "
                                         r"\(differs in .*strength"):
        toolkit.erase(source, strength=0.75, out=path)


def test_a_moved_source_leaves_its_derived_cache_readable(source, tmp_path):
    erased = toolkit.erase(source, root=tmp_path)
    source.rename(tmp_path / "moved.h5")
    assert len(open_cache(erased)) == 2000


# ---- read end to end -----------------------------------------------------------------------------

def test_derived_caches_of_an_extracted_pool_and_test_split_are_read_by_the_probe(tmp_path):
    kw = dict(weights="random", dataset_params={**TINY_DATA, "cache_dir": str(tmp_path / "data")}, root=tmp_path,
              log=None)
    pool, test = (toolkit.extract_features("toy_resnet", "toyworld", s, **kw) for s in ("train", "test"))
    erased = {"train": toolkit.erase(pool, strength=0.5), "test": toolkit.erase(test, strength=0.5, fit_on=pool)}
    assert open_cache(erased["test"]).attributes.equals(open_cache(test).attributes)  # strings and all
    rec = toolkit.run_probe(erased["train"], {"test": erased["test"]}, tmp_path / "run", al=AL, seed=0)
    assert rec.rounds["n_labels"].tolist() == [10, 15, 20]
    noisy = {s: toolkit.add_noise(p, snr=1.0, fit_on=erased["train"]) for s, p in erased.items()}
    assert len(toolkit.run_probe(noisy["train"], {"test": noisy["test"]}, tmp_path / "noisy", al=AL).rounds) == 3
    # an eraser fitted on the test split itself is another transform: the probe refuses the pair
    with pytest.raises(CacheError, match="does not belong with the pool.*transform"):
        toolkit.run_probe(erased["train"], {"test": toolkit.erase(test, strength=0.5)}, tmp_path / "x", al=AL)


# ---- errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize("strength", [-0.1, 1.5, True, "half"])
def test_strength_outside_the_unit_interval_is_refused(source, strength):
    with pytest.raises(CacheError, match=r"strength must be a number in \[0, 1\], got"):
        toolkit.erase(source, strength=strength)


def test_unknown_or_missing_concepts_are_refused(source, tmp_path):
    with pytest.raises(CacheError, match="unknown concept 'colour'; valid concepts: label, spurious, group"):
        toolkit.erase(source, concept="colour")
    with pytest.raises(CacheError, match="unknown concept"):
        toolkit.inject(source, concept="colour", separability=0.9)
    cache = open_cache(source)
    no_attribute = write_cache(tmp_path / "plain.h5", fingerprint={"model": "plain"}, ids=cache.ids,
                               embeddings=cache.embeddings,
                               table=AttributeTable(cache.attributes[["y"]], "y", None, ("a", "b")))
    with pytest.raises(CacheError, match="no spurious attribute, so concept 'group' is undefined"):
        toolkit.erase(no_attribute, concept="group")


def test_mismatched_examples_are_refused_by_mix(tmp_path):
    a = constructed(tmp_path / "a.h5", n=100)
    shifted = constructed(tmp_path / "b.h5", n=100, id_offset=1)
    shorter = constructed(tmp_path / "c.h5", n=90)
    relabelled = constructed(tmp_path / "d.h5", n=100, seed=4)
    with pytest.raises(CacheError, match=r"same examples in the same order: .* first difference at row 0 \(id 0 vs 1\)"):
        toolkit.mix(a, shifted)
    with pytest.raises(CacheError, match="has 100 ids, .* has 90"):
        toolkit.mix(a, shorter)
    with pytest.raises(CacheError, match="same ids but different labels"):
        toolkit.mix(a, relabelled)
    with pytest.raises(CacheError, match="unknown mix mode 'stack'; valid modes: concat, interpolate"):
        toolkit.mix(a, a, mode="stack")
    with pytest.raises(CacheError, match="mode='concat' takes none"):
        toolkit.mix(a, a, weight=0.5)
    with pytest.raises(CacheError, match="same backbone layer"):
        toolkit.mix(a, constructed(tmp_path / "e.h5", n=100, dim=4), mode="interpolate")


@pytest.mark.parametrize("call, match", [
    (lambda c: toolkit.erase(c, mode="blur"), "unknown erase mode 'blur'; valid modes: shrink, noise"),
    (lambda c: toolkit.inject(c, separability=1.5), r"separability must be a number in \(0, 1\]"),
    (lambda c: toolkit.inject(c, separability=0.9, tolerance=0), r"tolerance must be a number in \(0, 1\]"),
    (lambda c: toolkit.add_noise(c, snr=0), "snr .* must be a positive finite number, got 0"),
    (lambda c: toolkit.add_noise(c, snr=float("inf")), "positive finite"),
    (lambda c: toolkit.add_noise(c, snr=1.0, seed=-1), "seed must be an integer >= 0, got -1"),
    (lambda c: toolkit.inject(c, separability=0.99, cv=1), "cv must be an integer >= 2, got 1"),
])
def test_other_bad_parameters_are_refused(source, call, match):
    with pytest.raises(CacheError, match=match):
        call(source)
