"""MLflow, and only here. Everything else talks to ``Tracker``.

Identity lives in tags (MLflow compares params as strings); params carry the flattened resolved
config; artifacts carry the resolved YAML, the environment and the final checkpoint.
MLflow metric names may not contain '@', so ``recall@1`` is logged as ``test/recall_at_1``.

Concurrent writers on the default SQLite store (``--workers N``, several ``nirbench`` processes,
Ray workers on one machine). SQLite allows one writer at a time and MLflow's SQLAlchemy store
answers contention with "database is locked" once SQLite's 5 s busy timeout expires; a deferred
transaction that must upgrade from reading to writing can even fail at once. Design: a single
writer at a time, enforced by us. Every MLflow call a ``Tracker`` makes on a ``sqlite:///`` store
holds an exclusive ``fcntl`` lock on ``<db>.lock`` (re-entrant within a process, shared by its
threads), so our processes never contend inside SQLite at all; the calls are short (one batch per
epoch), so waiting for the lock costs milliseconds. A process outside this protocol (``mlflow
ui``, a notebook) can still hold SQLite's own lock for a moment: those errors are retried with
exponential backoff (0.05 s doubling to 2 s, 60 s in all) before the error is raised. Nothing is
lost: a failed SQLite transaction rolls back whole, so a retried ``log_batch`` is logged exactly
once. Other stores (``http://`` servers on PostgreSQL, see README) serialise on the server and
take no lock. ``tests/test_tracking_concurrency.py`` runs 4 writer processes and counts every
metric afterwards.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import random
import socket
import subprocess
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar
from urllib.parse import urlparse

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from nirbench.harness.config import RunConfig

log = logging.getLogger(__name__)
T = TypeVar("T")
EXPERIMENT = "nirbench"
# Search runs (one parent per Optuna study, one nested run per trial) live in their own
# experiment: they are validation runs, never table material, and `aggregate` reads EXPERIMENT.
SEARCH_EXPERIMENT = "nirbench-search"
REPO_DIR = Path(__file__).resolve().parent.parent
SUPERSEDED_TAG = "superseded_by"
PACKAGES = (
    "torch",
    "torchvision",
    "faiss-gpu",
    "faiss-cpu",
    "numpy",
    "mlflow",
    "optuna",
    "pandas",
    "pytorch-metric-learning",
    "FrEIA",
    "scikit-learn",
)


def mlflow_key(name: str) -> str:
    return name.replace("@", "_at_")


def metric_name(mlflow_name: str) -> str:
    """Inverse of ``mlflow_key`` for the metric part (``test/recall_at_1`` -> ``recall@1``)."""
    return mlflow_name.split("/", 1)[-1].replace("_at_", "@")


def default_tracking_uri(results_dir: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{results_dir.resolve()}/mlflow.db"


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before any training, when a remote tracking server does not answer
    (MLflow itself would retry for minutes and then lose the run)."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout).close()
    except OSError as err:
        raise ConnectionError(
            f"MLflow tracking server {uri} is unreachable ({err}). Start it, fix "
            f"MLFLOW_TRACKING_URI, or unset it to use the local sqlite store."
        ) from None


def git_state() -> tuple[str, str]:
    """(sha, dirty) of the checkout this code runs from; 'unknown' outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
        return sha, "true" if status.strip() else "false"
    except (OSError, subprocess.SubprocessError):
        return "unknown", "unknown"


def environment() -> dict[str, Any]:
    import torch

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpus": gpus,
        "packages": versions,
    }


