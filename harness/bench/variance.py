"""``nirbench bench variance``: where the spread of a paired comparison's Δ R@1 comes from.

A verdict needs a 95% CI half-width on Δ (arm minus reference, paired by seed) no wider than the
margin δ, so the seeds needed grow with var(Δ). This splits var(Δ) over the finished runs of a
results folder into the parts a protocol change could cut:

* ``seed``: the paired std of Δ over seeds, everything the training seed moves at once (initial
  head/proxies/flow, batch order, augmentation) on the fixed test set. This is what the verdict's
  interval is built from.
* ``evaluation_set``: the part of it that comes from which test classes the dataset drew. Each
  pair's final checkpoints are embedded again; every test query is scored right/wrong at R@1 by
  both arms, and the test classes are resampled with replacement (a class-cluster bootstrap, the
  gallery held fixed). Its std of Δ is what a test set of other classes of the same size would move
  Δ by; it shrinks with 1/sqrt(test classes). A share near 1 says "make the test split larger";
  near 0, "more seeds or less chaotic training".
* ``training``: sqrt(seed^2 - evaluation_set^2), what remains: the optimisation's own spread.
* ``data_order``: with ``--order-results DIR``, a folder of the same runs trained with another data
  seed (``train.data_seed``: batches and augmentation drawn from another stream, initial weights
  unchanged): the std of Δ over that pairing's order change.
* ``numerics``: with ``--numerics-results DIR``, a folder of the same runs under other CPU numerics
  (``nirbench bench robustness``): the std of the per-seed change of Δ, i.e. how far another
  machine moves one comparison.

Per source the JSON gives the std (R@1 points), its share of var(seed), and the seeds needed for a
95% half-width <= ``margin`` if only that source were left. Nothing here trains by default: it
reads runs and checkpoints an ordinary grid wrote (run the grid first).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

HEADLINE = "recall@1"


def seeds_needed(sd: float, margin: float) -> int | None:
    """The verdicts' own rule (harness/results/stats.py): smallest n >= 2 with
    t(0.975, n-1) * sd / sqrt(n) <= margin; None where it is undefined (NaN sd)."""
    from nirbench.harness.results.stats import seeds_needed as rule

    n = rule(sd, margin)
    return int(n) if math.isfinite(n) else None


def per_query_correct(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1 where the query's nearest other sample (cosine) has its class, else 0: R@1 per query."""
    from nirbench.harness.evaluation.knn import knn
    from nirbench.harness.evaluation.metrics import l2_normalize

    _, idx = knn(l2_normalize(np.ascontiguousarray(embeddings, dtype=np.float32)), 1)
    return (labels[idx[:, 0]] == labels).astype(np.float64)


def class_bootstrap(
    diffs: np.ndarray, labels: np.ndarray, resamples: int, seed: int = 0
) -> dict[str, float]:
    """Class-cluster bootstrap of Δ for every seed at once. ``diffs`` (seeds, queries): per-query
    arm-minus-reference correctness of each seed's pair on the one test set with ``labels``.
    Every resample draws test classes with replacement (each with all its queries), the SAME draw
    for every seed, so the replicates' covariance splits the test set's part of Δ into

    * ``interaction_var``: what differs from seed to seed (which queries each seed's pair happens
      to get right): part of the seed spread on a fixed test set, shrinking with more test
      classes;
    * ``shared_var``: what every seed shares (this draw of test classes favours one arm): an
      offset common to all seeds, invisible in the seed spread and outside its interval; another
      draw of the test split would move every Δ by it.

    Values in squared units of ``diffs`` (per-query 0/1 differences: fractions)."""
    classes, codes = np.unique(labels, return_inverse=True)
    sums = np.stack([np.bincount(codes, weights=d, minlength=len(classes)) for d in diffs])
    counts = np.bincount(codes, minlength=len(classes)).astype(np.float64)
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(
        len(classes), np.full(len(classes), 1 / len(classes)), size=resamples
    ).astype(np.float64)
    replicates = (weights @ sums.T) / (weights @ counts)[:, None]  # (resamples, seeds)
    cov = np.atleast_2d(np.cov(replicates, rowvar=False))
    per_seed = float(np.mean(np.diag(cov)))
    n = len(diffs)
    shared = float((cov.sum() - np.trace(cov)) / (n * (n - 1))) if n > 1 else float("nan")
    return {
        "per_seed_var": per_seed,
        "shared_var": shared,
        "interaction_var": max(per_seed - shared, 0.0),
    }


