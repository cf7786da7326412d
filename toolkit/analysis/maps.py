"""2-D embedding maps (paper Fig. 13): t-SNE (openTSNE, default) or UMAP after a PCA reduction."""
from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA

from toolkit.errors import RecordError


class EmbeddingMap:
    """Seeded 2-D map of embeddings.

    Args:
        method: "tsne" (openTSNE) or "umap" (umap-learn; compiles with numba on first use,
            tens of seconds per process).
        pca_components: PCA dimensions before the map (default 50; None or rows with fewer
            dimensions: no PCA).
        perplexity: t-SNE perplexity (default 30, capped at (n - 1) / 3 for a small set);
            UMAP's n_neighbors is perplexity // 2.
        random_state: seed for PCA and the map.
        n_jobs: t-SNE threads (default 1).

    Attributes:
        embedding_: the map, (n, 2), one row per embedding row (set by `fit(embeddings)`,
            which returns the estimator).

    Examples:
        >>> import numpy as np
        >>> from toolkit.analysis.maps import EmbeddingMap
        >>> rng = np.random.default_rng(0)
        >>> X = np.concatenate([c + 0.3 * rng.normal(size=(20, 10)) for c in (0.0, 3.0)])  # two clusters
        >>> xy = EmbeddingMap(perplexity=10).fit(X).embedding_
        >>> xy.shape, np.allclose(xy, EmbeddingMap(perplexity=10).fit(X).embedding_)  # seeded
        ((40, 2), True)
        >>> d = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.diag(np.full(40, np.inf))
        >>> bool((d.argmin(axis=1) // 20 == np.arange(40) // 20).all())  # each point's neighbour is of its cluster
        True
    """

    def __init__(self, *, method: str = "tsne", pca_components: int | None = 50, perplexity: float = 30.0,
                 random_state: int = 0, n_jobs: int = 1) -> None:
        if method not in ("tsne", "umap"):
            raise RecordError(f"unknown map method {method!r}; valid: 'tsne', 'umap'")
        self.method, self.pca_components, self.perplexity = method, pca_components, perplexity
        self.random_state, self.n_jobs = random_state, n_jobs

    def fit(self, embeddings: np.ndarray) -> "EmbeddingMap":
        X = np.asarray(embeddings, dtype=np.float32)
        if self.pca_components and X.shape[1] > self.pca_components:
            X = PCA(self.pca_components, random_state=self.random_state).fit_transform(X)
        if self.method == "tsne":
            from openTSNE import TSNE

            emb = TSNE(perplexity=min(self.perplexity, (len(X) - 1) / 3), random_state=self.random_state,
                       n_jobs=self.n_jobs, verbose=False).fit(X)
            self.embedding_ = np.asarray(emb)
        else:
            try:
                import umap
            except ImportError as err:
                raise ImportError("UMAP maps need umap-learn: pip install umap-learn") from err
            self.embedding_ = umap.UMAP(n_neighbors=max(2, int(self.perplexity // 2)),
                                        random_state=self.random_state).fit_transform(X)
        return self
