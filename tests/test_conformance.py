"""Conformance suite generated from the registry: every registered method, alone and with NIR,
must build from a config, train, and keep the two arms of a comparison identical.

For every method x {baseline, nir} (methods without class proxies get NIR's own-proxy mode,
``regularizer.proxy_source=own``), on the tiny test dataset:
  (a) one training batch gives a finite loss;
  (b) after backward, gradients are non-zero on the backbone body, the head and every
      loss-owned parameter group (proxies, betas, flow, NIR's own proxies);
  (c) the optimizer's groups hold every trainable parameter of model + objective exactly once;
  (d) same seed: the baseline and NIR arms start from identical backbone weights, identical
      method parameters (proxy init) and identical RNG state, and see identical first batches
      (hence the same method loss on that batch);
  (e) NIR with proxy_source "method" on a method without proxies is refused; the default
      ("auto") resolves to the method's proxies or NIR's own
      when the config is built.
A new method registered in methods/ is covered without touching this file.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch

from nirbench.harness.cli.main import main
from nirbench.harness.config import ConfigError, RunConfig, load_config
from nirbench.harness.data import load_dataset
from nirbench.harness.data.sampler import ClassBalancedBatchSampler
from nirbench.harness.train.engine import Trainer, build_trainer, epoch_generator
from nirbench.methods import METHODS, REGULARIZERS
from tests.conftest import TINY

CPU = torch.device("cpu")
METHOD_NAMES = METHODS.names()
PROXY_METHODS = [n for n, info in METHODS.items() if info.provides_proxies]
PAIR_METHODS = [n for n, info in METHODS.items() if not info.provides_proxies]
ARMS = ("baseline", "nir")
SMALL_NIR = [
    "regularizer=nir",
    "regularizer.blocks=2",
    "regularizer.subnet_width=16",
    "regularizer.subnet_depth=2",
]
# 4 classes x 4 images per batch: enough positives for every miner to find something.
BATCH = ["train.batch_size=16", "train.samples_per_class=4"]


def arm_overrides(name: str, arm: str, tiny: list[str]) -> list[str]:
    overrides = [*tiny, *BATCH, f"method={name}"]
    if arm == "nir":
        overrides += SMALL_NIR
        if not METHODS.get(name).provides_proxies:
            overrides.append("regularizer.proxy_source=own")
    return overrides


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    return load_dataset(TINY, None, tmp_path_factory.mktemp("cache"))


def first_batch(cfg: RunConfig, bundle) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Epoch 0's first batch exactly as engine.fit / train_one_epoch draw it."""
    sampler = ClassBalancedBatchSampler(
        bundle.train.labels, cfg.train.batch_size, cfg.train.samples_per_class, cfg.seed
    )
    idx = sampler.batches(0)[0]
    images = bundle.train.train_batch(idx, CPU, epoch_generator(cfg.seed, 0, stream=1))
    return idx, images, bundle.train.labels[idx]


def one_step_terms(
    trainer: Trainer, images: torch.Tensor, labels: torch.Tensor
) -> dict[str, torch.Tensor]:
    trainer.model.train()
    trainer.objective.train()
    return trainer.objective(trainer.model(images).float(), labels)


def grad_norm(params) -> float:
    return float(sum(p.grad.abs().sum() for p in params if p.grad is not None))


