"""``levibot train``: train a model on kline data, print its metrics, register it."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from levibot.commands.run import add_common, config_path


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``train`` sub-command."""
    p = sub.add_parser(
        "train",
        help="train a LightGBM signal model (walk-forward, purged) and register it",
        description="Train on kline CSV data (default: the real BTCUSDT 1h klines), print "
        "out-of-sample metrics beside naive baselines, export ONNX and register the model.",
    )
    p.add_argument("--data", type=Path, help="kline CSV (default: levibot.data.ensure_btcusdt())")
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
    p.add_argument("--registry", type=Path, help="registry folder (default <data_dir>/models)")
    p.add_argument("--dsn", default="", help="PostgreSQL DSN: also store the model there")
    p.add_argument("--pg-schema", default="public", help="PostgreSQL schema (default public)")
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
    data_dir = Path(load_settings(config_path(args)).storage.data_dir)
    registry = ModelRegistry(args.registry or data_dir / "models")
    card = train_model(
        args.data,
        config=cfg,
        registry=registry,
        activate=args.activate,
        force=args.force,
        plots_dir=args.plots,
        progress=not args.no_progress,
    )
    if args.dsn:
        asyncio.run(_store_pg(args, registry.path(card.model_id)))
    print(summary(card))
    print()
    print(metrics_table(card))
    print()
    where = registry.path(card.model_id)
    state = "active" if args.activate else f"activate with: levibot models activate {card.model_id}"
    print(f"registered {card.model_id} in {where} ({state})")
    if args.plots:
        print(f"plots in {args.plots}")
    return 0


async def _store_pg(args: argparse.Namespace, model_dir: Path) -> None:
    from levibot.ml.registry_pg import PgModelRegistry

    async with PgModelRegistry(args.dsn, model_dir.parent, schema=args.pg_schema) as reg:
        card = await reg.register(model_dir)
        if args.activate:
            await reg.activate(card.model_id)
