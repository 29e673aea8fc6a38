"""Backbones and the embedding head. Nothing method-specific lives here.

An ``EmbeddingModel`` is a feature extractor (the *body*) followed by a linear embedding head and
L2 normalisation. The split matters: warmup freezes the body while the head trains, and the body
alone gets weight decay in the paper's optimiser.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from nirbench.harness.config_backbones import BACKBONES, BodyOptions


class SmallCNN(nn.Module):
    """A CPU-sized backbone for the embedded 32 px datasets: four conv stages, 0.39 M parameters,
    about 15 M multiply-adds per image at width 1 (32-64-128-256 channels); ``width`` scales every
    stage (0.5: about 3.8 M multiply-adds)."""

    def __init__(self, width: float = 1.0, input_px: int | None = None) -> None:
        super().__init__()
        self.input_px = input_px

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]

        c1, c2, c3, c4 = (max(1, round(c * width)) for c in (32, 64, 128, 256))
        self.feature_dim = c4
        self.layers = nn.Sequential(
            *block(3, c1),
            nn.MaxPool2d(2),
            *block(c1, c2),
            nn.MaxPool2d(2),
            *block(c2, c3),
            nn.MaxPool2d(2),
            *block(c3, c4),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_px is not None and x.shape[-1] != self.input_px:
            x = F.interpolate(
                x,
                size=(self.input_px, self.input_px),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
        return F.adaptive_avg_pool2d(self.layers(x), 1).flatten(1)


class TorchvisionResNet(nn.Module):
    """torchvision ResNet without its classifier; ``pooling='double'`` adds global max pooling
    to average pooling, the variant of the NIR code. ``state_dict``: torchvision's weights for the
    whole network (its classifier included), loaded before the classifier is dropped."""

    def __init__(
        self,
        name: str,
        state_dict: Mapping[str, torch.Tensor] | None = None,
        pooling: str = "average",
    ) -> None:
        super().__init__()
        import torchvision

        builder = getattr(torchvision.models, name)
        net = builder(weights=None)  # random first either way: the same RNG draws
        if state_dict is not None:
            net.load_state_dict(state_dict)
        self.feature_dim = net.fc.in_features
        net.fc = nn.Identity()
        net.avgpool = nn.Identity()
        self.net = net
        self.pooling = pooling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        x = n.layer4(n.layer3(n.layer2(n.layer1(x))))
        pooled = F.adaptive_avg_pool2d(x, 1).flatten(1)
        if self.pooling == "double":
            pooled = pooled + F.adaptive_max_pool2d(x, 1).flatten(1)
        return pooled


# The builders the backbone registry names (harness/config_backbones.py).


def small_cnn_body(
    name: str, state_dict: Mapping[str, torch.Tensor] | None, options: BodyOptions
) -> SmallCNN:
    body = SmallCNN(options.width, options.input_px)  # initialised either way: same RNG draws
    if state_dict is not None:
        body.load_state_dict(state_dict)
    return body


def torchvision_resnet_body(
    name: str, state_dict: Mapping[str, torch.Tensor] | None, options: BodyOptions
) -> TorchvisionResNet:
    return TorchvisionResNet(name, state_dict, options.pooling)


def imagenet_weights_path(name: str) -> tuple[Path, str]:
    """Where the torch hub cache keeps ``name``'s published (ImageNet) weights, and the URL they
    are downloaded from (``NIRBENCH_MIRROR`` applied)."""
    from nirbench.harness.train import weights

    return weights.cache_path(name), weights.download_url(weights.downloadable(name)[1])


def load_imagenet_weights(name: str) -> dict[str, torch.Tensor]:
    """``name``'s published weights, verified (and downloaded unless offline) first
    (harness/train/weights.py)."""
    from nirbench.harness.train import weights

    return weights.load_state_dict(name)


class EmbeddingModel(nn.Module):
    def __init__(
        self, body: nn.Module, feature_dim: int, embed_dim: int, freeze_bn: bool = False
    ) -> None:
        super().__init__()
        self.body = body
        self.head = nn.Linear(feature_dim, embed_dim)
        self.freeze_bn = freeze_bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.body(x)), dim=-1)

    def train(self, mode: bool = True) -> "EmbeddingModel":
        super().train(mode)
        if mode and self.freeze_bn:
            # Running statistics stay at their (pretrained) values; affine parameters still train.
            for module in self.body.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def set_body_trainable(self, trainable: bool) -> None:
        for p in self.body.parameters():
            p.requires_grad_(trainable)


def build_model(
    name: str,
    embed_dim: int,
    pretrained: bool,
    freeze_bn: bool,
    pooling: str = "average",
    width: float = 1.0,
    weights_file: Path | None = None,
    input_px: int | None = None,
) -> EmbeddingModel:
    """The registered backbone ``name`` (harness/config_backbones.py) under an embedding head.

    ``pretrained``: a backbone with published weights (the ResNets' ImageNet files) gets them
    verified from the torch hub cache, downloaded first if missing and not offline; small_cnn's
    embedded pretraining is ``weights_file`` (harness/train/pretrain.py, built by the runner)."""
    info = BACKBONES.get(name)  # an unknown name lists the valid ones
    state = None
    if pretrained:
        if info.weights is not None:
            state = load_imagenet_weights(name)
        elif info.embedded_pretraining:
            if weights_file is None:
                raise ValueError(
                    f"backbone {name} with pretrained=true needs its embedded "
                    f"pretraining weights (harness/train/pretrain.py); build them "
                    f"through the runner, or set backbone.pretrained=false"
                )
            state = torch.load(weights_file, map_location="cpu", weights_only=True)
        else:
            raise ValueError(
                f"backbone {name} has no pretrained weights; set backbone.pretrained=false"
            )
    body = info.builder()(name, state, BodyOptions(width, input_px, pooling))
    return EmbeddingModel(body, body.feature_dim, embed_dim, freeze_bn)
