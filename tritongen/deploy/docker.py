"""``tritongen deploy REPO --to docker``: the Dockerfiles and compose file that serve one model repository.

What is written depends on the repository, decided here (the templates under ``templates/deploy/docker/``
only lay it out):

- ``serving.Dockerfile``: NGC's ``tritonserver:<release>-py3`` plus exactly the pinned PyPI packages the
  repository's Python-backend models import (:mod:`tritongen.deploy.python_deps`); without Python-backend
  models Triton runs from NGC's image as it is and no Dockerfile is written;
- ``engine-builder.Dockerfile`` and ``wheels/tritongen-*.whl``, only while TensorRT plans are pending: NGC's
  ``tensorrt:<same release>-py3`` with tritongen installed from that wheel (:mod:`tritongen.deploy.wheel`);
- ``compose.yaml``: Triton on the repository (read-only, from ``$TRITONGEN_REPOSITORY`` or its path relative to
  the bundle), ports on 127.0.0.1 unless ``host`` says otherwise (then the model-control APIs need a secret
  header), a health check on ``/v2/health/ready``, and, with pending plans, the engine builder that Triton waits
  for (``service_completed_successfully``);
- ``README.md``: the commands.

One NGC release (YY.MM, :data:`tritongen.plan_compat.NGC_RELEASES`) feeds every image, so plans built in the
builder load in the server. The repository must validate (plans checked against that release's TensorRT) and
verify; every problem is one :class:`TritongenError` before anything is written.
"""

from __future__ import annotations

import hashlib
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TritongenError
from ..plan_compat import (
    DEFAULT_NGC_RELEASE,
    NGC_PLATFORMS,
    NGC_RELEASES,
    TENSORRT_IMAGE,
    TRITON_IMAGE,
    check_release,
    pending_plans_from_repository,
)
from ..server.docker import docker_host
from .bundle import check_out_dir, comment_text, render, write_bundle
from .python_deps import ServingPackages, serving_packages_from_repository
from .rollout_record import unfollowed_records
from .serving_env import SERVING_ENV

# What `tritongen engine` imports besides tritongen's own dependencies and TensorRT (in the image), pinned to
# versions with Python 3.10 and 3.12 wheels. cuda-python 12.x matches the CUDA 12 of NGC 24.xx/25.01.
ENGINE_BUILDER_PACKAGES = (
    "polygraphy==0.49.26",
    "onnx==1.17.0",
    "onnx-graphsurgeon==0.5.8",
    "cuda-python==12.6.2.post1",
)
SERVING_DOCKERFILE = "serving.Dockerfile"
BUILDER_DOCKERFILE = "engine-builder.Dockerfile"
COMPOSE_FILE = "compose.yaml"
README_FILE = "README.md"
REPOSITORY_ENV = "TRITONGEN_REPOSITORY"
ADMIN_ENV = "TRITONGEN_ADMIN_TOKEN"
CONTAINER_PORTS = (8000, 8001, 8002)  # HTTP, gRPC, metrics inside the container
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"


@dataclass(frozen=True)
class DockerBundle:
    """What ``deploy --to docker`` wrote, and why."""

    out: Path
    repo: Path
    release: str  # NGC YY.MM
    triton_image: str
    tensorrt_image: str | None  # None: no plans pending, no builder
    serving_image: str  # built from serving.Dockerfile, or NGC's image when nothing needs installing
    serving: ServingPackages
    pending_plans: Mapping[str, list[int]] = field(default_factory=dict)
    files: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    repo_default: str = ""  # the repository path relative to ``out``, compose's default mount
    notes: tuple[str, ...] = ()  # rollout records the bundle does not follow (rollout_record.unfollowed_records)

    @property
    def has_builder(self) -> bool:
        return bool(self.pending_plans)

    def text(self) -> str:
        """What ``tritongen deploy --to docker`` prints (:meth:`summary`); every result of the API has ``text()``."""
        return self.summary()

    def summary(self) -> str:
        lines = [
            f"wrote {self.out} (NGC {self.release}: {self.triton_image}"
            + (f", {self.tensorrt_image}" if self.tensorrt_image else "")
            + ")"
        ]
        lines += [f"  {name}" for name in self.files]
        if self.serving.requirements:
            lines.append(f"  serving image installs: {' '.join(self.serving.requirements)}")
        lines += [f"  note: it installs {pin}" for pin in self.serving.replaced_pins]
        if self.pending_plans:
            lines.append(f"  plans built first: {_pending_text(self.pending_plans)}")
        lines.append(f"next: cd {self.out} && docker compose up")
        return "\n".join([*lines, *self.notes])


