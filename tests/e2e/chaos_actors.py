"""Test-only actors for the live chaos runs, loaded by nodes through ``[node] plugins``.

``tally_out`` (in the ingest group) and ``tally_in`` (next to the order actor) append one line
per ``Bar`` they handle, ``symbol ts_event wall_ns``, to their file: what ingest published and
what reached execution. Lines are written unbuffered to the OS, so a ``kill -9`` loses none of
them, and both inboxes are lossless: a tally never drops what it counts.
"""

from __future__ import annotations

import time

from levibot.config import Config
from levibot.messages import Bar
from levibot.registry import register
from levibot.runtime import Actor


class TallyConfig(Config, frozen=True, kw_only=True):
    """Where the lines go."""

    path: str = ""


class BarTally(Actor[TallyConfig]):
    """Append ``symbol ts_event wall_ns`` for every bar handled."""

    name = "tally_out"
    consumes = (Bar,)
    config_type = TallyConfig
    lossless = True
    mailbox_size = 65_536

    async def on_start(self) -> None:
        """Open the file for appending (a restarted process adds to it)."""
        self._fh = open(self.config.path, "a", buffering=1)  # noqa: SIM115, ASYNC230 (tiny test file)

    async def handle(self, msg: Bar) -> None:
        """Write the bar's line."""
        self._fh.write(f"{msg.symbol} {msg.ts_event} {time.time_ns()}\n")

    async def on_stop(self) -> None:
        """Close the file."""
        self._fh.close()


class BarTallyIn(BarTally):
    """The same tally under another name, for the receiving side."""

    name = "tally_in"


register("tally_out", f"{__name__}:BarTally")
register("tally_in", f"{__name__}:BarTallyIn")
