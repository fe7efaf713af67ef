"""Spark scoring (serving/spark_scoring.py) gives every user the embedded Scorer's row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from features.config import StrataConfig
from features.dataset import Dataset
from features.pipeline import build_features
from serving.scorer import OUTPUT_COLUMNS, Scorer

pytestmark = [pytest.mark.spark, pytest.mark.xdist_group("spark")]


@pytest.fixture(scope="module")
def scorer(demo_dataset: Dataset, scoring_fixtures: Any) -> Scorer:
    """A real (small) model bundle trained on the demo data, wrapped in the embedded Scorer."""
    config = scoring_fixtures.small_config()
    bundle = scoring_fixtures.train_small_bundle(demo_dataset, config)
    return Scorer(bundle, config, model_name="strata", model_version="7", model_alias="champion")


def _embedded(dataset: Dataset, as_of: pd.Timestamp, scorer: Scorer, budget: float | None = None) -> pd.DataFrame:
    scores = scorer.score_features(build_features(dataset, as_of, StrataConfig()), budget=budget)
    return scores.sort_values("user_id").reset_index(drop=True)


def test_output_schema_covers_every_output_column() -> None:
    from serving.spark_scoring import output_schema

    names = [part.split("`")[1] for part in output_schema().split(", ")]
    assert names == OUTPUT_COLUMNS


def test_spark_scores_equal_embedded_partitioned_parquet(
    spark: Any, spark_demo_features: tuple[pd.Timestamp, Any], demo_dataset: Dataset, scorer: Scorer,
    tmp_path: Path, frames_match: Any,
) -> None:
    from serving.spark_scoring import (
        SparkScoringError,
        read_scores_spark,
        score_features_spark,
        write_scores_spark,
    )

    as_of, features = spark_demo_features
    expected = _embedded(demo_dataset, as_of, scorer)
    out = tmp_path / "scores"
    write_scores_spark(score_features_spark(features.repartition(3), scorer), out)

    actual = read_scores_spark(spark, out)
    frames_match(expected, actual)
    layers = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert layers == sorted(f"refined_layer={v}" for v in expected["refined_layer"].unique())
    # Prospects (conversion) and buyers (churn) both went through the partition scorer.
    assert actual["conversion_prob"].notna().sum() > 20 and actual["churn_risk"].notna().sum() > 20
    assert actual["action_id"].notna().sum() > 20
    with pytest.raises(SparkScoringError, match="already exists"):
        write_scores_spark(score_features_spark(features, scorer), out)


def test_run_score_spark_with_budget_from_csv(
    spark: Any, demo_dataset: Dataset, demo_dir: Path, scorer: Scorer, tmp_path: Path, frames_match: Any,
    spark_test_config: StrataConfig,
) -> None:
    """End to end from CSV files with a binding budget: the global allocation matches the embedded one."""
    from serving.spark_scoring import read_scores_spark, run_score_spark

    as_of = pd.Timestamp("2024-12-31", tz="UTC")
    unlimited = _embedded(demo_dataset, as_of, scorer)
    budget = 0.25 * float(unlimited.loc[unlimited["action_id"].notna() & ~unlimited["control"], "action_cost"].sum())
    expected = _embedded(demo_dataset, as_of, scorer, budget=budget)
    run = run_score_spark(data_dir=demo_dir, orders=None, events=None, users=None, as_of=as_of, out=tmp_path / "s",
                          config=scorer.config.model_copy(update={"spark": spark_test_config.spark}), budget=budget, scorer=scorer, now=pd.Timestamp("2025-01-01", tz="UTC"),
                          partition_by=None)

    actual = read_scores_spark(spark, tmp_path / "s")
    frames_match(expected, actual)
    assert run.allocation is not None and run.allocation.spent <= budget
    assert 0 < run.allocation.treated < (unlimited["action_id"].notna() & ~unlimited["control"]).sum()
    assert run.n_users == len(expected) and run.refined_layer == expected["refined_layer"].value_counts().to_dict()
    assert run.model_version == "7"
