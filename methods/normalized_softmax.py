"""Normalized Softmax (Zhai & Wu, BMVC 2019), wrapping pytorch-metric-learning's
``NormalizedSoftmaxLoss``.

  loss_i = cross_entropy( x_i^ . W^ / T, y_i ),  averaged over the batch

with x^ and the class weight columns W^ L2-normalised (a cosine softmax), temperature T = 0.05
as in the paper. The class weights are the proxies: PML stores ``W`` as (embed_dim, C);
``class_proxies()`` returns ``W.t()`` (C, embed_dim).

Weights are drawn from the global torch RNG at construction (PML: ``normal_``), so the method must
be built BEFORE the regularizer for fair arms (see methods/proxy_anchor.py).
"""

from __future__ import annotations

from pytorch_metric_learning.losses import NormalizedSoftmaxLoss

from nirbench.methods.base import METHODS, MethodInfo, PMLProxyTableMethod


class NormalizedSoftmax(PMLProxyTableMethod):
    proxy_attr = "W"
    proxy_transposed = True  # PML: (embed_dim, num_classes)

    def __init__(
        self,
        *,
        num_classes: int,
        embed_dim: int,
        temperature: float,
        proxy_lr_mult: float,
    ) -> None:
        super().__init__(num_classes=num_classes, embed_dim=embed_dim)
        if temperature <= 0:
            raise ValueError(f"normalized_softmax temperature must be > 0, got {temperature}")
        self.proxy_lr_mult = float(proxy_lr_mult)
        self.loss = NormalizedSoftmaxLoss(num_classes, embed_dim, temperature=float(temperature))


METHODS.add(
    "normalized_softmax",
    MethodInfo(
        name="normalized_softmax",
        title="NormSoftmax",
        cls=NormalizedSoftmax,
        family="proxy",
        provides_proxies=True,
        paper="Zhai, Wu, Classification is a Strong Baseline for Deep Metric Learning, BMVC 2019",
        defaults={"temperature": 0.05, "proxy_lr_mult": 100.0},
        search_space={
            "temperature": {"type": "float", "low": 0.01, "high": 0.5, "log": True},
        },
    ),
)
