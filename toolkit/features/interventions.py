"""Interventions on a representation, as derived feature caches.

Each transform reads a feature cache and writes a new one, of the same examples and
attribute table, that every probe run, measure, analysis and report reads like an
extracted cache:

- `erase`: linear concept erasure (LEACE, from EleutherAI's `concept-erasure`) at a strength t
  (shrinking the concept's component, or replacing a share of it with noise);
- `inject`: a concept's signal added along seeded random directions, calibrated to a target separability;
- `mix`: two backbones' features of the same examples, concatenated or interpolated;
- `add_noise`: isotropic Gaussian noise at a signal-to-noise ratio.

Each is a pure function of its source cache, its parameters and its seed. The derived
cache's fingerprint keeps the source's (model, dataset, split, ...), appends the transform
to its "transform" entry, and lists its sources (path, content id, fingerprint) with the
transform's name and every parameter; its default file name is a digest of all of it, so
asking again returns the same cache, and a changed source gives a new one. `open_cache`
refuses a derived cache whose source has changed since (`features.provenance`).

What the transforms fit (the eraser, the injected amplitude, the noise's scale) is fitted on
a declared cache, `fit_on` (default: the source itself). To change the pool and its test
split the same way, derive both with `fit_on=` the pool: the probe refuses an evaluation
cache transformed differently from its pool (their "transform" entries differ). To fit once
and derive many caches, pass one `ConceptEraser` to every `erase` of a sweep, and the pool's
injection as `calibration=` to its test split's `inject`: the same caches, without fitting again.

These are the experimenter's interventions on the representation, made with the labels of
`fit_on`; the active learner sees none of those labels (it still starts from its seed set).
"""
from __future__ import annotations

import json
import math
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable

import numpy as np

from toolkit._util.version import __version__
from toolkit.analysis.separability import GroupSeparability
from toolkit.errors import CacheError
from toolkit.features.array_cache import AttributeTable, cache_file, reuse_or_write
from toolkit.features.cache import FeatureCache, open_cache
from toolkit.features.provenance import content_id, source_entry

CONCEPTS = ("label", "spurious", "group")
ERASE_MODES = ("shrink", "noise")
MIX_MODES = ("concat", "interpolate")


# ---- the pure array functions ------------------------------------------------------------------

def fit_leace(X: np.ndarray, codes: np.ndarray, n_classes: int):
    """Fit a LEACE eraser of a concept from features.

    Args:
        X: (N, D) features.
        codes: (N,) the concept's class index per row, in [0, n_classes).
        n_classes: the concept's number of classes (its one-hot width).

    Returns:
        A `concept_erasure.LeaceEraser` (float64, on the CPU).

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> y = rng.integers(0, 2, 500)
        >>> X = rng.normal(size=(500, 3)) + np.outer(y, [2.0, 0, 0])
        >>> erased = erase_features(X, fit_leace(X, y, 2), 1.0)
        >>> bool(abs(erased[y == 1, 0].mean() - erased[y == 0, 0].mean()) < 1e-8)
        True
    """
    import torch

    LeaceFitter = _leace_fitter()
    x = torch.as_tensor(np.asarray(X, dtype=np.float64))
    z = torch.nn.functional.one_hot(torch.as_tensor(np.asarray(codes, dtype=np.int64)), n_classes).double()
    # constrain_cov_trace=False: the trace constraint mixes in an orthogonal projection that leaves part
    # of the concept readable; exact LEACE is what makes every linear probe blind to it. svd_tol: the
    # default (0.01) keeps weak concepts whose whitened cross-covariance is below it; float64 allows less.
    fitter = LeaceFitter(x.shape[1], n_classes, dtype=torch.float64, constrain_cov_trace=False, svd_tol=1e-8)
    # one torch thread: the eigendecomposition then gives the same bits whatever the machine's core count,
    # and threaded `torch.linalg.eigh` is 20-100x slower on a busy 2-core machine (0.1 s vs 3-10 s at D = 512)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fitter.update(x, z).eraser
    finally:
        torch.set_num_threads(threads)


def erase_features(X: np.ndarray, eraser, strength: float) -> np.ndarray:
    """`X - strength * (X - eraser(X))`: no erasure at 0, LEACE's at 1, the straight line between.

    Args:
        X: (N, D) features.
        eraser: a fitted `LeaceEraser` (`fit_leace`).
        strength: t in [0, 1].

    Returns:
        (N, D) float32.

    Examples:
        >>> X = np.random.default_rng(0).normal(size=(50, 4))
        >>> y = (X[:, 0] > 0).astype(int)
        >>> np.array_equal(erase_features(X, fit_leace(X, y, 2), 0.0), X.astype(np.float32))
        True
    """
    import torch

    x = torch.as_tensor(np.asarray(X, dtype=np.float64))
    return (x - strength * (x - eraser(x))).numpy().astype(np.float32)


