"""``nirbench bench {eval,step,data,protocol,convergence,robustness,variance,train,cache,kmeans,gpu-check}``: argument parsing and printing only;
the work is in the harness.bench module of the same name (gpu-check: harness.bench.gpu_check)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

BENCH_DESCRIPTION = """\
Measure instead of claim. Users' top complaint about DML tooling is evaluation that runs out of
memory or takes forever on Stanford Online Products; 'bench eval' measures ours against
pytorch-metric-learning and the bare faiss search on SOP-sized embeddings, 'bench step' measures
what NIR adds to a training step, 'bench data' measures the cached image pipeline (uint8 and JPEG
caches) against the classic per-sample one, 'bench train' measures end-to-end training against
the bare model, 'bench cache' the cache size per dataset at full scale, and 'gpu-check' runs all
the GPU measurements in one JSON. Each prints one JSON object with --json (docs/benchmarks.md
quotes them).
"""

KMEANS_DESCRIPTION = """\
NMI of one embedding (default: synthetic, 2000 points in 100 classes) with torch's and faiss' CPU
k-means, the engines eval.kmeans_engine chooses between (auto: torch on a CPU, faiss on a GPU),
for k-means seeds 0..S-1: per engine the NMIs, their mean and seed spread; difference = torch -
faiss per seed (mean, mean_abs, max_abs); gpu: the GPU engines, null without a CUDA device.
Why: the engines draw different initial centroids, so their NMIs differ like another k-means
seed; a run therefore uses one engine throughout and records it (tag nmi.kmeans_engine).
"""

VARIANCE_DESCRIPTION = """\
Why: a verdict needs a 95% CI half-width on Δ R@1 no wider than the margin δ, and the seeds that
takes grow with var(Δ). This splits var(Δ) over the finished pairs of a results folder into the
parts a protocol change could cut: seed (the paired spread over seeds, what the interval is built
from), evaluation_set (the share of it that comes from which test classes were drawn: a class
bootstrap of both arms' per-query R@1 on the re-embedded final checkpoints; it shrinks with more
test classes), training (the rest), and, given the folders, data_order (another train.data_seed)
and numerics (other CPU kernels, bench robustness). Per source: sd, share of the seed variance,
seeds needed if it were the only one left. test_split_offset_sd: what another draw of the test
classes would move every seed's Δ by (not in the seed interval).
"""

ROBUSTNESS_DESCRIPTION = """\
Why: a CPU run is bitwise reproducible only for one ATen kernel set and one thread count; on
another machine every number moves like another seed. This re-runs GRID into --other-results
under ATEN_CPU_CAPABILITY=--capability, aggregates both folders the same way and compares every
headline (R@1) comparison: both verdicts, both Δ and both 95% intervals. same_verdicts says
whether the answer holds under the other numerics. Example, after ./run_all.sh:
  nirbench bench robustness harness/configs/grids/default.yaml --other-results results-default-isa
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
Rehearsal (--generate, or a --root that holds CUB_200_2011/images.txt): the real-data path at full
size on this machine's CPU. --generate writes a CUB-sized copy (200 classes, 11,788 generated JPEGs,
official layout; harness/data/real/rehearsal.py) into --root (default /tmp/cub_rehearsal). Then
both caches are built by the real builder and one JSON gives: generate_s, images, source_bytes,
cache_build_s / disk_bytes {uint8, jpeg}, pil_decode_img_s (bare PIL decode, one process),
reference_decode_aug_img_s_per_worker (per-sample PIL + torchvision), decode_aug_img_s_per_worker
{uint8, jpeg} (batched augmentation, one thread), workers_for_2500_img_s {uint8, jpeg, reference}
= ceil(2500 / per-worker rate), and train_epoch {...}: one epoch of ResNet18 (random init, crop
224) on a 2,000-image subset through nirbench run, aggregate and report, with run_wall_s,
train_epoch_s, train_img_s and the report's path. docs/rehearsal.md holds the figures.
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


