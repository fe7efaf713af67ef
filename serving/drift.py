"""Drift of features, scores and layer shares between the training reference and the current base.

The reference is what the model bundle stored at training time (:mod:`training.bundle`, ``reference``):
per numeric feature or score, quantile bins with their proportions, the missing share, mid-point
quantiles and the range; per categorical feature, the share of each level; per layer dimension, the
share of each layer. The current base is the feature table (and the scores) of every user as of the
monitoring cutoff.

Per numeric feature or score:

- **PSI** (population stability index) over the reference bins plus one bin for missing values:
  ``sum_i (a_i - e_i) ln(a_i / e_i)`` with ``e`` the reference and ``a`` the current proportions, each
  floored at :data:`PSI_EPSILON` so that an empty bin does not make it infinite;
- **KS**: the two-sample Kolmogorov-Smirnov statistic ``D`` (largest gap between the two cumulative
  distributions, non-missing values) against the reference's mid-point quantiles, whose empirical CDF is
  within ``1 / len(quantiles)`` of the reference's, and its asymptotic p-value with the real sample sizes;
- **missing share** (current minus reference) and **out of range** (share of current non-missing
  values below the reference minimum or above its maximum). Age features (``days_since_*``) grow by
  the days elapsed since the reference cutoff for everyone, so their maximum is stretched by those
  days: a population that merely got older is not out of range.

Per categorical feature: PSI over the levels (levels unseen at training are their own bins and are
named) and a chi-square test of homogeneity of the 2 x levels table of counts.

**Breach rule: the size of a shift decides, significance only guards against noise.** With many users
a KS or chi-square test rejects for shifts far too small to matter, so a p-value never breaches on its
own; with few users a large PSI or share change can be noise, so a breach must also be beyond sampling
noise (p-value below ``monitoring.ks_pvalue``). A feature or score is in ``alert`` (a breach) when

- its PSI is at least ``monitoring.psi_alert`` and the shift is significant (KS / chi-square, or the
  two-proportion test of its missing share, p < ``ks_pvalue``), or
- its missing share moved by at least ``monitoring.missing_share_shift`` (two-proportion z-test
  p < ``ks_pvalue``), or
- at least ``monitoring.out_of_range_share`` of its values lie outside the reference range;

``warn`` when its PSI is at least ``monitoring.psi_warn``; else ``ok``. A layer whose share moved by at
least ``monitoring.layer_share_shift`` is a breach when the change is significant (two-proportion
z-test, when both population sizes are known).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from features.config import MonitoringConfig
from features.errors import StrataError
from training.bundle import bin_proportions
from training.models import UNKNOWN_LEVEL

#: Floor of a bin proportion in the PSI (an empty bin would make the index infinite).
PSI_EPSILON = 1e-4
#: Features named with this prefix are ages in days: they grow with the time elapsed since the reference.
AGE_FEATURE_PREFIX = "days_since_"

#: Columns of the drift tables returned by :func:`feature_drift` and :func:`score_drift`.
DRIFT_COLUMNS: list[str] = [
    "name",
    "kind",
    "psi",
    "test",
    "statistic",
    "p_value",
    "significant",
    "missing_reference",
    "missing_current",
    "missing_change",
    "out_of_range",
    "new_levels",
    "status",
    "reasons",
]

#: Columns of the layer-share table returned by :func:`layer_shift`.
LAYER_SHIFT_COLUMNS: list[str] = [
    "dimension", "layer", "reference_share", "current_share", "change", "p_value", "status",
]

STATUS_ORDER: dict[str, int] = {"alert": 0, "warn": 1, "ok": 2}


class DriftInputError(StrataError):
    """The current table lacks what the reference describes, or the reference is unusable."""


# ----------------------------------------------------------------------------------------- statistics


def psi(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray, eps: float = PSI_EPSILON) -> float:
    """Population stability index of ``actual`` proportions against ``expected`` ones (unitless, >= 0).

    ``sum_i (a_i - e_i) * ln(a_i / e_i)`` over matching bins, each proportion floored at ``eps``.
    Rule of thumb: < 0.1 stable, 0.1-0.25 moderate shift, >= 0.25 major shift.
    """
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    if e.shape != a.shape:
        raise ValueError(f"psi: {e.shape[0]} expected bins but {a.shape[0]} actual bins")
    if len(e) == 0:
        return 0.0
    e = np.maximum(e, eps)
    a = np.maximum(a, eps)
    return float(np.sum((a - e) * np.log(a / e)))


def ks_against_quantiles(
    values: np.ndarray | Sequence[float], reference_quantiles: Sequence[float], n_reference: int
) -> tuple[float, float]:
    """Two-sample KS statistic of ``values`` against a reference given by its quantiles, and its p-value.

    ``reference_quantiles`` act as a pseudo-sample of the reference (mid-point quantiles: its empirical
    CDF is within ``1 / len(reference_quantiles)`` of the reference's); ``n_reference`` is the real
    number of reference values, used for the p-value (asymptotic two-sample distribution, as
    ``scipy.stats.ks_2samp(method="asymp")``). Missing values must be removed beforehand.

    Returns
    -------
    (D, p-value): D in [0, 1]; (0.0, 1.0) when either side is empty.
    """
    from scipy.stats import kstwo

    v = np.sort(np.asarray(values, dtype=float))
    q = np.sort(np.asarray(reference_quantiles, dtype=float))
    if len(v) == 0 or len(q) == 0 or n_reference <= 0:
        return 0.0, 1.0
    grid = np.union1d(q, v)
    f_ref = np.searchsorted(q, grid, side="right") / len(q)
    f_cur = np.searchsorted(v, grid, side="right") / len(v)
    d = float(np.max(np.abs(f_ref - f_cur)))
    en = n_reference * len(v) / (n_reference + len(v))
    p = float(kstwo.sf(d, max(1, int(round(en))))) if d > 0 else 1.0
    return d, min(1.0, max(0.0, p))


def chi_square_against_shares(
    current_counts: Mapping[str, int], reference_shares: Mapping[str, float], n_reference: int
) -> tuple[float, float]:
    """Chi-square test of homogeneity of current level counts and reference level shares.

    The reference counts are ``share * n_reference``; levels absent from both sides are dropped.

    Returns
    -------
    (chi-square statistic, p-value); (0.0, 1.0) with fewer than two levels or an empty side.
    """
    from scipy.stats import chi2_contingency

    levels = sorted(set(current_counts) | set(reference_shares))
    ref = np.array([reference_shares.get(k, 0.0) * n_reference for k in levels], dtype=float)
    cur = np.array([current_counts.get(k, 0) for k in levels], dtype=float)
    keep = (ref + cur) > 0
    ref, cur = ref[keep], cur[keep]
    if len(ref) < 2 or ref.sum() == 0 or cur.sum() == 0:
        return 0.0, 1.0
    res = chi2_contingency(np.vstack([ref, cur]), correction=False)
    return float(res.statistic), float(res.pvalue)


def two_proportion_pvalue(share_a: float, n_a: int, share_b: float, n_b: int) -> float:
    """Two-sided p-value of the z-test that two shares (0..1) of samples of sizes ``n_a``, ``n_b`` are equal.

    1.0 when a size is 0 or both shares are 0 or 1 (no variance).
    """
    from scipy.stats import norm

    if n_a <= 0 or n_b <= 0:
        return 1.0
    pooled = (share_a * n_a + share_b * n_b) / (n_a + n_b)
    var = pooled * (1.0 - pooled) * (1.0 / n_a + 1.0 / n_b)
    if var <= 0:
        return 1.0
    z = abs(share_a - share_b) / np.sqrt(var)
    return float(2.0 * norm.sf(z))


# ----------------------------------------------------------------------------------------- one column


def _status(row: dict[str, Any], cfg: MonitoringConfig, missing_p: float) -> tuple[str, str]:
    reasons = []
    alert = False
    p = row["psi"]
    if p >= cfg.psi_alert and row["significant"]:
        alert = True
        reasons.append(f"PSI {p:.3f} >= {cfg.psi_alert:g}")
    elif p >= cfg.psi_alert:
        reasons.append(f"PSI {p:.3f} >= {cfg.psi_alert:g} but within sampling noise (warning)")
    elif p >= cfg.psi_warn:
        reasons.append(f"PSI {p:.3f} >= {cfg.psi_warn:g} (warning)")
    change = row["missing_change"]
    if abs(change) >= cfg.missing_share_shift and missing_p < cfg.ks_pvalue:
        alert = True
        reasons.append(
            f"missing share {row['missing_reference']:.1%} -> {row['missing_current']:.1%} "
            f"(moved >= {cfg.missing_share_shift:.0%})"
        )
    oor = row["out_of_range"]
    if np.isfinite(oor) and oor >= cfg.out_of_range_share:
        alert = True
        reasons.append(f"{oor:.1%} of values outside the reference range (>= {cfg.out_of_range_share:.0%})")
    if row["new_levels"]:
        reasons.append(f"levels unseen at training: {row['new_levels']}")
    if row["p_value"] < cfg.ks_pvalue:
        reasons.append(f"{row['test']} p-value {row['p_value']:.2g} < {cfg.ks_pvalue:g}")
    if alert:
        return "alert", "; ".join(reasons)
    return ("warn" if p >= cfg.psi_warn else "ok"), "; ".join(reasons)


def numeric_drift(
    name: str,
    reference: Mapping[str, Any],
    values: np.ndarray | pd.Series,
    cfg: MonitoringConfig,
    *,
    check_missing: bool = True,
    max_allowance: float = 0.0,
) -> dict[str, Any]:
    """Drift of one numeric column against its reference distribution (one row of :data:`DRIFT_COLUMNS`).

    ``reference`` holds ``edges``, ``proportions``, ``missing_share``, ``n`` and, from bundles that
    store them, ``quantiles``, ``min`` and ``max``. Without quantiles, the KS statistic is taken at the
    bin edges only (a lower bound of the true D). ``check_missing=False`` keeps missing values in the
    PSI but never breaches on the missing share alone (for scores, where missing means "not this kind
    of user"). ``max_allowance`` is added to the reference maximum for the range check (days elapsed,
    for age features).
    """
    v = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    try:
        edges = [float(e) for e in reference["edges"]]
        ref_props = np.asarray(reference["proportions"], dtype=float)
        ref_missing = float(reference["missing_share"])
        n_ref = int(reference.get("n", 0))
    except (KeyError, TypeError, ValueError):
        raise DriftInputError(f"model reference of {name!r}: not a numeric reference distribution") from None
    cur_props, cur_missing = bin_proportions(v, edges)
    cur = np.asarray(cur_props, dtype=float)
    expected = np.append(ref_props * (1.0 - ref_missing), ref_missing)
    actual = np.append(cur * (1.0 - cur_missing), cur_missing)
    finite = v[~np.isnan(v)]
    n_ref_finite = int(round(n_ref * (1.0 - ref_missing)))
    quantiles = reference.get("quantiles") or []
    if len(quantiles) and len(finite):
        d, p = ks_against_quantiles(finite, quantiles, n_ref_finite)
    elif len(finite) and ref_props.sum() > 0:
        from scipy.stats import kstwo

        d = float(np.max(np.abs(np.cumsum(ref_props) - np.cumsum(cur))))
        en = n_ref_finite * len(finite) / max(1, n_ref_finite + len(finite))
        p = float(kstwo.sf(d, max(1, int(round(en))))) if d > 0 else 1.0
    else:
        d, p = 0.0, 1.0
    lo, hi = reference.get("min"), reference.get("max")
    if lo is not None and hi is not None and len(finite):
        out_of_range = float(np.mean((finite < float(lo)) | (finite > float(hi) + max_allowance)))
    else:
        out_of_range = float("nan")
    missing_p = two_proportion_pvalue(ref_missing, n_ref, float(cur_missing), len(v))
    if not check_missing:
        missing_p = 1.0
    row: dict[str, Any] = {
        "name": name,
        "kind": "numeric",
        "psi": psi(expected, actual),
        "test": "KS",
        "statistic": d,
        "p_value": p,
        "significant": bool(p < cfg.ks_pvalue or missing_p < cfg.ks_pvalue),
        "missing_reference": ref_missing,
        "missing_current": float(cur_missing),
        "missing_change": float(cur_missing - ref_missing),
        "out_of_range": out_of_range,
        "new_levels": "",
    }
    row["status"], row["reasons"] = _status(row, cfg, missing_p)
    return row


def categorical_drift(name: str, reference: Mapping[str, Any], values: pd.Series, cfg: MonitoringConfig) -> dict[str, Any]:
    """Drift of one categorical column against its reference level shares (one row of :data:`DRIFT_COLUMNS`).

    Missing values count as the level ``"unknown"`` (as at training). Levels unseen at training are
    their own PSI bins and are listed in ``new_levels`` with their current shares (the model itself
    treats them as ``"unknown"``).
    """
    try:
        ref_shares = {str(k): float(s) for k, s in reference["levels"].items()}
        n_ref = int(reference.get("n", 0))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise DriftInputError(f"model reference of {name!r}: not a categorical reference distribution") from None
    s = pd.Series(values)
    cur = s.astype(object).where(s.notna(), UNKNOWN_LEVEL).astype(str)
    counts = {str(k): int(c) for k, c in cur.value_counts().items()}
    n_cur = len(cur)
    cur_shares = {k: c / n_cur for k, c in counts.items()} if n_cur else {}
    levels = sorted(set(ref_shares) | set(cur_shares))
    new = sorted((k for k in cur_shares if k not in ref_shares), key=lambda k: -cur_shares[k])
    stat, p = chi_square_against_shares(counts, ref_shares, n_ref)
    row: dict[str, Any] = {
        "name": name,
        "kind": "categorical",
        "psi": psi([ref_shares.get(k, 0.0) for k in levels], [cur_shares.get(k, 0.0) for k in levels]),
        "test": "chi-square",
        "statistic": stat,
        "p_value": p,
        "significant": bool(p < cfg.ks_pvalue),
        "missing_reference": ref_shares.get(UNKNOWN_LEVEL, 0.0),
        "missing_current": cur_shares.get(UNKNOWN_LEVEL, 0.0),
        "missing_change": cur_shares.get(UNKNOWN_LEVEL, 0.0) - ref_shares.get(UNKNOWN_LEVEL, 0.0),
        "out_of_range": float("nan"),
        "new_levels": ", ".join(f"{k} ({cur_shares[k]:.1%})" for k in new),
    }
    missing_p = two_proportion_pvalue(row["missing_reference"], n_ref, row["missing_current"], n_cur)
    row["status"], row["reasons"] = _status(row, cfg, missing_p)
    return row


# ----------------------------------------------------------------------------------------- tables


def _sorted(rows: list[dict[str, Any]]) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=DRIFT_COLUMNS)
    if table.empty:
        return table
    table["_rank"] = table["status"].map(STATUS_ORDER)
    table = table.sort_values(["_rank", "psi", "name"], ascending=[True, False, True], kind="stable")
    return table.drop(columns="_rank").reset_index(drop=True)


def feature_drift(
    reference: Mapping[str, Any],
    features: pd.DataFrame,
    cfg: MonitoringConfig,
    *,
    exclude: Iterable[str] | None = None,
    elapsed_days: float = 0.0,
) -> pd.DataFrame:
    """Drift of every reference feature in ``features`` (a ``build_features`` table), worst first.

    Parameters
    ----------
    reference
        The bundle's ``reference`` (its ``features`` entry is used).
    features
        The current feature table, one row per user.
    cfg
        Thresholds (``config.monitoring``).
    exclude
        Feature names to skip (default ``cfg.exclude_features``).
    elapsed_days
        Days from the reference cutoff to the current one: the range allowance of age features
        (:data:`AGE_FEATURE_PREFIX`).

    Returns
    -------
    One row per feature, :data:`DRIFT_COLUMNS`, sorted by status (alert, warn, ok) then PSI descending.

    Raises
    ------
    DriftInputError
        If the bundle has no reference distributions, or ``features`` lacks a feature the reference has.
    """
    refs = reference.get("features") or {}
    if not refs:
        raise DriftInputError("model bundle holds no reference feature distributions; retrain the model with this version")
    skip = set(cfg.exclude_features if exclude is None else exclude)
    names = [n for n in refs if n not in skip]
    missing = [n for n in names if n not in features.columns]
    if missing:
        raise DriftInputError(
            f"current feature table lacks column(s) {', '.join(missing)} that the model was trained with "
            "(the features configuration changed since training?)"
        )
    rows = []
    for name in names:
        ref = refs[name]
        if "levels" in ref:
            rows.append(categorical_drift(name, ref, features[name], cfg))
        else:
            allowance = max(0.0, float(elapsed_days)) if name.startswith(AGE_FEATURE_PREFIX) else 0.0
            rows.append(numeric_drift(name, ref, features[name].to_numpy(dtype=float), cfg, max_allowance=allowance))
    return _sorted(rows)


def score_drift(reference: Mapping[str, Any], scores: pd.DataFrame, cfg: MonitoringConfig) -> pd.DataFrame:
    """Drift of every reference score column present in ``scores`` (``churn_risk``, ``predicted_value``...).

    Missing scores are meaningful (``churn_risk`` is NaN for prospects, ``conversion_prob`` for buyers),
    so the missing share of a score is the share of users without it: it counts in the PSI, but a
    change of it alone is no breach (the layer shares show the buyer/prospect mix). Same columns and
    order as :func:`feature_drift`.
    """
    refs = reference.get("scores") or {}
    rows = [
        numeric_drift(name, ref, scores[name].to_numpy(dtype=float), cfg, check_missing=False)
        for name, ref in refs.items()
        if name in scores.columns
    ]
    return _sorted(rows)


def layer_shares(layers: pd.DataFrame, dimensions: Iterable[str] | None = None) -> dict[str, dict[str, float]]:
    """Share of users (0..1) in each layer of each dimension of an ``assign_layers`` table."""
    dims = list(dimensions) if dimensions is not None else [c for c in layers.columns if c != "user_id"]
    return {d: {str(k): float(v) for k, v in layers[d].astype(str).value_counts(normalize=True).items()} for d in dims}


def layer_shift(
    reference: Mapping[str, Mapping[str, float]],
    current: Mapping[str, Mapping[str, float]],
    cfg: MonitoringConfig,
    *,
    n_reference: int | None = None,
    n_current: int | None = None,
) -> pd.DataFrame:
    """Layer shares now vs the reference: one row per (dimension, layer) of either side.

    ``change`` is current minus reference share (fraction points); ``p_value`` the two-proportion
    z-test of the change (NaN without both population sizes); ``status`` is ``alert`` when
    ``|change| >= cfg.layer_share_shift`` and (with sizes) ``p_value < cfg.ks_pvalue``. Rows are sorted
    by status, then by ``|change|`` descending.
    """
    rows = []
    sized = bool(n_reference) and bool(n_current)
    for dim in reference:
        if dim not in current:
            continue
        ref, cur = reference[dim], current[dim]
        for layer in sorted(set(ref) | set(cur)):
            r, c = float(ref.get(layer, 0.0)), float(cur.get(layer, 0.0))
            change = c - r
            p = two_proportion_pvalue(r, int(n_reference or 0), c, int(n_current or 0)) if sized else float("nan")
            large = abs(change) >= cfg.layer_share_shift - 1e-12
            status = "alert" if large and (not sized or p < cfg.ks_pvalue) else "ok"
            rows.append({"dimension": dim, "layer": layer, "reference_share": r, "current_share": c, "change": change,
                         "p_value": p, "status": status})
    table = pd.DataFrame(rows, columns=LAYER_SHIFT_COLUMNS)
    if table.empty:
        return table
    table["_rank"] = table["status"].map(STATUS_ORDER)
    table["_abs"] = table["change"].abs()
    table = table.sort_values(["_rank", "_abs"], ascending=[True, False], kind="stable")
    return table.drop(columns=["_rank", "_abs"]).reset_index(drop=True)


__all__ = [
    "AGE_FEATURE_PREFIX",
    "DRIFT_COLUMNS",
    "LAYER_SHIFT_COLUMNS",
    "PSI_EPSILON",
    "DriftInputError",
    "categorical_drift",
    "chi_square_against_shares",
    "feature_drift",
    "ks_against_quantiles",
    "layer_shares",
    "layer_shift",
    "numeric_drift",
    "psi",
    "score_drift",
    "two_proportion_pvalue",
]
