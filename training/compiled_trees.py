"""LightGBM trees flattened into arrays and evaluated by numba kernels: LightGBM's predictions, faster.

LightGBM's ``Booster.predict`` on a dense NumPy or pandas matrix turns every row into a sparse
vector and back before walking the trees; on our models (a few hundred trees of up to 31 leaves, a
few dozen features) that conversion costs more than the walk. Here every tree of a booster is
flattened once (:func:`compile_booster`, from ``Booster.dump_model()``) into node arrays, and numba
kernels walk them on a C-contiguous float64 matrix:

- :func:`predict_raw`: the raw score (leaf values summed in tree order from 0.0, as LightGBM's
  ``GBDT::PredictRaw`` does, so results are bit-equal to ``Booster.predict(raw_score=True)`` in practice);
- :func:`predict`: the same passed through the objective's output transform (sigmoid, exp);
- :func:`predict_leaves`: the leaf of every row in every tree (``pred_leaf=True``);
- :func:`raw_and_contributions`: raw score plus the path (Saabas) contributions of
  :mod:`training.tree_paths` in one walk, using that module's per-leaf credit tables;
- :func:`predict_group` and :func:`group_raw_and_contributions`: several boosters that score the same
  rows (a :class:`ForestGroup`, :func:`compile_group`) in one pass: each row's columns are filled once
  for all of them, and each booster's output is still its own sum in its own tree order.

Speed (``benchmarks/bench_scoring.py``): rows are walked 16 at a time as interleaved lanes (single
rows: 8 trees at a time), each step one 16-byte node record, with unsigned slot numbers so that numba
emits no negative-index checks; on the bundle's boosters that is about 4x LightGBM's CPU time.

The decision at a node is LightGBM 4.x's ``Tree::NumericalDecision`` / ``Tree::CategoricalDecision``
(``include/LightGBM/tree.h``) applied to the value LightGBM's dense-row conversion hands it:

- a value with ``|x| <= kZeroThreshold`` (1e-35, a C++ float) is dropped from the sparse row, i.e. read
  as exactly 0.0; NaN is kept;
- numerical split: NaN becomes 0.0 unless the split's ``missing_type`` is ``NaN``; then a NaN
  (``missing_type`` NaN) or a zero (``missing_type`` Zero) goes the ``default_left`` way; otherwise
  ``x <= threshold`` goes left;
- categorical split: the value is cast to a C ``int`` (truncation toward zero; NaN, +-Inf and values
  out of the int range give INT_MIN on x86-64); a negative result goes right; else left iff the
  category is in the split's bitset.

Models the kernels do not cover (multiclass, random forests averaging their trees, linear trees,
objectives whose output transform is not reproduced here) raise :class:`UnsupportedModel`; callers
(:meth:`training.models._BoostedBase.compiled_trees`) then keep using LightGBM and log why, once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from numba import njit, prange

from training.tree_paths import PARALLEL_MIN_ROWS, PathTables

log = logging.getLogger(__name__)

#: LightGBM's ``kZeroThreshold`` (``const double kZeroThreshold = 1e-35f``: a float literal widened).
K_ZERO_THRESHOLD = float(np.float32(1e-35))

_CATEGORICAL = np.uint8(1)
_DEFAULT_LEFT = np.uint8(2)
_MISSING_SHIFT = 2  # bits 2-3: 0 None, 1 Zero, 2 NaN (as LightGBM's decision_type)
_MISSING_TYPES = {"None": 0, "Zero": 1, "NaN": 2}

#: Output transforms reproduced here: objective name (first word of LightGBM's objective string) ->
#: transform. ``regression``-family objectives with the ``sqrt`` option are not (fallback).
_IDENTITY = 0
_EXP = 1
_SIGMOID = 2
_TRANSFORMS = {
    "regression": _IDENTITY,
    "regression_l1": _IDENTITY,
    "huber": _IDENTITY,
    "fair": _IDENTITY,
    "quantile": _IDENTITY,
    "mape": _IDENTITY,
    "poisson": _EXP,
    "gamma": _EXP,
    "tweedie": _EXP,
    "binary": _SIGMOID,
    "cross_entropy": _SIGMOID,
}


#: Rows walked together (lanes) by :func:`_block`: their walks are independent, so the CPU overlaps them.
#: Measured on the bundle's boosters (200k rows, one thread, CPU-s for all six): 12 lanes 1.10,
#: 16 lanes 1.04-1.06, 20 lanes 1.03, 24 lanes 1.06; walking a tree over 2-4 blocks before the next
#: (tree-major, to reuse its nodes from cache) changed nothing measurable.
LANES = 16  # :func:`_block` is written out for 16 lanes: change both together


class UnsupportedModel(ValueError):
    """A LightGBM model the compiled evaluator does not cover (the reason is the message)."""


@dataclass(frozen=True)
class _Nodes:
    """Every tree as LightGBM holds it (one entry per split node); the intermediate step of compiling.

    A child reference ``c >= 0`` is a node; ``c < 0`` is the global leaf ``~c`` (leaf ``l`` of tree
    ``t`` is ``leaf_offset[t] + l``, the numbering of :class:`training.tree_paths.PathTables`).
    """

    n_features: int
    tree_root: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    flags: np.ndarray
    """bit 0 categorical, bit 1 default left, bits 2-3 missing type (0 None, 1 Zero, 2 NaN)."""
    cat_start: np.ndarray
    cat_count: np.ndarray
    cat_words: np.ndarray
    leaf_offset: np.ndarray
    leaf_value: np.ndarray
    leaf_depth_steps: np.ndarray
    """Per tree: the depth that holds 90% of the training rows (``leaf_count``), or the maximum depth."""


@dataclass(frozen=True)
class CompiledForest:
    """Every tree of a single-output LightGBM model, laid out for branch-free evaluation.

    **Row columns.** Before walking, each row is turned into ``len(col_feature)`` columns, so that
    every split is the single comparison ``column > threshold`` (right if true), exactly as LightGBM
    decides it: column ``c`` is feature ``col_feature[c]`` read per ``col_kind[c]``:

    - 0: NaN as 0.0 (``missing_type`` None: LightGBM reads NaN as 0);
    - 1 / 2: NaN as -inf / +inf (``missing_type`` NaN, NaN goes left / right);
    - 3 / 4: NaN and zero as -inf / +inf (``missing_type`` Zero, missing goes left / right);
    - 5: a categorical split's outcome, 1.0 (right) or 0.0 (left), its bitset at
      ``cat_words[col_cat_start[c]:][:col_cat_count[c]]`` (split threshold 0.5).

    In every kind, ``|x| <= kZeroThreshold`` reads as 0.0 and +-inf as +-DBL_MAX (so the NaN
    sentinels stay beyond every value; a +inf threshold is stored as DBL_MAX).

    **Slots.** Nodes and leaves of all trees are *slots*; the two children of a split slot are
    adjacent, so the next slot is ``(slot_packed >> 32) + (column > threshold)``, with the column
    times :data:`LANES` (its offset in the kernels' interleaved row buffer) in the low 32 bits of
    ``slot_packed``. A leaf slot points to itself with threshold +inf (it absorbs
    any number of further steps) and has ``slot_leaf >= 0``, its global leaf number (as in
    :class:`training.tree_paths.PathTables`: leaf ``l`` of tree ``t`` is ``leaf_offset[t] + l``).
    """

    n_features: int
    """Number of model features (columns of the input matrix)."""
    col_feature: np.ndarray
    """int32 ``(n_cols,)``: input feature of each row column."""
    col_kind: np.ndarray
    """int32 ``(n_cols,)``: how the column reads its feature (see the class docstring)."""
    col_cat_start: np.ndarray
    """int32 ``(n_cols,)``: first bitset word in ``cat_words`` (kind 5)."""
    col_cat_count: np.ndarray
    """int32 ``(n_cols,)``: bitset words (kind 5)."""
    cat_words: np.ndarray
    """uint32: category bitsets (bit ``c % 32`` of word ``c // 32`` set: category ``c`` goes left)."""
    tree_root: np.ndarray
    """int32 ``(n_trees,)``: root slot of each tree."""
    tree_steps: np.ndarray
    """int32 ``(n_trees,)``: branch-free steps taken by every row before the deeper paths are finished."""
    slot_packed: np.ndarray
    """int64 ``(n_slots,)``: first child slot << 32 | row column * LANES (a leaf: itself << 32)."""
    slot_threshold: np.ndarray
    """float64 ``(n_slots,)``: split threshold (+inf for a leaf)."""
    slot_leaf: np.ndarray
    """int32 ``(n_slots,)``: global leaf number of a leaf slot, -1 for a split."""
    leaf_offset: np.ndarray
    """int64 ``(n_trees + 1,)``: first global leaf of each tree."""
    leaf_value: np.ndarray
    """float64 ``(n_leaves,)``: output of each leaf (raw-score units)."""
    transform: int
    """Output transform of :func:`predict`: 0 identity, 1 exp, 2 sigmoid."""
    sigmoid: float
    """Slope of the sigmoid transform (LightGBM's ``sigmoid`` parameter of binary objectives)."""
    objective: str
    """LightGBM's objective string, as dumped."""

    @property
    def n_trees(self) -> int:
        return len(self.tree_root)

    @property
    def n_slots(self) -> int:
        return len(self.slot_leaf)

    @cached_property
    def group(self) -> ForestGroup:
        """This forest alone as a :class:`ForestGroup`: what the kernels walk (built once)."""
        return compile_group([self])


# ----------------------------------------------------------------------------- flattening


def _objective_transform(objective: str) -> tuple[int, float]:
    """(transform, sigmoid slope) of a LightGBM objective string such as ``"binary sigmoid:1"``."""
    words = objective.split()
    if not words:
        raise UnsupportedModel("the model has no objective (a custom objective?)")
    name = words[0]
    if name not in _TRANSFORMS:
        raise UnsupportedModel(f"objective {name!r}: its output transform is not reproduced here")
    if "sqrt" in words[1:]:
        raise UnsupportedModel(f"objective {objective!r}: the sqrt output transform is not reproduced here")
    sigmoid = 1.0
    for w in words[1:]:
        if w.startswith("sigmoid:"):
            sigmoid = float(w.split(":", 1)[1])
    return _TRANSFORMS[name], sigmoid


def _bitset(categories: list[int]) -> list[int]:
    """32-bit words of a bitset holding ``categories`` (as LightGBM's ``Common::ConstructBitset``)."""
    if not categories:
        return [0]
    words = [0] * (max(categories) // 32 + 1)
    for c in categories:
        words[c // 32] |= 1 << (c % 32)
    return words


def _exact_tree_arrays(model_text: str) -> list[dict[str, list[float]]]:
    """Per tree, the ``threshold`` and ``leaf_value`` arrays of LightGBM's model text, parsed exactly.

    ``dump_model()`` clamps every number to +-1e300 (``AvoidInf``), but a split threshold can be +inf
    (a split between the largest finite training value and missing): the model text keeps it, with
    17 significant digits for the finite ones. Indexed by a node's ``split_index`` and a leaf's
    ``leaf_index``.
    """
    trees: list[dict[str, list[float]]] = []
    current: dict[str, list[float]] | None = None
    for line in model_text.splitlines():
        if line.startswith("Tree="):
            current = {}
            trees.append(current)
        elif line == "end of trees":
            break
        elif current is not None and line.startswith(("threshold=", "leaf_value=")):
            key, _, values = line.partition("=")
            current[key] = [float(v) for v in values.split()]
    return trees


def _read_nodes(booster: Any) -> tuple[_Nodes, str]:
    """Every tree of a LightGBM ``Booster`` as node arrays, and the objective string.

    The structure comes from ``dump_model()``, the numbers (thresholds, leaf values) from the model
    text, where they are exact (see :func:`_exact_tree_arrays`). The result is laid out for the
    kernels by :func:`_layout`.

    Raises
    ------
    UnsupportedModel
        Multiclass models, random forests (``average_output``), linear trees, and objectives whose
        output transform is not reproduced here (the message says which).
    """
    model = booster.dump_model()
    exact = _exact_tree_arrays(booster.model_to_string())
    if int(model.get("num_tree_per_iteration", 1)) != 1 or int(model.get("num_class", 1)) != 1:
        raise UnsupportedModel("multi-output model (more than one tree per iteration)")
    if model.get("average_output"):
        raise UnsupportedModel("random-forest model (average_output): trees are averaged, not summed")
    objective = str(model.get("objective", ""))
    _objective_transform(objective)  # unsupported objectives fail before any work
    n_features = int(model["max_feature_idx"]) + 1
    roots: list[int] = []
    feature: list[int] = []
    threshold: list[float] = []
    left: list[int] = []
    right: list[int] = []
    flags: list[int] = []
    cat_start: list[int] = []
    cat_count: list[int] = []
    words: list[int] = []
    offsets = [0]
    leaf_values: list[float] = []
    steps: list[int] = []

    if len(exact) != len(model["tree_info"]):
        raise UnsupportedModel("the model text and its JSON dump hold different numbers of trees")
    for info, numbers in zip(model["tree_info"], exact, strict=True):
        if info.get("is_linear"):
            raise UnsupportedModel("linear trees (linear_tree=true): leaves hold linear models")
        n_leaves = max(int(info.get("num_leaves", 1)), 1)
        base = offsets[-1]
        values = [0.0] * n_leaves

        depths: list[tuple[int, int]] = []

        def visit(node: dict[str, Any], depth: int = 0, values: list[float] = values, base: int = base,
                  numbers: dict[str, list[float]] = numbers, depths: list[tuple[int, int]] = depths) -> int:
            """Append ``node`` (and below) to the arrays; its child reference."""
            if "split_feature" not in node:
                if "leaf_coeff" in node or "leaf_features" in node:
                    raise UnsupportedModel("linear trees (linear_tree=true): leaves hold linear models")
                i = int(node.get("leaf_index", 0))
                text_values = numbers.get("leaf_value", [])
                values[i] = text_values[i] if i < len(text_values) else float(node["leaf_value"])
                depths.append((depth, int(node.get("leaf_count", 0))))
                return ~(base + i)
            k = len(feature)
            feature.append(int(node["split_feature"]))
            left.append(0)
            right.append(0)
            flag = _MISSING_TYPES.get(str(node.get("missing_type", "None")))
            if flag is None:
                raise UnsupportedModel(f"missing_type {node.get('missing_type')!r}")
            flag <<= _MISSING_SHIFT
            if node.get("default_left"):
                flag |= int(_DEFAULT_LEFT)
            decision = node.get("decision_type", "<=")
            if decision == "==":
                flag |= int(_CATEGORICAL)
                cats = [int(c) for c in str(node["threshold"]).split("||") if c != ""]
                bits = _bitset(cats)
                cat_start.append(len(words))
                cat_count.append(len(bits))
                words.extend(bits)
                threshold.append(0.0)
            elif decision == "<=":
                cat_start.append(0)
                cat_count.append(0)
                text_thresholds = numbers.get("threshold", [])
                j = int(node.get("split_index", -1))
                threshold.append(text_thresholds[j] if 0 <= j < len(text_thresholds) else float(node["threshold"]))
            else:
                raise UnsupportedModel(f"decision_type {decision!r}")
            flags.append(flag)
            left[k] = visit(node["left_child"], depth + 1)
            right[k] = visit(node["right_child"], depth + 1)
            return k

        roots.append(visit(info["tree_structure"]))
        leaf_values.extend(values)
        offsets.append(base + n_leaves)
        steps.append(_typical_depth(depths))
    if len(feature) >= 2**31 - 1 or offsets[-1] >= 2**31 - 1:
        raise UnsupportedModel("model too large for 32-bit node numbers")
    if feature and max(feature) >= n_features:
        raise UnsupportedModel("a split feature beyond max_feature_idx")
    nodes = _Nodes(
        n_features=n_features,
        tree_root=np.asarray(roots, dtype=np.int64),
        feature=np.asarray(feature, dtype=np.int64),
        threshold=np.asarray(threshold, dtype=np.float64),
        left=np.asarray(left, dtype=np.int64),
        right=np.asarray(right, dtype=np.int64),
        flags=np.asarray(flags, dtype=np.int64),
        cat_start=np.asarray(cat_start, dtype=np.int64),
        cat_count=np.asarray(cat_count, dtype=np.int64),
        cat_words=np.asarray(words if words else [0], dtype=np.uint32),
        leaf_offset=np.asarray(offsets, dtype=np.int64),
        leaf_value=np.asarray(leaf_values, dtype=np.float64),
        leaf_depth_steps=np.asarray(steps, dtype=np.int32),
    )
    return nodes, objective


#: Share of the training rows (``leaf_count``) whose leaf every row walks to branch-free; rows on
#: deeper paths finish in a per-row loop. Measured on the bundle's six boosters (200k rows, one
#: thread, CPU-s): 0.7 1.09, 0.8 1.05, 0.9 0.93, 0.95 0.89-0.90, 0.97 0.89, 0.99 0.94, 1.0 (the
#: maximum depth: every row pays for the deepest leaf) 0.96.
_STEPS_SHARE = 0.95


def _typical_depth(depths: list[tuple[int, int]]) -> int:
    """Smallest depth holding :data:`_STEPS_SHARE` of the training rows; the maximum depth without counts."""
    if not depths:
        return 0
    total = sum(c for _, c in depths)
    if total <= 0:
        return max(d for d, _ in depths)
    seen = 0
    for d, c in sorted(depths):
        seen += c
        if seen >= _STEPS_SHARE * total:
            return d
    return max(d for d, _ in depths)


_DBL_MAX = float(np.finfo(np.float64).max)


def _column_kind(flags: int, default_left: bool) -> int:
    missing = flags >> _MISSING_SHIFT
    if missing == 0:
        return 0
    if missing == 2:
        return 1 if default_left else 2
    return 3 if default_left else 4


def _layout(nodes: _Nodes, objective: str) -> CompiledForest:
    """Row columns and slots (see :class:`CompiledForest`) of the trees in ``nodes``."""
    transform, sigmoid = _objective_transform(objective)
    columns: dict[tuple[int, int, tuple[int, ...]], int] = {}
    col_feature: list[int] = []
    col_kind: list[int] = []
    col_cat_start: list[int] = []
    col_cat_count: list[int] = []
    node_col = np.zeros(len(nodes.feature), dtype=np.int64)
    node_thr = np.zeros(len(nodes.feature))
    for k in range(len(nodes.feature)):
        flags = int(nodes.flags[k])
        f = int(nodes.feature[k])
        if flags & int(_CATEGORICAL):
            start, count = int(nodes.cat_start[k]), int(nodes.cat_count[k])
            key = (f, 5, tuple(int(w) for w in nodes.cat_words[start:start + count]))
            thr = 0.5
        else:
            thr = float(nodes.threshold[k])
            if np.isnan(thr) or thr == -np.inf or abs(thr) == _DBL_MAX:
                raise UnsupportedModel(f"split threshold {thr!r}: the NaN sentinels of the compiled trees need "
                                       "thresholds strictly inside (-DBL_MAX, DBL_MAX) or +inf")
            thr = _DBL_MAX if thr == np.inf else thr
            key = (f, _column_kind(flags, bool(flags & int(_DEFAULT_LEFT))), ())
            start = count = 0
        if key not in columns:
            columns[key] = len(col_feature)
            col_feature.append(f)
            col_kind.append(key[1])
            col_cat_start.append(start)
            col_cat_count.append(count)
        node_col[k] = columns[key]
        node_thr[k] = thr
    packed: list[int] = []
    threshold: list[float] = []
    slot_leaf: list[int] = []
    roots: list[int] = []

    def new_slot() -> int:
        packed.append(0)
        threshold.append(np.inf)
        slot_leaf.append(-1)
        return len(packed) - 1

    for t in range(len(nodes.tree_root)):
        root = new_slot()
        roots.append(root)
        stack = [(int(nodes.tree_root[t]), root)]
        while stack:
            ref, slot = stack.pop()
            if ref < 0:
                packed[slot] = slot << 32
                slot_leaf[slot] = ~ref
                continue
            first = new_slot()
            new_slot()
            packed[slot] = (first << 32) | (int(node_col[ref]) * LANES)
            threshold[slot] = float(node_thr[ref])
            stack.append((int(nodes.left[ref]), first))
            stack.append((int(nodes.right[ref]), first + 1))
    if len(packed) >= 2**31 - 1 or len(col_feature) * LANES >= 2**31 - 1:
        raise UnsupportedModel("model too large for 32-bit slot numbers")
    return CompiledForest(
        n_features=nodes.n_features,
        col_feature=np.asarray(col_feature, dtype=np.int32),
        col_kind=np.asarray(col_kind, dtype=np.int32),
        col_cat_start=np.asarray(col_cat_start, dtype=np.int32),
        col_cat_count=np.asarray(col_cat_count, dtype=np.int32),
        cat_words=nodes.cat_words,
        tree_root=np.asarray(roots, dtype=np.int32),
        tree_steps=nodes.leaf_depth_steps,
        slot_packed=np.asarray(packed, dtype=np.int64),
        slot_threshold=np.asarray(threshold, dtype=np.float64),
        slot_leaf=np.asarray(slot_leaf, dtype=np.int32),
        leaf_offset=nodes.leaf_offset,
        leaf_value=nodes.leaf_value,
        transform=transform,
        sigmoid=float(sigmoid),
        objective=objective,
    )


def compile_booster(booster: Any) -> CompiledForest:
    """Flatten every tree of a LightGBM ``Booster`` for the numba kernels (see :class:`CompiledForest`).

    Raises
    ------
    UnsupportedModel
        Multiclass models, random forests (``average_output``), linear trees, objectives whose
        output transform is not reproduced here, and -inf or +-DBL_MAX split thresholds (the message
        says which).
    """
    nodes, objective = _read_nodes(booster)
    forest = _layout(nodes, objective)
    _ = forest.group  # laid out for the kernels now, not at the first prediction
    return forest


def try_compile(booster: Any, what: str) -> CompiledForest | None:
    """:func:`compile_booster`, or None (LightGBM keeps predicting) with the reason logged once.

    ``what`` names the model in the log message (e.g. ``"churn model"``).
    """
    try:
        return compile_booster(booster)
    except UnsupportedModel as err:
        log.info("%s: compiled trees not used, LightGBM predicts (%s)", what, err)
        return None


# ----------------------------------------------------------------------------- groups of forests


@dataclass(frozen=True)
class ForestGroup:
    """Forests that score the same rows of the same matrix, laid out to be walked together.

    Each row's columns are filled once for the union of the forests' columns (a value model's four
    boosters share most of theirs), then every forest's trees are walked on them; each forest has its
    own sum, started at 0.0 and taken in its own tree order, so each output is that forest's alone,
    bit for bit. A single forest is a group of one (:attr:`CompiledForest.group`).

    **Nodes.** Slot ``k`` of the forests' slots (all forests in order) is the record
    ``nodes[2k], nodes[2k + 1]``: the split threshold (a leaf: its leaf value, as float64 bits; read
    through the float64 view :attr:`values`), then ``2 * first child << 32 | column * LANES``. A leaf
    points to itself and reads the last row column, a constant -inf, so it absorbs further branch-free
    steps (``-inf > value`` is never true) and the walk ends on the leaf's own record: one cache line
    per step, no separate leaf tables. Slot numbers are kept doubled (``s = 2k``) and unsigned in the
    kernels (see :func:`_block`).
    """

    n_features: int
    """Number of model features (columns of the input matrix)."""
    forest_tree: np.ndarray
    """int64 ``(n_forests + 1,)``: the trees of forest ``f`` are ``forest_tree[f]:forest_tree[f + 1]``."""
    col_feature: np.ndarray
    """int32 ``(n_cols,)``: input feature of each row column (as :class:`CompiledForest`; the -inf
    column the leaves read comes after these)."""
    col_kind: np.ndarray
    """int32 ``(n_cols,)``: how the column reads its feature (see :class:`CompiledForest`)."""
    col_cat_start: np.ndarray
    """int32 ``(n_cols,)``: first bitset word in ``cat_words`` (kind 5)."""
    col_cat_count: np.ndarray
    """int32 ``(n_cols,)``: bitset words (kind 5)."""
    cat_words: np.ndarray
    """uint32: category bitsets of the categorical columns."""
    tree_root: np.ndarray
    """uint64 ``(n_trees,)``: doubled root slot of each tree, trees of all forests in order."""
    tree_steps: np.ndarray
    """int32 ``(n_trees,)``: branch-free steps of each tree (see :attr:`CompiledForest.tree_steps`)."""
    nodes: np.ndarray
    """uint64 ``(2 * n_slots,)``: the slot records (see the class docstring)."""
    values: np.ndarray
    """float64 ``(2 * n_slots,)``: :attr:`nodes` viewed as float64 (thresholds and leaf values)."""
    slot_leaf: np.ndarray
    """int32 ``(n_slots,)``: leaf number of a leaf slot within its forest (path tables' numbering), -1 for a split."""
    leaf_offsets: tuple[np.ndarray, ...]
    """Per forest, :attr:`CompiledForest.leaf_offset` (to check path tables against forest 0)."""
    transforms: tuple[int, ...]
    """Per forest, the output transform of :func:`predict_group` (0 identity, 1 exp, 2 sigmoid)."""
    sigmoids: tuple[float, ...]
    """Per forest, the slope of its sigmoid transform."""

    @property
    def n_forests(self) -> int:
        return len(self.forest_tree) - 1


def compile_group(forests: Sequence[CompiledForest]) -> ForestGroup:
    """The forests laid out to be evaluated in one walk per row block (see :class:`ForestGroup`).

    All forests must read the same matrix (same number of features). The output of
    :func:`predict_group` has one row per forest, in this order.

    Raises
    ------
    ValueError
        No forests, or forests with different numbers of features.
    UnsupportedModel
        The group is too large for 32-bit slot numbers.
    """
    if not forests:
        raise ValueError("a forest group needs at least one forest")
    n_features = forests[0].n_features
    if any(f.n_features != n_features for f in forests):
        raise ValueError("the forests of a group must read the same matrix (same number of features)")
    columns: dict[tuple[int, int, tuple[int, ...]], int] = {}
    col_feature: list[int] = []
    col_kind: list[int] = []
    col_cat_start: list[int] = []
    col_cat_count: list[int] = []
    words: list[int] = []
    maps = []
    for forest in forests:
        to_union = np.zeros(len(forest.col_feature), dtype=np.uint64)
        for c in range(len(forest.col_feature)):
            kind = int(forest.col_kind[c])
            start, count = int(forest.col_cat_start[c]), int(forest.col_cat_count[c])
            bits = tuple(int(w) for w in forest.cat_words[start:start + count]) if kind == 5 else ()
            key = (int(forest.col_feature[c]), kind, bits)
            if key not in columns:
                columns[key] = len(col_feature)
                col_feature.append(key[0])
                col_kind.append(kind)
                col_cat_start.append(len(words) if kind == 5 else 0)
                col_cat_count.append(len(bits))
                words.extend(bits)
            to_union[c] = columns[key]
        maps.append(to_union)
    minus_inf_column = np.uint64(len(col_feature))  # the constant column every leaf reads
    n_slots = sum(f.n_slots for f in forests)
    if 2 * n_slots >= 2**32 or (len(col_feature) + 1) * LANES >= 2**32:
        raise UnsupportedModel("forest group too large for 32-bit slot numbers")
    nodes = np.empty(2 * n_slots, dtype=np.uint64)
    values = nodes.view(np.float64)
    roots, slot_leaf = [], []
    first = 0
    for forest, to_union in zip(forests, maps, strict=True):
        end = first + forest.n_slots
        leaf = forest.slot_leaf >= 0
        child = (forest.slot_packed >> 32).astype(np.uint64) + np.uint64(first)
        # A leaf's packed column is 0: it may have no column to map (a forest of single-leaf trees).
        column = to_union[(forest.slot_packed & 0xFFFFFFFF) // LANES] if len(to_union) else np.zeros(
            forest.n_slots, dtype=np.uint64)
        values[2 * first:2 * end:2] = np.where(leaf, forest.leaf_value[np.maximum(forest.slot_leaf, 0)],
                                               forest.slot_threshold)
        nodes[2 * first + 1:2 * end:2] = ((np.uint64(2) * child) << np.uint64(32)) | (
            np.where(leaf, minus_inf_column, column) * np.uint64(LANES))
        roots.append(np.uint64(2) * (forest.tree_root.astype(np.uint64) + np.uint64(first)))
        slot_leaf.append(forest.slot_leaf)
        first = end
    return ForestGroup(
        n_features=n_features,
        forest_tree=np.concatenate([[0], np.cumsum([f.n_trees for f in forests])]).astype(np.int64),
        col_feature=np.asarray(col_feature, dtype=np.int32),
        col_kind=np.asarray(col_kind, dtype=np.int32),
        col_cat_start=np.asarray(col_cat_start, dtype=np.int32),
        col_cat_count=np.asarray(col_cat_count, dtype=np.int32),
        cat_words=np.asarray(words if words else [0], dtype=np.uint32),
        tree_root=np.concatenate(roots).astype(np.uint64),
        tree_steps=np.concatenate([f.tree_steps for f in forests]).astype(np.int32),
        nodes=nodes,
        values=values,
        slot_leaf=np.concatenate(slot_leaf).astype(np.int32),
        leaf_offsets=tuple(f.leaf_offset for f in forests),
        transforms=tuple(f.transform for f in forests),
        sigmoids=tuple(f.sigmoid for f in forests),
    )



# ----------------------------------------------------------------------------- input matrix


def lightgbm_matrix(frame: Any, pandas_categorical: list[list[Any]] | None) -> np.ndarray:
    """The float64 C-contiguous matrix LightGBM predicts from, for a pandas model matrix.

    What ``lightgbm.basic._data_from_pandas`` makes of a frame at prediction time: numeric columns
    as float64; ``category`` columns (in column order) re-coded to the booster's training categories
    ``pandas_categorical`` (``Booster.pandas_categorical``) and replaced by their codes, a level not
    among them or a missing value becoming NaN. A 2-D NumPy array is returned as float64 C-contiguous.
    """
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        return np.ascontiguousarray(frame, dtype=np.float64)
    out = np.empty((len(frame), frame.shape[1]), dtype=np.float64)
    cats = None if pandas_categorical is None else list(pandas_categorical)
    k = 0
    for j, name in enumerate(frame.columns):
        col = frame[name]
        if isinstance(col.dtype, pd.CategoricalDtype):
            if cats is not None and k >= len(cats):
                raise ValueError("train and valid dataset categorical_feature do not match.")
            values = col.array
            # Without training categories (a booster not trained on pandas) LightGBM takes the codes as they are.
            if cats is not None and list(col.cat.categories) != list(cats[k]):
                values = col.cat.set_categories(cats[k]).array
            codes = np.asarray(values.codes, dtype=np.float64)
            codes[codes < 0] = np.nan
            out[:, j] = codes
            k += 1
        else:
            out[:, j] = col.to_numpy(dtype=np.float64, na_value=np.nan)
    if cats is not None and k != len(cats):
        raise ValueError("train and valid dataset categorical_feature do not match.")
    return out


def _check_input(n_features: int, X: np.ndarray, rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    X = np.ascontiguousarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != n_features:
        raise ValueError(f"input of shape {X.shape}; the model has {n_features} features")
    if rows is None:
        rows = np.arange(X.shape[0], dtype=np.int64)
    else:
        rows = np.asarray(rows)
        if rows.dtype == np.bool_:
            rows = np.flatnonzero(rows)
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= X.shape[0]):
            raise ValueError("row numbers out of range of the input matrix")
    return X, rows



# ----------------------------------------------------------------------------- kernels

_ONE = np.uint64(1)
_S32 = np.uint64(32)
_M32 = np.uint64(0xFFFFFFFF)


@njit(cache=True, nogil=True, inline="always")
def _fill_row(x, out, lane, cols, kinds, cat_start, cat_count, cat_words):  # noqa: ANN001, ANN202
    """The row columns of input row ``x`` (see :class:`CompiledForest`) into ``out[c * LANES + lane]``."""
    for c in range(cols.shape[0]):
        v = x[cols[c]]
        k = kinds[c]
        if k == 5:
            # CategoricalDecision: static_cast<int>(v); NaN, +-Inf and values out of the int range give
            # INT_MIN on x86-64, so they go right like every negative category.
            right = 1.0
            if not (v != v or v >= 2147483648.0 or v <= -2147483649.0):
                code = int(v)
                if code >= 0:
                    w = code >> 5
                    if w < cat_count[c] and (cat_words[cat_start[c] + w] >> np.uint32(code & 31)) & np.uint32(1):
                        right = 0.0
            out[c * LANES + lane] = right
            continue
        if v != v:
            if k == 0:
                v = 0.0
            elif k == 1 or k == 3:
                v = -np.inf
            else:
                v = np.inf
        elif -1.0000000180025095e-35 <= v <= 1.0000000180025095e-35:
            # Dropped from LightGBM's sparse row: exactly 0, which is "missing" for Zero splits.
            v = 0.0
            if k == 3:
                v = -np.inf
            elif k == 4:
                v = np.inf
        elif v == np.inf:
            v = 1.7976931348623157e308
        elif v == -np.inf:
            v = -1.7976931348623157e308
        out[c * LANES + lane] = v


@njit(cache=True, nogil=True, inline="always")
def _credit(row, leaf, entry_start, entry_feature, entry_value):  # noqa: ANN001, ANN202
    for e in range(entry_start[leaf], entry_start[leaf + 1]):
        row[entry_feature[e]] += entry_value[e]


@njit(cache=True, nogil=True)
def _block(X, rows, lo, buf, acc, cols, kinds, cat_start, cat_count, cat_words, forest_tree, tree_root, tree_steps, nodes, values, slot_leaf,  # noqa: ANN001, ANN202
           with_contrib, entry_start, entry_feature, entry_value, contrib, out):
    """Every forest of the group on rows ``rows[lo:lo + 16]``, walked as 16 interleaved lanes (one per row).

    ``buf`` holds the lanes' row columns interleaved (column ``c`` of lane ``r`` at ``c * LANES + r``); a slot's
    column offset plus the lane number addresses a value. Slot numbers are even (doubled: ``nodes[s]`` is the
    threshold or leaf value, ``nodes[s + 1]`` the packed child and column) and unsigned, so that numba emits
    no negative-index wraparound in the walk (measured: a third less time than with signed numbers).
    """
    for r in range(16):
        _fill_row(X[rows[lo + r]], buf, r, cols, kinds, cat_start, cat_count, cat_words)
    for f in range(forest_tree.shape[0] - 1):
        for r in range(16):
            acc[r] = 0.0
        credit = with_contrib and f == 0
        for t in range(forest_tree[f], forest_tree[f + 1]):
            root = tree_root[t]
            s0 = root
            s1 = root
            s2 = root
            s3 = root
            s4 = root
            s5 = root
            s6 = root
            s7 = root
            s8 = root
            s9 = root
            s10 = root
            s11 = root
            s12 = root
            s13 = root
            s14 = root
            s15 = root
            # Fixed steps for every lane, branch-free (leaves loop on themselves), then the few deeper paths.
            for _ in range(tree_steps[t]):
                p0 = nodes[s0 + _ONE]
                s0 = (p0 >> _S32) + (np.uint64(buf[(p0 & _M32) + np.uint64(0)] > values[s0]) << _ONE)
                p1 = nodes[s1 + _ONE]
                s1 = (p1 >> _S32) + (np.uint64(buf[(p1 & _M32) + np.uint64(1)] > values[s1]) << _ONE)
                p2 = nodes[s2 + _ONE]
                s2 = (p2 >> _S32) + (np.uint64(buf[(p2 & _M32) + np.uint64(2)] > values[s2]) << _ONE)
                p3 = nodes[s3 + _ONE]
                s3 = (p3 >> _S32) + (np.uint64(buf[(p3 & _M32) + np.uint64(3)] > values[s3]) << _ONE)
                p4 = nodes[s4 + _ONE]
                s4 = (p4 >> _S32) + (np.uint64(buf[(p4 & _M32) + np.uint64(4)] > values[s4]) << _ONE)
                p5 = nodes[s5 + _ONE]
                s5 = (p5 >> _S32) + (np.uint64(buf[(p5 & _M32) + np.uint64(5)] > values[s5]) << _ONE)
                p6 = nodes[s6 + _ONE]
                s6 = (p6 >> _S32) + (np.uint64(buf[(p6 & _M32) + np.uint64(6)] > values[s6]) << _ONE)
                p7 = nodes[s7 + _ONE]
                s7 = (p7 >> _S32) + (np.uint64(buf[(p7 & _M32) + np.uint64(7)] > values[s7]) << _ONE)
                p8 = nodes[s8 + _ONE]
                s8 = (p8 >> _S32) + (np.uint64(buf[(p8 & _M32) + np.uint64(8)] > values[s8]) << _ONE)
                p9 = nodes[s9 + _ONE]
                s9 = (p9 >> _S32) + (np.uint64(buf[(p9 & _M32) + np.uint64(9)] > values[s9]) << _ONE)
                p10 = nodes[s10 + _ONE]
                s10 = (p10 >> _S32) + (np.uint64(buf[(p10 & _M32) + np.uint64(10)] > values[s10]) << _ONE)
                p11 = nodes[s11 + _ONE]
                s11 = (p11 >> _S32) + (np.uint64(buf[(p11 & _M32) + np.uint64(11)] > values[s11]) << _ONE)
                p12 = nodes[s12 + _ONE]
                s12 = (p12 >> _S32) + (np.uint64(buf[(p12 & _M32) + np.uint64(12)] > values[s12]) << _ONE)
                p13 = nodes[s13 + _ONE]
                s13 = (p13 >> _S32) + (np.uint64(buf[(p13 & _M32) + np.uint64(13)] > values[s13]) << _ONE)
                p14 = nodes[s14 + _ONE]
                s14 = (p14 >> _S32) + (np.uint64(buf[(p14 & _M32) + np.uint64(14)] > values[s14]) << _ONE)
                p15 = nodes[s15 + _ONE]
                s15 = (p15 >> _S32) + (np.uint64(buf[(p15 & _M32) + np.uint64(15)] > values[s15]) << _ONE)
            p0 = nodes[s0 + _ONE]
            while (p0 >> _S32) != s0:
                s0 = (p0 >> _S32) + (np.uint64(buf[(p0 & _M32) + np.uint64(0)] > values[s0]) << _ONE)
                p0 = nodes[s0 + _ONE]
            acc[0] += values[s0]
            p1 = nodes[s1 + _ONE]
            while (p1 >> _S32) != s1:
                s1 = (p1 >> _S32) + (np.uint64(buf[(p1 & _M32) + np.uint64(1)] > values[s1]) << _ONE)
                p1 = nodes[s1 + _ONE]
            acc[1] += values[s1]
            p2 = nodes[s2 + _ONE]
            while (p2 >> _S32) != s2:
                s2 = (p2 >> _S32) + (np.uint64(buf[(p2 & _M32) + np.uint64(2)] > values[s2]) << _ONE)
                p2 = nodes[s2 + _ONE]
            acc[2] += values[s2]
            p3 = nodes[s3 + _ONE]
            while (p3 >> _S32) != s3:
                s3 = (p3 >> _S32) + (np.uint64(buf[(p3 & _M32) + np.uint64(3)] > values[s3]) << _ONE)
                p3 = nodes[s3 + _ONE]
            acc[3] += values[s3]
            p4 = nodes[s4 + _ONE]
            while (p4 >> _S32) != s4:
                s4 = (p4 >> _S32) + (np.uint64(buf[(p4 & _M32) + np.uint64(4)] > values[s4]) << _ONE)
                p4 = nodes[s4 + _ONE]
            acc[4] += values[s4]
            p5 = nodes[s5 + _ONE]
            while (p5 >> _S32) != s5:
                s5 = (p5 >> _S32) + (np.uint64(buf[(p5 & _M32) + np.uint64(5)] > values[s5]) << _ONE)
                p5 = nodes[s5 + _ONE]
            acc[5] += values[s5]
            p6 = nodes[s6 + _ONE]
            while (p6 >> _S32) != s6:
                s6 = (p6 >> _S32) + (np.uint64(buf[(p6 & _M32) + np.uint64(6)] > values[s6]) << _ONE)
                p6 = nodes[s6 + _ONE]
            acc[6] += values[s6]
            p7 = nodes[s7 + _ONE]
            while (p7 >> _S32) != s7:
                s7 = (p7 >> _S32) + (np.uint64(buf[(p7 & _M32) + np.uint64(7)] > values[s7]) << _ONE)
                p7 = nodes[s7 + _ONE]
            acc[7] += values[s7]
            p8 = nodes[s8 + _ONE]
            while (p8 >> _S32) != s8:
                s8 = (p8 >> _S32) + (np.uint64(buf[(p8 & _M32) + np.uint64(8)] > values[s8]) << _ONE)
                p8 = nodes[s8 + _ONE]
            acc[8] += values[s8]
            p9 = nodes[s9 + _ONE]
            while (p9 >> _S32) != s9:
                s9 = (p9 >> _S32) + (np.uint64(buf[(p9 & _M32) + np.uint64(9)] > values[s9]) << _ONE)
                p9 = nodes[s9 + _ONE]
            acc[9] += values[s9]
            p10 = nodes[s10 + _ONE]
            while (p10 >> _S32) != s10:
                s10 = (p10 >> _S32) + (np.uint64(buf[(p10 & _M32) + np.uint64(10)] > values[s10]) << _ONE)
                p10 = nodes[s10 + _ONE]
            acc[10] += values[s10]
            p11 = nodes[s11 + _ONE]
            while (p11 >> _S32) != s11:
                s11 = (p11 >> _S32) + (np.uint64(buf[(p11 & _M32) + np.uint64(11)] > values[s11]) << _ONE)
                p11 = nodes[s11 + _ONE]
            acc[11] += values[s11]
            p12 = nodes[s12 + _ONE]
            while (p12 >> _S32) != s12:
                s12 = (p12 >> _S32) + (np.uint64(buf[(p12 & _M32) + np.uint64(12)] > values[s12]) << _ONE)
                p12 = nodes[s12 + _ONE]
            acc[12] += values[s12]
            p13 = nodes[s13 + _ONE]
            while (p13 >> _S32) != s13:
                s13 = (p13 >> _S32) + (np.uint64(buf[(p13 & _M32) + np.uint64(13)] > values[s13]) << _ONE)
                p13 = nodes[s13 + _ONE]
            acc[13] += values[s13]
            p14 = nodes[s14 + _ONE]
            while (p14 >> _S32) != s14:
                s14 = (p14 >> _S32) + (np.uint64(buf[(p14 & _M32) + np.uint64(14)] > values[s14]) << _ONE)
                p14 = nodes[s14 + _ONE]
            acc[14] += values[s14]
            p15 = nodes[s15 + _ONE]
            while (p15 >> _S32) != s15:
                s15 = (p15 >> _S32) + (np.uint64(buf[(p15 & _M32) + np.uint64(15)] > values[s15]) << _ONE)
                p15 = nodes[s15 + _ONE]
            acc[15] += values[s15]
            if credit:
                _credit(contrib[lo + 0], slot_leaf[s0 >> _ONE], entry_start, entry_feature, entry_value)
                _credit(contrib[lo + 1], slot_leaf[s1 >> _ONE], entry_start, entry_feature, entry_value)
                _credit(contrib[lo + 2], slot_leaf[s2 >> _ONE], entry_start, entry_feature, entry_value)
                _credit(contrib[lo + 3], slot_leaf[s3 >> _ONE], entry_start, entry_feature, entry_value)
                _credit(contrib[lo + 4], slot_leaf[s4 >> _ONE], entry_start, entry_feature, entry_value)
                _credit(contrib[lo + 5], slot_leaf[s5 >> _ONE], entry_start, entry_feature, entry_value)
                _credit(contrib[lo + 6], slot_leaf[s6 >> _ONE], entry_start, entry_feature, entry_value)
                _credit(contrib[lo + 7], slot_leaf[s7 >> _ONE], entry_start, entry_feature, entry_value)
                _credit(contrib[lo + 8], slot_leaf[s8 >> _ONE], entry_start, entry_feature, entry_value)
                _credit(contrib[lo + 9], slot_leaf[s9 >> _ONE], entry_start, entry_feature, entry_value)
                _credit(contrib[lo + 10], slot_leaf[s10 >> _ONE], entry_start, entry_feature, entry_value)
                _credit(contrib[lo + 11], slot_leaf[s11 >> _ONE], entry_start, entry_feature, entry_value)
                _credit(contrib[lo + 12], slot_leaf[s12 >> _ONE], entry_start, entry_feature, entry_value)
                _credit(contrib[lo + 13], slot_leaf[s13 >> _ONE], entry_start, entry_feature, entry_value)
                _credit(contrib[lo + 14], slot_leaf[s14 >> _ONE], entry_start, entry_feature, entry_value)
                _credit(contrib[lo + 15], slot_leaf[s15 >> _ONE], entry_start, entry_feature, entry_value)
        for r in range(16):
            out[f, lo + r] = acc[r]


@njit(cache=True, nogil=True)
def _row(X, rows, i, buf, cols, kinds, cat_start, cat_count, cat_words, forest_tree, tree_root, tree_steps, nodes, values, slot_leaf,  # noqa: ANN001, ANN202
           with_contrib, entry_start, entry_feature, entry_value, contrib, out):
    """Row ``rows[i]`` alone (single rows, and the rows after the last block): 8 trees walked as interleaved
    lanes, their leaf values then added in tree order (the same sums as :func:`_block`)."""
    _fill_row(X[rows[i]], buf, 0, cols, kinds, cat_start, cat_count, cat_words)
    for f in range(forest_tree.shape[0] - 1):
        credit = with_contrib and f == 0
        a = 0.0
        t = forest_tree[f]
        end = forest_tree[f + 1]
        while t + 8 <= end:
            s0 = tree_root[t + 0]
            s1 = tree_root[t + 1]
            s2 = tree_root[t + 2]
            s3 = tree_root[t + 3]
            s4 = tree_root[t + 4]
            s5 = tree_root[t + 5]
            s6 = tree_root[t + 6]
            s7 = tree_root[t + 7]
            steps = tree_steps[t]
            for k in range(1, 8):
                steps = min(steps, tree_steps[t + k])
            for _ in range(steps):
                p0 = nodes[s0 + _ONE]
                s0 = (p0 >> _S32) + (np.uint64(buf[p0 & _M32] > values[s0]) << _ONE)
                p1 = nodes[s1 + _ONE]
                s1 = (p1 >> _S32) + (np.uint64(buf[p1 & _M32] > values[s1]) << _ONE)
                p2 = nodes[s2 + _ONE]
                s2 = (p2 >> _S32) + (np.uint64(buf[p2 & _M32] > values[s2]) << _ONE)
                p3 = nodes[s3 + _ONE]
                s3 = (p3 >> _S32) + (np.uint64(buf[p3 & _M32] > values[s3]) << _ONE)
                p4 = nodes[s4 + _ONE]
                s4 = (p4 >> _S32) + (np.uint64(buf[p4 & _M32] > values[s4]) << _ONE)
                p5 = nodes[s5 + _ONE]
                s5 = (p5 >> _S32) + (np.uint64(buf[p5 & _M32] > values[s5]) << _ONE)
                p6 = nodes[s6 + _ONE]
                s6 = (p6 >> _S32) + (np.uint64(buf[p6 & _M32] > values[s6]) << _ONE)
                p7 = nodes[s7 + _ONE]
                s7 = (p7 >> _S32) + (np.uint64(buf[p7 & _M32] > values[s7]) << _ONE)
            p0 = nodes[s0 + _ONE]
            while (p0 >> _S32) != s0:
                s0 = (p0 >> _S32) + (np.uint64(buf[p0 & _M32] > values[s0]) << _ONE)
                p0 = nodes[s0 + _ONE]
            p1 = nodes[s1 + _ONE]
            while (p1 >> _S32) != s1:
                s1 = (p1 >> _S32) + (np.uint64(buf[p1 & _M32] > values[s1]) << _ONE)
                p1 = nodes[s1 + _ONE]
            p2 = nodes[s2 + _ONE]
            while (p2 >> _S32) != s2:
                s2 = (p2 >> _S32) + (np.uint64(buf[p2 & _M32] > values[s2]) << _ONE)
                p2 = nodes[s2 + _ONE]
            p3 = nodes[s3 + _ONE]
            while (p3 >> _S32) != s3:
                s3 = (p3 >> _S32) + (np.uint64(buf[p3 & _M32] > values[s3]) << _ONE)
                p3 = nodes[s3 + _ONE]
            p4 = nodes[s4 + _ONE]
            while (p4 >> _S32) != s4:
                s4 = (p4 >> _S32) + (np.uint64(buf[p4 & _M32] > values[s4]) << _ONE)
                p4 = nodes[s4 + _ONE]
            p5 = nodes[s5 + _ONE]
            while (p5 >> _S32) != s5:
                s5 = (p5 >> _S32) + (np.uint64(buf[p5 & _M32] > values[s5]) << _ONE)
                p5 = nodes[s5 + _ONE]
            p6 = nodes[s6 + _ONE]
            while (p6 >> _S32) != s6:
                s6 = (p6 >> _S32) + (np.uint64(buf[p6 & _M32] > values[s6]) << _ONE)
                p6 = nodes[s6 + _ONE]
            p7 = nodes[s7 + _ONE]
            while (p7 >> _S32) != s7:
                s7 = (p7 >> _S32) + (np.uint64(buf[p7 & _M32] > values[s7]) << _ONE)
                p7 = nodes[s7 + _ONE]
            a += values[s0]
            a += values[s1]
            a += values[s2]
            a += values[s3]
            a += values[s4]
            a += values[s5]
            a += values[s6]
            a += values[s7]
            if credit:
                _credit(contrib[i], slot_leaf[s0 >> _ONE], entry_start, entry_feature, entry_value)
                _credit(contrib[i], slot_leaf[s1 >> _ONE], entry_start, entry_feature, entry_value)
                _credit(contrib[i], slot_leaf[s2 >> _ONE], entry_start, entry_feature, entry_value)
                _credit(contrib[i], slot_leaf[s3 >> _ONE], entry_start, entry_feature, entry_value)
                _credit(contrib[i], slot_leaf[s4 >> _ONE], entry_start, entry_feature, entry_value)
                _credit(contrib[i], slot_leaf[s5 >> _ONE], entry_start, entry_feature, entry_value)
                _credit(contrib[i], slot_leaf[s6 >> _ONE], entry_start, entry_feature, entry_value)
                _credit(contrib[i], slot_leaf[s7 >> _ONE], entry_start, entry_feature, entry_value)
            t += 8
        while t < end:
            s = tree_root[t]
            p = nodes[s + _ONE]
            while (p >> _S32) != s:
                s = (p >> _S32) + (np.uint64(buf[p & _M32] > values[s]) << _ONE)
                p = nodes[s + _ONE]
            a += values[s]
            if credit:
                _credit(contrib[i], slot_leaf[s >> _ONE], entry_start, entry_feature, entry_value)
            t += 1
        out[f, i] = a


@njit(cache=True, nogil=True)
def _walk_serial(X, rows, cols, kinds, cat_start, cat_count, cat_words, forest_tree, tree_root, tree_steps, nodes,  # noqa: ANN001, ANN202
                 values, slot_leaf, with_contrib, entry_start, entry_feature, entry_value, contrib, out):
    n = rows.shape[0]
    buf = np.full(LANES * (cols.shape[0] + 1), -np.inf)  # the last column stays -inf (read by the leaves)
    acc = np.empty(LANES)
    blocks = n // LANES
    for b in range(blocks):
        _block(X, rows, b * LANES, buf, acc, cols, kinds, cat_start, cat_count, cat_words, forest_tree, tree_root,
               tree_steps, nodes, values, slot_leaf, with_contrib, entry_start, entry_feature, entry_value, contrib, out)
    for i in range(blocks * LANES, n):
        _row(X, rows, i, buf, cols, kinds, cat_start, cat_count, cat_words, forest_tree, tree_root, tree_steps, nodes,
             values, slot_leaf, with_contrib, entry_start, entry_feature, entry_value, contrib, out)


@njit(cache=True, nogil=True, parallel=True)
def _walk_parallel(X, rows, cols, kinds, cat_start, cat_count, cat_words, forest_tree, tree_root, tree_steps, nodes,  # noqa: ANN001, ANN202
                   values, slot_leaf, with_contrib, entry_start, entry_feature, entry_value, contrib, out):
    n = rows.shape[0]
    blocks = n // LANES
    # Runs of blocks per task: one row buffer per run, not per block.
    runs = min(blocks, 256)
    for c in prange(runs):
        buf = np.full(LANES * (cols.shape[0] + 1), -np.inf)
        acc = np.empty(LANES)
        for b in range(c * blocks // runs, (c + 1) * blocks // runs):
            _block(X, rows, b * LANES, buf, acc, cols, kinds, cat_start, cat_count, cat_words, forest_tree, tree_root,
                   tree_steps, nodes, values, slot_leaf, with_contrib, entry_start, entry_feature, entry_value, contrib,
                   out)
    tail = np.full(LANES * (cols.shape[0] + 1), -np.inf)
    for i in range(blocks * LANES, n):
        _row(X, rows, i, tail, cols, kinds, cat_start, cat_count, cat_words, forest_tree, tree_root, tree_steps, nodes,
             values, slot_leaf, with_contrib, entry_start, entry_feature, entry_value, contrib, out)


@njit(cache=True, nogil=True)
def _transform(raw, transform, sigmoid):  # noqa: ANN001, ANN202
    """LightGBM's ``ConvertOutput`` in place: 1 exp (poisson, gamma, tweedie), 2 sigmoid (binary)."""
    for i in range(raw.shape[0]):
        if transform == 1:
            raw[i] = math.exp(raw[i])
        elif transform == 2:
            raw[i] = 1.0 / (1.0 + math.exp(-sigmoid * raw[i]))


@njit(cache=True, nogil=True)
def _leaves(X, rows, cols, kinds, cat_start, cat_count, cat_words, tree_root, packed, threshold, slot_leaf,  # noqa: ANN001, ANN202
            leaf_offset, out):
    buf = np.empty(LANES * cols.shape[0])
    for i in range(rows.shape[0]):
        _fill_row(X[rows[i]], buf, 0, cols, kinds, cat_start, cat_count, cat_words)
        for t in range(tree_root.shape[0]):
            s = np.int64(tree_root[t])
            while slot_leaf[s] < 0:
                p = packed[s]
                s = (p >> 32) + np.int64(buf[p & 0xFFFFFFFF] > threshold[s])
            out[i, t] = slot_leaf[s] - leaf_offset[t]


_NO_ENTRIES = (np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0), np.zeros((0, 1)))


def _run(group: ForestGroup, X: np.ndarray, rows: np.ndarray, tables: PathTables | None) -> tuple[np.ndarray, np.ndarray]:
    """Raw scores ``(n_forests, len(rows))`` and, with ``tables`` (of forest 0), forest 0's path credits."""
    n = len(rows)
    out = np.empty((group.n_forests, n))
    if tables is None:
        starts, features, values, contrib = _NO_ENTRIES
    else:
        contrib = np.zeros((n, group.n_features + 1))
        contrib[:, -1] = tables.bias
        starts, features, values = tables.entry_start, tables.entry_feature, tables.entry_value
    kernel = _walk_parallel if n >= PARALLEL_MIN_ROWS else _walk_serial
    kernel(X, rows, group.col_feature, group.col_kind, group.col_cat_start, group.col_cat_count, group.cat_words,
           group.forest_tree, group.tree_root, group.tree_steps, group.nodes, group.values, group.slot_leaf,
           tables is not None, starts, features, values, contrib, out)
    return out, contrib


def _transformed(group: ForestGroup, out: np.ndarray) -> np.ndarray:
    for f in range(group.n_forests):
        if group.transforms[f]:
            _transform(out[f], group.transforms[f], group.sigmoids[f])
    return out


# ----------------------------------------------------------------------------- public evaluation


def predict_group(group: ForestGroup, X: np.ndarray, rows: np.ndarray | None = None,
                  raw_score: bool = False) -> np.ndarray:
    """Every forest of ``group`` on the same rows, in one walk per block of rows.

    ``X``: float64 ``(n, n_features)`` (see :func:`lightgbm_matrix`); ``rows``: row numbers or a
    boolean mask of ``X`` to score (default: all), in that order. Returns float64
    ``(n_forests, len(rows))``: row ``f`` is forest ``f``'s ``Booster.predict(X[rows])`` (its objective's
    transform applied), or with ``raw_score`` its ``Booster.predict(X[rows], raw_score=True)``.
    """
    X, rows = _check_input(group.n_features, X, rows)
    out, _ = _run(group, X, rows, None)
    return out if raw_score else _transformed(group, out)


def group_raw_and_contributions(
    group: ForestGroup, tables: PathTables, X: np.ndarray, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Raw scores of every forest, plus the path (Saabas) contributions of forest 0, in one walk.

    ``tables``: :func:`training.tree_paths.path_tables` of forest 0's booster. Returns ``raw`` float64
    ``(n_forests, len(rows))`` (as :func:`predict_group` with ``raw_score``) and ``contrib`` float64
    ``(len(rows), n_features + 1)`` of forest 0 (as :func:`raw_and_contributions`).
    """
    if tables.n_features != group.n_features or not np.array_equal(tables.leaf_offset, group.leaf_offsets[0]):
        raise ValueError("path tables and compiled trees come from different models")
    X, rows = _check_input(group.n_features, X, rows)
    return _run(group, X, rows, tables)


def to_response_scale(forest: CompiledForest, raw: np.ndarray) -> np.ndarray:
    """The objective's output transform (exp, sigmoid, or none) applied to ``forest``'s raw scores
    ``raw`` (float64, 1-D, C-contiguous) in place, exactly as :func:`predict` applies it; returns ``raw``."""
    if raw.dtype != np.float64 or raw.ndim != 1 or not raw.flags.c_contiguous:
        raise ValueError("raw scores must be a C-contiguous 1-D float64 array")
    if forest.transform:
        _transform(raw, forest.transform, forest.sigmoid)
    return raw


def predict_raw(forest: CompiledForest, X: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Raw score per row (sum of the leaf values, tree order): ``Booster.predict(X, raw_score=True)``.

    ``X``: float64 ``(n, n_features)`` (see :func:`lightgbm_matrix`); ``rows``: row numbers or a
    boolean mask of ``X`` to score (default: all), in that order. Returns float64 ``(len(rows),)``.
    """
    return predict_group(forest.group, X, rows, raw_score=True)[0]


def predict(forest: CompiledForest, X: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Prediction per row on the response scale: ``Booster.predict(X)`` (raw score, then the
    objective's transform: exp for poisson/gamma/tweedie, sigmoid for binary). See :func:`predict_raw`."""
    return predict_group(forest.group, X, rows)[0]


def predict_leaves(forest: CompiledForest, X: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Leaf index of every row in every tree: ``Booster.predict(X, pred_leaf=True)``, int32 ``(n, n_trees)``."""
    X, rows = _check_input(forest.n_features, X, rows)
    out = np.empty((len(rows), forest.n_trees), dtype=np.int32)
    _leaves(X, rows, forest.col_feature, forest.col_kind, forest.col_cat_start, forest.col_cat_count,
            forest.cat_words, forest.tree_root, forest.slot_packed, forest.slot_threshold, forest.slot_leaf,
            forest.leaf_offset, out)
    return out


def raw_and_contributions(
    forest: CompiledForest, tables: PathTables, X: np.ndarray, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Raw score and path (Saabas) contributions of each row in one walk of the trees.

    ``tables``: :func:`training.tree_paths.path_tables` of the same booster. Returns, as
    :func:`training.tree_paths.contributions_from_leaves` does on LightGBM's leaves, ``raw`` float64
    ``(n,)`` (log-odds for a binary model) and ``contrib`` float64 ``(n, n_features + 1)`` (last
    column the bias; each row sums to ``raw`` up to float rounding).
    """
    raw, contrib = group_raw_and_contributions(forest.group, tables, X, rows)
    return raw[0], contrib
