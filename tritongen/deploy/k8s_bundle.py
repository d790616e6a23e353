"""The entry point: a model repository (and a perf measurement of it) in, a Kubernetes or KServe bundle out.

Layout written (``target="kubernetes"``)::

    README.md              how each number was derived, with the measured values (or "unmeasured")
    thresholds.json        the same numbers, for tools
    base/                  Deployment, Service, PodDisruptionBudget, ServiceMonitor, HPA, PrometheusRule
    overlays/dev|prod      namespace and replica bounds
    overlays/prod-keda     prod with a KEDA ScaledObject instead of the HPA
    monitoring/            rules.yaml (plain Prometheus rules), rules-test.yaml (promtool unit tests),
                           prometheus-adapter-values.yaml, grafana-dashboard.json

``target="kserve"``: ``base/`` holds a PodMonitor and the PrometheusRule, each overlay an InferenceService.
Everything is written into a temporary folder beside ``out`` and moved into place at the end: bad input writes
nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import TritongenError
from ..names import check_path_text, shown, with_suggestion
from ..perf.results import PerfRun
from ..plan_compat import DEFAULT_NGC_RELEASE, NGC_RELEASES, TRITON_IMAGE, check_release
from ..served_settings import comparable_settings
from . import kserve, monitoring
from . import kubernetes as k8s
from .bundle import check_out_dir, comment_text, write_bundle
from .rollout_record import unfollowed_records
from .thresholds import (
    Thresholds,
    config_changed_caution,
    load_time_from_tune_record,
    thresholds_from_run,
    tuned_after_caution,
    unmeasured_thresholds,
)

if TYPE_CHECKING:
    from ..verify import VerifyReport

TARGETS = ("kubernetes", "kserve")
DEFAULT_PROMETHEUS_URL = "http://prometheus-operated.monitoring.svc:9090"
MAX_PEAK_RPS = 1e9  # a billion requests a second: beyond any fleet this sizes
MAX_SLO_P99_MS = 3_600_000.0  # an hour
MIN_SLO_P99_MS = 0.01  # 10 us, below any served request (1e-300 wrote alert thresholds of 5e-298)
DEV_SUFFIX = "-dev"  # the dev overlay's namespace: <namespace>-dev
MAX_NAMESPACE_CHARS = 63 - len(DEV_SUFFIX)  # a namespace is a DNS-1123 label (63), and so is <namespace>-dev
_DNS_LABEL_RE = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?")


@dataclass(frozen=True)
class DeployBundle:
    """What was written: the folder, its files (relative paths), the model and the thresholds used."""

    out: Path
    target: str
    model: str
    app: str
    thresholds: Thresholds
    files: tuple[str, ...]
    overlays: tuple[str, ...]
    notes: tuple[str, ...] = ()  # rollout records the bundle does not follow (rollout_record.unfollowed_records)

    def text(self) -> str:
        """What ``tritongen deploy`` prints (:meth:`summary`); every result of the API has ``text()``."""
        return self.summary()

    def summary(self) -> str:
        t = self.thresholds
        knee = f"knee {t.mode} {t.knee_load:g}, {t.capacity_rps:.1f} req/s per replica, " if t.measured else ""
        return (
            f"wrote {self.out} ({self.target}, {len(self.files)} files; overlays {', '.join(self.overlays)})\n"
            f"thresholds {t.mark}: {knee}target {t.target_in_flight:g} requests in flight per replica, "
            f"replicas {t.min_replicas_prod}-{t.max_replicas_prod}"
            + "".join(f"\ncaution: {c}" for c in t.cautions)
            + "".join(f"\nnote: {n}" for n in t.notes)
            + "".join(f"\n{note}" for note in self.notes)
        )


MAX_GPUS_PER_REPLICA = 64  # GPUs of one pod, so of one node (8 or 16 on today's largest)


def _number(value: float) -> str:
    """``value`` as a person writes it: 1e9, not Python's 1e+09."""
    return re.sub(r"e\+0*", "e", f"{value:g}")


def _measured_source(run: Any, name: str) -> str:
    """Where measured thresholds come from: the file, the model, the levels used (and those left out)."""
    mode = run.points[0].mode if run.points else "concurrency"
    used = sum(p.mode == mode for p in run.points)
    left_out = len(run.points) - used
    kind, other = ("concurrency", "request-rate") if mode == "concurrency" else ("request-rate", "concurrency")

    def levels(count: int, which: str) -> str:
        return f"{count} {which} level{'' if count == 1 else 's'}"

    rest = f" ({levels(left_out, other)} left out: see thresholds.json)" if left_out else ""
    return f"tritongen perf {name} of {run.model}: {levels(used, kind)}{rest}, {run.engine} engine"