def _pending_text(pending: Mapping[str, list[int]]) -> str:
    return ", ".join(f"{name} v{','.join(map(str, versions))}" for name, versions in sorted(pending.items()))


def model_needs_gpu(config: Any) -> bool:
    """Whether a model (its ModelConfig) runs on a GPU: a KIND_GPU instance group, or a model other than an ensemble
    or a Python-backend one left to Triton's default (no group, or KIND_AUTO: a GPU where one is present). The one
    rule by which the Docker and the Kubernetes/KServe bundles ask for a GPU."""
    from ..validate import config_pb2

    Group = config_pb2().ModelInstanceGroup
    kinds = {group.kind for group in config.instance_group}
    if Group.KIND_GPU in kinds:
        return True
    if config.platform == "ensemble" or config.backend == "python":
        return False
    return not kinds or bool(kinds - {Group.KIND_CPU})


def _needs_gpu(repo: Path) -> bool:
    """Whether any model of ``repo`` runs on a GPU (:func:`model_needs_gpu`)."""
    from ..validate import config_from_file

    return any(model_needs_gpu(config_from_file(path)) for path in sorted(Path(repo).glob("*/config.pbtxt")))


def _publish(host: str) -> list[str]:
    if host in ("", "0.0.0.0", "::"):
        bind = "0.0.0.0:" if host != "::" else "[::]:"
    else:
        bind = f"[{host}]:" if ":" in host else f"{host}:"
    return [f"{bind}{port}:{port}" for port in CONTAINER_PORTS]


def _triton_command(host: str) -> list[str]:
    from ..server import ADMIN_HEADER, RESTRICTED_APIS, is_loopback

    command = ["tritonserver", "--model-repository=/models"]
    if not is_loopback(host):
        restriction = f"{','.join(RESTRICTED_APIS)}:{ADMIN_HEADER}=${{{ADMIN_ENV}:?set {ADMIN_ENV} to a secret}}"
        command += [f"--http-restricted-api={restriction}", f"--grpc-restricted-protocol={restriction}"]
    return command


# What compose.yaml cannot hold in the repository's path: ``$`` (Compose interpolates it, even in a default),
# ``}`` (ends the ``${TRITONGEN_REPOSITORY:-...}`` default early), ``:`` (splits the ``SRC:DST:ro`` volume); control
# characters are refused everywhere (names.refused_character): a newline would end the header comment.
MOUNT_PATH_REFUSED = "$}:"


def _repository_from(out: Path, repo: Path) -> str:
    """The path compose mounts the repository from: relative to the bundle folder where that reads the same whether
    joined by name (compose joins ``..`` to the path given) or followed on disk (a shell in the real folder); an
    ``--out`` through a link makes the two differ, and then the repository's absolute path is used."""
    real_out = out.parent.resolve() / out.name
    relative = os.path.relpath(repo, real_out)
    by_name = Path(os.path.normpath(os.path.join(out, relative)))
    if by_name.resolve() == repo and (real_out / relative).resolve() == repo:
        return relative
    return str(repo)


def _mount_path(relative: str) -> str:
    """The repository's path relative to ``out`` (compose's default mount and the README's), refused when the
    compose file cannot hold it as it is."""
    from ..names import refused_character, shown

    char = refused_character(relative)
    if char is None:
        char = next((c for c in relative if c in MOUNT_PATH_REFUSED), None)
    if char is not None:
        raise TritongenError(
            f"the model repository's path from --out, '{shown(relative, 120)}', holds {ascii(char)}, which "
            "compose.yaml cannot mount as written (a control character, '$', '}' or ':')",
            "rename the folders on that path, or write the bundle (--out) beside the repository",
        )
    return relative


