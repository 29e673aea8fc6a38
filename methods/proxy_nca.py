"""ProxyNCA (Movshovitz-Attias et al., ICCV 2017), wrapping pytorch-metric-learning's
``ProxyNCALoss``.

  loss_i = -log( exp(-s * ||x_i^ - p_{y_i}^||^2) / sum_c exp(-s * ||x_i^ - p_c^||^2) )

with x^, p^ the L2-normalised embedding and proxy (PML's default ``LpDistance(power=2)``
normalises both), averaged over the batch. Two choices to know about:
- PML's denominator runs over ALL proxies, the positive one included (the NCA softmax, as in
  ProxyNCA++ and most re-implementations); the paper's eq. leaves the positive proxy out.
- ``softmax_scale`` s = 9 is the widely used re-implementation's scaling of both embeddings and
  proxies by 3 (||3x^ - 3p^||^2 = 9 ||x^ - p^||^2), i.e. ProxyNCA++'s temperature 1/9. With
  PML's default s = 1 the logits span only [-4, 0] and the loss barely separates classes.

Proxies are drawn from the global torch RNG at construction (PML: ``normal_``), so the method must
be built BEFORE the regularizer for fair arms (see methods/proxy_anchor.py).
"""

from __future__ import annotations

from pytorch_metric_learning.losses import ProxyNCALoss

from nirbench.methods.base import METHODS, MethodInfo, PMLProxyTableMethod


class ProxyNCA(PMLProxyTableMethod):
    def __init__(
        self,
        *,
        num_classes: int,
        embed_dim: int,
        softmax_scale: float,
        proxy_lr_mult: float,
    ) -> None:
        super().__init__(num_classes=num_classes, embed_dim=embed_dim)
        self.proxy_lr_mult = float(proxy_lr_mult)
        self.loss = ProxyNCALoss(num_classes, embed_dim, softmax_scale=float(softmax_scale))


METHODS.add(
    "proxy_nca",
    MethodInfo(
        name="proxy_nca",
        title="ProxyNCA",
        table_rank=2,
        cls=ProxyNCA,
        family="proxy",
        provides_proxies=True,
        paper="Movshovitz-Attias, Toshev, Leung, Ioffe, Singh, No Fuss Distance Metric Learning "
        "using Proxies, ICCV 2017",
        defaults={"softmax_scale": 9.0, "proxy_lr_mult": 100.0},
        search_space={
            "softmax_scale": {"type": "float", "low": 1.0, "high": 32.0, "log": True},
        },
    ),
)