def noise_erase_features(X: np.ndarray, eraser, strength: float, rng: np.random.Generator, *,
                         fit: np.ndarray) -> np.ndarray:
    """Erase by replacing a share of the concept's component with noise of its covariance:
    `erase(X) + ((1 - t) c + sqrt(1 - (1 - t)^2) xi) L^T`, with `c` the component LEACE removes
    and `xi` Gaussian with the covariance of `c` on `fit`.

    Args:
        X: (N, D) features.
        eraser: a fitted `LeaceEraser` (`fit_leace`).
        strength: t in [0, 1]; 0 returns X.
        rng: draws the noise.
        fit: (M, D) the features the eraser was fitted on (the noise's covariance).

    Returns:
        (N, D) float32.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> y = rng.integers(0, 2, 2000)
        >>> X = rng.normal(size=(2000, 3)) + np.outer(y, [3.0, 0, 0])
        >>> out = noise_erase_features(X, fit_leace(X, y, 2), 1.0, rng, fit=X)
        >>> bool(abs(out[y == 1, 0].mean() - out[y == 0, 0].mean()) < 0.15), round(float(out[:, 0].std()), 1)
        (True, 1.8)
    """
    import torch

    if strength == 0:
        return np.asarray(X, dtype=np.float32)
    left, right = eraser.proj_left.numpy(), eraser.proj_right.numpy()
    bias = eraser.bias.numpy() if eraser.bias is not None else 0.0
    X = np.asarray(X, dtype=np.float64)
    component = (X - bias) @ right.T  # (N, k): what LEACE removes, in its whitened coordinates
    values, vectors = np.linalg.eigh(np.atleast_2d(np.cov((np.asarray(fit, dtype=np.float64) - bias) @ right.T,
                                                          rowvar=False)))
    noise = rng.standard_normal(component.shape) @ (vectors * np.sqrt(values.clip(0))) @ vectors.T
    keep = 1 - strength
    blended = keep * component + math.sqrt(1 - keep ** 2) * noise
    erased = eraser(torch.as_tensor(X)).numpy()
    return (erased + blended @ left.T).astype(np.float32)


def random_directions(dim: int, k: int, seed: int | list[int]) -> np.ndarray:
    """`k` orthonormal directions in `dim` dimensions, uniformly random and fixed by `seed`.

    Args:
        dim: the feature dimension (>= k).
        k: how many directions.
        seed: their seed (an int, or a list of ints as `numpy.random.default_rng` takes).

    Returns:
        (dim, k) with orthonormal columns.

    Examples:
        >>> Q = random_directions(8, 2, seed=0)
        >>> np.allclose(Q.T @ Q, np.eye(2)), np.array_equal(Q, random_directions(8, 2, seed=0))
        (True, True)
    """
    if dim < k:
        raise CacheError(f"cannot place {k} orthogonal directions in {dim} dimensions")
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, k)))
    return q * np.sign(np.diag(r))  # QR's signs are arbitrary; these make Q Haar-distributed


def inject_features(X: np.ndarray, codes: np.ndarray, directions: np.ndarray, amplitude: float) -> np.ndarray:
    """Shift each row along its class's direction: class c moves by `amplitude / sqrt(2) * directions[:, c]`,
    so any two classes' means move `amplitude` apart.

    Args:
        X: (N, D) features.
        codes: (N,) class index per row.
        directions: (D, K) orthonormal columns, one per class (`random_directions`).
        amplitude: the distance added between two classes' means.

    Returns:
        (N, D) float32.

    Examples:
        >>> X, codes = np.zeros((2, 3)), np.array([0, 1])
        >>> out = inject_features(X, codes, random_directions(3, 2, seed=0), 2.0)
        >>> float(np.linalg.norm(out[1] - out[0])).__round__(5)
        2.0
    """
    shift = (amplitude / math.sqrt(2)) * directions[:, np.asarray(codes)].T
    return (np.asarray(X, dtype=np.float64) + shift).astype(np.float32)


def calibrate(measure: Callable[[float], float], target: float, *, scale: float, tolerance: float,
              max_steps: int = 40) -> tuple[float, float]:
    """The amplitude at which a measure that grows with it reaches `target`: doubling from
    `scale` until it is passed, then bisection until within `tolerance`.

    Args:
        measure: amplitude -> separability (non-decreasing, up to noise).
        target: the separability wanted.
        scale: the first amplitude tried past 0 (e.g. the features' standard deviation).
        tolerance: how close is close enough.
        max_steps: the most bisection steps.

    Returns:
        (amplitude, the measure there).

    Raises:
        CacheError: the measure starts above the target, or cannot be brought within tolerance.

    Examples:
        >>> a, reached = calibrate(lambda a: min(1.0, 0.5 + a / 10), 0.8, scale=1.0, tolerance=1e-3)
        >>> round(a, 2), round(reached, 3)
        (3.0, 0.8)
    """
    lo, at_lo = 0.0, measure(0.0)
    if at_lo > target + tolerance:
        raise CacheError(f"the features already have separability {at_lo:.3f} > the target {target:.3f}; injection "
                         f"only adds signal. Erase the concept first (erase(..., strength=...)) to lower it.")
    if at_lo >= target - tolerance:
        return lo, at_lo
    hi, at_hi = scale, measure(scale)
    for _ in range(40):  # 2^40 times the scale: any reachable target is passed long before
        if at_hi >= target - tolerance:
            break
        lo, at_lo, hi = hi, at_hi, hi * 2
        at_hi = measure(hi)
    else:
        raise CacheError(f"the separability stays at {at_hi:.4f} < the target {target:.3f} however strong the "
                         f"injected signal; ask for a lower target")
    best = (hi, at_hi)
    for _ in range(max_steps):
        if abs(best[1] - target) <= tolerance:
            return best
        mid = (lo + hi) / 2
        at_mid = measure(mid)
        lo, hi = (mid, hi) if at_mid < target else (lo, mid)
        best = min(best, (mid, at_mid), key=lambda p: abs(p[1] - target))
    raise CacheError(f"could not bring the separability within {tolerance} of {target:.3f} (closest: {best[1]:.4f} "
                     f"at amplitude {best[0]:.4g}): with few examples in the smallest group the measure moves in "
                     f"steps larger than the tolerance. Fit on a larger cache (fit_on=...) or pass a larger tolerance.")


