"""The feature benchmark's baselines compute what the pipeline computes, and its data generation holds.

Not a timed test: it checks that the pandas RFM baselines give the same values as the DuckDB RFM
subset they are compared with (so the comparison is like for like), that the bare aggregate counts
what it claims, and that chunked generation keeps ids unique.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from features.config import StrataConfig
from features.pipeline import DuckDBEngine

CFG = StrataConfig()


@pytest.fixture(scope="module")
def bf(bench_script: Callable[[str], ModuleType]) -> ModuleType:
    return bench_script("bench_features")


@pytest.fixture(scope="module")
def data(bf: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "d"
    bf.generate(out, 3000, 42, bf.ORDER_RATE, bf.EVENT_RATE, chunk=1200)  # three chunks
    return out


def test_chunked_generation_keeps_ids_unique_and_counts(bf: ModuleType, data: Path) -> None:
    stats = json.loads((data / "generated.json").read_text())
    orders = pd.read_parquet(data / "orders.parquet")
    events = pd.read_parquet(data / "events.parquet")
    users = pd.read_parquet(data / "users.parquet")
    assert (len(orders), len(events), len(users)) == (stats["rows_orders"], stats["rows_events"], 3000)
    assert users["user_id"].is_unique and orders["order_id"].is_unique
    assert set(orders["user_id"]) <= set(users["user_id"]) and set(events["user_id"]) <= set(users["user_id"])
    assert 15 < len(orders) / 3000 < 25 and 50 < len(events) / 3000 < 70
    assert stats["peak_rss_bytes"] > 0


def test_pandas_baselines_equal_the_duckdb_rfm_subset(bf: ModuleType, data: Path) -> None:
    with DuckDBEngine.from_parquet(data / "orders.parquet") as engine:
        rfm = engine.features(bf.AS_OF, CFG, families=["rfm"]).set_index("user_id")
    orders = pd.read_parquet(data / "orders.parquet", columns=bf.PANDAS_COLUMNS)
    windows = list(CFG.features.windows_days)
    plain = bf.pandas_rfm_straightforward(orders, bf.AS_OF, windows)
    assert list(plain.index) == list(rfm.index)
    for col in plain.columns:
        np.testing.assert_allclose(plain[col].to_numpy(float), rfm[col].to_numpy(), rtol=1e-9, err_msg=col)
    vec = bf.pandas_rfm_vectorised(orders, bf.AS_OF, windows)
    pairs = {("paid", "sum"): "orders_total", ("signed", "sum"): "spend_total",
             ("paid_amount", "max"): "max_order_value", ("paid_age", "min"): "days_since_last_order",
             **{(f"spend_{w}d", "sum"): f"spend_{w}d" for w in windows}}
    assert list(vec.index) == list(rfm.index)
    for src, col in pairs.items():
        np.testing.assert_allclose(vec[src].to_numpy(float), rfm[col].fillna(np.nan).to_numpy(), rtol=1e-9, err_msg=col)
    np.testing.assert_allclose(vec["first_order_value"].to_numpy(float), rfm["first_order_value"].to_numpy(), rtol=1e-9)


def test_bare_aggregate_counts_the_rows_at_or_before_as_of(bf: ModuleType, data: Path) -> None:
    with DuckDBEngine.from_parquet(data / "orders.parquet", data / "events.parquet", orders_unique=True) as engine:
        bare = engine.query(bf.bare_sql(True, bf.AS_OF))
    orders = pd.read_parquet(data / "orders.parquet")
    events = pd.read_parquet(data / "events.parquet")
    assert bare["n_orders"].sum() == (orders["ordered_at"] <= bf.AS_OF).sum()
    assert bare["n_events"].sum() == (events["occurred_at"] <= bf.AS_OF).sum()


@pytest.mark.parametrize("method", ["full", "full_unique", "bare", "rfm", "pandas", "pandas_vec", "stage_orders",
                                    "stage_paid_orders", "stage_events", "bare_orders", "bare_events"])
def test_every_method_runs(bf: ModuleType, data: Path, method: str) -> None:
    assert method in (*bf.METHODS, *bf.STAGE_METHODS)
    rows_in, rows_out = bf.run_method(method, data, bf.AS_OF)
    assert rows_in > 0 and rows_out > 0


def test_the_bare_aggregate_is_its_two_one_table_parts_joined(bf: ModuleType, data: Path) -> None:
    with DuckDBEngine.from_parquet(data / "orders.parquet", data / "events.parquet", orders_unique=True) as engine:
        bare = engine.query(bf.bare_sql(True, bf.AS_OF))
        orders = engine.query(bf.bare_table_sql("orders", bf.AS_OF))
        events = engine.query(bf.bare_table_sql("events", bf.AS_OF))
    assert bare["n_orders"].sum() == orders["n_orders"].sum() and bare["n_events"].sum() == events["n_events"].sum()
    assert bare["user_id"].notna().sum() == len(set(orders["user_id"]) | set(events["user_id"]))


def test_the_whole_command_is_measured_in_a_child_and_writes_every_user(bf: ModuleType, data: Path) -> None:
    result = bf.Result("command")
    bf._measure_command(result, data)
    _, users_out = bf.run_method("full_unique", data, bf.AS_OF)
    assert result.rows_out == users_out  # the command's table has the users of the feature query
    assert result.rows_in == sum(len(pd.read_parquet(data / f"{t}.parquet", columns=["user_id"]))
                                 for t in ("orders", "events", "users"))
    assert result.wall[0] > 0 and result.cpu[0] > 0
    assert 50 * 2**20 < result.peak[0] < 8 * 2**30  # the child's own peak (an interpreter and its imports at least)
