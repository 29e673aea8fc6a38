"""Retrieval and clustering metrics on a set of test embeddings (PAPER.md section 6).

Protocol: leave-one-out retrieval. Every sample is a query and every OTHER sample is the gallery,
ranked by cosine similarity (inner product of L2-normalised rows). All ranking metrics come from one
exact k-nearest-neighbour pass; NMI comes from one k-means run.

Tie rule: neighbours are ordered by (-similarity, gallery index), so equal similarities resolve to
the lower index first. faiss alone does not guarantee this (its order among ties, and which tied
items survive its top-k cut, are implementation details), so :func:`knn` re-sorts every row and
re-ranks exactly the rows whose cut falls inside a tie. Results are identical for any chunk size.

Singleton classes: a query whose class has no other sample (R = 0) cannot retrieve anything, so it
is excluded from the averages of recall@k, map@r and r_precision (pytorch-metric-learning does the
same). It still counts in map@1000, where it scores 0, which is also its best possible score.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import faiss
import numpy as np
from sklearn.metrics import normalized_mutual_info_score

DEFAULT_CHUNK_SIZE = 4096
MAP_CUTOFF = 1000  # the "1000" of the NIR code's mAP_1000
KMEANS_NITER = 20
_MIN_BATCH_ENTRIES = 1 << 22  # 4M similarities + indices: 48 MB

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
        "sklearn normalized_mutual_info_score between the labels and a faiss k-means clustering "
        f"({KMEANS_NITER} iterations, k = number of distinct labels, one random init seeded by "
        "nmi_seed) of the embeddings, each sample assigned to its nearest centroid."
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

    # One kNN pass deep enough for every metric: recall@max(k), MAP@R/R-precision (R <= largest
    # class - 1) and map@1000.
    map_cutoff = min(MAP_CUTOFF, n - 1)
    k = min(max(max(recall_at, default=1), int(r.max()), MAP_CUTOFF), n - 1)

    # Per-query scores, averaged once at the end so the result does not depend on chunking.
    recall_hits = np.zeros((n, len(recall_at)), dtype=bool)
    r_precision = np.zeros(n)
    map_at_r = np.zeros(n)
    map_at_cutoff = np.zeros(n)
    ranks = np.arange(1, k + 1)
    recall_columns = np.asarray(recall_at, dtype=np.intp) - 1
    for start, _, neighbours in _iter_knn(x, k, chunk_size):
        rows = slice(start, start + len(neighbours))
        relevant = codes[neighbours] == codes[rows, None]
        hits = np.cumsum(relevant, axis=1)  # hits[:, i - 1] = same-class samples in the top i
        precision_terms = np.where(relevant, hits / ranks, 0.0)  # P@i * rel_i
        r_rows = r[rows]
        r_safe = np.maximum(r_rows, 1)  # singleton rows are computed, then dropped from averages

        recall_hits[rows] = hits[:, recall_columns] > 0
        r_precision[rows] = hits[np.arange(len(r_rows)), r_safe - 1] / r_safe
        map_at_r[rows] = (precision_terms * (ranks <= r_rows[:, None])).sum(axis=1) / r_safe
        map_at_cutoff[rows] = precision_terms[:, :map_cutoff].sum(axis=1) / n_c[rows]

    metrics = {
        f"recall@{m}": float(recall_hits[has_match, j].mean()) for j, m in enumerate(recall_at)
    }
    metrics["map@r"] = float(map_at_r[has_match].mean())
    metrics["r_precision"] = float(r_precision[has_match].mean())
    metrics["map@1000"] = float(map_at_cutoff.mean())
    if nmi:
        metrics["nmi"] = _nmi(x, codes, len(class_sizes), nmi_seed)
    return metrics


def knn(
    embeddings_normalised: np.ndarray, k: int, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """Exact leave-one-out kNN by inner product: (similarities (N, k) float32, indices (N, k) int64).

    Each row lists the k most similar OTHER samples, ordered by (-similarity, index). The query is
    removed by index identity, so exact duplicates of it stay in its ranking.
    """
    x = np.ascontiguousarray(embeddings_normalised, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (N, D), got shape {x.shape}")
    sims = np.empty((len(x), k), dtype=np.float32)
    indices = np.empty((len(x), k), dtype=np.int64)
    for start, chunk_sims, chunk_indices in _iter_knn(x, k, chunk_size):
        sims[start : start + len(chunk_sims)] = chunk_sims
        indices[start : start + len(chunk_sims)] = chunk_indices
    return sims, indices


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm in float32; all-zero rows stay zero instead of becoming NaN."""
    norms = np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    out = np.zeros(x.shape, dtype=np.float64)
    np.divide(x, norms, out=out, where=norms > 0)
    return out.astype(np.float32)


