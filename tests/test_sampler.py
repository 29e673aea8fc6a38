"""Class-balanced batch sampler and batched augmentation."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from nirbench.harness.data.augment import eval_transform, train_augment
from nirbench.harness.data.sampler import ClassBalancedBatchSampler


def _labels(num_classes: int = 30, lo: int = 3, hi: int = 12, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(lo, hi + 1, (num_classes,), generator=g)
    labels = torch.repeat_interleave(torch.arange(num_classes), sizes)
    return labels[torch.randperm(len(labels), generator=g)]  # not grouped by class


def test_batch_size_and_classes_per_batch() -> None:
    labels = _labels()
    s = ClassBalancedBatchSampler(labels, 24, 3, seed=0)
    batches = s.batches(0)
    assert s.iterations_per_epoch == len(labels) // 24 == len(batches) == len(s)
    for idx in batches:
        assert idx.dtype == torch.int64 and idx.shape == (24,)
        lab = labels[idx]
        classes, counts = lab.unique(return_counts=True)
        assert len(classes) == 8 and (counts == 3).all()
        # Every class has >= 3 images here, so its 3 samples are distinct images.
        for c in classes:
            assert len(idx[lab == c].unique()) == 3


def test_divisibility_error() -> None:
    with pytest.raises(ValueError, match=r"batch_size \(10\).*samples_per_class \(3\)"):
        ClassBalancedBatchSampler(_labels(), 10, 3, seed=0)


def test_too_few_classes_or_samples() -> None:
    with pytest.raises(ValueError, match="classes"):
        ClassBalancedBatchSampler(torch.tensor([0, 0, 1, 1]), 6, 2, seed=0)
    with pytest.raises(ValueError, match="number of samples"):
        ClassBalancedBatchSampler(torch.tensor([0, 1, 2, 3]), 6, 2, seed=0)


def test_epoch_reproducible_and_distinct() -> None:
    labels = _labels()
    a = ClassBalancedBatchSampler(labels, 20, 2, seed=7)
    b = ClassBalancedBatchSampler(labels.numpy(), 20, 2, seed=7)  # numpy labels, fresh object
    for epoch in (0, 3):
        assert all(
            torch.equal(x, y) for x, y in zip(a.batches(epoch), b.batches(epoch), strict=True)
        )
    # Resume: asking for epoch 3 first, or after others, gives the same batches.
    c = ClassBalancedBatchSampler(labels, 20, 2, seed=7)
    e3 = c.batches(3)
    c.batches(0)
    torch.manual_seed(123)  # global RNG state is irrelevant
    assert all(torch.equal(x, y) for x, y in zip(e3, c.batches(3), strict=True))
    assert not torch.equal(torch.cat(a.batches(0)), torch.cat(a.batches(1)))
    other_seed = ClassBalancedBatchSampler(labels, 20, 2, seed=8)
    assert not torch.equal(torch.cat(a.batches(0)), torch.cat(other_seed.batches(0)))


def test_class_coverage() -> None:
    """Classes are drawn without replacement: over one epoch every class appears, and class
    frequencies differ by at most one."""
    labels = _labels(num_classes=37, lo=5, hi=9)
    s = ClassBalancedBatchSampler(labels, 16, 2, seed=0)
    slots = torch.cat(s.batches(0)).view(-1, 2)[:, 0]
    freq = torch.bincount(labels[slots], minlength=37)
    n_slots = s.iterations_per_epoch * 8
    assert n_slots >= 37 and (freq >= 1).all()
    assert freq.max() - freq.min() <= 1


def test_refill_boundary_never_repeats_a_class() -> None:
    # 5 classes, 4 per batch: nearly every batch straddles a refill of the class order.
    labels = torch.arange(5).repeat_interleave(40)
    s = ClassBalancedBatchSampler(labels, 8, 2, seed=1)
    for epoch in range(5):
        for idx in s.batches(epoch):
            assert len(labels[idx].unique()) == 4


def test_small_classes_with_replacement() -> None:
    labels = torch.tensor([0] + [1] * 2 + [2] * 10 + [3] * 10)
    s = ClassBalancedBatchSampler(labels, 8, 4, seed=0)
    seen_small = False
    for epoch in range(4):
        for idx in s.batches(epoch):
            lab = labels[idx]
            assert len(lab.unique()) == 2 and all((lab == c).sum() == 4 for c in lab.unique())
            if (lab == 0).any():
                seen_small = True
                assert (idx[lab == 0] == 0).all()  # the only image of class 0, four times
            for c in (2, 3):
                if (lab == c).any():
                    assert len(idx[lab == c].unique()) == 4
            if (lab == 1).any():
                assert set(idx[lab == 1].tolist()) <= {1, 2}
    assert seen_small


def test_images_within_class_uniform() -> None:
    labels = torch.arange(2).repeat_interleave(6)
    s = ClassBalancedBatchSampler(labels, 4, 2, seed=0)
    counts = torch.zeros(12)
    for epoch in range(300):
        for idx in s.batches(epoch):
            counts += torch.bincount(idx, minlength=12)
    freq = counts / counts.sum()
    assert (freq - 1 / 12).abs().max() < 0.02


def test_speed_large() -> None:
    labels = torch.from_numpy(np.random.default_rng(0).integers(0, 11_000, 60_000))
    s = ClassBalancedBatchSampler(labels, 90, 2, seed=0)
    start = time.perf_counter()
    batches = s.batches(0)
    assert time.perf_counter() - start < 0.5
    assert len(batches) == 60_000 // 90


# ------------------------------------------------------------------------------------------------
# Augmentation
# ------------------------------------------------------------------------------------------------
def _images(n: int = 16, h: int = 32, w: int = 32) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 3, h, w), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )


def test_augment_shapes_and_range() -> None:
    x = _images(h=16, w=20)
    out = train_augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.min() >= -1.0 and out.max() <= 1.0
    ev = eval_transform(x)
    assert ev.shape == x.shape and ev.dtype == torch.float32
    assert torch.allclose(ev, (x.float() / 255 - 0.5) / 0.5, atol=1e-6)


def test_augment_deterministic_given_generator() -> None:
    x = _images()
    a = train_augment(x, torch.Generator().manual_seed(5))
    b = train_augment(x, torch.Generator().manual_seed(5))
    c = train_augment(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    g = torch.Generator().manual_seed(5)
    first, second = train_augment(x, g), train_augment(x, g)
    assert not torch.equal(first, second)  # the generator advances


def test_augment_matches_reference_crop_and_flip() -> None:
    """Each output is a crop of the reflect-padded image, maybe mirrored; both actually happen."""
    x = _images(n=64)
    out = train_augment(x, torch.Generator().manual_seed(0), pad=4)
    padded = torch.nn.functional.pad(eval_transform(x), (4, 4, 4, 4), mode="reflect")
    flips = shifts = 0
    for i in range(len(x)):
        found = None
        for dy in range(9):
            for dx in range(9):
                crop = padded[i, :, dy : dy + 32, dx : dx + 32]
                for flip in (False, True):
                    if torch.equal(crop.flip(-1) if flip else crop, out[i]):
                        found = (dy, dx, flip)
        assert found is not None, i
        flips += found[2]
        shifts += (found[0], found[1]) != (4, 4)
    assert 10 < flips < 54 and shifts > 48


def test_augment_pad_zero_only_flips() -> None:
    x = _images(n=32)
    out = train_augment(x, torch.Generator().manual_seed(0), pad=0)
    ref = eval_transform(x)
    same = [torch.equal(out[i], ref[i]) for i in range(32)]
    mirrored = [torch.equal(out[i], ref[i].flip(-1)) for i in range(32)]
    assert all(s or m for s, m in zip(same, mirrored, strict=True)) and any(mirrored) and any(same)


def test_augment_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        train_augment(_images().float(), torch.Generator())
    with pytest.raises(ValueError, match="pad"):
        train_augment(_images(h=4, w=4), torch.Generator(), pad=4)


def test_eval_transform_deterministic() -> None:
    x = _images()
    assert torch.equal(eval_transform(x), eval_transform(x))
    assert torch.equal(eval_transform(x[:0]), torch.empty(0, 3, 32, 32))
