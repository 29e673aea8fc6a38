"""`nirbench tune`: the tune-file schema, an honest search (trials never see test images), pruning,
resume, dead-worker retry, two worker processes on one study, tracking and final runs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
import yaml

from nirbench.harness.train import engine
from nirbench.harness.results import write_tables
from nirbench.harness.cli.main import main
from nirbench.harness.config import ConfigError, load_config
from nirbench.harness.data import load_dataset
from nirbench.harness.search.attributes import WORKER_ATTR
from nirbench.harness.search.heartbeat import stale_trials
from nirbench.harness.search.sampling import TrialSeededSampler
from nirbench.harness.search.storage import open_storage
from nirbench.harness.search.study import open_study, run_search
from nirbench.harness.search.tune_file import load_tune_config
from nirbench.harness.tracking.store import SEARCH_EXPERIMENT, Tracker
from tests.conftest import TINY

REPO = Path(__file__).resolve().parent.parent
TINY_RUN = f"""
dataset: {{name: {TINY}}}
backbone: {{embed_dim: 16}}
regularizer: {{name: nir, blocks: 2, subnet_depth: 2, subnet_width: 16}}
train: {{epochs: EPOCHS, batch_size: 8, samples_per_class: 2, warmup_epochs: 0}}
eval: {{recall_at: [1, 2], nmi: false}}
"""


def tune_file(tmp_path: Path, search: str = "", epochs: int = 1, name: str = "tune.yaml") -> Path:
    path = tmp_path / name
    text = (
        TINY_RUN.replace("EPOCHS", str(epochs))
        + "search:\n"
        + textwrap.indent(textwrap.dedent(search) or "n_trials: 2\n", "  ")
    )
    path.write_text(text)
    return path


def quiet(line: str) -> None:
    pass


# ---------------------------------------------------------------------------- the tune file
def test_default_spaces_come_from_the_registry_and_arms_differ_only_in_the_regularizer(tmp_path):
    path = tune_file(tmp_path)
    nir = load_tune_config(path)
    assert nir.arm == "nir" and [p.key for p in nir.space] == [
        "regularizer.weight",
        "regularizer.flow_lr_mult",
    ]
    weight = nir.space[0]
    assert weight.log and (weight.low, weight.high) == (1e-3, 1.0)
    assert nir.weight_convention == "w_align" and nir.shared_keys == []
    base = load_tune_config(path, arm="baseline")
    assert base.base.regularizer is None and [p.key for p in base.space] == [
        "method.margin",
        "method.alpha",
    ]
    a, b = nir.base.to_dict(), base.base.to_dict()
    assert {k for k in a if a[k] != b[k]} == {"regularizer"}
    assert base.study == f"{TINY}-proxy_anchor-baseline" and base.final_grid == nir.final_grid
    trial = nir.trial_config({"regularizer.weight": 0.05})
    assert trial.validation.active and trial.regularizer.params["weight"] == 0.05
    final = nir.final_config({"regularizer.weight": 0.05}, seed=3)
    assert not final.validation.active and final.seed == 3


def test_file_space_per_arm_and_extras(tmp_path):
    path = tune_file(
        tmp_path,
        """
        space:
          nir:
            regularizer.weight: {type: float, low: 0.01, high: 0.5, log: true}
            train.warmup_epochs: {type: int, low: 0, high: 0}
            regularizer.conditioning: {choices: [dense, embed_shared]}
          baseline:
            method.margin: {low: 0.05, high: 0.2}
        """,
        epochs=2,
    )
    with pytest.raises(ConfigError, match="low .* must be < high"):
        load_tune_config(path)
    path.write_text(path.read_text().replace("high: 0}", "high: 1}"))
    tc = load_tune_config(path)
    kinds = {p.key: p.type for p in tc.space}
    assert kinds == {
        "regularizer.weight": "float",
        "train.warmup_epochs": "int",
        "regularizer.conditioning": "categorical",
    }
    assert tc.shared_keys == ["train.warmup_epochs"]  # printed as a fairness note
    assert [p.key for p in load_tune_config(path, arm="baseline").space] == ["method.margin"]


@pytest.mark.parametrize(
    "search, match",
    [
        ("n_trails: 3", "unknown key search.n_trails.*n_trials"),
        ("metric: recall@8", "not computed.*recall@1"),
        ("sampler: tpee", "Did you mean 'tpe'"),
        ("pruner: {name: median, warmup: 1}", "unknown key search.pruner.warmup"),
        ("validation: {fraction: 0.0}", "must hold out training classes"),
        ("space: {regularizer.wieght: {low: 0.01, high: 1}}", "invalid run config.*wieght"),
        ("space: {regularizer.weight: {low: 0, high: 1, log: true}}", "log scale needs low > 0"),
        (
            "space: {dataset.name: {choices: [a, b]}}",
            "dataset, eval, validation and seed are fixed",
        ),
        ("space: {train.epochs: {type: int, low: 1, high: 9.5}}", "high must be an integer"),
        ("retry: {heartbeat_s: 30, grace_s: 10}", "must exceed heartbeat_s"),
        ("study: 'a b'", "letters, digits"),
    ],
)
def test_bad_tune_files_fail_at_load_time_with_the_key_named(tmp_path, search, match):
    with pytest.raises(ConfigError, match=match):
        load_tune_config(tune_file(tmp_path, search + "\n"))


def test_baseline_arm_refuses_regularizer_keys_and_fingerprint_ignores_budget(tmp_path):
    path = tune_file(tmp_path, "space: {regularizer.weight: {low: 0.01, high: 1.0}}\n")
    with pytest.raises(ConfigError, match="baseline arm runs without a regularizer"):
        load_tune_config(path, arm="baseline")
    a = load_tune_config(path, n_trials=3)
    assert (
        a.fingerprint
        == load_tune_config(path, n_trials=30, overrides=["search.sampler=gp"]).fingerprint
    )
    assert a.fingerprint != load_tune_config(path, overrides=["train.lr=0.002"]).fingerprint
    assert a.fingerprint != load_tune_config(path, overrides=["search.metric=recall@1"]).fingerprint


def test_sampler_is_seeded_per_trial_number():
    def run(seed: int) -> list[float]:
        sampler = TrialSeededSampler(
            lambda s: optuna.samplers.TPESampler(seed=s, n_startup_trials=3), seed
        )
        study = optuna.create_study(sampler=sampler)
        study.optimize(lambda t: (t.suggest_float("x", 0, 1) - 0.3) ** 2, n_trials=6)
        return [t.params["x"] for t in study.trials]

    first = run(0)
    assert first == run(0) and first != run(1) and len(set(first)) == 6


# ---------------------------------------------------------------------------- search end to end
def test_search_is_honest_tracked_exported_and_final_runs_aggregate(
    tmp_path, results_dir, monkeypatch
):
    bundle = load_dataset(TINY, None, results_dir)
    train_rows = {img.numpy().tobytes() for img in bundle.train.images}
    test_rows = {img.numpy().tobytes() for img in bundle.test.images}
    evaluated: dict[str, set[bytes]] = {"val": set(), "test": set()}
    real_evaluate = engine.evaluate

    def spy(trainer, split, full=True):
        kind = "val" if trainer.cfg.validation.active else "test"
        evaluated[kind].update(img.numpy().tobytes() for img in split.images)
        return real_evaluate(trainer, split, full)

    monkeypatch.setattr(engine, "evaluate", spy)
    tc = load_tune_config(
        tune_file(tmp_path, "n_trials: 2\nfinal_seeds: 2\nvalidation: {fraction: 0.25}\n")
    )
    out = run_search(tc, results_dir, echo=quiet)

    # Honest: trials evaluated only training-class images; only final runs touched test.
    assert evaluated["val"] and evaluated["val"] <= train_rows
    assert not evaluated["val"] & test_rows and evaluated["test"] == test_rows

    assert out.n_complete + out.n_pruned == 2 and out.n_failed == 0
    journal = results_dir / "optuna" / f"{tc.study}.journal"
    assert journal.is_file() and out.storage == str(journal.resolve())
    search = Tracker(results_dir, experiment=SEARCH_EXPERIMENT)
    runs = search.runs()
    parents = [r for r in runs if r.tags.get("stage") == "search"]
    trials = [r for r in runs if r.tags.get("stage") == "trial"]
    assert len(parents) == 1 and len(trials) == 2
    parent = parents[0]
    assert parent.status == "FINISHED" and parent.tags["nir.weight_convention"] == "w_align"
    assert parent.metrics["best/val_map_at_r"] == pytest.approx(out.best_value)
    assert sorted(r.tags["trial"] for r in trials) == ["0", "1"]
    for run in trials:
        assert run.tags["mlflow.parentRunId"] == parent.run_id
        assert [s for s, _ in search.history(run.run_id, "val/map@r")] == [1]  # every epoch
        assert not any(k.startswith("test/") for k in run.metrics)
    artifacts = {a.path for a in search.client.list_artifacts(parent.run_id)}
    assert f"{tc.study}-best.yaml" in artifacts and f"{tc.study}-history.png" in artifacts

    # The exported preset is a complete run config: validation off, the best parameters.
    best = load_config(out.best_yaml)
    assert not best.validation.active and best.dataset.name == TINY
    assert best.regularizer.params["weight"] == pytest.approx(out.best_params["regularizer.weight"])
    assert best == tc.final_config(out.best_params, tc.base.seed)
    names = {p.name for p in out.files}
    assert {f"{tc.study}-params.png", f"{tc.study}-trials.csv"} <= names
    assert any("importances" in n for n in out.notes) or f"{tc.study}-importances.png" in names

    # Final runs: all training classes, test metrics, tagged; one arm of the tables.
    main_runs = Tracker(results_dir).runs(statuses=("FINISHED",))
    assert len(out.final) == 2 and len(main_runs) == 2
    for run in main_runs:
        assert run.tags["stage"] == "final" and run.tags["study"] == tc.study
        assert run.tags["grid"] == tc.final_grid and "test/recall_at_1" in run.metrics
    assert len({r.tags["arm_hash"] for r in main_runs}) == 1
    files = write_tables(
        Tracker(results_dir), results_dir / "tables", grid=tc.final_grid, resamples=200
    )
    assert "+ NIR" in files.markdown

    # Resume: the same study with a larger target runs only what is missing, same parent run.
    again = run_search(
        load_tune_config(tune_file(tmp_path, "n_trials: 3\nvalidation: {fraction: 0.25}\n")),
        results_dir,
        echo=quiet,
    )
    assert [r.number for r in again.ran] == [2] and again.n_complete + again.n_pruned == 3
    assert again.parent_run_id == parent.run_id
    # ... but a study set up differently is refused instead of mixed.
    with pytest.raises(ConfigError, match="different search setup.*metric"):
        run_search(
            load_tune_config(
                tune_file(tmp_path, "n_trials: 5\nmetric: recall@1\nvalidation: {fraction: 0.25}\n")
            ),
            results_dir,
            echo=quiet,
        )


def test_pruned_trials_end_cleanly_and_count_toward_the_target(tmp_path, results_dir, monkeypatch):
    monkeypatch.setattr(optuna.trial.Trial, "should_prune", lambda self: self.number == 1)
    tc = load_tune_config(
        tune_file(tmp_path, "n_trials: 2\npruner: none\nvalidation: {fraction: 0.25}\n", epochs=2)
    )
    out = run_search(tc, results_dir, echo=quiet, plots=False)
    assert (out.n_complete, out.n_pruned, out.n_failed) == (1, 1, 0)
    pruned = [
        r
        for r in Tracker(results_dir, experiment=SEARCH_EXPERIMENT).runs()
        if r.tags.get("trial") == "1"
    ]
    assert len(pruned) == 1 and pruned[0].status == "KILLED"
    assert pruned[0].tags["pruned"] == "true" and pruned[0].tags["pruned_at_epoch"] == "1"
    study = optuna.load_study(study_name=tc.study, storage=open_storage(tc, results_dir))
    assert study.trials[1].state == optuna.trial.TrialState.PRUNED
    assert study.trials[1].intermediate_values.keys() == {1}
    assert study.trials[0].intermediate_values.keys() == {1, 2}  # reported every epoch


def test_a_dead_workers_trial_is_failed_and_retried_with_its_parameters(
    tmp_path, results_dir, capsys
):
    path = tune_file(tmp_path, "n_trials: 1\nvalidation: {fraction: 0.25}\n")
    tc = load_tune_config(path)
    study = open_study(tc, open_storage(tc, results_dir))
    orphan = study.ask(
        {
            "regularizer.weight": optuna.distributions.FloatDistribution(1e-3, 1.0, log=True),
            "regularizer.flow_lr_mult": optuna.distributions.FloatDistribution(0.05, 5.0, log=True),
        }
    )
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    orphan.set_user_attr(
        WORKER_ATTR,
        {
            "host": os.uname().nodename,
            "pid": int(dead.stdout),
            "start": None,
            "trial": orphan.number,
        },
    )
    frozen = study.trials[0]
    assert stale_trials([frozen], grace_s=3600) == [frozen]  # its process is gone

    out = run_search(tc, results_dir, echo=quiet, plots=False)
    states = [t.state.name for t in study.get_trials()]
    assert states == ["FAIL", "COMPLETE"] and out.n_complete == 1
    retried = study.get_trials()[1]
    assert retried.params == frozen.params  # the same point, run again
    assert retried.system_attrs["failed_trial"] == 0

    # The CLI on a finished study runs nothing new and reports it.
    assert (
        main(
            [
                "tune",
                "--config",
                str(path),
                "--results-dir",
                str(results_dir),
                "--no-progress",
                "--no-plots",
                "--quiet",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "0 run by this process" in out and "best: trial 1" in out
    assert f"optuna-dashboard {results_dir.resolve()}/optuna/{tc.study}.journal" in out
    best = yaml.safe_load((results_dir / "optuna" / f"{tc.study}-best.yaml").read_text())
    assert best["regularizer"]["weight"] == pytest.approx(frozen.params["regularizer.weight"])
    bad = tune_file(tmp_path, "n_trials: 0\n", name="bad.yaml")
    assert main(["tune", "--config", str(bad), "--results-dir", str(results_dir)]) == 2
    assert "search.n_trials must be >= 1" in capsys.readouterr().err


def test_two_worker_processes_share_one_study_without_losing_or_duplicating(tmp_path, results_dir):
    path = tune_file(
        tmp_path,
        "n_trials: 4\nvalidation: {fraction: 0.25}\nsampler: {name: tpe, n_startup_trials: 2}\n",
    )
    code = (
        "import sys, tests.conftest; from nirbench.harness.cli.main import main; "
        f"sys.exit(main(['tune', '--config', {str(path)!r}, '--results-dir', "
        f"{str(results_dir)!r}, '--no-progress', '--no-plots', '--quiet']))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=240)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs

    tc = load_tune_config(path)
    study = optuna.load_study(study_name=tc.study, storage=open_storage(tc, results_dir))
    done = [t for t in study.trials if t.state.is_finished() and t.state.name != "FAIL"]
    assert len(done) == 4  # exactly the target: nothing lost, no overshoot
    assert all(t.user_attrs.get("surplus") for t in study.trials if t.state.name == "FAIL")
    assert len({tuple(sorted(t.params.items())) for t in done}) == 4  # no duplicated point
    runs = Tracker(results_dir, experiment=SEARCH_EXPERIMENT).runs()
    trial_runs = [r for r in runs if r.tags.get("stage") == "trial"]
    parents = [r for r in runs if r.tags.get("stage") == "search"]
    assert sorted(int(r.tags["trial"]) for r in trial_runs) == sorted(t.number for t in done)
    assert len(parents) == 1
    assert {r.tags["mlflow.parentRunId"] for r in trial_runs} == {parents[0].run_id}
    assert all(r.status == "FINISHED" for r in trial_runs)
