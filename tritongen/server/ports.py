"""Addresses and ports: loopback or not, which host to connect to, free ports to bind."""

from __future__ import annotations

import ipaddress
import socket

from ..errors import TritongenError
from .spec import DEFAULT_PORTS, ServeSpec


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (there, nothing restricts the model-control APIs)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def connect_host(host: str) -> str:
    """Where a client on this machine connects to reach a server bound to ``host``."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now (connections left in TIME_WAIT do not count)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def choose_ports(spec: ServeSpec) -> dict[str, int]:
    chosen: dict[str, int] = {}
    holders = []
    try:
        for kind, default in DEFAULT_PORTS.items():
            port = getattr(spec, f"{kind}_port")
            if port is not None:
                if not port_is_free(spec.host, port):
                    raise TritongenError(
                        f"{kind} port {port} on {spec.host} is already in use",
                        f"stop what listens there, pass another --{kind}-port, or leave it out to pick a free one",
                    )
                chosen[kind] = int(port)
            elif default not in chosen.values() and port_is_free(spec.host, default):
                chosen[kind] = default
            else:
                s = socket.socket(_family(spec.host), socket.SOCK_STREAM)
                holders.append(s)  # held until all three are picked, so they differ
                s.bind((spec.host, 0))
                chosen[kind] = s.getsockname()[1]
    finally:
        for s in holders:
            s.close()
    return chosen
