"""The built-in engine: a load generator over gRPC (:mod:`.rawgrpc`, HTTP/2 framed by hand, on an asyncio event
loop) or HTTP/1.1 (:mod:`.rawhttp`: a closed loop's workers in threads, an open loop's requests on the event loop).

Requests are serialised once before the run (gRPC: a ``ModelInferRequest`` in its gRPC message, and one HEADERS
block for every call; HTTP: the whole request, headers and Triton's binary-tensor body), so the client spends its
time sending, not encoding. Client CPU per request, measured on a 2-core machine with the client on its own core:
gRPC about 65 us (grpc.aio, which it replaced, 120-130 us and about 0.17 ms more per round trip), HTTP 50-75 us
from its worker threads (bench/harness_agreement.py, a ~1 ms model at 4 and 16 in flight); perf_analyzer's own
client about 100-150 us on the same model.

Closed loop: ``concurrency`` workers, each sending its next request when the last one answers (over HTTP, up to
:data:`MAX_THREAD_WORKERS` in flight, each worker a thread of its own on a blocking connection, as perf_analyzer's
synchronous client: see :mod:`.rawhttp`; above that, and over gRPC, tasks of the event loop). Open loop:
sends follow a schedule (constant or Poisson intervals) whatever the server does, and latency is measured from
the *scheduled* send time, so a client or server that falls behind shows as latency instead of being hidden.

Each load level runs ``warmup_s``, then windows of ``window_s`` until the last 3 are stable (throughput and
mean latency within ``stability_pct`` of their mean) or ``max_windows`` is reached. Triton's statistics API is
read at every window edge to split the server's time into queue and compute for the measured windows.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import TritongenError
from ..progress import Progress
from .inputs import RequestSet
from .rawgrpc import RawGrpcSender, kind_name
from .rawhttp import RawHttpSender
from .results import (
    MAX_STEPS,
    PerfPoint,
    ServerBreakdown,
    latency_summary_from_ms,
    server_breakdown_from_stats,
    steps_from_stats,
)
from .server_cpu import (
    ServerCpuMeter,
    ServerReading,
    ServerUse,
    server_cpu_between,
    server_cpu_from_used,
    server_cpu_meter_at,
    server_use_total,
)
from .spec import STABLE_WINDOWS, PerfSpec
from .split import schedule_from_split, version_figures_from_records

SERVER_GONE = ("unavailable", "connection")  # error kinds (less their reasons) that mean no server answers


class ServerGone(Exception):
    """Every request of a window failed to reach the server."""


class CutShort(Exception):
    """--max-time-s ran out during a level: ``point`` holds its windows measured so far (None: none was)."""

    def __init__(self, label: str, point: PerfPoint | None) -> None:
        super().__init__(label)
        self.label = label
        self.point = point


# Open loop: how long requests still outstanding when a level ends may take to answer before they are abandoned
# (their answers would fall outside every window anyway); a server offered far more than it serves would
# otherwise hold the level open for the whole --timeout-s.
OPEN_LOOP_GRACE_S = 1.0
STATS_READ_S = 10.0  # the longest one model's statistics read may take (--timeout-s, when shorter)
STATS_READ_MIN_S = 1.0  # ... and the least, whatever --timeout-s
STATS_GRACE_S = 1.0  # a statistics read at --max-time-s's deadline may run this far past it


# --------------------------------------------------------------------------------------------- senders


# --------------------------------------------------------------------------------------------- recording


MAX_ERROR_KINDS = 20  # distinct error kinds kept per level; later ones are counted as OTHER_ERRORS
MAX_ERROR_KIND_CHARS = 200
OTHER_ERRORS = "other errors"


@dataclass
class Recorder:
    """Completion time, latency and error kind of every request, in completion order. Written from the event loop
    and from the HTTP workers' threads: each record is added under :attr:`lock`, and :meth:`count` is read under it
    (every list holds the first ``count`` records)."""

    done_s: list[float] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)
    errors: list[str | None] = field(default_factory=list)
    send_lag_s: list[float] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)  # the version each request was pinned to ("" = none)
    sent: int = 0
    # Open loop: requests due but never sent, because the client had max_in_flight outstanding or could not keep
    # up (counted, not recorded one by one: an offer far above what is served would fill memory). Two counters,
    # each with one writer: the schedule's thread, and the event loop.
    dropped_by_schedule: int = 0
    dropped_by_loop: int = 0
    kinds: set[str] = field(default_factory=set)  # the distinct error kinds recorded (at most MAX_ERROR_KINDS)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def dropped(self) -> int:
        return self.dropped_by_schedule + self.dropped_by_loop

    def add(self, done_s: float, latency_s: float, error: str | None, version: str = "") -> None:
        with self.lock:
            if error is not None:  # a server naming every failure differently would fill results.json and the report
                error = error[:MAX_ERROR_KIND_CHARS]
                if error not in self.kinds and len(self.kinds) >= MAX_ERROR_KINDS:
                    error = OTHER_ERRORS
                self.kinds.add(error)
            self.done_s.append(done_s)
            self.latency_s.append(latency_s)
            self.errors.append(error)
            self.versions.append(version)

    def count(self) -> int:
        """Requests recorded so far (each in every list)."""
        with self.lock:
            return len(self.done_s)


@dataclass(frozen=True)
class Window:
    start: int  # index into the recorder
    end: int
    seconds: float
    throughput_rps: float
    mean_ms: float
    p99_ms: float
    errors: int
    stats: Mapping[str, Any] | None  # server statistics at the window's end
    client_cpu_s: float = 0.0  # CPU time this process (the load generator) used during the window
    server_use: ServerUse | None = None  # CPU time and wakeups of a local server in the window (None: not readable)
    dropped: int = 0  # open loop: requests due in the window but never sent (counted in ``errors`` too)
    resent: int = 0  # requests sent again in the window (HTTP: a kept connection closed with none of the answer come)


def _window(
    rec: Recorder,
    start: int,
    end: int,
    seconds: float,
    stats,
    client_cpu_s: float = 0.0,
    server_use=None,
    dropped: int = 0,
) -> Window:
    lat = np.asarray(rec.latency_s[start:end]) * 1000.0
    ok = np.asarray([e is None for e in rec.errors[start:end]], dtype=bool)
    good = lat[ok] if lat.size else lat
    return Window(
        start,
        end,
        seconds,
        float(ok.sum() / seconds) if seconds > 0 else 0.0,
        float(good.mean()) if good.size else float("nan"),
        float(np.percentile(good, 99)) if good.size else float("nan"),
        int((~ok).sum()) + dropped,
        stats,
        client_cpu_s,
        server_use,
        dropped,
    )


def is_stable(windows: Sequence[Window], pct: float) -> bool:
    if len(windows) < STABLE_WINDOWS:
        return False
    last = windows[-STABLE_WINDOWS:]
    for key in ("throughput_rps", "mean_ms"):
        values = np.asarray([getattr(w, key) for w in last], dtype=np.float64)
        if not np.all(np.isfinite(values)) or values.mean() <= 0:
            return False
        if np.max(np.abs(values - values.mean())) > values.mean() * pct / 100.0:
            return False
    return True


# --------------------------------------------------------------------------------------------- one level


async def _level(
    sender,
    mode: str,
    load: float,
    spec: PerfSpec,
    stats_fn,
    progress: Progress,
    meter: ServerCpuMeter | None = None,
    deadline_s: float | None = None,
    spoiled: Callable[[], None] | None = None,
    worker_cpu: int | None = None,
) -> PerfPoint:
    """One load level. ``deadline_s`` (a ``time.perf_counter`` reading: --max-time-s) is a hard end: no window
    starts that would end after it, and the level raises :class:`CutShort`. ``spoiled`` is called when requests
    had to be abandoned at the end (the sender is then in no state for another level). ``worker_cpu``: where an
    HTTP closed loop's worker threads run (:func:`worker_cpu_for`; None: the first CPU this process may use)."""
    rec = Recorder()

    async def server_read() -> ServerReading | None:
        # In a thread: reading every thread's wakeups from /proc takes a millisecond or more for tritonserver's
        # hundred threads, which the event loop would otherwise hold its answers for at every window's edge.
        return await asyncio.to_thread(meter.read) if meter is not None else None

    stop = asyncio.Event()
    halted = threading.Event()  # set with ``stop``: what the HTTP workers' threads look at
    clock = time.perf_counter
    tasks: set[asyncio.Task] = set()
    rng = np.random.default_rng(spec.seed)
    cycle = schedule_from_split(spec.version_split) or ("",)
    slots = itertools.count()

    def pick() -> str:  # the next version in send order: the split holds over any stretch of the run
        return cycle[next(slots) % len(cycle)]

    def record(t0: float, error: str | None, version: str) -> None:
        """One answer (or failure) recorded as it is taken, its latency from ``t0``: the send, or the schedule."""
        t1 = clock()
        rec.add(t1, t1 - t0, error, version)

    # A closed-loop worker (a task here, a thread below): pick the version, send, record, the next index.
    # Worker `first` is one stream of a sequence model.
    async def closed_worker(first: int, step: int) -> None:
        for index in itertools.count(first, step):
            if stop.is_set():
                return
            version = pick()
            t0 = clock()
            record(t0, await sender.send(index, version, first), version)

    go = threading.Event()  # the HTTP workers' threads start sending together, once every one has started

    def thread_worker(first: int, step: int) -> asyncio.Future:
        """An HTTP closed-loop worker in a thread of its own (:meth:`RawHttpSender.send_blocking`): its requests
        leave one at a time, each when its own answer is read, as independent clients' do. The thread is started
        here and waits for ``go`` (threads started while others send would each wait for the GIL: 2048 took
        minutes, with Ctrl-C unheard); the future returned settles when it ends."""
        loop = asyncio.get_running_loop()
        finished: asyncio.Future = loop.create_future()

        def settle(failure: BaseException | None) -> None:
            if finished.done():
                return
            if failure is not None:
                finished.set_exception(failure)
            else:
                finished.set_result(None)

        def run() -> None:
            failure = None
            try:
                _share_one_cpu(worker_cpu)
                go.wait()
                for index in itertools.count(first, step):
                    if halted.is_set():
                        break
                    version = pick()
                    t0 = clock()
                    record(t0, sender.send_blocking(index, version, first), version)
            except BaseException as exc:  # reported to the level like an asyncio worker's
                failure = exc
            try:
                loop.call_soon_threadsafe(settle, failure)
            except RuntimeError:  # the event loop is closed: nobody waits for this worker
                pass

        _start_thread(run, f"tritongen-http-worker-{first}", step)
        return finished

    async def one_open(index: int, scheduled_s: float, version: str) -> None:
        rec.send_lag_s.append(clock() - scheduled_s)
        record(scheduled_s, await sender.send(index, version), version)

    taken = [0]  # requests the event loop took from the schedule (the loop writes it; the schedule's thread reads)

    def start_open(due: list[tuple[int, float]]) -> None:
        taken[0] += len(due)
        for index, scheduled_s in due:
            version = pick()
            if len(tasks) >= spec.max_in_flight:
                rec.dropped_by_loop += 1
                continue
            task = asyncio.ensure_future(one_open(index, scheduled_s, version))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def open_scheduler(rate: float) -> None:
        # The schedule is kept by a thread: time.sleep wakes within tens of microseconds, where the event
        # loop's timers round up to whole milliseconds and would add that to every open-loop latency.
        loop = asyncio.get_running_loop()
        halt = threading.Event()

        def schedule() -> None:
            next_s = clock()
            index = 0
            posted = 0  # requests handed to the event loop
            while not halt.is_set() and not stop.is_set():
                wait_s = next_s - clock()
                if wait_s > 0:
                    time.sleep(min(wait_s, 0.05))
                    continue
                due = []
                now = clock()
                while next_s <= now:
                    due.append((index, next_s))
                    index += 1
                    next_s += rng.exponential(1.0 / rate) if spec.arrival == "poisson" else 1.0 / rate
                rec.sent += len(due)
                if posted - taken[0] >= spec.max_in_flight:
                    # the event loop has not even taken the last max_in_flight requests: these are not sent (nor
                    # queued for it without end), and count as dropped in the window they were due in
                    rec.dropped_by_schedule += len(due)
                    continue
                posted += len(due)
                try:
                    loop.call_soon_threadsafe(start_open, due)
                except RuntimeError:  # the loop closed
                    return

        thread = threading.Thread(target=schedule, name="tritongen-open-loop", daemon=True)
        thread.start()
        try:
            while thread.is_alive() and not stop.is_set():
                await asyncio.sleep(0.05)
        finally:
            halt.set()
            await asyncio.to_thread(thread.join, 5)

    label = f"concurrency {int(load)}" if mode == "concurrency" else f"{load:g} req/s"
    windows: list[Window] = []
    stable = False
    gone = None
    cut = False

    def left_s() -> float:  # until --max-time-s ends the run
        return float("inf") if deadline_s is None else deadline_s - clock()

    interrupted = False
    drivers: list[asyncio.Future] = []
    try:
        if mode == "concurrency":
            n = int(load)
            if isinstance(sender, RawHttpSender) and n <= MAX_THREAD_WORKERS:
                for i in range(n):  # one by one: a thread refused leaves those started in `drivers`, to end
                    drivers.append(thread_worker(i, n))
                go.set()
            else:
                drivers += [asyncio.ensure_future(closed_worker(i, n)) for i in range(n)]
        else:
            drivers.append(asyncio.ensure_future(open_scheduler(load)))
        await _sleep_or_fail(drivers, max(0.0, min(spec.warmup_s, left_s())))
        start_stats = await stats_fn()
        server_edge = await server_read()
        # the window starts here, its count and its clock read together: requests answered during a slow
        # statistics read were counted in the first window without its time (63,698 req/s against 8,000 steady)
        start_index, dropped_edge, resent_edge = rec.count(), rec.dropped, sender.resent
        edge_s, cpu_edge_s = clock(), time.process_time()
        while len(windows) < spec.max_windows:
            if left_s() < spec.window_s * 0.95:  # this window would end after --max-time-s (5% of it: the edges)
                cut = True
                break
            await _sleep_or_fail(drivers, spec.window_s)
            end_index, dropped_now, resent_now = rec.count(), rec.dropped, sender.resent
            now, cpu_now_s = clock(), time.process_time()
            server_now = await server_read()
            stats = await stats_fn()
            server_use = server_cpu_between(server_edge, server_now)
            w = _window(
                rec,
                start_index,
                end_index,
                now - edge_s,
                stats,
                cpu_now_s - cpu_edge_s,
                server_use,
                dropped_now - dropped_edge,
            )
            w = replace(w, resent=resent_now - resent_edge)
            windows.append(w)
            start_index, edge_s, cpu_edge_s, server_edge = end_index, now, cpu_now_s, server_now
            dropped_edge, resent_edge = dropped_now, resent_now
            stable = is_stable(windows, spec.stability_pct)
            progress(f"  {label}: window {len(windows)}: {window_text(w)}" + ("  stable" if stable else ""))
            kinds = Counter(e for e in rec.errors[w.start : w.end])
            if (
                w.end > w.start
                and sum(n for k, n in kinds.items() if k and kind_name(k) in SERVER_GONE) == w.end - w.start
            ):
                gone = f"no server answered during window {len(windows)} ({', '.join(sorted(k for k in kinds if k))})"
                break
            if stable:
                break
    except (asyncio.CancelledError, KeyboardInterrupt):
        interrupted = True
        raise
    finally:
        stop.set()
        halted.set()
        go.set()  # threads not yet let go see the halt and end
        grace_s = spec.timeout_s + 5 if mode == "concurrency" else min(spec.timeout_s + 5, OPEN_LOOP_GRACE_S)
        if interrupted:  # Ctrl-C: nothing more is measured, so no request is waited for (it waited --timeout-s)
            grace_s = 0.2
        if await _drain(drivers, tasks, max(0.2, min(grace_s, left_s()))) and spoiled is not None:
            spoiled()
    used = windows[-STABLE_WINDOWS:]
    if not used and cut:
        raise CutShort(label, None)
    if not used:
        raise ServerGone(gone or "no window was measured")
    first, last = used[0].start, used[-1].end
    seconds = sum(w.seconds for w in used)
    client_cpu_s = sum(w.client_cpu_s for w in used)
    server_use = server_use_total([w.server_use for w in used])
    errors = Counter(e for e in rec.errors[first:last] if e is not None)
    dropped = sum(w.dropped for w in used)
    if dropped:
        errors["client_overloaded"] += dropped
    ok = [lat * 1000.0 for lat, e in zip(rec.latency_s[first:last], rec.errors[first:last]) if e is None]
    before = windows[-STABLE_WINDOWS - 1].stats if len(windows) > STABLE_WINDOWS else start_stats
    server = server_breakdown_from_stats(before, used[-1].stats) if (before and used[-1].stats) else ServerBreakdown()
    steps = (
        steps_from_stats(before, used[-1].stats, list(used[-1].stats.get("steps", {})))
        if (before and used[-1].stats)
        else {}
    )
    answered = server.requests or len(ok)  # the server's own count over the same windows, where it has one
    server_cpu = server_cpu_from_used(server_use, seconds, answered)
    point = PerfPoint(
        mode=mode,
        load=load,
        engine="builtin",
        throughput_rps=len(ok) / seconds if seconds else 0.0,
        latency=latency_summary_from_ms(ok),
        requests=last - first + dropped,
        errors=dict(errors),
        resent=sum(w.resent for w in used),
        measured_s=seconds,
        windows=len(windows),
        stable=stable,
        server=server,
        steps=steps,
        client_cpu_cores=client_cpu_s / seconds if seconds else None,
        client_cpu_us_per_request=client_cpu_s / (last - first) * 1e6 if last > first else None,
        client_machine_share=_machine_share(spec, client_cpu_s / seconds) if seconds else None,
        server_cpu_cores=server_cpu.cores if server_cpu else None,
        server_cpu_us_per_request=server_cpu.us_per_request if server_cpu else None,
        server_wakeups_per_request=server_cpu.wakeups_per_request if server_cpu else None,
        window_history=tuple((round(w.throughput_rps, 3), round(w.p99_ms, 3)) for w in windows),
        versions=version_figures_from_records(
            spec.version_split,
            rec.versions[first:last],
            rec.latency_s[first:last],
            rec.errors[first:last],
            seconds,
            before,
            used[-1].stats,
        )
        if spec.version_split
        else {},
    )
    if mode == "request_rate":
        lags = np.asarray(rec.send_lag_s) * 1000.0
        point = _with_open_loop(point, rec, seconds, float(lags.max()) if lags.size else 0.0)
    if gone:
        raise ServerGone(gone)
    if cut:
        raise CutShort(label, point)
    return point


