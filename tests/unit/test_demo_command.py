"""``levibot demo``'s settings and banner: the one-time sign-in link, only on a loopback gateway."""

from __future__ import annotations

import re
from pathlib import Path

from levibot.commands.demo import banner, demo_settings, scoring_registry
from levibot.settings import load_settings
from levibot.testing import write_config
from sidecars.miniapp import demolink


def test_the_banner_prints_a_one_time_link_whose_digest_only_the_gateway_gets(
    tmp_path: Path,
) -> None:
    cfg = write_config(tmp_path / "c.toml", {"gateway": {"port": 8181}})
    settings, token = demo_settings(str(cfg), tmp_path / "bars.csv", 36_000.0)
    assert token is not None and len(token) >= 40
    gateway = settings.actor_config("gateway")
    assert gateway.demo_token_sha256 == demolink.digest(token)
    assert token not in repr(settings)  # the settings (and anything that logs them) never hold it
    assert settings.node.replay and settings.actor_config("feed").source == "replay"
    text = "\n".join(banner(settings, "lgbm-1", token))
    assert f"Mini App     http://127.0.0.1:8181/app#demo={token}" in text
    assert "one-time sign-in link" in text
    # Each demo draws a new token.
    _, again = demo_settings(str(cfg), tmp_path / "bars.csv", 36_000.0)
    assert again != token


def test_a_gateway_not_on_loopback_gets_no_link(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", {"gateway": {"host": "0.0.0.0", "port": 8181}})
    settings, token = demo_settings(str(cfg), tmp_path / "bars.csv", 36_000.0)
    assert token is None and settings.actor_config("gateway").demo_token_sha256 == ""
    text = "\n".join(banner(settings, None, token))
    assert "#demo=" not in text and "from Telegram" in text
    assert re.search(r"Mini App +http://0\.0\.0\.0:8181/app", text)


def test_a_node_without_the_gateway_prints_no_mini_app(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", {"node": {"groups": ["ingest", "scoring"]}})
    settings, token = demo_settings(str(cfg), tmp_path / "bars.csv", 36_000.0)
    assert token is None
    assert not any("Mini App" in line for line in banner(settings, None, token))


def test_the_demo_finds_its_model_where_scoring_serves_from(tmp_path: Path) -> None:
    data = tmp_path / "var"
    plain = load_settings(None, environ={}, overrides={"storage": {"data_dir": str(data)}})
    assert scoring_registry(plain) == (data / "models", "", "public")
    shared = load_settings(None, environ={}, overrides={
        "storage": {"data_dir": str(data), "postgres_dsn": "postgresql://db/shared"},
    })  # fmt: skip
    assert scoring_registry(shared) == (data / "models", "postgresql://db/shared", "public")
    # Scoring's own section wins over [storage], as it does when the node runs.
    own = load_settings(None, environ={}, overrides={
        "storage": {"data_dir": str(data), "postgres_dsn": "postgresql://db/shared"},
        "scoring": {"registry_dir": str(tmp_path / "reg"), "postgres_dsn": "postgresql://db/ml",
                    "postgres_schema": "ml"},
    })  # fmt: skip
    assert scoring_registry(own) == (tmp_path / "reg", "postgresql://db/ml", "ml")
