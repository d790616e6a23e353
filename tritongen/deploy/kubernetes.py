"""Kubernetes objects for a Triton serving Deployment: Deployment, Service, PodDisruptionBudget, ServiceMonitor,
HorizontalPodAutoscaler (``autoscaling/v2`` on a Triton metric through prometheus-adapter), and the kustomize
files that put them in a base and the dev/prod overlays. Objects are built as data and written by a YAML
serializer; every number comes from :class:`~tritongen.deploy.thresholds.Thresholds`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import TritongenError
from ..names import shown
from .monitoring import Queries, metric_name_for
from .serving_env import kubernetes_env
from .thresholds import Thresholds

PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
PRESTOP_SLEEP_S = 10  # time for endpoints to drop the pod before Triton stops taking requests
PROBE_PERIOD_S = 5
MODEL_MOUNT = "/models"
# The Python backend passes tensors through /dev/shm, and a container's default is 64 MB, too small for real
# models: a memory-backed emptyDir of the size the compose bundle gives (shm_size: 1g, deploy/docker.py).
SHM_VOLUME = "dshm"
SHM_SIZE = "1Gi"
# Requests where the perf run measured no server CPU (thresholds.cpu_request_cores): one core for Triton's own
# threads and a model instance (a GPU model's CPU work is small; a CPU model's instances want their cores, so
# measure it with tritongen perf on the serving hardware). Memory: tritonserver itself (about half a GiB), a full
# /dev/shm (its pages count against the pod's memory) and room for a model's weights; not measured by tritongen.
DEFAULT_CPU_REQUEST_CORES = 1.0
DEFAULT_MEMORY_REQUEST = "2Gi"
REMOTE_SCHEMES = ("s3://", "gs://", "as://")


def app_name_for(model: str) -> str:
    """A DNS-1123 name for the model's objects (lower case, digits and '-', at most 63 characters)."""
    name = re.sub(r"[^a-z0-9-]+", "-", f"triton-{model}".lower()).strip("-")
    return name[:63].rstrip("-")


@dataclass(frozen=True)
class ModelSource:
    """Where Triton reads the model repository: ``pvc://claim[/sub/path]``, ``s3://``, ``gs://``, ``as://``, or
    an absolute path inside the image (a serving image with the repository baked in)."""

    uri: str

    @property
    def triton_path(self) -> str:
        if self.uri.startswith(REMOTE_SCHEMES) or self.uri.startswith("/"):
            return self.uri
        return MODEL_MOUNT

    @property
    def claim(self) -> tuple[str, str] | None:
        if not self.uri.startswith("pvc://"):
            return None
        claim, _, sub = self.uri[len("pvc://") :].partition("/")
        return claim, sub.strip("/")


def model_source_from_uri(uri: str) -> ModelSource:
    """``uri`` as a :class:`ModelSource`, if it names a bucket, a claim (a DNS-1123 label) or an absolute path: no
    space or control character, no ``.`` or ``..`` step (a subPath with ``..`` is refused by the API server)."""
    scheme = next((s for s in (*REMOTE_SCHEMES, "pvc://") if uri.startswith(s)), "")
    head, *rest = uri[len(scheme) :].split("/")
    plain = not any(c.isspace() or not c.isprintable() for c in uri) and not {".", ".."} & set(rest)
    if plain and (uri.startswith("/") or (scheme in REMOTE_SCHEMES and head not in ("", ".", ".."))):
        return ModelSource(uri)
    if plain and scheme == "pvc://" and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", head):
        return ModelSource(uri)
    raise TritongenError(
        f"model repository location '{shown(uri, 200)}' is not one Triton or a pod can read",
        "use pvc://CLAIM[/path], s3://bucket/path, gs://bucket/path, as://account/container/path, "
        "or an absolute path inside the image",
    )


@dataclass(frozen=True)
class Placement:
    """What the pod asks of its node: GPUs, and the compute capabilities the repository's TensorRT plans need."""

    gpus: int = 1
    compute_capabilities: tuple[str, ...] = ()


