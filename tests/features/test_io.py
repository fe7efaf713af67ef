"""Reading input files as raw strings; file-level problems are one clear InputFileError."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.contract import EVENTS, ORDERS, USERS
from features.errors import InputFileError
from features.io import UNTERMINATED_QUOTE, find_table_files, read_table, table_as_strings, write_table

HEADER = "user_id,order_id,ordered_at,amount"


def _write(tmp_path: Path, text: str | bytes, name: str = "orders.csv") -> Path:
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


def test_reads_every_cell_as_the_string_in_the_file(tmp_path: Path) -> None:
    p = _write(tmp_path, HEADER + ",status\nu1,o1,2024-01-05,0012.50,NA\nu2,o2,2024-01-06, 7 ,\n")
    df = read_table(p, ORDERS)
    assert list(df.columns) == ["user_id", "order_id", "ordered_at", "amount", "status"]
    assert all(pd.api.types.is_object_dtype(dt) for dt in df.dtypes)
    assert df["amount"].tolist() == ["0012.50", " 7 "]  # nothing coerced or stripped
    assert df["status"].tolist() == ["NA", ""]  # "NA" is not turned into a missing value
    assert df.index.tolist() == [1, 2] and df.index.name == "row"


def test_quoted_fields_bom_and_crlf(tmp_path: Path) -> None:
    text = '\ufeff' + HEADER + ',category\r\n"u1","o1","2024-01-05T10:00:00Z","1,5","a, b"\r\n'
    df = read_table(_write(tmp_path, text), ORDERS)
    assert df.loc[1, "user_id"] == "u1" and df.loc[1, "amount"] == "1,5" and df.loc[1, "category"] == "a, b"


def test_header_only_gives_an_empty_frame(tmp_path: Path) -> None:
    df = read_table(_write(tmp_path, HEADER + "\n"), ORDERS)
    assert len(df) == 0 and list(df.columns) == HEADER.split(",")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match=r"orders.csv: file not found"):
        read_table(tmp_path / "orders.csv", ORDERS)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="is a directory"):
        read_table(tmp_path, ORDERS)


@pytest.mark.parametrize("text", ["", "   \n\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    with pytest.raises(InputFileError, match="empty file"):
        read_table(_write(tmp_path, text), ORDERS)


def test_blank_first_line(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="line 1 is empty; expected the header line"):
        read_table(_write(tmp_path, "\n" + HEADER + "\nu1,o1,2024-01-01,3\n"), ORDERS)


def test_missing_required_column_is_named_with_the_columns_found(tmp_path: Path) -> None:
    p = _write(tmp_path, "user_id,order_id,ordered_at,price\nu1,o1,2024-01-01,3\n")
    with pytest.raises(InputFileError) as err:
        read_table(p, ORDERS)
    msg = str(err.value)
    assert str(p) in msg and "'amount'" in msg and "found columns: 'user_id', 'order_id', 'ordered_at', 'price'" in msg
    assert "\n" not in msg


def test_case_mismatch_gets_a_hint(tmp_path: Path) -> None:
    p = _write(tmp_path, "User_ID,order_id,ordered_at,amount\nu1,o1,2024-01-01,3\n")
    with pytest.raises(InputFileError, match=r"case-sensitive \('User_ID' for 'user_id'"):
        read_table(p, ORDERS)


@pytest.mark.parametrize(("delim", "label"), [(";", "semicolon"), ("\t", "tab"), ("|", "pipe")])
def test_wrong_delimiter_is_detected(tmp_path: Path, delim: str, label: str) -> None:
    text = delim.join(HEADER.split(",")) + "\n" + delim.join(["u1", "o1", "2024-01-01", "3,5"]) + "\n"
    with pytest.raises(InputFileError, match=rf"wrong delimiter.*{label}"):
        read_table(_write(tmp_path, text), ORDERS)


def test_gbk_encoding_is_reported(tmp_path: Path) -> None:
    text = (HEADER + ",category\nu1,o1,2024-01-01,3,护肤品\n").encode("gbk")
    with pytest.raises(InputFileError, match=r"not UTF-8 \(looks like GBK/GB18030\): byte 0x.. on line 2 .*re-save"):
        read_table(_write(tmp_path, text), ORDERS)


def test_utf16_encoding_is_reported(tmp_path: Path) -> None:
    text = (HEADER + "\nu1,o1,2024-01-01,3\n").encode("utf-16")
    with pytest.raises(InputFileError, match="UTF-16"):
        read_table(_write(tmp_path, text), ORDERS)


def test_non_utf8_beyond_the_sniffed_head_is_reported(tmp_path: Path) -> None:
    good = "".join(f"u{i},o{i},2024-01-01,3,skincare\n" for i in range(5000))
    text = (HEADER + ",category\n" + good).encode() + "u9,o9,2024-01-01,3,护肤\n".encode("gbk")
    with pytest.raises(InputFileError, match="not UTF-8"):
        read_table(_write(tmp_path, text), ORDERS)


def test_utf8_chinese_is_fine(tmp_path: Path) -> None:
    df = read_table(_write(tmp_path, HEADER + ",category\nu1,o1,2024-01-01,3,护肤品\n"), ORDERS)
    assert df.loc[1, "category"] == "护肤品"


def test_duplicate_column_names(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="duplicate column name 'amount'"):
        read_table(_write(tmp_path, HEADER + ",amount\nu1,o1,2024-01-01,3,4\n"), ORDERS)


def test_rows_with_the_wrong_number_of_fields_are_set_aside_with_their_row(tmp_path: Path) -> None:
    text = HEADER + "\nu1,o1,2024-01-01,3\nu2,o2,2024-01-02,3,extra\nu3,o3,2024-01-03,3\nu4,o4\n"
    df = read_table(_write(tmp_path, text), ORDERS)
    assert df["user_id"].tolist() == ["u1", "u3"]
    assert df.index.tolist() == [1, 3]
    assert [r for r, _ in df.attrs["malformed_rows"]] == [2, 4]
    assert "extra" in df.attrs["malformed_rows"][0][1]


UNCLOSED = HEADER + '\nu1,o1,2024-01-01,1\nu2,o2,2024-01-02,"oops\nu3,o3,2024-01-03,3\nu4,o4,2024-01-04,4\n'


def test_an_unclosed_quote_rejects_its_row_and_the_lines_after_it_are_read(tmp_path: Path) -> None:
    # the reader put every line after the quote into u2's amount: u3 and u4 were neither accepted nor rejected
    df = read_table(_write(tmp_path, UNCLOSED), ORDERS)
    assert df["user_id"].tolist() == ["u1", "u3", "u4"]
    assert df["amount"].tolist() == ["1", "3", "4"]
    assert df.index.tolist() == [1, 3, 4]
    assert df.attrs["malformed_rows"] == [(2, 'u2,o2,2024-01-02,"oops', UNTERMINATED_QUOTE)]


def test_an_unclosed_quote_after_a_multiline_record_and_gzip(tmp_path: Path) -> None:
    import gzip

    # record 1 spans lines 2-3 (a closed quote); record 2 opens a quote on line 4 that is never closed
    text = (HEADER + '\nu1,o1,2024-01-01,"1\nu2,o2,2024-01-02,2"\nu3,o3,2024-01-03,"3\nu4,o4,2024-01-04,4\n'
            "u5,o5,2024-01-05,5")
    gz = tmp_path / "orders.csv.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    for path in (_write(tmp_path, text), gz):
        df = read_table(path, ORDERS)
        assert df["user_id"].tolist() == ["u1", "u4", "u5"]
        assert df["amount"].tolist() == ["1\nu2,o2,2024-01-02,2", "4", "5"]
        assert df.index.tolist() == [1, 3, 4]
        assert df.attrs["malformed_rows"] == [(2, 'u3,o3,2024-01-03,"3', UNTERMINATED_QUOTE)]


def test_a_closed_multiline_value_in_the_last_row_is_kept(tmp_path: Path) -> None:
    for last in ('u2,o2,2024-01-02,2,"line\nbreak"\n', 'u2,o2,2024-01-02,2,"line\nbreak"', 'u2,o2,2024-01-02,2,"a\n""b"""\n'):
        df = read_table(_write(tmp_path, HEADER + ",category\nu1,o1,2024-01-01,1,x\n" + last), ORDERS)
        assert df["user_id"].tolist() == ["u1", "u2"], last
        assert df.attrs["malformed_rows"] == []


