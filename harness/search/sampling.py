"""Samplers and pruners: a sampler seeded by (seed, trial number), so one worker replays a study
exactly and several workers never draw the same random numbers; parameter suggestion from the
tune file's search space."""

from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.exceptions import ExperimentalWarning
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, Trial, TrialState

from nirbench.harness.search.tune_file import ParamSpec, TuneConfig


# ============================================================================ sampler, pruner
class TrialSeededSampler(BaseSampler):
    """Delegates each trial to a sampler seeded by (seed, trial number).

    One seeded sampler shared by several worker processes would hand each of them the same
    random stream, and so the same "random" start-up points. Seeding per trial number keeps a
    one-worker study exactly reproducible and makes parallel workers draw different numbers."""

    def __init__(self, make: Callable[[int], BaseSampler], seed: int) -> None:
        self._make = make
        self._seed = seed
        self._samplers: dict[int, BaseSampler] = {}

    def _for(self, trial: FrozenTrial) -> BaseSampler:
        sampler = self._samplers.get(trial.number)
        if sampler is None:
            if len(self._samplers) > 16:
                self._samplers.clear()
            sampler = self._make((self._seed * 1_000_003 + trial.number) % (2**31 - 1))
            self._samplers[trial.number] = sampler
        return sampler

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._for(trial).after_trial(study, trial, state, values)
        self._samplers.pop(trial.number, None)

    def reseed_rng(self) -> None:  # the seeds are a function of the trial number
        pass


def make_sampler(tc: TuneConfig) -> BaseSampler:
    options = dict(tc.sampler_options)

    def make(seed: int) -> BaseSampler:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            if tc.sampler == "tpe":
                return optuna.samplers.TPESampler(seed=seed, **options)
            if tc.sampler == "gp":
                return optuna.samplers.GPSampler(seed=seed, **options)
            return optuna.samplers.RandomSampler(seed=seed)

    return TrialSeededSampler(make, tc.seed)


def make_pruner(tc: TuneConfig) -> optuna.pruners.BasePruner:
    options = dict(tc.pruner_options)
    if tc.pruner == "median":
        return optuna.pruners.MedianPruner(**options)
    if tc.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(max_resource=tc.base.train.epochs, **options)
    return optuna.pruners.NopPruner()


def suggest(trial: Trial, space: Sequence[ParamSpec]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for p in space:
        if p.type == "categorical":
            params[p.key] = trial.suggest_categorical(p.key, list(p.choices))
        elif p.type == "int":
            params[p.key] = trial.suggest_int(
                p.key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log
            )
        else:
            params[p.key] = trial.suggest_float(p.key, p.low, p.high, step=p.step, log=p.log)
    return params


def distributions(space: Sequence[ParamSpec]) -> dict[str, BaseDistribution]:
    out: dict[str, BaseDistribution] = {}
    for p in space:
        if p.type == "categorical":
            out[p.key] = CategoricalDistribution(list(p.choices))
        elif p.type == "int":
            out[p.key] = IntDistribution(int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
        else:
            out[p.key] = FloatDistribution(p.low, p.high, log=p.log, step=p.step)
    return out
