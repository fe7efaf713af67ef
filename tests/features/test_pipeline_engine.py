"""The DuckDB engine's shortcuts: known-unique orders, Arrow fetch, active days as bits; same values as without."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.config import ConfigError, StrataConfig, config_from_dict
from features.dataset import Dataset
from features.demo_data import generate_dataset
from features.errors import EngineMemoryError
from features.pipeline import DuckDBEngine, build_features, feature_queries
from features.validation import load_dataset

AS_OF = pd.Timestamp("2024-07-01", tz="UTC")
CFG = StrataConfig()


def days_ago(*days: float) -> list[pd.Timestamp]:
    return [AS_OF - pd.Timedelta(days=d) for d in days]


def test_validated_orders_are_unique_so_skipping_the_check_changes_nothing(tmp_path: Path) -> None:
    # duplicate ids (same user, other user, refund row) and a missing id: validation rejects them all
    (tmp_path / "orders.csv").write_text(
        "user_id,order_id,ordered_at,amount,status\n"
        "a,o1,2024-06-01T10:00:00Z,10,paid\n"
        "a,o1,2024-06-01T10:00:00Z,10,paid\n"
        "b,o1,2024-06-02T10:00:00Z,20,paid\n"
        "a,o1,2024-06-03T10:00:00Z,10,refunded\n"
        "a,,2024-06-04T10:00:00Z,5,paid\n"
        "b,o2,2024-06-05T10:00:00Z,7,paid\n"
    )
    dataset, report = load_dataset(tmp_path, config=CFG, now="2024-07-01")
    assert report.tables["orders"].n_rejected == 4
    with DuckDBEngine(dataset, copy=False) as checked:
        assert not checked.has_duplicate_orders  # what the CLI relies on when it passes orders_unique=True
        want = checked.features(AS_OF, CFG)
    with DuckDBEngine(dataset, copy=False, orders_unique=True) as trusted:
        pd.testing.assert_frame_equal(trusted.features(AS_OF, CFG), want)
    assert want.set_index("user_id").loc["a", "orders_total"] == 1


def test_orders_unique_skips_the_duplicate_check() -> None:
    orders = pd.DataFrame({"user_id": ["a", "a"], "order_id": ["o1", "o1"], "ordered_at": days_ago(3, 3),
                           "amount": [10.0, 10.0], "status": ["paid", "paid"]})
    ds = Dataset(orders=orders)
    with DuckDBEngine(ds) as engine:
        assert engine.has_duplicate_orders
        assert engine.features(AS_OF, CFG).loc[0, "orders_total"] == 1
    with DuckDBEngine(ds, orders_unique=True) as engine:
        assert not engine.has_duplicate_orders  # the caller's promise is taken as given
        assert engine.features(AS_OF, CFG).loc[0, "orders_total"] == 2


def test_arrow_fetch_equals_the_pandas_fetch(demo_dataset: Dataset) -> None:
    with DuckDBEngine(demo_dataset, copy=False) as engine:
        sql = feature_queries(CFG, AS_OF)
        via_arrow = engine.query_arrow(sql)
        via_pandas = engine.query(sql)
    assert len(via_arrow) > 100
    assert list(via_arrow.columns) == list(via_pandas.columns)
    assert via_arrow["user_id"].dtype == object and via_arrow["source_channel"].dtype == object
    # two runs of one query may differ in the last bits of sums (parallel aggregation order), nothing more
    pd.testing.assert_frame_equal(via_arrow, via_pandas, check_exact=False, rtol=1e-12, atol=1e-9)


def test_arrow_fetch_of_an_empty_result_keeps_the_columns() -> None:
    orders = pd.DataFrame({"user_id": ["a"], "order_id": ["o1"], "ordered_at": days_ago(-5), "amount": [1.0]})
    got = build_features(Dataset(orders=orders), AS_OF, CFG)  # the only order is after as_of
    assert len(got) == 0 and "active_days_30d" in got.columns and got["orders_total"].dtype == "float64"


def test_active_days_count_each_day_once_across_orders_and_events_and_stop_at_30_days() -> None:
    # whole days before as_of: events 0 (twice), 1, 29 (29.999 days), 30 (excluded); orders 0, 1, 2, 29.5 -> 29
    events = pd.DataFrame({"user_id": ["a"] * 5, "occurred_at": days_ago(0.1, 0.9, 1.2, 29.999, 30.0),
                           "event_type": ["share", "page_view", "share", "checkin", "share"]})
    orders = pd.DataFrame({"user_id": ["a", "a", "a", "a", "b", "c"], "order_id": list("123456"),
                           "ordered_at": days_ago(0.5, 1.5, 2.5, 29.5, 31, 0.0), "amount": [1.0] * 6,
                           "status": ["paid", "refunded", "paid", "paid", "paid", "paid"]})
    got = build_features(Dataset(orders=orders, events=events), AS_OF, CFG).set_index("user_id")
    assert got.loc["a", "active_days_30d"] == 4  # days 0, 1, 2, 29
    assert got.loc["b", "active_days_30d"] == 0  # only an order 31 days ago
    assert got.loc["c", "active_days_30d"] == 1  # an order at as_of itself is day 0


def test_active_days_match_a_count_of_distinct_days_on_random_data() -> None:
    rng = np.random.default_rng(42)
    n = 3000
    users = np.array([f"u{i}" for i in range(60)], dtype=object)
    events = pd.DataFrame({"user_id": rng.choice(users, n),
                           "occurred_at": days_ago(*rng.uniform(0, 45, n)),
                           "event_type": rng.choice(list(CFG.data.event_types), n)})
    orders = pd.DataFrame({"user_id": rng.choice(users, 400), "order_id": [f"o{i}" for i in range(400)],
                           "ordered_at": days_ago(*rng.uniform(0, 45, 400)), "amount": rng.uniform(1, 50, 400)})
    got = build_features(Dataset(orders=orders, events=events), AS_OF, CFG).set_index("user_id")
    ages = pd.concat([
        pd.DataFrame({"user_id": events["user_id"], "age": (AS_OF - events["occurred_at"]).dt.total_seconds() / 86400}),
        pd.DataFrame({"user_id": orders["user_id"], "age": (AS_OF - orders["ordered_at"]).dt.total_seconds() / 86400}),
    ])
    recent = ages[ages["age"] < 30]
    want = recent.assign(day=np.floor(recent["age"])).groupby("user_id")["day"].nunique()
    want = want.reindex(got.index, fill_value=0).astype(float)
    pd.testing.assert_series_equal(got["active_days_30d"], want, check_names=False)


@pytest.mark.parametrize("families", [None, ["engagement"]])
def test_active_days_sql_transpiles_to_spark_with_a_shift(families: list[str] | None) -> None:
    # one day-bit aggregate in each source's pass, their OR counted in the derive step: no third scan
    sql = feature_queries(CFG, AS_OF, "spark", families=families)
    assert sql.count("SHIFTLEFT(CAST(1 AS BIGINT)") == 2
    assert "BIT_COUNT(order_day_bits_30d | event_day_bits_30d)" in sql


def test_engines_turn_off_partitioned_execution(tmp_path: Path) -> None:
    """Its user-range splits rescan the whole Parquet file per range over the engine's typed views."""
    frames = Dataset(orders=pd.DataFrame({"user_id": ["u1"], "order_id": ["o1"], "ordered_at": days_ago(3),
                                          "amount": [10.0], "status": ["paid"]}))
    path = tmp_path / "orders.parquet"
    frames.orders.to_parquet(path)
    for engine in (DuckDBEngine(frames), DuckDBEngine.from_parquet(path)):
        with engine:
            setting = engine.con.execute("SELECT current_setting('disabled_optimizers')").fetchone()
            assert setting is not None and "partitioned_execution" in setting[0]