@dataclass(frozen=True)
class _ModelInfo:
    name: str
    max_batch_size: int
    instances: int


def _models(repo: Path, triton_version: str | None) -> dict[str, Any]:
    """The repository's model configs, once it validates (its TensorRT plans against ``triton_version``'s TensorRT,
    where the serving image's release is known)."""
    from ..validate import check_repository, config_from_file

    check_repository(repo, triton_version=triton_version)
    return {
        d.name: config_from_file(d / "config.pbtxt")
        for d in sorted(repo.iterdir())
        if d.is_dir() and not d.name.startswith(".") and (d / "config.pbtxt").is_file()
    }


def _run_from(perf_results: Path | PerfRun | None) -> PerfRun | None:
    """The run of a results.json (or its report folder), or one given as :func:`tritongen.perf` returned it: held
    to the same checks as a file (it is written as results.json would be and read back)."""
    from ..perf.results import json_from_run, run_from_json

    if perf_results is None:
        return None
    if isinstance(perf_results, PerfRun):
        return run_from_json(json_from_run(perf_results))
    check_path_text(perf_results, "--from-perf")  # its name goes into the bundle's files
    return run_from_json(Path(perf_results))


def _results_name(perf_results: Path | PerfRun | None) -> str:
    return "results (given in Python)" if isinstance(perf_results, PerfRun) else Path(str(perf_results)).name


def _verified_models(repo: Path, report: VerifyReport, configs: Mapping[str, Any]) -> dict[str, Any]:
    """``configs`` (the models :func:`_models` found) read again, each held to the digest the check found: a
    config.pbtxt swapped after it was read and before it was verified is not what the bundle is made from."""
    from ..validate import config_from_text
    from ..verify import verified_config_text

    return {
        name: config_from_text(verified_config_text(report, repo / name), source=str(repo / name / "config.pbtxt"))
        for name in configs
    }


def _check_stock_image(repo: Path, stock: str | None) -> None:
    """Refuse NGC's image (``stock``; None: KServe's Triton runtime's) for a repository it cannot serve: every pod
    would fail to load the models."""
    from .docker import stock_image_problems

    problems = stock_image_problems(repo)
    if problems:
        image = stock or f"the {kserve.RUNTIME} runtime's image"
        raise TritongenError(
            f"NGC's Triton image ({image}) cannot serve model repository {repo}: {'; '.join(problems)}",
            f"build the serving image with tritongen deploy {repo} --to docker, push it to your registry, and pass "
            "its name with --image",
        )


def _check_kserve_host_label(app: str, namespace: str) -> None:
    """KServe's RawDeployment names the predictor's host ``<isvc>-predictor-<namespace>``, one DNS label of at most
    63 characters (kserve/kserve#4807): longer, its controller never reconciles the InferenceService (the dev
    overlay's namespace is ``<namespace>-dev``)."""
    label = f"{app}-predictor-{namespace}{DEV_SUFFIX}"
    if len(label) > 63:
        room = 63 - len(f"{app}-predictor-{DEV_SUFFIX}")
        raise TritongenError(
            f"KServe would name the predictor's host '{label[:80]}', {len(label)} characters (a DNS label holds 63): "
            "its controller would never reconcile the InferenceService",
            f"use a --namespace of at most {max(room, 0)} characters"
            + ("" if room > 0 else ", and build the model under a shorter --name"),
        )


def check_namespace(namespace: Any) -> str:
    """``namespace`` if it is a Kubernetes namespace name (a DNS-1123 label) short enough that ``<namespace>-dev``,
    the dev overlay's, is one too."""
    from ..names import shown

    fix = (
        f"use at most {MAX_NAMESPACE_CHARS} lowercase letters, digits and '-', starting and ending with a letter or "
        "digit, e.g. --namespace tritongen"
    )
    if not isinstance(namespace, str):
        raise TritongenError(f"--namespace {shown(namespace)} is a {type(namespace).__name__}, not text", fix)
    if len(namespace) > MAX_NAMESPACE_CHARS:
        raise TritongenError(
            f"--namespace '{shown(namespace, 40)}' is {len(namespace)} characters long, above {MAX_NAMESPACE_CHARS} "
            f"(the dev overlay's namespace adds '{DEV_SUFFIX}', and Kubernetes allows 63)",
            fix,
        )
    if not _DNS_LABEL_RE.fullmatch(namespace):
        raise TritongenError(f"--namespace '{shown(namespace)}' is not a Kubernetes namespace name", fix)
    return namespace


