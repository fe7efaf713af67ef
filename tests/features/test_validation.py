"""Row-level validation: every bad-row class gets its reason, and every row is accounted for."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.config import DataConfig, StrataConfig
from features.contract import EVENTS, ORDERS, USERS, TableSchema
from features.errors import InputFileError
from features.io import read_table, write_table
from features.validation import MALFORMED, UNKNOWN_USER_WARNING, TableResult, load_dataset, validate_table

NOW = pd.Timestamp("2025-01-10 12:00", tz="UTC")
CFG = StrataConfig()

GOOD_ORDER = {"user_id": "u1", "order_id": "o1", "ordered_at": "2024-06-01T10:00:00Z", "amount": "12.50",
              "category": "skincare", "channel": "wecom", "status": "paid", "quantity": "2"}
GOOD_EVENT = {"user_id": "u1", "occurred_at": "2024-06-01T10:00:00Z", "event_type": "review", "value": "0.5",
              "channel": "group"}


def _frame(rows: list[dict[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, dtype=object)


def _one(schema: TableSchema, good: dict[str, str], config: StrataConfig = CFG, **change: str) -> TableResult:
    return validate_table(_frame([{**good, **change}]), schema, config, NOW)


def _arrow(raw: pd.DataFrame) -> pd.DataFrame:
    """The same table with Arrow-backed string columns (as ``read_table(..., arrow_strings=True)`` gives)."""
    return raw.astype(pd.ArrowDtype(pa.string()))


def _same_result(a: TableResult, b: TableResult) -> None:
    pd.testing.assert_frame_equal(a.accepted, b.accepted)
    pd.testing.assert_frame_equal(a.rejected, b.rejected)
    assert (a.reasons, a.warning_counts) == (b.reasons, b.warning_counts)


def _accounted(res: TableResult) -> None:
    assert res.rows_in == res.n_accepted + res.n_rejected
    assert sum(res.reasons.values()) == res.n_rejected
    assert res.rejected["reason"].astype(bool).all()


def test_a_good_order_is_accepted_and_typed() -> None:
    res = _one(ORDERS, GOOD_ORDER)
    _accounted(res)
    assert res.n_rejected == 0
    row = res.accepted.iloc[0]
    assert row["ordered_at"] == pd.Timestamp("2024-06-01 10:00", tz="UTC")
    assert row["amount"] == 12.5 and row["quantity"] == 2
    assert str(res.accepted["quantity"].dtype) == "Int64"
    assert str(res.accepted["ordered_at"].dtype) == "datetime64[ns, UTC]"
    assert res.accepted["user_id"].dtype == object


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"user_id": ""}, "missing user_id"),
        ({"user_id": "   "}, "missing user_id"),
        ({"user_id": "NULL"}, "missing user_id"),
        ({"order_id": ""}, "missing order_id"),
        ({"ordered_at": "not a date"}, "unparseable ordered_at"),
        ({"ordered_at": "2024-13-45T10:00:00Z"}, "unparseable ordered_at"),
        ({"ordered_at": "31/12/2024"}, "unparseable ordered_at"),
        ({"ordered_at": ""}, "missing ordered_at"),
        ({"ordered_at": "2025-01-12T00:00:00Z"}, "future ordered_at"),
        ({"ordered_at": "2999-01-01"}, "future ordered_at"),
        ({"ordered_at": "1970-01-01T00:00:00Z"}, "too old ordered_at"),
        ({"ordered_at": "1066-10-14"}, "too old ordered_at"),
        ({"amount": "-3.50"}, "negative amount"),
        ({"amount": "abc"}, "non-numeric amount"),
        ({"amount": "12,50"}, "non-numeric amount"),
        ({"amount": "inf"}, "non-numeric amount"),
        ({"amount": ""}, "missing amount"),
        ({"amount": "2000000"}, "implausible amount"),
        ({"quantity": "0"}, "bad quantity"),
        ({"quantity": "1.5"}, "bad quantity"),
        ({"quantity": "two"}, "bad quantity"),
        ({"quantity": "100000"}, "bad quantity"),
        ({"status": "pending"}, "unknown status"),
    ],
)
def test_bad_order_rows_are_rejected_with_their_reason(change: dict[str, str], reason: str) -> None:
    res = _one(ORDERS, GOOD_ORDER, **change)
    _accounted(res)
    _same_result(res, validate_table(_arrow(_frame([{**GOOD_ORDER, **change}])), ORDERS, CFG, NOW))
    assert res.n_accepted == 0 and res.reasons == {reason: 1}
    rej = res.rejected.iloc[0]
    assert rej["row"] == 1 and rej["reason"] == reason
    for col, value in change.items():
        assert rej[col] == value  # the original string, not a coerced value


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"event_type": "ad_click"}, "unknown event_type"),
        ({"event_type": ""}, "missing event_type"),
        ({"value": "great"}, "non-numeric value"),
        ({"occurred_at": "yesterday"}, "unparseable occurred_at"),
        ({"occurred_at": "2030-01-01"}, "future occurred_at"),
        ({"user_id": ""}, "missing user_id"),
    ],
)
def test_bad_event_rows_are_rejected_with_their_reason(change: dict[str, str], reason: str) -> None:
    res = _one(EVENTS, GOOD_EVENT, **change)
    _accounted(res)
    assert res.reasons == {reason: 1}


def test_lenient_but_exact_parsing() -> None:
    res = validate_table(
        _frame([
            {**GOOD_ORDER, "order_id": "a", "ordered_at": "2024-06-01", "amount": " 7 ", "status": "PAID"},
            {**GOOD_ORDER, "order_id": "b", "ordered_at": "2024-06-01 08:00:00+08:00", "amount": "0", "status": "Refunded"},
            {**GOOD_ORDER, "order_id": "c", "ordered_at": "2025-01-11T11:00:00Z", "quantity": ""},  # within 24 h
        ]),
        ORDERS, CFG, NOW,
    )
    assert res.n_rejected == 0
    acc = res.accepted
    assert acc["ordered_at"].tolist() == [pd.Timestamp("2024-06-01", tz="UTC"), pd.Timestamp("2024-06-01", tz="UTC"),
                                          pd.Timestamp("2025-01-11 11:00", tz="UTC")]
    assert acc["amount"].tolist() == [7.0, 0.0, 12.5]
    assert acc["status"].tolist() == ["paid", "refunded", "paid"]
    assert acc["quantity"].isna().tolist() == [False, False, True]


def test_missing_status_is_taken_as_paid_with_a_warning() -> None:
    res = validate_table(_frame([{**GOOD_ORDER, "status": ""}, {**GOOD_ORDER, "order_id": "o2"}]), ORDERS, CFG, NOW)
    assert res.accepted["status"].tolist() == ["paid", "paid"]
    assert res.warning_counts == {"status missing, taken as paid": 1}


def test_optional_string_columns_keep_missing_as_missing() -> None:
    res = _one(ORDERS, GOOD_ORDER, category="", channel="null")
    assert res.accepted["category"].isna().all() and res.accepted["channel"].isna().all()


def test_configuration_sets_the_rules() -> None:
    cfg = StrataConfig(data=DataConfig(max_amount=100.0, future_tolerance_hours=0.0, min_timestamp="2024-01-01",
                                       event_types=["review", "custom_event"], max_quantity=5))
    assert _one(ORDERS, GOOD_ORDER, cfg, amount="150").reasons == {"implausible amount": 1}
    assert _one(ORDERS, GOOD_ORDER, cfg, ordered_at="2025-01-10T13:00:00Z").reasons == {"future ordered_at": 1}
    assert _one(ORDERS, GOOD_ORDER, cfg, ordered_at="2023-12-31").reasons == {"too old ordered_at": 1}
    assert _one(ORDERS, GOOD_ORDER, cfg, quantity="6").reasons == {"bad quantity": 1}
    assert _one(EVENTS, GOOD_EVENT, cfg, event_type="custom_event").n_accepted == 1
    assert _one(EVENTS, GOOD_EVENT, cfg, event_type="share").reasons == {"unknown event_type": 1}


def test_duplicate_order_ids_keep_the_first_valid_row() -> None:
    rows = [
        {**GOOD_ORDER, "order_id": "o1", "amount": "-1"},  # invalid: does not claim the id
        {**GOOD_ORDER, "order_id": "o1", "amount": "10"},  # first valid: kept
        {**GOOD_ORDER, "order_id": "o1", "amount": "11"},  # duplicate
        {**GOOD_ORDER, "order_id": "o2", "amount": "12"},
    ]
    res = validate_table(_frame(rows), ORDERS, CFG, NOW)
    _accounted(res)
    assert res.accepted["amount"].tolist() == [10.0, 12.0]
    assert res.rejected[["row", "reason"]].values.tolist() == [[1, "negative amount"], [3, "duplicate order_id"]]


def test_duplicate_users_and_bad_join_dates() -> None:
    rows = [{"user_id": "u1", "joined_at": "2024-01-01"}, {"user_id": "u1", "joined_at": "2024-02-01"},
            {"user_id": "u2", "joined_at": ""}, {"user_id": "u3", "joined_at": "soon"}]
    res = validate_table(_frame(rows), USERS, CFG, NOW)
    _accounted(res)
    assert res.accepted["user_id"].tolist() == ["u1", "u2"]
    assert res.accepted["joined_at"].isna().tolist() == [False, True]  # joined_at is optional
    assert res.reasons == {"duplicate user_id": 1, "unparseable joined_at": 1}


def test_unknown_users_are_kept_with_a_warning() -> None:
    rows = [GOOD_EVENT, {**GOOD_EVENT, "user_id": "ghost"}, {**GOOD_EVENT, "user_id": "ghost"}]
    res = validate_table(_frame(rows), EVENTS, CFG, NOW, known_users=pd.Series(["u1", "u2"]))
    assert res.n_accepted == 3 and res.n_rejected == 0
    assert res.warning_counts == {UNKNOWN_USER_WARNING: 2}
    assert "2 events rows of 1 user not in the users table" in res.warnings[0]


def test_extra_columns_are_ignored_with_a_warning() -> None:
    res = _one(ORDERS, GOOD_ORDER, coupon_code="X1")
    assert "coupon_code" not in res.accepted.columns
    assert any("coupon_code" in w for w in res.warnings)


def test_first_failing_check_names_the_row_and_rows_are_file_rows(tmp_path: Path) -> None:
    p = tmp_path / "orders.csv"
    p.write_text("user_id,order_id,ordered_at,amount\nu1,o1,2024-01-01,3\n,o2,bad,-1\nu3,o3,2024-01-01,x,extra\nu4,o4,2024-01-02,5\n")
    res = validate_table(read_table(p, ORDERS), ORDERS, CFG, NOW, path=p)
    _accounted(res)
    assert res.rows_in == 4 and res.n_accepted == 2
    assert res.rejected["row"].tolist() == [2, 3]
    assert res.rejected["reason"].tolist() == ["missing user_id", MALFORMED]
    assert "extra" in res.rejected.loc[1, "line"]


def test_missing_required_column_in_a_frame() -> None:
    with pytest.raises(InputFileError, match="missing required column 'amount'"):
        validate_table(_frame([{"user_id": "u1", "order_id": "o", "ordered_at": "2024-01-01"}]), ORDERS, CFG, NOW)


def test_empty_table() -> None:
    res = validate_table(pd.DataFrame(columns=list(ORDERS.required), dtype=object), ORDERS, CFG, NOW)
    assert res.rows_in == 0 and res.n_accepted == 0 and "no data rows" in res.warnings[0]
    assert str(res.accepted["ordered_at"].dtype) == "datetime64[ns, UTC]"


# Property: random mixtures of good and bad rows are always fully accounted for ------------------------

BAD_CELLS: dict[str, list[str]] = {
    "user_id": ["", " ", "null", "None"],
    "ordered_at": ["", "not a date", "2024-02-30", "2024-02-30T00:00:00Z", "2024-01-05T10:00:60Z", "1970-01-01",
                   "2100-01-01T00:00:00Z", "9999-12-31", "2024-01-05T10:00:00Zjunk"],
    "amount": ["", "-1", "abc", "1e9", "nan", "12,5", "--3"],
    "quantity": ["0", "-2", "1.5", "x", "1e9"],
    "status": ["pending", "?", "paid!"],
}
GOOD_CELLS: dict[str, st.SearchStrategy[str]] = {
    "user_id": st.from_regex(r"u[0-9]{1,4}", fullmatch=True).map(lambda s: s if len(s) % 2 else f" {s} "),
    "ordered_at": st.datetimes(min_value=pd.Timestamp("1995-01-01").to_pydatetime(),
                               max_value=pd.Timestamp("2025-01-10").to_pydatetime()).flatmap(
        lambda d: st.sampled_from([d.strftime("%Y-%m-%dT%H:%M:%SZ"), d.strftime("%Y-%m-%d %H:%M:%S"), d.strftime("%Y-%m-%d"),
                                   d.strftime("%Y-%m-%dT%H:%M:%S+08:00"), d.isoformat()])),
    "amount": st.floats(min_value=0, max_value=999_999, allow_nan=False).map(lambda x: f"{x:.2f}"),
    "quantity": st.one_of(st.just(""), st.integers(1, 10_000).map(str)),
    "status": st.sampled_from(["paid", "refunded", "", "PAID"]),
}


@st.composite
def order_rows(draw: st.DrawFn) -> tuple[list[dict[str, str]], int]:
    """Rows with a known number of good ones; a bad row breaks one cell or repeats a good order id."""
    n = draw(st.integers(0, 40))
    rows, good_ids = [], []
    for i in range(n):
        row = {col: draw(strategy) for col, strategy in GOOD_CELLS.items()}
        row["order_id"] = f"o{i}"
        kind = draw(st.sampled_from(["good", "good", "bad_cell", "duplicate"]))
        if kind == "bad_cell":
            col = draw(st.sampled_from(sorted(BAD_CELLS)))
            row[col] = draw(st.sampled_from(BAD_CELLS[col]))
        elif kind == "duplicate" and good_ids:
            row["order_id"] = draw(st.sampled_from(good_ids))
        else:
            good_ids.append(row["order_id"])
        rows.append(row)
    return rows, len(good_ids)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order_rows())
def test_every_row_is_accepted_or_rejected_with_a_reason(case: tuple[list[dict[str, str]], int]) -> None:
    rows, n_good = case
    raw = pd.DataFrame(rows, columns=[*ORDERS.required, "quantity", "status"], dtype=object)
    res = validate_table(raw, ORDERS, CFG, NOW)
    _accounted(res)
    assert res.rows_in == len(rows)
    assert res.n_accepted == n_good
    _same_result(res, validate_table(_arrow(raw), ORDERS, CFG, NOW))  # the Arrow fast path agrees
    assert res.accepted["order_id"].is_unique
    assert sorted(res.rejected["row"].tolist()) == sorted(set(res.rejected["row"]))
    accepted_rows = set(range(1, len(rows) + 1)) - set(res.rejected["row"])
    assert len(accepted_rows) == res.n_accepted
    assert (res.accepted["amount"] >= 0).all() and res.accepted["ordered_at"].notna().all()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["u1", "", "u2 ", "ghost"]),
                          st.sampled_from(["2024-01-01", "bad", "2099-01-01", "2024-05-05T10:00:00+02:00"]),
                          st.sampled_from(["review", "share", "nope", "", "REVIEW"]),
                          st.sampled_from(["", "0.3", "-1", "x", "NaN"])), max_size=30))
def test_events_are_always_accounted_for(rows: list[tuple[str, str, str, str]]) -> None:
    raw = pd.DataFrame(rows, columns=["user_id", "occurred_at", "event_type", "value"], dtype=object)
    res = validate_table(raw, EVENTS, CFG, NOW, known_users=["u1", "u2"])
    _accounted(res)
    _same_result(res, validate_table(_arrow(raw), EVENTS, CFG, NOW, known_users=["u1", "u2"]))
    assert res.rows_in == len(rows)
    assert res.warning_counts.get(UNKNOWN_USER_WARNING, 0) == int((res.accepted["user_id"] == "ghost").sum())
    assert set(res.accepted["event_type"]) <= set(CFG.data.event_types)


def test_ids_equal_after_stripping_are_duplicates_in_either_representation() -> None:
    """Text columns are factorized as they are and stripped per distinct string: two cells that differ only
    by surrounding whitespace are the same id (the second is a duplicate), and the accepted id is stripped."""
    rows = [{**GOOD_ORDER, "order_id": oid} for oid in ["o1", " o1 ", "o2", "o1\t", "o3"]]
    raw = _frame(rows)
    res = validate_table(raw, ORDERS, CFG, NOW)
    assert res.rejected["row"].tolist() == [2, 4]
    assert set(res.rejected["reason"]) == {"duplicate order_id"}
    assert res.rejected["order_id"].tolist() == [" o1 ", "o1\t"]  # the original text
    assert res.accepted["order_id"].tolist() == ["o1", "o2", "o3"]
    _same_result(res, validate_table(_arrow(raw), ORDERS, CFG, NOW))


def test_object_cells_that_are_not_strings_are_read_as_their_text() -> None:
    """None and NaN cells are missing (their text is a null token), a number is its text."""
    raw = _frame([{**GOOD_ORDER, "order_id": "o1", "category": None}, {**GOOD_ORDER, "order_id": "o2", "category": np.nan},
                  {**GOOD_ORDER, "order_id": 7, "category": 3}, {**GOOD_ORDER, "order_id": None}])
    res = validate_table(raw, ORDERS, CFG, NOW)
    assert res.rejected[["row", "reason"]].values.tolist() == [[4, "missing order_id"]]
    assert res.accepted["order_id"].tolist() == ["o1", "o2", "7"]
    assert res.accepted["category"].tolist() == [None, None, "3"]


def test_rejected_rows_of_chunked_arrow_columns_keep_their_row_and_text() -> None:
    """Rows are picked from chunked Arrow columns chunk by chunk (not by concatenating them): each rejected
    row keeps its row number and original cells, whichever chunk it sits in."""
    n = 30
    rows = [{**GOOD_EVENT, "user_id": f"u{i}"} for i in range(n)]
    for i, bad in [(0, "nope"), (11, "teleport"), (29, " ")]:
        rows[i]["event_type"] = bad
    raw = _frame(rows)
    chunked = pd.DataFrame(
        {c: pd.arrays.ArrowExtensionArray(pa.chunked_array([raw[c].iloc[a:b].tolist() for a, b in [(0, 10), (10, 25), (25, n)]],
                                                          type=pa.string())) for c in raw.columns},
        index=pd.RangeIndex(1, n + 1, name="row"),
    )
    res = validate_table(chunked, EVENTS, CFG, NOW)
    assert res.rejected["row"].tolist() == [1, 12, 30]
    assert res.rejected["user_id"].tolist() == ["u0", "u11", "u29"]
    assert res.rejected["event_type"].tolist() == ["nope", "teleport", " "]
    assert res.rejected["reason"].tolist() == ["unknown event_type", "unknown event_type", "missing event_type"]
    assert res.n_accepted == n - 3


# load_dataset and the report -------------------------------------------------------------------------

def test_load_dataset_reads_only_what_is_there(tmp_path: Path) -> None:
    (tmp_path / "orders.csv").write_text("user_id,order_id,ordered_at,amount\nu1,o1,2024-01-01,3\nu2,o2,2024-01-02,-4\n")
    ds, report = load_dataset(tmp_path, config=CFG, now=NOW)
    assert ds.events is None and ds.users is None and not ds.has_events
    assert len(ds.orders) == 1 and list(report.tables) == ["orders"]
    d = report.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["rows_in"] == 2 and d["rows_rejected"] == 1
    assert d["tables"]["orders"]["reasons"] == {"negative amount": 1}
    written = report.write_rejects(tmp_path / "rej")
    rej = pd.read_csv(written["orders"], dtype=str, keep_default_na=False)
    assert rej.to_dict("records") == [{"row": "2", "reason": "negative amount", "user_id": "u2", "order_id": "o2",
                                       "ordered_at": "2024-01-02", "amount": "-4"}]


def test_load_dataset_warns_about_events_of_unknown_users(tmp_path: Path) -> None:
    (tmp_path / "orders.csv").write_text("user_id,order_id,ordered_at,amount\nu1,o1,2024-01-01,3\nu9,o2,2024-01-01,3\n")
    (tmp_path / "users.csv").write_text("user_id,joined_at\nu1,2023-01-01\n")
    (tmp_path / "events.csv").write_text("user_id,occurred_at,event_type\nu1,2024-01-01,share\nu7,2024-01-01,share\n")
    ds, report = load_dataset(tmp_path, config=CFG, now=NOW)
    assert report.tables["events"].warning_counts == {UNKNOWN_USER_WARNING: 1}
    assert report.tables["orders"].warning_counts == {UNKNOWN_USER_WARNING: 1}
    assert ds.events is not None and len(ds.events) == 2 and report.rows_rejected == 0


def test_load_dataset_defaults_now_to_the_current_time(tmp_path: Path) -> None:
    soon = (pd.Timestamp.now(tz="UTC") + pd.Timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    later = (pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    (tmp_path / "orders.csv").write_text(f"user_id,order_id,ordered_at,amount\nu1,o1,{soon},3\nu1,o2,{later},3\n")
    _, report = load_dataset(tmp_path, config=CFG)
    assert report.tables["orders"].reasons == {"future ordered_at": 1}


def test_demo_data_validates_cleanly(demo_dir: Path) -> None:
    ds, report = load_dataset(demo_dir, config=CFG, now=NOW)
    assert report.rows_rejected == 0
    assert report.rows_in == len(ds.orders) + len(ds.events) + len(ds.users)  # type: ignore[arg-type]
    assert np.isfinite(ds.orders["amount"]).all()


# ---------------------------------------------------------------- typed Parquet columns (load_dataset's path)


def _typed_vs_text(path: Path, schema: TableSchema) -> TableResult:
    """Validate a Parquet file with its timestamp and float64 columns typed, check that the result is the one
    of the all-text path, and return it."""
    typed_raw = read_table(path, schema, arrow_strings=True, typed_parquet=True, dictionary_text=True)
    text_raw = read_table(path, schema, arrow_strings=True)
    assert any(isinstance(typed_raw[c].dtype, pd.ArrowDtype) and not pa.types.is_string(typed_raw[c].dtype.pyarrow_dtype)
               for c in typed_raw.columns), "nothing was read typed"
    typed = validate_table(typed_raw, schema, CFG, NOW, path=path)
    _same_result(typed, validate_table(text_raw, schema, CFG, NOW, path=path))
    _accounted(typed)
    return typed


@pytest.mark.parametrize("unit", ["ns", "us", "ms", "s"])
@pytest.mark.parametrize("zone", [None, "UTC", "Asia/Shanghai"])
def test_typed_parquet_orders_validate_as_their_text(tmp_path: Path, unit: str, zone: str | None) -> None:
    import pyarrow.parquet as pq

    when = [
        pd.Timestamp("2024-06-01 10:00:00"), pd.Timestamp("2024-06-01 10:00:00.123456789"), None,
        pd.Timestamp("2025-01-11 11:59:59"), pd.Timestamp("2025-01-12 20:00:01"),  # within / past the tolerance (UTC)
        pd.Timestamp("1989-12-31 23:59:59"), pd.Timestamp("1990-01-01"),  # just too old / the first allowed
        pd.Timestamp("2024-02-29 00:00:00"), pd.Timestamp("2024-06-02"), pd.Timestamp("2024-06-03"),
        pd.Timestamp("2024-06-04"), pd.Timestamp("2024-06-05"), pd.Timestamp("2024-06-06"),
    ]
    amount = [12.5, 0.1, 3.0, 4.0, 5.0, 6.0, 7.0, np.nan, None, np.inf, -np.inf, -1.0, 2e9]
    ts = pa.array([None if w is None else w.value for w in when], pa.timestamp("ns"))
    if zone is not None:
        ts = pa.array([None if w is None else w.tz_localize(zone).value for w in when], pa.timestamp("ns", tz=zone))
    ts = ts.cast(pa.timestamp(unit, tz=zone), safe=False)
    n = len(when)
    table = pa.table({
        "user_id": [f"u{i}" for i in range(n)], "order_id": [f"o{i}" for i in range(n)], "ordered_at": ts,
        "amount": pa.array(amount, pa.float64()), "status": ["paid"] * n,
        "quantity": pa.array([2, None, 5, 0, 1, -3, 10**18, 6, 7, 8, 9, 10, 11], pa.int64()),
    })
    path = tmp_path / "orders.parquet"
    pq.write_table(table, path)
    res = _typed_vs_text(path, ORDERS)
    assert res.reasons["missing ordered_at"] == 1 and res.reasons["missing amount"] == 2
    assert {"future ordered_at", "too old ordered_at", "non-numeric amount", "negative amount",
            "implausible amount", "bad quantity"} <= set(res.reasons)


@pytest.mark.parametrize("distinct_categories", [False, True])
def test_parquet_text_read_as_dictionaries_validates_as_its_text(tmp_path: Path, distinct_categories: bool) -> None:
    import pyarrow.parquet as pq

    # messy text of few distinct values, 10 times over in chunks of 40 rows with dictionaries of their own
    # (factorized by their dictionaries), and for category one value per row (the fallback: hashing the strings)
    event_type = [" share", "SHARE", "share ", None, "", "NA", "bogus", "page_view", "Page_View", "Coupon_Claim", "  ",
                  "page_view"] * 10
    channel = ["wecom", None, " wecom", "group", "-", "group", "wecom", "null", "wecom", "group", "x", "wecom"] * 10
    n = len(event_type)
    events = pa.table({
        "user_id": [f"u{i % 5}" for i in range(n)],
        "occurred_at": pa.array([pd.Timestamp("2024-06-01").value] * n, pa.timestamp("ns", tz="UTC")),
        "event_type": event_type, "value": pa.array([0.5] * n), "channel": channel,
    })
    path = tmp_path / "events.parquet"
    pq.write_table(events, path, row_group_size=40)
    raw = read_table(path, EVENTS, arrow_strings=True, typed_parquet=True, dictionary_text=True)
    chunks = raw["event_type"].array._pa_array.chunks
    assert len(chunks) == 3 and all(pa.types.is_dictionary(c.type) for c in chunks)
    assert sum(len(c.dictionary) for c in chunks) <= n // 2  # the dictionary path, not the fallback
    assert not pa.types.is_dictionary(raw["user_id"].dtype.pyarrow_dtype)
    res = _typed_vs_text(path, EVENTS)
    assert res.reasons == {"missing event_type": 40, "unknown event_type": 10}
    assert res.accepted["event_type"].tolist() == ["share", "share", "share", "page_view", "page_view", "coupon_claim",
                                                   "page_view"] * 10
    assert res.accepted["channel"].tolist() == ["wecom", None, "wecom", None, "wecom", "group", "wecom"] * 10
    assert sorted(res.rejected["event_type"]) == sorted(["", "", "  ", "NA", "bogus"] * 10)  # nulls as "", as their text
    # the same table as CSV: dictionary columns there too, and the same result as plain text
    csv_path = tmp_path / "events.csv"
    write_table(events.to_pandas(), csv_path)
    csv_raw = read_table(csv_path, EVENTS, arrow_strings=True, dictionary_text=True)
    assert [c for c in csv_raw.columns if pa.types.is_dictionary(csv_raw[c].dtype.pyarrow_dtype)] == ["event_type", "channel"]
    from_csv = validate_table(csv_raw, EVENTS, CFG, NOW, path=csv_path)
    _same_result(from_csv, validate_table(read_table(csv_path, EVENTS, arrow_strings=True), EVENTS, CFG, NOW, path=csv_path))
    assert from_csv.reasons == res.reasons
    assert from_csv.accepted["event_type"].tolist() == res.accepted["event_type"].tolist()

    category = [f"c{i}" for i in range(n)] if distinct_categories else [" a", "a", None, "b"] * (n // 4)
    orders = pa.table({
        "user_id": [f"u{i}" for i in range(n)], "order_id": [f"o{i % (n - 1)}" for i in range(n)],
        "ordered_at": pa.array([pd.Timestamp("2024-06-01").value] * n, pa.timestamp("ns", tz="UTC")),
        "amount": pa.array([1.0] * n), "category": category,
        "status": ["paid", " Paid", "refunded", None, "lost", "paid"] * (n // 6),
    })
    path = tmp_path / "orders.parquet"
    pq.write_table(orders, path, row_group_size=40)
    res = _typed_vs_text(path, ORDERS)
    assert res.reasons == {"unknown status": 20, "duplicate order_id": 1}
    assert set(res.accepted["category"]) == ({f"c{i}" for i in range(n)} - {f"c{i}" for i in range(4, n, 6)} - {f"c{n - 1}"}
                                             if distinct_categories else {"a", "b", None})


def test_typed_parquet_out_of_range_years_and_signed_nan(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    us = pa.timestamp("us", tz="UTC")
    micros = [pd.Timestamp("2024-06-01", tz="UTC").value // 1000, 32_503_680_000 * 10**6, -11_676_096_000 * 10**6]
    table = pa.table({
        "user_id": ["u1", "u2", "u3"], "occurred_at": pa.array(micros, us),  # 2024, 3000 and 1600
        "event_type": ["review"] * 3, "value": pa.array([np.copysign(np.nan, -1), 0.5, -0.0]),
    })
    path = tmp_path / "events.parquet"
    pq.write_table(table, path)
    res = _typed_vs_text(path, EVENTS)
    assert res.reasons == {"future occurred_at": 1, "too old occurred_at": 1}
    assert res.rejected["occurred_at"].tolist() == ["3000-01-01T00:00:00Z", "1600-01-01T00:00:00Z"]
    assert np.isnan(res.accepted["value"].iloc[0])


def test_load_dataset_reads_typed_parquet_like_csv(tmp_path: Path) -> None:
    from features.demo_data import generate_dataset

    ds = generate_dataset(300, pd.Timestamp("2024-06-30", tz="UTC"), seed=5)
    parquet, csv = tmp_path / "p", tmp_path / "c"
    for d in (parquet, csv):
        d.mkdir()
    for name in ("orders", "events", "users"):
        frame = getattr(ds, name)
        frame.to_parquet(parquet / f"{name}.parquet", index=False)
        frame.to_csv(csv / f"{name}.csv", index=False, date_format="%Y-%m-%dT%H:%M:%S.%fZ")
    got, got_report = load_dataset(parquet, config=CFG, now=NOW)
    want, want_report = load_dataset(csv, config=CFG, now=NOW)
    for name in ("orders", "events", "users"):
        # exact: the CSV's decimals are parsed correctly rounded (Arrow), as Parquet stores the doubles
        pd.testing.assert_frame_equal(getattr(got, name), getattr(want, name), check_exact=True)
    assert got_report.rows_in == want_report.rows_in and got_report.rows_rejected == want_report.rows_rejected


@pytest.mark.parametrize(("stamp", "reason"), [("3000-01-01T00:00:00Z", "future occurred_at"),
                                               ("1600-01-01T00:00:00Z", "too old occurred_at"),
                                               ("2262-04-12T00:00:00Z", "future occurred_at")])
def test_years_beyond_nanoseconds_in_the_common_form_are_rejected_not_a_crash(stamp: str, reason: str) -> None:
    # "YYYY-MM-DDTHH:MM:SSZ" is parsed in Arrow; cast to nanoseconds, such years used to raise ArrowInvalid
    for raw in (_frame([{**GOOD_EVENT, "occurred_at": stamp}]), _arrow(_frame([{**GOOD_EVENT, "occurred_at": stamp}]))):
        res = validate_table(raw, EVENTS, CFG, NOW)
        assert res.reasons == {reason: 1}


def test_typed_parquet_columns_the_contract_types_otherwise_are_checked_as_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.parquet as pq

    import features.validation as validation

    table = pa.table({
        "user_id": pa.array([1.0, 2.0, np.nan]), "order_id": ["o1", "o2", "o3"],  # numeric ids, as pandas writes them
        "ordered_at": pa.array([pd.Timestamp("2024-06-01").value] * 3, pa.timestamp("ns")),
        "amount": [1.0, 2.0, 3.0], "quantity": pa.array([1.5, np.nan, 1.0]),  # an int column written as float64
        "category": pa.array([pd.Timestamp("2024-01-01").value] * 3, pa.timestamp("ns")),  # a string column
    })
    path = tmp_path / "orders.parquet"
    pq.write_table(table, path)
    raw = read_table(path, ORDERS, arrow_strings=True, typed_parquet=True, dictionary_text=True)
    types = {c: raw[c].dtype.pyarrow_dtype for c in raw.columns}
    assert [c for c, t in types.items() if not (pa.types.is_string(t) or pa.types.is_dictionary(t))] == ["ordered_at", "amount"]
    assert [c for c, t in types.items() if pa.types.is_dictionary(t)] == []  # ids are never read as dictionaries
    res = _typed_vs_text(path, ORDERS)
    assert res.reasons == {"missing user_id": 1, "bad quantity": 1}
    assert res.accepted["user_id"].tolist() == ["2"] and res.accepted["category"].iloc[0] == "2024-01-01T00:00:00Z"
    # a column typed otherwise than the contract reaches validate_table as its text, never the typed checks
    raw["user_id"] = pd.Series(pd.arrays.ArrowExtensionArray(pa.array([1.0, 2.0, None])), index=raw.index)
    checked: list[str] = []
    original = validation.typed_values
    monkeypatch.setattr(validation, "typed_values", lambda s: (checked.append(str(s.name)), original(s))[1])
    again = validate_table(raw, ORDERS, CFG, NOW, path=path)
    assert checked == ["ordered_at", "amount"] and again.reasons == res.reasons


def test_arrow_text_with_a_null_among_distinct_values_keeps_each_row_its_own_value() -> None:
    # nothing to strip: the distinct raw cells are the distinct strings (no second factorizing), and a null
    # among them must not shift the values of the cells after it
    rows = [{**GOOD_EVENT, "user_id": u} for u in ("u1", None, "u2", "u3", None, "u1")]
    for raw in (_frame(rows), _arrow(_frame(rows))):
        res = validate_table(raw, EVENTS, CFG, NOW)
        assert res.accepted["user_id"].tolist() == ["u1", "u2", "u3", "u1"]
        assert res.reasons == {"missing user_id": 2}
    padded = [{**GOOD_EVENT, "user_id": u} for u in ("u1", None, " u2", "u3")]  # stripping changes a cell
    assert validate_table(_arrow(_frame(padded)), EVENTS, CFG, NOW).accepted["user_id"].tolist() == ["u1", "u2", "u3"]


def test_load_dataset_keeps_only_the_columns_asked_for_and_accepts_the_same_rows(tmp_path: Path) -> None:
    from features.demo_data import generate_dataset
    from features.pipeline import VALIDATED_FEATURE_INPUT_COLUMNS

    ds = generate_dataset(200, pd.Timestamp("2024-06-30", tz="UTC"), seed=3)
    for name in ("orders", "events", "users"):
        getattr(ds, name).to_parquet(tmp_path / f"{name}.parquet", index=False)
    full, full_report = load_dataset(tmp_path, config=CFG, now=NOW)
    slim, slim_report = load_dataset(tmp_path, config=CFG, now=NOW, columns={**VALIDATED_FEATURE_INPUT_COLUMNS, "users": ()})
    assert list(slim.orders.columns) == ["user_id", "ordered_at", "amount", "category", "status"]
    assert list(slim.events.columns) == ["user_id", "occurred_at", "event_type", "value"]
    assert list(slim.users.columns) == ["user_id"]  # user_id is always kept
    assert "order_id" in full.orders.columns and "channel" in full.events.columns
    for name in ("orders", "events", "users"):
        got, want = getattr(slim, name), getattr(full, name)
        pd.testing.assert_frame_equal(got, want[list(got.columns)])
    assert slim_report.to_dict() == full_report.to_dict()


def test_decimals_are_read_correctly_rounded_from_any_text_column() -> None:
    # 17 significant digits: pandas' to_numeric gives 0.3 for the first, one unit in the last place off
    cells = ["0.30000000000000004", "2.2250738585072014e-308", "123456.78901234567"]
    rows = [{**GOOD_ORDER, "order_id": f"o{i}", "amount": a} for i, a in enumerate(cells)]
    for raw in (_frame(rows), _arrow(_frame(rows))):  # object cells (the API, Spark's workers) and Arrow cells
        got = validate_table(raw, ORDERS, CFG, NOW).accepted["amount"].tolist()
        assert got == [float(c) for c in cells]


# hashing Arrow text --------------------------------------------------------------------------------------


def test_a_validated_table_is_the_same_whether_its_text_is_hashed_in_halves(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same rows accepted and rejected (duplicate ids across the halves, unknown users, nulls), whichever way."""
    import features.cells as fc

    rows = [{**GOOD_ORDER, "user_id": f"u{i % 7}", "order_id": f"o{i % 23}"} for i in range(60)]
    rows[5]["order_id"] = ""
    rows[40]["user_id"] = " "
    raw = _arrow(_frame(rows))
    one_piece = validate_table(raw, ORDERS, CFG, NOW, known_users=["u1", "u2"])
    monkeypatch.setattr(fc, "PARALLEL_HASH_ROWS", 10)
    halves = validate_table(raw, ORDERS, CFG, NOW, known_users=["u1", "u2"])
    _same_result(one_piece, halves)
    assert one_piece.reasons == {"duplicate order_id": 35, "missing order_id": 1, "missing user_id": 1}


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_arrow_text_holds_the_same_values_and_the_same_features(tmp_path: Path, fmt: str) -> None:
    """``arrow_text=True`` (what ``strata features`` loads) gives each text column as an Arrow dictionary with
    the same values as the object strings: stripped ids, canonical event types, a missing status as paid,
    missing optional text as null, the same rejected rows and warnings, and the same feature table."""
    from features.demo_data import generate_dataset
    from features.io import write_table
    from features.pipeline import build_features

    ds = generate_dataset(150, pd.Timestamp("2024-06-30", tz="UTC"), seed=5)
    orders, events, users = ds.orders.copy(), ds.events.copy(), ds.users.copy()
    orders["user_id"] = orders["user_id"].astype(object)
    orders.loc[0, "user_id"] = " " + str(orders.loc[0, "user_id"]) + " "  # stripped: the same user
    orders.loc[1, "status"] = None  # taken as paid
    orders.loc[2, "status"] = "teleported"  # rejected
    orders.loc[3, "category"] = None  # kept, missing
    events["event_type"] = events["event_type"].astype(object)
    events.loc[0, "event_type"] = "SHARE"  # canonical: share
    events.loc[1, "event_type"] = "nope"  # rejected
    events.loc[2, "user_id"] = "stranger"  # kept, with a warning
    for name, frame in (("orders", orders), ("events", events), ("users", users)):
        write_table(frame, tmp_path / f"{name}.{fmt}")
    objects, object_report = load_dataset(tmp_path, config=CFG, now=NOW)
    arrow, arrow_report = load_dataset(tmp_path, config=CFG, now=NOW, arrow_text=True)
    assert arrow_report.to_dict() == object_report.to_dict()
    assert object_report.tables["events"].warning_counts[UNKNOWN_USER_WARNING] == 1
    for name in ("orders", "events", "users"):
        got, want = getattr(arrow, name), getattr(objects, name)
        assert list(got.columns) == list(want.columns)
        for col in got.columns:
            if want[col].dtype == object:
                assert isinstance(got[col].dtype, pd.ArrowDtype) and pa.types.is_dictionary(got[col].dtype.pyarrow_dtype)
                assert got[col].astype(object).where(got[col].notna(), None).tolist() == want[col].tolist(), (name, col)
            else:
                pd.testing.assert_series_equal(got[col], want[col])
    assert "SHARE" not in set(arrow.events["event_type"].astype(object)) and "share" in set(arrow.events["event_type"].astype(object))
    assert arrow.orders["status"].isna().sum() == 0 and arrow.orders["category"].isna().sum() >= 1
    as_of = pd.Timestamp("2024-06-30", tz="UTC")
    pd.testing.assert_frame_equal(build_features(arrow, as_of, CFG), build_features(objects, as_of, CFG))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.none(), st.sampled_from(["o1", " o1", "o1\t", "o2", "NA", "n/a", "", " ", "-", "ö"]),
                          st.from_regex(r"o[0-9]{1,6}", fullmatch=True)), min_size=1, max_size=30))
