"""The run config's schema: every key with its type, default, bounds and a one-line description.

Frozen pydantic models with ``extra="forbid"``: a typo or a bad value fails when the config is
built, before any work starts (harness/config_errors.py words the failure). Strict types, with
the two conversions a YAML user needs: digits written as text are ints, and ``1e-3`` (text to
YAML 1.1) is a float. Derived keys (``backbone.pretrained`` when not given, ``backbone.weights``,
``dataset.version``, a resolved ``regularizer.proxy_source``) are filled in here, so the config
object, ``nirbench config``, config.yaml and the MLflow params all show what a run uses. Which of
those keys make the run's identity is decided elsewhere (harness/config_identity.py).
"""

from __future__ import annotations

import functools
import typing
from typing import Annotated, Any, ClassVar, Literal, Mapping

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    model_validator,
)

from nirbench.harness import config_identity
from nirbench.harness.config_errors import ConfigError, IncompatiblePairError, config_error
from nirbench.harness.config_backbones import backbone_names, default_pretrained_backbones

Backbone = Literal[backbone_names()]  # the backbone registry (harness/config_backbones.py)
Device = Literal["auto", "cpu", "cuda"]
Pooling = Literal["average", "double"]
Precision = Literal["fp32", "bf16"]
LrSchedule = Literal["constant", "cosine"]
CacheKind = Literal["uint8", "jpeg"]  # harness.data.real.cache.KINDS
KmeansEngine = Literal["auto", "torch", "faiss"]

BACKBONES = typing.get_args(Backbone)
TORCHVISION_BACKBONES = default_pretrained_backbones()  # pretrained unless pretrained=false
DEVICES = typing.get_args(Device)
POOLINGS = typing.get_args(Pooling)
PRECISIONS = typing.get_args(Precision)
LR_SCHEDULES = typing.get_args(LrSchedule)
CACHE_KINDS = typing.get_args(CacheKind)
KMEANS_ENGINES_CONFIG = typing.get_args(KmeansEngine)  # eval.kmeans_engine


