"""Click options more than one CLI file uses (cli, cli_deploy, cli_perf, cli_rollout); this imports only click."""

from __future__ import annotations

import click

ALLOW_UNVERIFIED = click.option(
    "--allow-unverified",
    "allow_unverified",
    multiple=True,
    metavar="NAME",
    help="Accept model NAME without a manifest (written by hand; not verified). Repeatable.",
)
PROTOCOL = click.option(
    "--protocol",
    type=click.Choice(["grpc", "http"], case_sensitive=False),  # --protocol HTTP reads http
    default=None,
    help="grpc or http (default: the scheme of --url or $TRITONGEN_URL, http:// or grpc://, else grpc).",
)
