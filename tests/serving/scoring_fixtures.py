"""A small real model bundle for the scoring tests: tiny LightGBM models trained on the demo data.

Labels are computed here directly from the orders (independently of ``features.labels``) so the
scoring tests depend only on features, the bundle and the scorer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from features.config import StrataConfig, config_from_dict
from features.dataset import Dataset
from features.pipeline import DuckDBEngine

HORIZON = 90
SCORE_AS_OF = pd.Timestamp("2024-12-31", tz="UTC")
TRAIN_CUTOFFS = [pd.Timestamp(d, tz="UTC") for d in ("2024-04-30", "2024-05-31", "2024-06-30", "2024-07-31")]


def small_config(**overrides: object) -> StrataConfig:
    """Default configuration with quick training settings (and any section overrides)."""
    values: dict[str, object] = {
        "training": {"num_boost_round": 40, "early_stopping_rounds": 10, "min_data_in_leaf": 20, "num_leaves": 15},
    }
    values.update(overrides)
    return config_from_dict(values)


def labels_for(dataset: Dataset, features: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """label_churn (no paid order in (as_of, as_of+H]), label_value (net spend, >= 0), label_convert."""
    orders = dataset.orders
    status = orders["status"] if "status" in orders.columns else pd.Series("paid", index=orders.index)
    window = (orders["ordered_at"] > as_of) & (orders["ordered_at"] <= as_of + pd.Timedelta(days=HORIZON))
    w = orders[window]
    paid = w[status[window] == "paid"]
    signed = np.where(status[window] == "paid", w["amount"], -w["amount"])
    spend = pd.Series(signed, index=w.index).groupby(w["user_id"]).sum()
    bought = set(paid["user_id"])
    users = features["user_id"]
    out = pd.DataFrame({"user_id": users})
    out["label_churn"] = (~users.isin(bought)).astype(float).to_numpy()
    out["label_value"] = users.map(spend).fillna(0.0).clip(lower=0.0).to_numpy()
    prospect = features["is_prospect"].to_numpy() >= 0.5
    out["label_convert"] = np.where(prospect, 1.0 - out["label_churn"], np.nan)
    return out


def train_small_bundle(dataset: Dataset, config: StrataConfig):  # noqa: ANN201  (ModelBundle)
    """Train a tiny but real ModelBundle (churn, conversion, value) on 4 monthly cutoffs."""
    from training.bundle import ModelBundle
    from training.models import (
        CalibratedBoostedClassifier,
        FutureValueModel,
        categorical_features,
        categorical_levels,
        feature_columns,
        to_model_matrix,
    )

    with DuckDBEngine(dataset) as engine:
        frames = []
        for cutoff in TRAIN_CUTOFFS:
            f = engine.features(cutoff, config)
            lab = labels_for(dataset, f, cutoff)
            frames.append(pd.concat([f.reset_index(drop=True), lab.drop(columns="user_id")], axis=1))
        latest_features = engine.features(TRAIN_CUTOFFS[-1], config)
    stacked = pd.concat(frames, ignore_index=True)
    names = feature_columns(latest_features)
    cats = categorical_features(stacked, names)
    levels = categorical_levels(stacked, cats)
    X = to_model_matrix(stacked, names, levels)
    hold = (pd.util.hash_array(stacked["user_id"].to_numpy(dtype=object)) % 3 == 0)
    t = config.training
    hyper = dict(
        num_boost_round=t.num_boost_round,
        early_stopping_rounds=t.early_stopping_rounds,
        learning_rate=0.1,
        num_leaves=t.num_leaves,
        min_data_in_leaf=t.min_data_in_leaf,
        seed=t.seed,
    )
    buyer = stacked["is_prospect"].to_numpy() < 0.5
    churn = CalibratedBoostedClassifier(calibration="platt", **hyper).fit(
        X[buyer & ~hold], stacked.loc[buyer & ~hold, "label_churn"].to_numpy(),
        X_holdout=X[buyer & hold], y_holdout=stacked.loc[buyer & hold, "label_churn"].to_numpy(),
    )
    pro = ~buyer
    conv = CalibratedBoostedClassifier(calibration="platt", **hyper).fit(
        X[pro & ~hold], stacked.loc[pro & ~hold, "label_convert"].to_numpy(),
        X_holdout=X[pro & hold], y_holdout=stacked.loc[pro & hold, "label_convert"].to_numpy(),
    )
    value = FutureValueModel(candidates=("tweedie",), **hyper).fit(
        X[~hold], stacked.loc[~hold, "label_value"].to_numpy(),
        X_holdout=X[hold], y_holdout=stacked.loc[hold, "label_value"].to_numpy(),
    )
    bundle = ModelBundle(
        config=config.model_dump(mode="json"),
        feature_names=names,
        categorical_levels=levels,
        churn_model=churn,
        value_model=value,
        conversion_model=conv,
        horizon_days=HORIZON,
        trained_at=pd.Timestamp("2025-01-01", tz="UTC").isoformat(),
    )
    bundle.freeze_layer_thresholds(latest_features, config)
    return bundle


def save_bundle(bundle, directory: Path) -> Path:  # noqa: ANN001
    """Save and return the bundle directory."""
    return bundle.save(directory)


_CACHE: dict[str, object] = {}


def demo_data() -> Dataset:
    """The 2,000-user demo data set of tests/conftest.py (seed 7, ends 2024-12-31), cached per process."""
    if "dataset" not in _CACHE:
        from features.demo_data import generate_dataset

        _CACHE["dataset"] = generate_dataset(n_users=2000, end=pd.Timestamp("2024-12-31", tz="UTC"), seed=7)
    return _CACHE["dataset"]  # type: ignore[return-value]


def small_bundle():  # noqa: ANN201  (ModelBundle)
    """A tiny bundle trained on :func:`demo_data` with :func:`small_config`, cached per process. Do not mutate."""
    if "bundle" not in _CACHE:
        _CACHE["bundle"] = train_small_bundle(demo_data(), small_config())
    return _CACHE["bundle"]


def score_features_frame() -> pd.DataFrame:
    """Features of :func:`demo_data` as of :data:`SCORE_AS_OF`, cached per process. Do not mutate."""
    if "features" not in _CACHE:
        from features.pipeline import build_features

        _CACHE["features"] = build_features(demo_data(), SCORE_AS_OF, small_config())
    return _CACHE["features"]  # type: ignore[return-value]
