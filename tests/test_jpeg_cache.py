"""The compact JPEG cache (dataset.cache=jpeg): same image sizes as the uint8 cache (so the same
crop boxes for a seed), pixels within a stated tolerance of the uint8 cache's, smaller on disk,
reused and pickled like the uint8 store, selectable from the config without touching the hash of
uint8 configs, and ``nirbench bench cache`` prints its keys."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
import torch

import real_fixtures as rf
from nirbench.harness.bench.cache_size import generate
from nirbench.harness.config import ConfigError, load_config
from nirbench.harness.data.real import load_real
from nirbench.harness.data.real.jpeg_cache import JpegStore
from nirbench.harness.data.real.transforms import IMAGENET_STD

CPU = torch.device("cpu")
ONE_LEVEL = 1.0 / (255.0 * min(IMAGENET_STD))
# Tolerance, in grey levels (0-255), of the JPEG cache (quality 95) against the uint8 cache, on
# CUB-like generated photographs (smooth scenes with sensor noise, harness.bench.cache_size):
# the mean absolute difference per image. Measured 1.5-1.6 (8.5x smaller); single pixels on sharp
# edges move more (JPEG ringing), which a mean bound allows and a max bound would not.
MEAN_LEVELS = 2.0


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    base = tmp_path_factory.mktemp("jpeg")
    truth = rf.make_cub_official(base / "copy", per_class=(4, 5, 4, 4, 5, 4, 3, 3))
    # the fixtures' images are tiny blocky noise (about 40 px), nothing like a photograph: replace
    # them by CUB-like generated photographs (500 x 333-375, sensor noise)
    for rel, photo in zip(truth.paths, generate("cub200", base / "photos", len(truth.paths))):
        shutil.copyfile(photo, truth.folder / rel)
    uint8 = load_real("cub200", truth.root, base / "cache", allow_partial=True, progress=False)
    jpeg = load_real(
        "cub200", truth.root, base / "cache", allow_partial=True, cache="jpeg", progress=False
    )
    return uint8, jpeg


def test_same_sizes_and_pixels_within_tolerance(both):
    uint8, jpeg = both
    assert isinstance(jpeg.train.store, JpegStore) and jpeg.info["cache_kind"] == "jpeg"
    a, b = uint8.train.store, jpeg.train.store
    assert np.array_equal(a.heights, b.heights) and np.array_equal(a.widths, b.widths)
    diffs = [np.abs(a.image(i).astype(int) - b.image(i).astype(int)).mean() for i in range(len(a))]
    assert max(diffs) < MEAN_LEVELS
    assert b.meta["bytes"] * 5 < a.meta["bytes"]


def test_batches_share_crop_boxes_and_stay_within_tolerance(both):
    uint8, jpeg = both
    idx = torch.arange(len(uint8.train))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    boxes_a = uint8.train.train_boxes(idx, g1)
    boxes_b = jpeg.train.train_boxes(idx, g2)
    assert all(torch.equal(x, y) for x, y in zip(boxes_a, boxes_b))
    a = uint8.train.train_batch(idx, CPU, torch.Generator().manual_seed(5))
    b = jpeg.train.train_batch(idx, CPU, torch.Generator().manual_seed(5))
    assert a.shape == b.shape == (len(idx), 3, 224, 224)
    assert (a - b).abs().mean().item() < MEAN_LEVELS * ONE_LEVEL
    ea, eb = uint8.test.eval_batch(0, 6, CPU), jpeg.test.eval_batch(0, 6, CPU)
    assert (ea - eb).abs().mean().item() < MEAN_LEVELS * ONE_LEVEL


def test_jpeg_cache_is_reused_and_pickles_as_its_folder(both, tmp_path):
    _, jpeg = both
    store = jpeg.train.store
    again = pickle.loads(pickle.dumps(store))
    assert len(pickle.dumps(store)) < 2000 and np.array_equal(again.image(2), store.image(2))
    decoded = store.images([0, 2, 1])
    assert [d.shape for d in decoded] == [store.image(i).shape for i in (0, 2, 1)]


def test_config_knob_and_hash():
    cub = ["dataset.name=cub200", "dataset.root=/data"]
    assert load_config(None, cub + ["dataset.cache=uint8"]).config_hash == "ed46d90e71a147e4"
    jpeg = load_config(None, cub + ["dataset.cache=jpeg"])
    assert jpeg.config_hash != "ed46d90e71a147e4" and jpeg.to_dict()["dataset"]["cache"] == "jpeg"
    with pytest.raises(ConfigError, match="must be one of"):
        load_config(None, cub + ["dataset.cache=png"])
    with pytest.raises(ConfigError, match="real datasets only"):
        load_config(None, ["dataset.cache=jpeg"])


def test_bench_cache_json_keys(capsys):
    from nirbench.harness.cli.main import build_parser

    args = build_parser().parse_args(
        ["bench", "cache", "--datasets", "sop", "--images", "3", "--workers", "1", "--json"]
    )
    assert args.func(args) == 0
    result = json.loads(capsys.readouterr().out)
    row = result["datasets"]["sop"]
    for key in (
        "uint8_bytes_per_image",
        "jpeg_bytes_per_image",
        "jpeg_size_ratio",
        "uint8_gb",
        "jpeg_gb",
        "mean_aspect",
        "official_images",
        "uint8_formula_bytes",
    ):
        assert key in row, key
    assert row["uint8_bytes_per_image"] == row["uint8_formula_bytes"]  # the exact formula
    assert row["official_images"] == 120053
    assert row["uint8_gb"] == pytest.approx(row["uint8_bytes_per_image"] * 120053 / 1e9)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_jpeg_cache_decodes_on_cuda_like_the_cpu(both):
    """nvjpeg and libjpeg-turbo may round the IDCT and upsampling differently: within 2 grey
    levels on average, and the batches within MEAN_LEVELS of the uint8 cache's."""
    uint8, jpeg = both
    gpu = torch.device("cuda")
    store = jpeg.train.store
    on_gpu = store.images([0, 1, 2], gpu)
    assert on_gpu[0].device.type == "cuda"
    for i, t in enumerate(on_gpu):
        cpu = torch.from_numpy(np.ascontiguousarray(store.image(i))).permute(2, 0, 1)
        assert (t.cpu().int() - cpu.int()).abs().float().mean().item() < 2.0
    idx = torch.arange(len(jpeg.train))
    a = uint8.train.train_batch(idx, CPU, torch.Generator().manual_seed(5))
    b = jpeg.train.train_batch(idx, gpu, torch.Generator().manual_seed(5))
    assert (a - b.cpu()).abs().mean().item() < MEAN_LEVELS * ONE_LEVEL
    e = jpeg.test.eval_batch(0, 6, gpu)
    assert e.device.type == "cuda" and e.shape == (6, 3, 224, 224)
