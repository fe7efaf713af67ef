"""One monitoring run (``strata monitor``): drift since training, realised model health, retraining advice.

:func:`run_monitor` composes the parts:

1. features of every user as of ``as_of`` and the model's scores for them;
2. drift of every feature and score against the reference the bundle stored at training time
   (:mod:`serving.drift`: PSI, KS / chi-square, missing and range checks);
3. layer shares now against the reference population's (stored in the bundle; for bundles without
   them, against the same data ``monitoring.previous_days`` earlier), with the training configuration's
   layer thresholds and the frozen RFM thresholds, so that a configuration change is not read as drift;
4. realised performance at past cutoffs whose horizon has passed, by rescoring (a backtest) and from
   earlier scoring outputs (:mod:`serving.model_health`);
5. findings and the retraining recommendation (:mod:`serving.retraining`).

The breach rules are documented in :mod:`serving.drift` and :mod:`serving.model_health`; a run is
*breached* when any finding is an ``alert``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.config import ConfigError, MonitoringConfig, StrataConfig, config_from_dict
from features.cutoffs import parse_as_of
from serving.drift import feature_drift, layer_shares, layer_shift, score_drift
from serving.model_health import (
    backtest_health,
    health_findings,
    health_table,
    realised_cutoffs,
    scored_health,
)
from serving.retraining import Finding, Recommendation, drift_findings, layer_findings, recommend_retraining

if TYPE_CHECKING:
    from features.dataset import Dataset
    from training.bundle import ModelBundle

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

#: Training backtest metrics the realised ones are compared with (from the bundle's ``metrics``).
REFERENCE_METRICS: tuple[str, ...] = ("churn_auc", "churn_ece", "value_normalized_gini", "conversion_auc")
LAYER_DIMENSIONS: tuple[str, ...] = ("lifecycle", "rfm_segment", "value_tier", "activity_tier")


@dataclass
class MonitorResult:
    """Everything a monitoring run found (see the module docstring).

    Tables: ``feature_drift`` and ``score_drift`` (:data:`serving.drift.DRIFT_COLUMNS`, worst first),
    ``layer_shift`` (:data:`serving.drift.LAYER_SHIFT_COLUMNS`), ``health`` (realised performance per
    past cutoff, :data:`serving.model_health.HEALTH_COLUMNS`, oldest first).
    """

    as_of: pd.Timestamp
    model: dict[str, Any]
    n_users: int
    feature_drift: pd.DataFrame
    score_drift: pd.DataFrame
    layer_shift: pd.DataFrame
    layer_baseline: str
    health: pd.DataFrame
    health_reference: dict[str, float]
    health_status: str
    label_end: pd.Timestamp
    findings: list[Finding]
    recommendation: Recommendation
    thresholds: MonitoringConfig = field(default_factory=MonitoringConfig)
    """The thresholds the run used (``config.monitoring``)."""
    notes: list[str] = field(default_factory=list)

    @property
    def breached(self) -> bool:
        """True when any threshold was crossed (an ``alert`` finding)."""
        return any(f.severity == "alert" for f in self.findings)

    def drifted_features(self) -> list[str]:
        """Names of the features in ``alert``, worst first."""
        return self.feature_drift.loc[self.feature_drift["status"] == "alert", "name"].tolist()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary (NaN as null, timestamps as ISO strings)."""
        fd = self.feature_drift
        return _jsonable(
            {
                "status": "breach" if self.breached else "ok",
                "breached": self.breached,
                "as_of": self.as_of,
                "model": self.model,
                "n_users": self.n_users,
                "drift": {
                    "features_checked": len(fd),
                    "features_alert": int((fd["status"] == "alert").sum()),
                    "features_warn": int((fd["status"] == "warn").sum()),
                    "drifted_features": self.drifted_features(),
                    "features": _records(fd),
                    "scores": _records(self.score_drift),
                },
                "layers": {"baseline": self.layer_baseline, "shares": _records(self.layer_shift)},
                "health": {
                    "label_end": self.label_end,
                    "status": self.health_status,
                    "training_reference": self.health_reference,
                    "trend": _records(self.health),
                },
                "findings": [f.to_dict() for f in self.findings],
                "recommendation": self.recommendation.to_dict(),
                "thresholds": self.thresholds.model_dump(mode="json"),
                "notes": self.notes,
            }
        )


