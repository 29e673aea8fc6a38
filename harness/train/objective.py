"""Method + optional regularizer -> named loss terms.

The engine only ever sees ``Objective``; it never asks which method or regularizer is inside.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from methods import METHODS, REGULARIZERS
from methods.base import Method, Regularizer


class Objective(nn.Module):
    def __init__(self, method: Method, regularizer: Regularizer | None = None) -> None:
        super().__init__()
        self.method = method
        self.regularizer = regularizer

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Returns ``{"loss/method": ..., ["loss/<reg>": ..., ["loss/<reg>_align": ...,]]
        "loss/total": ...}``.

        A regularizer's alignment term (NIR with its own proxies) joins the method side: with
        ``w_align`` the weight multiplies method + alignment, exactly as the published code
        weighted its ProxyAnchor term."""
        method_loss = self.method(embeddings, labels)
        terms = {"loss/method": method_loss}
        if self.regularizer is None:
            terms["loss/total"] = method_loss
            return terms
        reg = self.regularizer
        align = reg.alignment_loss(embeddings, labels)
        if align is not None:
            terms[f"loss/{reg_name(reg)}_align"] = align
            method_loss = method_loss + align
        reg_loss = reg(embeddings, labels, self.method.class_proxies())
        terms[f"loss/{reg_name(reg)}"] = reg_loss
        if reg.weight_convention == "lambda":
            terms["loss/total"] = method_loss + reg.weight * reg_loss
        else:  # w_align: the weight sits on the method (alignment) loss, as the NIR code did
            terms["loss/total"] = reg_loss + reg.weight * method_loss
        return terms

    def param_groups(self) -> list[dict[str, Any]]:
        groups = list(self.method.param_groups())
        if self.regularizer is not None:
            groups += self.regularizer.param_groups()
        return groups


def reg_name(reg: Regularizer) -> str:
    return getattr(reg, "registry_name", type(reg).__name__.lower())


def build_objective(method_name: str, method_params: Mapping[str, Any],
                    regularizer_name: str | None, regularizer_params: Mapping[str, Any],
                    *, num_classes: int, embed_dim: int) -> Objective:
    # Order matters for fair arms: the method (and its proxies) draws from the RNG first, so a
    # run with a regularizer has the same proxy initialisation as the run without.
    method = METHODS.get(method_name).cls(num_classes=num_classes, embed_dim=embed_dim,
                                          **method_params)
    regularizer = None
    if regularizer_name is not None:
        regularizer = REGULARIZERS.get(regularizer_name).cls(
            num_classes=num_classes, embed_dim=embed_dim, **regularizer_params)
        regularizer.registry_name = regularizer_name
    return Objective(method, regularizer)
