"""The Spark entry points: ``strata features --engine spark``, ``strata sample``, and whole-user sampling."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from features.config import StrataConfig
from features.contract import ENTITY_KEY
from features.cutoffs import parse_as_of
from features.errors import StrataError
from features.spark.feature_sql import build_features_spark, write_features_spark
from features.spark.frames import SparkDataset, collect_dataset
from features.spark.reading import hadoop_fs, hadoop_path
from features.spark.session import spark_session
from features.spark.validation import SparkValidationReport, load_dataset_spark

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def sample_users_spark(
    dataset: SparkDataset, fraction: float, seed: int = 42
) -> SparkDataset:
    """A user-level sample of ``dataset``: every row of about ``fraction`` of the users, none of the others.

    Users are chosen by a hash of ``user_id`` and ``seed`` (deterministic, no shuffle), so a user's
    orders, events and profile stay together and repeated runs draw the same users. Use it to train on
    a sample of a large base: sample on Spark, collect or write it, then train on one machine.
    """
    from pyspark.sql import functions as F

    if not 0.0 < fraction <= 1.0:
        raise StrataError(f"--fraction: the share of users to sample must be in (0, 1], got {fraction}")
    buckets = 1_000_000
    threshold = int(round(fraction * buckets))

    def keep(frame: DataFrame | None) -> DataFrame | None:
        if frame is None:
            return None
        h = F.pmod(F.xxhash64(F.col(ENTITY_KEY), F.lit(int(seed))), F.lit(buckets))
        return frame.where(h < threshold)

    return SparkDataset(orders=keep(dataset.orders), events=keep(dataset.events), users=keep(dataset.users),  # type: ignore[arg-type]
                        orders_unique=dataset.orders_unique)


def export_user_sample(
    dataset: SparkDataset, out_dir: str | Path, fraction: float, seed: int = 42
) -> dict[str, Path]:
    """Sample whole users on Spark and write them as ``orders/events/users.parquet`` for ``strata train``.

    The sample (see :func:`sample_users_spark`) is collected to the driver, so ``out_dir`` is a local
    directory and the sample must fit in the driver's memory; ``strata train --data <out_dir>`` then
    builds its training set (cutoffs, labels) from it with the embedded engine.

    Returns
    -------
    Mapping table name -> written Parquet file.
    """
    from features.demo_data import write_dataset

    sample = collect_dataset(sample_users_spark(dataset, fraction, seed=seed))
    return write_dataset(sample, out_dir, "parquet")


def local_path(value: str | Path) -> Path | None:
    """``value`` as a local path (``file:`` URIs included), or None for another file system (``hdfs://``,
    ``s3a://``, ``dbfs:/``...), which only Spark's Hadoop file system can look at."""
    text = str(value)
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]+):/", text)  # (two letters at least: not a Windows drive)
    if m is None:
        return Path(value)
    if m.group(1).lower() == "file":
        rest = text[len(m.group(0)) - 1:]  # "file:/x", "file:///x" -> "/x"
        return Path("/" + rest.lstrip("/"))
    return None


def is_spark_output_entry(name: str, is_dir: bool) -> bool:
    """Whether an entry of a directory is what a Spark Parquet write leaves there: ``part-*`` files,
    ``_SUCCESS`` and the ``_committed_*`` / ``_started_*`` markers, hidden ``.crc`` checksums, and the
    ``_temporary`` directory of a write that did not finish."""
    if is_dir:
        return name == "_temporary"
    if name.startswith("."):
        return name.endswith(".crc")
    return name.startswith(("part-", "_committed_", "_started_")) or name in ("_SUCCESS", "_metadata",
                                                                                "_common_metadata")


