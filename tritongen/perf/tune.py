"""``tritongen tune``: find the config that serves the most requests per second under a p99 bound.

Works on a running server started with explicit model control: every candidate config is loaded through the
model-repository API with a config override (nothing on disk changes while searching), measured with the
built-in engine, and the original config is reloaded from disk at the end unless a winner is written.

The search is a coordinate descent over instance count, max queue delay, max batch size and preferred
batch sizes, starting from the repository's config: each pass walks one dimension at a time from the best
config so far (a step up, and further while it keeps improving; a step down likewise) and keeps a change
only when it beats the best by more than the noise margin. Each config's best operating point comes from a
concurrency ladder (powers of two) that starts where the previous best config peaked and stops as soon as
the p99 bound is broken or throughput stops rising; for the starting config and every config within
``refine_within_pct`` of the best so far, the concurrency is then bisected between the last level within the
bound and the first one over it (``refine_steps`` times), so the winner's operating point is not a power of
two short of the bound. That is a few dozen measurements where a grid takes hundreds. The descent runs twice: from the
repository's config, and from one instance with the largest max batch size and no preferred sizes (the region
where Model Analyzer's sweeps find batching beating instances, which a descent that starts by adding instances
never reaches). Before it is written, the winner's operating point is measured again, twice as long; if its p99
breaks the bound there, the next lower point is confirmed instead, and the record keeps both measurements.
Every measured point is kept, and the (throughput, p99) frontier is shown. Points are measured with the built-in
engine or, with ``engine="perf_analyzer"``, by the real perf_analyzer.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..client import ModelLoadError, Triton
from ..errors import TritongenError
from ..progress import Progress
from .results import PerfPoint
from .spec import ENGINES, PerfSpec

CONCURRENCY_LADDER = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TUNE_RECORD = "tune.json"


@dataclass(frozen=True)
class Candidate:
    """The knobs tune turns. ``preferred`` is a tuple of preferred batch sizes (empty: none)."""

    instances: int
    max_queue_delay_us: int
    max_batch_size: int
    preferred: tuple[int, ...]

    def label(self) -> str:
        pref = ",".join(map(str, self.preferred)) or "-"
        return (
            f"instances={self.instances} delay={self.max_queue_delay_us}us "
            f"max_batch={self.max_batch_size} preferred={pref}"
        )


@dataclass(frozen=True)
class TuneSpec:
    model_dir: Path  # <repository>/<model>
    max_p99_ms: float
    min_throughput_rps: float | None = None
    url: str | None = None
    protocol: str = "grpc"
    max_instances: int = 0  # 0: the number of CPU cores (KIND_CPU) or 4
    queue_delays_us: tuple[int, ...] = (0, 100, 500, 2000, 10000)
    max_batch_sizes: tuple[int, ...] = ()  # empty: powers of two up to twice the current maximum (at most 128)
    max_concurrency: int = 128
    duration_s: float = 1.5  # measured time per load level
    warmup_s: float = 0.5
    stability_pct: float = 15.0
    margin_pct: float = 3.0  # a change must beat the best by this much to be kept
    refine_steps: int = 2  # bisections of the concurrency between the last level within the bound and the next
    refine_within_pct: float = 10.0  # refine configs whose ladder best is within this much of the best so far
    engine: str = "builtin"  # or "perf_analyzer"
    confirm: bool = True  # measure the winner's operating point again, twice as long, before it counts
    budget_s: float = 900.0  # stop searching after this long (the best so far is used)
    write: bool = True
    input_data: Path | None = None
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_dir", Path(self.model_dir).expanduser().resolve())
        if self.max_p99_ms <= 0:
            raise TritongenError(
                f"--max-p99-ms {self.max_p99_ms} is not positive", "give the p99 latency bound in milliseconds"
            )
        if self.min_throughput_rps is not None and self.min_throughput_rps < 0:
            raise TritongenError("--min-throughput is negative", "give requests per second, 0 or more")
        if self.engine not in ENGINES:
            raise TritongenError(f"engine '{self.engine}' is not known", f"use one of {', '.join(ENGINES)}")
        if self.refine_steps < 0:
            raise TritongenError(f"refine_steps {self.refine_steps} is negative", "give 0 (no refinement) or more")


@dataclass(frozen=True)
class Trial:
    candidate: Candidate
    points: tuple[PerfPoint, ...]
    best: PerfPoint | None  # highest throughput with p99 within the bound
    load_s: float
    error: str = ""

    @property
    def score(self) -> float:
        return self.best.throughput_rps if self.best is not None else 0.0


@dataclass(frozen=True)
class TuneResult:
    model: str
    winner: Trial | None
    baseline: Trial
    trials: tuple[Trial, ...]
    frontier: tuple[tuple[Candidate, PerfPoint], ...]
    search_s: float
    config_path: Path | None  # written config, when one was written
    record_path: Path | None
    meets_constraints: bool
    confirmation: tuple[PerfPoint, ...] = ()  # re-measurements of the winner's operating point(s), in order
    confirmed: PerfPoint | None = None  # the first of them within the bound: the figure the written config stands on

    def table(self) -> str:
        lines = [
            f"tune {self.model}: {len(self.trials)} configs, "
            f"{sum(len(t.points) for t in self.trials)} measurements in {self.search_s:.0f} s"
        ]
        lines.append(f"{'config':<64} {'conc':>4} {'req/s':>9} {'p99 ms':>8}")
        for t in self.trials:
            if t.best is None:
                lines.append(
                    f"{t.candidate.label():<64} {'-':>4} {'-':>9} {'-':>8} "
                    f" {t.error or 'no point within the p99 bound'}"
                )
            else:
                mark = "  <- best" if self.winner is not None and t is self.winner else ""
                lines.append(
                    f"{t.candidate.label():<64} {int(t.best.load):>4} "
                    f"{t.best.throughput_rps:>9.1f} {t.best.latency.p99_ms:>8.2f}{mark}"
                )
        lines.append("frontier (throughput vs p99, every measured point):")
        for cand, p in self.frontier:
            lines.append(
                f"  {p.throughput_rps:9.1f} req/s  p99 {p.latency.p99_ms:7.2f} "
                f"ms  concurrency {int(p.load):>3}  {cand.label()}"
            )
        if self.winner is not None and self.baseline.best is not None:
            gain = self.winner.score / self.baseline.score if self.baseline.score else float("inf")
            lines.append(
                f"best: {self.winner.candidate.label()}: {self.winner.score:.1f} "
                f"req/s ({gain:.2f}x the starting config)"
            )
        for p in self.confirmation:
            verdict = "holds" if p is self.confirmed else "over the bound"
            lines.append(
                f"confirmed again at concurrency {int(p.load)}: {p.throughput_rps:.1f} "
                f"req/s, p99 {p.latency.p99_ms:.2f} ms ({verdict})"
            )
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------- configs


def candidate_from_config(config) -> Candidate:
    instances = sum(g.count or 1 for g in config.instance_group) or 1
    db = config.dynamic_batching
    return Candidate(
        instances, int(db.max_queue_delay_microseconds), int(config.max_batch_size), tuple(db.preferred_batch_size)
    )


def config_from_candidate(base, candidate: Candidate):
    """A copy of ``base`` (a ModelConfig) with the candidate's knobs set."""
    config = type(base)()
    config.CopyFrom(base)
    if not config.instance_group:
        config.instance_group.add(count=candidate.instances)
    else:
        del config.instance_group[1:]
        config.instance_group[0].count = candidate.instances
    if config.max_batch_size > 0:
        config.max_batch_size = candidate.max_batch_size
        config.dynamic_batching.max_queue_delay_microseconds = candidate.max_queue_delay_us
        del config.dynamic_batching.preferred_batch_size[:]
        config.dynamic_batching.preferred_batch_size.extend(candidate.preferred)
        for warmup in config.model_warmup:
            warmup.batch_size = min(max(1, warmup.batch_size), candidate.max_batch_size)
    return config


