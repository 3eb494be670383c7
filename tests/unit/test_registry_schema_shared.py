"""The model registry's PostgreSQL schema is one setting, [storage] postgres_schema, that every
process takes: scoring, the gateway (its /models, /predict, /retrain) and the bot."""

from __future__ import annotations

import pytest

from levibot.actors.scoring import ScoringConfig
from levibot.errors import ConfigError
from levibot.settings import StorageConfig, load_settings, with_storage
from sidecars.gateway.actor import GatewayConfig
from sidecars.telegram.actor import TelegramConfig


@pytest.mark.parametrize("config_type", [ScoringConfig, GatewayConfig, TelegramConfig])
def test_every_process_takes_the_storage_schema(config_type: type) -> None:
    storage = StorageConfig(postgres_schema="models_v2")
    assert with_storage(config_type(), storage).postgres_schema == "models_v2"
    assert with_storage(config_type(), None).postgres_schema == "public"
    own = config_type(postgres_schema="mine")  # a section's own setting still wins
    assert with_storage(own, storage).postgres_schema == "mine"


def test_the_schema_comes_from_the_environment_and_a_bad_name_is_refused() -> None:
    env = {"LEVIBOT__STORAGE__POSTGRES_SCHEMA": "models_v2"}
    assert load_settings(environ=env).storage.postgres_schema == "models_v2"
    with pytest.raises(ConfigError, match="postgres_schema"):
        load_settings(environ={"LEVIBOT__STORAGE__POSTGRES_SCHEMA": "x; drop table y"})
