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
from collections.abc import Iterable
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
    significant digits); ``null`` for NaN and infinities."""
    import pyarrow as pa
    import pyarrow.compute as pc

    v = np.asarray(values, dtype=float)
    arr = pa.array(_round_significant(v, digits) if digits else v, type=pa.float64())
    text = pc.cast(arr, pa.string())
    return pc.if_else(pc.is_finite(arr), text, pa.scalar("null"))


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