def _search_space(spec: TuneSpec, base: Candidate, kind_cpu: bool) -> dict[str, list]:
    cores = os.cpu_count() or 4
    max_instances = spec.max_instances or (cores if kind_cpu else 4)
    space: dict[str, list] = {"instances": list(range(1, max(max_instances, base.instances) + 1))}
    if base.max_batch_size > 0:
        space["max_queue_delay_us"] = sorted(set(spec.queue_delays_us) | {base.max_queue_delay_us})
        sizes = spec.max_batch_sizes or tuple(
            b for b in (1, 2, 4, 8, 16, 32, 64, 128) if b <= max(2 * base.max_batch_size, 1)
        )
        space["max_batch_size"] = sorted(set(sizes) | {base.max_batch_size})
        space["preferred"] = ["none", "max", "half+max"]
    return space


def _preferred(kind: str, max_batch_size: int) -> tuple[int, ...]:
    if kind == "max":
        return (max_batch_size,)
    if kind == "half+max":
        return tuple(sorted({b for b in (max_batch_size // 2, max_batch_size) if b > 0}))
    return ()


def _preferred_kind(c: Candidate) -> str:
    if not c.preferred:
        return "none"
    return "max" if c.preferred == (c.max_batch_size,) else "half+max"


def _neighbour(c: Candidate, dim: str, value) -> Candidate:
    if dim == "preferred":
        return replace(c, preferred=_preferred(value, c.max_batch_size))
    if dim == "max_batch_size":
        return replace(c, max_batch_size=value, preferred=_preferred(_preferred_kind(c), value))
    return replace(c, **{dim: value})


# --------------------------------------------------------------------------------------------- search


def tune_model(spec: TuneSpec, progress: Progress | None = None) -> TuneResult:
    """Search configs for ``spec.model_dir`` on a running server; write the winner back when ``spec.write``."""
    from google.protobuf import json_format

    from ..client import model_metadata
    from ..validate import config_from_file
    from .inputs import request_set_for_model
    from .loadgen import ServerGone, points_from_builtin
    from .perf_analyzer import find_perf_analyzer, points_from_perf_analyzer

    progress = progress or (lambda message: None)
    config_path = spec.model_dir / "config.pbtxt"
    if not spec.model_dir.is_dir():
        raise TritongenError(
            f"model folder {spec.model_dir} does not exist",
            "pass a model folder inside a repository, e.g. model_repository/my-model",
        )
    if not config_path.is_file():
        raise TritongenError(
            f"{spec.model_dir} has no config.pbtxt",
            "pass a model folder inside a repository, e.g. model_repository/my-model",
        )
    base_config = config_from_file(config_path)
    if base_config.platform == "ensemble" or base_config.HasField("ensemble_scheduling"):
        raise TritongenError(f"{spec.model_dir.name} is an ensemble", "tune its composing models one by one")
    if base_config.HasField("sequence_batching"):
        raise TritongenError(
            f"{spec.model_dir.name} is a sequence model: tune searches dynamic batching settings",
            "measure it with tritongen perf (concurrent streams) and set --max-batch-size/--instances in the build",
        )
    model = spec.model_dir.name
    perf = PerfSpec(
        model=model,
        url=spec.url,
        protocol=spec.protocol,
        duration_s=spec.duration_s,
        warmup_s=spec.warmup_s,
        stability_pct=spec.stability_pct,
        max_windows=4,
        timeout_s=spec.timeout_s,
        repo=spec.model_dir.parent,
        input_data=spec.input_data,
        engine=spec.engine,
    )
    if spec.engine == "perf_analyzer":
        find_perf_analyzer()  # fail before anything is loaded if it is missing
    engine = points_from_builtin if spec.engine == "builtin" else points_from_perf_analyzer
    url = perf.resolved_url()
    metadata = model_metadata(url, model, protocol=spec.protocol)
    requests = request_set_for_model(metadata, spec.model_dir.parent, spec.input_data)
    server = Triton(url, spec.protocol, max(spec.timeout_s, 300))  # a load may take minutes
    kind_cpu = all(g.kind in (0, 2) for g in base_config.instance_group)  # KIND_AUTO / KIND_CPU
    base = candidate_from_config(base_config)
    space = _search_space(spec, base, kind_cpu)
    started = time.monotonic()
    trials: dict[Candidate, Trial] = {}
    ladder = [c for c in CONCURRENCY_LADDER if c <= spec.max_concurrency]
    peak_index = [0]

    def measure(candidate: Candidate, refine_above_rps: float = 0.0) -> Trial:
        if candidate in trials:
            return trials[candidate]
        config = config_from_candidate(base_config, candidate)
        t0 = time.monotonic()
        progress(f"config {len(trials) + 1}: {candidate.label()}")
        try:
            server.load(model, json_format.MessageToJson(config))
        except ModelLoadError as failed:
            trial = Trial(
                candidate,
                (),
                None,
                time.monotonic() - t0,
                error=f"failed to load: {failed.problem.splitlines()[0][:200]}",
            )
            progress(f"  {trial.error}")
            trials[candidate] = trial
            return trial
        load_s = time.monotonic() - t0
        points: dict[int, PerfPoint] = {}

        def at(c: int) -> PerfPoint:
            if c not in points:
                level = replace(perf, concurrency=(c,), request_rates=())
                p = engine(level, requests)[0]
                if p.latency.p99_ms > spec.max_p99_ms and not p.errors:
                    # A shared machine throws the odd p99 spike: a point over the bound is measured again and
                    # the second measurement stands.
                    progress(f"  concurrency {c:>3}: p99 {p.latency.p99_ms:.2f} ms over the bound; measuring again")
                    p = engine(level, requests)[0]
                points[c] = p
                progress(
                    f"  concurrency {c:>3}: {p.throughput_rps:8.1f} req/s  p99 {p.latency.p99_ms:7.2f} ms"
                    + (
                        ""
                        if p.latency.p99_ms <= spec.max_p99_ms and not p.errors
                        else "  (over the bound)"
                        if not p.errors
                        else f"  errors {dict(p.errors)}"
                    )
                )
            return points[c]

        def ok(p: PerfPoint) -> bool:
            return p.latency.p99_ms <= spec.max_p99_ms and not p.errors

        i = min(peak_index[0], len(ladder) - 1)
        if ok(at(ladder[i])):
            while i + 1 < len(ladder) and time.monotonic() - started < spec.budget_s:
                nxt = at(ladder[i + 1])
                if not ok(nxt) or nxt.throughput_rps < at(ladder[i]).throughput_rps * 1.05:
                    if ok(nxt) and nxt.throughput_rps > at(ladder[i]).throughput_rps:
                        i += 1
                    break
                i += 1
        else:
            while i > 0 and not ok(at(ladder[i])):
                i -= 1
                at(ladder[i])
        feasible = [p for p in points.values() if ok(p)]
        best = max(feasible, key=lambda p: p.throughput_rps) if feasible else None
        if best is not None and best.throughput_rps >= refine_above_rps:
            # Bisect between the best level within the bound and the lowest one above it that broke the bound.
            lo = int(best.load)
            hi = min((c for c, p in points.items() if c > lo and not ok(p)), default=None)
            for _ in range(spec.refine_steps):
                if hi is None or hi - lo < 2 or time.monotonic() - started >= spec.budget_s:
                    break
                mid = (lo + hi) // 2
                if ok(at(mid)):
                    lo = mid
                else:
                    hi = mid
            feasible = [p for p in points.values() if ok(p)]
            best = max(feasible, key=lambda p: p.throughput_rps)
        trial = Trial(candidate, tuple(points[c] for c in sorted(points)), best, load_s)
        trials[candidate] = trial
        return trial

    def peak_of(trial: Trial) -> int:
        """The ladder index at or just below the concurrency where ``trial`` peaked."""
        return max(
            k
            for k, c in enumerate(ladder)
            if c <= max(ladder[0], int(trial.best.load if trial.best is not None else 0))
        )

    def descend(start: Trial) -> Trial:
        incumbent = start
        if incumbent.best is not None:
            peak_index[0] = peak_of(incumbent)
        improved = True
        while improved and time.monotonic() - started < spec.budget_s:
            improved = False
            for dim, values in space.items():
                current = (
                    getattr(incumbent.candidate, dim) if dim != "preferred" else _preferred_kind(incumbent.candidate)
                )
                if current not in values:
                    continue
                at_index = values.index(current)
                for step in (1, -1):
                    moved = False
                    j = at_index + step
                    while 0 <= j < len(values) and time.monotonic() - started < spec.budget_s:
                        trial = measure(
                            _neighbour(incumbent.candidate, dim, values[j]),
                            refine_above_rps=incumbent.score * (1 - spec.refine_within_pct / 100.0),
                        )
                        if trial.score > incumbent.score * (1 + spec.margin_pct / 100.0):
                            incumbent, improved, moved = trial, True, True
                            peak_index[0] = peak_of(trial)
                            j += step
                        else:
                            break
                    if moved:
                        break  # improved going up: no need to look down
        return incumbent

    confirmation: list[PerfPoint] = []
    confirmed = None
    try:
        baseline = measure(base)
        incumbent = descend(baseline)
        seed = _batching_seed(space, base)
        if seed is not None and seed not in trials and time.monotonic() - started < spec.budget_s:
            progress("second descent: one instance, the largest max batch size, no preferred sizes")
            other = descend(measure(seed, refine_above_rps=incumbent.score * (1 - spec.refine_within_pct / 100.0)))
            if other.score > incumbent.score:
                incumbent = other
        if spec.confirm and incumbent.best is not None:
            confirmation, confirmed = _confirm(
                incumbent, server, model, base_config, perf, engine, requests, spec, progress
            )
    except ServerGone as gone:
        raise TritongenError(
            f"the server stopped answering while tuning ({gone})", "restart it and run tune again"
        ) from None
    finally:
        search_s = time.monotonic() - started

    winner = incumbent if incumbent.best is not None and (confirmed is not None or not spec.confirm) else None
    standing = confirmed.throughput_rps if confirmed is not None else (winner.score if winner is not None else 0.0)
    meets = winner is not None and (spec.min_throughput_rps is None or standing >= spec.min_throughput_rps)
    all_points = [(t.candidate, p) for t in trials.values() for p in t.points if not p.errors]
    frontier = _frontier(all_points)
    written = record = None
    try:
        if spec.write and meets and winner is not None:
            written, record = _write_winner(
                spec, base_config, winner, baseline, list(trials.values()), frontier, search_s, confirmation, confirmed
            )
        server.load(model, None)  # what is on disk now: the winner when written, else the original
    finally:
        server.close()
    return TuneResult(
        model,
        winner,
        baseline,
        tuple(trials.values()),
        tuple(frontier),
        search_s,
        written,
        record,
        meets,
        tuple(confirmation),
        confirmed,
    )


def _batching_seed(space: Mapping[str, list], base: Candidate) -> Candidate | None:
    """One instance, the largest max batch size searched, no preferred sizes, the starting queue delay."""
    if "max_batch_size" not in space:
        return None
    return Candidate(1, base.max_queue_delay_us, max(space["max_batch_size"]), ())


def _confirm(
    winner: Trial,
    server: Triton,
    model: str,
    base_config,
    perf: PerfSpec,
    engine,
    requests,
    spec: TuneSpec,
    progress: Progress,
) -> tuple[list[PerfPoint], PerfPoint | None]:
    """Measure the winner's best operating point again, twice as long; where its p99 breaks the bound, the next
    lower feasible point of the same config (at most three tries). Returns every re-measurement and the first
    that holds."""
    from google.protobuf import json_format

    server.load(model, json_format.MessageToJson(config_from_candidate(base_config, winner.candidate)))
    feasible = sorted(
        (p for p in winner.points if p.latency.p99_ms <= spec.max_p99_ms and not p.errors),
        key=lambda p: p.throughput_rps,
        reverse=True,
    )
    measured: list[PerfPoint] = []
    for point in feasible[:3]:
        level = replace(perf, concurrency=(int(point.load),), request_rates=(), duration_s=2 * perf.duration_s)
        again = engine(level, requests)[0]
        measured.append(again)
        holds = again.latency.p99_ms <= spec.max_p99_ms and not again.errors
        progress(
            f"confirming {winner.candidate.label()} at concurrency {int(point.load)}: {again.throughput_rps:.1f} req/s "
            f"p99 {again.latency.p99_ms:.2f} ms" + ("" if holds else "  (over the bound)")
        )
        if holds:
            return measured, again
    return measured, None


def _frontier(points: list[tuple[Candidate, PerfPoint]]) -> list[tuple[Candidate, PerfPoint]]:
    """Points no other point beats on both throughput (higher) and p99 (lower), by throughput."""
    out: list[tuple[Any, PerfPoint]] = []
    for cand, p in sorted(points, key=lambda cp: (cp[1].latency.p99_ms, -cp[1].throughput_rps)):
        if not out or p.throughput_rps > out[-1][1].throughput_rps:
            out.append((cand, p))
    return out


def _write_winner(
    spec: TuneSpec,
    base_config,
    winner: Trial,
    baseline: Trial,
    trials: list[Trial],
    frontier,
    search_s: float,
    confirmation: Sequence[PerfPoint] = (),
    confirmed: PerfPoint | None = None,
) -> tuple[Path, Path]:
    from google.protobuf import text_format

    from ..layout import ARTIFACT_DIR, version_numbers
    from ..manifest import rehash_files
    from ..validate import config_from_text, problems_in_config

    config = config_from_candidate(base_config, winner.candidate)
    text = (
        "# Tuned by tritongen tune: see <version>/tritongen/tune.json for the measurements.\n"
        + text_format.MessageToString(config)
    )
    problems = problems_in_config(config_from_text(text), spec.model_dir)
    if problems:
        raise TritongenError(
            "the tuned config does not validate",
            "report this as a bug; the repository was left unchanged",
            details="\n".join(problems),
        )
    config_path = spec.model_dir / "config.pbtxt"
    previous = config_path.read_text()
    versions = version_numbers(spec.model_dir)
    record_dir = spec.model_dir / str(versions[-1] if versions else 1) / ARTIFACT_DIR
    record_dir.mkdir(parents=True, exist_ok=True)
    record_path = record_dir / TUNE_RECORD
    record = {
        "created_unix_s": round(time.time(), 3),
        "constraint": {"max_p99_ms": spec.max_p99_ms, "min_throughput_rps": spec.min_throughput_rps},
        "search_s": round(search_s, 2),
        "winner": _trial_dict(winner),
        "confirmation": [_point_dict(p) for p in confirmation],
        "confirmed": None if confirmed is None else _point_dict(confirmed),
        "baseline": _trial_dict(baseline),
        "trials": [_trial_dict(t) for t in trials],
        "frontier": [
            {"config": asdict(c), "concurrency": p.load, "throughput_rps": p.throughput_rps, "p99_ms": p.latency.p99_ms}
            for c, p in frontier
        ],
        "previous_config": previous,
    }
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    tmp = config_path.with_name(".config.pbtxt.tune")
    tmp.write_text(text)
    os.replace(tmp, config_path)
    if versions:  # the build's manifest now vouches for the tuned config (and the record of how it was chosen)
        rehash_files(spec.model_dir, versions[-1], [config_path, record_path])
    return config_path, record_path


def _trial_dict(t: Trial) -> dict[str, Any]:
    return {
        "config": asdict(t.candidate),
        "load_s": round(t.load_s, 3),
        "error": t.error,
        "best": None
        if t.best is None
        else {
            "concurrency": t.best.load,
            "throughput_rps": t.best.throughput_rps,
            "p99_ms": t.best.latency.p99_ms,
            "mean_ms": t.best.latency.mean_ms,
        },
        "points": [_point_dict(p) for p in t.points],
    }


def _point_dict(p: PerfPoint) -> dict[str, Any]:
    return {
        "concurrency": p.load,
        "throughput_rps": p.throughput_rps,
        "p99_ms": p.latency.p99_ms,
        "measured_s": p.measured_s,
        "errors": dict(p.errors),
    }
