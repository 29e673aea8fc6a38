"""`nirbench report`: the HTML report from a synthetic MLflow store: figures (PNG + PDF), every
number traceable to its MLflow runs, provenance, offline by construction, and rendered for real in
headless Chromium (DOM after load + a screenshot kept in tests/artifacts/)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from nirbench.harness import results as agg
from nirbench.harness.results import plots
from nirbench.harness.cli.main import main
from tests.test_aggregate import ENVIRONMENT, arms, make_store

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed: `apt-get install -y chromium` "
    "(./run_all.sh --tests installs it when run as root)",
)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """Aggregate + report over 2 datasets (one real, for the published table) x (PA, PA+NIR, MS)
    x 3 seeds, with validation and structure metrics; returns the results folder."""
    results = tmp_path_factory.mktemp("report") / "results"
    tracker = make_store(
        results, arms(datasets=("synth-cub", "cub200"), seeds=(0, 1, 2)), val=True, structure=True
    )
    agg.write_tables(tracker, results / "tables", resamples=2000, command="nirbench aggregate")
    from nirbench.dashboards.report import build_report

    built = build_report(results, command="nirbench report")
    assert built.index == results / "report" / "index.html"
    return results


def test_report_has_every_section_figure_and_format(report):
    page = (report / "report" / "index.html").read_text()
    figures = report / "report" / "figures"
    for key in (
        "convergence-synth-cub-proxy_anchor",
        "convergence-cub200-multi_similarity",
        "forest-last",
        "forest-best-test",
        "forest-best-val",
        "structure",
    ):
        assert (figures / f"{key}.png").stat().st_size > 5000, key
        assert (figures / f"{key}.pdf").read_bytes().startswith(b"%PDF"), key
        assert f'src="figures/{key}.png"' in page, key
    for heading in (
        "Summary",
        "Arm comparisons",
        "Attribution ladder",
        "NIR activity",
        "Convergence",
        "All metrics",
        "Other model-selection policies",
        "Published vs reproduced",
        "Embedding structure",
        "Tuning",
        "Runs",
        "Provenance",
    ):
        assert f">{heading}" in page, heading
    assert "Table 1 layout (last epoch)" in page and "Table 1 layout (best test epoch)" in page
    assert "Table 1 layout (best validation epoch)" in page
    assert "cub200: reproduced (best test epoch) vs published" in page
    assert "66.0 ± 0.3" in page  # the paper's ProxyAnchor + NIR CUB R@1 beside ours
    assert "helps" in page and "How the verdict is decided" in page
    assert "Tuning</b>: not drawn: no Optuna study file" in page
    # the still-rising rule's outcome for every cell, said although no cell is marked: the
    # synthetic curves end -1 point over their last fifth (epochs 3-4 of 4)
    assert "Still rising (†): none of 6 cells; the largest rise is -1.00 points" in page
    assert "<td>cub200</td><td>ProxyAnchor + NIR</td>" in page


def test_every_verdict_states_its_margin_and_holm_beside_the_headline(report, tmp_path):
    page = (report / "report" / "index.html").read_text()
    assert "margin δ = 1.0 points" in page and "δ = 1.0; 3 seeds" in page
    assert "Holm over 2 headline comparisons: " in page  # PA + NIR vs PA on 2 datasets
    assert "verdict (Holm)" in page and "seeds for ±δ" in page and "MDE (80%)" in page
    assert "95% bootstrap CI (n ≥ 10)" in page
    assert "CI contains it" in page  # cub200: is the paper's +1.6 inside the interval?
    for retired in ("no detectable difference", "too few seeds"):
        assert retired not in page
    from nirbench.dashboards.report import build_report

    other = build_report(report, out_dir=tmp_path / "r", margin=0.5)
    wider = other.index.read_text()
    assert "margin δ = 0.5 points" in wider and "nirbench report --margin" in wider


def test_every_number_links_to_runs_listed_in_the_runs_section(report):
    page = (report / "report" / "index.html").read_text()
    runs = pd.read_parquet(report / "tables" / "runs.parquet")
    anchors = set(re.findall(r'<tr id="run-([0-9a-f]+)">', page))
    assert anchors == set(runs["run_id"])
    cells = re.findall(r'<td class="num[^"]*"([^>]*)>(.*?)</td>', page)
    assert len(cells) > 100
    for attrs, text in cells:
        if text in ("-", "–") or 'title="published: ' in attrs:  # the paper's own numbers
            continue
        ids = re.search(r'data-runs="([^"]+)"', attrs) or re.search(
            r'title="run ([0-9a-f]+)"', attrs
        )
        assert ids, (attrs, text)
        assert set(ids.group(1).split()) <= anchors
    experiment = runs["experiment_id"].iloc[0]
    first = runs["run_id"].iloc[0]
    assert f"http://127.0.0.1:5000/#/experiments/{experiment}/runs/{first}" in page


def test_provenance_names_code_environment_and_commands(report):
    page = (report / "report" / "index.html").read_text()
    assert "0123456789abcdef" in page  # the runs' git_sha tag
    assert "nirbench grid synthetic.yaml" in page and "nirbench aggregate" in page
    assert "nirbench report" in page and "nirbench run --config runs/" in page
    assert f"torch {ENVIRONMENT['packages']['torch']}" in page and "Linux-test" in page
    assert "ui --backend-store-uri sqlite:///" in page and "--port 5000" in page


def test_report_loads_nothing_from_the_network(report):
    page = (report / "report" / "index.html").read_text()
    sources = re.findall(r'\ssrc="([^"]*)"', page)
    assert sources and all(not re.match(r"[a-z]+:", s) for s in sources)  # relative files only
    for src in sources:
        assert (report / "report" / src).is_file(), src
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert not re.search(r"<script[^>]+src=", page)


def test_skipped_figures_say_why_and_tuning_plots_an_optuna_study(tmp_path):
    selected = pd.DataFrame(
        {
            "run_id": ["a"],
            "dataset": ["d"],
            "method": ["m"],
            "regularizer": ["none"],
            "recall@1": [0.5],
        }
    )
    skipped = plots.structure(selected, "last epoch", tmp_path)
    assert isinstance(skipped, plots.Skipped) and "test/rho" in skipped.reason

    from nirbench.dashboards.report import find_studies
    from nirbench.harness.search.trials_table import load_trials

    assert find_studies(tmp_path) == [] and load_trials([]).empty
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    (tmp_path / "optuna").mkdir()
    journal = tmp_path / "optuna" / "pa.journal"  # where harness.search.study keeps its studies
    storage = JournalStorage(JournalFileBackend(str(journal)))
    study = optuna.create_study(
        study_name="pa-margin",
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    study.optimize(
        lambda t: -((t.suggest_float("margin", 0.01, 1.0, log=True) - 0.1) ** 2), n_trials=6
    )
    assert find_studies(tmp_path) == [journal]
    trials = load_trials([journal])
    assert len(trials) == 6 and set(trials["study"]) == {"pa-margin"}
    assert trials["param_margin"].between(0.01, 1.0).all()
    (figure,) = plots.tuning(trials, tmp_path / "figures")
    assert isinstance(figure, plots.Figure) and figure.png.stat().st_size > 5000
    with pytest.raises(FileNotFoundError, match="not found"):
        find_studies(tmp_path, [tmp_path / "missing.journal"])


def test_report_cli_without_tables_says_what_to_run(tmp_path, capsys):
    assert main(["report", "--results-dir", str(tmp_path)]) == 2
    assert "run `nirbench aggregate` first" in capsys.readouterr().err


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            *args,
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=90,
    )


@needs_chromium
def test_report_renders_in_headless_chromium(report, tmp_path):
    index = (report / "report" / "index.html").resolve()
    done = _chromium(
        tmp_path / "profile", "--virtual-time-budget=15000", "--dump-dom", index.as_uri()
    )
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:500]
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', body.group(1)))
    assert attrs.get("data-ready") == "1", attrs  # the inline script ran after the load event
    total = int(attrs["data-images-total"])
    assert total >= 6 and attrs["data-images-loaded"] == str(total)
    assert int(attrs["data-tables"]) >= 10
    imgs = re.findall(r"<img[^>]*>", dom)
    assert len(imgs) == total and all('data-loaded="1"' in i for i in imgs)

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report-screenshot.png"
    shot.unlink(missing_ok=True)
    done = _chromium(
        tmp_path / "profile",
        "--hide-scrollbars",
        "--window-size=1400,2600",
        "--virtual-time-budget=15000",
        f"--screenshot={shot}",
        index.as_uri(),
    )
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    from PIL import Image

    image = Image.open(shot).convert("L")
    assert image.size == (1400, 2600)
    histogram = image.histogram()
    non_white = sum(histogram[:240]) / (image.size[0] * image.size[1])
    assert non_white > 0.02, f"screenshot looks blank ({non_white:.1%} non-white pixels)"
