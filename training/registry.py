"""Model registry operations: promote a challenger, roll back a champion, list versions.

Aliases of the registered model ``[training] model_name``: ``challenger`` (set by every training run)
and ``champion`` (what scoring and serving load: ``models:/<name>@champion``).

Promotion compares the challenger and the current champion on the **same rows**: the challenger's
evaluation rows (the evaluation half of its latest cutoff, logged with its run), which neither model
was fitted on when the champion was trained on an earlier end. The challenger wins if its churn AUC
beats the champion's by at least ``training.promote_min_auc_gain`` and its value normalized Gini is at
most ``training.promote_max_gini_loss`` below. Every decision (with the figures and the reason) is
recorded as tags of the challenger version; ``--force --reason`` overrides a rejection and is
recorded too. The champion history (a stack of versions) is kept in the registered model's tag
``champion_history``, so :func:`rollback` can move ``champion`` back; every move is appended to the
tag ``champion_log``.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.config import StrataConfig
from features.errors import ModelNotFoundError, StrataError
from training.train import CHALLENGER, CHAMPION, EVAL_ROWS_ARTIFACT, evaluate_bundle

log = logging.getLogger(__name__)

HISTORY_TAG = "champion_history"
LOG_TAG = "champion_log"
#: MLflow tag values are limited in length; keep the most recent entries.
MAX_HISTORY = 50
MAX_LOG = 30


class PromotionError(StrataError):
    """A promotion or rollback cannot be done as asked."""


@dataclass
class PromotionDecision:
    """Outcome of :func:`promote`."""

    promoted: bool
    challenger_version: str
    champion_version: str | None
    """The champion before the decision (None on the first promotion)."""
    reason: str
    forced: bool = False
    challenger_metrics: dict[str, float] = field(default_factory=dict)
    champion_metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class RollbackResult:
    """Outcome of :func:`rollback`."""

    from_version: str
    to_version: str


def _now() -> str:
    return pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds")


def _client(config: StrataConfig) -> Any:
    from training.tracking import tracking_client

    return tracking_client(config)


def _alias_version(client: Any, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def _read_client(config: StrataConfig) -> Any:
    """A client for read-only queries: no global MLflow state is touched and no experiment is created."""
    import mlflow

    from training.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(config)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def alias_version(config: StrataConfig, alias: str = CHAMPION) -> str | None:
    """The version number behind ``alias`` of ``training.model_name``, or None (no model or no alias).

    Cheap and side-effect free, so it can be polled (serving reloads the champion when this changes):
    a SQLite store that does not exist yet means "no model" and is not created.
    """
    from training.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(config)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return None
    return _alias_version(_read_client(config), config.training.model_name, alias)


def _registered_tags(client: Any, name: str) -> dict[str, str]:
    return dict(client.get_registered_model(name).tags)


def _history(client: Any, name: str) -> list[str]:
    raw = _registered_tags(client, name).get(HISTORY_TAG)
    return [str(v) for v in json.loads(raw)] if raw else []


def _append_log(client: Any, name: str, entry: str) -> None:
    raw = _registered_tags(client, name).get(LOG_TAG)
    entries = json.loads(raw) if raw else []
    entries.append(entry)
    client.set_registered_model_tag(name, LOG_TAG, json.dumps(entries[-MAX_LOG:]))


def _set_champion(client: Any, name: str, version: str, history: list[str], event: str) -> None:
    client.set_registered_model_alias(name, CHAMPION, version)
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history[-MAX_HISTORY:]))
    _append_log(client, name, f"{_now()} {event}")


def _eval_rows(client: Any, name: str, version: str) -> pd.DataFrame:
    import mlflow
    from mlflow.exceptions import MlflowException

    mv = client.get_model_version(name, version)
    run_id = mv.tags.get("run_id") or mv.run_id
    if not run_id:
        raise PromotionError(f"{name} version {version}: no training run recorded; cannot find its evaluation rows")
    with tempfile.TemporaryDirectory(prefix="strata-eval-") as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=EVAL_ROWS_ARTIFACT, dst_path=tmp)
        except (MlflowException, OSError) as err:
            raise PromotionError(
                f"{name} version {version}: run {run_id} has no {EVAL_ROWS_ARTIFACT} ({err}); "
                "retrain it or promote with --force --reason"
            ) from None
        return pd.read_parquet(Path(path))


def _load(config: StrataConfig, version: str) -> Any:
    from training.pyfunc import load_bundle

    return load_bundle(f"models:/{config.training.model_name}/{version}")


def compare(config: StrataConfig, challenger: str, champion: str) -> tuple[dict[str, float], dict[str, float], str | None]:
    """Backtest metrics of two versions on the challenger's evaluation rows, and why they cannot be
    compared (None when they can)."""
    from training.models import FeatureMismatchError

    client = _client(config)
    name = config.training.model_name
    rows = _eval_rows(client, name, challenger)
    ch_bundle, cm_bundle = _load(config, challenger), _load(config, champion)
    ch = evaluate_bundle(ch_bundle, rows)
    if cm_bundle.horizon_days != ch_bundle.horizon_days:
        return ch, {}, (
            f"champion v{champion} predicts {cm_bundle.horizon_days} days ahead, challenger v{challenger} "
            f"{ch_bundle.horizon_days} days: their backtests are not comparable"
        )
    try:
        cm = evaluate_bundle(cm_bundle, rows)
    except FeatureMismatchError as err:
        return ch, {}, f"champion v{champion} cannot score the challenger's evaluation rows: {err}"
    return ch, cm, None


def _verdict(config: StrataConfig, ch: dict[str, float], cm: dict[str, float]) -> tuple[bool, str]:
    t = config.training
    auc_gain = ch["churn_auc"] - cm["churn_auc"]
    gini_loss = cm["value_normalized_gini"] - ch["value_normalized_gini"]
    figures = (
        f"churn AUC {ch['churn_auc']:.4f} vs {cm['churn_auc']:.4f} (gain {auc_gain:+.4f}, need >= {t.promote_min_auc_gain:+.4f}); "
        f"value Gini {ch['value_normalized_gini']:.4f} vs {cm['value_normalized_gini']:.4f} "
        f"(loss {gini_loss:+.4f}, allowed <= {t.promote_max_gini_loss:.4f})"
    )
    if not (np.isfinite(auc_gain) and np.isfinite(gini_loss)):
        return False, f"metrics undefined on the evaluation rows: {figures}"
    ok = auc_gain >= t.promote_min_auc_gain and gini_loss <= t.promote_max_gini_loss
    return ok, ("challenger beats champion: " if ok else "challenger does not beat champion: ") + figures


def _overlap_note(client: Any, name: str, challenger: str, champion: str) -> str:
    """A warning when the champion's training labels reach into the challenger's evaluation window."""
    ch_cut = client.get_model_version(name, challenger).tags.get("eval_cutoff")
    cm_cut = client.get_model_version(name, champion).tags.get("eval_cutoff")
    if ch_cut and cm_cut and pd.Timestamp(cm_cut) > pd.Timestamp(ch_cut):
        return (
            f"; note: champion v{champion} was fitted on labels up to {cm_cut[:10]}, after the evaluation cutoff "
            f"{ch_cut[:10]}, so it has seen part of the evaluation window and the comparison favours it"
        )
    return ""


def promote(config: StrataConfig, force: bool = False, reason: str | None = None) -> PromotionDecision:
    """Move ``champion`` to the ``challenger`` version if it beats the current champion (see the module docstring).

    ``force`` promotes regardless of the comparison and requires a ``reason``, recorded with it. The
    first promotion (no champion yet) always succeeds.

    Raises
    ------
    ModelNotFoundError
        No registered model or no ``challenger`` alias.
    PromotionError
        ``force`` without ``reason``.
    """
    if force and not (reason and reason.strip()):
        raise PromotionError("--force needs --reason TEXT explaining why the comparison is overridden")
    client = _client(config)
    name = config.training.model_name
    challenger = _alias_version(client, name, CHALLENGER)
    if challenger is None:
        raise ModelNotFoundError(f"model {name!r} has no {CHALLENGER!r} version: train one with `strata train`")
    champion = _alias_version(client, name, CHAMPION)
    ch_m: dict[str, float] = {}
    cm_m: dict[str, float] = {}
    if champion is None:
        promoted, why = True, "first promotion (no champion yet)"
    elif champion == challenger:
        return PromotionDecision(False, challenger, champion, f"version {challenger} is already the champion", force)
    else:
        ch_m, cm_m, problem = compare(config, challenger, champion)
        if problem:
            promoted, why = False, problem
        else:
            promoted, why = _verdict(config, ch_m, cm_m)
            why += _overlap_note(client, name, challenger, champion)
    if force and not promoted:
        why = f"forced by user: {reason.strip()} (comparison: {why})"  # type: ignore[union-attr]
        promoted = True
    elif reason:
        why = f"{why}; note: {reason.strip()}"
    tags = {
        "promotion_decision": "promoted" if promoted else "rejected",
        "promotion_reason": why[:4900],
        "promotion_time": _now(),
        "promotion_forced": str(bool(force)).lower(),
        "promotion_compared_with": champion or "none",
    }
    for prefix, m in (("challenger", ch_m), ("champion", cm_m)):
        for k in ("churn_auc", "value_normalized_gini"):
            if k in m:
                tags[f"promotion_{prefix}_{k}"] = f"{m[k]:.6f}"
    for k, v in tags.items():
        client.set_model_version_tag(name, challenger, k, v)
    if promoted:
        history = _history(client, name)
        if champion is not None and (not history or history[-1] != champion):
            history.append(champion)  # alias moved outside this tool: keep it in the history anyway
        history.append(challenger)
        client.set_model_version_tag(name, challenger, "previous_champion", champion or "none")
        _set_champion(client, name, challenger, history, f"promote v{challenger} (was v{champion or '-'}): {why[:300]}")
        log.info("%s v%s is the champion: %s", name, challenger, why)
    else:
        log.info("%s v%s not promoted: %s", name, challenger, why)
    return PromotionDecision(promoted, challenger, champion, why, force, ch_m, cm_m)


def rollback(config: StrataConfig) -> RollbackResult:
    """Move ``champion`` back to the previous champion; the rolled-back version is tagged.

    Raises
    ------
    ModelNotFoundError
        No champion.
    PromotionError
        No earlier champion to roll back to.
    """
    client = _client(config)
    name = config.training.model_name
    current = _alias_version(client, name, CHAMPION)
    if current is None:
        raise ModelNotFoundError(f"model {name!r} has no {CHAMPION!r}: nothing to roll back")
    history = _history(client, name)
    if current in history:
        history = history[: len(history) - history[::-1].index(current) - 1]  # drop through the current one
    previous = next((v for v in reversed(history) if v != current), None)
    if previous is None:
        raise PromotionError(f"model {name!r}: champion v{current} has no previous champion to roll back to")
    history = history[: len(history) - history[::-1].index(previous)]  # ends with previous
    client.set_model_version_tag(name, current, "rolled_back_at", _now())
    client.set_model_version_tag(name, current, "rolled_back_to", previous)
    _set_champion(client, name, previous, history, f"rollback v{current} -> v{previous}")
    log.info("%s champion rolled back from v%s to v%s", name, current, previous)
    return RollbackResult(from_version=current, to_version=previous)


LIST_COLUMNS = [
    "version",
    "aliases",
    "created_at",
    "train_end",
    "horizon_days",
    "churn_auc",
    "bgnbd_churn_auc",
    "value_normalized_gini",
    "bgnbd_value_normalized_gini",
    "conversion_auc",
    "value_model_kind",
    "promotion_decision",
    "run_id",
]


def list_models(config: StrataConfig) -> pd.DataFrame:
    """Registered versions of ``training.model_name``, newest first: aliases, training end and key metrics.

    Columns :data:`LIST_COLUMNS` (metrics as floats, NaN when not recorded). Empty when nothing is registered.
    """
    from mlflow.exceptions import MlflowException

    client = _read_client(config)
    name = config.training.model_name
    try:
        registered = client.get_registered_model(name)
    except MlflowException:
        return pd.DataFrame(columns=LIST_COLUMNS)
    by_version: dict[str, list[str]] = {}
    for alias, v in (registered.aliases or {}).items():
        by_version.setdefault(str(v), []).append(alias)
    rows = []
    for mv in client.search_model_versions(f"name = '{name}'"):
        tags = mv.tags or {}

        def num(key: str, tags: dict[str, str] = tags) -> float:
            try:
                return float(tags[key])
            except (KeyError, ValueError):
                return float("nan")

        rows.append(
            {
                "version": int(mv.version),
                "aliases": ",".join(sorted(by_version.get(str(mv.version), []))),
                "created_at": pd.Timestamp(mv.creation_timestamp, unit="ms", tz="UTC"),
                "train_end": tags.get("train_end", ""),
                "horizon_days": tags.get("horizon_days", ""),
                "churn_auc": num("churn_auc"),
                "bgnbd_churn_auc": num("bgnbd_churn_auc"),
                "value_normalized_gini": num("value_normalized_gini"),
                "bgnbd_value_normalized_gini": num("bgnbd_value_normalized_gini"),
                "conversion_auc": num("conversion_auc"),
                "value_model_kind": tags.get("value_model_kind", ""),
                "promotion_decision": tags.get("promotion_decision", ""),
                "run_id": mv.run_id or tags.get("run_id", ""),
            }
        )
    frame = pd.DataFrame(rows, columns=LIST_COLUMNS)
    return frame.sort_values("version", ascending=False).reset_index(drop=True)
