"""Plotly figures drawn from analysis DataFrames; nothing is computed here."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from toolkit.errors import RecordError

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]
_NO_BROWSER: list[bool] = []  # set once kaleido found no browser: later figures go straight to matplotlib


def learning_curve_figure(curves: pd.DataFrame, *, title: str = "", y_label: str = "accuracy") -> go.Figure:
    """Mean line with a shaded CI band per arm, from `analysis.learning_curves` output."""
    fig = go.Figure()
    arms = [c for c in ("model", "weights", "strategy") if c in curves.columns]
    for i, (key, g) in enumerate(curves.groupby(arms, sort=True)):
        name = " / ".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))
        colour = PALETTE[i % len(PALETTE)]
        g = g.sort_values("n_labels")
        band = pd.concat([g["n_labels"], g["n_labels"][::-1]])
        fig.add_trace(go.Scatter(x=band, y=pd.concat([g["high"], g["low"][::-1]]), fill="toself",
                                 fillcolor=colour, opacity=0.15, line=dict(width=0), hoverinfo="skip",
                                 showlegend=False, legendgroup=name))
        fig.add_trace(go.Scatter(x=g["n_labels"], y=g["mean"], mode="lines+markers", name=name,
                                 line=dict(color=colour), legendgroup=name))
    fig.update_layout(title=title, xaxis_title="labelled examples", yaxis_title=y_label,
                      template="plotly_white", width=800, height=500)
    return fig


def upsampling_figure(summary: pd.DataFrame, *, title: str = "Acquired share / pool share") -> go.Figure:
    """Grouped bars of the upsampling ratio per group and arm, with CI error bars
    (from `analysis.upsampling_summary`). The dashed line at 1 is the pool rate."""
    fig = go.Figure()
    arms = [c for c in ("weights", "strategy") if c in summary.columns]
    for i, (key, g) in enumerate(summary.groupby(arms, sort=True)):
        g = g.sort_values("group")
        fig.add_trace(go.Bar(x=g["group"], y=g["upsampling"], name=" / ".join(map(str, key)),
                             marker_color=PALETTE[i % len(PALETTE)],
                             error_y=dict(type="data", symmetric=False, array=g["high"] - g["upsampling"],
                                          arrayminus=g["upsampling"] - g["low"])))
    fig.add_hline(y=1.0, line_dash="dash", line_color="grey")
    fig.update_layout(title=title, barmode="group", xaxis_title="group (y = label, s = spurious attribute)",
                      yaxis_title="upsampling ratio", template="plotly_white", width=800, height=450)
    return fig


def separability_figure(per_group: pd.DataFrame, *, probe: str = "group_probe",
                        title: str = "Linear separability of the groups") -> go.Figure:
    """Bars of a probe's per-group accuracy, one colour per embedding (column `embedding`),
    in the order the embeddings first appear (e.g. stages before -> after finetuning)."""
    fig = go.Figure()
    for i, (name, g) in enumerate(per_group.groupby("embedding", sort=False)):
        fig.add_trace(go.Bar(x=g["group"], y=g[probe], name=str(name), marker_color=PALETTE[i % len(PALETTE)]))
    fig.update_layout(title=title, barmode="group", yaxis_title="cross-validated accuracy", yaxis_range=[0, 1],
                      template="plotly_white", width=800, height=450)
    return fig


def embedding_map_figure(coords, groups, *, marked=None, title: str = "", hover=None) -> go.Figure:
    """Scatter of a 2-D map coloured by group; `marked` (boolean mask, or an ordered list of
    row positions) are drawn as black stars on top: the acquired points."""
    import numpy as np

    fig = go.Figure()
    groups = np.asarray(groups)
    for i, g in enumerate(sorted(set(groups))):
        m = groups == g
        fig.add_trace(go.Scattergl(x=coords[m, 0], y=coords[m, 1], mode="markers", name=str(g),
                                   marker=dict(size=4, opacity=0.5, color=PALETTE[i % len(PALETTE)]),
                                   text=None if hover is None else np.asarray(hover)[m]))
    if marked is not None and len(marked):
        idx = np.flatnonzero(marked) if np.asarray(marked).dtype == bool else np.asarray(marked)
        fig.add_trace(go.Scatter(x=coords[idx, 0], y=coords[idx, 1], mode="markers", name="acquired",
                                 marker=dict(symbol="star", size=11, color="black"),
                                 text=None if hover is None else np.asarray(hover)[idx]))
    fig.update_layout(title=title, template="plotly_white", width=700, height=600,
                      xaxis=dict(showticklabels=False), yaxis=dict(showticklabels=False))
    return fig


def dose_response_figure(table: pd.DataFrame, *, metric_label: str = "worst-group gain") -> go.Figure:
    """Gain of uncertainty over random (mean and CI) against the matched-background fraction."""
    fig = go.Figure()
    for i, (name, g) in enumerate(table.groupby("weights", sort=True)):
        g = g.sort_values("matched_fraction")
        colour = PALETTE[i % len(PALETTE)]
        fig.add_trace(go.Scatter(x=g["matched_fraction"], y=g["gain"], mode="lines+markers", name=str(name),
                                 line=dict(color=colour),
                                 error_y=dict(type="data", symmetric=False, array=g["high"] - g["gain"],
                                              arrayminus=g["gain"] - g["low"])))
    fig.add_hline(y=0.0, line_dash="dash", line_color="grey")
    fig.update_layout(title="Dose-response: gain of uncertainty over random sampling",
                      xaxis_title="fraction of matched backgrounds in the pool", yaxis_title=metric_label,
                      template="plotly_white", width=800, height=450)
    return fig


def pretraining_dose_figure(by_dose: pd.DataFrame, *, value: str = "auc_gain",
                            label: str = "worst-group AUC gain of least-confidence over random") -> go.Figure:
    """The gain (mean and 95% CI over tasks, `analysis.dose.gain_by_dose`) against the dose,
    one panel per axis: pretraining steps, pretraining images, shapes seen in pretraining."""
    from plotly.subplots import make_subplots

    axes = [a for a in ("step", "images", "shapes") if a in set(by_dose["axis"])]
    titles = {"step": "pretraining steps", "images": "pretraining images", "shapes": "shapes seen in pretraining"}
    fig = make_subplots(rows=1, cols=max(1, len(axes)), subplot_titles=[titles[a] for a in axes], shared_yaxes=True)
    reference = by_dose[by_dose["axis"] == "random"]
    for col, axis in enumerate(axes, 1):
        g = by_dose[by_dose["axis"] == axis].sort_values("dose")
        if axis != "step":  # the full pretraining is each axis' largest dose
            full = by_dose[(by_dose["weights"] == "pretrained")].assign(
                dose={"images": 40_000, "shapes": 20}.get(axis, 0))
            g = pd.concat([g, full]).sort_values("dose")
        fig.add_trace(go.Scatter(x=g["dose"], y=g[value], mode="lines+markers", name=titles[axis],
                                 line=dict(color=PALETTE[col - 1]), text=g["weights"],
                                 error_y=dict(type="data", symmetric=False, array=g["high"] - g[value],
                                              arrayminus=g[value] - g["low"])), row=1, col=col)
        if len(reference):
            fig.add_hline(y=float(reference[value].iloc[0]), line_dash="dot", line_color="grey", row=1, col=col)
        fig.add_hline(y=0.0, line_dash="dash", line_color="lightgrey", row=1, col=col)
    fig.update_layout(title="Active-learning gain along the pretraining dose (dotted: random init)",
                      yaxis_title=label, template="plotly_white", width=1100, height=420, showlegend=False)
    return fig


def backbone_gain_figure(table: pd.DataFrame, *, value: str = "auc_gain",
                         title: str = "Real networks on fashion_places: gain by ImageNet model size") -> go.Figure:
    """The gain (mean and 95% CI over seeds, `analysis.dose.backbone_table`) per backbone, against its
    parameter count; random-init backbones are the dotted line."""
    pre = table[~table["backbone"].str.contains("random")].sort_values("params_m")
    rnd = table[table["backbone"].str.contains("random")]
    fig = go.Figure(go.Scatter(x=pre["params_m"], y=pre[value], mode="lines+markers+text", text=pre["backbone"],
                               textposition="top center", line=dict(color=PALETTE[0]),
                               error_y=dict(type="data", symmetric=False, array=pre[f"{value}_high"] - pre[value],
                                            arrayminus=pre[value] - pre[f"{value}_low"])))
    for _, r in rnd.iterrows():
        fig.add_hline(y=float(r[value]), line_dash="dot", line_color="grey", annotation_text=r["backbone"])
    fig.add_hline(y=0.0, line_dash="dash", line_color="lightgrey")
    fig.update_layout(title=title, xaxis_title="backbone parameters (millions)",
                      yaxis_title="worst-group AUC gain of least-confidence over random", template="plotly_white",
                      width=700, height=420, showlegend=False)
    return fig


def gain_vs_measure_figure(table: pd.DataFrame, measure: str = "sep_label", *, value: str = "auc_gain",
                           x_label: str = "linear separability of the label (5-fold probe, balanced accuracy)"
                           ) -> go.Figure:
    """One point per backbone x task: the gain against a representation measure, coloured by backbone."""
    fig = go.Figure()
    for i, (weights, g) in enumerate(table.groupby("weights", sort=False)):
        fig.add_trace(go.Scatter(x=g[measure], y=g[value], mode="markers", name=str(weights), text=g["task"],
                                 marker=dict(color=PALETTE[i % len(PALETTE)], size=7, opacity=0.8)))
    fig.add_hline(y=0.0, line_dash="dash", line_color="grey")
    fig.update_layout(title="Gain against the representation, per backbone and task", xaxis_title=x_label,
                      yaxis_title="worst-group AUC gain", template="plotly_white", width=800, height=500)
    return fig


def task_gain_figure(table: pd.DataFrame, *, title: str = "Uncertainty gain per task") -> go.Figure:
    """Grouped bars: each task's worst-group AUC gain of least-confidence over random, for the
    pretrained and the unpretrained backbone, with paired 95% CIs (from `task_suite.suite_table`)."""
    fig = go.Figure()
    for i, (prefix, name) in enumerate((("pre", "pretrained"), ("unpre", "unpretrained"))):
        g = table[f"{prefix}_auc_gain"]
        fig.add_trace(go.Bar(x=table["task"], y=g, name=name, marker_color=PALETTE[i],
                             error_y=dict(type="data", symmetric=False, array=table[f"{prefix}_auc_gain_high"] - g,
                                          arrayminus=g - table[f"{prefix}_auc_gain_low"])))
    fig.add_hline(y=0.0, line_dash="dash", line_color="grey")
    fig.update_layout(title=title, barmode="group", xaxis_title="task",
                      yaxis_title="worst-group AUC gain (least-confidence - random)",
                      template="plotly_white", width=900, height=450)
    return fig


def strategy_figure(rows: pd.DataFrame, *, value: str = "auc_gain",
                    title: str = "Worst-group gain over random, per strategy and task") -> go.Figure:
    """One point per task for each strategy (x) and backbone (colour), from
    `analysis.strategies.strategy_rows`; the mean across tasks as a bar behind the points."""
    rows = rows[rows["strategy"] != "random"]
    fig = go.Figure()
    order = list(dict.fromkeys(rows["strategy"]))
    for i, (weights, name) in enumerate((("pretrained", "pretrained"), ("random", "unpretrained"))):
        g = rows[rows["weights"] == weights]
        if not len(g):
            continue
        means = g.groupby("strategy")[value].mean().reindex(order)
        fig.add_trace(go.Bar(x=order, y=means, name=f"{name} (mean)", marker_color=PALETTE[i], opacity=0.35,
                             offsetgroup=str(i)))
        fig.add_trace(go.Box(x=g["strategy"], y=g[value], name=f"{name} (tasks)", marker_color=PALETTE[i],
                             boxpoints="all", jitter=0.4, pointpos=0, fillcolor="rgba(0,0,0,0)",
                             line_width=0, offsetgroup=str(i), hovertext=g["task"]))
    fig.add_hline(y=0.0, line_dash="dash", line_color="grey")
    fig.update_layout(title=title, barmode="group", boxmode="group", xaxis_title="strategy",
                      yaxis_title=f"worst-group {value.replace('_', ' ')} over random",
                      template="plotly_white", width=900, height=450)
    return fig


def save_static(fig: go.Figure, path, *, scale: float = 2.0, engine: str = "auto"):
    """Write a figure as PNG/PDF/SVG (by suffix) for papers.

    engine="kaleido" renders exactly what the HTML shows, but kaleido drives a
    Chrome/Chromium binary that a fresh machine may lack (`apt install chromium`, or
    `python -c "import kaleido; kaleido.get_chrome_sync()"`). engine="matplotlib" redraws
    the figure without a browser (`toolkit.report.static`). "auto" (default) tries kaleido and
    falls back to matplotlib with a warning when no browser is found, so static export
    works after the README's set-up on any machine. The file appears complete or not at all.
    """
    from pathlib import Path

    from toolkit._util.atomic import atomic_path
    from toolkit._util.log import logger
    from toolkit.report.static import write_matplotlib

    if engine not in ("auto", "kaleido", "matplotlib"):
        raise RecordError(f"engine must be 'auto', 'kaleido' or 'matplotlib', not {engine!r}")
    path = Path(path)
    if path.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise RecordError(f"static export writes .png, .pdf or .svg; got {path.name!r} (use fig.write_html for .html)")
    with atomic_path(path, keep_suffix=True) as tmp:  # the suffix picks the format
        if engine == "matplotlib" or (engine == "auto" and _NO_BROWSER):
            write_matplotlib(fig, tmp, scale=scale)
        else:
            try:
                fig.write_image(str(tmp), scale=scale)
            except Exception as err:  # kaleido raises several types when no browser is found
                if not ("chrome" in str(err).lower() or "browser" in str(err).lower()):
                    raise
                if engine == "kaleido":
                    raise RuntimeError(
                        f"static export of {path.name} through kaleido needs a Chrome/Chromium, and none was "
                        "found. Install one (`apt install chromium`, or `python -c \"import kaleido; "
                        "kaleido.get_chrome_sync()\"`), or pass engine='matplotlib'.") from err
                # a log line, not a warning: a warning names the caller's file, a temporary one in a notebook
                logger.warning("no Chrome/Chromium for kaleido: drawing static figures with matplotlib")
                _NO_BROWSER.append(True)
                write_matplotlib(fig, tmp, scale=scale)
    return path


# ---- interventions on the representation (issue #33) ------------------------------------------------

def gain_separability_figure(points: pd.DataFrame, *, measure: str = "sep_label", value: str = "auc_gain",
                             x_label: str = "linear separability of the label (5-fold probe, balanced accuracy)"
                             ) -> go.Figure:
    """The gain (mean and 95% CI over tasks) against a representation measure, one line per
    series: the interventions' representations beside the dose study's backbones, on one figure.

    Args:
        points: one row per representation (`analysis.gain_law.gain_by_representation`), with
            columns series, representation, `measure`, `value`, low and high
            (`experiments.interventions.gain_points` assembles them).
        measure: the x column.
        value: the y column.
        x_label: the x axis' title.
    """
    fig = go.Figure()
    for i, (series, g) in enumerate(points.groupby("series", sort=False)):
        g = g.sort_values(measure)
        dose = series.startswith("dose")
        fig.add_trace(go.Scatter(x=g[measure], y=g[value], mode="markers" if dose else "lines+markers",
                                 name=str(series), text=g["representation"],
                                 marker=dict(color="black" if dose else PALETTE[i % len(PALETTE)], size=9,
                                             symbol="diamond" if dose else "circle"),
                                 error_y=dict(type="data", symmetric=False, array=g["high"] - g[value],
                                              arrayminus=g[value] - g["low"])))
    fig.add_hline(y=0.0, line_dash="dash", line_color="grey")
    fig.update_layout(title="Gain against separability: interventions on the representation and the pretraining dose",
                      xaxis_title=x_label, yaxis_title="worst-group AUC gain of least-confidence over random",
                      template="plotly_white", width=900, height=520)
    return fig


def phase_diagram_figure(phase: pd.DataFrame, marks: pd.DataFrame | None = None, *,
                         value: str = "auc_gain") -> go.Figure:
    """The phase diagram: two heatmaps over the synthetic grid (label x attribute separability,
    as set), the gain of least-confidence over random and the mismatched groups' upsampling;
    the measured backbones marked at their measured separabilities.

    Args:
        phase: `analysis.gain_law.phase_table` output (label_separability, attribute_separability,
            `value`, up_mismatched_min).
        marks: backbones to mark (columns name, sep_label, sep_spurious), or None.
        value: the gain column.
    """
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("gain of least-confidence over random (AUC)",
                                                        "upsampling of the less-upsampled mismatched group"))
    for col, (column, scale) in enumerate(((value, "RdBu"), ("up_mismatched_min", "Viridis")), 1):
        grid = phase.pivot(index="attribute_separability", columns="label_separability", values=column)
        fig.add_trace(go.Heatmap(x=grid.columns, y=grid.index, z=grid.to_numpy(), colorscale=scale,
                                 zmid=0.0 if column == value else None, showscale=True,
                                 colorbar=dict(x=0.45 if col == 1 else 1.0, len=0.9)), row=1, col=col)
        if marks is not None and len(marks):
            fig.add_trace(go.Scatter(x=marks["sep_label"], y=marks["sep_spurious"], mode="markers+text",
                                     text=marks["name"], textposition="top center", showlegend=False,
                                     marker=dict(color="black", symbol="x", size=9)), row=1, col=col)
        fig.update_xaxes(title_text="label separability", row=1, col=col)
        fig.update_yaxes(title_text="attribute separability", row=1, col=col)
    fig.update_layout(title="Phase diagram of synthetic representations (cells: as set; marks: backbones as measured)",
                      template="plotly_white", width=1200, height=500)
    return fig


def figures_page(title: str, figures: list[tuple[str, go.Figure]], *, text: str = "", command: str = "") -> str:
    """One self-contained HTML page: a title, the command that made it, the printed tables, and
    each figure under its heading (plotly.js included once).

    Args:
        title: the page's title.
        figures: (heading, figure) pairs.
        text: the printed tables (shown preformatted).
        command: the command that made the page.
    """
    from html import escape

    parts = [f"<h1>{escape(title)}</h1>"]
    if command:
        parts.append(f"<p>Made by <code>{escape(command)}</code></p>")
    if text:
        parts.append(f"<pre>{escape(text)}</pre>")
    for i, (heading, fig) in enumerate(figures):
        parts.append(f"<h2>{escape(heading)}</h2>" + fig.to_html(full_html=False, include_plotlyjs=i == 0))
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(title)}</title></head>"
            f"<body style='font-family: sans-serif; max-width: 1250px; margin: auto'>{''.join(parts)}</body></html>")


def law_figure(predictions: pd.DataFrame, *, anchor: float | None = 0.79) -> go.Figure:
    """Measured against predicted gain, one colour per evaluation set (leave-task-out rows of the
    fit, then each held-out set with the law's interval as a horizontal bar), and the identity line.

    Args:
        predictions: `analysis.gain_law.law_predictions` output.
        anchor: the published in-sample Pearson to name in the title (Mussmann & Liang 2018), or None.
    """
    fig = go.Figure()
    for i, (name, g) in enumerate(predictions.groupby("evaluation", sort=False)):
        bars = None if g["low"].isna().all() else dict(type="data", symmetric=False, array=g["high"] - g["predicted"],
                                                      arrayminus=g["predicted"] - g["low"], thickness=0.8)
        fig.add_trace(go.Scatter(x=g["predicted"], y=g["measured"], mode="markers", name=str(name), error_x=bars,
                                 text=g["name"].astype(str) + " " + g["task"].astype(str),
                                 marker=dict(color=PALETTE[i % len(PALETTE)], size=7, opacity=0.75)))
    values = predictions[["predicted", "measured"]]
    ends = [float(values.min().min()), float(values.max().max())]
    fig.add_trace(go.Scatter(x=ends, y=ends, mode="lines", line=dict(color="grey", dash="dash"),
                             name="measured = predicted"))
    note = f" (published anchor: Pearson {anchor:.2f}, in sample)" if anchor is not None else ""
    fig.update_layout(title=f"The gain law out of sample{note}", xaxis_title="predicted worst-group AUC gain",
                      yaxis_title="measured worst-group AUC gain", template="plotly_white", width=800, height=560)
    return fig
