"""Tests for harness.evaluation.metrics against independent references.

References: a naive per-query implementation written here from the metric definitions (PAPER.md
section 6), pytorch-metric-learning's AccuracyCalculator, and closed-form values for constructed data.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from nirbench.harness.evaluation.metrics import METRIC_KEYS_DOC, compute_metrics, knn, l2_normalize

RECALL_AT = (1, 2, 4, 8, 16, 32)
TOL = 1e-9


# --------------------------------------------------------------------------- data


def clustered(n=300, n_classes=20, dim=16, noise=1.0, seed=0):
    """Gaussian classes around random centres: continuous similarities, no ties."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    centres = rng.standard_normal((n_classes, dim))
    x = centres[labels] + noise * rng.standard_normal((n, dim))
    return x.astype(np.float32), labels


def quantised(n=1200, n_classes=12, dim=16, seed=0):
    """Rows with exactly four entries of 0.5 (unit norm, exact in float): similarities take only
    the values 0, .25, .5, .75, 1, so nearly every rank is tied, computed exactly by any method."""
    rng = np.random.default_rng(seed)
    prototypes = [rng.choice(dim, 4, replace=False) for _ in range(n_classes)]
    labels = rng.integers(0, n_classes, n)
    x = np.zeros((n, dim), dtype=np.float32)
    for i, c in enumerate(labels):
        support = prototypes[c].copy()
        if rng.random() < 0.6:  # move one entry so classes overlap and rankings are imperfect
            support[rng.integers(4)] = rng.choice(np.setdiff1d(np.arange(dim), support))
        if rng.random() < 0.2:  # outliers: same-class samples inside the big ties near rank 1000
            support = rng.choice(dim, 4, replace=False)
        x[i, support] = 0.5
    return x, labels


# --------------------------------------------------------------------------- naive reference


