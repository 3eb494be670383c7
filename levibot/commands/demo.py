"""``levibot demo``: the whole engine on one machine, no servers, on real data.

Replays the real Binance BTCUSDT 1h klines (fetched once from PyPI) through feed → feature →
scoring → risk → order → store at a watchable speed, trains and activates a first model if the
registry has none, serves the gateway (REST, websocket, Mini App) and the node's metrics on
localhost, prints where to look, and runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from levibot.commands.run import add_common, config_path, run_node
from levibot.settings import load_settings


def register(sub: Any) -> None:
    """Register ``levibot demo``."""
    p = sub.add_parser("demo", help="replay real BTCUSDT data through the whole engine")
    add_common(p)
    p.add_argument(
        "--speed", type=float, default=36_000.0,
        help="replay speed as a multiple of real time (36000: ten 1h bars a second; 0: max)",
    )  # fmt: skip
    p.add_argument("--no-train", action="store_true", help="do not train a model if none exists")
    p.set_defaults(func=demo)


def ensure_model(data_dir: Path, *, train: bool = True) -> str | None:
    """Return the active model id, training and activating a first one if there is none."""
    from levibot.ml.registry import ModelRegistry

    registry = ModelRegistry(data_dir / "models")
    active = registry.active()
    if active is not None:
        return str(active.model_id)
    if not train:
        return None
    from levibot.ml.train import train_model

    print("No model registered yet: training one on the real BTCUSDT 1h data (about a minute).")
    # The demo shows the machinery on a first model, whatever the promotion gate says of it.
    card = train_model(registry=registry, activate=True, force=True, progress=True)
    return str(card.model_id)


def demo(args: argparse.Namespace) -> int:
    """Fetch the data, make sure a model is active, print the addresses, run the node."""
    from levibot.data import ensure_btcusdt

    settings = load_settings(config_path(args))
    data_dir = Path(settings.storage.data_dir)
    data = ensure_btcusdt(data_dir / "data", progress=True)
    model = ensure_model(data_dir, train=not args.no_train)
    overrides: dict[str, dict[str, Any]] = {
        "node": {"replay": True},
        "feed": {"source": "replay"},
        "feed.replay": {"path": str(data), "speed": args.speed},
    }
    settings = load_settings(config_path(args), overrides=_nest(overrides))
    gateway = settings.actor_config("gateway") if "gateway" in _groups(settings) else None
    node = settings.node
    print()
    print("levibot demo: replaying BTCUSDT 1h klines 2017-08 → 2024-01")
    print(f"  model        {model or 'none (the onnx strategy stays idle)'}")
    if gateway is not None:
        base = f"http://{gateway.host}:{gateway.port}"
        print(f"  Mini App     {base}/app")
        print(f"  REST API     {base}/openapi.json  (GET /portfolio/summary, /signals/recent, ...)")
        print(f"  websocket    ws://{gateway.host}:{gateway.port}/ws")
    if node.http_port >= 0:
        print(f"  node         http://{node.http_host}:{node.http_port}/health  /ready  /metrics")
    print(f"  state        {data_dir.resolve()}")
    print("  API key      levibot keys create --scopes read,trade,admin --name me")
    print("Ctrl-C stops it cleanly.")
    print()
    return run_node(settings)


def _groups(settings: Any) -> list[str]:
    return [a for g in settings.node.groups for a in settings.groups.get(g, ())]


def _nest(overrides: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Turn ``{"feed.replay": {...}}`` into ``{"feed": {"replay": {...}}}``."""
    out: dict[str, dict[str, Any]] = {}
    for key, values in overrides.items():
        section, _, sub = key.partition(".")
        target = out.setdefault(section, {})
        if sub:
            target = target.setdefault(sub, {})
        target.update(values)
    return out
