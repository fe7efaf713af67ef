"""The feature pipeline: each point-in-time step alone, the composed query, the output contract."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
import sqlglot

from features.config import StrataConfig, config_from_dict
from features.dataset import Dataset
from features.definitions import FAMILIES, STAGES, feature_definitions, feature_names
from features.pipeline import (
    DuckDBEngine,
    SourceColumns,
    build_features,
    build_features_from_frames,
    dedupe_orders_sql,
    entities_sql,
    feature_queries,
    filter_events_sql,
    filter_orders_sql,
    filter_users_sql,
    finalize_features,
    paid_orders_sql,
)

AS_OF = pd.Timestamp("2024-03-01", tz="UTC")
CFG = StrataConfig()

#: The fixed names of the feature-table contract (prompts/featnames.md), default configuration.
CONTRACT = [
    "days_since_last_order", "days_since_first_order", "days_since_joined", "orders_total", "spend_total",
    *[f"{k}_{w}d" for w in (30, 90, 180, 365) for k in ("orders", "spend")],
    "avg_order_value", "max_order_value", "first_order_value",
    *[f"{k}_decay_hl{h}" for h in (7, 30, 90) for k in ("orders", "spend", "events")],
    "gap_mean_days", "gap_std_days", "overdue_ratio", "trend_orders_ratio", "trend_spend_ratio",
    "days_since_last_interaction", "active_days_30d", "events_total",
    *[f"events_{t}_{w}d" for t in ("add_wecom", "share", "review", "page_view") for w in (30, 90)],
    "shares_total", "referrals_total", "coupon_claims_total", "coupon_redeems_total", "coupon_redeem_ratio",
    "review_sentiment_mean", "source_channel", "category_count", "refund_rate", "q4_spend_share",
    "as_of_month", "is_prospect",
]


def ts(values: list[str]) -> pd.Series:
    return pd.Series(pd.to_datetime(values, utc=True, format="ISO8601"))


def orders_frame(rows: list[tuple[str, str, str, float, str]]) -> pd.DataFrame:
    user, oid, at, amount, status = zip(*rows, strict=True) if rows else ([], [], [], [], [])
    return pd.DataFrame({"user_id": list(user), "order_id": list(oid), "ordered_at": ts(list(at)),
                         "amount": np.array(amount, dtype=float), "status": list(status)})


def events_frame(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    user, at, kind = zip(*rows, strict=True)
    return pd.DataFrame({"user_id": list(user), "occurred_at": ts(list(at)), "event_type": list(kind)})


def run(con: duckdb.DuckDBPyConnection, sql: str) -> pd.DataFrame:
    return con.execute(sql).df()


@pytest.fixture()
def con() -> duckdb.DuckDBPyConnection:
    c = duckdb.connect()
    c.execute("SET TimeZone = 'UTC'")
    return c


# ------------------------------------------------------------------ steps alone


def test_filter_orders_keeps_rows_at_or_before_as_of_and_normalises(con: duckdb.DuckDBPyConnection) -> None:
    orders = orders_frame([
        ("a", "1", "2024-02-29 12:00:00", 10.0, "paid"),
        ("a", "2", "2024-03-01 00:00:00", 4.0, "refunded"),  # exactly at as_of: kept
        ("a", "3", "2024-03-01 00:00:01", 99.0, "paid"),  # one second later: dropped
    ])
    con.register("orders", orders)
    got = run(con, filter_orders_sql(AS_OF, CFG, orders.columns) + " ORDER BY order_id")
    assert got["order_id"].tolist() == ["1", "2"]
    assert got["age_days"].tolist() == [0.5, 0.0]
    assert got["signed_amount"].tolist() == [10.0, -4.0]
    assert got["paid"].tolist() == [True, False] and got["refunded"].tolist() == [False, True]
    assert got["category"].isna().all()  # absent optional column -> NULL
    assert got["w_hl7"].iloc[0] == pytest.approx(0.5 ** (0.5 / 7))
    assert got["day_num"].tolist() == [19782, 19783]  # days since 1970-01-01 (UTC)


def test_filter_orders_without_status_takes_every_order_as_paid(con: duckdb.DuckDBPyConnection) -> None:
    orders = orders_frame([("a", "1", "2024-02-01", 5.0, "paid")]).drop(columns="status")
    con.register("orders", orders)
    got = run(con, filter_orders_sql(AS_OF, None, orders.columns))
    assert got["paid"].tolist() == [True] and got["signed_amount"].tolist() == [5.0]
    assert not any(c.startswith("w_hl") for c in got.columns)  # no config: no decay weights


def test_filter_orders_window_for_labels(con: duckdb.DuckDBPyConnection) -> None:
    orders = orders_frame([(u, u, d, 1.0, "paid") for u, d in
                           [("a", "2024-03-01"), ("b", "2024-03-02"), ("c", "2024-03-31"), ("d", "2024-04-01")]])
    con.register("orders", orders)
    end = AS_OF + pd.Timedelta(days=30)
    got = run(con, filter_orders_sql(end, None, orders.columns, after=AS_OF))
    assert sorted(got["user_id"]) == ["b", "c"]  # (as_of, as_of + 30 days]


def test_filter_events_absent_table_is_an_empty_relation_of_the_same_shape(con: duckdb.DuckDBPyConnection) -> None:
    got = run(con, filter_events_sql(AS_OF, CFG, None))
    assert len(got) == 0
    assert {"user_id", "event_type", "value", "age_days", "w_hl7", "w_hl30", "w_hl90"} <= set(got.columns)


def test_filter_users_hides_users_who_join_later_and_merges_duplicates(con: duckdb.DuckDBPyConnection) -> None:
    users = pd.DataFrame({
        "user_id": ["a", "a", "b", "c"],
        "joined_at": ts(["2024-02-01", "2024-01-01", "2024-05-01", "NaT"]),
        "source_channel": ["qr", "ad", "ad", None],
    })
    con.register("users", users)
    got = run(con, filter_users_sql(AS_OF, users.columns) + " ORDER BY user_id").set_index("user_id")
    assert list(got.index) == ["a", "c"]  # b joins after as_of
    assert got.loc["a", "joined_age_days"] == 60.0  # the earliest join wins
    assert got.loc["a", "source_channel"] == "ad"
    assert got.loc["a", "has_joined"] == 1 and got.loc["c", "has_joined"] == 0


def test_dedupe_keeps_the_earliest_copy_of_an_order(con: duckdb.DuckDBPyConnection) -> None:
    orders = orders_frame([
        ("a", "1", "2024-02-02", 10.0, "paid"),
        ("a", "1", "2024-02-01", 10.0, "paid"),  # duplicate, earlier
        ("a", "1", "2024-02-05", 10.0, "refunded"),  # same order id, different status: a refund, kept
        ("b", "2", "2024-02-03", 3.0, "paid"),
    ])
    con.register("orders", orders)
    sql = f"WITH orders_f AS ({filter_orders_sql(AS_OF, None, orders.columns)}) {dedupe_orders_sql('orders_f')}"
    got = run(con, sql + " ORDER BY user_id, ordered_at")
    assert len(got) == 3
    assert got["ordered_at"].iloc[0] == pd.Timestamp("2024-02-01", tz="UTC")


def test_paid_orders_carry_the_gap_to_the_previous_order_day_and_the_first_day(con: duckdb.DuckDBPyConnection) -> None:
    orders = orders_frame([
        ("a", "1", "2024-01-01 08:00", 10.0, "paid"),
        ("a", "2", "2024-01-01 20:00", 5.0, "paid"),  # same day: gap 0, still the first day
        ("a", "3", "2024-01-04 09:00", 1.0, "paid"),
        ("a", "4", "2024-01-05 09:00", 7.0, "refunded"),  # refunds are not order days
        ("a", "5", "2024-01-10 09:00", 2.0, "paid"),
        ("b", "6", "2024-01-20 09:00", 4.0, "paid"),
    ])
    con.register("orders", orders)
    sql = f"WITH o AS ({filter_orders_sql(AS_OF, None, orders.columns)}) {paid_orders_sql('o')}"
    got = run(con, sql + " ORDER BY user_id, day_num, amount")
    assert got["amount"].tolist() == [5.0, 10.0, 1.0, 2.0, 4.0]
    a, b = got[got["user_id"] == "a"], got[got["user_id"] == "b"]
    # one of the two first-day rows has NULL (the user's first row), the other 0 (same day)
    assert sorted(a["gap"].iloc[:2].fillna(-1).tolist()) == [-1, 0]
    assert a["gap"].iloc[2:].tolist() == [3, 6]
    assert (a["first_day"] == a["day_num"].min()).all() and (b["first_day"] == b["day_num"]).all()
    assert pd.isna(b["gap"].iloc[0])


def test_entities_are_users_with_activity_or_a_join_by_as_of(con: duckdb.DuckDBPyConnection) -> None:
    con.register("o", pd.DataFrame({"user_id": ["a"]}))
    con.register("e", pd.DataFrame({"user_id": ["b", "b"]}))
    con.register("u", pd.DataFrame({"user_id": ["c", "d"], "has_joined": [1, 0]}))
    got = run(con, entities_sql("o", "e", "u"))
    assert sorted(got["user_id"]) == ["a", "b", "c"]  # d: joined_at unknown and no activity


# ------------------------------------------------------------------ composed


def small_dataset() -> Dataset:
    orders = orders_frame([
        ("a", "1", "2024-01-01", 10.0, "paid"),
        ("a", "2", "2024-01-11", 20.0, "paid"),
        ("a", "3", "2024-02-01", 30.0, "refunded"),
        ("b", "4", "2024-01-15", 5.0, "paid"),
        ("c", "5", "2024-03-05", 7.0, "paid"),  # only after as_of: c is unknown
    ])
    events = events_frame([("a", "2024-02-20", "share"), ("d", "2024-02-25", "review")])
    users = pd.DataFrame({"user_id": ["a", "e", "f"], "joined_at": ts(["2023-12-01", "2024-02-01", "2024-05-01"]),
                          "source_channel": ["ad", None, "qr"]})
    return Dataset(orders=orders, events=events, users=users)


def test_output_contract_columns_dtypes_and_order() -> None:
    got = build_features(small_dataset(), AS_OF, CFG)
    assert list(got.columns[:2]) == ["user_id", "as_of"]
    assert list(got.columns[2:]) == feature_names(CFG)
    assert set(CONTRACT) <= set(got.columns)
    assert got["user_id"].tolist() == ["a", "b", "d", "e"]  # sorted; c and f not known yet
    assert str(got["as_of"].dtype) == "datetime64[ns, UTC]" and (got["as_of"] == AS_OF).all()
    numeric = [c for c in got.columns[2:] if c != "source_channel"]
    assert (got[numeric].dtypes == "float64").all()
    assert got["source_channel"].tolist() == ["ad", "unknown", "unknown", "unknown"]
    values = got[numeric].to_numpy()
    assert not np.isinf(values).any()


def test_build_features_is_deterministic_and_independent_of_row_order() -> None:
    ds = small_dataset()
    shuffled = Dataset(orders=ds.orders.sample(frac=1, random_state=1), events=ds.events.iloc[::-1],
                       users=ds.users.iloc[::-1])
    pd.testing.assert_frame_equal(build_features(ds, AS_OF, CFG), build_features(shuffled, AS_OF, CFG))


def test_orders_only_data_gives_neutral_engagement_consistently() -> None:
    ds = small_dataset()
    got = build_features(Dataset(orders=ds.orders), AS_OF, CFG).set_index("user_id")
    assert list(got.index) == ["a", "b"]
    engagement_counts = [c for c in got.columns if c.startswith("events_") or c.endswith("s_total")
                         and c.split("_")[0] in {"shares", "referrals", "coupon"}]
    assert (got[engagement_counts] == 0).all().all()
    assert got["review_sentiment_mean"].isna().all() and got["coupon_redeem_ratio"].isna().all()
    assert got["days_since_joined"].isna().all() and (got["source_channel"] == "unknown").all()
    # interaction comes from orders alone: a's last order row is the refund on 02-01
    assert got.loc["a", "days_since_last_interaction"] == 29.0
    # the same user in a data set with an (unrelated) events table gets the same values
    with_events = build_features(Dataset(orders=ds.orders, events=events_frame([("z", "2024-01-01", "share")])),
                                 AS_OF, CFG).set_index("user_id")
    pd.testing.assert_frame_equal(got.loc[["a", "b"]], with_events.loc[["a", "b"]])


def test_missing_optional_columns_work() -> None:
    ds = small_dataset()
    orders = ds.orders.drop(columns=["status"])
    users = ds.users.drop(columns=["joined_at"])
    got = build_features(Dataset(orders=orders, events=ds.events, users=users), AS_OF, CFG).set_index("user_id")
    assert list(got.index) == ["a", "b", "d"]  # without joined_at, users are known only through activity
    assert got.loc["a", "orders_total"] == 3.0 and got.loc["a", "spend_total"] == 60.0  # no status: all paid
    assert got.loc["a", "source_channel"] == "ad"
    assert got["days_since_joined"].isna().all() and (got["category_count"] == 0).all()


def test_duplicate_orders_are_counted_once() -> None:
    ds = small_dataset()
    dup = Dataset(orders=pd.concat([ds.orders, ds.orders.iloc[[0]]], ignore_index=True), events=ds.events,
                  users=ds.users)
    with DuckDBEngine(dup) as engine:
        assert engine.has_duplicate_orders
    pd.testing.assert_frame_equal(build_features(dup, AS_OF, CFG), build_features(ds, AS_OF, CFG))


def test_engine_reuse_over_cutoffs_equals_fresh_builds() -> None:
    ds = small_dataset()
    with DuckDBEngine(ds) as engine:
        for day in ("2024-01-20", "2024-03-01", "2024-06-01"):
            as_of = pd.Timestamp(day, tz="UTC")
            pd.testing.assert_frame_equal(engine.features(as_of, CFG), build_features(ds, as_of, CFG))


def test_build_features_from_frames_matches_dataset() -> None:
    ds = small_dataset()
    pd.testing.assert_frame_equal(
        build_features_from_frames(ds.orders, AS_OF, CFG, events=ds.events, users=ds.users),
        build_features(ds, AS_OF, CFG),
    )


def test_empty_data_gives_an_empty_table_with_every_column() -> None:
    got = build_features(Dataset(orders=orders_frame([])), AS_OF, CFG)
    assert len(got) == 0 and list(got.columns[2:]) == feature_names(CFG)


def test_config_windows_half_lives_and_event_types_drive_the_columns() -> None:
    cfg = config_from_dict({"features": {"windows_days": [7], "half_lives_days": [14]},
                            "data": {"event_types": ["share", "Coupon-Claim"]}})
    got = build_features(small_dataset(), AS_OF, cfg)
    assert {"orders_7d", "spend_7d", "orders_decay_hl14", "events_coupon_claim_30d", "events_share_decay_hl14"} <= set(got.columns)
    assert "orders_30d" not in got.columns and "events_review_30d" not in got.columns


def test_definitions_are_well_formed() -> None:
    defs = feature_definitions(CFG)
    assert len({d.name for d in defs}) == len(defs)
    for d in defs:
        assert d.family in FAMILIES and d.stage in STAGES and d.description and d.unit and d.window
        assert d.name.isidentifier() and d.name == d.name.lower()


# ------------------------------------------------------------------ the engine-neutral SQL


@pytest.mark.parametrize("has_events,has_users,dedupe", [(True, True, True), (False, False, True), (True, True, False)])
def test_feature_sql_transpiles_to_spark_and_parses(has_events: bool, has_users: bool, dedupe: bool) -> None:
    kw = {"has_events": has_events, "has_users": has_users, "dedupe_orders": dedupe}
    spark_sql = feature_queries(CFG, AS_OF, "spark", **kw)
    tree = sqlglot.parse_one(spark_sql, read="spark")  # raises on anything Spark's grammar lacks
    functions = {type(node).__name__ for node in tree.walk() if isinstance(node, sqlglot.exp.Func)}
    assert "Anonymous" not in functions, "a function SQLGlot does not know would be passed through verbatim"
    assert "EPOCH(" not in spark_sql and "LAG(" in spark_sql and "FIRST_VALUE(" in spark_sql
    generic = feature_queries(CFG, AS_OF, "spark2", **kw)
    sqlglot.parse_one(generic, read="spark2")  # plain SQLGlot transpilation parses too
    # DuckDB's CTE hint (inline the filtered orders when they need no de-duplication) is not Spark SQL
    assert ("NOT MATERIALIZED" in feature_queries(CFG, AS_OF, "duckdb", **kw)) is not dedupe
    assert "MATERIALIZED" not in spark_sql and "MATERIALIZED" not in generic


def test_duckdb_sql_runs_on_tables_named_orders_events_users(con: duckdb.DuckDBPyConnection) -> None:
    ds = small_dataset()
    for name in ("orders", "events", "users"):
        con.register(name, getattr(ds, name))
    s = SourceColumns.of(ds)
    sql = feature_queries(CFG, AS_OF, order_columns=s.orders, event_columns=s.events or (), user_columns=s.users or ())
    got = finalize_features(con.execute(sql).df(), AS_OF, CFG)
    pd.testing.assert_frame_equal(got, build_features(ds, AS_OF, CFG))


def test_finalize_rejects_a_result_missing_features() -> None:
    with pytest.raises(ValueError, match="lacks columns"):
        finalize_features(pd.DataFrame({"user_id": ["a"]}), AS_OF, CFG)


def test_demo_data_features_are_sane(demo_dataset: Dataset) -> None:
    as_of = pd.Timestamp("2024-09-30", tz="UTC")
    got = build_features(demo_dataset, as_of, CFG)
    assert got["user_id"].is_unique and got["user_id"].is_monotonic_increasing
    numeric = got.drop(columns=["user_id", "as_of", "source_channel"])
    assert not np.isinf(numeric.to_numpy()).any()
    buyers = got["is_prospect"] == 0
    assert buyers.sum() > 100 and (~buyers).sum() > 100
    assert got.loc[buyers, "days_since_last_order"].between(0, 3 * 365).all()
    assert got.loc[~buyers, "days_since_last_order"].isna().all()
    assert (got["orders_30d"] <= got["orders_90d"]).all() and (got["orders_365d"] <= got["orders_total"]).all()
    assert (got["active_days_30d"] <= 30).all()
    for h in (7, 30, 90):
        assert (got[f"orders_decay_hl{h}"] <= got["orders_total"] + 1e-9).all()
    assert set(got["source_channel"]) - {"unknown"}


# ------------------------------------------------------------------ catalog and CLI


def test_catalog_lists_every_output_feature() -> None:
    from features.catalog import CATALOG_COLUMNS, feature_catalog

    cat = feature_catalog(CFG)
    assert tuple(cat.columns) == CATALOG_COLUMNS
    assert cat["name"].tolist() == feature_names(CFG)
    assert cat.notna().all().all() and (cat != "").all().all()


def test_docs_features_md_is_current() -> None:
    from pathlib import Path

    from features.catalog import catalog_markdown

    doc = Path(__file__).resolve().parents[2] / "docs" / "features.md"
    assert doc.read_text(encoding="utf-8") == catalog_markdown(StrataConfig()), (
        "docs/features.md is stale: run `python -m features.catalog docs/features.md`"
    )


def test_cli_features_list_and_compute(demo_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from strata_cli.main import app

    runner = CliRunner()
    listed = runner.invoke(app, ["features", "--list", "--markdown"])
    assert listed.exit_code == 0, listed.output
    assert "| `days_since_last_order` | rfm |" in listed.output

    out = tmp_path / "features.parquet"
    result = runner.invoke(app, ["features", "--data", str(demo_dir), "--as-of", "2024-09-30", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "validated" in result.output and "rejected" in result.output
    table = pd.read_parquet(out)
    assert list(table.columns[2:]) == feature_names(CFG) and len(table) > 100

    missing = runner.invoke(app, ["features", "--data", str(demo_dir), "--out", str(out)])
    assert missing.exit_code == 2 and "--as-of" in missing.output
