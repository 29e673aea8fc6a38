"""The cached pipeline of the real datasets: the memory-mapped cache is built once and reused,
rebuilt when the file list changes; batches have the right shapes and are reproducible; the
evaluation batch equals torchvision's Resize(256) + CenterCrop(224) + ToTensor + Normalize, the
training batch equals PIL's crop + resize + flip for the same boxes, and the crop boxes follow
torchvision's RandomResizedCrop sampling rule."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

import real_fixtures as rf
from nirbench.harness.data.real import CachedImageSplit, list_dataset, load_real
from nirbench.harness.data.real import decode as decode_module
from nirbench.harness.data.real.cache import PixelStore, decode_resized, resized_size
from nirbench.harness.data.real.reference import eval_transform, pil_loader
from nirbench.harness.data.real.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RATIO,
    SCALE,
    center_boxes,
    sample_crop_boxes,
)

CPU = torch.device("cpu")
# One grey level in normalised units for the channel with the smallest std: the most a uint8
# rounding difference can move a pixel.
ONE_LEVEL = 1.0 / (255.0 * min(IMAGENET_STD))


@pytest.fixture(scope="module")
def cub(tmp_path_factory):
    """A miniature CUB (8 classes: 4 train, 4 test), loaded once for the read-only tests."""
    base = tmp_path_factory.mktemp("cub")
    truth = rf.make_cub_official(base / "copy", per_class=(4, 5, 4, 4, 5, 4, 3, 3))
    bundle = load_real("cub200", truth.root, base / "cache", allow_partial=True, progress=False)
    return truth, bundle


@pytest.fixture
def count_decodes(monkeypatch) -> list[str]:
    calls: list[str] = []
    original = decode_module.decode_resized

    def counting(path, short_side=decode_module.SHORT_SIDE):
        calls.append(str(path))
        return original(path, short_side)

    monkeypatch.setattr(decode_module, "decode_resized", counting)
    return calls


def test_cache_is_reused_then_rebuilt_when_the_file_list_changes(tmp_path, count_decodes):
    truth = rf.make_cub_flat(tmp_path / "copy")
    cache = tmp_path / "cache"
    first = load_real("cub200", truth.root, cache, allow_partial=True, progress=False)
    assert first.info["from_cache"] is False and len(count_decodes) == 9
    pixels = first.train.store.directory / "pixels.u8"
    stamp = pixels.stat().st_mtime_ns

    second = load_real("cub200", truth.root, cache, allow_partial=True, progress=False)
    assert second.info["from_cache"] is True
    assert len(count_decodes) == 9  # nothing decoded again
    assert second.train.store.directory == first.train.store.directory
    assert pixels.stat().st_mtime_ns == stamp
    assert torch.equal(second.test.eval_batch(0, 4, CPU), first.test.eval_batch(0, 4, CPU))

    rf.write_jpeg(truth.folder / "images/104.Bird_104/extra.jpg", np.random.default_rng(9))
    third = load_real("cub200", truth.root, cache, allow_partial=True, progress=False)
    assert third.info["from_cache"] is False and len(count_decodes) == 9 + 10
    assert third.train.store.directory != first.train.store.directory
    assert len(third.test) == len(first.test) + 1


def test_damaged_cache_is_rebuilt_with_a_warning(tmp_path):
    truth = rf.make_sop(tmp_path / "copy")
    first = load_real("sop", truth.root, tmp_path / "cache", allow_partial=True, progress=False)
    expected = first.test.eval_batch(0, 3, CPU)
    pixels = first.train.store.directory / "pixels.u8"
    data = pixels.read_bytes()
    del first  # unmap before truncating: reading a mapped page past the new end is a SIGBUS
    pixels.write_bytes(data[:100])
    with pytest.warns(RuntimeWarning, match="unusable"):
        again = load_real("sop", truth.root, tmp_path / "cache", allow_partial=True, progress=False)
    assert again.info["from_cache"] is False
    assert torch.equal(again.test.eval_batch(0, 3, CPU), expected)


def test_process_pool_decode_equals_in_process(tmp_path, monkeypatch):
    from nirbench.harness.data.real.cache import open_or_build
    from nirbench.harness.data.real.check import check_dataset

    truth = rf.make_cub_flat(tmp_path / "copy")
    listing = list_dataset("cub200", truth.root)
    args = ("cub200", listing.layout, listing.base, listing.paths)
    serial, _ = open_or_build(*args, tmp_path / "serial", workers=1, progress=False)
    monkeypatch.setattr(decode_module, "IN_PROCESS_BELOW", 0)  # decode and check share it
    pooled, _ = open_or_build(*args, tmp_path / "pooled", workers=2, progress=False)
    assert len(pooled) == len(serial) == len(listing.paths)
    assert all(np.array_equal(pooled.image(k), serial.image(k)) for k in range(len(serial)))
    rf.corrupt(truth.folder / listing.paths[-1])
    report = check_dataset("cub200", truth.root, workers=2, progress=False)
    assert report["unreadable_count"] == 1 and listing.paths[-1] in report["unreadable"][0]


@pytest.mark.parametrize("size", [(500, 375), (375, 500), (200, 120), (256, 300), (1000, 256)])
def test_decode_matches_torchvision_resize_256(size, tmp_path):
    from torchvision import transforms as T

    path = tmp_path / "x.jpg"
    rf.write_jpeg(path, np.random.default_rng(0), size)
    expected = np.asarray(T.Resize(256)(pil_loader(path)))
    assert resized_size(*size) == (expected.shape[1], expected.shape[0])
    assert np.array_equal(decode_resized(path), expected)


def test_batch_shapes_and_dtypes(cub):
    _, bundle = cub
    g = torch.Generator().manual_seed(0)
    x = bundle.train.train_batch(torch.tensor([0, 3, 3, 7]), CPU, g)
    assert x.shape == (4, 3, 224, 224) and x.dtype == torch.float32 and x.device == CPU
    e = bundle.test.eval_batch(2, 7, CPU)
    assert e.shape == (5, 3, 224, 224) and e.dtype == torch.float32
    assert bundle.test.eval_batch(len(bundle.test), len(bundle.test) + 5, CPU).shape[0] == 0


def test_eval_batch_equals_torchvision_reference(cub):
    """Tolerance 1e-5: the cache holds PIL's own Resize(256) output and the centre crop is an
    integer crop at torchvision's offsets, so the pixels are identical; what remains is float
    rounding ((x/255 - mean)/std versus (x - 255 mean) / (255 std), about 5e-7)."""
    truth, bundle = cub
    listing = list_dataset("cub200", truth.root)
    test_files = [listing.base / p for p, t in zip(listing.paths, listing.train) if not t]
    reference = torch.stack([eval_transform()(pil_loader(f)) for f in test_files])
    ours = bundle.test.eval_batch(0, len(bundle.test), CPU)
    assert (ours - reference).abs().max().item() < 1e-5


def test_train_batch_equals_pil_crop_resize_flip_for_the_same_boxes(cub):
    """Tolerance: at most one grey level per pixel, and almost never that (mean < 0.01 levels).
    Both sides use the same antialiased bilinear filter on the same cached pixels (torch's uint8
    kernel follows PIL's), but round their fixed-point arithmetic independently."""
    import torchvision.transforms.functional as TF

    _, bundle = cub
    split = bundle.train
    idx = torch.arange(len(split))
    g = torch.Generator().manual_seed(5)
    state = g.get_state()
    boxes, flips = split.train_boxes(idx, g)
    g.set_state(state)
    ours = split.train_batch(idx, CPU, g)
    assert flips.any() and not flips.all()  # both branches exercised
    reference = []
    for k, ((i, j, h, w), flip) in enumerate(zip(boxes.tolist(), flips.tolist())):
        crop = TF.resized_crop(
            Image.fromarray(split.image(k)), i, j, h, w, [224, 224], TF.InterpolationMode.BILINEAR
        )
        crop = TF.hflip(crop) if flip else crop
        reference.append(TF.normalize(TF.to_tensor(crop), IMAGENET_MEAN, IMAGENET_STD))
    diff = (ours - torch.stack(reference)).abs()
    assert diff.max().item() <= ONE_LEVEL + 1e-4
    assert diff.mean().item() < 0.01 * ONE_LEVEL


def test_same_generator_same_batch(cub):
    _, bundle = cub
    idx = torch.tensor([1, 2, 5, 8, 8])
    a = bundle.train.train_batch(idx, CPU, torch.Generator().manual_seed(11))
    b = bundle.train.train_batch(idx, CPU, torch.Generator().manual_seed(11))
    c = bundle.train.train_batch(idx, CPU, torch.Generator().manual_seed(12))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[3], a[4])  # the same image twice gets two different crops
    assert torch.equal(bundle.test.eval_batch(0, 4, CPU), bundle.test.eval_batch(0, 4, CPU))


