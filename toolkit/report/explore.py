"""An explorer of the pool: which examples a run asked for, and what lies around them (paper Fig. 13).

`PoolView` (estimator-style, no widgets) fits a 2-D map (t-SNE or UMAP, cached on disk) of
one run's pool embedding. The map covers the whole pool or a seeded sample of it, plus every
point that the given runs acquired. The view answers what a display needs: the points acquired
up to a round, a point's facts, the table of mapped points (`table`, what a selection returns),
k nearest neighbours of a point or of a selection's centroid (faiss, in the full embedding) and
thumbnails, made one at a time when asked for.

`Explorer` (`toolkit.report.explore_widget`, re-exported here) is the notebook widget: one
jupyter-scatter map per run with lasso and box selection, linked by id, colour by any column,
a round slider, and thumbnails and neighbours of the selection. `explorer_html` gives the HTML
report's static view: plotly figures with a round slider and plotly's own hover text, box and
lasso selection, and a small inline script for what plotly cannot do (thumbnails, neighbours).
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from toolkit._util.paths import default_dir
from toolkit.errors import RecordError
from toolkit.record import RunRecord

# What plotly cannot do in a static page: show an image on hover and list a clicked point's
# neighbours. T: id -> thumbnail data URI, N: id -> neighbour ids (filled in by explorer_html).
_EXPLORER_JS = """<script>(function(){
/*DATA*/
const img = document.getElementById('explore-thumb'), nb = document.getElementById('explore-neighbours');
function pointId(e) { return e.points && e.points.length ? e.points[0].customdata : null; }
document.querySelectorAll('[id^=explore-]').forEach(function(d) {
  if (!d.on) return;  // only the plotly maps
  d.on('plotly_hover', function(e) { const i = pointId(e); if (i !== null && T[i]) img.src = T[i]; });
  d.on('plotly_click', function(e) {
    const i = pointId(e); if (i === null) return;
    nb.innerHTML = '';
    (N[i] || []).forEach(function(n) {
      const m = document.createElement('img'); m.className = 'thumb'; m.title = 'id ' + n;
      if (T[n]) m.src = T[n];
      nb.appendChild(m);
    });
  });
});
})();</script>"""

GROUP_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def thumbnail_bytes(img_chw, size: int, fmt: str = "png") -> bytes:
    """A uint8 CHW image as `size` x `size` PNG (lossless) or WebP (lossy, quality 80: about a
    third of the bytes, for pages that carry thousands) bytes."""
    from PIL import Image

    im = Image.fromarray(np.asarray(img_chw).transpose(1, 2, 0))
    if max(im.size) != size:
        im = im.resize((size, size), Image.BILINEAR)
    buf = io.BytesIO()
    if fmt == "webp":
        im.save(buf, format="WEBP", quality=80)
    else:
        im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def seed_margins(record: RunRecord) -> pd.Series | None:
    """How far each pool point lay from the decision boundary of the model trained on the run's
    seed set: the gap between its two largest logits when that model scored the pool (round 0),
    indexed by id. None for runs that did not keep their pool outputs (`al.save_pool_outputs`)."""
    if not (record.path / "pool_outputs" / "round_000.h5").exists():
        return None
    out = record.pool_outputs(0)
    logits = np.sort(out.filter(like="logit_").to_numpy(), axis=1)
    return pd.Series(logits[:, -1] - logits[:, -2], index=pd.Index(out["id"].to_numpy(), name="id"))


class PoolView:
    """A pool's 2-D map with the acquisitions of one or more runs over it.

    `fit()` maps the pool (and returns the view); then `acquired_upto(run, round)`,
    `describe(id)`, `table()`, `neighbours(id)`, `centroid_neighbours(ids)` and `thumbnail(id)`
    answer a display's questions. The map is fitted once per (embedding, method, seed, points)
    and kept under `cache_dir`; neighbours search the full embedding with faiss; thumbnails are
    made one at a time, when asked for, so a pool of 100,000 points costs nothing up front.

    Args:
        records: the runs to show; they must share one pool (same dataset and ids).
        map_run: the run whose model's pool embedding is mapped (name; default the first
            pretrained one, else the first). Every run is drawn on this one map.
        method: "tsne" or "umap" (`analysis.maps.EmbeddingMap`; t-SNE switches to openTSNE's
            FFT-accelerated gradients from 10,000 points).
        max_points: pool points on the map, besides the acquired ones (a seeded sample;
            default 1500); None maps the whole pool.
        k: neighbours per point (default 8).
        thumb_px: thumbnail side in pixels (default 48).
        random_state: the seed of the sample and of the map.
        cache_dir: where fitted maps are kept ("auto": `<cache>/maps`; None: not cached).
        n_jobs: threads of the map's fit (default 1).

    Attributes:
        points_: DataFrame indexed by id, one row per mapped point: x, y, label, spurious,
            group ("y1_s0") and row (its position in the pool).
        attributes_: the pool's attribute table (the dataset's columns), for the mapped points.
        acquired_: {run name: DataFrame(id, round, score)}, each run's acquisitions.
        seed_ids_: {run name: the ids of its seed set}.
        margins_: {run name: `seed_margins`}, for the runs that kept their pool outputs.
        rounds_: the last round any run acquired in.
        map_run_: the name of the run whose embedding is mapped.
        embeddings_: the pool's embeddings (n, d), float32.
        images_: the pool's images (None for probe runs).
        class_names_: the class names, by label.
        index_: a `NeighbourIndex` over the whole pool's embeddings.

    Examples:
        >>> import toolkit
        >>> from toolkit.report.explore import PoolView
        >>> runs = [toolkit.load_run("altk-doc/loop"), toolkit.load_run("altk-doc/run")]  # the loop and run examples'
        >>> view = PoolView(runs, max_points=50).fit()  # extracts the map run's pool embedding on first use
        >>> view.map_run_, view.rounds_, {run: len(a) for run, a in view.acquired_.items()}
        ('loop', 0, {'loop': 5, 'run': 5})
        >>> view.points_.columns.tolist(), len(view.embeddings_)
        (['x', 'y', 'label', 'spurious', 'group', 'row'], 240)
        >>> first = int(view.acquired_["loop"]["id"].iloc[0])
        >>> sorted(view.describe(first)), view.describe(first)["loop"]["round"]
        (['group', 'id', 'label', 'loop', 'spurious'], 0)
        >>> view.neighbours(first, k=3).columns.tolist(), view.thumbnail(first)[:4]
        (['id', 'distance'], b'\\x89PNG')
        >>> view.table().loc[[first], ["group", "label", "round:loop", "acquired_by"]].columns.tolist()
        ['group', 'label', 'round:loop', 'acquired_by']
        >>> len(view.centroid_neighbours(view.acquired_["loop"]["id"], k=4))
        4
    """

    def __init__(self, records: list[RunRecord], *, map_run: str | None = None, method: str = "tsne",
                 max_points: int | None = 1500, k: int = 8, thumb_px: int = 48, random_state: int = 0,
                 cache_dir: str | Path | None = "auto", n_jobs: int = 1) -> None:
        if not records:
            raise RecordError("PoolView needs at least one run record")
        self.records, self.map_run, self.method = list(records), map_run, method
        self.max_points, self.k, self.thumb_px, self.random_state = max_points, k, thumb_px, random_state
        self.cache_dir, self.n_jobs = default_dir(cache_dir, "maps"), n_jobs

    def _map_record(self) -> RunRecord:
        if self.map_run is not None:
            for rec in self.records:
                if rec.name == self.map_run:
                    return rec
            raise RecordError(f"no run {self.map_run!r} among {', '.join(r.name for r in self.records)}")
        pretrained = [r for r in self.records if r.weights != "random"]
        return (pretrained or self.records)[0]

    def fit(self, cache=None, images=None) -> "PoolView":
        """Map the pool. `cache` (a FeatureCache, or anything with its ids, embeddings, labels,
        spurious, attributes and class_names) and `images` (indexed by pool row, CHW uint8)
        default to the map run's own pool embedding (extracted on first use) and dataset images."""
        from toolkit.analysis.neighbours import NeighbourIndex

        rec = self._map_record()
        if cache is None:
            from toolkit.features.pool import pool_features

            cache, images = pool_features(rec)
        self.map_run_ = rec.name
        self.embeddings_, self.images_ = np.asarray(cache.embeddings, dtype=np.float32), images
        self.class_names_ = tuple(cache.class_names)
        row = pd.Series(np.arange(len(cache.ids)), index=cache.ids)
        self.acquired_, self.seed_ids_, self.margins_ = {}, {}, {}
        for r in self.records:
            acq = r.acquisitions[["id", "round", "score"]] if len(r.acquisitions) else pd.DataFrame(
                {"id": pd.Series(dtype=int), "round": pd.Series(dtype=int), "score": pd.Series(dtype=float)})
            self.acquired_[r.name] = acq[acq["id"].isin(row.index)].reset_index(drop=True)
            self.seed_ids_[r.name] = np.asarray(r.seed_set["id"] if len(r.seed_set) else [], dtype=np.int64)
            margins = seed_margins(r)
            if margins is not None:
                self.margins_[r.name] = margins
        acquired_rows = row[np.unique(np.concatenate([a["id"].to_numpy() for a in self.acquired_.values()]))]
        if self.max_points is None or self.max_points >= len(cache.ids):
            sample = np.arange(len(cache.ids))
        else:
            rng = np.random.default_rng(self.random_state)
            sample = np.union1d(rng.choice(len(cache.ids), self.max_points, replace=False), acquired_rows.to_numpy())
        coords = self._coords(cache, sample)
        labels = np.asarray(cache.labels)[sample]
        spurious = (np.asarray(cache.spurious)[sample] if cache.spurious is not None
                    else np.zeros(len(sample), dtype=int))
        index = pd.Index(np.asarray(cache.ids)[sample], name="id")
        self.points_ = pd.DataFrame({"x": coords[:, 0], "y": coords[:, 1], "label": labels, "spurious": spurious,
                                     "group": [f"y{a}_s{b}" for a, b in zip(labels, spurious)], "row": sample},
                                    index=index)
        attributes = getattr(cache, "attributes", None)
        self.attributes_ = (attributes.iloc[sample].set_axis(index) if attributes is not None
                            else pd.DataFrame(index=index))
        self.rounds_ = int(max((a["round"].max() for a in self.acquired_.values() if len(a)), default=0))
        self.index_ = NeighbourIndex().fit(self.embeddings_, cache.ids)
        self.ids_, self.row_of_ = np.asarray(cache.ids), row
        return self

    def _coords(self, cache, sample: np.ndarray) -> np.ndarray:
        """The map of `sample`'s embeddings, read from or written to the map cache."""
        from toolkit.analysis.maps import EmbeddingMap
        from toolkit.features.cache import fingerprint_digest

        key = hashlib.sha256(json.dumps([fingerprint_digest(cache.fingerprint), self.method, self.random_state,
                                         sample.tolist()]).encode()).hexdigest()[:16]
        path = Path(self.cache_dir) / f"{key}.npy" if self.cache_dir is not None else None
        if path is not None and path.exists():
            return np.load(path)
        coords = EmbeddingMap(method=self.method, random_state=self.random_state, n_jobs=self.n_jobs).fit(
            np.asarray(cache.embeddings)[sample]).embedding_
        if path is not None:
            from toolkit.data.image_files import save_array_atomic

            save_array_atomic(path, coords)
        return coords

    def acquired_upto(self, run: str, round_index: int) -> pd.DataFrame:
        """The points `run` acquired in rounds 0..`round_index`, with their map position."""
        a = self.acquired_[run]
        a = a[a["round"] <= round_index]
        return a.join(self.points_[["x", "y", "group"]], on="id")

    def describe(self, point_id: int) -> dict:
        """A point's facts: id, class name, spurious attribute, group, and per run the round
        it was acquired in and its acquisition score (absent if that run did not pick it)."""
        p = self.points_.loc[point_id]
        out = {"id": int(point_id), "label": self.class_names_[int(p["label"])], "spurious": int(p["spurious"]),
               "group": p["group"]}
        for run, a in self.acquired_.items():
            hit = a[a["id"] == point_id]
            if len(hit):
                out[run] = {"round": int(hit["round"].iloc[0]), "score": float(hit["score"].iloc[0])}
        return out

    def table(self, runs: list[str] | None = None) -> pd.DataFrame:
        """One row per mapped point, indexed by id: what a selection returns.

        Columns: x, y, group, label (the class name), the pool's attribute columns (the
        dataset's table: label, spurious attribute and any others), then per run (default every
        run): "round:<run>", the round after which it acquired the point (-1: its seed set;
        <NA>: never labelled) and, where the run kept its pool outputs, "margin:<run>", the
        point's `seed_margins` (its distance to the seed-set model's decision boundary, in
        logits); last, "acquired_by": the runs that acquired it, comma-separated.
        """
        runs = list(self.acquired_) if runs is None else list(runs)
        pts = self.points_
        out = pd.DataFrame({"x": pts["x"], "y": pts["y"], "group": pts["group"],
                            "label": [self.class_names_[int(v)] for v in pts["label"]]}, index=pts.index)
        out = out.join(self.attributes_.drop(columns=[c for c in self.attributes_ if c in out], errors="ignore"))
        acquired_by = pd.Series("", index=pts.index)
        for run in runs:
            rounds = pd.Series(pd.NA, index=pts.index, dtype="Int64")
            rounds[rounds.index.isin(self.seed_ids_.get(run, []))] = -1
            a = self.acquired_[run].drop_duplicates("id").set_index("id")["round"]
            a = a[a.index.isin(pts.index)]
            rounds[a.index] = a.to_numpy()
            out[f"round:{run}"] = rounds
            if run in self.margins_:
                out[f"margin:{run}"] = self.margins_[run].reindex(pts.index).to_numpy(dtype=float)
            hit = pts.index.isin(a.index)
            acquired_by[hit] = acquired_by[hit] + run + ","
        out["acquired_by"] = acquired_by.str.rstrip(",")
        return out

    def neighbours(self, point_id: int, k: int | None = None) -> pd.DataFrame:
        """The point's k nearest pool points in the full embedding (itself excluded): id and
        distance (squared L2, as faiss gives it), nearest first."""
        k = k or self.k
        row = self.row_of_[point_id]
        dist, ids = self.index_.query(self.embeddings_[row:row + 1], k + 1)
        keep = ids[0] != point_id
        return pd.DataFrame({"id": ids[0][keep][:k], "distance": dist[0][keep][:k]})

    def centroid_neighbours(self, point_ids, k: int | None = None) -> pd.DataFrame:
        """The k pool points nearest to the centroid of `point_ids` in the full embedding (the
        points themselves included): id and distance (squared L2), nearest first."""
        k = k or self.k
        rows = self.row_of_.reindex(np.asarray(point_ids))
        if rows.isna().any():
            missing = rows.index[rows.isna()].tolist()
            raise RecordError(f"ids {missing[:5]}{' ...' if len(missing) > 5 else ''} are not in the pool "
                              f"({len(self.ids_)} ids); pass ids from the view's table")
        if not len(rows):
            raise RecordError("centroid_neighbours needs at least one id")
        centroid = self.embeddings_[rows.to_numpy(dtype=np.int64)].mean(axis=0, keepdims=True)
        dist, ids = self.index_.query(centroid, k)
        return pd.DataFrame({"id": ids[0], "distance": dist[0]})

    def thumbnail(self, point_id: int, size: int | None = None, fmt: str = "png") -> bytes | None:
        """The point's image as `thumbnail_bytes` (None for probe runs, which have no images)."""
        if self.images_ is None:
            return None
        return thumbnail_bytes(self.images_[self.row_of_[point_id]], size or self.thumb_px, fmt)

    def group_of(self, point_id: int) -> str:
        if point_id in self.points_.index:
            return str(self.points_.at[point_id, "group"])
        return ""


