"""Reason codes: the few features that pushed a user's churn score up or down the most.

Contributions are on the raw log-odds scale, either path (Saabas) credits from LightGBM's leaf
assignment (:mod:`training.tree_paths`, the default) or LightGBM's ``pred_contrib`` (TreeSHAP), as
``scoring.reason_method`` says (docs/reasons.md): per user, the feature contributions plus the ``bias``
column add up to the raw churn score, so the reasons are an exact decomposition of the score, not a
separate explanation model. Each reason is
``{feature, label, value, contribution, direction, score}`` with ``direction`` ``"up"`` (raises churn
risk) or ``"down"`` (lowers it); contributions are in log-odds. Prospects have no churn score: their
reasons explain the conversion probability instead (``score`` = ``"conversion_prob"``, ``"up"`` then
means "raises the chance of a first purchase").
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from features.config import StrataConfig

BIAS_COLUMN = "bias"
#: Significant digits of the feature values shown in reasons (display only; contributions are exact).
VALUE_DIGITS = 10

_WORDS = {
    "30d": "30 days",
    "90d": "90 days",
    "180d": "180 days",
    "365d": "365 days",
    "avg": "average",
    "hl7": "(half-life 7 days)",
    "hl30": "(half-life 30 days)",
    "hl90": "(half-life 90 days)",
}


def _label_from_name(name: str) -> str:
    words = [_WORDS.get(w, w) for w in name.split("_")]
    text = " ".join(words).replace("decay (", "decayed (")
    return text[:1].upper() + text[1:]


def feature_labels(feature_names: Iterable[str], config: StrataConfig | None = None) -> dict[str, str]:
    """Readable label of each feature: its description in the feature catalog where it has one.

    The catalog is :func:`features.definitions.output_features` of ``config`` (default configuration if
    None); features it does not describe get a label spelled from the name (``days_since_last_order``
    -> ``Days since last order``).
    """
    catalog = _catalog_descriptions(config if config is not None else StrataConfig())
    return {name: catalog.get(name) or _label_from_name(name) for name in feature_names}


def _catalog_descriptions(config: StrataConfig) -> dict[str, str]:
    from features.definitions import output_features

    return {d.name: d.description.rstrip(".") for d in output_features(config)}


def _round_significant(values: np.ndarray, digits: int) -> np.ndarray:
    """Round each value to ``digits`` significant digits (NaN and infinities unchanged)."""
    v = np.asarray(values, dtype=float)
    out = v.copy()
    ok = np.isfinite(v) & (v != 0)
    if not ok.any():
        return out
    exp = np.zeros(len(v), dtype=np.int64)
    exp[ok] = digits - 1 - np.floor(np.log10(np.abs(v[ok]))).astype(np.int64)
    # Scales beyond 1e290 (values below about 1e-280 or above 1e299) can overflow: those few values
    # are rounded through their decimal text instead.
    extreme = ok & (np.abs(exp) > 290)
    fast = ok & ~extreme
    if fast.any():
        e = exp[fast]
        pos = e >= 0
        x = v[fast]
        r = np.empty(len(x))
        # Dividing (or multiplying) an integer by an exact power of ten gives the double nearest to
        # the rounded decimal, whose shortest text is that decimal.
        scale = 10.0 ** np.abs(e)
        r[pos] = np.round(x[pos] * scale[pos]) / scale[pos]
        r[~pos] = np.round(x[~pos] / scale[~pos]) * scale[~pos]
        out[fast] = r
    for i in np.flatnonzero(extreme):
        rounded = float(f"{v[i]:.{digits - 1}e}")
        # Rounding up past the largest double keeps the value itself.
        out[i] = rounded if np.isfinite(rounded) else v[i]
    return out


def number_strings(values: np.ndarray, digits: int | None = None) -> Any:
    """JSON number text of each float (shortest round-trip form, optionally rounded to ``digits``
    significant digits); ``null`` for NaN and infinities. An Arrow string array (see :func:`number_texts`
    for a few values)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    v = np.asarray(values, dtype=float)
    arr = pa.array(_round_significant(v, digits) if digits else v, type=pa.float64())
    text = pc.cast(arr, pa.string())
    return pc.if_else(pc.is_finite(arr), text, pa.scalar("null"))


