"""The generated arrays are cached as ``<cache_dir>/<name>-<key>.npz`` (the key hashes the name,
seed, generator parameters and ``GENERATOR_VERSION``), written atomically; an unreadable cache
file is regenerated with a warning."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
import warnings
from typing import Any

import numpy as np
import torch

from nirbench.harness.data.base import DatasetBundle, ImageSplit
from nirbench.harness.data.synthetic.generate import generate
from nirbench.harness.data.synthetic.params import (
    CHUNK,
    GENERATOR_VERSION,
    IMAGE_SIZE,
    SYNTH_PARAMS,
    SynthParams,
)


def cache_key(name: str, seed: int, params: SynthParams | None = None) -> str:
    p = params if params is not None else SYNTH_PARAMS[name]
    blob = json.dumps(
        {
            "name": name,
            "seed": int(seed),
            "params": dataclasses.asdict(p),
            "version": GENERATOR_VERSION,
            "chunk": CHUNK,
            "size": IMAGE_SIZE,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def write_atomic(path: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    d = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "wb") as fh:
            payload = {"meta_json": np.array(json.dumps(meta)), **arrays}
            np.savez(fh, **payload)  # type: ignore[arg-type]  # numpy's stub confuses **kwds
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


_EXPECTED = ("train_images", "train_labels", "test_images", "test_labels")


def read_cache(path: str, key: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "meta_json"}
        meta = json.loads(str(z["meta_json"]))
    if meta.get("cache_key") != key or any(k not in arrays for k in _EXPECTED):
        raise ValueError("cache content does not match its key")
    for s in ("train", "test"):
        im, lb = arrays[f"{s}_images"], arrays[f"{s}_labels"]
        if im.dtype != np.uint8 or im.ndim != 4 or lb.shape != (im.shape[0],):
            raise ValueError(f"cache holds malformed {s} arrays")
    return arrays, meta


def load_synthetic(
    name: str, root: str | None, cache_dir: str, seed: int = 0, params: SynthParams | None = None
) -> DatasetBundle:
    """Load (or generate and cache) one embedded dataset; ``root``, if given, is the cache dir;
    ``params`` replace the registered generator parameters (the pretraining's frozen copy)."""
    if name not in SYNTH_PARAMS:
        raise ValueError(
            f"unknown synthetic dataset {name!r}; valid: {', '.join(sorted(SYNTH_PARAMS))}"
        )
    directory = root if root is not None else cache_dir
    os.makedirs(directory, exist_ok=True)
    key = cache_key(name, seed, params)
    path = os.path.join(directory, f"{name}-{key}.npz")
    arrays = meta = None
    from_cache = False
    if os.path.exists(path):
        try:
            arrays, meta = read_cache(path, key)
            from_cache = True
        except Exception as exc:  # noqa: BLE001 - any unreadable cache is rebuilt, never fatal
            warnings.warn(
                f"synthetic cache {path} is unreadable ({type(exc).__name__}: {exc}); regenerating",
                RuntimeWarning,
                stacklevel=2,
            )
    if arrays is None:
        t0 = time.perf_counter()
        arrays, meta = generate(name, seed, params)
        meta["cache_key"] = key
        meta["generation_seconds"] = round(time.perf_counter() - t0, 3)
        write_atomic(path, arrays, meta)
    assert meta is not None
    info: dict[str, Any] = dict(meta)
    info.update({k[len("info_") :]: v for k, v in arrays.items() if k.startswith("info_")})
    info["cache_file"] = path
    info["from_cache"] = from_cache
    train = ImageSplit(
        torch.from_numpy(np.ascontiguousarray(arrays["train_images"])),
        torch.from_numpy(np.ascontiguousarray(arrays["train_labels"])),
    )
    test = ImageSplit(
        torch.from_numpy(np.ascontiguousarray(arrays["test_images"])),
        torch.from_numpy(np.ascontiguousarray(arrays["test_labels"])),
    )
    return DatasetBundle(name=name, train=train, test=test, info=info)
