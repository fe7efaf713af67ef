"""One local Spark session for every Spark test (session-scoped: starting the JVM takes seconds).

The tests run in one xdist worker (``xdist_group("spark")``), so a single ``local[2]`` session serves them all.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """A quiet ``local[2]`` SparkSession: UTC session time zone, no UI, 2 shuffle partitions."""
    pytest.importorskip("pyspark")
    from features.config import SparkConfig
    from features.spark_engine import spark_session

    # Bind to loopback: avoids the "hostname resolves to a loopback address" warning and any firewall prompt.
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    conf = SparkConfig(
        master="local[2]",
        conf={
            "spark.sql.session.timeZone": "UTC",
            "spark.sql.shuffle.partitions": "2",
            "spark.default.parallelism": "2",
            "spark.ui.enabled": "false",
            "spark.driver.memory": "1g",
        },
    )
    session = spark_session(conf, app_name="strata-tests")
    try:
        yield session
    finally:
        session.stop()
