"""Group separability probes (paper Fig. 6): how linearly readable are the label, the
spurious attribute and their four combinations from an embedding?"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from toolkit.errors import RecordError
from toolkit.metrics import group_key


class GroupSeparability:
    """Cross-validated linear probes on frozen embeddings.

    Targets: "group" (label x spurious, e.g. four classes for Waterbirds), "label" and
    "spurious" alone. `fit(embeddings, labels, spurious)` fits them (standardised features,
    L2 logistic regression, out-of-fold predictions) and returns the estimator; it refuses
    a group with fewer than `cv` examples.

    Args:
        cv: folds (stratified by group, shuffled with `random_state`; default 5).
        C: inverse L2 strength of the logistic regression (default 0.1: features are
            standardised and many; a stronger penalty also makes the fits converge fast).
        max_iter: lbfgs iterations per fit (default 500).
        random_state: the folds' shuffling seed.
        targets: which of "group", "label" and "spurious" to probe (all three by default; a
            calibration that reads one measure, e.g. `features.interventions.inject`, asks for it alone).

    Attributes:
        scores_: DataFrame with one row per target (target, accuracy, balanced_accuracy:
            the mean of the per-group accuracies).
        per_group_: DataFrame with one row per group and a column per probe
            (group_probe, label_probe, spurious_probe): its accuracy on that group's
            examples (group_probe is the paper's Fig. 6).

    Examples:
        >>> import numpy as np
        >>> from toolkit.analysis.separability import GroupSeparability
        >>> rng = np.random.default_rng(0)
        >>> labels, spurious = np.repeat([0, 0, 1, 1], 20), np.repeat([0, 1, 0, 1], 20)
        >>> X = np.c_[3.0 * spurious, rng.normal(size=(80, 4))]  # only the spurious attribute is visible
        >>> sep = GroupSeparability(cv=4).fit(X, labels, spurious)
        >>> acc = sep.scores_.set_index("target")["accuracy"]
        >>> float(acc["spurious"]), bool(acc["label"] < 0.7), bool(acc["group"] < 0.7)
        (1.0, True, True)
        >>> sep.per_group_[["group", "spurious_probe"]]
           group  spurious_probe
        0  y0_s0             1.0
        1  y0_s1             1.0
        2  y1_s0             1.0
        3  y1_s1             1.0
    """

    TARGETS = ("group", "label", "spurious")

    def __init__(self, *, cv: int = 5, C: float = 0.1, max_iter: int = 500, random_state: int = 0,
                 targets: tuple[str, ...] = TARGETS) -> None:
        self.cv, self.C, self.max_iter, self.random_state = cv, C, max_iter, random_state
        unknown = [t for t in targets if t not in self.TARGETS]
        if unknown or not targets:
            raise RecordError(f"unknown separability targets {unknown or list(targets)}; "
                              f"valid: {', '.join(self.TARGETS)}")
        self.targets = tuple(targets)

    def fit(self, embeddings: np.ndarray, labels: np.ndarray, spurious: np.ndarray) -> "GroupSeparability":
        X = np.asarray(embeddings, dtype=np.float32)
        labels, spurious = np.asarray(labels), np.asarray(spurious)
        groups = np.array([group_key(y, s) for y, s in zip(labels, spurious)])
        targets = {k: v for k, v in {"group": groups, "label": labels, "spurious": spurious}.items()
                   if k in self.targets}
        min_count = pd.Series(groups).value_counts().min()
        if min_count < self.cv:
            raise RecordError(f"the smallest group has {min_count} examples; need at least cv={self.cv}")
        folds = StratifiedKFold(self.cv, shuffle=True, random_state=self.random_state)
        scores, per_group = [], {}
        for name, y in targets.items():
            model = make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=self.max_iter, tol=1e-3))
            # one BLAS thread: lbfgs's small vector steps are slower threaded (9x here on 2 cores)
            with threadpool_limits(limits=1, user_api="blas"):
                pred = cross_val_predict(model, X, y, cv=folds.split(X, groups))
            correct = pred == y
            accs = {g: float(correct[groups == g].mean()) for g in np.unique(groups)}
            per_group[f"{name}_probe"] = accs
            scores.append({"target": name, "accuracy": float(correct.mean()),
                           "balanced_accuracy": float(np.mean(list(accs.values())))})
        self.scores_ = pd.DataFrame(scores)
        self.per_group_ = pd.DataFrame(per_group).rename_axis("group").reset_index()
        return self


def separability_by_stage(stages, *, cv: int = 5, random_state: int = 0) -> pd.DataFrame:
    """Per-group probe accuracies of one run's embeddings at each stage of finetuning.

    Args:
        stages: (round, stage, n_labels, cache) tuples, as `toolkit.features.pool.stage_caches`
            gives them: the initial weights (round -1), then every saved checkpoint.
        cv: as in `GroupSeparability`.
        random_state: as in `GroupSeparability`.

    Returns:
        GroupSeparability.per_group_ rows with columns stage, round (-1 = initial) and n_labels.

    Raises:
        RecordError: a cache without a spurious attribute.

    Examples:
        A stage is any cache with embeddings, labels and a spurious attribute; here the
        toy world's test split under random weights (the extract_features example's cache),
        as one stage. `toolkit.features.pool.stage_caches(record)` gives a run's stages.

        >>> import toolkit
        >>> from toolkit.analysis.separability import separability_by_stage
        >>> path = toolkit.extract_features("toy_resnet", "toyworld", "test", weights="random", log=None,
        ...                                 dataset_params={"n_train": 240, "n_val": 40, "n_test": 160})
        >>> table = separability_by_stage([(-1, "before finetuning", 0, toolkit.open_cache(path))], cv=4)
        >>> table.columns.tolist()
        ['group', 'group_probe', 'label_probe', 'spurious_probe', 'stage', 'round', 'n_labels']
        >>> table[["stage", "round", "group"]]
                       stage  round  group
        0  before finetuning     -1  y0_s0
        1  before finetuning     -1  y0_s1
        2  before finetuning     -1  y1_s0
        3  before finetuning     -1  y1_s1
    """
    out = []
    for round_index, stage, n_labels, cache in stages:
        if cache.spurious is None:
            raise RecordError(f"{cache.fingerprint.get('dataset')} has no spurious attribute: group separability "
                              "needs one")
        sep = GroupSeparability(cv=cv, random_state=random_state).fit(cache.embeddings, cache.labels, cache.spurious)
        out.append(sep.per_group_.assign(stage=stage, round=round_index, n_labels=n_labels))
    return pd.concat(out, ignore_index=True)
