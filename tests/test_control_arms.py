"""NIR's control arms (issue 14): ``regularizer: {name: nir, flow: false}`` runs everything the NIR
arm runs except the flow. Each arm must differ from its reference in exactly the intended way:
same initial weights and batches, and the loss combined as specified. Also: adding ``flow`` left
every existing config hash alone, and the lambda and nll variants run end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nirbench.harness.cli.main import main
from nirbench.harness.config import ConfigError, build_config, load_config
from nirbench.harness.config_identity import identity_tree
from nirbench.harness.data import load_dataset
from nirbench.harness.data.sampler import ClassBalancedBatchSampler
from nirbench.harness.train.engine import build_trainer, epoch_generator
from nirbench.harness.train.runner import execute
from nirbench.harness.tracking.store import Tracker, run_tags
from tests.conftest import TINY

CPU = torch.device("cpu")
SMALL_NIR = [
    "regularizer=nir",
    "regularizer.blocks=2",
    "regularizer.subnet_width=16",
    "regularizer.subnet_depth=2",
]
FAST = ["eval.nmi=false", "eval.structure=false"]
BATCH = ["train.batch_size=16", "train.samples_per_class=4"]
ARMS = {"baseline": [], "control": [*SMALL_NIR, "regularizer.flow=false"], "nir": SMALL_NIR}
# The default NIR config's hash before `flow` existed (commit 893fea9): finished runs of that
# config must still be found and skipped.
DEFAULT_NIR_HASH = "27e7352d61959e68"
DEFAULT_BASELINE_HASH = "f4b6b1e85d6a725a"


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    return load_dataset(TINY, None, tmp_path_factory.mktemp("cache"))


# ------------------------------------------------------------------ identity
def test_adding_flow_keeps_every_existing_hash():
    nir = load_config(None, ["regularizer=nir"])
    assert nir.config_hash == DEFAULT_NIR_HASH
    assert load_config(None, []).config_hash == DEFAULT_BASELINE_HASH
    assert nir.regularizer.params["flow"] is True  # resolved and handed to NIR ...
    assert nir.to_dict()["regularizer"]["flow"] is True  # ... shown ...
    assert "flow" not in identity_tree(nir)["regularizer"]  # ... but not part of the identity
    explicit = load_config(None, ["regularizer=nir", "regularizer.flow=true"])
    assert explicit.config_hash == DEFAULT_NIR_HASH

    control = load_config(None, ["regularizer=nir", "regularizer.flow=false"])
    assert control.to_dict()["regularizer"]["flow"] is False
    assert control.config_hash != DEFAULT_NIR_HASH and control.arm_hash != nir.arm_hash
    for cfg in (nir, control):  # the written config (config.yaml, reproduce) loads back as itself
        import yaml

        assert build_config(yaml.safe_load(cfg.to_yaml())).config_hash == cfg.config_hash
    with pytest.raises(ConfigError, match="regularizer.flow must be bool"):
        load_config(None, ["regularizer=nir", "regularizer.flow=0"])


def test_tags_say_which_arm_and_variant_ran():
    nir = run_tags(load_config(None, ["regularizer=nir"]), "g")
    control = run_tags(load_config(None, ["regularizer=nir", "regularizer.flow=false"]), "g")
    variant = run_tags(
        load_config(
            None,
            [
                "regularizer=nir",
                "regularizer.form=nll",
                "regularizer.weight_convention=lambda",
                "regularizer.weight=100",
            ],
        ),
        "g",
    )
    assert nir["nir.flow"] == "true" and control["nir.flow"] == "false"
    assert (variant["nir.form"], variant["nir.weight_convention"], variant["nir.weight"]) == (
        "nll",
        "lambda",
        "100.0",
    )
    assert "nir.flow" not in run_tags(load_config(None, []), "g")


# ------------------------------------------------------------------ same start
def build_arm(arm: str, method: str, tiny_overrides, bundle, *extra: str):
    cfg = load_config(
        None, [*tiny_overrides, *BATCH, *FAST, f"method={method}", *ARMS[arm], *extra]
    )
    trainer = build_trainer(cfg, bundle, CPU)
    rng = (torch.get_rng_state(), np.random.get_state()[1].copy())
    sampler = ClassBalancedBatchSampler(
        bundle.train.labels, cfg.train.batch_size, cfg.train.samples_per_class, cfg.seed
    )
    idx = sampler.batches(0)[0]
    images = bundle.train.train_batch(idx, CPU, epoch_generator(cfg.seed, 0, stream=1))
    return trainer, rng, images, bundle.train.labels[idx]


@pytest.mark.parametrize("method", ["proxy_anchor", "contrastive"])
def test_baseline_control_and_nir_start_identical(method, tiny_overrides, tiny_bundle):
    arms = {arm: build_arm(arm, method, tiny_overrides, tiny_bundle) for arm in ARMS}
    base, base_rng, base_images, _ = arms["baseline"]
    for arm in ("control", "nir"):
        trainer, rng, images, _ = arms[arm]
        for key, value in base.model.state_dict().items():
            assert torch.equal(value, trainer.model.state_dict()[key]), (arm, key)
        for key, value in base.objective.method.state_dict().items():
            assert torch.equal(value, trainer.objective.method.state_dict()[key]), (arm, key)
        assert torch.equal(rng[0], base_rng[0]) and np.array_equal(rng[1], base_rng[1])
        assert torch.equal(images, base_images)
    control, nir = arms["control"][0].objective.regularizer, arms["nir"][0].objective.regularizer
    assert control.flow is None and nir.flow is not None
    groups = {g["name"] for g in arms["control"][0].objective.param_groups()}
    assert "flow" not in groups
    if method == "contrastive":  # NIR's own proxies: the control arm trains the same ones
        assert torch.equal(control.own_proxies(), nir.own_proxies())
        assert "nir_proxies" in groups


@pytest.mark.parametrize("convention, weight", [("w_align", 0.01), ("lambda", 100.0)])
@pytest.mark.parametrize("method", ["proxy_anchor", "contrastive"])
def test_each_arm_combines_the_loss_as_specified(
    method, convention, weight, tiny_overrides, tiny_bundle
):
    extra = [f"regularizer.weight_convention={convention}", f"regularizer.weight={weight}"]
    terms = {}
    for arm in ARMS:
        trainer, _, images, labels = build_arm(
            arm, method, tiny_overrides, tiny_bundle, *(extra if arm != "baseline" else [])
        )
        trainer.model.train()
        terms[arm] = trainer.objective(trainer.model(images).float(), labels)
    # same weights, same batch: the same method loss in all three arms
    assert torch.equal(terms["baseline"]["loss/method"], terms["control"]["loss/method"])
    assert torch.equal(terms["baseline"]["loss/method"], terms["nir"]["loss/method"])

    control, nir = terms["control"], terms["nir"]
    assert "loss/nir" not in control and "nir/term" not in control  # no flow, no term
    align = control.get("loss/nir_align")
    assert (align is not None) == (method == "contrastive")
    if align is not None:  # the alignment term is the same too (same own proxies)
        assert torch.equal(align, nir["loss/nir_align"])
    method_side = control["loss/method"] + (align if align is not None else 0)
    nir_side = nir["loss/method"] + (nir["loss/nir_align"] if align is not None else 0)
    if convention == "w_align":  # the scale-and-decay (and alignment) control
        assert torch.equal(control["loss/total"], weight * method_side)
        assert torch.equal(nir["loss/total"], nir["loss/nir"] + weight * nir_side)
    else:
        assert torch.equal(control["loss/total"], method_side)
        assert torch.equal(nir["loss/total"], nir_side + weight * nir["loss/nir"])
    assert torch.equal(terms["baseline"]["loss/total"], terms["baseline"]["loss/method"])


# ------------------------------------------------------------------ end to end
def test_control_arm_runs_and_logs_a_zero_grad_share(tiny_overrides, results_dir):
    cfg = load_config(None, [*tiny_overrides, *FAST, "method=contrastive", *ARMS["control"]])
    tracker = Tracker(results_dir)
    run_id = execute(cfg, tracker, results_dir).run_id
    tags = tracker.tags(run_id)
    assert tags["nir.flow"] == "false" and tags["nir.proxy_source"] == "own"
    assert "nir.inactive_from_epoch" not in tags  # nothing there to become inactive
    assert [v for _, v in tracker.history(run_id, "nir/grad_share")] == [0.0, 0.0]
    assert tracker.history(run_id, "loss/nir_align")
    assert not tracker.history(run_id, "loss/nir") and not tracker.history(run_id, "nir/term")


@pytest.mark.parametrize(
    "variant",
    [
        ["regularizer.weight_convention=lambda", "regularizer.weight=100"],  # lambda = 1 / w_align
        ["regularizer.form=nll"],
    ],
    ids=["lambda", "nll"],
)
def test_lambda_and_nll_variants_run_through_the_cli(variant, tiny_overrides, results_dir):
    argv = ["run", "--results-dir", str(results_dir), "--no-progress", "--quiet"]
    for item in [*tiny_overrides, *FAST, *SMALL_NIR, *variant]:
        argv += ["--set", item]
    assert main(argv) == 0
    tracker = Tracker(results_dir)
    [run] = tracker.runs(statuses=("FINISHED",))
    want = load_config(None, [*tiny_overrides, *FAST, *SMALL_NIR, *variant]).regularizer.params
    for key in ("form", "weight_convention", "weight"):
        assert run.tags[f"nir.{key}"] == str(want[key])
    assert run.tags["nir.flow"] == "true" and run.tags["nir.inactive_from_epoch"]
    assert len(tracker.history(run.run_id, "nir/grad_share")) == 2
