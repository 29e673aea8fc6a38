"""Run a grid's jobs on this machine, N at a time, each in its own worker process.

Why processes: a run that segfaults, is killed by the kernel's OOM killer or by SIGKILL takes
only its worker down; the grid records that run FAILED with the cause and starts a fresh worker.
Workers are started with ``spawn`` (no CUDA state is ever forked) and live for many runs, so the
cost of importing torch and MLflow and opening the store (4-5 s here) is paid once per worker,
not once per run. Each worker talks to the grid through its own pipe: a worker killed mid-write
can corrupt only its own channel.

Pinning: with GPUs, slot i runs on ``gpus[i % len(gpus)]`` (its ``CUDA_VISIBLE_DEVICES``), up to
``runs_per_gpu`` slots per GPU; on the CPU each worker gets ``max(1, cores // workers)`` torch
threads so that N workers do not oversubscribe the cores. A worker dies with the grid
(``PR_SET_PDEATHSIG``), and an interrupted grid (Ctrl-C, SIGTERM) interrupts its workers, whose
runs end KILLED and resume on the next start.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import signal
import sys
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

from nirbench.harness.grid.executors.job import Job, JobResult, JobSettings, run_job, warm_up
from nirbench.harness.grid.status import FAILED

log = logging.getLogger(__name__)
STOP_GRACE_S = 60.0  # how long an interrupted worker may take to record its run as KILLED


@dataclass(frozen=True)
class Slot:
    index: int
    gpu: str | None  # a CUDA_VISIBLE_DEVICES entry, None on the CPU
    threads: int

    def describe(self) -> str:
        return f"worker {self.index}" + (f" (GPU {self.gpu})" if self.gpu is not None else "")


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries (ids or UUIDs)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def plan_slots(
    workers: int | None, *, gpus: list[str], runs_per_gpu: int = 1, cores: int | None = None
) -> list[Slot]:
    """``workers=None`` (auto): one slot per ``runs_per_gpu`` x GPU; on the CPU 2 workers when
    there are at least 2 cores (measured on 2 cores: 2 workers with 1 thread each ran a 6-run grid
    16% faster than 1 worker with 2 threads; small models do not scale across threads), else 1."""
    cores = cores or os.cpu_count() or 1
    if runs_per_gpu < 1:
        raise ValueError(f"--runs-per-gpu must be at least 1, got {runs_per_gpu}")
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be at least 1 (or auto), got {workers}")
    if gpus:
        capacity = len(gpus) * runs_per_gpu
        count = capacity if workers is None else workers
        if count > capacity:
            raise ValueError(
                f"--workers {workers} exceeds {len(gpus)} GPU(s) x --runs-per-gpu "
                f"{runs_per_gpu} = {capacity}; raise --runs-per-gpu or lower "
                f"--workers"
            )
        return [Slot(i, gpus[i % len(gpus)], max(1, cores // count)) for i in range(count)]
    count = min(2, cores) if workers is None else workers
    return [Slot(i, None, max(1, cores // count)) for i in range(count)]


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker when the grid process dies, however it dies."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError as err:
        log.warning("cannot tie the worker's life to the grid's (%s)", err)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def worker_main(
    slot: Slot, settings: JobSettings, conn: Connection, parent_pid: int, log_level: int
) -> None:
    """A worker's life: take a job, run it, send the result back, until told to stop (None)."""
    _die_with_parent()
    if os.getppid() != parent_pid:  # the grid died before prctl took effect
        return
    signal.signal(signal.SIGTERM, _interrupt)  # the runner records the run KILLED, resumable
    if slot.gpu is not None:  # before anything initialises CUDA in this process
        os.environ["CUDA_VISIBLE_DEVICES"] = slot.gpu
    logging.basicConfig(
        level=log_level,
        format=f"%(asctime)s w{slot.index} %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("alembic", "mlflow", "faiss"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = dataclasses.replace(settings, threads=slot.threads)
    try:
        warm_up(settings)
        while True:
            job = conn.recv()
            if job is None:
                return
            conn.send(("started", job.config_hash, os.getpid()))
            conn.send(("done", job.config_hash, run_job(job, settings)))
    except (KeyboardInterrupt, EOFError):
        return  # stopped by the grid, or the grid is gone


@dataclass
class _Worker:
    slot: Slot
    process: multiprocessing.process.BaseProcess
    conn: Connection
    job: Job | None = None


def death_cause(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = (
            " (out of memory? the kernel's OOM killer sends SIGKILL)"
            if -exitcode == signal.SIGKILL
            else ""
        )
        return f"worker process killed by {name}{hint}"
    return f"worker process exited with code {exitcode} in the middle of the run"


class LocalExecutor:
    name = "local"

    def __init__(
        self,
        workers: int | None = None,
        *,
        gpus: list[str] | None = None,
        runs_per_gpu: int = 1,
        log_level: int = logging.WARNING,
    ) -> None:
        self.slots = plan_slots(
            workers, gpus=visible_gpus() if gpus is None else gpus, runs_per_gpu=runs_per_gpu
        )
        self.parallel = len(self.slots)
        self.log_level = log_level

    def describe(self) -> str:
        gpus = sorted({s.gpu for s in self.slots if s.gpu is not None})
        where = (
            f"GPU(s) {', '.join(gpus)}" if gpus else f"CPU, {self.slots[0].threads} thread(s) each"
        )
        return f"local executor: {self.parallel} worker process(es) on {where}"

    def run(
        self, jobs: list[Job], settings: JobSettings, progress, on_crash=None
    ) -> list[JobResult]:
        """Run every job; ``progress`` gets started/finished events; ``on_crash(job, cause)`` is
        called when a worker dies in the middle of a job (to mark its MLflow run FAILED)."""
        ctx = multiprocessing.get_context("spawn")
        pending, results = deque(jobs), []
        workers: list[_Worker] = []

        def launch(slot: Slot) -> _Worker:
            ours, theirs = ctx.Pipe()
            process = ctx.Process(
                target=worker_main,
                name=f"nirbench-{slot.describe()}",
                args=(slot, settings, theirs, os.getpid(), self.log_level),
                daemon=False,
            )
            process.start()
            theirs.close()
            return _Worker(slot, process, ours)

        def give_work(worker: _Worker) -> None:
            worker.job = pending.popleft() if pending else None
            try:
                worker.conn.send(worker.job)
            except (BrokenPipeError, OSError):  # found dead at the next wait()
                pass

        def handle(worker: _Worker, message: tuple) -> None:
            kind, config_hash = message[0], message[1]
            if worker.job is None or config_hash != worker.job.config_hash:
                return
            if kind == "started":
                progress.started(worker.job, worker.slot.describe())
            else:
                results.append(message[2])
                progress.finished(worker.job, message[2])
                give_work(worker)

        try:
            for slot in self.slots[: len(jobs)]:
                workers.append(launch(slot))
                give_work(workers[-1])
            while any(w.job is not None for w in workers):
                waiting = {w.conn: w for w in workers if w.job is not None}
                sentinels = {w.process.sentinel: w for w in workers if w.job is not None}
                for ready in wait([*waiting, *sentinels], timeout=5.0):
                    worker = waiting.get(ready) or sentinels[ready]
                    try:
                        while worker.job is not None and worker.conn.poll():
                            handle(worker, worker.conn.recv())
                    except (EOFError, OSError):
                        pass
                    if worker.job is not None and not worker.process.is_alive():
                        self._crashed(worker, results, progress, on_crash)
                        index = workers.index(worker)
                        workers[index] = launch(worker.slot)
                        give_work(workers[index])
            for worker in workers:
                worker.process.join(timeout=STOP_GRACE_S)
        except KeyboardInterrupt:
            self._stop(workers)
            raise
        finally:
            for worker in workers:
                if worker.process.is_alive():
                    worker.process.kill()
                worker.conn.close()
        return results

    @staticmethod
    def _crashed(worker: _Worker, results: list[JobResult], progress, on_crash) -> None:
        worker.process.join()
        cause = death_cause(worker.process.exitcode)
        job = worker.job
        assert job is not None
        if on_crash is not None:
            on_crash(job, cause)
        result = JobResult(job.config_hash, FAILED, error=cause)
        results.append(result)
        progress.finished(job, result)
        worker.job = None
        worker.conn.close()

    @staticmethod
    def _stop(workers: list[_Worker]) -> None:
        """Interrupt every worker (their runs end KILLED, resumable) and wait for them."""
        print(
            f"stopping {sum(w.process.is_alive() for w in workers)} worker(s); their runs "
            f"resume on the next start",
            file=sys.stderr,
            flush=True,
        )
        for worker in workers:
            if worker.process.is_alive():
                os.kill(worker.process.pid, signal.SIGTERM)
        for worker in workers:
            worker.process.join(timeout=STOP_GRACE_S)
