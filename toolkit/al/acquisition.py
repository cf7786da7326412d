"""Acquisition strategies: one interface, one registry, one input builder for both loops.

A strategy is a `Strategy`: it declares the inputs it reads (`needs`, a subset of
`INPUT_KINDS`) and chooses k candidates in one call, `select(inputs, k, rng)`, where `inputs`
is a `StrategyInputs`. It is registered by name with `@register_strategy` beside its
definition. Both loops hand `build_inputs` an `InputSource` (their way of producing logits,
embeddings and posterior samples), and `build_inputs` computes exactly what the strategy
declares; neither loop names a strategy or a kind of strategy.

Score strategies rank the candidates by a per-row score (higher = acquire first) and take the
top k: least-confidence, entropy and margin (from probabilities), max-logit (from logits),
random (from the Generator alone) and BALD (from S posterior samples of the logits). In binary
classification least-confidence, entropy and margin rank the pool identically. Batch
strategies choose k rows together from a representation: coreset, TypiClust, ProbCover
(embeddings) and BADGE (embeddings and logits), in `toolkit.al.diversity`.

`select_batch(name, k, ...)` runs one strategy on arrays passed by keyword.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np

from toolkit.errors import ConfigError

# What a strategy may declare that it reads, beyond the candidates, the labelled positions, the
# number of classes and the memo, which every strategy gets:
#   "logits":        the candidates' logits (n_candidates, C), in the order of the candidates
#   "embeddings":    the whole pool's rows (n, d), indexed by position (the labelled rows too)
#   "logit_samples": S posterior samples of the candidates' logits (S, n_candidates, C)
INPUT_KINDS = frozenset({"logits", "embeddings", "logit_samples"})


@dataclass(frozen=True)
class StrategyInputs:
    """What a strategy reads in one round; the inputs it does not declare are None.

    Attributes:
        candidates: the pool positions to choose from (int64, sorted).
        labelled: the pool positions already labelled (int64).
        n_classes: the number of classes.
        logits: the candidates' logits (n_candidates, C), in the order of `candidates`.
        embeddings: the whole pool's rows (n, d), indexed by position: an array, or anything
            that returns one for a slice `X[lo:hi]` and for a position array `X[positions]`.
        logit_samples: S posterior samples of the candidates' logits (S, n_candidates, C).
        memo: a dict kept across rounds and runs on the same rows (ProbCover's graph,
            coreset's distances to a labelled set), or None to recompute.
    """

    candidates: np.ndarray
    labelled: np.ndarray
    n_classes: int
    logits: np.ndarray | None = None
    embeddings: Any = None
    logit_samples: np.ndarray | None = None
    memo: dict | None = None

    def missing(self, needs: frozenset[str]) -> list[str]:
        """The declared inputs that are None, sorted."""
        return sorted(kind for kind in needs if getattr(self, kind) is None)


class Strategy:
    """One acquisition strategy: what it reads (`needs`, a subset of `INPUT_KINDS`) and its choice.

    Subclasses set `needs` and implement `select`; `register_strategy` sets `name`.
    """

    name: str = ""
    needs: frozenset[str] = frozenset()

    def select(self, inputs: StrategyInputs, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(positions, scores): k distinct pool positions from `inputs.candidates` in the order
        chosen, and each one's score when chosen."""
        raise NotImplementedError

    def select_scored(self, inputs: StrategyInputs, k: int, rng: np.random.Generator
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`select`, plus one score per candidate (what pool outputs store): the picks' scores,
        NaN for the rest (a batch strategy scores only what it picks)."""
        picks, scores = self.select(inputs, k, rng)
        row_scores = np.full(len(inputs.candidates), np.nan)
        order = np.argsort(inputs.candidates, kind="stable")
        row_scores[order[np.searchsorted(inputs.candidates, picks, sorter=order)]] = scores
        return picks, scores, row_scores

    def __repr__(self) -> str:
        return f"<strategy {self.name!r} needs {sorted(self.needs)}>"


def _probs(logits: np.ndarray) -> np.ndarray:
    """Softmax in the logits' own precision (the score strategies' probabilities)."""
    if logits.ndim == 2 and logits.shape[1] < 8:
        # few classes: column by column (numpy reduces short rows slowly); the same numbers, as
        # numpy sums fewer than 8 numbers left to right
        probs = np.exp(logits - _row_max(logits)[:, None])
        probs /= functools.reduce(np.add, probs.T)[:, None]
        return probs
    z = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(z)
    probs /= probs.sum(axis=1, keepdims=True)
    return probs


def _row_max(a: np.ndarray) -> np.ndarray:
    """Each row's maximum (NaN if any is NaN), column by column when rows are short: several
    times faster there than a.max(axis=1), and the same numbers (a maximum is exact)."""
    a = np.asarray(a)
    return functools.reduce(np.maximum, a.T) if a.ndim == 2 and 0 < a.shape[1] < 8 else a.max(axis=1)


# how a per-row score function is called, by what it reads: (needs, its arguments from the inputs)
SCORE_ARGUMENTS: dict[str, tuple[frozenset[str], Callable[[StrategyInputs, Any], tuple]]] = {
    "probs": (frozenset({"logits"}), lambda inputs, rng: (_probs(inputs.logits),)),
    "logits": (frozenset({"logits"}), lambda inputs, rng: (inputs.logits,)),
    "sample_probs": (frozenset({"logit_samples"}), lambda inputs, rng: (softmax(inputs.logit_samples),)),
    "rng": (frozenset(), lambda inputs, rng: (len(inputs.candidates), _require_rng(rng))),
}


def _require_rng(rng):
    if rng is None:
        raise ConfigError("random acquisition needs a numpy Generator (rng=...)")
    return rng


class ScoreStrategy(Strategy):
    """A per-row score function `fn` as a strategy: the top k candidates by score, ties to the
    lower position. `reads` says how `fn` is called (a key of `SCORE_ARGUMENTS`)."""

    def __init__(self, fn: Callable[..., np.ndarray], reads: str) -> None:
        if reads not in SCORE_ARGUMENTS:
            raise ConfigError(f"a score function reads one of {', '.join(SCORE_ARGUMENTS)}, not {reads!r}")
        self.fn, self.reads = fn, reads
        self.needs = SCORE_ARGUMENTS[reads][0]

    def score(self, inputs: StrategyInputs, rng: np.random.Generator | None) -> np.ndarray:
        """Every candidate's score, in the order of `inputs.candidates`."""
        return self.fn(*SCORE_ARGUMENTS[self.reads][1](inputs, rng))

    def select_scored(self, inputs, k, rng):
        scores = self.score(inputs, rng)
        order = select(scores, k)
        return np.asarray(inputs.candidates)[order], scores[order], scores

    def select(self, inputs, k, rng):
        return self.select_scored(inputs, k, rng)[:2]


# name -> Strategy; filled by @register_strategy here and in toolkit.al.diversity
STRATEGIES: dict[str, Strategy] = {}


def register_strategy(name: str, *, reads: str | None = None) -> Callable:
    """Register a strategy under `name` (a decorator; returns what it decorates unchanged).

    Decorates a `Strategy` subclass (registered as an instance of it), or, with `reads`, a
    per-row score function (registered as a `ScoreStrategy`: the top k by score). Both loops
    then run it: they build the inputs its `needs` declare with `build_inputs`.

    Args:
        name: the strategy's name (`al.strategy`).
        reads: for a score function, what it is called with: "probs" (the candidates'
            probabilities), "logits", "sample_probs" (S samples of them) or "rng" (the
            number of candidates and the round's Generator).

    Examples:
        >>> import numpy as np
        >>> from toolkit.al.acquisition import STRATEGIES, register_strategy, select_batch
        >>> @register_strategy("doc_lowest_first_logit", reads="logits")
        ... def lowest_first_logit(logits):
        ...     return -logits[:, 0]
        >>> select_batch("doc_lowest_first_logit", 1, candidates=[4, 7], labelled=[], n_classes=2,
        ...              rng=np.random.default_rng(0), logits=np.array([[2.0, 0.0], [-1.0, 0.0]]))[0].tolist()
        [7]
        >>> del STRATEGIES["doc_lowest_first_logit"]
    """
    def decorate(obj):
        if isinstance(obj, type) and issubclass(obj, Strategy):
            if reads is not None:
                raise ConfigError(f"strategy {name!r}: `reads` is for score functions; a Strategy declares `needs`")
            strategy = obj()
        elif callable(obj) and reads is not None:
            strategy = ScoreStrategy(obj, reads)
        else:
            raise ConfigError(f"strategy {name!r}: register a Strategy subclass, or a score function with reads=...")
        unknown = set(strategy.needs) - INPUT_KINDS
        if unknown:
            raise ConfigError(f"strategy {name!r} needs {', '.join(sorted(unknown))}: not an input kind "
                              f"({', '.join(sorted(INPUT_KINDS))})")
        if name in STRATEGIES:
            raise ConfigError(f"strategy {name!r} is registered twice ({STRATEGIES[name]!r} and {obj})")
        strategy.name, strategy.needs = name, frozenset(strategy.needs)
        STRATEGIES[name] = strategy
        return obj

    return decorate


@register_strategy("least_confidence", reads="probs")
def least_confidence(probs: np.ndarray) -> np.ndarray:
    """1 - max_y p(y|x): the paper's "uncertainty" (same order as -max_y p)."""
    return 1.0 - _row_max(probs)


@register_strategy("entropy", reads="probs")
def entropy(probs: np.ndarray) -> np.ndarray:
    """-sum_y p log p, with 0 log 0 = 0."""
    p = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return -terms.sum(axis=1)


@register_strategy("margin", reads="probs")
def margin(probs: np.ndarray) -> np.ndarray:
    """-(p_top1 - p_top2): a small margin between the two best classes scores high."""
    p = np.asarray(probs)
    if p.shape[1] < 2:
        raise ConfigError(f"margin needs at least 2 classes, got probs of shape {p.shape}")
    top2 = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]
    return -(top2[:, 1] - top2[:, 0])


