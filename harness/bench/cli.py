"""``nirbench bench {eval,step,data}``: argument parsing and printing only; the work is in
harness.bench.eval, harness.bench.step and harness.bench.data."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

BENCH_DESCRIPTION = """\
Measure instead of claim. Users' top complaint about DML tooling is evaluation that runs out of
memory or takes forever on Stanford Online Products; 'bench eval' measures ours against
pytorch-metric-learning and the bare faiss search on SOP-sized embeddings, 'bench step' measures
what NIR adds to a training step, 'bench data' measures the cached image pipeline against the
classic per-sample one. Each prints one JSON object with --json (the README's Performance section
quotes them).
"""

EVAL_DESCRIPTION = """\
Time the evaluation on synthetic embeddings with class structure (default: the size of the SOP
test split, 60,502 samples, 11,316 classes of 2-12 samples, dim 128), all in one process:
  ours_knn_s      our recall@1, r_precision, map@r (one exact kNN pass, normalisation included)
  pml_knn_s       pytorch-metric-learning's AccuracyCalculator for precision_at_1, r_precision,
                  mean_average_precision_at_r with k="max_bin_count", on L2-normalised input
  knn_s           the bare faiss IndexFlatIP search those metrics need (same depth as our pass)
  ours_nmi_s, pml_nmi_s   NMI: our k-means vs PML's (faiss, 20 iterations, k = classes)
  full_suite_s    recall@1/10/100/1000 + map@r + r_precision + map@1000 (PML cannot give these)
  knn_k1000_s     the bare faiss search at k = 1000 (+1)
