"""CosFace / Large Margin Cosine Loss (Wang et al., CVPR 2018), wrapping pytorch-metric-learning's
``CosFaceLoss``.

With cos_{i,c} the cosine between x_i and the class weight W_c,

  logit_{i,c} = s * (cos_{i,c} - m * [c = y_i]),  loss_i = cross_entropy(logit_i, y_i)

averaged over the batch. Defaults: the paper's s = 64, m = 0.35.

The class weights are the proxies: PML stores ``W`` as (embed_dim, C); ``class_proxies()``
returns ``W.t()``. They are drawn from the global torch RNG at construction (PML: ``normal_``),
so the method must be built BEFORE the regularizer for fair arms (see methods/proxy_anchor.py).
"""

from __future__ import annotations

from pytorch_metric_learning.losses import CosFaceLoss

from nirbench.methods.base import METHODS, MethodInfo, PMLProxyTableMethod


class CosFace(PMLProxyTableMethod):
    proxy_attr = "W"
    proxy_transposed = True  # PML: (embed_dim, num_classes)

    def __init__(
        self,
        *,
        num_classes: int,
        embed_dim: int,
        margin: float,
        scale: float,
        proxy_lr_mult: float,
    ) -> None:
        super().__init__(num_classes=num_classes, embed_dim=embed_dim)
        self.proxy_lr_mult = float(proxy_lr_mult)
        self.loss = CosFaceLoss(num_classes, embed_dim, margin=float(margin), scale=float(scale))


METHODS.add(
    "cosface",
    MethodInfo(
        name="cosface",
        title="CosFace",
        cls=CosFace,
        family="proxy",
        provides_proxies=True,
        paper="Wang, Wang, Zhou, Ji, Gong, Zhou, Li, Liu, CosFace: Large Margin Cosine Loss for "
        "Deep Face Recognition, CVPR 2018",
        defaults={"margin": 0.35, "scale": 64.0, "proxy_lr_mult": 100.0},
        search_space={
            "margin": {"type": "float", "low": 0.05, "high": 0.6, "log": False},
            "scale": {"type": "float", "low": 8.0, "high": 128.0, "log": True},
        },
    ),
)