def _served_model(configs: dict[str, Any], wanted: str | None, repo: Path, from_perf: bool = False) -> _ModelInfo:
    """The model to scale on: ``wanted`` (the perf results' model when ``from_perf``, else --model's), or the
    repository's only entry model."""
    steps = {s.model_name for c in configs.values() for s in c.ensemble_scheduling.step}
    entries = [name for name in configs if name not in steps]
    if wanted is None:
        if len(entries) != 1:
            raise TritongenError(
                f"model repository {repo} serves {len(entries)} models ({', '.join(entries)})",
                "name the one to scale on with --model, or pass its perf results",
            )
        wanted = entries[0]
    if wanted not in configs:
        if from_perf:
            fix = "pass the perf results of a model in this repository, or the repository it was measured on"
        else:
            fix = "name one the repository holds with --model"
        raise TritongenError(
            f"model '{wanted}' is not in model repository {repo} (it holds {', '.join(configs)})",
            with_suggestion(wanted, configs, fix),
        )
    c = configs[wanted]
    instances = sum(max(1, g.count) for g in c.instance_group) or 1
    return _ModelInfo(wanted, int(c.max_batch_size), instances)


def _yaml_text(objs: list[dict[str, Any]] | dict[str, Any], header: str) -> str:
    import yaml

    docs = objs if isinstance(objs, list) else [objs]
    return header + "---\n".join(yaml.safe_dump(d, sort_keys=False, width=1000) for d in docs)


def _header(t: Thresholds) -> str:
    return f"# Generated by tritongen deploy. Thresholds: {t.mark} ({comment_text(t.source)}); see README.md.\n"


def _kubernetes_files(
    app: str,
    namespace: str,
    image: str,
    source: k8s.ModelSource,
    t: Thresholds,
    q: monitoring.Queries,
    placement: k8s.Placement,
    prometheus_url: str,
    for_scale: float,
) -> dict[str, Any]:
    h = _header(t)
    groups = monitoring.rule_groups(q, t, for_scale=for_scale)
    files: dict[str, Any] = {
        "base/deployment.yaml": _yaml_text(k8s.deployment(app, image, source, t, placement), h),
        "base/service.yaml": _yaml_text(k8s.service(app), h),
        "base/pdb.yaml": _yaml_text(k8s.pod_disruption_budget(app), h),
        "base/servicemonitor.yaml": _yaml_text(k8s.service_monitor(app), h),
        "base/hpa.yaml": _yaml_text(k8s.hpa(app, q, t, t.min_replicas_prod, t.max_replicas_prod), h),
        "base/prometheusrule.yaml": _yaml_text(monitoring.prometheus_rule(app, k8s._labels(app), groups, t.mark), h),
        "base/kustomization.yaml": _yaml_text(
            k8s.kustomization(
                [
                    "deployment.yaml",
                    "service.yaml",
                    "pdb.yaml",
                    "servicemonitor.yaml",
                    "hpa.yaml",
                    "prometheusrule.yaml",
                ]
            ),
            h,
        ),
        "overlays/dev/kustomization.yaml": _yaml_text(
            k8s.kustomization(
                ["../../base"],
                namespace=f"{namespace}{DEV_SUFFIX}",
                labels={"tritongen.dev/environment": "dev"},
                patches=k8s.replicas_patch(app, t.min_replicas_dev, t.max_replicas_dev),
            ),
            h,
        ),
        "overlays/prod/kustomization.yaml": _yaml_text(
            k8s.kustomization(
                ["../../base"],
                namespace=namespace,
                labels={"tritongen.dev/environment": "prod"},
                patches=k8s.replicas_patch(app, t.min_replicas_prod, t.max_replicas_prod),
            ),
            h,
        ),
        "overlays/prod-keda/scaledobject.yaml": _yaml_text(
            monitoring.scaled_object(
                app,
                namespace,
                app,
                q,
                t,
                prometheus_url=prometheus_url,
                min_replicas=t.min_replicas_prod,
                max_replicas=t.max_replicas_prod,
            ),
            h,
        ),
        "overlays/prod-keda/kustomization.yaml": _yaml_text(
            k8s.kustomization(
                ["../prod", "scaledobject.yaml"],
                patches=[k8s.delete_patch("autoscaling/v2", "HorizontalPodAutoscaler", app)],
            ),
            h,
        ),
    }
    return files


