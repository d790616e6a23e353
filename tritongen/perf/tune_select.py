"""tune's choices from measured points: where a ladder starts and steps, what is pruned, which configs are
measured again and which re-measurement wins (no measuring here: :mod:`tritongen.perf.tune_confirm` measures)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .results import PerfPoint
from .tune_spec import Candidate, Trial


def best_point(points, target_p99_ms: float) -> PerfPoint | None:
    """The highest-throughput point within the target, or None."""
    feasible = [p for p in points if p.within(target_p99_ms)]
    return max(feasible, key=lambda p: p.throughput_rps) if feasible else None


def potential_rps(points) -> float:
    """The most any point served, within the target or not (errored points aside)."""
    return max((p.throughput_rps for p in points if not p.errors), default=0.0)


def start_index(ladder: Sequence[int], candidate: Candidate) -> int:
    """Where a config's ladder starts when no config has peaked yet: at the concurrency that fills every
    instance's largest batch once (instances x max batch size), or the level just below it."""
    fill = candidate.instances * max(1, candidate.max_batch_size)
    return max((k for k, c in enumerate(ladder) if c <= fill), default=0)


def next_up(point: PerfPoint, target_p99_ms: float, max_concurrency: int) -> int | None:
    """The next concurrency up from a point within the target: where its p99 would reach the target if p99 grows
    in proportion to concurrency (a saturated server: each request more waits its share), at least one more and at
    most double; None at ``max_concurrency``. Below saturation p99 grows slower than that, so the guess falls short
    of the crossing rather than past it, and the walk goes on from there."""
    c = int(point.load)
    if c >= max_concurrency:
        return None
    p99 = point.latency.p99_ms
    guess = math.floor(c * target_p99_ms / p99) if p99 > 0 else 2 * c
    return min(max_concurrency, 2 * c, max(c + 1, guess))


def pruned(first: PerfPoint, against: Trial | None, prune_pct: float) -> bool:
    """A config's first point is so far below what the best config served at the same load that more concurrency
    is not worth measuring. The comparison is at the same concurrency or below (the best config's highest
    throughput there): its best point usually sits higher, at a bisected level the ladder does not visit, and a
    closed loop serves more at a higher concurrency. Only against a config that has a best point and a point at
    or below this load, and never at 0% (pruning off)."""
    if against is None or against.best is None or prune_pct <= 0:
        return False
    at_or_below = [p.throughput_rps for p in against.points if p.load <= first.load and not p.errors]
    if not at_or_below:
        return False
    return first.throughput_rps < max(at_or_below) * (1 - prune_pct / 100.0)


def batching_seed(space: Mapping[str, list], base: Candidate) -> Candidate | None:
    """One instance, the largest max batch size searched, no preferred sizes, the starting queue delay."""
    if "max_batch_size" not in space:
        return None
    return Candidate(1, base.max_queue_delay_us, max(space["max_batch_size"]), ())


def parallel_seed(space: Mapping[str, list], base: Candidate) -> Candidate | None:
    """The other end from the batching seed: the most instances searched, the starting max batch size and queue
    delay, no preferred sizes (where Model Analyzer's sweeps found instances beating one large batch: on a CPU
    whose cores one instance's batches leave idle). None when only one instance is searched."""
    most = max(space["instances"])
    if most <= 1:
        return None
    return Candidate(most, base.max_queue_delay_us, base.max_batch_size, ())


def contenders(trials: Sequence[Trial], top: int, within_pct: float) -> list[Trial]:
    """The configs worth measuring again: the best by search figure, and up to ``top - 1`` more whose figure is
    within ``within_pct`` of it, best first."""
    ranked = sorted((t for t in trials if t.best is not None), key=lambda t: t.score, reverse=True)
    if not ranked:
        return []
    floor = ranked[0].score * (1 - within_pct / 100.0)
    return [t for t in ranked if t.score >= floor][: max(1, top)]


def fallback_contenders(trials: Sequence[Trial], tried: Sequence[Trial], top: int) -> list[Trial]:
    """When no contender's re-measurement held the target: the next ``top`` configs by search figure (with a point
    within the target) that were not measured again yet, best first."""
    seen = {t.candidate for t in tried}
    ranked = sorted(
        (t for t in trials if t.best is not None and t.candidate not in seen), key=lambda t: t.score, reverse=True
    )
    return ranked[: max(1, top)]


