"""MLflow -> tidy frames -> statistics -> tables and figures (``nirbench aggregate``, ``report``).

The pipeline, one file per step: ``collect`` (the only part that reads the tracker) -> ``policies``
(which epoch of each run) -> ``analysis`` (cells over seeds, arms paired by seed, ``stats``,
``published``) -> ``layouts`` (``table.Table``s, named and ordered by ``display``) -> ``render``
(Markdown, LaTeX, HTML) -> ``export`` (the files of RESULTS/tables/); ``plots`` draws the figures
the report shows. This package re-exports the names other parts use."""
from nirbench.harness.results.analysis import (
                                      Analysis,
                                      PolicyResult,
                                      analyse,
                                      compare_arms,
                                      compare_published,
                                      summarize,
)
from nirbench.harness.results.arms import arm_order, arm_title
from nirbench.harness.results.collect import Collected, collect, epochs_frame, load_tidy, runs_frame
from nirbench.harness.results.display import (
                                      METHOD_TITLES,
                                      dataset_rank,
                                      fmt,
                                      fmt_p,
                                      method_rank,
                                      metric_title,
)
from nirbench.harness.results.export import TableFiles, policy_dir, write_tables
from nirbench.harness.results.frames import BASELINE, CELL, AggregationError
from nirbench.harness.results.layouts import NO_MARKS, Marks, layouts
from nirbench.harness.results.policies import (
                                      BEST_TEST,
                                      BEST_VAL,
                                      LAST,
                                      POLICIES,
                                      Policy,
                                      PolicyUnavailable,
                                      select_epochs,
)
from nirbench.harness.results.render import TABLE_CSS, html_page, to_html, to_latex, to_markdown
from nirbench.harness.results.table import Cell, Column, Table
from nirbench.harness.results.verdicts import Verdict, verdicts

__all__ = ["NO_MARKS", "Marks", "Verdict", "arm_order", "arm_title", "method_rank", "verdicts",
           "AggregationError", "Analysis", "BASELINE", "BEST_TEST", "BEST_VAL", "CELL", "Cell",
           "Collected", "Column", "LAST", "METHOD_TITLES", "POLICIES", "Policy", "PolicyResult",
           "PolicyUnavailable", "TABLE_CSS", "Table", "TableFiles", "analyse", "collect",
           "compare_arms", "compare_published", "dataset_rank", "epochs_frame", "fmt", "fmt_p",
           "html_page", "layouts", "load_tidy", "metric_title", "policy_dir", "runs_frame",
           "select_epochs", "summarize", "to_html", "to_latex", "to_markdown", "write_tables"]