def concept_separability(X: np.ndarray, labels: np.ndarray, spurious: np.ndarray | None, concept: str, *, cv: int = 5,
                 random_state: int = 0) -> float:
    """A concept's linear separability, as the dose study measures it: the balanced accuracy (mean over
    the label x attribute groups) of a cross-validated logistic probe (`analysis.GroupSeparability`).

    Args:
        X: (N, D) features.
        labels: (N,) labels.
        spurious: (N,) the attribute (None: none; groups are then the labels).
        concept: "label", "spurious" or "group".
        cv: folds, lowered to the smallest group's size (at least 2).
        random_state: the folds' shuffle.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> y, s = np.repeat([0, 1], 100), np.tile([0, 1], 100)
        >>> X = rng.normal(size=(200, 2)) + np.outer(y, [6.0, 0])
        >>> concept_separability(X, y, s, "label")
        1.0
    """
    _check_concept(concept)
    spurious = (np.zeros(len(labels), dtype=np.int64) if spurious is None
                else np.unique(spurious, return_inverse=True)[1])
    smallest = int(np.unique(np.asarray(labels) * (spurious.max() + 1) + spurious, return_counts=True)[1].min())
    if smallest < 2:
        raise CacheError(f"a label x attribute group has {smallest} example: a cross-validated separability needs "
                         f"at least 2 in each; fit on a larger cache (fit_on=...)")
    sep = GroupSeparability(cv=min(cv, smallest), random_state=random_state, targets=(concept,))
    return float(sep.fit(X, labels, spurious).scores_["balanced_accuracy"].iloc[0])


# ---- a fitted eraser, reusable across strengths and splits ---------------------------------------

class ConceptEraser:
    """A concept's LEACE eraser, fitted once on one cache and reused by `erase` at every strength
    and for every split (`erase(..., eraser=...)`), instead of being fitted again each time.

    The fit is a pure function of the cache's content and the concept, so a cache erased with a
    reused eraser is bit-identical to one erased with a fresh fit, and has the same fingerprint
    (which records `fit_on` and the concept either way). `erase` refuses an eraser fitted on a
    cache whose content is not `fit_on`'s, or of another concept.

    Args:
        concept: "label", "spurious" or "group".

    Attributes:
        fit_on_: the cache it was fitted on (`FeatureCache`).
        content_: that cache's content id when it was fitted (`provenance.content_id`).
        leace_: the fitted `concept_erasure.LeaceEraser` (`fit_leace`).
        features_: (M, D) float64, the features it was fitted on (mode "noise" draws its noise
            with the covariance of the erased component there).

    Examples:
        >>> import toolkit
        >>> small = {"n_train": 240, "n_val": 40, "n_test": 160}
        >>> pool, test = (toolkit.extract_features("toy_resnet", "toyworld", s, weights="random", log=None,
        ...                                        dataset_params=small) for s in ("train", "test"))
        >>> eraser = ConceptEraser("label").fit(pool)
        >>> paths = [toolkit.erase(c, strength=t, mode="noise", fit_on=pool, eraser=eraser)
        ...          for t in (0.5, 1.0) for c in (pool, test)]
        >>> paths[0] == toolkit.erase(pool, strength=0.5, mode="noise")  # the same cache as a fresh fit's
        True
    """

    def __init__(self, concept: str = "label") -> None:
        _check_concept(concept)
        self.concept = concept

    def fit(self, cache: FeatureCache | str | Path) -> "ConceptEraser":
        """Fit the eraser on `cache`'s features with its concept's values.

        Args:
            cache: the cache (or its path), read from disk.

        Returns:
            self.
        """
        fitted = _open(cache)
        _check_concept(self.concept, fitted)
        vocab, (codes,) = _codes([fitted], self.concept)
        X = _features(fitted)
        self.leace_ = fit_leace(X, codes, len(vocab))
        self.features_, self.fit_on_, self.content_ = X, fitted, content_id(fitted.path)
        return self

    @property
    def fitted(self) -> bool:
        """Whether `fit` has run."""
        return hasattr(self, "leace_")

    def __repr__(self) -> str:
        at = f", fitted on {self.fit_on_.path}" if self.fitted else ""
        return f"ConceptEraser(concept={self.concept!r}{at})"


