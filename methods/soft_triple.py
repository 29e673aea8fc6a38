"""SoftTriple loss (Qian et al., ICCV 2019), wrapping pytorch-metric-learning's
``SoftTripleLoss``; the paper's tau term (PML's ``SparseCentersRegularizer``) is computed here,
class by class, because PML's builds two (C*K)^2 masks and a (C*K)^2 similarity matrix: 10^8
entries per step on synth-sop (minutes per epoch on a CPU), 1.3 * 10^10 on the real SOP (13 GB
per mask, it cannot even be built). Same formula, same value (tests/test_zoo_losses.py).

Each class c has K centres w_c^k. With x^ and w^ L2-normalised (cosine similarity),

  S_{i,c} = sum_k softmax_k(gamma_inv * x_i^.w_c^k) * x_i^.w_c^k     (soft max over the K centres)
  loss_i  = cross_entropy( la * (S_{i,:} - delta * onehot(y_i)), y_i ),  averaged over the batch
  + tau * sum_c sum_{k<l} sqrt(2 + eps - 2 w_c^k^.w_c^l^) / (C K (K-1))   (merges redundant centres)

Defaults are the paper's CUB/Cars values: la 20, gamma 0.1 (PML takes gamma and divides by it),
delta (margin) 0.01, K = 10, tau (center_reg_weight) 0.2; the paper's centres train at 100x the
backbone lr (0.01 vs 1e-4): proxy_lr_mult 100.

Centre layout: PML keeps ``fc`` as (embed_dim, C*K) and reads its logits with
``view(-1, C, K)``, so class c owns the contiguous columns c*K .. c*K + K-1.

``class_proxies()`` (what conditions NIR's flow) returns ONE (C, D) tensor: for each class the
L2-normalised mean of its K L2-normalised centres. It stays differentiable w.r.t. ``fc``, so NIR's
gradient reaches every centre of the class. The normalisation before the mean keeps a centre
with a large norm from dominating the direction; NIR normalises the result again anyway.

Centres are drawn from the global torch RNG at construction (PML: kaiming_uniform_, a=sqrt(5)),
so the method must be built BEFORE the regularizer for fair arms (see methods/proxy_anchor.py).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pytorch_metric_learning.losses import SoftTripleLoss

from nirbench.methods.base import METHODS, Method, MethodInfo


class SoftTriple(Method):
    def __init__(
        self,
        *,
        num_classes: int,
        embed_dim: int,
        centers_per_class: int,
        la: float,
        gamma: float,
        margin: float,
        center_reg_weight: float,
        proxy_lr_mult: float,
    ) -> None:
        super().__init__(num_classes=num_classes, embed_dim=embed_dim)
        if centers_per_class < 1:
            raise ValueError(f"soft_triple centers_per_class must be >= 1, got {centers_per_class}")
        if center_reg_weight < 0:
            raise ValueError(
                f"soft_triple center_reg_weight must be >= 0 (0 = off), got {center_reg_weight}"
            )
        self.centers_per_class = int(centers_per_class)
        self.proxy_lr_mult = float(proxy_lr_mult)
        # The centre regularizer compares centres of one class: meaningless with a single
        # centre, so K = 1 or tau = 0 switch it off.
        self.center_reg_weight = float(center_reg_weight) if centers_per_class > 1 else 0.0
        self.loss = SoftTripleLoss(
            num_classes,
            embed_dim,
            centers_per_class=self.centers_per_class,
            la=float(la),
            gamma=float(gamma),
            margin=float(margin),
        )

    def compute_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # PML casts ``fc.data`` to the embeddings' dtype in place (cast_types): feed its dtype.
        centers = self.loss.fc
        loss = self.loss(embeddings.to(centers.dtype), labels.long())
        if self.center_reg_weight > 0:
            loss = loss + self.center_reg_weight * self.center_regularizer()
        return loss

    def center_regularizer(self) -> torch.Tensor:
        """sum_c sum_{k<l} sqrt(2 + eps - 2 w_c^k^.w_c^l^) / (C K (K-1)), as PML's
        SparseCentersRegularizer (cosine similarity clamped at 1, eps = the dtype's tiny), from
        C small K x K blocks instead of one (C*K)^2 matrix."""
        w = F.normalize(self.class_centers(), dim=-1)  # (C, K, D)
        k = self.centers_per_class
        upper = torch.triu_indices(k, k, offset=1, device=w.device)
        sim = (w @ w.transpose(1, 2))[:, upper[0], upper[1]]  # (C, K(K-1)/2)
        tiny = torch.finfo(w.dtype).tiny
        reg = torch.sqrt(2.0 + tiny - torch.clamp(2.0 * sim, max=2.0))
        return reg.sum() / (self.num_classes * k * (k - 1))

    def class_centers(self) -> torch.Tensor:
        """(num_classes, K, embed_dim): class c's K centres, in PML's column order."""
        return self.loss.fc.t().reshape(self.num_classes, self.centers_per_class, self.embed_dim)

    def class_proxies(self) -> torch.Tensor:
        """(num_classes, embed_dim): the L2-normalised mean of each class's normalised centres."""
        return F.normalize(F.normalize(self.class_centers(), dim=-1).mean(dim=1), dim=-1)

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": [self.loss.fc], "lr_mult": self.proxy_lr_mult, "name": "proxies"}]


METHODS.add(
    "soft_triple",
    MethodInfo(
        name="soft_triple",
        title="SoftTriplet",
        table_rank=3,
        cls=SoftTriple,
        family="proxy",
        provides_proxies=True,
        paper="Qian, Shang, Sun, Hu, Li, Jin, SoftTriple Loss: Deep Metric Learning Without "
        "Triplet Sampling, ICCV 2019",
        defaults={
            "centers_per_class": 10,
            "la": 20.0,
            "gamma": 0.1,
            "margin": 0.01,
            "center_reg_weight": 0.2,
            "proxy_lr_mult": 100.0,
        },
        search_space={
            "la": {"type": "float", "low": 5.0, "high": 50.0, "log": True},
            "gamma": {"type": "float", "low": 0.01, "high": 0.5, "log": True},
            "margin": {"type": "float", "low": 0.0, "high": 0.3, "log": False},
        },
    ),
)
