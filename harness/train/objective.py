"""Method + optional regularizer -> named loss terms.

The engine only ever sees ``Objective``; it never asks which method or regularizer is inside.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from nirbench.methods import METHODS, REGULARIZERS
from nirbench.methods.base import LAMBDA, Method, Regularizer


class Objective(nn.Module):
    def __init__(self, method: Method, regularizer: Regularizer | None = None) -> None:
        super().__init__()
        self.method = method
        self.regularizer = regularizer

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Returns ``{"loss/method": ..., ["loss/<reg>": ..., ["loss/<reg>_align": ...,]]
        "loss/total": ..., ["<reg>/term": ..., "<reg>/<diagnostic>": ...]}``.

        A regularizer's alignment term (NIR with its own proxies) joins the method side: with
        ``w_align`` the weight multiplies method + alignment, exactly as the published code
        weighted its ProxyAnchor term. ``<reg>/...`` entries are detached diagnostics (``term`` is
        the unweighted term again, the regularizer adds its own); they never enter the total. A
        regularizer without a term in this arm (NIR's ``flow: false`` control) logs neither
        ``loss/<reg>`` nor ``<reg>/term`` and its method side keeps the arm's weight."""
        terms, _ = self._terms(embeddings, labels)
        return terms

    def _terms(
        self, embeddings: torch.Tensor, labels: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """The terms, and the regularizer's term as it is weighted in the total (None without)."""
        method_loss = self.method(embeddings, labels)
        terms = {"loss/method": method_loss}
        if self.regularizer is None:
            terms["loss/total"] = method_loss
            return terms, None
        reg = self.regularizer
        name = reg_name(reg)
        align = reg.alignment_loss(embeddings, labels)
        if align is not None:
            terms[f"loss/{name}_align"] = align
            method_loss = method_loss + align
        reg_loss, diagnostics = reg.term(embeddings, labels, self.method.class_proxies())
        weighted = None
        if reg.weight_convention == LAMBDA:
            if reg_loss is None:
                terms["loss/total"] = method_loss
            else:
                weighted = reg.weight * reg_loss
                terms["loss/total"] = method_loss + weighted
        else:  # W_ALIGN: the weight sits on the method (alignment) loss, as the NIR code did
            if reg_loss is None:
                terms["loss/total"] = reg.weight * method_loss
            else:
                weighted = reg_loss
                terms["loss/total"] = reg_loss + reg.weight * method_loss
        if reg_loss is not None:
            terms[f"loss/{name}"] = reg_loss
            terms[f"{name}/term"] = reg_loss.detach()
        terms.update({f"{name}/{key}": value.detach() for key, value in diagnostics.items()})
        return terms, weighted

    @property
    def wants_probe(self) -> bool:
        """Whether ``probe_diagnostics`` has anything to say (the engine skips the probe's
        forward pass otherwise)."""
        return self.regularizer is not None

    def probe_diagnostics(self, embeddings: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """``<reg>/grad_share``: ||d(weighted regularizer term)/d embeddings|| over
        ||d(total loss)/d embeddings||, on ``embeddings`` (the engine's fixed probe batch).

        Gradients are taken with ``torch.autograd.grad`` with respect to a detached copy of the
        embeddings only: no ``.grad`` of any parameter is touched. The weighted term is the one
        the total adds (w_align: weight 1, lambda: the weight). 0 when this arm has no term; NaN
        when the term overflows on the probe (the probe must never end a run)."""
        if self.regularizer is None:
            return {}
        key = f"{reg_name(self.regularizer)}/grad_share"
        probe = embeddings.detach().requires_grad_(True)
        with torch.enable_grad():
            try:
                terms, weighted = self._terms(probe, labels)
            except FloatingPointError:
                return {key: float("nan")}
            if weighted is None:
                return {key: 0.0}
            (reg_grad,) = torch.autograd.grad(weighted, probe, retain_graph=True)
            (total_grad,) = torch.autograd.grad(terms["loss/total"], probe)
        return {key: float(reg_grad.norm() / total_grad.norm())}

    def param_groups(self) -> list[dict[str, Any]]:
        groups = list(self.method.param_groups())
        if self.regularizer is not None:
            groups += self.regularizer.param_groups()
        return groups


def reg_name(reg: Regularizer) -> str:
    return getattr(reg, "registry_name", type(reg).__name__.lower())


def build_objective(
    method_name: str,
    method_params: Mapping[str, Any],
    regularizer_name: str | None,
    regularizer_params: Mapping[str, Any],
    *,
    num_classes: int,
    embed_dim: int,
) -> Objective:
    # Order matters for fair arms: the method (and its proxies) draws from the RNG first, so a
    # run with a regularizer has the same proxy initialisation as the run without.
    method = METHODS.get(method_name).cls(
        num_classes=num_classes, embed_dim=embed_dim, **method_params
    )
    regularizer = None
    if regularizer_name is not None:
        regularizer = REGULARIZERS.get(regularizer_name).cls(
            num_classes=num_classes, embed_dim=embed_dim, **regularizer_params
        )
        regularizer.registry_name = regularizer_name
    return Objective(method, regularizer)
