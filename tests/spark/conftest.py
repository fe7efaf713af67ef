"""One local Spark session for every Spark test (session-scoped: starting the JVM takes seconds).

The tests run in one xdist worker (``xdist_group("spark")``), so a single ``local[2]`` session serves them all.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest


def _test_spark_config() -> Any:
    from features.config import SparkConfig

    return SparkConfig(
        master="local[2]",
        conf={
            "spark.sql.session.timeZone": "UTC",
            "spark.sql.shuffle.partitions": "2",
            "spark.default.parallelism": "2",
            "spark.ui.enabled": "false",
            "spark.driver.memory": "1g",
        },
    )


#: The [spark] section of the test session; end-to-end runs pass it so they keep the session's settings.
TEST_SPARK = _test_spark_config()


@pytest.fixture(scope="session")
def spark_test_config() -> Any:
    """A StrataConfig whose [spark] section is the test session's (local[2], 2 shuffle partitions)."""
    from features.config import StrataConfig

    return StrataConfig(spark=TEST_SPARK)


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """A quiet ``local[2]`` SparkSession: UTC session time zone, no UI, 2 shuffle partitions."""
    pytest.importorskip("pyspark")
    from features.spark.session import spark_session

    # Bind to loopback: avoids the "hostname resolves to a loopback address" warning and any firewall prompt.
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    session = spark_session(TEST_SPARK, app_name="strata-tests")
    try:
        yield session
    finally:
        session.stop()


@pytest.fixture(scope="session")
def scoring_fixtures() -> Any:
    """The scoring tests' helper module (tests/serving/scoring_fixtures.py), loaded by path (tests is no package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "serving" / "scoring_fixtures.py"
    spec = importlib.util.spec_from_file_location("strata_spark_scoring_fixtures", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def frames_match() -> Any:
    """``frames_match(expected, actual, rtol=1e-9, atol=1e-9)``: see :func:`_assert_frames_match`."""
    return _assert_frames_match


def _assert_frames_match(expected: Any, actual: Any, *, rtol: float = 1e-9, atol: float = 1e-9) -> None:
    """Same columns, dtypes and rows; floats within ``rtol`` relative (``atol`` absolute near zero), NaN == NaN.

    ``atol`` covers sums that cancel to about zero (paid minus refunded spend): the engines add the
    same numbers in a different order, so a true 0 can come out as +-1e-13 on one of them.
    """
    import numpy as np
    import pandas as pd

    assert list(actual.columns) == list(expected.columns)
    assert len(actual) == len(expected)
    for col in expected.columns:
        e, a = expected[col], actual[col]
        assert a.dtype == e.dtype, f"{col}: dtype {a.dtype} != {e.dtype}"
        if pd.api.types.is_float_dtype(e.dtype):
            ev, av = e.to_numpy(dtype=float), a.to_numpy(dtype=float)
            assert np.array_equal(np.isnan(ev), np.isnan(av)), f"{col}: NaN in different rows"
            ok = np.isclose(av, ev, rtol=rtol, atol=atol) | np.isnan(ev)
            if not ok.all():
                i = int(np.flatnonzero(~ok)[0])
                raise AssertionError(f"{col}: row {i} ({expected.iloc[i, 0]}): {av[i]!r} != {ev[i]!r}")
        else:
            ev = e.astype(object).where(e.notna(), None).tolist()
            av = a.astype(object).where(a.notna(), None).tolist()
            if ev != av:
                i = next(k for k, (x, y) in enumerate(zip(ev, av, strict=True)) if x != y)
                raise AssertionError(f"{col}: row {i} ({expected.iloc[i, 0]}): {av[i]!r} != {ev[i]!r}")


#: The cutoff of the shared Spark feature frame; a fractional second so that ages must agree to the microsecond.
DEMO_AS_OF = "2024-09-30 12:34:56.789"


@pytest.fixture(scope="session")
def spark_demo_features(spark: Any, demo_dataset: Any) -> Iterator[tuple[Any, Any]]:
    """Spark features of the shared demo data set as of :data:`DEMO_AS_OF` (cached; built once per session)."""
    import pandas as pd

    from features.config import StrataConfig
    from features.spark.feature_sql import build_features_spark
    from features.spark.frames import dataset_to_spark

    as_of = pd.Timestamp(DEMO_AS_OF, tz="UTC")
    frame = build_features_spark(spark, dataset_to_spark(spark, demo_dataset), as_of, StrataConfig()).cache()
    yield as_of, frame
    frame.unpersist()


@pytest.fixture(scope="session")
def small_dataset() -> Any:
    """300 synthetic users up to 2024-12-31 (seed 3): for end-to-end runs where size adds nothing."""
    import pandas as pd

    from features.demo_data import generate_dataset

    return generate_dataset(300, pd.Timestamp("2024-12-31", tz="UTC"), seed=3)
