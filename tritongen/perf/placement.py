"""Where the load generator and a local server run: the server's CPU set, found from the port it listens on, and
whether the client's set overlaps it (then the client's own CPU time is taken from the server's)."""

from __future__ import annotations

from ..cpus import cpus_of, cpus_text
from .server_cpu import server_pid_at


def server_cpus_at(url: str) -> tuple[int, ...] | None:
    """The CPU set of the tritonserver listening at ``url`` (host:port) on this machine; None when the URL's host is
    not this machine's or no tritonserver process of this user's is found listening there (in a container, say)."""
    pid = server_pid_at(url)
    return cpus_of(pid) if pid is not None else None


def placement_note(client_cpus: tuple[int, ...], server_cpus: tuple[int, ...] | None) -> str:
    """One line on whether the client's CPUs overlap the server's; empty when the server's are unknown."""
    if not server_cpus or not client_cpus:
        return ""
    shared = sorted(set(client_cpus) & set(server_cpus))
    where = f"client CPUs {cpus_text(client_cpus)}, server CPUs {cpus_text(server_cpus)}"
    if not shared:
        return f"client and server on separate CPUs ({where})"
    return (
        f"client shares CPUs with the server ({where}; shared: {cpus_text(shared)}): the client's own CPU time "
        "is taken from the server's; pin them apart with tritongen serve --cpus and perf --client-cpus"
    )
