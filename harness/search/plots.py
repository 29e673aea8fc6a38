"""The search's figures (optimisation history, metric vs NIR weight, parameter importances), drawn
from the study alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nirbench.harness.search.tune_file import TuneConfig


def _plot_value(t: FrozenTrial) -> float | None:
    """A completed trial's value; a pruned one's last reported value."""
    if t.state == TrialState.COMPLETE:
        return t.value
    if t.state == TrialState.PRUNED and t.last_step is not None:
        return t.intermediate_values[t.last_step]
    return None


def draw_plots(study: optuna.Study, tc: TuneConfig, out_dir: Path) -> tuple[list[Path], list[str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = [t for t in study.get_trials(deepcopy=False) if _plot_value(t) is not None]
    files, notes = [], []
    label = f"validation {tc.metric}"
    maximize = tc.direction == "maximize"

    # 1. optimisation history
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    ax.scatter([t.number for t in done], [t.value for t in done], label="complete", zorder=3)
    if pruned:
        ax.scatter(
            [t.number for t in pruned],
            [_plot_value(t) for t in pruned],
            marker="x",
            color="grey",
            label="pruned (last reported)",
            zorder=2,
        )
    best, xs, ys = None, [], []
    for t in sorted(done, key=lambda t: t.number):
        if best is None or (t.value > best if maximize else t.value < best):
            best = t.value
        xs.append(t.number)
        ys.append(best)
    ax.step(xs, ys, where="post", color="C3", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(label)
    ax.set_title(f"{tc.study}: optimisation history")
    ax.legend(fontsize=8)
    fig.tight_layout()
    files.append(_save(fig, out_dir / f"{tc.study}-history.png"))

    # 2. validation metric against each searched parameter, the NIR weight first
    specs = sorted(tc.space, key=lambda p: p.key != "regularizer.weight")
    fig, axes = plt.subplots(1, len(specs), figsize=(4.2 * len(specs), 3.8), squeeze=False)
    for ax, spec in zip(axes[0], specs):
        for group, style in ((done, {}), (pruned, {"marker": "x", "color": "grey"})):
            pts = [(t.params[spec.key], _plot_value(t)) for t in group if spec.key in t.params]
            if pts:
                ax.scatter(
                    [str(x) if spec.type == "categorical" else x for x, _ in pts],
                    [y for _, y in pts],
                    **style,
                )
        if spec.log:
            ax.set_xscale("log")
        name = spec.key
        if spec.key == "regularizer.weight" and tc.weight_convention:
            name = f"NIR weight ({tc.weight_convention})"
        ax.set_xlabel(name)
        ax.set_ylabel(label)
    fig.suptitle(f"{tc.study}: {label} against the searched parameters (x = pruned)", fontsize=10)
    fig.tight_layout()
    files.append(_save(fig, out_dir / f"{tc.study}-params.png"))

    # 3. parameter importances (fANOVA, seeded)
    if len(done) < 2 or len(tc.space) < 2:
        notes.append(
            f"parameter importances not drawn: {len(done)} completed trial(s) and "
            f"{len(tc.space)} parameter(s); they need at least 2 of each"
        )
    else:
        try:
            from optuna.importance import FanovaImportanceEvaluator, get_param_importances

            imp = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=tc.seed))
        except Exception as err:  # e.g. every completed trial has the same value
            notes.append(f"parameter importances not drawn: {type(err).__name__}: {err}")
        else:
            fig, ax = plt.subplots(figsize=(6.4, 0.6 + 0.5 * len(imp)))
            names = list(imp)[::-1]
            ax.barh(names, [imp[n] for n in names])
            ax.set_xlabel(f"importance for {label} (fANOVA, seed {tc.seed})")
            ax.set_title(f"{tc.study}: parameter importances ({len(done)} trials)")
            fig.tight_layout()
            files.append(_save(fig, out_dir / f"{tc.study}-importances.png"))
    plt.close("all")
    return files, notes


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path
