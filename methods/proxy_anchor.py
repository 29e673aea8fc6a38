"""ProxyAnchor (Kim et al., CVPR 2020), wrapping pytorch-metric-learning's ``ProxyAnchorLoss``.

Proxies are drawn from the global torch RNG at construction (PML: kaiming_normal_, fan_out), so the
same seed gives the same proxies with or without NIR as long as the method is built BEFORE the
regularizer (NIR's own construction is RNG-neutral, see methods/nir.py).
"""

from __future__ import annotations

from pytorch_metric_learning.losses import ProxyAnchorLoss

from nirbench.methods.base import METHODS, MethodInfo, PMLProxyTableMethod


class ProxyAnchor(PMLProxyTableMethod):
    def __init__(
        self,
        *,
        num_classes: int,
        embed_dim: int,
        margin: float,
        alpha: float,
        proxy_lr_mult: float,
    ) -> None:
        super().__init__(num_classes=num_classes, embed_dim=embed_dim)
        self.proxy_lr_mult = float(proxy_lr_mult)
        self.loss = ProxyAnchorLoss(
            num_classes, embed_dim, margin=float(margin), alpha=float(alpha)
        )


METHODS.add(
    "proxy_anchor",
    MethodInfo(
        name="proxy_anchor",
        title="ProxyAnchor",
        table_rank=1,
        cls=ProxyAnchor,
        family="proxy",
        provides_proxies=True,
        paper="Kim et al., Proxy Anchor Loss for Deep Metric Learning, CVPR 2020",
        defaults={"margin": 0.1, "alpha": 32.0, "proxy_lr_mult": 100.0},
        search_space={
            "margin": {"type": "float", "low": 0.0, "high": 0.3, "log": False},
            "alpha": {"type": "float", "low": 4.0, "high": 64.0, "log": True},
        },
    ),
)
