"""A training run: training set -> models -> backtest against baselines -> MLflow run -> challenger.

:func:`train_model` is the whole run. Its steps are public so that tuning (:mod:`training.experiment`)
and promotion (:mod:`training.registry`) reuse them:

1. :func:`prepare_training_data`: the stacked training set up to ``end``, its time split and data
   fingerprint, and the data-sufficiency checks (:class:`~features.errors.InsufficientDataError` with
   the numbers, never a LightGBM crash);
2. :func:`fit_bundle`: churn, conversion (when there are enough prospects) and value models, in a
   :class:`~training.bundle.ModelBundle` with reference distributions;
3. :func:`evaluate_bundle` and :func:`baseline_metrics`: the backtest on the evaluation half of the
   latest cutoff, for the model and for BG/NBD + Gamma-Gamma and the rule baseline, side by side;
4. :func:`log_run_contents` and :func:`register_challenger`: params, metrics, fingerprint, feature list,
   evaluation rows, charts and the pyfunc model in MLflow; a new registered version with alias
   ``challenger``.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.config import StrataConfig
from features.cutoffs import parse_as_of
from features.dataset import Dataset
from features.errors import InsufficientDataError, StrataError
from training.bundle import ModelBundle, reference_distributions
from training.models import (
    PROSPECT_COLUMN,
    CalibratedBoostedClassifier,
    FutureValueModel,
    TimeSplit,
    categorical_features,
    categorical_levels,
    check_binary_target,
    churn_monotone_constraints,
    estimator_params,
    feature_columns,
    split_by_time,
    to_model_matrix,
    value_monotone_constraints,
)

log = logging.getLogger(__name__)

CHALLENGER = "challenger"
CHAMPION = "champion"
EVAL_ROWS_ARTIFACT = "evaluation/eval_rows.parquet"
#: ``--as-of`` may lie at most this many days after the last order or event.
END_TOLERANCE_DAYS = 7

Progress = Callable[[str], None]


def _noop(_msg: str) -> None:
    return None


# ----------------------------------------------------------------------------- 1. training data


@dataclass
class TrainingData:
    """A stacked training set with its time split and provenance."""

    config: StrataConfig
    """The configuration in force (horizon override applied)."""
    end: pd.Timestamp
    """No label window reaches past this time (UTC)."""
    end_source: str
    """``as_of`` (given) or ``data_end`` (the day boundary at or after the last order or event)."""
    training_set: pd.DataFrame
    split: TimeSplit
    fingerprint: dict[str, Any]

    @property
    def horizon_days(self) -> int:
        return self.config.labels.horizon_days


def with_horizon(config: StrataConfig, horizon_days: int | None) -> StrataConfig:
    """``config`` with ``labels.horizon_days`` replaced (unchanged when ``horizon_days`` is None)."""
    if horizon_days is None:
        return config
    if horizon_days < 1:
        raise StrataError(f"--horizon-days: value {horizon_days} must be a positive number of days")
    return config.model_copy(update={"labels": config.labels.model_copy(update={"horizon_days": int(horizon_days)})})


def last_timestamp(dataset: Dataset) -> pd.Timestamp:
    """The latest order or event time in ``dataset`` (UTC); an error when there is none."""
    last = dataset.last_activity()
    if last is None:
        raise InsufficientDataError("orders: no rows with a valid ordered_at; cannot train")
    return last


def resolve_end(dataset: Dataset, as_of: str | pd.Timestamp | None) -> tuple[pd.Timestamp, str]:
    """Training end and where it came from (``as_of`` or ``data_end``).

    Without ``as_of`` the end is the day boundary at or after the last order or event (a logged
    decision). An ``as_of`` more than :data:`END_TOLERANCE_DAYS` after the data would make the missing
    days look like churn, so it is an error.
    """
    last = last_timestamp(dataset)
    if as_of is None:
        end = last.ceil("D")
        log.info("no --as-of given: training end is the end of the data, %s (last order/event %s)", end, last)
        return end, "data_end"
    end = parse_as_of(as_of)
    if end > last + pd.Timedelta(days=END_TOLERANCE_DAYS):
        raise StrataError(
            f"--as-of {end.isoformat()} is {(end - last).days} days after the last order or event ({last.isoformat()}): "
            f"label windows would count the missing days as churn; use --as-of {last.ceil('D').date()} or earlier"
        )
    return end, "as_of"


def _table_hash(frame: pd.DataFrame | None) -> str:
    if frame is None or len(frame) == 0:
        return "empty"
    cols = sorted(frame.columns)
    hashed = np.sort(pd.util.hash_pandas_object(frame[cols], index=False).to_numpy())
    digest = hashlib.sha256(",".join(cols).encode())
    digest.update(hashed.tobytes())
    return digest.hexdigest()[:16]


def data_fingerprint(dataset: Dataset, training_set: pd.DataFrame, split: TimeSplit, end: pd.Timestamp, horizon_days: int) -> dict[str, Any]:
    """Provenance of a training run: end, horizon, cutoffs, row counts and order-independent data hashes."""
    per_cutoff = training_set.groupby("cutoff").size()
    hashes = {
        "orders": _table_hash(dataset.orders),
        "events": _table_hash(dataset.events),
        "users": _table_hash(dataset.users),
    }
    combined = hashlib.sha256("|".join(f"{k}={v}" for k, v in hashes.items()).encode()).hexdigest()[:16]
    return {
        "end": end.isoformat(),
        "horizon_days": horizon_days,
        "cutoffs": [pd.Timestamp(c).isoformat() for c in per_cutoff.index],
        "rows_per_cutoff": {pd.Timestamp(c).isoformat(): int(n) for c, n in zip(per_cutoff.index, per_cutoff, strict=True)},
        "train_cutoffs": [c.isoformat() for c in split.train_cutoffs],
        "purged_cutoffs": [c.isoformat() for c in split.purged_cutoffs],
        "latest_cutoff": split.latest_cutoff.isoformat(),
        "n_rows": int(len(training_set)),
        "n_train_rows": int(split.train.sum()),
        "n_holdout_rows": int(split.holdout.sum()),
        "n_eval_rows": int(split.evaluation.sum()),
        "n_users": int(training_set["user_id"].nunique()),
        "n_orders": int(len(dataset.orders)),
        "n_events": int(len(dataset.events)) if dataset.events is not None else 0,
        "n_users_table": int(len(dataset.users)) if dataset.users is not None else 0,
        "table_hashes": hashes,
        "data_hash": combined,
    }


def _buyers(ts: pd.DataFrame) -> np.ndarray:
    return ts[PROSPECT_COLUMN].to_numpy(dtype=float) < 0.5


def check_churn_data(ts: pd.DataFrame, split: TimeSplit, config: StrataConfig) -> None:
    """Raise :class:`InsufficientDataError` unless the churn and value models can be trained."""
    buyers = _buyers(ts)
    n_users = ts.loc[split.train & buyers, "user_id"].nunique()
    need_users = config.training.min_users
    if n_users < need_users:
        raise InsufficientDataError(
            f"churn model: {n_users} buyer(s) in the training cutoffs "
            f"({', '.join(str(c.date()) for c in split.train_cutoffs)}); need at least {need_users} "
            "(config training.min_users): provide more customers or a longer history"
        )
    y = ts["label_churn"].to_numpy(dtype=float)
    problem = check_binary_target(
        "churn model (buyers)",
        y[split.train & buyers],
        y[split.holdout & buyers],
        y[split.evaluation & buyers],
        config.training.min_positives,
    )
    if problem:
        raise InsufficientDataError(problem)
    bought = (ts["label_value"].to_numpy(dtype=float) > 0).astype(float)
    problem = check_binary_target(
        "value model (users with spend in the horizon)",
        bought[split.train],
        bought[split.holdout],
        bought[split.evaluation],
        config.training.min_positives,
    )
    if problem:
        raise InsufficientDataError(problem)


def prepare_training_data(
    dataset: Dataset,
    config: StrataConfig,
    as_of: str | pd.Timestamp | None = None,
    horizon_days: int | None = None,
    progress: Progress | None = None,
) -> TrainingData:
    """Build the stacked training set up to ``as_of`` (or the data end), split it by time and check it."""
    from features.training_set import build_training_set

    step = progress or _noop
    config = with_horizon(config, horizon_days)
    end, source = resolve_end(dataset, as_of)
    ts = build_training_set(
        dataset, config, end, progress=lambda i, n, cutoff: step(f"training set: cutoff {i}/{n} ({cutoff.date()})")
    )
    if len(ts) == 0:
        raise InsufficientDataError(
            f"training set up to {end.date()} is empty: no users known at any cutoff "
            f"(horizon {config.labels.horizon_days} days, {config.labels.n_cutoffs} cutoffs every "
            f"{config.labels.cutoff_step_days} days); provide a longer history"
        )
    ts = ts.reset_index(drop=True)
    split = split_by_time(ts, config.labels.horizon_days)
    check_churn_data(ts, split, config)
    fp = data_fingerprint(dataset, ts, split, end, config.labels.horizon_days)
    return TrainingData(config=config, end=end, end_source=source, training_set=ts, split=split, fingerprint=fp)


# ----------------------------------------------------------------------------- 2. models


@dataclass
class FitResult:
    """A fitted bundle and what it was evaluated on."""

    bundle: ModelBundle
    eval_rows: pd.DataFrame
    """Features and labels of the evaluation half of the latest cutoff (nothing was fitted on them)."""
    metrics: dict[str, float]
    """Backtest metrics of the model on ``eval_rows`` plus the holdout metrics of the value candidates."""
    params: dict[str, Any] = field(default_factory=dict)
    """Estimator parameters and model choices, for logging."""
    notes: list[str] = field(default_factory=list)


def fit_churn_model(
    X: pd.DataFrame, ts: pd.DataFrame, split: TimeSplit, est_params: dict[str, Any]
) -> CalibratedBoostedClassifier:
    """Churn classifier on the buyers: trees on the training cutoffs, early stopping/calibration on the holdout,
    monotone in recency and purchase frequency (:func:`~training.models.churn_monotone_constraints`)."""
    b = _buyers(ts)
    y = ts["label_churn"].to_numpy(dtype=float)
    tr, ho = split.train & b, split.holdout & b
    model = CalibratedBoostedClassifier(monotone_constraints=churn_monotone_constraints(list(X.columns)), **est_params)
    return model.fit(X.loc[tr], y[tr], X_holdout=X.loc[ho], y_holdout=y[ho])


def fit_conversion_model(
    X: pd.DataFrame, ts: pd.DataFrame, split: TimeSplit, est_params: dict[str, Any], config: StrataConfig
) -> tuple[CalibratedBoostedClassifier | None, str]:
    """Conversion classifier on the prospects, or None with the reason it was skipped."""
    prospect = ~_buyers(ts)
    n_users = ts.loc[split.train & prospect, "user_id"].nunique()
    if n_users < config.training.min_users:
        return None, (
            f"conversion model skipped: {n_users} prospect(s) (users with no purchase yet) in the training "
            f"cutoffs; need at least {config.training.min_users} (config training.min_users). "
            "Orders-only data (no users or events table) has next to no prospects."
        )
    y = ts["label_convert"].to_numpy(dtype=float)
    tr, ho, ev = split.train & prospect, split.holdout & prospect, split.evaluation & prospect
    problem = check_binary_target("conversion model (prospects)", y[tr], y[ho], y[ev], config.training.min_positives)
    if problem:
        return None, f"conversion model skipped: {problem}"
    model = CalibratedBoostedClassifier(**est_params).fit(X.loc[tr], y[tr], X_holdout=X.loc[ho], y_holdout=y[ho])
    return model, f"conversion model trained on {int(tr.sum())} prospect rows ({n_users} users)"


def fit_value_model(
    X: pd.DataFrame, ts: pd.DataFrame, split: TimeSplit, est_params: dict[str, Any], feature_names: list[str]
) -> FutureValueModel:
    """Future value (hurdle vs Tweedie, p10/p90) on every row, monotone in the monetary features."""
    y = ts["label_value"].to_numpy(dtype=float)
    tr, ho = split.train, split.holdout
    model = FutureValueModel(monotone_constraints=value_monotone_constraints(feature_names), **est_params)
    return model.fit(X.loc[tr], y[tr], X_holdout=X.loc[ho], y_holdout=y[ho])


def fit_bundle(
    data: TrainingData,
    overrides: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> FitResult:
    """Fit every model of a bundle on ``data``.

    ``overrides`` (from tuning) replace LightGBM hyper-parameters of the churn and conversion
    classifiers; the value model keeps the configured ones, since the tuning objective is churn AUC.
    """
    step = progress or _noop
    cfg = data.config
    ts, split = data.training_set, data.split
    names = feature_columns(ts)
    cats = categorical_features(ts, names)
    levels = categorical_levels(ts.loc[split.train], cats)
    X = to_model_matrix(ts, names, levels, source="training set")
    t = cfg.training
    base = (t.learning_rate, t.num_leaves, t.min_data_in_leaf, t.num_boost_round, t.early_stopping_rounds, t.seed)
    est = estimator_params(*base, overrides)
    step("churn model")
    churn = fit_churn_model(X, ts, split, est)
    step("conversion model")
    conversion, conv_note = fit_conversion_model(X, ts, split, est, cfg)
    log.info(conv_note)
    step("value model")
    # tuning (overrides) optimises the churn ranking; the value model keeps the configured parameters
    value = fit_value_model(X, ts, split, estimator_params(*base), names)
    bundle = ModelBundle(
        config=cfg.model_dump(mode="json"),
        feature_names=names,
        categorical_levels=levels,
        churn_model=churn,
        value_model=value,
        conversion_model=conversion,
        horizon_days=cfg.labels.horizon_days,
        trained_at=pd.Timestamp.now(tz="UTC").isoformat(),
        data_fingerprint=data.fingerprint,
    )
    latest = ts.loc[split.holdout | split.evaluation]
    bundle.reference = reference_distributions(latest, bundle.predict(latest), names, levels)
    # RFM medians, layer shares and the high-potential threshold of the training population, so that
    # scoring never takes them from the batch being scored
    bundle.freeze_layer_thresholds(latest, cfg)
    # Scoring must not take RFM medians or the high-potential threshold from the batch it scores.
    bundle.freeze_layer_thresholds(latest, cfg)
    eval_rows = ts.loc[split.evaluation].reset_index(drop=True)
    step("backtest")
    metrics = evaluate_bundle(bundle, eval_rows)
    for kind, m in value.candidate_metrics_.items():
        metrics[f"value_holdout_{kind}_normalized_gini"] = m["normalized_gini"]
        metrics[f"value_holdout_{kind}_total_spend_error_pct"] = m["total_spend_error_pct"]
    bundle.metrics = dict(metrics)
    params = {
        **{k: v for k, v in est.items() if k != "extra_params"},
        **(est["extra_params"] or {}),
        "churn_best_iteration": churn.best_iteration_,
        "churn_calibration": churn.calibrator_.method_,
        "value_model_kind": value.kind_,
        "conversion_model": "trained" if conversion is not None else "skipped",
        "n_features": len(names),
        "categorical_features": ",".join(cats) or "none",
    }
    return FitResult(bundle=bundle, eval_rows=eval_rows, metrics=metrics, params=params, notes=[conv_note])


# ----------------------------------------------------------------------------- 3. backtest


def _prefixed(prefix: str, values: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}_{k}": float(v) for k, v in values.items()}


def evaluate_bundle(bundle: ModelBundle, eval_rows: pd.DataFrame) -> dict[str, float]:
    """Backtest metrics of ``bundle`` on labelled feature rows (one cutoff).

    ``churn_*``: :func:`~training.metrics.churn_metrics` on the buyers; ``value_*``:
    :func:`~training.metrics.value_metrics` on the buyers (the rows the BG/NBD baseline covers);
    ``value_all_*`` on every row when there are prospects; ``conversion_*`` on the prospects when the
    bundle has a conversion model.
    """
    from training.metrics import churn_metrics, value_metrics

    scores = bundle.predict(eval_rows)
    buyers = _buyers(eval_rows)
    out: dict[str, float] = {}
    y_churn = eval_rows["label_churn"].to_numpy(dtype=float)
    y_value = eval_rows["label_value"].to_numpy(dtype=float)
    out.update(_prefixed("churn", churn_metrics(y_churn[buyers], scores["churn_risk"].to_numpy()[buyers])))
    out.update(_prefixed("value", value_metrics(y_value[buyers], scores["predicted_value"].to_numpy()[buyers])))
    if (~buyers).any():
        out.update(_prefixed("value_all", value_metrics(y_value, scores["predicted_value"].to_numpy())))
        if bundle.conversion_model is not None:
            y_conv = eval_rows["label_convert"].to_numpy(dtype=float)[~buyers]
            out.update(_prefixed("conversion", churn_metrics(y_conv, scores["conversion_prob"].to_numpy()[~buyers])))
    y10, y90 = scores["value_p10"].to_numpy(), scores["value_p90"].to_numpy()
    out["value_band_coverage"] = float(np.mean((y_value >= y10) & (y_value <= y90))) if len(y_value) else float("nan")
    return out


@dataclass
class BaselineScores:
    """Baseline scores on the evaluation buyers, aligned with their rows (None when unavailable)."""

    bgnbd: pd.DataFrame | None
    rule: pd.DataFrame | None
    notes: list[str] = field(default_factory=list)


def baseline_scores(dataset: Dataset, eval_buyers: pd.DataFrame, cutoff: pd.Timestamp, horizon_days: int) -> BaselineScores:
    """BG/NBD + Gamma-Gamma (fitted on orders up to ``cutoff``) and rule scores for ``eval_buyers``."""
    from training.baselines import bgnbd_baseline, rule_baseline

    notes: list[str] = []
    bgnbd: pd.DataFrame | None
    try:
        bgnbd = bgnbd_baseline(dataset, cutoff, horizon_days, user_ids=eval_buyers["user_id"])
    except StrataError as err:  # a baseline that cannot be fitted is reported, not fatal
        bgnbd = None
        notes.append(f"BG/NBD baseline unavailable: {err}")
        log.warning("BG/NBD baseline unavailable: %s", err)
    rule = rule_baseline(eval_buyers)
    return BaselineScores(bgnbd=bgnbd, rule=rule, notes=notes)


def baseline_metrics(eval_buyers: pd.DataFrame, baselines: BaselineScores) -> dict[str, float]:
    """``bgnbd_churn_*``, ``bgnbd_value_*``, ``rule_churn_*``, ``rule_value_*`` on the evaluation buyers.

    The rule churn score is a rank, not a probability: only its ranking metrics (AUC, PR-AUC, lift)
    are comparable; its Brier score and ECE are logged for completeness.
    """
    from training.metrics import churn_metrics, value_metrics

    y_churn = eval_buyers["label_churn"].to_numpy(dtype=float)
    y_value = eval_buyers["label_value"].to_numpy(dtype=float)
    out: dict[str, float] = {}
    if baselines.bgnbd is not None:
        out.update(_prefixed("bgnbd_churn", churn_metrics(y_churn, baselines.bgnbd["churn_prob"].to_numpy(dtype=float))))
        out.update(_prefixed("bgnbd_value", value_metrics(y_value, baselines.bgnbd["expected_value"].to_numpy(dtype=float))))
    if baselines.rule is not None:
        out.update(_prefixed("rule_churn", churn_metrics(y_churn, baselines.rule["churn_score"].to_numpy(dtype=float))))
        out.update(_prefixed("rule_value", value_metrics(y_value, baselines.rule["value_score"].to_numpy(dtype=float))))
    return out


def side_by_side(metrics: dict[str, float]) -> pd.DataFrame:
    """Model and baseline metrics as one table: a row per metric (``churn_auc``...), columns model, bgnbd, rule."""
    rows: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        if key.startswith("bgnbd_"):
            rows.setdefault(key.removeprefix("bgnbd_"), {})["bgnbd"] = value
        elif key.startswith("rule_"):
            rows.setdefault(key.removeprefix("rule_"), {})["rule"] = value
        elif key.startswith(("churn_", "value_")) and not key.startswith(("value_holdout_", "value_all_", "value_band")):
            rows.setdefault(key, {})["model"] = value
    table = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=["model", "bgnbd", "rule"])
    table.index.name = "metric"
    return table.reset_index()


# ----------------------------------------------------------------------------- 4. MLflow


@dataclass
class TrainResult:
    """Outcome of :func:`train_model`."""

    run_id: str
    model_name: str
    model_version: str
    model_uri: str
    """``models:/<name>/<version>``."""
    bundle: ModelBundle
    metrics: dict[str, float]
    """Every metric logged: the model's backtest and the baselines' (same rows)."""
    end: pd.Timestamp
    cutoffs: list[pd.Timestamp]
    conversion_trained: bool
    notes: list[str] = field(default_factory=list)


def _plots(directory: Path, fit: FitResult, eval_buyers: pd.DataFrame, baselines: BaselineScores) -> list[Path]:
    from training.metrics import value_deciles
    from training.plots import (
        calibration_chart,
        feature_importance_chart,
        lift_gain_chart,
        value_decile_chart,
    )

    b = fit.bundle
    scores = b.predict(eval_buyers)
    y_churn = eval_buyers["label_churn"].to_numpy(dtype=float)
    y_value = eval_buyers["label_value"].to_numpy(dtype=float)
    p_churn = scores["churn_risk"].to_numpy(dtype=float)
    calib: dict[str, tuple[np.ndarray, np.ndarray]] = {"model": (y_churn, p_churn)}
    lift: dict[str, tuple[np.ndarray, np.ndarray]] = {"model": (y_churn, p_churn)}
    deciles = {"model": value_deciles(y_value, scores["predicted_value"].to_numpy(dtype=float))}
    if baselines.bgnbd is not None:
        calib["BG/NBD"] = (y_churn, baselines.bgnbd["churn_prob"].to_numpy(dtype=float))
        lift["BG/NBD"] = calib["BG/NBD"]
        deciles["BG/NBD"] = value_deciles(y_value, baselines.bgnbd["expected_value"].to_numpy(dtype=float))
    if baselines.rule is not None:
        lift["rule"] = (y_churn, baselines.rule["churn_score"].to_numpy(dtype=float))
    horizon = b.horizon_days
    paths = [
        calibration_chart(calib, directory / "churn_calibration.png", f"Churn in {horizon} days: calibration"),
        lift_gain_chart(lift, directory / "churn_lift_gain.png", "Churn"),
        value_decile_chart(deciles, directory / "value_deciles.png", f"Spend in {horizon} days by predicted decile"),
    ]
    churn_booster = b.churn_model.booster_
    imp = pd.Series(churn_booster.feature_importance("gain"), index=churn_booster.feature_name())
    paths.append(feature_importance_chart(imp, directory / "churn_feature_importance.png", "Churn model: feature importance"))
    value_part = b.value_model.parts_["buy" if b.value_model.kind_ == "hurdle" else "tweedie"]
    booster = value_part.booster_
    imp = pd.Series(booster.feature_importance("gain"), index=booster.feature_name())
    paths.append(
        feature_importance_chart(
            imp, directory / "value_feature_importance.png", f"Value model ({b.value_model.kind_}): feature importance"
        )
    )
    return paths


def log_run_contents(
    dataset: Dataset, data: TrainingData, fit: FitResult, progress: Progress | None = None
) -> tuple[dict[str, float], Any, list[str]]:
    """Log params, fingerprint, feature list, metrics (model and baselines), charts and the model into the
    active MLflow run. Returns (all metrics, MLflow ``ModelInfo``, notes)."""
    import mlflow

    from training.pyfunc import log_bundle_model

    step = progress or _noop
    b = fit.bundle
    fp = data.fingerprint
    eval_buyers = fit.eval_rows.loc[_buyers(fit.eval_rows)].reset_index(drop=True)
    step("baselines")
    baselines = baseline_scores(dataset, eval_buyers, data.split.latest_cutoff, data.horizon_days)
    metrics = {**fit.metrics, **baseline_metrics(eval_buyers, baselines)}
    notes = [*fit.notes, *baselines.notes]
    step("logging to MLflow")
    params: dict[str, Any] = {
        "horizon_days": data.horizon_days,
        "end": data.end.isoformat(),
        "end_source": data.end_source,
        "n_cutoffs": data.config.labels.n_cutoffs,
        "cutoff_step_days": data.config.labels.cutoff_step_days,
        "latest_cutoff": fp["latest_cutoff"],
        "train_cutoffs": ",".join(c[:10] for c in fp["train_cutoffs"]),
        "purged_cutoffs": ",".join(c[:10] for c in fp["purged_cutoffs"]) or "none",
        "n_train_rows": fp["n_train_rows"],
        "n_holdout_rows": fp["n_holdout_rows"],
        "n_eval_rows": fp["n_eval_rows"],
        "n_users": fp["n_users"],
        "data_hash": fp["data_hash"],
        **fit.params,
    }
    mlflow.log_params({k: str(v) for k, v in params.items()})
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
    mlflow.set_tags({"strata.end": data.end.isoformat(), "strata.horizon_days": str(data.horizon_days), "strata.data_hash": fp["data_hash"]})
    mlflow.log_dict(fp, "data/fingerprint.json")
    mlflow.log_dict({"feature_names": b.feature_names, "categorical_levels": b.categorical_levels}, "data/features.json")
    mlflow.log_dict(b.config, "config/config.json")
    mlflow.log_text("\n".join(notes) + "\n", "notes.txt")
    with tempfile.TemporaryDirectory(prefix="strata-run-") as tmp:
        d = Path(tmp)
        rows = d / "eval_rows.parquet"
        fit.eval_rows.to_parquet(rows, index=False)
        mlflow.log_artifact(str(rows), "evaluation")
        table = d / "metrics_side_by_side.csv"
        side_by_side(metrics).to_csv(table, index=False)
        mlflow.log_artifact(str(table), "evaluation")
        step("charts")
        for p in _plots(d / "plots", fit, eval_buyers, baselines):
            mlflow.log_artifact(str(p), "plots")
    step("logging the model")
    info = log_bundle_model(b, fit.eval_rows)
    return metrics, info, notes


#: Metrics copied onto the registered version as tags (shown by ``strata models``).
VERSION_TAG_METRICS = (
    "churn_auc",
    "churn_ece",
    "value_normalized_gini",
    "conversion_auc",
    "bgnbd_churn_auc",
    "bgnbd_value_normalized_gini",
    "rule_churn_auc",
)


def register_challenger(config: StrataConfig, model_uri: str, run_id: str, data: TrainingData, metrics: dict[str, float], fit: FitResult) -> str:
    """Register ``model_uri`` as a new version of ``training.model_name``, alias it ``challenger``; returns the version."""
    import mlflow

    name = config.training.model_name
    client = mlflow.MlflowClient()
    mv = mlflow.register_model(model_uri, name)
    tags = {
        "run_id": run_id,
        "train_end": data.end.isoformat(),
        "eval_cutoff": data.split.latest_cutoff.isoformat(),
        "horizon_days": str(data.horizon_days),
        "data_hash": data.fingerprint["data_hash"],
        "value_model_kind": fit.bundle.value_model.kind_,
        "conversion_model": "yes" if fit.bundle.conversion_model is not None else "no",
    }
    for k in VERSION_TAG_METRICS:
        if k in metrics and np.isfinite(metrics[k]):
            tags[k] = f"{metrics[k]:.6f}"
    for k, v in tags.items():
        client.set_model_version_tag(name, mv.version, k, v)
    client.set_registered_model_alias(name, CHALLENGER, mv.version)
    log.info("registered %s version %s as %s", name, mv.version, CHALLENGER)
    return str(mv.version)


def train_model(
    dataset: Dataset,
    config: StrataConfig,
    as_of: str | pd.Timestamp | None = None,
    horizon_days: int | None = None,
    run_name: str | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Train churn, conversion and value models on ``dataset`` up to ``as_of`` and register a challenger.

    Parameters
    ----------
    dataset : validated input tables.
    config : configuration (``labels``, ``training``, ``tracking`` sections are used).
    as_of : training end: no label window reaches past it. None: the day boundary at or after the last
        order or event (see :func:`resolve_end`).
    horizon_days : prediction horizon H (days); None: ``labels.horizon_days``.
    run_name : MLflow run name.
    progress : callback receiving a short description of each step.

    Returns
    -------
    TrainResult with the run id, the registered version (alias ``challenger``), the bundle and all
    logged metrics (model and baselines on the same evaluation rows).
    """
    import mlflow

    from training.tracking import check_local_store, configure_tracking, resolve_tracking_uri

    step = progress or _noop
    # a store that cannot be written fails now, not after the models are fitted (nothing is created yet)
    check_local_store(resolve_tracking_uri(config))
    step("training set")
    data = prepare_training_data(dataset, config, as_of, horizon_days, progress=step)
    fit = fit_bundle(data, progress=step)
    configure_tracking(data.config)
    with mlflow.start_run(run_name=run_name) as run:
        metrics, info, notes = log_run_contents(dataset, data, fit, progress=step)
        step("registering the challenger")
        version = register_challenger(data.config, info.model_uri, run.info.run_id, data, metrics, fit)
    name = data.config.training.model_name
    return TrainResult(
        run_id=run.info.run_id,
        model_name=name,
        model_version=version,
        model_uri=f"models:/{name}/{version}",
        bundle=fit.bundle,
        metrics=metrics,
        end=data.end,
        cutoffs=[pd.Timestamp(c) for c in data.fingerprint["cutoffs"]],
        conversion_trained=fit.bundle.conversion_model is not None,
        notes=notes,
    )
