"""Built-in load generator vs perf_analyzer on the same served model, in one run, over gRPC and over HTTP.

Every comparison is one protocol for both engines (perf_analyzer ``-i grpc`` against the built-in gRPC path,
``-i http`` against its HTTP/1.1 path); ``--protocols`` picks which are measured (default both).

1. Agreement: the same model at the same concurrency, the engines alternating (the order rotating by round),
   several rounds; prints built-in / perf_analyzer for throughput and p99 per round (both measured within
   seconds of each other, so a slow spell of the machine falls on both) and judges the median of those ratios
   with its 95% bootstrap interval (``bench/ratios.py``), at each of two loads: concurrency 4, half the max
   batch size, where a closed loop waits on each client's round trip between the server's batches, and 16,
   twice it, where the server always has a queue and sets the pace. Two models: SmallConvNet
   3x32x32 (about a millisecond per request, so the Python client's own CPU time, on the cores the server
   also uses, shows) and the same net 32 channels wide on 3x128x128 (compute-bound, as real models are).
   Target (issues 5, 17): throughput within 5%, p99 within 10%, on both models; the summary says at which
   concurrency over which protocol it is met (the median inside the band; "clear of the noise" when the whole
   interval is), with each engine's client CPU per request (medians over rounds; perf_analyzer's from
   its process's CPU time over the whole run, start-up and warm-up included, per request the server counted).
   perf_analyzer is measured twice per round: as users run it (its synchronous client, a thread per request in
   flight) and with ``--async --max-threads 1`` (its asynchronous client on one thread; ``--no-lean-pa`` leaves
   it out). On a ~1 ms model a closed loop's throughput follows each client's own time per request, and the two
   perf_analyzer clients differ from each other by about as much as either differs from the built-in engine:
   the second is the reference that shows whether the built-in engine measures the server or its own client.
   The summary also judges perf_analyzer against itself (default client / asynchronous client, same rounds, same
   bands): where the reference's two clients miss the 5% band between themselves, the load is client-bound.
2. Drive: the highest request rate each can push through a trivial model (DynamicSeq, a mean over 8
   features): closed loop at high concurrency, and open loop offered at twice that; prints the ratio of
   achieved throughputs. Target: >= 0.8 of perf_analyzer's.

Setup (issue 17): by default (2 or more CPUs) the server runs pinned to every CPU but the first
(``ServeSpec.cpus``) and both engines to the first (``PerfSpec.client_cpus``), as perf_analyzer's documentation
recommends (the client off the server's resources): each engine's own CPU per request then no longer shifts the
server's capacity. ``--no-isolate`` measures the old way, client and server sharing every CPU; ``--both``
measures both setups, one after the other (a fresh server each), and the summary prints both.

Triton's HTTP frontend runs 8 threads by default, and libevhtp gives a new connection to the first of them with an
empty command queue: the built-in engine's connections, opened together on an idle server, land on one thread that
reads a batch's worth of requests per wakeup; perf_analyzer's spread over several that each wake for their own.
``--server-args '--http-thread-count 1'`` measures with one HTTP thread, as many as the isolated server's CPUs.

    .venv/bin/python bench/harness_agreement.py [--rounds 5] [--concurrency 4,16] [--duration-s 4]
        [--protocols grpc,http] [--no-drive] [--isolate | --no-isolate] [--both] [--server-args '...']
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.ratios import band_verdict  # noqa: E402  (after the path is set)

MAX_BATCH = 8  # every model here is built with this max batch size


def build_models(work: Path) -> Path:
    import torch

    from tests import factories
    from tritongen.build import build
    from tritongen.spec import build_spec_from_options

    repo = work / "repo"
    conv = factories.save_model(factories.make_small_conv(), work / "conv.pt", "state_dict")
    build(
        build_spec_from_options(
            conv,
            name="conv",
            inputs=["x:FP32:3,32,32"],
            outputs=["logits"],
            max_batch_size=MAX_BATCH,
            model_factory="tests.factories:make_small_conv",
            repo=repo,
        )
    )
    seq = factories.save_model(
        factories.make_dynamic_seq(), work / "seq.pt", "torchscript-trace", factories.dynamic_seq_inputs()
    )
    build(build_spec_from_options(seq, name="seq", inputs=["x:FP32:-1,8"], max_batch_size=MAX_BATCH, repo=repo))
    # The same network, wider and on 128x128 images: milliseconds of compute per request, so the client's own
    # CPU time (both engines share these cores with the server) is a small part of each measurement.
    torch.manual_seed(0)
    wide = factories.save_model(
        factories.SmallConvNet(channels=32).eval(),
        work / "wide.pt",
        "torchscript-trace",
        (torch.randn(1, 3, 128, 128),),
    )
    build(
        build_spec_from_options(
            wide, name="wide", inputs=["x:FP32:3,128,128"], outputs=["logits"], max_batch_size=MAX_BATCH, repo=repo
        )
    )
    return repo


# The engines compared: the built-in one, perf_analyzer as users run it (synchronous, a thread per request in
# flight), and perf_analyzer's asynchronous client on one thread (its leanest on gRPC here).
LEAN_PA_ARGS = ("--async", "--max-threads", "1")
ENGINES = {
    "builtin": ("builtin", ()),
    "perf_analyzer": ("perf_analyzer", ()),
    "perf_analyzer_async": ("perf_analyzer", LEAN_PA_ARGS),
}
REFERENCES = {
    "perf_analyzer": "perf_analyzer (default client)",
    "perf_analyzer_async": f"perf_analyzer {' '.join(LEAN_PA_ARGS)}",
}


def measure(server, repo: Path, name: str, model: str, duration_s: float, protocol: str, client_cpus=(), **load):
    from tritongen.perf import PerfSpec, perf_from_spec

    engine, pa_args = ENGINES[name]
    url = server.grpc_url if protocol == "grpc" else server.http_url
    spec = PerfSpec(
        model=model,
        url=url,
        protocol=protocol,
        repo=repo,
        engine=engine,
        duration_s=duration_s,
        warmup_s=1.0,
        stability_pct=15,
        max_windows=6,
        client_cpus=client_cpus,
        perf_analyzer_args=pa_args,
        **load,
    )
    from tritongen.errors import TritongenError

    served, server_s = counts(url, model, protocol), server_cpu_s(server, model)
    try:
        run = perf_from_spec(spec)
    except TritongenError as err:  # perf_analyzer gives up now and then on a busy machine: one more try
        print(f"{name} failed ({err.message}; {err.details[-300:]}); measuring again", flush=True)
        served, server_s = counts(url, model, protocol), server_cpu_s(server, model)
        run = perf_from_spec(spec)
    server_used = [b - a for a, b in zip(server_s, server_cpu_s(server, model))]
    if run.partial or not run.points:
        raise SystemExit(f"{name} run was partial: {run.partial_reason}")
    point = run.points[0]
    after = counts(url, model, protocol)
    requests, executions = after[0] - served[0], after[1] - served[1]
    # The server's average batch over the whole run (warm-up included), from its statistics: the same figure for
    # both engines (perf_analyzer's CSV has none).
    point = replace(point, server=replace(point.server, requests=requests, executions=executions))
    # The server's own CPU per request over the whole run, in two parts: the tritonserver process (HTTP/gRPC
    # frontend, batcher) and the model's Python-backend stub (the compute): what each client costs the server.
    frontend_us, stub_us = (used / requests * 1e6 if requests else 0.0 for used in server_used)
    return point, (frontend_us, stub_us)


def server_cpu_s(server, model: str) -> tuple[float, float]:
    """CPU seconds used so far by the tritonserver process itself and by ``model``'s Python-backend stub(s)."""
    import psutil

    from tritongen.testing.procs import stubs_from_server

    def used(pid: int) -> float:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            return 0.0
        return times.user + times.system

    stubs = [pid for pid, name in stubs_from_server(server.pid).items() if name == model]
    return used(server.pid), sum(used(pid) for pid in stubs)


