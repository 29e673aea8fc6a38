"""`nirbench tune`: Optuna search on held-out training classes.
Parsing and printing only; the work is in the library."""

from __future__ import annotations

import argparse

from nirbench.harness.cli.common import progress_bars, results_dir_arg


TUNE_HELP = """\
Optuna search for the best hyperparameters of one arm on one dataset, without touching the test
classes: every trial trains on the training classes minus a class-disjoint validation split and
is scored on that split (default metric map@r, pruned per epoch; median pruner, seeded TPE).

Fairness (Reality Check): never compare a tuned NIR arm with an untuned baseline. Tune both arms
with the same tune file, budget and final seeds, then aggregate their final runs together:

  nirbench tune --config harness/configs/tune/proxy_anchor_nir.yaml --arm baseline --final-seeds 3
  nirbench tune --config harness/configs/tune/proxy_anchor_nir.yaml --arm nir --final-seeds 3
  nirbench aggregate --grid tune-synth-cub-proxy_anchor

--arm baseline tunes the method's own registered space with regularizer null; --arm nir tunes
the NIR space (weight in the config's weight_convention, flow lr multiplier; the tune file may
add more). Run the same command in several processes (or machines, with --storage
postgresql://...) to share one study; start it again to resume. Results: RESULTS/optuna/
(<study>.journal, <study>-best.yaml: a run config for `nirbench run --config`, plots, trials
CSV); MLflow experiment nirbench-search (one parent run per study, one nested run per trial).
"""


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "tune",
        parents=[common],
        help="Optuna search on held-out training classes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=TUNE_HELP,
    )
    p.add_argument(
        "--config",
        default=None,
        help="tune file: a run config plus an optional `search:` section "
        "(e.g. harness/configs/tune/proxy_anchor_nir.yaml)",
    )
    p.add_argument(
        "--arm",
        choices=("nir", "baseline"),
        default=None,
        help="nir: tune the NIR space (regularizer on); baseline: tune the method's "
        "own space with regularizer null. Default: search.arm, else nir if the "
        "config names a regularizer",
    )
    p.add_argument(
        "--n-trials",
        type=int,
        default=None,
        metavar="N",
        help="target number of COMPLETE + PRUNED trials of the study (default "
        "search.n_trials, 20); a resumed study only runs what is missing",
    )
    p.add_argument(
        "--storage",
        default=None,
        metavar="URL",
        help="Optuna storage: a journal file path, or an RDB URL such as "
        "postgresql://user:pw@host/db for many machines (default: "
        "RESULTS/optuna/<study>.journal)",
    )
    p.add_argument(
        "--study",
        default=None,
        metavar="NAME",
        help="study name (default <dataset>-<method>-<arm>); the same name resumes "
        "or joins the study",
    )
    p.add_argument(
        "--final-seeds",
        type=int,
        default=None,
        metavar="K",
        help="after the search, train the best config on ALL training classes for "
        "K seeds and evaluate on test (tags stage=final, study, grid)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted override of the tune file: train.epochs=3, search.metric=recall@1",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no per-batch progress bars (they are drawn only when stderr is a "
        "terminal; otherwise one log line per epoch)",
    )
    p.add_argument(
        "--executor",
        choices=("local", "slurm"),
        default="local",
        help="local: this process is one worker of the study (default); slurm: "
        "--workers array tasks on a Slurm cluster share the study (journal file "
        "on the shared results folder, or --storage postgresql://...)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="slurm executor: N array tasks work on the study at once (default 1); "
        "on one machine, start this command in N shells instead",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="slurm executor: print the sbatch script and submit nothing",
    )
    from nirbench.harness.cli.slurm import add_slurm_arguments

    add_slurm_arguments(p, resources=True)
    p.set_defaults(func=cmd_tune)


def cmd_tune(args: argparse.Namespace) -> int:
    if args.executor == "slurm":
        from nirbench.harness.cli.slurm import cmd_tune_slurm

        return cmd_tune_slurm(args)
    if args.workers != 1 or args.dry_run:
        raise ValueError(
            "--workers and --dry-run apply to --executor slurm; on one machine "
            "start the same command in several shells to share the study"
        )
    from nirbench.harness.search.final import final_metric
    from nirbench.harness.search.storage import dashboard_command, storage_location
    from nirbench.harness.search.study import run_search
    from nirbench.harness.search.tune_file import load_tune_config

    tc = load_tune_config(
        args.config,
        args.overrides,
        arm=args.arm,
        n_trials=args.n_trials,
        study=args.study,
        storage=args.storage,
        final_seeds=args.final_seeds,
    )
    results = results_dir_arg(args.results_dir)
    location = storage_location(tc, results)
    space = ", ".join(
        f"{p.key}"
        + (
            f" [{p.low:g}, {p.high:g}]{' log' if p.log else ''}"
            if p.type != "categorical"
            else f" {list(p.choices)}"
        )
        for p in tc.space
    )
    v = tc.validation
    split = f"fraction {v.fraction}" if v.fraction else f"fold {v.fold} of {v.folds}"
    goal = "maximise" if tc.direction == "maximize" else "minimise"
    print(
        f"study {tc.study} (arm {tc.arm}, {tc.base.dataset.name}, {tc.base.method.name}"
        f"{' + ' + tc.base.regularizer_name if tc.base.regularizer else ''}): "
        f"{tc.n_trials} trials, {goal} val {tc.metric} on held-out training classes "
        f"({split}, seed {v.seed}); {tc.sampler} sampler seed {tc.seed}, {tc.pruner} pruner"
    )
    print(f"space: {space}")
    if tc.weight_convention:
        print(f"NIR weight convention: {tc.weight_convention}")
    if tc.shared_keys:
        print(
            f"fairness: {', '.join(tc.shared_keys)} are not {tc.own_section} parameters; "
            f"tune them in the other arm too"
        )
    print(f"storage: {location}", flush=True)
    outcome = run_search(
        tc,
        results,
        progress=progress_bars(args.no_progress),
        echo=lambda line: print(line, flush=True),
        plots=not args.no_plots,
    )
    print(
        f"study {outcome.study}: {outcome.n_complete} complete, {outcome.n_pruned} pruned, "
        f"{outcome.n_failed} failed trials; {len(outcome.ran)} run by this process in "
        f"{outcome.seconds:.0f}s"
    )
    if outcome.best_trial is not None:
        params = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in outcome.best_params.items()
        )
        print(
            f"best: trial {outcome.best_trial}, val {tc.metric} {outcome.best_value:.4f}: {params}"
        )
        print(f"best config: {outcome.best_yaml}  (nirbench run --config {outcome.best_yaml})")
    for note in outcome.notes:
        print(f"note: {note}")
    for f in outcome.final:
        r1 = f.metrics.get("recall@1", float("nan"))
        print(f"final seed {f.seed}: run {f.run_id} {f.status}, test R@1 {100 * r1:.1f}")
    if outcome.final:
        mean = final_metric(outcome.final)
        print(
            f"final test R@1 mean over {len(outcome.final)} seeds: {100 * mean:.1f}"
            if mean is not None
            else "final runs have no test R@1"
        )
        print(f"tables: nirbench aggregate --grid {tc.final_grid}")
    print(f"dashboard: {dashboard_command(location)}   (pip install optuna-dashboard)")
    return 0
