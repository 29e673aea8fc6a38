"""Per-epoch diagnostics of a regularizer's activity, generic over regularizers.

Two pieces, both ignorant of which regularizer runs:

* The probe: once per epoch the objective's ``probe_diagnostics`` (NIR: ``nir/grad_share``) is
  computed on ONE fixed batch, a class-balanced batch of training images that depends only on the
  run seed (indices from the run's sampler at a pseudo-epoch no training epoch uses, training
  augmentation from a generator seeded by the run seed), so every epoch and every arm of a seed
  probe the same images. It must not change the run: the backbone embeds the batch under
  ``no_grad`` in eval mode (eval mode writes no BatchNorm running statistics, so there is nothing
  to save and restore, and the gradient share is taken with respect to the embeddings, so no
  graph through the backbone is needed); every RNG (torch CPU + the device's, numpy, python) is
  forked around it (miners draw random numbers); the objective takes gradients with
  ``torch.autograd.grad`` with respect to the embeddings only, so no parameter's ``.grad`` and no
  optimizer state is touched; the model's and objective's train/eval flags are restored.
  Cost: one forward of one batch per epoch and a backward through the loss only.

* The inactivity tag: a regularizer that logs ``<reg>/term`` gets the run tag
  ``<reg>.inactive_from_epoch`` when the run finishes: the first epoch from which the term's
  magnitude stays below ``INACTIVE_RATIO`` times its epoch-1 magnitude for every later epoch, or
  ``never``. Computed from the full history, so a resumed run gets it right too.
"""

from __future__ import annotations

import math
import random
from contextlib import contextmanager
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch

from nirbench.harness.data.base import ImageSplit
from nirbench.harness.data.sampler import ClassBalancedBatchSampler
from nirbench.harness.train.objective import Objective

INACTIVE_RATIO = 1e-3
NEVER = "never"
# The probe's indices come from the run's sampler at this pseudo-epoch: training epochs are >= 0,
# so the probe depends only on the seed and is never one of the training batches by construction.
PROBE_EPOCH = -1
PROBE_AUGMENT_STREAM = 2  # engine.epoch_generator streams: 1 = training augmentation


def probe_batch(
    split: ImageSplit,
    sampler: ClassBalancedBatchSampler,
    augment: torch.Generator,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed probe batch: (images, labels). ``sampler`` is the run's (seeded by the run
    seed; asked for the pseudo-epoch ``PROBE_EPOCH``), ``augment`` a generator seeded by the run
    seed alone, so the batch is a function of the run seed."""
    idx = sampler.batches(PROBE_EPOCH)[0]
    return split.train_batch(idx, device, augment), split.labels[idx].to(device)


@contextmanager
def isolated_rng(device: torch.device) -> Iterator[None]:
    """Every RNG the training loop reads comes back exactly as it was."""
    devices = [device] if device.type == "cuda" else []
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def run_probe(
    model: torch.nn.Module,
    objective: Objective,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    device: torch.device,
    precision: str = "fp32",
    memory_format: torch.memory_format = torch.contiguous_format,
) -> dict[str, float]:
    """``objective.probe_diagnostics`` on the probe batch, without side effects (see above)."""
    if not objective.wants_probe:
        return {}
    was_training = model.training, objective.training
    try:
        with isolated_rng(device):
            model.eval()
            with (
                torch.no_grad(),
                torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"),
            ):
                embeddings = model(images.contiguous(memory_format=memory_format))
            return objective.probe_diagnostics(embeddings.float(), labels)
    finally:
        model.train(was_training[0])
        objective.train(was_training[1])


def inactive_from_epoch(values: Sequence[float], ratio: float = INACTIVE_RATIO) -> int | None:
    """The first epoch (1-based) from which every value's magnitude is below ``ratio`` times the
    epoch-1 magnitude, or None. A dip that rises again does not count; a non-finite or zero
    epoch-1 value gives None (nothing to be small against)."""
    if not values:
        return None
    first = abs(values[0])
    if not math.isfinite(first) or first == 0:
        return None
    threshold = ratio * first
    found = None
    for epoch in range(len(values), 0, -1):  # walk back while the tail stays below
        value = abs(values[epoch - 1])
        if not value < threshold:  # NaN counts as active: it is not small
            break
        found = epoch
    return found


def inactivity_tags(history: Sequence[Mapping[str, float]]) -> dict[str, str]:
    """``{"<reg>.inactive_from_epoch": "<epoch>" | "never"}`` for every ``<reg>/term`` the
    history holds (a run without a regularizer term gets no tag)."""
    keys = sorted({k for record in history for k in record if k.endswith("/term")})
    tags = {}
    for key in keys:
        values = [record.get(key, float("nan")) for record in history]
        epoch = inactive_from_epoch(values)
        tags[f"{key[: -len('/term')]}.inactive_from_epoch"] = NEVER if epoch is None else str(epoch)
    return tags
