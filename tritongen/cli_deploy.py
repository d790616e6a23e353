"""``tritongen deploy``: a thin click command over the ``tritongen.deploy`` targets.

Each ``--to`` target maps to one function in :data:`tritongen.deploy.TARGETS` that takes the parsed options and
returns a result with a ``summary()``; adding a target is one entry there (plus its options here).
"""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

from . import api
from .cli_options import ALLOW_UNVERIFIED, PUBLIC_KEY, SIGNATURE
from .deploy import TARGETS
from .plan_compat import DEFAULT_NGC_RELEASE


@click.command(short_help="Write what serves REPO: Docker (GPU host), Kubernetes or KServe bundles.")
@click.argument("repo", type=click.Path(path_type=Path), default="model_repository")
@click.option("--to", "target", type=click.Choice(sorted(TARGETS)), required=True, help="Where it will run.")
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Folder to write (must not exist, unless --force)."
)
@click.option(
    "--ngc-version",
    default=DEFAULT_NGC_RELEASE,
    metavar="YY.MM",
    help=f"NGC release of every image (Triton, TensorRT): plans built by one load in the other (default: "
    f"{DEFAULT_NGC_RELEASE}; kserve: its Triton runtime's image, refused with TensorRT plans).",
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
@ALLOW_UNVERIFIED
@click.option(
    "--from-perf",
    "perf_results",
    type=click.Path(path_type=Path),
    help="kubernetes/kserve: results.json of tritongen perf on the target hardware (sets the thresholds).",
)
@click.option("--slo-p99-ms", type=float, help="kubernetes/kserve: the p99 latency objective in ms (with --from-perf).")
@click.option(
    "--peak-rps", type=float, help="kubernetes/kserve: peak request rate to size the maximum replica count for."
)
@click.option(
    "--model", help="kubernetes/kserve: the model to scale on (default: the perf results' model, or the only one)."
)
@click.option(
    "--image",
    default=None,
    help="kubernetes/kserve: serving image, e.g. the one --to docker builds (default: NGC's tritonserver of "
    "--ngc-version; kserve without --ngc-version: the Triton runtime's).",
)
@click.option(
    "--model-uri",
    help="kubernetes/kserve: model repository: pvc://CLAIM[/path], s3://..., gs://..., or (kubernetes) as://... or "
    "a path in the image.",
)
@click.option(
    "--namespace",
    default="tritongen",
    show_default=True,
    help="kubernetes/kserve: namespace (a DNS-1123 label of at most 59 characters; dev adds -dev).",
)
@click.option(
    "--gpus",
    type=int,
    default=None,
    help="kubernetes/kserve: GPUs per replica (default: 1, or 0 where no model runs on a GPU).",
)
@click.option(
    "--canary-percent",
    "--canary-traffic-percent",
    "canary_traffic_percent",
    type=int,
    help="kserve: share of traffic for the latest revision (canaryTrafficPercent); the rules compare its versions.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace --out if it exists and is empty or a bundle tritongen deploy wrote (never the repository's folder).",
)
@PUBLIC_KEY
@SIGNATURE
def deploy(repo: Path, target: str, out: Path, **options) -> None:
    """Write the files that serve REPO on TARGET into --out, for exactly this repository.

    \b
      tritongen deploy model_repository/ --to docker --out deploy/
      cd deploy && docker compose up        # pending TensorRT plans built first, then Triton
      tritongen deploy model_repository/ --to kubernetes --from-perf perf/results.json --slo-p99-ms 50 \\
          --peak-rps 2000 --out deploy/k8s/ && kubectl apply -k deploy/k8s/overlays/prod
    """
    # only the flags given: a target refuses another target's options, and the defaults are the API's
    ctx = click.get_current_context()
    given = {k: v for k, v in options.items() if ctx.get_parameter_source(k) is not ParameterSource.DEFAULT}
    result = api.deploy(repo, to=target, out=out, **given)
    click.echo(result.summary())
