"""The run config: load-time validation with clear messages, overrides, and the identity hash."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nirbench.harness.config import (
    DEFAULT_CONFIG,
    CONFIG_DIR,
    ConfigError,
    build_config,
    load_config,
)
from nirbench.harness.grid.plan import load_grid
from nirbench.harness.registry import Registry, UnknownNameError


def test_default_config_loads_with_every_default_resolved():
    cfg = load_config()
    assert cfg.method.name == "proxy_anchor"
    assert cfg.method.params["margin"] == 0.1  # registered default filled in
    assert cfg.regularizer is None and cfg.regularizer_name == "none"
    assert cfg.recall_at == (1, 2, 4, 8)


def test_every_shipped_config_and_grid_builds():
    # Real datasets need a root; the folder does not have to exist to BUILD a config.
    root = ["dataset.root=/data/real-datasets"]
    for path in CONFIG_DIR.rglob("*.yaml"):
        raw = yaml.safe_load(path.read_text())
        if "datasets" in raw or "blocks" in raw:  # a grid
            plan = load_grid(path, root)
            assert plan.configs, path
        elif "search" in raw:  # a tune file (`nirbench tune`): both arms must build
            from nirbench.harness.search.tune_file import load_tune_config

            for arm in ("nir", "baseline"):
                assert load_tune_config(path, arm=arm).space, (path, arm)
        else:
            load_config(path, root)


def test_dotted_overrides_and_regularizer_shorthand():
    cfg = load_config(
        overrides=[
            "train.epochs=3",
            "regularizer=nir",
            "regularizer.form=nll",
            "method.margin=0.2",
            "eval.recall_at=1,10",
            "seed=7",
        ]
    )
    assert cfg.train.epochs == 3 and cfg.seed == 7
    assert cfg.regularizer.name == "nir" and cfg.regularizer.params["form"] == "nll"
    assert cfg.regularizer.params["blocks"] == 5
    assert cfg.method.params["margin"] == 0.2
    assert cfg.recall_at == (1, 10)


def test_hash_is_identity_seed_included_and_stable():
    a = load_config(overrides=["seed=1"])
    b = load_config(overrides=["seed=1"])
    c = load_config(overrides=["seed=2"])
    assert a.config_hash == b.config_hash != c.config_hash
    assert a.arm_hash == c.arm_hash  # same arm, different seed
    nir = load_config(overrides=["seed=1", "regularizer=nir"])
    assert nir.config_hash != a.config_hash and nir.arm_hash != a.arm_hash
    # Explicitly writing a default does not change the identity.
    assert load_config(overrides=["seed=1", "method.margin=0.1"]).config_hash == a.config_hash


@pytest.mark.parametrize(
    "override, message",
    [
        (["method.name=proxy_ancor"], "Did you mean 'proxy_anchor'"),
        (["dataset.name=synth-cubb"], "Did you mean 'synth-cub'"),
        (["regularizer=nri"], "Did you mean 'nir'"),
        (["train.batch_size=63"], "must be divisible by train.samples_per_class (2)"),
        (["train.epochs=abc"], "train.epochs must be int, got 'abc'"),
        (["train.epochs=0"], "train.epochs must be >= 1"),
        (["train.lrr=0.1"], "Did you mean 'lr'"),
        (["method.marginn=0.3"], "unknown parameter method.marginn"),
        (["method.margin=big"], "method.margin must be float"),
        (["backbone.name=vgg"], "backbone.name 'vgg' is unknown"),
        (["train.warmup_epochs=8"], "warmup_epochs (8) must be < train.epochs"),
        (
            ["method=multi_similarity", "regularizer=nir", "regularizer.proxy_source=method"],
            "needs class proxies",
        ),
        (["train.device=tpu"], "train.device must be one of"),
        (["bogus=1"], "unknown config key 'bogus'"),
    ],
)
def test_bad_configs_fail_at_load_time_naming_the_problem(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=override)
    assert message in str(err.value)


def test_nir_on_the_proxies_of_a_pair_method_names_the_own_mode_and_proxy_methods():
    with pytest.raises(
        ConfigError, match="proxy_source=own.*use a proxy-based method .*proxy_anchor"
    ):
        load_config(
            overrides=[
                "method=multi_similarity",
                "regularizer=nir",
                "regularizer.proxy_source=method",
            ]
        )


def test_missing_and_malformed_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="key=value"):
        load_config(overrides=["train.epochs"])


def test_yaml_round_trip_preserves_identity(tmp_path: Path):
    cfg = load_config(overrides=["regularizer=nir", "seed=4"])
    path = tmp_path / "resolved.yaml"
    path.write_text(cfg.to_yaml())
    again = load_config(path)
    assert again == cfg and again.config_hash == cfg.config_hash


def test_build_config_from_dict_matches_file():
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    assert build_config(raw) == load_config()


def test_registry_is_strict():
    reg: Registry[int] = Registry("thing")
    reg.add("alpha", 1)
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("alpha", 2)
    with pytest.raises(UnknownNameError, match="Did you mean 'alpha'"):
        reg.get("alpah")
    assert reg.names("al*") == ["alpha"] and "alpha" in reg


def test_grid_blocks_inherit_top_level_keys_and_add_overrides(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(
        "name: b\nregularizers: [null]\nseeds: [0, 1]\noverrides: [train.epochs=3]\n"
        "blocks:\n"
        "  - {datasets: [synth-cub], methods: [proxy_anchor, proxy_nca]}\n"
        "  - {datasets: [synth-sop], methods: [multi_similarity], seeds: [5],"
        " overrides: [train.batch_size=32]}\n"
    )
    plan = load_grid(grid)
    got = [
        (c.dataset.name, c.method.name, c.seed, c.train.epochs, c.train.batch_size)
        for c in plan.configs
    ]
    default_batch = load_config().train.batch_size
    assert got == [
        ("synth-cub", "proxy_anchor", 0, 3, default_batch),
        ("synth-cub", "proxy_anchor", 1, 3, default_batch),
        ("synth-cub", "proxy_nca", 0, 3, default_batch),
        ("synth-cub", "proxy_nca", 1, 3, default_batch),
        ("synth-sop", "multi_similarity", 5, 3, 32),
    ]
    grid.write_text("blocks:\n  - {datasets: [synth-cub], method: [proxy_anchor]}\n")
    with pytest.raises(ConfigError, match="block 1 has unknown keys \\['method'\\]"):
        load_grid(grid)


def test_the_default_grid_is_the_headline_rows_and_a_subset_of_the_zoo_grid():
    from nirbench.methods import METHODS

    default = load_grid(CONFIG_DIR / "grids" / "default.yaml")
    zoo = load_grid(CONFIG_DIR / "grids" / "zoo.yaml")
    rows = {(c.method.name, c.regularizer_name) for c in default.configs}
    assert rows == {("proxy_anchor", "none"), ("proxy_anchor", "nir")}
    assert {c.dataset.name for c in default.configs} == {"synth-cub", "synth-cars", "synth-sop"}
    assert {c.seed for c in default.configs} == {0, 1, 2, 3} and len(default.configs) == 24
    # the zoo's seeds 0-2 of these rows are the same configurations (finished runs are shared)
    assert {c.config_hash for c in default.configs if c.seed < 3} <= {
        c.config_hash for c in zoo.configs
    }
    assert len(zoo.configs) == len(list(METHODS.names())) * 2 * 3 * 3 and not zoo.skipped
    pair_nir = [
        c for c in zoo.configs if c.regularizer and not METHODS.get(c.method.name).provides_proxies
    ]
    assert pair_nir and all(c.regularizer.params["proxy_source"] == "own" for c in pair_nir)


def test_a_plain_nir_entry_gives_pair_methods_nir_with_its_own_proxies(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(
        "datasets: [synth-cub]\nmethods: [multi_similarity, proxy_anchor]\nregularizers: [nir]\n"
    )
    plan = load_grid(grid)
    assert not plan.skipped
    assert [c.regularizer.params["proxy_source"] for c in plan.configs] == ["own", "method"]
