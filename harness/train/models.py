"""Backbones and the embedding head. Nothing method-specific lives here.

An ``EmbeddingModel`` is a feature extractor (the *body*) followed by a linear embedding head and
L2 normalisation. The split matters: warmup freezes the body while the head trains, and the body
alone gets weight decay in the paper's optimiser.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class SmallCNN(nn.Module):
    """A CPU-sized backbone for the embedded 32 px datasets: four conv stages, 0.39 M parameters,
    about 15 M multiply-adds per image at width 1 (32-64-128-256 channels); ``width`` scales every
    stage (0.5: about 3.8 M multiply-adds)."""

    def __init__(self, width: float = 1.0, input_px: int | None = None) -> None:
        super().__init__()
        self.input_px = input_px

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True)]

        c1, c2, c3, c4 = (max(1, round(c * width)) for c in (32, 64, 128, 256))
        self.feature_dim = c4
        self.layers = nn.Sequential(
            *block(3, c1), nn.MaxPool2d(2),
            *block(c1, c2), nn.MaxPool2d(2),
            *block(c2, c3), nn.MaxPool2d(2),
            *block(c3, c4),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_px is not None and x.shape[-1] != self.input_px:
            x = F.interpolate(x, size=(self.input_px, self.input_px), mode="bilinear",
                              antialias=True, align_corners=False)
        return F.adaptive_avg_pool2d(self.layers(x), 1).flatten(1)


class TorchvisionResNet(nn.Module):
    """torchvision ResNet without its classifier; ``pooling='double'`` adds global max pooling
    to average pooling, the variant of the NIR code."""

    def __init__(self, name: str, pretrained: bool, pooling: str = "average") -> None:
        super().__init__()
        import torchvision

        builder = getattr(torchvision.models, name)
        net = builder(weights=None)
        if pretrained:
            net.load_state_dict(load_imagenet_weights(name))
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


def imagenet_weights_path(name: str) -> tuple[Path, str]:
    """Where torch hub keeps torchvision's ImageNet weights for ``name``, and their URL."""
    import torchvision

    enum = {"resnet18": torchvision.models.ResNet18_Weights,
            "resnet50": torchvision.models.ResNet50_Weights}[name]
    url = enum.IMAGENET1K_V1.url  # V1: the weights the DML literature (and NIR) used
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name, url


def load_imagenet_weights(name: str) -> dict[str, torch.Tensor]:
    path, url = imagenet_weights_path(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"ImageNet weights for {name} are not in the local torch hub cache and this harness "
            f"never downloads at run time. Fetch {url} on a machine with internet and put it at "
            f"{path} (or set TORCH_HOME so that $TORCH_HOME/hub/checkpoints holds it), or set "
            f"backbone.pretrained=false.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated download is the usual cause
        raise RuntimeError(f"could not read ImageNet weights {path}: {err}; delete it and fetch "
                           f"{url} again") from err


class EmbeddingModel(nn.Module):
    def __init__(self, body: nn.Module, feature_dim: int, embed_dim: int,
                 freeze_bn: bool = False) -> None:
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


def build_model(name: str, embed_dim: int, pretrained: bool, freeze_bn: bool,
                pooling: str = "average", width: float = 1.0,
                weights_file: Path | None = None,
                input_px: int | None = None) -> EmbeddingModel:
    """``weights_file``: a pretrained small_cnn's body weights (harness/train/pretrain.py); the
    ResNets find their ImageNet weights in the torch hub cache themselves."""
    if name == "small_cnn":
        body: nn.Module = SmallCNN(width, input_px)  # initialised either way: same RNG draws
        if pretrained:
            if weights_file is None:
                raise ValueError("backbone small_cnn with pretrained=true needs its embedded "
                                 "pretraining weights (harness/train/pretrain.py); build them "
                                 "through the runner, or set backbone.pretrained=false")
            body.load_state_dict(torch.load(weights_file, map_location="cpu", weights_only=True))
    elif name in ("resnet18", "resnet50"):
        body = TorchvisionResNet(name, pretrained, pooling)
    else:
        raise ValueError(f"unknown backbone {name!r}")
    return EmbeddingModel(body, body.feature_dim, embed_dim, freeze_bn)
