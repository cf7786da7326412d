"""Plain-text tables for terminals and logs: the demo's summary, the probe demo's
separability table and the suite's summary. Each formats what `toolkit.analysis` computes."""
from __future__ import annotations

import pandas as pd

from toolkit.analysis import final_summary, gain_summary, label_efficiency_table, upsampling_ratios, upsampling_summary
from toolkit.analysis.curves import differing_fields, with_run_facts
from toolkit.analysis.separability import GroupSeparability
from toolkit.analysis.suite import CLAIMS, METRIC, aggregate, claim_shares

FINAL_METRICS = ["test/worst_group", "test/mismatched", "test/balanced", "test/accuracy"]
TOY_LEGEND = "(groups: y0=landbird, y1=waterbird; s0=land, s1=water; mismatched = y0_s1 and y1_s0)"


def ci_text(mean: float, low: float, high: float, n: int | None = None, fmt: str = "{:.3f}",
            bound_fmt: str | None = None, missing: str = "no values") -> str:
    """A mean and its interval as text: "0.992 [0.96, 1.00]"; "0.992 (n=1)" where one seed
    gives no interval; "n/a (<missing>)" where there is no mean; never "[nan, nan]"."""
    bound_fmt = bound_fmt or fmt
    if mean != mean:
        return f"n/a ({missing})"
    if low != low or high != high:
        return f"{fmt.format(mean)} ({f'n={int(n)}' if n is not None and n <= 1 else 'no interval'})"
    return f"{fmt.format(mean)} [{bound_fmt.format(low)}, {bound_fmt.format(high)}]"


def _config(r) -> str:
    """"  [al.budget=20]" where the runs differ in a config field, else ""."""
    return f"  [{r['config']}]" if "config" in r.index and r["config"] == r["config"] else ""


