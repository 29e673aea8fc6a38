"""`nirbench ...`: parse, call the library, print. No logic lives here."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("nirbench")

DESCRIPTION = """\
nirbench: does Non-isotropy Regularization (NIR, CVPR 2022) improve proxy-based deep metric
learning, and by how much? Runs DML methods with and without NIR over datasets and seeds, tracks
every run in MLflow and writes paper-style tables.

Typical use:
  nirbench grid harness/configs/grids/default.yaml   # the default grid (skips finished runs)
  nirbench aggregate --grid default                  # results/tables/table1.md
  nirbench run --config harness/configs/default.yaml --set regularizer=nir --set seed=3
"""


def results_dir_arg(value: str | None) -> Path:
    return Path(value or os.environ.get("NIRBENCH_RESULTS") or "results")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # MLflow, alembic and faiss's loader are chatty at INFO; their warnings still show.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported
    for noisy in ("alembic", "mlflow", "faiss"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; finished runs are kept, the interrupted one resumes on the next start",
              file=sys.stderr)
        return 130
    except Exception as err:  # a clear one-line error; the traceback only with --debug
        if getattr(args, "debug", False):
            raise
        from harness.config import ConfigError

        kind = "config error" if isinstance(err, ConfigError) else type(err).__name__
        print(f"nirbench: {kind}: {err}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nirbench", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--results-dir", default=None,
                        help="where the MLflow store, caches and tables live (default: $NIRBENCH_RESULTS "
                             "or ./results). MLFLOW_TRACKING_URI, when set, overrides the store.")
    common.add_argument("--debug", action="store_true", help="show full tracebacks")
    common.add_argument("--quiet", action="store_true", help="only warnings and errors")

    p = sub.add_parser("run", parents=[common], help="train and evaluate one configuration",
                       description="Train one configuration and log it to MLflow. Skips it when a "
                                   "FINISHED run with the same config hash exists; resumes it from "
                                   "its checkpoint when it was interrupted.")
    p.add_argument("--config", default=None, help="run config YAML (default: the embedded default)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, repeatable: --set method.margin=0.2 --set regularizer=nir")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_run)

    from harness.grid_cli import register_grid

    register_grid(sub, common)

    p = sub.add_parser(
        "tune", parents=[common], help="Optuna search on held-out training classes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=TUNE_HELP)
    p.add_argument("--config", default=None,
                   help="tune file: a run config plus an optional `search:` section "
                        "(e.g. harness/configs/tune/proxy_anchor_nir.yaml)")
    p.add_argument("--arm", choices=("nir", "baseline"), default=None,
                   help="nir: tune the NIR space (regularizer on); baseline: tune the method's "
                        "own space with regularizer null. Default: search.arm, else nir if the "
                        "config names a regularizer")
    p.add_argument("--n-trials", type=int, default=None, metavar="N",
                   help="target number of COMPLETE + PRUNED trials of the study (default "
                        "search.n_trials, 20); a resumed study only runs what is missing")
    p.add_argument("--storage", default=None, metavar="URL",
                   help="Optuna storage: a journal file path, or an RDB URL such as "
                        "postgresql://user:pw@host/db for many machines (default: "
                        "RESULTS/optuna/<study>.journal)")
    p.add_argument("--study", default=None, metavar="NAME",
                   help="study name (default <dataset>-<method>-<arm>); the same name resumes "
                        "or joins the study")
    p.add_argument("--final-seeds", type=int, default=None, metavar="K",
                   help="after the search, train the best config on ALL training classes for "
                        "K seeds and evaluate on test (tags stage=final, study, grid)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override of the tune file: train.epochs=3, search.metric=recall@1")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("aggregate", parents=[common], help="write results/tables from MLflow",
                       description="Build results/tables/ from the FINISHED runs in MLflow: the tidy "
                                   "runs and epochs tables (CSV + Parquet), the paper's Table 1 layout "
                                   "and an extended table (mean ± std, t 95% CI over seeds), NIR minus "
                                   "baseline paired by seed (paired t, Wilcoxon, bootstrap CI, "
                                   "verdict), published vs reproduced for cub200/cars196/sop, in "
                                   "Markdown, LaTeX, HTML and CSV. The last-epoch policy writes at the "
                                   "top of the folder, best-test/ and best-val/ hold the others.")
    p.add_argument("--grid", default=None, help="only runs of this grid (tag 'grid')")
    p.add_argument("--out", default=None, help="output folder (default: RESULTS/tables)")
    p.add_argument("--bootstrap", type=int, default=10_000, metavar="N",
                   help="bootstrap resamples for the paired intervals (default 10000)")
    p.add_argument("--bootstrap-seed", type=int, default=0, metavar="SEED",
                   help="seed of the bootstrap resampling (default 0): same seed, same intervals")
    p.set_defaults(func=cmd_aggregate)

    p = sub.add_parser("report", parents=[common], help="build the HTML report with figures",
                       description="Build RESULTS/report/index.html from the tables of `nirbench "
                                   "aggregate`: tables, NIR-vs-baseline statistics, convergence and "
                                   "gain figures (PNG + PDF in figures/), structure and tuning plots "
                                   "when their data exist, every number linked to its MLflow run, "
                                   "and the provenance. Opens offline.")
    p.add_argument("--tables", default=None, help="tables folder to read (default: RESULTS/tables)")
    p.add_argument("--out", default=None, help="output folder (default: RESULTS/report)")
    p.add_argument("--study", dest="studies", action="append", default=None, metavar="FILE",
                   help="Optuna storage file to plot (journal file or .db); repeatable "
                        "(default: the files under RESULTS/optuna/, if any)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("evaluate", parents=[common], help="metrics for saved embeddings",
                       description="Recall@k, MAP@R, R-Precision, mAP@1000 and NMI from one exact kNN "
                                   "pass (the query excluded from its own ranking), as one JSON "
                                   "object; with --structure also the embedding-structure metrics "
                                   "rho, pi_density, sigma2_kappa and g2 (harness/structure.py).")
    p.add_argument("--embeddings", required=True, help=".npy float array (N, D)")
    p.add_argument("--labels", required=True, help=".npy int array (N,)")
    p.add_argument("--recall-at", default="1,2,4,8", help="comma-separated ks (default 1,2,4,8)")
    p.add_argument("--no-nmi", action="store_true", help="skip k-means NMI")
    p.add_argument("--structure", action="store_true",
                   help="add the structure metrics of the paper's analysis table: rho (spectral "
                        "decay), pi_density, sigma2_kappa, g2 (g2 on a seeded 10,000-sample "
                        "subset above that size)")
    p.add_argument("--json", action="store_true", help="print JSON (the default output anyway)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("list", parents=[common], help="list methods, regularizers or datasets")
    p.add_argument("what", choices=("methods", "regularizers", "datasets"))
    p.add_argument("--json", action="store_true", help="machine-readable JSON list")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("config", parents=[common], help="print a resolved config and its hash",
                       description="Resolve a config with its overrides and every default, validate "
                                   "it, and print it with its hash (the run identity).")
    p.add_argument("--config", default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("ui", parents=[common], help="print (or start) the MLflow UI command")
    p.add_argument("--start", action="store_true", help="start the UI instead of printing the command")
    p.set_defaults(func=cmd_ui)

    from harness.bench.cli import register as register_bench

    register_bench(sub, common)

    from harness.data.cli import register as register_data

    register_data(sub, common)

    from harness.doctor import register as register_doctor

    register_doctor(sub, common)
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    from harness.config import load_config
    from harness.runner import execute
    from harness.tracking import Tracker

    cfg = load_config(args.config, args.overrides)
    results = results_dir_arg(args.results_dir)
    outcome = execute(cfg, Tracker(results), results, progress=not args.no_progress)
    verb = "already finished" if outcome.status == "skipped" else "finished"
    print(f"run {outcome.run_id} {verb} (config {cfg.config_hash})")
    print(json.dumps({k: round(v, 6) for k, v in outcome.metrics.items()
                      if k.startswith("test/")}, indent=None))
    return 0


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


def cmd_tune(args: argparse.Namespace) -> int:
    from harness.search import dashboard_command, final_metric, run_search, storage_location
    from harness.tune_config import load_tune_config

    tc = load_tune_config(args.config, args.overrides, arm=args.arm, n_trials=args.n_trials,
                          study=args.study, storage=args.storage, final_seeds=args.final_seeds)
    results = results_dir_arg(args.results_dir)
    location = storage_location(tc, results)
    space = ", ".join(f"{p.key}" + (f" [{p.low:g}, {p.high:g}]{' log' if p.log else ''}"
                                    if p.type != "categorical" else f" {list(p.choices)}")
                      for p in tc.space)
    v = tc.validation
    split = f"fraction {v.fraction}" if v.fraction else f"fold {v.fold} of {v.folds}"
    goal = "maximise" if tc.direction == "maximize" else "minimise"
    print(f"study {tc.study} (arm {tc.arm}, {tc.base.dataset.name}, {tc.base.method.name}"
          f"{' + ' + tc.base.regularizer_name if tc.base.regularizer else ''}): "
          f"{tc.n_trials} trials, {goal} val {tc.metric} on held-out training classes "
          f"({split}, seed {v.seed}); {tc.sampler} sampler seed {tc.seed}, {tc.pruner} pruner")
    print(f"space: {space}")
    if tc.weight_convention:
        print(f"NIR weight convention: {tc.weight_convention}")
    if tc.shared_keys:
        print(f"fairness: {', '.join(tc.shared_keys)} are not {tc.own_section} parameters; "
              f"tune them in the other arm too")
    print(f"storage: {location}", flush=True)
    outcome = run_search(tc, results, progress=not args.no_progress,
                         echo=lambda line: print(line, flush=True), plots=not args.no_plots)
    print(f"study {outcome.study}: {outcome.n_complete} complete, {outcome.n_pruned} pruned, "
          f"{outcome.n_failed} failed trials; {len(outcome.ran)} run by this process in "
          f"{outcome.seconds:.0f}s")
    if outcome.best_trial is not None:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in outcome.best_params.items())
        print(f"best: trial {outcome.best_trial}, val {tc.metric} {outcome.best_value:.4f}: "
              f"{params}")
        print(f"best config: {outcome.best_yaml}  (nirbench run --config {outcome.best_yaml})")
    for note in outcome.notes:
        print(f"note: {note}")
    for f in outcome.final:
        r1 = f.metrics.get("recall@1", float("nan"))
        print(f"final seed {f.seed}: run {f.run_id} {f.status}, test R@1 {100 * r1:.1f}")
    if outcome.final:
        mean = final_metric(outcome.final)
        print(f"final test R@1 mean over {len(outcome.final)} seeds: {100 * mean:.1f}"
              if mean is not None else "final runs have no test R@1")
        print(f"tables: nirbench aggregate --grid {tc.final_grid}")
    print(f"dashboard: {dashboard_command(location)}   (pip install optuna-dashboard)")
    return 0


def cmd_aggregate(args: argparse.Namespace) -> int:
    from harness.aggregate import write_tables
    from harness.tracking import Tracker

    import shlex

    results = results_dir_arg(args.results_dir)
    out = Path(args.out) if args.out else results / "tables"
    if args.bootstrap < 100:
        raise ValueError(f"--bootstrap must be at least 100 resamples, got {args.bootstrap}")
    command = " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]])
    files = write_tables(Tracker(results), out, grid=args.grid, resamples=args.bootstrap,
                         seed=args.bootstrap_seed, command=command)
    print(files.markdown)
    print(f"tables written to {out}/ (table1.md/.tex/.html/.csv, extended.*, comparison.*, "
          f"runs.csv/.parquet, epochs.csv/.parquet, summary.csv; {len(files.written)} files)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from dashboards.mlflow_ui import ui_command
    from dashboards.report import build_report, command_line

    results = results_dir_arg(args.results_dir)
    report = build_report(results, tables_dir=Path(args.tables) if args.tables else None,
                          out_dir=Path(args.out) if args.out else None,
                          studies=[Path(p) for p in args.studies] if args.studies else None,
                          command=command_line())
    for skipped in report.skipped:
        print(f"not drawn: {skipped.title}: {skipped.reason}")
    print(f"report: {report.index} ({len(report.figures)} figures, PNG + PDF in "
          f"{report.index.parent / 'figures'}/)")
    print(f"MLflow UI: {' '.join(ui_command(results))}   then open http://127.0.0.1:5000")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from harness.evaluation import compute_metrics

    embeddings = np.load(args.embeddings)
    labels = np.load(args.labels)
    try:
        recall_at = tuple(int(k) for k in args.recall_at.split(",") if k.strip())
    except ValueError:
        raise ValueError(f"--recall-at must be comma-separated integers, got {args.recall_at!r}")
    metrics = compute_metrics(embeddings, labels, recall_at, nmi=not args.no_nmi)
    if args.structure:
        from harness.structure import structure_metrics

        metrics.update(structure_metrics(embeddings, labels))
    print(json.dumps(metrics))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    rows = list_entries(args.what)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        return 0
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    print("  ".join(k.ljust(widths[k]) for k in keys))
    for row in rows:
        print("  ".join(str(row[k]).ljust(widths[k]) for k in keys))
    return 0


def list_entries(what: str) -> list[dict]:
    if what == "datasets":
        from harness.data import DATASETS

        return [{"name": n, "recall_at": ",".join(map(str, i.recall_at)), "needs_root": i.needs_root,
                 "description": i.description} for n, i in DATASETS.items()]
    from methods import METHODS, REGULARIZERS

    if what == "regularizers":
        return [{"name": n, "needs_proxies": i.needs_proxies, "paper": i.paper}
                for n, i in REGULARIZERS.items()]
    # nir_compatible: NIR conditions on the method's OWN proxies (the default proxy_source).
    # nir_proxy_source: the mode `regularizer.proxy_source=auto` resolves to; "own" = NIR brings
    # its own proxies and ProxyAnchor alignment (the published code's way for pair methods).
    nir = REGULARIZERS.get("nir")
    return [{"name": n, "family": i.family, "provides_proxies": i.provides_proxies,
             "nir_compatible": i.provides_proxies or not nir.needs_proxies,
             "nir_proxy_source": "method" if i.provides_proxies else "own", "paper": i.paper}
            for n, i in sorted(METHODS.items(), key=lambda item: (item[1].family != "proxy", item[0]))]


def cmd_config(args: argparse.Namespace) -> int:
    from harness.config import load_config

    cfg = load_config(args.config, args.overrides)
    print(cfg.to_yaml(), end="")
    print(f"# config_hash: {cfg.config_hash}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from dashboards.mlflow_ui import ui_command

    command = ui_command(results_dir_arg(args.results_dir))
    if not args.start:
        print(" ".join(command))
        return 0
    os.execvp(command[0], command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
