"""Batch scoring on Apache Spark: the project's one :class:`serving.scorer.Scorer`, applied per partition.

The registered model is loaded once on the driver, broadcast to the executors, and every partition of
the Spark feature frame (:func:`features.spark.feature_sql.build_features_spark`) is scored by
``Scorer.score_features`` inside ``mapInPandas``. Since the scorer is per-user deterministic (no
population statistic is taken from the batch), a user gets exactly the row the embedded path gives.

The budget allocation is the one cross-user step. With a budget, scoring runs in two stages, as in
:mod:`serving.batch`: partitions emit their core scores and eligible (user, action) candidates; the
positive candidates (small columns only) are collected and allocated greedily on the driver by
``Scorer.allocate``; the selection is joined back and each partition finishes its rows with it.

Output: :data:`serving.scorer.OUTPUT_COLUMNS`, written as Parquet part files partitioned by
``refined_layer`` (by default), so a CRM can load one layer at a time.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from features.config import StrataConfig
from features.cutoffs import parse_as_of
from features.errors import StrataError
from serving.scorer import CORE_COLUMNS, OUTPUT_COLUMNS, Scorer

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

#: Spark SQL type of every output column (the output contract of :class:`Scorer`).
OUTPUT_TYPES: dict[str, str] = {
    "user_id": "string",
    "as_of": "timestamp",
    "model_name": "string",
    "model_version": "string",
    "churn_risk": "double",
    "conversion_prob": "double",
    "predicted_value": "double",
    "value_p10": "double",
    "value_p90": "double",
    "lifecycle": "string",
    "rfm_segment": "string",
    "value_tier": "string",
    "activity_tier": "string",
    "refined_layer": "string",
    "reasons": "string",
    "action_id": "string",
    "action_name": "string",
    "action_cost": "double",
    "expected_incremental_value": "double",
    "control": "boolean",
    "interventions": "string",
}
DEFAULT_PARTITION_BY: tuple[str, ...] = ("refined_layer",)
_CANDIDATES = "_candidates"
_SELECTED = "_selected_actions"
_CANDIDATE_FIELDS = ["user_id", "action_id", "rank", "unit_cost", "expected_incremental_value", "control", "selected"]


class SparkScoringError(StrataError):
    """Spark scoring cannot proceed (output exists, unknown partition column...)."""


def _ddl(columns: Sequence[str], extra: str = "") -> str:
    missing = [c for c in columns if c not in OUTPUT_TYPES]
    if missing:
        raise SparkScoringError(f"internal: no Spark type for scorer output column(s) {', '.join(missing)}")
    ddl = ", ".join(f"`{c}` {OUTPUT_TYPES[c]}" for c in columns)
    return f"{ddl}, {extra}" if extra else ddl


def output_schema() -> str:
    """The Spark DDL schema of the scored table (:data:`serving.scorer.OUTPUT_COLUMNS`)."""
    return _ddl(OUTPUT_COLUMNS)


def features_batch_to_contract(batch: pd.DataFrame) -> pd.DataFrame:
    """An Arrow batch of a Spark feature frame as ``build_features`` types it.

    ``as_of`` becomes tz-aware UTC (Spark hands timestamps over naive, in the UTC session zone);
    numeric features float64 with NaN for NULL; string features ``object`` str.
    """
    out = batch.copy()
    ts = pd.to_datetime(out["as_of"])
    out["as_of"] = (ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")).astype("datetime64[ns, UTC]")
    out["user_id"] = out["user_id"].astype(str).to_numpy(dtype=object)
    for c in out.columns:
        if c in ("user_id", "as_of"):
            continue
        if pd.api.types.is_numeric_dtype(out[c].dtype) and not pd.api.types.is_bool_dtype(out[c].dtype):
            out[c] = out[c].astype("float64")
        elif out[c].dtype == object:
            out[c] = out[c].astype(str).to_numpy(dtype=object)
    return out.reset_index(drop=True)


def _contract_output(scores: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Scorer output typed for Arrow: UTC timestamps, float64 numbers, bool control, str or None strings."""
    out = scores[list(columns)].copy()
    for c in columns:
        kind = OUTPUT_TYPES.get(c)
        if kind == "double":
            out[c] = pd.to_numeric(out[c], errors="coerce").astype("float64")
        elif kind == "boolean":
            out[c] = out[c].fillna(False).astype(bool)
        elif kind == "timestamp":
            out[c] = pd.to_datetime(out[c], utc=True)
    return out