def format_table(tidy: pd.DataFrame, records, legend: str = TOY_LEGEND,
                 metrics: list[str] = FINAL_METRICS) -> str:
    """The demo's printed summary: final metrics with CIs, upsampling, label efficiency.
    Runs that differ in a config field are separate arms, named with it (`config`)."""
    records = list(records)
    tidy = with_run_facts(tidy, records)  # the config column, where the runs differ in a field
    metrics = [m for m in metrics if m in tidy]  # e.g. no test/mismatched for an unmatched grouping
    fin = final_summary(tidy, metrics)
    ups = upsampling_summary(upsampling_ratios(records))
    eff = pd.concat([label_efficiency_table(tidy, m, labels_counted=c)
                     for m in ("test/worst_group", "test/accuracy") for c in ("all", "acquired")], ignore_index=True)
    lines = []
    if "config" in tidy.columns:
        lines += ["The runs differ in config fields " + ", ".join(differing_fields(records)) + ": each value is its "
                  "own arm, named in [brackets].", ""]
    seeds, budgets = int(fin["n_seeds"].min()), sorted(set(fin["n_labels"]))
    budget = f"{budgets[0]} labels" if len(budgets) == 1 else f"{budgets[0]}-{budgets[-1]} labels, per arm"
    lines.append(f"Final budget ({budget}), mean [95% CI over {seeds} seeds, t, within [0, 1]]:" if seeds > 1 else
                 f"Final budget ({budget}), mean [95% CI over seeds, t, within [0, 1]; none where an arm has one "
                 f"seed (n=1)]:")
    head = f"{'weights':<11}{'strategy':<18}" + "".join(f"{m.split('/')[1]:>23}" for m in metrics)
    lines.append(head)
    for _, r in fin.iterrows():
        cells = "".join(ci_text(r[m], r[m + "_low"], r[m + "_high"], r["n_seeds"], bound_fmt="{:.2f}").rjust(23)
                        for m in metrics)
        lines.append(f"{r['weights']:<11}{r['strategy']:<18}{cells}{_config(r)}")
    lines.append("")
    lines.append("Upsampling ratio (share among acquired / share in pool), mean [95% CI]:")
    groups = sorted(ups["group"].unique())
    pool = {g: ups[ups['group'] == g]['pool_share'].iloc[0] for g in groups}
    lines.append(f"{'weights':<11}{'strategy':<18}" + "".join(f"{g + f' ({pool[g]:.1%})':>22}" for g in groups))
    arm = [c for c in ("weights", "strategy", "config") if c in ups.columns]
    for _, g in ups.groupby(arm, sort=True):
        cells = "".join(ci_text(r["upsampling"], r["low"], r["high"], r["n_seeds"], "{:.2f}", "{:.1f}",
                                "nothing acquired").rjust(22)
                        for _, r in g.sort_values("group").iterrows())
        r = g.iloc[0]
        lines.append(f"{r['weights']:<11}{r['strategy']:<18}{cells}{_config(r)}")
    lines.append(legend)
    lines.append("")
    lines.append("Worst-group gain of least-confidence over random, paired over seeds (mean [95% t-CI]); AUC = mean")
    lines.append("worst-group accuracy over the label counts of the run, so it credits a curve that rises earlier:")
    for _, r in gain_summary(tidy, "test/worst_group", by=["weights"]).iterrows():
        auc = ci_text(r["auc_gain"], r["auc_gain_low"], r["auc_gain_high"], r["n_seeds"], "{:+.3f}")
        final = ci_text(r["final_gain"], r["final_gain_low"], r["final_gain_high"], r["n_seeds"], "{:+.3f}")
        lines.append(f"  {r['weights']:<11} AUC {auc}   final {final}{_config(r)}")
    lines.append("")
    lines.append("Label efficiency (labels random needs for its final value / labels least-confidence needs")
    lines.append("to reach it; bootstrap 95% CI over seeds, paired by seed; 0 = never reached; inf = reached with")
    lines.append("the seed set alone). Where random never improves on its seed-set value the ratio is undefined; if")
    lines.append("least-confidence rises above everything random reached, the entry is a lower bound (>=):")
    lines.append("random needs more than its budget for that value. n/a = neither improves. Counted with and")
    lines.append("without the seed set: the paper does not say which its 5.8x uses.")
    for _, r in eff.iterrows():
        lines.append(f"  {r['metric'].split('/')[1]:<12}{r['labels_counted']:<22}{r['weights']:<11} "
                     f"{efficiency_cell(r)}{_config(r)}")
    return "\n".join(lines)


def efficiency_cell(r) -> str:
    """One `label_efficiency_table` row as text: "2.01x [1.78, 2.15]", ">= 1.67x [...]" for a lower
    bound, "n/a (neither improves)" where nothing is comparable, "1.50x (n=1)" where a strategy
    has one seed (no interval)."""
    if r["efficiency"] != r["efficiency"]:
        return "n/a (neither improves)"
    value = f"{'>= ' if r.get('bound', False) else ''}{r['efficiency']:.2f}x"
    if r["low"] != r["low"] or r["high"] != r["high"]:
        n = min(int(r.get("n_baseline", 1)), int(r.get("n_method", 1)))
        return f"{value} ({'n=1' if n <= 1 else 'no interval'})"
    return f"{value} [{r['low']:.2f}, {r['high']:.2f}]"


def separability_table(caches: dict[str, object]) -> str:
    """Cross-validated linear probes of the pool embeddings (paper Fig. 6), per weights."""
    rows = []
    for weights, cache in caches.items():
        sep = GroupSeparability().fit(cache.embeddings, cache.labels, cache.spurious)
        row = {"weights": weights, **{f"{t} probe": a for t, a in zip(sep.scores_["target"], sep.scores_["balanced_accuracy"])}}
        row.update({f"group probe {g}": a for g, a in zip(sep.per_group_["group"], sep.per_group_["group_probe"])})
        rows.append(row)
    return ("Group separability of the pool embeddings (5-fold linear probes; balanced accuracy, and the\n"
            "group probe's accuracy on each group; paper Fig. 6):\n" + pd.DataFrame(rows).round(3).to_string(index=False))


