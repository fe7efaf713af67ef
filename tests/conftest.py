"""Shared fixtures: one small synthetic data set (in memory and as CSV files) and the CDNOW files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.dataset import Dataset

CDNOW_DIR = Path("/work/shared/data/cdnow")
DEMO_END = pd.Timestamp("2024-12-31", tz="UTC")


@pytest.fixture(scope="session")
def demo_dataset() -> Dataset:
    """2,000 synthetic users with 2.5 years of history up to 2024-12-31 UTC (seed 7). Do not mutate."""
    from features.demo_data import generate_dataset

    return generate_dataset(n_users=2000, end=DEMO_END, seed=7)


@pytest.fixture(scope="session")
def demo_dir(demo_dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory with ``orders.csv``, ``events.csv`` and ``users.csv`` of :func:`demo_dataset`."""
    from features.demo_data import write_dataset

    out = tmp_path_factory.mktemp("demo")
    write_dataset(demo_dataset, out, "csv")
    return out


def _cdnow(name: str) -> Path:
    path = CDNOW_DIR / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path


@pytest.fixture(scope="session")
def cdnow_master_path() -> Path:
    """``CDNOW_master.txt``: 69,659 purchase lines of 23,570 customers, with a header."""
    return _cdnow("CDNOW_master.txt")


@pytest.fixture(scope="session")
def cdnow_sample_path() -> Path:
    """``CDNOW_sample.txt``: 6,919 lines of the 2,357-customer sample, no header."""
    return _cdnow("CDNOW_sample.txt")
