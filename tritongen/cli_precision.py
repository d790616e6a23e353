"""``tritongen lint`` and ``tritongen engine``: thin click commands over the public API (:func:`tritongen.lint`,
:func:`tritongen.engine`)."""

from __future__ import annotations

from pathlib import Path

import click

from . import api
from .cli_options import echo_err
from .engine import workspace_bytes_from_gb
from .errors import TritongenError


@click.command(short_help="Check an ONNX file, a repository or one model for TensorRT, offline.")
@click.argument("path", type=click.Path(path_type=Path), default="model_repository")
def lint(path: Path) -> None:
    """Check an ONNX file, every model in a repository, or one model given as its folder REPO/NAME, for TensorRT
    offline.

    Opset, operators, INT64 tensors, profiles and size.
    """
    reports = api.lint(path)
    for report in reports:
        click.echo(report.text())
    bad = [r for r in reports if not r.ok]
    if bad:
        raise TritongenError(
            f"{len(bad)} of {len(reports)} model(s) will not pass TensorRT's ONNX parser", "see the findings above"
        )


@click.command(short_help="Build TensorRT plans for models prepared with --target tensorrt (needs TensorRT).")
@click.argument("repo", type=click.Path(path_type=Path), default="model_repository")
@click.option("--workspace-gb", type=float, help="Builder workspace limit in GiB (default: engine.json's, 4).")
@click.option(
    "--opt-level", "optimization_level", type=click.IntRange(0, 5), help="Builder optimization level 0-5 (default 3)."
)
@click.option(
    "--per-cc",
    is_flag=True,
    help="Save model.<cc>.plan and list it in cc_model_filenames (plans for several GPUs in one repository).",
)
@click.option("--rebuild", is_flag=True, help="Build plans again even where the manifest records a current one.")
def engine(repo: Path, workspace_gb: float | None, optimization_level: int | None, per_cc: bool, rebuild: bool) -> None:
    """Build model.plan for every model in REPO prepared by `build --target tensorrt`, or for one model given as its
    folder REPO/NAME (needs TensorRT and a GPU)."""
    results = api.engine(
        repo,
        workspace_bytes=workspace_bytes_from_gb(workspace_gb) if workspace_gb is not None else None,
        optimization_level=optimization_level,
        per_cc=per_cc,
        rebuild=rebuild,
        progress=echo_err,
    )
    for r in results:
        click.echo(r.text())
