"""Score feature vectors with a registered model through ONNX Runtime."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from levibot.ml.card import MODEL_GEMM, MODEL_ONNX, ModelCard, ModelError
from levibot.ml.registry import ModelRegistry

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
_ALIASES = {"cuda": CUDA, "gpu": CUDA, "cpu": CPU}


def resolve_providers(requested: Sequence[str]) -> list[str]:
    """Return the requested providers ONNX Runtime has, in order, always ending with CPU.

    ``"cuda"``/``"cpu"`` are short for the full provider names.
    """
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    out = [_ALIASES.get(p.lower(), p) for p in requested]
    out = [p for p in dict.fromkeys(out) if p in available and p != CPU]
    return [*out, CPU]


class Scorer:
    """One ONNX Runtime session for one model.

    ``graph`` picks the tree-operator graph (``"tree"``), the GEMM compile (``"gemm"``) or, with
    ``"auto"``, GEMM when the session really runs on CUDA and the tree operator on the CPU (where
    it is faster). The provider in use is ``session.get_providers()[0]``: onnxruntime-gpu lists
    CUDA as available even on a machine without a GPU, so only the session is trusted.
    """

    def __init__(
        self,
        card: ModelCard,
        model_dir: Path,
        *,
        providers: Sequence[str] = ("cpu",),
        graph: str = "auto",
        intra_op_num_threads: int = 1,
    ) -> None:
        import onnxruntime as ort

        if graph not in ("auto", "tree", "gemm"):
            raise ModelError(f"unknown graph {graph!r}: expected auto, tree or gemm")
        self.card = card
        self.columns = np.asarray(card.feature_indices, dtype=np.intp)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, intra_op_num_threads)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        wanted = resolve_providers(providers)
        chosen = graph
        if graph == "auto":
            chosen = "gemm" if wanted[0] == CUDA and (model_dir / MODEL_GEMM).is_file() else "tree"
        path = model_dir / (MODEL_GEMM if chosen == "gemm" else MODEL_ONNX)
        if not path.is_file():
            raise ModelError(f"model {card.model_id} has no {path.name}")
        try:
            self.session: Any = ort.InferenceSession(
                str(path), sess_options=options, providers=wanted
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"cannot load {path}: {exc}") from None
        self.graph = chosen
        self._input = self.session.get_inputs()[0].name
        # The one output read (as ``levibot.ml.export.probabilities`` picks it), looked up once:
        # asking the session for its outputs on every run costs more than a small run.
        names = [o.name for o in self.session.get_outputs()]
        self._output = "probability" if "probability" in names else "probabilities"

    @classmethod
    def from_registry(
        cls, registry: ModelRegistry, model_id: str | None = None, **options: Any
    ) -> Scorer:
        """Return a scorer for ``model_id``, or the active model when it is None."""
        if model_id is None:
            card = registry.active()
            if card is None:
                raise ModelError(f"no active model in {registry.root}")
        else:
            card = registry.get(model_id)
        return cls(card, registry.path(card.model_id), **options)

    @property
    def model_id(self) -> str:
        """Return the id of the model this scorer runs."""
        return self.card.model_id

    @property
    def provider(self) -> str:
        """Return the execution provider the session actually uses."""
        return str(self.session.get_providers()[0])

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Return P(forward return beats fees) for full feature vectors ``rows`` (n, k_all)."""
        return self.predict_selected(self.columns_of(np.asarray(rows, dtype=np.float32)))

    def columns_of(self, rows: np.ndarray) -> np.ndarray:
        """Return the model's columns (n, m) of full feature vectors ``rows`` (n, k_all)."""
        rows = np.asarray(rows)
        if rows.ndim == 1:
            rows = rows.reshape(1, -1)
        if rows.shape[1] != self.card.schema_size:
            raise ModelError(
                f"expected {self.card.schema_size} features per row, got {rows.shape[1]}"
            )
        return rows[:, self.columns]

    def predict_selected(self, x: np.ndarray) -> np.ndarray:
        """Return P(forward return beats fees) for rows ``x`` (n, m) that hold only the model's
        own columns, in the order of ``card.features`` (``rows[:, scorer.columns]``)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        (out,) = self.session.run([self._output], {self._input: x})
        out = np.asarray(out)
        p = out.reshape(-1) if self._output == "probability" else out[:, 1]
        return p.astype(np.float64)
