"""The run config: typed, frozen, validated at load time, hashed into the run's identity.

Everything that can be wrong with a run (an unknown method, a bad type, a batch size that does not
split into classes, NIR on a method without proxies) is reported here, before any work starts.
The resolved config includes every method/regularizer default, so its hash changes whenever a
default changes: two runs with the same hash really trained the same thing.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from nirbench.harness.registry import closest_match_hint

CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"
BACKBONES = ("small_cnn", "resnet18", "resnet50")
DEVICES = ("auto", "cpu", "cuda")
POOLINGS = ("average", "double")
PRECISIONS = ("fp32", "bf16")
LR_SCHEDULES = ("constant", "cosine")
CACHE_KINDS = ("uint8", "jpeg")  # harness.data.real.cache.KINDS


# Keys added after runs were recorded: left out of the resolved dict (and so of the hash) while
# they hold the value every earlier config implicitly had, so those configs keep their identity
# and their finished runs are still found and skipped.
NEUTRAL_DEFAULTS = {("eval", "every"): 1, ("eval", "full_every"): 1,
                    ("eval", "dense_tail"): False, ("backbone", "width"): 1.0,
                    ("train", "lr_schedule"): "constant", ("dataset", "allow_partial"): False,
                    ("dataset", "cache"): "uint8", ("backbone", "weights"): None,
                    ("train", "fused_optimizer"): False,
                    ("backbone", "input_px"): None,
                    ("dataset", "version"): 1, ("eval", "kmeans_engine"): "auto"}


KMEANS_ENGINES_CONFIG = ("auto", "torch", "faiss")  # eval.kmeans_engine


class ConfigError(ValueError):
    """A config that cannot run; the message names the key, the bad value and the fix."""


class IncompatiblePairError(ConfigError):
    """The method and the regularizer cannot work together (NIR on the proxies of a method that
    has none). A grid lists such pairs as skipped instead of failing."""


@dataclass(frozen=True)
class DatasetConfig:
    name: str = "synth-cub"
    root: str | None = None  # real datasets: folder holding the official layout
    # Train on a copy that is not the complete official dataset (tests, debugging): the split
    # stays by official class id and the run is tagged dataset.partial. Left out of the hash
    # when false, so every config written before the field existed keeps its identity.
    allow_partial: bool = False
    # Derived, never set: the registered version of the dataset's data (DatasetInfo.version), so
    # a dataset regenerated under the same name is a new identity. Left out while 1.
    version: int = 1
    # Real datasets: "uint8" (decoded pixels, exact) or "jpeg" (the compact, lossy cache, 6-15x
    # smaller; README "Cache size per dataset"). Left out of the hash when "uint8".
    cache: str = "uint8"


@dataclass(frozen=True)
class BackboneConfig:
    name: str = "small_cnn"
    embed_dim: int = 128
    pretrained: bool = False
    freeze_bn: bool = False  # freeze BatchNorm running statistics (the paper's ResNet50 setting)
    pooling: str = "average"  # ResNets: "double" = global average + global max (NIR code option)
    # small_cnn: channel width multiplier (0.5 = 16-32-64-128 channels, about 4x fewer
    # multiply-adds): the embedded protocol's cheaper step. ResNets keep their width (1.0).
    width: float = 1.0
    # small_cnn: downsample the input to N x N px first (antialiased bilinear) when set: a cheaper
    # step for the 32 px embedded images (24 px: about 0.56x the multiply-adds). None: as given.
    input_px: int | None = None
    # Which pretrained weights (resolved, never set by hand): small_cnn with pretrained=true gets
    # the embedded pretraining recipe's id (harness/train/pretrain.py), so a new recipe is a new
    # run identity; None otherwise (ResNets: torchvision's ImageNet weights, IMAGENET1K_V1).
    weights: str | None = None


@dataclass(frozen=True)
class MethodConfig:
    name: str = "proxy_anchor"
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RegularizerConfig:
    name: str = "nir"
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 8
    batch_size: int = 64
    samples_per_class: int = 2
    lr: float = 1e-3
    weight_decay: float = 4e-4
    warmup_epochs: int = 0  # epochs with the backbone body frozen (head, proxies, flow train)
    device: str = "auto"
    deterministic: bool = False  # torch.use_deterministic_algorithms; CPU runs are reproducible anyway
    threads: int = 0  # torch CPU threads; 0 = leave torch's default
    # Overrides the lr multiplier of every proxy table in the run (the method's and NIR's own),
    # whatever the method: the paper's protocol knob (x2000 baseline, x4000 with NIR). None = the
    # method's own proxy_lr_mult. Methods without proxies ignore it.
    proxy_lr_mult: float | None = None
    lr_milestones: tuple[int, ...] | None = None  # epochs at which every lr is multiplied by
    lr_gamma: float = 0.1                         # lr_gamma (MultiStepLR; SOP: 140,230 x 0.2)
    # "cosine": every lr follows a half cosine from its value to ~0 over the epochs after the
    # warmup (per epoch), so a fixed budget ends on a plateau instead of mid-climb.
    lr_schedule: str = "constant"
    # Adam's fused kernel (one vectorised pass per tensor): 5x faster steps on a CPU for NIR's
    # 1.4 M flow parameters, but not bitwise the per-tensor update, so it is part of the identity.
    fused_optimizer: bool = False
    precision: str = "fp32"  # "bf16": backbone under bf16 autocast (losses stay in fp32)
    channels_last: bool = False  # NHWC memory format: faster convolutions on tensor cores
    cudnn_benchmark: bool = False  # cudnn autotuning: faster, not bitwise reproducible


@dataclass(frozen=True)
class EvalConfig:
    recall_at: tuple[int, ...] | None = None  # None = the dataset's customary list
    nmi: bool = True
    batch_size: int = 512
    structure: bool = True  # rho, pi_density, sigma2_kappa, g2 (harness/evaluation/structure.py)
    # Evaluate on the test split every N epochs, and always after the last one: a cheaper run
    # with the same final numbers (the convergence curve gets every N-th point).
    every: int = 1
    # Also every epoch of the last 20% (the "still rising" rule's window), so its slope rests on
    # every epoch there (harness/evaluation/cadence.py).
    dense_tail: bool = False
    # Of the evaluated epochs, which get the expensive metrics (mAP@1000: a kNN pass 1000 deep,
    # NMI, the structure metrics): every N-th epoch and always the last; 0 = the last only. The
    # other evaluated epochs get the curve metrics (Recall@k, MAP@R, R-Precision: a pass only as
    # deep as the largest class), which the convergence curves and the "still rising" rule read.
    # The final numbers never depend on it. 1 (default) = every metric at every evaluated epoch.
    full_every: int = 1
    # The k-means engine of NMI, one per run (KMEANS_ENGINES_CONFIG): "auto" = faiss on a GPU,
    # torch on the CPU; "torch" / "faiss" = that library on the run's device. The resolved engine
    # is the run's nmi.kmeans_engine tag (harness/tracking/numerics.py).
    kmeans_engine: str = "auto"


@dataclass(frozen=True)
class ValidationConfig:
    """A class-disjoint validation split of the TRAINING classes (harness/data/validation.py).

    Inactive by default (fraction 0 and folds 0): the run trains on all training classes and
    evaluates on the test split (``test/<metric>``). Active: it trains on the remaining training
    classes and evaluates on the held-out ones only (``val/<metric>``); the test split is never
    touched. Give either ``fraction`` or ``folds`` (+ ``fold``); ``seed`` picks the classes and is
    independent of the run seed."""

    fraction: float = 0.0
    folds: int = 0
    fold: int = 0
    seed: int = 0

    @property
    def active(self) -> bool:
        return self.fraction > 0 or self.folds > 0


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    regularizer: RegularizerConfig | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict, the shape a user writes in YAML (method params inline).

        An inactive ``validation`` section is left out, so every config written before the
        section existed keeps its hash (and its finished runs are still found and skipped). For
        the same reason the keys of ``NEUTRAL_DEFAULTS`` (``dataset.allow_partial: false``,
        ``eval.every: 1``, ...) and a regularizer param registered as ``identity_neutral``
        (NIR's ``flow: true``) are left out while they hold that value."""
        out = dataclasses.asdict(self)
        if not self.validation.active:
            del out["validation"]
        for (section, key), neutral in NEUTRAL_DEFAULTS.items():
            if out[section].get(key) == neutral:
                del out[section][key]
        out["method"] = {"name": self.method.name, **dict(self.method.params)}
        if self.regularizer is not None:
            out["regularizer"] = {"name": self.regularizer.name,
                                  **_identity_params(self.regularizer)}
        if self.eval.recall_at is not None:
            out["eval"]["recall_at"] = list(self.eval.recall_at)
        if self.train.lr_milestones is not None:
            out["train"]["lr_milestones"] = list(self.train.lr_milestones)
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=True)

    @property
    def config_hash(self) -> str:
        """The run's identity: the hash of the resolved config, seed included."""
        return _hash(self.to_dict())

    @property
    def arm_hash(self) -> str:
        """Identity of the arm (everything but the seed): the runs one table cell averages."""
        return _hash({k: v for k, v in self.to_dict().items() if k != "seed"})

    @property
    def regularizer_name(self) -> str:
        return self.regularizer.name if self.regularizer is not None else "none"

    @property
    def recall_at(self) -> tuple[int, ...]:
        from nirbench.harness.data import DATASETS

        return self.eval.recall_at or DATASETS.get(self.dataset.name).recall_at

    def flat(self) -> dict[str, Any]:
        return flatten(self.to_dict())


