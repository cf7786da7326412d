"""Acquisition strategies: the registry both loops choose from, and the per-row scores.

Two kinds of strategy. Score strategies rank the candidates by a per-row score (higher =
acquire first) and take the top k: least-confidence, entropy and margin (from probabilities
(n, C)), max-logit (from logits), random (from a Generator), and BALD (from S posterior
samples of the probabilities, (S, n, C)). In binary classification least-confidence,
entropy and margin rank the pool identically. Batch strategies choose k rows together from
a representation: coreset, TypiClust, ProbCover (embeddings) and BADGE (embeddings and
probabilities), in `toolkit.al.diversity`.

`select_batch` is the one call both loops make; `needs` says which inputs a strategy reads.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from toolkit.al import diversity
from toolkit.errors import ConfigError


def least_confidence(probs: np.ndarray) -> np.ndarray:
    """1 - max_y p(y|x): the paper's "uncertainty" (same order as -max_y p)."""
    return 1.0 - np.asarray(probs).max(axis=1)


def entropy(probs: np.ndarray) -> np.ndarray:
    """-sum_y p log p, with 0 log 0 = 0."""
    p = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return -terms.sum(axis=1)


def margin(probs: np.ndarray) -> np.ndarray:
    """-(p_top1 - p_top2): a small margin between the two best classes scores high."""
    p = np.asarray(probs)
    if p.shape[1] < 2:
        raise ConfigError(f"margin needs at least 2 classes, got probs of shape {p.shape}")
    top2 = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]
    return -(top2[:, 1] - top2[:, 0])


def max_logit(logits: np.ndarray) -> np.ndarray:
    """-max_y logit (the reference code's variant): low peak logit scores high."""
    return -np.asarray(logits).max(axis=1)


