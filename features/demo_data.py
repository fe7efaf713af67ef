"""Synthetic private-domain data that behaves like real customers, so models have something true to find.

The story each user follows (all vectorised with numpy; no Python loop per user or per order):

* A user **joins** the private domain through a source channel (ad, content, fission campaign,
  referral, store QR code, live stream, organic search) at some time in the history window; the pool
  grows, so later joins are more frequent.
* Each user has a latent **engagement rate** (events per day, lognormal). Engagement starts at the join
  (adding the brand's WeCom, joining a customer group, then reads, clicks, check-ins, consultations...).
* Each user has a hidden **death time** (end of their relationship with the brand; Weibull lifetime,
  longer for engaged users and some channels). Over the 1-4 months before it, engagement and
  purchasing fade linearly to a small residual; after it, only rare stray events happen. So the churn
  hazard seen from the data rises as engagement fades, and fading engagement predicts churn. The
  signal is imperfect on purpose: a quarter of the users leave abruptly (no fade), and a fifth mute
  the brand at some point (engagement drops to a third) while still buying.
* Only a share of users ever **buy** (more likely with high engagement); the others are prospects. A
  buyer's first purchase comes some days after joining, usually preceded by a consultation, page view
  or cart add, so engagement precedes first purchases.
* Buyers purchase in a **personal rhythm**: gamma-distributed gaps with a per-user mean and shape,
  thinned by **seasonality** (a Q4 peak around Singles' Day and the year end, a mid-year bump).
* Spend is **long-tailed**: a lognormal per-user mean order value (many small, few large buyers) times
  a per-order lognormal factor, by category price level; Q4 baskets are a little larger.
* About 3% of orders are **refunded** (more often when the user is fading). Orders carry a category
  (mostly the user's favourite) and a sales channel.

The output is a :class:`features.dataset.Dataset` typed as :mod:`features.dataset` describes;
:func:`write_dataset` writes it as CSV (ISO-8601 UTC timestamps) or Parquet, optionally mixed with
realistic bad rows (:func:`corrupt_tables`) to exercise validation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from features.contract import DEFAULT_EVENT_TYPES
from features.dataset import Dataset
from features.io import table_as_strings, write_table

NS_PER_DAY = 86_400 * 10**9

SOURCE_CHANNELS: tuple[str, ...] = ("ad", "content", "fission", "referral", "store_qr", "live_stream", "organic_search")
_SOURCE_P = np.array([0.22, 0.18, 0.14, 0.10, 0.16, 0.12, 0.08])
_SOURCE_ENGAGE = np.array([0.75, 1.30, 1.00, 1.20, 0.90, 0.85, 1.05])  # engagement-rate multiplier
_SOURCE_BUY = np.array([-0.45, 0.05, -0.25, 0.55, 0.60, 0.10, 0.00])  # shift of buy log-odds
_SOURCE_LIFE = np.array([0.70, 1.15, 0.85, 1.30, 1.20, 0.80, 1.00])  # lifetime multiplier

CATEGORIES: tuple[str, ...] = (
    "skincare", "makeup", "haircare", "body_care", "fragrance", "supplements", "baby_care", "home",
)
_CATEGORY_P = np.array([0.24, 0.18, 0.12, 0.10, 0.08, 0.12, 0.08, 0.08])
_CATEGORY_PRICE = np.array([1.25, 1.00, 0.60, 0.50, 1.70, 0.90, 0.85, 0.70])

ORDER_CHANNELS: tuple[str, ...] = ("mini_program", "wecom_shop", "offline_store", "live_stream")
_ORDER_CHANNEL_P = np.array([0.45, 0.25, 0.18, 0.12])

REGIONS: tuple[str, ...] = ("east", "south", "north", "central", "southwest", "northwest", "northeast")
_REGION_P = np.array([0.30, 0.22, 0.16, 0.12, 0.10, 0.05, 0.05])
GENDERS: tuple[str, ...] = ("female", "male", "unknown")
_GENDER_P = np.array([0.62, 0.30, 0.08])
AGE_BANDS: tuple[str, ...] = ("18-24", "25-34", "35-44", "45-54", "55+")
_AGE_P = np.array([0.18, 0.36, 0.26, 0.13, 0.07])
_AGE_SPEND = np.array([0.70, 1.00, 1.20, 1.15, 0.95])

EVENT_TYPES: tuple[str, ...] = DEFAULT_EVENT_TYPES
_ET = {name: i for i, name in enumerate(EVENT_TYPES)}
#: Mix of "organic" engagement events (the rest are tied to joins and orders).
_ORGANIC_WEIGHTS = {
    "page_view": 0.26, "article_read": 0.18, "link_click": 0.12, "group_message": 0.10, "checkin": 0.08,
    "cart_add": 0.06, "consult": 0.04, "coupon_claim": 0.05, "share": 0.04, "referral": 0.01,
}
_EVENT_CHANNEL = {
    "add_wecom": "wecom", "consult": "wecom", "join_group": "group", "group_message": "group",
    "article_read": "official_account", "link_click": "official_account", "share": "official_account",
}
EVENT_CHANNELS: tuple[str, ...] = ("wecom", "group", "official_account", "mini_program")

_RESIDUAL = 0.08
"""Engagement and purchase intensity left at the death time (share of the user's normal rate)."""
_POST_DEATH = 0.03
"""Rate of stray events after the death time (share of the user's normal rate)."""


def _season(days_since_epoch: np.ndarray) -> np.ndarray:
    """Relative purchase intensity by time of year (max ~1): Q4 peak, a mid-year (6.18) bump."""
    doy = np.mod(days_since_epoch, 365.2425)  # day of year, within a day of the calendar
    peak_q4 = 0.42 * np.exp(-(((doy - 327.0) / 26.0) ** 2)) + 0.20 * np.exp(-(((doy - 356.0) / 9.0) ** 2))
    mid_year = 0.30 * np.exp(-(((doy - 169.0) / 8.0) ** 2))
    return (0.60 + peak_q4 + mid_year) / 1.07


def _grouped_cumsum(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Cumulative sum of ``values`` restarting at each group of ``counts`` consecutive items."""
    cs = np.cumsum(values)
    ends = np.cumsum(counts)
    base = np.zeros(len(counts))
    nonempty_prev = ends[:-1] > 0
    base[1:][nonempty_prev] = cs[ends[:-1][nonempty_prev] - 1]
    return cs - np.repeat(base, counts)


def _ids(prefix: str, numbers: np.ndarray, min_width: int) -> np.ndarray:
    """Zero-padded id strings like ``u0000123`` (object array)."""
    if len(numbers) == 0:
        return np.empty(0, dtype=object)
    width = max(min_width, len(str(int(numbers.max()))))
    return np.char.add(prefix, np.char.zfill(numbers.astype(f"U{width}"), width)).astype(object)


def _user_ids(n: int) -> np.ndarray:
    return _ids("u", np.arange(n), 7)


def _frame(columns: dict[str, Any]) -> pd.DataFrame:
    """A DataFrame built column by column: no consolidation copy of tens of millions of object cells."""
    names = list(columns)
    df = pd.DataFrame({names[0]: columns[names[0]]}, copy=False)
    for name in names[1:]:
        df[name] = columns[name]
    return df


def _fade_factor(t: np.ndarray, fade_start: np.ndarray, death: np.ndarray) -> np.ndarray:
    """Engagement/purchase intensity multiplier: 1 before the fade, linear to the residual at death."""
    span = np.maximum(death - fade_start, 1e-9)
    frac = np.clip((t - fade_start) / span, 0.0, 1.0)
    return 1.0 - (1.0 - _RESIDUAL) * frac


@dataclass
class _Users:
    join: np.ndarray
    death: np.ndarray
    fade_start: np.ndarray
    mute: np.ndarray
    source: np.ndarray
    rate: np.ndarray
    z: np.ndarray
    buyer: np.ndarray
    first_delay: np.ndarray
    gap_mean: np.ndarray
    gap_shape: np.ndarray
    value_mean: np.ndarray
    fav_category: np.ndarray
    fav_channel: np.ndarray
    in_group: np.ndarray
    region: np.ndarray
    gender: np.ndarray
    age: np.ndarray


def _draw_users(rng: np.random.Generator, n: int, span: float) -> _Users:
    join = span * rng.random(n) ** 0.75  # growing pool: later joins more frequent
    source = rng.choice(len(SOURCE_CHANNELS), size=n, p=_SOURCE_P)
    z = rng.standard_normal(n)  # latent engagement propensity
    rate = 0.075 * np.exp(0.85 * z) * _SOURCE_ENGAGE[source]  # events per day while active
    logit = 0.35 + 1.0 * z + _SOURCE_BUY[source] + 0.35 * rng.standard_normal(n)
    buyer = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    # Lifetime (days from join to the hidden death), longer for engaged users; Weibull shape 1.3.
    life_scale = 480.0 * np.exp(0.35 * z) * _SOURCE_LIFE[source]
    life = life_scale * rng.weibull(1.3, n)
    death = join + life
    # Most users fade over 1-4 months before leaving; a quarter leave abruptly (no warning to find).
    fade = np.where(rng.random(n) < 0.25, rng.uniform(0.5, 7.0, n), rng.uniform(30.0, 120.0, n))
    fade_start = np.maximum(join, death - fade)
    # Some users mute the brand (engagement drops to a third) without leaving: fading is not certain death.
    mute = np.where(rng.random(n) < 0.2, join + rng.exponential(300.0, n), np.inf)
    # Quick deciders buy within weeks of joining; slow ones take months.
    delay_scale = np.where(rng.random(n) < 0.6, 20.0, 160.0)
    first_delay = rng.exponential(1.0, n) * delay_scale * np.exp(-0.3 * z) + rng.uniform(0.05, 2.0, n)
    gap_mean = np.exp(rng.normal(np.log(42.0), 0.55, n) - 0.2 * z)  # days between purchases
    gap_shape = rng.uniform(1.3, 4.5, n)
    age = rng.choice(len(AGE_BANDS), size=n, p=_AGE_P)
    fav_category = rng.choice(len(CATEGORIES), size=n, p=_CATEGORY_P)
    value_mean = np.exp(rng.normal(np.log(95.0), 0.85, n)) * _AGE_SPEND[age] * _CATEGORY_PRICE[fav_category]
    fav_channel = rng.choice(len(ORDER_CHANNELS), size=n, p=_ORDER_CHANNEL_P)
    fav_channel = np.where(source == SOURCE_CHANNELS.index("store_qr"), ORDER_CHANNELS.index("offline_store"), fav_channel)
    fav_channel = np.where(source == SOURCE_CHANNELS.index("live_stream"), ORDER_CHANNELS.index("live_stream"), fav_channel)
    in_group = rng.random(n) < 0.3 + 0.3 * (z > 0)
    region = rng.choice(len(REGIONS), size=n, p=_REGION_P)
    gender = rng.choice(len(GENDERS), size=n, p=_GENDER_P)
    return _Users(join, death, fade_start, mute, source, rate, z, buyer, first_delay, gap_mean, gap_shape,
                  value_mean, fav_category, fav_channel, in_group, region, gender, age)


def _draw_order_times(
    rng: np.random.Generator, u: _Users, span: float, epoch_day0: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """Order user indices and times (days since start), and the number of buyers.

    A gamma renewal process from each buyer's first purchase to their death; the first ``n_buyers``
    entries are the buyers' first orders.

    Candidate orders are thinned by seasonality and by the fade before death, so the gap mean is
    shrunk by the average acceptance to keep each user's realised rhythm near ``gap_mean``.
    """
    limit = np.minimum(u.death, span)
    t1 = u.join + u.first_delay
    b = np.flatnonzero(u.buyer & (t1 < limit))
    first_t = t1[b]
    mean_accept = 0.62
    scale = u.gap_mean[b] * mean_accept / u.gap_shape[b]
    shape = u.gap_shape[b]
    lim_b = limit[b]
    users_parts, times_parts = [], []
    t_cur = first_t.copy()
    active = np.arange(len(b))
    while active.size:
        expected = (lim_b[active] - t_cur[active]) / (u.gap_mean[b][active] * mean_accept)
        k = np.minimum(np.ceil(1.25 * expected + 2.5 * np.sqrt(expected + 1.0) + 1.0), 400).astype(np.int64)
        reps = np.repeat(active, k)
        gaps = rng.gamma(shape[reps], scale[reps])
        times = t_cur[reps] + _grouped_cumsum(gaps, k)
        keep = times < lim_b[reps]
        users_parts.append(reps[keep])
        times_parts.append(times[keep])
        last = np.cumsum(k) - 1
        still = keep[last]  # the user's last draw did not reach the limit: draw more
        t_cur[active[still]] = times[last[still]]
        active = active[still]
    cand_user = np.concatenate(users_parts) if users_parts else np.empty(0, np.int64)
    cand_t = np.concatenate(times_parts) if times_parts else np.empty(0)
    accept = _season(cand_t + epoch_day0) * _fade_factor(cand_t, u.fade_start[b][cand_user], u.death[b][cand_user])
    kept = rng.random(len(cand_t)) < accept
    order_user = np.concatenate([b, b[cand_user[kept]]])
    order_t = np.concatenate([first_t, cand_t[kept]])
    return order_user, order_t, len(b)


def _poisson_times(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, rate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Homogeneous Poisson event times on ``[lo, hi)`` per user; returns (user index, time)."""
    dur = np.maximum(hi - lo, 0.0)
    counts = rng.poisson(rate * dur)
    users = np.repeat(np.arange(len(lo), dtype=np.int32), counts)
    times = lo[users] + rng.random(len(users)) * dur[users]
    return users, times


def generate_dataset(
    n_users: int,
    end: pd.Timestamp,
    seed: int = 42,
    years: float = 2.5,
    *,
    progress: Callable[[str], None] | None = None,
    order_rate: float = 1.0,
    event_rate: float = 1.0,
) -> Dataset:
    """Generate a synthetic private-domain data set of ``n_users`` users with history up to ``end``.

    Parameters
    ----------
    n_users : number of users in the users table (prospects included).
    end : last moment of the history (tz-aware, or naive meaning UTC); no timestamp is after it.
    seed : random seed; the same seed, size, end and years give the same data.
    years : length of the history window in years (at least 2 is advised for horizon-90 training).
    progress : optional callback receiving a short description of each step.
    order_rate : multiplier of every buyer's purchase frequency (gaps between purchases are divided by
        it; the share of buyers and first purchases are unchanged). 1 (the default) gives the demo data;
        benchmarks use it to reach a target volume (about 5 gives about 20 orders per user).
    event_rate : multiplier of every user's organic engagement rate (events per day); events tied to
        joins and orders follow those. 1 (the default) gives the demo data.

    Returns
    -------
    Dataset with ``orders`` (about 4 per user on average with ``order_rate=1``, about half the users
    never buy; amounts in shop currency), ``events`` (about 30 per user with both rates 1) and
    ``users``, typed as :mod:`features.dataset` describes and sorted by time.
    """
    if n_users < 1:
        raise ValueError(f"n_users must be >= 1, got {n_users}")
    for name, rate in (("order_rate", order_rate), ("event_rate", event_rate)):
        if not (np.isfinite(rate) and rate > 0):
            raise ValueError(f"{name} must be a positive number, got {rate!r}")
    step = progress or (lambda _msg: None)
    end = pd.Timestamp(end)
    end = end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")
    span = float(years) * 365.25
    start_ns = end.value - int(round(span * NS_PER_DAY))
    epoch_day0 = start_ns / NS_PER_DAY  # days since 1970-01-01 at t = 0
    rng = np.random.default_rng(seed)

    step("users")
    u = _draw_users(rng, n_users, span)
    # Rates scale after the draws, so that the default (1) gives exactly the demo data of any seed.
    if order_rate != 1.0:
        u.gap_mean = u.gap_mean / order_rate
    if event_rate != 1.0:
        u.rate = u.rate * event_rate
    uid = _user_ids(n_users)

    step("orders")
    o_user, o_t, n_first = _draw_order_times(rng, u, span, epoch_day0)
    n_orders = len(o_t)
    fade_at = _fade_factor(o_t, u.fade_start[o_user], u.death[o_user])
    season = _season(o_t + epoch_day0)
    doy = np.mod(o_t + epoch_day0, 365.2425)
    q4 = doy >= 273.0
    other_cat = rng.choice(len(CATEGORIES), size=n_orders, p=_CATEGORY_P)
    category = np.where(rng.random(n_orders) < 0.7, u.fav_category[o_user], other_cat)
    basket = np.exp(rng.normal(-0.5 * 0.45**2, 0.45, n_orders))
    amount = (u.value_mean[o_user] * basket * (_CATEGORY_PRICE[category] / _CATEGORY_PRICE[u.fav_category[o_user]]) ** 0.5
              * np.where(q4, 1.12, 1.0) * (0.85 + 0.15 * fade_at))
    amount = np.round(np.maximum(amount, 1.0), 2)
    quantity = 1 + rng.poisson(0.25 + 0.25 * np.log1p(amount / 100.0))
    refunded = rng.random(n_orders) < 0.026 + 0.05 * (1.0 - fade_at)
    other_ch = rng.choice(len(ORDER_CHANNELS), size=n_orders, p=_ORDER_CHANNEL_P)
    o_channel = np.where(rng.random(n_orders) < 0.65, u.fav_channel[o_user], other_ch)
    del season

    step("events")
    limit = np.minimum(u.death, span)
    parts_user: list[np.ndarray] = []
    parts_t: list[np.ndarray] = []
    parts_type: list[np.ndarray] = []
    parts_value: list[np.ndarray] = []

    def add(users: np.ndarray, times: np.ndarray, etype: np.ndarray | int, value: np.ndarray | None = None) -> None:
        ok = (times <= span) & (times >= u.join[users])
        parts_user.append(users[ok])
        parts_t.append(times[ok])
        et = np.broadcast_to(np.asarray(etype, dtype=np.int8), times.shape)
        parts_type.append(et[ok])
        parts_value.append(np.full(int(ok.sum()), np.nan) if value is None else value[ok])

    all_users = np.arange(n_users)
    wecom = rng.random(n_users) < 0.9
    add(all_users[wecom], u.join[wecom] + rng.exponential(0.02, int(wecom.sum())), _ET["add_wecom"])
    grp = np.flatnonzero(u.in_group)
    add(grp, u.join[grp] + rng.exponential(5.0, len(grp)), _ET["join_group"])

    e_user, e_t = _poisson_times(rng, u.join, limit, u.rate)
    engage = _fade_factor(e_t, u.fade_start[e_user], u.death[e_user]) * np.where(e_t > u.mute[e_user], 0.3, 1.0)
    keep = rng.random(len(e_t)) < engage
    e_user, e_t = e_user[keep], e_t[keep]
    names = list(_ORGANIC_WEIGHTS)
    w = np.array([_ORGANIC_WEIGHTS[k] for k in names])
    codes = np.array([_ET[k] for k in names], dtype=np.int8)
    e_type = codes[rng.choice(len(names), size=len(e_t), p=w / w.sum())]
    e_type[(e_type == _ET["group_message"]) & ~u.in_group[e_user]] = _ET["article_read"]
    add(e_user, e_t, e_type)

    dead = u.death < span
    p_user, p_t = _poisson_times(rng, np.where(dead, u.death, span), np.full(n_users, span), u.rate * _POST_DEATH)
    add(p_user, p_t, np.where(rng.random(len(p_t)) < 0.6, _ET["article_read"], _ET["page_view"]).astype(np.int8))

    # Engagement tied to purchases: research before the first order, carts, coupons, reviews, shares.
    first_idx = np.argsort(o_t[:n_first])  # _draw_order_times puts each buyer's first order first
    pre = first_idx[rng.random(len(first_idx)) < 0.8]
    pre_type = np.array([_ET["consult"], _ET["page_view"], _ET["cart_add"]], dtype=np.int8)[rng.integers(0, 3, len(pre))]
    add(o_user[pre], o_t[pre] - rng.uniform(0.02, 3.0, len(pre)), pre_type)
    cart = rng.random(n_orders) < 0.35
    add(o_user[cart], o_t[cart] - rng.exponential(0.6, int(cart.sum())), _ET["cart_add"])
    coupon = rng.random(n_orders) < 0.12
    add(o_user[coupon], o_t[coupon] - rng.uniform(0.5, 10.0, int(coupon.sum())), _ET["coupon_claim"])
    add(o_user[coupon], o_t[coupon] + 1e-4, _ET["coupon_redeem"])
    rev = np.flatnonzero(rng.random(n_orders) < 0.15)
    sentiment = np.round(np.clip(rng.normal(0.6 - 1.1 * (1.0 - fade_at[rev]) - 0.6 * refunded[rev], 0.35), -1.0, 1.0), 2)
    add(o_user[rev], o_t[rev] + rng.uniform(2.0, 12.0, len(rev)), _ET["review"], sentiment)
    shr = rng.random(n_orders) < 0.05
    add(o_user[shr], o_t[shr] + rng.uniform(0.01, 5.0, int(shr.sum())), _ET["share"])

    ev_user = np.concatenate(parts_user)
    ev_t = np.concatenate(parts_t)
    ev_type = np.concatenate(parts_type)
    ev_value = np.concatenate(parts_value)
    for part in (parts_user, parts_t, parts_type, parts_value):
        part.clear()  # free the pieces before the tables are assembled

    step("assembling tables")

    def to_ts(t: np.ndarray) -> pd.DatetimeIndex:
        secs = t * 86_400.0
        np.round(secs, out=secs)  # whole seconds
        ns = secs.astype(np.int64)
        del secs
        ns *= 10**9
        ns += start_ns
        np.minimum(ns, end.value, out=ns)
        return pd.DatetimeIndex(ns.view("datetime64[ns]")).tz_localize("UTC")

    o_order = np.argsort(o_t, kind="stable")
    order_id = _ids("o", np.arange(1, n_orders + 1), 9)
    orders = _frame(
        {
            "user_id": uid[o_user[o_order]],
            "order_id": order_id,
            "ordered_at": to_ts(o_t[o_order]),
            "amount": amount[o_order],
            "category": np.array(CATEGORIES, dtype=object)[category[o_order]],
            "channel": np.array(ORDER_CHANNELS, dtype=object)[o_channel[o_order]],
            "status": np.where(refunded[o_order], "refunded", "paid").astype(object),
            "quantity": pd.array(quantity[o_order], dtype="Int64"),
        }
    )
    e_order = np.argsort(ev_t, kind="stable")
    type_names = np.array(EVENT_TYPES, dtype=object)
    type_channel = np.array([_EVENT_CHANNEL.get(t, "mini_program") for t in EVENT_TYPES], dtype=object)
    ev_type = ev_type[e_order]
    events = _frame(
        {
            "user_id": uid[ev_user[e_order]],
            "occurred_at": to_ts(ev_t[e_order]),
            "event_type": type_names[ev_type],
            "value": ev_value[e_order],
            "channel": type_channel[ev_type],
        }
    )
    users = _frame(
        {
            "user_id": uid,
            "joined_at": to_ts(u.join),
            "source_channel": np.array(SOURCE_CHANNELS, dtype=object)[u.source],
            "region": np.array(REGIONS, dtype=object)[u.region],
            "gender": np.array(GENDERS, dtype=object)[u.gender],
            "age_band": np.array(AGE_BANDS, dtype=object)[u.age],
        }
    )
    return Dataset(orders=orders, events=events, users=users)


# --------------------------------------------------------------------------------------------------
# Writing, with optional bad rows
# --------------------------------------------------------------------------------------------------

TableFormat = Literal["csv", "parquet"]


_TS_COLS = {"orders": ("ordered_at",), "events": ("occurred_at",), "users": ("joined_at",)}

#: Kinds of bad rows per table, mixed in by :func:`corrupt_tables` (all but ``unknown_user`` are rejected
#: by validation; events of users unknown to the users table are kept with a warning).
BAD_KINDS: dict[str, tuple[str, ...]] = {
    "orders": ("missing_user_id", "unparseable_timestamp", "future_timestamp", "too_old_timestamp",
               "negative_amount", "non_numeric_amount", "absurd_amount", "duplicate_order_id",
               "bad_quantity", "unknown_status"),
    "events": ("missing_user_id", "unparseable_timestamp", "future_timestamp", "unknown_event_type",
               "non_numeric_value", "unknown_user"),
    "users": ("missing_user_id", "unparseable_timestamp", "duplicate_user_id"),
}


def corrupt_tables(
    tables: dict[str, pd.DataFrame], fraction: float, seed: int = 0
) -> tuple[dict[str, pd.DataFrame], dict[str, dict[str, int]]]:
    """Mix realistic bad rows into string tables (as :func:`features.io.table_as_strings` returns).

    About ``fraction`` x rows bad rows are inserted per table at random positions (a duplicate always
    after its original), each a copy of a good row with one field broken. Good rows are unchanged.

    Returns
    -------
    The new tables and, per table, the number of bad rows inserted per kind (see :data:`BAD_KINDS`).
    """
    rng = np.random.default_rng(seed)
    out: dict[str, pd.DataFrame] = {}
    counts: dict[str, dict[str, int]] = {}
    for name, df in tables.items():
        n = len(df)
        n_bad = int(round(fraction * n))
        if name not in BAD_KINDS or n == 0 or n_bad == 0:
            out[name] = df
            counts[name] = {}
            continue
        kinds = np.array(BAD_KINDS[name])
        kind = kinds[rng.integers(0, len(kinds), n_bad)]
        src = rng.integers(0, n, n_bad)
        bad = df.iloc[src].reset_index(drop=True).copy()
        ts_col = _TS_COLS[name][0]
        for k in np.unique(kind):
            m = np.flatnonzero(kind == k)
            size = len(m)
            choose = lambda options, size=size: np.array(options, dtype=object)[rng.integers(0, len(options), size)]  # noqa: E731
            if k == "missing_user_id":
                bad.loc[m, "user_id"] = choose(["", " ", "null", "NULL", "None", "nan"])
            elif k == "unparseable_timestamp":
                bad.loc[m, ts_col] = choose(["not a date", "2024-13-45T10:00:00Z", "31/31/2024", "yesterday", "", "0"])
            elif k == "future_timestamp":
                years_ahead = rng.integers(60, 80, size)
                bad.loc[m, ts_col] = [f"{2030 + y}-0{1 + y % 9}-1{y % 10}T08:00:00Z" for y in years_ahead]
            elif k == "too_old_timestamp":
                bad.loc[m, ts_col] = choose(["1970-01-01T00:00:00Z", "1900-01-01T00:00:00Z", "1969-12-31T23:59:59Z"])
            elif k == "negative_amount":
                bad.loc[m, "amount"] = [f"-{v:.2f}" for v in rng.uniform(1, 500, size)]
            elif k == "non_numeric_amount":
                bad.loc[m, "amount"] = choose(["abc", "12,50", "N/A", "¥99", "", "twelve"])
            elif k == "absurd_amount":
                bad.loc[m, "amount"] = [f"{v:.2f}" for v in 10 ** rng.uniform(7, 10, size)]
            elif k == "duplicate_order_id":
                pass  # a full copy of an existing row: the copy is the duplicate
            elif k == "bad_quantity":
                bad.loc[m, "quantity"] = choose(["-1", "0", "two", "1.5", "99999999"])
            elif k == "unknown_status":
                bad.loc[m, "status"] = choose(["pending", "cancelled", "PAID?", "unknown"])
            elif k == "unknown_event_type":
                bad.loc[m, "event_type"] = choose(["ad_click", "PAGE VIEW", "purchase", "login", "unknown"])
            elif k == "non_numeric_value":
                bad.loc[m, "event_type"] = "review"
                bad.loc[m, "value"] = choose(["great", "5 stars", "positive", "0.8!"])
            elif k == "unknown_user":
                bad.loc[m, "user_id"] = [f"x{v:09d}" for v in rng.integers(0, 10**9, size)]
            elif k == "duplicate_user_id":
                pass
        # Position keys: good rows at i; bad rows anywhere, duplicates after their original.
        key = rng.uniform(0, n, n_bad)
        dup = (kind == "duplicate_order_id") | (kind == "duplicate_user_id")
        key[dup] = src[dup] + 0.5 + rng.random(int(dup.sum())) * (n - src[dup] - 0.5)
        order = np.argsort(np.concatenate([np.arange(n, dtype=float), key]), kind="stable")
        merged = pd.concat([df, bad], ignore_index=True).iloc[order].reset_index(drop=True)
        out[name] = merged
        ks, cs = np.unique(kind, return_counts=True)
        counts[name] = {str(k): int(c) for k, c in zip(ks, cs, strict=True)}
    return out, counts


def write_dataset(
    dataset: Dataset,
    out_dir: Path | str,
    fmt: TableFormat = "csv",
    *,
    bad_rows: float = 0.0,
    seed: int = 0,
) -> dict[str, Path]:
    """Write the tables (see :func:`write_dataset_with_report`); returns table name -> written path."""
    return write_dataset_with_report(dataset, out_dir, fmt, bad_rows=bad_rows, seed=seed)[0]


def write_dataset_with_report(
    dataset: Dataset,
    out_dir: Path | str,
    fmt: TableFormat = "csv",
    *,
    bad_rows: float = 0.0,
    seed: int = 0,
) -> tuple[dict[str, Path], dict[str, dict[str, int]]]:
    """Write ``orders``, ``events`` and ``users`` as ``<name>.csv`` or ``<name>.parquet`` in ``out_dir``.

    Timestamps are ISO-8601 UTC in CSV (``2024-03-05T12:34:56Z``) and ``timestamp[ns, UTC]`` in
    Parquet. With ``bad_rows > 0`` about that fraction of realistic bad rows is mixed into every table
    (see :func:`corrupt_tables`); Parquet columns are then all strings so the bad values fit.

    Returns
    -------
    Mapping table name -> written path, and per table the number of bad rows inserted per kind.
    """
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"format must be 'csv' or 'parquet', got {fmt!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    all_frames = {"orders": dataset.orders, "events": dataset.events, "users": dataset.users}
    frames: dict[str, pd.DataFrame] = {k: v for k, v in all_frames.items() if v is not None}
    paths: dict[str, Path] = {}
    if fmt == "parquet" and bad_rows <= 0:
        for name, df in frames.items():
            paths[name] = write_table(df, out / f"{name}.parquet")
        return paths, {}
    strings = {name: table_as_strings(df) for name, df in frames.items()}
    bad_counts: dict[str, dict[str, int]] = {}
    if bad_rows > 0:
        strings, bad_counts = corrupt_tables(strings, bad_rows, seed=seed)
    for name, df in strings.items():
        paths[name] = write_table(df, out / f"{name}.{fmt}")
    return paths, bad_counts
