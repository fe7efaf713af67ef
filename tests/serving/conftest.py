"""Fixtures for the API tests: a real trained model, a real online store and a real server process.

``trained_env`` trains a tiny model on synthetic data into an MLflow SQLite store under a temporary
directory (``training.train.train_model`` registers it as ``challenger``, ``training.registry.promote``
makes it ``champion``), batch-scores the users with ``serving.batch.run_batch`` into the online store,
and writes the configuration file. ``api_server`` starts ``strata serve`` on a free loopback port as a
subprocess and waits for ``/readyz``. All of it is built lazily: only tests that ask for these
fixtures pay for them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

API_KEY = "test-key-0123456789"
SCORE_AS_OF = pd.Timestamp("2024-12-31", tz="UTC")
N_USERS = 500
_READY_TIMEOUT_S = 120.0


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(root: Path, *, api_key: str | None = API_KEY, poll_seconds: float = 1.0,
                 tracking_db: Path | None = None, model_name: str = "strata", extra: str = "") -> Path:
    """A ``strata.toml`` for a tiny, fast model, MLflow and the online store under ``root``.

    ``extra`` lines are appended to the ``[serving]`` section.
    """
    db = tracking_db or root / "mlflow.db"
    key_line = f'api_key = "{api_key}"' if api_key else ""
    text = f"""
[labels]
n_cutoffs = 5

[training]
model_name = "{model_name}"
num_boost_round = 40
early_stopping_rounds = 10
min_data_in_leaf = 20
num_leaves = 15
min_users = 100
min_positives = 10

[tracking]
tracking_uri = "sqlite:///{db}"
artifact_dir = "{root / 'mlartifacts'}"

[serving]
online_store = "{root / 'online.db'}"
model_poll_seconds = {poll_seconds}
{key_line}
{extra}
"""
    path = root / "strata.toml"
    path.write_text(text, encoding="utf-8")
    return path


@dataclass
class TrainedEnv:
    """A trained and promoted model, its batch output and the online store it filled."""

    root: Path
    config_path: Path
    config: Any
    dataset: Any
    as_of: pd.Timestamp
    model_version: str
    batch_out: Path
    batch_scores: pd.DataFrame


@pytest.fixture(scope="session")
def trained_env(tmp_path_factory: pytest.TempPathFactory) -> TrainedEnv:
    from features.config import load_config
    from features.demo_data import generate_dataset
    from features.pipeline import build_features
    from serving.batch import read_scores, run_batch
    from serving.online_store import OnlineStore
    from serving.scorer import Scorer
    from training.pyfunc import load_bundle
    from training.registry import promote
    from training.train import train_model

    root = tmp_path_factory.mktemp("api_env")
    config_path = write_config(root)
    config = load_config(config_path)
    dataset = generate_dataset(n_users=N_USERS, end=SCORE_AS_OF, seed=11)
    result = train_model(dataset, config, as_of=SCORE_AS_OF)
    decision = promote(config)
    assert decision.promoted, decision.reason
    version = str(result.model_version)
    bundle = load_bundle(f"models:/{config.training.model_name}/{version}", config)
    scorer = Scorer(bundle, config, model_name=config.training.model_name, model_version=version,
                    model_alias="champion")
    out = root / "batch_out"
    run_batch(
        scorer,
        lambda: build_features(dataset, SCORE_AS_OF, config),
        out,
        run_args={"as_of": SCORE_AS_OF.isoformat(), "data": "demo seed 11"},
        online_store=OnlineStore(config.serving.online_store),
    )
    return TrainedEnv(root=root, config_path=config_path, config=config, dataset=dataset, as_of=SCORE_AS_OF,
                      model_version=version, batch_out=out, batch_scores=read_scores(out))


@dataclass
class RunningServer:
    """A ``strata serve`` subprocess on loopback."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    api_key: str | None = API_KEY
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.api_key:
            self.headers = {"X-API-Key": self.api_key}

    def client(self, **kwargs: Any) -> httpx.Client:
        """An HTTP client with the base URL and the API key header."""
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=kwargs.pop("timeout", 60.0), **kwargs)

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-n:])
        except OSError:
            return "<no log>"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_server(config_path: Path, cwd: Path, *, wait_ready: bool = True, api_key: str | None = API_KEY,
                 workers: int | None = None) -> RunningServer:
    """Start ``strata serve --config config_path`` on a free port; wait for /readyz (or just /livez)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("STRATA_API_KEY", "MLFLOW_TRACKING_URI")}
    env["PYTHONUNBUFFERED"] = "1"
    log_path = cwd / f"server-{port}.log"
    cmd = [sys.executable, "-m", "strata_cli.main", "serve", "--config", str(config_path),
           "--host", "127.0.0.1", "--port", str(port)]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    log = log_path.open("wb")
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = RunningServer(url=f"http://127.0.0.1:{port}", process=proc, log_path=log_path, api_key=api_key)
    probe = "/readyz" if wait_ready else "/livez"
    deadline = time.monotonic() + _READY_TIMEOUT_S
    with httpx.Client(base_url=server.url, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"strata serve exited with {proc.returncode}:\n{server.log_tail()}")
            try:
                if client.get(probe).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.25)
    server.stop()
    raise RuntimeError(f"strata serve not ready on {probe} after {_READY_TIMEOUT_S:.0f} s:\n{server.log_tail()}")


@pytest.fixture(scope="session")
def server_factory() -> Callable[..., RunningServer]:
    """:func:`start_server` (for tests that need a server of their own; they must ``stop()`` it)."""
    return start_server


@pytest.fixture(scope="session")
def config_writer() -> Callable[..., Path]:
    """:func:`write_config`."""
    return write_config


@pytest.fixture(scope="session")
def api_server(trained_env: TrainedEnv) -> Iterator[RunningServer]:
    server = start_server(trained_env.config_path, trained_env.root)
    try:
        yield server
    finally:
        server.stop()
