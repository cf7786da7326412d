"""The probe's solver: multinomial logistic regression by Newton's method in the dual, in torch.

Objective (sklearn's, unchanged from the scipy L-BFGS it replaces):
    C * sum_i CE(W^T x_i + b, y_i) + ||W||^2 / 2,  bias unpenalised, K classes.
At the optimum W lies in the span of the rows and its columns sum to zero (stationarity:
W = -C X^T G with the rows of G summing to zero), so the solver writes
    W = X^T A P,  b = beta P
with A (n x K-1), beta (K-1) and P the (K-1) x K Helmert basis (orthonormal rows, orthogonal to
the ones vector). Everything then depends on X only through its Gram matrix Q = X X^T, and a
Newton step costs one (n (K-1))-square Cholesky factorisation (conjugate gradients on that
system past `DIRECT_MAX`): a millisecond or so for hundreds of labelled rows and two classes,
whatever the feature dimension. For two classes K-1 = 1: this is sklearn's
binary model with 2C, the equivalence `LinearProbe` documents.

Each problem keeps its own Newton system and stops on its own tolerance; nothing is shared
between runs, so a run's numbers are the ones it gets alone. Its Gram matrix grows block by
block as rows are labelled (`Gram`), and a resumed run rebuilds it with the same blocks, so
its bits are those of a run that was never interrupted.
"""
from __future__ import annotations

import functools
import math

import torch

# Newton systems up to this size are factorised directly; larger ones use conjugate gradients
DIRECT_MAX = 2048
_F64 = torch.float64


@functools.lru_cache(maxsize=None)
def helmert(k: int) -> torch.Tensor:
    """(k-1, k): orthonormal rows orthogonal to the ones vector (W = V P keeps sum_k W_k = 0).
    Cached: callers must not modify it."""
    if k < 2:
        raise ValueError(f"a probe needs at least 2 classes, got {k}")
    P = torch.zeros(k - 1, k, dtype=_F64)
    for j in range(1, k):
        P[j - 1, :j] = 1.0
        P[j - 1, j] = -float(j)
        P[j - 1] /= math.sqrt(j * (j + 1))
    return P


class Gram:
    """The Gram matrix of a run's labelled rows (float64), grown by blocks of appended rows.

    `extend(X)` takes all labelled rows so far (the new ones last) and computes only the new
    rows' block. A block's bits depend only on its rows and the rows before it, so rebuilding
    a run's Gram with the same blocks (a resume) gives the same matrix."""

    def __init__(self, capacity: int) -> None:
        self.Q = torch.zeros(0, 0)
        self.capacity, self.n = capacity, 0

    def extend(self, X: torch.Tensor) -> torch.Tensor:
        """Add rows X[self.n:] (X: all labelled rows); returns the n x n Gram (float64). The
        products are in X's dtype: float32 rows give probabilities within about 1e-7 of a
        float64 Gram (measured), and save a float64 copy of the rows every round."""
        n0, n = self.n, len(X)
        if n > len(self.Q) or self.Q.dtype != X.dtype:  # kept in the rows' dtype: half the memory for float32
            size = max(n, self.capacity if not n0 else 2 * n)
            Q = torch.zeros(size, size, dtype=X.dtype)
            Q[:n0, :n0] = self.Q[:n0, :n0]
            self.Q = Q
        if n > n0:
            block = X[n0:] @ X.T  # (m, n): the new rows against all rows
            self.Q[n0:n, :n] = block
            self.Q[:n0, n0:n] = block[:, :n0].T
            # a product of rows with themselves need not come out bitwise symmetric (the BLAS
            # kernel's order can differ between the two triangles on some CPUs): mirror one
            square = self.Q[n0:n, n0:n]
            self.Q[n0:n, n0:n] = torch.tril(square) + torch.tril(square, -1).T
        self.n = n
        return self.Q[:n, :n].to(_F64)


