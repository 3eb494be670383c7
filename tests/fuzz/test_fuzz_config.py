"""Fuzz the configuration: TOML files and LEVIBOT__ overlays give Settings or a ConfigError.

A ConfigError about a document that parsed names the offending path (``$.nats.url``); one
about the file itself (not TOML, not UTF-8, unreadable) names the file.
"""

from __future__ import annotations

import datetime as dt
import math
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec.inspect as mi
import pytest
from hypothesis import given
from hypothesis import strategies as st

from levibot.config import overlay_env
from levibot.errors import ConfigError
from levibot.settings import Settings, load_settings
from tests.fuzz.support import budget

# The sections and fields a document may name. Actor sections are limited to the actors whose
# modules import fast (scoring, gateway and telegram pull in ONNX Runtime, aiohttp, aiogram).
ACTORS = ("feed", "feature", "risk", "order", "store")
CORE = {f.name: f.type for f in mi.type_info(Settings).fields if f.name != "actors"}
# Plugins are imported by name: the fuzzer must not import arbitrary modules.
PLUGINS = st.lists(
    st.sampled_from(["", ".rel", "a..b", "1x", "no_such_module_levibot_fuzz", "json", "x y"]),
    max_size=2,
)


def field_names(section: str) -> list[str]:
    if section in CORE:
        t = CORE[section]
        return [f.name for f in t.fields] if isinstance(t, mi.StructType) else []
    from levibot.registry import resolve

    info = mi.type_info(resolve(section).config_type)
    return [f.name for f in info.fields]


SECTIONS = sorted(CORE) + list(ACTORS)
FIELDS = {s: field_names(s) for s in SECTIONS}


def toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\' or ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_value(v: Any) -> str:
    """Return ``v`` as a TOML value (inline tables for dicts)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return (
            "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
        )
    if isinstance(v, str):
        return toml_string(v)
    if isinstance(v, dt.datetime | dt.date):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{toml_string(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


toml_scalars = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0, -1, 1, 65535, 65536, 2**63 - 1]),
    st.floats(),
    st.text(max_size=15),
    st.sampled_from(["", "0", "nats://127.0.0.1:4222", "1m", "1h", "-1s", "debug", "json"]),
    st.datetimes(),
    st.dates(),
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """A document of known and unknown sections, known and unknown fields, any values."""
    doc: dict[str, Any] = {}
    for section in draw(st.lists(st.sampled_from(SECTIONS) | st.text(max_size=6), max_size=4)):
        names = FIELDS.get(section) or ["x"]
        table: dict[str, Any] = {}
        for name in draw(st.lists(st.sampled_from(names) | st.text(max_size=6), max_size=4)):
            table[name] = draw(PLUGINS if name == "plugins" else toml_values)
        doc[section] = draw(st.just(table) | toml_values) if section not in CORE else table
    return doc


def render(doc: dict[str, Any]) -> str:
    """Return ``doc`` as TOML text: plain values first (after a header, keys are the table's)."""
    lines = [
        f"{toml_string(k)} = {toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)
    ]
    for name, table in doc.items():
        if isinstance(table, dict):
            lines.append(f"[{toml_string(name)}]")
            lines += [f"{toml_string(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def without_nan(v: Any) -> Any:
    """Return ``v`` with NaN replaced by a marker, so that documents compare equal."""
    if isinstance(v, float) and math.isnan(v):
        return "<nan>"
    if isinstance(v, dict):
        return {k: without_nan(x) for k, x in v.items()}
    if isinstance(v, list):
        return [without_nan(x) for x in v]
    return v


def load_or_refuse(path: Path | None, environ: dict[str, str]) -> Settings | None:
    """Load; only ConfigError may be raised, with a path unless the file itself is bad."""
    try:
        return load_settings(path, environ=environ)
    except ConfigError as exc:
        assert str(exc)
        if path is not None and not exc.path:
            assert str(path) in str(exc)  # a file-level error names the file
        else:
            assert exc.path.startswith("$"), exc
        return None


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("fuzz-config") / "config.toml"


@budget(200)
@given(doc=documents())
def test_fuzzed_documents_load_or_fail_with_a_config_error(
    config_file: Path, doc: dict[str, Any]
) -> None:
    text = render(doc)
    config_file.write_text(text, encoding="utf-8")
    assert without_nan(tomllib.loads(text)) == without_nan(doc)  # the TOML says what we meant
    load_or_refuse(config_file, {})


@budget(200)
@given(
    text=st.text(alphabet=st.sampled_from("[]{}=\"'.,#\n\t abn_1-+:eifT"), max_size=120)
    | st.text(max_size=80),
    raw=st.none() | st.binary(max_size=60),
)
def test_fuzzed_text_files_load_or_fail_with_a_config_error(
    config_file: Path, text: str, raw: bytes | None
) -> None:
    config_file.write_bytes(raw if raw is not None else text.encode())
    load_or_refuse(config_file, {})


def env_names() -> st.SearchStrategy[str]:
    known = st.sampled_from(SECTIONS).flatmap(
        lambda s: st.sampled_from([*FIELDS[s], "x"]).map(lambda f: f"{s}__{f}")
    )
    part = known | st.sampled_from(SECTIONS) | st.text(max_size=8)
    return st.lists(part, min_size=0, max_size=3).map(
        lambda parts: "LEVIBOT__" + "__".join(parts).upper()
    ) | st.sampled_from(["LEVIBOT__", "LEVIBOT____", "LEVIBOT__NODE__", "LEVIBOT__NODE____GROUPS"])


env_values = st.one_of(
    st.text(max_size=30),
    toml_values.map(toml_value),
    st.sampled_from(
        ["[" * 3000 + "]" * 3000, "1\nx = 2", '["a", 1]', "{a = 1}", "nan", "-inf", "1e999",
         "2026-01-01", "'''", '"\\u0000"', "true", "[[]]"]
    ),
)  # fmt: skip


@budget(200)
@given(
    environ=st.dictionaries(env_names(), env_values, max_size=4),
    plugins=PLUGINS,
)
def test_fuzzed_environment_overlays_load_or_fail_with_a_config_error(
    environ: dict[str, str], plugins: list[str]
) -> None:
    environ = {k: v for k, v in environ.items() if not k.endswith("PLUGINS")}
    environ["LEVIBOT__NODE__PLUGINS"] = toml_value(plugins)
    load_or_refuse(None, environ)


# -- regressions: inputs the fuzzing found, pinned ----------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[node]\nname = " + b"[" * 3000 + b"]" * 3000, "nested too deeply"),  # RecursionError
        (b'[node]\nname = "\xff\xfe"\n', "not UTF-8"),  # UnicodeDecodeError
    ],
)
def test_regression_unparseable_files_are_config_errors(
    config_file: Path, content: bytes, message: str
) -> None:
    config_file.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_settings(config_file, environ={})


def test_regression_a_directory_as_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):  # was IsADirectoryError
        load_settings(tmp_path, environ={})


def test_regression_deeply_nested_environment_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as err:  # was RecursionError
        load_settings(None, environ={"LEVIBOT__NODE__GROUPS": "[" * 3000 + "]" * 3000})
    assert err.value.path == "$.node.groups"


def test_regression_multi_line_environment_value_is_one_string_not_its_first_line() -> None:
    # "1\nx = 2" parsed as the TOML document {v = 1, x = 2}: the value silently became 1.
    merged = overlay_env({}, {"LEVIBOT__NATS__URL": "1\nx = 2"})
    assert merged == {"nats": {"url": "1\nx = 2"}}


@pytest.mark.parametrize("plugin", ["", ".relative", "a..b"])
def test_regression_plugin_names_importlib_cannot_take_are_config_errors(plugin: str) -> None:
    # importlib raised ValueError ("") or TypeError (relative names), not ImportError.
    with pytest.raises(ConfigError, match="not an absolute module name") as err:
        load_settings(None, environ={"LEVIBOT__NODE__PLUGINS": toml_value([plugin])})
    assert err.value.path == "$.node"


def test_regression_override_of_a_section_that_is_not_a_table_is_a_config_error() -> None:
    # {**5} raised TypeError when LEVIBOT__NODE=5 met a --groups override.
    with pytest.raises(ConfigError) as err:
        load_settings(None, environ={"LEVIBOT__NODE": "5"}, overrides={"node": {"groups": ["x"]}})
    assert err.value.path == "$.node"
