"""The conditional GLOW flow behind NIR: invertibility, exact logdet, size, conditioning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nirbench.methods.flow import CONDITIONING_MODES, ConditionalGlow


def subnet_params(d_in: int, d_out: int, depth: int, width: int) -> int:
    return (d_in * width + width) + (depth - 2) * (width * width + width) + (width * d_out + d_out)


def expected_params(dim: int, cond_dim: int, blocks=5, depth=8, width=128) -> int:
    half1, half2 = round(dim / 2), dim - round(dim / 2)
    per_block = subnet_params(half1 + cond_dim, 2 * half2, depth, width) + subnet_params(
        half2 + cond_dim, 2 * half1, depth, width
    )
    return blocks * per_block


def small_flow(
    conditioning: str = "dense", dim: int = 6, cond_dim: int = 4, scale: float = 3.0
) -> ConditionalGlow:
    torch.manual_seed(0)
    flow = ConditionalGlow(
        dim, cond_dim, blocks=3, subnet_depth=3, subnet_width=16, conditioning=conditioning
    ).double()
    # Larger weights than PyTorch's default init so scales/shifts are far from identity and the
    # log-determinant is clearly non-zero.
    with torch.no_grad():
        for p in flow.parameters():
            p.mul_(scale)
    return flow


@pytest.mark.parametrize("conditioning", CONDITIONING_MODES)
def test_inverse_recovers_input_float64(conditioning):
    # Moderate weights: with the x3 weights z reaches ~1e3 and float64 round-off ~1e-7.
    flow = small_flow(conditioning, dim=16, cond_dim=8, scale=1.5)
    x = torch.randn(32, 16, dtype=torch.float64)
    c = torch.randn(32, 8, dtype=torch.float64)
    z, _ = flow(x, c)
    assert (z - x).abs().max() > 0.1
    assert (flow.inverse(z, c) - x).abs().max() < 1e-10


def test_inverse_recovers_unit_vectors_float32_default_flow():
    torch.manual_seed(1)
    flow = ConditionalGlow(128, 128)
    x = F.normalize(torch.randn(16, 128), dim=1)
    c = F.normalize(torch.randn(16, 128), dim=1)
    with torch.no_grad():
        z, logdet = flow(x, c)
        x_rec = flow.inverse(z, c)
    assert logdet.shape == (16,)
    assert (x_rec - x).abs().max() < 1e-5


@pytest.mark.parametrize("conditioning", CONDITIONING_MODES)
def test_logdet_matches_bruteforce_jacobian(conditioning):
    flow = small_flow(conditioning)
    x = torch.randn(5, 6, dtype=torch.float64)
    c = torch.randn(5, 4, dtype=torch.float64)
    _, logdet = flow(x, c)
    for i in range(len(x)):
        jac = torch.autograd.functional.jacobian(
            lambda xi: flow(xi.unsqueeze(0), c[i : i + 1])[0].squeeze(0), x[i]
        )
        sign, logabs = torch.linalg.slogdet(jac)
        assert sign.item() != 0
        assert torch.allclose(logdet[i], logabs, atol=1e-8), (i, logdet[i].item(), logabs.item())
    assert logdet.abs().max() > 0.1  # the check is not vacuous


def test_parameter_count_matches_construction_and_paper():
    flow128 = ConditionalGlow(128, 128)
    n128 = flow128.num_trainable_parameters()
    assert n128 == expected_params(128, 128) == 1_402_880
    assert abs(n128 - 1.40e6) / 1.40e6 < 0.01  # PAPER.md: "about 1.40 M"
    # PermuteRandom's index tensors are buffers, not (integer) parameters.
    assert sum(p.numel() for p in flow128.parameters()) == n128
    n512 = ConditionalGlow(512, 512).num_trainable_parameters()
    assert n512 == expected_params(512, 512) == 2_635_520
    assert abs(n512 - 2.64e6) / 2.64e6 < 0.01  # PAPER.md: "about 2.64 M"
    embed = ConditionalGlow(128, 128, conditioning="embed_shared").num_trainable_parameters()
    assert embed == n128 + 2 * (128 * 128 + 128)


@pytest.mark.parametrize("conditioning", CONDITIONING_MODES)
def test_condition_changes_the_output(conditioning):
    flow = small_flow(conditioning)
    x = torch.randn(4, 6, dtype=torch.float64)
    c1 = torch.randn(4, 4, dtype=torch.float64)
    c2 = torch.randn(4, 4, dtype=torch.float64)
    z1, l1 = flow(x, c1)
    z2, l2 = flow(x, c2)
    assert (z1 - z2).abs().max() > 1e-3
    assert (l1 - l2).abs().max() > 1e-3


def test_unknown_conditioning_raises_listing_modes():
    with pytest.raises(ValueError, match="dense.*embed_shared"):
        ConditionalGlow(8, 8, conditioning="dense_embed_multi")


def test_construction_keeps_numpy_global_rng_and_is_deterministic():
    np.random.seed(123)
    expected = np.random.rand(3)
    np.random.seed(123)
    torch.manual_seed(5)
    a = ConditionalGlow(8, 8, blocks=2, subnet_depth=2, subnet_width=8)
    assert np.array_equal(np.random.rand(3), expected)  # FrEIA's np.random.seed(k) undone
    torch.manual_seed(5)
    b = ConditionalGlow(8, 8, blocks=2, subnet_depth=2, subnet_width=8)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    perms = [m.perm for m in a.inn if hasattr(m, "perm")]
    assert not torch.equal(perms[0], perms[1])  # seeded by block index, not all identical
    a.requires_grad_(True)  # would raise with FrEIA's integer nn.Parameters


def test_parameter_counts_of_the_other_conditioning_modes():
    """Each coupling block has two subnets whose first layer reads [half of x, condition]: a
    condition of size c costs 2 * c * width weights per conditioned block."""
    dense = ConditionalGlow(128, 128).num_trainable_parameters()
    per_cond_block = 2 * 128 * 128
    for mode in ("start", "mid", "end"):
        n = ConditionalGlow(128, 128, conditioning=mode).num_trainable_parameters()
        assert n == dense - 4 * per_cond_block  # 5 blocks, only one conditioned
    per_block = ConditionalGlow(128, 128, conditioning="embed_per_block")
    assert per_block.num_trainable_parameters() == dense + 5 * 2 * (128 * 128 + 128)


@pytest.mark.parametrize("mode,conditioned", [("start", 0), ("mid", 2), ("end", 4)])
def test_single_block_modes_condition_exactly_one_block(mode, conditioned):
    flow = ConditionalGlow(8, 4, blocks=5, subnet_depth=2, subnet_width=8, conditioning=mode)
    couplings = [m for m in flow.inn if not hasattr(m, "perm")]
    has_cond = [m.conditional for m in couplings]
    assert has_cond == [k == conditioned for k in range(5)]