def format_suite(table: pd.DataFrame) -> str:
    """The printed summary: per-task gains, the aggregate, and the share of tasks per claim."""
    def ci(r, k, f="{:+.3f}"):
        return ci_text(r[k], r[k + "_low"], r[k + "_high"], r.get(k.split("_")[0] + "_n_seeds"), f)

    lines = [f"Per task ({METRIC.split('/')[1]} AUC gain of least-confidence over random, paired 95% CI; "
             "efficiency; upsampling of the two mismatched groups / matched minority group):"]
    for _, r in table.iterrows():
        mism = "/".join(f"{r[c]:.1f}" for c in sorted(c for c in r.index if c.startswith("pre_up_y"))
                        if c.split("_")[2][1:] != c.split("_")[3][1:])
        flags = "".join("Y" if r[c] else "." for c in CLAIMS)
        lines.append(f"  {r['task']:<9} pre {ci(r, 'pre_auc_gain')}  unpre {ci(r, 'unpre_auc_gain')}  "
                     f"eff {'>=' if r.get('pre_efficiency_bound', False) else ''}{r['pre_efficiency']:.2f}x  up {mism} / {r['pre_up_minority_matched']:.1f}  [{flags}]")
    lines.append("")
    lines.append(f"Across {len(table)} tasks (mean [95% t-CI over tasks]):")
    for _, r in aggregate(table).iterrows():
        lines.append(f"  {r['quantity']:<26}{ci_text(r['mean'], r['low'], r['high'], r['tasks'], '{:+.3f}')}")
    lines.append("")
    lines.append("Claims (share of tasks in which each holds; flags above in this order):")
    for _, r in claim_shares(table).iterrows():
        lines.append(f"  {r['holds']:>3}/{r['tasks']:<3} ({r['share']:.0%})  {r['claim']}: {r['meaning']}")
    return "\n".join(lines)


def format_strategies(summary: pd.DataFrame, *, first: int = 20) -> str:
    """The strategy axis's printed summary (`analysis.strategies.strategy_summary`)."""
    def ci(r, k, f="{:+.3f}"):
        if pd.isna(r[k]):
            return "n/a"
        return ci_text(r[k], r[k + "_low"], r[k + "_high"], r.get("tasks"), f)

    lines = [f"Strategies (mean [95% t-CI over tasks]): worst-group AUC gain and final gain over random; "
             f"upsampling of the mismatched groups; mismatched among the first {first} acquisitions:"]
    for weights, g in summary.groupby("weights", sort=False):
        lines.append(f"  {'pretrained' if weights == 'pretrained' else 'unpretrained'} backbone:")
        for _, r in g.iterrows():
            pos = "" if r["strategy"] == "random" else f"  gain>0 in {int(r['tasks_gain_positive'])}/{int(r['tasks'])}"
            lines.append(f"    {r['strategy']:<17} AUC {ci(r, 'auc_gain'):<26} final {ci(r, 'final_gain'):<26} "
                         f"up {ci(r, 'up_mismatched_mean', '{:.2f}'):<20} first{first} "
                         f"{ci(r, f'mismatched_first{first}', '{:.1f}')}{pos}")
    groups = sorted(c for c in summary if c.startswith("up_y"))
    if groups:
        lines += ["", "Upsampling of each group (acquired share / pool share, mean over tasks): "
                  + ", ".join(g[3:] for g in groups)]
        for _, r in summary.iterrows():
            who = "pre" if r["weights"] == "pretrained" else "unpre"
            lines.append(f"  {who:<6}{r['strategy']:<17}" + "  ".join(f"{r[g]:6.2f}" for g in groups))
    return "\n".join(lines)