def compute_capabilities_from_repository(repo: Path, configs: Mapping[str, Any]) -> tuple[str, ...]:
    """The compute capabilities a node's GPU may have for every model of ``repo`` (``configs``: name -> its
    ModelConfig) to load: a version Triton loads (by its version policy) that holds TensorRT plans (its manifest's
    ``engines``) loads on those capabilities only, so a node needs one that every such version has. Empty where no
    loaded version holds plans; a :class:`TritongenError` where they have none in common."""
    from ..layout import version_numbers
    from ..manifest import engines_of
    from ..validate import versions_to_load

    common: set[str] | None = None
    needs = []
    for name, config in sorted(configs.items()):
        model_dir = Path(repo) / name
        for version in versions_to_load(config, version_numbers(model_dir))[0]:
            found = {str(cc) for cc in engines_of(model_dir, version) if re.fullmatch(r"\d+\.\d+", str(cc))}
            if found:
                needs.append(f"{name} version {version}: {', '.join(sorted(found))}")
                common = found if common is None else common & found
    if common is not None and not common:
        raise TritongenError(
            f"no GPU can load every model of {repo}: their TensorRT plans are built for different compute "
            f"capabilities ({'; '.join(needs)})",
            "build the plans on one kind of GPU (tritongen engine), or deploy the models apart",
        )
    return tuple(sorted(common or ()))


def _labels(app: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": app, "app.kubernetes.io/part-of": "tritongen"}


def _affinity(cc: tuple[str, ...]) -> dict[str, Any]:
    """Node affinity on GPU Feature Discovery's compute capability labels (one term per capability: any may match;
    each is one that every model's plans have: :func:`compute_capabilities_from_repository`)."""
    terms = [
        {
            "matchExpressions": [
                {"key": "nvidia.com/gpu.compute.major", "operator": "In", "values": [c.split(".")[0]]},
                {"key": "nvidia.com/gpu.compute.minor", "operator": "In", "values": [c.split(".")[1]]},
            ]
        }
        for c in cc
    ]
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}


def triton_args(model_path: str, t: Thresholds) -> list[str]:
    """tritonserver's command line in the pod. The kubelet expands ``$(NAME)`` in a container's args to that
    environment variable and reads ``$$`` as one ``$``: each ``$`` of the path is doubled, so Triton gets the
    path as given (``s3://bucket/models$(LD_PRELOAD)`` named another folder)."""
    return [
        "tritonserver",
        f"--model-repository={model_path.replace('$', '$$')}",
        "--metrics-config=summary_latencies=true",
        f"--exit-timeout-secs={t.exit_timeout_s}",
        "--strict-readiness=true",
    ]


def startup_failure_threshold(t: Thresholds) -> int:
    """Startup probe budget: 3x the model load time (measured by tune, or the unmeasured default) plus 30 s."""
    return math.ceil((3 * t.load_time_s + 30) / PROBE_PERIOD_S)


def grace_period_s(t: Thresholds) -> int:
    """preStop sleep, then Triton's own drain (``--exit-timeout-secs``), then a margin."""
    return PRESTOP_SLEEP_S + t.exit_timeout_s + 5


def resources(t: Thresholds, placement: Placement) -> dict[str, Any]:
    """The container's requests (CPU measured at the knee where the perf run measured it, else the defaults above)
    and its GPU limit."""
    cpu = t.cpu_request_cores if t.cpu_request_cores is not None else DEFAULT_CPU_REQUEST_CORES
    out: dict[str, Any] = {"requests": {"cpu": quantity(cpu), "memory": DEFAULT_MEMORY_REQUEST}}
    if placement.gpus:
        out["limits"] = {"nvidia.com/gpu": placement.gpus}
    return out


def shm_volume() -> dict[str, Any]:
    return {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}}


def shm_mount() -> dict[str, Any]:
    return {"name": SHM_VOLUME, "mountPath": "/dev/shm"}


def container(image: str, source: ModelSource, t: Thresholds, placement: Placement) -> dict[str, Any]:
    def probe(path: str, period_s: int, failures: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": "http"},
            "periodSeconds": period_s,
            "failureThreshold": failures,
            "timeoutSeconds": 2,
        }

    out: dict[str, Any] = {
        "name": "tritonserver",
        "image": image,
        "args": triton_args(source.triton_path, t),
        "ports": [{"name": name, "containerPort": port, "protocol": "TCP"} for name, port in PORTS.items()],
        "readinessProbe": probe("/v2/health/ready", PROBE_PERIOD_S, 3),
        "livenessProbe": probe("/v2/health/live", 10, 3),
        "startupProbe": probe("/v2/health/ready", PROBE_PERIOD_S, startup_failure_threshold(t)),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_S}}},
    }
    out["env"] = kubernetes_env()  # one OpenBLAS thread for the stubs, jemalloc: see deploy/serving_env.py
    out["resources"] = resources(t, placement)
    if source.uri.startswith(REMOTE_SCHEMES):  # credentials for the object store, when the Secret exists
        out["envFrom"] = [{"secretRef": {"name": "model-storage-credentials", "optional": True}}]
    mounts = [shm_mount()]
    if source.claim:
        claim, sub = source.claim
        mount = {"name": "models", "mountPath": MODEL_MOUNT, "readOnly": True}
        if sub:
            mount["subPath"] = sub
        mounts.insert(0, mount)
    out["volumeMounts"] = mounts
    return out


