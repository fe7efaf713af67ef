"""The engine comparison measures the product's events pass, and its checksums read what they claim.

Not a timed test. chDB and Polars are not project dependencies, so only the DuckDB side runs here (the
other engines' queries are checked against DuckDB by the benchmark itself, through the same checksums).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

from features.config import StrataConfig
from features.pipeline import DuckDBEngine

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
CFG = StrataConfig()
USERS = 2000


@pytest.fixture(scope="module")
def mods(bench_script: Callable[[str], ModuleType]) -> tuple[ModuleType, ModuleType]:
    return bench_script("bench_features"), bench_script("bench_engines")


@pytest.fixture(scope="module")
def cache(mods: tuple[ModuleType, ModuleType], tmp_path_factory: pytest.TempPathFactory) -> Path:
    bf, _ = mods
    root = tmp_path_factory.mktemp("engines")
    bf.generate(bf._data_dir(root, USERS, 42, bf.ORDER_RATE, bf.EVENT_RATE), USERS, 42, bf.ORDER_RATE,
                bf.EVENT_RATE, chunk=USERS)
    return root


def test_duckdb_events_pass_is_the_products_and_checksums_unpack_it(mods: tuple[ModuleType, ModuleType],
                                                                   cache: Path) -> None:
    bf, be = mods
    data = bf._data_dir(cache, USERS, 42, bf.ORDER_RATE, bf.EVENT_RATE)
    spec = be._spec()
    sums = be._checksums(be._duckdb(spec, data / "events.parquet", bare=False), spec, bare=False)
    bare = be._checksums(be._duckdb(spec, data / "events.parquet", bare=True), spec, bare=True)
    with DuckDBEngine.from_parquet(data / "orders.parquet", data / "events.parquet", data / "users.parquet") as engine:
        features = engine.features(bf.AS_OF, CFG)
    events = pd.read_parquet(data / "events.parquet")
    seen = events[events["occurred_at"] <= bf.AS_OF]
    assert sums["users"] == bare["users"] == seen["user_id"].nunique()
    assert sums["events_total"] == bare["events_total"] == len(seen) == features["events_total"].sum()
    for key in ("events_page_view_30d", "events_page_view_90d"):
        assert sums[key] == features[key].sum() > 0, key
    assert sums["events_page_view_decay_hl90"] == pytest.approx(features["events_page_view_decay_hl90"].sum(), rel=1e-12)


def test_driver_reports_duckdb_and_skips_an_engine_that_is_not_installed(cache: Path) -> None:
    script = BENCH / "bench_engines.py"
    missing = "chdb" if importlib.util.find_spec("chdb") is None else None
    engines = "duckdb" + (f",{missing}" if missing else "")
    proc = subprocess.run([sys.executable, str(script), "--users", str(USERS), "--cache", str(cache), "--repeat", "1",
                           "--engines", engines], capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("duckdb ")]
    assert len(rows) == 1 and rows[0].endswith("x"), proc.stdout
    if missing:
        assert f"{missing}: skipped" in proc.stdout
    bad = subprocess.run([sys.executable, str(script), "--users", "7", "--cache", str(cache)],
                         capture_output=True, text=True, check=False, timeout=120)
    assert bad.returncode != 0 and "bench_features.py --users 7" in bad.stderr
