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

from nirbench.harness.results.arms import BASELINE, arm_order, arm_title
from nirbench.harness.results.display import (METHOD_TITLES, STRUCTURE_METRICS, dataset_rank, is_percent,
                                     method_rank, metric_title, pair_title)

BASE_COLOR, ARM_COLORS = "#4c72b0", ("#dd8452", "#55a868", "#c44e52", "#8172b3")
# Structure metrics have no "better": their detected moves get a neutral blue, not green/red.
# Equivalent (inside ±δ) is a decided answer too: purple; inconclusive stays grey (NEUTRAL).
VERDICT_COLORS = {"helps": "#55a868", "hurts": "#c44e52", "higher": "#4c72b0", "lower": "#4c72b0",
                  "equivalent": "#8172b3"}
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


def _arm_label(arm: str) -> str:
    return arm_title(arm, "baseline")


def _arm_color(arm: str, arms: list[str]) -> str:
    if arm == BASELINE:
        return BASE_COLOR
    others = [a for a in arms if a != BASELINE]
    return ARM_COLORS[others.index(arm) % len(ARM_COLORS)]


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
    data = epochs.merge(runs[["run_id", "dataset", "method", "arm", "seed"]], on="run_id")
    out: list[Figure | Skipped] = []
    for dataset in sorted(data["dataset"].unique(), key=dataset_rank):
        for method in sorted(data.loc[data["dataset"] == dataset, "method"].unique(),
                             key=method_rank):
            part = data[(data["dataset"] == dataset) & (data["method"] == method)]
            regs = sorted(part["arm"].unique(), key=arm_order)
            fig = MplFigure(figsize=(4.2 * len(present), 3.2), layout="constrained")
            axes = np.atleast_1d(fig.subplots(1, len(present)))
            for ax, metric in zip(axes, present):
                for reg in regs:
                    arm = part[part["arm"] == reg].dropna(subset=[metric])
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


# ---------------------------------------------------------------- forest plot of the comparisons
FOREST_METRICS = ("recall@1", "map@r")


def forest(comparisons: pd.DataFrame, policy_name: str, policy_title: str,
           out_dir: Path) -> Figure | Skipped:
    """One row per dataset x method x comparison, Δ (arm B − arm A, paired by seed) with its
    paired t 95% interval as a horizontal whisker, a zero line and the margin ±δ dotted, one panel
    per metric; colour = verdict (green helps, red hurts, purple equivalent, grey
    inconclusive)."""
    title = f"Arm comparisons ({policy_title})"
    if comparisons.empty:
        return Skipped(title, "no two arms of one dataset and method to compare")
    metrics = [m for m in FOREST_METRICS if m in set(comparisons["metric"])]
    if not metrics:
        return Skipped(title, "no comparison of test R@1 or MAP@R")
    rows = comparisons[comparisons["metric"] == metrics[0]][
        ["dataset", "method", "reference", "arm"]].drop_duplicates()
    rows = rows.assign(_d=rows["dataset"].map(dataset_rank), _m=rows["method"].map(method_rank),
                       _a=rows["arm"].map(arm_order), _r=rows["reference"].map(arm_order))
    rows = rows.sort_values(["_d", "_m", "_a", "_r"]).reset_index(drop=True)
    labels = [f"{d} · {_method(m)} · {pair_title(r, a)}"
              for d, m, r, a in zip(rows["dataset"], rows["method"], rows["reference"],
                                    rows["arm"])]
    height = 1.2 + 0.32 * len(rows)
    fig = MplFigure(figsize=(3.2 + 3.4 * len(metrics), height), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(metrics), sharey=True))
    y = np.arange(len(rows))[::-1]  # first row on top
    ids: set[str] = set()
    for ax, metric in zip(axes, metrics):
        part = comparisons[comparisons["metric"] == metric].set_index(
            ["dataset", "method", "reference", "arm"])
        scale = 100.0 if is_percent(metric) else 1.0
        for yi, key in zip(y, rows[["dataset", "method", "reference", "arm"]].itertuples(
                index=False, name=None)):
            if key not in part.index:
                continue
            r = part.loc[key]
            color = VERDICT_COLORS.get(r["verdict"], NEUTRAL)
            mean, lo, hi = (scale * r["mean_diff"], scale * r["t_lo"], scale * r["t_hi"])
            if math.isfinite(lo) and math.isfinite(hi):
                ax.plot([lo, hi], [yi, yi], color=color, lw=2, solid_capstyle="butt")
            ax.plot([mean], [yi], "o", color=color, ms=5, zorder=3)
            ids |= set((r["baseline_run_ids"] + " " + r["treated_run_ids"]).split())
        ax.axvline(0, color="#333", lw=0.9)
        margins = part["margin"].dropna() if "margin" in part else part.iloc[:0]
        if len(margins):  # the verdicts' δ: 'equivalent' needs the whisker inside the dots
            for side in (-1, 1):
                ax.axvline(side * scale * margins.iloc[0], color="#8172b3", lw=0.8, ls=":")
        ax.set_title(f"Δ {metric_title(metric)}", fontsize=10)
        ax.set_xlabel("Δ (percentage points)" if is_percent(metric) else "Δ")
        ax.grid(axis="x", alpha=0.3)
        ax.set_ylim(-0.7, len(rows) - 0.3)
    axes[0].set_yticks(y, labels, fontsize=8)
    # a separator between datasets, so the eye finds its block
    for k in range(1, len(rows)):
        if rows["dataset"].iloc[k] != rows["dataset"].iloc[k - 1]:
            for ax in axes:
                ax.axhline(y[k] + 0.5, color="#bbb", lw=0.6, ls="--")
    fig.suptitle(title, fontsize=11)
    key = f"forest-{policy_name}"
    png, pdf = _save(fig, out_dir, key)
    margin = comparisons["margin"].dropna() if "margin" in comparisons else comparisons.iloc[:0]
    delta = (f"dotted lines = the margin ±δ (δ = {100 * margin.iloc[0]:g} points)"
             if len(margin) else "no margin")
    return Figure(key, title, "Arm B minus arm A, paired by seed; dot = mean difference, whisker "
                  "= paired t 95% interval of the mean difference (none with fewer than 2 "
                  f"pairs); {delta}; green = helps (interval above 0), red = hurts (below 0), "
                  "purple = equivalent (inside ±δ), grey = inconclusive. Rows in table order.",
                  png, pdf, tuple(sorted(ids)))