# ---- the derived caches -------------------------------------------------------------------------

def erase(cache: FeatureCache | str | Path, *, concept: str = "label", strength: float = 1.0, mode: str = "shrink",
          seed: int = 0, fit_on: FeatureCache | str | Path | None = None, eraser: ConceptEraser | None = None,
          out: str | Path | None = None, root: str | Path | None = None) -> Path:
    """Erase a concept linearly from a cache's features (LEACE), at a strength t in [0, 1].

    LEACE (Belrose et al. 2023, EleutherAI's `concept-erasure`), fitted on `fit_on` with its
    labels, is the smallest change after which no linear classifier reads the concept better
    than a constant on `fit_on`'s distribution. It removes the concept's component
    `c` (whitened coordinates along the directions that carry it). The strength t blends:

    - mode "shrink", `x - t * (x - erase(x))`: the component scaled by 1 - t. For t < 1 this is
      an invertible linear map, and linear separability is invariant under those: a probe
      reads the concept about as well as before (only its L2 penalty tells the difference,
      e.g. 0.935 -> 0.934 at t = 0.5, 0.91 at t = 0.9, chance at t = 1, in 12 dimensions).
    - mode "noise": `(1 - t) * c + sqrt(1 - (1 - t)^2) * noise`, Gaussian noise (seeded) with
      the covariance of `c` on `fit_on`: the component keeps its variance and loses its signal,
      so the separability falls steadily from its value at t = 0 to chance at t = 1.

    t = 0 is the identity in both modes. Erasure is exact on `fit_on`'s distribution: on a
    split whose groups have other proportions (a balanced test split against a mostly matched
    pool), a probe trained there reads part of an erased label again through the attribute it
    was correlated with. Measure what is left on a held-out split erased with the same eraser:
    a cross-validated probe on the very cache the eraser was fitted on reads below chance
    (about 0.47 for 2,000 examples in 12 dimensions), since the class means of all folds
    together were made equal, so a held-out fold's differ opposite to the training folds'.

    This is the experimenter's intervention, made with `fit_on`'s labels; the active learner
    never sees them.

    Args:
        cache: the source cache (or its path).
        concept: "label", "spurious" (the attribute) or "group" (label x attribute).
        strength: t in [0, 1].
        mode: "shrink" or "noise" (see above).
        seed: the noise's seed in mode "noise" (each source draws its own stream of it).
        fit_on: the cache the eraser is fitted on, with its labels (default: the cache a fitted
            `eraser` was fitted on, else the source). Pass the pool when erasing its test split,
            so both get the same eraser.
        eraser: a `ConceptEraser` of `concept` to reuse instead of fitting one here: fitted on
            `fit_on`, or not fitted yet (it is then fitted on `fit_on` the first time a cache has
            to be computed, and reused by the next calls given it). Sweeping strengths or splits
            with one eraser fits LEACE once; the caches and their fingerprints are the same as
            without it.
        out: the derived cache's file (default: named by its fingerprint under `root`).
        root: the folder for default names (default: the cache root's features/).

    Returns:
        The derived cache's path (an existing one of the same fingerprint is reused).

    Raises:
        CacheError: a strength outside [0, 1], an unknown concept or mode, a concept the cache
            lacks, caches of different widths, `out` holding another cache, or an `eraser` of
            another concept or fitted on another cache than `fit_on`.

    Examples:
        >>> import toolkit
        >>> small = {"n_train": 240, "n_val": 40, "n_test": 160}
        >>> pool, test = (toolkit.extract_features("toy_resnet", "toyworld", s, weights="random", log=None,
        ...                                        dataset_params=small) for s in ("train", "test"))
        >>> erased_pool = toolkit.erase(pool, concept="label", strength=0.5, mode="noise")
        >>> erased_test = toolkit.erase(test, concept="label", strength=0.5, mode="noise", fit_on=pool)
        >>> toolkit.open_cache(erased_test).fingerprint["intervention"]["params"]["strength"]
        0.5
    """
    if eraser is not None and not isinstance(eraser, ConceptEraser):
        raise CacheError(f"eraser must be a ConceptEraser (features.interventions), got {type(eraser).__name__}")
    if fit_on is None and eraser is not None and eraser.fitted:
        fit_on = eraser.fit_on_
    source, fitted = _open(cache), _open(fit_on if fit_on is not None else cache)
    _check_fraction("strength", strength)
    if mode not in ERASE_MODES:
        raise CacheError(f"unknown erase mode {mode!r}; valid modes: {', '.join(ERASE_MODES)}")
    _check_integer("seed", seed, low=0)
    for c in (source, fitted):
        _check_concept(concept, c)
    _check_width(source, fitted)
    if eraser is not None:
        _check_eraser(eraser, concept, fitted)
    params = {"concept": concept, "strength": float(strength), "mode": mode, **({"seed": int(seed)} if mode == "noise"
                                                                                  else {}),
              "method": f"LEACE (concept-erasure {_leace_version()}, exact: no trace constraint)"}

    def compute() -> dict:
        fit = eraser if eraser is not None else ConceptEraser(concept)
        if not fit.fitted:
            fit.fit(fitted)
        if mode == "shrink":
            return {"embeddings": erase_features(_features(source), fit.leace_, float(strength))}
        rng = np.random.default_rng([int(seed), int(content_id(source.path), 16)])  # a stream per source
        return {"embeddings": noise_erase_features(_features(source), fit.leace_, float(strength), rng,
                                                   fit=fit.features_)}

    return _derive(source, "erase", params, fitted, compute, out=out, root=root)


