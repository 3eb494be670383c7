"""Configuration primitives: the frozen ``Config`` base and TOML + environment loading.

``config.toml`` → environment overlay (``LEVIBOT__SECTION__KEY=value``) → ``msgspec.convert``
into frozen Structs that forbid unknown fields, so a typo fails at start with its path.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from levibot.errors import ConfigError, ConfigFileError

ENV_PREFIX = "LEVIBOT__"

T = TypeVar("T")


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every configuration section: immutable, keyword-only, no unknown keys."""


def read_toml(path: str | Path) -> dict[str, Any]:
    """Return the TOML document at ``path``; a syntax error names the file and line."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigFileError(f"config file not found: {path}") from None
    except OSError as exc:  # a directory, no permission, an I/O error
        raise ConfigFileError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:  # tomllib decodes the whole file before parsing it
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise ConfigError(f"{path}: arrays or tables nested too deeply") from None


def _parse_env_value(text: str) -> Any:
    # A value is read as a TOML value when it parses as one (numbers, booleans, arrays),
    # otherwise as a plain string, so LEVIBOT__NATS__URL=nats://x works without quotes. A
    # value with a newline that parses as several keys ("1\nx = 2") is a string too, never
    # silently cut to its first line.
    try:
        doc = tomllib.loads(f"v = {text}")
    except tomllib.TOMLDecodeError:
        return text
    return doc["v"] if len(doc) == 1 else text


def overlay_env(raw: dict[str, Any], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Return ``raw`` with ``LEVIBOT__A__B=value`` variables applied as ``raw[a][b] = value``."""
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = dict(raw)
    for name, text in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX) :].split("__") if k]
        if not keys:
            continue
        node = merged
        for depth, key in enumerate(keys[:-1]):
            child = node.get(key)
            if not isinstance(child, dict):
                if child is not None:
                    path = ".".join(keys[: depth + 1])
                    raise ConfigError(f"{name}: $.{path} is not a table", path=f"$.{path}")
                child = {}
            node[key] = child = dict(child)
            node = child
        try:
            node[keys[-1]] = _parse_env_value(text)
        except RecursionError:  # tomllib parses nested arrays recursively
            path = "$." + ".".join(keys)
            message = f"{name}: arrays nested too deeply - at `{path}`"
            raise ConfigError(message, path=path) from None
    return merged


def convert(raw: Any, type_: type[T], *, prefix: str = "$") -> T:
    """Convert ``raw`` into ``type_``; the error message names the field path."""
    try:
        return msgspec.convert(raw, type_, strict=False)
    except msgspec.ValidationError as exc:
        text = str(exc)
        path = text.rsplit(" - at `", 1)[1].rstrip("`") if " - at `" in text else "$"
        if prefix != "$":
            path = prefix + path[1:]
            text = text.rsplit(" - at `", 1)[0] + f" - at `{path}`"
        raise ConfigError(f"invalid configuration: {text}", path=path) from None