def format_select_once(table: pd.DataFrame, summary: pd.DataFrame) -> str:
    """Select-on-features-then-finetune-once against the full loop (`analysis.cost`)."""
    lines = ["Per task and seed: final worst-group / accuracy, full loop vs select-then-finetune-once; overlap of "
             "the acquired sets; seconds (full / once):"]
    for _, r in table.iterrows():
        lines.append(f"  {r['task']:<16} s{r['seed']}  full {r['full_worst_group']:.3f} / {r['full_accuracy']:.3f}   "
                     f"once {r['once_worst_group']:.3f} / {r['once_accuracy']:.3f}   overlap {r['overlap']:.2f}   "
                     f"{r['full_seconds']:.0f}s / {r['once_seconds']:.0f}s")
    lines += ["", f"Across {len(table)} pairs (mean [95% t-CI]; diff = once - full, ratio = full / once):"]
    for _, r in summary.iterrows():
        q = r["quantity"]
        f = ("{:.0f}" if q.endswith(("forward", "backward")) else "{:.1f}" if q.endswith("seconds")
             else "{:+.3f}" if q.startswith("diff") else "{:.3f}")
        lines.append(f"  {r['quantity']:<22}{ci_text(r['mean'], r['low'], r['high'], r.get('n'), f)}")
    return "\n".join(lines)


def format_dose(table: pd.DataFrame, correlations: pd.DataFrame) -> str:
    """The dose study's printed summary: the gain per backbone, and the measures' correlations."""
    from toolkit.analysis.dose import gain_by_coverage, gain_by_dose

    gains = gain_by_dose(table, "auc_gain").set_index("weights")
    finals = gain_by_dose(table, "final_gain").set_index("weights")
    seps = table.groupby("weights")[["sep_label", "sep_spurious", "sep_group_worst", "seed_set_accuracy",
                                     "up_mismatched_min"]].mean()
    lines = [f"Worst-group gain of least-confidence over random, per backbone (mean [95% t-CI over "
             f"{int(gains['tasks'].max())} tasks]); the pool embedding's separability (5-fold linear probes, "
             "balanced accuracy):",
             f"{'backbone':<24}{'axis':<8}{'dose':>7}{'AUC gain':>26}{'final gain':>26}"
             f"{'label':>8}{'spur.':>7}{'worst grp':>10}{'seed acc':>9}{'up mism.':>9}"]
    for w, r in gains.iterrows():
        f, s = finals.loc[w], seps.loc[w]
        lines.append(f"{w:<24}{r['axis']:<8}{r['dose']:>7.0f}"
                     + ci_text(r["auc_gain"], r["low"], r["high"], r["tasks"], "{:+.3f}").rjust(26)
                     + ci_text(f["final_gain"], f["low"], f["high"], f["tasks"], "{:+.3f}").rjust(26)
                     + f"{s['sep_label']:>8.3f}{s['sep_spurious']:>7.3f}{s['sep_group_worst']:>10.3f}"
                       f"{s['seed_set_accuracy']:>9.3f}{s['up_mismatched_min']:>9.1f}")
    coverage = gain_by_coverage(table)
    if len(coverage):
        lines += ["", "Coverage backbones: the AUC gain by how many of the task's label shapes were among the shapes "
                  "pretrained on (mean [95% t-CI over tasks]):"]
        for _, r in coverage.iterrows():
            lines.append(f"  {r['weights']:<24}{r['label_shapes_seen']} of {r['label_shapes']} seen   "
                         f"{ci_text(r['auc_gain'], r['low'], r['high'], r['tasks'], '{:+.3f}')}   ({r['tasks']} tasks)")
    lines += ["", "How well each measure predicts the AUC gain across backbone x task (bootstrap 95% CI over tasks):"]
    for _, c in correlations.iterrows():
        lines.append(f"  {c['x']:<24} Pearson {c['pearson']:+.2f} [{c['pearson_low']:+.2f}, {c['pearson_high']:+.2f}]"
                     f"   Spearman {c['spearman']:+.2f} [{c['spearman_low']:+.2f}, {c['spearman_high']:+.2f}]"
                     f"   ({c['rows']} rows, {c['clusters']} tasks)")
    return "\n".join(lines)