def inject(cache: FeatureCache | str | Path, *, separability: float, concept: str = "label", seed: int = 0,
           fit_on: FeatureCache | str | Path | None = None, tolerance: float = 0.01, cv: int = 5,
           calibration: FeatureCache | str | Path | None = None, out: str | Path | None = None,
           root: str | Path | None = None) -> Path:
    """Add a concept's signal along seeded random directions, calibrated to a target separability.

    Each class of the concept moves along its own random direction (orthonormal, fixed by
    `seed`), by an amplitude found by bisection on `fit_on` so that the concept's separability
    there (`concept_separability`: the dose study's measure, a cross-validated logistic probe's
    accuracy averaged over the label x attribute groups) is within `tolerance` of the target.
    The same amplitude and directions are then applied to the source with its own labels.
    E.g. inject the label into random-init features up to a pretrained checkpoint's
    separability. The amplitude and the separability reached are stored with the cache
    (`features.array_cache.read_outcome`).

    This is the experimenter's intervention, made with the labels of `fit_on` and of the
    source; the active learner never sees them.

    Args:
        cache: the source cache (or its path).
        separability: the target, in (0, 1]; at least the features' separability before.
        concept: "label", "spurious" or "group".
        seed: the directions' seed.
        fit_on: the cache the amplitude is calibrated on (default: the source). Pass the
            pool when injecting into its test split.
        tolerance: how close to the target the calibration must get.
        cv: the measure's folds (lowered to the smallest group's size).
        calibration: `fit_on`'s own injection with the same concept, separability, seed,
            tolerance and cv (e.g. the pool's, when injecting into its test split with
            `fit_on` the pool): its amplitude is reused instead of calibrating again. The
            calibration is a function of those alone, so the features are the same as a fresh
            calibration's; the fingerprint lists that cache among the sources (role
            "calibration"), and the stored outcome says "calibration": "reused", "measured": 0.
        out: the derived cache's file (default: named by its fingerprint under `root`).
        root: the folder for default names.

    Returns:
        The derived cache's path.

    Raises:
        CacheError: a target outside (0, 1] or below the features' separability, an unknown
            concept, a target the calibration cannot reach within `tolerance`, a `calibration`
            that is not `fit_on`'s own injection with these parameters.

    Examples:
        >>> import toolkit
        >>> small = {"n_train": 240, "n_val": 40, "n_test": 160}
        >>> test = toolkit.extract_features("toy_resnet", "toyworld", "test", weights="random", log=None,
        ...                                 dataset_params=small)
        >>> from toolkit.features.array_cache import read_outcome
        >>> path = toolkit.inject(test, separability=0.95, tolerance=0.02)
        >>> abs(read_outcome(path)["separability_on_fit_on"] - 0.95) <= 0.02
        True
    """
    source, fitted = _open(cache), _open(fit_on if fit_on is not None else cache)
    target = _check_fraction("separability", separability, low_open=True)
    _check_fraction("tolerance", tolerance, low_open=True)
    _check_integer("cv", cv, low=2)
    _check_integer("seed", seed, low=0)
    for c in (source, fitted):
        _check_concept(concept, c)
    _check_width(source, fitted)
    params = {"concept": concept, "separability": target, "seed": int(seed), "tolerance": float(tolerance),
              "cv": int(cv), "measure": "GroupSeparability balanced accuracy (C=0.1, folds shuffled with 0)"}
    vocab, (fit_codes, codes) = _codes([fitted, source], concept)
    if calibration is not None:
        calibrated = _open(calibration)
        reused = _reused_calibration(calibrated, params, fitted, vocab)
        directions = random_directions(source.embeddings.shape[1], len(vocab), int(seed))
        extra = [source_entry(calibrated.path, calibrated.fingerprint, "calibration")]
        return _derive(source, "inject", params, fitted, lambda: {
            "embeddings": inject_features(_features(source), codes, directions, reused["amplitude"]),
            "outcome": {**reused, "measured": 0, "calibration": "reused"}}, out=out, root=root, extra=extra)

    def compute() -> dict:
        X_fit = _features(fitted)
        directions = random_directions(X_fit.shape[1], len(vocab), int(seed))
        scale = float(np.sqrt(X_fit.var(axis=0).mean())) or 1.0

        measured: dict[float, float] = {}

        def measure(a: float) -> float:
            if a not in measured:
                measured[a] = separability_of(inject_features(X_fit, fit_codes, directions, a), fitted, concept, cv)
            return measured[a]

        amplitude, reached = calibrate(measure, target, scale=scale, tolerance=float(tolerance))
        return {"embeddings": inject_features(_features(source), codes, directions, amplitude),
                "outcome": {"amplitude": amplitude, "feature_std": scale, "separability_on_fit_on": reached,
                            "separability_before": measure(0.0), "measured": len(measured)}}

    return _derive(source, "inject", params, fitted, compute, out=out, root=root)


