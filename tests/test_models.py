"""Backbones: shapes, L2-normalised output, frozen BatchNorm, offline ImageNet weights."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from nirbench.harness.train.models import build_model, imagenet_weights_path


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


def test_missing_imagenet_weights_name_the_file_and_url(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path, url = imagenet_weights_path("resnet18")
    assert str(path).startswith(str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        build_model("resnet18", 16, pretrained=True, freeze_bn=True)
    assert str(path) in str(err.value) and url in str(err.value)


def test_imagenet_weights_load_from_the_local_hub_cache(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path, _ = imagenet_weights_path("resnet18")
    path.parent.mkdir(parents=True)
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), path)
    model = build_model("resnet18", 16, pretrained=True, freeze_bn=True)
    assert torch.equal(model.body.net.conv1.weight, reference.conv1.weight)

    path.write_bytes(b"truncated")
    with pytest.raises(RuntimeError, match="could not read ImageNet weights"):
        build_model("resnet18", 16, pretrained=True, freeze_bn=True)


def test_small_cnn_has_no_pretrained_weights():
    with pytest.raises(ValueError, match="pretrained=false"):
        build_model("small_cnn", 16, pretrained=True, freeze_bn=False)