plus the ratios ratio_knn_vs_pml (PML time / ours), ratio_nmi_vs_pml, ratio_vs_knn (ours / bare
search), ratio_full_vs_knn_k1000, max_abs_diff (our metrics vs PML's), peak_rss_mb (the
process' resident-memory peak while OUR evaluation ran, data and libraries included; per phase:
*_peak_rss_mb) and load_average_before/after (other work on the machine skews every timing).
Why: so that the speed and memory claims are reproducible numbers on your machine.
"""

STEP_DESCRIPTION = """\
Time one training step (forward, loss, backward, optimizer step) of proxy_anchor without and with
NIR on the same backbone and batch: ResNet50, batch 90 at 224 px on a GPU (the paper's setting);
small_cnn, batch 64 at 32 px on a CPU. Prints step_s_baseline, step_s_nir,
ratio_nir_vs_baseline, device, backbone, batch and gpu_measured.
Why: NIR's price is a normalising flow on every batch; this says what that costs in wall time.
"""

DATA_DESCRIPTION = """\
Time the training input pipeline, images per second, both in this process with the same number of
workers W and batch size:
  reference_ips   torchvision ImageFolder-style: per-sample PIL decode + RandomResizedCrop(224) +
                  RandomHorizontalFlip + ToTensor + Normalize, DataLoader with W worker processes
  ours_ips        the memory-mapped uint8 cache (every image decoded once, shorter side 256) with
                  batched RandomResizedCrop(224) + flip + ImageNet normalisation on the training
                  device (CachedImageSplit.train_batch) in this process, torch limited to W
                  threads (its per-image CPU loop runs on one)
  ratio           ours_ips / reference_ips
  jpeg_ips, jpeg_ratio   the same with the compact JPEG cache (decoded per batch; --caches)
plus jpeg_cache_mb, jpeg_size_ratio (uint8 bytes / JPEG bytes), jpeg_mean_abs_diff (grey levels
against the uint8 cache), cache_build_s (decoding every image once, W processes; not part of
either rate), images, workers, batch, device and the per-round rates. --root: any folder of
images (searched recursively, e.g. CUB_200_2011/images); without it a temporary folder of 400
CUB-like JPEGs (500x375, quality 90) is generated.
Why: data loading, not the GPU, is what limits DML training on small machines; this says how much
the cache buys on yours.
"""


CACHE_DESCRIPTION = """\
Measure the disk the image caches take at the real datasets' scale: generate a sample of each
dataset's kind of photograph (CUB and Cars196 scenes, SOP product shots on white; realistic sizes
and aspect ratios), build the uint8 cache (the default: decoded pixels, shorter side 256) and the
compact JPEG cache (dataset.cache=jpeg) of it, and extrapolate bytes per image to the official
image count. Per dataset: uint8_bytes_per_image (checked against the exact formula 3 x h x w after
the resize: uint8_formula_bytes), jpeg_bytes_per_image, jpeg_size_ratio, mean_aspect, uint8_gb,
jpeg_gb, source_gb (the JPEG files themselves), build seconds per image.
Why: the uint8 cache of SOP needs tens of GB; know it before the first hour on a GPU server is
spent filling a disk. The uint8 number follows from the aspect ratios alone; the JPEG number
depends on content and is an estimate.
"""


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``bench`` with ``eval`` and ``step`` to the nirbench command line."""
    bench = subparsers.add_parser("bench", parents=[common], help="benchmarks: evaluation speed, "
                                  "NIR step cost, data pipeline speed",
                                  description=BENCH_DESCRIPTION,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    which = bench.add_subparsers(dest="bench_command", required=True)

    p = which.add_parser("eval", parents=[common], help="evaluation speed and memory vs "
                         "pytorch-metric-learning and the bare faiss search",
                         description=EVAL_DESCRIPTION,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=60502,
                   help="number of embeddings (default: SOP test, 60502)")
    p.add_argument("--dim", type=int, default=128, help="embedding dimension (default 128)")
    p.add_argument("--classes", type=int, default=11316, help="number of classes (default: SOP "
                   "test, 11316)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", type=float, default=1.4,
                   help="within-class noise norm relative to the unit class centres (default 1.4: "
                        "recall@1 about 0.77 at SOP size)")
    p.add_argument("--repeat", type=int, default=1, help="keep the fastest of R runs per step")
    p.add_argument("--threads", type=int, default=0,
                   help="torch and faiss threads (default: theirs)")
    p.add_argument("--no-pml", action="store_true", help="skip pytorch-metric-learning (e.g. at "
                   "sizes where it would not finish)")
    p.add_argument("--no-nmi", action="store_true", help="skip the NMI timings")
    p.add_argument("--no-full", action="store_true", help="skip the k = 1000 full suite")
    p.add_argument("--no-exact", action="store_true",
                   help="skip every exact kNN timing (ours, PML, bare search, full suite): for "
                        "million-scale sets with --approximate, where an exact N^2 pass takes an "
                        "hour on a small CPU")
    p.add_argument("--approximate", default=None, metavar="{ivf,ivf:NPROBE,hnsw,hnsw:EF}",
                   help="also run the full suite with a faiss approximate index and report its "
                        "measured recall@1 deviation from exact on a 2000-query sample")
    p.add_argument("--json", action="store_true", help="print one JSON object (machine-readable)")
    p.set_defaults(func=cmd_bench_eval)

    p = which.add_parser("step", parents=[common], help="training step time with and without NIR",
                         description=STEP_DESCRIPTION,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--backbone", choices=("small_cnn", "resnet18", "resnet50"), default=None,
                   help="default: resnet50 on a GPU, small_cnn on a CPU")
    p.add_argument("--batch", type=int, default=None, help="default: 90 on a GPU, 64 on a CPU")
    p.add_argument("--image-px", type=int, default=None, help="default: 224 on a GPU, 32 on a CPU")
    p.add_argument("--classes", type=int, default=100,
                   help="training classes (proxies), default 100")
    p.add_argument("--steps", type=int, default=20, help="timed steps per arm (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per arm first")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    p.add_argument("--json", action="store_true", help="print one JSON object (machine-readable)")
    p.set_defaults(func=cmd_bench_step)

    p = which.add_parser("data", parents=[common], help="training images per second: cached "
                         "uint8 pipeline vs per-sample PIL + torchvision",
                         description=DATA_DESCRIPTION,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=None, help="folder of images (default: generate a "
                   "temporary folder of CUB-like JPEGs)")
    p.add_argument("--images", type=int, default=None,
                   help="use at most N images (evenly spaced; default: all, or 400 generated)")
    p.add_argument("--workers", type=int, default=2,
                   help="DataLoader workers of the reference = torch threads of ours (default 2)")
    p.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    p.add_argument("--batches", type=int, default=8, help="timed batches per round (default 8)")
    p.add_argument("--rounds", type=int, default=2,
                   help="alternating rounds per pipeline, the best is reported (default 2)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--caches", default="uint8,jpeg",
                   help="caches to measure: uint8 (always) and jpeg, the compact one "
                        "(default both, so their rates come from the same run)")
    p.add_argument("--json", action="store_true", help="print one JSON object (machine-readable)")
    p.set_defaults(func=cmd_bench_data)

    p = which.add_parser("cache", parents=[common], help="cache size per dataset at full scale, "
                         "uint8 and compact JPEG, from a generated sample",
                         description=CACHE_DESCRIPTION,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="cub200,cars196,sop",
                   help="comma-separated, default all three")
    p.add_argument("--images", type=int, default=200, help="sample size per dataset (default 200)")
    p.add_argument("--workers", type=int, default=2, help="decoding processes (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object (machine-readable)")
    p.set_defaults(func=cmd_bench_cache)


def cmd_bench_cache(args: argparse.Namespace) -> int:
    from harness.bench import cache_size

    datasets = tuple(d.strip() for d in args.datasets.split(",") if d.strip())
    result = cache_size.run(datasets=datasets, images=args.images, workers=args.workers,
                            seed=args.seed, progress=_progress(args))
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{'dataset':8}  {'images':>7}  {'aspect':>6}  {'uint8 GB':>8}  {'JPEG GB':>7}  "
          f"{'x smaller':>9}  {'source GB':>9}")
    for name, row in result["datasets"].items():
        print(f"{name:8}  {row['official_images']:>7,}  {row['mean_aspect']:>6.2f}  "
              f"{row['uint8_gb']:>8.1f}  {row['jpeg_gb']:>7.2f}  {row['jpeg_size_ratio']:>9.1f}  "
              f"{row['source_gb']:>9.2f}")
    return 0