def mix(a: FeatureCache | str | Path, b: FeatureCache | str | Path, *, mode: str = "concat",
        weight: float | None = None, out: str | Path | None = None, root: str | Path | None = None) -> Path:
    """Combine two backbones' features of the same examples.

    "concat" puts them side by side (D_a + D_b columns); "interpolate" takes
    `(1 - weight) * a + weight * b` (equal widths), on the raw features: the probe
    standardises each column, which makes concatenation scale-free but not interpolation,
    so interpolate caches of comparable scale.

    Args:
        a: one cache (or its path).
        b: the other, with the same ids in the same order and the same labels and attribute.
        mode: "concat" or "interpolate".
        weight: b's share in [0, 1] for "interpolate" (default 0.5); not used by "concat".
        out: the derived cache's file (default: named by its fingerprint under `root`).
        root: the folder for default names.

    Returns:
        The derived cache's path.

    Raises:
        CacheError: different ids, order, labels or attribute; an unknown mode; a weight
            outside [0, 1] or given with "concat"; different widths for "interpolate".

    Examples:
        >>> import toolkit
        >>> small = {"n_train": 240, "n_val": 40, "n_test": 160}
        >>> a, b = (toolkit.extract_features("toy_resnet", "toyworld", "test", weights="random", seed=s,
        ...                                  log=None, dataset_params=small) for s in (0, 1))
        >>> toolkit.open_cache(toolkit.mix(a, b)).embeddings.shape
        (160, 512)
    """
    first, second = _open(a), _open(b)
    if mode not in MIX_MODES:
        raise CacheError(f"unknown mix mode {mode!r}; valid modes: {', '.join(MIX_MODES)}")
    if mode == "concat" and weight is not None:
        raise CacheError("weight is the share of b in mode='interpolate'; mode='concat' takes none")
    _check_same_examples(first, second)
    params = {"mode": mode}
    if mode == "interpolate":
        _check_width(first, second)
        params["weight"] = _check_fraction("weight", 0.5 if weight is None else weight)

    def compute() -> dict:
        A, B = _features(first), _features(second)
        combined = np.hstack([A, B]) if mode == "concat" else (1 - params["weight"]) * A + params["weight"] * B
        return {"embeddings": combined.astype(np.float32)}

    sources = [source_entry(first.path, first.fingerprint, "a"), source_entry(second.path, second.fingerprint, "b")]
    fp = derived_fingerprint(_merged(first.fingerprint, second.fingerprint), "mix", params, sources)
    path = Path(out) if out is not None else cache_file(fp, "mix", root)
    return reuse_or_write(path, fp, lambda: {"ids": first.ids, "table": AttributeTable.of(first), **compute()})


def add_noise(cache: FeatureCache | str | Path, *, snr: float, seed: int = 0,
              fit_on: FeatureCache | str | Path | None = None, out: str | Path | None = None,
              root: str | Path | None = None) -> Path:
    """Add isotropic Gaussian noise at a signal-to-noise ratio.

    The noise's variance in every dimension is the features' mean per-dimension variance on
    `fit_on`, divided by `snr` (a ratio of variances, not decibels). The draws follow from
    `seed` and the source's content, so a pool and its test split get independent noise.

    Args:
        cache: the source cache (or its path).
        snr: signal variance / noise variance, > 0.
        seed: the noise's seed.
        fit_on: the cache whose variance sets the noise's scale (default: the source). Pass
            the pool when adding noise to its test split, so both get the same scale.
        out: the derived cache's file (default: named by its fingerprint under `root`).
        root: the folder for default names.

    Returns:
        The derived cache's path.

    Raises:
        CacheError: `snr` not a positive finite number.

    Examples:
        >>> import toolkit
        >>> small = {"n_train": 240, "n_val": 40, "n_test": 160}
        >>> test = toolkit.extract_features("toy_resnet", "toyworld", "test", weights="random", log=None,
        ...                                 dataset_params=small)
        >>> noisy = toolkit.open_cache(toolkit.add_noise(test, snr=1.0))
        >>> noisy.fingerprint["intervention"]
        {'name': 'noise', 'params': {'seed': 0, 'snr': 1.0}}
    """
    source, fitted = _open(cache), _open(fit_on if fit_on is not None else cache)
    if isinstance(snr, bool) or not isinstance(snr, (int, float)) or not 0 < snr < math.inf:
        raise CacheError(f"snr (signal variance / noise variance) must be a positive finite number, got {snr!r}")
    _check_width(source, fitted)
    _check_integer("seed", seed, low=0)
    params = {"snr": float(snr), "seed": int(seed)}

    def compute() -> dict:
        std = float(np.sqrt(_features(fitted).var(axis=0).mean() / snr))
        X = _features(source)
        # the source's content seeds its own stream: a pool and its test split draw independent noise
        rng = np.random.default_rng([int(seed), int(content_id(source.path), 16)])
        return {"embeddings": (X + std * rng.standard_normal(X.shape)).astype(np.float32),
                "outcome": {"noise_std": std}}

    return _derive(source, "noise", params, fitted, compute, out=out, root=root)


