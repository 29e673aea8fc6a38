"""DML methods and regularizers, one file each, registered on import."""
from methods import multi_similarity, nir, proxy_anchor  # noqa: F401  (register on import)
from methods.base import METHODS, REGULARIZERS, Method, MethodInfo, Regularizer, RegularizerInfo

__all__ = ["METHODS", "REGULARIZERS", "Method", "MethodInfo", "Regularizer", "RegularizerInfo"]
