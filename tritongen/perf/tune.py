"""``tritongen tune``: find the config that serves the most requests per second under a p99 bound.

Works on a running server started with explicit model control: every candidate config is loaded through the
model-repository API with a config override (nothing on disk changes while searching), measured with the built-in
engine or perf_analyzer. However tune ends (a winner written, a dry run, no winner, an error, Ctrl-C), the server
is then loaded with what config.pbtxt says, again with a config override (a plain load after an override does not
read config.pbtxt again when no file changed, and a ``tritongen serve`` server reads a checked copy, which tune does
not write). A winner that is the starting config is not written: config.pbtxt stays as it was.

The search aims below the bound: a point counts only when its p99 is within ``max_p99_ms`` less ``p99_margin_pct``
(the target), so the written figure still holds when it is measured again on a noisier minute. It measures the
repository's config, one instance with the largest max batch size and no preferred sizes, and the most instances
with the same max batch size and no preferred sizes (the two regions where Model Analyzer's sweeps find their
winners: batching beating instances, or instances filling the cores), then runs a coordinate descent over instance
count, max queue delay, max batch size and preferred batch sizes from the best of the three: each pass walks one
dimension at a time from the best config so far (a step up, and further while it keeps improving; a step down
likewise; preferred sizes, which have no order, try the other kind: none, which Triton serves as the max alone,
or half and max) and keeps a
change only when it beats the best by more than the noise margin. Each config's best operating point comes from a
concurrency ladder (powers of two) that starts where the best config so far peaked (the first config: at instances
x max batch size) and steps up towards the concurrency where p99 would reach the target if it grew in proportion
(at most a doubling), until the target is broken or throughput stops rising. A config whose first point
falls ``prune_pct`` short of what the best config served at the same concurrency (or below) is pruned there (no
more points). For the starting configs and every config with a point (over the target or not) within
``refine_within_pct`` of the best so far, the concurrency is then bisected between the last level within the target
and the first one over it (``refine_steps`` times, until the gap is ``refine_resolution_pct`` of the lower level).
That is a few dozen measurements where a grid takes hundreds. A config that fails to load, or whose measurement
fails, is recorded with the error and ruled out.

The search's figures are optimistic (the best of a few short measurements), so the winner is chosen on confirmed
figures: the ``confirm_top`` best configs (those within ``confirm_within_pct`` of the best) have their operating
points measured again, at least twice as long, by perf_analyzer where it is installed (what the user's own
perf_analyzer will see), and the config with the highest re-measured throughput whose p99 holds the target wins;
where a re-measured p99 breaks it, that config's next point at a lower concurrency is tried (up to three, while its
search figure beats the best re-measured figure that held: a point that cannot win is not measured), and where none of
them holds, the next ``confirm_top`` configs by search figure are measured again the same way (the search's best
can be one lucky point). Where two configs held, both are measured once more in the reverse order (A B B A: the
machine's drift weighs on both alike) and the one with the higher mean throughput that held both times wins, on
the lower of its two figures. With ``climb_steps``, the concurrency then climbs from the winner's confirmed point
(each level ``climb_factor`` higher), re-measured the same way, while each level holds the target and serves more;
off by default, since on a noisy machine the first lucky re-measurement is the one kept. The record keeps every
measurement and re-measurement, and the (throughput, p99) frontier is shown.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..client import ModelLoadError, Triton
from ..errors import TritongenError
from ..progress import Progress
from .results import PerfPoint
from .spec import PerfSpec
from .tune_configs import (
    Serving,
    candidate_from_config,
    check_signed_config,
    checked_max_batch,
    config_from_candidate,
    neighbour,
    preferred_kind,
    search_space,
    serve_after_stop,
    serve_config,
    served_form,
    served_policy,
)
from .tune_confirm import Remeasure, beats_side_by_side, climb, confirm, confirm_engine, paired, warm
from .tune_record import write_winner
from .tune_select import (
    after_paired,
    batching_seed,
    best_point,
    contenders,
    fallback_contenders,
    frontier,
    ladder_line,
    next_up,
    parallel_seed,
    pick_confirmed,
    potential_rps,
    pruned,
    rivals,
    start_index,
)
from .tune_spec import CONCURRENCY_LADDER, Candidate, Trial, TuneResult, TuneSpec

__all__ = ["TuneResult", "TuneSpec", "tune_model"]


def tune_model(spec: TuneSpec, progress: Progress | None = None) -> TuneResult:
    """Search configs for ``spec.model_dir`` on a running server; write the winner back when ``spec.write``.
    With ``spec.client_cpus`` every measurement runs on those CPUs (perf_analyzer inherits them)."""
    from ..cpus import pinned

    with pinned(spec.client_cpus):
        return _tune_model(spec, progress)


def _tune_model(spec: TuneSpec, progress: Progress | None) -> TuneResult:
    from ..client import host_port_from_url, model_metadata
    from ..layout import config_text
    from ..server.admin import local_server_at
    from ..validate import config_from_text
    from .inputs import request_set_for_model
    from .perf_analyzer import find_perf_analyzer

    progress = progress or (lambda message: None)
    config_path = spec.model_dir / "config.pbtxt"
    if not spec.model_dir.is_dir():
        guess = Path("model_repository") / spec.model_dir.name  # a bare model name, as infer and perf take it
        raise TritongenError(
            f"model folder {spec.model_dir} does not exist",
            f"did you mean {guess}? (tune takes the model's folder: REPO/NAME, or REPO NAME)"
            if spec.model_dir.absolute().parent == Path.cwd() and (guess / "config.pbtxt").is_file()
            else "pass a model folder inside a repository, e.g. model_repository/my-model",
        )
    if not config_path.is_file():
        raise TritongenError(
            f"{spec.model_dir} has no config.pbtxt",
            "pass a model folder inside a repository, e.g. model_repository/my-model",
        )
    text = config_text(config_path)  # once: what is parsed is what is held to a signature below
    base_config = config_from_text(text, source=str(config_path))
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
        text_file=spec.text_file,
        engine=spec.engine,
        client_cpus=spec.client_cpus,
    )
    if spec.engine == "perf_analyzer":
        find_perf_analyzer()  # fail before anything is loaded if it is missing
    url = perf.resolved_url()
    local = local_server_at(host_port_from_url(url))  # found once: its admin key and signing key belong together
    check_signed_config(local, spec.model_dir, text)
    metadata = model_metadata(url, model, protocol=spec.protocol)
    requests = request_set_for_model(metadata, spec.model_dir.parent, perf.input_data, perf.text_file)
    # a load may take minutes; the key of a server tritongen started on this machine, found by its port
    # to a server found here, by the address it was found listening on (the name is not resolved again)
    server = Triton(local.url(url), spec.protocol, max(spec.timeout_s, 300), local.headers(spec.protocol))
    started = time.monotonic()  # the search's clock (budget_s, search_s): from its first question to the server
    # said up front: --budget-s 30 took 54 s, and nothing said the re-measurements come after the search
    progress(
        f"searching for up to {spec.budget_s:g} s (--budget-s); then the best configs are measured again, "
        f"{spec.confirm_s:g} s each, and the winner is loaded"
    )
    kind_cpu = all(g.kind in (0, 2) for g in base_config.instance_group)  # KIND_AUTO / KIND_CPU
    # the versions the server serves now stay the ones served (a rollback, serve's pin of the rollout record):
    # config.pbtxt's own policy would load the newest version with the first candidate
    served_versions = served_policy(server, model)
    again = Remeasure(server, model, base_config, perf, requests, spec, progress, served_versions)
    search = _Search(spec, again, search_space(spec, candidate_from_config(base_config), kind_cpu), started)
    # What the server must serve when tune ends, however it ends: config.pbtxt's config, the written winner once it
    # is on disk. Loaded with a config override, as the candidates were: a plain load after an override does not
    # read config.pbtxt again when its files have not changed, and a `tritongen serve` server reads a checked copy
    # of the repository, which tune does not write.
    serving = Serving(base_config, "config.pbtxt's config")
    ending = False  # the final load has begun (an error there is its own: it is not tried a second time)
    try:
        outcome = search.run()
        written = record = None
        winner, unchanged = outcome.winner, outcome.unchanged(base_config)
        if spec.write and outcome.meets and winner is not None and not unchanged:
            written, record = write_winner(
                spec,
                base_config,
                winner,
                outcome.baseline,
                list(search.trials.values()),
                outcome.frontier,
                outcome.search_s,
                outcome.confirmation,
                outcome.confirmed,
                search.checks,
                serving,
            )
        ending = True
        served = serve_config(server, model, serving, served_versions)
    except TritongenError:
        if not ending and again.changed:
            serve_after_stop(server, model, serving, progress, served_versions)
        raise
    except BaseException:
        if ending:  # Ctrl-C again while the final config loaded
            progress(f"tune stopped while the server loaded {serving.name}: run tune again, or restart the server")
        elif again.changed:
            serve_after_stop(server, model, serving, progress, served_versions)
        raise
    finally:
        server.close()
    return TuneResult(
        model,
        winner,
        outcome.baseline,
        tuple(search.trials.values()),
        tuple(outcome.frontier),
        outcome.search_s,
        written,
        record,
        outcome.meets,
        tuple(p for _, p in outcome.confirmation),
        outcome.confirmed,
        tuple(t.candidate for t, _ in outcome.confirmation),
        spec.target_p99_ms,
        tuple(search.checks),
        unchanged=unchanged,
        served=served,
        max_concurrency=spec.max_concurrency,
        checked_max_batch=checked_max_batch(spec.model_dir),
    )


@dataclass(frozen=True)
class _Outcome:
    """What a search found: the winner (None: none held the target, or none met the constraints), its confirmed
    figure, and everything measured on the way."""

    winner: Trial | None
    baseline: Trial
    confirmation: list[tuple[Trial, PerfPoint]]
    confirmed: PerfPoint | None
    frontier: list[tuple[Candidate, PerfPoint]]
    search_s: float
    meets: bool

    def unchanged(self, base_config: Any) -> bool:
        """The starting config won: config.pbtxt stays as it is (not rewritten, reformatted, nor its manifest
        touched)."""
        return self.winner is not None and config_from_candidate(base_config, self.winner.candidate) == base_config


class _Search:
    """One search over ``space`` (the module doc): every config's trial, by candidate, and the paired descent's
    side-by-side checks, in order."""

    def __init__(self, spec: TuneSpec, again: Remeasure, space: dict[str, list], started: float) -> None:
        self.spec, self.again, self.space = spec, again, space
        self.progress = again.progress
        self.target_ms = spec.target_p99_ms
        self.ladder = [c for c in CONCURRENCY_LADDER if c <= spec.max_concurrency]
        self.trials: dict[Candidate, Trial] = {}
        self.checks: list[dict[str, Any]] = []
        self.peak_index = 0  # where the best config so far peaked: the next config's ladder starts there
        self.started = started

    def run(self) -> _Outcome:
        """The starting config and the two seeds, the descent from the best of them, then the confirmation."""
        from .loadgen import ServerGone

        spec, progress = self.spec, self.progress
        base = candidate_from_config(self.again.base_config)
        confirmation: list[tuple[Trial, PerfPoint]] = []
        chosen: tuple[Trial, PerfPoint] | None = None
        try:
            baseline = self.measure(base, start=start_index(self.ladder, base))
            start = baseline
            seeds = (
                (batching_seed(self.space, base), "one instance, the largest max batch size, no preferred sizes"),
                (parallel_seed(self.space, base), "the most instances, the same max batch size, no preferred sizes"),
            )
            for seed, text in seeds:
                if seed is not None and self.tried(seed) is None and self.in_budget():
                    progress(f"also from {text}")
                    other = self.measure(seed, start=start_index(self.ladder, seed))
                    if self.beats(other, start):
                        start = other
            incumbent = self.descend(start)
            if spec.confirm and incumbent.best is not None:
                confirmation, chosen = self.confirmed()
        except ServerGone as gone:
            raise TritongenError(
                f"the server stopped answering while tuning ({gone})", "restart it and run tune again"
            ) from None
        finally:
            search_s = time.monotonic() - self.started
        confirmed = chosen[1] if chosen is not None else None
        if chosen is not None:
            winner: Trial | None = chosen[0]
        elif spec.confirm or incumbent.best is None:
            winner = None
        else:
            winner = incumbent
        standing = confirmed.throughput_rps if confirmed is not None else (winner.score if winner is not None else 0.0)
        meets = winner is not None and (spec.min_throughput_rps is None or standing >= spec.min_throughput_rps)
        points = [(t.candidate, p) for t in self.trials.values() for p in t.points if not p.errors]
        return _Outcome(winner, baseline, confirmation, confirmed, frontier(points), search_s, meets)

    def confirmed(self) -> tuple[list[tuple[Trial, PerfPoint]], tuple[Trial, PerfPoint] | None]:
        """The best configs measured again (the module doc): every re-measurement, and the one that wins."""
        spec, again, target_ms = self.spec, self.again, self.target_ms
        engine_name = confirm_engine(spec)
        trials = list(self.trials.values())
        top = contenders(trials, spec.confirm_top, spec.confirm_within_pct)
        confirmation = confirm(top, again, engine_name)
        chosen = pick_confirmed(confirmation, target_ms)
        more = [] if chosen is not None else fallback_contenders(trials, top, spec.confirm_top)
        if more:
            # The search's best figures can be one lucky point: rather than write nothing, measure the next configs
            # again (each with up to three of its points); only a re-measurement that holds wins.
            self.progress(f"no re-measured point held the target: measuring the next {len(more)} configs again")
            confirmation += confirm(more, again, engine_name)
            chosen = pick_confirmed(confirmation, target_ms)
        pair = rivals(confirmation, target_ms) if spec.confirm_paired else []
        if chosen is not None and len(pair) == 2:
            # Two configs held: which serves more is decided on two measurements each, taken A B B A.
            self.progress("two configs held: measuring both a second time, in the reverse order")
            seconds = paired(pair, again)
            confirmation += seconds
            chosen = after_paired(chosen, pair, seconds, target_ms, self.progress)
        if chosen is not None and spec.climb_steps:
            climbed = climb(chosen, again)
            confirmation += climbed
            chosen = pick_confirmed([chosen, *climbed], target_ms)  # the winner's own points only
        return confirmation, chosen

    def ok(self, p: PerfPoint) -> bool:
        return p.within(self.target_ms)

    def in_budget(self) -> bool:
        return time.monotonic() - self.started < self.spec.budget_s

    def measure(
        self,
        candidate: Candidate,
        refine_above_rps: float = 0.0,
        against: Trial | None = None,
        start: int | None = None,
    ) -> Trial:
        """Load ``candidate`` and find its best point. ``against``: the best config so far, which a first point
        far below it prunes; ``start``: the ladder index to begin at (default: where the best config peaked)."""
        from .run import points_from_engine

        same = self.tried(candidate)
        if same is not None:
            return same
        t0 = time.monotonic()
        header = f"config {len(self.trials) + 1}: {candidate.label()}"
        try:
            self.again.swap(candidate)  # a server without explicit control ends the run
        except ModelLoadError as failed:
            self.progress(header)
            error = f"failed to load: {failed.problem.splitlines()[0][:200]}"
            return self._failed(Trial(candidate, (), None, time.monotonic() - t0, error=error))
        self.progress(header)
        load_s = time.monotonic() - t0
        first = min(self.peak_index if start is None else start, len(self.ladder) - 1)
        warm(self.again.perf, self.again.requests, self.ladder[first], self.spec)
        points: dict[int, PerfPoint] = {}

        def at(c: int) -> PerfPoint:
            if c not in points:
                level = replace(self.again.perf, concurrency=(c,), request_rates=())
                p = points_from_engine(level, self.again.requests)[0]
                points[c] = p
                self.progress(ladder_line(p, self.ok(p)))
            return points[c]

        try:
            return self._ladder_and_refine(candidate, points, at, refine_above_rps, against, first, load_s)
        except TritongenError as failed:
            # A measurement that fails (perf_analyzer's exit on a busy machine) rules this config out, not the search.
            detail = (failed.details or "").strip().splitlines()[-1:] or [""]
            error = f"measurement failed: {failed.problem} {detail[0]}".strip()[:300]
            return self._failed(Trial(candidate, tuple(points[c] for c in sorted(points)), None, load_s, error=error))

    def _failed(self, trial: Trial) -> Trial:
        self.progress(f"  {trial.error}")
        self.trials[trial.candidate] = trial
        return trial

    def _ladder_and_refine(
        self,
        candidate: Candidate,
        points: dict[int, PerfPoint],
        at: Callable[[int], PerfPoint],
        refine_above_rps: float,
        against: Trial | None,
        i: int,
        load_s: float,
    ) -> Trial:
        spec, ladder, ok = self.spec, self.ladder, self.ok
        first = at(ladder[i])
        cut = pruned(first, against, spec.prune_pct)
        if cut:
            self.progress(f"  pruned: {spec.prune_pct:g}% or more below the best config so far")
        elif ok(first):
            c = ladder[i]
            while self.in_budget():
                up = next_up(at(c), self.target_ms, spec.max_concurrency)
                if up is None:
                    break
                nxt, here = at(up), at(c)
                # A doubling that adds under 5% has reached the plateau; a smaller step aimed at the target only
                # has to serve more.
                enough = here.throughput_rps * (1.05 if up >= 2 * c else 1.0)
                if not ok(nxt) or nxt.throughput_rps <= enough:
                    break
                c = up
        else:
            while i > 0 and not ok(at(ladder[i])):
                i -= 1
                # Over the target and already too slow: lower concurrency is slower still.
                if pruned(at(ladder[i]), against, spec.prune_pct):
                    cut = True
                    break
        best = best_point(points.values(), self.target_ms)
        if best is not None and not cut and potential_rps(points.values()) >= refine_above_rps:
            # Bisect between the best level within the target and the lowest one above it that broke it: worth it
            # when any of its points, the one over the target included, served about as much as the best config
            # (a doubling of concurrency can jump from well below the target to just over it).
            lo = int(best.load)
            hi = min((c for c, p in points.items() if c > lo and not ok(p)), default=None)
            for _ in range(spec.refine_steps):
                if hi is None or hi - lo <= max(1, int(lo * spec.refine_resolution_pct / 100)) or not self.in_budget():
                    break
                mid = (lo + hi) // 2
                if ok(at(mid)):
                    lo = mid
                else:
                    hi = mid
            best = best_point(points.values(), self.target_ms)
        trial = Trial(candidate, tuple(points[c] for c in sorted(points)), best, load_s, pruned=cut)
        self.trials[candidate] = trial
        return trial

    def tried(self, candidate: Candidate) -> Trial | None:
        """The trial of ``candidate``, or of one the server serves alike (:func:`served_form`)."""
        served = served_form(candidate)
        return next((t for c, t in self.trials.items() if served_form(c) == served), None)

    def peak_of(self, trial: Trial) -> int:
        """The ladder index at or just below the concurrency where ``trial`` peaked."""
        ladder = self.ladder
        return max(
            k
            for k, c in enumerate(ladder)
            if c <= max(ladder[0], int(trial.best.load if trial.best is not None else 0))
        )

    def descend(self, start: Trial) -> Trial:
        spec = self.spec
        incumbent = start
        if incumbent.best is not None:
            self.peak_index = self.peak_of(incumbent)
        improved = True
        while improved and self.in_budget():
            improved = False
            for dim, values in self.space.items():
                current = (
                    getattr(incumbent.candidate, dim) if dim != "preferred" else preferred_kind(incumbent.candidate)
                )
                if current not in values:
                    continue
                refine_above_rps = incumbent.score * (1 - spec.refine_within_pct / 100.0)
                if dim == "preferred":  # categories, not an order: every other kind is tried from the incumbent
                    chosen_kind = incumbent
                    for value in values:
                        if value == current or not self.in_budget():
                            continue
                        trial = self.measure(
                            neighbour(incumbent.candidate, dim, value), refine_above_rps, against=incumbent
                        )
                        if self.beats(trial, chosen_kind):
                            chosen_kind = trial
                    if chosen_kind is not incumbent:
                        incumbent, improved = chosen_kind, True
                        self.peak_index = self.peak_of(chosen_kind)
                    continue
                at_index = values.index(current)
                for step in (1, -1):
                    moved = False
                    j = at_index + step
                    while 0 <= j < len(values) and self.in_budget():
                        trial = self.measure(
                            neighbour(incumbent.candidate, dim, values[j]),
                            incumbent.score * (1 - spec.refine_within_pct / 100.0),
                            against=incumbent,
                        )
                        if self.beats(trial, incumbent):
                            incumbent, improved, moved = trial, True, True
                            self.peak_index = self.peak_of(trial)
                            j += step
                        else:
                            break
                    if moved:
                        break  # improved going up: no need to look down
        return incumbent

    def beats(self, challenger: Trial, incumbent: Trial) -> bool:
        if challenger.score <= incumbent.score * (1 + self.spec.margin_pct / 100.0):
            return False
        if not self.spec.paired_descent or not self.in_budget():
            return True
        return beats_side_by_side(challenger, incumbent, self.again, self.checks)
