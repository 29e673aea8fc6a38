"""``nirbench doctor``: can this machine run the paper profile? One line per check, each OK or
saying what to do, before the first hour on a GPU server is spent finding out.

Every check is a small function ``check(ctx) -> Check`` (name, status ``ok`` / ``warn`` /
``fail``, a message, the fix, machine-readable details). ``warn``: the paper profile cannot run
as it stands but nothing is broken (no GPU here, a dataset not downloaded yet); ``fail``: something
present is broken (a faiss GPU index that returns wrong neighbours, a truncated weights file, a
store that cannot be written). A check that raises is itself reported as ``fail`` and the others
still run. ``--json`` prints ``{"ok", "ready", "checks": [...], ...}`` (keys in the README).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

STATUSES = ("ok", "warn", "fail")
DATASETS = ("cub200", "cars196", "sop")
ENV_DATA = "NIRBENCH_DATA"


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail
    message: str
    fix: str = ""  # what to do; empty when ok
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    data_root: Path
    results_dir: Path
    tracking_uri: str
    cache: dict[str, Any] = field(default_factory=dict)  # shared between checks (dataset sizes)


# ------------------------------------------------------------------------------------ checks


def check_torch(ctx: Context) -> Check:
    import torch

    cuda = torch.version.cuda
    return Check(
        "torch",
        "ok",
        f"torch {torch.__version__} ({'CUDA ' + cuda + ' build' if cuda else 'CPU-only build'})",
        details={"version": torch.__version__, "cuda_build": cuda},
    )


def check_cuda(ctx: Context) -> Check:
    import torch

    if not torch.version.cuda:
        return Check(
            "cuda",
            "warn",
            "this torch is a CPU-only build",
            "install the CUDA build of torch from constraints.txt (./run_all.sh --setup)",
        )
    if not torch.cuda.is_available():
        return Check(
            "cuda",
            "warn",
            "no CUDA device visible: the paper profile (ResNet50 at "
            "224 px, 100-300 epochs) is a GPU workload",
            "run on a machine with an NVIDIA GPU (check nvidia-smi and "
            "CUDA_VISIBLE_DEVICES); on this one use the synthetic grids",
        )
    n = torch.cuda.device_count()
    return Check(
        "cuda",
        "ok",
        f"CUDA {torch.version.cuda}, {n} device(s)",
        details={"devices": n, "cuda": torch.version.cuda},
    )


def check_cudnn(ctx: Context) -> Check:
    import torch

    if not torch.cuda.is_available():
        return Check("cudnn", "warn", "not checked: no CUDA device", "see cuda")
    version = torch.backends.cudnn.version()
    if not version or not torch.backends.cudnn.is_available():
        return Check(
            "cudnn",
            "fail",
            "cuDNN is not available to torch",
            "reinstall the CUDA build of torch (it ships cuDNN)",
        )
    return Check(
        "cudnn",
        "ok",
        f"cuDNN {version}, enabled={torch.backends.cudnn.enabled}",
        details={"version": version},
    )


def check_gpu(ctx: Context) -> Check:
    import torch

    if not torch.cuda.is_available():
        return Check("gpu", "warn", "no GPU", "see cuda")
    gpus = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        gpus.append(
            {
                "index": i,
                "name": p.name,
                "memory_gib": round(p.total_memory / 2**30, 1),
                "capability": f"{p.major}.{p.minor}",
            }
        )
    small = [g for g in gpus if g["memory_gib"] < 16]
    text = "; ".join(f"{g['name']} ({g['memory_gib']} GiB, sm {g['capability']})" for g in gpus)
    if small:
        return Check(
            "gpu",
            "warn",
            text,
            "ResNet50 at batch 90 and 224 px needs about 16 GiB in "
            "fp32; use train.precision=bf16 or a larger GPU",
            {"gpus": gpus},
        )
    return Check("gpu", "ok", text, details={"gpus": gpus})


def check_bf16(ctx: Context) -> Check:
    import torch

    if not torch.cuda.is_available():
        return Check("bf16", "warn", "not checked: no CUDA device", "see cuda")
    if not torch.cuda.is_bf16_supported():
        return Check(
            "bf16",
            "warn",
            "this GPU has no native bf16 (needs Ampere or newer)",
            "keep train.precision=fp32 (the paper's setting)",
        )
    x = torch.randn(64, 64, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = x @ x
    if y.dtype != torch.bfloat16 or not torch.isfinite(y).all():
        return Check(
            "bf16",
            "fail",
            "bf16 autocast did not produce finite bf16 results",
            "update the NVIDIA driver and torch",
        )
    return Check("bf16", "ok", "bf16 supported (train.precision=bf16 available)")


def check_faiss_gpu(ctx: Context) -> Check:
    """A tiny exact search on the GPU must give the CPU's neighbours: wheels built without
    kernels for this GPU's architecture import fine and fail (or return garbage) only here."""
    import numpy as np

    try:
        import faiss
    except ImportError as err:
        return Check(
            "faiss_gpu",
            "fail",
            f"faiss does not import ({err})",
            "pip install -c constraints.txt faiss-gpu (./run_all.sh --setup)",
        )
    try:
        gpus = int(faiss.get_num_gpus())
    except AttributeError:
        gpus = 0
    version = getattr(faiss, "__version__", "?")
    if gpus == 0:
        return Check(
            "faiss_gpu",
            "warn",
            f"faiss {version} sees no GPU: evaluation uses the "
            "torch engine on CUDA or faiss on the CPU (exact, slower at SOP size)",
            "on a GPU machine, install faiss-gpu from constraints.txt",
            {"version": version, "gpus": 0},
        )
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 64)).astype(np.float32)
    cpu = faiss.IndexFlatIP(64)
    cpu.add(x)
    d_cpu, i_cpu = cpu.search(x[:100], 5)
    try:
        gpu = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, faiss.IndexFlatIP(64))
        gpu.add(x)
        d_gpu, i_gpu = gpu.search(x[:100], 5)
    except Exception as err:  # noqa: BLE001 - an unsupported architecture fails here
        return Check(
            "faiss_gpu",
            "fail",
            f"faiss GPU search failed: {type(err).__name__}: {err}",
            "install a faiss-gpu build with kernels for this GPU, or set "
            "NIRBENCH_KNN_ENGINE=torch-cuda",
            {"version": version, "gpus": gpus},
        )
    same = bool(np.array_equal(i_cpu, i_gpu)) and float(np.abs(d_cpu - d_gpu).max()) < 1e-3
    if not same:
        return Check(
            "faiss_gpu",
            "fail",
            "faiss GPU search returned other neighbours than the CPU",
            "set NIRBENCH_KNN_ENGINE=torch-cuda and report the GPU model",
            {"version": version, "gpus": gpus},
        )
    return Check(
        "faiss_gpu",
        "ok",
        f"faiss {version}: GPU search on {gpus} GPU(s) gives the CPU's neighbours",
        details={"version": version, "gpus": gpus},
    )