def format_coverage(table: pd.DataFrame, value: str = "auc_gain") -> str:
    """The coverage design's printed contrast (`analysis.dose.coverage_design`): each backbone's
    gain on tasks whose shapes the coverage backbone saw and on their unseen twins."""
    from toolkit.analysis.dose import coverage_design

    design = coverage_design(table, value)
    n = int(design["pairs"].max())
    fmt = "{:+.3f}"
    lines = [f"Coverage design: the {value.replace('auc', 'AUC').replace('_', ' ')} on task pairs that differ only in their label shapes, "
             f"all seen or all unseen by the coverage backbone in pretraining (mean [95% t-CI over {n} pairs]); "
             "seen - unseen, and that difference beside the backbone that saw every shape:",
             f"{'backbone':<24}{'seen':>26}{'unseen':>26}{'seen - unseen':>26}{'minus pretrained':>26}"]
    for _, r in design.iterrows():
        lines.append(f"{r['weights']:<24}" + "".join(
            ci_text(r[c], r[f"{c}_low"], r[f"{c}_high"], r["pairs"], fmt).rjust(26)
            for c in ("seen", "unseen", "difference", "versus_reference")))
    return "\n".join(lines)


def format_backbones(table: pd.DataFrame) -> str:
    """The real-network axis' printed table: one row per backbone, CIs over seeds."""
    n = int(table["n_seeds"].max())
    lines = [f"Worst-group gain of least-confidence over random per backbone (mean [95% t-CI over {n} seeds]); "
             "final worst-group of each strategy; the pool embedding's separability:",
             f"{'backbone':<14}{'params':>8}{'px':>5}{'AUC gain':>26}{'final gain':>26}{'LC':>7}{'random':>8}"
             f"{'label':>8}{'spur.':>7}{'worst grp':>10}{'up mism.':>9}"]
    for _, r in table.iterrows():
        lines.append(f"{r['backbone']:<14}{r.get('params_m', float('nan')):>7.1f}M{r.get('input_size', 0):>5.0f}"
                     + ci_text(r["auc_gain"], r["auc_gain_low"], r["auc_gain_high"], r["n_seeds"], "{:+.3f}").rjust(26)
                     + ci_text(r["final_gain"], r["final_gain_low"], r["final_gain_high"], r["n_seeds"],
                               "{:+.3f}").rjust(26)
                     + f"{r['lc_final']:>7.3f}{r['rnd_final']:>8.3f}{r.get('sep_label', float('nan')):>8.3f}"
                       f"{r.get('sep_spurious', float('nan')):>7.3f}{r.get('sep_group_worst', float('nan')):>10.3f}"
                       f"{r['up_mismatched_min']:>9.1f}")
    return "\n".join(lines)


def format_screen(table: pd.DataFrame, efficiency: dict[str, pd.DataFrame], *, n_seeds: int,
                  title: str = "First screen", mode: str = "probe mode") -> str:
    """The demo's first table: per backbone, both strategies' final worst-group, the gain of
    least-confidence over random and the mismatched groups' upsampling (mean [95% t-CI over
    tasks]); then label efficiency of the task-averaged curves (`efficiency`: by "all"/"acquired")."""
    from toolkit.analysis.dose import gain_by_dose

    def cell(by: pd.DataFrame, w: str, value: str, fmt: str) -> str:
        r = by.loc[w]
        return ci_text(r[value], r["low"], r["high"], r.get("tasks"), fmt)

    cols = {"lc_final": "{:.3f}", "rnd_final": "{:.3f}", "auc_gain": "{:+.3f}", "final_gain": "{:+.3f}",
            "up_mismatched_min": "{:.1f}"}
    by = {c: gain_by_dose(table, c).set_index("weights") for c in cols}
    order = by["auc_gain"].sort_values("dose", key=lambda d: d.where(by["auc_gain"]["axis"] != "random", -1)).index
    n_tasks, budget = int(by["auc_gain"]["tasks"].max()), int(efficiency["all"]["budget"].max())
    lines = [f"{title}: the suite's first {n_tasks} toy tasks (a rule fixed before looking), {n_seeds} seeds "
             f"each, {mode}, up to {budget} labels.",
             f"Worst-group test accuracy, mean [95% t-CI over {n_tasks} tasks]; gain = least-confidence minus random, "
             "paired by seed;",
             "up. mismatched = the less upsampled of the two mismatched groups under least-confidence "
             "(acquired share / pool share):",
             f"{'backbone':<20}{'least-conf. final':>23}{'random final':>23}{'AUC gain':>26}{'final gain':>26}"
             f"{'up. mismatched':>18}"]
    for w in order:
        lines.append(f"{w:<20}" + "".join(cell(by[c], w, c, f).rjust(n) for (c, f), n in
                                          zip(cols.items(), (23, 23, 26, 26, 18))))
    lines += ["", "Label efficiency of the task-averaged worst-group curves: labels random needs for its final value",
              "/ labels least-confidence needs to reach it (bootstrap 95% CI over tasks). '>=' marks a lower bound,",
              "where random never improves on its seed set and least-confidence rises above all random reached:"]
    for w in order:
        cells = []
        for c, name in (("all", "seed set counted"), ("acquired", "acquired only")):
            e = efficiency[c].set_index("weights")
            cells.append(f"{name} {efficiency_cell(e.loc[w]) if w in e.index else 'n/a'}")
        lines.append(f"  {w:<20}" + "   ".join(cells))
    return "\n".join(lines)