# An HTTP closed loop up to this many requests in flight runs a thread per request (perf_analyzer's pacing); above
# it, tasks of the event loop. Threads taking turns at the GIL (on one CPU, _share_one_cpu) serve about 22,000 req/s
# against a trivial server where the event loop serves 33,000, and their tail grows with their number (p99 at 64
# in flight 10.9 ms against 3.2; at 256, 136 ms, some threads starved), while their pacing matters where a closed
# loop waits on the server's batches: concurrencies around the max batch size.
MAX_THREAD_WORKERS = 64
WORKER_STACK_BYTES = 1 << 20  # a worker thread's stack: 64 of them take 64 MiB of address space, not 512


def _share_one_cpu(cpu: int | None) -> None:
    """Keep the calling worker thread on ``cpu`` (None: the first CPU this process may use; Linux). CPython's threads
    take turns at one lock (the GIL): spread over several cores they hand it across them, and the HTTP closed loop
    served a fourth of what it did on one core (64 in flight against a trivial server: 4,900 req/s spread, 22,000
    on one CPU; the event loop's tasks 32,000), one core being what the event loop they replace uses anyway."""
    if not hasattr(os, "sched_setaffinity"):
        return
    try:
        os.sched_setaffinity(0, {cpu if cpu is not None else min(os.sched_getaffinity(0))})
    except (OSError, ValueError):
        pass