# --------------------------------------------------------------------------- memory limit and spilling


def _memory_setting(limit: str) -> str:
    """How DuckDB reports ``memory_limit`` once set to ``limit`` (it normalises the unit)."""
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{limit}'")
    row = con.execute("SELECT current_setting('memory_limit')").fetchone()
    con.close()
    assert row is not None
    return str(row[0])


def _settings(engine: DuckDBEngine) -> tuple[str, str]:
    row = engine.con.execute("SELECT current_setting('memory_limit'), current_setting('temp_directory')").fetchone()
    assert row is not None
    return str(row[0]), str(row[1])


def test_engine_memory_limit_and_spill_directory_come_from_the_configuration(tmp_path: Path) -> None:
    frames = Dataset(orders=pd.DataFrame({"user_id": ["u1"], "order_id": ["o1"], "ordered_at": days_ago(3),
                                          "amount": [10.0], "status": ["paid"]}))
    path = tmp_path / "orders.parquet"
    frames.orders.to_parquet(path)
    cfg = config_from_dict({"features": {"engine_memory_limit": "300MB", "engine_temp_directory": str(tmp_path / "spill")}})
    spills = []
    for engine in (DuckDBEngine(frames, config=cfg), DuckDBEngine.from_parquet(path, config=cfg)):
        with engine:
            limit, spill = _settings(engine)
            assert limit == _memory_setting("300MB") and Path(spill).parent == tmp_path / "spill"
            spills.append(spill)
    assert spills[0] != spills[1]  # engines never share a spill directory (DuckDB removes it on close)
    # without a configuration: DuckDB's memory limit, and a spill directory of each engine's own in the
    # system temp directory (not ".tmp" in the working directory)
    with DuckDBEngine(frames) as a, DuckDBEngine(frames, config=StrataConfig()) as b:
        (limit_a, spill_a), (limit_b, spill_b) = _settings(a), _settings(b)
        assert limit_a == limit_b != _memory_setting("300MB")
        assert spill_a != spill_b
        for spill in (spill_a, spill_b):
            assert Path(spill).parent == Path(tempfile.gettempdir()) and not Path(spill).exists()


