"""The MLflow UI command for this harness's store, so nobody has to remember the sqlite URI."""

from __future__ import annotations

import sys
from pathlib import Path

from nirbench.harness.tracking.store import default_tracking_uri


def ui_command(results_dir: Path, port: int = 5000) -> list[str]:
    """``mlflow ui`` pointed at the harness's store (or MLFLOW_TRACKING_URI when set)."""
    mlflow = Path(sys.executable).with_name("mlflow")
    return [
        str(mlflow) if mlflow.exists() else "mlflow",
        "ui",
        "--backend-store-uri",
        default_tracking_uri(results_dir),
        "--port",
        str(port),
    ]
