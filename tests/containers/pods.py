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
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from levibot.testing import free_port
from tests.unit.deploy_checks import DEPLOY, ROOT, image_env, render

ENV = {**os.environ, "CONTAINERS_CONF": str(ROOT / "containers" / "containers.conf")}
POD_INDEX = "metadata.labels['apps.kubernetes.io/pod-index']"
UID = 10001


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


def workloads() -> dict[str, dict[str, Any]]:
    """Return the dev overlay's rendered objects by (kind, name) (what ``kubectl apply`` gets)."""
    docs = render(DEPLOY / "overlays" / "dev")
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


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
    """One levibot container: ``start``, ``wait_ready``, ``stop`` (SIGTERM), ``kill``, ``logs``."""

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
