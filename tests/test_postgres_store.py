"""The shared store for many machines, for real: a throwaway PostgreSQL cluster (initdb/pg_ctl
in a temporary folder, on a free port), an `mlflow server` on it with proxied artifacts, and a run
of the harness tracked through ``MLFLOW_TRACKING_URI=http://...``. Checks: the run's metrics
reach PostgreSQL's tables (counted there with SQL), its curves read back through the server, and
an artifact makes the round trip through the server's artifact proxy to the destination folder.
Skipped, saying why, only where the PostgreSQL binaries are not installed."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from nirbench.harness.config import load_config
from nirbench.harness.train.runner import execute
from nirbench.harness.tracking.store import Tracker

# SQLAlchemy 2.1 (what MLflow uses) reads postgresql:// URIs with psycopg 3.
psycopg = pytest.importorskip(
    "psycopg", reason="psycopg is not installed (pip install 'nirbench[cluster]')"
)


def pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_user(user: str | None, argv: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as ``user`` then."""
    return ["runuser", "-u", user, "--", *argv] if user else argv


@pytest.fixture
def postgres():
    initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in "
            "/usr/lib/postgresql/*/bin; install them: apt-get install postgresql"
        )
    user = None
    if os.geteuid() == 0:
        for candidate in ("postgres", "nobody"):
            try:
                pwd.getpwnam(candidate)
                user = candidate
                break
            except KeyError:
                continue
        if user is None or shutil.which("runuser") is None:
            pytest.skip(
                "running as root with no 'postgres'/'nobody' user or no runuser: "
                "initdb refuses to run as root"
            )
    home = Path(tempfile.mkdtemp(prefix="nirbench-pg-"))  # not under pytest's 0700 tmp dirs
    if user:
        entry = pwd.getpwnam(user)
        os.chown(home, entry.pw_uid, entry.pw_gid)
    data, port = home / "data", free_port()
    subprocess.run(
        as_user(user, [initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
        check=True,
        capture_output=True,
    )
    subprocess.run(
        as_user(
            user,
            [
                pg_ctl,
                "-D",
                str(data),
                "-l",
                str(home / "log"),
                "-w",
                "-o",
                f"-p {port} -k {home} -c listen_addresses=127.0.0.1",
                "start",
            ],
        ),
        check=True,
        capture_output=True,
    )
    try:
        with psycopg.connect(
            host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:  # CREATE DATABASE: no transaction
            conn.execute("CREATE DATABASE mlflow")
        yield f"postgresql://postgres@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(
            as_user(user, [pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def mlflow_server(postgres, tmp_path):
    port, artifacts = free_port(), tmp_path / "artifact-store"
    mlflow = Path(sys.executable).parent / "mlflow"
    log = open(tmp_path / "mlflow-server.log", "w")
    server = subprocess.Popen(
        [
            str(mlflow),
            "server",
            "--backend-store-uri",
            postgres,
            "--artifacts-destination",
            str(artifacts),
            "--serve-artifacts",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                    break
            except OSError:
                pass
            assert server.poll() is None, (tmp_path / "mlflow-server.log").read_text()
            assert time.monotonic() < deadline, "mlflow server did not answer within 120 s"
            time.sleep(0.5)
        yield url, postgres, artifacts
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # the server and the workers it started
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        log.close()


def test_runs_tracked_through_an_mlflow_server_on_postgresql(
    mlflow_server, tiny_overrides, tmp_path, monkeypatch
):
    url, postgres, artifacts = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    results = tmp_path / "results"
    tracker = Tracker(results)
    assert tracker.uri == url
    cfg = load_config(overrides=tiny_overrides)
    outcome = execute(cfg, tracker, results)

    (run,) = tracker.runs()
    assert run.run_id == outcome.run_id and run.status == "FINISHED"
    assert [s for s, _ in tracker.history(run.run_id, "test/recall@1")] == [1, 2]
    assert run.tags["reproduce"].startswith(f"MLFLOW_TRACKING_URI={url} nirbench run")

    # The metrics live in PostgreSQL: count them there.
    logged = sum(
        len(tracker.client.get_metric_history(run.run_id, key))
        for key in tracker.client.get_run(run.run_id).data.metrics
    )
    with psycopg.connect(postgres) as conn:
        stored_metrics = conn.execute(
            "SELECT count(*) FROM metrics WHERE run_uuid = %s", (run.run_id,)
        ).fetchone()[0]
    assert stored_metrics == logged > 2 * 10

    # Artifacts go through the server's proxy into --artifacts-destination and come back intact.
    downloaded = tracker.client.download_artifacts(run.run_id, "config.yaml", str(tmp_path))
    assert Path(downloaded).read_text() == cfg.to_yaml()
    stored = list(artifacts.rglob("config.yaml"))
    assert len(stored) == 1 and stored[0].read_text() == cfg.to_yaml()
    assert list(artifacts.rglob("checkpoint.pt"))
