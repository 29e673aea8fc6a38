"""nirbench bench variance (issue 23): the seeds needed against the closed form, the class
bootstrap's split into the seed-to-seed and the shared part on constructed differences, the
per-query R@1 against a naive loop, and the whole command on tiny finished pairs (it re-embeds
their checkpoints and must reproduce each run's logged R@1 exactly)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from nirbench.harness.bench import variance
from nirbench.harness.config import load_config
from nirbench.harness.tracking.store import Tracker
from nirbench.harness.train.runner import execute


def test_seeds_needed_is_the_smallest_n_whose_t_half_width_fits_the_margin():
    for sd, margin in [(1.4, 1.0), (2.5, 1.0), (0.3, 1.0), (1.0, 0.5)]:
        n = variance.seeds_needed(sd, margin)
        assert stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) <= margin
        assert n == 2 or stats.t.ppf(0.975, n - 2) * sd / math.sqrt(n - 1) > margin
    # t(0.975, 9) * 1.4 / sqrt(10) = 1.0015 > 1; t(0.975, 10) * 1.4 / sqrt(11) = 0.940
    assert variance.seeds_needed(1.4, 1.0) == 11
    assert variance.seeds_needed(0.0, 1.0) == 2
    assert variance.seeds_needed(float("nan"), 1.0) is None


def test_per_query_correct_matches_a_naive_nearest_neighbour_loop():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    y = rng.integers(0, 6, size=60)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    naive = []
    for i in range(len(x)):
        sims = xn @ xn[i]
        sims[i] = -np.inf
        naive.append(float(y[int(np.argmax(sims))] == y[i]))
    np.testing.assert_array_equal(variance.per_query_correct(x, y), naive)


def test_class_bootstrap_separates_what_seeds_share_from_what_differs():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(200), 5)
    common = rng.choice([-1.0, 0.0, 1.0], size=len(labels))
    # Every seed the same differences: all of the test set's part is shared, none differs.
    same = variance.class_bootstrap(np.stack([common] * 4), labels, 500)
    assert same["interaction_var"] == pytest.approx(0.0, abs=1e-12)
    assert same["shared_var"] == pytest.approx(same["per_seed_var"])
    # Independent differences per seed: nothing shared, and the per-seed variance is the
    # variance of a class-clustered mean (closed form for independent queries: var / N).
    independent = np.stack([rng.choice([-1.0, 0.0, 1.0], size=len(labels)) for _ in range(6)])
    split = variance.class_bootstrap(independent, labels, 4000)
    assert abs(split["shared_var"]) < 0.2 * split["per_seed_var"]
    expected = np.mean([d.var() for d in independent]) / len(labels)
    assert split["per_seed_var"] == pytest.approx(expected, rel=0.15)


def test_bench_variance_reproduces_each_runs_r1_from_its_checkpoint(tiny_overrides, results_dir):
    tracker = Tracker(results_dir)
    base = [o for o in tiny_overrides if not o.startswith("seed=")] + ["train.epochs=2"]
    for seed in (0, 1):
        for arm in ([], ["regularizer.name=nir"]):
            execute(load_config(overrides=base + [f"seed={seed}"] + arm), tracker, results_dir)
    out = variance.run(results_dir, resamples=200)
    (entry,) = out["datasets"].values()
    assert entry["pairs"] == 2 and entry["seeds"] == [0, 1]
    assert entry["r1_reproduced_max_abs_pp"] < 1e-9
    assert set(entry["sources"]) == {"seed", "evaluation_set", "training"}
    assert entry["delta_mean"] == pytest.approx(np.mean(entry["delta"]))
    assert entry["sources"]["seed"]["sd"] == pytest.approx(np.std(entry["delta"], ddof=1))


def test_data_seed_moves_the_batches_and_not_the_initial_weights(tiny_overrides, results_dir):
    import torch

    from nirbench.harness.data import load_dataset
    from nirbench.harness.data.sampler import ClassBalancedBatchSampler
    from nirbench.harness.train.engine import build_trainer, data_seed

    same = load_config(overrides=tiny_overrides)
    other = load_config(overrides=tiny_overrides + ["train.data_seed=7"])
    assert data_seed(same) == same.seed and data_seed(other) == 7
    assert same.config_hash != other.config_hash  # another run, found and skipped as such
    bundle = load_dataset(same.dataset.name, None, results_dir / "cache")
    a = build_trainer(same, bundle, torch.device("cpu")).model.state_dict()
    b = build_trainer(other, bundle, torch.device("cpu")).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    batches = [
        ClassBalancedBatchSampler(
            bundle.train.labels, same.train.batch_size, same.train.samples_per_class, data_seed(c)
        ).batches(0)
        for c in (same, other)
    ]
    assert [list(x) for x in batches[0]] != [list(x) for x in batches[1]]