@pytest.fixture(scope="module")
def ds20k() -> Dataset:
    return generate_dataset(20_000, pd.Timestamp("2024-06-30", tz="UTC"), seed=3)


def test_a_spilling_engine_gives_the_same_features_and_cleans_up(ds20k: Dataset, tmp_path: Path) -> None:
    ds = ds20k
    as_of = pd.Timestamp("2024-03-31", tz="UTC")
    with DuckDBEngine(ds, 2, copy=False) as engine:
        expected = engine.features(as_of, CFG)
    spill = tmp_path / "spill"
    # 72MB with 2 threads is below what this query needs in memory (DuckDB 2.0: it spills from about 64MB
    # up, and fails below 56MB), so DuckDB must write to the spill directory
    cfg = config_from_dict({"features": {"engine_memory_limit": "72MB", "engine_temp_directory": str(spill)}})
    with DuckDBEngine(ds, 2, copy=False, config=cfg) as engine:
        got = engine.features(as_of, cfg)
        assert engine.spill_directory.parent == spill
        assert engine.spill_directory.is_dir(), "the query did not spill: lower the limit of this test"
    pd.testing.assert_frame_equal(got, expected)
    assert not engine.spill_directory.exists()  # DuckDB removes the engine's spill directory on close


def test_running_out_of_engine_memory_is_a_clear_error(ds20k: Dataset) -> None:
    ds = ds20k
    cfg = config_from_dict({"features": {"engine_memory_limit": "4MB"}})
    with pytest.raises(EngineMemoryError, match=r"loading the data under the configured limit .*engine_memory_limit = '4MB'"):
        DuckDBEngine(ds, config=cfg)
    with DuckDBEngine(ds, 2, copy=False, config=config_from_dict({"features": {"engine_memory_limit": "8MB"}})) as engine:
        with pytest.raises(EngineMemoryError, match=r"computing features as of 2024-03-31.*raise \[features\] engine_memory_limit"):
            engine.features(pd.Timestamp("2024-03-31", tz="UTC"), CFG)


@pytest.mark.parametrize("bad", ["lots", "8", "-1GB", "8 parsecs"])
def test_engine_memory_limit_must_be_a_size(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"strata.toml: key 'features.engine_memory_limit': .*such as '8GB'"):
        config_from_dict({"features": {"engine_memory_limit": bad}}, source="strata.toml")


def test_each_stage_alone_gives_the_feature_querys_aggregates(ds20k: Dataset) -> None:
    from features.pipeline import stage_query

    as_of = pd.Timestamp("2024-03-31", tz="UTC")
    with DuckDBEngine(ds20k, 2, copy=False, orders_unique=True) as engine:
        full = engine.features(as_of, CFG).set_index("user_id")
        checks = {"orders": ["orders_total", "spend_total", "days_since_last_order"],
                  "paid_orders": ["gap_mean_days", "order_days_total", "first_order_value"],
                  "events": ["events_total", "days_since_last_event", "events_decay_hl30"]}
        for stage, columns in checks.items():
            alone = engine.query(stage_query(CFG, as_of, engine.sources, stage)).set_index("user_id")
            assert alone.index.is_unique and len(alone) > 1000, stage
            for col in columns:
                # a stage's users are those with rows in its source; the rest get the definition's default
                np.testing.assert_allclose(alone[col].to_numpy(float), full.loc[alone.index, col].to_numpy(float),
                                           rtol=1e-12, err_msg=f"{stage}: {col}")
    with pytest.raises(ValueError, match="stage must be one of"):
        stage_query(CFG, as_of, engine.sources, "derived")
