"""The one scorer: features in, one row per user out (scores, layers, reasons, interventions).

Batch scoring, the online API and the report all go through :class:`Scorer`, so a user scored alone
gets exactly the row they get in a batch: every per-user step depends only on that user's features and
on what the model bundle froze at training time (feature list, categorical levels, RFM thresholds,
the high-potential value threshold). The only cross-user step is the budget allocation, which runs
only when a budget is given.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.config import StrataConfig
from features.errors import StrataError
from features.layers import assign_layers
from features.rfm_segments import RfmThresholds, rfm_thresholds
from serving.interventions import (
    Allocation,
    action_columns,
    allocate_budget,
    candidate_actions,
    select_without_budget,
)
from serving.reasons import feature_labels, reason_texts
from serving.refinement import refine_layers

if TYPE_CHECKING:
    from features.dataset import Dataset
    from training.bundle import ExplainedPrediction, ModelBundle

log = logging.getLogger(__name__)

#: The scorer's output columns, in order (the batch table, the API and the online store use them).
OUTPUT_COLUMNS: list[str] = [
    "user_id",
    "as_of",
    "model_name",
    "model_version",
    "churn_risk",
    "conversion_prob",
    "predicted_value",
    "value_p10",
    "value_p90",
    "lifecycle",
    "rfm_segment",
    "value_tier",
    "activity_tier",
    "refined_layer",
    "reasons",
    "action_id",
    "action_name",
    "action_cost",
    "expected_incremental_value",
    "control",
    "interventions",
]

#: Columns of a scored frame before interventions are attached.
CORE_COLUMNS: list[str] = OUTPUT_COLUMNS[: OUTPUT_COLUMNS.index("reasons") + 1]


class ScoringInputError(StrataError):
    """The rows to score are unusable (missing key columns, duplicate users)."""


@dataclass
class ModelPass:
    """The model work of :meth:`Scorer.score_core` for some rows (:meth:`Scorer.model_pass`): the
    predictions (as :meth:`training.bundle.ModelBundle.predict`) and the reason texts. The contributions
    behind the reasons are not kept: the largest arrays of a chunk, needed only to make the texts."""

    predictions: pd.DataFrame
    reasons: Any
    arrow_text: bool


@dataclass
class ScoredCore:
    """Per-user scores without the action columns, and every eligible (user, action) candidate."""

    scores: pd.DataFrame
    candidates: pd.DataFrame


class Scorer:
    """Scores feature rows with a model bundle.

    Parameters
    ----------
    bundle
        The trained :class:`training.bundle.ModelBundle`.
    config
        The configuration in effect (layer thresholds, refinement, playbook).
    model_name, model_version, model_alias
        Registry identity of the bundle, copied into every output row and :meth:`metadata`.
    """

    def __init__(
        self,
        bundle: ModelBundle,
        config: StrataConfig,
        model_name: str,
        model_version: str,
        model_alias: str | None = None,
    ) -> None:
        self.bundle = bundle
        bundle.set_tree_engine(config.scoring.tree_engine)
        self.config = config
        self.model_name = model_name
        self.model_version = str(model_version)
        self.model_alias = model_alias
        self.rfm_thresholds = frozen_rfm_thresholds(bundle, config)
        self.high_value_threshold = frozen_high_value_threshold(bundle)
        self._labels = feature_labels(bundle.feature_names, config)

    # -- construction ---------------------------------------------------------------------------------
    @classmethod
    def from_registry(cls, config: StrataConfig, alias: str = "champion") -> Scorer:
        """The scorer of ``models:/<config.training.model_name>@<alias>`` in the MLflow registry."""
        from mlflow.exceptions import MlflowException

        from features.errors import ModelNotFoundError
        from training.pyfunc import load_bundle
        from training.tracking import tracking_client

        name = config.training.model_name
        client = tracking_client(config)
        try:
            version = str(client.get_model_version_by_alias(name, alias).version)
        except MlflowException as err:
            raise ModelNotFoundError(
                f"models:/{name}@{alias}: no such registered model alias ({err.message.splitlines()[0]}); "
                "train a model with `strata train` and promote it with `strata promote`"
            ) from None
        # Load by version, not alias: the alias may move while we load, the version may not.
        bundle = load_bundle(f"models:/{name}/{version}", config)
        return cls(bundle, config, model_name=name, model_version=version, model_alias=alias)

    def metadata(self) -> dict[str, Any]:
        """Model identity and what it expects: name, version, alias, trained_at, features, horizon (days)."""
        return {
            "model_name": self.model_name,
            "model_version": self.model_version,
            "model_alias": self.model_alias,
            "trained_at": self.bundle.trained_at,
            "features": list(self.bundle.feature_names),
            "categorical_features": sorted(self.bundle.categorical_levels),
            "horizon_days": int(self.bundle.horizon_days),
        }

    # -- scoring ----------------------------------------------------------------------------------------
    def score_raw(
        self,
        dataset: Dataset,
        as_of: pd.Timestamp,
        *,
        budget: float | None = None,
        last_contacted: pd.DataFrame | None = None,
    ) -> pd.DataFrame:
        """Build features from raw tables as of ``as_of`` and score them (see :meth:`score_features`)."""
        from features.pipeline import build_features

        features = build_features(dataset, as_of, self.config)
        return self.score_features(features, budget=budget, last_contacted=last_contacted)

    def score_features(
        self,
        features: pd.DataFrame,
        *,
        budget: float | None = None,
        last_contacted: pd.DataFrame | None = None,
    ) -> pd.DataFrame:
        """Score a feature table: one output row per user, :data:`OUTPUT_COLUMNS`, in input order.

        Parameters
        ----------
        features
            As made by :func:`features.pipeline.build_features` (``user_id``, ``as_of``, features).
        budget
            Total cost (shop currency) the treated actions may use; None: no budget (each user gets
            their best positive action), and no cross-user step.
        last_contacted
            Optional contact history (``user_id, action_id, last_contacted_at``) for frequency caps.
        """
        core = self.score_core(features, last_contacted=last_contacted)
        if budget is None:
            selected = select_without_budget(core.candidates, self.config.interventions.max_actions_per_user)
        else:
            selected = self.allocate(core.candidates, budget).candidates
        return self.finish(core.scores, selected)

    def allocate(self, candidates: pd.DataFrame, budget: float) -> Allocation:
        """Budgeted greedy allocation of the candidates (see :func:`serving.interventions.allocate_budget`)."""
        return allocate_budget(candidates, float(budget), self.config.interventions.max_actions_per_user)

    def explain(self, features: pd.DataFrame) -> ExplainedPrediction:
        """Scores per row and the contributions behind the reasons (one pass of the trees)."""
        _check_input(features)
        # One pass per classifier gives both its score and the contributions behind the reasons.
        return self.bundle.predict_explained(features, self.config.scoring.reason_method)

    def model_pass(self, features: pd.DataFrame, *, arrow_text: bool = False) -> ModelPass:
        """:meth:`explain` and the reason texts: the part of :meth:`score_core` that is mostly compiled
        code releasing the GIL (LightGBM, numba, Arrow), so a batch runs it on helper threads while the
        calling thread post-processes another chunk; pass the result to :meth:`score_core`."""
        explained = self.explain(features)
        return ModelPass(explained.scores, self._reasons(features, explained, arrow_text), arrow_text)

    def score_core(
        self,
        features: pd.DataFrame,
        *,
        last_contacted: pd.DataFrame | None = None,
        arrow_text: bool = False,
        model_pass: ModelPass | None = None,
    ) -> ScoredCore:
        """Everything per user: scores, rule and refined layers, reasons and the eligible actions.

        The candidates' ``selected`` flags are all False; pick with :func:`select_without_budget` or
        :meth:`allocate`, then :meth:`finish`. With ``arrow_text`` the ``reasons`` column holds the same
        texts as a pyarrow-backed ``string`` column instead of Python strings (for writers that go
        straight to Arrow: the batch part files); every other column is unchanged. ``model_pass``: the
        result of :meth:`model_pass` on these same ``features`` with the same ``arrow_text``, if already
        computed.
        """
        if model_pass is None:
            model_pass = self.model_pass(features, arrow_text=arrow_text)
        elif model_pass.arrow_text != arrow_text:
            raise ValueError("score_core: model_pass was made with another arrow_text")
        index = features.index
        preds = model_pass.predictions
        if len(preds) != len(features) or not np.array_equal(
            preds["user_id"].to_numpy(dtype=object), features["user_id"].astype(str).to_numpy(dtype=object)
        ):
            raise StrataError("model bundle returned predictions that do not line up with the input rows")
        preds.index = index
        layers = assign_layers(features, self.config, thresholds=self.rfm_thresholds)
        layers.index = index
        refined = refine_layers(
            layers["lifecycle"],
            preds["churn_risk"],
            preds["conversion_prob"],
            preds["predicted_value"],
            self.config.refinement,
            self.high_value_threshold,
        )
        out = pd.DataFrame(index=index)
        out["user_id"] = features["user_id"].astype(str).to_numpy()
        out["as_of"] = pd.to_datetime(features["as_of"], utc=True).astype("datetime64[ns, UTC]").array
        out["model_name"] = self.model_name
        out["model_version"] = self.model_version
        for col in ("churn_risk", "conversion_prob", "predicted_value", "value_p10", "value_p90"):
            out[col] = preds[col].to_numpy(dtype=float)
        for col in ("lifecycle", "rfm_segment", "value_tier", "activity_tier"):
            out[col] = layers[col].to_numpy(dtype=object)
        out["refined_layer"] = refined.to_numpy(dtype=object)
        out["reasons"] = model_pass.reasons
        candidates = candidate_actions(out, self.config.interventions, last_contacted=last_contacted)
        return ScoredCore(scores=out[CORE_COLUMNS], candidates=candidates)

    def finish(
        self, scores: pd.DataFrame, selected_candidates: pd.DataFrame, *, arrow_text: bool = False
    ) -> pd.DataFrame:
        """Attach the action columns of the selected candidates to core scores (:data:`OUTPUT_COLUMNS`).

        ``arrow_text``: ``interventions`` as a pyarrow-backed ``string`` column (see :meth:`score_core`).
        """
        actions = action_columns(
            scores["user_id"], selected_candidates, self.config.interventions, arrow_text=arrow_text
        )
        out = pd.concat([scores[CORE_COLUMNS], actions], axis=1)
        return out[OUTPUT_COLUMNS]

    def _reasons(self, features: pd.DataFrame, explained: ExplainedPrediction, arrow_text: bool = False) -> Any:
        """Reason JSON per row: churn-score reasons for buyers, conversion reasons for prospects, else ``[]``.

        An object array of str, or with ``arrow_text`` a pyarrow-backed pandas array of the same texts.
        """
        n = len(features)
        reasons = np.full(n, "[]", dtype=object)
        names = explained.feature_names
        positions = list(range(len(names)))  # the bias (last column) is never a reason
        texts: list[tuple[np.ndarray, Any]] = []
        for rows, contrib, score in (
            (explained.churn_rows, explained.churn_contributions, "churn_risk"),
            (explained.conversion_rows, explained.conversion_contributions, "conversion_prob"),
        ):
            if contrib is None or not rows.any():
                continue
            # As reason_codes on a contributions frame, without building the frame or copying features.
            text = reason_texts(
                contrib, positions, names, features, None if rows.all() else rows, labels=self._labels, score=score,
                as_arrow=arrow_text,
            )
            if arrow_text:
                texts.append((rows, text))
            else:
                reasons[rows] = text
        return _arrow_rows(texts, n) if arrow_text else reasons


def _arrow_rows(texts: list[tuple[np.ndarray, Any]], n: int) -> Any:
    """One pyarrow-backed string column of ``n`` rows from (row mask, texts of those rows) pieces;
    rows no piece covers get ``[]``."""
    from serving.reason_text import merge_texts

    if len(texts) == 1 and texts[0][0].all():
        arr = texts[0][1]
    else:
        arr = merge_texts([(np.flatnonzero(rows), text) for rows, text in texts], n, "[]")
    return pd.arrays.ArrowExtensionArray(arr)


def _check_input(features: pd.DataFrame) -> None:
    missing = [c for c in ("user_id", "as_of") if c not in features.columns]
    if missing:
        raise ScoringInputError(
            f"features: missing column(s) {', '.join(missing)} (expected the output of build_features)"
        )
    ids = features["user_id"].astype(str)
    dup = ids.duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise ScoringInputError(f"features: row {i}: duplicate user_id {ids.iloc[i]!r} (one row per user expected)")
    as_of = pd.to_datetime(features["as_of"], utc=True, errors="coerce")
    if as_of.isna().any():
        i = int(np.flatnonzero(as_of.isna().to_numpy())[0])
        raise ScoringInputError(f"features: column as_of: row {i}: value {features['as_of'].iloc[i]!r} is not a timestamp")


def frozen_rfm_thresholds(bundle: Any, config: StrataConfig) -> RfmThresholds:
    """RFM thresholds for scoring: the configured ones in ``fixed`` mode, else those frozen in the bundle.

    In ``quantile`` mode the medians come from the training population (the bundle), never from the
    batch being scored, so a user's segment does not depend on who else is scored with them.
    """
    cfg = config.layers.rfm
    if cfg.mode == "fixed":
        return rfm_thresholds(pd.DataFrame(), cfg)
    frozen = getattr(bundle, "rfm_thresholds", None) or {}
    try:
        return RfmThresholds(
            mode="quantile",
            recency_days=float(frozen["recency_days"]),
            frequency_orders=float(frozen["frequency_orders"]),
            monetary_spend=float(frozen["monetary_spend"]),
            strict=bool(frozen.get("strict", True)),
        )
    except (KeyError, TypeError, ValueError):
        raise StrataError(
            "model bundle has no frozen RFM thresholds (layers.rfm.mode = 'quantile' needs them); "
            "retrain the model with this version, or set layers.rfm.mode = 'fixed'"
        ) from None


def frozen_high_value_threshold(bundle: Any) -> float:
    """Predicted value (shop currency) from which a ``new`` buyer is high-potential, frozen in the bundle."""
    value = getattr(bundle, "high_potential_value", None)
    if value is None:
        raise StrataError(
            "model bundle has no frozen high-potential value threshold; retrain the model with this version"
        )
    return float(value)
