"""What Slurm says about a grid's array tasks: ``squeue`` for everything the controller still
holds (queued, running, and ended within ``MinJobAge``), ``sacct`` for older tasks where
accounting is enabled. Clusters without accounting storage answer ``sacct`` with "accounting
storage is disabled": the view then says so and relies on squeue and MLflow.

MLflow stays the authority on whether a configuration is done; Slurm tells where its task is
(queued, running on which node, requeued, cancelled, timed out, failed with which exit code).
"""

from __future__ import annotations

import getpass
import re
import subprocess
from dataclasses import dataclass

# Slurm states in which a task may still run (or hold its configuration's lock): a configuration
# with such a task is not submitted again.
LIVE = {
    "PENDING",
    "RUNNING",
    "CONFIGURING",
    "COMPLETING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SUSPENDED",
    "STOPPED",
    "SIGNALING",
    "STAGE_OUT",
    "RESV_DEL_HOLD",
}


@dataclass(frozen=True)
class TaskState:
    task: str  # "123_4"
    state: str  # RUNNING, PENDING, COMPLETED, CANCELLED, TIMEOUT, FAILED, ...
    node: str = ""
    reason: str = ""  # squeue's reason (Resources, BeginTime, ...) or sacct's exit code
    restarts: int = 0
    source: str = "squeue"

    @property
    def live(self) -> bool:
        return self.state in LIVE

    def describe(self) -> str:
        text = f"{self.task} {self.state}"
        if self.node and self.state not in ("PENDING",):
            text += f" on {self.node}"
        # squeue keeps the last pending reason of a task that ran: only a waiting task's counts.
        if (
            self.reason
            and self.reason != "None"
            and (self.state == "PENDING" or self.source == "sacct")
        ):
            text += f" ({self.reason})"
        if self.restarts:
            text += f", requeued {self.restarts}x"
        return text


def expand_ids(text: str) -> list[str]:
    """``123_4`` -> [123_4]; ``123_[1-3,7%2]`` -> [123_1, 123_2, 123_3, 123_7]; ``123`` -> [123]."""
    match = re.fullmatch(r"(\d+)_\[([^\]]+)\]", text)
    if not match:
        return [text]
    main, body = match.group(1), match.group(2).split("%")[0]
    out = []
    for part in body.split(","):
        low, _, high = part.partition("-")
        out += [f"{main}_{i}" for i in range(int(low), int(high or low) + 1)]
    return out


def parse_squeue(text: str) -> dict[str, TaskState]:
    """Lines of ``squeue -h -r --states=all -o '%i|%T|%N|%r'``."""
    out: dict[str, TaskState] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 4:
            continue
        task, state, node, reason = (p.strip() for p in parts[:4])
        for tid in expand_ids(task):
            out[tid] = TaskState(tid, state, node, reason, source="squeue")
    return out


def parse_sacct(text: str) -> dict[str, TaskState]:
    """Lines of ``sacct -n -P -X -o JobID,State,NodeList,ExitCode`` ("CANCELLED by 0" -> CANCELLED)."""
    out: dict[str, TaskState] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 4 or "." in parts[0]:
            continue
        task, state, node, code = (p.strip() for p in parts[:4])
        state = state.split()[0] if state else "UNKNOWN"
        for tid in expand_ids(task):
            out[tid] = TaskState(
                tid, state, node, f"exit {code}" if code != "0:0" else "", source="sacct"
            )
    return out


def _run(argv: list[str]) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None


def restarts(task: str) -> int:
    """How often Slurm requeued ``task`` (``scontrol show job``; 0 once it left the controller)."""
    done = _run(["scontrol", "show", "job", "-o", task])
    if done is None or done.returncode != 0:
        return 0
    match = re.search(r"\bRestarts=(\d+)", done.stdout)
    return int(match.group(1)) if match else 0


def query(array_ids: list[str]) -> tuple[dict[str, TaskState], list[str]]:
    """Every known array task of ``array_ids`` (job ids of arrays), and notes on what could not
    be asked (no squeue on this machine, accounting disabled)."""
    notes: list[str] = []
    found: dict[str, TaskState] = {}
    if not array_ids:
        return found, notes
    wanted = set(array_ids)
    done = _run(
        ["squeue", "-h", "-r", "--states=all", "-u", getpass.getuser(), "-o", "%i|%T|%N|%r"]
    )
    if done is None:
        notes.append("squeue not found: run --status on a machine of the cluster")
    elif done.returncode != 0:
        notes.append(f"squeue failed: {done.stderr.strip()[:200]}")
    else:
        found.update(
            {t: s for t, s in parse_squeue(done.stdout).items() if t.split("_")[0] in wanted}
        )
    missing = [j for j in array_ids if not any(t.split("_")[0] == j for t in found)]
    if missing:
        done = _run(
            [
                "sacct",
                "-n",
                "-P",
                "-X",
                "-j",
                ",".join(missing),
                "-o",
                "JobID,State,NodeList,ExitCode",
            ]
        )
        if done is None:
            notes.append("sacct not found")
        elif done.returncode != 0 or "disabled" in (done.stdout + done.stderr):
            notes.append(
                f"sacct: {(done.stderr or done.stdout).strip()[:200]} (tasks that "
                f"left the controller show as 'not in the queue')"
            )
        else:
            found.update({t: s for t, s in parse_sacct(done.stdout).items() if t not in found})
    return found, notes


__all__ = ["LIVE", "TaskState", "expand_ids", "parse_squeue", "parse_sacct", "query", "restarts"]
