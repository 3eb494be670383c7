"""Render and check levibot's Kubernetes manifests and Containerfiles, offline.

``render`` reproduces ``kustomize build`` for the subset of kustomize ``deploy/`` uses
(resources, namespace, images, JSON6902 patches) and refuses anything else, so what is checked
is what ``kubectl apply -k`` applies. Each ``*_problems`` function returns a list of problems
(empty: fine), so a test can feed it a broken manifest and see it caught.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dockerfile
import kubernetes_validate
import yaml

from levibot.errors import LevibotError
from levibot.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("base", "overlays/dev", "overlays/gpu")
# 1.28: the oldest version with the apps.kubernetes.io/pod-index label the partitions use.
K8S_VERSIONS = ("1.28", kubernetes_validate.latest_version())
NODE_PORT = 9100
PARTITIONED_GROUPS = {"ingest", "scoring", "execution"}
POD_INDEX = "metadata.labels['apps.kubernetes.io/pod-index']"
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet"}
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|DSN|PEPPER", re.IGNORECASE)

Doc = dict[str, Any]


class RenderError(Exception):
    """A kustomization this renderer cannot reproduce faithfully."""


# -- rendering --------------------------------------------------------------------------------


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]


def apply_json6902(doc: Doc, ops: list[Doc]) -> None:
    """Apply RFC 6902 ``add``/``replace``/``remove`` operations to ``doc`` in place."""
    for op in ops:
        *parents, last = _pointer(op["path"])
        node: Any = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        kind = op["op"]
        if isinstance(node, list):
            index = len(node) if last == "-" else int(last)
            if kind == "add":
                node.insert(index, copy.deepcopy(op["value"]))
            elif kind == "replace":
                node[index] = copy.deepcopy(op["value"])
            elif kind == "remove":
                del node[index]
            else:
                raise RenderError(f"unsupported patch op {kind!r}")
        elif kind in ("add", "replace"):
            if kind == "replace" and last not in node:
                raise RenderError(f"replace of missing path {op['path']}")
            node[last] = copy.deepcopy(op["value"])
        elif kind == "remove":
            del node[last]
        else:
            raise RenderError(f"unsupported patch op {kind!r}")


def containers_of(doc: Doc) -> list[Doc]:
    """Return the init and app containers of a workload's pod template."""
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def render(directory: Path) -> list[Doc]:
    """Return the documents ``kustomize build directory`` produces (the subset used here)."""
    kust = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kust) - {"apiVersion", "kind", "namespace", "resources", "images", "patches"}
    if unknown:
        raise RenderError(f"{directory}: unsupported kustomization keys {sorted(unknown)}")
    docs: list[Doc] = []
    for entry in kust.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            docs.extend(render(path))
        else:
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    for patch in kust.get("patches", []):
        target = patch["target"]
        hits = [
            d
            for d in docs
            if d["kind"] == target["kind"] and d["metadata"]["name"] == target["name"]
        ]
        if not hits:
            raise RenderError(f"{directory}: patch target {target} matches nothing")
        for doc in hits:
            apply_json6902(doc, yaml.safe_load(patch["patch"]))
    if "namespace" in kust:
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = kust["namespace"]
    for image in kust.get("images", []):
        for doc in docs:
            for container in containers_of(doc):
                name, _, tag = container["image"].partition(":")
                if name == image["name"]:
                    new = image.get("newName", name)
                    container["image"] = f"{new}:{image.get('newTag', tag)}"
    return docs


# -- checks: each returns a list of problems (empty: fine) -----------------------------------


def schema_problems(doc: Doc) -> list[str]:
    """Validate ``doc`` against the bundled Kubernetes JSON schemas (strict)."""
    return list(_schema_problems(json.dumps(doc, sort_keys=True)))