def _kserve_files(
    app: str,
    namespace: str,
    storage_uri: str,
    t: Thresholds,
    q: monitoring.Queries,
    placement: k8s.Placement,
    prometheus_url: str,
    canary_traffic_percent: int | None,
    for_scale: float,
    image: str | None,
) -> dict[str, Any]:
    h = _header(t)
    groups = monitoring.rule_groups(q, t, for_scale=for_scale)
    files: dict[str, Any] = {
        "base/podmonitor.yaml": _yaml_text(kserve.pod_monitor(app), h),
        "base/prometheusrule.yaml": _yaml_text(monitoring.prometheus_rule(app, k8s._labels(app), groups, t.mark), h),
        "base/kustomization.yaml": _yaml_text(k8s.kustomization(["podmonitor.yaml", "prometheusrule.yaml"]), h),
    }
    for env, ns, lo, hi in (
        ("dev", f"{namespace}{DEV_SUFFIX}", t.min_replicas_dev, t.max_replicas_dev),
        ("prod", namespace, t.min_replicas_prod, t.max_replicas_prod),
    ):
        isvc = kserve.inference_service(
            app,
            ns,
            storage_uri,
            q,
            t,
            placement,
            prometheus_url=prometheus_url,
            min_replicas=lo,
            max_replicas=hi,
            canary_traffic_percent=canary_traffic_percent,
            image=image,
        )
        files[f"overlays/{env}/inferenceservice.yaml"] = _yaml_text(isvc, h)
        files[f"overlays/{env}/kustomization.yaml"] = _yaml_text(
            k8s.kustomization(
                ["../../base", "inferenceservice.yaml"], namespace=ns, labels={"tritongen.dev/environment": env}
            ),
            h,
        )
    return files


def _monitoring_files(app: str, t: Thresholds, q: monitoring.Queries, for_scale: float) -> dict[str, Any]:
    import yaml

    h = _header(t)
    return {
        "monitoring/rules.yaml": h
        + yaml.safe_dump({"groups": monitoring.rule_groups(q, t, for_scale=for_scale)}, sort_keys=False, width=1000),
        "monitoring/rules-test.yaml": h
        + yaml.safe_dump(
            monitoring.promtool_tests(q, t, "rules.yaml", for_scale=for_scale), sort_keys=False, width=1000
        ),
        "monitoring/prometheus-adapter-values.yaml": h
        + yaml.safe_dump(monitoring.adapter_values(q, t), sort_keys=False, width=1000),
        "monitoring/grafana-dashboard.json": json.dumps(
            monitoring.grafana_dashboard(q, t, f"Triton: {t.model}"), indent=2
        )
        + "\n",
        "thresholds.json": t.json(),
    }


