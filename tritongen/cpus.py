"""CPU sets: parse ``1-3,5``, pin a child process or this whole process to one, read a process's set; and
whether this CPU's INT8 kernels saturate (:func:`u8s8_saturates`, x86 without VNNI).

Used by ``tritongen serve --cpus`` (the server and its Python-backend stubs on some CPUs) and ``tritongen perf
--client-cpus`` (the load generator on others), so that a client on the server's machine does not take the
server's CPU time (perf_analyzer's documentation recommends the same: client and server apart).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .errors import TritongenError


def available_cpus() -> tuple[int, ...]:
    """The CPUs this process may run on (its affinity); every CPU where the platform cannot tell."""
    try:
        return tuple(sorted(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return tuple(range(os.cpu_count() or 1))


def cpus_text(cpus: Iterable[int]) -> str:
    """``(1, 2, 3, 5)`` -> ``"1-3,5"``."""
    ordered = sorted(set(cpus))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def _parse(text: str, option: str) -> list[int]:
    example = f"write it like {option} 1 or {option} 1-3,5 (CPU ids, ranges inclusive)"
    cpus: list[int] = []
    for part in (p.strip() for p in text.split(",")):  # "0 1" is no CPU id
        low, dash, high = part.partition("-")
        # ASCII digits: str.isdigit takes "\u00b2", which int() refuses (a traceback)
        if not (low.isascii() and low.isdigit()) or (dash and not (high.isascii() and high.isdigit())):
            raise TritongenError(f"{option} '{text}' is not a list of CPU ids", example)
        if len(low) > 6 or len(high) > 6:  # no machine has a million CPUs: refuse before building the range
            raise TritongenError(f"{option} '{text}' names a CPU id beyond any machine's", example)
        first, last = int(low), int(high) if dash else int(low)
        if last < first:
            raise TritongenError(f"{option} '{text}': the range {part} runs backwards", example)
        cpus += range(first, last + 1)
    return cpus


def cpus_from_text(
    value: str | int | Iterable[int] | None, option: str = "--cpus", here: bool = True
) -> tuple[int, ...]:
    """A checked, sorted CPU set from ``"1-3,5"`` or CPU ids; ``()`` for none given (no pinning).

    With ``here``, every CPU must be one this process may run on (``os.sched_getaffinity``): a CPU outside it could
    not be given to a child either. Without (a command for another machine), the ids are checked for form only.
    """
    if value is None or value == "" or value == ():
        return ()
    if isinstance(value, str):
        cpus = _parse(value, option)
    else:
        given: list[Any] = list(value) if isinstance(value, Iterable) else [value]
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in given):
            raise TritongenError(f"{option} {given!r} is not a list of CPU ids", f"write it like {option} 1-3,5")
        cpus = [int(c) for c in given]
    allowed = available_cpus()
    outside = sorted(set(cpus) - set(allowed)) if here else []
    if outside:
        raise TritongenError(
            f"{option}: CPU {cpus_text(outside)} is not available here (this process may use {cpus_text(allowed)})",
            f"pick CPUs from {cpus_text(allowed)}",
        )
    return tuple(sorted(set(cpus)))


def affinity_preexec(cpus: tuple[int, ...], then: Callable[[], None] | None = None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that pins the child to ``cpus`` before it execs (what it starts inherits the set), then
    runs ``then``; just ``then`` when ``cpus`` is empty."""
    if not cpus:
        return then

    def preexec() -> None:
        os.sched_setaffinity(0, cpus)
        if then is not None:
            then()

    return preexec


def _threads() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return [0]  # the calling thread only


@contextlib.contextmanager
def pinned(cpus: tuple[int, ...]) -> Iterator[None]:
    """Run this whole process (every thread it has now; threads started inside inherit) on ``cpus``, and give
    every thread its previous set back afterwards (threads started inside get the caller's previous set).
    Nothing happens when ``cpus`` is empty."""
    if not cpus:
        yield
        return
    own = os.sched_getaffinity(0)
    before: dict[int, set[int]] = {}
    for tid in _threads():
        try:
            before[tid] = os.sched_getaffinity(tid)
            os.sched_setaffinity(tid, cpus)
        except OSError:  # the thread ended meanwhile
            continue
    try:
        yield
    finally:
        for tid in _threads():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, before.get(tid, own))
        os.sched_setaffinity(0, own)


def cpus_of(pid: int) -> tuple[int, ...] | None:
    """The CPU set process ``pid`` may run on; None where that cannot be read."""
    try:
        return tuple(sorted(os.sched_getaffinity(pid)))
    except (OSError, AttributeError):
        return None


VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})  # /proc/cpuinfo flags of x86 u8 x s8 dot products


def u8s8_saturates(cpuinfo: str | None = None, machine: str | None = None) -> bool | None:
    """Whether ONNX Runtime's U8S8 kernels on this CPU add products in 16 bits, saturating: True on x86 without
    VNNI, False on x86 with it and on other architectures (ARM's dot products add in 32 bits), None on x86 where
    it cannot tell (no /proc/cpuinfo, no flags line). ``cpuinfo``/``machine``: ``/proc/cpuinfo``'s text and
    ``platform.machine()``, read when None."""
    import platform

    if (machine or platform.machine()).lower() not in ("x86_64", "amd64", "i686", "x86"):
        return False
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read(1 << 20)
        except OSError:
            return None
    flags = next((ln.split(":", 1)[1].split() for ln in cpuinfo.splitlines() if ln.startswith("flags")), None)
    return None if flags is None else not (VNNI_FLAGS & set(flags))
