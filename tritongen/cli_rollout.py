"""``tritongen rollout`` and ``tritongen rollback``: thin click commands over :mod:`tritongen.deploy.rollout`."""

from __future__ import annotations

import re
from pathlib import Path

import click

from . import api
from .cli_options import ALLOW_UNVERIFIED, MODEL_ARGS_METAVAR, PROTOCOL, SIGNATURE, echo_err, repo_and_name
from .deploy.gate import GateThresholds
from .errors import TritongenError
from .signals import sigterm_as_keyboard_interrupt

_DEFAULTS = GateThresholds()
_HEADER = click.option(
    "--header",
    "header",
    multiple=True,
    metavar="NAME=VALUE",
    help="Send this header with every request to the server (repeatable): e.g. the key of a server started with "
    "--grpc-restricted-protocol / --http-restricted-api (over gRPC Triton expects the name "
    "triton-grpc-protocol-<key>).",
)
_PUBLIC_KEY = click.option(
    "--public-key",
    type=click.Path(path_type=Path),
    help="PEM public key: every file sent must be the one REPO's signature lists (tritongen sign). Default: the key "
    "of a server that serve --public-key started on this machine, else no signature check.",
)
_URL_HELP = "Server address (default 127.0.0.1:8001 for gRPC, or $TRITONGEN_URL). It needs explicit model control."


@click.command(short_help="Load a new version beside the live one, judge it, switch to it, unload the old one.")
@click.argument("model", nargs=-1, required=True, metavar=MODEL_ARGS_METAVAR)
@click.option(
    "--to-version", type=int, required=True, help="The version folder to roll out (built with --new-version)."
)
@click.option(
    "--golden",
    type=click.Path(path_type=Path),
    help="Golden set: .npz keyed by input name (optional 'labels'), or a text file (one text a line, "
    "'label<TAB>text' for labels). Default: the new version's saved samples.",
)
@click.option(
    "--max-latency-ratio",
    "--max-p99-ratio",
    "max_latency_ratio",
    type=float,
    default=_DEFAULTS.max_latency_ratio,
    show_default=True,
    help="Refuse when the new version is consistently slower than this times the live one: the median over "
    "interleaved rounds of the rounds' p90 ratios, with its whole 90% bootstrap interval above this "
    "(--max-p99-ratio: its earlier name).",
)
@click.option(
    "--min-cosine",
    type=float,
    default=_DEFAULTS.min_cosine,
    show_default=True,
    help="Refuse when any answer's cosine similarity to the live version's is below this.",
)
@click.option(
    "--min-top1",
    type=float,
    default=_DEFAULTS.min_top1_agreement,
    show_default=True,
    help="Refuse when top-1 agreement (outputs with a class axis) is below this.",
)
@click.option(
    "--max-abs-error", type=float, help="Refuse when an output differs by more than this (default: report only)."
)
@click.option(
    "--max-accuracy-drop",
    type=float,
    default=_DEFAULTS.max_accuracy_drop,
    show_default=True,
    help="With labels: refuse when accuracy drops by more than this.",
)
@click.option(
    "--gate-requests",
    type=int,
    default=_DEFAULTS.latency_requests,
    show_default=True,
    help="Timed requests per version in the gate, at least (in up to 10 interleaved rounds; every golden request is "
    "sent at least once, so a larger golden set sends more).",
)
@click.option("--url", help=_URL_HELP)
@PROTOCOL
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Folder for comparison.json (default rollout_reports/NAME-vFROM-to-vTO, then -2, -3 for later gates).",
)
@_HEADER
@ALLOW_UNVERIFIED
@_PUBLIC_KEY
@SIGNATURE
@click.option("--timeout", "timeout_s", type=float, default=300.0, show_default=True, help="Seconds per model load.")
def rollout(model: tuple[str, ...], to_version: int, **options) -> None:
    """Roll model NAME of REPO out to version --to-version on a running server with explicit model control.

    Examples:

    \b
      tritongen rollout model_repository resnet --to-version 2
      tritongen rollout model_repository resnet --to-version 2 --golden golden.npz --max-latency-ratio 1.3
    """
    repo, name = repo_and_name(model, "rollout")
    options["headers"] = headers_from_options(options.pop("header"))
    with sigterm_as_keyboard_interrupt():  # SIGTERM (kill, a CI timeout) undoes the gate as Ctrl-C does
        result = api.rollout(repo, name, to_version=to_version, progress=echo_err, **options)
    click.echo(result.summary())
    if result.gate is not None and not result.gate.passed:
        fix = f"see {result.gate.path}, fix the model or pass looser thresholds"
        if result.gate.latency_only:
            fix = (
                f"see {result.gate.path}: every answer agreed, but the new version's latency was above "
                "--max-latency-ratio times the live one's in most rounds; "
                f"make it faster and build it again, or pass --max-latency-ratio above "
                f"{result.gate.latency_ratio:.2f} if that is acceptable"
            )
            if result.gate.traffic_note:
                fix += f" ({result.gate.traffic_note})"
        raise TritongenError(
            f"version {result.to_version} failed the gate ({'; '.join(result.gate.reasons)}); "
            f"version {result.from_version} keeps serving",
            fix,
        )


