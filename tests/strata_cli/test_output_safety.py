"""Commands that write a data directory or a Spark output never destroy or mix what the user already has: ``strata
sample``, ``strata features --engine spark``, ``strata import cdnow`` and ``strata generate`` refuse (exit 2, one
line, before any work) and replace only with ``--overwrite``, leaving one data set; ``strata generate`` refuses a
history validation would reject; all-rejected input is said to be so. None of these tests starts Spark: every
refusal happens before it would start (tests/strata_cli/test_output_safety_spark.py runs the Spark writes)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import Result
from typer.testing import CliRunner

from strata_cli.main import app

runner = CliRunner()

#: Five purchase lines in the layout of CDNOW_master.txt (header, whitespace-separated, CRLF).
CDNOW_LINES = ("customer_id date number_of_cds dollar_value\r\n"
               "00001 19970101 1 11.77\r\n00002 19970112 1 12.00\r\n00002 19970112 5 77.00\r\n"
               "00003 19970102 2 20.76\r\n00003 19970330 2 20.76\r\n")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("safety_data")
    res = runner.invoke(app, ["generate", "--users", "100", "--out", str(out), "--seed", "5", "--end", "2024-12-31"])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture
def copy_of_data(data: Path, tmp_path: Path) -> Path:
    """A directory with its own copy of :func:`data`'s orders.csv, events.csv and users.csv."""
    out = tmp_path / "copy"
    out.mkdir()
    for p in data.iterdir():
        (out / p.name).write_bytes(p.read_bytes())
    return out


@pytest.fixture
def cdnow_file(tmp_path: Path) -> Path:
    path = tmp_path / "CDNOW_master.txt"
    path.write_bytes(CDNOW_LINES.encode("ascii"))
    return path


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./strata.toml of the repository, nothing written into it


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def assert_clean_error(res: Result, *needles: str) -> None:
    """Exit code 2, an ``error:`` line naming every needle, and no escaped Python exception."""
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    assert "error:" in res.output
    for needle in needles:
        assert needle in res.output, (needle, res.output)


# --- strata sample (defect 1) -------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra", [[], ["--overwrite"], ["--format", "parquet", "--overwrite"]])
def test_sample_refuses_its_own_input_directory(copy_of_data: Path, extra: list[str]) -> None:
    before = snapshot(copy_of_data)
    res = runner.invoke(app, ["sample", "--data", str(copy_of_data), "--out", str(copy_of_data), "--fraction", "0.1",
                              "--format", "csv", *extra])
    assert_clean_error(res, "--out", str(copy_of_data), "input directory")
    assert snapshot(copy_of_data) == before


def test_sample_refuses_the_input_directory_by_another_name(copy_of_data: Path, tmp_path: Path) -> None:
    """Paths are compared resolved: a symbolic link to the input, or ``dir/../dir``, is the input too."""
    link = tmp_path / "link"
    link.symlink_to(copy_of_data, target_is_directory=True)
    before = snapshot(copy_of_data)
    for out in (link, copy_of_data / ".." / copy_of_data.name):
        res = runner.invoke(app, ["sample", "--data", str(copy_of_data), "--out", str(out), "--fraction", "0.1",
                                  "--overwrite"])
        assert_clean_error(res, "--out", "input directory")
    assert snapshot(copy_of_data) == before


def test_sample_refuses_an_out_holding_an_input_file(copy_of_data: Path, tmp_path: Path) -> None:
    before = snapshot(copy_of_data)
    res = runner.invoke(app, ["sample", "--orders", str(copy_of_data / "orders.csv"), "--out", str(copy_of_data),
                              "--fraction", "0.1", "--overwrite"])
    assert_clean_error(res, "--out", "orders.csv", "--orders")
    # the input table of --data is a symbolic link to a file in --out
    other = tmp_path / "other"
    other.mkdir()
    (other / "orders.csv").symlink_to(copy_of_data / "orders.csv")
    res = runner.invoke(app, ["sample", "--data", str(other), "--out", str(copy_of_data), "--fraction", "0.1",
                              "--overwrite"])
    assert_clean_error(res, "--out", "orders.csv", "--data")
    assert snapshot(copy_of_data) == before


