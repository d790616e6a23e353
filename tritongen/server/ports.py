"""Addresses and ports: loopback or not, which host to connect to, free ports to bind."""

from __future__ import annotations

import ipaddress
import os
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


def _listening_inodes(port: int) -> set[str] | None:
    """Socket inodes in LISTEN state on ``port`` (any address), from /proc/net/tcp{,6}; None without /proc."""
    found: set[str] = set()
    seen_table = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        seen_table = True
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                found.add(fields[9])
    return found if seen_table else None


def _socket_inodes(pid: int) -> set[str] | None:
    """Inodes of the sockets process ``pid`` holds open; None when /proc does not show them."""
    folder = f"/proc/{pid}/fd"
    try:
        names = os.listdir(folder)
    except OSError:
        return None
    inodes = set()
    for name in names:
        try:
            target = os.readlink(f"{folder}/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def listens_on(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` holds a listening socket on ``port``; None where /proc cannot tell (not Linux).

    What a client reaching ``port`` gets is only this server's answer if this is True: a second tritonserver
    started in the same instant can win the bind while ours is still starting, and answer our readiness poll.
    """
    listening, ours = _listening_inodes(port), _socket_inodes(pid)
    if listening is None or ours is None:
        return None
    return bool(listening & ours)


def pids_listening_on(port: int) -> list[int]:
    """The processes (of those /proc lets this user see) that hold a listening socket on ``port``, lowest first;
    empty where /proc cannot tell."""
    listening = _listening_inodes(port)
    if not listening:
        return []
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            inodes = _socket_inodes(int(name))
            if inodes and inodes & listening:
                found.append(int(name))
    return sorted(found)
