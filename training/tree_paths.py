"""Path-based (Saabas) per-feature contributions of a LightGBM model, from LightGBM's own leaf assignment.

For one tree, walking from the root to the leaf a row falls in, every split moves the *expected value*
of the tree from that of the node to that of the child taken; the difference is credited to the split
feature. A node's expected value is the mean of the leaf values below it weighted by how many training
rows reached each leaf (LightGBM's ``leaf_count``), the same weighting LightGBM's TreeSHAP uses for its
expected value. So per row and tree, the credits along the path add up to
``leaf value - expected value of the root``; summed over the trees, the contributions plus
``bias = sum of the roots' expected values`` add up to the raw score (log-odds for a binary model),
exactly up to float rounding, like TreeSHAP (and with the same ``bias``).

The trade-off against TreeSHAP (``scoring.reason_method = "shap"``): Saabas credits depend on the order
of the splits, so features split near the root get more of the credit than their Shapley value, and
a feature a row's path does not use gets exactly 0. TreeSHAP averages over feature orders (fair
credit) but costs O(trees x leaves x depth^2) per row; the path credits cost O(trees x depth) per row
on top of one ``pred_leaf`` pass, which also yields the raw score.

We never traverse trees here: ``Booster.predict(X, pred_leaf=True)`` (LightGBM, C++, multithreaded)
gives each row's leaf in every tree, handling missing values, ``default_left`` and categorical splits
exactly as prediction does. From ``Booster.dump_model()`` we only precompute, once per model, the
sparse credit table of every leaf (at most ``depth`` entries: one per distinct split feature on its
path) and the leaf values; a numba kernel then sums them per row. Scoring normally skips the
``pred_leaf`` pass: :func:`training.compiled_trees.raw_and_contributions` walks the trees itself
(LightGBM's decision rules, same leaves) and sums these same tables in the same walk;
:func:`contributions_from_leaves` serves the models the compiled trees do not cover.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit, prange

#: Below this many rows the kernel runs on one thread: the thread pool start-up costs more than it saves
#: (and single-row API calls stay off the pool).
PARALLEL_MIN_ROWS = 20_000


@dataclass(frozen=True)
class PathTables:
    """Per-leaf credit tables of every tree of a single-output LightGBM model.

    Leaves of all trees are numbered globally: leaf ``l`` of tree ``t`` is ``leaf_offset[t] + l``.
    """

    n_features: int
    """Number of model features (columns of the contribution matrix, without ``bias``)."""
    leaf_offset: np.ndarray
    """int64, ``(n_trees + 1,)``: first global leaf number of each tree."""
    leaf_value: np.ndarray
    """float64, ``(n_leaves,)``: output of each leaf (raw-score units)."""
    entry_start: np.ndarray
    """int64, ``(n_leaves + 1,)``: the credits of leaf ``g`` are entries ``entry_start[g]:entry_start[g+1]``."""
    entry_feature: np.ndarray
    """int32, ``(n_entries,)``: feature index of each credit."""
    entry_value: np.ndarray
    """float64, ``(n_entries,)``: credit (raw-score units) to that feature on the path to the leaf."""
    bias: float
    """Sum over trees of the root's expected value (raw-score units)."""

    @property
    def n_trees(self) -> int:
        return len(self.leaf_offset) - 1


def _is_leaf(node: dict[str, Any]) -> bool:
    return "split_feature" not in node


def _subtree(node: dict[str, Any], out: dict[int, tuple[float, float]]) -> tuple[float, float]:
    """(count-weighted sum of leaf values, count) under ``node``; fills ``out[id(node)]`` for every node."""
    if _is_leaf(node):
        count = float(node.get("leaf_count", 0))
        res = (float(node["leaf_value"]) * count, count)
    else:
        ls, lc = _subtree(node["left_child"], out)
        rs, rc = _subtree(node["right_child"], out)
        res = (ls + rs, lc + rc)
    out[id(node)] = res
    return res


def _leaves_unweighted(node: dict[str, Any]) -> list[float]:
    if _is_leaf(node):
        return [float(node["leaf_value"])]
    return _leaves_unweighted(node["left_child"]) + _leaves_unweighted(node["right_child"])


def _tree_tables(root: dict[str, Any], num_leaves: int) -> tuple[np.ndarray, list[dict[int, float]], float]:
    """Leaf values, per-leaf credits {feature: value} and the root's expected value of one tree."""
    values = np.zeros(max(num_leaves, 1))
    credits: list[dict[int, float]] = [{} for _ in range(max(num_leaves, 1))]
    if _is_leaf(root):
        values[0] = float(root["leaf_value"])
        return values, credits, float(values[0])
    sums: dict[int, tuple[float, float]] = {}
    _subtree(root, sums)

    def expected(node: dict[str, Any]) -> float:
        s, c = sums[id(node)]
        if c > 0:
            return s / c
        # No training counts (a hand-made or count-less model): plain mean of the leaves below.
        return float(np.mean(_leaves_unweighted(node)))

    def walk(node: dict[str, Any], ev: float, path: dict[int, float]) -> None:
        if _is_leaf(node):
            i = int(node.get("leaf_index", 0))
            values[i] = float(node["leaf_value"])
            credits[i] = path
            return
        f = int(node["split_feature"])
        for side in ("left_child", "right_child"):
            child = node[side]
            ev_child = expected(child)
            credit = dict(path)
            credit[f] = credit.get(f, 0.0) + (ev_child - ev)
            walk(child, ev_child, credit)

    ev_root = expected(root)
    walk(root, ev_root, {})
    return values, credits, ev_root


