"""Import of the CDNOW purchase histories (Fader and Hardie) into the orders contract.

Two layouts, both whitespace-separated with CRLF line endings:

* ``CDNOW_master.txt``: header ``customer_id date number_of_cds dollar_value``, 69,659 rows.
* ``CDNOW_sample.txt``: no header; ``master_customer_id sample_customer_id date number_of_cds dollar_value``.

Each purchase line becomes one order: ``user_id`` = the (master) customer id as written (e.g. ``00001``),
``order_id`` = ``<customer>-<yyyymmdd>-<line>`` with the 1-based data line number in the file (unique and
deterministic), ``ordered_at`` = the date at 00:00 UTC, ``amount`` = dollar value, ``quantity`` = number
of CDs, ``status`` = ``paid``. There are no events and no users table: a shop without engagement data.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from features.errors import InputFileError
from features.io import write_table

MASTER_COLUMNS = ("customer_id", "date", "number_of_cds", "dollar_value")
SAMPLE_COLUMNS = ("customer_id", "sample_customer_id", "date", "number_of_cds", "dollar_value")


def _layout(path: Path) -> tuple[tuple[str, ...], int]:
    """(column names, header lines to skip) of a CDNOW file, judged from its first line."""
    try:
        with path.open("r", encoding="ascii", newline="") as fh:
            first = fh.readline()
    except (OSError, UnicodeDecodeError) as err:
        raise InputFileError(f"{path}: cannot be read as a CDNOW text file ({err})") from None
    fields = first.split()
    if not fields:
        raise InputFileError(f"{path}: empty file (expected CDNOW_master.txt or CDNOW_sample.txt)")
    if fields[0] == "customer_id":
        if tuple(fields) != MASTER_COLUMNS:
            raise InputFileError(f"{path}: unexpected CDNOW header {' '.join(fields)!r} (expected {' '.join(MASTER_COLUMNS)!r})")
        return MASTER_COLUMNS, 1
    if len(fields) == 4:
        return MASTER_COLUMNS, 0
    if len(fields) == 5:
        return SAMPLE_COLUMNS, 0
    raise InputFileError(
        f"{path}: line 1 has {len(fields)} fields; expected the CDNOW master (4 columns) or sample (5 columns) layout"
    )


def read_cdnow(path: Path | str) -> pd.DataFrame:
    """Read a CDNOW file as strings: ``customer_id``, ``date``, ``number_of_cds``, ``dollar_value``, ``line``.

    ``line`` is the 1-based data line number (the header, if any, is not counted).

    Raises
    ------
    InputFileError
        If the file is missing, empty, or not in one of the two CDNOW layouts.
    """
    path = Path(path)
    if path.is_dir():
        raise InputFileError(f"{path}: is a directory; give the CDNOW_master.txt or CDNOW_sample.txt file in it")
    if not path.is_file():
        raise InputFileError(f"{path}: file not found (expected CDNOW_master.txt or CDNOW_sample.txt)")
    columns, skip = _layout(path)
    try:
        df = pd.read_csv(path, sep=r"\s+", header=None, names=list(columns), skiprows=skip, dtype=str,
                         keep_default_na=False, engine="c")
    except (pd.errors.ParserError, ValueError) as err:
        raise InputFileError(f"{path}: not a CDNOW file ({str(err).splitlines()[0]})") from None
    df["line"] = np.arange(1, len(df) + 1)
    return df[["customer_id", "date", "number_of_cds", "dollar_value", "line"]]


def cdnow_orders(path: Path | str) -> pd.DataFrame:
    """Convert a CDNOW file into a typed orders table of the contract (one order per purchase line).

    Returns
    -------
    Orders with ``user_id``, ``order_id``, ``ordered_at`` (00:00 UTC of the purchase date), ``amount``
    (US dollars), ``status`` (``paid``) and ``quantity`` (number of CDs, Int64).

    Raises
    ------
    InputFileError
        Naming the line and value when a date, count or dollar value cannot be parsed.
    """
    path = Path(path)
    raw = read_cdnow(path)
    ordered_at = pd.to_datetime(raw["date"], format="%Y%m%d", errors="coerce", utc=True)
    amount = pd.to_numeric(raw["dollar_value"], errors="coerce")
    quantity = pd.to_numeric(raw["number_of_cds"], errors="coerce")
    for col, parsed in (("date", ordered_at), ("dollar_value", amount), ("number_of_cds", quantity)):
        bad = parsed.isna().to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputFileError(
                f"{path}: line {int(raw['line'].iloc[i])}: column {col!r} has value {raw[col].iloc[i]!r} "
                f"that cannot be parsed ({int(bad.sum())} such lines)"
            )
    order_id = raw["customer_id"] + "-" + raw["date"] + "-" + raw["line"].astype(str)
    return pd.DataFrame(
        {
            "user_id": raw["customer_id"].to_numpy(dtype=object),
            "order_id": order_id.to_numpy(dtype=object),
            "ordered_at": ordered_at,
            "amount": amount.to_numpy(dtype=float),
            "status": np.full(len(raw), "paid", dtype=object),
            "quantity": pd.array(quantity.to_numpy(), dtype="Int64"),
        }
    )


def import_cdnow(path: Path | str, out_dir: Path | str, fmt: str = "csv") -> Path:
    """Convert a CDNOW file and write ``orders.csv`` (or ``orders.parquet``) into ``out_dir``.

    Returns
    -------
    The written orders file.
    """
    if fmt not in ("csv", "parquet"):
        raise InputFileError(f"unknown output format {fmt!r}: use csv or parquet")
    return write_orders(cdnow_orders(path), out_dir, fmt)


def write_orders(orders: pd.DataFrame, out_dir: Path | str, fmt: str = "csv") -> Path:
    """Write ``orders`` as ``orders.csv`` (or ``orders.parquet``) into ``out_dir``, created if missing.

    The table is written to a hidden temporary file in ``out_dir`` first and renamed over the target, so a
    failed write leaves an earlier file whole and no half-written one.

    Returns
    -------
    The written orders file.

    Raises
    ------
    OSError
        If ``out_dir`` cannot be created or written (the temporary file is removed).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"orders.{fmt}"
    tmp = out / f".orders.{os.getpid()}.tmp.{fmt}"  # the suffix tells write_table the format
    try:
        write_table(orders, tmp)
        os.replace(tmp, target)
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # (a directory that refused the write may refuse this too: the write's error is the one to see)
            pass
    return target