def _iter_knn(x: np.ndarray, k: int, chunk_size: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield (first query index, similarities, indices) per chunk of queries; see :func:`knn`."""
    n = len(x)
    if not 1 <= k <= n - 1:
        raise ValueError(f"k must be between 1 and N - 1 = {n - 1}, got {k}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    # k others + the query itself + one spare: the spare is what lets us prove that a row's k-th
    # neighbour is not tied with a sample faiss left out (see _cut_inside_tie).
    fetch = min(k + 2, n)
    for start in range(0, n, chunk_size):
        queries = np.arange(start, min(start + chunk_size, n))
        sims, indices = index.search(x[queries], fetch)
        redo = _cut_inside_tie(sims, indices, queries, k) if fetch < n else np.zeros(0, dtype=int)
        sims, indices = _drop_self_and_sort(sims, indices, queries, k)
        # Rows whose cut falls inside a tie: rank against the whole gallery, in batches of about
        # chunk_size x fetch entries (at least _MIN_BATCH_ENTRIES: faiss calls with a handful of
        # queries and k ~ N are slow).
        rows_per_search = max(1, max(chunk_size * fetch, _MIN_BATCH_ENTRIES) // n)
        for lo in range(0, len(redo), rows_per_search):
            rows = redo[lo : lo + rows_per_search]
            full_sims, full_indices = index.search(x[queries[rows]], n)
            sims[rows], indices[rows] = _drop_self_and_sort(full_sims, full_indices, queries[rows], k)
        yield start, sims, indices


def _cut_inside_tie(sims: np.ndarray, indices: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Rows where fewer than k returned others beat the worst returned similarity.

    faiss returns every sample strictly more similar than the worst value it returned, but only
    some of the samples EQUAL to it. If the k-th neighbour has that worst value, a left-out sample
    with a lower index might belong in its place, so the row must be ranked in full.
    """
    worst = sims.min(axis=1, keepdims=True)
    others = indices != queries[:, None]
    return np.flatnonzero(((sims > worst) & others).sum(axis=1) < k)


def _drop_self_and_sort(
    sims: np.ndarray, indices: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sort rows by (is the query itself, -similarity, index) and keep the first k columns.

    The query goes last whatever its similarity (with duplicates it need not be first); if faiss did
    not return it at all, this drops the least similar column instead.
    """
    is_self = indices == queries[:, None]
    order = np.lexsort((indices, -sims, is_self), axis=1)[:, :k]
    return np.take_along_axis(sims, order, axis=1), np.take_along_axis(indices, order, axis=1)


def _nmi(x: np.ndarray, codes: np.ndarray, n_clusters: int, seed: int) -> float:
    if n_clusters < 2:
        return 1.0  # one class, one cluster: sklearn's convention for identical constant labelings
    # min/max_points_per_centroid as in the Revisiting-DML code the NIR code forked: cluster every
    # sample (faiss would otherwise subsample above 256 points per centroid) and skip faiss' stderr
    # warning about few points per centroid. Neither changes the result at CUB/Cars/SOP sizes.
    kmeans = faiss.Kmeans(
        x.shape[1],
        n_clusters,
        niter=KMEANS_NITER,
        seed=seed,
        min_points_per_centroid=1,
        max_points_per_centroid=len(x),
    )
    kmeans.train(x)
    _, assignment = kmeans.index.search(x, 1)
    return float(normalized_mutual_info_score(codes, assignment.ravel()))


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
