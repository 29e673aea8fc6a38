"""k-means (Lloyd) for the NMI metric, on the fastest engine this machine has.

The algorithm is faiss' ``Clustering`` with the settings of the Revisiting-DML code the NIR code
forked (and of pytorch-metric-learning's ``FaissKMeans``): k = number of classes, ``niter``
iterations, initial centroids = k distinct samples drawn at random, each iteration assigns every
sample to its nearest centroid (squared L2) and moves each centroid to the mean of its samples; an
empty cluster takes over half of a large cluster (faiss' split: the large centroid is copied and
both copies are nudged by +-1/1024 in alternating coordinates). Every sample is clustered (no
subsampling) and, at the end, each sample is assigned to its nearest final centroid.

Engines (``engine=``): ``faiss-cpu`` / ``faiss-gpu`` (``faiss.Kmeans``, what the NIR code and
pytorch-metric-learning run) and ``torch-cpu`` / ``torch-cuda`` (the same Lloyd iterations with
exact bounds that skip the samples whose cluster cannot change, see :func:`_torch_kmeans`).
``auto`` picks faiss-gpu when faiss' GPU search works here, else torch-cuda on a CUDA machine, and
torch-cpu on a CPU (at SOP size 3-4x faster than faiss' k-means on the 2-core reference machine;
``nirbench bench eval``). ``NIRBENCH_KMEANS_ENGINE`` overrides ``auto``; ``faiss-cpu`` reproduces
the NMI of earlier nirbench versions exactly. The engines draw different initial centroids, so
their clusterings (and NMI) differ slightly for the same seed; each is deterministic for a seed.
"""

from __future__ import annotations

import os

import faiss
import numpy as np
import torch

from nirbench.harness.evaluation.knn import Capabilities, probe, top_along_rows

KMEANS_ENGINES = ("auto", "faiss-cpu", "faiss-gpu", "torch-cpu", "torch-cuda")
_MAX_MOVERS = 1024  # centroids whose distances to every sample are measured after an update
_SPLIT_EPS = 1.0 / 1024.0  # faiss' EPS for splitting a cluster into an empty one
_ASSIGN_BLOCK_ENTRIES = 1 << 24  # samples x centroids per assignment product (64 MB)


def select_kmeans_engine(engine: str = "auto", *, caps: Capabilities | None = None) -> str:
    if engine == "auto":
        engine = os.environ.get("NIRBENCH_KMEANS_ENGINE", "auto") or "auto"
    if engine not in KMEANS_ENGINES:
        raise ValueError(
            f"unknown k-means engine {engine!r}; choose one of {', '.join(KMEANS_ENGINES)}"
        )
    caps = probe() if caps is None else caps
    if engine == "auto":
        if caps.cuda:
            return "faiss-gpu" if caps.faiss_gpu_works else "torch-cuda"
        return "torch-cpu"
    if engine == "torch-cuda" and not caps.cuda:
        raise RuntimeError("k-means engine torch-cuda needs a CUDA device and torch sees none")
    if engine == "faiss-gpu" and not caps.faiss_gpu_works:
        raise RuntimeError(
            "k-means engine faiss-gpu is not usable here (no GPU faiss can run "
            "on); use torch-cuda or faiss-cpu"
        )
    return engine


def resolve_kmeans_engine(
    choice: str = "auto", device: str = "cpu", *, caps: Capabilities | None = None
) -> str:
    """The concrete engine of a run's ``eval.kmeans_engine`` (``auto`` / ``torch`` / ``faiss``)
    on a run whose device type is ``device`` ("cpu" or "cuda"): ``auto`` = today's choice
    (:func:`select_kmeans_engine`: faiss-gpu on a GPU, torch-cpu on a CPU); ``torch`` = torch-cuda
    on a CUDA run, else torch-cpu; ``faiss`` = faiss-gpu on a CUDA run where faiss' GPU kernels
    work, else faiss-cpu. One engine per run: the NMI of every epoch comes from it."""
    if choice == "auto":
        return select_kmeans_engine("auto", caps=caps)
    cuda = str(device).startswith("cuda")
    if choice == "torch":
        return "torch-cuda" if cuda else "torch-cpu"
    if choice == "faiss":
        caps = probe() if caps is None and cuda else caps
        return "faiss-gpu" if cuda and caps.faiss_gpu_works else "faiss-cpu"
    return select_kmeans_engine(choice, caps=caps)  # a concrete engine name, or its error


