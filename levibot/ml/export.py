"""Export a LightGBM booster to ONNX (tree operator and GEMM form) and prove it equal."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from levibot.ml.card import MODEL_GEMM, MODEL_ONNX, MODEL_TXT, ModelError
from levibot.ml.gemm import compile_gemm

#: The largest |ONNX − LightGBM| probability difference an export may have.
MAX_EXPORT_ERROR = 1e-5


class ExportError(ModelError):
    """The exported graph disagrees with LightGBM beyond ``MAX_EXPORT_ERROR``."""


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


def export_all(booster: Any, n_features: int, check_rows: np.ndarray, out: Path) -> dict[str, Any]:
    """Write ``model.txt``, ``model.onnx`` and ``model.gemm.onnx`` into ``out``.

    Each graph is checked against LightGBM on ``check_rows``; ``ExportError`` above 1e-5. The
    FP16 GEMM variant is only measured (its error is returned), not written.
    """
    out.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(out / MODEL_TXT))
    tree = to_tree_onnx(booster, n_features)
    gemm = compile_gemm(booster)
    report: dict[str, Any] = {"check_rows": len(check_rows)}
    for key, model in (("onnx_max_error", tree), ("gemm_max_error", gemm)):
        err = max_error(model, booster, check_rows)
        report[key] = err
        if not err <= MAX_EXPORT_ERROR:
            raise ExportError(f"{key} {err:.3g} exceeds {MAX_EXPORT_ERROR:g}")
    report["gemm_fp16_max_error"] = max_error(compile_gemm(booster, fp16=True), booster, check_rows)
    onnx.save(tree, str(out / MODEL_ONNX))
    onnx.save(gemm, str(out / MODEL_GEMM))
    return report