class _Runs:
    """The finished runs of one results folder, keyed by (dataset, method, arm, seed)."""

    def __init__(self, results: Path, grid: str | None) -> None:
        from nirbench.harness.tracking.store import Tracker

        self.results = Path(results)
        self.tracker = Tracker(self.results)
        flt = f"tags.grid = '{grid}'" if grid else ""
        self.by_key: dict[tuple[str, str, str, int], Any] = {}
        for run in self.tracker.runs(flt, statuses=("FINISHED",)):
            t = run.tags
            if "superseded_by" in t or "seed" not in t:
                continue
            arm = t.get("arm") or t.get("regularizer") or "none"
            key = (t.get("dataset", ""), t.get("method", ""), arm, int(t["seed"]))
            self.by_key.setdefault(key, run)

    def r1(self, key: tuple[str, str, str, int]) -> float | None:
        run = self.by_key.get(key)
        if run is None:
            return None
        from nirbench.harness.tracking.store import mlflow_key

        value = run.metrics.get(mlflow_key(f"test/{HEADLINE}"))
        return None if value is None else 100.0 * float(value)

    def checkpoint(self, key: tuple[str, str, str, int]) -> Path:
        from urllib.parse import unquote, urlparse

        run = self.by_key[key]
        uri = self.tracker.client.get_run(run.run_id).info.artifact_uri
        path = Path(unquote(urlparse(uri).path)) / "checkpoint" / "checkpoint.pt"
        if not path.is_file():
            raise FileNotFoundError(
                f"run {run.run_id} ({key}) has no checkpoint artifact at "
                f"{path}: the evaluation-set part needs each run's final "
                f"checkpoint (grids keep it; pass --no-eval-set to skip)"
            )
        return path


def _final_embeddings(
    checkpoint: Path, results: Path, bundles: dict
) -> tuple[np.ndarray, np.ndarray]:
    import torch

    from nirbench.harness.config import build_config
    from nirbench.harness.data import load_dataset
    from nirbench.harness.train.engine import build_trainer, embed
    from nirbench.harness.train.runner import pretrained_weights

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    cfg = build_config(state["config"])
    name = cfg.dataset.name
    if name not in bundles:
        bundles[name] = load_dataset(name, cfg.dataset.root, results / "cache" / "data")
    bundle = bundles[name]
    trainer = build_trainer(cfg, bundle, torch.device("cpu"), pretrained_weights(cfg, results))
    trainer.load_state_dict(state)
    x = embed(
        trainer.model,
        bundle.test,
        trainer.device,
        cfg.eval.batch_size,
        cfg.train.precision,
        cfg.train.channels_last,
    )
    return x, bundle.test.labels.numpy()


def _source(sd: float | None, total: float | None, margin: float) -> dict[str, Any]:
    if sd is None or not math.isfinite(sd):
        return {"sd": None, "share_of_seed_var": None, "seeds_needed_alone": None}
    share = (sd * sd / (total * total)) if total else None
    return {"sd": sd, "share_of_seed_var": share, "seeds_needed_alone": seeds_needed(sd, margin)}


def _other_deltas(
    other: _Runs | None, dataset: str, method: str, reference: str, arm: str, seeds: list[int]
) -> dict[int, float]:
    if other is None:
        return {}
    out = {}
    for s in seeds:
        a, b = other.r1((dataset, method, reference, s)), other.r1((dataset, method, arm, s))
        if a is not None and b is not None:
            out[s] = b - a
    return out


