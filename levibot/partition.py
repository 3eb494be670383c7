"""Which symbols a replica of a per-symbol actor owns (``--partition i/N``).

At the bottom of the package: the bus filters what it delivers by it and the runtime hands it
to every actor, so both import it from here.
"""

from __future__ import annotations

import zlib

import msgspec


class Partition(msgspec.Struct, frozen=True):
    """Replica ``index`` of ``count``: owns the symbols whose stable hash mod ``count`` is it."""

    index: int = 0
    count: int = 1

    def owns(self, symbol: str) -> bool:
        """Return True when this replica owns ``symbol``."""
        return self.count == 1 or zlib.crc32(symbol.encode()) % self.count == self.index
