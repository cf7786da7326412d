"""The probe's Newton solver (issue #32): the same objective as scikit-learn's LogisticRegression,
binary and multi-class, by either linear solver, warm or cold, and a Gram matrix whose bits do
not depend on how it was built up."""
import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from toolkit.features import solver
from toolkit.features.probe import LinearProbe


def _data(n, d, k, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    X = rng.normal(size=(n, d)) + 1.2 * np.eye(k, d)[y]  # classes overlap: a finite optimum
    return X.astype(np.float32), y


def _probs(probe, X):
    return torch.softmax(probe.decision_function(torch.from_numpy(X)), 1).numpy()


@pytest.mark.parametrize("n,d,C", [(60, 10, 0.5), (40, 300, 1.0), (200, 30, 0.05)])
def test_binary_matches_sklearn_with_2C(n, d, C):
    """Two classes: the softmax probe with C is sklearn's binary model with 2C (LinearProbe's docstring)."""
    X, y = _data(n, d, 2)
    ours = LinearProbe(C=C, tol=1e-10).fit(torch.from_numpy(X), torch.from_numpy(y), 2)
    ref = LogisticRegression(C=2 * C, tol=1e-12, max_iter=10_000).fit(X.astype(np.float64), y)
    np.testing.assert_allclose(_probs(ours, X), ref.predict_proba(X), atol=1e-5)
    w = ours.coef_.numpy()
    np.testing.assert_allclose(w[:, 1] - w[:, 0], ref.coef_[0], atol=1e-4 * np.abs(ref.coef_).max())


@pytest.mark.parametrize("n,d,k", [(60, 10, 3), (300, 40, 10), (50, 200, 10)])
def test_multiclass_matches_sklearn(n, d, k):
    """K classes (CIFAR-10's ten included), fewer rows than features too: sklearn's multinomial model."""
    X, y = _data(n, d, k, seed=k)
    ours = LinearProbe(C=0.5, tol=1e-10).fit(torch.from_numpy(X), torch.from_numpy(y), k)
    ref = LogisticRegression(C=0.5, tol=1e-12, max_iter=10_000).fit(X.astype(np.float64), y)
    np.testing.assert_allclose(_probs(ours, X), ref.predict_proba(X), atol=1e-5)
    assert np.abs(ours.coef_.numpy().sum(1)).max() < 1e-5  # the optimum's columns sum to zero


def test_a_class_missing_from_the_labels_still_fits():
    X, y = _data(40, 8, 2)
    probe = LinearProbe().fit(torch.from_numpy(X), torch.from_numpy(y * 2), 3)  # labels 0 and 2 of 3
    assert _probs(probe, X)[:, 1].max() < 0.5 and np.isfinite(probe.coef_.numpy()).all()


@pytest.mark.parametrize("k", [2, 4])
def test_conjugate_gradients_give_the_direct_solution(monkeypatch, k):
    """Large Newton systems are solved by conjugate gradients: the same optimum."""
    X, y = _data(80, 20, k)
    Q = torch.from_numpy(X).double() @ torch.from_numpy(X).double().T
    direct = solver.fit_dual(Q, torch.from_numpy(y), k, 1.0, tol=1e-10)
    monkeypatch.setattr(solver, "DIRECT_MAX", 0)
    cg = solver.fit_dual(Q, torch.from_numpy(y), k, 1.0, tol=1e-10)
    Xd = torch.from_numpy(X).double()
    for a, b in zip(solver.primal(Xd, *direct[:2], k), solver.primal(Xd, *cg[:2], k)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-7)


def test_a_warm_start_reaches_the_same_optimum_in_fewer_steps():
    X, y = _data(120, 50, 2)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    first = LinearProbe(tol=1e-8).fit(Xt[:100], yt[:100], 2)
    cold = LinearProbe(tol=1e-8).fit(Xt, yt, 2)
    Q = Xt.double() @ Xt.double().T
    A, beta, steps = solver.fit_dual(Q, yt, 2, 1.0, A0=first.dual_, beta0=first.beta_, tol=1e-8)  # rows appended
    W, _ = solver.primal(Xt.double(), A, beta, 2)
    np.testing.assert_allclose(W.numpy(), cold.coef_.numpy(), atol=1e-5)
    assert steps < cold.n_iter_
    warm = LinearProbe(tol=1e-8).fit(Xt, yt, 2, warm_start=first)  # a primal warm start
    np.testing.assert_allclose(warm.coef_.numpy(), cold.coef_.numpy(), atol=1e-5)


def test_duplicated_rows_are_weights():
    """A bootstrap resample repeats rows (a singular Gram matrix): the optimum of the repeated data."""
    X, y = _data(30, 60, 2)
    idx = np.random.default_rng(1).integers(0, 30, 30)
    ours = LinearProbe(tol=1e-10).fit(torch.from_numpy(X[idx]), torch.from_numpy(y[idx]), 2)
    ref = LogisticRegression(C=2.0, tol=1e-12, max_iter=10_000).fit(X[idx].astype(np.float64), y[idx])
    np.testing.assert_allclose(_probs(ours, X), ref.predict_proba(X), atol=1e-5)


def test_a_gram_built_by_blocks_is_bitwise_the_same_when_rebuilt_with_the_same_blocks():
    X = torch.from_numpy(_data(90, 257, 2)[0]).double()
    blocks = [10, 15, 20, 47, 90]
    a, b = solver.Gram(90), solver.Gram(90)
    for n in blocks:
        Qa = a.extend(X[:n])
    for n in blocks:  # a resume: the same blocks again, from fresh copies of the rows
        Qb = b.extend(X[:n].clone())
    assert torch.equal(Qa, Qb)
    np.testing.assert_allclose(Qa.numpy(), (X @ X.T).numpy(), rtol=1e-12, atol=1e-10)
    assert torch.equal(Qa, Qa.T)
    grown = solver.Gram(4)  # past its capacity: grows, same values
    for n in blocks:
        Qg = grown.extend(X[:n])
    assert torch.equal(Qg, Qa)


def test_helmert_basis_is_orthonormal_and_sums_to_zero():
    for k in (2, 3, 10):
        P = solver.helmert(k)
        np.testing.assert_allclose((P @ P.T).numpy(), np.eye(k - 1), atol=1e-12)
        np.testing.assert_allclose(P.sum(1).numpy(), 0, atol=1e-12)
    with pytest.raises(ValueError, match="at least 2 classes"):
        solver.helmert(1)