@click.command(short_help="Return model NAME to the version that served before the last rollout.")
@click.argument("model", nargs=-1, required=True, metavar=MODEL_ARGS_METAVAR)
@click.option("--to-version", type=int, help="Roll back to this version (default: the one before the last rollout).")
@click.option("--url", help=_URL_HELP)
@PROTOCOL
@_HEADER
@ALLOW_UNVERIFIED
@_PUBLIC_KEY
@SIGNATURE
@click.option(
    "--force",
    is_flag=True,
    help="Roll back even to a version whose rollout the gate refused (the model's rollout record says so).",
)
@click.option("--timeout", "timeout_s", type=float, default=300.0, show_default=True, help="Seconds per model load.")
def rollback(model: tuple[str, ...], **options) -> None:
    """Roll model NAME of REPO back (no gate) on a running server with explicit model control.

    Examples:

    \b
      tritongen rollback model_repository resnet                  # to the version before the last rollout
      tritongen rollback model_repository resnet --to-version 1
    """
    repo, name = repo_and_name(model, "rollback")
    options["headers"] = headers_from_options(options.pop("header"))
    with sigterm_as_keyboard_interrupt():  # SIGTERM finishes or leaves the switch as Ctrl-C does
        result = api.rollback(repo, name, progress=echo_err, **options)
    click.echo(result.summary())


def headers_from_options(values: tuple[str, ...]) -> dict[str, str]:
    """``NAME=VALUE`` strings as a header mapping (gRPC metadata wants lower-case names)."""
    headers: dict[str, str] = {}
    for value in values:
        key, sep, text = value.partition("=")
        key = key.strip().lower()
        if not sep or not key or any(c.isspace() or c in ":\r\n" for c in key) or any(c in "\r\n" for c in text):
            raise TritongenError(
                f"--header {value!r} is not NAME=VALUE", "pass e.g. --header triton-grpc-protocol-admin=secret"
            )
        # what both gRPC metadata and HTTP carry as text: gRPC core refused others with its own log lines, and a
        # "-bin" name wants bytes
        if not _HEADER_NAME.fullmatch(key) or key.endswith("-bin") or not all(" " <= c <= "~" for c in text):
            raise TritongenError(
                f"--header {value!r} is not a header both gRPC and HTTP carry",
                "use a name of lower-case letters, digits, '-', '_' and '.' (not ending in -bin) and a value of "
                "printable ASCII characters",
            )
        headers[key] = text
    return headers


_HEADER_NAME = re.compile(r"[0-9a-z._-]+")
