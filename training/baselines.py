"""Yardsticks every model is reported against: BG/NBD + Gamma-Gamma, and a plain recency/spend rule.

Both baselines are point-in-time: :func:`bgnbd_baseline` fits on the orders at or before ``as_of`` only,
:func:`rule_baseline` reads a feature table built at ``as_of``.

Conventions of the BG/NBD summary (those of Fader, Hardie and Lee, which reproduce their CDNOW figures):
a *transaction* is a day (UTC) with at least one paid order, so several orders on one day count once;
``frequency`` is the number of transaction days minus 1 (repeat transactions); ``recency`` is the time
from the first to the last transaction day; ``T`` is the time from the first transaction day (midnight
UTC) to ``as_of``; all in the chosen time unit. ``monetary_value`` is the mean spend of the repeat days
(paid amounts summed per day; the first day is left out). Refunds are not modelled: orders whose
``status`` is not ``paid`` are ignored (rows without a status count as paid).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from features.cutoffs import parse_as_of
from features.dataset import Dataset
from features.errors import InsufficientDataError, StrataError
from training.bgnbd import BetaGeoModel
from training.gamma_gamma import GammaGammaModel

TimeUnit = Literal["days", "weeks"]
_UNIT_DAYS: dict[str, float] = {"days": 1.0, "weeks": 7.0}

#: Columns of :func:`bgnbd_baseline`'s result, in order.
BGNBD_COLUMNS = ["user_id", "churn_prob", "expected_value", "p_alive", "expected_purchases", "expected_spend"]
#: Columns of :func:`rule_baseline`'s result, in order.
RULE_COLUMNS = ["user_id", "churn_score", "value_score"]


def _unit_days(time_unit: str) -> float:
    if time_unit not in _UNIT_DAYS:
        raise StrataError(f"time_unit: value {time_unit!r} is not one of {sorted(_UNIT_DAYS)}")
    return _UNIT_DAYS[time_unit]


def _paid_orders_until(orders: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    for col in ("user_id", "ordered_at", "amount"):
        if col not in orders.columns:
            raise StrataError(f"orders: missing column '{col}' (needed by the BG/NBD baseline)")
    keep = orders["ordered_at"] <= as_of
    if "status" in orders.columns:
        keep &= orders["status"].isna() | (orders["status"] == "paid")
    return orders.loc[keep, ["user_id", "ordered_at", "amount"]]


def rfm_summary(
    orders: pd.DataFrame, as_of: str | pd.Timestamp, time_unit: TimeUnit = "weeks"
) -> pd.DataFrame:
    """Per-buyer (frequency, recency, T, monetary_value) from paid orders at or before ``as_of``.

    Returns one row per user with at least one paid order by ``as_of``, sorted by ``user_id``:
    ``user_id``, ``frequency`` (repeat transaction days), ``recency`` and ``T`` (in ``time_unit``),
    ``monetary_value`` (mean spend of the repeat days, currency; NaN when frequency is 0),
    ``first_day_spend`` (currency). See the module docstring for the conventions.
    """
    as_of = parse_as_of(as_of)
    unit = pd.Timedelta(days=_unit_days(time_unit))
    paid = _paid_orders_until(orders, as_of)
    day_spend = (
        paid.assign(day=paid["ordered_at"].dt.floor("D"))
        .groupby(["user_id", "day"], sort=True, as_index=False)["amount"]
        .sum()
    )
    first_flag = ~day_spend["user_id"].duplicated()
    per_user = day_spend.groupby("user_id", sort=True).agg(
        n_days=("day", "size"), first_day=("day", "min"), last_day=("day", "max")
    )
    repeat_mean = day_spend.loc[~first_flag].groupby("user_id")["amount"].mean()
    first_spend = day_spend.loc[first_flag].set_index("user_id")["amount"]
    out = pd.DataFrame(
        {
            "user_id": per_user.index.astype(object),
            "frequency": (per_user["n_days"] - 1).astype(np.float64).to_numpy(),
            "recency": ((per_user["last_day"] - per_user["first_day"]) / unit).to_numpy(dtype=np.float64),
            "T": ((as_of - per_user["first_day"]) / unit).to_numpy(dtype=np.float64),
            "monetary_value": repeat_mean.reindex(per_user.index).to_numpy(dtype=np.float64),
            "first_day_spend": first_spend.reindex(per_user.index).to_numpy(dtype=np.float64),
        }
    )
    return out.reset_index(drop=True)


def _known_user_ids(dataset: Dataset, as_of: pd.Timestamp) -> pd.Index:
    ids = [dataset.orders.loc[dataset.orders["ordered_at"] <= as_of, "user_id"]]
    if dataset.events is not None and len(dataset.events):
        ids.append(dataset.events.loc[dataset.events["occurred_at"] <= as_of, "user_id"])
    if dataset.users is not None and len(dataset.users):
        users = dataset.users
        if "joined_at" in users.columns:
            users = users[users["joined_at"].isna() | (users["joined_at"] <= as_of)]
        ids.append(users["user_id"])
    return pd.Index(pd.concat(ids, ignore_index=True).astype(str).unique()).sort_values()


@dataclass
class BgnbdBaseline:
    """BG/NBD + Gamma-Gamma fitted at one cutoff; :meth:`predict` scores any horizon.

    ``gamma_gamma`` is None when fewer than 2 repeat buyers had a positive repeat spend; every buyer then
    gets ``fallback_spend``. ``fallback_spend`` (currency per transaction) is the Gamma-Gamma population
    mean when it exists, else the mean of the repeat buyers' ``monetary_value``, else the mean first-day
    spend.
    """

    as_of: pd.Timestamp
    time_unit: TimeUnit
    summary: pd.DataFrame
    bgnbd: BetaGeoModel
    gamma_gamma: GammaGammaModel | None
    fallback_spend: float
    known_user_ids: pd.Index

    def predict(
        self, horizon_days: float, user_ids: list[str] | pd.Index | pd.Series | None = None
    ) -> pd.DataFrame:
        """Scores over ``(as_of, as_of + horizon_days]``, one row per user (columns :data:`BGNBD_COLUMNS`).

        ``churn_prob``: P(no paid order in the horizon); ``expected_purchases``: expected transaction
        days; ``expected_spend``: expected spend per transaction (currency); ``expected_value`` =
        ``expected_purchases * expected_spend`` (currency); ``p_alive``: P(alive at as_of). Users
        without a paid order at ``as_of`` (prospects; BG/NBD says nothing about them) get
        ``churn_prob`` 1.0, ``expected_value`` 0.0, ``expected_purchases`` 0.0 and NaN ``p_alive`` and
        ``expected_spend``. ``user_ids`` (e.g. a feature table's ``user_id`` column) fixes the rows and
        their order; by default every user known at ``as_of`` (orders, events, users), sorted.
        """
        if not np.isfinite(horizon_days) or horizon_days <= 0:
            raise StrataError(f"horizon_days: value {horizon_days!r} must be a positive number of days")
        s = self.summary
        t = float(horizon_days) / _unit_days(self.time_unit)
        x, tx, big_t = s["frequency"].to_numpy(), s["recency"].to_numpy(), s["T"].to_numpy()
        spend = np.full(len(s), self.fallback_spend)
        if self.gamma_gamma is not None:
            m = s["monetary_value"].to_numpy()
            usable = (x > 0) & (m > 0)
            gg = self.gamma_gamma.conditional_expected_average_spend(
                np.where(usable, x, 0.0), np.where(usable, m, 1.0)
            )
            spend = np.where(np.isfinite(gg), gg, self.fallback_spend)
        n_purchases = self.bgnbd.expected_purchases(t, x, tx, big_t)
        buyers = pd.DataFrame(
            {
                "user_id": s["user_id"].to_numpy(),
                "churn_prob": self.bgnbd.prob_no_purchase(t, x, tx, big_t),
                "expected_value": n_purchases * spend,
                "p_alive": self.bgnbd.prob_alive(x, tx, big_t),
                "expected_purchases": n_purchases,
                "expected_spend": spend,
            }
        ).set_index("user_id")
        index = self.known_user_ids if user_ids is None else pd.Index(pd.Series(user_ids).astype(str))
        out = buyers.reindex(index)
        prospect = ~out.index.isin(buyers.index)
        for col, value in (("churn_prob", 1.0), ("expected_value", 0.0), ("expected_purchases", 0.0)):
            out.loc[prospect, col] = value
        out.index.name = "user_id"
        return out.reset_index()[BGNBD_COLUMNS]


def fit_bgnbd_baseline(
    dataset: Dataset,
    as_of: str | pd.Timestamp,
    time_unit: TimeUnit = "weeks",
    penalizer: float = 0.0,
) -> BgnbdBaseline:
    """Fit BG/NBD on every buyer and Gamma-Gamma on the repeat buyers, from orders at or before ``as_of``.

    Raises :class:`~features.errors.InsufficientDataError` when there are fewer than 2 buyers or no
    repeat purchase at all by ``as_of``.
    """
    as_of = parse_as_of(as_of)
    summary = rfm_summary(dataset.orders, as_of, time_unit)
    if len(summary) < 2 or not (summary["frequency"] > 0).any():
        raise InsufficientDataError(
            f"BG/NBD baseline at {as_of.date()}: {len(summary)} buyers and "
            f"{int((summary['frequency'] > 0).sum())} repeat buyers in the orders up to that date; "
            "needs at least 2 buyers and 1 repeat buyer"
        )
    bgnbd = BetaGeoModel(penalizer=penalizer).fit(summary["frequency"], summary["recency"], summary["T"])
    repeat = summary[(summary["frequency"] > 0) & (summary["monetary_value"] > 0)]
    gamma_gamma: GammaGammaModel | None = None
    if len(repeat) >= 2:
        gamma_gamma = GammaGammaModel(penalizer=penalizer).fit(repeat["frequency"], repeat["monetary_value"])
    if gamma_gamma is not None and np.isfinite(gamma_gamma.population_mean_spend_):
        fallback = gamma_gamma.population_mean_spend_
    elif len(repeat):
        fallback = float(repeat["monetary_value"].mean())
    else:
        fallback = float(summary["first_day_spend"].mean())
    return BgnbdBaseline(
        as_of=as_of,
        time_unit=time_unit,
        summary=summary,
        bgnbd=bgnbd,
        gamma_gamma=gamma_gamma,
        fallback_spend=float(fallback),
        known_user_ids=_known_user_ids(dataset, as_of),
    )


def bgnbd_baseline(
    dataset: Dataset,
    as_of: str | pd.Timestamp,
    horizon_days: float,
    time_unit: TimeUnit = "weeks",
    user_ids: list[str] | pd.Index | pd.Series | None = None,
    penalizer: float = 0.0,
) -> pd.DataFrame:
    """BG/NBD + Gamma-Gamma churn probability and expected spend over ``(as_of, as_of + horizon_days]``.

    Fitted on the orders at or before ``as_of`` only. Returns :data:`BGNBD_COLUMNS`: ``user_id``,
    ``churn_prob`` (probability of no paid order in the horizon), ``expected_value`` (currency), then
    ``p_alive``, ``expected_purchases`` and ``expected_spend``; see :meth:`BgnbdBaseline.predict` for
    prospects and the row set.
    """
    fitted = fit_bgnbd_baseline(dataset, as_of, time_unit=time_unit, penalizer=penalizer)
    return fitted.predict(horizon_days, user_ids=user_ids)


def rule_baseline(features: pd.DataFrame, value_column: str = "spend_90d") -> pd.DataFrame:
    """Rule scores from a feature table: recency rank for churn, last-window spend for value.

    Returns :data:`RULE_COLUMNS` in the feature table's row order. ``churn_score`` is the average rank of
    ``days_since_last_order`` divided by the row count, in (0, 1]: the longer since the last order, the
    higher; prospects (no paid order: ``is_prospect`` == 1 when the column exists, or no
    ``days_since_last_order``) rank above every buyer, consistent with :func:`bgnbd_baseline` giving them
    churn probability 1. It is a rank, not a calibrated probability. ``value_score`` is ``value_column``
    (net spend in the last 90 days by default, currency) floored at 0, with 0 for prospects.
    """
    needed = ["user_id", "days_since_last_order", value_column]
    missing = [c for c in needed if c not in features.columns]
    if missing:
        raise StrataError(f"features: missing column(s) {missing} (needed by rule_baseline)")
    if len(features) == 0:
        return pd.DataFrame(
            {c: pd.Series(dtype=object if c == "user_id" else np.float64) for c in RULE_COLUMNS}
        )
    days = features["days_since_last_order"].astype(np.float64)
    prospect = days.isna()
    if "is_prospect" in features.columns:
        prospect |= features["is_prospect"].astype(np.float64) == 1.0
    ordered = np.where(prospect, np.inf, days.fillna(0.0))
    churn_score = rankdata(ordered, method="average") / len(features)
    value = features[value_column].astype(np.float64).fillna(0.0).clip(lower=0.0).where(~prospect, 0.0)
    return pd.DataFrame(
        {
            "user_id": features["user_id"].to_numpy(),
            "churn_score": churn_score,
            "value_score": value.to_numpy(),
        }
    )
