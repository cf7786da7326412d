"""`altk report RUN_DIR ... --out report.html`: one self-contained page for a set of runs.

It reads run records (and feature caches, extracting them for the toy world if missing)
and puts every analysis on one page: final metrics, learning curves for pretrained vs
unpretrained, label efficiency, acquisition composition (final and over rounds), group
separability of the embeddings, a t-SNE map with the first acquired points, and the
neighbourhoods of the first acquired points with thumbnails.
"""
from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from toolkit._util.progress import progress
from toolkit.analysis import (
    default_split,
    final_summary,
    label_efficiency_table,
    learning_curves,
    relative_upsampling,
    tidy_rounds,
    upsampling_over_rounds,
    upsampling_ratios,
    upsampling_summary,
)
from toolkit.analysis.curves import CONFIG_COLUMN, differing_fields, fold_config, planned_labels
from toolkit.errors import MissingFileError, RecordError
from toolkit.record import RunRecord, load_run, write_atomic
from toolkit.report.figures import (
    PALETTE,
    embedding_map_figure,
    learning_curve_figure,
    separability_figure,
    upsampling_figure,
)
from toolkit.report.tables import ci_text, efficiency_cell

_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}h2{border-bottom:1px solid #ddd;margin-top:2em}.note{color:#555;font-size:13px}
img.thumb{width:40px;height:40px;image-rendering:pixelated;margin:1px;border:2px solid transparent}"""


class _Page:
    def __init__(self, title: str, figures_dir: Path | None = None, figure_format: str = "pdf") -> None:
        self.parts = [f"<h1>{html.escape(title)}</h1>"]
        self.first_figure = True
        self.figures_dir, self.figure_format = figures_dir, figure_format
        self.static: list[Path] = []

    def h2(self, text: str) -> None:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def note(self, text: str) -> None:
        self.parts.append(f"<p class='note'>{html.escape(text)}</p>")

    def pre(self, text: str) -> None:
        self.parts.append(f"<pre>{html.escape(text)}</pre>")

    def table(self, df: pd.DataFrame, floatfmt: str = "{:.3f}") -> None:
        # a missing value (an interval from one seed or task, a mean of nothing) reads "n/a", never "NaN"
        self.parts.append(df.to_html(index=False, float_format=floatfmt.format, border=0, escape=True, na_rep="n/a"))

    def figure(self, fig: go.Figure) -> None:
        # plotly.js is inlined once, so the page works offline
        self.parts.append(fig.to_html(full_html=False, include_plotlyjs="inline" if self.first_figure else False))
        self.first_figure = False
        if self.figures_dir is not None:  # the same figure as a static file, for papers
            from toolkit.report.figures import save_static

            title = fig.layout.title.text or "figure"
            slug = re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")[:60]
            path = self.figures_dir / f"{len(self.static) + 1:02d}_{slug}.{self.figure_format}"
            self.static.append(save_static(fig, path))

    def raw(self, text: str) -> None:
        self.parts.append(text)

    def render(self) -> str:
        return f"<!doctype html><html><head><meta charset='utf-8'><style>{_CSS}</style></head><body>" \
               + "\n".join(self.parts) + "</body></html>"


def _smallest_group(rec: RunRecord) -> int:
    shares = rec.meta.get("pool_group_shares") or {}
    return max(2, round(min(shares.values()) * rec.meta["pool_size"])) if shares else 2


def _thumb(img_chw) -> str:
    from toolkit.report.explore import thumbnail_bytes

    png = thumbnail_bytes(img_chw, np.asarray(img_chw).shape[-1])  # full size, lossless
    return "data:image/png;base64," + base64.b64encode(png).decode()


def representation_sections(page: _Page, records: list[RunRecord], *, k_marked: int = 20, map_points: int = 1200,
                            seed: int = 0) -> None:
    """Separability, embedding maps and neighbourhoods, for one run per weights kind
    (the first least-confidence run of each)."""
    from toolkit.analysis.maps import EmbeddingMap
    from toolkit.analysis.neighbours import NeighbourIndex, neighbourhoods
    from toolkit.analysis.separability import GroupSeparability
    from toolkit.features.pool import pool_features

    chosen: dict[str, RunRecord] = {}
    for rec in records:
        cfg = rec.run_config
        if cfg["al"]["strategy"] != "random" and len(rec.acquisitions):
            chosen.setdefault(str(cfg["model"]["weights"]), rec)
    if not chosen:
        page.note("No uncertainty-sampling run with acquisitions: representation sections skipped.")
        return
    per_group, maps = [], []
    for weights, rec in chosen.items():
        cache, images = pool_features(rec)
        if cache.spurious is None:
            continue
        label = f"{cache.fingerprint['model']} ({weights})"
        smallest = int(pd.Series(list(zip(cache.labels, cache.spurious))).value_counts().min())
        if smallest >= 2:  # folds are stratified by group: the smallest group bounds them
            sep = GroupSeparability(cv=min(5, smallest), random_state=seed).fit(cache.embeddings, cache.labels,
                                                                                cache.spurious)
            per_group.append(sep.per_group_.assign(embedding=label))
        rng = np.random.default_rng(seed)
        first = rec.acquisitions.sort_values(["round", "score"], ascending=[True, False])["id"].to_numpy()[:k_marked]
        pos = pd.Series(np.arange(len(cache.ids)), index=cache.ids)
        marked_pos = pos[first].to_numpy()
        sample = np.union1d(rng.choice(len(cache.ids), min(map_points, len(cache.ids)), replace=False), marked_pos)
        coords = EmbeddingMap(random_state=seed).fit(cache.embeddings[sample]).embedding_
        groups = [f"y{y}_s{s}" for y, s in zip(cache.labels[sample], cache.spurious[sample])]
        marked = np.isin(sample, marked_pos)
        maps.append((label, rec.name, coords, groups, marked))
        index = NeighbourIndex().fit(cache.embeddings, cache.ids)
        nb = neighbourhoods(index, cache.embeddings, cache.ids, cache.attributes, first[:8], k=8,
                            label_column=cache.label_column, spurious_column=cache.spurious_column)
        maps[-1] = maps[-1] + (nb, images, pos, cache)
    page.h2("Group separability of the pool embeddings (paper Fig. 6)")
    page.note("Cross-validated linear probes predicting the four label x background groups; one bar per group. "
              "Pretrained embeddings should separate the mismatched groups far better.")
    if per_group:
        page.figure(separability_figure(pd.concat(per_group)))
        page.table(pd.concat(per_group)[["embedding", "group", "group_probe", "label_probe", "spurious_probe"]])
    else:
        page.note("Skipped: a group has fewer than 2 examples in the pool.")
    staged = [rec for rec in chosen.values() if rec.checkpoints()]
    if staged:
        from toolkit.analysis.separability import separability_by_stage
        from toolkit.features.pool import stage_caches

        page.h2("Group separability before finetuning, after the seed set, after more labels")
        page.note("The same probes on the embeddings of the initial weights and of the models finetuned in the "
                  "rounds the runs saved (checkpoint_rounds).")
        for rec in staged:
            weights = rec.weights
            table = separability_by_stage(stage_caches(rec), cv=min(5, _smallest_group(rec)), random_state=seed)
            page.figure(separability_figure(table.assign(embedding=weights + ": " + table["stage"]),
                                            title=f"{weights} ({rec.name}): group probe by stage"))
            page.table(table[["stage", "n_labels", "group", "group_probe", "label_probe", "spurious_probe"]])
    page.h2(f"t-SNE maps with the first {k_marked} acquired points (paper Fig. 13)")
    for label, run, coords, groups, marked, *_ in maps:
        page.figure(embedding_map_figure(coords, groups, marked=marked, title=f"{label}: run {run}"))
    page.h2("Neighbourhoods of the first acquired points")
    page.note("For each acquired point (black border): its 8 nearest pool neighbours in embedding space "
              "(faiss, exact). same_label / same_spurious = share of neighbours that agree; group_mix = "
              "number of distinct groups among them. Neighbour border colours: groups, as in the maps "
              "(y0_s0 blue, y0_s1 red, y1_s0 green, y1_s1 orange).")
    colours = {g: PALETTE[i] for i, g in enumerate(["y0_s0", "y0_s1", "y1_s0", "y1_s1"])}
    for label, run, _, _, _, nb, images, pos, cache in maps:
        page.raw(f"<h3>{html.escape(label)}</h3>")
        page.table(nb.assign(neighbour_ids=nb["neighbour_ids"].map(lambda v: " ".join(map(str, v)))))
        if images is None:
            continue
        attrs = None
        for rec in records:
            if rec.name == run:
                attrs = pd.concat([rec.acquisitions, rec.seed_set]).drop_duplicates("id").set_index("id")
        rows = []
        for _, r in nb.iterrows():
            cells = [f"<img class='thumb' style='border-color:black' src='{_thumb(images[pos[r['id']]])}'>"]
            for nid in r["neighbour_ids"]:
                g = f"y{cache.labels[pos[nid]]}_s{cache.spurious[pos[nid]]}"
                cells.append(f"<img class='thumb' title='{nid} {g}' style='border-color:{colours.get(g, '#ccc')}' "
                             f"src='{_thumb(images[pos[nid]])}'>")
            group = attrs.loc[r["id"], "group"] if attrs is not None and r["id"] in attrs.index else ""
            rows.append(f"<div>{''.join(cells)} <span class='note'>id {r['id']} {group}</span></div>")
        page.raw("".join(rows))


def explorer_section(page: _Page, records: list[RunRecord]) -> None:
    """The pool explorer (`explore.explorer_html`): the first uncertainty run of each weights
    kind, side by side on one map of the pretrained run's pool embedding."""
    from toolkit.report.explore import PoolView, explorer_html

    pools = {json.dumps(r.run_config.get("data"), sort_keys=True, default=str) for r in records}
    if len(pools) > 1:
        page.note("Pool explorer skipped: the runs do not share one pool.")
        return
    view = PoolView(records).fit()
    page.h2("Explore the pool: what each run acquired, round by round (paper Fig. 13)")
    page.note(f"Map: t-SNE of {view.map_run_}'s pool embedding ({len(view.points_)} points: a sample of the pool and "
              "every acquired point). Stars: acquired up to the slider's round. Hover a point for its image and "
              "facts; click it for its nearest neighbours in the full embedding (those on the map).")
    page.raw(explorer_html(view))


def _with_ci_text(df: pd.DataFrame, value: str, n: str, fmt: str, missing: str) -> pd.DataFrame:
    """`df` with `value`, low and high as one text column "value [95% CI]" ("1.00 (n=1)" where
    one seed gives no interval, "n/a (<missing>)" where there is no value), for the page:
    never "nan" bounds."""
    text = [ci_text(v, lo, hi, k, fmt, missing=missing)
            for v, lo, hi, k in zip(df[value], df["low"], df["high"], df[n])]
    out = df.drop(columns=["low", "high"])
    out[value] = text
    return out.rename(columns={value: f"{value} [95% CI]"})


def unfinished_runs(records: list[RunRecord]) -> list[tuple[str, int, int]]:
    """(name, labels at the last completed round, labels at the budget) of every run not finished."""
    out = []
    for rec in records:
        if rec.status != "finished":
            planned = planned_labels(rec)
            done = int(rec.rounds["n_labels"].iloc[-1]) if len(rec.rounds) else 0
            out.append((rec.name, done, int(planned) if planned == planned else "?"))
    return out


def _first_screen_section(page: _Page, folder: Path) -> None:
    """The first screen's table and curves (what the demo measures across tasks), from its files."""
    import plotly.io as pio

    text, figure = folder / "screen.txt", folder / "screen.json"
    missing = [p.name for p in (text, figure) if not p.exists()]
    if missing:
        raise MissingFileError(f"{folder} has no {', '.join(missing)}; run the first screen (./run demo) first, "
                               f"or leave first_screen out")
    page.h2("First screen: the claim across tasks")
    page.pre(text.read_text().rstrip())
    page.figure(pio.from_json(figure.read_text()))


def build_report(run_dirs: list[str | Path], out: str | Path, *, title: str = "Active-learning report",
                 representation: bool = True, figures_dir: str | Path | None = None,
                 figure_format: str = "pdf", split: str | None = None,
                 first_screen: str | Path | None = None) -> Path:
    """Write one self-contained HTML page for the given run records; returns its path.

    Args:
        run_dirs: run directories.
        out: the HTML file (written atomically).
        title: the page's title.
        representation: add separability, embedding maps, neighbourhoods and the pool
            explorer (they extract features, so they take longer).
        figures_dir: also write every figure there as a static `figure_format` file
            (pdf/png/svg), numbered in page order.
        split: the evaluation split to report (default: val when the runs have it, as the
            paper's Fig. 2, else test).
        first_screen: a folder written by the demo's first screen (`screen.txt`, `screen.json`):
            its table and curves open the page, before these runs' sections.

    Examples:
        >>> import toolkit
        >>> page = toolkit.build_report(["altk-doc/loop"], "altk-doc/report.html", representation=False)
        >>> page.name, page.stat().st_size > 100_000
        ('report.html', True)
    """
    if not run_dirs:
        raise RecordError("no run directories given")
    if Path(out).is_dir():
        raise RecordError(f"--out {out} is a folder; the report is one HTML file: pass a file name, e.g. {Path(out) / 'report.html'}")
    bar = progress(total=len(run_dirs) + 5, desc="report", unit="step")  # the runs, then 5 parts of the page
    records = []
    for d in run_dirs:
        records.append(load_run(d))
        bar.update(1)
    tidy = tidy_rounds(records)
    if split is None:
        split = default_split(tidy)
    elif f"{split}/accuracy" not in tidy.columns:
        have = sorted({c.split("/")[0] for c in tidy.columns if c.endswith("/accuracy")})
        raise RecordError(f"the runs were not evaluated on split {split!r}; they have: {', '.join(have)}")
    metrics = [f"{split}/{m}" for m in ("worst_group", "mismatched", "balanced", "accuracy", "mismatched_pooled")
               if f"{split}/{m}" in tidy]
    if figures_dir is not None:
        figures_dir = Path(figures_dir)
        figures_dir.mkdir(parents=True, exist_ok=True)
    page = _Page(title, figures_dir, figure_format)
    if first_screen is not None:
        _first_screen_section(page, Path(first_screen))
        page.h2(f"The default task, {len(records)} runs")
    page.note(f"{len(records)} runs; metrics on the {split} split; CIs are 95% Student-t intervals across seeds, "
              "clipped to [0, 1] for accuracies; an arm with one seed has no interval (n=1).")
    differ = differing_fields(records)
    if differ:
        page.note("The runs differ in config fields " + ", ".join(differ) + ". Runs are pooled as seeds only where "
                  "all of these agree: each combination is its own arm, named in the column `config` (and in "
                  "[brackets] in the figures).")

    page.h2("Final budget")
    fin = final_summary(tidy, metrics)
    if fin["n_left_out"].sum():
        page.note("Left out of the final-budget table: " + "; ".join(x for x in fin["left_out"] if x) + ".")
    unfinished = unfinished_runs(records)
    if unfinished:  # said whether or not a finished run of the same arm left them out
        page.note("Unfinished runs (killed or still running; rerun their command to resume them): " + "; ".join(
            f"{name} (last completed round at {n} labels of {budget})" for name, n, budget in unfinished)
            + ". Where an arm has only unfinished runs, its row above is their last completed round, not the budget.")
    compact = fin[[c for c in ("model", "weights", "strategy", CONFIG_COLUMN, "n_seeds", "n_labels")
                   if c in fin.columns]].copy()
    for m in metrics:
        compact[m] = [ci_text(a, lo, hi, n, bound_fmt="{:.2f}")
                      for a, lo, hi, n in zip(fin[m], fin[m + "_low"], fin[m + "_high"], fin["n_seeds"])]
    page.table(compact)
    bar.update(1)
    page.h2("Learning curves: pretrained vs unpretrained, uncertainty vs random (paper Fig. 2, 7)")
    for m in metrics[:2] + metrics[3:]:
        page.figure(learning_curve_figure(fold_config(learning_curves(tidy, m)), title=m, y_label=m.split("/")[1]))
    bar.update(1)
    page.h2("Label efficiency")
    page.note("Labels random sampling needs for its final value / labels least-confidence needs to reach it "
              "(mean curves; bootstrap 95% CI over seeds, resampling each seed with both its runs where both "
              "strategies ran the same seeds: `paired`; none from one seed). Where random never improves on its "
              "seed-set value, "
              "'>=' marks a lower bound: least-confidence gets above everything random reached, at the "
              "label count shown; n/a: neither improves. "
              "The paper's 5.8x is on plain accuracy and does not say whether the seed set counts: both "
              "conventions are shown.")
    eff_metrics = [m for m in (f"{split}/accuracy", f"{split}/worst_group") if m in tidy]
    eff = pd.concat([label_efficiency_table(tidy, m, labels_counted=c) for m in eff_metrics
                     for c in ("all", "acquired")], ignore_index=True)
    if len(eff):
        shown = eff.assign(**{"efficiency [95% CI]": [efficiency_cell(r) for _, r in eff.iterrows()]})
        page.table(shown[[c for c in ("model", "weights", CONFIG_COLUMN, "metric", "labels_counted",
                                      "efficiency [95% CI]", "budget", "n_baseline", "n_method", "paired")
                          if c in shown.columns]])
    else:
        page.note("No arm has both least-confidence and random runs with the same config: nothing to compare.")
    bar.update(1)
    page.h2("What gets acquired (paper Fig. 4, 11, 12)")
    ratios = upsampling_ratios(records)
    if len(ratios):
        summary = upsampling_summary(ratios)
        page.note("Upsampling ratio: a group's share among the acquired examples / its share in the pool "
                  "(mean over seeds, percentile-bootstrap 95% CI).")
        page.figure(upsampling_figure(fold_config(summary)))
        page.table(_with_ci_text(summary, "upsampling", "n_seeds", "{:.2f}", "nothing acquired"))
        relative = relative_upsampling(ratios)
        if len(relative):
            page.note("The paper's Fig. 4 form: share among least-confidence's acquisitions / share among "
                      "random's (bootstrap 95% CI over the seeds of each arm; none where an arm has one seed).")
            page.table(_with_ci_text(relative.assign(n=relative[["n_method", "n_baseline"]].min(axis=1)),
                                     "relative_upsampling", "n", "{:.2f}", "neither strategy acquired it")
                       .drop(columns="n"))
        over = upsampling_over_rounds(records)
        fig = go.Figure()
        arm = [c for c in ("weights", "strategy", CONFIG_COLUMN, "group") if c in over.columns]
        for i, (key, d) in enumerate(over.groupby(arm)):
            if key[1] == "random":
                continue
            fig.add_trace(go.Scatter(x=d["n_acquired"], y=d["upsampling"], mode="lines+markers",
                                     name=" / ".join(map(str, key)), line=dict(color=PALETTE[i % len(PALETTE)])))
        fig.add_hline(y=1.0, line_dash="dash", line_color="grey")
        fig.update_layout(title="Cumulative upsampling ratio over rounds (uncertainty runs)",
                          xaxis_title="examples acquired so far", yaxis_title="upsampling ratio",
                          template="plotly_white", width=800, height=450)
        page.figure(fig)
    bar.update(1)
    if representation:
        representation_sections(page, records)
        explorer_section(page, records)
    bar.update(1)
    bar.close()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, page.render())
    return out