def derived_fingerprint(base: dict, name: str, params: dict, sources: list[dict]) -> dict:
    """A derived cache's fingerprint: the source's, with the transform appended to its
    "transform" entry (which a pool and its evaluation splits must share) and the transform's
    name, parameters and sources recorded.

    Args:
        base: the source's fingerprint.
        name: the transform ("erase", "inject", "mix", "noise").
        params: every parameter.
        sources: `provenance.source_entry` of each source; a "fit_on" one is named in the transform.

    Examples:
        >>> fp = derived_fingerprint({"model": "m", "transform": "t"}, "noise", {"snr": 1.0}, [])
        >>> fp["transform"], fp["intervention"]
        ('t | noise(snr=1.0)', {'name': 'noise', 'params': {'snr': 1.0}})
    """
    fitted = [s["content"] for s in sources if s["role"] == "fit_on"]
    step = f"{name}({', '.join([f'{k}={v}' for k, v in params.items()] + [f'fit_on={c}' for c in fitted])})"
    kept = {k: v for k, v in base.items() if k not in ("intervention", "sources")}
    return {**kept, "transform": f"{kept.get('transform')} | {step}", "intervention": {"name": name, "params": params},
            "sources": sources, "toolkit_version": __version__}


def separability_of(X: np.ndarray, cache: FeatureCache, concept: str, cv: int = 5) -> float:
    """`concept_separability` of features `X` with the labels and attribute of `cache`.

    Args:
        X: (N, D) features of `cache`'s examples.
        cache: where the labels and the attribute come from.
        concept: "label", "spurious" or "group".
        cv: folds.

    Examples:
        >>> import toolkit
        >>> test = toolkit.open_cache(toolkit.extract_features("toy_resnet", "toyworld", "test", weights="random",
        ...     log=None, dataset_params={"n_train": 240, "n_val": 40, "n_test": 160}))
        >>> 0.0 <= separability_of(test.embeddings, test, "label") <= 1.0
        True
    """
    return concept_separability(X, cache.labels, cache.spurious, concept, cv=cv)


# ---- helpers -------------------------------------------------------------------------------------

def _derive(source: FeatureCache, name: str, params: dict, fitted: FeatureCache, compute, *, out, root,
            extra: list[dict] = ()) -> Path:
    sources = [source_entry(source.path, source.fingerprint, "source"),
               source_entry(fitted.path, fitted.fingerprint, "fit_on"), *extra]
    fp = derived_fingerprint(source.fingerprint, name, params, sources)
    path = Path(out) if out is not None else cache_file(fp, name, root)
    return reuse_or_write(path, fp, lambda: {"ids": source.ids, "table": AttributeTable.of(source), **compute()})


def _check_eraser(eraser: ConceptEraser, concept: str, fitted: FeatureCache) -> None:
    if eraser.concept != concept:
        raise CacheError(f"the eraser erases {eraser.concept!r}, and concept={concept!r} was asked: pass "
                         f"ConceptEraser({concept!r}), or concept={eraser.concept!r}")
    if eraser.fitted and eraser.content_ != content_id(fitted.path):
        raise CacheError(f"the eraser was fitted on {eraser.fit_on_.path} (content {eraser.content_}), not on fit_on="
                         f"{fitted.path} (content {content_id(fitted.path)}): the derived cache would record an "
                         f"eraser it was not made with. Pass fit_on={eraser.fit_on_.path}, or a new ConceptEraser")


def _reused_calibration(calibrated: FeatureCache, params: dict, fitted: FeatureCache, vocab: np.ndarray) -> dict:
    """The outcome of an injection's calibration to reuse, once it is checked to be the one
    `params` on `fitted` would find (same parameters, same fit_on content, same classes)."""
    from toolkit.features.array_cache import read_outcome

    fp = calibrated.fingerprint
    made = fp.get("intervention") or {}
    if made.get("name") != "inject" or made.get("params") != json.loads(json.dumps(params)):
        differ = sorted(k for k in set(params) | set(made.get("params") or {})
                        if (made.get("params") or {}).get(k) != params.get(k))
        raise CacheError(f"calibration={calibrated.path} is not an injection with these parameters "
                         f"({'not an injection' if made.get('name') != 'inject' else 'differs in ' + ', '.join(differ)}"
                         f"): its amplitude is not the one they call for. Pass the cache inject made with them, or "
                         f"leave calibration out to calibrate here")
    made_of = {s["role"]: s["content"] for s in fp.get("sources") or ()}
    if made_of.get("fit_on") != content_id(fitted.path) or made_of.get("source") != made_of.get("fit_on"):
        raise CacheError(f"calibration={calibrated.path} is not fit_on's own injection (it injected into "
                         f"{made_of.get('source')}, calibrated on {made_of.get('fit_on')}; fit_on={fitted.path} is "
                         f"{content_id(fitted.path)}): pass inject(fit_on, ...) with these parameters, or leave "
                         f"calibration out")
    fit_vocab = _codes([fitted], params["concept"])[0]
    if not np.array_equal(fit_vocab, vocab):
        raise CacheError(f"{sorted(set(vocab) - set(fit_vocab))} of concept {params['concept']!r} are in the source "
                         f"but not in fit_on={fitted.path}: the injected directions differ from the calibration's; "
                         f"leave calibration out to calibrate here")
    outcome = read_outcome(calibrated.path)
    return {k: outcome[k] for k in ("amplitude", "feature_std", "separability_on_fit_on", "separability_before")}


