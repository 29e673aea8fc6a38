"""nirbench: a reproducibility benchmark harness for Deep Metric Learning with and without NIR."""

__version__ = "0.1.0"