def build_suite_report(table: pd.DataFrame, out: str | Path, *, tasks_json: str | Path | None = None,
                       command: str = "", title: str = "Robustness across toy-world tasks") -> Path:
    """The task suite's page: the claims, the aggregate, the gain-per-task figure, and every
    task with its parameters (each can be re-run alone with `altk suite --only NAME`)."""
    from toolkit.analysis.suite import aggregate, claim_shares
    from toolkit.report.figures import task_gain_figure

    page = _Page(title)
    if command:
        page.note(f"Made by: {command}")
    page.h2("Claims: share of tasks in which each holds")
    page.table(claim_shares(table), "{:.2f}")
    page.h2("Across tasks (mean [95% t-CI over tasks])")
    if len(table) < 2:
        page.note("One task: its values, with no interval across tasks (n/a).")
    page.table(aggregate(table))
    page.figure(task_gain_figure(table))
    page.h2("Per task")
    page.note("AUC gain = mean worst-group accuracy over the run's label counts, least-confidence minus random, "
              "paired over seeds; pre_up_* = upsampling of each group by pretrained least-confidence.")
    page.table(table)
    out = Path(out)
    write_atomic(out, page.render())
    return out


def build_strategy_report(rows: pd.DataFrame, summary: pd.DataFrame, out: str | Path, *, command: str = "",
                          title: str = "Which strategies find the disambiguating examples") -> Path:
    """The suite's strategy axis: the summary per backbone and strategy, the gain per task
    figure, and every task's row (`analysis.strategies`)."""
    from toolkit.report.figures import strategy_figure

    page = _Page(title)
    if command:
        page.note(f"Made by: {command}")
    page.h2("Per backbone and strategy (mean [95% t-CI over tasks])")
    page.table(summary)
    page.figure(strategy_figure(rows))
    page.h2("Per task")
    page.note("auc_gain = mean worst-group accuracy over the run's label counts, strategy minus random, paired "
              "over seeds; up_* = acquired share / pool share of each group; mismatched_first20 = mismatched "
              "examples among the first 20 acquisitions (mean over seeds).")
    page.table(rows)
    out = Path(out)
    write_atomic(out, page.render())
    return out


