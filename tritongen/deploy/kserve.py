"""A KServe InferenceService for a Triton model repository: the Triton runtime, protocol v2, ``storageUri``,
KEDA autoscaling on the same Triton metric and target as the Kubernetes bundle's HPA, and the canary field.

Standard (raw Deployment) mode with KEDA: KServe's ``autoScaling.metrics`` with an external Prometheus metric;
``canaryTrafficPercent`` splits traffic between the previous and the latest revision (serverless mode; raw
mode from KServe 0.20). Pods are scraped through a PodMonitor on Triton's metrics port.
"""

from __future__ import annotations

from typing import Any

from .kubernetes import PORTS, Placement, job_relabeling, quantity, resources, shm_mount, shm_volume, triton_args
from .monitoring import Queries
from .serving_env import kubernetes_env
from .thresholds import Thresholds

RUNTIME = "kserve-tritonserver"
ISVC_LABEL = "serving.kserve.io/inferenceservice"


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
    model["resources"] = resources(t, placement)  # the Deployment's requests and GPU limit (kubernetes.py)
    model["volumeMounts"] = [shm_mount()]  # /dev/shm for the Python backend's tensors, as the Deployment's
    predictor: dict[str, Any] = {
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
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
                    "portNumber": PORTS["metrics"],
                    "path": "/metrics",
                    "interval": scrape_interval,
                    "relabelings": job_relabeling(app),
                }
            ],
        },
    }
