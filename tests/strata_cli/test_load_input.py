"""``strata_cli.app.load_input``: every data-reading command validates its input the same way.

The features-only form (``strata features``, ``score``, ``layers``) keeps fewer columns, as Arrow text,
and must give exactly the features of the full form.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.config import StrataConfig
from features.dataset import Dataset
from features.pipeline import VALIDATED_FEATURE_INPUT_COLUMNS, DuckDBEngine
from strata_cli import app as cli_app

AS_OF = pd.Timestamp("2024-10-31", tz="UTC")


@pytest.fixture(scope="module")
def bad_dir(demo_dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo data as CSV with about 2% realistic bad rows mixed into every table."""
    from features.demo_data import write_dataset

    out = tmp_path_factory.mktemp("bad")
    write_dataset(demo_dataset, out, "csv", bad_rows=0.02, seed=3)
    return out


def test_features_only_keeps_the_feature_columns_as_arrow_text_and_the_same_features(bad_dir: Path) -> None:
    cfg = StrataConfig()
    full = cli_app.load_input(cfg, bad_dir, None, None, None)
    lean = cli_app.load_input(cfg, bad_dir, None, None, None, features_only=True)
    for name in ("orders", "events", "users"):
        kept, whole = getattr(lean, name), getattr(full, name)
        assert set(kept.columns) == {"user_id", *VALIDATED_FEATURE_INPUT_COLUMNS[name]} & set(whole.columns)
        assert len(kept) == len(whole)  # the same rows accepted
        assert isinstance(kept["user_id"].dtype, pd.ArrowDtype)
        assert whole["user_id"].dtype == object
    assert "order_id" in full.orders.columns and "order_id" not in lean.orders.columns
    with DuckDBEngine(full, config=cfg) as a, DuckDBEngine(lean, config=cfg) as b:
        pd.testing.assert_frame_equal(a.features(AS_OF, cfg), b.features(AS_OF, cfg))


def test_rejected_rows_are_reported_once_on_stderr(bad_dir: Path, demo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = StrataConfig()
    cli_app.load_input(cfg, bad_dir, None, None, None)
    out, err = capsys.readouterr()
    assert out == ""
    assert "validation rejected" in err and "`strata validate` lists them" in err

    cli_app.load_input(cfg, demo_dir, None, None, None)  # clean data: nothing to say
    assert capsys.readouterr() == ("", "")


def test_summary_prints_the_counts_per_table_on_stdout(bad_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dataset = cli_app.load_input(StrataConfig(), bad_dir, None, None, None, summary=True)
    out, err = capsys.readouterr()
    assert err == ""
    line = " ".join(out.split())  # the console may wrap
    assert line.startswith("validated ")
    assert f"orders {len(dataset.orders):,}/" in line and "rejected)" in line


def test_no_input_names_the_options(tmp_path: Path) -> None:
    from features.errors import InputFileError

    with pytest.raises(InputFileError, match="--data DIR"):
        cli_app.load_input(StrataConfig(), None, None, None, None)
    with pytest.raises(InputFileError, match="no orders file"):
        cli_app.load_input(StrataConfig(), tmp_path, None, None, None)