def _score_partition(bc_scorer: Any) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        scorer: Scorer = bc_scorer.value
        for batch in batches:
            if not len(batch):
                continue
            scores = scorer.score_features(features_batch_to_contract(batch), budget=None)
            yield _contract_output(scores, OUTPUT_COLUMNS)

    return run


def _core_partition(bc_scorer: Any) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """Stage 1 with a budget: core scores plus the user's candidates as a JSON list."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        scorer: Scorer = bc_scorer.value
        for batch in batches:
            if not len(batch):
                continue
            core = scorer.score_core(features_batch_to_contract(batch))
            out = _contract_output(core.scores, CORE_COLUMNS)
            cands = core.candidates[_CANDIDATE_FIELDS]
            per_user: dict[Any, list[dict[Any, Any]]] = {}
            for rec in cands.to_dict(orient="records"):
                rec["rank"] = int(rec["rank"])
                rec["unit_cost"] = float(rec["unit_cost"])
                rec["expected_incremental_value"] = float(rec["expected_incremental_value"])
                rec["control"] = bool(rec["control"])
                rec["selected"] = False
                per_user.setdefault(rec["user_id"], []).append(rec)
            out[_CANDIDATES] = [json.dumps(per_user.get(u, [])) for u in out["user_id"]]
            yield out

    return run


def _finish_partition(bc_scorer: Any) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """Stage 2 with a budget: mark the allocated candidates selected and attach the action columns."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        scorer: Scorer = bc_scorer.value
        for batch in batches:
            if not len(batch):
                continue
            core = batch[CORE_COLUMNS].reset_index(drop=True)
            core["as_of"] = pd.to_datetime(core["as_of"]).dt.tz_localize("UTC")
            rows: list[dict[str, Any]] = []
            for text, chosen in zip(batch[_CANDIDATES], batch[_SELECTED], strict=True):
                picked = set(chosen) if chosen is not None else set()
                for rec in json.loads(text):
                    rec["selected"] = rec["action_id"] in picked
                    rows.append(rec)
            cands = pd.DataFrame(rows, columns=_CANDIDATE_FIELDS)
            cands = cands.astype({"rank": "int64", "unit_cost": "float64", "expected_incremental_value": "float64",
                                  "control": bool, "selected": bool})
            yield _contract_output(scorer.finish(core, cands), OUTPUT_COLUMNS)

    return run


@dataclass
class SparkAllocation:
    """Budget allocation made on the driver: budget and spent (shop currency), treated and control pairs."""

    budget: float
    spent: float
    treated: int
    control: int
    candidates: int


