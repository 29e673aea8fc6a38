"""Retrieval and clustering metrics on a set of test embeddings (PAPER.md section 6).

Protocol: leave-one-out retrieval. Every sample is a query and every OTHER sample is the gallery,
ranked by cosine similarity (inner product of L2-normalised rows). All ranking metrics come from one
exact k-nearest-neighbour pass; NMI comes from one k-means run.

Tie rule: neighbours are ordered by (-similarity, gallery index), so equal similarities resolve to
the lower index first. No kNN engine guarantees this by itself (its order among ties, and which tied
items survive its top-k cut, are implementation details), so harness.evaluation.knn re-sorts tied runs and
re-ranks exactly the rows whose cut falls inside a tie. Results are identical for any chunk size.

Engines and memory: the kNN pass runs in query chunks (harness.evaluation.knn: torch matmul + topk or faiss,
CPU or GPU, chosen automatically) and the metrics are accumulated per chunk from the neighbour
indices only, so nothing of size N x N is ever held; the k-means for NMI is harness.evaluation.clustering.
:func:`retrieval_metrics` computes a chosen subset (its kNN pass is only as deep as that subset
needs) and offers an approximate mode (faiss IVF / HNSW) that reports its measured deviation.

Singleton classes: a query whose class has no other sample (R = 0) cannot retrieve anything, so it
is excluded from the averages of recall@k, map@r and r_precision (pytorch-metric-learning does the
same). It still counts in map@1000, where it scores 0, which is also its best possible score.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np
from sklearn.metrics import normalized_mutual_info_score

from nirbench.harness.evaluation.clustering import kmeans_assign
from nirbench.harness.evaluation.knn import (
    DEFAULT_CHUNK_SIZE,
    approximate_settings,
    iter_approximate_knn,
    iter_knn,
    search_rows,
)
from nirbench.harness.evaluation.knn import knn as _knn

MAP_CUTOFF = 1000  # the "1000" of the NIR code's mAP_1000
KMEANS_NITER = 20
RANKING_METRICS = ("map@r", "r_precision", "map@1000")
# The ranking metrics of a kNN pass only as deep as the largest class (not 1000 deep): with
# Recall@k, what an intermediate evaluation measures for the convergence curves (eval.full_every).
# On the embedded test splits (2400-3500 samples) 7-10x cheaper than the pass to depth 1000.
SHALLOW_RANKING_METRICS = ("map@r", "r_precision")
APPROX_SAMPLE = 2000  # queries on which the approximate mode measures its deviation from exact

METRIC_KEYS_DOC: dict[str, str] = {
    "recall@{k}": (
        "Share of queries with at least one same-class sample among their k nearest other samples. "
        "Singleton-class queries excluded."
    ),
    "map@r": (
        "MAP@R (Musgrave et al. 2020). R = number of other samples of the query's class; "
        "AP@R = (1/R) * sum_{i<=R} P@i * rel_i, averaged over queries. Singleton-class queries "
        "excluded."
    ),
    "r_precision": (
        "Share of same-class samples among the top R, averaged over queries. Singleton-class "
        "queries excluded."
    ),
    "map@1000": (
        "The NIR code's mAP_1000 (NOT MAP@R): sum over ranks i <= min(1000, N-1) of "
        "rel_i * P@i, divided by the class size n_c INCLUDING the query, averaged over all queries. "
        "A perfect embedding scores mean((n_c - 1) / n_c), not 1."
    ),
    "nmi": (
        "sklearn normalized_mutual_info_score between the labels and a k-means clustering "
        f"({KMEANS_NITER} Lloyd iterations, k = number of distinct labels, one random init seeded "
        "by nmi_seed; harness.evaluation.clustering) of the embeddings, each sample assigned to its nearest "
        "centroid."
    ),
}


def compute_metrics(
    embeddings: Any,
    labels: Any,
    recall_at: Sequence[int] = (1, 2, 4, 8),
    *,
    nmi: bool = True,
    nmi_seed: int = 0,
    normalize: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    nmi_engine: str = "auto",
) -> dict[str, float]:
    """All test metrics of ``embeddings`` (N, D) with integer class ``labels`` (N,).

    Returns ``recall@{k}`` for each k in ``recall_at``, ``map@r``, ``r_precision``, ``map@1000``
    and (if ``nmi``) ``nmi``, as Python floats in [0, 1]; see ``METRIC_KEYS_DOC``. Embeddings may be
    numpy arrays or torch tensors. With ``normalize`` rows are L2-normalised (zero rows stay zero).
    ``chunk_size`` bounds memory (about chunk_size x k per array) and never changes the result.
    """
    x = _as_embedding_matrix(embeddings)
    y = _as_label_vector(labels)
    recall_at = _validate(x, y, recall_at)
    if normalize:
        x = l2_normalize(x)
    metrics = retrieval_metrics(x, y, recall_at, normalize=False, chunk_size=chunk_size)
    if nmi:
        metrics["nmi"] = nmi_score(x, y, seed=nmi_seed, normalize=False, engine=nmi_engine)
    return metrics


def retrieval_metrics(
    embeddings: Any,
    labels: Any,
    recall_at: Sequence[int] = (1, 2, 4, 8),
    *,
    include: Iterable[str] = RANKING_METRICS,
    normalize: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    engine: str = "auto",
    approximate: str | None = None,
    approx_sample: int = APPROX_SAMPLE,
    seed: int = 0,
) -> dict[str, float]:
    """The kNN metrics of :func:`compute_metrics` (no NMI), restricted to ``recall_at`` and
    ``include`` (a subset of ``RANKING_METRICS``), from one kNN pass exactly as deep as they need:
    max(recall_at), R = largest class - 1 for map@r / r_precision, 1000 for map@1000.

    ``engine``: the exact kNN engine (harness.evaluation.knn.ENGINES; ``auto`` picks the fastest here).
    ``approximate``: ``"ivf"``, ``"ivf:NPROBE"``, ``"hnsw"`` or ``"hnsw:EF"`` replaces the exact
    pass by a faiss approximate index (harness.evaluation.knn.approximate_settings; for million-scale sets)
    and adds its settings (``approx/nlist``, ``approx/nprobe`` or ``approx/ef_search``, ...) and
    ``approx/sample``, ``approx/recall@1_exact``, ``approx/recall@1_approx`` and
    ``approx/recall@1_deviation``: approximate minus exact recall@1, measured on ``approx_sample``
    random queries (seeded by ``seed``) against an exact search of those queries.
    """
    include = tuple(include)
    unknown = set(include) - set(RANKING_METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; choose from {RANKING_METRICS}")
    x = _as_embedding_matrix(embeddings)
    y = _as_label_vector(labels)
    recall_at = _validate(x, y, recall_at)
    if normalize:
        x = l2_normalize(x)

    n = len(x)
    _, codes, class_sizes = np.unique(y, return_inverse=True, return_counts=True)
    n_c = class_sizes[codes]
    r = n_c - 1  # other samples of the query's class
    has_match = r > 0
    if not has_match.any():
        raise ValueError(
            f"every one of the {n} labels is unique, so no query has a same-class sample and "
            "retrieval metrics are undefined"
        )

    # One kNN pass deep enough for every requested metric.
    map_cutoff = min(MAP_CUTOFF, n - 1)
    depth = [max(recall_at, default=1)]
    if "map@r" in include or "r_precision" in include:
        depth.append(int(r.max()))
    if "map@1000" in include:
        depth.append(MAP_CUTOFF)
    k = min(max(depth), n - 1)

    # Per-query scores, averaged once at the end so the result does not depend on chunking.
    first_hit = np.empty(n, dtype=np.int64)  # rank - 1 of the first same-class neighbour (k: none)
    r_precision = np.zeros(n)
    map_at_r = np.zeros(n)
    map_at_cutoff = np.zeros(n)
    if approximate is None:
        chunks = iter_knn(x, k, chunk_size, engine)
    else:
        chunks = iter_approximate_knn(x, k, approximate, chunk_size, seed)
    for start, _, neighbours in chunks:
        rows = slice(start, start + len(neighbours))
        c = len(neighbours)
        # Only the same-class entries matter: (row, column) of each, row-major, so the running
        # count inside a row is the number of hits up to and including that rank.
        # (An approximate index may leave slots empty: index -1, never relevant.)
        row, col = np.nonzero((codes[neighbours] == codes[rows, None]) & (neighbours >= 0))
        per_row = np.bincount(row, minlength=c)
        row_start = np.cumsum(per_row) - per_row
        hits = np.arange(1, len(row) + 1) - row_start[row]
        precision = hits / (col + 1.0)  # P@i at each relevant rank i
        first = np.full(c, k, dtype=np.int64)
        first[per_row > 0] = col[row_start[per_row > 0]]
        first_hit[rows] = first
        r_rows = r[rows]
        r_safe = np.maximum(r_rows, 1)  # singleton rows are computed, then dropped from averages
        in_r = col < r_rows[row]
        r_precision[rows] = np.bincount(row, weights=in_r, minlength=c) / r_safe
        map_at_r[rows] = np.bincount(row, weights=precision * in_r, minlength=c) / r_safe
        map_at_cutoff[rows] = (
            np.bincount(row, weights=precision * (col < map_cutoff), minlength=c) / n_c[rows]
        )

    metrics = {f"recall@{m}": float((first_hit[has_match] < m).mean()) for m in recall_at}
    if "map@r" in include:
        metrics["map@r"] = float(map_at_r[has_match].mean())
    if "r_precision" in include:
        metrics["r_precision"] = float(r_precision[has_match].mean())
    if "map@1000" in include:
        metrics["map@1000"] = float(map_at_cutoff.mean())
    if approximate is not None:
        metrics.update(
            {
                f"approx/{key}": value
                for key, value in approximate_settings(approximate, n, k).items()
            }
        )
        metrics.update(
            _approximate_deviation(x, codes, has_match, first_hit, approx_sample, seed, engine)
        )
    return metrics


def _approximate_deviation(
    x, codes, has_match, first_hit, sample, seed, engine
) -> dict[str, float]:
    """recall@1 of the approximate pass against an exact search, on a random query sample."""
    candidates = np.flatnonzero(has_match)
    rng = np.random.default_rng(seed)
    queries = np.sort(rng.choice(candidates, min(sample, len(candidates)), replace=False))
    _, exact = search_rows(x, queries, 1, engine)
    exact_r1 = float((codes[exact[:, 0]] == codes[queries]).mean())
    approx_r1 = float((first_hit[queries] < 1).mean())
    return {
        "approx/sample": float(len(queries)),
        "approx/recall@1_exact": exact_r1,
        "approx/recall@1_approx": approx_r1,
        "approx/recall@1_deviation": approx_r1 - exact_r1,
    }


def nmi_score(
    embeddings: Any,
    labels: Any,
    *,
    seed: int = 0,
    normalize: bool = True,
    engine: str = "auto",
    niter: int = KMEANS_NITER,
) -> float:
    """NMI between ``labels`` and a k-means clustering of the embeddings, k = number of labels."""
    x = _as_embedding_matrix(embeddings)
    y = _as_label_vector(labels)
    if len(y) != len(x):
        raise ValueError(
            f"embeddings and labels differ in length: {len(x)} embeddings, {len(y)} labels"
        )
    if normalize:
        x = l2_normalize(x)
    _, codes = np.unique(y, return_inverse=True)
    n_clusters = int(codes.max()) + 1 if len(codes) else 0
    if n_clusters < 2:
        return 1.0  # one class, one cluster: sklearn's convention for identical constant labelings
    assignment = kmeans_assign(x, n_clusters, niter=niter, seed=seed, engine=engine)
    return float(normalized_mutual_info_score(codes, assignment))


def knn(
    embeddings_normalised: np.ndarray,
    k: int,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    engine: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Exact leave-one-out kNN by inner product: (similarities (N, k) float32, indices (N, k)).

    Each row lists the k most similar OTHER samples, ordered by (-similarity, index). The query is
    removed by index identity, so exact duplicates of it stay in its ranking. See harness.evaluation.knn.
    """
    return _knn(embeddings_normalised, k, chunk_size, engine)


