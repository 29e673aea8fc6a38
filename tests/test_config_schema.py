"""The typed schema (harness/config_schema.py): display shows every key, identity drops a key
only at its historical default, errors name the key, the value and the fix, backbone.pretrained
resolves per backbone, and the config stage imports nothing downstream."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from nirbench.harness.cli.main import main
from nirbench.harness.config import ConfigError, build_config, load_config
from nirbench.harness.config_identity import HISTORICAL_DEFAULTS, config_hash, identity_tree
from nirbench.harness.config_schema import SECTIONS, RunConfig

# A non-default value for every historical key, with what it needs to be valid.
CHANGED = {
    ("eval", "every"): (2, []),
    ("eval", "full_every"): (0, []),
    ("eval", "dense_tail"): (True, []),
    ("eval", "kmeans_engine"): ("torch", []),
    ("backbone", "width"): (0.5, []),
    ("backbone", "input_px"): (24, []),
    ("backbone", "weights"): (None, ["backbone.pretrained=true"]),
    ("train", "lr_schedule"): ("cosine", []),
    ("train", "fused_optimizer"): (True, []),
    ("train", "data_seed"): (7, []),
    ("dataset", "allow_partial"): (True, ["dataset.name=cub200", "dataset.root=/d"]),
    ("dataset", "cache"): ("jpeg", ["dataset.name=cub200", "dataset.root=/d"]),
    ("dataset", "version"): (None, ["dataset.name=synth-sop"]),
}


def schema_keys(cfg: RunConfig) -> set[str]:
    keys = {"seed"} | {
        f"{s}.{k}" for s in SECTIONS for k in RunConfig.model_fields[s].annotation.model_fields
    }
    keys |= {"method.name"} | {f"method.{p}" for p in cfg.method.params}
    if cfg.regularizer is None:
        return keys | {"regularizer"}
    return keys | {"regularizer.name"} | {f"regularizer.{p}" for p in cfg.regularizer.params}


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["regularizer=nir", "validation.fraction=0.2"],
        ["backbone.name=resnet50", "dataset.name=sop", "dataset.root=/d"],
    ],
)
def test_display_holds_every_key_and_loads_back_as_itself(overrides):
    cfg = load_config(overrides=overrides)
    assert set(cfg.flat()) == schema_keys(cfg)  # config.yaml and the MLflow params
    again = build_config(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg and again.config_hash == cfg.config_hash


def test_cli_all_lists_every_key_with_its_value(capsys):
    assert main(["config", "--all", "--set", "regularizer=nir", "--set", "eval.every=3"]) == 0
    out = capsys.readouterr().out
    cfg = load_config(overrides=["regularizer=nir", "eval.every=3"])
    listed = dict(line.split(" = ", 1) for line in out.splitlines() if " = " in line)
    assert {k.strip() for k in listed} == set(cfg.flat())
    assert listed["eval.every".ljust(len(max(listed, key=len)))].startswith("3")
    assert f"# config_hash: {cfg.config_hash}" in out


def test_identity_drops_a_key_only_at_its_historical_default():
    base = load_config()
    tree, shown = identity_tree(base), base.to_dict()
    dropped = {(s, k) for s in SECTIONS if s in tree for k in shown[s] if k not in tree[s]}
    assert dropped == {
        key for key, value in HISTORICAL_DEFAULTS.items() if shown[key[0]][key[1]] == value
    }
    assert "validation" not in tree  # inactive
    assert set(CHANGED) == set(HISTORICAL_DEFAULTS)
    for (section, key), (value, needs) in CHANGED.items():
        if value is None:  # a derived key: off its historical value through ``needs`` alone
            assert key in identity_tree(load_config(overrides=needs))[section], (section, key)
            continue
        cfg = load_config(overrides=needs + [f"{section}.{key}={json.dumps(value)}"])
        assert key in identity_tree(cfg)[section], (section, key)  # off its default: kept
        assert cfg.config_hash != load_config(overrides=needs).config_hash, (section, key)


def test_pretrained_resolves_per_backbone_and_random_init_is_asked_for():
    for name in ("resnet18", "resnet50"):
        unset = load_config(overrides=[f"backbone.name={name}"])
        assert unset.backbone.pretrained is True  # ImageNet weights by default
        assert unset.to_dict()["backbone"]["pretrained"] is True  # shown resolved
        explicit = load_config(overrides=[f"backbone.name={name}", "backbone.pretrained=true"])
        assert explicit.config_hash == unset.config_hash
        scratch = load_config(overrides=[f"backbone.name={name}", "backbone.pretrained=false"])
        assert scratch.backbone.pretrained is False and scratch.config_hash != unset.config_hash
    small = load_config(overrides=["backbone.pretrained=null"])
    assert small.backbone.pretrained is False and small.backbone.weights is None
    assert small.config_hash == load_config(overrides=["backbone.pretrained=false"]).config_hash
    assert load_config(overrides=["backbone.pretrained=true"]).backbone.weights


def test_the_identity_is_the_historical_hash_function():
    """An independent reference: sha256 of the sorted compact JSON of the identity tree."""
    import hashlib

    cfg = load_config(overrides=["regularizer=nir", "seed=3"])
    text = json.dumps(identity_tree(cfg), sort_keys=True, separators=(",", ":"))
    assert config_hash(cfg) == cfg.config_hash == hashlib.sha256(text.encode()).hexdigest()[:16]


@pytest.mark.parametrize(
    "override, message",
    [
        (
            ["backbone.widht=0.5"],
            "unknown config key 'backbone.widht'; valid keys under backbone.: ",
        ),
        (["backbone.widht=0.5"], "Did you mean 'width'?"),
        (["backbone.width=8"], "backbone.width must be in [0.125, 4], got 8 (backbone.width: "),
        (["train.lr=0"], "train.lr must be > 0, got 0"),
        (["train.lr=1e-3x"], "train.lr must be float, got '1e-3x' (str)"),
        (["train.deterministic=1"], "train.deterministic must be bool, got 1 (int)"),
        (["train.precision=fp16"], "train.precision must be one of fp32, bf16, got 'fp16'"),
        (["eval.recall_at=1,0"], "eval.recall_at[1] must be >= 1, got 0"),
        (["eval.recall_at=[]"], "eval.recall_at must be a non-empty list of integers"),
        (["train=5"], "train must be a mapping, got 5"),
        (["train.epochs=0", "eval.every=0"], "2 problems in the config:"),
        (["backbone.input_px=24", "backbone.name=resnet18"], "applies to small_cnn only"),
        (["dataset.version=7"], "leave dataset.version out, it is derived"),
    ],
)
def test_errors_name_the_key_the_value_and_the_fix(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=override)
    assert message in str(err.value)
    assert "Input should" not in str(err.value)  # pydantic's wording never reaches the user


def test_yaml_floats_written_as_text_are_floats():
    cfg = load_config(overrides=["train.lr=1e-4", "train.epochs='7'"])
    assert cfg.train.lr == 1e-4 and isinstance(cfg.train.lr, float) and cfg.train.epochs == 7


def test_the_config_stage_imports_nothing_downstream():
    code = (
        "import sys\n"
        "from nirbench.harness.config import load_config\n"
        "load_config(overrides=['backbone.pretrained=true', 'regularizer=nir']).config_hash\n"
        "load_config(overrides=['backbone.name=resnet50']).to_yaml()\n"
        "bad = [m for m in sys.modules if m.split('.')[:3] in (['nirbench', 'harness', s]\n"
        "       for s in ('train', 'grid', 'search', 'results', 'tracking', 'evaluation'))]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
