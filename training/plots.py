"""Diagnostic charts of a training run, written as PNG files.

Matplotlib is used through its object API (``Figure`` with the Agg canvas), so no global backend or
``pyplot`` state is touched: safe in servers, tests and notebooks alike.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _figure(width: float = 6.0, height: float = 4.5):  # noqa: ANN202  (matplotlib imported lazily)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> Path:  # noqa: ANN001
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(p, format="png")
    return p


def calibration_chart(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str) -> Path:
    """Reliability diagram: observed positive rate against mean predicted probability, 10 bins.

    ``curves`` maps a label (e.g. ``model``, ``BG/NBD``) to ``(y_true, p)``; bins with no rows are skipped.
    """
    from training.metrics import calibration_table

    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    for label, (y, p) in curves.items():
        table = calibration_table(y, p).query("n > 0")
        ax.plot(table["mean_pred"], table["frac_pos"], marker="o", label=label)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(loc="upper left")
    return _save(fig, path)


def _gain_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-score, kind="stable")
    captured = np.concatenate([[0.0], np.cumsum(y[order])])
    total = captured[-1]
    share_rows = np.linspace(0.0, 1.0, len(y) + 1)
    return share_rows, captured / total if total > 0 else captured


def lift_gain_chart(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str) -> Path:
    """Cumulative gain (share of positives captured vs share of users targeted) and lift per decile.

    ``curves`` maps a label to ``(y_true, score)``; higher scores are targeted first.
    """
    fig = _figure(10.0, 4.5)
    ax_gain = fig.add_subplot(1, 2, 1)
    ax_lift = fig.add_subplot(1, 2, 2)
    ax_gain.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="random")
    width = 0.8 / max(1, len(curves))
    for i, (label, (y, s)) in enumerate(curves.items()):
        y = np.asarray(y, dtype=float)
        s = np.asarray(s, dtype=float)
        x, g = _gain_curve(y, s)
        ax_gain.plot(x, g, label=label)
        order = np.argsort(-s, kind="stable")
        deciles = np.array_split(y[order], 10)
        base = y.mean() if len(y) and y.mean() > 0 else np.nan
        lift = [d.mean() / base if len(d) else np.nan for d in deciles]
        ax_lift.bar(np.arange(1, 11) + (i - (len(curves) - 1) / 2) * width, lift, width=width, label=label)
    ax_gain.set_xlabel("share of users targeted (highest score first)")
    ax_gain.set_ylabel("share of positives captured")
    ax_gain.set_title(f"{title}: cumulative gain")
    ax_gain.legend(loc="lower right")
    ax_lift.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    ax_lift.set_xlabel("decile (1 = highest score)")
    ax_lift.set_ylabel("lift (rate / overall rate)")
    ax_lift.set_xticks(range(1, 11))
    ax_lift.set_title(f"{title}: lift per decile")
    ax_lift.legend(loc="upper right")
    return _save(fig, path)


def feature_importance_chart(importance: pd.Series, path: str | Path, title: str, top: int = 20) -> Path:
    """Horizontal bars of the ``top`` largest values of ``importance`` (e.g. LightGBM total gain)."""
    imp = importance.sort_values(ascending=False).head(top)[::-1]
    fig = _figure(7.0, max(3.0, 0.3 * len(imp) + 1.0))
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(imp.index.astype(str), imp.to_numpy(dtype=float))
    ax.set_xlabel("total gain")
    ax.set_title(title)
    return _save(fig, path)


def value_decile_chart(deciles: dict[str, pd.DataFrame], path: str | Path, title: str) -> Path:
    """Mean predicted vs mean actual spend per predicted-value decile (1 = highest), per model.

    ``deciles`` maps a label to a :func:`training.metrics.value_deciles` table.
    """
    fig = _figure(8.0, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(1, 2 * len(deciles))
    k = 0
    n_series = 2 * len(deciles)
    for label, table in deciles.items():
        x = table["decile"].to_numpy(dtype=float)
        for column, kind in (("pred_mean", "predicted"), ("actual_mean", "actual")):
            offset = (k - (n_series - 1) / 2) * width
            ax.bar(x + offset, table[column].to_numpy(dtype=float), width=width, label=f"{label} {kind}")
            k += 1
    ax.set_xlabel("predicted-value decile (1 = highest)")
    ax.set_ylabel("mean spend in the horizon (currency)")
    ax.set_xticks(range(1, 11))
    ax.set_title(title)
    ax.legend(loc="upper right")
    return _save(fig, path)