def _records(table: pd.DataFrame) -> list[dict[str, Any]]:
    return [dict(zip(table.columns, row, strict=True)) for row in table.itertuples(index=False)]


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, pd.Timestamp):
        return obj.isoformat()
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(float(obj)) else None
    if obj is None or isinstance(obj, str):
        return obj
    if obj is pd.NaT:
        return None
    return str(obj)


def _timestamp(value: Any) -> pd.Timestamp | None:
    if value in (None, ""):
        return None
    try:
        return parse_as_of(value)
    except Exception:  # a malformed fingerprint only loses the out-of-time flag
        return None


def _layer_config(bundle: ModelBundle, config: StrataConfig) -> tuple[StrataConfig, str | None]:
    """The configuration the bundle was trained with (layer thresholds), or ``config`` with a note."""
    try:
        return config_from_dict(dict(bundle.config), source="model bundle config"), None
    except ConfigError as err:
        return config, f"layer shares use the current layer thresholds (the bundle's configuration is unreadable: {err})"


def _layers(features: pd.DataFrame, bundle: ModelBundle, layer_config: StrataConfig) -> pd.DataFrame:
    from features.layers import assign_layers
    from features.rfm_segments import RfmThresholds

    frozen = bundle.rfm_thresholds or {}
    th = None
    if {"recency_days", "frequency_orders", "monetary_spend"} <= set(frozen):
        th = RfmThresholds(mode="quantile", recency_days=float(frozen["recency_days"]),
                           frequency_orders=float(frozen["frequency_orders"]),
                           monetary_spend=float(frozen["monetary_spend"]), strict=bool(frozen.get("strict", True)))
    return assign_layers(features, layer_config, thresholds=th)


def data_end(dataset: Dataset) -> pd.Timestamp:
    """The day boundary at or after the last order or event (UTC): outcomes are known up to it."""
    from training.train import last_timestamp

    return last_timestamp(dataset).ceil("D")


