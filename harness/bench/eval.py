"""``nirbench bench eval``: how fast and how lean our exact evaluation is, measured in one process
against what a user would otherwise run.

On synthetic embeddings with class structure (default: the size of the Stanford Online Products
test split, 60,502 samples of 11,316 classes with 2-12 samples each, dim 128) it times

- ours, kNN metrics: ``retrieval_metrics(recall_at=(1,), include=(map@r, r_precision))`` from raw
  embeddings (normalisation included);
- pytorch-metric-learning (PML): ``AccuracyCalculator(include=(precision_at_1, r_precision,
  mean_average_precision_at_r), k="max_bin_count").get_accuracy(x, labels)`` called as a user
  would, with already L2-normalised embeddings (PML's FaissKNN is an IndexFlatL2 on its raw input,
  so normalising is the user's job, and it is not charged to PML);
- the bare faiss search that the same metrics need: IndexFlatIP add + search of every row at the
  depth our pass uses (largest R + 1 for the query itself);
- NMI: ours (``nmi_score``) and PML's (``include=("NMI",)``: faiss k-means, 20 iterations, k =
  number of classes: the same clustering);
- the full suite (recall@1/10/100/1000, MAP@R, R-precision, mAP@1000), which PML cannot give,
  against the bare faiss search at k = 1000 (+1).

Every step is timed with ``time.perf_counter`` around the call only (data generation and a small
warm-up of both libraries are not timed); ``--repeat`` keeps the fastest of R runs. Peak RSS is
the process high-water mark (``ru_maxrss``); per phase it is reset through
/proc/self/clear_refs where the kernel allows it.
"""

from __future__ import annotations

import logging
import os
import platform
import resource
import time
from typing import Any, Callable

import numpy as np

from nirbench.harness.evaluation.metrics import l2_normalize, nmi_score, retrieval_metrics

SOP_TEST = {"n": 60502, "dim": 128, "classes": 11316}
SOP_MAX_CLASS = 12
FULL_RECALL_AT = (1, 10, 100, 1000)


