"""The rendered manifests, run by ``podman kube play``: as far as podman supports their kinds.

``kustomize`` renders ``deploy/overlays/dev``; podman 4.x plays Pods, Deployments,
PersistentVolumeClaims, ConfigMaps and Secrets. It has no StatefulSet, Service, NetworkPolicy,
HorizontalPodAutoscaler, PodDisruptionBudget, Namespace or ServiceAccount: those stay checked
offline against the Kubernetes schemas (tests/unit/test_deploy_manifests.py). A StatefulSet's
pods are played as what its controller creates: pod ``<name>-<i>`` from the pod template, with
the ``apps.kubernetes.io/pod-index`` label, and a PersistentVolumeClaim per claim template.

Only environment values change: the ConfigMap's NATS URL and the Secret's credentials point
at this machine's servers (reached from podman's bridge network at its gateway, 10.88.0.1),
and ingest's feed is synthetic (no Binance from here). No registry serves the NATS, Redis and
PostgreSQL images, so those three run on this machine instead of as pods.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from levibot.storage.testing import database
from levibot.testing import free_port
from tests.containers.pods import (
    ENV,
    BusServer,
    RedisServer,
    build_image,
    podman,
    require_podman,
    workloads,
)
from tests.unit.deploy_checks import DEPLOY, render

pytestmark = [pytest.mark.containers, pytest.mark.integration, pytest.mark.slow]

BRIDGE_GATEWAY = "10.88.0.1"  # the host, seen from podman's default bridge network
PLAYED = {"ConfigMap", "Secret", "Deployment", "PersistentVolumeClaim", "Pod"}
NOT_PLAYED = {
    "StatefulSet": "played as its pods and claims",
    "Service": "no Services in podman: pods reach each other by address",
    "NetworkPolicy": "none in podman",
    "HorizontalPodAutoscaler": "none in podman",
    "PodDisruptionBudget": "none in podman",
    "Namespace": "none in podman",
    "ServiceAccount": "none in podman",
}


class Forward:
    """Forward TCP from ``0.0.0.0:port`` to ``127.0.0.1:target`` (PostgreSQL listens on the
    loopback only; the pods reach it through this)."""

    def __init__(self, target: int) -> None:
        self.target, self.port = target, free_port()
        self.server = socket.create_server(("0.0.0.0", self.port))
        self.server.settimeout(0.5)
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.running:
            try:
                client, _ = self.server.accept()
            except OSError:
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.running = False
        self.server.close()


def statefulset_pods(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The Pods and PersistentVolumeClaims a StatefulSet's controller would create."""
    name, out = doc["metadata"]["name"], []
    for i in range(doc["spec"]["replicas"]):
        template = copy.deepcopy(doc["spec"]["template"])
        labels = {**template["metadata"].get("labels", {}), "apps.kubernetes.io/pod-index": str(i)}
        spec = template["spec"]
        for claim in doc["spec"].get("volumeClaimTemplates", []):
            volume = claim["metadata"]["name"]
            claim_name = f"{volume}-{name}-{i}"
            meta = {"name": claim_name}
            out.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta,
                        "spec": claim["spec"]})  # fmt: skip
            ref = {"claimName": claim_name}
            spec.setdefault("volumes", []).append({"name": volume, "persistentVolumeClaim": ref})
        meta = {"name": f"{name}-{i}", "labels": labels}
        out.append({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
    return out


def playable(objects: dict[str, dict[str, Any]], env: dict[str, str]) -> list[dict[str, Any]]:
    """The dev overlay's levibot objects podman can play (the Secret aside: see
    ``podman_secret``), the ConfigMap with this machine's values ``env``."""
    docs: list[dict[str, Any]] = []
    for key, doc in objects.items():
        kind, name = key.split("/", 1)
        doc = copy.deepcopy(doc)
        if kind == "ConfigMap" and name == "levibot-env":
            doc["data"].update(env)
        elif kind in ("ConfigMap", "Secret"):
            continue  # nats, postgres: their servers are not pods here; levibot-secrets
        if kind == "StatefulSet":
            if name.startswith("levibot-"):  # nats, redis, postgres: no image here
                docs.extend(statefulset_pods(doc))
            continue
        if kind == "Deployment" and doc["spec"].get("replicas", 1) == 0:
            continue  # telegram: scaled to 0 in dev (no bot token)
        if kind in PLAYED:
            docs.append(doc)
        else:
            assert kind in NOT_PLAYED, f"{kind}: say what podman does with it"
    for doc in docs:
        if doc["kind"] == "Pod" and doc["metadata"]["name"].startswith("levibot-ingest"):
            for var in doc["spec"]["containers"][0]["env"]:
                if var["name"] == "LEVIBOT__FEED__SOURCE":
                    var["value"] = "synthetic"  # no Binance from here
    return docs


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[BusServer, RedisServer, str]]:
    objects = workloads()
    bus, redis = BusServer(objects, tmp_path, host="0.0.0.0"), RedisServer(tmp_path, host="0.0.0.0")
    bus.start()
    redis.start()
    try:
        with database() as dsn:
            yield bus, redis, dsn
    finally:
        bus.stop()
        redis.stop()


def pod_ip(pod: str) -> str:
    """The address of ``pod`` on podman's bridge network (its infra container's)."""
    infra = json.loads(podman("pod", "inspect", pod))
    infra = infra[0] if isinstance(infra, list) else infra
    out = podman("inspect", "--format", "{{.NetworkSettings.Networks.podman.IPAddress}}",
                 infra["InfraContainerID"])  # fmt: skip
    return out.strip()


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def podman_secret(name: str, values: dict[str, str]) -> None:
    """Create podman secret ``name`` the way podman 4.3's kube play reads a Secret: a JSON map
    of key to base64 value (it cannot play a Secret document itself: it stores the YAML and
    then fails to read it back as JSON)."""
    data = {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}
    podman("secret", "rm", name, check=False)
    subprocess.run(
        ["podman", "secret", "create", name, "-"], input=json.dumps(data), text=True,
        env=ENV, check=True, capture_output=True, timeout=60,
    )  # fmt: skip


def test_podman_kube_play_runs_the_rendered_pods(
    servers: tuple[BusServer, RedisServer, str], tmp_path: Path
) -> None:
    require_podman()
    build_image()  # tags levibot:0.1.0, the image the manifests name
    bus, redis, dsn = servers
    forward = Forward(5432)
    objects = workloads()
    secret = dict(objects["Secret/levibot-secrets"]["stringData"])
    secret |= {
        **bus.secrets(),
        "redis-password": redis.password,
        "redis-url": f"redis://:{redis.password}@{BRIDGE_GATEWAY}:{redis.port}/0",
        "postgres-dsn": dsn.replace("127.0.0.1:5432", f"{BRIDGE_GATEWAY}:{forward.port}"),
    }
    env = {"LEVIBOT__NATS__URL": f"nats://{BRIDGE_GATEWAY}:{bus.port}"}
    docs = playable(objects, env)
    for doc in docs:
        if doc["kind"] not in ("Pod", "Deployment"):
            continue
        spec = doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]
        for container in spec["containers"]:
            # podman 4.3 publishes every containerPort on the host (4.4+ only with
            # --publish-all): six pods declaring 9100 would collide. The pods keep their ports
            # on their own addresses; the probes name the port, which podman does not resolve.
            container.pop("ports", None)
    kube = tmp_path / "kube.yaml"
    kube.write_text(yaml.safe_dump_all(docs))
    pods = [
        d["metadata"]["name"] if d["kind"] == "Pod" else f"{d['metadata']['name']}-pod-0"
        for d in docs
        if d["kind"] in ("Pod", "Deployment")
    ]
    volumes = [d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"]
    podman("kube", "down", str(kube), check=False, timeout=300)  # a run interrupted earlier
    for volume in volumes:
        podman("volume", "rm", "-f", volume, check=False)
    podman_secret("levibot-secrets", secret)
    started = time.monotonic()
    try:
        out = podman("kube", "play", "--network", "podman", str(kube), timeout=600)
        assert "Error" not in out, out
        ips = {pod: pod_ip(pod) for pod in pods}
        ready: dict[str, float] = {}
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and len(ready) < len(pods):
            for pod, ip in ips.items():
                if pod not in ready and http_status(f"http://{ip}:9100/ready") == 200:
                    ready[pod] = round(time.monotonic() - started, 1)
            time.sleep(0.5)
        logs = {p: podman("logs", "--tail", "20", f"{p}-levibot", check=False) for p in pods}
        assert set(ready) == set(pods), {p: logs[p] for p in pods if p not in ready}
        print(f"\nkube play: pods ready after (s): {json.dumps(ready)}")
        gateway = ips["levibot-gateway-pod-0"]
        assert http_status(f"http://{gateway}:8080/health") == 200
        assert http_status(f"http://{gateway}:8080/app") == 200
        # The manifests' security context, as podman applied it.
        for pod in pods:
            info = json.loads(podman("inspect", f"{pod}-levibot"))[0]
            assert info["Config"]["User"] == "10001:10001", pod
            assert info["HostConfig"]["ReadonlyRootfs"] is True, pod
            assert not info["EffectiveCaps"], (pod, info["EffectiveCaps"])  # drop: ["ALL"]
        # The partition index reached each scoring pod from its label (fieldRef).
        for i in (0, 1):
            info = json.loads(podman("inspect", f"levibot-scoring-{i}-levibot"))[0]
            assert f"LEVIBOT__NODE__PARTITION_INDEX={i}" in info["Config"]["Env"]
    finally:
        podman("kube", "down", str(kube), check=False, timeout=300)
        for volume in volumes:
            podman("volume", "rm", "-f", volume, check=False)
        podman("secret", "rm", "levibot-secrets", check=False)
        forward.close()


@pytest.mark.parametrize("overlay", ["base", "overlays/dev", "overlays/gpu"])
def test_the_offline_renderer_agrees_with_kustomize(overlay: str) -> None:
    """tests/unit/deploy_checks.render (what the schema checks see, no kustomize needed)
    produces exactly the documents kustomize does."""
    ours = {f"{d['kind']}/{d['metadata']['name']}": d for d in render(DEPLOY / overlay)}
    assert ours == workloads(overlay)