def docker_bundle_from_repository(
    repo: Path,
    out: Path,
    *,
    ngc_release: str | None = None,
    host: str = "127.0.0.1",
    force: bool = False,
    extra_packages: Mapping[str, str] | None = None,
    allow_unverified: tuple[str, ...] = (),
    signed_digests: Mapping[str, str] | None = None,
) -> DockerBundle:
    """Write the Docker bundle that serves ``repo`` into ``out`` (atomically) and describe it.

    ``allow_unverified``: models without a build manifest (written by hand) that may be deployed all the same.
    ``signed_digests``: what the repository's signature gives each file (checked before): the verified files must
    be those.
    """
    from .. import __version__
    from ..server import ADMIN_HEADER, is_loopback
    from ..validate import check_repository
    from ..verify import check_held_to_signature, check_verified

    release = check_release(ngc_release or DEFAULT_NGC_RELEASE)
    host = docker_host(host)
    triton_version, tensorrt_version = NGC_RELEASES[release]
    ubuntu, python = NGC_PLATFORMS[release]
    repo = Path(repo).expanduser()
    check_repository(repo, triton_version=triton_version)
    check_held_to_signature(check_verified(repo, allow_unverified=allow_unverified), signed_digests)
    repo = repo.resolve()
    out = check_out_dir(out, repo, force)
    serving = serving_packages_from_repository(repo, extra_packages)
    pending = pending_plans_from_repository(repo)
    triton_image = TRITON_IMAGE.format(release=release)
    tensorrt_image = TENSORRT_IMAGE.format(release=release) if pending else None
    externally_managed = ubuntu >= "24.04"  # PEP 668 marker on Ubuntu 24.04's Python
    repo_default = _mount_path(_repository_from(out, repo))
    repo_mount = f"${{{REPOSITORY_ENV}:-{repo_default}}}"
    files: dict[str, str | bytes | Path] = {}
    described: list[tuple[str, str]] = []

    if serving.requirements:
        digest = hashlib.sha256("\n".join(serving.requirements).encode()).hexdigest()[:8]
        serving_image = f"tritongen-serving:{release}-{digest}"
        files[SERVING_DOCKERFILE] = render(
            "docker/serving.Dockerfile.j2",
            triton_version=triton_version,
            release=release,
            python=python,
            ubuntu=ubuntu,
            modules=serving.installed_modules,
            triton_image=triton_image,
            externally_managed=externally_managed,
            requirements=serving.requirements,
        )
        described.append((SERVING_DOCKERFILE, f"{triton_image} + the Python-backend models' packages"))
    else:
        serving_image = triton_image
    builder_image = None
    if pending:
        import tempfile

        from .wheel import wheel_from_installation

        wheel_tmp = Path(tempfile.mkdtemp(prefix=".tritongen-wheel-"))
        try:
            wheel = wheel_from_installation(wheel_tmp)
            files[f"wheels/{wheel.name}"] = wheel.read_bytes()
        finally:
            import shutil

            shutil.rmtree(wheel_tmp, ignore_errors=True)
        builder_image = f"tritongen-engine-builder:{release}-{__version__}"
        files[BUILDER_DOCKERFILE] = render(
            "docker/engine-builder.Dockerfile.j2",
            release=release,
            tensorrt_version=tensorrt_version,
            python=python,
            tensorrt_image=tensorrt_image,
            externally_managed=externally_managed,
            wheel=f"wheels/{wheel.name}",
            wheel_name=wheel.name,
            requirements=ENGINE_BUILDER_PACKAGES,
        )
        described.append(
            (BUILDER_DOCKERFILE, f"{tensorrt_image} + tritongen (from the wheel) to build the pending plans")
        )
        described.append((f"wheels/{wheel.name}", "tritongen, packed from the installation that wrote this bundle"))
    ports = _publish(host)
    admin_env = None if is_loopback(host) else ADMIN_ENV
    files[COMPOSE_FILE] = render(
        "docker/compose.yaml.j2",
        release=release,
        triton_version=triton_version,
        tensorrt_version=tensorrt_version,
        repo_default=repo_default,
        builder=bool(pending),
        pending=comment_text(_pending_text(pending)),
        admin_env=admin_env,
        admin_header=ADMIN_HEADER,
        host=host,
        project="tritongen",
        builder_image=builder_image,
        repo_mount=repo_mount,
        serving_dockerfile=bool(serving.requirements),
        serving_image=serving_image,
        command=_triton_command(host),
        ports=ports,
        gpu=_needs_gpu(repo),
        environment=SERVING_ENV,
    )
    described.append(
        (
            COMPOSE_FILE,
            "Triton" + (" after the engine builder" if pending else "") + ", health-checked on /v2/health/ready",
        )
    )
    described.append((README_FILE, "this file"))
    host_note = "loopback only" if is_loopback(host) else f"set {ADMIN_ENV} before `docker compose up`"
    from ..end_to_end import check_target
    from ..repository import ensembles_using

    called = ensembles_using(repo)  # an ensemble's steps answer through it: the entry points are checked
    entries = [c for d in sorted(repo.iterdir()) if d.is_dir() and d.name not in called and (c := check_target(d))]
    files[README_FILE] = render(
        "docker/README.md.j2",
        checks=[
            shlex.join(["tritongen", "infer", n, "--url", "127.0.0.1:8001", "--repo", repo_default, "--check"])
            for n in entries
        ],
        repo_name=repo.name,
        tritongen_version=__version__,
        repo_default=repo_default,
        release=release,
        triton_version=triton_version,
        tensorrt_version=tensorrt_version,
        python=python,
        files=described,
        builder=bool(pending),
        pending=_pending_text(pending),
        requirements=serving.requirements,
        ports=ports,
        host_note=host_note,
    )
    notes = unfollowed_records(repo)  # before anything is written: a failure here leaves no bundle
    write_bundle(out, files, force=force)
    return DockerBundle(
        out=out,
        repo=repo,
        release=release,
        triton_image=triton_image,
        tensorrt_image=tensorrt_image,
        serving_image=serving_image,
        serving=serving,
        pending_plans=pending,
        files=tuple(sorted(files)),
        host=host,
        repo_default=repo_default,
        notes=notes,
    )