# ---------------------------------------------------------------- NIR activity over epochs
ACTIVITY_SERIES = (("nir/term", "NIR term (unweighted)", True),
                   ("nir/grad_share", "NIR share of the embedding gradient", False),
                   ("nir/logdet", "log-determinant", False),
                   ("nir/clamp_share", "coupling scales at the clamp", False))


def nir_activity(runs: pd.DataFrame, epochs: pd.DataFrame, out_dir: Path) -> list[Figure | Skipped]:
    """Per dataset: the NIR term (log scale), its share of the gradient on the embeddings, the
    log-determinant and the share of clamped coupling scales against epoch, one line per method
    and NIR arm (mean over seeds): does the regularizer still act, and when does it stop?"""
    present = [s for s in ACTIVITY_SERIES if s[0] in epochs.columns and epochs[s[0]].notna().any()]
    if not present:
        return [Skipped("NIR activity", "no run logged nir/term, nir/grad_share, nir/logdet or "
                                        "nir/clamp_share (runs without NIR, or older runs)")]
    data = epochs.merge(runs[["run_id", "dataset", "method", "arm", "seed"]], on="run_id")
    out: list[Figure | Skipped] = []
    for dataset in sorted(data["dataset"].unique(), key=dataset_rank):
        part = data[(data["dataset"] == dataset) & data[present[0][0]].notna()]
        if part.empty:
            continue
        lines = sorted({(m, a) for m, a in zip(part["method"], part["arm"])},
                       key=lambda ma: (method_rank(ma[0]), arm_order(ma[1])))
        fig = MplFigure(figsize=(3.6 * len(present), 3.3), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(present)))
        for ax, (column, label, log) in zip(axes, present):
            for k, (method, arm) in enumerate(lines):
                series = part[(part["method"] == method) & (part["arm"] == arm)].dropna(
                    subset=[column])
                curve = series[column].groupby(series["epoch"]).mean()
                if log:
                    curve = curve.clip(lower=1e-12)
                ax.plot(curve.index, curve.values, marker="o", ms=2.5,
                        color=ARM_COLORS[k % len(ARM_COLORS)] if k < 4 else BASE_COLOR,
                        label=f"{_method(method)} {_arm_label(arm)}")
            if log:
                ax.set_yscale("log")
            ax.set_title(label, fontsize=9)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            ax.xaxis.get_major_locator().set_params(integer=True)
        axes[0].legend(fontsize=7)
        fig.suptitle(f"{dataset}: NIR activity", fontsize=11)
        key = f"nir-activity-{dataset}"
        png, pdf = _save(fig, out_dir, key)
        out.append(Figure(key, f"NIR activity: {dataset}",
                          "Mean over seeds per epoch. A term that falls by orders of magnitude "
                          "and a gradient share near 0 mean the flow no longer shapes the "
                          "embedding; the arm then differs from its baseline only in what the "
                          "control arm (flow off) also has.", png, pdf,
                          tuple(part["run_id"].unique())))
    return out


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
                    key=lambda g: (dataset_rank(g[0]), method_rank(g[1])))
    regs = sorted(selected["arm"].unique(), key=arm_order)
    width = 0.8 / len(regs)
    for ax, metric in zip(axes, metrics):
        for k, reg in enumerate(regs):
            means, stds = [], []
            for dataset, method in groups:
                values = selected[(selected["dataset"] == dataset) & (selected["method"] == method)
                                  & (selected["arm"] == reg)][metric].dropna()
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


__all__ = ["Figure", "Skipped", "convergence", "forest", "nir_activity", "structure", "tuning"]
