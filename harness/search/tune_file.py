"""The tune file: a run config plus a ``search:`` section, validated at load time.

A tune file is any run config (harness/configs/default.yaml shape; missing keys take their
defaults) with one extra top-level section; every key of it is optional::

    search:
      arm: nir                 # nir | baseline (default: nir if the config names a regularizer)
      space:                   # default: the registered search_space of the arm's component
        regularizer.weight: {type: float, low: 0.001, high: 1.0, log: true}
        train.warmup_epochs: {type: int, low: 0, high: 2}
        regularizer.conditioning: {type: categorical, choices: [dense, embed_shared]}
      # or per arm, so one file serves both:  space: {nir: {...}, baseline: {...}}
      metric: map@r            # map@r | recall@<k> | r_precision | map@1000 | nmi (validation)
      direction: maximize
      sampler: tpe             # tpe | gp | random, or {name: tpe, n_startup_trials: 5, ...}
      pruner: median           # median | hyperband | none, or {name: median, n_warmup_steps: 1}
      seed: 0                  # sampler seed
      n_trials: 20             # target number of COMPLETE + PRUNED trials of the study
      validation: {fraction: 0.2, seed: 0}   # or {folds: 4, fold: 0}; must be active
      study: null              # default <dataset>-<method>-<arm>
      storage: null            # default RESULTS/optuna/<study>.journal; or an RDB URL
      final_seeds: 0           # after the search: train the best config on all training
                               # classes for seeds seed..seed+K-1 and test them
      final_grid: null         # grid tag of those runs (default tune-<dataset>-<method>; the
                               # same for both arms so `nirbench aggregate --grid` pairs them)
      retry: {heartbeat_s: 30, grace_s: 120, max_retry: 2}
      max_failed: null         # stop after this many failed trials (default n_trials)

Nothing here imports Optuna: harness/search/study.py turns this into a study.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from nirbench.harness.config import (
    DEFAULT_CONFIG,
    ConfigError,
    RunConfig,
    ValidationConfig,
    apply_overrides,
    build_config,
    build_validation,
    flatten,
    read_yaml,
    set_dotted,
)
from nirbench.harness.config_identity import identity_tree
from nirbench.harness.registry import closest_match_hint

ARMS = ("nir", "baseline")
SAMPLERS = {
    "tpe": {
        "n_startup_trials": int,
        "multivariate": bool,
        "constant_liar": bool,
        "n_ei_candidates": int,
    },
    "gp": {"n_startup_trials": int, "deterministic_objective": bool},
    "random": {},
}
PRUNERS = {
    "median": {"n_startup_trials": int, "n_warmup_steps": int, "interval_steps": int},
    "hyperband": {"min_resource": int, "reduction_factor": int},
    "none": {},
}
PARAM_TYPES = ("float", "int", "categorical")
SPEC_KEYS = ("type", "low", "high", "log", "step", "choices")
# Sections a search may change. dataset/eval/validation/seed would change the question, not the
# answer; they are fixed by the tune file.
TUNABLE_SECTIONS = ("method", "regularizer", "train", "backbone")
SEARCH_KEYS = (
    "arm",
    "space",
    "metric",
    "direction",
    "sampler",
    "pruner",
    "seed",
    "n_trials",
    "validation",
    "study",
    "storage",
    "final_seeds",
    "final_grid",
    "retry",
    "max_failed",
)
RETRY_KEYS = {"heartbeat_s": 30, "grace_s": 120, "max_retry": 2}
DEFAULT_VALIDATION = {"fraction": 0.2, "seed": 0}
STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass(frozen=True)
class ParamSpec:
    key: str  # dotted run-config key, e.g. regularizer.weight
    type: str  # float | int | categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        if self.type == "categorical":
            return {"type": self.type, "choices": list(self.choices)}
        out: dict[str, Any] = {
            "type": self.type,
            "low": self.low,
            "high": self.high,
            "log": self.log,
        }
        if self.step is not None:
            out["step"] = self.step
        return out

    def probe_values(self) -> list[Any]:
        return list(self.choices) if self.type == "categorical" else [self.low, self.high]


@dataclass(frozen=True)
class TuneConfig:
    base: RunConfig  # the arm's run config, validation off: the final runs train this (+ params)
    arm: str
    space: tuple[ParamSpec, ...]
    validation: ValidationConfig  # what every trial trains and scores on
    metric: str = "map@r"
    direction: str = "maximize"
    sampler: str = "tpe"
    sampler_options: Mapping[str, Any] = field(default_factory=dict)
    pruner: str = "median"
    pruner_options: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    n_trials: int = 20
    study: str = ""
    storage: str | None = None
    final_seeds: int = 0
    final_grid: str = ""
    heartbeat_s: int = 30
    grace_s: int = 120
    max_retry: int = 2
    max_failed: int = 20
    source: str = ""  # the tune file

    # ------------------------------------------------------------------ configs
    def apply(
        self, params: Mapping[str, Any], *, seed: int | None = None, validation: bool = True
    ) -> RunConfig:
        """The base config with ``params`` (dotted keys) set; with the validation split (a trial)
        or without it (the exported best config and the final runs)."""
        raw = self.base.to_dict()
        for key, value in params.items():
            set_dotted(raw, key, value)
        if seed is not None:
            raw["seed"] = seed
        if validation:
            raw["validation"] = dict(vars(self.validation))
        return build_config(raw)

    def trial_config(self, params: Mapping[str, Any]) -> RunConfig:
        return self.apply(params, validation=True)

    def final_config(self, params: Mapping[str, Any], seed: int) -> RunConfig:
        return self.apply(params, seed=seed, validation=False)

    @property
    def final_seed_list(self) -> list[int]:
        return [self.base.seed + i for i in range(self.final_seeds)]

    @property
    def own_section(self) -> str:
        return "regularizer" if self.arm == "nir" else "method"

    @property
    def shared_keys(self) -> list[str]:
        """Searched keys outside the arm's own component: a fair comparison tunes them in the
        other arm too."""
        return [p.key for p in self.space if p.key.split(".")[0] != self.own_section]

    @property
    def weight_convention(self) -> str | None:
        if self.base.regularizer is None:
            return None
        return self.base.regularizer.params.get("weight_convention")

    @property
    def fingerprint(self) -> str:
        """What makes trials of one study comparable: the base config (searched keys and seed
        left out), the space, the arm, the metric, the direction and the validation split. A
        study resumed with a different fingerprint would mix incomparable trials."""
        # The identity, not the display: keys the display gained must not refuse old studies.
        flat = {
            k: v
            for k, v in flatten(identity_tree(self.base)).items()
            if k != "seed" and k not in {p.key for p in self.space}
        }
        tree = {
            "base": flat,
            "space": {p.key: p.to_dict() for p in self.space},
            "arm": self.arm,
            "metric": self.metric,
            "direction": self.direction,
            "validation": dict(vars(self.validation)),
        }
        text = json.dumps(tree, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def summary(self) -> dict[str, Any]:
        """The search setup as plain data (study attributes, parent-run params)."""
        return {
            "arm": self.arm,
            "metric": self.metric,
            "direction": self.direction,
            "sampler": self.sampler,
            "sampler_options": dict(self.sampler_options),
            "pruner": self.pruner,
            "pruner_options": dict(self.pruner_options),
            "seed": self.seed,
            "n_trials": self.n_trials,
            "validation": dict(vars(self.validation)),
            "space": {p.key: p.to_dict() for p in self.space},
            "weight_convention": self.weight_convention,
            "fingerprint": self.fingerprint,
            "base_config_hash": self.base.config_hash,
            "final_grid": self.final_grid,
            "source": self.source,
        }


# ------------------------------------------------------------------------------ loading
def load_tune_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    *,
    arm: str | None = None,
    n_trials: int | None = None,
    study: str | None = None,
    storage: str | None = None,
    final_seeds: int | None = None,
) -> TuneConfig:
    """Read a tune file (default: the embedded default run config, default search), apply
    ``key=value`` overrides (``search.n_trials=5`` works too) and the CLI options, validate."""
    raw = apply_overrides(read_yaml(path or DEFAULT_CONFIG), overrides)
    search = raw.pop("search", None) or {}
    if not isinstance(search, dict):
        raise ConfigError(f"search must be a mapping, got {search!r}")
    _reject(search, SEARCH_KEYS, "search")
    cli = {
        "arm": arm,
        "n_trials": n_trials,
        "study": study,
        "storage": storage,
        "final_seeds": final_seeds,
    }
    search.update({k: v for k, v in cli.items() if v is not None})
    return build_tune_config(raw, search, source=str(path or DEFAULT_CONFIG))


def build_tune_config(
    raw: Mapping[str, Any], search: Mapping[str, Any], *, source: str = ""
) -> TuneConfig:
    raw = copy.deepcopy(dict(raw))
    arm = search.get("arm") or (
        "nir" if raw.get("regularizer") not in (None, "none") else "baseline"
    )
    if arm not in ARMS:
        raise ConfigError(
            f"search.arm must be one of {', '.join(ARMS)}, got {arm!r}."
            + closest_match_hint(str(arm), list(ARMS))
        )
    if arm == "baseline":
        raw["regularizer"] = None  # the same file tunes both arms: only this field differs
    elif raw.get("regularizer") in (None, "none"):
        raw["regularizer"] = "nir"
    # The run config's own validation section (if any) is the default split of the trials; the
    # base itself (best config, final runs) always trains on all training classes.
    own_validation = raw.pop("validation", None)
    base = build_config(raw)
    validation = _validation(search.get("validation", own_validation))

    n = _int(search, "n_trials", 20, low=1)
    metric = str(search.get("metric", "map@r"))
    _check_metric(metric, base)
    direction = str(search.get("direction", "maximize"))
    if direction not in ("maximize", "minimize"):
        raise ConfigError(f"search.direction must be maximize or minimize, got {direction!r}")
    sampler, sampler_options = _component("sampler", search.get("sampler", "tpe"), SAMPLERS)
    pruner, pruner_options = _component("pruner", search.get("pruner", "median"), PRUNERS)
    study = str(search.get("study") or f"{base.dataset.name}-{base.method.name}-{arm}")
    if not STUDY_NAME.match(study):
        raise ConfigError(
            f"search.study {study!r}: use letters, digits and . _ + - (it names the storage file)"
        )
    storage = search.get("storage")
    if storage is not None and (not isinstance(storage, str) or not storage.strip()):
        raise ConfigError(
            f"search.storage must be a journal file path or an RDB URL, got {storage!r}"
        )
    retry = dict(RETRY_KEYS)
    given_retry = search.get("retry") or {}
    if not isinstance(given_retry, dict):
        raise ConfigError(f"search.retry must be a mapping, got {given_retry!r}")
    _reject(given_retry, tuple(RETRY_KEYS), "search.retry")
    for key in RETRY_KEYS:
        retry[key] = _int(
            given_retry,
            key,
            RETRY_KEYS[key],
            low=0 if key == "max_retry" else 1,
            where="search.retry",
        )
    if retry["grace_s"] <= retry["heartbeat_s"]:
        raise ConfigError(
            f"search.retry.grace_s ({retry['grace_s']}) must exceed heartbeat_s "
            f"({retry['heartbeat_s']}), or live trials are taken for dead ones"
        )
    max_failed = search.get("max_failed")
    tc = TuneConfig(
        base=base,
        arm=arm,
        space=(),
        validation=validation,
        metric=metric,
        direction=direction,
        sampler=sampler,
        sampler_options=sampler_options,
        pruner=pruner,
        pruner_options=pruner_options,
        seed=_int(search, "seed", 0, low=0),
        n_trials=n,
        study=study,
        storage=storage,
        final_seeds=_int(search, "final_seeds", 0, low=0),
        final_grid=str(search.get("final_grid") or f"tune-{base.dataset.name}-{base.method.name}"),
        heartbeat_s=retry["heartbeat_s"],
        grace_s=retry["grace_s"],
        max_retry=retry["max_retry"],
        max_failed=n if max_failed is None else _int(search, "max_failed", n, low=1),
        source=source,
    )
    space = _space(search.get("space"), tc)
    tc = dataclasses.replace(tc, space=space)
    _probe(tc)
    return tc


def _reject(given: Mapping[str, Any], valid: tuple[str, ...], where: str) -> None:
    for name in given:
        if name not in valid:
            raise ConfigError(
                f"unknown key {where}.{name}; valid: {', '.join(valid)}."
                + closest_match_hint(str(name), list(valid))
            )


def _int(
    given: Mapping[str, Any], key: str, default: int, *, low: int, where: str = "search"
) -> int:
    value = given.get(key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}.{key} must be an integer, got {value!r}")
    if value < low:
        raise ConfigError(f"{where}.{key} must be >= {low}, got {value}")
    return value


def _validation(raw: Any) -> ValidationConfig:
    raw = DEFAULT_VALIDATION if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(
            f"search.validation must be a mapping like {{fraction: 0.2}}, got {raw!r}"
        )
    try:
        v = build_validation(raw)
    except ConfigError as err:
        raise ConfigError(f"search.{err}") from None
    if not v.active:
        raise ConfigError(
            "search.validation must hold out training classes (fraction > 0 or "
            "folds >= 2): a search scores trials on held-out TRAINING classes and "
            "never on the test classes"
        )
    return v


def _check_metric(metric: str, base: RunConfig) -> None:
    fixed = ["map@r", "r_precision", "map@1000"] + (["nmi"] if base.eval.nmi else [])
    recalls = [f"recall@{k}" for k in base.recall_at]
    if metric not in fixed + recalls:
        valid = recalls + fixed
        raise ConfigError(
            f"search.metric {metric!r} is not computed by these runs; valid: "
            f"{', '.join(valid)}." + closest_match_hint(metric, valid)
        )


def _component(kind: str, raw: Any, table: dict[str, dict[str, type]]) -> tuple[str, dict]:
    if isinstance(raw, str) or raw is None:
        raw = {"name": raw or "none"}
    if not isinstance(raw, dict) or "name" not in raw:
        raise ConfigError(
            f"search.{kind} must be a name ({', '.join(table)}) or a mapping with "
            f"a name, got {raw!r}"
        )
    options = dict(raw)
    name = str(options.pop("name"))
    if name not in table:
        raise ConfigError(
            f"search.{kind} {name!r} is unknown; valid: {', '.join(table)}."
            + closest_match_hint(name, list(table))
        )
    allowed = table[name]
    _reject(options, tuple(allowed), f"search.{kind}")
    for key, value in options.items():
        kind_ok = isinstance(value, allowed[key]) and not (
            allowed[key] is int and isinstance(value, bool)
        )
        if not kind_ok:
            raise ConfigError(f"search.{kind}.{key} must be {allowed[key].__name__}, got {value!r}")
        if allowed[key] is int and value < (
            0 if key in ("n_startup_trials", "n_warmup_steps") else 1
        ):
            raise ConfigError(f"search.{kind}.{key} is out of range: {value}")
    return name, options


def _registered_space(tc: TuneConfig) -> dict[str, Any]:
    from nirbench.methods import METHODS, REGULARIZERS

    if tc.arm == "nir":
        assert tc.base.regularizer is not None
        name = tc.base.regularizer.name
        space = REGULARIZERS.get(name).search_space
        where = f"regularizer {name!r}"
    else:
        name = tc.base.method.name
        space = METHODS.get(name).search_space
        where = f"method {name!r}"
    if not space:
        raise ConfigError(f"{where} registers no search space; give search.space in the tune file")
    return {f"{tc.own_section}.{k}": dict(v) for k, v in space.items()}


def _space(raw: Any, tc: TuneConfig) -> tuple[ParamSpec, ...]:
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"search.space must be a mapping of dotted config keys, got {raw!r}")
    if raw and set(raw) <= set(ARMS):  # per-arm form: {nir: {...}, baseline: {...}}
        raw = raw.get(tc.arm)
    entries = raw if raw else _registered_space(tc)
    specs = []
    for key, spec in entries.items():
        specs.append(_param(str(key), spec, tc))
    return tuple(specs)


def _param(key: str, spec: Any, tc: TuneConfig) -> ParamSpec:
    where = f"search.space.{key}"
    section = key.split(".")[0]
    if "." not in key or section not in TUNABLE_SECTIONS:
        raise ConfigError(
            f"{where}: searchable keys are dotted run-config keys under "
            f"{', '.join(TUNABLE_SECTIONS)} (e.g. regularizer.weight); "
            f"dataset, eval, validation and seed are fixed by the tune file"
        )
    if tc.arm == "baseline" and section == "regularizer":
        raise ConfigError(
            f"{where}: the baseline arm runs without a regularizer; use the "
            f"per-arm form search.space: {{nir: {{...}}, baseline: {{...}}}}"
        )
    if not isinstance(spec, dict):
        raise ConfigError(
            f"{where} must be a mapping like {{type: float, low: 0.001, high: 1, "
            f"log: true}}, got {spec!r}"
        )
    _reject(spec, SPEC_KEYS, where)
    kind = spec.get("type") or ("categorical" if "choices" in spec else "float")
    if kind not in PARAM_TYPES:
        raise ConfigError(f"{where}.type must be one of {', '.join(PARAM_TYPES)}, got {kind!r}")
    if kind == "categorical":
        choices = spec.get("choices")
        if (
            not isinstance(choices, list)
            or not choices
            or len(set(map(str, choices))) != len(choices)
        ):
            raise ConfigError(f"{where}.choices must be a non-empty list of distinct values")
        extra = set(spec) - {"type", "choices"}
        if extra:
            raise ConfigError(
                f"{where}: {', '.join(sorted(extra))} do not apply to a categorical parameter"
            )
        return ParamSpec(key, kind, choices=tuple(choices))
    if "choices" in spec:
        raise ConfigError(f"{where}: choices only apply to type categorical")
    number = int if kind == "int" else (int, float)
    low, high = spec.get("low"), spec.get("high")
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, number):
            what = "an integer" if kind == "int" else "a number"
            raise ConfigError(f"{where}.{name} must be {what}, got {value!r}")
    if not low < high:
        raise ConfigError(f"{where}: low ({low}) must be < high ({high})")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}.log must be true or false, got {log!r}")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log scale needs low > 0, got {low}")
    step = spec.get("step")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, number) or step <= 0:
            raise ConfigError(f"{where}.step must be a positive number, got {step!r}")
        if log:
            raise ConfigError(f"{where}: step and log cannot be combined")
    if kind == "float":
        low, high = float(low), float(high)
        step = float(step) if step is not None else None
    return ParamSpec(key, kind, low, high, log, step)


def _probe(tc: TuneConfig) -> None:
    """Every end of every range, and every choice, must make a valid run config: a typo in a key
    or a range the config rejects fails here, not in trial 17."""
    for spec in tc.space:
        for value in spec.probe_values():
            try:
                tc.apply({spec.key: value})
            except ConfigError as err:
                raise ConfigError(
                    f"search.space.{spec.key} = {value!r} makes an invalid run config: {err}"
                ) from None


def flat_params(tc: TuneConfig) -> dict[str, Any]:
    """The search setup flattened for MLflow params."""
    return flatten({"search": tc.summary()})


__all__ = ["TuneConfig", "ParamSpec", "load_tune_config", "build_tune_config", "ARMS"]
