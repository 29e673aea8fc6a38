"""Benchmarks behind ``nirbench bench``: ``eval`` (evaluation speed and memory against
pytorch-metric-learning and the bare faiss search), ``step`` (training step time with and without
NIR), ``data`` (the cached input pipeline, uint8 and JPEG caches, against per-sample PIL),
``train`` (end-to-end training images/s against the bare model), ``cache`` (cache size per
dataset at full scale) and ``gpu-check`` (all of the GPU measurements in one JSON). Each prints
one JSON object with ``--json``; the README's Performance section quotes them."""