def test_output_pool_never_overwrites_a_batch_still_held():
    from nirbench.harness.data.real.transforms import OutputPool

    pool = OutputPool(keep=2)
    a = pool.take((2, 3))
    a.fill_(1.0)
    view = a[0]  # a view alone keeps the buffer busy
    del a
    b = pool.take((2, 3))
    assert b.data_ptr() != view.data_ptr()
    b.fill_(2.0)
    assert (view == 1.0).all()
    address = b.data_ptr()
    del b
    c = pool.take((2, 3))
    assert c.data_ptr() == address  # recycled once nobody holds it
    held = [pool.take((2, 3)) for _ in range(4)]  # beyond keep: fresh, still distinct
    assert len({t.data_ptr() for t in held + [c, view]}) == 6


def test_crop_boxes_obey_torchvision_bounds():
    g = torch.Generator().manual_seed(0)
    heights = torch.tensor([256, 256, 341, 256, 256, 900] * 500)
    widths = torch.tensor([341, 256, 256, 600, 1000, 256] * 500)
    boxes, flips = sample_crop_boxes(heights, widths, g)
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (h >= 1).all() and (w >= 1).all()
    assert (top + h <= heights).all() and (left + w <= widths).all()
    area = (h * w).double() / (heights * widths).double()
    aspect = w.double() / h.double()
    # rounding w and h to integers moves area and aspect by at most about 1 px per side
    slack_area = (h + w + 1).double() / (heights * widths).double()
    slack_aspect = 1.0 / h.double() + aspect / h.double()
    fallback = (h == heights) & (w == widths) | (h == heights) & (left == (widths - w) // 2) & (
        top == 0
    ) & ((w - torch.round(h * RATIO[1])).abs() < 1)
    assert ((area >= SCALE[0] - slack_area) | fallback).all() and (area <= 1).all()
    assert (
        (aspect >= RATIO[0] - slack_aspect) & (aspect <= RATIO[1] + slack_aspect) | fallback
    ).all()
    assert 0.45 < flips.double().mean() < 0.55


