"""The pool explorer as a notebook widget (paper Fig. 13, interactive), on jupyter-scatter.

jupyter-scatter (anywidget and regl-scatterplot: WebGL, millions of points) draws each map
and gives what researchers expect of an embedding map: pan and zoom, lasso and box selection
(its toolbar's lasso button, and its lasso-type button for a box), colour by a column with a
legend, a tooltip fetched from the kernel point by point, and linked views
(`jscatter.compose(..., sync_selection=True, sync_hover=True, match_by="id")`: a selection or
a hover in one map selects or highlights the same ids in the others). This module adds only
what is the toolkit's: one map per run (each on its own backbone's embedding, from `PoolView`),
the round slider, the selection as a table (`selection()`), a thumbnail strip of it, and the
faiss neighbours of a clicked point or of the selection's centroid. Thumbnails are made by
`PoolView.thumbnail` when a point is hovered or selected, never all at once.
"""
from __future__ import annotations

import html
import json
import warnings

import numpy as np
import pandas as pd

from toolkit.errors import RecordError

_ROUND_OTHER = "not labelled"
_MAX_CATEGORIES = 12  # a numeric column with at most this many values is coloured as categories


def _jscatter():
    try:
        import jscatter
    except ImportError as err:
        raise ImportError("the explorer widget needs jupyter-scatter: pip install jupyter-scatter "
                          "(or the notebooks extra: pip install -e '.[notebooks]')") from err
    return jscatter


def _embedding_key(rec) -> str:
    """What decides a run's pool embedding: two runs with the same key share one map."""
    return json.dumps([rec.mode, rec.model, str(rec.weights), rec.dataset, rec.data_params, rec.seed,
                       rec.run_config.get("data", {}).get("pool_cache")], sort_keys=True, default=str)


