"""Hyperparameter search with Optuna, the only package that imports optuna: ``tune_file`` (what a
study searches), ``study`` (run, resume or join a study), one trial per ``trial``, with
``storage``, ``sampling``, ``heartbeat`` and ``parent_run`` around it; ``export``, ``plots`` and
``final`` after the search; ``trials_table`` for the report."""
