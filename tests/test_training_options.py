"""Paper-scale training switches on the CPU: lr milestones (and their resume), bf16 autocast,
channels_last, double pooling, and the config checks that guard them."""

from __future__ import annotations

import pytest
import torch

from nirbench.harness.config import ConfigError, load_config
from nirbench.harness.data import load_dataset
from nirbench.harness.train.engine import build_trainer, fit


def _fit(tmp_path, overrides, **kwargs):
    cfg = load_config(None, overrides)
    bundle = load_dataset(cfg.dataset.name, None, tmp_path)
    trainer = build_trainer(cfg, bundle, torch.device("cpu"))
    fit(trainer, bundle, **kwargs)
    return trainer


def test_lr_milestones_follow_multistep_and_survive_a_resume(tmp_path, tiny_overrides):
    over = tiny_overrides + [
        "train.epochs=4",
        "train.lr_milestones=1,3",
        "train.lr_gamma=0.5",
        "train.warmup_epochs=0",
    ]
    trainer = _fit(tmp_path, over)
    assert [r["lr/body"] for r in trainer.history] == pytest.approx([1e-3, 5e-4, 5e-4, 2.5e-4])

    # Interrupt after 2 epochs, resume from the checkpoint: same schedule, same final metrics.
    ckpt = tmp_path / "ckpt.pt"
    cfg = load_config(None, over)
    bundle = load_dataset(cfg.dataset.name, None, tmp_path)
    fit_two = build_trainer(cfg, bundle, torch.device("cpu"))
    _fit_epochs(fit_two, bundle, 2, ckpt)
    resumed = build_trainer(cfg, bundle, torch.device("cpu"))
    resumed.load_state_dict(torch.load(ckpt, weights_only=False))
    fit(resumed, bundle)
    assert [r["lr/body"] for r in resumed.history] == [r["lr/body"] for r in trainer.history]
    assert resumed.history[-1]["test/recall@1"] == trainer.history[-1]["test/recall@1"]


def _fit_epochs(trainer, bundle, epochs, ckpt):
    """fit() up to ``epochs`` by stopping from the epoch callback, as a kill would."""

    class Stop(Exception):
        pass

    def stop(epoch, record):
        if epoch == epochs:
            raise Stop

    with pytest.raises(Stop):
        fit(trainer, bundle, checkpoint_path=ckpt, on_epoch_end=stop)


def test_bf16_autocast_and_channels_last_train_on_the_cpu(tmp_path, tiny_overrides):
    trainer = _fit(
        tmp_path,
        tiny_overrides + ["train.precision=bf16", "train.channels_last=true", "regularizer=nir"],
    )
    last = trainer.history[-1]
    assert all(torch.isfinite(torch.tensor(v)) for v in last.values())
    # The losses (and NIR's flow) stay in fp32 under autocast: no parameter changed dtype.
    assert {p.dtype for p in trainer.objective.parameters()} == {torch.float32}


@pytest.mark.parametrize(
    "override,match",
    [
        ("train.lr_milestones=3,1", "increasing"),
        ("train.lr_milestones=[0]", "increasing"),
        ("train.lr_gamma=0", "lr_gamma"),
        ("train.precision=fp16", "precision"),
        ("backbone.pooling=max", "pooling"),
        ("backbone.pooling=double", "ResNet"),
    ],
)
def test_bad_training_switches_are_refused_at_load_time(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, ["train.epochs=5", override])


def test_double_pooling_adds_max_to_average_pooling():
    from nirbench.harness.train.models import build_model

    torch.manual_seed(0)
    avg = build_model("resnet18", 8, False, False, "average").eval()
    torch.manual_seed(0)
    dbl = build_model("resnet18", 8, False, False, "double").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = avg.body.net.layer4(
            avg.body.net.layer3(
                avg.body.net.layer2(
                    avg.body.net.layer1(
                        avg.body.net.maxpool(
                            avg.body.net.relu(avg.body.net.bn1(avg.body.net.conv1(x)))
                        )
                    )
                )
            )
        )
        want = feats.mean((2, 3)) + feats.amax((2, 3))
        assert torch.allclose(dbl.body(x), want, atol=1e-5)


