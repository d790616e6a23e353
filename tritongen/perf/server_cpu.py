"""The CPU a tritonserver on this machine spends per request: its own process (the HTTP and gRPC frontends, the
schedulers and batchers, in-process backends such as ONNX Runtime) and its children (a Python-backend model's stub
processes), read through psutil.

Why it is measured: a server whose cores are saturated serves ``cores / CPU per request`` requests a second, and
that cost is not the model's alone. It depends on how the requests arrive: on a ~1 ms model here, tritonserver
spent 100 us per request on a client that sent a batch's worth of requests back to back (the built-in engine's HTTP
closed loop when it ran on one event loop), and 113-138 us on clients that spread them out (perf_analyzer's;
bench/harness_agreement.py). Two load generators that disagree on such a model show it in this figure.

With the CPU, the meter counts the server's wakeups: the voluntary context switches of every thread of its
processes (a thread that sleeps until a request, a batch or an answer wakes it). They say why the CPU per request
differs: tritonserver's threads woke 0.8 times per request under that event loop (one HTTP thread read several
requests per wakeup) and 2.0 times under perf_analyzer, whose threads send theirs one at a time: 44 against 57 us of
CPU per request in tritonserver's own process. The HTTP closed loop now sends from a thread per request in flight,
as perf_analyzer does (1.5-2.0 wakeups per request against perf_analyzer's 1.6-2.0 at 16 in flight). A reading
opens one /proc file per thread: about a millisecond for tritonserver's hundred, so the built-in engine reads it off
its event loop.

Only for a server found listening on the port of a URL of this machine (:func:`server_pid_at`); None otherwise.
The stubs are found once, when the meter is made (they start when their model loads); every process of the server
counts, so another client's load on another model during the run would count too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import psutil

from ..server.ports import server_pid_at

_ERRORS = (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess)
_WAKEUPS_FIELD = "voluntary_ctxt_switches:"


@dataclass(frozen=True)
class ServerUse:
    """What a server used over a span: CPU seconds (user + system) and wakeups (voluntary context switches of all
    its threads; None where they could not be read)."""

    cpu_s: float
    wakeups: int | None = None


@dataclass(frozen=True)
class ServerReading:
    """One reading of a server: its CPU seconds so far, and each of its threads' wakeups so far (thread id: count;
    None where /proc could not be read)."""

    cpu_s: float
    wakeups_by_thread: Mapping[int, int] | None = None


def thread_wakeups(pid: int) -> dict[int, int] | None:
    """The voluntary context switches so far of every thread of process ``pid`` (thread id: count), from /proc
    (psutil reads only the main thread's); None where /proc cannot be read."""
    counts = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/status", encoding="ascii", errors="replace") as status:
                for line in status:
                    if line.startswith(_WAKEUPS_FIELD):
                        counts[int(tid)] = int(line[len(_WAKEUPS_FIELD) :])
                        break
        except (OSError, ValueError):
            continue  # the thread ended while it was read
    return counts


class ServerCpuMeter:
    """CPU seconds and wakeups so far of one tritonserver and the children it had when the meter was made."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.processes = [psutil.Process(pid)]
        try:
            self.processes += self.processes[0].children(recursive=True)
        except _ERRORS:
            pass

    def read(self) -> ServerReading | None:
        """The server's and its children's CPU seconds and threads' wakeups so far; None once the server itself is
        gone."""
        total_s = 0.0
        wakeups: dict[int, int] | None = {}
        for process in self.processes:
            try:
                times = process.cpu_times()
            except _ERRORS:
                if process.pid == self.pid:
                    return None
                continue  # a stub that exited (its model unloaded): its time so far is lost, the rest counts
            total_s += times.user + times.system
            woke = thread_wakeups(process.pid)
            if wakeups is not None and woke is not None:
                wakeups.update(woke)
            else:
                wakeups = None
        return ServerReading(cpu_s=total_s, wakeups_by_thread=wakeups)


def server_cpu_meter_at(url: str) -> ServerCpuMeter | None:
    """A meter on the tritonserver at ``url``, or None where there is none on this machine to read."""
    pid = server_pid_at(url)
    if pid is None:
        return None
    try:
        return ServerCpuMeter(pid)
    except _ERRORS:
        return None


@dataclass(frozen=True)
class ServerCpu:
    """The server's CPU over a measured span: cores busy on average, CPU per request it answered, and its threads'
    wakeups per request (None where they were not read)."""

    cores: float
    us_per_request: float
    wakeups_per_request: float | None = None


def server_cpu_between(before: ServerReading | None, after: ServerReading | None) -> ServerUse | None:
    """What the server used between two readings of :meth:`ServerCpuMeter.read`; None when either is missing or
    the CPU went backwards (another process behind the pid). Wakeups count each thread's since the first reading
    (all of a thread's that started since; a thread that ended in between loses what it had since the first)."""
    if before is None or after is None or after.cpu_s < before.cpu_s:
        return None
    wakeups = None
    if before.wakeups_by_thread is not None and after.wakeups_by_thread is not None:
        earlier = before.wakeups_by_thread
        # a count lower than before: another thread under a reused id, counted whole
        wakeups = sum(
            n - earlier.get(tid, 0) if n >= earlier.get(tid, 0) else n for tid, n in after.wakeups_by_thread.items()
        )
    return ServerUse(cpu_s=after.cpu_s - before.cpu_s, wakeups=wakeups)


def server_use_total(uses: list[ServerUse | None]) -> ServerUse | None:
    """The sum of consecutive spans' uses; None when any span is missing, wakeups None when any span lacks them."""
    if not uses or any(u is None for u in uses):
        return None
    spans = [u for u in uses if u is not None]
    counts = [u.wakeups for u in spans]
    return ServerUse(
        cpu_s=sum(u.cpu_s for u in spans),
        wakeups=None if None in counts else sum(c for c in counts if c is not None),
    )


def server_cpu_from_used(used: ServerUse | None, seconds: float, requests: int) -> ServerCpu | None:
    """The server's CPU over a span of ``seconds`` in which it answered ``requests``; None when the CPU was not
    read, the span is empty or nothing was answered."""
    if used is None or seconds <= 0 or requests <= 0:
        return None
    return ServerCpu(
        cores=used.cpu_s / seconds,
        us_per_request=used.cpu_s / requests * 1e6,
        wakeups_per_request=used.wakeups / requests if used.wakeups is not None else None,
    )
