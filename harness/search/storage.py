"""Where a study lives: a JournalStorage file under RESULTS/optuna/ by default (safe for several
processes on one machine or an NFS share), or an RDB URL (PostgreSQL) for many machines."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from urllib.parse import urlparse, urlunparse

from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalStorage

from nirbench.harness.search.tune_file import TuneConfig

log = logging.getLogger(__name__)


SEARCH_DIR = "optuna"


# ============================================================================ storage
def storage_location(tc: TuneConfig, results_dir: Path) -> str:
    if tc.storage:
        return tc.storage
    return str((results_dir / SEARCH_DIR / f"{tc.study}.journal").resolve())


def is_url(location: str) -> bool:
    return "://" in location


def display_location(location: str) -> str:
    """The storage as it may be printed and logged: an RDB URL without its password."""
    if not is_url(location):
        return location
    parsed = urlparse(location)
    if parsed.password:
        netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@")
        return urlunparse(parsed._replace(netloc=netloc))
    return location


def open_storage(tc: TuneConfig, results_dir: Path) -> BaseStorage:
    location = storage_location(tc, results_dir)
    if is_url(location):
        if location.startswith("sqlite"):
            log.warning(
                "SQLite storage: fine for one worker, 'database is locked' for several; "
                "use the default journal file or PostgreSQL for parallel workers"
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            return RDBStorage(
                location,
                heartbeat_interval=tc.heartbeat_s,
                grace_period=tc.grace_s,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                    max_retry=tc.max_retry
                ),
            )
    path = Path(location)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The default lock (JournalFileSymlinkLock) is safe across processes and on NFS.
    return JournalStorage(JournalFileBackend(str(path)))


def native_heartbeat(storage: BaseStorage) -> bool:
    return isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None


def dashboard_command(location: str) -> str:
    """How to open the study in optuna-dashboard (a journal file is recognised by its path)."""
    return f"optuna-dashboard {display_location(location)}"