# ------------------------------------------------------------------ registry metadata
@pytest.mark.parametrize("name", METHOD_NAMES)
def test_registry_entry_is_complete(name):
    info = METHODS.get(name)
    assert info.name == name and info.family in ("proxy", "pair")
    assert info.provides_proxies == (info.family == "proxy")
    assert len(info.paper) > 20 and any(ch.isdigit() for ch in info.paper)  # a real citation
    kwargs = set(inspect.signature(info.cls.__init__).parameters) - {
        "self",
        "num_classes",
        "embed_dim",
    }
    assert kwargs == set(info.defaults), "defaults must be exactly the constructor's kwargs"
    assert info.search_space and set(info.search_space) <= set(info.defaults)
    for param, spec in info.search_space.items():
        default = info.defaults[param]
        if spec["type"] == "categorical":
            assert default in spec["choices"], param
            continue
        # The tuner writes the sampled value back through the config loader, which enforces the
        # default's type: a float range needs a float default, an int range an int default.
        assert (spec["type"], type(default)) in (("float", float), ("int", int)), param
        assert spec["low"] <= default <= spec["high"], (param, "the default lies in the range")
        assert spec["low"] < spec["high"] and isinstance(spec.get("log", False), bool), param
        assert not spec.get("log") or spec["low"] > 0, param
    if info.provides_proxies:
        assert info.defaults["proxy_lr_mult"] == 100.0
    # The loader enforces each default's type on user values: a float default must be a float.
    for value in info.defaults.values():
        assert isinstance(value, (bool, int, float, str)), (name, value)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_module_contract(name):
    """class_proxies() matches provides_proxies, is (C, D) and differentiable; param_groups()
    hold every trainable loss parameter exactly once; fp16 embeddings never cast the loss's own
    parameters (PML casts them in place)."""
    info = METHODS.get(name)
    torch.manual_seed(0)
    method = info.cls(num_classes=6, embed_dim=16, **info.defaults)
    proxies = method.class_proxies()
    if info.provides_proxies:
        assert proxies.shape == (6, 16) and proxies.requires_grad
    else:
        assert proxies is None
    grouped = [p for g in method.param_groups() for p in g["params"]]
    assert len({id(p) for p in grouped}) == len(grouped)
    trainable = {id(p) for p in method.parameters() if p.requires_grad}
    assert {id(p) for p in grouped} == trainable
    for group in method.param_groups():
        assert group["name"] and group["lr_mult"] > 0

    labels = torch.arange(6).repeat_interleave(3)
    embeddings = torch.nn.functional.normalize(torch.randn(18, 16), dim=1)
    method(embeddings.half(), labels)
    assert all(p.dtype == torch.float32 for p in method.parameters())


