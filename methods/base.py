"""What every DML method and every regularizer is, and the registries that hold them.

A *method* is a DML loss that owns its parameters (proxies, learnable margins). A *regularizer*
(NIR) adds loss terms on top of a method and may read the method's class proxies. Both are plain
``nn.Module``s built from explicit keyword arguments: they never see the global run config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import nn

from nirbench.harness.registry import Registry


@dataclass(frozen=True)
class MethodInfo:
    """Frozen metadata that lives next to a method's code."""

    name: str
    cls: type["Method"]
    family: str  # "proxy" or "pair"
    provides_proxies: bool
    paper: str
    # How tables, verdicts and figures name the method (the paper's spelling) and where its rows
    # go: Table 1's order for the methods the paper lists (table_rank 0, 1, ...), by title after
    # them for the rest (None). The tables read these; they know no method by name.
    title: str = ""
    table_rank: int | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    # Tuning priors for the search issue: {param: {"type": "float", "low":..., "high":..., "log": bool}}
    search_space: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RegularizerInfo:
    name: str
    cls: type["Regularizer"]
    paper: str
    needs_proxies: bool
    # How tables and figures name the regularizer ("+ NIR"); the name upper-cased when empty.
    title: str = ""
    # The values of its ``form`` parameter (NIR: nll, the paper's formula; exp, what the
    # published code optimised); () for a regularizer with one form.
    forms: tuple[str, ...] = ()
    # Whether it can bring class proxies of its own (NIR's proxy_source: own), so that a method
    # without proxies can still take it although it ``needs_proxies``.
    owns_proxies: bool = False
    # The (key, value) of its control arm: everything but what it adds (NIR: flow=false). The
    # tables compare that arm with the arm it controls for. None: no control arm.
    control_variant: tuple[str, Any] | None = None
    # How a variant value reads in a table row (("flow", "false") -> "no flow"); a form reads
    # "<form> form", anything else key=value.
    variant_titles: Mapping[tuple[str, str], str] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    search_space: Mapping[str, Any] = field(default_factory=dict)
    # Parameters that make a different ARM of the experiment rather than a tuned value (NIR:
    # flow on/off, exp/nll form, weight convention): recorded as run tags, and a table row per
    # variant. Tuned values (the weight) are not variants: two weights in one grid are two configs
    # that the tables refuse to average, as any two configs of one cell.
    variant_keys: tuple[str, ...] = ()
    # Params added after runs were recorded, with the value that reproduces the old behaviour:
    # at that value they are left out of the resolved config, so old configs keep their hash.
    identity_neutral: Mapping[str, Any] = field(default_factory=dict)

    @property
    def display_title(self) -> str:
        return self.title or self.name.upper()

    def compatible_with(self, method: MethodInfo) -> bool:
        """Whether this regularizer can run on ``method``: it needs no proxies, the method has
        class proxies, or the regularizer brings its own (config.py refuses the other pairs)."""
        return not self.needs_proxies or method.provides_proxies or self.owns_proxies

    def variant_title(self, key: str, value: str) -> str:
        """``("flow", "false")`` -> ``no flow``, ``("form", "nll")`` -> ``nll form``."""
        if (key, value) in self.variant_titles:
            return self.variant_titles[(key, value)]
        if key == "form" and value in self.forms:
            return f"{value} form"
        return f"{key}={value}"


METHODS: Registry[MethodInfo] = Registry("method")
REGULARIZERS: Registry[RegularizerInfo] = Registry("regularizer")


class Method(nn.Module):
    """A DML loss. Subclasses implement ``compute_loss`` and, when they have proxies,
    ``class_proxies``; the harness never reaches into loss internals."""

    def __init__(self, *, num_classes: int, embed_dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embed_dim = embed_dim

    def compute_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.compute_loss(embeddings, labels)

    def class_proxies(self) -> torch.Tensor | None:
        """(num_classes, embed_dim) proxies, un-normalised, differentiable; None without proxies."""
        return None

    def param_groups(self) -> list[dict[str, Any]]:
        """Trainable parameters this loss owns, as optimizer groups with an ``lr_mult`` each.
        Loss-owned parameters never get weight decay (the harness sets that)."""
        return []


class PMLProxyTableMethod(Method):
    """A proxy method wrapping one pytorch-metric-learning loss (``self.loss``) whose class
    proxies are ONE parameter: ``proxies`` (C, D) for ProxyAnchor/ProxyNCA, ``W`` (D, C) for
    NormSoftmax/ArcFace/CosFace. Subclasses set ``proxy_attr`` (and ``proxy_transposed``), build
    ``self.loss`` and ``self.proxy_lr_mult``; loss, accessor and optimizer group come from here, so
    PML's inconsistent attribute names stay in one place."""

    proxy_attr = "proxies"
    proxy_transposed = False  # True when PML stores the table as (embed_dim, num_classes)
    loss: nn.Module
    proxy_lr_mult: float

    def _table(self) -> torch.Tensor:
        return getattr(self.loss, self.proxy_attr)

    def compute_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # PML casts the table's .data to the embeddings' dtype IN PLACE (cast_types); under
        # autocast that would turn the fp32 proxies into half precision for good. Feed the
        # table's dtype instead.
        table = self._table()
        return self.loss(embeddings.to(table.dtype), labels.long())

    def class_proxies(self) -> torch.Tensor:
        table = self._table()
        return table.t() if self.proxy_transposed else table

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": [self._table()], "lr_mult": self.proxy_lr_mult, "name": "proxies"}]


# How a regularizer's weight enters the total: LAMBDA -> method + weight * reg (the paper's
# notation), W_ALIGN -> reg + weight * method (what the NIR code ran).
LAMBDA, W_ALIGN = "lambda", "w_align"
WEIGHT_CONVENTIONS = (LAMBDA, W_ALIGN)


class Regularizer(nn.Module):
    """Extra loss term computed from embeddings, labels and (optionally) class proxies.

    ``forward`` returns the unweighted term; the objective combines it with the method loss by
    ``weight_convention``: ``lambda`` -> method + weight * reg (the paper's notation),
    ``w_align`` -> reg + weight * method (what the NIR code ran). Both are recorded on the run.
    """

    def __init__(
        self, *, num_classes: int, embed_dim: int, weight: float, weight_convention: str
    ) -> None:
        super().__init__()
        if weight_convention not in WEIGHT_CONVENTIONS:
            raise ValueError(
                f"weight_convention {weight_convention!r} must be one of {WEIGHT_CONVENTIONS}"
            )
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.weight = float(weight)
        self.weight_convention = weight_convention

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, proxies: torch.Tensor | None
    ) -> torch.Tensor:
        raise NotImplementedError

    def term(
        self, embeddings: torch.Tensor, labels: torch.Tensor, proxies: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """What the objective calls: the unweighted term (None when this arm has no term, e.g.
        NIR's flow-free control arm) and detached 0-dim diagnostics, logged as
        ``<regularizer>/<name>`` and never part of the loss."""
        return self(embeddings, labels, proxies), {}

    def alignment_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        """A term the regularizer adds to the METHOD side of the objective (NIR's own-proxy
        ProxyAnchor term); None for regularizers without one."""
        return None

    def param_groups(self) -> list[dict[str, Any]]:
        return []
