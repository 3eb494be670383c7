"""Suite-wide fixtures: async tests run on asyncio with uvloop (the production loop)."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, bool]]:
    return ("asyncio", {"use_uvloop": True})