def check_weights(ctx: Context) -> Check:
    """The published weights of every registered backbone that has them (the ResNets' ImageNet
    files), each hashed against its official file name as a run does before loading it."""
    from nirbench.harness.train import weights
    from nirbench.harness.config_backbones import BACKBONES, backbone_names

    rows = [weights.status(n) for n in backbone_names() if BACKBONES.get(n).weights is not None]
    details = {
        "path": str(weights.hub_checkpoints_dir()),
        "offline": weights.offline(),
        "mirror": weights.mirror_base(),
        "weights": rows,
    }
    corrupt = [r for r in rows if r["status"] == "corrupt"]
    missing = [r for r in rows if r["status"] == "missing"]

    def copy_by_hand(rs: list[dict]) -> str:
        return "; ".join(
            f"curl -L -o {Path(r['path']).name} {r['url']}, then copy it to {r['path']}" for r in rs
        )

    if corrupt:
        return Check(
            "imagenet_weights",
            "fail",
            "; ".join(
                f"{r['path']} is damaged ({r['bytes']:,} bytes, sha256 does not start with "
                f"{r['sha256_prefix']})"
                for r in corrupt
            )
            + "; a run refuses it",
            f"fetch it again: nirbench weights fetch {' '.join(r['backbone'] for r in corrupt)} "
            f"(replaces it once the new copy verifies); without internet here, on a machine "
            f"with it: " + copy_by_hand(corrupt),
            details,
        )
    if missing:
        names = " ".join(r["backbone"] for r in missing)
        return Check(
            "imagenet_weights",
            "warn",
            "not in the torch hub cache: "
            + ", ".join(f"{r['backbone']} (expected {r['path']})" for r in missing)
            + (
                "; downloads are off (NIRBENCH_OFFLINE=1), so a run with them fails"
                if details["offline"]
                else "; a run downloads them first"
            ),
            f"nirbench weights fetch {names} (compute nodes without internet: run it on a node "
            f"with internet that shares TORCH_HOME, or set TORCH_HOME so that "
            f"$TORCH_HOME/hub/checkpoints holds them; by hand: {copy_by_hand(missing)})",
            details,
        )
    return Check(
        "imagenet_weights",
        "ok",
        "; ".join(f"{r['path']} ({r['bytes'] / 1e6:.1f} MB, checksum ok)" for r in rows),
        details=details,
    )


