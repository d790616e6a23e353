"""``tritongen k8s``: a thin click command over :mod:`tritongen.deploy.bundle`, to be folded into
``tritongen deploy --to kubernetes|kserve``."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("k8s", short_help="Kubernetes/KServe bundle with autoscaling and alerts set from perf results.")
@click.argument("repo", type=click.Path(path_type=Path))
@click.option("--to", "target", type=click.Choice(["kubernetes", "kserve"]), default="kubernetes", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to write the bundle into.")
@click.option(
    "--from-perf",
    "perf_results",
    type=click.Path(path_type=Path),
    help="results.json of tritongen perf on the target hardware.",
)
@click.option("--slo-p99-ms", type=float, help="The p99 latency objective in ms (needed with --from-perf).")
@click.option("--peak-rps", type=float, help="Peak request rate to size the maximum replica count for.")
@click.option("--model", help="The model to scale on (default: the perf results' model, or the repository's only one).")
@click.option("--image", default=None, help="Serving image (default: NGC's Triton 24.10).")
@click.option(
    "--model-uri", help="Model repository: pvc://CLAIM[/path], s3://..., gs://..., as://..., or a path in the image."
)
@click.option("--namespace", default="tritongen", show_default=True)
@click.option("--gpus", type=int, default=1, show_default=True, help="GPUs per replica.")
@click.option("--canary-traffic-percent", type=int, help="KServe: share of traffic for the latest revision.")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
def deploy_k8s(repo: Path, image: str | None, **options) -> None:
    """Write a kustomize bundle (or a KServe InferenceService) for REPO, thresholds from measurements."""
    from .deploy.bundle import kubernetes_bundle_from_repository
    from .deploy.kubernetes import DEFAULT_IMAGE

    bundle = kubernetes_bundle_from_repository(repo, image=image or DEFAULT_IMAGE, **options)
    t = bundle.thresholds
    click.echo(
        f"wrote {bundle.out} ({bundle.target}, {len(bundle.files)} files; overlays {', '.join(bundle.overlays)})"
    )
    knee = f"knee {t.mode} {t.knee_load:g}, {t.capacity_rps:.1f} req/s per replica, " if t.measured else ""
    click.echo(
        f"thresholds {t.mark}: {knee}target {t.target_in_flight:g} requests in flight per replica, "
        f"replicas {t.min_replicas_prod}-{t.max_replicas_prod}"
    )