def counts(url: str, model: str, protocol: str) -> tuple[int, int]:
    """The server's (successful requests, model executions) for ``model`` so far."""
    from tritongen.client import model_statistics

    stats = model_statistics(url, model, protocol)
    return int(stats["success_count"]), int(stats["execution_count"])


def getattr_path(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def start_server(spec):
    """The server, started again once if a model failed to load: a Python-backend stub that misses its 1 s health
    check while three models load on one busy CPU fails its model's load (seen once in five starts here)."""
    from tritongen.errors import TritongenError
    from tritongen.server import server_from_repository

    try:
        return server_from_repository(spec)
    except TritongenError as err:
        print(f"the server did not start ({err.problem[:300]}); starting it again", flush=True)
        return server_from_repository(spec)


def setups_from_args(args, cpus: tuple[int, ...]) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """(name, server CPUs, client CPUs) for each setup to measure; () for a set: every CPU."""
    isolate = len(cpus) >= 2 if args.isolate is None else args.isolate
    if (isolate or args.both) and len(cpus) < 2:
        raise SystemExit(f"error: isolation needs 2 CPUs, this process may use {len(cpus)}: pass --no-isolate")
    isolated = ("isolated", cpus[1:], cpus[:1])
    shared = ("shared", (), ())
    if args.both:
        return [isolated, shared]
    return [isolated] if isolate else [shared]


def setup_text(server_cpus: tuple[int, ...], client_cpus: tuple[int, ...], cpus: tuple[int, ...]) -> str:
    from tritongen.cpus import cpus_text

    if not server_cpus and not client_cpus:
        return f"shared: the server and both engines on every CPU ({cpus_text(cpus)})"
    return (
        f"isolated: the server (and its stubs) on CPU {cpus_text(server_cpus)}, "
        f"both engines on CPU {cpus_text(client_cpus)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--concurrency",
        default="4,16",
        help="comma-separated closed-loop levels (default 4,16: half and twice the max batch size)",
    )
    parser.add_argument("--drive-concurrency", type=int, default=64)
    parser.add_argument("--duration-s", type=float, default=4.0)
    parser.add_argument("--protocols", default="grpc,http", help="comma-separated: grpc, http (default both)")
    parser.add_argument("--models", default="conv,wide", help="comma-separated: conv, wide (default both)")
    parser.add_argument(
        "--lean-pa",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"also measure perf_analyzer {' '.join(LEAN_PA_ARGS)} (default: on)",
    )
    parser.add_argument("--no-drive", action="store_true", help="measure the agreement only")
    parser.add_argument(
        "--isolate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="server on every CPU but the first, both engines on the first (default: on with 2+ CPUs)",
    )
    parser.add_argument("--both", action="store_true", help="measure the isolated and the shared setup")
    parser.add_argument(
        "--server-args",
        default="",
        help="more tritonserver options, e.g. '--http-thread-count 1' (Triton's default: 8 HTTP threads)",
    )
    args = parser.parse_args()
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    if not protocols or any(p not in ("grpc", "http") for p in protocols):
        raise SystemExit(f"error: --protocols {args.protocols!r} is not a list of grpc/http: pass e.g. grpc,http")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models or any(m not in ("conv", "wide") for m in models):
        raise SystemExit(f"error: --models {args.models!r} is not a list of conv/wide: pass e.g. conv,wide")
    args.models = models
    text = args.concurrency
    try:
        args.concurrency = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        args.concurrency = []
    if not args.concurrency or min(args.concurrency) < 1:
        raise SystemExit(f"error: --concurrency {text!r} is not a list of levels: pass e.g. 4,16")

    from tritongen.cpus import available_cpus
    from tritongen.perf.perf_analyzer import find_perf_analyzer
    from tritongen.server import ServeSpec

    find_perf_analyzer()
    cpus = available_cpus()
    setups = setups_from_args(args, cpus)
    results = {}
    with tempfile.TemporaryDirectory(prefix="tritongen-bench-") as tmp:
        repo = build_models(Path(tmp))
        for name, server_cpus, client_cpus in setups:
            print(f"setup {setup_text(server_cpus, client_cpus, cpus)}", flush=True)
            if args.server_args:
                print(f"tritonserver {args.server_args}", flush=True)
            agreement, drives = {}, {}
            with start_server(ServeSpec(repo=repo, cpus=server_cpus, extra_args=args.server_args)) as server:
                for protocol in protocols:
                    for concurrency in args.concurrency:
                        for model in args.models:
                            agreement[protocol, model, concurrency] = agree(
                                server, repo, protocol, model, concurrency, args, client_cpus
                            )
                if not args.no_drive:
                    for protocol in protocols:
                        drives[protocol] = drive(server, repo, protocol, args, client_cpus)
            results[name] = (setup_text(server_cpus, client_cpus, cpus), agreement, drives)

    for text, agreement, drives in results.values():
        print()
        print(f"== {text}")
        summary(protocols, agreement, drives, args)


def summary(protocols, agreement, drives, args) -> None:
    labels = {
        "conv": "SmallConvNet 3x32x32, ~1 ms: client-sensitive",
        "wide": "32-channel net 3x128x128: compute-bound",
    }
    meets: dict[tuple[str, str, int], bool] = {}
    for protocol in protocols:
        for concurrency in args.concurrency:
            for model in args.models:
                a = agreement[protocol, model, concurrency]
                print(
                    f"agreement over {protocol}, {model} ({labels[model]}) at concurrency {concurrency}, "
                    f"{args.rounds} rounds, built-in / each perf_analyzer client in the same round:"
                )
                for ref in (r for r in REFERENCES if r in a["tp_ratios"]):
                    tp_word, tp_text = band_verdict(a["tp_ratios"][ref], 0.95, 1.05)
                    p99_word, p99_text = band_verdict(a["p99_ratios"][ref], 0.90, 1.10)
                    ok = tp_word in MET and p99_word in MET
                    key = (protocol, ref, concurrency)
                    meets[key] = meets.get(key, True) and ok
                    print(f"  against {REFERENCES[ref]}: {'meets' if ok else 'MISSES'} the targets")
                    print(f"    throughput {tp_text}; per round " + ", ".join(f"{r:.3f}" for r in a["tp_ratios"][ref]))
                    print(f"    p99 {p99_text}; per round " + ", ".join(f"{r:.3f}" for r in a["p99_ratios"][ref]))
                    cpu_ratio = statistics.median(a["server_cpu_ratios"][ref])
                    print(
                        f"    the server's CPU per request, {REFERENCES[ref]} / built-in: {cpu_ratio:.3f} (median of "
                        "rounds; the throughput ratio where the server's cores are saturated)"
                    )
                if "pa_self" in a:  # how far the reference agrees with itself: the band a client-bound load allows
                    tp_word, tp_text = band_verdict(a["pa_self"][0], 0.95, 1.05)
                    p99_word, p99_text = band_verdict(a["pa_self"][1], 0.90, 1.10)
                    ok = tp_word in MET and p99_word in MET
                    print(
                        f"  perf_analyzer against itself ({REFERENCES['perf_analyzer']} / "
                        f"{REFERENCES['perf_analyzer_async']}): {'within' if ok else 'OUTSIDE'} the same targets"
                    )
                    print(f"    throughput {tp_text}; per round " + ", ".join(f"{r:.3f}" for r in a["pa_self"][0]))
                    print(f"    p99 {p99_text}; per round " + ", ".join(f"{r:.3f}" for r in a["pa_self"][1]))
                cpu, outside, batch = a["cpu_us"], a["outside_us"], a["avg_batch"]
                print(
                    f"  client CPU per request: built-in {cpu['builtin']:.0f} us ({a['client_cpu_cores']:.2f} cores); "
                    + ", ".join(f"{REFERENCES[r]} ~{cpu[r]:.0f} us" for r in REFERENCES if r in cpu)
                    + " (perf_analyzer's over its whole run, start-up included)"
                )
                print(
                    "  time outside Triton's queue + compute per request: "
                    + ", ".join(f"{e} {v:.0f} us" for e, v in outside.items())
                    + "; the server's average batch: "
                    + ", ".join(f"{e} {v:.2f}" for e, v in batch.items())
                )
                print(
                    "  the server's CPU per request (tritonserver's frontend and batcher + the model's stub): "
                    + ", ".join(f"{e} {f:.0f} + {m:.0f} us" for e, (f, m) in a["server_us"].items())
                    + "; its threads' wakeups per request: "
                    + ", ".join(f"{e} {w:.2f}" for e, w in a["wakeups"].items())
                )
                print("  throughput per round: " + "; ".join(f"{e} {v}" for e, v in a["rounds"].items()))
    for protocol, (closed, offered, open_loop) in drives.items():
        print(
            f"maximum request rate driven against the trivial model over {protocol} "
            "(built-in / perf_analyzer; target >= 0.8):"
        )
        print(
            f"  closed loop c={args.drive_concurrency}: {closed['builtin'] / closed['perf_analyzer']:.3f}  "
            f"({closed['builtin']:.0f} / {closed['perf_analyzer']:.0f} req/s)"
        )
        print(
            f"  open loop at {offered:.0f}/s: {open_loop['builtin'] / open_loop['perf_analyzer']:.3f}  "
            f"({open_loop['builtin']:.0f} / {open_loop['perf_analyzer']:.0f} req/s)"
        )
    print(
        f"(a target is met where the median of the per-round ratios lies in its band: throughput 0.95-1.05, p99 "
        f"0.90-1.10; at a concurrency up to the max batch size ({MAX_BATCH}) a closed loop waits on each client's own "
        f"round trip between batches, so its figures measure the client too; above it the server always has a "
        f"queue and sets the pace)"
    )
    for ref, text in REFERENCES.items():
        for concurrency in args.concurrency:
            if not any((p, ref, concurrency) in meets for p in protocols):
                continue
            good = [p for p in protocols if meets.get((p, ref, concurrency))]
            print(
                f"agreement targets met on {' and '.join(args.models)} at concurrency {concurrency} against {text} "
                f"over: " + (", ".join(good) if good else "neither protocol")
            )


MET = ("met", "met on the median")


def agree(server, repo: Path, protocol: str, model: str, concurrency: int, args, client_cpus=()) -> dict:
    """Every engine's figures for one model over one protocol at one concurrency: per-round ratios built-in / each
    perf_analyzer client (measured in the same round, the order rotating by round) and medians over rounds."""
    names = ["builtin", "perf_analyzer"] + (["perf_analyzer_async"] if args.lean_pa else [])
    figures = {name: [] for name in names}
    server_us = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            p, (frontend_us, stub_us) = measure(
                server, repo, name, model, args.duration_s, protocol, client_cpus, concurrency=(concurrency,)
            )
            figures[name].append(p)
            server_us[name].append((frontend_us, stub_us))
            print(
                f"round {r + 1} {protocol:>4} {name:>19}: {model} c={concurrency}  {p.throughput_rps:8.1f} req/s  "
                f"p50 {p.latency.p50_ms:6.2f} ms  p99 {p.latency.p99_ms:6.2f} ms  batch {p.server.avg_batch:.2f}  "
                f"server CPU {frontend_us:.0f} + {stub_us:.0f} us/request (perf's own figure: "
                f"{p.server_cpu_us_per_request or 0:.0f} over its measured span), its threads woke "
                f"{p.server_wakeups_per_request or 0:.2f} times per request"
                + (
                    f"  client CPU {p.client_cpu_cores:.2f} cores, {p.client_cpu_us_per_request:.0f} us/request"
                    + (" (client-bound)" if p.client_bound else "")
                    if p.client_cpu_cores is not None
                    else ""
                )
                + (
                    f"  client CPU ~{p.client_cpu_us_per_request:.0f} us/request (whole run)"
                    if p.client_cpu_cores is None and p.client_cpu_us_per_request is not None
                    else ""
                ),
                flush=True,
            )
    out: dict = {"tp_ratios": {}, "p99_ratios": {}}
    for ref in names[1:]:
        pairs = list(zip(figures["builtin"], figures[ref]))
        out["tp_ratios"][ref] = [b.throughput_rps / r.throughput_rps for b, r in pairs]
        out["p99_ratios"][ref] = [b.latency.p99_ms / r.latency.p99_ms for b, r in pairs]
        # What the server spends on each request, that client's over the built-in engine's, per round: the
        # throughput ratio a server whose cores are saturated shows (it serves 1 / its CPU per request).
        out.setdefault("server_cpu_ratios", {})[ref] = [
            sum(r) / sum(b) if sum(b) else 0.0 for b, r in zip(server_us["builtin"], server_us[ref])
        ]
    if "perf_analyzer_async" in figures:  # the reference against itself: its two clients, same round
        pairs = list(zip(figures["perf_analyzer"], figures["perf_analyzer_async"]))
        out["pa_self"] = (
            [d.throughput_rps / a.throughput_rps for d, a in pairs],
            [d.latency.p99_ms / a.latency.p99_ms for d, a in pairs],
        )
    out["client_cpu_cores"] = statistics.median(p.client_cpu_cores or 0.0 for p in figures["builtin"])
    out["cpu_us"] = {e: statistics.median(p.client_cpu_us_per_request or 0.0 for p in ps) for e, ps in figures.items()}
    # Each request's time outside Triton's queue and compute (the client's own latency, the network, Triton's
    # frontend): mean latency seen by the engine minus the server's per-request queue + compute, and the batch the
    # server formed. In a closed loop at low concurrency this is what sets throughput beside the model itself.
    out["outside_us"] = {
        e: statistics.median(p.latency.mean_ms * 1000 - p.server.total_us for p in ps) for e, ps in figures.items()
    }
    out["avg_batch"] = {e: statistics.median(p.server.avg_batch for p in ps) for e, ps in figures.items()}
    out["server_us"] = {e: tuple(statistics.median(v[i] for v in vs) for i in (0, 1)) for e, vs in server_us.items()}
    # How often the server's threads woke per request (perf's own reading): requests that arrive one at a time
    # wake a thread each, a burst shares a wakeup; the frontend's CPU per request follows it.
    out["wakeups"] = {
        e: statistics.median(p.server_wakeups_per_request or 0.0 for p in ps) for e, ps in figures.items()
    }
    out["rounds"] = {e: [round(p.throughput_rps, 1) for p in ps] for e, ps in figures.items()}
    return out


def drive(server, repo: Path, protocol: str, args, client_cpus=()):
    rates = {"builtin": [], "perf_analyzer": []}
    for r in range(2):
        for engine in ("builtin", "perf_analyzer") if r % 2 == 0 else ("perf_analyzer", "builtin"):
            p, _ = measure(
                server,
                repo,
                engine,
                "seq",
                args.duration_s,
                protocol,
                client_cpus,
                concurrency=(args.drive_concurrency,),
            )
            rates[engine].append(p.throughput_rps)
            print(
                f"drive {r + 1} {protocol:>4} {engine:>13}: seq c={args.drive_concurrency}  "
                f"{p.throughput_rps:8.1f} req/s",
                flush=True,
            )
    closed = {e: max(v) for e, v in rates.items()}
    offered = 2 * closed["perf_analyzer"]
    open_loop = {}
    for engine in ("builtin", "perf_analyzer"):
        p, _ = measure(server, repo, engine, "seq", args.duration_s, protocol, client_cpus, request_rates=(offered,))
        open_loop[engine] = p.throughput_rps
        print(
            f"drive open {protocol:>4} {engine:>13}: seq offered {offered:.0f}/s  "
            f"achieved {p.throughput_rps:8.1f} req/s "
            f"(errors {p.error_count})",
            flush=True,
        )
    return closed, offered, open_loop


if __name__ == "__main__":
    main()