def _dataset_check(name: str) -> Callable[[Context], Check]:
    def check(ctx: Context) -> Check:
        from nirbench.harness.data.real import cache_size, completeness, list_dataset
        from nirbench.harness.data.real.layouts import DatasetLayoutError

        try:
            listing = list_dataset(name, ctx.data_root)
        except DatasetLayoutError as err:
            first = str(err).splitlines()[0]
            url = {
                "cub200": "https://data.caltech.edu/records/65de6-vp158",
                "cars196": "http://ai.stanford.edu/~jkrause/cars/car_dataset.html",
                "sop": "https://cvgl.stanford.edu/projects/lifted_struct/",
            }[name]
            return Check(
                f"dataset:{name}",
                "warn",
                f"not usable under {ctx.data_root}: {first}",
                f"download it from {url} and extract it under {ctx.data_root} "
                f"(nirbench data check --dataset {name} --root {ctx.data_root} prints "
                f"the expected tree), or pass --data-root",
                {"found": False},
            )
        report = completeness(listing)
        sizes = cache_size.estimate(name, len(listing.paths))
        cached = cache_size.existing_caches(ctx.results_dir / "cache" / "data", name)
        ctx.cache[name] = {
            "uint8_bytes": sizes["cache_uint8_bytes"],
            "jpeg_bytes": sizes["cache_jpeg_bytes"],
            "cached_bytes": sum(c["bytes"] for c in cached),
        }
        details = {
            "found": True,
            "layout": listing.layout,
            "root": str(listing.base),
            **listing.split_counts(),
            **report.report(),
            **sizes,
            "caches": cached,
        }
        details["missing_class_ids"] = details["missing_class_ids"][:50]
        cache_text = (
            f"cache {sizes['cache_uint8_gb']} GB uint8 / {sizes['cache_jpeg_gb']} GB "
            f"jpeg (estimated){', already built' if cached else ''}"
        )
        if not report.complete:
            return Check(
                f"dataset:{name}",
                "warn",
                f"partial copy under {listing.base}: "
                + "; ".join(report.problems())
                + f"; {cache_text}",
                f"complete the copy (nirbench data check --dataset {name} --root "
                f"{ctx.data_root} lists everything), or train on it with --set "
                f"dataset.allow_partial=true",
                details,
            )
        return Check(
            f"dataset:{name}",
            "ok",
            f"{listing.layout} layout under {listing.base}, "
            f"complete ({len(listing.paths):,} images); images not decoded here: "
            f"nirbench data check does that; {cache_text}",
            details=details,
        )

    check.__name__ = f"check_dataset_{name}"
    return check


def check_tracking(ctx: Context) -> Check:
    uri = ctx.tracking_uri
    details: dict[str, Any] = {"uri": uri}
    if uri.startswith(("http://", "https://")):
        from nirbench.harness.tracking.store import check_reachable

        try:
            check_reachable(uri)
        except ConnectionError as err:
            return Check(
                "tracking",
                "fail",
                str(err),
                "start the server or fix MLFLOW_TRACKING_URI (unset it for the local sqlite store)",
                details,
            )
        return Check(
            "tracking",
            "ok",
            f"MLflow server {uri} answers (write access is checked when the first run starts)",
            details=details,
        )
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        folder = db.parent
        while not folder.exists() and folder != folder.parent:  # created at the first run
            folder = folder.parent
        try:
            if not folder.is_dir():
                raise NotADirectoryError(f"{folder} is not a folder")
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".nirbench-doctor-"):
                pass
        except OSError as err:
            return Check(
                "tracking",
                "fail",
                f"cannot write in {folder} ({err})",
                "use a writable --results-dir (or $NIRBENCH_RESULTS)",
                details,
            )
        if db.exists():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
                    tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            except sqlite3.Error as err:
                return Check(
                    "tracking",
                    "fail",
                    f"{db} is not a readable SQLite store ({err})",
                    f"move {db} away (a new store is created at the next run)",
                    details,
                )
            details["tables"] = tables
            return Check(
                "tracking", "ok", f"sqlite store {db} readable, folder writable", details=details
            )
        return Check(
            "tracking",
            "ok",
            f"sqlite store will be created at {db} (folder writable)",
            details=details,
        )
    return Check(
        "tracking",
        "warn",
        f"tracking URI {uri} not checked (only sqlite:/// and http(s):// are)",
        "make sure it is reachable and writable",
        details,
    )


