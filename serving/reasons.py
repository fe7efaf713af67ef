"""Reason codes: the few features that pushed a user's churn score up or down the most.

Contributions come from LightGBM's ``pred_contrib`` (TreeSHAP on the raw log-odds scale): per user,
the feature contributions plus the ``bias`` column add up to the raw churn score, so the reasons are an
exact decomposition of the score, not a separate explanation model. Each reason is
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
    if ok.any():
        exp = digits - 1 - np.floor(np.log10(np.abs(v[ok]))).astype(int)
        pos = exp >= 0
        r = np.empty(int(ok.sum()))
        # Dividing (or multiplying) an integer by an exact power of ten gives the double nearest to
        # the rounded decimal, whose shortest text is that decimal.
        scale = 10.0 ** np.abs(exp)
        r[pos] = np.round(v[ok][pos] * scale[pos]) / scale[pos]
        r[~pos] = np.round(v[ok][~pos] / scale[~pos]) * scale[~pos]
        out[ok] = r
    return out


def _number_strings(values: np.ndarray, digits: int | None = None) -> Any:
    """JSON number text of each float (shortest round-trip form, optionally rounded to ``digits``
    significant digits); ``null`` for NaN and infinities."""
    import pyarrow as pa
    import pyarrow.compute as pc

    v = np.asarray(values, dtype=float)
    arr = pa.array(_round_significant(v, digits) if digits else v, type=pa.float64())
    text = pc.cast(arr, pa.string())
    return pc.if_else(pc.is_finite(arr), text, pa.scalar("null"))


def _top_indices(matrix: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` largest values per row, largest first (ties: lower column first)."""
    n_cols = matrix.shape[1]
    k = min(k, n_cols)
    if k == 0:
        return np.empty((matrix.shape[0], 0), dtype=np.int64)
    if k < n_cols:
        part = np.argpartition(-matrix, k - 1, axis=1)[:, :k]
    else:
        part = np.tile(np.arange(n_cols), (matrix.shape[0], 1))
    vals = np.take_along_axis(matrix, part, axis=1)
    # Sort the k candidates: by value descending, then column index ascending (deterministic ties).
    order = np.lexsort((part, -vals), axis=1)
    return np.take_along_axis(part, order, axis=1)


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
    names = [c for c in contributions.columns if c != BIAS_COLUMN]
    n = len(contributions)
    if n != len(features):
        raise ValueError(f"contributions ({n} rows) and features ({len(features)} rows) differ in length")
    if n == 0:
        return []
    if labels is None:
        labels = feature_labels(names)
    contrib = contributions[names].to_numpy(dtype=float, copy=True)
    contrib = np.where(np.isnan(contrib), 0.0, contrib)
    up_idx = _top_indices(contrib, top_n)
    down_idx = _top_indices(-contrib, top_n)
    import pyarrow as pa
    import pyarrow.compute as pc

    prefixes = pa.array(
        [
            '{"feature": ' + json.dumps(name) + ', "label": '
            + json.dumps(labels.get(name, name), ensure_ascii=False) + ', "value": '
            for name in names
        ]
    )
    # Values shown next to the reasons: numbers as JSON numbers, categories as JSON strings.
    numeric = np.full((n, len(names)), np.nan)
    quoted: dict[int, np.ndarray] = {}
    for j, name in enumerate(names):
        if name not in features.columns:
            continue
        col = features[name]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            numeric[:, j] = col.to_numpy(dtype=float, na_value=np.nan)
        else:
            text = col.astype(object).where(col.notna(), None)
            quoted[j] = text.map(lambda v: "null" if v is None else json.dumps(str(v), ensure_ascii=False)).to_numpy(
                dtype=object
            )
    rows = np.arange(n)

    def slot_strings(idx: np.ndarray, direction: str, sign: float) -> Any:
        c = contrib[rows, idx]
        keep = sign * c > 0
        value_text = _number_strings(numeric[rows, idx], VALUE_DIGITS)
        for j, text in quoted.items():
            is_j = idx == j
            if is_j.any():
                shown = pa.array(np.where(is_j, text, np.array(None, dtype=object)), type=pa.string())
                value_text = pc.if_else(pa.array(is_j), shown, value_text)
        contribution_text = pc.cast(pa.array(c), pa.string())
        item = pc.binary_join_element_wise(
            pc.take(prefixes, pa.array(idx)),
            value_text,
            pa.scalar(', "contribution": '),
            contribution_text,
            pa.scalar(', "direction": "' + direction + '", "score": "' + score + '"}, '),
            "",
        )
        # Empty string (not null) for no reason: pyarrow's null_handling="skip" drops all-null rows.
        return pc.if_else(pa.array(keep), item, pa.scalar(""))

    slots = [slot_strings(up_idx[:, k], "up", 1.0) for k in range(up_idx.shape[1])]
    slots += [slot_strings(down_idx[:, k], "down", -1.0) for k in range(down_idx.shape[1])]
    if not slots:
        return ["[]"] * n
    joined = pc.binary_join_element_wise(pa.scalar("["), *slots, "")
    # Every item ends with "}, ": trimming trailing commas and spaces removes only the last separator.
    joined = pc.binary_join_element_wise(pc.utf8_rtrim(joined, characters=", "), pa.scalar("]"), "")
    out = joined.to_pylist()
    if len(out) != n:
        raise AssertionError(f"reason codes: built {len(out)} rows for {n}")
    return out


def contributions_total(contributions: pd.DataFrame) -> np.ndarray:
    """Sum of all contribution columns including ``bias``: the raw churn score (log-odds) per row."""
    return contributions.to_numpy(dtype=float).sum(axis=1)
