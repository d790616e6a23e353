"""The processes of a running tritonserver, through psutil: resident memory of the server and its children,
and its Python-backend stubs (``triton_python_backend_stub``, one per model instance)."""

from __future__ import annotations

import os
from pathlib import Path

import psutil

STUB_NAME = "triton_python_backend_stub"
_GONE = (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
_ERRORS = (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess)


def _live(process: psutil.Process) -> bool:
    try:
        return process.status() not in _GONE
    except _ERRORS:
        return False


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except _ERRORS:
        return []


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of the process group ``pgid``: a server's group holds it and its stubs."""
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid and _live(process):
                members.append(process.pid)
        except (OSError, *_ERRORS):
            continue
    return members


def rss_kb_from_pid(pid: int) -> int:
    """Resident memory of ``pid`` plus all its descendants (a server and its Python-backend stubs), in kB."""
    total = 0
    try:
        processes = [psutil.Process(pid), *_descendants(pid)]
    except _ERRORS:
        return 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except _ERRORS:
            continue  # gone, or a zombie
    return total // 1024


def stubs_from_server(pid: int) -> dict[int, str]:
    """Live ``triton_python_backend_stub`` children of the server ``pid``: stub pid -> model name."""
    stubs = {}
    for child in _descendants(pid):
        try:
            argv = child.cmdline() if _live(child) else []
        except _ERRORS:
            continue
        if argv and argv[0].endswith(STUB_NAME) and len(argv) > 1:
            stubs[child.pid] = Path(argv[1]).parent.parent.name  # <repo>/<model>/<version>/model.py
    return stubs


def zombies_from_server(pid: int) -> int:
    """Children of the server ``pid`` that exited and were not reaped."""
    count = 0
    for child in _descendants(pid):
        try:
            count += child.status() == psutil.STATUS_ZOMBIE
        except _ERRORS:
            continue
    return count
