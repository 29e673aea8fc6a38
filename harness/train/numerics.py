"""What a run's numbers were computed with (issue 23): CPU results are bitwise reproducible only
for one ATen kernel set (``torch.backends.cpu.get_cpu_capability()``) and one thread count; across
machines they move like another seed. :func:`collect_numerics` returns the ``numerics.*`` tags
and ``nmi.kmeans_engine`` (the one k-means engine the run's NMI comes from); the runner records
them on every run and, on a resume, compares them with the run's original tags
(:func:`changes_on_resume`). No MLflow here: plain strings in, plain strings out."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from nirbench.harness.evaluation.clustering import resolve_kmeans_engine

NUMERICS_TAGS = (
    "numerics.cpu_capability",
    "numerics.threads",
    "numerics.cpu_model",
    "numerics.cuda",
    "numerics.cudnn",
    "numerics.device",
    "numerics.aten_cpu_capability_env",
    "nmi.kmeans_engine",
)
CHANGED_TAG = "numerics.changed_on_resume"
# The values whose change on a resume makes the rest of the run numerically another machine.
RESUME_CHECKED = ("cpu_capability", "threads", "device")


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's "model name" from /proc/cpuinfo, else ``platform.processor()``, else "unknown"."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def collect_numerics(
    device: torch.device | str = "cpu", kmeans_engine: str = "auto"
) -> dict[str, str]:
    """The numerics tags of a run training on ``device`` now (call it after the run's thread
    count is set), with ``kmeans_engine`` (``eval.kmeans_engine``) resolved for that device."""
    device = torch.device(device)
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = device.type if device.type != "cpu" else "cpu"
    return {
        "numerics.cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "numerics.threads": str(torch.get_num_threads()),
        "numerics.cpu_model": cpu_model(),
        "numerics.cuda": torch.version.cuda or "none",
        "numerics.cudnn": str(cudnn) if cudnn else "none",
        "numerics.device": name,
        "numerics.aten_cpu_capability_env": os.environ.get("ATEN_CPU_CAPABILITY", ""),
        "nmi.kmeans_engine": resolve_kmeans_engine(kmeans_engine, device.type),
    }


def changes_on_resume(original: dict[str, str], now: dict[str, str]) -> list[str]:
    """``"<name>: <old> -> <new>"`` for each of capability, threads and device that differs between
    the run's original tags and now (a value the run never recorded is no change)."""
    out = []
    for name in RESUME_CHECKED:
        key = f"numerics.{name}"
        if key in original and original[key] != now.get(key):
            out.append(f"{name}: {original[key]} -> {now.get(key)}")
    return out
