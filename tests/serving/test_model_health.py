"""Delayed-label model health: realised metrics by hand, breach rules, a backtest on demo data where a
share of the buyers stops buying after training (and one where nothing changes), earlier scoring
outputs, the retraining recommendation and the report sections."""

from __future__ import annotations

import json
from functools import lru_cache

import monitoring_fixtures as mf
import numpy as np
import pandas as pd
import pytest

from features.config import MonitoringConfig
from serving.model_health import (
    HEALTH_COLUMNS,
    health_findings,
    health_table,
    outcome_metrics,
    realised_cutoffs,
    realised_labels,
    scored_health,
)
from serving.monitoring import MonitorResult, run_monitor
from serving.retraining import Finding, drift_findings, recommend_retraining
from training.metrics import churn_metrics, value_metrics

CFG = MonitoringConfig()
UTC = "UTC"


# ----------------------------------------------------------------------------------------- by hand


def test_realised_cutoffs_end_one_horizon_before_the_label_end() -> None:
    end = pd.Timestamp("2024-09-30", tz=UTC)
    got = realised_cutoffs(end, horizon_days=90, step_days=30, n=3)
    assert got == [pd.Timestamp(d, tz=UTC) for d in ("2024-05-03", "2024-06-02", "2024-07-02")]
    assert got[-1] + pd.Timedelta(days=90) == end
    assert realised_cutoffs(end, 90, 30, 0) == []


def test_outcome_metrics_match_the_training_metrics_on_buyers_and_prospects() -> None:
    rng = np.random.default_rng(42)
    n = 400
    buyer = rng.random(n) < 0.6
    risk = rng.uniform(0.05, 0.95, n)
    churn = (rng.random(n) < risk).astype(float)
    scores = pd.DataFrame({
        "user_id": [f"u{i}" for i in range(n)],
        "churn_risk": np.where(buyer, risk, np.nan),
        "conversion_prob": np.where(buyer, np.nan, 1 - risk),
        "predicted_value": rng.gamma(1.0, 50.0, n),
    })
    labels = pd.DataFrame({
        "user_id": scores["user_id"][::-1].to_numpy(),  # order must not matter
        "label_churn": churn[::-1],
        "label_value": np.where(churn == 1, 0.0, rng.gamma(1.0, 60.0, n))[::-1],
        "label_convert": np.where(buyer, np.nan, 1 - churn)[::-1],
    })
    got = outcome_metrics(scores, labels)
    lab = labels.set_index("user_id").loc[scores["user_id"]]
    m = churn_metrics(lab["label_churn"].to_numpy()[buyer], risk[buyer])
    v = value_metrics(lab["label_value"].to_numpy()[buyer], scores["predicted_value"].to_numpy()[buyer])
    c = churn_metrics(lab["label_convert"].to_numpy()[~buyer], (1 - risk)[~buyer])
    assert got["n_buyers"] == buyer.sum() and got["n_prospects"] == (~buyer).sum()
    assert got["churn_auc"] == pytest.approx(m["auc"]) and got["churn_ece"] == pytest.approx(m["ece"])
    assert got["churn_rate"] == pytest.approx(m["positive_rate"]) and got["mean_churn_risk"] == pytest.approx(m["mean_pred"])
    assert got["value_normalized_gini"] == pytest.approx(v["normalized_gini"])
    assert got["value_total_spend_error_pct"] == pytest.approx(v["total_spend_error_pct"])
    assert got["conversion_auc"] == pytest.approx(c["auc"])
    assert set(got) == set(HEALTH_COLUMNS[4:])


def test_users_missing_from_the_labels_count_as_not_buying() -> None:
    labels = pd.DataFrame({"user_id": ["a"], "label_churn": [0.0], "label_value": [12.5], "label_convert": [np.nan]})
    got = realised_labels(labels, pd.Series(["b", "a"]))
    assert got["user_id"].tolist() == ["b", "a"]
    assert got["label_churn"].tolist() == [1.0, 0.0] and got["label_value"].tolist() == [0.0, 12.5]


def _trend(rows: list[dict]) -> pd.DataFrame:
    base = {"source": "backtest", "model_version": "3", "out_of_time": True, "n_buyers": 800, "churn_rate": 0.4,
            "mean_churn_risk": 0.42, "churn_auc": 0.88, "churn_ece": 0.03, "value_normalized_gini": 0.80,
            "n_prospects": 500, "conversion_auc": 0.80}
    return health_table([{**base, **r, "cutoff": pd.Timestamp(r["cutoff"], tz=UTC)} for r in rows])