def test_sample_refuses_an_out_holding_tables_without_overwrite(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "orders.parquet").write_bytes(b"earlier sample")
    res = runner.invoke(app, ["sample", "--data", str(data), "--out", str(out), "--fraction", "0.1"])
    assert_clean_error(res, "--out", "orders.parquet", "--overwrite")
    assert (out / "orders.parquet").read_bytes() == b"earlier sample"


def test_sample_help_shows_overwrite() -> None:
    res = runner.invoke(app, ["sample", "--help"])
    assert res.exit_code == 0 and "--overwrite" in res.output


# --- strata features --engine spark (defect 2) ------------------------------------------------------------------

def test_spark_features_refuse_a_directory_of_other_files(data: Path, copy_of_data: Path) -> None:
    before = snapshot(copy_of_data)
    res = runner.invoke(app, ["features", "--data", str(data), "--as-of", "2024-12-31", "--out", str(copy_of_data),
                              "--engine", "spark"])
    assert_clean_error(res, "--out", str(copy_of_data), "orders.csv", "not an earlier Spark feature output")
    assert snapshot(copy_of_data) == before


def test_spark_features_refuse_a_file_and_a_directory_with_a_subdirectory(data: Path, tmp_path: Path) -> None:
    victim = tmp_path / "f.parquet"
    victim.write_bytes(b"a feature table of the embedded engine")
    base = ["features", "--data", str(data), "--as-of", "2024-12-31", "--engine", "spark"]
    assert_clean_error(runner.invoke(app, [*base, "--out", str(victim)]), "--out", "is a file")
    assert victim.read_bytes() == b"a feature table of the embedded engine"
    out = tmp_path / "out"
    (out / "notes").mkdir(parents=True)
    (out / "part-00000.parquet").write_bytes(b"x")
    assert_clean_error(runner.invoke(app, [*base, "--out", str(out)]), "--out", "notes")
    assert (out / "notes").is_dir()


def test_spark_output_entries() -> None:
    """What a Spark write leaves is replaceable; anything else is not."""
    from features.spark.runs import is_spark_output_entry, local_path

    for name in ("part-00000-abc.snappy.parquet", "_SUCCESS", ".part-00000-abc.snappy.parquet.crc", "._SUCCESS.crc"):
        assert is_spark_output_entry(name, False), name
    assert is_spark_output_entry("_temporary", True)
    for name, is_dir in (("orders.csv", False), (".env", False), ("part-00000", True), (".git", True),
                         ("notes", True), ("_SUCCESS", True)):
        assert not is_spark_output_entry(name, is_dir), name
    assert local_path("file:///tmp/x") == Path("/tmp/x") and local_path(Path("file:/tmp/x")) == Path("/tmp/x")
    assert local_path("hdfs://nn:8020/x") is None and local_path(Path("s3a://bucket/x")) is None
    assert local_path("out/x") == Path("out/x")


# --- strata import cdnow (defects 3 and 4) ---------------------------------------------------------------------