@pytest.mark.parametrize("name", PROXY_METHODS)
def test_proxies_come_from_the_global_rng(name):
    info = METHODS.get(name)

    def proxies_for(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return info.cls(num_classes=5, embed_dim=8, **info.defaults).class_proxies().detach()

    assert torch.equal(proxies_for(3), proxies_for(3))
    assert not torch.equal(proxies_for(3), proxies_for(4))


# ------------------------------------------------------------------ (a) (b) (c)
@pytest.mark.parametrize("arm", ARMS)
@pytest.mark.parametrize("name", METHOD_NAMES)
def test_one_step_is_finite_reaches_every_parameter_and_is_optimised(
    name, arm, tiny_overrides, tiny_bundle
):
    cfg = load_config(None, arm_overrides(name, arm, tiny_overrides))
    assert cfg.method.name == name and cfg.regularizer_name == ("nir" if arm == "nir" else "none")
    trainer = build_trainer(cfg, tiny_bundle, CPU)
    _, images, labels = first_batch(cfg, tiny_bundle)
    terms = one_step_terms(trainer, images, labels)

    # (a)
    for key, value in terms.items():
        assert torch.isfinite(value), (key, float(value))
    assert terms["loss/method"].item() > 0, "the method found nothing to learn from"
    if arm == "nir":
        assert "loss/nir" in terms

    # (b)
    terms["loss/total"].backward()
    model, objective = trainer.model, trainer.objective
    assert grad_norm(model.body.parameters()) > 0
    assert grad_norm(model.head.parameters()) > 0
    groups = objective.param_groups()
    names = [g["name"] for g in groups]
    if METHODS.get(name).provides_proxies:
        assert "proxies" in names
    if arm == "nir":
        assert "flow" in names
        assert ("nir_proxies" in names) == (not METHODS.get(name).provides_proxies)
    for group in groups:
        assert grad_norm(group["params"]) > 0, f"no gradient reaches {group['name']}"

    # (c)
    optimised = [p for g in trainer.optimizer.param_groups for p in g["params"]]
    assert len({id(p) for p in optimised}) == len(optimised), "a parameter is in two groups"
    trainable = [p for m in (model, objective) for p in m.parameters() if p.requires_grad]
    assert {id(p) for p in optimised} == {id(p) for p in trainable}
    by_name = {g["name"]: g for g in trainer.optimizer.param_groups}
    for group in groups:
        assert by_name[group["name"]]["lr"] == pytest.approx(cfg.train.lr * group["lr_mult"])
        assert by_name[group["name"]]["weight_decay"] == 0.0


# ------------------------------------------------------------------ (d)
@pytest.mark.parametrize("name", METHOD_NAMES)
def test_baseline_and_nir_arms_start_identical(name, tiny_overrides, tiny_bundle):
    built = {}
    for arm in ARMS:
        cfg = load_config(None, arm_overrides(name, arm, tiny_overrides))
        trainer = build_trainer(cfg, tiny_bundle, CPU)
        # Whatever draws from the global RNG next (miners, dropout) must see the same stream.
        rng = (torch.get_rng_state(), np.random.get_state()[1].copy())
        idx, images, labels = first_batch(cfg, tiny_bundle)
        terms = one_step_terms(trainer, images, labels)
        built[arm] = (trainer, rng, idx, images, terms)
    (base, base_rng, base_idx, base_images, base_terms) = built["baseline"]
    (nir, nir_rng, nir_idx, nir_images, nir_terms) = built["nir"]

    for key, value in base.model.state_dict().items():
        assert torch.equal(value, nir.model.state_dict()[key]), key
    base_method = base.objective.method.state_dict()
    nir_method = nir.objective.method.state_dict()
    assert base_method.keys() == nir_method.keys()
    for key, value in base_method.items():
        assert torch.equal(value, nir_method[key]), key
    if METHODS.get(name).provides_proxies:
        assert torch.equal(
            base.objective.method.class_proxies(), nir.objective.method.class_proxies()
        )
    assert torch.equal(base_rng[0], nir_rng[0]) and np.array_equal(base_rng[1], nir_rng[1])
    assert torch.equal(base_idx, nir_idx) and torch.equal(base_images, nir_images)
    # Same weights, same data, same randomness: the method term of the first batch is the same.
    assert torch.equal(base_terms["loss/method"], nir_terms["loss/method"])


def test_another_seed_changes_the_initialisation(tiny_overrides, tiny_bundle):
    """The identity above is not vacuous: a different seed gives other weights and proxies."""
    cfgs = [
        load_config(None, arm_overrides("soft_triple", "nir", tiny_overrides) + [f"seed={s}"])
        for s in (0, 1)
    ]
    a, b = (build_trainer(cfg, tiny_bundle, CPU) for cfg in cfgs)
    assert not torch.equal(a.model.head.weight, b.model.head.weight)
    assert not torch.equal(a.objective.method.class_proxies(), b.objective.method.class_proxies())
    assert not torch.equal(
        first_batch(cfgs[0], tiny_bundle)[0], first_batch(cfgs[1], tiny_bundle)[0]
    )


# ------------------------------------------------------------------ (e)
@pytest.mark.parametrize("name", METHOD_NAMES)
def test_nir_needs_proxies_or_its_own_mode(name, tiny_overrides):
    overrides = [*tiny_overrides, f"method={name}", "regularizer=nir"]
    explicit = overrides + ["regularizer.proxy_source=method"]
    if METHODS.get(name).provides_proxies:
        cfg = load_config(None, explicit)
        assert cfg.regularizer.params["proxy_source"] == "method"
    else:
        with pytest.raises(ConfigError, match="proxy_source=own"):
            load_config(None, explicit)
    want = "method" if METHODS.get(name).provides_proxies else "own"
    for extra in ([], ["regularizer.proxy_source=auto"]):  # auto is the default
        assert load_config(None, overrides + extra).regularizer.params["proxy_source"] == want
    assert REGULARIZERS.get("nir").needs_proxies


# ------------------------------------------------------------------ end to end
def test_cli_run_of_a_new_proxy_method_with_nir(tiny_overrides, results_dir: Path):
    sets = [*tiny_overrides, "method=soft_triple", *SMALL_NIR, "train.epochs=2"]
    argv = ["run", "--results-dir", str(results_dir), "--no-progress", "--quiet"]
    for item in sets:
        argv += ["--set", item]
    assert main(argv) == 0


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_carries_its_display_metadata(name):
    info = METHODS.get(name)
    assert info.title and info.paper and info.family in ("proxy", "pair")


def test_a_new_method_is_one_registration_and_tables_read_its_metadata():
    """A toy method registered from outside: the tables' naming and order come from its
    MethodInfo, not from a list in harness/results."""
    from nirbench.harness.results.display import METHOD_TITLES, method_rank
    from nirbench.methods.base import MethodInfo
    from nirbench.methods.proxy_anchor import ProxyAnchor

    METHODS.add(
        "toy_proxy",
        MethodInfo(
            name="toy_proxy",
            cls=ProxyAnchor,
            family="proxy",
            provides_proxies=True,
            paper="a test",
            title="ToyProxy",
            table_rank=-1,
            defaults=dict(METHODS.get("proxy_anchor").defaults),
        ),
    )
    try:
        assert METHOD_TITLES["toy_proxy"] == "ToyProxy"
        assert sorted(["proxy_anchor", "toy_proxy", "triplet"], key=method_rank) == [
            "toy_proxy",
            "proxy_anchor",
            "triplet",
        ]
    finally:
        METHODS._entries.pop("toy_proxy")


# ------------------------------------------------------------------ regularizer metadata
@pytest.mark.parametrize("name", REGULARIZERS.names())
def test_every_regularizer_carries_its_display_metadata(name):
    info = REGULARIZERS.get(name)
    assert info.title and len(info.paper) > 20
    if "form" in info.defaults:  # its forms are registered and the default is one of them
        assert info.forms and info.defaults["form"] in info.forms
    if info.control_variant is not None:  # the control arm is a variant of a registered key
        key, value = info.control_variant
        assert key in info.variant_keys and key in info.defaults
        assert value != info.defaults[key], "the control arm differs from the default arm"
    assert {k for k, _ in info.variant_titles} <= set(info.variant_keys)


@pytest.mark.parametrize("method", METHOD_NAMES)
@pytest.mark.parametrize("regularizer", REGULARIZERS.names())
def test_registered_compatibility_is_what_the_config_accepts(method, regularizer, tiny_overrides):
    """``RegularizerInfo.compatible_with`` is the rule config.py applies with the default
    parameters (NIR: any method, through its own proxies when the method has none)."""
    from nirbench.harness.config import IncompatiblePairError

    compatible = REGULARIZERS.get(regularizer).compatible_with(METHODS.get(method))
    overrides = [*tiny_overrides, f"method={method}", f"regularizer={regularizer}"]
    if compatible:
        assert load_config(None, overrides).regularizer.name == regularizer
    else:
        with pytest.raises(IncompatiblePairError):
            load_config(None, overrides)
    assert REGULARIZERS.get("nir").compatible_with(METHODS.get(method))


class ToyRegularizer(torch.nn.Module):
    """A regularizer that is one file plus its registration: the squared distance of each
    embedding to its class proxy, as the ``far`` or ``near`` form; ``active: false`` is its
    control arm (no term)."""

    def __init__(
        self,
        *,
        num_classes: int,
        embed_dim: int,
        weight: float,
        weight_convention: str,
        form: str,
        active: bool,
    ) -> None:
        super().__init__()
        self.weight, self.weight_convention = float(weight), weight_convention
        self.form, self.active = form, active

    def forward(self, embeddings, labels, proxies):
        sq = (embeddings - proxies[labels]).pow(2).sum(1).mean()
        return sq if self.form == "near" else -sq

    def term(self, embeddings, labels, proxies):
        return (self(embeddings, labels, proxies) if self.active else None), {}

    def alignment_loss(self, embeddings, labels):
        return None

    def param_groups(self):
        return []


@pytest.fixture
def toy_regularizer():
    from nirbench.methods.base import RegularizerInfo

    REGULARIZERS.add(
        "toy",
        RegularizerInfo(
            name="toy",
            cls=ToyRegularizer,
            paper="a test regularizer, no paper (2026)",
            needs_proxies=True,
            title="Toy",
            forms=("near", "far"),
            control_variant=("active", False),
            variant_titles={("active", "false"): "switched off"},
            variant_keys=("active", "form"),
            defaults={"weight": 0.5, "weight_convention": "lambda", "form": "near", "active": True},
        ),
    )
    try:
        yield REGULARIZERS.get("toy")
    finally:
        REGULARIZERS._entries.pop("toy")


def test_a_new_regularizer_is_one_registration_and_arms_read_its_metadata(
    toy_regularizer, tiny_overrides
):
    """A toy regularizer registered from outside: its arms, their titles, its control arm, the
    comparisons, its compatibility and its loss terms come from its RegularizerInfo, not from
    names written out in harness/."""
    from nirbench.harness.config import IncompatiblePairError
    from nirbench.harness.grid.arms import arm_of_config
    from nirbench.harness.results.arms import (
        arm_key,
        arm_order,
        arm_title,
        controlled_arm,
        default_pairs,
        is_control,
        ladders,
    )
    from nirbench.harness.train.objective import build_objective

    base = [*tiny_overrides, "method=proxy_anchor", "regularizer=toy"]
    assert arm_of_config(load_config(None, base)) == "toy"
    control = load_config(None, [*base, "regularizer.active=false", "regularizer.form=far"])
    assert arm_of_config(control) == "toy[active=false,form=far]"
    assert arm_key("toy", {"toy.form": "near", "toy.active": "true"}) == "toy"

    assert arm_title("toy[active=false,form=far]", "") == "+ Toy (switched off, far form)"
    assert is_control("toy[active=false]") and not is_control("toy[form=far]")
    assert not is_control("nir[active=false]")  # NIR's control is its own: flow=false
    assert controlled_arm("toy[active=false,form=far]") == "toy[form=far]"
    arms = ["toy", "none", "toy[active=false]"]
    assert sorted(arms, key=arm_order) == ["none", "toy[active=false]", "toy"]
    assert default_pairs(arms) == [
        ("none", "toy[active=false]"),
        ("toy[active=false]", "toy"),
        ("none", "toy"),
    ]
    assert ladders(arms) == [("none", "toy[active=false]", "toy")]

    # needs proxies and brings none: a pair method cannot take it, and the config says so
    assert not toy_regularizer.compatible_with(METHODS.get("triplet"))
    with pytest.raises(IncompatiblePairError):
        load_config(None, [*tiny_overrides, "method=triplet", "regularizer=toy"])

    # the objective names its terms after the registration and weights it by its convention
    torch.manual_seed(0)
    objective = build_objective(
        "proxy_anchor",
        METHODS.get("proxy_anchor").defaults,
        "toy",
        toy_regularizer.defaults,
        num_classes=4,
        embed_dim=8,
    )
    embeddings, labels = torch.randn(8, 8), torch.arange(8) % 4
    terms = objective(embeddings, labels)
    assert set(terms) == {"loss/method", "loss/toy", "loss/total", "toy/term"}
    proxies = objective.method.class_proxies()
    expected = (embeddings - proxies[labels]).pow(2).sum(1).mean()
    torch.testing.assert_close(terms["loss/toy"], expected)
    torch.testing.assert_close(terms["loss/total"], terms["loss/method"] + 0.5 * expected)
