"""Delayed-label model health: what was predicted against what happened, once the horizon has passed.

Churn risk and predicted value are about the next H days, so their quality can only be measured H days
after a scoring. Given data up to ``label_end`` (the monitoring cutoff, or the end of the data if that is
earlier), every cutoff ``c`` with ``c + H <= label_end`` has realised outcomes:

- a **backtest** rescores the model at several such past cutoffs (every ``labels.cutoff_step_days``
  days, ending at ``label_end - H``) from the data itself: :func:`backtest_health`;
- **earlier scoring outputs** (``strata score --out`` directories) are read as they were served:
  :func:`scored_health`.

Labels come from :func:`features.labels.build_labels` (the same definition as training); metrics from
:func:`training.metrics.churn_metrics` and :func:`~training.metrics.value_metrics`, on the buyers (the
rows churn risk covers, as in the training backtest) and conversion metrics on the prospects.

A cutoff is **out of time** when it is after the latest cutoff the model was trained or validated on
(its label window then lies at least partly after the training data): only those measure how the model
does on the future. :func:`health_findings` compares the latest out-of-time cutoff with enough outcomes
(``monitoring.min_outcomes`` buyers) against the training backtest stored in the bundle: churn AUC
down by ``monitoring.auc_drop`` or more, churn expected calibration error at or above
``monitoring.calibration_error``, value normalized Gini down by ``monitoring.gini_drop`` or more, or
conversion AUC down by ``monitoring.auc_drop`` or more are breaches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.config import MonitoringConfig, StrataConfig
from features.errors import StrataError
from serving.retraining import Finding

if TYPE_CHECKING:
    from features.dataset import Dataset
    from training.bundle import ModelBundle

log = logging.getLogger(__name__)

#: Columns of a health trend table (one row per realised cutoff and source).
HEALTH_COLUMNS: list[str] = [
    "cutoff",
    "source",
    "model_version",
    "out_of_time",
    "n_buyers",
    "churn_rate",
    "mean_churn_risk",
    "churn_auc",
    "churn_ece",
    "churn_brier",
    "churn_lift_top_decile",
    "value_normalized_gini",
    "value_mae",
    "value_total_spend_error_pct",
    "n_prospects",
    "conversion_rate",
    "conversion_auc",
]

Progress = Callable[[str], None]


class HealthInputError(StrataError):
    """Scores or labels to compare are unusable (missing columns, no overlap)."""


def realised_cutoffs(label_end: pd.Timestamp, horizon_days: int, step_days: int, n: int) -> list[pd.Timestamp]:
    """The ``n`` latest cutoffs whose horizon has passed by ``label_end``, oldest first.

    They are ``label_end - H - k * step_days`` for ``k = n-1 .. 0`` (days), so the last one's label
    window ends exactly at ``label_end``.
    """
    last = label_end - pd.Timedelta(days=horizon_days)
    return [last - pd.Timedelta(days=step_days * k) for k in range(n - 1, -1, -1)]


def realised_labels(labels: pd.DataFrame, user_ids: pd.Series) -> pd.DataFrame:
    """Labels (``label_churn``, ``label_value``, ``label_convert``, as made by
    :func:`features.labels.build_labels`) of ``user_ids``, one row per given user in that order.

    Users the labels do not cover (unknown at the cutoff) are treated as no purchase: churned, zero
    spend, conversion unknown.
    """
    cols = ["label_churn", "label_value", "label_convert"]
    frame = pd.DataFrame({"user_id": user_ids.astype(str).to_numpy()})
    lab = labels.assign(user_id=labels["user_id"].astype(str)).drop_duplicates("user_id").set_index("user_id")
    for c in cols:
        frame[c] = frame["user_id"].map(lab[c]) if c in lab.columns else np.nan
    frame["label_churn"] = frame["label_churn"].fillna(1.0)
    frame["label_value"] = frame["label_value"].fillna(0.0)
    return frame


def outcome_metrics(scores: pd.DataFrame, labels: pd.DataFrame) -> dict[str, float]:
    """Realised quality of one scoring: scores (``user_id``, ``churn_risk``, ``conversion_prob``,
    ``predicted_value``) against labels (``user_id``, ``label_churn``, ``label_value``, ``label_convert``).

    Returns the numeric fields of :data:`HEALTH_COLUMNS` (probabilities 0..1, value error in shop
    currency and percent); NaN where a metric is undefined (no buyers, one class only...).
    """
    from training.metrics import churn_metrics, value_metrics

    for name, frame, need in (
        ("scores", scores, ("user_id", "churn_risk", "predicted_value")),
        ("labels", labels, ("user_id", "label_churn", "label_value")),
    ):
        missing = [c for c in need if c not in frame.columns]
        if missing:
            raise HealthInputError(f"{name}: missing column(s) {', '.join(missing)}")
    merged = scores.assign(user_id=scores["user_id"].astype(str)).merge(
        labels.assign(user_id=labels["user_id"].astype(str)), on="user_id", how="inner"
    )
    nan = float("nan")
    out: dict[str, float] = {c: nan for c in HEALTH_COLUMNS[4:]}
    buyers = merged["churn_risk"].notna().to_numpy()
    out["n_buyers"] = float(buyers.sum())
    if buyers.any():
        y = merged.loc[buyers, "label_churn"].to_numpy(dtype=float)
        p = merged.loc[buyers, "churn_risk"].to_numpy(dtype=float)
        m = churn_metrics(y, p)
        out.update(churn_rate=m["positive_rate"], mean_churn_risk=m["mean_pred"], churn_auc=m["auc"],
                   churn_ece=m["ece"], churn_brier=m["brier"], churn_lift_top_decile=m["lift_top_decile"])
        v = value_metrics(merged.loc[buyers, "label_value"].to_numpy(dtype=float),
                          merged.loc[buyers, "predicted_value"].to_numpy(dtype=float))
        out.update(value_normalized_gini=v["normalized_gini"], value_mae=v["mae"],
                   value_total_spend_error_pct=v["total_spend_error_pct"])
    if "conversion_prob" in merged.columns and "label_convert" in merged.columns:
        pro = (merged["conversion_prob"].notna() & merged["label_convert"].notna()).to_numpy()
        out["n_prospects"] = float(pro.sum())
        if pro.any():
            m = churn_metrics(merged.loc[pro, "label_convert"].to_numpy(dtype=float),
                              merged.loc[pro, "conversion_prob"].to_numpy(dtype=float))
            out.update(conversion_rate=m["positive_rate"], conversion_auc=m["auc"])
    else:
        out["n_prospects"] = 0.0
    return out


def _row(cutoff: pd.Timestamp, source: str, version: str, out_of_time: bool, metrics: Mapping[str, float]) -> dict[str, Any]:
    return {"cutoff": cutoff, "source": source, "model_version": version, "out_of_time": out_of_time, **metrics}


def health_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows of realised metrics as a :data:`HEALTH_COLUMNS` table sorted by cutoff (empty rows: an empty table)."""
    table = pd.DataFrame(rows, columns=HEALTH_COLUMNS)
    if table.empty:
        table["cutoff"] = pd.Series(dtype="datetime64[ns, UTC]")
        return table
    table["cutoff"] = pd.to_datetime(table["cutoff"], utc=True)
    for c in ("n_buyers", "n_prospects"):
        table[c] = table[c].fillna(0).astype("int64")
    return table.sort_values(["cutoff", "source"], kind="stable").reset_index(drop=True)


