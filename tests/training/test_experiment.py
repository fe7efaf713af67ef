"""Optuna search: trials are nested MLflow runs scored on the holdout; the best becomes the challenger."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from training_fixtures import DEMO_END, demo_data, fast_config, isolate_tracking

from features.errors import StrataError


def test_experiment_logs_trials_and_registers_the_best(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    from training.experiment import run_experiment

    isolate_tracking(monkeypatch, tmp_path)
    cfg = fast_config(num_boost_round=40)
    seen: list[tuple[int, int, float]] = []
    result = run_experiment(demo_data(), cfg, n_trials=3, as_of=DEMO_END, run_name="search",
                            progress=lambda done, total, best: seen.append((done, total, best)))

    assert [s[:2] for s in seen] == [(1, 3), (2, 3), (3, 3)]
    assert len(result.trials) == 3
    assert result.best_value == pytest.approx(result.trials["holdout_churn_auc"].max())
    assert seen[-1][2] == pytest.approx(result.best_value)
    assert result.trials["holdout_churn_auc"].between(0.5, 1.0).all()

    client = mlflow.MlflowClient()
    parent = result.train_result.run_id
    children = client.search_runs(
        [client.get_run(parent).info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'"
    )
    assert sorted(r.info.run_id for r in children) == sorted(result.trials["run_id"])
    for child in children:
        assert {"learning_rate", "num_leaves", "min_data_in_leaf", "feature_fraction", "lambda_l2"} <= set(child.data.params)
        assert np.isfinite(child.data.metrics["holdout_churn_auc"])

    # the best parameters trained the registered bundle, logged in the parent run
    churn = result.train_result.bundle.churn_model
    assert churn.learning_rate == pytest.approx(result.best_params["learning_rate"])
    assert churn.num_leaves == result.best_params["num_leaves"]
    assert churn.extra_params == {
        "feature_fraction": result.best_params["feature_fraction"],
        "lambda_l2": result.best_params["lambda_l2"],
    }
    # the objective is churn AUC, so the value model keeps the configured parameters
    value = result.train_result.bundle.value_model
    assert value.learning_rate == cfg.training.learning_rate and value.extra_params is None
    parent_run = client.get_run(parent)
    assert parent_run.data.params["tuning_trials"] == "3"
    assert "bgnbd_churn_auc" in parent_run.data.metrics and "churn_auc" in parent_run.data.metrics
    mv = client.get_model_version_by_alias("strata", "challenger")
    assert str(mv.version) == result.train_result.model_version and mv.tags["run_id"] == parent


def test_experiment_needs_a_trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from training.experiment import run_experiment

    isolate_tracking(monkeypatch, tmp_path)
    with pytest.raises(StrataError, match="--trials: value 0"):
        run_experiment(demo_data(), fast_config(), n_trials=0, as_of=DEMO_END)
