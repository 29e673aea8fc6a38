"""``nirbench bench kmeans``: how much the NMI of one embedding depends on the k-means engine
(torch's vs faiss' Lloyd iterations, eval.kmeans_engine) compared with how much it depends on the
k-means seed. Same embedding, same k (= classes), same 20 iterations; the engines draw different
initial centroids, so a difference of the size of the seed spread is expected and is why a run
uses one engine for all its epochs (tag nmi.kmeans_engine, issue 23)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from nirbench.harness.bench.eval import synthetic_embeddings
from nirbench.harness.evaluation.knn import probe
from nirbench.harness.evaluation.metrics import KMEANS_NITER, l2_normalize, nmi_score
from nirbench.harness.train.numerics import collect_numerics


def load_embeddings(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An ``.npz`` with arrays ``embeddings`` (N, D) and ``labels`` (N,)."""
    with np.load(path) as data:
        return np.asarray(data["embeddings"], dtype=np.float32), np.asarray(data["labels"])


def _engine_nmis(x: np.ndarray, y: np.ndarray, engine: str, seeds: list[int]) -> dict[str, Any]:
    values, started = [], time.perf_counter()
    for seed in seeds:
        values.append(
            nmi_score(x, y, seed=seed, normalize=False, engine=engine, niter=KMEANS_NITER)
        )
    return {
        "nmi": values,
        "mean": float(np.mean(values)),
        "seed_std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        "seconds_per_run": (time.perf_counter() - started) / len(seeds),
    }


def run(
    n: int = 2000,
    classes: int = 100,
    dim: int = 128,
    *,
    seed: int = 0,
    noise: float = 1.4,
    kmeans_seeds: int = 5,
    embeddings: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """NMI per engine and k-means seed on one embedding; ``difference`` = torch - faiss per seed,
    with its mean, mean absolute value and maximum absolute value."""
    if embeddings is not None:
        x, y = load_embeddings(embeddings)
        source = str(embeddings)
    else:
        x, y = synthetic_embeddings(n, dim, classes, seed=seed, noise=noise)
        source = f"synthetic (n={n}, classes={classes}, dim={dim}, seed={seed}, noise={noise})"
    x = l2_normalize(np.ascontiguousarray(x, dtype=np.float32))
    seeds = list(range(kmeans_seeds))
    out: dict[str, Any] = {
        "embedding": source,
        "n": int(len(x)),
        "dim": int(x.shape[1]),
        "classes": int(len(np.unique(y))),
        "kmeans_seeds": seeds,
        "niter": KMEANS_NITER,
    }
    cpu = {}
    for engine in ("torch-cpu", "faiss-cpu"):
        if progress:
            progress(f"k-means {engine} x {len(seeds)} seeds")
        cpu[engine] = _engine_nmis(x, y, engine, seeds)
    out["cpu"] = cpu
    diff = np.subtract(cpu["torch-cpu"]["nmi"], cpu["faiss-cpu"]["nmi"])
    out["difference"] = {
        "torch_minus_faiss": diff.tolist(),
        "mean": float(diff.mean()),
        "mean_abs": float(np.abs(diff).mean()),
        "max_abs": float(np.abs(diff).max()),
    }
    caps = probe()
    if caps.cuda:
        gpu = {
            "torch-cuda": _engine_nmis(x, y, "torch-cuda", seeds),
            "device": torch.cuda.get_device_name(),
        }
        if caps.faiss_gpu_works:
            gpu["faiss-gpu"] = _engine_nmis(x, y, "faiss-gpu", seeds)
        out["gpu"] = gpu
    else:
        out["gpu"] = None
        out["gpu_note"] = (
            "no CUDA device here: the GPU engines (torch-cuda, faiss-gpu) were not measured"
        )
    out["numerics"] = collect_numerics("cpu", "auto")
    return out
