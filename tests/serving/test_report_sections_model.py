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


def test_the_champions_charts_are_embedded_and_their_download_removed(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import tempfile
    from types import SimpleNamespace

    import training.registry
    import training.tracking
    from features.config import StrataConfig
    from serving.report_sections_model import champion_quality_section

    class Client:
        def get_model_version(self, name: str, version: str) -> SimpleNamespace:
            return SimpleNamespace(run_id="r1")

        def get_run(self, run_id: str) -> SimpleNamespace:
            return SimpleNamespace(data=SimpleNamespace(metrics={"churn_auc": 0.9}, params={"horizon_days": "90"}))

        def download_artifacts(self, run_id: str, path: str, dst: str) -> str:
            (Path(dst) / path).mkdir()
            (Path(dst) / path / "churn_calibration.png").write_bytes(_PNG)
            return str(Path(dst) / path)

    downloads = tmp_path / "tmp"
    downloads.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(downloads))
    monkeypatch.setattr(training.registry, "alias_version", lambda config, alias: "3")
    monkeypatch.setattr(training.tracking, "tracking_client", lambda config, workdir=None: Client())
    section = champion_quality_section(StrataConfig())
    assert section is not None and section.html.count("data:image/png;base64,") == 1
    assert list(downloads.iterdir()) == []  # every `strata report` used to leave a strata-plots-* directory
