"""Feature-family subsets (``families=``) and the Parquet-backed engine give the full set's values."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from features.config import StrataConfig
from features.dataset import Dataset
from features.definitions import FAMILIES, feature_definitions, output_features, select_families
from features.demo_data import write_dataset
from features.errors import InputFileError
from features.pipeline import DuckDBEngine, build_features, feature_queries

AS_OF = pd.Timestamp("2024-03-01", tz="UTC")
CFG = StrataConfig()


@pytest.fixture(scope="module")
def full(demo_dataset: Dataset) -> pd.DataFrame:
    return build_features(demo_dataset, AS_OF, CFG)


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_alone_has_the_full_sets_values(demo_dataset: Dataset, full: pd.DataFrame, family: str) -> None:
    with DuckDBEngine(demo_dataset, copy=False) as engine:
        got = engine.features(AS_OF, CFG, families=[family])
    names = [d.name for d in output_features(CFG) if d.family == family]
    assert list(got.columns) == ["user_id", "as_of", *names]
    assert set(got["user_id"]) <= set(full["user_id"])
    want = full.set_index("user_id").loc[got["user_id"], ["as_of", *names]].reset_index()
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-12)


def test_rfm_subset_rows_are_the_users_with_orders_and_reads_only_orders(
    demo_dataset: Dataset, full: pd.DataFrame
) -> None:
    with DuckDBEngine(demo_dataset, copy=False) as engine:
        got = engine.features(AS_OF, CFG, families=["rfm"])
    o = demo_dataset.orders
    assert set(got["user_id"]) == set(o.loc[o["ordered_at"] <= AS_OF, "user_id"])
    sql = feature_queries(CFG, AS_OF, families=["rfm"])
    reads = set(re.findall(r"FROM (orders|events|users)\b", sql))
    assert reads == {"orders"} and "activity_rows" not in sql
    assert set(re.findall(r"FROM (orders|events|users)\b", feature_queries(CFG, AS_OF))) == {"orders", "events", "users"}


def test_derived_features_keep_what_they_read_as_hidden_intermediates() -> None:
    defs = select_families(feature_definitions(CFG), ["rhythm"])
    by_name = {d.name: d for d in defs}
    # overdue_ratio (rhythm) reads days_since_last_order (rfm): kept, but hidden
    assert by_name["days_since_last_order"].hidden and not by_name["overdue_ratio"].hidden
    assert by_name["paid_amount_total"].hidden and by_name["trend_orders_last"].hidden
    assert all(d.family == "rhythm" for d in defs if not d.hidden)
    assert select_families(feature_definitions(CFG), None) == feature_definitions(CFG)
    with pytest.raises(ValueError, match="unknown feature families"):
        select_families(feature_definitions(CFG), ["rfm", "astrology"])


def test_subset_transpiles_for_spark() -> None:
    sql = feature_queries(CFG, AS_OF, "spark", families=["rfm", "context"])
    assert "event_types" not in sql and "users" in sql


@pytest.fixture(scope="module")
def parquet_dir(demo_dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("parquet")
    write_dataset(demo_dataset, out, "parquet")
    return out


def test_parquet_engine_equals_the_frames_engine(parquet_dir: Path, full: pd.DataFrame) -> None:
    with DuckDBEngine.from_parquet(parquet_dir / "orders.parquet", parquet_dir / "events.parquet",
                                   parquet_dir / "users.parquet") as engine:
        assert not engine.has_duplicate_orders
        got = engine.features(AS_OF, CFG)
    pd.testing.assert_frame_equal(got, full, check_exact=False, rtol=1e-12)


def test_parquet_engine_orders_only_equals_frames(demo_dataset: Dataset, parquet_dir: Path) -> None:
    with DuckDBEngine.from_parquet(parquet_dir / "orders.parquet", orders_unique=True) as engine:
        assert engine.sources.events is None and engine.sources.users is None
        got = engine.features(AS_OF, CFG)
    want = build_features(Dataset(orders=demo_dataset.orders), AS_OF, CFG)
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-12)


def test_parquet_engine_finds_and_removes_duplicate_orders(demo_dataset: Dataset, tmp_path: Path) -> None:
    o = demo_dataset.orders
    dup = pd.concat([o, o.iloc[:50].assign(ordered_at=o["ordered_at"].iloc[:50] + pd.Timedelta(hours=1))],
                    ignore_index=True)
    dup.to_parquet(tmp_path / "orders.parquet")
    o.to_parquet(tmp_path / "clean.parquet")
    with DuckDBEngine.from_parquet(tmp_path / "orders.parquet") as engine:
        assert engine.has_duplicate_orders
        got = engine.features(AS_OF, CFG)
    with DuckDBEngine.from_parquet(tmp_path / "clean.parquet") as engine:
        assert not engine.has_duplicate_orders
        pd.testing.assert_frame_equal(got, engine.features(AS_OF, CFG))


def test_parquet_engine_names_missing_files_and_columns(demo_dataset: Dataset, tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match=r"nope\.parquet: file not found \(the orders table\)"):
        DuckDBEngine.from_parquet(tmp_path / "nope.parquet")
    demo_dataset.orders.drop(columns=["amount"]).to_parquet(tmp_path / "orders.parquet")
    with pytest.raises(InputFileError, match=r"orders\.parquet: missing required column\(s\) 'amount'"):
        DuckDBEngine.from_parquet(tmp_path / "orders.parquet")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(InputFileError, match=r"bad\.parquet: not a readable Parquet file"):
        DuckDBEngine.from_parquet(tmp_path / "bad.parquet")