def check_disk(ctx: Context) -> Check:
    cache_dir = ctx.results_dir / "cache" / "data"
    probe = cache_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    found = {k: v for k, v in ctx.cache.items() if k in DATASETS}
    if not found:  # nothing found: what the three would need
        from nirbench.harness.data.real.cache_size import estimate

        found = {
            n: {
                "uint8_bytes": estimate(n)["cache_uint8_bytes"],
                "jpeg_bytes": estimate(n)["cache_jpeg_bytes"],
                "cached_bytes": 0,
            }
            for n in DATASETS
        }
        scope = "all three datasets (none found yet)"
    else:
        scope = ", ".join(found)
    need = sum(max(0, v["uint8_bytes"] - v["cached_bytes"]) for v in found.values())
    need_jpeg = sum(v["jpeg_bytes"] for v in found.values())
    details = {
        "cache_dir": str(cache_dir),
        "free_bytes": free,
        "uint8_needed_bytes": need,
        "jpeg_needed_bytes": need_jpeg,
        "datasets": list(found),
    }
    text = (
        f"{free / 1e9:.1f} GB free at {probe}; the uint8 caches of {scope} need "
        f"{need / 1e9:.1f} GB more (jpeg: {need_jpeg / 1e9:.1f} GB)"
    )
    if free < need:
        status = "fail" if free < need_jpeg else "warn"
        return Check(
            "disk",
            status,
            text,
            f"free space or point --results-dir at a larger disk; "
            f"--set dataset.cache=jpeg needs {need_jpeg / 1e9:.1f} GB",
            details,
        )
    return Check("disk", "ok", text, details=details)


def check_chromium(ctx: Context) -> Check:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        return Check(
            "chromium",
            "warn",
            "no chromium: the HTML report's browser test is skipped "
            "(the report itself needs no browser)",
            "apt-get install -y chromium (./run_all.sh --tests does it as root)",
        )
    return Check("chromium", "ok", found, details={"path": found})


CHECKS: list[Callable[[Context], Check]] = [
    check_torch,
    check_cuda,
    check_cudnn,
    check_gpu,
    check_bf16,
    check_faiss_gpu,
    check_weights,
    *[_dataset_check(n) for n in DATASETS],
    check_tracking,
    check_disk,
    check_chromium,
]


# ------------------------------------------------------------------------------------ running


def run(
    data_root: str | Path | None = None,
    results_dir: str | Path = "results",
    tracking_uri: str | None = None,
    checks: list[Callable[[Context], Check]] | None = None,
) -> dict[str, Any]:
    from nirbench.harness.tracking.store import default_tracking_uri

    results = Path(results_dir)
    ctx = Context(
        data_root=Path(data_root or os.environ.get(ENV_DATA) or "data").expanduser(),
        results_dir=results,
        tracking_uri=tracking_uri or default_tracking_uri(results),
    )
    out = []
    for check in checks if checks is not None else CHECKS:
        started = time.perf_counter()
        try:
            result = check(ctx)
        except Exception as err:  # noqa: BLE001 - one broken check must not hide the others
            name = check.__name__.removeprefix("check_")
            result = Check(
                name,
                "fail",
                f"the check itself failed: {type(err).__name__}: {err}",
                "run with --debug for the traceback and report it",
            )
        if result.status not in STATUSES:
            raise ValueError(f"check {result.name} returned status {result.status!r}")
        row = asdict(result)
        row["seconds"] = round(time.perf_counter() - started, 3)
        out.append(row)
    return {
        "ok": all(c["status"] != "fail" for c in out),
        "ready": all(c["status"] == "ok" for c in out),
        "counts": {s: sum(c["status"] == s for c in out) for s in STATUSES},
        "data_root": str(ctx.data_root),
        "results_dir": str(ctx.results_dir),
        "tracking_uri": ctx.tracking_uri,
        "checks": out,
    }