def kmeans_assign(
    x: np.ndarray, n_clusters: int, *, niter: int = 20, seed: int = 0, engine: str = "auto"
) -> np.ndarray:
    """Cluster the rows of ``x`` into ``n_clusters`` and return each row's cluster (N,) int64."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    if x.ndim != 2 or not 1 <= n_clusters <= n:
        raise ValueError(
            f"need a 2-D array with at least n_clusters = {n_clusters} rows, got shape {x.shape}"
        )
    name = select_kmeans_engine(engine)
    if name.startswith("faiss"):
        return _faiss_kmeans(x, n_clusters, niter, seed, gpu=name == "faiss-gpu")
    device = torch.device("cuda" if name == "torch-cuda" else "cpu")
    return _torch_kmeans(x, n_clusters, niter, seed, device)


def _faiss_kmeans(x: np.ndarray, k: int, niter: int, seed: int, gpu: bool) -> np.ndarray:
    # min/max_points_per_centroid: cluster every sample (faiss would otherwise subsample above
    # 256 points per centroid) and skip faiss' warning about few points per centroid.
    kmeans = faiss.Kmeans(
        x.shape[1],
        k,
        niter=niter,
        seed=seed,
        gpu=gpu,
        min_points_per_centroid=1,
        max_points_per_centroid=len(x),
    )
    kmeans.train(x)
    _, assignment = kmeans.index.search(x, 1)
    return assignment.ravel().astype(np.int64)


def _torch_kmeans(
    x_np: np.ndarray, k: int, niter: int, seed: int, device: torch.device, bounds: bool = True
) -> np.ndarray:
    """Lloyd's algorithm, skipping the samples whose cluster provably cannot change.

    Per sample it keeps an upper bound on the distance to its centroid and a lower bound on the
    distance to every other centroid (Hamerly). After an update only the centroids that moved can
    change a sample's nearest centroid: the distances to the (at most ``_MAX_MOVERS``) largest
    movers are computed exactly for every sample (a thin product), the bound for the others drops
    by the largest remaining move (usually 0: most centroids stop moving after a few iterations).
    Only samples whose bounds then overlap are assigned again against all centroids. The result
    is plain Lloyd's (``bounds=False``, kept for the tests): bounds carry a margin for float32
    rounding, so a sample is only skipped when its assignment cannot change."""
    n = len(x_np)
    if k == 1:
        return np.zeros(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(x_np).to(device)
    x_sq = (x * x).sum(dim=1)
    centroids = x[torch.as_tensor(np.sort(rng.choice(n, k, replace=False)), device=device)].clone()
    # Rounding slack of a squared distance |x|^2 - 2 x.c + |c|^2 in float32 (generous: 2e-5 of
    # the magnitudes involved; normalised embeddings: about 1e-3 on a distance).
    slack = 2e-5 * (x_sq + x_sq.max())
    matmul_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # full float32 products, as faiss computes them
    try:
        everyone = torch.arange(n, device=device)
        assignment, upper, lower = _assign_top2(x, x_sq, slack, centroids, everyone)
        for _ in range(niter):
            with _one_thread(device):
                previous = centroids.clone()
                counts, sums = _cluster_sums(x, assignment, k)
                nonempty = counts > 0
                centroids[nonempty] = sums[nonempty] / counts[nonempty, None].to(x.dtype)
                if not bool(nonempty.all()):
                    _split_into_empty(centroids, counts, rng)
                drift = (centroids - previous).norm(dim=1)
            if not bounds:
                assignment, upper, lower = _assign_top2(x, x_sq, slack, centroids, everyone)
                continue
            _move_bounds(x, x_sq, slack, centroids, drift, assignment, upper, lower)
            with _one_thread(device):
                maybe = torch.nonzero(upper > lower).squeeze(1)
            if len(maybe):
                assignment[maybe], upper[maybe], lower[maybe] = _assign_top2(
                    x, x_sq, slack, centroids, maybe
                )
        return assignment.cpu().numpy()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32


class _one_thread:
    """Run the per-iteration bookkeeping (vectors of N or k x D entries) on one CPU thread: on a
    machine whose other cores are busy, every multi-threaded torch op of that size waits for a
    descheduled pool thread (measured: ~8 ms per op on 2 busy cores, i.e. seconds per run). The
    products keep every thread."""

    def __init__(self, device: torch.device) -> None:
        self.cpu = device.type == "cpu"

    def __enter__(self) -> None:
        if self.cpu:
            self.saved = torch.get_num_threads()
            torch.set_num_threads(1)

    def __exit__(self, *exc) -> None:
        if self.cpu:
            torch.set_num_threads(self.saved)


def _cluster_sums(
    x: torch.Tensor, assignment: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(samples per cluster, sum of their rows). On the CPU through numpy/scipy: torch's
    multi-threaded ``index_add_`` and ``bincount`` cost ~80 ms and ~16 ms a call there, whatever
    the size (measured, torch 2.14, 2 threads), against ~10 ms and ~0.1 ms at SOP size."""
    if x.device.type != "cpu":
        sums = torch.zeros((k, x.shape[1]), dtype=x.dtype, device=x.device)
        return torch.bincount(assignment, minlength=k), sums.index_add_(0, assignment, x)
    import scipy.sparse

    a = assignment.numpy()
    counts = np.bincount(a, minlength=k)
    one_hot = scipy.sparse.csr_matrix(
        (np.ones(len(a), dtype=np.float32), (a, np.arange(len(a)))), shape=(k, len(a))
    )
    sums = np.asarray(one_hot @ x.numpy(), dtype=np.float32)
    return torch.from_numpy(counts), torch.from_numpy(sums)