def test_validation_accounts_for_every_row_after_an_unclosed_quote(tmp_path: Path) -> None:
    from features.config import StrataConfig
    from features.validation import load_dataset

    _write(tmp_path, UNCLOSED)
    dataset, report = load_dataset(tmp_path, config=StrataConfig(), now="2025-01-01")
    orders = report.tables["orders"]
    assert (orders.rows_in, orders.n_accepted, orders.n_rejected) == (4, 3, 1)
    assert sorted(dataset.orders["user_id"].tolist()) == ["u1", "u3", "u4"]
    assert orders.rejected["reason"].tolist() == [UNTERMINATED_QUOTE]
    assert orders.rejected["row"].tolist() == [2]


def test_parquet_is_read_as_strings(tmp_path: Path) -> None:
    table = pa.table(
        {
            "user_id": ["u1", None],
            "occurred_at": pa.array(pd.to_datetime(["2024-01-05 10:00:00", "2024-01-06 11:30:00.5"], format="ISO8601").tz_localize("Asia/Shanghai")),
            "event_type": pa.array(["share", "review"]).dictionary_encode(),
            "value": [None, 0.5],
        }
    )
    p = tmp_path / "events.parquet"
    pq.write_table(table, p)
    df = read_table(p, EVENTS)
    assert df["user_id"].tolist() == ["u1", ""]
    assert df["occurred_at"].tolist() == ["2024-01-05T02:00:00Z", "2024-01-06T03:30:00.500000000Z"]  # in UTC
    assert df["event_type"].tolist() == ["share", "review"]
    assert df["value"].tolist() == ["", "0.5"]


