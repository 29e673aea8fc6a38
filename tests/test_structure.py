"""harness.evaluation.structure: each metric against a naive reference written out here (loops over pairs
and classes, scipy's SVD-free oracles), known values, the subsampled g2 path against the exact one,
input checks, and `nirbench evaluate --structure`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from scipy.stats import entropy

from nirbench.harness.cli.main import main
from nirbench.harness.evaluation.structure import (
    STRUCTURE_KEYS,
    _mean_pair_potential,
    gaussian_potential,
    spectral_decay,
    structure_metrics,
)


def clustered(
    n_classes: int, per_class: int, dim: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Unnormalised embeddings: class centres plus noise of a class-specific scale."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), per_class)
    centres = rng.standard_normal((n_classes, dim)) + 0.8 * rng.standard_normal(dim)
    scale = rng.uniform(0.3, 1.5, n_classes)[labels, None]
    x = centres[labels] + 0.6 * scale * rng.standard_normal((len(labels), dim))
    return x * rng.uniform(0.5, 3.0, (len(labels), 1)), labels  # row norms must not matter


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# --- naive references ----------------------------------------------------------------------------


def naive_rho(x: np.ndarray) -> float:
    """The Revisiting-DML rho_spectrum@2: full SVD, drop the largest value, KL(uniform || p)."""
    s = np.linalg.svd(unit_rows(x), compute_uv=False)[1:]
    return float(entropy(np.full(len(s), 1.0 / len(s)), s / s.sum()))


def naive_pi_density(x: np.ndarray, labels: np.ndarray) -> float:
    """Revisiting-DML metrics/dists.py intra_over_inter, singleton classes left out."""
    x = unit_rows(x)
    intra = []
    for c in np.unique(labels):
        members = x[labels == c]
        if len(members) < 2:
            continue
        total, pairs = 0.0, 0
        for i in range(len(members)):
            for j in range(len(members)):
                if i != j:
                    total += 1.0 - members[i] @ members[j]
                    pairs += 1
        intra.append(total / pairs)
    centres = unit_rows(np.stack([x[labels == c].mean(axis=0) for c in np.unique(labels)]))
    inter = cdist(centres, centres, "cosine")
    inter = inter.sum() / (len(centres) ** 2 - len(centres))
    return float(np.mean(intra) / inter)


def naive_sigma2_kappa(x: np.ndarray, labels: np.ndarray) -> float:
    x = unit_rows(x)
    dim = x.shape[1]
    kappas = []
    for c in np.unique(labels):
        members = x[labels == c]
        if len(members) < 2:
            continue
        r = np.linalg.norm(members.mean(axis=0))
        kappas.append(r * (dim - r**2) / (1 - r**2))
    relative = np.array(kappas) / np.mean(kappas)
    return float(np.mean((relative - relative.mean()) ** 2))


def naive_g2(x: np.ndarray) -> float:
    x = unit_rows(x)
    values = [
        math.exp(-2.0 * float(np.sum((x[i] - x[j]) ** 2)))
        for i in range(len(x))
        for j in range(i + 1, len(x))
    ]
    return float(np.mean(values))


# --- each metric against its reference -----------------------------------------------------------


def test_every_metric_matches_its_naive_reference():
    x, labels = clustered(n_classes=6, per_class=7, dim=10, seed=3)
    x, labels = np.vstack([x, x[:1] * -2.0]), np.append(labels, 99)  # plus a singleton class
    metrics = structure_metrics(x, labels)
    assert set(metrics) == set(STRUCTURE_KEYS)
    assert all(isinstance(v, float) for v in metrics.values())
    assert metrics["rho"] == pytest.approx(naive_rho(x), rel=1e-9)
    assert metrics["pi_density"] == pytest.approx(naive_pi_density(x, labels), rel=1e-9)
    assert metrics["sigma2_kappa"] == pytest.approx(naive_sigma2_kappa(x, labels), rel=1e-9)
    assert metrics["g2"] == pytest.approx(naive_g2(x), rel=1e-9)


def test_torch_and_float32_inputs_give_the_numpy_float64_result():
    x, labels = clustered(n_classes=5, per_class=6, dim=8, seed=1)
    expected = structure_metrics(x, labels)
    got = structure_metrics(torch.from_numpy(x), torch.from_numpy(labels))
    assert got == pytest.approx(expected, rel=1e-12)
    got32 = structure_metrics(x.astype(np.float32), labels)
    assert got32 == pytest.approx(expected, rel=1e-5)


# --- known values --------------------------------------------------------------------------------


def test_rho_is_zero_for_an_isotropic_spectrum_and_infinite_for_rank_one():
    dim = 6
    isotropic = np.vstack([np.eye(dim), -np.eye(dim), 3.0 * np.eye(dim)])  # all s equal
    assert spectral_decay(isotropic) == pytest.approx(0.0, abs=1e-12)
    rank_one = np.tile(np.arange(1.0, dim + 1), (20, 1))
    assert spectral_decay(unit_rows(rank_one)) == math.inf
    fewer_rows_than_dims = np.eye(dim)[:3]
    assert spectral_decay(fewer_rows_than_dims) == math.inf


def test_rho_of_a_known_spectrum():
    # Rows e_k repeated n_k times: X^T X = diag(n_k), so the singular values are sqrt(n_k).
    counts = [9, 4, 4, 1]
    x = np.vstack([np.tile(np.eye(4)[k], (n, 1)) for k, n in enumerate(counts)])
    kept = np.array([2.0, 2.0, 1.0])  # sqrt(9) dropped
    p = kept / kept.sum()
    expected = sum((1 / 3) * math.log((1 / 3) / pi) for pi in p)
    assert spectral_decay(x) == pytest.approx(expected, rel=1e-12)
    # ... and a flatter spectrum decays less.
    flatter = np.vstack([np.tile(np.eye(4)[k], (n, 1)) for k, n in enumerate([4, 4, 4, 3])])
    assert 0 < spectral_decay(flatter) < expected


def test_pi_density_of_perfectly_collapsed_classes_is_zero():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((5, 8))
    labels = np.repeat(np.arange(5), 4)
    x = centres[labels] * rng.uniform(0.5, 2.0, (len(labels), 1))  # same direction per class
    metrics = structure_metrics(x, labels)
    assert metrics["pi_density"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["sigma2_kappa"] == pytest.approx(0.0, abs=1e-12)  # all equally tight


def test_pi_density_of_orthogonal_pairs():
    # Class c = {e_2c, e_2c+1}: intra distance 1; normalised centres are orthogonal: inter 1.
    x = np.eye(6)
    labels = np.array([0, 0, 1, 1, 2, 2])
    assert structure_metrics(x, labels)["pi_density"] == pytest.approx(1.0, rel=1e-12)


def test_sigma2_kappa_known_values():
    dim = 8
    # Three classes of the same shape (two orthogonal unit vectors): equal kappa, variance 0.
    same_shape = structure_metrics(np.eye(dim)[:6], np.array([0, 0, 1, 1, 2, 2]))
    assert same_shape["sigma2_kappa"] == pytest.approx(0.0, abs=1e-12)
    # Class 0 = {e0, e1}: R = 1/sqrt(2); class 1 = {e2, e3, e4, e5}: R = 1/2.
    x = np.eye(dim)[:6]
    labels = np.array([0, 0, 1, 1, 1, 1])
    r0, r1 = 1 / math.sqrt(2), 0.5
    k0 = r0 * (dim - r0**2) / (1 - r0**2)
    k1 = r1 * (dim - r1**2) / (1 - r1**2)
    mean = (k0 + k1) / 2
    expected = ((k0 / mean - 1) ** 2 + (k1 / mean - 1) ** 2) / 2
    assert structure_metrics(x, labels)["sigma2_kappa"] == pytest.approx(expected, rel=1e-12)


def test_g2_of_antipodal_and_orthogonal_points():
    e = np.eye(3)
    assert gaussian_potential(np.stack([e[0], -e[0]])) == pytest.approx(math.exp(-8.0), rel=1e-12)
    # +-e0, +-e1: two antipodal pairs (|d|^2 = 4), four orthogonal ones (|d|^2 = 2).
    x = np.stack([e[0], -e[0], e[1], -e[1]])
    expected = (2 * math.exp(-8.0) + 4 * math.exp(-4.0)) / 6
    assert structure_metrics(2.5 * x, np.array([0, 0, 1, 1]))["g2"] == pytest.approx(
        expected, rel=1e-12
    )
    # Identical points: the largest possible potential, 1.
    assert gaussian_potential(np.tile(e[0], (5, 1))) == pytest.approx(1.0, rel=1e-12)


# --- exact pairs in blocks, and the subsampled path ----------------------------------------------


def test_g2_block_size_does_not_change_the_result():
    x = unit_rows(clustered(n_classes=4, per_class=10, dim=6, seed=2)[0])
    reference = naive_g2(x)
    for block_rows in (1, 3, 7, 39, 40, 1000):
        assert _mean_pair_potential(x, block_rows) == pytest.approx(reference, rel=1e-12)


def test_g2_is_exact_up_to_max_pairs_samples_and_subsampled_above():
    x, labels = clustered(n_classes=60, per_class=50, dim=32, seed=4)  # N = 3000
    exact = structure_metrics(x, labels, max_pairs_samples=3000)
    assert exact["g2"] == pytest.approx(
        gaussian_potential(unit_rows(x), max_samples=10**9), rel=1e-12
    )
    sub = [structure_metrics(x, labels, max_pairs_samples=1000, seed=s) for s in range(4)]
    # The other metrics never subsample.
    for key in ("rho", "pi_density", "sigma2_kappa"):
        assert all(m[key] == exact[key] for m in sub)
    # Same seed, same subset; another seed, another subset.
    assert structure_metrics(x, labels, max_pairs_samples=1000, seed=0)["g2"] == sub[0]["g2"]
    assert len({m["g2"] for m in sub}) == 4
    # Tolerance: 1000 of 3000 samples here: relative spread 1.3% (std over 40 seeds, worst 2.8%);
    # each subsampled value within 5%, their mean within 2.5%.
    for m in sub:
        assert m["g2"] == pytest.approx(exact["g2"], rel=0.05)
    assert np.mean([m["g2"] for m in sub]) == pytest.approx(exact["g2"], rel=0.025)


# --- input checks --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "embeddings, labels, message",
    [
        (np.ones((4, 3)), np.zeros(4), "at least 2 distinct labels"),
        (np.eye(4), np.arange(4), "every one of the 4 labels is unique"),
        (np.eye(4), np.zeros(3), "one entry per embedding row"),
        (np.array([[1.0, np.nan], [0.0, 1.0], [1.0, 1.0]]), np.array([0, 0, 1]), "NaN or inf"),
        (np.ones(4), np.zeros(4), "2-D"),
    ],
)
def test_bad_inputs_are_named(embeddings, labels, message):
    with pytest.raises(ValueError, match=message):
        structure_metrics(embeddings, labels)


def test_bad_max_pairs_samples_is_named():
    with pytest.raises(ValueError, match="max_pairs_samples must be an integer >= 2"):
        structure_metrics(np.eye(4), np.array([0, 0, 1, 1]), max_pairs_samples=1)


# --- nirbench evaluate --structure ---------------------------------------------------------------


def test_cli_evaluate_structure_adds_the_four_metrics(tmp_path, capsys):
    x, labels = clustered(n_classes=5, per_class=8, dim=8, seed=5)
    np.save(tmp_path / "emb.npy", x.astype(np.float32))
    np.save(tmp_path / "lab.npy", labels)
    args = [
        "evaluate",
        "--embeddings",
        str(tmp_path / "emb.npy"),
        "--labels",
        str(tmp_path / "lab.npy"),
        "--no-nmi",
        "--quiet",
    ]

    assert main(args) == 0
    plain = json.loads(capsys.readouterr().out)
    assert not set(STRUCTURE_KEYS) & set(plain)

    assert main([*args, "--structure"]) == 0
    with_structure = json.loads(capsys.readouterr().out)
    expected = structure_metrics(x.astype(np.float32), labels)
    assert {k: with_structure[k] for k in STRUCTURE_KEYS} == pytest.approx(expected, rel=1e-12)
    assert {k: v for k, v in with_structure.items() if k not in STRUCTURE_KEYS} == plain
