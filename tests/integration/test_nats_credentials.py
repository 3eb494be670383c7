"""A node's NATS credentials and TLS (``levibot.bus.connect``) against a real nats-server.

A private server on a free port with a user and password and a TLS certificate signed by a
CA made here with ``openssl``: the right password over verified TLS connects; a wrong password,
no password, or no CA to verify the server is refused; a half-done configuration is a clear
``ConfigError`` before any connection is tried.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import nats
import pytest

from levibot.bus.connect import connect_options
from levibot.errors import ConfigError
from levibot.settings import NatsConfig
from levibot.testing import NatsServer

pytestmark = [pytest.mark.integration]

PASSWORD = "s3cret-for-the-test"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certs(d: Path) -> None:
    """A CA, and a server certificate for 127.0.0.1 signed by it.

    Both carry what RFC 5280 asks of them, as Python 3.13's default context checks
    (``VERIFY_X509_STRICT``): the CA a critical key usage allowing certificate signing (3.13
    refuses a CA without one), critical CA basic constraints and a key identifier; the server
    certificate the identifier of the key that signed it. Named here, not left to the defaults
    of the local ``openssl.cnf``.
    """
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-addext", "subjectKeyIdentifier=hash",
             "-addext", "authorityKeyIdentifier=keyid:always",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=nats", "-keyout",
             "server.key", "-out", "server.csr", cwd=d)  # fmt: skip
    (d / "san.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid:always\n"
    )
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "1", "-extfile", "san.ext", "-out", "server.pem",
             cwd=d)  # fmt: skip


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """A nats-server requiring user ``node`` with a password, over TLS; yields its URL."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the test's certificates", pytrace=False)
    make_certs(tmp_path)
    server = NatsServer(
        tmp_path,
        f'tls {{ cert_file: "{tmp_path}/server.pem", key_file: "{tmp_path}/server.key" }}\n'
        f'authorization {{ users: [{{user: node, password: "{PASSWORD}"}}] }}\n',
    )
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def try_connect(config: NatsConfig) -> str:
    """Connect with ``config``'s options and round-trip a request; 'ok' or the error."""

    async def go() -> str:
        try:
            nc = await nats.connect(
                config.url, connect_timeout=2, allow_reconnect=False, max_reconnect_attempts=0,
                **connect_options(config),
            )  # fmt: skip
        except Exception as exc:
            return repr(exc)
        try:
            await nc.flush(timeout=2)
            return "ok" if nc.is_connected else "not connected"
        finally:
            await nc.close()

    return anyio.run(go)


def test_the_right_password_over_verified_tls_connects(server: str, tmp_path: Path) -> None:
    ca = str(tmp_path / "ca.pem")
    good = NatsConfig(url=server, user="node", password=PASSWORD, tls_ca_file=ca)
    assert try_connect(good) == "ok"
    # Refused: a wrong password, none at all, and a server the client cannot verify.
    wrong = NatsConfig(url=server, user="node", password="wrong", tls_ca_file=ca)
    assert "uthorization" in try_connect(wrong)
    assert try_connect(NatsConfig(url=server, tls_ca_file=ca)) != "ok"
    unverified = NatsConfig(url=server, user="node", password=PASSWORD, tls_ca_file="")
    assert try_connect(unverified) != "ok"


def test_a_half_done_configuration_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="user is empty"):
        connect_options(NatsConfig(password="x"))
    with pytest.raises(ConfigError, match="go together"):
        connect_options(NatsConfig(tls_cert_file=str(tmp_path / "c.pem")))
    with pytest.raises(ConfigError, match="no such file"):
        connect_options(NatsConfig(tls_ca_file=str(tmp_path / "missing.pem")))
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="cannot be loaded"):
        connect_options(NatsConfig(tls_ca_file=str(tmp_path / "bad.pem")))
    assert connect_options(NatsConfig()) == {}
    assert connect_options(NatsConfig(user="u", password="p")) == {"user": "u", "password": "p"}


def try_link(config: NatsConfig) -> str:
    """``try_connect`` for the lean core connection (``[nats] core_link``)."""
    from levibot.bus._link import CoreLink

    async def go() -> str:
        options = connect_options(config)
        link = CoreLink(
            config.url, user=options.get("user", ""), password=options.get("password", ""),
            tls=options.get("tls"), connect_timeout_s=2,
        )  # fmt: skip
        try:
            await link.connect()
        except Exception as exc:
            assert not link._tasks, "a refused connect left a task behind"
            return repr(exc)
        try:
            await link.flush(2)
            return "ok" if link.connected else "not connected"
        finally:
            await link.close()

    return anyio.run(go)


def test_the_core_link_takes_the_same_credentials_and_tls(server: str, tmp_path: Path) -> None:
    ca = str(tmp_path / "ca.pem")
    assert try_link(NatsConfig(url=server, user="node", password=PASSWORD, tls_ca_file=ca)) == "ok"
    wrong = NatsConfig(url=server, user="node", password="wrong", tls_ca_file=ca)
    assert "uthorization" in try_link(wrong)
    assert try_link(NatsConfig(url=server, tls_ca_file=ca)) != "ok"
    unverified = NatsConfig(url=server, user="node", password=PASSWORD, tls_ca_file="")
    assert "CERTIFICATE_VERIFY_FAILED" in try_link(unverified)