def path_tables(booster: Any) -> PathTables:
    """Precompute the per-leaf credit tables of a LightGBM ``Booster`` (single output: binary or regression).

    Raises
    ------
    ValueError
        For multi-output (multiclass) or linear-tree models, which this decomposition does not cover.
    """
    model = booster.dump_model()
    if int(model.get("num_tree_per_iteration", 1)) != 1:
        raise ValueError("path contributions need a single-output model (one tree per iteration)")
    if model.get("average_output"):
        raise ValueError("path contributions need a boosted model (random-forest models average their trees)")
    n_features = int(model["max_feature_idx"]) + 1
    offsets = [0]
    values: list[np.ndarray] = []
    starts = [0]
    feats: list[int] = []
    vals: list[float] = []
    bias = 0.0
    for info in model["tree_info"]:
        if info.get("is_linear"):
            raise ValueError("path contributions do not support linear trees (linear_tree=true)")
        leaf_values, credits, ev_root = _tree_tables(info["tree_structure"], int(info.get("num_leaves", 1)))
        bias += ev_root
        values.append(leaf_values)
        offsets.append(offsets[-1] + len(leaf_values))
        for credit in credits:
            for f in sorted(credit):
                feats.append(f)
                vals.append(credit[f])
            starts.append(len(feats))
    return PathTables(
        n_features=n_features,
        leaf_offset=np.asarray(offsets, dtype=np.int64),
        leaf_value=np.concatenate(values) if values else np.zeros(0),
        entry_start=np.asarray(starts, dtype=np.int64),
        entry_feature=np.asarray(feats, dtype=np.int32),
        entry_value=np.asarray(vals, dtype=np.float64),
        bias=float(bias),
    )


@njit(cache=True, nogil=True)
def _row(leaves, i, leaf_offset, leaf_value, entry_start, entry_feature, entry_value, bias, contrib, raw):  # noqa: ANN001, ANN202
    n_trees = leaves.shape[1]
    row = contrib[i]
    # Trees summed in LightGBM's order from 0.0, so the raw score matches Booster.predict bit for bit
    # in practice (and to float rounding in any case).
    score = 0.0
    for t in range(n_trees):
        g = leaf_offset[t] + leaves[i, t]
        score += leaf_value[g]
        for e in range(entry_start[g], entry_start[g + 1]):
            row[entry_feature[e]] += entry_value[e]
    row[row.shape[0] - 1] = bias
    raw[i] = score


@njit(cache=True, parallel=True, nogil=True)
def _kernel_parallel(leaves, leaf_offset, leaf_value, entry_start, entry_feature, entry_value, bias, contrib, raw):  # noqa: ANN001, ANN202
    for i in prange(leaves.shape[0]):
        _row(leaves, i, leaf_offset, leaf_value, entry_start, entry_feature, entry_value, bias, contrib, raw)


@njit(cache=True, nogil=True)
def _kernel_serial(leaves, leaf_offset, leaf_value, entry_start, entry_feature, entry_value, bias, contrib, raw):  # noqa: ANN001, ANN202
    for i in range(leaves.shape[0]):
        _row(leaves, i, leaf_offset, leaf_value, entry_start, entry_feature, entry_value, bias, contrib, raw)


def contributions_from_leaves(tables: PathTables, leaves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw scores and path contributions of rows given their leaf in every tree.

    Parameters
    ----------
    tables
        From :func:`path_tables` of the booster that produced ``leaves``.
    leaves
        ``Booster.predict(X, pred_leaf=True)``: int, ``(n_rows, n_trees)``.

    Returns
    -------
    raw : float64 ``(n_rows,)``
        Sum of the leaf values: the raw score (log-odds for a binary model).
    contrib : float64 ``(n_rows, n_features + 1)``
        Per-feature credits, last column the ``bias``; each row sums to ``raw`` up to float rounding.
    """
    leaves = np.ascontiguousarray(leaves, dtype=np.int32)
    if leaves.ndim != 2 or leaves.shape[1] != tables.n_trees:
        raise ValueError(f"leaf indices of shape {leaves.shape}; expected (n_rows, {tables.n_trees})")
    n = leaves.shape[0]
    contrib = np.zeros((n, tables.n_features + 1))
    raw = np.empty(n)
    if n and tables.n_trees:
        per_tree = np.diff(tables.leaf_offset)
        if leaves.min() < 0 or (leaves.max(axis=0) >= per_tree).any():
            raise ValueError("leaf indices out of range for this model (leaves from another booster?)")
    kernel = _kernel_parallel if n >= PARALLEL_MIN_ROWS else _kernel_serial
    kernel(leaves, tables.leaf_offset, tables.leaf_value, tables.entry_start, tables.entry_feature,
           tables.entry_value, tables.bias, contrib, raw)
    return raw, contrib

