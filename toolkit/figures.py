"""Plotly figures drawn from analysis DataFrames; nothing is computed here."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

_PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]


def learning_curve_figure(curves: pd.DataFrame, *, title: str = "", y_label: str = "accuracy") -> go.Figure:
    """Mean line with a shaded CI band per arm, from `analysis.learning_curves` output."""
    fig = go.Figure()
    arms = [c for c in ("model", "weights", "strategy") if c in curves.columns]
    for i, (key, g) in enumerate(curves.groupby(arms, sort=True)):
        name = " / ".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))
        colour = _PALETTE[i % len(_PALETTE)]
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