def tag_value(value: Any) -> str:
    """A config value as a tag: booleans lower-case, as YAML writes them (``nir.flow=false``)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def run_tags(cfg: RunConfig, grid: str) -> dict[str, str]:
    sha, dirty = git_state()
    tags = {
        "method": cfg.method.name,
        "regularizer": cfg.regularizer_name,
        "dataset": cfg.dataset.name,
        "backbone": cfg.backbone.name,
        "seed": str(cfg.seed),
        "config_hash": cfg.config_hash,
        "arm_hash": cfg.arm_hash,
        "git_sha": sha,
        "git_dirty": dirty,
        "grid": grid,
    }
    if cfg.regularizer is not None:  # which published variant ran (PAPER.md: say it in the tags)
        from nirbench.methods import REGULARIZERS

        info = REGULARIZERS.get(cfg.regularizer.name)
        params = {**info.defaults, **cfg.regularizer.params}
        for key in (*info.variant_keys, "proxy_source", "weight"):
            if key in params:
                tags[f"{cfg.regularizer.name}.{key}"] = tag_value(params[key])
    return tags


def sqlite_lock_path(uri: str) -> Path | None:
    """The lock file that serialises writers of a local sqlite store; None for any other store."""
    if not uri.startswith("sqlite:///") or os.name != "posix":
        return None
    db = Path(uri[len("sqlite:///") :])
    return db.with_name(db.name + ".lock")


class _ProcessLock:
    """One ``flock`` per lock file per process, re-entrant and shared by the process's threads
    (two ``open`` calls in one process would conflict with each other and deadlock)."""

    _all: dict[Path, "_ProcessLock"] = {}
    _guard = threading.Lock()

    def __init__(self, path: Path) -> None:
        self.path = path
        self.thread_lock = threading.RLock()
        self.depth = 0
        self.handle: Any = None

    @classmethod
    def of(cls, path: Path) -> "_ProcessLock":
        with cls._guard:
            if path not in cls._all:
                cls._all[path] = cls(path)
            return cls._all[path]

    @contextmanager
    def held(self) -> Iterator[None]:
        import fcntl

        with self.thread_lock:
            if self.depth == 0:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.handle = open(self.path, "a")
                fcntl.flock(self.handle, fcntl.LOCK_EX)
            self.depth += 1
            try:
                yield
            finally:
                self.depth -= 1
                if self.depth == 0:
                    fcntl.flock(self.handle, fcntl.LOCK_UN)
                    self.handle.close()
                    self.handle = None


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """An exclusive lock file next to a local sqlite store; a no-op for any other store."""
    path = sqlite_lock_path(uri)
    if path is None:
        yield
        return
    with _ProcessLock.of(path.resolve()).held():
        yield


LOCKED_ERRORS = ("database is locked", "database table is locked")
RETRY_FIRST_S, RETRY_MAX_S, RETRY_TOTAL_S = 0.05, 2.0, 60.0


def with_lock_retries(call: Callable[[], T], what: str = "MLflow call") -> T:
    """``call()``, retried with exponential backoff (and jitter) while SQLite says it is locked."""
    delay, waited = RETRY_FIRST_S, 0.0
    while True:
        try:
            return call()
        except Exception as err:
            if not any(text in str(err) for text in LOCKED_ERRORS) or waited >= RETRY_TOTAL_S:
                raise
            log.warning(
                "%s: sqlite store locked by another process, retrying in %.2fs", what, delay
            )
            pause = delay * (1 + 0.25 * random.random())
            time.sleep(pause)
            waited += pause
            delay = min(2 * delay, RETRY_MAX_S)


class SerializedClient:
    """An ``MlflowClient`` whose every method call holds the store lock (sqlite stores) and is
    retried while SQLite reports itself locked (see the module docstring)."""

    def __init__(self, client: MlflowClient, uri: str) -> None:
        self._client = client
        self._uri = uri

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            def locked() -> Any:
                with _store_lock(self._uri):
                    return attr(*args, **kwargs)

            return with_lock_retries(locked, f"MlflowClient.{name}")

        return call


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    status: str
    tags: dict[str, str]
    metrics: dict[str, float]  # latest value per MLflow metric key


class Tracker:
    def __init__(
        self, results_dir: Path, uri: str | None = None, experiment: str = EXPERIMENT
    ) -> None:
        self.results_dir = Path(results_dir)
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self.uri = uri or default_tracking_uri(self.results_dir)
        check_reachable(self.uri)
        # Several processes starting on a fresh sqlite store (parallel `nirbench tune` workers)
        # would race MLflow's schema migration and the experiment's creation: serialise both.
        with _store_lock(self.uri):
            self.client = SerializedClient(
                with_lock_retries(lambda: MlflowClient(tracking_uri=self.uri), "opening the store"),
                self.uri,
            )
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                artifacts = (self.results_dir / "mlartifacts").resolve().as_uri()
                is_local = not urlparse(self.uri).scheme.startswith("http")
                self.experiment_id = self.client.create_experiment(
                    experiment, artifact_location=artifacts if is_local else None
                )
            else:
                self.experiment_id = found.experiment_id

    # ---------------------------------------------------------------- queries
    def runs(
        self, filter_string: str = "", statuses: Iterable[str] | None = None
    ) -> list[RunRecord]:
        out, token = [], None
        while True:
            page = self.client.search_runs(
                [self.experiment_id],
                filter_string=filter_string,
                max_results=1000,
                page_token=token,
            )
            for run in page:
                if statuses is None or run.info.status in statuses:
                    out.append(
                        RunRecord(
                            run.info.run_id,
                            run.info.status,
                            dict(run.data.tags),
                            dict(run.data.metrics),
                        )
                    )
            token = page.token
            if not token:
                return out

    def find(self, config_hash: str, statuses: Iterable[str]) -> RunRecord | None:
        """The newest run of this configuration in one of ``statuses``; runs another run replaced
        (tag ``superseded_by``) do not count."""
        found = [
            r
            for r in self.runs(f"tags.config_hash = '{config_hash}'", statuses=tuple(statuses))
            if SUPERSEDED_TAG not in r.tags
        ]
        return found[0] if found else None

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in self.client.get_metric_history(run_id, mlflow_key(key))]

    # ---------------------------------------------------------------- writing
    def start(
        self,
        cfg: RunConfig,
        grid: str,
        command: str,
        *,
        tags: dict[str, str] | None = None,
        parent_run_id: str | None = None,
    ) -> str:
        tags = {
            **run_tags(cfg, grid),
            "command": command,
            "mlflow.runName": f"{cfg.method.name}"
            f"{'+' + cfg.regularizer.name if cfg.regularizer else ''}"
            f"-{cfg.dataset.name}-s{cfg.seed}",
            **(tags or {}),
        }
        if cfg.validation.active:
            tags["validation"] = "fraction={fraction} folds={folds} fold={fold} seed={seed}".format(
                **vars(cfg.validation)
            )
        if parent_run_id:  # the tag, not a fluent context: nesting must work across processes
            tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(self.experiment_id, tags=tags)
        run_id = run.info.run_id
        params = [Param(k, str(v)) for k, v in sorted(cfg.flat().items())]
        for i in range(0, len(params), 100):
            self.client.log_batch(run_id, params=params[i : i + 100])
        self.client.log_text(run_id, cfg.to_yaml(), "config.yaml")
        self.client.log_dict(run_id, environment(), "environment.json")
        return run_id

    def resume(self, run_id: str) -> None:
        """The run is RUNNING again; why it stopped last time moves to ``previous_error`` /
        ``previous_killed`` so that a finished run carries no stale ``error`` tag."""
        self.client.update_run(run_id, status="RUNNING")
        tags = self.tags(run_id)
        moved = {f"previous_{k}": tags[k] for k in ("error", "killed") if k in tags}
        self.set_tags(run_id, {"resumed": "true", **moved})
        for key in ("error", "killed"):
            if key in tags:
                self.client.delete_tag(run_id, key)

    def supersede(self, old_run_id: str, new_run_id: str, reason: str) -> None:
        """``old_run_id`` cannot be continued (its checkpoint is gone): KILLED, tagged with the
        run that replaces it, and ignored by ``find`` from now on."""
        self.set_tags(old_run_id, {SUPERSEDED_TAG: new_run_id, "killed": reason[:5000]})
        self.client.set_terminated(old_run_id, "KILLED")

    def log_epoch(self, run_id: str, epoch: int, record: dict[str, float]) -> None:

        now = int(time.time() * 1000)
        metrics = [Metric(mlflow_key(k), float(v), now, epoch) for k, v in sorted(record.items())]
        self.client.log_batch(run_id, metrics=metrics)

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def finish(self, run_id: str, summary: dict[str, float]) -> None:
        self.client.log_batch(
            run_id,
            metrics=[Metric(mlflow_key(k), float(v), 0, 0) for k, v in sorted(summary.items())],
        )
        self.client.set_terminated(run_id, "FINISHED")

    def fail(self, run_id: str, err: BaseException) -> None:
        text = "".join(traceback.format_exception(err))
        self.client.set_tag(run_id, "error", f"{type(err).__name__}: {err}"[:5000])
        self.client.log_text(run_id, text, "error.txt")
        self.client.set_terminated(run_id, "FAILED")

    def pruned(self, run_id: str, epoch: int, summary: dict[str, float]) -> None:
        """A run a search pruner stopped after ``epoch``: KILLED (stopped on purpose, not a
        failure, never mistaken for a finished run), tags ``pruned=true``, ``pruned_at_epoch``."""
        tags = [RunTag("pruned", "true"), RunTag("pruned_at_epoch", str(epoch))]
        self.client.log_batch(
            run_id,
            metrics=[Metric(mlflow_key(k), float(v), 0, 0) for k, v in sorted(summary.items())],
            tags=tags,
        )
        self.client.set_terminated(run_id, "KILLED")

    def killed(self, run_id: str, reason: str) -> None:
        """A run whose process died or was interrupted (Ctrl-C, SIGTERM, a search's heartbeat
        check): KILLED, with why. Not a failure: a grid resumes it by default."""
        self.client.set_tag(run_id, "killed", reason[:5000])
        self.client.set_terminated(run_id, "KILLED")

    def fail_with(self, run_id: str, cause: str) -> None:
        """Mark FAILED for a cause seen from outside the run (its worker process died)."""
        self.client.set_tag(run_id, "error", cause[:5000])
        self.client.set_terminated(run_id, "FAILED")

    def start_plain(
        self,
        tags: dict[str, str],
        params: dict[str, Any] | None = None,
        run_name: str | None = None,
    ) -> str:
        """A run that is not a training run (e.g. the parent run of a search)."""
        if run_name:
            tags = {**tags, "mlflow.runName": run_name}
        run_id = self.client.create_run(self.experiment_id, tags=tags).info.run_id
        items = [Param(k, str(v)[:6000]) for k, v in sorted((params or {}).items())]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])
        return run_id

    def status(self, run_id: str) -> str | None:
        """The run's status, or None if it does not exist (or was deleted)."""
        try:
            run = self.client.get_run(run_id)
        except Exception:  # MlflowException: RESOURCE_DOES_NOT_EXIST
            return None
        return None if run.info.lifecycle_stage == "deleted" else run.info.status

    def set_status(self, run_id: str, status: str) -> None:
        if status == "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
        else:
            self.client.set_terminated(run_id, status)

    def delete(self, run_id: str) -> None:
        self.client.delete_run(run_id)

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:

        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[
                Metric(mlflow_key(k), float(v), now, step) for k, v in sorted(metrics.items())
            ],
        )

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def tags(self, run_id: str) -> dict[str, str]:
        return dict(self.client.get_run(run_id).data.tags)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])


__all__ = [
    "Tracker",
    "RunRecord",
    "SerializedClient",
    "with_lock_retries",
    "mlflow_key",
    "metric_name",
    "EXPERIMENT",
    "SEARCH_EXPERIMENT",
]
