"""tune's re-measurements: the best configs measured again (longer, by perf_analyzer where installed), the
paired A B B A measurement of two that held, the opt-in climb, and the paired descent's side-by-side check."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from ..client import ModelLoadError, Triton
from ..errors import TritongenError
from ..progress import Progress
from .results import PerfPoint
from .spec import ENGINES, PerfSpec
from .tune_configs import config_from_candidate, override_json
from .tune_record import point_dict
from .tune_select import climb_loads, pick_confirmed
from .tune_spec import Candidate, Trial, TuneSpec


def confirm_engine(spec: TuneSpec) -> str:
    """perf_analyzer where it is installed (``auto``), so the confirmed figure is what it will see."""
    if spec.confirm_engine != "auto":
        return spec.confirm_engine
    if spec.engine == "perf_analyzer":
        return "perf_analyzer"
    from .perf_analyzer import find_perf_analyzer

    try:
        find_perf_analyzer()
    except TritongenError:
        return spec.engine
    return "perf_analyzer"


@dataclass
class Remeasure:
    """What measuring a config again needs: the server and model, the config candidates derive from, the perf
    settings and requests, the tune spec, and where progress goes; ``loaded``: the candidate the server holds
    now, serving warm (the last one loaded and measured), or None (not known); ``changed``: whether any load was
    sent (what the server serves is then tune's doing)."""

    server: Triton
    model: str
    base_config: Any
    perf: PerfSpec
    requests: Any
    spec: TuneSpec
    progress: Progress
    versions: Any = None  # the version policy the server served with when tune began (JSON), kept by every load
    loaded: Candidate | None = None
    changed: bool = False  # a candidate was loaded (or its load began): the server must be given config.pbtxt's back

    def load(self, candidate: Candidate, concurrency: int) -> None:
        """Load ``candidate`` and warm it up at ``concurrency`` (``spec.load_warmup_s``); nothing where it is the
        one loaded already (it has just been measured: reloading would only cost a load and a warm-up)."""
        if candidate == self.loaded:
            return
        self.swap(candidate)
        warm(self.perf, self.requests, concurrency, self.spec)

    def swap(self, candidate: Candidate) -> None:
        """Load ``candidate``, not warmed; ``loaded`` is None until it has loaded (a refused load leaves the
        server's holding unknown). Raises :class:`ModelLoadError` for a config Triton refuses."""
        self.loaded = None
        changed, self.changed = self.changed, True
        try:
            self.server.load(
                self.model, override_json(config_from_candidate(self.base_config, candidate), self.versions)
            )
        except ModelLoadError:
            raise
        except TritongenError:
            self.changed = changed  # refused before loading anything: no explicit model control, no answer
            raise
        self.loaded = candidate

    def at(self, concurrency: int, engine_name: str, duration_s: float | None = None) -> PerfPoint:
        """One measurement at ``concurrency`` with ``engine_name``, ``duration_s`` long (default: confirm_s)."""
        from .run import points_from_engine

        level = replace(
            self.perf,
            concurrency=(concurrency,),
            request_rates=(),
            duration_s=self.spec.confirm_s if duration_s is None else duration_s,
            engine=engine_name,
        )
        return points_from_engine(level, self.requests)[0]


def confirm(contenders: Sequence[Trial], again: Remeasure, engine_name: str) -> list[tuple[Trial, PerfPoint]]:
    """Measure each contender's best point again, ``spec.confirm_s`` long, with ``engine_name``; where its p99
    breaks the target, its next point by search figure at a lower load (at most three tries; once a figure holds, a
    later contender's next point is tried only where its search figure beats the best figure that held: it could
    still win). Returns every re-measurement with its config, in order."""
    spec, progress = again.spec, again.progress
    target_ms = spec.target_p99_ms
    measured: list[tuple[Trial, PerfPoint]] = []
    for trial in contenders:
        feasible = sorted(
            (p for p in trial.points if p.within(target_ms)), key=lambda p: p.throughput_rps, reverse=True
        )
        if not feasible:
            continue
        again.load(trial.candidate, int(feasible[0].load))
        held = pick_confirmed(measured, target_ms)
        tries, over_at = 0, None
        for point in feasible:
            if tries == 3:
                break
            if over_at is not None and point.load >= over_at:  # more load than a point that broke the target
                continue
            if tries and held is not None and point.throughput_rps <= held[1].throughput_rps:
                break  # it could not win (nor could the rest: they serve less)
            tries += 1
            try:
                try:
                    remeasured = again.at(int(point.load), engine_name)
                except TritongenError as failed:
                    if spec.confirm_engine != "auto" or engine_name == spec.engine:
                        raise
                    progress(f"  perf_analyzer could not measure it ({failed.problem}); confirming with {spec.engine}")
                    engine_name = spec.engine
                    remeasured = again.at(int(point.load), engine_name)
            except TritongenError as failed:
                progress(f"  measuring {trial.candidate.label()} again failed ({failed.problem}): it cannot win")
                break
            measured.append((trial, remeasured))
            holds = remeasured.within(target_ms)
            progress(
                f"measured again ({engine_name}, {spec.confirm_s:g} s) {trial.candidate.label()} at concurrency "
                f"{int(point.load)}: {remeasured.throughput_rps:.1f} req/s p99 {remeasured.latency.p99_ms:.2f} ms"
                + ("" if holds else "  (over the target)")
            )
            if holds:
                break
            over_at = point.load
    return measured


def warm(perf: PerfSpec, requests, concurrency: int, spec: TuneSpec) -> None:
    """``spec.load_warmup_s`` of load at ``concurrency`` from the built-in engine, nothing measured: what a freshly
    loaded config needs before its figures mean anything (each instance's runtime warms up on the batch sizes it
    gets). A failure here is left for the measurement that follows to report."""
    from .loadgen import points_from_builtin
    from .spec import STABLE_WINDOWS

    if spec.load_warmup_s <= 0:
        return
    level = replace(
        perf,
        concurrency=(concurrency,),
        request_rates=(),
        duration_s=spec.load_warmup_s,
        warmup_s=0.0,
        max_windows=STABLE_WINDOWS,
        engine="builtin",
    )
    try:
        points_from_builtin(level, requests)
    except TritongenError:
        pass


def climb(chosen: tuple[Trial, PerfPoint], again: Remeasure) -> list[tuple[Trial, PerfPoint]]:
    """From the winner's confirmed point, re-measure higher concurrencies (``spec.climb_factor`` apart, as long and
    with the same engine as the confirmation) while each holds the target and serves more than the one below.

    Opt-in (``spec.climb_steps``): a level the search saw break the target may hold it when measured for longer,
    and the climb claims that throughput on one re-measurement within the target. On a noisy machine one such
    re-measurement is lucky as often as not, and the first lucky one is kept, so the climbed point breaks the
    bound more often afterwards (measured: 9 of 10 rounds); hence off by default. Returns the re-measurements."""
    spec = again.spec
    trial, below = chosen
    engine_name = below.engine if below.engine in ENGINES else spec.engine
    loads = climb_loads(int(below.load), spec.climb_factor, spec.climb_steps, spec.max_concurrency)
    measured: list[tuple[Trial, PerfPoint]] = []
    if not loads:
        return measured
    again.load(trial.candidate, loads[0])
    for load in loads:
        try:
            point = again.at(load, engine_name)
        except TritongenError as failed:
            again.progress(f"  measuring concurrency {load} failed ({failed.problem}): the climb stops")
            break
        measured.append((trial, point))
        holds = point.within(spec.target_p99_ms)
        more = point.throughput_rps > below.throughput_rps
        again.progress(
            f"climbing ({engine_name}, {spec.confirm_s:g} s) {trial.candidate.label()} at concurrency {load}: "
            f"{point.throughput_rps:.1f} req/s p99 {point.latency.p99_ms:.2f} ms"
            + ("" if holds else "  (over the target)")
            + ("" if more or not holds else "  (no more than below: the climb stops)")
        )
        if not holds or not more:
            break
        below = point
    return measured


def paired(rivals: Sequence[tuple[Trial, PerfPoint]], again: Remeasure) -> list[tuple[Trial, PerfPoint]]:
    """Measure the two rivals again at the same loads, in the reverse order of their first re-measurement (the
    machine drifts by more than two good configs differ: measured A, B, B, A, both means see the same drift)."""
    spec = again.spec
    measured: list[tuple[Trial, PerfPoint]] = []
    for trial, first in reversed(rivals):
        engine_name = first.engine if first.engine in ENGINES else spec.engine
        again.load(trial.candidate, int(first.load))
        try:
            second = again.at(int(first.load), engine_name)
        except TritongenError as failed:
            again.progress(f"  measuring {trial.candidate.label()} a second time failed ({failed.problem})")
            continue
        measured.append((trial, second))
        again.progress(
            f"measured a second time ({engine_name}, {spec.confirm_s:g} s) {trial.candidate.label()} at concurrency "
            f"{int(first.load)}: {second.throughput_rps:.1f} req/s p99 {second.latency.p99_ms:.2f} ms"
            + ("" if second.within(spec.target_p99_ms) else "  (over the target)")
        )
    return measured


def beats_side_by_side(challenger: Trial, incumbent: Trial, again: Remeasure, checks: list[dict[str, Any]]) -> bool:
    """``challenger``'s search figure beat ``incumbent``'s, which was measured minutes before. Measure the incumbent
    again now (its config loaded and warmed up, at its best point's load, as long and with the same engine as the
    search) and say whether the challenger beats that figure too, by ``spec.margin_pct``. Where the incumbent's
    point breaks the target now, or cannot be measured, its old figure does not stand: the challenger is kept.
    Each check is appended to ``checks`` for the record."""
    spec, progress = again.spec, again.progress
    if incumbent.best is None:
        return True
    load = int(incumbent.best.load)
    check: dict[str, Any] = {
        "challenger": asdict(challenger.candidate),
        "challenger_rps": challenger.score,
        "incumbent": asdict(incumbent.candidate),
        "incumbent_search_rps": incumbent.score,
    }
    try:
        again.load(incumbent.candidate, load)
        now = again.at(load, spec.engine, spec.duration_s)
    except TritongenError as failed:
        progress(f"  measuring the best config again beside it failed ({failed.problem}): the newcomer is kept")
        checks.append({**check, "again": None, "kept": True})
        return True
    holds = now.within(spec.target_p99_ms)
    kept = not holds or challenger.score > now.throughput_rps * (1 + spec.margin_pct / 100.0)
    checks.append({**check, "again": point_dict(now), "kept": kept})
    progress(
        f"  beside it, the best so far ({incumbent.candidate.label()}) measured again at concurrency {load}: "
        f"{now.throughput_rps:.1f} req/s p99 {now.latency.p99_ms:.2f} ms"
        + ("  (over the target)" if not holds else "")
        + (f"; {challenger.score:.1f} req/s " + ("beats it" if kept else f"does not beat it by {spec.margin_pct:g}%"))
    )
    return kept