def _identity_params(reg: RegularizerConfig) -> dict[str, Any]:
    """The regularizer's params minus those at their registered identity-neutral value (params
    added after runs were recorded, at the value that reproduces those runs)."""
    from nirbench.methods import REGULARIZERS

    neutral = REGULARIZERS.get(reg.name).identity_neutral
    return {k: v for k, v in reg.params.items() if not (k in neutral and v == neutral[k])}


def _hash(tree: Mapping[str, Any]) -> str:
    canonical = json.dumps(tree, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Loading: YAML -> dict -> overrides -> typed + validated config


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load ``path`` (default: the embedded default config), apply ``key=value`` overrides."""
    raw = read_yaml(path or DEFAULT_CONFIG)
    budgets = raw.pop("budgets", None)  # a protocol file's epoch budgets (harness/budgets.py)
    raw.pop("stats", None)  # the verdict margin (harness/results/export.py), not a run setting
    raw = apply_overrides(raw, overrides)
    if budgets is not None and not any(o.strip().startswith("train.epochs=")
                                       for o in overrides or []):
        from nirbench.harness.budgets import BudgetError, parse_budgets

        method = raw.get("method") or "proxy_anchor"
        try:
            table = parse_budgets(budgets, str(path))
        except BudgetError as err:
            raise ConfigError(str(err)) from None
        epochs = table.epochs(
            (raw.get("dataset") or {}).get("name", "synth-cub"),
            method if isinstance(method, str) else method.get("name", "proxy_anchor"))
        if epochs is not None:
            raw.setdefault("train", {})["epochs"] = epochs
    return build_config(raw)


def apply_overrides(raw: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``key=value`` dotted overrides (values parsed as YAML) to a raw config dict."""
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value, e.g. train.epochs=20")
        set_dotted(raw, key.strip(), yaml.safe_load(value))
    return raw


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at top level")
    return data


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """``method.margin=0.2`` -> raw["method"]["margin"] = 0.2; ``regularizer=nir`` works too."""
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if isinstance(child, str) and part in ("method", "regularizer"):
            child = {"name": child}
        if child is None:
            child = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {key!r}: {part!r} is not a mapping")
        node[part] = child
        node = child
    node[parts[-1]] = value


def build_config(raw: Mapping[str, Any]) -> RunConfig:
    """Validate a plain dict into a RunConfig; every problem names its key."""
    raw = copy.deepcopy(dict(raw))
    _reject_unknown(raw, RunConfig, "")
    seed = _typed("seed", raw.get("seed", 0), int)
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    dataset = _section(raw, "dataset", DatasetConfig)
    backbone = _section(raw, "backbone", BackboneConfig)
    train = _section(raw, "train", TrainConfig)
    eval_cfg = _section(raw, "eval", EvalConfig)
    validation = _section(raw, "validation", ValidationConfig)
    _check_validation(validation)
    if not validation.active:  # its seed means nothing then; keep one canonical inactive value
        validation = ValidationConfig()
    method = _method_config(raw.get("method", {"name": "proxy_anchor"}))
    regularizer = _resolve_proxy_source(method, _regularizer_config(raw.get("regularizer")))
    backbone = _resolve_weights(backbone)
    dataset = _resolve_data_version(dataset)
    cfg = RunConfig(seed=seed, dataset=dataset, backbone=backbone, method=method,
                    regularizer=regularizer, train=train, eval=eval_cfg, validation=validation)
    _check_compatibility(cfg)
    return cfg


def _resolve_data_version(dataset: DatasetConfig) -> DatasetConfig:
    """``dataset.version`` is the registry's; a different value given by hand is a stale config."""
    from nirbench.harness.data import DATASETS
    from nirbench.harness.registry import UnknownNameError

    try:
        registered = DATASETS.get(dataset.name).version
    except UnknownNameError:
        return dataset  # _check_compatibility names the unknown dataset
    if dataset.version not in (1, registered):
        raise ConfigError(f"dataset.version={dataset.version} is not the data this code has for "
                          f"{dataset.name!r} (version {registered}); leave dataset.version out, "
                          f"it is derived")
    return dataclasses.replace(dataset, version=registered)


def _resolve_weights(backbone: BackboneConfig) -> BackboneConfig:
    """``backbone.weights`` names the embedded pretraining recipe for a pretrained small_cnn; it
    is derived, so a value given by hand must be the current recipe's (else: a stale config)."""
    wanted = None
    if backbone.name == "small_cnn" and backbone.pretrained:
        from nirbench.harness.train.pretrain import recipe_id

        wanted = recipe_id(backbone.width, backbone.input_px)
    if backbone.weights not in (None, wanted):
        raise ConfigError(f"backbone.weights={backbone.weights!r} is not what this code builds "
                          f"({wanted!r}); leave backbone.weights out, it is derived from "
                          f"backbone.name, backbone.pretrained, width and input_px")
    return dataclasses.replace(backbone, weights=wanted)


def _section(raw: Mapping[str, Any], key: str, cls: type) -> Any:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{key} must be a mapping, got {value!r}")
    _reject_unknown(value, cls, key + ".")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in value:
            kwargs[f.name] = _coerce(f"{key}.{f.name}", value[f.name], f.type)
    return cls(**kwargs)


def _reject_unknown(value: Mapping[str, Any], cls: type, prefix: str) -> None:
    valid = [f.name for f in dataclasses.fields(cls)]
    for name in value:
        if name not in valid:
            raise ConfigError(f"unknown config key {prefix + str(name)!r}; valid keys under "
                              f"{prefix or 'the top level'}: {', '.join(valid)}."
                              + closest_match_hint(str(name), valid))


def _coerce(key: str, value: Any, annotation: str) -> Any:
    """Check a value against a dataclass field annotation (written as a string here)."""
    optional = "None" in annotation
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key} must not be null")
    if annotation.startswith("tuple"):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not value:
            raise ConfigError(f"{key} must be a non-empty list of integers, got {value!r}")
        return tuple(_typed(key, v, int) for v in value)
    base = annotation.replace(" | None", "")
    return _typed(key, value, {"int": int, "float": float, "bool": bool, "str": str}[base])


