"""The admin key of a server tritongen started: who may load, unload and reconfigure its models.

A server whose model-control API is open (explicit model control) runs any model a request hands it: Triton's
load request carries the config and the files (``model.py`` included) in its body. On loopback that is every
process of every user on the machine. So such a server is started with a per-run key, off loopback as on it
(:func:`tritongen.server.process._start`), and the key is kept where only its user can read it: a file beside the
empty folder the server runs in (the private ``tritongen-serve-*`` folder, mode 0700). tritongen's own commands
that load models into a server on this machine (``rollout``, ``rollback``, ``tune``) find it there by the port the
server listens on (:func:`admin_headers_at`); anyone else passes the header ``serve`` prints.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import TritongenError
from .spec import ADMIN_HEADER

ADMIN_KEY_NAME = "admin-key"
SERVER_HOME_PREFIX = "tritongen-serve-"  # the private folder of a server tritongen started
MAX_KEY_BYTES = 256


def admin_headers(token: str | None, protocol: str) -> dict[str, str]:
    """The headers that carry ``token`` (none without one); Triton 2.51 expects the gRPC header with a
    ``triton-grpc-protocol-`` prefix."""
    if not token:
        return {}
    key = f"triton-grpc-protocol-{ADMIN_HEADER}" if protocol == "grpc" else ADMIN_HEADER
    return {key: token}


def write_admin_key(home: Path, token: str) -> Path:
    """Write ``token`` to ``home``'s key file, readable by this user only (``home`` is the server's private
    folder)."""
    path = Path(home) / ADMIN_KEY_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, token.encode())
    finally:
        os.close(fd)
    return path


def admin_headers_at(address: str, protocol: str) -> dict[str, str]:
    """The admin headers of the tritonserver that tritongen started and that listens at ``address`` (host:port,
    on loopback) on this machine: its key, read from beside the folder it runs in. Empty where there is no such
    server, it has no key, or this user may not read it (another user's server)."""
    from ..files import regular_bytes
    from .ports import server_pid_at

    try:
        pid = server_pid_at(address)
        if pid is None:
            return {}
        home = Path(os.readlink(f"/proc/{pid}/cwd")).parent
        if not home.name.startswith(SERVER_HOME_PREFIX):
            return {}  # a server tritongen did not start (its key, if any, is the user's to pass)
        token = regular_bytes(home / ADMIN_KEY_NAME, MAX_KEY_BYTES, follow_links=False).decode("ascii").strip()
    except (OSError, UnicodeDecodeError, ValueError, TritongenError):  # no readable key of a local server
        return {}
    return admin_headers(token, protocol)