def l2_normalize(x: np.ndarray, rows_per_block: int = 1 << 16) -> np.ndarray:
    """Rows scaled to unit L2 norm in float32 (computed in float64, a block of rows at a time so
    that 1M x 128 needs no 2 GB float64 copy); all-zero rows stay zero instead of becoming NaN."""
    out = np.empty(x.shape, dtype=np.float32)
    for start in range(0, len(x), rows_per_block):
        block = np.asarray(x[start : start + rows_per_block], dtype=np.float64)
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        scaled = np.zeros(block.shape, dtype=np.float64)
        np.divide(block, norms, out=scaled, where=norms > 0)
        out[start : start + rows_per_block] = scaled
    return out


def _as_embedding_matrix(embeddings: Any) -> np.ndarray:
    if hasattr(embeddings, "detach"):  # torch tensor, possibly on GPU, half precision or with grad
        embeddings = embeddings.detach().float().cpu().numpy()
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"embeddings must be a 2-D (N, D) array with D >= 1, got shape {x.shape}")
    return x


def _as_label_vector(labels: Any) -> np.ndarray:
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D (N,), got shape {y.shape}")
    return y


def _validate(x: np.ndarray, y: np.ndarray, recall_at: Sequence[int]) -> tuple[int, ...]:
    n = len(x)
    if len(y) != n:
        raise ValueError(f"embeddings and labels differ in length: {n} embeddings, {len(y)} labels")
    if n < 2:
        raise ValueError(f"need at least 2 samples to evaluate retrieval, got {n}")
    bad_rows = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if len(bad_rows):
        raise ValueError(
            f"embeddings contain NaN or inf (after conversion to float32) in {len(bad_rows)} of {n} "
            f"rows, first rows: {bad_rows[:5].tolist()}"
        )
    checked = []
    for m in recall_at:
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 1 <= m <= n - 1:
            raise ValueError(
                f"recall_at value {m!r} is invalid: each k must be an integer in [1, N - 1] with "
                f"N = {n} samples (the query is not its own neighbour)"
            )
        checked.append(int(m))
    return tuple(checked)
