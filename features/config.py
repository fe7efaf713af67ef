"""One typed configuration object for every entry point.

Loaded once per entry point with :func:`load_config` (never at import time). Every section forbids
unknown keys, so a typo in ``strata.toml`` is an error that names the key. Thresholds differ by
industry, so every layer threshold and the intervention playbook are configuration here.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from features.contract import DEFAULT_EVENT_TYPES
from features.errors import StrataError

DEFAULT_CONFIG_FILE = "strata.toml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    """Validation rules for input rows."""

    event_types: list[str] = Field(default_factory=lambda: list(DEFAULT_EVENT_TYPES))
    max_amount: float = 1_000_000.0
    """Order amounts above this (shop currency) are rejected as implausible."""
    max_quantity: int = 10_000
    min_timestamp: str = "1990-01-01"
    """Timestamps before this date are rejected as implausible."""
    future_tolerance_hours: float = 24.0
    """Timestamps more than this many hours after the validation time are rejected as future."""

    @field_validator("min_timestamp")
    @classmethod
    def _iso_time(cls, value: str) -> str:
        from features.cutoffs import parse_as_of

        try:
            parse_as_of(value, "min_timestamp")
        except StrataError as err:  # reported as this key's error, with the file and section
            raise ValueError(str(err).removeprefix("min_timestamp: ")) from None
        return value


class FeatureConfig(_Section):
    """Windows and half-lives of the point-in-time features."""

    windows_days: list[int] = Field(default_factory=lambda: [30, 90, 180, 365])
    half_lives_days: list[int] = Field(default_factory=lambda: [7, 30, 90])
    trend_window_days: int = 90
    """Trend compares the last ``trend_window_days`` with the ones before."""
    engine_memory_limit: str | None = None
    """Memory the in-process engine (DuckDB) may use for feature queries, e.g. ``"8GB"``; above it, it spills
    to ``engine_temp_directory``. None: DuckDB's default, 80% of the machine's memory."""
    engine_temp_directory: str | None = None
    """Where DuckDB spills when a feature query outgrows its memory: each engine spills into a directory of
    its own in it, created only when needed and removed when the engine closes. None: the system temp
    directory."""

    @field_validator("windows_days", "half_lives_days")
    @classmethod
    def _positive_days(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("expected at least one number of days")
        if any(d < 1 for d in value):
            raise ValueError("every number of days must be at least 1")
        if len(set(value)) != len(value):
            raise ValueError("a number of days is listed twice")
        return value

    @field_validator("trend_window_days")
    @classmethod
    def _positive_window(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1 day")
        return value

    @field_validator("engine_memory_limit")
    @classmethod
    def _memory_size(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _MEMORY_SIZE.match(value):
            raise ValueError("expected a size such as '8GB', '512MB' or '16GiB'")
        return value.strip()


#: The tracking URI schemes MLflow's stores accept (``postgresql+psycopg2://`` and the like included).
_TRACKING_SCHEME = re.compile(r"^(file|sqlite|postgresql|mysql|mssql|http|https|databricks|databricks-uc|uc)(\+\w+)?:",
                              re.IGNORECASE)

#: What DuckDB's ``memory_limit`` accepts (decimal and binary units).
_MEMORY_SIZE = re.compile(r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$", re.IGNORECASE)


class LabelConfig(_Section):
    """Prediction horizon and the cutoffs a training set is stacked over."""

    horizon_days: int = Field(90, ge=1)
    cutoff_step_days: int = Field(30, ge=1)
    n_cutoffs: int = Field(6, ge=1)


class LifecycleConfig(_Section):
    mature_orders_per_30d: float = 1.0
    """Average orders per 30 days (over the last 365 days) at or above which a buyer is mature."""
    mature_avg_order_value: float = 500.0
    """Average order value at or above which a repeat buyer is mature."""
    growth_max_repeat_orders: int = 2
    """Buyers with 1..this many repeat orders (2..this+1 orders) are in growth."""
    declining_trend_ratio: float = 0.5
    """Last-window spend or frequency at or below this share of the previous window is declining."""
    churn_no_interaction_days: int = 30
    churn_gap_multiplier: float = 3.0
    """Churned when no purchase for more than this many usual gaps (and no interaction)..."""
    churn_min_days_since_order: int = 90
    """...and at least this many days since the last order."""


class RfmConfig(_Section):
    mode: Literal["quantile", "fixed"] = "quantile"
    """``quantile``: high/low split at the median of the current buyers; ``fixed``: the values below."""
    recency_days: float = 90.0
    frequency_orders: float = 2.0
    monetary_spend: float = 500.0


class ValueTierConfig(_Section):
    high_annual_spend: float = 5000.0
    low_annual_spend: float = 1000.0

    @model_validator(mode="after")
    def _ordered(self) -> ValueTierConfig:
        if self.low_annual_spend > self.high_annual_spend:
            raise ValueError(f"low_annual_spend ({self.low_annual_spend:g}) is above high_annual_spend "
                             f"({self.high_annual_spend:g})")
        return self


class ActivityTierConfig(_Section):
    core_active_days: int = 20
    """Active on at least this many of the last 30 days: core."""
    sleeping_days: int = 30
    """No interaction (order or event) in this many days: sleeping."""


class LayerConfig(_Section):
    lifecycle: LifecycleConfig = LifecycleConfig()
    rfm: RfmConfig = RfmConfig()
    value_tier: ValueTierConfig = ValueTierConfig()
    activity: ActivityTierConfig = ActivityTierConfig()


class AlertRule(_Section):
    name: str
    metric: str
    """A KPI column (e.g. ``interaction_rate``, ``share``)."""
    layer: str | None = None
    """A layer value (e.g. ``mature``), or None for every layer."""
    change: Literal["relative_drop", "relative_rise", "absolute_drop", "absolute_rise"] = "relative_drop"
    threshold: float = 0.05
    """Fires when the change is strictly beyond this: relative changes as a fraction (0.05 = 5%), absolute
    changes in the metric's unit (0.02 of a rate = 2 percentage points)."""
    min_size: int = 30
    """Rates of layers with fewer users than this at either cutoff are noise: skipped (not for size/share)."""