def _refuse_foreign_output(out: str, foreign: list[str]) -> None:
    if foreign:
        shown = ", ".join(sorted(foreign)[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise StrataError(f"--out {out}: the directory already holds {shown}, so it is not an earlier Spark feature "
                          f"output (part-* files); writing would delete everything in it: choose a new or empty "
                          f"directory for --out")


def check_features_out_local(out: str | Path) -> None:
    """Before Spark starts: refuse a local ``--out`` of ``strata features --engine spark`` that Spark's overwrite
    would destroy: an existing file, or a directory holding anything but an earlier Spark output (see
    :func:`is_spark_output_entry`); a missing or empty directory, or an earlier Spark output, is fine.
    Paths on other file systems are left to :func:`check_features_out`."""
    path = local_path(out)
    if path is None or not path.exists():
        return
    if not path.is_dir():
        raise StrataError(f"--out {out}: is a file; with --engine spark --out is a directory of Parquet part "
                          f"files: choose another --out")
    _refuse_foreign_output(str(out), [p.name for p in path.iterdir() if not is_spark_output_entry(p.name, p.is_dir())])


def check_features_out(spark: SparkSession, out: str) -> None:
    """:func:`check_features_out_local` on any Hadoop file system (``hdfs://``, ``s3a://``...), asked through
    Spark: refuse an ``out`` that is a file or a directory holding anything but an earlier Spark output."""
    fs, hpath = hadoop_fs(spark, out)
    if not fs.exists(hpath):
        return
    if not fs.getFileStatus(hpath).isDirectory():
        raise StrataError(f"--out {out}: is a file; with --engine spark --out is a directory of Parquet part "
                          f"files: choose another --out")
    entries = [(str(st.getPath().getName()), bool(st.isDirectory())) for st in fs.listStatus(hpath)]
    _refuse_foreign_output(out, [name for name, is_dir in entries if not is_spark_output_entry(name, is_dir)])


@dataclass
class SparkFeaturesRun:
    """What :func:`run_features_spark` did: counts, timings (seconds) and where it wrote."""

    out: str
    as_of: str
    n_users: int
    n_prospects: int
    n_features: int
    validation: SparkValidationReport
    master: str
    seconds_start: float
    seconds_total: float

    def summary_line(self) -> str:
        """One line for the CLI: what was written, how many users, timings."""
        return (
            f"wrote {self.out} (Parquet part files): {self.n_users:,} users ({self.n_prospects:,} prospects) x "
            f"{self.n_features} features as of {self.as_of} on Spark {self.master} in {self.seconds_total:.1f}s "
            f"({self.seconds_start:.1f}s Spark start-up)"
        )


def run_features_spark(
    *,
    data_dir: str | Path | None,
    orders: str | Path | None,
    events: str | Path | None,
    users: str | Path | None,
    as_of: str | pd.Timestamp,
    out: str | Path,
    config: StrataConfig,
    master: str | None = None,
    now: str | pd.Timestamp | None = None,
    rejects_dir: str | Path | None = None,
    sample: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> SparkFeaturesRun:
    """``strata features --engine spark``: validate on Spark, build features as of ``as_of``, write Parquet.

    Parameters
    ----------
    out : output directory of Parquet part files (``user_id``, ``as_of``, features). An earlier output there
        is replaced; a file, or a directory holding anything else, is refused (:func:`check_features_out`)
        before any input is read.
    master : Spark master URL (``--spark-master``); default ``config.spark.master`` or the launcher's.
    rejects_dir : if given, rejected rows are written there as ``<table>_rejected`` CSV directories.
    sample : if given, keep only this fraction of users (see :func:`sample_users_spark`).

    Returns
    -------
    SparkFeaturesRun with the user count, the validation report and timings (seconds).
    """
    step = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    step("starting Spark")
    spark = spark_session(config, master=master, app_name="strata-features")
    t_start = time.perf_counter() - t0
    as_of_ts = parse_as_of(as_of)
    check_features_out(spark, hadoop_path(out))  # Spark's overwrite deletes whatever is in the directory
    dataset, report = load_dataset_spark(spark, data_dir, orders=orders, events=events, users=users,
                                         config=config, now=now,
                                         progress=lambda name: step(f"validating {name}"))
    if rejects_dir is not None and report.rows_rejected:
        report.write_rejects(str(rejects_dir))
    if sample is not None:
        dataset = sample_users_spark(dataset, sample, seed=config.training.seed)
    step("building features")
    features = build_features_spark(spark, dataset, as_of_ts, config)
    target = write_features_spark(features, hadoop_path(out))
    from pyspark.sql import functions as F

    written = spark.read.parquet(target)
    counts = written.agg(F.count(F.lit(1)).alias("n"), F.sum("is_prospect").alias("p")).collect()[0]
    report.unpersist()
    return SparkFeaturesRun(
        out=target, as_of=as_of_ts.isoformat(), n_users=int(counts["n"]), n_prospects=int(counts["p"] or 0),
        n_features=len(written.columns) - 2, validation=report, master=str(spark.sparkContext.master),
        seconds_start=t_start, seconds_total=time.perf_counter() - t0,
    )


@dataclass
class SparkSampleRun:
    """What :func:`run_sample_spark` did: the sample drawn, its sizes and where it was written."""

    out: str
    fraction: float
    seed: int
    n_users_total: int
    n_users: int
    rows: dict[str, int]
    validation: SparkValidationReport
    master: str
    seconds_total: float
    files: dict[str, Path] = field(default_factory=dict)
    """Table name -> the file written."""

    def summary_line(self) -> str:
        """One line for the CLI: users sampled out of how many, rows per table, where."""
        rows = ", ".join(f"{n:,} {name}" for name, n in self.rows.items())
        return (
            f"wrote {self.out}: {self.n_users:,} of {self.n_users_total:,} users (fraction {self.fraction:.6g}, "
            f"seed {self.seed}) with every row of theirs ({rows}) on Spark {self.master} in {self.seconds_total:.1f}s"
        )


def count_users_spark(dataset: SparkDataset) -> int:
    """Distinct ``user_id`` over all present tables of ``dataset`` (users, buyers and prospects alike)."""
    from pyspark.sql import functions as F

    ids = None
    for frame in dataset.tables().values():
        part = frame.select(ENTITY_KEY)
        ids = part if ids is None else ids.unionByName(part)
    assert ids is not None
    return int(ids.where(F.col(ENTITY_KEY).isNotNull()).distinct().count())


def run_sample_spark(
    *,
    data_dir: str | Path | None,
    orders: str | Path | None,
    events: str | Path | None,
    users: str | Path | None,
    out: str | Path,
    config: StrataConfig,
    fraction: float | None = None,
    n_users: int | None = None,
    seed: int | None = None,
    fmt: str = "parquet",
    master: str | None = None,
    now: str | pd.Timestamp | None = None,
    rejects_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> SparkSampleRun:
    """``strata sample``: validate on Spark, keep whole users (:func:`sample_users_spark`), write a data directory.

    Parameters
    ----------
    out : local directory that gets ``orders``, ``events``, ``users`` (``.parquet`` or ``.csv``) of the
        sampled users, ready for ``strata train --data <out>``.
    fraction : share of users to keep, in (0, 1]; or
    n_users : about this many users (the fraction is ``n_users`` over the distinct users of all tables).
    seed : hash seed (default ``config.training.seed``): the same seed and fraction give the same users,
        and a smaller fraction gives a subset of a larger one.
    rejects_dir : if given, rejected input rows are written there as ``<table>_rejected.csv``.

    Returns
    -------
    SparkSampleRun with the fraction used, users sampled of the total, and rows per table.
    """
    from features.demo_data import write_dataset

    if (fraction is None) == (n_users is None):
        raise StrataError("sample: give exactly one of --fraction F or --n-users N")
    if n_users is not None and n_users < 1:
        raise StrataError(f"--n-users: must be at least 1, got {n_users}")
    if fmt not in ("parquet", "csv"):
        raise StrataError(f"--format: expected parquet or csv, got {fmt!r}")
    step = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    step("starting Spark")
    spark = spark_session(config, master=master, app_name="strata-sample")
    dataset, report = load_dataset_spark(spark, data_dir, orders=orders, events=events, users=users, config=config,
                                         now=now, progress=lambda name: step(f"validating {name}"))
    if rejects_dir is not None:
        report.write_rejects(rejects_dir)
    step("counting users")
    total = count_users_spark(dataset)
    if fraction is None:
        assert n_users is not None
        fraction = min(1.0, n_users / total) if total else 1.0
    seed = config.training.seed if seed is None else int(seed)
    step(f"sampling {fraction:.6g} of {total:,} users")
    sample = collect_dataset(sample_users_spark(dataset, fraction, seed=seed))
    written = write_dataset(sample, out, fmt)  # type: ignore[arg-type]
    chosen = pd.concat([f[ENTITY_KEY] for f in (sample.orders, sample.events, sample.users) if f is not None])
    rows = {name: len(getattr(sample, name)) for name in written}
    report.unpersist()
    return SparkSampleRun(
        out=str(out), fraction=fraction, seed=seed, n_users_total=total, n_users=int(chosen.nunique()), rows=rows,
        validation=report, master=str(spark.sparkContext.master), seconds_total=time.perf_counter() - t0,
        files=written,
    )
