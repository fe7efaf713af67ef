"""The model-quality report section: model and baselines side by side, charts embedded inline."""

from __future__ import annotations

import base64
from pathlib import Path

from serving.report_sections_model import model_quality_section

# A 1x1 PNG.
_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


def test_section_shows_model_and_both_baselines_with_embedded_charts(tmp_path: Path) -> None:
    (tmp_path / "churn_calibration.png").write_bytes(_PNG)
    metrics = {
        "churn_auc": 0.9123,
        "bgnbd_churn_auc": 0.8766,
        "rule_churn_auc": 0.8011,
        "churn_n": 1234,
        "value_normalized_gini": 0.7,
        "bgnbd_value_normalized_gini": 0.6,
        "value_total_spend_error_pct": -2.5,
    }
    section = model_quality_section(
        metrics, model_name="strata", model_version="3", horizon_days=90, plots_dir=tmp_path
    )
    assert section.id == "model-quality"
    for text in ("0.912", "0.877", "0.801", "0.700", "0.600", "-2.5", "v3", "1234 buyers"):
        assert text in section.html, text
    assert section.html.count("data:image/png;base64,") == 1
    # A metric missing for a baseline is shown as a dash, not as a crash or a zero.
    assert "rule_value_normalized_gini" not in metrics and "–" in section.html
