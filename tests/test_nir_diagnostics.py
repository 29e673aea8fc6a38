"""NIR activity diagnostics (issue 14): ``nir/term``, ``nir/logdet``, ``nir/z_sq_per_dim``,
``nir/clamp_share`` per batch, ``nir/grad_share`` on a fixed probe batch once per epoch, and the
run tag ``nir.inactive_from_epoch``. The probe must not change the run it measures."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nirbench.harness.config import load_config
from nirbench.harness.data import load_dataset
from nirbench.harness.train import engine
from nirbench.harness.train.diagnostics import (
    INACTIVE_RATIO,
    PROBE_AUGMENT_STREAM,
    PROBE_EPOCH,
    inactive_from_epoch,
    inactivity_tags,
    probe_batch,
)
from nirbench.harness.train.engine import build_trainer, epoch_generator, fit
from nirbench.harness.train.objective import Objective
from nirbench.harness.train.runner import execute
from nirbench.harness.data.sampler import ClassBalancedBatchSampler
from nirbench.harness.tracking.store import Tracker
from nirbench.methods.flow import ConditionalGlow
from nirbench.methods.nir import NIR
from tests.conftest import TINY

CPU = torch.device("cpu")
SMALL_NIR = [
    "regularizer=nir",
    "regularizer.blocks=2",
    "regularizer.subnet_width=16",
    "regularizer.subnet_depth=2",
]
FAST = ["eval.nmi=false", "eval.structure=false"]
DIAGNOSTICS = ("nir/term", "nir/logdet", "nir/z_sq_per_dim", "nir/clamp_share", "nir/grad_share")


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    return load_dataset(TINY, None, tmp_path_factory.mktemp("cache"))


def tiny_cfg(tiny_overrides, *extra: str):
    return load_config(None, [*tiny_overrides, *FAST, *extra])


# ------------------------------------------------------------------ the inactivity rule
@pytest.mark.parametrize(
    "values, want",
    [
        ([2.33, 1.7e-6, 3e-9, 1e-9], 2),  # the measured collapse: inactive from epoch 2
        ([1.0, 0.5, 1e-4, 1e-5], 3),
        ([1.0, 1e-4, 0.5, 1e-5], 4),  # dips below, rises again: not from the dip
        ([1.0, 1e-4, 1e-5, 0.5], None),  # rises at the end: never
        ([1.0, 0.9, 0.8], None),
        ([1.0], None),  # epoch 1 is never below itself
        ([], None),
        ([0.0, 0.0], None),  # nothing to be small against
        ([float("nan"), 0.0], None),
        ([1.0, float("nan"), 1e-5], 3),  # a NaN epoch is not inactive
        ([1.0, 1e-3, 9.99e-4], 3),  # strictly below ratio x epoch 1
        ([-100.0, 50.0, -0.01, 0.05], 3),  # by magnitude (the nll form can be negative)
    ],
)
def test_inactive_from_epoch_on_hand_made_sequences(values, want):
    assert INACTIVE_RATIO == 1e-3
    assert inactive_from_epoch(values) == want


def test_inactivity_tags_come_from_term_keys_only():
    history = [
        {"loss/nir": 2.0, "nir/term": 2.0, "nir/grad_share": 0.3},
        {"loss/nir": 1e-6, "nir/term": 1e-6, "nir/grad_share": 1e-7},
    ]
    assert inactivity_tags(history) == {"nir.inactive_from_epoch": "2"}
    assert inactivity_tags([{"nir/term": 1.0}, {"nir/term": 1.0}]) == {
        "nir.inactive_from_epoch": "never"
    }
    # A baseline (no term at all) and NIR's flow-free control arm (grad_share only) get no tag.
    assert inactivity_tags([{"loss/method": 1.0, "loss/total": 1.0}]) == {}
    assert inactivity_tags([{"loss/total": 1.0, "nir/grad_share": 0.0}]) == {}


# ------------------------------------------------------------------ per-batch statistics
def small_nir(form: str = "exp") -> NIR:
    torch.manual_seed(0)
    return NIR(
        num_classes=5,
        embed_dim=8,
        weight=0.01,
        weight_convention="w_align",
        form=form,
        blocks=2,
        subnet_depth=3,
        subnet_width=32,
        clamp=2.0,
        conditioning="dense",
        flow_lr_mult=0.5,
        proxy_source="method",
    )


def nir_inputs(n: int = 12, dim: int = 8, classes: int = 5):
    g = torch.Generator().manual_seed(3)
    return (
        torch.randn(n, dim, generator=g),
        torch.randint(0, classes, (n,), generator=g),
        torch.randn(classes, dim, generator=g),
    )


def saturate(flow: ConditionalGlow, factor: float) -> None:
    """Scale the log-scale rows of every subnet's last Linear (FrEIA's GLOW block reads the first
    half of the output as the raw log-scale): they grow by ``factor``, the shifts stay."""
    with torch.no_grad():
        for block in flow.inn:
            for name in ("subnet1", "subnet2"):
                if hasattr(block, name):
                    last = getattr(block, name)[-1]
                    half = last.out_features // 2
                    last.weight[:half].mul_(factor)
                    last.bias[:half].mul_(factor)


@pytest.mark.parametrize("form", ["exp", "nll"])
def test_term_statistics_match_a_direct_flow_pass(form):
    nir = small_nir(form)
    emb, labels, proxies = nir_inputs()
    term, stats = nir.term(emb, labels, proxies)
    assert set(stats) == {"logdet", "z_sq_per_dim", "clamp_share"}
    assert term.item() == nir(emb, labels, proxies).item()  # the diagnostics change nothing
    with torch.no_grad():
        z, logdet = nir.flow(F.normalize(emb, dim=1), F.normalize(proxies, dim=1)[labels])
    assert stats["logdet"].item() == pytest.approx(logdet.mean().item(), rel=1e-6)
    assert stats["z_sq_per_dim"].item() == pytest.approx(
        (z.pow(2).sum(1) / z.shape[1]).mean().item(), rel=1e-6
    )
    assert all(not v.requires_grad and v.dim() == 0 for v in stats.values())


def test_clamp_share_is_zero_at_init_and_one_when_the_subnets_saturate():
    nir = small_nir("nll")  # a saturated flow overflows the exp form (which is the point)
    emb, labels, proxies = nir_inputs()
    assert nir.term(emb, labels, proxies)[1]["clamp_share"].item() == 0.0
    saturate(nir.flow, 1e4)
    with nir.flow.recording_log_scales() as record:
        nir.flow(F.normalize(emb, dim=1), F.normalize(proxies, dim=1)[labels])
    assert record.total == 2 * 2 * emb.shape[0] * emb.shape[1] // 2  # blocks x subnets x B x d/2
    assert record.clamp_share.item() > 0.99
    assert nir.term(emb, labels, proxies)[1]["clamp_share"].item() > 0.99


def test_log_scale_hooks_exist_only_while_recording():
    flow = small_nir().flow
    subnets = [getattr(b, n) for b in flow.inn for n in ("subnet1", "subnet2") if hasattr(b, n)]
    with flow.recording_log_scales():
        assert all(len(s._forward_hooks) == 1 for s in subnets)
    assert all(len(s._forward_hooks) == 0 for s in subnets)
    # the plain forward (tests, inverse passes, the bench) records nothing
    emb, labels, proxies = nir_inputs()
    small = small_nir()
    small(emb, labels, proxies)
    assert all(
        len(getattr(b, n)._forward_hooks) == 0
        for b in small.flow.inn
        for n in ("subnet1", "subnet2")
        if hasattr(b, n)
    )


def test_objective_logs_detached_diagnostics_outside_the_total(tiny_overrides, tiny_bundle):
    cfg = tiny_cfg(tiny_overrides, *SMALL_NIR)
    trainer = build_trainer(cfg, tiny_bundle, CPU)
    images, labels = probe_batch(
        tiny_bundle.train,
        ClassBalancedBatchSampler(tiny_bundle.train.labels, 8, 2, 0),
        epoch_generator(0, PROBE_EPOCH, 2),
        CPU,
    )
    terms = trainer.objective(trainer.model(images), labels)
    for key in DIAGNOSTICS[:-1]:
        assert not terms[key].requires_grad, key
    assert terms["nir/term"].item() == terms["loss/nir"].item()
    # exactly the published combination: the diagnostics add nothing to the total
    want = terms["loss/nir"] + 0.01 * terms["loss/method"]
    assert torch.equal(terms["loss/total"], want)


# ------------------------------------------------------------------ grad share
def brute_force_grad_share(
    objective: Objective, embeddings: torch.Tensor, labels: torch.Tensor
) -> float:
    """Two independent forward passes; each gradient by autograd.grad on its own leaf."""
    reg = objective.regularizer
    nir_weight = reg.weight if reg.weight_convention == "lambda" else 1.0
    e1 = embeddings.detach().clone().requires_grad_(True)
    (g_nir,) = torch.autograd.grad(
        nir_weight * reg(e1, labels, objective.method.class_proxies()), e1
    )
    e2 = embeddings.detach().clone().requires_grad_(True)
    (g_total,) = torch.autograd.grad(objective(e2, labels)["loss/total"], e2)
    return float(g_nir.norm() / g_total.norm())


def probe_embeddings(trainer, bundle):
    cfg = trainer.cfg
    sampler = ClassBalancedBatchSampler(
        bundle.train.labels, cfg.train.batch_size, cfg.train.samples_per_class, cfg.seed
    )
    images, labels = probe_batch(
        bundle.train, sampler, epoch_generator(cfg.seed, PROBE_EPOCH, PROBE_AUGMENT_STREAM), CPU
    )
    trainer.model.eval()
    with torch.no_grad():
        return trainer.model(images), labels


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["regularizer.weight_convention=lambda", "regularizer.weight=100.0"],
        ["method=contrastive"],  # own proxies + alignment term
    ],
    ids=["w_align", "lambda", "own"],
)
def test_grad_share_agrees_with_brute_force_autograd(extra, tiny_overrides, tiny_bundle):
    cfg = tiny_cfg(tiny_overrides, *SMALL_NIR, *extra, "train.epochs=1", "train.warmup_epochs=0")
    trainer = build_trainer(cfg, tiny_bundle, CPU)
    logged = fit(trainer, tiny_bundle)["nir/grad_share"]  # what the engine logs after epoch 1
    embeddings, labels = probe_embeddings(trainer, tiny_bundle)
    want = brute_force_grad_share(trainer.objective, embeddings, labels)
    assert 0 < want < 1
    assert logged == pytest.approx(want, rel=1e-6)


def test_probe_batch_depends_on_the_seed_only(tiny_bundle):
    def batch(seed):
        sampler = ClassBalancedBatchSampler(tiny_bundle.train.labels, 8, 2, seed)
        return probe_batch(
            tiny_bundle.train,
            sampler,
            epoch_generator(seed, PROBE_EPOCH, PROBE_AUGMENT_STREAM),
            CPU,
        )

    (a_img, a_lab), (b_img, b_lab), (c_img, _) = batch(0), batch(0), batch(1)
    assert torch.equal(a_img, b_img) and torch.equal(a_lab, b_lab)
    assert not torch.equal(a_img, c_img)
    assert a_lab.bincount().max() == 2 == a_lab.bincount()[a_lab.bincount() > 0].min()


# ------------------------------------------------------------------ the probe changes nothing
@pytest.mark.parametrize("method", ["proxy_anchor", "margin"])  # margin's sampler draws randoms
def test_probe_does_not_perturb_training(method, tiny_overrides, tiny_bundle, monkeypatch):
    cfg = tiny_cfg(tiny_overrides, *SMALL_NIR, f"method={method}")

    def train() -> tuple[list[dict[str, float]], dict[str, torch.Tensor]]:
        trainer = build_trainer(cfg, tiny_bundle, CPU)
        fit(trainer, tiny_bundle)
        history = [
            {k: v for k, v in r.items() if not k.startswith("time/")} for r in trainer.history
        ]
        state = {
            **trainer.model.state_dict(),
            **trainer.objective.state_dict(),
            "rng": torch.get_rng_state(),
        }
        return history, state

    with_probe, state = train()
    assert all(0 < r["nir/grad_share"] < 1 for r in with_probe)
    monkeypatch.setattr(Objective, "wants_probe", property(lambda self: False))
    without, state_without = train()
    assert [{k: v for k, v in r.items() if k != "nir/grad_share"} for r in with_probe] == without
    for key, value in state.items():
        assert torch.equal(value, state_without[key]), key


# ------------------------------------------------------------------ the run tag
def run_tags(cfg, results_dir):
    tracker = Tracker(results_dir)
    outcome = execute(cfg, tracker, results_dir)
    return tracker, outcome.run_id, tracker.tags(outcome.run_id)


def test_every_diagnostic_is_logged_each_epoch_and_a_vanishing_term_is_tagged(
    tiny_overrides, results_dir, monkeypatch
):
    """The term is scaled by 1e-6 from epoch 2 on: the tag names epoch 2."""
    real_term = NIR.term
    scale = {"value": 1.0}

    def scaled_term(self, *args):
        term, stats = real_term(self, *args)
        return term * scale["value"], stats

    monkeypatch.setattr(NIR, "term", scaled_term)
    monkeypatch.setattr(
        engine,
        "train_one_epoch",
        _after_epoch(engine.train_one_epoch, lambda: scale.update(value=1e-6)),
    )
    cfg = tiny_cfg(tiny_overrides, *SMALL_NIR, "train.epochs=3")
    tracker, run_id, tags = run_tags(cfg, results_dir)
    for key in (*DIAGNOSTICS, "loss/nir"):
        values = tracker.history(run_id, key)
        assert [s for s, _ in values] == [1, 2, 3] and all(math.isfinite(v) for _, v in values)
    terms = [v for _, v in tracker.history(run_id, "nir/term")]
    assert terms == [v for _, v in tracker.history(run_id, "loss/nir")]
    assert terms[1] < 1e-3 * terms[0]
    assert tags["nir.inactive_from_epoch"] == "2"


def _after_epoch(train_one_epoch, action):
    def wrapped(*args, **kwargs):
        out = train_one_epoch(*args, **kwargs)
        action()
        return out

    return wrapped


def test_a_term_that_stays_gets_never_and_a_baseline_no_tag(
    tiny_overrides, results_dir, monkeypatch
):
    real_term = NIR.term

    def constant_term(self, *args):
        term, stats = real_term(self, *args)
        return term * 0 + 1.0, stats

    monkeypatch.setattr(NIR, "term", constant_term)
    nir = tiny_cfg(tiny_overrides, *SMALL_NIR)
    _, _, tags = run_tags(nir, results_dir)
    assert tags["nir.inactive_from_epoch"] == "never"
    _, _, base_tags = run_tags(tiny_cfg(tiny_overrides), results_dir)
    assert not any(k.endswith("inactive_from_epoch") for k in base_tags)


def test_a_resumed_run_is_tagged_from_its_whole_history(tiny_overrides, results_dir, monkeypatch):
    """Interrupted after epoch 2 (its checkpoint written, its metrics not), resumed for epoch 3:
    the tag still names epoch 2, which only the checkpoint's history knows."""
    real_term = NIR.term
    scale = {"value": 1.0}

    def scaled_term(self, *args):
        term, stats = real_term(self, *args)
        return term * scale["value"], stats

    monkeypatch.setattr(NIR, "term", scaled_term)
    monkeypatch.setattr(
        engine,
        "train_one_epoch",
        _after_epoch(engine.train_one_epoch, lambda: scale.update(value=1e-6)),
    )
    real_log = Tracker.log_epoch

    def die_at_epoch_2(self, run_id, epoch, record):
        if epoch == 2:
            raise KeyboardInterrupt
        real_log(self, run_id, epoch, record)

    cfg = tiny_cfg(tiny_overrides, *SMALL_NIR, "train.epochs=3")
    tracker = Tracker(results_dir)
    monkeypatch.setattr(Tracker, "log_epoch", die_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        execute(cfg, tracker, results_dir)
    monkeypatch.setattr(Tracker, "log_epoch", real_log)
    run_id = execute(cfg, tracker, results_dir).run_id
    assert tracker.tags(run_id)["resumed"] == "true"
    assert [s for s, _ in tracker.history(run_id, "nir/term")] == [1, 2, 3]
    assert tracker.tags(run_id)["nir.inactive_from_epoch"] == "2"
