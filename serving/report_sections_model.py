"""Report section on model quality: the champion next to the BG/NBD + Gamma-Gamma and rule baselines.

The figures are the ones the training run logged to MLflow for its latest-cutoff backtest, on the same
rows for the model and both baselines; the charts are the run's own PNG artifacts, embedded inline.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from serving.report import Section, note_html

#: (metric suffix, label, format, higher is better)
_CHURN = [
    ("auc", "AUC", "{:.3f}", True),
    ("pr_auc", "PR-AUC", "{:.3f}", True),
    ("brier", "Brier score", "{:.4f}", False),
    ("ece", "Calibration error (ECE)", "{:.3f}", False),
    ("lift_top_decile", "Lift of the top decile", "{:.2f}", True),
]
_VALUE = [
    ("normalized_gini", "Normalized Gini", "{:.3f}", True),
    ("spearman", "Spearman", "{:.3f}", True),
    ("mae", "MAE (currency)", "{:,.2f}", False),
    ("rmse", "RMSE (currency)", "{:,.2f}", False),
    ("total_spend_error_pct", "Total predicted vs actual spend (%)", "{:+.1f}", None),
]
_PLOTS = ("churn_calibration.png", "churn_lift_gain.png", "value_deciles.png", "churn_feature_importance.png")


def _cell(metrics: dict[str, float], key: str, fmt: str) -> str:
    value = metrics.get(key)
    if value is None or not math.isfinite(float(value)):
        return '<td class="num">–</td>'
    return f'<td class="num">{html.escape(fmt.format(float(value)))}</td>'


def _table(metrics: dict[str, float], family: str, rows: Sequence[tuple[str, str, str, bool | None]]) -> str:
    head = "<tr><th>metric</th><th>model 模型</th><th>BG/NBD + Gamma-Gamma</th><th>rule 规则</th></tr>"
    body = []
    for suffix, label, fmt, _ in rows:
        body.append(
            f"<tr><td>{html.escape(label)}</td>"
            + _cell(metrics, f"{family}_{suffix}", fmt)
            + _cell(metrics, f"bgnbd_{family}_{suffix}", fmt)
            + _cell(metrics, f"rule_{family}_{suffix}", fmt)
            + "</tr>"
        )
    return f'<table class="data">{head}{"".join(body)}</table>'


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    alt = html.escape(path.stem.replace("_", " "))
    return f'<img alt="{alt}" style="max-width:100%" src="data:image/png;base64,{data}">'


def model_quality_section(
    metrics: dict[str, float],
    *,
    model_name: str,
    model_version: str,
    horizon_days: int,
    plots_dir: Path | None = None,
) -> Section:
    """Section ``model-quality``: churn and value metrics of model vs baselines, and the run's charts."""
    n = metrics.get("churn_n")
    parts = [
        note_html(
            f"Champion {model_name} v{model_version}: backtest at the latest training cutoff, horizon "
            f"{horizon_days} days, the same {int(n) if n else '?'} buyers for the model and both baselines. "
            "Churn = no paid order within the horizon; value = net spend within the horizon."
        ),
        "<h3>Churn risk 流失风险</h3>",
        _table(metrics, "churn", _CHURN),
        "<h3>Future value 未来价值</h3>",
        _table(metrics, "value", _VALUE),
    ]
    if "conversion_auc" in metrics:
        parts.append(
            note_html(
                f"Prospect conversion: AUC {metrics['conversion_auc']:.3f}, calibration error "
                f"{metrics.get('conversion_ece', float('nan')):.3f}."
            )
        )
    if plots_dir is not None:
        images = [_image(plots_dir / name) for name in _PLOTS if (plots_dir / name).exists()]
        if images:
            parts.append('<div class="grid">' + "".join(f"<div>{img}</div>" for img in images) + "</div>")
    return Section("model-quality", "Model quality 模型质量", "\n".join(parts))


def champion_quality_section(config: Any, alias: str = "champion", workdir: Path | None = None) -> Section | None:
    """Build :func:`model_quality_section` for the model behind ``alias``; None if no such model."""
    import tempfile

    from training.registry import alias_version
    from training.tracking import tracking_client

    version = alias_version(config, alias)
    if version is None:
        return None
    client = tracking_client(config, workdir)
    name = config.training.model_name
    mv = client.get_model_version(name, version)
    run = client.get_run(mv.run_id)
    metrics = {k: float(v) for k, v in run.data.metrics.items()}
    # the plots are embedded in the page (read while the section is built), so their download goes afterwards
    with tempfile.TemporaryDirectory(prefix="strata-plots-") as tmp:
        try:
            plots_dir: Path | None = Path(client.download_artifacts(mv.run_id, "plots", tmp))
        except Exception:  # noqa: BLE001  (a run without plots still gets its tables)
            plots_dir = None
        return model_quality_section(
            metrics,
            model_name=name,
            model_version=str(version),
            horizon_days=int(float(run.data.params.get("horizon_days", config.labels.horizon_days))),
            plots_dir=plots_dir,
        )