def kubernetes_bundle_from_repository(
    repo: Path,
    out: Path,
    *,
    target: str = "kubernetes",
    perf_results: Path | PerfRun | None = None,
    slo_p99_ms: float | None = None,
    peak_rps: float | None = None,
    model: str | None = None,
    image: str | None = None,
    ngc_release: str | None = None,
    model_uri: str | None = None,
    namespace: str = "tritongen",
    gpus: int | None = None,
    load_time_s: float | None = None,
    prometheus_url: str = DEFAULT_PROMETHEUS_URL,
    canary_traffic_percent: int | None = None,
    rate_window: str = "1m",
    alert_for_scale: float = 1.0,
    force: bool = False,
    allow_unverified: tuple[str, ...] = (),
    signed_digests: Mapping[str, str] | None = None,
) -> DeployBundle:
    """Write a Kubernetes (kustomize) or KServe bundle for ``repo`` into ``out``; thresholds from ``perf_results``.

    Raises :class:`TritongenError` (and writes nothing) when the repository does not validate, the perf results
    are of a model the repository does not hold, the objective is below the p99 measured at the lowest load, or
    an option is out of range. ``rate_window`` (every rate's range) and ``alert_for_scale`` (multiplies every
    alert's ``for``) exist for fast live checks: a cluster keeps the defaults. ``ngc_release``: the NGC release of
    the serving image (TensorRT plans are checked against its TensorRT); None: :data:`DEFAULT_NGC_RELEASE` for
    Kubernetes, for KServe the Triton runtime's image, of a release the cluster decides (refused for a repository
    with TensorRT plans: KServe 0.20 installs Triton 23.05, older than any plan tritongen builds). ``image`` None:
    NGC's Triton image of ``ngc_release`` (KServe with ``ngc_release`` None: its Triton runtime's), refused for a
    repository that image cannot serve (see :func:`tritongen.deploy.docker.stock_image_problems`). ``gpus`` None: 1
    per replica, 0 where no model runs on a GPU (:func:`tritongen.deploy.docker.model_needs_gpu`). The repository
    must verify (:func:`tritongen.verify.check_verified`), as for ``deploy --to docker``; ``allow_unverified``:
    models without a build manifest (written by hand) deployed all the same.
    """
    from ..verify import check_held_to_signature, check_verified

    out = check_out_dir(Path(out), Path(repo), force)  # before any work: an existing bundle, or one inside the repo
    if target not in TARGETS:
        raise TritongenError(
            f"deploy target '{target}' is not one this bundle writes", f"use one of {', '.join(TARGETS)}"
        )
    if peak_rps is not None and not 0 < peak_rps <= MAX_PEAK_RPS:
        raise TritongenError(
            f"--peak-rps {peak_rps:g} is not a request rate above 0 and at most {_number(MAX_PEAK_RPS)} per second",
            "give the peak request rate in requests per second",
        )
    if peak_rps is not None and perf_results is None:
        raise TritongenError(
            f"--peak-rps {peak_rps:g} sizes the maximum replica count by the capacity per replica a perf run "
            "measures, and no --from-perf results are given (the unmeasured default would be kept)",
            "measure the model on the target hardware (tritongen perf MODEL --concurrency 1,2,4,8,16,32 --report "
            "perf/) and pass --from-perf perf/ and --slo-p99-ms with it, or leave out --peak-rps",
        )
    if slo_p99_ms is not None and not MIN_SLO_P99_MS <= slo_p99_ms <= MAX_SLO_P99_MS:
        raise TritongenError(
            f"--slo-p99-ms {slo_p99_ms:g} is not a latency from {MIN_SLO_P99_MS:g} ms (10 us) to "
            f"{MAX_SLO_P99_MS:.0f} ms (an hour)",
            "give the p99 latency objective in milliseconds",
        )
    check_namespace(namespace)
    if ngc_release is None and target == "kubernetes":
        ngc_release = DEFAULT_NGC_RELEASE
    release = check_release(ngc_release) if ngc_release is not None else None
    if image is not None and (not image or any(c.isspace() or not c.isprintable() for c in image)):
        raise TritongenError(
            f"--image '{shown(image)}' is not an image name",
            "give the serving image, e.g. registry.example.com/team/triton:1",
        )
    if gpus is not None and not 0 <= gpus <= MAX_GPUS_PER_REPLICA:
        raise TritongenError(
            f"--gpus {gpus} is not a number of GPUs one node has",
            f"give the number of GPUs per replica, 0 (none) to {MAX_GPUS_PER_REPLICA}",
        )
    if alert_for_scale <= 0:
        raise TritongenError(f"alert for-scale {alert_for_scale:g} is not positive", "leave it at 1 outside tests")
    if canary_traffic_percent is not None and not 0 <= canary_traffic_percent <= 100:
        raise TritongenError(f"canary traffic {canary_traffic_percent}% is not a percentage", "give 0 to 100")
    if canary_traffic_percent is not None and target != "kserve":
        raise TritongenError(
            f"--canary-percent is KServe's canaryTrafficPercent, not a {target} bundle's",
            "use --to kserve, or compare versions on one server (tritongen perf MODEL --version-split 1:90,2:10)",
        )
    repo = Path(repo)
    run = _run_from(perf_results)
    configs = _models(repo, NGC_RELEASES[release][0] if release is not None else None)
    if run is not None and model is not None and model != run.model:
        _served_model(configs, model, repo)  # a --model the repository does not hold is named as such first
        raise TritongenError(
            f"the perf results are of model '{run.model}', not '{model}'",
            f"pass the results of a perf run on {model}, or leave out --model",
        )
    report = check_verified(repo, allow_unverified=allow_unverified)  # before tune.json or a manifest is read
    check_held_to_signature(report, signed_digests)  # and each verified file the one signed
    configs = _verified_models(repo, report, configs)  # what the bundle is made from: the bytes verified
    info = _served_model(configs, run.model if run is not None else model, repo, from_perf=run is not None)
    stock = TRITON_IMAGE.format(release=release) if release is not None else None  # None: KServe's runtime's
    if image is None:
        _check_stock_image(repo, stock)
    if gpus is None:
        from .docker import model_needs_gpu

        gpus = 1 if any(model_needs_gpu(c) for c in configs.values()) else 0
    if load_time_s is None:
        # a model allowed unverified has no digests: its record is read as it is, as its config is
        verified = None if info.name in report.unverified_models else report.digests
        load_time_s = load_time_from_tune_record(repo / info.name, verified)
    if run is not None:
        if slo_p99_ms is None:
            raise TritongenError(
                "measured thresholds need a latency objective", "pass --slo-p99-ms (the p99 you promise)"
            )
        t = thresholds_from_run(
            run,
            slo_p99_ms=slo_p99_ms,
            peak_rps=peak_rps,
            load_time_s=load_time_s,
            source=_measured_source(run, _results_name(perf_results)),
        )
        stale = (
            config_changed_caution(comparable_settings(configs[info.name]), run, repo)
            if run.served is not None
            else tuned_after_caution(repo / info.name, run)
        )
        if stale is not None:
            t = replace(t, cautions=(*t.cautions, stale))
    else:
        t = unmeasured_thresholds(
            info.name,
            max_batch_size=info.max_batch_size,
            instances=info.instances,
            slo_p99_ms=slo_p99_ms,
            load_time_s=load_time_s,
        )
    app = k8s.app_name_for(info.name)
    if target == "kserve":
        _check_kserve_host_label(app, namespace)
    q = monitoring.Queries(job=app, model=info.name, window=rate_window)
    placement = k8s.Placement(gpus=gpus, compute_capabilities=k8s.compute_capabilities_from_repository(repo, configs))
    if target == "kserve" and release is None and image is None and placement.compute_capabilities:
        raise TritongenError(
            "the repository's TensorRT plans load only in the TensorRT they were built with, and KServe's Triton "
            f"runtime runs the image its cluster gives it (KServe 0.20 installs {kserve.RUNTIME_IMAGE}, TensorRT 8.6)",
            "pass --ngc-version with the NGC release the plans were built in (the TensorRT image `tritongen engine` "
            "ran in), or --image with a serving image of it",
        )
    uri = model_uri or f"pvc://{app}-models"
    source = k8s.model_source_from_uri(uri)
    if target == "kserve" and not uri.startswith(kserve.STORAGE_SCHEMES):
        raise TritongenError(
            f"--model-uri '{shown(uri, 200)}' is not a storageUri KServe reads (its storage initializer copies the "
            "repository into /mnt/models, where its Triton runtime serves it from)",
            f"use {', '.join(s + '...' for s in kserve.STORAGE_SCHEMES)}, or deploy to kubernetes",
        )
    if target == "kubernetes":
        files = _kubernetes_files(
            app, namespace, image or str(stock), source, t, q, placement, prometheus_url, alert_for_scale
        )
        overlays: tuple[str, ...] = ("dev", "prod", "prod-keda")
    else:
        files = _kserve_files(
            app,
            namespace,
            uri,
            t,
            q,
            placement,
            prometheus_url,
            canary_traffic_percent,
            alert_for_scale,
            image or stock,
        )
        overlays = ("dev", "prod")
    files.update(_monitoring_files(app, t, q, alert_for_scale))
    from ..templates import render

    files["README.md"] = render(
        "deploy/k8s-README.md.j2",
        t=t,
        app=app,
        target=target,
        overlays=overlays,
        namespace=namespace,
        image=image or stock or f"the {kserve.RUNTIME} runtime's",
        uri=uri,
        metric=monitoring.metric_name_for(info.name),
        hpa_query=q.in_flight_per_pod(),
        placement=placement,
        startup_s=k8s.startup_failure_threshold(t) * k8s.PROBE_PERIOD_S,
        grace_s=k8s.grace_period_s(t),
        prestop_s=k8s.PRESTOP_SLEEP_S,
        canary_percent=canary_traffic_percent,
        canary_p99_ratio=monitoring.CANARY_P99_RATIO,
    )
    notes = unfollowed_records(repo)  # before anything is written: a failure here leaves no bundle
    write_bundle(out, files, force=force)
    return DeployBundle(out, target, info.name, app, t, tuple(sorted(files)), overlays, notes)