#: Up to this many values, :func:`number_texts` and :func:`rounded_texts` format in Python: Arrow's
#: compute calls cost a few microseconds each whatever the length (``number_strings`` takes about 33 us
#: for 6 values, the Python path 9 us; they break even near 24 values).
SMALL_TEXTS = 16
#: ``10.0 ** e`` for e = 0..290 as :func:`_round_significant` computes them (numpy's power, which is not
#: always the double nearest to 10**e: 10.0 ** 260 gives 9.999999999999999e+259 there).
_POW10 = (10.0 ** np.arange(0, 291, dtype=np.int64)).tolist()


def number_texts(values: np.ndarray, digits: int | None = None) -> list[str]:
    """``number_strings(values, digits).to_pylist()``, the same texts, in Python for a few values.

    The online fast path formats a handful of reason values per request; for up to :data:`SMALL_TEXTS`
    values this avoids Arrow's per-call overhead. Equal to the Arrow path text for text (the tests compare
    over 400,000 values: powers of ten and their neighbours, subnormals and signed zeros included).
    """
    v = np.asarray(values, dtype=float)
    if len(v) > SMALL_TEXTS:
        return list(number_strings(v, digits).to_pylist())
    rounded = _round_significant_few(v, digits) if digits else v.tolist()
    return [float_text(x) if math.isfinite(x) else "null" for x in rounded]


def float_texts(values: Sequence[float] | np.ndarray) -> list[str]:
    """``pc.cast(pa.array(values), pa.string()).to_pylist()`` (Arrow's text of each float, ``nan`` and
    ``inf`` included), in Python for up to :data:`SMALL_TEXTS` values."""
    v = np.asarray(values, dtype=float)
    if len(v) > SMALL_TEXTS:
        import pyarrow as pa
        import pyarrow.compute as pc

        return list(pc.cast(pa.array(v, type=pa.float64()), pa.string()).to_pylist())
    return [float_text(x) for x in v.tolist()]


def rounded_texts(values: np.ndarray, decimals: int) -> list[str]:
    """``pc.cast(pc.round(values, decimals), pa.string()).to_pylist()``: Arrow's half-to-even rounding
    to ``decimals`` places (0..15), then its text, in Python for up to :data:`SMALL_TEXTS` values."""
    v = np.asarray(values, dtype=float)
    if len(v) > SMALL_TEXTS:
        import pyarrow as pa
        import pyarrow.compute as pc

        return list(pc.cast(pc.round(pa.array(v, type=pa.float64()), decimals), pa.string()).to_pylist())
    if not 0 <= decimals <= 15:
        raise ValueError(f"decimals must be 0..15, not {decimals}")
    scale = float(10**decimals)
    out = []
    for x in v.tolist():
        s = x * scale
        if math.isfinite(s) and s != math.floor(s):
            # Arrow keeps a value whose scaled form is integral; otherwise the nearest integer (ties to
            # even), with the sign of zero kept (-0.00001 -> "-0")
            x = math.copysign(round(s), s) / scale
        elif not math.isfinite(s) and math.isfinite(x):
            raise ValueError("overflow occurred during rounding")
        out.append(float_text(x))
    return out