def random(n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform scores in [0, 1); top-k of them is a uniform random k-subset."""
    return rng.random(n)


def bald(prob_samples: np.ndarray) -> np.ndarray:
    """BALD (Houlsby et al. 2011): the mutual information between a row's label and the model,
    H[mean_s p_s] - mean_s H[p_s], from S posterior samples `prob_samples` of shape (S, n, C).
    High where the samples disagree, zero where they agree however uncertain each is."""
    p = np.asarray(prob_samples, dtype=np.float64)
    if p.ndim != 3:
        raise ConfigError(f"bald needs posterior samples of shape (S, n, C), got {p.shape}")
    return entropy(p.mean(axis=0)) - np.mean([entropy(ps) for ps in p], axis=0)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _labelled_key(labelled: np.ndarray) -> tuple:
    import hashlib

    return ("coreset:min_sq_dist", hashlib.sha1(np.sort(np.asarray(labelled, np.int64)).tobytes()).hexdigest())


def _pool_norms(inputs: dict) -> np.ndarray:
    memo = inputs.get("memo")
    if memo is None:
        return diversity.squared_norms(inputs["embeddings"])
    if "sq_norms" not in memo:
        memo["sq_norms"] = diversity.squared_norms(inputs["embeddings"])
    return memo["sq_norms"]


def _coreset(inputs: dict, k: int, rng):
    # with a memo (fixed rows: probe mode), each run's distances to its labelled set carry over to
    # its next round, updated with this round's picks: one product with k rows instead of |labelled|
    X, labelled, memo = inputs["embeddings"], inputs["labelled"], inputs.get("memo")
    sqn = _pool_norms(inputs)
    start = memo.pop(_labelled_key(labelled), None) if memo is not None else None
    if start is None and memo is not None and len(labelled):
        start = diversity.min_sq_dist_after(X, sqn, np.full(len(X), np.inf), labelled)
    picks, scores = diversity.coreset(X, inputs["candidates"], labelled, k, rng, sq_norms=sqn, min_sq_dist=start)
    if memo is not None and start is not None:
        memo[_labelled_key(np.concatenate([labelled, picks]))] = diversity.min_sq_dist_after(X, sqn, start, picks)
    return picks, scores


def _typiclust(inputs: dict, k: int, rng):
    return diversity.typiclust(inputs["embeddings"], inputs["candidates"], inputs["labelled"], k, rng)


def _probcover(inputs: dict, k: int, rng):
    # the ball graph depends on the rows only: computed once per pool when a memo is passed
    memo, key = inputs.get("memo"), ("probcover", inputs["n_classes"])
    graph = memo.get(key) if memo is not None else None
    if graph is None:
        graph = diversity.cover_graph(inputs["embeddings"], n_clusters=inputs["n_classes"])
        if memo is not None:
            memo[key] = graph
    return diversity.probcover(inputs["embeddings"], inputs["candidates"], inputs["labelled"], k, graph=graph)


def _badge(inputs: dict, k: int, rng):
    return diversity.badge(inputs["embeddings"], softmax(inputs["logits"]), inputs["candidates"], k, rng,
                           sq_norms=_pool_norms(inputs))


# Which input each strategy reads: "probs"/"logits" = the candidates' logits (n, C),
# "none" = nothing, "samples" = S posterior samples of their logits (S, n, C);
# "embeddings" = the pool's rows, "gradients" = the pool's rows and the candidates' logits.
STRATEGIES: dict[str, tuple[str, Callable]] = {
    "least_confidence": ("probs", least_confidence),
    "entropy": ("probs", entropy),
    "margin": ("probs", margin),
    "max_logit": ("logits", max_logit),
    "random": ("none", random),
    "bald": ("samples", bald),
    "coreset": ("embeddings", _coreset),
    "typiclust": ("embeddings", _typiclust),
    "probcover": ("embeddings", _probcover),
    "badge": ("gradients", _badge),
}
SCORE_KINDS = ("probs", "logits", "none", "samples")


def list_strategies() -> list[str]:
    """The registered strategy names, sorted: what `al.strategy` and `altk suite --strategies` take.

    Examples:
        >>> import toolkit
        >>> "badge" in toolkit.list_strategies() and "least_confidence" in toolkit.list_strategies()
        True
    """
    return sorted(STRATEGIES)


def get_acquisition(name: str) -> tuple[str, Callable]:
    """(input kind, function) for a strategy name; an unknown name lists the valid ones."""
    if name not in STRATEGIES:
        raise ConfigError(f"unknown acquisition strategy {name!r}; valid names: {', '.join(list_strategies())}")
    return STRATEGIES[name]


def needs(name: str) -> set[str]:
    """What a strategy reads: a subset of {"logits", "embeddings", "samples"}."""
    kind = get_acquisition(name)[0]
    return {"probs": {"logits"}, "logits": {"logits"}, "none": set(), "samples": {"samples"},
            "embeddings": {"embeddings"}, "gradients": {"logits", "embeddings"}}[kind]


def is_batch(name: str) -> bool:
    """True for strategies that choose the batch jointly (no per-row score to stream a top-k of)."""
    return get_acquisition(name)[0] not in SCORE_KINDS


def select_batch(name: str, k: int, *, candidates: np.ndarray, labelled: np.ndarray, rng: np.random.Generator,
                 n_classes: int, logits: np.ndarray | None = None, embeddings=None,
                 logit_samples: np.ndarray | None = None, memo: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """k pool positions chosen by strategy `name`, best first, with their scores.

    Args:
        candidates: the positions to choose from; labelled: the positions already labelled.
        rng: the round's Generator (random scores, BADGE's draws, k-means seeds).
        n_classes: the number of classes (ProbCover's clusters).
        logits: the candidates' logits (n_candidates, C), in the order of `candidates`.
        embeddings: the whole pool's rows (n, d), indexed by position.
        logit_samples: S posterior samples of the candidates' logits (S, n_candidates, C).
        memo: a dict kept across calls on the same rows (ProbCover's graph); None recomputes.

    Returns:
        (positions, scores): the chosen pool positions in the order chosen, and each one's score
        when chosen (for score strategies the score itself; for coreset the distance, for BADGE
        D^2, for ProbCover the newly covered count, for TypiClust the typicality).

    Examples:
        >>> import numpy as np, toolkit
        >>> X = np.array([[0.0], [1.0], [5.0], [10.0]])
        >>> picks, scores = toolkit.select_batch("coreset", 2, candidates=[1, 2, 3], labelled=[0],
        ...                                      rng=np.random.default_rng(0), n_classes=2, embeddings=X)
        >>> picks.tolist(), scores.tolist()
        ([3, 2], [10.0, 5.0])
    """
    kind, fn = get_acquisition(name)
    missing = [what for what in needs(name) if {"logits": logits, "embeddings": embeddings,
                                                  "samples": logit_samples}[what] is None]
    if missing:
        raise ConfigError(f"strategy {name!r} needs {', '.join(sorted(missing))}; pass them to select_batch")
    candidates = np.asarray(candidates, dtype=np.int64)
    if kind in SCORE_KINDS:
        if kind == "samples":
            scores = fn(softmax(logit_samples))
        else:
            scores = score_logits(name, logits if logits is not None else np.empty((len(candidates), 0)), rng)
        order = select(scores, k)
        return candidates[order], scores[order]
    inputs = {"candidates": candidates, "labelled": np.asarray(labelled, dtype=np.int64), "logits": logits,
              "embeddings": embeddings, "n_classes": n_classes, "memo": memo}
    return fn(inputs, k, rng)


def score_logits(name: str, logits: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Scores of one score strategy from logits (n, C)."""
    kind, fn = get_acquisition(name)
    if kind not in ("probs", "logits", "none"):
        raise ConfigError(f"strategy {name!r} does not score from logits alone; use select_batch")
    if kind == "none":
        if rng is None:
            raise ConfigError("random acquisition needs a numpy Generator (rng=...)")
        return fn(len(logits), rng)
    if kind == "logits":
        return fn(logits)
    z = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(z)
    probs /= probs.sum(axis=1, keepdims=True)
    return fn(probs)


def select(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k highest scores, best first; ties go to the lower position."""
    scores = np.asarray(scores)
    if not 0 <= k <= len(scores):
        raise ConfigError(f"cannot select k={k} from {len(scores)} candidates")
    order = np.lexsort((np.arange(len(scores)), -scores))
    return order[:k]


class StreamingTopK:
    """Running top-k over chunks of (scores, keys), so memory does not grow with the pool.

    Gives exactly `select` on the concatenation: ties go to the earlier-seen row.
    """

    def __init__(self, k: int) -> None:
        self.k = k
        self.scores = np.empty(0)
        self.keys = np.empty(0, dtype=np.int64)
        self.order = np.empty(0, dtype=np.int64)  # position in the stream, for tie-breaking
        self.seen = 0

    def update(self, scores: np.ndarray, keys: np.ndarray) -> None:
        n = len(scores)
        s = np.concatenate([self.scores, np.asarray(scores, dtype=np.float64)])
        kk = np.concatenate([self.keys, np.asarray(keys, dtype=np.int64)])
        o = np.concatenate([self.order, self.seen + np.arange(n)])
        self.seen += n
        best = np.lexsort((o, -s))[: self.k]
        self.scores, self.keys, self.order = s[best], kk[best], o[best]

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys, scores) of the top k seen, best first."""
        if self.seen < self.k:
            raise ConfigError(f"asked for the top {self.k} but only {self.seen} candidates were streamed")
        return self.keys.copy(), self.scores.copy()
