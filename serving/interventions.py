"""Interventions: which playbook actions each user is eligible for, what each is worth, who gets one.

Eligibility
    An action (``config.interventions.playbook``) is eligible for a user when the user's refined layer
    *or* lifecycle stage is among the action's ``layers`` (an ``at_risk`` mature buyer is eligible for
    both the at-risk and the mature playbook). A pair ``(user, action)`` contacted less than the
    action's ``frequency_cap_days`` before ``as_of`` (from an optional ``last_contacted`` history, see
    :func:`serving.outcomes.last_contacted`) is not eligible.

Expected incremental value (shop currency, over the prediction horizon)
    Buyers: ``churn_risk x value_if_retained x uplift_prior - unit_cost``: the action lowers the
    churn risk by the relative ``uplift_prior``, and each user kept is worth their expected spend
    *given* they buy, ``value_if_retained = predicted_value / max(1 - churn_risk, MIN_PROB)``
    (``predicted_value`` already counts the chance of buying nothing).
    Prospects (no purchase yet, ``churn_risk`` NaN): ``conversion_prob x uplift_prior x
    value_if_converted - unit_cost`` with ``value_if_converted = predicted_value /
    max(conversion_prob, MIN_PROB)``: the action raises the conversion probability by the relative
    ``uplift_prior``.

Selection
    Without a budget, each user gets their best ``max_actions_per_user`` actions with a positive
    expected incremental value. With a budget, (user, action) pairs with a positive value are taken
    greedily, best first, skipping pairs whose cost no longer fits, until nothing more fits: the
    treated cost never exceeds the budget (counted exactly, in millionths of the currency).

Control groups
    Every (user, action) pair has a fixed uniform number ``u`` in [0, 1) (blake2b of the user id and
    of the action id, combined with the splitmix64 mixer, / 2**64); pairs with ``u < control_share``
    are the action's random control group: selected like the others (they mirror who would have been
    contacted) but flagged ``control=True``: not to be contacted, and their cost does not consume the
    budget. The same pair is always in or out, run after run, whoever else is scored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.config import Action, InterventionConfig
from features.errors import StrataError

#: Floor of the purchase probability a value is divided by (keeps value-if-retained finite).
MIN_PROB = 0.05

CANDIDATE_COLUMNS = [
    "user_id",
    "action_id",
    "rank",
    "unit_cost",
    "expected_incremental_value",
    "control",
    "selected",
]

ACTION_COLUMNS = [
    "action_id",
    "action_name",
    "action_cost",
    "expected_incremental_value",
    "control",
    "interventions",
]


class PlaybookError(StrataError):
    """The intervention playbook in the configuration is unusable."""


@dataclass(frozen=True)
class Playbook:
    """The configured actions, indexed by id."""

    actions: tuple[Action, ...]

    @classmethod
    def from_config(cls, config: InterventionConfig) -> Playbook:
        """Check the playbook (unique ids, non-negative costs) and index it."""
        seen: set[str] = set()
        for action in config.playbook:
            if action.id in seen:
                raise PlaybookError(f"configuration [interventions] playbook: duplicate action id {action.id!r}")
            if action.unit_cost < 0:
                raise PlaybookError(
                    f"configuration [interventions] playbook: action {action.id!r} has negative unit_cost "
                    f"{action.unit_cost}"
                )
            seen.add(action.id)
        return cls(actions=tuple(config.playbook))

    def get(self, action_id: str) -> Action:
        for action in self.actions:
            if action.id == action_id:
                return action
        raise KeyError(action_id)

    @property
    def names(self) -> dict[str, str]:
        return {a.id: a.name for a in self.actions}

    @property
    def costs(self) -> dict[str, float]:
        return {a.id: float(a.unit_cost) for a in self.actions}


def stable_hash64(values: Sequence[str]) -> np.ndarray:
    """64-bit blake2b digest of each string (uint64)."""
    blake = hashlib.blake2b
    # The digests side by side, read as big-endian 64-bit integers (no Python int per value).
    digests = b"".join([blake(str(v).encode(), digest_size=8).digest() for v in values])
    return np.frombuffer(digests, dtype=">u8").astype(np.uint64)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: a bijective avalanche mix of uint64 values (wraps modulo 2**64)."""
    z = x.astype(np.uint64, copy=True)
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def _pair_hash(user_ids: Sequence[str], action_ids: Sequence[str]) -> np.ndarray:
    """The fixed 64-bit number of each (user, action) pair: ``mix64(blake64(user) ^ mix64(blake64(action)))``.

    Each distinct user and action is hashed once with blake2b, then pairs are mixed vectorised.
    """
    u_codes, u_values = pd.factorize(np.asarray(user_ids, dtype=object))
    a_codes, a_values = pd.factorize(np.asarray(action_ids, dtype=object))
    hu = stable_hash64(list(u_values))[u_codes]
    ha = mix64(stable_hash64(list(a_values)))[a_codes]
    return mix64(hu ^ ha)