def test_parquet_columns_outside_the_contract_are_not_read(tmp_path: Path) -> None:
    # a list column outside the contract has no text form: it refused the whole file
    p = tmp_path / "orders.parquet"
    pq.write_table(pa.table({"user_id": ["u1"], "order_id": ["o1"], "ordered_at": ["2024-01-01"], "amount": [3.0],
                             "tags": pa.array([[1, 2]], pa.list_(pa.int64())), "note": ["x"]}), p)
    df = read_table(p, ORDERS)
    assert list(df.columns) == ["user_id", "order_id", "ordered_at", "amount"]
    assert df.attrs["ignored_columns"] == ["tags", "note"]


def test_validation_warns_about_ignored_parquet_columns(tmp_path: Path) -> None:
    from features.config import StrataConfig
    from features.validation import load_dataset

    pq.write_table(pa.table({"user_id": ["u1"], "order_id": ["o1"], "ordered_at": ["2024-01-01"], "amount": [3.0],
                             "tags": pa.array([[1, 2]], pa.list_(pa.int64()))}), tmp_path / "orders.parquet")
    dataset, report = load_dataset(tmp_path, config=StrataConfig(), now="2025-01-01")
    assert len(dataset.orders) == 1
    assert report.tables["orders"].warnings == ["ignored columns not in the orders contract: tags"]


def test_naive_parquet_timestamps_mean_utc(tmp_path: Path) -> None:
    p = tmp_path / "users.parquet"
    pq.write_table(pa.table({"user_id": ["u1"], "joined_at": pa.array(pd.to_datetime(["2024-01-05 10:00"]))}), p)
    assert read_table(p, USERS)["joined_at"].tolist() == ["2024-01-05T10:00:00Z"]


def test_parquet_missing_column_and_broken_file(tmp_path: Path) -> None:
    p = tmp_path / "orders.parquet"
    pq.write_table(pa.table({"user_id": ["u1"], "order_id": ["o1"]}), p)
    with pytest.raises(InputFileError, match="missing required columns 'ordered_at', 'amount'"):
        read_table(p, ORDERS)
    p.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InputFileError, match="not a readable Parquet file"):
        read_table(p, ORDERS)


def test_write_table_round_trip(tmp_path: Path) -> None:
    df = pd.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "order_id": ["o1", "o2"],
            "ordered_at": pd.to_datetime(["2024-01-05 10:00:00", "2024-02-01"], utc=True, format="ISO8601"),
            "amount": [12.5, 1234567.89],
            "quantity": pd.array([1, None], dtype="Int64"),
        }
    )
    raw = read_table(write_table(df, tmp_path / "orders.csv"), ORDERS)
    assert raw["ordered_at"].tolist() == ["2024-01-05T10:00:00Z", "2024-02-01T00:00:00Z"]
    assert raw["amount"].tolist() == ["12.5", "1234567.89"] and raw["quantity"].tolist() == ["1", ""]
    assert table_as_strings(df).equals(raw.reset_index(drop=True))


# find_table_files -----------------------------------------------------------------------------------

def test_find_files_in_a_directory(tmp_path: Path) -> None:
    (tmp_path / "orders.csv").write_text(HEADER)
    (tmp_path / "events.parquet").write_text("x")
    found = find_table_files(tmp_path)
    assert found == {"orders": tmp_path / "orders.csv", "events": tmp_path / "events.parquet", "users": None}


def test_explicit_paths_override(tmp_path: Path) -> None:
    (tmp_path / "orders.csv").write_text(HEADER)
    other = tmp_path / "sub" / "my_orders.csv"
    found = find_table_files(tmp_path, orders=other, users=tmp_path / "u.csv")
    assert found["orders"] == other and found["users"] == tmp_path / "u.csv"
    assert find_table_files(None, orders=other)["orders"] == other


def test_orders_are_required(tmp_path: Path) -> None:
    (tmp_path / "events.csv").write_text("x")
    with pytest.raises(InputFileError, match="no orders file"):
        find_table_files(tmp_path)
    with pytest.raises(InputFileError, match="pass --data DIR"):
        find_table_files(None)


def test_missing_directory_and_ambiguous_files(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="data directory not found"):
        find_table_files(tmp_path / "nope")
    (tmp_path / "orders.csv").write_text(HEADER)
    (tmp_path / "orders.parquet").write_text("x")
    with pytest.raises(InputFileError, match="several orders files"):
        find_table_files(tmp_path)