# ---- interventions on the representation (issue #33) ------------------------------------------------

def format_interventions(summary: pd.DataFrame, *, title: str, skipped: pd.DataFrame | None = None) -> str:
    """An experiment's printed table: per representation, the gain over tasks and its measures
    (`analysis.gain_law.gain_by_representation` output); then what could not be made, and why.

    Args:
        summary: one row per representation.
        title: the experiment's title.
        skipped: rows with representation, task and reason (`experiments.interventions.load_skipped`).
    """
    tasks = int(summary["tasks"].max())
    lines = [f"{title}.", f"Worst-group AUC gain of least-confidence over random (mean [95% t-CI over {tasks} "
             f"task(s)]); the pool's separability (5-fold probes, balanced accuracy), the full-data probe's error "
             f"and the mismatched groups' upsampling:",
             f"{'representation':<30}{'AUC gain':>26}{'label':>8}{'spur.':>7}{'worst grp':>10}{'full err':>9}"
             f"{'up mism.':>9}"]
    for _, r in summary.iterrows():
        lines.append(f"{r['representation']:<30}" + ci_text(r["auc_gain"], r["low"], r["high"], r["tasks"],
                                                             "{:+.3f}").rjust(26)
                     + "".join(f"{r.get(c, float('nan')):>{w}.3f}" for c, w in
                               (("sep_label", 8), ("sep_spurious", 7), ("sep_group_worst", 10), ("full_error", 9)))
                     + f"{r.get('up_mismatched_min', float('nan')):>9.1f}")
    if skipped is not None and len(skipped):
        lines.append(f"Not made ({len(skipped)}):")
        lines += [f"  {r['representation']} on {r['task']}: {r['reason']}" for _, r in skipped.iterrows()]
    return "\n".join(lines)


def format_phase(phase: pd.DataFrame, value: str = "auc_gain") -> str:
    """The phase diagram as a text grid: the gain per (attribute row, label column) cell, then
    the mismatched upsampling (`analysis.gain_law.phase_table` output).

    Args:
        phase: the cells.
        value: the gain column.
    """
    lines = [f"Phase diagram (synthetic Gaussian representations; mean over {int(phase['tasks'].max())} task "
             f"composition(s)): rows = attribute separability, columns = label separability (Bayes accuracies)."]
    for column, name, fmt in ((value, "AUC gain of least-confidence over random", "{:+.3f}"),
                              ("up_mismatched_min", "upsampling of the less-upsampled mismatched group", "{:.1f}")):
        grid = phase.pivot(index="attribute_separability", columns="label_separability", values=column)
        lines += ["", f"{name}:", "attr / label".ljust(14) + "".join(f"{c:>9g}" for c in grid.columns)]
        lines += [f"{a:<14g}" + "".join(fmt.format(v).rjust(9) for v in row) for a, row in grid.iterrows()]
    return "\n".join(lines)