def control_uniform(user_id: str, action_id: str) -> float:
    """The fixed uniform number in [0, 1) of a (user, action) pair (see :func:`control_flags`)."""
    return float(_pair_hash([user_id], [action_id])[0]) / 2.0**64


def control_flags(user_ids: Sequence[str], action_ids: Sequence[str], control_share: float) -> np.ndarray:
    """Boolean array: is each (user, action) pair in the action's random control group.

    A pair is in the control group when its fixed uniform number (blake2b of the user id and of the
    action id, mixed) is below ``control_share``: deterministic, independent of who else is scored,
    and independent across actions.
    """
    n = len(user_ids)
    if control_share <= 0 or n == 0:
        return np.zeros(n, dtype=bool)
    return _control_from_hash(_pair_hash(user_ids, action_ids), control_share)


def _control_from_hash(pair_hash: np.ndarray, control_share: float) -> np.ndarray:
    """Control flags from the pairs' fixed 64-bit numbers (see :func:`control_flags`)."""
    if control_share <= 0:
        return np.zeros(len(pair_hash), dtype=bool)
    limit = np.uint64(min(int(control_share * 2.0**64), 2**64 - 1))
    return pair_hash < limit


def expected_incremental_value(
    churn_risk: np.ndarray,
    conversion_prob: np.ndarray,
    predicted_value: np.ndarray,
    uplift: float,
    unit_cost: float,
) -> np.ndarray:
    """Expected incremental value (shop currency, over the horizon) of one action for each user.

    Buyers (``churn_risk`` not NaN) use the retention formula, prospects the conversion formula (see
    the module docstring). NaN when the user has neither score or no predicted value.
    """
    risk = np.asarray(churn_risk, dtype=float)
    conv = np.asarray(conversion_prob, dtype=float)
    value = np.clip(np.asarray(predicted_value, dtype=float), 0.0, None)
    buyer = ~np.isnan(risk)
    with np.errstate(invalid="ignore"):
        retained_value = value / np.maximum(1.0 - risk, MIN_PROB)
        buyer_gain = risk * retained_value * uplift
        converted_value = value / np.maximum(conv, MIN_PROB)
        prospect_gain = conv * uplift * converted_value
    return np.where(buyer, buyer_gain, prospect_gain) - unit_cost