def test_cdnow_import_refuses_existing_tables(cdnow_file: Path, copy_of_data: Path) -> None:
    before = snapshot(copy_of_data)
    res = runner.invoke(app, ["import", "cdnow", str(cdnow_file), "--out", str(copy_of_data)])
    assert_clean_error(res, "--out", "orders.csv", "events.csv", "users.csv", "--overwrite")
    assert snapshot(copy_of_data) == before
    only_events = copy_of_data.parent / "only_events"
    only_events.mkdir()
    (only_events / "events.parquet").write_bytes(b"x")
    res = runner.invoke(app, ["import", "cdnow", str(cdnow_file), "--out", str(only_events)])
    assert_clean_error(res, "--out", "events.parquet", "--overwrite")
    assert not (only_events / "orders.csv").exists()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_cdnow_import_overwrite_leaves_only_the_cdnow_orders(cdnow_file: Path, copy_of_data: Path, fmt: str) -> None:
    (copy_of_data / "notes.txt").write_text("mine")
    res = runner.invoke(app, ["import", "cdnow", str(cdnow_file), "--out", str(copy_of_data), "--overwrite",
                              "--format", fmt])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in copy_of_data.iterdir()) == sorted([f"orders.{fmt}", "notes.txt"])
    assert "removed" in res.output and "events.csv" in res.output
    res = runner.invoke(app, ["validate", "--data", str(copy_of_data), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["rows_in"] == 5 and report["rows_rejected"] == 0 and list(report["tables"]) == ["orders"]


def test_cdnow_import_into_an_empty_directory(cdnow_file: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["import", "cdnow", str(cdnow_file), "--out", str(tmp_path / "new")])
    assert res.exit_code == 0, res.output
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["orders.csv"]  # no temporary file left


def test_cdnow_import_to_an_unwritable_directory_monkeypatched(cdnow_file: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """pyarrow's write error names no file (OSError.filename is None): the message names --out and the file."""
    import pyarrow.csv

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise PermissionError(13, "Failed to open local file. Detail: [errno 13] Permission denied")

    monkeypatch.setattr(pyarrow.csv, "write_csv", refuse)
    out = tmp_path / "ro"
    res = runner.invoke(app, ["import", "cdnow", str(cdnow_file), "--out", str(out)])
    assert_clean_error(res, "--out", str(out / "orders.csv"), "permission denied", "writable")
    assert list(out.iterdir()) == []  # no temporary file left


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux sysfs (not writable, even for root)")
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_cdnow_import_to_sysfs(cdnow_file: Path, fmt: str) -> None:
    res = runner.invoke(app, ["import", "cdnow", str(cdnow_file), "--out", "/sys/kernel", "--format", fmt])
    assert_clean_error(res, "--out /sys/kernel", f"/sys/kernel/orders.{fmt}", "writable")


def test_cdnow_import_under_a_file(cdnow_file: Path, data: Path) -> None:
    res = runner.invoke(app, ["import", "cdnow", str(cdnow_file), "--out", str(data / "orders.csv" / "x")])
    assert_clean_error(res, "--out", "is a file, not a directory")


# --- strata generate (defects 5 and 6) --------------------------------------------------------------------------

def test_generate_overwrite_in_the_other_format_removes_the_old_files(tmp_path: Path) -> None:
    out = tmp_path / "g"
    base = ["generate", "--users", "20", "--out", str(out), "--end", "2024-12-31"]
    assert runner.invoke(app, base).exit_code == 0
    (out / "notes.txt").write_text("mine")
    res = runner.invoke(app, [*base, "--format", "parquet", "--overwrite"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["events.parquet", "notes.txt", "orders.parquet", "users.parquet"]
    assert "removed" in res.output
    res = runner.invoke(app, ["validate", "--data", str(out), "--json"])
    assert res.exit_code == 0, res.output  # not "several orders files"
    res = runner.invoke(app, [*base, "--overwrite"])  # and back
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["events.csv", "notes.txt", "orders.csv", "users.csv"]


def test_generate_overwrite_never_removes_a_directory(tmp_path: Path) -> None:
    out = tmp_path / "g"
    (out / "orders.parquet").mkdir(parents=True)  # e.g. a Spark table
    (out / "orders.parquet" / "part-0.parquet").write_bytes(b"x")
    res = runner.invoke(app, ["generate", "--users", "5", "--out", str(out), "--overwrite"])
    assert_clean_error(res, "--out", "orders.parquet", "directory")
    assert (out / "orders.parquet" / "part-0.parquet").read_bytes() == b"x"
    assert not (out / "orders.csv").exists()


@pytest.mark.parametrize("args, needles", [
    (["--end", "2035-01-01"], ["--end", "after the current time", "choose an --end from"]),
    (["--end", "1980-01-01"], ["--end", "min_timestamp 1990-01-01", "choose an --end from 1992-07-03"]),
    (["--years", "100"], ["--years 100", "min_timestamp 1990-01-01", "fewer --years"]),
])
def test_generate_refuses_a_history_validation_rejects(tmp_path: Path, args: list[str], needles: list[str]) -> None:
    out = tmp_path / "g"
    res = runner.invoke(app, ["generate", "--users", "20", "--out", str(out), *args])
    assert_clean_error(res, *needles)
    assert not out.exists()


def test_generate_history_limits_follow_the_configuration(tmp_path: Path) -> None:
    cfg = tmp_path / "strata.toml"
    cfg.write_text('[data]\nmin_timestamp = "2020-01-01"\n')
    res = runner.invoke(app, ["generate", "--users", "20", "--out", str(tmp_path / "g"), "--end", "2021-06-30",
                              "--config", str(cfg)])
    assert_clean_error(res, "--end", "min_timestamp 2020-01-01", "choose an --end from 2022-07-03")


def test_generate_at_the_earliest_allowed_end_validates_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "g"
    res = runner.invoke(app, ["generate", "--users", "50", "--out", str(out), "--end", "1992-07-03"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["validate", "--data", str(out), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["rows_rejected"] == 0, res.output


# --- every row rejected (defect 7) ------------------------------------------------------------------------------

@pytest.fixture
def all_rejected(tmp_path: Path) -> Path:
    """Orders whose every row is rejected (negative amounts, a missing user_id)."""
    out = tmp_path / "bad"
    out.mkdir()
    (out / "orders.csv").write_text("user_id,order_id,ordered_at,amount\nu1,o1,2024-01-01,-5\nu2,o2,2024-02-01,-1\n"
                                    ",o3,2024-03-01,4\n")
    return out


@pytest.mark.parametrize("extra", [[], ["--json"]])
def test_validate_when_no_row_is_accepted(all_rejected: Path, extra: list[str]) -> None:
    res = runner.invoke(app, ["validate", "--data", str(all_rejected), *extra])
    assert_clean_error(res, "no row was accepted", "all 3 input rows", "--rejects")
    if extra:
        assert json.loads(res.stdout)["rows_rejected"] == 3  # the report is still printed, then the error
    else:
        assert "negative amount" in res.output and "rows in" in res.output  # the tables, then the error


def test_validate_with_some_rows_accepted_still_exits_0(all_rejected: Path) -> None:
    with (all_rejected / "orders.csv").open("a") as fh:
        fh.write("u4,o4,2024-04-01,3\n")
    res = runner.invoke(app, ["validate", "--data", str(all_rejected)])
    assert res.exit_code == 0, res.output
    assert "no row was accepted" not in res.output


def test_validate_help_documents_the_exit_codes() -> None:
    res = runner.invoke(app, ["validate", "--help"])
    assert res.exit_code == 0 and "every row rejected, end with exit code 2" in " ".join(res.output.split())


def test_features_when_no_row_is_accepted(all_rejected: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["features", "--data", str(all_rejected), "--as-of", "2024-12-31",
                              "--out", str(tmp_path / "f.parquet")])
    assert res.exit_code == 0, res.output
    assert "0 accepted" in res.output
    assert "no input row was accepted" in res.output and "strata validate --rejects" in res.output
    assert "later --as-of" not in res.output


def test_features_before_accepted_data_still_advise_a_later_as_of(data: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["features", "--data", str(data), "--as-of", "1990-01-01",
                              "--out", str(tmp_path / "f.parquet")])
    assert res.exit_code == 0, res.output
    assert "choose a later --as-of" in res.output and "no input row was accepted" not in res.output
    assert len(pd.read_parquet(tmp_path / "f.parquet")) == 0



def test_features_long_after_the_data_warn_and_lines_are_not_broken_in_a_pipe(data: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["features", "--data", str(data), "--as-of", "2025-06-30",
                              "--out", str(tmp_path / "f.parquet")])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    # the output is not a terminal: each message is one line, however long, not broken at 80 columns
    warning = [line for line in lines if line.startswith("warning: --as-of 2025-06-30")]
    assert len(warning) == 1 and warning[0].endswith("check --as-of, or refresh the data"), res.output
    assert "days after the last order or event in the data (2024-12-3" in warning[0]