def _add_groups(fig, points: pd.DataFrame, hover: pd.Series | None = None) -> None:
    """The map's points, one trace per group, each point's id as its customdata and its facts
    as plotly's own hover text."""
    for i, (group, d) in enumerate(points.groupby("group")):
        text = hover.reindex(d.index).to_numpy() if hover is not None else None
        fig.add_scattergl(x=d["x"], y=d["y"], customdata=d.index.to_numpy(), mode="markers", name=group,
                          marker=dict(size=4, opacity=0.6, color=GROUP_COLOURS[i % len(GROUP_COLOURS)]),
                          hovertext=text, hoverinfo="text" if text is not None else "none")


def default_runs(view: PoolView, runs: list[str] | None) -> list[str]:
    """`runs` checked against the view's, or by default the first uncertainty run of each weights
    kind (pretrained vs unpretrained, as the paper compares), else the first two runs."""
    if runs is not None:
        unknown = [r for r in runs if r not in view.acquired_]
        if unknown:
            raise RecordError(f"unknown run(s) {unknown}; runs: {', '.join(view.acquired_)}")
        return list(runs)
    names = list(view.acquired_)
    # the first uncertainty run of each weights kind: pretrained vs unpretrained, as the paper compares
    chosen = {}
    for rec in view.records:
        cfg = rec.run_config
        if cfg["al"]["strategy"] != "random":
            chosen.setdefault(str(cfg["model"]["weights"]), rec.name)
    return list(chosen.values())[:2] or names[:2]


