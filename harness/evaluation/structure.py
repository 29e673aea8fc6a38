"""Embedding-structure metrics of the NIR paper's analysis table (PAPER.md sections 6 and 7):
spectral decay ``rho``, ``pi_density``, ``sigma2_kappa`` and ``g2``.

Every metric is computed on the L2-normalised embeddings (as at evaluation), in float64.

``rho`` (spectral decay; Roth et al. 2020, "Revisiting Training Strategies and Generalization
    Performance in Deep Metric Learning", ICML; code: Confusezius/Revisiting_Deep_Metric_Learning_
    PyTorch, ``metrics/rho_spectrum.py``). s = singular values of the (uncentred) N x D embedding
    matrix, sorted descending; the first (largest) one is dropped, as in that code's
    ``rho_spectrum@2``, the variant its ``Result_Evaluations.py`` plots against recall (the
    dominant direction of unit vectors mostly encodes their common mean, not how many directions
    are used); p = s / sum(s); rho = KL(U || p) = sum_i (1/K) log((1/K) / p_i) over the K = D - 1
    remaining values (scipy ``entropy(uniform, p)`` there). 0 for a flat spectrum, larger the
    fewer directions carry the variance; +inf when a remaining singular value is numerically zero
    (rank below D; numerically zero: below D * eps * s_max, numpy's ``matrix_rank`` rule).
    Reference differences: its numpy path (sklearn ``TruncatedSVD(D - 1)``) also loses the
    smallest value; its torch path (``torch.svd``, used with ``--evaluate_on_gpu``) keeps all D,
    as here. Exact, O(N D^2).

``pi_density`` (Roth et al. 2020, ``metrics/dists.py`` mode ``intra_over_inter``). Cosine
    distance d(a, b) = 1 - a.b. intra = mean over classes of the mean d over that class's ordered
    pairs i != j; inter = mean d over pairs c != c' of the L2-normalised class means;
    pi_density = intra / max(inter, 1e-8). Singleton classes have no pairs and are left out of the
    intra mean (the reference means to fill them with the largest class value but indexes it
    wrongly). 0 for perfectly collapsed classes. Exact, O(N D), from the identity
    sum_{i != j} x_i.x_j = |sum_i x_i|^2 - sum_i |x_i|^2.

``sigma2_kappa``: "variability of class cluster sizes". Neither the NIR code nor the Revisiting
    code publishes it, so this is our operationalisation, named after its symbol: kappa is the
    concentration of a von Mises-Fisher distribution fitted to each class (the isotropic model
    NIR argues against), by Banerjee et al. 2005 (JMLR, "Clustering on the Unit Hypersphere using
    von Mises-Fisher Distributions", eq. 4): kappa_c = R_c (D - R_c^2) / (1 - R_c^2), with R_c =
    |mean of class c's embeddings| (R_c clipped to 1 - 1e-9 so a collapsed class stays finite).
    sigma2_kappa = population variance over classes with >= 2 samples of kappa_c / mean(kappa):
    the squared coefficient of variation, scale-free so comparable across D. 0 when all classes
    are equally tight. Exact, O(N D). Its scale may differ from the paper's unpublished one.

``g2``: the Gaussian potential of Wang & Isola 2020 ("Understanding Contrastive Representation
    Learning through Alignment and Uniformity on the Hypersphere", ICML), t = 2:
    g2 = mean over pairs i != j of exp(-2 |x_i - x_j|^2). Their uniformity loss is log(g2); the
    paper's published values (0.072 to 0.079) are positive, which a log of a mean of values <= 1
    cannot be, so the table reports the mean potential itself. Lower = more uniform. The only
    O(N^2) metric: exact over all pairs (in row blocks of bounded memory) when N <=
    ``max_pairs_samples``, else exact over the pairs of a uniform random subset of
    ``max_pairs_samples`` samples drawn without replacement with ``seed`` (a U-statistic: an
    unbiased estimate of the full mean). Measured on synthetic SOP-sized sets (60,502 x 128,
    11,316 classes): seed-to-seed relative spread 5e-5 (isotropic classes) to 1.6e-3 (classes in
    a shared cone, g2 = 0.16), deviation from the exact all-pairs value 5e-4; the exact value
    takes 21 s there on 2 CPU cores, all four metrics with the subset 1.4 s (CUB size, exact:
    0.6 s).
"""

