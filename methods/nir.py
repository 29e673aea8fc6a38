"""Non-isotropy Regularization (NIR; Roth, Vinyals, Akata, CVPR 2022), PAPER.md sections 2-3.

psi = L2-normalised embedding, rho_y = L2-normalised proxy of the sample's class,
(z, logdet) = flow(psi | rho_y) (the flow's forward pass, z = tau^-1(psi | rho_y)).

  form "nll": mean_B( ||z||^2 - logdet )              the paper's formula, literally
  form "exp": mean_B( exp(0.5 * ||z||^2 - logdet) )   what the published code optimised

``forward`` returns the unweighted term; the objective applies ``weight`` by ``weight_convention``.
Gradients reach the embeddings, the proxies (owned by the method) and the flow.

Construction order and RNG: build the method (its proxies draw from the global torch RNG) BEFORE
the regularizer. NIR itself is RNG-neutral: the flow is initialised inside a forked torch RNG seeded
from a hash of the current global torch RNG state, and FrEIA's numpy reseeding is undone (see
methods/flow.py). So the flow is a deterministic function of the run seed, and building NIR changes
no global RNG stream: everything constructed or sampled afterwards (backbone, data order) is
identical in the NIR and the baseline arm.
"""
from __future__ import annotations

import hashlib
from typing import Any

import torch
import torch.nn.functional as F

from methods.base import REGULARIZERS, Regularizer, RegularizerInfo
from methods.flow import ConditionalGlow

FORMS = ("nll", "exp")
PROXY_SOURCES = ("method",)
# exp() overflows float32 just above 88.7; stop earlier so the mean and its gradient stay finite.
EXP_FORM_MAX_EXPONENT = 80.0


class NonFiniteLossError(FloatingPointError):
    """The NIR term is not finite (or its exp form is about to overflow).

    The harness catches it and adds epoch/step."""


def _seed_from_global_torch_rng(salt: str) -> int:
    state = torch.random.get_rng_state().numpy().tobytes()
    digest = hashlib.sha256(state + salt.encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class NIR(Regularizer):
    def __init__(
        self,
        *,
        num_classes: int,
        embed_dim: int,
        weight: float,
        weight_convention: str,
        form: str,
        blocks: int,
        subnet_depth: int,
        subnet_width: int,
        clamp: float,
        conditioning: str,
        flow_lr_mult: float,
        proxy_source: str,
    ) -> None:
        super().__init__(
            num_classes=num_classes,
            embed_dim=embed_dim,
            weight=weight,
            weight_convention=weight_convention,
        )
        if form not in FORMS:
            raise ValueError(f"NIR form {form!r} must be one of {FORMS}")
        if proxy_source not in PROXY_SOURCES:
            raise ValueError(
                f"NIR proxy_source {proxy_source!r} is not supported; valid: {PROXY_SOURCES}. "
                "NIR's own-proxy mode (the published code's) comes with the method-zoo work."
            )
        self.form = form
        self.proxy_source = proxy_source
        self.flow_lr_mult = float(flow_lr_mult)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_seed_from_global_torch_rng("nir.flow"))
            self.flow = ConditionalGlow(
                embed_dim,
                embed_dim,
                blocks=blocks,
                subnet_depth=subnet_depth,
                subnet_width=subnet_width,
                clamp=clamp,
                conditioning=conditioning,
            )

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, proxies: torch.Tensor | None
    ) -> torch.Tensor:
        if proxies is None:
            raise ValueError(
                "NIR needs class proxies; the method in this run provides none "
                "(class_proxies() returned None). Pair NIR with a proxy-based method."
            )
        psi = F.normalize(embeddings, dim=-1)
        rho = F.normalize(proxies, dim=-1)[labels.long()]
        z, logdet = self.flow(psi, rho.to(psi.dtype))
        # Compute the objective in at least float32 even if the flow ran under autocast.
        z = z.float() if z.dtype in (torch.float16, torch.bfloat16) else z
        logdet = logdet.to(z.dtype)
        sq = z.pow(2).sum(dim=1)
        if self.form == "nll":
            per_sample = sq - logdet
            self._check(per_sample, "nll", bound=None)
            return per_sample.mean()
        exponent = 0.5 * sq - logdet
        self._check(exponent, "exp", bound=EXP_FORM_MAX_EXPONENT)
        return torch.exp(exponent).mean()

    @staticmethod
    def _check(values: torch.Tensor, form: str, bound: float | None) -> None:
        if values.numel() == 0:
            return
        v = values.detach()
        # One host sync per step: [any non-finite, max] fetched together.
        nonfinite, vmax = torch.stack(
            [(~torch.isfinite(v)).any().to(v.dtype), v.masked_fill(v.isnan(), float("inf")).max()]
        ).tolist()
        finite = not nonfinite
        if finite and (bound is None or vmax <= bound):
            return
        what = "exponent 0.5*||z||^2 - logdet" if form == "exp" else "per-sample ||z||^2 - logdet"
        reason = (
            "is not finite" if not finite
            else f"exceeds {bound:g} (exp would overflow float32)"
        )
        raise NonFiniteLossError(
            f"NIR form {form!r} overflowed: the {what} {reason}; max = {vmax:.4g}. "
            "Try `form: nll` or a smaller flow learning rate (flow_lr_mult)."
        )

    def param_groups(self) -> list[dict[str, Any]]:
        params = [p for p in self.flow.parameters() if p.requires_grad]
        return [{"params": params, "lr_mult": self.flow_lr_mult, "name": "flow"}]


REGULARIZERS.add(
    "nir",
    RegularizerInfo(
        name="nir",
        cls=NIR,
        paper="Roth, Vinyals, Akata, Non-isotropy Regularization for Proxy-based DML, CVPR 2022",
        needs_proxies=True,
        defaults={
            "weight": 0.01,
            "weight_convention": "w_align",
            "form": "exp",
            "blocks": 5,
            "subnet_depth": 8,
            "subnet_width": 128,
            "clamp": 2.0,
            "conditioning": "dense",
            # The paper's flow lr is 1e-5 x 50 = 5e-4. Relative to the harness's default lr of
            # 1e-3 that is x0.5; x50 there diverges within two steps (the paper preset sets
            # lr 1e-5 with x50 explicitly).
            "flow_lr_mult": 0.5,
            "proxy_source": "method",
        },
        search_space={
            "weight": {"type": "float", "low": 1e-3, "high": 1.0, "log": True},
            "flow_lr_mult": {"type": "float", "low": 0.05, "high": 5.0, "log": True},
        },
    ),
)
