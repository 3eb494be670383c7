"""Run levibot's pods as podman containers, configured the way ``deploy/`` configures them.

``pod_env`` takes a workload from the rendered manifests and returns the environment its
container gets (image ENV < ConfigMap < the pod's env, secrets from a dict); ``run_args``
turns the workload's security context and volumes into ``podman run`` flags (non-root user,
read-only root filesystem, all capabilities dropped, no privilege escalation, a tmpfs per
emptyDir, a host directory per PersistentVolumeClaim). The test overrides only what this
machine imposes: where NATS, PostgreSQL and Redis are, the namespace, and the ports (every
container shares the host's network, so each needs its own).

podman runs with ``CONTAINERS_CONF=containers/containers.conf`` (runc, no default ulimits),
as ``make image`` does. The image is built (or reused, by the hash of its inputs) by
``scripts/build-image.sh``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from levibot.testing import free_port, wait_until
from tests.unit.deploy_checks import DEPLOY, ROOT, image_env

ENV = {**os.environ, "CONTAINERS_CONF": str(ROOT / "containers" / "containers.conf")}
POD_INDEX = "metadata.labels['apps.kubernetes.io/pod-index']"
UID = 10001
# The settings holding a container's ports (each container gets its own: --network host).
PORT_SETTINGS = ("LEVIBOT__NODE__HTTP_PORT", "LEVIBOT__GATEWAY__PORT")


def podman(*args: str, timeout: float = 120, check: bool = True) -> str:
    """Run ``podman args`` and return its stdout; raise with its stderr when it fails."""
    result = subprocess.run(
        ["podman", *args], env=ENV, capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:3])}: {result.stderr[-2000:]}")
    return result.stdout


def require_podman() -> None:
    """Fail (never skip) with what to install when podman or runc is missing."""
    missing = [tool for tool in ("podman", "runc") if shutil.which(tool) is None]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not installed: the container tests need them "
            "(scripts/setup-test-env.sh installs them as root: apt-get install podman runc "
            "debootstrap)",
            pytrace=False,
        )


def build_image() -> str:
    """Build the CPU image, or reuse the one tagged with its inputs' hash; return its name."""
    result = subprocess.run(
        [str(ROOT / "scripts" / "build-image.sh")],
        env=ENV, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert result.returncode == 0, f"image build failed:\n{result.stderr[-4000:]}"
    return result.stdout.strip().splitlines()[-1]


def kustomize_command() -> list[str]:
    """The real kustomize: a ``kustomize`` binary, else ``kubectl kustomize`` (built in since
    kubectl 1.14; ``patches`` needs kustomize >= 3, i.e. kubectl >= 1.21). Fails when neither."""
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    pytest.fail(
        "neither kustomize nor kubectl is installed: the container tests render deploy/ with it",
        pytrace=False,
    )


def kustomize(directory: Path) -> str:
    """Return ``kustomize build directory`` (the YAML ``kubectl apply -k`` would apply)."""
    result = subprocess.run(
        [*kustomize_command(), str(directory)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"kustomize {directory}: {result.stderr[-2000:]}"
    return result.stdout


def workloads(overlay: str = "overlays/dev") -> dict[str, dict[str, Any]]:
    """Return the overlay's objects as kustomize renders them, by ``Kind/name``."""
    docs = [d for d in yaml.safe_load_all(kustomize(DEPLOY / overlay)) if d]
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        return True
    except OSError:
        return False


def _nats_binary() -> str:
    return shutil.which("nats-server", path=str(Path(sys.executable).parent)) or "nats-server"


#: The NATS users deploy/base/nats.yaml declares: one per group, and the operators' admin.
NATS_USERS = ("ingest", "scoring", "execution", "store", "gateway", "telegram", "admin")


class BusServer:
    """The pods' NATS: nats-server run with the manifests' own ``nats.conf`` (users, subject
    permissions, JetStream), only its listen addresses and store directory moved to this
    machine (a free port, a temporary directory). Each user's password is random, given to
    the server as the Secret gives it (environment) and to the pods through ``secrets``."""

    def __init__(
        self, objects: dict[str, dict[str, Any]], tmp: Path, host: str = "127.0.0.1"
    ) -> None:
        self.port, self.http_port = free_port(), free_port()
        self.passwords = {user: secrets.token_hex(12) for user in NATS_USERS}
        text = objects["ConfigMap/nats-config"]["data"]["nats.conf"]
        moved = {
            "listen: 0.0.0.0:4222": f"listen: {host}:{self.port}",
            "http: 0.0.0.0:8222": f"http: 127.0.0.1:{self.http_port}",
            "store_dir: /data": f'store_dir: "{tmp / "js"}"',
        }
        for old, new in moved.items():
            assert text.count(old) == 1, f"nats.conf no longer has {old!r}"
            text = text.replace(old, new)
        self.conf = tmp / "nats.conf"
        self.conf.write_text(text)
        self.log = tmp / "nats.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {"POD_NAME": "nats-0"}
        env |= {f"{user.upper()}_PASSWORD": pw for user, pw in self.passwords.items()}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [_nats_binary(), "-c", str(self.conf)], env=env, stdout=log, stderr=log
            )
        wait_until(lambda: _listening(self.port) or self.proc.poll() is not None, 15, "nats")
        assert self.proc.poll() is None, f"nats-server exited:\n{self.log.read_text()[-2000:]}"

    def secrets(self) -> dict[str, str]:
        """The Secret keys the pods' NATS passwords come from (deploy/overlays/dev)."""
        return {f"nats-{user}-password": pw for user, pw in self.passwords.items()}

    def violations(self) -> list[str]:
        """The server's log lines about refused publishes and subscriptions (nats-server
        2.10+: ``... "$G/user:NAME" - Publish Violation - Subject "SUBJECT"``)."""
        lines = self.log.read_text().splitlines()
        return [
            line
            for line in lines
            if "Publish Violation" in line or "Subscription Violation" in line
        ]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


class RedisServer:
    """A redis-server on a free port that requires a password, as the manifests' Redis does."""

    def __init__(self, tmp: Path, host: str = "127.0.0.1") -> None:
        self.port, self.password = free_port(), secrets.token_hex(12)
        self.tmp, self.host = tmp, host
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server not installed (scripts/setup-test-env.sh installs it)")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", self.host, "--requirepass",
             self.password, "--save", "", "--appendonly", "no", "--dir", str(self.tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(lambda: _listening(self.port), 15, "redis-server")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


def pod_env(
    objects: dict[str, dict[str, Any]], workload: str, secrets: dict[str, str], index: int = 0
) -> dict[str, str]:
    """Return the LEVIBOT__ environment the manifests give pod ``index`` of ``workload``."""
    doc = objects[workload]
    (container,) = doc["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef") or source.get("secretRef")
        kind = "ConfigMap" if "configMapRef" in source else "Secret"
        obj = objects[f"{kind}/{ref['name']}"]
        values = {**obj.get("data", {}), **obj.get("stringData", {})}
        env.update({k: str(v) for k, v in values.items()})
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
            continue
        source = var["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            if ref["key"] in secrets:
                env[var["name"]] = secrets[ref["key"]]
            elif not ref.get("optional"):
                raise AssertionError(f"{workload} needs secret key {ref['key']!r}")
        elif source["fieldRef"]["fieldPath"] == POD_INDEX:
            env[var["name"]] = str(index)
        elif source["fieldRef"]["fieldPath"] == "metadata.name":
            env[var["name"]] = f"{doc['metadata']['name']}-{index}"
    return env


def run_args(objects: dict[str, dict[str, Any]], workload: str, data: Path) -> list[str]:
    """Return the ``podman run`` flags for the workload's security context and volumes.

    emptyDir → tmpfs owned by the pod's user (fsGroup); a PersistentVolumeClaim → a host
    directory under ``data`` owned by that user, so it outlives the container as a PVC does.
    """
    spec = objects[workload]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    pod_sc, sc = spec.get("securityContext", {}), container.get("securityContext", {})
    args = ["--user", f"{pod_sc['runAsUser']}:{pod_sc['runAsGroup']}"]
    if sc.get("readOnlyRootFilesystem"):
        # Only the declared volumes are writable: no podman-added tmpfs on /tmp, /run.
        args += ["--read-only", "--read-only-tmpfs=false"]
    if sc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    args += [f"--cap-drop={cap}" for cap in sc.get("capabilities", {}).get("drop", [])]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    templates = objects[workload]["spec"].get("volumeClaimTemplates", [])
    claims = {c["metadata"]["name"] for c in templates}
    for mount in container.get("volumeMounts", []):
        name, path = mount["name"], mount["mountPath"]
        if name in claims:
            host = data / name
            host.mkdir(parents=True, exist_ok=True)
            os.chown(host, pod_sc["runAsUser"], pod_sc.get("fsGroup", pod_sc["runAsGroup"]))
            args += ["--volume", f"{host}:{path}:rw"]
        elif "emptyDir" in volumes[name]:
            args += ["--mount", f"type=tmpfs,destination={path},chown=true"]
        else:
            raise AssertionError(f"{workload}: volume {name} is neither emptyDir nor a claim")
    return args


class Container:
    """One levibot container: ``start``, ``wait_ready`` (both: ``start_ready``), ``stop``
    (SIGTERM), ``kill``, ``logs``."""

    def __init__(
        self, name: str, image: str, env: dict[str, str], args: list[str], *, port: int
    ) -> None:
        self.name, self.image, self.env, self.args, self.port = name, image, env, args, port
        self.started = 0.0

    def start(self) -> None:
        podman("rm", "-f", self.name, check=False)
        env = [f"--env={k}={v}" for k, v in self.env.items()]
        self.started = time.monotonic()
        podman(
            "run", "-d", "--name", self.name, "--network", "host", "--no-healthcheck",
            "--label", "levibot-test=1", *self.args, *env, self.image,
        )  # fmt: skip

    def running(self) -> bool:
        state = podman("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return state.strip() == "true"

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Poll the node's /ready; return the seconds since start. Fail if it exits first."""
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if get(self.port, "/ready") == 200:
                return time.monotonic() - self.started
            if not self.running():
                raise AssertionError(f"{self.name} exited before ready:\n{self.logs()}")
            time.sleep(0.2)
        raise AssertionError(f"{self.name} not ready in {timeout} s:\n{self.logs()}")

    def start_ready(self, timeout: float = 180.0) -> float:
        """``start`` and ``wait_ready``. A port chosen for the container can be taken before it
        binds it (any process's outgoing connection may get it, on this shared machine): then
        new free ports are chosen and the container started again, at most three times."""
        for _ in range(3):
            self.start()
            try:
                return self.wait_ready(timeout)
            except AssertionError as exc:
                if "address already in use" not in str(exc):
                    raise
            for key in PORT_SETTINGS:
                if key in self.env:
                    self.env[key] = str(free_port())
            self.port = int(self.env["LEVIBOT__NODE__HTTP_PORT"])
        raise AssertionError(f"{self.name}: its ports were taken three times")

    def wait_exit(self, timeout: float) -> int:
        """Wait until the container exits; return its exit code."""
        out = podman("wait", self.name, timeout=timeout)
        return int(out.strip().splitlines()[-1])

    def stop(self, grace: int = 30) -> int:
        """SIGTERM, then SIGKILL after ``grace`` seconds (as the kubelet does); the exit code."""
        podman("stop", "-t", str(grace), self.name, timeout=grace + 30)
        return int(podman("inspect", "--format", "{{.State.ExitCode}}", self.name).strip())

    def kill(self) -> None:
        podman("kill", "-s", "KILL", self.name, check=False)

    def remove(self) -> None:
        podman("rm", "-f", "-t", "0", self.name, check=False, timeout=60)

    def exec(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["podman", "exec", self.name, *cmd], env=ENV, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip

    def inspect(self) -> dict[str, Any]:
        info: list[dict[str, Any]] = json.loads(podman("inspect", self.name))
        return info[0]

    def logs(self, tail: int = 40) -> str:
        result = subprocess.run(
            ["podman", "logs", "--tail", str(tail), self.name],
            env=ENV, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        return result.stdout + result.stderr


def get(port: int, path: str, timeout: float = 3.0) -> int:
    """Return the HTTP status of GET 127.0.0.1:port/path (0: no answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def node_ports(env: dict[str, str]) -> int:
    """Give the container its own node port (host network); return it."""
    port = free_port()
    env["LEVIBOT__NODE__HTTP_PORT"] = str(port)
    return port


def the_image_env() -> dict[str, str]:
    """The image's ENV, as the Containerfile declares it (for comparison with the pods)."""
    return image_env(ROOT / "Containerfile")
