"""The vocabulary a study shares between processes: the trial and study attributes this package
writes, the trial states that count as done, and the error that stops a search."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

PARENT_ATTR = "mlflow_parent_run_id"
WORKER_ATTR = "nirbench.worker"  # {"host", "pid", "start", "trial"} of the process running it
HEARTBEAT_ATTR = "nirbench.heartbeat"  # unix time of the last sign of life
ERROR_ATTR = "error"
SURPLUS_ATTR = "surplus"
DONE = (TrialState.COMPLETE, TrialState.PRUNED)


class SearchError(RuntimeError):
    """The search cannot go on (too many failed trials, a study set up differently)."""


def counts(study: optuna.Study) -> dict[str, int]:
    """How many trials of the study are done, complete, pruned, running, errored, failed."""
    trials = study.get_trials(deepcopy=False)
    return {
        "done": sum(t.state in DONE for t in trials),
        "complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "running": sum(t.state == TrialState.RUNNING for t in trials),
        "errors": sum(t.state == TrialState.FAIL and ERROR_ATTR in t.user_attrs for t in trials),
        "failed": sum(t.state == TrialState.FAIL for t in trials),
    }