@register_strategy("max_logit", reads="logits")
def max_logit(logits: np.ndarray) -> np.ndarray:
    """-max_y logit (the reference code's variant): low peak logit scores high."""
    return -np.asarray(logits).max(axis=1)


@register_strategy("random", reads="rng")
def random(n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform scores in [0, 1); top-k of them is a uniform random k-subset."""
    return rng.random(n)


@register_strategy("bald", reads="sample_probs")
def bald(prob_samples: np.ndarray) -> np.ndarray:
    """BALD (Houlsby et al. 2011): the mutual information between a row's label and the model,
    H[mean_s p_s] - mean_s H[p_s], from S posterior samples `prob_samples` of shape (S, n, C).
    High where the samples disagree, zero where they agree however uncertain each is.

    Registered as the strategy "bald" (it reads "sample_probs": `select_batch` takes the
    samples' logits as `logit_samples` and applies the softmax itself).

    Args:
        prob_samples: class probabilities under S posterior samples (MC dropout, bootstrap
            probes, ...), shape (S, n, C); each row of each sample sums to 1.

    Returns:
        The mutual information of each of the n rows, in nats (float64, shape (n,)).

    Examples:
        >>> import numpy as np
        >>> from toolkit.al.acquisition import bald, select_batch
        >>> samples = np.array([[[0.9, 0.1], [0.5, 0.5], [0.9, 0.1]],   # sample 1: three rows, two classes
        ...                     [[0.9, 0.1], [0.5, 0.5], [0.1, 0.9]]])  # sample 2 disagrees on row 3 only
        >>> bald(samples).round(3).tolist()  # row 2 is uncertain, but both samples agree: 0
        [0.0, 0.0, 0.368]
        >>> picks, scores = select_batch("bald", 1, candidates=[4, 5, 6], labelled=[], n_classes=2,
        ...                              rng=np.random.default_rng(0), logit_samples=np.log(samples))
        >>> picks.tolist(), scores.round(3).tolist()
        ([6], [0.368])
    """
    p = np.asarray(prob_samples, dtype=np.float64)
    if p.ndim != 3:
        raise ConfigError(f"bald needs posterior samples of shape (S, n, C), got {p.shape}")
    return entropy(p.mean(axis=0)) - np.mean([entropy(ps) for ps in p], axis=0)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def list_strategies() -> list[str]:
    """The registered strategy names, sorted: what `al.strategy` and `altk suite --strategies` take.

    Examples:
        >>> import toolkit
        >>> "badge" in toolkit.list_strategies() and "least_confidence" in toolkit.list_strategies()
        True
    """
    return sorted(STRATEGIES)


def get_strategy(name: str) -> Strategy:
    """The registered strategy `name`; an unknown name lists the valid ones."""
    if name not in STRATEGIES:
        raise ConfigError(f"unknown acquisition strategy {name!r}; valid names: {', '.join(list_strategies())}")
    return STRATEGIES[name]


def needs(name: str) -> frozenset[str]:
    """What strategy `name` reads: a subset of `INPUT_KINDS` ("logits", "embeddings", "logit_samples")."""
    return get_strategy(name).needs


def get_acquisition(name: str) -> tuple[str, Callable]:
    """(kind, function) of a strategy, for older callers (`get_strategy` is the interface): the
    kind is "probs", "logits", "none" or "samples" for a score strategy, with its score function;
    "embeddings" or "gradients" for a batch strategy, with its `select`."""
    strategy = get_strategy(name)
    if isinstance(strategy, ScoreStrategy):
        return {"rng": "none", "sample_probs": "samples"}.get(strategy.reads, strategy.reads), strategy.fn
    return ("gradients" if "logits" in strategy.needs else "embeddings"), strategy.select


class InputSource(Protocol):
    """How a loop produces what strategies read; `build_inputs` calls only what a strategy declares.

    The full loop's source runs the finetuned network over the pool; the probe loop's reads the
    products of the pool with each run's probe (and its bootstrap probes), computed in one pass.
    """

    n_classes: int
    memo: dict | None  # kept across rounds on the same rows, or None

    def logits(self, candidates: np.ndarray) -> np.ndarray:
        """The candidates' logits (n_candidates, C), in their order."""

    def embeddings(self) -> Any:
        """The whole pool's rows (n, d), indexed by position."""

    def logit_samples(self, candidates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """S posterior samples of the candidates' logits (S, n_candidates, C); may draw from `rng`."""


def build_inputs(strategy: Strategy, source: InputSource, candidates: np.ndarray, labelled: np.ndarray,
                 rng: np.random.Generator) -> StrategyInputs:
    """The one place inputs are made, for both loops: what `strategy` declares, from `source`.

    Embeddings come first, then logits, then posterior samples (which may draw from `rng`,
    before the strategy does)."""
    need = strategy.needs
    embeddings = source.embeddings() if "embeddings" in need else None
    logits = source.logits(candidates) if "logits" in need else None
    samples = source.logit_samples(candidates, rng) if "logit_samples" in need else None
    return StrategyInputs(np.asarray(candidates, dtype=np.int64), np.asarray(labelled, dtype=np.int64),
                          source.n_classes, logits=logits, embeddings=embeddings, logit_samples=samples,
                          memo=source.memo)


def check_inputs(strategy: Strategy, inputs: StrategyInputs) -> None:
    """Refuse inputs that lack what `strategy` declares, naming them."""
    missing = inputs.missing(strategy.needs)
    if missing:
        raise ConfigError(f"strategy {strategy.name!r} needs {', '.join(missing)}; pass them to select_batch")


def select_batch(name: str, k: int, *, candidates: np.ndarray, labelled: np.ndarray, rng: np.random.Generator,
                 n_classes: int, logits: np.ndarray | None = None, embeddings=None,
                 logit_samples: np.ndarray | None = None, memo: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """k pool positions chosen by strategy `name`, best first, with their scores.

    Args:
        name: a registered strategy (`list_strategies()`).
        k: how many to choose.
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
    strategy = get_strategy(name)
    inputs = StrategyInputs(np.asarray(candidates, dtype=np.int64), np.asarray(labelled, dtype=np.int64), n_classes,
                            logits=logits, embeddings=embeddings, logit_samples=logit_samples, memo=memo)
    check_inputs(strategy, inputs)
    return strategy.select(inputs, k, rng)


def is_batch(name: str) -> bool:
    """True for strategies that choose the batch jointly (no per-row score to stream a top-k of)."""
    return not isinstance(get_strategy(name), ScoreStrategy)


def score_logits(name: str, logits: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Scores of one score strategy that reads at most logits, from logits (n, C) (for streaming a top-k)."""
    strategy = get_strategy(name)
    if not isinstance(strategy, ScoreStrategy) or not strategy.needs <= {"logits"}:
        raise ConfigError(f"strategy {name!r} does not score from logits alone; use select_batch")
    logits = np.asarray(logits)
    return strategy.score(StrategyInputs(np.arange(len(logits)), np.empty(0, np.int64), logits.shape[1],
                                         logits=logits), rng)


def select(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k highest scores, best first; ties go to the lower position."""
    scores = np.asarray(scores)
    if not 0 <= k <= len(scores):
        raise ConfigError(f"cannot select k={k} from {len(scores)} candidates")
    if 0 < k < len(scores):  # sort only the rows that can be in the top k: at least the k-th largest
        neg = -scores
        kth = np.partition(neg, k - 1)[k - 1]
        if not np.isnan(kth):  # NaN sorts last; with fewer than k numbers, the whole sort below decides
            head = np.flatnonzero(neg <= kth)
            return head[np.lexsort((head, neg[head]))][:k]
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


# the batch strategies register beside their definitions; diversity imports this module's names,
# which exist by now, so the import works whichever of the two modules is imported first
from toolkit.al import diversity  # noqa: E402,F401