def _default_alerts() -> list[AlertRule]:
    return [
        AlertRule(name="activity rate drop", metric="interaction_rate", change="relative_drop", threshold=0.05),
        AlertRule(name="churned share rise", metric="share", layer="churned", change="absolute_rise", threshold=0.02),
        AlertRule(name="repurchase rate drop", metric="repurchase_rate", change="relative_drop", threshold=0.10),
    ]


class Action(_Section):
    """One intervention of the playbook."""

    id: str
    name: str
    layers: list[str]
    """Refined or lifecycle layers this action is eligible for."""
    unit_cost: float = Field(ge=0)
    uplift_prior: float = Field(ge=0, le=1)
    """Expected relative reduction of churn risk (or rise of conversion) if contacted."""
    channel: str = "wecom"
    frequency_cap_days: int = Field(30, ge=0)

    @field_validator("layers")
    @classmethod
    def _known_layers(cls, value: list[str]) -> list[str]:
        from features.layer_names import LIFECYCLE_STAGES, REFINED_ONLY_LAYERS

        known = (*LIFECYCLE_STAGES, *REFINED_ONLY_LAYERS)
        unknown = [layer for layer in value if layer not in known]
        if not value or unknown:
            raise ValueError(f"{'unknown layer(s) ' + ', '.join(map(repr, unknown)) if unknown else 'no layer'}: "
                             f"an action targets lifecycle stages or refined layers ({', '.join(known)})")
        return value


def _default_playbook() -> list[Action]:
    a = Action
    return [
        a(id="brand_story", name="Brand story and product education content", layers=["potential"], unit_cost=0.1, uplift_prior=0.02, channel="content"),
        a(id="new_customer_coupon", name="New-customer coupon or trial pack", layers=["potential"], unit_cost=5.0, uplift_prior=0.08, channel="coupon"),
        a(id="checkin_campaign", name="3-day check-in campaign for points", layers=["potential"], unit_cost=1.0, uplift_prior=0.03, channel="mini_program"),
        a(id="usage_guide", name="Usage guide", layers=["new"], unit_cost=0.1, uplift_prior=0.02, channel="wecom"),
        a(id="satisfaction_survey", name="Satisfaction survey", layers=["new"], unit_cost=0.5, uplift_prior=0.01, channel="wecom"),
        a(id="cross_sell", name="Cross-sell of related products", layers=["new", "growth"], unit_cost=1.0, uplift_prior=0.04, channel="wecom"),
        a(id="repurchase_coupon", name="Repurchase coupon", layers=["new", "high_potential_new"], unit_cost=5.0, uplift_prior=0.08, channel="coupon"),
        a(id="personal_recs", name="Personalised recommendations", layers=["growth"], unit_cost=0.5, uplift_prior=0.03, channel="wecom"),
        a(id="silver_membership", name="Silver membership (priority service, birthday gift)", layers=["growth"], unit_cost=8.0, uplift_prior=0.06, channel="membership"),
        a(id="hp_group_invite", name="Invitation to a high-potential customer group", layers=["growth", "high_potential_new"], unit_cost=0.5, uplift_prior=0.04, channel="group"),
        a(id="vip_advisor", name="One-to-one advisor (VIP service)", layers=["mature"], unit_cost=20.0, uplift_prior=0.08, channel="wecom"),
        a(id="scarce_perks", name="Scarce perks (limited pre-sale, customisation, early access)", layers=["mature"], unit_cost=10.0, uplift_prior=0.05, channel="membership"),
        a(id="referral_rewards", name="Referral rewards for both sides", layers=["mature"], unit_cost=5.0, uplift_prior=0.03, channel="wecom"),
        a(id="cart_reminder", name="Cart reminder", layers=["declining", "at_risk"], unit_cost=0.2, uplift_prior=0.03, channel="wecom"),
        a(id="downgrade_reminder", name="Membership-downgrade reminder", layers=["declining", "at_risk"], unit_cost=0.2, uplift_prior=0.04, channel="wecom"),
        a(id="retention_offer", name="Limited-time retention offer", layers=["declining", "at_risk"], unit_cost=10.0, uplift_prior=0.12, channel="coupon"),
        a(id="product_recall", name="Personalised product recall", layers=["declining", "at_risk"], unit_cost=0.5, uplift_prior=0.05, channel="wecom"),
        a(id="winback_coupon", name="Win-back coupon", layers=["churned", "recoverable"], unit_cost=8.0, uplift_prior=0.10, channel="coupon"),
        a(id="winback_recs", name="Personalised win-back recommendation", layers=["recoverable"], unit_cost=0.5, uplift_prior=0.04, channel="wecom"),
        a(id="exit_survey", name="Feedback survey on why they left", layers=["churned"], unit_cost=0.3, uplift_prior=0.01, channel="wecom"),
    ]


