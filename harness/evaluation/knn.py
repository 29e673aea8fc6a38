"""Leave-one-out k-nearest-neighbour search by inner product, in query chunks, on the fastest exact
engine this machine has; plus an approximate mode (faiss IVF or HNSW) for million-scale sets.

Contract of every exact engine (what :func:`iter_knn` yields, chunk by chunk of consecutive
queries): ``(first query index, similarities (c, k) float32, indices (c, k) int64)``, where row q
lists the k most similar OTHER samples ordered by (-similarity, gallery index). The query is removed
by index identity, so its exact duplicates stay in its ranking.

Ties. No engine orders tied similarities by index, and which tied items survive an engine's top-k
cut is an implementation detail. Each engine therefore fetches one spare candidate beyond the k
others; a row whose k-th and spare candidates are tied is ranked again against the whole gallery
(rare on real embeddings), and tied runs inside the top k are re-sorted by index. So the result is
the same for every chunk size, and the same for every engine up to the last bit of the float32 dot
products (identical neighbours on data without near-ties).

Engines (``engine=``):

- ``faiss-cpu``: faiss ``IndexFlatIP`` (BLAS GEMM + a heap per query), one search per chunk of
  queries; memory: the chunk's results (chunk x (k + 2)) plus faiss' fixed-size blocks.
- ``torch-cpu`` / ``torch-cuda``: groups of ``STREAM_ROWS`` queries times gallery blocks (the whole
  gallery up to ``STREAM_BUFFER_ENTRIES`` similarities) with ``matmul`` into one reused buffer, and
  an exact segmented top-k (:func:`top_along_rows`) merged across blocks; memory: the buffer plus
  the group's candidates, whatever N. The product shapes do not depend on ``chunk_size``, so the
  result is bit-identical for every chunk size.
- ``faiss-gpu``: faiss ``GpuIndexFlatIP``; used only when faiss sees a GPU, a trial search on it
  returns the right answer (wheels whose kernels do not cover the GPU fail there) and k + 2 <= 2048
  (faiss' GPU limit; the engine fetches the query and a spare). Otherwise ``torch-cuda``.

``auto`` picks ``faiss-gpu`` or ``torch-cuda`` on a CUDA machine and ``faiss-cpu`` on a CPU (on the
2-core reference machine faiss' flat search and the torch engine are equally fast at small k, and
faiss is faster at k = 1000; see ``nirbench bench eval``). ``NIRBENCH_KNN_ENGINE`` overrides
``auto``.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from typing import Iterator

import faiss
import numpy as np
import torch

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 4096
ENGINES = ("auto", "faiss-cpu", "faiss-gpu", "torch-cpu", "torch-cuda")
FAISS_GPU_MAX_K = 2048  # faiss GPU brute-force search supports k <= 2048 (we fetch k + 2)
STREAM_ROWS = 1024  # queries per product in the streaming schedule
STREAM_BUFFER_ENTRIES = 1 << 26  # similarities per product in the streaming schedule (256 MB)
_PAD = 16  # the torch engine pads N to a multiple of this (segment sizes divide it)
_MIN_BATCH_ENTRIES = 1 << 22  # full re-ranks: batch rows so that a search returns >= 4M entries
KnnChunk = tuple[int, np.ndarray, np.ndarray]
Candidates = tuple[int, np.ndarray, np.ndarray, bool]  # start, sims, indices, query among them


# --------------------------------------------------------------------------- engine selection


@dataclass(frozen=True)
class Capabilities:
    """What the machine offers: a CUDA device for torch, GPUs faiss can see, and whether faiss'
    GPU kernels actually run on that device (checked with a trial search)."""

    cuda: bool
    faiss_gpus: int
    faiss_gpu_works: bool


@functools.lru_cache(maxsize=1)
def probe() -> Capabilities:
    cuda = torch.cuda.is_available()
    faiss_gpus = _faiss_num_gpus()
    works = cuda and faiss_gpus > 0 and _faiss_gpu_trial()
    return Capabilities(cuda=cuda, faiss_gpus=faiss_gpus, faiss_gpu_works=works)


def select_engine(engine: str = "auto", *, k: int = 1, caps: Capabilities | None = None) -> str:
    """The engine that will run: ``engine`` itself if it can run here, else an error; ``auto`` =
    ``$NIRBENCH_KNN_ENGINE`` if set, else faiss-gpu (if it works and k + 2 <= 2048), torch-cuda, or
    on a CPU-only machine faiss-cpu."""
    if engine == "auto":
        engine = os.environ.get("NIRBENCH_KNN_ENGINE", "auto") or "auto"
    if engine not in ENGINES:
        raise ValueError(f"unknown kNN engine {engine!r}; choose one of {', '.join(ENGINES)}")
    caps = probe() if caps is None else caps
    if engine == "auto":
        if caps.cuda:
            if caps.faiss_gpu_works and k + 2 <= FAISS_GPU_MAX_K:
                return "faiss-gpu"
            return "torch-cuda"  # the fallback when the faiss build cannot use this GPU
        return "faiss-cpu"
    if engine == "torch-cuda" and not caps.cuda:
        raise RuntimeError("kNN engine torch-cuda needs a CUDA device and torch sees none")
    if engine == "faiss-gpu":
        if not caps.faiss_gpu_works:
            raise RuntimeError(
                f"kNN engine faiss-gpu is not usable here (torch CUDA: {caps.cuda}, faiss GPUs: "
                f"{caps.faiss_gpus}, trial search ok: {caps.faiss_gpu_works}); use torch-cuda"
            )
        if k + 2 > FAISS_GPU_MAX_K:
            raise ValueError(
                f"faiss-gpu searches k + 2 <= {FAISS_GPU_MAX_K} candidates, got "
                f"k = {k}; use torch-cuda"
            )
    return engine


def _faiss_num_gpus() -> int:
    try:
        return int(faiss.get_num_gpus())
    except Exception:  # a CPU-only faiss build has no get_num_gpus
        return 0


def _faiss_gpu_trial() -> bool:
    """A tiny search on GPU 0 checked against numpy: wheels built without kernels for this GPU's
    architecture import fine and fail (or return garbage) only here."""
    try:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((64, 16)).astype(np.float32)
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, faiss.IndexFlatIP(16))
        index.add(x)
        _, found = index.search(x[:8], 3)
        expected = np.argsort(-(x[:8] @ x.T), axis=1, kind="stable")[:, :3]
        return bool(np.array_equal(found, expected))
    except Exception as err:  # no GPU support compiled in, unsupported architecture, driver error
        log.info("faiss GPU search unavailable (%s); the torch engine will be used on CUDA", err)
        return False


# --------------------------------------------------------------------------- exact search


def knn(
    x: np.ndarray, k: int, chunk_size: int = DEFAULT_CHUNK_SIZE, engine: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """Exact leave-one-out kNN of the rows of ``x`` (use L2-normalised rows for cosine):
    (similarities (N, k) float32, indices (N, k) int64), see the module docstring."""
    x = _as_float32_matrix(x)
    sims = np.empty((len(x), k), dtype=np.float32)
    indices = np.empty((len(x), k), dtype=np.int64)
    for start, chunk_sims, chunk_indices in iter_knn(x, k, chunk_size, engine):
        sims[start : start + len(chunk_sims)] = chunk_sims
        indices[start : start + len(chunk_sims)] = chunk_indices
    return sims, indices


def iter_knn(
    x: np.ndarray, k: int, chunk_size: int = DEFAULT_CHUNK_SIZE, engine: str = "auto"
) -> Iterator[KnnChunk]:
    """Yield (first query index, similarities, indices) per chunk of ``chunk_size`` queries, in
    order; see :func:`knn`. Memory: the chunk's results plus the engine's working set."""
    x = _as_float32_matrix(x)
    n = len(x)
    if not 1 <= k <= n - 1:
        raise ValueError(f"k must be between 1 and N - 1 = {n - 1}, got {k}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    name = select_engine(engine, k=k)
    searcher = _FaissSearcher(x, name) if name.startswith("faiss") else _TorchSearcher(x, name)
    for start, sims, indices, self_in_candidates in searcher.candidates(k, chunk_size):
        queries = np.arange(start, start + len(sims))
        yield (start, *_finish(searcher, sims, indices, queries, k, self_in_candidates, chunk_size))


def search_rows(
    x: np.ndarray,
    queries: np.ndarray,
    k: int,
    engine: str = "auto",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact leave-one-out kNN for the given query rows only (e.g. a sample): (sims, indices),
    same contract as :func:`knn`, in chunks (memory does not grow with the number of queries)."""
    x = _as_float32_matrix(x)
    queries = np.asarray(queries, dtype=np.int64)
    n = len(x)
    if not 1 <= k <= n - 1:
        raise ValueError(f"k must be between 1 and N - 1 = {n - 1}, got {k}")
    name = select_engine(engine, k=k)
    searcher = _FaissSearcher(x, name) if name.startswith("faiss") else _TorchSearcher(x, name)
    sims = np.empty((len(queries), k), dtype=np.float32)
    indices = np.empty((len(queries), k), dtype=np.int64)
    for lo in range(0, len(queries), chunk_size):
        chunk = queries[lo : lo + chunk_size]
        cand_sims, cand_indices, self_in = searcher.query_candidates(chunk, k)
        sims[lo : lo + len(chunk)], indices[lo : lo + len(chunk)] = _finish(
            searcher, cand_sims, cand_indices, chunk, k, self_in, chunk_size
        )
    return sims, indices


