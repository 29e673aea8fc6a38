"""Figures for the report, drawn from the tidy frames only (``harness.results.collect``), never
MLflow.

Every figure is saved as PNG (for the HTML report) and PDF (for a paper), drawn on
``matplotlib.figure.Figure`` objects (Agg for PNG), so no display and no pyplot state is needed.
A figure whose data does not exist is not drawn; the function returns a ``Skipped`` with the
reason instead, so the report can say why.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

# Figure objects, never pyplot: savefig renders PNG/PDF with Agg/the PDF backend directly, so no
# display, no global backend switch and no figure registry that leaks memory across calls.
from matplotlib.figure import Figure as MplFigure

from harness.results.display import (KEY_METRICS, METHOD_TITLES, STRUCTURE_METRICS,
                                     dataset_rank, is_percent, metric_title)
from harness.results.frames import BASELINE

BASE_COLOR, ARM_COLORS = "#4c72b0", ("#dd8452", "#55a868", "#c44e52", "#8172b3")
# Structure metrics have no "better": their detectable moves get a neutral blue, not green/red.
VERDICT_COLORS = {"helps": "#55a868", "hurts": "#c44e52", "higher": "#4c72b0", "lower": "#4c72b0"}
NEUTRAL = "#9a9a9a"
DPI = 110


@dataclass(frozen=True)
class Figure:
    key: str                 # file stem, unique in the report
    title: str
    caption: str
    png: Path
    pdf: Path
    run_ids: tuple[str, ...]  # the MLflow runs the figure draws


@dataclass(frozen=True)
class Skipped:
    title: str
    reason: str


def _save(fig: MplFigure, out_dir: Path, key: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    png, pdf = out_dir / f"{key}.png", out_dir / f"{key}.pdf"
    fig.savefig(png, dpi=DPI, bbox_inches="tight")
    fig.savefig(pdf, bbox_inches="tight")
    return png, pdf


def _arm_label(reg: str) -> str:
    return "baseline" if reg == BASELINE else f"+ {reg.upper()}"


def _arm_color(reg: str, regs: list[str]) -> str:
    if reg == BASELINE:
        return BASE_COLOR
    others = [r for r in regs if r != BASELINE]
    return ARM_COLORS[others.index(reg) % len(ARM_COLORS)]


def _method(method: str) -> str:
    return METHOD_TITLES.get(method, method)


# ---------------------------------------------------------------- convergence curves
CURVE_METRICS = ("test/recall@1", "test/map@r")


def convergence(runs: pd.DataFrame, epochs: pd.DataFrame, out_dir: Path) -> list[Figure | Skipped]:
    """Per dataset and method: test R@1 and MAP@R against epoch, baseline against each
    regularized arm; line = mean over seeds, band = ± one std (drawn where >= 2 seeds)."""
    present = [m for m in CURVE_METRICS if m in epochs.columns]
    if not present:
        return [Skipped("Convergence curves", "no per-epoch test/recall@1 or test/map@r history")]
    data = epochs.merge(runs[["run_id", "dataset", "method", "regularizer", "seed"]], on="run_id")
    out: list[Figure | Skipped] = []
    for dataset in sorted(data["dataset"].unique(), key=dataset_rank):
        for method in sorted(data.loc[data["dataset"] == dataset, "method"].unique()):
            part = data[(data["dataset"] == dataset) & (data["method"] == method)]
            regs = sorted(part["regularizer"].unique(), key=lambda r: (r != BASELINE, r))
            fig = MplFigure(figsize=(4.2 * len(present), 3.2), layout="constrained")
            axes = np.atleast_1d(fig.subplots(1, len(present)))
            for ax, metric in zip(axes, present):
                for reg in regs:
                    arm = part[part["regularizer"] == reg].dropna(subset=[metric])
                    curve = (100 * arm[metric]).groupby(arm["epoch"]).agg(["mean", "std", "count"])
                    color = _arm_color(reg, regs)
                    seeds = arm["seed"].nunique()
                    ax.plot(curve.index, curve["mean"], marker="o", ms=3, color=color,
                            label=f"{_arm_label(reg)} (n={seeds})")
                    band = curve[curve["count"] >= 2]
                    if len(band):
                        ax.fill_between(band.index, band["mean"] - band["std"],
                                        band["mean"] + band["std"], color=color, alpha=0.2, lw=0)
                ax.set_xlabel("epoch")
                ax.set_ylabel(f"test {metric_title(metric.split('/', 1)[1])} (%)")
                ax.grid(alpha=0.3)
                ax.xaxis.get_major_locator().set_params(integer=True)
            axes[0].legend(fontsize=8, loc="lower right")
            fig.suptitle(f"{dataset}: {_method(method)}", fontsize=11)
            key = f"convergence-{dataset}-{method}"
            png, pdf = _save(fig, out_dir, key)
            out.append(Figure(key, f"Convergence: {dataset}, {_method(method)}",
                              "Test metrics after every epoch; line = mean over seeds, band = ± 1 "
                              "std over seeds (only where at least 2 seeds).", png, pdf,
                              tuple(part["run_id"].unique())))
    return out


# ---------------------------------------------------------------- NIR gain bars
def gains(comparisons: pd.DataFrame, policy_name: str, policy_title: str,
          out_dir: Path) -> Figure | Skipped:
    """Bars of regularized minus baseline per dataset and method, one panel per key metric, with
    the bootstrap 95% interval; colour = verdict (green helps, red hurts, grey otherwise)."""
    title = f"NIR gain ({policy_title})"
    if comparisons.empty:
        return Skipped(title, "no regularized arm has a baseline with the same method and dataset")
    metrics = [m for m in KEY_METRICS if m in set(comparisons["metric"])]
    fig = MplFigure(figsize=(3.3 * len(metrics), 3.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(metrics), sharey=False))
    ids: set[str] = set()
    for ax, metric in zip(axes, metrics):
        part = comparisons[comparisons["metric"] == metric].copy()
        part["_rank"] = part["dataset"].map(dataset_rank)
        part = part.sort_values(["_rank", "method", "regularizer"])
        scale = 100.0 if is_percent(metric) else 1.0
        x = np.arange(len(part))
        means = scale * part["mean_diff"].to_numpy()
        lo = scale * part["boot_lo"].to_numpy()
        hi = scale * part["boot_hi"].to_numpy()
        has_ci = np.isfinite(lo) & np.isfinite(hi)
        colors = [VERDICT_COLORS.get(v, NEUTRAL) for v in part["verdict"]]
        ax.bar(x, means, color=colors, width=0.65)
        if has_ci.any():
            err = np.vstack([means - lo, hi - means])[:, has_ci]
            ax.errorbar(x[has_ci], means[has_ci], yerr=err, fmt="none", ecolor="#333",
                        capsize=3, lw=1)
        ax.axhline(0, color="#333", lw=0.8)
        labels = [f"{d}\n{_method(m)}\n+{r.upper()} n={n}" for d, m, r, n in
                  zip(part["dataset"], part["method"], part["regularizer"], part["n"])]
        ax.set_xticks(x, labels, fontsize=7)
        ax.set_title(metric_title(metric), fontsize=10)
        ax.set_ylabel("Δ (percentage points)" if is_percent(metric) else "Δ")
        ax.grid(axis="y", alpha=0.3)
        ids |= set(" ".join(part["baseline_run_ids"] + " " + part["treated_run_ids"]).split())
    fig.suptitle(title, fontsize=11)
    key = f"gains-{policy_name}"
    png, pdf = _save(fig, out_dir, key)
    return Figure(key, title, "Regularized minus baseline, paired by seed; whiskers = percentile "
                  "bootstrap 95% interval of the mean difference (none with fewer than 2 pairs); "
                  "green = helps, red = hurts, grey = no detectable difference or too few seeds.",
                  png, pdf, tuple(sorted(ids)))


# ---------------------------------------------------------------- structure metrics
def structure(selected: pd.DataFrame, policy_title: str, out_dir: Path) -> Figure | Skipped:
    """The paper's analysis metrics (spectral decay rho, pi_density, sigma^2_kappa, G2), baseline
    against the regularized arm, mean ± std over seeds, when the runs logged them."""
    title = "Embedding structure: baseline vs NIR"
    metrics = [m for m in STRUCTURE_METRICS if m in selected.columns
               and selected[m].notna().any()]
    if not metrics:
        return Skipped(title, "no run logged test/rho, test/pi_density, test/sigma2_kappa or "
                              "test/g2 (the structure metrics of the paper's analysis)")
    fig = MplFigure(figsize=(3.3 * len(metrics), 3.3), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    groups = sorted({(d, m) for d, m in zip(selected["dataset"], selected["method"])},
                    key=lambda g: (dataset_rank(g[0]), g[1]))
    regs = sorted(selected["regularizer"].unique(), key=lambda r: (r != BASELINE, r))
    width = 0.8 / len(regs)
    for ax, metric in zip(axes, metrics):
        for k, reg in enumerate(regs):
            means, stds = [], []
            for dataset, method in groups:
                values = selected[(selected["dataset"] == dataset) & (selected["method"] == method)
                                  & (selected["regularizer"] == reg)][metric].dropna()
                means.append(values.mean() if len(values) else math.nan)
                stds.append(values.std(ddof=1) if len(values) > 1 else 0.0)
            x = np.arange(len(groups)) + (k - (len(regs) - 1) / 2) * width
            ax.bar(x, means, width, yerr=stds, capsize=2, color=_arm_color(reg, regs),
                   label=_arm_label(reg))
        ax.set_xticks(np.arange(len(groups)), [f"{d}\n{_method(m)}" for d, m in groups],
                      fontsize=7)
        ax.set_title(metric_title(metric), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{title} ({policy_title})", fontsize=11)
    png, pdf = _save(fig, out_dir, "structure")
    return Figure("structure", title, f"Mean ± std over seeds at the {policy_title}. The paper "
                  "reports lower ρ and higher π density with NIR.", png, pdf,
                  tuple(selected["run_id"]))


# ---------------------------------------------------------------- tuning
def tuning(trials: pd.DataFrame, out_dir: Path) -> list[Figure | Skipped]:
    """Per Optuna study: objective against trial (with the best so far) and against each
    parameter. ``trials`` is tidy: study, direction, number, state, value, param_<name>..."""
    if trials.empty:
        return [Skipped("Tuning", "no Optuna study found")]
    out: list[Figure | Skipped] = []
    for study, part in trials.groupby("study"):
        done = part[(part["state"] == "COMPLETE") & part["value"].notna()].sort_values("number")
        if done.empty:
            out.append(Skipped(f"Tuning: {study}", "the study has no completed trial"))
            continue
        params = [c for c in done.columns if c.startswith("param_") and done[c].notna().any()]
        params = params[:4]  # the most a row of readable panels holds
        fig = MplFigure(figsize=(3.6 * (1 + len(params)), 3.2), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, 1 + len(params)))
        maximize = str(done["direction"].iloc[0]).upper() == "MAXIMIZE"
        best = done["value"].cummax() if maximize else done["value"].cummin()
        axes[0].plot(done["number"], done["value"], "o", ms=3, color=BASE_COLOR, label="trial")
        axes[0].plot(done["number"], best, color=ARM_COLORS[0], label="best so far")
        axes[0].set_xlabel("trial")
        axes[0].set_ylabel("objective")
        axes[0].legend(fontsize=8)
        for ax, param in zip(axes[1:], params):
            values = done[param]
            numeric = pd.to_numeric(values, errors="coerce")
            x = numeric if numeric.notna().all() else values.astype(str)
            ax.plot(x, done["value"], "o", ms=3, color=BASE_COLOR)
            ax.set_xlabel(param.removeprefix("param_"))
            spans_decades = (numeric.notna().all() and (numeric > 0).all()
                             and numeric.max() / numeric.min() > 100)
            if spans_decades:  # learning rates and the like
                ax.set_xscale("log")
        for ax in axes:
            ax.grid(alpha=0.3)
        fig.suptitle(f"Optuna study {study} ({len(done)} completed trials)", fontsize=11)
        key = f"tuning-{_safe(str(study))}"
        png, pdf = _save(fig, out_dir, key)
        out.append(Figure(key, f"Tuning: {study}", "Objective per trial (best so far as a line) "
                          "and against each tuned parameter.", png, pdf, ()))
    return out


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in name)


__all__ = ["Figure", "Skipped", "convergence", "gains", "structure", "tuning"]
