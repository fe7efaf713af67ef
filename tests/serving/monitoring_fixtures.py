"""Shared inputs of the monitoring tests: demo data sets and known shifts injected into them.

Shifts post-process a generated :class:`~features.dataset.Dataset` (the generator itself has no drift
switch), so each test knows exactly which features should move:

- :func:`flood_channel`: a new acquisition channel floods in just before the cutoff (new prospects who
  joined through a channel the model never saw);
- :func:`collapse_engagement`: most engagement events of the last weeks before the cutoff vanish
  (orders untouched);
- :func:`stop_buying`: a share of the buyers stops buying after a date (outcomes shift, features at
  earlier cutoffs do not).

Data sets are cached per process; callers must not mutate them.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from features.config import StrataConfig, config_from_dict
from features.dataset import Dataset

DEMO_END = pd.Timestamp("2024-12-31", tz="UTC")
N_USERS = 2000
#: Training end of the monitored model: its reference population is as of TRAIN_END - 90 days.
TRAIN_END = pd.Timestamp("2024-06-30", tz="UTC")
REFERENCE_CUTOFF = TRAIN_END - pd.Timedelta(days=90)
#: Monitoring date of the model-health tests: three monthly cutoffs after the training ones have
#: realised outcomes by then (and no label window reaches the Q4 peak the model never saw).
MONITOR_AS_OF = pd.Timestamp("2024-09-30", tz="UTC")
FAST_TRAINING = {
    "num_boost_round": 60,
    "early_stopping_rounds": 10,
    "min_data_in_leaf": 20,
    "num_leaves": 15,
    "min_users": 100,
    "min_positives": 10,
}


def monitor_config(**monitoring: object) -> StrataConfig:
    """Quick training settings, 4 training cutoffs, and ``[monitoring]`` overrides."""
    return config_from_dict({"training": FAST_TRAINING, "labels": {"n_cutoffs": 5}, "monitoring": monitoring})


@lru_cache(maxsize=4)
def demo(seed: int) -> Dataset:
    """2,000 synthetic users up to :data:`DEMO_END` (the same generator for every seed)."""
    from features.demo_data import generate_dataset

    return generate_dataset(n_users=N_USERS, end=DEMO_END, seed=seed)


def flood_channel(dataset: Dataset, as_of: pd.Timestamp, n_new: int, channel: str = "douyin_live",
                  days: float = 45.0, seed: int = 0) -> Dataset:
    """``dataset`` plus ``n_new`` users who joined through ``channel`` in the ``days`` before ``as_of``.

    They added the brand's WeCom on joining and viewed a few pages, but bought nothing (prospects).
    """
    assert dataset.users is not None and dataset.events is not None
    rng = np.random.default_rng(seed)
    ids = np.array([f"flood{i:06d}" for i in range(n_new)], dtype=object)
    joined = as_of - pd.to_timedelta(rng.uniform(0.5, days, n_new), unit="D")
    joined = joined.floor("s")
    template = dataset.users.sample(n=n_new, replace=True, random_state=seed).reset_index(drop=True)
    users = template.assign(user_id=ids, joined_at=joined, source_channel=channel)
    n_views = rng.poisson(2.0, n_new)
    view_user = np.repeat(ids, n_views)
    start = pd.Series(joined.repeat(n_views))
    view_at = start + (as_of - start) * rng.uniform(0.0, 1.0, len(start))
    events = pd.concat(
        [
            pd.DataFrame({"user_id": ids, "occurred_at": joined + pd.Timedelta(minutes=1), "event_type": "add_wecom",
                          "value": np.nan, "channel": "wecom"}),
            pd.DataFrame({"user_id": view_user, "occurred_at": view_at.dt.floor("s").to_numpy(),
                          "event_type": "page_view", "value": np.nan, "channel": "mini_program"}),
        ],
        ignore_index=True,
    )
    events = events[events["occurred_at"] <= as_of]
    all_events = pd.concat([dataset.events, events.astype(dataset.events.dtypes.to_dict())], ignore_index=True)
    all_users = pd.concat([dataset.users, users.astype(dataset.users.dtypes.to_dict())], ignore_index=True)
    return Dataset(orders=dataset.orders, events=all_events.sort_values("occurred_at", kind="stable").reset_index(drop=True),
                   users=all_users)


def collapse_engagement(dataset: Dataset, as_of: pd.Timestamp, days: float = 45.0, keep: float = 0.1,
                        seed: int = 0) -> Dataset:
    """``dataset`` with only a ``keep`` share of the events of the ``days`` before ``as_of`` (orders unchanged)."""
    assert dataset.events is not None
    rng = np.random.default_rng(seed)
    ev = dataset.events
    recent = ((ev["occurred_at"] > as_of - pd.Timedelta(days=days)) & (ev["occurred_at"] <= as_of)).to_numpy()
    drop = recent & (rng.random(len(ev)) >= keep)
    return Dataset(orders=dataset.orders, events=ev[~drop].reset_index(drop=True), users=dataset.users)


def stop_buying(dataset: Dataset, after: pd.Timestamp, share: float, seed: int = 0) -> Dataset:
    """``dataset`` where a random ``share`` of the buyers places no order after ``after``."""
    rng = np.random.default_rng(seed)
    orders = dataset.orders
    buyers = orders["user_id"].unique()
    quitters = set(buyers[rng.random(len(buyers)) < share])
    gone = (orders["ordered_at"] > after) & orders["user_id"].isin(quitters)
    return Dataset(orders=orders[~gone].reset_index(drop=True), events=dataset.events, users=dataset.users)


@lru_cache(maxsize=1)
def fitted_bundle():  # noqa: ANN201  (training.bundle.ModelBundle)
    """A bundle trained (no MLflow) on seed 7 up to :data:`TRAIN_END`, cached per process. Do not mutate."""
    from training.train import fit_bundle, prepare_training_data

    data = prepare_training_data(demo(7), monitor_config(), as_of=TRAIN_END)
    return fit_bundle(data).bundle
