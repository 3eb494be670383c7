"""``POST /retrain``'s worker: training runs in a child process whose result or error comes
back to the caller, and which a stopping gateway ends instead of waiting for it."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from levibot.errors import ConfigError
from levibot.ml.card import ModelError
from levibot.ml.registry import ModelRegistry
from levibot.ml.retrain import ChildTrainer
from levibot.testing import wait_until

pytestmark = pytest.mark.integration


def test_an_error_in_the_child_is_raised_in_the_caller(tmp_path: Path) -> None:
    trainer = ChildTrainer(root=str(tmp_path / "models"))
    with pytest.raises(ConfigError, match="n_estimators"):
        trainer({"n_estimators": 0})
    with pytest.raises(ModelError, match="no \\[storage\\] postgres_dsn"):
        trainer({}, {"symbol": "BTCUSDT", "timeframe": "1h"})
    assert trainer.running == 0


def test_close_ends_a_training_child_and_the_call_fails_saying_so(tmp_path: Path) -> None:
    trainer = ChildTrainer(root=str(tmp_path / "models"))
    outcome: list[Any] = []

    def call() -> None:
        try:  # long enough that only close() can end it
            outcome.append(trainer({"n_estimators": 100_000, "folds": 8, "num_threads": 1}))
        except ModelError as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    wait_until(lambda: trainer.running == 1, 30, "the child trains")
    trainer.close()
    caller.join(30)
    assert not caller.is_alive()
    (err,) = outcome
    assert isinstance(err, ModelError) and "ended without a result" in str(err)
    assert trainer.running == 0
    assert ModelRegistry(tmp_path / "models").list() == []  # nothing half-registered
    with pytest.raises(ModelError, match="closed"):
        trainer({})
