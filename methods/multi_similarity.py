"""Multi-Similarity loss (Wang et al., CVPR 2019), wrapping pytorch-metric-learning's
``MultiSimilarityLoss`` with its ``MultiSimilarityMiner`` (cosine similarity for both).

When the miner keeps no pair, PML returns ``sum(embeddings * 0)``: a zero that still has a graph.
PML quirk: it also returns that zero when the miner keeps at most ONE positive and ONE negative
pair in the whole batch (``GenericPairLoss``: ``all(len(x) <= 1 ...)``).
"""

from __future__ import annotations

import torch
from pytorch_metric_learning.losses import MultiSimilarityLoss
from pytorch_metric_learning.miners import MultiSimilarityMiner

from nirbench.methods.base import METHODS, Method, MethodInfo


class MultiSimilarity(Method):
    def __init__(
        self,
        *,
        num_classes: int,
        embed_dim: int,
        alpha: float,
        beta: float,
        base: float,
        miner_epsilon: float,
    ) -> None:
        super().__init__(num_classes=num_classes, embed_dim=embed_dim)
        self.loss = MultiSimilarityLoss(alpha=float(alpha), beta=float(beta), base=float(base))
        self.miner = MultiSimilarityMiner(epsilon=float(miner_epsilon))

    def compute_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.long()
        pairs = self.miner(embeddings, labels)
        return self.loss(embeddings, labels, pairs)


METHODS.add(
    "multi_similarity",
    MethodInfo(
        name="multi_similarity",
        title="Multisimilarity",
        table_rank=0,
        cls=MultiSimilarity,
        family="pair",
        provides_proxies=False,
        paper="Wang et al., Multi-Similarity Loss with General Pair Weighting, CVPR 2019",
        defaults={"alpha": 2.0, "beta": 50.0, "base": 0.5, "miner_epsilon": 0.1},
        search_space={
            "alpha": {"type": "float", "low": 0.5, "high": 10.0, "log": True},
            "beta": {"type": "float", "low": 10.0, "high": 100.0, "log": True},
            "base": {"type": "float", "low": 0.0, "high": 1.0, "log": False},
            "miner_epsilon": {"type": "float", "low": 0.0, "high": 0.5, "log": False},
        },
    ),
)
