"""tune's types: the knobs it turns (:class:`Candidate`), its spec, a config's trial and the search's result."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..client import spec_protocol
from ..errors import TritongenError
from ..scheduling import MAX_INSTANCE_COUNT
from .results import MAX_CONCURRENCY, PerfPoint
from .spec import ABOVE_0_S, ENGINES, refuse_not_positive

CONCURRENCY_LADDER = (1, 2, 4, 8, 16, 32, 64, 128, 256)


TUNE_RECORD = "tune.json"


MAX_P99_BOUND_MS = 3_600_000.0  # a p99 bound: an hour (a 300-digit one filled the search's notes)


@dataclass(frozen=True)
class Candidate:
    """The knobs tune turns. ``preferred`` is a tuple of preferred batch sizes (empty: none)."""

    instances: int
    max_queue_delay_us: int
    max_batch_size: int
    preferred: tuple[int, ...]

    def label(self) -> str:
        pref = ",".join(map(str, self.preferred)) or "none"  # Triton then batches up to max_batch
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
    protocol: str = ""  # "": the URL's scheme (http://, grpc://), else $TRITONGEN_URL's, else grpc
    max_instances: int | None = None  # None: the number of CPU cores (KIND_CPU) or 4
    queue_delays_us: tuple[int, ...] = (0, 100, 500, 2000, 10000)
    max_batch_sizes: tuple[int, ...] = ()  # empty: powers of two up to twice the current maximum (at most 128)
    max_concurrency: int = 128
    duration_s: float = 1.5  # measured time per load level
    warmup_s: float = 0.5
    stability_pct: float = 15.0
    margin_pct: float = 3.0  # a change must beat the best by this much to be kept
    p99_margin_pct: float = 10.0  # points count only with p99 within max_p99_ms less this much (the target)
    prune_pct: float = 20.0  # a config whose first point is this far below the best config's gets no more points
    refine_steps: int = 2  # bisections of the concurrency between the last level within the target and the next
    refine_resolution_pct: float = 12.5  # no bisection once that gap is this share of the lower level (or 1)
    refine_within_pct: float = 10.0  # refine configs with a point (any) within this much of the best so far
    engine: str = "builtin"  # or "perf_analyzer"
    confirm: bool = True  # measure the best configs' operating points again, longer, and pick on those figures
    confirm_engine: str = "auto"  # what re-measures them: "auto" is perf_analyzer where installed, else `engine`
    confirm_top: int = 2  # how many configs are re-measured (those within confirm_within_pct of the best)
    confirm_within_pct: float = 10.0
    confirm_duration_s: float = 0.0  # 0: twice duration_s, at least 3 s
    # Where two configs' re-measurements held the target, measure both once more in the reverse order (A B B A) and
    # pick on the mean: the machine's drift between measurements is larger than two good configs differ by.
    confirm_paired: bool = True
    # When a config's search figure beats the best config's, measure the best config again right then (its best
    # point's load) and keep the newcomer only if it beats that too: figures taken minutes apart on a noisy machine
    # differ by more than neighbouring configs do, so the comparison is made between two measurements side by side.
    paired_descent: bool = True
    # From the winner's confirmed point, re-measure up to this many higher concurrencies. Off by default: on a noisy
    # machine a single re-measurement near the target is lucky as often as not, and the first lucky one is kept
    # (bench/tune_vs_model_analyzer.py here: the climbed point broke the bound in 9 of 10 rounds after).
    climb_steps: int = 0
    climb_factor: float = 1.25  # each a quarter higher (at least one more)
    # After each load, this long of unmeasured load (built-in engine) before any measurement: a freshly loaded
    # config serves slower at first (measured here once: two instances' first 1.5 s measurement 15-20% below later
    # ones). Measured again (6 alternated rounds per engine, 2 instances at concurrency 24): after 0.5 s the
    # median was no lower than after 2 s (perf_analyzer 7,255 vs 6,564 req/s; built-in 9,498 vs 8,941), and every
    # load's warm-up is search time.
    load_warmup_s: float = 0.5
    budget_s: float = 900.0  # stop searching after this long (the best so far is used)
    write: bool = True
    input_data: Path | None = None
    text_file: Path | None = None  # a text ensemble's requests: one text per line (perf --text-file)
    timeout_s: float = 30.0
    # CPU ids every measurement runs on, e.g. "0" (the search's process; perf_analyzer as its child); (): wherever
    # this process runs. Keep them off the server's (serve --cpus) on one machine.
    client_cpus: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        from ..cpus import cpus_from_text
        from ..fields import check_fields

        # before the field checks, whose "negative: pass 0 or more" would contradict these (0 is refused too)
        positive = {"max_p99_ms": "give the p99 latency bound in milliseconds, above 0", "duration_s": ABOVE_0_S}
        refuse_not_positive(self, positive)
        check_fields(
            self,
            "tune",
            parse={"client_cpus": lambda v: cpus_from_text(v, "--client-cpus")},
        )
        refuse_not_positive(self, positive)
        object.__setattr__(self, "protocol", spec_protocol(self.url, self.protocol))
        object.__setattr__(self, "model_dir", Path(self.model_dir).expanduser().resolve())
        if self.max_instances is not None and not 1 <= self.max_instances <= MAX_INSTANCE_COUNT:
            raise TritongenError(  # a winner above the bound failed validation after the whole search
                f"--max-instances {self.max_instances} is not from 1 to {MAX_INSTANCE_COUNT}",
                f"give the largest instance count to try, 1 to {MAX_INSTANCE_COUNT} (leave it out for the default)",
            )
        if self.max_p99_ms > MAX_P99_BOUND_MS:  # a 300-digit target in its notes, for no search it could run
            raise TritongenError(
                f"--max-p99-ms {self.max_p99_ms:g} is more than an hour",
                f"give the p99 latency bound in milliseconds, up to {MAX_P99_BOUND_MS:g}",
            )
        if not 1 <= self.max_concurrency <= MAX_CONCURRENCY:
            raise TritongenError(
                f"--max-concurrency {self.max_concurrency} is not from 1 to {MAX_CONCURRENCY}",
                f"give the largest concurrency to try, 1 to {MAX_CONCURRENCY} (one client's most in flight)",
            )
        if self.min_throughput_rps is not None and self.min_throughput_rps < 0:
            raise TritongenError("--min-throughput is negative", "give requests per second, 0 or more")
        if self.engine not in ENGINES:
            raise TritongenError(f"engine '{self.engine}' is not known", f"use one of {', '.join(ENGINES)}")
        if self.confirm_engine not in (*ENGINES, "auto"):
            raise TritongenError(
                f"confirm engine '{self.confirm_engine}' is not known", f"use auto or one of {', '.join(ENGINES)}"
            )
        if not 0 <= self.p99_margin_pct < 100:
            raise TritongenError(
                f"p99 margin {self.p99_margin_pct:g}% is outside 0-100", "give a percentage such as 10 (0: none)"
            )
        if self.confirm_top < 1:
            raise TritongenError(f"confirm_top {self.confirm_top} is below 1", "give how many configs to re-measure")
        if self.refine_steps < 0:
            raise TritongenError(f"refine_steps {self.refine_steps} is negative", "give 0 (no refinement) or more")
        if not 0 <= self.refine_resolution_pct < 100:
            raise TritongenError(
                f"refine_resolution_pct {self.refine_resolution_pct:g} is not in [0, 100)",
                "give a share of the load in percent, e.g. 12.5",
            )
        if self.load_warmup_s < 0:
            raise TritongenError(f"load_warmup_s {self.load_warmup_s:g} is negative", "give 0 (none) or more seconds")
        if self.climb_steps < 0:
            raise TritongenError(f"climb_steps {self.climb_steps} is negative", "give 0 (no climbing) or more")
        if self.climb_factor <= 1:
            raise TritongenError(f"climb_factor {self.climb_factor:g} is not above 1", "give a factor such as 1.25")

    @property
    def target_p99_ms(self) -> float:
        """The p99 every counted point must meet: the bound less the margin."""
        return self.max_p99_ms * (1 - self.p99_margin_pct / 100.0)

    @property
    def confirm_s(self) -> float:
        return self.confirm_duration_s or max(2 * self.duration_s, 3.0)


@dataclass(frozen=True)
class Trial:
    candidate: Candidate
    points: tuple[PerfPoint, ...]
    best: PerfPoint | None  # highest throughput with p99 within the bound
    load_s: float
    error: str = ""
    pruned: bool = False  # its first point fell prune_pct short of the best config's: no more points measured

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
    confirmation: tuple[PerfPoint, ...] = ()  # every re-measurement of the best configs' points, in order
    confirmed: PerfPoint | None = None  # the winner's re-measurement: the figure the written config stands on
    confirmation_configs: tuple[Candidate, ...] = ()  # the config of each re-measurement (same order)
    target_p99_ms: float = 0.0  # the p99 every counted point met: the bound less the margin
    # The paired descent's checks: each time a config's search figure beat the best config's, that config measured
    # again beside it, and whether the newcomer was kept (see TuneSpec.paired_descent).
    descent_checks: tuple[dict[str, Any], ...] = ()
    unchanged: bool = False  # the winner is the starting config: config.pbtxt was left as it was
    served: str = ""  # what the server serves now that tune has ended, in one sentence
    max_concurrency: int = 0  # the highest concurrency the search could try (--max-concurrency)
    checked_max_batch: int | None = None  # the largest batch the build's parity gate compared with PyTorch

    @property
    def operating_point(self) -> PerfPoint | None:
        """Where the winner is meant to run: its confirmed point, else (no confirmation) its search best."""
        if self.confirmed is not None:
            return self.confirmed
        return self.winner.best if self.winner is not None else None

    def text(self) -> str:
        """The table ``tritongen tune`` prints (:meth:`table`); every result of the API has ``text()``."""
        return self.table()

    def table(self) -> str:
        lines = [
            f"tune {self.model}: {len(self.trials)} configs, "
            f"{sum(len(t.points) for t in self.trials)} measurements"
            + (f" + {len(self.confirmation)} re-measurements" if self.confirmation else "")
            + f" in {self.search_s:.0f} s"
            + (f"; points count with p99 <= {self.target_p99_ms:.2f} ms" if self.target_p99_ms else "")
        ]
        lines.append(f"{'config':<64} {'conc':>4} {'req/s':>9} {'p99 ms':>8}")
        for t in self.trials:
            if t.best is None:
                lines.append(
                    f"{t.candidate.label():<64} {'-':>4} {'-':>9} {'-':>8} "
                    f" {t.error or 'no point within the p99 target'}"
                )
            else:
                mark = ""
                if self.winner is not None and t is self.winner:
                    mark = "  <- best" + (" (chosen when measured again)" if self._chosen_over() else "")
                mark += "  (pruned after one point)" if t.pruned else ""
                lines.append(
                    f"{t.candidate.label():<64} {int(t.best.load):>4} "
                    f"{t.best.throughput_rps:>9.1f} {t.best.latency.p99_ms:>8.2f}{mark}"
                )
        if self.descent_checks:
            kept = sum(1 for c in self.descent_checks if c["kept"])
            lines.append(
                f"side by side: {len(self.descent_checks)} time(s) a config beat the best so far, the best was measured"
                f" again beside it; the newcomer was kept {kept} time(s)"
            )
        lines.append("frontier (throughput vs p99, every measured point):")
        for cand, p in self.frontier:
            lines.append(
                f"  {p.throughput_rps:9.1f} req/s  p99 {p.latency.p99_ms:7.2f} "
                f"ms  concurrency {int(p.load):>3}  {cand.label()}"
            )
        if self.winner is not None:
            lines.append(self._best_line())
        configs: Sequence[Candidate | None] = self.confirmation_configs or (None,) * len(self.confirmation)
        for remeasured, p in zip(configs, self.confirmation, strict=False):
            holds = p.within(self.target_p99_ms or float("inf"))
            verdict = "the winner" if p is self.confirmed else "holds" if holds else "over the target"
            lines.append(
                f"measured again at concurrency {int(p.load)}: {p.throughput_rps:.1f} "
                f"req/s, p99 {p.latency.p99_ms:.2f} ms ({verdict})" + (f"  {remeasured.label()}" if remeasured else "")
            )
        lines.extend(self._notes())
        return "\n".join(lines)

    def _best_line(self) -> str:
        """The winner's search figure against the starting config's: on re-measured figures where both have one
        that held the target (search figures of different configs are best-of-a-few and not comparable to a
        re-measurement)."""
        assert self.winner is not None
        line = f"best: {self.winner.candidate.label()}: {self.winner.score:.1f} req/s in the search"
        return line + self._against_start() + self._chosen_over()

    def _chosen_over(self) -> str:
        """Why a config that read more in the search lost, from its re-measurements ("" where it has none)."""
        outread = self._outread_in_search()
        if outread is None or outread.candidate not in self.confirmation_configs:
            return ""
        held = self._held(outread.candidate)
        why = (
            "went over the p99 target when measured again"
            if held is None
            else f"read less when measured again ({held.throughput_rps:.1f} req/s)"
        )
        return (
            f"; chosen over {outread.candidate.label()}, which read more in the search ({outread.score:.1f} req/s) "
            f"but {why}"
        )

    def _against_start(self) -> str:
        """The winner against the starting config, in parentheses: re-measured figures where both have one."""
        assert self.winner is not None
        if self.winner.candidate == self.baseline.candidate:
            return " (the starting config)"
        start = self._held(self.baseline.candidate)
        if self.confirmed is not None and start is not None:
            ratio = self.confirmed.throughput_rps / start.throughput_rps if start.throughput_rps else float("inf")
            return f" ({ratio:.2f}x the starting config, both measured again)"
        if self.baseline.best is None:
            return " (the starting config had no point within the target)"
        ratio = self.winner.score / self.baseline.score if self.baseline.score else float("inf")
        return f" ({ratio:.2f}x the starting config's search figure)"

    def _outread_in_search(self) -> Trial | None:
        """The config that read the most in the search where it is not the winner (re-measurements chose it)."""
        if self.winner is None:
            return None
        top = max((t for t in self.trials if t.best is not None), key=lambda t: t.score, default=None)
        return top if top is not None and top is not self.winner and top.score > self.winner.score else None

    def _held(self, candidate: Candidate) -> PerfPoint | None:
        """``candidate``'s highest re-measurement that held the target, if any."""
        held = [
            p
            for c, p in zip(self.confirmation_configs, self.confirmation, strict=False)
            if c == candidate and p.within(self.target_p99_ms or float("inf"))
        ]
        return max(held, key=lambda p: p.throughput_rps) if held else None

    def _notes(self) -> list[str]:
        """Which figures to plan capacity with, and whether --max-concurrency capped the search."""
        notes = []
        op = self.operating_point
        if self.confirmed is not None and self.winner is not None and self.winner.best is not None:
            c = self.confirmed
            notes.append(
                f"plan capacity with the re-measured figure: {c.throughput_rps:.1f} req/s at concurrency "
                f"{int(c.load)}, p99 {c.latency.p99_ms:.2f} ms ({c.engine}, {c.measured_s:.0f} s); the search's "
                f"figures ({self.winner.best.engine}, the best of short measurements) are optimistic"
            )
        target = self.target_p99_ms
        if op is not None and self.max_concurrency and int(op.load) >= self.max_concurrency and target:
            if op.latency.p99_ms < 0.8 * target:
                notes.append(
                    f"note: the search stopped at --max-concurrency {self.max_concurrency}, where the winner's p99 is "
                    f"{op.latency.p99_ms:.2f} ms against a target of {target:.2f} ms: its figures are what "
                    f"{self.max_concurrency} requests in flight get, not the most it serves within the bound"
                    + (
                        f"; raise --max-concurrency (e.g. {min(2 * self.max_concurrency, MAX_CONCURRENCY)}) to find "
                        "that"
                        if self.max_concurrency < MAX_CONCURRENCY
                        else f" ({MAX_CONCURRENCY} is the most one client keeps in flight: measure from several)"
                    )
                )
        checked = self.checked_max_batch
        tuned = self.winner.candidate.max_batch_size if self.winner is not None else 0
        if checked and tuned > checked and not self.unchanged:
            notes.append(
                f"note: the tuned max batch {tuned} is above the largest batch the build compared with PyTorch "
                f"({checked}); ONNX Runtime runs any batch the graph's batch axis takes, but no batch of {tuned} was "
                f"checked: rebuild with --max-batch-size {tuned} (its parity gate compares that batch) before you "
                "rely on it"
            )
        return notes
