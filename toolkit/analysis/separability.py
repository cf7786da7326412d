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
    "spurious" alone. Fitted attributes:
        scores_: DataFrame with one row per target: accuracy and balanced accuracy.
        per_group_: DataFrame with one row per group and a column per probe
            (group_probe, label_probe, spurious_probe): its accuracy on that group's
            examples (group_probe is the paper's Fig. 6).

    Args:
        cv: folds (stratified, shuffled with `random_state`).
        C: inverse L2 strength of the logistic regression (0.1: features are standardised
            and many; a stronger penalty also makes the fits converge fast).
        max_iter: lbfgs iterations per fit.
    """

    def __init__(self, *, cv: int = 5, C: float = 0.1, max_iter: int = 500, random_state: int = 0) -> None:
        self.cv, self.C, self.max_iter, self.random_state = cv, C, max_iter, random_state

    def fit(self, embeddings: np.ndarray, labels: np.ndarray, spurious: np.ndarray) -> "GroupSeparability":
        X = np.asarray(embeddings, dtype=np.float32)
        labels, spurious = np.asarray(labels), np.asarray(spurious)
        groups = np.array([group_key(y, s) for y, s in zip(labels, spurious)])
        targets = {"group": groups, "label": labels, "spurious": spurious}
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
    """
    out = []
    for round_index, stage, n_labels, cache in stages:
        if cache.spurious is None:
            raise RecordError(f"{cache.fingerprint.get('dataset')} has no spurious attribute: group separability "
                              "needs one")
        sep = GroupSeparability(cv=cv, random_state=random_state).fit(cache.embeddings, cache.labels, cache.spurious)
        out.append(sep.per_group_.assign(stage=stage, round=round_index, n_labels=n_labels))
    return pd.concat(out, ignore_index=True)
