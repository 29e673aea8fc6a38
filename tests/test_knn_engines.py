"""Tests for harness.evaluation.knn and harness.evaluation.clustering: every exact engine gives the reference ranking,
whatever the chunk size and schedule; engine selection follows the machine's capabilities; the
approximate mode reports its deviation. GPU paths run only where a CUDA device is present."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import normalized_mutual_info_score

from nirbench.harness.evaluation import clustering, knn as knn_module
from nirbench.harness.evaluation.clustering import kmeans_assign, select_kmeans_engine
from nirbench.harness.evaluation.metrics import l2_normalize, retrieval_metrics
from nirbench.harness.evaluation.knn import (
    Capabilities,
    iter_approximate_knn,
    knn,
    search_rows,
    select_engine,
    top_along_rows,
)

from test_evaluation import clustered, quantised, reference_metrics, reference_ranking

CPU_ENGINES = ("faiss-cpu", "torch-cpu")
CPU_ONLY = Capabilities(cuda=False, faiss_gpus=0, faiss_gpu_works=False)


@pytest.fixture(params=["one-block", "many-blocks"])
def torch_schedule(request, monkeypatch):
    """Run a test with the torch engine's default block sizes (test data: one product per group)
    and with blocks small enough that test-sized data spans many groups and gallery blocks."""
    if request.param == "many-blocks":
        monkeypatch.setattr(knn_module, "STREAM_ROWS", 128)
        monkeypatch.setattr(knn_module, "STREAM_BUFFER_ENTRIES", 128 * 208)
    return request.param


# --------------------------------------------------------------------------- agreement


def test_torch_engine_matches_faiss_on_tie_free_data(torch_schedule):
    x = l2_normalize(clustered(n=400, seed=20)[0])
    for k in (1, 7, 60):
        faiss_sims, faiss_indices = knn(x, k, engine="faiss-cpu")
        torch_sims, torch_indices = knn(x, k, engine="torch-cpu")
        np.testing.assert_array_equal(torch_indices, faiss_indices)
        np.testing.assert_allclose(torch_sims, faiss_sims, atol=1e-6)
    expected = np.stack([r[:60] for r in reference_ranking(x)])
    np.testing.assert_array_equal(torch_indices, expected)


@pytest.mark.parametrize("engine", CPU_ENGINES)
def test_every_engine_follows_the_tie_rule(engine, torch_schedule):
    # Quantised similarities: nearly every rank is tied, including at every cut.
    x, labels = quantised(n=600, seed=21)
    reference = reference_ranking(x)
    for k in (1, 5, 130):
        _, indices = knn(x, k, chunk_size=97, engine=engine)
        np.testing.assert_array_equal(indices, np.stack([r[:k] for r in reference]))


@pytest.mark.parametrize("engine", CPU_ENGINES)
@pytest.mark.parametrize("data", [clustered, quantised])
def test_chunked_equals_unchunked(engine, data, torch_schedule):
    """Metrics and neighbours are exactly those of one unchunked pass (chunk >= N)."""
    x, labels = data(n=500, seed=22)
    xn = l2_normalize(x)
    whole = retrieval_metrics(x, labels, (1, 2, 8, 50), chunk_size=len(x), engine=engine)
    whole_sims, whole_indices = knn(xn, 40, chunk_size=len(x), engine=engine)
    for chunk in (1, 111):
        assert retrieval_metrics(x, labels, (1, 2, 8, 50), chunk_size=chunk, engine=engine) == whole
        sims, indices = knn(xn, 40, chunk_size=chunk, engine=engine)
        np.testing.assert_array_equal(indices, whole_indices)
        np.testing.assert_array_equal(sims, whole_sims)  # same products, bit for bit


@pytest.mark.parametrize("shape", [(64, 512), (48, 4096), (40, 1000)])
@pytest.mark.parametrize("m", [1, 3, 12, 40])
@pytest.mark.parametrize("tied", [False, True])
def test_segmented_selection_is_exact(shape, m, tied):
    """top_along_rows keeps exactly topk's values, and every entry strictly above the m-th value,
    with ties (quantised values) at every cut; the shapes cover the segmented path (s = 16, 8, 4,
    2) and plain topk."""
    g = torch.Generator().manual_seed(m)
    sims = torch.rand(shape, generator=g)
    if tied:
        sims = (sims * 8).floor() / 8
    values, where = top_along_rows(sims, m)
    expected = torch.topk(sims, m, dim=1).values
    assert torch.equal(values.sort(dim=1, descending=True).values, expected)
    assert torch.equal(torch.gather(sims, 1, where), values)  # indices point at the values
    assert all(len(set(row.tolist())) == m for row in where)  # no entry twice
    above = sims > expected[:, -1:]
    assert torch.equal(above.sum(dim=1), (values > expected[:, -1:]).sum(dim=1))


def test_engines_agree_with_reference_metrics(torch_schedule):
    x, labels = clustered(n=350, seed=23)
    expected = reference_metrics(x, labels, (1, 4, 16))
    for engine in CPU_ENGINES:
        ours = retrieval_metrics(x, labels, (1, 4, 16), engine=engine)
        for key, value in expected.items():
            assert ours[key] == pytest.approx(value, abs=1e-9), (engine, key)


def test_subset_pass_equals_full_pass():
    """A pass only as deep as the requested metrics gives the same numbers as the full pass."""
    x, labels = clustered(n=500, seed=24)
    full = retrieval_metrics(x, labels, (1, 10))
    small = retrieval_metrics(x, labels, (1,), include=("map@r", "r_precision"))
    assert list(small) == ["recall@1", "map@r", "r_precision"]
    for key, value in small.items():
        assert value == full[key], key
    with pytest.raises(ValueError, match="unknown metrics"):
        retrieval_metrics(x, labels, include=("map@100",))


@pytest.mark.parametrize("data", [clustered, quantised])
def test_search_rows_matches_full_knn(data, torch_schedule):
    x = l2_normalize(data(n=300, seed=25)[0])
    _, all_indices = knn(x, 5, engine="faiss-cpu")
    queries = np.array([0, 17, 299, 150, 3, 4, 5])
    for engine in CPU_ENGINES:
        _, indices = search_rows(x, queries, 5, engine=engine, chunk_size=3)
        np.testing.assert_array_equal(indices, all_indices[queries])


@pytest.mark.parametrize("engine", CPU_ENGINES)
def test_tie_at_the_cut_above_the_query(engine):
    """Raw inner products (no normalisation): the query's own similarity (1) is the LOWEST of its
    k + 2 candidates, so no full re-rank is triggered and the tie between its k-th and (k+1)-th
    neighbours must be resolved inside the candidates: lower index first."""
    x = np.array(
        [[1.0, 0.0], [3.0, 0.0], [2.0, 0.0], [2.0, 0.0], [0.5, 0.0], [-1.0, 0.0]], dtype=np.float32
    )
    _, indices = knn(x, 2, engine=engine)
    assert indices[0].tolist() == [1, 2]
    # The same situation handed over in the worse order an engine may return.
    sims, idx = knn_module._drop_self_and_sort(
        np.array([[3.0, 2.0, 2.0, 1.0]], np.float32), np.array([[1, 3, 2, 0]]), np.array([0]), 2
    )
    assert idx[0].tolist() == [1, 2] and sims[0].tolist() == [3.0, 2.0]


def test_knn_argument_errors():
    x = l2_normalize(clustered(n=50, seed=26)[0])
    with pytest.raises(ValueError, match="k must be between 1 and N - 1 = 49"):
        knn(x, 50)
    with pytest.raises(ValueError, match="chunk_size"):
        knn(x, 3, chunk_size=0)
    with pytest.raises(ValueError, match="unknown kNN engine 'cuda'"):
        knn(x, 3, engine="cuda")


# --------------------------------------------------------------------------- selection


@pytest.mark.parametrize(
    ("caps", "k", "expected"),
    [
        (CPU_ONLY, 10, "faiss-cpu"),
        (CPU_ONLY, 5000, "faiss-cpu"),
        (Capabilities(cuda=True, faiss_gpus=1, faiss_gpu_works=True), 10, "faiss-gpu"),
        (Capabilities(cuda=True, faiss_gpus=1, faiss_gpu_works=True), 2046, "faiss-gpu"),
        # faiss' GPU search stops at 2048 candidates (k + the query + a spare): torch takes over
        (Capabilities(cuda=True, faiss_gpus=1, faiss_gpu_works=True), 2047, "torch-cuda"),
        # a faiss build whose kernels do not run on this GPU (e.g. Hopper): fall back to torch
        (Capabilities(cuda=True, faiss_gpus=1, faiss_gpu_works=False), 10, "torch-cuda"),
        # torch sees the GPU, faiss (a CPU build) does not
        (Capabilities(cuda=True, faiss_gpus=0, faiss_gpu_works=False), 10, "torch-cuda"),
    ],
)
def test_auto_engine_selection(caps, k, expected, monkeypatch):
    monkeypatch.delenv("NIRBENCH_KNN_ENGINE", raising=False)
    assert select_engine("auto", k=k, caps=caps) == expected


def test_explicit_engine_selection(monkeypatch):
    monkeypatch.delenv("NIRBENCH_KNN_ENGINE", raising=False)
    assert select_engine("faiss-cpu", caps=CPU_ONLY) == "faiss-cpu"
    with pytest.raises(RuntimeError, match="torch-cuda needs a CUDA device"):
        select_engine("torch-cuda", caps=CPU_ONLY)
    with pytest.raises(RuntimeError, match="faiss-gpu is not usable here"):
        select_engine("faiss-gpu", caps=Capabilities(True, 1, faiss_gpu_works=False))
    with pytest.raises(ValueError, match=r"k \+ 2 <= 2048"):
        select_engine("faiss-gpu", k=5000, caps=Capabilities(True, 1, True))
    monkeypatch.setenv("NIRBENCH_KNN_ENGINE", "torch-cpu")
    assert select_engine("auto", caps=CPU_ONLY) == "torch-cpu"


def test_probe_on_this_machine():
    caps = knn_module.probe()
    assert caps.cuda == torch.cuda.is_available()
    if not caps.cuda:
        assert not caps.faiss_gpu_works


@pytest.mark.parametrize(
    ("caps", "expected"),
    [
        (CPU_ONLY, "torch-cpu"),
        (Capabilities(cuda=True, faiss_gpus=1, faiss_gpu_works=True), "faiss-gpu"),
        (Capabilities(cuda=True, faiss_gpus=1, faiss_gpu_works=False), "torch-cuda"),
    ],
)
def test_kmeans_engine_selection(caps, expected, monkeypatch):
    monkeypatch.delenv("NIRBENCH_KMEANS_ENGINE", raising=False)
    assert select_kmeans_engine("auto", caps=caps) == expected
    monkeypatch.setenv("NIRBENCH_KMEANS_ENGINE", "faiss-cpu")
    assert select_kmeans_engine("auto", caps=caps) == "faiss-cpu"


def test_kmeans_engine_errors():
    with pytest.raises(ValueError, match="unknown k-means engine"):
        select_kmeans_engine("sklearn", caps=CPU_ONLY)
    with pytest.raises(RuntimeError, match="torch-cuda needs a CUDA device"):
        select_kmeans_engine("torch-cuda", caps=CPU_ONLY)
    with pytest.raises(RuntimeError, match="faiss-gpu is not usable"):
        select_kmeans_engine("faiss-gpu", caps=CPU_ONLY)


# --------------------------------------------------------------------------- k-means


@pytest.mark.parametrize("engine", ["faiss-cpu", "torch-cpu"])
def test_kmeans_recovers_separated_clusters(engine):
    rng = np.random.default_rng(27)
    centres = 10 * rng.standard_normal((12, 8))
    truth = np.repeat(np.arange(12), 25)
    x = (centres[truth] + 0.05 * rng.standard_normal((300, 8))).astype(np.float32)
    best = max(
        normalized_mutual_info_score(truth, kmeans_assign(x, 12, seed=s, engine=engine))
        for s in range(3)
    )
    assert best > 0.85  # Lloyd from a random init: close to the true clustering, not always on it
    first = kmeans_assign(x, 12, seed=1, engine=engine)
    np.testing.assert_array_equal(kmeans_assign(x, 12, seed=1, engine=engine), first)


def test_torch_kmeans_refills_empty_clusters():
    # 40 distinct points, 10 copies each, 60 clusters: most initial centroids are duplicates, so
    # clusters go empty and must be split off large ones; every distinct point ends up alone.
    rng = np.random.default_rng(28)
    points = rng.standard_normal((40, 6)).astype(np.float32)
    x = np.repeat(points, 10, axis=0)
    assignment = kmeans_assign(x, 60, niter=30, seed=0, engine="torch-cpu")
    truth = np.repeat(np.arange(40), 10)
    # each cluster holds copies of one point only (no cluster mixes two distinct points)
    assert normalized_mutual_info_score(truth, assignment) > 0.9
    assert all(len(np.unique(truth[assignment == c])) == 1 for c in np.unique(assignment))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("max_movers", [1024, 8])
def test_bounded_kmeans_equals_plain_lloyd(seed, max_movers, monkeypatch):
    """The bounds only skip samples whose cluster cannot change: same clustering as plain Lloyd,
    including the iterations where centroids jump (empty-cluster splits: k close to N/2) and
    with more moving centroids than are measured exactly (max_movers 8)."""
    monkeypatch.setattr(clustering, "_MAX_MOVERS", max_movers)
    skipped = []
    original = clustering._assign_top2
    monkeypatch.setattr(
        clustering,
        "_assign_top2",
        lambda x, *a: skipped.append(len(x) - len(a[-1])) or original(x, *a),
    )
    for n, k, noise in ((900, 40, 0.6), (400, 180, 0.3)):
        x, _ = clustered(n=n, n_classes=k, dim=12, noise=noise, seed=seed)
        x = l2_normalize(x)
        cpu = torch.device("cpu")
        bounded = clustering._torch_kmeans(x, k, 20, seed, cpu, bounds=True)
        plain = clustering._torch_kmeans(x, k, 20, seed, cpu, bounds=False)
        np.testing.assert_array_equal(bounded, plain)
    assert max(skipped) > 0  # the bounds did skip samples, so the comparison has teeth


def test_kmeans_matches_faiss_quality_on_class_data():
    x, labels = clustered(n=600, n_classes=20, dim=16, noise=0.5, seed=29)
    xn = l2_normalize(x)
    nmi = {
        e: normalized_mutual_info_score(labels, kmeans_assign(xn, 20, seed=0, engine=e))
        for e in ("faiss-cpu", "torch-cpu")
    }
    assert nmi["torch-cpu"] == pytest.approx(nmi["faiss-cpu"], abs=0.05), nmi


# --------------------------------------------------------------------------- approximate


@pytest.mark.parametrize("method", ["ivf", "hnsw"])
def test_approximate_mode_reports_its_deviation(method):
    x, labels = clustered(n=1500, n_classes=60, dim=16, noise=1.2, seed=30)
    exact = retrieval_metrics(x, labels, (1, 10))
    approx = retrieval_metrics(x, labels, (1, 10), approximate=method, approx_sample=500, seed=1)
    assert approx["approx/sample"] == 500
    assert approx["approx/recall@1_deviation"] == pytest.approx(
        approx["approx/recall@1_approx"] - approx["approx/recall@1_exact"]
    )
    # the exact side of the sample agrees with the exact pass (within sampling error)
    assert abs(approx["approx/recall@1_exact"] - exact["recall@1"]) < 0.1
    assert abs(approx["approx/recall@1_deviation"]) < 0.1
    assert approx["recall@1"] == pytest.approx(exact["recall@1"], abs=0.1)


def test_approximate_settings_and_errors():
    x, labels = clustered(n=1500, n_classes=60, dim=16, noise=1.2, seed=34)
    out = retrieval_metrics(x, labels, (1,), approximate="ivf:3", approx_sample=100)
    assert out["approx/nprobe"] == 3 and out["approx/nlist"] >= 3
    out = retrieval_metrics(x, labels, (1,), approximate="hnsw:40", approx_sample=100)
    assert out["approx/ef_search"] == 40
    for bad in ("ivf:", "ivf:0", "pq", "hnsw:x"):
        with pytest.raises(ValueError, match="approximate mode"):
            retrieval_metrics(x, labels, (1,), approximate=bad)


def test_approximate_rows_exclude_the_query():
    x = l2_normalize(clustered(n=800, seed=31)[0])
    for start, sims, indices in iter_approximate_knn(x, 5, "ivf", chunk_size=300):
        queries = np.arange(start, start + len(indices))
        assert indices.shape == (len(queries), 5)
        assert not (indices == queries[:, None]).any()


def test_empty_approximate_slots_never_count(monkeypatch):
    """Slots an approximate index could not fill (index -1) are not hits, even though numpy
    would read codes[-1] as the last sample's class."""
    x, labels = clustered(n=200, seed=32)
    labels[-1] = labels[0]

    def sparse_knn(x, k, method, chunk_size, seed):
        for start in range(0, len(x), chunk_size):
            c = min(chunk_size, len(x) - start)
            yield start, np.zeros((c, k), np.float32), np.full((c, k), -1, np.int64)

    monkeypatch.setattr("nirbench.harness.evaluation.metrics.iter_approximate_knn", sparse_knn)
    out = retrieval_metrics(x, labels, (1,), approximate="ivf", approx_sample=50)
    assert out["recall@1"] == 0.0 and out["map@r"] == 0.0
    assert out["approx/recall@1_approx"] == 0.0


# --------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_engines_match_cpu():
    x, labels = clustered(n=3000, n_classes=100, dim=32, seed=33)
    xn = l2_normalize(x)
    cpu_sims, cpu_indices = knn(xn, 50, engine="torch-cpu")
    engines = ["torch-cuda"] + (["faiss-gpu"] if knn_module.probe().faiss_gpu_works else [])
    for engine in engines:
        sims, indices = knn(xn, 50, engine=engine)
        np.testing.assert_array_equal(indices, cpu_indices)
        np.testing.assert_allclose(sims, cpu_sims, atol=1e-5)
    q_sims, q_indices = knn(*quantised(n=1500)[:1], 20, engine="torch-cuda")
    np.testing.assert_array_equal(q_indices, knn(quantised(n=1500)[0], 20, engine="torch-cpu")[1])
    for engine in ("torch-cuda",) + (("faiss-gpu",) if knn_module.probe().faiss_gpu_works else ()):
        assignment = kmeans_assign(xn, 100, seed=0, engine=engine)
        assert normalized_mutual_info_score(labels, assignment) > 0.5
    assert clustering.select_kmeans_engine("auto") in ("faiss-gpu", "torch-cuda")
