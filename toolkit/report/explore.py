"""An explorer of the pool: which examples a run asked for, and what lies around them (paper Fig. 13).

`PoolView` (estimator-style, no widgets) fits a 2-D map (t-SNE or UMAP, cached on disk) of
one run's pool embedding. The map covers a sample of the pool plus every point that the given
runs acquired. The view answers what a display needs: the points acquired up to a round, a
point's facts, its k nearest neighbours (faiss, in the full embedding) and thumbnails.

`Explorer` puts that in ipywidgets: one plotly `FigureWidget` per run, side by side on the
same map, and a slider over rounds. Hovering a point shows its thumbnail and facts, and
clicking one shows its neighbours. `explorer_html` gives the same view for the HTML report:
static plotly figures with a slider, and a small inline script for thumbnails and neighbours.
"""
from __future__ import annotations

import base64
import hashlib
import html
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from toolkit._util.paths import default_dir
from toolkit.errors import RecordError
from toolkit.record import RunRecord

# The report's explorer: hover shows a point's thumbnail and facts, click lists its neighbours.
# T: id -> thumbnail data URI, F: id -> facts, N: id -> neighbour ids (filled in by explorer_html).
_EXPLORER_JS = """<script>(function(){
/*DATA*/
const img = document.getElementById('explore-thumb'), info = document.getElementById('explore-info'),
      nb = document.getElementById('explore-neighbours');
function pointId(e) { return e.points && e.points.length ? e.points[0].customdata : null; }
document.querySelectorAll('[id^=explore-]').forEach(function(d) {
  if (!d.on) return;  // only the plotly maps
  d.on('plotly_hover', function(e) {
    const i = pointId(e); if (i === null) return;
    if (T[i]) img.src = T[i];
    info.textContent = F[i] || ('id ' + i);
  });
  d.on('plotly_click', function(e) {
    const i = pointId(e); if (i === null) return;
    nb.innerHTML = '';
    (N[i] || []).forEach(function(n) {
      const m = document.createElement('img'); m.className = 'thumb'; m.title = F[n] || n;
      if (T[n]) m.src = T[n];
      nb.appendChild(m);
    });
  });
});
})();</script>"""

_GROUP_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


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


