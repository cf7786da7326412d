"""Static PNG/PDF/SVG export of the toolkit's plotly figures without a browser.

kaleido (plotly's exporter) drives a Chrome/Chromium binary, which a fresh machine may not
have. This module redraws a plotly figure with matplotlib instead. It covers the trace
and layout features that `toolkit.report.figures` uses (scatter lines/markers/stars, filled CI
bands, grouped bars, asymmetric error bars, horizontal reference lines, titles, axis
ranges); anything else is refused by name rather than drawn wrongly.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

_MARKERS = {None: "o", "circle": "o", "star": "*", "square": "s", "diamond": "D", "x": "x", "cross": "P"}
_SCATTER_KEYS = {"scatter", "scattergl"}


def _arr(values) -> np.ndarray:
    return np.asarray([] if values is None else values)


def _error(err, y):
    if err is None or err.array is None:
        return None
    upper = _arr(err.array).astype(float)
    lower = upper if err.symmetric is not False or err.arrayminus is None else _arr(err.arrayminus).astype(float)
    return np.vstack([lower, upper]) if len(y) else None


def _draw_scatter(ax, trace, colour):
    x, y = _arr(trace.x), _arr(trace.y).astype(float)
    alpha = 1.0 if trace.opacity is None else trace.opacity
    if trace.fill == "toself":
        ax.fill(x, y, color=trace.fillcolor or colour, alpha=alpha, linewidth=0)
        return
    if trace.fill not in (None, "none"):
        raise NotImplementedError(f"scatter fill={trace.fill!r} has no matplotlib rendering here")
    mode = trace.mode or "lines+markers"
    line_colour = (trace.line.color if trace.line else None) or colour
    marker = trace.marker
    marker_colour = (marker.color if marker is not None and isinstance(marker.color, str) else None) or line_colour
    marker_alpha = marker.opacity if marker is not None and marker.opacity is not None else alpha
    size = (marker.size if marker is not None and marker.size is not None else 6) * 1.2
    label = trace.name if trace.showlegend is not False else None
    if "lines" in mode:
        ax.plot(x, y, color=line_colour, alpha=alpha, linewidth=(trace.line.width or 2) if trace.line else 2,
                label=label if "markers" not in mode else None)
    if "markers" in mode:
        symbol = marker.symbol if marker is not None else None
        ax.scatter(x, y, s=size ** 2 / 2, marker=_MARKERS.get(symbol, "o"), color=marker_colour,
                   alpha=marker_alpha, linewidths=0, label=label, zorder=3 if symbol == "star" else 2)
    err = _error(trace.error_y, y)
    if err is not None:
        ax.errorbar(x, y, yerr=err, fmt="none", ecolor=line_colour, capsize=3, alpha=alpha)


def _draw_bars(ax, bars, colours):
    categories = list(dict.fromkeys(c for t in bars for c in _arr(t.x).tolist()))
    width = 0.8 / len(bars)
    for i, (trace, colour) in enumerate(zip(bars, colours)):
        pos = {c: k for k, c in enumerate(categories)}
        x = np.array([pos[c] for c in _arr(trace.x).tolist()]) - 0.4 + width * (i + 0.5)
        y = _arr(trace.y).astype(float)
        mc = trace.marker.color if trace.marker is not None and isinstance(trace.marker.color, str) else colour
        ax.bar(x, y, width=width, color=mc, label=trace.name, yerr=_error(trace.error_y, y), capsize=3)
    long = sum(len(str(c)) for c in categories) > 60  # labels would overlap side by side
    ax.set_xticks(range(len(categories)), [str(c) for c in categories], rotation=45 if long else 0,
                  ha="right" if long else "center")


def to_matplotlib(fig):
    """A matplotlib Figure drawing the same traces and layout as the plotly `fig`."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    layout = fig.layout
    width, height = layout.width or 800, layout.height or 500
    out, ax = plt.subplots(figsize=(width / 100, height / 100), dpi=100)
    default_colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    bars = []
    for i, trace in enumerate(fig.data):
        colour = default_colours[i % len(default_colours)]
        if trace.type in _SCATTER_KEYS:
            _draw_scatter(ax, trace, colour)
        elif trace.type == "bar":
            bars.append((trace, colour))
        else:
            raise NotImplementedError(f"trace type {trace.type!r} has no matplotlib rendering; "
                                      "export it with kaleido (needs Chrome/Chromium) instead")
    if bars:
        if layout.barmode not in (None, "group"):
            raise NotImplementedError(f"barmode={layout.barmode!r} has no matplotlib rendering here")
        _draw_bars(ax, [b for b, _ in bars], [c for _, c in bars])
    for shape in layout.shapes or ():
        if shape.type == "line" and shape.y0 == shape.y1 and str(shape.xref).endswith("domain"):
            ax.axhline(shape.y0, color=(shape.line.color if shape.line else None) or "grey",
                       linestyle="--" if shape.line and shape.line.dash else "-", linewidth=1)
    title = layout.title.text if layout.title is not None else None
    if title:
        ax.set_title(title, loc="left")
    ax.set_xlabel(layout.xaxis.title.text or "")
    ax.set_ylabel(layout.yaxis.title.text or "")
    if layout.yaxis.range is not None:
        ax.set_ylim(*layout.yaxis.range)
    for axis, plotly_axis in ((ax.xaxis, layout.xaxis), (ax.yaxis, layout.yaxis)):
        if plotly_axis.showticklabels is False:
            axis.set_ticklabels([])
            axis.set_ticks([])
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    if any(t.name and t.showlegend is not False for t in fig.data):
        ax.legend(frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    out.tight_layout()
    return out


def write_matplotlib(fig, path: Path, *, scale: float = 2.0) -> Path:
    import matplotlib.pyplot as plt

    rendered = to_matplotlib(fig)
    try:
        rendered.savefig(path, dpi=100 * scale, format=path.suffix.lstrip(".").lower())
    finally:
        plt.close(rendered)
    return path
