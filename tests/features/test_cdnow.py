"""CDNOW import: both layouts, exact row and customer counts, and a clean pass through validation."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.cdnow import cdnow_orders, import_cdnow, read_cdnow
from features.config import StrataConfig
from features.errors import InputFileError
from features.validation import load_dataset


@pytest.fixture(scope="module")
def master(cdnow_master_path: Path) -> pd.DataFrame:
    return cdnow_orders(cdnow_master_path)


def test_master_counts_and_types(master: pd.DataFrame) -> None:
    assert len(master) == 69_659
    assert master["user_id"].nunique() == 23_570
    assert list(master.columns) == ["user_id", "order_id", "ordered_at", "amount", "status", "quantity"]
    assert str(master["ordered_at"].dtype) == "datetime64[ns, UTC]" and str(master["quantity"].dtype) == "Int64"
    assert master["order_id"].is_unique and (master["status"] == "paid").all()
    assert master["ordered_at"].min() == pd.Timestamp("1997-01-01", tz="UTC")
    assert master["ordered_at"].max() == pd.Timestamp("1998-06-30", tz="UTC")
    assert (master["ordered_at"] == master["ordered_at"].dt.normalize()).all()  # dates at 00:00 UTC
    # The cohort made its first purchase in the first quarter of 1997.
    first = master.groupby("user_id")["ordered_at"].min()
    assert first.max() < pd.Timestamp("1997-04-01", tz="UTC")


def test_master_values_match_the_file(master: pd.DataFrame, cdnow_master_path: Path) -> None:
    raw = pd.read_csv(cdnow_master_path, sep=r"\s+", dtype={"customer_id": str, "date": str})
    assert master["amount"].sum() == pytest.approx(raw["dollar_value"].sum())
    assert int(master["quantity"].sum()) == int(raw["number_of_cds"].sum())
    assert master.loc[2].to_dict() == {
        "user_id": "00002", "order_id": "00002-19970112-3", "ordered_at": pd.Timestamp("1997-01-12", tz="UTC"),
        "amount": 77.0, "status": "paid", "quantity": 5,
    }


def test_sample_is_a_subset_of_master(master: pd.DataFrame, cdnow_sample_path: Path) -> None:
    sample = cdnow_orders(cdnow_sample_path)
    assert len(sample) == 6_919 and sample["user_id"].nunique() == 2_357
    assert set(sample["user_id"]) <= set(master["user_id"])
    # The sample holds every purchase line of its customers.
    same = master[master["user_id"].isin(set(sample["user_id"]))]
    key = ["user_id", "ordered_at", "amount", "quantity"]
    pd.testing.assert_frame_equal(same[key].sort_values(key).reset_index(drop=True),
                                  sample[key].sort_values(key).reset_index(drop=True))


def test_import_writes_orders_that_validate_cleanly(master: pd.DataFrame, cdnow_master_path: Path, tmp_path: Path) -> None:
    written = import_cdnow(cdnow_master_path, tmp_path)
    assert written == tmp_path / "orders.csv"
    ds, report = load_dataset(tmp_path, config=StrataConfig(), now=pd.Timestamp("2025-01-01", tz="UTC"))
    assert report.rows_in == 69_659 and report.rows_rejected == 0
    pd.testing.assert_frame_equal(ds.orders, master)
    assert ds.events is None and ds.users is None


def test_read_cdnow_numbers_lines(cdnow_sample_path: Path) -> None:
    raw = read_cdnow(cdnow_sample_path)
    assert raw["line"].tolist()[:3] == [1, 2, 3] and raw["customer_id"].iloc[0] == "00004"


def test_bad_cdnow_files(tmp_path: Path) -> None:
    p = tmp_path / "cd.txt"
    with pytest.raises(InputFileError, match="file not found"):
        cdnow_orders(p)
    p.write_text("")
    with pytest.raises(InputFileError, match="empty file"):
        cdnow_orders(p)
    p.write_text("a b c\r\n")
    with pytest.raises(InputFileError, match="line 1 has 3 fields"):
        cdnow_orders(p)
    p.write_text(" 00001 19970101  1   11.77\r\n 00002 19971301  1   12.00\r\n")
    with pytest.raises(InputFileError, match=r"line 2: column 'date' has value '19971301'"):
        cdnow_orders(p)
    p.write_text(" customer_id  date dollars\r\n 00001 19970101 1\r\n")
    with pytest.raises(InputFileError, match="unexpected CDNOW header"):
        cdnow_orders(p)