def _is_out_of_time(cutoff: pd.Timestamp, trained_until: pd.Timestamp | None) -> bool:
    return trained_until is None or cutoff > trained_until


def backtest_health(
    bundle: ModelBundle,
    dataset: Dataset,
    config: StrataConfig,
    cutoffs: Iterable[pd.Timestamp],
    *,
    model_version: str,
    trained_until: pd.Timestamp | None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Rescore the model at past ``cutoffs`` (horizon passed) and measure it on the realised outcomes.

    Parameters
    ----------
    bundle, dataset, config
        The model, the data (features as of each cutoff, outcomes after it) and the configuration.
    cutoffs
        Cutoffs whose label window ``(c, c + H]`` lies within the data (see :func:`realised_cutoffs`).
    model_version
        Written into the ``model_version`` column.
    trained_until
        The latest cutoff the model was trained or validated on (``out_of_time`` is ``cutoff > it``).

    Returns
    -------
    One row per cutoff with users, :data:`HEALTH_COLUMNS`, ``source = "backtest"``, oldest first.
    """
    from features.labels import labels_from_engine
    from features.pipeline import DuckDBEngine

    step = progress or (lambda _msg: None)
    rows = []
    with DuckDBEngine(dataset, config=config) as engine:
        for c in cutoffs:
            step(f"backtest as of {c.date()}")
            features = engine.features(c, config)
            if features.empty:
                log.info("backtest as of %s: no users known; skipped", c.date())
                continue
            scores = bundle.predict(features)
            labels = realised_labels(labels_from_engine(engine, c, config.labels.horizon_days), features["user_id"])
            rows.append(_row(c, "backtest", model_version, _is_out_of_time(c, trained_until),
                             outcome_metrics(scores, labels)))
    return health_table(rows)


def scored_health(
    scored: Iterable[pd.DataFrame],
    dataset: Dataset,
    config: StrataConfig,
    label_end: pd.Timestamp,
    *,
    trained_until: pd.Timestamp | None,
    progress: Progress | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Realised quality of earlier scoring outputs (``strata score`` tables), as they were served.

    Each output is split by its ``as_of`` (one cutoff per run, normally). A cutoff whose horizon has
    not passed by ``label_end`` is not measured; it is reported in the returned notes.

    Returns
    -------
    (one row per measured cutoff and model version with ``source = "scores"``, notes)
    """
    from features.labels import build_labels

    step = progress or (lambda _msg: None)
    horizon = pd.Timedelta(days=config.labels.horizon_days)
    rows, notes = [], []
    for frame in scored:
        missing = [c for c in ("user_id", "as_of", "model_version", "churn_risk", "predicted_value") if c not in frame.columns]
        if missing:
            raise HealthInputError(f"scoring output: missing column(s) {', '.join(missing)} (is it a `strata score` output?)")
        as_of = pd.to_datetime(frame["as_of"], utc=True)
        for (cutoff, version), part in frame.groupby([as_of, frame["model_version"].astype(str)], sort=True):
            c = pd.Timestamp(cutoff)  # type: ignore[arg-type]  # a group key of the as_of timestamps
            if c + horizon > label_end:
                notes.append(
                    f"scoring as of {c.date()} (model version {version}): outcomes complete on "
                    f"{(c + horizon).date()}, after {label_end.date()}; not measured yet"
                )
                continue
            step(f"outcomes of the scoring as of {c.date()}")
            labels = realised_labels(build_labels(dataset, c, config.labels.horizon_days, config), part["user_id"])
            rows.append(_row(c, "scores", str(version), _is_out_of_time(c, trained_until), outcome_metrics(part, labels)))
    return health_table(rows), notes


def health_findings(
    trend: pd.DataFrame,
    reference: Mapping[str, float],
    cfg: MonitoringConfig,
    model_version: str,
) -> tuple[list[Finding], str]:
    """Performance breaches of the latest out-of-time realised cutoff of ``model_version``.

    ``reference`` holds the training backtest metrics (the bundle's ``metrics``: ``churn_auc``,
    ``value_normalized_gini``, ``conversion_auc``). Returns the findings and a one-line status.
    """
    if trend.empty:
        return [], "no realised outcomes yet: no cutoff's horizon has passed within the data"
    own = trend[(trend["model_version"].astype(str) == str(model_version)) & trend["out_of_time"].astype(bool)]
    enough = own[own["n_buyers"] >= cfg.min_outcomes]
    if enough.empty:
        if own.empty:
            return [], "pending: no cutoff after the model's training cutoffs has realised outcomes yet"
        return [], (f"pending: realised cutoffs after training have fewer than {cfg.min_outcomes} buyers "
                    "(monitoring.min_outcomes)")
    # latest cutoff; at a tie prefer what was served (scores) over the backtest
    enough = enough.assign(_served=(enough["source"] == "scores").astype(int))
    row = enough.sort_values(["cutoff", "_served"]).iloc[-1]
    when = f"outcomes of {pd.Timestamp(row['cutoff']).date()} ({row['source']}, {int(row['n_buyers']):,} buyers)"
    findings: list[Finding] = []

    def drop(metric: str, label: str, threshold: float, n_col: str = "n_buyers") -> None:
        ref = reference.get(metric)
        now = row[metric]
        if ref is None or not np.isfinite(ref) or not np.isfinite(now) or row[n_col] < cfg.min_outcomes:
            return
        change = float(now) - float(ref)
        if -change >= threshold - 1e-12:
            findings.append(Finding("performance", metric, "alert", -change, threshold,
                                    f"{label} fell from {ref:.3f} at training to {now:.3f} on {when} "
                                    f"({change:+.3f}; threshold -{threshold:g})"))
        elif -change >= threshold / 2:
            findings.append(Finding("performance", metric, "warn", -change, threshold,
                                    f"{label} {ref:.3f} at training -> {now:.3f} on {when} ({change:+.3f})"))

    drop("churn_auc", "churn AUC", cfg.auc_drop)
    ece = float(row["churn_ece"])
    if np.isfinite(ece) and ece >= cfg.calibration_error - 1e-12:
        findings.append(Finding("performance", "churn_ece", "alert", ece, cfg.calibration_error,
                                f"churn risk calibration error {ece:.3f} on {when} (>= {cfg.calibration_error:g}): "
                                f"mean predicted risk {row['mean_churn_risk']:.1%} vs realised churn "
                                f"{row['churn_rate']:.1%}"))
    drop("value_normalized_gini", "value normalized Gini", cfg.gini_drop)
    drop("conversion_auc", "conversion AUC", cfg.auc_drop, n_col="n_prospects")
    alerts = sum(f.severity == "alert" for f in findings)
    status = (f"{alerts} performance breach(es) on {when}" if alerts
              else f"healthy on {when}: churn AUC {row['churn_auc']:.3f}, calibration error {ece:.3f}")
    return findings, status


__all__ = [
    "HEALTH_COLUMNS",
    "HealthInputError",
    "backtest_health",
    "health_findings",
    "health_table",
    "outcome_metrics",
    "realised_cutoffs",
    "realised_labels",
    "scored_health",
]