@pytest.mark.parametrize(
    "method,groups", [("proxy_anchor", {"proxies"}), ("multi_similarity", {"nir_proxies"})]
)
def test_train_proxy_lr_mult_overrides_every_proxy_table(tmp_path, tiny_overrides, method, groups):
    cfg = load_config(
        None,
        tiny_overrides
        + [
            f"method={method}",
            "regularizer=nir",
            "regularizer.proxy_source=auto",
            "train.proxy_lr_mult=7",
            "train.lr=0.01",
        ],
    )
    trainer = build_trainer(
        cfg, load_dataset(cfg.dataset.name, None, tmp_path), torch.device("cpu")
    )
    lrs = {g["name"]: g["lr"] for g in trainer.optimizer.param_groups}
    assert {n for n, lr in lrs.items() if lr == pytest.approx(0.07)} == groups
    assert lrs["flow"] == pytest.approx(0.01 * cfg.regularizer.params["flow_lr_mult"])


def test_structure_metrics_are_logged_every_epoch_unless_switched_off(tmp_path, tiny_overrides):
    from nirbench.harness.evaluation.structure import structure_metrics

    keys = {"test/rho", "test/pi_density", "test/sigma2_kappa", "test/g2"}
    trainer = _fit(tmp_path, tiny_overrides)
    assert all(keys <= set(record) for record in trainer.history)
    from nirbench.harness.train.engine import embed

    split = load_dataset(trainer.cfg.dataset.name, None, tmp_path).test
    again = structure_metrics(
        embed(trainer.model, split, torch.device("cpu")), split.labels.numpy()
    )
    assert trainer.history[-1]["test/pi_density"] == pytest.approx(again["pi_density"])
    off = _fit(tmp_path, tiny_overrides + ["eval.structure=false"])
    assert not keys & set(off.history[-1])


def test_full_every_keeps_the_expensive_metrics_for_the_last_epoch(tmp_path, tiny_overrides):
    """eval.full_every=0: the intermediate evaluations measure the curve metrics only, with the
    same values a full evaluation gives; the last epoch gets everything; training is untouched."""
    from nirbench.harness.evaluation.cadence import is_full_eval_epoch

    over = tiny_overrides + ["train.epochs=4", "eval.every=1"]
    full = _fit(tmp_path, over)
    cheap = _fit(tmp_path, over + ["eval.full_every=0"])
    expensive = {"test/map@1000", "test/nmi", "test/rho", "test/pi_density", "test/g2"}
    curve = {"test/recall@1", "test/recall@2", "test/map@r", "test/r_precision"}
    for epoch, (a, b) in enumerate(zip(full.history, cheap.history), start=1):
        assert a["loss/total"] == b["loss/total"]  # the cadence never changes training
        assert curve <= set(b) and all(a[k] == b[k] for k in curve)
        assert (expensive <= set(b)) == (epoch == 4) and expensive <= set(a)
    assert all(full.history[-1][k] == cheap.history[-1][k] for k in expensive)
    cfg = load_config(None, over + ["eval.every=3", "train.epochs=13", "eval.full_every=6"])
    assert [e for e in range(1, 14) if is_full_eval_epoch(e, cfg)] == [6, 12, 13]
    with pytest.raises(ConfigError, match="eval.full_every must be >= 0"):
        load_config(None, over + ["eval.full_every=-1"])
    assert (
        load_config(None, over).config_hash
        == load_config(None, over + ["eval.full_every=1"]).config_hash
    )  # the default keeps every identity


def test_foreach_adam_updates_bitwise_like_the_per_tensor_loop():
    """The engine's Adam runs with foreach=True (one fused update, much faster for NIR's many flow
    tensors on the CPU); it must train exactly what the per-tensor loop trains."""
    torch.manual_seed(0)
    ps = [torch.randn(s, requires_grad=True) for s in [(128, 192), (128,), (64, 3, 3, 3)]]
    qs = [p.detach().clone().requires_grad_() for p in ps]

    def groups(xs):
        return [
            {"params": xs[:2], "weight_decay": 4e-4},
            {"params": xs[2:], "lr": 0.1, "weight_decay": 0.0},
        ]

    loop = torch.optim.Adam(groups(ps), lr=1e-3, foreach=False)
    fused = torch.optim.Adam(groups(qs), lr=1e-3, foreach=True)
    for _ in range(30):
        for p, q in zip(ps, qs):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        loop.step()
        fused.step()
    assert all(torch.equal(p, q) for p, q in zip(ps, qs))
