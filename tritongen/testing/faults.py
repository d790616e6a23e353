"""Serving under faults: a soak with malformed requests mixed in, and a Python-backend stub killed mid-load.

:func:`soak_from_server` drives served models over gRPC with ``concurrency`` requests in flight for
``duration_s``, about ``bad_fraction`` of them malformed (:mod:`tritongen.testing.malformed`), and returns a
:class:`SoakResult`: what was sent, good answers (checked against the server's own answers on a quiet server,
so a batch that mixes good and bad requests cannot corrupt a good answer unnoticed), bad requests rejected or
wrongly accepted, errors by kind, the server's RSS (tritonserver plus its stub children, :mod:`tritongen.testing.procs`)
and whether it is still alive. With ``kill_stub_at_s`` it kills -9 one model's ``triton_python_backend_stub``
while the load runs and reports how the model recovered (:class:`StubKill`).

What Triton 2.51 (the nvidia-pytriton wheel's server) does with a killed stub, as measured here:

- it does **not** restart it: every request to the model fails after 1 s with "Stub process '<model>_0_0' is
  not healthy", while the model and the server still report READY; the dead stub stays an unreaped zombie;
- a load request for the unchanged model is a no-op. :func:`reload_model` sends the served config back with a
  ``tritongen_restart`` parameter (a fresh value each time), so Triton loads a new instance with a new stub
  (about 1.4 s here) and routes new requests to it (needs explicit model control);
- requests already queued on the dead instance are still failed one per second, so some clients wait up to
  their timeout; the replaced model never finishes unloading, and a graceful stop then waits Triton's whole
  exit timeout (30 s).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import TritongenError
from .malformed import GOOD, Payload, payloads_from_samples
from .procs import STUB_NAME, rss_kb_from_pid, stubs_from_server, zombies_from_server

UNHEALTHY = "stub_unhealthy"
NO_ANSWER = ("unavailable", "deadline_exceeded", "cancelled", "connection")  # not an error *answer* from the server
RESTART_PARAMETER = "tritongen_restart"


@dataclass(frozen=True)
class SoakSpec:
    models: tuple[str, ...]
    duration_s: float = 20.0
    concurrency: int = 32
    bad_fraction: float = 0.1
    bad_kinds: tuple[str, ...] | None = None  # None: every kind of malformed.BAD_KINDS that applies to the model
    samples: Mapping[str, Sequence[Mapping[str, np.ndarray]]] = field(default_factory=dict)  # else the build's samples
    kill_stub_at_s: float | None = None  # kill -9 the stub of kill_model this far into the run
    kill_model: str | None = None  # default: the first of models
    reload: bool = True  # recover a killed stub with reload_model (else wait and see whether Triton does)
    recovery_timeout_s: float = 60.0  # from the kill; the run goes on past duration_s until then at most
    warmup_s: float = 2.0  # RSS "start" is read this far into the run, after the first allocations
    timeout_s: float = 30.0  # per request
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", tuple(self.models))
        if not self.models:
            raise TritongenError("no models to soak", "name at least one served model")
        if self.duration_s <= 0 or self.concurrency < 1 or self.timeout_s <= 0:
            raise TritongenError(
                "soak duration, concurrency and timeout must be positive", "give --duration-s > 0, concurrency >= 1"
            )
        if not 0 <= self.bad_fraction < 1:
            raise TritongenError(
                f"bad fraction {self.bad_fraction} is outside [0, 1)", "use e.g. 0.1 for 10% malformed requests"
            )
        if self.kill_stub_at_s is not None and not 0 <= self.kill_stub_at_s < self.duration_s:
            raise TritongenError(
                f"stub kill at {self.kill_stub_at_s} s is outside the {self.duration_s:g} s run", "kill within the run"
            )

    @property
    def killed(self) -> str:
        return self.kill_model or self.models[0]


@dataclass(frozen=True)
class StubKill:
    model: str
    pid: int
    at_s: float  # into the run
    detected_s: float | None  # kill -> first "not healthy" answer
    reload_started_s: float | None  # kill -> reload request sent (None: no reload)
    reload_s: float | None  # how long the reload request took
    recovered: bool
    recovery_s: float | None  # kill -> first good answer to a request sent after the kill
    self_recovered: bool  # a good answer came before any reload: Triton restarted the stub itself
    failed_requests: int  # good requests to the model that failed (error answer, timeout) after the kill
    last_failure_s: (
        float | None
    )  # kill -> the last of those failures (requests queued on the dead instance drain slowly)
    max_failed_latency_s: float  # the longest a failed request waited for its answer
    new_pid: int | None  # the model's stub after the run
    reload_error: str | None = None


@dataclass(frozen=True)
class SoakResult:
    models: tuple[str, ...]
    seconds: float
    concurrency: int
    sent: int
    good_sent: int
    good_ok: int
    good_failed: int  # error answers, no answer, or a wrong answer
    good_wrong: int  # answered, but not what the quiet server answered
    bad_sent: int
    bad_rejected: int  # answered with an error
    bad_accepted: int  # answered as if fine: wrong
    bad_unanswered: int  # timed out / connection lost
    bad_by_kind: Mapping[str, Mapping[str, int]]  # kind -> {"sent", "rejected", "accepted"}
    errors: Mapping[str, int]  # "<request kind>: <error kind>" -> count
    error_samples: Mapping[str, str]  # one server message per key of errors
    rss_before_kb: int
    rss_start_kb: int  # after warmup_s of load
    rss_end_kb: int  # after the load stopped
    rss_peak_kb: int
    stubs_start: Mapping[int, str]  # stub pid -> model
    stubs_end: Mapping[int, str]
    zombies_end: int  # dead children the server has not reaped
    server_alive: bool
    stub_kill: StubKill | None = None
    server_crash: str = ""  # a server gone by the end: how it ended, in its own log's words (RunningServer.crash)

    @property
    def rss_ratio(self) -> float:
        return self.rss_end_kb / self.rss_start_kb if self.rss_start_kb else float("nan")

    @property
    def throughput_rps(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        out = asdict(self)
        out["rss_ratio"], out["throughput_rps"] = self.rss_ratio, self.throughput_rps
        return out

    def summary(self) -> str:
        lines = [
            f"soak of {', '.join(self.models)}: {self.seconds:.1f} s at concurrency {self.concurrency}, "
            f"{self.sent} requests ({self.throughput_rps:.0f}/s)",
            f"  good: {self.good_sent} sent, {self.good_ok} ok, "
            f"{self.good_failed} failed ({self.good_wrong} wrong answers)",
            f"  bad:  {self.bad_sent} sent, {self.bad_rejected} rejected, {self.bad_accepted} accepted wrongly, "
            f"{self.bad_unanswered} unanswered",
        ]
        for kind, counts in sorted(self.bad_by_kind.items()):
            lines.append(
                f"    {kind:<16} {counts['sent']:>7} sent {counts['rejected']:>7} "
                f"rejected {counts['accepted']:>4} accepted"
            )
        lines.append("  errors by kind:" + ("" if self.errors else " none"))
        for key, count in sorted(self.errors.items(), key=lambda kv: -kv[1]):
            lines.append(f"    {count:>7}  {key}  ({self.error_samples.get(key, '')[:110]})")
        lines.append(
            f"  server RSS (tritonserver + stubs): before {self.rss_before_kb / 1024:.1f} "
            f"MB, start {self.rss_start_kb / 1024:.1f} MB, "
            f"end {self.rss_end_kb / 1024:.1f} MB (end/start "
            f"{self.rss_ratio:.3f}), peak {self.rss_peak_kb / 1024:.1f} MB"
        )
        lines.append(
            f"  server alive at end: {self.server_alive}; stubs {len(self.stubs_start)} -> {len(self.stubs_end)}, "
            f"unreaped dead children {self.zombies_end}"
        )
        if self.server_crash:
            lines.append(f"  server gone: {self.server_crash}")
        k = self.stub_kill
        if k is not None:
            fmt = lambda v: "-" if v is None else f"{v:.3f} s"  # noqa: E731
            lines.append(
                f"  stub kill: '{k.model}' stub pid {k.pid} killed at "
                f"{k.at_s:.1f} s; first 'not healthy' after {fmt(k.detected_s)}; "
                f"reload sent after {fmt(k.reload_started_s)} (took {fmt(k.reload_s)})"
                + (f", reload failed: {k.reload_error}" if k.reload_error else "")
            )
            lines.append(
                f"    recovered: {k.recovered} after {fmt(k.recovery_s)} (kill "
                f"-> first good answer); self-recovered: {k.self_recovered}; "
                f"new stub pid {k.new_pid}"
            )
            lines.append(
                f"    failed requests: {k.failed_requests}, the last "
                f"{fmt(k.last_failure_s)} after the kill, the slowest answered "
                f"after {k.max_failed_latency_s:.3f} s"
            )
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------- recovery


def _triton(server, timeout_s: float):
    from ..client import Triton

    return Triton(server.http_url, "http", timeout_s, headers=server.admin_headers("http"))


def reload_model(server, model: str, timeout_s: float = 120.0) -> float:
    """Make Triton start ``model`` afresh (new instances, new stubs); returns the seconds the load took.

    A load of an unchanged model is a no-op in Triton 2.51, so the served config goes back with one extra
    parameter (``tritongen_restart``: a fresh value each time), which the generated models ignore.
    """
    if getattr(server.spec, "model_control", "explicit") != "explicit":
        raise TritongenError(
            f"the server does not allow reloading '{model}' (model control mode '{server.spec.model_control}')",
            'serve with explicit model control: ServeSpec(model_control="explicit") '
            "or tritonserver --model-control-mode=explicit",
        )
    from ..client import ModelLoadError

    with _triton(server, timeout_s) as triton:
        config = triton.model_config(model)
        config.setdefault("parameters", {})[RESTART_PARAMETER] = {"string_value": str(time.time_ns())}
        started = time.monotonic()
        try:
            triton.load(model, config, timeout_s=timeout_s)
        except ModelLoadError as e:
            raise TritongenError(
                f"Triton refused to reload '{model}' ({e.problem[:300]})",
                f"see the server log {getattr(server, 'log_path', '')}",
            ) from None
    return time.monotonic() - started


def _server_alive(server) -> bool:
    if not server.is_running():
        return False
    with _triton(server, 5) as triton:
        return triton.live()


# --------------------------------------------------------------------------------------------- the soak


def soak_from_server(server, spec: SoakSpec, progress=None) -> SoakResult:
    """Soak ``spec.models`` on the running ``server`` (a :class:`~tritongen.server.RunningServer`)."""
    from ..client import model_metadata
    from ..perf.inputs import request_set_for_model

    progress = progress or (lambda message: None)
    if not server.is_running():
        raise TritongenError("the server is not running", "start it first (tritongen serve)")
    if spec.kill_stub_at_s is not None and spec.reload and server.spec.model_control != "explicit":
        reload_model(server, spec.killed)  # raises the explicit-mode error up front
    good: dict[str, list[Payload]] = {}
    bad: dict[str, list[Payload]] = {}
    for i, model in enumerate(spec.models):
        meta = model_metadata(server.grpc_url, model, timeout_s=30)
        samples = spec.samples.get(model)
        if samples is None:
            samples = request_set_for_model(meta, server.spec.repo).requests
        good[model], bad[model] = payloads_from_samples(meta, list(samples), seed=spec.seed + i)
        if spec.bad_kinds is not None:
            bad[model] = [p for p in bad[model] if p.kind in spec.bad_kinds]
    plan = _plan(spec, good, bad)
    budget = spec.duration_s + (spec.recovery_timeout_s if spec.kill_stub_at_s is not None else 0) + spec.timeout_s + 60
    try:
        return asyncio.run(asyncio.wait_for(_soak(server, spec, good, plan, progress), timeout=budget))
    except asyncio.TimeoutError:
        raise TritongenError(
            f"the soak did not finish within {budget:g} s", f"see the server log {server.log_path}"
        ) from None


def _plan(
    spec: SoakSpec, good: Mapping[str, list[Payload]], bad: Mapping[str, list[Payload]], length: int = 4096
) -> list[Payload]:
    """The request sequence the workers cycle through: models at random, ``bad_fraction`` of them malformed."""
    rng = np.random.default_rng(spec.seed)
    plan = []
    for _ in range(length):
        model = spec.models[int(rng.integers(len(spec.models)))]
        pool = bad[model] if bad[model] and rng.random() < spec.bad_fraction else good[model]
        plan.append(pool[int(rng.integers(len(pool)))])
    return plan


def _error_kind(error) -> tuple[str, str]:
    details = error.details() or ""
    kind = error.code().name.lower()
    if kind == "internal" and "is not healthy" in details:
        kind = UNHEALTHY
    return kind, details


def _arrays(response) -> list[np.ndarray]:
    from tritonclient.utils import deserialize_bytes_tensor, triton_to_np_dtype

    out = []
    for tensor, raw in zip(response.outputs, response.raw_output_contents):
        shape = [int(d) for d in tensor.shape]
        if tensor.datatype == "BYTES":
            out.append(deserialize_bytes_tensor(raw).reshape(shape))
        else:
            out.append(np.frombuffer(raw, dtype=triton_to_np_dtype(tensor.datatype)).reshape(shape))
    return out


def _same(got: list[np.ndarray], want: list[np.ndarray]) -> bool:
    if len(got) != len(want):
        return False
    for g, w in zip(got, want):
        if g.shape != w.shape or g.dtype != w.dtype:
            return False
        if g.dtype.kind == "f":
            if not np.allclose(g, w, rtol=1e-4, atol=1e-5, equal_nan=True):
                return False
        elif not np.array_equal(g, w):
            return False
    return True


@dataclass
class _Tally:
    sent: Counter = field(default_factory=Counter)  # payload kind -> sent
    ok: Counter = field(default_factory=Counter)  # payload kind -> answered ok (for bad: accepted wrongly)
    errors: Counter = field(default_factory=Counter)
    samples: dict = field(default_factory=dict)
    wrong: int = 0
    kill_t: float | None = None
    unhealthy_t: float | None = None
    first_good_t: float | None = None
    reload_t: float | None = None
    kill_failed: int = 0
    last_fail_t: float | None = None
    max_fail_latency: float = 0.0


MAX_MESSAGE_BYTES = 256 * 1024 * 1024  # the soak's gRPC channel sends and receives messages up to this size


async def _soak(server, spec: SoakSpec, good: Mapping[str, list[Payload]], plan: list[Payload], progress) -> SoakResult:
    import grpc
    from tritonclient.grpc import service_pb2

    channel = grpc.aio.insecure_channel(
        server.grpc_url,
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    call = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer", response_deserializer=service_pb2.ModelInferResponse.FromString
    )
    clock = time.monotonic
    try:
        # The quiet server's answers, one request at a time: what every good answer under load must match.
        golden = {}
        for payloads in good.values():
            for p in payloads:
                try:
                    golden[id(p)] = _arrays(await call(p.data, timeout=spec.timeout_s))
                except grpc.aio.AioRpcError as e:
                    raise TritongenError(
                        f"a good request to '{p.model}' failed before the soak ({_error_kind(e)[1][:200]})",
                        "check that the model serves its own samples (tritongen infer --check)",
                    ) from None
        tally = _Tally()
        stubs_start = stubs_from_server(server.pid)
        rss = {"before": rss_kb_from_pid(server.pid)}
        rss["start"] = rss["peak"] = rss["before"]
        killed = spec.killed
        stop = asyncio.Event()
        unhealthy = asyncio.Event()
        recovered = asyncio.Event()
        next_index = iter(range(1 << 62))
        t0 = clock()

        async def worker() -> None:
            while not stop.is_set():
                p = plan[next(next_index) % len(plan)]
                sent_t = clock()
                tally.sent[p.kind] += 1
                try:
                    response = await call(p.data, timeout=spec.timeout_s)
                    error = None if p.bad or _same(_arrays(response), golden[id(p)]) else "wrong_answer"
                    details = "" if error is None else "answer differs from the quiet server's"
                except grpc.aio.AioRpcError as e:
                    error, details = _error_kind(e)
                except (OSError, ConnectionError) as e:
                    error, details = "connection", str(e)
                done_t = clock()
                if error is None:
                    tally.ok[p.kind] += 1
                else:
                    key = f"{p.kind}: {error}"
                    tally.errors[key] += 1
                    tally.samples.setdefault(key, details.strip().splitlines()[0][:300] if details.strip() else "")
                    tally.wrong += error == "wrong_answer"
                if p.model != killed or p.bad or tally.kill_t is None:
                    continue
                if error is None and sent_t >= tally.kill_t and tally.first_good_t is None:
                    tally.first_good_t = done_t
                    recovered.set()
                elif error is not None and done_t >= tally.kill_t:
                    tally.kill_failed += 1
                    tally.last_fail_t = done_t
                    tally.max_fail_latency = max(tally.max_fail_latency, done_t - sent_t)
                    if error == UNHEALTHY and tally.unhealthy_t is None:
                        tally.unhealthy_t = done_t
                        unhealthy.set()

        async def sampler() -> None:
            while not stop.is_set():
                await asyncio.sleep(0.5)
                value = await asyncio.to_thread(rss_kb_from_pid, server.pid)
                rss["peak"] = max(rss["peak"], value)
                if "started" not in rss and clock() - t0 >= min(spec.warmup_s, spec.duration_s / 4):
                    rss["start"], rss["started"] = value, 1

        kill_info: dict[str, Any] = {}

        async def killer() -> None:
            await asyncio.sleep(spec.kill_stub_at_s or 0.0)
            pids = [pid for pid, model in stubs_from_server(server.pid).items() if model == killed]
            if not pids:
                raise TritongenError(
                    f"model '{killed}' has no {STUB_NAME} to kill",
                    "kill a Python-backend model's stub (--target local)",
                )
            kill_info["pid"] = pids[0]
            if "started" not in rss:  # RSS "start" is read before the kill takes a stub away
                rss["start"], rss["started"] = await asyncio.to_thread(rss_kb_from_pid, server.pid), 1
            tally.kill_t = clock()
            os.kill(pids[0], signal.SIGKILL)
            progress(f"  killed the stub of '{killed}' (pid {pids[0]}) at {tally.kill_t - t0:.1f} s")
            deadline = tally.kill_t + spec.recovery_timeout_s
            try:  # the first answer that says so, else carry on after a while (no traffic may have reached it)
                await asyncio.wait_for(unhealthy.wait(), timeout=min(10.0, spec.recovery_timeout_s))
            except asyncio.TimeoutError:
                pass
            if spec.reload and not recovered.is_set():
                tally.reload_t = clock()
                try:
                    kill_info["reload_s"] = await asyncio.wait_for(
                        asyncio.to_thread(reload_model, server, killed, max(1.0, deadline - clock())),
                        timeout=max(1.0, deadline - clock() + 5),
                    )
                except (TritongenError, asyncio.TimeoutError) as e:
                    kill_info["reload_error"] = str(e) or "timed out"
                progress(
                    f"  reloaded '{killed}' in {kill_info.get('reload_s', float('nan')):.2f} s"
                    if "reload_s" in kill_info
                    else f"  reload of '{killed}' failed: {kill_info['reload_error']}"
                )
            try:
                await asyncio.wait_for(recovered.wait(), timeout=max(0.0, deadline - clock()))
            except asyncio.TimeoutError:
                pass

        workers = [asyncio.ensure_future(worker()) for _ in range(spec.concurrency)]
        helpers = [asyncio.ensure_future(sampler())]
        kill_task = asyncio.ensure_future(killer()) if spec.kill_stub_at_s is not None else None
        try:
            last_report = t0
            while True:
                await asyncio.sleep(0.2)
                now = clock()
                failure = kill_task.exception() if kill_task is not None and kill_task.done() else None
                if failure is not None:
                    raise failure
                if now - t0 >= spec.duration_s and (kill_task is None or kill_task.done()):
                    break
                if now - last_report >= 10:
                    last_report = now
                    progress(
                        f"  {now - t0:6.0f} s: {sum(tally.sent.values())} sent, {sum(tally.errors.values())} errors, "
                        f"RSS {rss['peak'] / 1024:.0f} MB peak"
                    )
        finally:
            stop.set()
            pending = [*workers, *helpers] + ([kill_task] if kill_task is not None else [])
            _, still = await asyncio.wait(pending, timeout=spec.timeout_s + 5)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still, timeout=5)
        seconds = clock() - t0
    finally:
        await channel.close(grace=None)

    return _result(server, spec, tally, rss, stubs_start, seconds, kill_info, t0)


def _result(
    server, spec: SoakSpec, tally: _Tally, rss, stubs_start, seconds: float, kill_info, t0: float
) -> SoakResult:
    bad_kinds = sorted(k for k in tally.sent if k != GOOD)
    bad_by_kind = {}
    for kind in bad_kinds:
        rejected = sum(
            n
            for key, n in tally.errors.items()
            if key.startswith(f"{kind}: ") and key.split(": ", 1)[1] not in NO_ANSWER
        )
        bad_by_kind[kind] = {"sent": tally.sent[kind], "rejected": rejected, "accepted": tally.ok[kind]}
    good_failed = sum(n for key, n in tally.errors.items() if key.startswith(f"{GOOD}: "))
    bad_sent = sum(tally.sent[k] for k in bad_kinds)
    bad_rejected = sum(c["rejected"] for c in bad_by_kind.values())
    bad_accepted = sum(c["accepted"] for c in bad_by_kind.values())
    stubs_end = stubs_from_server(server.pid)
    rss_end = rss_kb_from_pid(server.pid)
    kill = None
    if tally.kill_t is not None:
        since = lambda t: None if t is None else t - tally.kill_t  # noqa: E731
        new = [pid for pid, model in stubs_end.items() if model == spec.killed and pid != kill_info["pid"]]
        kill = StubKill(
            model=spec.killed,
            pid=kill_info["pid"],
            at_s=tally.kill_t - t0,
            detected_s=since(tally.unhealthy_t),
            reload_started_s=since(tally.reload_t),
            reload_s=kill_info.get("reload_s"),
            recovered=tally.first_good_t is not None,
            recovery_s=since(tally.first_good_t),
            self_recovered=tally.first_good_t is not None
            and (tally.reload_t is None or tally.first_good_t < tally.reload_t),
            failed_requests=tally.kill_failed,
            last_failure_s=since(tally.last_fail_t),
            max_failed_latency_s=tally.max_fail_latency,
            new_pid=new[0] if new else None,
            reload_error=kill_info.get("reload_error"),
        )
    return SoakResult(
        models=spec.models,
        seconds=seconds,
        concurrency=spec.concurrency,
        sent=sum(tally.sent.values()),
        good_sent=tally.sent[GOOD],
        good_ok=tally.ok[GOOD],
        good_failed=good_failed,
        good_wrong=tally.wrong,
        bad_sent=bad_sent,
        bad_rejected=bad_rejected,
        bad_accepted=bad_accepted,
        bad_unanswered=bad_sent - bad_rejected - bad_accepted,
        bad_by_kind=bad_by_kind,
        errors=dict(tally.errors),
        error_samples=dict(tally.samples),
        rss_before_kb=rss["before"],
        rss_start_kb=rss["start"],
        rss_end_kb=rss_end,
        rss_peak_kb=max(rss["peak"], rss_end),
        stubs_start=stubs_start,
        stubs_end=stubs_end,
        zombies_end=zombies_from_server(server.pid),
        server_alive=_server_alive(server),
        stub_kill=kill,
        server_crash=server.crash(),
    )