def score_features_spark(
    features: DataFrame,
    scorer: Scorer,
    *,
    budget: float | None = None,
    allocation: list[SparkAllocation] | None = None,
) -> DataFrame:
    """Score a Spark feature frame with ``scorer``: one row per user, :data:`OUTPUT_COLUMNS` (lazy).

    Parameters
    ----------
    features : as made by :func:`features.spark.feature_sql.build_features_spark` (``user_id``, ``as_of``,
        feature columns).
    scorer : the embedded scorer (loaded once on the driver and broadcast).
    budget : total cost (shop currency) the treated actions may use; None: each user gets their best
        positive action and no cross-user step runs. With a budget, the candidates are collected and
        allocated on the driver now (an eager step); the returned frame is lazy otherwise.
    allocation : if a list is given, the :class:`SparkAllocation` made for ``budget`` is appended to it.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    spark = features.sparkSession
    bc = spark.sparkContext.broadcast(scorer)
    if budget is None:
        return features.mapInPandas(_score_partition(bc), output_schema())

    core = features.mapInPandas(_core_partition(bc), _ddl(CORE_COLUMNS, f"`{_CANDIDATES}` string"))
    core = core.persist(StorageLevel.MEMORY_AND_DISK)
    cand_schema = (
        "array<struct<user_id:string, action_id:string, rank:bigint, unit_cost:double, "
        "expected_incremental_value:double, control:boolean, selected:boolean>>"
    )
    positive = (
        core.select(F.explode(F.from_json(F.col(_CANDIDATES), cand_schema)).alias("c"))
        .select("c.*")
        .where(F.col("expected_incremental_value") > 0)
    )
    cands = positive.toPandas()
    cands = cands.astype({"rank": "int64", "unit_cost": "float64", "expected_incremental_value": "float64",
                          "control": bool, "selected": bool})
    alloc = scorer.allocate(cands, float(budget))
    if allocation is not None:
        allocation.append(SparkAllocation(budget=alloc.budget, spent=alloc.spent, treated=alloc.treated,
                                          control=alloc.control, candidates=len(cands)))
    chosen = alloc.candidates.loc[alloc.candidates["selected"], ["user_id", "action_id"]].reset_index(drop=True)
    if len(chosen):
        sel = spark.createDataFrame(chosen, "user_id string, action_id string")
    else:
        sel = spark.createDataFrame([], "user_id string, action_id string")
    per_user = sel.groupBy("user_id").agg(F.collect_list("action_id").alias(_SELECTED))
    joined = core.join(per_user, on="user_id", how="left")
    return joined.mapInPandas(_finish_partition(bc), output_schema())


def write_scores_spark(
    scores: DataFrame,
    out: str | Path,
    *,
    partition_by: Sequence[str] | None = DEFAULT_PARTITION_BY,
    overwrite: bool = False,
) -> str:
    """Write scored rows as Parquet under ``out``, partitioned by ``partition_by`` (None: unpartitioned).

    Partition columns become directory names (``refined_layer=at_risk/``) and are restored as columns
    when the directory is read back with Spark or pyarrow. Raises :class:`SparkScoringError` if ``out``
    exists and ``overwrite`` is False.
    """
    from features.spark.reading import hadoop_path, path_exists

    target = hadoop_path(out)
    cols = list(partition_by or [])
    unknown = [c for c in cols if c not in scores.columns]
    if unknown:
        raise SparkScoringError(f"partition_by: unknown column(s) {', '.join(unknown)} (choose from {', '.join(scores.columns)})")
    if not overwrite and path_exists(scores.sparkSession, target):
        raise SparkScoringError(f"{target}: output already exists (choose another --out, remove it or pass --overwrite)")
    writer = scores.write.mode("overwrite" if overwrite else "errorifexists")
    if cols:
        writer = writer.partitionBy(*cols)
    writer.parquet(target)
    return target


def read_scores_spark(spark: SparkSession, path: str | Path) -> pd.DataFrame:
    """Read a scored Parquet directory back into pandas with :data:`OUTPUT_COLUMNS` in order, sorted by user."""
    from features.spark.frames import spark_to_pandas
    from features.spark.reading import hadoop_path

    frame = spark.read.parquet(hadoop_path(path))
    pdf = spark_to_pandas(frame.select(*OUTPUT_COLUMNS))
    return pdf.sort_values("user_id", kind="stable").reset_index(drop=True)


@dataclass
class SparkScoreRun:
    """What :func:`run_score_spark` did: counts, layer sizes, timings (seconds) and where it wrote."""

    out: str
    as_of: str
    model_name: str
    model_version: str
    n_users: int
    refined_layer: dict[str, int]
    report: dict[str, Any]
    allocation: SparkAllocation | None
    master: str
    seconds_start: float
    seconds_total: float

    def summary_lines(self) -> list[str]:
        """Lines for the CLI: what was written, users per refined layer, the budget, timings."""
        lines = [
            f"wrote {self.n_users:,} users to {self.out} (Parquet, partitioned) with {self.model_name} version "
            f"{self.model_version} as of {self.as_of} on Spark {self.master} in {self.seconds_total:.1f}s "
            f"({self.seconds_start:.1f}s Spark start-up)",
            "refined layers: " + ", ".join(f"{k} {v:,}" for k, v in sorted(self.refined_layer.items(), key=lambda kv: -kv[1])),
        ]
        if self.allocation is not None:
            a = self.allocation
            lines.append(f"budget {a.budget:,.2f}: spent {a.spent:,.2f} on {a.treated:,} treated users "
                         f"({a.control:,} held out as control) among {a.candidates:,} positive candidates")
        return lines


def run_score_spark(
    *,
    data_dir: str | Path | None,
    orders: str | Path | None,
    events: str | Path | None,
    users: str | Path | None,
    as_of: str | pd.Timestamp,
    out: str | Path,
    config: StrataConfig,
    alias: str = "champion",
    master: str | None = None,
    budget: float | None = None,
    now: str | pd.Timestamp | None = None,
    partition_by: Sequence[str] | None = DEFAULT_PARTITION_BY,
    overwrite: bool = False,
    scorer: Scorer | None = None,
    progress: Callable[[str], None] | None = None,
) -> SparkScoreRun:
    """``strata score --engine spark``: validate and build features on Spark, score, write partitioned Parquet.

    Parameters
    ----------
    alias : registry alias of the model (``models:/<training.model_name>@<alias>``); ignored if
        ``scorer`` is given.
    master : Spark master URL (``--spark-master``); default ``config.spark.master`` or the launcher's.
    budget : total action cost (shop currency); None: ``config.interventions.budget``.
    now : validation time for future timestamps (default: the current time).

    Returns
    -------
    SparkScoreRun with user counts per refined layer, the validation report and timings (seconds).
    """
    from pyspark.sql import functions as F

    from features.spark.feature_sql import build_features_spark
    from features.spark.session import spark_session
    from features.spark.validation import load_dataset_spark

    step = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    if scorer is None:
        step("loading the model")
        scorer = Scorer.from_registry(config, alias=alias)
    step("starting Spark")
    spark = spark_session(config, master=master, app_name="strata-score")
    t_start = time.perf_counter() - t0
    as_of_ts = parse_as_of(as_of)
    dataset, report = load_dataset_spark(spark, data_dir, orders=orders, events=events, users=users, config=config,
                                         now=now, progress=lambda name: step(f"validating {name}"))
    step("building features")
    features = build_features_spark(spark, dataset, as_of_ts, config)
    step("scoring")
    budget = config.interventions.budget if budget is None else budget
    allocation: list[SparkAllocation] = []
    scores = score_features_spark(features, scorer, budget=budget, allocation=allocation)
    target = write_scores_spark(scores, out, partition_by=partition_by, overwrite=overwrite)
    written = spark.read.parquet(target)
    layers = {str(r["refined_layer"]): int(r["count"]) for r in written.groupBy("refined_layer").count().collect()}
    n_users = sum(layers.values())
    dup = written.groupBy("user_id").count().where(F.col("count") > 1).limit(1).collect()
    if dup:
        raise SparkScoringError(f"internal: user {dup[0]['user_id']!r} scored more than once")
    report.unpersist()
    return SparkScoreRun(
        out=target, as_of=as_of_ts.isoformat(), model_name=scorer.model_name, model_version=scorer.model_version,
        n_users=n_users, refined_layer=dict(sorted(layers.items())), report=report.to_dict(),
        allocation=allocation[0] if allocation else None, master=str(spark.sparkContext.master), seconds_start=t_start,
        seconds_total=time.perf_counter() - t0,
    )
