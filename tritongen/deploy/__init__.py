"""Deployment bundles for a built model repository: ``tritongen deploy REPO --to TARGET --out DIR``.

Each target is a module with a ``<target>_bundle_from_repository(repo, out, ...)`` function returning a typed
result; :mod:`tritongen.cli_deploy` maps ``--to`` to those functions.
"""

from .docker import DockerBundle, docker_bundle_from_repository, docker_steps_from_repository

__all__ = ["DockerBundle", "docker_bundle_from_repository", "docker_steps_from_repository"]
