"""How a node identifies itself to NATS and secures the connection: credentials and TLS.

Every connection levibot opens (a node's mirror, ``levibot dlq``, a command sent from the
command line) takes its options from ``connect_options``, so a user, a password and TLS set in
``[nats]`` (``LEVIBOT__NATS__USER``, ``…__PASSWORD``, ``…__TLS_CA_FILE``, …) apply everywhere.
In ``deploy/`` each group has its own NATS user whose permissions allow only the subjects it
publishes and reads (the NATS server's ``nats.conf``); its password comes from a Secret.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from levibot.errors import ConfigError
from levibot.settings import NatsConfig

__all__ = ["connect_options"]


def connect_options(config: NatsConfig) -> dict[str, Any]:
    """Return the ``nats.connect`` keyword arguments for ``config``'s credentials and TLS.

    Raises ``ConfigError`` for a password without a user, a client certificate without its
    key (or the reverse), or a TLS file that cannot be read.
    """
    options: dict[str, Any] = {}
    if config.password and not config.user:
        raise ConfigError("nats.password is set but nats.user is empty")
    if config.user:
        options["user"], options["password"] = config.user, config.password
    if bool(config.tls_cert_file) != bool(config.tls_key_file):
        raise ConfigError("nats.tls_cert_file and nats.tls_key_file go together: set both")
    if config.tls_ca_file or config.tls_cert_file:
        options["tls"] = _tls_context(config)
    return options


def _tls_context(config: NatsConfig) -> ssl.SSLContext:
    """A client context that verifies the server (against ``tls_ca_file`` when set, else the
    system's CAs) and presents the client certificate when one is configured."""
    for name in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
        path = getattr(config, name)
        if path and not Path(path).is_file():
            raise ConfigError(f"nats.{name}: no such file {path!r}")
    try:
        context = ssl.create_default_context(cafile=config.tls_ca_file or None)
        if config.tls_cert_file:
            context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"nats TLS files cannot be loaded: {exc}") from None
    return context