REF = {"churn_auc": 0.90, "churn_ece": 0.03, "value_normalized_gini": 0.82, "conversion_auc": 0.81}


def test_a_healthy_latest_cutoff_gives_no_finding() -> None:
    findings, status = health_findings(_trend([{"cutoff": "2024-06-01"}]), REF, CFG, "3")
    assert findings == [] and status.startswith("healthy on outcomes of 2024-06-01")


def test_an_auc_drop_and_a_calibration_error_on_the_latest_cutoff_breach() -> None:
    trend = _trend([
        {"cutoff": "2024-05-01", "churn_auc": 0.70},  # an older bad cutoff: not the latest, ignored
        {"cutoff": "2024-06-01", "churn_auc": 0.84, "churn_ece": 0.12, "mean_churn_risk": 0.30, "churn_rate": 0.45},
    ])
    findings, status = health_findings(trend, REF, CFG, "3")
    by = {f.subject: f for f in findings}
    assert set(by) == {"churn_auc", "churn_ece"} and all(f.severity == "alert" for f in findings)
    assert by["churn_auc"].value == pytest.approx(0.06)
    assert "churn AUC fell from 0.900 at training to 0.840 on outcomes of 2024-06-01" in by["churn_auc"].message
    assert "mean predicted risk 30.0% vs realised churn 45.0%" in by["churn_ece"].message
    assert status.startswith("2 performance breach(es)")


def test_gini_and_conversion_auc_drops_breach_but_not_on_few_prospects() -> None:
    # Gini 0.82 -> 0.70 (drop 0.12 >= 0.10), conversion AUC 0.81 -> 0.74 (drop 0.07 >= 0.05)
    worse = {"cutoff": "2024-06-01", "value_normalized_gini": 0.70, "conversion_auc": 0.74}
    findings, _ = health_findings(_trend([worse]), REF, CFG, "3")
    by = {f.subject: f for f in findings}
    assert set(by) == {"value_normalized_gini", "conversion_auc"}
    assert all(f.severity == "alert" for f in findings)
    assert by["value_normalized_gini"].value == pytest.approx(0.12)
    assert by["conversion_auc"].value == pytest.approx(0.07)
    # half the threshold: a warning, not a breach (Gini drop 0.06 >= 0.05, conversion drop 0.03 >= 0.025)
    half = {"cutoff": "2024-06-01", "value_normalized_gini": 0.76, "conversion_auc": 0.78}
    findings, _ = health_findings(_trend([half]), REF, CFG, "3")
    assert {(f.subject, f.severity) for f in findings} == {("value_normalized_gini", "warn"), ("conversion_auc", "warn")}
    # conversion AUC is judged on prospects: too few of them, no finding
    few = {**worse, "value_normalized_gini": 0.80, "n_prospects": CFG.min_outcomes - 1}
    findings, _ = health_findings(_trend([few]), REF, CFG, "3")
    assert findings == []


def test_cutoffs_seen_in_training_other_versions_and_small_samples_never_breach() -> None:
    bad = {"churn_auc": 0.60, "churn_ece": 0.30, "value_normalized_gini": 0.2}
    in_training = _trend([{"cutoff": "2024-06-01", "out_of_time": False, **bad}])
    other_version = _trend([{"cutoff": "2024-06-01", "model_version": "2", **bad}])
    small = _trend([{"cutoff": "2024-06-01", "n_buyers": CFG.min_outcomes - 1, **bad}])
    for trend in (in_training, other_version, small):
        findings, status = health_findings(trend, REF, CFG, "3")
        assert findings == [] and status.startswith("pending")
    assert health_findings(health_table([]), REF, CFG, "3") == ([], "no realised outcomes yet: no cutoff's horizon has passed within the data")


