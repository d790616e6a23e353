"""Addresses and ports: loopback or not, which host to connect to, free ports to bind."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from dataclasses import dataclass

from ..errors import TritongenError
from .spec import DEFAULT_PORTS, ServeSpec

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ip(host: str) -> Address | None:
    """``host`` as an IP address (an IPv4-mapped IPv6 address as its IPv4 one), None for a name."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return mapped or address


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (there, nothing restricts the model-control APIs)."""
    if host == "localhost":
        return True
    address = _ip(host)
    return address is not None and address.is_loopback


def connects_to_loopback(host: str) -> bool:
    """Whether a connection to ``host`` goes to loopback: a loopback address, ``localhost``, or the unspecified
    address (Linux connects 0.0.0.0 and :: to loopback)."""
    address = _ip(host)
    return is_loopback(host) or (address is not None and address.is_unspecified)


def _interface_addresses() -> frozenset[Address]:
    """The addresses assigned to this machine's network interfaces (psutil); empty where it cannot tell."""
    import psutil

    try:
        found = psutil.net_if_addrs()
    except (OSError, psutil.Error):
        return frozenset()
    addresses = set()
    for entries in found.values():
        for entry in entries:
            try:
                addresses.add(ipaddress.ip_address(str(entry.address).split("%")[0]))
            except ValueError:  # a link-layer address
                continue
    return frozenset(addresses)


def is_this_machine(host: str) -> bool:
    """Whether a connection to ``host`` stays on this machine: loopback, the unspecified address (``0.0.0.0``,
    ``::``, which Linux connects to loopback) or an address of one of its interfaces, given as such or as a name
    that resolves only to those. A server listening there is one this machine's /proc shows."""
    return is_loopback(host) or _all_local(host_addresses(host))


def _all_local(addresses: frozenset[Address]) -> bool:
    if not addresses:
        return False
    local = _interface_addresses()
    return all(a.is_loopback or a.is_unspecified or a in local for a in addresses)


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
    """A port per protocol: the one given, else its default where free and not given for another protocol
    (``--grpc-port 8000`` leaves HTTP's 8000 to gRPC), else one the system picks."""
    chosen: dict[str, int] = {}
    holders = []
    given = {getattr(spec, f"{kind}_port") for kind in DEFAULT_PORTS} - {None, 0}
    try:
        for kind, default in DEFAULT_PORTS.items():
            port = getattr(spec, f"{kind}_port")
            if port is not None and port != 0:  # 0: any free port, as the system picks for a bind to port 0
                if not port_is_free(spec.host, port):
                    raise TritongenError(
                        f"{kind} port {port} on {spec.host} is already in use",
                        f"stop what listens there, pass another --{kind}-port, or leave it out to pick a free one",
                    )
                chosen[kind] = int(port)
            elif (
                port is None
                and default not in chosen.values()
                and default not in given
                and port_is_free(spec.host, default)
            ):
                chosen[kind] = default
            else:
                while True:  # the system's pick is free now, but a port given for a later protocol is free too
                    s = socket.socket(_family(spec.host), socket.SOCK_STREAM)
                    holders.append(s)  # held until all three are picked, so they differ
                    s.bind((spec.host, 0))
                    if s.getsockname()[1] not in given:
                        break
                chosen[kind] = s.getsockname()[1]
    finally:
        for s in holders:
            s.close()
    return chosen


def _proc_address(hex_address: str, byteorder: str = sys.byteorder) -> Address:
    """An address as /proc/net/tcp{,6} writes it: 4 bytes (IPv4) or four 32-bit words, each in host order."""
    raw = bytes.fromhex(hex_address)
    step = -1 if byteorder == "little" else 1  # a word printed in host order: reversed on little-endian hosts
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw[::step])
    return ipaddress.IPv6Address(b"".join(raw[i : i + 4][::step] for i in range(0, 16, 4)))


def _reaches(bound: Address, targets: frozenset[Address]) -> bool:
    """Whether a socket bound to ``bound`` accepts connections made to one of ``targets``."""
    if bound.is_unspecified:  # every address of its family (:: takes IPv4 too unless IPV6_V6ONLY)
        return bound.version == 6 or any(t.version == 4 for t in targets)
    mapped = bound.ipv4_mapped if isinstance(bound, ipaddress.IPv6Address) else None
    return bound in targets or (mapped is not None and mapped in targets)


def _listening_inodes(port: int, addresses: frozenset[Address] | None = None) -> set[str] | None:
    """Socket inodes in LISTEN state on ``port`` (on any address, or on one that accepts connections to one of
    ``addresses``), from /proc/net/tcp{,6}; None without /proc."""
    listeners = _listeners(port)
    if listeners is None:
        return None
    return {inode for bound, inode in listeners if addresses is None or _reaches(bound, addresses)}


def _listeners(port: int) -> list[tuple[Address, str]] | None:
    """(bound address, socket inode) of every socket in LISTEN state on ``port``, from /proc/net/tcp{,6} read once;
    None without /proc."""
    found: list[tuple[Address, str]] = []
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
                found.append((_proc_address(fields[1].rsplit(":", 1)[0]), fields[9]))
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


def listened_on(port: int) -> bool | None:
    """Whether any process holds a listening socket on ``port``; None where /proc cannot tell."""
    listening = _listening_inodes(port)
    return None if listening is None else bool(listening)


def host_addresses(host: str) -> frozenset[Address]:
    """The addresses a client connecting to ``host`` may reach: an IP address itself; a name (``localhost``)
    resolved on this machine; empty when it does not resolve."""
    address = _ip(host)
    if address is not None:
        return frozenset({address})
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):  # UnicodeError: a name no IDNA label takes ("a..b", a label over 63)
        return frozenset()
    found = set()
    for info in infos:
        resolved = _ip(str(info[4][0]).split("%")[0])
        if resolved is not None:
            found.add(resolved)
    return frozenset(found)