def _finish(searcher, sims, indices, queries, k, self_in_candidates, chunk_size):
    """Candidates -> exact, tie-ordered top k (see the module docstring)."""
    n = searcher.n
    complete = sims.shape[1] >= (n if self_in_candidates else n - 1)
    redo = np.zeros(0, dtype=np.intp) if complete else _cut_inside_tie(sims, indices, queries, k)
    sims, indices = _drop_self_and_sort(sims, indices, queries, k)
    # Rows whose cut falls inside a tie: rank against the whole gallery, in batches of about
    # chunk_size x fetch entries (at least _MIN_BATCH_ENTRIES: searches of a handful of queries
    # with k ~ N are slow).
    rows_per_search = max(1, max(chunk_size * (k + 2), _MIN_BATCH_ENTRIES) // n)
    for lo in range(0, len(redo), rows_per_search):
        rows = redo[lo : lo + rows_per_search]
        full_sims, full_indices = searcher.full_rows(queries[rows])
        sims[rows], indices[rows] = _drop_self_and_sort(full_sims, full_indices, queries[rows], k)
    return sims, indices


def _cut_inside_tie(
    sims: np.ndarray, indices: np.ndarray, queries: np.ndarray, k: int
) -> np.ndarray:
    """Rows where fewer than k candidate others beat the worst candidate similarity.

    An engine returns every sample strictly more similar than the worst value it returned, but
    only some of the samples EQUAL to it. If the k-th neighbour has that worst value, a left-out
    sample with a lower index might belong in its place, so the row must be ranked in full.
    """
    worst = sims.min(axis=1, keepdims=True)
    others = indices != queries[:, None]
    return np.flatnonzero(((sims > worst) & others).sum(axis=1) < k)


def _drop_self_and_sort(
    sims: np.ndarray, indices: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Order rows by (is the query itself, -similarity, index) and keep the first k columns.

    The query goes last whatever its similarity (with duplicates it need not be first); if it is
    not among the candidates, the least similar column goes instead. Fast path (what the engines
    return: rows sorted by similarity, at most one self column, k + 1 or k + 2 candidates): drop
    one column per row, then index-sort only the rows with a tie inside the kept k.
    """
    m = sims.shape[1]
    is_self = indices == queries[:, None]
    unusual = m > k + 2 or m < k or (is_self.sum(axis=1) > 1).any()
    if unusual or not (np.diff(sims, axis=1) <= 0).all():
        order = np.lexsort((indices, -sims, is_self), axis=1)[:, :k]
        return np.take_along_axis(sims, order, axis=1), np.take_along_axis(indices, order, axis=1)
    if m == k:  # complete candidate lists without the query: nothing to drop
        out_sims, out_indices = sims.copy(), indices.copy()
    else:  # drop the query, or the last (least similar) column where it is absent
        keep = ~is_self
        keep[~is_self.any(axis=1), -1] = False
        out_sims = sims[keep].reshape(len(sims), m - 1)
        out_indices = indices[keep].reshape(len(sims), m - 1)
    # A tie anywhere up to the first dropped candidate decides order or membership: sort by index.
    span = min(k + 1, out_sims.shape[1])
    tied = np.flatnonzero((out_sims[:, 1:span] == out_sims[:, : span - 1]).any(axis=1))
    if len(tied):
        order = np.lexsort((out_indices[tied], -out_sims[tied]), axis=1)
        out_sims[tied] = np.take_along_axis(out_sims[tied], order, axis=1)
        out_indices[tied] = np.take_along_axis(out_indices[tied], order, axis=1)
    return np.ascontiguousarray(out_sims[:, :k]), np.ascontiguousarray(out_indices[:, :k])


class _FaissSearcher:
    """faiss IndexFlatIP on the CPU or GPU 0. Candidates: top k + 2 of all samples (the query
    itself, k others and the spare)."""

    def __init__(self, x: np.ndarray, name: str) -> None:
        self.x, self.n, self.name = x, len(x), name
        index = faiss.IndexFlatIP(x.shape[1])
        if name == "faiss-gpu":
            self._resources = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._resources, 0, index)
        index.add(x)
        self.index = index

    def candidates(self, k: int, chunk_size: int) -> Iterator[Candidates]:
        fetch = min(k + 2, self.n)
        for start in range(0, self.n, chunk_size):
            sims, indices = self.index.search(self.x[start : start + chunk_size], fetch)
            yield start, sims, indices, True

    def query_candidates(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, bool]:
        sims, indices = self.index.search(self.x[queries], min(k + 2, self.n))
        return sims, indices, True

    def full_rows(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.name == "faiss-gpu" and self.n > FAISS_GPU_MAX_K:
            sims = self.x[queries] @ self.x.T  # beyond faiss-gpu's k: a plain product
            return sims, np.broadcast_to(np.arange(self.n), sims.shape).copy()
        return self.index.search(self.x[queries], self.n)


class _TorchSearcher:
    """Blocked matmul + exact top-k selection on the CPU or a CUDA device. The query itself is
    masked to -inf, so candidates are the top k + 1 OTHER samples. ``x`` is padded with zero rows
    to a multiple of ``_PAD`` (their columns are masked to -inf) so that blocks split into equal
    segments (see :func:`top_along_rows`)."""

    def __init__(self, x: np.ndarray, name: str) -> None:
        self.n, self.name = len(x), name
        self.device = torch.device("cuda" if name == "torch-cuda" else "cpu")
        padded = -(-len(x) // _PAD) * _PAD
        xt = torch.zeros((padded, x.shape[1]), dtype=torch.float32, device=self.device)
        xt[: len(x)] = torch.from_numpy(x).to(self.device)
        self.x = xt

    def candidates(self, k: int, chunk_size: int) -> Iterator[Candidates]:
        fetch = min(k + 1, self.n - 1)
        with _exact_float32_matmul():
            for g0, sims, indices in self._streaming(fetch):
                sims, order = torch.sort(sims, dim=1, descending=True)
                indices = torch.gather(indices, 1, order)
                sims, indices = sims.cpu().numpy(), indices.cpu().numpy()
                # Yield in chunks of chunk_size; the products never depend on chunk_size.
                stop = min(g0 + len(sims), self.n)
                for start in range(g0, stop, chunk_size):
                    rows = slice(start - g0, min(start + chunk_size, stop) - g0)
                    yield start, sims[rows], indices[rows], False

    def query_candidates(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, bool]:
        fetch = min(k + 1, self.n - 1)
        rows, width = self._stream_shape()
        buffer = torch.empty(rows * width, device=self.device)
        q = torch.as_tensor(queries, device=self.device)
        out_sims, out_indices = [], []
        with _exact_float32_matmul():
            for lo in range(0, len(q), rows):
                sims, indices = self._top_others(q[lo : lo + rows], fetch, buffer, width)
                sims, order = torch.sort(sims, dim=1, descending=True)
                out_sims.append(sims.cpu().numpy())
                out_indices.append(torch.gather(indices, 1, order).cpu().numpy())
        return np.concatenate(out_sims), np.concatenate(out_indices), False

    def _stream_shape(self) -> tuple[int, int]:
        rows = min(STREAM_ROWS, len(self.x))
        width = min(len(self.x), max(_PAD, STREAM_BUFFER_ENTRIES // rows // _PAD * _PAD))
        return rows, width

    def _streaming(self, fetch: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """Groups of STREAM_ROWS queries against gallery blocks of up to STREAM_BUFFER_ENTRIES /
        STREAM_ROWS columns (the whole gallery at SOP size): memory is bounded by the buffer and
        the group's candidates, whatever N."""
        n = self.n
        rows, width = self._stream_shape()
        buffer = torch.empty(rows * width, device=self.device)
        for q0 in range(0, n, rows):
            queries = torch.arange(q0, min(q0 + rows, n), device=self.device)
            yield (q0, *self._top_others(queries, fetch, buffer, width))

    def _top_others(
        self, queries: torch.Tensor, fetch: int, buffer: torch.Tensor, width: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n, x = self.n, self.x
        best_sims = torch.full((len(queries), fetch), -torch.inf, device=self.device)
        best_indices = torch.full((len(queries), fetch), -1, dtype=torch.long, device=self.device)
        q = x[queries]
        for b0 in range(0, len(x), width):
            b1 = min(b0 + width, len(x))
            sims = buffer[: len(queries) * (b1 - b0)].view(len(queries), b1 - b0)
            torch.mm(q, x[b0:b1].T, out=sims)
            if b1 > n:
                sims[:, n - b0 :] = -torch.inf
            inside = (queries >= b0) & (queries < b1)
            sims[inside.nonzero().squeeze(1), queries[inside] - b0] = -torch.inf
            _merge(best_sims, best_indices, *top_along_rows(sims, fetch), b0, fetch)
        return best_sims, best_indices

    def full_rows(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All n similarities of the query rows, the query's own entry at -inf."""
        q = torch.as_tensor(queries, device=self.device)
        with _exact_float32_matmul():
            sims = self.x[q] @ self.x[: self.n].T
        sims[torch.arange(len(q), device=self.device), q] = -torch.inf
        indices = np.broadcast_to(np.arange(self.n), sims.shape).copy()
        return sims.cpu().numpy(), indices


def top_along_rows(sims: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, column indices) of m largest entries of each row, in no particular order.

    Exact, and cheaper than ``topk`` over the whole row: the columns are cut into s strided
    segments per row (segment t = columns t, t + w, t + 2w, ...; one vectorised max over a
    contiguous axis), the m segments with the largest maxima are kept and ``topk`` runs on their
    m x s entries only. Every entry strictly larger than the m-th largest lies in a segment whose
    maximum beats the m-th largest segment maximum, so it is kept; ties at the cut keep some of
    the tied entries, as ``topk`` would (the caller's spare candidate detects them).
    """
    r, g = sims.shape
    s = _segment_size(g, m)
    if s == 1:
        return torch.topk(sims, min(m, g), dim=1, sorted=False)
    w = g // s
    segment_max = sims.view(r, s, w).amax(dim=1)  # (r, w)
    _, segments = torch.topk(segment_max, m, dim=1, sorted=False)
    columns = (segments.unsqueeze(2) + torch.arange(s, device=sims.device) * w).view(r, m * s)
    values, pos = torch.topk(torch.gather(sims, 1, columns), m, dim=1, sorted=False)
    return values, torch.gather(columns, 1, pos)


def _segment_size(length: int, m: int) -> int:
    """Largest s in (16, 8, 4, 2) splitting ``length`` evenly into at least 8m segments (so the
    second topk sees at most an eighth of the entries); 1 = plain topk."""
    for s in (16, 8, 4, 2):
        if length % s == 0 and length // s >= 8 * m:
            return s
    return 1


def _merge(best_sims, best_indices, sims, indices, offset, fetch) -> None:
    """Merge a block's candidates (indices relative to ``offset``) into the running top-``fetch``
    lists, in place. ``sorted=False``: selection only; one sort per finished group."""
    cand_sims = torch.cat((best_sims, sims), dim=1)
    cand_indices = torch.cat((best_indices, indices + offset), dim=1)
    merged_sims, pos = torch.topk(cand_sims, fetch, dim=1, sorted=False)
    best_sims.copy_(merged_sims)
    best_indices.copy_(torch.gather(cand_indices, 1, pos))


class _exact_float32_matmul:
    """Full float32 products on CUDA even if the user enabled TF32 (it would cost ~3 digits)."""

    def __enter__(self) -> None:
        self._saved = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc) -> None:
        torch.backends.cuda.matmul.allow_tf32 = self._saved


# --------------------------------------------------------------------------- approximate search

APPROXIMATE = ("ivf", "hnsw")
IVF_NPROBE = 32  # lists scanned per query by default (of about 4 sqrt(N))


def approximate_settings(spec: str, n: int, k: int) -> dict[str, float]:
    """The index settings ``spec`` means for N samples and depth k: ``"ivf"`` / ``"ivf:NPROBE"``
    (IVF-Flat, nlist = 4 sqrt(N), NPROBE lists scanned per query, default ``IVF_NPROBE``) or
    ``"hnsw"`` / ``"hnsw:EF"`` (HNSW, M = 32, efSearch EF, default max(64, 2 (k + 1)))."""
    method, colon, effort = spec.partition(":")
    if method not in APPROXIMATE or (colon and not effort.isdigit()) or (colon and int(effort) < 1):
        raise ValueError(
            f"approximate mode {spec!r} is not one of 'ivf', 'ivf:NPROBE', 'hnsw', "
            f"'hnsw:EF' (NPROBE, EF positive integers)"
        )
    if method == "hnsw":
        return {"hnsw_m": 32.0, "ef_search": float(int(effort) if effort else max(64, 2 * (k + 1)))}
    nlist = int(np.clip(4 * np.sqrt(n), 1, n // 39 or 1))  # faiss wants >= 39 points per list
    nprobe = min(nlist, int(effort) if effort else IVF_NPROBE)
    return {"nlist": float(nlist), "nprobe": float(nprobe)}


def iter_approximate_knn(
    x: np.ndarray, k: int, method: str = "ivf", chunk_size: int = DEFAULT_CHUNK_SIZE, seed: int = 0
) -> Iterator[KnnChunk]:
    """Approximate leave-one-out kNN with a faiss IVF-Flat or HNSW index (inner product), for sets
    where the exact N^2 search takes too long; ``method`` as in :func:`approximate_settings`.
    Neighbour order is faiss'; ties are not re-ranked; a row may hold fewer than k real neighbours
    (missing ones are index -1, similarity -inf). How far it is from exact is data-dependent:
    measure it, see ``evaluation.retrieval_metrics(approximate=...)``."""
    x = _as_float32_matrix(x)
    n = len(x)
    if not 1 <= k <= n - 1:
        raise ValueError(f"k must be between 1 and N - 1 = {n - 1}, got {k}")
    index = _build_approximate_index(x, approximate_settings(method, n, k), seed)
    for start in range(0, n, chunk_size):
        queries = np.arange(start, min(start + chunk_size, n))
        sims, indices = index.search(x[queries], min(k + 1, n))
        sims[indices < 0] = -np.inf
        is_self = indices == queries[:, None]
        keep = ~is_self
        keep[~is_self.any(axis=1), -1] = False
        sims = sims[keep].reshape(len(queries), -1)[:, :k]
        yield start, sims, indices[keep].reshape(len(queries), -1)[:, :k]


def _build_approximate_index(x: np.ndarray, settings: dict[str, float], seed: int):
    n, d = x.shape
    if "ef_search" in settings:
        index = faiss.IndexHNSWFlat(d, int(settings["hnsw_m"]), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.add(x)
        index.hnsw.efSearch = int(settings["ef_search"])
        return index
    nlist = int(settings["nlist"])
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    train = x[rng.choice(n, min(n, 40 * nlist), replace=False)]  # faiss wants >= 39 per list
    index.cp.seed = seed
    index.train(train)
    index.add(x)
    index.nprobe = int(settings["nprobe"])
    return index


# --------------------------------------------------------------------------- helpers


def _as_float32_matrix(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (N, D), got shape {x.shape}")
    return x
