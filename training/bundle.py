"""The model bundle: everything scoring needs, in one directory (LightGBM model text + JSON).

A :class:`ModelBundle` carries the configuration snapshot it was trained with, the feature list and
order, the categorical levels, the churn model and its calibrator, the optional prospect-conversion
model and its calibrator, the value model with its p10/p90 band, the horizon, when and on what data it
was trained, and reference distributions of features and scores (for drift monitoring).

Saved as ``bundle.json`` plus one ``*.lgb.txt`` LightGBM model file per booster: no pickle, so a bundle
loads in any process with this package, and a human can read what it holds.

Reference distributions (``reference``): for each numeric feature and each score, quantile bin
``edges`` (interior edges, ascending and distinct; the bins are ``(-inf, e0], (e0, e1], ...,
(e_last, inf)``), the ``proportions`` of non-missing reference values in each bin, and the
``missing_share``. Categorical features hold ``levels`` with their shares. Use
:func:`bin_proportions` to bin new values the same way. Numeric distributions also hold ``quantiles``
(:data:`REFERENCE_QUANTILES` mid-point quantiles, for KS tests) and ``min``/``max`` (range checks);
``layers`` holds the share of each rule layer per dimension (set by
:meth:`ModelBundle.freeze_layer_thresholds`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

from features.errors import ModelNotFoundError, StrataError
from training.models import (
    PROSPECT_COLUMN,
    UNKNOWN_LEVEL,
    CalibratedBoostedClassifier,
    FeatureMismatchError,
    FutureValueModel,
    ReasonMethod,
    cached_for_models,
    to_model_matrix,
    to_numeric_model_matrix,
)

log = logging.getLogger(__name__)

BUNDLE_FILE = "bundle.json"
FORMAT_VERSION = 1
SCORE_COLUMNS: tuple[str, ...] = ("churn_risk", "conversion_prob", "predicted_value", "value_p10", "value_p90")
#: Mid-point quantiles stored per numeric reference distribution (for KS tests in monitoring).
REFERENCE_QUANTILES = 100


# ----------------------------------------------------------------------------- reference distributions


def bin_proportions(values: np.ndarray | pd.Series, edges: list[float]) -> tuple[list[float], float]:
    """Share of the non-missing ``values`` in each bin of ``edges``, and the share of missing values.

    Bins are ``(-inf, edges[0]], (edges[0], edges[1]], ..., (edges[-1], inf)``: ``len(edges) + 1`` bins.
    Proportions are all 0 when every value is missing.
    """
    v = np.asarray(values, dtype=float)
    n = len(v)
    finite = v[~np.isnan(v)]
    missing_share = float((n - len(finite)) / n) if n else 0.0
    counts = np.bincount(np.searchsorted(np.asarray(edges, dtype=float), finite, side="left"), minlength=len(edges) + 1)
    total = counts.sum()
    props = (counts / total).tolist() if total else [0.0] * (len(edges) + 1)
    return [float(p) for p in props], missing_share


def reference_distribution(values: np.ndarray | pd.Series, n_bins: int = 10) -> dict[str, Any]:
    """Quantile bin edges (up to ``n_bins`` bins) of ``values``, their proportions and the missing share."""
    v = np.asarray(values, dtype=float)
    finite = v[~np.isnan(v)]
    if len(finite):
        qs = np.quantile(finite, np.linspace(0, 1, n_bins + 1)[1:-1])
        edges = sorted({float(q) for q in qs})
    else:
        edges = []
    props, missing = bin_proportions(v, edges)
    # Mid-point quantiles (a pseudo-sample whose ECDF is within 1/REFERENCE_QUANTILES of the reference's)
    # and the range: what monitoring needs for KS tests and range checks (serving.drift).
    levels = (np.arange(REFERENCE_QUANTILES) + 0.5) / REFERENCE_QUANTILES
    quantiles = np.quantile(finite, levels, method="inverted_cdf").tolist() if len(finite) else []
    return {
        "edges": edges,
        "proportions": props,
        "missing_share": missing,
        "n": int(len(v)),
        "quantiles": [float(q) for q in quantiles],
        "min": float(finite.min()) if len(finite) else None,
        "max": float(finite.max()) if len(finite) else None,
    }


def reference_distributions(
    features: pd.DataFrame,
    scores: pd.DataFrame,
    feature_names: list[str],
    categorical: dict[str, list[str]],
    n_bins: int = 10,
) -> dict[str, dict[str, Any]]:
    """Reference distributions of ``feature_names`` in ``features`` and of the score columns of ``scores``."""
    feats: dict[str, Any] = {}
    for f in feature_names:
        if f in categorical:
            vals = features[f].astype(object).where(features[f].notna(), UNKNOWN_LEVEL).astype(str)
            shares = vals.value_counts(normalize=True)
            feats[f] = {"levels": {str(k): float(v) for k, v in shares.items()}, "n": int(len(vals))}
        else:
            feats[f] = reference_distribution(pd.to_numeric(features[f], errors="coerce").to_numpy(dtype=float), n_bins)
    sc: dict[str, Any] = {}
    for c in SCORE_COLUMNS:
        if c in scores.columns:
            sc[c] = reference_distribution(scores[c].to_numpy(dtype=float), n_bins)
    return {"features": feats, "scores": sc}


# ----------------------------------------------------------------------------- bundle


class BundleFormatError(StrataError):
    """A bundle directory is missing files or was written by an incompatible version."""


@dataclass
class ExplainedPrediction:
    """Scores of a feature table and the contributions behind its churn and conversion scores.

    Contributions are float64 arrays with columns ``feature_names + ["bias"]`` (log-odds of the
    booster, before calibration), one row per True entry of the matching row mask, in input order;
    None when no row has that score.
    """

    scores: pd.DataFrame
    """As :meth:`ModelBundle.predict`."""
    feature_names: list[str]
    churn_rows: np.ndarray
    """Boolean mask of the input rows scored by the churn model (buyers)."""
    churn_contributions: np.ndarray | None
    conversion_rows: np.ndarray
    """Boolean mask of the input rows scored by the conversion model (prospects, if there is one)."""
    conversion_contributions: np.ndarray | None


@dataclass
class ModelBundle:
    """Trained models plus the preprocessing and metadata that scoring needs.

    Attributes
    ----------
    config : the :class:`features.config.StrataConfig` snapshot (``model_dump`` dict) used in training.
    feature_names : model features in order.
    categorical_levels : training levels per categorical feature (always containing ``"unknown"``).
    churn_model : calibrated churn classifier (buyers); its ``calibrator_`` maps log-odds to P(churn).
    value_model : expected spend in the next ``horizon_days`` days with a p10/p90 band.
    conversion_model : calibrated P(first purchase within the horizon) for prospects, or None.
    horizon_days : prediction horizon H (days).
    trained_at : ISO timestamp (UTC) of training.
    data_fingerprint : training end, cutoffs, row counts and a hash of the input data.
    reference : reference distributions of features and scores (see the module docstring).
    metrics : backtest metrics at training time (latest cutoff, evaluation half).
    rfm_thresholds : RFM thresholds frozen at training (``recency_days``, ``frequency_orders``,
        ``monetary_spend``, ``strict``; the medians of the buyers at the latest cutoff), so that scoring
        does not take them from the batch being scored; set by :meth:`freeze_layer_thresholds`.
    high_potential_value : predicted value (currency) at ``refinement.high_potential_value_quantile``
        among the ``new`` buyers at the latest cutoff (the ``high_potential_new`` threshold), or None.
    """

    config: dict[str, Any]
    feature_names: list[str]
    categorical_levels: dict[str, list[str]]
    churn_model: CalibratedBoostedClassifier
    value_model: FutureValueModel
    conversion_model: CalibratedBoostedClassifier | None
    horizon_days: int
    trained_at: str
    data_fingerprint: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    rfm_thresholds: dict[str, Any] = field(default_factory=dict)
    high_potential_value: float | None = None

    def freeze_layer_thresholds(self, features: pd.DataFrame, config: Any) -> None:
        """Freeze the population thresholds scoring needs, from the feature table of the latest cutoff.

        Sets :attr:`rfm_thresholds` (medians of that population's buyers) and
        :attr:`high_potential_value` (quantile ``config.refinement.high_potential_value_quantile`` of
        the predicted value of its ``new`` buyers; +inf if it has none). ``config`` is a StrataConfig.
        """
        from features.lifecycle import assign_lifecycle
        from features.rfm_segments import rfm_thresholds

        th = rfm_thresholds(features, config.layers.rfm.model_copy(update={"mode": "quantile"}))
        self.rfm_thresholds = {
            "recency_days": th.recency_days,
            "frequency_orders": th.frequency_orders,
            "monetary_spend": th.monetary_spend,
            "strict": th.strict,
        }
        new = (assign_lifecycle(features, config.layers.lifecycle) == "new").to_numpy()
        # Layer shares of the reference population, for layer-share drift in monitoring (serving.drift).
        from features.layers import assign_layers

        layers = assign_layers(features, config, thresholds=th)
        self.reference["layers"] = {
            dim: {str(k): float(v) for k, v in layers[dim].value_counts(normalize=True).items()}
            for dim in ("lifecycle", "rfm_segment", "value_tier", "activity_tier")
        }
        self.reference["layers_n"] = int(len(layers))
        if new.any():
            value = self.predict(features.loc[new])["predicted_value"].to_numpy(dtype=float)
            self.high_potential_value = float(np.quantile(value, config.refinement.high_potential_value_quantile))
        else:
            self.high_potential_value = float("inf")

    # -- preprocessing

    def model_matrix(self, features: pd.DataFrame, source: str = "features") -> pd.DataFrame:
        """The model input for a feature table (see :func:`training.models.to_model_matrix`)."""
        return to_model_matrix(features, self.feature_names, self.categorical_levels, source=source)

    def numeric_model_matrix(self, features: pd.DataFrame, source: str = "features") -> np.ndarray | pd.DataFrame:
        """The model input as the float64 matrix LightGBM predicts from, built once for every model.

        :meth:`model_matrix` with its categoricals replaced by their level codes, built without the
        pandas frame (:func:`training.models.to_numeric_model_matrix`): ``(n, len(feature_names))``,
        C-contiguous; what :func:`training.compiled_trees.lightgbm_matrix` makes of :meth:`model_matrix`.
        If a booster was trained on other categorical levels than the bundle's (a hand-assembled
        bundle), the pandas matrix is returned instead and each model codes it for its booster.
        """
        if not self._boosters_share_levels():
            return self.model_matrix(features, source=source)
        return to_numeric_model_matrix(features, self.feature_names, self.categorical_levels, source=source)

    def _bundle_categorical(self) -> list[list[str]]:
        return [list(self.categorical_levels[f]) for f in self.feature_names if f in self.categorical_levels]

    def set_tree_engine(self, engine: str) -> None:
        """``"compiled"`` (numba kernels, :mod:`training.compiled_trees`) or ``"lightgbm"``: what evaluates
        every model of the bundle from now on (``scoring.tree_engine``; the numbers are the same)."""
        if engine not in ("compiled", "lightgbm"):
            raise ValueError(f"tree engine must be 'compiled' or 'lightgbm' (got {engine!r})")
        value = self.value_model
        models = [self.churn_model, self.conversion_model, value.q_low_, value.q_high_,
                  *(p for k, p in value.parts_.items() if k != "smearing")]
        for model in models:
            if model is not None and hasattr(model, "booster_"):
                model.use_compiled_trees = engine == "compiled"

    def boosters(self) -> list[Any]:
        """Every LightGBM booster of the bundle (churn, conversion, value parts, p10/p90 models)."""
        value = self.value_model
        out = [self.churn_model.booster_, value.q_low_.booster_, value.q_high_.booster_]
        out += [p.booster_ for k, p in value.parts_.items() if k != "smearing"]
        if self.conversion_model is not None:
            out.append(self.conversion_model.booster_)
        return out

    def _boosters_share_levels(self) -> bool:
        """Do all boosters code categoricals by the bundle's levels? (checked once per set of boosters)"""
        boosters = self.boosters()
        cached = getattr(self, "_levels_check", None)
        if cached is not None and len(cached[0]) == len(boosters) and all(
            a is b for a, b in zip(cached[0], boosters, strict=True)
        ):
            return bool(cached[1])
        want = self._bundle_categorical()
        same = all(list(getattr(b, "pandas_categorical", None) or []) == want for b in boosters)
        if not same:
            log.info("a booster's categorical levels differ from the bundle's: each model codes its own input")
        self._levels_check = (boosters, same)
        return same

    @property
    def churn_calibrator(self) -> Any:
        return self.churn_model.calibrator_

    @property
    def conversion_calibrator(self) -> Any:
        return None if self.conversion_model is None else self.conversion_model.calibrator_

    @staticmethod
    def _prospect_mask(features: pd.DataFrame) -> np.ndarray:
        if PROSPECT_COLUMN not in features.columns:
            raise FeatureMismatchError(f"features: missing column {PROSPECT_COLUMN} (1.0 for prospects, 0.0 for buyers)")
        return pd.to_numeric(features[PROSPECT_COLUMN], errors="coerce").fillna(0.0).to_numpy() >= 0.5

    # -- scores

    def predict(self, features: pd.DataFrame) -> pd.DataFrame:
        """Scores per row of a feature table (one row per user, as made by ``build_features``).

        Returns
        -------
        DataFrame with ``user_id``, ``churn_risk`` (P(no purchase in the next H days); NaN for
        prospects), ``conversion_prob`` (P(first purchase in the next H days); NaN for buyers or without
        a conversion model), ``predicted_value`` (expected net spend in the next H days, currency, for
        everyone), ``value_p10`` and ``value_p90`` (80% band of that spend). Rows in input order.
        """
        return self._predict(features, None).scores

    def predict_explained(self, features: pd.DataFrame, method: ReasonMethod = "path") -> ExplainedPrediction:
        """:meth:`predict` plus the per-feature contributions behind the churn and conversion scores.

        With ``method="path"`` the churn (conversion) probability and its contributions come from the
        same pass over the trees: one walk of the compiled trees (``scoring.tree_engine = "compiled"``,
        see :meth:`predict_matrix`), else one LightGBM ``pred_leaf`` pass (see
        :meth:`CalibratedBoostedClassifier.raw_score_and_contributions`); ``"shap"`` adds LightGBM's
        ``pred_contrib`` pass. The scores are identical to :meth:`predict` with either method.
        """
        return self._predict(features, method)

    def _predict(self, features: pd.DataFrame, method: ReasonMethod | None) -> ExplainedPrediction:
        if "user_id" not in features.columns:
            raise FeatureMismatchError("features: missing column user_id")
        # Built once: every model reads the same float64 matrix (compiled trees or LightGBM).
        X = self.numeric_model_matrix(features)
        prospect = self._prospect_mask(features)
        scores, contrib = self.predict_matrix(X, prospect, method)
        n = len(X)
        buyers = ~prospect
        has_conv = prospect & (self.conversion_model is not None)
        return ExplainedPrediction(
            scores=pd.DataFrame({"user_id": features["user_id"].astype(str).to_numpy(), **scores}),
            feature_names=list(self.feature_names),
            churn_rows=buyers if contrib["churn"] is not None else np.zeros(n, dtype=bool),
            churn_contributions=contrib["churn"],
            conversion_rows=has_conv if contrib["conversion"] is not None else np.zeros(n, dtype=bool),
            conversion_contributions=contrib["conversion"],
        )

    def predict_matrix(
        self, X: np.ndarray | pd.DataFrame, prospect: np.ndarray, method: ReasonMethod | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray | None]]:
        """Every score of the rows of a model matrix, and the contributions behind churn and conversion.

        ``X``: :meth:`numeric_model_matrix` (or :meth:`model_matrix`); ``prospect``: bool per row (True:
        prospect, scored by the conversion model; False: buyer, scored by the churn model); ``method``:
        None (no contributions), ``"path"`` or ``"shap"`` (see :meth:`predict_explained`).

        Returns the :data:`SCORE_COLUMNS` arrays (as :meth:`predict`) and the contributions
        ``{"churn": ..., "conversion": ...}`` (rows of the buyers / prospects in input order; None when
        not computed). With compiled trees for every booster (``scoring.tree_engine = "compiled"``)
        buyers and prospects are each scored in one walk of all their boosters
        (:func:`training.compiled_trees.predict_group`); else each model predicts on its own. The
        numbers are the same either way.
        """
        n = len(X)
        churn = np.full(n, np.nan)
        conv = np.full(n, np.nan)
        buyers = ~prospect
        has_conv = prospect & (self.conversion_model is not None)
        contrib: dict[str, np.ndarray | None] = {"churn": None, "conversion": None}
        groups = self._compiled_groups() if isinstance(X, np.ndarray) and n and method in (None, "path") else None
        if groups is not None:
            assert isinstance(X, np.ndarray)
            value, p10, p90 = self._fused_scores(X, prospect, method, groups, churn, conv, contrib)
        for key, model, mask, out in (
            ("churn", self.churn_model, buyers, churn),
            ("conversion", self.conversion_model, has_conv, conv),
        ):
            if groups is not None or model is None or not mask.any():
                continue
            # The float64 matrix is scored in place (row numbers; no copy of the selected rows).
            rows = None if mask.all() else np.flatnonzero(mask)
            Xm = X if rows is None or isinstance(X, np.ndarray) else X.loc[mask]
            at = rows if Xm is X else None
            if method is None:
                out[mask] = model.predict_proba(Xm, at)[:, 1]
            else:
                raw, contrib[key] = model.raw_score_and_contributions(Xm, method, at)
                out[mask] = model.proba_from_raw(raw)
        if groups is None:
            value = self.value_model.predict(X) if n else np.zeros(0)
            p10, p90 = self.value_model.predict_interval(X) if n else (np.zeros(0), np.zeros(0))
        scores = {"churn_risk": churn, "conversion_prob": conv, "predicted_value": value, "value_p10": p10,
                  "value_p90": p90}
        return scores, contrib

    def has_fused_trees(self) -> bool:
        """True when :meth:`predict_matrix` scores each row in one walk of the compiled trees (every
        booster compiled: ``scoring.tree_engine = "compiled"`` and models the kernels cover)."""
        return self._compiled_groups() is not None

    def _compiled_groups(self) -> dict[str, Any] | None:
        """With compiled trees for every booster: the forest groups of :meth:`_fused_scores`, else None.

        ``"buyers"``: churn then the value model's boosters (:meth:`FutureValueModel.boosted_parts`);
        ``"prospects"``: conversion (if the bundle has it) then the same value boosters; ``"value"``: the
        value boosters' compiled forests (for their output transforms). Built once per
        set of compiled forests (cached here; rebuilt when the tree engine or a model changes).
        """
        models = [self.churn_model, self.conversion_model, *self.value_model.boosted_parts()]
        return cached_for_models(self, models, lambda: self._build_groups(models))

    def _build_groups(self, models: list[Any]) -> dict[str, Any] | None:
        forests = tuple(None if m is None else m.compiled_trees() for m in models)
        # Else LightGBM: the engine, or a model the compiled trees do not cover (logged once by the model).
        if forests[0] is None or any(f is None for f in forests[2:]) or (
                self.conversion_model is not None and forests[1] is None):
            return None
        from training.compiled_trees import compile_group

        value = [f for f in forests[2:] if f is not None]
        return {"buyers": compile_group([forests[0], *value]),
                "prospects": compile_group(value if forests[1] is None else [forests[1], *value]),
                "value": value}

    def _fused_scores(
        self, X: np.ndarray, prospect: np.ndarray, method: ReasonMethod | None, groups: dict[str, Any],
        churn: np.ndarray, conv: np.ndarray, contrib: dict[str, np.ndarray | None],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every score from one walk per row of the compiled trees (:func:`training.compiled_trees.predict_group`).

        Buyers: churn and the value boosters; prospects: conversion (if any) and the value boosters.
        Fills ``churn``, ``conv`` and ``contrib`` (``method="path"``) in place as the per-model route
        does and returns ``(value, p10, p90)``; every number is the one the per-model route computes
        (same raw sums, then the same calibrators, transforms and value composition, on the same arrays).
        """
        from training.compiled_trees import group_raw_and_contributions, predict_group

        parts = self.value_model.boosted_parts()
        n = len(X)
        outputs = np.empty((len(parts), n))
        for key, model, mask, out in (("buyers", self.churn_model, ~prospect, churn),
                                      ("prospects", self.conversion_model, prospect, conv)):
            if not mask.any():
                continue
            rows = None if mask.all() else np.flatnonzero(mask)
            group = groups[key]
            if model is not None and method == "path":
                raw, contrib["churn" if key == "buyers" else "conversion"] = group_raw_and_contributions(
                    group, model.path_tables(), X, rows)
            else:
                raw = predict_group(group, X, rows, raw_score=True)
            first = 0
            if model is not None:
                out[mask] = model.proba_from_raw(raw[0])
                first = 1
            if rows is None:
                outputs[:] = raw[first:]
            else:
                outputs[:, rows] = raw[first:]
        return self.value_model.predict_from_raw(outputs, groups["value"])

    def raw_churn_score(self, features: pd.DataFrame) -> np.ndarray:
        """Uncalibrated churn score (log-odds of the booster) per row, for every row given."""
        return self.churn_model.raw_score(self.model_matrix(features))

    def churn_contributions(self, features: pd.DataFrame, method: ReasonMethod = "path") -> pd.DataFrame:
        """Per-feature contributions to the raw churn score (log-odds), columns ``feature_names + ['bias']``.

        Each row sums to :meth:`raw_churn_score` of that row up to float rounding; positive values push
        churn risk up. ``method``: ``"path"`` (Saabas path credits) or ``"shap"`` (LightGBM TreeSHAP);
        see :meth:`CalibratedBoostedClassifier.raw_score_and_contributions`. The index is that of ``features``.
        """
        return self.churn_model.contributions(self.model_matrix(features), method)

    # -- persistence

    def save(self, directory: str | Path) -> Path:
        """Write the bundle into ``directory`` (created if needed); returns the directory."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        check_is_fitted(self.churn_model, "booster_")
        state = {
            "format_version": FORMAT_VERSION,
            "config": self.config,
            "feature_names": self.feature_names,
            "categorical_levels": self.categorical_levels,
            "horizon_days": self.horizon_days,
            "trained_at": self.trained_at,
            "data_fingerprint": self.data_fingerprint,
            "reference": self.reference,
            "metrics": self.metrics,
            "rfm_thresholds": self.rfm_thresholds,
            "high_potential_value": self.high_potential_value,
            "models": {
                "churn": self.churn_model.to_state(d, "churn"),
                "value": self.value_model.to_state(d, "value"),
                "conversion": None if self.conversion_model is None else self.conversion_model.to_state(d, "conversion"),
            },
        }
        (d / BUNDLE_FILE).write_text(json.dumps(_jsonable(state), indent=1, allow_nan=True), encoding="utf-8")
        return d

    @classmethod
    def load(cls, directory: str | Path) -> ModelBundle:
        """Read a bundle written by :meth:`save`."""
        d = Path(directory)
        file = d / BUNDLE_FILE
        if not file.exists():
            raise ModelNotFoundError(f"{file}: no model bundle here")
        try:
            state = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise BundleFormatError(f"{file}: not valid JSON: {err}") from None
        version = state.get("format_version")
        if version != FORMAT_VERSION:
            raise BundleFormatError(f"{file}: bundle format_version {version!r}; this code reads {FORMAT_VERSION}")
        models = state["models"]
        conv = models.get("conversion")
        return cls(
            config=state["config"],
            feature_names=list(state["feature_names"]),
            categorical_levels={k: list(v) for k, v in state["categorical_levels"].items()},
            churn_model=CalibratedBoostedClassifier.from_state(models["churn"], d),
            value_model=FutureValueModel.from_state(models["value"], d),
            conversion_model=None if conv is None else CalibratedBoostedClassifier.from_state(conv, d),
            horizon_days=int(state["horizon_days"]),
            trained_at=state["trained_at"],
            data_fingerprint=state.get("data_fingerprint", {}),
            reference=state.get("reference", {}),
            metrics=state.get("metrics", {}),
            rfm_thresholds=state.get("rfm_thresholds", {}),
            high_potential_value=state.get("high_potential_value"),
        )

    def input_example(self, features: pd.DataFrame, n: int = 2) -> pd.DataFrame:
        """A small input frame (``user_id`` plus features) for signatures and docs."""
        cols = ["user_id", *self.feature_names]
        return features.loc[:, cols].head(n).reset_index(drop=True)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return [_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, pd.Timestamp):
        return obj.isoformat()
    return obj