def fit_dual(Q: torch.Tensor, y: torch.Tensor, n_classes: int, C: float, *, A0: torch.Tensor | None = None,
             beta0: torch.Tensor | None = None, tol: float = 1e-4, max_iter: int = 100
             ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Newton's method on the dual parametrisation; returns (A, beta, Newton steps taken).

    Args:
        Q: the rows' Gram matrix (n x n, float64).
        y: labels (n,), in 0..n_classes-1.
        n_classes: K.
        C: inverse L2 strength.
        A0, beta0: a warm start (any values are a valid start; rows beyond A0's start at zero).
        tol: stop once the gradient's norm, scaled by 1 / (C n) as sklearn scales its objective,
            is at most `tol` (its 2-norm: at least the max-norm that scipy's gtol bounds).
        max_iter: Newton steps at most.
    """
    if n_classes == 2 and len(y) <= DIRECT_MAX:
        return _fit_binary(Q, y, C, A0, beta0, tol, max_iter)
    n, P = len(y), helmert(n_classes)
    Y = torch.nn.functional.one_hot(y.long(), n_classes).to(_F64)
    A = torch.zeros(n, n_classes - 1, dtype=_F64)
    if A0 is not None:
        A[:min(n, len(A0))] = A0[:n]
    beta = torch.zeros(n_classes - 1, dtype=_F64) if beta0 is None else beta0.to(_F64).clone()
    for it in range(max_iter + 1):
        QA = Q @ A  # recomputed, not updated: the gradient always reads the A it will return
        U = QA + beta
        F, p = _objective(U, A, QA, P, Y, C)
        G = (p - Y) @ P.T  # d CE / d U
        g = C * G + A  # the weights' gradient is X^T g; the bias's is C sum_i G_i
        Qg, g_beta = Q @ g, C * G.sum(0)
        gnorm = math.sqrt(max(float((g * Qg).sum()), 0.0) + float(g_beta @ g_beta)) / (C * n)
        if gnorm <= tol or it == max_iter:
            break
        dA, dbeta, _ = _newton_direction(Q, p, P, C, g, Qg, g_beta)
        QdA = Q @ dA
        slope = float((QdA * g).sum() + dbeta @ g_beta)  # d F / d t at t = 0
        t = _line_search(F, QA, QdA, A, dA, beta, dbeta, P, Y, C, slope)
        if t == 0.0:
            break  # no decrease left at float64 precision: as converged as it gets
        A, beta = A + t * dA, beta + t * dbeta
    return A, beta, it


def _objective(U, A, QA, P, Y, C) -> tuple[float, torch.Tensor]:
    """C * sum CE at logits U P, plus tr(A^T Q A) / 2; and the probabilities."""
    logp = torch.log_softmax(U @ P, dim=1)
    return float(-C * (Y * logp).sum() + 0.5 * (A * QA).sum()), logp.exp()


def _line_search(F0, QA, QdA, A, dA, beta, dbeta, P, Y, C, slope: float) -> float:
    """Backtracking (Armijo) along the Newton direction, from products already made (Q A and
    Q dA): no product with Q per trial. 0.0 when no step decreases F (converged)."""
    if not slope < 0:
        return 0.0
    t = 1.0
    for _ in range(40):
        QAt = QA + t * QdA
        F, _ = _objective(QAt + beta + t * dbeta, A + t * dA, QAt, P, Y, C)
        if F <= F0 + 1e-4 * t * slope:
            return t
        t *= 0.5
    return 0.0


def _curvature(p: torch.Tensor, P: torch.Tensor, C: float) -> torch.Tensor:
    """Per row, C times the CE's Hessian in U (P (diag p - p p^T) P^T), and its Cholesky factor."""
    Pp = p @ P.T
    T = torch.einsum("ak,ik,bk->iab", P, p, P) - Pp[:, :, None] * Pp[:, None, :]
    D = C * T
    # a saturated row has (numerically) zero curvature: a tiny ridge keeps its factor defined;
    # it only shapes the search direction, not the optimum (the gradient is exact)
    eye = torch.eye(P.shape[0], dtype=_F64)
    return D, torch.linalg.cholesky(D + 1e-12 * eye)


def _newton_direction(Q, p, P, C, g, Qg, g_beta):
    """The Newton step (dA, dbeta) and the logits' change du = Q dA + dbeta.

    The Newton equations, after a factor Q common to the weights' rows is taken out:
        D du + dA = -g,   sum_i D_i du_i = -g_beta,   du = Q dA + 1 dbeta,
    with D the rows' curvature blocks. So (I + Q D) du = -Q g + 1 dbeta: solved by Woodbury with
    M = I + L^T Q L (D = L L^T, eigenvalues >= 1), one column per bias coordinate."""
    n, k1 = g.shape
    D, L = _curvature(p, P, C)
    solve = _woodbury(Q, L)
    R = torch.cat([-Qg[:, :, None], torch.eye(k1, dtype=_F64).expand(n, k1, k1)], dim=2)
    H = solve(R)  # (I + Q D)^{-1} R: (n, k1, 1 + k1)
    h0, hb = H[:, :, 0], H[:, :, 1:]
    S = torch.einsum("iab,ibc->ac", D, hb)
    rhs = -g_beta - torch.einsum("iab,ib->a", D, h0)
    dbeta = torch.linalg.solve(S + 1e-12 * torch.eye(k1, dtype=_F64), rhs)
    du = h0 + hb @ dbeta
    dA = -g - torch.einsum("iab,ib->ia", D, du)
    return dA, dbeta, du


def _fit_binary(Q, y, C, A0, beta0, tol, max_iter) -> tuple[torch.Tensor, torch.Tensor, int]:
    """`fit_dual` for two classes with vectors: P = [1, -1] / sqrt 2, so the logits are
    (u, -u) / sqrt 2, p_0 = sigmoid(sqrt 2 u), the cross-entropy is log(1 + exp(-+sqrt 2 u))
    and each row's curvature is the number D_i = 2 C p_i0 p_i1. The same iteration as the
    general path (gradient, stopping test, Newton direction by Woodbury, Armijo backtracking
    from products already made) on vectors and numbers rather than (n, 1) and (n, 2) matrices."""
    n = len(y)
    y0 = (y == 0).to(_F64)  # one-hot's first column
    sign = 2 * y0 - 1  # +1 for class 0: the cross-entropy is log(1 + exp(-sign z)), z = sqrt 2 u
    a = torch.zeros(n, dtype=_F64)
    if A0 is not None:
        m = min(n, len(A0))
        a[:m] = A0[:m, 0]
    beta = 0.0 if beta0 is None else float(beta0.reshape(-1)[0])

    def objective(qa, a, beta):
        z = _SQRT2 * (qa + beta)
        return float(C * torch.logaddexp(torch.zeros_like(z), -sign * z).sum() + 0.5 * (a @ qa)), z

    for it in range(max_iter + 1):
        qa = Q @ a  # recomputed, not updated: the gradient always reads the a it will return
        F, z = objective(qa, a, beta)
        p0, p1 = torch.sigmoid(z), torch.sigmoid(-z)
        G = _SQRT2 * (p0 - y0)  # d CE / d u
        g = C * G + a  # the weights' gradient is X^T g; the bias's is C sum_i G_i
        qg, g_beta = Q @ g, C * float(G.sum())
        gnorm = math.sqrt(max(float(g @ qg), 0.0) + g_beta * g_beta) / (C * n)
        if gnorm <= tol or it == max_iter:
            break
        # Newton: D du + da = -g, D . du = -g_beta, du = Q da + dbeta, solved by Woodbury with
        # M = I + S Q S, S = diag(sqrt D) (eigenvalues >= 1), for the two right-hand sides
        D = 2 * C * p0 * p1
        sq = (D + 1e-12).sqrt()  # a saturated row's curvature is ~0: the ridge keeps M's factor defined
        M = Q * sq[:, None]
        M *= sq[None, :]
        M.diagonal().add_(1.0)
        R = torch.stack([-qg, torch.ones_like(qg)], dim=1)
        H = R - Q @ (sq[:, None] * torch.cholesky_solve(sq[:, None] * R, torch.linalg.cholesky(M)))
        h0, hb = H[:, 0], H[:, 1]
        dbeta = float((-g_beta - D @ h0) / (D @ hb + 1e-12))
        da = -g - D * (h0 + hb * dbeta)
        qda = Q @ da
        slope = float(qda @ g) + dbeta * g_beta  # d F / d t at t = 0
        t = 1.0 if slope < 0 else 0.0
        for _ in range(40 if t else 0):  # Armijo backtracking, from Q a and Q da: no product per trial
            if objective(qa + t * qda, a + t * da, beta + t * dbeta)[0] <= F + 1e-4 * t * slope:
                break
            t *= 0.5
        else:
            t = 0.0
        if t == 0.0:
            break  # no decrease left at float64 precision: as converged as it gets
        a, beta = a + t * da, beta + t * dbeta
    return a[:, None], torch.tensor([beta], dtype=_F64), it


_SQRT2 = math.sqrt(2.0)


def _woodbury(Q: torch.Tensor, L: torch.Tensor):
    """R -> (I + Q L L^T)^{-1} R = R - Q L M^{-1} L^T R, M = I + L^T Q L (block-diagonal L).
    M is factorised once when it is small enough, else solved by conjugate gradients."""
    n, k1, _ = L.shape
    size = n * k1
    if size <= DIRECT_MAX:
        M = torch.einsum("ica,ij,jcb->iajb", L, Q, L).reshape(size, size) + torch.eye(size, dtype=_F64)
        factor = torch.linalg.cholesky(M)
        solve_M = lambda B: torch.cholesky_solve(B, factor)  # noqa: E731
    else:
        solve_M = lambda B: _cg(lambda Y: Y + _lt(L, _q(Q, _l(L, Y))).reshape(Y.shape), B)  # noqa: E731

    def apply(R: torch.Tensor) -> torch.Tensor:
        m = R.shape[2]
        Y = solve_M(_lt(L, R).reshape(size, m)).reshape(n, k1, m)
        return R - _q(Q, _l(L, Y))
    return apply


def _q(Q, Y):
    """Q applied to the rows of Y (n, k1, m)."""
    return torch.einsum("ij,jcm->icm", Q, Y)


def _lt(L, R):
    """Per row: L_i^T R_i."""
    return torch.einsum("ica,icm->iam", L, R.reshape(L.shape[0], L.shape[1], -1))


def _l(L, Y):
    """Per row: L_i Y_i."""
    return torch.einsum("ica,iam->icm", L, Y.reshape(L.shape[0], L.shape[1], -1))


def _cg(matvec, B: torch.Tensor, *, rtol: float = 1e-10, max_iter: int = 500) -> torch.Tensor:
    """Conjugate gradients for M X = B (M symmetric, eigenvalues >= 1), all columns at once."""
    shape = B.shape
    X = torch.zeros_like(B)
    R = B.clone()
    Pd = R.clone()
    rr = (R * R).sum(0)
    stop = rtol * rtol * (B * B).sum(0).clamp_min(1e-300)
    for _ in range(max_iter):
        if bool((rr <= stop).all()):
            break
        MP = matvec(Pd.reshape(shape)).reshape(shape)
        alpha = rr / (Pd * MP).sum(0).clamp_min(1e-300)
        X += alpha * Pd
        R -= alpha * MP
        rr_new = (R * R).sum(0)
        Pd = R + (rr_new / rr.clamp_min(1e-300)) * Pd
        rr = rr_new
    return X


def primal(X: torch.Tensor, A: torch.Tensor, beta: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) in float64 from the dual solution: W = X^T A P (d x K), b = beta P (K); X^T A is
    computed in X's dtype (float32 rows: W within about 1e-7 relative, below the tolerance)."""
    P = helmert(n_classes)
    return (X.T @ A.to(X.dtype)).to(_F64) @ P, beta @ P


def dual_warm_start(X: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """A warm start A0 for rows X from primal weights W (d x K): the least-squares A with
    X^T A P close to W (any A0 is a valid start; a good one saves Newton steps)."""
    P = helmert(W.shape[1])
    V = W.to(_F64) @ P.T
    Q = X @ X.T
    ridge = 1e-8 * float(Q.diagonal().mean()) + 1e-12
    return torch.linalg.solve(Q + ridge * torch.eye(len(Q), dtype=_F64), X @ V)
