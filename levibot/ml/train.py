"""Train a LightGBM signal model honestly: walk-forward, purged, against naive baselines."""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from msgspec import Meta

from levibot.config import Config
from levibot.ml.card import FeatureRange, ModelCard
from levibot.ml.dataset import Bars, Dataset, build_dataset, load_bars, walk_forward
from levibot.ml.evaluate import baselines, signal_metrics
from levibot.ml.export import export_all
from levibot.ml.governance import check_promotion, promotion
from levibot.ml.registry import ModelRegistry, default_registry_dir


class TrainConfig(Config, frozen=True, kw_only=True):
    """How a model is trained. Defaults are small and deterministic."""

    horizon: Annotated[int, Meta(ge=1)] = 4  # bars ahead the label looks
    fee_bps: Annotated[float, Meta(ge=0)] = 10.0  # per side; the label must beat two of them
    folds: Annotated[int, Meta(ge=1)] = 5
    purge: Annotated[int, Meta(ge=0)] = 0  # extra gap; the effective gap is max(purge, horizon)
    test_fraction: Annotated[float, Meta(gt=0, lt=1)] = 0.5
    n_estimators: Annotated[int, Meta(ge=1)] = 200
    num_leaves: Annotated[int, Meta(ge=2)] = 31
    learning_rate: Annotated[float, Meta(gt=0)] = 0.05
    min_data_in_leaf: Annotated[int, Meta(ge=1)] = 100
    feature_fraction: Annotated[float, Meta(gt=0, le=1)] = 0.9
    num_threads: Annotated[int, Meta(ge=1)] = 2
    seed: int = 7
    long_threshold: float = 0.55
    short_threshold: float = 0.45
    allow_short: bool = False
    columns: tuple[str, ...] = ()  # empty: every scale-free column of the schema
    shuffled_baseline: bool = True

    def lgb_params(self) -> dict[str, Any]:
        """Return the LightGBM parameters."""
        return {
            "objective": "binary",
            "num_leaves": self.num_leaves,
            "learning_rate": self.learning_rate,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.num_threads,
            "seed": self.seed,
            "verbose": -1,
        }