def cmd_bench_eval(args: argparse.Namespace) -> int:
    from harness.bench import eval as bench_eval

    result = bench_eval.run(args.n, args.dim, args.classes, seed=args.seed, noise=args.noise,
                            repeat=args.repeat, threads=args.threads, pml=not args.no_pml,
                            nmi=not args.no_nmi, full=not args.no_full, exact=not args.no_exact,
                            approximate=args.approximate, progress=_progress(args))
    _print(result, args.json)
    return 0


def cmd_bench_step(args: argparse.Namespace) -> int:
    from harness.bench import step as bench_step

    result = bench_step.run(device=args.device, backbone=args.backbone, batch=args.batch,
                            image_px=args.image_px, classes=args.classes, steps=args.steps,
                            warmup=args.warmup, threads=args.threads, progress=_progress(args))
    if not result["gpu_measured"]:
        result["note"] = ("no CUDA device here: the GPU setting (ResNet50, batch 90, 224 px) was "
                          "not measured; run 'nirbench bench step' on a GPU machine for it")
    _print(result, args.json)
    return 0


def cmd_bench_data(args: argparse.Namespace) -> int:
    from harness.bench import data as bench_data

    result = bench_data.run(root=args.root, workers=args.workers, batch=args.batch,
                            batches=args.batches, rounds=args.rounds, images=args.images,
                            device=args.device, seed=args.seed,
                            caches=tuple(c.strip() for c in args.caches.split(",") if c.strip()),
                            progress=_progress(args))
    _print(result, args.json)
    return 0


def _progress(args: argparse.Namespace):
    if args.json or getattr(args, "quiet", False):
        return None
    return lambda message: print(f"... {message}", file=sys.stderr, flush=True)


def _print(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
        return
    width = max(len(key) for key in result)
    for key, value in result.items():
        shown = f"{value:.6g}" if isinstance(value, float) else value
        print(f"{key.ljust(width)}  {shown}")
