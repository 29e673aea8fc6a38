"""A run's identity: a versioned function of its config, separate from what the config shows.

Finished runs are found and skipped by their config hash, so the hash of a config must not move
when the code around it changes. Display (config.yaml, the MLflow params, ``nirbench config``)
shows every key; the identity drops a key only while it holds the value every config written
before the key existed implicitly had (``HISTORICAL_DEFAULTS``, and a regularizer param registered
``identity_neutral``), and an inactive validation split. tests/test_config_hashes.py pins the
hashes of every shipped grid's configs.

Bump ``IDENTITY_VERSION`` only together with a deliberate change of this function (and new pins):
it names the rules below, so a results folder can say which rules its hashes follow.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Protocol


class RunConfig(Protocol):
    """What the identity reads of a config (the schema's RunConfig; named here as a Protocol so
    that the schema, which calls this module, is not imported back: no import cycle)."""

    regularizer: Any
    validation: Any

    def to_dict(self) -> dict[str, Any]: ...


IDENTITY_VERSION = 1

# Keys added after runs were recorded, with the value those runs implicitly had. Only here may
# a key be left out of the identity, and only while it holds exactly this value.
HISTORICAL_DEFAULTS: dict[tuple[str, str], Any] = {
    ("eval", "every"): 1,
    ("eval", "full_every"): 1,
    ("eval", "dense_tail"): False,
    ("eval", "kmeans_engine"): "auto",
    ("backbone", "width"): 1.0,
    ("backbone", "weights"): None,
    ("backbone", "input_px"): None,
    ("train", "lr_schedule"): "constant",
    ("train", "fused_optimizer"): False,
    ("train", "data_seed"): None,
    ("dataset", "allow_partial"): False,
    ("dataset", "cache"): "uint8",
    ("dataset", "version"): 1,
}


def identity_tree(cfg: RunConfig) -> dict[str, Any]:
    """The part of ``cfg``'s display (``to_dict``) that makes its identity."""
    from nirbench.methods import REGULARIZERS

    tree = cfg.to_dict()
    if not cfg.validation.active:  # the section came later; inactive, it changes nothing
        del tree["validation"]
    for (section, key), value in HISTORICAL_DEFAULTS.items():
        if key in tree[section] and _same(tree[section][key], value):
            del tree[section][key]
    if cfg.regularizer is not None:
        neutral = REGULARIZERS.get(cfg.regularizer.name).identity_neutral
        tree["regularizer"] = {
            k: v
            for k, v in tree["regularizer"].items()
            if not (k in neutral and _same(v, neutral[k]))
        }
    return tree


def config_hash(cfg: RunConfig) -> str:
    """The run's identity: the hash of its identity tree, seed included."""
    return digest(identity_tree(cfg))


def arm_hash(cfg: RunConfig) -> str:
    """The arm's identity (everything but the seed): the runs one table cell averages."""
    return digest({k: v for k, v in identity_tree(cfg).items() if k != "seed"})


def digest(tree: dict[str, Any]) -> str:
    canonical = json.dumps(tree, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _same(value: Any, historical: Any) -> bool:
    """Equal as the identity always compared (``1 == 1.0``), but a bool is no number."""
    return isinstance(value, bool) == isinstance(historical, bool) and value == historical