def float_text(x: float) -> str:
    """Arrow's text of a float64 (its ``cast`` to string): the shortest round-trip digits, in fixed
    notation when the leading digit's exponent is in -6..9 (``0.000001``, ``1500000000``), else in
    exponent notation (``1e-7``, ``1.5e+10``); integral values without a point (``3``, ``-0``);
    ``nan``, ``inf``, ``-inf``."""
    if x != x:
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    text = repr(x)  # Python's repr: the shortest digits that round-trip, as Arrow's
    if "e" not in text and -1e10 < x < 1e10:  # the usual case: fixed notation in both (e.g. "12.5", "3.0")
        return text[:-2] if text.endswith(".0") else text
    sign = ""
    if text[0] == "-":
        sign, text = "-", text[1:]
    mantissa, _, exponent = text.partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    point = (int(exponent) if exponent else 0) + len(whole)  # value = 0.<digits> * 10**point
    significant = digits.lstrip("0")
    point -= len(digits) - len(significant)
    significant = significant.rstrip("0")
    if not significant:
        return sign + "0"
    lead = point - 1  # exponent of the leading digit
    if -6 <= lead <= 9:
        if point <= 0:
            return f"{sign}0.{'0' * -point}{significant}"
        if point >= len(significant):
            return sign + significant + "0" * (point - len(significant))
        return f"{sign}{significant[:point]}.{significant[point:]}"
    mantissa = significant[0] + ("." + significant[1:] if len(significant) > 1 else "")
    return f"{sign}{mantissa}e{'+' if lead > 0 else '-'}{abs(lead)}"


def _round_significant_few(v: np.ndarray, digits: int) -> list[float]:
    """:func:`_round_significant` of a few values, element by element: the same doubles (numpy's
    ``log10`` and powers of ten, IEEE products and quotients, ties to even)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        leads = np.floor(np.log10(np.abs(v))).tolist()
    out = []
    for x, lead in zip(v.tolist(), leads, strict=True):
        if not math.isfinite(x) or x == 0:
            out.append(x)
            continue
        e = digits - 1 - int(lead)
        if abs(e) > 290:
            rounded = float(f"{x:.{digits - 1}e}")
            out.append(rounded if math.isfinite(rounded) else x)
        elif e >= 0:
            out.append(round(x * _POW10[e]) / _POW10[e])
        else:
            out.append(round(x / _POW10[-e]) * _POW10[-e])
    return out


def top_indices(matrix: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` largest values per row, largest first (ties: lower column first;
    NaN counts as 0)."""
    from serving.reason_text import extreme_columns

    return extreme_columns(matrix, k)[0]


def reason_codes(
    contributions: pd.DataFrame,
    features: pd.DataFrame,
    *,
    top_n: int = 3,
    labels: dict[str, str] | None = None,
    score: str = "churn_risk",
) -> list[str]:
    """JSON reason list per user: the ``top_n`` features that raised and lowered churn risk most.

    Parameters
    ----------
    contributions
        Per-feature raw log-odds contributions (one column per model feature, plus ``bias`` which is
        ignored here), row-aligned with ``features``.
    features
        The feature rows that were scored (values shown next to each reason).
    top_n
        How many reasons in each direction.
    labels
        Feature -> readable label; default :func:`feature_labels`.
    score
        The score the contributions explain (``churn_risk``, or ``conversion_prob`` for prospects),
        written into each reason as ``score``; ``direction`` says whether the feature raised or lowered it.

    Returns
    -------
    list of str
        One JSON array per row: the "up" reasons (largest positive contribution first) then the
        "down" ones (most negative first). Zero contributions are never reasons; a row whose
        contributions are all NaN (no churn score, e.g. a prospect) gets ``[]``.
    """
    positions = [k for k, c in enumerate(contributions.columns) if c != BIAS_COLUMN]
    names = [str(contributions.columns[k]) for k in positions]
    n = len(contributions)
    if n != len(features):
        raise ValueError(f"contributions ({n} rows) and features ({len(features)} rows) differ in length")
    # A view when the frame is one float block (as the scorer builds it).
    matrix = contributions.to_numpy(dtype=float)
    return reason_texts(matrix, positions, names, features, None, top_n=top_n, labels=labels, score=score)


