"""Hyper-parameter search with Optuna, every trial a nested MLflow run, the best registered as challenger.

The training set and its time split are built once. Each trial fits the churn model with the
trial's LightGBM parameters and is scored by its **holdout** churn AUC (the half of the latest cutoff
used for early stopping and calibration), never by the evaluation half, which stays untouched for the
final backtest and for promotion. The best parameters then train the churn and conversion classifiers of
the bundle (the value model keeps the configured parameters, as the objective says nothing about it)
in the parent run, which is logged and registered exactly like :func:`training.train.train_model`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.config import StrataConfig
from features.dataset import Dataset
from features.errors import StrataError
from training.models import (
    categorical_features,
    categorical_levels,
    estimator_params,
    feature_columns,
    to_model_matrix,
)
from training.train import (
    TrainingData,
    TrainResult,
    fit_bundle,
    fit_churn_model,
    log_run_contents,
    prepare_training_data,
    register_challenger,
)

log = logging.getLogger(__name__)

TrialProgress = Callable[[int, int, float], None]
"""Called after each trial with (trials done, trials asked, best holdout AUC so far)."""


@dataclass
class ExperimentResult:
    """Outcome of :func:`run_experiment`."""

    best_params: dict[str, Any]
    best_value: float
    """Best holdout churn AUC."""
    trials: pd.DataFrame
    """One row per trial: ``number``, ``holdout_churn_auc``, ``run_id`` and the parameters."""
    train_result: TrainResult


def suggest_params(trial: Any, n_train_rows: int) -> dict[str, Any]:
    """LightGBM parameters for one Optuna trial (search space sized to the training rows)."""
    max_leaf_rows = int(max(11, min(300, n_train_rows // 10)))
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 7, 127, log=True),
        "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 10, max_leaf_rows, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
    }


def _holdout_auc(data: TrainingData, X: pd.DataFrame, params: dict[str, Any]) -> float:
    from training.metrics import churn_metrics

    t = data.config.training
    est = estimator_params(
        t.learning_rate, t.num_leaves, t.min_data_in_leaf, t.num_boost_round, t.early_stopping_rounds, t.seed, params
    )
    ts, split = data.training_set, data.split
    model = fit_churn_model(X, ts, split, est)
    buyers = ts["is_prospect"].to_numpy(dtype=float) < 0.5
    ho = split.holdout & buyers
    p = model.predict_proba(X.loc[ho])[:, 1]
    return float(churn_metrics(ts["label_churn"].to_numpy(dtype=float)[ho], p)["auc"])


def run_experiment(
    dataset: Dataset,
    config: StrataConfig,
    n_trials: int,
    as_of: str | pd.Timestamp | None = None,
    horizon_days: int | None = None,
    run_name: str | None = None,
    progress: TrialProgress | None = None,
) -> ExperimentResult:
    """Tune the churn model's LightGBM parameters over ``n_trials`` Optuna trials and register the bundle they
    train (churn and conversion with the best parameters, value with the configured ones) as challenger.

    Parameters
    ----------
    dataset, config, as_of, horizon_days, run_name : as in :func:`training.train.train_model`.
    n_trials : number of trials (>= 1); the sampler is seeded with ``training.seed``.
    progress : optional callback after each trial.
    """
    import mlflow
    import optuna

    from training.tracking import check_local_store, configure_tracking, resolve_tracking_uri

    if n_trials < 1:
        raise StrataError(f"--trials: value {n_trials} must be at least 1")
    check_local_store(resolve_tracking_uri(config))  # a store that cannot be written fails now, not after the trials
    data = prepare_training_data(dataset, config, as_of, horizon_days)
    ts, split = data.training_set, data.split
    names = feature_columns(ts)
    levels = categorical_levels(ts.loc[split.train], categorical_features(ts, names))
    X = to_model_matrix(ts, names, levels, source="training set")
    n_train = int(split.train.sum())
    configure_tracking(data.config)
    rows: list[dict[str, Any]] = []
    with mlflow.start_run(run_name=run_name) as parent:
        mlflow.set_tag("strata.kind", "experiment")

        def objective(trial: Any) -> float:
            params = suggest_params(trial, n_train)
            with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True) as child:
                auc = _holdout_auc(data, X, params)
                mlflow.log_params(params)
                mlflow.log_metric("holdout_churn_auc", auc)
            rows.append({"number": trial.number, "holdout_churn_auc": auc, "run_id": child.info.run_id, **params})
            return auc if np.isfinite(auc) else 0.0

        def on_trial(study: Any, trial: Any) -> None:
            if progress is not None:
                progress(len(study.trials), n_trials, float(study.best_value))

        sampler = optuna.samplers.TPESampler(seed=data.config.training.seed)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(objective, n_trials=n_trials, callbacks=[on_trial])
        best = dict(study.best_params)
        log.info("best trial %d: holdout churn AUC %.4f with %s", study.best_trial.number, study.best_value, best)
        fit = fit_bundle(data, overrides=best)
        mlflow.log_metric("best_holdout_churn_auc", float(study.best_value))
        mlflow.log_param("tuning_trials", n_trials)
        metrics, info, notes = log_run_contents(dataset, data, fit)
        version = register_challenger(data.config, info.model_uri, parent.info.run_id, data, metrics, fit)
    name = data.config.training.model_name
    result = TrainResult(
        run_id=parent.info.run_id,
        model_name=name,
        model_version=version,
        model_uri=f"models:/{name}/{version}",
        bundle=fit.bundle,
        metrics=metrics,
        end=data.end,
        cutoffs=[pd.Timestamp(c) for c in data.fingerprint["cutoffs"]],
        conversion_trained=fit.bundle.conversion_model is not None,
        notes=notes,
    )
    return ExperimentResult(
        best_params=best, best_value=float(study.best_value), trials=pd.DataFrame(rows), train_result=result
    )
