"""Margin loss with distance-weighted sampling (Wu, Manmatha, Smola, Kraehenbuehl, "Sampling
Matters in Deep Embedding Learning", ICCV 2017), wrapping pytorch-metric-learning's
``MarginLoss(learn_beta=True, num_classes=C)`` and ``DistanceWeightedMiner``.

d = Euclidean distance between L2-normalised embeddings (not squared, as in the paper).

Sampling (the miner): each anchor a gets as many triplets as its class has samples in the batch;
for each, a positive p is drawn uniformly from the other samples of its class (with replacement:
PML's simplification of the paper's "every positive pair once") and a negative n with
probability proportional to

  w(d) = d^(2-D) * (1 - d^2/4)^(-(D-3)/2),  d = max(d(a, n), cutoff),  w = 0 if d >= 1.4,

the inverse of the density of pairwise distances of uniform points on the D-dim sphere
(``cutoff`` 0.5 bounds the variance, 1.4 drops negatives that would have zero loss). It draws
from the global torch RNG, which the run's seed fixes.

Loss over the sampled triplets, with beta_c a LEARNED boundary per class (c = the anchor's
class, init 1.2) and margin alpha = 0.2:

  loss = ( sum_triplets [d(a,p) - beta_c + alpha]_+ + [beta_c - d(a,n) + alpha]_+
           + nu * sum_triplets beta_c ) / #(hinge terms > 0)

(nu = 0 by default: no beta regularisation, as in the public re-implementations).

``beta_lr_mult`` 0.5: beta trains at 5e-4 under the harness's default lr 1e-3, the beta learning
rate of the Roth et al. (2020) re-implementation. beta is a loss-owned parameter without weight
decay; it needs no RNG at construction (all ones * beta).
"""

from __future__ import annotations

from typing import Any

import torch
from pytorch_metric_learning.losses import MarginLoss
from pytorch_metric_learning.miners import DistanceWeightedMiner

from nirbench.methods.base import METHODS, Method, MethodInfo


class Margin(Method):
    def __init__(
        self,
        *,
        num_classes: int,
        embed_dim: int,
        margin: float,
        beta: float,
        nu: float,
        beta_lr_mult: float,
        sampler_cutoff: float,
        sampler_nonzero_loss_cutoff: float,
    ) -> None:
        super().__init__(num_classes=num_classes, embed_dim=embed_dim)
        if not 0 < sampler_cutoff < sampler_nonzero_loss_cutoff <= 2:
            raise ValueError(
                f"margin sampler cutoffs must satisfy 0 < sampler_cutoff ({sampler_cutoff}) < "
                f"sampler_nonzero_loss_cutoff ({sampler_nonzero_loss_cutoff}) <= 2 (distances "
                f"between unit vectors lie in [0, 2]); the paper uses 0.5 and 1.4"
            )
        self.beta_lr_mult = float(beta_lr_mult)
        self.miner = DistanceWeightedMiner(
            cutoff=float(sampler_cutoff), nonzero_loss_cutoff=float(sampler_nonzero_loss_cutoff)
        )
        self.loss = MarginLoss(
            margin=float(margin),
            nu=float(nu),
            beta=float(beta),
            learn_beta=True,
            num_classes=num_classes,
        )

    def compute_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.long()
        triplets = self.miner(embeddings, labels)
        # PML casts beta to the embeddings' dtype out of place (c_f.to_device), so unlike the
        # proxy methods nothing here can be cast for good.
        return self.loss(embeddings, labels, triplets)

    def class_betas(self) -> torch.Tensor:
        """(num_classes,) the learned class boundaries beta_c."""
        return self.loss.beta

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": [self.loss.beta], "lr_mult": self.beta_lr_mult, "name": "beta"}]


METHODS.add(
    "margin",
    MethodInfo(
        name="margin",
        title="Margin",
        cls=Margin,
        family="pair",
        provides_proxies=False,
        paper="Wu, Manmatha, Smola, Kraehenbuehl, Sampling Matters in Deep Embedding Learning, "
        "ICCV 2017",
        defaults={
            "margin": 0.2,
            "beta": 1.2,
            "nu": 0.0,
            "beta_lr_mult": 0.5,
            "sampler_cutoff": 0.5,
            "sampler_nonzero_loss_cutoff": 1.4,
        },
        search_space={
            "margin": {"type": "float", "low": 0.05, "high": 0.5, "log": False},
            "beta": {"type": "float", "low": 0.6, "high": 1.6, "log": False},
            "beta_lr_mult": {"type": "float", "low": 0.05, "high": 50.0, "log": True},
        },
    ),
)
