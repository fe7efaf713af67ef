"""``strata serve``: start the online prediction API (the BentoML service ``serving.service:StrataService``)."""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from features.errors import StrataError
from strata_cli.app import ConfigOpt, app, console, handle_errors

SERVICE_IMPORT = "serving.service:StrataService"
SERVICE_NAME = "strata"
#: Same value as ``serving.service.CONFIG_ENV`` (not imported: that module loads BentoML).
CONFIG_ENV = "STRATA_CONFIG"


def serve_command(
    host: str, port: int, config_path: Path | None, workers: int | None
) -> tuple[list[str], dict[str, str]]:
    """The ``bentoml serve`` command line and environment that ``strata serve`` runs.

    The configuration file travels in ``STRATA_CONFIG`` (absolute path), BentoML's usage tracking is
    switched off (no network calls), and ``workers`` (processes) goes in ``BENTOML_CONFIG_OVERRIDES``.

    ``BENTOML_HOME`` is a directory of this host and port (:func:`server_home`): BentoML keeps the
    Prometheus files behind ``/metrics`` in ``$BENTOML_HOME/prometheus_multiproc_dir`` and empties that
    directory whenever a server starts, so servers sharing one home (two ports, blue/green, a test
    suite) would wipe each other's counters. The service needs nothing else from BentoML's home (the
    model comes from MLflow, the features from the online store).
    """
    env = dict(os.environ)
    # The service must read the configuration this command read (./strata.toml or the defaults when
    # --config is not given), not one left in the environment.
    env.pop(CONFIG_ENV, None)
    if config_path is not None:
        env[CONFIG_ENV] = str(config_path.resolve())
    env["BENTOML_DO_NOT_TRACK"] = "True"
    env["BENTOML_HOME"] = str(server_home(host, port))
    if workers is not None:
        overrides = json.loads(env.get("BENTOML_CONFIG_OVERRIDES") or "{}")
        overrides.setdefault("services", {}).setdefault(SERVICE_NAME, {})["workers"] = workers
        env["BENTOML_CONFIG_OVERRIDES"] = json.dumps(overrides)
    cmd = [sys.executable, "-m", "bentoml", "serve", SERVICE_IMPORT, "--host", host, "--port", str(port)]
    return cmd, env


def check_bindable(host: str, port: int) -> None:
    """Refuse a host or port the server could not listen on, in one line, before BentoML starts (it would print
    a long traceback from its process manager instead). The server binds the same way just after."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        raise StrataError(f"--host {host}: not an address or host name of this machine ({err}); e.g. 127.0.0.1 "
                          "or 0.0.0.0") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise StrataError(f"--port {port}: {host}:{port} is already in use (another server?); stop it or "
                                  "choose another --port") from None
            if err.errno == errno.EACCES:
                raise StrataError(f"--port {port}: not allowed to listen on {host}:{port} (ports below 1024 need "
                                  "privileges); choose another --port") from None
            raise StrataError(f"--host {host}: cannot listen on {host}:{port} ({err.strerror}); use an address of "
                              "this machine, e.g. 127.0.0.1 or 0.0.0.0") from None


def server_home(host: str, port: int) -> Path:
    """BentoML's home for the server on ``host:port``, created if needed: one per port, reused across restarts."""
    import tempfile

    safe_host = "".join(c if c.isalnum() or c in ".-" else "_" for c in host)
    home = Path(tempfile.gettempdir()) / "strata-serve" / f"{safe_host}-{port}"
    home.mkdir(parents=True, exist_ok=True)
    return home


@app.command("serve")
@handle_errors
def serve(
    config: ConfigOpt = None,
    host: Annotated[
        str | None, typer.Option("--host", help="Interface to bind (default: serving.host, 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", min=1, max=65535, help="TCP port (default: serving.port, 3000).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, max=64, help="Worker processes (default: 1).")
    ] = None,
) -> None:
    """Serve online predictions over HTTP (BentoML): /predict, /predict/features, /metadata, /readyz.

    The model is the registry's champion alias (followed while serving); features come from the online
    store (serving.online_store, filled by batch scoring). Set STRATA_API_KEY (or serving.api_key) to
    require an X-API-Key header. See docs/api.md.
    """
    from features.config import load_config

    cfg = load_config(config)
    bind_host = host or cfg.serving.host
    bind_port = port or cfg.serving.port
    check_bindable(bind_host, bind_port)
    cmd, env = serve_command(bind_host, bind_port, config, workers)
    key_note = "X-API-Key required" if (env.get("STRATA_API_KEY") or cfg.serving.api_key) else "no API key (open)"
    console.print(
        f"serving [bold]{escape(cfg.training.model_name)}@champion[/] on http://{escape(bind_host)}:{bind_port} ({key_note}); "
        f"online store {escape(cfg.serving.online_store)}",
        highlight=False,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    # Replace this process so that signals (Ctrl-C, SIGTERM from a supervisor) reach the server directly.
    os.execvpe(cmd[0], cmd, env)
