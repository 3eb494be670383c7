"""The ``[order.binance]`` settings, the credentials and the live-trading guard.

The key and the secret are never settings: they come from the environment (``api_key_env``,
``api_secret_env``) or from files (``api_key_file``, ``api_secret_file``: a mounted secret),
and are never logged. The base URL chooses the account: the testnet by default; any other
host but the loopback (the tests' stand-in) is the live exchange, which the order actor
refuses unless ``[order] live = true``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from msgspec import Meta

from levibot.config import Config
from levibot.errors import ConfigError

__all__ = ["BinanceConfig", "credentials", "is_live"]

TESTNET_REST = "https://testnet.binance.vision"
TESTNET_WS = "wss://stream.testnet.binance.vision/ws"
_TEST_HOSTS = {"testnet.binance.vision", "stream.testnet.binance.vision"}
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class BinanceConfig(Config, frozen=True, kw_only=True):
    """Binance spot: where, which symbols, how orders are placed and streams kept."""

    base_url: str = TESTNET_REST
    ws_url: str = TESTNET_WS  # the user-data stream is <ws_url>/<listenKey>
    api_key_env: str = "LEVIBOT_BINANCE_API_KEY"
    api_secret_env: str = "LEVIBOT_BINANCE_API_SECRET"
    api_key_file: str = ""
    api_secret_file: str = ""
    symbols: tuple[str, ...] = ()  # whose rules and balances are loaded and reconciled
    recv_window_ms: Annotated[int, Meta(ge=1, le=60_000)] = 5000
    limit_tif: Literal["GTC", "IOC"] = "GTC"  # a limit order's time in force
    keepalive_s: Annotated[float, Meta(gt=0)] = 1800.0  # listen keys live 60 minutes
    reconnect_max_s: Annotated[float, Meta(gt=0)] = 30.0
    max_retries: Annotated[int, Meta(ge=0)] = 3  # per request, on 429/418
    max_wait_s: Annotated[float, Meta(gt=0)] = 60.0  # longest rate-limit wait slept through
    timeout_s: Annotated[float, Meta(gt=0)] = 10.0


def is_live(url: str) -> bool:
    """Return True when ``url`` is the real exchange: not the testnet, not the loopback."""
    host = (urlsplit(url).hostname or "").lower()
    return host not in _TEST_HOSTS and host not in _LOOPBACK


def credentials(cfg: BinanceConfig, environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """Return ``(api_key, api_secret)`` from the environment, else from the secret files."""
    env = os.environ if environ is None else environ

    def one(var: str, path: str, what: str) -> str:
        value = env.get(var, "").strip()
        if not value and path:
            try:
                value = Path(path).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"cannot read the Binance {what} file: {exc.strerror}",
                    f"$.order.binance.{what.replace(' ', '_')}_file",
                ) from None
        if not value:
            raise ConfigError(
                f"the binance venue needs an {what}: set ${var} or [order.binance] "
                f"{what.replace(' ', '_')}_file",
                "$.order.binance",
            )
        return value

    return one(cfg.api_key_env, cfg.api_key_file, "api key"), one(
        cfg.api_secret_env, cfg.api_secret_file, "api secret"
    )
