"""The node's settings: core sections typed here, one section per actor validated by the actor.

A top-level table is either a core section below or the name of a registered actor (``[risk]``),
validated against that actor's ``config_type``; anything else is a typo and fails with its path.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from levibot.config import Config, convert, overlay_env, read_toml
from levibot.errors import ConfigError
from levibot.registry import REGISTRY, resolve

PositiveInt = Annotated[int, Meta(ge=1)]
PositiveFloat = Annotated[float, Meta(gt=0)]

DEFAULT_GROUPS: dict[str, tuple[str, ...]] = {
    "ingest": ("feed", "feature"),
    "scoring": ("scoring",),
    "execution": ("risk", "order"),
    "store": ("store",),
    "gateway": ("gateway",),
    "telegram": ("telegram",),
}


class NodeConfig(Config, frozen=True, kw_only=True):
    """This process: which groups it runs, which partition it is, its HTTP endpoint."""

    name: str = "levibot"
    groups: tuple[str, ...] = ("ingest", "scoring", "execution", "store", "gateway")
    partition_index: Annotated[int, Meta(ge=0)] = 0
    partition_count: PositiveInt = 1
    http_host: str = "127.0.0.1"
    http_port: Annotated[int, Meta(ge=-1, le=65535)] = 9100  # 0: any free port; -1: off
    drain_timeout_s: PositiveFloat = 15.0
    stop_when_sources_done: bool = False
    replay: bool = False  # event-time clock, lossless mailboxes: bit-for-bit reproducible
    plugins: tuple[str, ...] = ()  # modules imported at start; they may register actors
    # What the event loop does with nothing to run while the node is live: "sleep" (block in
    # the poller, the default) or "spin" (never block: lower, steadier latency for a core).
    idle: Literal["sleep", "spin"] = "sleep"
    # Once started (live, not replay), move every object made so far (modules, models, history)
    # out of the garbage collector's sight (gc.freeze): a full collection then scans only what
    # the message flow allocated instead of the whole heap (in the split bench: 10 ms of CPU at
    # most, was 51). Unfrozen when the node stops.
    gc_freeze: bool = True

    def __post_init__(self) -> None:
        if self.partition_index >= self.partition_count:
            raise ValueError(
                f"partition_index {self.partition_index} must be < partition_count "
                f"{self.partition_count}"
            )
        # importlib raises ValueError or TypeError (not ImportError) for "" and relative names.
        for module in self.plugins:
            if not all(part.isidentifier() for part in module.split(".")):
                raise ValueError(f"plugin {module!r} is not an absolute module name")


class NatsConfig(Config, frozen=True, kw_only=True):
    """The NATS mirror. An empty ``url`` means no NATS: everything stays in this process."""

    url: str = ""
    namespace: str = ""  # prefixes every subject (``<namespace>.lb...``): isolates deployments
    stream: str = "LEVIBOT"
    durable_prefix: str = "lb"
    egress_queue: PositiveInt = 65_536
    egress_batch: PositiveInt = 512
    egress_yield: Annotated[int, Meta(ge=0)] = 8  # loop turns the egress waits for after a wakeup
    connect_timeout_s: PositiveFloat = 5.0
    ack_wait_s: PositiveFloat = 30.0
    duplicate_window_s: PositiveFloat = 600.0
    fetch_batch: PositiveInt = 256
    # Replay split across processes: how many nodes a replay source waits for after each event
    # (itself included) so that every process handles events in order. 0: none (live).
    settle_nodes: Annotated[int, Meta(ge=0)] = 0
    # Every type over JetStream (deduplicated, acked after handling), not only the durable ones:
    # a replay split across processes then survives a kill -9 of any process. Slower.
    durable_all: bool = False
    # Which core (non-durable) types go out on NATS. "consumed": those some actor outside this
    # node consumes, as [groups] describes the deployment (the actors of the groups this node
    # does not run; this node's partitioned ones when partition_count > 1); every pod runs the
    # same [groups] with its own [node] groups. "all": every core type, for clients outside
    # levibot that subscribe to core subjects. Durable types always go out.
    mirror: Literal["consumed", "all"] = "consumed"
    # Core (market-data) traffic, JetStream publishes and the durable consumers' deliveries
    # and acks on levibot's lean NATS connection (levibot.bus._link), a second connection
    # beside nats-py's, which keeps JetStream's API and the rest: a cheaper, faster hop.
    # false: everything on nats-py. Not used while [tracing] is on (trace contexts
    # ride nats-py's callbacks), nor in a split replay (settle_nodes > 1: its settle rounds
    # rely on one connection's order).
    core_link: bool = True
    # Durable egress lingers this long after a quiet spell before it publishes, and the acks of
    # what the node took from its durable consumers go out on the same beat: what comes
    # meanwhile shares one write, one ack round and one read (each costs tens of µs of a VM's
    # CPU). Durable messages (orders, fills, commands, alerts) reach this node's own actors at
    # once; the linger delays only their copies elsewhere (store, gateway). 0: publish on the
    # next loop turns. Not used in a split replay (settle_nodes > 1), which settles every event.
    durable_linger_s: Annotated[float, Meta(ge=0, le=1)] = 0.005
    # A durable message whose handler raises is redelivered after redeliver_delay_s (doubling,
    # at most 30 s); a failure on its max_deliver-th delivery moves it to the dead-letter stream.
    max_deliver: PositiveInt = 5
    redeliver_delay_s: PositiveFloat = 1.0
    dlq_stream: str = ""  # default: derived from the namespace (<NAMESPACE>_DLQ, LEVIBOT_DLQ)
    # A durable publish the server does not accept is retried this long (or this many times)
    # and then spilled to <data_dir>/spill, re-sent at the next start or by `levibot dlq resend`.
    publish_retry_s: PositiveFloat = 30.0
    publish_attempts: PositiveInt = 30
    # Who this node is to the server (deploy/: one NATS user per group, the password from a
    # Secret). Empty: no credentials (or those in the URL).
    user: str = ""
    password: str = ""
    # TLS to the server (also implied by a tls:// URL): a CA bundle to verify it, and a client
    # certificate and key when the server asks for one (mutual TLS). See levibot.bus.connect.
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""


class LogConfig(Config, frozen=True, kw_only=True):
    """Structured logs: JSON, or a console renderer on a terminal (``auto``)."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class StorageConfig(Config, frozen=True, kw_only=True):
    """Where state lives: a local data dir always; PostgreSQL and Redis when configured."""

    data_dir: str = "var"
    postgres_dsn: str = ""
    # The PostgreSQL schema of the model registry, the same for every process.
    postgres_schema: Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")] = "public"
    redis_url: str = ""