def pick_confirmed(
    remeasured: Sequence[tuple[Trial, PerfPoint]], target_p99_ms: float
) -> tuple[Trial, PerfPoint] | None:
    """The re-measurement with the highest throughput whose p99 holds the target (the earliest on a tie)."""
    best: tuple[Trial, PerfPoint] | None = None
    for trial, p in remeasured:
        if p.within(target_p99_ms) and (best is None or p.throughput_rps > best[1].throughput_rps):
            best = (trial, p)
    return best


def rivals(remeasured: Sequence[tuple[Trial, PerfPoint]], target_p99_ms: float) -> list[tuple[Trial, PerfPoint]]:
    """The two configs whose best re-measurement within the target served most (each with that re-measurement),
    in the order they were measured."""
    best: dict[Candidate, tuple[int, Trial, PerfPoint]] = {}
    for index, (trial, p) in enumerate(remeasured):
        held = best.get(trial.candidate)
        if p.within(target_p99_ms) and (held is None or p.throughput_rps > held[2].throughput_rps):
            best[trial.candidate] = (index, trial, p)
    top = sorted(best.values(), key=lambda itp: itp[2].throughput_rps, reverse=True)[:2]
    return [(trial, p) for _, trial, p in sorted(top, key=lambda itp: itp[0])]


def pick_paired(
    rivals: Sequence[tuple[Trial, PerfPoint]], again: Sequence[tuple[Trial, PerfPoint]], target_p99_ms: float
) -> tuple[Trial, PerfPoint] | None:
    """Of two configs each measured twice (``rivals``, then ``again`` in the reverse order, so a steady drift of the
    machine weighs on both alike), the one with the higher mean throughput whose both measurements hold the target;
    its figure is the lower of its two. None when neither held twice."""
    firsts = {t.candidate: p for t, p in rivals}
    best: tuple[float, Trial, PerfPoint] | None = None
    for trial, second in again:
        first = firsts.get(trial.candidate)
        if first is None or not (first.within(target_p99_ms) and second.within(target_p99_ms)):
            continue
        mean_rps = (first.throughput_rps + second.throughput_rps) / 2
        if best is None or mean_rps > best[0]:
            best = (mean_rps, trial, min(first, second, key=lambda p: p.throughput_rps))
    return None if best is None else (best[1], best[2])


def after_paired(
    chosen: tuple[Trial, PerfPoint],
    rivals: Sequence[tuple[Trial, PerfPoint]],
    again: Sequence[tuple[Trial, PerfPoint]],
    target_p99_ms: float,
    progress: Callable[[str], None],
) -> tuple[Trial, PerfPoint]:
    """The winner after the paired measurement: ``pick_paired``'s, or where neither config held the target both
    times, ``chosen`` (the first re-measurement's best), saying so."""
    paired = pick_paired(rivals, again, target_p99_ms)
    if paired is not None:
        return paired
    progress(
        "neither held the target both times (a busy machine reads both slower): kept "
        f"{chosen[0].candidate.label()}, the first re-measurement's best; run tune again on a quiet machine to "
        "decide between the two"
    )
    return chosen


def frontier(points: list[tuple[Candidate, PerfPoint]]) -> list[tuple[Candidate, PerfPoint]]:
    """Points no other point beats on both throughput (higher) and p99 (lower), by throughput."""
    out: list[tuple[Any, PerfPoint]] = []
    for cand, p in sorted(points, key=lambda cp: (cp[1].latency.p99_ms, -cp[1].throughput_rps)):
        if not out or p.throughput_rps > out[-1][1].throughput_rps:
            out.append((cand, p))
    return out


def climb_loads(load: int, factor: float, steps: int, max_concurrency: int) -> list[int]:
    """The concurrencies a climb from ``load`` tries, in order: each ``factor`` higher (at least one more), at most
    ``steps`` of them, none above ``max_concurrency``."""
    loads: list[int] = []
    for _ in range(steps):
        load = max(load + 1, math.ceil(load * factor))
        if load > max_concurrency:
            break
        loads.append(load)
    return loads


def ladder_line(p: PerfPoint, within: bool) -> str:
    """tune's progress line for one measured concurrency of a config's ladder (``within``: the point holds the
    target)."""
    p99 = "no answers" if math.isnan(p.latency.p99_ms) else f"p99 {p.latency.p99_ms:7.2f} ms"
    verdict = "" if within else "  (over the target)" if not p.errors else f"  errors {dict(p.errors)}"
    return f"  concurrency {int(p.load):>3}: {p.throughput_rps:8.1f} req/s  {p99}{verdict}"
