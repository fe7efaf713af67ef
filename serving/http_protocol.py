"""The API's error shape for requests that are not valid HTTP at all.

A request whose request line or headers cannot be parsed never reaches the ASGI app (and so never reaches
:mod:`serving.security`'s guard): uvicorn answers it itself, with a plain-text ``400`` ("Invalid HTTP request
received."). :func:`install` replaces that answer, in uvicorn's h11 protocol (the one BentoML's worker runs
here) and in its httptools protocol when that is installed, with the body every other refused request gets:
``{"error": {"code": "bad_request", ...}}`` as JSON, then the connection is closed, as uvicorn does.

uvicorn offers no setting for this, and BentoML builds uvicorn's ``Config`` itself, so the protocol classes'
``send_400_response`` method is replaced. ``StrataService.__init__`` calls :func:`install` in the worker
when the service is created at start-up, before uvicorn accepts a connection (not at import: importing the
module changes nothing). A test sends malformed requests to a real server and checks
the JSON answer, so an uvicorn upgrade that moves the method shows up there.
"""

from __future__ import annotations

import importlib
from typing import Any

MALFORMED_HTTP_MESSAGE = "the request is not valid HTTP/1.1: its request line or headers could not be parsed"

#: uvicorn's HTTP/1.1 protocol modules and the class in each whose 400 answer is replaced.
_PROTOCOLS = (
    ("uvicorn.protocols.http.h11_impl", "H11Protocol"),
    ("uvicorn.protocols.http.httptools_impl", "HttpToolsProtocol"),
)


def malformed_request_response() -> bytes:
    """The whole HTTP/1.1 response (status line, headers, JSON body) sent for an unparsable request."""
    from serving.security import encode_error

    body = encode_error(400, MALFORMED_HTTP_MESSAGE)
    head = (b"HTTP/1.1 400 Bad Request\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n"
            b"connection: close\r\n\r\n")
    return head + body


def _send_json_400(self: Any, msg: str) -> None:
    # uvicorn's own message (``msg``) is generic too; the JSON body says the same, in the API's shape
    self.transport.write(malformed_request_response())
    self.transport.close()


def install() -> list[str]:
    """Replace uvicorn's plain-text 400 with the JSON error; returns the protocol classes patched."""
    patched = []
    for module_name, class_name in _PROTOCOLS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # httptools is optional: uvicorn only uses what is installed
            continue
        cls = getattr(module, class_name, None)
        if cls is not None and hasattr(cls, "send_400_response"):
            cls.send_400_response = _send_json_400
            patched.append(f"{module_name}.{class_name}")
    return patched
