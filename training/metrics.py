"""Model-quality metrics for churn probabilities and value predictions.

Every metric is order-invariant: ties in the scores are resolved by their expectation over random
tie-breaking (average ranks), never by the order of the rows. Degenerate inputs (a single class, all
actual values zero) give NaN for the metrics they make undefined rather than an error.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.stats import rankdata, spearmanr
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from features.errors import StrataError

FloatArray = npt.NDArray[np.float64]


class MetricInputError(StrataError, ValueError):
    """Metric inputs are inconsistent; the message names the argument, row and value."""


def _vector(values: npt.ArrayLike, name: str) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    bad = np.flatnonzero(~np.isfinite(arr))
    if len(bad):
        i = int(bad[0])
        raise MetricInputError(f"{name}: row {i}: value {float(arr[i])!r} is not a finite number")
    return arr


def _pair(y_true: npt.ArrayLike, pred: npt.ArrayLike, pred_name: str) -> tuple[FloatArray, FloatArray]:
    y = _vector(y_true, "y_true")
    p = _vector(pred, pred_name)
    if len(y) != len(p):
        raise MetricInputError(
            f"y_true and {pred_name} must have the same length (got {len(y)} and {len(p)})"
        )
    if len(y) == 0:
        raise MetricInputError("y_true: no rows to evaluate")
    return y, p


def _check_binary(y: FloatArray, p: FloatArray) -> None:
    bad = np.flatnonzero((y != 0) & (y != 1))
    if len(bad):
        i = int(bad[0])
        raise MetricInputError(f"y_true: row {i}: value {float(y[i])!r} is not a 0/1 label")
    bad = np.flatnonzero((p < 0) | (p > 1))
    if len(bad):
        i = int(bad[0])
        raise MetricInputError(f"p: row {i}: value {float(p[i])!r} is not a probability in [0, 1]")


# ----------------------------------------------------------------------------- churn


def calibration_table(y_true: npt.ArrayLike, p: npt.ArrayLike, n_bins: int = 10) -> pd.DataFrame:
    """Reliability table over ``n_bins`` equal-width probability bins.

    Bin ``k`` holds ``k/n_bins < p <= (k+1)/n_bins`` (the first bin includes 0.0), the binning of
    :func:`sklearn.calibration.calibration_curve` with ``strategy="uniform"``. Columns: ``bin`` (0-based),
    ``lower``, ``upper``, ``n``, ``mean_pred``, ``frac_pos`` (NaN for empty bins).
    """
    y, prob = _pair(y_true, p, "p")
    _check_binary(y, prob)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.searchsorted(edges[1:-1], prob, side="left")
    n = np.bincount(idx, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_pred = np.bincount(idx, weights=prob, minlength=n_bins) / n
        frac_pos = np.bincount(idx, weights=y, minlength=n_bins) / n
    return pd.DataFrame(
        {
            "bin": np.arange(n_bins),
            "lower": edges[:-1],
            "upper": edges[1:],
            "n": n.astype(np.int64),
            "mean_pred": mean_pred,
            "frac_pos": frac_pos,
        }
    )


def expected_calibration_error(y_true: npt.ArrayLike, p: npt.ArrayLike, n_bins: int = 10) -> float:
    """ECE: bin-size-weighted mean of ``|mean predicted - observed positive rate|`` (probability units)."""
    table = calibration_table(y_true, p, n_bins).query("n > 0")
    weights = table["n"] / table["n"].sum()
    return float((weights * (table["mean_pred"] - table["frac_pos"]).abs()).sum())


def _top_share_mean(y: FloatArray, score: FloatArray, share: float) -> float:
    """Mean of ``y`` over the top ``ceil(share * n)`` rows by ``score``, ties split in expectation."""
    n = len(y)
    k = max(1, math.ceil(share * n))
    order = np.argsort(-score, kind="stable")
    s_sorted = score[order]
    threshold = s_sorted[k - 1]
    above = score > threshold
    tied = score == threshold
    n_above = int(above.sum())
    total = y[above].sum() + (k - n_above) * y[tied].mean()
    return float(total / k)


def lift_top_decile(y_true: npt.ArrayLike, p: npt.ArrayLike) -> float:
    """Positive rate in the top 10% of rows by ``p`` divided by the overall positive rate (ratio).

    The top decile is ``ceil(n / 10)`` rows; rows tied at its boundary count with their mean label.
    NaN when there are no positives.
    """
    y, prob = _pair(y_true, p, "p")
    base = y.mean()
    if base == 0:
        return float("nan")
    return float(_top_share_mean(y, prob, 0.1) / base)


def churn_metrics(y_true: npt.ArrayLike, p: npt.ArrayLike) -> dict[str, float]:
    """Quality of churn probabilities ``p`` against 0/1 outcomes ``y_true`` (1 = churned).

    Returns ``auc`` (ROC AUC), ``pr_auc`` (average precision, sklearn's step-wise area under the
    precision-recall curve), ``brier`` (mean squared error of the probability), ``ece`` (expected
    calibration error, 10 equal-width bins), ``lift_top_decile`` (ratio, see :func:`lift_top_decile`),
    ``positive_rate`` and ``mean_pred`` (probabilities) and ``n``. AUC and PR-AUC are NaN when only one
    class is present.
    """
    y, prob = _pair(y_true, p, "p")
    _check_binary(y, prob)
    two_classes = 0 < y.sum() < len(y)
    return {
        "auc": float(roc_auc_score(y, prob)) if two_classes else float("nan"),
        "pr_auc": float(average_precision_score(y, prob)) if two_classes else float("nan"),
        "brier": float(brier_score_loss(y, prob)),
        "ece": expected_calibration_error(y, prob, n_bins=10),
        "lift_top_decile": lift_top_decile(y, prob),
        "positive_rate": float(y.mean()),
        "mean_pred": float(prob.mean()),
        "n": float(len(y)),
    }


# ----------------------------------------------------------------------------- value


def normalized_gini(y_true: npt.ArrayLike, pred: npt.ArrayLike) -> float:
    """Gini of the ranking by ``pred`` over the actual values, divided by the Gini of the perfect ranking.

    With rows sorted by ``pred`` descending, the Gini is the mean gap between the cumulative share of
    actual value captured and the share of rows, ``(1/n) sum_i (L_i - i/n)``. 1 for a perfect ranking,
    about 0 for a random one, -1 for the reversed one. Ties in ``pred`` use average ranks (the
    expectation over random tie-breaking). For 0/1 actuals it equals ``2 AUC - 1``. NaN when the actual
    values sum to 0 or are all equal.
    """
    y, p = _pair(y_true, pred, "pred")
    perfect = _gini(y, y)
    if not np.isfinite(perfect) or perfect == 0:
        return float("nan")
    return _gini(y, p) / perfect


def _gini(y: FloatArray, score: FloatArray) -> float:
    n = len(y)
    total = y.sum()
    if total == 0:
        return float("nan")
    rank_desc = rankdata(-score, method="average")
    # sum_i L_i = sum_k y_k (n + 1 - rank_k) / total, by swapping the order of summation
    return float(((y * (n + 1 - rank_desc)).sum() / total - (n + 1) / 2) / n)


def value_deciles(y_true: npt.ArrayLike, pred: npt.ArrayLike, n_bins: int = 10) -> pd.DataFrame:
    """Decile calibration table of value predictions (currency).

    Rows are split into ``n_bins`` groups by predicted value, group 1 the highest; a row's group is
    ``ceil(n_bins * average_rank / n)``, so tied predictions stay in one group (groups may then be
    uneven or empty). Columns: ``decile``, ``n``, ``pred_mean``, ``actual_mean``, ``pred_sum``,
    ``actual_sum``, ``actual_share`` (share of all actual value in the group).
    """
    y, p = _pair(y_true, pred, "pred")
    n = len(y)
    rank_desc = rankdata(-p, method="average")
    group = np.clip(np.ceil(n_bins * rank_desc / n - 1e-9), 1, n_bins).astype(np.int64)
    frame = pd.DataFrame({"decile": group, "pred": p, "actual": y})
    agg = frame.groupby("decile").agg(
        n=("pred", "size"),
        pred_mean=("pred", "mean"),
        actual_mean=("actual", "mean"),
        pred_sum=("pred", "sum"),
        actual_sum=("actual", "sum"),
    )
    agg = agg.reindex(range(1, n_bins + 1))
    agg["n"] = agg["n"].fillna(0).astype(np.int64)
    agg[["pred_sum", "actual_sum"]] = agg[["pred_sum", "actual_sum"]].fillna(0.0)
    total = y.sum()
    agg["actual_share"] = agg["actual_sum"] / total if total != 0 else np.nan
    return agg.reset_index()


def value_metrics(y_true: npt.ArrayLike, pred: npt.ArrayLike) -> dict[str, float]:
    """Quality of value predictions ``pred`` against actual spend ``y_true`` (both currency, one horizon).

    Returns ``mae`` and ``rmse`` (currency), ``spearman`` (rank correlation; NaN if either side is
    constant), ``normalized_gini`` (see :func:`normalized_gini`), ``total_spend_error_pct``
    (``(sum pred - sum actual) / sum actual * 100``; NaN if the actual sum is 0),
    ``top_decile_capture`` (share of actual value in the top 10% by prediction, ties in expectation)
    and ``n``.
    """
    y, p = _pair(y_true, pred, "pred")
    err = p - y
    total = y.sum()
    constant = np.ptp(y) == 0 or np.ptp(p) == 0
    spearman = float("nan") if constant else float(spearmanr(y, p).statistic)
    top_capture = (
        _top_share_mean(y, p, 0.1) * max(1, math.ceil(0.1 * len(y))) / total if total != 0 else np.nan
    )
    return {
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "spearman": spearman,
        "normalized_gini": normalized_gini(y, p),
        "total_spend_error_pct": float((p.sum() - total) / total * 100.0) if total != 0 else float("nan"),
        "top_decile_capture": float(top_capture),
        "n": float(len(y)),
    }
