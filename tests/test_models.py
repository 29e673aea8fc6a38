"""Backbones: the registry, shapes, L2-normalised output, frozen BatchNorm, ImageNet weights that
are refused unless their hash matches (the download paths: tests/test_weights.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nirbench.harness.config_backbones import (
    BACKBONES,
    BackboneInfo,
    BodyOptions,
    WeightsFile,
    backbone_names,
    default_pretrained_backbones,
)
from nirbench.harness.train.models import (
    build_model,
    imagenet_weights_path,
    torchvision_resnet_body,
)
from nirbench.harness.train.weights import CorruptWeightsError


@pytest.mark.parametrize("name", ["small_cnn", "resnet18"])
def test_embeddings_are_l2_normalised_with_the_configured_dim(name):
    model = build_model(name, embed_dim=24, pretrained=False, freeze_bn=False).eval()
    with torch.no_grad():
        out = model(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, 24)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)


def test_frozen_batchnorm_keeps_running_statistics_but_trains_affine():
    model = build_model("small_cnn", 8, pretrained=False, freeze_bn=True)
    model.train()
    bn = next(m for m in model.body.modules() if isinstance(m, nn.BatchNorm2d))
    before = bn.running_mean.clone()
    model(torch.randn(4, 3, 32, 32) * 5 + 3).sum().backward()
    assert torch.equal(before, bn.running_mean)
    assert bn.weight.grad is not None and model.head.training
    unfrozen = build_model("small_cnn", 8, pretrained=False, freeze_bn=False).train()
    bn2 = next(m for m in unfrozen.body.modules() if isinstance(m, nn.BatchNorm2d))
    unfrozen(torch.randn(4, 3, 32, 32) * 5 + 3)
    assert not torch.equal(before, bn2.running_mean)


def test_missing_imagenet_weights_offline_name_the_file_and_url(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("NIRBENCH_OFFLINE", "1")
    path, url = imagenet_weights_path("resnet18")
    assert str(path).startswith(str(tmp_path))
    assert url == BACKBONES.get("resnet18").weights.url
    with pytest.raises(FileNotFoundError) as err:
        build_model("resnet18", 16, pretrained=True, freeze_bn=True)
    assert str(path) in str(err.value) and url in str(err.value)
    assert "backbone.pretrained=false" in str(err.value)


def test_a_loadable_state_dict_of_other_values_under_the_official_name_is_refused(
    tmp_path, monkeypatch
):
    """The issue's case: a ResNet18 state dict of random values saved under torchvision's file
    name has the right shapes and would load; its sha256 does not match the name."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("NIRBENCH_OFFLINE", "1")
    path, _ = imagenet_weights_path("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(CorruptWeightsError) as err:
        build_model("resnet18", 16, pretrained=True, freeze_bn=True)
    message = str(err.value)
    assert str(path) in message and "f37072fd" in message
    assert "nirbench weights fetch resnet18" in message and f"rm {path}" in message

    path.write_bytes(b"truncated")
    with pytest.raises(CorruptWeightsError, match="corrupt"):
        build_model("resnet18", 16, pretrained=True, freeze_bn=True)


def test_a_resnet_body_loads_torchvision_state_dicts_classifier_included():
    import torchvision

    reference = torchvision.models.resnet18(weights=None)
    body = torchvision_resnet_body("resnet18", reference.state_dict(), BodyOptions())
    assert torch.equal(body.net.conv1.weight, reference.conv1.weight)
    assert isinstance(body.net.fc, nn.Identity)  # the classifier is gone after loading


def test_every_registered_backbone_builds_with_its_registered_feature_dim():
    for name in ("small_cnn", "resnet18", "resnet50"):
        info = BACKBONES.get(name)
        model = build_model(name, 8, pretrained=False, freeze_bn=False)
        assert model.body.feature_dim == info.feature_dim == model.head.in_features, name
    assert backbone_names()[:3] == ("small_cnn", "resnet18", "resnet50")  # table order
    assert set(default_pretrained_backbones()) == {"resnet18", "resnet50"}


class ToyBody(nn.Module):
    """A backbone that is one file plus its registration: 3 -> 5 features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3)
        self.feature_dim = 5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


def toy_body(name, state_dict, options):
    body = ToyBody()
    if state_dict is not None:
        body.load_state_dict(state_dict)
    return body


def test_a_toy_backbone_registered_in_one_line_builds_a_model(monkeypatch):
    # registered for this test only: the registry has no removal, setitem undoes the entry
    monkeypatch.setitem(BACKBONES._entries, "toy_models", None)
    del BACKBONES._entries["toy_models"]
    BACKBONES.add(
        "toy_models",
        BackboneInfo(name="toy_models", title="Toy", feature_dim=5, build=toy_body, order=999),
    )
    assert backbone_names()[-1] == "toy_models"
    model = build_model("toy_models", 4, pretrained=False, freeze_bn=False).eval()
    assert isinstance(model.body, ToyBody) and model.head.in_features == 5
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 4)
    with pytest.raises(ValueError, match="no pretrained weights"):
        build_model("toy_models", 4, pretrained=True, freeze_bn=False)


def test_registration_refuses_inconsistent_metadata():
    with pytest.raises(ValueError, match="carries no sha256 prefix"):
        WeightsFile("https://example.invalid/net.pth", "nobody")
    with pytest.raises(ValueError, match="default_pretrained"):
        BackboneInfo(name="x", title="X", feature_dim=1, build=toy_body, default_pretrained=True)
    with pytest.raises(KeyError, match="resnet18"):
        build_model("resnet17", 4, pretrained=False, freeze_bn=False)


def test_small_cnn_has_no_pretrained_weights():
    with pytest.raises(ValueError, match="pretrained=false"):
        build_model("small_cnn", 16, pretrained=True, freeze_bn=False)
