"""Schemathesis against the OpenAPI document the server publishes (``/docs.json``): no 5xx, ever.

Runs the ``st`` CLI (schemathesis 4) against the real ``strata serve`` process of ``conftest.py``. The
coverage phase sends boundary and schema-violating bodies derived from each schema; the fuzzing phase
adds up to ``MAX_EXAMPLES`` generated requests per operation. Checks: no server error, documented
status codes, content types and response schemas, schema-violating requests rejected, and the API key
enforced. ``positive_data_acceptance`` is left out on purpose: some schema-valid bodies are refused by
rules a JSON schema cannot state (raw rows must belong to the listed ``user_ids``; event types, amount
and timestamp limits come from the configuration), and those refusals are the intended 422s.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.server, pytest.mark.xdist_group("server")]

MAX_EXAMPLES = 500
MIN_CASES = 500
CHECKS_EXCLUDED = "positive_data_acceptance"


def _cases_per_operation(report: Path) -> dict[str, int]:
    counts: collections.Counter[str] = collections.Counter()
    for line in report.read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        finished = event.get("ScenarioFinished")
        if finished is None:
            continue
        recorder = finished.get("recorder") or {}
        counts[str(recorder.get("label"))] += len(recorder.get("cases") or {})
    return dict(counts)


def test_schemathesis_finds_no_server_error(api_server: Any, tmp_path: Path) -> None:
    report_dir = tmp_path / "schemathesis"
    cmd = [
        str(Path(sys.executable).with_name("st")), "run", f"{api_server.url}/docs.json",
        "--header", f"X-API-Key: {api_server.api_key}",
        "--max-examples", str(MAX_EXAMPLES),
        "--phases", "examples,coverage,fuzzing",
        "--exclude-checks", CHECKS_EXCLUDED,
        "--seed", "20241231",
        "--workers", "2",
        "--request-timeout", "30",
        "--report", "ndjson",
        "--report-dir", str(report_dir),
        "--generation-database", "none",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path,
                          env={**os.environ, "NO_COLOR": "1"})
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"schemathesis found problems:\n{output[-6000:]}\n--- server log ---\n{api_server.log_tail()}"
    assert "No issues found" in output, output[-3000:]
    counts = _cases_per_operation(next(report_dir.glob("*.ndjson")))
    for operation in ("POST /predict", "POST /predict/features"):
        assert counts.get(operation, 0) >= MIN_CASES, (operation, counts)
    # Operations with (almost) no input space get the cases their schemas allow: /admin/reload takes
    # only an optional constant, the GET routes nothing (schemathesis still varies headers and bodies).
    for operation in ("POST /admin/reload", "GET /metadata", "GET /readyz", "GET /livez", "GET /metrics"):
        assert counts.get(operation, 0) >= 1, (operation, counts)