def _move_bounds(x, x_sq, slack, centroids, drift, assignment, upper, lower) -> None:
    """Update the bounds in place after the centroids moved by ``drift``."""
    with _one_thread(x.device):
        moved = int((drift > 0).sum())
        n_movers = min(moved, _MAX_MOVERS)
        top_drift, movers = torch.topk(drift, min(n_movers + 1, len(drift)))
        rest = float(top_drift[n_movers]) if moved > n_movers else 0.0
        # Everyone: the own centroid moved at most drift[a], every unmeasured one at most `rest`.
        upper += drift[assignment] * (1 + 1e-6) + 1e-7
        if rest > 0:
            lower -= rest * (1 + 1e-6) + 1e-7
    if n_movers == 0:
        return
    movers = movers[:n_movers]
    c = centroids[movers]
    bias = (c * c).sum(dim=1).mul_(-0.5)
    column_of = torch.full((len(centroids),), -1, dtype=torch.long, device=x.device)
    column_of[movers] = torch.arange(n_movers, device=x.device)
    block = max(1, _ASSIGN_BLOCK_ENTRIES // n_movers)
    for start in range(0, len(x), block):
        rows = slice(start, start + block)
        scores = torch.addmm(bias, x[rows], c.T)  # x.c - |c|^2 / 2 for the movers
        own = column_of[assignment[rows]]
        mine = torch.nonzero(own >= 0).squeeze(1)
        if len(mine):  # the own centroid is a mover: its exact distance is the new upper bound
            own_score = scores[mine, own[mine]]
            d_sq = x_sq[rows][mine] - 2 * own_score
            upper[start + mine] = (d_sq.clamp_min(0) + slack[rows][mine]).sqrt()
            scores[mine, own[mine]] = -torch.inf
        d_sq = x_sq[rows] - 2 * scores.amax(dim=1)  # nearest OTHER mover
        measured = (d_sq - slack[rows]).clamp_min(0).sqrt()
        torch.minimum(lower[rows], measured, out=lower[rows])


def _assign_top2(
    x: torch.Tensor,
    x_sq: torch.Tensor,
    slack: torch.Tensor,
    centroids: torch.Tensor,
    rows: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For the given samples: nearest centroid (ties: lower index), an upper bound on the distance
    to it and a lower bound on the distance to every other centroid. Scores x.c - |c|^2 / 2 in
    row blocks; centroids padded to a multiple of 16 with -inf scores (segmented selection)."""
    k, device = len(centroids), x.device
    padded = -(-k // 16) * 16
    c = torch.zeros((padded, centroids.shape[1]), dtype=x.dtype, device=device)
    c[:k] = centroids
    bias = torch.full((padded,), -torch.inf, dtype=x.dtype, device=device)
    bias[:k] = (centroids * centroids).sum(dim=1).mul_(-0.5)
    block = max(1, min(len(rows), _ASSIGN_BLOCK_ENTRIES // padded))
    buffer = torch.empty(block * padded, dtype=x.dtype, device=device)
    best = torch.empty(len(rows), dtype=torch.long, device=device)
    top_scores = torch.empty((len(rows), 2), dtype=x.dtype, device=device)
    for start in range(0, len(rows), block):
        chunk = rows[start : start + block]
        scores = buffer[: len(chunk) * padded].view(len(chunk), padded)
        torch.addmm(bias, x[chunk], c.T, out=scores)
        values, where = top_along_rows(scores, 2)
        first = (values[:, 0] > values[:, 1]) | (
            (values[:, 0] == values[:, 1]) & (where[:, 0] < where[:, 1])
        )
        best[start : start + len(chunk)] = torch.where(first, where[:, 0], where[:, 1])
        top_scores[start : start + len(chunk), 0] = torch.where(first, values[:, 0], values[:, 1])
        top_scores[start : start + len(chunk), 1] = torch.where(first, values[:, 1], values[:, 0])
    d_sq = x_sq[rows, None] - 2 * top_scores  # squared distances to the two nearest
    pad = slack[rows, None]
    upper = (d_sq[:, 0].clamp_min(0) + pad[:, 0]).sqrt()
    lower = (d_sq[:, 1] - pad[:, 0]).clamp_min(0).sqrt()
    return best, upper, lower


def _split_into_empty(
    centroids: torch.Tensor, counts: torch.Tensor, rng: np.random.Generator
) -> None:
    """faiss' split_clusters: each empty cluster takes half of a cluster drawn with probability
    proportional to (size - 1); both centroids are nudged apart."""
    sizes = counts.cpu().numpy().astype(np.float64)
    k = len(sizes)
    sign = torch.ones(centroids.shape[1], dtype=centroids.dtype, device=centroids.device)
    sign[1::2] = -1.0
    for empty in np.flatnonzero(sizes == 0):
        weights = np.maximum(sizes - 1.0, 0.0)
        if weights.sum() <= 0:
            break  # every cluster has one sample: nothing to split
        donor = int(rng.choice(k, p=weights / weights.sum()))
        centroids[empty] = centroids[donor] * (1 + sign * _SPLIT_EPS)
        centroids[donor] = centroids[donor] * (1 - sign * _SPLIT_EPS)
        sizes[empty] = sizes[donor] // 2
        sizes[donor] -= sizes[empty]
