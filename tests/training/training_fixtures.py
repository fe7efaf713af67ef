"""Shared, cached inputs of the training tests: quick configurations and one fitted demo bundle.

Cached per process (``lru_cache``) so that several test modules reuse one training set and one fit.
Callers must not mutate what these return.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from features.config import StrataConfig, config_from_dict
from features.dataset import Dataset

DEMO_END = pd.Timestamp("2024-12-31", tz="UTC")
FAST_TRAINING: dict[str, Any] = {
    "num_boost_round": 80,
    "early_stopping_rounds": 10,
    "min_data_in_leaf": 20,
    "num_leaves": 15,
    "min_users": 100,
    "min_positives": 10,
}
#: A deliberately weak model: two stumps.
WEAK_TRAINING: dict[str, Any] = {**FAST_TRAINING, "num_boost_round": 2, "num_leaves": 2, "learning_rate": 0.01}


def fast_config(**training: Any) -> StrataConfig:
    """Default configuration with quick training settings; keyword arguments override ``[training]``."""
    return config_from_dict({"training": {**FAST_TRAINING, **training}})


def config_toml(training: dict[str, Any]) -> str:
    """A ``strata.toml`` text with the given ``[training]`` section."""
    lines = ["[training]"]
    for k, v in training.items():
        lines.append(f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"')
    return "\n".join(lines) + "\n"


@lru_cache(maxsize=1)
def demo_data() -> Dataset:
    """The same synthetic data as the ``demo_dataset`` fixture (2,000 users, seed 7, up to 2024-12-31)."""
    from features.demo_data import generate_dataset

    return generate_dataset(n_users=2000, end=DEMO_END, seed=7)


@lru_cache(maxsize=1)
def demo_training_data() -> Any:
    from training.train import prepare_training_data

    return prepare_training_data(demo_data(), fast_config(), as_of=DEMO_END)


@lru_cache(maxsize=1)
def demo_fit() -> Any:
    """A :class:`training.train.FitResult` on the demo training set (no MLflow)."""
    from training.train import fit_bundle

    return fit_bundle(demo_training_data())


@lru_cache(maxsize=1)
def _empty_store() -> Path:
    """An initialised, empty MLflow SQLite store (its schema migrations take seconds; copying takes none)."""
    import mlflow

    directory = tempfile.mkdtemp(prefix="strata-mlflow-template-")
    atexit.register(shutil.rmtree, directory, True)  # one per test process; nothing left in /tmp
    path = Path(directory) / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


def isolate_tracking(monkeypatch: pytest.MonkeyPatch, directory: Path, fresh_store: bool = False) -> None:
    """Run MLflow against ``directory`` (default SQLite store and artifacts there).

    Unless ``fresh_store``, ``directory/mlflow.db`` starts as a copy of an empty initialised store.
    """
    monkeypatch.chdir(directory)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if not fresh_store and not (directory / "mlflow.db").exists():
        shutil.copyfile(_empty_store(), directory / "mlflow.db")
