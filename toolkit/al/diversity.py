"""Batch strategies that look at a representation: k-center coreset, TypiClust, ProbCover, BADGE.

Each is a pure, seeded function of what it needs: the pool's rows `X` (n, d) — an array, or
anything that returns an array for a contiguous slice `X[lo:hi]` and for a position array
`X[positions]` — plus the positions of the `labelled` rows and of the `candidates` to choose
from, the batch size `k` and a numpy Generator. Each returns `(picks, scores)`: the chosen
positions in the order chosen, and the score each had when it was chosen.

None builds an n x n matrix: distances go through row chunks (time O(n d) per pick for
coreset and BADGE; O(n^2 d) once per pool for ProbCover's graph, memory O(edges)).
Ties go to the lower position, so a run is reproducible from its seed alone.

Each is registered as a strategy (`toolkit.al.acquisition.register_strategy`) beside its
definition: a small `Strategy` that declares what it reads and calls the function.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from toolkit.al.acquisition import Strategy, StrategyInputs, register_strategy, softmax
from toolkit.errors import ConfigError

CHUNK_ROWS = 4096


def _check(X, candidates: np.ndarray, k: int) -> tuple[int, np.ndarray]:
    candidates = np.asarray(candidates, dtype=np.int64)
    if not 0 <= k <= len(candidates):
        raise ConfigError(f"cannot select k={k} from {len(candidates)} candidates")
    return len(X), candidates


def _chunks(n: int, chunk: int):
    for lo in range(0, n, chunk):
        yield lo, min(lo + chunk, n)


def _as_float(a) -> np.ndarray:
    a = np.asarray(a)
    return a if a.dtype in (np.float32, np.float64) else a.astype(np.float32)


def squared_norms(X, chunk: int = CHUNK_ROWS) -> np.ndarray:
    """Row squared norms of X, chunk by chunk, summed in X's own precision (float32 for float32
    rows: 5x faster than a float64 sum, and as exact as the float32 dot products they meet)."""
    out = np.empty(len(X))
    for lo, hi in _chunks(len(X), chunk):
        x = _as_float(X[lo:hi])
        out[lo:hi] = np.einsum("ij,ij->i", x, x)
    return out


def _sq_dist_to(X, sqn: np.ndarray, centre: np.ndarray, chunk: int) -> np.ndarray:
    """||x_i - centre||^2 for every row, via ||x||^2 + ||c||^2 - 2 x.c (clipped at 0)."""
    c = np.asarray(centre, dtype=np.float64)
    out = np.empty(len(X))
    for lo, hi in _chunks(len(X), chunk):
        x = _as_float(X[lo:hi])
        out[lo:hi] = x @ c.astype(x.dtype)
    return np.maximum(sqn - 2 * out + c @ c, 0.0)


def _min_sq_dist_to_set(X, sqn: np.ndarray, centres: np.ndarray, chunk: int) -> np.ndarray:
    """min over the rows of `centres` of ||x_i - c||^2 for every row of X (inf if no centres)."""
    out = np.full(len(X), np.inf)
    if len(centres) == 0:
        return out
    C = _as_float(centres)
    cn = np.einsum("ij,ij->i", C, C, dtype=np.float64)
    for lo, hi in _chunks(len(X), chunk):
        x = _as_float(X[lo:hi]).astype(C.dtype, copy=False)
        for clo, chi in _chunks(len(C), chunk):
            d = sqn[lo:hi, None] + cn[None, clo:chi] - 2 * (x @ C[clo:chi].T)
            out[lo:hi] = np.minimum(out[lo:hi], d.min(axis=1))
    return np.maximum(out, 0.0)


def _argmax_first(values: np.ndarray) -> int:
    """Position of the largest value; ties go to the lowest position (np.argmax's rule)."""
    return int(np.argmax(values))


# ----------------------------------------------------------------- k-center coreset

def coreset(X, candidates: np.ndarray, labelled: np.ndarray, k: int, rng: np.random.Generator,
            *, chunk: int = CHUNK_ROWS, sq_norms: np.ndarray | None = None,
            min_sq_dist: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """k-center greedy (Sener & Savarese 2018): repeatedly pick the candidate farthest (Euclidean)
    from every labelled and already-picked row. Scores are that distance at pick time.

    Exact, and lazy: squared distances only shrink as picks are added, so each row keeps an upper
    bound, and only the row with the largest bound is brought up to date (its distances to the
    picks made since); when it stays the largest, it is the farthest. A pick then costs a few rows'
    distances instead of a pass over the pool. `sq_norms` and `min_sq_dist` (each row's squared
    distance to the labelled set, e.g. from `min_sq_dist_after`) may be passed in to skip their
    pass. With no labelled rows the first pick is a uniform draw; otherwise `rng` is unused.

    Args:
        X: the pool's rows (n, d): an array, or anything that returns one for `X[lo:hi]` and
            `X[positions]` (an h5py dataset, `VerifiedRows`).
        candidates: the positions to choose from (distinct).
        labelled: the positions already labelled (may be empty).
        k: how many to pick (at most len(candidates)).
        rng: a numpy Generator; used only for the first pick when nothing is labelled.
        chunk: rows per block of the distance products (memory, not the result).
        sq_norms: every row's squared norm (`squared_norms(X)`), to skip that pass.
        min_sq_dist: every row's squared distance to the labelled set, to skip that pass.

    Returns:
        (picks, scores): the chosen positions in the order picked (int64), and each one's
        Euclidean distance to the nearest labelled or earlier-picked row when picked.

    Examples:
        >>> import numpy as np
        >>> from toolkit.al.diversity import coreset
        >>> X = np.array([[0.0], [1.0], [2.0], [8.0], [9.0], [20.0]])  # six rows on a line
        >>> picks, scores = coreset(X, candidates=[1, 2, 3, 4, 5], labelled=[0], k=2,
        ...                         rng=np.random.default_rng(0))
        >>> picks.tolist(), scores.tolist()  # 20 is farthest from 0; then 9 (8 from 0, 11 from 20)
        ([5, 4], [20.0, 9.0])
    """
    n, candidates = _check(X, candidates, k)
    sqn = squared_norms(X, chunk) if sq_norms is None else sq_norms
    labelled = np.asarray(labelled, dtype=np.int64)
    if min_sq_dist is None:
        min_sq_dist = _min_sq_dist_to_set(X, sqn, X[np.sort(labelled)] if len(labelled) else np.empty((0, 1)), chunk)
    bound = np.full(n, -1.0)
    bound[candidates] = min_sq_dist[candidates]  # exact for the labelled set; -1 = not a candidate
    done = np.zeros(n, dtype=np.int64)  # how many picks each row's bound already accounts for
    picks, scores, rows = [], [], []
    for _ in range(k):
        if np.isinf(bound).any():  # no labelled rows yet: every distance is infinite
            p = int(rng.choice(np.flatnonzero(np.isinf(bound))))
        else:
            while True:
                p = _argmax_first(bound)
                if done[p] < len(picks):  # bring this row up to date with the picks since
                    x = _as_float(X[p:p + 1])[0]
                    P = np.stack(rows[done[p]:])
                    d = sqn[p] + sqn[picks[done[p]:]] - 2 * (P @ x).astype(np.float64)
                    bound[p] = min(bound[p], max(float(d.min()), 0.0))
                    done[p] = len(picks)
                    continue
                break
        picks.append(p)
        scores.append(float(np.sqrt(bound[p])))
        rows.append(_as_float(X[p:p + 1])[0])
        bound[p] = -1.0
        done[p] = k
    return np.array(picks, dtype=np.int64), np.array(scores)


def min_sq_dist_after(X, sq_norms: np.ndarray, min_sq_dist: np.ndarray, new: np.ndarray,
                      chunk: int = CHUNK_ROWS) -> np.ndarray:
    """Every row's squared distance to the labelled set once rows `new` are labelled too: one
    product of the pool with the new rows (what the next round of coreset starts from)."""
    new = np.sort(np.asarray(new, dtype=np.int64))
    return np.minimum(min_sq_dist, _min_sq_dist_to_set(X, sq_norms, X[new], chunk)) if len(new) else min_sq_dist


def _labelled_key(labelled: np.ndarray) -> tuple:
    import hashlib

    return ("coreset:min_sq_dist", hashlib.sha1(np.sort(np.asarray(labelled, np.int64)).tobytes()).hexdigest())


def _pool_norms(inputs: StrategyInputs) -> np.ndarray:
    """The pool's squared row norms, once per pool when there is a memo."""
    if inputs.memo is None:
        return squared_norms(inputs.embeddings)
    if "sq_norms" not in inputs.memo:
        inputs.memo["sq_norms"] = squared_norms(inputs.embeddings)
    return inputs.memo["sq_norms"]


@register_strategy("coreset")
class Coreset(Strategy):
    """`coreset` on the pool's embeddings. With a memo (fixed rows: probe mode), each run's
    distances to its labelled set carry over to its next round, updated with this round's picks:
    one product with k rows instead of |labelled|."""

    needs = frozenset({"embeddings"})

    def select(self, inputs: StrategyInputs, k: int, rng: np.random.Generator):
        X, labelled, memo = inputs.embeddings, inputs.labelled, inputs.memo
        sqn = _pool_norms(inputs)
        start = memo.pop(_labelled_key(labelled), None) if memo is not None else None
        if start is None and memo is not None and len(labelled):
            start = min_sq_dist_after(X, sqn, np.full(len(X), np.inf), labelled)
        picks, scores = coreset(X, inputs.candidates, labelled, k, rng, sq_norms=sqn, min_sq_dist=start)
        if memo is not None and start is not None:
            memo[_labelled_key(np.concatenate([labelled, picks]))] = min_sq_dist_after(X, sqn, start, picks)
        return picks, scores


# ----------------------------------------------------------------- BADGE

def gradient_factors(probs: np.ndarray) -> np.ndarray:
    """p - onehot(argmax p): with the row's embedding h, the gradient of the cross-entropy at the
    predicted label with respect to the last layer's weights is (p - onehot) outer h."""
    p = np.asarray(probs, dtype=np.float64)
    return p - np.eye(p.shape[1])[p.argmax(1)]


def badge(X, probs: np.ndarray, candidates: np.ndarray, k: int, rng: np.random.Generator,
          *, origin_centre: bool = False, chunk: int = CHUNK_ROWS,
          sq_norms: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """BADGE (Ash et al. 2020): k-means++ seeding on gradient embeddings g_i = a_i outer x_i,
    a_i = p_i - onehot(argmax p_i); `probs` are the candidates' class probabilities, in the
    order of `candidates`, and X the rows the last layer sees.

    The first pick is the largest ||g||; each next is drawn with probability proportional to
    its squared distance D^2 to the nearest pick. g is never formed: ||g_i - g_j||^2 =
    |a_i|^2 |x_i|^2 + |a_j|^2 |x_j|^2 - 2 (a_i.a_j)(x_i.x_j). The draw is exact rejection
    sampling: propose a row in proportion to an upper bound of its D^2 (at first
    (||g_i|| + ||g_1||)^2, then its last computed D^2, since D^2 only shrinks), compute its D^2
    against the picks, accept with probability D^2 / bound. A pick thus costs a few rows'
    distances, not a pass over the pool. Scores are D^2 at pick time (the first: ||g||^2).

    D^2 is the distance to the picks, as the authors' code; `origin_centre=True` also counts
    g = 0 as a centre (D^2 <= ||g||^2), as scikit-activeml's `Badge` does.

    Args:
        X: the pool's rows (n, d), as in `coreset`: the embeddings the last layer sees.
        probs: the candidates' class probabilities (n_candidates, C), in the order of
            `candidates` (the registered strategy passes the softmax of their logits).
        candidates: the positions to choose from (distinct).
        k: how many to pick.
        rng: a numpy Generator: the D^2-weighted draws (and a uniform draw when every
            gradient embedding is 0).
        origin_centre: also count g = 0 as a centre (scikit-activeml's variant); default False.
        chunk: rows per block of the distance products.
        sq_norms: every row's squared norm (`squared_norms(X)`), to skip that pass.

    Returns:
        (picks, scores): the chosen positions in the order picked (int64), and each one's D^2
        when picked (the first pick's: its ||g||^2).

    Examples:
        >>> import numpy as np
        >>> from toolkit.al.diversity import badge
        >>> X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, 0.0]])
        >>> probs = np.array([[0.5, 0.5], [0.9, 0.1], [0.6, 0.4], [0.99, 0.01]])
        >>> picks, scores = badge(X, probs, candidates=[0, 1, 2, 3], k=2, rng=np.random.default_rng(0))
        >>> picks.tolist(), scores.round(3).tolist()  # first the largest ||g||^2 (row 2), then a D^2 draw
        ([2, 1], [0.64, 0.5])
    """
    n, candidates = _check(X, candidates, k)
    probs = np.asarray(probs)
    if probs.shape[0] != len(candidates):
        raise ConfigError(f"badge: probs has {probs.shape[0]} rows for {len(candidates)} candidates")
    a = np.zeros((n, probs.shape[1]))
    a[candidates] = gradient_factors(probs)
    sqn = squared_norms(X, chunk) if sq_norms is None else sq_norms
    g2 = np.einsum("ij,ij->i", a, a) * sqn  # ||g_i||^2
    remaining = np.zeros(n, dtype=bool)
    remaining[candidates] = True
    picks, scores, rows = [], [], []

    def d2_of(i: int) -> float:
        x = _as_float(X[i:i + 1])[0]
        P = np.stack(rows)
        d = g2[i] + g2[picks] - 2 * (a[picks] @ a[i]) * (P @ x).astype(np.float64)
        best = float(max(d.min(), 0.0))
        return min(best, float(g2[i])) if origin_centre else best

    bound = None
    exact_upto = [0, None]  # picks folded into `exact_all`, and each row's D^2 to them

    def refresh() -> None:
        """Exact D^2 of every row to every pick so far (one product with the new picks): the
        bounds become exact, used when proposals keep being rejected (a pick landed where most
        rows are, so the old bounds are loose)."""
        new = np.stack(rows[exact_upto[0]:])
        an = a[picks[exact_upto[0]:]]
        best = exact_upto[1] if exact_upto[1] is not None else (g2.copy() if origin_centre else np.full(n, np.inf))
        for lo, hi in _chunks(n, chunk):
            x = _as_float(X[lo:hi])
            dots = (x @ new.T.astype(x.dtype)).astype(np.float64)
            d = g2[lo:hi, None] + g2[None, picks[exact_upto[0]:]] - 2 * (a[lo:hi] @ an.T) * dots
            best[lo:hi] = np.minimum(best[lo:hi], np.maximum(d, 0.0).min(axis=1))
        exact_upto[0], exact_upto[1] = len(picks), best
        bound[:] = np.where(remaining, best, 0.0)

    for i in range(k):
        if i == 0 and g2[remaining].sum() > 0:
            p = _argmax_first(np.where(remaining, g2, -1.0))
            d2 = float(g2[p])
        elif i == 0:  # every gradient embedding is 0 (certain predictions): uniform, as scikit-activeml
            p = int(rng.choice(np.flatnonzero(remaining)))
            d2 = 0.0
        else:
            p, d2, tries = None, 0.0, 0
            while p is None:
                if tries == 8 and exact_upto[0] < len(picks):
                    refresh()
                total = bound.sum()
                if total <= 0:  # D^2 is 0 for every remaining row: uniform, as scikit-activeml
                    p = int(rng.choice(np.flatnonzero(remaining)))
                    break
                q = min(int(np.searchsorted(np.cumsum(bound), rng.random() * total, side="right")), n - 1)
                exact = d2_of(q)
                if rng.random() * bound[q] < exact:
                    p, d2 = q, exact
                bound[q] = exact  # a tighter bound, still valid for the draws to come
                tries += 1
        picks.append(p)
        scores.append(d2)
        rows.append(_as_float(X[p:p + 1])[0])
        remaining[p] = False
        if i == 0:  # ||g_i - g_1||^2 <= (||g_i|| + ||g_1||)^2
            bound = np.where(remaining, (np.sqrt(g2) + np.sqrt(g2[p])) ** 2, 0.0)
            if origin_centre:
                bound = np.minimum(bound, g2)
        else:
            bound[p] = 0.0
    return np.array(picks, dtype=np.int64), np.array(scores)


@register_strategy("badge")
class Badge(Strategy):
    """`badge` on the pool's embeddings and the candidates' probabilities (softmax of their logits)."""

    needs = frozenset({"embeddings", "logits"})

    def select(self, inputs: StrategyInputs, k: int, rng: np.random.Generator):
        return badge(inputs.embeddings, softmax(inputs.logits), inputs.candidates, k, rng,
                     sq_norms=_pool_norms(inputs))


# ----------------------------------------------------------------- TypiClust

def kmeans_labels(X, n_clusters: int, seed: int) -> np.ndarray:
    """Cluster labels of every row: scikit-learn's KMeans (k-means++ init, one run) up to
    50 clusters, MiniBatchKMeans above (as TypiClust's authors do), seeded."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    Xa = _as_float(X[0:len(X)])
    n_clusters = min(n_clusters, len(Xa))
    algo = KMeans if n_clusters <= 50 else MiniBatchKMeans
    return algo(n_clusters=n_clusters, random_state=seed, n_init=1).fit_predict(Xa)


def typicality(X_cluster: np.ndarray, knn: int = 20) -> np.ndarray:
    """1 / mean distance to the row's `knn` nearest other rows of its cluster (TypiClust's
    density); a cluster of one row gets 1."""
    from sklearn.neighbors import NearestNeighbors

    m = len(X_cluster)
    if m == 1:
        return np.ones(1)
    kk = min(knn, m - 1)
    dist, _ = NearestNeighbors(n_neighbors=kk + 1).fit(X_cluster).kneighbors(X_cluster)
    return 1.0 / (dist.sum(axis=1) / kk + 1e-7)  # column 0 is the row itself (distance 0)


def typiclust(X, candidates: np.ndarray, labelled: np.ndarray, k: int, rng: np.random.Generator,
              *, knn: int = 20, min_cluster_size: int = 5, max_clusters: int = 500,
              cluster_labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """TypiClust (Hacohen et al. 2022): cluster the rows into |labelled| + k clusters (at most
    `max_clusters`); k times, take the largest cluster that holds no labelled or picked row
    (ignoring clusters smaller than `min_cluster_size`) and pick its most typical candidate.
    Scores are the typicality of each pick.

    The k-means seed is drawn from `rng`; `cluster_labels` (n,) replaces the clustering. When
    no uncovered cluster is left, the remaining picks are uniform draws (as scikit-activeml).

    Args:
        X: the pool's rows (n, d), as in `coreset`.
        candidates: the positions to choose from (distinct); only they and the labelled rows
            are clustered.
        labelled: the positions already labelled: their clusters count as covered.
        k: how many to pick.
        rng: a numpy Generator: the k-means seed, and the uniform draws once every cluster
            is covered.
        knn: neighbours in the typicality (1 / mean distance to them), default 20.
        min_cluster_size: clusters with fewer rows are never chosen (default 5).
        max_clusters: the most clusters k-means makes (default 500; None: no cap).
        cluster_labels: a cluster per row (n,), replacing the k-means clustering.

    Returns:
        (picks, scores): the chosen positions in the order picked (int64, largest uncovered
        cluster first), and each one's typicality (NaN for a uniform draw).

    Examples:
        >>> import numpy as np
        >>> from toolkit.al.diversity import typiclust
        >>> rng = np.random.default_rng(0)
        >>> X = np.concatenate([c + 0.3 * rng.normal(size=(8, 2)) for c in ([0, 0], [5, 0], [0, 5])])
        >>> picks, scores = typiclust(X, candidates=np.arange(1, 24), labelled=[0], k=2,
        ...                           rng=np.random.default_rng(0))
        >>> sorted((picks // 8).tolist())  # one row from each of the two clusters not yet labelled
        [1, 2]
        >>> picks, _ = typiclust(X, candidates=np.arange(1, 24), labelled=[0], k=2, rng=np.random.default_rng(0),
        ...                      cluster_labels=np.repeat([0, 1, 2], 8))  # given clusters: no k-means
        >>> (picks // 8).tolist()
        [1, 2]
    """
    n, candidates = _check(X, candidates, k)
    labelled = np.asarray(labelled, dtype=np.int64)
    rows = np.union1d(candidates, labelled)  # a pool subsample leaves other rows out of the clustering
    if cluster_labels is None:
        sub = _as_float(X[rows]) if len(rows) < n else X
        lab = kmeans_labels(sub, len(labelled) + k if max_clusters is None else min(len(labelled) + k, max_clusters),
                            int(rng.integers(2**31 - 1)))
        cluster_labels = np.full(n, -1)
        cluster_labels[rows] = lab
    cluster_labels = np.asarray(cluster_labels)
    n_clusters = int(cluster_labels.max()) + 1
    sizes = np.bincount(cluster_labels[rows], minlength=n_clusters).astype(float)
    sizes[np.unique(cluster_labels[labelled])] = 0  # covered clusters
    sizes[sizes < min_cluster_size] = 0
    is_cand = np.zeros(n, dtype=bool)
    is_cand[candidates] = True
    in_rows = np.zeros(n, dtype=bool)
    in_rows[rows] = True
    picks, scores = [], []
    for _ in range(k):
        if sizes.max() > 0:
            c = _argmax_first(sizes)
            members = np.flatnonzero((cluster_labels == c) & in_rows)
            typ = typicality(_as_float(X[members]), knn)
            typ[~is_cand[members]] = -np.inf
            j = _argmax_first(typ)
            p, s = int(members[j]), float(typ[j])
            sizes[c] = 0
        else:
            p, s = int(rng.choice(np.flatnonzero(is_cand))), float("nan")
        picks.append(p)
        scores.append(s)
        is_cand[p] = False
    return np.array(picks, dtype=np.int64), np.array(scores)


@register_strategy("typiclust")
class TypiClust(Strategy):
    """`typiclust` on the pool's embeddings (the labelled rows tell which clusters are covered)."""

    needs = frozenset({"embeddings"})

    def select(self, inputs: StrategyInputs, k: int, rng: np.random.Generator):
        return typiclust(inputs.embeddings, inputs.candidates, inputs.labelled, k, rng)


# ----------------------------------------------------------------- ProbCover

# radii tried for L2-normalised rows (distances in [0, 2]); the largest with purity >= alpha wins
PROBCOVER_RADII = tuple(np.round(np.arange(0.05, 2.0001, 0.05), 2))


@dataclass(frozen=True)
class CoverGraph:
    """ProbCover's ball graph on one pool: rows within `radius` of each other (CSR, symmetric,
    self-loops included), the purity that radius reached and the purity of each radius tried."""

    radius: float
    purity: float
    adjacency: object  # scipy.sparse.csr_matrix (n, n) of bools
    purities: dict


def normalise_rows(X, chunk: int = CHUNK_ROWS) -> np.ndarray:
    """Rows scaled to unit L2 norm (ProbCover works on normalised embeddings, as its paper)."""
    out = np.empty((len(X), X.shape[1]), dtype=np.float32)
    for lo, hi in _chunks(len(X), chunk):
        x = _as_float(X[lo:hi]).astype(np.float64)
        out[lo:hi] = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return out


def distance_to_other_cluster(X: np.ndarray, labels: np.ndarray, chunk: int = CHUNK_ROWS) -> np.ndarray:
    """For every row, the Euclidean distance to the nearest row of another cluster."""
    sqn = squared_norms(X, chunk)
    out = np.full(len(X), np.inf)
    for lo, hi in _chunks(len(X), chunk):
        d = sqn[lo:hi, None] + sqn[None, :] - 2 * (X[lo:hi] @ X.T)
        d[labels[lo:hi, None] == labels[None, :]] = np.inf
        out[lo:hi] = d.min(axis=1)
    return np.sqrt(np.maximum(out, 0.0))


def cover_graph(X, *, n_clusters: int, alpha: float = 0.95, seed: int = 0, radii=PROBCOVER_RADII,
                radius: float | None = None, chunk: int = 1024) -> CoverGraph:
    """The automatic radius and ball graph of ProbCover (Yehuda et al. 2022), on L2-normalised rows.

    Radius: k-means with `n_clusters` clusters (the number of classes, as the paper) gives
    pseudo-labels; a radius's purity is the share of rows whose ball holds no row of another
    cluster. Going up `radii`, the largest radius whose purity is >= `alpha` is kept (the first
    radius if none is), the rule of the paper and of scikit-activeml. A fixed `radius` skips it.
    Purity for every radius comes from one distance per row (to the nearest other-cluster row),
    and the graph from row chunks: neither holds an n x n matrix.

    Args:
        X: the pool's rows (n, d), as in `coreset` (normalised here; the caller's are untouched).
        n_clusters: k-means clusters for the purity (ProbCover's strategy passes the number
            of classes).
        alpha: the purity a radius must reach (default 0.95).
        seed: the k-means seed.
        radii: the radii tried, smallest first (default `PROBCOVER_RADII`: 0.05 to 2.0 in
            steps of 0.05, for unit-norm rows).
        radius: a fixed radius: no k-means and no purity (`purity` is then NaN, `purities` empty).
        chunk: rows per block of the distance products.

    Returns:
        A `CoverGraph`: `radius`, its `purity`, the `adjacency` (scipy CSR, n x n, bools) and
        `purities` (radius -> purity, for each radius tried).

    Examples:
        >>> import numpy as np
        >>> from toolkit.al.diversity import cover_graph
        >>> X = np.array([[1, 0], [1, 0.1], [1, -0.1], [2, 0.1], [0, 1], [0.1, 1], [-0.1, 1]])
        >>> graph = cover_graph(X, n_clusters=2)  # two directions: 4 rows near (1, 0), 3 near (0, 1)
        >>> graph.radius, graph.purity, graph.adjacency.shape
        (1.25, 1.0, (7, 7))
        >>> graph.adjacency.sum(axis=1).A1.tolist()  # each ball holds its own direction's rows
        [4, 4, 4, 4, 3, 3, 3]
    """
    import scipy.sparse as sp

    Xn = normalise_rows(X, chunk)
    purities = {}
    if radius is None:
        labels = kmeans_labels(Xn, n_clusters, seed)
        d_other = distance_to_other_cluster(Xn, labels, chunk)
        radius = float(radii[0])
        for r in sorted(radii):
            purities[float(r)] = float((d_other > r).mean())  # impure if another cluster's row is within r
            if purities[float(r)] < alpha:
                break
            radius = float(r)
    sqn = squared_norms(Xn, chunk)
    rows, cols = [], []
    for lo, hi in _chunks(len(Xn), chunk):
        d = sqn[lo:hi, None] + sqn[None, :] - 2 * (Xn[lo:hi] @ Xn.T).astype(np.float64)
        i, j = np.nonzero(d <= radius * radius + 1e-9)
        rows.append(i + lo)
        cols.append(j)
    i, j = np.concatenate(rows), np.concatenate(cols)
    adj = sp.csr_matrix((np.ones(len(i), dtype=bool), (i, j)), shape=(len(Xn), len(Xn)))
    return CoverGraph(radius, purities.get(radius, float("nan")), adj, purities)


def probcover(X, candidates: np.ndarray, labelled: np.ndarray, k: int, rng: np.random.Generator | None = None,
              *, graph: CoverGraph | None = None, n_clusters: int = 2, alpha: float = 0.95,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """ProbCover (Yehuda et al. 2022): on the ball graph of `cover_graph`, k times pick the
    candidate whose ball covers the most rows not yet covered by a labelled or picked row.
    Scores are that count. Deterministic (ties go to the lower position); `rng` is unused.

    Pass `graph` to reuse one pool's graph across rounds and runs (it depends on the rows only).

    Args:
        X: the pool's rows (n, d), as in `coreset`.
        candidates: the positions to choose from (distinct).
        labelled: the positions already labelled: their balls count as covered.
        k: how many to pick.
        rng: unused (the strategies' common signature).
        graph: the pool's `cover_graph`; None builds it with `n_clusters`, `alpha` and `seed`.
        n_clusters: k-means clusters for the graph's radius, when it is built here (default 2).
        alpha: the purity the radius must reach, when the graph is built here (default 0.95).
        seed: the k-means seed, when the graph is built here.

    Returns:
        (picks, scores): the chosen positions in the order picked (int64), and how many
        uncovered rows each one's ball covered when picked.

    Examples:
        >>> import numpy as np
        >>> from toolkit.al.diversity import cover_graph, probcover
        >>> X = np.array([[1, 0], [1, 0.1], [1, -0.1], [2, 0.1], [0, 1], [0.1, 1], [-0.1, 1]])
        >>> graph = cover_graph(X, n_clusters=2)
        >>> picks, scores = probcover(X, candidates=np.arange(1, 7), labelled=[0], k=2, graph=graph)
        >>> picks.tolist(), scores.tolist()  # row 4 covers the 3 rows near (0, 1); then nothing is left
        ([4, 1], [3.0, 0.0])
    """
    n, candidates = _check(X, candidates, k)
    graph = graph or cover_graph(X, n_clusters=n_clusters, alpha=alpha, seed=seed)
    A = graph.adjacency
    if A.shape[0] != n:
        raise ConfigError(f"probcover: the graph has {A.shape[0]} rows, the pool {n}")
    covered = np.zeros(n, dtype=bool)
    labelled = np.asarray(labelled, dtype=np.int64)
    if len(labelled):
        covered[A[labelled].indices] = True
    is_cand = np.zeros(n, dtype=bool)
    is_cand[candidates] = True
    picks, scores = [], []
    for _ in range(k):
        degree = A @ (~covered).astype(np.int64)
        degree = np.where(is_cand, degree, -1)
        p = _argmax_first(degree)
        picks.append(p)
        scores.append(float(degree[p]))
        is_cand[p] = False
        covered[A[p].indices] = True
    return np.array(picks, dtype=np.int64), np.array(scores)


@register_strategy("probcover")
class ProbCover(Strategy):
    """`probcover` on the pool's embeddings, with as many k-means clusters as classes. The ball
    graph depends on the rows only: computed once per pool when there is a memo."""

    needs = frozenset({"embeddings"})

    def select(self, inputs: StrategyInputs, k: int, rng: np.random.Generator):
        memo, key = inputs.memo, ("probcover", inputs.n_classes)
        graph = memo.get(key) if memo is not None else None
        if graph is None:
            graph = cover_graph(inputs.embeddings, n_clusters=inputs.n_classes)
            if memo is not None:
                memo[key] = graph
        return probcover(inputs.embeddings, inputs.candidates, inputs.labelled, k, graph=graph)
