"""The `altk` command (also `python -m toolkit`): demo, pretrain, run."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from toolkit._util.log import to_stdout
from toolkit._util.paths import cache_path
from toolkit.errors import AltkError, ConfigError, RunsFailedError
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


def cmd_demo(args) -> None:
    out = args.out or cache_path("demo-real" if args.real else "demo")
    if args.probe:
        if args.set:
            raise ConfigError("--set takes full-finetuning config keys, which probe mode does not read; in --probe "
                              "mode set the protocol with --al (e.g. --al budget=60 per_round=5)")
        from toolkit.config import parse_overrides
        from toolkit.experiments.probe_demo import run_probe_demo
        from toolkit.experiments.protocols import REAL

        world = {**REAL, "separability": True} if args.real else {}
        probe_out = Path(f"{out}-probe")  # beside the full-finetuning demo's folder, never mixed with its runs
        print(f"[demo] probe mode: writing to {probe_out} (the --out folder with -probe appended)", flush=True)
        run_probe_demo(seeds=_seeds(args.seeds or "0-9"), out=probe_out,
                       al=parse_overrides(args.al) if args.al else None, **world)
        print(f"[demo] probe mode: results in {probe_out} (summary.txt, summary.csv, rounds.csv, runs/)", flush=True)
        return
    from toolkit.experiments.demo import run_demo

    if args.real:
        from toolkit.experiments.protocols import REAL

        run_demo(seeds=_seeds(args.seeds or "0-2"), out=out, workers=args.workers, overrides=args.set,
                 preset="fashion-places", legend=REAL["legend"], title="Real images (EfficientNet-Lite0)")
        return
    run_demo(seeds=_seeds(args.seeds or "0-2"), out=out, workers=args.workers, overrides=args.set,
             screen_tasks=args.screen_tasks)


def cmd_make_composite(args) -> None:
    from toolkit.data.composite import cub_objects, make_composite, places_backgrounds, waterbirds_counts

    counts = waterbirds_counts(args.n_train, args.matched_fraction, args.minority_fraction, args.n_val, args.n_test)
    out = make_composite(args.out, cub_objects(args.cub), places_backgrounds(args.places), counts=counts,
                         size=args.size, seed=args.seed,
                         describe={"matched_fraction": args.matched_fraction, "cub": args.cub, "places": args.places})
    print(f"{out} (train {sum(counts['train'].values())}, val {sum(counts['val'].values())}, "
          f"test {sum(counts['test'].values())}); run it with --set data.params.root={out}")


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
    from toolkit.features.probe import run_probe

    al = ALConfig(strategy=args.strategy, seed_size=args.seed_size, per_round=args.per_round, budget=args.budget,
                  seed_set=args.seed_set, pool_subsample=args.pool_subsample)
    evals = dict(item.split("=", 1) if "=" in item else ("test", item) for item in args.eval_cache)
    for seed in _seeds(args.seeds):
        out = Path(args.out or cache_path("probe-runs")) / f"{args.strategy}-s{seed}"
        rec = run_probe(args.cache, evals, out, al=al, seed=seed, C=args.C)
        last = rec.rounds.iloc[-1]
        metrics = "  ".join(f"{k}={last[k]:.3f}" for k in rec.rounds.columns if k.endswith("/worst_group"))
        print(f"{out}: {int(last['n_labels'])} labels  {metrics}")


def cmd_pretrain(args) -> None:
    from toolkit.models.pretrain import PretrainRecipe, pretrain_toy, toy_checkpoint

    if args.target != "toy":
        raise SystemExit(f"altk pretrain: unknown target {args.target!r}; valid: toy")
    out = Path(args.out or toy_checkpoint())
    if out.exists() and not args.force:
        raise SystemExit(f"{out} exists; pass --force to retrain and replace it")
    given = {"steps": args.steps, "n_images": args.images, "threads": args.threads}
    recipe = PretrainRecipe(**{k: v for k, v in given.items() if v is not None})
    pretrain_toy(out, recipe)


def cmd_run(args) -> None:
    from toolkit.al.loop import run_active_learning
    from toolkit.config import resolve_config

    cfg = resolve_config(args.preset, args.set)
    out = args.out or cache_path("runs", f"{Path(args.preset).stem}-{cfg.model.weights}-{cfg.al.strategy}-s{cfg.seed}")
    print(f"run record: {out}")
    run_active_learning(cfg, out)


def cmd_report(args) -> None:
    from toolkit.record import run_dirs
    from toolkit.report.html import build_report

    # a run directory, a folder of them (cache/demo/runs), or a sweep or demo folder
    dirs = [d for p in args.runs for d in run_dirs(Path(p))]
    if not dirs:
        raise FileNotFoundError(f"no run records (folders with rounds.jsonl) under {', '.join(args.runs)}")
    print(build_report(dirs, args.out, representation=not args.no_representation, figures_dir=args.figures,
                       figure_format=args.figure_format, split=args.split))


def cmd_sweep(args) -> None:
    from toolkit.al.sweep import Sweep, expand_grid, parse_grid

    sweep = Sweep(args.out, expand_grid(args.preset, parse_grid(args.grid), args.set))
    todo = sweep.todo()
    print(f"[sweep] {len(sweep.cfgs)} runs in {args.out}: {len(sweep.cfgs) - len(todo)} finished, {len(todo)} to run")
    if args.launcher == "local":
        sweep.launch_local(workers=args.workers)
    else:
        params = {"timeout_min": args.timeout_min}
        if args.partition:
            params["slurm_partition"] = args.partition
        if args.gpus:
            params["gpus_per_node"] = args.gpus
        if args.array_parallelism:
            params["slurm_array_parallelism"] = args.array_parallelism
        sweep.launch_submitit(cluster=args.cluster, **params)
    failed = sweep.failures()
    for name, line in failed.items():  # the reason, not only a status: the full traceback is in index.json
        print(f"[sweep] {name} failed: {line}", file=sys.stderr)
    have = [n for n in sweep.cfgs if (sweep.run_dir(n) / "rounds.jsonl").exists()]
    if have:
        tidy = sweep.aggregate()
        print(f"[sweep] aggregated {len(tidy)} rounds of {tidy['run'].nunique()} runs ({', '.join(have[:6])}"
              f"{', ...' if len(have) > 6 else ''}) -> {Path(args.out) / 'rounds.csv'}")
    if failed:
        print(f"[sweep] {len(failed)} of {len(sweep.cfgs)} runs failed; full errors in {Path(args.out) / 'index.json'}",
              file=sys.stderr)
        raise SystemExit(1)


def cmd_dose(args) -> None:
    from toolkit.analysis.dose import MIN_CORRELATION_ROWS, correlation_rows, dose_table, measure_correlations
    from toolkit.config import parse_overrides
    from toolkit.data.toy_tasks import draw_tasks
    from toolkit.experiments.pretraining_dose import DEFAULT_DOSES, check_study, run_dose_study
    from toolkit.report.html import build_dose_report
    from toolkit.report.tables import format_dose

    _check_dose_mode(args)
    if args.real:
        return _real_dose(args)
    if args.full:
        return _full_dose(args)
    # every argument checked before any work: a missing dose is pretrained for minutes first
    data = parse_overrides(args.data) if args.data else None
    al = parse_overrides(args.al) if args.al else None
    doses = check_study(args.doses.split(",") if args.doses is not None else list(DEFAULT_DOSES), data=data, al=al,
                        workers=args.workers)
    tasks = draw_tasks(args.tasks or 20, seed=args.task_seed)
    out = Path(args.out or cache_path("dose-study"))
    seeds = _seeds(args.seeds or "0-9")
    print(f"[dose] {len(doses)} backbones x {len(tasks)} tasks x {len(seeds)} seeds x 2 strategies, probe mode, in {out}")
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
        n = min(few.values())
        skipped = (f"correlations skipped{'' if corr.empty else ' for ' + ', '.join(few)}: {n} backbone x task "
                   f"row(s), and a correlation needs at least {MIN_CORRELATION_ROWS}; add backbones (--doses) or "
                   f"tasks (--tasks)")
    if corr.empty:
        (out / "correlations.csv").unlink(missing_ok=True)  # an earlier study's would pass for this one's
    else:
        write_atomic(out / "correlations.csv", corr.to_csv(index=False))
    text = format_dose(table, corr) + (f"\n  ({skipped})" if skipped else "")
    write_atomic(out / "dose.txt", text + "\n")
    import shlex

    command = "altk " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if argv_is_cli() else ""
    build_dose_report(table, corr, out / "dose.html", command=command)
    print("\n" + text)
    print(f"\n[dose] wrote {out / 'dose.csv'} (one row per backbone x task), "
          f"{out / 'correlations.csv' if not corr.empty else 'no correlations.csv (too few rows)'}, "
          f"{out / 'dose.html'}")
    if skipped:
        print(f"[dose] {skipped}")
    _dose_failures(study["failed"], out)


def _check_dose_mode(args) -> None:
    """Options the chosen mode would ignore are refused, not ignored."""
    if args.real and args.full:
        raise ConfigError("--real and --full are two different studies; give one")
    if args.real:
        given = [o for o, v in (("--doses", args.doses is not None), ("--tasks", args.tasks is not None),
                                ("--data", args.data), ("--set", args.set)) if v]
        if given:
            raise ConfigError(f"{', '.join(given)} do(es) not apply with --real (its backbones are "
                              f"EfficientNet-Lite0/1/2 and Lite0 from random init, on fashion_places); set the "
                              f"protocol with --al")
    elif args.full:
        given = [o for o, v in (("--al", args.al), ("--data", args.data)) if v]
        if given:
            raise ConfigError(f"{' and '.join(given)} are probe-mode options; with --full set the protocol and the "
                              f"dataset through --set (e.g. --set al.budget=60 data.params.n_train=2000)")
    elif args.set:
        raise ConfigError("--set takes full-finetuning config keys (with --full); in probe mode set the protocol with "
                          "--al and the dataset with --data")


def _dose_failures(failed: dict, out: Path) -> None:
    """The jobs given up (their worker process died twice), each with its reason, after the tables
    of the others were written."""
    if failed:
        raise RunsFailedError(f"{len(failed)} backbone x task job(s) failed; the tables above cover the others:\n"
                              + "\n".join(f"  {job}: {reason}" for job, reason in failed.items())
                              + f"\nrerun the same command to resume them (finished jobs are reused) in {out}")


def _full_dose(args) -> None:
    from toolkit.analysis.dose import dose_table, pooled_label_efficiency, task_means
    from toolkit.data.toy_tasks import draw_tasks
    from toolkit.experiments.pretraining_dose import FULL_DOSES, check_study, run_full_dose
    from toolkit.report.tables import format_screen

    doses = check_study(args.doses.split(",") if args.doses is not None else list(FULL_DOSES), workers=args.workers)
    tasks, seeds = draw_tasks(args.tasks or 3, seed=args.task_seed), _seeds(args.seeds or "0-2")
    out = Path(args.out or cache_path("dose-full"))
    print(f"[dose] {len(doses)} backbones x {len(tasks)} tasks x {len(seeds)} seeds x 2 strategies, full "
          f"finetuning (toy preset), in {out}")
    study = run_full_dose(doses, tasks, seeds, out=out, overrides=args.set, workers=args.workers)
    table = dose_table(study["records"], [])
    means = task_means(study["records"], ["test/worst_group", "test/accuracy"])
    efficiency = {c: pooled_label_efficiency(means, labels_counted=c) for c in ("all", "acquired")}
    text = format_screen(table, efficiency, n_seeds=len(seeds), title="Pretraining dose",
                         mode="full finetuning")
    write_atomic(out / "dose.csv", table.to_csv(index=False))
    write_atomic(out / "dose.txt", text + "\n")
    print("\n" + text + f"\n\n[dose] wrote {out / 'dose.csv'}, {out / 'dose.txt'}")
    if study["failed"]:  # the table covers the finished runs; the failures were named above
        raise RunsFailedError(f"{len(study['failed'])} runs failed (named above, with their last error line); "
                              f"the table covers the finished ones; full errors in {out / 'index.json'}")


def _real_dose(args) -> None:
    from toolkit.analysis.dose import backbone_table
    from toolkit.config import parse_overrides
    from toolkit.experiments.pretraining_dose import REAL_BACKBONES, run_real_dose
    from toolkit.report.figures import backbone_gain_figure
    from toolkit.report.tables import format_backbones

    out = Path(args.out or cache_path("dose-real"))
    seeds = _seeds(args.seeds or "0-9")
    print(f"[dose] {len(REAL_BACKBONES)} real backbones (EfficientNet-Lite0/1/2 ImageNet, Lite0 random init) on "
          f"fashion_places x {len(seeds)} seeds x 2 strategies, probe mode, in {out}")
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
    print("\n" + text + f"\n\n[dose] wrote {out / 'dose.csv'}, {out / 'dose.txt'}, {out / 'dose.html'}")
    _dose_failures(study["failed"], out)


def cmd_suite(args) -> None:
    import shlex

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
            raise SystemExit(f"altk suite: unknown task(s) {', '.join(unknown)}; with --tasks {args.tasks} "
                             f"--task-seed {args.task_seed} the tasks are {tasks[0].name} .. {tasks[-1].name}")
        tasks = [t for t in tasks if t.name in args.only]
    out = Path(args.out or cache_path(f"suite-{args.mode}"))
    seeds = _seeds(args.seeds or ("0-9" if args.mode == "probe" else "0-2"))
    strategies = tuple(s.strip() for s in args.strategies.split(",") if s.strip())
    print(f"[suite] {len(tasks)} tasks x 2 backbones x {len(strategies)} strategies x {len(seeds)} seeds, "
          f"{args.mode} mode, in {out}", flush=True)
    # every option goes through: run_task_suite refuses those of the other mode instead of ignoring them
    kwargs = {"data": parse_overrides(args.data) if args.data else None,
              "al": parse_overrides(args.al) if args.al else None, "overrides": args.set,
              "launcher": args.launcher,
              "launcher_kwargs": {"cluster": args.cluster, "timeout_min": args.timeout_min,
                                  **({"slurm_partition": args.partition} if args.partition else {}),
                                  **({"gpus_per_node": args.gpus} if args.gpus else {})}}
    records = run_task_suite(tasks, seeds, out=out, mode=args.mode, workers=args.workers, strategies=strategies,
                             **kwargs)
    table = suite_table(records, tasks)
    write_atomic(out / "suite.csv", table.to_csv(index=False))
    write_atomic(out / "claims.csv", claim_shares(table).to_csv(index=False))
    text = format_suite(table)
    write_atomic(out / "suite.txt", text + "\n")
    command = "altk " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if argv_is_cli() else ""
    page = build_suite_report(table, out / "suite.html", command=command)
    print("\n" + text, flush=True)
    print(f"\n[suite] wrote {out / 'suite.csv'} (one row per task), {out / 'claims.csv'}, {page}; tasks and their "
          f"parameters in {out / 'tasks.json'}; re-run one with --only NAME", flush=True)
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
        print(f"\n[suite] wrote {out / 'strategies.csv'} (one row per task x backbone x strategy), "
              f"{out / 'strategy_summary.csv'}, {page}", flush=True)


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
    print(f"[select-once] {len(configs)} configs x (full loop, select-then-finetune-once), in {out}", flush=True)
    records = run_select_once(configs, out, workers=args.workers)
    table = compare_select_once(records["full"], records["once"], task_of=task_of)
    summary = select_once_summary(table)
    write_atomic(out / "comparison.csv", table.to_csv(index=False))
    write_atomic(out / "comparison_summary.csv", summary.to_csv(index=False))
    text = format_select_once(table, summary)
    write_atomic(out / "comparison.txt", text + "\n")
    print("\n" + text, flush=True)
    print(f"\n[select-once] wrote {out / 'comparison.csv'} (one row per task x seed), {out / 'comparison_summary.csv'}",
          flush=True)


def argv_is_cli() -> bool:
    return Path(sys.argv[0]).name in ("altk", "__main__.py")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="altk", description="Why pretrained models are good active learners.")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (log lines stay)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="toy world: pretrained vs unpretrained x uncertainty vs random")
    p.add_argument("--seeds", default=None, help="e.g. 0-2 or 0,4,7 (default: 0-2, or 0-9 with --probe)")
    p.add_argument("--out", default=None, help="output folder (default: cache/demo, or cache/demo-real with --real); "
                   "with --probe the runs go to this folder with -probe appended (e.g. cache/demo-probe), printed "
                   "at the start and the end")
    p.add_argument("--workers", type=_at_least_one, default=None, help="processes (default: CPU count)")
    p.add_argument("--real", action="store_true",
                   help="EfficientNet-Lite0 (ImageNet, offline) on real-photo composites (fashion_places) "
                        "instead of the toy world")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for every run")
    p.add_argument("--probe", action="store_true", help="probe-only mode on cached features (10 seeds by default); "
                   "writes to the --out folder with -probe appended")
    p.add_argument("--al", nargs="*", default=[], metavar="KEY=VALUE",
                   help="probe mode: protocol, e.g. budget=360 per_round=20 (default: 40 + 60 by 5)")
    p.add_argument("--screen-tasks", type=int, default=5, help="the first screen: the claims in probe mode on the "
                   "suite's first K tasks, before the full-finetuning grid (toy world; 0 skips it)")
    p.set_defaults(func=cmd_demo)

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

    p = sub.add_parser("extract", help="penultimate embeddings of a dataset split into an HDF5 cache")
    p.add_argument("--model", required=True, help="a registered name, timm:<name>, open_clip:<arch>/<tag> or hf:<hub id>")
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
    p.add_argument("--out", default=None, help="folder of run records (default: <cache>/probe-runs)")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("pretrain", help="pretrain the toy backbone on the broad synthetic task")
    p.add_argument("target", choices=["toy"])
    p.add_argument("--out", default=None)
    p.add_argument("--steps", type=int, default=None, help="default: the recipe's (1700)")
    p.add_argument("--images", type=int, default=None, help="default: the recipe's (40,000)")
    p.add_argument("--threads", type=int, default=None, help="default: 1 (steadier under contention)")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_pretrain)

    model_forms = ("model.name takes a registered name (toolkit.list_models(): toy_resnet, bit_m_r50x1, vit_b16, "
                   "efficientnet_lite0/1/2, roberta_large, ...), timm:<name> for any "
                   "timm model (timm:convnext_tiny.fb_in22k), open_clip:<arch>/<tag> for an open_clip image tower "
                   "(open_clip:ViT-B-32/laion2b_s34b_b79k), or hf:<hub id> for a transformers text encoder "
                   "(hf:roberta-base). model.weights takes pretrained, random, or a local weights file "
                   "(.safetensors/.pth/.pt/.npz; a save_pretrained folder for text models).")
    p = sub.add_parser("run", help="one active-learning run from a preset plus overrides", epilog=model_forms)
    p.add_argument("preset", help="a preset name (see toolkit/presets) or a YAML path")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="e.g. al.strategy=random seed=3")
    p.add_argument("--out", default=None, help="run directory (resumes if it holds this config's partial run)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("sweep", help="a grid of runs: local process pool or submitit (Slurm)")
    p.add_argument("preset")
    p.add_argument("--grid", nargs="+", required=True, metavar="KEY=V1,V2|A-B",
                   help="e.g. seeds=0-15 strategy=least_confidence,random weights=pretrained,random")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every run")
    p.add_argument("--out", required=True, help="sweep folder (re-running resumes it)")
    p.add_argument("--launcher", choices=["local", "submitit"], default="local")
    p.add_argument("--workers", type=_at_least_one, default=None,
                   help="local: processes (default: GPUs, else CPU cores)")
    p.add_argument("--cluster", default=None, help="submitit: slurm (default when available), local, debug")
    p.add_argument("--timeout-min", type=int, default=240)
    p.add_argument("--partition", default=None)
    p.add_argument("--gpus", type=int, default=None, help="GPUs per job")
    p.add_argument("--array-parallelism", type=int, default=None)
    p.set_defaults(func=cmd_sweep)

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
    p.add_argument("--launcher", choices=["local", "submitit"], default="local")
    p.add_argument("--cluster", default=None, help="submitit: slurm, local, debug")
    p.add_argument("--timeout-min", type=int, default=240)
    p.add_argument("--partition", default=None)
    p.add_argument("--gpus", type=int, default=None)
    p.set_defaults(func=cmd_suite)

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

    p = sub.add_parser("dose", help="the pretraining-dose study: AL gain along how much, and on what, the toy "
                                    "backbone was pretrained, and the representation measures that predict it")
    p.add_argument("--doses", default=None, help="comma-separated toy_resnet weights ids, each once (default: random, "
                   "pretrained@step0,100,200,400,800, pretrained, pretrained@images5000, pretrained@shapes10); "
                   "checked, with --data and --al, before any pretraining")
    p.add_argument("--tasks", type=_at_least_one, default=None, help="K tasks drawn from the suite's task "
                   "distribution (default: 20, or 3 with --full)")
    p.add_argument("--task-seed", type=int, default=0)
    p.add_argument("--seeds", default=None, help="default: 0-9, or 0-2 with --full")
    p.add_argument("--out", default=None, help="study folder (default: <cache>/dose-study; re-running resumes)")
    p.add_argument("--workers", type=_at_least_one, default=None, help="processes (default: CPU count)")
    p.add_argument("--data", nargs="*", default=[], metavar="KEY=VALUE", help="dataset options (n_train=4000)")
    p.add_argument("--al", nargs="*", default=[], metavar="KEY=VALUE", help="protocol (budget=60 per_round=5)")
    p.add_argument("--full", action="store_true", help="full finetuning (toy preset, through the sweep) instead of "
                   "probe mode; default doses random, pretrained@step800, pretrained")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="--full: config overrides for every run")
    p.add_argument("--real", action="store_true", help="the real-network axis instead: EfficientNet-Lite0/1/2 "
                   "(ImageNet, offline) and Lite0 from random init on fashion_places (--doses, --tasks, --data and "
                   "--set do not apply and are refused)")
    p.set_defaults(func=cmd_dose)

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

    args = parser.parse_args(argv)
    to_stdout()  # the library logs; the command shows its messages as plain lines
    if args.quiet:
        os.environ["ALTK_QUIET"] = "1"
    try:
        args.func(args)
    except RunsFailedError as err:  # one line per failed run, as the message lists them
        if args.debug:
            raise
        print(f"altk {args.command}: error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    except (AltkError, ValueError, FileNotFoundError, FileExistsError) as err:
        if args.debug:
            raise
        # one line that names the option or file and what to do; --debug shows the traceback
        print(f"altk {args.command}: error: {' '.join(str(err).split())}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as err:  # a read-only folder, a full disk, a file where a folder should be
        if args.debug:
            raise
        where = f" ({err.filename})" if err.filename else ""
        print(f"altk {args.command}: error: {err.strerror or err}{where}; check the path and its permissions and "
              f"free space (--debug shows the traceback)", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
