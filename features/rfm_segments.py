"""The classic eight RFM segments (RFM分层) by high/low recency, frequency and monetary value.

- R = ``days_since_last_order`` (R is *high* when the user bought *recently*, i.e. few days),
  F = ``orders_total`` (paid orders, all time), M = ``spend_total`` (net spend, all time, shop currency).
  All-time F and M keep lapsed big spenders "important" (important keep / retain is where win-back pays).
- ``[layers.rfm] mode = "fixed"``: R high iff days <= ``recency_days``; F high iff orders >=
  ``frequency_orders``; M high iff spend >= ``monetary_spend``.
- ``mode = "quantile"`` (default): the thresholds are the medians over the current buyers, and a user is
  high only when strictly better than the median (days < median, orders > median, spend > median), so
  a tied mass at the median (e.g. the many one-order buyers) counts as low, not high.
- Segment by (R, F, M): HHH important_value, H-L-H important_develop, L-H-H important_keep,
  L-L-H important_retain, HHL general_value, H-L-L general_develop, L-H-L general_keep,
  L-L-L general_retain.
- Users without a paid order get the separate segment ``prospect`` (an RFM segment needs an R), never
  ``general_retain``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.config import RfmConfig
from features.layer_names import require_columns

RFM_COLUMNS: tuple[str, ...] = ("orders_total", "days_since_last_order", "spend_total")

#: (R high, F high, M high) -> segment code.
SEGMENT_BY_RFM: dict[tuple[bool, bool, bool], str] = {
    (True, True, True): "important_value",
    (True, False, True): "important_develop",
    (False, True, True): "important_keep",
    (False, False, True): "important_retain",
    (True, True, False): "general_value",
    (True, False, False): "general_develop",
    (False, True, False): "general_keep",
    (False, False, False): "general_retain",
}


@dataclass(frozen=True)
class RfmThresholds:
    """Thresholds of one RFM assignment (days, orders, shop currency) and whether comparisons are strict.

    ``strict`` (quantile mode): high means strictly better than the threshold; otherwise high includes
    the threshold itself.
    """

    mode: str
    recency_days: float
    frequency_orders: float
    monetary_spend: float
    strict: bool

    def recent(self, days: pd.Series) -> pd.Series:
        """True where the last order is recent enough for R high."""
        return days < self.recency_days if self.strict else days <= self.recency_days

    def frequent(self, orders: pd.Series) -> pd.Series:
        """True where the order count is high enough for F high."""
        return orders > self.frequency_orders if self.strict else orders >= self.frequency_orders

    def high_spend(self, spend: pd.Series) -> pd.Series:
        """True where net spend is high enough for M high."""
        return spend > self.monetary_spend if self.strict else spend >= self.monetary_spend

    def describe(self) -> str:
        """One line stating the thresholds in effect."""
        if self.strict:
            return (
                f"medians of current buyers: R high if days since last order < {self.recency_days:,.1f}, "
                f"F high if orders > {self.frequency_orders:,.1f}, M high if spend > {self.monetary_spend:,.2f}"
            )
        return (
            f"fixed: R high if days since last order <= {self.recency_days:,.1f}, "
            f"F high if orders >= {self.frequency_orders:,.1f}, M high if spend >= {self.monetary_spend:,.2f}"
        )


def _num(features: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(features[column], errors="coerce").astype("float64")


def rfm_thresholds(features: pd.DataFrame, cfg: RfmConfig) -> RfmThresholds:
    """The R, F, M thresholds for ``features``: the configured values, or the medians of current buyers.

    With no buyer at all in quantile mode the thresholds are NaN (every user is a ``prospect`` then).
    """
    if cfg.mode == "fixed":
        return RfmThresholds(
            "fixed", cfg.recency_days, cfg.frequency_orders, cfg.monetary_spend, strict=False
        )
    require_columns(features, RFM_COLUMNS, "the RFM segments")
    buyers = features[_num(features, "orders_total").fillna(0.0) >= 1]
    return RfmThresholds(
        "quantile",
        float(_num(buyers, "days_since_last_order").median()),
        float(_num(buyers, "orders_total").median()),
        float(_num(buyers, "spend_total").median()),
        strict=True,
    )


def rfm_flags(
    orders_total: np.ndarray, days_since_last_order: np.ndarray, spend_total: np.ndarray, thresholds: RfmThresholds
) -> dict[str, np.ndarray]:
    """THE RFM comparisons on arrays: boolean ``buyer``, ``r_high``, ``f_high``, ``m_high`` per user.

    Orders (count) and spend (shop currency) count NaN as 0; days since the last order (days) stay NaN
    (never recent). Non-buyers are low on all three.
    """
    orders = np.asarray(orders_total, dtype=np.float64)
    orders = np.where(np.isnan(orders), 0.0, orders)
    spend = np.asarray(spend_total, dtype=np.float64)
    spend = np.where(np.isnan(spend), 0.0, spend)
    days = np.asarray(days_since_last_order, dtype=np.float64)
    buyer = orders >= 1
    r_high = buyer & np.asarray(thresholds.recent(days), dtype=np.bool_)  # type: ignore[arg-type]
    f_high = buyer & np.asarray(thresholds.frequent(orders), dtype=np.bool_)  # type: ignore[arg-type]
    m_high = buyer & np.asarray(thresholds.high_spend(spend), dtype=np.bool_)  # type: ignore[arg-type]
    return {"buyer": buyer, "r_high": r_high, "f_high": f_high, "m_high": m_high}


#: Segment code by ``1 + 4 R + 2 F + M`` (R, F, M high as 0/1); index 0 is ``prospect`` (no paid order).
_SEGMENT_TABLE = np.array(
    ["prospect"] + [SEGMENT_BY_RFM[(bool(i & 4), bool(i & 2), bool(i & 1))] for i in range(8)], dtype=object
)


def rfm_segment_codes(
    buyer: np.ndarray, r_high: np.ndarray, f_high: np.ndarray, m_high: np.ndarray
) -> np.ndarray:
    """THE segment assignment on arrays: :data:`SEGMENT_BY_RFM` of (R, F, M high), ``prospect`` for
    non-buyers; an object array of str."""
    code = 4 * np.asarray(r_high, dtype=np.int64) + 2 * np.asarray(f_high, dtype=np.int64) + 1
    code += np.asarray(m_high, dtype=np.bool_)
    code *= np.asarray(buyer, dtype=np.bool_)  # non-buyers: index 0
    return _SEGMENT_TABLE[code]


def rfm_checks(features: pd.DataFrame, thresholds: RfmThresholds) -> pd.DataFrame:
    """Boolean columns ``buyer``, ``r_high``, ``f_high``, ``m_high`` per user, indexed like ``features``
    (a frame around :func:`rfm_flags`)."""
    require_columns(features, RFM_COLUMNS, "the RFM segments")
    flags = rfm_flags(
        _num(features, "orders_total").to_numpy(),
        _num(features, "days_since_last_order").to_numpy(),
        _num(features, "spend_total").to_numpy(),
        thresholds,
    )
    return pd.DataFrame(flags, index=features.index)


def rfm_from_checks(checks: pd.DataFrame) -> pd.Series:
    """Segment codes from :func:`rfm_checks` (``prospect`` for non-buyers)."""
    seg = rfm_segment_codes(checks["buyer"].to_numpy(), checks["r_high"].to_numpy(), checks["f_high"].to_numpy(),
                            checks["m_high"].to_numpy())
    return pd.Series(seg, index=checks.index, name="rfm_segment", dtype="object")


def assign_rfm_segment(
    features: pd.DataFrame, cfg: RfmConfig, thresholds: RfmThresholds | None = None
) -> pd.Series:
    """RFM segment code of every user, indexed like ``features``.

    ``thresholds`` defaults to :func:`rfm_thresholds` of ``features`` itself.
    """
    th = thresholds if thresholds is not None else rfm_thresholds(features, cfg)
    return rfm_from_checks(rfm_checks(features, th))


def explain_rfm(row: pd.Series, thresholds: RfmThresholds) -> list[str]:
    """Human-readable trace of the RFM rules for one user (a row of the feature table)."""
    checks = rfm_checks(row.to_frame().T, thresholds)
    c = checks.iloc[0]
    seg = rfm_from_checks(checks).iloc[0]
    if not c["buyer"]:
        return ["rfm: no paid order -> prospect"]

    def hl(flag: bool) -> str:
        return "high" if flag else "low"

    return [
        f"rfm: thresholds ({thresholds.describe()})",
        f"rfm: R {hl(c['r_high'])} (days since last order {row['days_since_last_order']:,.1f}), "
        f"F {hl(c['f_high'])} (orders {row['orders_total']:,.0f}), "
        f"M {hl(c['m_high'])} (net spend {float(row['spend_total']):,.2f}) -> {seg}",
    ]