TRAIN_DESCRIPTION = """\
End-to-end training throughput against the bare model, in the same run, per variant (NIR on/off x
fp32/bf16 x channels_last on/off, per backbone):
  e2e_ips     images/s of harness.train.engine.train_one_epoch itself: cached data (memory-mapped uint8
              cache of generated photographs), batched augmentation, forward, loss, NIR,
              finite-loss check, backward, optimizer step, per-step loss logging
  model_ips   the same model's forward + backward on a random tensor of the batch's shape, same
              precision and memory format
  ratio       e2e_ips / model_ips; target >= 0.9 (the harness adds at most 10%)
plus ratio_min and meets_target over all variants, the per-round rates, device, backbones,
batch, image_px, steps, rounds, cache_build_s, threads and load averages.
Settings: GPU: ResNet50, batch 90, 224 px (the paper's); CPU: small_cnn and ResNet18 at 32 px,
batch 32; --quick: small_cnn, batch 8, 32 px, for a smoke test.
Why: the harness's own cost (data, loss bookkeeping, NIR) must be small next to the network, or
every GPU hour buys less than it should.
"""

GPU_CHECK_DESCRIPTION = """\
The GPU check, ready for a session that is lent a GPU: one command, one JSON (--out), every part
timed and guarded (a failing part records its error and the check goes on), a total time budget
(--budget-s, default 540 s; parts that would start after it are recorded as skipped):
  doctor          nirbench doctor
  bench_train     ResNet50, batch 90, 224 px: fp32 and bf16, NIR on/off, channels_last on/off
  bench_eval_sop  our kNN metrics with the faiss GPU engine at SOP size (60,502 x 128) + NMI
  bench_eval_1m   the same at 1,000,000 embeddings (200,000 classes; exact kNN, no NMI)
  bench_data      cached pipeline on CUDA (uint8 and JPEG caches) vs the PIL reference
  augment_match   CUDA augmentation pixels vs the CPU path for the same crop boxes (tolerance:
                  uint8 cache at most one grey level per pixel, mean < 0.5 levels; JPEG cache,
                  nvjpeg vs libjpeg-turbo, mean < 1 level)
  paper_run       a 50-step paper-profile run (cub200 NIR preset, ResNet50) on a generated
                  CUB-layout folder, through MLflow
  pytest_gpu      the gpu-marked tests (pytest -m gpu)
--device cpu --quick runs the same parts at toy sizes on a CPU (what the tests do).
Why: GPU time is scarce; a session that gets one should spend it measuring, not writing scripts.
"""


CONVERGENCE_DESCRIPTION = """\
Read the runs of grids/convergence.yaml (every baseline of the default grid at its epoch budget B
and at 2B, seed 0; run it first: nirbench grid harness/configs/grids/convergence.yaml) and print,
per dataset and method, test R@1 at B and at 2B and their gap. Exit 0 when every gap is at most
2 points (the embedded protocol's convergence rule), 1 otherwise. --figure draws the curves.
Why: the default grid compares converged runs; this is the measurement behind its epoch budgets,
re-runnable whenever a dataset, a method or the recipe changes.
Also printed, for every arm and budget of the grid: the "still rising" rule's mean rise over the
last 20% of the epochs (key rises: dataset, method, arm, epochs, rise_pp, r1_at_last, n,
still_rising) and its margin (rise_margin_pp). --grid rise_calibration reads
grids/rise_calibration.yaml, which runs the protocol far below and past its budgets: what the
mark says about runs whose state is known.
"""