from __future__ import annotations

from typing import Any

import numpy as np

STRUCTURE_KEYS = ("rho", "pi_density", "sigma2_kappa", "g2")
DEFAULT_MAX_PAIRS_SAMPLES = 10_000  # CUB (5,924) and Cars (8,131) test sets stay exact
G2_T = 2.0  # the "2" of G2: exp(-t |x_i - x_j|^2)
RHO_DROPPED_LEADING = 1  # rho_spectrum@2 of the Revisiting-DML code
_INTER_FLOOR = 1e-8  # the reference's clip of the inter-class distance
_RESULTANT_CEILING = 1.0 - 1e-9  # keeps kappa of a perfectly collapsed class finite
_PAIR_BLOCK_ENTRIES = 1 << 23  # pair entries per block of the g2 sum (64 MB of float64)


def structure_metrics(
    embeddings: Any,
    labels: Any,
    *,
    seed: int = 0,
    max_pairs_samples: int = DEFAULT_MAX_PAIRS_SAMPLES,
) -> dict[str, float]:
    """``rho``, ``pi_density``, ``sigma2_kappa`` and ``g2`` (see the module docstring) of
    ``embeddings`` (N, D; numpy array or torch tensor) with integer class ``labels`` (N,), as
    Python floats. Rows are L2-normalised here (all-zero rows stay zero). ``g2`` is exact when
    N <= ``max_pairs_samples``, else computed on a uniform subset of that many samples drawn
    with ``seed``; the other three are always exact."""
    x, codes = _prepare(embeddings, labels)
    if (
        isinstance(max_pairs_samples, bool)
        or not isinstance(max_pairs_samples, (int, np.integer))
        or max_pairs_samples < 2
    ):
        raise ValueError(f"max_pairs_samples must be an integer >= 2, got {max_pairs_samples!r}")
    sums, counts, square_norms = _class_sums(x, codes)
    return {
        "rho": spectral_decay(x),
        "pi_density": _pi_density(sums, counts, square_norms),
        "sigma2_kappa": _sigma2_kappa(sums, counts, x.shape[1]),
        "g2": gaussian_potential(x, seed=seed, max_samples=int(max_pairs_samples)),
    }


def spectral_decay(x: np.ndarray) -> float:
    """rho of the rows of ``x`` as given (no normalisation here): KL(uniform || normalised
    singular values without the largest one)."""
    s = np.linalg.svd(np.asarray(x, dtype=np.float64), compute_uv=False)  # descending
    d = x.shape[1]
    if len(s) < d:  # fewer rows than dimensions: the missing singular values are zero
        s = np.concatenate([s, np.zeros(d - len(s))])
    kept = s[RHO_DROPPED_LEADING:]
    if len(kept) < 2:
        raise ValueError(
            f"rho needs embedding dimension D >= {RHO_DROPPED_LEADING + 2} (it drops "
            f"the largest singular value and compares the rest), got D = {d}"
        )
    if kept.min() <= d * np.finfo(np.float64).eps * s[0]:
        return float("inf")  # a direction with no variance: infinitely far from uniform
    p = kept / kept.sum()
    uniform = 1.0 / len(kept)
    return float(np.sum(uniform * np.log(uniform / p)))


