"""``levibot demo``: the whole engine on one machine, no servers, on real data.

Replays the real Binance BTCUSDT 1h klines (fetched once from PyPI) through feed → feature →
scoring → risk → order → store at a watchable speed, trains and activates a first model if the
registry has none, serves the gateway (REST, websocket, Mini App) and the node's metrics on
localhost, prints where to look, and runs until Ctrl-C.

As a notebook server does, it prints a sign-in link with a one-time token that opens the Mini
App as an admin in an ordinary browser on this machine (``sidecars.miniapp.demolink``); the
gateway is given only the token's digest, and only when it listens on a loopback address.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from levibot.commands.run import add_common, config_path, run_node
from levibot.settings import load_settings, with_storage


def register(sub: Any) -> None:
    """Register ``levibot demo``."""
    p = sub.add_parser("demo", help="replay real BTCUSDT data through the whole engine")
    add_common(p)
    p.add_argument(
        "--speed", type=float, default=36_000.0,
        help="replay speed as a multiple of real time (36000: ten 1h bars a second; 0: max)",
    )  # fmt: skip
    p.add_argument("--no-train", action="store_true", help="do not train a model if none exists")
    p.add_argument(
        "--no-status", action="store_true", help="no live status line on a terminal (logs only)"
    )
    p.set_defaults(func=demo)


def scoring_registry(settings: Any) -> tuple[Path, str, str]:
    """Return the registry the node's scoring serves from, as it resolves it: its folder (the
    PostgreSQL registry's cache), DSN and schema (``[scoring]``, else ``[storage]``)."""
    cfg = with_storage(settings.actor_config("scoring"), settings.storage, registry_dir="models")
    return Path(cfg.registry_dir), cfg.postgres_dsn, cfg.postgres_schema


def ensure_model(
    data_dir: Path,
    *,
    train: bool = True,
    dsn: str = "",
    root: Path | None = None,
    schema: str = "public",
) -> str | None:
    """Return the active model id, training and activating a first one if there is none.

    The registry is the one the node's scoring serves from (``scoring_registry``): PostgreSQL
    (``schema``) when ``dsn`` is set, else the folder ``root`` (default ``<data_dir>/models``).
    """
    import asyncio

    from levibot.ml.registries import open_registry, publish
    from levibot.ml.registry import ModelRegistry

    root = data_dir / "models" if root is None else root

    async def in_registry(model_dir: Path | None = None) -> str | None:
        store = await open_registry(root, dsn=dsn, schema=schema)
        try:
            if model_dir is not None:
                # The demo shows the machinery on a first model, whatever the gate says of it.
                await publish(store, model_dir, activate=True, force=True)
            active = await store.active()
            return None if active is None else str(active.model_id)
        finally:
            await store.close()

    active = asyncio.run(in_registry())
    if active is not None or not train:
        return active
    from levibot.ml.train import train_model

    print("No model registered yet: training one on the real BTCUSDT 1h data (about a minute).")
    local = ModelRegistry(root)  # the registry itself, or the PostgreSQL registry's cache
    card = train_model(registry=local, progress=True)
    return asyncio.run(in_registry(local.path(card.model_id)))


def demo(args: argparse.Namespace) -> int:
    """Fetch the data, make sure a model is active, print the addresses, run the node."""
    from levibot.data import ensure_btcusdt

    settings = load_settings(config_path(args))
    data_dir = Path(settings.storage.data_dir)
    data = ensure_btcusdt(data_dir / "data", progress=True)
    root, dsn, schema = scoring_registry(settings)
    model = ensure_model(data_dir, train=not args.no_train, dsn=dsn, root=root, schema=schema)
    settings, token = demo_settings(config_path(args), data, args.speed)
    print("\n".join(banner(settings, model, token)))
    return run_node(settings, status=not args.no_status)


def demo_settings(config: str | None, data: Path, speed: float) -> tuple[Any, str | None]:
    """Return the demo's settings and its one-time sign-in token.

    The token is None where the node runs no gateway or the gateway is not on a loopback
    address: then the Mini App opens from Telegram only. The gateway gets the token's digest.
    """
    from sidecars.miniapp import demolink

    overrides: dict[str, dict[str, Any]] = {
        "node": {"replay": True},
        "feed": {"source": "replay"},
        "feed.replay": {"path": str(data), "speed": speed},
    }
    settings = load_settings(config, overrides=_nest(overrides))
    token = None
    if "gateway" in _groups(settings) and demolink.is_loopback(
        settings.actor_config("gateway").host
    ):
        token, digest = demolink.new_token()
        overrides["gateway"] = {"demo_token_sha256": digest}
        settings = load_settings(config, overrides=_nest(overrides))
    return settings, token


def banner(settings: Any, model: str | None, token: str | None) -> list[str]:
    """Return the lines the demo prints: where to look, the sign-in link first."""
    lines = ["", "levibot demo: replaying BTCUSDT 1h klines 2017-08 → 2024-01"]
    lines.append(f"  model        {model or 'none (the onnx strategy stays idle)'}")
    if "gateway" in _groups(settings):
        gateway = settings.actor_config("gateway")
        host = f"[{gateway.host}]" if ":" in gateway.host else gateway.host
        base = f"http://{host}:{gateway.port}"
        if token is not None:
            lines.append(f"  Mini App     {base}/app#demo={token}")
            lines.append(
                "               (one-time sign-in link: opens it as admin in a browser here)"
            )
        else:
            lines.append(
                f"  Mini App     {base}/app  (from Telegram: [gateway] host is not loopback)"
            )
        lines.append(f"  REST API     {base}/openapi.json  (GET /portfolio/summary, /charts, ...)")
        lines.append(f"  websocket    ws://{host}:{gateway.port}/ws")
    node = settings.node
    if node.http_port >= 0:
        lines.append(
            f"  node         http://{node.http_host}:{node.http_port}/health  /ready  /metrics"
        )
    lines.append(f"  state        {Path(settings.storage.data_dir).resolve()}")
    lines.append("  API key      levibot keys create --scopes read,trade,admin --name me")
    lines += ["Ctrl-C stops it cleanly.", ""]
    return lines


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
