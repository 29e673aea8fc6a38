"""Grids: methods x {no regularizer, regularizers} x datasets x seeds, expanded and validated
before anything runs, then executed in order with finished configurations skipped.

A grid file::

    name: default
    config: ../default.yaml            # the base run config, relative to this file
    datasets: [synth-cub, synth-cars]
    methods: [proxy_anchor, {name: multi_similarity, alpha: 2.0}]
    regularizers: [null, nir]          # null = the baseline arm
    seeds: [0, 1]
    overrides: [train.epochs=8]        # dotted overrides for every run
    dataset_overrides: {synth-sop: [train.epochs=6]}

A grid may instead list ``blocks``: partial grids, each a mapping of the keys datasets, methods,
regularizers, seeds, overrides and dataset_overrides; a key a block leaves out comes from the top
level (overrides add up). That is how a grid runs the whole zoo on one dataset and a few methods
on the others::

    blocks:
      - {datasets: [synth-cub], methods: [proxy_anchor, proxy_nca, soft_triple]}
      - {datasets: [synth-cars, synth-sop], methods: [proxy_anchor]}

``compare: [[none, "nir[flow=false]"], ...]`` declares pairs of arms (A, B) to compare (B minus
A, paired by seed) besides the default ones (every arm against the baseline, a control arm against
the arm it controls for); arms are named as in the tables (harness/grid/arms.py). The grid
records them in RESULTS/grids/<name>.json when it runs, with its configurations' hashes, where
``nirbench aggregate --grid NAME`` finds both (so a grid's tables include the runs another grid
trained first: a finished configuration is never trained twice).

Method x regularizer pairs that cannot work (NIR on a method without proxies) are skipped and
listed; any other bad entry fails the whole grid before the first run starts.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nirbench.harness.config import (
    ConfigError,
    IncompatiblePairError,
    RunConfig,
    build_config,
    read_yaml,
    set_dotted,
)
from nirbench.harness.budgets import Budgets, BudgetError, budget_scale, parse_budgets
from nirbench.harness.grid.status import ELSEWHERE, FAILED, FINISHED, NEW, RESUMABLE, Status

log = logging.getLogger(__name__)
BLOCK_KEYS = (
    "datasets",
    "methods",
    "regularizers",
    "seeds",
    "overrides",
    "dataset_overrides",
    "budget_scale",
)
GRID_KEYS = ("name", "config", "blocks", "compare") + BLOCK_KEYS


@dataclass
class GridPlan:
    name: str
    configs: list[RunConfig]
    skipped: list[str] = field(default_factory=list)  # incompatible combinations, with reasons
    compare: list[tuple[str, str]] = field(default_factory=list)  # declared (arm A, arm B)

    def arms(self) -> list[str]:
        from nirbench.harness.grid.arms import arm_of_config, arm_order

        return sorted({arm_of_config(c) for c in self.configs}, key=arm_order)


def load_grid(path: str | Path, extra_overrides: list[str] | None = None) -> GridPlan:
    path = Path(path)
    grid = read_yaml(path)
    unknown = sorted(set(grid) - set(GRID_KEYS))
    if unknown:
        raise ConfigError(f"grid {path}: unknown keys {unknown}; valid: {', '.join(GRID_KEYS)}")
    base_path = (path.parent / grid["config"]) if grid.get("config") else None
    base = read_yaml(base_path) if base_path else {}
    base.pop("stats", None)  # the verdict margin (harness/results/export.py), not a run setting
    try:
        budgets = parse_budgets(base.pop("budgets", None), f"grid {path}: {base_path}")
    except BudgetError as err:
        raise ConfigError(str(err)) from None
    name = str(grid.get("name") or path.stem)

    blocks = grid.get("blocks")
    if blocks is None:
        blocks = [{}]
    if not isinstance(blocks, list) or not blocks or not all(isinstance(b, dict) for b in blocks):
        raise ConfigError(f"grid {path}: blocks must be a non-empty list of mappings")
    plan = GridPlan(name, [])
    for number, block in enumerate(blocks, 1):
        bad = sorted(set(block) - set(BLOCK_KEYS))
        if bad:
            raise ConfigError(
                f"grid {path}: block {number} has unknown keys {bad}; valid: "
                f"{', '.join(BLOCK_KEYS)}"
            )
        merged = {**{k: v for k, v in grid.items() if k in BLOCK_KEYS}, **block}
        merged["overrides"] = list(grid.get("overrides") or []) + (
            list(block.get("overrides") or []) if "overrides" in block else []
        )
        where = f"grid {path}" + (f", block {number}" if "blocks" in grid else "")
        _expand(plan, merged, base, budgets, list(extra_overrides or []), where)
    hashes = [c.config_hash for c in plan.configs]
    if len(set(hashes)) != len(hashes):
        raise ConfigError(f"grid {path} lists the same configuration twice")
    plan.compare = _compare_pairs(grid.get("compare"), plan, path)
    return plan


def _compare_pairs(raw: Any, plan: GridPlan, path: Path) -> list[tuple[str, str]]:
    if raw is None:
        return []
    arms = plan.arms()
    if not isinstance(raw, list) or not all(isinstance(p, list) and len(p) == 2 for p in raw):
        raise ConfigError(
            f"grid {path}: compare must be a list of [arm A, arm B] pairs, got {raw!r}"
        )
    pairs = []
    for a, b in raw:
        a, b = ("none" if a is None else str(a)), ("none" if b is None else str(b))
        for arm in (a, b):
            if arm not in arms:
                raise ConfigError(
                    f"grid {path}: compare names the arm {arm!r}, which the grid "
                    f"does not run; its arms: {', '.join(arms)}"
                )
        pairs.append((a, b))
    return pairs


def plan_record_path(results_dir: Path, name: str) -> Path:
    return Path(results_dir) / "grids" / f"{name}.json"


def write_plan_record(results_dir: Path, plan: GridPlan, grid_file: str) -> Path:
    """What the grid ran, for the tables: its arms and the comparisons it declared."""
    import json

    from nirbench.harness.grid.arms import arm_order

    path = plan_record_path(results_dir, plan.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Several grid files may share one name (the paper profile runs one per dataset and arm under
    # "paper"): their configurations add up, file by file; running a file again replaces its own
    # entry (a grid whose budgets changed no longer counts its old configurations).
    earlier = json.loads(path.read_text()) if path.is_file() else {}
    files = dict(earlier.get("files", {}))
    files[str(Path(grid_file).resolve())] = {
        "config_hashes": sorted(c.config_hash for c in plan.configs),
        "arms": plan.arms(),
    }
    hashes = {h for f in files.values() for h in f["config_hashes"]}
    arms = sorted({a for f in files.values() for a in f["arms"]}, key=arm_order)
    record = {
        "name": plan.name,
        "grid_file": str(grid_file),
        "arms": arms,
        "compare": [list(p) for p in plan.compare],
        "configurations": len(hashes),
        "config_hashes": sorted(hashes),
        "files": files,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)
    return path


def recorded_config_hashes(results_dir: Path, name: str) -> set[str]:
    """The configurations grid ``name`` ran here: its tables include their runs even when another
    grid trained them first (a finished configuration is never trained twice)."""
    import json

    path = plan_record_path(results_dir, name)
    if not path.is_file():
        return set()
    record = json.loads(path.read_text())
    return set(record.get("config_hashes", []))


def declared_pairs(results_dir: Path, name: str) -> list[tuple[str, str]]:
    """The comparisons grid ``name`` declared when it last ran here ([] if none)."""
    import json

    path = plan_record_path(results_dir, name)
    if not path.is_file():
        return []
    return [tuple(p) for p in json.loads(path.read_text()).get("compare", [])]


def _expand(
    plan: GridPlan,
    grid: dict[str, Any],
    base: dict[str, Any],
    budgets: Budgets,
    extra_overrides: list[str],
    where: str,
) -> None:
    """Append datasets x methods x regularizers x seeds of one (block of a) grid to ``plan``."""

    def listed(key: str, default: list[Any]) -> list[Any]:
        value = grid.get(key, default)
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{where}: {key} must be a non-empty list, got {value!r}")
        return value

    datasets = listed("datasets", [base.get("dataset", {}).get("name", "synth-cub")])
    methods = listed("methods", [base.get("method", "proxy_anchor")])
    regularizers = listed("regularizers", [base.get("regularizer")])  # absent: the base config's
    seeds = listed("seeds", [base.get("seed", 0)])
    overrides = list(grid.get("overrides") or []) + extra_overrides
    per_dataset = grid.get("dataset_overrides") or {}
    try:
        scale = budget_scale(grid.get("budget_scale"), where)
    except BudgetError as err:
        raise ConfigError(str(err)) from None
    for dataset in datasets:
        for method in methods:
            for reg in regularizers:
                for seed in seeds:
                    raw = copy.deepcopy(base)
                    raw.setdefault("dataset", {})["name"] = dataset
                    raw["method"] = method
                    raw["regularizer"] = None if reg in (None, "none") else reg
                    raw["seed"] = seed
                    budget = budgets.epochs(dataset, _name(method))
                    if budget is not None:  # before the overrides: an explicit one wins
                        raw.setdefault("train", {})["epochs"] = budget * scale
                    for item in overrides + list(per_dataset.get(dataset, [])):
                        key, _, value = str(item).partition("=")
                        set_dotted(raw, key.strip(), yaml.safe_load(value))
                    entry = (
                        f"dataset={dataset} method={_name(method)} "
                        f"regularizer={_name(reg)} seed={seed}"
                    )
                    try:
                        plan.configs.append(build_config(raw))
                    except IncompatiblePairError:  # listed, not fatal: config.py says why
                        note = (
                            f"{_name(method)} + {_name(reg)}: the regularizer needs class "
                            f"proxies and this method provides none"
                        )
                        if note not in plan.skipped:
                            plan.skipped.append(note)
                    except ConfigError as err:
                        raise ConfigError(f"{where}, entry {entry}: {err}") from None


def _name(entry: Any) -> str:
    if entry is None:
        return "none"
    return str(entry.get("name")) if isinstance(entry, dict) else str(entry)


ONLY_KEYS = {
    "dataset": lambda c: c.dataset.name,
    "method": lambda c: c.method.name,
    "regularizer": lambda c: c.regularizer_name,
    "seed": lambda c: str(c.seed),
}


def select_configs(configs: list, only: list[str]) -> list:
    """The configurations matching every ``KEY=V1,V2`` filter of ``--only`` (a first look, or
    one shard per machine)."""
    for item in only:
        key, sep, values = item.partition("=")
        if not sep or key not in ONLY_KEYS or not values:
            raise ConfigError(
                f"--only {item!r} must look like KEY=VALUE[,VALUE...] with KEY one "
                f"of {', '.join(ONLY_KEYS)}"
            )
        wanted = {v.strip() for v in values.split(",")}
        configs = [c for c in configs if ONLY_KEYS[key](c) in wanted]
    if not configs:
        raise ConfigError(f"--only {' '.join(only)} selects no configuration of this grid")
    return configs


# ---------------------------------------------------------------------------- state of a grid
# What a configuration of a grid is, before a start: the MLflow store and its lock file tell.
# The names live in grid/status.py (shared with the executors' job results).


@dataclass(frozen=True)
class ConfigState:
    cfg: RunConfig
    state: Status  # one of status.CONFIG_STATES
    detail: str = ""  # the error of a FAILED run, the holder of the lock, the resume epoch
    run_id: str = ""

    @property
    def label(self) -> str:
        cfg = self.cfg
        reg = f"+{cfg.regularizer_name}" if cfg.regularizer is not None else ""
        return f"{cfg.dataset.name} {cfg.method.name}{reg} seed={cfg.seed}"


def config_states(plan: GridPlan, tracker: Any, results_dir: Path) -> list[ConfigState]:
    """Each configuration of ``plan`` with its state: FINISHED in MLflow; RUNNING ELSEWHERE (a
    live process holds its lock); FAILED (not rerun unless --retry-failed); RESUMABLE (an
    interrupted or killed run, with the epoch its checkpoint reached); or NEW."""
    from nirbench.harness.tracking.run_lock import held_elsewhere
    from nirbench.harness.train.runner import run_dir

    by_hash: dict[str, list[Any]] = {}
    for run in tracker.runs():  # newest first
        if run.tags.get("superseded_by"):
            continue
        by_hash.setdefault(run.tags.get("config_hash", ""), []).append(run)
    states = []
    for cfg in plan.configs:
        runs = {r.run_id: r for r in by_hash.get(cfg.config_hash, [])}.values()
        finished = [r for r in runs if r.status == "FINISHED"]
        unfinished = [r for r in runs if r.status in ("RUNNING", "FAILED", "KILLED")]
        workdir = run_dir(results_dir, cfg)
        holder = held_elsewhere(workdir / "lock")
        if finished:
            states.append(ConfigState(cfg, FINISHED, run_id=finished[0].run_id))
        elif holder:
            states.append(
                ConfigState(cfg, ELSEWHERE, holder, unfinished[0].run_id if unfinished else "")
            )
        elif unfinished and unfinished[0].status == "FAILED":
            states.append(
                ConfigState(
                    cfg,
                    FAILED,
                    unfinished[0].tags.get("error", "no error tag"),
                    unfinished[0].run_id,
                )
            )
        elif unfinished:
            epoch = _checkpoint_epoch(workdir / "checkpoint.pt")
            detail = (
                f"{unfinished[0].status.lower()}, resumes after epoch {epoch}"
                if epoch is not None
                else f"{unfinished[0].status.lower()}, restarts (no checkpoint)"
            )
            states.append(ConfigState(cfg, RESUMABLE, detail, unfinished[0].run_id))
        else:
            states.append(ConfigState(cfg, NEW))
    return states


def longest_first(states: list[ConfigState]) -> list[ConfigState]:
    """The runs to start, most epochs first. With a few workers and runs of very different lengths
    (the embedded protocol: 15 to 64 epochs), a long run started last keeps one worker busy while
    the others idle; started first, the short runs fill in around it (longest processing time
    first). Epochs are the estimate of a run's cost; the stable sort keeps the grid's order among
    equals."""
    return sorted(states, key=lambda st: -st.cfg.train.epochs)


def _checkpoint_epoch(path: Path) -> int | None:
    if not path.is_file():
        return None
    import torch

    try:
        return int(torch.load(path, map_location="cpu", weights_only=False)["epoch"])
    except Exception as err:  # a torn or foreign file: the run will say so when it resumes
        log.warning("cannot read checkpoint %s: %s", path, err)
        return None
