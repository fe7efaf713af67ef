"""Smoke run of the model-quality benchmark (benchmarks/quality/run_quality.py) and its target logic.

The script runs end to end on the 2,357-customer CDNOW sample; the test checks that it prints every
metric for the model and both baselines and a verdict per target, not that the targets are met.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "quality" / "run_quality.py"


@pytest.fixture(scope="module")
def rq(bench_script: Callable[[str], ModuleType]) -> ModuleType:
    return bench_script("quality/run_quality")


def _cutoff(rq: ModuleType, day: str, model: dict[str, float], bgnbd: dict[str, float]) -> object:
    return rq.CutoffResult(cutoff=day, horizon_days=90, metrics={"model": model, "bgnbd": bgnbd, "rule": {}})


def test_targets_are_judged_on_the_mean_and_counted_per_cutoff(rq: ModuleType) -> None:
    c1 = _cutoff(rq, "2024-01-01",
                 {"churn_auc": 0.805, "value_normalized_gini": 0.70, "value_spearman": 0.40, "value_abs_total_spend_error_pct": 15.0},
                 {"churn_auc": 0.790, "value_normalized_gini": 0.72, "value_spearman": 0.30})
    c2 = _cutoff(rq, "2024-04-01",
                 {"churn_auc": 0.760, "value_normalized_gini": 0.80, "value_spearman": 0.40, "value_abs_total_spend_error_pct": 15.0},
                 {"churn_auc": 0.740, "value_normalized_gini": 0.70, "value_spearman": 0.41})
    skipped = rq.CutoffResult(cutoff="2023-01-01", horizon_days=90, skipped="too little history")
    result = rq.DatasetResult(name="t", description="t", horizon_days=90, cutoffs=[skipped, c1, c2])
    got = {o.target.metric: o for o in rq.check_targets(result)}
    auc = got["churn_auc"]
    assert auc.model == pytest.approx(0.7825) and auc.bgnbd == pytest.approx(0.765)
    assert auc.passed and [ok for _, ok in auc.per_cutoff] == [True, True]
    assert [d for d, _ in auc.per_cutoff] == pytest.approx([0.015, 0.020])
    gini = got["value_normalized_gini"]  # 0.75 vs 0.71 on the mean, below BG/NBD at the first cutoff
    assert gini.passed and [ok for _, ok in gini.per_cutoff] == [False, True]
    spearman = got["value_spearman"]  # 0.40 vs 0.355: passes on the mean, fails at the second cutoff
    assert spearman.passed and [ok for _, ok in spearman.per_cutoff] == [True, False]
    # 15% off at both cutoffs (whatever the signs): fails, the mean of absolute errors cannot cancel
    spend = got["value_abs_total_spend_error_pct"]
    assert not spend.passed and spend.model == pytest.approx(15.0)
    assert spend.cells()[-1] == "FAIL" and spend.cells()[4].startswith("0/2")
    assert rq.TargetOutcome(rq.TARGETS[0], 0.80, 0.795, [], True).cells()[3] == "+0.0050"


def test_cdnow_cutoffs_tile_the_classic_holdout(rq: ModuleType, cdnow_sample_path: Path) -> None:
    from features.config import StrataConfig

    data = rq.load_data(str(cdnow_sample_path), StrataConfig(), demo_users=0, seed=0)
    assert data.cdnow and data.dataset.orders["user_id"].nunique() == 2357
    days = [str(c.date()) for c in rq.default_cutoffs(data, 90, n_cutoffs=5)]
    assert days == ["1997-10-01", "1997-12-30", "1998-03-30"]
    assert [str(c.date()) for c in rq.default_cutoffs(data, 273, n_cutoffs=5)] == ["1997-10-01"]
    other = rq.LoadedData("x", "x", data.dataset, cdnow=False)  # other data: back from the data end
    assert [str(c.date()) for c in rq.default_cutoffs(other, 90, n_cutoffs=2)] == ["1998-01-01", "1998-04-01"]


def test_script_prints_every_metric_and_a_verdict_per_target(rq: ModuleType, cdnow_sample_path: Path, tmp_path: Path) -> None:
    out_json, out_md = tmp_path / "quality.json", tmp_path / "quality.md"
    # 1997-02-01 leaves no training cutoff a full horizon before it: reported as skipped, not fatal
    cmd = [sys.executable, str(SCRIPT), "--data", str(cdnow_sample_path), "--cutoffs", "1997-02-01,1997-12-30,1998-03-30",
           "--jobs", "2", "--json", str(out_json), "--markdown", str(out_md)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    assert "cutoff 1997-02-01 skipped" in text
    assert "mean over 2 cutoff(s)" in text
    for row in (*rq.CONTEXT_ROWS, *rq.METRIC_ROWS):
        assert text.count(row.label) >= 3, row.label  # two cutoffs and the mean
    for title in rq.MODEL_TITLES.values():
        assert title in text
    for target in rq.TARGETS:
        line = next(ln for ln in text.splitlines() if target.label in ln)
        assert line.rstrip().endswith(("PASS", "FAIL")), line

    results = json.loads(out_json.read_text())
    assert len(results) == 1 and results[0]["name"] == "CDNOW_sample"
    cutoffs = {c["cutoff"]: c for c in results[0]["cutoffs"]}
    assert cutoffs["1997-02-01"]["skipped"] and not cutoffs["1998-03-30"]["skipped"]
    for day in ("1997-12-30", "1998-03-30"):
        c = cutoffs[day]
        assert c["context"]["n_eval_buyers"] > 1000  # about half of the 2,357 customers
        for model in rq.MODELS:
            for key in ("churn_auc", "churn_pr_auc", "churn_lift_top_decile", "value_mae", "value_rmse",
                        "value_spearman", "value_normalized_gini", "value_total_spend_error_pct"):
                assert math.isfinite(c["metrics"][model][key]), (day, model, key)
        for key in ("churn_brier", "churn_ece"):
            assert 0 <= c["metrics"]["model"][key] <= 1 and 0 <= c["metrics"]["bgnbd"][key] <= 1
        # the model's total is the actual total shifted by its own error
        m = c["metrics"]["model"]
        assert m["value_total_predicted"] == pytest.approx(
            c["context"]["value_total_actual"] * (1 + m["value_total_spend_error_pct"] / 100))
    md = out_md.read_text()
    assert "| churn AUC >= BG/NBD + 0.01 |" in md and "Skipped 1997-02-01" in md
    assert "| value \\|total error\\| % |" in md  # pipes in labels are escaped
    assert pd.Timestamp(cutoffs["1998-03-30"]["cutoff"]) == pd.Timestamp("1998-03-30")