def run(
    results: Path,
    *,
    grid: str | None = None,
    datasets: list[str] | None = None,
    method: str = "proxy_anchor",
    reference: str = "none",
    arm: str = "nir",
    margin: float = 1.0,
    resamples: int = 2000,
    eval_set: bool = True,
    numerics_results: Path | None = None,
    order_results: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    runs = _Runs(results, grid)
    numerics = _Runs(numerics_results, grid) if numerics_results else None
    order = _Runs(order_results, None) if order_results else None
    found = sorted({k[0] for k in runs.by_key if k[1] == method})
    out: dict[str, Any] = {
        "results": str(results),
        "grid": grid,
        "method": method,
        "reference": reference,
        "arm": arm,
        "metric": HEADLINE,
        "margin": margin,
        "resamples": resamples,
        "datasets": {},
    }
    bundles: dict = {}
    for dataset in datasets or found:
        seeds = sorted(
            s
            for (d, m, a, s) in runs.by_key
            if d == dataset and m == method and a == arm and (d, m, reference, s) in runs.by_key
        )
        if len(seeds) < 2:
            out["datasets"][dataset] = {
                "pairs": len(seeds),
                "error": "fewer than 2 seed pairs finished",
            }
            continue
        ref = np.array([runs.r1((dataset, method, reference, s)) for s in seeds])
        alt = np.array([runs.r1((dataset, method, arm, s)) for s in seeds])
        delta = alt - ref
        sd_seed = float(np.std(delta, ddof=1))
        entry: dict[str, Any] = {
            "pairs": len(seeds),
            "seeds": seeds,
            "reference_mean": float(ref.mean()),
            "reference_sd": float(np.std(ref, ddof=1)),
            "arm_mean": float(alt.mean()),
            "arm_sd": float(np.std(alt, ddof=1)),
            "delta": delta.tolist(),
            "delta_mean": float(delta.mean()),
            "seeds_needed": seeds_needed(sd_seed, margin),
            "sources": {"seed": _source(sd_seed, sd_seed, margin)},
        }
        if eval_set:
            diffs, reproduced, y = [], [], None
            for s in seeds:
                if progress:
                    progress(f"{dataset} seed {s}: embedding both arms' final checkpoints")
                correct = {}
                for a in (reference, arm):
                    key = (dataset, method, a, s)
                    x, y = _final_embeddings(runs.checkpoint(key), runs.results, bundles)
                    correct[a] = per_query_correct(x, y)
                    reproduced.append(abs(100 * correct[a].mean() - runs.r1(key)))
                diffs.append(correct[arm] - correct[reference])
            boot = class_bootstrap(np.stack(diffs), y, resamples)
            sd_eval = 100 * math.sqrt(boot["interaction_var"])
            entry["test_queries"], entry["test_classes"] = len(y), len(np.unique(y))
            entry["r1_reproduced_max_abs_pp"] = float(max(reproduced))
            entry["sources"]["evaluation_set"] = _source(sd_eval, sd_seed, margin)
            rest = math.sqrt(max(sd_seed**2 - sd_eval**2, 0.0))
            entry["sources"]["training"] = _source(rest, sd_seed, margin)
            # Not part of the seed spread: the offset this draw of test classes gives every seed.
            entry["test_split_offset_sd"] = 100 * math.sqrt(max(boot["shared_var"], 0.0))
            entry["seeds_needed_with_test_classes_x4"] = seeds_needed(
                math.sqrt(rest**2 + sd_eval**2 / 4), margin
            )
        for name, other in (("numerics", numerics), ("data_order", order)):
            moved = _other_deltas(other, dataset, method, reference, arm, seeds)
            if other is None:
                continue
            common = [s for s in seeds if s in moved]
            if len(common) < 2:
                entry["sources"][name] = {"sd": None, "error": "fewer than 2 matching pairs"}
                continue
            change = np.array([moved[s] for s in common]) - delta[[seeds.index(s) for s in common]]
            # Two independent draws of the source per seed: the change has twice its variance.
            entry["sources"][name] = {
                **_source(float(np.std(change, ddof=1) / math.sqrt(2)), sd_seed, margin),
                "pairs": len(common),
                "delta_change": change.tolist(),
            }
        out["datasets"][dataset] = entry
    return out
