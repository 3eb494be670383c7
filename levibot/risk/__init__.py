"""The risk engine: pre-trade checks, sizing, exit policies and persisted risk state.

Pure logic, testable without an event loop; ``levibot.actors.risk.RiskActor`` drives it.
"""

from levibot.risk.codes import CHECK_ORDER, DenyCode
from levibot.risk.engine import Breach, RiskEngine, sane_fill, sane_snapshot
from levibot.risk.limits import EXIT_POLICIES, PRESETS, ExitPolicy, RiskLimits, resolve_limits
from levibot.risk.sizing import SizingMode, SizingParams, floor_step, kelly_fraction, size_entry
from levibot.risk.state import (
    RiskState,
    StateFileError,
    read_state,
)

__all__ = [
    "CHECK_ORDER",
    "EXIT_POLICIES",
    "PRESETS",
    "Breach",
    "DenyCode",
    "ExitPolicy",
    "RiskEngine",
    "RiskLimits",
    "RiskState",
    "SizingMode",
    "SizingParams",
    "StateFileError",
    "floor_step",
    "kelly_fraction",
    "read_state",
    "resolve_limits",
    "sane_fill",
    "sane_snapshot",
    "size_entry",
]