def test_recommendation_names_the_causes_worst_first() -> None:
    table = pd.DataFrame([
        {"name": "events_decay_hl7", "psi": 0.9, "status": "alert", "significant": True, "new_levels": "",
         "reasons": "PSI", "missing_reference": 0.0, "missing_current": 0.0, "missing_change": 0.0, "out_of_range": 0.0},
        {"name": "source_channel", "psi": 2.5, "status": "alert", "significant": True, "new_levels": "douyin (30.0%)",
         "reasons": "PSI", "missing_reference": 0.0, "missing_current": 0.0, "missing_change": 0.0, "out_of_range": np.nan},
        {"name": "spend_30d", "psi": 0.15, "status": "warn", "significant": True, "new_levels": "",
         "reasons": "PSI", "missing_reference": 0.0, "missing_current": 0.0, "missing_change": 0.0, "out_of_range": 0.0},
    ])
    perf = Finding("performance", "churn_auc", "alert", 0.08, 0.05, "churn AUC fell from 0.900 at training to 0.820")
    rec = recommend_retraining([perf, *drift_findings(table, "feature_drift", 0.1, 0.25)])
    assert rec.retrain
    assert rec.causes[0] == "realised performance dropped: churn AUC fell from 0.900 at training to 0.820"
    assert rec.causes[1] == "features drifted since training: source_channel (PSI 2.50), events_decay_hl7 (PSI 0.90)"
    assert rec.watch == ["spend_30d: PSI 0.150 >= 0.1"]
    quiet = recommend_retraining(drift_findings(table.iloc[[2]], "feature_drift", 0.1, 0.25))
    assert not quiet.retrain and quiet.summary.startswith("no retraining needed")


def test_missing_share_and_range_alerts_ask_for_a_data_check_first() -> None:
    common = {"significant": True, "new_levels": "", "missing_reference": 0.0, "missing_current": 0.0,
              "missing_change": 0.0, "out_of_range": np.nan}
    table = pd.DataFrame([
        {**common, "name": "days_since_last_order", "psi": 0.05, "status": "alert",
         "reasons": "missing share 20.0% -> 35.0% (moved >= 10%)", "missing_reference": 0.20,
         "missing_current": 0.35, "missing_change": 0.15},
        {**common, "name": "spend_30d", "psi": 0.05, "status": "alert",
         "reasons": "30.0% of values outside the reference range (>= 20%)", "out_of_range": 0.30},
    ])
    findings = drift_findings(table, "feature_drift", 0.1, 0.25)
    assert [(f.kind, f.subject, f.severity) for f in findings] == [
        ("missing", "days_since_last_order", "alert"), ("range", "spend_30d", "alert")]
    rec = recommend_retraining(findings)
    assert rec.retrain and rec.causes == []
    assert rec.data_checks == [
        "missing values changed: days_since_last_order (missing +15.0%) (check the input data feed, and the "
        "buyer/prospect mix)",
        "values outside the training range: spend_30d (30.0% out of range) (check the input data feed, and the "
        "buyer/prospect mix)",
    ]
    assert rec.summary.startswith("check the input data, then retrain if the change is real: missing values")


# ----------------------------------------------------------------------------------------- demo data


def _monitor(dataset: object, **kwargs: object) -> MonitorResult:
    bundle = mf.fitted_bundle()
    return run_monitor(bundle, dataset, mf.MONITOR_AS_OF, mf.monitor_config(), model_name="strata",  # type: ignore[arg-type]
                       model_version="1", **kwargs)  # type: ignore[arg-type]


@lru_cache(maxsize=1)
def _unshifted() -> MonitorResult:
    """The monitoring of an independent unshifted sample (seed 8), cached. Do not mutate."""
    return _monitor(mf.demo(8))


def test_unshifted_data_backtests_healthy_after_training() -> None:
    result = _unshifted()
    trend = result.health
    reference_cutoff = pd.Timestamp(mf.fitted_bundle().data_fingerprint["latest_cutoff"])
    assert reference_cutoff == mf.REFERENCE_CUTOFF
    assert len(trend) == CFG.backtest_cutoffs and (trend["source"] == "backtest").all()
    assert trend["cutoff"].max() == mf.MONITOR_AS_OF - pd.Timedelta(days=90)
    assert (trend["out_of_time"] == (trend["cutoff"] > reference_cutoff)).all() and trend["out_of_time"].sum() == 4
    assert not [f for f in result.findings if f.kind == "performance"], result.health_status
    assert result.health_status.startswith("healthy on outcomes of 2024-07-02")
    after = trend[trend["out_of_time"]]
    assert (after["churn_auc"] > result.health_reference["churn_auc"] - CFG.auc_drop).all()
    assert (after["churn_ece"] < CFG.calibration_error).all()
    assert not result.breached, result.recommendation.summary
    json.dumps(result.to_dict())  # serialisable as is


