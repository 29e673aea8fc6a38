"""Every trial of one or more Optuna studies as one tidy frame, for the report's tuning figures.
Lives in harness/search/ because this package is the only one that imports optuna."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def load_trials(paths: list[Path]) -> pd.DataFrame:
    """Every trial of every study in ``paths`` as one tidy frame (study, direction, number, state,
    value, param_<name>). Optuna is imported only here and only when a study file exists: it is
    slow to import and the report must not depend on it otherwise."""
    if not paths:
        return pd.DataFrame()
    import optuna
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    frames = []
    for path in paths:
        storage = (
            RDBStorage(f"sqlite:///{path.resolve()}")
            if path.suffix in (".db", ".sqlite3")
            else JournalStorage(JournalFileBackend(str(path)))
        )
        for name in optuna.get_all_study_names(storage):
            study = optuna.load_study(study_name=name, storage=storage)
            if len(study.directions) != 1:
                raise ValueError(
                    f"study {name!r} in {path} is multi-objective; the report plots "
                    f"single-objective studies only"
                )
            frames.append(
                pd.DataFrame(
                    [
                        {
                            "study": name,
                            "direction": study.direction.name,
                            "number": t.number,
                            "state": t.state.name,
                            "value": t.value,
                            **{f"param_{k}": v for k, v in t.params.items()},
                        }
                        for t in study.trials
                    ]
                )
            )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
