"""Compile LightGBM trees into dense tensor ops (the GEMM form of tree inference) in ONNX.

ONNX's ``TreeEnsembleClassifier`` has no CUDA kernel: under the CUDA provider it falls back to
the CPU. This module writes the same model as a standard graph of dense ops that do run on the
GPU, after Hummingbird's GEMM strategy, with every tree padded to ``I`` internal nodes and ``L``
leaves and the trees batched on a leading axis ``T``:

1. ``V = X·A``: each internal node's feature value. ``A`` is one-hot per column, so ``X·A`` is a
   column ``Gather``; we gather rather than multiply because ``NaN·0 = NaN`` and ``inf·0 = NaN``
   would poison every node of the row.
2. ``go_left = V <= thresholds`` (``decision_type`` ``<=``), with LightGBM's missing-value rules:
   ``missing_type`` NaN sends NaN to the ``default_left`` side; Zero sends NaN and zero
   (``|x| <= 1e-35``) there; None turns NaN into 0.0 and compares. Thresholds are rounded *down*
   to float32, so ``x32 <= t32`` is exactly LightGBM's ``double(x32) <= t``.
3. ``B`` (``T × I × L``): +1 where a leaf lies in a node's left subtree, −1 in its right. The
   batched product ``go_left·B`` equals the count of left turns on a leaf's path (``D``) for
   exactly one leaf per tree: the leaf reached.
4. ``onehot = (go_left·B == D)``, ``raw = Σ_T onehot·E`` (``E``: leaf values, ``T × L × 1``),
   ``p = sigmoid(k · raw)``.

Categorical splits (``==``), linear trees and multi-class models are refused with
``GemmCompileError``. The FP16 variant runs the path-matching product (3, 4: small integers,
exact in FP16) in half precision and keeps the comparisons and the leaf sum in FP32, because
FP16 thresholds would flip splits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from levibot.ml.card import ModelError

OPSET = 17
ZERO_THRESHOLD = 1e-35  # LightGBM's kZeroThreshold


class GemmCompileError(ModelError):
    """The model uses something the GEMM compiler does not support."""


@dataclass(frozen=True)
class _Tables:
    feature: np.ndarray  # (T*I,) int64: input column per internal node
    threshold: np.ndarray  # (T*I,) float32
    default_left: np.ndarray  # (T*I,) bool
    nan_missing: np.ndarray  # (T*I,) bool: missing_type NaN
    zero_missing: np.ndarray  # (T*I,) bool: missing_type Zero
    paths: np.ndarray  # (T, I, L) float32: +1 left subtree, -1 right subtree
    left_turns: np.ndarray  # (T, 1, L) float32; padding leaves never match
    leaf_values: np.ndarray  # (T, 1, L) float32
    sigmoid: float
    n_features: int


def round_down_f32(value: float) -> np.float32:
    """Return the largest float32 not above ``value``: ``x32 <= it`` iff ``x32 <= value``."""
    # LightGBM writes ±1e300 for splits that only separate missing values: they overflow
    # float32 and round down to the largest finite float32 (or -inf), which keeps the order.
    with np.errstate(over="ignore"):
        f = np.float32(value)
    if float(f) > value:
        f = np.nextafter(f, np.float32(-np.inf))
    return np.float32(f)


def _walk(
    node: dict[str, Any], tree: int
) -> tuple[list[dict[str, Any]], list[tuple[float, list[tuple[int, bool]]]]]:
    """Return the internal nodes (pre-order) and each leaf with its path [(node, went_left)]."""
    internals: list[dict[str, Any]] = []
    leaves: list[tuple[float, list[tuple[int, bool]]]] = []
    stack: list[tuple[dict[str, Any], list[tuple[int, bool]]]] = [(node, [])]
    while stack:
        cur, path = stack.pop()
        if "leaf_value" in cur or "split_feature" not in cur:
            leaves.append((float(cur.get("leaf_value", 0.0)), path))
            continue
        if cur.get("decision_type", "<=") != "<=":
            raise GemmCompileError(
                f"tree {tree} has a categorical split (decision_type "
                f"{cur.get('decision_type')!r}); the GEMM compiler supports numerical splits only"
            )
        idx = len(internals)
        internals.append(cur)
        stack.append((cur["right_child"], [*path, (idx, False)]))
        stack.append((cur["left_child"], [*path, (idx, True)]))
    return internals, leaves


def _tables(model: dict[str, Any]) -> _Tables:
    objective = str(model.get("objective", ""))
    if not objective.startswith("binary") or int(model.get("num_class", 1)) != 1:
        raise GemmCompileError(f"only binary models are supported, not {objective!r}")
    if model.get("average_output"):
        raise GemmCompileError("random-forest (average_output) models are not supported")
    sigmoid = 1.0
    for part in objective.split():
        if part.startswith("sigmoid:"):
            sigmoid = float(part.split(":", 1)[1])
    trees = []
    for info in model["tree_info"]:
        if info.get("num_cat", 0):
            raise GemmCompileError(f"tree {info['tree_index']} has categorical splits")
        if "leaf_coeff" in info["tree_structure"] or info.get("is_linear"):
            raise GemmCompileError("linear trees are not supported")
        trees.append(_walk(info["tree_structure"], int(info["tree_index"])))
    n_trees = len(trees)
    if n_trees == 0:
        raise GemmCompileError("the model has no trees")
    n_int = max(1, max(len(t[0]) for t in trees))
    n_leaf = max(len(t[1]) for t in trees)
    size = n_trees * n_int
    feature = np.zeros(size, np.int64)
    threshold = np.zeros(size, np.float32)
    default_left = np.zeros(size, bool)
    nan_missing = np.zeros(size, bool)
    zero_missing = np.zeros(size, bool)
    paths = np.zeros((n_trees, n_int, n_leaf), np.float32)
    left_turns = np.full((n_trees, 1, n_leaf), -1.0, np.float32)  # padding leaves sum to 0
    leaf_values = np.zeros((n_trees, 1, n_leaf), np.float32)
    for t, (internals, leaves) in enumerate(trees):
        for i, node in enumerate(internals):
            j = t * n_int + i
            feature[j] = int(node["split_feature"])
            threshold[j] = round_down_f32(float(node["threshold"]))
            default_left[j] = bool(node.get("default_left", True))
            missing = node.get("missing_type", "None")
            nan_missing[j] = missing == "NaN"
            zero_missing[j] = missing == "Zero"
        for leaf, (value, path) in enumerate(leaves):
            leaf_values[t, 0, leaf] = value
            left_turns[t, 0, leaf] = sum(1 for _, left in path if left)
            for node_idx, left in path:
                paths[t, node_idx, leaf] = 1.0 if left else -1.0
    return _Tables(
        feature=feature,
        threshold=threshold,
        default_left=default_left,
        nan_missing=nan_missing,
        zero_missing=zero_missing,
        paths=paths,
        left_turns=left_turns,
        leaf_values=leaf_values,
        sigmoid=sigmoid,
        n_features=int(model.get("max_feature_idx", 0)) + 1,
    )


def compile_gemm(booster: Any, *, fp16: bool = False) -> onnx.ModelProto:
    """Return an ONNX graph computing ``booster``'s probabilities with dense tensor ops.

    Input ``input`` float32 (n, k); output ``probability`` float32 (n,).
    """
    t = _tables(booster.dump_model())
    n_trees, n_int, _ = t.paths.shape
    half = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    ht = np.float16 if fp16 else np.float32
    col = (-1, 1)  # per-node constants broadcast over the batch axis (nodes, n)
    # Where NaN goes: the default side for missing_type NaN/Zero; for None, NaN is read as 0.0,
    # so its side is the constant (0.0 <= threshold).
    nan_left = np.where(t.nan_missing | t.zero_missing, t.default_left, t.threshold >= 0.0)
    zero = bool(t.zero_missing.any())
    inits = [
        numpy_helper.from_array(t.feature, "feature"),
        numpy_helper.from_array(t.threshold.reshape(col), "threshold"),
        numpy_helper.from_array(nan_left.reshape(col), "nan_left"),
        numpy_helper.from_array(np.array([n_trees, n_int, -1], np.int64), "tree_shape"),
        numpy_helper.from_array(t.paths.transpose(0, 2, 1).astype(ht), "paths"),  # (T, L, I)
        numpy_helper.from_array(t.left_turns.transpose(0, 2, 1).astype(ht), "left_turns"),
        numpy_helper.from_array(t.leaf_values, "leaf_values"),  # (T, 1, L)
        numpy_helper.from_array(np.array([0, 1], np.int64), "sum_axes"),
        numpy_helper.from_array(np.array(t.sigmoid, np.float32), "sigmoid_k"),
    ]
    n = helper.make_node
    # Rows are laid out (nodes, n): gathering whole rows of the transposed input is a block
    # copy, where a column gather of (n, k) is an element-wise copy (10x slower on the CPU).
    nodes = [
        n("Transpose", ["input"], ["xt"], perm=[1, 0]),  # (k, n)
        n("Gather", ["xt", "feature"], ["v"], axis=0),  # (T·I, n) = (X·A)ᵀ, one-hot A
        n("IsNaN", ["v"], ["v_nan"]),
        n("LessOrEqual", ["v", "threshold"], ["le"]),  # False for NaN
        # Where has no bool kernel on the CPU provider: select with logic ops.
        n("And", ["v_nan", "nan_left"], ["nan_goes_left"]),
        n("Not", ["v_nan"], ["present"]),
        n("And", ["present", "le"], ["le_present"]),
        n("Or", ["nan_goes_left", "le_present"], ["go_left_nz" if zero else "go_left"]),
    ]
    if zero:  # missing_type Zero somewhere: zeros go the default way too
        inits += [
            numpy_helper.from_array(t.default_left.reshape(col), "default_left"),
            numpy_helper.from_array(t.zero_missing.reshape(col), "zero_missing"),
            numpy_helper.from_array(np.array(ZERO_THRESHOLD, np.float32), "zero_eps"),
        ]
        nodes += [
            n("Abs", ["v"], ["v_abs"]),
            n("LessOrEqual", ["v_abs", "zero_eps"], ["v_zero"]),  # False for NaN
            n("And", ["v_zero", "zero_missing"], ["zmiss"]),
            n("And", ["zmiss", "default_left"], ["zmiss_left"]),
            n("Not", ["zmiss"], ["zpresent"]),
            n("And", ["zpresent", "go_left_nz"], ["nz_left"]),
            n("Or", ["zmiss_left", "nz_left"], ["go_left"]),
        ]
    nodes += [
        n("Cast", ["go_left"], ["go_left_f"], to=half),
        n("Reshape", ["go_left_f", "tree_shape"], ["g"]),  # (T, I, n)
        n("MatMul", ["paths", "g"], ["turns"]),  # (T, L, n)
        n("Equal", ["turns", "left_turns"], ["hit"]),
        n("Cast", ["hit"], ["hit_f"], to=TensorProto.FLOAT),
        n("MatMul", ["leaf_values", "hit_f"], ["contrib"]),  # (T, 1, n)
        n("ReduceSum", ["contrib", "sum_axes"], ["raw"], keepdims=0),  # (n,)
        n("Mul", ["raw", "sigmoid_k"], ["logit"]),
        n("Sigmoid", ["logit"], ["probability"]),
    ]
    graph = helper.make_graph(
        nodes,
        "lightgbm_gemm_fp16" if fp16 else "lightgbm_gemm",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, t.n_features])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, [None])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="levibot.ml.gemm"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
