"""ArcFace (Deng et al., CVPR 2019), wrapping pytorch-metric-learning's ``ArcFaceLoss``.

With theta_{i,c} the angle between x_i and the class weight W_c (both L2-normalised),

  logit_{i,c} = s * cos(theta_{i,c} + m)   for c = y_i  (additive angular margin)
              = s * cos(theta_{i,c})       otherwise
  loss_i = cross_entropy(logit_i, y_i),  averaged over the batch

and, as in the paper's code, the target logit falls back to s * (cos theta - m sin m) when
theta > pi - m, so it keeps decreasing in theta. Defaults: the paper's s = 64, m = 0.5 rad.
``margin`` is in RADIANS here (the paper's m); PML takes degrees, converted below.

The class weights are the proxies: PML stores ``W`` as (embed_dim, C); ``class_proxies()``
returns ``W.t()``. They are drawn from the global torch RNG at construction (PML: ``normal_``),
so the method must be built BEFORE the regularizer for fair arms (see methods/proxy_anchor.py).
"""

from __future__ import annotations

import math

from pytorch_metric_learning.losses import ArcFaceLoss

from nirbench.methods.base import METHODS, MethodInfo, PMLProxyTableMethod


class ArcFace(PMLProxyTableMethod):
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
        if not 0 <= margin < math.pi / 2:
            raise ValueError(
                f"arcface margin is an angle in radians and must be in [0, pi/2), "
                f"got {margin} (the paper uses 0.5)"
            )
        self.proxy_lr_mult = float(proxy_lr_mult)
        self.loss = ArcFaceLoss(
            num_classes, embed_dim, margin=math.degrees(float(margin)), scale=float(scale)
        )


METHODS.add(
    "arcface",
    MethodInfo(
        name="arcface",
        title="ArcFace",
        cls=ArcFace,
        family="proxy",
        provides_proxies=True,
        paper="Deng, Guo, Xue, Zafeiriou, ArcFace: Additive Angular Margin Loss for Deep Face "
        "Recognition, CVPR 2019",
        defaults={"margin": 0.5, "scale": 64.0, "proxy_lr_mult": 100.0},
        search_space={
            "margin": {"type": "float", "low": 0.05, "high": 0.8, "log": False},
            "scale": {"type": "float", "low": 8.0, "high": 128.0, "log": True},
        },
    ),
)
