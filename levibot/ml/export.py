"""Export a LightGBM booster to ONNX (tree operator and GEMM form) and prove it equal.

Why the thresholds are snapped: the model is served on float32 inputs (ONNX Runtime's tree
operator and the GEMM graph compare float32 values with float32 thresholds), while LightGBM
stores double thresholds, usually between two adjacent float32 values. A converter that rounds
such a threshold to the *nearest* float32 moves it above the float32 input just over it, and
that row then takes the other branch: the served model was not the trained one (up to 0.022 in
probability on the repository's data). For a float32 input ``x``, ``x <= t`` holds exactly when
``x <= t↓``, with ``t↓`` the largest float32 not above ``t``. So ``snap_thresholds`` rewrites
every numerical threshold of the booster to ``t↓`` (decisions unchanged on float32 inputs; the
dataset is float32), and every graph converted from the snapped booster takes the same branch
as LightGBM on every float32 row. ``export_all`` proves it on every row it is given.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from levibot.ml.card import MODEL_GEMM, MODEL_ONNX, MODEL_TXT, ModelError
from levibot.ml.gemm import compile_gemm, round_down_f32

#: The largest |ONNX − LightGBM| probability difference an export may have.
MAX_EXPORT_ERROR = 1e-5
#: How many rows measure the FP16 GEMM variant's error.
FP16_SAMPLE = 5_000


class ExportError(ModelError):
    """The exported graph disagrees with LightGBM beyond ``MAX_EXPORT_ERROR``."""


def snap_thresholds(booster: Any) -> Any:
    """Return a copy of ``booster`` with each numerical split threshold rounded down to float32.

    Categorical splits (``decision_type`` bit 0) keep their thresholds: those index the
    category bitsets. The copy decides every float32 input exactly as ``booster`` does.
    """
    import lightgbm as lgb

    lines = booster.model_to_string().split("\n")
    at = -1  # the current tree's ``threshold=`` line; its ``decision_type=`` line follows it
    for i, line in enumerate(lines):
        if line.startswith("threshold="):
            at = i
        elif line.startswith("decision_type=") and at >= 0:
            decision = [int(v) for v in line.split("=", 1)[1].split()]
            values = lines[at].split("=", 1)[1].split()
            snapped = [
                v if kind & 1 else repr(float(round_down_f32(float(v))))
                for v, kind in zip(values, decision, strict=True)
            ]
            lines[at], at = "threshold=" + " ".join(snapped), -1
    # ``tree_sizes`` gives each tree's length in bytes, which the new numbers change; without
    # it LightGBM parses the trees one after another.
    lines = [line for line in lines if not line.startswith("tree_sizes=")]
    return lgb.Booster(model_str="\n".join(lines))


def to_tree_onnx(booster: Any, n_features: int) -> onnx.ModelProto:
    """Return ``booster`` as an ONNX ``TreeEnsembleClassifier`` graph (onnxmltools)."""
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    with warnings.catch_warnings():
        # onnxmltools' converters emit deprecation noise from their dependencies.
        warnings.simplefilter("ignore")
        model: onnx.ModelProto = convert_lightgbm(
            booster, initial_types=[("input", FloatTensorType([None, n_features]))], zipmap=False
        )
    return model


def probabilities(session: Any, rows: np.ndarray) -> np.ndarray:
    """Return P(class 1) for ``rows`` from a session of either graph form."""
    out = session.run(None, {session.get_inputs()[0].name: rows})
    names = [o.name for o in session.get_outputs()]
    if "probability" in names:
        return np.asarray(out[names.index("probability")]).reshape(-1)
    probs = np.asarray(out[names.index("probabilities")])
    return probs[:, 1]


def max_error(model: onnx.ModelProto, booster: Any, rows: np.ndarray) -> float:
    """Return max |ONNX − LightGBM| over ``rows`` on the CPU provider."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # the tree graph's label output shape warns on every run
    session = ort.InferenceSession(
        model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
    )
    rows32 = np.ascontiguousarray(rows, dtype=np.float32)
    got = probabilities(session, rows32)
    want = booster.predict(rows32.astype(np.float64))
    return float(np.max(np.abs(got - want))) if len(rows32) else 0.0


def export_all(
    booster: Any, n_features: int, check_rows: np.ndarray, out: Path
) -> tuple[Any, dict[str, Any]]:
    """Snap ``booster``'s thresholds and write ``model.txt``, ``model.onnx``, ``model.gemm.onnx``.

    The snapped booster must predict every row of ``check_rows`` (pass them all: every training
    and out-of-sample row) exactly as ``booster`` does, and each graph must agree with it on
    every row within ``MAX_EXPORT_ERROR``; otherwise ``ExportError``. The FP16 GEMM variant is
    only measured (its error is reported), not written. Return the snapped booster (the model
    written and served) and the report.
    """
    out.mkdir(parents=True, exist_ok=True)
    snapped = snap_thresholds(booster)
    rows64 = np.ascontiguousarray(check_rows, dtype=np.float32).astype(np.float64)
    drift = (
        float(np.max(np.abs(snapped.predict(rows64) - booster.predict(rows64))))
        if len(rows64)
        else 0.0
    )
    if drift != 0.0:
        raise ExportError(f"snapping thresholds changed a prediction by {drift:.3g}")
    snapped.save_model(str(out / MODEL_TXT))
    tree = to_tree_onnx(snapped, n_features)
    gemm = compile_gemm(snapped)
    report: dict[str, Any] = {"check_rows": len(check_rows), "snap_max_change": drift}
    for key, model in (("onnx_max_error", tree), ("gemm_max_error", gemm)):
        err = max_error(model, snapped, check_rows)
        report[key] = err
        if not err <= MAX_EXPORT_ERROR:
            raise ExportError(f"{key} {err:.3g} exceeds {MAX_EXPORT_ERROR:g}")
    # Only measured (the FP16 graph is an option, not the default): a sample is enough.
    fp16 = compile_gemm(snapped, fp16=True)
    report["gemm_fp16_max_error"] = max_error(fp16, snapped, check_rows[:FP16_SAMPLE])
    onnx.save(tree, str(out / MODEL_ONNX))
    onnx.save(gemm, str(out / MODEL_GEMM))
    return snapped, report
