"""Which weights a backbone config names: the identity of the embedded pretraining recipe.

The recipe is part of the config (``backbone.weights`` of a pretrained small_cnn), so it lives
with the config, the first stage; harness/train/pretrain.py builds the weights from it. A change
to the recipe, the architecture or the synthetic generator is a new id, so a new run identity.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

RECIPE = {
    "version": 1,
    "data": ("synth-cub", "synth-cars", "synth-sop"),
    "data_seed_offset": 1,  # the benchmark's data seed + 1: disjoint classes and images
    "epochs": 8,
    "batch_size": 128,
    "lr": 2e-3,  # one-cycle peak
    "warmup_share": 0.15,
    "weight_decay": 4e-4,
    "threads": 2,
    "channels_last": True,  # NHWC: 1.5x faster convolutions on this CPU, same network
    "seed": 0,
}


def pretraining_params() -> dict:
    """The generator parameters of the pretraining data, frozen at the recipe's version: a later
    change to a benchmark dataset (synth-sop version 2 has 1000 classes) must not change the
    pretraining data, or every pretrained run's starting point would move with it."""
    from nirbench.harness.data.synthetic import SYNTH_PARAMS

    frozen = {"synth-sop": {"num_classes": 2000}}  # as at recipe version 1
    return {
        name: dataclasses.replace(SYNTH_PARAMS[name], **frozen.get(name, {}))
        for name in RECIPE["data"]
    }


def recipe_id(width: float, input_px: int | None = None) -> str:
    """The identity of the weights a small_cnn of ``width`` (and ``input_px``) gets: recipe,
    architecture and the synthetic generator's version (new images, new weights)."""
    from nirbench.harness.data.synthetic import GENERATOR_VERSION

    params = {name: dataclasses.asdict(p) for name, p in pretraining_params().items()}
    blob = json.dumps(
        {
            **RECIPE,
            "data": list(RECIPE["data"]),
            "width": width,
            "generator_version": GENERATOR_VERSION,
            "params": params,
        }
        | ({"input_px": input_px} if input_px is not None else {}),
        sort_keys=True,
    )
    return f"synth-pretrain-v{RECIPE['version']}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"
