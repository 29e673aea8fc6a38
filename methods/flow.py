"""Proxy-conditioned GLOW flow used by NIR (PAPER.md section 3), built with FrEIA.

Per block: a fixed random permutation (``PermuteRandom(seed=block_index + seed_offset)``) and a
``GLOWCouplingBlock`` whose two subnets are MLPs of ``subnet_depth`` Linear layers (width
``subnet_width``, ReLU in between, no dropout, PyTorch default init as the authors'
``fc_init='none'``).
FrEIA concatenates the condition to each subnet input. The log-scale is soft-clamped with FrEIA's
``"ATAN"`` activation, ``clamp * 0.636 * atan(s)``, i.e. the authors' setting (FrEIA's default;
passed explicitly so a FrEIA default change cannot silently alter the flow).

Two FrEIA 0.2 behaviours are neutralised here:

* ``PermuteRandom(seed=k)`` calls ``np.random.seed(k)``, i.e. it reseeds numpy's *global* RNG. Left
  alone, building a flow would make every later numpy draw (e.g. a sampler) identical across run
  seeds and different between the NIR and the baseline arm. The numpy global state is saved and
  restored around construction.
* ``PermuteRandom`` stores its index tensors as ``nn.Parameter(LongTensor, requires_grad=False)``.
  Those show up in ``parameters()`` (inflating counts, reaching optimizers) and make
  ``module.requires_grad_(True)`` raise. They are turned into buffers (same state_dict keys).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import FrEIA.framework as Ff
import FrEIA.modules as Fm
import numpy as np
import torch
from torch import nn

# A coupling log-scale counts as saturated at >= 95% of the soft clamp (|s| >= 0.95 * clamp).
SATURATION = 0.95
CONDITIONING_MODES = ("dense", "embed_shared", "embed_per_block", "start", "mid", "end")
# Modes that feed the raw condition to ONE coupling block only (the others are unconditional).
SINGLE_BLOCK_MODES = ("start", "mid", "end")


def make_subnet_constructor(depth: int, width: int) -> Callable[[int, int], nn.Module]:
    """``depth`` Linear layers in total: in->width, (depth-2) x width->width, width->out."""

    def constructor(dims_in: int, dims_out: int) -> nn.Module:
        layers: list[nn.Module] = [nn.Linear(dims_in, width)]
        for _ in range(depth - 2):
            layers += [nn.ReLU(), nn.Linear(width, width)]
        layers += [nn.ReLU(), nn.Linear(width, dims_out)]
        return nn.Sequential(*layers)

    return constructor


def _permutation_params_to_buffers(module: nn.Module) -> None:
    for name in ("perm", "perm_inv"):
        value = module._parameters.pop(name)
        module.register_buffer(name, value.detach().clone())


class ConditionalGlow(nn.Module):
    """x (B, dim), cond (B, cond_dim) -> ``forward``: (z, logdet (B,)), ``inverse``: x.

    Conditioning modes:
      ``dense``        the condition is fed unchanged to every coupling block (paper default).
      ``embed_shared`` one MLP ``Linear(c, c) - ReLU - Linear(c, c)`` embeds the condition once
                       and the embedding is fed to every block (the authors' ``dense_embed``).
      ``embed_per_block`` one such MLP per block, each block reads its own embedding.
      ``start`` / ``mid`` / ``end``   the raw condition reaches only the first / middle
                       (index blocks // 2) / last coupling block; the other blocks are
                       unconditional couplings (the authors' "condition at start/mid/end").
    """

    def __init__(
        self,
        dim: int,
        cond_dim: int,
        blocks: int = 5,
        subnet_depth: int = 8,
        subnet_width: int = 128,
        clamp: float = 2.0,
        conditioning: str = "dense",
        seed_offset: int = 0,
    ) -> None:
        super().__init__()
        if conditioning not in CONDITIONING_MODES:
            raise ValueError(
                f"unknown conditioning {conditioning!r}; "
                f"valid modes: {', '.join(CONDITIONING_MODES)}"
            )
        if dim < 2:
            raise ValueError(f"flow dim must be >= 2 (a coupling block splits it), got {dim}")
        if blocks < 1:
            raise ValueError(f"blocks must be >= 1, got {blocks}")
        if subnet_depth < 2:
            raise ValueError(
                f"subnet_depth counts Linear layers and must be >= 2, got {subnet_depth}"
            )
        self.dim = dim
        self.cond_dim = cond_dim
        self.blocks = blocks
        self.conditioning = conditioning

        def embedder() -> nn.Module:
            return nn.Sequential(
                nn.Linear(cond_dim, cond_dim), nn.ReLU(), nn.Linear(cond_dim, cond_dim)
            )

        self.cond_embed: nn.Module | None = None
        self.cond_embed_per_block: nn.ModuleList | None = None
        if conditioning == "embed_shared":
            self.cond_embed = embedder()
        elif conditioning == "embed_per_block":
            self.cond_embed_per_block = nn.ModuleList(embedder() for _ in range(blocks))
        conditioned_block = {"start": 0, "mid": blocks // 2, "end": blocks - 1}.get(conditioning)

        subnet = make_subnet_constructor(subnet_depth, subnet_width)
        np_state = np.random.get_state()
        try:
            self.inn = Ff.SequenceINN(dim)
            for k in range(blocks):
                self.inn.append(Fm.PermuteRandom, seed=k + seed_offset)
                _permutation_params_to_buffers(self.inn[len(self.inn) - 1])
                if conditioned_block is not None and k != conditioned_block:
                    cond_kwargs = {}  # an unconditional coupling block
                else:
                    # embed_per_block: block k reads condition k; all other modes: condition 0
                    index = k if conditioning == "embed_per_block" else 0
                    cond_kwargs = {"cond": index, "cond_shape": (cond_dim,)}
                self.inn.append(
                    Fm.GLOWCouplingBlock,
                    subnet_constructor=subnet,
                    clamp=clamp,
                    clamp_activation="ATAN",
                    **cond_kwargs,
                )
        finally:
            np.random.set_state(np_state)

    def num_trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def _conditions(self, cond: torch.Tensor) -> list[torch.Tensor]:
        if self.cond_embed_per_block is not None:
            return [embed(cond) for embed in self.cond_embed_per_block]
        if self.cond_embed is not None:
            cond = self.cond_embed(cond)
        # SequenceINN takes a list of conditions; every conditioned coupling block reads index 0.
        return [cond]

    @contextmanager
    def recording_log_scales(self) -> Iterator["LogScaleRecord"]:
        """Inside the block, every forward or inverse pass records the coupling log-scales
        ``s = clamp * f_clamp(raw)`` that FrEIA's ``GLOWCouplingBlock`` computes, as the share of
        them at >= ``SATURATION`` of the clamp (``LogScaleRecord.clamp_share``).

        Forward hooks on the blocks' subnets read the raw outputs ``a = [raw_s, t]`` (FrEIA puts
        the log-scale half first) and apply the block's own ``clamp`` and ``f_clamp``, so the
        flow is not re-implemented. Hooks exist only inside the block: outside it the flow pays
        nothing."""
        record = LogScaleRecord()
        handles = []
        for block in self.inn.module_list:
            if not isinstance(block, Fm.GLOWCouplingBlock):
                continue
            for subnet in (block.subnet1, block.subnet2):
                handles.append(subnet.register_forward_hook(record.hook(block)))
        try:
            yield record
        finally:
            for handle in handles:
                handle.remove()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z, logdet = self.inn(x, c=self._conditions(cond), rev=False, jac=True)
        return z, logdet

    def inverse(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x, _ = self.inn(z, c=self._conditions(cond), rev=True, jac=True)
        return x


class LogScaleRecord:
    """Saturation counts of the coupling log-scales seen while recording (see
    ``ConditionalGlow.recording_log_scales``). Counts stay tensors on the flow's device: no host
    sync per block."""

    def __init__(self) -> None:
        self.saturated: torch.Tensor | None = None
        self.total = 0

    def hook(self, block: nn.Module) -> Callable[..., None]:
        def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            raw = output.detach()
            raw_s = raw[:, : raw.shape[1] // 2]  # GLOWCouplingBlock: a[:, :split] is the scale
            s = block.clamp * block.f_clamp(raw_s)
            count = (s.abs() >= SATURATION * block.clamp).sum()
            self.saturated = count if self.saturated is None else self.saturated + count
            self.total += s.numel()

        return record

    @property
    def clamp_share(self) -> torch.Tensor:
        """Share of recorded log-scales with |s| >= SATURATION * clamp (0 if none was seen)."""
        if self.saturated is None or self.total == 0:
            return torch.zeros(())
        return self.saturated.to(torch.float32) / self.total
