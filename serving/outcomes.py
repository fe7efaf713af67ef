"""Outcomes of interventions: import what happened, measure the real uplift and ROI against control.

An outcomes file (CSV) has one row per recommended (user, action): ``user_id``, ``action_id``,
``contacted`` (bool), ``bought`` (bool: bought within the measurement window), ``spend`` (shop currency,
>= 0; empty means 0) and optionally ``contacted_at`` (UTC time of the contact; not in the future). Each row
is joined with the scoring output that recommended it, which says whether the pair was in the action's
random control group. Rows that cannot be used are rejected with a reason each (rows in = accepted + rejected).

Measurement (intent to treat: treated = recommended and not in the control group, contacted or not):

- ``rate_treated``/``rate_control``: share who bought (retention for buyers, conversion for prospects);
  ``uplift`` = difference, with a 95% normal-approximation interval
  ``uplift +- 1.96 sqrt(p_t(1-p_t)/n_t + p_c(1-p_c)/n_c)``;
- ``relative_uplift``: comparable to the playbook's ``uplift_prior``: relative reduction of the
  no-purchase rate for buyers ``(p_t - p_c) / (1 - p_c)``, relative rise of conversion for prospects
  ``(p_t - p_c) / p_c``; 95% interval by parametric bootstrap (2,000 binomial redraws, seeded);
- ``incremental_spend`` per treated user = mean spend treated - mean spend control (Welch normal
  interval); ``cost`` = contacted treated users x unit cost; ``roi`` = (incremental spend x treated
  users - cost) / cost, its interval carried over from the incremental spend interval.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.config import StrataConfig
from features.errors import InputFileError, StrataError

REQUIRED_COLUMNS = ("user_id", "action_id", "contacted", "bought", "spend")
OPTIONAL_COLUMNS = ("contacted_at",)
DEFAULT_STORE = "outcomes.parquet"
Z95 = 1.959963984540054
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}
_BOOTSTRAP = 2000

STORED_COLUMNS = [
    "user_id",
    "action_id",
    "contacted",
    "bought",
    "spend",
    "contacted_at",
    "control",
    "lifecycle",
    "refined_layer",
    "scored_as_of",
    "model_version",
    "unit_cost",
    "uplift_prior",
    "source_file",
    "imported_at",
]


@dataclass(frozen=True)
class OutcomeImport:
    """Result of reading one outcomes file: accepted rows (joined with the scoring) and rejected rows."""

    accepted: pd.DataFrame
    rejected: pd.DataFrame
    rows_in: int


def _parse_bool(raw: pd.Series) -> tuple[pd.Series, pd.Series]:
    text = raw.astype(str).str.strip().str.lower()
    value = text.isin(_TRUE)
    ok = value | text.isin(_FALSE)
    return value, ok


def read_outcomes(path: str | Path, scores: pd.DataFrame, config: StrataConfig,
                  now: pd.Timestamp | None = None) -> OutcomeImport:
    """Read an outcomes CSV and join it with the scoring output that recommended the actions.

    Parameters
    ----------
    path
        CSV file with :data:`REQUIRED_COLUMNS` (and optionally ``contacted_at``).
    scores
        Scoring output (``user_id``, ``as_of``, ``model_version``, ``lifecycle``, ``refined_layer``,
        ``action_id``, ``control`` and ``interventions``), e.g. :func:`serving.batch.read_scores`.
    config
        Supplies the playbook (unit cost and uplift prior of each action) and ``data.future_tolerance_hours``:
        a ``contacted_at`` more than that many hours after ``now`` is rejected as in the future.
    now
        Import time (default: the current time, UTC).

    Returns
    -------
    OutcomeImport
        ``accepted`` has :data:`STORED_COLUMNS`; ``rejected`` has ``row`` (1-based data row of the file),
        ``user_id``, ``action_id`` and ``reason``.
    """
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"{p}: outcomes file not found")
    try:
        raw = pd.read_csv(p, dtype=str, keep_default_na=False, encoding="utf-8")
    except pd.errors.EmptyDataError:
        raise InputFileError(f"{p}: outcomes file is empty (expected a header {', '.join(REQUIRED_COLUMNS)})") from None
    except (UnicodeDecodeError, pd.errors.ParserError) as err:
        raise InputFileError(f"{p}: cannot read as a UTF-8 CSV: {err}") from None
    raw.columns = [str(c).strip() for c in raw.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise InputFileError(
            f"{p}: missing column(s) {', '.join(missing)} (found: {', '.join(raw.columns) or 'none'})"
        )
    n = len(raw)
    reason = pd.Series([""] * n, index=raw.index, dtype=object)

    def reject(mask: pd.Series, text: pd.Series | str) -> None:
        new = mask & (reason == "")
        if isinstance(text, str):
            reason[new] = text
        else:
            reason[new] = text[new]

    users = raw["user_id"].astype(str).str.strip()
    actions = raw["action_id"].astype(str).str.strip()
    reject(users == "", "user_id: empty")
    reject(actions == "", "action_id: empty")
    costs = {a.id: float(a.unit_cost) for a in config.interventions.playbook}
    priors = {a.id: float(a.uplift_prior) for a in config.interventions.playbook}
    reject(~actions.isin(list(costs)), "action_id: " + actions.map(repr) + " is not in the playbook")
    contacted, ok_c = _parse_bool(raw["contacted"])
    reject(~ok_c, "contacted: " + raw["contacted"].map(repr) + " is not a boolean (true/false/1/0/yes/no)")
    bought, ok_b = _parse_bool(raw["bought"])
    reject(~ok_b, "bought: " + raw["bought"].map(repr) + " is not a boolean (true/false/1/0/yes/no)")
    spend_text = raw["spend"].astype(str).str.strip()
    spend = pd.to_numeric(spend_text.where(spend_text != "", "0"), errors="coerce")
    reject(spend.isna() | ~np.isfinite(spend.fillna(0.0)), "spend: " + raw["spend"].map(repr) + " is not a number")
    reject(spend < 0, "spend: " + raw["spend"].map(repr) + " is negative")
    if "contacted_at" in raw.columns:
        text = raw["contacted_at"].astype(str).str.strip()
        contacted_at = pd.to_datetime(text.where(text != "", None), utc=True, errors="coerce", format="mixed")
        reject((text != "") & contacted_at.isna(), "contacted_at: " + raw["contacted_at"].map(repr) + " is not a timestamp")
        now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
        limit = now + pd.Timedelta(hours=config.data.future_tolerance_hours)
        reject(contacted_at > limit, "contacted_at: " + raw["contacted_at"].map(repr)
               + f" is in the future (after {limit.isoformat(timespec='seconds')}, the import time plus "
               f"data.future_tolerance_hours = {config.data.future_tolerance_hours:g})")
    else:
        contacted_at = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns, UTC]")
    dup = pd.DataFrame({"u": users, "a": actions}).duplicated(keep="first")
    reject(dup, "duplicate (user_id, action_id) row in the file")

    recs = recommendations(scores)
    key = pd.MultiIndex.from_arrays([users, actions])
    rec_key = pd.MultiIndex.from_arrays([recs["user_id"], recs["action_id"]])
    pos = rec_key.get_indexer(key)
    reject(
        pd.Series(pos < 0, index=raw.index),
        "(user_id, action_id) = (" + users.map(repr) + ", " + actions.map(repr) + ") was not recommended by the scoring output",
    )
    good = (reason == "").to_numpy()
    if len(recs):
        matched = recs.iloc[np.where(pos >= 0, pos, 0)].reset_index(drop=True)
    else:  # nothing was recommended: every row was rejected above; placeholders of the right length
        matched = pd.DataFrame({c: pd.Series([None] * n, dtype=object) for c in recs.columns})
        matched["control"] = False
    accepted = pd.DataFrame(
        {
            "user_id": users.to_numpy(),
            "action_id": actions.to_numpy(),
            "contacted": contacted.to_numpy(dtype=bool),
            "bought": bought.to_numpy(dtype=bool),
            "spend": spend.fillna(0.0).to_numpy(dtype=float),
            "contacted_at": contacted_at.to_numpy(),
            "control": matched["control"].to_numpy(dtype=bool),
            "lifecycle": matched["lifecycle"].to_numpy(dtype=object),
            "refined_layer": matched["refined_layer"].to_numpy(dtype=object),
            "scored_as_of": pd.to_datetime(matched["as_of"], utc=True).to_numpy(),
            "model_version": matched["model_version"].astype(str).to_numpy(dtype=object),
            "unit_cost": actions.map(costs).to_numpy(dtype=float),
            "uplift_prior": actions.map(priors).to_numpy(dtype=float),
            "source_file": str(p),
            "imported_at": pd.Timestamp.now(tz="UTC"),
        }
    )[good].reset_index(drop=True)
    accepted["contacted_at"] = pd.to_datetime(accepted["contacted_at"], utc=True)
    accepted["scored_as_of"] = pd.to_datetime(accepted["scored_as_of"], utc=True)
    bad = ~good
    rejected = pd.DataFrame(
        {
            "row": np.flatnonzero(bad) + 1,
            "user_id": users.to_numpy()[bad],
            "action_id": actions.to_numpy()[bad],
            "reason": reason.to_numpy()[bad],
        }
    )
    return OutcomeImport(accepted=accepted, rejected=rejected, rows_in=n)


def recommendations(scores: pd.DataFrame) -> pd.DataFrame:
    """Every selected (user, action) pair of a scoring output with its control flag.

    The ``action_id`` column holds each user's best selected action; further selected actions (when
    ``max_actions_per_user`` > 1) are read from the ``interventions`` JSON.
    """
    need = ["user_id", "as_of", "model_version", "lifecycle", "refined_layer", "action_id", "control"]
    missing = [c for c in need if c not in scores.columns]
    if missing:
        raise StrataError(f"scoring output: missing column(s) {', '.join(missing)}; is this a `strata score` output?")
    base = scores.loc[scores["action_id"].notna(), need].copy()
    extra_rows = []
    if "interventions" in scores.columns:
        for row in scores.loc[scores["action_id"].notna(), need + ["interventions"]].itertuples(index=False):
            text = row.interventions
            if not isinstance(text, str) or text.count('"selected": true') <= 1:
                continue
            for item in json.loads(text):
                if item.get("selected") and item["action_id"] != row.action_id:
                    extra_rows.append(
                        (row.user_id, row.as_of, row.model_version, row.lifecycle, row.refined_layer,
                         item["action_id"], bool(item.get("control", False)))
                    )
    if extra_rows:
        base = pd.concat([base, pd.DataFrame(extra_rows, columns=need)], ignore_index=True)
    base["user_id"] = base["user_id"].astype(str)
    base["control"] = base["control"].astype(bool)
    return base.drop_duplicates(["user_id", "action_id"], keep="first").reset_index(drop=True)


#: Columns of a stored outcome that the summaries, the contact history and the merge read.
STORE_REQUIRED_COLUMNS = ("user_id", "action_id", "contacted", "bought", "spend", "contacted_at", "control",
                          "lifecycle", "refined_layer", "scored_as_of", "unit_cost", "uplift_prior")


def _missing_columns(frame: pd.DataFrame, needed: tuple[str, ...] | list[str]) -> list[str]:
    return [c for c in needed if c not in frame.columns]


def load_store(path: str | Path) -> pd.DataFrame:
    """All stored outcomes (empty frame with :data:`STORED_COLUMNS` if the file does not exist).

    Raises
    ------
    InputFileError
        When the file is not readable Parquet, or lacks any of :data:`STORE_REQUIRED_COLUMNS` (another
        Parquet file than a store of ``strata outcomes import``); the message names the file and columns.
    """
    p = Path(path)
    if not p.exists():
        return pd.DataFrame({c: pd.Series(dtype=object) for c in STORED_COLUMNS})
    try:
        frame = pd.read_parquet(p)
    except Exception as err:  # pyarrow raises several types for a corrupt file
        raise InputFileError(f"{p}: cannot read the outcomes store: {err}") from None
    missing = _missing_columns(frame, STORE_REQUIRED_COLUMNS)
    if missing:
        raise InputFileError(f"{p}: not an outcomes store (from `strata outcomes import`): missing column(s) "
                             f"{', '.join(missing)}")
    return frame


def save_outcomes(accepted: pd.DataFrame, path: str | Path) -> pd.DataFrame:
    """Merge ``accepted`` into the store at ``path`` and return the whole store.

    A re-import of the same (user, action, scoring time) replaces the earlier row, so importing a
    file twice does not double count. The file is replaced atomically (write to a temp file, rename).
    """
    p = Path(path)
    existing = load_store(p)
    merged = pd.concat([existing, accepted], ignore_index=True) if len(existing) else accepted.copy()
    merged = merged.drop_duplicates(["user_id", "action_id", "scored_as_of"], keep="last").reset_index(drop=True)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    merged.to_parquet(tmp, index=False)
    tmp.replace(p)
    return merged


def last_contacted(outcomes: pd.DataFrame) -> pd.DataFrame:
    """Contact history for frequency caps: ``user_id, action_id, last_contacted_at`` (UTC).

    Only contacted rows count; the contact time is ``contacted_at`` where given, else the ``as_of`` of
    the scoring that recommended it.
    """
    if outcomes is None or len(outcomes) == 0:
        return pd.DataFrame(
            {"user_id": pd.Series(dtype=object), "action_id": pd.Series(dtype=object),
             "last_contacted_at": pd.Series(dtype="datetime64[ns, UTC]")}
        )
    rows = outcomes[outcomes["contacted"].astype(bool)]
    when = pd.to_datetime(rows["contacted_at"], utc=True).fillna(pd.to_datetime(rows["scored_as_of"], utc=True))
    out = pd.DataFrame({"user_id": rows["user_id"].astype(str), "action_id": rows["action_id"], "last_contacted_at": when})
    latest = out.groupby(["user_id", "action_id"])["last_contacted_at"].max()
    return latest.reset_index()


def _normal_diff_ci(mean_t: float, var_t: float, n_t: int, mean_c: float, var_c: float, n_c: int) -> tuple[float, float, float]:
    if n_t == 0 or n_c == 0:
        return (np.nan, np.nan, np.nan)
    diff = mean_t - mean_c
    se = float(np.sqrt(var_t / n_t + var_c / n_c))
    return diff, diff - Z95 * se, diff + Z95 * se


def _relative_uplift(p_t: float, n_t: int, p_c: float, n_c: int, prospect: bool, rng: np.random.Generator) -> tuple[float, float, float]:
    if n_t == 0 or n_c == 0:
        return (np.nan, np.nan, np.nan)

    def rel(pt: np.ndarray | float, pc: np.ndarray | float) -> np.ndarray:
        base = np.asarray(pc, dtype=float) if prospect else 1.0 - np.asarray(pc, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(base > 0, (np.asarray(pt) - np.asarray(pc)) / np.where(base > 0, base, 1.0), np.nan)

    point = float(rel(p_t, p_c))
    draws_t = rng.binomial(n_t, p_t, size=_BOOTSTRAP) / n_t
    draws_c = rng.binomial(n_c, p_c, size=_BOOTSTRAP) / n_c
    sims = rel(draws_t, draws_c)
    sims = sims[~np.isnan(sims)]
    if sims.size < _BOOTSTRAP // 2:
        return point, np.nan, np.nan
    lo, hi = np.quantile(sims, [0.025, 0.975])
    return point, float(lo), float(hi)


SUMMARY_COLUMNS = [
    "group_by",
    "group",
    "n_treated",
    "n_control",
    "contacted_treated",
    "control_contacted",
    "rate_treated",
    "rate_control",
    "uplift",
    "uplift_lo",
    "uplift_hi",
    "relative_uplift",
    "relative_uplift_lo",
    "relative_uplift_hi",
    "uplift_prior",
    "spend_treated",
    "spend_control",
    "incremental_spend",
    "incremental_spend_lo",
    "incremental_spend_hi",
    "cost",
    "incremental_revenue",
    "roi",
    "roi_lo",
    "roi_hi",
]


#: What :func:`outcome_summary` can group by (``strata outcomes import --by``).
SUMMARY_GROUPS = ("action_id", "refined_layer", "lifecycle", "all")


def outcome_summary(outcomes: pd.DataFrame, by: str = "action_id", *, seed: int = 42) -> pd.DataFrame:
    """Measured uplift and ROI per group with 95% intervals, next to the prior.

    Parameters
    ----------
    outcomes
        Stored outcomes (:func:`load_store` or ``OutcomeImport.accepted``).
    by
        ``"action_id"``, ``"refined_layer"``, ``"lifecycle"`` or ``"all"`` (one overall row).
    seed
        Seed of the bootstrap of the relative uplift interval.

    Returns
    -------
    DataFrame with :data:`SUMMARY_COLUMNS`, one row per group (sorted by treated users, descending).
    Rates and uplifts are fractions (0..1), spends and costs shop currency (spend columns per user),
    ``roi`` a ratio (0.5 = 50% net return on cost). ``uplift_prior`` is the playbook prior (the mean over
    treated rows when a group spans several actions). Intervals are NaN when a side has no users.
    """
    if by not in SUMMARY_GROUPS:
        choices = f"{', '.join(SUMMARY_GROUPS[:-1])} or {SUMMARY_GROUPS[-1]}"
        raise StrataError(f"outcome summary: cannot group by {by!r} (use {choices})")
    rng = np.random.default_rng(seed)
    if outcomes is None or len(outcomes) == 0:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in SUMMARY_COLUMNS})
    needed = ["control", "bought", "spend", "contacted", "lifecycle", "unit_cost", "uplift_prior"]
    missing = _missing_columns(outcomes, needed + ([] if by == "all" else [by]))
    if missing:
        raise StrataError(f"outcome summary: the outcomes lack column(s) {', '.join(missing)}; is this a store "
                          f"from `strata outcomes import`?")
    frame = outcomes.copy()
    frame["_group"] = "all" if by == "all" else frame[by].astype(str)
    rows = []
    for group, g in frame.groupby("_group", sort=True):
        ctl = g["control"].astype(bool).to_numpy()
        t, c = g[~ctl], g[ctl]
        n_t, n_c = len(t), len(c)
        bought_t = t["bought"].astype(float).to_numpy()
        bought_c = c["bought"].astype(float).to_numpy()
        p_t = float(bought_t.mean()) if n_t else np.nan
        p_c = float(bought_c.mean()) if n_c else np.nan
        uplift = _normal_diff_ci(p_t, p_t * (1 - p_t), n_t, p_c, p_c * (1 - p_c), n_c)
        prospects = (g["lifecycle"] == "potential").to_numpy()
        if prospects.all() or (~prospects).all():
            rel = _relative_uplift(p_t, n_t, p_c, n_c, bool(prospects.all()), rng)
        else:
            rel = (np.nan, np.nan, np.nan)
        spend_t = t["spend"].astype(float).to_numpy()
        spend_c = c["spend"].astype(float).to_numpy()
        inc = _normal_diff_ci(
            float(spend_t.mean()) if n_t else np.nan,
            float(spend_t.var(ddof=1)) if n_t > 1 else 0.0,
            n_t,
            float(spend_c.mean()) if n_c else np.nan,
            float(spend_c.var(ddof=1)) if n_c > 1 else 0.0,
            n_c,
        )
        contacted_t = t["contacted"].astype(bool).to_numpy()
        cost = float((t["unit_cost"].astype(float).to_numpy() * contacted_t).sum())
        revenue = inc[0] * n_t if n_t else np.nan
        if cost > 0 and n_t:
            roi = ((inc[0] * n_t - cost) / cost, (inc[1] * n_t - cost) / cost, (inc[2] * n_t - cost) / cost)
        else:
            roi = (np.nan, np.nan, np.nan)
        rows.append(
            {
                "group_by": by,
                "group": group,
                "n_treated": n_t,
                "n_control": n_c,
                "contacted_treated": int(contacted_t.sum()),
                "control_contacted": int(c["contacted"].astype(bool).sum()),
                "rate_treated": p_t,
                "rate_control": p_c,
                "uplift": uplift[0],
                "uplift_lo": uplift[1],
                "uplift_hi": uplift[2],
                "relative_uplift": rel[0],
                "relative_uplift_lo": rel[1],
                "relative_uplift_hi": rel[2],
                "uplift_prior": float(t["uplift_prior"].astype(float).mean()) if n_t else np.nan,
                "spend_treated": float(spend_t.mean()) if n_t else np.nan,
                "spend_control": float(spend_c.mean()) if n_c else np.nan,
                "incremental_spend": inc[0],
                "incremental_spend_lo": inc[1],
                "incremental_spend_hi": inc[2],
                "cost": cost,
                "incremental_revenue": revenue,
                "roi": roi[0],
                "roi_lo": roi[1],
                "roi_hi": roi[2],
            }
        )
    out = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    return out.sort_values(["n_treated", "group"], ascending=[False, True]).reset_index(drop=True)