class TracingConfig(Config, frozen=True, kw_only=True):
    """OpenTelemetry tracing (``levibot.tracing``): off by default, and then free.

    ``exporter``: ``otlp`` (OTLP over HTTP/protobuf to ``endpoint``), ``console`` (stderr),
    ``file`` (a JSON line per finished span, appended to ``path``) or ``memory`` (in process).
    """

    enabled: bool = False
    exporter: Literal["otlp", "console", "file", "memory"] = "otlp"
    endpoint: str = "http://127.0.0.1:4318/v1/traces"
    path: str = ""
    service_name: str = ""  # the resource's service.name; default: [node] name
    sample_ratio: Annotated[float, Meta(ge=0.0, le=1.0)] = 1.0  # of new traces; parents decide
    # Finished spans waiting for the exporter's thread (otlp, console, file); past it the newest
    # are dropped (OpenTelemetry logs "Queue full"), never the messages.
    max_queue: PositiveInt = 2048

    def __post_init__(self) -> None:
        if self.exporter == "file" and not self.path:
            raise ValueError('exporter = "file" needs a path')
        if self.exporter == "otlp" and not self.endpoint.startswith(("http://", "https://")):
            raise ValueError(f"endpoint {self.endpoint!r} is not an http:// or https:// URL")


class Settings(Config, frozen=True, kw_only=True):
    """Everything a node is configured with."""

    node: NodeConfig = NodeConfig()
    nats: NatsConfig = NatsConfig()
    log: LogConfig = LogConfig()
    storage: StorageConfig = StorageConfig()
    tracing: TracingConfig = TracingConfig()
    groups: dict[str, tuple[str, ...]] = msgspec.field(default_factory=lambda: dict(DEFAULT_GROUPS))
    actors: dict[str, Any] = msgspec.field(default_factory=dict)  # validated actor sections

    def actor_config(self, name: str) -> Any:
        """Return the validated config of actor ``name`` (its defaults when unset)."""
        cfg = self.actors.get(name)
        if cfg is None:
            cfg = resolve(name).config_type()
        return cfg

    @property
    def postgres_dsn(self) -> str:
        """Return the node's PostgreSQL DSN: ``[storage]``'s, else the store's ("" for none)."""
        return self.storage.postgres_dsn or getattr(self.actor_config("store"), "postgres_dsn", "")

    def actors_of(self, groups: tuple[str, ...]) -> list[str]:
        """Return the actor names of ``groups``, in order, each once."""
        names: list[str] = []
        for group in groups:
            if group not in self.groups:
                known = ", ".join(sorted(self.groups))
                raise ConfigError(f"unknown group {group!r}; groups are: {known}", "$.node.groups")
            names.extend(a for a in self.groups[group] if a not in names)
        return names


