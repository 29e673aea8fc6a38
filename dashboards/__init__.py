"""Ways to look at results: launch helpers for the MLflow UI (the HTML report comes here too)."""
