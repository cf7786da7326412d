"""Neighbourhoods of acquired points in an embedding (faiss; exact below a size threshold)."""
from __future__ import annotations

import numpy as np
import pandas as pd


def _faiss():
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - faiss-cpu is a core dependency
        raise ImportError("neighbourhoods need faiss: pip install faiss-cpu (or faiss-gpu)") from err
    return faiss


_GPU_RESOURCES = None


def _gpu_resources():
    """One faiss GPU resources object per process: each holds its own streams and a
    scratch allocation of several hundred MB, so a new one per fit wastes both."""
    global _GPU_RESOURCES
    if _GPU_RESOURCES is None:
        _GPU_RESOURCES = _faiss().StandardGpuResources()
    return _GPU_RESOURCES


class NeighbourIndex:
    """k-nearest-neighbour search (L2) over embeddings.

    Exact (IndexFlatL2) up to `exact_threshold` rows; above it an IVF index with
    `nlist` cells probing `nprobe` of them. Uses the GPU build of faiss when present.
    `fit(embeddings, ids)` builds the index over the rows (returning the estimator);
    `query(queries, k)` gives the (distances, ids) of each query's k nearest rows, nearest
    first, where distances are *squared* L2 distances (faiss's).

    Args:
        exact_threshold: the most rows searched exactly (default 200,000).
        nlist: IVF cells above the threshold (None: 4 sqrt(n)).
        nprobe: cells searched per query in an IVF index (default 16).
        use_gpu: use a GPU when faiss has one (default True).

    Attributes:
        index_: the faiss index.
        ids_: the id of each row, as given to `fit`; `query` returns these.

    Examples:
        >>> import numpy as np
        >>> from toolkit.analysis.neighbours import NeighbourIndex
        >>> X = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.2], [5.0, 5.0], [5.1, 5.0], [5.0, 5.3]])
        >>> index = NeighbourIndex().fit(X, ids=[10, 11, 12, 20, 21, 22])
        >>> distances, ids = index.query(X[[0, 3]], 3)
        >>> ids.tolist(), distances.astype(float).round(3).tolist()  # each row is its own nearest; squared
        ([[10, 11, 12], [20, 21, 22]], [[0.0, 0.01, 0.04], [0.0, 0.01, 0.09]])
    """

    def __init__(self, *, exact_threshold: int = 200_000, nlist: int | None = None, nprobe: int = 16,
                 use_gpu: bool = True) -> None:
        self.exact_threshold, self.nlist, self.nprobe, self.use_gpu = exact_threshold, nlist, nprobe, use_gpu

    def fit(self, embeddings: np.ndarray, ids: np.ndarray) -> "NeighbourIndex":
        faiss = _faiss()
        X = np.ascontiguousarray(embeddings, dtype=np.float32)
        d = X.shape[1]
        gpu = self.use_gpu and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
        if len(X) <= self.exact_threshold:
            index = faiss.IndexFlatL2(d)
        else:
            nlist = self.nlist or int(4 * np.sqrt(len(X)))
            index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
        if gpu:  # moved before training, so the IVF's k-means runs on the GPU too
            index = faiss.index_cpu_to_gpu(_gpu_resources(), 0, index)
        if not index.is_trained:
            index.train(X)
        if hasattr(index, "nprobe"):
            index.nprobe = self.nprobe
        index.add(X)
        self.index_, self.ids_ = index, np.asarray(ids)
        return self

    def query(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(distances, neighbour ids), each (n_queries, k), nearest first."""
        dist, idx = self.index_.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return dist, self.ids_[idx]


def neighbourhoods(index: NeighbourIndex, embeddings: np.ndarray, ids: np.ndarray, attributes: pd.DataFrame,
                   query_ids: np.ndarray, *, k: int = 10, label_column: str = "y",
                   spurious_column: str | None = "place") -> pd.DataFrame:
    """For each query id: its k nearest other pool points, their groups, and how mixed they are.

    Columns: id, neighbour_ids, same_label (share of neighbours with the query's label),
    same_spurious, group_mix (number of distinct groups among the neighbours).

    Args:
        index: a `NeighbourIndex` fitted on `embeddings` with `ids`.
        embeddings: the pool's rows (n, d), one per id.
        ids: the pool's ids (n,), in the order of `embeddings`.
        attributes: one row per pool id (indexed by id), with `label_column` and
            `spurious_column`, e.g. a feature cache's `attributes` indexed by its ids.
        query_ids: the ids whose neighbourhoods are wanted (e.g. a run's first acquisitions).
        k: neighbours per query, the query itself excluded (default 10).
        label_column: the label's column in `attributes` (default "y").
        spurious_column: the spurious attribute's column (default "place"); None leaves out
            same_spurious and group_mix.

    Returns:
        A DataFrame, one row per query id, with the columns above.

    Examples:
        >>> import numpy as np, pandas as pd
        >>> from toolkit.analysis.neighbours import NeighbourIndex, neighbourhoods
        >>> X = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.2], [5.0, 5.0], [5.1, 5.0], [5.0, 5.3]])
        >>> ids = np.array([10, 11, 12, 20, 21, 22])
        >>> attributes = pd.DataFrame({"y": [0, 0, 1, 1, 1, 0], "place": [0, 1, 0, 1, 1, 1]}, index=ids)
        >>> neighbourhoods(NeighbourIndex().fit(X, ids), X, ids, attributes, query_ids=[10, 20], k=2)
           id neighbour_ids  same_label  same_spurious  group_mix
        0  10      [11, 12]         0.5            0.5          2
        1  20      [21, 22]         0.5            1.0          2
    """
    pos = pd.Series(np.arange(len(ids)), index=ids)
    q = embeddings[pos[query_ids].to_numpy()]
    _, nbr = index.query(q, k + 1)
    rows = []
    for qid, row in zip(query_ids, nbr):
        row = [int(i) for i in row if i != qid][:k]
        a = attributes.loc[row]
        me = attributes.loc[qid]
        out = {"id": int(qid), "neighbour_ids": row,
               "same_label": float((a[label_column] == me[label_column]).mean())}
        if spurious_column:
            out["same_spurious"] = float((a[spurious_column] == me[spurious_column]).mean())
            out["group_mix"] = int(a.groupby([label_column, spurious_column]).ngroups)
        rows.append(out)
    return pd.DataFrame(rows)