def reference_ranking(x):
    """For each query, all OTHER indices sorted by (-cosine similarity, index); float64."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    sims = x @ x.T
    n = len(x)
    rankings = []
    for q in range(n):
        others = np.array([j for j in range(n) if j != q])
        rankings.append(others[np.lexsort((others, -sims[q, others]))])
    return rankings


def sum_of_precisions(relevance):
    """sum_i P@i * rel_i over the given ranks."""
    total, hits = 0.0, 0
    for rank, rel in enumerate(relevance, start=1):
        if rel:
            hits += 1
            total += hits / rank
    return total


def reference_metrics(x, labels, recall_at=RECALL_AT):
    labels = np.asarray(labels)
    n = len(labels)
    recall = {k: [] for k in recall_at}
    map_r, r_prec, map_1000 = [], [], []
    for q, ranking in enumerate(reference_ranking(x)):
        relevance = [bool(labels[j] == labels[q]) for j in ranking]
        class_size = int((labels == labels[q]).sum())
        map_1000.append(sum_of_precisions(relevance[: min(1000, n - 1)]) / class_size)
        r = class_size - 1
        if r == 0:
            continue
        for k in recall_at:
            recall[k].append(any(relevance[:k]))
        r_prec.append(sum(relevance[:r]) / r)
        map_r.append(sum_of_precisions(relevance[:r]) / r)
    out = {f"recall@{k}": float(np.mean(v)) for k, v in recall.items()}
    out.update(
        {"map@r": np.mean(map_r), "r_precision": np.mean(r_prec), "map@1000": np.mean(map_1000)}
    )
    return out


def assert_matches_reference(x, labels, recall_at=RECALL_AT, **kwargs):
    ours = compute_metrics(x, labels, recall_at, nmi=False, **kwargs)
    expected = reference_metrics(x, labels, recall_at)
    assert ours.keys() == expected.keys()
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, abs=TOL), key
    return ours


# --------------------------------------------------------------------------- reference agreement


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_naive_reference(seed):
    x, labels = clustered(seed=seed)
    labels[0] = 999  # a singleton class, excluded from the recall/MAP@R/R-precision averages
    ours = assert_matches_reference(x, labels)
    assert 0.2 < ours["recall@1"] < 0.95  # neither trivial nor hopeless, so the check has teeth


@pytest.mark.parametrize("with_singleton", [False, True])
def test_matches_pytorch_metric_learning(with_singleton):
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    x, labels = clustered(seed=2)
    if with_singleton:
        labels[0] = 999  # PML drops "lone" queries from its averages, as we do
    calc = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"), k="max_bin_count"
    )
    # PML's default FaissKNN is IndexFlatL2 on the RAW embeddings (no normalisation), so hand it
    # unit rows: on the sphere the L2 ranking equals our cosine ranking.
    pml = calc.get_accuracy(l2_normalize(x), labels)
    ours = compute_metrics(x, labels, nmi=False)
    assert ours["recall@1"] == pytest.approx(pml["precision_at_1"], abs=TOL)
    assert ours["r_precision"] == pytest.approx(pml["r_precision"], abs=TOL)
    assert ours["map@r"] == pytest.approx(pml["mean_average_precision_at_r"], abs=TOL)


def test_knn_matches_full_sort():
    x, _ = clustered(n=200, seed=3)
    sims, indices = knn(l2_normalize(x), 10)
    expected = np.stack([r[:10] for r in reference_ranking(x)])
    np.testing.assert_array_equal(indices, expected)
    assert sims.dtype == np.float32 and indices.dtype == np.int64
    assert np.all(np.diff(sims, axis=1) <= 0)


# --------------------------------------------------------------------------- edge cases


def test_exact_duplicates_within_a_class():
    x, labels = clustered(seed=4)
    for c in range(5):  # every class 0..4 becomes copies of its first member
        members = np.flatnonzero(labels == c)
        x[members] = x[members[0]]
    ours = assert_matches_reference(x, labels)
    # The copies outrank everything else, so each of their queries finds a same-class item first.
    copies = np.isin(labels, range(5))
    assert ours["recall@1"] >= copies.mean()


def test_duplicate_rows_do_not_count_the_query_itself():
    # Two classes whose rows are all identical: a query's twin must not be dropped as "self".
    x = np.repeat(np.eye(2, dtype=np.float32), 3, axis=0)
    labels = np.array([0, 0, 1, 1, 1, 0])  # rows 2 and 5 sit on the other class's point
    _, indices = knn(x, 5)
    assert all(q not in row for q, row in enumerate(indices))
    assert_matches_reference(x, labels, recall_at=(1, 2, 5))


def test_ties_follow_lower_index_rule_including_the_cut():
    # N = 1200 > 1001, so the kNN cut at rank 1000 (map@1000) lands inside big ties.
    x, labels = quantised()
    assert_matches_reference(x, labels, recall_at=(1, 2, 4, 8, 100))  # map@1000 needs the cut right
    # Small k: faiss' own choice among tied candidates at the cut differs from the rule here.
    _, indices = knn(x, 5)
    expected = np.stack([r[:5] for r in reference_ranking(x)])
    np.testing.assert_array_equal(indices, expected)


def test_classes_of_size_two():
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(100), 2)
    x = (rng.standard_normal((100, 16))[labels] + 0.7 * rng.standard_normal((200, 16))).astype(
        np.float32
    )
    ours = assert_matches_reference(x, labels, recall_at=(1, 2, 4))
    assert ours["map@r"] == pytest.approx(ours["recall@1"], abs=TOL)  # R = 1: both are P@1
    assert 0.2 < ours["recall@1"] < 1.0


def test_scale_invariance_and_normalize_flag():
    x, labels = clustered(seed=6)
    scales = np.random.default_rng(6).uniform(0.01, 100.0, (len(x), 1)).astype(np.float32)
    base = compute_metrics(x, labels)
    scaled = compute_metrics(x * scales, labels)
    prenormalised = compute_metrics(l2_normalize(x), labels, normalize=False)
    for key in base:
        assert scaled[key] == pytest.approx(base[key], abs=1e-12), key
        assert prenormalised[key] == pytest.approx(base[key], abs=1e-12), key
    # Without normalisation the raw inner product ranks differently.
    assert compute_metrics(x * scales, labels, nmi=False, normalize=False) != {
        k: v for k, v in base.items() if k != "nmi"
    }


def test_zero_norm_rows_stay_finite():
    x, labels = clustered(seed=7)
    x[[3, 50]] = 0.0
    ours = assert_matches_reference(x, labels)
    assert all(np.isfinite(v) for v in ours.values())


def test_singleton_class_is_excluded_from_averages():
    # Positive-orthant data plus a singleton pointing the other way: it ranks last for everyone,
    # so the other queries' rankings (restricted to their class) are unchanged.
    x, labels = clustered(seed=8)
    x = np.abs(x)
    without = compute_metrics(x, labels, nmi=False)
    x_with = np.vstack([x, -np.ones((1, x.shape[1]), np.float32)])
    labels_with = np.append(labels, 12345)
    with_singleton = compute_metrics(x_with, labels_with, nmi=False)
    for key in ("recall@1", "recall@8", "map@r", "r_precision"):
        assert with_singleton[key] == pytest.approx(without[key], abs=TOL), key
    # map@1000 averages over all queries; the singleton scores 0 (= its perfect score).
    n = len(x)
    assert with_singleton["map@1000"] == pytest.approx(without["map@1000"] * n / (n + 1), abs=TOL)


@pytest.mark.parametrize(("data", "small_chunk"), [(clustered, 7), (quantised, 97)])
def test_chunk_size_does_not_change_results(data, small_chunk):
    # quantised: nearly every row's cut is inside a tie and gets re-ranked, across many chunks.
    # (A chunk of 7 is correct there too, just slow: each tiny faiss call with k ~ N costs ~10 ms.)
    x, labels = data(seed=9)
    reference = compute_metrics(x, labels, nmi=False)
    assert compute_metrics(x, labels, nmi=False, chunk_size=small_chunk) == reference
    xn = l2_normalize(x)
    for k in (3, 40):
        sims, indices = knn(xn, k)
        sims_small, indices_small = knn(xn, k, chunk_size=small_chunk)
        np.testing.assert_array_equal(indices_small, indices)
        np.testing.assert_array_equal(sims_small, sims)


def test_perfect_embeddings():
    sizes = np.array([2, 3, 5, 8, 13, 4, 2, 7])
    labels = np.repeat(np.arange(len(sizes)), sizes)
    x = np.eye(len(sizes), dtype=np.float32)[labels]  # each class collapsed onto its own axis
    ours = compute_metrics(x, labels, recall_at=(1, 2, 4, 8), nmi=False)
    for key in ("recall@1", "recall@2", "recall@4", "recall@8", "map@r", "r_precision"):
        assert ours[key] == 1.0, key
    assert ours["map@1000"] == pytest.approx(np.mean(((sizes - 1) / sizes)[labels]), abs=TOL)
    assert ours["map@1000"] < 1.0


def test_arbitrary_integer_labels():
    x, labels = clustered(seed=10)
    mapping = np.random.default_rng(10).permutation(np.arange(-50_000, 50_000, 5000)) * 7
    base = compute_metrics(x, labels)
    relabelled = compute_metrics(x, mapping[labels])
    for key in base:
        assert relabelled[key] == pytest.approx(base[key], abs=1e-12), key


def test_torch_inputs_match_numpy():
    torch = pytest.importorskip("torch")
    x, labels = clustered(seed=11)
    base = compute_metrics(x, labels)
    from_torch = compute_metrics(
        torch.tensor(x, dtype=torch.float64, requires_grad=True), torch.tensor(labels)
    )
    assert from_torch == base


def test_keys_types_and_docs():
    x, labels = clustered(seed=12)
    ours = compute_metrics(x, labels, recall_at=(1, 10, 100))
    assert list(ours) == [
        "recall@1",
        "recall@10",
        "recall@100",
        "map@r",
        "r_precision",
        "map@1000",
        "nmi",
    ]
    assert all(type(v) is float and 0.0 <= v <= 1.0 for v in ours.values())
    assert "nmi" not in compute_metrics(x, labels, nmi=False)
    assert list(compute_metrics(x, labels, recall_at=(), nmi=False)) == [
        "map@r",
        "r_precision",
        "map@1000",
    ]
    assert set(METRIC_KEYS_DOC) == {"recall@{k}", "map@r", "r_precision", "map@1000", "nmi"}


# --------------------------------------------------------------------------- NMI


def two_blobs_with_label_noise(seed):
    """Two far-apart blobs; 10% of labels flipped, so the right answer is NMI(labels, blobs) < 1.
    With two clusters, k-means recovers the blobs from any initialisation."""
    rng = np.random.default_rng(seed)
    blob = np.repeat([0, 1], 60)
    centres = np.array([[1.0] * 8, [-1.0] * 8])
    x = (centres[blob] + 0.1 * rng.standard_normal((120, 8))).astype(np.float32)
    labels = blob.copy()
    flipped = rng.choice(120, 12, replace=False)
    labels[flipped] = 1 - labels[flipped]
    return x, labels, blob


@pytest.mark.parametrize("nmi_seed", [0, 1, 2])
def test_nmi_matches_sklearn_on_known_clustering(nmi_seed):
    x, labels, blob = two_blobs_with_label_noise(seed=13)
    expected = normalized_mutual_info_score(labels, blob)
    assert 0.3 < expected < 0.9
    assert compute_metrics(x, labels, nmi_seed=nmi_seed)["nmi"] == pytest.approx(
        expected, abs=1e-12
    )
    assert compute_metrics(x, blob, nmi_seed=nmi_seed)["nmi"] == pytest.approx(1.0, abs=1e-12)


def test_nmi_is_deterministic_for_a_seed():
    x, labels = clustered(seed=14)
    first = compute_metrics(x, labels, nmi_seed=3)["nmi"]
    assert compute_metrics(x, labels, nmi_seed=3)["nmi"] == first
    assert 0.0 < first < 1.0


def test_nmi_single_class():
    x, _ = clustered(n=20, seed=15)
    assert compute_metrics(x, np.zeros(20, int))["nmi"] == 1.0


# --------------------------------------------------------------------------- errors


def test_non_finite_embeddings_are_rejected_with_row_count():
    x, labels = clustered(seed=16)
    x[3, 0] = np.nan
    x[10, :] = np.inf
    with pytest.raises(ValueError, match=r"NaN or inf .* in 2 of 300 rows.*\[3, 10\]"):
        compute_metrics(x, labels)


@pytest.mark.parametrize("bad", [0, -1, 300, 1000])
def test_bad_recall_at_names_value_and_n(bad):
    x, labels = clustered(seed=17)
    with pytest.raises(ValueError, match=rf"recall_at value {bad} .*N = 300"):
        compute_metrics(x, labels, recall_at=(1, bad))


def test_other_input_errors():
    x, labels = clustered(seed=18)
    with pytest.raises(ValueError, match="300 embeddings, 299 labels"):
        compute_metrics(x, labels[:-1])
    with pytest.raises(ValueError, match="at least 2 samples"):
        compute_metrics(x[:1], labels[:1], recall_at=())
    with pytest.raises(ValueError, match="every one of the 5 labels is unique"):
        compute_metrics(x[:5], np.arange(5), recall_at=(1,))
    with pytest.raises(ValueError, match="2-D"):
        compute_metrics(x[0], labels)


def test_l2_normalize_in_blocks_equals_whole():
    x, _ = clustered(n=1000, seed=19)
    x[5] = 0.0
    whole = l2_normalize(x, rows_per_block=len(x))
    np.testing.assert_array_equal(l2_normalize(x, rows_per_block=77), whole)
    assert np.all(whole[5] == 0.0)
    np.testing.assert_allclose(np.linalg.norm(np.delete(whole, 5, axis=0), axis=1), 1.0, atol=1e-6)