def worker_cpu_for(url: str) -> int | None:
    """The CPU an HTTP closed loop's worker threads share: the first this process may use (``--client-cpus``'s set,
    when given) that the local server at ``url`` does not (``serve --cpus 0-3`` left CPU 0 to the server's threads
    and the client's), else the first; None where affinity cannot be read."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    from .placement import server_cpus_at

    allowed = os.sched_getaffinity(0)
    try:
        served = set(server_cpus_at(url) or ())
    except (OSError, ValueError, TritongenError):
        served = set()
    return min(allowed - served or allowed)


def _start_thread(target: Callable[[], None], name: str, workers: int) -> None:
    """Start one of ``workers`` closed-loop worker threads (daemons, with a smaller stack than the default 8 MiB);
    a system that refuses another thread (a container's process limit) is the run's error, not a traceback."""
    previous = threading.stack_size(WORKER_STACK_BYTES)
    try:
        threading.Thread(target=target, name=name, daemon=True).start()
    except RuntimeError as exc:
        raise TritongenError(
            f"the system refused a thread for each of the {workers} requests in flight ({exc})",
            "measure a lower --concurrency, raise the process limit (ulimit -u, a container's pids limit), or "
            "measure over gRPC (--protocol grpc), whose closed loop needs no threads",
        ) from None
    finally:
        threading.stack_size(previous)


def window_text(w: Window) -> str:
    """A window's figures for the progress lines: "no answers" where none came (not a mean of nan)."""
    latency = f"mean {w.mean_ms:7.2f} ms  p99 {w.p99_ms:7.2f} ms" if w.mean_ms == w.mean_ms else "no answers"
    dropped = f" ({w.dropped} never sent: the client could not keep up)" if w.dropped else ""
    return f"{w.throughput_rps:8.1f} req/s  {latency}  errors {w.errors}{dropped}"


def _machine_share(spec: PerfSpec, client_cores: float) -> float | None:
    """The client's share of this machine's cores when the server runs here too (a URL that stays on this machine:
    loopback, 0.0.0.0, or an address of one of its interfaces), else None; None too when the client is pinned to
    CPUs the server does not use (--client-cpus): then it takes nothing of the server's."""
    import os

    from ..server.ports import is_this_machine
    from .placement import server_cpus_at

    host = spec.resolved_url().rpartition(":")[0].strip("[]")
    if not host or not is_this_machine(host):
        return None
    if spec.client_cpus:
        server = server_cpus_at(spec.resolved_url())
        if server and not set(server) & set(spec.client_cpus):
            return None
    return client_cores / (os.cpu_count() or 1)


def _with_open_loop(point: PerfPoint, rec: Recorder, seconds: float, max_lag_ms: float) -> PerfPoint:
    from dataclasses import replace

    return replace(point, send_rate_rps=point.requests / seconds if seconds else 0.0, max_send_lag_ms=max_lag_ms)


async def _sleep_or_fail(drivers, seconds: float) -> None:
    done, _ = await asyncio.wait(drivers, timeout=seconds, return_when=asyncio.FIRST_EXCEPTION)
    for task in done:
        if task.exception() is not None:
            raise task.exception()


async def _drain(drivers, tasks, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for the level's requests to end, then cancel the rest; True where any was (an HTTP
    worker's thread is not stopped by that: closing the sender, which a spoiled level gets, wakes it)."""
    pending = [*drivers, *tasks]
    if not pending:
        return False
    _, still = await asyncio.wait(pending, timeout=timeout_s)
    for task in still:
        task.cancel()
    if still:
        await asyncio.wait(still, timeout=5)
    for task in pending:  # a failure the level raised once: the other workers' are not logged with tracebacks
        if task.done() and not task.cancelled():
            task.exception()
    return bool(still)


# --------------------------------------------------------------------------------------------- entry


def points_from_builtin(
    spec: PerfSpec,
    requests: RequestSet,
    progress: Progress | None = None,
    on_point: Callable[[PerfPoint], None] | None = None,
    started_s: float | None = None,
) -> list[PerfPoint]:
    """Measure every load level of ``spec`` with the built-in engine. Raises :class:`ServerGone` mid-run.
    ``started_s``: the ``time.monotonic()`` reading the run began at, which ``--max-time-s`` counts from (default:
    now)."""
    progress = progress or (lambda message: None)
    left_s = None if spec.max_time_s is None else spec.max_time_s - (time.monotonic() - (started_s or time.monotonic()))
    return asyncio.run(_run_levels(spec, requests, progress, on_point or (lambda p: None), left_s))


async def _run_levels(
    spec: PerfSpec, requests: RequestSet, progress: Progress, on_point, left_s: float | None = None
) -> list[PerfPoint]:
    from ..client import model_metadata, model_statistics

    deadline_s = None if left_s is None else time.perf_counter() + left_s
    url = spec.resolved_url()
    connections = max([int(c) for c in spec.concurrency] + [64])
    worker_cpu = None
    if spec.protocol != "grpc":  # a closed loop opens a connection per request in flight; an open loop up to the cap
        opened = connections if spec.request_rates else max(int(c) for c in spec.concurrency)
        enough_open_files(opened + FILES_BESIDE_CONNECTIONS, f"{opened} connections")
        worker_cpu = worker_cpu_for(url)
    versions = tuple(v for v, _ in spec.version_split) or ("",)

    def new_sender() -> RawGrpcSender | RawHttpSender:
        return (
            RawGrpcSender(url, spec.model, requests, spec.timeout_s, versions)
            if spec.protocol == "grpc"
            else RawHttpSender(url, spec.model, requests, spec.timeout_s, connections, versions)
        )

    sender = new_sender()
    # a question to the server is a request: --timeout-s bounds it too, but never under a second (a short timeout
    # for inference left remote servers' statistics unread)
    read_s = min(STATS_READ_S, max(spec.timeout_s, STATS_READ_MIN_S))

    try:  # an ensemble's composing models get their own statistics: how each step batched, queued, computed
        # at most MAX_STEPS (a results.json holds no more; a server names as many as it likes): the first ones
        probe_s = min(read_s, max(left_s, 0.5)) if left_s is not None else read_s
        steps = tuple(model_metadata(url, spec.model, spec.protocol, probe_s).get("steps", ()))[:MAX_STEPS]
    except TritongenError:
        steps = ()

    def stats_wait_s() -> float:
        """How long a statistics read may take: --timeout-s (1 to 10 s) a model, and 2 s more; with --max-time-s,
        a quarter of the time left and a second more (a server answers them in milliseconds; one that stalls leaves
        the level its time, and the read after it ends a second past the deadline at most)."""
        cap = 2.0 + read_s * (1 + len(steps))
        if deadline_s is None:
            return cap
        left_s = max(0.0, deadline_s - time.perf_counter())
        return max(0.5, min(cap, left_s / 4 + STATS_GRACE_S))

    def snapshot(wait_s: float) -> dict:
        """The model's statistics and its steps', each read within what is left of ``wait_s``: the thread an
        abandoned read leaves behind ends by then too (the run waits for it as it ends)."""
        until = time.perf_counter() + wait_s

        def read(name: str) -> dict:
            left_s = until - time.perf_counter()
            if left_s <= 0:
                raise TritongenError("the statistics read ran out of time", "")
            return model_statistics(url, name, spec.protocol, min(read_s, left_s))

        own = read(spec.model)
        if steps:
            own["steps"] = {name: read(name) for name in steps}
        return own

    async def stats():
        wait_s = stats_wait_s()
        try:
            return await asyncio.wait_for(asyncio.to_thread(snapshot, wait_s), timeout=wait_s)
        except (TritongenError, asyncio.TimeoutError):
            return None

    meter = server_cpu_meter_at(url)
    points: list[PerfPoint] = []
    spoiled: list[bool] = []
    try:
        for i, (mode, load) in enumerate(spec.levels):
            if spoiled:  # requests abandoned mid-flight: a new sender, so that no late answer reaches this level
                spoiled.clear()
                await sender.close()
                sender = new_sender()
            try:
                point = await _level(
                    sender,
                    mode,
                    load,
                    spec,
                    stats,
                    progress,
                    meter,
                    deadline_s,
                    lambda: spoiled.append(True),
                    worker_cpu,
                )
            except CutShort as cut:
                if cut.point is not None:
                    points.append(cut.point)
                    on_point(cut.point)
                raise time_up_error(spec, cut.label, cut.point, len(spec.levels) - i - 1) from None
            points.append(point)
            on_point(point)
    finally:
        await sender.close()
    return points


FILES_BESIDE_CONNECTIONS = 64  # statistics clients, gevent's pipes, /proc reads, the samples: beside the load's


def enough_open_files(needed: int, what: str) -> None:
    """Raise this process's soft limit on open files to ``needed`` where its hard limit allows; refuse where it does
    not (at 300 connections under ``ulimit -n 200`` the load's connects failed as "connection" and the statistics
    client's pipe aborted the process with a gevent traceback)."""
    try:
        import resource
    except ImportError:  # not a POSIX system
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard == resource.RLIM_INFINITY or hard >= needed:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
            return
        except (OSError, ValueError):
            pass
    raise TritongenError(
        f"{what} need about {needed} open files, and this process may open {soft} (at most {hard})",
        "raise the limit (ulimit -n), or measure a lower --concurrency",
    )


def time_up_error(spec: PerfSpec, label: str, point: PerfPoint | None, left: int) -> TritongenError:
    """--max-time-s ran out at the level ``label`` (its ``point`` so far, if any), ``left`` levels after it."""
    done = f"cut short after {point.windows} window(s)" if point is not None else "cut short before any window"
    return TritongenError(
        f"--max-time-s {spec.max_time_s:g} ran out: {label} was {done}"
        + (f"; {left} more level(s) not measured" if left else ""),
        "raise --max-time-s, or measure fewer levels, or shorten --duration-s or --warmup-s",
    )
