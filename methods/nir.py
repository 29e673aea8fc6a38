"""Non-isotropy Regularization (NIR; Roth, Vinyals, Akata, CVPR 2022), PAPER.md sections 2-3.

psi = L2-normalised embedding, rho_y = L2-normalised proxy of the sample's class,
(z, logdet) = flow(psi | rho_y) (the flow's forward pass, z = tau^-1(psi | rho_y)).

  form "nll": mean_B( ||z||^2 - logdet )              the paper's formula, literally
  form "exp": mean_B( exp(0.5 * ||z||^2 - logdet) )   what the published code optimised

``forward`` returns the unweighted term; the objective applies ``weight`` by ``weight_convention``.
Gradients reach the embeddings, the proxies and the flow.

Where the proxies come from (``proxy_source``, tagged on the run as ``nir.proxy_source``):
  ``method``  the method's own class proxies (``Method.class_proxies()``): proxy-based methods.
  ``own``     NIR owns its proxies (init randn / 8) and trains them with its own ProxyAnchor
              alignment term (cosine, alpha 32, margin 0.1), exactly like the published code's
              criterion; that is how a pair-based method gets NIR. The alignment term sits on the
              method side of the objective (``alignment_loss``; see harness/train/objective.py).
  ``auto``    the default; resolved when the config is built: ``method`` if the method has
              proxies, else ``own`` (so the resolved config, its hash and the tag always name the
              concrete mode). An explicit ``method`` on a method without proxies is refused.

Construction order and RNG: build the method (its proxies draw from the global torch RNG) BEFORE
the regularizer. NIR itself is RNG-neutral: the flow is initialised inside a forked torch RNG seeded
from a hash of the current global torch RNG state, and FrEIA's numpy reseeding is undone (see
methods/flow.py). So the flow is a deterministic function of the run seed, and building NIR changes
no global RNG stream: everything constructed or sampled afterwards (backbone, data order) is
identical in the NIR and the baseline arm.

Activity diagnostics: ``term`` returns the unweighted term plus detached per-batch statistics
that say whether the flow still does anything (the exp form collapses to ~0 within an epoch):
``logdet`` (mean log|det J|), ``z_sq_per_dim`` (mean ||z||^2 / d) and ``clamp_share`` (share of
coupling log-scales at >= 95% of the soft clamp). The objective logs them as ``nir/<name>``.

The control arm, ``flow: false``: no flow is built (so nothing is drawn, the build stays
RNG-neutral and the own proxies are the NIR arm's), ``term`` returns no term, and the objective
keeps everything else exactly as the NIR arm weights it: ``w_align`` x method loss (plus the own
proxies' alignment term in ``own`` mode). It separates the flow from the loss scale (which under
Adam with coupled weight decay acts as a 1/w_align stronger decay) and from the alignment term.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
import torch.nn.functional as F

from pytorch_metric_learning.losses import ProxyAnchorLoss

from nirbench.methods.base import REGULARIZERS, Regularizer, RegularizerInfo
from nirbench.methods.flow import ConditionalGlow

FORMS = ("nll", "exp")
PROXY_SOURCES = ("method", "own")
PROXY_SOURCE_CHOICES = PROXY_SOURCES + ("auto",)  # "auto" never reaches the module: see config
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
        flow: bool = True,
        own_proxy_lr_mult: float = 100.0,
        own_align_alpha: float = 32.0,
        own_align_margin: float = 0.1,
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
                f"NIR proxy_source {proxy_source!r} is not supported here; valid: "
                f"{PROXY_SOURCES} ('auto' is resolved by the config loader)."
            )
        self.form = form
        self.proxy_source = proxy_source
        self.flow_lr_mult = float(flow_lr_mult)
        self.own_proxy_lr_mult = float(own_proxy_lr_mult)
        self.alignment: ProxyAnchorLoss | None = None
        with torch.random.fork_rng(devices=[]):
            if proxy_source == "own":
                # Drawn inside the forked RNG too: the own proxies must not shift the global
                # stream either (the baseline arm never draws them).
                torch.manual_seed(_seed_from_global_torch_rng("nir.own_proxies"))
                self.alignment = ProxyAnchorLoss(
                    num_classes,
                    embed_dim,
                    margin=float(own_align_margin),
                    alpha=float(own_align_alpha),
                )
                with torch.no_grad():  # the published code's init: randn / 8
                    self.alignment.proxies.copy_(torch.randn(num_classes, embed_dim) / 8)
            self.flow: ConditionalGlow | None = None
            if not flow:  # the control arm: same proxies and weighting, no flow
                return
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

    def own_proxies(self) -> torch.Tensor | None:
        return self.alignment.proxies if self.alignment is not None else None

    def alignment_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        """The own-proxy mode's ProxyAnchor term on NIR's proxies (None in ``method`` mode)."""
        if self.alignment is None:
            return None
        proxies = self.alignment.proxies  # see ProxyAnchor.compute_loss: PML casts in place
        return self.alignment(embeddings.to(proxies.dtype), labels.long())

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, proxies: torch.Tensor | None
    ) -> torch.Tensor:
        term, _ = self._term(embeddings, labels, proxies, diagnostics=False)
        return term

    def term(
        self, embeddings: torch.Tensor, labels: torch.Tensor, proxies: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """The unweighted term and the activity diagnostics (detached 0-dim tensors:
        ``logdet``, ``z_sq_per_dim``, ``clamp_share``); ``(None, {})`` without a flow."""
        if self.flow is None:
            return None, {}
        return self._term(embeddings, labels, proxies, diagnostics=True)

    def _term(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        proxies: torch.Tensor | None,
        *,
        diagnostics: bool,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.flow is None:
            raise RuntimeError(
                "this NIR was built with flow=false (the control arm): it has no "
                "term; Objective weights its method side only"
            )
        if self.alignment is not None:
            proxies = self.alignment.proxies
        if proxies is None:
            raise ValueError(
                "NIR needs class proxies; the method in this run provides none "
                "(class_proxies() returned None). Pair NIR with a proxy-based method or set "
                "regularizer.proxy_source=own."
            )
        psi = F.normalize(embeddings, dim=-1)
        rho = F.normalize(proxies, dim=-1)[labels.long()]
        if diagnostics:
            with self.flow.recording_log_scales() as scales:
                z, logdet = self.flow(psi, rho.to(psi.dtype))
        else:
            z, logdet = self.flow(psi, rho.to(psi.dtype))
        # Compute the objective in at least float32 even if the flow ran under autocast.
        z = z.float() if z.dtype in (torch.float16, torch.bfloat16) else z
        logdet = logdet.to(z.dtype)
        sq = z.pow(2).sum(dim=1)
        stats: dict[str, torch.Tensor] = {}
        if diagnostics:
            stats = {
                "logdet": logdet.detach().mean(),
                "z_sq_per_dim": sq.detach().mean() / z.shape[1],
                "clamp_share": scales.clamp_share.to(z.device),
            }
        if self.form == "nll":
            per_sample = sq - logdet
            self._check(per_sample, "nll", bound=None)
            return per_sample.mean(), stats
        exponent = 0.5 * sq - logdet
        self._check(exponent, "exp", bound=EXP_FORM_MAX_EXPONENT)
        return torch.exp(exponent).mean(), stats

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
            "is not finite" if not finite else f"exceeds {bound:g} (exp would overflow float32)"
        )
        raise NonFiniteLossError(
            f"NIR form {form!r} overflowed: the {what} {reason}; max = {vmax:.4g}. "
            "Try `form: nll` or a smaller flow learning rate (flow_lr_mult)."
        )

    def param_groups(self) -> list[dict[str, Any]]:
        groups = []
        if self.flow is not None:
            params = [p for p in self.flow.parameters() if p.requires_grad]
            groups.append({"params": params, "lr_mult": self.flow_lr_mult, "name": "flow"})
        if self.alignment is not None:
            groups.append(
                {
                    "params": [self.alignment.proxies],
                    "lr_mult": self.own_proxy_lr_mult,
                    "name": "nir_proxies",
                }
            )
        return groups


REGULARIZERS.add(
    "nir",
    RegularizerInfo(
        name="nir",
        cls=NIR,
        paper="Roth, Vinyals, Akata, Non-isotropy Regularization for Proxy-based DML, CVPR 2022",
        needs_proxies=True,
        title="NIR",
        forms=FORMS,
        owns_proxies=True,  # proxy_source own: NIR's own proxies on a method without any
        control_variant=("flow", False),  # the control arm of issue 14: everything but the flow
        variant_titles={
            ("flow", "false"): "no flow",
            ("weight_convention", "lambda"): "λ on NIR",
            ("weight_convention", "w_align"): "w_align on the method",
        },
        variant_keys=("flow", "form", "weight_convention"),
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
            # auto: the method's proxies when it has some, else NIR's own (resolved and recorded
            # when the config is built), so `regularizer: nir` works on every method
            "proxy_source": "auto",
            # false: the control arm, everything but the flow (see the module docstring). Left
            # out of the resolved config while true (identity_neutral), so configs written
            # before this key existed keep their hash and their finished runs.
            "flow": True,
            # own-proxy mode only (proxy_source own/auto on a method without proxies):
            "own_proxy_lr_mult": 100.0,
            "own_align_alpha": 32.0,
            "own_align_margin": 0.1,
        },
        identity_neutral={"flow": True},
        search_space={
            "weight": {"type": "float", "low": 1e-3, "high": 1.0, "log": True},
            "flow_lr_mult": {"type": "float", "low": 0.05, "high": 5.0, "log": True},
        },
    ),
)
