"""Acquisition functions: pure array functions, higher score = acquire first.

All take probabilities `probs` of shape (n, C) (rows sum to 1) and return scores of
shape (n,), except `max_logit`, which takes logits, and `random`, which takes a count
and a Generator. In binary classification least-confidence, entropy and margin rank
the pool identically.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

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


# Which input each strategy scores from; "random" needs none.
STRATEGIES: dict[str, tuple[str, Callable]] = {
    "least_confidence": ("probs", least_confidence),
    "entropy": ("probs", entropy),
    "margin": ("probs", margin),
    "max_logit": ("logits", max_logit),
    "random": ("none", random),
}


def list_strategies() -> list[str]:
    return sorted(STRATEGIES)


def get_acquisition(name: str) -> tuple[str, Callable]:
    """(input kind, function) for a strategy name; an unknown name lists the valid ones."""
    if name not in STRATEGIES:
        raise ConfigError(f"unknown acquisition strategy {name!r}; valid names: {', '.join(list_strategies())}")
    return STRATEGIES[name]


def score_logits(name: str, logits: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Scores of one strategy from logits (n, C)."""
    kind, fn = get_acquisition(name)
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
