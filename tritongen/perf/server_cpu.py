"""The CPU a tritonserver on this machine spends per request: its own process (the HTTP and gRPC frontends, the
schedulers and batchers, in-process backends such as ONNX Runtime) and its children (a Python-backend model's stub
processes), read through psutil.

Why it is measured: a server whose cores are saturated serves ``cores / CPU per request`` requests a second, and
that cost is not the model's alone. It depends on how the requests arrive: on a ~1 ms model here, tritonserver
spent 100 us per request on a client that sends a batch's worth of requests back to back, and 113-138 us on
clients that spread them out (perf_analyzer's; bench/harness_agreement.py). Two load generators that disagree on
such a model show it in this figure.

Only for a server found listening on the port of a URL of this machine (:func:`server_pid_at`); None otherwise.
The stubs are found once, when the meter is made (they start when their model loads); every process of the server
counts, so another client's load on another model during the run would count too.
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil

from ..server.ports import server_pid_at

_ERRORS = (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess)


class ServerCpuMeter:
    """CPU seconds used so far by one tritonserver and the children it had when the meter was made."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.processes = [psutil.Process(pid)]
        try:
            self.processes += self.processes[0].children(recursive=True)
        except _ERRORS:
            pass

    def used_s(self) -> float | None:
        """User + system CPU seconds of the server and its children; None once the server itself is gone."""
        total = 0.0
        for process in self.processes:
            try:
                times = process.cpu_times()
            except _ERRORS:
                if process.pid == self.pid:
                    return None
                continue  # a stub that exited (its model unloaded): its time so far is lost, the rest counts
            total += times.user + times.system
        return total


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
    """The server's CPU over a measured span: cores busy on average, and CPU per request it answered."""

    cores: float
    us_per_request: float


def server_cpu_between(before_s: float | None, after_s: float | None) -> float | None:
    """CPU seconds between two readings of :meth:`ServerCpuMeter.used_s`; None when either is missing."""
    if before_s is None or after_s is None or after_s < before_s:
        return None
    return after_s - before_s


def server_cpu_from_used(used_s: float | None, seconds: float, requests: int) -> ServerCpu | None:
    """The server's CPU over a span of ``seconds`` in which it answered ``requests``; None when the CPU was not
    read, the span is empty or nothing was answered."""
    if used_s is None or seconds <= 0 or requests <= 0:
        return None
    return ServerCpu(cores=used_s / seconds, us_per_request=used_s / requests * 1e6)