def _int_from_text(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


def _float_from_text(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _int_list(value: Any) -> Any:
    """``"1,10"`` (an override) or a YAML list -> a tuple; anything else fails as a list."""
    if isinstance(value, str):
        value = [_int_from_text(v) for v in value.split(",") if v.strip()]
    return tuple(value) if isinstance(value, list) else value


Int = Annotated[int, BeforeValidator(_int_from_text)]
Float = Annotated[float, BeforeValidator(_float_from_text)]
IntList = Annotated[tuple[Int, ...], BeforeValidator(_int_list), Field(min_length=1)]
RecallList = Annotated[
    tuple[Annotated[Int, Field(ge=1)], ...], BeforeValidator(_int_list), Field(min_length=1)
]


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


def _derive(model: BaseModel, **values: Any) -> None:
    """Fill derived keys in during validation, before anyone holds the (frozen) instance."""
    for name, value in values.items():
        object.__setattr__(model, name, value)


class DatasetConfig(Section):
    name: str = Field("synth-cub", description="Registered dataset (`nirbench list datasets`).")
    root: str | None = Field(
        None,
        description="Real datasets: the folder holding the official "
        "layout; embedded ones are generated.",
    )
    allow_partial: bool = Field(
        False,
        description="Real datasets: train on an incomplete copy "
        "(tests, debugging); the run is tagged "
        "dataset.partial.",
    )
    version: Int = Field(
        1,
        ge=1,
        description="Derived, never set: the registered version of the "
        "dataset's data (a regenerated dataset is a new "
        "identity).",
    )
    cache: CacheKind = Field(
        "uint8",
        description="Real datasets: uint8 (decoded pixels, exact) or jpeg (compact, "
        "lossy, 6-15x smaller).",
    )

    @model_validator(mode="after")
    def _against_the_registry(self) -> DatasetConfig:
        from nirbench.harness.data import DATASETS
        from nirbench.harness.registry import UnknownNameError

        try:
            data = DATASETS.get(self.name)
        except UnknownNameError as err:
            raise ConfigError(f"dataset.name: {err}") from None
        if data.needs_root and not self.root:
            raise ConfigError(
                f"dataset {self.name!r} needs dataset.root (the folder that holds "
                f"its official layout)"
            )
        if self.allow_partial and "allow_partial" not in data.options:
            raise ConfigError(
                f"dataset.allow_partial applies to the real datasets only; "
                f"{self.name!r} is always complete"
            )
        if self.cache != "uint8" and "cache" not in data.options:
            raise ConfigError(
                f"dataset.cache={self.cache} applies to the real datasets only; "
                f"{self.name!r} is held in memory"
            )
        if self.version not in (1, data.version):
            raise ConfigError(
                f"dataset.version={self.version} is not the data this code has for "
                f"{self.name!r} (version {data.version}); leave dataset.version "
                f"out, it is derived"
            )
        _derive(self, version=data.version)
        return self


class BackboneConfig(Section):
    name: Backbone = Field(
        "small_cnn", description="The network: the embedded small CNN or a torchvision ResNet."
    )
    embed_dim: Int = Field(128, ge=2, description="Embedding dimension of the linear head.")
    pretrained: bool | None = Field(
        None,
        description="Start from pretrained weights; unset: true for the ResNets (ImageNet), "
        "false for small_cnn (its embedded pretraining must be asked for).",
    )
    freeze_bn: bool = Field(
        False, description="Freeze BatchNorm running statistics (the paper's ResNet50 setting)."
    )
    pooling: Pooling = Field(
        "average",
        description="ResNets: global average pooling, or double (average + max, the "
        "NIR code's option).",
    )
    width: Float = Field(
        1.0,
        ge=0.125,
        le=4.0,
        description="small_cnn: channel width multiplier (0.5: about 4x fewer "
        "multiply-adds); ResNets keep 1.0.",
    )
    input_px: Int | None = Field(
        None,
        ge=8,
        le=64,
        description="small_cnn: downsample the input to N x N px first "
        "(antialiased); null: the images as they are.",
    )
    weights: str | None = Field(
        None,
        description="Derived, never set: the embedded pretraining "
        "recipe id of a pretrained small_cnn, else null.",
    )

    @model_validator(mode="after")
    def _resolve_and_check(self) -> BackboneConfig:
        small = self.name == "small_cnn"
        if self.input_px is not None and not small:
            raise ConfigError(
                f"backbone.input_px={self.input_px} applies to small_cnn only "
                f"(null: the images as they are)"
            )
        if self.width != 1.0 and not small:
            raise ConfigError(
                f"backbone.width={self.width} applies to small_cnn only; "
                f"{self.name} keeps its published width (set 1.0)"
            )
        if self.pooling != "average" and small:
            raise ConfigError(
                "backbone.pooling=double needs a ResNet backbone (small_cnn pools once)"
            )
        pretrained = (
            self.name in TORCHVISION_BACKBONES if self.pretrained is None else self.pretrained
        )
        wanted = None
        if small and pretrained:
            from nirbench.harness.config_weights import recipe_id

            wanted = recipe_id(self.width, self.input_px)
        if self.weights not in (None, wanted):
            raise ConfigError(
                f"backbone.weights={self.weights!r} is not what this code builds "
                f"({wanted!r}); leave backbone.weights out, it is derived from "
                f"backbone.name, backbone.pretrained, width and input_px"
            )
        _derive(self, pretrained=pretrained, weights=wanted)
        return self


class _Named(Section):
    """A registered name and its params, merged over the registered defaults. Written inline as
    in YAML (``{name: proxy_anchor, margin: 0.2}``) or as the bare name."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    kind: ClassVar[str] = ""  # "method" or "regularizer": the config key and the registry

    @model_validator(mode="before")
    @classmethod
    def _merge_over_defaults(cls, raw: Any) -> Any:
        from nirbench.harness.registry import UnknownNameError
        from nirbench.methods import METHODS, REGULARIZERS

        key = cls.kind
        if isinstance(raw, BaseModel):
            return raw
        if isinstance(raw, str):
            raw = {"name": raw}
        if not isinstance(raw, dict) or "name" not in raw:
            raise ConfigError(f"{key} must be a name or a mapping with a name, got {raw!r}")
        given = dict(raw)
        name = given.pop("name")
        if set(given) == {"params"} and isinstance(given["params"], dict):
            given = dict(given["params"])  # the dumped form, {name, params}
        registry = METHODS if key == "method" else REGULARIZERS
        try:
            info = registry.get(name)
        except UnknownNameError as err:
            raise ConfigError(f"{key}.name: {err}") from None
        model = params_model(key, name)
        try:
            params = model.model_validate(given)
        except ValidationError as err:
            raise config_error(err, model, key + ".", unknown="unknown parameter") from None
        return {"name": name, "params": {**info.defaults, **params.model_dump(exclude_unset=True)}}


class MethodConfig(_Named):
    name: str = Field(
        "proxy_anchor",
        description="Registered DML method (`nirbench list methods`); its params go inline.",
    )
    kind: ClassVar[str] = "method"


class RegularizerConfig(_Named):
    name: str = Field("nir", description="Registered regularizer; its params go inline.")
    kind: ClassVar[str] = "regularizer"


def params_model(kind: str, name: str) -> type[BaseModel]:
    """The strict model of one registered method's (or regularizer's) params: each typed as its
    registered default (a float default takes ints too; a None default takes anything)."""
    from nirbench.methods import METHODS, REGULARIZERS

    defaults = (METHODS if kind == "method" else REGULARIZERS).get(name).defaults
    # keyed by the defaults too: a name registered again (a test's toy) gets its own model
    return _params_model(
        kind, name, tuple((k, repr(v)) for k, v in defaults.items()), tuple(defaults.values())
    )


@functools.lru_cache(maxsize=256)
def _params_model(kind: str, name: str, signature: tuple, values: tuple) -> type[BaseModel]:
    types = {bool: bool, int: Int, float: Float, str: str}
    fields = {
        k: (types.get(type(v), Any) if v is not None else Any, v)
        for (k, _), v in zip(signature, values)
    }
    return create_model(f"{kind}_{name}_params", __config__=Section.model_config, **fields)


class TrainConfig(Section):
    epochs: Int = Field(8, ge=1, description="Training epochs.")
    batch_size: Int = Field(
        64, ge=2, description="Images per batch: batch_size / samples_per_class whole classes."
    )
    samples_per_class: Int = Field(
        2, ge=1, description="Images of each class in a batch (the paper: 2)."
    )
    lr: Float = Field(1e-3, gt=0, description="Adam learning rate of the backbone and head.")
    weight_decay: Float = Field(4e-4, ge=0, description="Adam weight decay.")
    warmup_epochs: Int = Field(
        0,
        ge=0,
        description="First epochs with the backbone body frozen (head, proxies and flow train).",
    )
    device: Device = Field("auto", description="Where to train; auto: cuda when available.")
    deterministic: bool = Field(
        False, description="torch.use_deterministic_algorithms (CPU runs are reproducible anyway)."
    )
    threads: Int = Field(0, ge=0, description="torch CPU threads; 0: torch's default.")
    data_seed: Int | None = Field(
        None,
        ge=0,
        description="Seed of the batch order and augmentation alone; null: the run "
        "seed (bench variance's data-order part varies it).",
    )
    proxy_lr_mult: Float | None = Field(
        None,
        gt=0,
        description="lr multiplier of every proxy table (the paper: x2000, x4000 with "
        "NIR); null: each method's own.",
    )
    lr_milestones: IntList | None = Field(
        None,
        description="Epochs, increasing, in [1, train.epochs), at which every lr is "
        "multiplied by lr_gamma (MultiStepLR).",
    )
    lr_gamma: Float = Field(0.1, gt=0, le=1, description="The lr factor at each milestone.")
    lr_schedule: LrSchedule = Field(
        "constant",
        description="cosine: every lr follows a half cosine to ~0 over the epochs "
        "after the warmup.",
    )
    fused_optimizer: bool = Field(
        False,
        description="Adam's fused kernel: 5x faster CPU steps "
        "for NIR's flow, not bitwise the same.",
    )
    precision: Precision = Field(
        "fp32", description="bf16: the backbone under bf16 autocast (the losses stay fp32)."
    )
    channels_last: bool = Field(False, description="NHWC memory format: faster convolutions.")
    cudnn_benchmark: bool = Field(
        False, description="cudnn autotuning: faster, not bitwise reproducible."
    )

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.batch_size % self.samples_per_class:
            raise ConfigError(
                f"train.batch_size ({self.batch_size}) must be divisible by "
                f"train.samples_per_class ({self.samples_per_class}): a batch holds "
                f"batch_size / samples_per_class whole classes"
            )
        if self.warmup_epochs >= self.epochs:
            raise ConfigError(
                f"train.warmup_epochs ({self.warmup_epochs}) must be < train.epochs "
                f"({self.epochs}), or the backbone never trains"
            )
        milestones = list(self.lr_milestones or ())
        if milestones != sorted(set(milestones)) or any(
            not 1 <= m < self.epochs for m in milestones
        ):
            raise ConfigError(
                f"train.lr_milestones must be increasing epochs in [1, train.epochs="
                f"{self.epochs}), got {milestones}"
            )
        if self.lr_schedule != "constant" and milestones:
            raise ConfigError(
                "train.lr_schedule=cosine and train.lr_milestones both set the lr; use one of them"
            )
        return self


class EvalConfig(Section):
    recall_at: RecallList | None = Field(
        None, description="Recall@k list (each k >= 1); null: the dataset's customary one."
    )
    nmi: bool = Field(True, description="Measure NMI (k-means on the test embeddings).")
    batch_size: Int = Field(512, ge=1, description="Images per embedding batch.")
    structure: bool = Field(
        True,
        description="Measure rho, pi_density, sigma2_kappa and g2 "
        "(harness/evaluation/structure.py).",
    )
    every: Int = Field(
        1, ge=1, description="Evaluate every N epochs, and always after the last one."
    )
    dense_tail: bool = Field(
        False,
        description="Also evaluate every epoch of the last 20% (the still-rising rule's window).",
    )
    full_every: Int = Field(
        1,
        ge=0,
        description="Expensive metrics (mAP@1000, NMI, "
        "structure) every N-th evaluation and the "
        "last; 0: the last only.",
    )
    kmeans_engine: KmeansEngine = Field(
        "auto",
        description="NMI's k-means: auto (faiss on a GPU, torch on the CPU), torch or faiss.",
    )


class ValidationConfig(Section):
    """A class-disjoint validation split of the TRAINING classes (harness/data/validation.py).

    Inactive by default (fraction 0 and folds 0): the run trains on all training classes and
    evaluates on the test split (``test/<metric>``). Active: it trains on the remaining training
    classes and evaluates on the held-out ones only (``val/<metric>``); the test split is never
    touched. Give either ``fraction`` or ``folds`` (+ ``fold``); ``seed`` picks the classes and is
    independent of the run seed."""

    fraction: Float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Share of the training classes held out; 0: no validation split.",
    )
    folds: Int = Field(
        0, ge=0, description="k-fold split of the training classes (0: none, else >= 2)."
    )
    fold: Int = Field(0, ge=0, description="Which fold is held out, in [0, folds).")
    seed: Int = Field(
        0, ge=0, description="Picks the held-out classes; independent of the run seed."
    )

    @property
    def active(self) -> bool:
        return self.fraction > 0 or self.folds > 0

    @model_validator(mode="after")
    def _one_split(self) -> ValidationConfig:
        if self.folds == 1:
            raise ConfigError(f"validation.folds must be 0 (none) or >= 2, got {self.folds}")
        if self.fraction > 0 and self.folds > 0:
            raise ConfigError(
                f"validation: give either fraction ({self.fraction}) or folds "
                f"({self.folds}), not both"
            )
        if self.folds and not self.fold < self.folds:
            raise ConfigError(f"validation.fold must be in [0, {self.folds}), got {self.fold}")
        if not self.folds and self.fold:
            raise ConfigError(f"validation.fold ({self.fold}) needs validation.folds >= 2")
        return self


SECTIONS = ("dataset", "backbone", "train", "eval", "validation")


class RunConfig(Section):
    seed: Int = Field(0, ge=0, description="The run's seed (data order, initialisation).")
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    method: MethodConfig = Field(
        default_factory=lambda: MethodConfig.model_validate("proxy_anchor"),
        description="A registered DML method with its params inline: a name or {name: ..., "
        "param: value}.",
    )
    regularizer: RegularizerConfig | None = Field(
        None,
        description="null, or a registered regularizer with its params: the only key in "
        "which the two arms differ.",
    )
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, raw: Any) -> Any:
        """``train:`` left empty means its defaults, ``regularizer: none`` means no regularizer."""
        if not isinstance(raw, dict):
            raise ConfigError(f"a config must be a mapping at top level, got {raw!r}")
        raw = {k: v for k, v in raw.items() if not (k in SECTIONS + ("method",) and v is None)}
        if raw.get("regularizer") == "none":
            raw["regularizer"] = None
        return raw

    @model_validator(mode="after")
    def _resolve_and_pair(self) -> RunConfig:
        from nirbench.methods import METHODS, REGULARIZERS

        if not self.validation.active:  # its seed means nothing then: one canonical value
            _derive(self, validation=ValidationConfig())
        reg = self.regularizer
        method = METHODS.get(self.method.name)
        if reg is not None and "proxy_source" in reg.params:
            from nirbench.methods.nir import PROXY_SOURCE_CHOICES

            from nirbench.harness.registry import closest_match_hint

            source = reg.params["proxy_source"]
            if source not in PROXY_SOURCE_CHOICES:
                raise ConfigError(
                    f"regularizer.proxy_source must be one of "
                    f"{PROXY_SOURCE_CHOICES}, got {source!r}"
                    + closest_match_hint(str(source), list(PROXY_SOURCE_CHOICES))
                )
            if source == "auto":  # the resolved config names the concrete mode
                resolved = "method" if method.provides_proxies else "own"
                reg = RegularizerConfig.model_validate(
                    {"name": reg.name, **reg.params, "proxy_source": resolved}
                )
                _derive(self, regularizer=reg)
        if reg is not None:
            needs = REGULARIZERS.get(reg.name).needs_proxies
            if needs and not method.provides_proxies and reg.params.get("proxy_source") != "own":
                with_proxies = [n for n, i in METHODS.items() if i.provides_proxies]
                raise IncompatiblePairError(
                    f"regularizer {reg.name!r} needs class proxies, but method "
                    f"{self.method.name!r} ({method.family}-based) provides none; set "
                    f"regularizer.proxy_source=own (NIR with its own proxies and ProxyAnchor "
                    f"alignment, as the published code) or use a proxy-based method "
                    f"({', '.join(with_proxies)})"
                )
        return self

    # ------------------------------------------------------------------ display
    def to_dict(self) -> dict[str, Any]:
        """Every key with the value the run uses, in the shape a user writes in YAML (method and
        regularizer params inline). What config.yaml, the MLflow params and ``nirbench config``
        show; it loads back as the same config."""
        out: dict[str, Any] = {"seed": self.seed}
        for section in SECTIONS:
            out[section] = getattr(self, section).model_dump(mode="json")
        out["method"] = {"name": self.method.name, **self.method.params}
        out["regularizer"] = (
            None
            if self.regularizer is None
            else {"name": self.regularizer.name, **self.regularizer.params}
        )
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=True)

    def flat(self) -> dict[str, Any]:
        return flatten(self.to_dict())

    # ------------------------------------------------------------------ identity
    @property
    def config_hash(self) -> str:
        """The run's identity (harness/config_identity.py), seed included."""
        return config_identity.config_hash(self)

    @property
    def arm_hash(self) -> str:
        """Identity of the arm (everything but the seed): the runs one table cell averages."""
        return config_identity.arm_hash(self)

    # ------------------------------------------------------------------ shorthands
    @property
    def regularizer_name(self) -> str:
        return self.regularizer.name if self.regularizer is not None else "none"

    @property
    def recall_at(self) -> tuple[int, ...]:
        from nirbench.harness.data import DATASETS

        return self.eval.recall_at or DATASETS.get(self.dataset.name).recall_at


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 0.1}}`` -> ``{"train.lr": 0.1}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def validate_run_config(raw: Any) -> RunConfig:
    """A plain dict -> a RunConfig; every problem raised as a ConfigError naming its key."""
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise config_error(err, RunConfig) from None


def validate_section(name: str, raw: Any) -> Section:
    """One section (``validation`` for a tune file's split) on its own, errors as for a run."""
    model = RunConfig.model_fields[name].annotation
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise config_error(err, model, name + ".") from None