def format_law(law: pd.DataFrame, partial: pd.DataFrame) -> str:
    """The gain law's out-of-sample scores (`analysis.gain_law.evaluate_law` rows with a "law"
    column; the primary law first) and the partial correlations (`partial_correlations`).

    Args:
        law: evaluations of each candidate law.
        partial: one row per measure.
    """
    lines = ["The gain law, fitted on the dose study's step-axis rows (Pearson, Spearman, R^2 of predicted against "
             "measured gain; bootstrap 95% CIs over tasks; the published anchor: Pearson 0.79, in sample):"]
    for (name, primary), g in law.groupby(["law", "primary"], sort=False):
        lines.append(f"{'* ' if primary else '  '}{name}")
        for _, r in g.iterrows():
            lines.append(f"    {r['evaluation']:<32}" + "   ".join(
                f"{m} {ci_text(r[m], r[f'{m}_low'], r[f'{m}_high'], fmt='{:+.2f}', missing='too few rows')}"
                for m in ("pearson", "spearman", "r2")) + f"   ({r['rows']} rows, {r['clusters']} tasks)")
    lines += ["", "Partial correlation of the gain with each measure, controlling for the full-data probe's error "
              "(Mussmann & Liang's quantity):"]
    for _, r in partial.iterrows():
        partial = ci_text(r["partial"], r["partial_low"], r["partial_high"], fmt="{:+.2f}")
        lines.append(f"  {r['x']:<24} partial {partial}"
                     f"   (plain {r['pearson']:+.2f}; Spearman partial {r['partial_spearman']:+.2f})"
                     f"   ({r['rows']} rows, {r['clusters']} tasks)")
    return "\n".join(lines)


def format_predictions(predictions: pd.DataFrame, evaluations: list[str]) -> str:
    """The primary law's predictions for held-out backbones beside their measured gains
    (`analysis.gain_law.prediction_summary`): what the diagnostic says before any AL run.

    Args:
        predictions: `analysis.gain_law.law_predictions` output.
        evaluations: the held-out sets to show (e.g. "real networks").
    """
    from toolkit.analysis.gain_law import prediction_summary

    summary = prediction_summary(predictions, evaluations)
    lines = ["The diagnostic on backbones the law was not fitted on: the law's prediction (mean over tasks, with its mean "
             "95% interval for one backbone x task) beside the measured AUC gain (mean [95% t-CI over tasks]), and the "
             "share of rows whose measured gain falls inside their interval:",
             f"{'set':<30}{'backbone':<24}{'predicted':>26}{'measured':>26}{'inside':>8}{'tasks':>7}"]
    for _, r in summary.iterrows():
        lines.append(f"{r['evaluation']:<30}{str(r['name']):<24}"
                     + f"{r['predicted']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}]".rjust(26)
                     + ci_text(r["measured"], r["measured_low"], r["measured_high"], r["tasks"], "{:+.3f}").rjust(26)
                     + f"{r['inside']:>8.0%}{r['tasks']:>7}")
    return "\n".join(lines)


def format_diagnosis(result: dict) -> str:
    """`experiments.diagnose.predict_gain`'s result as text.

    Args:
        result: its dict.
    """
    m = result["measures"]
    lines = [f"Representation of {result['cache']}:"]
    lines += [f"  {k:<24}{v:.3f}" for k, v in m.items()]
    lines += ["", f"Gain law: {result['law']}",
              f"Predicted worst-group AUC gain of least-confidence over random: {result['predicted_gain']:+.3f} "
              f"[{result['low']:+.3f}, {result['high']:+.3f}] ({result['level']:.0%} interval for one backbone x task)"]
    cell = result.get("phase_cell")
    if cell:
        lines.append(f"Nearest phase-diagram cell (label {cell['label_separability']:g}, attribute "
                     f"{cell['attribute_separability']:g}; measured {cell['sep_label']:.3f}, "
                     f"{cell['sep_spurious']:.3f}): gain {cell['auc_gain']:+.3f}, mismatched upsampling "
                     f"{cell['up_mismatched_min']:.1f}")
    return "\n".join(lines)