@functools.cache  # overlays repeat most of the base: validate each distinct document once
def _schema_problems(text: str) -> tuple[str, ...]:
    doc = json.loads(text)
    problems = []
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            problems.append(f"k8s {version}: {where}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"k8s {version}: {exc.message}")
    return tuple(problems)


def is_levibot(doc: Doc) -> bool:
    """Return True when ``doc`` is a workload whose pods run a levibot node."""
    labels = doc["spec"]["template"]["metadata"].get("labels", {})
    return doc["kind"] in WORKLOADS and labels.get("app.kubernetes.io/name") == "levibot"


def _port(container: Doc, port: int | str) -> int | None:
    if isinstance(port, int):
        return port
    named = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    return named.get(port)


def env_of(container: Doc) -> dict[str, Doc]:
    """Return the container's ``env`` entries by name."""
    return {e["name"]: e for e in container.get("env", [])}


def pod_security_problems(doc: Doc) -> list[str]:
    """Check the Pod Security "restricted" basics the levibot namespace enforces."""
    pod = doc["spec"]["template"]["spec"]
    problems = []
    if pod.get("automountServiceAccountToken") is not False:
        problems.append("automountServiceAccountToken is not false")
    pod_ctx = pod.get("securityContext", {})
    if pod_ctx.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append("pod seccompProfile is not RuntimeDefault")
    for c in containers_of(doc):
        ctx = c.get("securityContext", {})
        if not (ctx.get("runAsNonRoot") or pod_ctx.get("runAsNonRoot")):
            problems.append(f"{c['name']}: runAsNonRoot is not set")
        if ctx.get("runAsUser", pod_ctx.get("runAsUser")) in (None, 0):
            problems.append(f"{c['name']}: no non-zero runAsUser")
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{c['name']}: allowPrivilegeEscalation is not false")
        if ctx.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{c['name']}: root filesystem is writable")
        if ctx.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{c['name']}: capabilities are not dropped (drop: [ALL])")
        if "memory" not in c.get("resources", {}).get("limits", {}):
            problems.append(f"{c['name']}: no memory limit")
        requests = c.get("resources", {}).get("requests", {})
        if not {"cpu", "memory"} <= set(requests):
            problems.append(f"{c['name']}: resource requests need cpu and memory")
        for name, var in env_of(c).items():
            if SECRET_NAME.search(name) and "value" in var:
                problems.append(f"{c['name']}: {name} is a literal; take it from a Secret")
    return problems


def node_problems(doc: Doc) -> list[str]:
    """Check a levibot node workload: probes on 9100, groups, partitions, var/ writable."""
    problems = pod_security_problems(doc)
    containers = [c for c in containers_of(doc) if c["name"] == "levibot"]
    if len(containers) != 1:
        return [*problems, "no container named levibot"]
    c = containers[0]
    for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
        get = c.get(probe, {}).get("httpGet")
        if get is None:
            problems.append(f"{probe} missing (want GET {path} on {NODE_PORT})")
        elif get.get("path") != path or _port(c, get.get("port", 0)) != NODE_PORT:
            problems.append(f"{probe} must GET {path} on {NODE_PORT}, not {get}")
    if not any(m["mountPath"] == "/app/var" for m in c.get("volumeMounts", [])):
        problems.append("nothing mounted on /app/var (the root filesystem is read-only)")
    env = env_of(c)
    groups = env.get("LEVIBOT__NODE__GROUPS", {}).get("value")
    if not groups:
        return [*problems, "LEVIBOT__NODE__GROUPS is not set"]
    index = env.get("LEVIBOT__NODE__PARTITION_INDEX", {})
    count = env.get("LEVIBOT__NODE__PARTITION_COUNT", {}).get("value", "1")
    from_pod_index = index.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == POD_INDEX
    replicas = doc["spec"].get("replicas", 1)
    if from_pod_index and doc["kind"] != "StatefulSet":
        problems.append("the partition index comes from a pod index only a StatefulSet has")
    if from_pod_index and int(count) != replicas:
        problems.append(f"partition count {count} != replicas {replicas}")
    if not from_pod_index and int(count) != 1:
        problems.append(f"partition count {count} without a per-pod partition index")
    return problems


def container_environ(
    doc: Doc, container: Doc, objects: dict[tuple[str, str], Doc], image_env: dict[str, str]
) -> dict[str, str]:
    """Return the environment the container would see (image ENV < envFrom < env)."""
    environ = dict(image_env)
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef") or source.get("secretRef")
        kind = "ConfigMap" if "configMapRef" in source else "Secret"
        obj = objects.get((kind, ref["name"]), {})
        environ.update(
            {k: str(v) for k, v in {**obj.get("data", {}), **obj.get("stringData", {})}.items()}
        )
    for var in container.get("env", []):
        if "value" in var:
            environ[var["name"]] = str(var["value"])
            continue
        source = var["valueFrom"]
        if "secretKeyRef" in source:
            environ[var["name"]] = "postgresql://u:p@postgres:5432/db"  # any string will do
        elif source.get("fieldRef", {}).get("fieldPath") == POD_INDEX:
            environ[var["name"]] = str(doc["spec"].get("replicas", 1) - 1)  # the last pod
        else:
            environ[var["name"]] = f"{doc['metadata']['name']}-0"
    return environ


def settings_problems(environ: dict[str, str]) -> list[str]:
    """Load the node's settings from ``environ`` with levibot's own loader."""
    try:
        settings = load_settings(None, environ=environ)
        settings.actors_of(settings.node.groups)
    except LevibotError as exc:
        return [f"levibot rejects the environment: {exc}"]
    node = settings.node
    problems = []
    if node.http_host != "0.0.0.0" or node.http_port != NODE_PORT:
        problems.append(f"node listens on {node.http_host}:{node.http_port}, not 0.0.0.0:9100")
    if not 0 <= node.partition_index < node.partition_count:
        problems.append(f"partition {node.partition_index} of {node.partition_count}")
    if node.partition_count > 1 and not set(node.groups) <= PARTITIONED_GROUPS:
        problems.append(f"groups {node.groups} are not per-symbol but are partitioned")
    if not settings.nats.url:
        problems.append("LEVIBOT__NATS__URL is empty: the node would be alone")
    return problems


def network_problems(docs: list[Doc]) -> list[str]:
    """Check that a default deny-all (ingress and egress) NetworkPolicy exists."""
    for doc in docs:
        spec = doc.get("spec", {})
        if (
            doc["kind"] == "NetworkPolicy"
            and spec.get("podSelector") == {}
            and set(spec.get("policyTypes", [])) == {"Ingress", "Egress"}
            and not spec.get("ingress")
            and not spec.get("egress")
        ):
            return []
    return ["no default deny-all NetworkPolicy (podSelector {}, Ingress and Egress, no rules)"]


def hpa_problems(docs: list[Doc]) -> list[str]:
    """Check the scoring HPA: it targets the scoring workload, within its partition count."""
    hpas = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    workloads = {(d["kind"], d["metadata"]["name"]): d for d in docs if d["kind"] in WORKLOADS}
    problems = []
    scoring = []
    for hpa in hpas:
        ref = hpa["spec"]["scaleTargetRef"]
        target = workloads.get((ref["kind"], ref["name"]))
        if target is None:
            problems.append(f"HPA {hpa['metadata']['name']} targets missing {ref}")
            continue
        c = next(c for c in containers_of(target) if c["name"] == "levibot")
        env = env_of(c)
        if env.get("LEVIBOT__NODE__GROUPS", {}).get("value") == '["scoring"]':
            scoring.append(hpa)
        count = env.get("LEVIBOT__NODE__PARTITION_COUNT", {}).get("value")
        lo, hi = hpa["spec"].get("minReplicas", 1), hpa["spec"]["maxReplicas"]
        if count is not None and int(count) > 1 and not lo == hi == int(count):
            problems.append(
                f"HPA {hpa['metadata']['name']} may scale {lo}..{hi} but the partition count "
                f"is a static {count}: symbols would go unscored or pods idle"
            )
    if not scoring:
        problems.append("no HorizontalPodAutoscaler targets the scoring group")
    return problems


def _matches(selector: Doc, labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        value, op = labels.get(expr["key"]), expr["operator"]
        if (op == "In" and value not in expr["values"]) or (op == "Exists" and value is None):
            return False
    return True


def reference_problems(docs: list[Doc]) -> list[str]:
    """Check that every selector selects a pod and every referenced object exists."""
    objects = {(d["kind"], d["metadata"]["name"]) for d in docs}
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in docs if d["kind"] in WORKLOADS]
    problems = []

    def need(kind: str, name: str, where: str) -> None:
        if (kind, name) not in objects:
            problems.append(f"{where}: {kind} {name} does not exist")

    for d in docs:
        where = f"{d['kind']}/{d['metadata']['name']}"
        spec = d.get("spec", {})
        selectors = {
            "Service": {"matchLabels": spec.get("selector", {})},
            "PodDisruptionBudget": spec.get("selector"),
            "NetworkPolicy": spec.get("podSelector"),
        }
        selector = selectors.get(d["kind"])
        if selector and not any(_matches(selector, labels) for labels in pods):
            problems.append(f"{where}: its selector matches no pod")
        if d["kind"] not in WORKLOADS:
            continue
        if d["kind"] == "StatefulSet":
            need("Service", spec["serviceName"], where)
        pod = spec["template"]["spec"]
        need("ServiceAccount", pod.get("serviceAccountName", "default"), where)
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                need("ConfigMap", volume["configMap"]["name"], where)
        for c in containers_of(d):
            for source in c.get("envFrom", []):
                if "configMapRef" in source:
                    need("ConfigMap", source["configMapRef"]["name"], where)
                if "secretRef" in source:
                    need("Secret", source["secretRef"]["name"], where)
            for var in c.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref and not ref.get("optional"):
                    need("Secret", ref["name"], where)
    return problems


# -- Containerfile checks --------------------------------------------------------------------


def _final_stage(commands: list[Any]) -> list[Any]:
    starts = [i for i, c in enumerate(commands) if c.cmd == "FROM"]
    return commands[starts[-1] :]


def image_env(path: Path) -> dict[str, str]:
    """Return the ENV of the final stage of the Containerfile at ``path``."""
    env: dict[str, str] = {}
    for c in _final_stage(list(dockerfile.parse_file(str(path)))):
        if c.cmd == "ENV":
            for name, value in zip(c.value[::2], c.value[1::2], strict=True):
                quoted = len(value) > 1 and value[0] == value[-1] and value[0] in "'\""
                env[name] = value[1:-1] if quoted else value  # the builder drops the quotes
    return env


def containerfile_problems(text: str, extra: str) -> list[str]:
    """Check a Containerfile statically: multi-stage, non-root, health check, one ONNX RT."""
    commands = list(dockerfile.parse_string(text))  # BuildKit's own parser: syntax errors raise
    final = _final_stage(commands)
    problems = []
    if sum(c.cmd == "FROM" for c in commands) < 2:
        problems.append("not a multi-stage build")
    users = [c.value[0] for c in final if c.cmd == "USER"]
    uid = users[-1].split(":")[0] if users else "0"
    if not uid.isdigit() or int(uid) == 0:
        problems.append(f"final USER must be a numeric non-root uid, not {uid!r}")
    health = [c for c in final if c.cmd == "HEALTHCHECK"]
    if not health or "127.0.0.1:9100/health" not in " ".join(health[-1].value):
        problems.append("no HEALTHCHECK on http://127.0.0.1:9100/health")
    elif re.search(r"\b(curl|wget)\b", " ".join(health[-1].value)):
        problems.append("HEALTHCHECK uses curl/wget, which the base image lacks")
    if not any(c.cmd == "ENTRYPOINT" and list(c.value) == ["levibot"] for c in final):
        problems.append('ENTRYPOINT is not ["levibot"]')
    if not any(c.cmd == "CMD" and list(c.value) == ["run"] for c in final):
        problems.append('CMD is not ["run"]')
    if not any(c.cmd == "WORKDIR" and c.value[0] == "/app" for c in final):
        problems.append("WORKDIR is not /app")
    exposed = {v for c in final if c.cmd == "EXPOSE" for v in c.value}
    if not {"9100", "8080"} <= exposed:
        problems.append(f"EXPOSE 9100 8080 expected, got {sorted(exposed)}")
    installs = " ".join(" ".join(c.value) for c in commands if c.cmd == "RUN")
    extras = set(re.findall(r"levibot-\*\.whl\)\[(\w+)\]", installs))
    if extras != {extra}:
        problems.append(f"levibot must be installed with exactly [{extra}], got {sorted(extras)}")
    if re.search(r"pip install[^&;]*\bonnxruntime", installs):
        problems.append("onnxruntime installed directly: use the levibot extra")
    for c in commands:
        if c.cmd in ("ENV", "ARG") and SECRET_NAME.search(" ".join(c.value[::2])):
            problems.append(f"secret-looking {c.cmd} baked into the image: {c.original}")
    return problems


def ignore_problems(ignore: str, text: str) -> list[str]:
    """Check that the ignore file lets in every COPY source and nothing else by default."""
    lines = [line.strip() for line in ignore.splitlines() if line.strip() and line[0] != "#"]
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    problems = [] if lines[:1] == ["*"] else ["does not start with '*' (exclude all)"]
    for c in dockerfile.parse_string(text):
        if c.cmd == "COPY" and not any(f.startswith("--from") for f in c.flags):
            problems.extend(
                f"COPY source {src} is excluded" for src in c.value[:-1] if src not in allowed
            )
    return problems


def levibot_workloads(docs: list[Doc]) -> Iterator[Doc]:
    """Yield the workloads that run levibot nodes."""
    yield from (d for d in docs if d["kind"] in WORKLOADS and is_levibot(d))