def _open(cache: FeatureCache | str | Path) -> FeatureCache:
    opened = cache if isinstance(cache, FeatureCache) else open_cache(cache)
    if not Path(opened.path).is_file():
        raise CacheError(f"a derived cache records its source's file, and {opened.path} is not one: pass a cache "
                         f"opened from disk (open_cache) or its path")
    return opened


def _features(cache: FeatureCache) -> np.ndarray:
    return np.asarray(cache.embeddings, dtype=np.float64)


def _check_concept(concept: str, cache: FeatureCache | None = None) -> None:
    if concept not in CONCEPTS:
        raise CacheError(f"unknown concept {concept!r}; valid concepts: {', '.join(CONCEPTS)}")
    if cache is not None and concept != "label" and cache.spurious is None:
        raise CacheError(f"{cache.path} has no spurious attribute, so concept {concept!r} is undefined there; "
                         f"use concept='label'")


def _check_fraction(name: str, value, *, low_open: bool = False) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and (0 < value <= 1 if low_open
                                                                              else 0 <= value <= 1)
    if not ok:
        raise CacheError(f"{name} must be a number in {'(0, 1]' if low_open else '[0, 1]'}, got {value!r}")
    return float(value)


def _check_integer(name: str, value, *, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise CacheError(f"{name} must be an integer >= {low}, got {value!r}")


def _leace_fitter():
    """concept-erasure's `LeaceFitter`, imported without the deprecation warning it triggers
    (it decorates a helper with `torch.jit.script` at import; recent torch warns): not ours to fix,
    and the warning would print the environment's folder in every notebook that erases."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
        from concept_erasure import LeaceFitter
    return LeaceFitter


def _leace_version() -> str:
    try:
        return version("concept-erasure")
    except PackageNotFoundError:  # an environment made before the dependency was added
        raise ModuleNotFoundError("erase needs the concept-erasure package (LEACE): pip install concept-erasure "
                                  "(./run installs it with the toolkit)") from None


def _check_width(a: FeatureCache, b: FeatureCache) -> None:
    if a.embeddings.shape[1] != b.embeddings.shape[1]:
        raise CacheError(f"{a.path} has {a.embeddings.shape[1]} features per example and {b.path} has "
                         f"{b.embeddings.shape[1]}: the transform needs caches of the same backbone layer")


def _codes(caches: list[FeatureCache], concept: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """The concept's values over all `caches` (sorted), and each cache's index into them: one
    class numbering across caches, so a class keeps its direction or column in each."""
    values = [_concept_values(c, concept) for c in caches]
    vocab = np.unique(np.concatenate(values))
    return vocab, [np.searchsorted(vocab, v) for v in values]


def _concept_values(cache: FeatureCache, concept: str) -> np.ndarray:
    if concept == "label":
        return cache.labels.astype(str)
    if concept == "spurious":
        return np.asarray(cache.spurious).astype(str)
    return np.char.add(np.char.add(cache.labels.astype(str), "|"), np.asarray(cache.spurious).astype(str))


def _check_same_examples(a: FeatureCache, b: FeatureCache) -> None:
    if len(a.ids) != len(b.ids) or not np.array_equal(a.ids, b.ids):
        n = min(len(a.ids), len(b.ids))
        first = next((i for i in range(n) if a.ids[i] != b.ids[i]), n)
        at = f"first difference at row {first}" + (f" (id {a.ids[first]} vs {b.ids[first]})" if first < n else "")
        raise CacheError(f"mix needs the same examples in the same order: {a.path} has {len(a.ids)} ids, {b.path} "
                         f"has {len(b.ids)}, {at}. Extract both from the same dataset split.")
    for what, x, y in (("labels", a.labels, b.labels), ("spurious attribute", a.spurious, b.spurious)):
        if (x is None) != (y is None) or (x is not None and not np.array_equal(np.asarray(x), np.asarray(y))):
            raise CacheError(f"mix: {a.path} and {b.path} have the same ids but different {what}: they are not "
                             f"the same examples of the same task")


def _merged(a, b):
    """Two sources' fingerprints as one: what they share, and "a + b" where they differ (key by
    key inside dicts, so a pool's and its test split's mixes still compare as the probe does)."""
    if a == b:
        return a
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: _merged(a.get(k), b.get(k)) for k in sorted(set(a) | set(b))}
    return f"{a} + {b}" if isinstance(a, str) and isinstance(b, str) else [a, b]
