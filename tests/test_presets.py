"""The paper presets reproduce PAPER.md section 4 exactly; the fair presets differ only in the
regularizer. The expected values below are copied from PAPER.md, not from the preset files."""

from __future__ import annotations

from pathlib import Path

import pytest

from nirbench.harness.config import CONFIG_DIR, load_config

PRESETS = CONFIG_DIR / "presets"
# dataset: (epochs, milestones, gamma, NIR warmup, w_align, flow lr mult)
PAPER = {
    "cub200": (100, None, None, 1, 0.0075, 50.0),
    "cars196": (100, None, None, 1, 0.01, 50.0),
    "sop": (300, (140, 230), 0.2, 5, 0.3, 1.0),
}


def load(variant: str, dataset: str, arm: str, *extra: str):
    return load_config(
        PRESETS / variant / f"{dataset}-{arm}.yaml", ["dataset.root=/data/somewhere", *extra]
    )


def diff(a, b) -> set[str]:
    fa, fb = a.flat(), b.flat()
    return {k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k)}


@pytest.mark.parametrize("dataset", sorted(PAPER))
def test_paper_preset_matches_the_published_settings(dataset):
    epochs, milestones, gamma, warmup, w_align, flow = PAPER[dataset]
    base, nir = load("paper", dataset, "baseline"), load("paper", dataset, "nir")
    for cfg in (base, nir):
        assert cfg.dataset.name == dataset
        assert (
            cfg.backbone.name,
            cfg.backbone.embed_dim,
            cfg.backbone.pretrained,
            cfg.backbone.freeze_bn,
        ) == ("resnet50", 128, True, True)
        t = cfg.train
        assert (t.batch_size, t.samples_per_class, t.lr, t.weight_decay, t.epochs) == (
            90,
            2,
            1e-5,
            4e-4,
            epochs,
        )
        assert t.lr_milestones == milestones
        if milestones:
            assert t.lr_gamma == gamma
    assert (base.train.proxy_lr_mult, base.train.warmup_epochs, base.regularizer) == (
        2000.0,
        0,
        None,
    )
    assert (nir.train.proxy_lr_mult, nir.train.warmup_epochs) == (4000.0, warmup)
    r = nir.regularizer.params
    assert (r["weight"], r["weight_convention"], r["form"], r["flow_lr_mult"]) == (
        w_align,
        "w_align",
        "exp",
        flow,
    )
    assert (r["blocks"], r["subnet_depth"], r["subnet_width"], r["clamp"], r["conditioning"]) == (
        5,
        8,
        128,
        2.0,
        "dense",
    )
    # The published arms differ in exactly these settings, and nothing else.
    assert {k.split(".")[0] for k in diff(base, nir)} == {"regularizer", "train"}
    assert {k for k in diff(base, nir) if k.startswith("train.")} == {
        "train.proxy_lr_mult",
        "train.warmup_epochs",
    }


@pytest.mark.parametrize("dataset", sorted(PAPER))
def test_fair_preset_arms_differ_only_in_the_regularizer(dataset):
    base, nir = load("fair", dataset, "baseline"), load("fair", dataset, "nir")
    assert {k.split(".")[0] for k in diff(base, nir)} == {"regularizer"}
    assert base.train.warmup_epochs == nir.train.warmup_epochs == PAPER[dataset][3]
    assert load("paper", dataset, "nir").regularizer == nir.regularizer


@pytest.mark.parametrize("method,source", [("proxy_anchor", "method"), ("multi_similarity", "own")])
def test_presets_serve_any_method(method, source):
    cfg = load("paper", "cub200", "nir", f"method={method}")
    assert cfg.regularizer.params["proxy_source"] == source


def test_every_preset_file_is_covered():
    files = sorted(str(p.relative_to(PRESETS)) for p in Path(PRESETS).rglob("*.yaml"))
    assert files == sorted(
        f"{v}/{d}-{a}.yaml" for v in ("paper", "fair") for d in PAPER for a in ("baseline", "nir")
    )
