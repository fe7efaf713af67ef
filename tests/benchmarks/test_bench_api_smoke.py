"""Smoke run of the API load benchmark (benchmarks/bench_api.py) at a tiny size.

Not a timed test: it checks that the script trains, batch-scores and starts both servers, loads them,
and prints the table and the verdict lines with zero errors, so that a change to the service or the
configuration cannot leave the benchmark broken. The figures themselves are not judged here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_api.py"

pytestmark = [pytest.mark.server, pytest.mark.slow]


def test_bench_api_runs_end_to_end_at_a_tiny_size(tmp_path: Path) -> None:
    cmd = [sys.executable, str(SCRIPT), "--users", "1500", "--store-users", "3000", "--sample", "200",
           "--duration", "1", "--rounds", "1", "--connections", "4", "--skip-cached"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout
    rows = {m.group(1): m.groups() for m in re.finditer(
        r"^(strata /predict \(uncached\)|fastapi baseline \(raw LightGBM\))\s+4\s+(\d+)\s+[\d.]+\s+[\d.]+\s+(\d+)\s+(\d+)",
        out, re.MULTILINE)}
    assert set(rows) == {"strata /predict (uncached)", "fastapi baseline (raw LightGBM)"}, out[-2000:]
    for name, req_s, errors, cpu_us in rows.values():
        assert int(req_s) > 0 and int(cpu_us) > 0, name
        assert int(errors) == 0, name
    assert re.search(r"4 connections, strata \(uncached, headline\): \d+ req/s, p99 [\d.]+ ms, 0 errors; "
                     r"[\d.]+x the floor's throughput", out), out[-2000:]
    assert "scoring.tree_engine = compiled" in out  # the configuration's default engine
