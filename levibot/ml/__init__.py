"""Machine learning: training, ONNX export (tree operator and GEMM form), the model registry
and the scorer the scoring actor runs.

Imports are lazy so a scoring pod does not load LightGBM or matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FeatureRange": "levibot.ml.card",
    "ModelCard": "levibot.ml.card",
    "ModelError": "levibot.ml.card",
    "ModelLifecycle": "levibot.ml.lifecycle",
    "ModelRegistry": "levibot.ml.registry",
    "ModelStore": "levibot.ml.registries",
    "open_registry": "levibot.ml.registries",
    "PgModelRegistry": "levibot.ml.registry_pg",
    "Scorer": "levibot.ml.scorer",
    "GemmCompileError": "levibot.ml.gemm",
    "compile_gemm": "levibot.ml.gemm",
    "ExportError": "levibot.ml.export",
    "TrainConfig": "levibot.ml.train",
    "train_model": "levibot.ml.train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'levibot.ml' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
