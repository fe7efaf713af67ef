"""MLflow tracking set-up, done explicitly at entry points (never at import).

Where runs go, in order of precedence:

1. ``[tracking] tracking_uri`` in the configuration, if set;
2. the ``MLFLOW_TRACKING_URI`` environment variable, if set;
3. ``sqlite:///<workdir>/mlflow.db`` (no server needed), with artifacts in ``<workdir>/mlartifacts``
   (``[tracking] artifact_dir``; relative to the working directory).

The model registry uses the same store.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from features.config import StrataConfig
from features.errors import StrataError

log = logging.getLogger(__name__)

TRACKING_ENV = "MLFLOW_TRACKING_URI"
PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


class TrackingError(StrataError):
    """The MLflow tracking store cannot be used (bad URI, deleted experiment...)."""


def resolve_tracking_uri(config: StrataConfig, workdir: str | Path | None = None) -> str:
    """The tracking URI to use (see the module docstring); ``workdir`` defaults to the current directory."""
    if config.tracking.tracking_uri:
        return config.tracking.tracking_uri
    env = os.environ.get(TRACKING_ENV)
    if env:
        return env
    base = Path(workdir) if workdir is not None else Path.cwd()
    return f"sqlite:///{(base / 'mlflow.db').resolve()}"


#: Seconds to wait for a tracking server to accept a connection before saying it cannot be reached.
SERVER_CONNECT_TIMEOUT_S = 5.0


def check_tracking_server(uri: str, timeout: float = SERVER_CONNECT_TIMEOUT_S) -> None:
    """Refuse an ``http(s)://`` tracking server that does not accept a connection within ``timeout`` seconds.

    MLflow itself retries a refused connection with a growing back-off for minutes before it fails; one
    connection attempt says the same at once (the server's own answers are still MLflow's business)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            pass
    except OSError as err:
        reason = err.strerror or str(err) or type(err).__name__
        raise TrackingError(f"MLflow tracking server {uri}: cannot be reached ({reason.lower()}); start it, or fix "
                            f"[tracking] tracking_uri or {TRACKING_ENV}") from None


def sqlite_database(uri: str) -> Path | None:
    """The database file of a ``sqlite:///path`` tracking URI; None for any other store (in-memory included)."""
    if not uri.lower().startswith("sqlite:"):
        return None
    path = uri.split(":", 1)[1].removeprefix("///")
    if path in ("", ":memory:") or path.startswith("file:"):
        return None
    return Path(path)


def missing_local_store(config: StrataConfig, workdir: str | Path | None = None) -> Path | None:
    """The SQLite database of the configured tracking store when it does not exist yet, else None.

    Commands that only read the registry (``strata models``, ``promote``, ``rollback``) check this first, so
    that they do not create an empty database and experiment where nothing was ever trained."""
    db = sqlite_database(resolve_tracking_uri(config, workdir))
    return db if db is not None and not db.exists() else None


def check_local_store(uri: str) -> None:
    """Refuse a tracking store that cannot work, before anything is computed: a SQLite database whose directory
    does not exist (MLflow would create it, and an empty registry, from a typo) or is not writable, or a
    tracking server that cannot be reached (:func:`check_tracking_server`)."""
    check_tracking_server(uri)
    db = sqlite_database(uri)
    if db is None:
        return
    if not db.parent.is_dir():
        raise TrackingError(f"MLflow tracking store {uri}: the directory {db.parent} does not exist; create it, or "
                            f"fix [tracking] tracking_uri or {TRACKING_ENV}")
    target = db if db.exists() else db.parent
    if not os.access(target, os.W_OK):
        raise TrackingError(f"MLflow tracking store {uri}: {target} is not writable; run from a writable directory, "
                            f"or set [tracking] tracking_uri or {TRACKING_ENV}")


def artifact_location(config: StrataConfig, tracking_uri: str, workdir: str | Path | None = None) -> str | None:
    """Artifact root for a new experiment: ``file://<workdir>/<artifact_dir>`` for local stores, else None.

    A remote tracking server (``http(s)://``, ``databricks``) chooses its own artifact store.
    """
    if not (tracking_uri.startswith("sqlite:") or tracking_uri.startswith("file:") or "://" not in tracking_uri):
        return None
    base = Path(workdir) if workdir is not None else Path.cwd()
    path = Path(config.tracking.artifact_dir)
    if not path.is_absolute():
        path = base / path
    return path.resolve().as_uri()


def configure_tracking(config: StrataConfig, workdir: str | Path | None = None) -> str:
    """Point MLflow (tracking and registry) at the configured store and select the experiment.

    Also turns MLflow's artifact-download progress bars off unless ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR``
    is set.

    Creates the experiment ``[tracking] experiment_name`` if needed (with the artifact root of
    :func:`artifact_location`). Returns the experiment id.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = resolve_tracking_uri(config, workdir)
    check_local_store(uri)
    # Artifact downloads (model loading, promotion) would otherwise draw tqdm bars on stderr.
    os.environ.setdefault(PROGRESS_BAR_ENV, "false")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    name = config.tracking.experiment_name
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            exp_id = client.create_experiment(name, artifact_location=artifact_location(config, uri, workdir))
            log.info("created MLflow experiment %r (%s) in %s", name, exp_id, uri)
        elif exp.lifecycle_stage == "deleted":
            raise TrackingError(
                f"MLflow experiment {name!r} in {uri} is deleted: restore it (mlflow experiments restore) "
                "or set [tracking] experiment_name to another name"
            )
        else:
            exp_id = exp.experiment_id
    except MlflowException as err:
        raise TrackingError(f"MLflow tracking store {uri}: {err.message}") from None
    except Exception as err:  # SQLAlchemy's errors (a locked or unreadable database file...): one line, not a trace
        if not type(err).__module__.startswith("sqlalchemy"):
            raise
        reason = str(getattr(err, "orig", None) or err).splitlines()[0]
        raise TrackingError(f"MLflow tracking store {uri}: cannot be used ({reason}); check the file, or set "
                            f"[tracking] tracking_uri or {TRACKING_ENV}") from None
    mlflow.set_experiment(experiment_id=exp_id)
    return str(exp_id)


def tracking_client(config: StrataConfig, workdir: str | Path | None = None):  # noqa: ANN201  (mlflow imported lazily)
    """An ``MlflowClient`` on the configured store (tracking and registry), after :func:`configure_tracking`."""
    import mlflow

    configure_tracking(config, workdir)
    uri = mlflow.get_tracking_uri()
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
