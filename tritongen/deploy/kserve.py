"""A KServe InferenceService for a Triton model repository: the Triton runtime, protocol v2, ``storageUri``,
KEDA autoscaling on the same Triton metric and target as the Kubernetes bundle's HPA, and the canary field.

Standard (raw Deployment) mode with KEDA: KServe's ``autoScaling.metrics`` with an external Prometheus metric;
``canaryTrafficPercent`` splits traffic between the previous and the latest revision (serverless mode; raw
mode from KServe 0.20). Pods are scraped through a PodMonitor on Triton's metrics port.

KServe makes the pod's container from its runtime's (``kserve-tritonserver``: ``config/runtimes/`` in KServe's
repository, vendored in ``schemas/``) patched with the InferenceService's (a strategic merge, the args appended):
the runtime declares no container port and limits the container to 1 CPU and 2Gi, so the InferenceService declares
the ports (Prometheus' pod discovery only finds declared ones) and limits that hold its requests.
:func:`tritongen.deploy.checks.kserve_pod_problems` makes that pod with ``kubectl`` and checks it.
"""

from __future__ import annotations

from typing import Any

from .kubernetes import (
    PORTS,
    PRESTOP_SLEEP_S,
    Placement,
    grace_period_s,
    job_relabeling,
    quantity,
    resources,
    shm_mount,
    shm_volume,
    triton_args,
)
from .monitoring import Queries
from .serving_env import kubernetes_env
from .thresholds import Thresholds

RUNTIME = "kserve-tritonserver"
ISVC_LABEL = "serving.kserve.io/inferenceservice"
# --model-uri forms KServe's storage initializer reads, of those --to kubernetes takes (not as://, which KServe's
# webhook refuses, nor a path in the image, which the runtime's --model-store=/mnt/models never reads)
STORAGE_SCHEMES = ("pvc://", "s3://", "gs://")
# The runtime's own: Triton's HTTP port (its --http-port, which the Service's port 80 forwards to), its CPU limit,
# and the image KServe 0.20 installs it with (config/runtimes/kustomization.yaml): Triton 23.05, TensorRT 8.6, older
# than any release tritongen builds plans for
RUNTIME_HTTP_PORT = 8080
RUNTIME_CPU_LIMIT_CORES = 1.0
RUNTIME_IMAGE = "nvcr.io/nvidia/tritonserver:23.05-py3"
# The CPU limit over a measured request above the runtime's: twice the request, for the bursts around the average the
# request is (the Deployment has no CPU limit; a limit at the average would throttle the load it was measured at)
CPU_LIMIT_PER_REQUEST = 2.0


def container_ports() -> list[dict[str, Any]]:
    """Triton's HTTP port first (KServe's Service forwards port 80 to the first), then its metrics port."""
    return [
        {"name": "http", "containerPort": RUNTIME_HTTP_PORT, "protocol": "TCP"},
        {"name": "metrics", "containerPort": PORTS["metrics"], "protocol": "TCP"},
    ]


def predictor_resources(t: Thresholds, placement: Placement) -> dict[str, Any]:
    """The Deployment's requests and GPU limit, and a CPU limit where the request is above the runtime's limit (1
    CPU; the runtime's limits stay where the InferenceService names none, and a request above its limit is refused):
    :data:`CPU_LIMIT_PER_REQUEST` times the request. Memory keeps the runtime's limit (2Gi, the request)."""
    out = resources(t, placement)
    cpu_m = int(out["requests"]["cpu"].removesuffix("m"))  # quantity() writes thousandths
    if cpu_m > RUNTIME_CPU_LIMIT_CORES * 1000:
        out["limits"] = {**out.get("limits", {}), "cpu": quantity(cpu_m / 1000 * CPU_LIMIT_PER_REQUEST)}
    return out


def inference_service(
    app: str,
    namespace: str,
    storage_uri: str,
    q: Queries,
    t: Thresholds,
    placement: Placement,
    *,
    prometheus_url: str,
    min_replicas: int,
    max_replicas: int,
    canary_traffic_percent: int | None = None,
    image: str | None = None,
) -> dict[str, Any]:
    """``image``: the serving image in place of the runtime's (NGC's Triton), e.g. the one ``--to docker`` builds."""
    args = [a for a in triton_args("/mnt/models", t)[1:] if not a.startswith("--model-repository")]
    model: dict[str, Any] = {
        "modelFormat": {"name": "triton"},
        "protocolVersion": "v2",
        "runtime": RUNTIME,
        "storageUri": storage_uri,
        "args": args,
        "env": kubernetes_env(),  # one OpenBLAS thread for the stubs, jemalloc: see deploy/serving_env.py
    }
    if image is not None:
        model["image"] = image
    model["ports"] = container_ports()
    model["resources"] = predictor_resources(t, placement)
    model["volumeMounts"] = [shm_mount()]  # /dev/shm for the Python backend's tensors, as the Deployment's
    model["lifecycle"] = {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_S}}}  # as the Deployment's: drain first
    predictor: dict[str, Any] = {
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
        "terminationGracePeriodSeconds": grace_period_s(t),  # preStop, then --exit-timeout-secs, then a margin
        "volumes": [shm_volume()],
        "model": model,
        "autoScaling": {
            "metrics": [
                {
                    "type": "External",
                    "external": {
                        "metric": {
                            "backend": "prometheus",
                            "serverAddress": prometheus_url,
                            "query": q.in_flight_total(namespace),
                        },
                        "target": {"type": "AverageValue", "averageValue": quantity(t.target_in_flight)},
                    },
                }
            ]
        },
    }
    if canary_traffic_percent is not None:
        predictor["canaryTrafficPercent"] = canary_traffic_percent
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": app,
            "namespace": namespace,
            "annotations": {
                "serving.kserve.io/deploymentMode": "RawDeployment",
                "serving.kserve.io/autoscalerClass": "keda",
                "tritongen.dev/thresholds": t.mark,
                "tritongen.dev/target": f"{t.target_in_flight:g} requests in flight per replica ({t.mark}: {t.source})",
            },
        },
        "spec": {"predictor": predictor},
    }


def pod_monitor(app: str, scrape_interval: str = "15s") -> dict[str, Any]:
    """Scrapes Triton's metrics port on the InferenceService's pods, labelled ``job="<app>"`` like the rules expect."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": app, "labels": {"app.kubernetes.io/part-of": "tritongen"}},
        "spec": {
            "selector": {"matchLabels": {ISVC_LABEL: app}},
            "podMetricsEndpoints": [
                {
                    "port": "metrics",  # declared by the InferenceService (container_ports)
                    "path": "/metrics",
                    "interval": scrape_interval,
                    "relabelings": job_relabeling(app),
                }
            ],
        },
    }
