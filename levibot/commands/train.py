"""``levibot train``: train a model on kline data, print its metrics, register it.

The model goes into the registry every process shares: the PostgreSQL registry when a DSN is
given (``--dsn``) or configured (``[storage] postgres_dsn``), its files also cached in the
local folder, else the local folder alone. With ``--activate`` the persisted pointer moves and
running scoring actors are told (``ActivateModel`` over NATS when ``[nats] url`` is set).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from levibot.commands.run import add_common, config_path
from levibot.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``train`` sub-command."""
    p = sub.add_parser(
        "train",
        help="train a LightGBM signal model (walk-forward, purged) and register it",
        description="Train on kline CSV data (default: the real BTCUSDT 1h klines), print "
        "out-of-sample metrics beside naive baselines, export ONNX and register the model.",
    )
    p.add_argument("--data", type=Path, help="kline CSV (default: levibot.data.ensure_btcusdt())")
    p.add_argument(
        "--source",
        choices=("csv", "postgres"),
        default="csv",
        help="csv: --data (default); postgres: the bars the store persisted ([storage] "
        "postgres_dsn, or --bars-dsn), chosen by --symbol, --timeframe, --since, --until",
    )
    p.add_argument("--symbol", default="BTCUSDT", help="with --source postgres (BTCUSDT)")
    p.add_argument("--timeframe", default="1h", help="with --source postgres (1h)")
    p.add_argument("--venue", default=None, help="with --source postgres: when several stored")
    p.add_argument("--since", default=None, help="first bar open time (ISO-8601 or epoch)")
    p.add_argument("--until", default=None, help="bars opening before this time")
    p.add_argument("--bars-dsn", default="", help="PostgreSQL DSN of the stored bars")
    p.add_argument("--horizon", type=int, default=4, help="label horizon in bars (default 4)")
    p.add_argument("--fee-bps", type=float, default=10.0, help="fee per side in bps (default 10)")
    p.add_argument("--folds", type=int, default=5, help="walk-forward folds (default 5)")
    p.add_argument("--trees", type=int, default=200, help="boosting rounds (default 200)")
    p.add_argument("--threads", type=int, default=2, help="LightGBM threads (default 2)")
    p.add_argument("--allow-short", action="store_true", help="trade p <= 0.45 short in metrics")
    p.add_argument("--plots", type=Path, metavar="DIR", help="save PNG plots into DIR")
    p.add_argument(
        "--activate", action="store_true", help="make the new model active if it passes the gate"
    )
    p.add_argument("--force", action="store_true", help="with --activate: despite the gate")
    p.add_argument(
        "--registry",
        type=Path,
        help="registry folder, or with a DSN its local cache (default <data_dir>/models)",
    )
    p.add_argument(
        "--dsn",
        default="",
        help="PostgreSQL DSN of the model registry (default [storage] postgres_dsn)",
    )
    p.add_argument(
        "--pg-schema", default="", help="PostgreSQL schema (default [storage] postgres_schema)"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train, print the metrics table, register (and maybe activate) the model."""
    from levibot.config import convert
    from levibot.ml.registry import ModelRegistry
    from levibot.ml.report import metrics_table, summary
    from levibot.ml.train import TrainConfig, train_model
    from levibot.settings import load_settings

    cfg = convert(
        {
            "horizon": args.horizon,
            "fee_bps": args.fee_bps,
            "folds": args.folds,
            "n_estimators": args.trees,
            "num_threads": args.threads,
            "allow_short": args.allow_short,
        },
        TrainConfig,
        prefix="$.train",
    )
    settings = load_settings(config_path(args))
    root = args.registry or Path(settings.storage.data_dir) / "models"
    dsn = args.dsn or settings.storage.postgres_dsn
    args.pg_schema = args.pg_schema or settings.storage.postgres_schema
    local = ModelRegistry(root)  # the registry itself, or the PostgreSQL registry's cache
    bars = None
    if args.source == "postgres":
        bars = asyncio.run(_stored_bars(args, args.bars_dsn or settings.storage.postgres_dsn))
    elif any((args.since, args.until, args.venue)):
        raise ConfigError("--since, --until and --venue select stored bars: add --source postgres")
    card = train_model(
        args.data,
        bars=bars,
        config=cfg,
        registry=local,
        plots_dir=args.plots,
        progress=not args.no_progress,
    )
    print(summary(card))
    print()
    print(metrics_table(card))
    print()
    # Registered (and activated) last: a refused promotion still leaves the model registered.
    where = asyncio.run(_publish(args, root, dsn, local.path(card.model_id)))
    state = "active" if args.activate else f"activate with: levibot models activate {card.model_id}"
    print(f"registered {card.model_id} in {where} ({state})")
    if args.activate:
        from levibot.commands.models import announce

        announce(settings, str(card.model_id))
    if args.plots:
        print(f"plots in {args.plots}")
    return 0


async def _stored_bars(args: argparse.Namespace, dsn: str) -> Any:
    from levibot.data import parse_timestamp
    from levibot.ml.bars_pg import load_bars_pg

    if not dsn:
        raise ConfigError("--source postgres needs [storage] postgres_dsn or --bars-dsn")
    if args.data:
        raise ConfigError("--data is a CSV: leave it out with --source postgres")
    try:
        since = parse_timestamp(args.since) if args.since else None
        until = parse_timestamp(args.until) if args.until else None
    except ValueError as exc:
        raise ConfigError(f"--since/--until: {exc}") from None
    return await load_bars_pg(
        dsn, symbol=args.symbol, timeframe=args.timeframe, venue=args.venue,
        since_ns=since, until_ns=until,
    )  # fmt: skip


async def _publish(args: argparse.Namespace, root: Path, dsn: str, model_dir: Path) -> str:
    """Register ``model_dir`` in the shared registry (and activate it); return where."""
    from levibot.ml.registries import open_registry, publish

    store = await open_registry(root, dsn=dsn, schema=args.pg_schema)
    try:
        await publish(store, model_dir, activate=args.activate, force=args.force)
        return store.where()
    finally:
        await store.close()
