"""Configuration values that would fail later (deep in a query, after training) are refused when loaded, by key;
cutoffs are read only in ISO 8601 forms, so nothing is guessed."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from features.config import ConfigError, StrataConfig, config_from_dict
from features.cutoffs import parse_as_of
from features.errors import StrataError

ACTION = {"id": "a", "name": "A", "layers": ["at_risk", "mature"], "unit_cost": 1.0, "uplift_prior": 0.1}


@pytest.mark.parametrize(("values", "key", "words"), [
    ({"data": {"min_timestamp": "yesterday"}}, "data.min_timestamp", "ISO 8601"),
    ({"data": {"min_timestamp": "1/2/1990"}}, "data.min_timestamp", "ISO 8601"),
    ({"features": {"windows_days": [0, -30]}}, "features.windows_days", "at least 1"),
    ({"features": {"windows_days": []}}, "features.windows_days", "at least one"),
    ({"features": {"windows_days": [30, 30]}}, "features.windows_days", "twice"),
    ({"features": {"half_lives_days": [0]}}, "features.half_lives_days", "at least 1"),
    ({"features": {"trend_window_days": 0}}, "features.trend_window_days", "at least 1"),
    ({"tracking": {"tracking_uri": "foo://bar"}}, "tracking.tracking_uri", "tracking URI"),
    ({"serving": {"port": 99999}}, "serving.port", "65535"),
    ({"serving": {"port": 0}}, "serving.port", "1"),
    ({"scoring": {"chunk_users": 0}}, "scoring.chunk_users", "1"),
    ({"layers": {"value_tier": {"high_annual_spend": 10, "low_annual_spend": 100}}}, "layers.value_tier",
     "above high_annual_spend"),
    ({"interventions": {"playbook": [{**ACTION, "layers": ["vip"]}]}}, "interventions.playbook.0.layers",
     "unknown layer(s) 'vip'"),
    ({"interventions": {"playbook": [{**ACTION, "layers": []}]}}, "interventions.playbook.0.layers", "no layer"),
    ({"interventions": {"playbook": [{**ACTION, "uplift_prior": 2}]}}, "interventions.playbook.0.uplift_prior",
     "less than or equal to 1"),
    ({"interventions": {"playbook": [{**ACTION, "unit_cost": -1}]}}, "interventions.playbook.0.unit_cost",
     "greater than or equal to 0"),
])
def test_values_that_would_fail_later_are_refused_by_key(values: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(values, source="s.toml")
    assert f"s.toml: key '{key}'" in str(err.value) and words in str(err.value)


@pytest.mark.parametrize("uri", [None, "sqlite:///x/mlflow.db", "file:///tmp/mlruns", "http://mlflow:5000",
                                 "https://mlflow.example.com", "postgresql+psycopg2://u@h/db", "databricks",
                                 "mlruns", "/abs/path/mlruns", "C:\\mlruns"])
def test_real_tracking_uris_and_paths_are_kept(uri: str | None) -> None:
    assert config_from_dict({"tracking": {"tracking_uri": uri}}).tracking.tracking_uri == uri


def test_the_defaults_pass_their_own_checks() -> None:
    assert config_from_dict(StrataConfig().model_dump()) == StrataConfig()
    assert config_from_dict({"interventions": {"playbook": [ACTION]}}).interventions.playbook[0].layers == ["at_risk",
                                                                                                         "mature"]


@pytest.mark.parametrize(("text", "utc"), [
    ("2024-06-30", "2024-06-30 00:00:00"),
    (" 2024-06-30 ", "2024-06-30 00:00:00"),
    ("2024-06-30T18:00", "2024-06-30 18:00:00"),
    ("2024-06-30T18:00:00Z", "2024-06-30 18:00:00"),
    ("2024-06-30 18:00:00+08:00", "2024-06-30 10:00:00"),
    ("2024-06-30T01:02:03-05", "2024-06-30 06:02:03"),
    ("2024-06-30T18:00:00.123456789+0800", "2024-06-30 10:00:00.123456789"),
    ("2024-03-31T00:00:00+00:00", "2024-03-31 00:00:00"),  # Timestamp.isoformat(), as commands write it
])
def test_iso_dates_and_timestamps_are_read_in_utc(text: str, utc: str) -> None:
    assert parse_as_of(text) == pd.Timestamp(utc, tz="UTC")


@pytest.mark.parametrize("text", [
    "now", "today", "yesterday",  # a run could not be repeated
    "1/2/2025", "02/01/2025", "2025.01.02",  # day or month first?
    "2025-01-01T00:00:00 PST", "2025-01-01T00:00:00 CET", "2025-01-01 Asia/Shanghai",  # pandas dropped "PST"
    "20250101", "1700000000", "2024-06-30Z", "2024-13-01", "2025-02-29", "", "  ",
])
def test_other_forms_are_refused_naming_the_option(text: str) -> None:
    with pytest.raises(StrataError) as err:
        parse_as_of(text, "--previous")
    assert str(err.value).startswith(f"--previous: cannot parse {text!r}") and "ISO 8601" in str(err.value)


def test_timestamps_are_taken_as_they_are() -> None:
    ts = pd.Timestamp("2024-06-30 18:00", tz="Asia/Shanghai")
    assert parse_as_of(ts) == pd.Timestamp("2024-06-30 10:00", tz="UTC")
    assert parse_as_of(pd.Timestamp("2024-06-30")) == pd.Timestamp("2024-06-30", tz="UTC")
