"""The model card: everything needed to trust, serve and audit one trained model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from levibot.errors import LevibotError

#: File names inside a model directory.
CARD_FILE = "card.json"
MODEL_TXT = "model.txt"
MODEL_ONNX = "model.onnx"
MODEL_GEMM = "model.gemm.onnx"


class ModelError(LevibotError):
    """A model or its card is missing, malformed or unusable."""


class FeatureRange(msgspec.Struct, frozen=True, kw_only=True):
    """The training range of one input feature, for drift detection."""

    min: float
    max: float
    q01: float
    q99: float


class ModelCard(msgspec.Struct, frozen=True, kw_only=True):
    """A trained model's identity, inputs, training setup and out-of-sample results.

    ``features`` are the column names the model reads, ``feature_indices`` their positions in the
    full feature vector of schema ``schema_hash``: the scorer selects those columns itself.
    """

    model_id: str
    created_at: str  # ISO 8601, UTC
    created_at_ns: int
    schema_hash: str
    schema_version: str
    features: tuple[str, ...]
    feature_indices: tuple[int, ...]
    schema_size: int
    horizon: int
    fee_bps: float
    thresholds: tuple[float, float] = (0.55, 0.45)
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    data: dict[str, Any] = msgspec.field(default_factory=dict)  # source, span, rows
    folds: list[dict[str, Any]] = msgspec.field(default_factory=list)
    metrics: dict[str, Any] = msgspec.field(default_factory=dict)
    baselines: dict[str, Any] = msgspec.field(default_factory=dict)
    libraries: dict[str, str] = msgspec.field(default_factory=dict)
    input_ranges: dict[str, FeatureRange] = msgspec.field(default_factory=dict)
    export: dict[str, Any] = msgspec.field(default_factory=dict)  # max errors, fp16 error
    # The promotion gate's verdict at training: {"passed": bool, "why": str} (governance).
    promotion: dict[str, Any] = msgspec.field(default_factory=dict)

    def to_json(self) -> bytes:
        """Return the card as indented JSON."""
        return msgspec.json.format(msgspec.json.encode(self), indent=2)

    @classmethod
    def from_json(cls, data: bytes | str) -> ModelCard:
        """Return the card in ``data``; raise ``ModelError`` when it is not a valid card."""
        try:
            return msgspec.json.decode(data, type=cls)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise ModelError(f"invalid model card: {exc}") from None

    @classmethod
    def load(cls, path: Path) -> ModelCard:
        """Return the card stored at ``path`` (a card file or a model directory)."""
        path = path / CARD_FILE if path.is_dir() else path
        try:
            return cls.from_json(path.read_bytes())
        except FileNotFoundError:
            raise ModelError(f"no model card at {path}") from None

    def save(self, directory: Path) -> Path:
        """Write the card into ``directory`` and return its path."""
        path = directory / CARD_FILE
        path.write_bytes(self.to_json())
        return path

    def bounds(self, tolerance: float) -> tuple[list[float], list[float]]:
        """Return per-feature (low, high) drift bounds: the training min/max widened by
        ``tolerance`` times the range, in the order of ``features``."""
        lows: list[float] = []
        highs: list[float] = []
        for name in self.features:
            r = self.input_ranges.get(name)
            if r is None:
                lows.append(float("-inf"))
                highs.append(float("inf"))
                continue
            pad = (r.max - r.min) * tolerance
            lows.append(r.min - pad)
            highs.append(r.max + pad)
        return lows, highs
