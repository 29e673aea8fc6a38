"""Triplet loss with semi-hard negative mining (Schroff, Kalenichenko, Philbin, FaceNet,
CVPR 2015), wrapping pytorch-metric-learning's ``TripletMarginLoss`` and
``TripletMarginMiner(type_of_triplets="semihard")``.

As in FaceNet, distances are SQUARED Euclidean distances between L2-normalised embeddings
(``LpDistance(power=2)``) and the margin is alpha = 0.2. The miner keeps, among all in-batch
triplets (a, p, n), the semi-hard ones: the negative is farther than the positive but inside
the margin,

  0 < d(a, n) - d(a, p) <= alpha,

and the loss is the mean over the kept triplets of [d(a, p) - d(a, n) + alpha]_+ (PML's
``AvgNonZeroReducer``: triplets with zero loss are not counted). When no triplet is semi-hard
the loss is PML's ``sum(embeddings * 0)``: zero, with a graph.
"""

from __future__ import annotations

import torch
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.losses import TripletMarginLoss
from pytorch_metric_learning.miners import TripletMarginMiner

from nirbench.methods.base import METHODS, Method, MethodInfo


def squared_euclidean() -> LpDistance:
    """FaceNet's distance: ||f(a)^ - f(b)^||^2 on the unit sphere."""
    return LpDistance(normalize_embeddings=True, p=2, power=2)


class Triplet(Method):
    def __init__(self, *, num_classes: int, embed_dim: int, margin: float) -> None:
        super().__init__(num_classes=num_classes, embed_dim=embed_dim)
        if margin <= 0:
            raise ValueError(
                f"triplet margin must be > 0 (semi-hard mining keeps triplets "
                f"within it), got {margin}"
            )
        # Miner and loss must agree on the distance and the margin, or "semi-hard" means
        # something else to each of them.
        self.miner = TripletMarginMiner(
            margin=float(margin), type_of_triplets="semihard", distance=squared_euclidean()
        )
        self.loss = TripletMarginLoss(margin=float(margin), distance=squared_euclidean())

    def compute_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.long()
        triplets = self.miner(embeddings, labels)
        return self.loss(embeddings, labels, triplets)


METHODS.add(
    "triplet",
    MethodInfo(
        name="triplet",
        title="Triplet",
        cls=Triplet,
        family="pair",
        provides_proxies=False,
        paper="Schroff, Kalenichenko, Philbin, FaceNet: A Unified Embedding for Face Recognition "
        "and Clustering, CVPR 2015",
        defaults={"margin": 0.2},
        search_space={
            "margin": {"type": "float", "low": 0.05, "high": 1.0, "log": True},
        },
    ),
)