# ------------------------------------------------------------------------------------------ serve --docker


@dataclass(frozen=True)
class DockerSteps:
    """What ``serve --docker`` prints: one ``docker run`` line when NGC's image loads the repository as it is,
    otherwise why not and the ``deploy --to docker`` command that writes what it needs."""

    command: str | None
    reasons: tuple[str, ...] = ()
    deploy_command: str | None = None
    notes: tuple[str, ...] = ()  # rollout records the image does not follow; printed as shell comments

    def text(self) -> str:
        comments = [f"# {note}" for note in self.notes]
        if self.command:
            return "\n".join([self.command, *comments])
        lines = ["NGC's Triton image cannot serve this repository as it is:"]
        lines += [f"  - {reason}" for reason in self.reasons]
        lines += [
            "Write the images and compose file it needs, then start them on the GPU host:",
            f"  {self.deploy_command}",
            "  cd deploy && docker compose up",
        ]
        return "\n".join([*lines, *comments])


def stock_image_problems(repo: Path) -> list[str]:
    """Why NGC's Triton image, as it is, cannot serve ``repo``: TensorRT plans not built yet, packages its
    Python-backend models import that the image lacks. [] when it can."""
    reasons = []
    pending = pending_plans_from_repository(repo)
    if pending:
        reasons.append(f"TensorRT plans are not built yet ({_pending_text(pending)}): Triton cannot load those models")
    try:
        needed = [r for r in serving_packages_from_repository(repo).requirements if not r.startswith("numpy==")]
        if needed:  # numpy<2 comes with NGC's image (its Python backend needs it); nothing else does
            reasons.append(f"its Python-backend models import packages the image lacks: {', '.join(needed)}")
    except TritongenError as err:
        reasons.append(f"a Python-backend model imports a package the image lacks ({err.problem})")
    return reasons


def docker_steps_from_repository(
    spec,
    ngc_release: str = DEFAULT_NGC_RELEASE,
    *,
    allow_unverified: tuple[str, ...] = (),
    public_key: Path | None = None,
    signature: Path | None = None,
) -> DockerSteps:
    """For a validated ``spec.repo`` (a :class:`tritongen.server.ServeSpec`): the ``docker run`` line, or the steps
    (the deploy command carries the checks' options serve was given: without them it would refuse the repository
    serve accepted, or check it less)."""

    from ..server import docker_command

    reasons = stock_image_problems(spec.repo)
    # --ignore-rollout-record asks for config.pbtxt's versions: what the image serves, nothing to note
    notes = unfollowed_records(spec.repo) if spec.rollout_record else ()
    if not reasons:
        return DockerSteps(command=docker_command(spec, image=TRITON_IMAGE.format(release=ngc_release)), notes=notes)
    deploy = ["tritongen", "deploy", str(spec.repo), "--to", "docker", "--out", "deploy"]
    if ngc_release != DEFAULT_NGC_RELEASE:
        deploy += ["--ngc-version", ngc_release]
    if spec.host != "127.0.0.1":
        deploy += ["--host", spec.host]
    for name in allow_unverified:
        deploy += ["--allow-unverified", name]
    if public_key is not None:
        deploy += ["--public-key", str(public_key)]
    if signature is not None:
        deploy += ["--signature", str(signature)]
    return DockerSteps(command=None, reasons=tuple(reasons), deploy_command=shlex.join(deploy), notes=notes)


# ------------------------------------------------------------------------------------------ checking


def compose_problems(text: str) -> list[str]:
    """Where ``text`` breaks the Compose specification's JSON schema (vendored in ``schemas/``); needs jsonschema."""
    import json

    import jsonschema
    import yaml

    schema = json.loads((SCHEMA_DIR / "compose-spec.json").read_text())
    document = yaml.safe_load(text)
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in validator.iter_errors(document)]
