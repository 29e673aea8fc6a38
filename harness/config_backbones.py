"""The backbone registry: every network a run can name, with the metadata the config, the doctor,
the weights commands and the docs read, so that none of them writes a backbone name out.

A new backbone is one builder plus one ``BACKBONES.add(name, BackboneInfo(...))``. This module
sits in the config stage (the config validates names and the default of backbone.pretrained
against it, and the config imports nothing from train) and imports neither torch nor
torchvision, so ``nirbench weights list`` reads it without paying for torch. The builder is therefore
named as ``"module:function"`` (resolved on first use) or given as a callable (a test's toy).

A builder is called as ``build(name, state_dict, options)``: it constructs the body with fresh
random weights (the same RNG draws whether or not weights follow, so a pretrained and a random run
of one seed initialise their heads alike), loads ``state_dict`` when it is not None, and returns a
module whose ``feature_dim`` attribute is the width of the features it emits.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any, Callable

from nirbench.harness.registry import Registry

# torchvision (and torch.hub) name a weights file <arch>-<first hex digits of its sha256>.pth
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9.]+$")


def sha256_prefix_of(file_name: str) -> str:
    """``resnet50-0676ba61.pth`` -> ``0676ba61``: the hash a file of that name must start with."""
    found = _HASH_IN_NAME.search(file_name)
    if found is None:
        raise ValueError(
            f"weights file name {file_name!r} carries no sha256 prefix: name it "
            f"<arch>-<first 8+ hex digits of its sha256>.pth, as torchvision does"
        )
    return found.group(1)


@dataclass(frozen=True)
class WeightsFile:
    """Published pretrained weights: where they are downloaded from, and what they are.

    ``url``'s last path part is the official file name; it carries the sha256 prefix every copy
    (the torch hub cache, a download, a mirror's copy) is checked against."""

    url: str
    source: str  # who publishes them, e.g. "torchvision ResNet50_Weights.IMAGENET1K_V1"
    trained_on: str = "ImageNet-1k"

    def __post_init__(self) -> None:
        sha256_prefix_of(self.file_name)  # fail at registration, not at the first download

    @property
    def file_name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    @property
    def sha256_prefix(self) -> str:
        return sha256_prefix_of(self.file_name)


@dataclass(frozen=True)
class BodyOptions:
    """The config's per-backbone shape options (backbone.width, .input_px, .pooling); a builder
    uses those that apply to it (the config refuses the others)."""

    width: float = 1.0
    input_px: int | None = None
    pooling: str = "average"


@dataclass(frozen=True)
class BackboneInfo:
    name: str
    title: str  # as tables and docs print it
    feature_dim: int  # width of the body's features (at width 1.0), the embedding head's input
    build: Callable[..., Any] | str  # build(name, state_dict, options) or "module:function"
    order: int = 100  # position in tables, docs and choice lists (then by name)
    weights: WeightsFile | None = None  # downloadable pretrained weights, if published
    embedded_pretraining: bool = False  # pretrained on the embedded data (train/pretrain.py)
    default_pretrained: bool = False  # backbone.pretrained when the config leaves it unset
    description: str = ""

    def __post_init__(self) -> None:
        if self.weights is not None and self.embedded_pretraining:
            raise ValueError(
                f"backbone {self.name!r}: pretrained either from a published file "
                f"(weights) or by the embedded pretraining, not both"
            )
        if self.default_pretrained and not self.has_pretraining:
            raise ValueError(
                f"backbone {self.name!r}: default_pretrained=True needs weights "
                f"(a WeightsFile) or embedded_pretraining=True"
            )
        if isinstance(self.build, str) and ":" not in self.build:
            raise ValueError(
                f"backbone {self.name!r}: build={self.build!r} must be "
                f"'package.module:function' or a callable"
            )

    @property
    def has_pretraining(self) -> bool:
        return self.weights is not None or self.embedded_pretraining

    @property
    def pretraining(self) -> str:
        """In words, for docs and listings."""
        if self.weights is not None:
            return f"{self.weights.trained_on} ({self.weights.source})"
        return (
            "embedded pretraining (harness/train/pretrain.py)"
            if self.embedded_pretraining
            else "none"
        )

    def builder(self) -> Callable[..., Any]:
        if callable(self.build):
            return self.build
        module, _, function = self.build.partition(":")
        return getattr(importlib.import_module(module), function)


BACKBONES: Registry[BackboneInfo] = Registry("backbone")


def backbone_names() -> tuple[str, ...]:
    """Every registered backbone, in table order."""
    return tuple(sorted(BACKBONES.names(), key=lambda n: (BACKBONES.get(n).order, n)))


def default_pretrained_backbones() -> tuple[str, ...]:
    """The backbones a config starts from pretrained weights unless backbone.pretrained=false."""
    return tuple(n for n in backbone_names() if BACKBONES.get(n).default_pretrained)


BACKBONES.add(
    "small_cnn",
    BackboneInfo(
        name="small_cnn",
        title="Small CNN",
        feature_dim=256,
        order=0,
        build="nirbench.harness.train.models:small_cnn_body",
        embedded_pretraining=True,
        description="four conv stages, 0.39 M parameters at width 1: the CPU-sized backbone of the "
        "embedded 32 px datasets; backbone.width and backbone.input_px apply",
    ),
)

# The ImageNet weights of the DML literature and of the NIR code are torchvision's V1 files (the
# original ones); V2 (a newer training recipe) would start every method elsewhere. The URLs are
# written here, not read from torchvision, so this table imports without it;
# tests/test_weights.py checks them against torchvision's weights enums.
BACKBONES.add(
    "resnet18",
    BackboneInfo(
        name="resnet18",
        title="ResNet18",
        feature_dim=512,
        order=10,
        build="nirbench.harness.train.models:torchvision_resnet_body",
        default_pretrained=True,
        weights=WeightsFile(
            "https://download.pytorch.org/models/resnet18-f37072fd.pth",
            "torchvision ResNet18_Weights.IMAGENET1K_V1",
        ),
        description="torchvision ResNet18 without its classifier; backbone.pooling applies",
    ),
)

BACKBONES.add(
    "resnet50",
    BackboneInfo(
        name="resnet50",
        title="ResNet50",
        feature_dim=2048,
        order=20,
        build="nirbench.harness.train.models:torchvision_resnet_body",
        default_pretrained=True,
        weights=WeightsFile(
            "https://download.pytorch.org/models/resnet50-0676ba61.pth",
            "torchvision ResNet50_Weights.IMAGENET1K_V1",
        ),
        description="torchvision ResNet50 without its classifier, the paper's backbone; "
        "backbone.pooling applies",
    ),
)


def markdown_table() -> str:
    """The registered backbones as a Markdown table (docs/weights.md holds it; a test checks it
    is current)."""
    lines = [
        "| backbone | title | feature dim | pretrained by default | pretraining | "
        "official file (sha256 prefix) |",
        "|---|---|---|---|---|---|",
    ]
    for name in backbone_names():
        info = BACKBONES.get(name)
        file = (
            f"[`{info.weights.file_name}`]({info.weights.url}) (`{info.weights.sha256_prefix}`)"
            if info.weights is not None
            else "none (nothing to download)"
        )
        lines.append(
            f"| `{name}` | {info.title} | {info.feature_dim} | "
            f"{'yes' if info.default_pretrained else 'no'} | {info.pretraining} | "
            f"{file} |"
        )
    return "\n".join(lines) + "\n"
