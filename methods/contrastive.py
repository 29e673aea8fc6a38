"""Contrastive loss (Hadsell, Chopra, LeCun, CVPR 2006), wrapping pytorch-metric-learning's
``ContrastiveLoss`` on every pair of the batch (no miner, as in the paper).

With d_ij the Euclidean distance between the L2-normalised embeddings (PML's default
``LpDistance``),

  loss = mean_{positive pairs with loss > 0} [d_ij - m_pos]_+
       + mean_{negative pairs with loss > 0} [m_neg - d_ij]_+

(PML's ``AvgNonZeroReducer`` averages each half over its non-zero pairs; both directions (i, j)
and (j, i) of a pair are counted). This is the non-squared hinge used by the DML benchmarks; the
paper squares both terms. Defaults: m_pos = 0 (the paper pulls positives together fully) and
m_neg = 1.0, half of the largest distance (2) between unit vectors.
"""

from __future__ import annotations

import torch
from pytorch_metric_learning.losses import ContrastiveLoss

from nirbench.methods.base import METHODS, Method, MethodInfo


class Contrastive(Method):
    def __init__(
        self,
        *,
        num_classes: int,
        embed_dim: int,
        pos_margin: float,
        neg_margin: float,
    ) -> None:
        super().__init__(num_classes=num_classes, embed_dim=embed_dim)
        if pos_margin >= neg_margin:
            raise ValueError(
                f"contrastive pos_margin ({pos_margin}) must be < neg_margin "
                f"({neg_margin}); otherwise no distance satisfies both"
            )
        self.loss = ContrastiveLoss(pos_margin=float(pos_margin), neg_margin=float(neg_margin))

    def compute_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss(embeddings, labels.long())


METHODS.add(
    "contrastive",
    MethodInfo(
        name="contrastive",
        title="Contrastive",
        cls=Contrastive,
        family="pair",
        provides_proxies=False,
        paper="Hadsell, Chopra, LeCun, Dimensionality Reduction by Learning an Invariant "
        "Mapping, CVPR 2006",
        defaults={"pos_margin": 0.0, "neg_margin": 1.0},
        search_space={
            "pos_margin": {"type": "float", "low": 0.0, "high": 0.5, "log": False},
            "neg_margin": {"type": "float", "low": 0.6, "high": 1.6, "log": False},
        },
    ),
)