def test_crop_boxes_follow_torchvision_distribution():
    """Two-sample KS tests against torchvision's own RandomResizedCrop.get_params on the same
    image size: area fraction, log aspect and relative crop centre."""
    from scipy.stats import ks_2samp
    from torchvision.transforms import RandomResizedCrop

    n, H, W = 3000, 256, 341
    # fixed seeds, so the test is deterministic; checked against n = 150,000 (KS p = 0.29)
    g = torch.Generator().manual_seed(3)
    ours = sample_crop_boxes(torch.full((n,), H), torch.full((n,), W), g)[0].double()
    torch.manual_seed(4)
    image = torch.empty(3, H, W)
    theirs = torch.tensor(
        [RandomResizedCrop.get_params(image, list(SCALE), list(RATIO)) for _ in range(n)]
    ).double()

    def features(b):
        top, left, h, w = b.T
        return {
            "area": h * w / (H * W),
            "log_aspect": torch.log(w / h),
            "cy": (top + h / 2) / H,
            "cx": (left + w / 2) / W,
        }

    a, b = features(ours), features(theirs)
    for key in a:
        assert ks_2samp(a[key].numpy(), b[key].numpy()).pvalue > 1e-3, key


def test_crop_box_fallback_equals_torchvision():
    """When no attempt fits (scale (1, 1) on a 4:1 image), both take the same centre crop."""
    from torchvision.transforms import RandomResizedCrop

    H, W, scale = 256, 1024, (1.0, 1.0)
    expected = RandomResizedCrop.get_params(torch.empty(3, H, W), list(scale), list(RATIO))
    boxes, _ = sample_crop_boxes(
        torch.tensor([H, W // 4]),
        torch.tensor([W, H]),
        torch.Generator().manual_seed(0),
        scale=scale,
    )
    assert tuple(boxes[0].tolist()) == expected == (0, (W - 341) // 2, 256, 341)
    # portrait: the aspect is clamped to 3/4 from the other side
    portrait = RandomResizedCrop.get_params(
        torch.empty(3, W // 4 * 4, H // 4), list(scale), list(RATIO)
    )
    assert (
        tuple(
            sample_crop_boxes(
                torch.tensor([W // 4 * 4]), torch.tensor([H // 4]), torch.Generator(), scale=scale
            )[0][0].tolist()
        )
        == portrait
    )


def test_center_boxes_match_torchvision_offsets():
    from torchvision.transforms import CenterCrop

    for h, w in ((256, 341), (341, 256), (256, 257), (257, 300), (224, 224)):
        image = torch.arange(h * w).view(1, h, w)
        crop = CenterCrop(224)(image)
        i, j, bh, bw = center_boxes(torch.tensor([h]), torch.tensor([w]))[0].tolist()
        assert torch.equal(image[:, i : i + bh, j : j + bw], crop)


def test_subset_keeps_the_cache_and_validation_split_works(cub):
    from nirbench.harness.data.validation import split_validation

    _, bundle = cub
    val = split_validation(bundle, fraction=0.5, seed=0)
    assert isinstance(val.train, CachedImageSplit) and isinstance(val.test, CachedImageSplit)
    assert val.train.store is bundle.train.store
    assert len(val.train) + len(val.test) == len(bundle.train)
    assert val.test.eval_batch(0, 2, CPU).shape == (2, 3, 224, 224)
    # the held-out images are the training split's own pixels
    kept = set(val.test.ids.tolist()) | set(val.train.ids.tolist())
    assert kept == set(bundle.train.ids.tolist())


def test_split_validates_labels_and_has_no_images_tensor(cub):
    _, bundle = cub
    store = bundle.train.store
    with pytest.raises(ValueError, match="contiguous"):
        CachedImageSplit(store, np.array([0, 1, 2]), torch.tensor([0, 2, 2]))
    with pytest.raises(ValueError, match="one entry per image"):
        CachedImageSplit(store, np.array([0, 1]), torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="image ids"):
        CachedImageSplit(store, np.array([0, len(store)]), torch.tensor([0, 1]))
    with pytest.raises(AttributeError, match="train_batch / eval_batch"):
        bundle.train.images  # noqa: B018


def test_store_pickles_as_its_folder(cub):
    _, bundle = cub
    store = bundle.train.store
    blob = pickle.dumps(store)
    assert len(blob) < 2000  # the folder, not the pixels
    again = pickle.loads(blob)
    assert np.array_equal(again.image(3), store.image(3))
    assert isinstance(again, PixelStore)


def test_engine_trains_one_epoch_on_a_cached_split(cub):
    """The engine's whole path: class-balanced batches through train_batch, then embed() over
    eval_batch (channels-last float batches into the backbone) and the metrics."""
    from nirbench.harness.config import load_config
    from nirbench.harness.train.engine import build_trainer, fit

    truth, bundle = cub
    cfg = load_config(
        None,
        [
            "dataset.name=cub200",
            f"dataset.root={truth.root}",
            "backbone.name=small_cnn",
            "backbone.pretrained=false",
            "backbone.embed_dim=16",
            "train.epochs=1",
            "train.batch_size=8",
            "train.samples_per_class=2",
            "train.warmup_epochs=0",
            "eval.recall_at=1,2",
            "eval.nmi=false",
        ],
    )
    trainer = build_trainer(cfg, bundle, CPU)
    record = fit(trainer, bundle)
    assert trainer.epoch == 1 and math.isfinite(record["loss/total"])
    assert 0.0 <= record["test/recall@1"] <= 1.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_batches_match_cpu(cub):
    """On a GPU the crops are resized in float32 (no uint8 rounding): within one grey level."""
    _, bundle = cub
    gpu = torch.device("cuda")
    idx = torch.arange(len(bundle.train))
    cpu_batch = bundle.train.train_batch(idx, CPU, torch.Generator().manual_seed(4))
    gpu_batch = bundle.train.train_batch(idx, gpu, torch.Generator().manual_seed(4))
    assert gpu_batch.device.type == "cuda"
    assert (gpu_batch.cpu() - cpu_batch).abs().max().item() <= ONE_LEVEL + 1e-3
    e_cpu = bundle.test.eval_batch(0, len(bundle.test), CPU)
    e_gpu = bundle.test.eval_batch(0, len(bundle.test), gpu)
    assert (e_gpu.cpu() - e_cpu).abs().max().item() < 1e-5


def test_one_level_is_what_it_says():
    assert math.isclose(ONE_LEVEL, 1 / (255 * 0.224))