def candidate_actions(
    scores: pd.DataFrame,
    config: InterventionConfig,
    *,
    last_contacted: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Every eligible (user, action) pair with its expected incremental value and rank.

    Parameters
    ----------
    scores
        One row per user with ``user_id``, ``as_of``, ``lifecycle``, ``refined_layer``, ``churn_risk``,
        ``conversion_prob`` and ``predicted_value``.
    config
        The intervention configuration (playbook, control share).
    last_contacted
        Optional contact history ``user_id, action_id, last_contacted_at`` (UTC): pairs contacted less
        than the action's ``frequency_cap_days`` before the user's ``as_of`` are dropped.

    Returns
    -------
    DataFrame
        :data:`CANDIDATE_COLUMNS`: ``rank`` 1 is the user's best action (by expected incremental value,
        ties by action id); ``control`` is the pair's control flag; ``selected`` is False (set by
        :func:`select_without_budget` or :func:`allocate_budget`). Sorted by user then rank.
    """
    playbook = Playbook.from_config(config)
    users = scores["user_id"].to_numpy(dtype=object)
    life = scores["lifecycle"].to_numpy(dtype=object)
    refined = scores["refined_layer"].to_numpy(dtype=object)
    risk = pd.to_numeric(scores["churn_risk"], errors="coerce").to_numpy(dtype=float)
    conv = pd.to_numeric(scores["conversion_prob"], errors="coerce").to_numpy(dtype=float)
    value = pd.to_numeric(scores["predicted_value"], errors="coerce").to_numpy(dtype=float)
    life_codes, life_values = pd.factorize(life)
    refined_codes, refined_values = pd.factorize(refined)
    n = len(users)
    # Actions in id order: ties of expected value are broken by action id.
    actions = sorted(playbook.actions, key=lambda a: a.id)
    k_actions = len(actions)
    # Expected incremental value of every (user, action) pair, NaN where the pair is not a candidate.
    values = np.full((n, k_actions), np.nan)
    for k, action in enumerate(actions):
        layers = set(action.layers)
        life_ok = np.array([v in layers for v in life_values], dtype=bool)
        refined_ok = np.array([v in layers for v in refined_values], dtype=bool)
        mask = (life_ok[life_codes] if len(life_ok) else False) | (refined_ok[refined_codes] if len(refined_ok) else False)
        idx = np.flatnonzero(mask)
        if len(idx) == 0:
            continue
        values[idx, k] = expected_incremental_value(
            risk[idx], conv[idx], value[idx], float(action.uplift_prior), float(action.unit_cost)
        )
    ids_sorted = np.array([a.id for a in actions], dtype=object)
    if last_contacted is not None and len(last_contacted) and n:
        pos, act = np.nonzero(~np.isnan(values))
        frame = pd.DataFrame({"_pos": pos, "user_id": users[pos], "action_id": ids_sorted[act], "_act": act})
        kept = _apply_frequency_cap(frame, scores, last_contacted, playbook)
        keep = np.zeros((n, k_actions), dtype=bool)
        keep[kept["_pos"].to_numpy(dtype=np.int64), kept["_act"].to_numpy(dtype=np.int64)] = True
        values[~keep] = np.nan
    # Per user, best value first, ties by action id (a stable sort of the id-ordered columns); NaN last.
    order = np.argsort(-values, axis=1, kind="stable")
    ranked = np.take_along_axis(values, order, axis=1)
    present = ~np.isnan(ranked)
    pos, slot = np.nonzero(present)  # row-major: by user, then rank
    if len(pos) == 0:
        return _empty_candidates()
    act = order[pos, slot]
    user_col = users[pos]
    action_hash = mix64(stable_hash64(list(ids_sorted)))
    pair_hash = mix64(stable_hash64(list(users))[pos] ^ action_hash[act])
    return pd.DataFrame(
        {
            "user_id": user_col,
            "action_id": ids_sorted[act],
            "rank": slot.astype(np.int64) + 1,
            "unit_cost": np.array([float(a.unit_cost) for a in actions])[act],
            "expected_incremental_value": ranked[pos, slot],
            "control": _control_from_hash(pair_hash, config.control_share),
            "selected": np.zeros(len(pos), dtype=bool),
        }
    )


def _empty_candidates() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": pd.Series(dtype=object),
            "action_id": pd.Series(dtype=object),
            "rank": pd.Series(dtype="int64"),
            "unit_cost": pd.Series(dtype=float),
            "expected_incremental_value": pd.Series(dtype=float),
            "control": pd.Series(dtype=bool),
            "selected": pd.Series(dtype=bool),
        }
    )


def _apply_frequency_cap(
    cands: pd.DataFrame, scores: pd.DataFrame, last_contacted: pd.DataFrame, playbook: Playbook
) -> pd.DataFrame:
    missing = {"user_id", "action_id", "last_contacted_at"} - set(last_contacted.columns)
    if missing:
        raise StrataError(f"contact history: missing column(s) {sorted(missing)}")
    history = last_contacted[["user_id", "action_id", "last_contacted_at"]].copy()
    history["last_contacted_at"] = pd.to_datetime(history["last_contacted_at"], utc=True)
    history = history.groupby(["user_id", "action_id"])["last_contacted_at"].max().reset_index()
    as_of = pd.to_datetime(scores["as_of"], utc=True).to_numpy()
    merged = cands.merge(history, on=["user_id", "action_id"], how="left")
    cap_days = merged["action_id"].map({a.id: a.frequency_cap_days for a in playbook.actions}).to_numpy(dtype=float)
    since = (as_of[merged["_pos"].to_numpy()] - merged["last_contacted_at"].to_numpy()) / np.timedelta64(1, "D")
    since = np.asarray(since, dtype=float)
    capped = ~np.isnan(since) & (since < cap_days)
    return merged.loc[~capped].drop(columns=["last_contacted_at"])


def select_without_budget(candidates: pd.DataFrame, max_actions_per_user: int) -> pd.DataFrame:
    """Mark each user's best ``max_actions_per_user`` actions with a positive value as selected."""
    out = candidates.copy()
    positive = out["expected_incremental_value"].to_numpy() > 0
    ranks_among_positive = out.assign(_p=positive).groupby("user_id", sort=False)["_p"].cumsum().to_numpy()
    out["selected"] = positive & (ranks_among_positive <= max_actions_per_user)
    return out


