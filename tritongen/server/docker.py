"""The ``docker run`` line that serves a repository with NGC's Triton image."""

from __future__ import annotations

import ipaddress
import re
import secrets
import shlex

from ..cpus import cpus_text
from ..errors import TritongenError
from ..names import check_host
from .allocator import ngc_preload
from .blas import BLAS_THREADS_VARIABLE
from .ports import is_loopback
from .process import server_args
from .spec import DEFAULT_IMAGE, DEFAULT_PORTS, ServeSpec


def docker_host(host: str) -> str:
    """``host`` as Docker publishes ports on it: an IP address (``localhost`` is 127.0.0.1)."""
    check_host(host)
    if host == "localhost":
        return "127.0.0.1"
    if "%" in host:  # Docker reads a published port's address with Go's net.ParseIP, which takes no zone
        raise TritongenError(
            f"--host '{host}' names an IPv6 zone ({host.partition('%')[2]}); Docker publishes ports on an address "
            "without one",
            "pass the address without its zone (--host fe80::1), or --host :: for every IPv6 interface",
        )
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        raise TritongenError(
            f"--host '{host}' is a host name; Docker publishes ports on an IP address",
            "pass the address itself, e.g. --host 0.0.0.0 for every interface or --host 10.0.0.5",
        ) from None


def docker_command(spec: ServeSpec, image: str = DEFAULT_IMAGE, admin_token: str | None = None) -> str:
    """The ``docker run`` line that serves ``spec.repo`` with the NGC Triton image on a GPU host."""
    ports = {k: getattr(spec, f"{k}_port") or d for k, d in DEFAULT_PORTS.items()}
    publish = []
    address = "" if spec.host in ("", "0.0.0.0", "::") else docker_host(spec.host)
    bind = f"[{address}]:" if ":" in address else f"{address}:" if address else ""
    for kind, container_port in DEFAULT_PORTS.items():
        publish += ["-p", f"{bind}{ports[kind]}:{container_port}"]
    # the key rule of a local serve (tritongen.server.process): off loopback, restricted, or explicit model control
    keyed = not is_loopback(spec.host) or spec.restricted or spec.model_control == "explicit"
    if keyed and admin_token is None:
        admin_token = secrets.token_urlsafe(24)
    token = admin_token if keyed else None
    # Inside the container the server listens on all interfaces; docker's -p decides who can reach it.
    inner = ServeSpec(
        repo=spec.repo,
        host="0.0.0.0",
        model_control=spec.model_control,
        restricted=spec.restricted,
        poll_interval_s=spec.poll_interval_s,
        log_verbose=spec.log_verbose,
        extra_args=spec.extra_args,
    )
    server = server_args(inner, DEFAULT_PORTS, install=None, admin_token=token, repo="/models")
    server = [a for a in server if not re.match(r"--(http|grpc|metrics)-(address|port)=", a)]
    # The environment `serve` gives its server: the stubs' BLAS threads and the allocator (NGC's x86_64 paths).
    environment = []
    if spec.stub_blas_threads:
        environment += ["-e", f"{BLAS_THREADS_VARIABLE}={spec.stub_blas_threads}"]
    preload = ngc_preload(spec.allocator)
    if preload is not None:
        environment += ["-e", f"LD_PRELOAD={preload}"]
    # The Python backend moves tensors through /dev/shm; docker's 64 MB default is too small for real models.
    # Read-only: the server cannot change the verified files (nor write __pycache__/ beside model.py).
    command = [
        "docker",
        "run",
        "--gpus",
        "all",
        "--rm",
        "--shm-size=1g",
        *environment,
        *([f"--cpuset-cpus={cpus_text(spec.cpus)}"] if spec.cpus else []),
        *publish,
        "-v",
        f"{spec.repo}:/models:ro",
        image,
        "tritonserver",
        *server,
    ]
    return shlex.join(command)