def deployment(app: str, image: str, source: ModelSource, t: Thresholds, placement: Placement) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "terminationGracePeriodSeconds": grace_period_s(t),
        "containers": [container(image, source, t, placement)],
    }
    if placement.gpus:
        pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    if placement.compute_capabilities:
        pod["affinity"] = _affinity(placement.compute_capabilities)
    pod["volumes"] = [shm_volume()]
    if source.claim:
        pod["volumes"].insert(
            0, {"name": "models", "persistentVolumeClaim": {"claimName": source.claim[0], "readOnly": True}}
        )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": app, "labels": _labels(app), "annotations": {"tritongen.dev/thresholds": t.mark}},
        "spec": {
            "replicas": t.min_replicas_prod,
            "selector": {"matchLabels": {"app.kubernetes.io/name": app}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": _labels(app)}, "spec": pod},
        },
    }


def service(app: str) -> dict[str, Any]:
    ports = [{"name": name, "port": port, "targetPort": name, "protocol": "TCP"} for name, port in PORTS.items()]
    ports[1]["appProtocol"] = "grpc"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": app, "labels": _labels(app)},
        "spec": {"selector": {"app.kubernetes.io/name": app}, "ports": ports},
    }


def pod_disruption_budget(app: str) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": app, "labels": _labels(app)},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": app}}},
    }


def job_relabeling(app: str) -> list[dict[str, Any]]:
    """Every query selects ``job="<app>"``: set it whatever the monitor's own default is."""
    return [{"action": "replace", "targetLabel": "job", "replacement": app}]


def service_monitor(app: str, scrape_interval: str = "15s") -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": app, "labels": _labels(app)},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": app}},
            "endpoints": [
                {"port": "metrics", "path": "/metrics", "interval": scrape_interval, "relabelings": job_relabeling(app)}
            ],
        },
    }


def quantity(value: float) -> str:
    """A Kubernetes quantity in thousandths (``7400m``): exact, and never in exponent form."""
    return f"{max(1, round(value * 1000))}m"


def hpa(app: str, q: Queries, t: Thresholds, min_replicas: int, max_replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": app,
            "labels": _labels(app),
            "annotations": {
                "tritongen.dev/thresholds": t.mark,
                "tritongen.dev/target": f"{t.target_in_flight:g} requests in flight per replica ({t.mark}: {t.source})",
            },
        },
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": app},
            "minReplicas": min_replicas,
            "maxReplicas": max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": metric_name_for(q.model)},
                        "target": {"type": "AverageValue", "averageValue": quantity(t.target_in_flight)},
                    },
                }
            ],
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 0},
                "scaleDown": {"stabilizationWindowSeconds": 300},
            },
        },
    }


def replicas_patch(app: str, min_replicas: int, max_replicas: int) -> list[dict[str, Any]]:
    """Strategic-merge patches an overlay applies to the base's Deployment and HPA."""
    return [
        {
            "patch": _yaml(
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": app},
                    "spec": {"replicas": min_replicas},
                }
            )
        },
        {
            "patch": _yaml(
                {
                    "apiVersion": "autoscaling/v2",
                    "kind": "HorizontalPodAutoscaler",
                    "metadata": {"name": app},
                    "spec": {"minReplicas": min_replicas, "maxReplicas": max_replicas},
                }
            )
        },
    ]


def delete_patch(api_version: str, kind: str, name: str) -> dict[str, Any]:
    return {"patch": _yaml({"$patch": "delete", "apiVersion": api_version, "kind": kind, "metadata": {"name": name}})}


def kustomization(
    resources: list[str],
    *,
    namespace: str | None = None,
    patches: list[dict[str, Any]] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}
    if namespace:
        out["namespace"] = namespace
    if labels:
        out["labels"] = [{"pairs": labels, "includeSelectors": False}]
    out["resources"] = resources
    if patches:
        out["patches"] = patches
    return out


def _yaml(obj: Any) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False)
