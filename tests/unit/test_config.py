"""Configuration: TOML + environment, frozen sections, errors that name the field path."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

import tests.pipeline  # noqa: F401  (registers the test actors)
from levibot.cli import main
from levibot.config import overlay_env
from levibot.errors import ConfigError
from levibot.settings import load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_defaults_need_no_file() -> None:
    settings = load_settings(None, environ={})
    assert settings.nats.url == ""  # embedded: no NATS
    assert settings.node.groups[0] == "ingest"


def test_environment_overrides_a_nested_key_with_a_typed_value(tmp_path: Path) -> None:
    path = write(tmp_path, '[nats]\nurl = "nats://a:4222"\n')
    env = {
        "LEVIBOT__NATS__URL": "nats://b:4222",
        "LEVIBOT__NODE__PARTITION_COUNT": "4",
        "LEVIBOT__NODE__GROUPS": '["scoring"]',
        "OTHER": "ignored",
    }
    settings = load_settings(path, environ=env)
    assert settings.nats.url == "nats://b:4222"
    assert settings.node.partition_count == 4
    assert settings.node.groups == ("scoring",)


def test_sections_are_frozen() -> None:
    settings = load_settings(None, environ={})
    with pytest.raises(AttributeError):
        settings.nats.url = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "path", "words"),
    [
        ('[nats]\nurll = "x"\n', "$.nats", "unknown field `urll`"),
        ("[node]\npartition_count = 0\n", "$.node.partition_count", ">= 1"),
        ('[node]\nhttp_port = "eighty"\n', "$.node.http_port", "Expected `int`"),
        ('[log]\nlevel = "loud"\n', "$.log.level", "Invalid enum value 'loud'"),
        ('[nodes]\nname = "x"\n', "$.nodes", "unknown section [nodes]"),
        ('[groups]\nx = ["nope"]\n', "$.groups.x", "unknown actor 'nope'"),
        ("[square]\nfail_on = 3\n", "$.square.fail_on", "Expected `array`"),
        ("[square]\nfial_on = [3]\n", "$.square", "unknown field `fial_on`"),
        ("[node\n", "", "config.toml"),
    ],
    ids=["typo", "range", "type", "enum", "section", "actor", "actor-type", "actor-typo", "toml"],
)
def test_bad_config_fails_with_the_field_path(
    tmp_path: Path, text: str, path: str, words: str
) -> None:
    cfg = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, environ={})
    assert words in str(info.value)
    assert info.value.path == path


def test_environment_typo_in_a_section_is_caught() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ={"LEVIBOT__NATS__UR": "nats://x"})
    assert "unknown field `ur`" in str(info.value)


def test_overlay_refuses_to_descend_into_a_scalar() -> None:
    with pytest.raises(ConfigError):
        overlay_env({"node": {"name": "x"}}, {"LEVIBOT__NODE__NAME__DEEP": "1"})


def test_actor_sections_are_converted_into_their_config_type(tmp_path: Path) -> None:
    cfg = write(tmp_path, "[square]\nfail_on = [3, 4]\n")
    settings = load_settings(cfg, environ={})
    assert settings.actor_config("square").fail_on == (3, 4)
    assert settings.actor_config("counter").count == 100  # defaults when absent
    assert msgspec.structs.asdict(settings.actor_config("square")) == {"fail_on": (3, 4)}


def test_cli_config_check_reports_a_typo_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write(tmp_path, '[nats]\nurll = "x"\n')
    assert main(["config", "check", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "unknown field `urll` - at `$.nats`" in err
    assert "Traceback" not in err


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("levibot ")


def test_a_partition_index_outside_the_count_is_refused() -> None:
    env = {"LEVIBOT__NODE__PARTITION_INDEX": "2", "LEVIBOT__NODE__PARTITION_COUNT": "2"}
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ=env)
    assert "partition_index 2 must be < partition_count 2" in str(info.value)
    assert info.value.path == "$.node"
