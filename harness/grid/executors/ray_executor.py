"""Run a grid's jobs on a Ray cluster: every configuration is one Ray task that asks for the
CPUs and GPUs one run needs, so Ray's scheduler packs runs onto the cluster's nodes and GPUs
(``CUDA_VISIBLE_DEVICES`` is set by Ray for each task).

    ray start --head                                  # on the head node
    ray start --address HEAD:6379                     # on every other node
    export MLFLOW_TRACKING_URI=http://TRACKING:5000   # a shared store: mlflow server (README)
    nirbench grid GRID.yaml --executor ray --address HEAD:6379 --gpus-per-run 1

``--address``: ``auto`` (the cluster this machine belongs to), ``HOST:PORT``, ``ray://HOST:10001``
(Ray client), or ``local`` (start a private single-machine cluster for this grid and stop it at
the end). Every node needs the same nirbench code and environment, the MLflow server reachable,
and the results folder path (checkpoints live under it; a shared file system lets a run resumed
on another node continue from its checkpoint, otherwise it restarts there in a new MLflow run).
A task is not retried by Ray (``max_retries=0``): a task whose node dies is recorded FAILED and
``--retry-failed`` resumes it, as with the local executor.
"""

from __future__ import annotations

import logging
import os
import sys

from nirbench.harness.grid.executors.job import Job, JobResult, JobSettings, run_job
from nirbench.harness.grid.status import FAILED

log = logging.getLogger(__name__)


def _ray():
    try:
        import ray
    except ImportError:
        raise ImportError(
            "the Ray executor needs ray: pip install 'nirbench[cluster]' (or pip install ray)"
        ) from None
    return ray


def ray_run_job(job: Job, settings: JobSettings, threads: int) -> JobResult:
    """The Ray task's body: a worker process of the cluster runs one configuration."""
    import dataclasses

    return run_job(job, dataclasses.replace(settings, threads=threads))


class RayExecutor:
    name = "ray"

    def __init__(
        self,
        address: str = "auto",
        *,
        gpus_per_run: float | None = None,
        cpus_per_run: float = 1.0,
        local_cpus: int | None = None,
    ) -> None:
        if cpus_per_run <= 0:
            raise ValueError(f"--cpus-per-run must be positive, got {cpus_per_run}")
        if gpus_per_run is not None and gpus_per_run < 0:
            raise ValueError(f"--gpus-per-run must be >= 0, got {gpus_per_run}")
        self.address = address
        self.cpus_per_run = cpus_per_run
        self.local_cpus = local_cpus
        ray = _ray()
        self._started_here = not ray.is_initialized()
        if self._started_here:
            # Workers must import the same harness: pass this interpreter's import path on
            # (a no-op for an installed nirbench, needed for a source checkout or test modules).
            own = [p for p in sys.path if p and not p.startswith((sys.prefix, sys.base_prefix))]
            env = {"PYTHONPATH": os.pathsep.join(own)}
            kwargs = dict(
                runtime_env={"env_vars": env},
                include_dashboard=False,
                log_to_driver=True,
                logging_level=logging.WARNING,
            )
            if address == "local":
                ray.init(num_cpus=local_cpus, **kwargs)
            else:
                ray.init(address=address, **kwargs)
        resources = ray.cluster_resources()
        self.cluster_gpus = float(resources.get("GPU", 0.0))
        self.cluster_cpus = float(resources.get("CPU", 1.0))
        self.gpus_per_run = (
            (1.0 if self.cluster_gpus else 0.0) if gpus_per_run is None else gpus_per_run
        )
        if self.gpus_per_run > 0 and not self.cluster_gpus:
            raise ValueError(
                f"--gpus-per-run {self.gpus_per_run} but the Ray cluster at "
                f"{address} has no GPUs; use --gpus-per-run 0"
            )
        by_cpu = self.cluster_cpus / self.cpus_per_run
        by_gpu = self.cluster_gpus / self.gpus_per_run if self.gpus_per_run else by_cpu
        self.parallel = max(1, int(min(by_cpu, by_gpu)))

    def describe(self) -> str:
        return (
            f"ray executor at {self.address}: {self.cluster_cpus:g} CPUs, "
            f"{self.cluster_gpus:g} GPUs; each run asks for {self.cpus_per_run:g} CPU(s) and "
            f"{self.gpus_per_run:g} GPU(s), up to {self.parallel} at once"
        )

    def run(
        self, jobs: list[Job], settings: JobSettings, progress, on_crash=None
    ) -> list[JobResult]:
        ray = _ray()
        task = ray.remote(num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run, max_retries=0)(
            ray_run_job
        )
        threads = max(1, int(self.cpus_per_run))
        running = {task.remote(job, settings, threads): job for job in jobs}
        for job in jobs:  # Ray queues what does not fit; counted as running from submission
            progress.started(job, "ray")
        results = []
        try:
            while running:
                done, _ = ray.wait(list(running), num_returns=1)
                for ref in done:
                    job = running.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as err:  # the worker or its node died
                        cause = f"Ray task failed: {type(err).__name__}: {err}"[:2000]
                        if on_crash is not None:
                            on_crash(job, cause)
                        result = JobResult(job.config_hash, FAILED, error=cause)
                    results.append(result)
                    progress.finished(job, result)
        except KeyboardInterrupt:
            for ref in running:
                ray.cancel(ref)  # KeyboardInterrupt in the task: the run ends KILLED, resumable
            raise
        finally:
            if self._started_here:
                ray.shutdown()
        return results