def synthetic_embeddings(
    n: int,
    dim: int,
    classes: int,
    *,
    seed: int = 0,
    noise: float = 1.4,
    max_class: int = SOP_MAX_CLASS,
) -> tuple[np.ndarray, np.ndarray]:
    """Class-structured embeddings: every class gets 2 samples, the rest are spread over classes
    without exceeding ``max_class`` (raised if n needs it), SOP-like. A sample is its class centre
    (a random unit vector) plus isotropic Gaussian noise of total norm about ``noise``. The default
    1.4 gives recall@1 of about 0.77 at SOP size (a good SOP model: about 0.79)."""
    if classes < 1 or n < 2 * classes:
        raise ValueError(
            f"need n >= 2 x classes so every class has 2 samples, got n={n}, classes={classes}"
        )
    rng = np.random.default_rng(seed)
    cap = max(max_class, -(-n // classes))
    extra_slots = np.repeat(np.arange(classes), cap - 2)
    extras = rng.permutation(extra_slots)[: n - 2 * classes]
    labels = rng.permutation(np.concatenate([np.arange(classes), np.arange(classes), extras]))
    centres = rng.standard_normal((classes, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x *= noise / np.sqrt(dim)
    x += centres[labels]
    return x, labels.astype(np.int64)


def run(
    n: int = SOP_TEST["n"],
    dim: int = SOP_TEST["dim"],
    classes: int = SOP_TEST["classes"],
    *,
    seed: int = 0,
    noise: float = 1.4,
    repeat: int = 1,
    threads: int = 0,
    pml: bool = True,
    nmi: bool = True,
    full: bool = True,
    exact: bool = True,
    approximate: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    import faiss
    import torch

    say = progress or (lambda message: None)
    if threads > 0:
        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(threads)
    logging.getLogger("PML").setLevel(logging.WARNING)  # PML logs every k-nn call at INFO

    x, labels = synthetic_embeddings(n, dim, classes, seed=seed, noise=noise)
    xn = l2_normalize(x)  # what PML and the bare search get
    max_class = int(np.bincount(labels).max())
    k_needed = min(max(1, max_class - 1), n - 1)  # our pass for recall@1 + map@r + r_precision
    _warm_up(xn, labels)
    out: dict[str, Any] = {
        "n": n,
        "dim": dim,
        "classes": classes,
        "max_class_size": max_class,
        "seed": seed,
        "noise": noise,
        "repeat": repeat,
        "load_average_before": _load_average(),
    }
    from nirbench.harness.evaluation.clustering import select_kmeans_engine
    from nirbench.harness.evaluation.knn import select_engine

    out["knn_engine"] = select_engine("auto", k=k_needed)
    out["kmeans_engine"] = select_kmeans_engine("auto")
    bare = "faiss-gpu" if out["knn_engine"] == "faiss-gpu" else "faiss-cpu"
    out["bare_search_engine"] = bare

    out.update(dict.fromkeys(("ours_knn_s", "knn_s", "ratio_vs_knn", "ours_knn_peak_rss_mb")))
    if exact:
        say(f"ours: recall@1, r_precision, map@r (k = {k_needed})")
        out["ours_knn_s"], ours, out["ours_knn_peak_rss_mb"] = _timed(
            lambda: retrieval_metrics(x, labels, (1,), include=("map@r", "r_precision")), repeat
        )
        out.update({f"ours/{key}": value for key, value in ours.items()})

        say(f"bare faiss search (k = {k_needed} + 1)")
        out["knn_s"], _, _ = _timed(lambda: _bare_search(xn, k_needed + 1, bare), repeat)
        out["ratio_vs_knn"] = out["ours_knn_s"] / out["knn_s"]

    out.update(
        dict.fromkeys(("pml_knn_s", "ratio_knn_vs_pml", "max_abs_diff", "pml_knn_peak_rss_mb"))
    )
    if pml and exact:
        say("pytorch-metric-learning AccuracyCalculator (k = max_bin_count)")
        out["pml_knn_s"], theirs, out["pml_knn_peak_rss_mb"] = _timed(
            lambda: _pml_knn(xn, labels), repeat
        )
        out.update({f"pml/{key}": float(value) for key, value in theirs.items()})
        out["ratio_knn_vs_pml"] = out["pml_knn_s"] / out["ours_knn_s"]
        out["max_abs_diff"] = max(
            abs(ours["recall@1"] - theirs["precision_at_1"]),
            abs(ours["r_precision"] - theirs["r_precision"]),
            abs(ours["map@r"] - theirs["mean_average_precision_at_r"]),
        )

    out.update(
        dict.fromkeys(("ours_nmi_s", "pml_nmi_s", "ratio_nmi_vs_pml", "ours/nmi", "pml/nmi"))
    )
    if nmi:
        say(f"ours: NMI (k-means, {classes} clusters)")
        out["ours_nmi_s"], out["ours/nmi"], out["ours_nmi_peak_rss_mb"] = _timed(
            lambda: nmi_score(x, labels, seed=seed), repeat
        )
        if pml:
            say("pytorch-metric-learning NMI")
            out["pml_nmi_s"], theirs, out["pml_nmi_peak_rss_mb"] = _timed(
                lambda: _pml_nmi(xn, labels), repeat
            )
            out["pml/nmi"] = float(theirs["NMI"])
            out["ratio_nmi_vs_pml"] = out["pml_nmi_s"] / out["ours_nmi_s"]

    out.update(dict.fromkeys(("full_suite_s", "knn_k1000_s", "ratio_full_vs_knn_k1000")))
    if full and exact:
        k_full = min(max(1000, max_class - 1), n - 1)
        say(
            f"ours: full suite (recall@{','.join(map(str, FULL_RECALL_AT))}, map@r, r_precision, "
            f"map@1000; k = {k_full})"
        )
        recall_at = tuple(k for k in FULL_RECALL_AT if k <= n - 1)
        out["full_suite_s"], suite, out["full_suite_peak_rss_mb"] = _timed(
            lambda: retrieval_metrics(x, labels, recall_at), repeat
        )
        out.update({f"full/{key}": value for key, value in suite.items()})
        say(f"bare faiss search (k = {k_full} + 1)")
        out["knn_k1000_s"], _, _ = _timed(lambda: _bare_search(xn, k_full + 1, bare), repeat)
        out["ratio_full_vs_knn_k1000"] = out["full_suite_s"] / out["knn_k1000_s"]

    if approximate:
        say(f"approximate ({approximate}) full suite")
        recall_at = tuple(k for k in FULL_RECALL_AT if k <= n - 1)
        out["approx_suite_s"], approx, out["approx_suite_peak_rss_mb"] = _timed(
            lambda: retrieval_metrics(x, labels, recall_at, approximate=approximate, seed=seed), 1
        )
        out.update({f"approx_suite/{key}": value for key, value in approx.items()})
        out["approx_method"] = approximate

    # peak_rss_mb: the process' high-water mark while OUR evaluation ran (data and libraries
    # included). Where the kernel cannot reset the mark per phase, the whole process' peak.
    ours_peaks = [
        out.get(key)
        for key in (
            "ours_knn_peak_rss_mb",
            "ours_nmi_peak_rss_mb",
            "full_suite_peak_rss_mb",
            "approx_suite_peak_rss_mb",
        )
    ]
    ours_peaks = [p for p in ours_peaks if p is not None]
    whole = max([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, *_PEAKS])
    out["peak_rss_mb"] = max(ours_peaks) if ours_peaks else whole
    out["peak_rss_scope"] = "ours" if ours_peaks else "process"
    out["process_peak_rss_mb"] = whole
    out["load_average_after"] = _load_average()  # other work on the machine skews every timing
    out["machine"] = machine_description()
    out["threads"] = {"torch": torch.get_num_threads(), "faiss": faiss.omp_get_max_threads()}
    return out


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _bare_search(xn: np.ndarray, k: int, engine: str = "faiss-cpu") -> None:
    """The bare exact search, on the GPU when our pass runs there too (``knn_engine``
    faiss-gpu): a GPU pass against a CPU search would flatter nothing but the hardware."""
    import faiss

    index = faiss.IndexFlatIP(xn.shape[1])
    if engine == "faiss-gpu":
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    index.add(xn)
    index.search(xn, min(k, len(xn)))


def _pml_knn(xn: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    import torch
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    calculator = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"), k="max_bin_count"
    )
    return calculator.get_accuracy(torch.from_numpy(xn), torch.from_numpy(labels))


def _pml_nmi(xn: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    import torch
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    return AccuracyCalculator(include=("NMI",)).get_accuracy(
        torch.from_numpy(xn), torch.from_numpy(labels)
    )


def _warm_up(xn: np.ndarray, labels: np.ndarray) -> None:
    """Start thread pools and BLAS once for every library (not timed)."""
    m = min(len(xn), 2000)
    small, small_labels = xn[:m], labels[:m]
    if np.bincount(small_labels).max() > 1:
        retrieval_metrics(small, small_labels, (1,), include=("map@r",))
    _bare_search(small, 5)
    import torch

    torch.from_numpy(small) @ torch.from_numpy(small).T


_PEAKS: list[float] = []  # every phase's peak (a reset also resets ru_maxrss)


def _timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any, float | None]:
    """(fastest wall time of ``repeat`` calls, last result, peak RSS in MB during the calls)."""
    best, result = float("inf"), None
    before = _peak_rss_mb()
    if before is not None:
        _PEAKS.append(before)
    reset = _reset_peak_rss()
    for _ in range(max(1, repeat)):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    peak = _peak_rss_mb() if reset else None
    if peak is not None:
        _PEAKS.append(peak)
    return best, result, peak


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (Linux >= 4.0)
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = ""
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages * page_size / 2**30:.0f} GiB RAM"
    except (ValueError, OSError):
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} CPUs{memory}, {gpu}"
