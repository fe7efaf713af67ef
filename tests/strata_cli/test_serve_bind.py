"""``strata serve`` refuses a port in use or a host it cannot listen on in one line, before BentoML starts."""

from __future__ import annotations

import socket

import pytest
from typer.testing import CliRunner

from features.errors import StrataError
from strata_cli.cmd_serve import check_bindable
from strata_cli.main import app


def test_a_port_in_use_is_one_line_and_nothing_starts() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", "--host", "127.0.0.1", "--port", str(port)])
    assert result.exit_code == 2, result.output
    assert f"--port {port}: 127.0.0.1:{port} is already in use" in result.output
    assert "Traceback" not in result.output and "serving " not in result.output  # no banner before the failure


@pytest.mark.parametrize(("host", "words"), [("999.1.1.1", "--host 999.1.1.1"), ("10.255.255.1", "--host 10.255.255.1")])
def test_a_host_of_another_machine_is_refused(host: str, words: str) -> None:
    with pytest.raises(StrataError, match=words):
        check_bindable(host, 3000)


def test_a_free_port_passes() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    check_bindable("127.0.0.1", port)
