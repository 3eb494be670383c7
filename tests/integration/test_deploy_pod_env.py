"""A real node started with a pod's environment from ``deploy/`` answers the pod's probes.

The execution pod is the one whose dependencies are all here (NATS; its state on local disk):
``levibot run`` gets exactly the environment the manifests give that pod (image ENV, the
ConfigMap, the pod's env), except the NATS URL, subject namespace and stream (the shared test
server, isolated per test) and the HTTP port (a free one; 9100 may be taken here). The
liveness and readiness paths are taken from the manifest, not restated.
"""

from __future__ import annotations

import json
import signal
import urllib.request
import uuid
from pathlib import Path

import pytest

from levibot.testenv import NATS_URL
from levibot.testing import NodeProcess, http_ok
from tests.unit.deploy_checks import DEPLOY, ROOT, container_environ, image_env, render

pytestmark = pytest.mark.integration

SHARED_NATS = NATS_URL


def test_execution_pod_environment_starts_a_node_that_turns_ready_and_drains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = render(DEPLOY / "overlays" / "dev")
    objects = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    pod = objects[("StatefulSet", "levibot-execution")]
    container = pod["spec"]["template"]["spec"]["containers"][0]
    env = container_environ(pod, container, objects, image_env(ROOT / "Containerfile"))
    ns = f"deploy{uuid.uuid4().hex[:8]}"
    env.update(LEVIBOT__NATS__URL=SHARED_NATS, LEVIBOT__NATS__NAMESPACE=ns)
    env.update(LEVIBOT__NATS__STREAM=ns.upper())
    del env["LEVIBOT__NODE__HTTP_PORT"]  # NodeProcess picks a free one
    monkeypatch.chdir(tmp_path)  # the image's WORKDIR: var/state lands here
    (tmp_path / "empty.toml").write_text("")
    live = container["livenessProbe"]["httpGet"]["path"]
    ready = container["readinessProbe"]["httpGet"]["path"]

    node = NodeProcess(tmp_path / "empty.toml", log=tmp_path / "log", env=env)
    try:
        node.wait_ready(60)  # polls /ready; fails at once if the process exits
        assert http_ok(node.port, ready)
        assert http_ok(node.port, live)
        with urllib.request.urlopen(f"http://127.0.0.1:{node.port}{live}", timeout=5) as r:
            health = json.load(r)
        assert health["groups"] == ["execution"]
        assert health["nats"] is True
        assert set(health["actors"]) == {"risk", "order"}
        node.signal(signal.SIGTERM)
        # Within the pod's grace period, less a margin: the kubelet would SIGKILL after it.
        grace = pod["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert node.wait(grace - 5) == 0, node.tail()
    finally:
        node.kill()
    assert (tmp_path / "var").is_dir()  # state went under the WORKDIR's var/, the mounted PVC