class InterventionConfig(_Section):
    playbook: list[Action] = Field(default_factory=_default_playbook)
    control_share: float = Field(0.10, ge=0.0, lt=1.0)
    max_actions_per_user: int = 1
    budget: float | None = None
    """Default budget (shop currency) for a scoring run; None means unlimited."""


class RefinementConfig(_Section):
    """How model scores refine rule layers."""

    at_risk_churn_risk: float = 0.6
    high_potential_value_quantile: float = 0.8
    recoverable_return_prob: float = 0.25
    hot_prospect_conversion_prob: float = 0.3
    """Prospects with a conversion probability at or above this are ``hot_prospect``."""


class TrainingConfig(_Section):
    model_name: str = "strata"
    min_users: int = 200
    min_positives: int = 20
    seed: int = 42
    num_boost_round: int = 600
    early_stopping_rounds: int = 50
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_data_in_leaf: int = 50
    promote_min_auc_gain: float = 0.0
    """Challenger must beat the champion's churn AUC by at least this on the latest backtest."""
    promote_max_gini_loss: float = 0.01
    """...and may lose at most this much value normalized Gini."""


class TrackingConfig(_Section):
    tracking_uri: str | None = None
    """None: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<workdir>/mlflow.db``."""

    @field_validator("tracking_uri")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is not None and ":" in value and not _TRACKING_SCHEME.match(value) and not re.match(r"^[A-Za-z]:[\\/]", value):
            raise ValueError("expected a path or an MLflow tracking URI: sqlite:///path/mlflow.db, file:///path, "
                             "http(s)://host:port, postgresql://..., mysql://..., mssql://... or databricks")
        return value
    artifact_dir: str = "mlartifacts"
    experiment_name: str = "strata"


class ServingConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65535)
    api_key: str | None = None
    """API key; ``STRATA_API_KEY`` overrides it. None: no authentication."""
    max_body_bytes: int = 1_000_000
    max_user_ids: int = 1000
    online_store: str = "strata_online.db"
    model_poll_seconds: float = 10.0
    prediction_cache_users: int = Field(50_000, ge=0)
    """Answers kept per served model version for users scored from the online store (0: no cache);
    emptied whenever the model version or the online store changes."""


class ScoringConfig(_Section):
    chunk_users: int = Field(200_000, ge=1)
    pipeline: bool = True
    """Batch scoring (``strata score``) makes the model pass (trees, reason texts) of the next chunks on
    two helper threads and writes files on another while the current chunk is post-processed, so both
    cores stay busy for the whole run (see :mod:`serving.batch`). False: one chunk at a time on one
    thread (plus the trees' own threads). The output is the same byte for byte either way, so this is
    not part of a run's identity: a run may be resumed with the other setting."""
    reason_method: Literal["path", "shap"] = "path"
    """How reason codes are computed: ``path`` (Saabas path credits from the same walk of the trees that
    gives the score, cheap) or ``shap`` (LightGBM TreeSHAP, exact Shapley values, about 30x the cost of
    the whole batch). Both add up exactly to the raw score; path credits favour features split near the
    root of the trees."""
    tree_engine: Literal["lightgbm", "compiled"] = "compiled"
    """What evaluates the boosters: ``compiled`` (the default: LightGBM's trees flattened and walked by
    numba kernels, :mod:`training.compiled_trees`, every booster a row needs in one walk; the same
    numbers as ``Booster.predict`` bit for bit; models it does not cover fall back to LightGBM, logged
    once) or ``lightgbm`` (``Booster.predict``, and one ``pred_leaf`` pass for the reason codes). Scores
    are identical either way; only the speed differs: the compiled trees are about 4.5x faster than
    LightGBM's predict on the batch matrix and 8x on a single API row (``benchmarks/bench_scoring.py``)."""