PROTOCOL_DESCRIPTION = """\
Time one training epoch and one evaluation of the ProxyAnchor baseline on each embedded dataset,
with one torch thread as each of the 2 grid workers gets here: before = the old default's step and
evaluation (32 px input, NCHW, Adam tensor by tensor, every metric, NMI and structure after every
epoch in batches of 512), after = what the default grid runs now (24 px input, channels_last,
fused Adam, evaluation every eval.every epochs in batches of 128). Same data in both (the old
synth-sop also had twice the classes). Prints train_epoch_s, eval_s,
eval_every, epoch_s (training + evaluation amortised over its cadence) for both, ratio_epoch =
before / after, and run_s = after epoch_s x the grid's epochs (an estimate without start-up,
tracking or checkpoints), per dataset.
Why: the main job must answer within 15 minutes on 2 cores by making runs cheaper, not by cutting
the protocol; this shows where the time went and what the cuts bought.
"""


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``bench`` and its subcommands to the nirbench command line."""
    bench = subparsers.add_parser(
        "bench",
        parents=[common],
        help="benchmarks: evaluation speed, "
        "NIR step cost, data pipeline, end-to-end training, cache "
        "size, the GPU check",
        description=BENCH_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = bench.add_subparsers(dest="bench_command", required=True)

    p = which.add_parser(
        "eval",
        parents=[common],
        help="evaluation speed and memory vs pytorch-metric-learning and the bare faiss search",
        description=EVAL_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--n", type=int, default=60502, help="number of embeddings (default: SOP test, 60502)"
    )
    p.add_argument("--dim", type=int, default=128, help="embedding dimension (default 128)")
    p.add_argument(
        "--classes", type=int, default=11316, help="number of classes (default: SOP test, 11316)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--noise",
        type=float,
        default=1.4,
        help="within-class noise norm relative to the unit class centres (default 1.4: "
        "recall@1 about 0.77 at SOP size)",
    )
    p.add_argument("--repeat", type=int, default=1, help="keep the fastest of R runs per step")
    p.add_argument(
        "--threads", type=int, default=0, help="torch and faiss threads (default: theirs)"
    )
    p.add_argument(
        "--no-pml",
        action="store_true",
        help="skip pytorch-metric-learning (e.g. at sizes where it would not finish)",
    )
    p.add_argument("--no-nmi", action="store_true", help="skip the NMI timings")
    p.add_argument("--no-full", action="store_true", help="skip the k = 1000 full suite")
    p.add_argument(
        "--no-exact",
        action="store_true",
        help="skip every exact kNN timing (ours, PML, bare search, full suite): for "
        "million-scale sets with --approximate, where an exact N^2 pass takes an "
        "hour on a small CPU",
    )
    p.add_argument(
        "--approximate",
        default=None,
        metavar="{ivf,ivf:NPROBE,hnsw,hnsw:EF}",
        help="also run the full suite with a faiss approximate index and report its "
        "measured recall@1 deviation from exact on a 2000-query sample",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object (machine-readable)")
    p.set_defaults(func=cmd_bench_eval)

    p = which.add_parser(
        "step",
        parents=[common],
        help="training step time with and without NIR",
        description=STEP_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument(
        "--backbone",
        choices=("small_cnn", "resnet18", "resnet50"),
        default=None,
        help="default: resnet50 on a GPU, small_cnn on a CPU",
    )
    p.add_argument("--batch", type=int, default=None, help="default: 90 on a GPU, 64 on a CPU")
    p.add_argument("--image-px", type=int, default=None, help="default: 224 on a GPU, 32 on a CPU")
    p.add_argument(
        "--classes", type=int, default=100, help="training classes (proxies), default 100"
    )
    p.add_argument("--steps", type=int, default=20, help="timed steps per arm (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per arm first")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    p.add_argument("--json", action="store_true", help="print one JSON object (machine-readable)")
    p.set_defaults(func=cmd_bench_step)

    p = which.add_parser(
        "data",
        parents=[common],
        help="training images per second: cached uint8 pipeline vs per-sample PIL + torchvision",
        description=DATA_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--root",
        default=None,
        help="folder of images (default: generate a temporary folder of CUB-like JPEGs)",
    )
    p.add_argument(
        "--images",
        type=int,
        default=None,
        help="use at most N images (evenly spaced; default: all, or 400 generated)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        help="DataLoader workers of the reference = torch threads of ours (default 2)",
    )
    p.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    p.add_argument("--batches", type=int, default=8, help="timed batches per round (default 8)")
    p.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="alternating rounds per pipeline, the best is reported (default 2)",
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--caches",
        default="uint8,jpeg",
        help="caches to measure: uint8 (always) and jpeg, the compact one "
        "(default both, so their rates come from the same run)",
    )
    p.add_argument(
        "--generate",
        action="store_true",
        help="rehearsal: first write a CUB-sized CUB_200_2011 copy (200 classes, "
        "11,788 generated JPEGs) into --root (default /tmp/cub_rehearsal); "
        "reused when already there. A --root holding CUB_200_2011 rehearses "
        "without it (docs/rehearsal.md)",
    )
    p.add_argument(
        "--classes",
        type=int,
        default=None,
        help="rehearsal: a miniature generated copy of this many classes (with "
        "--images; default the full size)",
    )
    p.add_argument(
        "--train-images",
        type=int,
        default=2000,
        help="rehearsal: training images of the one-epoch ResNet18 run (default 2000)",
    )
    p.add_argument(
        "--test-images",
        type=int,
        default=500,
        help="rehearsal: test images it evaluates on (default 500)",
    )
    p.add_argument(
        "--no-train",
        action="store_true",
        help="rehearsal: skip the training epoch (caches and rates only)",
    )
    p.add_argument(
        "--keep-caches",
        action="store_true",
        help="rehearsal: keep the caches built in ROOT/nirbench_rehearsal_caches",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object (machine-readable)")
    p.set_defaults(func=cmd_bench_data)

    p = which.add_parser(
        "protocol",
        parents=[common],
        help="where an embedded run's time goes, the old default against the converged protocol",
        description=PROTOCOL_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--datasets",
        default="synth-cub,synth-cars,synth-sop",
        help="comma-separated embedded datasets (default: all three)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: what each of the 2 grid workers gets here)",
    )
    p.add_argument(
        "--no-phases",
        dest="phases",
        action="store_false",
        help="skip the split of one protocol epoch into data, forward, objective, "
        "backward, optimizer, NIR flow, embedding and kNN (key 'phases')",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object (machine-readable)")
    p.set_defaults(func=cmd_bench_protocol)

    p = which.add_parser(
        "robustness",
        parents=[common],
        help="re-run a grid under other CPU kernels and compare its verdicts",
        description=ROBUSTNESS_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("grid", help="the grid file, already run into --results-dir (the reference)")
    p.add_argument(
        "--other-results",
        required=True,
        metavar="DIR",
        help="results folder for the re-run (resumable; finished runs are skipped)",
    )
    p.add_argument(
        "--capability",
        default="default",
        help="ATEN_CPU_CAPABILITY of the re-run (default: 'default', the portable "
        "kernels; others: avx2, avx512 where the CPU has them)",
    )
    p.add_argument(
        "--skip-run",
        action="store_true",
        help="only aggregate both folders and compare (the re-run is done)",
    )
    p.add_argument("--workers", default="auto", help="worker processes of the re-run")
    p.add_argument("--json", action="store_true", help="print one JSON object (machine-readable)")
    p.set_defaults(func=cmd_bench_robustness)

    p = which.add_parser(
        "variance",
        parents=[common],
        help="where the spread of a comparison's Δ R@1 comes from (seed, "
        "evaluation set, training, data order, numerics)",
        description=VARIANCE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--grid", default=None, help="only runs of this grid name (default: all)")
    p.add_argument(
        "--datasets",
        default=None,
        help="comma-separated datasets (default: every dataset with finished pairs)",
    )
    p.add_argument(
        "--method", default="proxy_anchor", help="the method compared (default proxy_anchor)"
    )
    p.add_argument("--reference", default="none", help="reference arm (default none)")
    p.add_argument("--arm", default="nir", help="compared arm (default nir)")
    p.add_argument(
        "--margin",
        type=float,
        default=1.0,
        help="equivalence margin δ in R@1 points for the seeds-needed columns "
        "(default 1.0, as stats.margin)",
    )
    p.add_argument("--resamples", type=int, default=2000, help="class-bootstrap resamples")
    p.add_argument(
        "--no-eval-set",
        dest="eval_set",
        action="store_false",
        help="skip the evaluation-set part (it re-embeds every final checkpoint)",
    )
    p.add_argument(
        "--numerics-results",
        type=Path,
        default=None,
        metavar="DIR",
        help="the same runs under other CPU numerics (bench robustness' folder)",
    )
    p.add_argument(
        "--order-results",
        type=Path,
        default=None,
        metavar="DIR",
        help="the same runs with another train.data_seed (batch order and "
        "augmentation changed, initial weights not)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object (machine-readable)")
    p.set_defaults(func=cmd_bench_variance)

    p = which.add_parser(
        "convergence",
        parents=[common],
        help="has every default-grid baseline "
        "plateaued at its epoch budget? (runs of grids/convergence.yaml)",
        description=CONVERGENCE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--grid",
        default="convergence",
        help="the grid whose runs hold each baseline at B and 2B epochs (default: convergence)",
    )
    p.add_argument(
        "--figure",
        default=None,
        metavar="PNG",
        help="also draw the curves (B solid, 2B dashed) into this PNG",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object (machine-readable)")
    p.set_defaults(func=cmd_bench_convergence)

    p = which.add_parser(
        "train",
        parents=[common],
        help="end-to-end training images/s against the bare model (ratio target >= 0.9)",
        description=TRAIN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument(
        "--quick",
        action="store_true",
        help="toy sizes (small_cnn, batch 8, 32 px): a smoke test in seconds",
    )
    p.add_argument(
        "--backbones",
        default=None,
        help="comma-separated (default: resnet50 on a GPU, small_cnn,resnet18 on a CPU)",
    )
    p.add_argument("--batch", type=int, default=None, help="default: 90 on a GPU, 32 on a CPU")
    p.add_argument("--image-px", type=int, default=None, help="default: 224 on a GPU, 32 on a CPU")
    p.add_argument("--steps", type=int, default=None, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds (best is reported)")
    p.add_argument("--nir", default="off,on", help="NIR arms to measure (default off,on)")
    p.add_argument("--precisions", default="fp32,bf16", help="default fp32,bf16")
    p.add_argument("--channels-last", default="off,on", help="default off,on")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object (machine-readable)")
    p.set_defaults(func=cmd_bench_train)

    p = which.add_parser(
        "gpu-check",
        parents=[common],
        help="the whole GPU check in one command "
        "and one JSON (doctor, bench train/eval/data, a 50-step paper run, "
        "gpu tests)",
        description=GPU_CHECK_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--out",
        default="results/gpu_check.json",
        help="the JSON file (default results/gpu_check.json), rewritten after "
        "every part so a killed check keeps what it measured",
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--quick", action="store_true", help="toy sizes (CPU smoke test)")
    p.add_argument(
        "--budget-s",
        type=float,
        default=540.0,
        help="total time budget; later parts are skipped past it (default 540)",
    )
    p.add_argument("--only", default=None, help="comma-separated part names to run (default: all)")
    p.add_argument("--json", action="store_true", help="also print the JSON")
    p.set_defaults(func=cmd_bench_gpu_check)

    p = which.add_parser(
        "cache",
        parents=[common],
        help="cache size per dataset at full scale, "
        "uint8 and compact JPEG, from a generated sample",
        description=CACHE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--datasets", default="cub200,cars196,sop", help="comma-separated, default all three"
    )
    p.add_argument("--images", type=int, default=200, help="sample size per dataset (default 200)")
    p.add_argument("--workers", type=int, default=2, help="decoding processes (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object (machine-readable)")
    p.set_defaults(func=cmd_bench_cache)

    p = which.add_parser(
        "kmeans",
        parents=[common],
        help="NMI of one embedding with torch's vs faiss' CPU k-means (eval.kmeans_engine)",
        description=KMEANS_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--n", type=int, default=2000, help="synthetic embeddings (default 2000)")
    p.add_argument("--classes", type=int, default=100, help="classes = k (default 100)")
    p.add_argument("--dim", type=int, default=128, help="embedding dimension (default 128)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic embedding")
    p.add_argument("--noise", type=float, default=1.4, help="within-class noise (default 1.4)")
    p.add_argument(
        "--kmeans-seeds", type=int, default=5, help="k-means seeds per engine, 0..S-1 (default 5)"
    )
    p.add_argument(
        "--embeddings",
        type=Path,
        default=None,
        metavar="FILE.npz",
        help="a real embedding instead: .npz with arrays 'embeddings' and 'labels'",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object (machine-readable)")
    p.set_defaults(func=cmd_bench_kmeans)


def cmd_bench_train(args: argparse.Namespace) -> int:
    from nirbench.harness.bench import train as bench_train

    def flags(text: str, kind) -> tuple:
        return tuple(kind(v.strip()) for v in text.split(",") if v.strip())

    result = bench_train.run(
        device=args.device,
        quick=args.quick,
        seed=args.seed,
        threads=args.threads,
        backbones=flags(args.backbones, str) if args.backbones else None,
        batch=args.batch,
        image_px=args.image_px,
        steps=args.steps,
        rounds=args.rounds,
        nir=flags(args.nir, lambda v: v == "on"),
        precisions=flags(args.precisions, str),
        channels_last=flags(args.channels_last, lambda v: v == "on"),
        progress=_progress(args),
    )
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"{'backbone':10} {'nir':4} {'prec':5} {'layout':13} {'e2e img/s':>10} "
        f"{'model img/s':>11} {'ratio':>6}"
    )
    for v in result["variants"]:
        layout = "channels_last" if v["channels_last"] else "contiguous"
        if "error" in v:
            print(
                f"{v['backbone']:10} {'on' if v['nir'] else 'off':4} {v['precision']:5} "
                f"{layout:13} error: {v['error']}"
            )
            continue
        print(
            f"{v['backbone']:10} {'on' if v['nir'] else 'off':4} {v['precision']:5} "
            f"{layout:13} {v['e2e_ips']:>10.1f} {v['model_ips']:>11.1f} {v['ratio']:>6.2f}"
        )
    print(
        f"ratio_min {result['ratio_min']}, target {result['target_ratio']}: "
        f"{'met' if result['meets_target'] else 'not met'} ({result['device']}, "
        f"batch {result['batch']}, {result['image_px']} px, load "
        f"{result['load_average_before']} -> {result['load_average_after']})"
    )
    return 0


def cmd_bench_gpu_check(args: argparse.Namespace) -> int:
    from nirbench.harness.bench import gpu_check

    result = gpu_check.run(
        out=args.out,
        device=args.device,
        quick=args.quick,
        budget_s=args.budget_s,
        only=args.only,
        results_dir=args.results_dir,
        progress=_progress(args),
    )
    if args.json:
        print(json.dumps(result))
    else:
        for name, part in result["parts"].items():
            print(
                f"{part['status']:8} {name:16} {part.get('seconds', 0):7.1f} s  "
                f"{part.get('summary', part.get('error', ''))}"
            )
        print(f"total {result['total_s']:.1f} s; JSON written to {result['out']}")
    return 0 if all(p["status"] in ("ok", "skipped") for p in result["parts"].values()) else 1


def cmd_bench_kmeans(args: argparse.Namespace) -> int:
    from nirbench.harness.bench import kmeans as bench_kmeans

    result = bench_kmeans.run(
        args.n,
        args.classes,
        args.dim,
        seed=args.seed,
        noise=args.noise,
        kmeans_seeds=args.kmeans_seeds,
        embeddings=args.embeddings,
        progress=_progress(args),
    )
    _print(result, args.json)
    return 0


def cmd_bench_cache(args: argparse.Namespace) -> int:
    from nirbench.harness.bench import cache_size

    datasets = tuple(d.strip() for d in args.datasets.split(",") if d.strip())
    result = cache_size.run(
        datasets=datasets,
        images=args.images,
        workers=args.workers,
        seed=args.seed,
        progress=_progress(args),
    )
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"{'dataset':8}  {'images':>7}  {'aspect':>6}  {'uint8 GB':>8}  {'JPEG GB':>7}  "
        f"{'x smaller':>9}  {'source GB':>9}"
    )
    for name, row in result["datasets"].items():
        print(
            f"{name:8}  {row['official_images']:>7,}  {row['mean_aspect']:>6.2f}  "
            f"{row['uint8_gb']:>8.1f}  {row['jpeg_gb']:>7.2f}  {row['jpeg_size_ratio']:>9.1f}  "
            f"{row['source_gb']:>9.2f}"
        )
    return 0


def cmd_bench_convergence(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nirbench.harness.bench import convergence
    from nirbench.harness.cli.common import results_dir_arg

    result = convergence.check(
        results_dir_arg(args.results_dir), args.grid, Path(args.figure) if args.figure else None
    )
    if args.json:
        print(json.dumps(result))
    else:
        for c in result["cells"]:
            print(
                f"{c['dataset']:10s} {c['method']:18s} budget {c['budget']:3d}: R@1 "
                f"{c['r1_at_budget']:.1f} at B, {c['r1_at_double']:.1f} at 2B, gap "
                f"{c['gap_pp']:+.1f} pp: {'plateaued' if c['converged'] else 'STILL RISING'}"
            )
        print(
            f"rule: R@1 at 2B at most {result['max_gap_pp']:g} points above R@1 at B; all "
            f"plateaued: {result['all_converged']}"
        )
    return 0 if result["all_converged"] else 1


def cmd_bench_protocol(args: argparse.Namespace) -> int:
    from nirbench.harness.bench import protocol as bench_protocol
    from nirbench.harness.cli.common import results_dir_arg

    datasets = tuple(d.strip() for d in args.datasets.split(",") if d.strip())
    result = bench_protocol.run(
        datasets,
        threads=args.threads,
        cache_dir=results_dir_arg(args.results_dir) / "cache" / "data",
        phases=args.phases,
    )
    if args.json:
        print(json.dumps(result))
        return 0
    for dataset in datasets:
        r = result[dataset]
        b, a = r["before"], r["after"]
        print(
            f"{dataset}: before {b['train_epoch_s']:.2f}s train + {b['eval_s']:.2f}s eval "
            f"every epoch = {b['epoch_s']:.2f}s/epoch; after {a['train_epoch_s']:.2f}s train + "
            f"{a['eval_s']:.2f}s eval every {a['eval_every']} = {a['epoch_s']:.2f}s/epoch "
            f"(x{r['ratio_epoch']:.2f} faster); {r['epochs']} epochs ~ {r['run_s']:.0f}s"
        )
        if "phases" in r:
            for arm in ("baseline", "nir"):
                t = r["phases"][arm]
                print(
                    f"  {arm:8s} epoch {t['epoch']:.2f}s: "
                    + ", ".join(
                        f"{p} {t[p]:.2f}s"
                        for p in (
                            "data",
                            "forward",
                            "objective",
                            "backward",
                            "optimizer",
                            "embed",
                            "knn",
                        )
                    )
                )
            print(
                f"  NIR flow on top of the baseline: {r['phases']['nir_flow']['total']:.2f}s "
                f"per epoch"
            )
    return 0


def cmd_bench_variance(args: argparse.Namespace) -> int:
    from nirbench.harness.bench import variance
    from nirbench.harness.cli.common import results_dir_arg

    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()] if args.datasets else None
    result = variance.run(
        results_dir_arg(args.results_dir),
        grid=args.grid,
        datasets=datasets,
        method=args.method,
        reference=args.reference,
        arm=args.arm,
        margin=args.margin,
        resamples=args.resamples,
        eval_set=args.eval_set,
        numerics_results=args.numerics_results,
        order_results=args.order_results,
        progress=_progress(args),
    )
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"{result['method']}: {result['arm']} vs {result['reference']}, Δ {result['metric']} "
        f"(points), margin δ = {result['margin']}"
    )
    for dataset, entry in result["datasets"].items():
        if "error" in entry:
            print(f"  {dataset}: {entry['error']}")
            continue
        parts = ", ".join(
            f"{name} sd {src['sd']:.2f}"
            for name, src in entry["sources"].items()
            if src.get("sd") is not None
        )
        print(
            f"  {dataset}: {entry['pairs']} pairs, Δ {entry['delta_mean']:+.2f}; {parts}; "
            f"seeds needed {entry['seeds_needed']}"
        )
    return 0


def cmd_bench_robustness(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nirbench.harness.bench import robustness
    from nirbench.harness.cli.common import results_dir_arg

    result = robustness.run(
        args.grid,
        results_dir_arg(args.results_dir),
        Path(args.other_results),
        capability=args.capability,
        skip_run=args.skip_run,
        workers=args.workers,
    )
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"grid {result['grid']}: {result['metric']} verdicts, this machine's kernels vs "
        f"ATEN_CPU_CAPABILITY={result['capability_other']}"
    )
    for r in result["comparisons"]:
        mark = "same" if r["same"] else "DIFFERS"
        fmt = lambda v: "n/a" if v is None else f"{100 * v:+.2f}"  # noqa: E731
        print(
            f"  {r['dataset']}, {r['method']}: {r['arm']} vs {r['reference']}: "
            f"{r['verdict']} (Δ {fmt(r['diff'])}) | {r['verdict_other']} "
            f"(Δ {fmt(r['diff_other'])}) -> {mark}"
        )
    print("same verdicts: " + ("yes" if result["same_verdicts"] else "NO"))
    return 0 if result["same_verdicts"] else 1


def cmd_bench_eval(args: argparse.Namespace) -> int:
    from nirbench.harness.bench import eval as bench_eval

    result = bench_eval.run(
        args.n,
        args.dim,
        args.classes,
        seed=args.seed,
        noise=args.noise,
        repeat=args.repeat,
        threads=args.threads,
        pml=not args.no_pml,
        nmi=not args.no_nmi,
        full=not args.no_full,
        exact=not args.no_exact,
        approximate=args.approximate,
        progress=_progress(args),
    )
    _print(result, args.json)
    return 0


def cmd_bench_step(args: argparse.Namespace) -> int:
    from nirbench.harness.bench import step as bench_step

    result = bench_step.run(
        device=args.device,
        backbone=args.backbone,
        batch=args.batch,
        image_px=args.image_px,
        classes=args.classes,
        steps=args.steps,
        warmup=args.warmup,
        threads=args.threads,
        progress=_progress(args),
    )
    if not result["gpu_measured"]:
        result["note"] = (
            "no CUDA device here: the GPU setting (ResNet50, batch 90, 224 px) was "
            "not measured; run 'nirbench bench step' on a GPU machine for it"
        )
    _print(result, args.json)
    return 0


REHEARSAL_ROOT = "/tmp/cub_rehearsal"


def cmd_bench_data(args: argparse.Namespace) -> int:
    from nirbench.harness.bench import data as bench_data

    if args.generate or bench_data.is_cub_official(args.root):
        result = bench_data.rehearse(
            args.root or REHEARSAL_ROOT,
            generate=args.generate,
            classes=args.classes,
            images=args.images,
            workers=args.workers,
            batch=args.batch,
            batches=args.batches,
            rounds=args.rounds,
            seed=args.seed,
            train_images=args.train_images,
            test_images=args.test_images,
            train=not args.no_train,
            keep_caches=args.keep_caches,
            progress=_rehearsal_progress(args),
        )
        _print(result, args.json)
        return 0
    result = bench_data.run(
        root=args.root,
        workers=args.workers,
        batch=args.batch,
        batches=args.batches,
        rounds=args.rounds,
        images=args.images,
        device=args.device,
        seed=args.seed,
        caches=tuple(c.strip() for c in args.caches.split(",") if c.strip()),
        progress=_progress(args),
    )
    _print(result, args.json)
    return 0


def _rehearsal_progress(args: argparse.Namespace):
    """Progress on stderr whenever it is a terminal: the rehearsal takes many minutes, and the
    JSON on stdout stays one clean line."""
    if getattr(args, "quiet", False) or (args.json and not sys.stderr.isatty()):
        return None
    return lambda message: print(f"... {message}", file=sys.stderr, flush=True)


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
