"""Every point-in-time feature, declared once as data.

A :class:`FeatureDef` holds a feature's name, family, description, unit, window and one SQL expression
(DuckDB dialect, restricted to functions SQLGlot transpiles to Spark SQL). :mod:`features.pipeline`
composes the definitions into one query per cutoff; the same definitions feed DuckDB (batch, tests,
serving) and Spark (via ``sqlglot``), the catalog (:mod:`features.catalog`) and ``docs/features.md``.

Each definition belongs to a *stage*, which says what its expression is evaluated over:

``orders``
    An aggregate over the user's order rows at or before ``as_of`` (after de-duplication). Columns
    available: ``amount``, ``paid`` (bool), ``refunded`` (bool), ``signed_amount`` (``+amount`` if paid,
    ``-amount`` if refunded), ``age_days`` (days from the row to ``as_of``, >= 0), ``month`` (1..12, UTC),
    ``category`` (NULL when absent) and ``w_hl{h}`` (decay weight ``0.5 ** (age_days / h)``).
``paid_orders``
    An aggregate over the user's paid order rows (after de-duplication) in order of their UTC calendar
    day: ``day_num`` (days since 1970-01-01), ``amount``, ``category``, ``first_day`` (the ``day_num`` of
    the user's first paid order) and ``gap``: on the first row of each order day the days since the
    previous order day, 0 on further rows of the same day, NULL on the user's very first row. So
    ``gap > 0`` picks one row per repeat order day and ``gap IS NULL OR gap > 0`` one row per order day.
``events``
    An aggregate over the user's event rows at or before ``as_of``: ``event_type``, ``value`` (NULL when
    absent), ``age_days`` and ``w_hl{h}``, as for orders. The per-type features are conditional
    aggregates of one ``GROUP BY user_id`` pass; a type's two window counts share one packed integer
    SUM that derived definitions unpack (:func:`packed_window_counts`). (Counting per (user, type)
    first and pivoting those rows cost more CPU at 1M users and 49M events: 13.4 CPU-s for both
    levels, 11.2 of them for the grouping of 7.3M (user, type) pairs, against 13.1 in one pass.)
``users``
    A column of the user's row in ``users`` (only if ``joined_at`` is at or before ``as_of`` or unknown):
    ``joined_age_days`` and ``source_channel``.
``derived``
    A row-level expression over the (defaulted) outputs of the stages above, including hidden ones.

Distinct active days (``active_days_30d``) are counted without a distinct aggregate: the ``orders`` and
``events`` stages each keep a hidden BIGINT whose bit ``d`` is set when the user has a row ``d`` whole days
before ``as_of`` (``BIT_OR`` of ``1 << d``), and the derived feature is the ``BIT_COUNT`` of their bitwise
OR. Each source is thus read by one aggregate pass.

``default`` is the SQL literal a stage output takes for a user with no rows in that stage (e.g. ``0``
orders for a prospect); None means NULL (NaN in the output). Hidden definitions are intermediate
aggregates used by derived features and are not part of the feature table.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from features.config import StrataConfig

Stage = Literal["orders", "paid_orders", "events", "users", "derived"]
Family = Literal["rfm", "recency_decay", "rhythm", "engagement", "context"]

STAGES: tuple[Stage, ...] = ("orders", "paid_orders", "events", "users", "derived")
FAMILIES: tuple[Family, ...] = ("rfm", "recency_decay", "rhythm", "engagement", "context")

#: Windows (days) of the per-event-type counts, shorter first; fixed by the feature contract. Both counts of
#: a type come from one packed aggregate (:func:`packed_window_counts`).
EVENT_TYPE_WINDOWS_DAYS: tuple[int, int] = (30, 90)
#: Bits of the longer window's count in a packed pair of window counts (:func:`packed_window_counts`).
PACKED_COUNT_BITS = 30
#: Window (days) of ``active_days_30d``; fixed by the feature contract (at most 63: the active days of a
#: user are the bits of one BIGINT, see :func:`day_bits`).
ACTIVITY_WINDOW_DAYS = 30

_LN2 = math.log(2.0)


@dataclass(frozen=True)
class FeatureDef:
    """One feature (or hidden intermediate aggregate) and the SQL that computes it.

    Attributes
    ----------
    name : column name in the feature table.
    family : ``rfm``, ``recency_decay``, ``rhythm``, ``engagement`` or ``context``.
    description : one sentence for the catalog.
    unit : ``days``, ``orders``, ``currency``, ``events``, ``ratio``, ``category`` ...
    window : the time span it looks at (``all time``, ``30d``, ``half-life 7d``, ``-``).
    sql_expression : DuckDB SQL evaluated in ``stage`` (see the module docstring).
    stage : where the expression is evaluated.
    default : SQL literal for users with no rows in ``stage``; None means NULL (NaN).
    dtype : ``float`` (float64 output) or ``string``.
    hidden : intermediate value, not part of the output table.
    """

    name: str
    family: Family
    description: str
    unit: str
    window: str
    sql_expression: str
    stage: Stage
    default: str | None = None
    dtype: Literal["float", "string"] = "float"
    hidden: bool = False


def double(value: float) -> str:
    """An engine-neutral SQL DOUBLE literal (a bare ``1.5`` is DECIMAL in DuckDB and Spark)."""
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {value!r}")
    return f"CAST({value!r} AS DOUBLE)"


def sql_string(value: str) -> str:
    """A SQL string literal with quotes escaped."""
    return "'" + value.replace("'", "''") + "'"


def column_token(value: str) -> str:
    """A lowercase identifier fragment for an event type (``coupon-claim`` -> ``coupon_claim``)."""
    token = re.sub(r"[^0-9a-z]+", "_", value.lower()).strip("_")
    return token or "unnamed"


def decay_rate(half_life_days: float) -> float:
    """The rate ``k`` (per day) such that ``exp(-k * age_days)`` halves every ``half_life_days``."""
    return _LN2 / half_life_days


def _ratio(num: str, den: str) -> str:
    """``num / den`` or NULL when ``den`` is not positive (no engine-specific division by zero)."""
    return f"CASE WHEN {den} > 0 THEN CAST({num} AS DOUBLE) / {den} END"


def _count_if(cond: str) -> str:
    # COUNT of a CASE (not SUM of 0/1): a plain BIGINT count in both engines, no 128-bit sums in DuckDB
    return f"COUNT(CASE WHEN {cond} THEN 1 END)"


def _sum_if(value: str, cond: str) -> str:
    # NULL (not 0) where cond is false: the aggregate skips those rows instead of adding 0 (about 6% less
    # CPU for the events pass); a user with no matching row gets NULL, which the join turns into the
    # definition's default (0 for counts and spends; first_order_value has a matching row for every buyer)
    return f"SUM(CASE WHEN {cond} THEN {value} END)"


def packed_window_counts(cond: str, short_days: int, long_days: int) -> str:
    """Aggregate: the rows with ``cond`` in the last ``long_days`` and in the last ``short_days``, in one SUM.

    Each such row adds 1, plus ``2 ** PACKED_COUNT_BITS`` if it is also within ``short_days``: the sum is
    ``short_count * 2**30 + long_count``, read back by :func:`unpack_window_count`. One aggregate instead
    of two (about 0.12 CPU-s less per event type at 49M events). The per-row term is an INTEGER, so
    DuckDB sums in 64-bit integers (a BIGINT term would make it sum in 128 bits, which costs more than it
    saves); Spark's SUM of INT is a BIGINT. Exact while ``long_count < 2**30``.
    """
    if not 0 < short_days < long_days:
        raise ValueError(f"windows must satisfy 0 < short < long, not {short_days} and {long_days}")
    return (f"SUM(CASE WHEN {cond} AND age_days < {long_days} THEN CASE WHEN age_days < {short_days} "
            f"THEN CAST({2 ** PACKED_COUNT_BITS + 1} AS INTEGER) ELSE CAST(1 AS INTEGER) END END)")


def unpack_window_count(packed: str, which: Literal["short", "long"], bound: str) -> str:
    """Derived: one count of a :func:`packed_window_counts` pair; NULL unless ``bound < 2**30`` (exactness).

    ``bound`` is an expression no smaller than the longer window's count (e.g. the user's ``events_total``).
    """
    field = (f"({packed} >> {PACKED_COUNT_BITS})" if which == "short"
             else f"({packed} & {2 ** PACKED_COUNT_BITS - 1})")
    return f"CASE WHEN {bound} < {2 ** PACKED_COUNT_BITS} THEN {field} END"


def day_bits(window_days: int = ACTIVITY_WINDOW_DAYS) -> str:
    """Aggregate: a BIGINT whose bit ``d`` is set if the stage has a row ``d`` whole days before as_of (d < window).

    NULL without such rows. Over ``orders`` and ``events`` alike (both have ``age_days``).
    """
    if not 0 < window_days <= 63:
        raise ValueError(f"an activity window must be 1..63 days, not {window_days}")
    return (f"BIT_OR(CASE WHEN age_days < {window_days} "
            "THEN CAST(1 AS BIGINT) << CAST(FLOOR(age_days) AS INTEGER) END)")


def _rfm(config: StrataConfig) -> list[FeatureDef]:
    defs = [
        FeatureDef("days_since_last_order", "rfm", "Days from the last paid order to as_of.", "days",
                   "all time", "MIN(CASE WHEN paid THEN age_days END)", "orders"),
        FeatureDef("days_since_first_order", "rfm", "Days from the first paid order to as_of (order tenure).",
                   "days", "all time", "MAX(CASE WHEN paid THEN age_days END)", "orders"),
        FeatureDef("orders_total", "rfm", "Number of paid orders.", "orders", "all time",
                   _count_if("paid"), "orders", "0"),
        FeatureDef("spend_total", "rfm", "Net spend: paid amounts minus refunded amounts.", "currency",
                   "all time", "SUM(signed_amount)", "orders", "0"),
    ]
    for w in config.features.windows_days:
        defs.append(FeatureDef(f"orders_{w}d", "rfm", f"Number of paid orders in the last {w} days.",
                               "orders", f"{w}d", _count_if(f"paid AND age_days < {w}"), "orders", "0"))
        defs.append(FeatureDef(f"spend_{w}d", "rfm", f"Net spend (paid minus refunded) in the last {w} days.",
                               "currency", f"{w}d", _sum_if("signed_amount", f"age_days < {w}"), "orders", "0"))
    defs += [
        FeatureDef("paid_amount_total", "rfm", "Gross paid amount (refunds not subtracted).", "currency",
                   "all time", _sum_if("amount", "paid"), "orders", "0", hidden=True),
        FeatureDef("avg_order_value", "rfm", "Average paid order amount (gross of refunds).", "currency",
                   "all time", _ratio("paid_amount_total", "orders_total"), "derived"),
        FeatureDef("max_order_value", "rfm", "Largest paid order amount.", "currency", "all time",
                   "MAX(CASE WHEN paid THEN amount END)", "orders"),
        FeatureDef("first_order_value", "rfm",
                   "Paid amount on the first order day (UTC; same-day orders count as one first purchase).",
                   "currency", "all time", _sum_if("amount", "day_num = first_day"), "paid_orders"),
    ]
    return defs


def _recency_decay(config: StrataConfig) -> list[FeatureDef]:
    defs = []
    for h in config.features.half_lives_days:
        w = f"half-life {h}d"
        defs.append(FeatureDef(f"orders_decay_hl{h}", "recency_decay",
                               f"Paid orders weighted by 0.5 ** (age in days / {h}).", "orders", w,
                               _sum_if(f"w_hl{h}", "paid"), "orders", "0"))
        defs.append(FeatureDef(f"spend_decay_hl{h}", "recency_decay",
                               f"Net spend weighted by 0.5 ** (age in days / {h}).", "currency", w,
                               f"SUM(signed_amount * w_hl{h})", "orders", "0"))
        defs.append(FeatureDef(f"events_decay_hl{h}", "recency_decay",
                               f"Events of any type weighted by 0.5 ** (age in days / {h}).", "events", w,
                               f"SUM(w_hl{h})", "events", "0"))
    return defs


#: Average paid order value (currency) from the hidden ``orders`` aggregates, for derived expressions.
_AOV = "(CAST(paid_amount_total AS DOUBLE) / orders_total)"


def _rhythm(config: StrataConfig) -> list[FeatureDef]:
    t = config.features.trend_window_days
    last, prev = f"age_days < {t}", f"age_days >= {t} AND age_days < {2 * t}"
    return [
        FeatureDef("order_days_total", "rhythm", "Number of distinct UTC days with a paid order.", "days",
                   "all time", _count_if("gap IS NULL OR gap > 0"), "paid_orders", "0"),
        FeatureDef("gap_mean_days", "rhythm",
                   "Mean gap between consecutive distinct paid-order days (NaN with fewer than 2).", "days",
                   "all time", "AVG(CASE WHEN gap > 0 THEN gap END)", "paid_orders"),
        FeatureDef("gap_std_days", "rhythm",
                   "Population standard deviation of the gaps between paid-order days (NaN with fewer than 2).",
                   "days", "all time", "STDDEV_POP(CASE WHEN gap > 0 THEN gap END)", "paid_orders"),
        FeatureDef("overdue_ratio", "rhythm",
                   "Days since the last order divided by the user's mean gap (>1: later than usual).", "ratio",
                   "all time", _ratio("days_since_last_order", "gap_mean_days"), "derived"),
        # Tenure-free forms of BG/NBD's (x, t_x, T): they mean the same for a customer of 3 months and of
        # 3 years, so models trained at earlier cutoffs (shorter tenures) still apply at later ones.
        FeatureDef("active_span_share", "rhythm",
                   "Days from the first to the last paid order divided by days from the first paid order to "
                   "as_of (0: bought only at the start, near 1: bought lately; NaN without orders).", "ratio",
                   "all time", _ratio("days_since_first_order - days_since_last_order", "days_since_first_order"),
                   "derived"),
        FeatureDef("repeat_rate_30d", "rhythm",
                   "Repeat paid-order days (distinct order days after the first) per 30 days since the first "
                   "paid order (that tenure floored at 1 day; NaN without orders).", "order days per 30 days",
                   "all time",
                   "CASE WHEN order_days_total > 0 THEN CAST(order_days_total - 1 AS DOUBLE) * 30 / "
                   "GREATEST(CAST(days_since_first_order AS DOUBLE), CAST(1 AS DOUBLE)) END", "derived"),
        FeatureDef("trend_orders_last", "rhythm", "Paid orders in the last trend window.", "orders",
                   f"{t}d", _count_if(f"paid AND {last}"), "orders", "0", hidden=True),
        FeatureDef("trend_orders_prev", "rhythm", "Paid orders in the trend window before the last.", "orders",
                   f"{t}d", _count_if(f"paid AND {prev}"), "orders", "0", hidden=True),
        FeatureDef("trend_spend_last", "rhythm", "Net spend in the last trend window.", "currency",
                   f"{t}d", _sum_if("signed_amount", last), "orders", "0", hidden=True),
        FeatureDef("trend_spend_prev", "rhythm", "Net spend in the trend window before the last.", "currency",
                   f"{t}d", _sum_if("signed_amount", prev), "orders", "0", hidden=True),
        FeatureDef("trend_orders_ratio", "rhythm",
                   f"(paid orders in the last {t} days + 1) / (paid orders in the {t} days before + 1).",
                   "ratio", f"{t}d vs previous {t}d",
                   "CAST(trend_orders_last + 1 AS DOUBLE) / (trend_orders_prev + 1)", "derived"),
        # Smoothed by one average order (as trend_orders_ratio is by one order), not by 1 currency unit,
        # so that it is scale-free: the same in cents or in dollars, for a coffee shop or a jeweller.
        FeatureDef("trend_spend_ratio", "rhythm",
                   f"(net spend in the last {t} days + a) / (net spend in the {t} days before + a), spends "
                   "floored at 0 and a = the user's average paid order value (scale-free); 1 without paid spend.",
                   "ratio", f"{t}d vs previous {t}d",
                   f"CASE WHEN orders_total > 0 AND paid_amount_total > 0 THEN "
                   f"(GREATEST(CAST(trend_spend_last AS DOUBLE), CAST(0 AS DOUBLE)) + {_AOV}) / "
                   f"(GREATEST(CAST(trend_spend_prev AS DOUBLE), CAST(0 AS DOUBLE)) + {_AOV}) "
                   "ELSE CAST(1 AS DOUBLE) END", "derived"),
    ]


def _engagement(config: StrataConfig) -> list[FeatureDef]:
    def typed(t: str) -> str:
        return f"event_type = {sql_string(t)}"

    h_max = max(config.features.half_lives_days)
    defs = [
        FeatureDef("last_order_row_age_days", "engagement", "Days since the last order row of any status.",
                   "days", "all time", "MIN(age_days)", "orders", hidden=True),
        FeatureDef("days_since_last_event", "engagement", "Days from the last event of any type to as_of.",
                   "days", "all time", "MIN(age_days)", "events"),
        FeatureDef("days_since_last_interaction", "engagement",
                   "Days from the last order (any status) or event to as_of.", "days", "all time",
                   "CASE WHEN last_order_row_age_days IS NULL THEN days_since_last_event "
                   "WHEN days_since_last_event IS NULL THEN last_order_row_age_days "
                   "ELSE LEAST(last_order_row_age_days, days_since_last_event) END", "derived"),
        FeatureDef("order_day_bits_30d", "engagement",
                   f"Bit d set: an order row (any status) d whole days before as_of (d < {ACTIVITY_WINDOW_DAYS}).",
                   "bits", f"{ACTIVITY_WINDOW_DAYS}d", day_bits(), "orders", "0", hidden=True),
        FeatureDef("event_day_bits_30d", "engagement",
                   f"Bit d set: an event d whole days before as_of (d < {ACTIVITY_WINDOW_DAYS}).",
                   "bits", f"{ACTIVITY_WINDOW_DAYS}d", day_bits(), "events", "0", hidden=True),
        FeatureDef("active_days_30d", "engagement",
                   f"Distinct days (24h periods before as_of) with any order or event in the last "
                   f"{ACTIVITY_WINDOW_DAYS} days.", "days", f"{ACTIVITY_WINDOW_DAYS}d",
                   "BIT_COUNT(order_day_bits_30d | event_day_bits_30d)", "derived"),
        FeatureDef("events_total", "engagement", "Number of events of any type.", "events", "all time",
                   "COUNT(*)", "events", "0"),
    ]
    short, long = EVENT_TYPE_WINDOWS_DAYS
    for t in config.data.event_types:
        tok = column_token(t)
        packed = f"events_{tok}_{short}d_{long}d_packed"
        defs.append(FeatureDef(packed, "engagement",
                               f"'{t}' events in the last {long} days + 2**{PACKED_COUNT_BITS} x those in the last {short}.",
                               "events", f"{long}d", packed_window_counts(typed(t), short, long), "events", "0",
                               hidden=True))
        windows: tuple[tuple[int, Literal["short", "long"]], ...] = ((short, "short"), (long, "long"))
        for w, which in windows:
            defs.append(FeatureDef(f"events_{tok}_{w}d", "engagement", f"Number of '{t}' events in the last {w} days.",
                                   "events", f"{w}d", unpack_window_count(packed, which, "events_total"), "derived"))
        defs.append(FeatureDef(f"events_{tok}_decay_hl{h_max}", "engagement",
                               f"'{t}' events weighted by 0.5 ** (age in days / {h_max}).", "events",
                               f"half-life {h_max}d", _sum_if(f"w_hl{h_max}", typed(t)), "events", "0"))
    defs += [
        FeatureDef("shares_total", "engagement", "Number of 'share' events (influence).", "events", "all time",
                   _count_if(typed("share")), "events", "0"),
        FeatureDef("referrals_total", "engagement", "Number of 'referral' events (brought a new customer).",
                   "events", "all time", _count_if(typed("referral")), "events", "0"),
        FeatureDef("coupon_claims_total", "engagement", "Number of 'coupon_claim' events.", "events", "all time",
                   _count_if(typed("coupon_claim")), "events", "0"),
        FeatureDef("coupon_redeems_total", "engagement", "Number of 'coupon_redeem' events.", "events",
                   "all time", _count_if(typed("coupon_redeem")), "events", "0"),
        FeatureDef("coupon_redeem_ratio", "engagement",
                   "Coupon redeems divided by coupon claims (NaN without claims).", "ratio", "all time",
                   _ratio("coupon_redeems_total", "coupon_claims_total"), "derived"),
        FeatureDef("review_sentiment_mean", "engagement",
                   "Mean 'value' of 'review' events (NaN without scored reviews).", "score", "all time",
                   f"AVG(CASE WHEN {typed('review')} THEN value END)", "events"),
    ]
    return defs


def _context(config: StrataConfig) -> list[FeatureDef]:
    return [
        FeatureDef("days_since_joined", "context", "Days from joining the private domain (users.joined_at) to as_of.",
                   "days", "all time", "joined_age_days", "users"),
        FeatureDef("source_channel", "context", "Acquisition channel from users.source_channel ('unknown' if absent).",
                   "category", "-", "COALESCE(source_channel, 'unknown')", "users", "'unknown'", dtype="string"),
        FeatureDef("category_count", "context", "Distinct product categories among paid orders (0 if none known).",
                   "categories", "all time", "COUNT(DISTINCT category)", "paid_orders", "0"),
        FeatureDef("refund_rows_total", "context", "Number of refunded order rows.", "orders", "all time",
                   _count_if("refunded"), "orders", "0", hidden=True),
        FeatureDef("refund_rate", "context", "Refunded order rows divided by paid orders (NaN without paid orders).",
                   "ratio", "all time", _ratio("refund_rows_total", "orders_total"), "derived"),
        FeatureDef("q4_paid_amount", "context", "Gross paid amount in October to December.", "currency",
                   "all time", _sum_if("amount", "paid AND month >= 10"), "orders", "0", hidden=True),
        FeatureDef("q4_spend_share", "context",
                   "Share of gross paid amount spent in October to December (NaN without spend).", "ratio",
                   "all time", _ratio("q4_paid_amount", "paid_amount_total"), "derived"),
        FeatureDef("as_of_month", "context", "Calendar month of as_of (UTC, 1..12).", "month", "-",
                   "{as_of_month}", "derived"),
        FeatureDef("is_prospect", "context", "1 if the user has no paid order at or before as_of, else 0.",
                   "flag", "all time", "CASE WHEN orders_total = 0 THEN 1 ELSE 0 END", "derived"),
    ]


def feature_definitions(config: StrataConfig) -> list[FeatureDef]:
    """All feature definitions for ``config`` (windows, half-lives, event types), hidden ones included.

    The order is the column order of the feature table. Names are unique; a clash (e.g. two event types
    that sanitise to the same token) raises ``ValueError``.
    """
    defs = [*_rfm(config), *_recency_decay(config), *_rhythm(config), *_engagement(config), *_context(config)]
    seen: set[str] = set()
    for d in defs:
        if d.name in seen:
            raise ValueError(f"feature name {d.name!r} is defined twice (check [data] event_types)")
        seen.add(d.name)
    return defs


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def select_families(defs: Sequence[FeatureDef], families: Iterable[str] | None) -> list[FeatureDef]:
    """The definitions of ``families`` (all of ``defs`` when None), with what their derived ones need.

    A derived definition of a selected family may read outputs of other families (``overdue_ratio``
    reads ``days_since_last_order``); those are kept as hidden intermediates, so each selected feature
    has the same value as in the full set. Order follows ``defs``.

    Raises
    ------
    ValueError
        If a family is not one of :data:`FAMILIES`.
    """
    if families is None:
        return list(defs)
    wanted = set(families)
    unknown = sorted(wanted - set(FAMILIES))
    if unknown:
        raise ValueError(f"unknown feature families {unknown}; expected some of {list(FAMILIES)}")
    by_name = {d.name: d for d in defs}
    visible = {d.name for d in defs if d.family in wanted and not d.hidden}
    needed = set(visible)
    todo = [by_name[n] for n in visible]
    while todo:
        d = todo.pop()
        if d.stage != "derived":
            continue  # aggregates read source columns, not other definitions
        for ref in set(_IDENTIFIER.findall(d.sql_expression)) & by_name.keys() - needed:
            needed.add(ref)
            todo.append(by_name[ref])
    return [d if d.name in visible or d.hidden else replace(d, hidden=True) for d in defs if d.name in needed]


def output_features(config: StrataConfig, families: Iterable[str] | None = None) -> list[FeatureDef]:
    """The visible feature definitions (the columns after ``user_id`` and ``as_of``), in table order.

    With ``families``, only those families' features (see :func:`select_families`).
    """
    return [d for d in select_families(feature_definitions(config), families) if not d.hidden]


def feature_names(config: StrataConfig) -> list[str]:
    """Names of the feature columns (without ``user_id`` and ``as_of``), in table order."""
    return [d.name for d in output_features(config)]
