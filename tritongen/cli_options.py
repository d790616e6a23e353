"""Click options more than one CLI file uses (cli, cli_deploy, cli_rollout import them; this imports only click)."""

from __future__ import annotations

import click

ALLOW_UNVERIFIED = click.option(
    "--allow-unverified",
    "allow_unverified",
    multiple=True,
    metavar="NAME",
    help="Accept model NAME without a manifest (written by hand; not verified). Repeatable.",
)
