"""Bad command-line input ends with one clear ``error:`` line and exit code 2, never a traceback, and nothing the
user already has is overwritten or deleted. None of these tests needs a trained model."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from strata_cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bad_input_data")
    res = runner.invoke(app, ["generate", "--users", "200", "--out", str(out), "--seed", "5", "--end", "2024-12-31"])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # MLflow stores, online stores and ./strata.toml stay out of the repository


def assert_clean_error(res: Result, *needles: str) -> None:
    """Exit code 2, an ``error:`` line naming every needle, and no escaped Python exception."""
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    for needle in needles:
        assert needle in res.output, (needle, res.output)


@pytest.mark.parametrize("value", ["2999-01-01", "0001-01-01", "9999-12-31"])
def test_as_of_out_of_timestamp_range(data: Path, tmp_path: Path, value: str) -> None:
    res = runner.invoke(app, ["features", "--data", str(data), "--as-of", value, "--out", str(tmp_path / "f.parquet")])
    assert_clean_error(res, "--as-of", value, "range")


def test_time_options_are_named_in_the_error(data: Path, tmp_path: Path) -> None:
    assert_clean_error(runner.invoke(app, ["validate", "--data", str(data), "--now", "junk"]), "--now", "junk")
    assert_clean_error(runner.invoke(app, ["validate", "--data", str(data), "--now", "2999-01-01"]), "--now")
    assert_clean_error(runner.invoke(app, ["layers", "--data", str(data), "--as-of", "2024-12-31", "--previous", "junk"]),
                       "--previous", "junk")
    assert_clean_error(runner.invoke(app, ["generate", "--users", "5", "--out", str(tmp_path / "g"), "--end",
                                           "9999-01-01"]), "--end")
    assert_clean_error(runner.invoke(app, ["train", "--data", str(data), "--as-of", "2999-01-01"]), "--as-of")


def test_durations_beyond_the_timestamp_range(data: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["generate", "--users", "5", "--out", str(tmp_path / "g"), "--years", "1000"])
    assert_clean_error(res, "out of the supported range", "--years")
    res = runner.invoke(app, ["train", "--data", str(data), "--horizon-days", "100000"])
    assert_clean_error(res, "out of the supported range", "--horizon-days")


def test_config_that_is_a_directory(tmp_path: Path) -> None:
    assert_clean_error(runner.invoke(app, ["config", "show", "--config", str(tmp_path)]), "--config", "directory")


def test_output_file_paths(data: Path, tmp_path: Path) -> None:
    orders = data / "orders.csv"
    base = ["--data", str(data), "--as-of", "2024-12-31"]
    assert_clean_error(runner.invoke(app, ["features", *base, "--out", str(tmp_path)]), "--out", "is a directory")
    assert_clean_error(runner.invoke(app, ["features", *base, "--out", str(orders / "f.parquet")]),
                       "--out", "is a file, not a directory")
    # a .csv name would silently get Parquet bytes
    assert_clean_error(runner.invoke(app, ["features", *base, "--out", str(tmp_path / "f.csv")]), "--out", ".parquet")
    assert not (tmp_path / "f.csv").exists()
    assert_clean_error(runner.invoke(app, ["layers", *base, "--out", str(orders / "l.parquet")]), "--out")
    assert_clean_error(runner.invoke(app, ["report", *base, "--no-monitor", "--out", str(tmp_path)]),
                       "--out", "is a directory")
    assert_clean_error(runner.invoke(app, ["validate", "--data", str(data), "--rejects", str(orders)]), "--rejects")
    assert_clean_error(runner.invoke(app, ["validate", "--data", str(data), "--rejects", str(orders / "x")]),
                       "--rejects")


def test_generate_never_replaces_existing_tables_silently(data: Path) -> None:
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    res = runner.invoke(app, ["generate", "--users", "5", "--out", str(data)])
    assert_clean_error(res, "--out", "orders.csv", "--overwrite")
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before
    assert_clean_error(runner.invoke(app, ["generate", "--users", "5", "--out", str(data / "orders.csv")]), "--out")


def test_generate_overwrite(tmp_path: Path) -> None:
    args = ["generate", "--users", "5", "--out", str(tmp_path / "g")]
    assert runner.invoke(app, args).exit_code == 0
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0


def test_score_budget_must_be_finite(data: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["score", "--data", str(data), "--as-of", "2024-12-31", "--out", str(tmp_path / "s"),
                              "--budget", "inf"])
    assert_clean_error(res, "--budget", "inf")


def test_score_overwrite_never_deletes_what_is_not_a_score_output(data: Path, tmp_path: Path) -> None:
    victim = tmp_path / "users.csv"
    victim.write_bytes((data / "users.csv").read_bytes())
    base = ["score", "--data", str(data), "--as-of", "2024-12-31", "--no-online-store", "--overwrite"]
    assert_clean_error(runner.invoke(app, [*base, "--out", str(victim)]), "--out", "is a file")
    assert victim.read_bytes() == (data / "users.csv").read_bytes()
    # the input directory itself: --overwrite would have replaced it with the scores
    assert_clean_error(runner.invoke(app, [*base, "--out", str(data)]), "--out", "_manifest.json")
    assert (data / "orders.csv").is_file()
    assert_clean_error(runner.invoke(app, [*base, "--out", str(data / "orders.csv" / "x")]), "--out")



def test_truncated_gzip_input_is_named(tmp_path: Path) -> None:
    """A ``.csv.gz`` cut short: one line naming the file (it printed only "Aborted.")."""
    import gzip

    body = gzip.compress(b"user_id,order_id,ordered_at,amount\n" + b"u1,o1,2024-01-01,3\n" * 20000)
    data = tmp_path / "d"
    data.mkdir()
    (data / "orders.csv.gz").write_bytes(body[: len(body) // 2])
    assert_clean_error(runner.invoke(app, ["validate", "--data", str(data)]), "orders.csv.gz")


def test_cdnow_import_of_a_directory_says_so(tmp_path: Path) -> None:
    res = runner.invoke(app, ["import", "cdnow", str(tmp_path), "--out", str(tmp_path / "o")])
    assert_clean_error(res, "is a directory")


def test_label_settings_must_be_positive(tmp_path: Path) -> None:
    """``[labels] horizon_days = -5`` is refused when the file is read, naming the file and key."""
    cfg = tmp_path / "strata.toml"
    cfg.write_text("[labels]\nhorizon_days = -5\n")
    assert_clean_error(runner.invoke(app, ["config", "show", "--config", str(cfg)]), "strata.toml", "horizon_days")


def test_features_before_the_data_warn_that_the_table_is_empty(data: Path, tmp_path: Path) -> None:
    """A cutoff before any order, event or join writes an empty table (a valid answer) with a warning."""
    res = runner.invoke(app, ["features", "--data", str(data), "--as-of", "1990-01-01", "--out", str(tmp_path / "f.parquet")])
    assert res.exit_code == 0, res.output
    assert "0 users" in res.output
    assert "warning: no user is known at --as-of 1990-01-01" in res.output and "the data starts at" in res.output


def test_features_with_users_do_not_warn(data: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["features", "--data", str(data), "--as-of", "2024-12-31", "--out", str(tmp_path / "f.parquet")])
    assert res.exit_code == 0, res.output
    assert "warning: no user" not in res.output


def test_outcomes_import_checks_by_before_reading_anything(tmp_path: Path) -> None:
    """``--by`` is refused before the file is read or merged into the outcomes store."""
    outcomes = tmp_path / "outcomes.csv"
    outcomes.write_text("user_id,action_id,converted\nu1,a1,1\n")
    store = tmp_path / "store.parquet"
    res = runner.invoke(app, ["outcomes", "import", str(outcomes), "--scores", str(tmp_path / "no-scores"),
                              "--store", str(store), "--by", "nosuch"])
    assert_clean_error(res, "--by", "nosuch", "action_id")
    assert not store.exists()


def test_report_out_must_be_html(data: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["report", "--data", str(data), "--as-of", "2024-12-31", "--out", str(tmp_path / "r.csv")])
    assert_clean_error(res, "--out", ".html")