@dataclass(frozen=True)
class Allocation:
    """Result of a budgeted allocation."""

    candidates: pd.DataFrame
    budget: float
    spent: float
    treated: int
    control: int


#: Money is counted in millionths of the shop currency when allocating a budget.
MONEY_UNITS = 1_000_000


def money_units(amounts: np.ndarray) -> np.ndarray:
    """Amounts (shop currency) as whole millionths (int64), rounded to the nearest."""
    return np.rint(np.asarray(amounts, dtype=float) * MONEY_UNITS).astype(np.int64)


def allocate_budget(candidates: pd.DataFrame, budget: float, max_actions_per_user: int) -> Allocation:
    """Greedy allocation of (user, action) pairs by expected incremental value under a budget.

    Pairs with a positive value are visited best first (ties: user id, then action id). A pair is taken
    when its user has fewer than ``max_actions_per_user`` actions and its cost fits in what is left;
    a treated pair consumes its cost, a control pair consumes nothing (it only mirrors the selection).
    Pairs that do not fit are skipped and the walk goes on, so cheaper pairs can fill the remainder.

    Money is counted in whole millionths of the shop currency (:data:`MONEY_UNITS` per unit, integers),
    so no floating-point drift accumulates over millions of pairs: in those units the treated cost
    never exceeds ``budget``, and a pair is only skipped when it really does not fit.
    """
    if budget < 0 or np.isnan(budget):
        raise StrataError(f"--budget: must be a non-negative amount (got {budget})")
    out = candidates.copy()
    out["selected"] = False
    eiv = out["expected_incremental_value"].to_numpy(dtype=float)
    pos = np.flatnonzero(eiv > 0)
    if len(pos) == 0:
        return Allocation(out, float(budget), 0.0, 0, 0)
    sub = out.iloc[pos]
    order = np.lexsort(
        (sub["action_id"].to_numpy(dtype=object).astype(str), sub["user_id"].to_numpy(dtype=object).astype(str), -eiv[pos])
    )
    idx = pos[order]
    costs = out["unit_cost"].to_numpy(dtype=float)[idx]
    cost_units = money_units(costs)
    controls = out["control"].to_numpy(dtype=bool)[idx]
    user_codes = pd.factorize(out["user_id"].to_numpy(dtype=object)[idx])[0]
    taken_per_user = np.zeros(user_codes.max() + 1, dtype=np.int64)
    selected = np.zeros(len(idx), dtype=bool)
    remaining = int(money_units(np.array([budget]))[0])
    # Smallest cost among pairs not yet visited: stop as soon as nothing more can fit.
    suffix_min = np.minimum.accumulate(cost_units[::-1])[::-1].tolist()
    units = cost_units.tolist()
    users = user_codes.tolist()
    ctl = controls.tolist()
    for i in range(len(idx)):
        if suffix_min[i] > remaining:
            break
        u = users[i]
        if taken_per_user[u] >= max_actions_per_user:
            continue
        c = units[i]
        if c > remaining:
            continue
        selected[i] = True
        taken_per_user[u] += 1
        if not ctl[i]:
            remaining -= c
    sel_col = out["selected"].to_numpy(copy=True)
    sel_col[idx[selected]] = True
    out["selected"] = sel_col
    n_control = int((selected & controls).sum())
    spent = float(costs[selected & ~controls].sum())
    return Allocation(out, float(budget), spent, int(selected.sum()) - n_control, n_control)


