"""DML methods and regularizers, one file each, registered on import."""

from nirbench.methods import (  # noqa: F401  (register on import)
    arcface,
    contrastive,
    cosface,
    margin,
    multi_similarity,
    nir,
    normalized_softmax,
    proxy_anchor,
    proxy_nca,
    soft_triple,
    triplet,
)
from nirbench.methods.base import (
    METHODS,
    REGULARIZERS,
    Method,
    MethodInfo,
    Regularizer,
    RegularizerInfo,
)

__all__ = ["METHODS", "REGULARIZERS", "Method", "MethodInfo", "Regularizer", "RegularizerInfo"]