def _typed(key: str, value: Any, kind: type) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    if kind is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{key} must be {kind.__name__}, got {value!r} "
                          f"({type(value).__name__})")
    return value


def _params(key: str, given: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Merge user params over registered defaults; unknown names and bad types fail."""
    out = dict(defaults)
    for name, value in given.items():
        if name not in defaults:
            valid = sorted(defaults)
            raise ConfigError(f"unknown parameter {key}.{name}; valid: {', '.join(valid) or 'none'}."
                              + closest_match_hint(name, valid))
        default = defaults[name]
        out[name] = value if default is None else _typed(f"{key}.{name}", value, type(default))
    return out


def _named(key: str, raw: Any, registry: Any) -> tuple[str, dict[str, Any]]:
    """``name`` or ``{name: ..., **params}`` -> (name, params merged over registered defaults)."""
    from nirbench.harness.registry import UnknownNameError

    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict) or "name" not in raw:
        raise ConfigError(f"{key} must be a name or a mapping with a name, got {raw!r}")
    raw = dict(raw)
    name = raw.pop("name")
    try:
        info = registry.get(name)
    except UnknownNameError as err:
        raise ConfigError(f"{key}.name: {err}") from None
    return name, _params(key, raw, info.defaults)


def _method_config(raw: Any) -> MethodConfig:
    from nirbench.methods import METHODS

    return MethodConfig(*_named("method", raw, METHODS))


def _regularizer_config(raw: Any) -> RegularizerConfig | None:
    from nirbench.methods import REGULARIZERS

    if raw is None or raw == "none":
        return None
    return RegularizerConfig(*_named("regularizer", raw, REGULARIZERS))


def _resolve_proxy_source(method: MethodConfig,
                          reg: RegularizerConfig | None) -> RegularizerConfig | None:
    """``proxy_source: auto`` -> ``method`` when the method has class proxies, else ``own``; the
    resolved config (and so its hash and the run's tag) always names the concrete mode."""
    if reg is None or "proxy_source" not in reg.params:
        return reg
    from nirbench.methods import METHODS
    from nirbench.methods.nir import PROXY_SOURCE_CHOICES

    source = reg.params["proxy_source"]
    if source not in PROXY_SOURCE_CHOICES:
        raise ConfigError(f"regularizer.proxy_source must be one of {PROXY_SOURCE_CHOICES}, got "
                          f"{source!r}" + closest_match_hint(str(source), list(PROXY_SOURCE_CHOICES)))
    if source != "auto":
        return reg
    resolved = "method" if METHODS.get(method.name).provides_proxies else "own"
    return RegularizerConfig(reg.name, {**reg.params, "proxy_source": resolved})


def _check_compatibility(cfg: RunConfig) -> None:
    from nirbench.harness.data import DATASETS
    from nirbench.harness.registry import UnknownNameError
    from nirbench.methods import METHODS, REGULARIZERS

    t = cfg.train
    for key, value, low in (("train.epochs", t.epochs, 1), ("train.batch_size", t.batch_size, 2),
                            ("train.samples_per_class", t.samples_per_class, 1),
                            ("train.warmup_epochs", t.warmup_epochs, 0),
                            ("train.threads", t.threads, 0), ("eval.batch_size", cfg.eval.batch_size, 1),
                            ("eval.every", cfg.eval.every, 1),
                            ("eval.full_every", cfg.eval.full_every, 0),
                            ("backbone.embed_dim", cfg.backbone.embed_dim, 2)):
        if value < low:
            raise ConfigError(f"{key} must be >= {low}, got {value}")
    if t.lr <= 0 or t.weight_decay < 0:
        raise ConfigError(f"train.lr must be > 0 and train.weight_decay >= 0, got {t.lr}, "
                          f"{t.weight_decay}")
    if t.batch_size % t.samples_per_class:
        raise ConfigError(f"train.batch_size ({t.batch_size}) must be divisible by "
                          f"train.samples_per_class ({t.samples_per_class}): a batch holds "
                          f"batch_size / samples_per_class whole classes")
    if t.warmup_epochs >= t.epochs:
        raise ConfigError(f"train.warmup_epochs ({t.warmup_epochs}) must be < train.epochs "
                          f"({t.epochs}), or the backbone never trains")
    if t.device not in DEVICES:
        raise ConfigError(f"train.device must be one of {DEVICES}, got {t.device!r}")
    if t.precision not in PRECISIONS:
        raise ConfigError(f"train.precision must be one of {PRECISIONS}, got {t.precision!r}")
    if cfg.backbone.pooling not in POOLINGS:
        raise ConfigError(f"backbone.pooling must be one of {POOLINGS}, got "
                          f"{cfg.backbone.pooling!r}")
    if cfg.backbone.input_px is not None and (cfg.backbone.name != "small_cnn"
                                              or not 8 <= cfg.backbone.input_px <= 64):
        raise ConfigError(f"backbone.input_px={cfg.backbone.input_px} applies to small_cnn only, "
                          f"in [8, 64] px (null: the images as they are)")
    if cfg.backbone.width != 1.0 and cfg.backbone.name != "small_cnn":
        raise ConfigError(f"backbone.width={cfg.backbone.width} applies to small_cnn only; "
                          f"{cfg.backbone.name} keeps its published width (set 1.0)")
    if not 0.125 <= cfg.backbone.width <= 4.0:
        raise ConfigError(f"backbone.width must be in [0.125, 4], got {cfg.backbone.width}")
    if cfg.backbone.pooling != "average" and cfg.backbone.name == "small_cnn":
        raise ConfigError("backbone.pooling=double needs a ResNet backbone (small_cnn pools once)")
    milestones = t.lr_milestones or ()
    if list(milestones) != sorted(set(milestones)) or any(m < 1 or m >= t.epochs
                                                          for m in milestones):
        raise ConfigError(f"train.lr_milestones must be increasing epochs in [1, train.epochs="
                          f"{t.epochs}), got {list(milestones)}")
    if t.proxy_lr_mult is not None and t.proxy_lr_mult <= 0:
        raise ConfigError(f"train.proxy_lr_mult must be > 0 (or null), got {t.proxy_lr_mult}")
    if t.lr_schedule not in LR_SCHEDULES:
        raise ConfigError(f"train.lr_schedule must be one of {LR_SCHEDULES}, got "
                          f"{t.lr_schedule!r}")
    if t.lr_schedule != "constant" and t.lr_milestones:
        raise ConfigError("train.lr_schedule=cosine and train.lr_milestones both set the lr; "
                          "use one of them")
    if not 0 < t.lr_gamma <= 1:
        raise ConfigError(f"train.lr_gamma must be in (0, 1], got {t.lr_gamma}")
    if cfg.backbone.name not in BACKBONES:
        raise ConfigError(f"backbone.name {cfg.backbone.name!r} is unknown; valid: "
                          f"{', '.join(BACKBONES)}." + closest_match_hint(cfg.backbone.name,
                                                                          list(BACKBONES)))
    try:
        data = DATASETS.get(cfg.dataset.name)
    except UnknownNameError as err:
        raise ConfigError(f"dataset.name: {err}") from None
    if data.needs_root and not cfg.dataset.root:
        raise ConfigError(f"dataset {cfg.dataset.name!r} needs dataset.root (the folder that holds "
                          f"its official layout)")
    if cfg.dataset.allow_partial and "allow_partial" not in data.options:
        raise ConfigError(f"dataset.allow_partial applies to the real datasets only; "
                          f"{cfg.dataset.name!r} is always complete")
    if cfg.dataset.cache not in CACHE_KINDS:
        raise ConfigError(f"dataset.cache must be one of {CACHE_KINDS}, got {cfg.dataset.cache!r}")
    if cfg.dataset.cache != "uint8" and "cache" not in data.options:
        raise ConfigError(f"dataset.cache={cfg.dataset.cache} applies to the real datasets only; "
                          f"{cfg.dataset.name!r} is held in memory")
    if cfg.eval.kmeans_engine not in KMEANS_ENGINES_CONFIG:
        raise ConfigError(f"eval.kmeans_engine must be one of {', '.join(KMEANS_ENGINES_CONFIG)} "
                          f"(auto: faiss on a GPU, torch on the CPU), got "
                          f"{cfg.eval.kmeans_engine!r}")
    for k in cfg.eval.recall_at or ():
        if k < 1:
            raise ConfigError(f"eval.recall_at values must be >= 1, got {k}")
    if cfg.regularizer is not None:
        reg = REGULARIZERS.get(cfg.regularizer.name)
        method = METHODS.get(cfg.method.name)
        own = cfg.regularizer.params.get("proxy_source") == "own"
        if reg.needs_proxies and not method.provides_proxies and not own:
            with_proxies = [n for n, i in METHODS.items() if i.provides_proxies]
            raise IncompatiblePairError(
                f"regularizer {cfg.regularizer.name!r} needs class proxies, but method "
                f"{cfg.method.name!r} ({method.family}-based) provides none; set "
                f"regularizer.proxy_source=own (NIR with its own proxies and ProxyAnchor "
                f"alignment, as the published code) or use a proxy-based method "
                f"({', '.join(with_proxies)})")


def _check_validation(v: ValidationConfig) -> None:
    if not 0.0 <= v.fraction < 1.0:
        raise ConfigError(f"validation.fraction must be in [0, 1) (0 = no validation split), "
                          f"got {v.fraction}")
    if v.folds < 0 or v.folds == 1:
        raise ConfigError(f"validation.folds must be 0 (none) or >= 2, got {v.folds}")
    if v.fraction > 0 and v.folds > 0:
        raise ConfigError(f"validation: give either fraction ({v.fraction}) or folds ({v.folds}), "
                          f"not both")
    if v.folds and not 0 <= v.fold < v.folds:
        raise ConfigError(f"validation.fold must be in [0, {v.folds}), got {v.fold}")
    if not v.folds and v.fold:
        raise ConfigError(f"validation.fold ({v.fold}) needs validation.folds >= 2")
    if v.seed < 0:
        raise ConfigError(f"validation.seed must be >= 0, got {v.seed}")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out
