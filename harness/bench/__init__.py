"""Benchmarks behind ``nirbench bench``: ``eval`` (evaluation speed and memory against
pytorch-metric-learning and the bare faiss search) and ``step`` (training step time with and
without NIR). Each prints one JSON object with ``--json``; the README's Performance section quotes
them."""
