"""LightGBM estimators for churn risk, prospect conversion and future value, and their data preparation.

Every estimator follows the scikit-learn contract: ``__init__`` stores its arguments, learned state
ends in ``_``, ``check_is_fitted`` guards prediction. They take a *model matrix* made by
:func:`to_model_matrix` (feature columns in a fixed order, categoricals as pandas ``Categorical`` with
the training levels), so the bundle that carries the feature list and levels is the only way in.

Validation is by time (:func:`split_by_time`): trees learn on the earlier cutoffs whose label window
ends before the latest cutoff (so no training label overlaps the validation window); the latest
cutoff is split by user into a *holdout* half (early stopping, calibration, model choice, tuning) and
an *evaluation* half that nothing is fitted on (the backtest metrics and promotion comparisons).

Unseen categorical levels: LightGBM silently maps a level it did not see in training to "missing".
Here an unseen ``source_channel`` (or any categorical) means "we do not know this channel", exactly
like an absent one, so :func:`to_model_matrix` maps it to :data:`UNKNOWN_LEVEL` before LightGBM sees it;
:data:`UNKNOWN_LEVEL` is always one of the training levels.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from features.errors import InsufficientDataError, StrataError
from training.calibration import CalibrationMethod, ScoreCalibrator

if TYPE_CHECKING:
    from training.compiled_trees import CompiledForest
    from training.tree_paths import PathTables

#: A model matrix: the pandas frame of :func:`to_model_matrix`, or the float64 NumPy matrix LightGBM
#: makes of it (:func:`training.compiled_trees.lightgbm_matrix`: categoricals as their level codes).
ModelInput = pd.DataFrame | np.ndarray

log = logging.getLogger(__name__)

UNKNOWN_LEVEL = "unknown"
LABEL_COLUMNS: tuple[str, ...] = ("label_churn", "label_value", "label_convert")
KEY_COLUMNS: tuple[str, ...] = ("user_id", "as_of", "cutoff")
PROSPECT_COLUMN = "is_prospect"
#: How reason-code contributions are computed (``scoring.reason_method``): Saabas path credits or TreeSHAP.
ReasonMethod = Literal["path", "shap"]
REASON_METHODS: tuple[str, ...] = ("path", "shap")

#: Monetary features (shop currency): more past spend, all else equal, must not lower predicted value.
_MONETARY_PREFIXES: tuple[str, ...] = ("spend_", "avg_order_value", "max_order_value", "first_order_value")


class FeatureMismatchError(StrataError):
    """A feature table does not carry the columns (or types) a model was trained on."""


# ----------------------------------------------------------------------------- features


def feature_columns(frame: pd.DataFrame) -> list[str]:
    """Model feature columns of a feature table or training set, in table order.

    Everything except the key columns (``user_id``, ``as_of``, ``cutoff``) and the labels (``label_*``).
    """
    return [c for c in frame.columns if c not in KEY_COLUMNS and not str(c).startswith("label_")]


def categorical_features(frame: pd.DataFrame, feature_names: list[str]) -> list[str]:
    """Feature columns that are not numeric (strings, categoricals), e.g. ``source_channel``."""
    return [
        c
        for c in feature_names
        if not (pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]))
    ]


def categorical_levels(frame: pd.DataFrame, columns: list[str]) -> dict[str, list[str]]:
    """Sorted training levels of each categorical column, always including :data:`UNKNOWN_LEVEL`."""
    levels: dict[str, list[str]] = {}
    for c in columns:
        values = frame[c].dropna().astype(str)
        levels[c] = sorted(set(values.unique()) | {UNKNOWN_LEVEL})
    return levels


def monetary_features(feature_names: list[str]) -> list[str]:
    """Features measured in shop currency that should push predicted value up (monotone constraint)."""
    return [f for f in feature_names if f.startswith(_MONETARY_PREFIXES) and not f.endswith(("_ratio", "_share"))]


def value_monotone_constraints(feature_names: list[str]) -> dict[str, int]:
    """Value model constraints: predicted spend is non-decreasing in every monetary feature."""
    return {f: 1 for f in monetary_features(feature_names)}


#: Recency features: the longer since the last purchase or interaction, the higher the churn risk.
_CHURN_UP: tuple[str, ...] = ("days_since_last_order", "days_since_last_interaction", "overdue_ratio")


def churn_monotone_constraints(feature_names: list[str]) -> dict[str, int]:
    """Churn model constraints, all else equal: risk rises with recency (days since the last order or
    interaction, overdue ratio) and falls with recent purchase frequency (order counts in windows,
    decayed order counts, active days). Domain knowledge the trees must not contradict on thin data;
    it also keeps reason codes readable (recency never lowers risk)."""
    out: dict[str, int] = {}
    for f in feature_names:
        if f in _CHURN_UP:
            out[f] = 1
        elif (f.startswith("orders_") and f[len("orders_"):len("orders_") + 1].isdigit()) or f.startswith("orders_decay_hl"):
            out[f] = -1
        elif f == "active_days_30d":
            out[f] = -1
    return out


def to_model_matrix(
    features: pd.DataFrame,
    feature_names: list[str],
    levels: dict[str, list[str]],
    *,
    source: str = "features",
) -> pd.DataFrame:
    """The model input: ``feature_names`` in order, numeric as float64, categoricals with fixed levels.

    Missing or unparseable values of a categorical become :data:`UNKNOWN_LEVEL`, and so do levels
    unseen in training (counted in a log message). Extra columns of ``features`` are ignored.

    Raises
    ------
    FeatureMismatchError
        When a feature column is missing or a numeric feature holds a non-numeric value (names the
        column, row and value).
    """
    out = dict(_model_columns(features, feature_names, levels, source))
    return pd.DataFrame(out, index=features.index)


_T = TypeVar("_T")


def cached_for_models(owner: Any, models: Sequence[Any], build: Callable[[], _T]) -> _T:
    """``build()``, cached on ``owner`` until one of ``models`` changes (itself, its tree engine switch
    ``use_compiled_trees`` or its booster); for the forest groups built from those models' trees.

    The key is read without sklearn's fitted checks (microseconds per model, per API call). The models and
    boosters are held with the value, so that no other object can take their ids.
    """
    key = tuple((id(m), getattr(m, "use_compiled_trees", None), id(getattr(m, "booster_", None))) for m in models)
    cached = getattr(owner, "_group_cache", None)
    if cached is not None and cached[0] == key:
        return cached[1]  # type: ignore[no-any-return]
    value = build()
    owner._group_cache = (key, value, list(models), [getattr(m, "booster_", None) for m in models])
    return value


def to_numeric_model_matrix(
    features: pd.DataFrame,
    feature_names: list[str],
    levels: dict[str, list[str]],
    *,
    source: str = "features",
) -> np.ndarray:
    """:func:`to_model_matrix` as the float64 matrix LightGBM makes of it, without the pandas frame.

    ``(n, len(feature_names))``, C-contiguous: numeric features as they are, a categorical as the code
    of its level in ``levels`` (what LightGBM uses for a pandas categorical whose training categories
    are ``levels``; a missing code would be NaN). Same checks and unseen-level handling as
    :func:`to_model_matrix`.
    """
    X = np.empty((len(features), len(feature_names)), dtype=np.float64)
    for j, (_, values) in enumerate(_model_columns(features, feature_names, levels, source)):
        if isinstance(values, pd.Categorical):
            codes = values.codes.astype(np.float64)
            codes[values.codes < 0] = np.nan
            X[:, j] = codes
        else:
            X[:, j] = values
    return X


def _model_columns(
    features: pd.DataFrame, feature_names: list[str], levels: dict[str, list[str]], source: str
) -> Iterator[tuple[str, Any]]:
    """(name, values) of every model feature: float64 arrays, or ``pd.Categorical`` with fixed levels."""
    missing = [f for f in feature_names if f not in features.columns]
    if missing:
        raise FeatureMismatchError(
            f"{source}: missing feature column(s) the model was trained on: {', '.join(missing)}"
        )
    for f in feature_names:
        col = features[f]
        if f in levels:
            lv = levels[f]
            values = col.astype(object).where(col.notna(), UNKNOWN_LEVEL).astype(str)
            unseen = ~values.isin(lv)
            if unseen.any():
                log.info(
                    "%s: %d row(s) of column %s have levels unseen in training (%s); treated as %r",
                    source,
                    int(unseen.sum()),
                    f,
                    ", ".join(sorted(values[unseen].unique())[:5]),
                    UNKNOWN_LEVEL,
                )
                values = values.where(~unseen, UNKNOWN_LEVEL)
            yield f, pd.Categorical(values, categories=lv)
        else:
            if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
                yield f, col.to_numpy(dtype=np.float64, na_value=np.nan)
            else:
                num = pd.to_numeric(col, errors="coerce")
                bad = num.isna() & col.notna()
                if bad.any():
                    i = int(np.flatnonzero(bad.to_numpy())[0])
                    raise FeatureMismatchError(
                        f"{source}: column {f}: row {i}: value {col.iloc[i]!r} is not a number"
                    )
                yield f, num.to_numpy(dtype=np.float64, na_value=np.nan)


# ----------------------------------------------------------------------------- time split


@dataclass(frozen=True)
class TimeSplit:
    """Row masks of a stacked training set (boolean arrays aligned with its rows)."""

    train: np.ndarray
    """Rows of cutoffs whose label window ends at or before the latest cutoff (trees learn here)."""
    holdout: np.ndarray
    """Latest-cutoff rows of the holdout half of users (early stopping, calibration, model choice)."""
    evaluation: np.ndarray
    """Latest-cutoff rows of the other half of users (backtest metrics only; nothing is fitted here)."""
    train_cutoffs: list[pd.Timestamp]
    purged_cutoffs: list[pd.Timestamp]
    """Cutoffs dropped because their label window overlaps the validation window."""
    latest_cutoff: pd.Timestamp


def holdout_half(user_ids: pd.Series) -> np.ndarray:
    """True for users in the holdout half, False for the evaluation half (stable hash of ``user_id``)."""
    h = pd.util.hash_pandas_object(user_ids.astype(str), index=False).to_numpy()
    return (h % np.uint64(2)) == 0


def split_by_time(training_set: pd.DataFrame, horizon_days: int) -> TimeSplit:
    """Split a stacked training set by time (see the module docstring).

    Raises
    ------
    InsufficientDataError
        With fewer than two cutoffs, or no cutoff at least ``horizon_days`` before the latest one.
    """
    cutoffs = sorted(pd.unique(training_set["cutoff"]))
    if len(cutoffs) < 2:
        raise InsufficientDataError(
            f"training set has {len(cutoffs)} cutoff(s); need at least 2 (earlier ones to train on, the "
            "latest to validate): provide a longer history or raise labels.n_cutoffs"
        )
    latest = pd.Timestamp(cutoffs[-1])
    horizon = pd.Timedelta(days=horizon_days)
    train_cutoffs = [pd.Timestamp(c) for c in cutoffs if pd.Timestamp(c) + horizon <= latest]
    purged = [pd.Timestamp(c) for c in cutoffs[:-1] if pd.Timestamp(c) + horizon > latest]
    if not train_cutoffs:
        step = (latest - pd.Timestamp(cutoffs[-2])).days if len(cutoffs) > 1 else 0
        need = math.ceil(horizon_days / step) + 1 if step > 0 else "more"
        raise InsufficientDataError(
            f"training set has {len(cutoffs)} cutoff(s) spanning {(latest - pd.Timestamp(cutoffs[0])).days} days; "
            f"need at least one cutoff {horizon_days} days (the horizon) before the latest one so that no "
            f"training label overlaps the validation window: raise labels.n_cutoffs to at least {need} "
            "(with a long enough history)"
        )
    cut = training_set["cutoff"]
    is_latest = (cut == latest).to_numpy()
    half = holdout_half(training_set["user_id"])
    return TimeSplit(
        train=cut.isin(train_cutoffs).to_numpy(),
        holdout=is_latest & half,
        evaluation=is_latest & ~half,
        train_cutoffs=train_cutoffs,
        purged_cutoffs=purged,
        latest_cutoff=latest,
    )


def _count_classes(y: np.ndarray) -> tuple[int, int]:
    pos = int(np.nansum(y))
    return pos, int(np.sum(~np.isnan(y))) - pos


def check_binary_target(
    name: str,
    y_train: np.ndarray,
    y_holdout: np.ndarray,
    y_eval: np.ndarray | None,
    min_positives: int,
) -> str | None:
    """Why a binary target cannot be learned (a sentence with the numbers), or None if it can.

    Needs at least ``min_positives`` of each class in the training rows and in the latest cutoff
    (holdout plus evaluation halves together), and both classes in every half.
    """
    tp, tn = _count_classes(np.asarray(y_train, dtype=float))
    hp, hn = _count_classes(np.asarray(y_holdout, dtype=float))
    ep, en = _count_classes(np.asarray(y_eval, dtype=float)) if y_eval is not None else (1, 1)
    problems = []
    if min(tp, tn) < min_positives:
        problems.append(f"training rows have {tp} positive(s) and {tn} negative(s)")
    lp, ln = hp + (ep if y_eval is not None else 0), hn + (en if y_eval is not None else 0)
    if min(lp, ln) < min_positives:
        problems.append(f"the latest cutoff has {lp} positive(s) and {ln} negative(s)")
    if min(hp, hn, ep, en) < 1 and not problems:
        problems.append(
            f"a half of the latest cutoff lacks a class (holdout {hp}/{hn}, evaluation {ep}/{en} positives/negatives)"
        )
    if not problems:
        return None
    return f"{name}: {'; '.join(problems)}; need at least {min_positives} of each (config training.min_positives)"


# ----------------------------------------------------------------------------- LightGBM core


def _lgb_params(
    objective: str,
    *,
    learning_rate: float,
    num_leaves: int,
    min_data_in_leaf: int,
    seed: int,
    feature_names: list[str],
    monotone_constraints: dict[str, int] | None,
    extra_params: dict[str, Any] | None,
    **objective_params: Any,
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "objective": objective,
        "learning_rate": learning_rate,
        "num_leaves": num_leaves,
        "min_data_in_leaf": min_data_in_leaf,
        "seed": seed,
        "deterministic": True,
        "force_col_wise": True,
        "verbosity": -1,
        "feature_pre_filter": False,
        **objective_params,
    }
    if monotone_constraints:
        params["monotone_constraints"] = [int(monotone_constraints.get(f, 0)) for f in feature_names]
    params.update(extra_params or {})
    return params


#: Below this many rows LightGBM runs on one thread: OpenMP start-up and spin-waiting cost more than
#: they save on small data (measured 0.4 s on 1 thread vs 6-10 s on 2 busy cores for 6k rows).
SINGLE_THREAD_ROWS = 200_000


def _threads(n_rows: int) -> int:
    return 1 if n_rows < SINGLE_THREAD_ROWS else 0


def _train_booster(
    params: dict[str, Any],
    X: pd.DataFrame,
    y: np.ndarray,
    X_valid: pd.DataFrame,
    y_valid: np.ndarray,
    num_boost_round: int,
    early_stopping_rounds: int,
) -> Any:
    import lightgbm as lgb

    params = {"num_threads": _threads(len(X)), **params}
    dtrain = lgb.Dataset(X, label=y, free_raw_data=False)
    dvalid = lgb.Dataset(X_valid, label=y_valid, reference=dtrain, free_raw_data=False)
    booster = lgb.train(
        params,
        dtrain,
        num_boost_round=num_boost_round,
        valid_sets=[dvalid],
        valid_names=["holdout"],
        callbacks=[lgb.early_stopping(early_stopping_rounds, verbose=False)],
    )
    best = booster.best_iteration or booster.current_iteration()
    # Keep only the trees up to the best iteration, so that predictions never depend on a flag.
    return lgb.Booster(model_str=booster.model_to_string(num_iteration=best))


def _check_matrix(est: BaseEstimator, X: ModelInput) -> None:
    if isinstance(X, np.ndarray):
        if X.ndim != 2 or X.shape[1] != len(est.feature_names_in_):
            raise FeatureMismatchError(
                f"model input matrix of shape {X.shape}; the model has {len(est.feature_names_in_)} features "
                "(build the input with to_model_matrix)"
            )
        return
    cols = list(X.columns)
    if cols != est.feature_names_in_:
        missing = [c for c in est.feature_names_in_ if c not in cols]
        raise FeatureMismatchError(
            f"model input columns differ from training (missing: {', '.join(missing) or 'none'}; "
            "build the input with to_model_matrix)"
        )


def _save_booster(booster: Any, directory: Path, name: str) -> str:
    file = f"{name}.lgb.txt"
    booster.save_model(str(directory / file))
    return file


def _load_booster(directory: Path, file: str) -> Any:
    import lightgbm as lgb

    return lgb.Booster(model_file=str(directory / file))


def _take_rows(X: ModelInput, rows: np.ndarray | None) -> ModelInput:
    """``X`` itself (``rows`` None) or its rows ``rows`` (row numbers, or a boolean mask), copied."""
    if rows is None:
        return X
    return X[rows] if isinstance(X, np.ndarray) else X.iloc[np.asarray(rows)]


class _BoostedBase(BaseEstimator):
    """Shared hyper-parameters of every LightGBM estimator here, and its compiled trees."""

    #: True: the compiled trees evaluate this model (``scoring.tree_engine = "compiled"``, set through
    #: :meth:`training.bundle.ModelBundle.set_tree_engine`); else LightGBM. Not a hyper-parameter, never saved.
    use_compiled_trees: bool = False

    def compiled_trees(self) -> CompiledForest | None:
        """The booster's trees flattened for the numba kernels of :mod:`training.compiled_trees`, or None
        when that module does not cover the model (LightGBM then predicts; the reason is logged once) or
        :attr:`use_compiled_trees` is off.

        Built once and cached on this instance (keyed on the booster object), like :meth:`path_tables`;
        never written by ``to_state``.
        """
        check_is_fitted(self, "booster_")
        if not self.use_compiled_trees:
            return None
        cached = getattr(self, "_compiled_cache", None)
        if cached is not None and cached[0] is self.booster_:
            return cached[1]
        from training.compiled_trees import try_compile  # numba: imported only when predicting

        forest = try_compile(self.booster_, type(self).__name__)
        self._compiled_cache = (self.booster_, forest)
        return forest

    def _compiled_input(self, X: ModelInput) -> tuple[CompiledForest | None, np.ndarray | None]:
        """(compiled trees, float64 matrix) for ``X``, or (None, None) when LightGBM must predict."""
        forest = self.compiled_trees()
        if forest is None:
            return None, None
        from training.compiled_trees import lightgbm_matrix

        return forest, lightgbm_matrix(X, getattr(self.booster_, "pandas_categorical", None))

    def _params(self, objective: str, feature_names: list[str], **objective_params: Any) -> dict[str, Any]:
        return _lgb_params(
            objective,
            learning_rate=self.learning_rate,
            num_leaves=self.num_leaves,
            min_data_in_leaf=self.min_data_in_leaf,
            seed=self.seed,
            feature_names=feature_names,
            monotone_constraints=self.monotone_constraints,
            extra_params=self.extra_params,
            **objective_params,
        )

    def _hyper(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._get_param_names()}


class CalibratedBoostedClassifier(ClassifierMixin, _BoostedBase):
    """LightGBM binary classifier, early-stopped and calibrated on held-out rows.

    Used for churn risk (buyers), prospect conversion and the "will buy" part of the value hurdle.
    ``predict_proba`` returns calibrated probabilities; ``raw_score`` and ``contributions`` are in the
    booster's log-odds space (before calibration). ``raw_score_and_contributions`` gives both from one
    LightGBM pass (path method), which is what scoring with reason codes uses.
    """

    def __init__(
        self,
        num_boost_round: int = 600,
        early_stopping_rounds: int = 50,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        min_data_in_leaf: int = 50,
        seed: int = 42,
        calibration: CalibrationMethod = "auto",
        monotone_constraints: dict[str, int] | None = None,
        extra_params: dict[str, Any] | None = None,
    ) -> None:
        self.num_boost_round = num_boost_round
        self.early_stopping_rounds = early_stopping_rounds
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_data_in_leaf = min_data_in_leaf
        self.seed = seed
        self.calibration = calibration
        self.monotone_constraints = monotone_constraints
        self.extra_params = extra_params

    def fit(
        self, X: pd.DataFrame, y: np.ndarray, *, X_holdout: pd.DataFrame, y_holdout: np.ndarray
    ) -> CalibratedBoostedClassifier:
        """Train trees on ``(X, y)``, early-stop on and calibrate to ``(X_holdout, y_holdout)`` (0/1)."""
        y = np.asarray(y, dtype=float)
        y_holdout = np.asarray(y_holdout, dtype=float)
        names = list(X.columns)
        params = self._params("binary", names)
        self.booster_ = _train_booster(
            params, X, y, X_holdout, y_holdout, self.num_boost_round, self.early_stopping_rounds
        )
        self.feature_names_in_ = names
        self.n_features_in_ = len(names)
        self.classes_ = np.array([0, 1])
        self.best_iteration_ = int(self.booster_.current_iteration())
        self.calibrator_ = ScoreCalibrator(self.calibration).fit(self.raw_score(X_holdout), y_holdout)
        return self

    def raw_score(self, X: ModelInput, rows: np.ndarray | None = None) -> np.ndarray:
        """Uncalibrated booster score (log-odds) per row (compiled trees, or LightGBM if not covered).

        ``rows``: row numbers of ``X`` to score, in that order (default: all); the compiled trees read
        them in place, without copying the selected rows out of ``X``.
        """
        check_is_fitted(self, "booster_")
        _check_matrix(self, X)
        forest, Xn = self._compiled_input(X)
        if forest is not None and Xn is not None:
            from training.compiled_trees import predict_raw

            return predict_raw(forest, Xn, rows)
        X = _take_rows(X, rows)
        return np.asarray(self.booster_.predict(X, raw_score=True, num_threads=_threads(len(X))), dtype=float)

    def predict_proba(self, X: ModelInput, rows: np.ndarray | None = None) -> np.ndarray:
        """Calibrated probabilities, shape ``(n, 2)``: column 1 is P(positive); ``rows`` as :meth:`raw_score`."""
        check_is_fitted(self, "calibrator_")
        p = self.calibrator_.predict(self.raw_score(X, rows))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: ModelInput) -> np.ndarray:
        """Class (0/1) at calibrated probability 0.5."""
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)

    def proba_from_raw(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated P(positive) per row from :meth:`raw_score` values (log-odds)."""
        check_is_fitted(self, "calibrator_")
        return np.asarray(self.calibrator_.predict(np.asarray(raw, dtype=float)), dtype=float)

    def path_tables(self) -> PathTables:
        """Per-leaf credit tables of the booster (:mod:`training.tree_paths`), built once and cached here.

        Cached on this instance (keyed on the booster object), never written by :meth:`to_state`: they are
        rebuilt from the booster in a few hundredths of a second.
        """
        check_is_fitted(self, "booster_")
        cached = getattr(self, "_path_tables_cache", None)
        if cached is not None and cached[0] is self.booster_:
            return cached[1]
        from training.tree_paths import path_tables  # numba: imported only when reasons are computed

        tables = path_tables(self.booster_)
        self._path_tables_cache = (self.booster_, tables)
        return tables

    def raw_score_and_contributions(
        self, X: ModelInput, method: ReasonMethod = "path", rows: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw score (log-odds) per row and per-feature contributions, in as few passes as the method allows.

        Parameters
        ----------
        X
            Model matrix (:func:`to_model_matrix`).
        method
            ``"path"``: Saabas path credits (:mod:`training.tree_paths`) from one walk of the compiled
            trees (:func:`training.compiled_trees.raw_and_contributions`; one LightGBM ``pred_leaf``
            pass for models it does not cover), which also gives the raw score (equal to
            :meth:`raw_score`: the same leaf values summed in the same order). ``"shap"``: LightGBM's
            exact TreeSHAP (``pred_contrib``), much slower, plus :meth:`raw_score`.
        rows
            Row numbers of ``X`` to explain, in that order (default: all); the compiled trees read them
            in place (no copy of the selected rows).

        Returns
        -------
        raw : float64 ``(n,)``
            As :meth:`raw_score`.
        contrib : float64 ``(n, n_features + 1)``
            Columns ``feature_names_in_ + ["bias"]``; each row sums to ``raw`` up to float rounding.
        """
        check_is_fitted(self, "booster_")
        _check_matrix(self, X)
        if method == "path":
            forest, Xn = self._compiled_input(X)
            if forest is not None and Xn is not None:
                from training.compiled_trees import raw_and_contributions

                return raw_and_contributions(forest, self.path_tables(), Xn, rows)
        X = _take_rows(X, rows)
        threads = _threads(len(X))
        if method == "path":
            from training.tree_paths import contributions_from_leaves

            leaves = self.booster_.predict(X, pred_leaf=True, num_threads=threads)
            return contributions_from_leaves(self.path_tables(), np.asarray(leaves).reshape(len(X), -1))
        if method == "shap":
            contrib = np.asarray(self.booster_.predict(X, pred_contrib=True, num_threads=threads), dtype=float)
            return self.raw_score(X), contrib.reshape(len(X), -1)
        raise ValueError(f"reason method must be one of {', '.join(REASON_METHODS)} (got {method!r})")

    def contributions(self, X: ModelInput, method: ReasonMethod = "path") -> pd.DataFrame:
        """Per-feature contributions (log-odds) plus ``bias``; rows sum to :meth:`raw_score`.

        ``method``: ``"path"`` (Saabas path credits, the default and what batch scoring uses unless
        ``scoring.reason_method`` says otherwise) or ``"shap"`` (LightGBM TreeSHAP); see
        :meth:`raw_score_and_contributions`.
        """
        _, contrib = self.raw_score_and_contributions(X, method)
        index = X.index if isinstance(X, pd.DataFrame) else None
        return pd.DataFrame(contrib, columns=[*self.feature_names_in_, "bias"], index=index)

    def to_state(self, directory: Path, name: str) -> dict[str, Any]:
        """Save the booster next to the bundle; return the JSON-serialisable rest."""
        check_is_fitted(self, "booster_")
        return {
            "hyper": self._hyper(),
            "booster": _save_booster(self.booster_, directory, name),
            "feature_names_in_": self.feature_names_in_,
            "best_iteration_": self.best_iteration_,
            "calibrator_": self.calibrator_.to_dict(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], directory: Path) -> CalibratedBoostedClassifier:
        """Rebuild from :meth:`to_state` output."""
        est = cls(**state["hyper"])
        est.booster_ = _load_booster(directory, state["booster"])
        est.feature_names_in_ = list(state["feature_names_in_"])
        est.n_features_in_ = len(est.feature_names_in_)
        est.classes_ = np.array([0, 1])
        est.best_iteration_ = int(state["best_iteration_"])
        est.calibrator_ = ScoreCalibrator.from_dict(state["calibrator_"])
        return est


class BoostedRegressor(RegressorMixin, _BoostedBase):
    """LightGBM regressor with early stopping on held-out rows.

    ``objective`` is any LightGBM regression objective: ``regression`` (L2), ``tweedie`` (with
    ``tweedie_variance_power``), ``quantile`` (with ``alpha``). Predictions are on the response scale.
    """

    def __init__(
        self,
        objective: str = "regression",
        alpha: float | None = None,
        tweedie_variance_power: float = 1.5,
        num_boost_round: int = 600,
        early_stopping_rounds: int = 50,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        min_data_in_leaf: int = 50,
        seed: int = 42,
        monotone_constraints: dict[str, int] | None = None,
        extra_params: dict[str, Any] | None = None,
    ) -> None:
        self.objective = objective
        self.alpha = alpha
        self.tweedie_variance_power = tweedie_variance_power
        self.num_boost_round = num_boost_round
        self.early_stopping_rounds = early_stopping_rounds
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_data_in_leaf = min_data_in_leaf
        self.seed = seed
        self.monotone_constraints = monotone_constraints
        self.extra_params = extra_params

    def fit(
        self, X: pd.DataFrame, y: np.ndarray, *, X_holdout: pd.DataFrame, y_holdout: np.ndarray
    ) -> BoostedRegressor:
        """Train on ``(X, y)``, early-stop on ``(X_holdout, y_holdout)``."""
        names = list(X.columns)
        objective_params: dict[str, Any] = {}
        if self.objective == "quantile":
            objective_params["alpha"] = self.alpha
        elif self.objective == "tweedie":
            objective_params["tweedie_variance_power"] = self.tweedie_variance_power
        params = self._params(self.objective, names, **objective_params)
        self.booster_ = _train_booster(
            params,
            X,
            np.asarray(y, dtype=float),
            X_holdout,
            np.asarray(y_holdout, dtype=float),
            self.num_boost_round,
            self.early_stopping_rounds,
        )
        self.feature_names_in_ = names
        self.n_features_in_ = len(names)
        self.best_iteration_ = int(self.booster_.current_iteration())
        return self

    def predict(self, X: ModelInput) -> np.ndarray:
        """Prediction per row on the response scale (compiled trees, or LightGBM if not covered)."""
        check_is_fitted(self, "booster_")
        _check_matrix(self, X)
        forest, Xn = self._compiled_input(X)
        if forest is not None and Xn is not None:
            from training.compiled_trees import predict

            return predict(forest, Xn)
        return np.asarray(self.booster_.predict(X, num_threads=_threads(len(X))), dtype=float)

    def to_state(self, directory: Path, name: str) -> dict[str, Any]:
        check_is_fitted(self, "booster_")
        return {
            "hyper": self._hyper(),
            "booster": _save_booster(self.booster_, directory, name),
            "feature_names_in_": self.feature_names_in_,
            "best_iteration_": self.best_iteration_,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], directory: Path) -> BoostedRegressor:
        est = cls(**state["hyper"])
        est.booster_ = _load_booster(directory, state["booster"])
        est.feature_names_in_ = list(state["feature_names_in_"])
        est.n_features_in_ = len(est.feature_names_in_)
        est.best_iteration_ = int(state["best_iteration_"])
        return est


#: Two value candidates whose holdout normalized Gini differ by less than this are a tie, decided by
#: the absolute total spend error.
GINI_TIE = 0.005


class FutureValueModel(RegressorMixin, _BoostedBase):
    """Expected net spend in the next H days (shop currency), with a p10-p90 band.

    Fits two candidates and keeps the better one on the holdout rows (higher normalized Gini; within
    :data:`GINI_TIE`, smaller absolute total spend error):

    - ``hurdle``: P(spend > 0) (calibrated classifier) x E[spend | spend > 0], the latter a LightGBM L2
      regression on ``log1p(spend)`` of the buyers, back-transformed with Duan's smearing factor
      estimated on the holdout buyers (training residuals of boosted trees are too small).
    - ``tweedie``: one LightGBM regression with a Tweedie objective (zero mass plus a long tail).

    The band comes from two LightGBM quantile regressions (``alpha`` 0.1 and 0.9) of the spend; it is
    an 80% prediction interval of the spend itself, so with many zero spenders p10 is often 0 and the
    expected value may lie outside it. ``monotone_constraints`` (feature -> +1/-1; the monetary
    features get +1, see :func:`value_monotone_constraints`) apply to every part except the quantile
    models (LightGBM does not support them there), so more past spend never lowers the prediction.
    """

    def __init__(
        self,
        num_boost_round: int = 600,
        early_stopping_rounds: int = 50,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        min_data_in_leaf: int = 50,
        seed: int = 42,
        monotone_constraints: dict[str, int] | None = None,
        extra_params: dict[str, Any] | None = None,
        candidates: tuple[str, ...] = ("hurdle", "tweedie"),
        quantiles: tuple[float, float] = (0.1, 0.9),
    ) -> None:
        self.num_boost_round = num_boost_round
        self.early_stopping_rounds = early_stopping_rounds
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_data_in_leaf = min_data_in_leaf
        self.seed = seed
        self.monotone_constraints = monotone_constraints
        self.extra_params = extra_params
        self.candidates = candidates
        self.quantiles = quantiles

    def _common(self) -> dict[str, Any]:
        return {
            "num_boost_round": self.num_boost_round,
            "early_stopping_rounds": self.early_stopping_rounds,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "seed": self.seed,
            "monotone_constraints": self.monotone_constraints,
            "extra_params": self.extra_params,
        }

    def fit(
        self, X: pd.DataFrame, y: np.ndarray, *, X_holdout: pd.DataFrame, y_holdout: np.ndarray
    ) -> FutureValueModel:
        """Fit the candidates on ``(X, y)`` (spend >= 0, currency), choose on ``(X_holdout, y_holdout)``."""
        from training.metrics import value_metrics

        y = np.asarray(y, dtype=float)
        yh = np.asarray(y_holdout, dtype=float)
        unknown = set(self.candidates) - {"hurdle", "tweedie"}
        if unknown or not self.candidates:
            raise ValueError(f"candidates must be a non-empty subset of ('hurdle', 'tweedie'), got {self.candidates}")
        self.feature_names_in_ = list(X.columns)
        self.n_features_in_ = len(self.feature_names_in_)
        fitted: dict[str, dict[str, Any]] = {}
        metrics: dict[str, dict[str, float]] = {}
        if "hurdle" in self.candidates:
            parts = self._fit_hurdle(X, y, X_holdout, yh)
            fitted["hurdle"] = parts
            metrics["hurdle"] = value_metrics(yh, self._predict_hurdle(parts, X_holdout))
        if "tweedie" in self.candidates:
            tw = BoostedRegressor("tweedie", **self._common()).fit(X, y, X_holdout=X_holdout, y_holdout=yh)
            fitted["tweedie"] = {"tweedie": tw}
            metrics["tweedie"] = value_metrics(yh, tw.predict(X_holdout))
        self.candidate_metrics_ = metrics
        self.kind_ = _choose_value_candidate(metrics)
        self.parts_ = fitted[self.kind_]
        lo, hi = self.quantiles
        # LightGBM does not support monotone constraints with the quantile objective.
        q_params = {**self._common(), "monotone_constraints": None}
        self.q_low_ = BoostedRegressor("quantile", alpha=lo, **q_params).fit(X, y, X_holdout=X_holdout, y_holdout=yh)
        self.q_high_ = BoostedRegressor("quantile", alpha=hi, **q_params).fit(X, y, X_holdout=X_holdout, y_holdout=yh)
        log.info(
            "value model: kept %s (holdout normalized Gini %s)",
            self.kind_,
            ", ".join(f"{k} {m['normalized_gini']:.4f}" for k, m in metrics.items()),
        )
        return self

    def _fit_hurdle(self, X: pd.DataFrame, y: np.ndarray, Xh: pd.DataFrame, yh: np.ndarray) -> dict[str, Any]:
        buy = CalibratedBoostedClassifier(**self._common()).fit(
            X, (y > 0).astype(float), X_holdout=Xh, y_holdout=(yh > 0).astype(float)
        )
        pos, pos_h = y > 0, yh > 0
        spend = BoostedRegressor("regression", **self._common()).fit(
            X.loc[pos], np.log1p(y[pos]), X_holdout=Xh.loc[pos_h], y_holdout=np.log1p(yh[pos_h])
        )
        resid = np.log1p(yh[pos_h]) - spend.predict(Xh.loc[pos_h])
        smearing = float(np.mean(np.exp(resid)))
        return {"buy": buy, "spend": spend, "smearing": smearing}

    @staticmethod
    def _predict_hurdle(parts: dict[str, Any], X: ModelInput) -> np.ndarray:
        return FutureValueModel._hurdle_value(parts["buy"].predict_proba(X)[:, 1], parts["spend"].predict(X),
                                              parts["smearing"])

    @staticmethod
    def _hurdle_value(p_buy: np.ndarray, log_spend: np.ndarray, smearing: float) -> np.ndarray:
        """P(buy) x E[spend | buy] from the buy probability and the spend model's log1p(spend) prediction."""
        spend_if_buy = np.maximum(np.exp(log_spend) * smearing - 1.0, 0.0)
        return p_buy * spend_if_buy

    @staticmethod
    def _band(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(p10, p90) from the two quantile models' predictions: clipped at 0 and ordered."""
        lo = np.maximum(lo, 0.0)
        hi = np.maximum(hi, 0.0)
        # Separately fitted quantile models can cross; order them rather than report lo > hi.
        return np.minimum(lo, hi), np.maximum(lo, hi)

    def predict(self, X: ModelInput) -> np.ndarray:
        """Expected net spend in the next H days per row (currency, >= 0)."""
        check_is_fitted(self, "kind_")
        _check_matrix(self, X)
        if self.kind_ == "hurdle":
            return self._predict_hurdle(self.parts_, X)
        return np.maximum(self.parts_["tweedie"].predict(X), 0.0)

    def predict_interval(self, X: ModelInput) -> tuple[np.ndarray, np.ndarray]:
        """(p10, p90) of the spend in the next H days per row (currency, 0 <= p10 <= p90)."""
        check_is_fitted(self, "kind_")
        return self._band(self.q_low_.predict(X), self.q_high_.predict(X))

    def predict_with_interval(self, X: ModelInput) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(:meth:`predict`, *:meth:`predict_interval`) per row: value, p10, p90 (currency).

        With compiled trees for every part (``scoring.tree_engine = "compiled"``) and a float64 NumPy
        matrix, every part is evaluated in one walk of the rows (:func:`training.compiled_trees.predict_group`,
        each row's columns filled once); else each part predicts on its own. The same numbers either way.
        """
        group = self._compiled_group() if isinstance(X, np.ndarray) and X.dtype == np.float64 and len(X) else None
        if group is None or not isinstance(X, np.ndarray):
            return (self.predict(X), *self.predict_interval(X))
        _check_matrix(self, X)
        from training.compiled_trees import predict_group

        return self.predict_from_raw(predict_group(group[0], X, raw_score=True), group[1])

    def _compiled_group(self) -> tuple[Any, list[CompiledForest]] | None:
        """(ForestGroup of :meth:`boosted_parts`, their forests), or None unless every part is compiled.

        Cached here, keyed on the parts, their engine switches and boosters (held, so ids stay theirs)."""
        parts = self.boosted_parts()

        def build() -> tuple[Any, list[CompiledForest]] | None:
            forests = [p.compiled_trees() for p in parts]
            held = [f for f in forests if f is not None]
            if len(held) != len(forests):
                return None
            from training.compiled_trees import compile_group  # numba: only when every part is compiled

            return compile_group(held), held

        return cached_for_models(self, parts, build)

    def boosted_parts(self) -> list[CalibratedBoostedClassifier | BoostedRegressor]:
        """The LightGBM models behind :meth:`predict` and :meth:`predict_interval`, in the order
        :meth:`predict_from_parts` takes their outputs: the hurdle's buy classifier and spend
        regression (or the Tweedie regression), then the p10 and p90 quantile regressions."""
        if getattr(self, "kind_", None) is None:  # sklearn's check costs microseconds, per API call
            check_is_fitted(self, "kind_")
        main = ["buy", "spend"] if self.kind_ == "hurdle" else ["tweedie"]
        return [*(self.parts_[k] for k in main), self.q_low_, self.q_high_]

    def predict_from_raw(
        self, raw: np.ndarray, forests: list[CompiledForest]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`predict_from_parts` from the raw scores of :meth:`boosted_parts` (``raw``: float64
        ``(n_parts, n)``, one row per part, e.g. :func:`training.compiled_trees.predict_group` with
        ``raw_score=True``) and the parts' compiled ``forests``: each regressor's row is brought to the
        response scale in place (its forest's transform, as ``predict`` does) first."""
        from training.compiled_trees import to_response_scale

        for part, forest, row in zip(self.boosted_parts(), forests, raw, strict=True):
            if not isinstance(part, CalibratedBoostedClassifier):  # regressors: response scale, as predict()
                to_response_scale(forest, row)
        return self.predict_from_parts(list(raw))

    def predict_from_parts(self, outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`predict` and :meth:`predict_interval` from the outputs of :meth:`boosted_parts` on the rows.

        ``outputs``: per part, in that order, a classifier's raw score (log-odds, as ``raw_score``) and a
        regressor's prediction on the response scale (as ``predict``). Returns ``(value, p10, p90)``
        (currency), the same numbers as :meth:`predict` and :meth:`predict_interval` compute from ``X``.
        """
        expected = len(self.boosted_parts())
        if len(outputs) != expected:
            raise ValueError(f"expected {expected} part outputs, got {len(outputs)}")
        if self.kind_ == "hurdle":
            p_buy = self.parts_["buy"].proba_from_raw(outputs[0])
            value = self._hurdle_value(p_buy, outputs[1], self.parts_["smearing"])
        else:
            value = np.maximum(outputs[0], 0.0)
        p10, p90 = self._band(outputs[-2], outputs[-1])
        return value, p10, p90

    def to_state(self, directory: Path, name: str) -> dict[str, Any]:
        check_is_fitted(self, "kind_")
        hyper = self._hyper()
        hyper["candidates"] = list(hyper["candidates"])
        hyper["quantiles"] = list(hyper["quantiles"])
        parts: dict[str, Any] = {}
        for key, part in self.parts_.items():
            parts[key] = part if isinstance(part, float) else part.to_state(directory, f"{name}_{key}")
        return {
            "hyper": hyper,
            "feature_names_in_": self.feature_names_in_,
            "kind_": self.kind_,
            "candidate_metrics_": self.candidate_metrics_,
            "parts_": parts,
            "q_low_": self.q_low_.to_state(directory, f"{name}_q_low"),
            "q_high_": self.q_high_.to_state(directory, f"{name}_q_high"),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], directory: Path) -> FutureValueModel:
        hyper = dict(state["hyper"])
        hyper["candidates"] = tuple(hyper["candidates"])
        hyper["quantiles"] = tuple(hyper["quantiles"])
        est = cls(**hyper)
        est.feature_names_in_ = list(state["feature_names_in_"])
        est.n_features_in_ = len(est.feature_names_in_)
        est.kind_ = state["kind_"]
        est.candidate_metrics_ = state["candidate_metrics_"]
        parts: dict[str, Any] = {}
        for key, part in state["parts_"].items():
            if key == "smearing":
                parts[key] = float(part)
            elif key == "buy":
                parts[key] = CalibratedBoostedClassifier.from_state(part, directory)
            else:
                parts[key] = BoostedRegressor.from_state(part, directory)
        est.parts_ = parts
        est.q_low_ = BoostedRegressor.from_state(state["q_low_"], directory)
        est.q_high_ = BoostedRegressor.from_state(state["q_high_"], directory)
        return est


def _choose_value_candidate(metrics: dict[str, dict[str, float]]) -> str:
    """Higher normalized Gini wins; within :data:`GINI_TIE`, smaller absolute total spend error."""

    def gini(k: str) -> float:
        g = metrics[k]["normalized_gini"]
        return g if np.isfinite(g) else -np.inf

    def spend_err(k: str) -> float:
        e = metrics[k]["total_spend_error_pct"]
        return abs(e) if np.isfinite(e) else np.inf

    names = list(metrics)
    best = names[0]
    for k in names[1:]:
        if gini(k) > gini(best) + GINI_TIE or (abs(gini(k) - gini(best)) <= GINI_TIE and spend_err(k) < spend_err(best)):
            best = k
    return best


def estimator_params(
    learning_rate: float,
    num_leaves: int,
    min_data_in_leaf: int,
    num_boost_round: int,
    early_stopping_rounds: int,
    seed: int,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Keyword arguments shared by the estimators; ``overrides`` (e.g. from tuning) win.

    Keys of ``overrides`` that are not estimator arguments (``feature_fraction``, ``lambda_l2``...)
    go to LightGBM via ``extra_params``.
    """
    params: dict[str, Any] = {
        "learning_rate": learning_rate,
        "num_leaves": num_leaves,
        "min_data_in_leaf": min_data_in_leaf,
        "num_boost_round": num_boost_round,
        "early_stopping_rounds": early_stopping_rounds,
        "seed": seed,
    }
    extra: dict[str, Any] = {}
    for k, v in (overrides or {}).items():
        if k in params:
            params[k] = v
        else:
            extra[k] = v
    params["extra_params"] = extra or None
    return params