def gaussian_potential(
    x: np.ndarray, *, seed: int = 0, max_samples: int = DEFAULT_MAX_PAIRS_SAMPLES
) -> float:
    """g2: mean of exp(-2 |x_i - x_j|^2) over pairs i != j of the rows of ``x`` as given; over
    the pairs of a seeded uniform subset of ``max_samples`` rows when there are more rows."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) > max_samples:
        subset = np.random.default_rng(seed).choice(len(x), size=max_samples, replace=False)
        x = x[np.sort(subset)]  # sorted: the same subset reads memory in order
    return _mean_pair_potential(x, max(1, _PAIR_BLOCK_ENTRIES // len(x)))


def _mean_pair_potential(x: np.ndarray, block_rows: int) -> float:
    """Exact mean over the n(n-1)/2 unordered pairs, one block of rows against the rows from the
    block's start on (each pair once); the block size never changes the result beyond rounding."""
    n = len(x)
    if n < 2:
        raise ValueError(f"g2 needs at least 2 samples, got {n}")
    square_norms = np.einsum("ij,ij->i", x, x)
    total = 0.0
    for start in range(0, n, block_rows):
        stop = min(start + block_rows, n)
        # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b, clipped: rounding can make it slightly negative.
        d2 = (
            square_norms[start:stop, None]
            + square_norms[None, start:]
            - 2.0 * (x[start:stop] @ x[start:].T)
        )
        potential = np.exp(-G2_T * np.maximum(d2, 0.0))
        width = stop - start
        total += np.triu(potential[:, :width], k=1).sum() + potential[:, width:].sum()
    return float(total / (n * (n - 1) / 2))


def _class_sums(x: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class: the sum of its rows (C, D), its size (C,), the sum of its squared norms (C,)."""
    n_classes = int(codes.max()) + 1
    sums = np.zeros((n_classes, x.shape[1]))
    np.add.at(sums, codes, x)
    counts = np.bincount(codes, minlength=n_classes)
    square_norms = np.bincount(codes, weights=np.einsum("ij,ij->i", x, x), minlength=n_classes)
    return sums, counts, square_norms


def _pi_density(sums: np.ndarray, counts: np.ndarray, square_norms: np.ndarray) -> float:
    pairs = counts >= 2
    # Mean of 1 - x_i.x_j over the ordered pairs i != j of each class with pairs.
    dot_sums = np.einsum("ij,ij->i", sums[pairs], sums[pairs]) - square_norms[pairs]
    n = counts[pairs]
    intra = float(np.mean(1.0 - dot_sums / (n * (n - 1.0))))
    # The same mean over the normalised class means (a zero mean stays zero).
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    centres = np.divide(sums, norms, out=np.zeros_like(sums), where=norms > 0)
    c = len(centres)
    total = centres.sum(axis=0)
    centre_dots = total @ total - np.einsum("ij,ij->", centres, centres)
    inter = 1.0 - centre_dots / (c * (c - 1.0))
    return float(intra / max(inter, _INTER_FLOOR))


def _sigma2_kappa(sums: np.ndarray, counts: np.ndarray, dim: int) -> float:
    pairs = counts >= 2
    resultant = np.linalg.norm(sums[pairs], axis=1) / counts[pairs]
    r = np.minimum(resultant, _RESULTANT_CEILING)
    kappa = r * (dim - r * r) / (1.0 - r * r)
    mean = kappa.mean()
    if mean <= 0:  # every class has a zero mean direction: no concentration to compare
        return 0.0
    return float(np.var(kappa / mean))


def _prepare(embeddings: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised float64 rows and dense class codes 0..C-1, after checking the inputs."""
    if hasattr(embeddings, "detach"):  # torch tensor, possibly on GPU, half precision or with grad
        embeddings = embeddings.detach().double().cpu().numpy()
    x = np.array(embeddings, dtype=np.float64)  # a copy: normalised in place below
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"embeddings must be a 2-D (N, D) array with D >= 1, got shape {x.shape}")
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(
            f"labels must be 1-D with one entry per embedding row: {len(x)} rows, "
            f"labels of shape {y.shape}"
        )
    bad_rows = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if len(bad_rows):
        raise ValueError(
            f"embeddings contain NaN or inf in {len(bad_rows)} of {len(x)} rows, "
            f"first rows: {bad_rows[:5].tolist()}"
        )
    _, codes, counts = np.unique(y, return_inverse=True, return_counts=True)
    if len(counts) < 2:
        raise ValueError(
            f"structure metrics compare classes: need at least 2 distinct labels, got {len(counts)}"
        )
    if counts.max() < 2:
        raise ValueError(
            f"every one of the {len(y)} labels is unique, so no class has a pair and "
            "intra-class structure (pi_density, sigma2_kappa) is undefined"
        )
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x, codes.reshape(-1)
