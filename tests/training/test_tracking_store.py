"""A tracking store that cannot work is refused in one line, before any model is fitted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from features.config import config_from_dict
from training.tracking import TrackingError, check_local_store, configure_tracking


def _config(uri: str):  # noqa: ANN202
    return config_from_dict({"tracking": {"tracking_uri": uri}})


def test_a_missing_directory_is_named_and_not_created(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/typo/mlflow.db"
    with pytest.raises(TrackingError, match="directory .*typo does not exist"):
        configure_tracking(_config(uri))
    assert not (tmp_path / "typo").exists()  # MLflow would have created it, and an empty registry in it


def test_a_location_that_is_not_writable_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # tests run as root, for whom permissions do not stop writes: os.access stands in for a read-only mount
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path else real(p, mode))
    with pytest.raises(TrackingError, match="is not writable; run from a writable directory"):
        check_local_store(f"sqlite:///{tmp_path}/mlflow.db")
    (tmp_path / "mlflow.db").touch()  # an existing database file is checked itself
    check_local_store(f"sqlite:///{tmp_path}/mlflow.db")


@pytest.mark.parametrize("uri", ["http://mlflow:5000", "sqlite:///:memory:", "databricks", "file:///tmp/x"])
def test_other_stores_are_left_to_mlflow(uri: str) -> None:
    check_local_store(uri)


def test_training_stops_before_fitting_when_the_store_cannot_work(tmp_path: Path) -> None:
    from training.train import train_model

    # no data at all: reaching the training set would fail differently
    with pytest.raises(TrackingError, match="does not exist"):
        train_model(None, _config(f"sqlite:///{tmp_path}/nope/mlflow.db"))  # type: ignore[arg-type]
