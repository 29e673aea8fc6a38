"""Embedded pretraining: the small CNN's stand-in for ImageNet weights.

Why: the paper fine-tunes an ImageNet-pretrained ResNet50, which converges in tens of epochs. A
small CNN trained from scratch on the embedded datasets needs hundreds, so on a 2-core CPU the
default grid could only compare runs that were still climbing. With this recipe the embedded
protocol mirrors the real one: pretrain once on other images, then fine-tune each method.

The pretraining data never overlaps the benchmark: it is the three embedded generators run with
``DATA_SEED + 1`` (their own families, class templates and images; the benchmark uses seed 0),
all classes of both splits, as one softmax classification problem (about 18,000 images, 2,300
classes). Nothing of the benchmark's training or test classes is seen.

The weights are built once per recipe and width, on first use, into
``RESULTS/cache/pretrained/small_cnn-<recipe id>.pt`` (under a lock, so parallel grid workers
wait for one build instead of racing), with two torch threads whatever the machine (thread count
changes CPU reduction order; a fixed count keeps the weights bitwise reproducible) and inside a
forked RNG (the calling run's random streams are untouched). The recipe id is part of every run
config that uses them (``backbone.weights``), so changing the recipe changes the runs' identity.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# The recipe and its id are part of the config (backbone.weights), so the config stage holds
# them (it never imports from train); the pretraining below builds what they name.
from nirbench.harness.config_weights import RECIPE, pretraining_params, recipe_id  # noqa: F401

log = logging.getLogger(__name__)


def weights_path(cache_dir: Path, width: float, input_px: int | None = None) -> Path:
    return Path(cache_dir) / f"small_cnn-{recipe_id(width, input_px)}.pt"


def ensure_weights(
    cache_dir: Path, width: float, data_cache_dir: Path, input_px: int | None = None
) -> Path:
    """The cached weights for this architecture, pretrained now (once, under a lock) if
    missing."""
    path = weights_path(cache_dir, width, input_px)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second worker waits here for the first one's build
        if path.is_file():
            return path
        log.warning(
            "pretraining small_cnn (width %g) once on the embedded pretraining data: "
            "about 1 minute on 2 cores; cached as %s",
            width,
            path,
        )
        started = time.perf_counter()
        state = pretrain(width, data_cache_dir, input_px)
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)  # atomic: a kill mid-write leaves no half file behind
        log.warning("pretraining took %.0fs", time.perf_counter() - started)
    return path


def pretraining_data(data_cache_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of the pretraining generators (uint8) and one global class label each."""
    from nirbench.harness.data.synthetic import DATA_SEED
    from nirbench.harness.data.synthetic.cache import load_synthetic

    images, labels, offset = [], [], 0
    for name, params in pretraining_params().items():
        bundle = load_synthetic(
            name,
            None,
            str(data_cache_dir),
            seed=DATA_SEED + RECIPE["data_seed_offset"],
            params=params,
        )
        for split in (bundle.train, bundle.test):
            images.append(split.images)
            labels.append(split.labels + offset)
            offset += split.num_classes
    return torch.cat(images), torch.cat(labels)


def pretrain(
    width: float, data_cache_dir: Path, input_px: int | None = None
) -> dict[str, torch.Tensor]:
    """Train a small_cnn body of ``width`` (and ``input_px``) as a softmax classifier over the
    pretraining classes (same augmentation as the benchmark's training); return the body's state
    dict."""
    from nirbench.harness.data.augment import train_augment
    from nirbench.harness.train.models import SmallCNN

    images, labels = pretraining_data(data_cache_dir)
    classes = int(labels.max()) + 1
    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.set_num_threads(RECIPE["threads"])
        try:
            torch.manual_seed(RECIPE["seed"])
            body = SmallCNN(width, input_px)
            head = nn.Linear(body.feature_dim, classes)
            memory_format = (
                torch.channels_last if RECIPE["channels_last"] else torch.contiguous_format
            )
            body = body.to(memory_format=memory_format)
            params = list(body.parameters()) + list(head.parameters())
            optimizer = torch.optim.Adam(
                params, lr=RECIPE["lr"], foreach=True, weight_decay=RECIPE["weight_decay"]
            )
            batch = RECIPE["batch_size"]
            per_epoch = len(images) // batch
            schedule = torch.optim.lr_scheduler.OneCycleLR(
                optimizer,
                max_lr=RECIPE["lr"],
                total_steps=RECIPE["epochs"] * per_epoch,
                pct_start=RECIPE["warmup_share"],
            )
            generator = torch.Generator().manual_seed(RECIPE["seed"])
            body.train()
            for epoch in range(RECIPE["epochs"]):
                order = torch.randperm(len(images), generator=generator)
                correct = 0
                for step in range(per_epoch):
                    idx = order[step * batch : (step + 1) * batch]
                    batch_images = train_augment(images[idx], generator)
                    logits = head(body(batch_images.contiguous(memory_format=memory_format)))
                    loss = F.cross_entropy(logits, labels[idx])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    schedule.step()
                    correct += int((logits.argmax(1) == labels[idx]).sum())
                log.info(
                    "pretraining epoch %d/%d: loss %.3f, train accuracy %.3f",
                    epoch + 1,
                    RECIPE["epochs"],
                    float(loss.detach()),
                    correct / (per_epoch * batch),
                )
        finally:
            torch.set_num_threads(threads)
    # Stored contiguous: loads into either memory format.
    return {k: v.contiguous() for k, v in body.state_dict().items()}
