"""What trading costs on the venue, in one place: the fee and the quantity step.

The order actor's venue charges ``fee_bps`` and trades in multiples of ``qty_step`` (``[order]``);
the risk engine sizes entries with the same two values (``[risk]`` leaves them unset and reads
``[order]``'s, see ``levibot.settings.SHARED``). These are their defaults.
"""

FEE_BPS = 10.0  # taker fee, basis points of the notional
QTY_STEP = 1e-8  # the smallest quantity increment
