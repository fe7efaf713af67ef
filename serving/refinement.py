"""Refined layers: the rule lifecycle stage, sharpened by the model scores.

Rules react late: a customer is ``declining`` only after they have gone quiet. The models see it coming,
so a refined layer overrides the lifecycle stage where the scores say something the rules cannot yet:

- ``at_risk``: a ``mature``, ``growth`` or ``new`` buyer whose churn risk is at or above
  ``refinement.at_risk_churn_risk`` (early warning, before they go quiet);
- ``high_potential_new``: a ``new`` buyer (not at risk) whose predicted value is in the top quantile
  (at or above a threshold frozen in the model bundle at training time, so that one user scored alone
  gets the same layer as in a batch);
- ``recoverable``: a ``churned`` user whose return probability ``1 - churn_risk`` is at or above
  ``refinement.recoverable_return_prob``;
- ``hot_prospect``: a ``potential`` user (no purchase yet) whose conversion probability is at or above
  ``refinement.hot_prospect_conversion_prob``.

Everyone else keeps their lifecycle stage as refined layer.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.config import RefinementConfig
from features.layer_names import LAYER_NAMES, LIFECYCLE_STAGES, REFINED_ONLY_LAYERS

#: Lifecycle stages (rule layer) with their Chinese and English names (from the rule layers).
LIFECYCLE_NAMES: dict[str, tuple[str, str]] = {code: LAYER_NAMES[code] for code in LIFECYCLE_STAGES}

#: Layers that only the refinement assigns, with their Chinese and English names.
REFINED_ONLY_NAMES: dict[str, tuple[str, str]] = {
    "at_risk": ("流失预警", "At risk"),
    "high_potential_new": ("高潜新客", "High-potential new"),
    "recoverable": ("可召回", "Recoverable"),
    "hot_prospect": ("高意向潜客", "Hot prospect"),
}
assert tuple(REFINED_ONLY_NAMES) == REFINED_ONLY_LAYERS  # one list of codes, named here

#: Every value ``refined_layer`` can take: the refined-only layers plus the lifecycle stages.
REFINED_LAYER_NAMES: dict[str, tuple[str, str]] = {**REFINED_ONLY_NAMES, **LIFECYCLE_NAMES}

_AT_RISK_FROM = ("mature", "growth", "new")


def refined_layer_label(layer: str) -> str:
    """Display name ``"中文 English"`` of a refined (or lifecycle) layer; the raw value if unknown."""
    names = REFINED_LAYER_NAMES.get(layer)
    return f"{names[0]} {names[1]}" if names else layer


def refined_layer_codes(
    lifecycle: np.ndarray,
    churn_risk: np.ndarray,
    conversion_prob: np.ndarray,
    predicted_value: np.ndarray,
    config: RefinementConfig,
    high_value_threshold: float,
) -> np.ndarray:
    """THE refinement rule on arrays: refined layer code per user, an object array of str.

    Parameters are those of :func:`refine_layers` as arrays of one length: lifecycle stage codes
    (object), churn risk and conversion probability (0..1, NaN where not scored), predicted value
    (shop currency).
    """
    life = np.asarray(lifecycle, dtype=object)
    risk = np.asarray(churn_risk, dtype=np.float64)
    conv = np.asarray(conversion_prob, dtype=np.float64)
    value = np.asarray(predicted_value, dtype=np.float64)
    # NaN scores compare False (no warning): an unscored user keeps their stage.
    at_risk = np.isin(life, _AT_RISK_FROM) & (risk >= config.at_risk_churn_risk)
    high_potential = (life == "new") & (value >= high_value_threshold) & ~at_risk
    recoverable = (life == "churned") & ((1.0 - risk) >= config.recoverable_return_prob)
    hot = (life == "potential") & (conv >= config.hot_prospect_conversion_prob)
    refined = life.copy()
    for cond, name in ((hot, "hot_prospect"), (recoverable, "recoverable"),
                       (high_potential, "high_potential_new"), (at_risk, "at_risk")):
        refined[cond] = name
    return refined


def refine_layers(
    lifecycle: pd.Series,
    churn_risk: pd.Series,
    conversion_prob: pd.Series,
    predicted_value: pd.Series,
    config: RefinementConfig,
    high_value_threshold: float,
) -> pd.Series:
    """Refined layer of each user (one string per row, same index as ``lifecycle``).

    Parameters
    ----------
    lifecycle
        Rule lifecycle stage per user.
    churn_risk
        Probability of no purchase within the horizon (NaN for prospects).
    conversion_prob
        Probability of a first purchase within the horizon (NaN for buyers).
    predicted_value
        Expected net spend within the horizon, shop currency.
    config
        Thresholds (``StrataConfig.refinement``).
    high_value_threshold
        Predicted value (shop currency) at or above which a ``new`` buyer is high-potential; frozen at
        training time (``ModelBundle.high_potential_value``: the ``high_potential_value_quantile`` of
        the predicted values of the new buyers at the latest training cutoff).
    """
    refined = refined_layer_codes(
        lifecycle.astype(object).to_numpy(),
        pd.to_numeric(churn_risk, errors="coerce").to_numpy(dtype=float),
        pd.to_numeric(conversion_prob, errors="coerce").to_numpy(dtype=float),
        pd.to_numeric(predicted_value, errors="coerce").to_numpy(dtype=float),
        config,
        high_value_threshold,
    )
    return pd.Series(refined, index=lifecycle.index, name="refined_layer", dtype=object)


def disagreement_table(rule: pd.Series, refined: pd.Series) -> pd.DataFrame:
    """Counts of users per (rule lifecycle stage, refined layer) pair, rule and refined side by side.

    Returns a long table with columns ``rule_layer``, ``refined_layer``, ``rule_name``, ``refined_name``,
    ``users`` (count), ``share_of_rule_layer`` (fraction of the rule layer's users, 0..1) and ``agrees``
    (refined layer equals the rule layer), sorted with disagreements first, then by count.
    """
    if len(rule) != len(refined):
        raise ValueError(f"rule ({len(rule)} rows) and refined ({len(refined)} rows) differ in length")
    frame = pd.DataFrame(
        {"rule_layer": np.asarray(rule, dtype=object), "refined_layer": np.asarray(refined, dtype=object)}
    )
    table = frame.groupby(["rule_layer", "refined_layer"], sort=True).size().rename("users").reset_index()
    totals = table.groupby("rule_layer")["users"].transform("sum")
    table["share_of_rule_layer"] = table["users"] / totals
    table["agrees"] = table["rule_layer"] == table["refined_layer"]
    table["rule_name"] = table["rule_layer"].map(refined_layer_label)
    table["refined_name"] = table["refined_layer"].map(refined_layer_label)
    table = table.sort_values(["agrees", "users", "rule_layer", "refined_layer"], ascending=[True, False, True, True])
    cols = ["rule_layer", "refined_layer", "rule_name", "refined_name", "users", "share_of_rule_layer", "agrees"]
    return table[cols].reset_index(drop=True)