def run_monitor(
    bundle: ModelBundle,
    dataset: Dataset,
    as_of: pd.Timestamp | str,
    config: StrataConfig,
    *,
    model_name: str,
    model_version: str,
    model_alias: str | None = None,
    scored: Iterable[pd.DataFrame] = (),
    backtest_cutoffs: int | None = None,
    progress: Progress | None = None,
) -> MonitorResult:
    """Monitor a model on the current data: drift, layer shares, realised health and the recommendation.

    Parameters
    ----------
    bundle
        The model bundle (with its training reference distributions and backtest metrics).
    dataset
        Validated input data; features are taken as of ``as_of``, outcomes up to ``as_of`` or the end
        of the data, whichever is earlier.
    as_of
        The monitoring cutoff (UTC).
    config
        Configuration (``monitoring`` thresholds, ``labels`` horizon and step, features).
    model_name, model_version, model_alias
        Identity of the model, reported and used to pick the realised rows of this version.
    scored
        Earlier scoring outputs (``serving.batch.read_scores`` frames) to measure on realised outcomes.
    backtest_cutoffs
        Past cutoffs to rescore (default ``config.monitoring.backtest_cutoffs``; 0: none).
    progress
        Callback receiving a short description of each step.
    """
    from features.pipeline import DuckDBEngine

    step = progress or (lambda _msg: None)
    cfg = config.monitoring
    as_of = parse_as_of(as_of)
    horizon = int(bundle.horizon_days)
    if horizon != config.labels.horizon_days:
        config = config.model_copy(update={"labels": config.labels.model_copy(update={"horizon_days": horizon})})
    notes: list[str] = []
    fp = bundle.data_fingerprint or {}
    trained_until = _timestamp(fp.get("latest_cutoff"))
    layer_config, note = _layer_config(bundle, config)
    if note:
        notes.append(note)

    with DuckDBEngine(dataset, config=config) as engine:
        step(f"features as of {as_of.date()}")
        features = engine.features(as_of, config)
        if features.empty:
            from features.errors import InsufficientDataError

            raise InsufficientDataError(f"no users known as of {as_of.isoformat()}: nothing to monitor")
        step("scores")
        scores = bundle.predict(features)
        step("drift")
        elapsed = (as_of - trained_until) / pd.Timedelta(days=1) if trained_until is not None else 0.0
        fdrift = feature_drift(bundle.reference, features, cfg, elapsed_days=max(0.0, elapsed))
        sdrift = score_drift(bundle.reference, scores, cfg)
        current_layers = _layers(features, bundle, layer_config)
        ref_layers = bundle.reference.get("layers")
        if ref_layers:
            baseline = "training reference" + (f" as of {trained_until.date()}" if trained_until is not None else "")
            reference_shares = {d: ref_layers[d] for d in LAYER_DIMENSIONS if d in ref_layers}
            n_reference = bundle.reference.get("layers_n")
        else:
            previous = as_of - pd.Timedelta(days=cfg.previous_days)
            step(f"layers as of {previous.date()}")
            baseline = f"as of {previous.date()}"
            notes.append(f"the model bundle stores no layer shares: layer shares compare with {baseline}")
            previous_features = engine.features(previous, config)
            n_reference = len(previous_features)
            reference_shares = layer_shares(_layers(previous_features, bundle, layer_config), LAYER_DIMENSIONS)
        lshift = layer_shift(reference_shares, layer_shares(current_layers, LAYER_DIMENSIONS), cfg,
                             n_reference=n_reference, n_current=len(features))

    end = min(as_of, data_end(dataset))
    if end < as_of:
        notes.append(f"the data ends on {end.date()}, before --as-of: outcomes are measured up to {end.date()}")
    n_back = cfg.backtest_cutoffs if backtest_cutoffs is None else int(backtest_cutoffs)
    cutoffs = realised_cutoffs(end, horizon, config.labels.cutoff_step_days, n_back) if n_back > 0 else []
    trend_parts = []
    if cutoffs:
        trend_parts.append(backtest_health(bundle, dataset, config, cutoffs, model_version=str(model_version),
                                           trained_until=trained_until, progress=step))
    scored = list(scored)
    if scored:
        table, pending = scored_health(scored, dataset, config, end, trained_until=trained_until, progress=step)
        trend_parts.append(table)
        notes.extend(pending)
    non_empty = [t for t in trend_parts if not t.empty]
    if non_empty:
        health = pd.concat(non_empty, ignore_index=True).sort_values(["cutoff", "source"], kind="stable").reset_index(drop=True)
    else:
        health = health_table([])
    reference_metrics = {k: float(bundle.metrics[k]) for k in REFERENCE_METRICS if k in bundle.metrics}
    perf, status = health_findings(health, reference_metrics, cfg, str(model_version))

    findings = [
        *perf,
        *drift_findings(fdrift, "feature_drift", cfg.psi_warn, cfg.psi_alert),
        *drift_findings(sdrift, "score_drift", cfg.psi_warn, cfg.psi_alert),
        *layer_findings(lshift, cfg.layer_share_shift, baseline),
    ]
    model = {
        "name": model_name,
        "version": str(model_version),
        "alias": model_alias,
        "trained_at": bundle.trained_at,
        "horizon_days": horizon,
        "reference_cutoff": trained_until,
        "training_end": _timestamp(fp.get("end")),
    }
    return MonitorResult(
        as_of=as_of,
        model=model,
        n_users=len(features),
        feature_drift=fdrift,
        score_drift=sdrift,
        layer_shift=lshift,
        layer_baseline=baseline,
        health=health,
        health_reference=reference_metrics,
        health_status=status,
        label_end=end,
        findings=findings,
        recommendation=recommend_retraining(findings),
        thresholds=cfg,
        notes=notes,
    )


__all__ = ["MonitorResult", "REFERENCE_METRICS", "data_end", "run_monitor"]