def action_columns(
    user_ids: pd.Series, candidates: pd.DataFrame, config: InterventionConfig, *, arrow_text: bool = False
) -> pd.DataFrame:
    """The action output columns of each user (row-aligned with ``user_ids``).

    ``action_id``/``action_name``/``action_cost``/``expected_incremental_value``/``control`` describe
    the user's best selected action (None/NaN/False when none is selected); ``interventions`` is a JSON
    list of every eligible action, best first: ``{action_id, name, channel, cost,
    expected_incremental_value, selected, control}`` (value rounded to 4 decimals). With
    ``arrow_text`` that column holds the same texts as a pyarrow-backed ``string`` column (no Python
    strings are made: for writers that go straight to Arrow, such as the batch part files).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    playbook = Playbook.from_config(config)
    n = len(user_ids)
    position = pd.Series(np.arange(n), index=pd.Index(user_ids.to_numpy(dtype=object)))
    if not position.index.is_unique:
        raise StrataError("scoring: duplicate user_id values in the rows to score")
    action_id = np.full(n, None, dtype=object)
    action_name = np.full(n, None, dtype=object)
    action_cost = np.full(n, np.nan)
    eiv_out = np.full(n, np.nan)
    control_out = np.zeros(n, dtype=bool)
    interventions: Any = pa.array(["[]"] * n, type=pa.string()) if arrow_text else ["[]"] * n
    if len(candidates):
        pos_f = position.reindex(candidates["user_id"].to_numpy(dtype=object)).to_numpy(dtype=float)
        if np.isnan(pos_f).any():
            raise ValueError("candidates reference users that are not being scored")
        pos = pos_f.astype(np.int64)
        rank = candidates["rank"].to_numpy()
        # Candidates usually come sorted by user then rank (candidate_actions): skip the sort then.
        in_order = len(pos) < 2 or bool(
            np.all((pos[1:] > pos[:-1]) | ((pos[1:] == pos[:-1]) & (rank[1:] >= rank[:-1])))
        )
        order = np.arange(len(pos)) if in_order else np.lexsort((rank, pos))
        pos = pos[order]
        ids = candidates["action_id"].to_numpy(dtype=object)[order]
        sel = candidates["selected"].to_numpy(dtype=bool)[order]
        ctl = candidates["control"].to_numpy(dtype=bool)[order]
        cost = candidates["unit_cost"].to_numpy(dtype=float)[order]
        eiv = candidates["expected_incremental_value"].to_numpy(dtype=float)[order]
        # best selected action per user = the first selected row of the user in rank order
        sel_rows = np.flatnonzero(sel)
        if len(sel_rows):
            first = sel_rows[np.r_[True, pos[sel_rows][1:] != pos[sel_rows][:-1]]]
            p = pos[first]
            action_id[p] = ids[first]
            names = playbook.names
            action_name[p] = [names[a] for a in ids[first]]
            action_cost[p] = cost[first]
            eiv_out[p] = eiv[first]
            control_out[p] = ctl[first]
        known = [a.id for a in playbook.actions]
        prefix = pa.array(
            [
                '{"action_id": ' + json.dumps(a.id) + ', "name": ' + json.dumps(a.name, ensure_ascii=False)
                + ', "channel": ' + json.dumps(a.channel) + ', "cost": ' + format(float(a.unit_cost), ".10g")
                + ', "expected_incremental_value": '
                for a in playbook.actions
            ]
        )
        codes = pd.Categorical(ids, categories=known).codes
        if (codes < 0).any():
            raise ValueError("candidates reference actions that are not in the playbook")
        selected_text = pa.array([', "selected": false', ', "selected": true'])
        control_text = pa.array([', "control": false}', ', "control": true}'])
        items = pc.binary_join_element_wise(
            pc.take(prefix, pa.array(codes.astype(np.int32))),
            pc.cast(pc.round(pa.array(eiv), 4), pa.string()),
            pc.take(selected_text, pa.array(sel.view(np.int8))),
            pc.take(control_text, pa.array(ctl.view(np.int8))),
            "",
        )
        offsets = np.zeros(n + 1, dtype=np.int32)
        offsets[1:] = np.cumsum(np.bincount(pos, minlength=n))
        lists = pa.ListArray.from_arrays(pa.array(offsets), items)
        joined = pc.binary_join_element_wise(pa.scalar("["), pc.binary_join(lists, ", "), pa.scalar("]"), "")
        interventions = joined if arrow_text else joined.to_pylist()
    if arrow_text:
        interventions = pd.arrays.ArrowExtensionArray(interventions)
    return pd.DataFrame(
        {
            "action_id": action_id,
            "action_name": action_name,
            "action_cost": action_cost,
            "expected_incremental_value": eiv_out,
            "control": control_out,
            "interventions": interventions,
        },
        index=user_ids.index,
    )