def test_ids_only_checked_are_found_missing_or_repeated_as_when_hashed(
    monkeypatch: pytest.MonkeyPatch, order_ids: list[str | None]
) -> None:
    """An order id the caller does not keep is first tested for repeats without hashing (a large column): the
    same rows are rejected for the same reasons (missing, duplicate) as when its codes are compared."""
    import features.cells as fc

    raw = _arrow(_frame([{**GOOD_ORDER, "order_id": oid} for oid in order_ids]))
    hashed = validate_table(raw, ORDERS, CFG, NOW, columns=["user_id"])
    with monkeypatch.context() as m:
        m.setattr(fc, "PARALLEL_HASH_ROWS", 0)
        tested = validate_table(raw, ORDERS, CFG, NOW, columns=["user_id"])
    _same_result(hashed, tested)


def test_distinct_ids_only_checked_are_not_hashed(monkeypatch: pytest.MonkeyPatch) -> None:
    import features.cells as fc
    import features.validation as v

    monkeypatch.setattr(fc, "PARALLEL_HASH_ROWS", 0)
    column = pd.Series(pd.arrays.ArrowExtensionArray(pa.chunked_array(
        [pa.array(["o1", " NA", None], pa.string()), pa.array(["o2 ", "null", "o3"], pa.string())])))
    assert fc.missing_if_all_distinct(column).tolist() == [False, True, True, False, True, False]
    repeated = pd.Series(pd.arrays.ArrowExtensionArray(pa.array(["o1", "o2", " o1"], pa.string())))
    assert fc.missing_if_all_distinct(repeated) is None  # the caller hashes it to find the repeat

    hashed: list[str] = []
    text_class = v.TextColumn

    class Spy(text_class):  # type: ignore[misc, valid-type]
        def __init__(self, column: pd.Series) -> None:
            hashed.append(str(column.name))
            super().__init__(column)

    monkeypatch.setattr(v, "TextColumn", Spy)
    rows = [{**GOOD_ORDER, "order_id": oid} for oid in ["o1", "o2", "NA", "o3"]]
    res = validate_table(_arrow(_frame(rows)), ORDERS, CFG, NOW, columns=["user_id"])
    assert "order_id" not in hashed and "user_id" in hashed
    assert res.rejected[["row", "reason"]].values.tolist() == [[3, "missing order_id"]]
    hashed.clear()
    validate_table(_arrow(_frame(rows)), ORDERS, CFG, NOW)  # kept: hashed for its values
    assert "order_id" in hashed


