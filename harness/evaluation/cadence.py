"""Which epochs of a run are evaluated on the test split, and with which metrics.

One place for the cadence, because two parts must agree on it: the engine, which evaluates, and
the "still rising" rule (harness/results/convergence.py), which fits a slope to the evaluations in
the last ``RISE_WINDOW`` of a run's epochs.

* ``eval.every: N``: every N-th epoch, and always the last, so the final numbers never depend on
  the cadence.
* ``eval.dense_tail: true``: also every epoch of the rule's window. Its slope then rests on every
  epoch there, not on two evaluations: one run's test R@1 moves by about half a point from one
  epoch to the next, so a two-point slope over a short window mostly measures that noise.
* ``eval.full_every: N``: of the evaluated epochs, every N-th and the last get every metric (the
  kNN pass 1000 deep for mAP@1000, NMI, the structure metrics); 0 = the last only. The others get
  the curve metrics (Recall@k, MAP@R, R-Precision), which the curves and the rule read.
"""

from __future__ import annotations

import math
from typing import Any

RISE_WINDOW = 0.2  # the "still rising" rule looks at the last 20% of a run's epochs


def rise_window_start(epochs: int) -> int:
    """The first epoch (1-based, ``epochs - ceil(0.2 epochs)``) of the rule's window, which spans
    ``ceil(0.2 epochs)`` epochs up to the last."""
    return epochs - max(1, math.ceil(RISE_WINDOW * epochs))


def is_eval_epoch(epoch: int, cfg: Any) -> bool:
    """Whether finished epoch ``epoch`` (1-based) of a run of ``cfg`` is evaluated."""
    last = cfg.train.epochs
    return (
        epoch % cfg.eval.every == 0
        or epoch == last
        or (cfg.eval.dense_tail and epoch >= rise_window_start(last))
    )


def is_full_eval_epoch(epoch: int, cfg: Any) -> bool:
    """Whether evaluated epoch ``epoch`` gets every metric, not only the curve metrics."""
    every = cfg.eval.full_every
    return epoch == cfg.train.epochs or (
        every > 0 and epoch % every == 0 and is_eval_epoch(epoch, cfg)
    )
