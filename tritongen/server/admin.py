"""The admin key of a server tritongen started: who may load, unload and reconfigure its models.

A server whose model-control API is open (explicit model control) runs any model a request hands it: Triton's
load request carries the config and the files (``model.py`` included) in its body. On loopback that is every
process of every user on the machine. So such a server is started with a per-run key, off loopback as on it
(:func:`tritongen.server.process._start`), and the key is kept where only its user can read it: a file beside the
empty folder the server runs in (the private ``tritongen-serve-*`` folder, mode 0700). tritongen's own commands
that load models into a server on this machine (``rollout``, ``rollback``, ``tune``) find it there by the port the
server listens on (:func:`admin_headers_at`); anyone else passes the header ``serve`` prints.

A server whose repository was checked against a signature (``serve --public-key``) keeps that public key in the
same folder: those commands hold every file they send it to the repository's signature under that key
(:meth:`LocalServer.signing_key`), so a version built or changed after signing is not loaded into it either.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import TritongenError
from .spec import ADMIN_HEADER

ADMIN_KEY_NAME = "admin-key"
SIGNING_KEY_NAME = "public-key.pem"  # serve --public-key: what rollout holds its files to
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
    return _write_private(Path(home) / ADMIN_KEY_NAME, token.encode())


def write_signing_key(home: Path, public_key: bytes) -> Path:
    """Keep the public key the server's repository was checked with in ``home``: tritongen's commands that load
    models into it (``rollout``, ``rollback``, ``tune``) hold what they send to the repository's signature under
    that key (:meth:`LocalServer.signing_key`)."""
    return _write_private(Path(home) / SIGNING_KEY_NAME, public_key)


def _write_private(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return path


def _home_of(pid: int | None) -> Path | None:
    if pid is None:
        return None
    try:
        home = Path(os.readlink(f"/proc/{pid}/cwd")).parent
    except (OSError, ValueError):
        return None
    return home if home.name.startswith(SERVER_HOME_PREFIX) else None  # else a server tritongen did not start


@dataclass(frozen=True)
class SignedFiles:
    """What a server's files are held to: the sha256 the repository's signature gives each file, by path in the
    repository, and whether the key that proved the signature is the server's own (else the one given)."""

    digests: dict[str, str]
    by_server_key: bool


@dataclass(frozen=True)
class LocalServer:
    """The server at ``address`` as found once, by its port, for one command: the admin key it sends and the
    signing key it holds files to come from the same folder (two lookups could find two different servers).
    ``home`` None: no server tritongen started is found there (a remote one, another user's, one in a container)."""

    address: str
    home: Path | None
    connect: str | None = None  # host:port, the address literal it was found listening on (FoundServer.address)

    def url(self, url: str) -> str:
        """``url`` (the one this server was found by) to connect to it with its admin key: its host replaced by
        the address literal the server was found listening on (a name resolved again could reach another listener
        since), scheme and HTTP base path kept; unchanged where no server of tritongen's was found."""
        if self.home is None or self.connect is None:
            return url
        text = url.strip()
        scheme = next((s for s in ("grpc://", "http://") if text.lower().startswith(s)), "")
        rest = text[len(scheme) :]
        path = rest.split("/", 1)[1] if "/" in rest else ""
        return f"{scheme}{self.connect}" + (f"/{path}" if path else "")

    def headers(self, protocol: str) -> dict[str, str]:
        """Its admin headers, read from its folder; only for an address that connects to loopback (a loopback
        address, ``localhost``, 0.0.0.0 or ::): a connection to another of this machine's addresses can be
        redirected elsewhere (a container's published port), and the key is a secret. Empty where there is no
        such server, it has no key, or this user may not read it."""
        from ..files import regular_bytes
        from .ports import connects_to_loopback

        if self.home is None or not connects_to_loopback(_host(self.connect or self.address)):
            return {}
        try:
            raw = regular_bytes(self.home / ADMIN_KEY_NAME, MAX_KEY_BYTES, follow_links=False)
            token = raw.decode("ascii").strip()
        except (OSError, UnicodeDecodeError, ValueError, TritongenError):  # no readable key of a local server
            return {}
        return admin_headers(token, protocol)

    def signing_key(self) -> Path | None:
        """The public key the server's repository was checked with (``serve --public-key``), as a file in its
        private folder; None where it checks no signature or is not one tritongen started on this machine. Found
        by any address of this machine: holding files to a signature is the safe side of a redirected
        connection."""
        if self.home is None:
            return None
        path = self.home / SIGNING_KEY_NAME
        return path if path.is_file() and not path.is_symlink() else None

    def signed_digests(
        self, repo: Path, public_key: Path | None = None, signature: Path | None = None
    ) -> SignedFiles | None:
        """Where what tritongen loads into this server must be signed: its own key (:meth:`signing_key`), else
        ``public_key``: the sha256 the signature of ``repo`` (``signature``, default the repository's) gives each
        file, by path in the repository (:func:`tritongen.signing.signed_digests`: the signature is proven that
        key's first), with which of the two keys decided (looked up once). None: nothing to hold to. A
        ``public_key`` that is not the server's key is refused: the server's own key decides. Errors name the
        server's key as such, not by where serve keeps it."""
        from ..signing import same_public_key, signed_digests

        server_key = self.signing_key()
        if server_key is None and public_key is None:
            return None
        try:
            if server_key is not None and public_key is not None and not same_public_key(public_key, server_key):
                raise TritongenError(
                    f"public key {public_key} is not the key the server at {self.address} checks signatures with",
                    "leave --public-key out (the server's own key is used) or pass the key the server was started with",
                )
            key = server_key or public_key
            assert key is not None
            return SignedFiles(signed_digests(repo, key, signature), by_server_key=server_key is not None)
        except TritongenError as err:
            if server_key is not None:
                for attribute in ("problem", "fix", "details"):
                    setattr(err, attribute, getattr(err, attribute).replace(str(server_key), "the server's key"))
                if "checks signatures" not in err.problem:
                    err.problem += f" (the server at {self.address} checks signatures: it loads only signed files)"
                err.args = (err.message,)
            raise


def local_server_at(address: str) -> LocalServer:
    """The tritonserver tritongen started that listens at ``address`` (host:port) on this machine, found once (its
    folder and the address literal to connect to it by come from the same look: :func:`ports.server_found_at`)."""
    from .ports import server_found_at

    try:
        found = server_found_at(address)
    except (OSError, ValueError, TritongenError):  # nothing found: no key of a local server is used
        found = None
    home = None if found is None else _home_of(found.pid)
    return LocalServer(address, home, None if home is None or found is None else found.address)


def _host(address: str) -> str:
    return address.split("/", 1)[0].rpartition(":")[0].strip("[]")


def admin_headers_at(address: str, protocol: str) -> dict[str, str]:
    """The admin headers of the tritonserver that tritongen started and that listens at ``address`` (host:port,
    connecting to loopback) on this machine (:meth:`LocalServer.headers`)."""
    return local_server_at(address).headers(protocol)
