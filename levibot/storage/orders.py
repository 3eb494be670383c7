"""One order's lifecycle read back from the ``orders`` and ``fills`` tables, as messages.

The inverse of the row builders in ``levibot.storage.rows``: each stored row becomes the
message it was written from again (the fields a row does not keep take their defaults), so a
reader folds them with the code that folds the live ones. Both lookups use an index
(``orders``' primary key, ``fills_order``): any order, however old, costs two index scans.
"""

from __future__ import annotations

from typing import Any

from levibot.messages import (
    Fill,
    Message,
    OrderAccepted,
    OrderClosed,
    OrderDenied,
    OrderIntent,
    Side,
)

_ORDERS = (
    "SELECT kind, ts_event, ts_init, symbol, strategy, side, quantity, price, stop_loss, "
    "take_profit, reduce_only, reason, code, realized_pnl FROM orders WHERE client_order_id = $1"
)
_FILLS = (
    "SELECT fill_id, ts_event, ts_init, symbol, side, quantity, price, fee, realized_pnl, reason, "
    "position_after FROM fills WHERE client_order_id = $1"
)
#: Where each kind of row sits in an order's life, for rows stamped at the same instant.
_STEP = {"intent": 0, "denied": 0, "accepted": 1, "fill": 2, "closed": 3}


def _order(coid: str, r: Any) -> tuple[str, Message] | None:
    head = {
        "ts_event": r["ts_event"], "ts_init": r["ts_init"], "symbol": r["symbol"],
        "client_order_id": coid,
    }  # fmt: skip
    kind = r["kind"]
    if kind == "intent":
        return kind, OrderIntent(
            **head, strategy=r["strategy"], side=Side(r["side"]), quantity=r["quantity"],
            price=r["price"], stop_loss=r["stop_loss"], take_profit=r["take_profit"],
            reduce_only=r["reduce_only"], reason=r["reason"],
        )  # fmt: skip
    if kind == "denied":
        return kind, OrderDenied(**head, strategy=r["strategy"], code=r["code"], reason=r["reason"])
    if kind == "accepted":
        return kind, OrderAccepted(**head, side=Side(r["side"]), quantity=r["quantity"])
    if kind == "closed":
        return kind, OrderClosed(
            **head, reason=r["reason"], exit_price=r["price"], realized_pnl=r["realized_pnl"]
        )
    return None  # a kind written by a later version


def _fill(coid: str, r: Any) -> Fill:
    return Fill(
        ts_event=r["ts_event"], ts_init=r["ts_init"], symbol=r["symbol"], fill_id=r["fill_id"],
        client_order_id=coid, side=Side(r["side"]), quantity=r["quantity"], price=r["price"],
        fee=r["fee"], realized_pnl=r["realized_pnl"], reason=r["reason"],
        position_after=r["position_after"],
    )  # fmt: skip


async def order_messages(conn: Any, client_order_id: str) -> list[Message]:
    """Return the stored messages of one order, in the order they happened (none: unknown)."""
    steps: list[tuple[int, int, str, Message]] = []
    for r in await conn.fetch(_ORDERS, client_order_id):
        found = _order(client_order_id, r)
        if found is not None:
            steps.append((r["ts_init"], _STEP[found[0]], "", found[1]))
    for r in await conn.fetch(_FILLS, client_order_id):
        steps.append((r["ts_init"], _STEP["fill"], r["fill_id"], _fill(client_order_id, r)))
    steps.sort(key=lambda s: s[:3])
    return [s[3] for s in steps]