def build_dose_report(table: pd.DataFrame, correlations: pd.DataFrame, out: str | Path, *, command: str = "",
                      title: str = "Why pretraining helps: the pretraining dose") -> Path:
    """The pretraining-dose study's page (`altk dose`): the gain along each dose axis, how well
    each representation measure predicts it, and every backbone x task row."""
    from toolkit.analysis.dose import gain_by_dose
    from toolkit.report.figures import gain_vs_measure_figure, pretraining_dose_figure

    page = _Page(title)
    if command:
        page.note(f"Made by: {command}")
    page.h2("The gain along the pretraining dose")
    page.note("Worst-group AUC gain of least-confidence over random sampling (mean worst-group accuracy over the "
              "run's label counts, paired by seed), per backbone: mean [95% t-CI over tasks]. Dotted: random init.")
    by_dose = gain_by_dose(table)
    page.figure(pretraining_dose_figure(by_dose))
    page.table(by_dose)
    page.h2("What in the representation predicts the gain")
    page.note("Pearson and Spearman correlation of each measure with the AUC gain across backbone x task, with "
              "bootstrap 95% CIs that resample tasks. sep_* = 5-fold linear probes of the pool embedding (balanced "
              "accuracy); seed_set_* = the probe trained on the seed set alone. An association across backbones, "
              "not an intervention.")
    page.table(correlations, "{:.2f}")
    page.figure(gain_vs_measure_figure(table))
    page.h2("Per backbone and task")
    page.table(table)
    out = Path(out)
    write_atomic(out, page.render())
    return out
