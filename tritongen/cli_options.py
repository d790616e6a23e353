"""Click options and argument forms more than one CLI file uses (cli, cli_deploy, cli_perf, cli_rollout); this
imports only click, tritongen.errors, tritongen.layout and tritongen.names (and tritongen.infer, inside
name_from_folder)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import click

from .errors import TritongenError
from .layout import repository_models
from .names import listed, with_suggestion

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


MODEL_ARGS_METAVAR = "REPO NAME | REPO/NAME"


def echo_err(message: str) -> None:
    """A line to stderr: progress and notes, so stdout holds only the result (every CLI file's progress callback)."""
    click.echo(message, err=True)


def repo_and_name(args: tuple[str, ...], command: str) -> tuple[Path, str]:
    """A model named as ``REPO NAME`` or as its folder ``REPO/NAME`` (one argument): the forms every command that
    acts on a model of a repository takes."""
    usage = f"tritongen {command} model_repository my-model (or model_repository/my-model)"
    if len(args) == 2:
        return Path(args[0]), args[1]
    if len(args) == 1:
        folder = Path(args[0])
        whole = Path(os.path.abspath(folder))  # not resolve(): a linked model folder stays a link, as REPO NAME has it
        if (folder / "config.pbtxt").is_file() and whole.name:
            return whole.parent, whole.name
        _refuse_repository(
            args[0], command, lambda model: f"pass REPO NAME, e.g. tritongen {command} {args[0]} {model}"
        )
        _refuse_missing_model(args[0])
        raise TritongenError(
            f"{args[0]} is not a model folder (no config.pbtxt in it), and no model name follows it",
            f"pass REPO NAME or the model's folder: {usage}",
        )
    raise TritongenError(f"{command} takes one model, got {len(args)} arguments", f"pass REPO NAME: {usage}")


def name_from_folder(name: str, options: dict) -> str:
    """``infer REPO/NAME`` (and ``perf``): a model's folder given for NAME names the model and its repository (the
    ``repo`` option, where given, must be that repository: :func:`tritongen.infer.model_from_folder`)."""
    from .infer import model_from_folder

    source = click.get_current_context().get_parameter_source("repo")
    given = None if source is click.core.ParameterSource.DEFAULT else options["repo"]
    if not (Path(name) / "config.pbtxt").is_file():
        command = click.get_current_context().info_name or "infer"
        _refuse_repository(name, command, lambda model: f"name the model: tritongen {command} {Path(name, model)}")
        _refuse_missing_model(name)
    name, repo = model_from_folder(name, given)
    if repo is not None:
        options["repo"] = repo
    return name


def _refuse_missing_model(given: str) -> None:
    """Raise when ``given`` reads as ``REPO/NAME`` for a repository that holds no model NAME (a typo in NAME was
    taken whole for a model's name, and the default repository named: "no build of model 'repo/convnett' in
    model_repository")."""
    folder = Path(given)
    if (os.sep not in given and "/" not in given) or folder.name in ("", ".", "..") or folder.exists():
        return  # a name, or a folder that is there (without a config.pbtxt: said as such where it is read)
    models = repository_models(folder.parent)
    if models and folder.name not in models:
        raise TritongenError(
            f"the model repository {folder.parent} holds no model '{folder.name}' (models there: {listed(models)})",
            with_suggestion(folder.name, models, "check the model's name"),
        )


def _refuse_repository(given: str, command: str, fix: Callable[[str], str]) -> None:
    """Raise when the folder ``given`` for a model is a repository (model folders with a config.pbtxt in it), naming
    its first models (at most 1000 looked at); ``fix`` words the fix for its first model."""
    models = repository_models(Path(given))
    if models:
        raise TritongenError(
            f"{given} is a model repository, not a model: {command} needs the model too (models there: "
            f"{listed(models)})",
            fix(models[0]),
        )


PUBLIC_KEY = click.option(
    "--public-key",
    type=click.Path(path_type=Path),
    help="PEM public key: first check REPO's signature (tritongen sign), so a changed, added or removed file fails.",
)
SIGNATURE = click.option(
    "--signature", type=click.Path(path_type=Path), help="Signature file (default: REPO/.tritongen-signature.sig)."
)
