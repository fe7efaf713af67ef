"""The small-n fast path of the online API: a few feature rows scored with NumPy, no pandas.

:class:`serving.scorer.Scorer` is built for tables: scoring one row through it costs 30-60 ms of pandas
overhead (frame construction, LightGBM's pandas conversion, per-column Series operations), almost none
of it arithmetic. :class:`FastScorer` computes the same answer for the few rows an API call brings:

- the model matrix is a float64 NumPy array in the bundle's feature order, categorical features as
  their level codes (exactly what LightGBM makes of the bundle's pandas categoricals), and the same
  LightGBM boosters, calibrators, value-model composition and p10/p90 band are applied to it;
- rule layers and refinement are computed by the array functions that define them (the batch
  path's pandas functions wrap the same ones): :func:`features.lifecycle.lifecycle_rules`,
  :func:`features.rfm_segments.rfm_flags`, :func:`features.tiers.value_tier_codes`,
  :func:`features.tiers.activity_tier_codes`, :func:`serving.refinement.refined_layer_codes`;
  reason codes and interventions follow :mod:`serving.reasons` and :mod:`serving.interventions` on
  NumPy arrays and Python strings, reusing their array functions (expected incremental value,
  control hashes, top-k and number formatting of the reasons);
- churn and conversion scores and the contributions behind the reason codes are computed as
  ``ModelBundle.predict_explained`` computes them (``model.raw_score_and_contributions`` with
  ``scoring.reason_method``); the same LightGBM calls on the NumPy matrix are used instead once they
  gave bit-identical numbers on probe rows for the model, else the batch method itself is called on a
  pandas matrix (checked once per model, see :meth:`FastScorer._raw_and_contributions`).

What it does not do: budgets and contact-history frequency caps (cross-user or history inputs the
online API never passes; :meth:`Scorer.score_features` handles them). Rows it cannot represent
(a model feature that is neither a float column nor a known categorical, missing layer columns)
raise :class:`FastPathUnsupported` so the caller falls back to the batch scorer, which then either
scores them or raises the error batch scoring raises.

Equality with the batch scorer is a tested property (tests/serving/test_fast_scorer.py): every user of
a demo store gets the same JSON, bytes for bytes; :func:`mismatches` compares the two paths on any
rows, and the service runs it at every model load before it trusts the fast path.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from features.lifecycle import LIFECYCLE_COLUMNS, lifecycle_rules, lifecycle_stages
from features.rfm_segments import rfm_flags, rfm_segment_codes
from features.tiers import VALUE_WINDOW_DAYS, activity_tier_codes, value_tier_codes
from serving.interventions import Playbook, expected_incremental_value, mix64, stable_hash64
from serving.reasons import (
    VALUE_DIGITS,
    feature_labels,
    float_texts,
    number_texts,
    rounded_texts,
    top_indices,
)
from serving.refinement import refined_layer_codes

if TYPE_CHECKING:
    import pandas as pd

    from serving.scorer import Scorer

log = logging.getLogger(__name__)

UNKNOWN_LEVEL = "unknown"
# The rule layers' inputs: lifecycle's own list plus what the value and activity tiers read.
_LAYER_INPUTS = (*LIFECYCLE_COLUMNS, "spend_total", f"spend_{VALUE_WINDOW_DAYS}d", "active_days_30d")
_REASONS_TOP_N = 3


class FastPathUnsupported(Exception):
    """These rows (or this bundle) need the batch scorer; not an error of the caller."""


@dataclass
class FeatureRows:
    """Feature rows as plain arrays: what the fast path scores.

    Attributes
    ----------
    user_ids : one id per row.
    as_of : ISO 8601 text of each row's cutoff, in UTC (``Timestamp.isoformat()`` of the batch output).
    numeric_names, numeric : float64 feature columns (``(n, len(numeric_names))``, NaN for missing).
    strings : the other feature columns (categoricals), one list of values (str or None) per column.
    """

    user_ids: list[str]
    as_of: list[str]
    numeric_names: list[str]
    numeric: np.ndarray
    strings: dict[str, list[Any]]

    def __len__(self) -> int:
        return len(self.user_ids)

    @classmethod
    def from_frame(cls, features: pd.DataFrame) -> FeatureRows:
        """The rows of a feature table (``build_features`` layout); float64 and integer columns are numeric."""
        import pandas as pd

        for col in ("user_id", "as_of"):
            if col not in features.columns:
                raise FastPathUnsupported(f"features lack column {col}")
        numeric_names: list[str] = []
        strings: dict[str, list[Any]] = {}
        for c in features.columns:
            if c in ("user_id", "as_of"):
                continue
            dt = features[c].dtype
            if pd.api.types.is_numeric_dtype(dt) and not pd.api.types.is_bool_dtype(dt):
                numeric_names.append(str(c))
            else:
                values = features[c].astype(object)
                strings[str(c)] = values.where(values.notna(), None).tolist()
        n = len(features)
        numeric = (features[numeric_names].to_numpy(dtype=np.float64, na_value=np.nan) if numeric_names
                   else np.empty((n, 0)))
        as_of = pd.to_datetime(features["as_of"], utc=True).astype("datetime64[ns, UTC]")
        return cls(
            user_ids=features["user_id"].astype(str).tolist(),
            as_of=[t.isoformat() for t in as_of],
            numeric_names=numeric_names,
            numeric=np.ascontiguousarray(numeric, dtype=np.float64).reshape(n, len(numeric_names)),
            strings=strings,
        )

    def to_frame(self) -> pd.DataFrame:
        """The same rows as a feature table (for the batch scorer)."""
        import pandas as pd

        data: dict[str, Any] = {
            "user_id": pd.Series(self.user_ids, dtype=object),
            "as_of": pd.to_datetime(pd.Series(self.as_of, dtype=object), utc=True).astype("datetime64[ns, UTC]"),
        }
        for j, c in enumerate(self.numeric_names):
            data[c] = pd.Series(self.numeric[:, j].copy(), dtype="float64")
        for c, values in self.strings.items():
            data[c] = pd.Series(values, dtype=object)
        return pd.DataFrame(data)


@dataclass(frozen=True)
class _MatrixPlan:
    """Column positions of one :class:`FeatureRows` layout: numeric column index by name, the model
    matrix columns ``dst`` filled from numeric columns ``src``, the categorical (column, feature) pairs,
    and why no model matrix can be built from it (None: it can)."""

    col: dict[str, int]
    dst: np.ndarray
    src: np.ndarray
    cats: list[tuple[int, str]]
    error: str | None


class FastScorer:
    """Scores a few feature rows exactly as :meth:`Scorer.score_features` (``budget=None``) does.

    Parameters
    ----------
    scorer
        The batch scorer of the served version: its bundle, configuration, frozen thresholds and
        identity are used as they are.

    Raises
    ------
    FastPathUnsupported
        When the bundle holds a model this path does not know how to apply (the caller keeps using
        the batch scorer).
    """

    def __init__(self, scorer: Scorer) -> None:
        bundle = scorer.bundle
        self.scorer = scorer
        self.config = scorer.config
        self.feature_names: list[str] = list(bundle.feature_names)
        self.levels: dict[str, list[str]] = {k: list(v) for k, v in bundle.categorical_levels.items()}
        self._level_codes = {f: {lv: float(i) for i, lv in enumerate(levels)} for f, levels in self.levels.items()}
        cats = [f for f in self.feature_names if f in self.levels]
        value = bundle.value_model
        boosters = [bundle.churn_model.booster_, value.q_low_.booster_, value.q_high_.booster_]
        boosters += [p.booster_ for k, p in value.parts_.items() if k != "smearing"]
        if bundle.conversion_model is not None:
            boosters.append(bundle.conversion_model.booster_)
        for b in boosters:
            # LightGBM codes a pandas categorical by its position in the training categories: the
            # NumPy codes below are those positions only if the booster saw the bundle's levels.
            if list(getattr(b, "pandas_categorical", None) or []) != [self.levels[c] for c in cats]:
                raise FastPathUnsupported("a booster's categorical levels differ from the bundle's")
            if b.num_feature() != len(self.feature_names):
                raise FastPathUnsupported("a booster's feature count differs from the bundle's")
        if value.kind_ not in ("hurdle", "tweedie"):
            raise FastPathUnsupported(f"value model kind {value.kind_!r}")
        self.reason_method = self.config.scoring.reason_method
        self.value = value
        self.rfm = scorer.rfm_thresholds
        self.high_value = float(scorer.high_value_threshold)
        self.labels = feature_labels(self.feature_names, self.config)
        self._reason_prefix = [
            '{"feature": ' + json.dumps(name) + ', "label": '
            + json.dumps(self.labels.get(name, name), ensure_ascii=False) + ', "value": '
            for name in self.feature_names
        ]
        playbook = Playbook.from_config(self.config.interventions)
        # Actions in id order: ties of expected value are broken by action id (as in batch).
        self._actions = sorted(playbook.actions, key=lambda a: a.id)
        self._action_prefix = {
            a.id: '{"action_id": ' + json.dumps(a.id) + ', "name": ' + json.dumps(a.name, ensure_ascii=False)
            + ', "channel": ' + json.dumps(a.channel) + ', "cost": ' + format(float(a.unit_cost), ".10g")
            + ', "expected_incremental_value": '
            for a in playbook.actions
        }
        # Control groups: the pair hash is mix64(blake64(user) ^ mix64(blake64(action))) (as
        # serving.interventions.control_flags); the action half is fixed, so it is hashed once here.
        self._action_hash = mix64(stable_hash64([a.id for a in self._actions]))
        share = self.config.interventions.control_share
        self._control_limit = np.uint64(min(int(share * 2.0**64), 2**64 - 1)) if share > 0 else None
        self._contrib_numpy: dict[int, bool] = {}
        self._plans: dict[tuple[tuple[str, ...], tuple[str, ...]], _MatrixPlan] = {}

    # -- model matrix --------------------------------------------------------------------------------
    def _plan(self, rows: FeatureRows) -> _MatrixPlan:
        """Where each model feature comes from in ``rows`` (cached per column layout: the online store
        always hands over the same one)."""
        key = (tuple(rows.numeric_names), tuple(rows.strings))
        plan = self._plans.get(key)
        if plan is None:
            col = {c: j for j, c in enumerate(rows.numeric_names)}
            dst: list[int] = []
            src: list[int] = []
            cats: list[tuple[int, str]] = []
            error = None
            for k, f in enumerate(self.feature_names):
                if f in self.levels:
                    if f in rows.strings:
                        cats.append((k, f))
                    else:
                        error = error or (f"categorical feature {f} arrives as a number" if f in col
                                          else f"missing feature {f}")
                elif f in col:
                    dst.append(k)
                    src.append(col[f])
                else:
                    error = error or f"feature {f} is missing or not numeric"
            plan = _MatrixPlan(col, np.asarray(dst, dtype=np.intp), np.asarray(src, dtype=np.intp), cats, error)
            if len(self._plans) >= 16:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def model_matrix(self, rows: FeatureRows) -> np.ndarray:
        """The float64 model input ``(n, n_features)``: numeric features as they are, categoricals as codes."""
        plan = self._plan(rows)
        if plan.error is not None:
            raise FastPathUnsupported(plan.error)
        X = np.empty((len(rows), len(self.feature_names)), dtype=np.float64)
        X[:, plan.dst] = rows.numeric[:, plan.src]
        for k, f in plan.cats:
            codes = self._level_codes[f]
            unknown = codes[UNKNOWN_LEVEL]
            values: Sequence[Any] = rows.strings[f]
            X[:, k] = [unknown if _missing(v) else codes.get(str(v), unknown) for v in values]
        return X

    def _column(self, rows: FeatureRows, name: str) -> np.ndarray:
        j = self._plan(rows).col.get(name)
        if j is None:
            raise FastPathUnsupported(f"layer input {name} is missing or not numeric")
        return rows.numeric[:, j]

    # -- scores ------------------------------------------------------------------------------------------
    def predict(self, rows: FeatureRows, X: np.ndarray) -> tuple[dict[str, np.ndarray], list[tuple[np.ndarray, np.ndarray, str]]]:
        """Scores per row as :meth:`training.bundle.ModelBundle.predict_explained` gives them.

        Returns ``churn_risk``, ``conversion_prob``, ``predicted_value``, ``value_p10``, ``value_p90``
        arrays, and for the churn and the conversion model the rows they scored, the contributions
        behind those scores (columns ``feature_names + ["bias"]``) and the score's name.
        """
        n = len(rows)
        from training.models import PROSPECT_COLUMN

        flag = self._column(rows, PROSPECT_COLUMN)
        prospect = np.where(np.isnan(flag), 0.0, flag) >= 0.5
        buyers = ~prospect
        bundle = self.scorer.bundle
        has_conv = prospect & (bundle.conversion_model is not None)
        explained: list[tuple[np.ndarray, np.ndarray, str]] = []
        if n and self.reason_method == "path" and bundle.has_fused_trees():
            # One walk of the compiled trees per row: the classifier with its path credits and every value
            # booster (what batch scoring runs on the same matrix).
            scores, fused = bundle.predict_matrix(X, prospect, "path")
            for key, mask, score in (("churn", buyers, "churn_risk"), ("conversion", has_conv, "conversion_prob")):
                c = fused[key]
                if c is not None and mask.any():
                    explained.append((mask, c, score))
            return scores, explained
        churn = np.full(n, np.nan)
        conv = np.full(n, np.nan)
        for model, mask, out, score in ((bundle.churn_model, buyers, churn, "churn_risk"),
                                        (bundle.conversion_model, has_conv, conv, "conversion_prob")):
            if model is None or not mask.any():
                continue
            raw, contrib = self._raw_and_contributions(model, X if mask.all() else X[mask])
            out[mask] = model.proba_from_raw(raw)
            explained.append((mask, contrib, score))
        if n == 0:
            value = p10 = p90 = np.zeros(0)
        else:
            # FutureValueModel.predict_with_interval: with compiled trees, one numba call walks every value
            # booster; with LightGBM, each booster predicts.
            value, p10, p90 = self.value.predict_with_interval(X)
        preds = {"churn_risk": churn, "conversion_prob": conv, "predicted_value": value,
                 "value_p10": p10, "value_p90": p90}
        return preds, explained

    # -- rule layers -------------------------------------------------------------------------------------
    def layers(self, rows: FeatureRows) -> dict[str, np.ndarray]:
        """The four rule layers per row (``features.layers.assign_layers`` on arrays)."""
        c = {name: self._column(rows, name) for name in _LAYER_INPUTS}
        cfg = self.config.layers
        rules = lifecycle_rules(c, cfg.lifecycle)
        flags = rfm_flags(c["orders_total"], c["days_since_last_order"], c["spend_total"], self.rfm)
        return {
            "lifecycle": lifecycle_stages(rules),
            "rfm_segment": rfm_segment_codes(flags["buyer"], flags["r_high"], flags["f_high"], flags["m_high"]),
            "value_tier": value_tier_codes(c[f"spend_{VALUE_WINDOW_DAYS}d"], cfg.value_tier),
            "activity_tier": activity_tier_codes(c["active_days_30d"], c["days_since_last_interaction"], cfg.activity),
        }

    def refine(self, lifecycle: np.ndarray, preds: dict[str, np.ndarray]) -> np.ndarray:
        """Refined layer per row (:func:`serving.refinement.refined_layer_codes`)."""
        return refined_layer_codes(lifecycle, preds["churn_risk"], preds["conversion_prob"],
                                   preds["predicted_value"], self.config.refinement, self.high_value)

    # -- reasons -----------------------------------------------------------------------------------------
    def _raw_and_contributions(self, model: Any, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw score and contributions (with ``bias``) of ``model`` for ``X``: what batch scoring computes.

        Batch calls ``model.raw_score_and_contributions(frame, config.scoring.reason_method)`` on a
        pandas model matrix. The same LightGBM calls on the NumPy matrix skip LightGBM's pandas
        conversion (about 1.5 ms a call); they are used once they gave bit-identical results on probe
        rows for this model, else the batch method itself is called (checked once per model).
        """
        key = id(model)
        use_numpy = self._contrib_numpy.get(key)
        if use_numpy is None:
            use_numpy = self._contrib_numpy[key] = self._numpy_route_matches(model, X)
        if use_numpy:
            return _numpy_raw_and_contributions(model, X, self.reason_method)
        raw, contrib = model.raw_score_and_contributions(self._matrix_frame(X), self.reason_method)
        return np.asarray(raw, dtype=float), np.asarray(contrib, dtype=float)

    def _matrix_frame(self, X: np.ndarray) -> pd.DataFrame:
        """``X`` as the pandas model matrix the batch scorer builds (categoricals with the bundle's levels)."""
        import pandas as pd

        data: dict[str, Any] = {}
        for k, f in enumerate(self.feature_names):
            if f in self.levels:
                codes = np.where(np.isnan(X[:, k]), -1, X[:, k]).astype(np.int64)
                data[f] = pd.Categorical.from_codes(codes, dtype=pd.CategoricalDtype(self.levels[f]))
            else:
                data[f] = X[:, k].copy()
        return pd.DataFrame(data)

    def _numpy_route_matches(self, model: Any, X: np.ndarray) -> bool:
        """Does the NumPy route give ``model.raw_score_and_contributions`` bit for bit?

        Checked on ``X`` plus probe rows (every feature missing; each categorical level), once per
        model: if batch computes reasons another way, the fast path calls the batch method.
        """
        probe = np.vstack([X, np.full((1, X.shape[1]), np.nan), self._level_probe(X[:1])])
        try:
            raw_b, contrib_b = model.raw_score_and_contributions(self._matrix_frame(probe), self.reason_method)
            raw_m, contrib_m = _numpy_raw_and_contributions(model, probe, self.reason_method)
        except Exception:  # noqa: BLE001  (any doubt: use the batch method)
            log.exception("fast scorer: probing the NumPy route failed; using raw_score_and_contributions")
            return False
        same = bool(np.array_equal(np.asarray(raw_b, dtype=float), raw_m, equal_nan=True)
                    and np.array_equal(np.asarray(contrib_b, dtype=float), contrib_m, equal_nan=True))
        log.info("fast scorer: %s contributions via %s", self.reason_method,
                 "LightGBM on NumPy" if same else "the batch method on pandas")
        return same

    def _level_probe(self, base: np.ndarray) -> np.ndarray:
        rows = []
        for k, f in enumerate(self.feature_names):
            for code in range(len(self.levels.get(f, []))):
                r = base.copy()
                r[0, k] = code
                rows.append(r)
        return np.vstack(rows) if rows else np.empty((0, base.shape[1]))

    def reasons(self, rows: FeatureRows, explained: list[tuple[np.ndarray, np.ndarray, str]]) -> list[str]:
        """Reason JSON per row (``Scorer._reasons`` + ``serving.reasons.reason_codes``), ``[]`` if unexplained.

        The shown values and contributions of every explained score (churn and conversion) are formatted
        together, one pyarrow call each: the formatting is element-wise, and its fixed cost is most of
        the cost of a few rows.
        """
        out = ["[]"] * len(rows)
        names = self.feature_names
        col = {c: j for j, c in enumerate(rows.numeric_names)}
        # Every (row, slot) shown: row, feature index, direction, score name, contribution.
        picks: list[tuple[int, int, str, str, float]] = []
        for mask, contrib, score in explained:
            if contrib.shape[1] != len(names) + 1:
                raise FastPathUnsupported("contributions do not match the bundle's features")
            idx = np.flatnonzero(mask)
            c = contrib[:, : len(names)]
            c = np.where(np.isnan(c), 0.0, c)
            up = top_indices(c, _REASONS_TOP_N)
            down = top_indices(-c, _REASONS_TOP_N)
            for p in range(len(idx)):
                row = int(idx[p])
                for k in range(up.shape[1]):
                    j = int(up[p, k])
                    if c[p, j] > 0:
                        picks.append((row, j, "up", score, float(c[p, j])))
                for k in range(down.shape[1]):
                    j = int(down[p, k])
                    if -c[p, j] > 0:
                        picks.append((row, j, "down", score, float(c[p, j])))
        if not picks:
            return out
        numbers = np.array([rows.numeric[i, col[names[j]]] if names[j] in col else np.nan
                            for i, j, _, _, _ in picks], dtype=float)
        value_text = number_texts(numbers, VALUE_DIGITS)
        contrib_text = float_texts([cv for *_, cv in picks])
        items: dict[int, list[str]] = {}
        for t, (i, j, direction, score, _) in enumerate(picks):
            name = names[j]
            if name in col:
                shown = value_text[t]
            elif name in rows.strings:
                v = rows.strings[name][i]
                shown = "null" if _missing(v) else json.dumps(str(v), ensure_ascii=False)
            else:
                shown = value_text[t]  # not among the rows' columns: NaN, shown as null (as in batch)
            items.setdefault(i, []).append(self._reason_prefix[j] + shown + ', "contribution": ' + contrib_text[t]
                                           + ', "direction": "' + direction + '", "score": "' + score + '"}')
        for i, its in items.items():
            out[i] = "[" + ", ".join(its) + "]"
        return out

    # -- interventions -----------------------------------------------------------------------------------
    def interventions(self, user_ids: list[str], lifecycle: np.ndarray, refined: np.ndarray,
                      preds: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        """Action columns per row as in batch without a budget: best selected action and the JSON list."""
        cfg = self.config.interventions
        pos_l: list[int] = []
        act_l: list[int] = []
        for i in range(len(user_ids)):
            for k, action in enumerate(self._actions):
                if lifecycle[i] in action.layers or refined[i] in action.layers:
                    pos_l.append(i)
                    act_l.append(k)
        pos = np.asarray(pos_l, dtype=np.int64)
        act = np.asarray(act_l, dtype=np.int64)
        uplift = np.array([float(self._actions[k].uplift_prior) for k in act_l], dtype=float)
        cost = np.array([float(self._actions[k].unit_cost) for k in act_l], dtype=float)
        eiv = expected_incremental_value(preds["churn_risk"][pos], preds["conversion_prob"][pos],
                                         preds["predicted_value"][pos], uplift, cost)  # type: ignore[arg-type]
        keep = ~np.isnan(eiv)
        pos, act, eiv, cost = pos[keep], act[keep], eiv[keep], cost[keep]
        order = np.lexsort((act, -eiv, pos))
        pos, act, eiv, cost = pos[order], act[order], eiv[order], cost[order]
        ids = [self._actions[k].id for k in act]
        if self._control_limit is None or len(pos) == 0:
            control = np.zeros(len(pos), dtype=bool)
        else:
            control = mix64(stable_hash64(user_ids)[pos] ^ self._action_hash[act]) < self._control_limit
        eiv_text = rounded_texts(eiv, 4)
        out: list[dict[str, Any]] = [
            {"action_id": None, "action_name": None, "action_cost": math.nan, "expected_incremental_value": math.nan,
             "control": False} for _ in user_ids
        ]
        items: list[list[str]] = [[] for _ in user_ids]
        taken = [0] * len(user_ids)
        limit = cfg.max_actions_per_user
        for t in range(len(pos)):
            i = int(pos[t])
            rec = out[i]
            selected = False
            if eiv[t] > 0:
                taken[i] += 1
                selected = taken[i] <= limit
            ctl = bool(control[t])
            if selected and rec["action_id"] is None:
                action = self._actions[int(act[t])]
                rec.update(action_id=action.id, action_name=action.name, action_cost=float(cost[t]),
                           expected_incremental_value=float(eiv[t]), control=ctl)
            items[i].append(self._action_prefix[ids[t]] + eiv_text[t]
                                + (', "selected": true' if selected else ', "selected": false')
                                + (', "control": true}' if ctl else ', "control": false}'))
        for rec, its in zip(out, items, strict=True):
            rec["interventions"] = "[" + ", ".join(its) + "]"
        return out

    # -- everything --------------------------------------------------------------------------------------
    def score_records(self, rows: FeatureRows) -> list[dict[str, Any]]:
        """One record per row with the scorer's output columns (:data:`serving.scorer.OUTPUT_COLUMNS`),
        ``as_of`` as ISO text: what ``Scorer.score_features(frame).to_dict("records")`` holds."""
        if len(set(rows.user_ids)) != len(rows.user_ids):
            raise FastPathUnsupported("duplicate user ids")
        X = self.model_matrix(rows)
        preds, explained = self.predict(rows, X)
        layers = self.layers(rows)
        refined = self.refine(layers["lifecycle"], preds)
        reasons = self.reasons(rows, explained)
        actions = self.interventions(rows.user_ids, layers["lifecycle"], refined, preds)
        name, version = self.scorer.model_name, self.scorer.model_version
        records = []
        for i, uid in enumerate(rows.user_ids):
            rec: dict[str, Any] = {"user_id": uid, "as_of": rows.as_of[i], "model_name": name, "model_version": version}
            for k, v in preds.items():
                rec[k] = float(v[i])
            for k, v in layers.items():
                rec[k] = v[i]
            rec["refined_layer"] = refined[i]
            rec["reasons"] = reasons[i]
            rec.update(actions[i])
            records.append(rec)
        return records


def _numpy_raw_and_contributions(model: Any, X: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """What ``CalibratedBoostedClassifier.raw_score_and_contributions`` computes, on a NumPy model matrix:
    LightGBM on one thread, or the model's compiled trees (:mod:`training.compiled_trees`) when
    ``scoring.tree_engine = "compiled"`` and they cover the model; TreeSHAP contributions from LightGBM. Checked against the batch method once
    per model (:meth:`FastScorer._numpy_route_matches`)."""
    from training.compiled_trees import predict_raw, raw_and_contributions

    booster = model.booster_
    forest = model.compiled_trees()
    if method == "path":
        if forest is not None:
            return raw_and_contributions(forest, model.path_tables(), X)
        from training.tree_paths import contributions_from_leaves

        leaves = booster.predict(X, pred_leaf=True, num_threads=1)
        return contributions_from_leaves(model.path_tables(), np.asarray(leaves).reshape(len(X), -1))
    if method == "shap":
        contrib = np.asarray(booster.predict(X, pred_contrib=True, num_threads=1), dtype=float)
        if forest is not None:
            raw = predict_raw(forest, X)
        else:
            raw = np.asarray(booster.predict(X, raw_score=True, num_threads=1), dtype=float)
        return raw, contrib.reshape(len(X), -1)
    raise FastPathUnsupported(f"reason method {method!r}")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def mismatches(fast: FastScorer, rows: FeatureRows) -> list[str]:
    """Users whose fast-path API answer differs from the batch scorer's (encoded JSON compared), or whom
    one path answers and the other does not.

    Empty when the two paths answer the same users alike; used at model load and in the tests.
    """
    from serving.api_models import encode_result, result_from_record, results_from_scores

    batch = results_from_scores(fast.scorer.score_features(rows.to_frame()))
    out = []
    answered = set()
    for rec in fast.score_records(rows):
        answered.add(rec["user_id"])
        mine = encode_result(result_from_record(rec))
        theirs = batch.get(rec["user_id"])
        if theirs is None or encode_result(theirs) != mine:
            out.append(rec["user_id"])
    # a user the fast path left out (or the batch path did) is a mismatch too
    out += [u for u in batch if u not in answered]
    return out


def probe_rows(fast: FastScorer, n: int = 64, seed: int = 0) -> FeatureRows:
    """Synthetic feature rows for checking the fast path at load time, from the bundle's reference data.

    Numeric features take random reference quantiles (some missing), categoricals random training
    levels plus an unseen one and a missing one; ``is_prospect`` alternates. Layer inputs the bundle
    does not carry get random non-negative values.
    """
    rng = np.random.default_rng(seed)
    reference = fast.scorer.bundle.reference.get("features", {}) if isinstance(fast.scorer.bundle.reference, dict) else {}
    numeric_names = [f for f in fast.feature_names if f not in fast.levels]
    numeric_names += [f for f in _LAYER_INPUTS if f not in numeric_names]
    from training.models import PROSPECT_COLUMN

    if PROSPECT_COLUMN not in numeric_names:
        numeric_names.append(PROSPECT_COLUMN)
    M = np.empty((n, len(numeric_names)))
    for j, f in enumerate(numeric_names):
        qs = np.asarray((reference.get(f) or {}).get("quantiles") or [], dtype=float)
        M[:, j] = rng.choice(qs, n) if len(qs) else rng.gamma(1.0, 30.0, n)
        M[rng.random(n) < 0.1, j] = np.nan
    M[:, numeric_names.index(PROSPECT_COLUMN)] = np.arange(n) % 2
    strings: dict[str, list[Any]] = {}
    for f, levels in fast.levels.items():
        choices: list[Any] = [*levels, "__unseen_level__", None]
        strings[f] = [choices[int(k)] for k in rng.integers(0, len(choices), n)]
    return FeatureRows(user_ids=[f"__probe_{i}__" for i in range(n)], as_of=["2024-01-01T00:00:00+00:00"] * n,
                       numeric_names=numeric_names, numeric=M, strings=strings)


__all__ = ["FastPathUnsupported", "FastScorer", "FeatureRows", "mismatches", "probe_rows"]