def _colourable(column: pd.Series) -> pd.Series:
    """A column as jupyter-scatter colours it: categories (text, or few distinct numbers) or floats."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        values = column.astype("float64")
        if values.nunique() > _MAX_CATEGORIES:
            return values
        column = values.map(lambda v: "NA" if pd.isna(v) else f"{v:g}")
    text = column.astype(str)
    return pd.Series(pd.Categorical(text, categories=sorted(text.unique())), index=column.index)


class Explorer:
    """The pool explorer as a notebook widget (see the module's doc).

    Display it in a notebook (the last expression of a cell, or `display(explorer)`). Needs
    jupyter-scatter (the notebooks extra). Select with the lasso (the lasso button on a map's
    toolbar, then drag; its lasso-type button, or `lasso("rectangle")`, makes it a box), or
    click a point; the selection is the same ids in every map, comes back to Python as
    `selection()`, and fills the thumbnail strip and the neighbours below the maps.

    Args:
        records_or_view: the run records to show (a `PoolView` of the whole pool is built from
            them and fitted), or a `PoolView`, fitted or not.
        runs: the run names shown side by side; default: the first uncertainty run of each
            weights kind (pretrained vs unpretrained, as the paper compares), else the first
            two runs.
        maps: "own" (default): each run on a map of its own backbone's pool embedding (runs
            that share a backbone share the map); "shared": every run on the view's map; or a
            dict {run: fitted PoolView}.
        color_by: the column the points are coloured by (default "group"; see `color_by`).
        height: each map's height in pixels (default 380).
        strip: thumbnails in the selection's strip (default 24).
        **view_args: `PoolView`'s options (map_run, method, max_points, ...), when
            `records_or_view` is records; max_points defaults to None (the whole pool).

    Attributes:
        view: the fitted `PoolView` (the first map's, unless `maps` says otherwise).
        views: {run: the PoolView whose map that run is drawn on}.
        runs: the runs shown.
        data: {run: that map's points (DataFrame with an id column, in the map's row order)}.
        scatters: one `jscatter.Scatter` per run.
        maps: the linked maps (`jscatter.compose`).
        slider: the round slider (an ipywidgets IntSlider; moving it calls `show_round`).
        colour: the colour-by dropdown (moving it calls `color_by`).
        info, thumb: the hovered point's facts (HTML) and thumbnail (an Image).
        summary, strip: the selection's counts (HTML) and thumbnails (an HBox).
        neighbour_box: the neighbours of the clicked point or of the selection's centroid.
        widget: the whole widget (a VBox).

    Examples:
        >>> import toolkit
        >>> from toolkit.report.explore import Explorer, PoolView
        >>> runs = [toolkit.load_run("altk-doc/loop"), toolkit.load_run("altk-doc/run")]
        >>> explorer = Explorer(PoolView(runs, max_points=50))  # or Explorer(runs, max_points=50)
        >>> explorer.runs, explorer.slider.max, len(explorer.scatters)  # "run" is random: not shown by default
        (['loop'], 0, 1)
        >>> picked = explorer.view.acquired_["loop"]["id"].tolist()
        >>> explorer.select(picked).selection().index.tolist() == sorted(picked)  # ids in, the same ids out
        True
        >>> explorer.selection()["round:loop"].tolist()
        [0, 0, 0, 0, 0]
        >>> len(explorer.neighbours(k=3))  # of the selection's centroid, in the map's embedding
        3
    """

    def __init__(self, records_or_view, runs: list[str] | None = None, *, maps="own", color_by: str = "group",
                 height: int = 380, strip: int = 24, **view_args) -> None:
        jscatter = _jscatter()
        import ipywidgets as widgets

        from toolkit.report.explore import PoolView, default_runs

        if isinstance(records_or_view, PoolView):
            view = records_or_view
        else:
            view_args.setdefault("max_points", None)
            view = PoolView(list(records_or_view), **view_args)
        if not hasattr(view, "points_"):
            view.fit()
        self.runs = default_runs(view, runs)
        self.views = self._map_views(view, maps)
        self.view = self.views[self.runs[0]]
        self.n_strip, self._selected, self._selected_from, self._hovered = strip, np.zeros(0, np.int64), None, None
        self.tables = {run: self.views[run].table(self.runs) for run in self.runs}
        self.data = {run: self._map_data(run) for run in self.runs}
        self.scatters = [self._scatter(jscatter, run, height) for run in self.runs]
        for scatter, run in zip(self.scatters, self.runs):
            scatter.widget.observe(self._selection_handler(run), names="selection")
            scatter.widget.observe(self._hover_handler(run), names="hovering")
        self.maps = jscatter.compose([(s, html.escape(run)) for s, run in zip(self.scatters, self.runs)],
                                     sync_selection=True, sync_hover=True, match_by="id", row_height=height)

        if color_by not in self.colour_columns():
            raise ValueError(f"unknown column {color_by!r}; valid: {', '.join(self.colour_columns())}")
        rounds = max(v.rounds_ for v in self.views.values())
        self.slider = widgets.IntSlider(value=rounds, min=0, max=rounds, description="round", continuous_update=False)
        self.colour = widgets.Dropdown(options=self.colour_columns(), value=color_by, description="colour by")
        self.info = widgets.HTML("<i>hover a point</i>")
        self.thumb = widgets.Image(value=_blank_png(), format="png", width=96, height=96)
        self.summary = widgets.HTML("<i>select points: the lasso button on a map's toolbar, then drag; "
                                    "or click a point</i>")
        self.strip = widgets.HBox(layout=widgets.Layout(overflow="auto"))
        self.neighbour_title = widgets.HTML()
        self.neighbour_box = widgets.HBox(layout=widgets.Layout(overflow="auto"))
        self.slider.observe(lambda change: self.show_round(change["new"]), names="value")
        self.colour.observe(lambda change: self.color_by(change["new"]), names="value")
        self.show_round(self.slider.value)
        self.color_by(color_by)
        self.widget = widgets.VBox([widgets.HBox([self.slider, self.colour]), self.maps,
                                    widgets.HBox([self.thumb, self.info]), self.summary, self.strip,
                                    self.neighbour_title, self.neighbour_box])

    # --- the maps -------------------------------------------------------------------------
    def _map_views(self, view, maps) -> dict:
        from toolkit.report.explore import PoolView

        if isinstance(maps, dict):
            missing = [r for r in self.runs if r not in maps]
            if missing:
                raise RecordError(f"maps has no view for run(s) {missing}; it has {', '.join(maps)}")
            return {run: maps[run] if hasattr(maps[run], "points_") else maps[run].fit() for run in self.runs}
        if maps == "shared":
            return {run: view for run in self.runs}
        if maps != "own":
            raise ValueError(f"unknown maps {maps!r}; valid: 'own', 'shared', or a dict {{run: PoolView}}")
        records = {r.name: r for r in view.records}
        views = {_embedding_key(records[view.map_run_]): view}
        out = {}
        for run in self.runs:
            key = _embedding_key(records[run])
            if key not in views:
                views[key] = PoolView(view.records, map_run=run, method=view.method, max_points=view.max_points,
                                      k=view.k, thumb_px=view.thumb_px, random_state=view.random_state,
                                      cache_dir=view.cache_dir, n_jobs=view.n_jobs).fit()
            out[run] = views[key]
        return out

    def _map_data(self, run: str) -> pd.DataFrame:
        """The map's points as jupyter-scatter reads them: an id column, x, y, the colourable
        columns, "round" (this run's acquisitions) and "shown" (what the slider marks)."""
        t = self.tables[run]
        rounds = t[f"round:{run}"]
        names = ["seed"] + [f"round {r}" for r in range(self.views[run].rounds_ + 1)] + [_ROUND_OTHER]
        text = rounds.map(lambda r: _ROUND_OTHER if pd.isna(r) else ("seed" if r < 0 else f"round {int(r)}"))
        data = pd.DataFrame({"id": t.index.to_numpy(), "x": t["x"].to_numpy(), "y": t["y"].to_numpy()})
        for column in ["group", "label", *self.views[run].attributes_.columns]:
            if column not in ("x", "y", "id", "round", "shown"):
                data[column] = _colourable(t[column]).reset_index(drop=True)
        data.insert(4, "round", pd.Categorical(text.to_numpy(), categories=names))
        data["shown"] = pd.Categorical(["other"] * len(t), categories=["other", "acquired"])
        if f"margin:{run}" in t:
            data["margin"] = t[f"margin:{run}"].to_numpy(dtype=float)
        return data

    def _scatter(self, jscatter, run: str, height: int):
        data = self.data[run]
        small = 4 if len(data) <= 5_000 else 2
        scatter = jscatter.Scatter(data=data, x="x", y="y", height=height, axes=False, legend=True,
                                   legend_size="small")
        scatter.size(by="shown", map={"other": small, "acquired": 3 * small})
        scatter.camera(distance=1.12)  # a margin: points on the map's edge are not cut by the canvas
        props = ["id", "group", "label", "round"] + [c for c in self.views[run].attributes_.columns
                                                   if c in data and c not in ("group", "label", "round")]
        scatter.tooltip(enable=True, properties=props + (["margin"] if "margin" in data else []), histograms=False)
        return scatter

    def colour_columns(self) -> list[str]:
        """The columns `color_by` takes: group, round, label, the pool's attribute columns, and
        margin (the seed-set model's, where a run kept its pool outputs)."""
        out = []
        for data in self.data.values():
            out += [c for c in data.columns if c not in ("id", "x", "y", "shown") and c not in out]
        return out

    def color_by(self, column: str) -> None:
        """Colour every map by `column` (one of `colour_columns()`): categories get a legend,
        numbers a colour scale; a map without the column is drawn grey."""
        if column not in self.colour_columns():
            raise ValueError(f"unknown column {column!r}; valid: {', '.join(self.colour_columns())}")
        from toolkit.report.explore import GROUP_COLOURS

        for scatter, run in zip(self.scatters, self.runs):
            data = self.data[run]
            if column not in data:
                scatter.color(by=None, default="#b0b0b0")
            elif column == "round":
                cats = list(data["round"].cat.categories)
                ramp = _ramp(len(cats) - 2)
                scatter.color(by="round", map={c: ("#000000" if c == "seed" else "#d9d9d9" if c == _ROUND_OTHER
                                                   else ramp.pop(0)) for c in cats})
            elif column == "group":
                cats = list(data["group"].cat.categories)
                scatter.color(by="group", map={c: GROUP_COLOURS[i % len(GROUP_COLOURS)] for i, c in enumerate(cats)})
            elif isinstance(data[column].dtype, pd.CategoricalDtype):
                scatter.color(by=column, map="auto")
            else:
                with warnings.catch_warnings():  # margins are NaN on the seed set (labelled, never scored)
                    warnings.filterwarnings("ignore", "Color data contains missing values")
                    scatter.color(by=column, map="viridis")
        if self.colour.value != column:
            self.colour.value = column

    def show_round(self, round_index: int) -> None:
        """Mark (larger points) what each run acquired in rounds 0..`round_index`."""
        for scatter, run in zip(self.scatters, self.runs):
            rounds = self.tables[run][f"round:{run}"].to_numpy(dtype="float64", na_value=np.nan)
            shown = np.where((rounds >= 0) & (rounds <= round_index), "acquired", "other")
            self.data[run]["shown"] = pd.Categorical(shown, categories=["other", "acquired"])
            scatter.size(by="shown")

    # --- selection --------------------------------------------------------------------------
    def lasso(self, kind: str = "freeform") -> "Explorer":
        """How a drag selects on every map: "freeform" (a lasso), "rectangle" (a box) or "brush"
        (the toolbar's lasso-type button switches it too)."""
        if kind not in ("freeform", "rectangle", "brush"):
            raise ValueError(f"unknown lasso {kind!r}; valid: 'freeform', 'rectangle', 'brush'")
        for scatter in self.scatters:
            scatter.lasso(type=kind)
        return self

    def select(self, ids) -> "Explorer":
        """Select these ids (in every map: the maps are linked by id); ids off the maps are ignored."""
        run = self.runs[0]
        rows = pd.Index(self.data[run]["id"]).get_indexer(np.asarray(ids, dtype=np.int64))
        self.scatters[0].widget.selection = np.sort(rows[rows >= 0]).astype(np.uint32)
        return self

    def selected_ids(self, run: str | None = None) -> np.ndarray:
        """The ids selected in `run`'s map (default: where the selection was made), in the map's order."""
        run = run or self._selected_from or self.runs[0]
        rows = self.scatters[self.runs.index(run)].widget.selection
        rows = np.asarray(rows if rows is not None else [], dtype=np.int64)
        return self.data[run]["id"].to_numpy()[rows]

    def selection(self) -> pd.DataFrame:
        """The selected points as a table, indexed by id (sorted): group, label, the pool's
        attribute columns, per run shown "round:<run>" (-1: seed set; <NA>: not labelled) and
        "margin:<run>" where known (`PoolView.table`), and "acquired_by"."""
        run = self._selected_from or self.runs[0]
        ids = np.sort(self.selected_ids(run))
        return self.tables[run].loc[ids].drop(columns=["x", "y"])

    def neighbours(self, k: int | None = None, run: str | None = None) -> pd.DataFrame:
        """Nearest pool points in `run`'s embedding (default: the map the selection was made in)
        of the selected point, or of the selection's centroid when several are selected: id,
        distance (squared L2) and group, nearest first."""
        run = run or self._selected_from or self.runs[0]
        view, ids = self.views[run], self.selected_ids(run)
        if len(ids) == 0:
            raise RecordError("nothing is selected: select points on a map (or with select(ids)) first")
        near = view.neighbours(int(ids[0]), k) if len(ids) == 1 else view.centroid_neighbours(ids, k)
        return near.assign(group=[view.group_of(int(i)) for i in near["id"]])

    def _selection_handler(self, run: str):
        def handler(change) -> None:
            ids = self.selected_ids(run)
            linked = self._selected[np.isin(self._selected, self.data[run]["id"].to_numpy())]
            if np.array_equal(np.sort(ids), np.sort(linked)):
                return  # the current selection's ids on this map: linked in from the map it was made in
            self._selected, self._selected_from = ids, run
            self._show_selection()
        return handler

    def _hover_handler(self, run: str):
        def handler(change) -> None:
            if change["new"] is None or change["new"] < 0:
                return
            point_id = int(self.data[run]["id"].iat[int(change["new"])])
            if point_id != self._hovered:
                self._hovered = point_id
                self._show_point(run, point_id)
        return handler

    def _show_point(self, run: str, point_id: int) -> None:
        view = self.views[run]
        facts = view.describe(point_id)
        lines = [f"<b>id {facts['id']}</b>: {html.escape(facts['label'])}, spurious {facts['spurious']} "
                 f"({facts['group']})"]
        for r in self.runs:
            hit = facts.get(r)
            lines.append(f"{html.escape(r)}: " + (f"acquired in round {hit['round']}, score {hit['score']:.3f}"
                                                  if hit else "not acquired"))
        self.info.value = "<br>".join(lines)
        png = view.thumbnail(point_id)
        if png is not None:
            self.thumb.value = png

    def _cells(self, view, ids, size: int = 64) -> list:
        import ipywidgets as widgets

        cells = []
        for i in ids:
            png = view.thumbnail(int(i))
            caption = widgets.HTML(f"<small>{int(i)} {view.group_of(int(i))}</small>")
            parts = [widgets.Image(value=png, format="png", width=size, height=size)] if png is not None else []
            cells.append(widgets.VBox(parts + [caption]))
        return cells

    def _show_selection(self) -> None:
        run, ids = self._selected_from, self._selected
        if len(ids) == 0:
            self.summary.value, self.strip.children = "<i>nothing selected</i>", ()
            self.neighbour_title.value, self.neighbour_box.children = "", ()
            return
        table = self.selection()
        groups = ", ".join(f"{g} {n}" for g, n in table["group"].value_counts().sort_index().items())
        acquired = ", ".join(f"{html.escape(r)} {int(table[f'round:{r}'].ge(0).sum())}" for r in self.runs)
        self.summary.value = (f"<b>{len(ids)} selected</b> in {html.escape(run)}'s map: {groups}; acquired by "
                              f"{acquired}. <code>explorer.selection()</code> gives the table.")
        self.strip.children = tuple(self._cells(self.views[run], ids[:self.n_strip], 48))
        near = self.neighbours()
        what = f"id {int(ids[0])}" if len(ids) == 1 else f"the centroid of the {len(ids)} selected points"
        self.neighbour_title.value = f"Nearest neighbours of {what} in {html.escape(run)}'s embedding (faiss):"
        self.neighbour_box.children = tuple(self._cells(self.views[run], near["id"]))

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def _ramp(n: int) -> list[str]:
    """`n` colours from viridis's dark purple to its yellow, for rounds in order."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    cmap = colormaps["viridis"]
    return [to_hex(cmap(0.85 * i / max(n - 1, 1))) for i in range(n)]


def _blank_png() -> bytes:
    """A light grey square: the thumbnail before any point is hovered (an empty image shows as broken)."""
    from toolkit.report.explore import thumbnail_bytes

    return thumbnail_bytes(np.full((3, 8, 8), 238, dtype=np.uint8), 8)