_CORE = {"node", "nats", "log", "storage", "tracing", "groups"}


def storage_from_env(environ: Mapping[str, str] | None = None) -> StorageConfig:
    """Return ``[storage]`` as the environment sets it (``LEVIBOT__STORAGE__…``), validated.

    For helpers outside a node (the data download) that have no settings to hand but must
    put state where a node would.
    """
    raw = overlay_env({}, environ).get("storage", {})
    return convert(raw, StorageConfig, prefix="$.storage")


def load_settings(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Load ``path`` (or defaults), apply the environment and ``overrides``, validate it all."""
    raw = read_toml(path) if path is not None else {}
    raw = overlay_env(raw, environ)
    for section, values in (overrides or {}).items():
        current = raw.get(section, {})
        if not isinstance(current, dict):
            raise ConfigError(f"invalid configuration: [{section}] is not a table", f"$.{section}")
        raw[section] = {**current, **values}
    core = {k: v for k, v in raw.items() if k in _CORE}
    settings = convert(core, Settings)
    for module in settings.node.plugins:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"cannot import plugin {module!r}: {exc}", "$.node.plugins") from None
    for group, members in settings.groups.items():
        for name in members:
            if name not in REGISTRY:
                known = ", ".join(sorted(REGISTRY))
                raise ConfigError(
                    f"group {group!r} names unknown actor {name!r}; known actors: {known}",
                    f"$.groups.{group}",
                )
    actors: dict[str, Any] = {}
    for name, section in raw.items():
        if name in _CORE:
            continue
        if name not in REGISTRY:
            known = ", ".join(sorted(_CORE | set(REGISTRY)))
            raise ConfigError(f"unknown section [{name}]; known sections: {known}", f"$.{name}")
        actors[name] = convert(section, resolve(name).config_type, prefix=f"$.{name}")
    _share(actors)
    return msgspec.structs.replace(settings, actors=actors)


#: One value per concept: the section that owns a setting, and the sections that read it.
#: Risk sizes with the fee and the quantity step of the venue the order actor trades on; a
#: reader leaves the field unset (None) and gets the owner's, and may not set another value.
SHARED: dict[str, tuple[str, tuple[str, ...]]] = {
    "fee_bps": ("order", ("risk",)),
    "qty_step": ("order", ("risk",)),
}


def _share(actors: dict[str, Any]) -> None:
    for field, (owner, readers) in SHARED.items():
        if owner not in REGISTRY:
            continue
        value = getattr(actors.get(owner) or resolve(owner).config_type(), field)
        for reader in readers:
            if reader not in REGISTRY:
                continue
            cfg = actors.get(reader) or resolve(reader).config_type()
            mine = getattr(cfg, field)
            if mine is None:
                actors[reader] = msgspec.structs.replace(cfg, **{field: value})
            elif mine != value:
                raise ConfigError(
                    f"[{reader}] {field} = {mine!r} differs from [{owner}] {field} = {value!r}: "
                    f"set it once, in [{owner}]",
                    f"$.{reader}.{field}",
                )


_SHARED_SERVICES = ("postgres_dsn", "postgres_schema", "redis_url")


def with_storage(config: Any, storage: StorageConfig | None, **paths: str) -> Any:
    """Return an actor's ``config`` with its empty storage fields taken from ``[storage]``.

    ``postgres_dsn`` and ``redis_url``, when the actor has them and leaves them empty, come from
    the shared section; each of ``paths`` (a field name → a sub-directory of ``data_dir``, ""
    for ``data_dir`` itself) likewise. Outside a node (``storage`` None) the defaults apply, so
    there is one place that says where state lives.
    """
    storage = storage if storage is not None else StorageConfig()
    updates: dict[str, Any] = {}
    for name in _SHARED_SERVICES:
        if hasattr(config, name) and not getattr(config, name) and getattr(storage, name):
            updates[name] = getattr(storage, name)
    for name, sub in paths.items():
        if not getattr(config, name):
            updates[name] = str(Path(storage.data_dir) / sub) if sub else storage.data_dir
    return msgspec.structs.replace(config, **updates) if updates else config