def hover_facts(view: PoolView, runs: list[str]) -> pd.Series:
    """Each mapped point's facts as one line of text, indexed by id: "id 12: bird, spurious 1
    (y0_s1); run-a: round 0, score 0.412"."""
    pts = view.points_
    text = pd.Series([f"id {i}: {view.class_names_[int(lab)]}, spurious {int(sp)} ({g})" for i, lab, sp, g in
                      zip(pts.index, pts["label"], pts["spurious"], pts["group"])], index=pts.index)
    for run in runs:
        a = view.acquired_[run].drop_duplicates("id").set_index("id")
        a = a[a.index.isin(pts.index)]
        text[a.index] = text[a.index] + [f"; {run}: round {r}, score {sc:.3f}" for r, sc in zip(a["round"], a["score"])]
    return text


def explorer_html(view: PoolView, runs: list[str] | None = None, *, max_thumbnails: int = 2000,
                  thumb_px: int = 32) -> str:
    """The explorer as HTML for the report: per run, a plotly figure of the map with a round
    slider, plotly's hover text (the point's facts) and its box and lasso selection; hovering
    shows a thumbnail and clicking shows the neighbours (from an inline table of at most
    `max_thumbnails` WebP thumbnails of `thumb_px`, the acquired points first).
    Needs plotly.js on the page already."""
    import plotly.graph_objects as go

    runs = default_runs(view, runs)
    pts = view.points_
    acquired = pts.index.isin(np.concatenate([a["id"].to_numpy() for a in view.acquired_.values()]))
    shown = np.concatenate([pts.index[acquired], pts.index[~acquired]])[:max_thumbnails]
    shown_set = {int(i) for i in shown}
    # neighbours in the full embedding, one faiss query for all; those off the map have no thumbnail
    _, near = view.index_.query(view.embeddings_[pts.loc[shown, "row"].to_numpy()], view.k + 1)
    thumbs, nbrs = {}, {}
    for pid, ids in zip(shown, near):
        pid = int(pid)
        small = view.thumbnail(pid, thumb_px, "webp")
        if small is not None:
            thumbs[pid] = "data:image/webp;base64," + base64.b64encode(small).decode()
        nbrs[pid] = [int(i) for i in ids if int(i) != pid and int(i) in shown_set][:view.k]
    hover = hover_facts(view, runs)
    parts = []
    for j, run in enumerate(runs):
        fig = go.Figure()
        _add_groups(fig, pts, hover)
        n_groups = len(fig.data)
        for r in range(view.rounds_ + 1):  # one trace per round, shown up to the slider's round
            a = view.acquired_upto(run, r)
            a = a[a["round"] == r]
            fig.add_scatter(x=a["x"], y=a["y"], customdata=a["id"].to_numpy(), mode="markers", name=f"round {r}",
                            marker=dict(symbol="star", size=10, color="black"), showlegend=False,
                            hovertext=hover.reindex(a["id"]).to_numpy(), hoverinfo="text")
        steps = [dict(method="restyle", label=str(r),
                      args=[{"visible": [True] * n_groups + [k <= r for k in range(view.rounds_ + 1)]}])
                 for r in range(view.rounds_ + 1)]
        fig.update_layout(title=run, width=520, height=480,
                          template="plotly_white", margin=dict(l=10, r=10, t=40, b=10),
                          xaxis=dict(showticklabels=False), yaxis=dict(showticklabels=False),
                          sliders=[dict(active=view.rounds_, steps=steps, currentvalue=dict(prefix="round "))])
        div = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"explore-{j}",
                          config={"displaylogo": False, "modeBarButtonsToRemove": ["toImage", "autoScale2d"]})
        parts.append(f"<div style='display:inline-block'>{div}</div>")
    panel = ("<div style='display:flex;gap:1em;align-items:flex-start'><img id='explore-thumb' class='thumb' "
             "style='width:96px;height:96px'><div class='note'>hover a point for its image, click it for its "
             "neighbours; box and lasso select from the map's toolbar</div></div><div id='explore-neighbours'></div>")
    data = f"const T = {json.dumps(thumbs)}, N = {json.dumps(nbrs)};"
    script = _EXPLORER_JS.replace("/*DATA*/", data)
    return "".join(parts) + panel + script


from toolkit.report.explore_widget import Explorer  # noqa: E402  the widget, re-exported (it imports this module lazily)

__all__ = ["Explorer", "PoolView", "explorer_html", "hover_facts", "seed_margins", "thumbnail_bytes"]
__test__ = {"Explorer": Explorer}  # its example runs with this module's (tests/test_architecture.py DOCTESTS)