class MonitoringConfig(_Section):
    """Thresholds of ``strata monitor`` (drift since training, realised model health)."""

    psi_warn: float = 0.1
    """Population stability index at or above this: a warning (no breach)."""
    psi_alert: float = 0.25
    """PSI at or above this (with a significant KS / chi-square test): a drift breach. A p-value alone
    never breaches (with many users it flags trivial shifts); it only guards against noise in small
    samples."""
    ks_pvalue: float = 0.001
    """A p-value below this (KS for numeric, chi-square for categorical features, two-proportion z-test
    for missing and layer shares) marks a shift as beyond sampling noise."""
    layer_share_shift: float = 0.05
    """A layer whose share of users moved by at least this (absolute, 0.05 = 5 points) is a breach."""
    auc_drop: float = 0.05
    """Realised churn AUC this much below the training backtest AUC is a breach."""
    calibration_error: float = 0.1
    """Realised expected calibration error of churn risk at or above this is a breach."""
    gini_drop: float = 0.10
    """Realised value normalized Gini this much below the training backtest Gini is a breach."""
    missing_share_shift: float = 0.05
    """A feature whose share of missing values moved by at least this (absolute) is a breach."""
    out_of_range_share: float = 0.05
    """A feature with at least this share of values outside the reference [min, max] is a breach."""
    backtest_cutoffs: int = Field(6, ge=0)
    """Past cutoffs (every ``labels.cutoff_step_days`` days) whose horizon has passed to rescore."""
    min_outcomes: int = Field(100, ge=1)
    """Realised cutoffs with fewer scored buyers than this are shown but never breach."""
    previous_days: int = Field(30, ge=1)
    """Layer shares compare with this many days earlier when the model bundle stores no layer shares."""
    exclude_features: list[str] = Field(default_factory=lambda: ["as_of_month"])
    """Features left out of drift checks (calendar features change by construction)."""


class SparkConfig(_Section):
    """``--engine spark``: the master URL and Spark settings (docs/cluster.md lists the ones that matter).

    Unless ``conf`` sets ``spark.sql.shuffle.partitions``, a ``local[N]`` master gets ``2 * N`` (Spark's
    default of 200 is meant for clusters); other masters keep Spark's default or the launcher's.
    """

    master: str = "local[*]"
    conf: dict[str, str] = Field(
        default_factory=lambda: {
            "spark.sql.session.timeZone": "UTC",
            "spark.ui.enabled": "false",
        }
    )


class StrataConfig(_Section):
    """The whole configuration. Every field has a documented default."""

    data: DataConfig = DataConfig()
    features: FeatureConfig = FeatureConfig()
    labels: LabelConfig = LabelConfig()
    layers: LayerConfig = LayerConfig()
    alerts: list[AlertRule] = Field(default_factory=_default_alerts)
    refinement: RefinementConfig = RefinementConfig()
    interventions: InterventionConfig = InterventionConfig()
    training: TrainingConfig = TrainingConfig()
    tracking: TrackingConfig = TrackingConfig()
    serving: ServingConfig = ServingConfig()
    scoring: ScoringConfig = ScoringConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    spark: SparkConfig = SparkConfig()


class ConfigError(StrataError):
    """The configuration file is unreadable or has unknown or invalid keys."""


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{key}'")
        else:
            lines.append(f"{source}: key '{key}': {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def config_from_dict(values: dict[str, Any], source: str = "<config>") -> StrataConfig:
    """Build a validated :class:`StrataConfig`; unknown keys raise :class:`ConfigError` naming them."""
    try:
        return StrataConfig.model_validate(values)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def load_config(path: str | Path | None = None) -> StrataConfig:
    """Load configuration from ``path``, or ``./strata.toml`` if it exists, else the defaults."""
    if path is None:
        candidate = Path(DEFAULT_CONFIG_FILE)
        if not candidate.exists():
            return StrataConfig()
        path = candidate
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: configuration file not found")
    try:
        values = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{p}: not valid TOML: {err}") from None
    return config_from_dict(values, source=str(p))
