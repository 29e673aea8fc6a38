"""Class-balanced batch sampler: each batch holds batch_size / m distinct classes, m samples each.

Why per-epoch reseeding: the batches of epoch e depend only on (seed, e). Resuming at epoch e
replays the same batches, and two arms of a comparison with the same seed (e.g. with and without
NIR) see identical data order, whatever randomness the rest of the run consumes.

Sampling within one epoch:
- Class order: a shuffled permutation of all classes, refilled with a fresh permutation when
  exhausted, so every class is drawn once before any is drawn twice (no replacement "as far as
  possible"). At a refill boundary, the classes already in the unfinished batch are moved to the
  back of the new permutation, so a batch never repeats a class.
- Images: m distinct images of the class (uniform m-subset, Floyd's algorithm, vectorised over all
  class slots); a class with fewer than m images is sampled with replacement.
- ``iterations_per_epoch = floor(N / batch_size)``, as in the paper's code.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def epoch_seed(seed: int, epoch: int, salt: str = "ClassBalancedBatchSampler") -> int:
    """A stable 63-bit seed from (salt, seed, epoch); independent of PYTHONHASHSEED and platform."""
    digest = hashlib.blake2b(f"{salt}:{int(seed)}:{int(epoch)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class ClassBalancedBatchSampler:
    def __init__(
        self, labels: torch.Tensor | np.ndarray, batch_size: int, samples_per_class: int, seed: int
    ) -> None:
        if samples_per_class < 1:
            raise ValueError(f"samples_per_class must be >= 1, got {samples_per_class}")
        if batch_size < 1 or batch_size % samples_per_class != 0:
            raise ValueError(
                f"batch_size ({batch_size}) must be a positive multiple of "
                f"samples_per_class ({samples_per_class})"
            )
        lab = torch.as_tensor(
            np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels
        )
        lab = lab.detach().to("cpu", torch.int64).reshape(-1)
        if lab.numel() == 0:
            raise ValueError("labels are empty")
        classes, inverse, counts = torch.unique(lab, return_inverse=True, return_counts=True)
        self.num_samples = int(lab.numel())
        self.batch_size = int(batch_size)
        self.samples_per_class = int(samples_per_class)
        self.classes_per_batch = self.batch_size // self.samples_per_class
        self.num_classes = int(classes.numel())
        self.seed = int(seed)
        if self.classes_per_batch > self.num_classes:
            raise ValueError(
                f"batch_size ({batch_size}) / samples_per_class ({samples_per_class}) = "
                f"{self.classes_per_batch} classes per batch, but labels hold only "
                f"{self.num_classes} classes"
            )
        if self.num_samples < self.batch_size:
            raise ValueError(
                f"batch_size ({batch_size}) exceeds the number of samples ({self.num_samples})"
            )
        self.classes = classes  # original label values, index = dense class id
        self._order = torch.argsort(inverse, stable=True)  # sample indices grouped by dense class
        self._counts = counts
        self._starts = torch.cumsum(counts, 0) - counts

    @property
    def iterations_per_epoch(self) -> int:
        return self.num_samples // self.batch_size

    def __len__(self) -> int:
        return self.iterations_per_epoch

    def _class_sequence(self, n_slots: int, g: torch.Generator) -> torch.Tensor:
        """n_slots dense class ids, batch-aligned groups of classes_per_batch distinct classes."""
        P, C = self.classes_per_batch, self.num_classes
        seq = torch.empty(0, dtype=torch.int64)
        while seq.numel() < n_slots:
            perm = torch.randperm(C, generator=g)
            r = seq.numel() % P  # classes already placed in the unfinished batch
            if r:
                pending = torch.zeros(C, dtype=torch.bool)
                pending[seq[-r:]] = True
                moved = pending[perm]
                perm = torch.cat(
                    [perm[~moved], perm[moved]]
                )  # C - r >= P - r fresh classes come first
            seq = torch.cat([seq, perm])
        return seq[:n_slots]

    def batches(self, epoch: int) -> list[torch.Tensor]:
        """One epoch: iterations_per_epoch int64 index tensors, each of length batch_size."""
        g = torch.Generator()
        g.manual_seed(epoch_seed(self.seed, epoch))
        n_batches = self.iterations_per_epoch
        m = self.samples_per_class
        cls = self._class_sequence(n_batches * self.classes_per_batch, g)  # (S,)
        n = self._counts[cls]  # (S,)
        S = cls.numel()
        # Floyd's algorithm: for j = n-m .. n-1 draw t in [0, j]; take t unless taken, else j.
        picks = torch.empty((S, m), dtype=torch.int64)
        u = torch.rand((S, m), generator=g, dtype=torch.float64)
        small = n < m
        for step in range(m):
            j = n - m + step
            t = torch.minimum((u[:, step] * (j + 1).to(torch.float64)).to(torch.int64), j)
            if step:
                taken = (picks[:, :step] == t[:, None]).any(1)
                t = torch.where(taken, j, t)
            # Classes smaller than m: with replacement, uniform over their n images.
            t_small = torch.minimum((u[:, step] * n.to(torch.float64)).to(torch.int64), n - 1)
            picks[:, step] = torch.where(small, t_small, t)
        idx = self._order[self._starts[cls][:, None] + picks]  # (S, m)
        return list(idx.reshape(n_batches, self.batch_size).unbind(0))
