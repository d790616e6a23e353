"""The processes of a running tritonserver, read from /proc: resident memory of the server and its children,
and its Python-backend stubs (``triton_python_backend_stub``, one per model instance)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

STUB_NAME = "triton_python_backend_stub"


def _stat_fields() -> dict[int, list[str]]:
    """pid -> the fields of /proc/<pid>/stat after the command name (state, ppid, pgrp, ...)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            table[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
    return table


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) for every process visible in /proc."""
    return {pid: (int(rest[1]), rest[0]) for pid, rest in _stat_fields().items()}


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of the process group ``pgid``: a server's group holds it and its stubs."""
    return [pid for pid, rest in _stat_fields().items() if int(rest[2]) == pgid and rest[0] not in ("Z", "X")]


def _descendants(pid: int, table: Mapping[int, tuple[int, str]] | None = None) -> list[int]:
    table = _proc_table() if table is None else table
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, (ppid, _) in table.items() if ppid == parent]
        found += kids
        frontier += kids
    return found


def _vm_rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0  # gone, or a zombie (no VmRSS line)


def rss_kb_from_pid(pid: int) -> int:
    """VmRSS of ``pid`` plus all its descendants (a server and its Python-backend stubs), in kB."""
    return sum(_vm_rss_kb(p) for p in [pid, *_descendants(pid)])


def stubs_from_server(pid: int) -> dict[int, str]:
    """Live ``triton_python_backend_stub`` children of the server ``pid``: stub pid -> model name."""
    table = _proc_table()
    stubs = {}
    for child in _descendants(pid, table):
        if table.get(child, (0, "Z"))[1] in ("Z", "X"):
            continue
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].decode(errors="replace").endswith(STUB_NAME) and len(argv) > 1:
            stubs[child] = Path(argv[1].decode(errors="replace")).parent.parent.name  # <repo>/<model>/<version>/model.py
    return stubs


def zombies_from_server(pid: int) -> int:
    table = _proc_table()
    return sum(1 for p in _descendants(pid, table) if table.get(p, (0, ""))[1] == "Z")