def _targets(addresses: frozenset[Address]) -> frozenset[Address]:
    """The addresses a connection to one of ``addresses`` reaches (one to 0.0.0.0 or :: goes to loopback)."""
    loopback = {4: ipaddress.ip_address("127.0.0.1"), 6: ipaddress.ip_address("::1")}
    return frozenset(loopback[a.version] if a.is_unspecified else a for a in addresses)


def pids_listening_on(port: int, host: str | None = None) -> list[int]:
    """The processes (of those /proc lets this user see) that hold a listening socket on ``port`` (one that
    accepts connections to ``host``, when given), lowest first; empty where /proc cannot tell."""
    return _holders(_listening_inodes(port, None if host is None else _targets(host_addresses(host))))


def _holders(listening: set[str] | None) -> list[int]:
    """The processes (of those /proc lets this user see) holding one of the sockets ``listening``, lowest first."""
    if not listening:
        return []
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            inodes = _socket_inodes(int(name))
            if inodes and inodes & listening:
                found.append(int(name))
    return sorted(found)


def server_pid_at(url: str) -> int | None:
    """The pid of the tritonserver listening at ``url`` on this machine (:func:`server_found_at`), else None."""
    found = server_found_at(url)
    return None if found is None else found.pid


@dataclass(frozen=True)
class FoundServer:
    """A tritonserver found listening at a URL of this machine: its pid, and ``address`` (``host:port``, an IP
    address literal, IPv4 and loopback first) where it listens among the addresses the URL's host resolved to when
    it was found. A client that holds secrets for it connects there, not by the name again: a name resolved anew
    (``localhost``: 127.0.0.1 and ::1) could reach a listener that appeared since on its other address."""

    pid: int
    address: str


def server_found_at(url: str) -> FoundServer | None:
    """The tritonserver listening at ``url`` (host:port, an HTTP base path dropped) on this machine, on that host's
    address or on every address; None when the URL's host is not this machine's (:func:`is_this_machine`), no
    tritonserver process of this user's is found listening there (in a container, say), more than one is, or
    anything else listens on an address the host name reaches (``localhost``: 127.0.0.1 and ::1; another user's
    listener there, whose /proc this user cannot read, could be the one a client reaches). The name is resolved
    once and the listening sockets read once: the pid, the check and the address are of the same sockets."""
    host, _, port = url.split("/", 1)[0].rpartition(":")
    host = host.strip("[]")
    if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        return None
    addresses = host_addresses(host)
    if not (is_loopback(host) or _all_local(addresses)):
        return None
    targets = _targets(addresses)
    listeners = _listeners(int(port))
    if listeners is None:
        return None
    listening = {inode for bound, inode in listeners if _reaches(bound, targets)}
    found = []
    for pid in _holders(listening):
        try:
            with open(f"/proc/{pid}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        if name == "tritonserver":
            found.append(pid)
    if len(found) != 1:  # two claim the port (one on another address): meter neither
        return None
    ours = _socket_inodes(found[0])
    if not listening or ours is None or not listening <= ours:
        return None
    for target in sorted(targets, key=lambda a: (a.version, not a.is_loopback, int(a))):
        if any(_reaches(bound, frozenset({target})) for bound, inode in listeners if inode in ours):
            literal = str(target) if target.version == 4 else f"[{target}]"
            return FoundServer(found[0], f"{literal}:{int(port)}")
    return None


MAX_CMDLINE_BYTES = 1 << 20


def server_options(pid: int) -> dict[str, list[str]] | None:
    """The ``--name`` options of process ``pid``'s command line (a local tritonserver's), read from /proc (the first
    :data:`MAX_CMDLINE_BYTES`), ``--name=value`` and ``--name value`` both: every value of each, in order (Triton
    takes ``--model-repository`` several times); a flag without a value gives "". None where the command line cannot
    be read. The one reader of a local server's options (its metrics port, the repositories it serves, its
    model-control mode)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read(MAX_CMDLINE_BYTES).decode("utf-8", "replace").split("\0")
    except OSError:
        return None
    options: dict[str, list[str]] = {}
    for i, arg in enumerate(argv):
        if arg.startswith("--") and arg != "--":
            key, eq, value = arg.partition("=")
            following = argv[i + 1] if i + 1 < len(argv) else ""
            options.setdefault(key, []).append(value if eq else ("" if following.startswith("--") else following))
    return options


def last_option(options: dict[str, list[str]], name: str, default: str = "") -> str:
    """The value of option ``name`` as a program reading its options in order keeps it: the last one given."""
    return options.get(name, [default])[-1]


def metrics_address_at(url: str) -> str | None:
    """``host:port`` of the metrics endpoint of the tritonserver listening at ``url`` on this machine (its
    ``--metrics-port``, from its command line, 8002 where it names none; on ``--metrics-address`` where it names
    one, else on the address it was found at); None where no such server is found, its metrics are off
    (``--allow-metrics=false``) or its command line cannot be read. What ``perf`` reads the server's gauges from
    when its URL is not on Triton's default ports (a server ``tritongen serve`` started on ports of its own)."""
    try:
        found = server_found_at(url)
    except (OSError, ValueError, TritongenError):
        return None
    if found is None:
        return None
    options = server_options(found.pid)
    if options is None:
        return None
    if last_option(options, "--allow-metrics", "true").strip().lower() in ("false", "0", "no", "off"):
        return None
    port = last_option(options, "--metrics-port", "8002").strip()
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        return None
    host = last_option(options, "--metrics-address").strip()
    if not host or host in ("0.0.0.0", "::", "[::]"):
        host = found.address.rpartition(":")[0]
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{int(port)}"