def test_buyers_who_stop_buying_after_training_breach_auc_and_calibration() -> None:
    shifted = mf.stop_buying(mf.demo(8), mf.TRAIN_END + pd.Timedelta(days=15), share=0.5)
    result = _monitor(shifted)
    perf = {f.subject: f for f in result.findings if f.kind == "performance" and f.severity == "alert"}
    assert {"churn_auc", "churn_ece"} <= set(perf)
    latest = result.health.iloc[-1]
    assert latest["churn_rate"] > latest["mean_churn_risk"] + 0.1  # more churn than predicted
    assert result.breached and result.recommendation.retrain
    assert "churn AUC fell from" in result.recommendation.summary
    assert "calibration error" in result.recommendation.summary
    # the cutoffs before training are the same as without the shift: only outcomes after it moved
    clean = _unshifted().health
    early = result.health["cutoff"] <= mf.REFERENCE_CUTOFF
    pd.testing.assert_frame_equal(result.health[early], clean[early])


def test_earlier_scoring_outputs_are_measured_once_their_horizon_has_passed() -> None:
    from features.pipeline import build_features
    from serving.scorer import Scorer

    config = mf.monitor_config()
    dataset = mf.demo(8)
    scorer = Scorer(mf.fitted_bundle(), config, model_name="strata", model_version="1")
    served = pd.Timestamp("2024-06-02", tz=UTC)
    early = scorer.score_features(build_features(dataset, served, config))
    recent = scorer.score_features(build_features(dataset, pd.Timestamp("2024-08-01", tz=UTC), config))
    table, notes = scored_health([early, recent], dataset, config, mf.MONITOR_AS_OF,
                                 trained_until=mf.REFERENCE_CUTOFF)
    assert table["cutoff"].tolist() == [served] and table["source"].tolist() == ["scores"]
    assert notes == ["scoring as of 2024-08-01 (model version 1): outcomes complete on 2024-10-30, after 2024-09-30; "
                     "not measured yet"]
    # the same model on the same features: what was served measures like the backtest at that cutoff
    backtest = _unshifted().health.set_index("cutoff").loc[served]
    for col in ("n_buyers", "churn_auc", "churn_ece", "value_normalized_gini", "conversion_auc"):
        assert table.iloc[0][col] == pytest.approx(backtest[col]), col
    # run_monitor merges them into one trend, served rows next to the backtest
    result = _monitor(dataset, scored=[early, recent], backtest_cutoffs=2)
    assert result.health["source"].tolist() == ["backtest", "scores", "backtest"]
    assert result.health["cutoff"].tolist() == [served, served, mf.MONITOR_AS_OF - pd.Timedelta(days=90)]
    assert any("not measured yet" in n for n in result.notes)


def test_report_sections_show_the_worst_drift_first_and_the_trend() -> None:
    from serving.report import Report
    from serving.report_sections_monitoring import monitoring_sections

    flooded = mf.flood_channel(mf.demo(8), mf.MONITOR_AS_OF, n_new=700)
    result = _monitor(flooded, backtest_cutoffs=3)
    assert result.drifted_features()[0] == "source_channel"
    sections = monitoring_sections(result)
    assert [s.id for s in sections] == ["monitoring-drift", "monitoring-health"]
    drift_html = sections[0].html
    table = drift_html[drift_html.index('<table class="data">'):]
    assert table.index("source_channel") < table.index("days_since_joined")
    assert "spend_total" not in table and "more features are stable" in drift_html  # stable ones are summarised
    assert "douyin_live" in drift_html and "retraining recommended" in drift_html
    assert 'id="fig-monitor-psi"' in drift_html and 'id="fig-monitor-health"' in sections[1].html
    assert "2024-07-02" in sections[1].html
    report = Report("Monitoring", result.as_of)
    report.extend(sections)
    page = report.render()
    assert page.count("<section") == 2 and 'href="#monitoring-health"' in page


def test_a_bundle_without_layer_shares_compares_with_the_previous_cutoff() -> None:
    from dataclasses import replace

    bundle = mf.fitted_bundle()
    older = replace(bundle, reference={k: v for k, v in bundle.reference.items() if k not in ("layers", "layers_n")})
    result = run_monitor(older, mf.demo(8), mf.MONITOR_AS_OF, mf.monitor_config(), model_name="strata",
                         model_version="1", backtest_cutoffs=0)
    assert result.layer_baseline == "as of 2024-08-31"
    assert any("stores no layer shares" in n for n in result.notes)
    assert set(result.layer_shift["dimension"]) == {"lifecycle", "rfm_segment", "value_tier", "activity_tier"}
    assert result.layer_shift["p_value"].notna().all()
