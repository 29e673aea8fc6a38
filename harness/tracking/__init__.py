"""Where runs are recorded: ``store`` (the MLflow tracker, the only module that imports mlflow)
and ``run_lock`` (one process per configuration)."""
