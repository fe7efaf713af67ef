"""Report sections of a scoring run render into a self-contained page with the right figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scoring_fixtures import score_features_frame, small_bundle, small_config

from serving.report import Report
from serving.report_sections_scoring import scoring_sections
from serving.scorer import Scorer


def test_sections_render_with_and_without_outcomes(tmp_path) -> None:  # noqa: ANN001
    scores = Scorer(small_bundle(), small_config(), "strata", "1").score_features(score_features_frame(), budget=150.0)
    sections = scoring_sections(scores)
    assert [s.id for s in sections] == ["scoring-distributions", "scoring-refinement", "scoring-interventions"]
    refinement = sections[1].html
    changed = int((scores["lifecycle"] != scores["refined_layer"]).sum())
    assert f"{changed:,} of {len(scores):,} users" in refinement
    treated = scores[scores.action_id.notna() & ~scores.control]
    assert f"{treated['action_cost'].sum():,.2f}" in sections[2].html
    assert "流失预警 At risk" in sections[0].html

    rec = scores[scores.action_id.notna()]
    rng = np.random.default_rng(42)
    outcomes = pd.DataFrame(
        {
            "user_id": rec.user_id, "action_id": rec.action_id, "contacted": ~rec.control,
            "bought": rng.random(len(rec)) < 0.3, "spend": 20.0, "control": rec.control,
            "lifecycle": rec.lifecycle, "refined_layer": rec.refined_layer, "unit_cost": rec.action_cost,
            "uplift_prior": 0.05,
        }
    )
    sections = scoring_sections(scores, outcomes)
    assert sections[-1].id == "scoring-uplift" and "Measured uplift per action" in sections[-1].html
    report = Report("Scoring", "2024-12-31")
    report.extend(sections)
    page = report.write(tmp_path / "r.html").read_text(encoding="utf-8")
    assert page.count("<section") == 4 and page.count("plotly-graph-div") >= 4
