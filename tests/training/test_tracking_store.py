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


@pytest.mark.parametrize("uri", ["sqlite:///:memory:", "databricks", "file:///tmp/x"])
def test_other_stores_are_left_to_mlflow(uri: str) -> None:
    check_local_store(uri)


def test_training_stops_before_fitting_when_the_store_cannot_work(tmp_path: Path) -> None:
    from training.train import train_model

    # no data at all: reaching the training set would fail differently
    with pytest.raises(TrackingError, match="does not exist"):
        train_model(None, _config(f"sqlite:///{tmp_path}/nope/mlflow.db"))  # type: ignore[arg-type]


def test_an_unreachable_tracking_server_fails_at_once(tmp_path: Path) -> None:
    import socket
    import time

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(TrackingError, match=rf"tracking server http://127.0.0.1:{port}: cannot be reached"):
        configure_tracking(_config(f"http://127.0.0.1:{port}"))
    assert time.monotonic() - started < 10  # MLflow alone retried for minutes


def test_a_listening_server_passes_the_check() -> None:
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_local_store(f"http://127.0.0.1:{server.getsockname()[1]}/")
