"""Training sets: features and labels stacked over a series of past cutoffs.

The cutoffs step back from ``end - horizon`` by ``cutoff_step_days``, so no label window reaches past
``end`` (the last moment the data is trusted to be complete). Each cutoff uses exactly the code path
of scoring (:meth:`features.pipeline.DuckDBEngine.features`); only ``as_of`` differs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pandas as pd

from features.config import StrataConfig
from features.contract import ENTITY_KEY
from features.cutoffs import parse_as_of
from features.dataset import Dataset
from features.errors import InsufficientDataError
from features.labels import LABEL_COLUMNS, labels_from_engine
from features.pipeline import DuckDBEngine

log = logging.getLogger(__name__)


def training_cutoffs(end: pd.Timestamp, config: StrataConfig) -> list[pd.Timestamp]:
    """The ``config.labels.n_cutoffs`` cutoffs, oldest first, the last at ``end - horizon_days``.

    Consecutive cutoffs are ``cutoff_step_days`` apart; every label window ``(c, c + horizon]`` ends
    at or before ``end``.
    """
    labels = config.labels
    if labels.n_cutoffs < 1 or labels.cutoff_step_days < 1 or labels.horizon_days < 1:
        raise InsufficientDataError(
            f"[labels] n_cutoffs ({labels.n_cutoffs}), cutoff_step_days ({labels.cutoff_step_days}) and "
            f"horizon_days ({labels.horizon_days}) must all be at least 1"
        )
    last = parse_as_of(end) - pd.Timedelta(days=labels.horizon_days)
    step = pd.Timedelta(days=labels.cutoff_step_days)
    return [last - step * k for k in range(labels.n_cutoffs - 1, -1, -1)]


def usable_cutoffs(dataset: Dataset, end: pd.Timestamp, config: StrataConfig) -> list[pd.Timestamp]:
    """:func:`training_cutoffs` that have some history before them (older ones are dropped, logged).

    Raises
    ------
    InsufficientDataError
        When not even the last cutoff (``end - horizon``) is after the first record, stating the dates.
    """
    end = parse_as_of(end)
    cutoffs = training_cutoffs(end, config)
    first = dataset.first_activity()
    horizon = config.labels.horizon_days
    if first is None:
        raise InsufficientDataError("no orders, events or user joins in the data: cannot build a training set")
    last = dataset.last_activity()
    if cutoffs[-1] <= first:
        needed = (first + pd.Timedelta(days=horizon)).date()
        span = f"the data runs from {first.date()} to {last.date() if last is not None else end.date()}"
        if last is not None and last + pd.Timedelta(days=1) <= first + pd.Timedelta(days=horizon):
            # a later end would be after the data (refused too): only more history or a shorter horizon help
            days = max((last - first).days, 0)
            fix = (f"provide a history longer than {horizon} days, or a horizon shorter than {days} days "
                   f"(--horizon-days or [labels] horizon_days)" if days >= 1 else
                   f"provide a history longer than {horizon} days")
        else:
            fix = f"use an end after {needed}, or a shorter horizon (--horizon-days or [labels] horizon_days)"
        raise InsufficientDataError(
            f"the data cannot fit one label window: {span}, and with end {end.date()} and a {horizon}-day "
            f"horizon the latest cutoff would be {cutoffs[-1].date()}, not after the first record; {fix}"
        )
    if last is not None and end > last + pd.Timedelta(days=1):
        log.warning(
            "end %s is after the last record (%s): the days in between count as 'no purchase' in the labels",
            end.date(), last.date(),
        )
    usable = [c for c in cutoffs if c > first]
    if len(usable) < len(cutoffs):
        log.warning(
            "dropped %d cutoff(s) before the first record (%s): %s", len(cutoffs) - len(usable), first.date(),
            ", ".join(str(c.date()) for c in cutoffs if c <= first),
        )
    return usable


def build_training_set(
    dataset: Dataset,
    config: StrataConfig,
    end: pd.Timestamp,
    *,
    progress: Callable[[int, int, pd.Timestamp], None] | None = None,
) -> pd.DataFrame:
    """Features and labels of every user known at each cutoff, stacked (oldest cutoff first).

    Columns: ``user_id``, ``as_of``, the features of :func:`features.pipeline.build_features`, then
    ``label_churn``, ``label_value``, ``label_convert`` (see :mod:`features.labels`, horizon
    ``config.labels.horizon_days``) and ``cutoff`` (= ``as_of``). A user appears once per cutoff at
    which they are known. ``progress(i, n, cutoff)`` is called after each cutoff.

    Raises
    ------
    InsufficientDataError
        When the data cannot fit even one label window before ``end`` (see :func:`usable_cutoffs`).
    """
    cutoffs = usable_cutoffs(dataset, end, config)
    parts = []
    with DuckDBEngine(dataset, config=config) as engine:
        for i, cutoff in enumerate(cutoffs, start=1):
            features = engine.features(cutoff, config)
            labels = labels_from_engine(engine, cutoff, config.labels.horizon_days)
            if not features[ENTITY_KEY].equals(labels[ENTITY_KEY]):
                raise AssertionError(f"features and labels disagree on the users known at {cutoff}")
            part = features.copy()
            for col in LABEL_COLUMNS:
                part[col] = labels[col].to_numpy()
            part["cutoff"] = part["as_of"]
            parts.append(part)
            if progress is not None:
                progress(i, len(cutoffs), cutoff)
    out = pd.concat(parts, ignore_index=True)
    log.info("training set: %d rows over %d cutoffs (%s .. %s)", len(out), len(cutoffs),
             cutoffs[0].date(), cutoffs[-1].date())
    return out
