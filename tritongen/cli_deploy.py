"""``tritongen deploy``: a thin click command over the ``tritongen.deploy`` targets.

Each ``--to`` target maps to one function in :data:`TARGETS` that takes the parsed options and returns a result
with a ``summary()``; adding a target is one entry there (plus its options, ignored by the other targets).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

from .errors import TritongenError
from .plan_compat import DEFAULT_NGC_RELEASE


def _to_docker(repo: Path, out: Path, options: dict[str, Any]) -> Any:
    from .deploy.docker import docker_bundle_from_repository

    return docker_bundle_from_repository(
        repo,
        out,
        ngc_release=options["ngc_version"],
        host=options["host"],
        force=options["force"],
        extra_packages=_extra_packages(options["extra_packages"]),
        allow_unverified=options["allow_unverified"],
    )


def _to_cluster(target: str) -> Callable[[Path, Path, dict[str, Any]], Any]:
    def write(repo: Path, out: Path, options: dict[str, Any]) -> Any:
        from .deploy.k8s_bundle import kubernetes_bundle_from_repository

        return kubernetes_bundle_from_repository(
            repo, out, target=target, perf_results=options["perf_results"], slo_p99_ms=options["slo_p99_ms"],
            peak_rps=options["peak_rps"], model=options["model"], image=options["image"] or f"nvcr.io/nvidia/tritonserver:{options['ngc_version']}-py3",
            model_uri=options["model_uri"], namespace=options["namespace"], gpus=options["gpus"],
            canary_traffic_percent=options["canary_traffic_percent"], force=options["force"])

    return write


# --to value -> function(repo, out, options) returning a result with summary()
TARGETS: dict[str, Callable[[Path, Path, dict[str, Any]], Any]] = {
    "docker": _to_docker,
    "kubernetes": _to_cluster("kubernetes"),
    "kserve": _to_cluster("kserve"),
}


def _extra_packages(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for value in values:
        module, sep, requirement = value.partition("=")
        if not sep or not module or not requirement or not module.isidentifier():
            raise TritongenError(
                f"--extra-package '{value}' is not IMPORT=REQUIREMENT",
                "write the import name, '=' and a pinned requirement: --extra-package sklearn=scikit-learn==1.5.2",
            )
        out[module] = requirement
    return out


@click.command(short_help="Write what serves REPO: Docker (GPU host), Kubernetes or KServe bundles.")
@click.argument("repo", type=click.Path(path_type=Path), default="model_repository")
@click.option("--to", "target", type=click.Choice(sorted(TARGETS)), required=True, help="Where it will run.")
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Folder to write (must not exist, unless --force)."
)
@click.option(
    "--ngc-version",
    default=DEFAULT_NGC_RELEASE,
    show_default=True,
    metavar="YY.MM",
    help="NGC release of every image (Triton, TensorRT): plans built by one load in the other.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address the ports are published on; anything but loopback restricts the model-control APIs.",
)
@click.option(
    "--extra-package",
    "extra_packages",
    multiple=True,
    metavar="IMPORT=REQUIREMENT",
    help="A package for an import tritongen does not know, e.g. sklearn=scikit-learn==1.5.2 (repeatable).",
)
@click.option(
    "--allow-unverified",
    "allow_unverified",
    multiple=True,
    metavar="NAME",
    help="Accept model NAME without a manifest (written by hand; not verified). Repeatable.",
)
@click.option("--from-perf", "perf_results", type=click.Path(path_type=Path),
              help="kubernetes/kserve: results.json of tritongen perf on the target hardware (sets the thresholds).")
@click.option("--slo-p99-ms", type=float, help="kubernetes/kserve: the p99 latency objective in ms (with --from-perf).")
@click.option("--peak-rps", type=float, help="kubernetes/kserve: peak request rate to size the maximum replica count for.")
@click.option("--model", help="kubernetes/kserve: the model to scale on (default: the perf results' model, or the only one).")
@click.option("--image", default=None, help="kubernetes/kserve: serving image, e.g. the one --to docker builds (default: NGC's tritonserver of --ngc-version).")
@click.option("--model-uri", help="kubernetes/kserve: model repository: pvc://CLAIM[/path], s3://..., gs://..., or a path in the image.")
@click.option("--namespace", default="tritongen", show_default=True, help="kubernetes/kserve: namespace.")
@click.option("--gpus", type=int, default=1, show_default=True, help="kubernetes/kserve: GPUs per replica.")
@click.option("--canary-traffic-percent", type=int, help="kserve: share of traffic for the latest revision.")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
def deploy(repo: Path, target: str, out: Path, **options) -> None:
    """Write the files that serve REPO on TARGET into --out, for exactly this repository.

    \b
      tritongen deploy model_repository/ --to docker --out deploy/
      cd deploy && docker compose up        # pending TensorRT plans built first, then Triton
      tritongen deploy model_repository/ --to kubernetes --from-perf perf/results.json --slo-p99-ms 50 \\
          --peak-rps 2000 --out deploy/k8s/ && kubectl apply -k deploy/k8s/overlays/prod
    """
    result = TARGETS[target](repo, out, options)
    click.echo(result.summary())