def reason_texts(
    matrix: np.ndarray,
    positions: list[int],
    names: list[str],
    features: pd.DataFrame,
    rows: np.ndarray | None,
    *,
    top_n: int = 3,
    labels: dict[str, str] | None = None,
    score: str = "churn_risk",
    as_arrow: bool = False,
) -> Any:
    """:func:`reason_codes` on a contribution array: what the scorer calls, without building frames.

    ``matrix[:, positions[j]]`` holds the contributions of feature ``names[j]`` (other columns, such as
    the bias, are ignored); ``rows`` (a boolean mask of ``features``' rows, or None for all) says which
    feature rows the matrix rows belong to. With ``as_arrow`` the same texts come as a pyarrow
    ``string`` array (see :func:`serving.reason_text.join_reasons`) instead of a list of str.
    """
    import pyarrow as pa

    from serving.reason_text import extreme_columns, join_reasons

    n = matrix.shape[0]
    if n == 0:
        return pa.array([], type=pa.string()) if as_arrow else []
    if labels is None:
        labels = feature_labels(names)
    columns = np.asarray(positions, dtype=np.int64)
    # NaN contributions count as 0, so they are never reasons.
    up_idx, down_idx = extreme_columns(matrix, top_n, columns)
    width = up_idx.shape[1] + down_idx.shape[1]
    if width == 0:
        return pa.array(["[]"] * n, type=pa.string()) if as_arrow else ["[]"] * n
    import pyarrow.compute as pc

    slot_idx = np.concatenate([up_idx, down_idx], axis=1)  # (n, width): up slots, then down slots
    row_of = np.repeat(np.arange(n), width)
    flat_idx = slot_idx.ravel()
    c = matrix[row_of, columns[flat_idx]]
    c = np.where(np.isnan(c), 0.0, c).reshape(n, width)
    sign = np.concatenate([np.ones(up_idx.shape[1]), -np.ones(down_idx.shape[1])])
    keep = (c * sign) > 0
    # Values shown next to the reasons: numbers as JSON numbers, categories as JSON strings.
    used = np.flatnonzero(np.bincount(flat_idx[keep.ravel()], minlength=len(names)))
    # Only the numeric features some reason shows, gathered straight into the reason slots.
    numeric_cols: list[np.ndarray] = []
    numeric_of = np.full(len(names), -1, dtype=np.int64)
    quoted: dict[int, Any] = {}
    for j in used.tolist():
        name = names[j]
        if name not in features.columns:
            continue
        col = features[name]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            values = col.to_numpy(dtype=float, na_value=np.nan)
            numeric_of[j] = len(numeric_cols)
            numeric_cols.append(values if rows is None else values[rows])
        else:
            quoted[int(j)] = pa.array(_json_strings(col if rows is None else col[rows]), type=pa.string())
    slot_values = np.full(n * width, np.nan)
    if numeric_cols:
        gathered = np.column_stack(numeric_cols)
        slot_col = numeric_of[flat_idx]
        has = slot_col >= 0
        slot_values[has] = gathered[row_of[has], slot_col[has]]
    value_text = number_strings(slot_values, VALUE_DIGITS)
    for j, text in quoted.items():
        is_j = flat_idx == j
        value_text = pc.if_else(pa.array(is_j), pc.take(text, pa.array(row_of)), value_text)
    contribution_text = pc.cast(pa.array(c.ravel()), pa.string())
    prefixes = [
        '{"feature": ' + json.dumps(name) + ', "label": '
        + json.dumps(labels.get(name, name), ensure_ascii=False) + ', "value": '
        for name in names
    ]
    return join_reasons(
        slot_idx,
        keep,
        prefixes,
        value_text,
        contribution_text,
        ', "contribution": ',
        ', "direction": "up", "score": "' + score + '"}',
        ', "direction": "down", "score": "' + score + '"}',
        as_arrow=as_arrow,
    )


def _json_strings(col: pd.Series) -> np.ndarray:
    """JSON text of ``str(value)`` per row (``null`` where missing); each distinct value encoded once."""
    present = col.notna().to_numpy()
    out = np.full(len(col), "null", dtype=object)
    if present.any():
        codes, uniques = pd.factorize(col[present].astype(str))
        texts = np.array([json.dumps(str(u), ensure_ascii=False) for u in uniques], dtype=object)
        out[present] = texts[codes]
    return out


def contributions_total(contributions: pd.DataFrame) -> np.ndarray:
    """Sum of all contribution columns including ``bias``: the raw churn score (log-odds) per row."""
    return contributions.to_numpy(dtype=float).sum(axis=1)
