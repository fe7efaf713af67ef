"""Smoke run of the batch-scoring memory benchmark (benchmarks/bench_scoring_memory.py) at a tiny size.

Not a timed or memory-judging test: it checks that the script trains a bundle, runs each size in a fresh
process and prints a peak per size and the ratio line, so that a change to batch scoring cannot leave the
benchmark broken.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_scoring_memory.py"

pytestmark = [pytest.mark.slow]


def test_bench_scoring_memory_runs_at_a_tiny_size(tmp_path: Path) -> None:
    cmd = [sys.executable, str(SCRIPT), "--users", "3000,1500", "--bundle", str(tmp_path / "bundle"),
           "--train-users", "1500"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    peaks = re.findall(r"^\s+([\d,]+) users  peak\s+([\d.]+) GiB", done.stdout, re.MULTILINE)
    assert [int(n.replace(",", "")) for n, _ in peaks] == [1500, 3000], done.stdout  # smallest first
    assert all(float(gib) > 0.05 for _, gib in peaks)  # a real process's resident memory, not a placeholder
    assert re.search(r"3,000 vs 1,500 users \(2\.0x\): peak memory [\d.]+x", done.stdout), done.stdout