class PoolView:
    """A pool's 2-D map with the acquisitions of one or more runs over it.

    `fit()` maps the pool (and returns the view); then `acquired_upto(run, round)`,
    `describe(id)`, `neighbours(id)` and `thumbnail(id)` answer a display's questions.

    Args:
        records: the runs to show; they must share one pool (same dataset and ids).
        map_run: the run whose model's pool embedding is mapped (name; default the first
            pretrained one, else the first). Every run is drawn on this one map.
        method: "tsne" or "umap" (`analysis.maps.EmbeddingMap`).
        max_points: pool points on the map, besides the acquired ones (a seeded sample;
            default 1500).
        k: neighbours per point (default 8).
        thumb_px: thumbnail side in pixels (default 48).
        random_state: the seed of the sample and of the map.
        cache_dir: where fitted maps are kept ("auto": `<cache>/maps`; None: not cached).

    Attributes:
        points_: DataFrame indexed by id, one row per mapped point: x, y, label, spurious,
            group ("y1_s0") and row (its position in the pool).
        acquired_: {run name: DataFrame(id, round, score)}, each run's acquisitions.
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
        (['id', 'distance'], b'\x89PNG')
    """

    def __init__(self, records: list[RunRecord], *, map_run: str | None = None, method: str = "tsne",
                 max_points: int = 1500, k: int = 8, thumb_px: int = 48, random_state: int = 0,
                 cache_dir: str | Path | None = "auto") -> None:
        if not records:
            raise RecordError("PoolView needs at least one run record")
        self.records, self.map_run, self.method = list(records), map_run, method
        self.max_points, self.k, self.thumb_px, self.random_state = max_points, k, thumb_px, random_state
        self.cache_dir = default_dir(cache_dir, "maps")

    def _map_record(self) -> RunRecord:
        if self.map_run is not None:
            for rec in self.records:
                if rec.name == self.map_run:
                    return rec
            raise RecordError(f"no run {self.map_run!r} among {', '.join(r.name for r in self.records)}")
        pretrained = [r for r in self.records if r.weights != "random"]
        return (pretrained or self.records)[0]

    def fit(self, cache=None, images=None) -> "PoolView":
        """Map the pool. `cache` (a FeatureCache) and `images` default to the map run's own
        pool embedding (extracted on first use) and dataset images."""
        from toolkit.analysis.neighbours import NeighbourIndex

        rec = self._map_record()
        if cache is None:
            from toolkit.features.pool import pool_features

            cache, images = pool_features(rec)
        self.map_run_ = rec.name
        self.embeddings_, self.images_ = np.asarray(cache.embeddings, dtype=np.float32), images
        self.class_names_ = tuple(cache.class_names)
        row = pd.Series(np.arange(len(cache.ids)), index=cache.ids)
        self.acquired_ = {}
        for r in self.records:
            acq = r.acquisitions[["id", "round", "score"]]
            self.acquired_[r.name] = acq[acq["id"].isin(row.index)].reset_index(drop=True)
        acquired_rows = row[np.unique(np.concatenate([a["id"].to_numpy() for a in self.acquired_.values()]))]
        rng = np.random.default_rng(self.random_state)
        sample = np.union1d(rng.choice(len(cache.ids), min(self.max_points, len(cache.ids)), replace=False),
                            acquired_rows.to_numpy())
        coords = self._coords(cache, sample)
        labels = cache.labels[sample]
        spurious = cache.spurious[sample] if cache.spurious is not None else np.zeros(len(sample), dtype=int)
        self.points_ = pd.DataFrame({"x": coords[:, 0], "y": coords[:, 1], "label": labels, "spurious": spurious,
                                     "group": [f"y{a}_s{b}" for a, b in zip(labels, spurious)], "row": sample},
                                    index=pd.Index(cache.ids[sample], name="id"))
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
        coords = EmbeddingMap(method=self.method, random_state=self.random_state).fit(
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

    def neighbours(self, point_id: int, k: int | None = None) -> pd.DataFrame:
        """The point's k nearest pool points in the full embedding (itself excluded): id and
        distance (squared L2, as faiss gives it), nearest first."""
        k = k or self.k
        row = self.row_of_[point_id]
        dist, ids = self.index_.query(self.embeddings_[row:row + 1], k + 1)
        keep = ids[0] != point_id
        return pd.DataFrame({"id": ids[0][keep][:k], "distance": dist[0][keep][:k]})

    def thumbnail(self, point_id: int, size: int | None = None, fmt: str = "png") -> bytes | None:
        """The point's image as `thumbnail_bytes` (None for probe runs, which have no images)."""
        if self.images_ is None:
            return None
        return thumbnail_bytes(self.images_[self.row_of_[point_id]], size or self.thumb_px, fmt)

    def group_of(self, point_id: int) -> str:
        if point_id in self.points_.index:
            return str(self.points_.at[point_id, "group"])
        return ""


def _add_groups(fig, points: pd.DataFrame) -> None:
    """The map's points, one trace per group, each point's id as its customdata."""
    for i, (group, d) in enumerate(points.groupby("group")):
        fig.add_scattergl(x=d["x"], y=d["y"], customdata=d.index.to_numpy(), mode="markers", name=group,
                          marker=dict(size=4, opacity=0.6, color=_GROUP_COLOURS[i % len(_GROUP_COLOURS)]),
                          hoverinfo="none")


def _default_runs(view: PoolView, runs: list[str] | None) -> list[str]:
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


class Explorer:
    """The pool explorer as a notebook widget (see the module's doc).

    Display it in a notebook (the last expression of a cell, or `display(explorer)`).
    Needs ipywidgets (and anywidget, for plotly's FigureWidget).

    Args:
        records_or_view: the run records to show (a `PoolView` is built from them and
            fitted), or a `PoolView`, fitted or not.
        runs: the run names shown side by side (up to two are meant); default: the first
            uncertainty run of each weights kind (pretrained vs unpretrained, as the paper
            compares), else the first two runs.
        **view_args: `PoolView`'s options (map_run, method, max_points, ...), when
            `records_or_view` is records.

    Attributes:
        view: the fitted `PoolView`.
        runs: the runs shown.
        slider: the round slider (an ipywidgets IntSlider; moving it calls `show_round`).
        figures: one plotly FigureWidget per run: the map, and its acquisitions as stars.
        info: the hovered point's facts (HTML).
        thumb: the hovered point's thumbnail (an Image).
        neighbour_box: the clicked point's neighbours, thumbnails and groups.
        widget: the whole widget (a VBox).

    Examples:
        >>> import toolkit
        >>> from toolkit.report.explore import Explorer, PoolView
        >>> runs = [toolkit.load_run("altk-doc/loop"), toolkit.load_run("altk-doc/run")]
        >>> explorer = Explorer(PoolView(runs, max_points=50))  # or Explorer(runs, max_points=50)
        >>> explorer.runs, explorer.slider.max, len(explorer.figures)  # "run" is random: not shown by default
        (['loop'], 0, 1)
        >>> explorer.show_round(0)
        >>> len(explorer.figures[0].data[-1].x)  # the stars: what "loop" acquired up to round 0
        5
    """

    def __init__(self, records_or_view, runs: list[str] | None = None, **view_args) -> None:
        import ipywidgets as widgets
        import plotly.graph_objects as go

        view = records_or_view if isinstance(records_or_view, PoolView) else PoolView(list(records_or_view), **view_args)
        if not hasattr(view, "points_"):
            view.fit()
        self.view, self.runs = view, _default_runs(view, runs)
        self.slider = widgets.IntSlider(value=view.rounds_, min=0, max=view.rounds_, description="round",
                                        continuous_update=False)
        self.info = widgets.HTML("<i>hover a point</i>")
        self.thumb = widgets.Image(format="png", width=96, height=96)
        self.neighbour_box = widgets.HBox()
        self.figures = []
        pts = view.points_
        for run in self.runs:
            fig = go.FigureWidget()
            _add_groups(fig, pts)
            fig.add_scatter(x=[], y=[], customdata=[], mode="markers", name="acquired",
                            marker=dict(symbol="star", size=10, color="black"), hoverinfo="none")
            fig.update_layout(title=run, width=480, height=440, template="plotly_white",
                              margin=dict(l=10, r=10, t=40, b=10),
                              xaxis=dict(showticklabels=False), yaxis=dict(showticklabels=False))
            for trace in fig.data:
                trace.on_hover(self._hover)
                trace.on_click(self._click)
            self.figures.append(fig)
        self.slider.observe(lambda change: self.show_round(change["new"]), names="value")
        self.show_round(self.slider.value)
        self.widget = widgets.VBox([self.slider, widgets.HBox(self.figures), widgets.HBox([self.thumb, self.info]),
                                    self.neighbour_box])

    def show_round(self, round_index: int) -> None:
        """Mark the points each run acquired up to `round_index`."""
        for run, fig in zip(self.runs, self.figures):
            a = self.view.acquired_upto(run, round_index)
            with fig.batch_update():
                fig.data[-1].x, fig.data[-1].y, fig.data[-1].customdata = a["x"], a["y"], a["id"].to_numpy()

    def _point(self, trace, points) -> int | None:
        if not points.point_inds:
            return None
        return int(trace.customdata[points.point_inds[0]])

    def _hover(self, trace, points, state=None) -> None:
        point_id = self._point(trace, points)
        if point_id is None:
            return
        facts = self.view.describe(point_id)
        lines = [f"<b>id {facts['id']}</b>: {html.escape(facts['label'])}, spurious {facts['spurious']} "
                 f"({facts['group']})"]
        for run in self.runs:
            hit = facts.get(run)
            lines.append(f"{html.escape(run)}: " + (f"acquired in round {hit['round']}, score {hit['score']:.3f}"
                                                    if hit else "not acquired"))
        self.info.value = "<br>".join(lines)
        png = self.view.thumbnail(point_id)
        if png is not None:
            self.thumb.value = png

    def _click(self, trace, points, state=None) -> None:
        import ipywidgets as widgets

        point_id = self._point(trace, points)
        if point_id is None:
            return
        cells = []
        for _, n in self.view.neighbours(point_id).iterrows():
            png = self.view.thumbnail(int(n["id"]))
            caption = widgets.HTML(f"<small>{int(n['id'])} {self.view.group_of(int(n['id']))}</small>")
            parts = [widgets.Image(value=png, format="png", width=64, height=64)] if png is not None else []
            cells.append(widgets.VBox(parts + [caption]))
        self.neighbour_box.children = tuple(cells)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def explorer_html(view: PoolView, runs: list[str] | None = None, *, max_thumbnails: int = 2000,
                  thumb_px: int = 32) -> str:
    """The explorer as HTML for the report: per run, a plotly figure of the map with a round
    slider; hovering shows a thumbnail and facts, clicking shows the neighbours (from an inline
    table of at most `max_thumbnails` WebP thumbnails of `thumb_px`, the acquired points first).
    Needs plotly.js on the page already."""
    import plotly.graph_objects as go

    runs = _default_runs(view, runs)
    pts = view.points_
    acquired = pts.index.isin(np.concatenate([a["id"].to_numpy() for a in view.acquired_.values()]))
    shown = np.concatenate([pts.index[acquired], pts.index[~acquired]])[:max_thumbnails]
    shown_set = {int(i) for i in shown}
    # neighbours in the full embedding, one faiss query for all; those off the map have no thumbnail
    _, near = view.index_.query(view.embeddings_[pts.loc[shown, "row"].to_numpy()], view.k + 1)
    thumbs, facts, nbrs = {}, {}, {}
    for pid, ids in zip(shown, near):
        pid = int(pid)
        small = view.thumbnail(pid, thumb_px, "webp")
        if small is not None:
            thumbs[pid] = "data:image/webp;base64," + base64.b64encode(small).decode()
        f = view.describe(pid)
        facts[pid] = f"id {pid}: {f['label']}, spurious {f['spurious']} ({f['group']})" + "".join(
            f"; {r}: round {f[r]['round']}, score {f[r]['score']:.3f}" for r in runs if r in f)
        nbrs[pid] = [int(i) for i in ids if int(i) != pid and int(i) in shown_set][:view.k]
    parts = []
    for j, run in enumerate(runs):
        fig = go.Figure()
        _add_groups(fig, pts)
        n_groups = len(fig.data)
        for r in range(view.rounds_ + 1):  # one trace per round, shown up to the slider's round
            a = view.acquired_upto(run, r)
            a = a[a["round"] == r]
            fig.add_scatter(x=a["x"], y=a["y"], customdata=a["id"].to_numpy(), mode="markers", name=f"round {r}",
                            marker=dict(symbol="star", size=10, color="black"), hoverinfo="none", showlegend=False)
        steps = [dict(method="restyle", label=str(r),
                      args=[{"visible": [True] * n_groups + [k <= r for k in range(view.rounds_ + 1)]}])
                 for r in range(view.rounds_ + 1)]
        fig.update_layout(title=run, width=520, height=480,
                          template="plotly_white", margin=dict(l=10, r=10, t=40, b=10),
                          xaxis=dict(showticklabels=False), yaxis=dict(showticklabels=False),
                          sliders=[dict(active=view.rounds_, steps=steps, currentvalue=dict(prefix="round "))])
        div = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"explore-{j}",
                          config={"displayModeBar": False})
        parts.append(f"<div style='display:inline-block'>{div}</div>")
    panel = ("<div style='display:flex;gap:1em;align-items:flex-start'><img id='explore-thumb' class='thumb' "
             "style='width:96px;height:96px'><div id='explore-info' class='note'>hover a point</div></div>"
             "<div id='explore-neighbours'></div>")
    data = f"const T = {json.dumps(thumbs)}, F = {json.dumps(facts)}, N = {json.dumps(nbrs)};"
    script = _EXPLORER_JS.replace("/*DATA*/", data)
    return "".join(parts) + panel + script
