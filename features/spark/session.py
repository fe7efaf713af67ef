"""The Spark session Strata runs on: the settings it always applies, and how it is started."""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from typing import TYPE_CHECKING

from features.config import SparkConfig, StrataConfig
from features.errors import StrataError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

#: Spark settings Strata always applies (the feature SQL and the timestamp conversions rely on them).
REQUIRED_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # Standard Parquet timestamps (UTC-adjusted microseconds), not legacy INT96: pandas reads them as UTC.
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    # pandas/pyarrow write nanosecond timestamps, which Spark refuses; read them as INT64 nanoseconds and
    # render them exactly (see features.spark.reading._as_text).
    "spark.sql.legacy.parquet.nanosAsLong": "true",
}
#: Defaults applied unless the configuration sets them.
DEFAULT_CONF: dict[str, str] = {
    "spark.ui.showConsoleProgress": "false",
}


class SparkEngineError(StrataError):
    """Spark is missing, cannot start, or was configured in a way Strata cannot work with."""


def _is_local(master: str) -> bool:
    return master == "local" or master.startswith("local[") or master.startswith("local-cluster")


def local_cores(master: str) -> int | None:
    """Worker threads of a ``local``/``local[N]``/``local[*]``/``local[N,F]`` master; None for other masters."""
    m = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\s*\d+)?\])?", master.strip())
    if m is None:
        return None
    if m.group(1) in (None, ""):
        return 1
    return (os.cpu_count() or 1) if m.group(1) == "*" else int(m.group(1))


def spark_session(
    config: SparkConfig | StrataConfig,
    *,
    master: str | None = None,
    app_name: str = "strata",
    log_level: str = "ERROR",
) -> SparkSession:
    """Get or create the SparkSession described by ``config.spark`` (or a :class:`SparkConfig`).

    Parameters
    ----------
    config : the ``[spark]`` section (``master`` and ``conf``), or the whole configuration.
    master : overrides ``config.master`` (e.g. ``--spark-master spark://host:7077``). Under
        ``spark-submit`` (or on Databricks, where a session is already active) the master chosen by the
        launcher is kept unless this is given.
    app_name : the application name shown in the cluster UI.
    log_level : Spark's log level once started (``ERROR`` keeps command output readable).

    Returns
    -------
    The session, with ``spark.sql.session.timeZone=UTC`` and Arrow conversions on. For a ``local``
    master, Python workers run the interpreter of this process (so they see the same packages).
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError:  # pragma: no cover - pyspark is a declared dependency
        raise SparkEngineError("the Spark engine needs pyspark (pip install pyspark) and Java 17") from None

    spark_cfg = config.spark if isinstance(config, StrataConfig) else config
    tz = spark_cfg.conf.get("spark.sql.session.timeZone", "UTC")
    if tz.upper() not in ("UTC", "Z", "+00:00", "ETC/UTC"):
        raise SparkEngineError(
            f"[spark] conf 'spark.sql.session.timeZone' = {tz!r}: Strata computes features in UTC; remove the key or set 'UTC'"
        )
    launched = "PYSPARK_GATEWAY_PORT" in os.environ or SparkSession.getActiveSession() is not None
    effective_master = master or (None if launched else spark_cfg.master)
    if effective_master is not None and _is_local(effective_master):
        # Local workers are child processes: make them use this interpreter (and its packages).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    defaults = dict(DEFAULT_CONF)
    cores = local_cores(effective_master) if effective_master is not None else None
    if cores is not None:
        # Two shuffle partitions per local core keeps every core busy without hundreds of tiny tasks.
        defaults["spark.sql.shuffle.partitions"] = str(2 * cores)
    if effective_master is not None:
        builder = builder.master(effective_master)
    for key, value in {**defaults, **spark_cfg.conf, **REQUIRED_CONF}.items():
        builder = builder.config(key, value)
    t0 = time.perf_counter()
    try:
        spark = builder.getOrCreate()
    except Exception as err:  # Java missing, bad master URL...: one line, not a JVM trace
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SparkEngineError(
            f"cannot start Spark (master {effective_master or 'from spark-submit'}): {first}; "
            "check that Java 17 is installed (JAVA_HOME) and the master URL"
        ) from None
    for key, value in REQUIRED_CONF.items():  # an existing session (Databricks) gets them too
        spark.conf.set(key, value)
    spark.sparkContext.setLogLevel(log_level)
    logging.getLogger("py4j").setLevel(logging.WARNING)  # py4j logs every gateway call at INFO
    log.info("Spark %s session (master %s) ready in %.1fs", spark.version, spark.sparkContext.master,
             time.perf_counter() - t0)
    return spark
