"""Where the load generator and a local server run: the server's CPU set, found from the port it listens on, and
whether the client's set overlaps it (then the client's own CPU time is taken from the server's)."""

from __future__ import annotations

from ..cpus import cpus_of, cpus_text
from ..server.ports import is_loopback, pids_listening_on


def server_cpus_at(url: str) -> tuple[int, ...] | None:
    """The CPU set of the tritonserver listening at ``url`` (host:port) on this machine; None when the URL is not
    loopback or no tritonserver process of this user's is found listening there (in a container, say)."""
    host, _, port = url.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not is_loopback(host):
        return None
    for pid in pids_listening_on(int(port)):
        try:
            with open(f"/proc/{pid}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        if name == "tritonserver":
            return cpus_of(pid)
    return None


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