def _fit(x: np.ndarray, y: np.ndarray, cfg: TrainConfig, tick: Callable[[], None]) -> Any:
    import lightgbm as lgb

    def callback(_env: Any) -> None:
        tick()

    data = lgb.Dataset(x, y, free_raw_data=True)
    return lgb.train(cfg.lgb_params(), data, cfg.n_estimators, callbacks=[callback])


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("levibot", "lightgbm", "onnx", "onnxmltools", "onnxruntime", "numpy"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _ranges(ds: Dataset) -> dict[str, FeatureRange]:
    q = np.quantile(ds.x, [0.0, 0.01, 0.99, 1.0], axis=0)
    return {
        name: FeatureRange(
            min=float(q[0, j]), q01=float(q[1, j]), q99=float(q[2, j]), max=float(q[3, j])
        )
        for j, name in enumerate(ds.names)
    }


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat()


class TrainResult:
    """What training produced besides the card: out-of-sample predictions for plots."""

    def __init__(self, card: ModelCard, booster: Any, ds: Dataset, oos: dict[str, np.ndarray]):
        self.card = card
        self.booster = booster
        self.dataset = ds
        self.oos = oos


def fit_and_evaluate(
    bars: Bars,
    names: tuple[str, ...],
    schema_hash: str,
    schema_version: str,
    cfg: TrainConfig,
    out_dir: Path,
    *,
    progress: bool = True,
) -> TrainResult:
    """Build the dataset, run the walk-forward folds, fit the final model and export it."""
    from tqdm import tqdm

    ds = build_dataset(
        bars, horizon=cfg.horizon, fee_bps=cfg.fee_bps, names=names, columns=cfg.columns or None
    )
    folds = walk_forward(
        ds.bar,
        folds=cfg.folds,
        horizon=cfg.horizon,
        purge=cfg.purge,
        test_fraction=cfg.test_fraction,
    )
    per_fold = 2 if cfg.shuffled_baseline else 1
    total = (len(folds) * per_fold + 1) * cfg.n_estimators
    bar = tqdm(total=total, desc="train", unit="it", disable=not progress, leave=False)
    thr: dict[str, Any] = {
        "long": cfg.long_threshold,
        "short": cfg.short_threshold,
        "allow_short": cfg.allow_short,
    }
    rng = np.random.default_rng(cfg.seed)
    fold_rows: list[dict[str, Any]] = []
    oos_p, oos_shuf, oos_rows = [], [], []
    try:
        for i, fold in enumerate(folds):
            model = _fit(ds.x[fold.train], ds.y[fold.train], cfg, lambda: bar.update(1))
            t = fold.test
            p = model.predict(ds.x[t].astype(np.float64))
            row: dict[str, Any] = {
                "fold": i,
                "train_rows": len(fold.train),
                "train_end": _iso(int(ds.ts[fold.train[-1]])),
                "test_start": _iso(int(ds.ts[t[0]])),
                "test_end": _iso(int(ds.ts[t[-1]])),
                "model": signal_metrics(
                    ds.y[t], p, ds.fwd[t], ds.bar[t], horizon=ds.horizon, cost=ds.cost, **thr
                ),
                **baselines(ds.y[t], ds.fwd[t], ds.bar[t], horizon=ds.horizon, cost=ds.cost),
            }
            if cfg.shuffled_baseline:
                shuffled = rng.permutation(ds.y[fold.train])
                sm = _fit(ds.x[fold.train], shuffled, cfg, lambda: bar.update(1))
                ps = sm.predict(ds.x[t].astype(np.float64))
                row["shuffled"] = signal_metrics(
                    ds.y[t], ps, ds.fwd[t], ds.bar[t], horizon=ds.horizon, cost=ds.cost, **thr
                )
                oos_shuf.append(ps)
            fold_rows.append(row)
            oos_p.append(p)
            oos_rows.append(t)
        final = _fit(ds.x, ds.y, cfg, lambda: bar.update(1))
    finally:
        bar.close()
    rows = np.concatenate(oos_rows)
    p_all = np.concatenate(oos_p)
    overall: dict[str, Any] = {
        "model": signal_metrics(
            ds.y[rows], p_all, ds.fwd[rows], ds.bar[rows], horizon=ds.horizon, cost=ds.cost, **thr
        ),
        **baselines(ds.y[rows], ds.fwd[rows], ds.bar[rows], horizon=ds.horizon, cost=ds.cost),
    }
    if oos_shuf:
        overall["shuffled"] = signal_metrics(
            ds.y[rows],
            np.concatenate(oos_shuf),
            ds.fwd[rows],
            ds.bar[rows],
            horizon=ds.horizon,
            cost=ds.cost,
            **thr,
        )
    # Parity on every row the model saw or was tested on, and on rows with holes.
    holes = ds.x[: max(1, len(ds.x) // 10)].copy()
    holes[:, ::3] = np.nan  # exercise the missing-value paths of both graphs
    final, export = export_all(final, len(ds.names), np.concatenate([ds.x, holes]), out_dir)
    text = final.model_to_string()
    now = datetime.now(UTC)
    model_id = (
        f"lgbm-h{cfg.horizon}-{now:%Y%m%dT%H%M%S}-{hashlib.sha256(text.encode()).hexdigest()[:6]}"
    )
    card = ModelCard(
        model_id=model_id,
        created_at=now.isoformat(),
        created_at_ns=int(now.timestamp() * 1e9),
        schema_hash=schema_hash,
        schema_version=schema_version,
        features=ds.names,
        feature_indices=ds.indices,
        schema_size=len(names),
        horizon=cfg.horizon,
        fee_bps=cfg.fee_bps,
        thresholds=(cfg.long_threshold, cfg.short_threshold),
        params={
            **cfg.lgb_params(),
            "n_estimators": cfg.n_estimators,
            "folds": cfg.folds,
            "purge": max(cfg.purge, cfg.horizon),
            "allow_short": cfg.allow_short,
        },
        data={
            "source": bars.source,
            "start": _iso(int(bars.ts[0])),
            "end": _iso(int(bars.ts[-1])),
            "bars": len(bars),
            "rows": len(ds.y),
            "label_base_rate": float(ds.y.mean()),
        },
        folds=fold_rows,
        metrics=overall,
        baselines={k: v for k, v in overall.items() if k != "model"},
        libraries=_versions(),
        input_ranges=_ranges(ds),
        export=export,
        promotion=promotion(overall, {k: v for k, v in overall.items() if k != "model"}).as_dict(),
    )
    card.save(out_dir)
    oos = {"rows": rows, "p": p_all}
    return TrainResult(card, final, ds, oos)


def train_model(
    data: Path | str | None = None,
    *,
    config: TrainConfig | None = None,
    registry: ModelRegistry | None = None,
    activate: bool = False,
    force: bool = False,
    plots_dir: Path | str | None = None,
    progress: bool = True,
    bars: Bars | None = None,
) -> ModelCard:
    """Train on a kline CSV (default: the real BTCUSDT 1h data), register and return the card.

    ``registry`` defaults to ``var/models``; ``activate`` makes the new model active if it
    passes the promotion gate (``PromotionRefused`` otherwise, after it is registered), or
    whatever the gate says with ``force``.
    """
    from levibot.features import SCHEMA

    cfg = config or TrainConfig()
    if bars is None:
        if data is None:
            from levibot.data import ensure_btcusdt

            data = ensure_btcusdt()
        bars = load_bars(data)
    registry = registry or ModelRegistry(default_registry_dir())
    with tempfile.TemporaryDirectory(prefix="levibot-train-") as tmp:
        result = fit_and_evaluate(
            bars,
            tuple(SCHEMA.names),
            str(SCHEMA.hash),
            str(SCHEMA.version),
            cfg,
            Path(tmp),
            progress=progress,
        )
        if plots_dir is not None:
            from levibot.ml.plots import save_plots

            save_plots(result, Path(plots_dir))
        card = registry.register(Path(tmp))
    if activate:
        check_promotion(card, force=force)
        registry.activate(card.model_id)
    return card
